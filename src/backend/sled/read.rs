//! Reads of the current state (`kv`) and of past revisions (`history`). Readers call them under
//! the commit lock, having checked that no in-flight batch touches what they read; the writer
//! reads current values through [`Shared::get_current`] as it applies a batch.

use ::sled::IVec;

use super::codec::{
    decode_floor, decode_history_key, decode_history_value, decode_record, escape_key, floor_key,
    history_key_with, history_prefix, record_mod_revision, Slot,
};
use std::ops::Bound;

use super::layers::{prefix_range, Layers, Merged, TreeId};
use super::Shared;
use crate::backend::{BackendError, KeyValue, RangeRequest, RangeResponse, Revision};

impl Shared {
    /// A range read; the caller holds the commit lock and checked it touches no in-flight key.
    pub(super) fn range_locked(
        &self,
        layers: &Layers,
        req: &RangeRequest,
    ) -> Result<RangeResponse, BackendError> {
        let current = self.current.load();

        let revision = match req.revision {
            None => current,
            Some(rev) => {
                self.check_read_revision(rev)?;
                rev
            }
        };
        if req.end.as_ref().is_some_and(|end| *end <= req.start) {
            return Ok(RangeResponse {
                kvs: Vec::new(),
                more: false,
                revision,
            });
        }
        let mut kvs = if revision == current {
            self.range_current(layers, req)?
        } else {
            self.range_at(layers, req, revision)?
        };
        let more = req.limit > 0 && kvs.len() > req.limit;
        kvs.truncate(if req.limit > 0 { req.limit } else { kvs.len() });
        Ok(RangeResponse {
            kvs,
            more,
            revision,
        })
    }

    /// A count of what a range read would return (its limit ignored); the caller holds the
    /// commit lock and checked it touches no in-flight key. At the current revision only the
    /// keys are walked; no value is decoded or copied.
    pub(super) fn count_locked(
        &self,
        layers: &Layers,
        req: &RangeRequest,
    ) -> Result<(u64, Revision), BackendError> {
        let all = RangeRequest {
            limit: 0,
            ..req.clone()
        };
        if req.revision.is_some_and(|rev| rev != self.current.load())
            || req.end.as_ref().is_some_and(|end| *end <= req.start)
        {
            let resp = self.range_locked(layers, &all)?;
            return Ok((resp.kvs.len() as u64, resp.revision));
        }
        let range = key_range(&req.start, req.end.as_deref());
        let mut count = 0u64;
        for item in layers.range(&self.kv, TreeId::Kv, range, false) {
            item?;
            count += 1;
        }
        Ok((count, self.current.load()))
    }

    /// Checks a read revision against the current and compacted revisions (caller holds the
    /// read lock).
    pub(super) fn check_read_revision(&self, revision: Revision) -> Result<(), BackendError> {
        let current = self.current.load();
        if revision > current {
            return Err(BackendError::FutureRevision {
                requested: revision,
                current,
            });
        }
        let compacted = self.compacted.load();
        if revision < compacted {
            return Err(BackendError::Compacted {
                requested: revision,
                compacted,
            });
        }
        Ok(())
    }

