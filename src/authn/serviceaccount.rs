//! Service account tokens: signed JWTs issued by the server ([`ServiceAccountIssuer`]) and
//! verified by [`ServiceAccountAuthenticator`], as kube-apiserver's TokenRequest tokens
//! (`pkg/serviceaccount/claims.go`, `jwt.go`).
//!
//! A token is ES256 (P-256, the default) or RS256, header `kid` = base64url(SHA-256(DER SPKI)),
//! claims `aud` (list), `exp`, `iat`, `iss`, `jti` (a UUID), `kubernetes.io` =
//! `{namespace, serviceaccount: {name, uid}}`, `nbf` and `sub` =
//! `system:serviceaccount:<ns>:<name>`. It authenticates user `system:serviceaccount:<ns>:<name>`
//! (uid: the service account uid claim) in groups `system:serviceaccounts` and
//! `system:serviceaccounts:<ns>`, with extra `authentication.kubernetes.io/credential-id` =
//! `JTI=<jti>`.
//!
//! Verification, in kube-apiserver's order: a token whose unverified `iss` is not the issuer's
//! (nor `kubernetes/serviceaccount` when legacy tokens are on, see [`super::legacy`]) or that is
//! not a compact JWS with `alg` ES256 or RS256 is no opinion (`alg: none`, `HS256`: no opinion,
//! so the chain refuses them as `invalid bearer token`); then an unknown `kid` (`invalid
//! signature, no keys found`), a bad signature or one made for another algorithm than the key's
//! (`invalid signature`), audiences that do not intersect the accepted ones (`token audiences
//! ["a"] is invalid for the target audiences ["b"]`; unlike upstream, a token without `aud` is
//! refused too), `nbf` in the future (`service account token is not valid yet`) and `exp` in the
//! past (`service account token has expired`), both with go-jose's one-minute leeway, are errors.
//! keyward has no ServiceAccount objects, so the service account itself is not looked up.
//!
//! Defaults: issuer [`DEFAULT_ISSUER`], accepted audiences the issuer (kube-apiserver's
//! `--api-audiences` default), lifetime [`DEFAULT_EXPIRATION`] (at least 10 minutes, at most 2^32
//! seconds, as TokenRequest validation says).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize};

use super::jwt::{self, Jws};
use super::{names, AuthnError, BearerToken, Identity, SecretLookup, TokenAuthenticator};
use crate::crypto::{SigningKey, VerifyingKey};
use crate::names::{is_dns1123_label, is_dns1123_subdomain};

/// The issuer (`iss`) keyward signs with unless configured otherwise; also the default accepted
/// audience.
pub const DEFAULT_ISSUER: &str = "https://keyward.local";
/// The issuer of legacy Secret-based tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// Lifetime of a token when the request gives none (TokenRequest's default, one hour).
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(3600);
/// Shortest lifetime a request may ask for.
pub const MIN_EXPIRATION: Duration = Duration::from_secs(600);
/// Longest lifetime a request may ask for (2^32 seconds).
pub const MAX_EXPIRATION: Duration = Duration::from_secs(1 << 32);
/// Clock skew allowed on `nbf`, `exp` and `iat` (go-jose's `DefaultLeeway`).
pub const LEEWAY: Duration = Duration::from_secs(60);

/// `system:serviceaccount:<namespace>:<name>` (`MakeUsername`).
pub fn username(namespace: &str, name: &str) -> String {
    format!("{}{namespace}:{name}", names::SERVICE_ACCOUNT_USER_PREFIX)
}

/// `system:serviceaccounts` and `system:serviceaccounts:<namespace>` (`MakeGroupNames`).
pub fn groups(namespace: &str) -> Vec<String> {
    vec![
        names::SYSTEM_SERVICE_ACCOUNTS.to_owned(),
        format!("{}:{namespace}", names::SYSTEM_SERVICE_ACCOUNTS),
    ]
}

/// (namespace, name) of a service account user name, if it is exactly
/// `system:serviceaccount:<ns>:<name>` with a valid namespace and name (`SplitUsername`).
pub fn split_username(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(names::SERVICE_ACCOUNT_USER_PREFIX)?;
    let (ns, name) = rest.split_once(':')?;
    (!name.contains(':') && is_dns1123_label(ns) && is_dns1123_subdomain(name))
        .then_some((ns, name))
}

