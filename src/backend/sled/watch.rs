//! Watches: the sled engine's logged changes, as [`crate::backend::follow`] replays them
//! after a revision before it follows the writer's live events.

use std::ops::Bound;

use super::codec::{decode_logged_event, decode_rev_key, rev_bytes, LoggedEvent};
use super::layers::{Layers, TreeId};
use super::{writer_gone, Shared};
use crate::backend::follow::Replay;
use crate::backend::{BackendError, Event, EventKind, KeyValue, Revision};

/// Log entries read at a time when a watch replays.
const REPLAY_CHUNK: usize = 256;

impl Replay for Shared {
    fn replay(
        &self,
        next: i64,
        upto: i64,
        prefix: &[u8],
    ) -> Result<(Vec<Event>, i64), BackendError> {
        let revision = |r: i64| {
            Revision::new(r).ok_or_else(|| BackendError::Corrupt(format!("no revision {r}")))
        };
        let chunk = read_log_chunk(self, revision(next)?, revision(upto)?)?;
        let covered = chunk.last().map_or(next, |e| e.kv.mod_revision.get());
        let events = chunk
            .into_iter()
            .filter(|e| e.kv.key.starts_with(prefix))
            .collect();
        Ok((events, covered))
    }

    fn current(&self) -> i64 {
        self.current.load().get()
    }

    fn closed() -> BackendError {
        writer_gone()
    }
}

