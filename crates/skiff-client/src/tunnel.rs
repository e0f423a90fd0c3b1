//! The connection a separately joined agent keeps to the API server for the streaming
//! subresources (logs, exec, attach, port-forward), as k3s's agents keep a tunnel: the agent
//! dials out (so a node behind NAT or a firewall still serves `kubectl logs`), authenticated
//! like any of its API requests, and upgrades to a WebSocket. Over that byte stream the agent
//! is an HTTP/2 *server* and the API server its client: every streaming request is one HTTP/2
//! stream, so many run at once over the one connection.
//!
//! Requests (server → agent), each body starting with one JSON line (the request):
//! - `POST /v1/logs` ([`LogRequest`]): `200` and the log, or `404` and why;
//! - `POST /v1/exec`, `POST /v1/attach` ([`ExecRequest`]): the rest of the request body and
//!   the response body are [`frame`]s (stdin, resizes and stdin's end in; stdout, stderr and
//!   the exit out);
//! - `POST /v1/portforward` ([`PortForwardRequest`]): then raw bytes each way.
//!
//! An error before a session starts is a non-2xx answer whose body is the message.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt, TryStreamExt};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::streams::{
    ExecExit, ExecRequest, ExecSession, LogRequest, LogStream, NodeStreams, PortConnection, PortForwardRequest,
    TerminalSize,
};

/// The path the agent opens the tunnel on (`?node=NAME`).
pub const TUNNEL_PATH: &str = "/skiff/v1/agent-tunnel";
/// The WebSocket subprotocol the server answers (one kube's client offers).
pub const TUNNEL_PROTOCOL: &str = "v4.channel.k8s.io";

/// Frames of an exec or attach session: `type: u8, length: u32 (big-endian), payload`.
pub mod frame {
    use std::io;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Bytes for the process's stdin (to the agent).
    pub const STDIN: u8 = 0;
    /// The process's stdout.
    pub const STDOUT: u8 = 1;
    /// The process's stderr.
    pub const STDERR: u8 = 2;
    /// How the process ended (JSON [`crate::streams::ExecExit`]); the last frame.
    pub const EXIT: u8 = 3;
    /// A terminal size (JSON [`crate::streams::TerminalSize`]).
    pub const RESIZE: u8 = 4;
    /// The client's stdin ended.
    pub const STDIN_CLOSE: u8 = 255;
    /// The largest payload.
    pub const MAX: usize = 64 * 1024;

    /// A frame's header.
    pub fn header(kind: u8, len: usize) -> [u8; 5] {
        let l = (len as u32).to_be_bytes();
        [kind, l[0], l[1], l[2], l[3]]
    }

    /// Reads one frame; `None` at the end of the stream.
    pub async fn read(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<(u8, Vec<u8>)>> {
        let mut h = [0u8; 5];
        match r.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
        if len > MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes (at most {MAX})"),
            ));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        Ok(Some((h[0], payload)))
    }

    /// Writes one frame.
    pub async fn write(w: &mut (impl AsyncWrite + Unpin), kind: u8, data: &[u8]) -> io::Result<()> {
        w.write_all(&header(kind, data.len())).await?;
        w.write_all(data).await
    }
}

