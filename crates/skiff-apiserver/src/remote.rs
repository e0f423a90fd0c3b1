//! `pods/{name}/exec`, `pods/{name}/attach` and `pods/{name}/portforward`: the upgraded
//! streaming subresources, checked against the pod as the API server and kubelet check them,
//! then relayed to the pod's node agent.
//!
//! Two transports, as kubectl speaks them (`../shared/reference/kubectl-wire.md` §8.3–8.4):
//! - WebSocket (kubectl 1.30+ for exec/attach, `v5.channel.k8s.io` or `v4.channel.k8s.io`:
//!   one binary message per chunk, its first byte the channel), and for port-forward 1.31+
//!   the `SPDY/3.1+portforward.k8s.io` tunnel: SPDY carried in binary messages;
//! - SPDY/3.1 on the upgraded connection (kubectl up to 1.29, and the fallback of all).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use skiff_client::streams::{ExecExit, ExecRequest, ExecSession, NodeStreams, PortForwardRequest, TerminalSize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::{ApiError, ApiResult};
use crate::logs::{node_agent, strings};
use crate::request::{route, Query, Route};
use crate::server::Shared;

/// Which streaming subresource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Exec,
    Attach,
    PortForward,
}

/// Whether `path` names a streaming subresource of a pod (the server hands those requests
/// here before reading a body, as they are upgraded).
pub fn is_stream_path(path: &str) -> bool {
    path.starts_with("/api/v1/namespaces/")
        && (path.ends_with("/exec") || path.ends_with("/attach") || path.ends_with("/portforward"))
}

const WS_EXEC_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const SPDY_EXEC_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
const WS_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// How long the client has to open the streams of an exec session over SPDY (the kubelet's
/// stream creation timeout).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a finished exec session waits for the client to close the connection.
const CLIENT_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one request for a streaming subresource; every failure before the upgrade is a
/// `Status`.
pub async fn serve(shared: Arc<Shared>, req: Request) -> Response {
    match prepare(&shared, &req) {
        Ok(plan) => upgrade(plan, req),
        Err(e) => e.into_response(),
    }
}

/// `GET /skiff/v1/agent-tunnel?node=NAME` (a WebSocket): a separately joined agent's
/// connection for the streaming requests of its node's pods ([`skiff_client::tunnel`]).
/// Only nodes and administrators may open one; the newest tunnel of a node wins.
pub async fn agent_tunnel(shared: Arc<Shared>, mut req: Request) -> Response {
    use skiff_client::tunnel::{TunnelStreams, TUNNEL_PROTOCOL};
    let allowed = req
        .extensions()
        .get::<crate::server::Identity>()
        .is_some_and(|who| who.groups.iter().any(|g| g == "system:masters" || g == "system:nodes"));
    if !allowed {
        return ApiError::forbidden("only nodes may open an agent tunnel").into_response();
    }
    let q = Query::parse(req.uri().query());
    let Some(node) = q.get("node").filter(|n| !n.is_empty()).map(str::to_string) else {
        return ApiError::bad_request("node: Required value: the tunnel's node name").into_response();
    };
    let headers = req.headers();
    let is_ws = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let offers = header_values(headers, "sec-websocket-protocol").any(|p| p == TUNNEL_PROTOCOL);
    let (true, Some(key), true) = (is_ws, key, offers) else {
        return ApiError::bad_request(format!(
            "the agent tunnel is a WebSocket with subprotocol {TUNNEL_PROTOCOL}"
        ))
        .into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "agent tunnel upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (streams, conn) = match TunnelStreams::handshake(skiff_client::tunnel::ws_bytes(ws)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "agent tunnel handshake failed");
                return;
            }
        };
        let streams: Arc<dyn NodeStreams> = Arc::new(streams);
        shared
            .nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.clone(), streams.clone());
        tracing::info!(node = %node, "agent tunnel connected");
        conn.await;
        let mut nodes = shared.nodes.write().unwrap_or_else(|p| p.into_inner());
        if nodes
            .get(&node)
            .is_some_and(|s| std::ptr::addr_eq(Arc::as_ptr(s), Arc::as_ptr(&streams)))
        {
            nodes.remove(&node);
        }
        tracing::info!(node = %node, "agent tunnel closed");
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            "Sec-WebSocket-Accept",
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
        )
        .header("Sec-WebSocket-Protocol", TUNNEL_PROTOCOL)
        .body(Body::empty())
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// What a checked request will do once upgraded.
struct Plan {
    kind: Kind,
    agent: Arc<dyn NodeStreams>,
    exec: ExecRequest,
    forward: PortForwardRequest,
    transport: Transport,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Transport {
    /// A WebSocket with this subprotocol.
    WebSocket { protocol: &'static str, key: String },
    /// SPDY/3.1 with this `X-Stream-Protocol-Version`.
    Spdy { protocol: &'static str },
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Picks the transport and protocol from the upgrade request (the first of `ours` the client
/// offers).
fn negotiate(kind: Kind, headers: &HeaderMap) -> ApiResult<Transport> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if upgrade.contains("websocket") {
        let offered: Vec<&str> = header_values(headers, "sec-websocket-protocol").collect();
        let ours: &[&'static str] = match kind {
            Kind::PortForward => &[WS_TUNNEL_PROTOCOL],
            _ => &WS_EXEC_PROTOCOLS,
        };
        let key = headers
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
        // Answering anything but 101 makes kubectl fall back to SPDY.
        let protocol = ours.iter().find(|p| offered.contains(p)).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to upgrade: none of the offered WebSocket subprotocols [{}] is supported; supported: [{}]",
                offered.join(", "),
                ours.join(", ")
            ))
        })?;
        return Ok(Transport::WebSocket {
            protocol,
            key: key.to_string(),
        });
    }
    if upgrade.contains("spdy/3.1") {
        let offered: Vec<&str> = header_values(headers, "x-stream-protocol-version").collect();
        let ours: &[&'static str] = match kind {
            Kind::PortForward => &[PORT_FORWARD_PROTOCOL],
            _ => &SPDY_EXEC_PROTOCOLS,
        };
        let protocol = ours.iter().find(|p| offered.contains(p)).ok_or_else(|| {
            ApiError::forbidden(format!(
                "unable to upgrade: none of the offered stream protocols [{}] is supported; supported: [{}]",
                offered.join(", "),
                ours.join(", ")
            ))
        })?;
        return Ok(Transport::Spdy { protocol });
    }
    Err(ApiError::bad_request(
        "Upgrade request required: this subresource is served over WebSocket or SPDY/3.1",
    ))
}

