//! Encryption at rest against keyward's real KMS plugin over its socket, stale detection for every
//! way data can be stale, and the independent Python cross-check in both directions.

use std::sync::Arc;

use crate::support::tools::python;
use crate::support::{config_text, keys_provider, kms_provider, Plugin};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use keyward::crypto::Algorithm;
use keyward::encryption::{config, Encryption, EncryptionError, ParseOptions};

const K1: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="; // 32 bytes of '1'
const K2: &str = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI="; // 32 bytes of '2'
const SK: &str = "/registry/secrets/default/db";

fn cfg(providers: &str) -> config::EncryptionConfiguration {
    config::parse(
        &config_text(providers),
        ParseOptions {
            kms_v1: true,
            reload: false,
        },
    )
    .unwrap()
}

fn kms2(name: &str, p: &Plugin) -> String {
    kms_provider("v2", name, &p.socket)
}

fn kms1(name: &str, p: &Plugin) -> String {
    kms_provider("v1", name, &p.socket)
}

/// Encryptions the plugin has served (the keyring counts every Encrypt).
fn plugin_encryptions(p: &Plugin) -> u64 {
    p.keyring.keys().iter().map(|k| k.encryptions).sum()
}

#[tokio::test]
async fn kms_v2_round_trip_one_seed_for_many_writes() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let enc = Encryption::build(&cfg(&kms2("kw", &p))).await;
    let status = enc.kms_v2_status();
    assert!(status[0].healthy, "{status:?}");
    let t = enc.for_resource("secrets");
    let before = plugin_encryptions(&p);
    let mut stored = Vec::new();
    for i in 0..200u32 {
        let v = t
            .to_storage(SK, format!("value-{i}").as_bytes())
            .await
            .unwrap();
        assert!(v.starts_with(b"k8s:enc:kms:v2:kw:"));
        assert!(
            !v.windows(7).any(|w| w == b"value-1"),
            "plaintext in the clear"
        );
        stored.push(v);
    }
    assert_eq!(plugin_encryptions(&p), before, "no KMS call per write");
    for (i, v) in stored.iter().enumerate() {
        let (pt, info) = t.from_storage(SK, v).await.unwrap();
        assert_eq!(pt.as_slice(), format!("value-{i}").as_bytes());
        assert_eq!(info.provider, "kms-v2");
        assert!(!info.stale);
        assert!(info.key.starts_with("kw/kw-1-"), "{}", info.key);
    }
    // The AAD binds the storage key: a value moved elsewhere does not decrypt.
    let moved = t
        .from_storage("/registry/secrets/default/other", &stored[0])
        .await;
    assert!(
        matches!(moved, Err(EncryptionError::Decrypt { .. })),
        "{moved:?}"
    );
    // Every tampered byte after the prefix fails.
    let prefix = b"k8s:enc:kms:v2:kw:".len();
    for i in prefix..stored[0].len() {
        let mut bad = stored[0].clone();
        bad[i] ^= 0x04;
        assert!(t.from_storage(SK, &bad).await.is_err(), "byte {i}");
    }
    // Unconfigured resources are stored as they are.
    let plain = enc
        .for_resource("configmaps")
        .to_storage("/registry/configmaps/a/b", b"x")
        .await
        .unwrap();
    assert_eq!(plain, b"x");
    p.stop().await;
}

