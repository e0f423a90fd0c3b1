//! The scheduling framework: a cache of nodes and the pods bound (or assumed bound) to them, and
//! the filters and scores that choose a node for a pod, in the order and with the messages of
//! kube-scheduler's default plugins. Pure: no I/O; the loop in `scheduler.rs` feeds it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim, Pod, PodAffinityTerm, Taint, Toleration,
};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::quantity::milli;
use crate::selectors::{terms_match, Labels, Selector};

pub const SCHEDULER_NAME: &str = "default-scheduler";
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// What kube-scheduler assumes a container without requests uses, for scoring only.
const DEFAULT_MILLI_CPU: i128 = 100;
const DEFAULT_MEMORY_MILLI: i128 = 200 * 1024 * 1024 * 1000;

static NO_LABELS: Labels = BTreeMap::new();

/// Requested or allocatable resources: CPU in millicores, memory and ephemeral storage in
/// thousandths of a byte, a pod count, and extended resources (`example.com/gpu`) in thousandths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i128,
    pub memory: i128,
    pub storage: i128,
    pub pods: i128,
    pub scalar: BTreeMap<String, i128>,
}

impl Resources {
    fn from_list(list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> Self {
        let mut r = Resources::default();
        for (k, q) in list.into_iter().flatten() {
            let v = milli(&q.0).unwrap_or(0);
            match k.as_str() {
                "cpu" => r.cpu = v,
                "memory" => r.memory = v,
                "ephemeral-storage" => r.storage = v,
                "pods" => r.pods = v / 1000,
                k if k.contains('/') || k.starts_with("hugepages-") => {
                    r.scalar.insert(k.to_string(), v);
                }
                _ => {}
            }
        }
        r
    }

    fn add(&mut self, o: &Resources) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.storage += o.storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    fn sub(&mut self, o: &Resources) {
        self.cpu -= o.cpu;
        self.memory -= o.memory;
        self.storage -= o.storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    fn max(&mut self, o: &Resources) {
        self.cpu = self.cpu.max(o.cpu);
        self.memory = self.memory.max(o.memory);
        self.storage = self.storage.max(o.storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// A host port a pod claims on its node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    fn conflicts(&self, o: &HostPort) -> bool {
        let any = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.port == o.port && self.protocol == o.protocol && (self.ip == o.ip || any(&self.ip) || any(&o.ip))
    }
}

/// A pod with what scheduling needs computed once.
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// The whole pod while it waits to be placed; once placed ([`PodInfo::settled`]) one
    /// empty pod shared by all, since the filters and scores read only the fields below.
    pub pod: Arc<Pod>,
    pub key: String,
    pub namespace: String,
    pub requests: Resources,
    /// Requests with kube-scheduler's defaults for containers that state none (scoring only).
    pub nonzero: (i128, i128),
    pub host_ports: Vec<HostPort>,
    labels: Labels,
    affinity: Option<Box<k8s_openapi::api::core::v1::Affinity>>,
    tolerations: Vec<Toleration>,
    deleting: bool,
}

/// What a placed pod's `pod` is: see [`PodInfo::pod`].
static PLACED: std::sync::LazyLock<Arc<Pod>> = std::sync::LazyLock::new(|| Arc::new(Pod::default()));

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let key = format!("{namespace}/{}", pod.metadata.name.as_deref().unwrap_or(""));
        let mut requests = Resources::default();
        let mut nonzero = (0, 0);
        let mut host_ports = Vec::new();
        if let Some(spec) = &pod.spec {
            for c in &spec.containers {
                let r = Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
                nonzero.0 += if r.cpu == 0 { DEFAULT_MILLI_CPU } else { r.cpu };
                nonzero.1 += if r.memory == 0 { DEFAULT_MEMORY_MILLI } else { r.memory };
                requests.add(&r);
                for p in c.ports.iter().flatten() {
                    if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                        host_ports.push(HostPort {
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            ip: p.host_ip.clone().unwrap_or_default(),
                            port: hp,
                        });
                    }
                }
            }
            // Init containers run one at a time before the others: the pod needs the larger.
            for c in spec.init_containers.iter().flatten() {
                requests.max(&Resources::from_list(
                    c.resources.as_ref().and_then(|r| r.requests.as_ref()),
                ));
            }
            requests.add(&Resources::from_list(spec.overhead.as_ref()));
        }
        requests.pods = 1;
        let spec = pod.spec.as_ref();
        PodInfo {
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            affinity: spec.and_then(|s| s.affinity.clone()).map(Box::new),
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            pod,
            key,
            namespace,
            requests,
            nonzero,
            host_ports,
        }
    }

    /// The pod as the cache keeps it once it is on a node: only what filters and scores read
    /// of pods already placed (identity, labels, affinity, tolerations, whether it is being
    /// deleted), kept in fields of its own; its requests and host ports are already summed.
    /// The `Pod` itself goes: its struct alone is about 2 KB (most of it `PodSpec`'s fields,
    /// even when they are all empty), the scheduler's largest cost per placed pod.
    pub fn settled(mut self) -> PodInfo {
        self.pod = PLACED.clone();
        self
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    fn affinity(&self) -> Option<&k8s_openapi::api::core::v1::Affinity> {
        self.affinity.as_deref()
    }

    fn required_affinity(&self) -> &[PodAffinityTerm] {
        self.affinity()
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref())
            .unwrap_or_default()
    }

    fn required_anti_affinity(&self) -> &[PodAffinityTerm] {
        self.affinity()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref())
            .unwrap_or_default()
    }

    /// Preferred terms with their weights; anti-affinity weights are negative.
    fn preferred_terms(&self) -> impl Iterator<Item = (i64, &PodAffinityTerm)> {
        let a = self.affinity();
        let pos = a
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|w| (w.weight as i64, &w.pod_affinity_term));
        let neg = a
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|w| (-(w.weight as i64), &w.pod_affinity_term));
        pos.chain(neg)
    }

    fn has_pod_affinity(&self) -> bool {
        self.affinity()
            .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
    }

    fn terminating(&self) -> bool {
        self.deleting
    }

    fn tolerations(&self) -> &[Toleration] {
        &self.tolerations
    }
}

