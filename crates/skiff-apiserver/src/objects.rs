//! The object layer: how creates, updates, patches and deletes turn into store writes, with
//! Kubernetes' metadata rules (uid, creationTimestamp, generation, resourceVersion
//! preconditions, finalizers and graceful deletion, status and scale subresources).
//! Every writer inside the server goes through here too, so the rules hold for everyone.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use skiff_api::{builtin, crd, defaults, validation, FieldError, ResourceType};
use skiff_store::{Revision, Store, StoreError};

use crate::cache::{Cache, CachedObject};
use crate::error::{ApiError, ApiResult};
use crate::types::Types;

/// How strictly unknown fields are treated (`fieldValidation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> ApiResult<Self> {
        match v {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Options of one write request.
#[derive(Clone, Debug, Default)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub manager: String,
    pub validation: FieldValidation,
}

/// The result of a write: the object as the client should see it, and warnings.
#[derive(Debug)]
pub struct Outcome {
    pub obj: Value,
    pub created: bool,
    pub warnings: Vec<String>,
    /// `obj` serialized, when the watch cache already holds exactly it (the response is then
    /// those bytes, not a second serialization of the object).
    pub raw: Option<Bytes>,
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
    /// Spec and status in one write: only for the server's own subresources (pod binding).
    Both,
}

