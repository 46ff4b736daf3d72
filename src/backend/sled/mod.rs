//! The sled implementation of [`Backend`]: an embedded, durable, revisioned
//! key-value store.
//!
//! # On-disk layout
//!
//! One sled database per directory, with four trees:
//!
//! - `kv` — the current state: `key -> record`.
//! - `log` — the change log, for watch replay, in chunks of consecutive revisions
//!   (`logchunk.rs`): `be64(first) ‖ be64(last) -> (be32(len) ‖ event)` for each revision from
//!   `first` to `last`, one chunk per layer written to sled (stores of format 4 and older hold
//!   `be64(revision) -> event` entries, read as chunks of one). An event holds no
//!   values: `kind ‖ be64(key len) ‖ key ‖ be64(replaced) ‖ flags`, kind 3 a put and 4 a
//!   delete, `replaced` the revision of the version the change replaced (0: none); replay reads
//!   the version written (at the entry's revision) and the one replaced from `kv` and
//!   `history`. Flag 1 says that after this change the key's history kept versions below its
//!   floor for the log (see Retention). Stores upgraded from format 2 may still hold that
//!   format's events (kind 1 a put, 2 a delete: key, the record after the change, the record
//!   before it), which are read as they are.
//! - `history` — every retained version of every key **but its current one** (which is only in
//!   `kv`), for reads at past revisions:
//!   `esc(key) ‖ 00 01 ‖ be64(revision) -> record | tombstone`, plus one optional marker
//!   `esc(key) ‖ 00 01 ‖ be64(0) -> floor` saying that versions of this key older than `floor`
//!   were pruned. `esc` doubles every `00` byte into `00 ff`, so the encoding is order-preserving
//!   and no two keys can collide (a key's entries are contiguous and sorted by revision).
//!   A read at a past revision takes the key's current version if that is at or below the
//!   revision, else the newest older one from `history`; a range at a past revision merges the
//!   two trees in key order. A put moves the version it replaces from `kv` to `history`, so a
//!   Secret written once is stored once (plus its log event).
//! - `meta` — `format_version` (`be32`, currently [`FORMAT_VERSION`]), `current_revision` and
//!   `compacted_revision` (`be64`). The format version is written on first open; stores of
//!   version 1 (before the log) and 2 (whose `history` also held each key's current version,
//!   which this build reads as the same record) are upgraded, any other version is refused with
//!   [`BackendError::UnsupportedFormat`].
//!
//! Beside sled's files, `wal/` holds the write-ahead log (format in `wal.rs`): what was
//! acknowledged since sled's last checkpoint.
//!
//! A record is `01 ‖ be64(create_revision) ‖ be64(mod_revision) ‖ be64(version) ‖ value`; a
//! tombstone is `00 ‖ be64(revision)`; a floor marker is `02 ‖ be64(floor)`. All lengths inside
//! log events are `be64`, so values of any size and keys of any bytes are fine.
//!
//! # Writes: one writer, a write-ahead log, group commit
//!
//! Every write goes through one dedicated writer thread fed by a channel. It takes every request
//! queued at that moment (a batch) and works out each request's outcome in order against the
//! applied state (each applied change gets the next revision; conditions see the effects of
//! earlier requests of the same batch). It then makes the batch durable the way etcd does: the
//! batch's changes are appended to the write-ahead log (`wal/`, see `wal.rs`) as **one** record,
//! and the sync thread makes that record durable with **one** `fdatasync`. Before handing the
//! record over, the writer applies the batch in memory to the *active layer* above sled
//! (`layers.rs`: each tree's pending writes, sorted), and publishes its keys as in flight. The
//! next record is appended only once this one is synced, so at most the log's last record can
//! ever be torn, and the writer takes the next batch only then, so that the requests that
//! arrive during the sync join it. Once the record is synced, the sync thread publishes the new
//! revision, answers every request of the batch and sends the batch's events to watchers.
//! Concurrent writers share one `fdatasync`; a lone writer pays one.
//!
//! sled is written **per layer**, not per batch: once the active layer holds 256 KiB of
//! writes, the writer freezes it and the checkpoint thread appends its writes to the **redo
//! file** (`redo.rs`) as one record, `fdatasync`s it, then writes them to sled key by key
//! (no sled transaction, which would hold sled's global lock and stall every sled reader), then
//! drops it. Many batches share one layer, and a key written several times meanwhile reaches
//! sled once. sled may persist part of a layer on its own; the redo file holds every layer
//! written since sled was last made durable, and opening re-applies it first, which puts sled
//! back at the state after a whole log record, where replay starts. sled is made durable only
//! at **checkpoints**: when a log segment is full, the writer freezes the active layer and
//! starts the next segment, and the checkpoint thread, once the layers before it are in sled,
//! flushes sled and `fsync`s its files (sled's `flush` only calls `sync_file_range`, which
//! persists neither file metadata nor the device's write cache, so it also `fsync`s sled's
//! `db` file, new blob files under `blobs/` and changed directories), empties the redo file,
//! then removes the older segments. Closing the backend writes the layers, checkpoints and
//! removes the log. Opening re-applies the redo file, then replays the log by revision: a
//! record sled already holds is skipped, the next one is re-applied (giving the same
//! revisions, records and history, since sled is exactly at the state before it), a gap is an
//! error; then the replayed batches are written to sled, sled is made durable and the log
//! emptied. A torn last record (of the log or the redo file) is cut; an unreadable record
//! anywhere else is [`BackendError::Corrupt`] naming the file and offset.
//!
//! Readers look each key up in the layers, newest first, then in sled (ranges merge them in key
//! order), under a lock that the writer holds exclusively only while it applies a batch to the
//! active layer (microseconds), so every read (current or past) is a consistent snapshot; a
//! layer being written to sled hides sled's half-written state until it is dropped. While the
//! batch is being made durable, its revision and keys are published as *in flight*: a read
//! that would touch one of those keys waits until the batch is durable and then reads again, so
//! no read ever observes a change that is not yet durable, and reads of other keys do not wait
//! for the `fsync` at all. Watches only deliver durable changes too.
//!
//! If the append, the `fdatasync`, the sled commit or a checkpoint fails, the batch's requests
//! get [`BackendError::Io`] and the backend refuses every later request with
//! [`BackendError::Unavailable`]: after a failed `fsync` the state of the page cache cannot be
//! trusted, and the store must be reopened (which replays the log).
//!
//! # Retention
//!
//! - Per key, at most [`SledOptions::history_per_key`] versions (puts and deletes) can be read;
//!   the key's floor marker records where the readable ones start, and reads of that key below
//!   the floor fail with [`BackendError::Compacted`]. Since log events hold no values, versions
//!   below the floor stay in `history` while the log's window covers them (every version from
//!   the newest one below the compacted revision on); the key's last event of the batch that
//!   left them is flagged, and when it leaves the log's window the key's history is pruned
//!   again. So a key keeps at most `history_per_key` versions plus those written in the log's
//!   window. A watch replay that finds a version gone (the writer prunes in sled before it
//!   publishes the compacted revision) fails with [`BackendError::Compacted`], as it would a
//!   moment later.
//! - The log keeps the last [`SledOptions::log_retention`] revisions: after each batch, the
//!   compacted revision is raised to `current - log_retention + 1`. Older log entries still in a
//!   layer are dropped from it; in sled, a layer's writes remove the chunks that are now wholly
//!   below the compacted revision (after a jump of more than 4,096 revisions, when the retention
//!   was lowered, the sync thread prunes them). A chunk that straddles the compacted revision
//!   stays until it is wholly below it. A watch replay from below the applied compacted
//!   revision fails with [`BackendError::Compacted`].
//! - [`Backend::compact`] raises the compacted revision explicitly, deletes older log entries and,
//!   for every key, every history entry older than the key's newest entry at or below the
//!   compacted revision (that one too if it is a tombstone). When log retention raises the
//!   compacted revision, each key's history is pruned the same way the next time it is written,
//!   and a deleted key's as soon as its delete leaves the log's window (the batch that raises the
//!   compacted revision past a delete removes that key's whole history and its tombstone), so a
//!   deleted Secret does not stay on disk until its name is used again. Stores written before
//!   this get one pass over every key's history when they are next opened
//!   (`deleted_history_pruned` in `meta` records it).
//!
//! Reads and watches below the compacted revision fail with [`BackendError::Compacted`].
//!
//! # Source files
//!
//! `codec` holds the byte encodings above, `wal` the write-ahead log's format, segments and
//! recovery scan, `writer` the writer thread (batching, planning, appending, applying, replay),
//! `sync` the sync thread (fdatasync, publication) and the checkpoint thread, `layers` the
//! batches applied in memory but not yet written to sled, `logchunk` the log's chunks in sled,
//! `redo` the redo file that
//! makes a layer's key-by-key writes to sled recoverable, `retention`
//! pruning and compaction, `keyhist` the writer's cache of each key's retained history (so a
//! write does not scan it), `files` the extra `fsync`s and the wait for sled's lock, `read`
//! reads at current and past revisions, and `watch` replay and live fan-out.

