//! What cold data costs a write path that cleans its log: 100,000 keys are written once (cold),
//! then 16 tasks put 1,100 bytes under 1,000 other keys (hot) for a number of seconds; prints
//! the hot puts per second, their latency percentiles and worst case, and the directory's size.
//! The log-structured backend cleans its oldest segment when the segments take twice what it
//! keeps: those segments hold the cold keys, which it copies forward in the writer thread while
//! the hot puts wait. sled (the default) runs the same load for comparison.
//!
//! `cargo run --release --example cold_stall -- DIR [SECONDS] [sled|log]` (DIR is removed
//! first; default 20 s on sled).
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::backend::logstore::{LogBackend, LogOptions};
use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::backend::{Backend, Expect};

// `drive` is the other examples' loop; this one times every put instead.
#[allow(dead_code)]
#[path = "support/load.rs"]
mod load;
use load::TASKS;

/// Keys written once before the measured load.
const COLD: u32 = 100_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (dir, secs) = load::args();
    let path = std::path::Path::new(&dir);
    match std::env::args().nth(3).as_deref() {
        Some("log") => {
            let backend = Arc::new(LogBackend::open(path, LogOptions::default()).expect("open"));
            run(backend.clone(), secs).await;
            let (size, live) = backend.space();
            println!(
                "segments {:.0} MiB for {:.0} MiB kept",
                size as f64 / 1048576.0,
                live as f64 / 1048576.0
            );
        }
        None | Some("sled") => {
            let backend = Arc::new(SledBackend::open(path, SledOptions::default()).expect("open"));
            run(backend, secs).await;
        }
        Some(other) => panic!("the engine is sled or log, not {other}"),
    }
    println!("directory {:.0} MiB", dir_bytes(path) as f64 / 1048576.0);
}

/// Loads the cold keys, then drives the hot load and prints its figures.
async fn run<B: Backend>(backend: Arc<B>, secs: u64) {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..COLD).step_by(TASKS as usize) {
                let key = format!("/registry/secrets/cold/key-{i:06}").into_bytes();
                backend
                    .put(&key, vec![3u8; load::VALUE_BYTES], Expect::Any)
                    .await
                    .expect("cold put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    println!("{COLD} cold keys in {:.1} s", t0.elapsed().as_secs_f64());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = t;
            while Instant::now() < deadline {
                let started = Instant::now();
                backend
                    .put(
                        &load::key(i.wrapping_mul(7919)),
                        vec![7u8; load::VALUE_BYTES],
                        Expect::Any,
                    )
                    .await
                    .expect("hot put");
                latencies.push(started.elapsed());
                i += TASKS;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "{:.0} hot puts/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms",
        all.len() as f64 / secs as f64,
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
