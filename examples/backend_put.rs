//! The sled backend's write path alone, without gRPC or the store: 16 tasks each read a key
//! and put 1,100 bytes under it (1,000 keys), for a number of seconds; prints puts per second,
//! the process's CPU per put and the sled transactions committed.
//!
//! `cargo run --release --example backend_put -- DIR [SECONDS] [LAYER_BYTES]` (DIR is removed
//! first; LAYER_BYTES is `SledOptions::layer_bytes`, 0 for one sled transaction per batch).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::backend::{Backend, Expect};

fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .expect("stat")
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime")) / 100.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::args().nth(1).expect("dir");
    let secs: u64 = std::env::args()
        .nth(2)
        .map_or(10, |s| s.parse().expect("secs"));
    let layer_bytes = std::env::args()
        .nth(3)
        .map_or(SledOptions::default().layer_bytes, |s| {
            s.parse().expect("LAYER_BYTES is a number")
        });
    let _ = std::fs::remove_dir_all(&dir);
    let opts = SledOptions {
        layer_bytes,
        ..SledOptions::default()
    };
    let backend = Arc::new(SledBackend::open(std::path::Path::new(&dir), opts).expect("open"));
    let value = vec![7u8; 1100];
    for i in 0..1000u32 {
        backend
            .put(
                format!("/registry/secrets/bench/key-{i:05}").as_bytes(),
                value.clone(),
                Expect::Any,
            )
            .await
            .expect("put");
    }
    let done = Arc::new(AtomicU64::new(0));
    let (t0, c0) = (Instant::now(), cpu_secs());
    let deadline = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..16u32 {
        let (backend, done, value) = (backend.clone(), done.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while Instant::now() < deadline {
                let key = format!("/registry/secrets/bench/key-{:05}", (i * 7919) % 1000);
                let (cur, _) = backend.get(key.as_bytes(), None).await.expect("get");
                let _ = cur;
                backend
                    .put(key.as_bytes(), value.clone(), Expect::Any)
                    .await
                    .expect("put");
                done.fetch_add(1, Ordering::Relaxed);
                i += 16;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let (el, cpu) = (t0.elapsed().as_secs_f64(), cpu_secs() - c0);
    let n = done.load(Ordering::Relaxed) as f64;
    println!(
        "{:.0} puts/s, {:.1} us cpu/put, commits {}",
        n / el,
        cpu * 1e6 / n,
        backend.writer_stats().commits
    );
}
