//! Legacy service account token Secrets (`kubernetes.io/service-account-token`), the flow the
//! Kubernetes Secret documentation describes: create a Secret of that type with annotation
//! `kubernetes.io/service-account.name: <sa>`, and the server fills it in; delete it to revoke
//! the token.
//!
//! On create ([`TokenSecretFiller`], a [`CreateHook`] the store runs), like kube-controller-
//! manager's token controller: `data.token` (if empty) gets a JWT of the legacy form —
//! issuer `kubernetes/serviceaccount`, claims `sub` and the flat
//! `kubernetes.io/serviceaccount/{namespace,secret.name,service-account.name,service-account.uid}`,
//! no `exp` and no `aud` — signed with the service account signing key; `data.namespace` (if
//! empty) gets the namespace; `data.ca.crt` gets the server's CA certificate when it has one
//! (otherwise it is left alone). The uid claim is the `kubernetes.io/service-account.uid`
//! annotation, or empty: keyward has no ServiceAccount objects, so unlike upstream an empty uid
//! claim is accepted.
//!
//! The legacy form was chosen over a bound token without expiry because it is what
//! Kubernetes clients and the documentation expect in such a Secret, and because its issuer
//! tells the verifier to look the Secret up.
//!
//! On use ([`super::serviceaccount::ServiceAccountAuthenticator::with_legacy_tokens`], after the
//! signature), as kube-apiserver's legacy validator with `--service-account-lookup`: the claims
//! must be present and `sub` must match them; the Secret must exist, not marked for deletion
//! (`Token has been invalidated`), must hold exactly this token, compared in constant time
//! (`Token does not match server's copy`), and must not carry the label
//! `kubernetes.io/legacy-token-invalid-since`.
//! Deleting the Secret therefore revokes the token at once. A token that matches is tracked as
//! kube-apiserver tracks it: its Secret is labelled `kubernetes.io/legacy-token-last-used` with
//! the day (UTC), at most once a day, through [`SecretLookup::label_secret`] (on a server, a
//! write recorded in the audit log as kube-apiserver records the patch it sends itself: user
//! `system:apiserver`, verb `patch`). The request's audit events carry
//! `authentication.k8s.io/legacy-token-manual-secret: NAME` (or, refused for the label above,
//! `authentication.k8s.io/legacy-token-invalidated: NAME/NAMESPACE`), as kube-apiserver's.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::serviceaccount::{
    groups, split_username, ServiceAccountIssuer, ServiceAccountRef, LEGACY_ISSUER,
};
use super::{AuthnError, Identity, SecretLookup};
use crate::crypto::ct_eq;
use crate::store::model::SecretBytes;
use crate::store::{CreateHook, Secret};

/// The Secret type whose tokens the server fills.
pub const TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";
/// Annotation naming the service account.
pub const SERVICE_ACCOUNT_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// Annotation giving the service account's uid.
pub const SERVICE_ACCOUNT_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
/// Data key of the token.
pub const TOKEN_KEY: &str = "token";
/// Data key of the namespace.
pub const NAMESPACE_KEY: &str = "namespace";
/// Data key of the server's CA certificate (PEM).
pub const CA_CERT_KEY: &str = "ca.crt";
/// A Secret with this label no longer authenticates.
pub const INVALID_SINCE_LABEL: &str = "kubernetes.io/legacy-token-invalid-since";
/// The day (UTC, `YYYY-MM-DD`) a Secret's token was last presented.
pub const LAST_USED_LABEL: &str = "kubernetes.io/legacy-token-last-used";
/// Audit annotation of a request authenticated by a legacy token: the Secret's name.
pub const MANUAL_SECRET_ANNOTATION: &str = "authentication.k8s.io/legacy-token-manual-secret";
/// Audit annotation of a request authenticated by a token without audiences (every legacy
/// token): its subject, as kube-apiserver's service account token authenticator adds it.
pub const LEGACY_TOKEN_ANNOTATION: &str = "authentication.k8s.io/legacy-token";
/// Audit annotation of a request refused because its legacy token's Secret was marked
/// invalid: `NAME/NAMESPACE`.
pub const INVALIDATED_ANNOTATION: &str = "authentication.k8s.io/legacy-token-invalidated";

/// The claims of a legacy token (`legacyPrivateClaims` and `sub`), in Go's sorted order.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LegacyClaims {
    #[serde(default)]
    iss: String,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace", default)]
    namespace: String,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name", default)]
    secret_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name", default)]
    service_account_name: String,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid", default)]
    service_account_uid: String,
    #[serde(default)]
    sub: String,
}

