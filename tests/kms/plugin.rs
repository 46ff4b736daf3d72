//! The KMS plugin's semantics over a real Unix socket with a real tonic client.

use std::collections::HashSet;

use crate::support::Plugin;
use keyward::crypto::Algorithm;
use keyward::pb::keyward_v1 as admin;
use keyward::pb::kms_v1beta1 as v1;
use keyward::pb::kms_v2 as v2;
use tonic::Code;

fn enc(plaintext: &[u8]) -> v2::EncryptRequest {
    v2::EncryptRequest {
        plaintext: plaintext.to_vec(),
        uid: "test-uid".into(),
    }
}

fn dec(ciphertext: &[u8], key_id: &str) -> v2::DecryptRequest {
    v2::DecryptRequest {
        ciphertext: ciphertext.to_vec(),
        uid: "test-uid".into(),
        key_id: key_id.into(),
        annotations: Default::default(),
    }
}

/// The apiserver's FQDN rule for annotation keys (facts §2.3).
fn is_fqdn(k: &str) -> bool {
    let k = k.strip_suffix('.').unwrap_or(k);
    k.len() <= 253
        && k.split('.').count() >= 2
        && k.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[tokio::test]
async fn status_encrypt_decrypt_meet_the_apiserver_checks() {
    for alg in Algorithm::ALL {
        let p = Plugin::start(alg).await;
        let mut c = p.v2().await;
        let s = c.status(v2::StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(s.version, "v2");
        assert_eq!(s.healthz, "ok");
        assert!(!s.key_id.is_empty() && s.key_id.len() <= 1024);

        let seed = [0x5au8; 32];
        let r = c.encrypt(enc(&seed)).await.unwrap().into_inner();
        assert!(
            !r.ciphertext.is_empty() && r.ciphertext.len() <= 1024,
            "{alg}"
        );
        assert_eq!(r.key_id, s.key_id);
        let total: usize = r.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(total <= 32 * 1024);
        assert!(r.annotations.keys().all(|k| is_fqdn(k)));
        assert!(
            !r.ciphertext.windows(32).any(|w| w == seed),
            "seed in the clear"
        );

        let back = c.decrypt(dec(&r.ciphertext, &r.key_id)).await.unwrap();
        assert_eq!(back.into_inner().plaintext, seed);

        // Same plaintext twice gives distinct ciphertexts (random nonces).
        let r2 = c.encrypt(enc(&seed)).await.unwrap().into_inner();
        assert_ne!(r.ciphertext, r2.ciphertext);
        p.stop().await;
    }
}

#[tokio::test]
async fn plaintext_size_limits() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let mut c = p.v2().await;
    for ok in [1usize, 32, 64 * 1024] {
        let pt = vec![3u8; ok];
        let r = c.encrypt(enc(&pt)).await.unwrap().into_inner();
        let back = c.decrypt(dec(&r.ciphertext, &r.key_id)).await.unwrap();
        assert_eq!(back.into_inner().plaintext.len(), ok);
    }
    for bad in [0usize, 64 * 1024 + 1, 512 * 1024] {
        let e = c.encrypt(enc(&vec![3u8; bad])).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().starts_with("plaintext:"), "{}", e.message());
    }
    // Beyond the transport limit the request is refused before any handler, as grpc-go
    // (kube-apiserver's side of the wire) refuses it.
    let e = c.encrypt(enc(&vec![3u8; 2 << 20])).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message()
            .starts_with("grpc: received message larger than max ("),
        "{}",
        e.message()
    );
    // And the plugin keeps serving.
    c.status(v2::StatusRequest {}).await.unwrap();
    p.stop().await;
}

#[tokio::test]
async fn decrypt_failures_are_one_opaque_status() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let mut c = p.v2().await;
    let r = c.encrypt(enc(&[1u8; 32])).await.unwrap().into_inner();
    let ct = r.ciphertext.clone();
    let mut seen = HashSet::new();
    let mut record = |e: tonic::Status| {
        seen.insert((e.code(), e.message().to_owned()));
    };
    for i in 0..ct.len() {
        let mut t = ct.clone();
        t[i] ^= 0x40;
        record(c.decrypt(dec(&t, &r.key_id)).await.unwrap_err());
    }
    for n in [0, 1, 17, 18, 30, ct.len() - 1] {
        record(c.decrypt(dec(&ct[..n], &r.key_id)).await.unwrap_err());
    }
    let mut long = ct.clone();
    long.extend_from_slice(&[0u8; 5]);
    record(c.decrypt(dec(&long, &r.key_id)).await.unwrap_err());
    record(
        c.decrypt(dec(&vec![1u8; 100 * 1024], &r.key_id))
            .await
            .unwrap_err(),
    );
    for kid in [
        "",
        "kw-1-00000000000000000000000000000000",
        "other",
        &"x".repeat(2000),
    ] {
        record(c.decrypt(dec(&ct, kid)).await.unwrap_err());
    }
    assert_eq!(
        seen,
        HashSet::from([(Code::InvalidArgument, "decryption failed".to_owned())]),
        "every failure must look the same"
    );
    // The genuine request still works.
    c.decrypt(dec(&ct, &r.key_id)).await.unwrap();
    p.stop().await;
}

