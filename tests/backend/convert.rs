//! `backend::convert::into_log`: a sled store copied into a new log-structured one answers every
//! read, range and watch the way the source does, at every revision the source can still be
//! read at, and both go on the same way after more writes.

use std::path::Path;

use keyward::backend::convert::into_log;
use keyward::backend::logstore::{LogBackend, LogOptions};
use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::backend::{Backend, BackendError, Expect, RangeRequest, Revision};
use tokio_stream::StreamExt;

/// A small deterministic generator (xorshift64*), so that a failure replays from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

const KEYS: u64 = 12;

fn key(i: u64) -> Vec<u8> {
    format!("/registry/secrets/ns{}/k{i}", i % 3).into_bytes()
}

/// `n` random puts (conditional and not), deletes and compactions.
async fn write(backend: &dyn Backend, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let k = key(rng.below(KEYS));
        match rng.below(20) {
            0..=11 => {
                let value = format!("value-{}", rng.below(1 << 30)).into_bytes();
                let expect = if rng.below(4) == 0 {
                    Expect::Absent
                } else {
                    Expect::Any
                };
                backend.put(&k, value, expect).await.expect("put");
            }
            12..=17 => {
                backend.delete(&k, Expect::Any).await.expect("delete");
            }
            _ => {
                let current = backend.current_revision().await.expect("revision").get();
                let to = current - rng.below(10) as i64;
                if let Some(to) = Revision::new(to.max(1)) {
                    backend.compact(to).await.expect("compact");
                }
            }
        }
    }
}

/// What a read answers, errors included, as text that compares.
fn answer<T: std::fmt::Debug>(r: Result<T, BackendError>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(BackendError::Compacted { .. }) => "compacted".to_string(),
        Err(e) => format!("error: {e}"),
    }
}

/// Every read of every key and every range at every revision from `from` to the current one,
/// and every change from `from` on, must be the same in both stores.
async fn same(a: &dyn Backend, b: &dyn Backend, from: i64, when: &str) {
    let through = a.current_revision().await.expect("revision");
    assert_eq!(through, b.current_revision().await.expect("revision"));
    assert_eq!(
        a.compacted_revision().await.expect("compacted"),
        b.compacted_revision().await.expect("compacted")
    );
    for r in from..=through.get() {
        let at = Revision::new(r);
        for i in 0..KEYS {
            let (x, y) = (a.get(&key(i), at).await, b.get(&key(i), at).await);
            assert_eq!(answer(x), answer(y), "{when}: get {i} at {r}");
        }
        for prefix in ["", "/registry/secrets/ns1/"] {
            let req = RangeRequest {
                start: prefix.as_bytes().to_vec(),
                revision: at,
                ..RangeRequest::default()
            };
            let (x, y) = (a.range(req.clone()).await, b.range(req).await);
            assert_eq!(answer(x), answer(y), "{when}: range {prefix:?} at {r}");
        }
    }
    let from = Revision::new(from.max(2)).expect("revision");
    if from <= through {
        let mut x = a.watch(b"", Some(from)).await.expect("watch");
        let mut y = b.watch(b"", Some(from)).await.expect("watch");
        for r in from.get()..=through.get() {
            let (ex, ey) = (x.next().await, y.next().await);
            assert_eq!(
                format!("{ex:?}"),
                format!("{ey:?}"),
                "{when}: change at {r}"
            );
        }
    }
}

async fn convert_and_compare(seed: u64, history_per_key: usize, log_retention: u64, ops: usize) {
    eprintln!("seed {seed:#x}, history {history_per_key}, retention {log_retention}, {ops} writes");
    let dir = tempfile::tempdir().expect("temp dir");
    let (sled_dir, log_dir) = (dir.path().join("sled"), dir.path().join("log"));
    let sled = SledBackend::open(
        &sled_dir,
        SledOptions {
            layer_bytes: keyward::backend::sled::DEFAULT_LAYER_BYTES,
            history_per_key,
            log_retention,
        },
    )
    .expect("open sled");
    let mut rng = Rng(seed);
    write(&sled, &mut rng, ops).await;
    let converted = into_log(&sled, &log_dir).await.expect("convert");
    assert_eq!(converted.revision, sled.current_revision().await.unwrap());
    let open_copy = || {
        let opts = LogOptions {
            history_per_key,
            log_retention,
            ..LogOptions::default()
        };
        LogBackend::open(&log_dir, opts).expect("open the copy")
    };
    let log = open_copy();
    let from = converted.compacted.get();
    same(&sled, &log, from, "converted").await;
    // Both go on alike: the same writes get the same revisions and outcomes.
    let mut again = Rng(seed ^ 0x5eed);
    write(&sled, &mut again, ops / 2).await;
    let mut again = Rng(seed ^ 0x5eed);
    write(&log, &mut again, ops / 2).await;
    let from = sled.compacted_revision().await.unwrap().get();
    same(&sled, &log, from, "written to").await;
    // And after reopening the copy.
    drop(log);
    let log = open_copy();
    same(&sled, &log, from, "reopened").await;
}

#[tokio::test]
async fn a_converted_store_reads_watches_and_writes_as_its_source() {
    for seed in 1..=6u64 {
        for (history, retention) in [(10, 100_000), (3, 40), (0, 0), (1, 15)] {
            convert_and_compare(
                seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                history,
                retention,
                240,
            )
            .await;
        }
    }
}

#[tokio::test]
async fn an_empty_store_converts_and_the_destination_must_be_new() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sled = SledBackend::open(&dir.path().join("sled"), SledOptions::default()).expect("open");
    let out = dir.path().join("log");
    let converted = into_log(&sled, &out).await.expect("convert");
    assert_eq!((converted.keys, converted.versions), (0, 0));
    let log = LogBackend::open(&out, LogOptions::default()).expect("open the copy");
    same(&sled, &log, 1, "empty").await;
    drop(log);
    // The destination exists now: a second copy is refused and leaves it alone.
    let err = into_log(&sled, &out)
        .await
        .expect_err("an existing destination");
    assert!(err.to_string().contains("exists"), "{err}");
    assert!(LogBackend::open(&out, LogOptions::default()).is_ok());
    assert!(!has_partial(dir.path()));
}

/// Whether a `.partial` directory was left behind.
fn has_partial(dir: &Path) -> bool {
    std::fs::read_dir(dir).expect("list").any(|e| {
        e.expect("entry")
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    })
}
