//! The watch task both embedded engines run: it replays the logged changes after a revision,
//! then follows the writer's live events, with no gap and no duplicate; a watcher that falls
//! behind the live channel replays what it missed. Each engine says how its logged changes
//! are read ([`Replay`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::{broadcast, mpsc};

use super::{BackendError, Event, Revision, WatchStream};

/// Batches of events kept for live watchers before a slow one lags (and then replays from the
/// log): what a watcher that falls behind can hold in memory.
pub(super) const WATCH_BROADCAST_CAPACITY: usize = 256;
/// Events buffered between a watch's task and its stream.
const WATCH_STREAM_CAPACITY: usize = 64;
/// How long a watch waits for its reader to take an event once its buffer is full; then it
/// ends ([`BackendError::WatchTooSlow`]), as kube-apiserver ends a watcher that does not keep
/// up, so that a reader that stops reading does not hold changes in memory.
pub(super) const SLOW_WATCH_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// An engine's logged changes, as a watch replays them.
pub(super) trait Replay: Send + Sync + 'static {
    /// The logged changes from revision `next` on, up to `upto` (both logged), at most a chunk
    /// of them: the events of keys starting with `prefix`, in revision order, and the last
    /// revision the chunk covered (at least `next`).
    fn replay(
        &self,
        next: i64,
        upto: i64,
        prefix: &[u8],
    ) -> Result<(Vec<Event>, i64), BackendError>;

    /// The current revision (every change up to it is logged).
    fn current(&self) -> i64;

    /// The error a watch ends with once the store is closed.
    fn closed() -> BackendError;
}

/// How far a watch has got: every change up to [`WatchProgress::revision`] has been handed to
/// its stream (sent, or left out by the prefix), so once a reader that read it finds the
/// stream empty, it has seen every change of its keys up to that revision — what a
/// Kubernetes watch's bookmark says. Read the revision before looking at the stream.
#[derive(Debug, Clone)]
pub struct WatchProgress(Arc<AtomicI64>);

impl WatchProgress {
    fn new(rev: i64) -> Self {
        WatchProgress(Arc::new(AtomicI64::new(rev)))
    }

    /// The revision up to which every change has been handed to the stream (`None` before the
    /// first revision).
    pub fn revision(&self) -> Option<Revision> {
        // Acquire: the sends before the store that published this revision are seen too.
        Revision::new(self.0.load(Ordering::Acquire))
    }

    fn advance(&self, rev: i64) {
        self.0.fetch_max(rev, Ordering::Release);
    }
}

/// Starts a watch of the keys starting with `prefix`: replays the changes from `next` up to
/// `upto`, then follows `live`, which must have been subscribed before `upto` was read.
pub(super) fn spawn<S: Replay>(
    shared: &Arc<S>,
    live: broadcast::Receiver<Arc<Vec<Event>>>,
    prefix: &[u8],
    next: i64,
    upto: i64,
) -> (WatchStream, WatchProgress) {
    let (tx, rx) = mpsc::channel(WATCH_STREAM_CAPACITY);
    let progress = WatchProgress::new(next - 1);
    let task = WatchTask {
        shared: Arc::downgrade(shared),
        prefix: prefix.to_vec(),
        next,
        tx,
        progress: progress.clone(),
    };
    tokio::spawn(task.run(live, upto));
    (
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)),
        progress,
    )
}

/// Feeds one watch stream.
struct WatchTask<S> {
    /// Weak, so that an idle watch does not keep the store open after the backend is dropped.
    shared: Weak<S>,
    prefix: Vec<u8>,
    /// The revision after the last one delivered (or skipped by the prefix filter).
    next: i64,
    tx: mpsc::Sender<Result<Event, BackendError>>,
    /// `next - 1`, published after the events up to it were sent.
    progress: WatchProgress,
}

/// Why a watch task stops.
enum Stop {
    /// The stream was dropped.
    Dropped,
    /// The stream ends with this error.
    Error(BackendError),
}

