//! Service VIPs in nftables, as kube-proxy's nftables mode programs them: a table of Skiff's
//! own (`ip skiff-services`) where
//!
//! - `cluster-ips` maps `ClusterIP . protocol . port` and `node-ports` maps `protocol . port`
//!   (for any local address of the node) to a chain per service port;
//! - a service port's chain picks one of its ready endpoints at random per connection
//!   (`numgen random`) and jumps to the endpoint's chain, which DNATs to it;
//! - traffic that would not come back through this node (node ports; a pod reaching itself
//!   through its service; the node's loopback) is marked and masqueraded;
//! - a service port without ready endpoints is in `no-endpoints` and rejected at once
//!   (connection refused), not left to time out.
//!
//! [`ServiceTable::apply`] changes only the service ports whose rules changed (their chains are
//! flushed and refilled, their map elements replaced, in one `nft` transaction); the first
//! apply after a start also deletes chains of service ports that are gone, so the table is
//! reconciled, never flushed wholesale.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::nat::Protocol;
use crate::NetError;

/// The table's name (family `ip`).
pub const TABLE: &str = "skiff-services";
const MASQ_MARK: u32 = 0x4000;

/// One port of one service, with its ready endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePort {
    /// `namespace/name:port-name-or-number/protocol`, unique per service port.
    pub key: String,
    pub cluster_ip: Option<Ipv4Addr>,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Ready endpoints: address and target port.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
    /// `sessionAffinity: ClientIP`: a client keeps its endpoint for this many seconds after
    /// its last connection (`sessionAffinityConfig.clientIP.timeoutSeconds`, default 10800).
    pub affinity_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local`: node-port traffic goes only to these endpoints (this
    /// node's, a subset of `endpoints`) and keeps the client's address; with none it is
    /// dropped, as kube-proxy does.
    pub external_local: Option<Vec<(Ipv4Addr, u16)>>,
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

/// A short stable name for a service port's chains (FNV-1a of its key).
fn chain_id(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The node's service rules, as last applied.
pub struct ServiceTable {
    pod_cidr: Ipv4Net,
    /// Bridged traffic passes netfilter (`br_netfilter`): an endpoint's answer to a pod on
    /// the same bridge is un-NATed; without it such traffic is masqueraded instead.
    bridged: bool,
    applied: BTreeMap<String, ServicePort>,
    reconciled: bool,
}

impl ServiceTable {
    /// Makes the table's fixed parts (idempotent; service chains and elements are kept).
    pub fn ensure(pod_cidr: Ipv4Net) -> Result<ServiceTable, NetError> {
        let script = format!(
            "add table ip {TABLE}
add map ip {TABLE} cluster-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}
add map ip {TABLE} node-ports {{ type inet_proto . inet_service : verdict ; }}
add set ip {TABLE} no-endpoints {{ type ipv4_addr . inet_proto . inet_service ; }}
add set ip {TABLE} no-endpoint-node-ports {{ type inet_proto . inet_service ; }}
add chain ip {TABLE} services
add chain ip {TABLE} mark-for-masquerade
add chain ip {TABLE} prerouting {{ type nat hook prerouting priority dstnat ; policy accept ; }}
add chain ip {TABLE} output {{ type nat hook output priority -100 ; policy accept ; }}
add chain ip {TABLE} postrouting {{ type nat hook postrouting priority srcnat ; policy accept ; }}
add chain ip {TABLE} filter-input {{ type filter hook input priority -110 ; policy accept ; }}
add chain ip {TABLE} filter-forward {{ type filter hook forward priority -110 ; policy accept ; }}
add chain ip {TABLE} filter-output {{ type filter hook output priority -110 ; policy accept ; }}
flush chain ip {TABLE} services
flush chain ip {TABLE} mark-for-masquerade
flush chain ip {TABLE} prerouting
flush chain ip {TABLE} output
flush chain ip {TABLE} postrouting
flush chain ip {TABLE} filter-input
flush chain ip {TABLE} filter-forward
flush chain ip {TABLE} filter-output
add rule ip {TABLE} services ip daddr . meta l4proto . th dport vmap @cluster-ips
add rule ip {TABLE} services fib daddr type local meta l4proto . th dport vmap @node-ports
add rule ip {TABLE} mark-for-masquerade meta mark set meta mark | {MASQ_MARK:#x}
add rule ip {TABLE} prerouting jump services
add rule ip {TABLE} output jump services
add rule ip {TABLE} postrouting meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade
add rule ip {TABLE} filter-input ct state new ip daddr . meta l4proto . th dport @no-endpoints reject
add rule ip {TABLE} filter-input ct state new fib daddr type local meta l4proto . th dport @no-endpoint-node-ports reject
add rule ip {TABLE} filter-forward ct state new ip daddr . meta l4proto . th dport @no-endpoints reject
add rule ip {TABLE} filter-output ct state new ip daddr . meta l4proto . th dport @no-endpoints reject
add rule ip {TABLE} filter-output ct state new fib daddr type local meta l4proto . th dport @no-endpoint-node-ports reject
"
        );
        crate::nat::nft(&script)?;
        // An endpoint answering a pod on the same bridge answers it directly, over the
        // bridge; only if bridged packets pass netfilter (as kube-proxy requires) does the
        // answer get its VIP back. Without `br_netfilter`, masquerade those connections.
        let bridged = std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1").is_ok();
        if !bridged {
            tracing::warn!("br_netfilter is not available: pods reaching services on their own node are masqueraded");
        }
        Ok(ServiceTable {
            bridged,
            pod_cidr,
            applied: BTreeMap::new(),
            reconciled: false,
        })
    }

    /// Brings the table to `desired`, touching only what changed (and, the first time, deleting
    /// chains of service ports that are gone).
    pub fn apply(&mut self, desired: &[ServicePort]) -> Result<(), NetError> {
        let want: BTreeMap<String, ServicePort> = desired.iter().map(|s| (s.key.clone(), s.clone())).collect();
        let mut script = String::new();
        for (key, old) in &self.applied {
            if want.get(key) != Some(old) {
                self.remove_rules(old, &mut script);
            }
        }
        for (key, sp) in &want {
            if self.applied.get(key) != Some(sp) {
                self.add_rules(sp, &mut script);
            }
        }
        if !self.reconciled {
            // After a start nothing is known to be applied: every wanted service port was
            // added above. Elements of service ports that are gone go with a flush of the
            // maps (before the additions), their chains are deleted (after them).
            let keep: BTreeSet<String> = want.keys().map(|k| chain_id(k)).collect();
            let listed = crate::nat::nft(&format!("list table ip {TABLE}\n"))?;
            let stale: Vec<String> = listed
                .lines()
                .filter_map(|l| l.trim().strip_prefix("chain "))
                .map(|c| c.trim_end_matches('{').trim().to_string())
                .filter(|name| {
                    let id = name
                        .strip_prefix("svc-")
                        .or_else(|| name.strip_prefix("nodeport-"))
                        .or_else(|| name.strip_prefix("ep-").and_then(|r| r.split('-').next()));
                    id.is_some_and(|id| !keep.contains(id))
                })
                .collect();
            let mut head = format!(
                "flush map ip {TABLE} cluster-ips\nflush map ip {TABLE} node-ports\nflush set ip {TABLE} no-endpoints\nflush set ip {TABLE} no-endpoint-node-ports\n"
            );
            head.push_str(&script);
            script = head;
            // Rules of stale chains refer to each other: empty them all, then delete them.
            for name in &stale {
                script.push_str(&format!("flush chain ip {TABLE} {name}\n"));
            }
            for name in &stale {
                script.push_str(&format!("delete chain ip {TABLE} {name}\n"));
            }
        }
        if !script.is_empty() {
            crate::nat::nft(&script)?;
        }
        self.applied = want;
        self.reconciled = true;
        Ok(())
    }

    fn add_elements(&self, sp: &ServicePort, s: &mut String) {
        let id = chain_id(&sp.key);
        let p = proto(sp.protocol);
        if sp.endpoints.is_empty() {
            if let Some(ip) = sp.cluster_ip {
                s.push_str(&format!(
                    "add element ip {TABLE} no-endpoints {{ {ip} . {p} . {} }}\n",
                    sp.port
                ));
            }
            if let Some(np) = sp.node_port {
                s.push_str(&format!(
                    "add element ip {TABLE} no-endpoint-node-ports {{ {p} . {np} }}\n"
                ));
            }
            return;
        }
        if let Some(ip) = sp.cluster_ip {
            s.push_str(&format!(
                "add element ip {TABLE} cluster-ips {{ {ip} . {p} . {} : goto svc-{id} }}\n",
                sp.port
            ));
        }
        if let Some(np) = sp.node_port {
            s.push_str(&format!(
                "add element ip {TABLE} node-ports {{ {p} . {np} : goto nodeport-{id} }}\n"
            ));
        }
    }

    fn add_rules(&self, sp: &ServicePort, s: &mut String) {
        let id = chain_id(&sp.key);
        let p = proto(sp.protocol);
        if !sp.endpoints.is_empty() {
            for (i, (ip, port)) in sp.endpoints.iter().enumerate() {
                let ep = format!("ep-{id}-{i}");
                s.push_str(&format!("add chain ip {TABLE} {ep}\nflush chain ip {TABLE} {ep}\n"));
                if let Some(t) = sp.affinity_seconds {
                    // The clients this endpoint served recently (kube-proxy's affinity sets).
                    s.push_str(&format!(
                        "add set ip {TABLE} aff-{id}-{i} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {t}s ; }}\n"
                    ));
                    s.push_str(&format!(
                        "add rule ip {TABLE} {ep} update @aff-{id}-{i} {{ ip saddr }}\n"
                    ));
                }
                // A pod reaching itself through its service: the answer must come back
                // through the node (and, without br_netfilter, any pod of this bridge).
                let from = if self.bridged {
                    ip.to_string()
                } else {
                    self.pod_cidr.to_string()
                };
                s.push_str(&format!(
                    "add rule ip {TABLE} {ep} ip saddr {from} jump mark-for-masquerade\n"
                ));
                s.push_str(&format!(
                    "add rule ip {TABLE} {ep} meta l4proto {p} dnat to {ip}:{port}\n"
                ));
            }
            let svc = format!("svc-{id}");
            s.push_str(&format!("add chain ip {TABLE} {svc}\nflush chain ip {TABLE} {svc}\n"));
            // From outside the node's pods (the node itself, other nodes): masquerade, so the
            // answer comes back through this node.
            s.push_str(&format!(
                "add rule ip {TABLE} {svc} ip saddr != {} jump mark-for-masquerade\n",
                self.pod_cidr
            ));
            let n = sp.endpoints.len();
            if sp.affinity_seconds.is_some() {
                for i in 0..n {
                    s.push_str(&format!(
                        "add rule ip {TABLE} {svc} ip saddr @aff-{id}-{i} goto ep-{id}-{i}\n"
                    ));
                }
            }
            let picks: Vec<String> = (0..n).map(|i| format!("{i} : goto ep-{id}-{i}")).collect();
            s.push_str(&format!(
                "add rule ip {TABLE} {svc} numgen random mod {n} vmap {{ {} }}\n",
                picks.join(", ")
            ));
            if sp.node_port.is_some() {
                let np = format!("nodeport-{id}");
                s.push_str(&format!("add chain ip {TABLE} {np}\nflush chain ip {TABLE} {np}\n"));
                match &sp.external_local {
                    None => {
                        s.push_str(&format!("add rule ip {TABLE} {np} jump mark-for-masquerade\n"));
                        s.push_str(&format!("add rule ip {TABLE} {np} goto svc-{id}\n"));
                    }
                    Some(local) => {
                        // The node itself and its pods go anywhere, as with Cluster (as
                        // kube-proxy does).
                        s.push_str(&format!(
                            "add rule ip {TABLE} {np} fib saddr type local jump mark-for-masquerade\n"
                        ));
                        s.push_str(&format!(
                            "add rule ip {TABLE} {np} fib saddr type local goto svc-{id}\n"
                        ));
                        s.push_str(&format!(
                            "add rule ip {TABLE} {np} ip saddr {} goto svc-{id}\n",
                            self.pod_cidr
                        ));
                        // Others reach this node's endpoints, without masquerade: the pod
                        // sees the client.
                        let picks: Vec<String> = local
                            .iter()
                            .filter_map(|ep| sp.endpoints.iter().position(|e| e == ep))
                            .enumerate()
                            .map(|(k, i)| format!("{k} : goto ep-{id}-{i}"))
                            .collect();
                        if picks.is_empty() {
                            s.push_str(&format!("add rule ip {TABLE} {np} drop\n"));
                        } else {
                            s.push_str(&format!(
                                "add rule ip {TABLE} {np} numgen random mod {} vmap {{ {} }}\n",
                                picks.len(),
                                picks.join(", ")
                            ));
                        }
                    }
                }
            }
        }
        self.add_elements(sp, s);
    }

    fn remove_rules(&self, sp: &ServicePort, s: &mut String) {
        let id = chain_id(&sp.key);
        let p = proto(sp.protocol);
        // Elements first (they refer to the chains), then the chains.
        if let Some(ip) = sp.cluster_ip {
            let set = if sp.endpoints.is_empty() {
                "no-endpoints"
            } else {
                "cluster-ips"
            };
            s.push_str(&format!(
                "delete element ip {TABLE} {set} {{ {ip} . {p} . {} }}\n",
                sp.port
            ));
        }
        if let Some(np) = sp.node_port {
            let set = if sp.endpoints.is_empty() {
                "no-endpoint-node-ports"
            } else {
                "node-ports"
            };
            s.push_str(&format!("delete element ip {TABLE} {set} {{ {p} . {np} }}\n"));
        }
        if !sp.endpoints.is_empty() {
            if sp.node_port.is_some() {
                s.push_str(&format!("delete chain ip {TABLE} nodeport-{id}\n"));
            }
            s.push_str(&format!("delete chain ip {TABLE} svc-{id}\n"));
            for i in 0..sp.endpoints.len() {
                s.push_str(&format!("delete chain ip {TABLE} ep-{id}-{i}\n"));
                if sp.affinity_seconds.is_some() {
                    s.push_str(&format!("delete set ip {TABLE} aff-{id}-{i}\n"));
                }
            }
        }
    }
}
