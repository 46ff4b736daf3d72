//! The sled implementation of [`Backend`]: an embedded, durable, revisioned
//! key-value store.
//!
//! # On-disk layout
//!
//! One sled database per directory, with four trees:
//!
//! - `kv` — the current state: `key -> record`.
//! - `log` — the change log, for watch replay: `be64(revision) -> event` (kind, key, the record
//!   after the change, the record before it).
//! - `history` — every retained version of every key, for reads at past revisions:
//!   `esc(key) ‖ 00 01 ‖ be64(revision) -> record | tombstone`, plus one optional marker
//!   `esc(key) ‖ 00 01 ‖ be64(0) -> floor` saying that versions of this key older than `floor`
//!   were pruned. `esc` doubles every `00` byte into `00 ff`, so the encoding is order-preserving
//!   and no two keys can collide (a key's entries are contiguous and sorted by revision).
//! - `meta` — `format_version` (`be32`, currently [`FORMAT_VERSION`]), `current_revision` and
//!   `compacted_revision` (`be64`). The format version is written on first open; a store with
//!   another version is refused with [`BackendError::UnsupportedFormat`].
//!
//! A record is `01 ‖ be64(create_revision) ‖ be64(mod_revision) ‖ be64(version) ‖ value`; a
//! tombstone is `00 ‖ be64(revision)`; a floor marker is `02 ‖ be64(floor)`. All lengths inside
//! log events are `be64`, so values of any size and keys of any bytes are fine.
//!
//! # Writes: one writer, group commit, durability
//!
//! Every write goes through one dedicated writer thread fed by a channel. It takes every request
//! queued at that moment (a batch), applies them in order (each applied change gets the next
//! revision; conditions see the effects of earlier requests of the same batch), and commits the
//! batch's changes to all four trees in **one** sled transaction, so a crash shows either all of
//! a batch (values, log entries, history entries, revision counter) or none of it. It then makes
//! the batch durable with one `flush` plus `fsync`: sled's own flush only calls
//! `sync_file_range`, which persists neither file metadata nor the device's write cache, so the
//! writer also calls `fsync` on sled's `db` file, on new blob files under `blobs/` (sled does not
//! sync those), and on the directories whose entries changed. Only then does it publish the new
//! revision, reply to every request of the batch and send the batch's events to watchers. So
//! concurrent writers share one `fsync`; a lone writer pays one.
//!
//! Readers read sled directly under a lock that the writer holds exclusively only while it
//! applies a batch in memory (microseconds), so every read (current or past) is a consistent
//! snapshot. While the batch is being made durable, its revision and keys are published as *in
//! flight*: a read that would touch one of those keys waits until the batch is durable and then
//! reads again, so no read ever observes a change that is not yet durable, and reads of other
//! keys do not wait for the `fsync` at all. Watches only deliver durable changes too.
//!
//! If the commit or the `fsync` fails, the batch's requests get [`BackendError::Io`] and the
//! backend refuses every later request with [`BackendError::Unavailable`]: after a failed
//! `fsync` the state of the page cache cannot be trusted, and the store must be reopened.
//!
//! # Retention
//!
//! - Per key, at most [`SledOptions::history_per_key`] versions (puts and deletes) are kept in
//!   `history`; when older ones are pruned, the key's floor marker records it, and reads of that
//!   key below the floor fail with [`BackendError::Compacted`].
//! - The log keeps the last [`SledOptions::log_retention`] revisions: after each batch, the
//!   compacted revision is raised to `current - log_retention + 1` and older log entries are
//!   deleted.
//! - [`Backend::compact`] raises the compacted revision explicitly, deletes older log entries and,
//!   for every key, every history entry older than the key's newest entry at or below the
//!   compacted revision (that one too if it is a tombstone). When log retention raises the
//!   compacted revision, each key's history is pruned the same way the next time it is written.
//!
//! Reads and watches below the compacted revision fail with [`BackendError::Compacted`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::sled::transaction::{ConflictableTransactionError, TransactionError};
use ::sled::{Batch, IVec, Transactional, Tree};
use tokio::sync::{broadcast, oneshot};

use super::{
    check_key, Backend, BackendError, Event, EventKind, Expect, KeyValue, RangeRequest,
    RangeResponse, Revision, WatchStream, WriteOutcome,
};

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const TREE_KV: &str = "kv";
const TREE_LOG: &str = "log";
const TREE_HISTORY: &str = "history";
const TREE_META: &str = "meta";

const META_FORMAT: &[u8] = b"format_version";
const META_CURRENT: &[u8] = b"current_revision";
const META_COMPACTED: &[u8] = b"compacted_revision";

/// Most requests the writer applies in one batch (one transaction, one `fsync`).
const MAX_BATCH_REQUESTS: usize = 1024;
/// A batch stops growing once its values add up to this many bytes.
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Batches of events kept for live watchers before a slow one lags (and then re-reads the log).
const WATCH_BROADCAST_CAPACITY: usize = 1024;
/// Events buffered between a watch's task and its stream.
const WATCH_STREAM_CAPACITY: usize = 256;
/// Log entries read at a time when a watch replays.
const REPLAY_CHUNK: usize = 256;
/// History keys deleted per sled batch during an explicit compaction.
const COMPACT_CHUNK: usize = 4096;

const TAG_TOMBSTONE: u8 = 0;
const TAG_RECORD: u8 = 1;
const TAG_FLOOR: u8 = 2;
const EVENT_PUT: u8 = 1;
const EVENT_DELETE: u8 = 2;

/// Retention settings of a [`SledBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SledOptions {
    /// Versions of each key (puts and deletes) kept for reads at past revisions; 0 keeps every
    /// version until compaction. Default 10.
    pub history_per_key: usize,
    /// Revisions kept in the change log for watch replay; older ones are compacted after each
    /// write. 0 means unlimited (only [`Backend::compact`] discards history). Default 100 000.
    pub log_retention: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            history_per_key: 10,
            log_retention: 100_000,
        }
    }
}

/// Counters of the writer thread, for measuring group commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterStats {
    /// Batches of writes handled; each costs one `fsync` (none if it changed nothing).
    pub batches: u64,
    /// Put and delete requests handled in those batches (conflicts included).
    pub requests: u64,
}

/// A [`Backend`] stored in an embedded sled database (see the module docs for the format and
/// the guarantees).
///
/// Dropping it stops its writer thread after the queued writes are done (they complete and are
/// answered), and waits briefly until sled has released the directory, so that it can be
/// reopened at once. Watch streams end with [`BackendError::Unavailable`] once it is dropped.
///
/// A put or delete whose future is dropped after it was submitted may still be applied, as with
/// any remote store: only its answer is lost.
pub struct SledBackend {
    shared: Arc<Shared>,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBackend")
            .field("dir", &self.shared.dir)
            .field("options", &self.shared.opts)
            .field(
                "current_revision",
                &self.shared.current.load(Ordering::Acquire),
            )
            .finish_non_exhaustive()
    }
}

