//! The decoded-object cache behind lists, watches, updates and gets: what is stored under a key
//! at one `mod_revision` never changes, so a Secret once decrypted and decoded is handed out
//! again without decrypting, as kube-apiserver's watch cache serves lists from decoded objects.
//! Writes, lists and watches fill it; a get only takes what is there (a get of one object after
//! another would evict as much as it adds).
//!
//! Bounded by an estimate of the memory its entries hold (least recently used evicted first);
//! a Secret's values are zeroized when its last copy is dropped ([`SecretBytes`]); emptied when
//! the encryption configuration changes, so a provider or key removed from the configuration
//! stops serving reads at once. Failures (undecryptable objects) are never cached.
//!
//! It also knows the writes in flight ([`DecodedCache::in_flight`]): a watcher often sees a
//! write before its writer has been told the revision and cached it, and then takes the Secret
//! the writer is writing instead of decrypting the stored bytes.
//!
//! [`SecretBytes`]: super::model::SecretBytes

use std::collections::HashMap;
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
    /// Writes in flight by storage key.
    in_flight: HashMap<Vec<u8>, Vec<InFlight>>,
    /// The id of the next write in flight.
    next_write: u64,
}

/// A put in flight: the bytes it stores and the Secret they encode (without its revision),
/// encoded by an encoding that started at `generation`.
struct InFlight {
    id: u64,
    value: Vec<u8>,
    secret: Arc<Secret>,
    generation: u64,
}

/// Registers a write in flight from [`DecodedCache::in_flight`] until it is dropped.
pub(super) struct InFlightGuard<'a> {
    cache: &'a DecodedCache,
    key: Vec<u8>,
    id: u64,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut inner = self.cache.lock();
        if let Some(writes) = inner.in_flight.get_mut(&self.key) {
            writes.retain(|w| w.id != self.id);
            if writes.is_empty() {
                inner.in_flight.remove(&self.key);
            }
        }
    }
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
                in_flight: HashMap::new(),
                next_write: 0,
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

    /// Whether the entry of `key` is at `revision`.
    pub(super) fn contains(&self, key: &[u8], revision: Revision) -> bool {
        self.lock()
            .entries
            .peek(key)
            .is_some_and(|e| e.revision == revision)
    }

    /// Registers a put in flight of `value` under `key`, the encoding of `secret` by an encoding
    /// that started at `generation`, until the guard is dropped. The writer caches what it wrote
    /// (with its revision) before it drops the guard, so that a watcher always finds one or the
    /// other.
    pub(super) fn in_flight(
        &self,
        key: &[u8],
        value: &[u8],
        secret: Arc<Secret>,
        generation: u64,
    ) -> InFlightGuard<'_> {
        let mut inner = self.lock();
        let id = inner.next_write;
        inner.next_write += 1;
        inner
            .in_flight
            .entry(key.to_vec())
            .or_default()
            .push(InFlight {
                id,
                value: value.to_vec(),
                secret,
                generation,
            });
        InFlightGuard {
            cache: self,
            key: key.to_vec(),
            id,
        }
    }

    /// The Secret stored under `key` at `revision` as `value`, from the cache or, if a put of
    /// exactly these bytes is in flight, from that put (then cached). Equal bytes under one
    /// key decode to the same Secret, so this is what decoding `value` would give.
    pub(super) fn get_or_in_flight(
        &self,
        key: &[u8],
        value: &[u8],
        revision: Revision,
    ) -> Option<Arc<Secret>> {
        if self.max_bytes == 0 {
            return None;
        }
        if let Some(s) = self.get(key, revision) {
            return Some(s);
        }
        let (secret, generation) = {
            let inner = self.lock();
            let w = inner
                .in_flight
                .get(key)?
                .iter()
                .find(|w| w.value == value && w.generation == inner.generation)?;
            (w.secret.clone(), w.generation)
        };
        let mut s = Secret::clone(&secret);
        s.metadata.resource_version = revision.to_string();
        let s = Arc::new(s);
        self.insert(key, revision, generation, s.clone());
        Some(s)
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
    fn a_write_in_flight_serves_exactly_its_bytes_until_it_is_done() {
        let c = DecodedCache::new(1 << 20);
        let g = c.generation();
        let guard = c.in_flight(b"/a", b"stored", secret("a", 3), g);
        assert!(c.get_or_in_flight(b"/a", b"other", rev(4)).is_none());
        assert!(c.get_or_in_flight(b"/b", b"stored", rev(4)).is_none());
        let s = c.get_or_in_flight(b"/a", b"stored", rev(4)).unwrap();
        assert_eq!(
            s.metadata.resource_version, "4",
            "with the write's revision"
        );
        assert!(c.contains(b"/a", rev(4)), "and cached");
        drop(guard);
        assert!(c.get_or_in_flight(b"/a", b"stored", rev(5)).is_none());
        assert!(c.size().0 == 1 && c.lock().in_flight.is_empty());

        let _stale = c.in_flight(b"/c", b"x", secret("c", 1), g);
        c.clear();
        assert!(
            c.get_or_in_flight(b"/c", b"x", rev(6)).is_none(),
            "encoded under the old configuration"
        );
    }

    #[test]
    fn zero_bytes_disables() {
        let c = DecodedCache::new(0);
        c.insert(b"/a", rev(2), c.generation(), secret("a", 1));
        assert!(c.get(b"/a", rev(2)).is_none());
    }
}
