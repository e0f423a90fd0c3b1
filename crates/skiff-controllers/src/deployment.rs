//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`, with revision annotations kubectl's `rollout history` and
//! `undo` read), rolled out with RollingUpdate (maxSurge/maxUnavailable) or Recreate, old
//! ReplicaSets pruned to `revisionHistoryLimit`, and the status and conditions `rollout status`
//! waits on. A replica count changed mid-rollout is shared out over the old and new ReplicaSets
//! in proportion, as upstream does; a paused deployment still follows its replica count.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::replicaset::selector_string;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
const MANAGER: &str = "deployment-controller";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API error: {0}")]
    Api(#[from] kube::Error),
    #[error("deployment {0} has no spec")]
    NoSpec(String),
}

struct Ctx {
    client: Client,
}

/// Upstream's `SafeEncodeString` alphabet (no vowels, no confusable characters).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template-hash: FNV-1a over the template's JSON, rendered like upstream (each decimal
/// digit of the 32-bit hash mapped through the safe alphabet).
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c9dc5;
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut feed = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    };
    bytes.iter().for_each(|b| feed(*b));
    // No collision yet reads the same whether the status says 0 or nothing: a set's first
    // status write (collisionCount 0) must not change its revision and roll its pods.
    if let Some(c) = collision_count.filter(|c| *c != 0) {
        c.to_string().bytes().for_each(feed);
    }
    h.to_string()
        .bytes()
        .map(|d| ALPHANUMS[usize::from(d) % ALPHANUMS.len()] as char)
        .collect()
}

/// The template without the hash label, to compare a ReplicaSet with the deployment.
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    t
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations().get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// Resolve maxSurge/maxUnavailable against `replicas` (surge rounds up, unavailable down).
fn resolve(v: Option<&IntOrString>, replicas: i32, round_up: bool, default_pct: i32) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i32 = s.trim_end_matches('%').parse().unwrap_or(default_pct);
            let x = i64::from(replicas) * i64::from(pct);
            (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
        }
        None => {
            let x = i64::from(replicas) * i64::from(default_pct);
            (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
        }
    }
}

async fn scale(
    api: &Api<ReplicaSet>,
    rs: &ReplicaSet,
    to: i32,
    deploy_replicas: i32,
    max_surge: i32,
) -> Result<(), kube::Error> {
    if spec_replicas(rs) == to
        && rs.annotations().get(DESIRED).map(String::as_str) == Some(&deploy_replicas.to_string())
    {
        return Ok(());
    }
    let patch = json!({
        "metadata": {"annotations": {DESIRED: deploy_replicas.to_string(), MAX_REPLICAS: (deploy_replicas + max_surge).to_string()}},
        "spec": {"replicas": to}
    });
    merge_rs(api, rs, patch).await.map(|_| ())
}

/// A merge patch of a ReplicaSet by this controller.
async fn merge_rs(api: &Api<ReplicaSet>, rs: &ReplicaSet, patch: serde_json::Value) -> Result<ReplicaSet, kube::Error> {
    api.patch(
        &rs.name_any(),
        &PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        },
        &Patch::Merge(&patch),
    )
    .await
}

fn created(rs: &ReplicaSet) -> (i64, String) {
    (
        rs.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .unwrap_or_default(),
        rs.name_any(),
    )
}