/// State shared by the handle, the writer thread and watch tasks.
struct Shared {
    dir: PathBuf,
    db: ::sled::Db,
    kv: Tree,
    log: Tree,
    history: Tree,
    meta: Tree,
    opts: SledOptions,
    /// Held exclusively by the writer while it applies a batch (and through a compaction),
    /// shared by readers while they read; holds the batch being made durable, if any.
    commit_lock: RwLock<Option<Arc<Inflight>>>,
    /// The durable revision, and whether the write path failed: readers that touched an
    /// in-flight batch wait on it.
    durable: tokio::sync::watch::Sender<(Revision, bool)>,
    /// The current (durable) revision.
    current: AtomicI64,
    /// The compacted revision.
    compacted: AtomicI64,
    /// Set after an I/O error in the write path; every request is then refused.
    failed: AtomicBool,
    /// Live events, per batch. Taken (closed) when the backend is dropped.
    events: Mutex<Option<broadcast::Sender<Arc<Vec<Event>>>>>,
    batches: AtomicU64,
    requests: AtomicU64,
    /// Declared last, so dropped after every sled handle above.
    _release: ReleaseWait,
}

/// Waits, when the backend is gone, until sled has released the directory.
///
/// sled's background threads hold its files (and the `flock` on `db`) for a moment after the
/// last handle is dropped; waiting here (bounded) means the store can be reopened as soon as
/// the backend has been dropped.
struct ReleaseWait {
    db_path: PathBuf,
}

impl Drop for ReleaseWait {
    fn drop(&mut self) {
        wait_until_unlocked(&self.db_path, RELEASE_WAIT);
    }
}

/// How long opening waits for sled's lock on the directory, and dropping for its release.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Waits (at most `timeout`) until nobody holds sled's `flock` on `db_path`. sled's background
/// threads keep the file open for a moment after a database is dropped, so a store closed in
/// this process could not otherwise be reopened right away.
fn wait_until_unlocked(db_path: &Path, timeout: Duration) {
    let Ok(file) = File::open(db_path) else {
        // Not created yet (or unreadable: sled will report it).
        return;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = rustix::fs::flock(&file, rustix::fs::FlockOperation::Unlock);
                return;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => return,
        }
    }
}

enum WriteOp {
    Put(Vec<u8>),
    Delete,
}

struct WriteRequest {
    key: Vec<u8>,
    op: WriteOp,
    expect: Expect,
    reply: oneshot::Sender<Result<WriteOutcome, BackendError>>,
}

enum Request {
    Write(WriteRequest),
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
}

/// sled's page cache. Its default (1 GiB) lets a store of 100,000 Secrets grow to ~490 MiB of
/// RSS; the operating system's page cache still holds the files, so reads stay fast.
const SLED_CACHE_BYTES: u64 = 64 << 20;

impl SledBackend {
    /// Opens (creating if needed) the store in `dir`, checks its format version and starts the
    /// writer thread. Works both inside and outside a tokio runtime (it blocks briefly: call it
    /// at startup, or from `spawn_blocking`).
    ///
    /// Only one process may have a store open: if another holds it, this fails after waiting up
    /// to 5 s for it to let go.
    pub fn open(dir: &Path, opts: SledOptions) -> Result<SledBackend, BackendError> {
        let existed = dir.exists();
        wait_until_unlocked(&dir.join("db"), RELEASE_WAIT);
        let db = ::sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
            .map_err(sled_error)?;
        let open_tree = |name: &str| db.open_tree(name).map_err(sled_error);
        let kv = open_tree(TREE_KV)?;
        let log = open_tree(TREE_LOG)?;
        let history = open_tree(TREE_HISTORY)?;
        let meta = open_tree(TREE_META)?;

        match meta.get(META_FORMAT).map_err(sled_error)? {
            Some(found) => {
                if found.as_ref() != FORMAT_VERSION.to_be_bytes() {
                    return Err(BackendError::UnsupportedFormat {
                        found: describe_format(&found),
                        supported: FORMAT_VERSION,
                    });
                }
            }
            None => {
                if !(kv.is_empty() && log.is_empty() && history.is_empty() && meta.is_empty()) {
                    return Err(BackendError::UnsupportedFormat {
                        found: "none (data without a format version)".to_string(),
                        supported: FORMAT_VERSION,
                    });
                }
                let mut init = Batch::default();
                init.insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes());
                init.insert(META_CURRENT, &rev_bytes(1));
                init.insert(META_COMPACTED, &rev_bytes(1));
                meta.apply_batch(init).map_err(sled_error)?;
            }
        }
        let current = read_meta_rev(&meta, META_CURRENT)?;
        let compacted = read_meta_rev(&meta, META_COMPACTED)?;
        if current < 1 || compacted < 1 || compacted > current {
            return Err(BackendError::Corrupt(format!(
                "meta says current revision {current}, compacted revision {compacted}"
            )));
        }
        if let Some((last, _)) = log.last().map_err(sled_error)? {
            let last = decode_rev_key(&last)?;
            if last > current {
                return Err(BackendError::Corrupt(format!(
                    "log entry {last} is newer than the current revision {current}"
                )));
            }
        }
        // Log entries below the compacted revision left over by a crash.
        prune_log(&log, compacted)?;

        let mut files = FileSync::new(dir)?;
        files.make_durable(&db)?;
        if !existed {
            if let Some(parent) = dir.parent() {
                // Best effort: the parent may not be readable; the store itself is synced.
                let _ = File::open(parent).and_then(|d| d.sync_all());
            }
        }

        let (events, _) = broadcast::channel(WATCH_BROADCAST_CAPACITY);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            db,
            kv,
            log,
            history,
            meta,
            opts,
            commit_lock: RwLock::new(None),
            durable: tokio::sync::watch::Sender::new((current, false)),
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
            failed: AtomicBool::new(false),
            events: Mutex::new(Some(events.clone())),
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            _release: ReleaseWait {
                db_path: dir.join("db"),
            },
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            shared: Arc::clone(&shared),
            rx,
            events,
            files,
        };
        let handle = std::thread::Builder::new()
            .name("keyward-sled-writer".to_string())
            .spawn(move || writer.run())
            .map_err(|e| BackendError::Io(format!("cannot start the writer thread: {e}")))?;
        Ok(SledBackend {
            shared,
            requests: Some(tx),
            writer: Some(handle),
        })
    }

    /// Counters of the writer thread since open (average batch size = requests / batches).
    pub fn writer_stats(&self) -> WriterStats {
        WriterStats {
            batches: self.shared.batches.load(Ordering::Relaxed),
            requests: self.shared.requests.load(Ordering::Relaxed),
        }
    }

    async fn submit_write(
        &self,
        key: &[u8],
        op: WriteOp,
        expect: Expect,
    ) -> Result<WriteOutcome, BackendError> {
        check_key(key)?;
        let (reply, answer) = oneshot::channel();
        self.send(Request::Write(WriteRequest {
            key: key.to_vec(),
            op,
            expect,
            reply,
        }))?;
        answer.await.map_err(|_| writer_gone())?
    }

    fn send(&self, request: Request) -> Result<(), BackendError> {
        self.shared.check_failed()?;
        let requests = self.requests.as_ref().ok_or_else(writer_gone)?;
        requests.send(request).map_err(|_| writer_gone())
    }
}

impl Drop for SledBackend {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish the queued requests, then exit.
        drop(self.requests.take());
        if let Some(handle) = self.writer.take() {
            // A panic in the writer would already have answered nothing; nothing to add here.
            let _ = handle.join();
        }
        // Close the live-event channel so that watch streams end.
        let mut events = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
        drop(events.take());
    }
}

