//! Lean versions of objects for watching: the same JSON, with the parts no client reads
//! skipped by the parser (never allocated) rather than parsed and dropped.

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::Deserialize;

/// Deserialise `metadata` without `managedFields` (use with `#[serde(deserialize_with)]`).
pub fn meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Lean {
        annotations: Option<std::collections::BTreeMap<String, String>>,
        creation_timestamp: Option<Time>,
        deletion_grace_period_seconds: Option<i64>,
        deletion_timestamp: Option<Time>,
        finalizers: Option<Vec<String>>,
        generate_name: Option<String>,
        generation: Option<i64>,
        labels: Option<std::collections::BTreeMap<String, String>>,
        name: Option<String>,
        namespace: Option<String>,
        owner_references: Option<Vec<OwnerReference>>,
        resource_version: Option<String>,
        uid: Option<String>,
    }
    let l = Lean::deserialize(d)?;
    Ok(ObjectMeta {
        annotations: l.annotations,
        creation_timestamp: l.creation_timestamp,
        deletion_grace_period_seconds: l.deletion_grace_period_seconds,
        deletion_timestamp: l.deletion_timestamp,
        finalizers: l.finalizers,
        generate_name: l.generate_name,
        generation: l.generation,
        labels: l.labels,
        name: l.name,
        namespace: l.namespace,
        owner_references: l.owner_references,
        resource_version: l.resource_version,
        uid: l.uid,
        ..Default::default()
    })
}

/// A pod without managed fields and with only the status a scheduler or node reads (phase,
/// conditions, nominated node). Watch it with `Api::<LeanPod>`; [`LeanPod::into_pod`] gives the
/// k8s-openapi `Pod` the rest of the code works with.
#[derive(Clone, Debug, Deserialize)]
pub struct LeanPod {
    #[serde(deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<PodSpec>,
    #[serde(default)]
    pub status: Option<LeanPodStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanPodStatus {
    pub phase: Option<String>,
    pub conditions: Option<Vec<PodCondition>>,
    pub nominated_node_name: Option<String>,
}

impl LeanPod {
    pub fn into_pod(self) -> Pod {
        Pod {
            metadata: self.metadata,
            spec: self.spec,
            status: self.status.map(|s| PodStatus {
                phase: s.phase,
                conditions: s.conditions,
                nominated_node_name: s.nominated_node_name,
                ..Default::default()
            }),
        }
    }
}

crate::pod_resource!(LeanPod);

/// An object's metadata without managed fields: [`kube::core::PartialObjectMeta`] made lean.
/// `Api::<LeanMeta<K>>` asks the server for metadata only, as `PartialObjectMeta` does, and
/// skips `managedFields` (most of the metadata's bytes) unparsed.
#[derive(Deserialize)]
pub struct LeanMeta<K> {
    #[serde(deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    #[serde(skip)]
    _kind: std::marker::PhantomData<fn() -> K>,
}

impl<K> Clone for LeanMeta<K> {
    fn clone(&self) -> Self {
        LeanMeta {
            metadata: self.metadata.clone(),
            _kind: std::marker::PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for LeanMeta<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanMeta").field("metadata", &self.metadata).finish()
    }
}

impl<K: kube::Resource> kube::Resource for LeanMeta<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn metadata_api() -> bool {
        true
    }
    fn kind(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A resourceVersion as Skiff's store revision (0 when absent or not a number). Skiff's
/// resourceVersions are store revisions, so its own clients may compare them; other servers'
/// are opaque.
pub fn revision(resource_version: Option<&str>) -> u64 {
    resource_version.and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// Implement `kube::Resource` for a lean pod type with a `metadata: ObjectMeta` field, so it
/// can be watched with `Api::<T>`.
#[macro_export]
macro_rules! pod_resource {
    ($t:ty) => {
        impl ::kube::Resource for $t {
            type DynamicType = ();
            type Scope = ::k8s_openapi::NamespaceResourceScope;

            fn kind(_: &()) -> ::std::borrow::Cow<'_, str> {
                "Pod".into()
            }
            fn group(_: &()) -> ::std::borrow::Cow<'_, str> {
                "".into()
            }
            fn version(_: &()) -> ::std::borrow::Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> ::std::borrow::Cow<'_, str> {
                "pods".into()
            }
            fn meta(&self) -> &::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_managed_fields_and_unread_status() {
        let v = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "resourceVersion": "7",
                         "labels": {"a": "b"}, "annotations": {"x": "y"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "o", "controller": true}],
                         "managedFields": [{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1",
                                            "fieldsV1": {"f:spec": {"f:containers": {}}}}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]},
            "status": {"phase": "Running", "podIP": "10.42.0.5",
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 0}]}
        });
        let lean: LeanPod = serde_json::from_value(v.clone()).expect("a pod");
        let pod = lean.into_pod();
        let full: Pod = serde_json::from_value(v).expect("a pod");
        assert!(pod.metadata.managed_fields.is_none());
        assert_eq!(pod.metadata.labels, full.metadata.labels);
        assert_eq!(pod.metadata.owner_references, full.metadata.owner_references);
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(pod.spec, full.spec);
        let status = pod.status.expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.conditions.map(|c| c.len()), Some(1));
        assert!(status.container_statuses.is_none() && status.pod_ip.is_none());
    }

    #[test]
    fn lean_meta_asks_for_metadata_and_skips_managed_fields() {
        use kube::Resource;
        assert!(LeanMeta::<Pod>::metadata_api());
        assert_eq!(LeanMeta::<Pod>::plural(&()), "pods");
        let v = serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"a": "b"},
                         "managedFields": [{"manager": "m", "operation": "Update"}]}
        });
        let m: LeanMeta<Pod> = serde_json::from_value(v).expect("metadata");
        assert_eq!(m.meta().uid.as_deref(), Some("u"));
        assert_eq!(m.metadata.labels.as_ref().map(|l| l["a"].as_str()), Some("b"));
        assert!(m.metadata.managed_fields.is_none());
    }
}