/// A node and the pods on it.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub name: String,
    /// `None` while pods name a node the scheduler has not seen (or that was deleted).
    pub node: Option<Arc<Node>>,
    pub allocatable: Resources,
    pub requested: Resources,
    nonzero_requested: (i128, i128),
    pub pods: HashMap<String, Arc<PodInfo>>,
    /// Pods here with any pod (anti-)affinity, for the symmetric checks.
    affinity_pods: HashSet<String>,
    ports: Vec<HostPort>,
    /// Read off `node` when it is set: the filters ask these of every node they visit for
    /// every pod, and reaching into the node object for them (its conditions, its spec) was
    /// most of the scheduler's time at 5,000 nodes (a cache miss or more per node).
    ready: bool,
    unschedulable: bool,
    has_taints: bool,
}

impl NodeInfo {
    fn labels(&self) -> &Labels {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&NO_LABELS)
    }

    fn taints(&self) -> &[Taint] {
        if !self.has_taints {
            return &[];
        }
        self.node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default()
    }

    fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.nonzero_requested.0 += p.nonzero.0;
        self.nonzero_requested.1 += p.nonzero.1;
        self.ports.extend(p.host_ports.iter().cloned());
        if p.has_pod_affinity() {
            self.affinity_pods.insert(p.key.clone());
        }
        self.pods.insert(p.key.clone(), p);
    }

    fn remove_pod(&mut self, key: &str) {
        if let Some(p) = self.pods.remove(key) {
            self.requested.sub(&p.requests);
            self.nonzero_requested.0 -= p.nonzero.0;
            self.nonzero_requested.1 -= p.nonzero.1;
            for hp in &p.host_ports {
                if let Some(i) = self.ports.iter().position(|x| x == hp) {
                    self.ports.swap_remove(i);
                }
            }
            self.affinity_pods.remove(key);
        }
    }
}

/// Nodes and the pods bound or assumed bound to them, kept current from watch events.
#[derive(Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pod_node: HashMap<String, String>,
    assumed: HashSet<String>,
    /// Pods with pod (anti-)affinity anywhere: without any, the symmetric checks are skipped.
    affinity_pods: usize,
    /// Slots that hold a node object (the others only hold pods of unseen nodes).
    known_nodes: usize,
    /// Where the next search for feasible nodes starts, so pods spread over a sample.
    next_start: usize,
}