#[tokio::test]
async fn kms_v2_key_id_change_makes_data_stale_and_uses_a_new_seed() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let enc = Encryption::build(&cfg(&kms2("kw", &p))).await;
    let t = enc.for_resource("secrets");
    let old = t.to_storage(SK, b"before").await.unwrap();
    let first = enc.kms_v2_status()[0].key_id.clone().unwrap();
    p.keyring.rotate().await.unwrap();
    // Until the next poll, writes keep the old key (like the apiserver's 1-minute poll).
    let (_, info) = t.from_storage(SK, &old).await.unwrap();
    assert!(!info.stale);
    let before = plugin_encryptions(&p);
    assert!(enc.check_kms_now().await);
    assert_eq!(
        plugin_encryptions(&p),
        before + 1,
        "exactly one Encrypt for the new seed"
    );
    let second = enc.kms_v2_status()[0].key_id.clone().unwrap();
    assert_ne!(first, second);
    let (pt, info) = t.from_storage(SK, &old).await.unwrap();
    assert_eq!(pt.as_slice(), b"before");
    assert!(info.stale, "data under the old key_id is stale");
    let new = t.to_storage(SK, b"after").await.unwrap();
    let (_, info) = t.from_storage(SK, &new).await.unwrap();
    assert!(!info.stale);
    assert!(info.key.ends_with(&second));
    // An unchanged key_id makes no Encrypt call.
    assert!(enc.check_kms_now().await);
    assert_eq!(plugin_encryptions(&p), before + 1);
    p.stop().await;
}

#[tokio::test]
async fn kms_v2_survives_a_plugin_restart() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let dir = p.dir.path().to_owned();
    let enc = Encryption::build(&cfg(&kms2("kw", &p))).await;
    let t = enc.for_resource("secrets");
    let v = t.to_storage(SK, b"persisted").await.unwrap();
    // A second store instance that never saw this seed must ask the plugin.
    let other = Encryption::build(&cfg(&kms2("kw", &p))).await;
    let socket = p.socket.clone();
    let keyring_dir = dir.join("data");
    let key = dir.join("root.key");
    let _keep_dir = p.dir;
    // Stop the plugin: cached seeds keep working for reads and (within 3 minutes) writes.
    {
        let mut stop = p.stop;
        let _ = stop.take().map(|s| s.send(()));
        p.task.unwrap().await.unwrap().unwrap();
    }
    drop(p.keyring);
    assert!(!enc.check_kms_now().await);
    assert!(!enc.kms_v2_status()[0].healthy);
    let (pt, _) = t.from_storage(SK, &v).await.unwrap();
    assert_eq!(pt.as_slice(), b"persisted");
    t.to_storage(SK, b"still writable").await.unwrap();
    let fresh = Encryption::build(&cfg(&format!(
        "      - kms: {{apiVersion: v2, name: kw, endpoint: 'unix://{}'}}\n",
        socket.display()
    )))
    .await;
    let e = fresh
        .for_resource("secrets")
        .from_storage(SK, &v)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&socket.display().to_string()),
        "error names the plugin: {e}"
    );
    // Restart the plugin on the same socket and keyring.
    let p2 = Plugin::restart(&keyring_dir, &key, &socket).await;
    assert!(enc.check_kms_now().await);
    let (pt, _) = other
        .for_resource("secrets")
        .from_storage(SK, &v)
        .await
        .unwrap();
    assert_eq!(pt.as_slice(), b"persisted");
    p2.stop().await;
}

/// A plugin that closes a connection gracefully (GOAWAY, `NO_ERROR`) before taking the calls
/// sent on it, as one does while it restarts: the store's KMS client makes those calls again on
/// a new connection, as kube-apiserver's grpc-go client does, so no write or read fails. Here
/// the first two connections to the plugin's socket are closed that way, at once, by a raw
/// HTTP/2 server; later ones are passed through to the real plugin.
#[tokio::test]
async fn kms_calls_refused_by_a_closing_plugin_are_made_again() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let front = p.dir.path().join("front.sock");
    let listener = tokio::net::UnixListener::bind(&front).unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let (plugin, counter) = (p.socket.clone(), closed.clone());
    let front_task = tokio::spawn(async move {
        loop {
            let (mut io, _) = listener.accept().await.unwrap();
            if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(io).await.unwrap();
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    while let Some(Ok(_)) = conn.accept().await {}
                });
            } else {
                let plugin = plugin.clone();
                tokio::spawn(async move {
                    let mut up = tokio::net::UnixStream::connect(&plugin).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut io, &mut up).await;
                });
            }
        }
    });
    let enc = Encryption::build(&cfg(&kms_provider("v1", "legacy", &front))).await;
    let t = enc.for_resource("secrets");
    let stored = t.to_storage(SK, b"after a refusal").await.unwrap();
    let (pt, _) = t.from_storage(SK, &stored).await.unwrap();
    assert_eq!(pt.as_slice(), b"after a refusal");
    assert!(
        closed.load(Ordering::SeqCst) >= 3,
        "the refused connections were used, then a new one"
    );
    front_task.abort();
    p.stop().await;
}

