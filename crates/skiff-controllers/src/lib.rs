//! Skiff's controller manager: level-triggered reconcilers (kube-runtime `Controller`) that
//! read desired and observed state through the API server and converge. They are API clients
//! only and never touch the store; every restart is safe.
//!
//! This wave: ReplicaSet, Deployment, StatefulSet, DaemonSet, Job, CronJob,
//! Endpoints/EndpointSlices (and mirroring of hand-written Endpoints), the default ServiceAccount, the `kube-root-ca.crt` ConfigMap
//! per namespace, PersistentVolumeClaim provisioning
//! (`local-path`), the garbage collector, node lifecycle (NotReady, unreachable taints,
//! taint-based eviction), node IPAM (pod CIDRs) and the pod GC of pods whose node is gone.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod job;
pub mod mirroring;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podcache;
mod podfeed;
pub mod podgc;
pub mod replicaset;
pub mod root_ca;
pub mod serviceaccount;
pub mod statefulset;
pub mod volumes;

/// Shared controller settings: triggers for the same object within 100 ms are batched into
/// one reconcile, so a burst of pod updates costs one pass rather than one per update. At most
/// [`CONCURRENT_SYNCS`] objects of a kind reconcile at once, as upstream's controller manager
/// runs five workers per controller (`--concurrent-replicaset-syncs` and its siblings): fifty
/// ReplicaSets scaled up together must not send fifty bursts of creates at once, which holds
/// up everyone else's writes (the scheduler's bindings first) and the memory of every request in
/// flight.
pub(crate) fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default()
        .debounce(std::time::Duration::from_millis(100))
        .concurrency(CONCURRENT_SYNCS)
}

/// Objects of one kind reconciled at once (upstream's default for most controllers).
const CONCURRENT_SYNCS: u16 = 5;

/// The watch settings of the busy metadata-only pod watches (the owners' triggers, endpoints,
/// the garbage collector): their (re-)lists are served whole from the API server's cache at its
/// current revision, as client-go's informers list with `resourceVersion=0`. A consistent list
/// is read from the store in pages of 500, and at 50,000 pods the re-lists of watchers that fell
/// behind under load cost the server a quarter of its CPU.
pub(crate) fn cached_list() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default().any_semantic()
}

/// The error policy of every controller: log the failure with the object, retry in a second.
pub(crate) fn retry_on_error<K, E, C>(
    obj: std::sync::Arc<K>,
    err: &E,
    _ctx: std::sync::Arc<C>,
) -> kube::runtime::controller::Action
where
    K: kube::Resource<DynamicType = ()>,
    E: std::fmt::Display,
{
    use kube::ResourceExt;
    tracing::warn!(kind = %K::kind(&()), name = %obj.name_any(), namespace = ?obj.namespace(), error = %err, "reconcile failed; retrying");
    kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(1))
}

/// Consume one item of a controller's output stream, logging failures (a controller's own
/// errors are already handled by `retry_on_error`; these are watch and queue errors).
pub(crate) fn log_event<T, E: std::fmt::Display>(res: Result<T, E>) -> futures::future::Ready<()> {
    if let Err(e) = res {
        tracing::debug!(error = %e, "controller event");
    }
    futures::future::ready(())
}

/// Options of the controller manager.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where local-path volumes live on the nodes.
    pub volume_root: String,
    pub node_lifecycle: nodelifecycle::NodeLifecycleOptions,
    /// The cluster CA (PEM) published as `kube-root-ca.crt` in every namespace.
    pub root_ca_pem: String,
}

/// Run every controller until one fails.
pub async fn run(client: kube::Client, opts: Options) -> anyhow::Result<()> {
    // One pod watch for the controllers that only need to hear that a pod changed; they
    // subscribe before it starts.
    let feed = std::sync::Arc::new(podfeed::PodFeed::default());
    let (job_pods, set_pods, daemon_pods) = (feed.pods(), feed.pods(), feed.pods());
    let endpoint_triggers = {
        use futures::StreamExt;
        // A re-list changes nothing by itself; only changes re-check the services.
        feed.subscribe()
            .filter_map(|c| std::future::ready((!c.listed).then_some(())))
    };
    let pod_feed = {
        let (feed, client) = (feed.clone(), client.clone());
        async move {
            feed.run(client).await;
            Ok::<(), anyhow::Error>(())
        }
    };
    // Each controller is a task of its own: polled together in one task they shared one
    // cooperative budget and one core, and under load the busy ones (the ReplicaSet
    // controller's creates) starved the rest, whose watches then fell far behind.
    let tasks = vec![
        ("pod feed", tokio::spawn(pod_feed)),
        ("replicaset", tokio::spawn(replicaset::run(client.clone()))),
        ("deployment", tokio::spawn(deployment::run(client.clone()))),
        ("statefulset", tokio::spawn(statefulset::run(client.clone(), set_pods))),
        ("daemonset", tokio::spawn(daemonset::run(client.clone(), daemon_pods))),
        ("job", tokio::spawn(job::run(client.clone(), job_pods))),
        ("cronjob", tokio::spawn(cronjob::run(client.clone()))),
        (
            "endpoints",
            tokio::spawn(endpoints::run(client.clone(), endpoint_triggers)),
        ),
        ("mirroring", tokio::spawn(mirroring::run(client.clone()))),
        ("serviceaccount", tokio::spawn(serviceaccount::run(client.clone()))),
        ("root_ca", tokio::spawn(root_ca::run(client.clone(), opts.root_ca_pem))),
        ("gc", tokio::spawn(gc::run(client.clone()))),
        (
            "nodelifecycle",
            tokio::spawn(nodelifecycle::run(client.clone(), opts.node_lifecycle)),
        ),
        (
            "nodeipam",
            tokio::spawn(nodeipam::run(client.clone(), nodeipam::default_cluster_cidr(), 24)),
        ),
        ("podgc", tokio::spawn(podgc::run(client.clone()))),
        ("volumes", tokio::spawn(volumes::run(client, opts.volume_root))),
    ];
    let (names, handles): (Vec<&str>, Vec<_>) = tasks.into_iter().unzip();
    let _abort = AbortAll(handles.iter().map(|h| h.abort_handle()).collect());
    let mut pending: Vec<_> = handles
        .into_iter()
        .zip(names)
        .map(|(h, n)| Box::pin(async move { (n, h.await) }))
        .collect();
    // Until one fails (as `try_join!`): the others stop with it.
    while !pending.is_empty() {
        let ((name, res), _, rest) = futures::future::select_all(pending).await;
        pending = rest;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.context(format!("the {name} controller"))),
            Err(e) => anyhow::bail!("the {name} controller ended: {e}"),
        }
    }
    Ok(())
}

/// Aborts the controllers' tasks when the controller manager ends.
struct AbortAll(Vec<tokio::task::AbortHandle>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}
