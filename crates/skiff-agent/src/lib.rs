//! Skiff's node agent. This wave provides simulated nodes (the kwok idea): Node objects with
//! configurable capacity and a heartbeat lease, whose bound pods move to Running/Ready (and
//! run-to-completion pods to Succeeded) without containers. Controller and scheduler tests run
//! on them without root, and scale is measured with them.
//!
//! The agent is an API client (kube-rs) of the API server; it never touches the store.

pub mod simulated;

pub use simulated::{SimulatedNodes, SimulatedNodesConfig};
