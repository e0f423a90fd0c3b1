//! VXLAN between nodes that are not on one network segment (flannel's `vxlan` backend, the
//! same layout): a device `skiff.vxlan` (VNI 1, UDP 8472, no learning) whose address is the
//! node's pod CIDR's network address (`10.42.1.0/32`), and per other node
//!
//! - a route `podCIDR via <its network address> dev skiff.vxlan onlink` (in
//!   [`crate::routes`], Skiff's protocol number),
//! - a permanent neighbour entry: that address is the other node's VTEP MAC,
//! - a forwarding-database entry: that MAC is behind the other node's address.
//!
//! A node's VTEP MAC is derived from its address ([`vtep_mac`]), so nothing has to be published
//! for the others to program it. Entries are reconciled: Skiff's (MACs with its prefix) that
//! are no longer wanted are removed; nothing is flushed.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use crate::{errno, nl, NetError};

/// The overlay device.
pub const DEVICE: &str = "skiff.vxlan";
/// Its VXLAN network identifier.
pub const VNI: u32 = 1;
/// Its UDP port (flannel's and the Linux default, not IANA's 4789).
pub const PORT: u16 = 8472;
/// VXLAN's 50 bytes of headers come off the underlying 1500.
pub const MTU: u32 = 1450;
/// The first two bytes of every VTEP MAC (locally administered, unicast).
const MAC_PREFIX: [u8; 2] = [0x0e, 0x5f];

/// The VTEP MAC of the node at `ip`.
pub fn vtep_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [MAC_PREFIX[0], MAC_PREFIX[1], o[0], o[1], o[2], o[3]]
}

/// Another node reached over the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FarNode {
    pub cidr: Ipv4Net,
    pub ip: Ipv4Addr,
}

impl FarNode {
    /// The address its overlay device holds (its pod CIDR's network address).
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.cidr.network()
    }
}

const ENOENT: i32 = 2;
const EEXIST: i32 = 17;

/// This node's overlay device.
pub struct Overlay {
    handle: Handle,
    index: u32,
}

async fn link_of(handle: &Handle, name: &str) -> Result<Option<(u32, Vec<u8>)>, NetError> {
    use rtnetlink::packet_route::link::LinkAttribute;
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => {
            let mac = l
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Address(m) => Some(m.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            Ok(Some((l.header.index, mac)))
        }
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(19) => Ok(None),
        Err(e) => Err(nl("find link", name)(e)),
    }
}

impl Overlay {
    /// Makes (or keeps) the overlay device of the node at `node_ip` with pod CIDR `pod_cidr`,
    /// in the caller's network namespace. A device made for another address is made again.
    pub async fn ensure(node_ip: Ipv4Addr, pod_cidr: Ipv4Net) -> Result<Overlay, NetError> {
        let handle = crate::node::connect(None).await?;
        let mac = vtep_mac(node_ip).to_vec();
        if let Some((index, have)) = link_of(&handle, DEVICE).await? {
            if have != mac {
                handle
                    .link()
                    .del(index)
                    .execute()
                    .await
                    .map_err(nl("delete stale device", DEVICE))?;
            }
        }
        let index = match link_of(&handle, DEVICE).await? {
            Some((i, _)) => i,
            None => {
                let msg = LinkVxlan::new(DEVICE, VNI)
                    .local(node_ip)
                    .port(PORT)
                    .learning(false)
                    .mtu(MTU)
                    .address(mac)
                    .build();
                match handle.link().add(msg).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(EEXIST) => {}
                    Err(e) => return Err(nl("create vxlan device", DEVICE)(e)),
                }
                link_of(&handle, DEVICE)
                    .await?
                    .map(|(i, _)| i)
                    .ok_or_else(|| NetError::Config(format!("{DEVICE} vanished after creation")))?
            }
        };
        match handle
            .address()
            .add(index, IpAddr::V4(pod_cidr.network()), 32)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(nl("address", DEVICE)(e)),
        }
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl("bring up", DEVICE))?;
        Ok(Overlay { handle, index })
    }

    /// The device's interface index (routes through the overlay go out of it).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Neighbour (family `family`) entries on the device.
    async fn entries(&self, family: AddressFamily) -> Result<Vec<NeighbourMessage>, NetError> {
        let mut req = self.handle.neighbours().get();
        req.message_mut().header.family = family;
        let all: Vec<NeighbourMessage> = req
            .execute()
            .try_collect()
            .await
            .map_err(nl("list neighbours of", DEVICE))?;
        Ok(all.into_iter().filter(|m| m.header.ifindex == self.index).collect())
    }

    /// Brings the device's neighbour and forwarding entries to exactly the nodes in `far`.
    pub async fn reconcile(&self, far: &[FarNode]) -> Result<(), NetError> {
        let lla = |m: &NeighbourMessage| {
            m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(l) => Some(l.clone()),
                _ => None,
            })
        };
        let dst = |m: &NeighbourMessage| {
            m.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                _ => None,
            })
        };
        // Stale entries first.
        for m in self.entries(AddressFamily::Inet).await? {
            let keep = dst(&m).is_some_and(|ip| far.iter().any(|f| f.vtep_ip() == ip));
            if !keep {
                match self.handle.neighbours().del(m).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(ENOENT) => {}
                    Err(e) => return Err(nl("delete neighbour on", DEVICE)(e)),
                }
            }
        }
        for m in self.entries(AddressFamily::Bridge).await? {
            let Some(mac) = lla(&m) else { continue };
            let ours = mac.len() == 6 && mac[..2] == MAC_PREFIX;
            let keep = far.iter().any(|f| vtep_mac(f.ip).as_slice() == mac.as_slice());
            if ours && !keep {
                match self.handle.neighbours().del(m).execute().await {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(ENOENT) => {}
                    Err(e) => return Err(nl("delete forwarding entry on", DEVICE)(e)),
                }
            }
        }
        for f in far {
            let mac = vtep_mac(f.ip);
            self.handle
                .neighbours()
                .add(self.index, IpAddr::V4(f.vtep_ip()))
                .link_layer_address(&mac)
                .replace()
                .execute()
                .await
                .map_err(nl("add neighbour on", DEVICE))?;
            self.handle
                .neighbours()
                .add_bridge(self.index, &mac)
                .destination(IpAddr::V4(f.ip))
                .flags(NeighbourFlags::Own)
                .replace()
                .execute()
                .await
                .map_err(nl("add forwarding entry on", DEVICE))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtep_macs_are_local_unicast_and_carry_the_address() {
        let m = vtep_mac(Ipv4Addr::new(192, 168, 78, 10));
        assert_eq!(m, [0x0e, 0x5f, 192, 168, 78, 10]);
        assert_eq!(m[0] & 0x01, 0, "unicast");
        assert_eq!(m[0] & 0x02, 0x02, "locally administered");
        let f = FarNode {
            cidr: "10.42.3.0/24".parse().expect("cidr"),
            ip: Ipv4Addr::new(192, 168, 78, 10),
        };
        assert_eq!(f.vtep_ip(), Ipv4Addr::new(10, 42, 3, 0));
    }
}
