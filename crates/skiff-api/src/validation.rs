//! Validation as Kubernetes does it: object metadata (names, labels, annotations, finalizers) for
//! every kind, and the rules users hit most per kind — required fields, value ranges, selectors
//! that must match templates, and fields that are immutable on update.

use serde_json::Value;

use crate::field::{FieldError, Path};
use crate::registry::ResourceType;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= DNS1123_LABEL_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0] != b'-'
        && s.as_bytes()[s.len() - 1] != b'-'
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= DNS1123_SUBDOMAIN_MAX
        && !s.is_empty()
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !p.starts_with('-')
                && !p.ends_with('-')
        })
}

/// DNS-1035: a label that starts with a letter (Service names).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// Which name rule a kind's `metadata.name` follows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    /// RBAC and a few others only forbid path segments.
    PathSegment,
}

pub fn name_rule(t: &ResourceType) -> NameRule {
    match (t.group.as_str(), t.kind.as_str()) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

fn check_name(rule: NameRule, name: &str, field: &str, errs: &mut Vec<FieldError>) {
    match rule {
        NameRule::Subdomain if !is_dns1123_subdomain(name) => {
            if name.len() > DNS1123_SUBDOMAIN_MAX {
                errs.push(FieldError::invalid(field, name, "must be no more than 253 characters"));
            } else {
                errs.push(FieldError::invalid(field, name, SUBDOMAIN_MSG));
            }
        }
        NameRule::Label if !is_dns1123_label(name) => {
            let msg = if name.len() > DNS1123_LABEL_MAX {
                "must be no more than 63 characters"
            } else {
                LABEL_MSG
            };
            errs.push(FieldError::invalid(field, name, msg));
        }
        NameRule::Dns1035 if !is_dns1035_label(name) => {
            let msg = if name.len() > DNS1123_LABEL_MAX {
                "must be no more than 63 characters"
            } else {
                DNS1035_MSG
            };
            errs.push(FieldError::invalid(field, name, msg));
        }
        NameRule::PathSegment if name == "." || name == ".." || name.contains('/') || name.contains('%') => {
            errs.push(FieldError::invalid(
                field,
                name,
                "may not be '.' or '..' and may not contain '/' or '%'",
            ));
        }
        _ => {}
    }
}

/// `prefix/name` label key, for selector parsing.
pub fn validate_qualified_key(key: &str, errs: &mut Vec<FieldError>) {
    check_qualified_name(key, "key", errs)
}

/// `prefix/name` label and annotation keys.
fn check_qualified_name(key: &str, field: &str, errs: &mut Vec<FieldError>) {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_dns1123_subdomain(p) {
            errs.push(FieldError::invalid(field, key, format!("prefix part {SUBDOMAIN_MSG}")));
            return;
        }
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if !ok {
        errs.push(FieldError::invalid(
            field,
            key,
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ));
    }
}

pub fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

fn check_labels(labels: &Value, path: &Path, errs: &mut Vec<FieldError>) {
    let Some(map) = labels.as_object() else {
        return;
    };
    for (k, v) in map {
        check_qualified_name(k, path.as_str(), errs);
        match v.as_str() {
            Some(s) if !is_label_value(s) => errs.push(FieldError::invalid(
                path.key(k).as_str(),
                s,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            )),
            Some(_) => {}
            None => errs.push(FieldError::type_invalid(path.key(k).as_str(), v.clone(), "must be a string")),
        }
    }
}

/// Metadata rules common to all kinds. `namespace` is the request's namespace.
pub fn validate_metadata(t: &ResourceType, obj: &Value, errs: &mut Vec<FieldError>) {
    let meta = &obj["metadata"];
    let path = Path::new("metadata");
    match meta["name"].as_str() {
        Some(n) if !n.is_empty() => check_name(name_rule(t), n, "metadata.name", errs),
        _ => errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
    }
    if t.namespaced {
        if meta["namespace"].as_str().unwrap_or("").is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        }
    } else if meta["namespace"].as_str().is_some_and(|s| !s.is_empty()) {
        errs.push(FieldError::forbidden("metadata.namespace", "not allowed on this type"));
    }
    check_labels(&meta["labels"], &path.child("labels"), errs);
    if let Some(ann) = meta["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in ann {
            check_qualified_name(&k.to_lowercase(), "metadata.annotations", errs);
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errs.push(FieldError::too_long("metadata.annotations", "", 256 * 1024));
        }
    }
    if let Some(fins) = meta["finalizers"].as_array() {
        for (i, f) in fins.iter().enumerate() {
            let s = f.as_str().unwrap_or("");
            if !s.contains('/') && !matches!(s, "kubernetes" | "orphan" | "foregroundDeletion") {
                errs.push(FieldError::invalid(
                    path.child("finalizers").index(i).as_str(),
                    s,
                    "name is neither a standard finalizer name nor is it fully qualified",
                ));
            }
        }
    }
    if let Some(refs) = meta["ownerReferences"].as_array() {
        let controllers = refs.iter().filter(|r| r["controller"] == Value::Bool(true)).count();
        if controllers > 1 {
            errs.push(FieldError::invalid(
                "metadata.ownerReferences",
                Value::Null,
                "Only one reference can have Controller set to true",
            ));
        }
        for (i, r) in refs.iter().enumerate() {
            let p = path.child("ownerReferences").index(i);
            for f in ["apiVersion", "kind", "name", "uid"] {
                if r[f].as_str().unwrap_or("").is_empty() {
                    errs.push(FieldError::invalid(
                        p.child(f).as_str(),
                        "",
                        format!("{f} must not be empty"),
                    ));
                }
            }
        }
    }
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn check_port(v: &Value, field: &Path, errs: &mut Vec<FieldError>) {
    if let Some(n) = v.as_i64() {
        if !(1..=65535).contains(&n) {
            errs.push(FieldError::invalid(
                field.as_str(),
                n,
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
}

fn check_int_or_port_name(v: &Value, field: &Path, errs: &mut Vec<FieldError>) {
    match v {
        Value::Number(_) => check_port(v, field, errs),
        Value::String(name) if !name.is_empty() => {
            let ok = name.len() <= 15
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && name.bytes().any(|b| b.is_ascii_lowercase())
                && !name.starts_with('-')
                && !name.ends_with('-')
                && !name.contains("--");
            if !ok {
                errs.push(FieldError::invalid(
                    field.as_str(),
                    name.as_str(),
                    "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                ));
            }
        }
        _ => {}
    }
}

fn validate_pod_spec(spec: &Value, path: &Path, errs: &mut Vec<FieldError>) {
    validate_pod_spec_with(spec, path, &[], errs)
}

/// `claims` are extra volume names (a StatefulSet's volumeClaimTemplates).
fn validate_pod_spec_with(spec: &Value, path: &Path, claims: &[&str], errs: &mut Vec<FieldError>) {
    let containers = spec["containers"].as_array();
    if containers.is_none_or(|c| c.is_empty()) {
        errs.push(FieldError::required(path.child("containers").as_str(), ""));
    }
    let mut names = std::collections::HashSet::new();
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .map(|v| v.iter().map(|v| s(v, "name")).collect())
        .unwrap_or_default();
    for (i, v) in volumes.iter().enumerate() {
        let p = path.child("volumes").index(i).child("name");
        if v.is_empty() {
            errs.push(FieldError::required(p.as_str(), ""));
        } else if !is_dns1123_label(v) {
            errs.push(FieldError::invalid(p.as_str(), *v, LABEL_MSG));
        }
    }
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        for (j, src) in v["projected"]["sources"].as_array().into_iter().flatten().enumerate() {
            let t = &src["serviceAccountToken"];
            if !t.is_object() {
                continue;
            }
            let p = path
                .child("volumes")
                .index(i)
                .child("projected")
                .child("sources")
                .index(j)
                .child("serviceAccountToken");
            if let Some(secs) = t["expirationSeconds"].as_i64() {
                if secs < 10 * 60 {
                    errs.push(FieldError::invalid(
                        p.child("expirationSeconds").as_str(),
                        secs,
                        "may not specify a duration less than 10 minutes",
                    ));
                } else if secs > 1 << 32 {
                    errs.push(FieldError::invalid(
                        p.child("expirationSeconds").as_str(),
                        secs,
                        "may not specify a duration larger than 2^32 seconds",
                    ));
                }
            }
            if s(t, "path").is_empty() {
                errs.push(FieldError::required(p.child("path").as_str(), ""));
            }
        }
    }
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec[list].as_array() else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            let p = path.child(list).index(i);
            let name = s(c, "name");
            if name.is_empty() {
                errs.push(FieldError::required(p.child("name").as_str(), ""));
            } else if !is_dns1123_label(name) {
                errs.push(FieldError::invalid(p.child("name").as_str(), name, LABEL_MSG));
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(p.child("name").as_str(), name));
            }
            if s(c, "image").trim().is_empty() {
                errs.push(FieldError::required(p.child("image").as_str(), ""));
            }
            if let Some(ports) = c["ports"].as_array() {
                for (j, port) in ports.iter().enumerate() {
                    let pp = p.child("ports").index(j);
                    match port.get("containerPort") {
                        Some(v) if !v.is_null() => check_port(v, &pp.child("containerPort"), errs),
                        _ => errs.push(FieldError::required(pp.child("containerPort").as_str(), "")),
                    }
                    if let Some(hp) = port.get("hostPort").filter(|v| v.as_i64() != Some(0)) {
                        check_port(hp, &pp.child("hostPort"), errs);
                    }
                    if let Some(proto) = port["protocol"].as_str() {
                        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
                            errs.push(FieldError::not_supported(
                                pp.child("protocol").as_str(),
                                proto,
                                &["SCTP", "TCP", "UDP"],
                            ));
                        }
                    }
                }
            }
            if let Some(mounts) = c["volumeMounts"].as_array() {
                for (j, m) in mounts.iter().enumerate() {
                    let mp = p.child("volumeMounts").index(j);
                    let vname = s(m, "name");
                    if vname.is_empty() {
                        errs.push(FieldError::required(mp.child("name").as_str(), ""));
                    } else if !volumes.contains(&vname) && !claims.contains(&vname) {
                        errs.push(FieldError::not_found(mp.child("name").as_str(), vname));
                    }
                    if s(m, "mountPath").is_empty() {
                        errs.push(FieldError::required(mp.child("mountPath").as_str(), ""));
                    }
                }
            }
            if let Some(env) = c["env"].as_array() {
                for (j, e) in env.iter().enumerate() {
                    if s(e, "name").is_empty() {
                        errs.push(FieldError::required(p.child("env").index(j).child("name").as_str(), ""));
                    }
                }
            }
        }
    }
    if let Some(rp) = spec["restartPolicy"].as_str() {
        if !matches!(rp, "Always" | "OnFailure" | "Never") {
            errs.push(FieldError::not_supported(
                path.child("restartPolicy").as_str(),
                rp,
                &["Always", "OnFailure", "Never"],
            ));
        }
    }
}

/// A workload's `selector` must be present, non-empty and select the template's labels.
fn validate_selector_matches_template(spec: &Value, path: &Path, errs: &mut Vec<FieldError>) {
    let sel = &spec["selector"];
    let empty = sel.is_null()
        || (sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
            && sel["matchExpressions"].as_array().is_none_or(|m| m.is_empty()));
    if empty {
        errs.push(FieldError::required(path.child("selector").as_str(), ""));
        return;
    }
    match crate::selector::LabelSelector::from_json(sel) {
        Ok(selector) => {
            let labels = &spec["template"]["metadata"]["labels"];
            if !selector.matches(labels) {
                errs.push(FieldError::invalid(
                    path.child("template").child("metadata").child("labels").as_str(),
                    labels
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default(),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        Err(e) => errs.push(FieldError::invalid(path.child("selector").as_str(), sel.clone(), e)),
    }
}

fn non_negative(v: &Value, field: &Path, errs: &mut Vec<FieldError>) {
    if let Some(n) = v.as_i64() {
        if n < 0 {
            errs.push(FieldError::invalid(
                field.as_str(),
                n,
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// Kind-specific rules for a new or updated object (after defaulting).
pub fn validate(t: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_metadata(t, obj, &mut errs);
    let spec = &obj["spec"];
    let sp = Path::new("spec");
    match (t.group.as_str(), t.kind.as_str()) {
        ("", "Pod") => validate_pod_spec(spec, &sp, &mut errs),
        ("", "PodTemplate") => validate_pod_spec(
            &obj["template"]["spec"],
            &Path::new("template").child("spec"),
            &mut errs,
        ),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") | ("", "ReplicationController") => {
            if t.kind != "ReplicationController" {
                validate_selector_matches_template(spec, &sp, &mut errs);
            }
            non_negative(&spec["replicas"], &sp.child("replicas"), &mut errs);
            non_negative(&spec["minReadySeconds"], &sp.child("minReadySeconds"), &mut errs);
            let claims: Vec<&str> = spec["volumeClaimTemplates"]
                .as_array()
                .map(|a| a.iter().filter_map(|c| c["metadata"]["name"].as_str()).collect())
                .unwrap_or_default();
            validate_pod_spec_with(
                &spec["template"]["spec"],
                &sp.child("template").child("spec"),
                &claims,
                &mut errs,
            );
            if t.kind == "StatefulSet" {
                if let Some(p) = spec["podManagementPolicy"].as_str() {
                    if !matches!(p, "OrderedReady" | "Parallel") {
                        errs.push(FieldError::not_supported(
                            "spec.podManagementPolicy",
                            p,
                            &["OrderedReady", "Parallel"],
                        ));
                    }
                }
            }
            if t.kind == "Deployment" {
                if let Some(st) = spec["strategy"]["type"].as_str() {
                    if !matches!(st, "RollingUpdate" | "Recreate") {
                        errs.push(FieldError::not_supported(
                            "spec.strategy.type",
                            st,
                            &["Recreate", "RollingUpdate"],
                        ));
                    }
                }
            }
        }
        ("batch", "Job") => {
            validate_pod_spec(
                &spec["template"]["spec"],
                &sp.child("template").child("spec"),
                &mut errs,
            );
            let rp = spec["template"]["spec"]["restartPolicy"].as_str();
            if !matches!(rp, Some("OnFailure") | Some("Never")) {
                errs.push(FieldError::not_supported(
                    "spec.template.spec.restartPolicy",
                    rp.unwrap_or(""),
                    &["OnFailure", "Never"],
                ));
            }
            for f in ["parallelism", "completions", "backoffLimit"] {
                non_negative(&spec[f], &sp.child(f), &mut errs);
            }
        }
        ("batch", "CronJob") => {
            if s(spec, "schedule").is_empty() {
                errs.push(FieldError::required("spec.schedule", ""));
            }
            let jt = Path::new("spec")
                .child("jobTemplate")
                .child("spec")
                .child("template")
                .child("spec");
            validate_pod_spec(&spec["jobTemplate"]["spec"]["template"]["spec"], &jt, &mut errs);
        }
        ("", "Service") => {
            let ty = spec["type"].as_str().unwrap_or("ClusterIP");
            if !matches!(ty, "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
                errs.push(FieldError::not_supported(
                    "spec.type",
                    ty,
                    &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
                ));
            }
            let ports = spec["ports"].as_array();
            if ty != "ExternalName" && ports.is_none_or(|p| p.is_empty()) && s(spec, "clusterIP") != "None" {
                errs.push(FieldError::required("spec.ports", ""));
            }
            if ty == "ExternalName" && s(spec, "externalName").is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            }
            let multi = ports.is_some_and(|p| p.len() > 1);
            let mut seen = std::collections::HashSet::new();
            for (i, p) in ports.into_iter().flatten().enumerate() {
                let pp = sp.child("ports").index(i);
                match p.get("port") {
                    Some(v) if !v.is_null() => check_port(v, &pp.child("port"), &mut errs),
                    _ => errs.push(FieldError::required(pp.child("port").as_str(), "")),
                }
                check_int_or_port_name(&p["targetPort"], &pp.child("targetPort"), &mut errs);
                let name = s(p, "name");
                if multi && name.is_empty() {
                    errs.push(FieldError::required(pp.child("name").as_str(), ""));
                } else if !name.is_empty() && !seen.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(pp.child("name").as_str(), name));
                }
                if let Some(np) = p.get("nodePort").filter(|v| v.as_i64().is_some_and(|n| n != 0)) {
                    check_port(np, &pp.child("nodePort"), &mut errs);
                }
            }
        }
        ("", "ConfigMap" | "Secret") => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(m) = obj[field].as_object() {
                    for k in m.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                            && k != "."
                            && k != "..";
                        if !ok {
                            errs.push(FieldError::invalid(
                                Path::new(field).key(k).as_str(),
                                k.as_str(),
                                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                            ));
                        }
                    }
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            if spec["accessModes"].as_array().is_none_or(|a| a.is_empty()) {
                errs.push(FieldError::required(
                    "spec.accessModes",
                    "at least 1 access mode is required",
                ));
            }
            if spec["resources"]["requests"]["storage"].is_null() && spec["dataSourceRef"].is_null() {
                errs.push(FieldError::required("spec.resources[storage]", ""));
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crate::crd::validate_crd(obj, &mut errs),
        _ => {}
    }
    if t.kind == "StatefulSet" {
        if let Some(tpls) = spec["volumeClaimTemplates"].as_array() {
            for (i, c) in tpls.iter().enumerate() {
                let p = sp.child("volumeClaimTemplates").index(i);
                if s(&c["metadata"], "name").is_empty() {
                    errs.push(FieldError::required(p.child("metadata").child("name").as_str(), ""));
                }
                if c["spec"]["accessModes"].as_array().is_none_or(|a| a.is_empty()) {
                    errs.push(FieldError::required(
                        p.child("spec").child("accessModes").as_str(),
                        "at least 1 access mode is required",
                    ));
                }
            }
        }
    }
    errs
}

/// Fields that may not change after creation, per kind (checked on update, after defaulting).
pub fn validate_update(t: &ResourceType, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let immutable = |ptr: &str, field: &str, msg: &str, errs: &mut Vec<FieldError>| {
        let (a, b) = (new.pointer(ptr), old.pointer(ptr));
        if a != b {
            errs.push(FieldError::invalid(field, a.cloned().unwrap_or(Value::Null), msg));
        }
    };
    match (t.group.as_str(), t.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") => {
            immutable("/spec/selector", "spec.selector", "field is immutable", &mut errs)
        }
        ("apps", "StatefulSet") => {
            let mut a = new["spec"].clone();
            let mut b = old["spec"].clone();
            for f in [
                "replicas",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
                "ordinals",
                "revisionHistoryLimit",
            ] {
                if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object_mut()) {
                    a.remove(f);
                    b.remove(f);
                }
            }
            if a != b {
                errs.push(FieldError::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        ("batch", "Job") => {
            immutable("/spec/selector", "spec.selector", "field is immutable", &mut errs);
            immutable("/spec/completions", "spec.completions", "field is immutable", &mut errs);
        }
        ("", "Service") => {
            let old_ip = old["spec"]["clusterIP"].as_str().unwrap_or("");
            let new_ip = new["spec"]["clusterIP"].as_str().unwrap_or("");
            if !old_ip.is_empty() && new_ip != old_ip {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    new_ip,
                    "may not change once set",
                ));
            }
        }
        ("", "ConfigMap" | "Secret") => {
            if old["immutable"] == Value::Bool(true) {
                for f in ["data", "binaryData"] {
                    if new[f] != old[f] {
                        errs.push(FieldError::forbidden(f, "field is immutable when `immutable` is set"));
                    }
                }
                if new["immutable"] != old["immutable"] {
                    errs.push(FieldError::forbidden(
                        "immutable",
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
            if t.kind == "Secret" && new["type"] != old["type"] {
                errs.push(FieldError::invalid("type", new["type"].clone(), "field is immutable"));
            }
        }
        ("", "PersistentVolumeClaim") => {
            // A claim without a class may be given one once (RetroactiveDefaultStorageClass).
            let class_unset = old["spec"]["storageClassName"].is_null();
            let strip = |v: &Value| {
                let mut s = v["spec"].clone();
                if let Some(m) = s.as_object_mut() {
                    m.remove("resources");
                    m.remove("volumeName");
                    m.remove("volumeAttributesClassName");
                    if class_unset {
                        m.remove("storageClassName");
                    }
                }
                s
            };
            if strip(new) != strip(old) {
                errs.push(FieldError::forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
            }
        }
        _ => {}
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ty(kind: &str) -> std::sync::Arc<ResourceType> {
        crate::registry::builtin_types()
            .into_iter()
            .find(|t| t.kind == kind && t.preferred)
            .expect("kind")
    }

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("web-0.nginx"));
        assert!(!is_dns1123_subdomain("Bad_Name"));
        assert!(is_dns1123_label("abc-1"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1035_label("1abc"));
    }

    #[test]
    fn bad_pod_reports_each_field() {
        let pod = json!({"metadata": {"name": "Bad_Name", "namespace": "default", "labels": {"app": "-x"}},
            "spec": {"containers": [{"name": "c"}, {"name": "c", "image": "i", "ports": [{"containerPort": 70000}]}]}});
        let errs = validate(&ty("Pod"), &pod);
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "metadata.labels[app]",
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.containers[1].ports[0].containerPort"
            ]
        );
        assert_eq!(errs[2].reason(), "FieldValueRequired");
    }

    #[test]
    fn service_account_token_projections() {
        let pod = json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "t", "projected": {"sources": [
                {"configMap": {"name": "x"}},
                {"serviceAccountToken": {"expirationSeconds": 599, "path": "token"}},
                {"serviceAccountToken": {"expirationSeconds": 600}}]}}]}});
        let errs = validate(&ty("Pod"), &pod);
        let got: Vec<(String, String)> = errs.iter().map(|e| (e.field.clone(), e.body())).collect();
        assert_eq!(
            got,
            [
                (
                    "spec.volumes[0].projected.sources[1].serviceAccountToken.expirationSeconds".to_string(),
                    "Invalid value: 599: may not specify a duration less than 10 minutes".to_string()
                ),
                (
                    "spec.volumes[0].projected.sources[2].serviceAccountToken.path".to_string(),
                    "Required value".to_string()
                ),
            ]
        );
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let d = json!({"metadata": {"name": "d", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                     "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let errs = validate(&ty("Deployment"), &d);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        let mut d2 = d.clone();
        d2["spec"]["selector"]["matchLabels"]["app"] = json!("b");
        assert!(validate_update(&ty("Deployment"), &d2, &d)
            .iter()
            .any(|e| e.field == "spec.selector"));
    }

    #[test]
    fn service_ports_and_names() {
        let svc = json!({"metadata": {"name": "1svc", "namespace": "default"},
            "spec": {"ports": [{"port": 0}, {"port": 80, "name": "http", "targetPort": "Not_A_Name"}]}});
        let fields: Vec<_> = validate(&ty("Service"), &svc).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "metadata.name",
                "spec.ports[0].port",
                "spec.ports[0].name",
                "spec.ports[1].targetPort"
            ]
        );
    }

    #[test]
    fn cluster_scoped_kinds_refuse_namespace() {
        let ns = json!({"metadata": {"name": "a", "namespace": "x"}});
        assert!(validate(&ty("Namespace"), &ns)
            .iter()
            .any(|e| e.field == "metadata.namespace"));
    }
}
