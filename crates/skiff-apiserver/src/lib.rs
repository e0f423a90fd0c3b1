//! Skiff's Kubernetes-compatible API server: HTTPS with client-certificate, token and
//! service-account token authentication, admission (the ServiceAccount plugin), discovery,
//! OpenAPI, REST verbs with Kubernetes semantics (validation, defaulting, optimistic
//! concurrency, finalizers, the four patch types, server-side apply), list/watch from a watch
//! cache, custom resources from CRDs, and TokenRequests (`serviceaccounts/token`).
//!
//! This is the only crate that touches the store (`skiff-store`). Controllers, schedulers and
//! agents are API clients. It never depends on the agent, runtime or networking crates.

mod admission;
mod alloc;
mod cache;
mod crds;
mod discovery;
mod error;
mod fields;
mod handlers;
mod jwt;
mod list;
mod logs;
mod namespaces;
mod objects;
mod openapi;
mod patch;
mod pki;
mod remote;
mod request;
mod review;
mod scale;
mod server;
mod service_account_token;
mod types;
mod version;
mod watch;

pub use error::ApiError;
pub use pki::Pki;
pub use server::{open_datastore, start, Config, Identity, Server};
pub use service_account_token::ISSUER as SERVICE_ACCOUNT_ISSUER;
