//! The Job controller: runs pods until `completions` succeed (`parallelism` at a time; Indexed
//! mode gives each pod its completion index), replaces failed pods after an exponential
//! backoff (10 s, 20 s, 40 s … up to 10 min, as upstream), gives up after `backoffLimit`
//! failures or `activeDeadlineSeconds`, records `Complete`/`Failed` conditions, and deletes
//! finished jobs after `ttlSecondsAfterFinished`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use skiff_client::LeanMeta;

const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
const MANAGER: &str = "job-controller";
/// Upstream's DefaultJobPodFailureBackOff and MaxJobPodFailureBackOff.
const POD_FAILURE_BACKOFF_MS: i64 = 10_000;
const MAX_POD_FAILURE_BACKOFF_MS: i64 = 600_000;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API error: {0}")]
    Api(#[from] kube::Error),
    #[error("job {0} has no spec")]
    NoSpec(String),
}

struct Ctx {
    client: Client,
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// When a pod finished, in milliseconds since the epoch (upstream's `getFinishedTime`): its
/// containers' last finish if all have terminated, else its Ready=False transition, else its
/// deletion, else its creation.
fn finished_at(p: &Pod) -> i64 {
    let ms = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| t.0.as_millisecond();
    let status = p.status.as_ref();
    let containers: Option<Vec<i64>> = status
        .and_then(|s| s.container_statuses.as_ref())
        .filter(|cs| !cs.is_empty())
        .and_then(|cs| {
            cs.iter()
                .map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(ms))
                .collect()
        });
    if let Some(t) = containers.and_then(|ts| ts.into_iter().max()) {
        return t;
    }
    let ready_false = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "False"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(ms);
    if let Some(t) = ready_false {
        return t;
    }
    if let Some(t) = p.metadata.deletion_timestamp.as_ref() {
        return ms(t) - p.metadata.deletion_grace_period_seconds.unwrap_or(0) * 1000;
    }
    p.metadata.creation_timestamp.as_ref().map(ms).unwrap_or_default()
}

/// How long to wait before creating pods, after failures (upstream's backoff record): 10 s
/// doubled for each failure since the last success, capped at 10 min, counted from the last
/// failure.
fn backoff_remaining(pods: &[Pod], now_ms: i64) -> Option<Duration> {
    let last_success = pods.iter().filter(|p| phase(p) == "Succeeded").map(finished_at).max();
    let failures: Vec<i64> = pods
        .iter()
        .filter(|p| phase(p) == "Failed")
        .map(finished_at)
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let last_failure = failures.iter().max()?;
    let doublings = (failures.len() - 1).min(16) as u32;
    let backoff = (POD_FAILURE_BACKOFF_MS << doublings).min(MAX_POD_FAILURE_BACKOFF_MS);
    let remaining = last_failure + backoff - now_ms;
    (remaining > 0).then(|| Duration::from_millis(remaining as u64))
}

