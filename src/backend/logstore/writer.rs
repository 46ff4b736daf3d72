//! The writer thread: takes every queued request as a batch, works out each outcome in order,
//! appends the batch as one record, makes it durable with one `fdatasync`, then publishes it in
//! the index, answers, and sends the events to watchers.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::format::{
    check_header, header, scan, segment_name, Framing, ReadRecord, RecordBuilder, END_LEN,
    HEADER_LEN, RECYCLED,
};
use super::index::{key_value, Change, Found, Loc};
use super::{LogOptions, Shared};
use crate::backend::files::{sync_path, zero_filled};
use crate::backend::{BackendError, Event, EventKind, Expect, KeyValue, Revision, WriteOutcome};

/// Most requests taken into one batch.
const MAX_BATCH: usize = 1024;
/// A batch stops taking requests once its record is this large.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// The first segment a store gets (or [`LogOptions::segment_bytes`] if smaller); each next one
/// is twice the last, up to [`LogOptions::segment_bytes`] (a record larger than that gets a
/// segment of its own size).
pub(super) const FIRST_SEGMENT_BYTES: u64 = 1 << 20;
/// A segment is relocated in chunks of about `segment_bytes / RELOCATION_CHUNKS`.
const RELOCATION_CHUNKS: u64 = 64;
const SPARE: &str = "spare";
pub(super) const SPARE_TMP: &str = "spare.tmp";
/// A cleaned segment waiting to be used again (see [`adopt_recycled`] for opening).
pub(super) const RECYCLED_NAME: &str = "recycled";

/// What a request asks.
pub(super) enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        expect: Expect,
    },
    Delete {
        key: Vec<u8>,
        expect: Expect,
    },
    Compact(Revision),
}

/// Where a request is answered.
type Reply = oneshot::Sender<Result<WriteOutcome, BackendError>>;

/// A request and where to answer it.
pub(super) struct Request {
    pub(super) op: Op,
    pub(super) reply: Reply,
}

/// A change planned into the batch being built.
struct Planned {
    key: Vec<u8>,
    /// A put's value and its offset from the record's start.
    value: Option<(Vec<u8>, usize)>,
    /// A put's create revision and version.
    meta: (i64, i64),
    /// What the key held before, read only for watchers' events.
    prev: Option<Before>,
    reply: oneshot::Sender<Result<WriteOutcome, BackendError>>,
}

/// A key's version before a change: one planned earlier in the batch, or one in the index
/// whose value has not been read (conditions need only its revisions).
enum Before {
    Planned(KeyValue),
    Indexed(Found),
}

impl Before {
    fn mod_revision(&self) -> Revision {
        match self {
            Before::Planned(kv) => kv.mod_revision,
            Before::Indexed(f) => Revision::new(f.version.rev).unwrap_or(Revision::FIRST),
        }
    }

    fn create_revision(&self) -> Option<Revision> {
        match self {
            Before::Planned(kv) => kv.create_revision,
            Before::Indexed(f) => Revision::new(f.version.create),
        }
    }

    fn version(&self) -> i64 {
        match self {
            Before::Planned(kv) => kv.version,
            Before::Indexed(f) => f.version.version,
        }
    }

    /// The key-value, its value read from its segment if it comes from the index.
    fn read(self) -> Result<KeyValue, BackendError> {
        match self {
            Before::Planned(kv) => Ok(kv),
            Before::Indexed(f) => f.read(),
        }
    }
}

/// The segment being appended to.
pub(super) struct Head {
    pub(super) seq: u32,
    pub(super) file: Arc<File>,
    /// Where the next record goes.
    pub(super) end: u64,
    /// The file's size (zero-filled up to it).
    pub(super) size: u64,
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) dir: PathBuf,
    pub(super) opts: LogOptions,
    pub(super) head: Head,
    pub(super) builder: RecordBuilder,
    /// The revision of the batch's first change.
    pub(super) first: i64,
    /// A zero-filled file being prepared for the next segment.
    pub(super) spare: Option<JoinHandle<Result<u64, BackendError>>>,
    /// The size of a cleaned segment waiting to be the next one, if one is.
    pub(super) recycled: Option<u64>,
    /// The segment being relocated, if one is.
    pub(super) cleaning: Option<Cleaning>,
    /// The thread reading the next segment to relocate, if one is.
    pub(super) preparing: Option<JoinHandle<Result<Cleaning, BackendError>>>,
    /// Held for as long as the writer runs: the store directory's lock.
    pub(super) _lock: File,
}

