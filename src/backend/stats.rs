//! What a backend counts about its own write path (group commit), kept in plain atomics and read
//! as snapshots by whoever reports it: the metrics layer reads them at scrape time, benches print
//! them. No metrics crate here; recording is a few relaxed atomic adds per batch.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bounds of the batch-size histogram (requests per batch), up to the writer's batch limit.
pub(crate) const BATCH_SIZE_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
/// Bounds of the sync-latency histogram in nanoseconds: 100 µs to 6.5536 s, doubling (etcd's
/// WAL fsync histogram starts at 1 ms; a good disk syncs well under that).
pub(crate) const SYNC_NANOS_BOUNDS: &[u64] = &[
    100_000,
    200_000,
    400_000,
    800_000,
    1_600_000,
    3_200_000,
    6_400_000,
    12_800_000,
    25_600_000,
    51_200_000,
    102_400_000,
    204_800_000,
    409_600_000,
    819_200_000,
    1_638_400_000,
    3_276_800_000,
    6_553_600_000,
];

/// Counters of a backend's writer (its group commit), since the backend was opened.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct WriterStats {
    /// Batches of writes handled; each costs one `fsync` (none if it changed nothing).
    pub batches: u64,
    /// Put and delete requests handled in those batches (conflicts included).
    pub requests: u64,
    /// Requests per batch, for every batch handled.
    pub batch_size: HistogramSnapshot,
    /// Seconds to make a batch durable (sled: the `fdatasync` of its write-ahead log record),
    /// for every batch that changed something.
    pub sync_seconds: HistogramSnapshot,
    /// Writes to the underlying store of batches kept in memory meanwhile (sled: one per
    /// in-memory layer, [`SledOptions::layer_bytes`](crate::backend::sled::SledOptions) of
    /// writes, written key by key after its redo record).
    pub commits: u64,
}

/// A histogram read at one moment: per-bucket counts (not cumulative), their sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds (inclusive) of the buckets, ascending; one more bucket above the last
    /// bound holds everything larger.
    pub bounds: Vec<f64>,
    /// Observations per bucket: one per bound, then the one above the last bound.
    pub counts: Vec<u64>,
    /// Sum of the observed values.
    pub sum: f64,
    /// Number of observations (the sum of `counts`).
    pub count: u64,
}

/// A fixed-bucket histogram of integer observations in atomics (lock-free to record).
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    /// Upper bounds in the observed unit, ascending.
    bounds: &'static [u64],
    /// One per bound, then the overflow bucket.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    /// What one unit of an observation is in the snapshot's unit (e.g. 1e-9 for nanoseconds
    /// reported as seconds).
    scale: f64,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds (in the unit `observe` takes), reported multiplied
    /// by `scale`.
    pub(crate) fn new(bounds: &'static [u64], scale: f64) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "ascending bounds");
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Records one observation.
    pub(crate) fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The counts now. Concurrent observations may be half-seen (in a bucket but not yet in
    /// the sum); the count is always the buckets' total.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        HistogramSnapshot {
            bounds: self.bounds.iter().map(|&b| b as f64 * self.scale).collect(),
            count: counts.iter().sum(),
            counts,
            sum: self.sum.load(Ordering::Relaxed) as f64 * self.scale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let h = AtomicHistogram::new(&[1, 4, 16], 0.5);
        for v in [0, 1, 2, 4, 5, 16, 17, 1000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.bounds, vec![0.5, 2.0, 8.0]);
        assert_eq!(s.counts, vec![2, 2, 2, 2]);
        assert_eq!(s.count, 8);
        assert_eq!(s.sum, 1045.0 * 0.5);
    }
}
