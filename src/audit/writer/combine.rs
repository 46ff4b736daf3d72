//! Writing without sync (`--audit-log-sync never`): callers combine their writes. Each caller
//! serialises its events into a buffer of its thread's, copies them into the queue's one buffer
//! and lets the other tasks ready on its thread run once (so that
//! they queue theirs). Then it either takes the file's lock and writes every queued batch (its
//! own and the others') with one `write`, or, while another caller holds the lock, lets other
//! tasks run until its batch is written. No caller sleeps on the lock and no thread is woken to
//! write: under load one `write` carries several requests' events (about five per write with
//! 16 clients on two cores). Every caller still returns only once its lines are in the file
//! (the page cache), in queue order, which is the chain's order. The buffers are reused, not
//! freed: the queue's and the one being written swap places.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::Duration;

use tokio::sync::Notify;

use super::{replicate, write_batch, Cells};
use crate::audit::event::Event;
use crate::audit::file::{EventLines, LogFile};
use crate::audit::AuditError;

/// Times a caller lets other tasks run before it waits for a notification instead.
const YIELDS: u32 = 64;
/// Longest wait for a notification before looking again (a holder that is not a caller, such
/// as the periodic checkpoint, does not notify).
const NOTIFY_WAIT: Duration = Duration::from_millis(1);
/// Most rounds of queued batches one holder writes before it lets go of the lock.
const ROUNDS: usize = 4;

type Outcome = Arc<OnceLock<Result<(), AuditError>>>;

/// Batches waiting for the file, the batch being written, and the wake-up for their callers.
#[derive(Default)]
pub(super) struct Combiner {
    queue: Mutex<Batch>,
    /// Only the holder of the file's lock uses it (never contended): the queue's buffers after
    /// the last swap.
    writing: Mutex<Batch>,
    written: Notify,
}

/// Callers' lines in queue order, and where each caller's outcome goes.
#[derive(Default)]
struct Batch {
    lines: EventLines,
    outcomes: Vec<Outcome>,
}

thread_local! {
    /// Where a caller serialises its events before it copies them into the queue (briefly
    /// locked): one buffer per thread, reused.
    static ENCODED: RefCell<EventLines> = RefCell::default();
}

impl Combiner {
    /// Appends `events` to `file` (shared with the writer task) and returns once they are
    /// written, or the error that kept them out of it.
    pub(super) async fn write(
        &self,
        file: &Mutex<Option<LogFile>>,
        cells: &Cells,
        events: Vec<Event>,
    ) -> Result<(), AuditError> {
        let outcome: Outcome = Arc::default();
        ENCODED.with(|cell| {
            let mut encoded = cell.borrow_mut();
            encoded.clear();
            events.iter().for_each(|e| encoded.push(e));
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.lines.append(&encoded);
            queue.outcomes.push(outcome.clone());
        });
        drop(events);
        // Let the requests that are ready on this thread queue theirs first: one write for all.
        tokio::task::yield_now().await;
        let mut yields = 0;
        loop {
            if let Some(result) = outcome.get() {
                return result.as_ref().map(|_| ()).map_err(replicate);
            }
            if let Some(mut guard) = try_lock(file) {
                self.drain(&mut guard, cells);
                drop(guard);
                self.written.notify_waiters();
                continue;
            }
            if yields < YIELDS {
                yields += 1;
                tokio::task::yield_now().await;
                continue;
            }
            let notified = self.written.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if outcome.get().is_none() {
                let _ = tokio::time::timeout(NOTIFY_WAIT, notified).await;
            }
        }
    }

    /// Writes what is queued, in order, one `write` per round, and hands each caller its
    /// outcome.
    fn drain(&self, file: &mut Option<LogFile>, cells: &Cells) {
        let mut batch = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        // Left by a write that panicked (the log is closed since).
        for o in batch.outcomes.drain(..) {
            let _ = o.set(Err(AuditError::Closed));
        }
        batch.lines.clear();
        for _ in 0..ROUNDS {
            {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if queue.outcomes.is_empty() {
                    return;
                }
                std::mem::swap(&mut *queue, &mut *batch);
            }
            let result = match file.as_mut() {
                Some(f) => write_batch(f, cells, &batch.lines),
                None => Err(AuditError::Closed),
            };
            for o in batch.outcomes.drain(..) {
                let _ = o.set(result.as_ref().map(|_| ()).map_err(replicate));
            }
            batch.lines.clear();
        }
    }
}

/// The file's lock if it is free. A panic while writing leaves the chain state unknown: the
/// log is closed.
fn try_lock(file: &Mutex<Option<LogFile>>) -> Option<MutexGuard<'_, Option<LogFile>>> {
    match file.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::WouldBlock) => None,
        Err(TryLockError::Poisoned(poisoned)) => {
            let mut guard = poisoned.into_inner();
            *guard = None;
            file.clear_poison();
            Some(guard)
        }
    }
}