/// The client side of a framed session (`rd`: frames from the process, `wr`: frames to it):
/// the streams `req` asks for, the resize channel of a terminal, and the exit (an [`frame::EXIT`]
/// frame, or success when the stream just ends, as an attach does when the container exits).
pub fn framed_session<R, W>(mut rd: R, mut wr: W, req: &ExecRequest) -> ExecSession
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_w, out_r) = tokio::io::duplex(64 * 1024);
    let (err_w, err_r) = tokio::io::duplex(64 * 1024);
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut out_w, mut err_w) = (out_w, err_w);
        let exit = loop {
            match frame::read(&mut rd).await {
                Ok(None) => break ExecExit::Code(0),
                Err(e) => break ExecExit::Error(format!("the session's output: {e}")),
                // A reader that went away only loses its own stream.
                Ok(Some((frame::STDOUT, data))) => drop(out_w.write_all(&data).await),
                Ok(Some((frame::STDERR, data))) => drop(err_w.write_all(&data).await),
                Ok(Some((frame::EXIT, data))) => {
                    break serde_json::from_slice(&data)
                        .unwrap_or_else(|e| ExecExit::Error(format!("a bad exit frame: {e}")))
                }
                Ok(Some(_)) => {}
            }
        };
        let _ = out_w.shutdown().await;
        let _ = err_w.shutdown().await;
        let _ = exit_tx.send(exit);
    });
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(16);
    tokio::spawn(async move {
        while let Some((kind, data)) = frames_rx.recv().await {
            if frame::write(&mut wr, kind, &data).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut session = ExecSession {
        stdin: None,
        stdout: req.stdout.then(|| Box::pin(out_r) as crate::streams::Reader),
        stderr: (req.stderr && !req.tty).then(|| Box::pin(err_r) as crate::streams::Reader),
        resize: None,
        exit: Box::pin(async move { exit_rx.await.unwrap_or(ExecExit::Code(0)) }),
    };
    if req.stdin {
        let (stdin_w, mut stdin_r) = tokio::io::duplex(64 * 1024);
        session.stdin = Some(Box::pin(stdin_w));
        let frames = frames_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin_r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if frames.send((frame::STDIN, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = frames.send((frame::STDIN_CLOSE, Vec::new())).await;
        });
    }
    if req.tty {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<TerminalSize>(4);
        session.resize = Some(tx);
        let frames = frames_tx.clone();
        tokio::spawn(async move {
            while let Some(size) = rx.recv().await {
                let json = serde_json::to_vec(&size).unwrap_or_default();
                if frames.send((frame::RESIZE, json)).await.is_err() {
                    return;
                }
            }
        });
    }
    session
}

/// The serving side of a framed session: runs `session`, fed from `rd`, answering on `wr`.
pub async fn serve_session<R, W>(session: ExecSession, mut rd: R, mut wr: W)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let ExecSession {
        mut stdin,
        stdout,
        stderr,
        resize,
        exit,
    } = session;
    let input = tokio::spawn(async move {
        while let Ok(Some((kind, data))) = frame::read(&mut rd).await {
            match kind {
                frame::STDIN => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                frame::RESIZE => {
                    if let (Some(tx), Ok(size)) = (&resize, serde_json::from_slice::<TerminalSize>(&data)) {
                        let _ = tx.try_send(size);
                    }
                }
                frame::STDIN_CLOSE => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
                _ => {}
            }
        }
    });
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<(u8, Bytes)>(16);
    for (kind, r) in [(frame::STDOUT, stdout), (frame::STDERR, stderr)] {
        if let Some(mut r) = r {
            let tx = out_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n @ 1..) = r.read(&mut buf).await {
                    if tx.send((kind, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    drop(out_tx);
    let mut exit = exit;
    let mut code = None;
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some((kind, data)) => {
                    if frame::write(&mut wr, kind, &data).await.is_err() {
                        input.abort();
                        return;
                    }
                }
                None => break,
            },
            c = &mut exit, if code.is_none() => {
                code = Some(c);
                // The outputs end when the process's last holder of them is gone; drain what
                // is there rather than wait for a descendant that keeps them open.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some((kind, data)) = out_rx.recv().await {
                        if frame::write(&mut wr, kind, &data).await.is_err() {
                            return;
                        }
                    }
                })
                .await;
                break;
            }
        }
    }
    let code = match code {
        Some(c) => c,
        None => exit.await,
    };
    let _ = frame::write(&mut wr, frame::EXIT, &serde_json::to_vec(&code).unwrap_or_default()).await;
    let _ = wr.shutdown().await;
    input.abort();
}

