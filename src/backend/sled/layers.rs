//! Batches applied but not yet written to sled, kept in memory above it.
//!
//! The writer applies each batch to the *active* layer (sorted maps of each tree's pending
//! writes) as soon as its log record is appended; readers look a key up in the layers, newest
//! first, before sled. Once the active layer holds [`SledOptions::layer_bytes`](super::SledOptions)
//! of writes, the writer freezes it and the checkpoint thread makes its writes durable in the
//! redo file (`redo.rs`), writes them to sled key by key, then drops it. Until it is dropped,
//! the layer hides sled's half-written state from readers; after a crash, the redo file puts
//! sled back at the state after the layer. No sled transaction is used: one would hold sled's
//! global lock and stall every sled reader while a few hundred writes are committed. Many
//! batches share one layer, and a key written several times while a layer is active reaches
//! sled once.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use ::sled::{IVec, Tree};

use super::codec::{decode_rev_key, rev_bytes};
use super::{logchunk, sled_error, Shared};
use crate::backend::{BackendError, Revision};

/// Frozen layers waiting for sled before the writer waits for the checkpoint thread.
pub(super) const MAX_FROZEN: usize = 8;
/// Bookkeeping counted per pending write besides its key and value.
const ENTRY_OVERHEAD: usize = 64;

/// One tree's writes: the new value, or None for a removal.
pub(super) type Writes = Vec<(IVec, Option<IVec>)>;

/// The trees a layer holds writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TreeId {
    Kv = 0,
    Log = 1,
    History = 2,
    Meta = 3,
}

/// Every tree, in the order layers write them.
pub(super) const TREES: [TreeId; 4] = [TreeId::Kv, TreeId::Log, TreeId::History, TreeId::Meta];

/// The writes of one or more consecutive batches, each key's newest only.
#[derive(Default)]
pub(super) struct Layer {
    trees: [BTreeMap<IVec, Option<IVec>>; 4],
    bytes: usize,
    /// The compacted revision after its last batch: its log entries below it are not written.
    compacted: Option<Revision>,
}

impl Layer {
    /// Adds a batch's writes to one tree (later writes of a key replace earlier ones).
    pub(super) fn extend(&mut self, tree: TreeId, writes: Writes) {
        let map = &mut self.trees[tree as usize];
        for (key, value) in writes {
            self.bytes += key.len() + value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD;
            map.insert(key, value);
        }
    }

    /// Records the compacted revision after a batch added to the layer.
    pub(super) fn set_compacted(&mut self, compacted: Revision) {
        self.compacted = self.compacted.max(Some(compacted));
    }

    /// Bytes of the writes added (counting replaced ones too).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the layer holds no write.
    pub(super) fn is_empty(&self) -> bool {
        self.trees.iter().all(BTreeMap::is_empty)
    }

    /// The writes that reach sled, in tree order. The log's entries go in as chunks
    /// (`logchunk.rs`), leaving out those that left the log's window while in memory; its
    /// removals become removals of the chunks in `log` that are now wholly below the compacted
    /// revision (the sync thread or a later layer removes those that straddle it).
    fn sled_writes(&self, log: &Tree) -> Result<Vec<(TreeId, IVec, Option<IVec>)>, BackendError> {
        let mut writes = Vec::new();
        for tree in TREES {
            let map = &self.trees[tree as usize];
            if tree != TreeId::Log {
                writes.extend(map.iter().map(|(k, v)| (tree, k.clone(), v.clone())));
                continue;
            }
            let compacted = self.compacted.map(rev_bytes);
            let kept = map.iter().filter(|(key, value)| {
                value.is_some() && compacted.is_none_or(|c| key.as_ref() >= c.as_slice())
            });
            let mut events = Vec::new();
            for (key, value) in kept {
                if let Some(value) = value {
                    events.push((decode_rev_key(key)?, value.as_ref()));
                }
            }
            let removes = map.values().any(Option::is_none);
            if let (true, Some(compacted)) = (removes, self.compacted) {
                for key in logchunk::below(log, compacted)? {
                    writes.push((TreeId::Log, key, None));
                }
            }
            for (key, value) in logchunk::chunks(events.into_iter()) {
                writes.push((TreeId::Log, key, value));
            }
        }
        Ok(writes)
    }

