//! The node's NAT, in one nftables table of Skiff's own (`ip skiff`), programmed with the
//! `nft` command (nftables' own tool, as kube-proxy's nftables mode drives it: a script on its
//! stdin is applied atomically). The table is reconciled at start, never flushed with its
//! elements, so what is published survives an agent restart.
//!
//! - `hostPort`: a pod's container port published on the node, as the CNI `portmap` plugin
//!   does it. A map from `protocol . port` to `pod address . container port`; the rules DNAT
//!   traffic for any of the node's local addresses (from outside, from the node itself, from
//!   pods) through the map, and masquerade what would otherwise come back the wrong way (from
//!   the node's loopback, or a pod reaching a pod on the same bridge). Publishing or
//!   withdrawing a pod's ports adds or deletes map elements only.
//! - Egress: traffic from pods leaves the node masqueraded behind the node's address only to
//!   the destinations the user configured (`--egress-cidr`); to anywhere else it is not
//!   translated (and so, on a network that does not route the pod CIDR, does not get back).
//!   Traffic to other nodes' pods (the `peer-pods` set, kept by [`crate::routes`]) is never
//!   masqueraded: pod addresses are kept between nodes, as Kubernetes requires.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipnet::Ipv4Net;

use crate::NetError;

/// The table's name (family `ip`).
pub const TABLE: &str = "skiff";

/// The set of other nodes' pod CIDRs ([`crate::routes::exempt_from_masquerade`]): traffic
/// from pods to pods keeps its address, whatever `--egress-cidr` says.
pub const PEER_PODS: &str = "peer-pods";

/// Marks a connection's first packet that a host port DNATed in `prerouting`, so only those
/// are masqueraded when a pod reaches a pod on the same bridge through a host port. Matching
/// every DNATed pod-to-pod connection instead would also catch service VIPs
/// ([`crate::services`] DNATs them in its own table), which must keep the client pod's
/// address, as kube-proxy keeps it.
const HOST_PORT_MARK: u32 = 0x2000;

/// A protocol a host port can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Kubernetes' name (`TCP`, `UDP`, `SCTP`; default TCP).
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub protocol: Protocol,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
}

