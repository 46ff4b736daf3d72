//! The KMS plugin: KMS v2 and v1 gRPC services over the keyring, the standard health service,
//! and keyward's admin service on a separate socket.
//!
//! Handlers are thin: convert the request, call the [`Keyring`], convert the error with
//! [`to_status`], the one place keyring errors become gRPC statuses. [`PluginServer`] binds the
//! sockets, runs key maintenance and serves; [`serve`] serves already-bound listeners. The
//! keyring may start sealed with Shamir shares ([`PluginKeyring`]): `Status` says so, `Encrypt`
//! and `Decrypt` answer `Unavailable`, and the admin API's `Unseal` opens it.

mod admin;
mod server;
mod state;

pub use admin::KmsAdmin;
pub use server::PluginServer;
pub use state::PluginKeyring;

use std::future::Future;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use zeroize::Zeroize;

use crate::crypto::key_id_hash;
use crate::keyring::{Keyring, KeyringError};
use crate::metrics::RpcLayer;
use crate::pb::keyward_v1 as admin_pb;
use crate::pb::kms_v1beta1 as v1_pb;
use crate::pb::kms_v2 as v2_pb;
use crate::reason::{bad_request, Reason};
use crate::seal::SealError;
use crate::uds::PeerAllow;

/// The KMS v2 API version reported by `Status`.
pub const V2_VERSION: &str = "v2";
/// The KMS v1 API version.
pub const V1_VERSION: &str = "v1beta1";
/// Requests larger than this are refused by the transport before a handler sees them.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Maps a keyring error to a gRPC status carrying its [`Reason`]. Caller mistakes get a specific
/// code and a message naming the field; decryption failures are one opaque status; storage
/// failures (e.g. etcd unreachable) are `Unavailable`; everything else is `Internal` with the
/// detail only in the log.
pub fn to_status(e: KeyringError) -> Status {
    match e {
        KeyringError::InvalidInput { field, reason } => bad_request(format!("{field}: {reason}")),
        KeyringError::Decrypt => bad_request("decryption failed"),
        KeyringError::UnknownKey(id) => {
            Reason::NotFound.status(Code::NotFound, format!("key_id: no key {id:?}"))
        }
        KeyringError::Precondition(msg) => Reason::Conflict.status(Code::FailedPrecondition, msg),
        e @ (KeyringError::Exhausted
        | KeyringError::Sealed
        | KeyringError::Resealed
        | KeyringError::RolledBack { .. }) => {
            Reason::ServiceUnavailable.status(Code::Unavailable, e.to_string())
        }
        // A share or a new seal the operator gave: say what is wrong (never the secret).
        KeyringError::Seal(
            e @ (SealError::Share(_)
            | SealError::SharesDoNotOpen
            | SealError::BadSpec(_)
            | SealError::BadField { .. }),
        ) => bad_request(e.to_string()),
        // The operator's setup (an HSM that refuses, a key file that cannot be read): paths and
        // labels, no secrets.
        KeyringError::Seal(
            e @ (SealError::Pkcs11(_)
            | SealError::Read { .. }
            | SealError::Permissions { .. }
            | SealError::BadContent { .. }
            | SealError::KdfParams(_)),
        ) => {
            tracing::warn!(error = %e, "root key source refused");
            Reason::Conflict.status(Code::FailedPrecondition, e.to_string())
        }
        // Where the keyring is stored and what failed (no key material): e.g. etcd is down.
        e @ KeyringError::Storage { .. } => {
            tracing::error!(error = %e, "keyring storage failed");
            Reason::ServiceUnavailable.status(Code::Unavailable, e.to_string())
        }
        other => {
            tracing::error!(error = %other, "internal error");
            Reason::InternalError.status(Code::Internal, "internal error; see the plugin's log")
        }
    }
}

/// `v2.KeyManagementService`.
#[derive(Debug, Clone)]
pub struct KmsV2 {
    keyring: Arc<PluginKeyring>,
}

