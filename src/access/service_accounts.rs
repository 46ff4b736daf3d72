//! Service accounts on a server: the token issuer, whose ES256 signing key is created on first
//! use and kept sealed ([`SealedKeys`]); the verifier of its tokens in the bearer-token chain;
//! and the store's create hook that fills `kubernetes.io/service-account-token` Secrets
//! (`token`, `namespace`, `ca.crt`), whose token authenticates until the Secret is deleted.
//!
//! The key is created the first time something needs to sign (a TokenRequest, or creating a
//! service-account-token Secret), not at start, so a server that never issues a token writes
//! nothing. Until then no token can verify, and none is accepted.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::keys::{SealedKeys, SERVICE_ACCOUNT_SIGNING_KEY};
use super::AccessError;
use crate::access::secret_attributes;
use crate::audit::{AuditObject, Auditor, Peer, RequestInfo, ResponseStatus};
use crate::authn::legacy::{TokenSecretFiller, TOKEN_SECRET_TYPE};
use crate::authn::serviceaccount::{ServiceAccountAuthenticator, ServiceAccountIssuer};
use crate::authn::{names, AuthnError, BearerToken, Identity, SecretLookup, TokenAuthenticator};
use crate::authz::{verbs as kverbs, Decision};
use crate::crypto::SigningKey;
use crate::store::{CreateHook, Secret, Store};

/// How service account tokens are issued and accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountSettings {
    /// `iss` of issued tokens (the first `--service-account-issuer`).
    pub issuer: String,
    /// Other issuers whose tokens are accepted (the later `--service-account-issuer`s).
    pub other_issuers: Vec<String>,
    /// Audiences accepted, and given to tokens requested without any (`--api-audiences`;
    /// empty: the issuer).
    pub audiences: Vec<String>,
    /// PEM written to `ca.crt` of service-account-token Secrets, if the server has one.
    pub ca_cert: Option<Vec<u8>>,
    /// `jwks_uri` of the OpenID discovery document (`--service-account-jwks-uri`, an `https`
    /// URL); none: the Kubernetes API's own `/openid/v1/jwks`.
    pub jwks_uri: Option<String>,
    /// The longest lifetime a requested token gets (`--service-account-max-token-expiration`):
    /// a longer request is shortened to it, as kube-apiserver's TokenRequest does. None: the
    /// API's own limit of 2^32 seconds.
    pub max_expiration: Option<std::time::Duration>,
}

impl Default for ServiceAccountSettings {
    /// Issuer [`crate::authn::serviceaccount::DEFAULT_ISSUER`], audiences the issuer, no CA.
    fn default() -> Self {
        Self {
            issuer: crate::authn::serviceaccount::DEFAULT_ISSUER.to_owned(),
            other_issuers: Vec::new(),
            audiences: Vec::new(),
            ca_cert: None,
            jwks_uri: None,
            max_expiration: None,
        }
    }
}

/// The store's create hook: fills service-account-token Secrets once the signing key exists
/// (the access layer makes sure it does before such a create), leaves other Secrets alone.
#[derive(Clone, Default)]
pub struct TokenSecretHook(Arc<ArcSwapOption<TokenSecretFiller>>);

impl std::fmt::Debug for TokenSecretHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSecretHook(ready: {})", self.0.load().is_some())
    }
}

impl CreateHook for TokenSecretHook {
    fn applies_to(&self, secret: &Secret) -> bool {
        secret.type_ == TOKEN_SECRET_TYPE
    }

    fn on_create(&self, secret: &mut Secret) -> Result<(), String> {
        if !self.applies_to(secret) {
            return Ok(());
        }
        match self.0.load_full() {
            Some(filler) => filler.on_create(secret),
            None => Err("the service account signing key is not available".to_owned()),
        }
    }
}

