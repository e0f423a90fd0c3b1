//! Routes to other nodes' pods, "host-gw" style (flannel's `host-gw` backend, Calico without
//! encapsulation): for each other node whose address is on a directly connected subnet, a
//! route `podCIDR via nodeIP` in the node's main routing table. Pods' addresses are kept end
//! to end; nothing is encapsulated or translated.
//!
//! Every route Skiff makes carries its own routing protocol number ([`ROUTE_PROTOCOL`], shown
//! by `ip route` as `proto 115`), so [`PeerRoutes::reconcile`] recognises its own — also the
//! ones an earlier run of the agent left — and removes those no longer wanted, while routes
//! anyone else made are never touched. Nodes on other subnets are reached through the VXLAN
//! overlay ([`crate::overlay`]): their routes go out of its device, on-link.
//!
//! The node's NAT must not hide a pod's address from pods on other nodes: their pod CIDRs are
//! kept in the `peer-pods` set of the `ip skiff` table ([`exempt_from_masquerade`]), which the
//! egress masquerade skips ([`crate::nat`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::{errno, nl, NetError};

/// The routing protocol number of Skiff's routes (`proto 115`; unassigned in iproute2's
/// `rt_protos`, where 80 is Calico's and 186 BGP's).
pub const ROUTE_PROTOCOL: u8 = 115;

/// A route to another node's pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerRoute {
    /// The other node's pod CIDR.
    pub cidr: Ipv4Net,
    /// The next hop: the other node's address (host-gw), or its overlay address.
    pub via: Ipv4Addr,
    /// Through the overlay: out of this device, the next hop taken as on its link
    /// ([`crate::overlay`]). `None`: via the node's connected network.
    pub dev: Option<u32>,
}

/// What one [`PeerRoutes::reconcile`] changed, and what it could not.
#[derive(Debug, Default)]
pub struct RouteReport {
    pub added: Vec<PeerRoute>,
    pub removed: Vec<PeerRoute>,
    /// Routes that could not be made or removed, with why (each is tried again on the next
    /// reconcile).
    pub failed: Vec<(PeerRoute, String)>,
}

/// What to do to get from `installed` (Skiff's routes now) to `desired`: routes to add or
/// change (`replace` when Skiff's route to that CIDR goes elsewhere now), routes to delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoutePlan {
    pub add: Vec<PeerRoute>,
    pub replace: Vec<PeerRoute>,
    pub delete: Vec<PeerRoute>,
}

/// The plan from `installed` to `desired`. Of two desired routes to one CIDR the first wins.
pub fn plan(installed: &[PeerRoute], desired: &[PeerRoute]) -> RoutePlan {
    type Hop = (Ipv4Addr, Option<u32>);
    let mut want: BTreeMap<Ipv4Net, Hop> = BTreeMap::new();
    for r in desired {
        want.entry(r.cidr).or_insert((r.via, r.dev));
    }
    let mut have: BTreeMap<Ipv4Net, Vec<Hop>> = BTreeMap::new();
    for r in installed {
        have.entry(r.cidr).or_default().push((r.via, r.dev));
    }
    let route = |cidr: Ipv4Net, (via, dev): Hop| PeerRoute { cidr, via, dev };
    let mut out = RoutePlan::default();
    for (cidr, hop) in &want {
        match have.get(cidr) {
            None => out.add.push(route(*cidr, *hop)),
            Some(hops) if hops.len() == 1 && hops[0] == *hop => {}
            Some(hops) if hops.contains(hop) => {
                // Duplicates (made by hand with another metric?): keep ours, drop the rest.
                for h in hops.iter().filter(|h| *h != hop) {
                    out.delete.push(route(*cidr, *h));
                }
            }
            Some(_) => out.replace.push(route(*cidr, *hop)),
        }
    }
    for r in installed {
        if !want.contains_key(&r.cidr) {
            out.delete.push(*r);
        }
    }
    out
}

/// Whether `ip` is on one of the `connected` subnets (reachable without a router).
pub fn on_link(ip: Ipv4Addr, connected: &[Ipv4Net]) -> bool {
    connected.iter().any(|n| n.contains(&ip))
}

/// Routes to other nodes' pods in this network namespace's main table.
pub struct PeerRoutes {
    handle: Handle,
}

const ESRCH: i32 = 3;
const EEXIST: i32 = 17;

fn route_message(r: &PeerRoute) -> RouteMessage {
    let b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.cidr.network(), r.cidr.prefix_len())
        .gateway(r.via)
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL));
    match r.dev {
        None => b.build(),
        Some(dev) => {
            let mut m = b.output_interface(dev).build();
            m.header.flags |= RouteFlags::Onlink;
            m
        }
    }
}

