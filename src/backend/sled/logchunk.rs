//! The log tree in sled holds its events in **chunks**: one sled entry per run of consecutive
//! revisions, written when a layer reaches sled, instead of one per revision.
//!
//! A key is `be64(first) ‖ be64(last)`, the value `be32(len) ‖ event` for each revision from
//! `first` to `last` in order (events as in `codec.rs`). A layer's log entries become one chunk
//! (several past [`MAX_CHUNK_EVENTS`] or [`MAX_CHUNK_BYTES`]), and a chunk is removed once all of
//! its revisions are below the compacted revision. So a put costs sled one log insert per layer
//! instead of an insert and, when it leaves the window, a removal of its own. Stores of format
//! 4 and older hold one entry per revision, `be64(revision) -> event`, read here as a chunk of
//! one; keys of both kinds sort by their first revision.
//!
//! In memory (the layers) the log stays one entry per revision; [`entries`] turns sled's
//! chunks back into such entries for the readers, which merge them with the layers'.
//! A chunk that straddles the compacted revision keeps its older events until it is wholly
//! below it: readers never ask for revisions below the compacted one (watch replay checks it
//! first; pruning reads only the revisions leaving the window).

use std::ops::Bound;

use ::sled::{IVec, Tree};

use super::codec::rev_bytes;
use super::sled_error;
use crate::backend::{BackendError, Revision};

/// Most events in one chunk.
pub(super) const MAX_CHUNK_EVENTS: usize = 256;
/// A chunk is closed once its events reach this many bytes (well below the size at which sled
/// moves a value to a blob file of its own).
pub(super) const MAX_CHUNK_BYTES: usize = 8 << 10;

/// The sled key of the chunk of revisions `first ..= last`.
pub(super) fn chunk_key(first: Revision, last: Revision) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&rev_bytes(first));
    key[8..].copy_from_slice(&rev_bytes(last));
    key
}

/// The revisions a sled log key covers: a chunk's, or the one of a per-revision entry of format
/// 4 or older.
pub(super) fn span(key: &[u8]) -> Result<(Revision, Revision), BackendError> {
    let rev = |bytes: &[u8]| {
        <[u8; 8]>::try_from(bytes)
            .ok()
            .and_then(Revision::from_be_bytes)
    };
    let span = match key.len() {
        8 => rev(key).map(|r| (r, r)),
        16 => rev(&key[..8]).zip(rev(&key[8..])),
        _ => None,
    };
    match span {
        Some((first, last)) if first <= last => Ok((first, last)),
        _ => Err(BackendError::Corrupt(format!(
            "bad log key of {} bytes",
            key.len()
        ))),
    }
}

/// Builds chunks from a layer's log entries (per-revision keys and events, in revision order):
/// the sled writes that put them in.
pub(super) fn chunks<'a>(
    entries: impl Iterator<Item = (Revision, &'a [u8])>,
) -> Vec<(IVec, Option<IVec>)> {
    let mut out = Vec::new();
    let mut open: Option<(Revision, Revision, Vec<u8>, usize)> = None;
    let close = |out: &mut Vec<(IVec, Option<IVec>)>, (first, last, value, _)| {
        out.push((
            IVec::from(&chunk_key(first, last)[..]),
            Some(IVec::from(value)),
        ));
    };
    for (rev, event) in entries {
        let continues = open.as_ref().is_some_and(|(_, last, value, n)| {
            last.next() == Some(rev) && *n < MAX_CHUNK_EVENTS && value.len() < MAX_CHUNK_BYTES
        });
        if !continues {
            if let Some(done) = open.take() {
                close(&mut out, done);
            }
        }
        let (_, last, value, n) = open.get_or_insert_with(|| (rev, rev, Vec::new(), 0));
        *last = rev;
        *n += 1;
        // Events are far below 4 GiB (a key and two revisions).
        value.extend_from_slice(&u32::try_from(event.len()).unwrap_or(u32::MAX).to_be_bytes());
        value.extend_from_slice(event);
    }
    if let Some(done) = open {
        close(&mut out, done);
    }
    out
}

/// The sled log entries (chunks, or per-revision entries of older formats) whose revisions are
/// all below `compacted`, oldest first.
pub(super) fn below(log: &Tree, compacted: Revision) -> Result<Vec<IVec>, BackendError> {
    let mut keys = Vec::new();
    for item in log.range(..rev_bytes(compacted)) {
        let (key, _) = item.map_err(sled_error)?;
        if span(&key)?.1 >= compacted {
            break;
        }
        keys.push(key);
    }
    Ok(keys)
}

/// The newest revision in sled's log, if it holds any.
pub(super) fn last_revision(log: &Tree) -> Result<Option<Revision>, BackendError> {
    match log.last().map_err(sled_error)? {
        Some((key, _)) => Ok(Some(span(&key)?.1)),
        None => Ok(None),
    }
}