/// A service account: namespace, name and uid ("" when unknown: keyward keeps no ServiceAccount
/// objects).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceAccountRef {
    /// Namespace (a DNS-1123 label).
    pub namespace: String,
    /// Name (a DNS-1123 subdomain).
    pub name: String,
    /// Uid, written in the token's `kubernetes.io.serviceaccount.uid` claim.
    pub uid: String,
}

impl ServiceAccountRef {
    pub(super) fn check(&self) -> Result<(), AuthnError> {
        if !is_dns1123_label(&self.namespace) {
            return Err(AuthnError::InvalidRequest(format!(
                "invalid namespace {:?}: must be a DNS-1123 label",
                self.namespace
            )));
        }
        if !is_dns1123_subdomain(&self.name) {
            return Err(AuthnError::InvalidRequest(format!(
                "invalid service account name {:?}: must be a DNS-1123 subdomain",
                self.name
            )));
        }
        Ok(())
    }
}

/// What `keyward create token` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Whose token.
    pub service_account: ServiceAccountRef,
    /// Audiences (`aud`); empty: the issuer's default audiences.
    pub audiences: Vec<String>,
    /// Lifetime ([`MIN_EXPIRATION`] to [`MAX_EXPIRATION`]).
    pub expiration: Duration,
}

/// An issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The JWT (redacted in `Debug`).
    pub token: BearerToken,
    /// Its `exp`.
    pub expiration: SystemTime,
    /// Its `jti`.
    pub jti: String,
    /// Its `aud`: the request's audiences, or the issuer's defaults.
    pub audiences: Vec<String>,
    /// Its lifetime (`exp` − `iat`): what was asked for, unless the server's most allowed is
    /// less.
    pub lifetime: Duration,
}