impl Shared {
    fn read_guard(&self) -> Result<RwLockReadGuard<'_, Option<Arc<Inflight>>>, BackendError> {
        let guard = self.commit_lock.read().unwrap_or_else(|e| e.into_inner());
        self.check_failed()?;
        Ok(guard)
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, Option<Arc<Inflight>>> {
        self.commit_lock.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `revision` is durable, or fails if the write path failed or closed.
    async fn wait_durable(&self, revision: Revision) -> Result<(), BackendError> {
        let mut rx = self.durable.subscribe();
        rx.wait_for(|(durable, failed)| *durable >= revision || *failed)
            .await
            .map_err(|_| writer_gone())?;
        self.check_failed()
    }

    /// A range read; the caller holds the commit lock and checked it touches no in-flight key.
    fn range_locked(&self, req: &RangeRequest) -> Result<RangeResponse, BackendError> {
        let current = self.current.load(Ordering::Acquire);

        let revision = match req.revision {
            None => current,
            Some(rev) => {
                self.check_read_revision(rev)?;
                rev
            }
        };
        if req.end.as_ref().is_some_and(|end| *end <= req.start) {
            return Ok(RangeResponse {
                kvs: Vec::new(),
                more: false,
                revision,
            });
        }
        let mut kvs = if revision == current {
            self.range_current(req)?
        } else {
            self.range_at(req, revision)?
        };
        let more = req.limit > 0 && kvs.len() > req.limit;
        kvs.truncate(if req.limit > 0 { req.limit } else { kvs.len() });
        Ok(RangeResponse {
            kvs,
            more,
            revision,
        })
    }

    fn check_failed(&self) -> Result<(), BackendError> {
        if self.failed.load(Ordering::Acquire) {
            Err(BackendError::Unavailable(
                "an earlier write failed to reach the disk; reopen the store".to_string(),
            ))
        } else {
            Ok(())
        }
    }

    /// Checks a read revision against the current and compacted revisions (caller holds the
    /// read lock).
    fn check_read_revision(&self, revision: Revision) -> Result<(), BackendError> {
        if revision < 1 {
            return Err(BackendError::InvalidArgument(format!(
                "revision must be at least 1, got {revision}"
            )));
        }
        let current = self.current.load(Ordering::Acquire);
        if revision > current {
            return Err(BackendError::FutureRevision {
                requested: revision,
                current,
            });
        }
        let compacted = self.compacted.load(Ordering::Acquire);
        if revision < compacted {
            return Err(BackendError::Compacted {
                requested: revision,
                compacted,
            });
        }
        Ok(())
    }

    fn get_current(&self, key: &[u8]) -> Result<Option<KeyValue>, BackendError> {
        match self.kv.get(key).map_err(sled_error)? {
            Some(bytes) => Ok(Some(decode_record(key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The key as of `revision` from its retained history.
    fn get_at(&self, key: &[u8], revision: Revision) -> Result<Option<KeyValue>, BackendError> {
        let prefix = history_prefix(key);
        let floor = match self
            .history
            .get(history_key_with(&prefix, 0))
            .map_err(sled_error)?
        {
            Some(marker) => decode_floor(&marker)?,
            None => 0,
        };
        if revision < floor {
            return Err(BackendError::Compacted {
                requested: revision,
                compacted: floor,
            });
        }
        let newest = self
            .history
            .range(history_key_with(&prefix, 1)..=history_key_with(&prefix, revision))
            .next_back()
            .transpose()
            .map_err(sled_error)?;
        match newest {
            Some((_, value)) => decode_history_value(key, &value),
            None => Ok(None),
        }
    }

    fn range_current(&self, req: &RangeRequest) -> Result<Vec<KeyValue>, BackendError> {
        let iter = match &req.end {
            None => self.kv.scan_prefix(&req.start),
            Some(end) => self.kv.range(req.start.as_slice()..end.as_slice()),
        };
        let take = take_count(req.limit);
        let mut kvs = Vec::new();
        for item in iter.take(take) {
            let (key, value) = item.map_err(sled_error)?;
            kvs.push(decode_record(&key, &value)?);
        }
        Ok(kvs)
    }

    fn range_at(
        &self,
        req: &RangeRequest,
        revision: Revision,
    ) -> Result<Vec<KeyValue>, BackendError> {
        let start = escape_key(&req.start);
        let iter = match &req.end {
            None => self.history.scan_prefix(&start),
            Some(end) => self.history.range(start..escape_key(end)),
        };
        let take = take_count(req.limit);
        let mut kvs = Vec::new();
        let mut group: Option<HistoryGroup> = None;
        for item in iter {
            let (hkey, value) = item.map_err(sled_error)?;
            let (key, rev) = decode_history_key(&hkey)?;
            if group.as_ref().is_some_and(|g| g.key != key) {
                if let Some(done) = group.take() {
                    if let Some(kv) = done.finish(revision)? {
                        kvs.push(kv);
                        if kvs.len() >= take {
                            return Ok(kvs);
                        }
                    }
                }
            }
            let g = group.get_or_insert_with(|| HistoryGroup {
                key,
                floor: 0,
                newest: None,
            });
            if rev == 0 {
                g.floor = decode_floor(&value)?;
            } else if rev <= revision {
                g.newest = Some(value);
            }
        }
        if let Some(done) = group {
            if let Some(kv) = done.finish(revision)? {
                kvs.push(kv);
            }
        }
        Ok(kvs)
    }
}

/// One key's history entries while scanning a range at a past revision.
struct HistoryGroup {
    key: Vec<u8>,
    floor: Revision,
    /// Newest entry at or below the read revision.
    newest: Option<IVec>,
}

impl HistoryGroup {
    fn finish(self, revision: Revision) -> Result<Option<KeyValue>, BackendError> {
        if revision < self.floor {
            return Err(BackendError::Compacted {
                requested: revision,
                compacted: self.floor,
            });
        }
        match self.newest {
            Some(value) => decode_history_value(&self.key, &value),
            None => Ok(None),
        }
    }
}

#[async_trait::async_trait]
impl Backend for SledBackend {
    async fn get(
        &self,
        key: &[u8],
        revision: Option<Revision>,
    ) -> Result<(Option<KeyValue>, Revision), BackendError> {
        check_key(key)?;
        let shared = &self.shared;
        loop {
            let pending = {
                let guard = shared.read_guard()?;
                match guard.as_ref().filter(|b| b.keys.contains(key)) {
                    Some(batch) => batch.revision,
                    None => {
                        let current = shared.current.load(Ordering::Acquire);
                        return match revision {
                            None => Ok((shared.get_current(key)?, current)),
                            Some(rev) => {
                                shared.check_read_revision(rev)?;
                                if rev == current {
                                    Ok((shared.get_current(key)?, rev))
                                } else {
                                    Ok((shared.get_at(key, rev)?, rev))
                                }
                            }
                        };
                    }
                }
            };
            shared.wait_durable(pending).await?;
        }
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, BackendError> {
        let shared = &self.shared;
        loop {
            let pending = {
                let guard = shared.read_guard()?;
                match guard.as_ref().filter(|b| b.touches_range(&req)) {
                    Some(batch) => batch.revision,
                    None => return shared.range_locked(&req),
                }
            };
            shared.wait_durable(pending).await?;
        }
    }

    async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expect: Expect,
    ) -> Result<WriteOutcome, BackendError> {
        self.submit_write(key, WriteOp::Put(value), expect).await
    }

    async fn delete(&self, key: &[u8], expect: Expect) -> Result<WriteOutcome, BackendError> {
        self.submit_write(key, WriteOp::Delete, expect).await
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<WatchStream, BackendError> {
        if from < 0 {
            return Err(BackendError::InvalidArgument(format!(
                "watch revision must not be negative, got {from}"
            )));
        }
        let shared = &self.shared;
        // Subscribe to live events before looking at the log, so nothing falls in between.
        let live = {
            let events = shared.events.lock().unwrap_or_else(|e| e.into_inner());
            events
                .as_ref()
                .map(|tx| tx.subscribe())
                .ok_or_else(writer_gone)?
        };
        shared.check_failed()?;
        let current = shared.current.load(Ordering::Acquire);
        let compacted = shared.compacted.load(Ordering::Acquire);
        let from = if from == 0 { current + 1 } else { from };
        if from < compacted {
            return Err(BackendError::Compacted {
                requested: from,
                compacted,
            });
        }
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_STREAM_CAPACITY);
        let task = WatchTask {
            shared: Arc::downgrade(shared),
            prefix: prefix.to_vec(),
            last: from - 1,
            tx,
        };
        // Replay up to the revision read after subscribing; later changes arrive live.
        tokio::spawn(task.run(live, current));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision, BackendError> {
        let _guard = self.shared.read_guard()?;
        Ok(self.shared.current.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: Revision) -> Result<(), BackendError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Compact { revision, reply })?;
        answer.await.map_err(|_| writer_gone())?
    }

    async fn compacted_revision(&self) -> Result<Revision, BackendError> {
        let _guard = self.shared.read_guard()?;
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }
}

// ---------------------------------------------------------------------------------------------
// Watch

/// Feeds one watch stream: replays the log from `last + 1`, then follows live events.
struct WatchTask {
    /// Weak, so that an idle watch does not keep the database open after the backend is dropped.
    shared: Weak<Shared>,
    prefix: Vec<u8>,
    /// Last revision delivered (or skipped by the prefix filter).
    last: Revision,
    tx: tokio::sync::mpsc::Sender<Result<Event, BackendError>>,
}

/// Why a watch task stops.
enum Stop {
    /// The stream was dropped.
    Dropped,
    /// The stream ends with this error.
    Error(BackendError),
}

impl WatchTask {
    async fn run(mut self, mut live: broadcast::Receiver<Arc<Vec<Event>>>, replay_upto: Revision) {
        let stop = match self.follow(&mut live, replay_upto).await {
            Ok(never) => match never {},
            Err(stop) => stop,
        };
        if let Stop::Error(e) = stop {
            // The consumer may not be reading; do not wait for room.
            let _ = self.tx.try_send(Err(e));
        }
    }

    async fn follow(
        &mut self,
        live: &mut broadcast::Receiver<Arc<Vec<Event>>>,
        replay_upto: Revision,
    ) -> Result<std::convert::Infallible, Stop> {
        self.catch_up(replay_upto).await?;
        loop {
            let received = tokio::select! {
                _ = self.tx.closed() => return Err(Stop::Dropped),
                received = live.recv() => received,
            };
            match received {
                Ok(batch) => {
                    for event in batch.iter() {
                        let rev = event.kv.mod_revision;
                        if rev <= self.last {
                            continue;
                        }
                        if rev > self.last + 1 {
                            self.catch_up(rev - 1).await?;
                        }
                        self.deliver(event.clone()).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let upto = self.upgrade()?.current.load(Ordering::Acquire);
                    self.catch_up(upto).await?;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Stop::Error(writer_gone()));
                }
            }
        }
    }

    fn upgrade(&self) -> Result<Arc<Shared>, Stop> {
        self.shared
            .upgrade()
            .ok_or_else(|| Stop::Error(writer_gone()))
    }

    async fn deliver(&mut self, event: Event) -> Result<(), Stop> {
        self.last = event.kv.mod_revision;
        if event.kv.key.starts_with(&self.prefix) {
            self.tx.send(Ok(event)).await.map_err(|_| Stop::Dropped)?;
        }
        Ok(())
    }

    /// Delivers every logged change in `last + 1 ..= upto` (all durable), reading the log in
    /// chunks; a missing entry means it was compacted away.
    async fn catch_up(&mut self, upto: Revision) -> Result<(), Stop> {
        while self.last < upto {
            let chunk = {
                let shared = self.upgrade()?;
                read_log_chunk(&shared, self.last + 1, upto).map_err(Stop::Error)?
            };
            for event in chunk {
                self.deliver(event).await?;
            }
        }
        Ok(())
    }
}

/// Reads up to [`REPLAY_CHUNK`] consecutive log entries starting exactly at `from`.
fn read_log_chunk(
    shared: &Shared,
    from: Revision,
    upto: Revision,
) -> Result<Vec<Event>, BackendError> {
    let mut events = Vec::new();
    let entries = shared
        .log
        .range(rev_bytes(from)..=rev_bytes(upto))
        .take(REPLAY_CHUNK);
    for (expected, item) in (from..).zip(entries) {
        let (key, value) = item.map_err(sled_error)?;
        let rev = decode_rev_key(&key)?;
        if rev != expected {
            break;
        }
        let event = decode_event(&value)?;
        if event.kv.mod_revision != rev {
            return Err(BackendError::Corrupt(format!(
                "log entry {rev} holds an event of revision {}",
                event.kv.mod_revision
            )));
        }
        events.push(event);
    }
    if events.is_empty() {
        let compacted = shared.compacted.load(Ordering::Acquire);
        return Err(if from < compacted {
            BackendError::Compacted {
                requested: from,
                compacted,
            }
        } else {
            BackendError::Corrupt(format!("log entry {from} is missing"))
        });
    }
    Ok(events)
}

// ---------------------------------------------------------------------------------------------
// Writer

struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Request>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    files: FileSync,
}

/// The retained history of one key, as the writer maintains it.
struct KeyHistory {
    /// Retained entries, oldest first: revision and whether it is a tombstone.
    entries: Vec<(Revision, bool)>,
    /// Versions below this were pruned (0: none).
    floor: Revision,
}

impl KeyHistory {
    /// Applies compaction at `compacted`: drops every entry older than the newest one at or below
    /// `compacted`, and that one too if it is a tombstone; a floor at or below `compacted` no
    /// longer matters and is dropped.
    fn prune_compacted(&mut self, compacted: Revision) {
        if let Some(newest) = self.entries.iter().rposition(|(rev, _)| *rev <= compacted) {
            let tombstone = self.entries[newest].1;
            let cut = if tombstone { newest + 1 } else { newest };
            self.entries.drain(..cut);
        }
        if self.floor <= compacted {
            self.floor = 0;
        }
    }

    /// Keeps the newest `keep` entries (0: all); the oldest kept becomes the floor.
    fn prune_count(&mut self, keep: usize) {
        if keep > 0 && self.entries.len() > keep {
            let excess = self.entries.len() - keep;
            self.entries.drain(..excess);
            self.floor = self.entries.first().map_or(self.floor, |(rev, _)| *rev);
        }
    }
}

/// A batch applied in memory and being made durable: reads touching its keys wait for it.
#[derive(Debug)]
struct Inflight {
    revision: Revision,
    keys: std::collections::BTreeSet<Vec<u8>>,
}

impl Inflight {
    /// Whether a range read (prefix when `end` is None) includes one of this batch's keys.
    fn touches_range(&self, req: &RangeRequest) -> bool {
        match self.keys.range(req.start.clone()..).next() {
            None => false,
            Some(first) => match &req.end {
                None => first.starts_with(&req.start),
                Some(end) => first < end,
            },
        }
    }
}

/// One applied change of a batch.
struct Change {
    key: Vec<u8>,
    revision: Revision,
    /// Encoded record, or None for a delete.
    record: Option<IVec>,
}

impl Writer {
    fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut batch = vec![first];
            let mut bytes = 0usize;
            while batch.len() < MAX_BATCH_REQUESTS && bytes < MAX_BATCH_BYTES {
                match self.rx.try_recv() {
                    Ok(request) => {
                        if let Request::Write(WriteRequest {
                            op: WriteOp::Put(value),
                            ..
                        }) = &request
                        {
                            bytes = bytes.saturating_add(value.len());
                        }
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            self.handle(batch);
        }
        // The channel is closed and drained. Best effort: everything acknowledged is already
        // durable.
        let _ = self.shared.db.flush();
    }

    fn handle(&mut self, batch: Vec<Request>) {
        let mut writes = Vec::new();
        for request in batch {
            match request {
                Request::Write(write) => writes.push(write),
                Request::Compact { revision, reply } => {
                    self.commit(std::mem::take(&mut writes));
                    let result = self.compact(revision);
                    let _ = reply.send(result);
                }
            }
        }
        self.commit(writes);
    }

    /// Marks the backend failed: after an I/O error in the write path nothing is trusted.
    fn fail(&self, error: &BackendError) {
        tracing::error!(%error, "sled backend write failed; refusing further requests");
        self.shared.failed.store(true, Ordering::Release);
        self.shared
            .durable
            .send_modify(|(_, failed)| *failed = true);
    }

    fn commit(&mut self, writes: Vec<WriteRequest>) {
        if writes.is_empty() {
            return;
        }
        let count = writes.len() as u64;
        let mut replies = Vec::with_capacity(writes.len());
        let mut requests = Vec::with_capacity(writes.len());
        for write in writes {
            replies.push(write.reply);
            requests.push((write.key, write.op, write.expect));
        }
        if let Err(e) = self.shared.check_failed() {
            for reply in replies {
                let _ = reply.send(Err(clone_error(&e)));
            }
            return;
        }
        let outcomes = match self.apply(requests) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(clone_error(&e)));
                }
                return;
            }
        };
        self.shared.batches.fetch_add(1, Ordering::Relaxed);
        self.shared.requests.fetch_add(count, Ordering::Relaxed);
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }

    /// Applies a batch: computes every outcome, commits all changes in one transaction, makes
    /// them durable, publishes the new revision and sends the events to watchers. Returns one
    /// outcome per request; an `Err` fails the whole batch (nothing was applied or, after a
    /// failed sync, the backend is marked failed).
    fn apply(
        &mut self,
        requests: Vec<(Vec<u8>, WriteOp, Expect)>,
    ) -> Result<Vec<Result<WriteOutcome, BackendError>>, BackendError> {
        let shared = Arc::clone(&self.shared);
        let start = shared.current.load(Ordering::Acquire);
        let compacted_before = shared.compacted.load(Ordering::Acquire);
        let mut revision = start;
        let mut overlay: HashMap<Vec<u8>, Option<KeyValue>> = HashMap::new();
        let mut kv_batch = Batch::default();
        let mut log_batch = Batch::default();
        let mut changes: Vec<Change> = Vec::new();
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(requests.len());

        for (key, op, expect) in requests {
            if let Err(e) = check_key(&key) {
                outcomes.push(Err(e));
                continue;
            }
            let current = match overlay.get(&key) {
                Some(current) => current.clone(),
                None => {
                    let current = shared.get_current(&key)?;
                    overlay.insert(key.clone(), current.clone());
                    current
                }
            };
            let holds = match expect {
                Expect::Any => true,
                Expect::Absent => current.is_none(),
                Expect::ModRevision(rev) => {
                    current.as_ref().is_some_and(|kv| kv.mod_revision == rev)
                }
            };
            if !holds {
                outcomes.push(Ok(WriteOutcome::Conflict { current }));
                continue;
            }
            let (event, record) = match op {
                WriteOp::Put(value) => {
                    revision = next_revision(revision)?;
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision: current.as_ref().map_or(revision, |kv| kv.create_revision),
                        mod_revision: revision,
                        version: match &current {
                            Some(kv) => kv.version.checked_add(1).ok_or_else(|| {
                                BackendError::Corrupt("version counter overflow".to_string())
                            })?,
                            None => 1,
                        },
                    };
                    let record = IVec::from(encode_record(&kv));
                    kv_batch.insert(key.as_slice(), record.clone());
                    overlay.insert(key.clone(), Some(kv.clone()));
                    let event = Event {
                        kind: EventKind::Put,
                        kv,
                        prev: current.clone(),
                    };
                    (event, Some(record))
                }
                WriteOp::Delete => {
                    if current.is_none() {
                        outcomes.push(Ok(WriteOutcome::NotFound));
                        continue;
                    }
                    revision = next_revision(revision)?;
                    kv_batch.remove(key.as_slice());
                    overlay.insert(key.clone(), None);
                    let event = Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: key.clone(),
                            value: Vec::new(),
                            create_revision: 0,
                            mod_revision: revision,
                            version: 0,
                        },
                        prev: current.clone(),
                    };
                    (event, None)
                }
            };
            log_batch.insert(&rev_bytes(revision), encode_event(&event));
            changes.push(Change {
                key,
                revision,
                record,
            });
            events.push(event);
            outcomes.push(Ok(WriteOutcome::Applied {
                revision,
                prev: current,
            }));
        }
        if revision == start {
            // Only conflicts and no-ops: nothing to write.
            return Ok(outcomes);
        }

