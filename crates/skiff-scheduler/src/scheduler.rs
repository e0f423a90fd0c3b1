//! The scheduling loop: watch events keep the cache current; pending pods are scheduled in
//! batches; bindings run concurrently behind the loop, which counts a pod on its node (assumes
//! it) until the watch shows it bound. Pods that fit nowhere are parked with a backoff and
//! retried when the cluster changes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_client::LeanPod;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::framework::{schedule, Cache, Decision, Objects, PodInfo, SCHEDULER_NAME};

const COMPONENT: &str = "default-scheduler";
/// Pods scheduled per pass before the loop catches up with watch events again.
const BATCH: usize = 2_000;
/// Concurrent binding requests.
const BINDERS: usize = 64;
/// Events waiting to be written; more are dropped, as kube's event broadcaster does.
const EVENT_QUEUE: usize = 1_000;
/// An unschedulable pod is retried at least this often even if nothing seems to change.
const PARKED_MAX: Duration = Duration::from_secs(30);
/// A binding the watch has not confirmed by then is forgotten.
const ASSUME_TTL: Duration = Duration::from_secs(30);

enum Update {
    Pod(Box<watcher::Event<Pod>>),
    Node(Box<watcher::Event<Node>>),
    /// Claims, volumes, classes or namespaces changed.
    Objects,
    Bound(String, Result<(), BindError>),
}

#[derive(Debug)]
enum BindError {
    /// The pod is gone or already bound: nothing to retry.
    Final(String),
    Retry(String),
}

struct Parked {
    pod: Arc<Pod>,
    attempts: u32,
    since: Instant,
    cluster_changed: bool,
}

struct Bind {
    namespace: String,
    name: String,
    key: String,
    decision: Decision,
}

fn is_active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    phase != "Succeeded" && phase != "Failed"
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn ours(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(SCHEDULER_NAME)
        == SCHEDULER_NAME
}

/// A node as the cache keeps it: without managedFields and images, which scheduling never reads.
fn slim(mut n: Node) -> Node {
    n.metadata.managed_fields = None;
    if let Some(s) = n.status.as_mut() {
        s.images = None;
    }
    n
}

fn key_of(p: &Pod) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1 << attempts.saturating_sub(1).min(3)).min(Duration::from_secs(10))
}

struct Stores {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    namespaces: Store<Namespace>,
}

impl Stores {
    fn objects(&self) -> Objects {
        let mut o = Objects::default();
        for c in self.claims.state() {
            o.claims
                .insert(format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()), c);
        }
        for v in self.volumes.state() {
            o.volumes.insert(v.name_any(), v);
        }
        for c in self.classes.state() {
            o.classes.insert(c.name_any(), c);
        }
        for n in self.namespaces.state() {
            o.namespace_labels.insert(n.name_any(), n.labels().clone());
        }
        o
    }
}

/// Follow a kind with a reflector store; say `Update::Objects` when it changes.
fn follow<K>(client: &Client, tx: mpsc::UnboundedSender<Update>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while stream.next().await.is_some() {
            if tx.send(Update::Objects).is_err() {
                return;
            }
        }
    });
    store
}

/// Forward a kind's watch events into the loop.
fn forward<K>(client: &Client, tx: mpsc::UnboundedSender<Update>, wrap: fn(watcher::Event<K>) -> Update)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(wrap(ev)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "scheduler watch error; retrying"),
            }
        }
    });
}

/// Record an event; best effort, as in kube-scheduler.
fn event(events: &mpsc::Sender<Event>, pod: &Pod, ty: &str, reason: &str, message: String) {
    // A full queue drops the event (as kube-scheduler's broadcaster does): do not build it.
    if events.capacity() == 0 {
        return;
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ev = json!({
        "metadata": {"generateName": format!("{}.", pod.name_any()), "namespace": pod.namespace()},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "namespace": pod.namespace(),
                           "uid": pod.uid(), "resourceVersion": pod.resource_version()},
        "reason": reason, "message": message, "type": ty, "source": {"component": COMPONENT},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1, "reportingComponent": COMPONENT,
    });
    if let Ok(ev) = serde_json::from_value::<Event>(ev) {
        let _ = events.try_send(ev);
    }
}

async fn write_events(client: Client, rx: mpsc::Receiver<Event>) {
    tokio_stream::wrappers::ReceiverStream::new(rx)
        .for_each_concurrent(8, |ev| {
            let client = client.clone();
            async move {
                let ns = ev.namespace().unwrap_or_else(|| "default".into());
                if let Err(e) = Api::<Event>::namespaced(client, &ns)
                    .create(&PostParams::default(), &ev)
                    .await
                {
                    tracing::debug!(error = %e, "recording a scheduler event failed");
                }
            }
        })
        .await;
}