#[derive(Clone, Debug, Default)]
pub struct DeleteOpts {
    pub propagation: Option<String>,
    pub grace_period: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

pub struct Objects {
    pub store: Arc<dyn Store>,
    pub cache: Arc<Cache>,
    pub types: Arc<Types>,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

fn str_of<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Kinds whose `metadata.generation` tracks spec changes.
pub fn tracks_generation(rt: &ResourceType) -> bool {
    rt.is_custom()
        || matches!(
            (rt.group.as_str(), rt.kind.as_str()),
            ("apps", _)
                | ("batch", _)
                | ("", "ReplicationController")
                | ("networking.k8s.io", "Ingress" | "NetworkPolicy")
                | ("policy", _)
                | ("apiextensions.k8s.io", _)
                | ("autoscaling", _)
        )
}

fn spec_part(rt: &ResourceType, v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("status");
        let keep_annotations = rt.group == "apps" && rt.kind == "Deployment";
        let ann = m.get("metadata").and_then(|x| x.get("annotations")).cloned();
        m.remove("metadata");
        if keep_annotations {
            m.insert("__annotations".into(), ann.unwrap_or(Value::Null));
        }
    }
    c
}

/// Ready to compare two stored states: without resourceVersion and managedFields timestamps.
/// Whether two states of an object are the same but for their resourceVersion and the times
/// in their managed fields (an update that changes nothing else is not written).
fn same_content(a: &Value, b: &Value) -> bool {
    let (Some(am), Some(bm)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    if am.len() != bm.len() {
        return false;
    }
    am.iter().all(|(k, av)| {
        let Some(bv) = bm.get(k) else { return false };
        if k != "metadata" {
            return av == bv;
        }
        let (Some(ameta), Some(bmeta)) = (av.as_object(), bv.as_object()) else {
            return av == bv;
        };
        let keys = |m: &Map<String, Value>| m.keys().filter(|k| *k != "resourceVersion").count();
        keys(ameta) == keys(bmeta)
            && ameta.iter().filter(|(k, _)| *k != "resourceVersion").all(|(k, x)| {
                let Some(y) = bmeta.get(k) else { return false };
                if k != "managedFields" {
                    return x == y;
                }
                match (x.as_array(), y.as_array()) {
                    (Some(xs), Some(ys)) => {
                        xs.len() == ys.len()
                            && xs.iter().zip(ys).all(|(e, f)| match (e.as_object(), f.as_object()) {
                                (Some(e), Some(f)) => {
                                    let n = |m: &Map<String, Value>| m.keys().filter(|k| *k != "time").count();
                                    n(e) == n(f)
                                        && e.iter().filter(|(k, _)| *k != "time").all(|(k, v)| f.get(k) == Some(v))
                                }
                                _ => e == f,
                            })
                    }
                    _ => x == y,
                }
            })
    })
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Objects {
    pub fn key(rt: &ResourceType, ns: Option<&str>, name: &str) -> String {
        rt.key(ns, name)
    }

    /// Wait for the cache to include a write we made, so the next read sees it.
    async fn settle(&self, rev: Revision) {
        if !self.cache.wait_for(rev, Duration::from_secs(5)).await {
            tracing::warn!(rev, "watch cache did not catch up within 5s");
        }
    }

    /// The stored object as the client's version of the type shows it.
    pub fn present(&self, rt: &ResourceType, stored: &Value) -> Value {
        self.present_owned(rt, stored.clone())
    }

    /// [`Self::present`] of an object the caller no longer needs.
    pub fn present_owned(&self, rt: &ResourceType, stored: Value) -> Value {
        if builtin::storage_api_version(&rt.group, &rt.kind).is_some()
            || stored["apiVersion"].as_str() != Some(&rt.api_version())
        {
            let mut v = builtin::convert(stored, &rt.group, &rt.kind, &rt.version);
            v["apiVersion"] = json!(rt.api_version());
            v["kind"] = json!(rt.kind);
            v
        } else {
            stored
        }
    }

    /// The watch cache's bytes of `stored` (just written at `rev` under `key`), when they are
    /// what the client gets: no conversion, and the cache holds that very revision.
    fn cached_bytes(&self, rt: &ResourceType, key: &str, stored: &Value, rev: Revision) -> Option<Bytes> {
        if builtin::storage_api_version(&rt.group, &rt.kind).is_some()
            || stored["apiVersion"].as_str() != Some(&rt.api_version())
        {
            return None;
        }
        self.cache.get(key).filter(|c| c.rev == rev).map(|c| c.bytes.clone())
    }

    /// Whether the client's version differs from the stored one (shared-storage kinds).
    pub fn needs_conversion(&self, rt: &ResourceType) -> bool {
        builtin::storage_api_version(&rt.group, &rt.kind).is_some_and(|s| s != rt.api_version())
    }

    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<Arc<CachedObject>> {
        self.cache
            .get(&rt.key(ns, name))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Decode a request body for `rt`: check apiVersion/kind, decode through the typed struct or
    /// the CRD schema, report unknown fields per `fieldValidation`, and convert to the storage
    /// version.
    fn decode_input(
        &self,
        rt: &ResourceType,
        mut obj: Value,
        opts: &WriteOpts,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: the body must be a JSON object",
                rt.kind, rt.version, rt.kind
            )));
        }
        let api_version = rt.api_version();
        match obj.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => obj["apiVersion"] = json!(api_version),
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
        }
        match obj.get("kind").and_then(Value::as_str) {
            None | Some("") => obj["kind"] = json!(rt.kind),
            Some(k) if k == rt.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )))
            }
        }
        let unknown: Vec<String>;
        let mut out = if let Some(h) = rt.builtin {
            let n = (h.normalize)(&obj).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {}",
                    rt.kind, rt.version, rt.kind, e.message
                ))
            })?;
            unknown = builtin::unknown_fields(&obj, &n);
            n
        } else {
            let meta = builtin::normalize_metadata(&obj["metadata"]).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {}",
                    rt.kind, rt.version, rt.kind, e.message
                ))
            })?;
            let mut unknown_meta: Vec<String> = builtin::unknown_fields(&obj["metadata"], &meta)
                .into_iter()
                .map(|p| format!("metadata.{p}"))
                .collect();
            obj["metadata"] = meta;
            if let Some(schema) = &rt.schema {
                unknown_meta.extend(crd::prune(schema, &mut obj, true));
            }
            unknown = unknown_meta;
            obj
        };
        if !unknown.is_empty() {
            match opts.validation {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown.iter().map(|u| format!("unknown field \"{u}\"")).collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => warnings.extend(unknown.iter().map(|u| format!("unknown field \"{u}\""))),
                FieldValidation::Ignore => {}
            }
        }
        if let Some(storage) = builtin::storage_api_version(&rt.group, &rt.kind) {
            if storage != api_version {
                let (sg, sv) = storage.rsplit_once('/').unwrap_or(("", storage));
                out = builtin::convert(out, sg, &rt.kind, sv);
                out["apiVersion"] = json!(storage);
            }
        }
        Ok(out)
    }

    fn apply_defaults_and_validate(&self, rt: &ResourceType, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
        defaults::apply(rt, obj);
        let mut errs: Vec<FieldError> = validation::validate(rt, obj);
        if let Some(schema) = &rt.schema {
            crd::apply_defaults(schema, obj);
            errs.extend(crd::validate(schema, obj));
        }
        if let Some(old) = old {
            errs.extend(validation::validate_update(rt, obj, old));
            if rt.is_custom() || rt.builtin.is_some() {
                let old_fin: Vec<&Value> = old["metadata"]["finalizers"]
                    .as_array()
                    .map(|a| a.iter().collect())
                    .unwrap_or_default();
                if !old["metadata"]["deletionTimestamp"].is_null() {
                    if let Some(new_fin) = obj["metadata"]["finalizers"].as_array() {
                        if new_fin.iter().any(|f| !old_fin.contains(&f)) {
                            errs.push(FieldError::forbidden(
                                "metadata.finalizers",
                                "no new finalizers can be added if the object is being deleted",
                            ));
                        }
                    }
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(rt, str_of(obj, "/metadata/name"), &errs))
        }
    }

    fn check_namespace_open(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<()> {
        let Some(ns) = ns.filter(|_| rt.namespaced) else {
            return Ok(());
        };
        let nsobj = self
            .cache
            .get(&format!("/registry/namespaces/{ns}"))
            .ok_or_else(|| ApiError::namespace_not_found(ns))?;
        if nsobj.deleting {
            return Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.qualified_plural()
            ))
            .with_details(json!({"name": name, "kind": rt.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]})));
        }
        Ok(())
    }

    fn encode(obj: &Value) -> ApiResult<Bytes> {
        let strip = obj["metadata"]
            .as_object()
            .is_some_and(|m| m.contains_key("resourceVersion") || m.contains_key("selfLink"));
        let stripped;
        let v = if strip {
            let mut v = obj.clone();
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
                m.remove("selfLink");
            }
            stripped = v;
            &stripped
        } else {
            obj
        };
        serde_json::to_vec(v)
            .map(Bytes::from)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    fn with_rev(mut obj: Value, rev: Revision) -> Value {
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
        obj
    }

    /// POST: create an object in `ns` (the URL's namespace).
    pub async fn create(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOpts,
    ) -> ApiResult<Outcome> {
        let mut warnings = Vec::new();
        let mut obj = self.decode_input(rt, body, opts, &mut warnings)?;
        {
            let meta = meta_mut(&mut obj);
            if rt.namespaced {
                let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
                let url_ns = ns.unwrap_or("");
                if !body_ns.is_empty() && body_ns != url_ns {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                meta.insert("namespace".into(), json!(url_ns));
            } else {
                meta.remove("namespace");
            }
            for k in [
                "resourceVersion",
                "selfLink",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                meta.remove(k);
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(now()));
            if tracks_generation(rt) {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
        }
        if rt.status && rt.kind != "Node" {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        let generate = str_of(&obj, "/metadata/name").is_empty() && !str_of(&obj, "/metadata/generateName").is_empty();
        if generate {
            let base = str_of(&obj, "/metadata/generateName").to_string();
            meta_mut(&mut obj).insert("name".into(), json!(format!("{base}{}", random_suffix())));
        }
        crate::fields::record_update(&mut obj, None, &opts.manager, &rt.api_version(), Part::Main);
        // Admission runs after the managed fields are recorded: what it adds is the server's,
        // not the client's (as upstream).
        if rt.group.is_empty() && rt.kind == "Pod" {
            // Namespace lifecycle comes first in upstream's admission chain.
            self.check_namespace_open(rt, ns, str_of(&obj, "/metadata/name"))?;
            crate::admission::service_account(&self.cache, &self.types, ns.unwrap_or(""), &mut obj, random_suffix)
                .await?;
        }
        self.apply_defaults_and_validate(rt, &mut obj, None)?;
        let name = str_of(&obj, "/metadata/name").to_string();
        self.check_namespace_open(rt, ns, &name)?;
        if opts.dry_run {
            if self.cache.get(&rt.key(ns, &name)).is_some() {
                return Err(ApiError::already_exists(rt, &name));
            }
            return Ok(Outcome {
                obj: self.present(rt, &obj),
                created: true,
                warnings,
                raw: None,
            });
        }
        let is_service = rt.group.is_empty() && rt.kind == "Service";
        let held = if is_service {
            Some(crate::alloc::allocate(&*self.store, rt, &mut obj, None).await?)
        } else {
            None
        };
        let mut held = held;
        let mut attempts = 0;
        loop {
            let name = str_of(&obj, "/metadata/name").to_string();
            let key = rt.key(ns, &name);
            let res = self.store.create(&key, Self::encode(&obj)?).await;
            if res.is_err() {
                if let Some(h) = held.take() {
                    h.release(&*self.store).await;
                }
            }
            match res {
                Ok(kv) => {
                    self.settle(kv.mod_revision).await;
                    let stored = Self::with_rev(obj, kv.mod_revision);
                    let raw = self.cached_bytes(rt, &key, &stored, kv.mod_revision);
                    return Ok(Outcome {
                        obj: self.present_owned(rt, stored),
                        raw,
                        created: true,
                        warnings,
                    });
                }
                Err(StoreError::AlreadyExists { .. }) if generate && attempts < 5 => {
                    attempts += 1;
                    let base = str_of(&obj, "/metadata/generateName").to_string();
                    meta_mut(&mut obj).insert("name".into(), json!(format!("{base}{}", random_suffix())));
                }
                Err(StoreError::AlreadyExists { .. }) => return Err(ApiError::already_exists(rt, &name)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Build the next stored state from the current one and what the client sent.
    #[allow(clippy::too_many_arguments)]
    fn prepare_update(
        &self,
        rt: &ResourceType,
        old: &Value,
        desired: Value,
        name: &str,
        part: Part,
        opts: &WriteOpts,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        // A status write takes only the status (and metadata) from the body: decode just those,
        // not a whole pod spec that is thrown away. (Pods and nodes, the busy ones, whose typed
        // spec is optional; some kinds' typed spec is required.)
        let status_only = part == Part::Status && rt.group.is_empty() && matches!(rt.kind.as_str(), "Pod" | "Node");
        let desired = match (status_only, desired) {
            (true, Value::Object(mut m)) => {
                m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
                Value::Object(m)
            }
            (_, d) => d,
        };
        // Managed fields sent back unchanged (a patch's result, a read-modify-write) were checked
        // when they were stored: keep them out of the typed decode, the costliest part of it.
        let mut desired = desired;
        let unchanged_mf = match (
            desired["metadata"].get("managedFields"),
            old["metadata"].get("managedFields"),
        ) {
            (Some(d), Some(o)) if d == o => desired["metadata"]
                .as_object_mut()
                .and_then(|m| m.remove("managedFields")),
            _ => None,
        };
        let mut new = self.decode_input(rt, desired, opts, warnings)?;
        if let Some(mf) = unchanged_mf {
            meta_mut(&mut new).insert("managedFields".into(), mf);
        }
        let body_name = str_of(&new, "/metadata/name");
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = str_of(&new, "/metadata/namespace");
        let old_ns = str_of(old, "/metadata/namespace");
        if rt.namespaced && !body_ns.is_empty() && body_ns != old_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        match part {
            Part::Status => {
                // Only status changes (and managed fields); everything else stays.
                let status = new.as_object_mut().and_then(|m| m.remove("status"));
                let mf = meta_mut(&mut new).remove("managedFields").unwrap_or(Value::Null);
                // Everything but the status (and managed fields) from the stored state, in its
                // order; the parts about to be replaced are not copied.
                let copy = |m: &Map<String, Value>, skip: &str| -> Value {
                    Value::Object(
                        m.iter()
                            .map(|(k, v)| (k.clone(), if k == skip { Value::Null } else { v.clone() }))
                            .collect(),
                    )
                };
                new = match old {
                    Value::Object(o) => Value::Object(
                        o.iter()
                            .map(|(k, v)| {
                                let v = match (k.as_str(), v) {
                                    ("status", _) => Value::Null,
                                    ("metadata", Value::Object(m)) if !mf.is_null() => copy(m, "managedFields"),
                                    _ => v.clone(),
                                };
                                (k.clone(), v)
                            })
                            .collect(),
                    ),
                    other => other.clone(),
                };
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if !mf.is_null() {
                    meta_mut(&mut new).insert("managedFields".into(), mf);
                }
            }
            Part::Both => {}
            Part::Main => {
                if rt.status {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
            }
        }
        let body_uid = str_of(&new, "/metadata/uid");
        if !body_uid.is_empty() && body_uid != str_of(old, "/metadata/uid") {
            let e = FieldError::invalid("metadata.uid", body_uid, "field is immutable");
            return Err(ApiError::invalid(rt, name, &[e]));
        }
        {
            let old_meta = &old["metadata"];
            let meta = meta_mut(&mut new);
            meta.insert("name".into(), json!(name));
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "generation",
            ] {
                match old_meta.get(k) {
                    Some(v) => meta.insert(k.into(), v.clone()),
                    None => meta.remove(k),
                };
            }
            meta.remove("resourceVersion");
            meta.remove("selfLink");
        }
        crate::fields::record_update(&mut new, Some(old), &opts.manager, &rt.api_version(), part);
        self.apply_defaults_and_validate(rt, &mut new, Some(old))?;
        if tracks_generation(rt) && spec_part(rt, &new) != spec_part(rt, old) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            meta_mut(&mut new).insert("generation".into(), json!(g));
        }
        Ok(new)
    }

    /// True when nothing holds a deleted object any more.
    fn deletion_complete(rt: &ResourceType, v: &Value) -> bool {
        if v["metadata"]["deletionTimestamp"].is_null() {
            return false;
        }
        let no_fin = v["metadata"]["finalizers"].as_array().is_none_or(|a| a.is_empty());
        let ns_fin = rt.group.is_empty()
            && rt.kind == "Namespace"
            && v["spec"]["finalizers"].as_array().is_some_and(|a| !a.is_empty());
        let graceful_pod = rt.group.is_empty()
            && rt.kind == "Pod"
            && v["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0) > 0;
        no_fin && !ns_fin && !graceful_pod
    }

    /// Read-modify-write with optimistic concurrency. `f` gets the current object as the
    /// client's version shows it (with `resourceVersion`) — or `None` when it does not exist and
    /// `create_missing` is set — and returns the desired object. A `resourceVersion` in the
    /// desired object is a precondition. Lost races are retried.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_with<F>(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        part: Part,
        opts: &WriteOpts,
        create_missing: bool,
        f: F,
    ) -> ApiResult<Outcome>
    where
        F: Fn(Option<Value>) -> ApiResult<Value>,
    {
        let key = rt.key(ns, name);
        for _ in 0..16 {
            let mut warnings = Vec::new();
            let Some(cur) = self.cache.get(&key) else {
                if create_missing {
                    let desired = f(None)?;
                    match self.create(rt, ns, desired, opts).await {
                        Err(e) if e.reason == "AlreadyExists" => continue,
                        other => return other,
                    }
                }
                return Err(ApiError::not_found(rt, name));
            };
            let cur_obj = cur.value();
            let desired = f(Some(self.present(rt, &cur_obj)))?;
            if let Some(rv) = desired["metadata"]["resourceVersion"].as_str() {
                if !rv.is_empty() && rv != cur.rev.to_string() {
                    return Err(ApiError::conflict(rt, name));
                }
            }
            let new = self.prepare_update(rt, &cur_obj, desired, name, part, opts, &mut warnings)?;
            if same_content(&new, &cur_obj) {
                return Ok(Outcome {
                    obj: self.present_owned(rt, cur_obj),
                    created: false,
                    warnings,
                    raw: None,
                });
            }
            if opts.dry_run {
                return Ok(Outcome {
                    obj: self.present(rt, &Self::with_rev(new, cur.rev)),
                    created: false,
                    warnings,
                    raw: None,
                });
            }
            let is_service = rt.group.is_empty() && rt.kind == "Service";
            let deleting = Self::deletion_complete(rt, &new);
            let mut new = new;
            let held = if is_service && !deleting {
                Some(crate::alloc::allocate(&*self.store, rt, &mut new, Some(&cur_obj)).await?)
            } else {
                None
            };
            let result = if deleting {
                self.store.delete(&key, Some(cur.rev)).await.map(|kv| kv.mod_revision)
            } else {
                self.store
                    .update(&key, Self::encode(&new)?, cur.rev)
                    .await
                    .map(|kv| kv.mod_revision)
            };
            match (&result, held) {
                (Err(_), Some(h)) => h.release(&*self.store).await,
                (Ok(_), _) if deleting && is_service => crate::alloc::release(&*self.store, &cur_obj).await,
                _ => {}
            }
            match result {
                Ok(rev) => {
                    self.settle(rev).await;
                    let stored = Self::with_rev(new, rev);
                    let raw = self.cached_bytes(rt, &key, &stored, rev);
                    return Ok(Outcome {
                        obj: self.present_owned(rt, stored),
                        created: false,
                        warnings,
                        raw,
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    // Someone wrote between our read and write: wait for the cache to see it.
                    if let Ok(Some(now)) = self.store.get(&key).await {
                        self.settle(now.mod_revision).await;
                    }
                    continue;
                }
                Err(StoreError::NotFound { .. }) => return Err(ApiError::not_found(rt, name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(rt, name))
    }

    /// A change the server makes itself (a pod's binding): `f` edits the top-level members
    /// named in `parts` in place (it sees the cached object for checks). Nothing is decoded,
    /// defaulted or validated and managed fields stay as they are: what `f` writes is valid by
    /// construction, as upstream's binding storage writes the pod directly. Only those members
    /// are parsed; the rest of the stored text (metadata, the largest part) is copied. Lost
    /// races are retried. Returns the revision written.
    pub async fn update_in_place<F>(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
        parts: &[&str],
        f: F,
    ) -> ApiResult<Revision>
    where
        F: Fn(&CachedObject, &mut Map<String, Value>) -> ApiResult<()>,
    {
        let key = rt.key(ns, name);
        for _ in 0..16 {
            let cur = self.cache.get(&key).ok_or_else(|| ApiError::not_found(rt, name))?;
            let bytes = match crate::cache::raw::edit_parts(&cur.bytes, cur.rev, parts, |m| f(&cur, m)) {
                Some(edited) => Bytes::from(edited?),
                None => {
                    // Text the cache did not write itself: the whole object, parsed.
                    let mut obj = cur.value();
                    let Some(top) = obj.as_object_mut() else {
                        return Err(ApiError::internal(format!("stored object {key} is not a JSON object")));
                    };
                    let mut m: Map<String, Value> = parts
                        .iter()
                        .filter_map(|p| top.remove(*p).map(|v| (p.to_string(), v)))
                        .collect();
                    f(&cur, &mut m)?;
                    top.extend(m);
                    Self::encode(&obj)?
                }
            };
            if dry_run {
                return Ok(cur.rev);
            }
            match self.store.update(&key, bytes, cur.rev).await {
                Ok(kv) => {
                    self.settle(kv.mod_revision).await;
                    return Ok(kv.mod_revision);
                }
                Err(StoreError::Conflict { .. }) => {
                    if let Ok(Some(now)) = self.store.get(&key).await {
                        self.settle(now.mod_revision).await;
                    }
                }
                Err(StoreError::NotFound { .. }) => return Err(ApiError::not_found(rt, name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(rt, name))
    }

    /// DELETE of one object: immediate, or graceful/finalized (the object stays, with a
    /// `deletionTimestamp`, until its finalizers are gone). Returns the object's last state and
    /// whether it is gone.
    pub async fn delete(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<(Value, bool)> {
        let key = rt.key(ns, name);
        for _ in 0..16 {
            let cur = self.cache.get(&key).ok_or_else(|| ApiError::not_found(rt, name))?;
            let cur_obj = cur.value();
            let obj = &cur_obj;
            if let Some(uid) = &opts.uid {
                let actual = str_of(obj, "/metadata/uid");
                if uid != actual {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!("Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}", rt.qualified_plural()),
                    ));
                }
            }
            if let Some(rv) = &opts.resource_version {
                if *rv != cur.rev.to_string() {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            rt.qualified_plural(),
                            cur.rev
                        ),
                    ));
                }
            }
            let mut next = obj.clone();
            let mut finalizers: Vec<Value> = next["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
            let mut add = |f: &str| {
                if !finalizers.iter().any(|x| x == f) {
                    finalizers.push(json!(f));
                }
            };
            match opts.propagation.as_deref() {
                Some("Orphan") => add("orphan"),
                Some("Foreground") => add("foregroundDeletion"),
                _ => {}
            }
            let is_ns = rt.group.is_empty() && rt.kind == "Namespace";
            let grace = if rt.group.is_empty() && rt.kind == "Pod" && !str_of(obj, "/spec/nodeName").is_empty() {
                let phase = str_of(obj, "/status/phase");
                if matches!(phase, "Succeeded" | "Failed") {
                    0
                } else {
                    opts.grace_period
                        .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                        .unwrap_or(30)
                        .max(0)
                }
            } else {
                0
            };
            let pending = !finalizers.is_empty() || is_ns || grace > 0;
            if !pending {
                if opts.dry_run {
                    return Ok((self.present(rt, obj), true));
                }
                match self.store.delete(&key, Some(cur.rev)).await {
                    Ok(kv) => {
                        if rt.group.is_empty() && rt.kind == "Service" {
                            crate::alloc::release(&*self.store, obj).await;
                        }
                        self.settle(kv.mod_revision).await;
                        return Ok((self.present(rt, &Self::with_rev(obj.clone(), kv.mod_revision)), true));
                    }
                    Err(StoreError::Conflict { .. }) => {
                        if let Ok(Some(now)) = self.store.get(&key).await {
                            self.settle(now.mod_revision).await;
                        }
                        continue;
                    }
                    Err(StoreError::NotFound { .. }) => return Err(ApiError::not_found(rt, name)),
                    Err(e) => return Err(e.into()),
                }
            }
            // Pending deletion: mark it and let finalizers (or the kubelet) finish.
            let already = !obj["metadata"]["deletionTimestamp"].is_null();
            {
                let current_grace = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
                let meta = meta_mut(&mut next);
                // The first delete sets the deadline; a later one may only shorten it (as a
                // forced delete does), which moves the deadline to now + the new grace.
                if !already || current_grace.is_some_and(|c| grace < c) {
                    let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
                    meta.insert(
                        "deletionTimestamp".into(),
                        json!(when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    );
                    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                if !already {
                    if let Some(g) = meta.get("generation").and_then(Value::as_i64).filter(|g| *g > 0) {
                        meta.insert("generation".into(), json!(g + 1));
                    }
                }
                if !finalizers.is_empty() {
                    meta.insert("finalizers".into(), json!(finalizers));
                }
            }
            // A pod whose grace is now over and that has nothing else holding it goes.
            if already && grace == 0 && finalizers.is_empty() && !is_ns {
                if opts.dry_run {
                    return Ok((self.present(rt, obj), true));
                }
                match self.store.delete(&key, Some(cur.rev)).await {
                    Ok(kv) => {
                        if rt.group.is_empty() && rt.kind == "Service" {
                            crate::alloc::release(&*self.store, obj).await;
                        }
                        self.settle(kv.mod_revision).await;
                        return Ok((self.present(rt, &Self::with_rev(obj.clone(), kv.mod_revision)), true));
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(StoreError::NotFound { .. }) => return Err(ApiError::not_found(rt, name)),
                    Err(e) => return Err(e.into()),
                }
            }
            if is_ns {
                next["status"]["phase"] = json!("Terminating");
            }
            if same_content(&next, obj) {
                return Ok((self.present(rt, obj), false));
            }
            if opts.dry_run {
                return Ok((self.present(rt, &next), false));
            }
            match self.store.update(&key, Self::encode(&next)?, cur.rev).await {
                Ok(kv) => {
                    self.settle(kv.mod_revision).await;
                    return Ok((self.present(rt, &Self::with_rev(next, kv.mod_revision)), false));
                }
                Err(StoreError::Conflict { .. }) => {
                    if let Ok(Some(now)) = self.store.get(&key).await {
                        self.settle(now.mod_revision).await;
                    }
                    continue;
                }
                Err(StoreError::NotFound { .. }) => return Err(ApiError::not_found(rt, name)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(rt, name))
    }

    /// Create an object unless it exists (for objects the server itself must have).
    pub async fn ensure(&self, rt: &ResourceType, ns: Option<&str>, obj: Value) -> ApiResult<()> {
        let name = str_of(&obj, "/metadata/name").to_string();
        if self.cache.get(&rt.key(ns, &name)).is_some() {
            return Ok(());
        }
        let opts = WriteOpts {
            manager: "skiff".into(),
            ..Default::default()
        };
        match self.create(rt, ns, obj, &opts).await {
            Ok(_) => Ok(()),
            Err(e) if e.reason == "AlreadyExists" => Ok(()),
            Err(e) => Err(e),
        }
    }
}
