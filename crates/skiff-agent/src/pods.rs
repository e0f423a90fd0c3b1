//! Pods bound to this node, run like the kubelet runs them: one worker per pod that brings up
//! the sandbox (network namespace, address, hosts and resolver files, volumes), pulls images,
//! runs init containers in order and then the containers through [`ContainerManager`], restarts
//! them per `restartPolicy` with exponential back-off, reports status as kubectl shows it, and
//! on deletion takes them out of the Services' rotation ([`crate::drain`]) and stops containers
//! gracefully (SIGTERM, grace period, SIGKILL) before the pod object goes.
//!
//! Containers are named `<pod-uid>-<container>-<attempt>`; their shims outlive the agent, so a
//! restarted agent finds each pod's containers on disk and carries on without restarting them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use skiff_net::NodeNetwork;
use skiff_runtime::bundle::{self, NamespaceMode, PodContext};
use skiff_runtime::{
    qos, ContainerManager, ContainerRequest, DockerCredentials, ImageRecord, ImageRef, ImageStore, NoProgress,
    PullPolicy, Puller, ShimState, ShimStatus,
};
use tokio::sync::watch;

use crate::node::AgentConfig;
use crate::probes;

/// What every pod worker shares.
struct Ctx {
    client: Client,
    cfg: Arc<AgentConfig>,
    net: Arc<NodeNetwork>,
    node_ip: IpAddr,
    store: ImageStore,
    puller: Puller,
    containers: ContainerManager,
    /// The node's memory in bytes (for OOM score adjustments).
    node_memory: i128,
    /// The cluster's EndpointSlices (the service proxy's watch): a terminating pod leaves the
    /// rotation before it is stopped ([`crate::drain`]).
    slices: Store<EndpointSlice>,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn now() -> String {
    rfc3339(chrono::Utc::now())
}

/// Record an event about `pod` (what `kubectl describe pod` shows).
async fn event(client: &Client, pod: &Pod, ty: &str, reason: &str, message: &str) {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let involved =
        json!({"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "namespace": ns, "uid": pod.uid()});
    crate::events::record(client, &ns, involved, ty, reason, message).await;
}

/// Run `f` on the blocking pool (the container manager and IPAM are synchronous).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// One container's life on this node, as the worker tracks it.
#[derive(Default)]
struct Track {
    /// The current attempt (its runtime ID ends in it); `None` before the first start.
    attempt: Option<u32>,
    /// Why it is waiting, when it is not running (`ErrImagePull`, `CrashLoopBackOff` …).
    waiting: Option<(String, String)>,
    /// Not to be (re)started before this.
    not_before: Option<Instant>,
    /// Consecutive failed pulls or restarts, for the back-off.
    failures: u32,
    /// Probes of the current attempt.
    startup: probes::ProbeState,
    liveness: probes::ProbeState,
    readiness: probes::ProbeState,
}

impl Track {
    /// Started as far as the startup probe is concerned.
    fn started(&self, c: &Container) -> bool {
        c.startup_probe.is_none() || self.startup.verdict == Some(true)
    }

    /// Ready as far as the probes are concerned.
    fn ready(&self, c: &Container) -> bool {
        self.started(c) && (c.readiness_probe.is_none() || self.readiness.verdict == Some(true))
    }
}

/// How often a running pod's config map, secret and downward API volumes are rewritten.
const VOLUME_REFRESH: Duration = Duration::from_secs(10);

fn backoff(failures: u32) -> Duration {
    Duration::from_secs((10u64 << failures.saturating_sub(1).min(5)).min(300))
}

fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    format!("{uid}-{name}-{attempt}")
}

/// A pod worker's memory between syncs.
#[derive(Default)]
struct PodState {
    tracks: HashMap<String, Track>,
    /// The pod's sandbox, made (or found) by the first sync of this worker.
    sandbox: Option<Sandbox>,
    /// The volumes' host paths and when they were last refreshed.
    volumes: Option<(Instant, HashMap<String, PathBuf>)>,
    /// The pod's service-account tokens (projected volumes).
    tokens: crate::tokens::TokenManager,
    /// The last volume failure reported as an event (one event per distinct failure).
    volume_error: Option<String>,
    pod_ip: Option<IpAddr>,
    last_status: Option<Value>,
    started: Option<String>,
    images: HashMap<String, ImageRecord>,
}

/// Watch the pods bound to this node and keep one worker per pod.
pub async fn run(
    client: Client,
    cfg: Arc<AgentConfig>,
    net: Arc<NodeNetwork>,
    node_ip: IpAddr,
    slices: Store<EndpointSlice>,
) -> anyhow::Result<()> {
    let store = ImageStore::open(&cfg.data_dir)?;
    let containers = ContainerManager::new(
        &cfg.data_dir,
        store.clone(),
        cfg.runtime.clone(),
        &cfg.run_dir.join("runtime"),
        &cfg.exe,
    )?;
    let ctx = Arc::new(Ctx {
        puller: Puller::new(store.clone(), cfg.registries.clone()),
        client: client.clone(),
        cfg: cfg.clone(),
        net,
        node_ip,
        store,
        containers,
        node_memory: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| t.lines().next()?.split_whitespace().nth(1)?.parse::<i128>().ok())
            .unwrap_or(0)
            * 1024,
        slices,
    });
    // Image GC, with the images of the pods bound here kept as in use.
    let pod_images: crate::image_gc::PodImages = Default::default();
    let _image_gc = crate::AbortOnDrop(tokio::spawn(crate::image_gc::run(
        client.clone(),
        cfg.node_name.clone(),
        cfg.image_gc,
        ctx.store.clone(),
        ctx.containers.clone(),
        pod_images.clone(),
    )));
    let pods: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={}", cfg.node_name);
    let mut stream = Box::pin(watcher(pods, watcher::Config::default().fields(&selector)).default_backoff());
    let mut workers: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut first_sync = true;
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(error = %e, "pod watch error; retrying");
                continue;
            }
        };
        match ev {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                let uid = p.uid().unwrap_or_default();
                listed.insert(uid.clone());
                lock_images(&pod_images).insert(uid.clone(), images_of(&p));
                let p = Arc::new(p);
                match workers.get(&uid) {
                    Some(tx) if !tx.is_closed() => {
                        let _ = tx.send(Some(p));
                    }
                    _ => {
                        let (tx, rx) = watch::channel(Some(p));
                        workers.insert(uid.clone(), tx);
                        tokio::spawn(worker(ctx.clone(), uid, rx));
                    }
                }
            }
            watcher::Event::Delete(p) => {
                lock_images(&pod_images).remove(&p.uid().unwrap_or_default());
                if let Some(tx) = workers.remove(&p.uid().unwrap_or_default()) {
                    let _ = tx.send(None);
                }
            }
            watcher::Event::InitDone => {
                // Pods that went while the watch was down.
                lock_images(&pod_images).retain(|uid, _| listed.contains(uid));
                workers.retain(|uid, tx| {
                    let keep = listed.contains(uid);
                    if !keep {
                        let _ = tx.send(None);
                    }
                    keep
                });
                if first_sync {
                    first_sync = false;
                    let known: HashSet<String> = workers.keys().cloned().collect();
                    let ctx = ctx.clone();
                    tokio::spawn(async move { remove_orphans(&ctx, &known).await });
                }
            }
        }
        workers.retain(|_, tx| !tx.is_closed());
    }
    Ok(())
}

