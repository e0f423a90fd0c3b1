//! The garbage collector: deletes objects whose owners (`metadata.ownerReferences`) are gone,
//! and finishes the `foregroundDeletion` and `orphan` finalizers the API server records for
//! `propagationPolicy=Foreground|Orphan` deletes.
//!
//! How it sees the cluster: API discovery (refreshed every [`DISCOVERY_INTERVAL`], and at once
//! when an owner's kind is unknown) names every resource that can be listed, watched and
//! deleted, custom resources included. One watch per resource keeps a small in-memory copy of
//! the metadata the collector needs (uid, namespace, name, ownerReferences, deletionTimestamp,
//! finalizers); whole objects are not kept. A pass rebuilds the owner→dependents graph by uid
//! from that copy, plans actions with the pure [`plan`] and carries them out. A pass runs when
//! a watch reports a change in that metadata that may call for an action (status-only updates
//! do not wake it, and a new object whose owners are all there and alive does not call for
//! one), after [`RETRY_INTERVAL`] while work is outstanding, and otherwise every
//! [`RESYNC_INTERVAL`].
//!
//! Watches lag: an owner created a moment ago may not be in the copy yet. So an owner that is
//! missing from the graph is confirmed missing with a live GET (by kind, name and namespace,
//! compared by uid) before any dependent is deleted, as Kubernetes' collector does. An owner
//! whose kind is not served at all, even after a fresh discovery, is taken to be gone.
//! `foregroundDeletion` and `orphan` are only released once every watch has finished its
//! first list (or [`SYNC_GRACE`] has passed for one that keeps failing), so a dependent that
//! the copy has not seen yet cannot be missed.
//!
//! Cost: one watch per resource type (API server load does not grow with passes); memory is
//! the metadata above per object; a pass is O(objects) in memory plus one GET per owner that
//! is missing from the copy. Passes are not incremental; with very many objects and constant
//! churn of ownerReferences/finalizers an incrementally maintained graph would be the next step.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::GroupVersionKind;
use kube::discovery::{verbs, ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::watcher::{watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use skiff_client::LeanMeta;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

/// How often discovery is re-read so that new custom resources are covered.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);
/// How soon a pass repeats while work is outstanding (a lost race, an unconfirmed owner).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How often a pass runs when nothing changed.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(10);
/// How long a pass waits for a watch's first list before finishing deletions without it.
pub const SYNC_GRACE: Duration = Duration::from_secs(30);
/// Changes arriving within this window are handled by one pass.
const DEBOUNCE: Duration = Duration::from_millis(50);

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("kubernetes API error on {resource} {name}: {source}")]
    Api {
        resource: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("discovery failed: {0}")]
    Discovery(#[source] kube::Error),
}

/// A resource the collector watches.
#[derive(Debug)]
pub struct Tracked {
    pub ar: ApiResource,
    pub namespaced: bool,
}

impl Tracked {
    fn api(&self, client: Client, ns: Option<&str>) -> Api<DynamicObject> {
        match ns {
            Some(ns) if self.namespaced => Api::namespaced_with(client, ns, &self.ar),
            _ => Api::all_with(client, &self.ar),
        }
    }
}

/// What the collector knows about one object.
#[derive(Debug, Clone)]
pub struct Node {
    pub resource: Arc<Tracked>,
    pub uid: String,
    pub namespace: Option<String>,
    pub name: String,
    pub resource_version: Option<String>,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Node {
    fn from_object(resource: &Arc<Tracked>, o: &LeanMeta<DynamicObject>) -> Option<Node> {
        Some(Node {
            resource: resource.clone(),
            uid: o.metadata.uid.clone()?,
            namespace: o.metadata.namespace.clone(),
            name: o.metadata.name.clone()?,
            resource_version: o.metadata.resource_version.clone(),
            owners: o.metadata.owner_references.clone().unwrap_or_default(),
            deleting: o.metadata.deletion_timestamp.is_some(),
            finalizers: o.metadata.finalizers.clone().unwrap_or_default(),
        })
    }

    /// Whether the parts the collector acts on differ (resourceVersion alone does not count).
    fn same_graph_state(&self, other: &Node) -> bool {
        self.owners == other.owners
            && self.deleting == other.deleting
            && self.finalizers == other.finalizers
            && self.namespace == other.namespace
            && self.name == other.name
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.resource.ar.plural, self.name),
            None => format!("{}/{}", self.resource.ar.plural, self.name),
        }
    }
}