/// Writes through kms v1 (one plugin `Encrypt` per write) from eight tasks while the plugin
/// is stopped gracefully and started again on the same socket, five times. A write may fail
/// while no plugin listens (`Unavailable`, as in kube-apiserver), but never because the plugin
/// refused a call while it closed the connection: those calls are made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_v1_writes_across_graceful_plugin_restarts_fail_only_while_it_is_down() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let mut plugin = Plugin::start(Algorithm::Aes256Gcm).await;
    // The keyring's directory outlives each plugin served from it (`stop` removes `dir`).
    let keep = std::mem::replace(&mut plugin.dir, tempfile::tempdir().unwrap());
    let (socket, keyring_dir, key) = (
        plugin.socket.clone(),
        keep.path().join("data"),
        keep.path().join("root.key"),
    );
    let enc = Arc::new(Encryption::build(&cfg(&kms1("legacy", &plugin))).await);
    let done = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    // Until `n` writes have succeeded in all; fails the test after 60 s.
    async fn wait_for(written: &AtomicUsize, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while written.load(Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "writes stopped succeeding"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let (enc, done, written) = (enc.clone(), done.clone(), written.clone());
            tokio::spawn(async move {
                let mut unexpected = Vec::new();
                let t = enc.for_resource("secrets");
                while !done.load(Ordering::SeqCst) {
                    match t.to_storage(SK, b"value").await {
                        Ok(_) => {
                            written.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) if e.to_string().contains("Encrypt failed: Unavailable") => {
                            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        }
                        Err(e) => unexpected.push(e.to_string()),
                    }
                }
                unexpected
            })
        })
        .collect();
    for _ in 0..5 {
        wait_for(&written, written.load(Ordering::SeqCst) + 200).await;
        plugin.stop().await;
        plugin = Plugin::restart(&keyring_dir, &key, &socket).await;
    }
    wait_for(&written, written.load(Ordering::SeqCst) + 200).await;
    done.store(true, Ordering::SeqCst);
    for w in writers {
        let unexpected = w.await.unwrap();
        assert!(unexpected.is_empty(), "{unexpected:?}");
    }
    plugin.stop().await;
}

#[tokio::test]
async fn kms_v1_round_trip_and_cache() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let enc = Encryption::build(&cfg(&kms1("legacy", &p))).await;
    let t = enc.for_resource("secrets");
    let before = plugin_encryptions(&p);
    let a = t.to_storage(SK, b"one").await.unwrap();
    let b = t.to_storage(SK, b"two").await.unwrap();
    assert_eq!(
        plugin_encryptions(&p),
        before + 2,
        "KMS v1 wraps a new DEK per write"
    );
    assert!(a.starts_with(b"k8s:enc:kms:v1:legacy:"));
    let n = u16::from_be_bytes([a[22], a[23]]) as usize;
    assert!(
        n > 0 && a.len() > 24 + n + 12 + 16,
        "u16 length + wrapped DEK + GCM"
    );
    for (v, want) in [(&a, b"one"), (&b, b"two")] {
        let (pt, info) = t.from_storage(SK, v).await.unwrap();
        assert_eq!(pt.as_slice(), want);
        assert_eq!((info.provider, info.stale), ("kms-v1", false));
    }
    assert!(
        t.from_storage("/registry/secrets/x/y", &a).await.is_err(),
        "AAD binds the key"
    );
    p.stop().await;
}

