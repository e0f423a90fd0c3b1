//! The StatefulSet controller: pods `<set>-<ordinal>` with stable names and hostnames, one
//! PersistentVolumeClaim per `volumeClaimTemplates` entry and ordinal (`<claim>-<set>-<ordinal>`),
//! OrderedReady (one at a time, in order; scale down in reverse) or Parallel management,
//! RollingUpdate with `partition` (replacing pods from the highest ordinal down),
//! ControllerRevisions for `rollout history`, and `persistentVolumeClaimRetentionPolicy`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use skiff_client::LeanMeta;

use crate::replicaset::selector_string;

const REVISION_LABEL: &str = "controller-revision-hash";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
const MANAGER: &str = "statefulset-controller";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API error: {0}")]
    Api(#[from] kube::Error),
    #[error("statefulset {0} has no spec")]
    NoSpec(String),
}

struct Ctx {
    client: Client,
}

fn ordinal(set: &str, pod: &Pod) -> Option<i32> {
    pod.name_any().strip_prefix(&format!("{set}-"))?.parse().ok()
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_revision(p: &Pod) -> String {
    p.labels().get(REVISION_LABEL).cloned().unwrap_or_default()
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let uid = set.uid().unwrap_or_default();
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = set.spec.as_ref().ok_or_else(|| ReconcileError::NoSpec(name.clone()))?;
    let client = &ctx.client;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let cr_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let selector = selector_string(&spec.selector);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let owner = set
        .controller_owner_ref(&())
        .expect("a StatefulSet from the API has a name and uid");

    // The revision of the current template, recorded as a ControllerRevision.
    let hash = crate::deployment::template_hash(&spec.template, set.status.as_ref().and_then(|s| s.collision_count));
    let update_revision = format!("{name}-{hash}");
    let revisions: Vec<ControllerRevision> = cr_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    if !revisions.iter().any(|r| r.name_any() == update_revision) {
        let next = revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
        let mut labels = spec.selector.match_labels.clone().unwrap_or_default();
        labels.insert(REVISION_LABEL.into(), hash.clone());
        let cr: ControllerRevision = serde_json::from_value(json!({
            "metadata": {"name": update_revision, "namespace": ns, "labels": labels, "ownerReferences": [owner.clone()]},
            "data": {"spec": {"template": spec.template, "$patch": "replace"}},
            "revision": next,
        }))
        .expect("a ControllerRevision from typed parts");
        match cr_api
            .create(
                &PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                },
                &cr,
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;

    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    let by_ordinal: BTreeMap<i32, &Pod> = pods.iter().filter_map(|p| ordinal(&name, p).map(|o| (o, p))).collect();
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let claims = spec.volume_claim_templates.clone().unwrap_or_default();
    let retention = spec
        .persistent_volume_claim_retention_policy
        .clone()
        .unwrap_or_default();

    // Create what is missing, in order (OrderedReady waits for each to be Running and Ready).
    let mut blocked = false;
    for i in 0..replicas {
        match by_ordinal.get(&i) {
            Some(p) if is_ready(p) => continue,
            Some(_) => {
                if !parallel {
                    blocked = true;
                    break;
                }
                continue;
            }
            None => {}
        }
        let pod_name = format!("{name}-{i}");
        for c in &claims {
            let claim_name = format!("{}-{pod_name}", c.metadata.name.clone().unwrap_or_default());
            if pvc_api.get_opt(&claim_name).await?.is_none() {
                let mut labels = spec.selector.match_labels.clone().unwrap_or_default();
                labels.extend(c.metadata.labels.clone().unwrap_or_default());
                let mut meta = json!({"name": claim_name, "namespace": ns, "labels": labels});
                if retention.when_deleted.as_deref() == Some("Delete") {
                    let mut o = owner.clone();
                    o.controller = None;
                    o.block_owner_deletion = None;
                    meta["ownerReferences"] = json!([o]);
                }
                let pvc: PersistentVolumeClaim =
                    serde_json::from_value(json!({"metadata": meta, "spec": c.spec})).expect("a PVC from typed parts");
                match pvc_api
                    .create(
                        &PostParams {
                            field_manager: Some(MANAGER.into()),
                            ..Default::default()
                        },
                        &pvc,
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let mut t = spec.template.clone();
        let meta = t.metadata.get_or_insert_with(Default::default);
        let labels = meta.labels.get_or_insert_with(Default::default);
        labels.insert(REVISION_LABEL.into(), update_revision.clone());
        labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
        labels.insert(POD_INDEX_LABEL.into(), i.to_string());
        let mut pod_spec = serde_json::to_value(t.spec.clone().unwrap_or_default()).unwrap_or_default();
        pod_spec["hostname"] = json!(pod_name);
        if !spec.service_name.as_deref().unwrap_or("").is_empty() {
            pod_spec["subdomain"] = json!(spec.service_name);
        }
        let mut volumes = pod_spec["volumes"].as_array().cloned().unwrap_or_default();
        for c in &claims {
            let cn = c.metadata.name.clone().unwrap_or_default();
            if !volumes.iter().any(|v| v["name"] == json!(cn)) {
                volumes.push(json!({"name": cn, "persistentVolumeClaim": {"claimName": format!("{cn}-{pod_name}")}}));
            }
        }
        if !volumes.is_empty() {
            pod_spec["volumes"] = json!(volumes);
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": pod_name, "namespace": ns, "labels": labels, "annotations": meta.annotations, "ownerReferences": [owner.clone()]},
            "spec": pod_spec,
        }))
        .expect("a Pod from typed parts");
        match pods_api
            .create(
                &PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                },
                &pod,
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        if !parallel {
            blocked = true;
            break;
        }
    }

    // Scale down from the highest ordinal (OrderedReady: one at a time, only when the rest are ready).
    let extra: Vec<(&i32, &&Pod)> = by_ordinal.iter().filter(|(o, _)| **o >= replicas).collect();
    if !extra.is_empty() && (parallel || !blocked) {
        let victims: Vec<(&i32, &&Pod)> = if parallel {
            extra.clone()
        } else {
            extra.iter().rev().take(1).cloned().collect()
        };
        for (o, p) in victims {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match pods_api.delete(&p.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            if retention.when_scaled.as_deref() == Some("Delete") {
                for c in &claims {
                    let claim_name = format!("{}-{name}-{o}", c.metadata.name.clone().unwrap_or_default());
                    let _ = pvc_api.delete(&claim_name, &DeleteParams::default()).await;
                }
            }
        }
    }

    // Rolling update: replace the highest-ordinal outdated pod at or above the partition once
    // everything is ready.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let all_ready = (0..replicas).all(|i| by_ordinal.get(&i).is_some_and(|p| is_ready(p)));
    if rolling && all_ready && extra.is_empty() {
        if let Some((_, p)) = by_ordinal
            .iter()
            .rev()
            .find(|(o, p)| **o >= partition && **o < replicas && pod_revision(p) != update_revision)
        {
            pods_api.delete(&p.name_any(), &DeleteParams::default()).await?;
        }
    }

    // Status.
    let live: Vec<&&Pod> = by_ordinal
        .values()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let ready = live.iter().filter(|p| is_ready(p)).count() as i32;
    let updated = live.iter().filter(|p| pod_revision(p) == update_revision).count() as i32;
    let current_revision = if updated == replicas && live.len() as i32 == replicas {
        update_revision.clone()
    } else {
        set.status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .unwrap_or_else(|| update_revision.clone())
    };
    let current = live.iter().filter(|p| pod_revision(p) == current_revision).count() as i32;
    let status = json!({"status": {
        "observedGeneration": set.metadata.generation,
        "replicas": live.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "collisionCount": set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0),
    }});
    let have = serde_json::to_value(set.status.clone().unwrap_or_default()).unwrap_or_default();
    let differs = [
        "observedGeneration",
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "currentReplicas",
        "updatedReplicas",
        "currentRevision",
        "updateRevision",
    ]
    .iter()
    .any(|k| have.get(*k).cloned().unwrap_or(json!(0)) != status["status"][*k]);
    if differs {
        sts_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    // Prune old revisions no pod uses.
    let mut old: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| r.name_any() != update_revision && r.name_any() != current_revision)
        .collect();
    old.retain(|r| !live.iter().any(|p| pod_revision(p) == r.name_any()));
    if old.len() > limit {
        old.sort_by_key(|r| r.revision);
        for r in old.iter().take(old.len() - limit) {
            let _ = cr_api.delete(&r.name_any(), &DeleteParams::default()).await;
        }
    }
    if blocked || !all_ready || !extra.is_empty() {
        Ok(Action::requeue(Duration::from_secs(2)))
    } else {
        Ok(Action::requeue(Duration::from_secs(300)))
    }
}

/// Run the controller; `pods` are the pods that changed (owners are found from metadata alone;
/// whole pods are read per reconcile).
pub async fn run(
    client: Client,
    pods: impl futures::Stream<Item = Arc<LeanMeta<Pod>>> + Send + 'static,
) -> anyhow::Result<()> {
    let api: Api<StatefulSet> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    Controller::new(api, watcher::Config::default())
        .with_config(crate::controller_config())
        .owns_shared_stream(pods)
        .run(reconcile, crate::retry_on_error, ctx)
        .for_each(crate::log_event)
        .await;
    Ok(())
}
