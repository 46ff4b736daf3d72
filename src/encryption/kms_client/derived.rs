//! The kms v2 provider's cache of derived data keys: `HKDF-Expand(seed, info)` as an AES-256-GCM
//! key schedule, so that a value read again costs one AES-GCM open, as with `aesgcm`.
//! kube-apiserver memoises the same keys for reads (`aes_extended_nonce.go`, a `simpleCache`
//! keyed by info and path); this cache is bounded as well as expiring.
//!
//! A hit takes the read side of a lock and sets the entry's reference bit; nothing is reordered.
//! Eviction beyond the bound is CLOCK (second chance): the hand passes over entries read since it
//! last passed them and removes the first one that was not, or one that has expired. An expired
//! entry is never used: a read that finds one derives the key again. An evicted, expired or
//! replaced key is dropped at once, under the write lock, and its drop zeroizes it. The AEAD
//! still authenticates every value, so a cached key never lets a changed value or path through.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::time::Instant;

/// What names a derived key: the seed's cache key, then the object's 32 info bytes.
pub(super) type DerivedId = [u8; 64];

/// A bounded, expiring map from [`DerivedId`] to a key `V` (in production `AesGcmKey`, which
/// zeroizes itself when dropped).
pub(super) struct DerivedKeys<V> {
    bound: usize,
    ttl: Duration,
    inner: RwLock<Clock<V>>,
}

struct Clock<V> {
    slots: HashMap<DerivedId, Slot<V>>,
    /// Every key of `slots` once; the hand is at the front.
    ring: VecDeque<DerivedId>,
}

struct Slot<V> {
    made: Instant,
    /// Read since the hand last passed this entry.
    referenced: AtomicBool,
    value: V,
}

