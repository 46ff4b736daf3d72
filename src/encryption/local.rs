//! The storage formats of the providers whose keys are in the configuration file (facts §3).
//! After the prefix `k8s:enc:<provider>:v1:<key name>:` a value is:
//!
//! - `aescbc`: IV (16 bytes) ‖ AES-CBC(PKCS#7(plaintext)). Not authenticated, no associated data.
//! - `aesgcm`: nonce (12 bytes) ‖ AES-GCM(plaintext) ‖ tag, the storage key as associated data.
//! - `secretbox`: nonce (24 bytes) ‖ tag ‖ XSalsa20-Poly1305(plaintext), no associated data.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{EncryptionError, RandomSource};
use crate::crypto::{
    AesCbcKey, AesGcmKey, SecretboxKey, AES_BLOCK, GCM_NONCE_LEN, SECRETBOX_NONCE_LEN,
};

/// One key of a local provider, shared with the configuration it was parsed from.
#[derive(Clone)]
pub(super) enum LocalKey {
    AesCbc(Arc<AesCbcKey>),
    AesGcm(Arc<AesGcmKey>),
    Secretbox(Arc<SecretboxKey>),
}

impl LocalKey {
    /// The provider kind, as [`ReadInfo::provider`](super::ReadInfo::provider) names it.
    pub(super) fn provider(&self) -> &'static str {
        match self {
            LocalKey::AesCbc(_) => "aescbc",
            LocalKey::AesGcm(_) => "aesgcm",
            LocalKey::Secretbox(_) => "secretbox",
        }
    }

    /// The prefix of every value written with the key named `name`.
    pub(super) fn prefix(&self, name: &str) -> Vec<u8> {
        format!("k8s:enc:{}:v1:{name}:", self.provider()).into_bytes()
    }

    /// Appends the value after the prefix: fresh IV or nonce, then the ciphertext.
    pub(super) fn seal_into(
        &self,
        rnd: &dyn RandomSource,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncryptionError> {
        match self {
            LocalKey::AesCbc(k) => {
                let mut iv = [0u8; AES_BLOCK];
                rnd.fill_public(&mut iv).map_err(EncryptionError::Crypto)?;
                out.extend_from_slice(&iv);
                k.encrypt_into(&iv, plaintext, out);
            }
            LocalKey::AesGcm(k) => {
                let mut nonce = [0u8; GCM_NONCE_LEN];
                rnd.fill_public(&mut nonce)
                    .map_err(EncryptionError::Crypto)?;
                out.extend_from_slice(&nonce);
                k.seal_into(&nonce, aad, plaintext, out)
                    .map_err(EncryptionError::Crypto)?;
            }
            LocalKey::Secretbox(k) => {
                let mut nonce = [0u8; SECRETBOX_NONCE_LEN];
                rnd.fill_public(&mut nonce)
                    .map_err(EncryptionError::Crypto)?;
                out.extend_from_slice(&nonce);
                k.seal_into(&nonce, plaintext, out)
                    .map_err(EncryptionError::Crypto)?;
            }
        }
        Ok(())
    }

    /// Decrypts the value after the prefix with the key named `name`.
    pub(super) fn open(
        &self,
        name: &str,
        aad: &[u8],
        body: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EncryptionError> {
        let provider = self.provider();
        let malformed = |reason: &str| EncryptionError::Malformed {
            provider,
            reason: reason.to_owned(),
        };
        let opened = match self {
            LocalKey::AesCbc(k) => {
                if body.len() < AES_BLOCK {
                    return Err(malformed("shorter than one block"));
                }
                let (iv, ct) = body.split_at(AES_BLOCK);
                k.decrypt(iv, ct)
            }
            LocalKey::AesGcm(k) => {
                if body.len() < GCM_NONCE_LEN {
                    return Err(malformed("shorter than the nonce"));
                }
                let (nonce, sealed) = body.split_at(GCM_NONCE_LEN);
                k.open(nonce, aad, sealed)
            }
            LocalKey::Secretbox(k) => {
                if body.len() < SECRETBOX_NONCE_LEN {
                    return Err(malformed("shorter than the nonce"));
                }
                let (nonce, sealed) = body.split_at(SECRETBOX_NONCE_LEN);
                k.open(nonce, sealed)
            }
        };
        opened.map_err(|_| EncryptionError::Decrypt {
            provider,
            key: name.to_owned(),
        })
    }
}