#[tokio::test]
async fn rotation_retire_destroy_through_the_admin_socket() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let mut c = p.v2().await;
    let mut a = p.admin().await;
    let first = c.encrypt(enc(b"old-seed")).await.unwrap().into_inner();

    let rot = a
        .rotate(admin::RotateRequest {})
        .await
        .unwrap()
        .into_inner();
    let primary = rot.primary.unwrap();
    assert_eq!(rot.previous_key_id, first.key_id);
    assert_ne!(primary.key_id, first.key_id);
    let s = c.status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(
        s.key_id, primary.key_id,
        "Status reports the new key at once"
    );
    let second = c.encrypt(enc(b"new-seed")).await.unwrap().into_inner();
    assert_eq!(second.key_id, primary.key_id);
    // Old ciphertexts still decrypt under their own key_id, not under the new one.
    let back = c
        .decrypt(dec(&first.ciphertext, &first.key_id))
        .await
        .unwrap();
    assert_eq!(back.into_inner().plaintext, b"old-seed");
    assert_eq!(
        c.decrypt(dec(&first.ciphertext, &second.key_id))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    let keys = a
        .list_keys(admin::ListKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].state, admin::KeyState::DecryptOnly as i32);
    assert_eq!(keys[1].state, admin::KeyState::Primary as i32);
    assert!(keys[0].encryptions >= 1);

    let e = a
        .retire(admin::RetireRequest {
            key_id: primary.key_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = a
        .retire(admin::RetireRequest {
            key_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "key_id: required")
    );
    let e = a
        .retire(admin::RetireRequest {
            key_id: "kw-7-ab".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let r = a
        .retire(admin::RetireRequest {
            key_id: first.key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.key.unwrap().state, admin::KeyState::Disabled as i32);
    assert_eq!(
        c.decrypt(dec(&first.ciphertext, &first.key_id))
            .await
            .unwrap_err()
            .message(),
        "decryption failed"
    );
    let e = a
        .destroy(admin::DestroyRequest {
            key_id: first.key_id.clone(),
            confirm: "yes".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("confirm:"), "{}", e.message());
    let d = a
        .destroy(admin::DestroyRequest {
            key_id: first.key_id.clone(),
            confirm: first.key_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.key.unwrap().state, admin::KeyState::Destroyed as i32);
    let st = a
        .status(admin::AdminStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.healthz, "ok");
    assert_eq!(st.primary_key_id, primary.key_id);
    assert_eq!(st.key_count, 2);
    p.stop().await;
}

#[tokio::test]
async fn v1_api_uses_the_same_keyring() {
    let p = Plugin::start(Algorithm::XChaCha20Poly1305).await;
    let mut c = p.v1().await;
    let v = c
        .version(v1::VersionRequest {
            version: "v1beta1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.version, "v1beta1");
    assert_eq!(v.runtime_name, "keyward");
    let parts: Vec<_> = v.runtime_version.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p.parse::<u64>().is_ok()));
    let e = c
        .version(v1::VersionRequest {
            version: "v2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let dek = [9u8; 32];
    let r = c
        .encrypt(v1::EncryptRequest {
            version: "v1beta1".into(),
            plain: dek.to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    let back = c
        .decrypt(v1::DecryptRequest {
            version: "v1beta1".into(),
            cipher: r.cipher.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.plain, dek);
    // A v1 ciphertext is a keyring ciphertext: v2 decrypts it under the primary's key_id.
    let kid = p.keyring.health().primary_key_id.to_string();
    let mut c2 = p.v2().await;
    assert_eq!(
        c2.decrypt(dec(&r.cipher, &kid))
            .await
            .unwrap()
            .into_inner()
            .plaintext,
        dek
    );
    p.stop().await;
}

#[tokio::test]
async fn grpc_health_service_reports_serving() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let mut h = HealthClient::new(keyward::uds::unix_channel(&p.socket).await.unwrap());
    for service in ["", "v2.KeyManagementService"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "SERVING for {service:?}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_during_rotations_stay_consistent() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let mut tasks = Vec::new();
    for t in 0..16u8 {
        let mut c = p.v2().await;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..50u8 {
                let seed = [
                    t, i, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                    21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
                ];
                let r = c.encrypt(enc(&seed)).await.unwrap().into_inner();
                out.push((seed, r.ciphertext, r.key_id));
            }
            out
        }));
    }
    let mut a = p.admin().await;
    let mut issued = HashSet::from([p.keyring.health().primary_key_id.to_string()]);
    for _ in 0..5 {
        let r = a
            .rotate(admin::RotateRequest {})
            .await
            .unwrap()
            .into_inner();
        issued.insert(r.primary.unwrap().key_id);
    }
    let mut c = p.v2().await;
    for t in tasks {
        for (seed, ct, kid) in t.await.unwrap() {
            assert!(issued.contains(&kid), "{kid} was never issued");
            let back = c.decrypt(dec(&ct, &kid)).await.unwrap().into_inner();
            assert_eq!(back.plaintext, seed);
        }
    }
    p.stop().await;
}
