//! Watches on etcd: the checks before one opens, and the feed that resumes a broken etcd watch
//! on the next reachable member from the revision after the last event delivered.

use super::{kv_from, EtcdBackend, WatchParts};
use crate::backend::{prefix_end, Backend, BackendError, Event, EventKind, Revision};
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

/// Events buffered per watch before etcd's stream is back-pressured.
pub(super) const WATCH_BUFFER: usize = 256;

impl EtcdBackend {
    /// Refuses a watch etcd could not replay whole. etcd accepts a watch from a compacted
    /// revision and cancels it later, so this asks first. It also refuses a watch from exactly
    /// the compacted revision: etcd before 3.4.34 and 3.5.16 drops a delete at that revision
    /// from the replay (etcd-io/etcd#18089), so such a watch could miss a deletion; the caller
    /// relists instead, as after any compaction.
    pub(super) async fn check_watchable(&self, from: Revision) -> Result<(), BackendError> {
        let compacted = self.compacted_revision().await?;
        let replayable = match compacted.next() {
            Some(after) if compacted > Revision::FIRST => after,
            _ => compacted,
        };
        if from < replayable {
            return Err(BackendError::Compacted {
                requested: from,
                compacted: replayable,
            });
        }
        Ok(())
    }

    /// Opens an etcd watch on `prefix` (every key when empty) from `from` (`None`: from now),
    /// with `prev_kv`. A compacted `from` gives [`BackendError::Compacted`].
    pub(super) async fn open_watch(
        &self,
        prefix: &[u8],
        from: Option<Revision>,
    ) -> Result<WatchParts, BackendError> {
        let (key, range_end) = if prefix.is_empty() {
            (vec![0], vec![0])
        } else {
            (prefix.to_vec(), prefix_end(prefix))
        };
        let create = pb::WatchCreateRequest {
            key,
            range_end,
            start_revision: super::wire(from),
            prev_kv: true,
            ..Default::default()
        };
        let parts = self
            .client
            .watch(create)
            .await
            .map_err(|s| self.error(s, None))?;
        let created = &parts.created;
        if let Some(compacted) = Revision::new(created.compact_revision) {
            self.compacted.fetch_max(compacted);
            return Err(BackendError::Compacted {
                // etcd only reports compaction for a watch from a past revision.
                requested: from.unwrap_or(compacted),
                compacted,
            });
        }
        if created.canceled {
            return Err(BackendError::Io(format!(
                "etcd refused the watch: {}",
                created.cancel_reason
            )));
        }
        Ok(parts)
    }
}

/// Feeds one backend watch stream from etcd. When the member serving it fails, the watch is
/// reopened (on the next reachable member) from the revision after the last event delivered,
/// so a member failure loses and repeats nothing.
pub(super) struct WatchFeed {
    pub(super) backend: EtcdBackend,
    pub(super) prefix: Vec<u8>,
    /// Revision of the next event to deliver.
    pub(super) next: Revision,
    pub(super) tx: tokio::sync::mpsc::Sender<Result<Event, BackendError>>,
}

/// How long a broken watch keeps trying to reopen before it reports `Unavailable`.
const WATCH_RESUME_FOR: std::time::Duration = std::time::Duration::from_secs(30);

impl WatchFeed {
    pub(super) async fn run(mut self, mut parts: WatchParts) {
        loop {
            match self.pump(&mut parts).await {
                Ok(()) => return,
                Err(e @ (BackendError::Compacted { .. } | BackendError::Corrupt(_))) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, next = %self.next, "etcd watch broke; resuming");
                    match self.resume().await {
                        Some(p) => parts = p,
                        None => {
                            let _ = self.tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Reopens the watch from `next`, retrying with backoff for [`WATCH_RESUME_FOR`].
    async fn resume(&mut self) -> Option<WatchParts> {
        let deadline = tokio::time::Instant::now() + WATCH_RESUME_FOR;
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            if self.tx.is_closed() {
                return None;
            }
            let opened = match self.backend.check_watchable(self.next).await {
                Ok(()) => self.backend.open_watch(&self.prefix, Some(self.next)).await,
                Err(e) => Err(e),
            };
            match opened {
                Ok(parts) => match self.went_back(&parts) {
                    None => return Some(parts),
                    Some(e) => {
                        let _ = self.tx.send(Err(e)).await;
                        return None;
                    }
                },
                Err(e @ BackendError::Compacted { .. }) => {
                    let _ = self.tx.send(Err(e)).await;
                    return None;
                }
                Err(_) if tokio::time::Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
                Err(_) => return None,
            }
        }
    }

    /// An etcd whose revision is now below one this watch already delivered has lost history
    /// (restored from a snapshot, or replaced by an empty one): resuming would wait for
    /// revisions that will be reused by other changes, and lose those unnoticed. The watch ends
    /// as if compacted, so that its client lists again (kube-apiserver's clients relist on
    /// 410).
    fn went_back(&self, parts: &WatchParts) -> Option<BackendError> {
        let current = parts
            .created
            .header
            .as_ref()
            .and_then(|h| Revision::new(h.revision))?;
        let delivered = self.next.prev()?;
        if current >= delivered {
            return None;
        }
        tracing::error!(
            delivered = %delivered,
            current = %current,
            "etcd's revision went back below one a watch delivered: it was restored from a backup \
             or replaced; the watch ends so that its client lists again (restart keyward to \
             serve only the restored history)"
        );
        Some(BackendError::Compacted {
            requested: self.next,
            compacted: current,
        })
    }

    /// Delivers events until the receiver goes (Ok) or etcd's stream fails (Err).
    async fn pump(&mut self, parts: &mut WatchParts) -> Result<(), BackendError> {
        loop {
            let msg = tokio::select! {
                _ = self.tx.closed() => return Ok(()),
                msg = parts.responses.message() => msg,
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    return Err(BackendError::Unavailable(
                        "etcd closed the watch stream".into(),
                    ))
                }
                Err(status) => {
                    return Err(BackendError::Unavailable(format!(
                        "etcd watch failed: {}",
                        status.message()
                    )))
                }
            };
            if let Some(compacted) = Revision::new(resp.compact_revision) {
                self.backend.compacted.fetch_max(compacted);
                return Err(BackendError::Compacted {
                    requested: self.next,
                    compacted,
                });
            }
            if resp.canceled {
                return Err(BackendError::Unavailable(format!(
                    "etcd cancelled the watch: {}",
                    resp.cancel_reason
                )));
            }
            // etcd sends every event of a revision in one response, so resuming after the
            // last response's revision neither repeats nor skips an event.
            let mut last = None;
            for ev in resp.events {
                let kind = if ev.r#type == mvccpb::event::EventType::Delete as i32 {
                    EventKind::Delete
                } else {
                    EventKind::Put
                };
                let Some(kv) = ev.kv else { continue };
                let event = Event {
                    kind,
                    kv: kv_from(kv)?,
                    prev: ev.prev_kv.map(kv_from).transpose()?,
                };
                last = last.max(Some(event.kv.mod_revision));
                if self.tx.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
            }
            if let Some(after) = last.and_then(Revision::next) {
                self.next = self.next.max(after);
            }
        }
    }
}
