//! Compact JSON Web Signatures (RFC 7515) with ES256 — ECDSA over P-256 with SHA-256 — made
//! and checked with `ring`, the crypto the server's TLS already uses. This is all that
//! service-account tokens need, so there is no JWT library: the ones that exist bring their
//! own crypto (or a choice of several) and a claims model that Kubernetes' tokens would not use.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported signing algorithm {0:?}")]
    Algorithm(String),
    #[error("invalid signature")]
    Signature,
}

/// Why a signing key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the signing key: {0}")]
    Pem(String),
    #[error("the signing key is not an ECDSA P-256 key: {0}")]
    Rejected(String),
}

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    alg: &'a str,
    #[serde(default, skip_serializing_if = "str::is_empty")]
    kid: &'a str,
}

/// An ES256 signing key and its public half.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
    rng: SystemRandom,
}

impl SigningKey {
    /// The key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        use rcgen::PublicKeyData;
        let parsed = rcgen::KeyPair::from_pem(pem).map_err(|e| KeyError::Pem(e.to_string()))?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, parsed.serialized_der(), &rng)
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        // As Kubernetes names its keys: the SHA-256 of the DER public key, base64url.
        let spki = parsed.subject_public_key_info();
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(SigningKey { pair, kid, rng })
    }

    /// The key's ID (`kid` in the tokens' header).
    #[cfg(test)]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `header.payload.signature` for `claims`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, JwtError> {
        let header = serde_json::to_vec(&Header {
            alg: "ES256",
            kid: &self.kid,
        })
        .map_err(|_| JwtError::Malformed("header"))?;
        let payload = serde_json::to_vec(claims).map_err(|_| JwtError::Malformed("claims"))?;
        let mut out = URL_SAFE_NO_PAD.encode(header);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut out);
        let sig = self
            .pair
            .sign(&self.rng, out.as_bytes())
            .map_err(|_| JwtError::Signature)?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut out);
        Ok(out)
    }

    /// The payload of `token` when this key signed it; nothing about the claims is checked.
    pub fn verify(&self, token: &str) -> Result<Vec<u8>, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwtError::Malformed("not three dot-separated parts"));
        };
        let header = URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| JwtError::Malformed("header is not base64url"))?;
        let header: Header = serde_json::from_slice(&header).map_err(|_| JwtError::Malformed("header is not JSON"))?;
        if header.alg != "ES256" {
            return Err(JwtError::Algorithm(header.alg.to_string()));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
        let signed = &token[..h.len() + 1 + p.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.pair.public_key().as_ref())
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| JwtError::Signature)?;
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| JwtError::Malformed("payload is not base64url"))
    }
}

/// Whether `s` has the shape of a compact JWS (three base64url parts), to tell tokens apart
/// from other bearer credentials before doing any crypto.
pub fn looks_like_jwt(s: &str) -> bool {
    s.len() > 16
        && s.bytes().filter(|b| *b == b'.').count() == 2
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("key")
            .serialize_pem();
        SigningKey::from_pem(&pem).expect("signing key")
    }

    #[test]
    fn signs_and_verifies() {
        let k = key();
        let token = k.sign(&serde_json::json!({"sub": "me"})).expect("sign");
        assert!(looks_like_jwt(&token));
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().expect("header"))
                .expect("b64"),
        )
        .expect("json");
        assert_eq!(header, serde_json::json!({"alg": "ES256", "kid": k.kid()}));
        let payload = k.verify(&token).expect("verify");
        assert_eq!(payload, br#"{"sub":"me"}"#);
    }

    #[test]
    fn refuses_what_it_did_not_sign() {
        let (a, b) = (key(), key());
        let token = a.sign(&serde_json::json!({"sub": "me"})).expect("sign");
        assert_eq!(b.verify(&token), Err(JwtError::Signature));
        // The same signature over other claims.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#),
            parts[2]
        );
        assert_eq!(a.verify(&forged), Err(JwtError::Signature));
        // "alg": "none" and friends.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#)
        );
        assert_eq!(a.verify(&none), Err(JwtError::Algorithm("none".into())));
        assert!(matches!(a.verify("a.b"), Err(JwtError::Malformed(_))));
        assert!(matches!(a.verify("a.b.c.d"), Err(JwtError::Malformed(_))));
        assert!(!looks_like_jwt("plain-shared-token"));
    }

    #[test]
    fn the_key_id_is_stable_for_a_key() {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("key")
            .serialize_pem();
        let a = SigningKey::from_pem(&pem).expect("a");
        let b = SigningKey::from_pem(&pem).expect("b");
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.kid().len(), 43);
        let rsa_like = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(SigningKey::from_pem(rsa_like).is_err());
    }
}