fn lock_images(m: &crate::image_gc::PodImages) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
    m.lock()
        .expect("the pod image map is never poisoned (no panics under its lock)")
}

/// The images a pod's containers name, normalised as the image store names them.
fn images_of(pod: &Pod) -> HashSet<String> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()))
        .filter_map(|c| ImageRef::parse(c.image.as_deref()?).ok())
        .map(|r| r.to_string())
        .collect()
}

/// After a restart: containers and networks of pods that no longer exist go.
async fn remove_orphans(ctx: &Arc<Ctx>, known: &HashSet<String>) {
    let owned = |id: &str| known.iter().any(|uid| id.starts_with(&format!("{uid}-")));
    let c = ctx.clone();
    let listed = blocking(move || c.containers.ids()).await;
    for id in listed.unwrap_or_default() {
        if !owned(&id) {
            tracing::info!(container = %id, "removing a container whose pod is gone");
            let c = ctx.clone();
            let _ = blocking(move || {
                let _ = c.containers.stop(&id, Duration::ZERO);
                c.containers.remove(&id)
            })
            .await;
        }
    }
    let mut gone = Vec::new();
    for uid in ctx.net.pods().unwrap_or_default() {
        if !known.contains(&uid) {
            let _ = ctx.net.teardown_pod(&uid).await;
            gone.push(uid);
        }
    }
    remove_pod_cgroups(ctx, gone).await;
}

/// The pod cgroups (`/kubepods/…/pod<uid>`) of these pods, once their containers are gone.
async fn remove_pod_cgroups(ctx: &Arc<Ctx>, uids: Vec<String>) {
    if uids.is_empty() {
        return;
    }
    let root = ctx.cfg.cgroup_root.clone();
    let names: HashSet<String> = uids.iter().map(|u| qos::cgroup_uid(u)).collect();
    let removed =
        blocking(move || qos::remove_pod_cgroups(Path::new("/sys/fs/cgroup"), &root, |u| names.contains(u))).await;
    tracing::debug!(pods = ?uids, removed, "pod cgroups removed");
}

async fn worker(ctx: Arc<Ctx>, uid: String, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
    let mut st = PodState::default();
    // Attempts already on disk (a restarted agent re-adopts them).
    {
        let c = ctx.clone();
        let prefix = format!("{uid}-");
        if let Ok(ids) = blocking(move || c.containers.ids()).await {
            for id in ids.into_iter().filter(|id| id.starts_with(&prefix)) {
                if let Some((name, n)) = id[prefix.len()..].rsplit_once('-') {
                    if let Ok(n) = n.parse::<u32>() {
                        let t = st.tracks.entry(name.to_string()).or_default();
                        t.attempt = Some(t.attempt.map_or(n, |a| a.max(n)));
                    }
                }
            }
        }
    }
    let mut last: Option<Arc<Pod>> = None;
    loop {
        let pod = rx.borrow_and_update().clone();
        let Some(pod) = pod else {
            // Gone from the API: whatever is left stops now.
            if let Some(p) = last {
                terminate(&ctx, &p, &mut st, Duration::ZERO).await;
            }
            return;
        };
        last = Some(pod.clone());
        let next = match sync(&ctx, &pod, &mut st).await {
            Ok(SyncResult::Again(d)) => d,
            Ok(SyncResult::Done) => return,
            Err(e) => {
                tracing::warn!(pod = %pod.name_any(), error = %e, "pod sync failed");
                Duration::from_secs(2)
            }
        };
        tokio::select! {
            r = rx.changed() => if r.is_err() {
                terminate(&ctx, &pod, &mut st, Duration::ZERO).await;
                return;
            },
            _ = tokio::time::sleep(next) => {}
        }
    }
}

enum SyncResult {
    Again(Duration),
    Done,
}

fn pod_dir(ctx: &Ctx, uid: &str) -> PathBuf {
    ctx.cfg.data_dir.join("pods").join(uid)
}

