//! Managed fields: who set which field (`metadata.managedFields`, `FieldsV1`), and server-side
//! apply built on it — merging an applied configuration, removing fields a manager stopped
//! applying, and reporting conflicts with other managers.
//!
//! Field paths are leaf paths in upstream's FieldsV1 notation: `f:name` for map keys,
//! `k:{"name":"x"}` for elements of keyed lists, `v:"x"` for set members, `i:N` otherwise.
//! Written by hand: no crate implements structured-merge-diff for Rust.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::objects::Part;

type FieldPath = Vec<String>;

/// The keys that identify elements of a list field, by field name (as the Kubernetes types
/// declare them), or `None` for atomic lists.
fn list_keys(field: &str, items: &[Value]) -> Option<Vec<&'static str>> {
    let keys: &[&'static str] = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "schedulingGates"
        | "resourceClaims" => &["name"],
        "volumeMounts" => &["mountPath"],
        "volumeDevices" => &["devicePath"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        "hostAliases" => &["ip"],
        "topologySpreadConstraints" => &["topologyKey", "whenUnsatisfiable"],
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => &["containerPort", "protocol"],
        "ports" if items.iter().any(|i| i.get("port").is_some()) => &["port", "protocol"],
        _ => return None,
    };
    Some(keys.to_vec())
}

fn is_set(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn key_segment(item: &Value, keys: &[&str]) -> String {
    let mut m = Map::new();
    for k in keys {
        let v = match (item.get(*k), *k) {
            (Some(v), _) => v.clone(),
            // Protocol defaults to TCP in list-map keys.
            (None, "protocol") => json!("TCP"),
            (None, _) => continue,
        };
        m.insert((*k).to_string(), v);
    }
    format!("k:{}", Value::Object(m))
}

/// Leaf paths of a value, with `.` entries for list elements (their existence).
fn leaves(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                match child {
                    Value::Array(items) if !items.is_empty() => {
                        // A list at the object's root named `ports` is an EndpointSlice's,
                        // atomic upstream (unlike a Service's `spec.ports`).
                        let keys = if path.len() == 1 && k == "ports" {
                            None
                        } else {
                            list_keys(k, items)
                        };
                        if let Some(keys) = keys {
                            for it in items {
                                path.push(key_segment(it, &keys));
                                let mut dot = path.clone();
                                dot.push(".".into());
                                out.insert(dot);
                                leaves(it, path, out);
                                path.pop();
                            }
                        } else if is_set(k) {
                            for it in items {
                                path.push(format!("v:{it}"));
                                out.insert(path.clone());
                                path.pop();
                            }
                        } else {
                            out.insert(path.clone());
                        }
                    }
                    _ => leaves(child, path, out),
                }
                path.pop();
            }
        }
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
}

/// The FieldsV1 trie of every leaf of `v` (the leaves [`leaves`] finds), built directly: the
/// same value as `to_fields_v1` of those leaves, without a path per leaf. A create records
/// the whole object this way.
fn leaves_trie(v: &Value, depth: usize, out: &mut Map<String, Value>) {
    if let Value::Object(m) = v {
        for (k, child) in m {
            child_trie(k, child, depth, out);
        }
    }
}

/// The trie of one field `k` of an object, into `out` (the object's node).
fn child_trie(k: &str, child: &Value, depth: usize, out: &mut Map<String, Value>) {
    let slot = out.entry(format!("f:{k}")).or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(node) = slot else { return };
    match child {
        Value::Array(items) if !items.is_empty() => {
            // As in `leaves`: a root-level `ports` (an EndpointSlice's) is atomic.
            let keys = if depth == 0 && k == "ports" {
                None
            } else {
                list_keys(k, items)
            };
            if let Some(keys) = keys {
                for it in items {
                    let el = node
                        .entry(key_segment(it, &keys))
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(el) = el {
                        el.insert(".".into(), Value::Object(Map::new()));
                        leaves_trie(it, depth + 2, el);
                    }
                }
            } else if is_set(k) {
                for it in items {
                    node.insert(format!("v:{it}"), Value::Object(Map::new()));
                }
            }
        }
        _ => leaves_trie(child, depth + 1, node),
    }
}

