//! What Skiff's in-process API clients (controllers, scheduler, simulated nodes) share.
//!
//! Lean watch types ([`lean`]), the agent's streaming side as the API server sees it
//! ([`streams`]) and the tunnel a joined agent serves it over ([`tunnel`]). Every client of a busy cluster parses every pod change it
//! watches; most of a pod's JSON is `metadata.managedFields`, which no controller reads and
//! which k8s-openapi parses into a `serde_json::Value` tree. The lean types skip it unread.
//!
//! This crate depends on the Kubernetes types and kube's `Resource` trait only; it must never
//! depend on the API server, the store or a runtime.

pub mod lean;
pub mod streams;
pub mod tunnel;

pub use lean::{LeanMeta, LeanPod, LeanPodStatus};
