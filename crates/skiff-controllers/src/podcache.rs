//! A cache of pods by their controlling owner, fed by one watch of every pod, for reconcilers
//! that must read their pods on every pass (the ReplicaSet controller). Upstream's controllers
//! read pods from an informer for the same reason: a LIST per reconcile of a 1,000-replica set
//! costs megabytes of JSON each time a pod changes.
//!
//! What is kept per pod is only what those reconcilers read ([`SlimPod`]: identity, labels,
//! controller reference, deletion, node, phase and readiness), parsed without the rest of the
//! object (managedFields, spec and most of status are skipped unread).
//!
//! A cache lags behind the API server. A reconciler that acted on the old view would create or
//! delete pods twice, so writers record what they expect to see ([`PodCache::expect`]) and wait
//! for the cache to catch up ([`PodCache::caught_up`]) before they compare counts again.
//! Skiff's resourceVersions are the store's revisions and one watch delivers them in order, so
//! "the cache has seen revision N" is exact; a deleted pod is expected to leave the cache or
//! turn terminating. This plays the part of upstream's `ControllerExpectations`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource};
use serde::Deserialize;
use tokio::sync::mpsc;

/// A pod as the owning controllers see it. Deserialised from a whole pod; everything else is
/// skipped.
#[derive(Clone, Debug, Deserialize)]
pub struct SlimPod {
    #[serde(deserialize_with = "skiff_client::lean::meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SlimSpec,
    #[serde(default)]
    pub status: SlimStatus,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimSpec {
    #[serde(default)]
    pub node_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub conditions: Vec<SlimCondition>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub last_transition_time: Option<Time>,
}

skiff_client::pod_resource!(SlimPod);

impl SlimPod {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    fn key(&self) -> (String, String) {
        (
            self.metadata.namespace.clone().unwrap_or_default(),
            self.name().to_string(),
        )
    }

    /// The owner reference with `controller: true`, if any.
    pub fn controller(&self) -> Option<&OwnerReference> {
        self.metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
    }

