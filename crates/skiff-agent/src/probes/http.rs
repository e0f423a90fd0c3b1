//! httpGet probes (and hooks) as the kubelet sends them: one HTTP/1.1 `GET` per probe over a
//! new connection (`Connection: close`), plain or TLS, with `kube-probe/<version>` as the user
//! agent and `Accept: */*` unless `httpHeaders` set them, a `Host` header from `httpHeaders`
//! over the URL's. Success is a status in 200..400; a redirect is not followed and counts as a
//! success (the kubelet follows redirects to the same host and reports other ones as a
//! success with a warning). One code path serves both schemes: the request goes over any
//! `AsyncRead + AsyncWrite` stream.
//!
//! HTTPS does not verify the server's certificate, exactly as the kubelet does not
//! (`InsecureSkipVerify`): a probe checks that the container answers, and containers serve
//! self-signed or cluster-internal certificates the node has no reason to trust. The
//! handshake's signature is still checked against the certificate's key.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{port_of, Host, KUBE_VERSION};

/// The longest status line read before the response counts as malformed.
const MAX_STATUS_LINE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

/// Run `h` against the container `c` of a pod at `pod_ip`, bounded by `timeout`.
pub(super) async fn probe(
    h: &HTTPGetAction,
    c: &Container,
    pod_ip: Option<IpAddr>,
    timeout: Duration,
) -> Result<(), String> {
    let scheme = match h.scheme.as_deref().unwrap_or("HTTP") {
        s if s.is_empty() || s.eq_ignore_ascii_case("HTTP") => Scheme::Http,
        s if s.eq_ignore_ascii_case("HTTPS") => Scheme::Https,
        s => return Err(format!("unsupported scheme {s:?}: must be HTTP or HTTPS")),
    };
    let host = Host::of(h.host.as_deref(), pod_ip)?;
    let port = port_of(c, &h.port)?;
    let path = match h.path.as_deref().unwrap_or_default() {
        "" => "/".to_string(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    let headers: Vec<(String, String)> = h
        .http_headers
        .iter()
        .flatten()
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect();
    let authority = host.join(port);
    let url = format!(
        "{}://{authority}{path}",
        if scheme == Scheme::Https { "https" } else { "http" }
    );
    let request = request(&path, &authority, &headers)?;
    let work = async {
        let tcp = host.connect(port).await?;
        let status = match scheme {
            Scheme::Http => exchange(tcp, &request).await,
            Scheme::Https => {
                // SNI is the probe's host when it names one; an address is never sent as SNI
                // (RFC 6066), as Go's client does not either.
                let server_name = match &host {
                    Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
                    Host::Name(n) => ServerName::try_from(n.clone())
                        .map_err(|_| format!("probe host {n:?} is not a valid DNS name"))?,
                };
                let connector = tokio_rustls::TlsConnector::from(TLS_CONFIG.clone());
                let tls = connector.connect(server_name, tcp).await.map_err(|e| {
                    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                        // A plain HTTP answer is not a TLS record; Go's words for it.
                        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
                            "http: server gave HTTP response to HTTPS client".to_string()
                        }
                        _ => format!("tls: {}", go_error_tls(&e)),
                    }
                })?;
                exchange(tls, &request).await
            }
        };
        status.map_err(|e| go_error_tls(&e))
    };
    let code = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => return Err(format!("Get \"{url}\": {e}")),
        Err(_) => {
            return Err(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        }
    };
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// The request's bytes. Header names and values are checked (a line break in one would
/// smuggle another request to the container).
fn request(path: &str, authority: &str, headers: &[(String, String)]) -> Result<Vec<u8>, String> {
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("invalid probe path {path:?}"));
    }
    for (name, value) in headers {
        http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid HTTP header name {name:?}"))?;
        http::HeaderValue::from_str(value).map_err(|_| format!("invalid value of HTTP header {name}: {value:?}"))?;
    }
    let given = |h: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(h)).map(|(_, v)| v);
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\n",
        given("host").map_or(authority, String::as_str)
    );
    if given("user-agent").is_none() {
        req.push_str(&format!("User-Agent: kube-probe/{KUBE_VERSION}\r\n"));
    }
    if given("accept").is_none() {
        req.push_str("Accept: */*\r\n");
    }
    for (name, value) in headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    Ok(req.into_bytes())
}

