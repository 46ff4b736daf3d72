//! The store's state, read at scrape time: Secrets stored (counted lazily and cached, since
//! counting reads every stored value), open watches, the running or last migration, and the
//! backend's group-commit histograms (batch size, sync latency) from
//! [`Backend::write_stats`](crate::backend::Backend::write_stats).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::backend::HistogramSnapshot;
use crate::store::Store;

/// How long a count of the stored Secrets is reported before a scrape counts again.
const OBJECTS_TTL: Duration = Duration::from_secs(60);

/// Reports the store it holds (weakly).
#[derive(Default)]
pub(super) struct StoreCollector {
    store: Mutex<Weak<Store>>,
    /// The last count and when it was taken; `None` count when counting failed.
    objects: tokio::sync::Mutex<Option<(Instant, Option<u64>)>>,
    /// The count to report, copied from `objects` for the synchronous encoder.
    reported: Mutex<Option<u64>>,
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl StoreCollector {
    pub(super) fn set(&self, store: &Arc<Store>) {
        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(store);
    }

    fn store(&self) -> Option<Arc<Store>> {
        self.store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade()
    }

    /// Counts the stored Secrets again if the last count is older than [`OBJECTS_TTL`]. A
    /// scrape that finds a count under way waits for it rather than counting twice.
    pub(super) async fn refresh(&self) {
        let Some(store) = self.store() else { return };
        let mut cached = self.objects.lock().await;
        let fresh = cached
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < OBJECTS_TTL);
        if !fresh {
            let count = match store.count_objects().await {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot count stored objects for metrics");
                    None
                }
            };
            *cached = Some((Instant::now(), count));
        }
        *self.reported.lock().unwrap_or_else(|e| e.into_inner()) =
            cached.as_ref().and_then(|(_, n)| *n);
    }
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    let buckets: Vec<(f64, u64)> = h
        .bounds
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(h.counts.iter().copied())
        .collect();
    m.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        if let Some(n) = *self.reported.lock().unwrap_or_else(|e| e.into_inner()) {
            gauge(
                &mut enc,
                "keyward_store_objects",
                "Secrets stored, counted at most once a minute",
                as_i64(n),
            )?;
        }
        gauge(
            &mut enc,
            "keyward_store_watchers",
            "Watch streams open now",
            as_i64(store.watchers() as u64),
        )?;
        let mig = store.migration();
        gauge(
            &mut enc,
            "keyward_store_migration_running",
            "1 while a migration (keyward migrate, or automatic) re-encrypts stale objects",
            i64::from(mig.running),
        )?;
        let p = &mig.progress;
        let mut m = enc.encode_descriptor(
            "keyward_store_migration_objects",
            "Objects of the running or last migration: found when it started, examined, rewritten, changed concurrently (conflicts), undecryptable",
            None,
            MetricType::Gauge,
        )?;
        for (what, n) in [
            ("found", p.total),
            ("examined", p.done),
            ("rewritten", p.rewritten),
            ("conflicts", p.conflicts),
            ("undecryptable", p.failed),
        ] {
            ConstGauge::new(as_i64(n)).encode(m.encode_family(&[("objects", what)])?)?;
        }
        let mut m = enc.encode_descriptor(
            "keyward_store_migrations",
            "Migrations that ended since the store started, by result",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [("finished", mig.finished), ("failed", mig.failed)] {
            ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
        }
        if let Some(w) = store.backend().write_stats() {
            histogram(
                &mut enc,
                "keyward_store_write_batch_size",
                "Write requests per batch of the embedded store (one log record and one fdatasync per batch: group commit)",
                &w.batch_size,
            )?;
            histogram(
                &mut enc,
                "keyward_store_fsync_duration_seconds",
                "Time to make a batch of the embedded store durable: the fdatasync of its log record",
                &w.sync_seconds,
            )?;
            let m = enc.encode_descriptor(
                "keyward_store_commits",
                "Embedded store: records made durable (log-structured engine: batches, relocations, compactions), or in-memory layers of batched writes written to sled (sled)",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(w.commits).encode(m)?;
        }
        Ok(())
    }
}