    /// Writes the layer to sled key by key, after making its writes durable in the redo file
    /// (see `redo.rs`): no sled transaction, so sled's readers never wait for it.
    pub(super) fn write_to(&self, shared: &Shared) -> Result<(), BackendError> {
        let mut redo = shared.redo();
        let writes = self.sled_writes(&shared.log)?;
        redo.append(
            writes
                .iter()
                .map(|(tree, key, value)| (*tree, key.as_ref(), value.as_ref().map(AsRef::as_ref))),
        )?;
        for (tree, key, value) in writes {
            let tree = shared.tree(tree);
            match value {
                // An `IVec` goes in as it is (a reference count), not copied.
                Some(value) => tree.insert(key, value).map(drop),
                None => tree.remove(key).map(drop),
            }
            .map_err(sled_error)?;
        }
        drop(redo);
        shared
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// The layers above sled: the active one and the frozen ones not yet in sled (oldest first).
#[derive(Default)]
pub(super) struct Layers {
    pub(super) active: Layer,
    pub(super) frozen: Vec<Arc<Layer>>,
}

impl Layers {
    /// The newest pending write of `key` (`Some(None)`: removed), or None if sled has its value.
    fn pending(&self, tree: TreeId, key: &[u8]) -> Option<&Option<IVec>> {
        std::iter::once(&self.active)
            .chain(self.frozen.iter().rev().map(|layer| &**layer))
            .find_map(|layer| layer.trees[tree as usize].get(key))
    }

    /// The value of `key` in `tree` (sled's tree for `id`), layers first.
    pub(super) fn get(
        &self,
        sled: &Tree,
        tree: TreeId,
        key: &[u8],
    ) -> Result<Option<IVec>, BackendError> {
        match self.pending(tree, key) {
            Some(value) => Ok(value.clone()),
            None => sled.get(key).map_err(sled_error),
        }
    }

    /// The entries of `tree` in `range`, in key order (`reverse`: from the last), layers over
    /// sled.
    pub(super) fn range<'a>(
        &'a self,
        sled: &Tree,
        tree: TreeId,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        reverse: bool,
    ) -> Merged<'a> {
        let mut sources: Vec<Source<'a>> = Vec::with_capacity(2 + self.frozen.len());
        if !is_empty_range(&range) {
            let bounds = (as_slice(&range.0), as_slice(&range.1));
            for layer in std::iter::once(&self.active).chain(self.frozen.iter().rev().map(|l| &**l))
            {
                let map = &layer.trees[tree as usize];
                if map.is_empty() {
                    continue;
                }
                let entries = map
                    .range::<[u8], _>(bounds)
                    .map(|(k, v)| Ok((k.clone(), v.clone())));
                sources.push(if reverse {
                    Box::new(entries.rev())
                } else {
                    Box::new(entries)
                });
            }
            if tree == TreeId::Log {
                // sled holds the log in chunks (`logchunk.rs`), read forward only.
                let entries =
                    logchunk::entries(sled, &range).map(|item| item.map(|(k, v)| (k, Some(v))));
                sources.push(if reverse {
                    Box::new(std::iter::once(Err(BackendError::Corrupt(
                        "the log is not read backwards".to_string(),
                    ))))
                } else {
                    Box::new(entries)
                });
            } else {
                let entries = sled
                    .range(range)
                    .map(|item| item.map(|(k, v)| (k, Some(v))).map_err(sled_error));
                sources.push(if reverse {
                    Box::new(entries.rev())
                } else {
                    Box::new(entries)
                });
            }
        }
        Merged {
            heads: sources.iter().map(|_| None).collect(),
            done: vec![false; sources.len()],
            sources,
            reverse,
        }
    }

    /// The entries of `tree` whose keys start with `prefix`, in key order.
    pub(super) fn scan_prefix<'a>(
        &'a self,
        sled: &Tree,
        tree: TreeId,
        prefix: &[u8],
    ) -> Merged<'a> {
        self.range(sled, tree, prefix_range(prefix), false)
    }

    /// Freezes the active layer (if it holds anything) and returns it, to be written to sled.
    pub(super) fn freeze(&mut self) -> Option<Arc<Layer>> {
        if self.active.is_empty() {
            return None;
        }
        let layer = Arc::new(std::mem::take(&mut self.active));
        self.frozen.push(Arc::clone(&layer));
        Some(layer)
    }

    /// Forgets the oldest frozen layer, now in sled.
    pub(super) fn written(&mut self, layer: &Arc<Layer>) {
        if let Some(at) = self.frozen.iter().position(|l| Arc::ptr_eq(l, layer)) {
            self.frozen.remove(at);
        }
    }
}

/// The range of keys starting with `prefix`.
pub(super) fn prefix_range(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return (Bound::Included(prefix.to_vec()), Bound::Excluded(end));
        }
    }
    (Bound::Included(prefix.to_vec()), Bound::Unbounded)
}

fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Whether a range holds no key (`BTreeMap::range` panics on such ranges).
fn is_empty_range(range: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> bool {
    match range {
        (Bound::Included(start), Bound::Included(end)) => start > end,
        (Bound::Included(start) | Bound::Excluded(start), Bound::Excluded(end))
        | (Bound::Excluded(start), Bound::Included(end)) => start >= end,
        _ => false,
    }
}

type Entry = Result<(IVec, Option<IVec>), BackendError>;
type Source<'a> = Box<dyn Iterator<Item = Entry> + 'a>;

/// Entries of several sources merged in key order; for a key in more than one, the first
/// source's (the newest layer's) wins, and a removal hides the key.
pub(super) struct Merged<'a> {
    sources: Vec<Source<'a>>,
    heads: Vec<Option<Entry>>,
    done: Vec<bool>,
    reverse: bool,
}

