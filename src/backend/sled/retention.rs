//! Retention of history: per-key version limits with floor markers, pruning of the change log
//! below the compacted revision, and explicit compaction. All of it runs on the writer thread.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ::sled::{Batch, Tree};

use super::codec::{
    corrupt_history, decode_floor, decode_history_key, decode_history_slot, encode_floor,
    encode_tombstone, floor_key, history_key_with, history_prefix, leaving_of_event,
    record_mod_revision, rev_bytes, OnLeaving, Slot, TAG_RECORD, TAG_TOMBSTONE,
};
use super::layers::{Layers, TreeId, Writes};
use super::writer::{Change, Writer};
use super::{logchunk, sled_error, Shared, META_COMPACTED};
use crate::backend::{BackendError, Revision};

/// History keys deleted per sled batch during an explicit compaction.
const COMPACT_CHUNK: usize = 4096;

/// The retained history of one key, as the writer maintains it.
///
/// Since format 3 the change log holds no values: an event reads the version it wrote and the
/// version it replaced from `kv` and `history`. So every version from the newest one below the
/// compacted revision on stays in `history` while the log may need it, even below the key's
/// floor (which is what reads see); such versions are pruned once the log no longer covers them.
#[derive(Default)]
pub(super) struct KeyHistory {
    /// Retained entries (the current version included), oldest first: revision and whether it
    /// is a tombstone.
    entries: Vec<(Revision, bool)>,
    /// Reads of versions below this fail; versions below it may still be kept for the log.
    floor: Option<Revision>,
}

impl KeyHistory {
    /// Applies compaction at `compacted`: the log keeps `compacted` and later revisions, whose
    /// events need the versions they replaced, so every entry older than the newest one below
    /// `compacted` is dropped, and that one too if it is a tombstone (a tombstone replaced is
    /// no version). A floor at or below `compacted` no longer matters and is dropped.
    ///
    /// The revisions dropped are appended to `dropped`: the oldest entries, in order.
    fn prune_compacted(&mut self, compacted: Revision, dropped: &mut Vec<Revision>) {
        if let Some(below) = compacted.prev() {
            if let Some(newest) = self.entries.iter().rposition(|(rev, _)| *rev <= below) {
                let tombstone = self.entries[newest].1;
                let cut = if tombstone { newest + 1 } else { newest };
                dropped.extend(self.entries.drain(..cut).map(|(rev, _)| rev));
            }
        }
        if self.floor.is_some_and(|floor| floor <= compacted) {
            self.floor = None;
        }
    }

    /// Keeps the newest `keep` versions readable (0: all): the oldest of them becomes the floor.
    /// Versions counted are those reads at `compacted` or later can see: from the newest entry
    /// at or below `compacted` (unless it is a tombstone) and from the floor on. Nothing is
    /// removed here: versions below the floor go with [`KeyHistory::prune_compacted`].
    fn prune_count(&mut self, keep: usize, compacted: Revision) {
        if keep == 0 {
            return;
        }
        let from_compacted = match self.entries.iter().rposition(|(rev, _)| *rev <= compacted) {
            Some(newest) if self.entries[newest].1 => newest + 1,
            Some(newest) => newest,
            None => 0,
        };
        let from_floor = match self.floor {
            Some(floor) => self.entries.partition_point(|(rev, _)| *rev < floor),
            None => 0,
        };
        let visible = self.entries.len() - from_compacted.max(from_floor).min(self.entries.len());
        if visible > keep {
            self.floor = Some(self.entries[self.entries.len() - keep].0);
        }
    }

    /// Whether entries below the floor are kept for the log.
    fn keeps_below_floor(&self) -> bool {
        self.floor
            .is_some_and(|floor| self.entries.first().is_some_and(|(rev, _)| *rev < floor))
    }
}