#[tokio::test]
async fn stale_detection_every_way() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    // Written with aesgcm key k1.
    let old_cfg = Encryption::build(&cfg(&keys_provider("aesgcm", &[("k1", K1)]))).await;
    let by_k1 = old_cfg
        .for_resource("secrets")
        .to_storage(SK, b"v")
        .await
        .unwrap();
    // Read through a second key of the first provider (key rotation step 4).
    let rotated =
        Encryption::build(&cfg(&keys_provider("aesgcm", &[("k2", K2), ("k1", K1)]))).await;
    let (_, info) = rotated
        .for_resource("secrets")
        .from_storage(SK, &by_k1)
        .await
        .unwrap();
    assert_eq!(
        (info.provider, info.key.as_str(), info.stale),
        ("aesgcm", "k1", true)
    );
    // Read through a non-first provider.
    let moved_on = Encryption::build(&cfg(&format!(
        "{}{}",
        kms2("kw", &p),
        keys_provider("aesgcm", &[("k1", K1)])
    )))
    .await;
    let (_, info) = moved_on
        .for_resource("secrets")
        .from_storage(SK, &by_k1)
        .await
        .unwrap();
    assert!(info.stale);
    // Plaintext data read with encryption configured first (identity last).
    let with_identity = Encryption::build(&cfg(&format!(
        "{}      - identity: {{}}\n",
        keys_provider("secretbox", &[("s", K1)])
    )))
    .await;
    let (pt, info) = with_identity
        .for_resource("secrets")
        .from_storage(SK, b"plain")
        .await
        .unwrap();
    assert_eq!(
        (pt.as_slice(), info.provider, info.stale),
        (&b"plain"[..], "identity", true)
    );
    // Identity first: encrypted data is refused by identity and read by the next provider.
    let decrypting = Encryption::build(&cfg(&format!(
        "      - identity: {{}}\n{}",
        keys_provider("aesgcm", &[("k1", K1)])
    )))
    .await;
    let t = decrypting.for_resource("secrets");
    let (pt, info) = t.from_storage(SK, &by_k1).await.unwrap();
    assert_eq!((pt.as_slice(), info.stale), (&b"v"[..], true));
    assert_eq!(t.to_storage(SK, b"v").await.unwrap(), b"v");
    // A value written by a provider that is no longer configured.
    let gone = Encryption::build(&cfg(&keys_provider("aescbc", &[("c", K1)]))).await;
    let e = gone
        .for_resource("secrets")
        .from_storage(SK, &by_k1)
        .await
        .unwrap_err();
    assert!(matches!(e, EncryptionError::NoMatchingPrefix), "{e}");
    // Identity alone cannot read encrypted data; as kube-apiserver, its refusal is skipped,
    // and no other provider claims the value.
    let ident = Encryption::build(&cfg("      - identity: {}\n")).await;
    let e = ident
        .for_resource("secrets")
        .from_storage(SK, &by_k1)
        .await
        .unwrap_err();
    assert!(matches!(e, EncryptionError::NoMatchingPrefix), "{e}");
    // A wrong key under the right name fails to decrypt (no silent garbage).
    let wrong = Encryption::build(&cfg(&keys_provider("aesgcm", &[("k1", K2)]))).await;
    let e = wrong
        .for_resource("secrets")
        .from_storage(SK, &by_k1)
        .await
        .unwrap_err();
    assert!(matches!(e, EncryptionError::Decrypt { .. }), "{e}");
    assert!(!e.to_string().contains(K2));
    p.stop().await;
}

#[tokio::test]
async fn wildcard_rules_and_lookup_order() {
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{}  - resources: ['*.apps']\n    providers:\n{}  - resources: ['*.*']\n    providers:\n{}",
        keys_provider("aesgcm", &[("s", K1)]),
        keys_provider("aescbc", &[("a", K1)]),
        keys_provider("secretbox", &[("x", K1)]),
    );
    let enc = Encryption::build(&config::parse(&text, ParseOptions::default()).unwrap()).await;
    for (res, want) in [
        ("secrets", "aesgcm"),
        ("deployments.apps", "aescbc"),
        ("configmaps", "secretbox"),
        ("widgets.example.com", "secretbox"),
    ] {
        assert_eq!(enc.for_resource(res).write_provider().0, want, "{res}");
    }
}