impl LegacyClaims {
    /// `LegacyClaims(serviceAccount, secret)`.
    pub(crate) fn new(sa: &ServiceAccountRef, secret_name: &str) -> Self {
        Self {
            iss: LEGACY_ISSUER.to_owned(),
            namespace: sa.namespace.clone(),
            secret_name: secret_name.to_owned(),
            service_account_name: sa.name.clone(),
            service_account_uid: sa.uid.clone(),
            sub: super::serviceaccount::username(&sa.namespace, &sa.name),
        }
    }
}

fn rejected(msg: impl Into<String>) -> AuthnError {
    AuthnError::Rejected(msg.into())
}

/// Checks a legacy token whose signature is already verified, presented at `now`: `token` as
/// presented and its `payload`. Returns the identity without `system:authenticated`.
pub(crate) async fn validate(
    token: &str,
    payload: &[u8],
    secrets: &dyn SecretLookup,
    now: SystemTime,
) -> Result<Identity, AuthnError> {
    let c: LegacyClaims =
        serde_json::from_slice(payload).map_err(|_| rejected("Token could not be validated."))?;
    if c.iss != LEGACY_ISSUER {
        return Err(rejected(format!("token issuer {:?} is invalid", c.iss)));
    }
    if c.sub.is_empty() {
        return Err(rejected("sub claim is missing"));
    }
    if c.namespace.is_empty() {
        return Err(rejected("namespace claim is missing"));
    }
    if c.secret_name.is_empty() {
        return Err(rejected("secretName claim is missing"));
    }
    if c.service_account_name.is_empty() {
        return Err(rejected("serviceAccountName claim is missing"));
    }
    if split_username(&c.sub) != Some((&c.namespace, &c.service_account_name)) {
        return Err(rejected("sub claim is invalid"));
    }
    let Some(secret) = secrets.get_secret(&c.namespace, &c.secret_name).await? else {
        tracing::debug!(namespace = %c.namespace, secret = %c.secret_name, service_account = %c.service_account_name, "token Secret not found");
        return Err(rejected("Token has been invalidated"));
    };
    if !secret.metadata.deletion_timestamp.is_empty() {
        tracing::debug!(namespace = %c.namespace, secret = %c.secret_name, service_account = %c.service_account_name, "token Secret is being deleted");
        return Err(rejected("Token has been invalidated"));
    }
    let stored = secret
        .data
        .get(TOKEN_KEY)
        .map(SecretBytes::as_slice)
        .unwrap_or_default();
    if !ct_eq(stored, token.as_bytes()) {
        tracing::debug!(namespace = %c.namespace, secret = %c.secret_name, service_account = %c.service_account_name, "token contents no longer match the Secret");
        return Err(rejected("Token does not match server's copy"));
    }
    stamp_last_used(&secret, secrets, now).await;
    if secret
        .metadata
        .labels
        .get(INVALID_SINCE_LABEL)
        .is_some_and(|v| !v.is_empty())
    {
        return Err(AuthnError::RejectedNoted {
            message: format!(
                "the token in secret {ns}/{s} for service account {ns}/{sa} has been marked invalid. Use tokens from the TokenRequest API or manually created secret-based tokens, or remove the '{INVALID_SINCE_LABEL}' label from the secret to temporarily allow use of this token",
                ns = c.namespace,
                s = c.secret_name,
                sa = c.service_account_name,
            ),
            // kube-apiserver's value: name, then namespace.
            annotation: (
                INVALIDATED_ANNOTATION,
                format!("{}/{}", c.secret_name, c.namespace),
            ),
        });
    }
    let mut id = Identity::new(c.sub.clone(), c.service_account_uid, groups(&c.namespace));
    id.audit_annotations.push((LEGACY_TOKEN_ANNOTATION, c.sub));
    // keyward has no ServiceAccount objects listing auto-generated Secrets: every token
    // Secret is one made by hand, in kube-apiserver's terms.
    id.audit_annotations
        .push((MANUAL_SECRET_ANNOTATION, c.secret_name));
    Ok(id)
}

