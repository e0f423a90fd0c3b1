//! Skiff's scheduler: watches pending pods and nodes (kube-runtime reflectors), filters nodes
//! (readiness, `unschedulable`, taints/tolerations, `nodeSelector`, resource requests against
//! allocatable, pod count), scores the rest by least allocation, and binds through the
//! `pods/binding` subresource. A pod that fits nowhere gets `PodScheduled=False` with reason
//! `Unschedulable` and is retried whenever nodes or pods change.
//!
//! An API client only; it never touches the store. Not yet: affinity, topology spread,
//! host ports, volume topology, priority and preemption.

pub mod quantity;
mod scheduler;

pub use scheduler::{fits, run, Resources};
