//! [`AuditLog`]: the log writer. Callers serialise their events themselves and wait until they
//! are recorded, so the chain order is the file order and a request never proceeds on an event
//! that was not recorded. When the log syncs, one task writes: events that arrive while a write
//! and its sync are in progress are written together with one sync (group commit). When it does
//! not sync, each caller appends its lines itself (a write to the page cache), with no hand-over
//! to another thread; callers that arrive together share one write (`combine.rs`). The task
//! also writes the periodic checkpoints (every N events or T seconds) and the shutdown
//! checkpoint. In batch mode callers only queue their events and a thread writes them
//! (`batch.rs`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::chain::{CheckpointKind, CheckpointSigner};
use super::event::Event;
use super::file::{EventLines, LogFile};
use super::request::AuditSink;
use super::AuditError;
use crate::crypto::Ed25519PublicKey;
use batch::Batcher;
use combine::Combiner;

mod batch;
mod combine;

/// Most events written with one sync.
const MAX_BATCH: usize = 256;

/// What happens to a request whose event cannot be written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// The write returns the error, and the caller refuses the request (`Unavailable`):
    /// kube-apiserver's `blocking-strict`, Vault's behaviour. The default.
    #[default]
    Closed,
    /// The error is logged and counted, and the write returns `Ok`: the request proceeds
    /// unaudited (kube-apiserver's `blocking`).
    Open,
}

/// How the log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The active file. Rotated files are renamed beside it (`<stem>-<UTC time>.<ext>`).
    pub path: PathBuf,
    /// Rotate before a line would make the file larger than this many bytes; 0 never rotates.
    pub max_size: u64,
    /// Rotated files kept at most, the newest (`--audit-log-maxbackup`); 0 keeps every one.
    pub max_backups: usize,
    /// Rotated files are removed once the time in their name is older than this
    /// (`--audit-log-maxage`, in days); `None` keeps them whatever their age.
    pub max_age: Option<Duration>,
    /// Write a checkpoint after this many events...
    pub checkpoint_every: u64,
    /// ...or this long after the last checkpoint, if events were written since (zero: only
    /// by count).
    pub checkpoint_interval: Duration,
    /// Closed (default) or open.
    pub failure_mode: FailureMode,
    /// The log is only ever signed by this key (a store's, sealed in its backend): a log whose
    /// current file another key opened is refused, not continued. Off (the KMS plugin's admin
    /// log, signed by a new key at every start), the other key's public key is kept aside.
    pub single_key: bool,
    /// Sync every batch of writes to disk before acknowledging it (default). Off
    /// (`--audit-log-sync never`), events are written to the file (the page cache) before the
    /// request goes on, as kube-apiserver's log backend does: they survive a crash of keyward,
    /// not a crash of the machine, whose lost tail `verify` reports as a truncation.
    pub fsync: bool,
    /// Batch mode (`--audit-log-mode batch`): requests do not wait for their events to be
    /// written. `None` (blocking, the default): a request goes on once its events are written.
    pub batch: Option<BatchConfig>,
}

/// How a log in batch mode queues and writes events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Events queued at most; a request that would overfill the queue waits for room
    /// (kube-apiserver's `--audit-log-batch-buffer-size`, whose backend drops the event instead).
    pub buffer_size: usize,
    /// How long the writer lets events gather after a write while more keep coming: the most
    /// an event waits before it is written, besides the write before it
    /// (`--audit-log-batch-max-wait`).
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    /// kube-apiserver's buffer of 10,000 events, and a write at most every 5 ms (each write
    /// and the wake-up before it cost the writer thread a fixed ~25 µs on the project's 2-CPU
    /// VM: at 40,000 events a second, 1.0–1.1 µs of its CPU per event against 1.3–1.65 µs at
    /// 1 ms; docs/benchmarks.md).
    fn default() -> Self {
        Self {
            buffer_size: 10_000,
            max_wait: Duration::from_millis(5),
        }
    }
}