fn grace_period(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

/// Stop every container of the pod (all at once, each with `grace`), then remove them and the
/// pod's network. Logs stay.
async fn terminate(ctx: &Arc<Ctx>, pod: &Pod, st: &mut PodState, grace: Duration) {
    let uid = pod.uid().unwrap_or_default();
    let prefix = format!("{uid}-");
    let c = ctx.clone();
    let ids: Vec<String> = blocking(move || c.containers.ids())
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|id| id.starts_with(&prefix))
        .collect();
    // Out of the Services' rotation first, then preStop hooks of running containers, all at
    // once, within the grace period; the rest of it is SIGTERM's.
    let started = Instant::now();
    crate::drain::out_of_rotation(&ctx.slices, pod, crate::drain::budget(grace)).await;
    let hook_grace = grace.saturating_sub(started.elapsed());
    let spec = pod.spec.clone().unwrap_or_default();
    let mut hooks = Vec::new();
    for id in &ids {
        let Some(c) = spec.containers.iter().find(|c| {
            id.strip_prefix(&prefix)
                .and_then(|rest| rest.rsplit_once('-'))
                .is_some_and(|(name, _)| name == c.name)
        }) else {
            continue;
        };
        let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) else {
            continue;
        };
        let running = ctx.containers.state(id).is_ok_and(|s| s.status == ShimStatus::Running);
        if !running || hook_grace.is_zero() {
            continue;
        }
        let (ctx, id, c, pod_ip, pod) = (ctx.clone(), id.clone(), c.clone(), st.pod_ip, pod.clone());
        hooks.push(tokio::spawn(async move {
            if let Err(e) = probes::run_hook(&ctx.containers, &id, &c, &hook, pod_ip, hook_grace).await {
                event(
                    &ctx.client,
                    &pod,
                    "Warning",
                    "FailedPreStopHook",
                    &format!("PreStopHook failed: {e}"),
                )
                .await;
            }
        }));
    }
    for h in hooks {
        let _ = h.await;
    }
    let grace = grace.saturating_sub(started.elapsed());
    let mut stops = Vec::new();
    for id in ids {
        let c = ctx.clone();
        stops.push(tokio::task::spawn_blocking(move || {
            if let Err(e) = c.containers.stop(&id, grace) {
                tracing::debug!(container = %id, error = %e, "stopping");
            }
            if let Err(e) = c.containers.remove(&id) {
                tracing::warn!(container = %id, error = %e, "removing");
            }
        }));
    }
    for s in stops {
        let _ = s.await;
    }
    remove_pod_cgroups(ctx, vec![uid.clone()]).await;
    if let Err(e) = ctx.net.teardown_pod(&uid).await {
        tracing::warn!(pod = %pod.name_any(), error = %e, "tearing down the pod network");
    }
    let dir = pod_dir(ctx, &uid);
    let _ = blocking(move || {
        crate::volumes::unmount_volumes(&dir);
        if let Err(e) = skiff_runtime::PodSandbox::remove(&dir.join("sandbox")) {
            tracing::warn!(error = %e, "removing the pod sandbox");
        }
        std::fs::remove_dir_all(dir)
    })
    .await;
    st.tracks.clear();
    st.sandbox = None;
    st.volumes = None;
}

async fn sync(ctx: &Arc<Ctx>, pod: &Arc<Pod>, st: &mut PodState) -> anyhow::Result<SyncResult> {
    let t0 = Instant::now();
    let uid = pod.uid().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        event(&ctx.client, pod, "Normal", "Killing", "Stopping the pod's containers").await;
        terminate(ctx, pod, st, grace_period(pod)).await;
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(SyncResult::Done);
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        // A finished pod gives its address back; its containers stay for their status.
        ctx.net.teardown_pod(&uid).await?;
        return Ok(SyncResult::Again(Duration::from_secs(30)));
    }
    let dir = pod_dir(ctx, &uid);
    let Sandbox {
        netns,
        hostname,
        held: sandbox,
    } = match &st.sandbox {
        Some(made) => made.clone(),
        None => {
            let made = make_sandbox(ctx, pod, &dir, st).await?;
            st.sandbox = Some(made.clone());
            made
        }
    };
    tracing::trace!(pod = %pod.name_any(), ms = t0.elapsed().as_millis() as u64, "sync: sandbox");
    // Volumes are made on the first sync and refreshed (config map and secret updates reach
    // running pods) at most every VOLUME_REFRESH, not on every sync.
    let fresh = st
        .volumes
        .as_ref()
        .filter(|(at, _)| at.elapsed() < VOLUME_REFRESH)
        .map(|(_, v)| v.clone());
    let volumes = match fresh {
        Some(v) => Ok(v),
        None => crate::volumes::prepare(&ctx.client, pod, &dir, &mut st.tokens).await,
    };
    for w in st.tokens.take_warnings() {
        event(&ctx.client, pod, "Warning", "TokenRefreshFailed", &w).await;
    }
    tracing::trace!(pod = %pod.name_any(), ms = t0.elapsed().as_millis() as u64, "sync: volumes");
    let volumes = match volumes {
        Ok(v) => {
            if st.volumes.as_ref().is_none_or(|(at, _)| at.elapsed() >= VOLUME_REFRESH) {
                st.volumes = Some((Instant::now(), v.clone()));
            }
            st.volume_error = None;
            v
        }
        Err(msg) => {
            if st.volume_error.as_ref() != Some(&msg) {
                event(&ctx.client, pod, "Warning", "FailedMount", &msg).await;
                st.volume_error = Some(msg.clone());
            }
            for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
                st.tracks.entry(c.name.clone()).or_default().waiting =
                    Some(("CreateContainerConfigError".into(), msg.clone()));
            }
            report(ctx, pod, st).await?;
            return Ok(SyncResult::Again(Duration::from_secs(5)));
        }
    };
    st.started.get_or_insert_with(now);
    let class = qos::qos_class(&spec);
    let node_memory = ctx.node_memory;
    let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let mut next = Duration::from_secs(5);

    let pod_ctx = PodCtx {
        pod,
        uid: &uid,
        dir: &dir,
        netns: &netns,
        hostname: &hostname,
        class,
        node_memory,
        volumes: &volumes,
        sandbox: &sandbox,
    };
    // Init containers, one at a time, each to success.
    let mut initialized = true;
    for c in spec.init_containers.iter().flatten() {
        let state = current_state(ctx, &uid, &c.name, st).await;
        match state.as_ref().map(|s| (s.status, s.exit_code)) {
            Some((ShimStatus::Exited, Some(0))) => continue,
            Some((ShimStatus::Creating | ShimStatus::Running, _)) => {
                initialized = false;
                next = next.min(Duration::from_secs(1));
                break;
            }
            Some(_) if restart_policy == "Never" => {
                initialized = false;
                break;
            }
            _ => {
                initialized = false;
                next = next.min(start_container(ctx, &pod_ctx, c, st, state.is_some()).await);
                break;
            }
        }
    }
    if initialized {
        for c in &spec.containers {
            let state = current_state(ctx, &uid, &c.name, st).await;
            let restart = match state.as_ref().map(|s| (s.status, s.exit_code)) {
                None => true,
                Some((ShimStatus::Creating | ShimStatus::Running, _)) => {
                    // Healthy for 10 minutes: the back-off starts over.
                    if let Some(t) = st.tracks.get_mut(&c.name) {
                        if state
                            .as_ref()
                            .and_then(|s| s.started_at)
                            .is_some_and(|s| chrono::Utc::now() - s > chrono::TimeDelta::minutes(10))
                        {
                            t.failures = 0;
                        }
                    }
                    false
                }
                Some((_, code)) => match restart_policy.as_str() {
                    "Never" => false,
                    "OnFailure" => code != Some(0),
                    _ => true,
                },
            };
            if restart {
                next = next.min(start_container(ctx, &pod_ctx, c, st, state.is_some()).await);
            } else if state.as_ref().is_some_and(|s| s.status == ShimStatus::Creating) {
                next = next.min(Duration::from_millis(500));
            }
        }
    }
    if initialized {
        next = next.min(probe_containers(ctx, pod, &uid, &spec.containers, st).await);
    }
    tracing::trace!(pod = %pod.name_any(), ms = t0.elapsed().as_millis() as u64, "sync: containers");
    let done = report(ctx, pod, st).await?;
    tracing::trace!(pod = %pod.name_any(), ms = t0.elapsed().as_millis() as u64, "sync: reported");
    if done {
        ctx.net.teardown_pod(&uid).await?;
    }
    Ok(if done {
        SyncResult::Again(Duration::from_secs(30))
    } else {
        SyncResult::Again(next.min(Duration::from_secs(2)))
    })
}

