//! gRPC probes: one call of the gRPC Health Checking Protocol (`grpc.health.v1.Health/Check`
//! with the probe's `service`, empty by default) to the pod's address and `port`, over plain
//! HTTP/2 with prior knowledge (h2c), as the kubelet makes it: no TLS, `SERVING` is a success
//! and anything else a failure, with the kubelet's messages (its `pkg/probe/grpc`).
//!
//! Like the kubelet's blocking dial, connecting is retried until the probe's timeout: a
//! container that does not listen yet fails with `timeout: failed to connect service …`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::GRPCAction;
use prost::Message;
use tokio::time::Instant;

use super::KUBE_VERSION;

const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

// The two messages of `grpc/health/v1/health.proto`, derived with prost (already a workspace
// dependency) rather than encoded by hand: a derived decoder skips unknown fields and takes
// fields in any order, as protobuf requires, which a hand-written one would have to get right.
// `status` is an enum on the wire, i.e. a varint, which `int32` decodes identically.

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    /// `ServingStatus`: UNKNOWN 0, SERVING 1, NOT_SERVING 2, SERVICE_UNKNOWN 3.
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;

/// A `ServingStatus` as Go's generated `String()` names it (a number when unknown).
fn status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// gRPC status codes by number, as grpc-go's `codes.Code.String()` names them.
fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("Code({code})"), |n| n.to_string())
}

const UNKNOWN: u32 = 2;
const DEADLINE_EXCEEDED: u32 = 4;
const UNIMPLEMENTED: u32 = 12;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;

/// A failed call: its gRPC code and message.
#[derive(Debug, PartialEq, Eq)]
struct RpcError {
    code: u32,
    message: String,
}

impl RpcError {
    fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Run `g` against the pod at `pod_ip`, bounded by `timeout`.
pub(super) async fn probe(g: &GRPCAction, pod_ip: Option<IpAddr>, timeout: Duration) -> Result<(), String> {
    let port = u16::try_from(g.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("invalid port {}: must be between 1 and 65535", g.port))?;
    let ip = pod_ip.ok_or("the pod has no IP yet")?;
    let addr = SocketAddr::new(ip, port);
    let service = g.service.clone().unwrap_or_default();
    let deadline = Instant::now() + timeout;
    // Go prints a time.Duration of whole seconds as `1s`.
    let within = format!("{}s", timeout.as_secs());
    let Some((mut sender, _conn)) = connect(addr, deadline).await else {
        return Err(format!(
            "timeout: failed to connect service \"{addr}\" within {within}: context deadline exceeded"
        ));
    };
    let call = check(&mut sender, addr, &service, deadline);
    let outcome = match tokio::time::timeout_at(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(RpcError::new(DEADLINE_EXCEEDED, "context deadline exceeded")),
    };
    match outcome {
        Ok(SERVING) => Ok(()),
        Ok(status) => Err(format!(
            "service unhealthy (responded with \"{}\")",
            status_name(status)
        )),
        Err(e) if e.code == UNIMPLEMENTED => Err(format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
            e.message
        )),
        Err(e) if e.code == DEADLINE_EXCEEDED => Err(format!("timeout: health rpc did not complete within {within}")),
        Err(e) => Err(format!(
            "error: health rpc probe failed: rpc error: code = {} desc = {}",
            code_name(e.code),
            e.message
        )),
    }
}

/// An HTTP/2 connection to `addr`, retried until `deadline` (`None` then). The connection's
/// task stops when the returned guard is dropped.
async fn connect(addr: SocketAddr, deadline: Instant) -> Option<(SendRequest<Full<Bytes>>, crate::AbortOnDrop)> {
    loop {
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            let _ = tcp.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
                .await
                .ok()?;
            let task = tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "gRPC probe connection ended");
                }
            });
            Some((sender, crate::AbortOnDrop(task)))
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Some(connected)) => return Some(connected),
            Ok(None) => {}
            Err(_) => return None,
        }
        // The next attempt a little later, as gRPC's reconnect back-off (shorter: probes are
        // short).
        let next = Instant::now() + Duration::from_millis(100);
        if next >= deadline {
            tokio::time::sleep_until(deadline).await;
            return None;
        }
        tokio::time::sleep_until(next).await;
    }
}