/// A route of the main table made by Skiff, if `m` is one.
fn ours(m: &RouteMessage) -> Option<PeerRoute> {
    if m.header.address_family != AddressFamily::Inet || u8::from(m.header.protocol) != ROUTE_PROTOCOL {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let (mut dst, mut via, mut oif) = (None, None, None);
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    // Overlay routes are the on-link ones.
    let dev = oif.filter(|_| m.header.flags.contains(RouteFlags::Onlink));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let cidr = Ipv4Net::new(dst.unwrap_or(Ipv4Addr::UNSPECIFIED), m.header.destination_prefix_length).ok()?;
    Some(PeerRoute { cidr, via: via?, dev })
}

impl PeerRoutes {
    /// Opens a netlink connection in the caller's network namespace.
    pub async fn connect() -> Result<PeerRoutes, NetError> {
        Ok(PeerRoutes {
            handle: crate::node::connect(None).await?,
        })
    }

    /// Skiff's routes in the main table now (also those an earlier run made).
    pub async fn installed(&self) -> Result<Vec<PeerRoute>, NetError> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(nl("list routes", "ipv4"))?;
        let mut out: Vec<PeerRoute> = msgs.iter().filter_map(ours).collect();
        out.sort();
        Ok(out)
    }

    /// The IPv4 subnets this namespace is directly connected to: those of its addresses,
    /// except loopback and single-address (`/32`) ones.
    pub async fn connected(&self) -> Result<Vec<Ipv4Net>, NetError> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("list addresses", "ipv4"))?;
        let mut out: Vec<Ipv4Net> = msgs
            .into_iter()
            .filter_map(|m| {
                let prefix = m.header.prefix_len;
                let ip = m.attributes.into_iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(ip),
                    _ => None,
                })?;
                let net = Ipv4Net::new(ip, prefix).ok()?.trunc();
                (prefix < 32 && !ip.is_loopback()).then_some(net)
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Brings Skiff's routes to `desired`: missing ones are added, changed ones replaced, and
    /// Skiff's routes to CIDRs no longer wanted deleted. Other routes are left alone: a route
    /// to a wanted CIDR that someone else made is reported as a failure, not replaced.
    pub async fn reconcile(&self, desired: &[PeerRoute]) -> Result<RouteReport, NetError> {
        let installed = self.installed().await?;
        let p = plan(&installed, desired);
        let mut report = RouteReport::default();
        for r in &p.delete {
            match self.handle.route().del(route_message(r)).execute().await {
                Ok(()) => report.removed.push(*r),
                Err(e) if errno(&e) == Some(ESRCH) => report.removed.push(*r),
                Err(e) => report.failed.push((*r, format!("delete route: {e}"))),
            }
        }
        for (r, replace) in p
            .add
            .iter()
            .map(|r| (r, false))
            .chain(p.replace.iter().map(|r| (r, true)))
        {
            let req = self.handle.route().add(route_message(r));
            let req = if replace { req.replace() } else { req };
            match req.execute().await {
                Ok(()) => report.added.push(*r),
                Err(e) if errno(&e) == Some(EEXIST) => report
                    .failed
                    .push((*r, "a route to this CIDR that Skiff did not make is in the way".into())),
                Err(e) => report.failed.push((*r, format!("add route: {e}"))),
            }
        }
        Ok(report)
    }
}

/// Keeps `cidrs` (other nodes' pod CIDRs) out of the egress masquerade of the `ip skiff` table:
/// traffic from this node's pods to them keeps the pod's address. The set is replaced in one
/// `nft` transaction.
pub fn exempt_from_masquerade(cidrs: &[Ipv4Net]) -> Result<(), NetError> {
    let table = crate::nat::TABLE;
    // An interval set refuses overlapping elements: merge them first.
    let merged = Ipv4Net::aggregate(&cidrs.to_vec());
    let mut script = format!("flush set ip {table} {}\n", crate::nat::PEER_PODS);
    if !merged.is_empty() {
        let list: Vec<String> = merged.iter().map(|n| n.to_string()).collect();
        script.push_str(&format!(
            "add element ip {table} {} {{ {} }}\n",
            crate::nat::PEER_PODS,
            list.join(", ")
        ));
    }
    crate::nat::nft(&script).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cidr: &str, via: &str) -> PeerRoute {
        PeerRoute {
            cidr: cidr.parse().expect("cidr"),
            via: via.parse().expect("ip"),
            dev: None,
        }
    }

    #[test]
    fn plans_only_the_difference() {
        let installed = [
            r("10.42.1.0/24", "192.168.77.11"),
            r("10.42.2.0/24", "192.168.77.12"),
            r("10.42.3.0/24", "192.168.77.13"),
        ];
        let desired = [
            r("10.42.1.0/24", "192.168.77.11"),
            r("10.42.2.0/24", "192.168.77.22"),
            r("10.42.4.0/24", "192.168.77.14"),
        ];
        assert_eq!(
            plan(&installed, &desired),
            RoutePlan {
                add: vec![r("10.42.4.0/24", "192.168.77.14")],
                replace: vec![r("10.42.2.0/24", "192.168.77.22")],
                delete: vec![r("10.42.3.0/24", "192.168.77.13")],
            }
        );
        assert_eq!(plan(&desired, &desired), RoutePlan::default());
        // Everything goes when no other node is left.
        assert_eq!(plan(&installed, &[]).delete, installed.to_vec());
    }

    #[test]
    fn on_link_means_on_a_connected_subnet() {
        let connected: Vec<Ipv4Net> = vec!["192.168.77.0/24".parse().expect("net")];
        assert!(on_link("192.168.77.12".parse().expect("ip"), &connected));
        assert!(!on_link("192.168.78.12".parse().expect("ip"), &connected));
    }

    #[test]
    fn recognises_its_own_routes_in_the_main_table_only() {
        let mut m = route_message(&r("10.42.1.0/24", "192.168.77.11"));
        assert_eq!(ours(&m), Some(r("10.42.1.0/24", "192.168.77.11")));
        m.header.table = 100;
        assert_eq!(ours(&m), None, "another table");
        let static_route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix("10.42.1.0".parse().expect("ip"), 24)
            .gateway("192.168.77.11".parse().expect("ip"))
            .build();
        assert_eq!(ours(&static_route), None, "someone else's route");
    }
}