/// Run probe `p` if it is due; the verdict when it changed.
async fn probe_due(
    ctx: &Arc<Ctx>,
    id: &str,
    c: &Container,
    p: &k8s_openapi::api::core::v1::Probe,
    pod_ip: Option<IpAddr>,
    running_for: Duration,
    state: &mut probes::ProbeState,
) -> Option<bool> {
    let t = probes::timing(p);
    if !state.due(&t, running_for) {
        return None;
    }
    let outcome = probes::run(&ctx.containers, id, c, p, pod_ip).await;
    state.record(&t, outcome)
}

/// Run the probes that are due on the pod's running containers; a container that fails its
/// startup or liveness probe is stopped (and restarted per `restartPolicy`). Returns when
/// the next probe is due.
async fn probe_containers(
    ctx: &Arc<Ctx>,
    pod: &Pod,
    uid: &str,
    containers: &[Container],
    st: &mut PodState,
) -> Duration {
    let mut next = Duration::from_secs(30);
    let pod_ip = st.pod_ip;
    for c in containers {
        if c.startup_probe.is_none() && c.liveness_probe.is_none() && c.readiness_probe.is_none() {
            continue;
        }
        let Some(state) = current_state(ctx, uid, &c.name, st).await else {
            continue;
        };
        if state.status != ShimStatus::Running {
            continue;
        }
        next = next.min(Duration::from_secs(1));
        let Some(attempt) = st.tracks.get(&c.name).and_then(|t| t.attempt) else {
            continue;
        };
        let id = container_id(uid, &c.name, attempt);
        let running_for = state
            .started_at
            .and_then(|s| (chrono::Utc::now() - s).to_std().ok())
            .unwrap_or_default();
        let started = st.tracks.get(&c.name).is_some_and(|t| t.started(c));
        let tr = st.tracks.entry(c.name.clone()).or_default();
        let mut kill: Option<(&str, String, &k8s_openapi::api::core::v1::Probe)> = None;
        if let (Some(p), false) = (&c.startup_probe, started) {
            if probe_due(ctx, &id, c, p, pod_ip, running_for, &mut tr.startup).await == Some(false) {
                kill = Some(("Startup", tr.startup.message.clone(), p));
            }
        } else {
            if let Some(p) = &c.liveness_probe {
                if probe_due(ctx, &id, c, p, pod_ip, running_for, &mut tr.liveness).await == Some(false) {
                    kill = Some(("Liveness", tr.liveness.message.clone(), p));
                }
            }
            if let Some(p) = &c.readiness_probe {
                if probe_due(ctx, &id, c, p, pod_ip, running_for, &mut tr.readiness).await == Some(false) {
                    let msg = format!("Readiness probe failed: {}", tr.readiness.message);
                    event(&ctx.client, pod, "Warning", "Unhealthy", &msg).await;
                }
            }
        }
        if let Some((what, msg, p)) = kill {
            event(
                &ctx.client,
                pod,
                "Warning",
                "Unhealthy",
                &format!("{what} probe failed: {msg}"),
            )
            .await;
            event(
                &ctx.client,
                pod,
                "Normal",
                "Killing",
                &format!(
                    "Container {} failed {} probe, will be restarted",
                    c.name,
                    what.to_lowercase()
                ),
            )
            .await;
            let grace = p
                .termination_grace_period_seconds
                .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30);
            let (c2, id2) = (ctx.clone(), id.clone());
            let _ = blocking(move || c2.containers.stop(&id2, Duration::from_secs(grace.max(0) as u64))).await;
            next = Duration::from_millis(100);
        }
    }
    next
}