impl LogConfig {
    /// Defaults for `path`: rotate at 100 MiB (kube-apiserver's `--audit-log-maxsize` default is
    /// 100 MB) and keep every rotated file, a checkpoint every 1000 events or 60 s, fail closed,
    /// sync every write.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_size: 100 * 1024 * 1024,
            max_backups: 0,
            max_age: None,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            failure_mode: FailureMode::Closed,
            single_key: false,
            fsync: true,
            batch: None,
        }
    }
}

/// Totals since the log was opened, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditCounters {
    /// Events written durably.
    pub events_written: u64,
    /// Events that could not be written (in open mode too).
    pub write_failures: u64,
    /// Checkpoints written (the `open`/`resume` one included).
    pub checkpoints_written: u64,
    /// Files rotated away.
    pub rotations: u64,
}

#[derive(Default)]
struct Cells {
    events_written: AtomicU64,
    write_failures: AtomicU64,
    checkpoints_written: AtomicU64,
    rotations: AtomicU64,
    /// Events not written whose requests went on, not yet handed to the file (which records
    /// them in a `lost` line), and the last reason.
    lost: AtomicU64,
    lost_reason: Mutex<String>,
}

impl Cells {
    /// Counts `events` events not written although their requests went on.
    fn note_lost(&self, events: u64, reason: &AuditError) {
        *self.lost_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_string();
        self.lost.fetch_add(events, Ordering::Relaxed);
    }

    /// Hands the lost events counted so far to `file`, which records them with its next line.
    fn drain_lost(&self, file: &mut LogFile) {
        let n = self.lost.swap(0, Ordering::Relaxed);
        if n > 0 {
            let reason = self.lost_reason.lock().unwrap_or_else(|p| p.into_inner());
            file.note_lost(n, &reason);
        }
    }

    fn record(&self, file: &LogFile) {
        let s = file.stats();
        self.checkpoints_written
            .store(s.checkpoints, Ordering::Relaxed);
        self.rotations.store(s.rotations, Ordering::Relaxed);
    }
}

type Reply = oneshot::Sender<Result<(), AuditError>>;

enum Command {
    /// Events written in order, in one batch (one sync), acknowledged together.
    Write(EventLines, Reply),
    Checkpoint(Reply),
    Close(Reply),
}

/// The tamper-evident audit log. Cheap to clone; every clone writes to the same file.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

/// The file, shared by the writer task and (when the log does not sync) the callers; `None`
/// once the log is closed, or lost to a panic while writing.
type SharedFile = Arc<Mutex<Option<LogFile>>>;

struct Inner {
    tx: mpsc::Sender<Command>,
    file: SharedFile,
    /// The log does not sync: callers write their lines themselves, through `combiner`.
    direct: bool,
    combiner: Combiner,
    /// Batch mode: the queue the writer thread takes events from.
    batch: Option<Arc<Batcher>>,
    cells: Arc<Cells>,
    mode: FailureMode,
    path: PathBuf,
    public_key: Ed25519PublicKey,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.inner.path)
            .field("public_key", &self.inner.public_key)
            .finish()
    }
}

