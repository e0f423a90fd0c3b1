//! The resource model of Skiff: the built-in kinds (from k8s-openapi), the registry of
//! group/version/kind/plural/scope, defaulting, validation, the patch engines and table columns.
//!
//! This crate is pure: it does no I/O, spawns nothing and never depends on the store, the
//! API server or any runtime. Everything here is a function of its inputs.

pub mod builtin;
pub mod crd;
pub mod defaults;
pub mod field;
pub mod openapi;
pub mod protobuf;
pub mod registry;
pub mod selector;
pub mod strategic_merge;
pub mod table;
pub mod validation;

pub use field::{FieldError, Path};
pub use registry::{builtin_types, custom_types, ResourceType, ScalePaths};
pub use selector::{FieldSelector, LabelSelector};