/// The `hostPort`s of the pod's containers, to its address. (`hostIP` is not honoured: a
/// host port is published on every address of the node, as the scheduler assumes anyway.)
fn host_ports(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    ip: std::net::Ipv4Addr,
) -> anyhow::Result<Vec<skiff_net::nat::HostPort>> {
    let mut out = Vec::new();
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        for p in c.ports.iter().flatten() {
            let Some(host_port) = p.host_port.filter(|h| *h > 0) else {
                continue;
            };
            let protocol = skiff_net::nat::Protocol::parse(p.protocol.as_deref())
                .ok_or_else(|| anyhow::anyhow!("container {:?}: unsupported protocol {:?}", c.name, p.protocol))?;
            let port = |v: i32, what: &str| {
                u16::try_from(v)
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| anyhow::anyhow!("container {:?}: {what} {v} is not a port", c.name))
            };
            out.push(skiff_net::nat::HostPort {
                protocol,
                host_port: port(host_port, "hostPort")?,
                pod_ip: ip,
                container_port: port(p.container_port, "containerPort")?,
            });
        }
    }
    Ok(out)
}

/// What the first sync of a pod makes once: its network (or the node's for `hostNetwork`),
/// `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`, and the IPC/UTS namespaces and
/// `/dev/shm` its containers share. Idempotent, so a restarted agent finds what is there.
async fn make_sandbox(ctx: &Arc<Ctx>, pod: &Pod, dir: &Path, st: &mut PodState) -> anyhow::Result<Sandbox> {
    let uid = pod.uid().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    std::fs::create_dir_all(dir)?;
    let host_network = spec.host_network.unwrap_or(false);
    let netns = if host_network {
        st.pod_ip = Some(ctx.node_ip);
        None
    } else {
        let pn = ctx.net.setup_pod(&uid).await?;
        st.pod_ip = Some(IpAddr::V4(pn.ip));
        ctx.net.publish_host_ports(host_ports(&spec, pn.ip)?).await?;
        Some(pn.netns)
    };
    let hostname = spec.hostname.clone().unwrap_or_else(|| pod.name_any());
    let fqdn = spec.subdomain.as_ref().map(|sd| {
        format!(
            "{hostname}.{sd}.{}.svc.{}",
            pod.namespace().unwrap_or_default(),
            ctx.cfg.cluster_domain
        )
    });
    let aliases: Vec<skiff_net::HostAlias> = spec
        .host_aliases
        .iter()
        .flatten()
        .map(|a| skiff_net::HostAlias {
            ip: a.ip.clone(),
            hostnames: a.hostnames.clone().unwrap_or_default(),
        })
        .collect();
    std::fs::write(
        dir.join("hosts"),
        skiff_net::hosts_file(st.pod_ip, &hostname, fqdn.as_deref(), &aliases),
    )?;
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    let policy = skiff_net::DnsPolicy::parse(spec.dns_policy.as_deref().unwrap_or(""))
        .unwrap_or(skiff_net::DnsPolicy::ClusterFirst);
    let dns_config = spec.dns_config.as_ref().map(|c| skiff_net::DnsConfig {
        nameservers: c.nameservers.clone().unwrap_or_default(),
        searches: c.searches.clone().unwrap_or_default(),
        options: c
            .options
            .iter()
            .flatten()
            .filter_map(|o| Some((o.name.clone()?, o.value.clone())))
            .collect(),
    });
    let cluster = skiff_net::ClusterDns {
        servers: ctx.cfg.cluster_dns.clone(),
        domain: ctx.cfg.cluster_domain.clone(),
        host_resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    std::fs::write(
        dir.join("resolv.conf"),
        skiff_net::resolv_conf(
            policy,
            dns_config.as_ref(),
            &pod.namespace().unwrap_or_default(),
            host_network,
            &cluster,
        ),
    )?;
    // IPC and UTS namespaces (and /dev/shm) held for the pod, shared by its containers.
    let held = {
        let sb_dir = dir.join("sandbox");
        let want_ipc = !spec.host_ipc.unwrap_or(false);
        // The UTS hostname is at most 63 characters, as the kubelet truncates it.
        let uts_name: String = hostname
            .chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_string();
        let existing = skiff_runtime::PodSandbox::open(&sb_dir);
        if (!want_ipc || existing.ipc.is_some()) && (host_network || existing.uts.is_some()) {
            existing
        } else {
            let opts = skiff_runtime::SandboxOptions {
                network: false,
                ipc: want_ipc,
                hostname: (!host_network).then_some(uts_name),
            };
            blocking(move || {
                let _ = skiff_runtime::PodSandbox::remove(&sb_dir);
                skiff_runtime::PodSandbox::create(&sb_dir, &opts)
            })
            .await?
        }
    };
    Ok(Sandbox { netns, hostname, held })
}

/// A pod's sandbox as its worker keeps it.
#[derive(Clone)]
struct Sandbox {
    /// The pod's network namespace (`None`: the node's).
    netns: Option<PathBuf>,
    hostname: String,
    held: skiff_runtime::PodSandbox,
}

/// What starting a container needs from its pod.
struct PodCtx<'a> {
    pod: &'a Pod,
    uid: &'a str,
    dir: &'a Path,
    netns: &'a Option<PathBuf>,
    hostname: &'a str,
    class: qos::QosClass,
    node_memory: i128,
    volumes: &'a HashMap<String, PathBuf>,
    sandbox: &'a skiff_runtime::PodSandbox,
}

async fn current_state(ctx: &Arc<Ctx>, uid: &str, name: &str, st: &PodState) -> Option<ShimState> {
    let attempt = st.tracks.get(name)?.attempt?;
    let id = container_id(uid, name, attempt);
    let c = ctx.clone();
    blocking(move || c.containers.state(&id)).await.ok()
}

