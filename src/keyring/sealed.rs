//! The keyring's root key after start: a keyring sealed with Shamir shares, held until enough
//! shares are handed in ([`SealedKeyring`]), and root-key rotation with seal migration
//! ([`Keyring::rekey_root`]).
//!
//! A rotation of the root key re-seals every KEK's material under keys derived from a new root
//! key (of any seal kind) and replaces the seal record, in one compare-and-swap of the document:
//! key ids, states and counters stay, and the old root key opens nothing stored afterwards. The
//! superseded copies the storage still holds are then dropped, as after a destroy.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::document::{self, DocKeys, NewSeal};
use super::storage::{self, Found};
use super::{Keyring, KeyringError, KeyringLocation, RotationPolicy, MAX_CAS_ATTEMPTS};
use crate::seal::{KdfParams, SealError, SealSpec, ShareCollector, SplitShares};

/// How far an unseal has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsealProgress {
    /// Shares accepted so far.
    pub given: u8,
    /// Shares needed.
    pub threshold: u8,
    /// Shares made for this keyring.
    pub shares: u8,
    /// The share set's id (hex): every share of this keyring carries it.
    pub set_id: String,
}

/// The outcome of handing in one share.
#[derive(Debug)]
pub enum UnsealStep {
    /// Accepted; more are needed.
    Progress(UnsealProgress),
    /// The threshold was met and the keyring is open.
    Unsealed(Keyring),
}

/// A keyring sealed with Shamir shares, found at its location and held (a data directory stays
/// locked) until [`SealedKeyring::add_share`] meets the threshold.
pub struct SealedKeyring {
    location: KeyringLocation,
    found: Option<Found>,
    collector: ShareCollector,
    policy: RotationPolicy,
}

impl std::fmt::Debug for SealedKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealedKeyring({:?}, {:?})",
            self.location, self.collector
        )
    }
}

/// The share collector for the document `stored`, which must be sealed with shares.
fn collector(stored: &[u8]) -> Result<ShareCollector, KeyringError> {
    let (record, keyring_id) = document::peek(stored)?;
    let shamir = record.shamir().ok_or(KeyringError::SealMismatch {
        keyring: record.kind(),
        given: "shamir",
    })?;
    Ok(ShareCollector::new(&shamir, &keyring_id)?)
}

impl SealedKeyring {
    /// Finds the keyring at `location`, which must be sealed with Shamir shares. Reads only.
    pub async fn open(
        location: &KeyringLocation,
        policy: RotationPolicy,
    ) -> Result<SealedKeyring, KeyringError> {
        let found = Found::find(location).await?;
        let collector = collector(found.stored())?;
        Ok(SealedKeyring {
            location: location.clone(),
            found: Some(found),
            collector,
            policy,
        })
    }

    /// Shares given so far, and how many are needed.
    pub fn progress(&self) -> UnsealProgress {
        UnsealProgress {
            given: self.collector.given(),
            threshold: self.collector.threshold(),
            shares: self.collector.shares(),
            set_id: self.collector.set_id(),
        }
    }

    /// Forgets the shares given so far.
    pub fn reset(&mut self) {
        self.collector.reset();
    }