        let retention = i64::try_from(shared.opts.log_retention).unwrap_or(0);
        let compacted = if retention > 0 {
            compacted_before.max(revision - retention + 1)
        } else {
            compacted_before
        };
        let history_batch = self.history_changes(&changes, compacted)?;
        let mut meta_batch = Batch::default();
        meta_batch.insert(META_CURRENT, &rev_bytes(revision));
        if compacted != compacted_before {
            meta_batch.insert(META_COMPACTED, &rev_bytes(compacted));
        }

        {
            let mut guard = shared.write_guard();
            let committed: Result<(), TransactionError<()>> =
                (&shared.kv, &shared.log, &shared.history, &shared.meta).transaction(
                    |(kv, log, history, meta)| {
                        kv.apply_batch(&kv_batch)?;
                        log.apply_batch(&log_batch)?;
                        history.apply_batch(&history_batch)?;
                        meta.apply_batch(&meta_batch)?;
                        Ok::<(), ConflictableTransactionError<()>>(())
                    },
                );
            if let Err(e) = committed {
                let error = BackendError::Io(format!("commit failed: {e:?}"));
                self.fail(&error);
                return Err(error);
            }
            // Reads of these keys wait until the batch is durable; other reads go on.
            *guard = Some(Arc::new(Inflight {
                revision,
                keys: changes.iter().map(|c| c.key.clone()).collect(),
            }));
        }
        if let Err(error) = self.files.make_durable(&shared.db) {
            self.fail(&error);
            return Err(error);
        }
        {
            let mut guard = shared.write_guard();
            shared.compacted.store(compacted, Ordering::Release);
            shared.current.store(revision, Ordering::Release);
            *guard = None;
        }
        shared.durable.send_replace((revision, false));
        // No receivers is fine.
        let _ = self.events.send(Arc::new(events));
        if compacted > compacted_before {
            if let Err(e) = prune_log(&shared.log, compacted) {
                // Leftovers are harmless (below the compacted revision) and retried next time.
                tracing::warn!(error = %e, "pruning the change log failed");
            }
        }
        Ok(outcomes)
    }

    /// The history tree changes for a batch's applied changes: new entries, pruned ones and
    /// floor markers.
    fn history_changes(
        &self,
        changes: &[Change],
        compacted: Revision,
    ) -> Result<Batch, BackendError> {
        let keep = self.shared.opts.history_per_key;
        let mut per_key: BTreeMap<&[u8], Vec<&Change>> = BTreeMap::new();
        for change in changes {
            per_key
                .entry(change.key.as_slice())
                .or_default()
                .push(change);
        }
        let mut batch = Batch::default();
        for (key, changes) in per_key {
            let prefix = history_prefix(key);
            let mut history = self.load_history(&prefix, compacted, keep)?;
            let original: Vec<Revision> = history.entries.iter().map(|(rev, _)| *rev).collect();
            let original_floor = history.floor;
            for change in &changes {
                history
                    .entries
                    .push((change.revision, change.record.is_none()));
                history.prune_compacted(compacted);
                history.prune_count(keep);
            }
            let kept: HashSet<Revision> = history.entries.iter().map(|(rev, _)| *rev).collect();
            for rev in original {
                if !kept.contains(&rev) {
                    batch.remove(history_key_with(&prefix, rev));
                }
            }
            for change in changes {
                if kept.contains(&change.revision) {
                    let value = match &change.record {
                        Some(record) => record.clone(),
                        None => IVec::from(encode_tombstone(change.revision)),
                    };
                    batch.insert(history_key_with(&prefix, change.revision), value);
                }
            }
            if history.floor != original_floor {
                let marker = history_key_with(&prefix, 0);
                if history.floor == 0 {
                    batch.remove(marker);
                } else {
                    batch.insert(marker, encode_floor(history.floor));
                }
            }
        }
        Ok(batch)
    }

    /// Loads a key's retained history. With unlimited versions (`keep == 0`) only the entries at
    /// or below `compacted` matter (the others are never pruned), so only those are read.
    fn load_history(
        &self,
        prefix: &[u8],
        compacted: Revision,
        keep: usize,
    ) -> Result<KeyHistory, BackendError> {
        let mut history = KeyHistory {
            entries: Vec::new(),
            floor: 0,
        };
        for item in self.shared.history.scan_prefix(prefix) {
            let (hkey, value) = item.map_err(sled_error)?;
            let rev = decode_history_rev(prefix, &hkey)?;
            if rev == 0 {
                history.floor = decode_floor(&value)?;
                continue;
            }
            if keep == 0 && rev > compacted {
                break;
            }
            let tombstone = match value.first() {
                Some(&TAG_TOMBSTONE) => true,
                Some(&TAG_RECORD) => false,
                _ => return Err(corrupt_history(prefix, rev)),
            };
            history.entries.push((rev, tombstone));
        }
        Ok(history)
    }

    fn compact(&mut self, revision: Revision) -> Result<(), BackendError> {
        let shared = Arc::clone(&self.shared);
        shared.check_failed()?;
        let current = shared.current.load(Ordering::Acquire);
        if revision > current {
            return Err(BackendError::FutureRevision {
                requested: revision,
                current,
            });
        }
        if revision <= shared.compacted.load(Ordering::Acquire) {
            return Ok(());
        }
        {
            // Raise the compacted revision durably before deleting anything, so that no read
            // below it can ever see a partly pruned history, even after a crash.
            let _guard = shared.write_guard();
            let durable = shared
                .meta
                .insert(META_COMPACTED, &rev_bytes(revision))
                .map_err(sled_error)
                .and_then(|_| self.files.make_durable(&shared.db));
            if let Err(error) = durable {
                self.fail(&error);
                return Err(error);
            }
            shared.compacted.store(revision, Ordering::Release);
        }
        // Readers at or above `revision` see the same answers with or without these entries.
        prune_log(&shared.log, revision)?;
        let mut batch = Batch::default();
        let mut pending = 0usize;
        let mut group: Option<(Vec<u8>, KeyHistory)> = None;
        for item in shared.history.iter() {
            let (hkey, value) = item.map_err(sled_error)?;
            let (key, rev) = decode_history_key(&hkey)?;
            if group.as_ref().is_some_and(|(k, _)| *k != key) {
                if let Some((done_key, done)) = group.take() {
                    pending += compaction_deletes(&done_key, done, revision, &mut batch);
                }
            }
            let (_, history) = group.get_or_insert_with(|| {
                (
                    key,
                    KeyHistory {
                        entries: Vec::new(),
                        floor: 0,
                    },
                )
            });
            if rev == 0 {
                history.floor = decode_floor(&value)?;
            } else if rev <= revision {
                let tombstone = value.first() == Some(&TAG_TOMBSTONE);
                history.entries.push((rev, tombstone));
            }
            if pending >= COMPACT_CHUNK {
                shared
                    .history
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(sled_error)?;
                pending = 0;
            }
        }
        if let Some((key, history)) = group {
            compaction_deletes(&key, history, revision, &mut batch);
        }
        shared.history.apply_batch(batch).map_err(sled_error)?;
        shared.db.flush().map_err(sled_error)?;
        Ok(())
    }
}

