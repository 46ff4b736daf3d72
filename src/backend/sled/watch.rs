//! Watches: replay of the change log after a revision, then live events from the writer, with
//! no gap and no duplicate. A watcher that falls behind the live channel re-reads the log.

use std::sync::{Arc, Weak};

use tokio::sync::broadcast;

use super::codec::{decode_event, decode_rev_key, rev_bytes};
use super::{revision_overflow, sled_error, writer_gone, Shared};
use crate::backend::{BackendError, Event, Revision};

/// Batches of events kept for live watchers before a slow one lags (and then re-reads the log).
pub(super) const WATCH_BROADCAST_CAPACITY: usize = 1024;
/// Events buffered between a watch's task and its stream.
pub(super) const WATCH_STREAM_CAPACITY: usize = 256;
/// Log entries read at a time when a watch replays.
const REPLAY_CHUNK: usize = 256;

/// Feeds one watch stream: replays the log from `next`, then follows live events.
pub(super) struct WatchTask {
    /// Weak, so that an idle watch does not keep the database open after the backend is dropped.
    pub(super) shared: Weak<Shared>,
    pub(super) prefix: Vec<u8>,
    /// The revision after the last one delivered (or skipped by the prefix filter).
    pub(super) next: Revision,
    pub(super) tx: tokio::sync::mpsc::Sender<Result<Event, BackendError>>,
}

/// Why a watch task stops.
enum Stop {
    /// The stream was dropped.
    Dropped,
    /// The stream ends with this error.
    Error(BackendError),
}

impl WatchTask {
    pub(super) async fn run(
        mut self,
        mut live: broadcast::Receiver<Arc<Vec<Event>>>,
        replay_upto: Revision,
    ) {
        let stop = match self.follow(&mut live, replay_upto).await {
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
        replay_upto: Revision,
    ) -> Result<std::convert::Infallible, Stop> {
        self.catch_up(replay_upto).await?;
        loop {
            let received = tokio::select! {
                _ = self.tx.closed() => return Err(Stop::Dropped),
                received = live.recv() => received,
            };
            match received {
                Ok(batch) => {
                    for event in batch.iter() {
                        let rev = event.kv.mod_revision;
                        if rev < self.next {
                            continue;
                        }
                        if let Some(before) = rev.prev().filter(|before| *before >= self.next) {
                            self.catch_up(before).await?;
                        }
                        self.deliver(event.clone()).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let upto = self.upgrade()?.current.load();
                    self.catch_up(upto).await?;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Stop::Error(writer_gone()));
                }
            }
        }
    }

    fn upgrade(&self) -> Result<Arc<Shared>, Stop> {
        self.shared
            .upgrade()
            .ok_or_else(|| Stop::Error(writer_gone()))
    }

    async fn deliver(&mut self, event: Event) -> Result<(), Stop> {
        self.next = event
            .kv
            .mod_revision
            .next()
            .ok_or_else(|| Stop::Error(revision_overflow()))?;
        if event.kv.key.starts_with(&self.prefix) {
            self.tx.send(Ok(event)).await.map_err(|_| Stop::Dropped)?;
        }
        Ok(())
    }

    /// Delivers every logged change in `next ..= upto` (all durable), reading the log in
    /// chunks; a missing entry means it was compacted away.
    async fn catch_up(&mut self, upto: Revision) -> Result<(), Stop> {
        while self.next <= upto {
            let chunk = {
                let shared = self.upgrade()?;
                read_log_chunk(&shared, self.next, upto).map_err(Stop::Error)?
            };
            for event in chunk {
                self.deliver(event).await?;
            }
        }
        Ok(())
    }
}

/// Reads up to [`REPLAY_CHUNK`] consecutive log entries starting exactly at `from`.
fn read_log_chunk(
    shared: &Shared,
    from: Revision,
    upto: Revision,
) -> Result<Vec<Event>, BackendError> {
    let mut events = Vec::new();
    let entries = shared
        .log
        .range(rev_bytes(from)..=rev_bytes(upto))
        .take(REPLAY_CHUNK);
    for (expected, item) in (from.get()..).zip(entries) {
        let (key, value) = item.map_err(sled_error)?;
        let rev = decode_rev_key(&key)?;
        if rev.get() != expected {
            break;
        }
        let event = decode_event(&value)?;
        if event.kv.mod_revision != rev {
            return Err(BackendError::Corrupt(format!(
                "log entry {rev} holds an event of revision {}",
                event.kv.mod_revision
            )));
        }
        events.push(event);
    }
    if events.is_empty() {
        let compacted = shared.compacted.load();
        return Err(if from < compacted {
            BackendError::Compacted {
                requested: from,
                compacted,
            }
        } else {
            BackendError::Corrupt(format!("log entry {from} is missing"))
        });
    }
    Ok(events)
}