/// A WebSocket carrying a byte stream in binary messages, as one end of an in-memory pipe.
pub fn ws_bytes<S>(ws: WebSocketStream<S>) -> DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut sink, mut incoming) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(theirs);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            tokio::select! {
                msg = incoming.next() => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        if wr.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                n = rd.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
        let _ = sink.close().await;
    });
    ours
}

type Body = UnsyncBoxBody<Bytes, io::Error>;

fn text(code: u16, message: String) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(
        http_body_util::Full::new(Bytes::from(message))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    r
}

fn reader_body(r: impl AsyncRead + Send + 'static) -> Body {
    StreamBody::new(ReaderStream::new(r).map_ok(Frame::data)).boxed_unsync()
}

/// The agent's side: serves the streaming requests of the tunnel over `io` with `streams`
/// until the connection ends.
pub async fn serve<IO>(io: IO, streams: Arc<dyn NodeStreams>) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let streams = streams.clone();
        async move { Ok::<_, Infallible>(handle(streams, req).await) }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await
}

async fn handle(streams: Arc<dyn NodeStreams>, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Body> {
    let path = req.uri().path().to_string();
    let body = BodyStream::new(req.into_body())
        .try_filter_map(|f| futures::future::ready(Ok(f.into_data().ok())))
        .map_err(io::Error::other);
    let mut rd = BufReader::new(StreamReader::new(body));
    let mut line = Vec::new();
    if let Err(e) = rd.read_until(b'\n', &mut line).await {
        return text(400, format!("reading the request: {e}"));
    }
    fn parse<T: serde::de::DeserializeOwned>(line: &[u8]) -> Result<T, String> {
        serde_json::from_slice(line).map_err(|e| format!("a bad request: {e}"))
    }
    match path.as_str() {
        "/v1/logs" => {
            let req: LogRequest = match parse(&line) {
                Ok(r) => r,
                Err(m) => return text(400, m),
            };
            match streams.logs(req).await {
                Ok(stream) => hyper::Response::new(StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()),
                Err(m) => text(404, m),
            }
        }
        "/v1/exec" | "/v1/attach" => {
            let req: ExecRequest = match parse(&line) {
                Ok(r) => r,
                Err(m) => return text(400, m),
            };
            let started = if path == "/v1/exec" {
                streams.exec(req).await
            } else {
                streams.attach(req).await
            };
            match started {
                Ok(session) => {
                    let (w, r) = tokio::io::duplex(64 * 1024);
                    tokio::spawn(serve_session(session, rd, w));
                    hyper::Response::new(reader_body(r))
                }
                Err(m) => text(400, m),
            }
        }
        "/v1/portforward" => {
            let req: PortForwardRequest = match parse(&line) {
                Ok(r) => r,
                Err(m) => return text(400, m),
            };
            match streams.port_forward(req).await {
                Ok(conn) => {
                    let mut write = conn.write;
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut rd, &mut write).await;
                        let _ = write.shutdown().await;
                    });
                    hyper::Response::new(reader_body(conn.read))
                }
                Err(m) => text(400, m),
            }
        }
        _ => text(404, format!("no such tunnel request: {path}")),
    }
}

/// The API server's side of one agent's tunnel: a [`NodeStreams`] that sends each request to
/// the agent.
#[derive(Clone)]
pub struct TunnelStreams {
    send: hyper::client::conn::http2::SendRequest<Body>,
}

