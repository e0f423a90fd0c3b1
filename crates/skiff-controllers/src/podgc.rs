//! Pod garbage collection of pods bound to nodes that no longer exist (upstream PodGC's
//! `gcOrphaned`): when a Node is deleted, its pods are marked `DisruptionTarget`
//! (`DeletionByPodGC`) and deleted at once (grace period 0, as no agent is left to stop
//! them), so their endpoints leave every Service and their controllers replace them elsewhere.
//!
//! Deleted nodes are noticed from the Node watch; a sweep over all pods at start and every
//! ten minutes catches what happened while the controller was not watching. A node is only
//! judged gone after a short quarantine and an authoritative read, so a pod bound to a node
//! that the watch has not shown yet is never collected.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;

/// How long a node must have been missing before its pods are collected.
const QUARANTINE: Duration = Duration::from_secs(5);
/// How often every pod is checked against the nodes.
const SWEEP: Duration = Duration::from_secs(600);

/// The nodes that `pods` are bound to and `nodes` does not hold.
pub fn missing_nodes<'a>(pods: impl IntoIterator<Item = &'a Pod>, nodes: &HashSet<String>) -> BTreeSet<String> {
    pods.into_iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .filter(|n| !n.is_empty() && !nodes.contains(n))
        .collect()
}

/// Deletes the pods bound to `node` if the node does not exist (read from the API server,
/// not a cache).
async fn collect(client: &Client, node: &str) -> Result<(), kube::Error> {
    if Api::<Node>::all(client.clone()).get_opt(node).await?.is_some() {
        return Ok(());
    }
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    for pod in pods.items {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let condition = json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True",
            "reason": "DeletionByPodGC", "message": "PodGC: node no longer exists", "lastTransitionTime": now}]}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&condition))
            .await
        {
            tracing::debug!(pod = %name, namespace = %ns, error = %e, "marking an orphaned pod");
        }
        match api.delete(&name, &DeleteParams::default().grace_period(0)).await {
            Ok(_) => {
                tracing::info!(pod = %name, namespace = %ns, node = %node, "deleted a pod of a node that no longer exists")
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Collects the pods of `node` after the quarantine, unless that is already under way.
fn schedule(client: &Client, pending: &Arc<Mutex<HashSet<String>>>, node: String) {
    if !pending.lock().unwrap_or_else(|p| p.into_inner()).insert(node.clone()) {
        return;
    }
    let (client, pending) = (client.clone(), pending.clone());
    tokio::spawn(async move {
        tokio::time::sleep(QUARANTINE).await;
        let mut backoff = Duration::from_secs(1);
        while let Err(e) = collect(&client, &node).await {
            tracing::warn!(node = %node, error = %e, "collecting the pods of a deleted node failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&node);
    });
}

/// Every pod checked against the nodes now in `store`, a page of pods at a time (a cluster's
/// every pod at once is hundreds of megabytes of objects at 50,000 pods).
async fn sweep(client: &Client, store: &Store<PartialObjectMeta<Node>>) -> Result<BTreeSet<String>, kube::Error> {
    let nodes: HashSet<String> = store.state().iter().map(|n| n.name_any()).collect();
    let api = Api::<Pod>::all(client.clone());
    let mut missing = BTreeSet::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        missing.extend(missing_nodes(&page.items, &nodes));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => params = params.continue_token(&next),
            None => return Ok(missing),
        }
    }
}

/// Collect the pods of deleted nodes until the process ends.
pub async fn run(client: Client) -> anyhow::Result<()> {
    // Node names are all it needs: a metadata-only watch, not a second copy of every Node.
    let (store, writer) = reflector::store::<PartialObjectMeta<Node>>();
    let (tx, mut deleted) = tokio::sync::mpsc::unbounded_channel::<String>();
    let feed = reflector::reflector(
        writer,
        watcher(
            Api::<PartialObjectMeta<Node>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .for_each(move |ev| {
        if let Ok(watcher::Event::Delete(n)) = ev {
            let _ = tx.send(n.name_any());
        }
        std::future::ready(())
    });
    let gc = async {
        let pending: Arc<Mutex<HashSet<String>>> = Arc::default();
        let _ = store.wait_until_ready().await;
        let mut tick = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                _ = tick.tick() => match sweep(&client, &store).await {
                    Ok(gone) => {
                        for node in gone {
                            schedule(&client, &pending, node);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "pod GC sweep failed"),
                },
                Some(node) = deleted.recv() => schedule(&client, &pending, node),
            }
        }
    };
    tokio::select! {
        () = feed => anyhow::bail!("the node watch of the pod GC ended"),
        _ = gc => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_of_nodes_that_are_not_there() {
        let pod = |name: &str, node: Option<&str>| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [], "nodeName": node}}))
                .expect("pod")
        };
        let pods = [
            pod("a", Some("node-1")),
            pod("b", Some("node-2")),
            pod("c", None),
            pod("d", Some("node-2")),
        ];
        let nodes: HashSet<String> = ["node-1".to_string()].into();
        assert_eq!(missing_nodes(&pods, &nodes), BTreeSet::from(["node-2".to_string()]));
    }
}