impl<S: Replay> WatchTask<S> {
    async fn run(mut self, mut live: broadcast::Receiver<Arc<Vec<Event>>>, upto: i64) {
        let stop = match self.follow(&mut live, upto).await {
            Ok(never) => match never {},
            Err(stop) => stop,
        };
        if let Stop::Error(e) = stop {
            // The consumer may not be reading; do not wait for room.
            let _ = self.tx.try_send(Err(e));
        }
    }

    async fn follow(
        &mut self,
        live: &mut broadcast::Receiver<Arc<Vec<Event>>>,
        upto: i64,
    ) -> Result<std::convert::Infallible, Stop> {
        self.catch_up(upto).await?;
        loop {
            let received = tokio::select! {
                _ = self.tx.closed() => return Err(Stop::Dropped),
                received = live.recv() => received,
            };
            match received {
                Ok(batch) if batch.is_empty() => {
                    // A batch whose events were not made (the engine saw no watcher when it
                    // began it): its changes are read back from the log.
                    let upto = self.upgrade()?.current();
                    self.catch_up(upto).await?;
                }
                Ok(batch) => {
                    for event in batch.iter() {
                        let rev = event.kv.mod_revision.get();
                        if rev < self.next {
                            continue;
                        }
                        if rev > self.next {
                            self.catch_up(rev - 1).await?;
                        }
                        self.deliver(event.clone()).await?;
                    }
                    self.progress.advance(self.next - 1);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let upto = self.upgrade()?.current();
                    self.catch_up(upto).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Stop::Error(S::closed())),
            }
        }
    }

    fn upgrade(&self) -> Result<Arc<S>, Stop> {
        self.shared
            .upgrade()
            .ok_or_else(|| Stop::Error(S::closed()))
    }

    /// Hands `event` to the stream. Each send needs room for two, so that one slot is always
    /// left for the error a watch may end with; a reader that leaves no room for
    /// [`SLOW_WATCH_GRACE`] ends the watch.
    async fn deliver(&mut self, event: Event) -> Result<(), Stop> {
        self.next = after(event.kv.mod_revision.get())?;
        if event.kv.key.starts_with(&self.prefix) {
            // Room at once (a reader that keeps up): no timer, no clock read.
            let mut permits = match self.tx.try_reserve_many(2) {
                Ok(permits) => permits,
                Err(mpsc::error::TrySendError::Closed(())) => return Err(Stop::Dropped),
                Err(mpsc::error::TrySendError::Full(())) => {
                    match tokio::time::timeout(SLOW_WATCH_GRACE, self.tx.reserve_many(2)).await {
                        Ok(Ok(permits)) => permits,
                        Ok(Err(_)) => return Err(Stop::Dropped),
                        Err(_) => {
                            return Err(Stop::Error(BackendError::WatchTooSlow(SLOW_WATCH_GRACE)))
                        }
                    }
                }
            };
            if let Some(permit) = permits.next() {
                permit.send(Ok(event));
            }
        }
        Ok(())
    }

    /// Delivers every logged change in `next ..= upto`, a chunk at a time.
    async fn catch_up(&mut self, upto: i64) -> Result<(), Stop> {
        while self.next <= upto {
            let (events, covered) = {
                let shared = self.upgrade()?;
                shared
                    .replay(self.next, upto, &self.prefix)
                    .map_err(Stop::Error)?
            };
            for event in events {
                self.deliver(event).await?;
            }
            self.next = self.next.max(after(covered)?);
            self.progress.advance(self.next - 1);
        }
        Ok(())
    }
}

/// The revision after `rev`.
fn after(rev: i64) -> Result<i64, Stop> {
    rev.checked_add(1).ok_or_else(|| {
        Stop::Error(BackendError::Corrupt(
            "revision counter overflow".to_string(),
        ))
    })
}
