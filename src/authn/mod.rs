//! Who is asking: the [`Identity`] every authenticator produces (user name, uid, groups, extra),
//! as kube-apiserver's `user.Info`, the well-known names Kubernetes reserves, and the
//! authenticators themselves, as a library that knows nothing of HTTP or gRPC:
//!
//! - [`unix`]: Unix socket peer credentials (uid, gid), mapped by a `--unix-users` file;
//! - [`x509`]: TLS client certificates (CN is the user, each O a group);
//! - [`tokenfile`]: static bearer tokens from kube-apiserver's `--token-auth-file` CSV, and
//!   keyward's older one-token-per-line `--tokens-file`, reloaded when the file changes;
//! - [`bootstrap`]: bootstrap tokens (`<id>.<secret>`) backed by `bootstrap.kubernetes.io/token`
//!   Secrets in `kube-system`;
//! - [`serviceaccount`]: service account JWTs (ES256/RS256), issued and verified;
//! - [`legacy`]: `kubernetes.io/service-account-token` Secrets, filled by the server on create
//!   and revoked by deleting them;
//! - [`chain`]: the bearer-token authenticators tried in order, as kube-apiserver's union;
//! - [`reload`]: the file watcher the token and users files share.
//!
//! Every authenticator answers like kube-apiserver's: no opinion (`Ok(None)`: not its kind of
//! credential), an [`Identity`] that already carries `system:authenticated`, or an
//! [`AuthnError`]. Credentials never reach logs, `Debug` output or error messages: a presented
//! token is a [`BearerToken`], whose `Debug` is redacted.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

use crate::crypto::CryptoError;
use crate::store::{Secret, SecretId, Store, StoreError};

pub mod bootstrap;
pub mod chain;
mod jwt;
pub mod legacy;
pub mod reload;
pub mod serviceaccount;
pub mod tokenfile;
pub mod unix;
pub mod x509;

pub use chain::TokenChain;

/// Kubernetes' reserved group and user names (`k8s.io/apiserver/pkg/authentication/user`).
pub mod names {
    /// Members may do everything; RBAC is not consulted.
    pub const SYSTEM_MASTERS: &str = "system:masters";
    /// Added to every authenticated identity.
    pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";
    /// The server itself, when it writes through its own API (kube-apiserver's loopback user).
    pub const SYSTEM_APISERVER: &str = "system:apiserver";
    /// The group of requests without credentials (never granted anything by default).
    pub const SYSTEM_UNAUTHENTICATED: &str = "system:unauthenticated";
    /// The user of requests without credentials.
    pub const SYSTEM_ANONYMOUS: &str = "system:anonymous";
    /// The user the server's own uid and root map to on the Unix socket by default.
    pub const SYSTEM_ADMIN: &str = "system:admin";
    /// Prefix of service account user names: `system:serviceaccount:<ns>:<name>`.
    pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";
    /// Group of every service account.
    pub const SYSTEM_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
    /// Extra key naming the credential an identity came from (`X509SHA256=<hex>`,
    /// `JTI=<jti>`), never the credential itself.
    pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";
}

/// An authenticated caller: Kubernetes' `user.Info`. Carries no credential.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The user name, e.g. `alice`, `system:serviceaccount:prod:app`.
    pub name: String,
    /// A stable id, if the authenticator knows one ("" otherwise).
    pub uid: String,
    /// Groups, in the order the authenticator gave them; `system:authenticated` included once
    /// authentication succeeded.
    pub groups: Vec<String>,
    /// Extra attributes (lower-case, namespaced keys), e.g.
    /// `authentication.kubernetes.io/credential-id`.
    pub extra: BTreeMap<String, Vec<String>>,
    /// How the caller authenticated, as the audit annotations kube-apiserver's authenticators
    /// add to the request's events (e.g. `authentication.k8s.io/legacy-token-manual-secret`);
    /// not one of the user's attributes (neither authorized on nor shown as `user`).
    pub audit_annotations: Vec<(&'static str, String)>,
}

