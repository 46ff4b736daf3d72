//! Criterion benches for keyward's hot paths: keyring wrap/unwrap of a 32-byte seed per AEAD,
//! and the KMS v2 plugin over a real Unix socket served in-process, with the gRPC health Check
//! (a call doing no work) as the transport floor; and the cost of metrics: the same Decrypt and
//! health Check against two plugins side by side, one reporting to a metrics registry
//! (`--metrics-listen`) and one not.
//!
//! Run: `cargo bench --bench kms`. Figures and how to read them: docs/benchmarks.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keyward::crypto::Algorithm;
use keyward::keyring::Keyring;
use keyward::kms::PluginServer;
use keyward::metrics::Metrics;
use keyward::pb::kms_v2::key_management_service_client::KeyManagementServiceClient;
use keyward::pb::kms_v2::{DecryptRequest, EncryptRequest, StatusRequest};
use keyward::uds;
use support::{Plugin, TempKeyring};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The size of a KMS v2 DEK seed, what the API server asks the plugin to wrap.
const SEED: [u8; 32] = [0x5a; 32];
/// In-flight calls in the concurrent variants.
const CONCURRENCY: usize = 64;
/// Interleaved rounds in `metrics_cost`.
const ROUNDS: usize = 41;

/// A fresh keyring of `algorithm` and the temp dir it lives in.
fn temp_keyring(rt: &Runtime, algorithm: Algorithm) -> (Keyring, TempKeyring) {
    let k = rt.block_on(TempKeyring::init(algorithm));
    (k.open(), k)
}

/// A runtime for the keyring benches: one thread, as the calls do no I/O (criterion runs each
/// batch of iterations in one `block_on`, so the runtime adds no cost per call).
fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn keyring_wrap(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("keyring_wrap");
    group.throughput(Throughput::Elements(1));
    for alg in Algorithm::ALL {
        let (keyring, _dir) = temp_keyring(&rt, alg);
        group.bench_function(BenchmarkId::from_parameter(alg.name()), |b| {
            b.to_async(&rt)
                .iter(|| async { keyring.encrypt(black_box(&SEED)).await.expect("encrypt") })
        });
    }
    group.finish();
}

fn keyring_unwrap(c: &mut Criterion) {
    let rt = current_thread();
    let mut group = c.benchmark_group("keyring_unwrap");
    group.throughput(Throughput::Elements(1));
    for alg in Algorithm::ALL {
        let (keyring, _dir) = temp_keyring(&rt, alg);
        let (ct, key_id) = rt.block_on(keyring.encrypt(&SEED)).expect("encrypt");
        group.bench_function(BenchmarkId::from_parameter(alg.name()), |b| {
            b.to_async(&rt).iter(|| async {
                keyring
                    .decrypt(black_box(&ct), Some(black_box(&key_id)))
                    .await
                    .expect("decrypt")
            })
        });
    }
    group.finish();
}

fn rpc_unix_socket(c: &mut Criterion) {
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The plugin served in-process as the CLI serves it, and one channel to it.
    let plugin = rt.block_on(Plugin::start(Algorithm::Aes256Gcm));
    let channel = rt
        .block_on(uds::unix_channel(&plugin.socket))
        .expect("connect");
    let v2 = KeyManagementServiceClient::new(channel.clone());
    let health = HealthClient::new(channel.clone());

    // One wrapped seed to decrypt, made through the plugin; and a check that every call works
    // before anything is timed.
    let (ciphertext, key_id) = rt.block_on(async {
        let r = health
            .clone()
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(r.status, 1, "health Check(\"\") must be SERVING");
        let s = v2.clone().status(StatusRequest {}).await.expect("status");
        assert_eq!(s.into_inner().healthz, "ok");
        let e = v2
            .clone()
            .encrypt(EncryptRequest {
                plaintext: SEED.to_vec(),
                uid: "bench".into(),
            })
            .await
            .expect("encrypt")
            .into_inner();
        let d = v2
            .clone()
            .decrypt(decrypt_request(&e.ciphertext, &e.key_id))
            .await
            .expect("decrypt")
            .into_inner();
        assert_eq!(d.plaintext, SEED);
        (e.ciphertext, e.key_id)
    });

    let mut group = c.benchmark_group("rpc_unix_socket");

    group.throughput(Throughput::Elements(1));
    group.bench_function("health_check", |b| {
        b.to_async(&rt).iter(|| {
            let mut h = health.clone();
            async move {
                h.check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .expect("health check")
            }
        })
    });
    group.bench_function("v2_status", |b| {
        b.to_async(&rt).iter(|| {
            let mut v = v2.clone();
            async move { v.status(StatusRequest {}).await.expect("status") }
        })
    });
    group.bench_function("v2_decrypt", |b| {
        b.to_async(&rt).iter(|| {
            let mut v = v2.clone();
            let req = decrypt_request(&ciphertext, &key_id);
            async move { v.decrypt(req).await.expect("decrypt") }
        })
    });
    group.bench_function("v2_encrypt", |b| {
        b.to_async(&rt).iter(|| {
            let mut v = v2.clone();
            let req = EncryptRequest {
                plaintext: SEED.to_vec(),
                uid: "bench".into(),
            };
            async move { v.encrypt(req).await.expect("encrypt") }
        })
    });

    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    group.bench_function(format!("health_check_x{CONCURRENCY}"), |b| {
        b.to_async(&rt).iter(|| {
            let mut set = JoinSet::new();
            for _ in 0..CONCURRENCY {
                let mut h = health.clone();
                set.spawn(async move {
                    h.check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .expect("health check");
                });
            }
            join_all(set)
        })
    });
    group.bench_function(format!("v2_decrypt_x{CONCURRENCY}"), |b| {
        b.to_async(&rt).iter(|| {
            let mut set = JoinSet::new();
            for _ in 0..CONCURRENCY {
                let mut v = v2.clone();
                let req = decrypt_request(&ciphertext, &key_id);
                set.spawn(async move {
                    v.decrypt(req).await.expect("decrypt");
                });
            }
            join_all(set)
        })
    });
    group.finish();

    drop((v2, health, channel));
    let socket = plugin.socket.clone();
    rt.block_on(plugin.stop());
    assert!(!socket.exists(), "socket removed on shutdown");
}