fn prepare(shared: &Shared, req: &Request) -> ApiResult<Plan> {
    let path = req.uri().path();
    let Route::Resource(rr) = route(path, &shared.types)? else {
        return Err(ApiError::no_route());
    };
    let kind = match rr.sub.as_deref() {
        Some("exec") => Kind::Exec,
        Some("attach") => Kind::Attach,
        Some("portforward") => Kind::PortForward,
        _ => return Err(ApiError::no_route()),
    };
    if rr.rt.kind != "Pod" || !rr.rt.group.is_empty() {
        return Err(ApiError::no_route());
    }
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return Err(ApiError::method_not_allowed(format!(
            "pods/{} only supports get and create (an upgraded connection)",
            rr.sub.as_deref().unwrap_or("")
        )));
    }
    let ns = rr.namespace.as_deref().unwrap_or("default");
    let name = rr.name.as_deref().unwrap_or("");
    let q = Query::parse(req.uri().query());
    let pod = shared.objects.get(&rr.rt, Some(ns), name)?.value();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let phase = pod["status"]["phase"].as_str().unwrap_or("");
    let mut exec = ExecRequest {
        namespace: ns.to_string(),
        pod: name.to_string(),
        uid: uid.clone(),
        ..Default::default()
    };
    let forward = PortForwardRequest {
        namespace: ns.to_string(),
        pod: name.to_string(),
        uid,
        port: 0,
        host_network: pod["spec"]["hostNetwork"].as_bool().unwrap_or(false),
    };
    if kind == Kind::PortForward {
        if phase != "Running" {
            return Err(ApiError::bad_request(format!(
                "unable to forward ports of pod {name}: pod is not running (phase {phase:?})"
            )));
        }
    } else {
        if matches!(phase, "Succeeded" | "Failed") {
            return Err(ApiError::bad_request(format!(
                "cannot {} a container in a completed pod; current phase is {phase}",
                if kind == Kind::Exec { "exec into" } else { "attach to" }
            )));
        }
        let containers = strings(&pod, "/spec/containers");
        let init = strings(&pod, "/spec/initContainers");
        exec.container = match q.get("container").filter(|c| !c.is_empty()) {
            Some(c) if containers.contains(&c) || init.contains(&c) => c.to_string(),
            Some(c) => {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
            None if containers.len() == 1 => containers[0].to_string(),
            None => {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                )))
            }
        };
        exec.command = q.all("command").to_vec();
        exec.stdin = q.flag("stdin");
        exec.stdout = q.flag("stdout");
        exec.stderr = q.flag("stderr");
        exec.tty = q.flag("tty");
        if kind == Kind::Exec && exec.command.is_empty() {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container",
            ));
        }
        if !(exec.stdin || exec.stdout || exec.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        if exec.tty && exec.stderr {
            // kubectl never asks for both: a terminal has one output stream.
            exec.stderr = false;
        }
    }
    let agent = node_agent(
        shared,
        &pod,
        name,
        match kind {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "port forwarding",
        },
    )?;
    let transport = negotiate(kind, req.headers())?;
    Ok(Plan {
        kind,
        agent,
        exec,
        forward,
        transport,
    })
}