impl Shared {
    /// The history tree changes for a batch's applied changes: new entries, pruned ones and
    /// floor markers. `left_window` are the keys deleted at revisions that the batch's
    /// compacted revision leaves behind: their history is pruned now rather than the next time
    /// they are written (which, for a deleted Secret, may be never).
    ///
    /// Each change is pruned at `compacted_after(its revision)`, the compacted revision right
    /// after it, and every key at the batch's `compacted` last: the floors (which count the
    /// versions reads can see) are then those the same changes applied one at a time leave,
    /// wherever batches begin and end.
    ///
    /// Returns the batch and the revisions of the changes after which their key's history keeps
    /// versions below its floor for the log: their events are flagged, so that the key is pruned
    /// again when they leave the log's window.
    pub(super) fn history_changes(
        &self,
        changes: &[Change],
        left_window: &BTreeMap<Vec<u8>, OnLeaving>,
        compacted: Revision,
        compacted_after: impl Fn(Revision) -> Revision,
    ) -> Result<(Writes, HashSet<Revision>), BackendError> {
        let keep = self.opts.history_per_key;
        let mut per_key: BTreeMap<&[u8], Vec<&Change>> = BTreeMap::new();
        for key in left_window.keys() {
            per_key.entry(key.as_slice()).or_default();
        }
        let mut below_floor = HashSet::new();
        for change in changes {
            per_key
                .entry(change.key.as_slice())
                .or_default()
                .push(change);
        }
        let mut batch = Writes::new();
        // Each key's history comes from the writer's cache when it holds it (`keyhist.rs`).
        let mut cache = self.history_cache();
        for (key, changes) in per_key {
            let prefix = history_prefix(key);
            // Keys only pruned here: deleted ones are not worth remembering; the others were
            // written lately.
            let written = !changes.is_empty()
                || left_window
                    .get(key)
                    .is_some_and(|l| *l == OnLeaving::Reprune);
            let cached = if keep > 0 { cache.take(&prefix) } else { None };
            let mut history = match cached {
                Some(history) => history,
                // What `load_history` would find, without a scan: the only retained version is
                // the one the batch's first change replaces (a key created before the log's
                // window and never changed since, such as every key a migration rewrites).
                None if !left_window.contains_key(key)
                    && changes.first().is_some_and(|c| c.replaced_only_version) =>
                {
                    let only = changes[0].replaced.as_ref().map(|(rev, _)| *rev);
                    KeyHistory {
                        entries: only
                            .filter(|rev| keep > 0 || *rev <= compacted)
                            .map(|rev| (rev, false))
                            .into_iter()
                            .collect(),
                        floor: None,
                    }
                }
                None => self
                    .with_layers(|layers| self.load_history(layers, key, &prefix, compacted, keep))
                    .inspect_err(|_| {
                        // Keys remembered earlier in this batch describe a batch not applied.
                        cache.clear();
                    })?,
            };
            let original_newest = history.entries.last().map(|(rev, _)| *rev);
            let original_floor = history.floor;
            // Pruning drops the oldest entries, in order (first the loaded ones, then this
            // batch's changes): everything dropped is at or below the last one dropped, and
            // everything kept above it. (With unlimited versions only the entries at or below
            // the compacted revision are loaded; the others are never dropped.)
            let mut dropped = Vec::new();
            let first = changes
                .first()
                .map_or(compacted, |c| compacted_after(c.revision));
            history.prune_compacted(first, &mut dropped);
            for change in &changes {
                let after = compacted_after(change.revision);
                history
                    .entries
                    .push((change.revision, change.record.is_none()));
                history.prune_compacted(after, &mut dropped);
                history.prune_count(keep, after);
                if history.keeps_below_floor() {
                    below_floor.insert(change.revision);
                }
            }
            history.prune_compacted(compacted, &mut dropped);
            for rev in &dropped {
                if original_newest.is_some_and(|newest| *rev <= newest) {
                    batch.push((history_key_with(&prefix, *rev).into(), None));
                }
            }
            let dropped_upto = dropped.last().copied();
            let is_dropped = |rev: Revision| dropped_upto.is_some_and(|upto| rev <= upto);
            // `history` holds every retained version but the current one (that is in `kv`):
            // each version a change replaced, and each delete's tombstone.
            for change in changes {
                if let Some((rev, record)) = &change.replaced {
                    if !is_dropped(*rev) {
                        batch.push((history_key_with(&prefix, *rev).into(), Some(record.clone())));
                    }
                }
                if change.record.is_none() && !is_dropped(change.revision) {
                    batch.push((
                        history_key_with(&prefix, change.revision).into(),
                        Some(encode_tombstone(change.revision).into()),
                    ));
                }
            }
            if history.floor != original_floor {
                let marker = floor_key(&prefix);
                match history.floor {
                    None => batch.push((marker.into(), None)),
                    Some(floor) => batch.push((marker.into(), Some(encode_floor(floor).into()))),
                }
            }
            if keep > 0 && written {
                // With unlimited versions `load_history` reads only part of a key's history.
                cache.put(prefix, history);
            }
        }
        Ok((batch, below_floor))
    }

