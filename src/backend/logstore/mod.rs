//! The log-structured implementation of [`Backend`]: the write-ahead log *is* the store.
//!
//! Every change is appended once, to a segment file, and never copied into another structure
//! on disk: a batch of requests becomes **one** record and **one** `fdatasync`. An in-memory
//! index keeps, for every key, its retained versions with the segment, offset and length of
//! each value, and the change log's window (which key changed at each revision) for watches.
//! Reads look the version up in the index and `pread` its value; the page cache holds the hot
//! ones. Opening scans the segments in order and rebuilds the index (format in `format.rs`).
//!
//! # Writes
//!
//! One writer thread takes every request queued at that moment (a batch), works out each
//! request's outcome in order against the index and the batch's earlier requests (each applied
//! change gets the next revision), appends the batch as one checksummed record and
//! `fdatasync`s it. Only then does it publish the batch in the index, answer the requests and
//! send the events to watchers, so no read or watch ever sees a change that is not durable.
//! Requests that arrive during the sync form the next batch. A record is appended only once
//! every earlier one is synced, so only the last record of the last segment can be torn; on
//! open such a tail is cut (zeroed), and an unreadable record anywhere else is
//! [`BackendError::Corrupt`] naming the file and offset. A crash never shortens a segment (its
//! size is fixed before use), so a segment cut short, or a newest segment gone (the file
//! `NEWEST_SEGMENT` names the newest one started), is refused as damage done while the store
//! was stopped instead of losing its acknowledged changes and giving their revisions again.
//! If an append or a sync fails, the
//! batch's requests and every later write get [`BackendError::Unavailable`]: the store must be
//! reopened. Reads go on (the index holds only synced batches).
//!
//! A segment is a file whose blocks are all written before it is used (a write over written
//! blocks lets `fdatasync` skip the file system's metadata journal, which appends to a growing
//! or preallocated file cannot): 1 MiB first, each next twice the last, up to
//! [`LogOptions::segment_bytes`]. Once they are that large, a segment the cleaner has emptied is
//! used again as a later one (renamed, its header replaced), unless a reader still holds it;
//! otherwise a thread zero-fills the next one while the current one fills. Every record is
//! written with a zero length after it and carries its segment's number, so a segment used
//! again ends where its new records do, and none of its old records checks out as one of its
//! own (format 2, see `format.rs`; stores of format 1 open as they are, and their segments are
//! not used again).
//!
//! # Retention
//!
//! The same rules as the sled backend (see [`crate::backend::sled`]): per key, at most
//! [`LogOptions::history_per_key`] versions can be read (reads below the key's floor fail with
//! [`BackendError::Compacted`]); the change log keeps the last [`LogOptions::log_retention`]
//! revisions, raising the compacted revision after each batch; [`Backend::compact`] raises it
//! explicitly (logged as a record of its own). The index forgets versions that are neither
//! readable nor needed by the log's window.
//!
//! # Cleaning
//!
//! The index counts, per segment, the bytes of the versions it keeps there. Once the segments
//! take more than twice that (and more than [`LogOptions::clean_above_bytes`]), a thread reads
//! the **oldest** segment and lists its versions; then the writer, between batches, relocates
//! it a chunk (1/64 of a segment) at a time: every version the index still keeps from it is
//! written again, with its revisions and its key's read floor, in a relocation record at the
//! head; once a record is synced the index points at the new copies. The last record says the
//! relocation is complete, and the segment is deleted (or kept to be used again); records of a relocation that never
//! completed are ignored on opening (the segment is still there). Cleaning only ever the oldest segment keeps one invariant opening relies on:
//! every relocated version is older than every batch of the segments that remain. Opening
//! therefore reads in two passes: the relocation records first (deleting any segment a
//! relocation replaced that a crash left behind), which install the old versions and the
//! revision the deleted segments reached; then the batches in order, each put carrying its
//! create revision and version so that no earlier version is needed to replay it. The last
//! record of a relocation also names every key of the segment with the revision below which
//! its versions are gone, so that an older relocation record's copy of a version the index has
//! dropped since is not brought back.
//!
//! Space: the segments stay under about twice the kept bytes, plus the head, the spare and a
//! cleaned segment waiting to be used again.
//! Rewriting costs at most one copy of the kept bytes per cleaned segment; a workload that
//! overwrites its keys leaves old segments mostly dead, so it copies little.

mod format;
mod import;
mod index;
mod watch;
mod writer;

