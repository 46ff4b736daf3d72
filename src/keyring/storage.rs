//! Where the keyring document lives: one key in a [`Backend`], the same seam (and the same sled
//! and etcd implementations) the secret store uses, so durability, locking and watch are written
//! once, in the backend.
//!
//! - **Load** reads the document and its `mod_revision`; **save** is a compare-and-swap on the
//!   revision this process holds ([`Expect::Absent`] for a new keyring), so two writers cannot
//!   both win: the loser reloads and decides again (see `Keyring::rotate`).
//! - **Follow**: a keyring shared through etcd ([`KeyringLocation::Shared`]) watches its key and
//!   confirms with a linearizable read every [`CONFIRM_EVERY`] that it is current; it reports
//!   itself stale once it has not confirmed for longer than its bound. A keyring in a data
//!   directory ([`KeyringLocation::Dir`]) has no other writer: it neither follows nor goes stale.
//! - **Shred** (after a destroy): a data directory's store is rewritten into a fresh one that
//!   replaces it, so no file of the directory holds a superseded document any more; a shared
//!   keyring compacts etcd to the new revision.
//!
//! # A data directory
//!
//! The keyring of a data directory `DIR` is a [`SledBackend`] of its own in `DIR/keyring-v2/`,
//! holding the document under [`DEFAULT_KEY`]. keyward 0.1.0 kept it in a plain sled database,
//! `DIR/keyring/` (default tree: `format_version` = `"1"`, `keyring` = the same bytes); the first
//! open converts it, once the root key has opened the document: write it into a fresh store in
//! `DIR/keyring-v2.tmp/` (durable), rename that to `DIR/keyring-v2/`, fsync `DIR`, then remove
//! `DIR/keyring/` (it holds old sealed copies). A crash at any step leaves either the old layout
//! (and maybe a half-made temporary directory, discarded by the next open) or the new one (and
//! maybe the old directory, removed by the next open as long as it holds the same document; a
//! different one is refused, not removed). Opening and converting hold an exclusive lock on
//! `DIR`, so two processes never convert at once.

use std::fmt;
use std::fs;
use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_stream::StreamExt;

use super::rollback::MarkFile;
use super::KeyringError;
use crate::backend::legacy;
use crate::backend::{
    Backend, BackendError, Expect, Revision, SledBackend, SledOptions, WriteOutcome,
};

/// How often a shared keyring confirms with a linearizable read that it is current.
pub const CONFIRM_EVERY: Duration = Duration::from_secs(2);
/// Default bound after which a shared keyring that could not confirm reports unhealthy.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(30);
/// The key of the keyring document: in a data directory's store, and in etcd under the default
/// prefix `/keyward`.
pub const DEFAULT_KEY: &str = "/keyward/kms/keyring";
/// The directory, inside a data directory, of the keyring's store.
pub const DIR_STORE: &str = "keyring-v2";
/// The directory, inside a data directory, where keyward 0.1.0 kept the keyring.
pub const LEGACY_DIR: &str = "keyring";
/// Where a conversion writes the new store before renaming it to [`DIR_STORE`].
const TEMP_DIR: &str = "keyring-v2.tmp";
/// What keyward 0.1.0 stored next to the document, and the only value it wrote.
const LEGACY_FORMAT_KEY: &[u8] = b"format_version";
const LEGACY_FORMAT: &[u8] = b"1";
const LEGACY_DOC_KEY: &[u8] = b"keyring";
/// How long opening waits for another process that holds the data directory's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Retention of a data directory's keyring store. The keyring is one key that is only read at
/// its current revision and, in a data directory, watched by nobody, so the store keeps one
/// version of it (`history_per_key: 1`) and one change-log entry (`log_retention: 1`; 0 would
/// mean unlimited). Superseded documents, which hold sealed copies of keys since disabled or
/// destroyed, are then dropped as the keyring changes instead of being kept for replay.
const DIR_STORE_OPTIONS: SledOptions = SledOptions {
    layer_bytes: crate::backend::sled::DEFAULT_LAYER_BYTES,
    history_per_key: 1,
    log_retention: 1,
};