mod codec;
mod files;
mod keyhist;
mod layers;
mod logchunk;
mod read;
mod redo;
mod retention;
mod sync;
mod wal;
mod watch;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use ::sled::{Batch, Tree};
use tokio::sync::{broadcast, oneshot};

use super::follow::{self, WatchProgress, WATCH_BROADCAST_CAPACITY};
use super::{
    check_key, AtomicHistogram, AtomicRevision, Backend, BackendError, Event, Expect, KeyValue,
    RangeRequest, RangeResponse, Revision, WatchStream, WriteOutcome, BATCH_SIZE_BOUNDS,
    SYNC_NANOS_BOUNDS,
};
use codec::{describe_format, read_meta_rev, rev_bytes};
use files::{wait_until_unlocked, FileSync, ReleaseWait, RELEASE_WAIT};
use layers::{Layers, TreeId};
use redo::Redo;
use retention::{prune_all_history, prune_log};
use wal::WalDir;
use writer::{Applier, Request, WriteOp, WriteRequest, Writer};

/// The on-disk format version this build writes and reads: 2 adds the write-ahead log; 3 keeps
/// a key's current version only in `kv` (no longer also in `history`) and logs events without
/// values; 4 adds the redo file (`redo.rs`), without which sled may hold part of a layer.
/// Stores of versions 1 to 3 open and are marked version 4 (this build reads their layout as
/// it is: a current version also found in `history` is the same record, their log events are
/// self-contained, and they have no redo file), so that an older build, which would ignore the
/// log or the redo file, miss current versions in `history` or not read the new events,
/// refuses them. 5 writes the log in chunks (`logchunk.rs`); the per-revision entries of
/// format 4 and older are read as chunks of one and pruned as they leave the window.
pub const FORMAT_VERSION: u32 = 5;
/// Older formats this build still opens (and upgrades): before the write-ahead log, before
/// current versions left `history`, and before the redo file.
const FORMAT_VERSION_WITHOUT_LOG: u32 = 1;
const FORMAT_VERSION_HISTORY_WITH_CURRENT: u32 = 2;
const FORMAT_VERSION_WITHOUT_REDO: u32 = 3;
const FORMAT_VERSION_LOG_PER_REVISION: u32 = 4;

