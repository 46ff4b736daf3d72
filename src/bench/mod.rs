//! Load generators for any KMS v2 plugin ([`kms`]), for keyward's secret store and for etcd
//! (the same store workloads, for comparison; [`store`]), and for the transport floor under
//! them ([`pingpong`]).
//!
//! Workers are tokio tasks sharing [`Load::connections`] connections (worker i uses connection
//! i mod connections), so calls are multiplexed as kube-apiserver does on its single plugin
//! connection. Each worker records the latency of its successful calls in its own HDR histogram
//! (microseconds); the histograms are merged at the end into a [`Report`]. Failed calls are
//! counted by gRPC code (etcd backend errors and socket errors are mapped to the nearest code).
//!
//! Two floors put the plugin's figures in context: [`kms::KmsOp::Health`] (an RPC whose handler
//! does no work, on the same server and socket) and [`pingpong`] (fixed-size request/reply
//! exchanges over a bare Unix socket, no HTTP/2 or gRPC).
//!
//! Calls start in a closed loop (each worker's next call as soon as its previous one returns)
//! or, with [`Load::rate`], on a fixed schedule (`schedule.rs`): an open loop whose latencies
//! count from each call's due time.
//!
//! Nothing here prints: a run reports how far it has got through [`Progress`] and returns its
//! [`Report`], which renders itself as text or JSON.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};

pub mod kms;
pub mod kube;
pub mod pingpong;
mod progress;
mod report;
mod schedule;
pub mod store;

pub use progress::{Phase, Progress, Reading};
use report::{histogram, show_bytes};
pub use report::{Outcome, Report};
pub use schedule::{parse_rate, Rate, MAX_RATE, MIN_RATE};
use schedule::{Schedule, Turn};

/// Bytes at the start of each value that tag it (a write's number), so events can be matched.
pub const TAG_BYTES: usize = 8;

/// Why a benchmark could not start or finish. Failed calls during the measurement are not
/// errors: they are counted in the [`Report`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A count is not a whole number (the caller's mistake).
    #[error("{value:?} is not a whole number (expected {min} to {max})")]
    NotANumber {
        /// The value given.
        value: String,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A count is out of range (the caller's mistake).
    #[error("must be {min} to {max} (got {value})")]
    CountOutOfRange {
        /// The value given.
        value: String,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A size cannot be read (the caller's mistake).
    #[error("{value:?} is not a size")]
    NotASize {
        /// The value given.
        value: String,
    },
    /// A size is zero or too large (the caller's mistake).
    #[error("must be 1 byte to {} (got {value})", show_bytes(*.max))]
    SizeOutOfRange {
        /// The value given.
        value: String,
        /// Largest allowed, in bytes.
        max: u64,
    },
    /// A rate is not a number (the caller's mistake).
    #[error(
        "{value:?} is not a number of calls per second (expected 0 for a closed loop, or {} to {})",
        MIN_RATE,
        MAX_RATE
    )]
    NotARate {
        /// The value given.
        value: String,
    },
    /// A rate is negative, not a number (NaN), infinite, or out of range (the caller's mistake).
    #[error(
        "must be 0 (a closed loop) or {} to {} calls per second (got {value})",
        MIN_RATE,
        MAX_RATE
    )]
    RateOutOfRange {
        /// The value given.
        value: String,
    },
    /// The target cannot be reached (the caller's address, or the target is down).
    #[error("cannot connect to {target} at {endpoint}: {detail}")]
    Connect {
        /// What was called, e.g. `the KMS plugin`.
        target: &'static str,
        /// Where.
        endpoint: String,
        /// Why.
        detail: String,
    },
    /// The target refused a call that prepares the data the workload uses (the target).
    #[error("preparing {what}: {call} failed ({code}): {message}")]
    Prepare {
        /// What was being prepared, e.g. `ciphertexts`.
        what: String,
        /// The call, e.g. `Encrypt`.
        call: &'static str,
        /// Its gRPC code's name.
        code: String,
        /// The target's message.
        message: String,
    },
    /// The target failed a call outside the measurement: opening a watch, reading its
    /// revision (the target).
    #[error("{0}")]
    Target(String),
    /// No random bytes for the payloads (the environment).
    #[error("cannot generate random payloads: {0}")]
    Random(getrandom::Error),
    /// A task of the load generator failed (a bug).
    #[error("{0}")]
    Internal(String),
}

/// When measuring stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many calls, across all workers.
    Requests(u64),
    /// After this long.
    For(Duration),
}

