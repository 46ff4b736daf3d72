//! Transform to and from storage of a 1 KiB value with every provider, as kube-apiserver would
//! do per write and per read. kms v1 and v2 talk to keyward's plugin in this process over a real
//! Unix socket: kms v2 reads hit the seed cache (no plugin call), kms v1 writes call the plugin
//! once per write (a new DEK each time).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keyward::crypto::Algorithm;
use keyward::encryption::{config, Encryption, ParseOptions, Transformer};
use keyward::keyring::{InitOptions, Keyring, KeyringLocation, RotationPolicy};
use keyward::kms::PluginServer;
use keyward::seal::{self, SealSpec};
use keyward::uds;

const KEY: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";
const SK: &str = "/registry/secrets/default/bench";

fn providers(socket: &str) -> Vec<(&'static str, String)> {
    vec![
        ("identity", "      - identity: {}\n".into()),
        (
            "aescbc",
            format!("      - aescbc: {{keys: [{{name: k, secret: {KEY}}}]}}\n"),
        ),
        (
            "aesgcm",
            format!("      - aesgcm: {{keys: [{{name: k, secret: {KEY}}}]}}\n"),
        ),
        (
            "secretbox",
            format!("      - secretbox: {{keys: [{{name: k, secret: {KEY}}}]}}\n"),
        ),
        (
            "kms-v1",
            format!("      - kms: {{apiVersion: v1, name: k, endpoint: 'unix://{socket}'}}\n"),
        ),
        (
            "kms-v2",
            format!("      - kms: {{apiVersion: v2, name: k, endpoint: 'unix://{socket}'}}\n"),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("root.key");
    seal::generate_keyfile(&key).expect("key file");
    let spec = SealSpec::KeyFile(key);
    let data = KeyringLocation::Dir(dir.path().join("data"));
    let socket = dir.path().join("kms.sock");
    let plugin = rt.block_on(async {
        Keyring::init(
            &data,
            &spec,
            &InitOptions {
                algorithm: Algorithm::Aes256Gcm,
                kdf: None,
            },
        )
        .await
        .expect("init");
        let keyring = Keyring::open(&data, &spec, RotationPolicy::default())
            .await
            .expect("open");
        PluginServer::start(keyring, &socket, None, uds::SocketAccess::default()).expect("bind")
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(plugin.serve(async move {
        let _ = stop_rx.await;
    }));

    let value = vec![0x5au8; 1024];
    let mut to = c.benchmark_group("to_storage_1KiB");
    to.throughput(Throughput::Bytes(1024));
    let mut chains: Vec<(&str, Arc<Transformer>, Encryption)> = Vec::new();
    for (name, yaml) in providers(&socket.display().to_string()) {
        let text = format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{yaml}"
        );
        let cfg = config::parse(
            &text,
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
    let _ = stop_tx.send(());
    let _ = rt.block_on(server);
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