const TREE_KV: &str = "kv";
const TREE_LOG: &str = "log";
const TREE_HISTORY: &str = "history";
const TREE_META: &str = "meta";

const META_FORMAT: &[u8] = b"format_version";
const META_CURRENT: &[u8] = b"current_revision";
const META_COMPACTED: &[u8] = b"compacted_revision";
/// Present once every key's history has been pruned at the compacted revision: stores written
/// by builds that pruned a deleted key's history only when the key was written again get that
/// pass once, on open.
const META_DELETED_PRUNED: &[u8] = b"deleted_history_pruned";

/// Bytes of writes a [`SledBackend`] keeps in memory above sled by default before writing them
/// to sled together ([`SledOptions::layer_bytes`]).
pub const DEFAULT_LAYER_BYTES: usize = 256 << 10;

/// Retention and write settings of a [`SledBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SledOptions {
    /// Versions of each key (puts and deletes) kept for reads at past revisions; 0 keeps every
    /// version until compaction. Default 10. (Older versions that the change log's window still
    /// covers also stay on disk, unreadable, since log events hold no values.)
    pub history_per_key: usize,
    /// Revisions kept in the change log for watch replay; older ones are compacted after each
    /// write. 0 means unlimited (only [`Backend::compact`] discards history). Default 100 000.
    pub log_retention: u64,
    /// Bytes of applied writes kept in memory (the active layer, readable at once) before they
    /// are written to sled, many batches together (a redo record and one `fdatasync` per
    /// layer; a key written several times meanwhile reaches sled once). 0 writes each batch on
    /// its own. Default [`DEFAULT_LAYER_BYTES`].
    pub layer_bytes: usize,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            history_per_key: 10,
            log_retention: 100_000,
            layer_bytes: DEFAULT_LAYER_BYTES,
        }
    }
}