/// How long to run and how hard: shared by every benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Concurrent workers.
    pub concurrency: usize,
    /// Connections the workers share (at most `concurrency`).
    pub connections: usize,
    /// When measuring stops.
    pub stop: Stop,
    /// How long to run unmeasured first.
    pub warmup: Duration,
    /// Per-call timeout; a call taking longer counts as a `DeadlineExceeded` error.
    pub timeout: Duration,
    /// Calls started per second on a fixed schedule (an open loop, warm-up included), at most
    /// `concurrency` in flight; `None`: a closed loop, each worker starting its next call as
    /// soon as its previous one returns.
    pub rate: Option<Rate>,
}

/// A whole number in `min..=max`.
pub fn parse_count(s: &str, min: u64, max: u64) -> Result<u64, BenchError> {
    match s.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(BenchError::CountOutOfRange {
            value: s.to_owned(),
            min,
            max,
        }),
        Err(_) => Err(BenchError::NotANumber {
            value: s.to_owned(),
            min,
            max,
        }),
    }
}

/// A size in bytes: `32`, `32B`, `1KiB`, `4KiB`, `1MiB` (also `KB`/`MB` as powers of 1000),
/// from 1 to `max`.
pub fn parse_size(s: &str, max: u64) -> Result<usize, BenchError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let not_a_size = || BenchError::NotASize {
        value: s.to_owned(),
    };
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "ki" | "k" => 1 << 10,
        "mib" | "mi" | "m" => 1 << 20,
        "kb" => 1000,
        "mb" => 1_000_000,
        _ => return Err(not_a_size()),
    };
    let n: u64 = num.parse().map_err(|_| not_a_size())?;
    match n.checked_mul(unit_bytes) {
        Some(b) if (1..=max).contains(&b) => Ok(b as usize),
        _ => Err(BenchError::SizeOutOfRange {
            value: s.to_owned(),
            max,
        }),
    }
}

/// One worker's call; `n` numbers the calls of a phase from 0 across all workers.
trait Worker: Send + 'static {
    fn call(&mut self, n: u64) -> impl Future<Output = Result<(), Status>> + Send;
}

/// The error a call gets when it outlives the per-call timeout.
fn deadline() -> Status {
    Status::deadline_exceeded("client-side --timeout")
}

/// Runs `call` with the per-call timeout.
async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(deadline()))
}

/// Runs `workers` concurrently: unmeasured for `warmup`, then until `stop`, in a closed loop or
/// at [`Load::rate`]; `progress` follows.
async fn drive<W: Worker>(
    workers: Vec<W>,
    load: &Load,
    progress: &Progress,
) -> Result<Outcome, BenchError> {
    let started = progress.measuring(load.stop, !load.warmup.is_zero());
    let schedule = Arc::new(Schedule::new(load, started));
    let start = schedule.start();
    let timeout = load.timeout;
    let mut tasks = Vec::with_capacity(workers.len());
    for mut w in workers {
        let schedule = schedule.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut calls = 0u64;
            let mut late = 0u64;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut warm = true;
            loop {
                let (n, due) = match schedule.next() {
                    Turn::Warm { n, due } => {
                        schedule.wait(due).await;
                        let _ = tokio::time::timeout(timeout, w.call(n)).await;
                        continue;
                    }
                    Turn::Measure { n, due } => (n, due),
                    Turn::Stop => break,
                };
                schedule.wait(due).await;
                if std::mem::take(&mut warm) {
                    progress.set(Phase::Measuring);
                }
                let begun = schedule.begin(due);
                let res = timed(timeout, w.call(n)).await;
                let us = u64::try_from(begun.from.elapsed().as_micros()).unwrap_or(u64::MAX);
                calls += 1;
                late += u64::from(begun.late);
                match res {
                    Ok(()) => latency.saturating_record(us.max(1)),
                    Err(s) => *errors.entry(code_name(s.code())).or_default() += 1,
                }
            }
            (latency, calls, late, errors, Instant::now())
        }));
    }
    let mut out = Outcome {
        latency: histogram(),
        calls: 0,
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
        warmup_calls: 0,
        late_calls: 0,
    };
    let mut last = start;
    for t in tasks {
        let (latency, calls, late, errors, done) = t
            .await
            .map_err(|e| BenchError::Internal(format!("benchmark worker failed: {e}")))?;
        out.latency
            .add(&latency)
            .map_err(|e| BenchError::Internal(format!("cannot merge latency histograms: {e}")))?;
        out.calls += calls;
        out.late_calls += late;
        for (code, n) in errors {
            *out.errors.entry(code).or_default() += n;
        }
        last = last.max(done);
    }
    out.elapsed = last.saturating_duration_since(start);
    out.warmup_calls = schedule.warmup_calls();
    progress.set(Phase::Done);
    Ok(out)
}

/// A gRPC code's name as in the gRPC spec's Rust spelling, e.g. `Unavailable`.
fn code_name(c: Code) -> String {
    format!("{c:?}")
}