/// Answers `101 Switching Protocols` and serves the upgraded connection in the background.
fn upgrade(plan: Plan, mut req: Request) -> Response {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut res = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    match &plan.transport {
        Transport::WebSocket { protocol, key } => {
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            res = res
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header("Sec-WebSocket-Accept", accept)
                .header("Sec-WebSocket-Protocol", *protocol);
        }
        Transport::Spdy { protocol } => {
            res = res
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "SPDY/3.1")
                .header("X-Stream-Protocol-Version", HeaderValue::from_static(protocol));
        }
    }
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        match (plan.kind, plan.transport) {
            (Kind::PortForward, Transport::WebSocket { .. }) => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                port_forward_spdy(plan.agent, plan.forward, skiff_client::tunnel::ws_bytes(ws)).await;
            }
            (Kind::PortForward, Transport::Spdy { .. }) => port_forward_spdy(plan.agent, plan.forward, io).await,
            (kind, Transport::WebSocket { protocol, .. }) => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
                let command = plan.exec.command.clone();
                let session = start(kind, &plan.agent, plan.exec);
                exec_ws(session, command, ws, protocol == "v5.channel.k8s.io").await;
            }
            (kind, Transport::Spdy { .. }) => exec_spdy(kind, plan.agent, plan.exec, io).await,
        }
    });
    res.body(Body::empty()).unwrap_or_else(|_| Response::new(Body::empty()))
}

fn start(
    kind: Kind,
    agent: &Arc<dyn NodeStreams>,
    req: ExecRequest,
) -> futures::future::BoxFuture<'static, Result<ExecSession, String>> {
    match kind {
        Kind::Attach => agent.attach(req),
        _ => agent.exec(req),
    }
}

/// The `metav1.Status` that ends a session on the error channel (v4 and v5): kubectl turns a
/// `NonZeroExitCode` into its own exit code.
fn exit_status(exit: &ExecExit, command: &[String]) -> Value {
    match exit {
        ExecExit::Code(0) => json!({"metadata": {}, "status": "Success"}),
        ExecExit::Code(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        ExecExit::Error(message) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {message}"),
            "reason": "InternalError",
            "code": 500,
            "details": {"causes": [{"message": message}]},
        }),
    }
}

