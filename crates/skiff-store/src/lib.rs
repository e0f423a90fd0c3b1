//! Skiff's storage layer: a revisioned key-value [`Store`] with compare-and-swap writes, lists at a
//! revision, watches from a revision and compaction — the contract etcd offers — and its
//! backends. SQLite ([`SqliteStore`]) is the default; etcd is a second implementation of the same
//! trait. Every backend passes the same [`conformance`] suite.
//!
//! Only `skiff-apiserver` may depend on this crate: controllers, agents and the CLI talk to the
//! API server, never to the store. This crate knows nothing of Kubernetes objects; values are
//! opaque bytes.

mod error;
mod sqlite;
mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::StoreError;
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};
pub use store::{prefix_end, Event, EventKind, KeyValue, ListResult, Revision, Store, WatchStream};