/// Reads up to [`REPLAY_CHUNK`] consecutive log entries starting exactly at `from`, with the
/// versions they name read from `kv` and `history` under the commit lock (so that they are
/// consistent with each other and with [`Shared::history_pruned_to`]).
fn read_log_chunk(
    shared: &Shared,
    from: Revision,
    upto: Revision,
) -> Result<Vec<Event>, BackendError> {
    let mut events = Vec::new();
    let guard = shared.read_guard()?;
    // Checked under the lock: a log chunk in sled may still hold entries below the compacted
    // revision (`logchunk.rs`), whose versions may be gone.
    let compacted = shared.compacted.load().max(shared.history_pruned_to.load());
    if from < compacted {
        return Err(BackendError::Compacted {
            requested: from,
            compacted,
        });
    }
    let layers = &guard.layers;
    let entries = layers
        .range(
            &shared.log,
            TreeId::Log,
            (
                Bound::Included(rev_bytes(from).to_vec()),
                Bound::Included(rev_bytes(upto).to_vec()),
            ),
            false,
        )
        .take(REPLAY_CHUNK);
    for (expected, item) in (from.get()..).zip(entries) {
        let (key, value) = item?;
        let rev = decode_rev_key(&key)?;
        if rev.get() != expected {
            break;
        }
        let event = match decode_logged_event(&value)? {
            LoggedEvent::Full(event) => event,
            LoggedEvent::Ref { kind, key, prev } => {
                shared.event_from_versions(layers, kind, key, rev, prev)?
            }
        };
        if event.kv.mod_revision != rev {
            return Err(BackendError::Corrupt(format!(
                "log entry {rev} holds an event of revision {}",
                event.kv.mod_revision
            )));
        }
        events.push(event);
    }
    if events.is_empty() {
        // The writer removes log entries leaving the window when it applies the batch that
        // raises the compacted revision, before that is published.
        let compacted = shared.compacted.load().max(shared.history_pruned_to.load());
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

impl Shared {
    /// The event of a change logged without values: the version it wrote and the one it
    /// replaced, from `kv` and `history`. The caller holds the commit lock.
    fn event_from_versions(
        &self,
        layers: &Layers,
        kind: EventKind,
        key: Vec<u8>,
        rev: Revision,
        prev: Option<Revision>,
    ) -> Result<Event, BackendError> {
        let prev = match prev {
            Some(prev) => Some(self.version_for_log(layers, &key, prev, rev)?),
            None => None,
        };
        let kv = match kind {
            EventKind::Put => self.version_for_log(layers, &key, rev, rev)?,
            EventKind::Delete => KeyValue {
                key,
                value: Vec::new(),
                create_revision: None,
                mod_revision: rev,
                version: 0,
            },
        };
        Ok(Event { kind, kv, prev })
    }

    /// The version of `key` written at `at`, which the log event of revision `event` names. It
    /// is kept while the log holds the event; if it is gone, the writer has raised the compacted
    /// revision past the event (in sled, before publishing it): that is a compaction.
    fn version_for_log(
        &self,
        layers: &Layers,
        key: &[u8],
        at: Revision,
        event: Revision,
    ) -> Result<KeyValue, BackendError> {
        if let Some(found) = self.record_at(layers, key, at)? {
            return Ok(found);
        }
        let pruned_to = self.history_pruned_to.load();
        if event < pruned_to {
            Err(BackendError::Compacted {
                requested: event,
                compacted: pruned_to,
            })
        } else {
            Err(BackendError::Corrupt(format!(
                "the version at revision {at} named by log entry {event} is missing"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::super::codec::{encode_event, rev_bytes};
    use super::super::layers::TreeId;
    use super::super::{SledBackend, SledOptions};
    use crate::backend::{Backend, Event, EventKind, Expect, KeyValue, Revision};

    fn rev(r: i64) -> Revision {
        Revision::new(r).expect("a revision")
    }

    fn version(value: &[u8], create: i64, at: i64, version: i64) -> KeyValue {
        KeyValue {
            key: b"k".to_vec(),
            value: value.to_vec(),
            create_revision: Some(rev(create)),
            mod_revision: rev(at),
            version,
        }
    }

    #[tokio::test]
    async fn replay_reads_values_from_the_versions_and_format_2_events_as_they_are() {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = SledBackend::open(dir.path(), SledOptions::default()).expect("open");
        backend
            .put(b"k", b"v1".to_vec(), Expect::Any)
            .await
            .expect("put");
        backend
            .put(b"k", b"v2".to_vec(), Expect::Any)
            .await
            .expect("put");
        backend.delete(b"k", Expect::Any).await.expect("delete");
        let replay = |from: i64, n: usize| {
            let backend = &backend;
            async move {
                let mut stream = backend.watch(b"", Some(rev(from))).await.expect("watch");
                let mut events = Vec::new();
                for _ in 0..n {
                    events.push(stream.next().await.expect("an event").expect("no error"));
                }
                events
            }
        };
        let deleted = KeyValue {
            key: b"k".to_vec(),
            value: Vec::new(),
            create_revision: None,
            mod_revision: rev(4),
            version: 0,
        };
        assert_eq!(
            replay(2, 3).await,
            vec![
                Event {
                    kind: EventKind::Put,
                    kv: version(b"v1", 2, 2, 1),
                    prev: None,
                },
                Event {
                    kind: EventKind::Put,
                    kv: version(b"v2", 2, 3, 2),
                    prev: Some(version(b"v1", 2, 2, 1)),
                },
                Event {
                    kind: EventKind::Delete,
                    kv: deleted.clone(),
                    prev: Some(version(b"v2", 2, 3, 2)),
                },
            ]
        );
        // A store upgraded from format 2 may hold self-contained events: read as they are.
        let old = Event {
            kind: EventKind::Put,
            kv: version(b"as logged", 2, 3, 2),
            prev: Some(version(b"before", 2, 2, 1)),
        };
        // (It replaces the event in the active layer, which is read before sled.)
        backend.shared.write_guard().layers.active.extend(
            TreeId::Log,
            vec![(
                rev_bytes(rev(3)).as_slice().into(),
                Some(encode_event(&old).into()),
            )],
        );
        let replayed = replay(3, 2).await;
        assert_eq!(replayed[0], old);
        assert_eq!(replayed[1].kv, deleted);
    }
}