/// A segment being relocated, a chunk at a time.
pub(super) struct Cleaning {
    victim: u32,
    /// How the victim frames its records (a format-1 segment is not used again).
    framing: Framing,
    /// The last revision of the victim.
    through: i64,
    path: PathBuf,
    /// The victim's bytes.
    data: Vec<u8>,
    /// Every version the victim holds: key, revision, where its value is in `data`.
    versions: Vec<(Vec<u8>, i64, std::ops::Range<usize>)>,
    /// Every key the victim names.
    keys: BTreeSet<Vec<u8>>,
    /// The next version of `versions` to consider.
    next: usize,
    started: Instant,
}

/// Queued requests answered without being applied.
enum Held {
    Compact(
        Revision,
        oneshot::Sender<Result<WriteOutcome, BackendError>>,
    ),
}

impl Writer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter().take(MAX_BATCH - 1));
            let stats = &self.shared.stats;
            stats
                .batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            stats
                .requests
                .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
            stats.batch_size.observe(batch.len() as u64);
            self.process(batch);
        }
        if let Some(spare) = self.spare.take() {
            let _ = spare.join();
        }
        if let Some(preparing) = self.preparing.take() {
            let _ = preparing.join();
        }
        let mut events = self.shared.events.lock().unwrap_or_else(|e| e.into_inner());
        drop(events.take());
    }

    fn process(&mut self, batch: Vec<Request>) {
        let mut planned: Vec<Planned> = Vec::new();
        // Refused requests, answered with their batch: they may have been judged against its
        // changes, which are not durable before its sync.
        let mut refused: Vec<(Reply, WriteOutcome)> = Vec::new();
        let mut overlay: HashMap<Vec<u8>, Option<KeyValue>> = HashMap::new();
        for request in batch {
            if let Err(e) = self.shared.check_failed() {
                let _ = request.reply.send(Err(e));
                continue;
            }
            let (key, value, expect) = match request.op {
                Op::Compact(rev) => {
                    self.commit(std::mem::take(&mut planned), std::mem::take(&mut refused));
                    overlay.clear();
                    self.compact(Held::Compact(rev, request.reply));
                    continue;
                }
                Op::Put { key, value, expect } => (key, Some(value), expect),
                Op::Delete { key, expect } => (key, None, expect),
            };
            if planned.is_empty() {
                self.begin_batch();
            }
            refused.extend(self.plan(
                &mut planned,
                &mut overlay,
                key,
                value,
                expect,
                request.reply,
            ));
            if self.builder.len() >= MAX_BATCH_BYTES && !planned.is_empty() {
                self.commit(std::mem::take(&mut planned), std::mem::take(&mut refused));
                overlay.clear();
            }
        }
        self.commit(planned, refused);
        self.clean();
    }

    fn begin_batch(&mut self) {
        self.first = self.shared.index().current + 1;
        self.builder.begin_batch(self.first);
    }

    /// Works out one put or delete against the index and the batch so far; an applied change
    /// is added to the record, a refused one is returned with its answer.
    fn plan(
        &mut self,
        planned: &mut Vec<Planned>,
        overlay: &mut HashMap<Vec<u8>, Option<KeyValue>>,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        expect: Expect,
        reply: Reply,
    ) -> Option<(Reply, WriteOutcome)> {
        let current = match overlay.get(&key) {
            Some(kv) => Ok(kv.clone().map(Before::Planned)),
            None => self
                .shared
                .current_found(&key)
                .map(|f| f.map(Before::Indexed)),
        };
        let current = match current {
            Ok(current) => current,
            Err(e) => {
                let _ = reply.send(Err(e));
                return None;
            }
        };
        let holds = match expect {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::ModRevision(r) => current.as_ref().is_some_and(|b| b.mod_revision() == r),
        };
        if !holds {
            return match current.map(Before::read).transpose() {
                Ok(current) => Some((reply, WriteOutcome::Conflict { current })),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    None
                }
            };
        }
        if value.is_none() && current.is_none() {
            return Some((reply, WriteOutcome::NotFound));
        }
        let rev = self.first + i64::from(self.builder.count());
        let create = current
            .as_ref()
            .and_then(Before::create_revision)
            .map_or(rev, Revision::get);
        let version = current.as_ref().map_or(1, |c| c.version() + 1);
        let value = value.map(|v| {
            let at = self.builder.put(&key, create, version, &v);
            (v, at)
        });
        if value.is_none() {
            self.builder.delete(&key);
        }
        let after = value.as_ref().map(|(v, _)| KeyValue {
            key: key.clone(),
            value: v.clone(),
            create_revision: Revision::new(create),
            mod_revision: Revision::new(rev).unwrap_or(Revision::MAX),
            version,
        });
        overlay.insert(key.clone(), after);
        planned.push(Planned {
            key,
            value,
            meta: (create, version),
            prev: current,
            reply,
        });
        None
    }

    /// Appends the planned batch, syncs it, publishes it and answers, the refused requests
    /// last (with the batch's error if it failed).
    fn commit(&mut self, planned: Vec<Planned>, refused: Vec<(Reply, WriteOutcome)>) {
        if planned.is_empty() {
            for (reply, outcome) in refused {
                let _ = reply.send(Ok(outcome));
            }
            return;
        }
        // Watchers get each change's previous value: read before anything is written, so that
        // a failed read fails the batch as a failed write does.
        let watched = self.shared.watched();
        let mut prevs = Vec::with_capacity(if watched { planned.len() } else { 0 });
        let mut planned = planned;
        let read = if watched {
            planned.iter_mut().try_for_each(|p| {
                prevs.push(p.prev.take().map(Before::read).transpose()?);
                Ok(())
            })
        } else {
            Ok(())
        };
        let record_len = self.builder.len() as u64;
        let result = read
            .and_then(|()| self.make_room(record_len))
            .and_then(|()| {
                let record = self.builder.finish_batch(self.head.seq);
                append(&self.head, record.with_end())
            })
            .and_then(|()| self.sync());
        if let Err(e) = result {
            self.shared.fail(&e);
            let replies = planned.into_iter().map(|p| p.reply);
            for reply in replies.chain(refused.into_iter().map(|(reply, _)| reply)) {
                let _ = reply.send(Err(super::failed_write(&e.to_string())));
            }
            return;
        }
        let base = self.head.end;
        self.head.end += record_len;
        let seg = self.head.seq;
        let mut events = Vec::with_capacity(prevs.len());
        let mut prevs = prevs.into_iter();
        let mut answers = Vec::with_capacity(planned.len());
        {
            let mut index = self.shared.write_guard();
            for p in planned {
                let change = match &p.value {
                    Some((v, at)) => Change::Put {
                        loc: Loc {
                            seg,
                            len: u32::try_from(v.len()).unwrap_or(u32::MAX),
                            offset: base + *at as u64,
                        },
                        create: p.meta.0,
                        version: p.meta.1,
                    },
                    None => Change::Delete,
                };
                let (version, _) = index.apply(&p.key, change);
                let revision = Revision::new(version.rev).unwrap_or(Revision::MAX);
                if watched {
                    let kind = if p.value.is_some() {
                        EventKind::Put
                    } else {
                        EventKind::Delete
                    };
                    let value = p.value.map(|(v, _)| v).unwrap_or_default();
                    events.push(Event {
                        kind,
                        kv: key_value(p.key, &version, value),
                        prev: prevs.next().flatten(),
                    });
                }
                answers.push((p.reply, revision));
            }
            index.note_end(seg);
            if watched {
                self.shared.send_events(events);
            } else if self.shared.watched() {
                // A watch began after `watched` was read: it may have read the revision before
                // this batch, and this batch's events were not made. An empty batch tells it to
                // catch up from the log (which holds this batch once the guard is released).
                self.shared.send_events(Vec::new());
            }
        }
        for (reply, revision) in answers {
            let _ = reply.send(Ok(WriteOutcome::Applied { revision }));
        }
        for (reply, outcome) in refused {
            let _ = reply.send(Ok(outcome));
        }
    }

    /// A compaction: checked against the current revision, logged, synced, then applied.
    fn compact(&mut self, held: Held) {
        let Held::Compact(rev, reply) = held;
        let (current, compacted) = {
            let index = self.shared.index();
            (index.current, index.compacted)
        };
        if rev.get() > current {
            let _ = reply.send(Err(BackendError::FutureRevision {
                requested: rev,
                current: Revision::new(current).unwrap_or(Revision::FIRST),
            }));
            return;
        }
        if rev.get() <= compacted {
            let _ = reply.send(Ok(WriteOutcome::NotFound));
            return;
        }
        self.builder.compaction(rev.get());
        let len = self.builder.len() as u64;
        let result = self
            .make_room(len)
            .and_then(|()| {
                let record = self.builder.finish_compaction(self.head.seq);
                append(&self.head, record.with_end())
            })
            .and_then(|()| self.sync());
        match result {
            Ok(()) => {
                self.head.end += len;
                self.shared.write_guard().compact(rev.get());
                let _ = reply.send(Ok(WriteOutcome::NotFound));
            }
            Err(e) => {
                self.shared.fail(&e);
                let _ = reply.send(Err(e));
            }
        }
    }

    fn sync(&self) -> Result<(), BackendError> {
        let started = Instant::now();
        self.head
            .file
            .sync_data()
            .map_err(|e| io_error("fdatasync the log", &e))?;
        let stats = &self.shared.stats;
        stats
            .sync_nanos
            .observe(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        stats
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The cleaner, between batches: if the segments take too much room for what the index
    /// keeps (see [`super::index::Index::cleaning_victim`]), has a thread read the oldest one
    /// and list its versions; once that is done, relocates one chunk of it per call, so that
    /// the writes queued meanwhile wait for one chunk at most. A failure fails the store like a
    /// failed write.
    fn clean(&mut self) {
        if self.shared.check_failed().is_err() {
            return;
        }
        let cleaning = match self.cleaning.take() {
            Some(cleaning) => Ok(cleaning),
            None => match self.preparing.take() {
                Some(handle) if handle.is_finished() => handle.join().unwrap_or_else(|_| {
                    Err(BackendError::Io(
                        "the cleaner's reader thread panicked".into(),
                    ))
                }),
                Some(handle) => {
                    self.preparing = Some(handle);
                    return;
                }
                None => {
                    let index = self.shared.index();
                    let Some(victim) =
                        index.cleaning_victim(self.head.seq, self.opts.clean_above_bytes)
                    else {
                        return;
                    };
                    let (dir, through) = (self.dir.clone(), index.last_rev(victim));
                    drop(index);
                    self.preparing = Some(std::thread::spawn(move || {
                        start_cleaning(&dir, victim, through)
                    }));
                    return;
                }
            },
        };
        let victim = cleaning.as_ref().map_or(0, |c| c.victim);
        let result = cleaning.and_then(|c| self.relocate_chunk(c));
        match result {
            Ok(more) => self.cleaning = more,
            Err(e) => {
                tracing::error!(segment = victim, error = %e, "the log's cleaner failed");
                self.shared.fail(&e);
            }
        }
    }

    /// Writes the next chunk of the versions the index keeps from the victim again, as one
    /// relocation record at the head, syncs it and points the index at the new copies. The
    /// last chunk also names every key of the victim with the revision below which its
    /// versions are gone, and says `complete`; the victim is then deleted (opening finishes the
    /// deletion if a crash comes between). Returns the cleaning if chunks are left.
    fn relocate_chunk(&mut self, mut c: Cleaning) -> Result<Option<Cleaning>, BackendError> {
        let limit = (self.opts.segment_bytes / RELOCATION_CHUNKS).max(64) as usize;
        // (key, revision, the value's offset in the record, its length)
        let mut moved: Vec<(Vec<u8>, i64, usize, u32)> = Vec::new();
        let complete = {
            let index = self.shared.index();
            self.builder
                .begin_relocation(c.victim, c.through, index.compacted);
            while c.next < c.versions.len() && self.builder.len() < limit {
                let (key, rev, value) = &c.versions[c.next];
                c.next += 1;
                let Some((floor, v)) = index.kept(key, *rev) else {
                    continue;
                };
                if v.is_tombstone() || v.loc.seg == c.victim {
                    let value = c.data.get(value.clone()).unwrap_or_default();
                    let at = self.builder.moved(key, floor, v.meta(), value);
                    moved.push((key.clone(), *rev, at, v.loc.len));
                }
            }
            let complete = c.next == c.versions.len();
            if complete {
                for key in &c.keys {
                    self.builder.gone(key, index.gone_below(key, c.through));
                }
            }
            complete
        };
        let len = self.builder.len() as u64;
        self.make_room(len)?;
        let record = self.builder.finish_relocation(complete, self.head.seq);
        append(&self.head, record.with_end())?;
        self.sync()?;
        let (base, seg) = (self.head.end, self.head.seq);
        self.head.end += len;
        let victim_file = {
            let mut index = self.shared.write_guard();
            for (key, rev, at, len) in &moved {
                let loc = Loc {
                    seg,
                    len: *len,
                    offset: base + *at as u64,
                };
                index.relocated(key, *rev, loc);
            }
            complete.then(|| index.remove_file(c.victim)).flatten()
        };
        if !complete {
            return Ok(Some(c));
        }
        // Used again only if no reader still holds the file (none can take it any more): a
        // read of an old version that started before the relocation must find its bytes.
        let sole = victim_file.and_then(|f| Arc::try_unwrap(f).ok());
        let reuse = self.recycled.is_none()
            && c.data.len() as u64 == self.opts.segment_bytes
            && matches!(c.framing, Framing::V2 { .. });
        match sole {
            Some(file) if reuse => self.recycled = Some(recycle(&self.dir, &c.path, &file)?),
            _ => {
                std::fs::remove_file(&c.path).map_err(|e| {
                    BackendError::Io(format!("cannot delete {}: {e}", c.path.display()))
                })?;
                sync_path(&self.dir)?;
            }
        }
        tracing::debug!(
            segment = c.victim,
            versions = c.versions.len(),
            millis = c.started.elapsed().as_millis() as u64,
            "relocated a log segment"
        );
        Ok(None)
    }

    /// Starts a new segment if a record of `len` bytes (and the zero length after it) does not
    /// fit in the rest of this one; has the next one prepared once this one is half full.
    fn make_room(&mut self, len: u64) -> Result<(), BackendError> {
        let len = len + END_LEN;
        if self.head.end + len <= self.head.size {
            if self.spare.is_none() && self.recycled.is_none() && self.head.end * 2 > self.head.size
            {
                let (dir, next) = (self.dir.clone(), self.next_size(self.head.size));
                self.spare = Some(std::thread::spawn(move || prepare_spare(&dir, next)));
            }
            return Ok(());
        }
        let seq = self
            .head
            .seq
            .checked_add(1)
            .ok_or_else(|| BackendError::Corrupt("segment numbers exhausted".to_string()))?;
        let size = self.next_size(self.head.size).max(HEADER_LEN + len);
        let path = self.dir.join(segment_name(seq));
        let (file, from) = match self.recycled {
            Some(recycled) if recycled >= size => {
                self.recycled = None;
                std::fs::rename(self.dir.join(RECYCLED_NAME), &path)
                    .map_err(|e| io_error("rename a cleaned segment", &e))?;
                (open_rw(&path)?, "a cleaned segment")
            }
            _ => {
                let spare = self.spare.take().map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(BackendError::Io("the spare segment thread panicked".into()))
                    })
                });
                match spare {
                    Some(Ok(spare_size)) if spare_size >= size => {
                        std::fs::rename(self.dir.join(SPARE), &path)
                            .map_err(|e| io_error("rename the spare segment", &e))?;
                        (open_rw(&path)?, "the spare")
                    }
                    _ => (zero_filled(&path, size)?, "zeros written now"),
                }
            }
        };
        tracing::debug!(segment = seq, from, "started a log segment");
        let size = file
            .metadata()
            .map_err(|e| io_error("stat a new segment", &e))?
            .len();
        start_segment(&file, seq)?;
        file.sync_data()
            .map_err(|e| io_error("fdatasync a new segment", &e))?;
        sync_path(&self.dir)?;
        mark_newest(&self.dir, seq)?;
        let file = Arc::new(file);
        self.shared.write_guard().add_file(seq, file.clone(), size);
        self.head = Head {
            seq,
            file,
            end: HEADER_LEN,
            size,
        };
        if size < self.opts.segment_bytes && self.spare.is_none() {
            // Segments still growing: the next one is larger, and prepared at once.
            let (dir, next) = (self.dir.clone(), self.next_size(size));
            self.spare = Some(std::thread::spawn(move || prepare_spare(&dir, next)));
        }
        Ok(())
    }

    /// The size of the segment after one of `size` bytes.
    fn next_size(&self, size: u64) -> u64 {
        (size * 2).min(self.opts.segment_bytes)
    }
}