/// Where a keyring lives. The caller opens shared backends; the keyring only uses them.
#[derive(Clone)]
pub enum KeyringLocation {
    /// A keyring of its own in a data directory, for one plugin: a sled store in
    /// `DIR/keyring-v2/` (a `DIR/keyring/` written by keyward 0.1.0 is converted on first open).
    /// Only one process at a time may open it.
    Dir(PathBuf),
    /// A keyring shared by plugin replicas through `backend` (etcd), under the key
    /// `<prefix>/kms/keyring`. Every replica follows the others' changes.
    Shared {
        /// The backend, already opened by the caller.
        backend: Arc<dyn Backend>,
        /// An absolute key prefix such as `/keyward`.
        prefix: String,
        /// Where the backend is, for messages and [`KeyringInfo::storage`](super::KeyringInfo):
        /// e.g. `etcd:https://10.0.0.1:2379`.
        label: String,
        /// Report unhealthy once the keyring could not confirm it is current for this long.
        stale_after: Duration,
        /// This replica's state directory, where it keeps the mark of the newest document it
        /// accepted (see `rollback`), so that a restart refuses a rolled-back document too.
        /// `None`: only a running replica detects a rollback.
        state: Option<PathBuf>,
    },
}

impl fmt::Debug for KeyringLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringLocation::Dir(dir) => f.debug_tuple("Dir").field(dir).finish(),
            KeyringLocation::Shared {
                prefix,
                label,
                stale_after,
                state,
                ..
            } => f
                .debug_struct("Shared")
                .field("label", label)
                .field("prefix", prefix)
                .field("stale_after", stale_after)
                .field("state", state)
                .finish_non_exhaustive(),
        }
    }
}

/// The key of a shared keyring under `prefix`.
pub fn shared_key(prefix: &str) -> String {
    format!("/{}/kms/keyring", prefix.trim_matches('/'))
}

/// Where a keyring at `location` lives, for messages: the data directory, or
/// `<label> key <key>`.
pub(super) fn describe(location: &KeyringLocation) -> String {
    match location {
        KeyringLocation::Dir(dir) => dir.display().to_string(),
        KeyringLocation::Shared { prefix, label, .. } => {
            format!("{label} key {}", shared_key(prefix))
        }
    }
}

fn shared_key_checked(prefix: &str) -> Result<String, KeyringError> {
    if !prefix.starts_with('/') || prefix.trim_matches('/').is_empty() {
        return Err(KeyringError::InvalidInput {
            field: "prefix",
            reason: format!("must be an absolute key prefix like /keyward, got {prefix:?}"),
        });
    }
    Ok(shared_key(prefix))
}

/// Milliseconds since the epoch.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn storage_error(location: &str, message: impl fmt::Display) -> KeyringError {
    KeyringError::Storage {
        location: location.to_owned(),
        message: message.to_string(),
    }
}

/// The result of a task that runs part of a keyring operation: a panic is passed on, and a
/// task cancelled by a runtime shutting down is a storage failure at `location`.
pub(super) fn joined<T>(
    res: Result<Result<T, KeyringError>, tokio::task::JoinError>,
    location: &str,
) -> Result<T, KeyringError> {
    match res {
        Ok(res) => res,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(storage_error(
            location,
            "interrupted: the runtime is shutting down",
        )),
    }
}

/// Runs blocking work (file locks, opening a store, fsync, reading and stretching a root key) off
/// the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    location: &str,
    f: impl FnOnce() -> Result<T, KeyringError> + Send + 'static,
) -> Result<T, KeyringError> {
    joined(tokio::task::spawn_blocking(f).await, location)
}

/// The keyring document under one key of a backend.
pub(super) struct DocStore {
    /// The backend; replaced when a data directory's store is rewritten ([`DocStore::shred`]).
    backend: RwLock<Option<Arc<dyn Backend>>>,
    /// The data directory, for a keyring of its own.
    dir: Option<PathBuf>,
    /// The mark file of a shared keyring's replica.
    mark: Option<MarkFile>,
    key: Vec<u8>,
    /// Where the document lives, for messages: the data directory, or `<label> key <key>`.
    location: String,
    /// Where the document lives, for [`KeyringInfo::storage`](super::KeyringInfo).
    description: String,
    /// Others may write the document: follow it, and report stale after this long.
    stale_after: Option<Duration>,
    /// Revision of the document this process holds (0: none yet; else a [`Revision`]).
    revision: AtomicI64,
    /// When the document was last confirmed current (ms since the epoch).
    confirmed_ms: Arc<AtomicI64>,
}

