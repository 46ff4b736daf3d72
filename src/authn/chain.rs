//! Bearer-token authenticators tried in order, as kube-apiserver's union authenticator and
//! bearer-token filter combine them: the first authenticator that accepts the token wins (errors
//! of earlier ones are dropped); if none accepts it, the errors are returned together
//! ([`AuthnError::aggregate`]), or [`AuthnError::InvalidBearerToken`] (`invalid bearer token`)
//! when every authenticator had no opinion. The token is never logged.
//!
//! keyward's order ([`TokenChain::standard`]): static token files, then bootstrap tokens, then
//! service account tokens. A front end answers any error with `Unauthenticated` (kube-apiserver:
//! 401 `Unauthorized`) and logs the error, which never contains the token.

use std::sync::Arc;

use super::bootstrap::BootstrapTokens;
use super::serviceaccount::ServiceAccountAuthenticator;
use super::tokenfile::StaticTokens;
use super::{parse_bearer, AuthnError, BearerHeader, BearerToken, Identity, TokenAuthenticator};

/// Token authenticators in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct TokenChain {
    authenticators: Vec<Arc<dyn TokenAuthenticator>>,
}

impl TokenChain {
    /// A chain of `authenticators`, tried in this order.
    pub fn new(authenticators: Vec<Arc<dyn TokenAuthenticator>>) -> Self {
        Self { authenticators }
    }

    /// keyward's chain: every static token file (`--token-auth-file`, `--tokens-file`), then
    /// bootstrap tokens, then service account tokens, leaving out what is not configured.
    pub fn standard(
        static_tokens: Vec<StaticTokens>,
        bootstrap: Option<BootstrapTokens>,
        service_accounts: Option<ServiceAccountAuthenticator>,
    ) -> Self {
        let mut chain: Vec<Arc<dyn TokenAuthenticator>> = Vec::new();
        for s in static_tokens {
            chain.push(Arc::new(s));
        }
        if let Some(b) = bootstrap {
            chain.push(Arc::new(b));
        }
        if let Some(sa) = service_accounts {
            chain.push(Arc::new(sa));
        }
        Self::new(chain)
    }

    /// Whether the chain has no authenticator (every token is then invalid).
    pub fn is_empty(&self) -> bool {
        self.authenticators.is_empty()
    }