    /// Checks one share and keeps it; with the threshold met, rebuilds the root key and opens
    /// the keyring. A refused share leaves the others; shares that rebuild a key which does not
    /// open the keyring are all forgotten ([`SealError::SharesDoNotOpen`]). Never yields a wrong
    /// key.
    pub async fn add_share(&mut self, share: &str) -> Result<UnsealStep, KeyringError> {
        self.collector.add(share)?;
        if !self.collector.complete() {
            return Ok(UnsealStep::Progress(self.progress()));
        }
        let mut found = match self.found.take() {
            Some(found) => found,
            None => Found::find(&self.location).await?,
        };
        // A shared keyring may have changed while sealed (rotated, or re-sealed by a replica).
        if let Err(e) = found.reload().await {
            self.collector.reset();
            self.found = Some(found);
            return Err(e);
        }
        let fresh = collector(found.stored())?;
        if fresh.set_id() != self.collector.set_id() {
            self.collector = fresh;
            self.found = Some(found);
            return Err(KeyringError::Seal(SealError::Share(
                "the keyring was re-sealed with new shares meanwhile; start again with those"
                    .into(),
            )));
        }
        let root = match self.collector.open() {
            Ok(root) => root,
            Err(e) => {
                self.found = Some(found);
                return Err(e.into());
            }
        };
        let unsealed = match document::unseal_with_root(found.stored(), &root) {
            Ok(u) => u,
            Err(e) => {
                self.found = Some(found);
                return Err(e);
            }
        };
        drop(root);
        let keyring = Keyring::from_unsealed(found, unsealed, self.policy).await?;
        tracing::info!(key_id_hash = %crate::crypto::key_id_hash(&keyring.health().primary_key_id), "keyring unsealed with Shamir shares");
        Ok(UnsealStep::Unsealed(keyring))
    }
}

/// The result of [`Keyring::rekey_root`].
#[derive(Debug)]
pub struct Rekeyed {
    /// The new seal's kind.
    pub seal: &'static str,
    /// With a Shamir seal, the new shares (shown once; the old shares open nothing now).
    pub shares: Option<SplitShares>,
}

impl Keyring {
    /// Re-seals every KEK under a new root key from `spec` (any seal kind; `kdf` for a
    /// passphrase), in one compare-and-swap of the document: key ids do not change, and the old
    /// root key opens nothing stored afterwards. A new root key that cannot be made (an HSM that
    /// refuses, a missing key file) changes nothing. Refuses a seal that gives the current root
    /// key. Other replicas of a shared keyring report unhealthy until restarted with the new
    /// seal (they keep serving the KEKs they hold).
    pub async fn rekey_root(
        &self,
        spec: &SealSpec,
        kdf: Option<KdfParams>,
    ) -> Result<Rekeyed, KeyringError> {
        let spec = spec.clone();
        self.detached(move |k| async move { k.rekey_root_now(spec, kdf).await })
            .await
    }

    async fn rekey_root_now(
        &self,
        spec: SealSpec,
        kdf: Option<KdfParams>,
    ) -> Result<Rekeyed, KeyringError> {
        let id = self.inner.keyring_id;
        let NewSeal {
            record,
            root,
            shares,
        } = storage::blocking(self.inner.store.location(), move || {
            document::new_seal(&spec, kdf.as_ref(), &id)
        })
        .await?;
        let keys = DocKeys::derive(&root);
        drop(root);
        let seal = record.kind();
        let mut w = self.inner.writer.lock().await;
        if bool::from(keys.mac_key.expose().ct_eq(w.keys.mac_key.expose())) {
            return Err(KeyringError::Precondition(
                "the new seal gives the current root key; rotating the root key needs a new one"
                    .into(),
            ));
        }
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut doc = document::reseal(&w.doc, &id, &w.keys, &keys, record.clone())?;
            let snapshot = document::build_snapshot(&doc, &id, &keys.seal_key(&doc), &w.counters)?;
            if let Some(mark) = self.save(&mut doc, &keys.mac_key).await? {
                w.doc = doc;
                w.keys = keys;
                self.keep_mark(&mut w, mark).await;
                self.inner.snapshot.store(Arc::new(snapshot));
                *self
                    .inner
                    .seal_kind
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = seal;
                self.inner
                    .resealed_elsewhere
                    .store(false, Ordering::Release);
                tracing::info!(seal, "re-sealed the keyring under a new root key");
                // The superseded copies open with the old root key: drop those the storage
                // holds (a data directory's store is rewritten, etcd compacted).
                if let Err(e) = self.inner.store.shred().await {
                    tracing::error!(error = %e, "older copies of the keyring could not be dropped");
                }
                return Ok(Rekeyed { seal, shares });
            }
            self.reload_locked(&mut w).await?;
        }
        Err(self.too_busy())
    }
}