use std::fs::OpenOptions;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use tokio::sync::{broadcast, oneshot};

use super::files::{sync_path, zero_filled};
use super::follow::{self, WatchProgress, WATCH_BROADCAST_CAPACITY};
use super::{
    check_key, AtomicHistogram, Backend, BackendError, Event, Expect, KeyValue, RangeRequest,
    RangeResponse, Revision, WatchStream, WriteOutcome, WriterStats, BATCH_SIZE_BOUNDS,
    SYNC_NANOS_BOUNDS,
};
use format::{
    any_record_after, check_header, list_segments, scan, unstarted, Framing, ReadRecord, Scanned,
    END_LEN, HEADER_LEN,
};
pub use import::Import;
use index::{Change, Index, Loc};
use writer::{io_error, open_rw, start_segment, Head, Op, Request, Writer, FIRST_SEGMENT_BYTES};

/// Retention settings of a [`LogBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Versions of each key (puts and deletes) kept for reads at past revisions; 0 keeps every
    /// version until compaction. Default 10.
    pub history_per_key: usize,
    /// Revisions kept in the change log for watch replay; older ones are compacted after each
    /// write. 0 means unlimited. Default 100 000.
    pub log_retention: u64,
    /// Largest segment file; the first is 1 MiB (or this, if smaller), each next twice the
    /// last. At least 256 bytes. Default 64 MiB.
    pub segment_bytes: u64,
    /// The cleaner relocates the oldest segment once the segments take more than this and
    /// more than twice the bytes of the versions the index keeps. Default 64 MiB.
    pub clean_above_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            history_per_key: 10,
            log_retention: 100_000,
            segment_bytes: 64 << 20,
            clean_above_bytes: 64 << 20,
        }
    }
}

/// The smallest [`LogOptions::segment_bytes`].
const MIN_SEGMENT_BYTES: u64 = 256;

const LOCK_FILE: &str = "LOCK";

/// Whether `dir` holds a log-structured store (a segment file).
pub(crate) fn holds_log_store(dir: &Path) -> bool {
    format::list_segments(dir).is_ok_and(|s| !s.is_empty())
}

struct Stats {
    batches: AtomicU64,
    requests: AtomicU64,
    commits: AtomicU64,
    batch_size: AtomicHistogram,
    sync_nanos: AtomicHistogram,
}

/// What the writer, readers and watch tasks share.
pub(super) struct Shared {
    index: RwLock<Index>,
    /// Set once a write failed: why.
    failed: Mutex<Option<String>>,
    events: Mutex<Option<broadcast::Sender<Arc<Vec<Event>>>>>,
    stats: Stats,
}

/// What every write gets once one failed: the store must be reopened (restarted).
fn failed_write(why: &str) -> BackendError {
    BackendError::Unavailable(format!(
        "the log-structured store failed a write and must be reopened: {why}"
    ))
}

impl Shared {
    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The index for a read. Reads go on after a write failed: the index holds only what was
    /// synced (a batch is published after its sync), and its values are at offsets written
    /// before; only writes (and the current revision, which health checks ask for) fail.
    fn read_guard(&self) -> Result<RwLockReadGuard<'_, Index>, BackendError> {
        Ok(self.index())
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    fn check_failed(&self) -> Result<(), BackendError> {
        match &*self.failed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => Err(failed_write(why)),
            None => Ok(()),
        }
    }

    fn fail(&self, e: &BackendError) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.get_or_insert_with(|| e.to_string());
    }

    /// The key's current version (the writer's view: every published batch), its value not
    /// read.
    fn current_found(&self, key: &[u8]) -> Result<Option<index::Found>, BackendError> {
        let index = self.index();
        index.at(key, index.current)
    }

    fn watched(&self) -> bool {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.as_ref().is_some_and(|tx| tx.receiver_count() > 0)
    }

    fn send_events(&self, events: Vec<Event>) {
        let sender = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = sender.as_ref() {
            let _ = tx.send(Arc::new(events));
        }
    }
}

fn closed() -> BackendError {
    BackendError::Unavailable("the log-structured store is closed".to_string())
}