impl AuditLog {
    /// Opens (or creates) the log and starts its writer task; checkpoints are signed by
    /// `signer`. Must be called inside a Tokio runtime.
    pub async fn open(
        config: LogConfig,
        signer: Arc<dyn CheckpointSigner>,
    ) -> Result<AuditLog, AuditError> {
        let public_key = signer.public_key();
        let cfg = config.clone();
        let file = tokio::task::spawn_blocking(move || LogFile::open(&cfg, signer))
            .await
            .map_err(|_| AuditError::Closed)??;
        let cells = Arc::new(Cells::default());
        cells.record(&file);
        let file: SharedFile = Arc::new(Mutex::new(Some(file)));
        let batch = config
            .batch
            .as_ref()
            .map(|b| Batcher::start(file.clone(), cells.clone(), b))
            .transpose()?;
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(run(
            file.clone(),
            rx,
            cells.clone(),
            config.checkpoint_interval,
            batch.clone(),
        ));
        Ok(AuditLog {
            inner: Arc::new(Inner {
                tx,
                file,
                direct: !config.fsync,
                combiner: Combiner::default(),
                batch,
                cells,
                mode: config.failure_mode,
                path: config.path,
                public_key,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// Writes `event`; returns once it is durable (in batch mode: once it is queued). In
    /// [`FailureMode::Closed`] an error means the request must not proceed; in
    /// [`FailureMode::Open`] errors are logged and `Ok` returned.
    pub async fn write(&self, event: Event) -> Result<(), AuditError> {
        match &self.inner.batch {
            Some(batch) => {
                let result = batch.write(std::slice::from_ref(&event)).await;
                self.written(result, 1)
            }
            None => self.write_all(vec![event]).await,
        }
    }

    /// Writes `events` in order with one sync; returns once all of them are durable (failure
    /// modes as [`AuditLog::write`]).
    pub async fn write_all(&self, events: Vec<Event>) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len() as u64;
        let result = if let Some(batch) = &self.inner.batch {
            batch.write(&events).await
        } else if self.inner.direct {
            let inner = &self.inner;
            inner
                .combiner
                .write(&inner.file, &inner.cells, events)
                .await
        } else {
            let mut lines = EventLines::default();
            events.iter().for_each(|e| lines.push(e));
            drop(events);
            self.submit(|reply| Command::Write(lines, reply)).await
        };
        self.written(result, n)
    }

    /// The outcome of a write of `events` events as the failure mode answers it. In open mode
    /// they are counted as lost (recorded in a `lost` line once the log can be written).
    fn written(&self, result: Result<(), AuditError>, events: u64) -> Result<(), AuditError> {
        if let Err(e) = &result {
            self.inner
                .cells
                .write_failures
                .fetch_add(1, Ordering::Relaxed);
            if self.inner.mode == FailureMode::Open {
                tracing::error!(error = %e, "audit event not written; the request proceeds (audit failure mode: open)");
                self.inner.cells.note_lost(events, e);
                return Ok(());
            }
        }
        result
    }

    /// Writes a checkpoint now, if events were written since the last one.
    pub async fn checkpoint(&self) -> Result<(), AuditError> {
        self.submit(Command::Checkpoint).await
    }

    /// Writes the shutdown checkpoint and stops the writer; later writes fail with
    /// [`AuditError::Closed`]. Closing a closed log does nothing.
    pub async fn close(&self) -> Result<(), AuditError> {
        let result = match self.submit(Command::Close).await {
            Err(AuditError::Closed) => Ok(()),
            r => r,
        };
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        result
    }

    /// Totals so far.
    pub fn counters(&self) -> AuditCounters {
        let c = &self.inner.cells;
        AuditCounters {
            events_written: c.events_written.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
            checkpoints_written: c.checkpoints_written.load(Ordering::Relaxed),
            rotations: c.rotations.load(Ordering::Relaxed),
        }
    }

    /// The key that verifies this log's checkpoints.
    pub fn public_key(&self) -> &Ed25519PublicKey {
        &self.inner.public_key
    }

    /// The active file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn submit(&self, command: impl FnOnce(Reply) -> Command) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(command(tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }
}

#[async_trait::async_trait]
impl AuditSink for AuditLog {
    async fn write(&self, event: Event) -> Result<(), AuditError> {
        AuditLog::write(self, event).await
    }

    /// In batch mode, while the queue has room: the events are queued without an `await`.
    fn write_now(&self, events: &[Event]) -> Option<Result<(), AuditError>> {
        if events.is_empty() {
            return Some(Ok(()));
        }
        let queued = self.inner.batch.as_ref()?.try_write(events)?;
        Some(self.written(queued, events.len() as u64))
    }

    async fn write_all(&self, events: Vec<Event>) -> Result<(), AuditError> {
        AuditLog::write_all(self, events).await
    }

    fn lost(&self, events: u64, why: &AuditError) {
        self.inner.cells.note_lost(events, why);
    }
}

/// Runs `f` on the file under its lock; `None` if the log is closed or was lost to a panic.
fn with_file<T>(file: &Mutex<Option<LogFile>>, f: impl FnOnce(&mut LogFile) -> T) -> Option<T> {
    let mut guard = match file.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            // A panic while writing leaves the chain state unknown: the log is closed.
            let mut guard = poisoned.into_inner();
            *guard = None;
            file.clear_poison();
            guard
        }
    };
    guard.as_mut().map(f)
}

/// Runs `f` on the file on the blocking pool; `None` if the log is closed or was lost.
async fn blocking<T: Send + 'static>(
    file: &SharedFile,
    f: impl FnOnce(&mut LogFile) -> T + Send + 'static,
) -> Option<T> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || with_file(&file, f))
        .await
        .ok()
        .flatten()
}

