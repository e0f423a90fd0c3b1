//! Skiff's node agent, an API client (kube-rs) of the API server that never touches the store.
//!
//! - [`node`]: the real agent: this machine as a Node (capacity, OS, kernel, runtime), its
//!   lease, pod networking ([`skiff_net`]) and the pods bound to it ([`pods`]) run as OCI
//!   containers through [`skiff_runtime::ContainerManager`].
//!   Unused images are garbage collected by disk thresholds ([`image_gc`]). Services are
//!   programmed into the kernel ([`proxy`]) and the cluster DNS server runs beside ([`dns`]).
//!   Pods on other nodes are reached through routes to their pod CIDRs ([`routes`]).
//! - [`simulated`]: simulated nodes (the kwok idea) whose bound pods move to Running/Ready
//!   without containers; controller and scheduler tests run on them without root, and scale
//!   is measured with them.

pub mod dns;
pub mod drain;
pub mod env;
mod events;
pub mod exec;
pub mod image_gc;
pub mod logs;
pub mod node;
pub mod pods;
pub mod probes;
pub mod proxy;
pub mod routes;
pub mod simulated;
pub mod tokens;
pub mod volumes;

pub use node::AgentConfig;
pub use simulated::{SimulatedNodes, SimulatedNodesConfig};

/// Stops a background task when dropped.
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
