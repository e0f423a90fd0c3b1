//! Pulling images from OCI/Docker registries (oci-client) into the image store: mirrors and
//! per-host settings from `registries.yaml`, credentials from docker configs, multi-arch
//! index resolution to the host platform, every blob verified against its digest.

use std::io::Write as _;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

use crate::content::{ContentError, Digest};
use crate::credentials::{Credential, DockerCredentials};
use crate::io_error::IoError;
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::registries::{Endpoint, RegistriesConfig, Scheme};
use crate::store::{self, ImageRecord, ImageStore, ManifestDoc, StoreError};

/// Layers downloaded at once, as containerd's default.
const CONCURRENT_DOWNLOADS: usize = 3;

/// Manifest media types asked for.
const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// What one endpoint answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointError {
    /// The endpoint's URL.
    pub endpoint: String,
    /// The registry's error code (`MANIFEST_UNKNOWN`, `UNAUTHORIZED`, `NAME_UNKNOWN` …) or
    /// our name for a transport failure (`CONNECTION_FAILED`, `TIMEOUT`, `HTTP 500`).
    pub reason: String,
    /// The detail.
    pub message: String,
}

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.endpoint, self.reason, self.message)
    }
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// No endpoint served the manifest.
    #[error("pulling {reference:?}: {}", attempts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Registry {
        /// The image.
        reference: String,
        /// Each endpoint tried, in order.
        attempts: Vec<EndpointError>,
    },
    /// The index has no manifest for this platform.
    #[error("pulling {reference:?}: no manifest for platform {platform} (the index has: {available})")]
    NoMatchingPlatform {
        /// The image.
        reference: String,
        /// The platform wanted.
        platform: String,
        /// The platforms offered.
        available: String,
    },
    /// The registry sent a manifest we cannot use.
    #[error("pulling {reference:?} from {endpoint}: {message}")]
    BadManifest {
        /// The image.
        reference: String,
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// A blob download failed.
    #[error("pulling {reference:?}: blob {digest}: {error}")]
    Blob {
        /// The image.
        reference: String,
        /// The blob.
        digest: Digest,
        /// The registry's answer.
        error: EndpointError,
    },
    /// Downloaded content did not verify.
    #[error("pulling {reference:?}: {source}")]
    Content {
        /// The image.
        reference: String,
        #[source]
        source: ContentError,
    },
    /// A `ca_file` of `registries.yaml` could not be read.
    #[error("reading ca_file {path} for {host}: {source}")]
    CaFile {
        /// The endpoint host.
        host: String,
        /// The file.
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Storing the image failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PullError {
    /// A short reason for `ErrImagePull` events: the registry's error code when there is one.
    pub fn reason(&self) -> &str {
        match self {
            Self::Registry { attempts, .. } => attempts.last().map_or("ERROR", |a| a.reason.as_str()),
            Self::NoMatchingPlatform { .. } => "NO_MATCHING_PLATFORM",
            Self::BadManifest { .. } => "MANIFEST_INVALID",
            Self::Blob { error, .. } => &error.reason,
            Self::Content { .. } => "DIGEST_INVALID",
            Self::CaFile { .. } => "CONFIG_INVALID",
            Self::Store(_) => "STORE_ERROR",
        }
    }
}

/// Progress of a pull, for progress bars. Methods may be called from several tasks at once.
pub trait PullProgress: Send + Sync {
    /// The manifest is known: these blobs make the image; `present` ones need no download.
    fn resolved(&self, _image: &str, _blobs: &[(Digest, u64, bool)]) {}
    /// `bytes` more of `blob` arrived.
    fn downloaded(&self, _blob: &Digest, _bytes: u64) {}
    /// `blob` is stored and verified.
    fn finished(&self, _blob: &Digest) {}
}

/// Reports nothing.
pub struct NoProgress;
impl PullProgress for NoProgress {}

/// Pulls images into an [`ImageStore`].
pub struct Puller {
    store: ImageStore,
    registries: RegistriesConfig,
    platform: Platform,
}

impl Puller {
    /// A puller for this host's platform.
    pub fn new(store: ImageStore, registries: RegistriesConfig) -> Self {
        Self {
            store,
            registries,
            platform: Platform::host(),
        }
    }

    /// Pulls for another platform (tests, cross-platform tooling).
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Pulls `reference` (mirrors first, then the registry itself) and records it under its
    /// normalised name. Blobs already present are not downloaded again.
    pub async fn pull(
        &self,
        reference: &ImageRef,
        credentials: &DockerCredentials,
        progress: &dyn PullProgress,
    ) -> Result<ImageRecord, PullError> {
        let store = self.store.clone();
        let _lock = tokio::task::spawn_blocking(move || store.lock_shared())
            .await
            .map_err(|e| StoreError::Io(IoError::new("locking", self.store.root(), std::io::Error::other(e))))??;
        let name = reference.to_string();
        let mut attempts = Vec::new();
        for ep in self.registries.endpoints(reference.registry(), reference.repository()) {
            let session = self.session(reference, &ep, credentials)?;
            tracing::debug!(image = %name, endpoint = %ep.url(), "resolving");
            match session
                .client
                .pull_manifest_raw(&session.oci_ref, &session.auth, ACCEPT)
                .await
            {
                Ok((bytes, digest)) => {
                    let rec = self.finish(&name, &session, &bytes, &digest, progress).await?;
                    tracing::debug!(image = %name, endpoint = %ep.url(), id = %rec.config, "pulled");
                    return Ok(rec);
                }
                Err(e) => {
                    let err = classify(&ep.url(), &e);
                    tracing::debug!(image = %name, endpoint = %ep.url(), reason = %err.reason, error = %err.message, "endpoint failed");
                    attempts.push(err);
                }
            }
        }
        Err(PullError::Registry {
            reference: name,
            attempts,
        })
    }

    fn session(
        &self,
        reference: &ImageRef,
        ep: &Endpoint,
        credentials: &DockerCredentials,
    ) -> Result<Session, PullError> {
        let host_cfg = self.registries.config_for(&ep.host);
        let mut cfg = ClientConfig {
            protocol: match ep.scheme {
                Scheme::Http => ClientProtocol::Http,
                Scheme::Https => ClientProtocol::Https,
            },
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("skiff/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        if let Some(tls) = host_cfg.and_then(|c| c.tls.as_ref()) {
            cfg.accept_invalid_certificates = tls.insecure_skip_verify;
            if let Some(ca) = &tls.ca_file {
                let data = std::fs::read(ca).map_err(|source| PullError::CaFile {
                    host: ep.host.clone(),
                    path: ca.clone(),
                    source,
                })?;
                cfg.extra_root_certificates.push(Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                });
            }
        }
        ensure_crypto_provider();
        let client = oci_client::Client::new(cfg);
        let mut oci_ref = if ep.mirror_of.is_some() {
            let mut r = reference.with_repository(&ep.repository);
            r.set_mirror_registry(format!("{}{}", ep.host, ep.path));
            r
        } else {
            reference.as_oci().clone()
        };
        if ep.mirror_of.is_none() && !ep.path.is_empty() {
            oci_ref.set_mirror_registry(format!("{}{}", ep.host, ep.path));
        }
        // Credentials: the endpoint's registries.yaml entry, else a docker config entry for the
        // endpoint host; the image's own registry's entry only goes to that registry.
        let cred = host_cfg
            .and_then(|c| c.auth.as_ref())
            .and_then(|a| {
                if let Some(t) = a.identitytoken.clone().filter(|t| !t.is_empty()) {
                    return Some(Credential::Token(t));
                }
                if let (Some(u), Some(p)) = (&a.username, &a.password) {
                    return Some(Credential::Basic {
                        username: u.clone(),
                        password: p.clone(),
                    });
                }
                a.auth.as_deref().and_then(Credential::from_auth_field)
            })
            .or_else(|| credentials.for_host(&ep.host).cloned())
            .or_else(|| {
                ep.mirror_of
                    .is_none()
                    .then(|| credentials.for_host(reference.registry()).cloned())
                    .flatten()
            });
        let auth = match cred {
            Some(Credential::Basic { username, password }) => RegistryAuth::Basic(username, password),
            Some(Credential::Token(t)) => RegistryAuth::Bearer(t),
            None => RegistryAuth::Anonymous,
        };
        Ok(Session {
            client,
            oci_ref,
            auth,
            endpoint: ep.url(),
        })
    }

    async fn finish(
        &self,
        name: &str,
        s: &Session,
        bytes: &[u8],
        digest: &str,
        progress: &dyn PullProgress,
    ) -> Result<ImageRecord, PullError> {
        let content = self.store.content();
        let bad = |message: String| PullError::BadManifest {
            reference: name.to_string(),
            endpoint: s.endpoint.clone(),
            message,
        };
        let cerr = |source| PullError::Content {
            reference: name.to_string(),
            source,
        };
        let top = Digest::parse(digest).map_err(|e| bad(e.to_string()))?;
        content.put(bytes, Some(&top)).map_err(cerr)?;
        let (manifest_digest, manifest) = match store::parse_manifest(bytes).map_err(bad)? {
            ManifestDoc::Image(m) => (top.clone(), m),
            ManifestDoc::Index(idx) => {
                let Some(entry) = self.platform.select(&idx) else {
                    let available = idx
                        .manifests()
                        .iter()
                        .filter_map(|d| d.platform().as_ref())
                        .map(|p| {
                            let mut s = format!("{}/{}", p.os(), p.architecture());
                            if let Some(v) = p.variant() {
                                s = format!("{s}/{v}");
                            }
                            s
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(PullError::NoMatchingPlatform {
                        reference: name.to_string(),
                        platform: self.platform.to_string(),
                        available,
                    });
                };
                let child = Digest::parse(entry.digest().as_ref()).map_err(|e| bad(e.to_string()))?;
                let child_ref = s.oci_ref.clone_with_digest(child.to_string());
                let (child_bytes, _) = s
                    .client
                    .pull_manifest_raw(&child_ref, &s.auth, ACCEPT)
                    .await
                    .map_err(|e| PullError::Registry {
                        reference: name.to_string(),
                        attempts: vec![classify(&s.endpoint, &e)],
                    })?;
                content.put(&child_bytes, Some(&child)).map_err(cerr)?;
                match store::parse_manifest(&child_bytes).map_err(bad)? {
                    ManifestDoc::Image(m) => (child, m),
                    ManifestDoc::Index(_) => return Err(bad("an index inside an index is not supported".into())),
                }
            }
        };
        let mut blobs = vec![manifest.config.clone()];
        blobs.extend(manifest.layers.iter().cloned());
        let listing: Vec<_> = blobs
            .iter()
            .map(|b| (b.digest.clone(), b.size, content.has(&b.digest)))
            .collect();
        progress.resolved(name, &listing);
        // The fetches are made before anything is awaited (no closure over borrowed
        // descriptors inside the future), so the pull is a `Send` future callers can spawn.
        let missing: Vec<_> = blobs.into_iter().filter(|b| !content.has(&b.digest)).collect();
        let fetches: Vec<_> = missing
            .iter()
            .map(|b| self.fetch_blob(name, s, &b.digest, b.size, progress))
            .collect();
        futures::stream::iter(fetches)
            .buffer_unordered(CONCURRENT_DOWNLOADS)
            .try_collect::<Vec<()>>()
            .await?;
        let repo_digest = top;
        let mut rec = store::record_from(&self.store, name, &repo_digest, &manifest_digest, &manifest)?;
        if let Some(old) = self.store.get_name(name)? {
            if old.manifest == rec.manifest {
                rec.created = old.created;
            }
        }
        self.store.put_record(&rec)?;
        Ok(rec)
    }

    async fn fetch_blob(
        &self,
        name: &str,
        s: &Session,
        digest: &Digest,
        size: u64,
        progress: &dyn PullProgress,
    ) -> Result<(), PullError> {
        let blob_err = |e: &OciDistributionError| PullError::Blob {
            reference: name.to_string(),
            digest: digest.clone(),
            error: classify(&s.endpoint, e),
        };
        let mut stream = s
            .client
            .pull_blob_stream(&s.oci_ref, &digest.as_str())
            .await
            .map_err(|e| blob_err(&e))?;
        let mut w = self.store.content().writer().map_err(|source| PullError::Content {
            reference: name.to_string(),
            source,
        })?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| PullError::Blob {
                reference: name.to_string(),
                digest: digest.clone(),
                error: EndpointError {
                    endpoint: s.endpoint.clone(),
                    reason: "CONNECTION_FAILED".into(),
                    message: error_chain(&e),
                },
            })?;
            w.write_all(&chunk).map_err(|e| PullError::Content {
                reference: name.to_string(),
                source: ContentError::Io(IoError::new("writing blob", self.store.content().blob_path(digest), e)),
            })?;
            progress.downloaded(digest, chunk.len() as u64);
        }
        w.commit(Some(digest), Some(size))
            .map_err(|source| PullError::Content {
                reference: name.to_string(),
                source,
            })?;
        progress.finished(digest);
        Ok(())
    }
}

struct Session {
    client: oci_client::Client,
    oci_ref: oci_client::Reference,
    auth: RegistryAuth,
    endpoint: String,
}

/// reqwest is built without a default crypto provider; use the workspace's (ring) unless the
/// process installed one.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: one provider is in place either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The registry's reason and message for an oci-client error.
fn classify(endpoint: &str, e: &OciDistributionError) -> EndpointError {
    let (reason, message) = match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            let reason = envelope
                .errors
                .first()
                .and_then(|x| serde_json::to_value(&x.code).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "REGISTRY_ERROR".into());
            let message = envelope
                .errors
                .iter()
                .map(|x| x.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            (reason, message)
        }
        OciDistributionError::UnauthorizedError { url } => (
            "UNAUTHORIZED".into(),
            format!("authentication required or credentials rejected ({url})"),
        ),
        OciDistributionError::AuthenticationFailure(m) => ("UNAUTHORIZED".into(), m.trim().to_string()),
        OciDistributionError::ServerError { code, message, .. } => (format!("HTTP {code}"), message.trim().to_string()),
        OciDistributionError::RequestError(re) => {
            let reason = if re.is_connect() {
                "CONNECTION_FAILED"
            } else if re.is_timeout() {
                "TIMEOUT"
            } else {
                "REQUEST_FAILED"
            };
            (reason.into(), error_chain(re))
        }
        OciDistributionError::DigestError(d) => ("DIGEST_INVALID".into(), d.to_string()),
        other => ("ERROR".into(), error_chain(other)),
    };
    EndpointError {
        endpoint: endpoint.to_string(),
        reason,
        message,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