/// Adds to `batch` the deletions that compaction at `compacted` makes in one key's history
/// (`history` holds its entries at or below `compacted` and its floor). Returns how many.
fn compaction_deletes(
    key: &[u8],
    mut history: KeyHistory,
    compacted: Revision,
    batch: &mut Batch,
) -> usize {
    let before: Vec<Revision> = history.entries.iter().map(|(rev, _)| *rev).collect();
    let floor_before = history.floor;
    history.prune_compacted(compacted);
    let prefix = history_prefix(key);
    let mut deleted = 0;
    for rev in before
        .into_iter()
        .filter(|rev| !history.entries.iter().any(|(r, _)| r == rev))
    {
        batch.remove(history_key_with(&prefix, rev));
        deleted += 1;
    }
    if floor_before != 0 && history.floor == 0 {
        batch.remove(history_key_with(&prefix, 0));
        deleted += 1;
    }
    deleted
}

/// Deletes log entries below `compacted`.
fn prune_log(log: &Tree, compacted: Revision) -> Result<(), BackendError> {
    let mut batch = Batch::default();
    for item in log.range(..rev_bytes(compacted)) {
        let (key, _) = item.map_err(sled_error)?;
        batch.remove(key);
    }
    log.apply_batch(batch).map_err(sled_error)
}

