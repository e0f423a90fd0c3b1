//! Pods on other nodes: watches Nodes and keeps a route to every other node's pod CIDR via its
//! InternalIP ([`skiff_net::routes`], host-gw), and those CIDRs out of the egress masquerade.
//! A node that is deleted loses its route on every other node; the routes of an earlier run
//! are reconciled, not flushed, so traffic between pods keeps flowing across an agent restart
//! and while the API server is away.
//!
//! Nodes whose address is not on a subnet this node is connected to are reached through the
//! VXLAN overlay ([`skiff_net::overlay`]), made the first time such a node shows up.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client, ResourceExt};
use skiff_net::overlay::{self, FarNode, Overlay};
use skiff_net::routes::{self, PeerRoute, PeerRoutes};

/// Another node's pods, as its Node object says.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub node: String,
    pub cidr: Ipv4Net,
    pub ip: Ipv4Addr,
}

/// The nodes other than `me` (by name, and not at one of `my_ips`) that have an IPv4 pod CIDR
/// and an IPv4 InternalIP.
pub fn peers(nodes: &[Arc<Node>], me: &str, my_ips: &[IpAddr]) -> Vec<Peer> {
    let mut out: Vec<Peer> = nodes
        .iter()
        .filter(|n| n.name_any() != me)
        .filter_map(|n| {
            let cidr: Ipv4Net = n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
            let ip = n
                .status
                .as_ref()?
                .addresses
                .iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
                .find_map(|a| a.address.parse::<Ipv4Addr>().ok())?;
            (!my_ips.contains(&IpAddr::V4(ip))).then(|| Peer {
                node: n.name_any(),
                cidr,
                ip,
            })
        })
        .collect();
    out.sort();
    out
}

/// Keeps this node's routes to other nodes' pods in step with the cluster until the process
/// ends. `node_ip` is this node's own address (nodes sharing it are not routed to), `pod_cidr`
/// its own pod CIDR (the overlay device's address).
pub async fn run(client: Client, node_name: String, node_ip: IpAddr, pod_cidr: Ipv4Net) {
    let table = match PeerRoutes::connect().await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "pods on other nodes are unreachable from this node (netlink)");
            return;
        }
    };
    let notify = Arc::new(tokio::sync::Notify::new());
    let nodes = crate::proxy::reflect(Api::<Node>::all(client), notify.clone());
    // Nothing is removed before the whole list of nodes is known.
    let _ = nodes.wait_until_ready().await;
    let mut off_link_seen: BTreeSet<Peer> = BTreeSet::new();
    let mut overlay: Option<Overlay> = None;
    let mut exempt: Option<Vec<Ipv4Net>> = None;
    loop {
        // A short pause gathers a burst of changes into one pass.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let all = peers(&nodes.state(), &node_name, &[node_ip]);
        match table.connected().await {
            Ok(connected) => {
                let (near, far): (Vec<&Peer>, Vec<&Peer>) = all.iter().partition(|p| routes::on_link(p.ip, &connected));
                let far: BTreeSet<Peer> = far.into_iter().cloned().collect();
                // Nodes on other networks: through the overlay, made when first needed.
                if overlay.is_none() && !far.is_empty() {
                    match node_ip {
                        IpAddr::V4(ip) => match Overlay::ensure(ip, pod_cidr).await {
                            Ok(o) => {
                                tracing::info!(
                                    device = overlay::DEVICE,
                                    "VXLAN overlay up for nodes on other networks"
                                );
                                overlay = Some(o);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot make the VXLAN overlay: pods on nodes on other networks are unreachable")
                            }
                        },
                        IpAddr::V6(_) => tracing::warn!("the VXLAN overlay needs an IPv4 node address"),
                    }
                }
                if far != off_link_seen {
                    let names: Vec<String> = far.iter().take(10).map(|p| format!("{} ({})", p.node, p.ip)).collect();
                    if !far.is_empty() {
                        tracing::info!(count = far.len(), nodes = %names.join(", "), "nodes on other networks, reached over VXLAN");
                    }
                }
                off_link_seen = far.clone();
                let mut want: Vec<PeerRoute> = near
                    .iter()
                    .map(|p| PeerRoute {
                        cidr: p.cidr,
                        via: p.ip,
                        dev: None,
                    })
                    .collect();
                if let Some(o) = &overlay {
                    let far_nodes: Vec<FarNode> = far.iter().map(|p| FarNode { cidr: p.cidr, ip: p.ip }).collect();
                    match o.reconcile(&far_nodes).await {
                        Ok(()) => want.extend(far_nodes.iter().map(|f| PeerRoute {
                            cidr: f.cidr,
                            via: f.vtep_ip(),
                            dev: Some(o.index()),
                        })),
                        Err(e) => tracing::warn!(error = %e, "programming the VXLAN overlay failed; retrying"),
                    }
                }
                match table.reconcile(&want).await {
                    Ok(report) => {
                        for r in &report.added {
                            tracing::info!(cidr = %r.cidr, via = %r.via, "route to a node's pods added");
                        }
                        for r in &report.removed {
                            tracing::info!(cidr = %r.cidr, via = %r.via, "route to a node's pods removed");
                        }
                        for (r, why) in &report.failed {
                            tracing::warn!(cidr = %r.cidr, via = %r.via, error = %why, "route to a node's pods");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the routing table failed; retrying"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the node's addresses failed; retrying"),
        }
        let cidrs: Vec<Ipv4Net> = all.iter().map(|p| p.cidr).collect();
        if exempt.as_ref() != Some(&cidrs) {
            let c = cidrs.clone();
            match tokio::task::spawn_blocking(move || routes::exempt_from_masquerade(&c)).await {
                Ok(Ok(())) => exempt = Some(cidrs),
                Ok(Err(e)) => tracing::debug!(error = %e, "other nodes' pod CIDRs in the masquerade exceptions"),
                Err(_) => return,
            }
        }
        // Level-triggered: also every 30 s, for routes removed behind the agent's back (an
        // interface that went down takes its routes with it).
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"podCIDR": cidr},
                "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]}
            }))
            .expect("node"),
        )
    }

    #[test]
    fn other_nodes_with_a_cidr_and_an_address() {
        let nodes = vec![
            node("node-0", Some("10.42.0.0/24"), "192.168.77.10"),
            node("node-1", Some("10.42.1.0/24"), "192.168.77.11"),
            node("node-2", None, "192.168.77.12"),
            node("node-3", Some("10.42.3.0/24"), "fd00::3"),
            node("node-4", Some("10.42.4.0/24"), "127.0.0.1"),
        ];
        let got = peers(&nodes, "node-0", &["127.0.0.1".parse().expect("ip")]);
        assert_eq!(
            got,
            vec![Peer {
                node: "node-1".into(),
                cidr: "10.42.1.0/24".parse().expect("cidr"),
                ip: "192.168.77.11".parse().expect("ip"),
            }],
            "not itself, not without a CIDR, not IPv6-only, not at its own address"
        );
    }
}
