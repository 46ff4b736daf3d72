//! The writer thread: it takes every queued request as one batch, works out the batch's
//! outcomes against the applied state, appends the batch's changes to the write-ahead log as one
//! record, applies the batch to the active layer in memory (`layers.rs`) and hands the record
//! to the sync thread; once the record is synced it takes the next batch. A full active layer
//! is frozen and handed to the checkpoint thread, which writes it to sled (`layers.rs`).
//! The sync thread (`sync.rs`) publishes a batch and answers its requests once its record is
//! durable.
//!
//! Planning and applying are also how the log is replayed on open ([`Applier::replay`]): a
//! record holds the batch's applied changes, and re-running them from the state before the batch
//! gives the same revisions, records and history, so replay is idempotent by revision.

use std::collections::{BTreeSet, HashMap};
use std::sync::{mpsc, Arc};

use ::sled::IVec;
use tokio::sync::oneshot;

use super::codec::{encode_event_ref, encode_record, rev_bytes};
use super::layers::{TreeId, Writes, MAX_FROZEN};
use super::retention::{leaving_between, prune_log};
use super::sync::{Checkpoint, CheckpointJob, Checkpointer, Durable, SyncJob, Syncer};
use super::wal::{LoggedBatch, RecordBuilder, Segment, WalDir, HEADER_LEN, SEGMENT_BYTES};
use super::{revision_overflow, Inflight, Shared, META_COMPACTED, META_CURRENT};
use crate::backend::{
    check_key, BackendError, Event, EventKind, Expect, KeyValue, Revision, WriteOutcome,
};

/// Most requests the writer applies in one batch (one log record, one `fdatasync`).
const MAX_BATCH_REQUESTS: usize = 1024;
/// A batch stops growing once its values add up to this many bytes.
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Size of the first segment after open; each rotation doubles it up to [`SEGMENT_BYTES`], so
/// that a store that is written little keeps a small log.
const FIRST_SEGMENT_BYTES: u64 = 1 << 20;

/// What a write request does to its key.
pub(super) enum WriteOp {
    Put(Vec<u8>),
    Delete,
}

/// A put or delete, with where to send its outcome.
pub(super) struct WriteRequest {
    pub(super) key: Vec<u8>,
    pub(super) op: WriteOp,
    pub(super) expect: Expect,
    pub(super) reply: oneshot::Sender<Result<WriteOutcome, BackendError>>,
}

/// A message to the writer thread.
pub(super) enum Request {
    Write(WriteRequest),
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
}

/// One applied change of a batch.
pub(super) struct Change {
    pub(super) key: Vec<u8>,
    pub(super) revision: Revision,
    /// Encoded record, or None for a delete.
    pub(super) record: Option<IVec>,
    /// The version this change replaced (its revision and encoded record), if the key existed:
    /// it leaves `kv` and goes to `history`, which holds every retained version but the
    /// current one.
    pub(super) replaced: Option<(Revision, IVec)>,
    /// The version replaced was the first of the key's current incarnation, created before the
    /// log's window: the key has no other retained history (an earlier incarnation's history
    /// went when its delete left the window), so it need not be read.
    pub(super) replaced_only_version: bool,
}

/// A batch worked out against the applied state, ready to log and apply.
pub(super) struct Planned {
    pub(super) outcomes: Vec<Result<WriteOutcome, BackendError>>,
    pub(super) events: Vec<Event>,
    /// The revision before the batch.
    pub(super) start: Revision,
    /// The revision of the last change (the applied revision if nothing changed).
    pub(super) revision: Revision,
    pub(super) compacted: Revision,
    kv: Writes,
    log: Writes,
    history: Writes,
    meta: Writes,
    keys: BTreeSet<Vec<u8>>,
}

impl Planned {
    /// Whether the batch changes anything (conflicts and no-ops do not).
    pub(super) fn changes_anything(&self) -> bool {
        !self.events.is_empty()
    }
}