    pub(super) fn get_current(
        &self,
        layers: &Layers,
        key: &[u8],
    ) -> Result<Option<KeyValue>, BackendError> {
        match layers.get(&self.kv, TreeId::Kv, key)? {
            Some(bytes) => Ok(Some(decode_record(key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The revision of the key's current version, if it exists (its record's `mod_revision`,
    /// read without copying the value).
    pub(super) fn current_revision_of(
        &self,
        layers: &Layers,
        key: &[u8],
    ) -> Result<Option<Revision>, BackendError> {
        match layers.get(&self.kv, TreeId::Kv, key)? {
            Some(bytes) => Ok(Some(record_mod_revision(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The version of `key` written exactly at `revision`, if it is still kept: the current one
    /// or one in `history` (a tombstone there is no version).
    pub(super) fn record_at(
        &self,
        layers: &Layers,
        key: &[u8],
        revision: Revision,
    ) -> Result<Option<KeyValue>, BackendError> {
        if let Some(bytes) = layers.get(&self.kv, TreeId::Kv, key)? {
            if record_mod_revision(&bytes)? == revision {
                return decode_record(key, &bytes).map(Some);
            }
        }
        let hkey = history_key_with(&history_prefix(key), revision);
        match layers.get(&self.history, TreeId::History, &hkey)? {
            Some(bytes) => decode_history_value(key, &bytes),
            None => Ok(None),
        }
    }

    /// The key as of `revision`: its current version (in `kv`) if that is at or below
    /// `revision`, otherwise the newest retained older version (in `history`).
    pub(super) fn get_at(
        &self,
        layers: &Layers,
        key: &[u8],
        revision: Revision,
    ) -> Result<Option<KeyValue>, BackendError> {
        let prefix = history_prefix(key);
        if let Some(marker) = layers.get(&self.history, TreeId::History, &floor_key(&prefix))? {
            let floor = decode_floor(&marker)?;
            if revision < floor {
                return Err(BackendError::Compacted {
                    requested: revision,
                    compacted: floor,
                });
            }
        }
        if let Some(bytes) = layers.get(&self.kv, TreeId::Kv, key)? {
            if record_mod_revision(&bytes)? <= revision {
                return decode_record(key, &bytes).map(Some);
            }
        }
        let versions = (
            Bound::Included(history_key_with(&prefix, Revision::FIRST)),
            Bound::Included(history_key_with(&prefix, revision)),
        );
        let newest = layers
            .range(&self.history, TreeId::History, versions, true)
            .next()
            .transpose()?;
        match newest {
            Some((_, value)) => decode_history_value(key, &value),
            None => Ok(None),
        }
    }

    fn range_current(
        &self,
        layers: &Layers,
        req: &RangeRequest,
    ) -> Result<Vec<KeyValue>, BackendError> {
        let iter = layers.range(
            &self.kv,
            TreeId::Kv,
            key_range(&req.start, req.end.as_deref()),
            false,
        );
        let take = take_count(req.limit);
        let mut kvs = Vec::new();
        for item in iter.take(take) {
            let (key, value) = item?;
            kvs.push(decode_record(&key, &value)?);
        }
        Ok(kvs)
    }

    /// A range at a past revision: each key's newest version at or below `revision`, from its
    /// current version (`kv`) or its older ones (`history`), both scanned in key order.
    fn range_at(
        &self,
        layers: &Layers,
        req: &RangeRequest,
        revision: Revision,
    ) -> Result<Vec<KeyValue>, BackendError> {
        let start = escape_key(&req.start);
        let escaped_end = req.end.as_deref().map(escape_key);
        let history = layers.range(
            &self.history,
            TreeId::History,
            key_range(&start, escaped_end.as_deref()),
            false,
        );
        let current = layers.range(
            &self.kv,
            TreeId::Kv,
            key_range(&req.start, req.end.as_deref()),
            false,
        );
        let mut merge = Merge {
            current: current.peekable(),
            revision,
            take: take_count(req.limit),
            kvs: Vec::new(),
        };
        let mut group: Option<HistoryGroup> = None;
        for item in history {
            let (hkey, value) = item?;
            let (key, slot) = decode_history_key(&hkey)?;
            if group.as_ref().is_some_and(|g| g.key != key) {
                if let Some(done) = group.take() {
                    if merge.history_key(done)? {
                        return Ok(merge.kvs);
                    }
                }
            }
            let g = group.get_or_insert_with(|| HistoryGroup {
                key,
                floor: None,
                newest: None,
            });
            match slot {
                Slot::Floor => g.floor = Some(decode_floor(&value)?),
                Slot::At(rev) if rev <= revision => g.newest = Some(value),
                Slot::At(_) => {}
            }
        }
        if let Some(done) = group {
            if merge.history_key(done)? {
                return Ok(merge.kvs);
            }
        }
        merge.current_keys_before(None)?;
        Ok(merge.kvs)
    }
}

/// Merges, in key order, the current versions of a range with the older versions of its keys.
struct Merge<'a> {
    current: std::iter::Peekable<Merged<'a>>,
    revision: Revision,
    take: usize,
    kvs: Vec<KeyValue>,
}

impl Merge<'_> {
    /// Adds the current versions (at or below the revision) of keys before `key` (all keys if
    /// None) that have no older versions. Returns whether enough keys were found.
    fn current_keys_before(&mut self, key: Option<&[u8]>) -> Result<bool, BackendError> {
        while self.kvs.len() < self.take {
            let before = match self.current.peek() {
                None => return Ok(false),
                Some(Ok((k, _))) => key.is_none_or(|key| k.as_ref() < key),
                Some(Err(_)) => true,
            };
            if !before {
                return Ok(false);
            }
            if let Some(kv) = self.next_current()? {
                self.kvs.push(kv);
            }
        }
        Ok(true)
    }

    /// Takes the next current version: decoded if it is at or below the revision.
    fn next_current(&mut self) -> Result<Option<KeyValue>, BackendError> {
        match self.current.next() {
            Some(item) => {
                let (k, value) = item?;
                if record_mod_revision(&value)? <= self.revision {
                    decode_record(&k, &value).map(Some)
                } else {
                    Ok(None)
                }
            }
            None => Ok(None),
        }
    }

    /// Adds the version at the revision of a key with older versions: its current one if that
    /// is at or below the revision, else the newest older one. Returns whether enough keys were
    /// found.
    fn history_key(&mut self, group: HistoryGroup) -> Result<bool, BackendError> {
        if self.current_keys_before(Some(&group.key))? {
            return Ok(true);
        }
        let mut found = None;
        if let Some(Ok((k, _))) = self.current.peek() {
            if k.as_ref() == group.key.as_slice() {
                found = self.next_current()?;
            }
        }
        let found = match found {
            Some(kv) => Some(kv),
            None => group.finish(self.revision)?,
        };
        if let Some(kv) = found {
            self.kvs.push(kv);
        }
        Ok(self.kvs.len() >= self.take)
    }
}

/// One key's history entries while scanning a range at a past revision.
struct HistoryGroup {
    key: Vec<u8>,
    /// Versions below this were pruned.
    floor: Option<Revision>,
    /// Newest entry at or below the read revision.
    newest: Option<IVec>,
}

impl HistoryGroup {
    fn finish(self, revision: Revision) -> Result<Option<KeyValue>, BackendError> {
        if let Some(floor) = self.floor.filter(|floor| revision < *floor) {
            return Err(BackendError::Compacted {
                requested: revision,
                compacted: floor,
            });
        }
        match self.newest {
            Some(value) => decode_history_value(&self.key, &value),
            None => Ok(None),
        }
    }
}

/// The keys from `start` up to `end` (excluded), or with the prefix `start` if `end` is None.
fn key_range(start: &[u8], end: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    match end {
        None => prefix_range(start),
        Some(end) => (
            Bound::Included(start.to_vec()),
            Bound::Excluded(end.to_vec()),
        ),
    }
}

/// How many keys to read for a limit: one more than the limit, to know whether there are more.
fn take_count(limit: usize) -> usize {
    if limit == 0 {
        usize::MAX
    } else {
        limit.saturating_add(1)
    }
}
