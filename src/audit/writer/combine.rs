//! Writing without sync (`--audit-log-sync never`): callers combine their writes. Each caller
//! queues its serialised lines and lets the other tasks ready on its thread run once (so that
//! they queue theirs). Then it either takes the file's lock and writes every queued batch (its
//! own and the others') with one `write`, or, while another caller holds the lock, lets other
//! tasks run until its batch is written. No caller sleeps on the lock and no thread is woken to
//! write: under load one `write` carries several requests' events (about five per write with
//! 16 clients on two cores). Every caller still returns only once its lines are in the file
//! (the page cache), in queue order, which is the chain's order.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::Duration;

use tokio::sync::Notify;

use super::{replicate, write_batch, Cells};
use crate::audit::file::{EventLine, LogFile};
use crate::audit::AuditError;

/// Times a caller lets other tasks run before it waits for a notification instead.
const YIELDS: u32 = 64;
/// Longest wait for a notification before looking again (a holder that is not a caller, such
/// as the periodic checkpoint, does not notify).
const NOTIFY_WAIT: Duration = Duration::from_millis(1);
/// Most rounds of queued batches one holder writes before it lets go of the lock.
const ROUNDS: usize = 4;

type Outcome = Arc<OnceLock<Result<(), AuditError>>>;

/// Batches waiting for the file, and the wake-up for their callers.
#[derive(Default)]
pub(super) struct Combiner {
    queue: Mutex<Vec<(Vec<EventLine>, Outcome)>>,
    written: Notify,
}

impl Combiner {
    /// Appends `lines` to `file` (shared with the writer task) and returns once they are
    /// written, or the error that kept them out of it.
    pub(super) async fn write(
        &self,
        file: &Mutex<Option<LogFile>>,
        cells: &Cells,
        lines: Vec<EventLine>,
    ) -> Result<(), AuditError> {
        let outcome: Outcome = Arc::default();
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((lines, outcome.clone()));
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
        for _ in 0..ROUNDS {
            let batches =
                std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
            if batches.is_empty() {
                return;
            }
            let mut lines = Vec::with_capacity(batches.iter().map(|(l, _)| l.len()).sum());
            let mut outcomes = Vec::with_capacity(batches.len());
            for (l, o) in batches {
                lines.extend(l);
                outcomes.push(o);
            }
            let result = match file.as_mut() {
                Some(f) => write_batch(f, cells, lines),
                None => Err(AuditError::Closed),
            };
            for o in outcomes {
                let _ = o.set(result.as_ref().map(|_| ()).map_err(replicate));
            }
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