/// Labels the token's Secret with the day it was used (`LAST_USED_LABEL`), unless it says
/// that day already (or the next: clocks differ), as kube-apiserver's legacy token tracking
/// does: at most one write a day per token (the request that makes it waits for it). A
/// failed write (the Secret changed meanwhile, the store unavailable) is logged and changes
/// nothing else.
async fn stamp_last_used(secret: &Secret, secrets: &dyn SecretLookup, now: SystemTime) {
    let day = |t: SystemTime| {
        let mut text = humantime::format_rfc3339_seconds(t).to_string();
        text.truncate(10);
        text
    };
    let today = day(now);
    let tomorrow = day(now + std::time::Duration::from_secs(86_400));
    let last = secret.metadata.labels.get(LAST_USED_LABEL);
    if last == Some(&today) || last == Some(&tomorrow) {
        return;
    }
    if let Err(e) = secrets.label_secret(secret, LAST_USED_LABEL, &today).await {
        tracing::warn!(
            namespace = %secret.metadata.namespace,
            secret = %secret.metadata.name,
            error = %e,
            "the legacy token's last-used label was not written"
        );
    }
}

/// Fills `kubernetes.io/service-account-token` Secrets on create (see the module docs). Give it
/// to [`crate::store::Store::with_create_hook`].
#[derive(Debug, Clone)]
pub struct TokenSecretFiller {
    issuer: ServiceAccountIssuer,
    ca_cert: Option<Vec<u8>>,
}

impl TokenSecretFiller {
    /// Signs with `issuer`'s key (the issuer name is not used: legacy tokens have their own);
    /// `ca_cert` is the server's CA certificate (PEM) for `data.ca.crt`, if it has one.
    pub fn new(issuer: ServiceAccountIssuer, ca_cert: Option<Vec<u8>>) -> Self {
        Self { issuer, ca_cert }
    }

    /// Fills `secret` if it is a service account token Secret; other Secrets are untouched. A
    /// Secret that names a service account no namespace can hold (a name that is not a DNS-1123
    /// subdomain) is left as it is: kube-apiserver stores such a Secret too, and its token
    /// controller never fills it.
    pub fn fill(&self, secret: &mut Secret) -> Result<(), AuthnError> {
        if secret.type_ != TOKEN_SECRET_TYPE {
            return Ok(());
        }
        let annotation = |k: &str| {
            secret
                .metadata
                .annotations
                .get(k)
                .cloned()
                .unwrap_or_default()
        };
        let sa = ServiceAccountRef {
            namespace: secret.metadata.namespace.clone(),
            name: annotation(SERVICE_ACCOUNT_NAME_ANNOTATION),
            uid: annotation(SERVICE_ACCOUNT_UID_ANNOTATION),
        };
        if sa.check().is_err() {
            tracing::info!(
                namespace = %secret.metadata.namespace,
                secret = %secret.metadata.name,
                "service account token Secret names no valid service account; stored without a token"
            );
            return Ok(());
        }
        let empty = |s: &Secret, k: &str| s.data.get(k).is_none_or(|v| v.as_slice().is_empty());
        if empty(secret, TOKEN_KEY) {
            let token = self.issuer.issue_legacy(&sa, &secret.metadata.name)?;
            secret.data.insert(
                TOKEN_KEY.to_owned(),
                SecretBytes::new(token.expose().as_bytes().to_vec()),
            );
        }
        if empty(secret, NAMESPACE_KEY) {
            secret.data.insert(
                NAMESPACE_KEY.to_owned(),
                SecretBytes::new(sa.namespace.into_bytes()),
            );
        }
        if let Some(ca) = &self.ca_cert {
            secret
                .data
                .insert(CA_CERT_KEY.to_owned(), SecretBytes::new(ca.clone()));
        }
        Ok(())
    }
}

impl CreateHook for TokenSecretFiller {
    fn applies_to(&self, secret: &Secret) -> bool {
        secret.type_ == TOKEN_SECRET_TYPE
    }