/// The service account issuer and verifier of one server.
pub struct ServiceAccounts {
    keys: SealedKeys,
    settings: ServiceAccountSettings,
    store: Arc<Store>,
    auditor: Auditor,
    issuer: ArcSwapOption<ServiceAccountIssuer>,
    verifier: ArcSwapOption<ServiceAccountAuthenticator>,
    hook: TokenSecretHook,
    creating: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ServiceAccounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccounts")
            .field("issuer", &self.settings.issuer)
            .field("audiences", &self.audiences())
            .field("key_ready", &self.issuer.load().is_some())
            .finish()
    }
}

impl ServiceAccounts {
    /// Service accounts of `store`, filling Secrets through `hook` (the hook given to the
    /// store), recording the writes legacy tokens make with `auditor`; reads the signing key if
    /// it exists (creating nothing).
    pub async fn load(
        store: Arc<Store>,
        hook: TokenSecretHook,
        settings: ServiceAccountSettings,
        auditor: Auditor,
    ) -> Result<Arc<Self>, AccessError> {
        let sa = Arc::new(Self {
            keys: SealedKeys::new(store.clone()),
            settings,
            store,
            auditor,
            issuer: ArcSwapOption::empty(),
            verifier: ArcSwapOption::empty(),
            hook,
            creating: tokio::sync::Mutex::new(()),
        });
        // A key that cannot be read now (e.g. the KMS plugin is not up yet) is read again when
        // a token needs it: the server starts, as it does when its plugin is down.
        if let Err(e) = sa.load_existing().await {
            tracing::warn!(error = %e, "service account signing key not loaded yet; service account tokens are refused until it can be read");
        }
        Ok(sa)
    }

    /// Installs the signing key if it exists (creating nothing); `Ok(false)` if there is none.
    async fn load_existing(&self) -> Result<bool, AccessError> {
        if self.issuer.load().is_some() {
            return Ok(true);
        }
        let _one = self.creating.lock().await;
        if self.issuer.load().is_some() {
            return Ok(true);
        }
        match self.keys.load(SERVICE_ACCOUNT_SIGNING_KEY).await? {
            Some(der) => self.install(&der).map(|_| true),
            None => Ok(false),
        }
    }

    /// The accepted audiences (the issuer when none were configured).
    pub fn audiences(&self) -> Vec<String> {
        if self.settings.audiences.is_empty() {
            vec![self.settings.issuer.clone()]
        } else {
            self.settings.audiences.clone()
        }
    }

    /// The issuer name.
    pub fn issuer_name(&self) -> &str {
        &self.settings.issuer
    }

    /// The lifetime a token requested for `requested` gets: at most the server's most allowed
    /// (a request beyond the API's own limits is left for the issuer to refuse).
    pub fn lifetime(&self, requested: std::time::Duration) -> std::time::Duration {
        use crate::authn::serviceaccount::MAX_EXPIRATION;
        match self.settings.max_expiration {
            Some(max) if requested > max && requested <= MAX_EXPIRATION => max,
            _ => requested,
        }
    }

    fn install(&self, der: &[u8]) -> Result<Arc<ServiceAccountIssuer>, AccessError> {
        let key = SigningKey::from_pkcs8_der(der).map_err(|e| AccessError::KeyMaterial {
            name: SERVICE_ACCOUNT_SIGNING_KEY.to_owned(),
            reason: format!("not a signing key: {e}"),
        })?;
        let issuer = Arc::new(
            ServiceAccountIssuer::new(self.settings.issuer.clone(), Arc::new(key))
                .with_default_audiences(self.audiences())
                .with_jwks_uri(self.settings.jwks_uri.clone()),
        );
        let secrets = Arc::new(LegacyTokenSecrets {
            store: self.store.clone(),
            auditor: self.auditor.clone(),
        });
        self.verifier.store(Some(Arc::new(
            issuer
                .authenticator()
                .with_other_issuers(&self.settings.other_issuers)
                .with_legacy_tokens(secrets),
        )));
        self.hook.0.store(Some(Arc::new(TokenSecretFiller::new(
            (*issuer).clone(),
            self.settings.ca_cert.clone(),
        ))));
        self.issuer.store(Some(issuer.clone()));
        Ok(issuer)
    }

