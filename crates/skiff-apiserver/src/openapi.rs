//! OpenAPI documents. `/openapi/v3` lists one document per group-version; each declares the
//! operations kubectl inspects (PATCH with the `fieldValidation` parameter, so kubectl leaves
//! validation to the server). `/openapi/v2` is served as protobuf, the only encoding kubectl
//! 1.27/1.28 accept there.
//!
//! The v3 documents carry the full schemas of their kinds (for `kubectl explain`) but do not
//! advertise strategic merge patch: the schemas lack the patch-merge-key extensions, and
//! kubectl would then compute patches from them instead of from its compiled-in types.

use serde_json::{json, Map, Value};

use skiff_api::ResourceType;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn group_versions(types: &[std::sync::Arc<ResourceType>]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in types {
        let gv = (t.group.clone(), t.version.clone());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

/// A short, stable hash of a document (for the `?hash=` URLs kubectl caches by).
fn hash(doc: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    doc.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

pub fn v3_index(types: &[std::sync::Arc<ResourceType>]) -> Value {
    let mut paths = Map::new();
    for (g, v) in group_versions(types) {
        let p = gv_path(&g, &v);
        let doc = v3_document(types, &g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(&doc))}),
        );
    }
    json!({"paths": paths})
}

pub fn v3_for_path(types: &[std::sync::Arc<ResourceType>], path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.split('/').collect();
    let (g, v) = match segs.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    types
        .iter()
        .any(|t| t.group == g && t.version == v)
        .then(|| v3_document(types, g, v))
}

fn v3_document(types: &[std::sync::Arc<ResourceType>], group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}
    ]);
    let body = json!({"content": {
        "application/apply-patch+yaml": {"schema": {"type": "object"}},
        "application/json-patch+json": {"schema": {"type": "object"}},
        "application/merge-patch+json": {"schema": {"type": "object"}}
    }});
    for t in types.iter().filter(|t| t.group == group && t.version == version) {
        let base = format!("/{}", gv_path(group, version));
        let item = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{base}/{}/{{name}}", t.plural)
        };
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        paths.insert(
            item,
            json!({
                "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk},
                "put": {"x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk, "parameters": params},
                "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk, "parameters": params, "requestBody": body},
                "delete": {"x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk}
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::version::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": skiff_api::openapi::schemas_for(&types.iter().filter(|t| t.group == group && t.version == version).map(|t| t.as_ref()).collect::<Vec<_>>())}
    })
}

/// The Swagger 2.0 document as gnostic protobuf: the schemas of every served kind.
pub fn v2_protobuf(types: &[std::sync::Arc<ResourceType>]) -> Vec<u8> {
    let all: Vec<&ResourceType> = types.iter().map(|t| t.as_ref()).collect();
    let mut defs = skiff_api::openapi::schemas_for(&all);
    // v2 has no `nullable`; kubectl ignores it anyway.
    for s in defs.values_mut() {
        strip_key(s, "nullable");
    }
    skiff_api::openapi::v2::document("Kubernetes", crate::version::GIT_VERSION, &defs)
}

fn strip_key(v: &mut Value, k: &str) {
    match v {
        Value::Object(m) => {
            m.remove(k);
            m.values_mut().for_each(|x| strip_key(x, k));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| strip_key(x, k)),
        _ => {}
    }
}

pub const V2_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
