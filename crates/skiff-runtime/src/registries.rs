//! k3s-compatible `registries.yaml` (mirrors, rewrites, per-host auth and TLS) and the
//! endpoints a pull tries, in order.
//!
//! As in k3s/containerd: a registry's mirror endpoints are tried in the order given, then the
//! registry's default endpoint, always last. Rewrites apply to mirrors only. `"*"` names the
//! mirrors of every registry without its own entry. `configs` are keyed by the host (and port)
//! an endpoint talks to. `http://` endpoints are plain HTTP; a registry on a loopback address
//! without `tls` settings is reached over plain HTTP too (containerd does the same for
//! localhost).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The parsed file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct RegistriesConfig {
    /// Registry name (`docker.io`, `registry.local:5000`, `*`) → its mirrors.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Endpoint host (`host` or `host:port`) → how to talk to it.
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
}

/// A registry's mirrors.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Mirror {
    /// Endpoint URLs, tried in order (`https://host:port`, `http://host:port/prefix`).
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Regular expression → replacement (with `$1`…) applied to the repository on mirrors.
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

/// Settings for one endpoint host.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct HostConfig {
    /// Credentials.
    #[serde(default)]
    pub auth: Option<HostAuth>,
    /// TLS settings.
    #[serde(default)]
    pub tls: Option<HostTls>,
}

/// Credentials for a host.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct HostAuth {
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// base64 of `user:password`, as in a docker config.
    #[serde(default)]
    pub auth: Option<String>,
    /// A registry token, sent as a bearer token.
    #[serde(default)]
    pub identitytoken: Option<String>,
}

/// TLS settings for a host.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct HostTls {
    /// Extra CA certificate (PEM) to trust.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (not supported yet; refused rather than ignored).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Client key (not supported yet; refused rather than ignored).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Skip verification of the server's certificate.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A `registries.yaml` that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    /// An endpoint URL is not `http(s)://host[:port][/path]`.
    #[error("mirror endpoint {endpoint:?} of {registry:?} is not an http(s) URL")]
    BadEndpoint {
        /// The mirrored registry.
        registry: String,
        /// The endpoint.
        endpoint: String,
    },
    /// A rewrite is not a valid regular expression.
    #[error("rewrite {pattern:?} of {registry:?}: {source}")]
    BadRewrite {
        /// The mirrored registry.
        registry: String,
        /// The pattern.
        pattern: String,
        #[source]
        source: regex::Error,
    },
    /// Client certificates are not supported yet.
    #[error("configs.{host:?}.tls: client certificates (cert_file/key_file) are not supported yet")]
    ClientCertificate {
        /// The host.
        host: String,
    },
}

impl RegistriesConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, RegistriesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RegistriesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = Self::parse(&text).map_err(|e| match e {
            RegistriesError::Parse { source, .. } => RegistriesError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Self, RegistriesError> {
        let cfg: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml::from_str(text).map_err(|source| RegistriesError::Parse {
                path: PathBuf::from("<registries.yaml>"),
                source,
            })?
        };
        for (registry, m) in &cfg.mirrors {
            for e in &m.endpoint {
                Endpoint::from_url(e).ok_or_else(|| RegistriesError::BadEndpoint {
                    registry: registry.clone(),
                    endpoint: e.clone(),
                })?;
            }
            for pattern in m.rewrite.keys() {
                regex::Regex::new(pattern).map_err(|source| RegistriesError::BadRewrite {
                    registry: registry.clone(),
                    pattern: pattern.clone(),
                    source,
                })?;
            }
        }
        for (host, c) in &cfg.configs {
            if let Some(t) = &c.tls {
                if t.cert_file.is_some() || t.key_file.is_some() {
                    return Err(RegistriesError::ClientCertificate { host: host.clone() });
                }
            }
        }
        Ok(cfg)
    }

    /// The endpoints to try for an image of `registry` with repository `repository`, in order:
    /// the mirrors (with rewrites applied), then the default endpoint.
    pub fn endpoints(&self, registry: &str, repository: &str) -> Vec<Endpoint> {
        let mut out = Vec::new();
        let mirror = self.mirrors.get(registry).or_else(|| self.mirrors.get("*"));
        if let Some(m) = mirror {
            for url in &m.endpoint {
                let Some(mut ep) = Endpoint::from_url(url) else {
                    continue;
                };
                ep.repository = rewrite(&m.rewrite, repository);
                ep.mirror_of = Some(registry.to_string());
                out.push(ep);
            }
        }
        // The default endpoint, always last. A mirror entry naming the registry's own default
        // endpoint is not tried twice.
        let default_host = if registry == "docker.io" {
            "index.docker.io"
        } else {
            registry
        };
        let plain = is_loopback(default_host) && self.config_for(default_host).and_then(|c| c.tls.as_ref()).is_none();
        let default = Endpoint {
            scheme: if plain { Scheme::Http } else { Scheme::Https },
            host: default_host.to_string(),
            path: String::new(),
            repository: repository.to_string(),
            mirror_of: None,
        };
        out.retain(|e| !(e.host == default.host && e.path.is_empty() && e.repository == default.repository));
        out.push(default);
        out
    }

    /// The settings for the endpoint host `host`.
    pub fn config_for(&self, host: &str) -> Option<&HostConfig> {
        self.configs.get(host).or_else(|| {
            // docker.io's credentials are commonly filed under any of its names.
            if matches!(host, "index.docker.io" | "registry-1.docker.io") {
                self.configs.get("docker.io")
            } else {
                None
            }
        })
    }
}

