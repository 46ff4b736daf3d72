//! The sled backend's write path alone, without gRPC or the store: 16 tasks each read a key
//! and put 1,100 bytes under it (1,000 keys), for a number of seconds; prints puts per second,
//! the process's CPU per put and the sled transactions committed.
//!
//! `cargo run --release --example backend_put -- DIR [SECONDS] [LAYER_BYTES|log]` (DIR is removed
//! first; LAYER_BYTES is `SledOptions::layer_bytes`, 0 for one sled transaction per batch; `log`
//! runs the same load on the log-structured backend instead).
use std::sync::Arc;

use keyward::backend::logstore::{LogBackend, LogOptions};
use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::backend::{Backend, Expect};

#[path = "support/load.rs"]
mod load;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (dir, secs) = load::args();
    if std::env::args().nth(3).as_deref() == Some("log") {
        let backend = Arc::new(
            LogBackend::open(std::path::Path::new(&dir), LogOptions::default()).expect("open"),
        );
        let (rate, cpu) = run(backend.clone(), secs).await;
        let commits = backend.write_stats().map_or(0, |s| s.commits);
        println!("{rate:.0} puts/s, {cpu:.1} us cpu/put, commits {commits}");
        return;
    }
    let layer_bytes = std::env::args()
        .nth(3)
        .map_or(SledOptions::default().layer_bytes, |s| {
            s.parse().expect("LAYER_BYTES is a number")
        });
    let opts = SledOptions {
        layer_bytes,
        ..SledOptions::default()
    };
    let backend = Arc::new(SledBackend::open(std::path::Path::new(&dir), opts).expect("open"));
    let (rate, cpu) = run(backend.clone(), secs).await;
    println!(
        "{rate:.0} puts/s, {cpu:.1} us cpu/put, commits {}",
        backend.writer_stats().commits
    );
}

/// Loads every key once, then drives the measured load; returns puts/s and µs of CPU per put.
async fn run<B: Backend>(backend: Arc<B>, secs: u64) -> (f64, f64) {
    for i in 0..load::KEYS {
        backend
            .put(&load::key(i), vec![7u8; load::VALUE_BYTES], Expect::Any)
            .await
            .expect("put");
    }
    load::drive(backend, secs, |backend, key, value| async move {
        backend.get(&key, None).await.expect("get");
        backend.put(&key, value, Expect::Any).await.expect("put");
    })
    .await
}