    /// The identity of `token` (with `system:authenticated`), or why it is refused.
    pub async fn authenticate(&self, token: &BearerToken) -> Result<Identity, AuthnError> {
        let mut errors = Vec::new();
        for a in &self.authenticators {
            match a.authenticate_token(token).await {
                Ok(Some(identity)) => return Ok(identity.with_authenticated_group()),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        Err(AuthnError::aggregate(errors).unwrap_or(AuthnError::InvalidBearerToken))
    }

    /// Reads an `Authorization` header ([`parse_bearer`]) and authenticates its token:
    /// `Ok(None)` when it holds no bearer token (then other credentials, or none, decide).
    pub async fn authenticate_header(&self, header: &str) -> Result<Option<Identity>, AuthnError> {
        match parse_bearer(header) {
            BearerHeader::Token(t) => self.authenticate(&t).await.map(Some),
            BearerHeader::NotBearer | BearerHeader::Empty { .. } => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::time::SystemTime;

    use super::*;
    use crate::authn::bootstrap;
    use crate::authn::names::{SYSTEM_AUTHENTICATED, SYSTEM_MASTERS};
    use crate::authn::serviceaccount::{
        ServiceAccountIssuer, ServiceAccountRef, TokenRequest, DEFAULT_ISSUER,
    };
    use crate::authn::testing::{secret, MapSecrets};
    use crate::authn::tokenfile::TokenFileFormat;
    use crate::crypto::SigningKey;

    /// Records every token it sees, to prove the chain stops at the first answer.
    #[derive(Debug)]
    struct Fixed(Result<Option<Identity>, String>);

    #[async_trait::async_trait]
    impl TokenAuthenticator for Fixed {
        async fn authenticate_token(
            &self,
            _token: &BearerToken,
        ) -> Result<Option<Identity>, AuthnError> {
            self.0.clone().map_err(AuthnError::Rejected)
        }
    }

    fn fixed(r: Result<Option<&str>, &str>) -> Arc<dyn TokenAuthenticator> {
        Arc::new(Fixed(
            r.map(|o| o.map(|n| Identity::new(n, "", vec![])))
                .map_err(str::to_owned),
        ))
    }

    #[tokio::test]
    async fn first_opinion_wins_and_errors_aggregate() {
        let t = BearerToken::new("some-token");
        let chain = TokenChain::new(vec![
            fixed(Ok(None)),
            fixed(Err("e1")),
            fixed(Ok(Some("b"))),
        ]);
        let id = chain.authenticate(&t).await.unwrap();
        assert_eq!(
            (id.name.as_str(), id.groups.as_slice()),
            ("b", &[SYSTEM_AUTHENTICATED.to_owned()][..])
        );
        let chain = TokenChain::new(vec![fixed(Ok(Some("a"))), fixed(Ok(Some("b")))]);
        assert_eq!(chain.authenticate(&t).await.unwrap().name, "a");
        let chain = TokenChain::new(vec![fixed(Ok(None)), fixed(Ok(None))]);
        assert_eq!(
            chain.authenticate(&t).await.unwrap_err().to_string(),
            "invalid bearer token"
        );
        let chain = TokenChain::new(vec![fixed(Err("e1")), fixed(Ok(None)), fixed(Err("e2"))]);
        assert_eq!(
            chain.authenticate(&t).await.unwrap_err().to_string(),
            "[e1, e2]"
        );
        let chain = TokenChain::default();
        assert!(chain.is_empty());
        assert!(matches!(
            chain.authenticate(&t).await,
            Err(AuthnError::InvalidBearerToken)
        ));
        assert!(chain
            .authenticate_header("Basic x")
            .await
            .unwrap()
            .is_none());
        assert!(chain
            .authenticate_header("Bearer  x")
            .await
            .unwrap()
            .is_none());
        assert!(chain.authenticate_header("Bearer x").await.is_err());
    }

    /// The standard chain with all three kinds, each token reaching its own authenticator, and
    /// nothing of any token in errors or `Debug`.
    #[tokio::test]
    async fn standard_chain_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        fs::write(&p, "static-token-value,alice,u1,ops\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let lines = dir.path().join("tokens");
        fs::write(&lines, "legacy-operator-token\n").unwrap();
        fs::set_permissions(&lines, fs::Permissions::from_mode(0o600)).unwrap();
        let statics = vec![
            StaticTokens::load(&p, TokenFileFormat::Csv).unwrap(),
            StaticTokens::load(&lines, TokenFileFormat::Lines).unwrap(),
        ];

        let secrets = Arc::new(MapSecrets::default());
        secrets.put(secret(
            bootstrap::NAMESPACE,
            "bootstrap-token-abcdef",
            bootstrap::SECRET_TYPE,
            &[
                ("token-id", "abcdef"),
                ("token-secret", "0123456789abcdef"),
                ("usage-bootstrap-authentication", "true"),
            ],
        ));
        let issuer = ServiceAccountIssuer::new(
            DEFAULT_ISSUER,
            Arc::new(SigningKey::generate_es256().unwrap()),
        );
        let sa_token = issuer
            .issue(
                &TokenRequest {
                    service_account: ServiceAccountRef {
                        namespace: "prod".into(),
                        name: "app".into(),
                        uid: String::new(),
                    },
                    audiences: vec![],
                    expiration: std::time::Duration::from_secs(3600),
                },
                SystemTime::now(),
            )
            .unwrap();
        let chain = TokenChain::standard(
            statics,
            Some(BootstrapTokens::new(secrets.clone())),
            Some(issuer.authenticator().with_legacy_tokens(secrets)),
        );
        let name = |h: String| {
            let chain = chain.clone();
            async move { chain.authenticate_header(&h).await.map(|o| o.unwrap().name) }
        };
        assert_eq!(
            name("Bearer static-token-value".into()).await.unwrap(),
            "alice"
        );
        let op = chain
            .authenticate(&BearerToken::new("legacy-operator-token"))
            .await
            .unwrap();
        assert!(op.in_group(SYSTEM_MASTERS) && op.name.starts_with("token:"));
        assert_eq!(
            name("Bearer abcdef.0123456789abcdef".into()).await.unwrap(),
            "system:bootstrap:abcdef"
        );
        assert_eq!(
            name(format!("Bearer {}", sa_token.token.expose()))
                .await
                .unwrap(),
            "system:serviceaccount:prod:app"
        );
        for bad in [
            "Bearer abcdef.0123456789abcdeX".to_string(),
            "Bearer wrong-static-token".to_string(),
            format!("Bearer {}x", sa_token.token.expose()),
        ] {
            let e = name(bad.clone()).await.unwrap_err();
            let token = bad.strip_prefix("Bearer ").unwrap();
            assert!(!e.to_string().contains(token), "{e}");
            assert!(!format!("{e:?}").contains(token), "{e:?}");
        }
        assert_eq!(
            name("Bearer abcdef.0123456789abcdeX".into())
                .await
                .unwrap_err()
                .to_string(),
            "invalid bearer token"
        );
        // A signature that is not base64url: not a JWS at all, so no opinion (as go-jose's
        // parse failure is upstream).
        assert_eq!(
            name(format!("Bearer {}x", sa_token.token.expose()))
                .await
                .unwrap_err()
                .to_string(),
            "invalid bearer token"
        );
        assert!(!format!("{chain:?}").contains("static-token-value"));
    }

    /// Captures log output for [`nothing_secret_is_logged`].
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// Every refusal path, logged at the most verbose level: the log says what happened (it is
    /// not empty) and holds no presented or stored credential.
    #[tokio::test]
    async fn nothing_secret_is_logged() {
        let cap = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(cap.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let secrets_seen = [
            "zzzzzzzzzzzzzzzz",
            "yyyyyyyyyyyyyyyy",
            "csv-token-one",
            "csv-token-two",
            "csv-bad-token",
        ];

        // Bootstrap: wrong secret, expired, bad groups.
        let secrets = Arc::new(MapSecrets::default());
        for (id, extra) in [
            ("aaaaaa", ("expiration", "2000-01-01T00:00:00Z")),
            ("bbbbbb", ("auth-extra-groups", "bad")),
            ("cccccc", ("description", "x")),
        ] {
            secrets.put(secret(
                bootstrap::NAMESPACE,
                &bootstrap::secret_name(id),
                bootstrap::SECRET_TYPE,
                &[
                    ("token-id", id),
                    ("token-secret", "zzzzzzzzzzzzzzzz"),
                    ("usage-bootstrap-authentication", "true"),
                    extra,
                ],
            ));
        }
        let b = BootstrapTokens::new(secrets.clone());
        for token in [
            "aaaaaa.zzzzzzzzzzzzzzzz",
            "bbbbbb.zzzzzzzzzzzzzzzz",
            "cccccc.yyyyyyyyyyyyyyyy",
            "dddddd.yyyyyyyyyyyyyyyy",
        ] {
            assert!(b
                .authenticate_token(&BearerToken::new(token))
                .await
                .unwrap()
                .is_none());
        }

        // Token file: warnings for an empty and a duplicate token, then a rejected reload.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        let write = |text: &str| {
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        };
        write(",nobody,0\ncsv-token-one,a,1\ncsv-token-one,b,2\ncsv-token-two,c,3\n");
        let st = StaticTokens::load(&p, TokenFileFormat::Csv).unwrap();
        write("csv-token-one,a,1\ncsv-bad-token,\"broken\n");
        assert!(matches!(
            st.check_now(),
            crate::authn::reload::ReloadOutcome::Failed { .. }
        ));

        // Legacy token Secret whose stored token changed.
        let issuer = ServiceAccountIssuer::new(
            DEFAULT_ISSUER,
            Arc::new(SigningKey::generate_es256().unwrap()),
        );
        let sa = ServiceAccountRef {
            namespace: "prod".into(),
            name: "app".into(),
            uid: String::new(),
        };
        let legacy = issuer.issue_legacy(&sa, "t").unwrap();
        let mut s = secret(
            "prod",
            "t",
            crate::authn::legacy::TOKEN_SECRET_TYPE,
            &[("token", "different")],
        );
        s.metadata.annotations.insert(
            crate::authn::legacy::SERVICE_ACCOUNT_NAME_ANNOTATION.into(),
            "app".into(),
        );
        secrets.put(s);
        let chain = TokenChain::standard(
            vec![st],
            Some(b),
            Some(issuer.authenticator().with_legacy_tokens(secrets)),
        );
        for token in [legacy.expose(), "csv-token-two", "zzzzzzzzzzzzzzzz"] {
            if let Err(e) = chain.authenticate(&BearerToken::new(token)).await {
                tracing::warn!(error = %e, "authentication failed");
            }
        }

        let log = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("bootstrap-token-cccccc"), "{log}");
        assert!(log.contains("empty token has been found"), "{log}");
        assert!(log.contains("duplicate token has been found"), "{log}");
        assert!(log.contains("Token does not match server's copy"), "{log}");
        for secret in secrets_seen.iter().copied().chain([legacy.expose()]) {
            assert!(!log.contains(secret), "{secret} logged:\n{log}");
        }
    }
}