/// Pull (per policy) and start container `c`; returns when the worker should look again.
async fn start_container(
    ctx: &Arc<Ctx>,
    p: &PodCtx<'_>,
    c: &Container,
    st: &mut PodState,
    restarting: bool,
) -> Duration {
    let track = st.tracks.entry(c.name.clone()).or_default();
    if let Some(t) = track.not_before {
        if Instant::now() < t {
            return t - Instant::now();
        }
    }
    let image_name = c.image.clone().unwrap_or_default();
    // The image.
    let record = match ensure_image(ctx, p.pod, c, &image_name).await {
        Ok(r) => r,
        Err((reason, msg)) => {
            let track = st.tracks.entry(c.name.clone()).or_default();
            track.failures += 1;
            let wait = backoff(track.failures);
            track.not_before = Some(Instant::now() + wait);
            let reason = if track.failures > 1 && reason == "ErrImagePull" {
                "ImagePullBackOff".to_string()
            } else {
                reason
            };
            event(
                &ctx.client,
                p.pod,
                "Warning",
                "Failed",
                &format!("Failed to pull image \"{image_name}\": {msg}"),
            )
            .await;
            track.waiting = Some((reason, msg));
            return wait;
        }
    };
    st.images.insert(c.name.clone(), record.clone());
    let track = st.tracks.entry(c.name.clone()).or_default();
    if restarting {
        track.failures += 1;
        let wait = backoff(track.failures);
        if track.not_before.is_none_or(|t| t < Instant::now() - wait) && track.failures > 1 {
            // Crash looping: wait before starting again.
            track.not_before = Some(Instant::now() + wait);
            track.waiting = Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {}s restarting failed container={} pod={}",
                    wait.as_secs(),
                    c.name,
                    p.pod.name_any()
                ),
            ));
            return wait;
        }
    }
    let attempt = track.attempt.map_or(0, |a| a + 1);
    let id = container_id(p.uid, &c.name, attempt);
    let env = match crate::env::resolve(&ctx.client, p.pod, c, ctx.node_ip, st.pod_ip).await {
        Ok(e) => e,
        Err(msg) => {
            track.waiting = Some(("CreateContainerConfigError".into(), msg));
            return Duration::from_secs(5);
        }
    };
    let mut mounts = Vec::new();
    for (src, dst) in [
        ("hosts", "/etc/hosts"),
        ("hostname", "/etc/hostname"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        if let Ok(m) = bundle::bind_mount(&p.dir.join(src), dst, false) {
            mounts.push(m);
        }
    }
    for vm in c.volume_mounts.iter().flatten() {
        let Some(src) = p.volumes.get(&vm.name) else {
            track.waiting = Some((
                "CreateContainerConfigError".into(),
                format!("volume mount {:?} names no volume of the pod", vm.name),
            ));
            return Duration::from_secs(5);
        };
        let src = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sp) if sp.split('/').any(|s| s == "..") || sp.starts_with('/') => {
                track.waiting = Some((
                    "CreateContainerConfigError".into(),
                    format!("subPath {sp:?} must be a relative path inside the volume"),
                ));
                return Duration::from_secs(5);
            }
            Some(sp) => {
                let path = src.join(sp);
                if !path.exists() {
                    let _ = std::fs::create_dir_all(&path);
                }
                path
            }
            None => src.clone(),
        };
        match bundle::bind_mount(&src, &vm.mount_path, vm.read_only.unwrap_or(false)) {
            Ok(m) => mounts.push(m),
            Err(e) => {
                track.waiting = Some(("CreateContainerConfigError".into(), e.to_string()));
                return Duration::from_secs(5);
            }
        }
    }
    mounts.extend(p.sandbox.shm_mount());
    let mut pod_ctx = PodContext {
        security: p.pod.spec.as_ref().and_then(|s| s.security_context.clone()),
        hostname: Some(p.hostname.to_string()),
        host_capabilities: skiff_runtime::oci::host_capabilities(),
        network: match p.netns {
            Some(path) => NamespaceMode::Join(path.clone()),
            None => NamespaceMode::Host,
        },
        ipc: NamespaceMode::New,
        uts: if p.netns.is_some() {
            NamespaceMode::New
        } else {
            NamespaceMode::Host
        },
        pid: NamespaceMode::New,
        cgroup_namespace: skiff_runtime::oci::cgroup_v2_host(),
        cgroup_v2: skiff_runtime::oci::cgroup_v2_host(),
        pids_limit: None,
        oom_score_adj: Some(qos::oom_score_adj(p.class, c, p.node_memory)),
    };
    // IPC and UTS from the sandbox; the network namespace is skiff-net's.
    let network = pod_ctx.network.clone();
    p.sandbox.apply(&mut pod_ctx);
    pod_ctx.network = network;
    let log_path = crate::logs::log_path(
        &ctx.cfg.log_dir,
        &p.pod.namespace().unwrap_or_default(),
        &p.pod.name_any(),
        p.uid,
        &c.name,
        attempt,
    );
    let cgroups_path = format!("{}/{id}", qos::pod_cgroup(&ctx.cfg.cgroup_root, p.class, p.uid));
    track.attempt = Some(attempt);
    track.waiting = Some(("ContainerCreating".into(), String::new()));
    let (c2, id2, container, pod_ctx2) = (ctx.clone(), id.clone(), c.clone(), pod_ctx.clone());
    let result = blocking(move || {
        c2.containers.start(&ContainerRequest {
            id: id2,
            image: &record,
            container: &container,
            pod: &pod_ctx2,
            env,
            mounts,
            cgroups_path,
            log_path,
        })
    })
    .await;
    let track = st.tracks.entry(c.name.clone()).or_default();
    match result {
        Ok(_) => {
            track.waiting = None;
            track.startup = Default::default();
            track.liveness = Default::default();
            track.readiness = Default::default();
            // Older attempts than the previous one go (the previous stays for its status).
            if attempt >= 2 {
                let (c3, old) = (ctx.clone(), container_id(p.uid, &c.name, attempt - 2));
                let _ = blocking(move || c3.containers.remove(&old)).await;
            }
            // postStart runs before the container counts as started; if it fails the
            // container is killed and restarted per restartPolicy.
            if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) {
                if let Err(e) =
                    probes::run_hook(&ctx.containers, &id, c, &hook, st.pod_ip, Duration::from_secs(30)).await
                {
                    event(
                        &ctx.client,
                        p.pod,
                        "Warning",
                        "FailedPostStartHook",
                        &format!("PostStartHook failed: {e}"),
                    )
                    .await;
                    let (c2, id2) = (ctx.clone(), id.clone());
                    let _ = blocking(move || c2.containers.stop(&id2, Duration::ZERO)).await;
                    return Duration::from_millis(100);
                }
            }
            event(
                &ctx.client,
                p.pod,
                "Normal",
                "Started",
                &format!("Started container {}", c.name),
            )
            .await;
            Duration::from_millis(500)
        }
        Err(e) => {
            let reason = match e {
                skiff_runtime::ContainerError::Config(_) => "CreateContainerConfigError",
                _ => "CreateContainerError",
            };
            track.waiting = Some((reason.into(), e.to_string()));
            track.attempt = if attempt == 0 { None } else { Some(attempt - 1) };
            track.failures += 1;
            let wait = backoff(track.failures);
            track.not_before = Some(Instant::now() + wait);
            event(&ctx.client, p.pod, "Warning", "Failed", &format!("Error: {e}")).await;
            wait
        }
    }
}