impl Identity {
    /// An identity with `name`, `uid` and `groups` and no extra attributes.
    pub fn new(name: impl Into<String>, uid: impl Into<String>, groups: Vec<String>) -> Self {
        Self {
            name: name.into(),
            uid: uid.into(),
            groups,
            extra: BTreeMap::new(),
            audit_annotations: Vec::new(),
        }
    }

    /// kube-apiserver's anonymous user: `system:anonymous` in `system:unauthenticated`, what a
    /// request without credentials is where anonymous requests are allowed (here: health and
    /// `/version` on the Kubernetes API).
    pub fn anonymous() -> Self {
        Self::new(
            names::SYSTEM_ANONYMOUS,
            "",
            vec![names::SYSTEM_UNAUTHENTICATED.to_owned()],
        )
    }

    /// Whether the identity is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Adds `system:authenticated` as kube-apiserver's `AuthenticatedGroupAdder` does: unless
    /// the user is `system:anonymous` or already has `system:authenticated` or
    /// `system:unauthenticated`.
    pub fn with_authenticated_group(mut self) -> Self {
        if self.name != names::SYSTEM_ANONYMOUS
            && !self.in_group(names::SYSTEM_AUTHENTICATED)
            && !self.in_group(names::SYSTEM_UNAUTHENTICATED)
        {
            self.groups.push(names::SYSTEM_AUTHENTICATED.to_owned());
        }
        self
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("groups", &self.groups)
            .field("extra", &self.extra)
            .finish()
    }
}

