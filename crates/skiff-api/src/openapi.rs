//! OpenAPI schemas of the served kinds, generated from the k8s-openapi types Skiff uses (via
//! schemars, OpenAPI 3 flavour) and from CRD schemas, with the Kubernetes extensions kubectl
//! reads (`x-kubernetes-group-version-kind`).

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::registry::ResourceType;

/// Schemas of all built-in kinds and everything they reference.
pub struct Definitions {
    pub schemas: Map<String, Value>,
    /// (group, version, kind) → definition name.
    pub by_gvk: HashMap<(String, String, String), String>,
}

fn ref_name(schema: &Value) -> Option<String> {
    schema["$ref"]
        .as_str()
        .and_then(|r| r.rsplit('/').next())
        .map(str::to_string)
}

/// The built-in definitions, generated once on first use.
pub fn builtin() -> &'static Definitions {
    static DEFS: OnceLock<Definitions> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        let mut by_gvk = HashMap::new();
        for t in crate::registry::builtin_types() {
            let Some(schema_fn) = t.builtin.and_then(|h| h.schema) else {
                continue;
            };
            let s = schema_fn(&mut generator);
            if let Some(name) = ref_name(&s.to_value()) {
                by_gvk.insert((t.group.clone(), t.version.clone(), t.kind.clone()), name);
            }
        }
        let mut schemas = generator.take_definitions(true);
        // One definition may serve several kinds (events in two groups share none, but be safe).
        let mut gvks: HashMap<String, Vec<Value>> = HashMap::new();
        for ((g, v, k), name) in &by_gvk {
            gvks.entry(name.clone())
                .or_default()
                .push(json!({"group": g, "version": v, "kind": k}));
        }
        for (name, list) in gvks {
            if let Some(def) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
                def.insert("x-kubernetes-group-version-kind".into(), Value::Array(list));
            }
        }
        annotate_patch_strategies(&mut schemas, &by_gvk);
        Definitions { schemas, by_gvk }
    })
}

