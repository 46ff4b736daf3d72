//! Timing runs that print figures for docs/benchmarks.md, README.md and docs/design.md, not
//! criterion benches: each measures one whole workload once and prints what it saw. They were
//! ignored tests once; tests now only check behaviour.
//!
//! - `group_commit`: direct `SledBackend::put` calls (no gRPC) from 1, 4, 16 and 64 writers for
//!   3 s each: writes/s and the average batch per fsync.
//! - `migrate`: `Store::migrate` of 5,000 stale 1 KiB Secrets after a KEK rotation (kms v2
//!   A → B) through keyward's plugin: objects/s.
//! - `rotation_propagation`: three `keyward kms serve --keyring etcd` replicas on a real etcd;
//!   each of 20 rotations goes through replica 1, and the time until replicas 2 and 3 report
//!   the new key in `Status` (polled every millisecond) is recorded: min, median, max.
//!
//! Run: `cargo bench --bench timing` (all), `cargo bench --bench timing -- group_commit` (one;
//! any argument that is part of a run's name selects it). Without `--bench` (as `cargo test
//! --benches` runs it) each run does a short smoke pass that checks it works and prints no
//! figures worth citing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::backend::{Backend, Expect, WriteOutcome};
use keyward::crypto::Algorithm;
use keyward::pb::keyward_v1::RotateRequest;
use keyward::store::migrate::MigrateOptions;
use support::plugin::{admin_client, v2_client, wait_for_key_id, Cluster};
use support::store::{secret_v, sled_store};
use support::{config_text, kms_v2_provider, Plugin};

/// How much work a run does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Size {
    /// The figures: `cargo bench`.
    Full,
    /// A quick pass that checks the run works: `cargo test --benches`.
    Smoke,
}

type Run = fn(&tokio::runtime::Runtime, Size);

const RUNS: [(&str, Run); 3] = [
    ("group_commit", group_commit),
    ("migrate", migrate),
    ("rotation_propagation", rotation_propagation),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = if args.iter().any(|a| a == "--bench") {
        Size::Full
    } else {
        Size::Smoke
    };
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    for (name, run) in RUNS {
        if filters.is_empty() || filters.iter().any(|f| name.contains(f)) {
            println!(
                "== {name}{}",
                if size == Size::Smoke {
                    " (smoke pass)"
                } else {
                    ""
                }
            );
            run(&rt, size);
        }
    }
}

/// Group commit in `SledBackend`: concurrent writers share fsyncs.
fn group_commit(rt: &tokio::runtime::Runtime, size: Size) {
    let run_for = match size {
        Size::Full => Duration::from_secs(3),
        Size::Smoke => Duration::from_millis(100),
    };
    for writers in [1usize, 4, 16, 64] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
        let backend = Arc::new(
            SledBackend::open(dir.path(), SledOptions::default()).expect("open the sled store"),
        );
        let started = Instant::now();
        let done: u64 = rt.block_on(async {
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let backend = Arc::clone(&backend);
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        let key = format!("writer/{w}").into_bytes();
                        while started.elapsed() < run_for {
                            let outcome = backend.put(&key, vec![7; 100], Expect::Any).await;
                            assert!(
                                matches!(outcome, Ok(WriteOutcome::Applied { .. })),
                                "expected an applied write, got {outcome:?}"
                            );
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let mut total = 0;
            for task in tasks {
                total += task.await.expect("task");
            }
            total
        });
        let secs = started.elapsed().as_secs_f64();
        let stats = backend.writer_stats();
        println!(
            "writers {writers:>2}: {:>8.0} writes/s, {} batches, average batch {:.1}",
            done as f64 / secs,
            stats.batches,
            stats.requests as f64 / stats.batches.max(1) as f64
        );
    }
}

/// Re-encryption of stale Secrets after a KEK rotation, a page's rewrites in flight together.
fn migrate(rt: &tokio::runtime::Runtime, size: Size) {
    let n: usize = match size {
        Size::Full => 5_000,
        Size::Smoke => 100,
    };
    rt.block_on(async {
        let plugin = Plugin::start(Algorithm::Aes256Gcm).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = sled_store(
            &dir.path().join("store"),
            &config_text(&kms_v2_provider(&plugin.socket)),
        )
        .await;
        let value = "x".repeat(1024);
        let mut tasks = Vec::new();
        for t in 0..16 {
            let (store, value) = (store.clone(), value.clone());
            tasks.push(tokio::spawn(async move {
                for i in (t..n).step_by(16) {
                    store
                        .create(secret_v("drill", &format!("s{i}"), value.as_bytes()), false)
                        .await
                        .expect("create");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer task");
        }
        plugin.keyring.rotate().await.expect("rotate");
        let started = Instant::now();
        let p = store
            .migrate(MigrateOptions::default(), |_| {})
            .await
            .expect("migrate");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(p.rewritten, n as u64);
        println!(
            "migrate: {n} stale 1 KiB Secrets (kms v2 A -> B) in {secs:.2} s = {:.0} objects/s",
            n as f64 / secs
        );
        drop(store);
        plugin.stop().await;
    });
}

/// How long an etcd watch takes to carry a rotation made through one replica to the others'
/// `Status`.
fn rotation_propagation(rt: &tokio::runtime::Runtime, size: Size) {
    let rotations = match size {
        Size::Full => 20,
        Size::Smoke => 2,
    };
    let cluster = Cluster::start(3, &[]);
    let (r1, peers) = (&cluster.replicas[0], &cluster.replicas[1..]);
    let mut took: Vec<Vec<Duration>> = vec![Vec::new(); peers.len()];
    rt.block_on(async {
        let mut admin = admin_client(&r1.admin).await;
        let mut clients = Vec::new();
        for peer in peers {
            clients.push(v2_client(&peer.socket).await);
        }
        for _ in 0..rotations {
            let rotated = admin
                .rotate(RotateRequest {})
                .await
                .expect("rotate")
                .into_inner();
            let returned = Instant::now();
            let key_id = rotated.primary.expect("a primary").key_id;
            for (i, client) in clients.iter_mut().enumerate() {
                // Each peer is polled only after the previous one has the key: the second
                // figure is an upper bound, as the watch may have delivered it meanwhile.
                took[i].push(
                    wait_for_key_id(client, &key_id, returned, Duration::from_millis(1)).await,
                );
            }
        }
    });
    for (i, mut t) in took.into_iter().enumerate() {
        t.sort();
        println!(
            "replica {}: the new key_id in Status {:?} (min) / {:?} (median) / {:?} (max) after \
             the rotation returned, {rotations} rotations",
            i + 2,
            t[0],
            t[t.len() / 2],
            t[t.len() - 1]
        );
    }
}