    fn on_create(&self, secret: &mut Secret) -> Result<(), String> {
        self.fill(secret).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::authn::names::SYSTEM_AUTHENTICATED;
    use crate::authn::serviceaccount::{ServiceAccountAuthenticator, DEFAULT_ISSUER};
    use crate::authn::testing::{secret, FailingSecrets, MapSecrets};
    use crate::authn::{BearerToken, TokenAuthenticator};
    use crate::crypto::SigningKey;

    fn sa_secret(name: &str, sa: &str) -> Secret {
        let mut s = secret("prod", name, TOKEN_SECRET_TYPE, &[]);
        s.metadata
            .annotations
            .insert(SERVICE_ACCOUNT_NAME_ANNOTATION.into(), sa.into());
        s
    }

    fn setup() -> (
        TokenSecretFiller,
        ServiceAccountAuthenticator,
        Arc<MapSecrets>,
    ) {
        let issuer = ServiceAccountIssuer::new(
            DEFAULT_ISSUER,
            Arc::new(SigningKey::generate_es256().unwrap()),
        );
        let secrets = Arc::new(MapSecrets::default());
        let auth = issuer.authenticator().with_legacy_tokens(secrets.clone());
        (
            TokenSecretFiller::new(issuer, Some(b"-----BEGIN CERTIFICATE-----\n".to_vec())),
            auth,
            secrets,
        )
    }

    fn data(s: &Secret, k: &str) -> String {
        String::from_utf8(s.data[k].as_slice().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn filled_on_create_valid_while_the_secret_holds_it_revoked_by_delete() {
        let (filler, auth, secrets) = setup();
        let mut s = sa_secret("app-token", "app");
        s.metadata
            .annotations
            .insert(SERVICE_ACCOUNT_UID_ANNOTATION.into(), "uid-1".into());
        filler.fill(&mut s).unwrap();
        assert_eq!(data(&s, NAMESPACE_KEY), "prod");
        assert_eq!(data(&s, CA_CERT_KEY), "-----BEGIN CERTIFICATE-----\n");
        let token = BearerToken::new(data(&s, TOKEN_KEY));
        let claims = token.expose().split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": "kubernetes/serviceaccount",
                "kubernetes.io/serviceaccount/namespace": "prod",
                "kubernetes.io/serviceaccount/secret.name": "app-token",
                "kubernetes.io/serviceaccount/service-account.name": "app",
                "kubernetes.io/serviceaccount/service-account.uid": "uid-1",
                "sub": "system:serviceaccount:prod:app",
            })
        );

        // Not yet stored: invalidated.
        let e = auth.authenticate_token(&token).await.unwrap_err();
        assert_eq!(e.to_string(), "Token has been invalidated");
        secrets.put(s.clone());
        let id = auth.authenticate_token(&token).await.unwrap().unwrap();
        assert_eq!(id.name, "system:serviceaccount:prod:app");
        assert_eq!(id.uid, "uid-1");
        assert_eq!(
            id.audit_annotations,
            [
                (
                    LEGACY_TOKEN_ANNOTATION,
                    "system:serviceaccount:prod:app".to_owned()
                ),
                (MANUAL_SECRET_ANNOTATION, "app-token".to_owned())
            ]
        );
        assert_eq!(
            id.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:prod",
                SYSTEM_AUTHENTICATED
            ]
        );
        // Years later: no expiry.
        let later = SystemTime::now() + std::time::Duration::from_secs(10 * 365 * 86400);
        assert!(auth
            .authenticate_at(token.expose(), later)
            .await
            .unwrap()
            .is_some());

        // The stored token changed: no longer valid.
        let mut changed = s.clone();
        changed
            .data
            .insert(TOKEN_KEY.into(), SecretBytes::new(b"other".to_vec()));
        secrets.put(changed);
        let e = auth.authenticate_token(&token).await.unwrap_err();
        assert_eq!(e.to_string(), "Token does not match server's copy");

        // Labelled invalid.
        let mut labelled = s.clone();
        labelled
            .metadata
            .labels
            .insert(INVALID_SINCE_LABEL.into(), "2024-01-01".into());
        secrets.put(labelled);
        let e = auth.authenticate_token(&token).await.unwrap_err();
        assert!(e.to_string().contains("has been marked invalid"), "{e}");
        assert_eq!(
            e.audit_annotations(),
            [(INVALIDATED_ANNOTATION, "app-token/prod".to_owned())]
        );

        // Being deleted (finalizers hold it): revoked already.
        let mut deleting = s.clone();
        deleting.metadata.deletion_timestamp = "2026-01-01T00:00:00Z".into();
        deleting.metadata.finalizers.push("example.com/hold".into());
        secrets.put(deleting);
        let e = auth.authenticate_token(&token).await.unwrap_err();
        assert_eq!(e.to_string(), "Token has been invalidated");