/// The independent check: Python (`cryptography`, PyNaCl, grpcio) decrypts what every provider
/// wrote, reading kms seeds and DEKs through the plugin, and encrypts values keyward must read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cross_check_both_directions() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let k16 = B64.encode([7u8; 16]);
    let k24 = B64.encode([8u8; 24]);
    let providers: Vec<(&str, String, serde_json::Value)> = vec![
        (
            "identity",
            "      - identity: {}\n".into(),
            serde_json::json!({}),
        ),
        (
            "aescbc",
            keys_provider("aescbc", &[("cbc", &k24)]),
            serde_json::json!({"key_name": "cbc", "key": k24}),
        ),
        (
            "aesgcm",
            keys_provider("aesgcm", &[("gcm", &k16)]),
            serde_json::json!({"key_name": "gcm", "key": k16}),
        ),
        (
            "secretbox",
            keys_provider("secretbox", &[("box", K1)]),
            serde_json::json!({"key_name": "box", "key": K1}),
        ),
        (
            "kms-v1",
            kms1("kv1", &p),
            serde_json::json!({"kms_name": "kv1", "socket": p.socket}),
        ),
        (
            "kms-v2",
            kms2("kv2", &p),
            serde_json::json!({"kms_name": "kv2", "socket": p.socket}),
        ),
    ];
    let mut cases = Vec::new();
    let mut by_provider = std::collections::HashMap::new();
    for (name, yaml, extra) in &providers {
        let enc = Arc::new(Encryption::build(&cfg(yaml)).await);
        for (i, len) in [1usize, 100, 4096].into_iter().enumerate() {
            let pt: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
            let sk = format!("/registry/secrets/ns{i}/{name}");
            let stored = enc
                .for_resource("secrets")
                .to_storage(&sk, &pt)
                .await
                .unwrap();
            let mut case = serde_json::json!({
                "provider": name, "storage_key": sk, "plaintext": B64.encode(&pt), "stored": B64.encode(&stored),
            });
            for (k, v) in extra.as_object().unwrap() {
                case[k] = v.clone();
            }
            cases.push(case);
        }
        by_provider.insert(name.to_string(), enc);
    }
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("written.json");
    let out = dir.path().join("out.json");
    std::fs::write(&written, serde_json::json!({ "cases": cases }).to_string()).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/encryption_check.py"
    );
    let args = [
        script,
        "--written",
        written.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]
    .map(str::to_owned);
    let stdout = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python(&["grpc", "cryptography", "nacl"], &args, b"")
    })
    .await
    .unwrap();
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    println!("{stdout}");
    // Now keyward reads what Python wrote.
    let back: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let back = back["cases"].as_array().unwrap();
    assert_eq!(back.len(), cases.len(), "python encrypted every case");
    for c in back {
        let provider = c["provider"].as_str().unwrap();
        let sk = c["storage_key"].as_str().unwrap();
        let stored = B64.decode(c["stored"].as_str().unwrap()).unwrap();
        let want = B64.decode(c["plaintext"].as_str().unwrap()).unwrap();
        let enc = &by_provider[provider];
        let (pt, info) = enc
            .for_resource("secrets")
            .from_storage(sk, &stored)
            .await
            .unwrap_or_else(|e| panic!("{provider}: {e}"));
        assert_eq!(pt.as_slice(), want.as_slice(), "{provider}");
        assert_eq!(info.provider, provider);
        assert!(!info.stale, "{provider}");
    }
    p.stop().await;
}

/// A KMS v2 plugin that breaks one rule of the contract at a time, to check that keyward's
/// client applies the apiserver's validation of Status and Encrypt responses.
mod misbehaving {
    use keyward::pb::kms_v2 as v2;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tonic::{Request, Response, Status};

