//! Service-account tokens as Kubernetes (1.24 and later) makes them: short-lived JWTs for a
//! ServiceAccount, optionally bound to a Pod or a Secret, issued by the `serviceaccounts/token`
//! subresource (a `TokenRequest`) and accepted as bearer credentials while the account — and
//! the object the token is bound to — still exist with the uids the token names. Signed with
//! the cluster's service-account key (`<data-dir>/tls/sa.key`, made by [`crate::pki`]).
//!
//! Checking a token costs one signature verification and cache lookups: no store reads.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use skiff_api::FieldError;

use crate::cache::Cache;
use crate::error::{ApiError, ApiResult};
use crate::jwt::{JwtError, KeyError, SigningKey};
use crate::server::Identity;
use crate::types::Types;

/// The issuer (`iss`) of the tokens, and the audience the API server accepts: k3s's and
/// kubeadm's default, the cluster-internal name of the API server.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The lifetime the ServiceAccount admission plugin asks for in the projected token volume.
/// A pod-bound token for the API server asked for with exactly this lifetime is valid for a
/// year but carries `warnafter` at this lifetime (upstream's
/// `--service-account-extend-token-expiration`, on by default), so clients that read the
/// token file once keep working while the kubelet (here: the agent) rotates the file.
pub const WARN_ONLY_EXPIRATION: i64 = 3607;
const EXTENDED_EXPIRATION: i64 = 365 * 24 * 60 * 60;
const MIN_EXPIRATION: i64 = 10 * 60;
const MAX_EXPIRATION: i64 = 1 << 32;
const DEFAULT_EXPIRATION: i64 = 60 * 60;
/// Clock skew tolerated on `exp`, `nbf` and `iat` (go-jose's default, which upstream uses).
const LEEWAY: i64 = 60;
/// A token bound to an object that is being deleted stays valid this long past the object's
/// `deletionTimestamp` (upstream's rule: a pod's token works through its graceful shutdown).
const DELETION_GRACE: i64 = 60;
const GROUP: &str = "authentication.k8s.io";
const API_VERSION: &str = "authentication.k8s.io/v1";

/// A name and uid in the private claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` private claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// A token's claims (in the order Kubernetes' tokens have them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    #[serde(default)]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
    pub nbf: i64,
    pub sub: String,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(s) => vec![s],
        Aud::Many(v) => v,
    })
}

/// `system:serviceaccount:<namespace>:<name>`.
pub fn user_name(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Why a bearer token did not authenticate. Logged; the client only ever sees a 401.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("malformed claims: {0}")]
    Claims(String),
    #[error("issuer {0:?} is not this cluster's")]
    Issuer(String),
    #[error("none of the token's audiences {0:?} is accepted")]
    Audience(Vec<String>),
    #[error("service account token has expired")]
    Expired,
    #[error("service account token is not valid yet")]
    NotYetValid,
    #[error("service account token is issued in the future")]
    IssuedInTheFuture,
    #[error("the subject {0:?} does not name the token's service account")]
    Subject(String),
    #[error("{kind} {namespace}/{name} no longer exists")]
    Gone {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name} was replaced (uid {uid} is not the token's)")]
    Replaced {
        kind: &'static str,
        namespace: String,
        name: String,
        uid: String,
    },
    #[error("{kind} {namespace}/{name} has been deleted")]
    Deleted {
        kind: &'static str,
        namespace: String,
        name: String,
    },
}

/// The issuer and checker of service-account tokens.
pub struct ServiceAccountTokens {
    key: SigningKey,
    issuer: String,
    audiences: Vec<String>,
}

/// The few parts of a stored object a token check reads, parsed without the rest.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    metadata: HeadMeta<'a>,
}

#[derive(Deserialize, Default)]
struct HeadMeta<'a> {
    #[serde(borrow, default)]
    uid: Cow<'a, str>,
    #[serde(borrow, default, rename = "deletionTimestamp")]
    deletion_timestamp: Option<Cow<'a, str>>,
}

fn core_key(types: &Types, plural: &str, namespace: Option<&str>, name: &str) -> String {
    match types.find("", "v1", plural) {
        Some(rt) => rt.key(namespace, name),
        None => format!("/registry/{plural}/{}/{name}", namespace.unwrap_or_default()),
    }
}

impl ServiceAccountTokens {
    /// Tokens signed with the PKCS#8 PEM key `key_pem`, for this cluster's issuer and audience.
    pub fn new(key_pem: &str) -> Result<Self, KeyError> {
        Ok(ServiceAccountTokens {
            key: SigningKey::from_pem(key_pem)?,
            issuer: ISSUER.to_string(),
            audiences: vec![ISSUER.to_string()],
        })
    }