    /// The issuer, creating and sealing its signing key on first use.
    pub async fn issuer(&self) -> Result<Arc<ServiceAccountIssuer>, AccessError> {
        if let Some(i) = self.issuer.load_full() {
            return Ok(i);
        }
        let _one = self.creating.lock().await;
        if let Some(i) = self.issuer.load_full() {
            return Ok(i);
        }
        let der = self
            .keys
            .load_or_create(SERVICE_ACCOUNT_SIGNING_KEY, || {
                Ok(SigningKey::generate_es256()?.to_pkcs8_der())
            })
            .await?;
        self.install(&der)
    }
}

#[async_trait::async_trait]
impl TokenAuthenticator for ServiceAccounts {
    /// No opinion until the signing key exists (no token can have been issued; another replica
    /// may create it, so it is looked for again); then the issuer's tokens and legacy Secret
    /// tokens, as [`ServiceAccountAuthenticator`] checks them.
    async fn authenticate_token(
        &self,
        token: &BearerToken,
    ) -> Result<Option<Identity>, AuthnError> {
        if self.verifier.load().is_none() {
            if let Err(e) = self.load_existing().await {
                return Err(AuthnError::Rejected(format!(
                    "service account tokens cannot be checked: {e}"
                )));
            }
        }
        match self.verifier.load_full() {
            Some(v) => v.authenticate_token(token).await,
            None => Ok(None),
        }
    }
}

/// The Secrets legacy tokens are checked against: the store, and the audit log for the one
/// write a legacy token makes (its Secret's last-used label), recorded as kube-apiserver records
/// the patch it sends itself: user `system:apiserver` in `system:masters`, verb `patch`, the
/// merge patch as request object.
struct LegacyTokenSecrets {
    store: Arc<Store>,
    auditor: Auditor,
}

#[async_trait::async_trait]
impl SecretLookup for LegacyTokenSecrets {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, AuthnError> {
        self.store.get_secret(namespace, name).await
    }

    async fn label_secret(
        &self,
        secret: &Secret,
        key: &str,
        value: &str,
    ) -> Result<(), AuthnError> {
        let m = &secret.metadata;
        let failed = |reason: String| AuthnError::lookup(&m.namespace, &m.name, reason);
        let apiserver = Identity::new(
            names::SYSTEM_APISERVER,
            "",
            vec![
                names::SYSTEM_MASTERS.to_owned(),
                names::SYSTEM_AUTHENTICATED.to_owned(),
            ],
        );
        let attrs = secret_attributes(apiserver, kverbs::PATCH, &m.namespace, &m.name);
        let uri = format!("/api/v1/namespaces/{}/secrets/{}", m.namespace, m.name);
        let mut info = RequestInfo::new(uri, Peer::Unknown);
        info.user_agent = format!("keyward/{}", env!("CARGO_PKG_VERSION"));
        let mut rec = self.auditor.begin(&attrs, info);
        let patch = serde_json::json!({"metadata": {"labels": {key: value}, "uid": m.uid}});
        let allowed = Decision::Allow {
            reason: String::new(),
        };
        rec.request_received(&allowed, Some(AuditObject::patch(patch)))
            .await
            .map_err(|e| failed(format!("its audit event not written: {e}")))?;
        let written = self
            .store
            .update(crate::authn::labelled(secret, key, value), false)
            .await
            .map_err(AccessError::from);
        let status = match &written {
            Ok(_) => ResponseStatus::success(200),
            Err(e) => e.audit_status(),
        };
        let body = written.as_ref().ok().map(AuditObject::secret);
        rec.response_complete(status, body)
            .await
            .map_err(|e| failed(format!("its audit event not written: {e}")))?;
        written
            .map(drop)
            .map_err(|e| failed(format!("writing its label {key}: {e}")))
    }
}
