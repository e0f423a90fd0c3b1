//! Registry credentials from a docker `config.json` / `.dockerconfigjson` (what
//! `imagePullSecrets` hold), matched to a registry host as the kubelet does.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// User name and password (HTTP basic, or exchanged for a token).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// An identity/registry token, sent as a bearer token.
    Token(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::Token(_) => write!(f, "Token(<redacted>)"),
        }
    }
}

impl Credential {
    /// Decodes a docker config `auth` field: base64 of `user:password`.
    pub fn from_auth_field(auth: &str) -> Option<Self> {
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (u, p) = decoded.split_once(':')?;
        Some(Self::Basic {
            username: u.to_string(),
            password: p.to_string(),
        })
    }
}

/// A docker config that is not valid JSON of the expected shape.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Not JSON, or not the docker config shape.
    #[error("parsing docker config JSON: {source}")]
    Parse {
        #[source]
        source: serde_json::Error,
    },
    /// An `auth` field that is not base64 of `user:password`.
    #[error("docker config entry for {registry:?}: `auth` is not base64 of user:password")]
    BadAuth {
        /// The entry's key.
        registry: String,
    },
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default, alias = "identitytoken")]
    identity_token: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// Credentials by registry host, from one or more docker configs (first match wins, as with
/// several `imagePullSecrets`).
#[derive(Clone, Debug, Default)]
pub struct DockerCredentials {
    by_host: Vec<(String, Credential)>,
}

impl DockerCredentials {
    /// No credentials: every pull is anonymous.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses a `config.json` / `.dockerconfigjson` (`{"auths": {...}}`) or a legacy
    /// `.dockercfg` (the map without `auths`).
    pub fn from_json(json: &[u8]) -> Result<Self, CredentialsError> {
        let mut c = Self::default();
        c.add_json(json)?;
        Ok(c)
    }

    /// Adds the entries of another docker config after the ones present.
    pub fn add_json(&mut self, json: &[u8]) -> Result<(), CredentialsError> {
        let v: serde_json::Value = serde_json::from_slice(json).map_err(|source| CredentialsError::Parse { source })?;
        let auths = match v.get("auths") {
            Some(a) => a.clone(),
            None => v,
        };
        let entries: BTreeMap<String, Entry> =
            serde_json::from_value(auths).map_err(|source| CredentialsError::Parse { source })?;
        for (key, e) in entries {
            let cred = if let Some(t) = e.identity_token.or(e.registrytoken).filter(|t| !t.is_empty()) {
                Credential::Token(t)
            } else if let (Some(u), Some(p)) = (&e.username, &e.password) {
                Credential::Basic {
                    username: u.clone(),
                    password: p.clone(),
                }
            } else if let Some(a) = e.auth.filter(|a| !a.is_empty()) {
                Credential::from_auth_field(&a).ok_or_else(|| CredentialsError::BadAuth { registry: key.clone() })?
            } else {
                continue;
            };
            self.by_host.push((normalise_host(&key), cred));
        }
        Ok(())
    }

    /// Adds one credential for `host`.
    pub fn insert(&mut self, host: &str, cred: Credential) {
        self.by_host.push((normalise_host(host), cred));
    }

    /// The credential for `host` (`docker.io`, `index.docker.io` and `registry-1.docker.io` are
    /// one registry), if any.
    pub fn for_host(&self, host: &str) -> Option<&Credential> {
        let want = normalise_host(host);
        self.by_host.iter().find(|(h, _)| *h == want).map(|(_, c)| c)
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/path` → `host:5000`.
fn normalise_host(key: &str) -> String {
    let k = key.trim();
    let k = k.split_once("://").map_or(k, |(_, rest)| rest);
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_string(),
        _ => k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dockerconfigjson_and_legacy_dockercfg() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "127.0.0.1:5000": {{"username": "alice", "password": "pw"}},
                "tok.example.com": {{"identitytoken": "T"}}
            }}}}"#
        );
        let c = DockerCredentials::from_json(json.as_bytes()).expect("parse");
        assert_eq!(
            c.for_host("docker.io"),
            Some(&Credential::Basic {
                username: "bob".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(c.for_host("index.docker.io"), c.for_host("docker.io"));
        assert!(
            matches!(c.for_host("127.0.0.1:5000"), Some(Credential::Basic { username, .. }) if username == "alice")
        );
        assert_eq!(c.for_host("tok.example.com"), Some(&Credential::Token("T".into())));
        assert_eq!(c.for_host("127.0.0.1:5001"), None);

        let legacy = br#"{"http://registry.local:5000/v1/": {"username": "a", "password": "b"}}"#;
        let c = DockerCredentials::from_json(legacy).expect("legacy");
        assert!(c.for_host("registry.local:5000").is_some());
        assert!(format!("{:?}", c).contains("<redacted>"));
        assert!(!format!("{:?}", c).contains("\"b\""));
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(DockerCredentials::from_json(b"nope").is_err());
        assert!(matches!(
            DockerCredentials::from_json(br#"{"auths": {"x": {"auth": "!!!"}}}"#),
            Err(CredentialsError::BadAuth { .. })
        ));
    }
}
