//! From credentials to an [`Identity`], the same for every front end: the [`Authenticators`] a
//! server is configured with, and the [`Credentials`] a front end reads off one request (the
//! Unix peer's uid and gid, a verified TLS client certificate, an `Authorization` header).
//!
//! Rules, as kube-apiserver applies them to its listeners:
//! - On TCP, a client certificate that verifies against the client CA decides first (CN the
//!   user, each O a group), then a bearer token: accepted, or the request is `Unauthorized`
//!   (a bad token never falls back to the peer); no credential at all is refused.
//! - On the Unix socket a bearer token, when one is presented, decides alone; otherwise the
//!   peer credentials decide ([`UnixAuthenticator`]: the server's uid and root are
//!   `system:admin` in `system:masters` unless `--unix-users` says otherwise).
//! - Every identity carries `system:authenticated`.
//!
//! Why a credential was refused goes to the server's log (never the credential); the caller
//! sees `Unauthorized`.

use super::AccessError;
use crate::authn::unix::{PeerCredentials, UnixAuthenticator};
use crate::authn::x509::authenticate_client_cert;
use crate::authn::{parse_bearer, AuthnError, BearerHeader, Identity, TokenChain};
use crate::log_throttle::LogThrottle;

/// Refused client certificates (per request).
static CERT_REFUSED: LogThrottle = LogThrottle::new();
/// Refused bearer tokens.
static TOKEN_REFUSED: LogThrottle = LogThrottle::new();

/// What one request presents.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// A Unix-socket connection.
    Unix {
        /// The peer's credentials; `None` if the kernel did not report them.
        peer: Option<PeerCredentials>,
        /// The `Authorization` header, if any.
        authorization: Option<&'a str>,
    },
    /// A TLS connection.
    Tls {
        /// The client certificate chain verified against the client CA (leaf first, DER), if
        /// the client presented one that verified.
        client_certs: Option<&'a [rustls_pki_types::CertificateDer<'static>]>,
        /// The client presented certificates that did not verify against the client CA (the
        /// Kubernetes API takes any at the handshake and checks them per request, as
        /// kube-apiserver's x509 authenticator does): that authenticator fails, a bearer token
        /// may still authenticate the request.
        client_certs_refused: bool,
        /// The `Authorization` header, if any.
        authorization: Option<&'a str>,
    },
}

impl Credentials<'_> {
    /// What a refused request attempted, as kube-apiserver records it in the audit event of a
    /// failed authentication (`getAuthMethods`): `Authentication failed, attempted: bearer,
    /// x509` or `Authentication failed, no credentials provided` (never the credential
    /// itself). `access_token`: the request's query has a non-empty `access_token`.
    pub fn failure_message(&self, access_token: bool) -> String {
        let (authorization, certs) = match self {
            Credentials::Unix { authorization, .. } => (*authorization, false),
            Credentials::Tls {
                authorization,
                client_certs,
                client_certs_refused,
            } => (
                *authorization,
                *client_certs_refused || client_certs.is_some_and(|c| !c.is_empty()),
            ),
        };
        let mut methods = Vec::new();
        if let Some(header) = authorization {
            // Go's `Request.BasicAuth`: "Basic " in any case, then base64 of `user:password`.
            let basic = header
                .get(..6)
                .filter(|p| p.eq_ignore_ascii_case("basic "))
                .and_then(|_| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(&header[6..])
                        .ok()
                })
                .is_some_and(|c| c.contains(&b':'));
            if basic {
                methods.push("basic");
            }
            let mut parts = header.trim().split(' ');
            let scheme = parts.next().unwrap_or("");
            if parts.next().is_some() && scheme.eq_ignore_ascii_case("bearer") {
                methods.push("bearer");
            }
        }
        if access_token {
            methods.push("access_token");
        }
        if certs {
            methods.push("x509");
        }
        if methods.is_empty() {
            "Authentication failed, no credentials provided".to_owned()
        } else {
            format!("Authentication failed, attempted: {}", methods.join(", "))
        }
    }
}

/// The authenticators of a server: Unix peer credentials, TLS client certificates and the
/// bearer-token chain (token files, bootstrap tokens, service account tokens).
#[derive(Debug, Clone)]
pub struct Authenticators {
    unix: UnixAuthenticator,
    tokens: TokenChain,
}

impl Authenticators {
    /// Unix callers mapped by `unix`, bearer tokens checked by `tokens` (client certificates
    /// are accepted when TLS verified them).
    pub fn new(unix: UnixAuthenticator, tokens: TokenChain) -> Self {
        Self { unix, tokens }
    }

    /// The defaults of a server with no authentication flags: this process's uid and root are
    /// `system:admin`, no token is accepted.
    pub fn local() -> Self {
        Self::new(
            UnixAuthenticator::new(UnixAuthenticator::server_uid()),
            TokenChain::default(),
        )
    }

    /// The Unix authenticator (for callers that only have peer credentials).
    pub fn unix(&self) -> &UnixAuthenticator {
        &self.unix
    }

