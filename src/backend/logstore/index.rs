//! The in-memory index: every retained version of every key, with where its value lies in the
//! segments, the change log's window for watches, and the retention rules (the same as the sled
//! backend's, see the module docs of [`super`]).

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::format::Moved;
use super::LogOptions;
use crate::backend::{BackendError, Event, EventKind, KeyValue, Revision};

/// Where a value lies: segment `seg`, `len` bytes at `offset` from the file's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    pub(super) seg: u32,
    pub(super) len: u32,
    pub(super) offset: u64,
}

/// One version of a key. A tombstone (a delete) has `version` 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Version {
    pub(super) rev: i64,
    pub(super) create: i64,
    pub(super) version: i64,
    pub(super) loc: Loc,
}

impl Version {
    pub(super) fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    /// The version's revisions, as a relocation writes them.
    pub(super) fn meta(&self) -> Moved {
        Moved {
            rev: self.rev,
            create: self.create,
            version: self.version,
        }
    }
}

/// Bytes a version is counted for in its segment's live bytes besides its key and value (its
/// framing and revisions, roughly).
const VERSION_OVERHEAD: u64 = 48;

/// What a version keeps alive in its segment.
fn weight(key_len: usize, v: &Version) -> u64 {
    u64::from(v.loc.len) + key_len as u64 + VERSION_OVERHEAD
}

/// A segment as the index sees it. Sequence number 0 is no segment: deletes written by a batch
/// count there (a delete's version has no value to locate).
#[derive(Debug, Default)]
struct Seg {
    /// The open file (`None` once the segment is deleted, or before it is added).
    file: Option<Arc<File>>,
    /// Its size on disk.
    size: u64,
    /// Bytes of the versions the index keeps whose value is in this segment.
    live: u64,
    /// The last revision of the log once this segment ends (the current one while it is
    /// the head).
    last_rev: i64,
}

/// A key's versions, oldest first (its current one last), and which of them reads may see.
#[derive(Debug, Default)]
pub(super) struct KeyState {
    /// Every version kept: the readable ones, plus those the change log's window still needs
    /// (every version at or above the compacted revision and the one before the first of them,
    /// which a replayed event names as `prev`).
    versions: VecDeque<Version>,
    /// How many of the newest versions reads may see (the sled backend's retained entries).
    readable: usize,
    /// Reads of this key below this revision are compacted (0: none).
    floor: i64,
}

impl KeyState {
    /// The newest version at or below `rev`.
    fn at(&self, rev: i64) -> Option<&Version> {
        let i = self.versions.partition_point(|v| v.rev <= rev);
        i.checked_sub(1).map(|i| &self.versions[i])
    }

    /// The current version, if the key exists now.
    pub(super) fn current(&self) -> Option<&Version> {
        self.versions.back().filter(|v| !v.is_tombstone())
    }

    /// Applies the retention rules after a change or a compaction: versions at or below the
    /// compacted revision but the newest (that one too if it is a delete) stop being readable,
    /// then at most `keep` versions stay readable (0: all), the oldest readable one setting the
    /// floor; versions neither readable nor needed by the log's window are dropped (and no
    /// longer counted live in `segs`).
    ///
    /// Runs on every write of the key, so it looks at as few versions as it can: the readable
    /// ones only when the oldest of them is at or below the compacted revision, and the old
    /// ones from the front only as far as some could be dropped (in a steady state one or two),
    /// rather than searching all the versions the window keeps.
    fn retain(&mut self, compacted: i64, keep: usize, key_len: usize, segs: &mut [Seg]) {
        let len = self.versions.len();
        let start = len - self.readable;
        // Versions are in revision order: none of the readable ones is compacted unless the
        // oldest is.
        let newest_compacted = match self.versions.get(start) {
            Some(oldest) if oldest.rev <= compacted => (start..len)
                .rev()
                .find(|&i| self.versions[i].rev <= compacted),
            _ => None,
        };
        if let Some(i) = newest_compacted {
            let cut = if self.versions[i].is_tombstone() {
                i + 1
            } else {
                i
            };
            self.readable = len - cut.max(start);
        }
        if self.floor <= compacted {
            self.floor = 0;
        }
        if keep > 0 && self.readable > keep {
            self.readable = keep;
            self.floor = self.versions[len - keep].rev;
        }
        // Only the versions older than the readable ones can go: count those below the
        // compacted revision from the front, one further than could be dropped (beyond that
        // the count changes nothing).
        let droppable = len - self.readable;
        let below = self
            .versions
            .iter()
            .take(droppable + 1)
            .take_while(|v| v.rev < compacted)
            .count();
        // The window keeps the version before its first one (a replayed event's `prev`).
        let window_start = if below < len {
            below.saturating_sub(1)
        } else {
            len
        };
        let drop = droppable.min(window_start);
        for v in self.versions.drain(..drop) {
            if let Some(seg) = segs.get_mut(v.loc.seg as usize) {
                seg.live = seg.live.saturating_sub(weight(key_len, &v));
            }
        }
    }
}

