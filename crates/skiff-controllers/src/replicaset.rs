//! The ReplicaSet controller: keeps `spec.replicas` pods from the template running, owned by
//! the ReplicaSet, and reports replicas/ready/available/observedGeneration in status (a pod is
//! available once it has been Ready for `minReadySeconds`).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::podcache::{PodCache, SlimPod};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API error: {0}")]
    Api(#[from] kube::Error),
    #[error("replicaset {0} has no spec")]
    NoSpec(String),
}

struct Ctx {
    client: Client,
    pods: Arc<PodCache>,
}

/// The `a=b,c in (d)` form of a label selector.
pub fn selector_string(sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let vals = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({vals})", e.key),
            "NotIn" => format!("{} notin ({vals})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

fn is_ready(p: &SlimPod) -> bool {
    p.status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Milliseconds since the epoch at which the pod last became Ready.
fn ready_since(p: &SlimPod) -> Option<i64> {
    p.status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0.as_millisecond())
}

/// Upstream's `IsPodAvailable`: Ready, and (with `minReadySeconds`) Ready for longer than
/// that. Otherwise, for a Ready pod, how long until it is available.
fn availability(p: &SlimPod, min_ready_seconds: i32, now_ms: i64) -> Result<(), Option<i64>> {
    if !is_ready(p) {
        return Err(None);
    }
    if min_ready_seconds <= 0 {
        return Ok(());
    }
    let Some(since) = ready_since(p) else {
        return Err(None);
    };
    let at = since + i64::from(min_ready_seconds) * 1000;
    if at < now_ms {
        Ok(())
    } else {
        Err(Some(at - now_ms))
    }
}

fn is_active(p: &SlimPod) -> bool {
    let phase = p.status.phase.as_deref().unwrap_or("");
    p.metadata.deletion_timestamp.is_none() && phase != "Succeeded" && phase != "Failed"
}

/// Deletion preference: unscheduled, then pending, then not ready, then the newest.
fn deletion_rank(p: &SlimPod) -> (u8, std::cmp::Reverse<i64>) {
    let scheduled = p.spec.node_name.as_ref().is_some_and(|n| !n.is_empty());
    let phase = p.status.phase.as_deref().unwrap_or("");
    let rank = if !scheduled {
        0
    } else if phase == "Pending" {
        1
    } else if !is_ready(p) {
        2
    } else {
        3
    };
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or_default();
    (rank, std::cmp::Reverse(created))
}

/// The part of a create response the controller reads: the revision of the write.
#[derive(serde::Deserialize)]
struct Written {
    metadata: WrittenMeta,
}
#[derive(serde::Deserialize)]
struct WrittenMeta {
    #[serde(rename = "resourceVersion", default)]
    resource_version: Option<String>,
}

impl Written {
    fn revision(&self) -> u64 {
        skiff_client::lean::revision(self.metadata.resource_version.as_deref())
    }
}

/// Create `n` pods from one request body, at most 64 at a time. Returns the highest revision
/// written and the first error, if any (the revision counts the creates that succeeded).
async fn create_pods(client: &Client, ns: &str, body: &[u8], n: usize) -> (u64, Option<kube::Error>) {
    let uri = format!("/api/v1/namespaces/{ns}/pods?fieldManager=replicaset-controller");
    let creates = (0..n).map(|_| {
        let req = http::Request::post(&uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        async move {
            let req = req.map_err(kube::Error::HttpError)?;
            client.request::<Written>(req).await.map(|w| w.revision())
        }
    });
    let results: Vec<_> = futures::stream::iter(creates).buffer_unordered(64).collect().await;
    let mut top = 0;
    let mut err = None;
    for r in results {
        match r {
            Ok(rev) => top = top.max(rev),
            Err(e) => err = err.or(Some(e)),
        }
    }
    (top, err)
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let uid = rs.uid().unwrap_or_default();
    if rs.metadata.deletion_timestamp.is_some() {
        ctx.pods.forget(&uid);
        return Ok(Action::await_change());
    }
    let spec = rs.spec.as_ref().ok_or_else(|| ReconcileError::NoSpec(name.clone()))?;
    // Act only on a view that shows this controller's own earlier writes; the events of those
    // writes wake the set again, the requeue covers a wait that times out.
    if !ctx.pods.caught_up(&uid) {
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    let owned = ctx.pods.owned_by(&uid);
    let active: Vec<&SlimPod> = owned.iter().map(|p| &**p).filter(|p| is_active(p)).collect();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    if active.len() < want {
        let template = spec.template.clone().unwrap_or_default();
        let owner = rs
            .controller_owner_ref(&())
            .expect("a ReplicaSet from the API has a name and uid");
        let mut meta = template.metadata.clone().unwrap_or_default();
        meta.name = None;
        meta.generate_name = Some(format!("{name}-"));
        meta.namespace = Some(ns.clone());
        meta.owner_references = Some(vec![owner]);
        let pod = Pod {
            metadata: meta,
            spec: template.spec.clone(),
            status: None,
        };
        // Every pod of the set has the same body; the server picks the names.
        let body = serde_json::to_vec(&pod).map_err(kube::Error::SerdeError)?;
        // Concurrent creates in growing batches (upstream's slow start): a failing template
        // costs one request, a healthy one reaches full parallelism quickly.
        let mut remaining = want - active.len();
        let mut batch = 1usize;
        while remaining > 0 {
            let n = batch.min(remaining);
            let (top, err) = create_pods(&ctx.client, &ns, &body, n).await;
            ctx.pods.expect(&uid, top, []);
            if let Some(e) = err {
                return Err(e.into());
            }
            remaining -= n;
            batch = (batch * 2).min(500);
        }
    } else if active.len() > want {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let mut victims: Vec<&SlimPod> = active.clone();
        victims.sort_by_key(|p| deletion_rank(p));
        for p in victims.into_iter().take(active.len() - want) {
            let key = (ns.clone(), p.name().to_string());
            match pods.delete(p.name(), &DeleteParams::default()).await {
                Ok(deleted) => {
                    // A terminating pod comes back with the revision of that write; a pod
                    // removed at once only as a Status.
                    let rev =
                        skiff_client::lean::revision(deleted.left().and_then(|p| p.resource_version()).as_deref());
                    ctx.pods.expect(&uid, rev, [key]);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    // Status from what the cache shows now.
    let labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let pl = p.metadata.labels.as_ref();
            labels.iter().all(|(k, v)| pl.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    let min_ready_seconds = spec.min_ready_seconds.unwrap_or(0);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut available = 0;
    // The soonest a Ready pod becomes available: look again then.
    let mut recheck: Option<i64> = None;
    for p in &active {
        match availability(p, min_ready_seconds, now_ms) {
            Ok(()) => available += 1,
            Err(Some(wait)) => recheck = Some(recheck.map_or(wait, |r| r.min(wait))),
            Err(None) => {}
        }
    }
    let status = json!({"status": {
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation,
    }});
    let current = rs.status.clone().unwrap_or_default();
    let changed = current.replicas != active.len() as i32
        || current.ready_replicas.unwrap_or(0) != ready as i32
        || current.available_replicas.unwrap_or(0) != available
        || current.fully_labeled_replicas.unwrap_or(0) != fully_labeled as i32
        || current.observed_generation != rs.metadata.generation;
    if changed {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    Ok(match recheck {
        Some(ms) => Action::requeue(std::time::Duration::from_millis(ms.max(0) as u64 + 100)),
        None => Action::await_change(),
    })
}

pub async fn run(client: Client) -> anyhow::Result<()> {
    // Pods are read from one cache of the pods by owner, which also wakes their sets.
    let pods = Arc::new(PodCache::default());
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(pods.clone().run(client.clone(), wake));
    let rs_api: Api<ReplicaSet> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client, pods });
    Controller::new(rs_api, watcher::Config::default())
        .with_config(crate::controller_config())
        .reconcile_on(crate::podcache::triggers::<ReplicaSet>(woken))
        .run(reconcile, crate::retry_on_error, ctx)
        .for_each(crate::log_event)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ready_since: Option<&str>) -> SlimPod {
        let conditions = match ready_since {
            Some(t) => json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]),
            None => json!([{"type": "Ready", "status": "False"}]),
        };
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Running", "conditions": conditions}}),
        )
        .expect("pod")
    }

    #[test]
    fn available_after_min_ready_seconds() {
        let ready_at = 1_700_000_000_000;
        let p = pod(Some("2023-11-14T22:13:20Z"));
        assert_eq!(availability(&p, 0, ready_at), Ok(()));
        assert_eq!(availability(&p, 5, ready_at + 1_000), Err(Some(4_000)));
        // Upstream's strict "ready time + minReadySeconds is before now".
        assert_eq!(availability(&p, 5, ready_at + 5_000), Err(Some(0)));
        assert_eq!(availability(&p, 5, ready_at + 5_001), Ok(()));
        assert_eq!(availability(&pod(None), 0, ready_at), Err(None));
    }
}