    fn revision(&self) -> u64 {
        skiff_client::lean::revision(self.metadata.resource_version.as_deref())
    }
}

/// What a reconciler waits for before it trusts the cache again.
#[derive(Default)]
struct Expectation {
    /// The cache must have seen this revision (the last write's).
    revision: u64,
    /// These pods (namespace, name) must be gone from the cache or terminating.
    gone: HashSet<(String, String)>,
    since: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    /// Controller uid → (namespace, name) → pod.
    by_owner: HashMap<String, HashMap<(String, String), Arc<SlimPod>>>,
    /// (namespace, name) → controller uid, for pods that have a controller.
    owner_of: HashMap<(String, String), String>,
    /// The highest revision the watch has delivered.
    revision: u64,
    /// Whether the first list has completed.
    ready: bool,
    expectations: HashMap<String, Expectation>,
}

/// Pods by controlling owner; see the module documentation.
#[derive(Default)]
pub struct PodCache {
    inner: Mutex<Inner>,
}

/// How long a reconciler trusts an expectation that the cache never meets (a lost event, a
/// pod deleted by someone else first) before it goes by the cache alone. Upstream uses 5 min.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

impl PodCache {
    /// The pods controlled by the owner with `uid`.
    pub fn owned_by(&self, uid: &str) -> Vec<Arc<SlimPod>> {
        let inner = self.lock();
        inner
            .by_owner
            .get(uid)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Record that the owner `uid` wrote up to `revision` and deleted the pods `gone`.
    pub fn expect(&self, uid: &str, revision: u64, gone: impl IntoIterator<Item = (String, String)>) {
        let mut inner = self.lock();
        // Owners deleted while they waited never ask again: drop what has long timed out.
        inner
            .expectations
            .retain(|_, e| e.since.is_none_or(|t| t.elapsed() < 2 * EXPECTATION_TIMEOUT));
        let e = inner.expectations.entry(uid.to_string()).or_default();
        e.revision = e.revision.max(revision);
        e.gone.extend(gone);
        e.since = Some(Instant::now());
    }

    /// Whether the cache reflects every write the owner `uid` recorded (or the wait timed out).
    pub fn caught_up(&self, uid: &str) -> bool {
        let mut inner = self.lock();
        if !inner.ready {
            return false;
        }
        let Some(e) = inner.expectations.get(uid) else {
            return true;
        };
        let timed_out = e.since.is_some_and(|t| t.elapsed() > EXPECTATION_TIMEOUT);
        let seen = inner.revision >= e.revision
            && e.gone.iter().all(|k| {
                inner
                    .owner_of
                    .get(k)
                    .and_then(|o| inner.by_owner.get(o))
                    .and_then(|m| m.get(k))
                    .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            });
        if timed_out && !seen {
            tracing::warn!(
                owner = uid,
                "pod cache never showed this owner's writes; going by the cache"
            );
        }
        if seen || timed_out {
            inner.expectations.remove(uid);
            true
        } else {
            false
        }
    }

    /// Forget an owner's expectations (the owner is gone).
    pub fn forget(&self, uid: &str) {
        self.lock().expectations.remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove_key(inner: &mut Inner, key: &(String, String)) -> Option<Arc<SlimPod>> {
        let owner = inner.owner_of.remove(key)?;
        let map = inner.by_owner.get_mut(&owner)?;
        let old = map.remove(key);
        if map.is_empty() {
            inner.by_owner.remove(&owner);
        }
        old
    }

    /// Apply one pod; returns the controller references to wake (old and new owner).
    fn apply(&self, pod: SlimPod, deleted: bool) -> Vec<OwnerReference> {
        let key = pod.key();
        let mut inner = self.lock();
        inner.revision = inner.revision.max(pod.revision());
        let old = Self::remove_key(&mut inner, &key);
        let mut wake: Vec<OwnerReference> = old.and_then(|o| o.controller().cloned()).into_iter().collect();
        if let Some(c) = pod.controller().cloned() {
            if !deleted {
                Self::insert(&mut inner, pod);
            }
            if !wake.iter().any(|w| w.uid == c.uid) {
                wake.push(c);
            }
        }
        wake
    }

    /// Index a pod under its controller (pods without one are not kept).
    fn insert(inner: &mut Inner, pod: SlimPod) {
        inner.revision = inner.revision.max(pod.revision());
        if let Some(uid) = pod.controller().map(|c| c.uid.clone()) {
            let key = pod.key();
            inner.owner_of.insert(key.clone(), uid.clone());
            inner.by_owner.entry(uid).or_default().insert(key, Arc::new(pod));
        }
    }

    /// Replace the whole content (after a (re)list).
    fn replace(&self, pods: Vec<SlimPod>) -> Vec<OwnerReference> {
        let mut inner = self.lock();
        let mut wake: HashMap<String, OwnerReference> = HashMap::new();
        for m in inner.by_owner.values() {
            for p in m.values() {
                if let Some(c) = p.controller() {
                    wake.insert(c.uid.clone(), c.clone());
                }
            }
        }
        inner.by_owner.clear();
        inner.owner_of.clear();
        for pod in pods {
            if let Some(c) = pod.controller() {
                wake.insert(c.uid.clone(), c.clone());
            }
            Self::insert(&mut inner, pod);
        }
        inner.ready = true;
        wake.into_values().collect()
    }

    /// Keep the cache up to date from one watch of every pod, and send the namespace and owner
    /// reference of every owner whose pods changed to `wake`. Runs until the receiver is gone.
    pub async fn run(self: Arc<Self>, client: Client, wake: mpsc::UnboundedSender<(String, OwnerReference)>) {
        let api: Api<SlimPod> = Api::all(client);
        let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
        let mut relisted: Vec<SlimPod> = Vec::new();
        while let Some(ev) = stream.next().await {
            let (ns, owners) = match ev {
                Ok(watcher::Event::Apply(p)) => (p.metadata.namespace.clone(), self.apply(p, false)),
                Ok(watcher::Event::Delete(p)) => (p.metadata.namespace.clone(), self.apply(p, true)),
                Ok(watcher::Event::Init) => {
                    relisted.clear();
                    continue;
                }
                Ok(watcher::Event::InitApply(p)) => {
                    relisted.push(p);
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    let pods = std::mem::take(&mut relisted);
                    let ns: HashMap<String, String> = pods
                        .iter()
                        .filter_map(|p| Some((p.controller()?.uid.clone(), p.metadata.namespace.clone()?)))
                        .collect();
                    for o in self.replace(pods) {
                        let n = ns.get(&o.uid).cloned().unwrap_or_default();
                        if wake.send((n, o)).is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "pod cache watch");
                    continue;
                }
            };
            for o in owners {
                if wake.send((ns.clone().unwrap_or_default(), o)).is_err() {
                    return;
                }
            }
        }
    }
}

/// Turn owner wake-ups into reconcile triggers for one owner kind.
pub fn triggers<K>(
    rx: mpsc::UnboundedReceiver<(String, OwnerReference)>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
{
    let kind = K::kind(&()).to_string();
    let api_version = K::api_version(&()).to_string();
    tokio_stream_from(rx).filter_map(move |(ns, o)| {
        let hit = (o.kind == kind && o.api_version == api_version).then(|| ObjectRef::new(&o.name).within(&ns));
        futures::future::ready(hit)
    })
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::UnboundedReceiver<T>) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, rv: u64, owner: Option<&str>, deleting: bool) -> SlimPod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv.to_string(),
                         "managedFields": [{"manager": "x", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "n1"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        });
        if let Some(o) = owner {
            v["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": o, "controller": true}]);
        }
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(v).expect("a pod")
    }

    #[test]
    fn keeps_only_what_owners_read() {
        let p = pod("a", 5, Some("u1"), false);
        assert!(p.metadata.managed_fields.is_none());
        assert_eq!(p.spec.node_name.as_deref(), Some("n1"));
        assert_eq!(p.status.conditions[0].type_, "Ready");
        assert_eq!(p.controller().map(|c| c.uid.as_str()), Some("u1"));
    }

    #[test]
    fn indexes_by_owner_and_moves_on_change() {
        let c = PodCache::default();
        c.replace(vec![pod("a", 1, Some("u1"), false), pod("b", 2, None, false)]);
        assert_eq!(c.owned_by("u1").len(), 1);
        // Released by its owner: woken, and no longer listed.
        let wake = c.apply(pod("a", 3, None, false), false);
        assert_eq!(wake.iter().map(|o| o.uid.as_str()).collect::<Vec<_>>(), ["u1"]);
        assert!(c.owned_by("u1").is_empty());
        c.apply(pod("a", 4, Some("u2"), false), false);
        assert_eq!(c.owned_by("u2").len(), 1);
        c.apply(pod("a", 5, Some("u2"), false), true);
        assert!(c.owned_by("u2").is_empty());
    }

    #[test]
    fn expectations_wait_for_the_writes() {
        let c = PodCache::default();
        assert!(!c.caught_up("u1"), "not before the first list");
        c.replace(vec![pod("old", 10, Some("u1"), false)]);
        assert!(c.caught_up("u1"));
        // Created a pod at revision 12 and deleted "old".
        c.expect("u1", 12, [("ns".to_string(), "old".to_string())]);
        assert!(!c.caught_up("u1"));
        c.apply(pod("new", 12, Some("u1"), false), false);
        assert!(!c.caught_up("u1"), "old is still there and not terminating");
        c.apply(pod("old", 13, Some("u1"), true), false);
        assert!(c.caught_up("u1"), "terminating counts as gone");
        assert!(c.caught_up("u1"), "and the expectation is cleared");
    }
}
