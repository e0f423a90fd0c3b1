//! What the API server asks of a node agent for the streaming subresources (`pods/log`,
//! `exec`, `attach` and `portforward`). The embedded agent registers an implementation with
//! the server in-process; the server proxies client requests to it.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};

/// One `kubectl logs` request, checked by the API server against the pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// One `kubectl exec` (or `attach`, where `command` is empty) request, checked by the API
/// server against the pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecRequest {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// A terminal: stdout and stderr are one stream (the terminal's), and it can be resized.
    pub tty: bool,
}

/// A terminal's size, as kubectl sends it on the resize channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Bytes from a process.
pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
/// Bytes to a process.
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// How an exec'd process ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExecExit {
    /// It exited with this code (128 + signal when a signal ended it).
    Code(i32),
    /// It could not be run, or the session failed: a message for the client.
    Error(String),
}

/// A running `exec` or `attach` session: the process's streams as requested, the resize
/// channel of a terminal, and how it ends.
pub struct ExecSession {
    pub stdin: Option<Writer>,
    pub stdout: Option<Reader>,
    pub stderr: Option<Reader>,
    pub resize: Option<tokio::sync::mpsc::Sender<TerminalSize>>,
    pub exit: futures::future::BoxFuture<'static, ExecExit>,
}

/// One connection of `kubectl port-forward` to a pod's port (in the pod's network namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortForwardRequest {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub port: u16,
    /// The pod uses the node's network namespace.
    pub host_network: bool,
}

/// A connection to a pod's port.
pub struct PortConnection {
    pub read: Reader,
    pub write: Writer,
}

/// A node agent's streaming side.
pub trait NodeStreams: Send + Sync {
    /// The container's log; `Err` is a message for a `404 NotFound`.
    fn logs(&self, req: LogRequest) -> futures::future::BoxFuture<'static, Result<LogStream, String>>;

    /// Runs `req.command` in the container; `Err` is a message for the client.
    fn exec(&self, req: ExecRequest) -> futures::future::BoxFuture<'static, Result<ExecSession, String>> {
        let _ = req;
        Box::pin(async { Err("this node does not support exec".to_string()) })
    }

    /// Attaches to the container's main process; `Err` is a message for the client.
    fn attach(&self, req: ExecRequest) -> futures::future::BoxFuture<'static, Result<ExecSession, String>> {
        let _ = req;
        Box::pin(async { Err("this node does not support attach".to_string()) })
    }

    /// Connects to `req.port` inside the pod; `Err` is a message for the client.
    fn port_forward(
        &self,
        req: PortForwardRequest,
    ) -> futures::future::BoxFuture<'static, Result<PortConnection, String>> {
        let _ = req;
        Box::pin(async { Err("this node does not support port forwarding".to_string()) })
    }
}