/// Appends `lines` under the file's lock and counts them: the writer task's write of one batch.
fn write_lines(
    file: &Mutex<Option<LogFile>>,
    cells: &Cells,
    lines: &EventLines,
) -> Result<(), AuditError> {
    with_file(file, |f| write_batch(f, cells, lines)).unwrap_or(Err(AuditError::Closed))
}

/// Appends `lines` to `file` and counts them: the write of one batch, by the writer task or
/// (when the log does not sync) by the caller holding the file's lock.
fn write_batch(file: &mut LogFile, cells: &Cells, lines: &EventLines) -> Result<(), AuditError> {
    let n = lines.len() as u64;
    cells.drain_lost(file);
    let result = file.append(lines);
    cells.record(file);
    match &result {
        Ok(()) => {
            cells.events_written.fetch_add(n, Ordering::Relaxed);
        }
        Err(AuditError::Closed) => {}
        Err(e) => tracing::error!(error = %e, events = n, "audit events not written"),
    }
    result
}

/// The same error again, for every caller of a failed batch.
fn replicate(e: &AuditError) -> AuditError {
    let copy = |source: &std::io::Error| std::io::Error::new(source.kind(), source.to_string());
    match e {
        AuditError::Write { path, source } => AuditError::Write {
            path: path.clone(),
            source: copy(source),
        },
        AuditError::Io { path, source } => AuditError::Io {
            path: path.clone(),
            source: copy(source),
        },
        AuditError::Sign(s) => AuditError::Sign(s.clone()),
        _ => AuditError::Closed,
    }
}