fn finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = job.spec.as_ref().ok_or_else(|| ReconcileError::NoSpec(name.clone()))?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let status = job.status.clone().unwrap_or_default();

    if let Some(done) = finished(&job) {
        // Time to live after finishing.
        if let (Some(ttl), Some(t)) = (
            spec.ttl_seconds_after_finished,
            status.completion_time.as_ref().or(status
                .conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_ == done))
                .and_then(|c| c.last_transition_time.as_ref())),
        ) {
            let age = chrono::Utc::now().timestamp() - t.0.as_second();
            if age >= i64::from(ttl) {
                jobs.delete(&name, &DeleteParams::background()).await?;
                return Ok(Action::await_change());
            }
            return Ok(Action::requeue(Duration::from_secs(
                (i64::from(ttl) - age).max(1) as u64
            )));
        }
        return Ok(Action::await_change());
    }

    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}")))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    let succeeded: Vec<&Pod> = pods.iter().filter(|p| phase(p) == "Succeeded").collect();
    let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i32;
    let active: Vec<&Pod> = pods
        .iter()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none())
        .collect();
    let ready = active
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let succeeded_indexes: BTreeSet<i32> = succeeded
        .iter()
        .filter_map(|p| p.annotations().get(INDEX_ANNOTATION).and_then(|i| i.parse().ok()))
        .collect();
    let done_count = if indexed {
        succeeded_indexes.len() as i32
    } else {
        succeeded.len() as i32
    };
    let start_time = status.start_time.as_ref().map(|t| t.0.to_string()).unwrap_or_else(now);

    let mut condition: Option<(&str, &str, String)> = None;
    let mut backoff: Option<Duration> = None;
    if completions.is_some_and(|c| done_count >= c) || (completions.is_none() && done_count > 0 && active.is_empty()) {
        condition = Some((
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods".into(),
        ));
    } else if failed > spec.backoff_limit.unwrap_or(6) {
        condition = Some((
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".into(),
        ));
    } else if let Some(deadline) = spec.active_deadline_seconds {
        let started = status
            .start_time
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or_else(|| chrono::Utc::now().timestamp());
        if chrono::Utc::now().timestamp() - started >= deadline {
            condition = Some((
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            ));
        }
    }

    if condition.is_some() {
        for p in &active {
            let _ = pods_api.delete(&p.name_any(), &DeleteParams::background()).await;
        }
    } else if spec.suspend != Some(true) {
        let remaining = completions.map(|c| c - done_count).unwrap_or(parallelism).max(0);
        let want = parallelism.min(remaining);
        let mut missing = want - active.len() as i32;
        if missing > 0 {
            if let Some(wait) = backoff_remaining(&pods, chrono::Utc::now().timestamp_millis()) {
                // Failed pods are replaced only after the backoff.
                missing = 0;
                backoff = Some(wait);
            }
        }
        let busy: BTreeSet<i32> = active
            .iter()
            .filter_map(|p| p.annotations().get(INDEX_ANNOTATION).and_then(|i| i.parse().ok()))
            .collect();
        let mut free_indexes =
            (0..completions.unwrap_or(0)).filter(|i| !succeeded_indexes.contains(i) && !busy.contains(i));
        for _ in 0..missing.max(0) {
            let mut t = spec.template.clone();
            let meta = t.metadata.get_or_insert_with(Default::default);
            let mut generate = format!("{name}-");
            if indexed {
                let Some(i) = free_indexes.next() else { break };
                meta.annotations
                    .get_or_insert_with(Default::default)
                    .insert(INDEX_ANNOTATION.into(), i.to_string());
                meta.labels
                    .get_or_insert_with(Default::default)
                    .insert(INDEX_ANNOTATION.into(), i.to_string());
                generate = format!("{name}-{i}-");
            }
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"generateName": generate, "namespace": ns, "labels": meta.labels, "annotations": meta.annotations,
                             "ownerReferences": [job.controller_owner_ref(&()).expect("a Job from the API has a name and uid")]},
                "spec": t.spec,
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
    } else {
        for p in &active {
            let _ = pods_api.delete(&p.name_any(), &DeleteParams::background()).await;
        }
    }

    let mut new_status = json!({
        "startTime": start_time,
        "active": if condition.is_some() { 0 } else { active.len() },
        "ready": ready,
        "succeeded": done_count,
        "failed": failed,
    });
    if indexed && !succeeded_indexes.is_empty() {
        new_status["completedIndexes"] = json!(succeeded_indexes
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(","));
    }
    if let Some((ty, reason, message)) = &condition {
        let ts = now();
        let target = if *ty == "Complete" {
            "SuccessCriteriaMet"
        } else {
            "FailureTarget"
        };
        new_status["conditions"] = json!([
            {"type": target, "status": "True", "reason": reason, "message": message, "lastProbeTime": ts, "lastTransitionTime": ts},
            {"type": ty, "status": "True", "reason": reason, "message": message, "lastProbeTime": ts, "lastTransitionTime": ts},
        ]);
        if *ty == "Complete" {
            new_status["completionTime"] = json!(ts);
        }
        crate::events::record(
            &ctx.client,
            job.as_ref(),
            if *ty == "Complete" { "Normal" } else { "Warning" },
            if *ty == "Complete" { "Completed" } else { reason },
            message,
            MANAGER,
        )
        .await;
    }
    let have = serde_json::to_value(&status).unwrap_or_default();
    let differs = condition.is_some()
        || ["active", "ready", "succeeded", "failed"]
            .iter()
            .any(|k| have.get(*k).cloned().unwrap_or(json!(0)) != new_status[*k])
        || status.start_time.is_none();
    if differs {
        jobs.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": new_status})),
        )
        .await?;
    }
    let recheck = match spec.active_deadline_seconds {
        Some(d) if condition.is_none() => Duration::from_secs(d.clamp(1, 30) as u64),
        _ => Duration::from_secs(60),
    };
    Ok(Action::requeue(match backoff {
        Some(b) => recheck.min(b + Duration::from_millis(100)),
        None => recheck,
    }))
}

/// Run the controller; `pods` are the pods that changed (owners are found from metadata alone;
/// whole pods are read per reconcile).
pub async fn run(
    client: Client,
    pods: impl futures::Stream<Item = Arc<LeanMeta<Pod>>> + Send + 'static,
) -> anyhow::Result<()> {
    let api: Api<Job> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    Controller::new(api, watcher::Config::default())
        .with_config(crate::controller_config())
        .owns_shared_stream(pods)
        .run(reconcile, crate::retry_on_error, ctx)
        .for_each(crate::log_event)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, finished: &str) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p", "creationTimestamp": "2023-11-14T22:00:00Z"}, "status": {
            "phase": phase,
            "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                                   "state": {"terminated": {"exitCode": 1, "finishedAt": finished}}}]}}),
        )
        .expect("pod")
    }

    #[test]
    fn backoff_doubles_per_failure_since_the_last_success() {
        // 2023-11-14T22:13:20Z
        let t = 1_700_000_000_000;
        let one = [pod("Failed", "2023-11-14T22:13:20Z")];
        assert_eq!(backoff_remaining(&one, t + 4_000), Some(Duration::from_secs(6)));
        assert_eq!(backoff_remaining(&one, t + 10_000), None);
        let two = [
            pod("Failed", "2023-11-14T22:13:10Z"),
            pod("Failed", "2023-11-14T22:13:20Z"),
        ];
        assert_eq!(backoff_remaining(&two, t), Some(Duration::from_secs(20)));
        // A success resets the count; failures before it no longer matter.
        let after_success = [
            pod("Failed", "2023-11-14T22:13:00Z"),
            pod("Succeeded", "2023-11-14T22:13:10Z"),
            pod("Failed", "2023-11-14T22:13:20Z"),
        ];
        assert_eq!(backoff_remaining(&after_success, t), Some(Duration::from_secs(10)));
        assert_eq!(backoff_remaining(&[pod("Succeeded", "2023-11-14T22:13:20Z")], t), None);
        // Capped at 10 minutes.
        let many: Vec<Pod> = (0..12).map(|_| pod("Failed", "2023-11-14T22:13:20Z")).collect();
        assert_eq!(backoff_remaining(&many, t), Some(Duration::from_secs(600)));
    }
}
