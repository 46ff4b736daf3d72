//! The kms v1 and v2 providers: clients of any KMS plugin, behaving like kube-apiserver's
//! (facts §2, §3, §4.3). They call a plugin over its Unix socket and cache what it unwraps; the
//! plugin side, keyward's own KMS service, lives in [`crate::kms`].
//!
//! KMS v2 ([`v2`]): one 32-byte seed is wrapped by the plugin's `Encrypt` when the plugin's
//! `key_id` changes (never per write); every write derives a fresh AES-256-GCM key with
//! HKDF-SHA256-Expand(seed, 32 random info bytes). `Status` is polled every minute (every 10 s
//! after a failure); writes continue for 3 minutes after the last good check, then fail. Seeds
//! unwrapped for reads are cached, so reads of cached data keep working while the plugin is down.
//!
//! KMS v1 ([`v1`]): a new 32-byte DEK per write, wrapped by the plugin, stored in front of the
//! AES-GCM ciphertext; unwrapped DEKs are kept in an LRU cache of `cachesize` entries.
//!
//! This file holds what both share: the lazily connected channel, call timeouts and the mapping
//! of plugin failures to [`EncryptionError`].
//! Two parts of the kms v2 read path have their own files: `object` reads a stored
//! `EncryptedObject` in place, and `derived` caches the data keys derived for reads.

mod derived;
mod object;
mod v1;
mod v2;

use std::time::Duration;

use tonic::transport::Channel;

use super::config::KmsConfiguration;
use super::EncryptionError;
use crate::uds;

pub use crate::names::is_fqdn;
pub(super) use v1::KmsV1;
pub(super) use v2::KmsV2;
pub use v2::{KmsPollGuard, KmsV2Status};
#[cfg(test)]
pub(super) use {v1::v1_seal, v2::v2_seal};

fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Times a call refused unprocessed by a closing plugin is made again (see [`Plugin::call`]).
const REFUSED_RETRIES: u32 = 3;

/// Whether a plugin's answer `code` refuses the call whatever the moment (the request, or
/// the data in it, is wrong for the plugin), rather than saying it cannot answer now.
fn refused_for_good(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::DataLoss
    )
}

/// Shared plumbing: a lazily connected channel and per-call timeouts with error mapping.
struct Plugin {
    name: String,
    endpoint: String,
    timeout: Duration,
    channel: Channel,
}

impl Plugin {
    fn new(c: &KmsConfiguration) -> Self {
        Self {
            name: c.name.clone(),
            endpoint: c.endpoint.clone(),
            timeout: c.timeout,
            channel: uds::lazy_channel(c.target.clone()),
        }
    }

    fn err(&self, message: impl Into<String>) -> EncryptionError {
        EncryptionError::Kms {
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            message: message.into(),
        }
    }

    fn contract(&self, message: impl Into<String>) -> EncryptionError {
        EncryptionError::KmsContract {
            name: self.name.clone(),
            message: message.into(),
        }
    }

    /// Makes one call with `attempt`, within the plugin's timeout. A call the plugin refused
    /// unprocessed because it was closing the connection (a graceful restart's GOAWAY) is made
    /// again on a new connection, up to [`REFUSED_RETRIES`] times, as grpc-go (kube-apiserver's
    /// client) does transparently; any other failure is returned as it is.
    async fn call<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, EncryptionError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut refused = 0;
        loop {
            match tokio::time::timeout_at(deadline, attempt()).await {
                Err(_) => {
                    return Err(self.err(format!("{what} timed out after {:?}", self.timeout)))
                }
                Ok(Err(s)) if refused < REFUSED_RETRIES && uds::refused_while_closing(&s) => {
                    refused += 1;
                    tracing::debug!(
                        provider = %self.name,
                        call = what,
                        "kms plugin closed the connection before taking the call; calling again"
                    );
                }
                Ok(Err(s)) => {
                    let code = uds::grpc_code(&s);
                    let message = format!("{what} failed: {code:?}: {}", s.message());
                    return Err(match refused_for_good(code) {
                        true => EncryptionError::KmsRefused {
                            name: self.name.clone(),
                            endpoint: self.endpoint.clone(),
                            message,
                        },
                        false => self.err(message),
                    });
                }
                Ok(Ok(r)) => return Ok(r.into_inner()),
            }
        }
    }
}
