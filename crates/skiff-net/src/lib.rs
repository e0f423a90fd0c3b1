//! Skiff's pod networking, built in: a network namespace per pod held by the agent (no pause
//! container), the node bridge `skiff0` with the node's pod CIDR, veth pairs, IPAM that never
//! hands out an address twice and releases on delete (also across agent restarts), and the
//! pod's `/etc/hosts` and `/etc/resolv.conf`; routes to other nodes' pods ([`routes`], host-gw).
//!
//! Netlink goes through `rtnetlink`; namespaces are plain `unshare`/`setns`/bind mounts through
//! `rustix` (what `ip netns` does — no crate wraps it for a multi-threaded async process).

pub mod files;
pub mod ipam;
pub mod nat;
pub mod netns;
pub mod node;
pub mod overlay;
pub mod routes;
pub mod services;

use std::path::PathBuf;

pub use files::{hosts_file, resolv_conf, ClusterDns, DnsConfig, DnsPolicy, HostAlias};
pub use ipam::Ipam;
pub use netns::Netns;
pub use node::{ensure_local_addresses, host_veth_name, NodeNetwork, NodeNetworkConfig, PodNetwork};
pub use routes::{PeerRoute, PeerRoutes};

/// The errno of a netlink error, if it is one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    }
}

/// Maps a netlink error to [`NetError::Netlink`] for operation `op` on `what`.
pub(crate) fn nl(op: &'static str, what: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.to_string();
    move |source| NetError::Netlink { op, what, source }
}

/// What can go wrong setting up pod networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {what}: {source}")]
    Netlink {
        op: &'static str,
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no free address left in pod CIDR {0}")]
    Exhausted(ipnet::Ipv4Net),
    #[error("invalid network namespace name {0:?}")]
    InvalidName(String),
    #[error("{} is not a network namespace", .0.display())]
    NotANamespace(PathBuf),
    #[error("a namespace thread panicked")]
    Thread,
    #[error("{0}")]
    Config(String),
    #[error("nft refused {script:?}: {message}")]
    Nft { script: String, message: String },
}