/// The writer task. In batch mode, the batch writer's queue is written out before the shutdown
/// checkpoint.
async fn run(
    file: SharedFile,
    mut rx: mpsc::Receiver<Command>,
    cells: Arc<Cells>,
    interval: Duration,
    batch: Option<Arc<Batcher>>,
) {
    // Zero disables time-based checkpoints (a deadline that never comes in practice).
    let interval = match interval {
        Duration::ZERO => Duration::from_secs(100 * 365 * 24 * 3600),
        i => i,
    };
    let mut deadline = Instant::now() + interval;
    let mut next: Option<Command> = None;
    loop {
        let command = match next.take() {
            Some(c) => Some(c),
            None => tokio::select! {
                c = rx.recv() => c,
                () = tokio::time::sleep_until(deadline) => {
                    deadline = Instant::now() + interval;
                    if !periodic(&file, &cells).await {
                        break;
                    }
                    continue;
                }
            },
        };
        match command {
            Some(Command::Write(mut lines, reply)) => {
                let mut replies = vec![reply];
                while lines.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Command::Write(more, r)) => {
                            lines.append(&more);
                            replies.push(r);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let (shared, counts) = (file.clone(), cells.clone());
                let done = tokio::task::spawn_blocking(move || {
                    let before = with_file(&shared, |f| f.stats().checkpoints);
                    let result = write_lines(&shared, &counts, &lines);
                    let after = with_file(&shared, |f| f.stats().checkpoints);
                    (result, before.is_some() && before != after)
                })
                .await;
                let Ok((result, checkpointed)) = done else {
                    tracing::error!("the audit log writer failed; the log is closed");
                    for reply in replies {
                        let _ = reply.send(Err(AuditError::Closed));
                    }
                    break;
                };
                if checkpointed {
                    deadline = Instant::now() + interval;
                }
                for reply in replies {
                    let _ = reply.send(result.as_ref().map(|_| ()).map_err(replicate));
                }
            }
            Some(Command::Checkpoint(reply)) => {
                let Some(result) = periodic_checkpoint(&file, &cells).await else {
                    let _ = reply.send(Err(AuditError::Closed));
                    break;
                };
                deadline = Instant::now() + interval;
                record(&file, &cells);
                let _ = reply.send(result);
            }
            Some(Command::Close(reply)) => {
                let result = shutdown(&file, &cells, batch.clone()).await;
                let _ = reply.send(result);
                break;
            }
            None => {
                if let Err(e) = shutdown(&file, &cells, batch.clone()).await {
                    tracing::error!(error = %e, "the audit log's shutdown checkpoint was not written");
                }
                break;
            }
        }
    }
    if let Some(batch) = &batch {
        // A log lost to an error: the batch writer stops too (its writes would fail).
        batch.close();
    }
    rx.close();
    while let Some(command) = rx.recv().await {
        let (Command::Write(_, reply) | Command::Checkpoint(reply) | Command::Close(reply)) =
            command;
        let _ = reply.send(Err(AuditError::Closed));
    }
}

/// Copies the file's totals into `cells`.
fn record(file: &Mutex<Option<LogFile>>, cells: &Cells) {
    with_file(file, |f| cells.record(f));
}

/// Writes a periodic checkpoint if events were written since the last one; false if the log is
/// gone.
async fn periodic(file: &SharedFile, cells: &Arc<Cells>) -> bool {
    match periodic_checkpoint(file, cells).await {
        None => false,
        Some(result) => {
            if let Err(e) = result {
                tracing::error!(error = %e, "the audit log's periodic checkpoint was not written");
            }
            record(file, cells);
            true
        }
    }
}

/// Writes a periodic checkpoint (after the `lost` line of events lost since the last write, if
/// any) if lines were written since the last one; `None` if the log is gone.
async fn periodic_checkpoint(
    file: &SharedFile,
    cells: &Arc<Cells>,
) -> Option<Result<(), AuditError>> {
    let cells = cells.clone();
    blocking(file, move |f| {
        cells.drain_lost(f);
        if f.since_checkpoint() > 0 || f.lost() > 0 {
            f.checkpoint(CheckpointKind::Periodic)
        } else {
            Ok(())
        }
    })
    .await
}

/// Writes what the batch writer holds (in batch mode), then the shutdown checkpoint, and closes
/// the file: later writes fail with [`AuditError::Closed`].
async fn shutdown(
    file: &SharedFile,
    cells: &Arc<Cells>,
    batch: Option<Arc<Batcher>>,
) -> Result<(), AuditError> {
    let shared = file.clone();
    let counts = cells.clone();
    let result = tokio::task::spawn_blocking(move || {
        if let Some(batch) = batch {
            batch.stop();
        }
        let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
        let mut f = guard.take().ok_or(AuditError::Closed)?;
        counts.drain_lost(&mut f);
        let result = f.checkpoint(CheckpointKind::Shutdown);
        if f.lost() > 0 {
            tracing::error!(
                events = f.lost(),
                "audit events were lost: the log could not be written before shutdown"
            );
        }
        Ok::<_, AuditError>((f.stats(), result))
    })
    .await
    .map_err(|_| AuditError::Closed)??;
    let (stats, result) = result;
    cells
        .checkpoints_written
        .store(stats.checkpoints, Ordering::Relaxed);
    cells.rotations.store(stats.rotations, Ordering::Relaxed);
    result
}

#[cfg(test)]
pub(super) mod tests;