pub use super::WriterStats;

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
            .field("current_revision", &self.shared.current.load())
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
    /// Held exclusively by the writer while it applies a batch to the active layer (and
    /// through a compaction), by the sync thread while it publishes one and by the checkpoint
    /// thread while it drops a layer written to sled; shared by readers while they read.
    commit_lock: RwLock<Committed>,
    /// sled's files, made durable at checkpoints and compactions.
    files: Mutex<FileSync>,
    /// The redo file: held by the checkpoint thread while it writes a layer (from the redo
    /// record's append until its last write is in sled), and taken before `files` when sled is
    /// made durable (which empties it).
    redo: Mutex<Redo>,
    /// How far the sync thread got; the writer waits on it.
    progress: Mutex<Progress>,
    progress_changed: Condvar,
    /// The durable revision, and whether the write path failed: readers that touched an
    /// in-flight batch wait on it.
    durable: tokio::sync::watch::Sender<(Revision, bool)>,
    /// The current (durable) revision.
    current: AtomicRevision,
    /// The compacted revision.
    compacted: AtomicRevision,
    /// The compacted revision of the newest batch applied (ahead of `compacted` until
    /// it is published): versions that log events below it name may be pruned from `history`.
    history_pruned_to: AtomicRevision,
    /// Set after an I/O error in the write path; every request is then refused.
    failed: AtomicBool,
    /// What the writer knows of recently written keys' history (only the writer uses it).
    history_cache: Mutex<keyhist::HistoryCache>,
    /// Live events, per batch. Taken (closed) when the backend is dropped.
    events: Mutex<Option<broadcast::Sender<Arc<Vec<Event>>>>>,
    batches: AtomicU64,
    requests: AtomicU64,
    /// Layers written to sled.
    commits: AtomicU64,
    /// Requests per batch.
    batch_size: AtomicHistogram,
    /// Nanoseconds to make a batch durable.
    sync_nanos: AtomicHistogram,
    /// Declared last, so dropped after every sled handle above.
    _release: ReleaseWait,
}

/// What the commit lock guards.
#[derive(Default)]
struct Committed {
    /// Batches applied but not yet published (durable and visible): reads of their keys wait.
    inflight: Vec<Arc<Inflight>>,
    /// Batches applied but not yet written to sled.
    layers: Layers,
}

/// How far the sync and checkpoint threads got.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Records synced since open.
    synced: u64,
    /// The last revision published (durable and visible).
    published: Revision,
    /// Frozen layers written to sled since open.
    layers_written: u64,
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

/// sled's page cache. Its default (1 GiB) lets a store of 100,000 Secrets grow to ~490 MiB of
/// RSS; the operating system's page cache still holds the files, so reads stay fast.
const SLED_CACHE_BYTES: u64 = 64 << 20;

/// Whether `dir` holds a sled database (its `conf` or `db` file).
pub(crate) fn holds_sled_store(dir: &Path) -> bool {
    dir.join("conf").is_file() || dir.join("db").is_file()
}