    /// Loads a key's retained history. With unlimited versions (`keep == 0`) only the entries at
    /// or below `compacted` matter (the others are never pruned), so only those are read.
    fn load_history(
        &self,
        layers: &Layers,
        key: &[u8],
        prefix: &[u8],
        compacted: Revision,
        keep: usize,
    ) -> Result<KeyHistory, BackendError> {
        let mut history = KeyHistory {
            entries: Vec::new(),
            floor: None,
        };
        for item in layers.scan_prefix(&self.history, TreeId::History, prefix) {
            let (hkey, value) = item?;
            let rev = match decode_history_slot(prefix, &hkey)? {
                Slot::Floor => {
                    history.floor = Some(decode_floor(&value)?);
                    continue;
                }
                Slot::At(rev) => rev,
            };
            if keep == 0 && rev > compacted {
                break;
            }
            let tombstone = match value.first() {
                Some(&TAG_TOMBSTONE) => true,
                Some(&TAG_RECORD) => false,
                _ => return Err(corrupt_history(prefix, rev)),
            };
            history.entries.push((rev, tombstone));
        }
        // The current version is in `kv` (stores of format 2 also hold it in `history`).
        if let Some(current) = self.current_revision_of(layers, key)? {
            let newer = history.entries.last().is_none_or(|(rev, _)| *rev < current);
            if newer && (keep > 0 || current <= compacted) {
                history.entries.push((current, false));
            }
        }
        Ok(history)
    }
}

impl Writer {
    pub(super) fn compact(&mut self, revision: Revision) -> Result<(), BackendError> {
        let shared = Arc::clone(&self.shared);
        shared.check_failed()?;
        let current = shared.current.load();
        if revision > current {
            return Err(BackendError::FutureRevision {
                requested: revision,
                current,
            });
        }
        if revision <= shared.compacted.load() {
            return Ok(());
        }
        // Durable through the write-ahead log is not enough here: the compacted revision goes
        // to sled and sled is made durable (a checkpoint) before anything is deleted.
        {
            // Raise the compacted revision durably before deleting anything, so that no read
            // below it can ever see a partly pruned history, even after a crash.
            let _guard = shared.write_guard();
            let durable = shared
                .meta
                .insert(META_COMPACTED, &rev_bytes(revision))
                .map_err(sled_error)
                .and_then(|_| shared.make_durable());
            if let Err(error) = durable {
                self.fail(&error);
                return Err(error);
            }
            shared.compacted.store(revision);
            shared.history_pruned_to.fetch_max(revision);
        }
        // Readers at or above `revision` see the same answers with or without these entries.
        prune_log(&shared.log, revision)?;
        prune_all_history(&shared.history, &shared.kv, revision)?;
        shared.db.flush().map_err(sled_error)?;
        Ok(())
    }
}

/// Applies compaction at `revision` to every key's history: what [`Writer::compact`] does after
/// raising the compacted revision, and what opening a store does once for stores written before
/// deleted keys were pruned as they left the log's window.
pub(super) fn prune_all_history(
    history_tree: &Tree,
    kv_tree: &Tree,
    revision: Revision,
) -> Result<(), BackendError> {
    // A key's current version is in `kv`: it counts as the key's newest entry.
    let with_current = |key: &[u8], history: &mut KeyHistory| -> Result<(), BackendError> {
        if let Some(bytes) = kv_tree.get(key).map_err(sled_error)? {
            let current = record_mod_revision(&bytes)?;
            let newer = history.entries.last().is_none_or(|(rev, _)| *rev < current);
            if newer && current <= revision {
                history.entries.push((current, false));
            }
        }
        Ok(())
    };
    let mut batch = Batch::default();
    let mut pending = 0usize;
    let mut group: Option<(Vec<u8>, KeyHistory)> = None;
    for item in history_tree.iter() {
        let (hkey, value) = item.map_err(sled_error)?;
        let (key, slot) = decode_history_key(&hkey)?;
        if group.as_ref().is_some_and(|(k, _)| *k != key) {
            if let Some((done_key, mut done)) = group.take() {
                with_current(&done_key, &mut done)?;
                pending += compaction_deletes(&done_key, done, revision, &mut batch);
            }
        }
        let (_, history) = group.get_or_insert_with(|| {
            (
                key,
                KeyHistory {
                    entries: Vec::new(),
                    floor: None,
                },
            )
        });
        match slot {
            Slot::Floor => history.floor = Some(decode_floor(&value)?),
            Slot::At(rev) if rev <= revision => {
                let tombstone = value.first() == Some(&TAG_TOMBSTONE);
                history.entries.push((rev, tombstone));
            }
            Slot::At(_) => {}
        }
        if pending >= COMPACT_CHUNK {
            history_tree
                .apply_batch(std::mem::take(&mut batch))
                .map_err(sled_error)?;
            pending = 0;
        }
    }
    if let Some((key, mut history)) = group {
        with_current(&key, &mut history)?;
        compaction_deletes(&key, history, revision, &mut batch);
    }
    history_tree.apply_batch(batch).map_err(sled_error)
}