/// An embedded, durable, revisioned key-value store whose write-ahead log is the store (see the
/// module docs).
pub struct LogBackend {
    shared: Arc<Shared>,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl std::fmt::Debug for LogBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBackend")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl LogBackend {
    /// Opens (creating if missing) the store in `dir`: takes the directory's lock, scans every
    /// segment to rebuild the index (cutting a torn tail), and starts the writer.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<LogBackend, BackendError> {
        BackendError::refuse_other_engine(dir, crate::backend::sled::holds_sled_store(dir), false)?;
        std::fs::create_dir_all(dir)
            .map_err(|e| BackendError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let opts = LogOptions {
            segment_bytes: opts.segment_bytes.max(MIN_SEGMENT_BYTES),
            ..opts
        };
        let first_size = FIRST_SEGMENT_BYTES.min(opts.segment_bytes);
        let lock = lock_dir(dir)?;
        let _ = std::fs::remove_file(dir.join(writer::SPARE_TMP));
        let recycled = writer::adopt_recycled(dir, opts.segment_bytes)?;
        let mut index = Index::new(opts);
        let head = recover(dir, &mut index)?;
        let head = match head {
            Some(head) => head,
            None => {
                let path = dir.join(format::segment_name(1));
                let file = zero_filled(&path, first_size)?;
                start_segment(&file, 1)?;
                file.sync_data()
                    .map_err(|e| io_error("fdatasync a new segment", &e))?;
                sync_path(dir)?;
                writer::mark_newest(dir, 1)?;
                let file = Arc::new(file);
                index.add_file(1, file.clone(), first_size);
                Head {
                    seq: 1,
                    file,
                    end: HEADER_LEN,
                    size: first_size,
                }
            }
        };
        let (events, _) = broadcast::channel(WATCH_BROADCAST_CAPACITY);
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            failed: Mutex::new(None),
            events: Mutex::new(Some(events)),
            stats: Stats {
                batches: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                commits: AtomicU64::new(0),
                batch_size: AtomicHistogram::new(BATCH_SIZE_BOUNDS, 1.0),
                sync_nanos: AtomicHistogram::new(SYNC_NANOS_BOUNDS, 1e-9),
            },
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            dir: dir.to_path_buf(),
            opts,
            head,
            builder: format::RecordBuilder::default(),
            first: 0,
            spare: None,
            recycled,
            cleaning: None,
            preparing: None,
            _lock: lock,
        };
        let handle = std::thread::Builder::new()
            .name("keyward-log-writer".to_string())
            .spawn(move || writer.run(rx))
            .map_err(|e| io_error("start the writer thread", &e))?;
        Ok(LogBackend {
            shared,
            requests: Mutex::new(Some(tx)),
            writer: Some(handle),
            dir: dir.to_path_buf(),
        })
    }

    /// How many keys the index holds (existing now, or with retained history).
    pub fn indexed_keys(&self) -> usize {
        self.shared.index().key_count()
    }

    /// Bytes the segments take on disk, and bytes of the versions the index keeps in them
    /// (keys, values and a little for framing): the cleaner keeps the first under twice the
    /// second (or [`LogOptions::clean_above_bytes`]).
    pub fn space(&self) -> (u64, u64) {
        self.shared.index().space()
    }

    async fn request(&self, op: Op) -> Result<WriteOutcome, BackendError> {
        self.shared.check_failed()?;
        let (reply, rx) = oneshot::channel();
        {
            let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            let tx = requests.as_ref().ok_or_else(closed)?;
            tx.send(Request { op, reply }).map_err(|_| closed())?;
        }
        rx.await.map_err(|_| closed())?
    }
}

impl Drop for LogBackend {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish the queued requests, then exit (which
        // ends the watch streams and releases the directory's lock).
        drop(
            self.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

/// How long opening waits for the directory's lock while someone else holds it. A store
/// dropped in this process has released it (dropping joins the writer, which holds it), but a
/// process another thread is starting holds a copy of every open file until it executes its
/// program, the lock's file among them; that lasts well under this.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes the store directory's lock (released when the file closes), waiting up to
/// [`LOCK_WAIT`] for a holder to let go.
fn lock_dir(dir: &Path) -> Result<std::fs::File, BackendError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| BackendError::Io(format!("cannot open {}: {e}", path.display())))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => {
                return Err(BackendError::Io(format!(
                    "could not acquire lock on {}: {e} (is another keyward using this directory?)",
                    dir.display()
                )))
            }
        }
    }
}