/// The FieldsV1 trie of the fields of `obj` that `part` covers and managers can own: the
/// same value as `to_fields_v1(&owned_leaves(obj, part))`.
fn owned_trie(obj: &Value, part: Part) -> Value {
    let mut root = Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in owned_top(m, part) {
            match (k.as_str(), v) {
                ("metadata", Value::Object(meta)) => {
                    let slot = root.entry("f:metadata").or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(node) = slot {
                        for (mk, mv) in meta.iter().filter(|(mk, _)| !SERVER_METADATA.contains(&mk.as_str())) {
                            child_trie(mk, mv, 1, node);
                        }
                    }
                }
                _ => child_trie(k, v, 0, &mut root),
            }
        }
    }
    let mut trie = Value::Object(root);
    sort_trie(&mut trie);
    trie
}

/// Children in sorted order at every level, as a trie built from sorted paths has them.
fn sort_trie(v: &mut Value) {
    if let Value::Object(m) = v {
        m.sort_keys();
        m.values_mut().for_each(sort_trie);
    }
}

/// Metadata that the server maintains: no manager owns it.
const SERVER_METADATA: [&str; 11] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "namespace",
    "name",
    "generateName",
];

/// The top-level fields of an object that `part` covers and managers can own.
fn owned_top(m: &Map<String, Value>, part: Part) -> impl Iterator<Item = (&String, &Value)> {
    m.iter().filter(move |(k, _)| match k.as_str() {
        "apiVersion" | "kind" => false,
        "status" => part != Part::Main,
        _ => part != Part::Status,
    })
}