struct ResourceState {
    synced: bool,
    since: Instant,
    objects: HashMap<String, Arc<Node>>,
}

impl Default for ResourceState {
    fn default() -> Self {
        ResourceState {
            synced: false,
            since: Instant::now(),
            objects: HashMap::new(),
        }
    }
}

/// The watches' output, shared with the pass loop.
#[derive(Default)]
struct Shared {
    resources: Mutex<HashMap<String, ResourceState>>,
    changed: Notify,
    /// A change since the last pass may call for collection (see [`calls_for_a_pass`]).
    pending: AtomicBool,
}

/// Whether a change of `now` (before it: `before`) may call for an action: unless the object
/// is alive and every owner it names, before and after, is in the copy and alive, a pass must
/// look. A new pod of a live ReplicaSet (nearly every change at scale) needs none: passes are
/// O(objects), and at 50,000 pods one per change cost a tenth of a core for nothing.
fn calls_for_a_pass(all: &HashMap<String, ResourceState>, now: &Node, before: Option<&Node>) -> bool {
    let live_owner = |r: &OwnerReference, ns: Option<&str>| {
        all.values().any(|st| {
            st.objects
                .get(&r.uid)
                .is_some_and(|o| !o.deleting && (o.namespace.is_none() || o.namespace.as_deref() == ns))
        })
    };
    now.deleting
        || !now.owners.iter().all(|r| live_owner(r, now.namespace.as_deref()))
        || before.is_some_and(|b| !b.owners.iter().all(|r| live_owner(r, b.namespace.as_deref())))
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ResourceState>> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.resources.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn snapshot(&self) -> Graph {
        let resources = self.lock();
        // A resource whose first list keeps failing must not hold every foreground and orphan
        // deletion forever: after SYNC_GRACE it is left out, as Kubernetes' collector does.
        let complete = resources.values().all(|r| r.synced || r.since.elapsed() > SYNC_GRACE);
        Graph::new(resources.values().flat_map(|r| r.objects.values().cloned()), complete)
    }
}

/// The owner→dependents graph of one pass.
pub struct Graph {
    nodes: HashMap<String, Arc<Node>>,
    dependents: HashMap<String, Vec<Arc<Node>>>,
    /// Every watched resource has finished its initial list.
    complete: bool,
}

impl Graph {
    pub fn new(nodes: impl IntoIterator<Item = Arc<Node>>, complete: bool) -> Graph {
        let mut by_uid: HashMap<String, Arc<Node>> = HashMap::new();
        let mut dependents: HashMap<String, Vec<Arc<Node>>> = HashMap::new();
        for n in nodes {
            if by_uid.contains_key(&n.uid) {
                // The same object served by two groups (e.g. events): seen once.
                continue;
            }
            let mut seen = HashSet::new();
            for r in &n.owners {
                if seen.insert(r.uid.clone()) {
                    dependents.entry(r.uid.clone()).or_default().push(n.clone());
                }
            }
            by_uid.insert(n.uid.clone(), n);
        }
        Graph {
            nodes: by_uid,
            dependents,
            complete,
        }
    }

    /// The owner named by `uid` as a dependent in `dep_ns` may reference it: cluster-scoped,
    /// or in the same namespace.
    fn owner(&self, uid: &str, dep_ns: Option<&str>) -> Option<&Arc<Node>> {
        self.nodes
            .get(uid)
            .filter(|o| o.namespace.is_none() || o.namespace.as_deref() == dep_ns)
    }

