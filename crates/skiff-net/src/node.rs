//! The node's pod network: a bridge (`skiff0`) holding the gateway address of the node's pod
//! CIDR, and per pod a network namespace joined to the bridge by a veth pair, its address from
//! [`Ipam`], loopback up and a default route through the gateway.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::ipam::Ipam;
use crate::nat;
use crate::netns::Netns;
use crate::{errno, nl, NetError};

/// What the node's pod network is made of.
#[derive(Clone, Debug)]
pub struct NodeNetworkConfig {
    /// The node's pod CIDR (from the Node's `spec.podCIDR`), e.g. `10.42.0.0/24`.
    pub pod_cidr: Ipv4Net,
    /// The bridge's name.
    pub bridge: String,
    /// Where pod namespaces are bound (`/run/skiff/netns`).
    pub netns_dir: PathBuf,
    /// Where IPAM keeps its records (`<data-dir>/net/ipam`); must survive restarts.
    pub ipam_dir: PathBuf,
    /// Interface MTU for the bridge and veths.
    pub mtu: u32,
    /// Destinations pods may reach outside the node, masqueraded behind its address.
    pub egress: Vec<Ipv4Net>,
}

impl NodeNetworkConfig {
    pub fn new(pod_cidr: Ipv4Net, data_dir: &Path, run_dir: &Path) -> Self {
        NodeNetworkConfig {
            pod_cidr,
            bridge: "skiff0".into(),
            netns_dir: netns_dir(run_dir),
            ipam_dir: data_dir.join("net").join("ipam"),
            mtu: 1500,
            egress: Vec::new(),
        }
    }
}

/// A pod's network as the runtime needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetwork {
    /// The pod's network namespace (containers join it by this path).
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The host end of the pod's veth pair.
    pub host_veth: String,
}

/// The node's pod network. Every operation is idempotent, so an agent that restarts re-adopts
/// what is there instead of rebuilding it.
pub struct NodeNetwork {
    cfg: NodeNetworkConfig,
    ipam: Ipam,
    handle: Handle,
    bridge_index: u32,
    /// Whether host ports can be published (nftables), or why not.
    host_ports: Result<(), String>,
}

/// Open a netlink connection in `ns` (the caller's namespace when `None`). The socket belongs
/// to the namespace it was opened in, so the connection keeps working there from any thread.
pub(crate) async fn connect(ns: Option<&Netns>) -> Result<Handle, NetError> {
    let open = || -> std::io::Result<_> { rtnetlink::new_connection() };
    let (conn, handle, _) = match ns {
        None => open(),
        Some(ns) => {
            let rt = tokio::runtime::Handle::current();
            ns.run(move || {
                let _enter = rt.enter();
                open()
            })?
        }
    }
    .map_err(|source| NetError::Io {
        op: "open netlink socket",
        path: ns.map(|n| n.path().to_path_buf()).unwrap_or_default(),
        source,
    })?;
    tokio::spawn(conn);
    Ok(handle)
}

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EOPNOTSUPP: i32 = 95;

/// The index of link `name`, if it exists.
async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl("find link", name)(e)),
    }
}

async fn addresses_of(handle: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, NetError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let msgs: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses", &index.to_string()))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| {
            let prefix = m.header.prefix_len;
            m.attributes.into_iter().find_map(|a| match a {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some((ip, prefix)),
                _ => None,
            })
        })
        .collect())
}

/// Gives the node's own network namespace `addrs` (each as a /32 or /128) on a dummy
/// interface `name`, created if missing and brought up: addresses that answer on every node
/// for services served on the node itself (the cluster DNS address, as NodeLocal DNSCache
/// does). Addresses already there are kept. A kernel without the dummy driver gets them on
/// loopback instead, which serves as well (Linux answers for a local address whichever
/// interface a packet comes in on). Returns the interface used.
pub async fn ensure_local_addresses(name: &str, addrs: &[IpAddr]) -> Result<String, NetError> {
    use rtnetlink::LinkDummy;
    let handle = connect(None).await?;
    let mut name = name.to_string();
    let index = match link_index(&handle, &name).await? {
        Some(i) => i,
        None => {
            match handle.link().add(LinkDummy::new(&name).build()).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) if errno(&e) == Some(EOPNOTSUPP) => name = "lo".into(),
                Err(e) => return Err(nl("create dummy interface", &name)(e)),
            }
            link_index(&handle, &name)
                .await?
                .ok_or_else(|| NetError::Config(format!("interface {name} vanished after creation")))?
        }
    };
    let have = addresses_of(&handle, index).await?;
    for ip in addrs {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        if have.contains(&(*ip, prefix)) {
            continue;
        }
        match handle.address().add(index, *ip, prefix).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(nl("address", &name)(e)),
        }
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("bring up", &name))?;
    Ok(name)
}

