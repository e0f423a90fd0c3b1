//! The scheduling loop.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;

use crate::quantity::milli;

pub const SCHEDULER_NAME: &str = "default-scheduler";

/// CPU in millicores, memory in milli-bytes (quantity units × 1000), and a pod count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i128,
    pub memory: i128,
    pub pods: i128,
}

fn requests(pod: &Pod) -> Resources {
    let mut r = Resources {
        pods: 1,
        ..Default::default()
    };
    let Some(spec) = &pod.spec else { return r };
    for c in &spec.containers {
        if let Some(req) = c.resources.as_ref().and_then(|r| r.requests.as_ref()) {
            r.cpu += req.get("cpu").and_then(|q| milli(&q.0)).unwrap_or(0);
            r.memory += req.get("memory").and_then(|q| milli(&q.0)).unwrap_or(0);
        }
    }
    // Init containers run before the others: the pod needs the larger of the two.
    for c in spec.init_containers.iter().flatten() {
        if let Some(req) = c.resources.as_ref().and_then(|r| r.requests.as_ref()) {
            r.cpu = r.cpu.max(req.get("cpu").and_then(|q| milli(&q.0)).unwrap_or(0));
            r.memory = r.memory.max(req.get("memory").and_then(|q| milli(&q.0)).unwrap_or(0));
        }
    }
    r
}

fn allocatable(node: &Node) -> Resources {
    let a = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    let get = |k: &str| a.and_then(|a| a.get(k)).and_then(|q| milli(&q.0)).unwrap_or(0);
    Resources {
        cpu: get("cpu"),
        memory: get("memory"),
        pods: get("pods") / 1000,
    }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn tolerates(pod: &Pod, node: &Node) -> bool {
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| {
            tolerations.iter().any(|tol| {
                let key_ok = tol.key.as_deref().is_none_or(|k| k.is_empty() || k == t.key);
                let op = tol.operator.as_deref().unwrap_or("Equal");
                let value_ok = op == "Exists" || tol.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or("");
                let effect_ok = tol.effect.as_deref().is_none_or(|e| e.is_empty() || e == t.effect);
                // An empty key with Exists tolerates everything.
                (key_ok || (tol.key.as_deref().unwrap_or("").is_empty() && op == "Exists")) && value_ok && effect_ok
            })
        })
}

/// Why a node does not fit a pod, or `None` when it does.
pub fn fits(pod: &Pod, node: &Node, used: Resources) -> Option<&'static str> {
    if !is_ready(node) {
        return Some("node(s) were not ready");
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        return Some("node(s) were unschedulable");
    }
    if !tolerates(pod, node) {
        return Some("node(s) had untolerated taint");
    }
    if let Some(sel) = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref()) {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return Some("node(s) didn't match Pod's node affinity/selector");
        }
    }
    let want = requests(pod);
    let have = allocatable(node);
    if used.pods + 1 > have.pods {
        return Some("Too many pods");
    }
    if want.cpu > 0 && used.cpu + want.cpu > have.cpu {
        return Some("Insufficient cpu");
    }
    if want.memory > 0 && used.memory + want.memory > have.memory {
        return Some("Insufficient memory");
    }
    None
}

fn is_pending(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.is_some_and(|s| s.node_name.as_deref().unwrap_or("").is_empty())
        && spec.and_then(|s| s.scheduler_name.as_deref()).unwrap_or(SCHEDULER_NAME) == SCHEDULER_NAME
        && p.metadata.deletion_timestamp.is_none()
}

fn is_active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    phase != "Succeeded" && phase != "Failed"
}