/// The image of `c` in the store, pulled if its policy says so.
async fn ensure_image(ctx: &Arc<Ctx>, pod: &Pod, c: &Container, image: &str) -> Result<ImageRecord, (String, String)> {
    let reference = ImageRef::parse(image).map_err(|e| ("InvalidImageName".to_string(), e.to_string()))?;
    let policy = c
        .image_pull_policy
        .as_deref()
        .and_then(PullPolicy::from_k8s)
        .unwrap_or_else(|| PullPolicy::default_for(image));
    let (store, r) = (ctx.store.clone(), reference.clone());
    let present = blocking(move || store.get(&r))
        .await
        .map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?;
    let pull = policy
        .should_pull(image, present.is_some())
        .map_err(|e| ("ErrImageNeverPull".to_string(), e.to_string()))?;
    if !pull {
        return present.ok_or_else(|| ("ErrImagePull".to_string(), "image vanished from the store".to_string()));
    }
    let creds = pull_credentials(ctx, pod).await;
    event(
        &ctx.client,
        pod,
        "Normal",
        "Pulling",
        &format!("Pulling image \"{image}\""),
    )
    .await;
    let rec = ctx
        .puller
        .pull(&reference, &creds, &NoProgress)
        .await
        .map_err(|e| ("ErrImagePull".to_string(), e.to_string()))?;
    event(
        &ctx.client,
        pod,
        "Normal",
        "Pulled",
        &format!("Successfully pulled image \"{image}\""),
    )
    .await;
    Ok(rec)
}

/// Credentials from the pod's `imagePullSecrets`. A secret that does not exist is a warning
/// and the pull goes on without it, as in Kubernetes.
async fn pull_credentials(ctx: &Arc<Ctx>, pod: &Pod) -> DockerCredentials {
    let mut creds = DockerCredentials::none();
    let ns = pod.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    for s in pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default()
    {
        match secrets.get_opt(&s.name).await {
            Ok(Some(secret)) => {
                let data = secret.data.unwrap_or_default();
                if let Some(json) = data.get(".dockerconfigjson").or_else(|| data.get(".dockercfg")) {
                    if let Err(e) = creds.add_json(&json.0) {
                        event(
                            &ctx.client,
                            pod,
                            "Warning",
                            "FailedToRetrieveImagePullSecret",
                            &format!("Unable to use pull secret {}: {e}", s.name),
                        )
                        .await;
                    }
                }
            }
            _ => {
                event(
                    &ctx.client,
                    pod,
                    "Warning",
                    "FailedToRetrieveImagePullSecret",
                    &format!("Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.", s.name),
                )
                .await;
            }
        }
    }
    creds
}