/// The host-side veth name of a pod: stable for the pod, within the 15 bytes Linux allows.
pub fn host_veth_name(pod_key: &str) -> String {
    // FNV-1a: a short stable name, not a security boundary.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod_key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("veth{:08x}", h as u32)
}

/// Where pod network namespaces are bound under the agent's run directory.
pub fn netns_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("netns")
}

/// Where the network namespace of pod `pod_key` is bound, under `netns_dir`
/// ([`NodeNetworkConfig::netns_dir`]).
pub fn pod_netns_path(netns_dir: &Path, pod_key: &str) -> PathBuf {
    netns_dir.join(netns_name(pod_key))
}

fn netns_name(pod_key: &str) -> String {
    pod_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl NodeNetwork {
    /// Bring up the bridge (created if missing, given the gateway address) in the caller's
    /// network namespace, and open IPAM.
    pub async fn start(cfg: NodeNetworkConfig) -> Result<NodeNetwork, NetError> {
        let ipam = Ipam::new(cfg.pod_cidr, &cfg.ipam_dir)?;
        let handle = connect(None).await?;
        let bridge_index = match link_index(&handle, &cfg.bridge).await? {
            Some(i) => i,
            None => {
                match handle
                    .link()
                    .add(LinkBridge::new(&cfg.bridge).mtu(cfg.mtu).build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(EEXIST) => {}
                    Err(e) => return Err(nl("create bridge", &cfg.bridge)(e)),
                }
                link_index(&handle, &cfg.bridge)
                    .await?
                    .ok_or_else(|| NetError::Config(format!("bridge {} vanished after creation", cfg.bridge)))?
            }
        };
        let gateway = ipam.gateway();
        let prefix = cfg.pod_cidr.prefix_len();
        let have = addresses_of(&handle, bridge_index).await?;
        if !have.contains(&(IpAddr::V4(gateway), prefix)) {
            match handle
                .address()
                .add(bridge_index, IpAddr::V4(gateway), prefix)
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(nl("address bridge", &cfg.bridge)(e)),
            }
        }
        handle
            .link()
            .set(LinkUnspec::new_with_index(bridge_index).up().build())
            .execute()
            .await
            .map_err(nl("bring up bridge", &cfg.bridge))?;
        // NAT (host ports, egress): the nftables table and rules, and no host port left for a
        // pod that is gone.
        let (cidr, bridge, egress) = (cfg.pod_cidr, cfg.bridge.clone(), cfg.egress.clone());
        let held: Vec<Ipv4Addr> = ipam.allocations()?.into_iter().map(|(ip, _)| ip).collect();
        let host_ports = tokio::task::spawn_blocking(move || {
            nat::ensure(cidr, &bridge, &egress)?;
            nat::withdraw_where(|p| !held.contains(&p.pod_ip))
        })
        .await
        .map_err(|_| NetError::Thread)
        .and_then(|r| r)
        .map_err(|e| e.to_string());
        if let Err(e) = &host_ports {
            tracing::warn!(error = %e, "host ports and egress masquerade are unavailable on this node");
        }
        Ok(NodeNetwork {
            cfg,
            ipam,
            handle,
            bridge_index,
            host_ports,
        })
    }

    /// Routes the service CIDR through the bridge, so the node itself can reach service VIPs
    /// without a default route (its output hook DNATs them to endpoints before they leave).
    pub async fn route_services(&self, service_cidr: Ipv4Net) -> Result<(), NetError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(service_cidr.network(), service_cidr.prefix_len())
            .output_interface(self.bridge_index)
            .build();
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(nl("route the service CIDR via", &self.cfg.bridge)(e)),
        }
    }

    /// Publishes pod ports on the node (`hostPort`).
    pub async fn publish_host_ports(&self, ports: Vec<nat::HostPort>) -> Result<(), NetError> {
        if ports.is_empty() {
            return Ok(());
        }
        if let Err(e) = &self.host_ports {
            return Err(NetError::Config(format!("hostPort needs nftables on the node: {e}")));
        }
        tokio::task::spawn_blocking(move || nat::publish(&ports))
            .await
            .map_err(|_| NetError::Thread)?
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.ipam.gateway()
    }

    /// Give the pod `pod_key` (its UID) a network namespace with an address on the bridge.
    /// Calling it again for a pod that has one returns what is there.
    pub async fn setup_pod(&self, pod_key: &str) -> Result<PodNetwork, NetError> {
        let ns_path = self.cfg.netns_dir.join(netns_name(pod_key));
        let host_veth = host_veth_name(pod_key);
        let ip = self.ipam.allocate(pod_key)?;
        let existing = Netns::open(&ns_path).ok();
        let pod = PodNetwork {
            netns: ns_path.clone(),
            ip,
            prefix_len: self.cfg.pod_cidr.prefix_len(),
            gateway: self.gateway(),
            host_veth: host_veth.clone(),
        };
        if existing.is_some() && link_index(&self.handle, &host_veth).await?.is_some() {
            return Ok(pod);
        }
        let result = self.build_pod(pod_key, &pod, existing).await;
        if result.is_err() {
            // Leave nothing half made: the next attempt starts clean.
            let _ = self.teardown_pod(pod_key).await;
        }
        result.map(|()| pod)
    }

    async fn build_pod(&self, pod_key: &str, pod: &PodNetwork, existing: Option<Netns>) -> Result<(), NetError> {
        let ns = match existing {
            Some(ns) => ns,
            None => {
                // A file left from a crash, not a bound namespace, is replaced.
                let _ = std::fs::remove_file(&pod.netns);
                Netns::create(&self.cfg.netns_dir, &netns_name(pod_key))?
            }
        };
        let peer = format!("p{}", &pod.host_veth[4..]);
        if let Some(i) = link_index(&self.handle, &pod.host_veth).await? {
            self.handle
                .link()
                .del(i)
                .execute()
                .await
                .map_err(nl("delete stale veth", &pod.host_veth))?;
        }
        self.handle
            .link()
            .add(LinkVeth::new(&pod.host_veth, &peer).mtu(self.cfg.mtu).build())
            .execute()
            .await
            .map_err(nl("create veth", &pod.host_veth))?;
        let host_index = link_index(&self.handle, &pod.host_veth)
            .await?
            .ok_or_else(|| NetError::Config(format!("veth {} vanished after creation", pod.host_veth)))?;
        let peer_index = link_index(&self.handle, &peer)
            .await?
            .ok_or_else(|| NetError::Config(format!("veth peer {peer} vanished after creation")))?;
        let ns_file = ns.file()?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(peer_index)
                    .setns_by_fd(ns_file.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl("move veth into pod namespace", &peer))?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(host_index)
                    .controller(self.bridge_index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl("attach veth to bridge", &pod.host_veth))?;
        // Hairpin: a pod reaching itself through a service VIP is DNATed back out of the
        // port its packet came in on (the CNI bridge plugin's `hairpinMode`).
        self.handle
            .link()
            .set_port(rtnetlink::LinkBridgePort::new(host_index).hairpin(true).build())
            .execute()
            .await
            .map_err(nl("set hairpin mode on", &pod.host_veth))?;
        // Inside the pod: lo up, the peer renamed eth0 with the pod's address, default route.
        let inside = connect(Some(&ns)).await?;
        let lo = link_index(&inside, "lo")
            .await?
            .ok_or_else(|| NetError::Config("no loopback in pod namespace".into()))?;
        inside
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(nl("bring up loopback", "lo"))?;
        let eth = link_index(&inside, &peer)
            .await?
            .ok_or_else(|| NetError::Config(format!("veth peer {peer} missing in the pod namespace")))?;
        inside
            .link()
            .set(LinkUnspec::new_with_index(eth).name("eth0".into()).build())
            .execute()
            .await
            .map_err(nl("rename pod interface", "eth0"))?;
        inside
            .address()
            .add(eth, IpAddr::V4(pod.ip), pod.prefix_len)
            .execute()
            .await
            .map_err(nl("address pod interface", "eth0"))?;
        inside
            .link()
            .set(LinkUnspec::new_with_index(eth).up().build())
            .execute()
            .await
            .map_err(nl("bring up pod interface", "eth0"))?;
        inside
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(pod.gateway)
                    .output_interface(eth)
                    .build(),
            )
            .execute()
            .await
            .map_err(nl("add default route", "eth0"))?;
        Ok(())
    }

    /// Remove the pod's network: its veth pair, its namespace and its address. Tearing down a
    /// pod that has nothing left is not an error.
    pub async fn teardown_pod(&self, pod_key: &str) -> Result<(), NetError> {
        let host_veth = host_veth_name(pod_key);
        if let Some(i) = link_index(&self.handle, &host_veth).await? {
            match self.handle.link().del(i).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(ENODEV) => {}
                Err(e) => return Err(nl("delete veth", &host_veth)(e)),
            }
        }
        let ns_path = self.cfg.netns_dir.join(netns_name(pod_key));
        Netns::at(&ns_path).remove()?;
        if let (Some(ip), Ok(())) = (self.ipam.held_by(pod_key)?, &self.host_ports) {
            tokio::task::spawn_blocking(move || nat::withdraw(ip))
                .await
                .map_err(|_| NetError::Thread)??;
        }
        self.ipam.release(pod_key)?;
        Ok(())
    }

    /// Pods that have a network here (by namespace), for re-adoption and cleanup after a
    /// restart.
    pub fn pods(&self) -> Result<Vec<String>, NetError> {
        Ok(self.ipam.allocations()?.into_iter().map(|(_, owner)| owner).collect())
    }
}