/// At most this many log entries leaving the window are removed through a batch's layer
/// writes; a larger jump of the compacted revision (a lowered log retention) is left to
/// [`prune_log`](super::retention::prune_log) on the sync thread.
pub(super) const MAX_LOG_REMOVALS: i64 = 4096;

/// Whether the log entries from `from` to below `to` are removed through the batch's layer
/// writes (else the sync thread prunes them in sled).
pub(super) fn log_removals_in_layer(from: Revision, to: Revision) -> bool {
    to > from && to.get() - from.get() <= MAX_LOG_REMOVALS
}

/// The revision and compacted revision of what has been applied (to the layers above sled;
/// ahead of what is durable while a record is being synced).
#[derive(Debug, Clone, Copy)]
pub(super) struct Applier {
    pub(super) revision: Revision,
    pub(super) compacted: Revision,
}

impl Applier {
    /// Works out a batch's outcomes, records, events and the changes to every tree, against the
    /// applied state.
    pub(super) fn plan(
        &self,
        shared: &Shared,
        requests: Vec<(Vec<u8>, WriteOp, Expect)>,
    ) -> Result<Planned, BackendError> {
        let (start, base_compacted) = (self.revision, self.compacted);
        let mut revision = start;
        let mut overlay: HashMap<Vec<u8>, Option<KeyValue>> = HashMap::new();
        let mut kv_batch = Writes::new();
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
                    let current = shared.with_layers(|layers| shared.get_current(layers, &key))?;
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
                    revision = revision.next().ok_or_else(revision_overflow)?;
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision: match &current {
                            Some(kv) => kv.create_revision,
                            None => Some(revision),
                        },
                        mod_revision: revision,
                        version: match &current {
                            Some(kv) => kv.version.checked_add(1).ok_or_else(|| {
                                BackendError::Corrupt("version counter overflow".to_string())
                            })?,
                            None => 1,
                        },
                    };
                    let record = IVec::from(encode_record(&kv));
                    kv_batch.push((key.as_slice().into(), Some(record.clone())));
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
                    revision = revision.next().ok_or_else(revision_overflow)?;
                    kv_batch.push((key.as_slice().into(), None));
                    overlay.insert(key.clone(), None);
                    let event = Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: key.clone(),
                            value: Vec::new(),
                            create_revision: None,
                            mod_revision: revision,
                            version: 0,
                        },
                        prev: current.clone(),
                    };
                    (event, None)
                }
            };
            let replaced = current
                .as_ref()
                .map(|kv| (kv.mod_revision, IVec::from(encode_record(kv))));
            let replaced_only_version = current.as_ref().is_some_and(|kv| {
                kv.version == 1 && kv.create_revision.is_some_and(|c| c < base_compacted)
            });
            changes.push(Change {
                key,
                revision,
                record,
                replaced,
                replaced_only_version,
            });
            events.push(event);
            outcomes.push(Ok(WriteOutcome::Applied { revision }));
        }

        // The log keeps the last `log_retention` revisions: the oldest kept is the compacted one.
        // Each change's history is pruned at the compacted revision that follows it, as if the
        // batch's changes were applied one at a time (a key's floor depends on it).
        let retention = i64::try_from(shared.opts.log_retention).unwrap_or(0);
        let compacted_after = |rev: Revision| match Revision::new(rev.get() - retention + 1) {
            Some(oldest_kept) if retention > 0 => base_compacted.max(oldest_kept),
            _ => base_compacted,
        };
        let compacted = if revision > start {
            compacted_after(revision)
        } else {
            base_compacted
        };
        let mut history_batch = Writes::new();
        let mut log_batch = Writes::new();
        let mut meta_batch = Writes::new();
        if revision > start {
            let left_window = shared
                .with_layers(|layers| leaving_between(shared, layers, base_compacted, compacted))?;
            let below_floor;
            (history_batch, below_floor) =
                shared.history_changes(&changes, &left_window, compacted, compacted_after)?;
            // Log events carry no values (they are in `kv` and `history`); each says whether
            // its key's history kept versions below its floor for the log after it.
            for event in &events {
                let revision = event.kv.mod_revision;
                let prev = event.prev.as_ref().map(|p| p.mod_revision);
                log_batch.push((
                    rev_bytes(revision).as_slice().into(),
                    Some(
                        encode_event_ref(
                            event.kind,
                            &event.kv.key,
                            prev,
                            below_floor.contains(&revision),
                        )
                        .into(),
                    ),
                ));
            }
            // Log entries that leave the window are removed through the layer, with the
            // batch's other writes, rather than one by one in sled by the sync thread.
            if log_removals_in_layer(base_compacted, compacted) {
                for rev in base_compacted.get()..compacted.get() {
                    let rev = Revision::new(rev).ok_or_else(revision_overflow)?;
                    log_batch.push((rev_bytes(rev).as_slice().into(), None));
                }
            }
            meta_batch.push((
                META_CURRENT.into(),
                Some(rev_bytes(revision).as_slice().into()),
            ));
            if compacted != base_compacted {
                meta_batch.push((
                    META_COMPACTED.into(),
                    Some(rev_bytes(compacted).as_slice().into()),
                ));
            }
        }
        Ok(Planned {
            outcomes,
            events,
            start,
            revision,
            compacted,
            kv: kv_batch,
            log: log_batch,
            history: history_batch,
            meta: meta_batch,
            keys: changes.into_iter().map(|c| c.key).collect(),
        })
    }

    /// Applies a planned batch to the active layer. With `inflight`, its keys are published as
    /// in flight under the same lock, so that no reader sees them before the batch is durable.
    /// Returns whether the active layer is now full (to be frozen and written to sled).
    pub(super) fn apply(&mut self, shared: &Shared, planned: &mut Planned, inflight: bool) -> bool {
        let mut guard = shared.write_guard();
        // Watch replay, which reads versions from `history` under this lock, knows from this
        // that versions below it may be gone.
        shared.history_pruned_to.fetch_max(planned.compacted);
        let active = &mut guard.layers.active;
        active.set_compacted(planned.compacted);
        active.extend(TreeId::Kv, std::mem::take(&mut planned.kv));
        active.extend(TreeId::Log, std::mem::take(&mut planned.log));
        active.extend(TreeId::History, std::mem::take(&mut planned.history));
        active.extend(TreeId::Meta, std::mem::take(&mut planned.meta));
        if inflight {
            guard.inflight.push(Arc::new(Inflight {
                revision: planned.revision,
                keys: std::mem::take(&mut planned.keys),
            }));
        }
        self.revision = planned.revision;
        self.compacted = planned.compacted;
        guard.layers.active.bytes() >= shared.opts.layer_bytes
    }

    /// Replays one logged batch on open: skipped if sled already holds it, applied if it is the
    /// next one, an error if it leaves a gap or does not give the revisions it was logged with.
    pub(super) fn replay(
        &mut self,
        shared: &Shared,
        batch: LoggedBatch,
    ) -> Result<(), BackendError> {
        let last = batch.last();
        if last <= self.revision {
            return Ok(());
        }
        if Some(batch.first) != self.revision.next() {
            return Err(BackendError::Corrupt(format!(
                "record of revisions {}..={last} does not follow the store's revision {}",
                batch.first, self.revision
            )));
        }
        let requests = batch
            .changes
            .into_iter()
            .map(|(key, value)| {
                let op = value.map_or(WriteOp::Delete, WriteOp::Put);
                (key, op, Expect::Any)
            })
            .collect();
        let mut planned = self.plan(shared, requests)?;
        let all_applied = planned
            .outcomes
            .iter()
            .all(|o| matches!(o, Ok(WriteOutcome::Applied { .. })));
        if !all_applied || planned.revision != last {
            return Err(BackendError::Corrupt(format!(
                "record of revisions {}..={last} does not replay onto the store's revision {}",
                batch.first, self.revision
            )));
        }
        if self.apply(shared, &mut planned, false) {
            shared.write_layers_now()?;
        }
        Ok(())
    }
}