/// A frame that does not check out at `bad_at` is a torn tail only at the end of the last
/// segment (nothing well formed after it); anywhere else it is corruption.
fn check_damage(
    data: &[u8],
    framing: Framing,
    bad_at: Option<usize>,
    last: bool,
    path: &Path,
) -> Result<(), BackendError> {
    match bad_at {
        Some(bad) if !last || any_record_after(data, bad, framing) => Err(BackendError::Corrupt(
            format!("{}: unreadable record at offset {bad}", path.display()),
        )),
        _ => Ok(()),
    }
}

/// A segment the writer appended to was cut short while the store was stopped: it ends right
/// after its last record, where the writer always leaves a zero length, or in a record longer
/// than what is left of the file, where a torn record (a crash) always fits. Either way
/// changes that were acknowledged are gone, and going on would give their revisions again.
/// Only format-2 segments holding a batch or a compaction are the writer's: `keyward store
/// convert` writes segments of relocation records that end where their data does.
fn check_not_cut(
    data: &[u8],
    scanned: &Scanned<'_>,
    framing: Framing,
    path: &Path,
) -> Result<(), BackendError> {
    let written = scanned
        .records
        .iter()
        .any(|(_, r)| matches!(r, ReadRecord::Batch { .. } | ReadRecord::Compaction(_)));
    if !matches!(framing, Framing::V2 { .. }) || !written {
        return Ok(());
    }
    let cut_at = match scanned.bad_at {
        Some(bad) if format::runs_past_end(data, bad, framing) => Some(bad),
        None if data.len() < scanned.end + END_LEN as usize => Some(scanned.end),
        _ => None,
    };
    match cut_at {
        Some(at) => Err(BackendError::Corrupt(format!(
            "{}: the file ends at byte {} inside or right after the record at offset {at}: it was \
             cut short (truncated) while the store was stopped, and the changes written after \
             that are lost; restore the directory from a backup",
            path.display(),
            data.len()
        ))),
        None => Ok(()),
    }
}

/// Refuses a store whose newest started segment (see [`writer::NEWEST_NAME`]) is missing.
fn check_newest_present(
    dir: &Path,
    segments: &[(u32, PathBuf)],
    newest: Option<u32>,
) -> Result<(), BackendError> {
    let present = segments.last().map_or(0, |(seq, _)| *seq);
    match newest {
        Some(newest) if newest > present => Err(BackendError::Corrupt(format!(
            "{}: segment {} ({}) is missing, though {} says the store started it: the changes \
             written to it are lost; restore the directory from a backup",
            dir.display(),
            newest,
            format::segment_name(newest),
            writer::NEWEST_NAME
        ))),
        _ => Ok(()),
    }
}

/// A relocation record found on opening: the segment it is in, its victim, what it moved and
/// which keys' older versions it said were gone.
struct FoundRelocation {
    seq: u32,
    victim: u32,
    complete: bool,
    through: i64,
    compacted: i64,
    moved: Vec<(Vec<u8>, i64, format::Moved, Loc)>,
    gone: Vec<(Vec<u8>, i64)>,
}

/// Opening, first pass: reads the relocation records of every segment, deletes the segments
/// they replaced that a crash left behind, and installs the versions they hold (all older
/// than any batch of the segments that remain). Returns the segments that remain, and the
/// compacted revision to apply after the second pass (see [`Index::finish_install`]).
fn install_relocations(
    dir: &Path,
    segments: Vec<(u32, PathBuf)>,
    index: &mut Index,
) -> Result<(Vec<(u32, PathBuf)>, i64), BackendError> {
    let mut found = Vec::new();
    for (i, (seq, path)) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let data = std::fs::read(path)
            .map_err(|e| BackendError::Io(format!("cannot read {}: {e}", path.display())))?;
        if last && unstarted(&data, *seq) {
            // The second pass starts it again.
            continue;
        }
        let framing = check_header(&data, *seq, path)?;
        let scanned = scan(&data, framing);
        check_damage(&data, framing, scanned.bad_at, last, path)?;
        for (_, record) in scanned.records {
            if let ReadRecord::Relocation {
                victim,
                complete,
                through,
                compacted,
                moved,
                gone,
            } = record
            {
                let moved = moved
                    .into_iter()
                    .map(|m| {
                        let (offset, len) = m.value;
                        let loc = Loc {
                            seg: *seq,
                            len,
                            offset,
                        };
                        (m.key.to_vec(), m.floor, m.meta, loc)
                    })
                    .collect();
                found.push(FoundRelocation {
                    seq: *seq,
                    victim,
                    complete,
                    through,
                    compacted,
                    moved,
                    gone: gone.into_iter().map(|(k, b)| (k.to_vec(), b)).collect(),
                });
            }
        }
    }
    let Some(replaced) = found.iter().filter(|r| r.complete).map(|r| r.victim).max() else {
        return Ok((segments, 0));
    };
    let mut remaining = Vec::new();
    for (seq, path) in segments {
        if seq <= replaced {
            // Relocated before a crash kept it from being deleted.
            std::fs::remove_file(&path)
                .map_err(|e| BackendError::Io(format!("cannot delete {}: {e}", path.display())))?;
        } else {
            remaining.push((seq, path));
        }
    }
    sync_path(dir)?;
    let (mut through, mut compacted) = (0, 0);
    let mut gone = Vec::new();
    // Records in deleted segments were relocated again; records of a victim whose relocation
    // never completed are ignored (the victim is still there).
    for r in found
        .into_iter()
        .filter(|r| r.seq > replaced && r.victim <= replaced)
    {
        through = through.max(r.through);
        compacted = compacted.max(r.compacted);
        for (key, floor, meta, loc) in r.moved {
            index.install(&key, floor, meta, loc);
        }
        gone.extend(r.gone);
    }
    // Only after every install: a newer record's copy of a version is never gone.
    for (key, below) in gone {
        index.forget_below(&key, below);
    }
    index.finish_install(through, compacted)?;
    Ok((remaining, compacted))
}