/// A read's answer before its value is read: the version and the file holding it.
pub(super) struct Found {
    pub(super) key: Vec<u8>,
    pub(super) version: Version,
    file: Arc<File>,
}

impl Found {
    /// The key-value, reading the value from its segment.
    pub(super) fn read(self) -> Result<KeyValue, BackendError> {
        let value = read_value(&self.file, self.version.loc)?;
        Ok(key_value(self.key, &self.version, value))
    }
}

pub(super) fn read_value(file: &File, loc: Loc) -> Result<Vec<u8>, BackendError> {
    let mut value = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut value, loc.offset).map_err(|e| {
        BackendError::Io(format!(
            "cannot read {} bytes at offset {} of segment {}: {e}",
            loc.len, loc.offset, loc.seg
        ))
    })?;
    Ok(value)
}

/// A version as the trait shows it (a tombstone as a delete event's `kv`).
pub(super) fn key_value(key: Vec<u8>, v: &Version, value: Vec<u8>) -> KeyValue {
    KeyValue {
        key,
        value,
        create_revision: if v.is_tombstone() {
            None
        } else {
            Revision::new(v.create)
        },
        mod_revision: Revision::new(v.rev).unwrap_or(Revision::FIRST),
        version: v.version,
    }
}

/// A change to apply: a put (its value's location, and the key's create revision and version
/// after it, as the writer worked them out and the record keeps them), or a delete.
pub(super) enum Change {
    Put { loc: Loc, create: i64, version: i64 },
    Delete,
}

/// The index: keys, the log's window and the segment files.
#[derive(Debug)]
pub(super) struct Index {
    keys: BTreeMap<Vec<u8>, KeyState>,
    /// The key of every change in the log's window, in revision order: `window[i]` changed at
    /// revision `window_first + i`.
    window: VecDeque<Vec<u8>>,
    window_first: i64,
    pub(super) current: i64,
    pub(super) compacted: i64,
    /// Segments by sequence number.
    segs: Vec<Seg>,
    opts: LogOptions,
}

impl Index {
    pub(super) fn new(opts: LogOptions) -> Self {
        Index {
            keys: BTreeMap::new(),
            window: VecDeque::new(),
            window_first: Revision::FIRST.get() + 1,
            current: Revision::FIRST.get(),
            compacted: Revision::FIRST.get(),
            segs: Vec::new(),
            opts,
        }
    }

    fn seg_mut(&mut self, seq: u32) -> &mut Seg {
        let i = seq as usize;
        if self.segs.len() <= i {
            self.segs.resize_with(i + 1, Seg::default);
        }
        &mut self.segs[i]
    }

    /// Adds segment `seq` of `size` bytes, which starts at the current revision.
    pub(super) fn add_file(&mut self, seq: u32, file: Arc<File>, size: u64) {
        let current = self.current;
        let seg = self.seg_mut(seq);
        seg.file = Some(file);
        seg.size = size;
        seg.last_rev = current;
    }

