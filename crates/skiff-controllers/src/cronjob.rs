//! The CronJob controller: creates a Job for each scheduled time (standard 5-field cron
//! schedules, UTC), honouring `suspend`, `startingDeadlineSeconds`, `concurrencyPolicy`
//! (Allow/Forbid/Replace) and the successful/failed history limits. Missed runs while the
//! controller was down: only the most recent one is started, as upstream does, and only if it
//! is within `startingDeadlineSeconds`. `lastScheduleTime` records runs that started: a run
//! held back by `Forbid` starts when the active Job finishes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
const MANAGER: &str = "cronjob-controller";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API error: {0}")]
    Api(#[from] kube::Error),
}

struct Ctx {
    client: Client,
}

fn job_state(j: &Job) -> Option<&str> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn to_chrono(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), 0)
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let uid = cj.uid().unwrap_or_default();
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(spec) = cj.spec.clone() else {
        return Ok(Action::await_change());
    };
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let cj_api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let mut jobs: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    jobs.sort_by_key(|j| {
        j.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0)
    });

    let schedule: croner::Cron = match spec.schedule.parse() {
        Ok(c) => c,
        Err(e) => {
            crate::events::record(
                &ctx.client,
                cj.as_ref(),
                "Warning",
                "UnparseableSchedule",
                &format!("unparseable schedule {:?}: {e}", spec.schedule),
                MANAGER,
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let now = Utc::now();
    let mut earliest = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .or(cj.metadata.creation_timestamp.as_ref())
        .and_then(to_chrono)
        .unwrap_or(now);
    // Nothing older than startingDeadlineSeconds is started (upstream's mostRecentScheduleTime).
    if let Some(cutoff) = spec
        .starting_deadline_seconds
        .and_then(chrono::Duration::try_seconds)
        .and_then(|d| now.checked_sub_signed(d))
    {
        earliest = earliest.max(cutoff);
    }
    // The most recent scheduled time since the last run, if any.
    let due = schedule
        .find_previous_occurrence(&now, true)
        .ok()
        .filter(|t| *t > earliest);
    let mut last_schedule = cj.status.as_ref().and_then(|s| s.last_schedule_time.clone());
    if let (Some(t), false) = (due, spec.suspend == Some(true)) {
        let active: Vec<&Job> = jobs
            .iter()
            .filter(|j| job_state(j).is_none() && j.metadata.deletion_timestamp.is_none())
            .collect();
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if policy == "Forbid" && !active.is_empty() {
            // Held back while the previous run is going, and not recorded as run: it starts
            // when that one finishes, if it is still the latest and within the deadline.
        } else {
            if policy == "Replace" {
                for j in &active {
                    let _ = jobs_api.delete(&j.name_any(), &DeleteParams::background()).await;
                }
            }
            let job_name = format!("{name}-{}", t.timestamp() / 60);
            let tpl = spec.job_template.clone();
            let mut meta = tpl.metadata.clone().unwrap_or_default();
            meta.name = Some(job_name.clone());
            meta.namespace = Some(ns.clone());
            meta.annotations.get_or_insert_with(Default::default).insert(
                SCHEDULED_ANNOTATION.into(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
            meta.owner_references = Some(vec![cj
                .controller_owner_ref(&())
                .expect("a CronJob from the API has a name and uid")]);
            let job = Job {
                metadata: meta,
                spec: tpl.spec.clone(),
                status: None,
            };
            match jobs_api
                .create(
                    &PostParams {
                        field_manager: Some(MANAGER.into()),
                        ..Default::default()
                    },
                    &job,
                )
                .await
            {
                Ok(j) => {
                    crate::events::record(
                        &ctx.client,
                        cj.as_ref(),
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created job {job_name}"),
                        MANAGER,
                    )
                    .await;
                    jobs.push(j);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            last_schedule = serde_json::from_value(json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))).ok();
        }
    }
    // History limits: remove the oldest finished jobs beyond them.
    for (state, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Job> = jobs.iter().filter(|j| job_state(j) == Some(state)).collect();
        if done.len() > limit.max(0) as usize {
            for j in done.iter().take(done.len() - limit.max(0) as usize) {
                let _ = jobs_api.delete(&j.name_any(), &DeleteParams::background()).await;
            }
        }
    }
    let active_refs: Vec<serde_json::Value> = jobs
        .iter()
        .filter(|j| job_state(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .map(
            |j| json!({"apiVersion": "batch/v1", "kind": "Job", "name": j.name_any(), "namespace": ns, "uid": j.uid()}),
        )
        .collect();
    let last_success = jobs
        .iter()
        .filter(|j| job_state(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.clone())
        .max_by_key(|t| t.0.as_second());
    let status = json!({"status": {"active": active_refs, "lastScheduleTime": last_schedule, "lastSuccessfulTime": last_success}});
    let have = serde_json::to_value(cj.status.clone().unwrap_or_default()).unwrap_or_default();
    let have_active = have["active"].as_array().map(|a| a.len()).unwrap_or(0);
    if have_active != active_refs.len()
        || have["lastScheduleTime"] != status["status"]["lastScheduleTime"]
        || have["lastSuccessfulTime"] != status["status"]["lastSuccessfulTime"]
    {
        cj_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    // Wake for the next scheduled time (and at least every minute for job state changes).
    let next = schedule
        .find_next_occurrence(&now, false)
        .ok()
        .map(|t| (t - now).num_milliseconds().max(100) as u64)
        .unwrap_or(60_000);
    Ok(Action::requeue(Duration::from_millis(next.min(60_000))))
}

pub async fn run(client: Client) -> anyhow::Result<()> {
    let api: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    Controller::new(api, watcher::Config::default())
        .with_config(crate::controller_config())
        .owns(jobs, watcher::Config::default())
        .run(reconcile, crate::retry_on_error, ctx)
        .for_each(crate::log_event)
        .await;
    Ok(())
}