    /// The identity `creds` prove, with `system:authenticated`. As kube-apiserver's union of
    /// authenticators: a client certificate first, then a bearer token; the first that proves
    /// an identity decides (a certificate without a common name proves none), and a request
    /// that no credential authenticates is refused with the last failure. On a Unix socket a
    /// bearer token decides alone; without one, the peer's credentials do.
    pub async fn authenticate(&self, creds: Credentials<'_>) -> Result<Identity, AccessError> {
        let authorization = match creds {
            Credentials::Unix { authorization, .. } | Credentials::Tls { authorization, .. } => {
                authorization
            }
        };
        let mut refused = None;
        match creds {
            Credentials::Tls {
                client_certs: Some(chain),
                ..
            } if !chain.is_empty() => match authenticate_client_cert(chain) {
                Ok(Some(id)) => return Ok(id),
                Ok(None) => {}
                Err(e) => {
                    if let Some(held_back) = CERT_REFUSED.admit() {
                        tracing::info!(error = %e, held_back, "client certificate refused");
                    }
                    refused = Some(e);
                }
            },
            Credentials::Tls {
                client_certs_refused: true,
                ..
            } => {
                refused = Some(AuthnError::Certificate(
                    "it does not verify against the client CA".into(),
                ));
            }
            _ => {}
        }
        if let Some(header) = authorization {
            match parse_bearer(header) {
                BearerHeader::Token(token) => {
                    return self.tokens.authenticate(&token).await.map_err(|e| {
                        if let Some(held_back) = TOKEN_REFUSED.admit() {
                            tracing::info!(error = %e, held_back, "bearer token refused");
                        }
                        AccessError::Unauthenticated {
                            what: "bearer token",
                            source: e,
                        }
                    })
                }
                BearerHeader::Empty { extra_space: true } => {
                    tracing::info!("{}", crate::authn::BEARER_EXTRA_SPACE_WARNING);
                }
                BearerHeader::Empty { .. } | BearerHeader::NotBearer => {}
            }
        }
        match creds {
            Credentials::Unix { peer: Some(p), .. } => Ok(self.unix.authenticate(p)),
            Credentials::Unix { peer: None, .. } => {
                tracing::warn!("a Unix-socket caller without peer credentials was refused");
                Err(AccessError::NoCredentials)
            }
            Credentials::Tls { .. } => Err(match refused {
                Some(e) => AccessError::Unauthenticated {
                    what: "client certificate",
                    source: e,
                },
                None => AccessError::NoCredentials,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::names;

    #[tokio::test]
    async fn unix_peers_tokens_and_missing_credentials() {
        let a = Authenticators::new(UnixAuthenticator::new(1000), TokenChain::default());
        let me = PeerCredentials {
            uid: 1000,
            gid: 1000,
        };
        let id = a
            .authenticate(Credentials::Unix {
                peer: Some(me),
                authorization: None,
            })
            .await
            .unwrap();
        assert_eq!(id.name, names::SYSTEM_ADMIN);
        assert!(id.in_group(names::SYSTEM_MASTERS) && id.in_group(names::SYSTEM_AUTHENTICATED));
        // A token decides alone, and an unknown one is refused (no fallback to the peer).
        let e = a
            .authenticate(Credentials::Unix {
                peer: Some(me),
                authorization: Some("Bearer nope"),
            })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "invalid bearer token");
        // Another scheme is not a token: the peer decides.
        assert!(a
            .authenticate(Credentials::Unix {
                peer: Some(me),
                authorization: Some("Basic abc"),
            })
            .await
            .is_ok());
        let bearer = Credentials::Unix {
            peer: Some(me),
            authorization: Some("Bearer nope"),
        };
        assert_eq!(
            bearer.failure_message(false),
            "Authentication failed, attempted: bearer"
        );
        // As kube-apiserver's `getAuthMethods`: a bearer needs a word after the scheme, basic a
        // base64 `user:password`; a query's `access_token` and certificates count too.
        for (header, access_token, want) in [
            ("Bearer", false, "no credentials provided"),
            ("Bearer ", false, "no credentials provided"),
            ("bearer  x", false, "attempted: bearer"),
            ("Bearer t\u{f8}k", false, "attempted: bearer"),
            ("Basic dTpw", false, "attempted: basic"),
            ("basic dTpw", true, "attempted: basic, access_token"),
            ("Basic abc", false, "no credentials provided"),
            ("Basic dXNlcg==", false, "no credentials provided"),
            ("Token x", true, "attempted: access_token"),
        ] {
            let creds = Credentials::Tls {
                client_certs: None,
                client_certs_refused: true,
                authorization: Some(header),
            };
            let want = match want.strip_prefix("attempted: ") {
                Some(m) => format!("Authentication failed, attempted: {m}, x509"),
                None => "Authentication failed, attempted: x509".to_owned(),
            };
            assert_eq!(creds.failure_message(access_token), want, "{header}");
        }
        for creds in [
            Credentials::Unix {
                peer: None,
                authorization: None,
            },
            Credentials::Tls {
                client_certs: None,
                client_certs_refused: false,
                authorization: None,
            },
        ] {
            assert!(matches!(
                a.authenticate(creds).await,
                Err(AccessError::NoCredentials)
            ));
            assert_eq!(
                creds.failure_message(false),
                "Authentication failed, no credentials provided"
            );
        }
    }
}