    /// Notes that segment `seq` holds the log up to the current revision.
    pub(super) fn note_end(&mut self, seq: u32) {
        let current = self.current;
        self.seg_mut(seq).last_rev = current;
    }

    /// Forgets a deleted segment (its versions must have been relocated).
    /// Forgets segment `seq`; returns its file.
    pub(super) fn remove_file(&mut self, seq: u32) -> Option<Arc<File>> {
        std::mem::take(self.seg_mut(seq)).file
    }

    fn file(&self, seg: u32) -> Result<Arc<File>, BackendError> {
        self.segs
            .get(seg as usize)
            .and_then(|s| s.file.clone())
            .ok_or_else(|| BackendError::Corrupt(format!("segment {seg} is not open")))
    }

    /// The last revision segment `seq` holds.
    pub(super) fn last_rev(&self, seq: u32) -> i64 {
        self.segs.get(seq as usize).map_or(0, |s| s.last_rev)
    }

    /// Bytes of the segments on disk and of the versions kept live in them.
    pub(super) fn space(&self) -> (u64, u64) {
        self.segs
            .iter()
            .skip(1)
            .fold((0, 0), |(size, live), s| (size + s.size, live + s.live))
    }

    /// The segment the cleaner should relocate next, if any: the oldest, once the segments
    /// take more than `min_bytes` and more than twice the bytes of what the index keeps; never
    /// `head`.
    pub(super) fn cleaning_victim(&self, head: u32, min_bytes: u64) -> Option<u32> {
        let (size, live) = self.space();
        if size <= min_bytes.max(live.saturating_mul(2)) {
            return None;
        }
        let oldest = self.segs.iter().skip(1).position(|s| s.file.is_some())? + 1;
        let oldest = u32::try_from(oldest).ok()?;
        (oldest != head).then_some(oldest)
    }

    /// The version of `key` at exactly `rev`, if the index still keeps it, with the key's floor.
    pub(super) fn kept(&self, key: &[u8], rev: i64) -> Option<(i64, Version)> {
        let state = self.keys.get(key)?;
        let i = state.versions.partition_point(|v| v.rev < rev);
        let v = state.versions.get(i).filter(|v| v.rev == rev)?;
        Some((state.floor, *v))
    }

    /// Below which revision no version of `key` is kept any more, as far as revisions up to
    /// `through` go: its oldest kept version's, or `through + 1` if it keeps none up to there.
    pub(super) fn gone_below(&self, key: &[u8], through: i64) -> i64 {
        let oldest = self
            .keys
            .get(key)
            .and_then(|s| s.versions.front())
            .map_or(i64::MAX, |v| v.rev);
        oldest.min(through.saturating_add(1))
    }

