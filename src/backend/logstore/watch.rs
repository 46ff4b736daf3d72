//! Watches: the log-structured engine's logged changes (the change log's window), as
//! [`crate::backend::follow`] replays them after a revision before it follows the writer's live
//! events. Values are read from the segments outside the index's lock.

use super::{closed, Shared};
use crate::backend::follow::Replay;
use crate::backend::{BackendError, Event, Revision};

/// Changes read at a time when a watch replays.
const REPLAY_CHUNK: usize = 256;

impl Replay for Shared {
    fn replay(
        &self,
        next: i64,
        upto: i64,
        prefix: &[u8],
    ) -> Result<(Vec<Event>, i64), BackendError> {
        let (pending, covered) = self.read_guard()?.events(next, upto, REPLAY_CHUNK)?;
        let events = pending
            .into_iter()
            .filter(|p| p.key.starts_with(prefix))
            .map(|p| p.read())
            .collect::<Result<Vec<_>, _>>()?;
        Ok((events, covered))
    }

    fn current(&self) -> i64 {
        self.index().current
    }

    fn closed() -> BackendError {
        closed()
    }
}

/// Where a new watch starts: `from`, or after the current revision.
pub(super) fn start(from: Option<Revision>, current: i64) -> i64 {
    from.map_or(current + 1, Revision::get)
}