/// Writes segment `seq`'s header and the zero length after it (a segment used again holds old
/// records there).
pub(super) fn start_segment(file: &File, seq: u32) -> Result<(), BackendError> {
    let mut start = header(seq).to_vec();
    start.extend_from_slice(&[0; END_LEN as usize]);
    file.write_all_at(&start, 0)
        .map_err(|e| io_error("write a segment header", &e))
}

/// The file naming the newest segment whose start is durable (its number in decimal). Opening
/// refuses a store whose newest segment is missing or no longer started: a file deleted or cut
/// short while the store was stopped, whose changes would otherwise be lost silently and their
/// revisions given again. Written only after the segment's header is synced (so it never names
/// a segment a crash could have left unstarted), and only when a segment starts, not per write.
pub(super) const NEWEST_NAME: &str = "NEWEST_SEGMENT";
const NEWEST_TMP: &str = "NEWEST_SEGMENT.tmp";

/// Records that segment `seq` is started (see [`NEWEST_NAME`]): a file written, synced and
/// renamed over the last one, so a crash leaves the old number or the new one.
pub(super) fn mark_newest(dir: &Path, seq: u32) -> Result<(), BackendError> {
    let tmp = dir.join(NEWEST_TMP);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io_error("create the newest segment's mark", &e))?;
    std::io::Write::write_all(&mut file, format!("{seq}\n").as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error("write the newest segment's mark", &e))?;
    std::fs::rename(&tmp, dir.join(NEWEST_NAME))
        .map_err(|e| io_error("rename the newest segment's mark", &e))?;
    sync_path(dir)
}