    #[derive(Clone, Copy, Debug)]
    pub enum Fault {
        None,
        Healthz,
        Version,
        EmptyKeyId,
        LongKeyId,
        LongCiphertext,
        EmptyCiphertext,
        BadAnnotation,
        BigAnnotations,
        KeyIdMismatch,
        VersionChange,
    }

    pub struct Bad {
        pub fault: Fault,
        pub calls: Arc<AtomicUsize>,
    }

    #[tonic::async_trait]
    impl v2::key_management_service_server::KeyManagementService for Bad {
        async fn status(
            &self,
            _: Request<v2::StatusRequest>,
        ) -> Result<Response<v2::StatusResponse>, Status> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let mut r = v2::StatusResponse {
                version: "v2".into(),
                healthz: "ok".into(),
                key_id: "k1".into(),
            };
            match self.fault {
                Fault::Healthz => r.healthz = "degraded".into(),
                Fault::Version => r.version = "v3".into(),
                Fault::EmptyKeyId => r.key_id = String::new(),
                Fault::LongKeyId => r.key_id = "k".repeat(1025),
                Fault::VersionChange if n > 0 => r.version = "v2beta1".into(),
                _ => {}
            }
            Ok(Response::new(r))
        }

        async fn encrypt(
            &self,
            req: Request<v2::EncryptRequest>,
        ) -> Result<Response<v2::EncryptResponse>, Status> {
            let mut r = v2::EncryptResponse {
                ciphertext: req.into_inner().plaintext,
                key_id: "k1".into(),
                annotations: BTreeMap::new(),
            };
            match self.fault {
                Fault::LongCiphertext => r.ciphertext = vec![1; 1025],
                Fault::EmptyCiphertext => r.ciphertext.clear(),
                Fault::BadAnnotation => {
                    r.annotations
                        .insert("kms.example.io/auditid".into(), b"1".to_vec());
                }
                Fault::BigAnnotations => {
                    r.annotations
                        .insert("a.example.com".into(), vec![0; 32 * 1024]);
                }
                Fault::KeyIdMismatch => r.key_id = "k2".into(),
                _ => {}
            }
            Ok(Response::new(r))
        }

        async fn decrypt(
            &self,
            req: Request<v2::DecryptRequest>,
        ) -> Result<Response<v2::DecryptResponse>, Status> {
            Ok(Response::new(v2::DecryptResponse {
                plaintext: req.into_inner().ciphertext,
            }))
        }
    }
}

#[tokio::test]
async fn plugin_responses_are_validated_like_the_apiserver_does() {
    use misbehaving::{Bad, Fault};
    use std::sync::atomic::AtomicUsize;
    for (fault, want) in [
        (Fault::None, ""),
        (Fault::Healthz, "got unexpected healthz status: degraded"),
        (Fault::Version, "got unexpected version \"v3\""),
        (Fault::EmptyKeyId, "key_id is empty"),
        (Fault::LongKeyId, "key_id is 1025 bytes"),
        (Fault::LongCiphertext, "encrypted DEK source is 1025 bytes"),
        (Fault::EmptyCiphertext, "encrypted DEK source is empty"),
        (Fault::BadAnnotation, "not a fully qualified domain name"),
        (Fault::BigAnnotations, "more than 32768"),
        (Fault::KeyIdMismatch, "Encrypt returned key_id sha256:"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("bad.sock");
        let (l, _g) = keyward::uds::bind(&sock, Default::default()).unwrap();
        let svc =
            keyward::pb::kms_v2::key_management_service_server::KeyManagementServiceServer::new(
                Bad {
                    fault,
                    calls: Arc::new(AtomicUsize::new(0)),
                },
            );
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(l)),
        );
        let yaml = format!(
            "      - kms: {{apiVersion: v2, name: bad, endpoint: 'unix://{}'}}\n",
            sock.display()
        );
        let enc = Encryption::build(&cfg(&yaml)).await;
        let st = &enc.kms_v2_status()[0];
        if want.is_empty() {
            assert!(st.healthy, "{st:?}");
            enc.for_resource("secrets")
                .to_storage(SK, b"x")
                .await
                .unwrap();
        } else {
            assert!(!st.healthy, "{fault:?} accepted");
            let err = st.error.clone().unwrap();
            assert!(err.contains(want), "{fault:?}: {err}");
            // With no valid seed, nothing is written.
            let e = enc
                .for_resource("secrets")
                .to_storage(SK, b"x")
                .await
                .unwrap_err();
            assert!(e.to_string().contains("has not yet answered"), "{e}");
        }
        server.abort();
    }
    // The version may not change after the first Status.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("bad.sock");
    let (l, _g) = keyward::uds::bind(&sock, Default::default()).unwrap();
    let svc =
        keyward::pb::kms_v2::key_management_service_server::KeyManagementServiceServer::new(Bad {
            fault: Fault::VersionChange,
            calls: Arc::new(AtomicUsize::new(0)),
        });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(l)),
    );
    let yaml = format!(
        "      - kms: {{apiVersion: v2, name: bad, endpoint: 'unix://{}'}}\n",
        sock.display()
    );
    let enc = Encryption::build(&cfg(&yaml)).await;
    assert!(enc.kms_v2_status()[0].healthy);
    assert!(!enc.check_kms_now().await);
    let err = enc.kms_v2_status()[0].error.clone().unwrap();
    assert!(err.contains("should not change"), "{err}");
    server.abort();
}

