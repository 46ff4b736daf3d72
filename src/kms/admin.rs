//! `keyward.v1.KmsAdmin`, served on the admin socket only: status, keys, rotate, retire,
//! destroy, and the root of trust: `Unseal` (one Shamir share per call) and `RekeyRoot`.
//!
//! With an [`Auditor`] every call is recorded in the store's audit format, as the caller's peer
//! uid (`system:admin` for the plugin's own uid and root, `system:unix:<uid>` otherwise) doing
//! a verb on a resource of API group `kms.keyward.io`: `get status`, `list keys`,
//! `create keys/rotate`, `update keys/retire` and `delete keys` named the key id,
//! `update unseal`, `update root` (rekey). The socket's mode and the allow list
//! ([`KmsAdmin::with_allow`]) decide who may call: an admitted call is recorded with the
//! decision `allow`, a refused one with `forbid` and 403. A call whose event cannot be written
//! is refused (`Unavailable`) unless the log fails open.

use std::future::Future;
use std::sync::Arc;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Code, Request, Response, Status};

use super::{to_status, PluginKeyring};
use crate::audit::{Auditor, Peer, RequestInfo, ResponseStatus};
use crate::authn::unix::{PeerCredentials, UnixAuthenticator};
use crate::authz::{Attributes, Decision};
use crate::keyring::{KeyInfo, KeyState, Keyring};
use crate::pb::keyward_v1 as admin_pb;
use crate::reason::bad_request;
use crate::reason::Reason;
use crate::seal::SealSpec;
use crate::uds::PeerAllow;

/// `keyward.v1.KmsAdmin`, for the admin socket only.
#[derive(Debug, Clone)]
pub struct KmsAdmin {
    keyring: Arc<PluginKeyring>,
    auditor: Auditor,
    allow: Option<PeerAllow>,
}

/// The API group of the admin socket's resources in audit events.
pub const ADMIN_GROUP: &str = "kms.keyward.io";

impl KmsAdmin {
    /// The admin service of the plugin serving `keyring`, recording nothing.
    pub fn new(keyring: Arc<PluginKeyring>) -> KmsAdmin {
        KmsAdmin {
            keyring,
            auditor: Auditor::disabled(),
            allow: None,
        }
    }

    /// Admits only the callers `allow` admits; others get `PermissionDenied`, recorded (with
    /// the decision `forbid`) when an auditor is set.
    pub fn with_allow(mut self, allow: PeerAllow) -> KmsAdmin {
        self.allow = Some(allow);
        self
    }

    /// Records every call with `auditor`.
    pub fn with_auditor(mut self, auditor: Auditor) -> KmsAdmin {
        self.auditor = auditor;
        self
    }

    /// Runs `call` for the caller `peer`, as the request (`verb` on `resource[/sub]` named `name`),
    /// recorded before and after.
    async fn audited<T>(
        &self,
        (peer, user_agent): (Option<PeerCredentials>, String),
        method: &str,
        (verb, resource, sub, name): (&str, &str, &str, &str),
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let refused = self
            .allow
            .as_ref()
            .and_then(|a| a.check_peer(peer.map(|p| (p.uid, p.gid))).err());
        if !self.auditor.is_enabled() {
            return match refused {
                Some(status) => Err(status),
                None => call.await,
            };
        }
        let user = match peer {
            Some(p) => UnixAuthenticator::new(UnixAuthenticator::server_uid())
                .authenticate(p)
                .with_authenticated_group(),
            None => crate::authn::Identity::new("system:unix:unknown", "", Vec::new()),
        };
        let attrs = Attributes::resource(user, verb, resource)
            .with_group(ADMIN_GROUP)
            .with_subresource(sub)
            .with_name(name);
        let mut info = RequestInfo::new(
            format!("/keyward.v1.KmsAdmin/{method}"),
            peer.map_or(Peer::Unknown, |p| Peer::Unix { uid: p.uid }),
        );
        info.user_agent = user_agent;
        let mut rec = self.auditor.begin(&attrs, info);
        let unavailable = |e: crate::audit::AuditError| {
            tracing::error!(error = %e, "audit event not written; admin call refused");
            Reason::ServiceUnavailable.status(
                Code::Unavailable,
                "the audit log is unavailable: the request was refused because it could not be recorded",
            )
        };
        // A refusal or a read changes nothing before its next stage: both events are written
        // together, before the answer, and a failure refuses the call. A change's outcome
        // stands once its `RequestReceived` is written (`RequestAudit::response_complete`).
        if refused.is_some() || attrs.is_read_only() {
            rec.defer_request_received();
        }
        if let Some(status) = refused {
            let decision = Decision::Deny {
                reason: "admin socket: the caller is not in its allow list".into(),
            };
            rec.request_received(&decision, None)
                .await
                .map_err(unavailable)?;
            rec.response_complete(
                ResponseStatus::failure(Reason::Forbidden, status.message()),
                None,
            )
            .await
            .map_err(unavailable)?;
            return Err(status);
        }
        let decision = Decision::Allow {
            reason: "admin socket: the caller is in its allow list".into(),
        };
        rec.request_received(&decision, None)
            .await
            .map_err(unavailable)?;
        let result = call.await;
        let status = match &result {
            Ok(_) => ResponseStatus::success(200),
            Err(s) => {
                ResponseStatus::failure(Reason::of(s).unwrap_or(Reason::InternalError), s.message())
            }
        };
        rec.response_complete(status, None)
            .await
            .map_err(unavailable)?;
        result
    }