/// Runs an exec/attach session over a WebSocket (`v4`/`v5.channel.k8s.io`). The session is
/// driven as the agent tunnel drives it ([`skiff_client::tunnel::serve_session`]: frames in,
/// frames out); here the frames are translated to and from the channel protocol's messages,
/// which number the streams the same way.
async fn exec_ws<S>(
    session: futures::future::BoxFuture<'static, Result<ExecSession, String>>,
    command: Vec<String>,
    ws: WebSocketStream<S>,
    v5: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use skiff_client::tunnel::frame;
    let (mut sink, mut incoming) = ws.split();
    let status = match session.await {
        Err(message) => Some(ExecExit::Error(message)),
        Ok(s) => {
            let (mut to_session, session_in) = tokio::io::duplex(64 * 1024);
            let (session_out, mut from_session) = tokio::io::duplex(64 * 1024);
            tokio::spawn(skiff_client::tunnel::serve_session(s, session_in, session_out));
            // Ends when the client goes: the session's stdin ends with it, as the kubelet's.
            let input = async {
                while let Some(Ok(msg)) = incoming.next().await {
                    let b = match msg {
                        Message::Binary(b) => b,
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    let (kind, payload) = match (b.first(), b.get(1)) {
                        (Some(0), _) => (frame::STDIN, &b[1..]),
                        (Some(4), _) => (frame::RESIZE, &b[1..]),
                        (Some(255), Some(0)) if v5 => (frame::STDIN_CLOSE, &b[..0]),
                        _ => continue,
                    };
                    if frame::write(&mut to_session, kind, payload).await.is_err() {
                        break;
                    }
                }
            };
            // Ends with the process's exit (`None`: the client is gone).
            let output = async {
                loop {
                    match frame::read(&mut from_session).await {
                        Ok(Some((frame::EXIT, data))) => {
                            return Some(
                                serde_json::from_slice(&data)
                                    .unwrap_or_else(|e| ExecExit::Error(format!("a bad exit from the session: {e}"))),
                            )
                        }
                        Ok(Some((kind @ (frame::STDOUT | frame::STDERR), data))) => {
                            let mut m = Vec::with_capacity(data.len() + 1);
                            m.push(kind);
                            m.extend_from_slice(&data);
                            if sink.send(Message::Binary(m.into())).await.is_err() {
                                return None;
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => return Some(ExecExit::Error("the session ended without an exit".into())),
                    }
                }
            };
            tokio::select! {
                () = input => None,
                exit = output => exit,
            }
        }
    };
    if let Some(exit) = status {
        let body = serde_json::to_vec(&exit_status(&exit, &command)).unwrap_or_default();
        let mut frame = Vec::with_capacity(body.len() + 1);
        frame.push(3u8);
        frame.extend_from_slice(&body);
        let _ = sink.send(Message::Binary(frame.into())).await;
    }
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = sink.close().await;
}

/// Runs an exec/attach session over SPDY: the client opens one stream per channel (`error`,
/// then `stdin`, `stdout`, `stderr`, `resize` as asked), the session relays them.
async fn exec_spdy<IO>(kind: Kind, agent: Arc<dyn NodeStreams>, req: ExecRequest, io: IO)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut incoming = skiff_spdy::serve(io);
    let wanted = 1 + usize::from(req.stdin) + usize::from(req.stdout) + usize::from(req.stderr) + usize::from(req.tty);
    let mut streams = std::collections::HashMap::new();
    let collected = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while streams.len() < wanted {
            let Some(s) = incoming.next().await else { return false };
            let ty = s.header("streamtype").unwrap_or("").to_string();
            streams.insert(ty, s);
        }
        true
    })
    .await;
    if !matches!(collected, Ok(true)) {
        tracing::debug!("exec: the client did not open its streams");
        incoming.goaway();
        return;
    }
    let Some((_, mut error)) = streams.remove("error").map(|s| s.split()) else {
        incoming.goaway();
        return;
    };
    let command = req.command.clone();
    let exit = match start(kind, &agent, req).await {
        Err(message) => ExecExit::Error(message),
        Ok(session) => {
            let mut tasks = Vec::new();
            if let (Some(mut w), Some(s)) = (session.stdin, streams.remove("stdin")) {
                let (mut r, _) = s.split();
                tasks.push(tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                }));
            }
            for (name, out) in [("stdout", session.stdout), ("stderr", session.stderr)] {
                if let (Some(mut r), Some(s)) = (out, streams.remove(name)) {
                    let (_, mut w) = s.split();
                    tasks.push(tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                    }));
                }
            }
            if let (Some(tx), Some(s)) = (session.resize, streams.remove("resize")) {
                let (r, _) = s.split();
                tokio::spawn(async move {
                    // Consecutive JSON objects, as Go's json.Encoder writes them.
                    let mut lines = tokio::io::BufReader::new(r);
                    let mut buf = Vec::new();
                    loop {
                        buf.clear();
                        match tokio::io::AsyncBufReadExt::read_until(&mut lines, b'\n', &mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {
                                if let Ok(size) = serde_json::from_slice::<TerminalSize>(&buf) {
                                    let _ = tx.try_send(size);
                                }
                            }
                        }
                    }
                });
            }
            let exit = session.exit.await;
            // Let the output copies drain (they end when the process's outputs close).
            for t in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
            }
            exit
        }
    };
    let body = serde_json::to_vec(&exit_status(&exit, &command)).unwrap_or_default();
    let _ = error.write_all(&body).await;
    let _ = error.shutdown().await;
    drop(streams);
    // The client closes the connection once it has read the status (RST_STREAM, GOAWAY, then
    // TCP close). Closing first can make it lose the status: spdystream may handle the
    // connection's end before the stream's last data.
    let _ = tokio::time::timeout(CLIENT_CLOSE_TIMEOUT, async { while incoming.next().await.is_some() {} }).await;
}

