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
//! [`BackendError::Corrupt`] naming the file and offset. If an append or a sync fails, the
//! batch's requests get [`BackendError::Io`] and every later request
//! [`BackendError::Unavailable`]: the store must be reopened.
//!
//! Segments are zero-filled before use (a write over written blocks lets `fdatasync` skip the
//! file system's metadata journal) by a thread that prepares the next one while the current
//! one fills: 1 MiB first, each next twice the last, up to 64 MiB.
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
//! # Not yet
//!
//! Segments are never rewritten: the space of versions the index forgot is not reclaimed yet
//! (the cleaner, which will copy the live versions of mostly dead segments forward, is the next
//! step), so this engine is not the default.

mod format;
mod index;
mod watch;
mod writer;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use tokio::sync::{broadcast, oneshot};

use super::files::{sync_path, zero_filled};
use super::{
    check_key, AtomicHistogram, Backend, BackendError, Event, Expect, KeyValue, RangeRequest,
    RangeResponse, Revision, WatchStream, WriteOutcome, WriterStats, BATCH_SIZE_BOUNDS,
    SYNC_NANOS_BOUNDS,
};
use format::{any_record_after, check_header, list_segments, scan, ReadRecord, HEADER_LEN};
use index::{Change, Index, Loc};
use watch::{WatchTask, WATCH_BROADCAST_CAPACITY, WATCH_STREAM_CAPACITY};
use writer::{io_error, open_rw, Head, Op, Request, Writer, FIRST_SEGMENT_BYTES};

/// Retention settings of a [`LogBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Versions of each key (puts and deletes) kept for reads at past revisions; 0 keeps every
    /// version until compaction. Default 10.
    pub history_per_key: usize,
    /// Revisions kept in the change log for watch replay; older ones are compacted after each
    /// write. 0 means unlimited. Default 100 000.
    pub log_retention: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            history_per_key: 10,
            log_retention: 100_000,
        }
    }
}

const LOCK_FILE: &str = "LOCK";

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