/// Upstream's `GetProportion`: this ReplicaSet's share of `to_add` (negative: of a removal),
/// from its size relative to the deployment's previous maximum (the max-replicas annotation),
/// never more than what is left to share out.
fn proportion(rs: &ReplicaSet, replicas: i32, max_surge: i32, to_add: i32, added: i32, status_replicas: i32) -> i32 {
    let size = spec_replicas(rs);
    if size == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas == 0 {
        -size
    } else {
        let annotated = rs
            .annotations()
            .get(MAX_REPLICAS)
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(status_replicas);
        if annotated <= 0 {
            0
        } else {
            (f64::from(size) * f64::from(replicas + max_surge) / f64::from(annotated)).round() as i32 - size
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Upstream's `scale`: follow a new `spec.replicas` without advancing the rollout (on a
/// scaling event, and always while paused). A sole active ReplicaSet (or, with none active,
/// the newest) takes the whole count; a saturated new ReplicaSet leaves the old ones at zero;
/// otherwise, in a rolling update, the difference to replicas + maxSurge is shared out over
/// the active ReplicaSets in proportion to their size, leftovers to the largest.
async fn scale_to_deployment(
    api: &Api<ReplicaSet>,
    replicas: i32,
    max_surge: i32,
    rolling: bool,
    new_rs: Option<&ReplicaSet>,
    olds: &[&ReplicaSet],
    status_replicas: i32,
) -> Result<(), kube::Error> {
    let all: Vec<&ReplicaSet> = olds.iter().copied().chain(new_rs).collect();
    let active: Vec<&ReplicaSet> = all.iter().copied().filter(|r| spec_replicas(r) > 0).collect();
    let sole = match active.len() {
        0 => new_rs.or_else(|| olds.iter().copied().max_by_key(|r| created(r))),
        1 => Some(active[0]),
        _ => None,
    };
    if let Some(rs) = sole {
        return scale(api, rs, replicas, replicas, max_surge).await;
    }
    let saturated = new_rs.is_some_and(|r| {
        spec_replicas(r) == replicas
            && r.annotations().get(DESIRED).map(String::as_str) == Some(&replicas.to_string())
            && available(r) == replicas
    });
    if saturated {
        for old in active
            .iter()
            .filter(|r| Some(r.name_any()) != new_rs.map(|n| n.name_any()))
        {
            scale(api, old, 0, replicas, max_surge).await?;
        }
        return Ok(());
    }
    if !rolling {
        return Ok(());
    }
    let allowed = if replicas > 0 { replicas + max_surge } else { 0 };
    let to_add = allowed - active.iter().map(|r| spec_replicas(r)).sum::<i32>();
    // Largest first; among equals the newest first when adding, the oldest when removing.
    let mut order = active;
    order.sort_by(|a, b| {
        spec_replicas(b).cmp(&spec_replicas(a)).then_with(|| {
            if to_add > 0 {
                created(b).cmp(&created(a))
            } else {
                created(a).cmp(&created(b))
            }
        })
    });
    let mut added = 0;
    let mut sizes = Vec::with_capacity(order.len());
    for rs in &order {
        let p = proportion(rs, replicas, max_surge, to_add, added, status_replicas);
        sizes.push(spec_replicas(rs) + p);
        added += p;
    }
    if let Some(first) = sizes.first_mut() {
        *first = (*first + to_add - added).max(0);
    }
    for (rs, size) in order.iter().zip(sizes) {
        scale(api, rs, size, replicas, max_surge).await?;
    }
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let uid = d.uid().unwrap_or_default();
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = d.spec.as_ref().ok_or_else(|| ReconcileError::NoSpec(name.clone()))?;
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let deploy_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut all: Vec<ReplicaSet> = rs_api
        .list(&ListParams::default().labels(&selector_string(&spec.selector)))
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    all.sort_by_key(revision);
    let template = spec.template.clone();
    let max_revision = all.iter().map(revision).max().unwrap_or(0);
    let new_idx = all.iter().position(|rs| {
        rs.spec.as_ref().and_then(|s| s.template.as_ref()).map(without_hash) == Some(without_hash(&template))
    });
    let paused = spec.paused == Some(true);

    let (max_surge, max_unavailable) = match spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) {
        Some("Recreate") => (0, replicas),
        _ => {
            let ru = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
            let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), replicas, true, 25);
            let mut unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, false, 25);
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            (surge, unavailable.min(replicas))
        }
    };

    // The ReplicaSet for the current template: found, revived (rollback), or created.
    let copied_annotations: BTreeMap<String, String> = d
        .annotations()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                REVISION
                    | "kubectl.kubernetes.io/last-applied-configuration"
                    | "deployment.kubernetes.io/revision-history"
                    | DESIRED
                    | MAX_REPLICAS
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let new_rs: Option<ReplicaSet> = match new_idx {
        Some(i) => {
            let rs = all[i].clone();
            if revision(&rs) < max_revision {
                // A rollback to this template: it becomes the newest revision.
                let mut ann = copied_annotations.clone();
                ann.insert(REVISION.into(), (max_revision + 1).to_string());
                let patched = merge_rs(&rs_api, &rs, json!({"metadata": {"annotations": ann}})).await?;
                all[i] = patched.clone();
                Some(patched)
            } else if rs.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
                != spec.min_ready_seconds.unwrap_or(0)
            {
                // minReadySeconds is not part of the template: the current ReplicaSet follows it.
                let patched = merge_rs(
                    &rs_api,
                    &rs,
                    json!({"spec": {"minReadySeconds": spec.min_ready_seconds.unwrap_or(0)}}),
                )
                .await?;
                all[i] = patched.clone();
                Some(patched)
            } else {
                Some(rs)
            }
        }
        None if paused => None,
        None => {
            let collision = d.status.as_ref().and_then(|s| s.collision_count);
            let hash = template_hash(&template, collision);
            let mut t = template.clone();
            t.metadata
                .get_or_insert_with(Default::default)
                .labels
                .get_or_insert_with(Default::default)
                .insert(HASH_LABEL.into(), hash.clone());
            let mut selector = spec.selector.clone();
            selector
                .match_labels
                .get_or_insert_with(Default::default)
                .insert(HASH_LABEL.into(), hash.clone());
            let mut ann = copied_annotations.clone();
            ann.insert(REVISION.into(), (max_revision + 1).to_string());
            ann.insert(DESIRED.into(), replicas.to_string());
            ann.insert(MAX_REPLICAS.into(), (replicas + max_surge).to_string());
            let mut labels = t.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.clone());
            let rs: ReplicaSet = serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": labels, "annotations": ann,
                             "ownerReferences": [d.controller_owner_ref(&()).expect("a Deployment from the API has a name and uid")]},
                "spec": {"replicas": 0, "minReadySeconds": spec.min_ready_seconds.unwrap_or(0), "selector": selector, "template": t}
            }))
            .expect("a ReplicaSet built from typed parts");
            match rs_api
                .create(
                    &PostParams {
                        field_manager: Some(MANAGER.into()),
                        ..Default::default()
                    },
                    &rs,
                )
                .await
            {
                Ok(created) => {
                    all.push(created.clone());
                    Some(created)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    // A different template hashed to the same name: bump the collision count and retry.
                    let c = collision.unwrap_or(0) + 1;
                    deploy_api
                        .patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(&json!({"status": {"collisionCount": c}})),
                        )
                        .await?;
                    return Ok(Action::requeue(Duration::from_millis(100)));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let new_name = new_rs.as_ref().map(|r| r.name_any());
    let olds: Vec<&ReplicaSet> = all.iter().filter(|r| Some(r.name_any()) != new_name).collect();

    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    // A scaling event: an active ReplicaSet was sized for a different replica count. (Recreate
    // needs none: it has one active ReplicaSet at a time, which its rollout sizes.)
    let scaling_event = !recreate
        && all
            .iter()
            .any(|r| spec_replicas(r) > 0 && r.annotations().get(DESIRED).is_some_and(|v| *v != replicas.to_string()));
    if paused || scaling_event {
        // Only the size follows the deployment; the rollout resumes on the next pass.
        let status_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        scale_to_deployment(
            &rs_api,
            replicas,
            max_surge,
            !recreate,
            new_rs.as_ref(),
            &olds,
            status_replicas,
        )
        .await?;
    } else if let Some(new_rs) = &new_rs {
        if recreate {
            for old in &olds {
                scale(&rs_api, old, 0, replicas, 0).await?;
            }
            let old_running: i32 = olds.iter().map(|r| r.status.as_ref().map_or(0, |s| s.replicas)).sum();
            if old_running == 0 {
                scale(&rs_api, new_rs, replicas, replicas, 0).await?;
            }
        } else {
            // Scale up the new ReplicaSet within maxSurge.
            let all_total: i32 = all.iter().map(spec_replicas).sum();
            let new_spec = spec_replicas(new_rs);
            let max_total = replicas + max_surge;
            let target_new = if new_spec > replicas {
                replicas
            } else if all_total < max_total {
                (new_spec + (max_total - all_total)).min(replicas)
            } else {
                new_spec
            };
            scale(&rs_api, new_rs, target_new, replicas, max_surge).await?;
            // Scale down old ReplicaSets within maxUnavailable: unhealthy pods first.
            let min_available = replicas - max_unavailable;
            let new_unavailable = (target_new - available(new_rs)).max(0);
            let total_after_up: i32 = all_total - new_spec + target_new;
            let mut cleanup_budget = (total_after_up - min_available - new_unavailable).max(0);
            let mut old_specs: Vec<(String, i32, i32)> = olds
                .iter()
                .map(|r| (r.name_any(), spec_replicas(r), available(r)))
                .collect();
            for (_, s, avail) in old_specs.iter_mut() {
                let unhealthy = (*s - *avail).max(0).min(cleanup_budget);
                *s -= unhealthy;
                cleanup_budget -= unhealthy;
            }
            let all_available: i32 = available(new_rs) + old_specs.iter().map(|(_, s, a)| (*a).min(*s)).sum::<i32>();
            let mut scale_down = (all_available - min_available).max(0);
            for (_, s, _) in old_specs.iter_mut() {
                let take = (*s).min(scale_down);
                *s -= take;
                scale_down -= take;
            }
            for (old, (_, s, _)) in olds.iter().zip(old_specs.iter()) {
                if spec_replicas(old) != *s {
                    scale(&rs_api, old, *s, replicas, max_surge).await?;
                }
            }
        }
    }
    if !paused {
        // Keep at most revisionHistoryLimit old, empty ReplicaSets.
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let empty: Vec<&&ReplicaSet> = olds
            .iter()
            .filter(|r| spec_replicas(r) == 0 && r.status.as_ref().map_or(0, |s| s.replicas) == 0)
            .collect();
        if empty.len() > limit {
            for r in empty.iter().take(empty.len() - limit) {
                let _ = rs_api.delete(&r.name_any(), &DeleteParams::background()).await;
            }
        }
    }

    // Status from what the ReplicaSets report.
    let st = |f: fn(&ReplicaSet) -> i32| -> i32 { all.iter().map(f).sum() };
    let total = st(|r| r.status.as_ref().map_or(0, |s| s.replicas));
    let ready = st(|r| r.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0));
    let avail = st(available);
    let updated = new_rs
        .as_ref()
        .map_or(0, |r| r.status.as_ref().map_or(0, |s| s.replicas));
    let min_available = replicas - max_unavailable;
    let complete = new_rs.as_ref().is_some_and(|r| {
        let s = r.status.as_ref();
        s.map_or(0, |s| s.replicas) == replicas
            && s.and_then(|s| s.available_replicas).unwrap_or(0) == replicas
            && s.and_then(|s| s.observed_generation) == r.metadata.generation
    }) && total == replicas;
    let old_conds = d.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let cond = |ty: &str, status: &str, reason: &str, message: String| {
        let prev = old_conds.iter().find(|c| c.type_ == ty);
        let transition = match prev {
            Some(p) if p.status == status => p
                .last_transition_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_else(now),
            _ => now(),
        };
        let update = match prev {
            Some(p) if p.status == status && p.reason.as_deref() == Some(reason) => {
                p.last_update_time.as_ref().map(|t| t.0.to_string()).unwrap_or_else(now)
            }
            _ => now(),
        };
        json!({"type": ty, "status": status, "reason": reason, "message": message, "lastTransitionTime": transition, "lastUpdateTime": update})
    };
    let available_cond = if avail >= min_available {
        cond(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        cond(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let rs_name = new_name.clone().unwrap_or_default();
    let progressing = if paused {
        cond(
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
        )
    } else if complete {
        cond(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        )
    } else {
        // No progress for progressDeadlineSeconds: the rollout has failed.
        let deadline = spec.progress_deadline_seconds.unwrap_or(600);
        let last = old_conds.iter().find(|c| c.type_ == "Progressing");
        let stalled = last.is_some_and(|c| {
            c.reason.as_deref() == Some("ReplicaSetUpdated")
                && c.last_update_time.as_ref().is_some_and(|t| {
                    let since = chrono::Utc::now().timestamp() - t.0.as_second();
                    since > i64::from(deadline)
                })
        }) && d.status.as_ref().and_then(|s| s.updated_replicas).unwrap_or(0) == updated
            && d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0) == avail;
        if stalled || last.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) && !complete {
            cond(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            )
        } else {
            cond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
            )
        }
    };
    let status = json!({"status": {
        "observedGeneration": d.metadata.generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": avail,
        "unavailableReplicas": (replicas - avail).max(0),
        "conditions": [available_cond, progressing],
    }});
    // Record the revision on the deployment itself (kubectl shows it).
    let rev = new_rs.as_ref().map(revision).unwrap_or(0);
    if rev > 0 && d.annotations().get(REVISION) != Some(&rev.to_string()) {
        deploy_api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"annotations": {REVISION: rev.to_string()}}})),
            )
            .await?;
        // The annotation bumps the generation; the next pass records the status.
        return Ok(Action::requeue(Duration::from_millis(50)));
    }
    let current = serde_json::to_value(d.status.clone().unwrap_or_default()).unwrap_or_default();
    let want = &status["status"];
    let differs = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ]
    .iter()
    .any(|k| current.get(*k).cloned().unwrap_or(json!(0)) != want.get(*k).cloned().unwrap_or(json!(0)))
        || current["conditions"].as_array().map(|cs| {
            cs.iter()
                .map(|c| (c["type"].clone(), c["status"].clone(), c["reason"].clone()))
                .collect::<Vec<_>>()
        }) != want["conditions"].as_array().map(|cs| {
            cs.iter()
                .map(|c| (c["type"].clone(), c["status"].clone(), c["reason"].clone()))
                .collect::<Vec<_>>()
        });
    if differs {
        deploy_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    if complete || paused {
        Ok(Action::requeue(Duration::from_secs(300)))
    } else {
        // Re-check the progress deadline while a rollout runs.
        Ok(Action::requeue(Duration::from_secs(5)))
    }
}

