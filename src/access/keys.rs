//! The server's own key material — the service account signing key and the audit checkpoint
//! key — generated on first use and kept sealed in the store's backend: encrypted by the store's
//! encryption chain for `secrets` (the EncryptionConfiguration's first provider and key) under
//! the storage key `<prefix>/keyward.io/keys/<name>`, which is also the AES-GCM associated data.
//! It is never written to disk in plaintext:
//!
//! - a key is not created while the write provider is `identity` (the error says so);
//! - a key read through an older provider or key (stale) is rewritten with the current one at
//!   once, and `migrate` rewrites any that are stale (encryption status counts them with the
//!   Secrets, so retiring a KMS key that still seals one is refused), so removing an old key
//!   from the configuration after a migration keeps the server's keys readable;
//! - replicas sharing an etcd backend race to create a key with a create-if-absent write; the
//!   loser reads the winner's key.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::AccessError;
use crate::backend::{Expect, WriteOutcome};
use crate::crypto::CryptoError;
use crate::store::{Store, StoreError, RESOURCE, SERVER_KEYS};

/// Name of the service account signing key (PKCS#8 DER of an ES256 key).
pub const SERVICE_ACCOUNT_SIGNING_KEY: &str = "serviceaccount-signing";
/// Name of the audit log's checkpoint key (the 32-byte Ed25519 seed).
pub const AUDIT_CHECKPOINT_KEY: &str = "audit-checkpoint";

/// The server's keys in the store's backend, sealed by its encryption chain.
#[derive(Debug, Clone)]
pub struct SealedKeys {
    store: Arc<Store>,
}

fn key_error(name: &str, reason: impl Into<String>) -> AccessError {
    AccessError::KeyMaterial {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

impl SealedKeys {
    /// The keys of `store` (its backend, prefix and encryption in force).
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// `<prefix>/keyward.io/keys/<name>`.
    pub fn storage_key(&self, name: &str) -> String {
        format!("{}/{SERVER_KEYS}/{name}", self.store.prefix())
    }

    /// The key `name`, decrypted; `None` if it was never created. A key read through an older
    /// provider or key is rewritten with the current write provider (unless that is
    /// `identity`).
    pub async fn load(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, AccessError> {
        let key = self.storage_key(name);
        let (kv, _) = self
            .store
            .backend()
            .get(key.as_bytes(), None)
            .await
            .map_err(StoreError::from)?;
        let Some(kv) = kv else {
            return Ok(None);
        };
        let t = self.store.encryption().for_resource(RESOURCE);
        let (plain, info) = t.from_storage(&key, &kv.value).await.map_err(|e| {
            key_error(
                name,
                format!("cannot decrypt {key}: {e}; keep the EncryptionConfiguration key that sealed it"),
            )
        })?;
        if info.stale && t.write_provider().0 != "identity" {
            let value = t.to_storage(&key, &plain).await.map_err(StoreError::from)?;
            match self
                .store
                .backend()
                .put(key.as_bytes(), value, Expect::ModRevision(kv.mod_revision))
                .await
                .map_err(StoreError::from)?
            {
                WriteOutcome::Applied { .. } => {
                    tracing::info!(key = %key, from = %info.provider, "server key re-sealed with the current write provider")
                }
                // Another replica re-sealed or replaced it first: either way it is current.
                WriteOutcome::Conflict { .. } | WriteOutcome::NotFound => {}
            }
        }
        Ok(Some(plain))
    }

    /// The key `name`, created with `generate` and sealed if it does not exist yet. Refused
    /// while the write provider is `identity`: the key would be stored in plaintext.
    pub async fn load_or_create(
        &self,
        name: &str,
        generate: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, CryptoError>,
    ) -> Result<Zeroizing<Vec<u8>>, AccessError> {
        if let Some(k) = self.load(name).await? {
            return Ok(k);
        }
        let t = self.store.encryption().for_resource(RESOURCE);
        if t.write_provider().0 == "identity" {
            return Err(key_error(
                name,
                "refusing to create it: the EncryptionConfiguration's first provider for secrets is identity, so it would be stored in plaintext; put an encrypting provider (kms, aesgcm, aescbc or secretbox) first",
            ));
        }
        let plain = generate().map_err(|e| key_error(name, e.to_string()))?;
        let key = self.storage_key(name);
        let value = t.to_storage(&key, &plain).await.map_err(StoreError::from)?;
        match self
            .store
            .backend()
            .put(key.as_bytes(), value, Expect::Absent)
            .await
            .map_err(StoreError::from)?
        {
            WriteOutcome::Applied { .. } => {
                tracing::info!(key = %key, provider = %t.write_provider().0, "created server key, sealed in the backend");
                Ok(plain)
            }
            // Another replica created it first: use theirs.
            WriteOutcome::Conflict { .. } | WriteOutcome::NotFound => self
                .load(name)
                .await?
                .ok_or_else(|| key_error(name, "created and deleted concurrently; retry")),
        }
    }
}
