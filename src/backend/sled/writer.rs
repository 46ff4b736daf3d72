//! The writer thread: it takes every queued request as one batch, applies the batch in order,
//! commits it in one sled transaction, makes it durable, and only then publishes the new
//! revision, answers the requests and sends the events to watchers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use ::sled::transaction::{ConflictableTransactionError, TransactionError};
use ::sled::{Batch, IVec, Transactional};
use tokio::sync::{broadcast, oneshot};

use super::codec::{encode_event, encode_record, rev_bytes};
use super::files::FileSync;
use super::retention::prune_log;
use super::{revision_overflow, Inflight, Shared, META_COMPACTED, META_CURRENT};
use crate::backend::{
    check_key, BackendError, Event, EventKind, Expect, KeyValue, Revision, WriteOutcome,
};

/// Most requests the writer applies in one batch (one transaction, one `fsync`).
const MAX_BATCH_REQUESTS: usize = 1024;
/// A batch stops growing once its values add up to this many bytes.
const MAX_BATCH_BYTES: usize = 64 << 20;

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

/// The writer thread's state; [`Writer::run`] consumes it.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) rx: mpsc::Receiver<Request>,
    pub(super) events: broadcast::Sender<Arc<Vec<Event>>>,
    pub(super) files: FileSync,
}

/// One applied change of a batch.
pub(super) struct Change {
    pub(super) key: Vec<u8>,
    pub(super) revision: Revision,
    /// Encoded record, or None for a delete.
    pub(super) record: Option<IVec>,
}

impl Writer {
    pub(super) fn run(mut self) {
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
    pub(super) fn fail(&self, error: &BackendError) {
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
        self.shared.batch_size.observe(count);
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
        let start = shared.current.load();
        let compacted_before = shared.compacted.load();
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
                    revision = revision.next().ok_or_else(revision_overflow)?;
                    kv_batch.remove(key.as_slice());
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

        // The log keeps the last `log_retention` revisions: the oldest kept is the compacted one.
        let retention = i64::try_from(shared.opts.log_retention).unwrap_or(0);
        let compacted = match Revision::new(revision.get() - retention + 1) {
            Some(oldest_kept) if retention > 0 => compacted_before.max(oldest_kept),
            _ => compacted_before,
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
        let sync_started = std::time::Instant::now();
        if let Err(error) = self.files.make_durable(&shared.db) {
            self.fail(&error);
            return Err(error);
        }
        let synced = sync_started.elapsed().as_nanos();
        shared
            .sync_nanos
            .observe(u64::try_from(synced).unwrap_or(u64::MAX));
        {
            let mut guard = shared.write_guard();
            shared.compacted.store(compacted);
            shared.current.store(revision);
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