        // Deleted: revoked.
        secrets.put(s);
        assert!(auth.authenticate_token(&token).await.unwrap().is_some());
        secrets.remove("prod", "app-token");
        let e = auth.authenticate_token(&token).await.unwrap_err();
        assert_eq!(e.to_string(), "Token has been invalidated");
        assert!(!e.to_string().contains(token.expose()));
    }

    #[tokio::test]
    async fn fill_rules_and_legacy_off() {
        let (filler, auth, _) = setup();
        // Other types are untouched; present values are kept; no CA: no ca.crt.
        let mut opaque = secret("prod", "x", "Opaque", &[]);
        filler.fill(&mut opaque).unwrap();
        assert!(opaque.data.is_empty());
        let mut given = sa_secret("t", "app");
        given
            .data
            .insert(TOKEN_KEY.into(), SecretBytes::new(b"mine".to_vec()));
        given.data.insert(
            NAMESPACE_KEY.into(),
            SecretBytes::new(b"elsewhere".to_vec()),
        );
        let no_ca = TokenSecretFiller::new(filler.issuer.clone(), None);
        no_ca.fill(&mut given).unwrap();
        assert_eq!(data(&given, TOKEN_KEY), "mine");
        assert_eq!(data(&given, NAMESPACE_KEY), "elsewhere");
        assert!(!given.data.contains_key(CA_CERT_KEY));
        // A service account name no namespace can hold gets no token, and the Secret is
        // stored as given (as kube-apiserver stores it; its token controller never fills it).
        let mut bad = sa_secret("t", "Not:Valid");
        filler.on_create(&mut bad).unwrap();
        assert!(bad.data.is_empty(), "{:?}", bad.data.keys());

        // Without legacy tokens, the verifier has no opinion on them; a lookup failure is an
        // error of the environment.
        let mut s = sa_secret("t", "app");
        filler.fill(&mut s).unwrap();
        let token = BearerToken::new(data(&s, TOKEN_KEY));
        let bound_only = filler.issuer.authenticator();
        assert!(bound_only
            .authenticate_token(&token)
            .await
            .unwrap()
            .is_none());
        let failing = filler
            .issuer
            .authenticator()
            .with_legacy_tokens(Arc::new(FailingSecrets));
        let e = failing.authenticate_token(&token).await.unwrap_err();
        assert!(matches!(e, AuthnError::Lookup { .. }), "{e}");
        drop(auth);
    }

    #[tokio::test]
    async fn the_store_fills_on_create() {
        use crate::backend::sled::{SledBackend, SledOptions};
        use crate::encryption::config::{self, ParseOptions};
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(SledBackend::open(dir.path(), SledOptions::default()).unwrap());
        let text = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n";
        let cfg = config::parse(text, ParseOptions::default()).unwrap();
        let enc = Arc::new(crate::encryption::Encryption::build(&cfg).await);
        let (filler, _, _) = setup();
        let auth = filler.issuer.authenticator();
        let store = Arc::new(
            crate::store::Store::new(backend, enc, "/registry").with_create_hook(Arc::new(filler)),
        );
        let auth = auth.with_legacy_tokens(store.clone());
        let answered = store
            .create(sa_secret("app-token", "app"), false)
            .await
            .unwrap();
        // The create answers without what the hook filled; the stored Secret holds it.
        assert!(answered.data.is_empty(), "{:?}", answered.data.keys());
        let (ns, name) = (
            crate::names::Namespace::try_from("prod").unwrap(),
            crate::names::SecretName::try_from("app-token").unwrap(),
        );
        let created = store.get(&ns, &name, None).await.unwrap();
        assert_eq!(
            created.metadata.resource_version,
            answered.metadata.resource_version
        );
        let token = BearerToken::new(data(&created, TOKEN_KEY));
        let id = auth.authenticate_token(&token).await.unwrap().unwrap();
        assert_eq!(id.name, "system:serviceaccount:prod:app");
        // Tracked: labelled with the day of its use, once a day.
        let used = store.get(&ns, &name, None).await.unwrap();
        let mut today = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        today.truncate(10);
        assert_eq!(used.metadata.labels[LAST_USED_LABEL], today);
        assert_ne!(
            used.metadata.resource_version,
            created.metadata.resource_version
        );
        assert_eq!(used.data, created.data, "only the label changed");
        auth.authenticate_token(&token).await.unwrap().unwrap();
        let again = store.get(&ns, &name, None).await.unwrap();
        assert_eq!(
            again.metadata.resource_version,
            used.metadata.resource_version
        );
        // Used years later: labelled with that day.
        let later = SystemTime::now() + std::time::Duration::from_secs(3 * 365 * 86400);
        auth.authenticate_at(token.expose(), later)
            .await
            .unwrap()
            .unwrap();
        let mut that_day = humantime::format_rfc3339_seconds(later).to_string();
        that_day.truncate(10);
        let relabelled = store.get(&ns, &name, None).await.unwrap();
        assert_eq!(relabelled.metadata.labels[LAST_USED_LABEL], that_day);
        // A dry run is not filled.
        let dry = store.create(sa_secret("dry", "app"), true).await.unwrap();
        assert!(dry.data.is_empty());
        // Deleting revokes.
        store.delete(&ns, &name, &Default::default()).await.unwrap();
        let e = auth.authenticate_token(&token).await.unwrap_err();
        assert_eq!(e.to_string(), "Token has been invalidated");
    }
}