/// One container's status as the kubelet reports it.
async fn container_status(
    ctx: &Arc<Ctx>,
    uid: &str,
    c: &Container,
    st: &PodState,
) -> (Value, bool, Option<(bool, i32)>) {
    let track = st.tracks.get(&c.name);
    let restarts = track.and_then(|t| t.attempt).unwrap_or(0);
    let state = current_state(ctx, uid, &c.name, st).await;
    // After an agent restart the image is looked up again in the store.
    let looked_up = match st.images.get(&c.name) {
        Some(_) => None,
        None => ImageRef::parse(c.image.as_deref().unwrap_or_default())
            .ok()
            .and_then(|r| ctx.store.get(&r).ok().flatten()),
    };
    let image_id = st
        .images
        .get(&c.name)
        .or(looked_up.as_ref())
        .map(|r| {
            format!(
                "{}@{}",
                ImageRef::parse(&r.name).map(|i| i.name()).unwrap_or_default(),
                r.repo_digest
            )
        })
        .unwrap_or_default();
    let attempt = track.and_then(|t| t.attempt).unwrap_or(0);
    let id = format!("skiff://{}", container_id(uid, &c.name, attempt));
    let terminated = |s: &ShimState| {
        let code = s
            .exit_code
            .unwrap_or(if s.status == ShimStatus::Failed { 128 } else { 0 });
        let reason = if s.oom_killed {
            "OOMKilled"
        } else if s.status == ShimStatus::Failed {
            "StartError"
        } else if code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let mut t = json!({"exitCode": code, "reason": reason, "containerID": id});
        if let Some(a) = s.started_at {
            t["startedAt"] = json!(rfc3339(a));
        }
        if let Some(f) = s.finished_at {
            t["finishedAt"] = json!(rfc3339(f));
        }
        if let Some(sig) = s.signal {
            t["signal"] = json!(sig);
        }
        if let Some(m) = &s.error {
            t["message"] = json!(m);
        }
        (json!({"terminated": t}), code)
    };
    let waiting = track.and_then(|t| t.waiting.clone());
    let (state_json, running, exit) = match (&waiting, &state) {
        (Some((reason, msg)), _) if reason != "ContainerCreating" || state.is_none() => {
            let mut w = json!({"reason": reason});
            if !msg.is_empty() {
                w["message"] = json!(msg);
            }
            (json!({"waiting": w}), false, None)
        }
        (_, Some(s)) if matches!(s.status, ShimStatus::Running) => (
            json!({"running": {"startedAt": s.started_at.map(rfc3339).unwrap_or_else(now)}}),
            true,
            None,
        ),
        (_, Some(s)) if matches!(s.status, ShimStatus::Exited | ShimStatus::Failed) => {
            let (t, code) = terminated(s);
            (t, false, Some((code == 0, code)))
        }
        _ => (json!({"waiting": {"reason": "ContainerCreating"}}), false, None),
    };
    let ready = running && track.is_some_and(|t| t.ready(c));
    let started = running && track.is_some_and(|t| t.started(c));
    let mut status = json!({
        "name": c.name, "image": c.image, "imageID": image_id, "ready": ready, "started": started,
        "restartCount": restarts, "state": state_json,
    });
    if state.is_some() {
        status["containerID"] = json!(id);
    }
    // The previous attempt's end, as `lastState`.
    if attempt > 0 {
        let (c2, prev) = (ctx.clone(), container_id(uid, &c.name, attempt - 1));
        if let Ok(s) = blocking(move || c2.containers.state(&prev)).await {
            if matches!(s.status, ShimStatus::Exited | ShimStatus::Failed) {
                status["lastState"] = terminated(&s).0;
            }
        }
    }
    (status, running, exit)
}

/// Post the pod's status when it changed; true once the pod has finished for good.
async fn report(ctx: &Arc<Ctx>, pod: &Arc<Pod>, st: &mut PodState) -> anyhow::Result<bool> {
    let uid = pod.uid().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let mut init_statuses = Vec::new();
    let mut init_done = true;
    let mut init_failed = false;
    for c in spec.init_containers.iter().flatten() {
        let (s, _, exit) = container_status(ctx, &uid, c, st).await;
        match exit {
            Some((true, _)) => {}
            Some((false, _)) => {
                init_done = false;
                init_failed |= restart_policy == "Never";
            }
            None => init_done = false,
        }
        init_statuses.push(s);
    }
    let mut statuses = Vec::new();
    let (mut running, mut succeeded, mut failed, mut waiting) = (0, 0, 0, 0);
    for c in &spec.containers {
        let (s, is_running, exit) = container_status(ctx, &uid, c, st).await;
        match exit {
            _ if is_running => running += 1,
            Some((true, _)) => succeeded += 1,
            Some((false, _)) => failed += 1,
            None => waiting += 1,
        }
        statuses.push(s);
    }
    let n = spec.containers.len();
    let phase = if init_failed {
        "Failed"
    } else if !init_done || waiting > 0 && running == 0 && succeeded + failed == 0 {
        "Pending"
    } else if running > 0 || waiting > 0 {
        "Running"
    } else if succeeded == n {
        if restart_policy == "Always" {
            "Running"
        } else {
            "Succeeded"
        }
    } else if restart_policy == "Never" || (restart_policy == "OnFailure" && failed == 0) {
        "Failed"
    } else {
        "Running"
    };
    let all_ready = n > 0 && statuses.iter().all(|s| s["ready"] == true);
    let ts = now();
    let cond = |t: &str, ok: bool, reason: Option<&str>| {
        let mut c = json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": ts});
        if let Some(r) = reason.filter(|_| !ok) {
            c["reason"] = json!(r);
        }
        c
    };
    let ip = st.pod_ip.map(|i| i.to_string());
    let mut status = json!({
        "phase": phase,
        "conditions": [
            cond("PodReadyToStartContainers", true, None),
            cond("Initialized", init_done, Some("ContainersNotInitialized")),
            cond("Ready", all_ready, Some("ContainersNotReady")),
            cond("ContainersReady", all_ready, Some("ContainersNotReady")),
            cond("PodScheduled", true, None),
        ],
        "hostIP": ctx.node_ip.to_string(), "hostIPs": [{"ip": ctx.node_ip.to_string()}],
        "startTime": st.started.clone().unwrap_or_else(now),
        "containerStatuses": statuses,
        "qosClass": qos::qos_class(&spec).as_str(),
    });
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    // Transition times only move when a condition's status does.
    let comparable = |s: &Value| {
        let mut s = s.clone();
        for c in s["conditions"].as_array_mut().into_iter().flatten() {
            c.as_object_mut().map(|m| m.remove("lastTransitionTime"));
        }
        s
    };
    let changed = st
        .last_status
        .as_ref()
        .is_none_or(|l| comparable(l) != comparable(&status));
    if changed {
        if let Some(prev) = &st.last_status {
            // Keep the old transition time of conditions that did not change.
            let prev_conds: BTreeMap<String, (Value, Value)> = prev["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c["type"].as_str().unwrap_or("").to_string(),
                        (c["status"].clone(), c["lastTransitionTime"].clone()),
                    )
                })
                .collect();
            for c in status["conditions"].as_array_mut().into_iter().flatten() {
                if let Some((s, t)) = prev_conds.get(c["type"].as_str().unwrap_or("")) {
                    if *s == c["status"] {
                        c["lastTransitionTime"] = t.clone();
                    }
                }
            }
        }
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
        st.last_status = Some(status);
    }
    Ok(matches!(phase, "Succeeded" | "Failed"))
}