    /// The dependents that validly reference `owner`.
    fn dependents_of<'a>(&'a self, owner: &'a Node) -> impl Iterator<Item = &'a Arc<Node>> + 'a {
        self.dependents
            .get(&owner.uid)
            .into_iter()
            .flatten()
            .filter(move |d| owner.namespace.is_none() || owner.namespace == d.namespace)
    }

    /// Owner references whose owner is not in the graph: to be confirmed with the API server.
    pub fn missing_owners(&self) -> Vec<(OwnerKey, OwnerReference)> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        // A dependent already on its way out needs no verdict on its owners.
        for n in self.nodes.values().filter(|n| !n.deleting) {
            for r in &n.owners {
                if self.owner(&r.uid, n.namespace.as_deref()).is_none() {
                    let key = OwnerKey {
                        uid: r.uid.clone(),
                        namespace: n.namespace.clone(),
                    };
                    if seen.insert(key.clone()) {
                        out.push((key, r.clone()));
                    }
                }
            }
        }
        out
    }
}

/// An owner as seen from a dependent's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerKey {
    pub uid: String,
    pub namespace: Option<String>,
}

/// What a live lookup says about an owner missing from the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerStatus {
    /// No object of that kind, name and uid exists.
    Absent,
    /// It exists; the watch has not caught up.
    Exists,
    /// The lookup failed; try again later.
    Unknown,
    /// A cluster-scoped dependent names a namespaced owner: never collected (as in Kubernetes).
    Unresolvable,
}

/// One step a pass takes.
#[derive(Debug, Clone)]
pub enum GcAction {
    Delete { node: Arc<Node>, foreground: bool },
    RemoveOwnerRefs { node: Arc<Node>, uids: Vec<String> },
    RemoveFinalizer { node: Arc<Node>, finalizer: &'static str },
}

/// Decide what to do, from the graph and the live answers for owners missing from it.
pub fn plan(graph: &Graph, confirmed: &HashMap<OwnerKey, OwnerStatus>) -> Vec<GcAction> {
    let mut actions = Vec::new();
    let mut nodes: Vec<&Arc<Node>> = graph.nodes.values().collect();
    nodes.sort_by(|a, b| a.uid.cmp(&b.uid));
    for n in nodes {
        if !n.owners.is_empty() {
            plan_dependent(graph, confirmed, n, &mut actions);
        }
        if n.deleting && graph.complete {
            plan_owner(graph, n, &mut actions);
        }
    }
    actions
}

fn plan_dependent(
    graph: &Graph,
    confirmed: &HashMap<OwnerKey, OwnerStatus>,
    n: &Arc<Node>,
    actions: &mut Vec<GcAction>,
) {
    let mut solid = 0usize;
    let mut orphaning: Vec<String> = Vec::new();
    let mut dangling: Vec<&OwnerReference> = Vec::new();
    let mut waiting: Vec<&OwnerReference> = Vec::new();
    for r in &n.owners {
        match graph.owner(&r.uid, n.namespace.as_deref()) {
            Some(o) if o.deleting && o.has_finalizer(ORPHAN) => {
                // The owner keeps this dependent and lets go of it.
                orphaning.push(r.uid.clone());
                solid += 1;
            }
            Some(o) if o.deleting && o.has_finalizer(FOREGROUND) => waiting.push(r),
            Some(_) => solid += 1,
            None => {
                let key = OwnerKey {
                    uid: r.uid.clone(),
                    namespace: n.namespace.clone(),
                };
                match confirmed.get(&key) {
                    Some(OwnerStatus::Absent) => dangling.push(r),
                    _ => solid += 1,
                }
            }
        }
    }
    let mut remove: Vec<String> = orphaning;
    if !n.deleting {
        if solid > 0 {
            // Another owner keeps it: only the references to owners that are gone (or going) go.
            remove.extend(dangling.iter().chain(waiting.iter()).map(|r| r.uid.clone()));
        } else if !dangling.is_empty() || !waiting.is_empty() {
            let blocks = waiting.iter().any(|r| r.block_owner_deletion == Some(true));
            let has_dependents = graph.dependents_of(n).next().is_some();
            actions.push(GcAction::Delete {
                node: n.clone(),
                foreground: blocks && has_dependents,
            });
        }
    }
    remove.sort();
    remove.dedup();
    if !remove.is_empty() {
        actions.push(GcAction::RemoveOwnerRefs {
            node: n.clone(),
            uids: remove,
        });
    }
}

fn plan_owner(graph: &Graph, n: &Arc<Node>, actions: &mut Vec<GcAction>) {
    if n.has_finalizer(ORPHAN) {
        if graph.dependents_of(n).next().is_none() {
            actions.push(GcAction::RemoveFinalizer {
                node: n.clone(),
                finalizer: ORPHAN,
            });
        }
        // Orphaning comes first; foreground deletion (if also asked) follows.
        return;
    }
    if n.has_finalizer(FOREGROUND) {
        let blocked = graph.dependents_of(n).any(|d| {
            d.owners
                .iter()
                .any(|r| r.uid == n.uid && r.block_owner_deletion == Some(true))
        });
        if !blocked {
            actions.push(GcAction::RemoveFinalizer {
                node: n.clone(),
                finalizer: FOREGROUND,
            });
        }
    }
}

struct Watch {
    resource: Arc<Tracked>,
    task: JoinHandle<()>,
}

struct GarbageCollector {
    client: Client,
    shared: Arc<Shared>,
    discovery: Option<Discovery>,
    watches: BTreeMap<String, Watch>,
}

fn resource_key(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    }
}