impl SledBackend {
    /// Opens (creating if needed) the store in `dir`, checks its format version and starts the
    /// writer thread. Works both inside and outside a tokio runtime (it blocks briefly: call it
    /// at startup, or from `spawn_blocking`).
    ///
    /// Only one process may have a store open: if another holds it, this fails after waiting up
    /// to 5 s for it to let go.
    pub fn open(dir: &Path, opts: SledOptions) -> Result<SledBackend, BackendError> {
        BackendError::refuse_other_engine(
            dir,
            crate::backend::logstore::holds_log_store(dir),
            true,
        )?;
        let existed = dir.exists();
        wait_until_unlocked(&dir.join("db"), RELEASE_WAIT);
        let db = ::sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .open()
            .map_err(|e| match e {
                // sled's own words print the OS error with Debug (`Os { code: 11, .. }`).
                ::sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().starts_with("could not acquire lock") =>
                {
                    BackendError::Io(format!(
                        "could not acquire lock on the sled store in {}: another process holds it (is another keyward using this directory?)",
                        dir.display()
                    ))
                }
                other => sled_error(other),
            })?;
        let open_tree = |name: &str| db.open_tree(name).map_err(sled_error);
        let kv = open_tree(TREE_KV)?;
        let log = open_tree(TREE_LOG)?;
        let history = open_tree(TREE_HISTORY)?;
        let meta = open_tree(TREE_META)?;

        let upgrade = match meta.get(META_FORMAT).map_err(sled_error)? {
            Some(found) => {
                if [
                    FORMAT_VERSION_WITHOUT_LOG,
                    FORMAT_VERSION_HISTORY_WITH_CURRENT,
                    FORMAT_VERSION_WITHOUT_REDO,
                    FORMAT_VERSION_LOG_PER_REVISION,
                ]
                .iter()
                .any(|old| found.as_ref() == old.to_be_bytes())
                {
                    true
                } else if found.as_ref() != FORMAT_VERSION.to_be_bytes() {
                    return Err(BackendError::UnsupportedFormat {
                        found: describe_format(&found),
                        supported: FORMAT_VERSION,
                    });
                } else {
                    false
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
                init.insert(META_CURRENT, &rev_bytes(Revision::FIRST));
                init.insert(META_DELETED_PRUNED, &[1u8][..]);
                init.insert(META_COMPACTED, &rev_bytes(Revision::FIRST));
                meta.apply_batch(init).map_err(sled_error)?;
                false
            }
        };
        // Layers written to sled since its last checkpoint, maybe in part: sled is put back at
        // the state after the last one before anything is read.
        let redo = Redo::open(dir, [&kv, &log, &history, &meta])?;
        let current = read_meta_rev(&meta, META_CURRENT)?;
        let compacted = read_meta_rev(&meta, META_COMPACTED)?;
        if compacted > current {
            return Err(BackendError::Corrupt(format!(
                "meta says current revision {current}, compacted revision {compacted}"
            )));
        }
        if let Some(last) = logchunk::last_revision(&log)? {
            if last > current {
                return Err(BackendError::Corrupt(format!(
                    "log entry {last} is newer than the current revision {current}"
                )));
            }
        }
        // Log entries below the compacted revision left over by a crash.
        prune_log(&log, compacted)?;

        let files = FileSync::new(dir)?;
        let wal = Arc::new(WalDir::open(dir)?);
        let (events, _) = broadcast::channel(WATCH_BROADCAST_CAPACITY);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            db,
            kv,
            log,
            history,
            meta,
            opts,
            commit_lock: RwLock::new(Committed::default()),
            files: Mutex::new(files),
            redo: Mutex::new(redo),
            progress: Mutex::new(Progress {
                synced: 0,
                published: current,
                layers_written: 0,
            }),
            progress_changed: Condvar::new(),
            durable: tokio::sync::watch::Sender::new((current, false)),
            current: AtomicRevision::new(current),
            compacted: AtomicRevision::new(compacted),
            history_pruned_to: AtomicRevision::new(compacted),
            failed: AtomicBool::new(false),
            history_cache: Mutex::new(keyhist::HistoryCache::default()),
            events: Mutex::new(Some(events.clone())),
            batches: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            batch_size: AtomicHistogram::new(BATCH_SIZE_BOUNDS, 1.0),
            sync_nanos: AtomicHistogram::new(SYNC_NANOS_BOUNDS, 1e-9),
            _release: ReleaseWait {
                db_path: dir.join("db"),
            },
        });