/// The ownable part of one top-level field (metadata without what the server maintains).
fn ownable(k: &str, v: &Value) -> Value {
    match (k, v) {
        ("metadata", Value::Object(meta)) => Value::Object(
            meta.iter()
                .filter(|(mk, _)| !SERVER_METADATA.contains(&mk.as_str()))
                .map(|(mk, mv)| (mk.clone(), mv.clone()))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// Fields of an object that managers can own: everything but the server-maintained metadata.
fn owned_leaves(obj: &Value, part: Part) -> BTreeSet<FieldPath> {
    let mut c = Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in owned_top(m, part) {
            c.insert(k.clone(), ownable(k, v));
        }
    }
    let mut out = BTreeSet::new();
    leaves(&Value::Object(c), &mut Vec::new(), &mut out);
    out
}

/// The ownable leaves of `old` and `new` where they differ, and the paths of the subtrees
/// (top-level fields and their children) that are equal in both, whose leaves are the same on
/// both sides and are left out. An update that touches `status.phase` costs the status, not
/// the whole object.
fn differing_leaves(
    old: &Value,
    new: &Value,
    part: Part,
) -> (BTreeSet<FieldPath>, BTreeSet<FieldPath>, Vec<FieldPath>) {
    let empty = Map::new();
    let om = old.as_object().unwrap_or(&empty);
    let nm = new.as_object().unwrap_or(&empty);
    let (mut o, mut n, mut equal) = (Map::new(), Map::new(), Vec::new());
    let keys: BTreeSet<&String> = owned_top(om, part).chain(owned_top(nm, part)).map(|(k, _)| k).collect();
    // Compared by reference; only the parts that differ are copied.
    for k in keys {
        match (om.get(k.as_str()), nm.get(k.as_str())) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => {
                let owned = |c: &String| k != "metadata" || !SERVER_METADATA.contains(&c.as_str());
                let (ka, kb) = (a.keys().filter(|c| owned(c)), b.keys().filter(|c| owned(c)));
                let names: BTreeSet<&String> = ka.chain(kb).collect();
                let (a_empty, b_empty) = (!a.keys().any(owned), !b.keys().any(owned));
                if names.iter().all(|c| a.get(c.as_str()) == b.get(c.as_str())) {
                    equal.push(vec![format!("f:{k}")]);
                } else if a_empty || b_empty {
                    // `{}` on one side is a leaf of its own.
                    o.insert(k.clone(), ownable(k, &om[k.as_str()]));
                    n.insert(k.clone(), ownable(k, &nm[k.as_str()]));
                } else {
                    let (mut pa, mut pb) = (Map::new(), Map::new());
                    for c in names {
                        match (a.get(c.as_str()), b.get(c.as_str())) {
                            (Some(x), Some(y)) if x == y => equal.push(vec![format!("f:{k}"), format!("f:{c}")]),
                            (x, y) => {
                                if let Some(x) = x {
                                    pa.insert(c.clone(), x.clone());
                                }
                                if let Some(y) = y {
                                    pb.insert(c.clone(), y.clone());
                                }
                            }
                        }
                    }
                    // A side left empty by pruning still has its equal children: leave it out
                    // rather than let `{}` read as a leaf.
                    if !pa.is_empty() {
                        o.insert(k.clone(), Value::Object(pa));
                    }
                    if !pb.is_empty() {
                        n.insert(k.clone(), Value::Object(pb));
                    }
                }
            }
            (Some(x), Some(y)) if x == y => equal.push(vec![format!("f:{k}")]),
            (x, y) => {
                if let Some(x) = x {
                    o.insert(k.clone(), ownable(k, x));
                }
                if let Some(y) = y {
                    n.insert(k.clone(), ownable(k, y));
                }
            }
        }
    }
    let (mut ol, mut nl) = (BTreeSet::new(), BTreeSet::new());
    leaves(&Value::Object(o), &mut Vec::new(), &mut ol);
    leaves(&Value::Object(n), &mut Vec::new(), &mut nl);
    (ol, nl, equal)
}

/// A list element's existence entry (`…/k:{…}/.`): owning it means the element exists.
fn is_existence(p: &[String]) -> bool {
    p.last().is_some_and(|s| s == ".")
}

/// The value at a leaf path, for comparisons.
fn value_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        if seg == "." {
            return Some(cur);
        }
        if let Some(f) = seg.strip_prefix("f:") {
            let next = cur.get(f)?;
            cur = next;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array()?
                .iter()
                .find(|it| want.iter().all(|(wk, wv)| it.get(wk).unwrap_or(&json!("TCP")) == wv))?;
        } else if let Some(val) = seg.strip_prefix("v:") {
            let want: Value = serde_json::from_str(val).ok()?;
            return cur.as_array()?.iter().find(|x| **x == want);
        } else {
            return None;
        }
    }
    Some(cur)
}

/// FieldsV1 trie from a set of leaf paths.
fn to_fields_v1(set: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let entry = cur.entry(seg.clone()).or_insert_with(|| json!({}));
            cur = entry.as_object_mut().expect("trie nodes are objects");
        }
    }
    // Interior list elements carry "." (already inserted); interior maps do not need it.
    Value::Object(root)
}

fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    if k == "." {
                        out.insert(path.clone());
                    } else {
                        walk(child, path, out);
                    }
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: String,
    fields: BTreeSet<FieldPath>,
}

fn entry_from(e: &Value) -> Entry {
    Entry {
        manager: e["manager"].as_str().unwrap_or("").into(),
        operation: e["operation"].as_str().unwrap_or("Update").into(),
        api_version: e["apiVersion"].as_str().unwrap_or("").into(),
        time: e["time"].as_str().unwrap_or("").into(),
        subresource: e["subresource"].as_str().unwrap_or("").into(),
        fields: from_fields_v1(&e["fieldsV1"]),
    }
}

fn entry_to_value(e: &Entry) -> Value {
    entry_value(
        &e.manager,
        &e.operation,
        &e.api_version,
        &e.time,
        &e.subresource,
        to_fields_v1(&e.fields),
    )
}