// ---------------------------------------------------------------------------------------------
// fsync

/// Makes sled's files durable beyond what `sled::Db::flush` does.
struct FileSync {
    dir: PathBuf,
    /// sled's data file, kept open for `fsync`.
    db_file: File,
    /// Entries of `dir` at the last directory sync.
    dir_names: HashSet<OsString>,
    /// Blob files already synced.
    blobs: HashSet<OsString>,
}

impl FileSync {
    fn new(dir: &Path) -> Result<Self, BackendError> {
        let db_file = File::open(dir.join("db")).map_err(|e| io_error("open the db file", &e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            db_file,
            dir_names: HashSet::new(),
            blobs: HashSet::new(),
        })
    }

    /// Flushes sled and `fsync`s what it leaves unsynced: new blob files (first, so that no
    /// durable log entry points at a lost blob), the data file, and changed directories.
    fn make_durable(&mut self, db: &::sled::Db) -> Result<(), BackendError> {
        self.sync_blobs()?;
        db.flush().map_err(sled_error)?;
        self.db_file
            .sync_all()
            .map_err(|e| io_error("fsync the db file", &e))?;
        let names = list_dir(&self.dir)?;
        if names != self.dir_names {
            for name in names.difference(&self.dir_names) {
                // `conf` is written once at creation; `snap.*` files sled syncs itself.
                if name == "conf" {
                    sync_file(&self.dir.join(name))?;
                }
            }
            sync_file(&self.dir)?;
            self.dir_names = names;
        }
        Ok(())
    }

