//! Node lifecycle: a node whose lease stops renewing for the grace period goes `Ready=Unknown`
//! (kubectl shows NotReady) and gets the `node.kubernetes.io/unreachable` NoExecute and
//! NoSchedule taints; pods on tainted nodes are evicted once their tolerations run out (at once
//! if they do not tolerate the taint). A node whose lease renews again is untainted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{reflector, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::json;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

#[derive(Clone, Debug)]
pub struct NodeLifecycleOptions {
    /// How long a node may go without renewing its lease before it is NotReady.
    pub grace: Duration,
    /// How often nodes and pods are checked.
    pub period: Duration,
}

impl Default for NodeLifecycleOptions {
    fn default() -> Self {
        NodeLifecycleOptions {
            grace: Duration::from_secs(40),
            period: Duration::from_secs(2),
        }
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A node lease as this controller reads it: its name and when it was last renewed. Thousands
/// of leases renew every few seconds; the watch skips everything else in them unparsed.
#[derive(Clone, Debug, Deserialize)]
struct LeaseRenewal {
    #[serde(deserialize_with = "skiff_client::lean::meta")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<LeaseRenewalSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaseRenewalSpec {
    renew_time: Option<MicroTime>,
}

impl kube::Resource for LeaseRenewal {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        "Lease".into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        "coordination.k8s.io".into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        "leases".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn last_heartbeat(node: &Node, leases: &HashMap<String, Arc<LeaseRenewal>>) -> Option<i64> {
    let from_lease = leases
        .get(&node.name_any())
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
        .map(|t| t.0.as_second());
    let from_status = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0.as_second());
    // A node that has not reported yet is judged from its registration (upstream's startup grace).
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
    from_lease.max(from_status).max(created)
}

fn has_unreachable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == UNREACHABLE))
}

/// Seconds a pod may stay on a node with `taint`, `None` = forever, `Some(0)` = not tolerated.
fn tolerated_for(pod: &Pod, taint: &Taint) -> Option<i64> {
    let tols = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let matching: Vec<_> = tols
        .iter()
        .filter(|t| {
            let key_ok = t.key.as_deref().unwrap_or("").is_empty() && t.operator.as_deref() == Some("Exists")
                || t.key.as_deref() == Some(taint.key.as_str());
            let value_ok = t.operator.as_deref() == Some("Exists")
                || t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("");
            let effect_ok =
                t.effect.as_deref().unwrap_or("").is_empty() || t.effect.as_deref() == Some(taint.effect.as_str());
            key_ok && value_ok && effect_ok
        })
        .collect();
    if matching.is_empty() {
        return Some(0);
    }
    if matching.iter().any(|t| t.toleration_seconds.is_none()) {
        return None;
    }
    matching.iter().filter_map(|t| t.toleration_seconds).max()
}

async fn pass(
    client: &Client,
    opts: &NodeLifecycleOptions,
    nodes: &Store<Node>,
    leases: &Store<LeaseRenewal>,
) -> Result<(), kube::Error> {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let nodes = nodes.state();
    let leases: HashMap<String, Arc<LeaseRenewal>> = leases.state().into_iter().map(|l| (l.name_any(), l)).collect();
    let grace = opts.grace.as_secs() as i64;
    let now = now_secs();
    for node in nodes.iter().map(|n| &**n) {
        let name = node.name_any();
        let stale = last_heartbeat(node, &leases).is_none_or(|t| now - t > grace);
        let tainted = has_unreachable(node);
        if stale && !tainted {
            let mut taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
            for effect in ["NoSchedule", "NoExecute"] {
                taints.push(
                    serde_json::from_value(json!({"key": UNREACHABLE, "effect": effect, "timeAdded": ts()}))
                        .expect("taint literal"),
                );
            }
            nodes_api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": {"taints": taints}})),
                )
                .await?;
            let conds = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.", "lastTransitionTime": ts()}]}});
            nodes_api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&conds))
                .await?;
            tracing::info!(
                node = name,
                "node stopped renewing its lease: NotReady, tainted unreachable"
            );
        } else if !stale && tainted {
            let taints: Vec<Taint> = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.key != UNREACHABLE)
                .collect();
            nodes_api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"spec": {"taints": taints}})),
                )
                .await?;
            let conds = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "the node's lease is renewed again", "lastTransitionTime": ts(), "lastHeartbeatTime": ts()}]}});
            nodes_api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&conds))
                .await?;
            tracing::info!(node = name, "node renews its lease again: untainted");
        }
    }
    // Taint-based eviction.
    let noexec: HashMap<String, Vec<Taint>> = nodes
        .iter()
        .filter_map(|n| {
            let ts: Vec<Taint> = n
                .spec
                .as_ref()?
                .taints
                .clone()?
                .into_iter()
                .filter(|t| t.effect == "NoExecute")
                .collect();
            (!ts.is_empty()).then(|| (n.name_any(), ts))
        })
        .collect();
    if noexec.is_empty() {
        return Ok(());
    }
    let pods: Api<Pod> = Api::all(client.clone());
    for pod in pods.list(&ListParams::default()).await?.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(taints) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .and_then(|n| noexec.get(n))
        else {
            continue;
        };
        let due = taints.iter().any(|t| match tolerated_for(&pod, t) {
            None => false,
            Some(secs) => {
                let added = t.time_added.as_ref().map(|a| a.0.as_second()).unwrap_or(now);
                now - added >= secs
            }
        });
        if due {
            let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
            match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => tracing::info!(pod = pod.name_any(), "evicted from a NoExecute-tainted node"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Judge nodes every `opts.period` from watched nodes and leases (no periodic LIST of either:
/// at thousands of nodes that was most of this controller's cost), once both have synced.
pub async fn run(client: Client, opts: NodeLifecycleOptions) -> anyhow::Result<()> {
    let (nodes, nodes_writer) = kube::runtime::reflector::store::<Node>();
    let (leases, leases_writer) = kube::runtime::reflector::store::<LeaseRenewal>();
    let node_feed = reflector(
        nodes_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .for_each(|_| std::future::ready(()));
    let lease_feed = reflector(
        leases_writer,
        watcher(
            Api::<LeaseRenewal>::namespaced(client.clone(), "kube-node-lease"),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .for_each(|_| std::future::ready(()));
    let judge = async {
        // A node must not be judged before its lease has been seen.
        let _ = nodes.wait_until_ready().await;
        let _ = leases.wait_until_ready().await;
        let mut tick = tokio::time::interval(opts.period);
        loop {
            tick.tick().await;
            if let Err(e) = pass(&client, &opts, &nodes, &leases).await {
                tracing::warn!(error = %e, "node lifecycle pass failed");
            }
        }
    };
    tokio::select! {
        _ = node_feed => anyhow::bail!("the node watch ended"),
        _ = lease_feed => anyhow::bail!("the lease watch ended"),
        r = judge => r,
    }
}