/// Serves `kubectl port-forward` over SPDY: each local connection is a pair of streams
/// (`error` and `data`, with the same `requestid` and the pod `port`), relayed to a new
/// connection to that port in the pod.
async fn port_forward_spdy<IO>(agent: Arc<dyn NodeStreams>, req: PortForwardRequest, io: IO)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut incoming = skiff_spdy::serve(io);
    let mut pending: std::collections::HashMap<String, skiff_spdy::SpdyStream> = std::collections::HashMap::new();
    while let Some(s) = incoming.next().await {
        let id = s.header("requestid").unwrap_or("").to_string();
        let Some(other) = pending.remove(&id) else {
            pending.insert(id, s);
            continue;
        };
        let (error, data) = if s.header("streamtype") == Some("error") {
            (s, other)
        } else {
            (other, s)
        };
        let agent = agent.clone();
        let mut req = req.clone();
        tokio::spawn(async move {
            let (_, mut error_w) = error.split();
            let port = data.header("port").unwrap_or("").to_string();
            let (mut data_r, mut data_w) = data.split();
            let Ok(p) = port.parse::<u16>() else {
                let _ = error_w
                    .write_all(format!("invalid port {port:?}: must be a number from 1 to 65535").as_bytes())
                    .await;
                let _ = error_w.shutdown().await;
                let _ = data_w.shutdown().await;
                return;
            };
            req.port = p;
            match agent.port_forward(req).await {
                Err(message) => {
                    let _ = error_w
                        .write_all(format!("an error occurred forwarding {p} -> {p}: {message}").as_bytes())
                        .await;
                }
                Ok(conn) => {
                    let (mut pod_r, mut pod_w) = (conn.read, conn.write);
                    let up = async {
                        let _ = tokio::io::copy(&mut data_r, &mut pod_w).await;
                        let _ = pod_w.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut pod_r, &mut data_w).await;
                        // The pod closed its side: so does the client's connection. kubectl
                        // closes it once the error stream has ended too.
                        let _ = data_w.shutdown().await;
                        let _ = error_w.shutdown().await;
                    };
                    tokio::join!(up, down);
                }
            }
            let _ = error_w.shutdown().await;
            let _ = data_w.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn negotiates_what_each_kubectl_offers() {
        // 1.33 exec: WebSocket, v5 only.
        let h = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ]);
        assert!(matches!(
            negotiate(Kind::Exec, &h),
            Ok(Transport::WebSocket {
                protocol: "v5.channel.k8s.io",
                ..
            })
        ));
        // 1.27 exec: SPDY, one header line per protocol.
        let h = headers(&[
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ("x-stream-protocol-version", "v3.channel.k8s.io"),
            ("x-stream-protocol-version", "channel.k8s.io"),
        ]);
        assert_eq!(
            negotiate(Kind::Exec, &h).expect("spdy"),
            Transport::Spdy {
                protocol: "v4.channel.k8s.io"
            }
        );
        // 1.33 port-forward: the SPDY tunnel over WebSocket.
        let h = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
            ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
        ]);
        assert!(matches!(
            negotiate(Kind::PortForward, &h),
            Ok(Transport::WebSocket {
                protocol: WS_TUNNEL_PROTOCOL,
                ..
            })
        ));
        // Only old protocols over WebSocket: not 101, so kubectl falls back to SPDY.
        let h = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
            ("sec-websocket-protocol", "channel.k8s.io, base64.channel.k8s.io"),
        ]);
        let e = negotiate(Kind::Exec, &h).expect_err("no protocol");
        assert_eq!(e.status()["code"], 400);
        // No upgrade at all.
        let e = negotiate(Kind::Exec, &HeaderMap::new()).expect_err("no upgrade");
        assert!(e.status()["message"]
            .as_str()
            .unwrap_or("")
            .contains("Upgrade request required"));
    }

    #[test]
    fn exit_statuses_are_what_kubectl_decodes() {
        assert_eq!(exit_status(&ExecExit::Code(0), &[])["status"], "Success");
        let s = exit_status(&ExecExit::Code(3), &["sh".into()]);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        let s = exit_status(&ExecExit::Error("container not found (\"x\")".into()), &[]);
        assert_eq!(s["status"], "Failure");
        assert!(s["message"].as_str().unwrap_or("").contains("container not found"));
    }
}
