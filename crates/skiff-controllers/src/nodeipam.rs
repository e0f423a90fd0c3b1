//! Node IPAM: every node without a pod CIDR gets one from the cluster CIDR (`10.42.0.0/16`,
//! a `/24` each), never one another node holds, as kube-controller-manager does with
//! `--allocate-node-cidrs`. The agent waits for it before it brings up pod networking.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The CIDRs a node's spec claims.
fn claimed(n: &Node) -> Vec<String> {
    let spec = n.spec.as_ref();
    let mut out: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if let Some(c) = spec.and_then(|s| s.pod_cidr.clone()).filter(|c| !c.is_empty()) {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The first `/node_prefix` of `cluster` that nobody holds.
pub fn next_free(cluster: ipnet::Ipv4Net, node_prefix: u8, used: &HashSet<String>) -> Option<ipnet::Ipv4Net> {
    cluster
        .subnets(node_prefix)
        .ok()?
        .find(|s| !used.contains(&s.to_string()))
}

/// Assign pod CIDRs until the process ends.
pub async fn run(client: Client, cluster: ipnet::Ipv4Net, node_prefix: u8) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client);
    let mut nodes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut pending: Vec<String> = Vec::new();
    let mut stream = Box::pin(watcher(api.clone(), watcher::Config::default()).default_backoff());
    let mut synced = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => {
                nodes.clear();
                synced = false;
            }
            Ok(watcher::Event::InitApply(n)) | Ok(watcher::Event::Apply(n)) => {
                let c = claimed(&n);
                if c.is_empty() && n.metadata.deletion_timestamp.is_none() {
                    pending.push(n.name_any());
                }
                nodes.insert(n.name_any(), c);
            }
            Ok(watcher::Event::Delete(n)) => {
                nodes.remove(&n.name_any());
            }
            Ok(watcher::Event::InitDone) => synced = true,
            Err(e) => {
                tracing::debug!(error = %e, "node watch error; retrying");
                continue;
            }
        }
        // Assign only from a complete view, so no CIDR is handed out twice.
        if !synced {
            continue;
        }
        for name in std::mem::take(&mut pending) {
            if nodes.get(&name).is_none_or(|c| !c.is_empty()) {
                continue;
            }
            let used: HashSet<String> = nodes.values().flatten().cloned().collect();
            let Some(cidr) = next_free(cluster, node_prefix, &used) else {
                tracing::warn!(node = %name, cluster = %cluster, "no pod CIDR left for the node (CIDRNotAvailable)");
                continue;
            };
            let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    tracing::info!(node = %name, pod_cidr = %cidr, "assigned the node's pod CIDR");
                    nodes.insert(name, vec![cidr.to_string()]);
                }
                Err(e) => tracing::warn!(node = %name, error = %e, "assigning a pod CIDR failed"),
            }
        }
    }
    Ok(())
}

/// The default cluster CIDR (k3s' `10.42.0.0/16`).
pub fn default_cluster_cidr() -> ipnet::Ipv4Net {
    ipnet::Ipv4Net::new(Ipv4Addr::new(10, 42, 0, 0), 16).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_first_free_block() {
        let cluster = default_cluster_cidr();
        let mut used = HashSet::new();
        assert_eq!(
            next_free(cluster, 24, &used).map(|c| c.to_string()).as_deref(),
            Some("10.42.0.0/24")
        );
        used.insert("10.42.0.0/24".to_string());
        used.insert("10.42.2.0/24".to_string());
        assert_eq!(
            next_free(cluster, 24, &used).map(|c| c.to_string()).as_deref(),
            Some("10.42.1.0/24")
        );
        let all: HashSet<String> = cluster.subnets(24).expect("subnets").map(|s| s.to_string()).collect();
        assert_eq!(next_free(cluster, 24, &all), None);
    }
}
