//! The storage seam: a revisioned key-value store with etcd's semantics, and its
//! implementations (sled embedded; etcd to scale out).
//!
//! - One store-wide revision counter, incremented once per change (put or delete). A new store
//!   is at revision 1, as etcd is, so the first write gets revision 2.
//! - Per key: `create_revision` (revision of the put that created it since it last did not
//!   exist), `mod_revision` (revision of its last change) and `version` (number of puts since
//!   creation, from 1).
//! - Reads may name a past revision; writes may be conditional on the key's `mod_revision`
//!   (optimistic concurrency), or on its absence (create-only).
//! - Watches replay every change after a revision, then follow live changes, with no gap and no
//!   duplicate. History older than what is retained gives [`BackendError::Compacted`].
//!
//! This module knows nothing of Secrets or encryption: keys and values are bytes.

pub mod convert;
pub mod etcd;
mod files;
mod follow;
mod frame;
pub mod legacy;
pub mod logstore;
mod revision;
pub mod sled;
mod spec;
mod stats;

pub use follow::WatchProgress;
pub(crate) use revision::AtomicRevision;
pub use revision::{InvalidRevision, Revision};
pub use spec::BackendSpec;
pub(crate) use stats::{AtomicHistogram, BATCH_SIZE_BOUNDS, SYNC_NANOS_BOUNDS};
pub use stats::{HistogramSnapshot, WriterStats};

pub use self::etcd::{EtcdBackend, EtcdOptions};
pub use self::logstore::{LogBackend, LogOptions};
pub use self::sled::{SledBackend, SledOptions};

use std::pin::Pin;

/// The end of the key range holding every key that starts with `prefix` (etcd's prefix range
/// end): `prefix` with its last byte below 0xff incremented, or `\0` ("no end") if every byte
/// is 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Refuses an empty key, as etcd does.
pub(crate) fn check_key(key: &[u8]) -> Result<(), BackendError> {
    if key.is_empty() {
        return Err(BackendError::InvalidArgument(
            "the key must not be empty".to_string(),
        ));
    }
    Ok(())
}

/// Errors of this layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The requested revision is older than the oldest retained (caller: relist from now).
    #[error("revision {requested} has been compacted; the oldest available is {compacted}")]
    Compacted {
        /// Revision asked for.
        requested: Revision,
        /// Oldest revision still available (exclusive lower bound of what can be replayed).
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision (caller's input).
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// Revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// A request is malformed, e.g. an empty key (caller's input).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The backend cannot serve now: closed, unreachable, or lost quorum (environment).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A watch whose reader took no event for too long while changes waited for it: ended, so
    /// that no reader holds the store's memory by not reading (caller: watch again from the
    /// last revision received, as after any ended watch).
    #[error("the watch fell behind: its reader took no event for {} s while changes waited; watch again from the last resourceVersion received", .0.as_secs())]
    WatchTooSlow(std::time::Duration),
    /// The data on disk was written by an unknown format version (operator: upgrade).
    #[error("unsupported storage format version {found}; this keyward reads version {supported}")]
    UnsupportedFormat {
        /// Version found on disk.
        found: String,
        /// Version this build reads.
        supported: u32,
    },
    /// An embedded store's directory holds the other engine's data (operator: choose the
    /// engine the directory was created with).
    #[error("{dir} holds a {found} store; open it with that engine (this is the {wanted} engine)")]
    OtherEngine {
        /// The directory.
        dir: String,
        /// The engine whose files are there: `sled` or `log-structured`.
        found: &'static str,
        /// The engine that was asked to open it.
        wanted: &'static str,
    },
    /// Stored data is malformed (a bug or disk corruption).
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    /// An I/O or engine error (environment).
    #[error("storage I/O error: {0}")]
    Io(String),
}

impl BackendError {
    /// [`BackendError::OtherEngine`] if `held` says `dir` holds the other embedded engine's
    /// store (the log-structured one's when `sled` opens it, else sled's).
    pub(crate) fn refuse_other_engine(
        dir: &std::path::Path,
        held: bool,
        sled: bool,
    ) -> Result<(), BackendError> {
        let (found, wanted) = if sled {
            ("log-structured", "sled")
        } else {
            ("sled", "log-structured")
        };
        if held {
            return Err(BackendError::OtherEngine {
                dir: dir.display().to_string(),
                found,
                wanted,
            });
        }
        Ok(())
    }

    /// Whether opening an embedded store failed because another process holds it (sled's lock
    /// on its directory), as opposed to the store being unreadable. Both engines word it so.
    pub fn is_locked(&self) -> bool {
        matches!(self, BackendError::Io(m) if m.contains("could not acquire lock"))
    }
}

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty for a delete event).
    pub value: Vec<u8>,
    /// Revision of the put that created this key (since it last did not exist); `None` only
    /// in a delete event.
    pub create_revision: Option<Revision>,
    /// Revision of the key's last change.
    pub mod_revision: Revision,
    /// Puts since creation, from 1; 0 in a delete event.
    pub version: i64,
}