impl Iterator for Merged<'_> {
    type Item = Result<(IVec, IVec), BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            for (i, source) in self.sources.iter_mut().enumerate() {
                if self.heads[i].is_none() && !self.done[i] {
                    self.heads[i] = source.next();
                    self.done[i] = self.heads[i].is_none();
                }
            }
            // An error ends the iteration with it.
            if let Some(at) = self.heads.iter().position(|h| matches!(h, Some(Err(_)))) {
                self.done.iter_mut().for_each(|d| *d = true);
                return match self.heads[at].take() {
                    Some(Err(e)) => Some(Err(e)),
                    _ => None,
                };
            }
            let mut best: Option<usize> = None;
            for (i, head) in self.heads.iter().enumerate() {
                let Some(Ok((key, _))) = head else { continue };
                let better = match best.and_then(|b| self.heads[b].as_ref()) {
                    Some(Ok((best_key, _))) => {
                        if self.reverse {
                            key > best_key
                        } else {
                            key < best_key
                        }
                    }
                    _ => true,
                };
                if better {
                    best = Some(i);
                }
            }
            let best = best?;
            let Some(Ok((key, value))) = self.heads[best].take() else {
                return None;
            };
            // Older sources' entries for the same key are hidden by this one.
            for head in &mut self.heads[best + 1..] {
                if matches!(head, Some(Ok((k, _))) if *k == key) {
                    *head = None;
                }
            }
            if let Some(value) = value {
                return Some(Ok((key, value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: &str) -> IVec {
        IVec::from(s.as_bytes())
    }

    #[test]
    fn layers_hide_sled_and_older_layers_in_both_directions() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = ::sled::Config::new().path(dir.path()).open().expect("open");
        let tree = db.open_tree("t").expect("tree");
        for k in ["a", "b", "c", "d", "f"] {
            tree.insert(k, format!("sled-{k}").as_bytes())
                .expect("insert");
        }
        let mut layers = Layers::default();
        layers.active.extend(
            TreeId::Kv,
            vec![
                (iv("b"), None),
                (iv("c"), Some(iv("old-c"))),
                (iv("e"), Some(iv("old-e"))),
            ],
        );
        layers.freeze().expect("frozen");
        layers.active.extend(
            TreeId::Kv,
            vec![
                (iv("c"), Some(iv("new-c"))),
                (iv("e"), None),
                (iv("g"), Some(iv("new-g"))),
            ],
        );
        let all = |reverse| -> Vec<(String, String)> {
            layers
                .range(
                    &tree,
                    TreeId::Kv,
                    (Bound::Unbounded, Bound::Unbounded),
                    reverse,
                )
                .map(|item| {
                    let (k, v) = item.expect("entry");
                    (
                        String::from_utf8(k.to_vec()).expect("utf-8"),
                        String::from_utf8(v.to_vec()).expect("utf-8"),
                    )
                })
                .collect()
        };
        let expected: Vec<(String, String)> = [
            ("a", "sled-a"),
            ("c", "new-c"),
            ("d", "sled-d"),
            ("f", "sled-f"),
            ("g", "new-g"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(all(false), expected);
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(all(true), reversed);
        assert_eq!(layers.get(&tree, TreeId::Kv, b"b").expect("get"), None);
        assert_eq!(layers.get(&tree, TreeId::Kv, b"e").expect("get"), None);
        assert_eq!(
            layers.get(&tree, TreeId::Kv, b"c").expect("get"),
            Some(iv("new-c"))
        );
        assert_eq!(
            layers.get(&tree, TreeId::Kv, b"d").expect("get"),
            Some(iv("sled-d"))
        );
        // Another tree's layers do not hide this one.
        assert_eq!(
            layers.get(&tree, TreeId::Log, b"c").expect("get"),
            Some(iv("sled-c"))
        );
        let from_c: Vec<IVec> = layers
            .range(
                &tree,
                TreeId::Kv,
                (
                    Bound::Excluded(b"c".to_vec()),
                    Bound::Included(b"f".to_vec()),
                ),
                false,
            )
            .map(|item| item.expect("entry").0)
            .collect();
        assert_eq!(from_c, vec![iv("d"), iv("f")]);
        let empty = (
            Bound::Included(b"f".to_vec()),
            Bound::Excluded(b"c".to_vec()),
        );
        assert_eq!(layers.range(&tree, TreeId::Kv, empty, false).count(), 0);
        let prefixed: Vec<IVec> = layers
            .scan_prefix(&tree, TreeId::Kv, b"c")
            .map(|item| item.expect("entry").0)
            .collect();
        assert_eq!(prefixed, vec![iv("c")]);
    }

    #[test]
    fn prefix_ranges_end_after_the_last_key_with_the_prefix() {
        assert_eq!(
            prefix_range(b"a\xff"),
            (
                Bound::Included(b"a\xff".to_vec()),
                Bound::Excluded(b"b".to_vec())
            )
        );
        assert_eq!(
            prefix_range(b"\xff\xff"),
            (Bound::Included(b"\xff\xff".to_vec()), Bound::Unbounded)
        );
        assert_eq!(
            prefix_range(b""),
            (Bound::Included(Vec::new()), Bound::Unbounded)
        );
    }
}
