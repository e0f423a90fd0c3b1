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
    }
}
