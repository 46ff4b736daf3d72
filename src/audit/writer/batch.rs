//! Batch mode (`--audit-log-mode batch`, kube-apiserver's mode of the same name): a request
//! serialises its events into a queue and goes on without waiting for them to be written; a
//! thread of the log's own writes what is queued, at most once per `max_wait` while events keep
//! coming (one `write`, and one sync if the log syncs, for everything queued meanwhile). The
//! queue holds at most `buffer_size` events: kube-apiserver drops events beyond it, this log
//! makes the request wait for room instead, so no event is lost to a burst. A batch that cannot
//! be written is kept and written again (every `max_wait`, at least every 100 ms) until it is;
//! meanwhile the log is failing: the requests that queue events are refused (fail closed: a
//! write refused at its `RequestReceived` changes nothing; one refused at its
//! `ResponseComplete` had acted, so its event is counted as lost and the log records the loss)
//! and the kept batch does not grow. Events still unwritten when the log closes are lost, and
//! counted as such.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use super::{replicate, with_file, write_batch, BatchConfig, Cells, SharedFile};
use crate::audit::event::Event;
use crate::audit::file::EventLines;
use crate::audit::AuditError;

/// The queue of a log in batch mode, shared by the requests and the writer thread.
pub(super) struct Batcher {
    state: Mutex<Queue>,
    /// The writer thread waits here while the queue is empty.
    work: Condvar,
    /// Requests waiting for room in a full queue wait here.
    room: Notify,
    buffer_size: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Queue {
    lines: EventLines,
    /// The writer thread is waiting on `work` (a request that queues must wake it).
    idle: bool,
    /// No more events are taken; the thread writes what is queued and stops.
    closing: bool,
    /// The last write failed (why): events are refused until a write succeeds.
    failing: Option<AuditError>,
}

/// How often a failing log tries its kept batch again, at least.
const RETRY: Duration = Duration::from_millis(100);

impl Batcher {
    /// Starts the writer thread for `file`.
    pub(super) fn start(
        file: SharedFile,
        cells: Arc<Cells>,
        config: &BatchConfig,
    ) -> Result<Arc<Self>, AuditError> {
        let batcher = Arc::new(Batcher {
            state: Mutex::default(),
            work: Condvar::new(),
            room: Notify::new(),
            buffer_size: config.buffer_size.max(1),
            thread: Mutex::new(None),
        });
        let writer = batcher.clone();
        let max_wait = config.max_wait;
        let thread = std::thread::Builder::new()
            .name("audit-batch".into())
            .spawn(move || writer.run(&file, &cells, max_wait))
            .map_err(|e| AuditError::Io {
                path: "audit batch writer thread".into(),
                source: e,
            })?;
        *batcher.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(batcher)
    }

    /// Queues `events` (serialised here, in the caller) and returns without waiting for them to
    /// be written; waits only while the queue is full. Fails once the log is closing.
    pub(super) async fn write(&self, events: &[Event]) -> Result<(), AuditError> {
        loop {
            // Made before the queue is looked at, so that it sees the room any later swap makes
            // (`notify_waiters` wakes every `Notified` made before it, polled or not).
            let room = self.room.notified();
            if let Some(queued) = self.try_write(events) {
                return queued;
            }
            room.await;
        }
    }

    /// Queues `events` if the queue has room for them (`Some(Ok)`) or fails if the log is
    /// closing or failing (`Some(Err)`); `None` when the queue is full.
    pub(super) fn try_write(&self, events: &[Event]) -> Option<Result<(), AuditError>> {
        let mut q = self.lock();
        if q.closing {
            return Some(Err(AuditError::Closed));
        }
        if let Some(e) = &q.failing {
            return Some(Err(replicate(e)));
        }
        // A batch larger than the whole buffer is taken when the queue is empty.
        if q.lines.len() != 0 && q.lines.len() + events.len() > self.buffer_size {
            return None;
        }
        events.iter().for_each(|e| q.lines.push(e));
        if std::mem::take(&mut q.idle) {
            self.work.notify_one();
        }
        Some(Ok(()))
    }

    /// Stops taking events; the thread writes what is queued and stops.
    pub(super) fn close(&self) {
        self.lock().closing = true;
        self.work.notify_one();
        self.room.notify_waiters();
    }

    /// [`Batcher::close`], then waits until the thread has written what was queued.
    pub(super) fn stop(&self) {
        self.close();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the audit log's batch writer panicked");
            }
        }
    }

    /// Whether the last write failed (so events are refused until one succeeds).
    #[cfg(test)]
    pub(super) fn is_failing(&self) -> bool {
        self.lock().failing.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer thread: takes the whole queue, writes it, lets the next batch gather for
    /// `max_wait`, again until the log closes. A batch that fails is kept (the queue's later
    /// events go after it) and tried again.
    fn run(&self, file: &SharedFile, cells: &Cells, max_wait: Duration) {
        let mut writing = EventLines::default();
        loop {
            let closing = {
                let mut q = self.lock();
                while q.lines.len() == 0 && writing.len() == 0 && !q.closing {
                    q.idle = true;
                    q = self.work.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                q.idle = false;
                if q.lines.len() == 0 && writing.len() == 0 {
                    return;
                }
                if writing.len() == 0 {
                    std::mem::swap(&mut q.lines, &mut writing);
                } else {
                    writing.append(&q.lines);
                    q.lines.clear();
                }
                q.closing
            };
            self.room.notify_waiters();
            let n = writing.len() as u64;
            // A panic while writing closes the log (`with_file` drops a poisoned file); the
            // thread goes on taking the queue, so that no request waits for room forever.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_file(file, |f| write_batch(f, cells, &writing))
            }))
            .ok()
            .flatten()
            .unwrap_or(Err(AuditError::Closed));
            let was_failing = match result {
                Ok(()) => self.lock().failing.take().is_some(),
                Err(AuditError::Closed) => {
                    cells.write_failures.fetch_add(n, Ordering::Relaxed);
                    tracing::error!(events = n, "audit events not written: the log is closed");
                    false
                }
                Err(e) if closing => {
                    cells.write_failures.fetch_add(n, Ordering::Relaxed);
                    cells.note_lost(n, &e);
                    tracing::error!(error = %e, events = n, "audit events lost: the log could not be written before it closed");
                    false
                }
                Err(e) => {
                    let mut q = self.lock();
                    if q.failing.is_none() {
                        cells.write_failures.fetch_add(n, Ordering::Relaxed);
                        tracing::error!(error = %e, events = n, "audit events not written; kept and tried again, and requests are refused until they are written");
                    }
                    q.failing = Some(e);
                    // Kept: written again below (not cleared).
                    drop(q);
                    std::thread::sleep(max_wait.max(RETRY));
                    continue;
                }
            };
            if was_failing {
                tracing::info!(
                    events = n,
                    "the audit log is written again; requests are no longer refused"
                );
            }
            writing.clear();
            if !max_wait.is_zero() && !self.lock().closing {
                std::thread::sleep(max_wait);
            }
        }
    }
}