fn classify(e: kube::Error) -> BindError {
    match e {
        kube::Error::Api(s) if s.code == 404 || s.code == 409 => BindError::Final(s.message),
        e => BindError::Retry(e.to_string()),
    }
}

/// Provision the pod's delayed-binding claims on the chosen node (kube's PreBind: annotate the
/// claim with the node, wait until the provisioner has bound it), then bind the pod.
async fn bind(client: Client, b: Bind) -> Result<(), BindError> {
    for claim in &b.decision.provision {
        let (ns, name) = claim.split_once('/').unwrap_or(("", claim));
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        let ann = json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": b.decision.node}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&ann))
            .await
            .map_err(|e| BindError::Retry(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let c = api.get(name).await.map_err(|e| BindError::Retry(e.to_string()))?;
            if c.spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_some_and(|v| !v.is_empty())
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(BindError::Retry(format!(
                    "persistentvolumeclaim {claim} was not provisioned in time"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": b.name},
                         "target": {"apiVersion": "v1", "kind": "Node", "name": b.decision.node}});
    let req = http::Request::post(format!("/api/v1/namespaces/{}/pods/{}/binding", b.namespace, b.name))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&binding).unwrap_or_default())
        .map_err(|e| BindError::Final(e.to_string()))?;
    client.request_text(req).await.map(|_| ()).map_err(classify)
}

struct Scheduler {
    client: Client,
    cache: Cache,
    /// Unbound pods waiting for a pass.
    pending: HashMap<String, Arc<Pod>>,
    parked: HashMap<String, Parked>,
    /// Bindings sent, with when; the watch confirms them.
    binding: HashMap<String, Option<Instant>>,
    /// The Unschedulable message last written to each pod.
    reported: HashMap<String, String>,
    /// Failed attempts of pods retried from the parked set.
    attempts: HashMap<String, u32>,
    relist_pods: Option<Vec<Pod>>,
    relist_nodes: Option<Vec<Node>>,
    pods_synced: bool,
    nodes_synced: bool,
    binds: mpsc::UnboundedSender<Bind>,
    events: mpsc::Sender<Event>,
}

impl Scheduler {
    fn cluster_changed(&mut self) {
        for p in self.parked.values_mut() {
            p.cluster_changed = true;
        }
    }

    fn on_pod(&mut self, pod: Pod) {
        let key = key_of(&pod);
        match node_of(&pod).map(str::to_string) {
            Some(node) => {
                self.pending.remove(&key);
                self.parked.remove(&key);
                self.reported.remove(&key);
                self.binding.remove(&key);
                if is_active(&pod) {
                    let first = self.cache.node(&node).is_none_or(|n| !n.pods.contains_key(&key))
                        || self.cache.is_assumed(&key);
                    self.cache.add_pod(PodInfo::new(Arc::new(pod)).settled(), &node);
                    if first {
                        // A newly placed pod can satisfy others' affinity.
                        self.cluster_changed();
                    }
                } else if self.cache.node(&node).is_some_and(|n| n.pods.contains_key(&key)) {
                    self.cache.remove_pod(&key);
                    self.cluster_changed();
                }
            }
            None => {
                if self.binding.contains_key(&key) {
                    return; // our binding is on its way
                }
                if pod.metadata.deletion_timestamp.is_some() || !ours(&pod) || !is_active(&pod) {
                    self.pending.remove(&key);
                    self.parked.remove(&key);
                    return;
                }
                let pod = Arc::new(pod);
                match self.parked.get_mut(&key) {
                    Some(p) => p.pod = pod,
                    None => {
                        self.pending.insert(key, pod);
                    }
                }
            }
        }
    }

    /// A deleted pod is gone from every queue and frees its node, even with a binding in flight.
    fn on_pod_deleted(&mut self, key: &str) {
        self.pending.remove(key);
        self.parked.remove(key);
        self.reported.remove(key);
        self.binding.remove(key);
        self.attempts.remove(key);
        if self.cache.has_pod(key) {
            self.cache.remove_pod(key);
            self.cluster_changed();
        }
    }

    fn apply(&mut self, u: Update) {
        match u {
            Update::Pod(ev) => match *ev {
                watcher::Event::Init => self.relist_pods = Some(Vec::new()),
                watcher::Event::InitApply(p) => {
                    if let Some(v) = self.relist_pods.as_mut() {
                        v.push(p)
                    }
                }
                watcher::Event::InitDone => {
                    let pods = self.relist_pods.take().unwrap_or_default();
                    let keep: HashSet<String> = pods.iter().map(key_of).collect();
                    for k in self.cache.pod_keys() {
                        if !keep.contains(&k) && !self.binding.contains_key(&k) {
                            self.cache.remove_pod(&k);
                        }
                    }
                    self.pending.retain(|k, _| keep.contains(k));
                    self.parked.retain(|k, _| keep.contains(k));
                    for p in pods {
                        self.on_pod(p);
                    }
                    self.pods_synced = true;
                    self.cluster_changed();
                }
                watcher::Event::Apply(p) => self.on_pod(p),
                watcher::Event::Delete(p) => self.on_pod_deleted(&key_of(&p)),
            },
            Update::Node(ev) => {
                match *ev {
                    watcher::Event::Init => self.relist_nodes = Some(Vec::new()),
                    watcher::Event::InitApply(n) => {
                        if let Some(v) = self.relist_nodes.as_mut() {
                            v.push(n)
                        }
                    }
                    watcher::Event::InitDone => {
                        let nodes = self.relist_nodes.take().unwrap_or_default();
                        self.cache
                            .replace_nodes(nodes.into_iter().map(|n| Arc::new(slim(n))).collect());
                        self.nodes_synced = true;
                    }
                    watcher::Event::Apply(n) => self.cache.set_node(Arc::new(slim(n))),
                    watcher::Event::Delete(n) => self.cache.remove_node(&n.name_any()),
                }
                self.cluster_changed();
            }
            Update::Objects => self.cluster_changed(),
            Update::Bound(key, res) => match res {
                Ok(()) => {
                    if let Some(at) = self.binding.get_mut(&key) {
                        *at = Some(Instant::now());
                    }
                }
                Err(e) => {
                    self.binding.remove(&key);
                    if self.cache.is_assumed(&key) {
                        self.cache.remove_pod(&key);
                    }
                    match e {
                        BindError::Final(why) => tracing::debug!(pod = %key, %why, "binding not possible"),
                        BindError::Retry(why) => {
                            tracing::info!(pod = %key, %why, "binding failed; will retry");
                            // The watch brings the pod back if it still needs a node.
                            self.cluster_changed();
                        }
                    }
                }
            },
        }
    }

    /// Pods whose backoff is over and that may now fit go back to the queue.
    fn unpark(&mut self) {
        let now = Instant::now();
        let ready: Vec<String> = self
            .parked
            .iter()
            .filter(|(_, p)| {
                let waited = now.duration_since(p.since);
                (p.cluster_changed && waited >= backoff(p.attempts)) || waited >= PARKED_MAX
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in ready {
            if let Some(p) = self.parked.remove(&k) {
                self.pending.insert(k.clone(), p.pod);
                // Remember attempts through the pending queue.
                self.attempts.insert(k, p.attempts);
            }
        }
        let expired: Vec<String> = self
            .binding
            .iter()
            .filter(|(_, at)| at.is_some_and(|t| now.duration_since(t) > ASSUME_TTL))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.binding.remove(&k);
            self.cache.remove_pod(&k);
        }
    }

    /// Schedule up to a batch of pending pods, highest priority and oldest first.
    fn pass(&mut self, stores: &Stores) {
        if self.pending.is_empty() {
            return;
        }
        let mut batch: Vec<Arc<Pod>> = self.pending.values().cloned().collect();
        let order = |a: &Arc<Pod>, b: &Arc<Pod>| {
            let prio = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            prio(b)
                .cmp(&prio(a))
                .then_with(|| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        };
        // Only the first batch needs ordering: pick it in linear time, then sort it.
        if batch.len() > BATCH {
            batch.select_nth_unstable_by(BATCH, order);
            batch.truncate(BATCH);
        }
        batch.sort_by(order);
        // Claims, classes and namespace labels are read only if some pod here (or a pod whose
        // anti-affinity every pod must respect) can use them.
        let needs_objects = self.cache.has_affinity_pods()
            || batch.iter().any(|p| {
                let spec = p.spec.as_ref();
                spec.and_then(|s| s.volumes.as_ref()).is_some_and(|v| {
                    v.iter()
                        .any(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
                }) || spec.and_then(|s| s.affinity.as_ref()).is_some()
            });
        let objects = if needs_objects {
            stores.objects()
        } else {
            Objects::default()
        };
        let started = Instant::now();
        let count = batch.len();
        for pod in batch {
            let key = key_of(&pod);
            self.pending.remove(&key);
            let info = PodInfo::new(pod.clone());
            match schedule(&mut self.cache, &info, &objects) {
                Ok(decision) => {
                    self.cache.assume(info.settled(), &decision.node);
                    self.binding.insert(key.clone(), None);
                    self.attempts.remove(&key);
                    event(
                        &self.events,
                        &pod,
                        "Normal",
                        "Scheduled",
                        format!("Successfully assigned {key} to {}", decision.node),
                    );
                    let _ = self.binds.send(Bind {
                        namespace: pod.namespace().unwrap_or_default(),
                        name: pod.name_any(),
                        key,
                        decision,
                    });
                }
                Err(message) => {
                    let attempts = self.attempts.remove(&key).unwrap_or(0) + 1;
                    if self.reported.get(&key) != Some(&message) {
                        self.reported.insert(key.clone(), message.clone());
                        event(&self.events, &pod, "Warning", "FailedScheduling", message.clone());
                        let client = self.client.clone();
                        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
                        tokio::spawn(async move {
                            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                            let status = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
                                "reason": "Unschedulable", "message": message, "lastProbeTime": null, "lastTransitionTime": now}]}});
                            if let Err(e) = Api::<Pod>::namespaced(client, &ns)
                                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status))
                                .await
                            {
                                tracing::debug!(pod = %name, error = %e, "could not report Unschedulable");
                            }
                        });
                    }
                    self.parked.insert(
                        key,
                        Parked {
                            pod,
                            attempts,
                            since: Instant::now(),
                            cluster_changed: false,
                        },
                    );
                }
            }
        }
        tracing::debug!(
            pods = count,
            elapsed_us = started.elapsed().as_micros() as u64,
            pending = self.pending.len(),
            parked = self.parked.len(),
            binding = self.binding.len(),
            "scheduling pass"
        );
    }
}

