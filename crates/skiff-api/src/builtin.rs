//! Typed hooks for the built-in kinds: decoding through the k8s-openapi types (which rejects
//! wrongly typed fields with their path and drops unknown ones, as the Kubernetes decoder does),
//! and conversion between versions that share storage.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;

/// A body that does not decode into the kind's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// Path of the bad field, e.g. `spec.replicas`.
    pub path: String,
    pub message: String,
}

pub struct Hooks {
    /// Decode into the typed struct and encode again: the result holds only known fields.
    pub normalize: fn(&Value) -> Result<Value, DecodeError>,
    /// Add the kind's schema (and what it references) to an OpenAPI generator; returns the
    /// reference to it.
    pub schema: Option<fn(&mut schemars::SchemaGenerator) -> schemars::Schema>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooks")
    }
}

fn normalize<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, DecodeError> {
    // Decoded straight from the borrowed value (no copy of the whole tree first); the path of a
    // bad field is looked for only when there is one, as tracking it costs on every field.
    let typed: T = match T::deserialize(v) {
        Ok(t) => t,
        Err(plain) => return Err(decode_error::<T>(v, plain)),
    };
    serde_json::to_value(typed).map_err(|e| DecodeError {
        path: String::new(),
        message: e.to_string(),
    })
}

/// The error of a failed decode, with the path of the field at fault.
#[cold]
fn decode_error<T: DeserializeOwned>(v: &Value, plain: serde_json::Error) -> DecodeError {
    let Err(e) = serde_path_to_error::deserialize::<_, T>(v) else {
        return DecodeError {
            path: String::new(),
            message: plain.to_string(),
        };
    };
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    let path = if path == "." { String::new() } else { path };
    DecodeError {
        message: if path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        },
        path,
    }
}

macro_rules! hooks_table {
    ($($group:literal, $version:literal, $kind:literal => $ty:ty;)*) => {
        /// The hooks of a built-in kind. Panics on a kind missing from the table: the registry
        /// and this table are written together, and a test checks they agree.
        pub fn hooks(group: &str, version: &str, kind: &str) -> &'static Hooks {
            match (group, version, kind) {
                $( ($group, $version, $kind) => {
                    static H: Hooks = Hooks { normalize: normalize::<$ty>, schema: Some(|g| g.subschema_for::<$ty>()) };
                    &H
                } )*
                _ => {
                    static OPAQUE: Hooks = Hooks { normalize: |v| Ok(v.clone()), schema: None };
                    &OPAQUE
                }
            }
        }
    };
}

