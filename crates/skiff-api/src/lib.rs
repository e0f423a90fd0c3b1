//! The resource model of Skiff: the built-in kinds (from k8s-openapi), the registry of
//! group/version/kind/plural/scope, defaulting, validation, the patch engines and table columns.
//!
//! This crate is pure: it does no I/O, spawns nothing and never depends on the store, the
//! API server or any runtime. Everything here is a function of its inputs.

pub mod protobuf;