/// A JWT NumericDate: seconds since the epoch (a JSON number, fractions dropped as go-jose does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
struct NumericDate(i64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let f = f64::deserialize(d)?;
        Ok(NumericDate(f as i64))
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

/// `aud`: one string or a list of strings (RFC 7519 §4.1.3).
fn audience<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Aud>::deserialize(d)? {
        None => Vec::new(),
        Some(Aud::One(a)) => vec![a],
        Some(Aud::Many(v)) => v,
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Ref {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    uid: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct KubernetesClaim {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    namespace: String,
    #[serde(default)]
    serviceaccount: Ref,
}

/// The claims of a bound token, in the order Go's JSON encoder writes them (sorted).
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(default, deserialize_with = "audience")]
    aud: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<NumericDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<NumericDate>,
    #[serde(default)]
    iss: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    jti: String,
    #[serde(
        rename = "kubernetes.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    kubernetes: Option<KubernetesClaim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<NumericDate>,
    #[serde(default)]
    sub: String,
}

/// Issues service account tokens with one signing key.
#[derive(Debug, Clone)]
pub struct ServiceAccountIssuer {
    issuer: String,
    default_audiences: Vec<String>,
    jwks_uri: Option<String>,
    key: Arc<SigningKey>,
}

impl ServiceAccountIssuer {
    /// Signs with `key` as `issuer` (`iss`); tokens requested without audiences get
    /// `[issuer]`.
    pub fn new(issuer: impl Into<String>, key: Arc<SigningKey>) -> Self {
        let issuer = issuer.into();
        Self {
            default_audiences: vec![issuer.clone()],
            issuer,
            jwks_uri: None,
            key,
        }
    }

    /// Sets where the OpenID discovery document says the key set is (none: the API's own).
    pub fn with_jwks_uri(mut self, jwks_uri: Option<String>) -> Self {
        self.jwks_uri = jwks_uri;
        self
    }

    /// Where the OpenID discovery document says the key set is, when it is not the API's own
    /// `/openid/v1/jwks` (`--service-account-jwks-uri`).
    pub fn jwks_uri(&self) -> Option<&str> {
        self.jwks_uri.as_deref()
    }

    /// Sets the audiences of tokens requested without any.
    pub fn with_default_audiences(mut self, audiences: Vec<String>) -> Self {
        self.default_audiences = audiences;
        self
    }

    /// The issuer (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The audiences of tokens requested without any.
    pub fn default_audiences(&self) -> &[String] {
        &self.default_audiences
    }

    /// The public key that verifies this issuer's tokens.
    pub fn verifying_key(&self) -> &VerifyingKey {
        self.key.verifying_key()
    }

    /// A verifier accepting this issuer's tokens for its default audiences, with its key only.
    pub fn authenticator(&self) -> ServiceAccountAuthenticator {
        ServiceAccountAuthenticator::new(
            self.issuer.clone(),
            self.default_audiences.clone(),
            vec![self.verifying_key().clone()],
        )
    }

    /// Signs a token for `request`, valid from `now` for `request.expiration`.
    pub fn issue(
        &self,
        request: &TokenRequest,
        now: SystemTime,
    ) -> Result<IssuedToken, AuthnError> {
        let sa = &request.service_account;
        sa.check()?;
        if request.expiration < MIN_EXPIRATION {
            return Err(AuthnError::InvalidRequest(
                "may not specify a duration less than 10 minutes".into(),
            ));
        }
        if request.expiration > MAX_EXPIRATION {
            return Err(AuthnError::InvalidRequest(
                "may not specify a duration larger than 2^32 seconds".into(),
            ));
        }
        let audiences = if request.audiences.is_empty() {
            self.default_audiences.clone()
        } else {
            request.audiences.clone()
        };
        // Any audience is accepted, as upstream's `ValidateTokenRequest` accepts it (an empty
        // one names no server, so such a token authenticates nowhere); none at all only when
        // the server has no default.
        if audiences.is_empty() {
            return Err(AuthnError::InvalidRequest(
                "audiences must not be empty: the server has no default audience".into(),
            ));
        }
        let iat = unix_secs(now);
        let exp = iat + request.expiration.as_secs() as i64;
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = Claims {
            aud: audiences.clone(),
            exp: Some(NumericDate(exp)),
            iat: Some(NumericDate(iat)),
            iss: self.issuer.clone(),
            jti: jti.clone(),
            kubernetes: Some(KubernetesClaim {
                namespace: sa.namespace.clone(),
                serviceaccount: Ref {
                    name: sa.name.clone(),
                    uid: sa.uid.clone(),
                },
            }),
            nbf: Some(NumericDate(iat)),
            sub: username(&sa.namespace, &sa.name),
        };
        let token = jwt::sign(&self.key, &claims)?;
        Ok(IssuedToken {
            token: BearerToken(token),
            expiration: UNIX_EPOCH + Duration::from_secs(exp.max(0) as u64),
            jti,
            audiences,
            lifetime: Duration::from_secs(request.expiration.as_secs()),
        })
    }

    /// Signs a legacy token (no expiry, no audience) for the Secret `secret_name` of `sa`; see
    /// [`super::legacy`].
    pub fn issue_legacy(
        &self,
        sa: &ServiceAccountRef,
        secret_name: &str,
    ) -> Result<BearerToken, AuthnError> {
        sa.check()?;
        let claims = super::legacy::LegacyClaims::new(sa, secret_name);
        Ok(BearerToken(jwt::sign(&self.key, &claims)?))
    }
}

/// Go's `%q` of a string list: `["a" "b"]`.
fn go_quote_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(" "))
}

fn rejected(msg: impl Into<String>) -> AuthnError {
    AuthnError::Rejected(msg.into())
}

/// Verifies service account tokens: this issuer's bound tokens and, with
/// [`ServiceAccountAuthenticator::with_legacy_tokens`], legacy Secret-based tokens.
#[derive(Clone)]
pub struct ServiceAccountAuthenticator {
    /// The issuers accepted: the one that signs first, then any others accepted.
    issuers: Vec<String>,
    audiences: Vec<String>,
    keys: Vec<VerifyingKey>,
    secrets: Option<Arc<dyn SecretLookup>>,
}

impl std::fmt::Debug for ServiceAccountAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountAuthenticator")
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("keys", &self.keys)
            .field("legacy_tokens", &self.secrets.is_some())
            .finish()
    }
}

