//! Plugin replicas sharing one keyring in a real etcd: three `keyward kms serve --keyring etcd`
//! processes on their own sockets, driven over KMS v2 and the admin API.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::etcd::Etcd;
use crate::support::plugin::{
    self, admin_client, decrypt, encrypt, init_in_etcd, status, v2_client, Cluster,
};
use crate::support::{bin, run};
use keyward::pb::keyward_v1::RotateRequest;

/// Waits until replica `socket` reports `key_id` (the watch carries rotations within seconds).
async fn wait_for_key_id(socket: &Path, key_id: &str) -> Duration {
    let mut client = v2_client(socket).await;
    plugin::wait_for_key_id(
        &mut client,
        key_id,
        Instant::now(),
        Duration::from_millis(20),
    )
    .await
}

async fn primaries(admin_socket: &Path) -> Vec<String> {
    plugin::list_keys(admin_socket)
        .await
        .into_iter()
        .filter(|k| k.state == keyward::pb::keyward_v1::KeyState::Primary as i32)
        .map(|k| k.key_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_through_one_replica_encrypt_through_another_decrypt_through_a_third() {
    let c = Cluster::start(3, &[]);
    let (r1, r2, r3) = (&c.replicas[0], &c.replicas[1], &c.replicas[2]);
    let (first, _) = status(&r1.socket).await;
    let (ok, out, err) = run(&[
        "kms",
        "status",
        "--admin-socket",
        r1.admin.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let stored = format!(
        "stored in:       etcd:{} key /keyward/kms/keyring",
        c.etcd.endpoints_flag()
    );
    assert!(out.contains(&stored), "{out}");
    for r in &c.replicas {
        assert_eq!(status(&r.socket).await, (first.clone(), "ok".to_owned()));
    }

    // Data sealed under the first key by one replica opens on every replica.
    let (old_ct, old_id) = encrypt(&r2.socket, b"seed under the first key").await;
    assert_eq!(old_id, first);
    for r in &c.replicas {
        assert_eq!(
            decrypt(&r.socket, &old_ct, &old_id).await.unwrap(),
            b"seed under the first key"
        );
    }

    // Rotate through replica 1.
    let rotated = admin_client(&r1.admin)
        .await
        .rotate(RotateRequest {})
        .await
        .unwrap()
        .into_inner();
    let second = rotated.primary.unwrap().key_id;
    assert_ne!(second, first);
    assert_eq!(rotated.previous_key_id, first);
    // (How long the watch takes to carry a rotation to a peer is measured by
    // `cargo bench --bench timing -- rotation_propagation`.)

    // Replica 1 encrypts under the new key at once; replica 3 decrypts it even if its watch has
    // not delivered the rotation yet (an unknown key id makes it reload from etcd).
    let (ct1, id1) = encrypt(&r1.socket, b"seed from replica 1").await;
    assert_eq!(id1, second);
    assert_eq!(
        decrypt(&r3.socket, &ct1, &id1).await.unwrap(),
        b"seed from replica 1"
    );

    // Every replica's Status moves to the new key within seconds.
    for r in &c.replicas {
        let took = wait_for_key_id(&r.socket, &second).await;
        assert!(took < Duration::from_secs(15));
    }

    // Encrypt through replica 2, decrypt through replica 3; the old key still opens old data.
    let (ct2, id2) = encrypt(&r2.socket, b"seed from replica 2").await;
    assert_eq!(id2, second);
    assert_eq!(
        decrypt(&r3.socket, &ct2, &id2).await.unwrap(),
        b"seed from replica 2"
    );
    assert_eq!(
        decrypt(&r3.socket, &old_ct, &old_id).await.unwrap(),
        b"seed under the first key"
    );

    // What etcd holds is the sealed document: no key material in the clear.
    let stored = c.etcd.etcdctl_get("/keyward/kms/keyring");
    let text = String::from_utf8_lossy(&stored);
    assert!(text.contains(&second[second.len() - 32..]), "{text}");
    assert!(text.contains("\"sealed\""), "{text}");
    for r in &c.replicas {
        assert!(!r.proc.stderr().contains("panicked"), "{}", r.proc.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rotations_never_make_two_primaries() {
    let c = Cluster::start(3, &[]);
    for round in 0..5 {
        let mut tasks = Vec::new();
        for r in &c.replicas {
            let socket = r.admin.clone();
            tasks.push(tokio::spawn(async move {
                admin_client(&socket)
                    .await
                    .rotate(RotateRequest {})
                    .await
                    .map(|r| r.into_inner().primary.unwrap().key_id)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap().expect("rotate"));
        }
        // Settle: every replica converges on one primary, and it is one of the results.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut seen = Vec::new();
            for r in &c.replicas {
                let p = primaries(&r.admin).await;
                assert_eq!(p.len(), 1, "round {round}: primaries {p:?}");
                seen.push(p[0].clone());
            }
            if seen.iter().all(|p| *p == seen[0]) {
                assert!(results.contains(&seen[0]), "{seen:?} vs {results:?}");
                break;
            }
            assert!(Instant::now() < deadline, "replicas disagree: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_keeps_serving_and_reports_stale_after_the_bound() {
    let mut c = Cluster::start(1, &["--etcd-stale-after", "3s"]);
    let socket = c.replicas[0].socket.clone();
    let admin_socket = c.replicas[0].admin.clone();
    let (key_id, healthz) = status(&socket).await;
    assert_eq!(healthz, "ok");
    let (ct, id) = encrypt(&socket, b"before the outage").await;

    c.etcd.kill(0);
    // Keeps serving from memory: encrypt and decrypt work, Status keeps the key_id.
    let (ct2, id2) = encrypt(&socket, b"during the outage").await;
    assert_eq!(id2, key_id);
    assert_eq!(
        decrypt(&socket, &ct, &id).await.unwrap(),
        b"before the outage"
    );
    assert_eq!(
        decrypt(&socket, &ct2, &id2).await.unwrap(),
        b"during the outage"
    );
    // A rotation needs etcd: it fails and changes nothing.
    let err = admin_client(&admin_socket)
        .await
        .rotate(RotateRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("etcd"), "{err:?}");
    assert_eq!(status(&socket).await.0, key_id);
    // After the stated bound, healthz says why it is not ok; the key_id stays.
    let start = Instant::now();
    loop {
        let (k, h) = status(&socket).await;
        assert_eq!(k, key_id);
        if h != "ok" {
            assert!(h.contains("etcd unreachable"), "{h}");
            assert!(
                start.elapsed() >= Duration::from_secs(1),
                "unhealthy too early"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still healthy long after the stale bound"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // etcd back: the replica confirms and is healthy again without a restart.
    c.etcd.restart(0);
    let start = Instant::now();
    while status(&socket).await.1 != "ok" {
        assert!(start.elapsed() < Duration::from_secs(20), "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn bad_flags_and_missing_keyrings_are_clear_errors() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("root.key");
    keyward::seal::generate_keyfile(&key).unwrap();
    let seal = format!("keyfile:{}", key.display());
    let sock = dir.path().join("k.sock");
    let sock = sock.to_str().unwrap();
    let ep = etcd.endpoints_flag();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "kms",
                "serve",
                "--keyring",
                "etcd",
                "--seal",
                &seal,
                "--socket",
                sock,
            ],
            "--keyring etcd needs --etcd-endpoints",
        ),
        (
            vec![
                "kms",
                "serve",
                "--keyring",
                "etcd",
                "--etcd-endpoints",
                &ep,
                "--data",
                "/tmp/x",
                "--seal",
                &seal,
                "--socket",
                sock,
            ],
            "--data applies to --keyring sled",
        ),
        (
            vec![
                "kms",
                "serve",
                "--data",
                "/tmp/x",
                "--etcd-endpoints",
                &ep,
                "--seal",
                &seal,
                "--socket",
                sock,
            ],
            "only apply with --keyring etcd",
        ),
        (
            vec![
                "kms",
                "serve",
                "--keyring",
                "etcd",
                "--etcd-endpoints",
                "127.0.0.1:2379",
                "--seal",
                &seal,
                "--socket",
                sock,
            ],
            "must start with http:// or https://",
        ),
        (
            vec![
                "kms",
                "serve",
                "--keyring",
                "etcd",
                "--etcd-endpoints",
                &ep,
                "--etcd-prefix",
                "keyward",
                "--seal",
                &seal,
                "--socket",
                sock,
            ],
            "--etcd-prefix",
        ),
        (
            vec![
                "kms",
                "serve",
                "--keyring",
                "etcd",
                "--etcd-endpoints",
                &ep,
                "--seal",
                &seal,
                "--socket",
                sock,
            ],
            "no keyring at etcd:",
        ),
        (
            vec![
                "kms",
                "serve",
                "--keyring",
                "etcd",
                "--etcd-endpoints",
                "http://127.0.0.1:1",
                "--seal",
                &seal,
                "--socket",
                sock,
            ],
            "127.0.0.1:1",
        ),
    ];
    for (args, want) in cases {
        let (ok, _, err) = run(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    }

    // init refuses to replace a shared keyring; a wrong root key cannot open it.
    init_in_etcd(&etcd, &key);
    let (ok, _, err) = run(&[
        "kms",
        "init",
        "--keyring",
        "etcd",
        "--etcd-endpoints",
        &ep,
        "--seal",
        &seal,
    ]);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
    let other = dir.path().join("other.key");
    keyward::seal::generate_keyfile(&other).unwrap();
    let (ok, _, err) = run(&[
        "kms",
        "serve",
        "--keyring",
        "etcd",
        "--etcd-endpoints",
        &ep,
        "--seal",
        &format!("keyfile:{}", other.display()),
        "--socket",
        sock,
    ]);
    assert!(!ok);
    assert!(err.contains("cannot unseal"), "{err}");
    let _ = bin();
}

/// Each replica reserves its own block of encryptions and adds exactly that block to the
/// stored count, so the count in etcd bounds the encryptions of every replica together.
#[test]
fn reservations_from_every_replica_add_up_in_etcd() {
    let c = Cluster::start(3, &[]);
    let stored =
        crate::support::etcd::etcdctl_kv(&c.etcd.endpoints_flag(), "/keyward/kms/keyring", &[])
            .expect("etcdctl get")
            .expect("the keyring is in etcd");
    // HMAC-SHA256 (32 bytes), then the JSON document.
    let doc: serde_json::Value = serde_json::from_slice(&stored.value[32..]).expect("JSON");
    let keys = doc["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(
        keys[0]["encryptions_reserved"].as_u64(),
        Some(3 * keyward::keyring::RESERVATION_BLOCK),
        "{doc}"
    );
}