/// KMS outage, as kube-apiserver behaves: with the plugin down, cached seeds keep reads working;
/// writes continue for 3 minutes after the last good check, then fail naming the endpoint; when
/// the plugin is back, a check restores writes. Time is paused tokio time, not sleeps.
#[tokio::test]
async fn kms_outage_reads_continue_writes_expire_after_three_minutes() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let socket = p.socket.clone();
    let data = p.dir.path().join("data");
    let key = p.dir.path().join("root.key");
    let enc = Encryption::build(&cfg(&kms2("kw", &p))).await;
    let t = enc.for_resource("secrets");
    let stored = t.to_storage(SK, b"before the outage").await.unwrap();
    let _keep = p.dir;
    {
        let _ = p.stop.map(|s| s.send(()));
        p.task.unwrap().await.unwrap().unwrap();
    }
    drop(p.keyring);
    tokio::time::pause();
    assert!(!enc.check_kms_now().await, "the plugin is down");
    tokio::time::advance(std::time::Duration::from_secs(170)).await;
    t.to_storage(SK, b"still within 3 minutes").await.unwrap();
    let (pt, _) = t.from_storage(SK, &stored).await.unwrap();
    assert_eq!(pt.as_slice(), b"before the outage");
    tokio::time::advance(std::time::Duration::from_secs(11)).await;
    let e = t.to_storage(SK, b"too late").await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&socket.display().to_string()),
        "names the endpoint: {msg}"
    );
    assert!(msg.contains("expired"), "{msg}");
    // Reads of cached data keep working indefinitely.
    tokio::time::advance(std::time::Duration::from_secs(3600)).await;
    let (pt, _) = t.from_storage(SK, &stored).await.unwrap();
    assert_eq!(pt.as_slice(), b"before the outage");
    // The plugin comes back: the background poll (every 10 s while unhealthy) restores writes
    // by itself within one interval.
    let p2 = Plugin::restart(&data, &key, &socket).await;
    // Paused time moves at most one poll interval; real time (for the poll's socket round
    // trips, slow on a loaded machine) is bounded separately.
    let mut waited = 0;
    let real_deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while t.to_storage(SK, b"after recovery").await.is_err() {
        if waited < 10 {
            tokio::time::advance(std::time::Duration::from_secs(1)).await;
            waited += 1;
        } else {
            assert!(
                std::time::Instant::now() < real_deadline,
                "recovered within one poll interval"
            );
        }
        tokio::task::spawn_blocking(|| std::thread::sleep(std::time::Duration::from_millis(20)))
            .await
            .unwrap();
    }
    assert!(enc.kms_v2_status()[0].healthy);
    tokio::time::resume();
    p2.stop().await;
}
