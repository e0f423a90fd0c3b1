//! CustomResourceDefinitions: validating a CRD, and for its custom resources the structural
//! schema's defaulting, pruning of unknown fields and validation.

use serde_json::{Map, Value};

use crate::field::{FieldError, Path};

/// Rules for the CRD object itself.
pub fn validate_crd(crd: &Value, errs: &mut Vec<FieldError>) {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else if !group.contains('.') {
        errs.push(FieldError::invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    }
    if spec["names"]["kind"].as_str().unwrap_or("").is_empty() {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        Some(other) => errs.push(FieldError::not_supported(
            "spec.scope",
            other,
            &["Cluster", "Namespaced"],
        )),
        None => errs.push(FieldError::required("spec.scope", "")),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::invalid(
            "spec.versions",
            Value::Array(vec![]),
            "must have exactly one version marked as storage version",
        ));
    }
    let storage = versions.iter().filter(|v| v["storage"] == Value::Bool(true)).count();
    if !versions.is_empty() && storage != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            Value::Null,
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        let p = Path::new("spec").child("versions").index(i);
        if v["name"].as_str().unwrap_or("").is_empty() {
            errs.push(FieldError::required(p.child("name").as_str(), ""));
        }
        if v["schema"]["openAPIV3Schema"].is_null() {
            errs.push(FieldError::required(
                p.child("schema").child("openAPIV3Schema").as_str(),
                "schemas are required",
            ));
        } else if v["schema"]["openAPIV3Schema"]["type"].as_str() != Some("object") {
            errs.push(FieldError::invalid(
                p.child("schema").child("openAPIV3Schema").child("type").as_str(),
                v["schema"]["openAPIV3Schema"]["type"].clone(),
                "must be object at the root",
            ));
        }
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == Value::Bool(true)
}