impl Cache {
    fn slot(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.nodes.push(NodeInfo {
                    name: name.to_string(),
                    ..Default::default()
                });
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }

    fn drop_slot_if_empty(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else { return };
        if self.nodes[i].node.is_some() || !self.nodes[i].pods.is_empty() {
            return;
        }
        self.index.remove(name);
        self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let alloc = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let alloc = Resources::from_list(alloc);
        let ready = is_ready(&node);
        let spec = node.spec.as_ref();
        let unschedulable = spec.and_then(|s| s.unschedulable) == Some(true);
        let has_taints = spec.and_then(|s| s.taints.as_ref()).is_some_and(|t| !t.is_empty());
        let slot = self.slot(&name);
        slot.allocatable = alloc;
        slot.ready = ready;
        slot.unschedulable = unschedulable;
        slot.has_taints = has_taints;
        let new = slot.node.replace(node).is_none();
        self.known_nodes += usize::from(new);
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(&i) = self.index.get(name) {
            if self.nodes[i].node.take().is_some() {
                self.known_nodes -= 1;
            }
        }
        self.drop_slot_if_empty(name);
    }

    /// Replace every node (after a relist).
    pub fn replace_nodes(&mut self, nodes: Vec<Arc<Node>>) {
        let keep: HashSet<String> = nodes.iter().filter_map(|n| n.metadata.name.clone()).collect();
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !keep.contains(&n.name))
            .map(|n| n.name.clone())
            .collect();
        for n in gone {
            self.remove_node(&n);
        }
        for n in nodes {
            self.set_node(n);
        }
    }

    /// Record a pod the API shows bound to `node` (confirming an assumption, if any).
    pub fn add_pod(&mut self, info: PodInfo, node: &str) {
        self.remove_pod(&info.key);
        self.pod_node.insert(info.key.clone(), node.to_string());
        self.affinity_pods += usize::from(info.has_pod_affinity());
        self.slot(node).add_pod(Arc::new(info));
    }

    /// Forget a pod (deleted, finished, or an assumption that did not hold).
    pub fn remove_pod(&mut self, key: &str) {
        self.assumed.remove(key);
        if let Some(node) = self.pod_node.remove(key) {
            if let Some(&i) = self.index.get(&node) {
                if self.nodes[i].affinity_pods.contains(key) {
                    self.affinity_pods -= 1;
                }
                self.nodes[i].remove_pod(key);
            }
            self.drop_slot_if_empty(&node);
        }
    }

    /// Count a pod on `node` before the API confirms the binding.
    pub fn assume(&mut self, info: PodInfo, node: &str) {
        let key = info.key.clone();
        self.add_pod(info, node);
        self.assumed.insert(key);
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains(key)
    }

    /// Whether a pod is counted on some node (bound or assumed).
    pub fn has_pod(&self, key: &str) -> bool {
        self.pod_node.contains_key(key)
    }

    /// Whether any counted pod has pod (anti-)affinity, which other pods' checks must read.
    pub fn has_affinity_pods(&self) -> bool {
        self.affinity_pods > 0
    }

    /// Bound pod keys, for reconciling after a relist.
    pub fn pod_keys(&self) -> Vec<String> {
        self.pod_node.keys().cloned().collect()
    }

    pub fn node_count(&self) -> usize {
        self.known_nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    fn all_pods(&self) -> impl Iterator<Item = (&NodeInfo, &Arc<PodInfo>)> {
        self.nodes.iter().flat_map(|n| n.pods.values().map(move |p| (n, p)))
    }
}

/// The objects besides nodes and pods that scheduling reads.
#[derive(Default)]
pub struct Objects {
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>, // "ns/name"
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
    pub classes: HashMap<String, Arc<StorageClass>>,
    pub namespace_labels: HashMap<String, Labels>,
}

/// Where to run a pod, and the claims whose volumes must be provisioned on that node first.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision {
    pub node: String,
    pub provision: Vec<String>,
}

// ---- pod (anti-)affinity terms ----

/// A pod affinity term with its namespaces and selector resolved.
struct Term<'a> {
    key: &'a str,
    namespaces: HashSet<String>,
    ns_selector: Option<Selector>,
    selector: Selector,
    weight: i64,
}