/// Run the scheduler until its watches end.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Pods are watched lean (no managedFields, only the status phase the scheduler reads).
    forward::<LeanPod>(&client, tx.clone(), |e| {
        use watcher::Event as E;
        Update::Pod(Box::new(match e {
            E::Apply(p) => E::Apply(p.into_pod()),
            E::Delete(p) => E::Delete(p.into_pod()),
            E::Init => E::Init,
            E::InitApply(p) => E::InitApply(p.into_pod()),
            E::InitDone => E::InitDone,
        }))
    });
    forward::<Node>(&client, tx.clone(), |e| Update::Node(Box::new(e)));
    let stores = Stores {
        claims: follow(&client, tx.clone()),
        volumes: follow(&client, tx.clone()),
        classes: follow(&client, tx.clone()),
        namespaces: follow(&client, tx.clone()),
    };
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    tokio::spawn(write_events(client.clone(), events_rx));
    let (binds_tx, binds_rx) = mpsc::unbounded_channel::<Bind>();
    {
        let client = client.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            tokio_stream::wrappers::UnboundedReceiverStream::new(binds_rx)
                .map(|b| {
                    let client = client.clone();
                    async move {
                        let key = b.key.clone();
                        if b.decision.provision.is_empty() {
                            (key, bind(client, b).await)
                        } else {
                            // Waiting for volumes must not hold up other bindings.
                            let res = tokio::spawn(bind(client, b))
                                .await
                                .unwrap_or_else(|e| Err(BindError::Retry(e.to_string())));
                            (key, res)
                        }
                    }
                })
                .buffer_unordered(BINDERS)
                .for_each(|(key, res)| {
                    let _ = tx.send(Update::Bound(key, res));
                    async {}
                })
                .await;
        });
    }
    drop(tx);
    for ready in [
        stores.claims.wait_until_ready().await,
        stores.volumes.wait_until_ready().await,
        stores.classes.wait_until_ready().await,
        stores.namespaces.wait_until_ready().await,
    ] {
        ready?;
    }
    let mut s = Scheduler {
        client,
        cache: Cache::default(),
        pending: HashMap::new(),
        parked: HashMap::new(),
        binding: HashMap::new(),
        reported: HashMap::new(),
        attempts: HashMap::new(),
        relist_pods: None,
        relist_nodes: None,
        pods_synced: false,
        nodes_synced: false,
        binds: binds_tx,
        events: events_tx,
    };
    loop {
        let wait = if s.pending.is_empty() {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        };
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(u)) => s.apply(u),
            Ok(None) => return Ok(()),
            Err(_) => {}
        }
        while let Ok(u) = rx.try_recv() {
            s.apply(u);
        }
        if !(s.pods_synced && s.nodes_synced) {
            continue;
        }
        s.unpark();
        s.pass(&stores);
        // Let the binders and watches run between batches.
        tokio::task::yield_now().await;
    }
}