#[tonic::async_trait]
impl v2_pb::key_management_service_server::KeyManagementService for KmsV2 {
    async fn status(
        &self,
        _req: Request<v2_pb::StatusRequest>,
    ) -> Result<Response<v2_pb::StatusResponse>, Status> {
        let Some(keyring) = self.keyring.open() else {
            return Ok(Response::new(v2_pb::StatusResponse {
                version: V2_VERSION.to_owned(),
                healthz: self.keyring.sealed_healthz(),
                key_id: String::new(),
            }));
        };
        let h = keyring.health();
        Ok(Response::new(v2_pb::StatusResponse {
            version: V2_VERSION.to_owned(),
            healthz: h.problem.unwrap_or("ok").to_owned(),
            key_id: h.primary_key_id.to_string(),
        }))
    }

    async fn decrypt(
        &self,
        req: Request<v2_pb::DecryptRequest>,
    ) -> Result<Response<v2_pb::DecryptResponse>, Status> {
        let req = req.into_inner();
        let keyring = self.keyring.get().map_err(to_status)?;
        match keyring.decrypt(&req.ciphertext, Some(&req.key_id)).await {
            Ok(mut plain) => {
                tracing::debug!(uid = %req.uid, key_id_hash = %key_id_hash(&req.key_id), "decrypt");
                Ok(Response::new(v2_pb::DecryptResponse {
                    plaintext: std::mem::take(&mut *plain),
                }))
            }
            Err(e) => {
                log_decrypt_failure(keyring, &e, &req.ciphertext, Some(&req.key_id), &req.uid);
                Err(to_status(e))
            }
        }
    }

    async fn encrypt(
        &self,
        req: Request<v2_pb::EncryptRequest>,
    ) -> Result<Response<v2_pb::EncryptResponse>, Status> {
        let mut req = req.into_inner();
        let res = match self.keyring.get() {
            Ok(keyring) => keyring.encrypt(&req.plaintext).await,
            Err(e) => Err(e),
        };
        req.plaintext.zeroize();
        let (ciphertext, key_id) = res.map_err(to_status)?;
        tracing::debug!(uid = %req.uid, key_id_hash = %key_id_hash(&key_id), "encrypt");
        Ok(Response::new(v2_pb::EncryptResponse {
            ciphertext,
            key_id: key_id.to_string(),
            annotations: Default::default(),
        }))
    }
}

/// Logs a refused Decrypt with why (a key retired too early shows here first), at most once a
/// second (a client can send them at request rate): the answer itself says nothing more than
/// "decryption failed".
fn log_decrypt_failure(
    keyring: &Keyring,
    e: &KeyringError,
    ciphertext: &[u8],
    key_id: Option<&str>,
    uid: &str,
) {
    static DECRYPT_FAILED: crate::log_throttle::LogThrottle =
        crate::log_throttle::LogThrottle::new();
    let Some(held_back) = DECRYPT_FAILED.admit() else {
        return;
    };
    let reason = match e {
        KeyringError::Decrypt => keyring.decrypt_refusal(ciphertext, key_id),
        _ => "",
    };
    tracing::warn!(
        uid = %uid,
        key_id_hash = %key_id_hash(key_id.unwrap_or("")),
        len = ciphertext.len(),
        error = %e,
        reason,
        held_back,
        "decrypt failed"
    );
}

/// `v1beta1.KeyManagementService` (deprecated upstream; same keyring).
#[derive(Debug, Clone)]
pub struct KmsV1 {
    keyring: Arc<PluginKeyring>,
}

fn check_v1_version(version: &str) -> Result<(), Status> {
    if version.is_empty() || version == V1_VERSION {
        Ok(())
    } else {
        Err(bad_request(format!(
            "version: {version:?} is not supported, only {V1_VERSION}"
        )))
    }
}

