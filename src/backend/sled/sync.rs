//! The two threads beside the writer: the sync thread, which `fdatasync`s each appended log
//! record, then publishes its batch (new revision, in-flight keys released, events to watchers)
//! and answers its requests, in the order the writer handed them over; and the checkpoint
//! thread, which writes frozen layers to sled (redo record first), makes sled durable after
//! a segment is full so that older segments can be removed, and prepares the next spare
//! segment.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{broadcast, oneshot};

use super::layers::Layer;
use super::redo;
use super::retention::prune_log;
use super::wal::WalDir;
use super::writer::{clone_error, log_removals_in_layer};
use super::Shared;
use crate::backend::{BackendError, Event, Revision, WriteOutcome};

type Reply = oneshot::Sender<Result<WriteOutcome, BackendError>>;

/// A batch handed to the sync thread.
pub(super) struct SyncJob {
    replies: Vec<Reply>,
    outcomes: Vec<Result<WriteOutcome, BackendError>>,
    /// Present when the batch changed something and its record was appended.
    durable: Option<Durable>,
}

/// What makes a batch's record durable and publishes it.
pub(super) struct Durable {
    /// The record's number since open: the sync thread reports it synced.
    pub(super) seq: u64,
    pub(super) file: Arc<File>,
    pub(super) revision: Revision,
    pub(super) compacted: Revision,
    pub(super) compacted_before: Revision,
    pub(super) events: Vec<Event>,
}

impl SyncJob {
    /// Every request of the batch fails with `error`.
    pub(super) fn failed(replies: Vec<Reply>, error: &BackendError) -> SyncJob {
        let outcomes = replies.iter().map(|_| Err(clone_error(error))).collect();
        SyncJob {
            replies,
            outcomes,
            durable: None,
        }
    }

    /// A batch that changed nothing: its outcomes, sent after every earlier batch.
    pub(super) fn answer(
        replies: Vec<Reply>,
        outcomes: Vec<Result<WriteOutcome, BackendError>>,
    ) -> SyncJob {
        SyncJob {
            replies,
            outcomes,
            durable: None,
        }
    }

    /// A batch whose record was appended: answered once `durable` is done.
    pub(super) fn durable(
        replies: Vec<Reply>,
        outcomes: Vec<Result<WriteOutcome, BackendError>>,
        durable: Durable,
    ) -> SyncJob {
        SyncJob {
            replies,
            outcomes,
            durable: Some(durable),
        }
    }
}