hooks_table! {
    "", "v1", "Namespace" => api::core::v1::Namespace;
    "", "v1", "Pod" => api::core::v1::Pod;
    "", "v1", "PodTemplate" => api::core::v1::PodTemplate;
    "", "v1", "ReplicationController" => api::core::v1::ReplicationController;
    "", "v1", "Service" => api::core::v1::Service;
    "", "v1", "Endpoints" => api::core::v1::Endpoints;
    "", "v1", "ConfigMap" => api::core::v1::ConfigMap;
    "", "v1", "Secret" => api::core::v1::Secret;
    "", "v1", "ServiceAccount" => api::core::v1::ServiceAccount;
    "", "v1", "Node" => api::core::v1::Node;
    "", "v1", "Event" => api::core::v1::Event;
    "", "v1", "PersistentVolume" => api::core::v1::PersistentVolume;
    "", "v1", "PersistentVolumeClaim" => api::core::v1::PersistentVolumeClaim;
    "", "v1", "LimitRange" => api::core::v1::LimitRange;
    "", "v1", "ResourceQuota" => api::core::v1::ResourceQuota;
    "apps", "v1", "Deployment" => api::apps::v1::Deployment;
    "apps", "v1", "ReplicaSet" => api::apps::v1::ReplicaSet;
    "apps", "v1", "StatefulSet" => api::apps::v1::StatefulSet;
    "apps", "v1", "DaemonSet" => api::apps::v1::DaemonSet;
    "apps", "v1", "ControllerRevision" => api::apps::v1::ControllerRevision;
    "batch", "v1", "Job" => api::batch::v1::Job;
    "batch", "v1", "CronJob" => api::batch::v1::CronJob;
    "discovery.k8s.io", "v1", "EndpointSlice" => api::discovery::v1::EndpointSlice;
    "coordination.k8s.io", "v1", "Lease" => api::coordination::v1::Lease;
    "storage.k8s.io", "v1", "StorageClass" => api::storage::v1::StorageClass;
    "networking.k8s.io", "v1", "Ingress" => api::networking::v1::Ingress;
    "networking.k8s.io", "v1", "IngressClass" => api::networking::v1::IngressClass;
    "networking.k8s.io", "v1", "NetworkPolicy" => api::networking::v1::NetworkPolicy;
    "authentication.k8s.io", "v1", "SelfSubjectReview" => api::authentication::v1::SelfSubjectReview;
    "authorization.k8s.io", "v1", "SelfSubjectAccessReview" => api::authorization::v1::SelfSubjectAccessReview;
    "authorization.k8s.io", "v1", "SelfSubjectRulesReview" => api::authorization::v1::SelfSubjectRulesReview;
    "rbac.authorization.k8s.io", "v1", "Role" => api::rbac::v1::Role;
    "rbac.authorization.k8s.io", "v1", "ClusterRole" => api::rbac::v1::ClusterRole;
    "rbac.authorization.k8s.io", "v1", "RoleBinding" => api::rbac::v1::RoleBinding;
    "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding" => api::rbac::v1::ClusterRoleBinding;
    "autoscaling", "v1", "HorizontalPodAutoscaler" => api::autoscaling::v1::HorizontalPodAutoscaler;
    "autoscaling", "v2", "HorizontalPodAutoscaler" => api::autoscaling::v2::HorizontalPodAutoscaler;
    "policy", "v1", "PodDisruptionBudget" => api::policy::v1::PodDisruptionBudget;
    "events.k8s.io", "v1", "Event" => api::events::v1::Event;
    "scheduling.k8s.io", "v1", "PriorityClass" => api::scheduling::v1::PriorityClass;
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition" => apiext::CustomResourceDefinition;
}

/// Decode `metadata` as an `ObjectMeta` (for custom resources, whose metadata is typed even
/// though the rest is schema-driven).
pub fn normalize_metadata(meta: &Value) -> Result<Value, DecodeError> {
    normalize::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(meta).map_err(|e| DecodeError {
        path: format!("metadata.{}", e.path),
        message: format!("metadata.{}", e.message),
    })
}

/// Paths of fields present (and not null) in `original` but dropped by `normalized`: the
/// unknown fields that `fieldValidation=Strict` rejects and `Warn` reports.
pub fn unknown_fields(original: &Value, normalized: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(original, normalized, "", &mut out);
    out
}

fn walk_unknown(orig: &Value, norm: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, norm) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, v) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match n.get(k) {
                    Some(nv) => walk_unknown(v, nv, &p, out),
                    None if v.is_null() => {}
                    // Empty maps and lists of optional fields are dropped only when typed as
                    // unset; treat them as known.
                    None if v.as_object().is_some_and(Map::is_empty) || v.as_array().is_some_and(Vec::is_empty) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            for (i, (ov, nv)) in o.iter().zip(n.iter()).enumerate() {
                walk_unknown(ov, nv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Convert an object between versions that share storage. Returns it unchanged when no
/// conversion is needed.
pub fn convert(obj: Value, group: &str, kind: &str, to_version: &str) -> Value {
    match (group, kind) {
        ("autoscaling", "HorizontalPodAutoscaler") => convert_hpa(obj, to_version),
        ("", "Event") | ("events.k8s.io", "Event") => convert_event(obj, group),
        _ => obj,
    }
}

/// The `apiVersion` under which a shared-storage kind is stored.
pub fn storage_api_version(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("autoscaling", "HorizontalPodAutoscaler") => Some("autoscaling/v2"),
        ("", "Event") | ("events.k8s.io", "Event") => Some("v1"),
        _ => None,
    }
}

fn convert_hpa(mut obj: Value, to: &str) -> Value {
    let from = obj["apiVersion"].as_str().unwrap_or("autoscaling/v2").to_string();
    let target = format!("autoscaling/{to}");
    if from == target {
        return obj;
    }
    obj["apiVersion"] = Value::String(target.clone());
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return obj;
    };
    if target == "autoscaling/v1" {
        let metrics = spec.remove("metrics");
        let cpu = metrics.as_ref().and_then(|m| m.as_array()).and_then(|ms| {
            ms.iter()
                .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
                .and_then(|m| m["resource"]["target"]["averageUtilization"].as_i64())
        });
        if let Some(cpu) = cpu {
            spec.insert("targetCPUUtilizationPercentage".into(), cpu.into());
        }
        spec.remove("behavior");
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
            let current = status.remove("currentMetrics");
            let cpu = current.as_ref().and_then(|m| m.as_array()).and_then(|ms| {
                ms.iter()
                    .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
                    .and_then(|m| m["resource"]["current"]["averageUtilization"].as_i64())
            });
            if let Some(cpu) = cpu {
                status.insert("currentCPUUtilizationPercentage".into(), cpu.into());
            }
            status.remove("conditions");
        }
    } else {
        if let Some(cpu) = spec.remove("targetCPUUtilizationPercentage") {
            spec.insert(
                "metrics".into(),
                serde_json::json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}]),
            );
        }
        if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
            if let Some(cpu) = status.remove("currentCPUUtilizationPercentage") {
                status.insert(
                    "currentMetrics".into(),
                    serde_json::json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}]),
                );
            }
        }
    }
    obj
}

