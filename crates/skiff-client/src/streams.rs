//! What the API server asks of a node agent for the streaming subresources (`pods/log` now;
//! exec, attach and port-forward next). The embedded agent registers an implementation with
//! the server in-process; the server proxies client requests to it.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

/// One `kubectl logs` request, checked by the API server against the pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRequest {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    /// The container's attempt (its restart count; one less for `--previous`).
    pub attempt: u32,
    pub follow: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    /// Only entries at or after this time (RFC 3339).
    pub since_time: Option<String>,
}

/// A log as it is read: chunks of text, in order.
pub type LogStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A node agent's streaming side.
pub trait NodeStreams: Send + Sync {
    /// The container's log; `Err` is a message for a `404 NotFound`.
    fn logs(&self, req: LogRequest) -> Result<LogStream, String>;
}