/// The writer thread's state; [`Writer::run`] consumes it.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) rx: mpsc::Receiver<Request>,
    pub(super) applier: Applier,
    pub(super) wal: Arc<WalDir>,
    /// The segment being appended to; none until the first write after open.
    pub(super) segment: Option<Segment>,
    /// Size of the next segment to start.
    pub(super) next_segment_bytes: u64,
    pub(super) record: RecordBuilder,
    /// Records appended since open.
    pub(super) appended: u64,
    pub(super) syncer: Syncer,
    pub(super) checkpointer: Checkpointer,
    /// Layers frozen and handed to the checkpoint thread since open.
    pub(super) layers_sent: u64,
}

impl Writer {
    /// A writer for a store whose log is empty (replayed and checkpointed on open).
    pub(super) fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Request>,
        applier: Applier,
        wal: Arc<WalDir>,
        events: tokio::sync::broadcast::Sender<Arc<Vec<Event>>>,
    ) -> Result<Writer, BackendError> {
        let syncer = Syncer::start_syncer(Arc::clone(&shared), events)?;
        let checkpointer = Checkpointer::start_checkpointer(Arc::clone(&shared), Arc::clone(&wal))?;
        Ok(Writer {
            shared,
            rx,
            applier,
            wal,
            segment: None,
            next_segment_bytes: FIRST_SEGMENT_BYTES,
            record: RecordBuilder::default(),
            appended: 0,
            syncer,
            checkpointer,
            layers_sent: 0,
        })
    }

    pub(super) fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            // The previous record must be synced before the next is appended anyway; waiting
            // for it here, before the batch is taken, lets the requests that arrive during the
            // sync join this batch: fewer, larger batches cost less. (A failed write path is
            // reported when the batch is committed.)
            let _ = self.shared.wait_synced(self.appended);
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
        // The channel is closed and drained: let the sync thread answer the last batches, write
        // the last layer to sled, then checkpoint once more so that a closed store has an empty
        // log.
        self.freeze_layer();
        self.syncer.stop();
        self.checkpointer.stop();
        if self.shared.check_failed().is_ok() {
            // Log entries the last layers held below the compacted revision, left behind by
            // pruning that ran before they reached sled.
            let closed = prune_log(&self.shared.log, self.shared.compacted.load())
                .and_then(|()| self.shared.make_durable())
                .and_then(|()| self.wal.remove_all())
                .and_then(|()| self.wal.remove_spare());
            if let Err(error) = closed {
                // Everything acknowledged is in the log, which the next open replays.
                tracing::warn!(%error, "final checkpoint of the sled backend failed");
            }
        }
    }

    fn handle(&mut self, batch: Vec<Request>) {
        let mut writes = Vec::new();
        for request in batch {
            match request {
                Request::Write(write) => writes.push(write),
                Request::Compact { revision, reply } => {
                    self.commit(std::mem::take(&mut writes));
                    // Compaction works on durable state in sled: wait for every batch before it
                    // to be published and written to sled.
                    self.shared.wait_published(self.applier.revision);
                    self.freeze_layer();
                    self.shared.wait_layers_written(self.layers_sent);
                    let result = self.compact(revision);
                    // Compaction removed history entries behind the writer's cache.
                    self.shared.history_cache().clear();
                    self.applier.compacted =
                        self.applier.compacted.max(self.shared.compacted.load());
                    let _ = reply.send(result);
                }
            }
        }
        self.commit(writes);
    }

    /// Marks the backend failed: after an I/O error in the write path nothing is trusted.
    pub(super) fn fail(&self, error: &BackendError) {
        self.shared.fail(error);
    }

    /// Freezes the active layer, if it holds anything, and hands it to the checkpoint thread to
    /// write to sled.
    fn freeze_layer(&mut self) {
        let frozen = self.shared.write_guard().layers.freeze();
        if let Some(layer) = frozen {
            self.checkpointer.send(CheckpointJob::Write(layer));
            self.layers_sent += 1;
        }
    }

    /// Plans a batch, logs it as one record, applies it to the active layer and hands it to
    /// the sync thread; freezes the active layer once it is full.
    fn commit(&mut self, writes: Vec<WriteRequest>) {
        if writes.is_empty() {
            return;
        }
        let mut replies = Vec::with_capacity(writes.len());
        let mut requests = Vec::with_capacity(writes.len());
        for write in writes {
            replies.push(write.reply);
            requests.push((write.key, write.op, write.expect));
        }
        let mut planned = match self
            .shared
            .check_failed()
            .and_then(|()| self.applier.plan(&self.shared, requests))
        {
            Ok(planned) => planned,
            Err(e) => {
                self.syncer.send(SyncJob::failed(replies, &e));
                return;
            }
        };
        if !planned.changes_anything() {
            // Conflicts and no-ops: answered once every earlier batch is durable (they may
            // show its values).
            self.syncer.send(SyncJob::answer(
                replies,
                std::mem::take(&mut planned.outcomes),
            ));
            return;
        }
        let first = planned.start.next().unwrap_or(Revision::MAX);
        self.record.begin(first);
        for event in &planned.events {
            match event.kind {
                EventKind::Put => self.record.put(&event.kv.key, &event.kv.value),
                EventKind::Delete => self.record.delete(&event.kv.key),
            }
        }
        // At most one record is ever unsynced, so only the log's last record can be torn.
        if let Err(e) = self.shared.wait_synced(self.appended) {
            self.syncer.send(SyncJob::failed(replies, &e));
            return;
        }
        let file = match self.append(first) {
            Ok(file) => file,
            Err(e) => {
                self.fail(&e);
                self.syncer.send(SyncJob::failed(replies, &e));
                return;
            }
        };
        self.appended += 1;
        // Applied (in memory, its keys in flight) before the sync thread may publish it.
        let compacted_before = self.applier.compacted;
        let full = self.applier.apply(&self.shared, &mut planned, true);
        let job = SyncJob::durable(
            replies,
            std::mem::take(&mut planned.outcomes),
            Durable {
                seq: self.appended,
                file,
                revision: planned.revision,
                compacted: planned.compacted,
                compacted_before,
                events: std::mem::take(&mut planned.events),
            },
        );
        self.syncer.send(job);
        if full {
            self.freeze_layer();
            // Memory stays bounded if sled falls behind: wait for the checkpoint thread.
            if let Some(upto) = self.layers_sent.checked_sub(MAX_FROZEN as u64) {
                self.shared.wait_layers_written(upto);
            }
        }
    }

    /// Appends the record built in `self.record` (first revision `first`), starting a new
    /// segment if it does not fit in this one, and returns the file to sync.
    fn append(&mut self, first: Revision) -> Result<Arc<std::fs::File>, BackendError> {
        use std::os::unix::fs::FileExt;
        let len = self.record.len() as u64;
        let fits = self
            .segment
            .as_ref()
            .is_some_and(|s| s.end == HEADER_LEN || s.end + len <= s.len);
        if !fits {
            // The checkpoint asked for below removes the older segments once sled is durable:
            // every record in them must be in sled first (layers are written in order, before
            // the checkpoint).
            self.freeze_layer();
            let segment = self.wal.create_segment(first, self.next_segment_bytes)?;
            self.next_segment_bytes = (self.next_segment_bytes * 2).min(SEGMENT_BYTES);
            // Every record of the older segments is applied: once sled is durable they can go.
            let rotated = self.segment.replace(segment).is_some();
            self.checkpointer
                .send(CheckpointJob::Checkpoint(Checkpoint {
                    sync_sled: rotated,
                    keep_from: first,
                    spare_bytes: self.next_segment_bytes,
                }));
        }
        let bytes = self.record.finish();
        let segment = self
            .segment
            .as_mut()
            .expect("a segment was just started if there was none");
        segment
            .file
            .write_all_at(bytes, segment.end)
            .map_err(|e| BackendError::Io(format!("cannot append to the write-ahead log: {e}")))?;
        segment.end += len;
        Ok(Arc::clone(&segment.file))
    }
}