/// Condition for a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Unconditional.
    Any,
    /// The key must not exist (create-only).
    Absent,
    /// The key must exist with exactly this `mod_revision`.
    ModRevision(Revision),
}

/// Result of a put or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Applied (and durable) at `revision`. (What the key held before is in the change's watch
    /// event; no caller needs it here, and an engine would have to read it for every write.)
    Applied {
        /// Revision of this change.
        revision: Revision,
    },
    /// The condition did not hold; nothing changed. `current` is the key now (None if absent).
    Conflict {
        /// The key's current value.
        current: Option<KeyValue>,
    },
    /// Delete of a key that does not exist with [`Expect::Any`]; nothing changed.
    NotFound,
}

/// A range read: keys in `[start, end)`, or every key with prefix `start` if `end` is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// First key (inclusive), or the prefix when `end` is `None`.
    pub start: Vec<u8>,
    /// End key (exclusive); `None` means "every key starting with `start`".
    pub end: Option<Vec<u8>>,
    /// Maximum keys to return; 0 means no limit.
    pub limit: usize,
    /// Read as of this revision; `None` reads the current state.
    pub revision: Option<Revision>,
}

/// The answer to a [`RangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    /// Matching keys in key order.
    pub kvs: Vec<KeyValue>,
    /// More keys matched beyond `limit`; continue from the last key + `\0`.
    pub more: bool,
    /// The revision this read reflects (the request's, or the store's current revision).
    pub revision: Revision,
}

/// Kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The key after the change (for a delete: empty value, `mod_revision` = the delete's
    /// revision, `version` 0, `create_revision` `None`).
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev: Option<KeyValue>,
}

/// A stream of watch events in revision order.
pub type WatchStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<Event, BackendError>> + Send + 'static>>;

/// A revisioned key-value store with etcd's semantics (see the module docs).
///
/// Every write is durable when it returns: it survives `kill -9` and power loss.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Reads one key, optionally as of a past revision. Returns the key (if it exists) and the
    /// revision the read reflects.
    async fn get(
        &self,
        key: &[u8],
        revision: Option<Revision>,
    ) -> Result<(Option<KeyValue>, Revision), BackendError>;

    /// Reads a range of keys.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, BackendError>;

    /// How many keys `req` matches (its `limit` is ignored) and the revision counted at: what
    /// [`Backend::range`] would return, without reading out the values. This default reads the
    /// whole range; backends override it with a cheaper count.
    async fn count(&self, req: RangeRequest) -> Result<(u64, Revision), BackendError> {
        let resp = self.range(RangeRequest { limit: 0, ..req }).await?;
        Ok((resp.kvs.len() as u64, resp.revision))
    }

    /// The `mod_revision` of `key`'s current version (`None` if it does not exist now), if the
    /// backend knows it from memory, without I/O: what [`Backend::get`] would say, without
    /// reading the value. Callers that may not need the value ask this first. This default
    /// says it does not know (`None`); a backend whose reads cost I/O or a round trip either
    /// way keeps it, so that its callers read once.
    fn mod_revision_in_memory(&self, key: &[u8]) -> Option<Result<Option<Revision>, BackendError>> {
        let _ = key;
        None
    }

    /// Writes `value` under `key` if `expect` holds.
    async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expect: Expect,
    ) -> Result<WriteOutcome, BackendError>;

    /// Deletes `key` if `expect` holds.
    async fn delete(&self, key: &[u8], expect: Expect) -> Result<WriteOutcome, BackendError>;

    /// Every change to keys starting with `prefix` at revisions `>= from`, in revision order:
    /// first the retained history, then live changes; `from: None` watches only the changes
    /// after the current revision. `from` older than the compacted revision fails with
    /// [`BackendError::Compacted`].
    async fn watch(
        &self,
        prefix: &[u8],
        from: Option<Revision>,
    ) -> Result<WatchStream, BackendError> {
        Ok(self.watch_with_progress(prefix, from).await?.0)
    }

    /// [`Backend::watch`], and how far it has got if the backend can tell ([`WatchProgress`];
    /// the embedded engines can, etcd's watch does not say without a progress request, so its
    /// is `None`).
    async fn watch_with_progress(
        &self,
        prefix: &[u8],
        from: Option<Revision>,
    ) -> Result<(WatchStream, Option<WatchProgress>), BackendError>;

    /// The current store revision.
    async fn current_revision(&self) -> Result<Revision, BackendError>;

    /// Discards history at revisions `< revision`, as etcd's compaction does (current values are
    /// always kept). Reads and watches at compacted revisions then fail with
    /// [`BackendError::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<(), BackendError>;

    /// The compacted revision: reads and watches need a revision `>=` this.
    async fn compacted_revision(&self) -> Result<Revision, BackendError>;

    /// Counters of the backend's own write path (group commit), read without I/O, for
    /// metrics; `None` if it keeps none (etcd exports its own, such as
    /// `etcd_disk_wal_fsync_duration_seconds`).
    fn write_stats(&self) -> Option<WriterStats> {
        None
    }
}