/// Apply `default`s of the schema to missing fields, recursively (structural defaulting).
pub fn apply_defaults(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, sub) in props {
                    if !map.contains_key(k) {
                        if let Some(d) = sub.get("default") {
                            map.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(child) = map.get_mut(k) {
                        apply_defaults(sub, child);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in map.values_mut() {
                    apply_defaults(ap, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for it in items {
                    apply_defaults(item_schema, it);
                }
            }
        }
        _ => {}
    }
}

/// Remove fields the schema does not know, returning their paths. `metadata`, `apiVersion` and
/// `kind` at the root are the server's business and not touched here.
pub fn prune(schema: &Value, v: &mut Value, root: bool) -> Vec<String> {
    let mut out = Vec::new();
    prune_at(schema, v, "", root, &mut out);
    out
}

fn prune_at(schema: &Value, v: &mut Value, path: &str, root: bool, out: &mut Vec<String>) {
    if schema["x-kubernetes-embedded-resource"] == Value::Bool(true) && !root {
        // Embedded objects keep their type meta and metadata.
    }
    match v {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let additional = schema
                .get("additionalProperties")
                .filter(|a| a.is_object() || a.as_bool() == Some(true));
            let keep_unknown = preserves_unknown(schema);
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(sub) = props.and_then(|ps| ps.get(&k)) {
                    if let Some(child) = map.get_mut(&k) {
                        prune_at(sub, child, &p, false, out);
                    }
                } else if let Some(ap) = additional {
                    if ap.is_object() {
                        if let Some(child) = map.get_mut(&k) {
                            prune_at(ap, child, &p, false, out);
                        }
                    }
                } else if !keep_unknown {
                    map.remove(&k);
                    out.push(p);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    prune_at(item_schema, it, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validate a custom resource (after defaulting and pruning) against its schema.
pub fn validate(schema: &Value, v: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut body = v.clone();
    if let Some(m) = body.as_object_mut() {
        for k in ["apiVersion", "kind", "metadata"] {
            m.remove(k);
        }
    }
    // The root schema may describe metadata; we validated that elsewhere.
    let mut root_schema = schema.clone();
    if let Some(props) = root_schema.get_mut("properties").and_then(Value::as_object_mut) {
        for k in ["apiVersion", "kind", "metadata"] {
            props.remove(k);
        }
    }
    if let Some(req) = root_schema.get_mut("required").and_then(Value::as_array_mut) {
        req.retain(|r| !matches!(r.as_str(), Some("apiVersion" | "kind" | "metadata")));
    }
    validate_at(&root_schema, &body, &Path::new(""), &mut errs);
    errs
}

fn validate_at(schema: &Value, v: &Value, path: &Path, errs: &mut Vec<FieldError>) {
    let field = if path.as_str().is_empty() {
        "<root>".to_string()
    } else {
        path.as_str().to_string()
    };
    if v.is_null() {
        if schema["nullable"] != Value::Bool(true) && !schema["type"].is_null() {
            errs.push(FieldError::invalid(
                field,
                Value::Null,
                format!(
                    "{} in body must be of type {}",
                    path,
                    schema["type"].as_str().unwrap_or("")
                ),
            ));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        if !matches!(type_name(v), "integer" | "string") {
            errs.push(FieldError::type_invalid(
                field,
                v.clone(),
                "must be an integer or a string",
            ));
        }
        return;
    }
    if let Some(want) = schema["type"].as_str() {
        let got = type_name(v);
        let ok = got == want || (want == "number" && got == "integer");
        if !ok {
            errs.push(FieldError::type_invalid(
                field,
                got,
                format!("{} in body must be of type {want}: \"{got}\"", path),
            ));
            return;
        }
    }
    if let Some(en) = schema["enum"].as_array() {
        if !en.contains(v) {
            let valid: Vec<String> = en
                .iter()
                .map(|e| e.as_str().map(str::to_string).unwrap_or_else(|| e.to_string()))
                .collect();
            let refs: Vec<&str> = valid.iter().map(String::as_str).collect();
            errs.push(FieldError::not_supported(field.clone(), v.clone(), &refs));
        }
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema["minimum"].as_f64() {
                let excl = schema["exclusiveMinimum"] == Value::Bool(true);
                if x < min || (excl && x == min) {
                    errs.push(FieldError::invalid(
                        field.clone(),
                        v.clone(),
                        format!("{path} in body should be greater than or equal to {min}"),
                    ));
                }
            }
            if let Some(max) = schema["maximum"].as_f64() {
                let excl = schema["exclusiveMaximum"] == Value::Bool(true);
                if x > max || (excl && x == max) {
                    errs.push(FieldError::invalid(
                        field.clone(),
                        v.clone(),
                        format!("{path} in body should be less than or equal to {max}"),
                    ));
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema["minLength"].as_u64() {
                if len < min {
                    errs.push(FieldError::invalid(
                        field.clone(),
                        s.as_str(),
                        format!("{path} in body should be at least {min} chars long"),
                    ));
                }
            }
            if let Some(max) = schema["maxLength"].as_u64() {
                if len > max {
                    errs.push(FieldError::too_long(field.clone(), s.as_str(), max as usize));
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64() {
                if (items.len() as u64) < min {
                    errs.push(FieldError::invalid(
                        field.clone(),
                        Value::Null,
                        format!("{path} in body should have at least {min} items"),
                    ));
                }
            }
            if let Some(max) = schema["maxItems"].as_u64() {
                if (items.len() as u64) > max {
                    errs.push(FieldError {
                        field: field.clone(),
                        kind: crate::field::ErrorType::Invalid(Value::Null),
                        detail: format!("must have at most {max} items"),
                    });
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, it) in items.iter().enumerate() {
                    validate_at(item_schema, it, &path.index(i), errs);
                }
            }
        }
        Value::Object(map) => {
            if let Some(req) = schema["required"].as_array() {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        errs.push(FieldError::required(path.child(r).as_str(), ""));
                    }
                }
            }
            let props: Option<&Map<String, Value>> = schema["properties"].as_object();
            for (k, child) in map {
                if let Some(sub) = props.and_then(|p| p.get(k)) {
                    validate_at(sub, child, &path.child(k), errs);
                } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    validate_at(ap, child, &path.child(k), errs);
                }
            }
            if let Some(max) = schema["maxProperties"].as_u64() {
                if map.len() as u64 > max {
                    errs.push(FieldError::invalid(
                        field,
                        Value::Null,
                        format!("must have at most {max} properties"),
                    ));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "port": {"x-kubernetes-int-or-string": true}}},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}})
    }

    #[test]
    fn prunes_unknown_fields_but_keeps_preserved_and_maps() {
        let mut v = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"},
            "spec": {"size": 2, "bogus": 1, "labels": {"a": "b"}, "free": {"anything": {"goes": 1}}}, "extra": true});
        let pruned = prune(&schema(), &mut v, true);
        assert_eq!(pruned, vec!["spec.bogus".to_string(), "extra".to_string()]);
        assert_eq!(v["spec"]["free"]["anything"]["goes"], 1);
        assert_eq!(v["metadata"]["name"], "a");
    }

    #[test]
    fn defaults_then_validates() {
        let mut v = json!({"spec": {"size": 20, "port": "http"}});
        apply_defaults(&schema(), &mut v);
        assert_eq!(v["spec"]["color"], "red");
        let errs = validate(&schema(), &v);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.size");
        let errs = validate(&schema(), &json!({"spec": {"color": "green", "port": 1.5}}));
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.size", "spec.color", "spec.port"]);
        let errs = validate(&schema(), &json!({"spec": {"size": "big"}}));
        assert_eq!(errs[0].reason(), "FieldValueTypeInvalid");
    }

    #[test]
    fn crd_rules() {
        let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
        let mut errs = Vec::new();
        validate_crd(&crd, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("wrong");
        bad["spec"]["versions"][0]["storage"] = json!(false);
        validate_crd(&bad, &mut errs);
        assert_eq!(
            errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["metadata.name", "spec.versions"]
        );
    }
}
