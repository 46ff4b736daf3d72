//! Watches: replay of the change log's window after a revision, then live events from the
//! writer, with no gap and no duplicate. A watcher that falls behind the live channel re-reads
//! the window.

use std::sync::{Arc, Weak};

use tokio::sync::broadcast;

use super::{closed, Shared};
use crate::backend::{BackendError, Event, Revision};

/// Batches of events kept for live watchers before a slow one lags (and then re-reads).
pub(super) const WATCH_BROADCAST_CAPACITY: usize = 1024;
/// Events buffered between a watch's task and its stream.
pub(super) const WATCH_STREAM_CAPACITY: usize = 256;
/// Changes read at a time when a watch replays.
const REPLAY_CHUNK: usize = 256;

/// Feeds one watch stream.
pub(super) struct WatchTask {
    /// Weak, so that an idle watch does not keep the store open after the backend is dropped.
    pub(super) shared: Weak<Shared>,
    pub(super) prefix: Vec<u8>,
    /// The revision after the last one delivered (or skipped by the prefix filter).
    pub(super) next: i64,
    pub(super) tx: tokio::sync::mpsc::Sender<Result<Event, BackendError>>,
}

enum Stop {
    Dropped,
    Error(BackendError),
}

impl WatchTask {
    pub(super) async fn run(mut self, mut live: broadcast::Receiver<Arc<Vec<Event>>>, upto: i64) {
        let stop = match self.follow(&mut live, upto).await {
            Ok(never) => match never {},
            Err(stop) => stop,
        };
        if let Stop::Error(e) = stop {
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
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let upto = self.upgrade()?.index().current;
                    self.catch_up(upto).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Stop::Error(closed())),
            }
        }
    }

    fn upgrade(&self) -> Result<Arc<Shared>, Stop> {
        self.shared.upgrade().ok_or_else(|| Stop::Error(closed()))
    }

    async fn deliver(&mut self, event: Event) -> Result<(), Stop> {
        self.next = event.kv.mod_revision.get() + 1;
        if event.kv.key.starts_with(&self.prefix) {
            self.tx.send(Ok(event)).await.map_err(|_| Stop::Dropped)?;
        }
        Ok(())
    }

    /// Delivers every logged change in `next ..= upto`, a chunk at a time; the values are read
    /// from the segments outside the index's lock.
    async fn catch_up(&mut self, upto: i64) -> Result<(), Stop> {
        while self.next <= upto {
            let (pending, covered) = {
                let shared = self.upgrade()?;
                let index = shared.read_guard().map_err(Stop::Error)?;
                index
                    .events(self.next, upto, REPLAY_CHUNK)
                    .map_err(Stop::Error)?
            };
            for p in pending {
                if !p.key.starts_with(&self.prefix) {
                    self.next = p.rev() + 1;
                    continue;
                }
                let event = p.read().map_err(Stop::Error)?;
                self.deliver(event).await?;
            }
            self.next = self.next.max(covered + 1);
        }
        Ok(())
    }
}

/// Where a new watch starts: `from`, or after the current revision.
pub(super) fn start(from: Option<Revision>, current: i64) -> i64 {
    from.map_or(current + 1, Revision::get)
}