/// Applies an `nft` script atomically; returns what `nft` printed.
pub(crate) fn nft(script: &str) -> Result<String, NetError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetError::Io {
            op: "run nft (nftables)",
            path: "nft".into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|source| NetError::Io {
            op: "write to nft",
            path: "nft".into(),
            source,
        })?;
    }
    let out = child.wait_with_output().map_err(|source| NetError::Io {
        op: "run nft (nftables)",
        path: "nft".into(),
        source,
    })?;
    if !out.status.success() {
        return Err(NetError::Nft {
            script: script.to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes the table, map, set and rules (idempotent; the host ports' elements are kept) for a
/// node whose pods are in `pod_cidr` behind bridge `bridge`, masquerading pods' traffic to
/// `egress` destinations.
pub fn ensure(pod_cidr: Ipv4Net, bridge: &str, egress: &[Ipv4Net]) -> Result<(), NetError> {
    // Traffic from the node's loopback DNATed to a pod leaves through the bridge with a
    // loopback source: the kernel drops that unless the bridge allows it (kube-proxy sets the
    // same for node ports on localhost); the masquerade below then rewrites the source.
    // A pod reaching a host port on its own node comes in on the bridge and, DNATed, goes out
    // on it again: that is forwarding (the CNI bridge plugin turns it on for its gateway too).
    for (path, op) in [
        (
            format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
            "allow loopback sources (route_localnet) on",
        ),
        (
            "/proc/sys/net/ipv4/ip_forward".to_string(),
            "turn on IPv4 forwarding in",
        ),
    ] {
        std::fs::write(&path, "1").map_err(|source| NetError::Io {
            op,
            path: path.into(),
            source,
        })?;
    }
    let elements = if egress.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = egress.iter().map(|n| n.to_string()).collect();
        format!("add element ip {TABLE} egress {{ {} }}\n", list.join(", "))
    };
    let script = format!(
        "add table ip {TABLE}
add map ip {TABLE} ports {{ type inet_proto . inet_service : ipv4_addr . inet_service ; }}
add chain ip {TABLE} prerouting {{ type nat hook prerouting priority dstnat ; policy accept ; }}
add chain ip {TABLE} output {{ type nat hook output priority -100 ; policy accept ; }}
add chain ip {TABLE} postrouting {{ type nat hook postrouting priority srcnat ; policy accept ; }}
flush chain ip {TABLE} prerouting
flush chain ip {TABLE} output
flush chain ip {TABLE} postrouting
add rule ip {TABLE} prerouting fib daddr type local meta l4proto . th dport @ports meta mark set meta mark | {HOST_PORT_MARK:#x}
add rule ip {TABLE} prerouting fib daddr type local dnat ip to meta l4proto . th dport map @ports
add rule ip {TABLE} output fib daddr type local dnat ip to meta l4proto . th dport map @ports
add rule ip {TABLE} postrouting ct status dnat ip saddr 127.0.0.0/8 masquerade
add rule ip {TABLE} postrouting meta mark & {HOST_PORT_MARK:#x} == {HOST_PORT_MARK:#x} ip saddr {pod_cidr} ip daddr {pod_cidr} masquerade
add set ip {TABLE} egress {{ type ipv4_addr ; flags interval ; auto-merge ; }}
flush set ip {TABLE} egress
add set ip {TABLE} {PEER_PODS} {{ type ipv4_addr ; flags interval ; }}
add rule ip {TABLE} postrouting ip saddr {pod_cidr} oifname != \"{bridge}\" ip daddr != @{PEER_PODS} ip daddr @egress masquerade
{elements}"
    );
    nft(&script).map(drop)
}

/// Publishes `ports` (replacing any element with the same protocol and host port).
pub fn publish(ports: &[HostPort]) -> Result<(), NetError> {
    if ports.is_empty() {
        return Ok(());
    }
    let mut script = String::new();
    for p in ports {
        // `add` of an existing key with another value fails; delete first (a missing element
        // makes `delete` fail too, so declare it first: add-then-delete is idempotent).
        let key = format!("{} . {}", p.protocol.nft(), p.host_port);
        script.push_str(&format!(
            "add element ip {TABLE} ports {{ {key} : 0.0.0.0 . 0 }}\ndelete element ip {TABLE} ports {{ {key} }}\nadd element ip {TABLE} ports {{ {key} : {} . {} }}\n",
            p.pod_ip, p.container_port
        ));
    }
    nft(&script).map(drop)
}

/// What is published now.
pub fn published() -> Result<Vec<HostPort>, NetError> {
    let text = nft(&format!("list map ip {TABLE} ports\n"))?;
    Ok(parse_elements(&text))
}

/// Withdraws every port published for `pod_ip`.
pub fn withdraw(pod_ip: Ipv4Addr) -> Result<(), NetError> {
    withdraw_where(|p| p.pod_ip == pod_ip)
}

/// Withdraws every published port for which `stale` holds (reconciling after a restart).
pub fn withdraw_where(stale: impl Fn(&HostPort) -> bool) -> Result<(), NetError> {
    let gone: Vec<HostPort> = published()?.into_iter().filter(|p| stale(p)).collect();
    if gone.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = gone
        .iter()
        .map(|p| format!("{} . {}", p.protocol.nft(), p.host_port))
        .collect();
    nft(&format!("delete element ip {TABLE} ports {{ {} }}\n", keys.join(", "))).map(drop)
}

/// The elements of `nft list map` output: `tcp . 8080 : 10.42.0.5 . 80, …`.
fn parse_elements(text: &str) -> Vec<HostPort> {
    let Some(start) = text.find("elements = {") else {
        return Vec::new();
    };
    let body = &text[start + "elements = {".len()..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    body.split(',')
        .filter_map(|e| {
            let (key, value) = e.split_once(':')?;
            let mut k = key.split('.').map(str::trim);
            let protocol = match k.next()? {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                _ => return None,
            };
            let host_port = k.next()?.parse().ok()?;
            let (ip, port) = value.trim().rsplit_once(" . ")?;
            Some(HostPort {
                protocol,
                host_port,
                pod_ip: ip.trim().parse().ok()?,
                container_port: port.trim().parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_nft_lists() {
        let text = "table ip skiff {\n\tmap ports {\n\t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n\t\telements = { tcp . 8080 : 10.42.0.5 . 80, udp . 53 : 10.42.0.6 . 5353 }\n\t}\n}\n";
        assert_eq!(
            parse_elements(text),
            vec![
                HostPort {
                    protocol: Protocol::Tcp,
                    host_port: 8080,
                    pod_ip: Ipv4Addr::new(10, 42, 0, 5),
                    container_port: 80
                },
                HostPort {
                    protocol: Protocol::Udp,
                    host_port: 53,
                    pod_ip: Ipv4Addr::new(10, 42, 0, 6),
                    container_port: 5353
                },
            ]
        );
        assert!(parse_elements("table ip skiff {\n\tmap ports {\n\t}\n}\n").is_empty());
        assert_eq!(Protocol::parse(None), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse(Some("QUIC")), None);
    }
}
