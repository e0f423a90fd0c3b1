//! The DaemonSet controller: one pod per eligible node (its `nodeSelector` matches and it
//! tolerates the node's NoSchedule/NoExecute taints), placed on the node directly; pods on
//! nodes that are no longer eligible are removed; RollingUpdate replaces outdated pods up to
//! `maxUnavailable` at a time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use skiff_client::LeanMeta;

use crate::replicaset::selector_string;

const HASH_LABEL: &str = "controller-revision-hash";
const MANAGER: &str = "daemonset-controller";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API error: {0}")]
    Api(#[from] kube::Error),
    #[error("daemonset {0} has no spec")]
    NoSpec(String),
}

struct Ctx {
    client: Client,
}

/// The tolerations every daemon pod gets, as upstream adds them.
fn daemon_tolerations() -> Vec<Toleration> {
    [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
    ]
    .iter()
    .map(|k| {
        let effect = if k.ends_with("not-ready") || k.ends_with("unreachable") {
            "NoExecute"
        } else {
            "NoSchedule"
        };
        serde_json::from_value(json!({"key": k, "operator": "Exists", "effect": effect})).expect("toleration literal")
    })
    .collect()
}

fn eligible(node: &Node, tolerations: &[Toleration], selector: &BTreeMap<String, String>) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| {
            tolerations.iter().any(|tol| {
                let key_ok = tol.key.as_deref() == Some(t.key.as_str())
                    || (tol.key.as_deref().unwrap_or("").is_empty() && tol.operator.as_deref() == Some("Exists"));
                let value_ok = tol.operator.as_deref() == Some("Exists")
                    || tol.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or("");
                let effect_ok =
                    tol.effect.as_deref().unwrap_or("").is_empty() || tol.effect.as_deref() == Some(t.effect.as_str());
                key_ok && value_ok && effect_ok
            })
        })
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let uid = ds.uid().unwrap_or_default();
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = ds.spec.as_ref().ok_or_else(|| ReconcileError::NoSpec(name.clone()))?;
    let hash = crate::deployment::template_hash(&spec.template, None);
    let pod_spec = spec.template.spec.clone().unwrap_or_default();
    let mut tolerations = pod_spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(daemon_tolerations());
    let node_selector = pod_spec.node_selector.clone().unwrap_or_default();
    let nodes: Vec<Node> = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let wanted: Vec<String> = nodes
        .iter()
        .filter(|n| eligible(n, &tolerations, &node_selector))
        .map(|n| n.name_any())
        .collect();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&selector_string(&spec.selector)))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for p in &pods {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let owner = ds
        .controller_owner_ref(&())
        .expect("a DaemonSet from the API has a name and uid");
    let mut misscheduled = 0;
    // Pods where they should not be, and duplicates.
    for (node, ps) in &by_node {
        let keep = if wanted.contains(node) { 1 } else { 0 };
        if keep == 0 {
            misscheduled += ps.len();
        }
        for p in ps.iter().skip(keep) {
            let _ = pods_api.delete(&p.name_any(), &DeleteParams::default()).await;
        }
    }
    // Missing pods.
    for node in wanted.iter().filter(|n| !by_node.contains_key(*n)) {
        let mut t = spec.template.clone();
        let meta = t.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut ps = serde_json::to_value(t.spec.clone().unwrap_or_default()).unwrap_or_default();
        ps["nodeName"] = json!(node);
        ps["tolerations"] = json!(tolerations);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"generateName": format!("{name}-"), "namespace": ns, "labels": meta.labels, "annotations": meta.annotations, "ownerReferences": [owner.clone()]},
            "spec": ps,
        }))
        .expect("a Pod from typed parts");
        pods_api
            .create(
                &PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                },
                &pod,
            )
            .await?;
    }
    // Rolling update: replace outdated pods, at most maxUnavailable not ready at once.
    let desired = wanted.len() as i32;
    let on_wanted: Vec<&Pod> = wanted
        .iter()
        .filter_map(|n| by_node.get(n).and_then(|ps| ps.first().copied()))
        .collect();
    let ready = on_wanted.iter().filter(|p| is_ready(p)).count() as i32;
    let updated = on_wanted
        .iter()
        .filter(|p| p.labels().get(HASH_LABEL) == Some(&hash))
        .count() as i32;
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    if rolling {
        let max_unavailable = match spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.clone())
        {
            Some(IntOrString::Int(i)) => i,
            Some(IntOrString::String(s)) => {
                (i64::from(desired) * s.trim_end_matches('%').parse::<i64>().unwrap_or(0) / 100) as i32
            }
            None => 1,
        }
        .max(1);
        let unavailable = desired - ready;
        let budget = (max_unavailable - unavailable).max(0) as usize;
        for p in on_wanted
            .iter()
            .filter(|p| p.labels().get(HASH_LABEL) != Some(&hash) && is_ready(p))
            .take(budget)
        {
            pods_api.delete(&p.name_any(), &DeleteParams::default()).await?;
        }
    }
    let status = json!({"status": {
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": on_wanted.len(),
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": ready,
        "numberUnavailable": (desired - ready).max(0),
        "updatedNumberScheduled": updated,
        "observedGeneration": ds.metadata.generation,
    }});
    let have = serde_json::to_value(ds.status.clone().unwrap_or_default()).unwrap_or_default();
    if [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberMisscheduled",
        "numberReady",
        "numberAvailable",
        "updatedNumberScheduled",
        "observedGeneration",
    ]
    .iter()
    .any(|k| have.get(*k).cloned().unwrap_or(json!(0)) != status["status"][*k])
    {
        Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    Ok(Action::requeue(Duration::from_secs(
        if ready < desired || updated < desired { 2 } else { 60 },
    )))
}

/// Run the controller; `pods` are the pods that changed. Owners and node changes are seen
/// from metadata alone (any change moves resourceVersion); whole objects are read per reconcile.
pub async fn run(
    client: Client,
    pods: impl futures::Stream<Item = Arc<LeanMeta<Pod>>> + Send + 'static,
) -> anyhow::Result<()> {
    let api: Api<DaemonSet> = Api::all(client.clone());
    let nodes: Api<LeanMeta<Node>> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    // A node joining, leaving or changing labels/taints affects every DaemonSet.
    let node_changes = watcher(nodes, watcher::Config::default()).filter_map(|e| async move {
        matches!(e, Ok(watcher::Event::Apply(_)) | Ok(watcher::Event::Delete(_))).then_some(())
    });
    Controller::new(api, watcher::Config::default())
        .with_config(crate::controller_config())
        .owns_shared_stream(pods)
        .reconcile_all_on(node_changes)
        .run(reconcile, crate::retry_on_error, ctx)
        .for_each(crate::log_event)
        .await;
    Ok(())
}
