//! JWS compact serialisation of JWTs (RFC 7515/7519), as far as service account tokens need it:
//! `base64url(header).base64url(payload).base64url(signature)` with header
//! `{"alg":"ES256"|"RS256","kid":...}`. Signatures come from [`crate::crypto::signing`].
//!
//! Parsing only splits and decodes; it never trusts the payload before a signature check,
//! except [`peek_issuer`], which reads the unverified `iss` to decide whether a token is ours at
//! all (as kube-apiserver's `hasCorrectIssuer` does).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{CryptoError, JwsAlgorithm, SigningKey, VerifyingKey};

#[derive(Serialize)]
struct HeaderOut<'a> {
    alg: &'a str,
    kid: &'a str,
}

#[derive(Deserialize)]
struct HeaderIn {
    alg: String,
    #[serde(default)]
    kid: String,
    /// Critical extensions: none is supported, so any makes the token unreadable.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Signs `claims` (a JSON object) with `key` and returns the compact token.
pub(crate) fn sign<C: Serialize>(
    key: &SigningKey,
    claims: &C,
) -> Result<Zeroizing<String>, CryptoError> {
    let header = serde_json::to_vec(&HeaderOut {
        alg: key.algorithm().name(),
        kid: key.key_id(),
    })
    .expect("a header always serialises");
    let payload = serde_json::to_vec(claims).expect("claims always serialise");
    let mut token = Zeroizing::new(String::with_capacity(512));
    token.push_str(&B64URL.encode(header));
    token.push('.');
    token.push_str(&B64URL.encode(payload));
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&B64URL.encode(signature));
    Ok(token)
}

/// The unverified `iss` claim of a compact JWT; `None` if `token` is not one (JSON
/// serialisation, not three parts, bad base64 or JSON, or `iss` not a string).
pub(crate) fn peek_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        // WARNING: not verified.
        #[serde(default)]
        iss: String,
    }
    if token.trim_start().starts_with('{') {
        return None;
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return None;
    }
    let payload = B64URL.decode(parts[1]).ok()?;
    serde_json::from_slice::<Iss>(&payload).ok().map(|c| c.iss)
}

/// A compact JWS split and decoded, not yet verified.
pub(crate) struct Jws<'a> {
    /// The header's algorithm (only the supported ones parse).
    pub alg: JwsAlgorithm,
    /// The header's key id ("" if none).
    pub kid: String,
    signing_input: &'a str,
    signature: Vec<u8>,
    payload: Vec<u8>,
}

impl<'a> Jws<'a> {
    /// Splits and decodes `token`; `None` if it is not a compact JWS with a supported `alg`
    /// (`none`, `HS256` and others are refused here) and no critical extension.
    pub fn parse(token: &'a str) -> Option<Self> {
        let mut parts = token.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: HeaderIn = serde_json::from_slice(&B64URL.decode(h).ok()?).ok()?;
        if header.crit.is_some() {
            return None;
        }
        Some(Self {
            alg: JwsAlgorithm::from_name(&header.alg)?,
            kid: header.kid,
            signing_input: &token[..h.len() + 1 + p.len()],
            signature: B64URL.decode(s).ok()?,
            payload: B64URL.decode(p).ok()?,
        })
    }

    /// Whether `key` verifies the signature (the header's algorithm must be the key's).
    pub fn verified_by(&self, key: &VerifyingKey) -> bool {
        key.verify(self.alg, self.signing_input.as_bytes(), &self.signature)
    }

    /// The payload bytes. Trust them only after [`Jws::verified_by`].
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_parse_and_verify() {
        let key = SigningKey::generate_es256().unwrap();
        let token = sign(&key, &serde_json::json!({"iss": "me", "n": 1})).unwrap();
        assert_eq!(peek_issuer(&token).as_deref(), Some("me"));
        let jws = Jws::parse(&token).unwrap();
        assert_eq!(
            (jws.alg, jws.kid.as_str()),
            (JwsAlgorithm::Es256, key.key_id())
        );
        assert!(jws.verified_by(key.verifying_key()));
        assert_eq!(jws.payload(), br#"{"iss":"me","n":1}"#);
        let header: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(token.split('.').next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "ES256", "kid": key.key_id()})
        );
        // Any change to header or payload breaks the signature.
        let (h, rest) = token.split_once('.').unwrap();
        let other = format!("{}.{rest}", B64URL.encode(r#"{"alg":"ES256","kid":"x"}"#));
        assert!(!Jws::parse(&other).unwrap().verified_by(key.verifying_key()));
        let (p, s) = rest.split_once('.').unwrap();
        let payload = B64URL.encode(br#"{"iss":"me","n":2}"#);
        let forged = format!("{h}.{payload}.{s}");
        assert!(!Jws::parse(&forged)
            .unwrap()
            .verified_by(key.verifying_key()));
        assert!(Jws::parse(&format!("{h}.{p}.{s}.x")).is_none());
    }

    #[test]
    fn what_does_not_parse() {
        let b = |s: &str| B64URL.encode(s);
        let payload = b(r#"{"iss":"me"}"#);
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"ES256","crit":["exp"]}"#,
            r#"{"kid":"k"}"#,
            "not json",
        ] {
            assert!(
                Jws::parse(&format!("{}.{payload}.", b(header))).is_none(),
                "{header}"
            );
        }
        assert!(Jws::parse(&format!("{}.{payload}.!!", b(r#"{"alg":"ES256"}"#))).is_none());
        assert_eq!(
            peek_issuer(&format!("x.{payload}.y")).as_deref(),
            Some("me")
        );
        assert_eq!(peek_issuer(&format!("x.{}.y", b(r#"{"iss":1}"#))), None);
        assert_eq!(
            peek_issuer(&format!("x.{}.y", b("{}"))).as_deref(),
            Some("")
        );
        assert_eq!(peek_issuer(&format!("x.{payload}")), None);
        assert_eq!(peek_issuer(&format!("x.{payload}=.y")), None, "padding");
        assert_eq!(peek_issuer(r#"{"payload":"x.y.z"}"#), None);
    }
}
