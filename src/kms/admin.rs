//! `keyward.v1.KmsAdmin`, served on the admin socket only: status, keys, rotate, retire,
//! destroy, and the root of trust: `Unseal` (one Shamir share per call) and `RekeyRoot`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{to_status, PluginKeyring};
use crate::keyring::{KeyInfo, KeyState, Keyring};
use crate::pb::keyward_v1 as admin_pb;
use crate::reason::bad_request;
use crate::seal::SealSpec;

/// `keyward.v1.KmsAdmin`, for the admin socket only.
#[derive(Debug, Clone)]
pub struct KmsAdmin {
    keyring: Arc<PluginKeyring>,
}

impl KmsAdmin {
    /// The admin service of the plugin serving `keyring`.
    pub fn new(keyring: Arc<PluginKeyring>) -> KmsAdmin {
        KmsAdmin { keyring }
    }

    fn open(&self) -> Result<&Keyring, Status> {
        self.keyring.get().map_err(to_status)
    }
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
        _req: Request<admin_pb::AdminStatusRequest>,
    ) -> Result<Response<admin_pb::AdminStatusResponse>, Status> {
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
            return Ok(Response::new(admin_pb::AdminStatusResponse {
                healthz: self.keyring.sealed_healthz(),
                seal: "shamir".to_owned(),
                storage: self.keyring.storage().to_owned(),
                sealed: true,
                unseal_given: p.given.into(),
                unseal_threshold: p.threshold.into(),
                unseal_shares: p.shares.into(),
                ..Default::default()
            }));
        };
        let h = keyring.health();
        let info = keyring.info();
        Ok(Response::new(admin_pb::AdminStatusResponse {
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
        }))
    }

    async fn list_keys(
        &self,
        _req: Request<admin_pb::ListKeysRequest>,
    ) -> Result<Response<admin_pb::ListKeysResponse>, Status> {
        Ok(Response::new(admin_pb::ListKeysResponse {
            keys: self.open()?.keys().into_iter().map(key_info_pb).collect(),
        }))
    }

    async fn rotate(
        &self,
        _req: Request<admin_pb::RotateRequest>,
    ) -> Result<Response<admin_pb::RotateResponse>, Status> {
        let r = self.open()?.rotate().await.map_err(to_status)?;
        Ok(Response::new(admin_pb::RotateResponse {
            primary: Some(key_info_pb(r.primary)),
            previous_key_id: r.previous_key_id,
        }))
    }

    async fn retire(
        &self,
        req: Request<admin_pb::RetireRequest>,
    ) -> Result<Response<admin_pb::RetireResponse>, Status> {
        let key_id = required("key_id", &req.get_ref().key_id)?;
        let k = self.open()?.retire(key_id).await.map_err(to_status)?;
        Ok(Response::new(admin_pb::RetireResponse {
            key: Some(key_info_pb(k)),
        }))
    }

    async fn destroy(
        &self,
        req: Request<admin_pb::DestroyRequest>,
    ) -> Result<Response<admin_pb::DestroyResponse>, Status> {
        let req = req.get_ref();
        let key_id = required("key_id", &req.key_id)?;
        let k = self
            .open()?
            .destroy(key_id, &req.confirm)
            .await
            .map_err(to_status)?;
        Ok(Response::new(admin_pb::DestroyResponse {
            key: Some(key_info_pb(k)),
        }))
    }

    async fn unseal(
        &self,
        req: Request<admin_pb::UnsealRequest>,
    ) -> Result<Response<admin_pb::UnsealResponse>, Status> {
        let mut req = req.into_inner();
        if !req.reset {
            required("share", req.share.trim())?;
        }
        let res = self.keyring.unseal(&req.share, req.reset).await;
        zeroize::Zeroize::zeroize(&mut req.share);
        match res.map_err(to_status)? {
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
        let text = required("new_seal", &req.get_ref().new_seal)?;
        let spec: SealSpec = text
            .parse()
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