/// The Check call; the serving status on success.
async fn check(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    service: &str,
    deadline: Instant,
) -> Result<i32, RpcError> {
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let req = http::Request::post(format!("http://{addr}{CHECK_PATH}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, format!("kube-probe/{KUBE_VERSION}"))
        // The server sees the deadline too (`m`: milliseconds).
        .header("grpc-timeout", format!("{}m", left.as_millis().max(1)))
        .body(Full::new(frame(&request.encode_to_vec())))
        .map_err(|e| RpcError::new(INTERNAL, e.to_string()))?;
    let unavailable = |e: hyper::Error| RpcError::new(UNAVAILABLE, format!("connection error: {e}"));
    let response = sender.send_request(req).await.map_err(unavailable)?;
    let (head, body) = response.into_parts();
    let collected = body.collect().await.map_err(unavailable)?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    // grpc-go's reading of a response: a non-200 status or a foreign content type is an error
    // by the HTTP status; then the status trailer (or header, in a trailers-only response).
    if head.status != http::StatusCode::OK {
        let code = match head.status.as_u16() {
            400 => INTERNAL,
            401 => 16,
            403 => 7,
            404 => UNIMPLEMENTED,
            429 | 502..=504 => UNAVAILABLE,
            _ => UNKNOWN,
        };
        return Err(RpcError::new(
            code,
            format!(
                "unexpected HTTP status code received from server: {} ({})",
                head.status.as_u16(),
                head.status.canonical_reason().unwrap_or("")
            ),
        ));
    }
    let content_type = head
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/grpc") {
        return Err(RpcError::new(
            UNKNOWN,
            format!("transport: received unexpected content-type {content_type:?}"),
        ));
    }
    let status = trailers
        .get("grpc-status")
        .or_else(|| head.headers.get("grpc-status"))
        .ok_or_else(|| RpcError::new(INTERNAL, "server closed the stream without sending trailers"))?;
    let code: u32 = status
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RpcError::new(INTERNAL, format!("transport: malformed grpc-status: {status:?}")))?;
    if code != 0 {
        let message = trailers
            .get("grpc-message")
            .or_else(|| head.headers.get("grpc-message"))
            .map(|m| percent_decode(m.as_bytes()))
            .unwrap_or_default();
        return Err(RpcError::new(code, message));
    }
    let message = unframe(&body)?;
    HealthCheckResponse::decode(message)
        .map(|r| r.status)
        .map_err(|e| RpcError::new(INTERNAL, format!("grpc: failed to unmarshal the received message: {e}")))
}

/// A gRPC length-prefixed message: not compressed (0), 4 bytes of big-endian length, the
/// message.
fn frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(u32::try_from(message.len()).expect("a health check request is a few bytes"));
    b.put_slice(message);
    b.freeze()
}