fn key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// Run the scheduler until the watches end.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let pods_api: Api<Pod> = Api::all(client.clone());
    let (nodes, node_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let node_stream = reflector(
        node_writer,
        watcher(nodes_api, watcher::Config::default()).default_backoff(),
    )
    .touched_objects()
    .map(|_| ());
    let pod_stream = reflector(
        pod_writer,
        watcher(pods_api, watcher::Config::default()).default_backoff(),
    )
    .touched_objects()
    .map(|_| ());
    // The reflectors are driven by their own task; the loop hears that something changed.
    let (tx, mut changed) = tokio::sync::mpsc::channel::<()>(1);
    let mut changes = Box::pin(futures::stream::select(node_stream, pod_stream));
    let feeder = tokio::spawn(async move {
        while changes.next().await.is_some() {
            let _ = tx.try_send(());
        }
    });
    nodes.wait_until_ready().await?;
    pods.wait_until_ready().await?;
    // Pods bound by this scheduler that the reflector has not shown bound yet.
    let mut assumed: HashMap<String, (String, Resources, tokio::time::Instant)> = HashMap::new();
    let mut reported: HashMap<String, String> = HashMap::new();
    loop {
        // One pass per burst of changes, and at least every few seconds (retries).
        if let Ok(None) = tokio::time::timeout(Duration::from_secs(5), changed.recv()).await {
            feeder.abort();
            return Ok(());
        }
        let all_pods = pods.state();
        let all_nodes = nodes.state();
        let mut used: HashMap<String, Resources> = HashMap::new();
        let mut bound: HashSet<String> = HashSet::new();
        for p in all_pods.iter().filter(|p| is_active(p)) {
            if let Some(n) = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
            {
                bound.insert(key(p));
                let u = used.entry(n).or_default();
                let r = requests(p);
                u.cpu += r.cpu;
                u.memory += r.memory;
                u.pods += 1;
            }
        }
        let now = tokio::time::Instant::now();
        assumed.retain(|k, (_, _, t)| !bound.contains(k) && now.duration_since(*t) < Duration::from_secs(30));
        for (n, r, _) in assumed.values() {
            let u = used.entry(n.clone()).or_default();
            u.cpu += r.cpu;
            u.memory += r.memory;
            u.pods += 1;
        }
        let mut pending: Vec<_> = all_pods
            .iter()
            .filter(|p| is_pending(p) && !assumed.contains_key(&key(p)))
            .cloned()
            .collect();
        pending.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));
        let mut binds: Vec<(String, String, String)> = Vec::new();
        for pod in pending {
            let mut best: Option<(f64, String)> = None;
            let mut reasons: HashMap<&'static str, usize> = HashMap::new();
            for node in all_nodes.iter() {
                let name = node.metadata.name.clone().unwrap_or_default();
                let u = used.get(&name).copied().unwrap_or_default();
                match fits(&pod, node, u) {
                    Some(why) => *reasons.entry(why).or_default() += 1,
                    None => {
                        let a = allocatable(node);
                        let free = |used: i128, total: i128| {
                            if total > 0 {
                                1.0 - used as f64 / total as f64
                            } else {
                                0.0
                            }
                        };
                        let score = (free(u.cpu, a.cpu) + free(u.memory, a.memory) + free(u.pods, a.pods)) / 3.0;
                        if best
                            .as_ref()
                            .is_none_or(|(s, n)| score > *s || (score == *s && name < *n))
                        {
                            best = Some((score, name));
                        }
                    }
                }
            }
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            match best {
                Some((_, node)) => {
                    // Decide now (so the next pod sees this one's resources), bind below.
                    let r = requests(&pod);
                    let u = used.entry(node.clone()).or_default();
                    u.cpu += r.cpu;
                    u.memory += r.memory;
                    u.pods += 1;
                    assumed.insert(key(&pod), (node.clone(), r, now));
                    reported.remove(&key(&pod));
                    binds.push((ns.clone(), name.clone(), node));
                }
                None => {
                    let mut parts: Vec<String> = reasons.iter().map(|(why, n)| format!("{n} {why}")).collect();
                    parts.sort();
                    let message = format!("0/{} nodes are available: {}.", all_nodes.len(), parts.join(", "));
                    if reported.get(&key(&pod)) != Some(&message) {
                        let status = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastProbeTime": null, "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}]}});
                        if api
                            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status))
                            .await
                            .is_ok()
                        {
                            reported.insert(key(&pod), message);
                        }
                    }
                }
            }
        }
        // Bind concurrently; a failed bind is forgotten and retried on the next pass.
        let results: Vec<_> = futures::stream::iter(binds.into_iter().map(|(ns, name, node)| {
            let client = client.clone();
            async move {
                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                let req = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/binding"))
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(&binding).unwrap_or_default());
                let res = match req {
                    Ok(req) => client.request_text(req).await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (format!("{ns}/{name}"), res)
            }
        }))
        .buffer_unordered(32)
        .collect()
        .await;
        for (k, res) in results {
            if let Err(e) = res {
                tracing::debug!(pod = %k, error = %e, "binding failed; will retry");
                assumed.remove(&k);
            }
        }
    }
}
