//! The keyring a plugin serves: open from the start, or sealed with Shamir shares until the
//! admin API's `Unseal` meets the threshold. The hot path reads the open keyring lock-free
//! (a `OnceLock`); key maintenance starts when the keyring opens.

use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use crate::keyring::{
    Keyring, KeyringError, MaintenanceGuard, SealedKeyring, UnsealProgress, UnsealStep,
};

/// The keyring behind a plugin's services.
#[derive(Debug)]
pub struct PluginKeyring {
    open: OnceLock<Keyring>,
    sealed: tokio::sync::Mutex<Option<SealedKeyring>>,
    /// What `Status` shows while sealed, readable without waiting for an unseal in progress.
    progress: RwLock<Option<UnsealProgress>>,
    /// Where the keyring lives, for the admin status while sealed.
    storage: String,
    maintenance: Mutex<Option<MaintenanceGuard>>,
}

impl From<Keyring> for Arc<PluginKeyring> {
    fn from(keyring: Keyring) -> Self {
        Arc::new(PluginKeyring::from(keyring))
    }
}

impl From<Keyring> for PluginKeyring {
    fn from(keyring: Keyring) -> Self {
        let storage = keyring.info().storage;
        let cell = PluginKeyring {
            open: OnceLock::new(),
            sealed: tokio::sync::Mutex::new(None),
            progress: RwLock::new(None),
            storage,
            maintenance: Mutex::new(None),
        };
        cell.set_open(keyring);
        cell
    }
}

impl PluginKeyring {
    /// A plugin that starts sealed; `storage` says where its keyring lives (for the admin status).
    pub fn sealed(sealed: SealedKeyring, storage: String) -> PluginKeyring {
        PluginKeyring {
            open: OnceLock::new(),
            progress: RwLock::new(Some(sealed.progress())),
            sealed: tokio::sync::Mutex::new(Some(sealed)),
            storage,
            maintenance: Mutex::new(None),
        }
    }

    fn set_open(&self, keyring: Keyring) {
        let guard = keyring.start_maintenance(keyring.info().policy.maintenance_interval());
        *self.maintenance.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
        *self.progress.write().unwrap_or_else(|e| e.into_inner()) = None;
        // Only the first keyring is kept: callers set it once (at start or at unseal).
        let _ = self.open.set(keyring);
    }

    /// The open keyring, or [`KeyringError::Sealed`].
    pub fn get(&self) -> Result<&Keyring, KeyringError> {
        self.open.get().ok_or(KeyringError::Sealed)
    }

    /// The open keyring, if any.
    pub fn open(&self) -> Option<&Keyring> {
        self.open.get()
    }

    /// For a clean stop, once calls have drained: stops key maintenance and gives back the
    /// encryptions reserved and not used ([`Keyring::release_unused`]), so that a restart does
    /// not count them as used.
    pub async fn close(&self) {
        drop(
            self.maintenance
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if let Some(keyring) = self.open() {
            if let Err(e) = keyring.release_unused().await {
                tracing::warn!(error = %e, "unused encryption reservations were not given back; the keyring counts them as used");
            }
        }
    }

    /// Unseal progress while sealed.
    pub fn progress(&self) -> Option<UnsealProgress> {
        self.progress
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where the keyring lives.
    pub fn storage(&self) -> &str {
        &self.storage
    }

    /// `Status`'s healthz while sealed.
    pub fn sealed_healthz(&self) -> String {
        match self.progress() {
            Some(p) => format!(
                "sealed: {} of {} Shamir shares given; unseal with `keyward kms unseal`",
                p.given, p.threshold
            ),
            None => "sealed".to_owned(),
        }
    }

    /// Hands in one share (or, with `reset`, forgets those given first). Returns the progress,
    /// or `None` once the keyring is open. Refused once the keyring is open.
    pub async fn unseal(
        &self,
        share: &str,
        reset: bool,
    ) -> Result<Option<UnsealProgress>, KeyringError> {
        let mut sealed = self.sealed.lock().await;
        let Some(s) = sealed.as_mut() else {
            return Err(KeyringError::Precondition(
                "the keyring is not sealed: it is already open".into(),
            ));
        };
        if reset {
            s.reset();
            if share.trim().is_empty() {
                return Ok(Some(self.record(s.progress())));
            }
        }
        let step = s.add_share(share).await;
        // Whatever happened, show the progress as it is now.
        let now = s.progress();
        match step {
            Ok(UnsealStep::Progress(p)) => Ok(Some(self.record(p))),
            Ok(UnsealStep::Unsealed(keyring)) => {
                *sealed = None;
                self.set_open(keyring);
                Ok(None)
            }
            Err(e) => {
                self.record(now);
                Err(e)
            }
        }
    }

    fn record(&self, p: UnsealProgress) -> UnsealProgress {
        *self.progress.write().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
        p
    }
}

/// How often the health service re-reads the keyring's health.
pub(super) const HEALTH_POLL: Duration = Duration::from_secs(5);