impl DocStore {
    fn in_dir(backend: SledBackend, dir: &Path) -> DocStore {
        DocStore {
            backend: RwLock::new(Some(Arc::new(backend))),
            dir: Some(dir.to_owned()),
            mark: None,
            key: DEFAULT_KEY.as_bytes().to_vec(),
            location: dir.display().to_string(),
            description: format!("sled:{}", dir.display()),
            stale_after: None,
            revision: AtomicI64::new(0),
            confirmed_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    fn shared(
        backend: &Arc<dyn Backend>,
        prefix: &str,
        label: &str,
        stale_after: Duration,
        state: Option<&Path>,
    ) -> Result<DocStore, KeyringError> {
        let key = shared_key_checked(prefix)?;
        let location = format!("{label} key {key}");
        Ok(DocStore {
            backend: RwLock::new(Some(backend.clone())),
            dir: None,
            mark: state.map(MarkFile::in_dir),
            key: key.into_bytes(),
            description: location.clone(),
            location,
            stale_after: Some(stale_after),
            revision: AtomicI64::new(0),
            confirmed_ms: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Where the document lives, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Where the document lives, for `KeyringInfo::storage`: `sled:<dir>` or
    /// `<label> key <key>`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether other processes may change the document.
    pub fn shared_with_others(&self) -> bool {
        self.stale_after.is_some()
    }

    /// Revision of the document this process holds (`None` before it is first saved or
    /// loaded).
    pub fn revision(&self) -> Option<Revision> {
        Revision::new(self.revision.load(Ordering::Acquire))
    }

    /// Records that this process now holds the document at `revision`.
    pub fn set_revision(&self, revision: Revision) {
        self.revision.store(revision.get(), Ordering::Release);
    }

    /// Whether the document was confirmed current within the stale bound (always, when nobody
    /// else writes it).
    pub fn current(&self) -> bool {
        self.stale_after.is_none_or(|bound| {
            let bound = i64::try_from(bound.as_millis()).unwrap_or(i64::MAX);
            now_ms().saturating_sub(self.confirmed_ms.load(Ordering::Acquire)) <= bound
        })
    }

    /// For a document others may write: how long ago it was last confirmed current, and the
    /// bound after which it counts as stale. `None` when nobody else writes it.
    pub fn confirmation(&self) -> Option<(Duration, Duration)> {
        let bound = self.stale_after?;
        let ago = now_ms().saturating_sub(self.confirmed_ms.load(Ordering::Acquire));
        Some((Duration::from_millis(ago.max(0) as u64), bound))
    }

    /// Records that the document held was confirmed current just now (it was read back and
    /// accepted, or saved).
    pub fn confirm(&self) {
        self.confirmed_ms.store(now_ms(), Ordering::Release);
    }

    /// The mark file of a shared keyring's replica, if it has a state directory.
    pub fn mark_file(&self) -> Option<&MarkFile> {
        self.mark.as_ref()
    }

    fn error(&self, e: BackendError) -> KeyringError {
        storage_error(&self.location, e)
    }

    fn backend(&self) -> Result<Arc<dyn Backend>, KeyringError> {
        self.backend
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| storage_error(&self.location, "the keyring store is closed"))
    }

    /// The stored bytes and their revision (a linearizable read on etcd). Confirms nothing:
    /// the caller does once it accepted them.
    pub async fn load(&self) -> Result<Option<(Vec<u8>, Revision)>, KeyringError> {
        let (kv, _) = self
            .backend()?
            .get(&self.key, None)
            .await
            .map_err(|e| self.error(e))?;
        Ok(kv.map(|kv| (kv.value, kv.mod_revision)))
    }

    /// Stores `value` if the document is still at the revision this process holds (absent, if
    /// it holds none), durably. False: someone else changed it first; reload and decide again.
    pub async fn save(&self, value: Vec<u8>) -> Result<bool, KeyringError> {
        let expect = match self.revision() {
            None => Expect::Absent,
            Some(held) => Expect::ModRevision(held),
        };
        match self
            .backend()?
            .put(&self.key, value, expect)
            .await
            .map_err(|e| self.error(e))?
        {
            WriteOutcome::Applied { revision, .. } => {
                self.set_revision(revision);
                self.confirmed_ms.store(now_ms(), Ordering::Release);
                Ok(true)
            }
            WriteOutcome::Conflict { .. } | WriteOutcome::NotFound => Ok(false),
        }
    }

    /// Drops the older copies of the document that the store still holds (after a destroy).
    /// A data directory's store is rewritten into a fresh store holding only the current
    /// document, which then replaces the old one (its files unlinked); etcd is compacted to the
    /// document's revision, which discards every older revision of every key. Call it with the
    /// keyring's writer lock held: nothing else may use the store meanwhile.
    pub async fn shred(&self) -> Result<(), KeyringError> {
        let Some(dir) = self.dir.clone() else {
            let Some(revision) = self.revision() else {
                return Ok(());
            };
            return self
                .backend()?
                .compact(revision)
                .await
                .map_err(|e| self.error(e));
        };
        let (value, _) = self
            .load()
            .await?
            .ok_or_else(|| KeyringError::NotFound(self.location.clone()))?;
        let location = self.location.clone();
        let d = dir.clone();
        let (lock, temp) = blocking(&location, move || {
            let lock = DirLock::acquire(&d)?;
            remove_all(&d, &[TEMP_DIR])?;
            let temp = open_sled(&d.join(TEMP_DIR), &d)?;
            Ok((lock, temp))
        })
        .await?;
        match temp
            .put(&self.key, value, Expect::Absent)
            .await
            .map_err(|e| self.error(e))?
        {
            WriteOutcome::Applied { .. } => {}
            _ => {
                return Err(storage_error(
                    &location,
                    "a new store already held a keyring",
                ))
            }
        }
        let old = self
            .backend
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let (swapped, store) = blocking(&location, move || {
            // Close both stores (this keyring holds the only handle of the old one).
            drop(temp);
            drop(old);
            let swapped = swap_in_rewritten(&dir);
            // Whichever store is in place now holds the current document.
            let store = open_sled(&dir.join(DIR_STORE), &dir);
            drop(lock);
            Ok((swapped, store))
        })
        .await?;
        *self.backend.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(store?));
        let (_, revision) = self
            .load()
            .await?
            .ok_or_else(|| KeyringError::NotFound(self.location.clone()))?;
        self.set_revision(revision);
        swapped
    }

    /// Follows a document others may change: awaits `changed()` whenever the backend shows a
    /// revision other than `known()`, from a watch and from a confirming read every
    /// [`CONFIRM_EVERY`]. The tasks stop when the guard is dropped, or when `known` returns
    /// `None`. Does nothing for a document nobody else writes.
    pub fn follow<K, C, F>(&self, known: K, changed: C) -> FollowGuard
    where
        K: Fn() -> Option<Revision> + Send + Sync + 'static,
        C: Fn() -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let backend = match self.backend() {
            Ok(backend) if self.shared_with_others() => backend,
            _ => return FollowGuard { tasks: Vec::new() },
        };
        let known = Arc::new(known);
        let changed = Arc::new(changed);
        // The watch: prompt propagation of changes.
        let (watch_backend, key, k, c) = (
            backend.clone(),
            self.key.clone(),
            known.clone(),
            changed.clone(),
        );
        let watch = tokio::spawn(async move {
            loop {
                let Some(from) = k() else { return };
                match watch_backend.watch(&key, from.next()).await {
                    Ok(mut events) => {
                        while let Some(ev) = events.next().await {
                            let Ok(ev) = ev else { break };
                            if ev.kv.key == key && Some(ev.kv.mod_revision) != k() {
                                c().await;
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "keyring watch could not start"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        // The confirming read: proves the document is current, and catches anything missed.
        let (backend, key, confirmed) = (backend, self.key.clone(), self.confirmed_ms.clone());
        let confirm = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CONFIRM_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(have) = known() else { return };
                match backend.get(&key, None).await {
                    Ok((Some(kv), _)) if kv.mod_revision != have => changed().await,
                    Ok((Some(_), _)) => confirmed.store(now_ms(), Ordering::Release),
                    Ok((None, _)) => {
                        tracing::error!("the shared keyring document is missing from its store");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot confirm the shared keyring is current")
                    }
                }
            }
        });
        FollowGuard {
            tasks: vec![watch.abort_handle(), confirm.abort_handle()],
        }
    }
}

/// Owns the tasks that follow a shared document; dropping it stops them.
pub(super) struct FollowGuard {
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for FollowGuard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Whether a keyring exists at `location` (in a data directory: in either layout).
pub(super) async fn exists(location: &KeyringLocation) -> Result<bool, KeyringError> {
    match location {
        KeyringLocation::Dir(dir) => Ok(dir_has_keyring(dir)),
        KeyringLocation::Shared {
            backend,
            prefix,
            label,
            stale_after,
            ..
        } => Ok(
            DocStore::shared(backend, prefix, label, *stale_after, None)?
                .load()
                .await?
                .is_some(),
        ),
    }
}

/// Refuses at once if a data directory already has a keyring, before any root key is read.
/// (A shared keyring is refused by [`create`]'s compare-and-swap.)
pub(super) fn refuse_existing(location: &KeyringLocation) -> Result<(), KeyringError> {
    match location {
        KeyringLocation::Dir(dir) if dir_has_keyring(dir) => {
            Err(KeyringError::Exists(dir.display().to_string()))
        }
        _ => Ok(()),
    }
}

fn dir_has_keyring(dir: &Path) -> bool {
    dir.join(DIR_STORE).exists() || dir.join(LEGACY_DIR).exists()
}

/// Stores a new keyring's document at `location`; refuses to replace an existing keyring.
pub(super) async fn create(location: &KeyringLocation, value: Vec<u8>) -> Result<(), KeyringError> {
    let store = match location {
        KeyringLocation::Dir(dir) => {
            let dir = dir.clone();
            blocking(&dir.display().to_string(), move || {
                let io = |e: std::io::Error| storage_error(&dir.display().to_string(), e);
                // A directory made here is private; an existing one is the operator's, left as
                // it is (it may be shared, like /var/lib): the keyring's own store is private.
                if !dir.exists() {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&dir)
                        .map_err(io)?;
                }
                let _lock = DirLock::acquire(&dir)?;
                if dir_has_keyring(&dir) {
                    return Err(KeyringError::Exists(dir.display().to_string()));
                }
                let store_dir = dir.join(DIR_STORE);
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&store_dir)
                    .map_err(io)?;
                fs::set_permissions(&store_dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
                let store = DocStore::in_dir(open_sled(&store_dir, &dir)?, &dir);
                if let Some(parent) = dir.parent() {
                    let _ = sync_dir(parent);
                }
                Ok(store)
            })
            .await?
        }
        KeyringLocation::Shared {
            backend,
            prefix,
            label,
            stale_after,
            ..
        } => DocStore::shared(backend, prefix, label, *stale_after, None)?,
    };
    if !store.save(value).await? {
        return Err(KeyringError::Exists(store.location().to_owned()));
    }
    Ok(())
}

/// A keyring document found where a keyring lives, not yet known to be authentic.
pub(super) struct Found {
    stored: Vec<u8>,
    source: Source,
}

/// What a data directory holds.
enum InDir {
    /// This release's store, with what a conversion that stopped after its rename may have left
    /// of keyward 0.1.0's directory (its document), and the directory still locked.
    Current {
        store: DocStore,
        lock: DirLock,
        legacy: Option<Vec<u8>>,
    },
    /// keyward 0.1.0's document, with the directory still locked for its conversion.
    Legacy(Vec<u8>, DirLock),
}

enum Source {
    /// In its store, at the revision [`DocStore::revision`].
    Store(DocStore),
    /// In a data directory of keyward 0.1.0, to convert once the document proved authentic.
    Legacy { dir: PathBuf, lock: DirLock },
}

impl Found {
    /// Reads the keyring document at `location`. Writes nothing.
    pub async fn find(location: &KeyringLocation) -> Result<Found, KeyringError> {
        match location {
            KeyringLocation::Dir(dir) => Self::find_in_dir(dir).await,
            KeyringLocation::Shared {
                backend,
                prefix,
                label,
                stale_after,
                state,
            } => {
                let store =
                    DocStore::shared(backend, prefix, label, *stale_after, state.as_deref())?;
                Self::from_store(store).await
            }
        }
    }

    async fn from_store(store: DocStore) -> Result<Found, KeyringError> {
        let (stored, revision) = store
            .load()
            .await?
            .ok_or_else(|| KeyringError::NotFound(store.location().to_owned()))?;
        store.set_revision(revision);
        Ok(Found {
            stored,
            source: Source::Store(store),
        })
    }

    async fn find_in_dir(dir: &Path) -> Result<Found, KeyringError> {
        let location = dir.display().to_string();
        let owned = dir.to_owned();
        let found = blocking(&location, move || {
            let dir = owned;
            if !dir.is_dir() {
                return Ok(None);
            }
            let lock = DirLock::acquire(&dir)?;
            let current = dir.join(DIR_STORE);
            if current.is_dir() {
                let legacy = leftover_legacy(&dir)?;
                let store = DocStore::in_dir(open_sled(&current, &dir)?, &dir);
                return Ok(Some(InDir::Current {
                    store,
                    lock,
                    legacy,
                }));
            }
            Ok(read_legacy(&dir)?.map(|stored| InDir::Legacy(stored, lock)))
        })
        .await?;
        match found.ok_or(KeyringError::NotFound(location.clone()))? {
            InDir::Current {
                store,
                lock,
                legacy,
            } => {
                let found = Self::from_store(store).await?;
                // What a conversion that stopped after its rename leaves: the old directory,
                // holding the document the new store got. Anything else there is not ours to
                // remove (say, a keyring made by 0.1.0 after a downgrade).
                if legacy.is_some_and(|old| old != found.stored) {
                    return Err(storage_error(
                        &location,
                        format!(
                            "both {DIR_STORE}/ and {LEGACY_DIR}/ (keyward 0.1.0's layout) hold a \
                             keyring, and they differ; move one of them out of the directory"
                        ),
                    ));
                }
                let dir = dir.to_owned();
                blocking(&location, move || {
                    remove_all(&dir, &[LEGACY_DIR, TEMP_DIR])?;
                    drop(lock);
                    Ok(())
                })
                .await?;
                Ok(found)
            }
            InDir::Legacy(stored, lock) => Ok(Found {
                stored,
                source: Source::Legacy {
                    dir: dir.to_owned(),
                    lock,
                },
            }),
        }
    }

    /// Reads the document again from its store (a shared keyring may have changed since it was
    /// found); a data directory of keyward 0.1.0 has nothing newer.
    pub async fn reload(&mut self) -> Result<(), KeyringError> {
        if let Source::Store(store) = &self.source {
            let (stored, revision) = store
                .load()
                .await?
                .ok_or_else(|| KeyringError::NotFound(store.location().to_owned()))?;
            store.set_revision(revision);
            self.stored = stored;
        }
        Ok(())
    }

    /// The stored document (`HMAC ‖ json`).
    pub fn stored(&self) -> &[u8] {
        &self.stored
    }

    /// The store to keep the keyring in from now on. A data directory of keyward 0.1.0 is
    /// converted now (call this only once the document proved authentic).
    pub async fn into_store(self) -> Result<DocStore, KeyringError> {
        match self.source {
            Source::Store(store) => Ok(store),
            Source::Legacy { dir, lock } => convert(dir, lock, self.stored).await,
        }
    }
}

/// The document of a keyward 0.1.0 data directory, or None if it has none. Checks the format.
fn read_legacy(dir: &Path) -> Result<Option<Vec<u8>>, KeyringError> {
    let location = dir.display().to_string();
    legacy::read_sled_default_tree(&dir.join(LEGACY_DIR))
        .map_err(|e| open_error(e, &location))?
        .map_or(Ok(None), legacy_document)
}

/// The document left in keyward 0.1.0's directory next to this release's store, if any. One that
/// cannot be read is what a removal that stopped midway leaves: nothing to keep.
fn leftover_legacy(dir: &Path) -> Result<Option<Vec<u8>>, KeyringError> {
    match legacy::read_sled_default_tree(&dir.join(LEGACY_DIR)) {
        Err(e) if e.is_locked() => Err(in_use(&dir.display().to_string())),
        Err(_) | Ok(None) => Ok(None),
        Ok(Some(pairs)) => legacy_document(pairs),
    }
}

/// The document among keyward 0.1.0's pairs, or None if they hold none. Checks the format.
fn legacy_document(pairs: legacy::Pairs) -> Result<Option<Vec<u8>>, KeyringError> {
    let get = |key: &[u8]| {
        pairs
            .iter()
            .find(|(k, _)| k.as_slice() == key)
            .map(|(_, v)| v.clone())
    };
    match get(LEGACY_FORMAT_KEY) {
        Some(v) if v == LEGACY_FORMAT => {}
        Some(v) => {
            return Err(KeyringError::UnsupportedFormat(
                String::from_utf8_lossy(&v).into_owned(),
            ))
        }
        None => return Ok(None),
    }
    Ok(get(LEGACY_DOC_KEY))
}

/// Moves a keyward 0.1.0 keyring into the current layout (see the module docs), holding the
/// data directory's lock throughout.
async fn convert(dir: PathBuf, lock: DirLock, stored: Vec<u8>) -> Result<DocStore, KeyringError> {
    let location = dir.display().to_string();
    let temp_dir = dir.clone();
    let temp = blocking(&location, move || {
        remove_all(&temp_dir, &[TEMP_DIR])?;
        Ok(DocStore::in_dir(
            open_sled(&temp_dir.join(TEMP_DIR), &temp_dir)?,
            &temp_dir,
        ))
    })
    .await?;
    if !temp.save(stored).await? {
        return Err(storage_error(
            &location,
            "a new store already held a keyring",
        ));
    }
    let store = blocking(&location, move || {
        // Closing the store waits until sled has let go of its files.
        drop(temp);
        let io = |e: std::io::Error| storage_error(&dir.display().to_string(), e);
        sync_dir(&dir.join(TEMP_DIR)).map_err(io)?;
        fs::rename(dir.join(TEMP_DIR), dir.join(DIR_STORE)).map_err(io)?;
        sync_dir(&dir).map_err(io)?;
        remove_all(&dir, &[LEGACY_DIR])?;
        tracing::info!(dir = %dir.display(), "converted the keyring to this release's layout");
        let store = DocStore::in_dir(open_sled(&dir.join(DIR_STORE), &dir)?, &dir);
        drop(lock);
        Ok(store)
    })
    .await?;
    let (_, revision) = store
        .load()
        .await?
        .ok_or_else(|| KeyringError::NotFound(location.clone()))?;
    store.set_revision(revision);
    Ok(store)
}

/// Opens the sled store at `path` (in the data directory `dir`).
fn open_sled(path: &Path, dir: &Path) -> Result<SledBackend, KeyringError> {
    SledBackend::open(path, DIR_STORE_OPTIONS)
        .map_err(|e| open_error(e, &dir.display().to_string()))
}

fn open_error(e: BackendError, location: &str) -> KeyringError {
    if e.is_locked() {
        in_use(location)
    } else {
        storage_error(location, e)
    }
}

fn in_use(location: &str) -> KeyringError {
    storage_error(location, "the keyring is in use by another keyward process")
}

/// Removes the named entries of `dir` that exist, then makes the removal durable.
fn remove_all(dir: &Path, names: &[&str]) -> Result<(), KeyringError> {
    let io = |e: std::io::Error| storage_error(&dir.display().to_string(), e);
    let mut removed = false;
    for name in names {
        match fs::remove_dir_all(dir.join(name)) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
    }
    if removed {
        sync_dir(dir).map_err(io)?;
    }
    Ok(())
}

/// Puts the rewritten store `DIR/keyring-v2.tmp/` in the place of `DIR/keyring-v2/` with one
/// atomic exchange, then removes the old store (now under the temporary name). A crash leaves
/// either store in place, and the other under the temporary name, which the next open removes.
fn swap_in_rewritten(dir: &Path) -> Result<(), KeyringError> {
    let location = dir.display().to_string();
    let io = |e: std::io::Error| storage_error(&location, e);
    sync_dir(&dir.join(TEMP_DIR)).map_err(io)?;
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        dir.join(TEMP_DIR),
        rustix::fs::CWD,
        dir.join(DIR_STORE),
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(|e| {
        storage_error(
            &location,
            format!("cannot swap in the rewritten store: {e}"),
        )
    })?;
    sync_dir(dir).map_err(io)?;
    remove_all(dir, &[TEMP_DIR])
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all())
}

/// An exclusive lock on a data directory while its keyring is opened, created or converted.
/// Released on drop.
struct DirLock {
    _dir: fs::File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, KeyringError> {
        let location = dir.display().to_string();
        let file = fs::File::open(dir).map_err(|e| storage_error(&location, e))?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(DirLock { _dir: file }),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    if Instant::now() >= deadline {
                        return Err(in_use(&location));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(storage_error(&location, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain database as keyward 0.1.0 wrote it.
    fn write_legacy(dir: &Path, pairs: &[(&[u8], &[u8])]) {
        legacy::write_sled_default_tree(&dir.join(LEGACY_DIR), pairs);
    }

    #[tokio::test]
    async fn a_legacy_directory_is_converted_once_and_its_old_copy_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        write_legacy(&dir, &[(b"format_version", b"1"), (b"keyring", b"doc")]);
        // A conversion that stopped after writing part of its temporary store.
        fs::create_dir_all(dir.join(TEMP_DIR)).unwrap();
        fs::write(dir.join(TEMP_DIR).join("db"), b"half").unwrap();
        let location = KeyringLocation::Dir(dir.clone());
        assert!(exists(&location).await.unwrap());
        assert!(matches!(
            refuse_existing(&location),
            Err(KeyringError::Exists(_))
        ));
        let found = Found::find(&location).await.unwrap();
        assert_eq!(found.stored(), b"doc");
        assert!(
            dir.join(LEGACY_DIR).exists(),
            "nothing changes before conversion"
        );
        let store = found.into_store().await.unwrap();
        assert!(!dir.join(LEGACY_DIR).exists() && !dir.join(TEMP_DIR).exists());
        assert_eq!(store.load().await.unwrap().unwrap().0, b"doc");
        assert!(store.revision().is_some());
        drop(store);
        let again = Found::find(&location).await.unwrap();
        assert_eq!(again.stored(), b"doc");
    }

    #[tokio::test]
    async fn a_conversion_stopped_after_its_rename_is_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        write_legacy(&dir, &[(b"format_version", b"1"), (b"keyring", b"doc")]);
        let location = KeyringLocation::Dir(dir.clone());
        let store = Found::find(&location)
            .await
            .unwrap()
            .into_store()
            .await
            .unwrap();
        drop(store);
        // Put the old directory back, as if the crash came before it was removed.
        write_legacy(&dir, &[(b"format_version", b"1"), (b"keyring", b"doc")]);
        let found = Found::find(&location).await.unwrap();
        assert_eq!(found.stored(), b"doc");
        assert!(!dir.join(LEGACY_DIR).exists());
        drop(found);
        // Or stopped while removing it (sled cannot read what is left).
        fs::create_dir_all(dir.join(LEGACY_DIR)).unwrap();
        fs::write(dir.join(LEGACY_DIR).join("db"), b"").unwrap();
        Found::find(&location).await.unwrap();
        assert!(!dir.join(LEGACY_DIR).exists());
    }

    #[tokio::test]
    async fn a_different_keyring_in_the_old_layout_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        write_legacy(&dir, &[(b"format_version", b"1"), (b"keyring", b"doc")]);
        let location = KeyringLocation::Dir(dir.clone());
        let found = Found::find(&location).await.unwrap();
        drop(found.into_store().await.unwrap());
        // keyward 0.1.0 run on the directory again would make a keyring of its own.
        write_legacy(&dir, &[(b"format_version", b"1"), (b"keyring", b"other")]);
        let e = Found::find(&location).await.map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("they differ"), "{e}");
        assert!(dir.join(LEGACY_DIR).exists() && dir.join(DIR_STORE).exists());
    }

    #[tokio::test]
    async fn legacy_formats_and_missing_keyrings() {
        let tmp = tempfile::tempdir().unwrap();
        let none = KeyringLocation::Dir(tmp.path().join("none"));
        assert!(!exists(&none).await.unwrap());
        assert!(matches!(
            Found::find(&none).await.map(|_| ()),
            Err(KeyringError::NotFound(_))
        ));
        assert!(!tmp.path().join("none").exists(), "nothing was created");
        let newer = tmp.path().join("newer");
        write_legacy(&newer, &[(b"format_version", b"2"), (b"keyring", b"doc")]);
        let e = Found::find(&KeyringLocation::Dir(newer.clone()))
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(&e, KeyringError::UnsupportedFormat(v) if v == "2"),
            "{e}"
        );
        assert!(
            newer.join(LEGACY_DIR).exists(),
            "a refused directory is left alone"
        );
        let empty = tmp.path().join("empty");
        write_legacy(&empty, &[]);
        assert!(matches!(
            Found::find(&KeyringLocation::Dir(empty)).await.map(|_| ()),
            Err(KeyringError::NotFound(_))
        ));
    }

    #[test]
    fn shared_keys_and_prefixes() {
        assert_eq!(shared_key("/keyward"), DEFAULT_KEY);
        assert_eq!(shared_key("/a/b/"), "/a/b/kms/keyring");
        for bad in ["keyward", "/", ""] {
            assert!(matches!(
                shared_key_checked(bad),
                Err(KeyringError::InvalidInput {
                    field: "prefix",
                    ..
                })
            ));
        }
    }
}