fn rewrite(rules: &BTreeMap<String, String>, repository: &str) -> String {
    for (pattern, replacement) in rules {
        if let Ok(re) = regex::Regex::new(pattern) {
            if re.is_match(repository) {
                return re.replace(repository, replacement.as_str()).into_owned();
            }
        }
    }
    repository.to_string()
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(
        host,
        |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host },
    );
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// http or https.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
}

/// One place to pull an image from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Plain or TLS.
    pub scheme: Scheme,
    /// `host` or `host:port`.
    pub host: String,
    /// A path prefix before `/v2` (`/prefix`), or empty.
    pub path: String,
    /// The repository to ask this endpoint for (rewritten on mirrors).
    pub repository: String,
    /// For a mirror: the registry it stands in for.
    pub mirror_of: Option<String>,
}

impl Endpoint {
    fn from_url(url: &str) -> Option<Self> {
        let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if !url.contains("://") {
            (Scheme::Https, url)
        } else {
            return None;
        };
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) => (h, format!("/{}", p.trim_end_matches('/'))),
            None => (rest, String::new()),
        };
        if host.is_empty() || host.contains(['@', '?', '#']) {
            return None;
        }
        // `https://host/v2` and `https://host` are the same endpoint.
        let path = path.strip_suffix("/v2").unwrap_or(&path).to_string();
        Some(Self {
            scheme,
            host: host.to_string(),
            path: if path == "/" { String::new() } else { path },
            repository: String::new(),
            mirror_of: None,
        })
    }

    /// `scheme://host/path`, for messages.
    pub fn url(&self) -> String {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{s}://{}{}", self.host, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "http://127.0.0.1:5000"
      - "https://mirror.example.com:8443/v2"
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
  "*":
    endpoint: ["https://catchall.example.com"]
configs:
  "127.0.0.1:5000":
    auth: {username: u, password: p}
  "mirror.example.com:8443":
    tls: {insecure_skip_verify: true, ca_file: /etc/ca.pem}
"#;

    #[test]
    fn mirrors_in_order_then_the_default_endpoint() {
        let c = RegistriesConfig::parse(YAML).expect("parse");
        let eps = c.endpoints("docker.io", "rancher/coredns-coredns");
        let urls: Vec<_> = eps.iter().map(|e| (e.url(), e.repository.as_str())).collect();
        assert_eq!(
            urls,
            vec![
                (
                    "http://127.0.0.1:5000".to_string(),
                    "mirrorproject/rancher-images/coredns-coredns"
                ),
                (
                    "https://mirror.example.com:8443".to_string(),
                    "mirrorproject/rancher-images/coredns-coredns"
                ),
                // Rewrites never apply to the default endpoint.
                ("https://index.docker.io".to_string(), "rancher/coredns-coredns"),
            ]
        );
        assert_eq!(eps[0].mirror_of.as_deref(), Some("docker.io"));
        let eps = c.endpoints("quay.io", "x/y");
        assert_eq!(eps[0].url(), "https://catchall.example.com");
        assert_eq!(eps[1].url(), "https://quay.io");
        let tls = c
            .config_for("mirror.example.com:8443")
            .and_then(|h| h.tls.clone())
            .expect("tls");
        assert!(tls.insecure_skip_verify);
        assert_eq!(
            c.config_for("127.0.0.1:5000")
                .and_then(|h| h.auth.clone())
                .and_then(|a| a.username),
            Some("u".into())
        );
    }

    #[test]
    fn loopback_registries_default_to_plain_http() {
        let c = RegistriesConfig::default();
        assert_eq!(c.endpoints("127.0.0.1:5000", "x")[0].url(), "http://127.0.0.1:5000");
        assert_eq!(c.endpoints("localhost:5000", "x")[0].url(), "http://localhost:5000");
        assert_eq!(
            c.endpoints("registry.local:5000", "x")[0].url(),
            "https://registry.local:5000"
        );
        assert_eq!(c.endpoints("docker.io", "library/busybox").len(), 1);
    }

    #[test]
    fn invalid_files_are_refused() {
        assert!(matches!(
            RegistriesConfig::parse("mirrors:\n  docker.io:\n    endpoint: ['ftp://x']\n"),
            Err(RegistriesError::BadEndpoint { .. })
        ));
        assert!(matches!(
            RegistriesConfig::parse("mirrors:\n  docker.io:\n    endpoint: ['http://x']\n    rewrite: {'(': 'x'}\n"),
            Err(RegistriesError::BadRewrite { .. })
        ));
        assert!(matches!(
            RegistriesConfig::parse("configs:\n  x:\n    tls: {cert_file: /a, key_file: /b}\n"),
            Err(RegistriesError::ClientCertificate { .. })
        ));
        assert!(matches!(
            RegistriesConfig::parse("mirrors: [1]"),
            Err(RegistriesError::Parse { .. })
        ));
        assert_eq!(RegistriesConfig::parse("").expect("empty"), RegistriesConfig::default());
    }
}