/// Scans every segment in order into `index`; returns the last segment to append to (`None`
/// for a new store).
fn recover(dir: &Path, index: &mut Index) -> Result<Option<Head>, BackendError> {
    let newest = writer::newest_marked(dir)?;
    let segments = list_segments(dir)?;
    check_newest_present(dir, &segments, newest)?;
    let (segments, compacted) = install_relocations(dir, segments, index)?;
    let mut head = None;
    // One buffer for every segment: a store's segments are read one after the other, and the
    // buffer is freed (and the allocator asked to return it) once the scan is done.
    let mut data = Vec::new();
    for (i, (seq, path)) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let mut file = open_rw(path)?;
        data.clear();
        let len = file.metadata().map_or(0, |m| m.len());
        data.reserve(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut data)
            .map_err(|e| BackendError::Io(format!("cannot read {}: {e}", path.display())))?;
        if last && unstarted(&data, *seq) {
            if newest.is_some_and(|newest| newest >= *seq) {
                return Err(BackendError::Corrupt(format!(
                    "{}: the segment was started (its header synced), but its header is gone: \
                     the file was cut short or overwritten while the store was stopped; restore \
                     the directory from a backup",
                    path.display()
                )));
            }
            // A crash while this segment was being started: nothing in it was ever written.
            start_segment(&file, *seq)?;
            file.sync_data()
                .map_err(|e| io_error("fdatasync a segment", &e))?;
            let start = (HEADER_LEN + END_LEN) as usize;
            if data.len() < start {
                data.resize(start, 0);
            }
            data[..HEADER_LEN as usize].copy_from_slice(&format::header(*seq));
            data[HEADER_LEN as usize..start].fill(0);
        }
        let framing = check_header(&data, *seq, path)?;
        let scanned = scan(&data, framing);
        check_not_cut(&data, &scanned, framing, path)?;
        for (at, record) in &scanned.records {
            match record {
                ReadRecord::Batch { first, changes } => {
                    if *first != index.current + 1 {
                        return Err(BackendError::Corrupt(format!(
                            "{}: the record at offset {at} starts at revision {first}, not at {}",
                            path.display(),
                            index.current + 1
                        )));
                    }
                    for c in changes {
                        let change = match c.value {
                            Some((offset, len)) => Change::Put {
                                loc: Loc {
                                    seg: *seq,
                                    len,
                                    offset,
                                },
                                create: c.meta.0,
                                version: c.meta.1,
                            },
                            None => Change::Delete,
                        };
                        index.apply(c.key, change);
                    }
                }
                ReadRecord::Compaction(rev) => {
                    if *rev > index.current {
                        return Err(BackendError::Corrupt(format!(
                            "{}: the record at offset {at} compacts revision {rev}, beyond the current {}",
                            path.display(),
                            index.current
                        )));
                    }
                    index.compact(*rev);
                }
                // Installed by the first pass.
                ReadRecord::Relocation { .. } => {}
            }
        }
        check_damage(&data, framing, scanned.bad_at, last, path)?;
        if let Some(bad) = scanned.bad_at {
            // The torn tail of the last record, never acknowledged: zeroed (format 1), or
            // ended by a zero length (format 2, where what follows may be old records).
            let end = match framing {
                Framing::V1 => data.iter().rposition(|b| *b != 0).map_or(bad, |p| p + 1),
                Framing::V2 { .. } => bad + END_LEN as usize,
            };
            let zeros = vec![0u8; end.saturating_sub(bad)];
            std::os::unix::fs::FileExt::write_all_at(&file, &zeros, bad as u64)
                .map_err(|e| io_error("cut the log's torn tail", &e))?;
            file.sync_data()
                .map_err(|e| io_error("fdatasync the log", &e))?;
            tracing::warn!(segment = %path.display(), offset = bad, "cut a torn record at the log's tail");
        }
        let size = data.len() as u64;
        let file = Arc::new(file);
        index.add_file(*seq, file.clone(), size);
        if last {
            // Only format-2 segments are appended to: a format-1 head is left full, so that
            // the first write starts a new segment.
            let end = match framing {
                Framing::V1 => size,
                Framing::V2 { .. } => scanned.end as u64,
            };
            head = Some(Head {
                seq: *seq,
                file,
                end,
                size,
            });
        }
    }
    drop(data);
    crate::memory::release_freed();
    index.compact(compacted);
    // A store from before the mark, or whose newest segment was started again above: marked
    // now, so that its newest segment is checked from the next opening on.
    if let Some(h) = &head {
        if newest.is_none_or(|n| n < h.seq) {
            writer::mark_newest(dir, h.seq)?;
        }
    }
    Ok(head)
}