    fn open(&self) -> Result<&Keyring, Status> {
        self.keyring.get().map_err(to_status)
    }
}

/// The caller as the audit log records it: its peer credentials and its user agent.
fn caller_of<R>(req: &Request<R>) -> (Option<PeerCredentials>, String) {
    let agent = req
        .metadata()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (peer_of(req), agent)
}

/// The caller's peer credentials, as the kernel reported them.
fn peer_of<R>(req: &Request<R>) -> Option<PeerCredentials> {
    req.extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred.as_ref())
        .map(PeerCredentials::from)
}

fn key_info_pb(k: KeyInfo) -> admin_pb::KeyInfo {
    let state = match k.state {
        KeyState::Primary => admin_pb::KeyState::Primary,
        KeyState::DecryptOnly => admin_pb::KeyState::DecryptOnly,
        KeyState::Disabled => admin_pb::KeyState::Disabled,
        KeyState::Destroyed => admin_pb::KeyState::Destroyed,
    };
    admin_pb::KeyInfo {
        key_id: k.key_id,
        state: state as i32,
        algorithm: k.algorithm.name().to_owned(),
        created_unix: k.created_unix,
        encryptions: k.encryptions,
    }
}

fn required<'a>(field: &'static str, value: &'a str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(bad_request(format!("{field}: required")))
    } else {
        Ok(value)
    }
}

#[tonic::async_trait]
impl admin_pb::kms_admin_server::KmsAdmin for KmsAdmin {
    async fn status(
        &self,
        req: Request<admin_pb::AdminStatusRequest>,
    ) -> Result<Response<admin_pb::AdminStatusResponse>, Status> {
        let spec = ("get", "status", "", "");
        self.audited(caller_of(&req), "Status", spec, self.status_now())
            .await
            .map(Response::new)
    }

    async fn list_keys(
        &self,
        req: Request<admin_pb::ListKeysRequest>,
    ) -> Result<Response<admin_pb::ListKeysResponse>, Status> {
        let spec = ("list", "keys", "", "");
        self.audited(caller_of(&req), "ListKeys", spec, async {
            Ok(Response::new(admin_pb::ListKeysResponse {
                keys: self.open()?.keys().into_iter().map(key_info_pb).collect(),
            }))
        })
        .await
    }

    async fn rotate(
        &self,
        req: Request<admin_pb::RotateRequest>,
    ) -> Result<Response<admin_pb::RotateResponse>, Status> {
        let spec = ("create", "keys", "rotate", "");
        self.audited(caller_of(&req), "Rotate", spec, async {
            let r = self.open()?.rotate().await.map_err(to_status)?;
            Ok(Response::new(admin_pb::RotateResponse {
                primary: Some(key_info_pb(r.primary)),
                previous_key_id: r.previous_key_id,
            }))
        })
        .await
    }

    async fn retire(
        &self,
        req: Request<admin_pb::RetireRequest>,
    ) -> Result<Response<admin_pb::RetireResponse>, Status> {
        let key_id = req.get_ref().key_id.as_str();
        let spec = ("update", "keys", "retire", key_id);
        self.audited(caller_of(&req), "Retire", spec, async {
            let key_id = required("key_id", key_id)?;
            let k = self.open()?.retire(key_id).await.map_err(to_status)?;
            Ok(Response::new(admin_pb::RetireResponse {
                key: Some(key_info_pb(k)),
            }))
        })
        .await
    }