/// Decrypt and health Check, 64 in flight, against a plugin without metrics and one with them,
/// measured alternately in one run: the bound is ≥ 0.9× the throughput with metrics on.
fn metrics_cost(c: &mut Criterion) {
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let metrics = Metrics::new();
    let mut plugins = Vec::new();
    for (name, with) in [("metrics_off", None), ("metrics_on", Some(&metrics))] {
        // One keyring each: a data directory is served by one process (or server) at a time.
        let keyring = rt.block_on(TempKeyring::init(Algorithm::Aes256Gcm));
        let socket = keyring.dir.path().join(format!("{name}.sock"));
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        // The server must start inside the runtime; the spawned task is awaited at the end.
        #[allow(clippy::async_yields_async)]
        let task = rt.block_on(async {
            let mut server =
                PluginServer::start(keyring.open(), &socket, None, uds::SocketAccess::default())
                    .expect("start the plugin");
            if let Some(m) = with {
                server = server.with_metrics(m);
            }
            tokio::spawn(server.serve(async move {
                let _ = rx.await;
            }))
        });
        let channel = rt.block_on(uds::unix_channel(&socket)).expect("connect");
        let v2 = KeyManagementServiceClient::new(channel.clone());
        let health = HealthClient::new(channel);
        let e = rt
            .block_on(v2.clone().encrypt(EncryptRequest {
                plaintext: SEED.to_vec(),
                uid: "bench".into(),
            }))
            .expect("encrypt")
            .into_inner();
        plugins.push((name, v2, health, e, stop, task, keyring));
    }

    let mut group = c.benchmark_group("metrics_cost");
    group.throughput(Throughput::Elements(CONCURRENCY as u64));
    for (name, v2, health, e, ..) in &plugins {
        group.bench_function(format!("v2_decrypt_x{CONCURRENCY}/{name}"), |b| {
            b.to_async(&rt).iter(|| {
                let mut set = JoinSet::new();
                for _ in 0..CONCURRENCY {
                    let mut v = v2.clone();
                    let req = decrypt_request(&e.ciphertext, &e.key_id);
                    set.spawn(async move {
                        v.decrypt(req).await.expect("decrypt");
                    });
                }
                join_all(set)
            })
        });
        group.bench_function(format!("health_check_x{CONCURRENCY}/{name}"), |b| {
            b.to_async(&rt).iter(|| {
                let mut set = JoinSet::new();
                for _ in 0..CONCURRENCY {
                    let mut h = health.clone();
                    set.spawn(async move {
                        h.check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .expect("health check");
                    });
                }
                join_all(set)
            })
        });
    }
    group.finish();

    // Criterion measures one after the other, so load from other processes lands on one side.
    // Interleave instead: rounds of 64 × 16 Decrypts on each plugin, the order alternating, and
    // the median of the per-round throughput ratios.
    let mut ratios: Vec<f64> = (0..ROUNDS)
        .map(|round| {
            let mut secs = [0.0f64; 2];
            for i in [round % 2, 1 - round % 2] {
                let (_, v2, _, e, ..) = &plugins[i];
                secs[i] = rt.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..16 {
                        let mut set = JoinSet::new();
                        for _ in 0..CONCURRENCY {
                            let mut v = v2.clone();
                            let req = decrypt_request(&e.ciphertext, &e.key_id);
                            set.spawn(async move {
                                v.decrypt(req).await.expect("decrypt");
                            });
                        }
                        join_all(set).await;
                    }
                    start.elapsed().as_secs_f64()
                });
            }
            // Throughput on / throughput off = time off / time on.
            secs[0] / secs[1]
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "metrics_cost/interleaved: Decrypt throughput with metrics on / off, median of {ROUNDS} rounds: {:.3} (quartiles {:.3}–{:.3})",
        ratios[ROUNDS / 2],
        ratios[ROUNDS / 4],
        ratios[3 * ROUNDS / 4]
    );

    // The measured plugin really counted: its Decrypt series moved.
    let text = rt.block_on(metrics.render(false));
    assert!(
        text.lines().any(|l| l.starts_with(
            "keyward_kms_request_duration_seconds_count{method=\"/v2.KeyManagementService/Decrypt\",code=\"OK\"}"
        ) && !l.ends_with(" 0")),
        "the plugin with metrics counted no Decrypt"
    );
    for (_, v2, health, _, stop, task, _keyring) in plugins {
        drop((v2, health));
        let _ = stop.send(());
        rt.block_on(task).expect("join").expect("serve");
    }
}

fn decrypt_request(ciphertext: &[u8], key_id: &str) -> DecryptRequest {
    DecryptRequest {
        ciphertext: ciphertext.to_vec(),
        uid: "bench".into(),
        key_id: key_id.to_owned(),
        annotations: Default::default(),
    }
}

async fn join_all(mut set: JoinSet<()>) {
    while let Some(r) = set.join_next().await {
        r.expect("call task");
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = keyring_wrap, keyring_unwrap, rpc_unix_socket, metrics_cost
}
criterion_main!(benches);
