//! Service-account tokens for a pod's projected `serviceAccountToken` sources, as the
//! kubelet's token manager gets them: through the TokenRequest API, bound to the pod (name and
//! uid), for the source's audience and lifetime; kept, and replaced once 80% of the lifetime
//! has passed (or 24 hours, whichever is first). When a replacement cannot be had, the
//! current token is kept while it is valid and the failure is reported for a pod event; the
//! next volume refresh tries again.

use std::collections::HashMap;
use std::future::Future;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// Tokens older than this are replaced whatever their lifetime (the kubelet's `maxTTL`).
const MAX_TTL: i64 = 24 * 60 * 60;

/// What a token is for: one per distinct source of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    service_account: String,
    audience: String,
    expiration_seconds: i64,
}

/// A token the API server gave, with its lifetime as the TokenRequest's status says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    /// `status.expirationTimestamp`, Unix seconds.
    pub expires: i64,
    /// `spec.expirationSeconds`.
    pub lifetime: i64,
}

impl Issued {
    /// The kubelet's rule: replace after 80% of the lifetime, or after 24 hours.
    pub fn needs_refresh(&self, now: i64) -> bool {
        let issued = self.expires - self.lifetime;
        now >= issued + MAX_TTL || now >= self.expires - self.lifetime / 5
    }

    pub fn expired(&self, now: i64) -> bool {
        now >= self.expires
    }
}

/// One pod's tokens (the agent keeps one per pod worker).
#[derive(Default)]
pub struct TokenManager {
    tokens: HashMap<Key, Issued>,
    /// Failures to replace a token that is still valid, for pod events.
    warnings: Vec<String>,
}

impl TokenManager {
    /// The token for `source` of `pod`, requested or replaced when due.
    pub async fn token(
        &mut self,
        client: &Client,
        pod: &Pod,
        source: &ServiceAccountTokenProjection,
    ) -> Result<String, String> {
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let key = Key {
            service_account: service_account.clone(),
            audience: source.audience.clone().unwrap_or_default(),
            expiration_seconds: source.expiration_seconds.unwrap_or(3600),
        };
        let now = chrono::Utc::now().timestamp();
        let fetch = || request(client, pod, &service_account, &key);
        self.get_or_refresh(key.clone(), now, fetch).await
    }

    /// Failures to replace tokens that are still valid, since the last call.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    async fn get_or_refresh<F, Fut>(&mut self, key: Key, now: i64, fetch: F) -> Result<String, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued, String>>,
    {
        if let Some(t) = self.tokens.get(&key).filter(|t| !t.needs_refresh(now)) {
            return Ok(t.token.clone());
        }
        match (fetch().await, self.tokens.get(&key)) {
            (Ok(fresh), _) => {
                let token = fresh.token.clone();
                self.tokens.insert(key, fresh);
                Ok(token)
            }
            (Err(e), None) => Err(format!("failed to fetch token: {e}")),
            (Err(e), Some(old)) if old.expired(now) => Err(format!(
                "token for service account {:?} expired and refresh failed: {e}",
                key.service_account
            )),
            (Err(e), Some(old)) => {
                let until = chrono::DateTime::from_timestamp(old.expires, 0)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                self.warnings.push(format!(
                    "couldn't update the token for service account {:?}: {e}; the current one is valid until {until}",
                    key.service_account
                ));
                Ok(old.token.clone())
            }
        }
    }
}

/// A TokenRequest for the service account, bound to `pod`.
async fn request(client: &Client, pod: &Pod, service_account: &str, key: &Key) -> Result<Issued, String> {
    let ns = pod.namespace().unwrap_or_else(|| "default".into());
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: if key.audience.is_empty() {
                Vec::new()
            } else {
                vec![key.audience.clone()]
            },
            expiration_seconds: Some(key.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
        },
        ..Default::default()
    };
    let out = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_token_request(service_account, &PostParams::default(), &req)
        .await
        .map_err(|e| e.to_string())?;
    let status = out.status.ok_or("the TokenRequest came back without a status")?;
    if status.token.is_empty() {
        return Err("the TokenRequest came back without a token".into());
    }
    Ok(Issued {
        token: status.token,
        expires: status.expiration_timestamp.0.as_second(),
        lifetime: out.spec.expiration_seconds.unwrap_or(key.expiration_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            service_account: "default".into(),
            audience: String::new(),
            expiration_seconds: 3607,
        }
    }

    fn issued(token: &str, at: i64, lifetime: i64) -> Issued {
        Issued {
            token: token.into(),
            expires: at + lifetime,
            lifetime,
        }
    }

    #[test]
    fn refreshes_at_eighty_percent_or_a_day() {
        let t = issued("a", 1000, 3600);
        assert!(!t.needs_refresh(1000));
        assert!(!t.needs_refresh(1000 + 2879));
        assert!(t.needs_refresh(1000 + 2880));
        assert!(!t.expired(1000 + 3599) && t.expired(1000 + 3600));
        let long = issued("b", 0, 7 * 24 * 3600);
        assert!(!long.needs_refresh(MAX_TTL - 1));
        assert!(long.needs_refresh(MAX_TTL));
    }

    #[tokio::test]
    async fn keeps_tokens_until_due_and_old_ones_while_valid() {
        let mut m = TokenManager::default();
        let t0 = 1_000_000;
        // First time: a failure is an error.
        let err = m
            .get_or_refresh(key(), t0, || async { Err("connection refused".to_string()) })
            .await
            .expect_err("no token yet");
        assert_eq!(err, "failed to fetch token: connection refused");
        let got = m
            .get_or_refresh(key(), t0, || async move { Ok(issued("one", t0, 3607)) })
            .await;
        assert_eq!(got.as_deref(), Ok("one"));
        // Not due: no request at all.
        let got = m
            .get_or_refresh(key(), t0 + 2800, || async { panic!("no request before 80%") })
            .await;
        assert_eq!(got.as_deref(), Ok("one"));
        // Due, and the server cannot be reached: the current one stays, with a warning.
        let got = m
            .get_or_refresh(key(), t0 + 2900, || async { Err("timed out".to_string()) })
            .await;
        assert_eq!(got.as_deref(), Ok("one"));
        let warnings = m.take_warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("timed out"), "{warnings:?}");
        // Due and reachable: replaced.
        let got = m
            .get_or_refresh(key(), t0 + 2901, || async move { Ok(issued("two", t0 + 2901, 3607)) })
            .await;
        assert_eq!(got.as_deref(), Ok("two"));
        // Expired and not replaceable: an error.
        let err = m
            .get_or_refresh(key(), t0 + 2901 + 3607, || async { Err("gone".to_string()) })
            .await
            .expect_err("expired");
        assert!(err.contains("expired and refresh failed: gone"), "{err}");
        assert!(m.take_warnings().is_empty());
    }
}