#[async_trait::async_trait]
impl Backend for LogBackend {
    async fn get(
        &self,
        key: &[u8],
        revision: Option<Revision>,
    ) -> Result<(Option<KeyValue>, Revision), BackendError> {
        check_key(key)?;
        let (found, at) = {
            let index = self.shared.read_guard()?;
            let at = index.read_revision(revision)?;
            (index.at(key, at.get())?, at)
        };
        Ok((found.map(index::Found::read).transpose()?, at))
    }

    fn mod_revision_in_memory(&self, key: &[u8]) -> Option<Result<Option<Revision>, BackendError>> {
        let answer = check_key(key)
            .and_then(|()| self.shared.read_guard())
            .map(|index| index.current_rev(key).and_then(Revision::new));
        Some(answer)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, BackendError> {
        let (found, at) = {
            let index = self.shared.read_guard()?;
            let at = index.read_revision(req.revision)?;
            let found = index.range(&req.start, req.end.as_deref(), at.get(), req.limit)?;
            (found, at)
        };
        let more = req.limit > 0 && found.len() > req.limit;
        let kvs = found
            .into_iter()
            .take(if req.limit > 0 { req.limit } else { usize::MAX })
            .map(index::Found::read)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RangeResponse {
            kvs,
            more,
            revision: at,
        })
    }

    async fn count(&self, req: RangeRequest) -> Result<(u64, Revision), BackendError> {
        let index = self.shared.read_guard()?;
        let at = index.read_revision(req.revision)?;
        Ok((index.count(&req.start, req.end.as_deref(), at.get())?, at))
    }