pub async fn run(client: Client) -> anyhow::Result<()> {
    let d_api: Api<Deployment> = Api::all(client.clone());
    let rs_api: Api<ReplicaSet> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    Controller::new(d_api, watcher::Config::default())
        .with_config(crate::controller_config())
        .owns(rs_api, watcher::Config::default())
        .run(reconcile, crate::retry_on_error, ctx)
        .for_each(crate::log_event)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailable_round_like_upstream() {
        assert_eq!(resolve(Some(&IntOrString::String("25%".into())), 10, true, 25), 3);
        assert_eq!(resolve(Some(&IntOrString::String("25%".into())), 10, false, 25), 2);
        assert_eq!(resolve(None, 1, true, 25), 1);
        assert_eq!(resolve(None, 1, false, 25), 0);
        assert_eq!(resolve(Some(&IntOrString::Int(0)), 5, false, 25), 0);
    }

    fn rs(replicas: i32, max_replicas: Option<i32>) -> ReplicaSet {
        let mut ann = serde_json::Map::new();
        if let Some(m) = max_replicas {
            ann.insert(MAX_REPLICAS.into(), json!(m.to_string()));
        }
        serde_json::from_value(
            json!({"metadata": {"name": "r", "annotations": ann}, "spec": {"replicas": replicas, "selector": {}}}),
        )
        .expect("rs")
    }

    #[test]
    fn proportions_follow_upstream() {
        // 4 → 8 replicas (maxSurge 1) with old 4 / new 1, both sized for a maximum of 5:
        // 4 more fit; the old one gets round(4 × 9 / 5) − 4 = 3, the new one what is left.
        let (old, new) = (rs(4, Some(5)), rs(1, Some(5)));
        assert_eq!(proportion(&old, 8, 1, 4, 0, 5), 3);
        assert_eq!(proportion(&new, 8, 1, 4, 3, 5), 1);
        // Never more than what is left to share out, in either direction.
        assert_eq!(proportion(&new, 8, 1, 4, 4, 5), 0);
        assert_eq!(proportion(&old, 2, 1, -2, 0, 5), -2);
        // Scaling to zero empties every ReplicaSet.
        assert_eq!(proportion(&old, 0, 1, -5, 0, 5), -4);
        // Without the annotation the deployment's observed size stands in.
        assert_eq!(proportion(&rs(2, None), 8, 1, 5, 0, 4), 3);
        assert_eq!(proportion(&rs(0, Some(5)), 8, 1, 4, 0, 5), 0);
    }

    #[test]
    fn template_hash_is_stable_and_template_sensitive() {
        let t: PodTemplateSpec = serde_json::from_value(
            json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}),
        )
        .expect("t");
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&t, None));
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)));
        let mut t2 = t.clone();
        t2.spec.as_mut().expect("spec").containers[0].image = Some("i:2".into());
        assert_ne!(h, template_hash(&t2, None));
        assert_ne!(h, template_hash(&t, Some(1)));
        assert_eq!(
            h,
            template_hash(&t, Some(0)),
            "a first status (collisionCount 0) keeps the revision"
        );
    }
}