/// `size` bytes: random, with `n` in the first bytes so that payloads are distinct.
fn payload(size: usize, n: u64) -> Result<Vec<u8>, BenchError> {
    let mut p = vec![0u8; size];
    getrandom::getrandom(&mut p).map_err(BenchError::Random)?;
    stamp(&mut p, n);
    Ok(p)
}

/// Writes `tag` big-endian into the first bytes of `buf` (its last bytes if `buf` is shorter).
fn stamp(buf: &mut [u8], tag: u64) {
    let t = tag.to_be_bytes();
    let k = buf.len().min(TAG_BYTES);
    buf[..k].copy_from_slice(&t[TAG_BYTES - k..]);
}

/// Whether `buf` starts with `tag` as [`stamp`] wrote it.
fn has_stamp(buf: &[u8], tag: u64) -> bool {
    let t = tag.to_be_bytes();
    let k = buf.len().min(TAG_BYTES);
    buf[..k] == t[TAG_BYTES - k..]
}

/// The tag at the start of a value of at least [`TAG_BYTES`] bytes.
fn tag_of(value: &[u8]) -> Option<u64> {
    let head: [u8; TAG_BYTES] = value.get(..TAG_BYTES)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

/// Runs `count` setup jobs on `concurrency` tasks; `job(i)` for each i in `0..count`;
/// `progress` counts them.
async fn setup<T, F, Fut>(
    count: u64,
    concurrency: usize,
    progress: &Progress,
    job: F,
) -> Result<Vec<T>, BenchError>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T, BenchError>> + Send,
{
    progress.preparing(count);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(count as usize).max(1) {
        let next = next.clone();
        let job = job.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, BenchError>(done);
                }
                done.push((i, job(i).await?));
                progress.prepared_one();
            }
        }));
    }
    let mut all = Vec::with_capacity(count as usize);
    for t in tasks {
        all.extend(
            t.await
                .map_err(|e| BenchError::Internal(format!("setup task failed: {e}")))??,
        );
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// A failed preparing call as a [`BenchError::Prepare`].
fn prepare_error(what: impl Into<String>, call: &'static str) -> impl FnOnce(Status) -> BenchError {
    let what = what.into();
    move |s| BenchError::Prepare {
        what,
        call,
        code: code_name(s.code()),
        message: s.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sizes() {
        assert_eq!(parse_count(" 7 ", 1, 10).unwrap(), 7);
        assert_eq!(
            parse_count("0", 1, 10).unwrap_err().to_string(),
            "must be 1 to 10 (got 0)"
        );
        assert_eq!(
            parse_count("many", 1, 10).unwrap_err().to_string(),
            "\"many\" is not a whole number (expected 1 to 10)"
        );
        for (s, want) in [
            ("32", 32),
            ("32B", 32),
            ("1KiB", 1024),
            ("4KiB", 4096),
            ("1MiB", 1 << 20),
            ("2kb", 2000),
            (" 7 KiB ", 7 * 1024),
        ] {
            assert_eq!(parse_size(s, 1 << 20).unwrap(), want, "{s}");
        }
        for (s, want) in [
            ("0", "must be 1 byte to 1000KiB"),
            ("1MiB", "must be 1 byte to 1000KiB"),
            ("99999999999999999999", "\""),
            ("1GiB", "\"1GiB\" is not a size"),
            ("KiB", "\"KiB\" is not a size"),
            ("-1", "\"-1\" is not a size"),
            ("1.5KiB", "\"1.5KiB\" is not a size"),
        ] {
            let e = parse_size(s, 1000 << 10).unwrap_err().to_string();
            assert!(e.starts_with(want), "{s}: {e}");
        }
    }

    #[test]
    fn payloads_are_distinct() {
        let a = payload(32, 1).unwrap();
        let b = payload(32, 2).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a[..8], b[..8]);
        assert_eq!(payload(1, 300).unwrap().len(), 1);
    }

    #[test]
    fn stamps() {
        let mut v = vec![0xaa; 16];
        stamp(&mut v, 0x0102_0304_0506_0708);
        assert_eq!(v[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(v[8..], [0xaa; 8]);
        assert_eq!(tag_of(&v), Some(0x0102_0304_0506_0708));
        assert!(has_stamp(&v, 0x0102_0304_0506_0708));
        assert!(!has_stamp(&v, 7));
        assert_eq!(tag_of(&v[..7]), None);
        let mut short = [0u8; 2];
        stamp(&mut short, 0x0102_0304_0506_0708);
        assert_eq!(short, [7, 8]);
        assert!(has_stamp(&short, 0x0708));
    }

    /// Fails one call in four with `Unavailable`, after sleeping `n % 3` ms.
    pub(super) struct Fake;

    impl Worker for Fake {
        async fn call(&mut self, n: u64) -> Result<(), Status> {
            tokio::time::sleep(Duration::from_millis(n % 3)).await;
            if n % 4 == 3 {
                Err(Status::unavailable("down"))
            } else {
                Ok(())
            }
        }
    }

    pub(super) fn load(stop: Stop) -> Load {
        Load {
            concurrency: 4,
            connections: 1,
            stop,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(5),
            rate: None,
        }
    }

    #[tokio::test]
    async fn drive_counts_calls_errors_and_latency() {
        let progress = Progress::default();
        let o = drive(
            (0..4).map(|_| Fake).collect(),
            &load(Stop::Requests(100)),
            &progress,
        )
        .await
        .unwrap();
        assert_eq!(o.calls, 100);
        let r = progress.read();
        assert_eq!((r.phase, r.stop), (Phase::Done, Some(Stop::Requests(100))));
        assert!(r.calls >= 100, "{r:?}");
        assert_eq!(o.warmup_calls, 0);
        assert_eq!(o.errors, BTreeMap::from([("Unavailable".to_owned(), 25)]));
        assert_eq!(o.latency.len(), 75);
    }

    #[tokio::test]
    async fn drive_for_a_duration_with_warmup() {
        let mut p = load(Stop::For(Duration::from_millis(50)));
        p.warmup = Duration::from_millis(20);
        let o = drive((0..4).map(|_| Fake).collect(), &p, &Progress::default())
            .await
            .unwrap();
        assert!(o.calls > 0);
        assert!(
            o.warmup_calls >= 4,
            "each worker warms up: {}",
            o.warmup_calls
        );
        assert!(o.elapsed >= Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn drive_at_a_rate() {
        // 1,000 calls/s for 100 ms after 20 ms of warm-up: the calls are due every millisecond,
        // and none is late (each takes at most 2 ms, four workers).
        let mut p = load(Stop::For(Duration::from_millis(100)));
        p.warmup = Duration::from_millis(20);
        p.rate = Rate::new(1000.0);
        let progress = Progress::default();
        let t0 = Instant::now();
        let o = drive((0..4).map(|_| Fake).collect(), &p, &progress)
            .await
            .unwrap();
        assert_eq!(o.calls, 100);
        assert_eq!(o.warmup_calls, 20);
        assert_eq!(o.late_calls, 0);
        assert_eq!(progress.read().calls, 100);
        assert_eq!(o.errors, BTreeMap::from([("Unavailable".to_owned(), 25)]));
        // The last call was due at 119 ms and took up to 2 ms.
        assert!(
            t0.elapsed() <= Duration::from_millis(122),
            "{:?}",
            t0.elapsed()
        );
        assert!(o.latency.max() <= 2_000, "{}", o.latency.max());
    }

    /// Succeeds after sleeping this long.
    struct Slow(Duration);

    impl Worker for Slow {
        async fn call(&mut self, _: u64) -> Result<(), Status> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn drive_at_an_unsustainable_rate() {
        // Each call takes 10 ms on one of two workers: 200 calls/s at most, for 1,000 offered.
        let slow = || {
            vec![
                Slow(Duration::from_millis(10)),
                Slow(Duration::from_millis(10)),
            ]
        };
        let mut p = load(Stop::Requests(50));
        p.concurrency = 2;
        p.rate = Rate::new(1000.0);
        let o = drive(slow(), &p, &Progress::default()).await.unwrap();
        assert_eq!(o.calls, 50, "late calls are not skipped");
        assert!(o.late_calls >= 45, "{}", o.late_calls);
        // Latency counts from the due time: the last call was due at 49 ms and ended at 250 ms.
        assert!(o.latency.max() >= 190_000, "{}", o.latency.max());
        assert!(o.elapsed >= Duration::from_millis(250), "{:?}", o.elapsed);
        // With a duration, the calls still due at the end are not started.
        let mut p = load(Stop::For(Duration::from_millis(100)));
        p.concurrency = 2;
        p.rate = Rate::new(1000.0);
        let o = drive(slow(), &p, &Progress::default()).await.unwrap();
        assert!((19..=22).contains(&o.calls), "{}", o.calls);
        assert!(o.elapsed <= Duration::from_millis(115), "{:?}", o.elapsed);
    }

    #[tokio::test]
    async fn slow_calls_time_out() {
        let mut p = load(Stop::Requests(2));
        p.concurrency = 2;
        p.timeout = Duration::from_millis(10);
        let minute = Duration::from_secs(60);
        let o = drive(vec![Slow(minute), Slow(minute)], &p, &Progress::default())
            .await
            .unwrap();
        assert_eq!(
            o.errors,
            BTreeMap::from([("DeadlineExceeded".to_owned(), 2)])
        );
        assert!(o.latency.is_empty());
    }
}
