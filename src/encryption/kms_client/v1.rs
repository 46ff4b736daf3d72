//! The KMS v1 provider: a new DEK per write, wrapped by the plugin and stored in front of the
//! ciphertext; unwrapped DEKs kept in an LRU cache (facts §3).

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::Plugin;
use crate::crypto::{self, AesCbcKey, AesGcmKey, Key32, AES_BLOCK, GCM_NONCE_LEN};
use crate::encryption::config::KmsConfiguration;
use crate::encryption::{EncryptionError, RandomSource};
use crate::pb::kms_v1beta1 as v1;

/// An unwrapped DEK, ready for both formats a v1 value may have (AES-GCM, or AES-CBC before
/// Kubernetes 1.25).
struct Dek {
    gcm: AesGcmKey,
    cbc: AesCbcKey,
}

impl Dek {
    /// A DEK the plugin unwrapped: `None` unless it has an AES key length.
    fn new(raw: &[u8]) -> Option<Self> {
        Some(Self {
            gcm: AesGcmKey::new(raw)?,
            cbc: AesCbcKey::new(raw)?,
        })
    }

    /// A DEK this provider drew.
    fn from_key(key: &Key32) -> Self {
        Self {
            gcm: AesGcmKey::aes256(key),
            cbc: AesCbcKey::aes256(key),
        }
    }
}

pub(in crate::encryption) struct KmsV1 {
    plugin: Plugin,
    cache: Option<Mutex<lru::LruCache<Vec<u8>, Arc<Dek>>>>,
    version_ok: tokio::sync::OnceCell<()>,
}

impl fmt::Debug for KmsV1 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KmsV1({}, {})", self.plugin.name, self.plugin.endpoint)
    }
}

/// The KMS v1 record after the prefix: `len(wrapped) as u16 BE || wrapped || nonce || ct || tag`.
pub(in crate::encryption) fn v1_seal(
    wrapped: &[u8],
    dek: &[u8],
    nonce: &[u8; GCM_NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), crypto::CryptoError> {
    let len = u16::try_from(wrapped.len()).map_err(|_| crypto::CryptoError::Seal)?;
    let gcm = AesGcmKey::new(dek).ok_or(crypto::CryptoError::Seal)?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(wrapped);
    out.extend_from_slice(nonce);
    gcm.seal_into(nonce, aad, plaintext, out)
}

impl KmsV1 {
    pub(in crate::encryption) fn new(c: &KmsConfiguration) -> Self {
        let cache = c
            .cache_size
            .filter(|n| *n > 0)
            .and_then(|n| NonZeroUsize::new(n as usize))
            .map(|n| Mutex::new(lru::LruCache::new(n)));
        Self {
            plugin: Plugin::new(c),
            cache,
            version_ok: tokio::sync::OnceCell::new(),
        }
    }

    fn client(&self) -> v1::key_management_service_client::KeyManagementServiceClient<Channel> {
        v1::key_management_service_client::KeyManagementServiceClient::new(
            self.plugin.channel.clone(),
        )
    }

    /// kube-apiserver calls Version once, before the first other call, and requires v1beta1.
    async fn ensure_version(&self) -> Result<(), EncryptionError> {
        self.version_ok
            .get_or_try_init(|| async {
                let v = self
                    .plugin
                    .call("Version", || {
                        let mut c = self.client();
                        async move {
                            c.version(v1::VersionRequest {
                                version: "v1beta1".into(),
                            })
                            .await
                        }
                    })
                    .await?;
                if v.version != "v1beta1" {
                    return Err(self.plugin.contract(format!(
                        "KMS provider api version {} is not supported, only v1beta1 is supported now",
                        v.version
                    )));
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    fn cache_put(&self, wrapped: Vec<u8>, dek: Arc<Dek>) {
        if let Some(c) = &self.cache {
            c.lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(wrapped, dek);
        }
    }

    pub(in crate::encryption) async fn seal_into(
        &self,
        rnd: &dyn RandomSource,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncryptionError> {
        self.ensure_version().await?;
        let mut raw = Zeroizing::new([0u8; 32]);
        rnd.fill(raw.as_mut()).map_err(EncryptionError::Crypto)?;
        let dek = Key32::from_bytes(&mut raw);
        let wrapped = self
            .plugin
            .call("Encrypt", || {
                let mut c = self.client();
                let request = v1::EncryptRequest {
                    version: "v1beta1".into(),
                    plain: dek.expose().to_vec(),
                };
                async move { c.encrypt(request).await }
            })
            .await?
            .cipher;
        if wrapped.is_empty() || wrapped.len() > u16::MAX as usize {
            return Err(self.plugin.contract(format!(
                "wrapped DEK is {} bytes; expected 1 to 65535",
                wrapped.len()
            )));
        }
        let mut nonce = [0u8; GCM_NONCE_LEN];
        rnd.fill_public(&mut nonce)
            .map_err(EncryptionError::Crypto)?;
        v1_seal(&wrapped, dek.expose(), &nonce, aad, plaintext, out)
            .map_err(EncryptionError::Crypto)?;
        self.cache_put(wrapped, Arc::new(Dek::from_key(&dek)));
        Ok(())
    }

    /// Decrypts a record (without prefix). AES-CBC data from before Kubernetes 1.25 is read too
    /// and reported stale.
    pub(in crate::encryption) async fn open(
        &self,
        aad: &[u8],
        body: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, bool), EncryptionError> {
        let malformed = |reason: &str| EncryptionError::Malformed {
            provider: "kms-v1",
            reason: reason.to_owned(),
        };
        if body.len() < 2 {
            return Err(malformed("missing the wrapped DEK length"));
        }
        let n = u16::from_be_bytes([body[0], body[1]]) as usize;
        if n == 0 || body.len() < 2 + n {
            return Err(malformed("wrapped DEK length exceeds the value"));
        }
        let (wrapped, data) = body[2..].split_at(n);
        let cached = self.cache.as_ref().and_then(|c| {
            c.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(wrapped)
                .cloned()
        });
        let dek = match cached {
            Some(d) => d,
            None => {
                self.ensure_version().await?;
                let plain = Zeroizing::new(
                    self.plugin
                        .call("Decrypt", || {
                            let mut c = self.client();
                            let request = v1::DecryptRequest {
                                version: "v1beta1".into(),
                                cipher: wrapped.to_vec(),
                            };
                            async move { c.decrypt(request).await }
                        })
                        .await?
                        .plain,
                );
                let dek = Arc::new(Dek::new(&plain).ok_or_else(|| {
                    self.plugin
                        .contract("decrypted DEK is not a valid AES key length")
                })?);
                self.cache_put(wrapped.to_vec(), dek.clone());
                dek
            }
        };
        if data.len() >= GCM_NONCE_LEN {
            let (nonce, sealed) = data.split_at(GCM_NONCE_LEN);
            if let Ok(pt) = dek.gcm.open(nonce, aad, sealed) {
                return Ok((pt, false));
            }
        }
        if data.len() > AES_BLOCK {
            let (iv, ct) = data.split_at(AES_BLOCK);
            if let Ok(pt) = dek.cbc.decrypt(iv, ct) {
                return Ok((pt, true));
            }
        }
        Err(EncryptionError::Decrypt {
            provider: "kms-v1",
            key: self.plugin.name.clone(),
        })
    }
}