impl Shared {
    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn read_guard(&self) -> Result<RwLockReadGuard<'_, Index>, BackendError> {
        self.check_failed()?;
        Ok(self.index())
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    fn check_failed(&self) -> Result<(), BackendError> {
        match &*self.failed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => Err(BackendError::Unavailable(format!(
                "the log-structured store failed a write and must be reopened: {why}"
            ))),
            None => Ok(()),
        }
    }

    fn fail(&self, e: &BackendError) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.get_or_insert_with(|| e.to_string());
    }

    /// The key's current value (the writer's view: every published batch).
    fn current_value(&self, key: &[u8]) -> Result<Option<KeyValue>, BackendError> {
        let found = {
            let index = self.index();
            index.at(key, index.current)?
        };
        found.map(index::Found::read).transpose()
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
        std::fs::create_dir_all(dir)
            .map_err(|e| BackendError::Io(format!("cannot create {}: {e}", dir.display())))?;
        let lock = lock_dir(dir)?;
        let _ = std::fs::remove_file(dir.join(writer::SPARE_TMP));
        let mut index = Index::new(opts);
        let head = recover(dir, &mut index)?;
        let head = match head {
            Some(head) => head,
            None => {
                let path = dir.join(format::segment_name(1));
                let file = zero_filled(&path, FIRST_SEGMENT_BYTES)?;
                std::os::unix::fs::FileExt::write_all_at(&file, &format::header(1), 0)
                    .map_err(|e| io_error("write a segment header", &e))?;
                file.sync_data()
                    .map_err(|e| io_error("fdatasync a new segment", &e))?;
                sync_path(dir)?;
                let file = Arc::new(file);
                index.add_file(1, file.clone());
                Head {
                    seq: 1,
                    file,
                    end: HEADER_LEN,
                    size: FIRST_SEGMENT_BYTES,
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
            head,
            builder: format::RecordBuilder::default(),
            first: 0,
            spare: None,
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

/// Takes the store directory's lock (released when the file closes).
fn lock_dir(dir: &Path) -> Result<std::fs::File, BackendError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| BackendError::Io(format!("cannot open {}: {e}", path.display())))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |e| {
            BackendError::Io(format!(
                "could not acquire lock on {}: {e} (is another keyward using this directory?)",
                dir.display()
            ))
        },
    )?;
    Ok(file)
}

/// Scans every segment in order into `index`; returns the last segment to append to (`None`
/// for a new store).
fn recover(dir: &Path, index: &mut Index) -> Result<Option<Head>, BackendError> {
    let segments = list_segments(dir)?;
    let mut head = None;
    for (i, (seq, path)) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let file = open_rw(path)?;
        let mut data = std::fs::read(path)
            .map_err(|e| BackendError::Io(format!("cannot read {}: {e}", path.display())))?;
        if last
            && data.len() >= HEADER_LEN as usize
            && data[..HEADER_LEN as usize].iter().all(|b| *b == 0)
        {
            // A crash while a new segment was being started: its header never became durable.
            let h = format::header(*seq);
            std::os::unix::fs::FileExt::write_all_at(&file, &h, 0)
                .map_err(|e| io_error("write a segment header", &e))?;
            file.sync_data()
                .map_err(|e| io_error("fdatasync a segment", &e))?;
            data[..HEADER_LEN as usize].copy_from_slice(&h);
        }
        check_header(&data, *seq, path)?;
        let scanned = scan(&data);
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
                            Some((offset, len)) => Change::Put(Loc {
                                seg: *seq,
                                len,
                                offset,
                            }),
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
            }
        }
        if let Some(bad) = scanned.bad_at {
            if !last || any_record_after(&data, bad) {
                return Err(BackendError::Corrupt(format!(
                    "{}: unreadable record at offset {bad}",
                    path.display()
                )));
            }
            // The torn tail of the last record, never acknowledged: zeroed.
            let nonzero_end = data.iter().rposition(|b| *b != 0).map_or(bad, |p| p + 1);
            let zeros = vec![0u8; nonzero_end.saturating_sub(bad)];
            std::os::unix::fs::FileExt::write_all_at(&file, &zeros, bad as u64)
                .map_err(|e| io_error("cut the log's torn tail", &e))?;
            file.sync_data()
                .map_err(|e| io_error("fdatasync the log", &e))?;
            tracing::warn!(segment = %path.display(), offset = bad, "cut a torn record at the log's tail");
        }
        let size = data.len() as u64;
        let file = Arc::new(file);
        index.add_file(*seq, file.clone());
        if last {
            head = Some(Head {
                seq: *seq,
                file,
                end: scanned.end as u64,
                size,
            });
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

    async fn watch(
        &self,
        prefix: &[u8],
        from: Option<Revision>,
    ) -> Result<WatchStream, BackendError> {
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
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_STREAM_CAPACITY);
        let task = WatchTask {
            shared: Arc::downgrade(&self.shared),
            prefix: prefix.to_vec(),
            next: watch::start(from, current),
            tx,
        };
        tokio::spawn(task.run(live, current));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision, BackendError> {
        Ok(self.shared.read_guard()?.revision())
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
mod tests {
    use super::*;

    fn rev(r: i64) -> Revision {
        Revision::new(r).expect("a revision")
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_damage_before_it_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        {
            let b = LogBackend::open(&store, LogOptions::default()).expect("open");
            for v in [b"one".as_slice(), b"two", b"three"] {
                b.put(b"k", v.to_vec(), Expect::Any).await.expect("put");
            }
        }
        let segment = store.join(format::segment_name(1));
        let data = std::fs::read(&segment).expect("read");
        let end = data.iter().rposition(|b| *b != 0).expect("records") + 1;
        // A record whose sync never finished: a frame that claims more than was written.
        let torn = [0x40, 0, 0, 0, 1, 2, 3, 4, 1, 0, 0];
        std::os::unix::fs::FileExt::write_all_at(
            &std::fs::OpenOptions::new()
                .write(true)
                .open(&segment)
                .expect("open"),
            &torn,
            end as u64,
        )
        .expect("tear");
        {
            let b = LogBackend::open(&store, LogOptions::default()).expect("reopen");
            let (kv, at) = b.get(b"k", None).await.expect("get");
            assert_eq!((kv.expect("k").value, at), (b"three".to_vec(), rev(4)));
            let (kv, _) = b.get(b"k", Some(rev(2))).await.expect("get at 2");
            assert_eq!(kv.expect("k at 2").value, b"one");
            // Appending after the cut tail works and survives another reopen.
            b.put(b"k", b"four".to_vec(), Expect::Any)
                .await
                .expect("put");
        }
        let b = LogBackend::open(&store, LogOptions::default()).expect("reopen");
        let (kv, at) = b.get(b"k", None).await.expect("get");
        assert_eq!((kv.expect("k").value, at), (b"four".to_vec(), rev(5)));
        drop(b);
        // A flipped byte in the first record, with records after it: corruption, not a tail.
        let mut data = std::fs::read(&segment).expect("read");
        data[HEADER_LEN as usize + 12] ^= 0x55;
        std::fs::write(&segment, &data).expect("damage");
        match LogBackend::open(&store, LogOptions::default()) {
            Err(BackendError::Corrupt(why)) => {
                assert!(why.contains("unreadable record at offset 24"), "{why}")
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_second_open_of_the_directory_is_refused_as_locked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let b = LogBackend::open(dir.path(), LogOptions::default()).expect("open");
        let again = LogBackend::open(dir.path(), LogOptions::default()).expect_err("locked");
        assert!(again.is_locked(), "{again}");
        drop(b);
        LogBackend::open(dir.path(), LogOptions::default()).expect("open after close");
    }
}