/// core/v1 Event field ↔ events.k8s.io/v1 Event field.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// Convert an Event to the version of `to_group` (core `""` or `events.k8s.io`).
fn convert_event(mut obj: Value, to_group: &str) -> Value {
    let to_events = to_group == "events.k8s.io";
    let is_events = obj["apiVersion"].as_str() == Some("events.k8s.io/v1");
    if to_events == is_events {
        return obj;
    }
    obj["apiVersion"] = Value::String(if to_events { "events.k8s.io/v1" } else { "v1" }.into());
    if let Some(map) = obj.as_object_mut() {
        for (core, ev) in EVENT_FIELDS {
            let (from, to) = if to_events { (core, ev) } else { (ev, core) };
            if let Some(v) = map.remove(*from) {
                map.insert(to.to_string(), v);
            }
        }
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_registered_builtin_has_typed_hooks() {
        for t in crate::registry::builtin_types() {
            let h = t.builtin.expect("builtin");
            let probe =
                json!({"apiVersion": t.api_version(), "kind": t.kind, "metadata": {"name": "x"}, "bogusField": 1});
            let n = (h.normalize)(&probe).unwrap_or_else(|e| panic!("{} decodes a minimal object: {e}", t.kind));
            assert!(n.get("bogusField").is_none(), "{} must be typed, not opaque", t.kind);
        }
    }

    #[test]
    fn wrong_types_name_the_field() {
        let h = hooks("apps", "v1", "Deployment");
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "three"}});
        let err = (h.normalize)(&bad).expect_err("string replicas");
        assert_eq!(err.path, "spec.replicas");
    }

    #[test]
    fn unknown_fields_are_listed_with_paths() {
        let h = hooks("", "v1", "Pod");
        let orig = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "labelz": {}},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePolicy": "x"}], "nodeName": null}});
        let n = (h.normalize)(&orig).expect("decodes");
        assert_eq!(
            unknown_fields(&orig, &n),
            vec!["spec.containers[0].imagePolicy".to_string()]
        );
    }

    #[test]
    fn hpa_round_trips_between_v1_and_v2() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}});
        let v2 = convert(v1.clone(), "autoscaling", "HorizontalPodAutoscaler", "v2");
        assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
        assert_eq!(convert(v2, "autoscaling", "HorizontalPodAutoscaler", "v1"), v1);
    }

    #[test]
    fn events_convert_between_groups() {
        let core =
            json!({"apiVersion": "v1", "kind": "Event", "involvedObject": {"name": "p"}, "message": "hi", "count": 2});
        let ev = convert(core.clone(), "events.k8s.io", "Event", "v1");
        assert_eq!(ev["regarding"]["name"], "p");
        assert_eq!(ev["note"], "hi");
        assert_eq!(convert(ev, "", "Event", "v1"), core);
    }
}