/// The one message of a unary response body.
fn unframe(body: &[u8]) -> Result<&[u8], RpcError> {
    let bad = |m: &str| RpcError::new(INTERNAL, m.to_string());
    let Some((head, rest)) = body.split_first_chunk::<5>() else {
        return Err(bad("grpc: the server sent no response message"));
    };
    if head[0] != 0 {
        // Nothing was offered (no grpc-accept-encoding), so nothing may come compressed.
        return Err(bad("grpc: compressed flag set with identity or empty encoding"));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    rest.get(..len)
        .filter(|_| rest.len() == len)
        .ok_or_else(|| bad("grpc: the response message's length does not match its frame"))
}

/// `grpc-message` is percent-encoded.
fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            raw[i],
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::Ipv4Addr;

    use http_body_util::combinators::BoxBody;
    use hyper::body::Incoming;

    type Body = BoxBody<Bytes, Infallible>;

    /// A response with gRPC's headers and `fields` as headers: a trailers-only response.
    fn trailers_only(code: u32, message: &str) -> http::Response<Body> {
        http::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", code.to_string())
            .header("grpc-message", message)
            .body(Full::new(Bytes::new()).boxed())
            .expect("response")
    }

    /// A hand-built gRPC health server, as grpc-go's health service answers: the empty
    /// service and `ok` are SERVING, `sick` is NOT_SERVING, `missing` is unknown (NOT_FOUND),
    /// `slow` never answers; any other method is Unimplemented.
    async fn health(req: http::Request<Incoming>) -> Result<http::Response<Body>, Infallible> {
        if req.uri().path() != CHECK_PATH {
            return Ok(trailers_only(
                UNIMPLEMENTED,
                &format!("unknown service {}", req.uri().path().trim_start_matches('/')),
            ));
        }
        assert_eq!(req.headers()["content-type"], "application/grpc");
        assert_eq!(req.headers()["te"], "trailers");
        assert!(req.headers().contains_key("grpc-timeout"));
        let body = req.into_body().collect().await.expect("request body").to_bytes();
        let request = HealthCheckRequest::decode(unframe(&body).expect("one message")).expect("a HealthCheckRequest");
        let status = match request.service.as_str() {
            "" | "ok" => SERVING,
            "sick" => 2,
            "missing" => return Ok(trailers_only(5, "unknown service")),
            // `grpc-message` is percent-encoded.
            "going-away" => return Ok(trailers_only(UNAVAILABLE, "going away%3A 50%25 done")),
            _ => futures::future::pending().await,
        };
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let message = HealthCheckResponse { status }.encode_to_vec();
        Ok(http::Response::builder()
            .header("content-type", "application/grpc")
            .body(
                Full::new(frame(&message))
                    .with_trailers(async move { Some(Ok(trailers)) })
                    .boxed(),
            )
            .expect("response"))
    }

    /// The server on 127.0.0.1 (h2c, no TLS); its port.
    async fn server() -> u16 {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.expect("accept");
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(health)),
                );
            }
        });
        port
    }

    fn action(port: u16, service: Option<&str>) -> GRPCAction {
        GRPCAction {
            port: port.into(),
            service: service.map(str::to_string),
        }
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn serving_is_a_success_and_anything_else_a_failure() {
        let port = server().await;
        assert_eq!(probe(&action(port, None), LOCAL, SECOND).await, Ok(()));
        assert_eq!(probe(&action(port, Some("ok")), LOCAL, SECOND).await, Ok(()));
        assert_eq!(
            probe(&action(port, Some("sick")), LOCAL, SECOND).await,
            Err("service unhealthy (responded with \"NOT_SERVING\")".to_string())
        );
        assert_eq!(
            probe(&action(port, Some("missing")), LOCAL, SECOND).await,
            Err("error: health rpc probe failed: rpc error: code = NotFound desc = unknown service".to_string())
        );
        assert_eq!(
            probe(&action(port, Some("going-away")), LOCAL, SECOND).await,
            Err(
                "error: health rpc probe failed: rpc error: code = Unavailable desc = going away: 50% done".to_string()
            )
        );
    }

    #[tokio::test]
    async fn a_server_without_the_health_service_is_unimplemented() {
        // Answers every call with Unimplemented, as a gRPC server without the health service.
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let svc = hyper::service::service_fn(|_req: http::Request<Incoming>| async {
                Ok::<_, Infallible>(trailers_only(UNIMPLEMENTED, "unknown service grpc.health.v1.Health"))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
        assert_eq!(
            probe(&action(port, None), LOCAL, SECOND).await,
            Err("error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service grpc.health.v1.Health".to_string())
        );
    }

    #[tokio::test]
    async fn timeouts_read_like_the_kubelets() {
        let port = server().await;
        assert_eq!(
            probe(&action(port, Some("slow")), LOCAL, SECOND).await,
            Err("timeout: health rpc did not complete within 1s".to_string())
        );
        let free = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = free.local_addr().expect("addr").port();
        drop(free);
        let started = std::time::Instant::now();
        assert_eq!(
            probe(&action(port, None), LOCAL, SECOND).await,
            Err(format!(
                "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: context deadline exceeded"
            ))
        );
        assert!(started.elapsed() >= SECOND, "connecting is retried until the timeout");
    }

    #[tokio::test]
    async fn bad_settings_are_clear_errors() {
        assert_eq!(
            probe(&action(0, None), LOCAL, SECOND).await,
            Err("invalid port 0: must be between 1 and 65535".to_string())
        );
        assert_eq!(
            probe(&action(9090, None), None, SECOND).await,
            Err("the pod has no IP yet".to_string())
        );
    }

    #[test]
    fn frames_and_messages_round_trip() {
        let req = HealthCheckRequest { service: "svc".into() }.encode_to_vec();
        assert_eq!(req, b"\x0a\x03svc", "field 1, length-delimited");
        assert_eq!(
            HealthCheckRequest::default().encode_to_vec(),
            b"",
            "the empty service is omitted"
        );
        let framed = frame(&req);
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(unframe(&framed), Ok(&req[..]));
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err(), "compressed");
        assert!(unframe(&[0, 0, 0, 0, 9, 1]).is_err(), "short");
        assert!(unframe(&[]).is_err());
        // Unknown fields are skipped.
        let resp = HealthCheckResponse::decode(&b"\x10\x07\x08\x02"[..]).expect("decode");
        assert_eq!(resp.status, 2);
        assert_eq!(status_name(resp.status), "NOT_SERVING");
        assert_eq!(status_name(9), "9");
        assert_eq!(code_name(5), "NotFound");
        assert_eq!(code_name(99), "Code(99)");
    }
}