    async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expect: Expect,
    ) -> Result<WriteOutcome, BackendError> {
        check_key(key)?;
        check_len("key", key)?;
        check_len("value", &value)?;
        self.request(Op::Put {
            key: key.to_vec(),
            value,
            expect,
        })
        .await
    }

    async fn delete(&self, key: &[u8], expect: Expect) -> Result<WriteOutcome, BackendError> {
        check_key(key)?;
        check_len("key", key)?;
        self.request(Op::Delete {
            key: key.to_vec(),
            expect,
        })
        .await
    }

    async fn watch_with_progress(
        &self,
        prefix: &[u8],
        from: Option<Revision>,
    ) -> Result<(WatchStream, Option<WatchProgress>), BackendError> {
        // Subscribe before reading the current revision, so nothing falls in between.
        let live = {
            let events = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
            events
                .as_ref()
                .map(|tx| tx.subscribe())
                .ok_or_else(closed)?
        };
        let (current, compacted) = {
            let index = self.shared.read_guard()?;
            (index.current, index.compacted_revision())
        };
        if let Some(from) = from.filter(|from| *from < compacted) {
            return Err(BackendError::Compacted {
                requested: from,
                compacted,
            });
        }
        let next = watch::start(from, current);
        let (stream, progress) = follow::spawn(&self.shared, live, prefix, next, current);
        Ok((stream, Some(progress)))
    }

    async fn current_revision(&self) -> Result<Revision, BackendError> {
        // A store that can no longer write reports it here: the health checks ask this.
        self.shared.check_failed()?;
        Ok(self.shared.index().revision())
    }

    async fn compact(&self, revision: Revision) -> Result<(), BackendError> {
        self.request(Op::Compact(revision)).await.map(|_| ())
    }

    async fn compacted_revision(&self) -> Result<Revision, BackendError> {
        Ok(self.shared.read_guard()?.compacted_revision())
    }

    fn write_stats(&self) -> Option<WriterStats> {
        let s = &self.shared.stats;
        Some(WriterStats {
            batches: s.batches.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            batch_size: s.batch_size.snapshot(),
            sync_seconds: s.sync_nanos.snapshot(),
            commits: s.commits.load(Ordering::Relaxed),
        })
    }
}