/// A managedFields entry. The trie is moved in: `json!` would copy it through the serializer.
fn entry_value(manager: &str, operation: &str, api_version: &str, time: &str, subresource: &str, trie: Value) -> Value {
    let mut m = Map::new();
    m.insert("manager".into(), Value::String(manager.into()));
    m.insert("operation".into(), Value::String(operation.into()));
    m.insert("apiVersion".into(), Value::String(api_version.into()));
    m.insert("time".into(), Value::String(time.into()));
    m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
    m.insert("fieldsV1".into(), trie);
    if !subresource.is_empty() {
        m.insert("subresource".into(), Value::String(subresource.into()));
    }
    Value::Object(m)
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().map(entry_from).collect())
        .unwrap_or_default()
}

fn set_managed_fields(obj: &mut Value, list: Vec<Value>) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(entry_to_value)
        .collect();
    set_managed_fields(obj, list);
}

/// Whether a FieldsV1 trie holds a leaf path.
fn trie_has(fields_v1: &Value, path: &[String]) -> bool {
    let mut cur = fields_v1;
    for seg in path {
        match cur.get(seg) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    true
}

fn subresource_name(part: Part) -> &'static str {
    match part {
        Part::Main | Part::Both => "",
        Part::Status => "status",
    }
}

/// Record an Update by `manager`: it gains every field it changed; others lose them. A client
/// that sends `managedFields` itself (other than unchanged) sets them as given.
pub fn record_update(new: &mut Value, old: Option<&Value>, manager: &str, api_version: &str, part: Part) {
    let explicit = new["metadata"].get("managedFields");
    if let (Some(explicit), Some(old)) = (explicit, old) {
        if Some(explicit) != old["metadata"].get("managedFields") {
            // Taken as given; `[{}]` clears.
            let cleared = explicit
                .as_array()
                .is_some_and(|a| a.iter().all(|e| e.as_object().is_none_or(|m| m.is_empty())));
            if cleared {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove("managedFields");
                }
            }
            return;
        }
    }
    if old.is_none() && explicit.is_some() {
        return;
    }
    let Some(old) = old else {
        // A create: the manager owns every ownable field there is.
        let trie = owned_trie(new, part);
        let list = if trie.as_object().is_some_and(|t| !t.is_empty()) {
            let now = crate::objects::now();
            vec![entry_value(
                manager,
                "Update",
                api_version,
                &now,
                subresource_name(part),
                trie,
            )]
        } else {
            Vec::new()
        };
        set_managed_fields(new, list);
        return;
    };
    let (old_leaves, new_leaves, equal) = differing_leaves(old, new, part);
    let changed: BTreeSet<FieldPath> = new_leaves
        .iter()
        // An element's "." only says it exists: it changes when the element is added, not when
        // something inside it does.
        .filter(|p| !old_leaves.contains(*p) || (!is_existence(p) && value_at(old, p) != value_at(new, p)))
        .cloned()
        .collect();
    if changed.is_empty() && old_leaves.is_subset(&new_leaves) {
        // Nobody gains or loses a field: the record stands as it is.
        let recorded = old["metadata"].get("managedFields");
        if new["metadata"].get("managedFields") != recorded {
            if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                match recorded {
                    Some(r) => meta.insert("managedFields".into(), r.clone()),
                    None => meta.remove("managedFields"),
                };
            }
        }
        return;
    }
    let sub = subresource_name(part);
    let kept = |p: &FieldPath| new_leaves.contains(p) || equal.iter().any(|q| p.starts_with(q));
    let gone: Vec<&FieldPath> = old_leaves.iter().filter(|p| !new_leaves.contains(*p)).collect();
    // Entries are rewritten only where they change; the others are kept as they are, unparsed
    // (a pod's creation entry holds its whole spec, and status writes never touch it).
    // The body's managed fields are the stored ones (checked above): take them rather than
    // copy the stored ones (a pod's creation entry holds its whole spec).
    let taken = new
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove("managedFields"));
    let recorded: Vec<Value> = match taken {
        Some(Value::Array(a)) => a,
        _ => old["metadata"]["managedFields"].as_array().cloned().unwrap_or_default(),
    };
    let time = crate::objects::now();
    let mut out: Vec<Value> = Vec::with_capacity(recorded.len() + 1);
    let mut own_updated = false;
    for raw in recorded {
        let same_sub = raw["subresource"].as_str().unwrap_or("") == sub;
        let own = same_sub && raw["manager"] == manager && raw["operation"].as_str().unwrap_or("Update") == "Update";
        let trie = &raw["fieldsV1"];
        let touched = (own && !changed.is_empty())
            // Fields that no longer exist belong to nobody.
            || (same_sub && gone.iter().any(|p| trie_has(trie, p)))
            || (!own && changed.iter().any(|p| trie_has(trie, p)));
        if !touched {
            out.push(raw);
            continue;
        }
        let mut e = entry_from(&raw);
        e.fields.retain(|p| kept(p) || !same_sub);
        if !own {
            e.fields.retain(|p| !changed.contains(p));
        } else if !changed.is_empty() && !own_updated {
            own_updated = true;
            e.fields.extend(changed.iter().cloned());
            e.time = time.clone();
            e.api_version = api_version.into();
        }
        if !e.fields.is_empty() {
            out.push(entry_to_value(&e));
        }
    }
    if !changed.is_empty() && !own_updated {
        out.push(entry_to_value(&Entry {
            manager: manager.into(),
            operation: "Update".into(),
            api_version: api_version.into(),
            time,
            subresource: sub.into(),
            fields: changed,
        }));
    }
    set_managed_fields(new, out);
}

