//! What every `keyward.v1` handler does before calling [`Access`]: read the caller's
//! credentials off the request (Unix peer credentials, the TLS client certificate, the
//! `authorization` header), authenticate them, apply impersonation (`impersonate-user`,
//! `impersonate-group`, `impersonate-uid` and `impersonate-extra-*` metadata, as
//! kube-apiserver's `Impersonate-*` headers), and build the
//! [`RequestContext`]; and the one mapping of [`AccessError`] to a gRPC status.

use std::sync::Arc;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Code, Request, Status};

use super::asked::Asked;
use super::to_status;
use crate::access::{Access, AccessError, Authenticators, Credentials, RequestContext, Source};
use crate::authn::unix::PeerCredentials;
use crate::authz::ImpersonationRequest;

/// Metadata naming the user to act as (`kubectl --as`).
pub const IMPERSONATE_USER: &str = "impersonate-user";
/// Metadata naming a group to act as (`kubectl --as-group`, repeated).
pub const IMPERSONATE_GROUP: &str = "impersonate-group";
/// Metadata naming the uid to act as (`kubectl --as-uid`).
pub const IMPERSONATE_UID: &str = "impersonate-uid";
/// The prefix of metadata naming an extra value to act with (`impersonate-extra-<key>`, the
/// key percent-encoded, repeated).
pub const IMPERSONATE_EXTRA_PREFIX: &str = "impersonate-extra-";

/// The guarded store and the authenticators, shared by every service of a server.
#[derive(Debug, Clone)]
pub struct Frontend {
    /// The guarded store.
    pub access: Arc<Access>,
    /// The server's authenticators.
    pub authn: Arc<Authenticators>,
}

impl Frontend {
    /// A front end over `access`, authenticating with `authn`.
    pub fn new(access: Arc<Access>, authn: Arc<Authenticators>) -> Self {
        Self { access, authn }
    }

    /// Authenticates `req`, applies impersonation and describes it for `access`.
    pub(super) async fn context<T: Asked>(
        &self,
        req: &Request<T>,
        uri: &str,
    ) -> Result<RequestContext, Status> {
        let md = req.metadata();
        let authorization = md.get("authorization").and_then(|v| v.to_str().ok());
        let uds = req.extensions().get::<UdsConnectInfo>();
        let (creds, source) = match uds {
            Some(info) => {
                let peer = info.peer_cred.as_ref().map(PeerCredentials::from);
                let source = match peer {
                    Some(p) => Source::Unix {
                        uid: p.uid,
                        gid: p.gid,
                    },
                    None => Source::InProcess,
                };
                (
                    Credentials::Unix {
                        peer,
                        authorization,
                    },
                    source,
                )
            }
            None => (
                Credentials::Tls {
                    client_certs: None,
                    client_certs_refused: false,
                    authorization,
                },
                req.remote_addr()
                    .map(Source::Tcp)
                    .unwrap_or(Source::InProcess),
            ),
        };
        let certs = req.peer_certs();
        let creds = match (creds, certs.as_deref()) {
            // Verified against the client CA during the handshake (tonic's TLS).
            (Credentials::Tls { authorization, .. }, Some(chain)) => Credentials::Tls {
                client_certs: Some(chain.as_slice()),
                client_certs_refused: false,
                authorization,
            },
            (c, _) => c,
        };
        let audit_id = md
            .get("audit-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let user_agent = md
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let user = match self.authn.authenticate(creds).await {
            Ok(user) => user,
            Err(e) => {
                // Recorded as kube-apiserver does: the request the call makes, no user.
                let mut info = crate::audit::RequestInfo::new(uri, source.peer());
                info.audit_id = audit_id;
                info.user_agent = user_agent;
                let attrs = req.get_ref().asked(e.refused_identity());
                self.access
                    .record_unauthenticated(&attrs, info, &creds.failure_message(false))
                    .await;
                return Err(access_status(e));
            }
        };
        let mut ctx = RequestContext::new(user, source, uri);
        ctx.audit_id = audit_id;
        ctx.user_agent = user_agent;
        // As the Kubernetes API reads `Impersonate-*` headers: every one is checked (a value
        // that is not ASCII too: bytes that are not UTF-8 become U+FFFD), none ignored.
        let text = |v: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>| {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        };
        let all = |key: &str| md.get_all(key).iter().map(text).collect::<Vec<_>>();
        let mut imp = ImpersonationRequest {
            user: md.get(IMPERSONATE_USER).map(text).unwrap_or_default(),
            uid: md.get(IMPERSONATE_UID).map(text).unwrap_or_default(),
            groups: all(IMPERSONATE_GROUP),
            ..ImpersonationRequest::default()
        };
        for key in md.keys() {
            if let tonic::metadata::KeyRef::Ascii(key) = key {
                if let Some(extra) = key.as_str().strip_prefix(IMPERSONATE_EXTRA_PREFIX) {
                    imp.extra.insert(
                        crate::kube::request::percent_decode(extra),
                        all(key.as_str()),
                    );
                }
            }
        }
        // A refused impersonation is recorded as the request the call makes.
        let original = req.get_ref().asked(ctx.user.clone());
        self.access
            .impersonate(ctx, &imp, &original)
            .await
            .map_err(access_status)
    }
}

/// Maps an access-layer error to a gRPC status carrying its [`Reason`](crate::reason::Reason).
pub fn access_status(e: AccessError) -> Status {
    let reason = e.reason();
    match e {
        AccessError::NoCredentials | AccessError::Unauthenticated { .. } => {
            reason.status(Code::Unauthenticated, e.to_string())
        }
        AccessError::BadRequest(_)
        | AccessError::ImpersonationWithoutUser(_)
        | AccessError::InvalidTokenRequest(_) => {
            reason.status(Code::InvalidArgument, e.to_string())
        }
        AccessError::Forbidden(_) => reason.status(Code::PermissionDenied, e.to_string()),
        AccessError::NamespaceNotFound(_) => reason.status(Code::NotFound, e.to_string()),
        AccessError::AuditUnavailable(_) => reason.status(Code::Unavailable, e.to_string()),
        AccessError::KeyMaterial { .. } => {
            tracing::error!(error = %e, "server key unavailable");
            reason.status(Code::Unavailable, e.to_string())
        }
        AccessError::Store(e) => to_status(e),
    }
}