impl ServiceAccountAuthenticator {
    /// Accepts tokens of `issuer` (which must not be [`LEGACY_ISSUER`]) whose `aud` includes
    /// one of `audiences`, signed by one of `keys` (the current key and any retired ones still
    /// trusted).
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>, keys: Vec<VerifyingKey>) -> Self {
        Self {
            issuers: vec![issuer.into()],
            audiences,
            keys,
            secrets: None,
        }
    }

    /// Also accepts tokens whose `iss` is one of `others` (kube-apiserver's
    /// `--service-account-issuer` given more than once: the first signs, all are accepted, so
    /// that tokens of an issuer being replaced keep working).
    pub fn with_other_issuers(mut self, others: &[String]) -> Self {
        for o in others {
            if !self.issuers.contains(o) && o != LEGACY_ISSUER {
                self.issuers.push(o.clone());
            }
        }
        self
    }

    /// Also accepts legacy tokens (issuer `kubernetes/serviceaccount`) while the Secret they came
    /// from exists in `secrets` and still holds them.
    pub fn with_legacy_tokens(mut self, secrets: Arc<dyn SecretLookup>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// [`TokenAuthenticator::authenticate_token`] at the time `now`.
    pub async fn authenticate_at(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<Option<Identity>, AuthnError> {
        let Some(iss) = jwt::peek_issuer(token) else {
            return Ok(None);
        };
        let legacy = match &self.secrets {
            Some(secrets) if iss == LEGACY_ISSUER => Some(secrets),
            _ if self.issuers.contains(&iss) => None,
            _ => return Ok(None),
        };
        let Some(jws) = Jws::parse(token) else {
            return Ok(None);
        };
        self.verify_signature(&jws)?;
        let identity = match legacy {
            Some(secrets) => {
                super::legacy::validate(token, jws.payload(), secrets.as_ref(), now).await?
            }
            None => self.validate_bound(jws.payload(), now)?,
        };
        Ok(Some(identity.with_authenticated_group()))
    }

    /// The keys of the token's `kid` (all keys without one) must include one that verifies it.
    fn verify_signature(&self, jws: &Jws<'_>) -> Result<(), AuthnError> {
        let keys: Vec<&VerifyingKey> = self
            .keys
            .iter()
            .filter(|k| jws.kid.is_empty() || k.key_id() == jws.kid)
            .collect();
        if keys.is_empty() {
            return Err(rejected("invalid signature, no keys found"));
        }
        if !keys.iter().any(|k| jws.verified_by(k)) {
            return Err(rejected("invalid signature"));
        }
        Ok(())
    }

    /// The checks after the signature for a bound token.
    fn validate_bound(&self, payload: &[u8], now: SystemTime) -> Result<Identity, AuthnError> {
        let claims: Claims = serde_json::from_slice(payload)
            .map_err(|_| rejected("service account token claims could not be parsed"))?;
        if !self.issuers.contains(&claims.iss) {
            return Err(rejected(format!(
                "token issuer {:?} is invalid",
                claims.iss
            )));
        }
        if !claims.aud.iter().any(|a| self.audiences.contains(a)) {
            return Err(rejected(format!(
                "token audiences {} is invalid for the target audiences {}",
                go_quote_list(&claims.aud),
                go_quote_list(&self.audiences)
            )));
        }
        let now = unix_secs(now);
        let leeway = LEEWAY.as_secs() as i64;
        if claims.nbf.is_some_and(|nbf| now + leeway < nbf.0) {
            return Err(rejected("service account token is not valid yet"));
        }
        if claims.exp.is_some_and(|exp| now - leeway > exp.0) {
            return Err(rejected("service account token has expired"));
        }
        if claims.iat.is_some_and(|iat| now + leeway < iat.0) {
            return Err(rejected(
                "service account token claims could not be validated due to unexpected validation error",
            ));
        }
        let k = claims.kubernetes.unwrap_or_default();
        if k.namespace.is_empty() {
            return Err(rejected("namespace claim is missing"));
        }
        if k.serviceaccount.name.is_empty() {
            return Err(rejected("serviceAccountName claim is missing"));
        }
        if split_username(&claims.sub) != Some((&k.namespace, &k.serviceaccount.name)) {
            return Err(rejected("sub claim is invalid"));
        }
        let mut id = Identity::new(claims.sub, k.serviceaccount.uid, groups(&k.namespace));
        if !claims.jti.is_empty() {
            id.extra.insert(
                names::CREDENTIAL_ID_KEY.to_owned(),
                vec![format!("JTI={}", claims.jti)],
            );
        }
        Ok(id)
    }
}

#[async_trait::async_trait]
impl TokenAuthenticator for ServiceAccountAuthenticator {
    async fn authenticate_token(
        &self,
        token: &BearerToken,
    ) -> Result<Option<Identity>, AuthnError> {
        self.authenticate_at(token.expose(), SystemTime::now())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
    use base64::Engine;

    fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    fn request(ns: &str, name: &str, aud: &[&str], secs: u64) -> TokenRequest {
        TokenRequest {
            service_account: ServiceAccountRef {
                namespace: ns.into(),
                name: name.into(),
                uid: "sa-uid".into(),
            },
            audiences: aud.iter().map(|s| s.to_string()).collect(),
            expiration: Duration::from_secs(secs),
        }
    }

    fn issuer() -> ServiceAccountIssuer {
        ServiceAccountIssuer::new(
            DEFAULT_ISSUER,
            Arc::new(SigningKey::generate_es256().unwrap()),
        )
    }

    fn payload(token: &str) -> serde_json::Value {
        let p = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&B64URL.decode(p).unwrap()).unwrap()
    }

    fn err(r: Result<Option<Identity>, AuthnError>) -> String {
        r.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn issue_and_verify() {
        let iss = issuer();
        let t0 = 1_800_000_000;
        let tok = iss
            .issue(&request("prod", "app", &[], 3600), at(t0))
            .unwrap();
        assert_eq!(tok.expiration, at(t0 + 3600));
        let p = payload(tok.token.expose());
        assert_eq!(
            p,
            serde_json::json!({
                "aud": [DEFAULT_ISSUER], "exp": t0 + 3600, "iat": t0, "iss": DEFAULT_ISSUER,
                "jti": tok.jti, "nbf": t0, "sub": "system:serviceaccount:prod:app",
                "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "app", "uid": "sa-uid"}},
            })
        );
        assert!(uuid::Uuid::parse_str(&tok.jti).is_ok());
        let auth = iss.authenticator();
        let id = auth
            .authenticate_at(tok.token.expose(), at(t0 + 10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(id.name, "system:serviceaccount:prod:app");
        assert_eq!(id.uid, "sa-uid");
        assert_eq!(
            id.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:prod",
                names::SYSTEM_AUTHENTICATED
            ]
        );
        assert_eq!(
            id.extra[names::CREDENTIAL_ID_KEY],
            [format!("JTI={}", tok.jti)]
        );
        assert!(!format!("{tok:?}").contains(tok.token.expose()));
        // Within the leeway on both ends; outside it, upstream's messages.
        let ok = |t| auth.authenticate_at(tok.token.expose(), at(t));
        assert!(ok(t0 - 60).await.unwrap().is_some());
        assert!(ok(t0 + 3600 + 60).await.unwrap().is_some());
        assert_eq!(
            err(ok(t0 - 61).await),
            "service account token is not valid yet"
        );
        assert_eq!(
            err(ok(t0 + 3661).await),
            "service account token has expired"
        );
    }

    #[tokio::test]
    async fn refusals() {
        let iss = issuer();
        let t0 = 1_800_000_000;
        let tok = iss
            .issue(&request("prod", "app", &["vault", "keyward"], 3600), at(t0))
            .unwrap();
        let token = tok.token.expose();
        let check = |auth: &ServiceAccountAuthenticator, t: &str| {
            let (auth, t) = (auth.clone(), t.to_owned());
            async move { auth.authenticate_at(&t, at(t0)).await }
        };
        // Audiences must intersect.
        let keys = vec![iss.verifying_key().clone()];
        let keyward =
            ServiceAccountAuthenticator::new(DEFAULT_ISSUER, vec!["keyward".into()], keys.clone());
        assert!(check(&keyward, token).await.unwrap().is_some());
        let other = ServiceAccountAuthenticator::new(
            DEFAULT_ISSUER,
            vec!["x".into(), "y".into()],
            keys.clone(),
        );
        assert_eq!(
            err(check(&other, token).await),
            r#"token audiences ["vault" "keyward"] is invalid for the target audiences ["x" "y"]"#
        );
        // Another issuer: no opinion; unless it is accepted too (a later
        // --service-account-issuer), as when the issuer is being replaced.
        let elsewhere = ServiceAccountAuthenticator::new(
            "https://elsewhere",
            vec!["keyward".into()],
            keys.clone(),
        );
        assert!(check(&elsewhere, token).await.unwrap().is_none());
        let moving = elsewhere.with_other_issuers(&[DEFAULT_ISSUER.to_owned()]);
        assert!(check(&moving, token).await.unwrap().is_some());
        // Another key with the same issuer: unknown kid; without kid, a bad signature.
        let stranger = issuer();
        let forged = stranger
            .issue(&request("prod", "app", &["keyward"], 3600), at(t0))
            .unwrap();
        assert_eq!(
            err(check(&keyward, forged.token.expose()).await),
            "invalid signature, no keys found"
        );
        let (h, rest) = forged.token.expose().split_once('.').unwrap();
        let mut header: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(h).unwrap()).unwrap();
        header.as_object_mut().unwrap().remove("kid");
        let no_kid = format!("{}.{rest}", B64URL.encode(header.to_string()));
        assert_eq!(err(check(&keyward, &no_kid).await), "invalid signature");
        // A changed claim breaks the signature.
        let (h, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let mut p = payload(token);
        p["sub"] = "system:serviceaccount:prod:admin".into();
        let tampered = format!("{h}.{}.{sig}", B64URL.encode(p.to_string()));
        assert_eq!(err(check(&keyward, &tampered).await), "invalid signature");
        // Garbage is no opinion.
        assert!(check(&keyward, "not.a.jwt").await.unwrap().is_none());
        assert!(check(&keyward, "abcdef.0123456789abcdef")
            .await
            .unwrap()
            .is_none());
    }

    #[test]
    fn request_validation() {
        let iss = issuer();
        let now = SystemTime::now();
        let e = |r: TokenRequest| iss.issue(&r, now).unwrap_err().to_string();
        assert_eq!(
            e(request("prod", "app", &[], 599)),
            "may not specify a duration less than 10 minutes"
        );
        assert_eq!(
            e(request("prod", "app", &[], (1 << 32) + 1)),
            "may not specify a duration larger than 2^32 seconds"
        );
        assert!(iss.issue(&request("prod", "app", &[], 600), now).is_ok());
        assert!(e(request("Prod", "app", &[], 600)).contains("namespace"));
        assert!(e(request("prod", "a:b", &[], 600)).contains("service account name"));
        // An empty audience is issued, as upstream issues it, and authenticates nowhere.
        let empty = iss.issue(&request("prod", "app", &[""], 600), now).unwrap();
        assert_eq!(
            payload(empty.token.expose())["aud"],
            serde_json::json!([""])
        );
        let none = ServiceAccountIssuer::new("i", Arc::new(SigningKey::generate_es256().unwrap()))
            .with_default_audiences(vec![]);
        assert!(none.issue(&request("prod", "app", &[], 600), now).is_err());
    }

    #[test]
    fn usernames() {
        assert_eq!(username("ns", "sa"), "system:serviceaccount:ns:sa");
        assert_eq!(
            groups("ns"),
            ["system:serviceaccounts", "system:serviceaccounts:ns"]
        );
        assert_eq!(
            split_username("system:serviceaccount:ns:sa"),
            Some(("ns", "sa"))
        );
        for bad in [
            "system:serviceaccount:ns",
            "system:serviceaccount:ns:sa:x",
            "system:serviceaccount:NS:sa",
            "system:serviceaccount::sa",
            "system:serviceaccounts:ns:sa",
            "alice",
        ] {
            assert_eq!(split_username(bad), None, "{bad}");
        }
    }

    #[derive(Deserialize)]
    struct Vectors {
        issuer: String,
        audience: String,
        iat: i64,
        exp: i64,
        keys: std::collections::BTreeMap<String, VectorKey>,
        tokens: Vec<VectorToken>,
    }

    #[derive(Deserialize)]
    struct VectorKey {
        spki: String,
        pkcs8: String,
    }

    #[derive(Deserialize)]
    struct VectorToken {
        name: String,
        token: String,
        key: String,
        valid: bool,
    }

    fn vectors() -> Vectors {
        serde_json::from_str(include_str!("../../tests/data/jwt_vectors.json")).unwrap()
    }

    /// Tokens built by an independent implementation (tests/python/jwt_vectors.py: Python
    /// `cryptography`, no JWT library): the good ones verify with their claims, every bad one
    /// (other audience, none, `alg: none`, HS256 keyed with the public key, RSA signature under
    /// an ES256 header) is refused, and flipping any bit of a good signature breaks it.
    #[tokio::test]
    async fn independent_vectors() {
        let v = vectors();
        let keys: Vec<VerifyingKey> = v
            .keys
            .values()
            .map(|k| VerifyingKey::from_spki_der(&B64.decode(&k.spki).unwrap()).unwrap())
            .collect();
        let auth = ServiceAccountAuthenticator::new(&v.issuer, vec![v.audience.clone()], keys);
        let now = at(v.iat + 30);
        for t in &v.tokens {
            let got = auth.authenticate_at(&t.token, now).await;
            if !t.valid {
                assert!(!matches!(got, Ok(Some(_))), "{}: {got:?}", t.name);
                continue;
            }
            let id = got.unwrap_or_else(|e| panic!("{}: {e}", t.name)).unwrap();
            assert_eq!(id.name, "system:serviceaccount:prod:app", "{}", t.name);
            assert_eq!(id.uid, "5e7c2a40-aaaa-4bbb-8ccc-dddddddddddd");
            assert_eq!(
                id.extra[names::CREDENTIAL_ID_KEY],
                ["JTI=0b0c7a5e-1111-4222-8333-444455556666"]
            );
            let late = auth.authenticate_at(&t.token, at(v.exp + 61)).await;
            assert_eq!(err(late), "service account token has expired");
            let (head, sig) = t.token.rsplit_once('.').unwrap();
            let sig = B64URL.decode(sig).unwrap();
            for i in (0..sig.len()).step_by(7) {
                let mut bad = sig.clone();
                bad[i] ^= 0x10;
                let forged = format!("{head}.{}", B64URL.encode(&bad));
                let r = auth.authenticate_at(&forged, now).await;
                assert_eq!(err(r), "invalid signature", "{} byte {i}", t.name);
            }
        }
        let by_name = |n: &str| v.tokens.iter().find(|t| t.name == n).unwrap();
        let r = auth.authenticate_at(&by_name("alg-none").token, now).await;
        assert!(r.unwrap().is_none(), "alg none: not a token keyward reads");
        let r = auth
            .authenticate_at(&by_name("hs256-public-key-as-secret").token, now)
            .await;
        assert!(r.unwrap().is_none());
        let r = auth
            .authenticate_at(&by_name("alg-confusion-rs-as-es").token, now)
            .await;
        assert_eq!(err(r), "invalid signature");
        let r = auth
            .authenticate_at(&by_name("es256-no-audience").token, now)
            .await;
        assert_eq!(
            err(r),
            r#"token audiences [] is invalid for the target audiences ["keyward-test"]"#
        );
        assert_eq!(by_name("rs256").key, "rs256");
    }

    /// The other direction: tokens keyward signs (ES256 generated here, RS256 from the vector
    /// file's key) verify with Python `cryptography` (tests/python/jwt_vectors.py verify).
    #[test]
    fn python_verifies_keyward_tokens() {
        use std::io::Write;
        let v = vectors();
        let rsa = SigningKey::from_pkcs8_der(&B64.decode(&v.keys["rs256"].pkcs8).unwrap()).unwrap();
        let ec = SigningKey::from_pkcs8_der(&B64.decode(&v.keys["es256"].pkcs8).unwrap()).unwrap();
        assert_eq!(
            B64.encode(rsa.verifying_key().spki_der()),
            v.keys["rs256"].spki
        );
        assert_eq!(
            B64.encode(ec.verifying_key().spki_der()),
            v.keys["es256"].spki
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/jwt_vectors.py");
        let python = |args: &[&str], input: &str| {
            let mut child = std::process::Command::new("python3")
                .args([&[script][..], args].concat())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3 (python3 -m pip install -r tests/python/requirements.txt)");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "python {args:?}: {stdout}");
            stdout
        };
        for key in [rsa, SigningKey::generate_es256().unwrap()] {
            let spki = B64.encode(key.verifying_key().spki_der());
            // The key as the JWKS document serves it is the same key to another implementation.
            let jwk = key.verifying_key().jwk().to_string();
            assert_eq!(python(&["jwk", &spki], &jwk), "ok\n");
            let iss = ServiceAccountIssuer::new("https://issuer.example", Arc::new(key));
            let tok = iss
                .issue(&request("prod", "app", &["a"], 600), SystemTime::now())
                .unwrap();
            let stdout = python(&["verify", &spki], tok.token.expose());
            let claims: serde_json::Value =
                serde_json::from_str(stdout.strip_prefix("ok ").unwrap()).unwrap();
            assert_eq!(claims["sub"], "system:serviceaccount:prod:app");
        }
    }
}
