//! Discovery documents: legacy (`APIVersions`, `APIGroupList`, `APIResourceList`) and
//! aggregated (`apidiscovery.k8s.io/v2` and `v2beta1`), built from the live type set.

use serde_json::{json, Value};

use skiff_api::ResourceType;

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn verbs(t: &ResourceType) -> &'static [&'static str] {
    if t.virtual_kind {
        &["create"]
    } else {
        VERBS
    }
}

/// Groups in discovery order, each with its versions (preferred first).
fn groups(types: &[std::sync::Arc<ResourceType>]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for t in types.iter().filter(|t| !t.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == t.group) {
            Some((_, vs)) => {
                if !vs.contains(&t.version) {
                    if t.preferred {
                        vs.insert(0, t.version.clone());
                    } else {
                        vs.push(t.version.clone());
                    }
                }
            }
            None => out.push((t.group.clone(), vec![t.version.clone()])),
        }
    }
    out
}

pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
}

fn group_json(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
}

pub fn group_list(types: &[std::sync::Arc<ResourceType>]) -> Value {
    let gs: Vec<Value> = groups(types).iter().map(|(g, vs)| group_json(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

pub fn group(types: &[std::sync::Arc<ResourceType>], name: &str) -> Option<Value> {
    groups(types).into_iter().find(|(g, _)| g == name).map(|(g, vs)| {
        let mut v = group_json(&g, &vs);
        v["kind"] = json!("APIGroup");
        v["apiVersion"] = json!("v1");
        v
    })
}

fn scale_kind() -> (&'static str, &'static str, &'static str) {
    ("autoscaling", "v1", "Scale")
}

pub fn resource_list(types: &[std::sync::Arc<ResourceType>], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in types.iter().filter(|t| t.group == group && t.version == version) {
        let mut r = json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind, "verbs": verbs(t),
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if t.scale.is_some() {
            let (g, v, k) = scale_kind();
            resources.push(json!({"name": format!("{}/scale", t.plural), "singularName": "", "namespaced": t.namespaced, "group": g, "version": v, "kind": k, "verbs": ["get", "patch", "update"]}));
        }
        if t.group.is_empty() && t.kind == "Pod" {
            resources.push(json!({"name": "pods/binding", "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
            resources.push(
                json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}),
            );
            for (sub, kind) in [
                ("attach", "PodAttachOptions"),
                ("exec", "PodExecOptions"),
                ("portforward", "PodPortForwardOptions"),
            ] {
                resources.push(json!({"name": format!("pods/{sub}"), "singularName": "", "namespaced": true, "kind": kind, "verbs": ["create", "get"]}));
            }
        }
        if t.group.is_empty() && t.kind == "ServiceAccount" {
            resources.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true, "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
        }
        if t.group.is_empty() && t.kind == "Namespace" {
            resources.push(json!({"name": "namespaces/finalize", "singularName": "", "namespaced": false, "kind": "Namespace", "verbs": ["update"]}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

fn aggregated_resource(t: &ResourceType) -> Value {
    let mut r = json!({
        "resource": t.plural,
        "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": verbs(t),
    });
    if !t.short_names.is_empty() {
        r["shortNames"] = json!(t.short_names);
    }
    if !t.categories.is_empty() {
        r["categories"] = json!(t.categories);
    }
    let mut subs = Vec::new();
    if t.status {
        subs.push(json!({"subresource": "status", "responseKind": {"group": t.group, "version": t.version, "kind": t.kind}, "verbs": ["get", "patch", "update"]}));
    }
    if t.scale.is_some() {
        let (g, v, k) = scale_kind();
        subs.push(json!({"subresource": "scale", "responseKind": {"group": g, "version": v, "kind": k}, "verbs": ["get", "patch", "update"]}));
    }
    if t.group.is_empty() && t.kind == "Pod" {
        subs.push(json!({"subresource": "log", "responseKind": {"group": "", "version": "v1", "kind": "Pod"}, "verbs": ["get"]}));
        for (sub, kind) in [
            ("attach", "PodAttachOptions"),
            ("exec", "PodExecOptions"),
            ("portforward", "PodPortForwardOptions"),
        ] {
            subs.push(json!({"subresource": sub, "responseKind": {"group": "", "version": "v1", "kind": kind}, "verbs": ["create", "get"]}));
        }
    }
    if t.group.is_empty() && t.kind == "ServiceAccount" {
        subs.push(json!({"subresource": "token", "responseKind": {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}, "verbs": ["create"]}));
    }
    if !subs.is_empty() {
        r["subresources"] = json!(subs);
    }
    r
}

/// `APIGroupDiscoveryList` for `/api` (core) or `/apis` (named groups), in `v2` or `v2beta1`.
pub fn aggregated(types: &[std::sync::Arc<ResourceType>], core: bool, version: &str) -> Value {
    let items: Vec<Value> = if core {
        let resources: Vec<Value> = types
            .iter()
            .filter(|t| t.group.is_empty())
            .map(|t| aggregated_resource(t))
            .collect();
        vec![
            json!({"metadata": {"name": "", "creationTimestamp": null}, "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}]}),
        ]
    } else {
        groups(types)
            .into_iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> = vs
                    .iter()
                    .map(|v| {
                        let resources: Vec<Value> = types
                            .iter()
                            .filter(|t| t.group == g && &t.version == v)
                            .map(|t| aggregated_resource(t))
                            .collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
            })
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{version}"), "metadata": {}, "items": items})
}

/// Which aggregated discovery version the Accept header asks for, if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    let parts: Vec<String> = accept.split(',').map(|p| p.replace(' ', "")).collect();
    for p in &parts {
        if p.contains("g=apidiscovery.k8s.io") && p.contains("as=APIGroupDiscoveryList") {
            if p.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if p.contains("v=v2") {
                return Some("v2");
            }
        }
    }
    None
}

pub fn aggregated_content_type(version: &str) -> String {
    format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
}
