//! The decoded-object cache behind lists and watches: what is stored under a key at one
//! `mod_revision` never changes, so a Secret once decrypted and decoded is handed out again
//! without decrypting, as kube-apiserver's watch cache serves lists from decoded objects.
//!
//! Bounded by an estimate of the memory its entries hold (least recently used evicted first);
//! a Secret's values are zeroized when its last copy is dropped ([`SecretBytes`]); emptied when
//! the encryption configuration changes, so a provider or key removed from the configuration
//! stops serving reads at once. Failures (undecryptable objects) are never cached.
//!
//! [`SecretBytes`]: super::model::SecretBytes

use std::sync::{Arc, Mutex, MutexGuard};

use super::Secret;
use crate::backend::Revision;

/// Default bound of [`DecodedCache`]: about 8,000 Secrets of 1 KiB.
pub(super) const DEFAULT_CACHE_BYTES: usize = 16 << 20;

/// Memory counted for an entry beyond its strings and values (the structures holding them,
/// `managedFields`, the cache's own node).
const ENTRY_OVERHEAD: usize = 1024;

/// Decoded Secrets by storage key, each at one `mod_revision`.
pub(super) struct DecodedCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

struct Inner {
    entries: lru::LruCache<Vec<u8>, Entry>,
    /// Sum of the entries' costs.
    bytes: usize,
    /// Bumped by [`DecodedCache::clear`]: a decode that started before it is not inserted.
    generation: u64,
}

struct Entry {
    revision: Revision,
    secret: Arc<Secret>,
    cost: usize,
}

/// What an entry is counted as: its key, names, labels, annotations and values, plus
/// [`ENTRY_OVERHEAD`].
fn cost(key: &[u8], s: &Secret) -> usize {
    let m = &s.metadata;
    let pairs = |map: &std::collections::BTreeMap<String, String>| {
        map.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    };
    key.len()
        + m.name.len()
        + m.namespace.len()
        + m.uid.len()
        + pairs(&m.labels)
        + pairs(&m.annotations)
        + s.data
            .iter()
            .map(|(k, v)| k.len() + v.0.len())
            .sum::<usize>()
        + ENTRY_OVERHEAD
}

impl DecodedCache {
    /// An empty cache holding at most about `max_bytes` (0 disables it).
    pub(super) fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: lru::LruCache::unbounded(),
                bytes: 0,
                generation: 0,
            }),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Secret stored under `key` at `revision`, if cached.
    pub(super) fn get(&self, key: &[u8], revision: Revision) -> Option<Arc<Secret>> {
        if self.max_bytes == 0 {
            return None;
        }
        let mut inner = self.lock();
        match inner.entries.get(key) {
            Some(e) if e.revision == revision => Some(e.secret.clone()),
            _ => None,
        }
    }

    /// The generation to pass to [`DecodedCache::insert`] for a decode starting now.
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Caches `secret` as what `key` holds at `revision`, decoded by a decode that started at
    /// `generation`; an entry of a newer revision is kept, and so is nothing from a decode that
    /// started before the last [`DecodedCache::clear`].
    pub(super) fn insert(
        &self,
        key: &[u8],
        revision: Revision,
        generation: u64,
        secret: Arc<Secret>,
    ) {
        let cost = cost(key, &secret);
        if cost > self.max_bytes / 8 {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if let Some(old) = inner.entries.peek(key) {
            if old.revision > revision {
                return;
            }
        }
        if let Some(old) = inner.entries.put(
            key.to_vec(),
            Entry {
                revision,
                secret,
                cost,
            },
        ) {
            inner.bytes -= old.cost;
        }
        inner.bytes += cost;
        while inner.bytes > self.max_bytes {
            match inner.entries.pop_lru() {
                Some((_, old)) => inner.bytes -= old.cost,
                None => break,
            }
        }
    }

    /// Forgets every entry (the encryption configuration changed).
    pub(super) fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.bytes = 0;
        inner.generation += 1;
    }

    /// Entries and their counted bytes.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::SecretBytes;

    fn secret(name: &str, value_len: usize) -> Arc<Secret> {
        let mut s = Secret::default();
        s.metadata.name = name.into();
        s.data
            .insert("v".into(), SecretBytes::new(vec![7; value_len]));
        Arc::new(s)
    }

    fn rev(n: i64) -> Revision {
        Revision::new(n).unwrap()
    }

    #[test]
    fn hits_only_the_cached_revision_and_keeps_the_newest() {
        let c = DecodedCache::new(1 << 20);
        let g = c.generation();
        c.insert(b"/a", rev(5), g, secret("a", 10));
        assert!(c.get(b"/a", rev(5)).is_some());
        assert!(c.get(b"/a", rev(4)).is_none());
        assert!(c.get(b"/a", rev(6)).is_none());
        assert!(c.get(b"/b", rev(5)).is_none());
        c.insert(b"/a", rev(3), g, secret("old", 10));
        assert_eq!(
            c.get(b"/a", rev(5)).unwrap().metadata.name,
            "a",
            "newer kept"
        );
        c.insert(b"/a", rev(7), g, secret("new", 10));
        assert!(c.get(b"/a", rev(5)).is_none());
        assert_eq!(c.get(b"/a", rev(7)).unwrap().metadata.name, "new");
        assert_eq!(c.size().0, 1, "one entry per key");
    }

    #[test]
    fn bounded_by_bytes_least_recently_used_first() {
        let c = DecodedCache::new(64 * 1024);
        let g = c.generation();
        for i in 0..100 {
            c.insert(format!("/k{i}").as_bytes(), rev(2), g, secret("s", 1000));
            if i >= 1 {
                // Keep /k0 recently used.
                assert!(c.get(b"/k0", rev(2)).is_some(), "after {i}");
            }
        }
        let (n, bytes) = c.size();
        assert!(
            bytes <= 64 * 1024 && n < 100 && n > 10,
            "{n} entries, {bytes} bytes"
        );
        assert!(
            c.get(b"/k1", rev(2)).is_none(),
            "least recently used evicted"
        );
        assert!(c.get(b"/k99", rev(2)).is_some());
        c.insert(b"/big", rev(2), g, secret("big", 64 * 1024));
        assert!(
            c.get(b"/big", rev(2)).is_none(),
            "an entry too large is not cached"
        );
    }

    #[test]
    fn clear_empties_and_refuses_decodes_started_before() {
        let c = DecodedCache::new(1 << 20);
        let before = c.generation();
        c.insert(b"/a", rev(2), before, secret("a", 1));
        c.clear();
        assert_eq!(c.size(), (0, 0));
        c.insert(b"/b", rev(2), before, secret("b", 1));
        assert!(
            c.get(b"/b", rev(2)).is_none(),
            "decoded under the old configuration"
        );
        c.insert(b"/b", rev(2), c.generation(), secret("b", 1));
        assert!(c.get(b"/b", rev(2)).is_some());
    }

    #[test]
    fn zero_bytes_disables() {
        let c = DecodedCache::new(0);
        c.insert(b"/a", rev(2), c.generation(), secret("a", 1));
        assert!(c.get(b"/a", rev(2)).is_none());
    }
}