impl<V> DerivedKeys<V> {
    /// A cache of at most `bound` keys (at least 1), each used for `ttl` after it was made.
    pub(super) fn new(bound: usize, ttl: Duration) -> Self {
        DerivedKeys {
            bound: bound.max(1),
            ttl,
            inner: RwLock::new(Clock {
                slots: HashMap::new(),
                ring: VecDeque::new(),
            }),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Clock<V>> {
        // Every update leaves the map and the ring consistent before it can panic.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Clock<V>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh(&self, slot: &Slot<V>, now: Instant) -> bool {
        now.saturating_duration_since(slot.made) < self.ttl
    }

    /// Runs `use_key` on the key `id` names as of `now`. A missing or expired key is made by
    /// `make` (outside the lock) and cached; `None` if `make` cannot make it.
    pub(super) fn with<R>(
        &self,
        id: &DerivedId,
        now: Instant,
        make: impl FnOnce() -> Option<V>,
        use_key: impl FnOnce(&V) -> R,
    ) -> Option<R> {
        {
            let clock = self.read();
            if let Some(slot) = clock.slots.get(id).filter(|s| self.fresh(s, now)) {
                // A load first, so that a hot entry's cache line is not written on every read.
                if !slot.referenced.load(Ordering::Relaxed) {
                    slot.referenced.store(true, Ordering::Relaxed);
                }
                return Some(use_key(&slot.value));
            }
        }
        let value = make()?;
        let mut clock = self.write();
        let slot = Slot {
            made: now,
            referenced: AtomicBool::new(false),
            value,
        };
        // Another reader may have made it meanwhile, or it expired: this one replaces it.
        if clock.slots.insert(*id, slot).is_none() {
            while clock.slots.len() > self.bound && self.evict_one(&mut clock, now) {}
            clock.ring.push_back(*id);
        }
        clock.slots.get(id).map(|slot| use_key(&slot.value))
    }

    /// Advances the hand until it removes one entry: expired, or not read since last passed.
    /// `false` if the ring was empty.
    fn evict_one(&self, clock: &mut Clock<V>, now: Instant) -> bool {
        while let Some(id) = clock.ring.pop_front() {
            let Some(slot) = clock.slots.get_mut(&id) else {
                continue;
            };
            if self.fresh(slot, now) && std::mem::take(slot.referenced.get_mut()) {
                clock.ring.push_back(id);
            } else {
                clock.slots.remove(&id);
                return true;
            }
        }
        false
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let clock = self.read();
        assert_eq!(clock.slots.len(), clock.ring.len(), "ring and map agree");
        clock.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A key that records when it is dropped (where `AesGcmKey` zeroizes itself).
    struct Probe {
        name: u8,
        dropped: Arc<Mutex<Vec<u8>>>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.dropped.lock().unwrap().push(self.name);
        }
    }

    fn id(n: u8) -> DerivedId {
        [n; 64]
    }

    struct Fixture {
        cache: DerivedKeys<Probe>,
        dropped: Arc<Mutex<Vec<u8>>>,
        made: Mutex<Vec<u8>>,
    }

    impl Fixture {
        fn new(bound: usize) -> Self {
            Fixture {
                cache: DerivedKeys::new(bound, Duration::from_secs(600)),
                dropped: Arc::default(),
                made: Mutex::default(),
            }
        }

        /// Reads key `n` at `now`; returns the name of the key used.
        fn get(&self, n: u8, now: Instant) -> u8 {
            self.cache
                .with(
                    &id(n),
                    now,
                    || {
                        self.made.lock().unwrap().push(n);
                        Some(Probe {
                            name: n,
                            dropped: self.dropped.clone(),
                        })
                    },
                    |p| p.name,
                )
                .unwrap()
        }

        fn made(&self) -> Vec<u8> {
            std::mem::take(&mut self.made.lock().unwrap())
        }

        fn dropped(&self) -> Vec<u8> {
            std::mem::take(&mut self.dropped.lock().unwrap())
        }
    }

    #[test]
    fn hits_reuse_the_key_and_misses_make_it_once() {
        let f = Fixture::new(4);
        let t = Instant::now();
        assert_eq!(f.get(1, t), 1);
        assert_eq!(f.get(1, t), 1);
        assert_eq!(f.get(2, t), 2);
        assert_eq!(f.made(), [1, 2]);
        assert!(f.dropped().is_empty());
        let none = f.cache.with(&id(3), t, || None, |p| p.name);
        assert!(none.is_none(), "a key that cannot be made is not cached");
        assert_eq!(f.cache.len(), 2);
    }

    /// Beyond the bound the hand removes an entry not read since it last passed, and that
    /// entry is dropped (zeroized) at once; entries read in the meantime get a second chance.
    #[test]
    fn bounded_with_a_second_chance_and_dropped_on_eviction() {
        let f = Fixture::new(3);
        let t = Instant::now();
        for n in [1, 2, 3] {
            f.get(n, t);
        }
        f.get(1, t); // 1 is read again: it survives the next eviction
        f.get(4, t);
        assert_eq!(f.dropped(), [2], "2 was the first entry not read again");
        assert_eq!(f.cache.len(), 3);
        f.made();
        for n in [1, 3, 4] {
            f.get(n, t);
        }
        assert!(f.made().is_empty(), "the others stayed");
        f.get(5, t);
        assert_eq!(f.cache.len(), 3);
        assert_eq!(f.dropped().len(), 1, "one entry evicted per entry added");
        for n in 10..100 {
            f.get(n, t);
            assert!(f.cache.len() <= 3);
        }
        assert_eq!(f.dropped().len(), 90);
        drop(f.cache);
        assert_eq!(
            f.dropped.lock().unwrap().len(),
            3,
            "the rest dropped with the cache"
        );
    }

    /// An expired key is never used: it is made again and the old one dropped; the hand
    /// removes expired entries before any fresh one.
    #[test]
    fn expired_keys_are_made_again_and_dropped() {
        let f = Fixture::new(2);
        let t = Instant::now();
        let ttl = Duration::from_secs(600);
        f.get(1, t);
        f.get(1, t + ttl / 2);
        assert_eq!(f.made(), [1]);
        assert_eq!(f.get(1, t + ttl), 1);
        assert_eq!(f.made(), [1], "made again once expired");
        assert_eq!(
            f.dropped(),
            [1],
            "the expired key was dropped when replaced"
        );
        // 2 is read often but has expired by the time 3 needs room; 1 is fresh and read.
        let t2 = t + ttl;
        f.get(1, t2);
        f.get(2, t);
        f.get(2, t);
        f.get(3, t2 + Duration::from_secs(1));
        assert_eq!(f.dropped(), [2], "the expired entry went first");
        assert_eq!(f.cache.len(), 2);
    }

    #[test]
    fn concurrent_readers_share_the_keys() {
        let f = Arc::new(Fixture::new(8));
        let t = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for n in 0..200u8 {
                        assert_eq!(f.get(n % 16 + i, t), n % 16 + i);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert!(f.cache.len() <= 8);
    }
}