#[tonic::async_trait]
impl v1_pb::key_management_service_server::KeyManagementService for KmsV1 {
    async fn version(
        &self,
        req: Request<v1_pb::VersionRequest>,
    ) -> Result<Response<v1_pb::VersionResponse>, Status> {
        check_v1_version(&req.get_ref().version)?;
        Ok(Response::new(v1_pb::VersionResponse {
            version: V1_VERSION.to_owned(),
            runtime_name: "keyward".to_owned(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn decrypt(
        &self,
        req: Request<v1_pb::DecryptRequest>,
    ) -> Result<Response<v1_pb::DecryptResponse>, Status> {
        let req = req.into_inner();
        check_v1_version(&req.version)?;
        let keyring = self.keyring.get().map_err(to_status)?;
        let mut plain = keyring.decrypt(&req.cipher, None).await.map_err(|e| {
            log_decrypt_failure(keyring, &e, &req.cipher, None, "");
            to_status(e)
        })?;
        Ok(Response::new(v1_pb::DecryptResponse {
            plain: std::mem::take(&mut *plain),
        }))
    }

    async fn encrypt(
        &self,
        req: Request<v1_pb::EncryptRequest>,
    ) -> Result<Response<v1_pb::EncryptResponse>, Status> {
        let mut req = req.into_inner();
        check_v1_version(&req.version)?;
        let res = match self.keyring.get() {
            Ok(keyring) => keyring.encrypt(&req.plain).await,
            Err(e) => Err(e),
        };
        req.plain.zeroize();
        let (cipher, _) = res.map_err(to_status)?;
        Ok(Response::new(v1_pb::EncryptResponse { cipher }))
    }
}

/// Sets the gRPC health status of the plugin's services (and of the server, `""`): serving
/// while the keyring is open and healthy.
async fn report_health(reporter: &tonic_health::server::HealthReporter, keyring: &PluginKeyring) {
    let status = if keyring.open().is_some_and(|k| k.health().healthy) {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    for name in [
        "",
        "v2.KeyManagementService",
        "v1beta1.KeyManagementService",
    ] {
        reporter.set_service_status(name, status).await;
    }
}

/// Serves KMS v2, KMS v1 and gRPC health on `kms`, and the admin API on `admin` (if given) to the
/// callers its [`PeerAllow`] admits (others get `PermissionDenied`), until `shutdown` completes;
/// then stops accepting, drains in-flight calls and closes the keyring
/// ([`PluginKeyring::close`]). Every call on both sockets goes through `rpc`
/// ([`RpcLayer::disabled`] to measure nothing). A [`Keyring`]
/// converts into a [`PluginKeyring`] (and then runs key maintenance while served).
pub async fn serve(
    kms: UnixListener,
    admin: Option<(UnixListener, PeerAllow)>,
    keyring: impl Into<Arc<PluginKeyring>>,
    rpc: RpcLayer,
    admin_audit: crate::audit::Auditor,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let keyring: Arc<PluginKeyring> = keyring.into();
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });

    let (reporter, health) = tonic_health::server::health_reporter();
    // Reported once before the socket is served (a probe right after start must not find the
    // services unregistered), then polled.
    report_health(&reporter, &keyring).await;
    let health_keyring = keyring.clone();
    let health_token = token.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state::HEALTH_POLL);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = health_token.cancelled() => break,
            }
            report_health(&reporter, &health_keyring).await;
        }
    });

    let v2 = v2_pb::key_management_service_server::KeyManagementServiceServer::new(KmsV2 {
        keyring: keyring.clone(),
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let v1 = v1_pb::key_management_service_server::KeyManagementServiceServer::new(KmsV1 {
        keyring: keyring.clone(),
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    let restate = tower::util::MapResponseLayer::new(
        crate::api::restate_as_grpc_go::<tonic::body::Body>
            as fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>,
    );
    let kms_server = tonic::transport::Server::builder()
        .http2_max_header_list_size(crate::net::MAX_HEADER_LIST_BYTES)
        .layer(rpc.clone())
        .layer(restate)
        .add_service(health)
        .add_service(v2)
        .add_service(v1)
        .serve_with_incoming_shutdown(
            crate::net::unix_incoming(kms),
            token.clone().cancelled_owned(),
        );

    let res = match admin {
        Some((admin, allow)) => {
            let admin_server = tonic::transport::Server::builder()
                .http2_max_header_list_size(crate::net::MAX_HEADER_LIST_BYTES)
                .layer(rpc)
                .add_service(admin_pb::kms_admin_server::KmsAdminServer::new(
                    KmsAdmin::new(keyring.clone())
                        .with_auditor(admin_audit)
                        .with_allow(allow),
                ))
                .serve_with_incoming_shutdown(
                    crate::net::unix_incoming(admin),
                    token.clone().cancelled_owned(),
                );
            tokio::try_join!(kms_server, admin_server).map(|_| ())
        }
        None => kms_server.await,
    };
    token.cancel();
    keyring.close().await;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each keyring error's code, reason and message.
    #[test]
    fn every_keyring_error_maps_to_its_code_and_reason() {
        let cases = [
            (
                KeyringError::InvalidInput {
                    field: "plaintext",
                    reason: "too large".into(),
                },
                Code::InvalidArgument,
                Reason::BadRequest,
                "plaintext: too large",
            ),
            (
                KeyringError::Decrypt,
                Code::InvalidArgument,
                Reason::BadRequest,
                "decryption failed",
            ),
            (
                KeyringError::UnknownKey("kw-1".into()),
                Code::NotFound,
                Reason::NotFound,
                "key_id: no key \"kw-1\"",
            ),
            (
                KeyringError::Precondition("kw-1 is the primary key".into()),
                Code::FailedPrecondition,
                Reason::Conflict,
                "kw-1 is the primary key",
            ),
            (
                KeyringError::Exhausted,
                Code::Unavailable,
                Reason::ServiceUnavailable,
                "the primary key reached its encryption limit and could not be rotated",
            ),
            (
                KeyringError::RolledBack {
                    location: "etcd:http://127.0.0.1:2379 key /keyward/kms/keyring".into(),
                    reason: "it forgets key #2".into(),
                },
                Code::Unavailable,
                Reason::ServiceUnavailable,
                "refusing the keyring document in etcd:http://127.0.0.1:2379 key \
                 /keyward/kms/keyring as a rollback: it forgets key #2",
            ),
            (
                KeyringError::Storage {
                    location: "etcd:http://127.0.0.1:2379".into(),
                    message: "unreachable".into(),
                },
                Code::Unavailable,
                Reason::ServiceUnavailable,
                "keyring storage in etcd:http://127.0.0.1:2379: unreachable",
            ),
            (
                KeyringError::Corrupt("bad MAC".into()),
                Code::Internal,
                Reason::InternalError,
                "internal error; see the plugin's log",
            ),
        ];
        for (e, code, reason, message) in cases {
            let s = to_status(e);
            assert_eq!(
                (s.code(), Reason::of(&s), s.message()),
                (code, Some(reason), message)
            );
        }
        for (e, code, reason) in [
            (
                KeyringError::Sealed,
                Code::Unavailable,
                Reason::ServiceUnavailable,
            ),
            (
                KeyringError::Seal(SealError::SharesDoNotOpen),
                Code::InvalidArgument,
                Reason::BadRequest,
            ),
            (
                KeyringError::Seal(SealError::Pkcs11("wrong PIN for token \"t\"".into())),
                Code::FailedPrecondition,
                Reason::Conflict,
            ),
        ] {
            let message = e.to_string();
            let s = to_status(e);
            assert_eq!(
                (s.code(), Reason::of(&s), s.message()),
                (code, Some(reason), message.as_str())
            );
        }
        let s = check_v1_version("v2").unwrap_err();
        assert_eq!(Reason::of(&s), Some(Reason::BadRequest));
    }
}