fn collectable(ar: &ApiResource, caps: &ApiCapabilities) -> bool {
    !ar.plural.contains('/')
        && [verbs::LIST, verbs::WATCH, verbs::DELETE]
            .iter()
            .all(|v| caps.supports_operation(v))
}

fn conflict_or_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

impl GarbageCollector {
    async fn discover(&self) -> Result<Discovery, GcError> {
        match Discovery::new(self.client.clone()).run_aggregated().await {
            Ok(d) => Ok(d),
            Err(e) => {
                tracing::debug!(error = %e, "aggregated discovery failed; using the per-group documents");
                Discovery::new(self.client.clone())
                    .run()
                    .await
                    .map_err(GcError::Discovery)
            }
        }
    }

    /// Re-read discovery and start or stop watches to match it.
    async fn refresh(&mut self) -> Result<(), GcError> {
        let discovery = self.discover().await?;
        let mut wanted: BTreeMap<String, Arc<Tracked>> = BTreeMap::new();
        for group in discovery.groups() {
            for (ar, caps) in group.resources_by_stability() {
                if collectable(&ar, &caps) {
                    let namespaced = caps.scope == Scope::Namespaced;
                    wanted
                        .entry(resource_key(&ar))
                        .or_insert_with(|| Arc::new(Tracked { ar, namespaced }));
                }
            }
        }
        let gone: Vec<String> = self
            .watches
            .iter()
            .filter(|(k, w)| {
                wanted
                    .get(*k)
                    .is_none_or(|t| t.ar != w.resource.ar || t.namespaced != w.resource.namespaced)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(w) = self.watches.remove(&k) {
                tracing::info!(resource = %k, "no longer served; stopping its watch");
                w.task.abort();
                self.shared.lock().remove(&k);
            }
        }
        for (k, t) in wanted {
            if self.watches.contains_key(&k) {
                continue;
            }
            tracing::debug!(resource = %k, "watching for garbage collection");
            self.shared.lock().insert(k.clone(), ResourceState::default());
            let task = tokio::spawn(watch_resource(
                self.client.clone(),
                k.clone(),
                t.clone(),
                self.shared.clone(),
            ));
            self.watches.insert(k, Watch { resource: t, task });
        }
        self.discovery = Some(discovery);
        Ok(())
    }

    /// Where an owner reference points: its resource, as discovery knows it.
    fn resolve(&self, r: &OwnerReference) -> Option<(ApiResource, ApiCapabilities)> {
        let d = self.discovery.as_ref()?;
        let (group, version) = match r.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        d.resolve_gvk(&GroupVersionKind::gvk(group, version, &r.kind))
            // The same kind at another served version of its group is the same object.
            .or_else(|| d.get(group)?.recommended_kind(&r.kind))
    }

    /// Ask the API server whether an owner that the graph lacks exists.
    async fn confirm(&mut self, key: &OwnerKey, r: &OwnerReference, rediscovered: &mut bool) -> OwnerStatus {
        let mut resolved = self.resolve(r);
        if resolved.is_none() && !*rediscovered {
            // A kind we have not seen may be a custom resource defined a moment ago.
            *rediscovered = true;
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "discovery refresh failed");
                return OwnerStatus::Unknown;
            }
            resolved = self.resolve(r);
        }
        let Some((ar, caps)) = resolved else {
            // Not served at all (after a fresh discovery): no such owner can exist.
            return OwnerStatus::Absent;
        };
        let api: Api<DynamicObject> = match (caps.scope, key.namespace.as_deref()) {
            (Scope::Cluster, _) => Api::all_with(self.client.clone(), &ar),
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            (Scope::Namespaced, None) => return OwnerStatus::Unresolvable,
        };
        match api.get_opt(&r.name).await {
            Ok(Some(o)) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => OwnerStatus::Exists,
            Ok(_) => OwnerStatus::Absent,
            Err(e) => {
                tracing::warn!(error = %e, kind = %r.kind, name = %r.name, "owner lookup failed");
                OwnerStatus::Unknown
            }
        }
    }

    /// One level-triggered pass. Returns whether work is outstanding.
    async fn pass(&mut self) -> bool {
        let graph = self.shared.snapshot();
        let mut confirmed = HashMap::new();
        let mut rediscovered = false;
        let mut outstanding = false;
        for (key, r) in graph.missing_owners() {
            let status = self.confirm(&key, &r, &mut rediscovered).await;
            outstanding |= matches!(status, OwnerStatus::Exists | OwnerStatus::Unknown);
            confirmed.insert(key, status);
        }
        let actions = plan(&graph, &confirmed);
        tracing::debug!(
            objects = graph.nodes.len(),
            missing_owners = confirmed.len(),
            actions = actions.len(),
            complete = graph.complete,
            "garbage collection plan"
        );
        outstanding |= !actions.is_empty();
        outstanding |= !graph.complete && graph.nodes.values().any(|n| n.deleting);
        for a in actions {
            if let Err(e) = self.execute(&a).await {
                tracing::warn!(error = %e, "garbage collection step failed; retrying");
            }
        }
        outstanding
    }

    async fn execute(&self, action: &GcAction) -> Result<(), GcError> {
        match action {
            GcAction::Delete { node, foreground } => {
                let policy = if *foreground {
                    PropagationPolicy::Foreground
                } else {
                    PropagationPolicy::Background
                };
                tracing::info!(object = %node.describe(), ?policy, "deleting dependent whose owners are gone");
                let dp = DeleteParams {
                    propagation_policy: Some(policy),
                    preconditions: Some(Preconditions {
                        uid: Some(node.uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                let api = node.resource.api(self.client.clone(), node.namespace.as_deref());
                match api.delete(&node.name, &dp).await {
                    Ok(_) => Ok(()),
                    Err(e) if conflict_or_gone(&e) => Ok(()),
                    Err(e) => Err(self.api_error(node, e)),
                }
            }
            GcAction::RemoveOwnerRefs { node, uids } => {
                tracing::info!(object = %node.describe(), owners = ?uids, "removing owner references");
                let kept: Vec<&OwnerReference> = node.owners.iter().filter(|r| !uids.contains(&r.uid)).collect();
                let refs = if kept.is_empty() { Value::Null } else { json!(kept) };
                self.patch_meta(node, json!({"ownerReferences": refs})).await
            }
            GcAction::RemoveFinalizer { node, finalizer } => {
                tracing::info!(object = %node.describe(), finalizer, "removing finalizer");
                let kept: Vec<&String> = node.finalizers.iter().filter(|f| f != finalizer).collect();
                let fins = if kept.is_empty() { Value::Null } else { json!(kept) };
                self.patch_meta(node, json!({"finalizers": fins})).await
            }
        }
    }

    /// A merge patch of metadata, conditional on the resourceVersion the graph saw: a lost
    /// race is a 409, and the next pass works from the newer state.
    async fn patch_meta(&self, node: &Node, mut meta: Value) -> Result<(), GcError> {
        if let Some(rv) = &node.resource_version {
            meta["resourceVersion"] = json!(rv);
        }
        let api = node.resource.api(self.client.clone(), node.namespace.as_deref());
        let pp = PatchParams {
            field_manager: Some("garbage-collector".into()),
            ..Default::default()
        };
        match api
            .patch(&node.name, &pp, &Patch::Merge(json!({"metadata": meta})))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if conflict_or_gone(&e) => {
                tracing::debug!(object = %node.describe(), error = %e, "stale; next pass retries");
                Ok(())
            }
            Err(e) => Err(self.api_error(node, e)),
        }
    }

    fn api_error(&self, node: &Node, source: kube::Error) -> GcError {
        GcError::Api {
            resource: resource_key(&node.resource.ar),
            name: node.name.clone(),
            source,
        }
    }
}

impl Drop for GarbageCollector {
    fn drop(&mut self) {
        for w in self.watches.values() {
            w.task.abort();
        }
    }
}

/// Keep the shared copy of one resource current; wake the pass loop when graph state changes.
async fn watch_resource(client: Client, key: String, resource: Arc<Tracked>, shared: Arc<Shared>) {
    let api: Api<LeanMeta<DynamicObject>> = Api::all_with(client, &resource.ar);
    // Metadata only: the collector needs nothing else, and whole objects cost the API server
    // and this process a parse of every change of every kind.
    let mut stream = watcher(api, crate::cached_list()).default_backoff().boxed();
    let mut buffer: HashMap<String, Arc<Node>> = HashMap::new();
    while let Some(event) = stream.next().await {
        let changed = match event {
            Ok(Event::Init) => {
                buffer.clear();
                false
            }
            Ok(Event::InitApply(o)) => {
                if let Some(n) = Node::from_object(&resource, &o) {
                    buffer.insert(n.uid.clone(), Arc::new(n));
                }
                false
            }
            // A stopped watch (its resource left discovery) finds no state and writes nothing.
            Ok(Event::InitDone) => match shared.lock().get_mut(&key) {
                Some(state) => {
                    state.objects = std::mem::take(&mut buffer);
                    state.synced = true;
                    shared.pending.store(true, Ordering::SeqCst);
                    true
                }
                None => false,
            },
            Ok(Event::Apply(o)) => {
                let mut all = shared.lock();
                match (Node::from_object(&resource, &o), all.get_mut(&key)) {
                    (Some(n), Some(state)) => {
                        let n = Arc::new(n);
                        let before = state.objects.insert(n.uid.clone(), n.clone());
                        let changed = before.as_ref().is_none_or(|old| !old.same_graph_state(&n));
                        if changed && calls_for_a_pass(&all, &n, before.as_deref()) {
                            shared.pending.store(true, Ordering::SeqCst);
                        }
                        changed
                    }
                    _ => false,
                }
            }
            Ok(Event::Delete(o)) => {
                let uid = o.uid().unwrap_or_default();
                // Its dependents may have lost their owner, and its owners a dependent.
                let gone = shared
                    .lock()
                    .get_mut(&key)
                    .is_some_and(|state| state.objects.remove(&uid).is_some());
                if gone {
                    shared.pending.store(true, Ordering::SeqCst);
                }
                gone
            }
            Err(e) => {
                tracing::warn!(resource = %key, error = %e, "watch failed; backing off");
                false
            }
        };
        if changed {
            shared.changed.notify_one();
        }
    }
}

/// Run the garbage collector until the process ends.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let mut gc = GarbageCollector {
        client,
        shared: Arc::new(Shared::default()),
        discovery: None,
        watches: BTreeMap::new(),
    };
    let mut next_discovery = Instant::now();
    // The first pass, the periodic one and passes while work is outstanding always run; one
    // woken by a change runs only if a change may call for collection.
    let (mut full, mut outstanding) = (true, false);
    loop {
        if Instant::now() >= next_discovery {
            if let Err(e) = gc.refresh().await {
                tracing::warn!(error = %e, "discovery failed; keeping the resources already watched");
            }
            next_discovery = Instant::now() + DISCOVERY_INTERVAL;
        }
        let pass_started = Instant::now();
        let pending = gc.shared.pending.swap(false, Ordering::SeqCst);
        outstanding = if gc.discovery.is_none() {
            true
        } else if pending || full || outstanding {
            let was_outstanding = outstanding;
            let outstanding = gc.pass().instrument(tracing::debug_span!("gc_pass")).await;
            let took = pass_started.elapsed();
            tracing::debug!(
                ?took,
                pending,
                full,
                was_outstanding,
                outstanding,
                "garbage collection pass"
            );
            outstanding
        } else {
            false
        };
        let took = pass_started.elapsed();
        let wait = if outstanding { RETRY_INTERVAL } else { RESYNC_INTERVAL };
        let deadline = (Instant::now() + wait).min(next_discovery);
        // A pass is O(objects): under constant churn of many objects, rest at least nine
        // times as long as the last pass took, so the collector stays near a tenth of a core.
        let rest = DEBOUNCE.max(took * 9);
        tokio::select! {
            _ = gc.shared.changed.notified() => tokio::time::sleep(rest).await,
            _ = tokio::time::sleep_until(deadline) => {}
        }
        // The periodic pass is due even when changes keep waking the loop first.
        full = Instant::now() >= deadline;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(plural: &str, kind: &str, namespaced: bool) -> Arc<Tracked> {
        Arc::new(Tracked {
            ar: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: kind.into(),
                plural: plural.into(),
            },
            namespaced,
        })
    }

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("cm-{uid}"),
            uid: uid.into(),
            controller: None,
            block_owner_deletion: block.then_some(true),
        }
    }

    fn node(uid: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            resource: res("configmaps", "ConfigMap", true),
            uid: uid.into(),
            namespace: Some("default".into()),
            name: format!("cm-{uid}"),
            resource_version: Some("1".into()),
            owners,
            deleting: false,
            finalizers: vec![],
        }
    }

    fn deleting(mut n: Node, finalizer: &str) -> Node {
        n.deleting = true;
        n.finalizers = vec![finalizer.into()];
        n
    }

    fn graph(nodes: Vec<Node>) -> Graph {
        Graph::new(nodes.into_iter().map(Arc::new), true)
    }

    fn absent(uids: &[&str]) -> HashMap<OwnerKey, OwnerStatus> {
        uids.iter()
            .map(|u| {
                (
                    OwnerKey {
                        uid: (*u).into(),
                        namespace: Some("default".into()),
                    },
                    OwnerStatus::Absent,
                )
            })
            .collect()
    }

    fn summary(actions: &[GcAction]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                GcAction::Delete { node, foreground } => format!("delete {} fg={foreground}", node.uid),
                GcAction::RemoveOwnerRefs { node, uids } => format!("unref {} {}", node.uid, uids.join(",")),
                GcAction::RemoveFinalizer { node, finalizer } => format!("unfinalize {} {finalizer}", node.uid),
            })
            .collect()
    }

    #[test]
    fn dependents_of_a_confirmed_missing_owner_are_deleted() {
        let g = graph(vec![node("a", vec![owner_ref("o", false)])]);
        assert_eq!(g.missing_owners().len(), 1);
        assert_eq!(summary(&plan(&g, &absent(&["o"]))), ["delete a fg=false"]);
    }

    #[test]
    fn an_unconfirmed_missing_owner_protects_its_dependents() {
        let g = graph(vec![node("a", vec![owner_ref("o", false)])]);
        assert!(plan(&g, &HashMap::new()).is_empty());
        let mut exists = absent(&["o"]);
        exists.values_mut().for_each(|s| *s = OwnerStatus::Exists);
        assert!(plan(&g, &exists).is_empty());
    }

    #[test]
    fn a_dependent_with_a_live_owner_only_loses_the_dangling_reference() {
        let g = graph(vec![
            node("o1", vec![]),
            node("a", vec![owner_ref("o1", false), owner_ref("o2", false)]),
        ]);
        assert_eq!(summary(&plan(&g, &absent(&["o2"]))), ["unref a o2"]);
    }

    #[test]
    fn an_owner_in_another_namespace_does_not_count() {
        let mut o = node("o", vec![]);
        o.namespace = Some("other".into());
        let g = graph(vec![o, node("a", vec![owner_ref("o", false)])]);
        assert_eq!(g.missing_owners().len(), 1);
        assert_eq!(summary(&plan(&g, &absent(&["o"]))), ["delete a fg=false"]);
    }

    #[test]
    fn foreground_deletes_dependents_then_releases_the_owner() {
        let o = deleting(node("o", vec![]), FOREGROUND);
        let g = graph(vec![
            o.clone(),
            node("a", vec![owner_ref("o", true)]),
            node("b", vec![owner_ref("o", true)]),
        ]);
        assert_eq!(
            summary(&plan(&g, &HashMap::new())),
            ["delete a fg=false", "delete b fg=false"]
        );
        // Dependents on their way out still block.
        let g = graph(vec![o.clone(), deleting(node("a", vec![owner_ref("o", true)]), "x")]);
        assert!(plan(&g, &HashMap::new()).is_empty());
        // A non-blocking dependent does not hold the owner.
        let g = graph(vec![o.clone(), node("a", vec![owner_ref("o", false)])]);
        assert_eq!(
            summary(&plan(&g, &HashMap::new())),
            ["delete a fg=false", "unfinalize o foregroundDeletion"]
        );
        let g = graph(vec![o]);
        assert_eq!(summary(&plan(&g, &HashMap::new())), ["unfinalize o foregroundDeletion"]);
    }

    #[test]
    fn foreground_propagates_to_blocking_dependents_that_own_things() {
        let g = graph(vec![
            deleting(node("o", vec![]), FOREGROUND),
            node("a", vec![owner_ref("o", true)]),
            node("b", vec![owner_ref("a", true)]),
        ]);
        assert_eq!(summary(&plan(&g, &HashMap::new())), ["delete a fg=true"]);
    }

    #[test]
    fn an_incomplete_graph_never_releases_finalizers() {
        let g = Graph::new([Arc::new(deleting(node("o", vec![]), FOREGROUND))], false);
        assert!(plan(&g, &HashMap::new()).is_empty());
    }

    #[test]
    fn orphan_strips_references_then_the_finalizer() {
        let o = deleting(node("o", vec![]), ORPHAN);
        let g = graph(vec![
            o.clone(),
            node("a", vec![owner_ref("o", true)]),
            node("b", vec![owner_ref("o", false), owner_ref("p", false)]),
            node("p", vec![]),
        ]);
        assert_eq!(summary(&plan(&g, &HashMap::new())), ["unref a o", "unref b o"]);
        let g = graph(vec![o]);
        assert_eq!(summary(&plan(&g, &HashMap::new())), ["unfinalize o orphan"]);
    }

    #[test]
    fn only_changes_that_may_call_for_collection_call_for_a_pass() {
        let mut state = ResourceState::default();
        let mut other_ns = node("elsewhere", vec![]);
        other_ns.namespace = Some("other".into());
        for n in [
            node("rs", vec![]),
            deleting(node("going", vec![]), FOREGROUND),
            other_ns,
        ] {
            state.objects.insert(n.uid.clone(), Arc::new(n));
        }
        let all = HashMap::from([("configmaps".to_string(), state)]);
        let pod = |owner: &str| node("pod", vec![owner_ref(owner, true)]);
        // A new object of a live owner, or one with no owner: nothing to do.
        assert!(!calls_for_a_pass(&all, &pod("rs"), None));
        assert!(!calls_for_a_pass(&all, &node("lonely", vec![]), None));
        // An owner missing from the copy, going, or only in another namespace.
        assert!(calls_for_a_pass(&all, &pod("gone"), None));
        assert!(calls_for_a_pass(&all, &pod("going"), None));
        assert!(calls_for_a_pass(&all, &pod("elsewhere"), None));
        // The object itself being deleted.
        assert!(calls_for_a_pass(&all, &deleting(pod("rs"), FOREGROUND), None));
        // A reference dropped from an owner that waits for its dependents to go.
        assert!(calls_for_a_pass(&all, &pod("rs"), Some(&pod("going"))));
    }
}