/// Adds to `batch` the deletions that compaction at `compacted` makes in one key's history
/// (`history` holds its entries at or below `compacted` and its floor). Returns how many.
fn compaction_deletes(
    key: &[u8],
    mut history: KeyHistory,
    compacted: Revision,
    batch: &mut Batch,
) -> usize {
    let floor_before = history.floor;
    let mut dropped = Vec::new();
    history.prune_compacted(compacted, &mut dropped);
    let prefix = history_prefix(key);
    let mut deleted = 0;
    for rev in dropped {
        batch.remove(history_key_with(&prefix, rev));
        deleted += 1;
    }
    if floor_before.is_some() && history.floor.is_none() {
        batch.remove(floor_key(&prefix));
        deleted += 1;
    }
    deleted
}

/// The keys whose log events at revisions from `from` up to (not including) `to` ask for
/// pruning when they leave the log's window (a rise of the compacted revision from `from` to
/// `to`): deleted keys, and keys that kept versions below their floor for the log. A key with
/// both counts as deleted.
pub(super) fn leaving_between(
    shared: &Shared,
    layers: &Layers,
    from: Revision,
    to: Revision,
) -> Result<BTreeMap<Vec<u8>, OnLeaving>, BackendError> {
    let mut keys: BTreeMap<Vec<u8>, OnLeaving> = BTreeMap::new();
    if to <= from {
        return Ok(keys);
    }
    let window = (
        std::ops::Bound::Included(rev_bytes(from).to_vec()),
        std::ops::Bound::Excluded(rev_bytes(to).to_vec()),
    );
    for item in layers.range(&shared.log, TreeId::Log, window, false) {
        let (_, event) = item?;
        match leaving_of_event(&event)? {
            (_, OnLeaving::Nothing) => {}
            (key, OnLeaving::Deleted) => {
                keys.insert(key.to_vec(), OnLeaving::Deleted);
            }
            (key, OnLeaving::Reprune) => {
                keys.entry(key.to_vec()).or_insert(OnLeaving::Reprune);
            }
        }
    }
    Ok(keys)
}

/// Deletes the log's chunks (and older formats' per-revision entries) that are wholly below
/// `compacted`. One by one, not as a sled batch: leftovers below the compacted revision are
/// harmless (never read, pruned again on open), and every sled batch or transaction makes sled
/// write out its I/O buffer twice.
pub(super) fn prune_log(log: &Tree, compacted: Revision) -> Result<(), BackendError> {
    for key in logchunk::below(log, compacted)? {
        log.remove(key).map_err(sled_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_rules() {
        let rev = |r| Revision::new(r).unwrap();
        let mut h = KeyHistory {
            entries: vec![
                (rev(2), false),
                (rev(4), true),
                (rev(6), false),
                (rev(8), false),
            ],
            floor: None,
        };
        h.prune_count(3, rev(1));
        // The floor moves; the entry below it stays for the log until compaction passes it.
        assert_eq!(h.entries.len(), 4);
        assert_eq!(h.floor, Some(rev(4)));
        assert!(h.keeps_below_floor());
        h.prune_compacted(rev(5), &mut Vec::new());
        // The newest entry below 5 is a tombstone: dropped with everything older.
        assert_eq!(h.entries, vec![(rev(6), false), (rev(8), false)]);
        assert_eq!(h.floor, None);
        assert!(!h.keeps_below_floor());
        h.prune_compacted(rev(7), &mut Vec::new());
        assert_eq!(h.entries, vec![(rev(6), false), (rev(8), false)]);
        // Compaction at 8: the event at 8 replaced 6, which stays (unreadable: below 8).
        let mut dropped = Vec::new();
        h.prune_compacted(rev(8), &mut dropped);
        assert_eq!(h.entries, vec![(rev(6), false), (rev(8), false)]);
        assert!(dropped.is_empty());
        h.prune_compacted(rev(9), &mut dropped);
        assert_eq!(h.entries, vec![(rev(8), false)]);
        assert_eq!(dropped, vec![rev(6)]);
        // Counting skips what reads cannot see: below the compacted revision's version.
        let mut h = KeyHistory {
            entries: vec![(rev(2), false), (rev(5), false), (rev(6), false)],
            floor: None,
        };
        h.prune_count(2, rev(5));
        assert_eq!(h.floor, None);
        h.prune_count(1, rev(5));
        assert_eq!(h.floor, Some(rev(6)));
    }
}