    /// The audiences the API server accepts (and gives tokens that ask for none).
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, JwtError> {
        self.key.sign(claims)
    }

    /// The claims of `token` when it is ours, for us, and valid at `now` (Unix seconds). The
    /// objects it names are not looked at.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let payload = self.key.verify(token)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|e| TokenError::Claims(e.to_string()))?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(claims.iss));
        }
        if !claims.aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(TokenError::Audience(claims.aud));
        }
        if now - LEEWAY > claims.exp {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now + LEEWAY {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat > now + LEEWAY {
            return Err(TokenError::IssuedInTheFuture);
        }
        let k = &claims.kubernetes;
        if k.namespace.is_empty() || k.serviceaccount.name.is_empty() || k.serviceaccount.uid.is_empty() {
            return Err(TokenError::Claims("the service account claims are incomplete".into()));
        }
        if claims.sub != user_name(&k.namespace, &k.serviceaccount.name) {
            return Err(TokenError::Subject(claims.sub));
        }
        Ok(claims)
    }

    /// Who `token` speaks for: its service account, while the account and the object the
    /// token is bound to still exist (as cached) with the uids it names.
    pub fn authenticate(&self, cache: &Cache, types: &Types, token: &str, now: i64) -> Result<Identity, TokenError> {
        let claims = self.verify(token, now)?;
        let k = &claims.kubernetes;
        let ns = k.namespace.as_str();
        let check = |kind: &'static str, plural: &str, r: &ObjectRef| -> Result<(), TokenError> {
            let gone = || TokenError::Gone {
                kind,
                namespace: ns.to_string(),
                name: r.name.clone(),
            };
            let obj = cache
                .get(&core_key(types, plural, Some(ns), &r.name))
                .ok_or_else(gone)?;
            let head: Head = serde_json::from_slice(&obj.bytes).map_err(|_| gone())?;
            if head.metadata.uid != r.uid {
                return Err(TokenError::Replaced {
                    kind,
                    namespace: ns.to_string(),
                    name: r.name.clone(),
                    uid: head.metadata.uid.into_owned(),
                });
            }
            let deleted_long_ago = head
                .metadata
                .deletion_timestamp
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .is_some_and(|t| t.timestamp() < now - DELETION_GRACE);
            if deleted_long_ago {
                return Err(TokenError::Deleted {
                    kind,
                    namespace: ns.to_string(),
                    name: r.name.clone(),
                });
            }
            Ok(())
        };
        check("serviceaccount", "serviceaccounts", &k.serviceaccount)?;
        if let Some(p) = &k.pod {
            check("pod", "pods", p)?;
        }
        if let Some(s) = &k.secret {
            check("secret", "secrets", s)?;
        }
        if k.warnafter.is_some_and(|w| now > w) {
            tracing::debug!(user = %claims.sub, pod = ?k.pod.as_ref().map(|p| &p.name), "a stale service-account token (past warnafter) was used");
        }
        Ok(Identity {
            user: claims.sub.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        })
    }
}

/// The body of a TokenRequest, as far as the server reads it.
#[derive(Deserialize, Default)]
struct TokenRequestBody {
    #[serde(default)]
    metadata: Option<RequestMeta>,
    #[serde(default)]
    spec: Option<TokenRequestSpec>,
}