/// Keys and values are framed with four-byte lengths.
fn check_len(what: &str, bytes: &[u8]) -> Result<(), BackendError> {
    if u32::try_from(bytes.len()).is_err() {
        return Err(BackendError::InvalidArgument(format!(
            "the {what} is {} bytes; at most {} are allowed",
            bytes.len(),
            u32::MAX
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cleaner_tests {
    use super::*;
    use tokio_stream::StreamExt;

    /// Every event of the change log's window, in order.
    async fn replay(b: &LogBackend) -> Vec<Event> {
        let from = b.compacted_revision().await.expect("compacted");
        let from = from.max(Revision::new(2).expect("a revision"));
        let current = b.current_revision().await.expect("current");
        let mut stream = b.watch(b"", Some(from)).await.expect("watch");
        let mut out = Vec::new();
        while out.len() < (current.get() - from.get() + 1) as usize {
            out.push(stream.next().await.expect("an event").expect("event"));
        }
        out
    }

    #[tokio::test]
    async fn a_store_of_format_1_segments_reads_writes_and_cleans_them_away() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = LogOptions {
            segment_bytes: 4096,
            clean_above_bytes: 0,
            log_retention: 100,
            history_per_key: 2,
        };
        let value = |i: u32| format!("value {i} {}", "x".repeat((i % 90) as usize)).into_bytes();
        let mut expected = std::collections::BTreeMap::new();
        {
            let b = LogBackend::open(dir.path(), opts).expect("open");
            for i in 0..120u32 {
                let key = format!("k{}", i % 9).into_bytes();
                b.put(&key, value(i), Expect::Any).await.expect("put");
                expected.insert(key, value(i));
            }
        }
        // The same store as format 1 wrote it.
        let old = list_segments(dir.path()).expect("segments");
        for (seq, path) in &old {
            let data = std::fs::read(path).expect("read");
            std::fs::write(path, format::as_format_1(&data, *seq)).expect("rewrite");
        }
        {
            let b = LogBackend::open(dir.path(), opts).expect("open format 1");
            check(&b, &expected).await;
            b.put(b"new", b"after the upgrade".to_vec(), Expect::Any)
                .await
                .expect("put");
            expected.insert(b"new".to_vec(), b"after the upgrade".to_vec());
        }
        // The format-1 head was not appended to: the write went to a new, format-2 segment.
        let segments = list_segments(dir.path()).expect("segments");
        let (seq, path) = segments.last().expect("a segment");
        assert!(*seq > old.last().expect("old").0);
        let data = std::fs::read(path).expect("read");
        assert_eq!(
            check_header(&data, *seq, path).expect("header"),
            Framing::V2 { seq: *seq }
        );
        let b = LogBackend::open(dir.path(), opts).expect("reopen");
        check(&b, &expected).await;
        // Enough writes for the cleaner to replace every format-1 segment.
        for i in 120..1200u32 {
            let key = format!("k{}", i % 9).into_bytes();
            b.put(&key, value(i), Expect::Any).await.expect("put");
            expected.insert(key, value(i));
        }
        check(&b, &expected).await;
        drop(b);
        let first = list_segments(dir.path()).expect("segments")[0].0;
        assert!(
            first > old.last().expect("old").0,
            "format-1 segments remain"
        );
        let b = LogBackend::open(dir.path(), opts).expect("reopen");
        check(&b, &expected).await;
    }

    async fn check(b: &LogBackend, expected: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>) {
        let kvs = b.range(RangeRequest::default()).await.expect("range").kvs;
        let got: std::collections::BTreeMap<_, _> =
            kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        assert_eq!(&got, expected);
    }

    /// Segments holding bytes other than zeros after their records' end: cleaned segments used
    /// again, whose old records the scan did not read.
    fn segments_used_again(dir: &Path) -> usize {
        let segments = list_segments(dir).expect("segments");
        segments
            .iter()
            .filter(|(seq, path)| {
                let data = std::fs::read(path).expect("read");
                let framing = check_header(&data, *seq, path).expect("header");
                let scanned = scan(&data, framing);
                assert_eq!(scanned.bad_at, None, "{}", path.display());
                data[scanned.end..].iter().any(|b| *b != 0)
            })
            .count()
    }

    #[tokio::test]
    async fn the_cleaner_bounds_the_segments_and_a_reopened_store_reads_the_same() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = LogOptions {
            segment_bytes: 4096,
            clean_above_bytes: 0,
            log_retention: 200,
            history_per_key: 3,
        };
        let (values, events, history) = {
            let b = LogBackend::open(dir.path(), opts).expect("open");
            // Overwrites and deletes, plus one key written once and never again, which the
            // cleaner must carry forward segment after segment.
            b.put(b"cold", b"written once".to_vec(), Expect::Any)
                .await
                .expect("put");
            for i in 0..3000u32 {
                let key = format!("k{}", i % 7);
                if i % 11 == 0 {
                    b.delete(key.as_bytes(), Expect::Any).await.expect("delete");
                } else {
                    let value = vec![b'a' + (i % 26) as u8; (i % 300) as usize];
                    b.put(key.as_bytes(), value, Expect::Any)
                        .await
                        .expect("put");
                }
            }
            // The cleaner reads its victim on a thread of its own and goes on between writes:
            // on a loaded machine it may be behind, and catches up as writes go on.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let (mut size, mut live) = b.space();
            while size > 2 * live + 2 * opts.segment_bytes && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                b.put(b"k0", b"more".to_vec(), Expect::Any)
                    .await
                    .expect("put");
                (size, live) = b.space();
            }
            assert!(
                size <= 2 * live + 2 * opts.segment_bytes,
                "segments take {size} bytes for {live} kept"
            );
            let segments = list_segments(dir.path()).expect("segments");
            assert!(
                segments.first().expect("a segment").0 > 1,
                "nothing was cleaned"
            );
            assert!(
                segments_used_again(dir.path()) > 0,
                "no cleaned segment was used again"
            );
            let values = b.range(RangeRequest::default()).await.expect("range").kvs;
            let rev = b.current_revision().await.expect("rev").prev();
            let history = b.get(b"k3", rev).await;
            (values, replay(&b).await, history.expect("history"))
        };
        // A crash between renaming a cleaned segment and marking it: the file kept to be used
        // again still has a segment's header and records (here a copy of the oldest one's).
        let oldest = &list_segments(dir.path()).expect("segments")[0].1;
        std::fs::copy(oldest, dir.path().join(writer::RECYCLED_NAME)).expect("copy");
        let b = LogBackend::open(dir.path(), opts).expect("reopen");
        assert_eq!(
            b.range(RangeRequest::default()).await.expect("range").kvs,
            values
        );
        assert!(values.iter().any(|kv| kv.key == b"cold"));
        assert_eq!(replay(&b).await, events);
        let rev = b.current_revision().await.expect("rev").prev();
        assert_eq!(b.get(b"k3", rev).await.expect("history"), history);
        // Writes that use it (and more cleaned segments) again, then a reopen.
        for i in 0..600u32 {
            let key = format!("k{}", i % 5);
            let value = vec![b'A' + (i % 26) as u8; (i % 200) as usize];
            b.put(key.as_bytes(), value, Expect::Any)
                .await
                .expect("put");
        }
        let values = b.range(RangeRequest::default()).await.expect("range").kvs;
        let events = replay(&b).await;
        drop(b);
        let b = LogBackend::open(dir.path(), opts).expect("reopen");
        assert_eq!(
            b.range(RangeRequest::default()).await.expect("range").kvs,
            values
        );
        assert_eq!(replay(&b).await, events);
    }
}