/// Sends `request` over `stream` and reads the response's status code.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> io::Result<u16> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let line = loop {
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            break String::from_utf8_lossy(&buf[..end]).trim_end().to_string();
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err(malformed(&buf));
        }
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify after a complete line is fine; one
            // that closes before is an EOF, as Go reports it.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(if buf.is_empty() {
                io::Error::new(io::ErrorKind::UnexpectedEof, "EOF")
            } else {
                malformed(&buf)
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && (100..1000).contains(&code) => Ok(code),
        _ => Err(malformed(line.as_bytes())),
    }
}

fn malformed(got: &[u8]) -> io::Error {
    let shown: String = String::from_utf8_lossy(got).chars().take(100).collect();
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("net/http: HTTP/1.x transport connection broken: malformed HTTP response {shown:?}"),
    )
}

/// An I/O error of a plain or TLS stream, worded like Go's.
fn go_error_tls(e: &io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => tls.to_string(),
        None if e.kind() == io::ErrorKind::UnexpectedEof => "EOF".to_string(),
        None => super::go_error(e),
    }
}

/// The client configuration of every HTTPS probe: the ring provider, TLS 1.2 and 1.3, no
/// client certificate, and [`AcceptAnyServerCert`].
static TLS_CONFIG: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)))
        .with_no_client_auth();
    Arc::new(cfg)
});

