//! The HTTPS server: TLS (HTTP/2 and HTTP/1.1 with upgrades on one port), authentication by
//! client certificate, the shared bearer token or a service-account token, the shared state every handler uses, the in-server
//! controllers, and graceful shutdown (stop accepting, end watches, drain, then force).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::header;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use skiff_store::Store;

use crate::cache::Cache;
use crate::error::ApiError;
use crate::handlers::{self, MAX_BODY};
use crate::objects::Objects;
use crate::pki::Pki;
use crate::types::Types;

/// Configuration of the API server.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// A shared secret accepted as a bearer token (agents join with it).
    pub token: Option<String>,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// How many recent events the watch cache keeps for resuming watches.
    pub watch_cache_events: usize,
    /// A watch from before the cache's window resumes from the store's history when it missed
    /// at most this many revisions; one further behind gets 410 Gone and re-lists, as upstream.
    /// Replaying more costs more than a list: at 50,000 pods, watchers that fell behind under
    /// load spent half a minute each reading 100,000 revisions back.
    pub watch_replay_max: u64,
    /// Store history older than this is compacted away (as the Kubernetes API server does
    /// every 5 minutes).
    pub compaction_interval: Duration,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            bind_address: IpAddr::from([127, 0, 0, 1]),
            port: 6443,
            token: None,
            tls_sans: Vec::new(),
            watch_cache_events: 10_000,
            watch_replay_max: 10_000,
            compaction_interval: Duration::from_secs(300),
        }
    }
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

/// State shared by all requests.
pub struct Shared {
    pub objects: Objects,
    pub types: Arc<Types>,
    pub ready: AtomicBool,
    pub shutdown: watch::Receiver<bool>,
    pub token: Option<String>,
    /// Issues and checks service-account tokens.
    pub tokens: crate::service_account_token::ServiceAccountTokens,
    /// Node agents connected in-process, by node name (for `pods/log` and the like).
    pub nodes: std::sync::RwLock<std::collections::HashMap<String, Arc<dyn skiff_client::streams::NodeStreams>>>,
    /// See [`Config::watch_replay_max`].
    pub watch_replay_max: u64,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub pki: Pki,
    pub shared: Arc<Shared>,
    app: axum::Router,
    shutdown_tx: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Server {
    /// The admin kubeconfig for this server.
    pub fn kubeconfig(&self) -> String {
        let host = match self.addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        self.pki.kubeconfig(&format!("https://{host}:{}", self.addr.port()))
    }

    /// A transport for API clients in this process (the controllers, the scheduler, simulated
    /// nodes): requests go through the same handlers, authentication and admission as any
    /// other, as `identity`, but skip TLS, TCP and HTTP framing. Give it to
    /// Connect node `name`'s agent (running in this process): the server sends it the pods'
    /// streaming requests (`kubectl logs`).
    pub fn register_node(&self, name: &str, streams: Arc<dyn skiff_client::streams::NodeStreams>) {
        self.shared
            .nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), streams);
    }

    /// `kube::Client::new`. See ADR 0004.
    pub fn in_process<B>(
        &self,
        identity: Identity,
    ) -> impl tower::Service<
        http::Request<B>,
        Response = Response,
        Error = std::convert::Infallible,
        Future = impl std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send + 'static,
    > + Clone
           + Send
           + 'static
    where
        B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let app = self.app.clone();
        tower::service_fn(move |mut req: http::Request<B>| {
            req.extensions_mut().insert(identity.clone());
            app.clone().oneshot(req.map(Body::new))
        })
    }

    /// Stop accepting, end watches, wait up to `deadline` for requests in flight, then stop.
    pub async fn shutdown(self, deadline: Duration) {
        let _ = self.shutdown_tx.send(true);
        if tokio::time::timeout(deadline, self.task).await.is_err() {
            tracing::warn!("connections still open after the shutdown deadline; closing them");
        }
    }
}

