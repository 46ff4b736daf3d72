//! The secret store end to end: durable puts (create or update) and gets of 1 KiB Secrets
//! through the keyward.v1 gRPC API over a real Unix socket, on a real sled directory, with the
//! identity provider and with KMS v2 through keyward's plugin, from 1 and 16 concurrent
//! clients. The ratio kms-v2 / identity is the cost of encryption; 16 / 1 shows group commit.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyward::backend::BackendSpec;
use keyward::crypto::Algorithm;
use keyward::pb::keyward_v1 as pb;
use keyward::pb::keyward_v1::secrets_client::SecretsClient;
use keyward::server::StoreOptions;
use keyward::uds;
use support::{encryption_config, kms_v2_provider, Plugin, StoreHarness};
use tonic::transport::Channel;

/// Operations per client per iteration.
const OPS: u64 = 8;

fn secret(name: String) -> pb::Secret {
    pb::Secret {
        metadata: Some(pb::ObjectMeta {
            name,
            namespace: "bench".into(),
            ..Default::default()
        }),
        data: [("v".to_owned(), vec![0x5a; 1024])].into_iter().collect(),
        ..Default::default()
    }
}

struct Setup {
    _plugin: Plugin,
    _store: StoreHarness,
    _dir: tempfile::TempDir,
    clients: Vec<SecretsClient<Channel>>,
}

async fn setup(provider: &str) -> Setup {
    // keyward's plugin and store served in this process on Unix sockets, as the CLI serves them.
    let plugin = Plugin::start(Algorithm::Aes256Gcm).await;
    let providers = match provider {
        "kms-v2" => kms_v2_provider(&plugin.socket),
        _ => "      - identity: {}\n".to_owned(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = encryption_config(dir.path(), &providers);
    let options = StoreOptions::new(
        BackendSpec::sled(dir.path().join("store")),
        config,
        dir.path().join("keyward.sock"),
    );
    let store = StoreHarness::start(options).await;
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(SecretsClient::new(
            uds::unix_channel(&store.socket).await.expect("connect"),
        ));
    }
    // Something to read.
    let mut c = clients[0].clone();
    for i in 0..64 {
        c.create(pb::CreateRequest {
            secret: Some(secret(format!("r{i}"))),
            dry_run: false,
        })
        .await
        .expect("seed");
    }
    Setup {
        _plugin: plugin,
        _store: store,
        _dir: dir,
        clients,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for provider in ["identity", "kms-v2"] {
        let s = rt.block_on(setup(provider));
        let counter = Arc::new(AtomicU64::new(0));
        for conc in [1usize, 16] {
            let mut g = c.benchmark_group(format!("store_put_1KiB/{provider}"));
            g.throughput(Throughput::Elements(OPS * conc as u64));
            g.bench_function(format!("{conc}_clients"), |b| {
                b.to_async(&rt).iter(|| {
                    let clients: Vec<_> = s.clients[..conc].to_vec();
                    let counter = counter.clone();
                    async move {
                        let mut set = tokio::task::JoinSet::new();
                        for mut cl in clients {
                            let counter = counter.clone();
                            set.spawn(async move {
                                for _ in 0..OPS {
                                    let n = counter.fetch_add(1, Ordering::Relaxed);
                                    cl.create(pb::CreateRequest {
                                        secret: Some(secret(format!("w{n}"))),
                                        dry_run: false,
                                    })
                                    .await
                                    .expect("create");
                                }
                            });
                        }
                        while set.join_next().await.is_some() {}
                    }
                })
            });
            g.finish();
            let mut g = c.benchmark_group(format!("store_get_1KiB/{provider}"));
            g.throughput(Throughput::Elements(OPS * conc as u64));
            g.bench_function(format!("{conc}_clients"), |b| {
                b.to_async(&rt).iter(|| {
                    let clients: Vec<_> = s.clients[..conc].to_vec();
                    async move {
                        let mut set = tokio::task::JoinSet::new();
                        for (j, mut cl) in clients.into_iter().enumerate() {
                            set.spawn(async move {
                                for i in 0..OPS as usize {
                                    cl.get(pb::GetRequest {
                                        namespace: "bench".into(),
                                        name: format!("r{}", (i + j) % 64),
                                        revision: 0,
                                    })
                                    .await
                                    .expect("get");
                                }
                            });
                        }
                        while set.join_next().await.is_some() {}
                    }
                })
            });
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