impl<'a> Term<'a> {
    fn new(term: &'a PodAffinityTerm, owner: &PodInfo, weight: i64) -> Term<'a> {
        let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let ns_selector = term.namespace_selector.as_ref().map(|s| Selector::new(Some(s)));
        if namespaces.is_empty() && ns_selector.is_none() {
            namespaces.insert(owner.namespace.clone());
        }
        let mut selector = Selector::new(term.label_selector.as_ref());
        if term.label_selector.is_some() {
            for (keys, equal) in [(&term.match_label_keys, true), (&term.mismatch_label_keys, false)] {
                for k in keys.iter().flatten() {
                    if let Some(v) = owner.labels().get(k) {
                        selector.require(k, v, equal);
                    }
                }
            }
        }
        Term {
            key: &term.topology_key,
            namespaces,
            ns_selector,
            selector,
            weight,
        }
    }

    fn matches(&self, p: &PodInfo, objs: &Objects) -> bool {
        let ns_ok = self.namespaces.contains(&p.namespace)
            || self
                .ns_selector
                .as_ref()
                .is_some_and(|s| s.matches(objs.namespace_labels.get(&p.namespace).unwrap_or(&NO_LABELS)));
        ns_ok && self.selector.matches(p.labels())
    }
}

type Pair = (String, String);

fn pair(labels: &Labels, key: &str) -> Option<Pair> {
    labels.get(key).map(|v| (key.to_string(), v.clone()))
}

// ---- topology spread ----

struct Spread {
    key: String,
    max_skew: i64,
    min_domains: usize,
    selector: Selector,
    hard: bool,
    honor_affinity: bool,
    honor_taints: bool,
    self_match: i64,
    counts: HashMap<String, i64>,
}

impl Spread {
    fn min_count(&self) -> i64 {
        if self.counts.len() < self.min_domains {
            return 0;
        }
        self.counts.values().copied().min().unwrap_or(0)
    }
}

/// Per-pod state computed once before the nodes are filtered (kube's PreFilter).
struct PreFilter<'a> {
    affinity: Vec<Term<'a>>,
    anti_affinity: Vec<Term<'a>>,
    affinity_counts: HashMap<Pair, i64>,
    /// No pod matches the affinity terms, but the pod matches them itself: it may go anywhere.
    affinity_first_of_group: bool,
    anti_counts: HashMap<Pair, i64>,
    existing_anti_counts: HashMap<Pair, i64>,
    spread: Vec<Spread>,
    bound_volumes: Vec<Arc<PersistentVolume>>,
    delayed_claims: Vec<(String, Arc<StorageClass>)>,
}

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
        let key = t.key.as_deref().unwrap_or("");
        let op = t.operator.as_deref().unwrap_or("Equal");
        let key_ok = key == taint.key || (key.is_empty() && op == "Exists");
        let value_ok = op == "Exists" || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("");
        effect_ok && key_ok && value_ok
    })
}

fn required_node_terms(pod: &PodInfo) -> Option<&[NodeSelectorTerm]> {
    pod.affinity()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|r| r.node_selector_terms.as_slice())
}

