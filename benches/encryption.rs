//! Transform to and from storage of a 1 KiB value with every provider, as kube-apiserver would
//! do per write and per read. kms v1 and v2 talk to keyward's plugin in this process over a real
//! Unix socket: kms v2 reads hit the seed cache (no plugin call), kms v1 writes call the plugin
//! once per write (a new DEK each time).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyward::crypto::Algorithm;
use keyward::encryption::{config, Encryption, ParseOptions, Transformer};
use support::{config_text, keys_provider, kms_provider, Plugin};

const KEY: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";
const SK: &str = "/registry/secrets/default/bench";

fn providers(socket: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("identity", "      - identity: {}\n".into()),
        ("aescbc", keys_provider("aescbc", &[("k", KEY)])),
        ("aesgcm", keys_provider("aesgcm", &[("k", KEY)])),
        ("secretbox", keys_provider("secretbox", &[("k", KEY)])),
        ("kms-v1", kms_provider("v1", "k", socket)),
        ("kms-v2", kms_provider("v2", "k", socket)),
    ]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // keyward's plugin served in this process on a Unix socket, as the CLI serves it.
    let plugin = rt.block_on(Plugin::start(Algorithm::Aes256Gcm));

    let value = vec![0x5au8; 1024];
    let mut to = c.benchmark_group("to_storage_1KiB");
    to.throughput(Throughput::Bytes(1024));
    let mut chains: Vec<(&str, Arc<Transformer>, Encryption)> = Vec::new();
    for (name, yaml) in providers(&plugin.socket) {
        let cfg = config::parse(
            &config_text(&yaml),
            ParseOptions {
                kms_v1: true,
                reload: false,
            },
        )
        .expect("config");
        let enc = rt.block_on(Encryption::build(&cfg));
        let t = enc.for_resource("secrets");
        to.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { t.to_storage(SK, &value).await.expect("write") })
        });
        chains.push((name, t, enc));
    }
    to.finish();
    let mut from = c.benchmark_group("from_storage_1KiB");
    from.throughput(Throughput::Bytes(1024));
    for (name, t, _enc) in &chains {
        let stored = rt.block_on(t.to_storage(SK, &value)).expect("write");
        from.bench_function(*name, |b| {
            b.to_async(&rt)
                .iter(|| async { t.from_storage(SK, &stored).await.expect("read") })
        });
    }
    from.finish();
    drop(chains);
    rt.block_on(plugin.stop());
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