        // Replay the log onto sled, make sled durable, then start with an empty log.
        let mut applier = Applier {
            revision: current,
            compacted,
        };
        let segments = wal::list_segments(wal.path())?;
        let recovered = wal::recover(&segments, |batch| applier.replay(&shared, batch))?;
        if let Some((file, offset)) = &recovered.torn {
            tracing::warn!(
                file = %file.display(),
                offset,
                "cut the torn tail of the write-ahead log (a write that was never acknowledged)"
            );
        }
        // What replay applied is in memory: write it to sled before sled is made durable.
        shared.write_layers_now()?;
        if applier.compacted > compacted {
            prune_log(&shared.log, applier.compacted)?;
        }
        shared.current.store(applier.revision);
        shared.compacted.store(applier.compacted);
        shared.history_pruned_to.fetch_max(applier.compacted);
        shared.durable.send_replace((applier.revision, false));
        shared.set_published(applier.revision);
        if upgrade {
            shared
                .meta
                .insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes())
                .map_err(sled_error)?;
        }
        if !shared
            .meta
            .contains_key(META_DELETED_PRUNED)
            .map_err(sled_error)?
        {
            prune_all_history(&shared.history, &shared.kv, applier.compacted)?;
            shared
                .meta
                .insert(META_DELETED_PRUNED, &[1u8][..])
                .map_err(sled_error)?;
        }
        shared.make_durable()?;
        wal.remove_all()?;
        if !existed {
            if let Some(parent) = dir.parent() {
                // Best effort: the parent may not be readable; the store itself is synced.
                let _ = File::open(parent).and_then(|d| d.sync_all());
            }
        }

        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(Arc::clone(&shared), rx, applier, wal, events)?;
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
            batch_size: self.shared.batch_size.snapshot(),
            sync_seconds: self.shared.sync_nanos.snapshot(),
            commits: self.shared.commits.load(Ordering::Relaxed),
        }
    }

    /// Runs `read` under the commit lock once no in-flight batch touches `req`'s range.
    async fn read_range<T>(
        &self,
        req: &RangeRequest,
        read: impl Fn(&Shared, &Layers, &RangeRequest) -> Result<T, BackendError> + Send,
    ) -> Result<T, BackendError> {
        let shared = &self.shared;
        loop {
            let pending = {
                let guard = shared.read_guard()?;
                match Shared::pending_for_range(&guard.inflight, req) {
                    Some(pending) => pending,
                    None => return read(shared, &guard.layers, req),
                }
            };
            shared.wait_durable(pending).await?;
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
    fn read_guard(&self) -> Result<RwLockReadGuard<'_, Committed>, BackendError> {
        let guard = self.commit_lock.read().unwrap_or_else(|e| e.into_inner());
        self.check_failed()?;
        Ok(guard)
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, Committed> {
        self.commit_lock.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer's memory of recently written keys' history.
    fn history_cache(&self) -> std::sync::MutexGuard<'_, keyhist::HistoryCache> {
        self.history_cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `read` on the layers under the commit lock. The writer reads through this: it is
    /// the only one to change the active layer, so what it reads stays put between calls,
    /// and the lock is not held while it plans (the sync thread takes it to publish).
    fn with_layers<T>(
        &self,
        read: impl FnOnce(&Layers) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let guard = self.commit_lock.read().unwrap_or_else(|e| e.into_inner());
        read(&guard.layers)
    }

    /// Writes every layer to sled on the calling thread (on open, where replay applies the
    /// log to the active layer and no checkpoint thread runs yet).
    fn write_layers_now(&self) -> Result<(), BackendError> {
        let frozen = {
            let mut guard = self.write_guard();
            guard.layers.freeze();
            guard.layers.frozen.clone()
        };
        for layer in frozen {
            layer.write_to(self)?;
            self.write_guard().layers.written(&layer);
        }
        Ok(())
    }

    /// Flushes sled and `fsync`s its files (a checkpoint), then empties the redo file. Waits
    /// for a layer being written to sled.
    fn make_durable(&self) -> Result<(), BackendError> {
        let mut redo = self.redo();
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.make_durable(&self.db)?;
        redo.clear()
    }

    /// The redo file, locked: the checkpoint thread holds it while it writes a layer to sled
    /// (see `redo.rs`).
    fn redo(&self) -> std::sync::MutexGuard<'_, Redo> {
        self.redo.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// sled's tree for `id`.
    fn tree(&self, id: TreeId) -> &Tree {
        match id {
            TreeId::Kv => &self.kv,
            TreeId::Log => &self.log,
            TreeId::History => &self.history,
            TreeId::Meta => &self.meta,
        }
    }

    /// Marks the backend failed: after an I/O error in the write path nothing is trusted.
    fn fail(&self, error: &BackendError) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(%error, "sled backend write failed; refusing further requests");
        }
        self.durable.send_modify(|(_, failed)| *failed = true);
        let _progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        self.progress_changed.notify_all();
    }

    fn update_progress(&self, update: impl FnOnce(&mut Progress)) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        update(&mut progress);
        self.progress_changed.notify_all();
    }

    /// The sync thread has synced record `seq`.
    fn set_synced(&self, seq: u64) {
        self.update_progress(|p| p.synced = p.synced.max(seq));
    }

    /// The sync thread has published `revision`.
    fn set_published(&self, revision: Revision) {
        self.update_progress(|p| p.published = p.published.max(revision));
    }

    /// Blocks the writer until record `seq` is synced, or fails if the write path failed.
    fn wait_synced(&self, seq: u64) -> Result<(), BackendError> {
        self.wait_progress(|p| p.synced >= seq);
        self.check_failed()
    }

    /// Blocks the writer until `revision` is published (or the write path failed).
    fn wait_published(&self, revision: Revision) {
        self.wait_progress(|p| p.published >= revision);
    }

    /// Blocks the writer until `count` frozen layers are in sled (or the write path failed).
    fn wait_layers_written(&self, count: u64) {
        self.wait_progress(|p| p.layers_written >= count);
    }

    fn wait_progress(&self, done: impl Fn(&Progress) -> bool) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        while !done(&progress) && !self.failed.load(Ordering::Acquire) {
            progress = self
                .progress_changed
                .wait(progress)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The newest in-flight batch that changes `key`, if any.
    fn pending_for_key(inflight: &[Arc<Inflight>], key: &[u8]) -> Option<Revision> {
        inflight
            .iter()
            .filter(|b| b.keys.contains(key))
            .map(|b| b.revision)
            .max()
    }

    /// The newest in-flight batch that changes a key in the range, if any.
    fn pending_for_range(inflight: &[Arc<Inflight>], req: &RangeRequest) -> Option<Revision> {
        inflight
            .iter()
            .filter(|b| b.touches_range(req))
            .map(|b| b.revision)
            .max()
    }

    /// Waits until `revision` is durable, or fails if the write path failed or closed.
    async fn wait_durable(&self, revision: Revision) -> Result<(), BackendError> {
        let mut rx = self.durable.subscribe();
        rx.wait_for(|(durable, failed)| *durable >= revision || *failed)
            .await
            .map_err(|_| writer_gone())?;
        self.check_failed()
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
                let layers = &guard.layers;
                match Shared::pending_for_key(&guard.inflight, key) {
                    Some(pending) => pending,
                    None => {
                        let current = shared.current.load();
                        return match revision {
                            None => Ok((shared.get_current(layers, key)?, current)),
                            Some(rev) => {
                                shared.check_read_revision(rev)?;
                                if rev == current {
                                    Ok((shared.get_current(layers, key)?, rev))
                                } else {
                                    Ok((shared.get_at(layers, key, rev)?, rev))
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
        self.read_range(&req, Shared::range_locked).await
    }

    async fn count(&self, req: RangeRequest) -> Result<(u64, Revision), BackendError> {
        self.read_range(&req, Shared::count_locked).await
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

    async fn watch_with_progress(
        &self,
        prefix: &[u8],
        from: Option<Revision>,
    ) -> Result<(WatchStream, Option<WatchProgress>), BackendError> {
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
        let current = shared.current.load();
        let compacted = shared.compacted.load();
        let next = match from {
            Some(from) if from < compacted => {
                return Err(BackendError::Compacted {
                    requested: from,
                    compacted,
                })
            }
            Some(from) => from,
            None => current.next().ok_or_else(revision_overflow)?,
        };
        // Replay up to the revision read after subscribing; later changes arrive live.
        let (stream, progress) = follow::spawn(shared, live, prefix, next.get(), current.get());
        Ok((stream, Some(progress)))
    }

    async fn current_revision(&self) -> Result<Revision, BackendError> {
        let _guard = self.shared.read_guard()?;
        Ok(self.shared.current.load())
    }

    async fn compact(&self, revision: Revision) -> Result<(), BackendError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Compact { revision, reply })?;
        answer.await.map_err(|_| writer_gone())?
    }

    fn write_stats(&self) -> Option<WriterStats> {
        Some(self.writer_stats())
    }

    async fn compacted_revision(&self) -> Result<Revision, BackendError> {
        let _guard = self.shared.read_guard()?;
        Ok(self.shared.compacted.load())
    }
}

fn writer_gone() -> BackendError {
    BackendError::Unavailable("the sled backend is closed".to_string())
}

/// The revision counter cannot grow past [`Revision::MAX`] (a store this old is not real).
fn revision_overflow() -> BackendError {
    BackendError::Corrupt("revision counter overflow".to_string())
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