    fn sync_blobs(&mut self) -> Result<(), BackendError> {
        let blob_dir = self.dir.join("blobs");
        if !blob_dir.exists() {
            return Ok(());
        }
        let names = list_dir(&blob_dir)?;
        let mut synced_any = false;
        for name in names.difference(&self.blobs) {
            match File::open(blob_dir.join(name)) {
                Ok(file) => file
                    .sync_all()
                    .map_err(|e| io_error("fsync a blob file", &e))?,
                // sled removed it meanwhile (garbage collection).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("open a blob file", &e)),
            }
            synced_any = true;
        }
        if synced_any || names.len() != self.blobs.len() {
            sync_file(&blob_dir)?;
        }
        self.blobs = names;
        Ok(())
    }
}

fn list_dir(dir: &Path) -> Result<HashSet<OsString>, BackendError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("list the store directory", &e))?;
    let mut names = HashSet::new();
    for entry in entries {
        names.insert(
            entry
                .map_err(|e| io_error("list the store directory", &e))?
                .file_name(),
        );
    }
    Ok(names)
}

fn sync_file(path: &Path) -> Result<(), BackendError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(&format!("fsync {}", path.display()), &e))
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn rev_bytes(rev: Revision) -> [u8; 8] {
    // Revisions stored are >= 0; big-endian so that they sort numerically.
    (rev as u64).to_be_bytes()
}

fn decode_rev_key(bytes: &[u8]) -> Result<Revision, BackendError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| BackendError::Corrupt(format!("bad revision key of {} bytes", bytes.len())))?;
    i64::try_from(u64::from_be_bytes(arr))
        .map_err(|_| BackendError::Corrupt("revision key out of range".to_string()))
}

fn read_meta_rev(meta: &Tree, name: &[u8]) -> Result<Revision, BackendError> {
    match meta.get(name).map_err(sled_error)? {
        Some(bytes) => decode_rev_key(&bytes),
        None => Err(BackendError::Corrupt(format!(
            "meta entry {} is missing",
            String::from_utf8_lossy(name)
        ))),
    }
}

fn describe_format(found: &[u8]) -> String {
    match <[u8; 4]>::try_from(found) {
        Ok(arr) => u32::from_be_bytes(arr).to_string(),
        Err(_) => format!("0x{}", hex::encode(found)),
    }
}

/// Order-preserving escape: `00` becomes `00 ff`; every other byte is itself.
fn escape_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out
}

/// `esc(key) ‖ 00 01`: the prefix of every history entry of `key`.
fn history_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = escape_key(key);
    out.extend_from_slice(&[0, 1]);
    out
}

fn history_key_with(prefix: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 8);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&rev_bytes(rev));
    out
}

/// Splits a history key into the key and the revision.
fn decode_history_key(hkey: &[u8]) -> Result<(Vec<u8>, Revision), BackendError> {
    let bad = || BackendError::Corrupt("malformed history key".to_string());
    let mut key = Vec::with_capacity(hkey.len());
    let mut i = 0;
    loop {
        match hkey.get(i) {
            None => return Err(bad()),
            Some(0) => match hkey.get(i + 1) {
                Some(0xff) => {
                    key.push(0);
                    i += 2;
                }
                Some(1) => {
                    i += 2;
                    break;
                }
                _ => return Err(bad()),
            },
            Some(&b) => {
                key.push(b);
                i += 1;
            }
        }
    }
    Ok((key, decode_rev_key(&hkey[i..])?))
}

fn decode_history_rev(prefix: &[u8], hkey: &[u8]) -> Result<Revision, BackendError> {
    match hkey.strip_prefix(prefix) {
        Some(rest) => decode_rev_key(rest),
        None => Err(BackendError::Corrupt(
            "history key outside its prefix".to_string(),
        )),
    }
}

fn corrupt_history(prefix: &[u8], rev: Revision) -> BackendError {
    BackendError::Corrupt(format!(
        "history entry {rev} of key {} is malformed",
        hex::encode(prefix)
    ))
}

fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + kv.value.len());
    out.push(TAG_RECORD);
    out.extend_from_slice(&kv.create_revision.to_be_bytes());
    out.extend_from_slice(&kv.mod_revision.to_be_bytes());
    out.extend_from_slice(&kv.version.to_be_bytes());
    out.extend_from_slice(&kv.value);
    out
}

fn decode_record(key: &[u8], bytes: &[u8]) -> Result<KeyValue, BackendError> {
    let mut r = Reader::new(bytes);
    if r.u8()? != TAG_RECORD {
        return Err(BackendError::Corrupt("expected a record".to_string()));
    }
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let version = r.i64()?;
    Ok(KeyValue {
        key: key.to_vec(),
        value: r.rest().to_vec(),
        create_revision,
        mod_revision,
        version,
    })
}

fn encode_tombstone(rev: Revision) -> Vec<u8> {
    let mut out = vec![TAG_TOMBSTONE];
    out.extend_from_slice(&rev.to_be_bytes());
    out
}

fn encode_floor(floor: Revision) -> Vec<u8> {
    let mut out = vec![TAG_FLOOR];
    out.extend_from_slice(&floor.to_be_bytes());
    out
}

fn decode_floor(bytes: &[u8]) -> Result<Revision, BackendError> {
    let mut r = Reader::new(bytes);
    if r.u8()? != TAG_FLOOR {
        return Err(BackendError::Corrupt("expected a floor marker".to_string()));
    }
    r.i64()
}

/// A history entry: a record, or a tombstone (None).
fn decode_history_value(key: &[u8], bytes: &[u8]) -> Result<Option<KeyValue>, BackendError> {
    match bytes.first() {
        Some(&TAG_TOMBSTONE) => Ok(None),
        _ => decode_record(key, bytes).map(Some),
    }
}