/// The events of one sled log entry from revision `from` on, each under its per-revision key.
struct Events {
    value: IVec,
    /// Where the next event's length is.
    at: usize,
    /// The next event's revision (None once past the last).
    rev: Option<Revision>,
    first: Revision,
    last: Revision,
    from: Revision,
    /// An older format's entry: the value is the one event.
    single: bool,
    done: bool,
}

impl Events {
    fn new(key: &[u8], value: IVec, from: Revision) -> Result<Events, BackendError> {
        let (first, last) = span(key)?;
        Ok(Events {
            value,
            at: 0,
            rev: Some(first),
            first,
            last,
            from,
            single: key.len() == 8,
            done: false,
        })
    }

    fn corrupt(&mut self) -> Option<Entry> {
        self.done = true;
        Some(Err(BackendError::Corrupt(format!(
            "malformed log chunk {}..={}",
            self.first, self.last
        ))))
    }
}

impl Iterator for Events {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.done {
            return None;
        }
        if self.single {
            self.done = true;
            return (self.first >= self.from)
                .then(|| Ok((IVec::from(&rev_bytes(self.first)[..]), self.value.clone())));
        }
        loop {
            if self.at >= self.value.len() {
                self.done = true;
                // The events must end exactly at the chunk's last revision.
                return match self.rev {
                    Some(r) if r.prev() == Some(self.last) => None,
                    None if self.last == Revision::MAX => None,
                    _ => self.corrupt(),
                };
            }
            let len = self
                .value
                .get(self.at..self.at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_be_bytes(b) as usize);
            let start = self.at + 4;
            let end = len
                .and_then(|len| start.checked_add(len))
                .filter(|end| *end <= self.value.len());
            let (Some(end), Some(rev)) = (end, self.rev.filter(|r| *r <= self.last)) else {
                return self.corrupt();
            };
            self.at = end;
            self.rev = rev.next();
            if rev >= self.from {
                let event = self.value.subslice(start, end - start);
                return Some(Ok((IVec::from(&rev_bytes(rev)[..]), event)));
            }
        }
    }
}

/// One per-revision log entry read from sled: `be64(revision)` and the event.
pub(super) type Entry = Result<(IVec, IVec), BackendError>;