/// A thread fed by a channel, owned by the writer; stopping it lets it finish what is queued.
pub(super) struct Worker<T> {
    tx: Option<mpsc::Sender<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Worker<T> {
    fn start(name: &str, mut handle: impl FnMut(T) + Send + 'static) -> Result<Self, BackendError> {
        let (tx, rx) = mpsc::channel::<T>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                for job in rx {
                    handle(job);
                }
            })
            .map_err(|e| BackendError::Io(format!("cannot start the thread {name}: {e}")))?;
        Ok(Worker {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub(super) fn send(&self, job: T) {
        if let Some(tx) = &self.tx {
            // The thread only ends when this sender is dropped.
            let _ = tx.send(job);
        }
    }

    /// Lets the thread finish the queued jobs, then waits for it.
    pub(super) fn stop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sync thread.
pub(super) type Syncer = Worker<SyncJob>;

impl Syncer {
    pub(super) fn start_syncer(
        shared: Arc<Shared>,
        events: broadcast::Sender<Arc<Vec<Event>>>,
    ) -> Result<Syncer, BackendError> {
        Worker::start("keyward-sled-sync", move |job| {
            sync_one(&shared, &events, job)
        })
    }
}

fn sync_one(shared: &Shared, events: &broadcast::Sender<Arc<Vec<Event>>>, job: SyncJob) {
    let SyncJob {
        replies,
        mut outcomes,
        durable,
    } = job;
    if let Some(d) = durable {
        if let Err(error) = make_durable_and_publish(shared, events, d) {
            outcomes = replies.iter().map(|_| Err(clone_error(&error))).collect();
        }
    }
    // Counted before answering, so that whoever got an answer sees the batch in the stats.
    let count = replies.len() as u64;
    shared.batches.fetch_add(1, Ordering::Relaxed);
    shared.requests.fetch_add(count, Ordering::Relaxed);
    shared.batch_size.observe(count);
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
}

fn make_durable_and_publish(
    shared: &Shared,
    events: &broadcast::Sender<Arc<Vec<Event>>>,
    d: Durable,
) -> Result<(), BackendError> {
    shared.check_failed()?;
    let started = Instant::now();
    if let Err(e) = d.file.sync_data() {
        let error = BackendError::Io(format!("cannot fdatasync the write-ahead log: {e}"));
        shared.fail(&error);
        return Err(error);
    }
    let synced = started.elapsed().as_nanos();
    shared
        .sync_nanos
        .observe(u64::try_from(synced).unwrap_or(u64::MAX));
    shared.set_synced(d.seq);
    // The writer applied the batch (in memory) before handing it over.
    {
        let mut guard = shared.write_guard();
        shared.compacted.store(d.compacted);
        shared.current.store(d.revision);
        guard.inflight.retain(|batch| batch.revision > d.revision);
    }
    shared.durable.send_replace((d.revision, false));
    shared.set_published(d.revision);
    // No receivers is fine.
    let _ = events.send(Arc::new(d.events));
    if d.compacted > d.compacted_before && !log_removals_in_layer(d.compacted_before, d.compacted) {
        if let Err(e) = prune_log(&shared.log, d.compacted) {
            // Leftovers are harmless (below the compacted revision) and retried next time.
            tracing::warn!(error = %e, "pruning the change log failed");
        }
    }
    Ok(())
}

/// Work for the checkpoint thread.
pub(super) enum CheckpointJob {
    /// Write a frozen layer to sled, then drop it from the layers.
    Write(Arc<Layer>),
    /// Sent when the writer starts a new segment.
    Checkpoint(Checkpoint),
}

/// A checkpoint, asked for when the writer starts a new segment.
pub(super) struct Checkpoint {
    /// Whether older segments exist: make sled durable, then remove them.
    pub(super) sync_sled: bool,
    /// The new segment's base: every record below it is in the layers sent before this job.
    pub(super) keep_from: Revision,
    /// Size of the spare to prepare for the next rotation.
    pub(super) spare_bytes: u64,
}

/// The checkpoint thread.
pub(super) type Checkpointer = Worker<CheckpointJob>;

impl Checkpointer {
    pub(super) fn start_checkpointer(
        shared: Arc<Shared>,
        wal: Arc<WalDir>,
    ) -> Result<Checkpointer, BackendError> {
        Worker::start("keyward-sled-checkpoint", move |job| {
            if shared.check_failed().is_err() {
                return;
            }
            let done = match &job {
                CheckpointJob::Write(layer) => write_layer(&shared, layer),
                CheckpointJob::Checkpoint(checkpoint) => run_checkpoint(&shared, &wal, checkpoint),
            };
            if let Err(error) = done {
                // A layer that cannot be written, a log that cannot be trimmed, or sled that
                // cannot be synced, is an I/O failure like a failed fdatasync.
                shared.fail(&error);
            }
        })
    }
}

/// Writes a frozen layer to sled; readers then find its writes there.
fn write_layer(shared: &Shared, layer: &Arc<Layer>) -> Result<(), BackendError> {
    layer.write_to(shared)?;
    shared.write_guard().layers.written(layer);
    shared.update_progress(|p| p.layers_written += 1);
    if shared.redo().len() >= redo::CHECKPOINT_BYTES {
        shared.make_durable()?;
    }
    Ok(())
}

fn run_checkpoint(shared: &Shared, wal: &WalDir, job: &Checkpoint) -> Result<(), BackendError> {
    if job.sync_sled {
        let started = Instant::now();
        shared.make_durable()?;
        wal.remove_before(job.keep_from)?;
        tracing::debug!(
            below = %job.keep_from,
            millis = started.elapsed().as_millis() as u64,
            "checkpoint: sled made durable, older log segments removed"
        );
    }
    wal.prepare_spare(job.spare_bytes)
}