impl TunnelStreams {
    /// Opens HTTP/2 over `io`; the returned future drives the connection and ends with it.
    pub async fn handshake<IO>(
        io: IO,
    ) -> Result<(TunnelStreams, impl std::future::Future<Output = ()> + Send), hyper::Error>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        // Pings find a tunnel whose peer vanished without a FIN (a node that lost power).
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .handshake(TokioIo::new(io))
            .await?;
        Ok((TunnelStreams { send }, async move {
            let _ = conn.await;
        }))
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    /// Sends `path` with `request` as its first line; returns the response body as a reader
    /// and a writer for the rest of the request body, or the agent's error message.
    async fn request(
        &self,
        path: &str,
        request: &impl serde::Serialize,
    ) -> Result<(impl AsyncRead + Send + Unpin + 'static, DuplexStream), String> {
        let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        w.write_all(&line).await.map_err(|e| e.to_string())?;
        let req = hyper::Request::post(path)
            .body(reader_body(r))
            .map_err(|e| e.to_string())?;
        let mut send = self.send.clone();
        send.ready().await.map_err(|e| format!("the node's tunnel: {e}"))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("the node's tunnel: {e}"))?;
        let ok = resp.status().is_success();
        let body = BodyStream::new(resp.into_body())
            .try_filter_map(|f| futures::future::ready(Ok(f.into_data().ok())))
            .map_err(io::Error::other);
        let mut rd = StreamReader::new(body);
        if !ok {
            let mut message = String::new();
            let _ = rd.read_to_string(&mut message).await;
            return Err(message);
        }
        Ok((rd, w))
    }
}