/// nodeSelector and required node affinity.
fn node_affinity_ok(pod: &PodInfo, node: &NodeInfo) -> bool {
    if let Some(sel) = pod.pod.spec.as_ref().and_then(|s| s.node_selector.as_ref()) {
        let labels = node.labels();
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    required_node_terms(pod).is_none_or(|terms| terms_match(terms, &node.name, node.labels()))
}

fn untolerated_taint<'n>(pod: &PodInfo, node: &'n NodeInfo, effects: &[&str]) -> Option<&'n Taint> {
    node.taints()
        .iter()
        .find(|t| effects.contains(&t.effect.as_str()) && !tolerates(pod.tolerations(), t))
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pre_filter<'a>(pod: &'a PodInfo, cache: &Cache, objs: &Objects) -> Result<PreFilter<'a>, String> {
    // Volumes: claims must exist; bound ones pin the pod to their volume's nodes; unbound
    // claims of a WaitForFirstConsumer class are provisioned where the pod goes.
    let mut bound_volumes = Vec::new();
    let mut delayed_claims = Vec::new();
    let pod_name = pod.pod.metadata.name.as_deref().unwrap_or("");
    for v in pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
    {
        let claim_name = match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(c), _) => c.claim_name.clone(),
            (None, Some(_)) => format!("{pod_name}-{}", v.name),
            _ => continue,
        };
        let key = format!("{}/{claim_name}", pod.namespace);
        let Some(claim) = objs.claims.get(&key) else {
            return Err(format!("persistentvolumeclaim \"{claim_name}\" not found"));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{claim_name}\" is being deleted"));
        }
        let spec = claim.spec.clone().unwrap_or_default();
        if let Some(pv) = spec.volume_name.as_deref().filter(|v| !v.is_empty()) {
            match objs.volumes.get(pv) {
                Some(pv) => bound_volumes.push(pv.clone()),
                None => return Err("pod has unbound immediate PersistentVolumeClaims".into()),
            }
            continue;
        }
        let class = match spec.storage_class_name.as_deref() {
            Some("") => None,
            Some(name) => match objs.classes.get(name) {
                Some(c) => Some(c.clone()),
                None => return Err(format!("storageclass.storage.k8s.io \"{name}\" not found")),
            },
            None => objs
                .classes
                .values()
                .find(|c| {
                    c.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(DEFAULT_CLASS))
                        .is_some_and(|v| v == "true")
                })
                .cloned(),
        };
        match class {
            Some(c) if c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") => {
                delayed_claims.push((key, c))
            }
            _ => return Err("pod has unbound immediate PersistentVolumeClaims".into()),
        }
    }

    // Pod affinity and anti-affinity.
    let affinity: Vec<Term> = pod.required_affinity().iter().map(|t| Term::new(t, pod, 0)).collect();
    let anti_affinity: Vec<Term> = pod
        .required_anti_affinity()
        .iter()
        .map(|t| Term::new(t, pod, 0))
        .collect();
    let mut affinity_counts = HashMap::new();
    let mut anti_counts = HashMap::new();
    let mut existing_anti_counts: HashMap<Pair, i64> = HashMap::new();
    if !affinity.is_empty() || !anti_affinity.is_empty() {
        for (node, other) in cache.all_pods() {
            if node.node.is_none() {
                continue;
            }
            let labels = node.labels();
            if !affinity.is_empty() && affinity.iter().all(|t| t.matches(other, objs)) {
                for t in &affinity {
                    if let Some(p) = pair(labels, t.key) {
                        *affinity_counts.entry(p).or_insert(0) += 1;
                    }
                }
            }
            for t in &anti_affinity {
                if t.matches(other, objs) {
                    if let Some(p) = pair(labels, t.key) {
                        *anti_counts.entry(p).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    // Existing pods whose required anti-affinity this pod would violate.
    for node in cache
        .nodes
        .iter()
        .filter(|n| cache.affinity_pods > 0 && n.node.is_some())
    {
        for key in &node.affinity_pods {
            let Some(other) = node.pods.get(key) else { continue };
            for t in other.required_anti_affinity() {
                if Term::new(t, other, 0).matches(pod, objs) {
                    if let Some(p) = pair(node.labels(), &t.topology_key) {
                        *existing_anti_counts.entry(p).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    let affinity_first_of_group =
        !affinity.is_empty() && affinity_counts.is_empty() && affinity.iter().all(|t| t.matches(pod, objs));

    // Topology spread constraints.
    let mut spread = Vec::new();
    for c in pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default()
    {
        let mut selector = Selector::new(c.label_selector.as_ref());
        for k in c.match_label_keys.iter().flatten() {
            if let Some(v) = pod.labels().get(k) {
                selector.require(k, v, true);
            }
        }
        let self_match = i64::from(selector.matches(pod.labels()));
        spread.push(Spread {
            key: c.topology_key.clone(),
            max_skew: c.max_skew.max(1) as i64,
            min_domains: c.min_domains.unwrap_or(1).max(1) as usize,
            selector,
            hard: c.when_unsatisfiable != "ScheduleAnyway",
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            self_match,
            counts: HashMap::new(),
        });
    }
    if !spread.is_empty() {
        let keys: Vec<String> = spread.iter().filter(|s| s.hard).map(|s| s.key.clone()).collect();
        for node in cache.nodes.iter().filter(|n| n.node.is_some()) {
            let labels = node.labels();
            if !keys.iter().all(|k| labels.contains_key(k)) {
                continue;
            }
            for s in spread.iter_mut() {
                let Some(value) = labels.get(&s.key) else { continue };
                if s.honor_affinity && !node_affinity_ok(pod, node) {
                    continue;
                }
                if s.honor_taints && untolerated_taint(pod, node, &["NoSchedule", "NoExecute"]).is_some() {
                    continue;
                }
                let n = node
                    .pods
                    .values()
                    .filter(|p| p.namespace == pod.namespace && !p.terminating() && s.selector.matches(p.labels()))
                    .count() as i64;
                *s.counts.entry(value.clone()).or_insert(0) += n;
            }
        }
    }
    Ok(PreFilter {
        affinity,
        anti_affinity,
        affinity_counts,
        affinity_first_of_group,
        anti_counts,
        existing_anti_counts,
        spread,
        bound_volumes,
        delayed_claims,
    })
}

/// Why `node` cannot run `pod`, or `Ok` when it can. The first failing check answers, in
/// kube-scheduler's plugin order and words (so `kubectl describe` reads the same).
fn filter(pod: &PodInfo, node: &NodeInfo, pre: &PreFilter) -> Result<(), Cow<'static, str>> {
    if node.node.is_none() {
        return Err("node(s) not found".into());
    }
    // A node condition acts as a NoSchedule taint of this key that the pod may tolerate.
    let tolerates_condition = |key: &str| {
        let t = Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        tolerates(pod.tolerations(), &t)
    };
    // NodeUnschedulable
    if node.unschedulable && !tolerates_condition("node.kubernetes.io/unschedulable") {
        return Err("node(s) were unschedulable".into());
    }
    // TaintToleration (a node that is not Ready carries the not-ready taint implicitly).
    if let Some(t) = untolerated_taint(pod, node, &["NoSchedule", "NoExecute"]) {
        return Err(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )
        .into());
    }
    if !node.ready && !tolerates_condition("node.kubernetes.io/not-ready") {
        return Err("node(s) had untolerated taint {node.kubernetes.io/not-ready: }".into());
    }
    // NodeAffinity
    if !node_affinity_ok(pod, node) {
        return Err("node(s) didn't match Pod's node affinity/selector".into());
    }
    // NodePorts
    if pod
        .host_ports
        .iter()
        .any(|want| node.ports.iter().any(|have| have.conflicts(want)))
    {
        return Err("node(s) didn't have free ports for the requested pod ports".into());
    }
    // NodeResourcesFit
    let (want, have, used) = (&pod.requests, &node.allocatable, &node.requested);
    if used.pods + 1 > have.pods {
        return Err("Too many pods".into());
    }
    if want.cpu > 0 && used.cpu + want.cpu > have.cpu {
        return Err("Insufficient cpu".into());
    }
    if want.memory > 0 && used.memory + want.memory > have.memory {
        return Err("Insufficient memory".into());
    }
    if want.storage > 0 && used.storage + want.storage > have.storage {
        return Err("Insufficient ephemeral-storage".into());
    }
    for (k, v) in &want.scalar {
        if *v > 0 && used.scalar.get(k).copied().unwrap_or(0) + v > have.scalar.get(k).copied().unwrap_or(0) {
            return Err(format!("Insufficient {k}").into());
        }
    }
    let labels = node.labels();
    // VolumeBinding
    for pv in &pre.bound_volumes {
        let terms = pv
            .spec
            .as_ref()
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
            .map(|r| r.node_selector_terms.as_slice());
        if terms.is_some_and(|t| !terms_match(t, &node.name, labels)) {
            return Err("node(s) had volume node affinity conflict".into());
        }
    }
    for (_, class) in &pre.delayed_claims {
        let allowed = class.allowed_topologies.as_deref().unwrap_or_default();
        let ok = allowed.is_empty()
            || allowed.iter().any(|t| {
                t.match_label_expressions
                    .iter()
                    .flatten()
                    .all(|e| labels.get(&e.key).is_some_and(|v| e.values.contains(v)))
            });
        if !ok {
            return Err("node(s) didn't find available persistent volumes to bind".into());
        }
    }
    // PodTopologySpread
    for s in pre.spread.iter().filter(|s| s.hard) {
        let Some(value) = labels.get(&s.key) else {
            return Err("node(s) didn't match pod topology spread constraints (missing required label)".into());
        };
        let here = s.counts.get(value).copied().unwrap_or(0);
        if here + s.self_match - s.min_count() > s.max_skew {
            return Err("node(s) didn't match pod topology spread constraints".into());
        }
    }
    // InterPodAffinity: this pod's affinity, its anti-affinity, then other pods' anti-affinity.
    if !pre.affinity_first_of_group
        && !pre
            .affinity
            .iter()
            .all(|t| pair(labels, t.key).is_some_and(|p| pre.affinity_counts.get(&p).copied().unwrap_or(0) > 0))
    {
        return Err("node(s) didn't match pod affinity rules".into());
    }
    if pre.affinity_first_of_group && !pre.affinity.iter().all(|t| labels.contains_key(t.key)) {
        return Err("node(s) didn't match pod affinity rules".into());
    }
    if pre
        .anti_affinity
        .iter()
        .any(|t| pair(labels, t.key).is_some_and(|p| pre.anti_counts.get(&p).copied().unwrap_or(0) > 0))
    {
        return Err("node(s) didn't match pod anti-affinity rules".into());
    }
    // (Most clusters have no such pods: skip the per-label lookups, which allocate.)
    if !pre.existing_anti_counts.is_empty()
        && labels.iter().any(|(k, v)| {
            pre.existing_anti_counts
                .get(&(k.clone(), v.clone()))
                .is_some_and(|c| *c > 0)
        })
    {
        return Err("node(s) didn't satisfy existing pods anti-affinity rules".into());
    }
    Ok(())
}

/// kube-scheduler's adaptive sample: with many nodes, stop after enough feasible ones.
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    if nodes < 100 {
        return nodes;
    }
    let percent = (50 - nodes as i64 / 125).max(5);
    ((nodes as i64 * percent / 100).max(100)) as usize
}

/// Min-max normalise raw scores to 0..=100 (`reverse`: lower raw is better).
fn normalize(raw: &[i64], reverse: bool) -> Vec<i64> {
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    raw.iter()
        .map(|&s| {
            if max == min {
                if reverse || max > 0 {
                    100
                } else {
                    0
                }
            } else if reverse {
                100 * (max - s) / (max - min)
            } else {
                100 * (s - min) / (max - min)
            }
        })
        .collect()
}

fn score(pod: &PodInfo, nodes: &[&NodeInfo], pre: &PreFilter, cache: &Cache, objs: &Objects) -> Vec<i64> {
    let mut total = vec![0i64; nodes.len()];
    // NodeResourcesFit (least allocated) and NodeResourcesBalancedAllocation, weight 1 each.
    for (i, n) in nodes.iter().enumerate() {
        // i128 → f64 is a library call; the amounts fit in i64, whose conversion is one
        // instruction (this runs for hundreds of nodes per pod).
        let float = |x: i128| i64::try_from(x).map_or(x as f64, |v| v as f64);
        let frac = |used: i128, want: i128, alloc: i128| {
            if alloc <= 0 {
                1.0
            } else {
                (float(used + want) / float(alloc)).min(1.0)
            }
        };
        let c = frac(n.nonzero_requested.0, pod.nonzero.0, n.allocatable.cpu);
        let m = frac(n.nonzero_requested.1, pod.nonzero.1, n.allocatable.memory);
        total[i] += (((1.0 - c) + (1.0 - m)) * 50.0) as i64;
        total[i] += ((1.0 - (c - m).abs() / 2.0) * 100.0) as i64;
    }
    // TaintToleration (weight 3): fewer untolerated PreferNoSchedule taints is better.
    let taints: Vec<i64> = nodes
        .iter()
        .map(|n| {
            n.taints()
                .iter()
                .filter(|t| t.effect == "PreferNoSchedule" && !tolerates(pod.tolerations(), t))
                .count() as i64
        })
        .collect();
    for (i, s) in normalize(&taints, true).into_iter().enumerate() {
        total[i] += 3 * s;
    }
    // NodeAffinity (weight 2): preferred terms' weights.
    let preferred = pod
        .affinity()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
        .unwrap_or_default();
    if !preferred.is_empty() {
        let raw: Vec<i64> = nodes
            .iter()
            .map(|n| {
                preferred
                    .iter()
                    .filter(|p| crate::selectors::term_matches(&p.preference, &n.name, n.labels()))
                    .map(|p| p.weight as i64)
                    .sum()
            })
            .collect();
        let max = raw.iter().copied().max().unwrap_or(0);
        for (i, s) in raw.into_iter().enumerate() {
            if max > 0 {
                total[i] += 2 * (100 * s / max);
            }
        }
    }
    // PodTopologySpread, ScheduleAnyway constraints (weight 2): fewer matching pods is better.
    let soft: Vec<&Spread> = pre.spread.iter().filter(|s| !s.hard).collect();
    if !soft.is_empty() {
        let raw: Vec<i64> = nodes
            .iter()
            .map(|n| {
                soft.iter()
                    .map(|s| match n.labels().get(&s.key) {
                        Some(v) => {
                            let w = ((s.counts.len() + 2) as f64).ln();
                            (s.counts.get(v).copied().unwrap_or(0) as f64 * w * 100.0) as i64
                        }
                        None => i64::MAX / 4,
                    })
                    .sum()
            })
            .collect();
        for (i, s) in normalize(&raw, true).into_iter().enumerate() {
            total[i] += 2 * s;
        }
    }
    // InterPodAffinity (weight 2): this pod's preferred terms, and other pods' terms about it.
    let own: Vec<Term> = pod.preferred_terms().map(|(w, t)| Term::new(t, pod, w)).collect();
    let mut pairs: HashMap<Pair, i64> = HashMap::new();
    let mut any = false;
    let nodes_to_visit = if own.is_empty() && cache.affinity_pods == 0 {
        &cache.nodes[..0]
    } else {
        &cache.nodes[..]
    };
    for node in nodes_to_visit.iter().filter(|n| n.node.is_some()) {
        let labels = node.labels();
        if !own.is_empty() {
            for other in node.pods.values() {
                for t in &own {
                    if t.matches(other, objs) {
                        if let Some(p) = pair(labels, t.key) {
                            *pairs.entry(p).or_insert(0) += t.weight;
                            any = true;
                        }
                    }
                }
            }
        }
        for key in &node.affinity_pods {
            let Some(other) = node.pods.get(key) else { continue };
            for (w, t) in other.preferred_terms() {
                if Term::new(t, other, w).matches(pod, objs) {
                    if let Some(p) = pair(labels, &t.topology_key) {
                        *pairs.entry(p).or_insert(0) += w;
                        any = true;
                    }
                }
            }
        }
    }
    if any {
        let raw: Vec<i64> = nodes
            .iter()
            .map(|n| {
                n.labels()
                    .iter()
                    .map(|(k, v)| pairs.get(&(k.clone(), v.clone())).copied().unwrap_or(0))
                    .sum()
            })
            .collect();
        for (i, s) in normalize(&raw, false).into_iter().enumerate() {
            total[i] += 2 * s;
        }
    }
    total
}

/// Choose a node for `pod`, or say why none fits (the message `kubectl describe` shows).
pub fn schedule(cache: &mut Cache, pod: &PodInfo, objs: &Objects) -> Result<Decision, String> {
    let total = cache.node_count();
    let fail = |reason: &str| format!("0/{total} nodes are available: {reason}.");
    if total == 0 {
        return Err("no nodes available to schedule pods".into());
    }
    let pre = pre_filter(pod, cache, objs).map_err(|r| fail(&r))?;
    let want = feasible_nodes_to_find(cache.nodes.len());
    let len = cache.nodes.len();
    let start = cache.next_start % len;
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut reasons: BTreeMap<Cow<'static, str>, usize> = BTreeMap::new();
    let mut visited = 0;
    for i in 0..len {
        let node = &cache.nodes[(start + i) % len];
        visited += 1;
        if node.node.is_none() {
            continue;
        }
        match filter(pod, node, &pre) {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(r) => *reasons.entry(r).or_insert(0) += 1,
        }
    }
    if feasible.is_empty() {
        let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        return Err(fail(&parts.join(", ")));
    }
    let scores = score(pod, &feasible, &pre, cache, objs);
    let best = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let node = feasible[best].name.clone();
    let provision = pre.delayed_claims.iter().map(|(k, _)| k.clone()).collect();
    cache.next_start = (start + visited) % len;
    Ok(Decision { node, provision })
}

#[cfg(test)]
mod tests;