/// The segment [`mark_newest`] last recorded in `dir`, if any (stores written before the mark
/// existed have none until their next segment starts).
pub(super) fn newest_marked(dir: &Path) -> Result<Option<u32>, BackendError> {
    let path = dir.join(NEWEST_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(BackendError::Io(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    text.trim_end_matches('\n')
        .parse::<u32>()
        .ok()
        .filter(|seq| *seq > 0)
        .map(Some)
        .ok_or_else(|| {
            BackendError::Corrupt(format!(
                "{}: {:?} is not a segment number (a decimal number from 1)",
                path.display(),
                text.chars().take(40).collect::<String>()
            ))
        })
}

/// Writes a record and the zero length after it at the head's end.
fn append(head: &Head, bytes: &[u8]) -> Result<(), BackendError> {
    head.file
        .write_all_at(bytes, head.end)
        .map_err(|e| io_error("append to the log", &e))
}

/// Keeps the cleaned segment at `path` (open as `file`) to be used again: renamed (so that
/// opening no longer reads it), then given the [`RECYCLED`] header (so that, renamed to a new
/// segment's name, it counts as not started until its own header is written). Returns its
/// size.
fn recycle(dir: &Path, path: &Path, file: &File) -> Result<u64, BackendError> {
    std::fs::rename(path, dir.join(RECYCLED_NAME))
        .map_err(|e| io_error("rename a cleaned segment", &e))?;
    file.write_all_at(&RECYCLED, 0)
        .map_err(|e| io_error("mark a cleaned segment", &e))?;
    file.sync_data()
        .map_err(|e| io_error("fdatasync a cleaned segment", &e))?;
    sync_path(dir)?;
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| io_error("stat a cleaned segment", &e))
}

/// On opening: a cleaned segment kept to be used again (perhaps not yet marked as such when a
/// crash came) is marked again and kept if it has the size of a full segment, else deleted.
/// Returns its size if kept.
pub(super) fn adopt_recycled(dir: &Path, segment_bytes: u64) -> Result<Option<u64>, BackendError> {
    let path = dir.join(RECYCLED_NAME);
    let file = match open_rw(&path) {
        Ok(file) => file,
        Err(_) if !path.exists() => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file
        .metadata()
        .map_err(|e| io_error("stat a cleaned segment", &e))?
        .len();
    if size != segment_bytes {
        drop(file);
        std::fs::remove_file(&path).map_err(|e| io_error("delete a cleaned segment", &e))?;
        return Ok(None);
    }
    file.write_all_at(&RECYCLED, 0)
        .map_err(|e| io_error("mark a cleaned segment", &e))?;
    file.sync_data()
        .map_err(|e| io_error("fdatasync a cleaned segment", &e))?;
    Ok(Some(size))
}

/// Reads segment `victim` (the revisions up to `through`) and lists every version it holds:
/// the cleaner's preparation, on a thread of its own.
fn start_cleaning(dir: &Path, victim: u32, through: i64) -> Result<Cleaning, BackendError> {
    let path = dir.join(segment_name(victim));
    let data = std::fs::read(&path)
        .map_err(|e| BackendError::Io(format!("cannot read {}: {e}", path.display())))?;
    let framing = check_header(&data, victim, &path)?;
    let mut versions = Vec::new();
    let mut keys = BTreeSet::new();
    let scanned = scan(&data, framing);
    let value_range = |value: Option<(u64, u32)>| {
        value.map_or(0..0, |(offset, len)| {
            offset as usize..offset as usize + len as usize
        })
    };
    for (_, record) in &scanned.records {
        match record {
            ReadRecord::Batch { first, changes } => {
                for (i, c) in changes.iter().enumerate() {
                    keys.insert(c.key.to_vec());
                    versions.push((c.key.to_vec(), first + i as i64, value_range(c.value)));
                }
            }
            ReadRecord::Relocation { moved, gone, .. } => {
                for m in moved {
                    keys.insert(m.key.to_vec());
                    versions.push((m.key.to_vec(), m.meta.rev, value_range(Some(m.value))));
                }
                keys.extend(gone.iter().map(|(key, _)| key.to_vec()));
            }
            ReadRecord::Compaction(_) => {}
        }
    }
    drop(scanned);
    Ok(Cleaning {
        victim,
        framing,
        through,
        path,
        data,
        versions,
        keys,
        next: 0,
        started: Instant::now(),
    })
}

pub(super) fn io_error(what: &str, e: &std::io::Error) -> BackendError {
    BackendError::Io(format!("cannot {what}: {e}"))
}

pub(super) fn open_rw(path: &Path) -> Result<File, BackendError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| BackendError::Io(format!("cannot open {}: {e}", path.display())))
}

/// Prepares `spare`, a zero-filled file of `size` bytes the next segment is renamed from.
fn prepare_spare(dir: &Path, size: u64) -> Result<u64, BackendError> {
    let tmp = dir.join(SPARE_TMP);
    drop(zero_filled(&tmp, size)?);
    std::fs::rename(&tmp, dir.join(SPARE)).map_err(|e| io_error("rename the spare segment", &e))?;
    sync_path(dir)?;
    Ok(size)
}