impl NodeStreams for TunnelStreams {
    fn logs(&self, req: LogRequest) -> futures::future::BoxFuture<'static, Result<LogStream, String>> {
        let me = self.clone();
        Box::pin(async move {
            let (rd, w) = me.request("/v1/logs", &req).await?;
            drop(w);
            Ok(Box::pin(ReaderStream::new(rd)) as LogStream)
        })
    }

    fn exec(&self, req: ExecRequest) -> futures::future::BoxFuture<'static, Result<ExecSession, String>> {
        let me = self.clone();
        Box::pin(async move {
            let (rd, w) = me.request("/v1/exec", &req).await?;
            Ok(framed_session(rd, w, &req))
        })
    }

    fn attach(&self, req: ExecRequest) -> futures::future::BoxFuture<'static, Result<ExecSession, String>> {
        let me = self.clone();
        Box::pin(async move {
            let (rd, w) = me.request("/v1/attach", &req).await?;
            Ok(framed_session(rd, w, &req))
        })
    }

    fn port_forward(
        &self,
        req: PortForwardRequest,
    ) -> futures::future::BoxFuture<'static, Result<PortConnection, String>> {
        let me = self.clone();
        Box::pin(async move {
            let (rd, w) = me.request("/v1/portforward", &req).await?;
            Ok(PortConnection {
                read: Box::pin(rd),
                write: Box::pin(w),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::Reader;

    /// A node whose "processes" are made up: `logs` knows container "c" only; `exec` runs
    /// `upper` (stdin upper-cased to stdout, "done" to stderr, exit 3); port-forward echoes.
    struct Fake;

    impl NodeStreams for Fake {
        fn logs(&self, req: LogRequest) -> futures::future::BoxFuture<'static, Result<LogStream, String>> {
            Box::pin(async move {
                if req.container != "c" {
                    return Err(format!("no container {:?}", req.container));
                }
                let lines = vec![Ok(Bytes::from("one\n")), Ok(Bytes::from("two\n"))];
                Ok(Box::pin(futures::stream::iter(lines)) as LogStream)
            })
        }

        fn exec(&self, req: ExecRequest) -> futures::future::BoxFuture<'static, Result<ExecSession, String>> {
            Box::pin(async move {
                if req.command != ["upper"] {
                    return Err(format!("executable file not found: {:?}", req.command));
                }
                let (stdin_w, mut stdin_r) = tokio::io::duplex(1024);
                let (mut out_w, out_r) = tokio::io::duplex(1024);
                let (mut err_w, err_r) = tokio::io::duplex(1024);
                let run = tokio::spawn(async move {
                    let mut input = String::new();
                    let _ = stdin_r.read_to_string(&mut input).await;
                    let _ = out_w.write_all(input.to_uppercase().as_bytes()).await;
                    let _ = err_w.write_all(b"done\n").await;
                    3
                });
                Ok(ExecSession {
                    stdin: Some(Box::pin(stdin_w)),
                    stdout: Some(Box::pin(out_r) as Reader),
                    stderr: Some(Box::pin(err_r) as Reader),
                    resize: None,
                    exit: Box::pin(async move { ExecExit::Code(run.await.unwrap_or(1)) }),
                })
            })
        }

        fn port_forward(
            &self,
            req: PortForwardRequest,
        ) -> futures::future::BoxFuture<'static, Result<PortConnection, String>> {
            Box::pin(async move {
                if req.port != 80 {
                    return Err(format!("connection refused on port {}", req.port));
                }
                let (ours, theirs) = tokio::io::duplex(1024);
                let (mut r, mut w) = tokio::io::split(theirs);
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
                let (read, write) = tokio::io::split(ours);
                Ok(PortConnection {
                    read: Box::pin(read),
                    write: Box::pin(write),
                })
            })
        }
    }

    async fn connected() -> TunnelStreams {
        let (agent_side, server_side) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve(agent_side, Arc::new(Fake)));
        let (streams, conn) = TunnelStreams::handshake(server_side).await.expect("handshake");
        tokio::spawn(conn);
        streams
    }

    #[tokio::test]
    async fn logs_exec_and_port_forward_cross_the_tunnel() {
        let t = connected().await;
        // Logs, and a missing container's message.
        let req = LogRequest {
            container: "c".into(),
            ..Default::default()
        };
        let chunks: Vec<Bytes> = t.logs(req).await.expect("logs").try_collect().await.expect("read");
        assert_eq!(chunks.concat(), b"one\ntwo\n");
        let req = LogRequest {
            container: "x".into(),
            ..Default::default()
        };
        assert_eq!(t.logs(req).await.err().as_deref(), Some("no container \"x\""));
        // Exec: stdin in, both outputs and the exit code out.
        let req = ExecRequest {
            command: vec!["upper".into()],
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let s = t.exec(req).await.expect("exec");
        let (mut stdin, mut stdout, mut stderr) =
            (s.stdin.expect("in"), s.stdout.expect("out"), s.stderr.expect("err"));
        stdin.write_all(b"over the tunnel").await.expect("write");
        stdin.shutdown().await.expect("close stdin");
        let (mut out, mut err) = (String::new(), String::new());
        stdout.read_to_string(&mut out).await.expect("stdout");
        stderr.read_to_string(&mut err).await.expect("stderr");
        assert_eq!((out.as_str(), err.as_str()), ("OVER THE TUNNEL", "done\n"));
        assert_eq!(s.exit.await, ExecExit::Code(3));
        let req = ExecRequest {
            command: vec!["nope".into()],
            stdout: true,
            ..Default::default()
        };
        let e = t.exec(req).await.err().expect("no such command");
        assert!(e.contains("executable file not found"), "{e}");
        // Port-forward: bytes both ways; a refused port is the agent's message.
        let req = PortForwardRequest {
            port: 80,
            ..Default::default()
        };
        let mut c = t.port_forward(req).await.expect("connect");
        c.write.write_all(b"ping").await.expect("write");
        c.write.shutdown().await.expect("close");
        let mut back = String::new();
        c.read.read_to_string(&mut back).await.expect("read");
        assert_eq!(back, "ping");
        let req = PortForwardRequest {
            port: 81,
            ..Default::default()
        };
        assert_eq!(
            t.port_forward(req).await.err().as_deref(),
            Some("connection refused on port 81")
        );
        // Many requests share the one connection at once.
        let many = (0..20).map(|_| {
            let t = t.clone();
            async move {
                let req = LogRequest {
                    container: "c".into(),
                    ..Default::default()
                };
                let chunks: Vec<Bytes> = t.logs(req).await.expect("logs").try_collect().await.expect("read");
                chunks.concat()
            }
        });
        for got in futures::future::join_all(many).await {
            assert_eq!(got, b"one\ntwo\n");
        }
    }
}