fn peer_identity(certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Option<Identity> {
    let cert = certs?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(Identity { user, groups })
}

fn tls_config(pki: &Pki) -> Result<rustls::ServerConfig> {
    let certs = rustls_pemfile::certs(&mut pki.serving_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("serving certificate")?;
    let key = rustls_pemfile::private_key(&mut pki.serving_key_pem.as_bytes())
        .context("serving key")?
        .context("no serving key")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(c.context("CA certificate")?).context("CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("client certificate verifier")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("serving certificate")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

fn public_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

async fn entry(State(shared): State<Arc<Shared>>, mut req: Request) -> Response {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    if req.extensions().get::<Identity>().is_none() {
        if let Some(b) = &bearer {
            if shared.token.as_deref().is_some_and(|t| !t.is_empty() && b == t) {
                req.extensions_mut().insert(Identity {
                    user: "system:skiff:token".into(),
                    groups: vec!["system:masters".into()],
                });
            } else if crate::jwt::looks_like_jwt(b) {
                let now = chrono::Utc::now().timestamp();
                match shared.tokens.authenticate(&shared.objects.cache, &shared.types, b, now) {
                    Ok(id) => {
                        req.extensions_mut().insert(id);
                    }
                    Err(e) => tracing::debug!(error = %e, "a bearer token was refused"),
                }
            }
        }
    }
    if req.extensions().get::<Identity>().is_none() && !public_path(req.uri().path()) {
        return ApiError::unauthorized().into_response();
    }
    if req.uri().path() == skiff_client::tunnel::TUNNEL_PATH {
        return crate::remote::agent_tunnel(shared, req).await;
    }
    if crate::remote::is_stream_path(req.uri().path()) {
        return crate::remote::serve(shared, req).await;
    }
    tracing::trace!(method = %req.method(), path = %req.uri().path(), "request");
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let who = parts.extensions.get::<Identity>().cloned();
    handlers::handle(shared, parts.method, parts.uri, parts.headers, bytes, who).await
}

/// Every interval, compact the store to the revision it had one interval ago: history is kept
/// for at least one interval, so watches and paged lists younger than that can resume.
async fn compactor(shared: Arc<Shared>, every: Duration) {
    let mut shutdown = shared.shutdown.clone();
    let mut previous: Option<skiff_store::Revision> = None;
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let store = &shared.objects.store;
        if let Some(rev) = previous {
            match store.compacted_revision().await {
                Ok(done) if rev > done => {
                    if let Err(e) = store.compact(rev).await {
                        tracing::warn!(revision = rev, error = %e, "compaction failed");
                    } else {
                        tracing::debug!(revision = rev, "compacted store history");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the compacted revision"),
            }
        }
        previous = store.current_revision().await.ok();
    }
}

/// Read a request body of at most `MAX_BODY` bytes. A larger one is read to its end (up to a
/// bound) and discarded before the 413 answer, so the client sees the answer rather than a
/// connection reset while it is still sending.
async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => return Err(ApiError::bad_request(format!("reading the request body: {e}"))),
            Ok(None) => break,
            Err(_) => return Err(ApiError::timeout("reading the request body timed out")),
        };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large());
    }
    Ok(buf.freeze())
}

/// Open the datastore named by a k3s-style `--datastore-endpoint`: empty for the embedded
/// SQLite store in `<data_dir>/db/state.db`, or `sqlite:///path`. etcd URLs are refused until
/// the etcd backend exists.
pub fn open_datastore(endpoint: &str, data_dir: &std::path::Path) -> Result<Arc<dyn Store>> {
    let path = match endpoint {
        "" => data_dir.join("db").join("state.db"),
        s if s.starts_with("sqlite://") => PathBuf::from(s.trim_start_matches("sqlite://")),
        s if s.starts_with("http://") || s.starts_with("https://") => {
            anyhow::bail!("the etcd datastore ({s}) is not available in this build yet; use the embedded SQLite store")
        }
        s => anyhow::bail!("unsupported --datastore-endpoint {s:?}: use sqlite:///path or an etcd http(s):// URL"),
    };
    Ok(Arc::new(skiff_store::SqliteStore::open(
        skiff_store::SqliteOptions::new(path),
    )?))
}

/// Start the server on `config`'s address with `store` as its storage.
pub async fn start(config: Config, store: Arc<dyn Store>) -> Result<Server> {
    let mut sans = config.tls_sans.clone();
    if !config.bind_address.is_unspecified() {
        sans.push(config.bind_address.to_string());
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() && skiff_api::validation::is_dns1123_subdomain(h) {
            sans.push(h.to_string());
        }
    }
    let pki = Pki::load_or_create(&config.data_dir.join("tls"), &sans)?;
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&pki)?));
    let cache = Cache::start(store.clone(), "/registry/", config.watch_cache_events)
        .await
        .context("loading the watch cache")?;
    let types = Arc::new(Types::new());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        objects: Objects {
            store,
            cache,
            types: types.clone(),
        },
        types,
        ready: AtomicBool::new(false),
        shutdown: shutdown_rx.clone(),
        token: config.token.clone(),
        tokens: crate::service_account_token::ServiceAccountTokens::new(&pki.service_account_key_pem)
            .with_context(|| format!("the service-account key in {}", pki.dir.display()))?,
        nodes: Default::default(),
        watch_replay_max: config.watch_replay_max,
    });
    crate::crds::refresh(&shared);
    crate::namespaces::ensure_system_namespaces(&shared)
        .await
        .map_err(|e| anyhow::anyhow!("creating system namespaces: {e}"))?;
    tokio::spawn(crate::namespaces::run(shared.clone()));
    tokio::spawn(crate::crds::run(shared.clone()));
    tokio::spawn(compactor(shared.clone(), config.compaction_interval));

    let app = axum::Router::new().fallback(entry).with_state(shared.clone());
    let in_process_app = app.clone();
    let listener = TcpListener::bind((config.bind_address, config.port))
        .await
        .with_context(|| format!("binding {}:{}", config.bind_address, config.port))?;
    let addr = listener.local_addr()?;
    shared.ready.store(true, Ordering::Release);
    let mut shutdown = shutdown_rx;
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => {
                    let Ok((tcp, peer)) = accepted else { continue };
                    let _ = tcp.set_nodelay(true);
                    let tls = tls.clone();
                    let app = app.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                        let identity = peer_identity(stream.get_ref().1.peer_certificates());
                        let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                            if let Some(id) = &identity {
                                req.extensions_mut().insert(id.clone());
                            }
                            app.clone().oneshot(req.map(Body::new))
                        });
                        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                        if let Err(e) = watcher.watch(conn.into_owned()).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
        drop(listener);
        graceful.shutdown().await;
    });
    Ok(Server {
        addr,
        pki,
        shared,
        app: in_process_app,
        shutdown_tx,
        task,
    })
}
