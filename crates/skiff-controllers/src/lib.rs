//! Skiff's controller manager: level-triggered reconcilers (kube-runtime `Controller`) that
//! read desired and observed state through the API server and converge. They are API clients
//! only and never touch the store; every restart is safe.
//!
//! This wave: ReplicaSet, Deployment, StatefulSet, DaemonSet, Job, CronJob,
//! Endpoints/EndpointSlices, the default ServiceAccount, PersistentVolumeClaim provisioning
//! (`local-path`), the garbage collector and node lifecycle (NotReady, unreachable taints,
//! taint-based eviction).

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod job;
pub mod nodelifecycle;
pub mod replicaset;
pub mod serviceaccount;
pub mod statefulset;
pub mod volumes;

/// Shared controller settings: triggers for the same object within 100 ms are batched into
/// one reconcile, so a burst of pod updates costs one pass rather than one per update.
pub(crate) fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().debounce(std::time::Duration::from_millis(100))
}

/// Options of the controller manager.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where local-path volumes live on the nodes.
    pub volume_root: String,
    pub node_lifecycle: nodelifecycle::NodeLifecycleOptions,
}

/// Run every controller until one fails.
pub async fn run(client: kube::Client, opts: Options) -> anyhow::Result<()> {
    tokio::try_join!(
        replicaset::run(client.clone()),
        deployment::run(client.clone()),
        statefulset::run(client.clone()),
        daemonset::run(client.clone()),
        job::run(client.clone()),
        cronjob::run(client.clone()),
        endpoints::run(client.clone()),
        serviceaccount::run(client.clone()),
        gc::run(client.clone()),
        nodelifecycle::run(client.clone(), opts.node_lifecycle),
        volumes::run(client, opts.volume_root),
    )?;
    Ok(())
}