fn encode_event(event: &Event) -> Vec<u8> {
    let prev_len = event.prev.as_ref().map_or(0, |p| p.value.len() + 40);
    let mut out = Vec::with_capacity(64 + event.kv.key.len() + event.kv.value.len() + prev_len);
    out.push(match event.kind {
        EventKind::Put => EVENT_PUT,
        EventKind::Delete => EVENT_DELETE,
    });
    put_bytes(&mut out, &event.kv.key);
    put_kv_fields(&mut out, &event.kv);
    match &event.prev {
        Some(prev) => {
            out.push(1);
            put_kv_fields(&mut out, prev);
        }
        None => out.push(0),
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_kv_fields(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.create_revision.to_be_bytes());
    out.extend_from_slice(&kv.mod_revision.to_be_bytes());
    out.extend_from_slice(&kv.version.to_be_bytes());
    put_bytes(out, &kv.value);
}

fn decode_event(bytes: &[u8]) -> Result<Event, BackendError> {
    let mut r = Reader::new(bytes);
    let kind = match r.u8()? {
        EVENT_PUT => EventKind::Put,
        EVENT_DELETE => EventKind::Delete,
        other => return Err(BackendError::Corrupt(format!("unknown event kind {other}"))),
    };
    let key = r.bytes()?.to_vec();
    let kv = r.kv_fields(&key)?;
    let prev = match r.u8()? {
        0 => None,
        1 => Some(r.kv_fields(&key)?),
        other => return Err(BackendError::Corrupt(format!("bad prev flag {other}"))),
    };
    if !r.rest().is_empty() {
        return Err(BackendError::Corrupt(
            "trailing bytes in a log event".to_string(),
        ));
    }
    Ok(Event { kind, kv, prev })
}

/// A bounds-checked cursor over stored bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BackendError> {
        if self.bytes.len() < n {
            return Err(BackendError::Corrupt("truncated stored value".to_string()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, BackendError> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, BackendError> {
        let mut arr = [0u8; 8];
        arr.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(arr))
    }

    fn bytes(&mut self) -> Result<&'a [u8], BackendError> {
        let len = u64::from_be_bytes(self.i64()?.to_be_bytes());
        let len = usize::try_from(len)
            .map_err(|_| BackendError::Corrupt("stored length out of range".to_string()))?;
        self.take(len)
    }

    fn kv_fields(&mut self, key: &[u8]) -> Result<KeyValue, BackendError> {
        let create_revision = self.i64()?;
        let mod_revision = self.i64()?;
        let version = self.i64()?;
        let value = self.bytes()?.to_vec();
        Ok(KeyValue {
            key: key.to_vec(),
            value,
            create_revision,
            mod_revision,
            version,
        })
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn next_revision(rev: Revision) -> Result<Revision, BackendError> {
    rev.checked_add(1)
        .ok_or_else(|| BackendError::Corrupt("revision counter overflow".to_string()))
}

/// How many keys to read for a limit: one more than the limit, to know whether there are more.
fn take_count(limit: usize) -> usize {
    if limit == 0 {
        usize::MAX
    } else {
        limit.saturating_add(1)
    }
}

fn writer_gone() -> BackendError {
    BackendError::Unavailable("the sled backend is closed".to_string())
}

fn sled_error(e: ::sled::Error) -> BackendError {
    match e {
        ::sled::Error::Corruption { .. } => BackendError::Corrupt(e.to_string()),
        other => BackendError::Io(other.to_string()),
    }
}

fn io_error(what: &str, e: &std::io::Error) -> BackendError {
    BackendError::Io(format!("cannot {what}: {e}"))
}

/// `BackendError` is not `Clone` (it is part of a shared API); a batch-wide error is copied to
/// each request this way.
fn clone_error(e: &BackendError) -> BackendError {
    match e {
        BackendError::Compacted {
            requested,
            compacted,
        } => BackendError::Compacted {
            requested: *requested,
            compacted: *compacted,
        },
        BackendError::FutureRevision { requested, current } => BackendError::FutureRevision {
            requested: *requested,
            current: *current,
        },
        BackendError::InvalidArgument(m) => BackendError::InvalidArgument(m.clone()),
        BackendError::Unavailable(m) => BackendError::Unavailable(m.clone()),
        BackendError::UnsupportedFormat { found, supported } => BackendError::UnsupportedFormat {
            found: found.clone(),
            supported: *supported,
        },
        BackendError::Corrupt(m) => BackendError::Corrupt(m.clone()),
        BackendError::Io(m) => BackendError::Io(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_round_trip_and_keep_key_order() {
        let keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![0, 1],
            vec![0, 0xff],
            vec![1],
            b"a".to_vec(),
            b"a\x00".to_vec(),
            b"a\x00\x01".to_vec(),
            b"a\x01".to_vec(),
            b"ab".to_vec(),
            vec![0xff, 0xff],
        ];
        let mut encoded = Vec::new();
        for key in &keys {
            for rev in [0, 1, 2, 300, i64::MAX] {
                let hkey = history_key_with(&history_prefix(key), rev);
                assert_eq!(decode_history_key(&hkey).unwrap(), (key.clone(), rev));
                encoded.push((hkey, key.clone(), rev));
            }
        }
        // Sorting the encodings sorts by (key, revision).
        encoded.sort_by(|a, b| a.0.cmp(&b.0));
        let order: Vec<(Vec<u8>, Revision)> =
            encoded.iter().map(|(_, k, r)| (k.clone(), *r)).collect();
        let mut expected = order.clone();
        expected.sort();
        assert_eq!(order, expected);
        // A key's prefix never matches another key's entries.
        for a in &keys {
            for (hkey, b, _) in &encoded {
                assert_eq!(hkey.starts_with(&history_prefix(a)), a == b);
            }
        }
    }

    #[test]
    fn escaped_prefix_selects_exactly_the_keys_with_that_prefix() {
        let keys: [&[u8]; 6] = [b"a", b"a\x00", b"a\x00b", b"\x00", b"\x00\xff", b"b"];
        for p in keys.iter().chain([&b""[..], b"a\x00"].iter()) {
            for k in keys {
                let hkey = history_key_with(&history_prefix(k), 5);
                assert_eq!(
                    hkey.starts_with(&escape_key(p)),
                    k.starts_with(p),
                    "{p:?} {k:?}"
                );
            }
        }
    }

    #[test]
    fn events_round_trip_and_garbage_is_corrupt_not_a_panic() {
        let event = Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: b"k\x00".to_vec(),
                value: vec![1, 2, 3],
                create_revision: 2,
                mod_revision: 5,
                version: 3,
            },
            prev: Some(KeyValue {
                key: b"k\x00".to_vec(),
                value: vec![9],
                create_revision: 2,
                mod_revision: 4,
                version: 2,
            }),
        };
        let bytes = encode_event(&event);
        assert_eq!(decode_event(&bytes).unwrap(), event);
        for cut in 0..bytes.len() {
            assert!(decode_event(&bytes[..cut]).is_err());
        }
        let mut huge_len = bytes.clone();
        huge_len[1..9].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_event(&huge_len).is_err());
        assert!(decode_record(b"k", &[]).is_err());
        assert!(decode_record(b"k", &[TAG_RECORD, 0, 0]).is_err());
        assert!(decode_history_key(&[1, 2, 0]).is_err());
        assert!(decode_history_key(&[1, 0, 1, 0]).is_err());
        assert!(decode_floor(&[TAG_RECORD]).is_err());
    }

    #[test]
    fn pruning_rules() {
        let mut h = KeyHistory {
            entries: vec![(2, false), (4, true), (6, false), (8, false)],
            floor: 0,
        };
        h.prune_count(3);
        assert_eq!(h.entries, vec![(4, true), (6, false), (8, false)]);
        assert_eq!(h.floor, 4);
        h.prune_compacted(5);
        // The newest entry at or below 5 is a tombstone: dropped with everything older.
        assert_eq!(h.entries, vec![(6, false), (8, false)]);
        assert_eq!(h.floor, 0);
        h.prune_compacted(7);
        assert_eq!(h.entries, vec![(6, false), (8, false)]);
    }
}
