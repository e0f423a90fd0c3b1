//! The server side of SPDY/3.1, as kubectl 1.27–1.33 speaks it for `exec`, `attach` and
//! `port-forward` after the API server answers `101 Switching Protocols` with
//! `Upgrade: SPDY/3.1`.
//!
//! No maintained Rust crate speaks SPDY, so this one is hand-written. Its behaviour (not its
//! code) follows moby/spdystream, the Go library client-go uses on both ends, rather than the
//! whole SPDY/3.1 draft: the client opens every stream, the server answers each SYN_STREAM with an empty
//! SYN_REPLY at once, PINGs are echoed, SETTINGS and WINDOW_UPDATE are ignored (spdystream does
//! no flow control), and header blocks use one zlib context per direction primed with the
//! SPDY/3 dictionary. Server push, priorities and CREDENTIAL frames are not implemented.
//!
//! ```no_run
//! # async fn demo(upgraded: tokio::io::DuplexStream) {
//! use tokio::io::AsyncWriteExt;
//! let mut incoming = skiff_spdy::serve(upgraded);
//! while let Some(stream) = incoming.next().await {
//!     let kind = stream.header("streamtype").unwrap_or_default().to_owned();
//!     let (_reader, mut writer) = stream.split();
//!     if kind == "stdout" {
//!         writer.write_all(b"hello\n").await.ok();
//!         writer.shutdown().await.ok();
//!     }
//! }
//! # }
//! ```
//!
//! What the channels carry (remotecommand v4 streams, port-forward pairs) is the API server's
//! business. This crate owns only the framing and must never depend on Kubernetes types, the
//! API server or a runtime.

mod dictionary;
mod error;
mod frame;
mod header;
mod session;
mod stream;

pub use session::{serve, Incoming, OUTGOING_QUEUE, STREAM_BUFFER};
pub use stream::{SpdyStream, StreamReader, StreamWriter, MAX_DATA_FRAME};