    /// Opening, first pass: drops the installed versions of `key` below `below` (a relocation
    /// said they were gone; an older relocation record still held them).
    pub(super) fn forget_below(&mut self, key: &[u8], below: i64) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        let n = state.versions.partition_point(|v| v.rev < below);
        for v in state.versions.drain(..n) {
            if let Some(seg) = self.segs.get_mut(v.loc.seg as usize) {
                seg.live = seg.live.saturating_sub(weight(key.len(), &v));
            }
        }
        state.readable = state.versions.len();
        if state.versions.is_empty() {
            self.keys.remove(key);
        }
    }

    /// Points the kept version of `key` at `rev` to its relocated value.
    pub(super) fn relocated(&mut self, key: &[u8], rev: i64, loc: Loc) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        let i = state.versions.partition_point(|v| v.rev < rev);
        let Some(v) = state.versions.get_mut(i).filter(|v| v.rev == rev) else {
            return;
        };
        let old = *v;
        v.loc = loc;
        let moved = *v;
        if let Some(seg) = self.segs.get_mut(old.loc.seg as usize) {
            seg.live = seg.live.saturating_sub(weight(key.len(), &old));
        }
        self.seg_mut(loc.seg).live += weight(key.len(), &moved);
    }

    /// Opening, first pass: installs a version a relocation record holds, with the key's
    /// floor. Versions of one key may come in any order; [`Index::finish_install`] follows.
    pub(super) fn install(&mut self, key: &[u8], floor: i64, meta: Moved, loc: Loc) {
        let v = Version {
            rev: meta.rev,
            create: meta.create,
            version: meta.version,
            loc,
        };
        let state = match self.keys.get_mut(key) {
            Some(state) => state,
            None => self.keys.entry(key.to_vec()).or_default(),
        };
        state.floor = state.floor.max(floor);
        let i = state.versions.partition_point(|o| o.rev < v.rev);
        let replaced = match state.versions.get_mut(i) {
            Some(o) if o.rev == v.rev => Some(std::mem::replace(o, v)),
            _ => {
                state.versions.insert(i, v);
                None
            }
        };
        state.readable = state.versions.len();
        if let Some(old) = replaced {
            if let Some(seg) = self.segs.get_mut(old.loc.seg as usize) {
                seg.live = seg.live.saturating_sub(weight(key.len(), &old));
            }
        }
        self.seg_mut(loc.seg).live += weight(key.len(), &v);
    }

    /// Opening, end of the first pass: the relocated versions cover every revision up to
    /// `through`, with `compacted` the compacted revision when the last was written. Rebuilds
    /// the log's window from them (every revision from the compacted one on must be there) and
    /// applies retention.
    ///
    /// The compacted revision may be beyond `through` (the batches after it raised it): the
    /// index is then compacted only up to `through` here, with an empty window, so that the
    /// second pass can apply those batches; the caller compacts to `compacted` after it.
    pub(super) fn finish_install(
        &mut self,
        through: i64,
        compacted: i64,
    ) -> Result<(), BackendError> {
        self.current = self.current.max(through);
        self.compacted = self.compacted.max(compacted.min(through));
        self.window_first = compacted
            .min(through + 1)
            .max(self.compacted)
            .max(Revision::FIRST.get() + 1);
        let mut window: Vec<(i64, &Vec<u8>)> = self
            .keys
            .iter()
            .flat_map(|(k, s)| s.versions.iter().map(move |v| (v.rev, k)))
            .filter(|(rev, _)| *rev >= self.window_first)
            .collect();
        window.sort_unstable_by_key(|(rev, _)| *rev);
        for (i, (rev, _)) in window.iter().enumerate() {
            if *rev != self.window_first + i as i64 {
                return Err(BackendError::Corrupt(format!(
                    "the relocated versions miss revision {} of the change log",
                    self.window_first + i as i64
                )));
            }
        }
        if self.window_first + (window.len() as i64) <= self.current {
            return Err(BackendError::Corrupt(format!(
                "the relocated versions end at revision {}, before revision {through}",
                self.window_first + window.len() as i64 - 1
            )));
        }
        self.window = window.into_iter().map(|(_, k)| k.clone()).collect();
        let (compacted, keep) = (self.compacted, self.opts.history_per_key);
        let segs = &mut self.segs;
        self.keys.retain(|key, state| {
            state.retain(compacted, keep, key.len(), segs);
            !state.versions.is_empty()
        });
        Ok(())
    }

    /// How many keys the index holds (live or with retained history).
    pub(super) fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Applies one change at the next revision; returns the version written and the one it
    /// replaced (if the key existed).
    pub(super) fn apply(&mut self, key: &[u8], change: Change) -> (Version, Option<Version>) {
        let rev = self.current + 1;
        if let Change::Put { loc, .. } = &change {
            let w = u64::from(loc.len) + key.len() as u64 + VERSION_OVERHEAD;
            self.seg_mut(loc.seg).live += w;
        }
        let state = match self.keys.get_mut(key) {
            Some(state) => state,
            None => self.keys.entry(key.to_vec()).or_default(),
        };
        let prev = state.current().copied();
        let version = match change {
            Change::Put {
                loc,
                create,
                version,
            } => Version {
                rev,
                create,
                version,
                loc,
            },
            Change::Delete => Version {
                rev,
                create: 0,
                version: 0,
                loc: Loc {
                    seg: 0,
                    len: 0,
                    offset: 0,
                },
            },
        };
        state.versions.push_back(version);
        state.readable += 1;
        self.current = rev;
        self.window.push_back(key.to_vec());
        if self.opts.log_retention > 0 {
            let oldest = rev - i64::try_from(self.opts.log_retention).unwrap_or(i64::MAX) + 1;
            self.compacted = self.compacted.max(oldest);
        }
        self.retain_key(key);
        self.expire_window();
        (version, prev)
    }

    /// Raises the compacted revision to `rev` (at most the current one) and prunes every key.
    pub(super) fn compact(&mut self, rev: i64) {
        if rev <= self.compacted {
            return;
        }
        self.compacted = rev.min(self.current);
        let (compacted, keep) = (self.compacted, self.opts.history_per_key);
        let segs = &mut self.segs;
        self.keys.retain(|key, state| {
            state.retain(compacted, keep, key.len(), segs);
            !state.versions.is_empty()
        });
        self.expire_window();
    }

    fn retain_key(&mut self, key: &[u8]) {
        let (compacted, keep) = (self.compacted, self.opts.history_per_key);
        if let Some(state) = self.keys.get_mut(key) {
            state.retain(compacted, keep, key.len(), &mut self.segs);
            if state.versions.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// Drops changes below the compacted revision from the window, pruning their keys.
    fn expire_window(&mut self) {
        while self.window_first < self.compacted {
            let Some(key) = self.window.pop_front() else {
                self.window_first = self.compacted;
                break;
            };
            self.window_first += 1;
            self.retain_key(&key);
        }
    }

    /// The revision a read reflects: `rev` (checked), or the current one.
    pub(super) fn read_revision(&self, rev: Option<Revision>) -> Result<Revision, BackendError> {
        match rev {
            Some(rev) => {
                self.check_revision(rev)?;
                Ok(rev)
            }
            None => Ok(self.revision()),
        }
    }

    /// Checks a read revision against the current and compacted ones.
    fn check_revision(&self, rev: Revision) -> Result<(), BackendError> {
        if rev.get() > self.current {
            return Err(BackendError::FutureRevision {
                requested: rev,
                current: self.revision(),
            });
        }
        if rev.get() < self.compacted {
            return Err(BackendError::Compacted {
                requested: rev,
                compacted: self.compacted_revision(),
            });
        }
        Ok(())
    }

    pub(super) fn revision(&self) -> Revision {
        Revision::new(self.current).unwrap_or(Revision::FIRST)
    }

    pub(super) fn compacted_revision(&self) -> Revision {
        Revision::new(self.compacted).unwrap_or(Revision::FIRST)
    }

    /// The revision of `key`'s current version, if it exists now.
    pub(super) fn current_rev(&self, key: &[u8]) -> Option<i64> {
        self.keys.get(key)?.current().map(|v| v.rev)
    }

    /// The key's version as of `rev` (checked by [`Index::check_revision`]), if it existed.
    pub(super) fn at(&self, key: &[u8], rev: i64) -> Result<Option<Found>, BackendError> {
        let Some(state) = self.keys.get(key) else {
            return Ok(None);
        };
        self.found(key, state, rev)
    }

    fn found(&self, key: &[u8], state: &KeyState, rev: i64) -> Result<Option<Found>, BackendError> {
        let version = if rev == self.current {
            state.current()
        } else {
            if rev < state.floor {
                return Err(BackendError::Compacted {
                    requested: Revision::new(rev).unwrap_or(Revision::FIRST),
                    compacted: Revision::new(state.floor).unwrap_or(Revision::FIRST),
                });
            }
            state.at(rev).filter(|v| !v.is_tombstone())
        };
        version
            .map(|v| {
                Ok(Found {
                    key: key.to_vec(),
                    version: *v,
                    file: self.file(v.loc.seg)?,
                })
            })
            .transpose()
    }

    /// Keys in `[start, end)` (`end` `None`: every key with prefix `start`) as of `rev`, at most
    /// `limit` (0: all) plus one to tell whether there are more.
    pub(super) fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        rev: i64,
        limit: usize,
    ) -> Result<Vec<Found>, BackendError> {
        let mut out = Vec::new();
        for (key, state) in self.keys_in(start, end) {
            if let Some(found) = self.found(key, state, rev)? {
                out.push(found);
                if limit > 0 && out.len() > limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// How many keys of the range exist as of `rev`.
    pub(super) fn count(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        rev: i64,
    ) -> Result<u64, BackendError> {
        let mut n = 0;
        for (key, state) in self.keys_in(start, end) {
            let exists = if rev == self.current {
                state.current().is_some()
            } else {
                self.found(key, state, rev)?.is_some()
            };
            n += u64::from(exists);
        }
        Ok(n)
    }

    fn keys_in<'a>(
        &'a self,
        start: &'a [u8],
        end: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a KeyState)> + 'a {
        let prefix = end.is_none();
        let ordered = match end {
            Some(end) if end <= start => None,
            Some(end) => Some(
                self.keys
                    .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end))),
            ),
            None => Some(
                self.keys
                    .range::<[u8], _>((Bound::Included(start), Bound::Unbounded)),
            ),
        };
        ordered
            .into_iter()
            .flatten()
            .take_while(move |(k, _)| !prefix || k.starts_with(start))
    }

    /// The logged changes of revisions `from ..= upto` (at most `max`), as events still to be
    /// read from their segments, and the last revision covered (revision 1, a new store's, has
    /// no change).
    pub(super) fn events(
        &self,
        from: i64,
        upto: i64,
        max: usize,
    ) -> Result<(Vec<PendingEvent>, i64), BackendError> {
        if from < self.compacted {
            return Err(BackendError::Compacted {
                requested: Revision::new(from).unwrap_or(Revision::FIRST),
                compacted: self.compacted_revision(),
            });
        }
        let mut out = Vec::new();
        let mut rev = from.max(self.window_first);
        while rev <= upto.min(self.current) && out.len() < max {
            let i = usize::try_from(rev - self.window_first).unwrap_or(usize::MAX);
            let key = self.window.get(i).ok_or_else(|| lost(rev))?;
            let state = self.keys.get(key).ok_or_else(|| lost(rev))?;
            let i = state.versions.partition_point(|v| v.rev < rev);
            let version = *state
                .versions
                .get(i)
                .filter(|v| v.rev == rev)
                .ok_or_else(|| lost(rev))?;
            let prev = i
                .checked_sub(1)
                .map(|p| state.versions[p])
                .filter(|p| !p.is_tombstone());
            out.push(PendingEvent {
                key: key.clone(),
                file: (!version.is_tombstone())
                    .then(|| self.file(version.loc.seg))
                    .transpose()?,
                version,
                prev_file: prev.map(|p| self.file(p.loc.seg)).transpose()?,
                prev,
            });
            rev += 1;
        }
        Ok((out, rev - 1))
    }
}

fn lost(rev: i64) -> BackendError {
    BackendError::Corrupt(format!("the change log lost the change of revision {rev}"))
}

/// A logged change whose values are still to be read.
pub(super) struct PendingEvent {
    pub(super) key: Vec<u8>,
    version: Version,
    file: Option<Arc<File>>,
    prev: Option<Version>,
    prev_file: Option<Arc<File>>,
}

impl PendingEvent {
    /// The event, reading its values.
    pub(super) fn read(self) -> Result<Event, BackendError> {
        let value = match &self.file {
            Some(file) => read_value(file, self.version.loc)?,
            None => Vec::new(),
        };
        let prev = match (self.prev, &self.prev_file) {
            (Some(p), Some(file)) => {
                Some(key_value(self.key.clone(), &p, read_value(file, p.loc)?))
            }
            _ => None,
        };
        let kind = if self.version.is_tombstone() {
            EventKind::Delete
        } else {
            EventKind::Put
        };
        Ok(Event {
            kind,
            kv: key_value(self.key, &self.version, value),
            prev,
        })
    }
}