/// A field owned by another manager that an apply would change.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub field: String,
}

fn display_path(p: &[String]) -> String {
    let mut s = String::new();
    for seg in p {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            s.push('[');
            s.push_str(&k.replace(':', "="));
            s.push(']');
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// Merge an applied configuration into `current` (SSA merge: maps recursively, keyed lists by
/// key, sets by value, everything else replaced).
fn merge(current: &mut Value, applied: &Value, field: &str) {
    match (current, applied) {
        (Value::Object(c), Value::Object(a)) => {
            for (k, av) in a {
                match c.get_mut(k) {
                    Some(cv) if !av.is_null() => merge(cv, av, k),
                    _ => {
                        c.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(c), Value::Array(a)) => {
            let all: Vec<Value> = c.iter().chain(a.iter()).cloned().collect();
            if let Some(keys) = list_keys(field, &all) {
                for av in a {
                    let seg = key_segment(av, &keys);
                    match c.iter_mut().find(|cv| key_segment(cv, &keys) == seg) {
                        Some(cv) => merge(cv, av, ""),
                        None => c.push(av.clone()),
                    }
                }
            } else if is_set(field) {
                for av in a {
                    if !c.contains(av) {
                        c.push(av.clone());
                    }
                }
            } else {
                *c = a.clone();
            }
        }
        (c, a) => *c = a.clone(),
    }
}

/// Remove a leaf path from an object (a field a manager stopped applying).
fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        // Remove the list element itself.
        if let Some((elem, list_parents)) = parents.split_last() {
            if let (Some(k), Some(list)) = (
                elem.strip_prefix("k:"),
                navigate(v, list_parents).and_then(Value::as_array_mut),
            ) {
                if let Ok(want) = serde_json::from_str::<Map<String, Value>>(k) {
                    list.retain(|it| !want.iter().all(|(wk, wv)| it.get(wk).unwrap_or(&json!("TCP")) == wv));
                }
            }
        }
        return;
    }
    let Some(parent) = navigate(v, parents) else { return };
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = parent.as_object_mut() {
            m.remove(f);
            // A map left empty by the removal goes too, as upstream prunes it.
            if m.is_empty() && parents.last().is_some_and(|p| p.starts_with("f:")) {
                remove_path(v, parents);
            }
        }
    } else if let Some(val) = last.strip_prefix("v:") {
        if let (Ok(want), Some(list)) = (serde_json::from_str::<Value>(val), parent.as_array_mut()) {
            list.retain(|x| *x != want);
        }
    }
}

fn navigate<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            cur = cur.get_mut(f)?;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array_mut()?
                .iter_mut()
                .find(|it| want.iter().all(|(wk, wv)| it.get(wk).unwrap_or(&json!("TCP")) == wv))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Server-side apply of `applied` by `manager` onto `current`. Returns the new object (managed
/// fields updated) or the conflicts (when not forced).
pub fn apply(
    current: &Value,
    applied: &Value,
    manager: &str,
    api_version: &str,
    part: Part,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let applied_leaves = owned_leaves(applied, part);
    let mut entries = read_entries(current);
    // Fields this manager applied before and no longer does are removed, unless others own them.
    let previous: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource_name(part))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut merged = current.clone();
    if let (Some(m), Some(a)) = (merged.as_object_mut(), applied.as_object()) {
        for (k, v) in a {
            if k == "metadata" {
                let cm = m.entry("metadata").or_insert_with(|| json!({}));
                for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(av) = v.get(mk) {
                        match cm.get_mut(mk) {
                            Some(cv) => merge(cv, av, mk),
                            None => {
                                cm[mk] = av.clone();
                            }
                        }
                    }
                }
            } else if k != "apiVersion" && k != "kind" {
                match m.get_mut(k) {
                    // An EndpointSlice's `ports`: atomic, replaced whole.
                    Some(cv) if k == "ports" => *cv = v.clone(),
                    Some(cv) => merge(cv, v, k),
                    None => {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    let mut conflicts = Vec::new();
    for e in entries
        .iter_mut()
        .filter(|e| !(e.manager == manager && e.operation == "Apply") && e.subresource == subresource_name(part))
    {
        let clashing: Vec<FieldPath> = e
            .fields
            .iter()
            .filter(|p| applied_leaves.contains(*p) && !is_existence(p) && value_at(current, p) != value_at(&merged, p))
            .cloned()
            .collect();
        if clashing.is_empty() {
            continue;
        }
        if force {
            e.fields.retain(|p| !clashing.contains(p));
        } else {
            for p in clashing {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    field: display_path(&p),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let mut next = merged;
    let others: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut dropped: Vec<&FieldPath> = previous
        .iter()
        .filter(|p| !applied_leaves.contains(*p) && !others.contains(*p))
        .collect();
    // Remove deeper paths first.
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove_path(&mut next, p);
    }
    let time = crate::objects::now();
    entries.retain(|e| !(e.manager == manager && e.operation == "Apply" && e.subresource == subresource_name(part)));
    entries.push(Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: api_version.into(),
        time,
        subresource: subresource_name(part).into(),
        fields: applied_leaves,
    });
    // Apply entries first, like upstream's ordering of operations by time is not guaranteed;
    // keep a stable order by manager for readability.
    let mut by_key: BTreeMap<(String, String, String), Entry> = BTreeMap::new();
    for e in entries {
        by_key.insert((e.manager.clone(), e.operation.clone(), e.subresource.clone()), e);
    }
    let entries: Vec<Entry> = by_key.into_values().collect();
    write_entries(&mut next, &entries);
    Ok(next)
}

/// The 409 message upstream gives for apply conflicts.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let mut by_mgr: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for c in conflicts {
        by_mgr
            .entry((c.manager.clone(), c.api_version.clone()))
            .or_default()
            .push(c.field.clone());
    }
    let n = conflicts.len();
    let head = if n == 1 {
        "Apply failed with 1 conflict".to_string()
    } else {
        format!("Apply failed with {n} conflicts")
    };
    let parts: Vec<String> = by_mgr
        .iter()
        .map(|((m, v), fields)| {
            if fields.len() == 1 {
                format!("conflict with \"{m}\" using {v}: {}", fields[0])
            } else {
                format!("conflicts with \"{m}\" using {v}:\n- {}", fields.join("\n- "))
            }
        })
        .collect();
    format!("{head}: {}", parts.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "b"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    /// The unpruned algorithm: every ownable leaf of both objects, compared in full.
    fn record_update_reference(new: &mut Value, old: &Value, manager: &str, part: Part) {
        let mut entries = read_entries(old);
        let new_leaves = owned_leaves(new, part);
        let old_leaves = owned_leaves(old, part);
        let changed: BTreeSet<FieldPath> = new_leaves
            .iter()
            .filter(|p| !old_leaves.contains(*p) || (!is_existence(p) && value_at(old, p) != value_at(new, p)))
            .cloned()
            .collect();
        for e in entries.iter_mut() {
            e.fields
                .retain(|p| new_leaves.contains(p) || (e.subresource != subresource_name(part)));
            if e.manager != manager || e.operation != "Update" || e.subresource != subresource_name(part) {
                e.fields.retain(|p| !changed.contains(p));
            }
        }
        if !changed.is_empty() {
            match entries
                .iter_mut()
                .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == subresource_name(part))
            {
                Some(e) => e.fields.extend(changed),
                None => entries.push(Entry {
                    manager: manager.into(),
                    operation: "Update".into(),
                    api_version: "v1".into(),
                    time: String::new(),
                    subresource: subresource_name(part).into(),
                    fields: changed,
                }),
            }
        }
        write_entries(new, &entries);
    }

    fn without_times(v: &Value) -> Vec<(String, String, Value)> {
        read_entries(v)
            .into_iter()
            .map(|e| (e.manager, e.subresource, to_fields_v1(&e.fields)))
            .collect()
    }

    #[test]
    fn pruned_record_matches_the_full_comparison() {
        let base = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "c", "image": "i:1", "ports": [{"containerPort": 80}]},
                                    {"name": "d", "image": "j:1"}],
                     "nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "k", "operator": "Exists"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}});
        let mut created = base.clone();
        record_update(&mut created, None, "creator", "v1", Part::Main);
        let mut with_status = created.clone();
        with_status["status"]["phase"] = json!("Running");
        record_update(&mut with_status, Some(&created), "kubelet", "v1", Part::Status);
        type Edit = fn(&mut Value);
        let edits: Vec<(&str, Part, Edit)> = vec![
            ("image", Part::Main, |v| {
                v["spec"]["containers"][0]["image"] = json!("i:2")
            }),
            ("drop container", Part::Main, |v| {
                v["spec"]["containers"].as_array_mut().expect("list").pop();
            }),
            ("labels", Part::Main, |v| {
                v["metadata"]["labels"] = json!({"a": "1", "c": "3"});
            }),
            ("drop labels", Part::Main, |v| {
                v["metadata"].as_object_mut().expect("map").remove("labels");
            }),
            ("empty selector", Part::Main, |v| v["spec"]["nodeSelector"] = json!({})),
            ("drop spec child", Part::Main, |v| {
                v["spec"].as_object_mut().expect("map").remove("tolerations");
            }),
            ("new top-level", Part::Main, |v| v["data"] = json!({"x": "y"})),
            ("status", Part::Status, |v| {
                v["status"]["phase"] = json!("Succeeded");
                v["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True"},
                                                   {"type": "Ready", "status": "False"}]);
            }),
            ("status drop", Part::Status, |v| {
                v["status"].as_object_mut().expect("map").remove("conditions");
            }),
            ("bind", Part::Both, |v| {
                v["spec"]["nodeName"] = json!("n1");
                v["status"]["conditions"][0]["status"] = json!("False");
            }),
            ("nothing", Part::Main, |_| {}),
        ];
        for (what, part, edit) in edits {
            let mut fast = with_status.clone();
            edit(&mut fast);
            let mut reference = fast.clone();
            record_update(&mut fast, Some(&with_status), "editor", "v1", part);
            record_update_reference(&mut reference, &with_status, "editor", part);
            assert_eq!(without_times(&fast), without_times(&reference), "{what}");
        }
    }

    #[test]
    fn the_direct_trie_is_the_trie_of_the_leaves() {
        let objs = [
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"b": "2", "a": "1"},
                             "finalizers": ["x/y", "a/b"], "ownerReferences": [{"uid": "o", "name": "rs"}]},
                "spec": {"containers": [{"name": "c", "image": "i:1", "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
                                         "env": [{"name": "E", "value": "v"}], "args": ["a", "b"], "resources": {}}],
                         "volumes": [{"name": "v", "emptyDir": {}}], "nodeSelector": {}, "tolerations": [],
                         "topologySpreadConstraints": [{"topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "maxSkew": 1}]},
                "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}}),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "e"},
                "ports": [{"port": 80}], "endpoints": [{"addresses": ["10.0.0.1"]}]}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "only-server-metadata", "uid": "u"}}),
            json!({"metadata": {"name": "x"}, "data": {}}),
        ];
        for obj in objs {
            for part in [Part::Main, Part::Status, Part::Both] {
                let direct = owned_trie(&obj, part);
                let from_leaves = to_fields_v1(&owned_leaves(&obj, part));
                assert_eq!(direct, from_leaves, "{part:?} of {obj}");
                // The same order too, as the JSON shows it.
                assert_eq!(direct.to_string(), from_leaves.to_string(), "{part:?} of {obj}");
            }
        }
    }

    #[test]
    fn update_records_changed_fields_and_takes_them_from_others() {
        let mut v1 = deploy(1, "i:1");
        record_update(&mut v1, None, "creator", "apps/v1", Part::Main);
        let mf = &v1["metadata"]["managedFields"][0];
        assert_eq!(mf["manager"], "creator");
        assert!(
            mf["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:image"]
                .is_object()
        );
        let mut v2 = v1.clone();
        v2["spec"]["replicas"] = json!(3);
        record_update(&mut v2, Some(&v1), "scaler", "apps/v1", Part::Main);
        let entries = read_entries(&v2);
        let scaler = entries.iter().find(|e| e.manager == "scaler").expect("scaler entry");
        assert_eq!(scaler.fields.len(), 1);
        let creator = entries.iter().find(|e| e.manager == "creator").expect("creator entry");
        assert!(!creator
            .fields
            .iter()
            .any(|p| p.last().map(String::as_str) == Some("f:replicas")));
    }

    #[test]
    fn apply_conflicts_then_force() {
        let mut cur = deploy(1, "i:1");
        record_update(&mut cur, None, "kubectl.1.33", "apps/v1", Part::Main);
        let cur =
            apply(&cur, &deploy(1, "i:1"), "kubectl", "apps/v1", Part::Main, false).expect("same values: no conflict");
        let err = apply(&cur, &deploy(5, "i:1"), "kubectl", "apps/v1", Part::Main, false).expect_err("conflict");
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].field, ".spec.replicas");
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"kubectl.1.33\" using apps/v1: .spec.replicas"
        );
        let forced = apply(&cur, &deploy(5, "i:1"), "kubectl", "apps/v1", Part::Main, true).expect("forced");
        assert_eq!(forced["spec"]["replicas"], 5);
    }

    #[test]
    fn co_owning_a_list_element_is_no_conflict() {
        let a = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                       "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "i:1"}]}}}});
        let cur = apply(
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}),
            &a,
            "a",
            "apps/v1",
            Part::Main,
            false,
        )
        .expect("a applies");
        let b = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                       "spec": {"template": {"spec": {"containers": [{"name": "app", "resources": {"limits": {"cpu": "1"}}}]}}}});
        let merged =
            apply(&cur, &b, "b", "apps/v1", Part::Main, false).expect("b co-owns the container without conflict");
        let c = &merged["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            (c["image"].as_str(), c["resources"]["limits"]["cpu"].as_str()),
            (Some("i:1"), Some("1"))
        );
        // An update that changes a field inside the element takes that field only.
        let mut next = merged.clone();
        next["spec"]["template"]["spec"]["containers"][0]["image"] = json!("i:2");
        record_update(&mut next, Some(&merged), "setter", "apps/v1", Part::Main);
        let setter = read_entries(&next)
            .into_iter()
            .find(|e| e.manager == "setter")
            .expect("setter");
        assert_eq!(setter.fields.len(), 1);
        assert!(setter
            .fields
            .iter()
            .all(|p| p.last().map(String::as_str) == Some("f:image")));
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let base =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let v1 = apply(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            &base,
            "m",
            "v1",
            Part::Main,
            false,
        )
        .expect("apply");
        let applied2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let v2 = apply(&v1, &applied2, "m", "v1", Part::Main, false).expect("apply");
        assert_eq!(v2["data"], json!({"a": "1"}));
    }
}
