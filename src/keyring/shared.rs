//! The keyring document kept in etcd, so that every plugin replica serves the same keys.
//!
//! The document is the same sealed, MAC'd bytes the sled keyring stores; etcd only adds
//! revisions. Every change is a compare-and-swap on the key's `mod_revision`, so two replicas
//! changing the keyring at once cannot both win: the loser reloads and decides again (see
//! `Keyring::rotate`). Replicas follow changes with an etcd watch, and confirm they are current
//! with a linearizable read every [`CONFIRM_EVERY`]; the keyring reports unhealthy once it has
//! not confirmed for longer than its stale bound.
//!
//! The keyring API is blocking (it was built for fsync), so this module owns a small tokio
//! runtime for its etcd client and waits on it from the calling thread. Work that takes the
//! keyring's writer lock is never run on that runtime's workers, so a caller holding the lock
//! and waiting for etcd cannot starve the runtime it waits on.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_stream::StreamExt;

use super::KeyringError;
use crate::backend::etcd::{EtcdBackend, EtcdOptions};
use crate::backend::{Backend, BackendError, Expect, WriteOutcome};

/// How often a replica confirms with a linearizable read that its keyring is current.
pub const CONFIRM_EVERY: Duration = Duration::from_secs(2);
/// Default bound after which a replica that could not confirm reports unhealthy.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);

/// Milliseconds since the epoch.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The outcome of a compare-and-swap save.
pub(super) enum Saved {
    /// Stored at this revision.
    Done(i64),
    /// The document changed since `expected`: reload and decide again.
    Conflict,
}

/// The keyring document in etcd under one key.
pub(super) struct EtcdDoc {
    rt: Option<tokio::runtime::Runtime>,
    backend: EtcdBackend,
    key: Vec<u8>,
    label: String,
    /// When the document was last confirmed current (ms since the epoch).
    pub confirmed_ms: Arc<AtomicI64>,
}

impl Drop for EtcdDoc {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl EtcdDoc {
    /// A client for the document at `key` on the cluster `opts`. Connects lazily.
    pub fn connect(opts: &EtcdOptions, key: &str) -> Result<EtcdDoc, KeyringError> {
        let label = format!("etcd:{} key {key}", opts.endpoints.join(","));
        if !key.starts_with('/') || key.len() < 2 {
            return Err(KeyringError::InvalidInput {
                field: "--etcd-prefix",
                reason: format!("must be an absolute key prefix like /keyward, got {key:?}"),
            });
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("keyward-keyring-etcd")
            .enable_all()
            .build()
            .map_err(|e| KeyringError::Storage {
                path: PathBuf::from(&label),
                message: format!("cannot start the etcd client runtime: {e}"),
            })?;
        let backend = {
            let _guard = rt.enter();
            EtcdBackend::connect(opts).map_err(|e| KeyringError::InvalidInput {
                field: "--etcd-endpoints",
                reason: e.to_string(),
            })?
        };
        Ok(EtcdDoc {
            rt: Some(rt),
            backend,
            key: key.as_bytes().to_vec(),
            label,
            confirmed_ms: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Where the document lives, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn storage(&self, e: BackendError) -> KeyringError {
        KeyringError::Storage {
            path: PathBuf::from(&self.label),
            message: e.to_string(),
        }
    }

    /// Runs `fut` on this client's runtime and waits for it from the calling thread.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, KeyringError> {
        let rt = self.rt.as_ref().ok_or_else(|| KeyringError::Storage {
            path: PathBuf::from(&self.label),
            message: "the etcd client is shut down".into(),
        })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| KeyringError::Storage {
            path: PathBuf::from(&self.label),
            message: "the etcd client stopped".into(),
        })
    }

    /// The stored bytes and their revision, read linearizably.
    pub fn load(&self) -> Result<Option<(Vec<u8>, i64)>, KeyringError> {
        let backend = self.backend.clone();
        let key = self.key.clone();
        let (kv, _) = self
            .run(async move { backend.get(&key, None).await })?
            .map_err(|e| self.storage(e))?;
        self.confirmed_ms.store(now_ms(), Ordering::Release);
        Ok(kv.map(|kv| (kv.value, kv.mod_revision)))
    }

    /// Stores `value` if the document is still at `expected` (0: if there is none yet).
    pub fn save(&self, value: Vec<u8>, expected: i64) -> Result<Saved, KeyringError> {
        let backend = self.backend.clone();
        let key = self.key.clone();
        let expect = if expected == 0 {
            Expect::Absent
        } else {
            Expect::ModRevision(expected)
        };
        match self
            .run(async move { backend.put(&key, value, expect).await })?
            .map_err(|e| self.storage(e))?
        {
            WriteOutcome::Applied { revision, .. } => {
                self.confirmed_ms.store(now_ms(), Ordering::Release);
                Ok(Saved::Done(revision))
            }
            WriteOutcome::Conflict { .. } | WriteOutcome::NotFound => Ok(Saved::Conflict),
        }
    }

    /// Follows the document: calls `changed` (on a blocking thread) whenever etcd shows a
    /// revision other than `known()`, from a watch and from a confirming read every
    /// [`CONFIRM_EVERY`]. Stops when `alive` returns false.
    pub fn follow(
        &self,
        known: impl Fn() -> Option<i64> + Send + Sync + 'static,
        changed: impl Fn() + Send + Sync + 'static,
    ) {
        let Some(rt) = self.rt.as_ref() else { return };
        let known = Arc::new(known);
        let changed = Arc::new(changed);
        let confirmed = self.confirmed_ms.clone();
        let key = self.key.clone();
        let backend = self.backend.clone();
        let (k, c) = (known.clone(), changed.clone());
        // The watch: prompt propagation of changes.
        rt.spawn(async move {
            loop {
                let Some(from) = k() else { return };
                match backend.watch(&key, from + 1).await {
                    Ok(mut events) => {
                        while let Some(ev) = events.next().await {
                            let Ok(ev) = ev else { break };
                            if ev.kv.key == key && Some(ev.kv.mod_revision) != k() {
                                let c = c.clone();
                                let _ = tokio::task::spawn_blocking(move || c()).await;
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "keyring watch could not start"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        // The confirming read: proves the replica is current, and catches anything missed.
        let backend = self.backend.clone();
        let key = self.key.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(CONFIRM_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(have) = known() else { return };
                match backend.get(&key, None).await {
                    Ok((Some(kv), _)) => {
                        if kv.mod_revision != have {
                            let c = changed.clone();
                            let _ = tokio::task::spawn_blocking(move || c()).await;
                        } else {
                            confirmed.store(now_ms(), Ordering::Release);
                        }
                    }
                    Ok((None, _)) => {
                        tracing::error!("the shared keyring document is missing from etcd");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot confirm the shared keyring is current")
                    }
                }
            }
        });
    }
}