#[derive(Deserialize, Default)]
struct RequestMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TokenRequestSpec {
    #[serde(default)]
    audiences: Option<Vec<String>>,
    #[serde(default)]
    expiration_seconds: Option<i64>,
    #[serde(default)]
    bound_object_ref: Option<BoundObjectRef>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct BoundObjectRef {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uid: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The uid of a cached object.
fn uid_of(obj: &crate::cache::CachedObject) -> String {
    serde_json::from_slice::<Head>(&obj.bytes)
        .map(|h| h.metadata.uid.into_owned())
        .unwrap_or_default()
}

impl ServiceAccountTokens {
    /// `POST …/serviceaccounts/{name}/token`: a token for service account `name` in `ns`, as
    /// the TokenRequest in `body` asks, at `now`. Answers the TokenRequest with its status.
    pub fn token_request(
        &self,
        cache: &Cache,
        types: &Types,
        ns: &str,
        name: &str,
        body: Value,
        now: DateTime<Utc>,
    ) -> ApiResult<Value> {
        match body["apiVersion"].as_str() {
            None | Some("") | Some(API_VERSION) => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({API_VERSION})"
                )))
            }
        }
        match body["kind"].as_str() {
            None | Some("") | Some("TokenRequest") => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind (TokenRequest)"
                )))
            }
        }
        let req: TokenRequestBody = serde_json::from_value(body.clone()).map_err(|e| {
            ApiError::bad_request(format!(
                "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: {e}"
            ))
        })?;
        let meta = req.metadata.unwrap_or_default();
        if let Some(n) = meta.name.as_deref().filter(|n| !n.is_empty() && *n != name) {
            let e = FieldError::invalid("metadata.name", n, "must match the service account name if specified");
            return Err(ApiError::invalid_kind(GROUP, "TokenRequest", name, &[e]));
        }
        if let Some(n) = meta.namespace.as_deref().filter(|n| !n.is_empty() && *n != ns) {
            let e = FieldError::invalid(
                "metadata.namespace",
                n,
                "must match the service account namespace if specified",
            );
            return Err(ApiError::invalid_kind(GROUP, "TokenRequest", name, &[e]));
        }
        let sa_rt = types
            .find("", "v1", "serviceaccounts")
            .ok_or_else(|| ApiError::internal("the serviceaccounts type is not registered"))?;
        let sa = cache
            .get(&sa_rt.key(Some(ns), name))
            .ok_or_else(|| ApiError::not_found(&sa_rt, name))?;
        let spec = req.spec.unwrap_or_default();
        let audiences = spec
            .audiences
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| self.audiences.clone());
        let requested = spec.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION);
        if requested < MIN_EXPIRATION {
            let e = FieldError::invalid(
                "spec.expirationSeconds",
                requested,
                "may not specify a duration less than 10 minutes",
            );
            return Err(ApiError::invalid_kind(GROUP, "TokenRequest", "", &[e]));
        }
        if requested > MAX_EXPIRATION {
            let e = FieldError::invalid(
                "spec.expirationSeconds",
                requested,
                "may not specify a duration larger than 2^32 seconds",
            );
            return Err(ApiError::invalid_kind(GROUP, "TokenRequest", "", &[e]));
        }

        let (mut pod, mut secret, mut node) = (None, None, None);
        if let Some(r) = &spec.bound_object_ref {
            let api_version = r.api_version.as_deref().unwrap_or("");
            let kind = r.kind.as_deref().unwrap_or("");
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let version = api_version.rsplit_once('/').map_or(api_version, |(_, v)| v);
            let bound_name = r.name.as_deref().unwrap_or("");
            let (plural, kind_name) = match (group, kind) {
                ("", "Pod") => ("pods", "Pod"),
                ("", "Secret") => ("secrets", "Secret"),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token to object of type {group}/{version}, Kind={kind}"
                    )))
                }
            };
            let rt = types
                .find("", "v1", plural)
                .ok_or_else(|| ApiError::internal(format!("the {plural} type is not registered")))?;
            let obj = cache
                .get(&rt.key(Some(ns), bound_name))
                .ok_or_else(|| ApiError::not_found(&rt, bound_name))?;
            let uid = uid_of(&obj);
            if kind_name == "Pod" {
                let value = obj.value();
                let pod_sa = value["spec"]["serviceAccountName"].as_str().unwrap_or("");
                if pod_sa != name {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount \"{name}\" to pod running with different serviceaccount name."
                    )));
                }
                // The node the pod runs on, when there is one (upstream's pod-node info).
                let node_name = value["spec"]["nodeName"].as_str().unwrap_or("");
                if !node_name.is_empty() {
                    if let Some(n) = cache.get(&core_key(types, "nodes", None, node_name)) {
                        node = Some(ObjectRef {
                            name: node_name.to_string(),
                            uid: uid_of(&n),
                        });
                    }
                }
            }
            if let Some(want) = r.uid.as_deref().filter(|u| !u.is_empty()) {
                if want != uid {
                    return Err(ApiError::new(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {kind_name} \"{bound_name}\": the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
                        ),
                    )
                    .with_details(json!({"name": bound_name, "kind": kind_name})));
                }
            }
            let bound = Some(ObjectRef {
                name: bound_name.to_string(),
                uid,
            });
            if kind_name == "Pod" {
                pod = bound;
            } else {
                secret = bound;
            }
        }

        // Pod-bound tokens for the API server asked for with the admission plugin's lifetime
        // last a year and warn after the asked-for lifetime.
        let mut lifetime = requested;
        let mut warnafter = None;
        let ours = audiences.iter().all(|a| self.audiences.contains(a));
        if pod.is_some() && requested == WARN_ONLY_EXPIRATION && ours {
            warnafter = Some(now.timestamp() + requested);
            lifetime = EXTENDED_EXPIRATION;
        }
        let iat = now.timestamp();
        let claims = Claims {
            aud: audiences.clone(),
            exp: iat + lifetime,
            iat,
            iss: self.issuer.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaims {
                namespace: ns.to_string(),
                node,
                pod,
                secret,
                serviceaccount: ObjectRef {
                    name: name.to_string(),
                    uid: uid_of(&sa),
                },
                warnafter,
            },
            nbf: iat,
            sub: user_name(ns, name),
        };
        let token = self
            .sign(&claims)
            .map_err(|e| ApiError::internal(format!("failed to generate token: {e}")))?;
        let mut out_spec = json!({"audiences": audiences, "expirationSeconds": requested});
        if let Some(r) = body["spec"].get("boundObjectRef").filter(|r| !r.is_null()) {
            out_spec["boundObjectRef"] = r.clone();
        }
        let expires = now + chrono::Duration::seconds(requested);
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": API_VERSION,
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": rfc3339(now)},
            "spec": out_spec,
            "status": {"token": token, "expirationTimestamp": rfc3339(expires)},
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> ServiceAccountTokens {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("key")
            .serialize_pem();
        ServiceAccountTokens::new(&pem).expect("tokens")
    }

    fn claims(now: i64, lifetime: i64) -> Claims {
        Claims {
            aud: vec![ISSUER.into()],
            exp: now + lifetime,
            iat: now,
            iss: ISSUER.into(),
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "ns".into(),
                node: None,
                pod: None,
                secret: None,
                serviceaccount: ObjectRef {
                    name: "sa".into(),
                    uid: "u".into(),
                },
                warnafter: None,
            },
            nbf: now,
            sub: "system:serviceaccount:ns:sa".into(),
        }
    }

    #[test]
    fn claims_serialize_as_kubernetes_writes_them() {
        let c = claims(100, 3600);
        assert_eq!(
            serde_json::to_string(&c).expect("json"),
            r#"{"aud":["https://kubernetes.default.svc.cluster.local"],"exp":3700,"iat":100,"iss":"https://kubernetes.default.svc.cluster.local","jti":"j","kubernetes.io":{"namespace":"ns","serviceaccount":{"name":"sa","uid":"u"}},"nbf":100,"sub":"system:serviceaccount:ns:sa"}"#
        );
        // A single audience may come as a string.
        let one: Claims = serde_json::from_str(&serde_json::to_string(&c).expect("json").replace(
            r#"["https://kubernetes.default.svc.cluster.local"]"#,
            r#""https://kubernetes.default.svc.cluster.local""#,
        ))
        .expect("aud as a string");
        assert_eq!(one, c);
    }

    #[test]
    fn lifetime_is_checked_with_a_minute_of_leeway() {
        let t = tokens();
        let now = 1_700_000_000;
        let token = t.sign(&claims(now, 600)).expect("sign");
        assert!(t.verify(&token, now).is_ok());
        assert!(t.verify(&token, now + 600 + LEEWAY).is_ok());
        assert!(matches!(t.verify(&token, now + 601 + LEEWAY), Err(TokenError::Expired)));
        assert!(t.verify(&token, now - LEEWAY).is_ok());
        assert!(matches!(
            t.verify(&token, now - LEEWAY - 1),
            Err(TokenError::NotYetValid)
        ));
    }

    #[test]
    fn issuer_audience_and_subject_must_be_ours() {
        let t = tokens();
        let now = 1_700_000_000;
        let mut c = claims(now, 3600);
        c.iss = "kubernetes/serviceaccount".into();
        assert!(matches!(
            t.verify(&t.sign(&c).expect("sign"), now),
            Err(TokenError::Issuer(_))
        ));
        let mut c = claims(now, 3600);
        c.aud = vec!["vault".into()];
        assert!(matches!(
            t.verify(&t.sign(&c).expect("sign"), now),
            Err(TokenError::Audience(_))
        ));
        let mut c = claims(now, 3600);
        c.aud = vec!["vault".into(), ISSUER.into()];
        assert!(t.verify(&t.sign(&c).expect("sign"), now).is_ok());
        let mut c = claims(now, 3600);
        c.sub = "system:serviceaccount:kube-system:admin".into();
        assert!(matches!(
            t.verify(&t.sign(&c).expect("sign"), now),
            Err(TokenError::Subject(_))
        ));
        // Another cluster's key.
        let other = tokens();
        assert!(matches!(
            t.verify(&other.sign(&claims(now, 3600)).expect("sign"), now),
            Err(TokenError::Jwt(JwtError::Signature))
        ));
    }
}
