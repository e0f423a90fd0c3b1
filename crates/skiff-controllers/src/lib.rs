//! Skiff's controller manager: level-triggered reconcilers (kube-runtime `Controller`) that
//! read desired and observed state through the API server and converge. They are API clients
//! only and never touch the store; every restart is safe.
//!
//! This wave: the ReplicaSet controller and the garbage collector. The others of the
//! controllers issue (Deployment, StatefulSet, DaemonSet, Job, CronJob, endpoints, nodes,
//! volumes) follow.

pub mod gc;
pub mod replicaset;

/// Run every controller until one fails.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    tokio::try_join!(replicaset::run(client.clone()), gc::run(client))?;
    Ok(())
}