/// Accepts any server certificate, for kubelet parity: the kubelet probes HTTPS with
/// `InsecureSkipVerify` (see the module docs). Only probes use it; it never leaves this module.
/// Handshake signatures are verified, so the server must hold the certificate's key.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Mutex;
    use tokio::net::TcpListener;

    /// What the test server saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        sni: Option<String>,
        head: String,
    }

    /// A server on 127.0.0.1: `/ok` answers 200, `/fail` 500, `/moved` 302 to another host,
    /// `/hang` never answers. Over TLS with a self-signed certificate for `localhost` when
    /// `tls`.
    struct TestServer {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl TestServer {
        async fn start(tls: bool) -> Self {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let seen = Arc::new(Mutex::new(Vec::new()));
            let acceptor = tls.then(|| {
                let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
                let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.signing_key.serialize_der());
                let cfg =
                    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_safe_default_protocol_versions()
                        .expect("versions")
                        .with_no_client_auth()
                        .with_single_cert(vec![key.cert.der().clone()], der.into())
                        .expect("server config");
                tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
            });
            let log = seen.clone();
            tokio::spawn(async move {
                loop {
                    let (tcp, _) = listener.accept().await.expect("accept");
                    let (acceptor, log) = (acceptor.clone(), log.clone());
                    tokio::spawn(async move {
                        match acceptor {
                            Some(a) => {
                                let Ok(tls) = a.accept(tcp).await else { return };
                                let sni = tls.get_ref().1.server_name().map(str::to_string);
                                serve(tls, sni, log).await;
                            }
                            None => serve(tcp, None, log).await,
                        }
                    });
                }
            });
            Self { addr, seen }
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().expect("lock").clone()
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, sni: Option<String>, log: Arc<Mutex<Vec<Seen>>>) {
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&b[..n]),
            }
            // Not HTTP (a TLS client hello on the plain server): what HTTP servers answer.
            if !head[0].is_ascii_uppercase() {
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let path = head.split(' ').nth(1).unwrap_or_default().to_string();
        log.lock().expect("lock").push(Seen { sni, head });
        let response: &[u8] = match path.as_str() {
            "/ok" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "/fail" => b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
            "/moved" => b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere.invalid/\r\nContent-Length: 0\r\n\r\n",
            "/garbage" => b"SSH-2.0-OpenSSH_9.6\r\n",
            _ => return futures::future::pending().await,
        };
        let _ = s.write_all(response).await;
        let _ = s.shutdown().await;
    }

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "ports": [{"name": "https", "containerPort": 8443}]}))
            .expect("container")
    }

    fn action(scheme: &str, host: Option<&str>, port: u16, path: &str, headers: &[(&str, &str)]) -> HTTPGetAction {
        serde_json::from_value(serde_json::json!({
            "scheme": scheme, "host": host, "port": port, "path": path,
            "httpHeaders": headers.iter().map(|(n, v)| serde_json::json!({"name": n, "value": v})).collect::<Vec<_>>(),
        }))
        .expect("httpGet")
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn https_probes_accept_a_self_signed_certificate_and_judge_the_status() {
        let server = TestServer::start(true).await;
        let port = server.addr.port();
        let ok = probe(&action("HTTPS", None, port, "/ok", &[]), &container(), LOCAL, SECOND).await;
        assert_eq!(ok, Ok(()));
        let moved = probe(&action("HTTPS", None, port, "/moved", &[]), &container(), LOCAL, SECOND).await;
        assert_eq!(moved, Ok(()), "a redirect is not followed and counts as a success");
        let fail = probe(&action("HTTPS", None, port, "/fail", &[]), &container(), LOCAL, SECOND).await;
        assert_eq!(fail, Err("HTTP probe failed with statuscode: 500".to_string()));
        let seen = server.seen();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].sni, None, "an address is not sent as SNI");
        let head = &seen[0].head;
        assert!(head.starts_with("GET /ok HTTP/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")), "{head}");
        assert!(head.contains("\r\nUser-Agent: kube-probe/1.33\r\n"), "{head}");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    }

    #[tokio::test]
    async fn https_probes_send_the_host_as_sni_and_the_headers_given() {
        let server = TestServer::start(true).await;
        let port = server.addr.port();
        let h = action(
            "HTTPS",
            Some("localhost"),
            port,
            "ok",
            &[("Host", "app.example"), ("X-Probe", "yes"), ("User-Agent", "mine")],
        );
        assert_eq!(probe(&h, &container(), None, SECOND).await, Ok(()));
        let seen = server.seen();
        assert_eq!(seen[0].sni.as_deref(), Some("localhost"));
        let head = &seen[0].head;
        assert!(head.starts_with("GET /ok HTTP/1.1\r\nHost: app.example\r\n"), "{head}");
        assert!(head.contains("\r\nX-Probe: yes\r\n"), "{head}");
        assert!(head.contains("\r\nUser-Agent: mine\r\n"), "{head}");
        assert!(
            !head.contains("kube-probe"),
            "the given User-Agent replaces the default: {head}"
        );
        assert_eq!(head.matches("Host:").count(), 1, "{head}");
    }

    #[tokio::test]
    async fn an_https_probe_that_gets_no_answer_times_out() {
        let server = TestServer::start(true).await;
        let port = server.addr.port();
        let started = std::time::Instant::now();
        let r = probe(&action("HTTPS", None, port, "/hang", &[]), &container(), LOCAL, SECOND).await;
        assert_eq!(
            r,
            Err(format!(
                "Get \"https://127.0.0.1:{port}/hang\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        );
        assert!(started.elapsed() >= SECOND);
    }

    #[tokio::test]
    async fn plain_http_takes_the_same_path_and_refusals_read_like_the_kubelets() {
        let server = TestServer::start(false).await;
        let port = server.addr.port();
        assert_eq!(
            probe(&action("HTTP", None, port, "/ok", &[]), &container(), LOCAL, SECOND).await,
            Ok(())
        );
        assert_eq!(
            probe(&action("HTTP", None, port, "/fail", &[]), &container(), LOCAL, SECOND).await,
            Err("HTTP probe failed with statuscode: 500".to_string())
        );
        let r = probe(
            &action("HTTP", None, port, "/garbage", &[]),
            &container(),
            LOCAL,
            SECOND,
        )
        .await;
        assert!(
            r.as_ref()
                .is_err_and(|e| e.contains("malformed HTTP response \"SSH-2.0-OpenSSH_9.6\"")),
            "{r:?}"
        );
        // An HTTPS probe of a plain HTTP server fails in the handshake.
        let r = probe(&action("HTTPS", None, port, "/ok", &[]), &container(), LOCAL, SECOND).await;
        assert_eq!(
            r,
            Err(format!(
                "Get \"https://127.0.0.1:{port}/ok\": http: server gave HTTP response to HTTPS client"
            ))
        );
        // Nothing listens on a port just freed.
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let port = free.local_addr().expect("addr").port();
        drop(free);
        assert_eq!(
            probe(&action("HTTPS", None, port, "/", &[]), &container(), LOCAL, SECOND).await,
            Err(format!(
                "Get \"https://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }

    #[tokio::test]
    async fn bad_probe_settings_are_clear_errors() {
        let c = container();
        let r = probe(&action("FTP", None, 1, "/", &[]), &c, LOCAL, SECOND).await;
        assert_eq!(r, Err("unsupported scheme \"FTP\": must be HTTP or HTTPS".to_string()));
        let r = probe(
            &action("HTTPS", None, 8443, "/", &[("X-Evil", "a\r\nb")]),
            &c,
            LOCAL,
            SECOND,
        )
        .await;
        assert_eq!(r, Err("invalid value of HTTP header X-Evil: \"a\\r\\nb\"".to_string()));
        let r = probe(&action("HTTPS", None, 8443, "/", &[]), &c, None, SECOND).await;
        assert_eq!(r, Err("the pod has no IP yet".to_string()));
    }
}
