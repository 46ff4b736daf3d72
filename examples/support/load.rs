//! The load of the write-path examples (`backend_put`, `log_floor`): 16 tasks, each reading a
//! key and putting [`VALUE_BYTES`] under it, over 1,000 keys, for a number of seconds; reports
//! puts per second and the process's CPU per put.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of every value put.
pub const VALUE_BYTES: usize = 1100;
/// Keys written, each loaded once before the measured load.
pub const KEYS: u32 = 1000;
/// Tasks putting at once.
pub const TASKS: u32 = 16;

/// `DIR` and `SECONDS` (default 10), the first two arguments; `DIR` is removed.
pub fn args() -> (String, u64) {
    let dir = std::env::args().nth(1).expect("DIR");
    let secs = std::env::args()
        .nth(2)
        .map_or(10, |s| s.parse().expect("SECONDS is a number"));
    let _ = std::fs::remove_dir_all(&dir);
    (dir, secs)
}

/// The process's user and system CPU so far, in seconds.
pub fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .expect("stat")
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime")) / 100.0
}

/// Key `i` (of [`KEYS`]).
pub fn key(i: u32) -> Vec<u8> {
    format!("/registry/secrets/bench/key-{:05}", i % KEYS).into_bytes()
}

/// Runs `read_then_put(target, key, value)` from 16 tasks until `secs` have passed; returns
/// puts per second and microseconds of CPU per put.
pub async fn drive<S, F, Fut>(target: Arc<S>, secs: u64, read_then_put: F) -> (f64, f64)
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Vec<u8>, Vec<u8>) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let (t0, c0) = (Instant::now(), cpu_secs());
    let deadline = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (target, done) = (target.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while Instant::now() < deadline {
                read_then_put(
                    target.clone(),
                    key(i.wrapping_mul(7919)),
                    vec![7u8; VALUE_BYTES],
                )
                .await;
                done.fetch_add(1, Ordering::Relaxed);
                i += TASKS;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let (el, cpu) = (t0.elapsed().as_secs_f64(), cpu_secs() - c0);
    let n = done.load(Ordering::Relaxed) as f64;
    (n / el, cpu * 1e6 / n)
}