/// The definition name Kubernetes uses for a custom kind: `com.example.v1.Widget`.
pub fn custom_name(t: &ResourceType) -> String {
    let mut parts: Vec<&str> = t.group.split('.').collect();
    parts.reverse();
    format!("{}.{}.{}", parts.join("."), t.version, t.kind)
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// A custom resource's schema: the CRD's structural schema with type meta and metadata.
pub fn custom_schema(t: &ResourceType) -> Value {
    let mut s = t
        .schema
        .as_deref()
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(m) = s.as_object_mut() {
        let props = m.entry("properties").or_insert_with(|| json!({}));
        if let Some(p) = props.as_object_mut() {
            p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            p.insert("metadata".into(), json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata."}));
        }
        m.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": t.group, "version": t.version, "kind": t.kind}]),
        );
    }
    s
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(name) = x.as_str().and_then(|r| r.rsplit('/').next()) {
                        out.push(name.to_string());
                    }
                } else {
                    collect_refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// The schemas needed by `types` (all of one group-version): their definitions and everything
/// they reference.
pub fn schemas_for(types: &[&ResourceType]) -> Map<String, Value> {
    let defs = builtin();
    let mut out = Map::new();
    let mut todo: Vec<String> = Vec::new();
    for t in types {
        if t.is_custom() {
            let s = custom_schema(t);
            collect_refs(&s, &mut todo);
            out.insert(custom_name(t), s);
        } else if let Some(name) = defs.by_gvk.get(&(t.group.clone(), t.version.clone(), t.kind.clone())) {
            todo.push(name.clone());
        }
    }
    let mut seen: BTreeSet<String> = out.keys().cloned().collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(s) = defs.schemas.get(&name) {
            collect_refs(s, &mut todo);
            out.insert(name, s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_kinds_have_schemas_with_gvk() {
        let defs = builtin();
        let name = defs
            .by_gvk
            .get(&("apps".into(), "v1".into(), "StatefulSet".into()))
            .expect("statefulset schema");
        assert_eq!(name, "io.k8s.api.apps.v1.StatefulSet");
        let s = &defs.schemas[name];
        assert_eq!(s["x-kubernetes-group-version-kind"][0]["kind"], "StatefulSet");
        assert!(s["properties"]["spec"].is_object());
        let types = crate::registry::builtin_types();
        let sts = types.iter().find(|t| t.kind == "StatefulSet").expect("sts");
        let needed = schemas_for(&[sts.as_ref()]);
        assert!(
            needed.contains_key("io.k8s.api.core.v1.PodSpec"),
            "references are followed"
        );
        assert!(needed.contains_key(OBJECT_META));
        let pod_spec = &defs.schemas["io.k8s.api.core.v1.PodSpec"];
        assert_eq!(
            pod_spec["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        assert_eq!(
            pod_spec["properties"]["containers"]["x-kubernetes-patch-strategy"],
            "merge"
        );
        assert_eq!(
            pod_spec["properties"]["volumes"]["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        let container = &defs.schemas["io.k8s.api.core.v1.Container"];
        assert_eq!(
            container["properties"]["ports"]["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        assert!(container["properties"]["args"]
            .get("x-kubernetes-patch-strategy")
            .is_none());
        let meta = &defs.schemas[OBJECT_META];
        assert_eq!(meta["properties"]["finalizers"]["x-kubernetes-patch-strategy"], "merge");
    }
}

/// Add the patch extensions kubectl reads (`x-kubernetes-patch-strategy`,
/// `x-kubernetes-patch-merge-key`) from the strategic-merge table, walking each kind's schema
/// from its root.
fn annotate_patch_strategies(schemas: &mut Map<String, Value>, by_gvk: &HashMap<(String, String, String), String>) {
    let mut done: BTreeSet<String> = BTreeSet::new();
    for ((_, _, kind), root) in by_gvk {
        if !crate::strategic_merge::supports(kind) {
            continue;
        }
        walk(schemas, kind, root, &mut Vec::new(), &mut done);
    }
}

fn referenced(prop: &Value) -> Option<String> {
    let r = prop["$ref"]
        .as_str()
        .or_else(|| prop["allOf"][0]["$ref"].as_str())
        .or_else(|| prop["items"]["$ref"].as_str())
        .or_else(|| prop["items"]["allOf"][0]["$ref"].as_str())?;
    r.rsplit('/').next().map(str::to_string)
}

fn walk(schemas: &mut Map<String, Value>, kind: &str, def: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) {
    if !done.insert(def.to_string()) || path.len() > 12 {
        return;
    }
    let props: Vec<String> = schemas
        .get(def)
        .and_then(|d| d["properties"].as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for p in props {
        path.push(p.clone());
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let meta = crate::strategic_merge::patch_meta(kind, &refs);
        let Some(prop) = schemas.get_mut(def).and_then(|d| d["properties"].get_mut(&p)) else {
            path.pop();
            continue;
        };
        let is_list = prop["type"] == "array";
        if let (Some(meta), Some(obj)) = (meta, prop.as_object_mut()) {
            use crate::strategic_merge::ListStrategy;
            let strategy = match (is_list, meta.strategy, meta.retain_keys) {
                (true, ListStrategy::Merge { key }, rk) => {
                    if let Some(k) = key {
                        obj.insert("x-kubernetes-patch-merge-key".into(), json!(k));
                    }
                    Some(if rk { "merge,retainKeys" } else { "merge" })
                }
                (false, ListStrategy::Atomic, _) => Some("replace"),
                (false, _, true) => Some("retainKeys"),
                _ => None,
            };
            if let Some(s) = strategy {
                obj.insert("x-kubernetes-patch-strategy".into(), json!(s));
            }
        }
        let next = referenced(prop);
        if let Some(next) = next {
            // Types are shared between kinds and paths; each is annotated from its first path,
            // which is enough because the table describes types, not paths.
            walk(schemas, kind, &next, path, done);
        }
        path.pop();
    }
}

/// Encoding of a Swagger 2.0 document as gnostic's `openapi.v2.Document` protobuf — what
/// kubectl 1.27/1.28 require at `/openapi/v2`. Hand-written (a few dozen lines of protobuf
/// wire format): no crate provides the gnostic messages without a protoc build step.
pub mod v2 {
    use serde_json::{Map, Value};

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, (u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        key(out, field, 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    fn string(out: &mut Vec<u8>, field: u32, s: &str) {
        if !s.is_empty() {
            bytes(out, field, s.as_bytes());
        }
    }

    fn boolean(out: &mut Vec<u8>, field: u32, b: bool) {
        if b {
            key(out, field, 0);
            varint(out, 1);
        }
    }

    fn int64(out: &mut Vec<u8>, field: u32, v: i64) {
        key(out, field, 0);
        varint(out, v as u64);
    }

    fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        key(out, field, 1);
        out.extend_from_slice(&v.to_le_bytes());
    }

    /// `openapi.v2.Any{yaml}`: JSON is valid YAML.
    fn any(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, 2, &v.to_string());
        out
    }

    fn named_any(name: &str, v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, 1, name);
        bytes(&mut out, 2, &any(v));
        out
    }

    fn v2_ref(r: &str) -> String {
        r.replace("#/components/schemas/", "#/definitions/")
    }

    /// `openapi.v2.Schema` from an OpenAPI 3-flavoured JSON schema.
    pub fn schema(s: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(m) = s.as_object() else { return out };
        // `allOf: [{$ref}]` beside a description is v3's way to describe a reference.
        let single_ref = m
            .get("allOf")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 1)
            .and_then(|a| a[0]["$ref"].as_str());
        if let Some(r) = m.get("$ref").and_then(Value::as_str).or(single_ref) {
            string(&mut out, 1, &v2_ref(r));
        }
        let s_ = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
        string(&mut out, 2, s_("format"));
        string(&mut out, 3, s_("title"));
        string(&mut out, 4, s_("description"));
        if let Some(d) = m.get("default") {
            bytes(&mut out, 5, &any(d));
        }
        for (field, k) in [(6, "multipleOf"), (7, "maximum"), (9, "minimum")] {
            if let Some(v) = m.get(k).and_then(Value::as_f64) {
                double(&mut out, field, v);
            }
        }
        boolean(
            &mut out,
            8,
            m.get("exclusiveMaximum").and_then(Value::as_bool).unwrap_or(false),
        );
        boolean(
            &mut out,
            10,
            m.get("exclusiveMinimum").and_then(Value::as_bool).unwrap_or(false),
        );
        for (field, k) in [
            (11, "maxLength"),
            (12, "minLength"),
            (14, "maxItems"),
            (15, "minItems"),
            (17, "maxProperties"),
            (18, "minProperties"),
        ] {
            if let Some(v) = m.get(k).and_then(Value::as_i64) {
                int64(&mut out, field, v);
            }
        }
        string(&mut out, 13, s_("pattern"));
        boolean(
            &mut out,
            16,
            m.get("uniqueItems").and_then(Value::as_bool).unwrap_or(false),
        );
        for r in m
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            string(&mut out, 19, r);
        }
        for e in m.get("enum").and_then(Value::as_array).into_iter().flatten() {
            bytes(&mut out, 20, &any(e));
        }
        match m.get("additionalProperties") {
            Some(Value::Bool(b)) => {
                let mut item = Vec::new();
                key(&mut item, 2, 0);
                varint(&mut item, u64::from(*b));
                bytes(&mut out, 21, &item);
            }
            Some(ap @ Value::Object(_)) => {
                let mut item = Vec::new();
                bytes(&mut item, 1, &schema(ap));
                bytes(&mut out, 21, &item);
            }
            _ => {}
        }
        if let Some(t) = m.get("type").and_then(Value::as_str) {
            let mut item = Vec::new();
            string(&mut item, 1, t);
            bytes(&mut out, 22, &item);
        }
        if let Some(items) = m.get("items") {
            let mut item = Vec::new();
            bytes(&mut item, 1, &schema(items));
            bytes(&mut out, 23, &item);
        }
        if single_ref.is_none() {
            for a in m.get("allOf").and_then(Value::as_array).into_iter().flatten() {
                bytes(&mut out, 24, &schema(a));
            }
        }
        if let Some(props) = m.get("properties").and_then(Value::as_object) {
            let mut p = Vec::new();
            for (name, sub) in props {
                let mut named = Vec::new();
                string(&mut named, 1, name);
                bytes(&mut named, 2, &schema(sub));
                bytes(&mut p, 1, &named);
            }
            bytes(&mut out, 25, &p);
        }
        boolean(
            &mut out,
            27,
            m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
        );
        if let Some(e) = m.get("example") {
            bytes(&mut out, 30, &any(e));
        }
        for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
            bytes(&mut out, 31, &named_any(k, v));
        }
        out
    }

    /// A whole `openapi.v2.Document` holding `definitions`.
    pub fn document(title: &str, version: &str, definitions: &Map<String, Value>) -> Vec<u8> {
        let mut out = Vec::new();
        string(&mut out, 1, "2.0");
        let mut info = Vec::new();
        string(&mut info, 1, title);
        string(&mut info, 2, version);
        bytes(&mut out, 2, &info);
        bytes(&mut out, 8, &[]);
        let mut defs = Vec::new();
        for (name, s) in definitions {
            let mut named = Vec::new();
            string(&mut named, 1, name);
            bytes(&mut named, 2, &schema(s));
            bytes(&mut defs, 1, &named);
        }
        bytes(&mut out, 9, &defs);
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        #[test]
        fn encodes_known_bytes() {
            // {type: string}: field 22 (TypeItem) holding field 1 "string".
            assert_eq!(
                schema(&json!({"type": "string"})),
                vec![0xb2, 0x01, 0x08, 0x0a, 0x06, b's', b't', b'r', b'i', b'n', b'g']
            );
            // A v3 reference becomes a v2 one.
            let r = schema(&json!({"allOf": [{"$ref": "#/components/schemas/X"}], "description": "d"}));
            assert_eq!(&r[..2], &[0x0a, 15]);
            assert_eq!(&r[2..17], b"#/definitions/X");
        }
    }
}