/// The per-revision entries of sled's log in `range` (bounds on `be64(revision)` keys), oldest
/// first, read from its chunks.
pub(super) fn entries(
    log: &Tree,
    range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
) -> Box<dyn Iterator<Item = Entry>> {
    let rev = |key: &[u8]| -> Result<Revision, BackendError> { super::codec::decode_rev_key(key) };
    let from = match &range.0 {
        Bound::Included(k) => rev(k).map(Some),
        Bound::Excluded(k) => rev(k).map(|r| r.next()),
        Bound::Unbounded => Ok(Some(Revision::FIRST)),
    };
    let to = match &range.1 {
        Bound::Included(k) => rev(k).map(Some),
        Bound::Excluded(k) => rev(k).map(|r| r.prev()),
        Bound::Unbounded => Ok(Some(Revision::MAX)),
    };
    let (from, to) = match (from, to) {
        (Ok(Some(from)), Ok(Some(to))) if from <= to => (from, to),
        (Ok(_), Ok(_)) => return Box::new(std::iter::empty()),
        (Err(e), _) | (_, Err(e)) => return Box::new(std::iter::once(Err(e))),
    };
    // The entry holding `from` starts at or before it: the last key up to `from ‖ ff..ff`.
    let mut probe = rev_bytes(from).to_vec();
    probe.extend_from_slice(&[0xff; 8]);
    let start = match log.range(..=probe).next_back() {
        Some(Ok((key, _))) => key.to_vec(),
        Some(Err(e)) => return Box::new(std::iter::once(Err(sled_error(e)))),
        None => rev_bytes(from).to_vec(),
    };
    let to = rev_bytes(to);
    let mut failed = false;
    Box::new(
        log.range(start..)
            .flat_map(move |item| -> Box<dyn Iterator<Item = Entry>> {
                let events = item
                    .map_err(sled_error)
                    .and_then(|(key, value)| Events::new(&key, value, from));
                match events {
                    Ok(events) => Box::new(events),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            })
            .take_while(move |entry| {
                if failed {
                    return false;
                }
                match entry {
                    Ok((key, _)) => key.as_ref() <= to.as_slice(),
                    Err(_) => {
                        failed = true;
                        true
                    }
                }
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(r: i64) -> Revision {
        Revision::new(r).expect("revision")
    }

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = ::sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("sled");
        let tree = db.open_tree("log").expect("tree");
        (dir, tree)
    }

    fn write(tree: &Tree, writes: Vec<(IVec, Option<IVec>)>) {
        for (k, v) in writes {
            match v {
                Some(v) => tree.insert(k, v).map(drop),
                None => tree.remove(k).map(drop),
            }
            .expect("write");
        }
    }

    fn read(tree: &Tree, from: Bound<i64>, to: Bound<i64>) -> Vec<(i64, Vec<u8>)> {
        let b = |b: Bound<i64>| match b {
            Bound::Included(r) => Bound::Included(rev_bytes(rev(r)).to_vec()),
            Bound::Excluded(r) => Bound::Excluded(rev_bytes(rev(r)).to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        entries(tree, &(b(from), b(to)))
            .map(|e| {
                let (k, v) = e.expect("entry");
                (
                    crate::backend::sled::codec::decode_rev_key(&k)
                        .expect("key")
                        .get(),
                    v.to_vec(),
                )
            })
            .collect()
    }

    fn event(r: i64) -> Vec<u8> {
        format!("event {r}").into_bytes()
    }

    #[test]
    fn chunks_split_at_gaps_and_limits_and_read_back_per_revision() {
        let events: Vec<(Revision, Vec<u8>)> = (1..=600)
            .filter(|r| *r != 300)
            .map(|r| (rev(r), event(r)))
            .collect();
        let writes = chunks(events.iter().map(|(r, e)| (*r, e.as_slice())));
        let spans: Vec<(i64, i64)> = writes
            .iter()
            .map(|(k, _)| {
                let (a, b) = span(k).expect("span");
                (a.get(), b.get())
            })
            .collect();
        assert_eq!(spans, vec![(1, 256), (257, 299), (301, 556), (557, 600)]);
        let (_dir, tree) = tree();
        write(&tree, writes);
        let all = read(&tree, Bound::Unbounded, Bound::Unbounded);
        assert_eq!(all.len(), 599);
        assert!(all.iter().all(|(r, e)| *e == event(*r)));
        // A range starting and ending inside chunks.
        let some = read(&tree, Bound::Included(250), Bound::Excluded(260));
        assert_eq!(
            some.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            (250..260).collect::<Vec<_>>()
        );
        assert_eq!(
            read(&tree, Bound::Excluded(555), Bound::Included(557))
                .iter()
                .map(|(r, _)| *r)
                .collect::<Vec<_>>(),
            vec![556, 557]
        );
        assert!(read(&tree, Bound::Included(601), Bound::Unbounded).is_empty());
        assert!(read(&tree, Bound::Included(9), Bound::Excluded(9)).is_empty());
        assert_eq!(last_revision(&tree).expect("last"), Some(rev(600)));
        // Large events close a chunk by size.
        let big = vec![7u8; 3000];
        let writes = chunks((1..=7).map(|r| (rev(r), big.as_slice())));
        assert_eq!(writes.len(), 3);
    }

    #[test]
    fn only_entries_wholly_below_the_compacted_revision_are_removable() {
        let (_dir, tree) = tree();
        // Two per-revision entries of an older format, then chunks.
        tree.insert(rev_bytes(rev(1)), event(1)).expect("insert");
        tree.insert(rev_bytes(rev(2)), event(2)).expect("insert");
        let events: Vec<(Revision, Vec<u8>)> = (3..=600).map(|r| (rev(r), event(r))).collect();
        write(
            &tree,
            chunks(events.iter().map(|(r, e)| (*r, e.as_slice()))),
        );
        let removable = |c| -> Vec<(i64, i64)> {
            below(&tree, rev(c))
                .expect("below")
                .iter()
                .map(|k| {
                    let (a, b) = span(k).expect("span");
                    (a.get(), b.get())
                })
                .collect()
        };
        assert_eq!(removable(2), vec![(1, 1)]);
        assert_eq!(removable(258), vec![(1, 1), (2, 2)]);
        assert_eq!(removable(259), vec![(1, 1), (2, 2), (3, 258)]);
        // Old and new entries read together, in order.
        let all = read(&tree, Bound::Included(1), Bound::Included(4));
        assert_eq!(
            all.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn malformed_chunks_and_keys_are_corrupt() {
        let (_dir, tree) = tree();
        assert!(span(b"short").is_err());
        assert!(span(&chunk_key(rev(5), rev(4))).is_err());
        // A chunk whose events do not reach its last revision.
        tree.insert(chunk_key(rev(1), rev(3)), {
            let mut v = 2u32.to_be_bytes().to_vec();
            v.extend_from_slice(b"e1");
            v
        })
        .expect("insert");
        let got: Vec<Entry> = entries(&tree, &(Bound::Unbounded, Bound::Unbounded)).collect();
        // The events before the damage are read, then the error ends the reading.
        assert!(matches!(
            got.as_slice(),
            [Ok(_), Err(BackendError::Corrupt(_))]
        ));
        // A length past the value's end.
        tree.insert(chunk_key(rev(1), rev(3)), 99u32.to_be_bytes().to_vec())
            .expect("insert");
        let got: Vec<Entry> = entries(&tree, &(Bound::Unbounded, Bound::Unbounded)).collect();
        assert!(matches!(got.as_slice(), [Err(BackendError::Corrupt(_))]));
    }
}