/// `BackendError` is not `Clone` (it is part of a shared API); a batch-wide error is copied to
/// each request this way.
pub(super) fn clone_error(e: &BackendError) -> BackendError {
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
        BackendError::WatchTooSlow(d) => BackendError::WatchTooSlow(*d),
        BackendError::UnsupportedFormat { found, supported } => BackendError::UnsupportedFormat {
            found: found.clone(),
            supported: *supported,
        },
        BackendError::OtherEngine { dir, found, wanted } => BackendError::OtherEngine {
            dir: dir.clone(),
            found,
            wanted,
        },
        BackendError::Corrupt(m) => BackendError::Corrupt(m.clone()),
        BackendError::Io(m) => BackendError::Io(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::wal::tests::{record, segment, write};
    use super::super::{SledBackend, SledOptions, DEFAULT_LAYER_BYTES};
    use crate::backend::{Backend, BackendError, Expect, Revision};

    const OPTS: SledOptions = SledOptions {
        layer_bytes: DEFAULT_LAYER_BYTES,
        history_per_key: 2,
        log_retention: 6,
    };

    /// `k` put at 2 and deleted at 3, then, at 4 to 9: `y` put, `k` put twice, `y` put three
    /// times (the compacted revision ends at 4). As separate writes the third version `k`
    /// reads can see (tombstone 3, puts 5 and 6) arrives while the compacted revision is 1 and
    /// sets `k`'s floor to 5. The changes at 4 to 9 in one batch (here a log record replayed on
    /// open, as after a crash) must leave the same: a read of `k` at 4 is compacted, not absent.
    #[tokio::test]
    async fn a_batch_leaves_the_floors_its_changes_applied_one_at_a_time_leave() {
        let tail: [(&[u8], Option<&[u8]>); 6] = [
            (b"y", Some(b"y1")),
            (b"k", Some(b"k2")),
            (b"k", Some(b"k3")),
            (b"y", Some(b"y2")),
            (b"y", Some(b"y3")),
            (b"y", Some(b"y4")),
        ];
        let read_k_at_4 = |dir: &std::path::Path| {
            let dir = dir.to_path_buf();
            async move {
                let store = SledBackend::open(&dir, OPTS).expect("open");
                assert_eq!(store.current_revision().await.expect("current").get(), 9);
                assert_eq!(
                    store.compacted_revision().await.expect("compacted").get(),
                    4
                );
                let at_5 = store.get(b"k", Revision::new(5)).await.expect("read at 5");
                assert_eq!(at_5.0.expect("k at 5").value, b"k2");
                match store.get(b"k", Revision::new(4)).await {
                    Err(BackendError::Compacted {
                        requested,
                        compacted,
                    }) => Ok((requested.get(), compacted.get())),
                    other => Err(format!("{other:?}")),
                }
            }
        };
        let tmp = tempfile::tempdir().expect("temp dir");
        let (one, batched) = (tmp.path().join("one"), tmp.path().join("batched"));
        for dir in [&one, &batched] {
            let store = SledBackend::open(dir, OPTS).expect("open");
            store
                .put(b"k", b"k1".to_vec(), Expect::Any)
                .await
                .expect("put");
            store.delete(b"k", Expect::Any).await.expect("delete");
            if *dir == one {
                for (key, value) in tail {
                    let value = value.expect("puts only").to_vec();
                    store.put(key, value, Expect::Any).await.expect("put");
                }
            }
        }
        let wal_dir = batched.join(super::super::wal::WAL_DIR);
        write(&wal_dir, 4, &segment(4, &[record(4, &tail)]));

        let expected = Ok((4, 5));
        assert_eq!(read_k_at_4(&one).await, expected, "one at a time");
        assert_eq!(read_k_at_4(&batched).await, expected, "in one batch");
    }
}
