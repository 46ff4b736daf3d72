//! The writer's memory of what each recently written key holds in the `history` tree (the
//! revisions of its retained versions, which of them are tombstones, and its floor), so that a
//! write works out what to prune without scanning the key's history in sled.
//!
//! Only the writer thread uses it. It is a cache: a key it does not hold is read from the
//! `history` tree. It is updated as a batch is planned; a batch that is planned and then not
//! applied fails the backend (nothing is trusted after that), so the cache never describes a
//! state sled was not brought to. Anything else that removes history entries must either remove
//! only what the next write's pruning would remove anyway (that write then deletes those entries
//! again, which is harmless) or call [`HistoryCache::clear`].

use std::collections::HashMap;

use super::retention::KeyHistory;

/// Keys remembered before the cache starts over (about 200 bytes each).
const CAPACITY: usize = 65_536;

/// Retained history per key, keyed by the key's history prefix.
#[derive(Default)]
pub(super) struct HistoryCache {
    keys: HashMap<Vec<u8>, KeyHistory>,
}

impl HistoryCache {
    /// Takes the remembered history of the key with this history prefix, if any.
    pub(super) fn take(&mut self, prefix: &[u8]) -> Option<KeyHistory> {
        self.keys.remove(prefix)
    }

    /// Remembers a key's history as the batch being planned leaves it.
    pub(super) fn put(&mut self, prefix: Vec<u8>, history: KeyHistory) {
        if self.keys.len() >= CAPACITY {
            // Simple bound: start over; the keys written next are read from sled once.
            self.keys.clear();
        }
        self.keys.insert(prefix, history);
    }

    /// Forgets everything (after history entries were removed some other way).
    pub(super) fn clear(&mut self) {
        self.keys = HashMap::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_was_put_once_and_starts_over_when_full() {
        let mut cache = HistoryCache::default();
        cache.put(b"a".to_vec(), KeyHistory::default());
        assert!(cache.take(b"a").is_some());
        assert!(
            cache.take(b"a").is_none(),
            "taken: the writer puts it back after planning"
        );
        for i in 0..CAPACITY {
            cache.put(i.to_be_bytes().to_vec(), KeyHistory::default());
        }
        assert_eq!(cache.keys.len(), CAPACITY);
        cache.put(b"b".to_vec(), KeyHistory::default());
        assert_eq!(cache.keys.len(), 1, "a full cache starts over");
        cache.clear();
        assert!(cache.take(b"b").is_none());
    }
}