    async fn destroy(
        &self,
        req: Request<admin_pb::DestroyRequest>,
    ) -> Result<Response<admin_pb::DestroyResponse>, Status> {
        let r = req.get_ref();
        let spec = ("delete", "keys", "", r.key_id.as_str());
        self.audited(caller_of(&req), "Destroy", spec, async {
            let key_id = required("key_id", &r.key_id)?;
            let k = self
                .open()?
                .destroy(key_id, &r.confirm)
                .await
                .map_err(to_status)?;
            Ok(Response::new(admin_pb::DestroyResponse {
                key: Some(key_info_pb(k)),
            }))
        })
        .await
    }

    async fn unseal(
        &self,
        req: Request<admin_pb::UnsealRequest>,
    ) -> Result<Response<admin_pb::UnsealResponse>, Status> {
        let caller = caller_of(&req);
        let mut req = req.into_inner();
        let spec = ("update", "unseal", "", "");
        let res = self
            .audited(caller, "Unseal", spec, async {
                if !req.reset {
                    required("share", req.share.trim())?;
                }
                self.keyring
                    .unseal(&req.share, req.reset)
                    .await
                    .map_err(to_status)
            })
            .await;
        zeroize::Zeroize::zeroize(&mut req.share);
        match res? {
            Some(p) => Ok(Response::new(admin_pb::UnsealResponse {
                sealed: true,
                given: p.given.into(),
                threshold: p.threshold.into(),
                shares: p.shares.into(),
                primary_key_id: String::new(),
            })),
            None => Ok(Response::new(admin_pb::UnsealResponse {
                sealed: false,
                primary_key_id: self.open()?.health().primary_key_id.to_string(),
                ..Default::default()
            })),
        }
    }

    async fn rekey_root(
        &self,
        req: Request<admin_pb::RekeyRootRequest>,
    ) -> Result<Response<admin_pb::RekeyRootResponse>, Status> {
        let spec = ("update", "root", "", "");
        let text = req.get_ref().new_seal.as_str();
        self.audited(caller_of(&req), "RekeyRoot", spec, async {
            let text = required("new_seal", text)?;
            let spec: SealSpec = text
                .parse()
                .map_err(|e| bad_request(format!("new_seal: {e}")))?;
            // The caller picked these files: they must be the plugin's own.
            let spec = spec
                .into_trusted()
                .map_err(|e| bad_request(format!("new_seal: {e}")))?;
            let keyring = self.open()?;
            let r = keyring.rekey_root(&spec, None).await.map_err(to_status)?;
            let (shares, threshold) = match &r.shares {
                Some(s) => (
                    s.shares.iter().map(|s| s.as_str().to_owned()).collect(),
                    s.threshold.into(),
                ),
                None => (Vec::new(), 0),
            };
            Ok(Response::new(admin_pb::RekeyRootResponse {
                seal: r.seal.to_owned(),
                shares,
                threshold,
                primary_key_id: keyring.health().primary_key_id.to_string(),
            }))
        })
        .await
    }
}

impl KmsAdmin {
    /// The plugin's status now (sealed or not).
    async fn status_now(&self) -> Result<admin_pb::AdminStatusResponse, Status> {
        let Some(keyring) = self.keyring.open() else {
            let p = self
                .keyring
                .progress()
                .unwrap_or_else(|| crate::keyring::UnsealProgress {
                    given: 0,
                    threshold: 0,
                    shares: 0,
                    set_id: String::new(),
                });
            return Ok(admin_pb::AdminStatusResponse {
                healthz: self.keyring.sealed_healthz(),
                seal: "shamir".to_owned(),
                storage: self.keyring.storage().to_owned(),
                sealed: true,
                unseal_given: p.given.into(),
                unseal_threshold: p.threshold.into(),
                unseal_shares: p.shares.into(),
                ..Default::default()
            });
        };
        let h = keyring.health();
        let info = keyring.info();
        Ok(admin_pb::AdminStatusResponse {
            healthz: h.problem.unwrap_or("ok").to_owned(),
            primary_key_id: h.primary_key_id.to_string(),
            keyring_id: info.keyring_id,
            algorithm: info.algorithm.name().to_owned(),
            seal: info.seal.to_owned(),
            storage: info.storage,
            rotate_after_seconds: info.policy.max_age.map_or(0, |d| d.as_secs()),
            rotate_after_encryptions: info.policy.max_encryptions.unwrap_or(0),
            key_count: keyring.keys().len() as u32,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::Reason;

    #[test]
    fn required_fields_are_named() {
        let s = required("key_id", "").unwrap_err();
        assert_eq!(Reason::of(&s), Some(Reason::BadRequest));
        assert_eq!(s.message(), "key_id: required");
    }
}