/// Errors of this layer. Messages never contain a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthnError {
    /// A bearer token no authenticator accepted, and none failed (caller's credential).
    #[error("invalid bearer token")]
    InvalidBearerToken,
    /// A credential of an authenticator's own kind is not valid: expired, wrong audience, bad
    /// signature, revoked (caller's credential). The message is kube-apiserver's.
    #[error("{0}")]
    Rejected(String),
    /// As [`AuthnError::Rejected`], with the audit annotation kube-apiserver adds to the
    /// refused request's event (a legacy token whose Secret was marked invalid).
    #[error("{message}")]
    RejectedNoted {
        /// kube-apiserver's message.
        message: String,
        /// The annotation (key, value).
        annotation: (&'static str, String),
    },
    /// Several authenticators of a chain failed; kube-apiserver's aggregate (caller's
    /// credential or environment, per error).
    #[error("[{}]", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))]
    Aggregate(Vec<AuthnError>),
    /// A client certificate that TLS verified cannot be read (caller's certificate).
    #[error("cannot parse the client certificate: {0}")]
    Certificate(String),
    /// Reading a Secret a token refers to failed (environment: store, backend or KMS).
    #[error("cannot read Secret {namespace}/{name}: {reason}")]
    Lookup {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A users or token file is unreadable or invalid (operator's input).
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong, never a token.
        reason: String,
    },
    /// A token request breaks a rule, e.g. its duration (caller's input).
    #[error("{0}")]
    InvalidRequest(String),
    /// Signing a token failed (environment: the random generator).
    #[error("cannot sign a service account token: {0}")]
    Signing(#[from] CryptoError),
}

impl AuthnError {
    /// [`AuthnError::Lookup`]: reading (or labelling) the Secret `namespace/name` failed.
    pub fn lookup(namespace: &str, name: &str, reason: impl Into<String>) -> Self {
        AuthnError::Lookup {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    /// kube-apiserver's `NewAggregate`: no error for none, the error itself for one, else
    /// [`AuthnError::Aggregate`].
    pub fn aggregate(mut errors: Vec<AuthnError>) -> Option<AuthnError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(AuthnError::Aggregate(errors)),
        }
    }

    /// The audit annotations of a refused credential ([`AuthnError::RejectedNoted`]).
    pub fn audit_annotations(&self) -> Vec<(&'static str, String)> {
        match self {
            AuthnError::RejectedNoted { annotation, .. } => vec![annotation.clone()],
            AuthnError::Aggregate(errors) => errors
                .iter()
                .flat_map(AuthnError::audit_annotations)
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A bearer token as presented: zeroized on drop, never printed (`Debug` is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Zeroizing<String>);

impl BearerToken {
    /// Wraps a presented token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }

    /// The token. Keep the borrow short; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken([REDACTED], {} bytes)", self.0.len())
    }
}

/// What an `Authorization` header holds, read as kube-apiserver's bearer-token authenticator
/// reads it (`k8s.io/apiserver/pkg/authentication/request/bearertoken`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerHeader {
    /// Empty, or another scheme than `Bearer`: no opinion.
    NotBearer,
    /// `Bearer` with an empty token: no opinion. `extra_space` is true for `Bearer  <token>`,
    /// where kube-apiserver adds the warning [`BEARER_EXTRA_SPACE_WARNING`].
    Empty {
        /// A second space came before the token.
        extra_space: bool,
    },
    /// A token to authenticate.
    Token(BearerToken),
}

/// kube-apiserver's warning for `Bearer  <token>` (two spaces).
pub const BEARER_EXTRA_SPACE_WARNING: &str =
    "the provided Authorization header contains extra space before the bearer token, and is ignored";

/// Reads an `Authorization` header value: trimmed, split on single spaces into at most three
/// parts, the scheme compared case-insensitively, the token the second part.
pub fn parse_bearer(header: &str) -> BearerHeader {
    let auth = header.trim();
    if auth.is_empty() {
        return BearerHeader::NotBearer;
    }
    let parts: Vec<&str> = auth.splitn(3, ' ').collect();
    if parts.len() < 2 || !parts[0].eq_ignore_ascii_case("bearer") {
        return BearerHeader::NotBearer;
    }
    if parts[1].is_empty() {
        return BearerHeader::Empty {
            extra_space: parts.len() == 3,
        };
    }
    BearerHeader::Token(BearerToken::new(parts[1]))
}

/// An authenticator of bearer tokens (kube-apiserver's `authenticator.Token`).
#[async_trait::async_trait]
pub trait TokenAuthenticator: Send + Sync + fmt::Debug {
    /// `Ok(None)`: not this authenticator's kind of token (no opinion); `Ok(Some)`: the
    /// identity, with `system:authenticated`; `Err`: a token of its kind that is not valid, or
    /// a failure to check it. Never logs the token.
    async fn authenticate_token(&self, token: &BearerToken)
        -> Result<Option<Identity>, AuthnError>;
}

/// `secret` with the label `key` set to `value` (what [`SecretLookup::label_secret`] writes).
pub fn labelled(secret: &Secret, key: &str, value: &str) -> Secret {
    let mut s = secret.clone();
    s.metadata.labels.insert(key.into(), value.into());
    s
}

/// Where token authenticators read Secrets (bootstrap tokens, service-account-token Secrets).
/// [`Store`] is one; tests use a map.
#[async_trait::async_trait]
pub trait SecretLookup: Send + Sync {
    /// The Secret `namespace/name`; `Ok(None)` if there is none (or the name cannot exist).
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, AuthnError>;

    /// Sets the label `key` to `value` on `secret` as read (its resourceVersion the
    /// precondition: a Secret changed since is left as it is, an error).
    async fn label_secret(&self, secret: &Secret, key: &str, value: &str)
        -> Result<(), AuthnError>;
}

#[async_trait::async_trait]
impl SecretLookup for Store {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, AuthnError> {
        let Ok(id) = SecretId::parse(namespace, name) else {
            return Ok(None);
        };
        match self.get(&id.namespace, &id.name, None).await {
            Ok(s) => Ok(Some(s)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(AuthnError::lookup(namespace, name, e.to_string())),
        }
    }

    async fn label_secret(
        &self,
        secret: &Secret,
        key: &str,
        value: &str,
    ) -> Result<(), AuthnError> {
        self.update(labelled(secret, key, value), false)
            .await
            .map(drop)
            .map_err(|e| {
                let m = &secret.metadata;
                AuthnError::lookup(
                    &m.namespace,
                    &m.name,
                    format!("writing its label {key}: {e}"),
                )
            })
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for this module's tests.
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::store::model::SecretBytes;

    /// Secrets in a map, keyed by (namespace, name).
    #[derive(Default)]
    pub struct MapSecrets(pub Mutex<BTreeMap<(String, String), Secret>>);

    impl MapSecrets {
        /// Adds or replaces a Secret.
        pub fn put(&self, s: Secret) {
            let key = (s.metadata.namespace.clone(), s.metadata.name.clone());
            self.0.lock().unwrap().insert(key, s);
        }

        /// Removes a Secret.
        pub fn remove(&self, namespace: &str, name: &str) {
            self.0
                .lock()
                .unwrap()
                .remove(&(namespace.to_owned(), name.to_owned()));
        }
    }

    #[async_trait::async_trait]
    impl SecretLookup for MapSecrets {
        async fn get_secret(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<Option<Secret>, AuthnError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned())
        }

        async fn label_secret(
            &self,
            secret: &Secret,
            key: &str,
            value: &str,
        ) -> Result<(), AuthnError> {
            self.put(labelled(secret, key, value));
            Ok(())
        }
    }

    /// A lookup that always fails (an unavailable store).
    pub struct FailingSecrets;

    #[async_trait::async_trait]
    impl SecretLookup for FailingSecrets {
        async fn get_secret(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<Option<Secret>, AuthnError> {
            Err(AuthnError::lookup(namespace, name, "backend unavailable"))
        }

        async fn label_secret(
            &self,
            secret: &Secret,
            _key: &str,
            _value: &str,
        ) -> Result<(), AuthnError> {
            self.get_secret(&secret.metadata.namespace, &secret.metadata.name)
                .await
                .map(drop)
        }
    }

    /// A Secret with `data`.
    pub fn secret(namespace: &str, name: &str, type_: &str, data: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.namespace = namespace.into();
        s.metadata.name = name.into();
        s.type_ = type_.into();
        for (k, v) in data {
            s.data
                .insert((*k).into(), SecretBytes::new(v.as_bytes().to_vec()));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_as_kube_apiserver_reads_it() {
        let tok = |s: &str| BearerHeader::Token(BearerToken::new(s));
        assert_eq!(parse_bearer("Bearer abc"), tok("abc"));
        assert_eq!(parse_bearer("  bearer abc  "), tok("abc"));
        assert_eq!(
            parse_bearer("BEARER abc def"),
            tok("abc"),
            "a third part is ignored"
        );
        assert_eq!(parse_bearer(""), BearerHeader::NotBearer);
        assert_eq!(parse_bearer("Basic dXNlcjpwdw=="), BearerHeader::NotBearer);
        assert_eq!(parse_bearer("Bearer"), BearerHeader::NotBearer);
        assert_eq!(
            parse_bearer("Bearer  abc"),
            BearerHeader::Empty { extra_space: true }
        );
        assert_eq!(parse_bearer("Bearer\tabc"), BearerHeader::NotBearer);
    }

    #[test]
    fn tokens_never_show_in_debug_or_errors() {
        let t = BearerToken::new("s3cr3t-t0ken-value");
        let shown = format!("{t:?} {:?}", parse_bearer("Bearer s3cr3t-t0ken-value"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(t.expose(), "s3cr3t-t0ken-value");
        let agg = AuthnError::aggregate(vec![
            AuthnError::Rejected("a".into()),
            AuthnError::Rejected("b".into()),
        ])
        .unwrap();
        assert_eq!(agg.to_string(), "[a, b]");
        assert_eq!(
            AuthnError::aggregate(vec![AuthnError::Rejected("a".into())])
                .unwrap()
                .to_string(),
            "a"
        );
        assert!(AuthnError::aggregate(vec![]).is_none());
    }

    #[test]
    fn authenticated_group_is_added_once_and_never_to_anonymous() {
        let a = Identity::new("alice", "", vec!["dev".into()]).with_authenticated_group();
        assert_eq!(a.groups, ["dev", names::SYSTEM_AUTHENTICATED]);
        assert_eq!(a.clone().with_authenticated_group(), a);
        let anon = Identity::new(names::SYSTEM_ANONYMOUS, "", vec![]).with_authenticated_group();
        assert!(anon.groups.is_empty());
        let unauth = Identity::new("x", "", vec![names::SYSTEM_UNAUTHENTICATED.into()])
            .with_authenticated_group();
        assert_eq!(unauth.groups, [names::SYSTEM_UNAUTHENTICATED]);
    }
}
