//! The keyring and plugin findings of the security review (issue 15), each reproduced against
//! the real plugin: replicas of the binary on a real etcd, or the plugin served in this process
//! on real Unix sockets.
//!
//! - rollback: an old authentic keyring document put back into etcd is refused, live and after
//!   a restart (finding 2);
//! - a stopped etcd never holds up `Status` or a Decrypt for an unknown key id (finding 6);
//! - destroy leaves no sealed copy in the data directory, and compacts etcd (finding 7);
//! - encryption counts are cluster-wide (finding 8); a document that cannot be accepted makes
//!   the replica unhealthy at once (finding 9); `kms init` leaves an existing directory's mode
//!   alone (finding 11).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::etcd::{etcdctl_kv, etcdctl_put, Etcd};
use crate::support::plugin::{
    admin_client, decrypt, encrypt, list_keys, status, v2_client, Cluster,
};
use crate::support::{run, Plugin};
use keyward::backend::{Backend, EtcdBackend, SledBackend, SledOptions};
use keyward::crypto::Algorithm;
use keyward::keyring::{
    self, InitOptions, Keyring, KeyringLocation, RotationPolicy, HEADER_LEN, RESERVATION_BLOCK,
};
use keyward::pb::keyward_v1 as admin;
use keyward::pb::kms_v2::StatusRequest;

const KEY: &str = "/keyward/kms/keyring";

/// The stored keyring document in etcd and its revision, read with etcdctl.
fn stored_in_etcd(etcd: &Etcd) -> (Vec<u8>, i64) {
    let kv = etcdctl_kv(&etcd.endpoints_flag(), KEY, &[])
        .expect("etcdctl get")
        .expect("the keyring is in etcd");
    (kv.value, kv.mod_revision)
}

/// Each key's `sealed` field in a stored document (`HMAC ‖ json`), oldest key first.
fn sealed_fields(stored: &[u8]) -> Vec<Option<String>> {
    let doc: serde_json::Value = serde_json::from_slice(&stored[32..]).expect("JSON");
    doc["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["sealed"].as_str().map(str::to_owned))
        .collect()
}

/// Rotates through `admin_socket`, then retires the previous primary: (previous, new primary).
async fn rotate_and_retire(admin_socket: &Path) -> (String, String) {
    let mut a = admin_client(admin_socket).await;
    let rot = a
        .rotate(admin::RotateRequest {})
        .await
        .unwrap()
        .into_inner();
    let previous = rot.previous_key_id;
    a.retire(admin::RetireRequest {
        key_id: previous.clone(),
    })
    .await
    .unwrap();
    (previous, rot.primary.unwrap().key_id)
}

async fn destroy(admin_socket: &Path, key_id: &str) {
    admin_client(admin_socket)
        .await
        .destroy(admin::DestroyRequest {
            key_id: key_id.to_owned(),
            confirm: key_id.to_owned(),
        })
        .await
        .unwrap();
}

/// Polls `socket`'s Status until `healthz` satisfies `want` (15 s at most); returns it.
async fn wait_for_healthz(socket: &Path, what: &str, want: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let (_, healthz) = status(socket).await;
        if want(&healthz) {
            return healthz;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{}: healthz still {healthz:?}, waiting for {what}",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finding 2, as the review reproduced it: an etcd writer saves the document while kw-1 is
/// primary, the operator rotates, retires and destroys kw-1, and the writer puts the saved
/// bytes back. Every replica refuses it (keeps kw-2, the destroyed key stays destroyed, kw-2's
/// data still opens), reports unhealthy and logs an error; a restarted replica refuses it too.
/// Putting the newest document back (the recovery docs/security.md gives) heals both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_old_keyring_document_is_refused_live_and_after_a_restart() {
    let mut c = Cluster::start(2, &[]);
    let (r0, r1) = (&c.replicas[0], &c.replicas[1]);
    let (old_doc, _) = stored_in_etcd(&c.etcd);
    let (first, second) = rotate_and_retire(&r0.admin).await;
    destroy(&r0.admin, &first).await;
    for r in &c.replicas {
        wait_for_healthz(&r.socket, "ok", |h| h == "ok").await;
        assert_eq!(status(&r.socket).await.0, second);
    }
    let (ct, kid) = encrypt(&r1.socket, b"seed under the second key").await;
    assert_eq!(kid, second);
    let (newest, _) = stored_in_etcd(&c.etcd);

    etcdctl_put(&c.etcd.endpoints_flag(), KEY, &old_doc);
    for r in &c.replicas {
        let h = wait_for_healthz(&r.socket, "not ok", |h| h != "ok").await;
        assert!(h.contains("rolled back"), "{h}");
        assert_eq!(status(&r.socket).await.0, second, "the key_id stays");
        assert_eq!(
            decrypt(&r.socket, &ct, &kid).await.unwrap(),
            b"seed under the second key"
        );
        let keys = list_keys(&r.admin).await;
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].state, admin::KeyState::Destroyed as i32);
        let log = r.proc.stderr();
        assert!(
            log.contains("refusing the stored keyring document")
                && log.contains("ERROR")
                && log.contains("is not newer than generation"),
            "{log}"
        );
    }
    // A rotation needs the stored document: refused too, and says why.
    let e = admin_client(&r0.admin)
        .await
        .rotate(admin::RotateRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("rollback"), "{e:?}");

    // Restarted, replica 0 still refuses it: its state directory remembers what it accepted.
    drop(c.replicas.remove(0));
    let args = c.serve_args(0, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = run(&args);
    assert!(!ok, "a restarted replica accepted the rolled-back keyring");
    assert!(err.contains("as a rollback"), "{err}");
    assert!(err.contains("generation"), "{err}");

    // The recovery docs/security.md gives: put the newest document back. The running replica
    // accepts it (it is the one it holds) and is healthy again; the restarted one starts.
    etcdctl_put(&c.etcd.endpoints_flag(), KEY, &newest);
    let r1 = &c.replicas[0];
    wait_for_healthz(&r1.socket, "ok", |h| h == "ok").await;
    let again = c.spawn(0, &[]);
    assert_eq!(status(&again.socket).await, (second, "ok".to_owned()));
}

/// Finding 6: with etcd stopped (SIGSTOP, as a partition looks), Decrypts naming unknown key
/// ids fail fast, and Status keeps answering well within kube-apiserver's 3 s timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_etcd_holds_up_neither_status_nor_unknown_key_decrypts() {
    let c = Cluster::start(1, &[]);
    let socket = c.replicas[0].socket.clone();
    let (key_id, healthz) = status(&socket).await;
    assert_eq!(healthz, "ok");
    let (ct, id) = encrypt(&socket, b"known").await;
    let pid = c.etcd.members[0].child.as_ref().unwrap().id();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let mut tasks = Vec::new();
    for t in 0..4u8 {
        let socket = socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = v2_client(&socket).await;
            let mut slowest = Duration::ZERO;
            for i in 0..6u8 {
                // A well-formed ciphertext naming a key id nobody has.
                let mut unknown = vec![1, 1];
                unknown.extend_from_slice(&[t, i, 0xee, 0xee].repeat(4));
                unknown.extend_from_slice(&[0u8; 12 + 32 + 16]);
                assert!(unknown.len() > HEADER_LEN);
                let start = Instant::now();
                let e = client
                    .decrypt(keyward::pb::kms_v2::DecryptRequest {
                        ciphertext: unknown,
                        uid: "t".into(),
                        key_id: "kw-9-00".into(),
                        annotations: Default::default(),
                    })
                    .await
                    .unwrap_err();
                assert_eq!(e.message(), "decryption failed");
                slowest = slowest.max(start.elapsed());
            }
            slowest
        }));
    }
    let mut status_slowest = Duration::ZERO;
    let mut client = v2_client(&socket).await;
    for _ in 0..10 {
        let start = Instant::now();
        let s = tokio::time::timeout(Duration::from_secs(3), client.status(StatusRequest {}))
            .await
            .expect("Status answered within 3 s")
            .unwrap()
            .into_inner();
        assert_eq!(s.key_id, key_id);
        status_slowest = status_slowest.max(start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut decrypt_slowest = Duration::ZERO;
    for t in tasks {
        decrypt_slowest = decrypt_slowest.max(t.await.unwrap());
    }
    // Known keys keep working from memory.
    assert_eq!(decrypt(&socket, &ct, &id).await.unwrap(), b"known");
    signal("-CONT");
    assert!(
        status_slowest < Duration::from_secs(1),
        "{status_slowest:?}"
    );
    // The wait is bounded at REQUEST_IO_WAIT; the rest is slack for a loaded machine.
    assert!(
        decrypt_slowest < keyring::REQUEST_IO_WAIT + Duration::from_millis(1500),
        "an unknown-key Decrypt took {decrypt_slowest:?} with etcd stopped"
    );
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(p.display().to_string());
                }
            }
        }
    }
    found
}

/// The stored document of a data directory's keyring (the plugin must be stopped).
async fn stored_in_dir(data: &Path) -> Vec<u8> {
    let sled = SledBackend::open(&data.join(keyring::DIR_STORE), SledOptions::default()).unwrap();
    let (kv, _) = sled
        .get(keyring::DEFAULT_KEY.as_bytes(), None)
        .await
        .unwrap();
    drop(sled);
    kv.expect("the keyring is stored").value
}

/// Finding 7, in a data directory: after `destroy`, no file of the directory holds the
/// destroyed key's sealed material (nor the earlier sealing of the keys kept), and the kept key
/// still opens its data after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_leaves_no_sealed_copy_in_the_data_directory() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let data = p.dir.path().join("data");
    let key = p.dir.path().join("root.key");
    let socket = p.socket.clone();
    let (first, second) = rotate_and_retire(&p.admin).await;
    let (ct, kid) = encrypt(&socket, b"kept").await;
    assert_eq!(kid, second);
    let dir = p.dir;
    // Stop (keeping the temp dir) to read the sealed fields the store holds now.
    let (stop, task) = (p.stop, p.task);
    let _ = stop.unwrap().send(());
    task.unwrap().await.unwrap().unwrap();
    drop(p.keyring);
    let before = sealed_fields(&stored_in_dir(&data).await);
    let (destroyed, kept) = (before[0].clone().unwrap(), before[1].clone().unwrap());
    assert!(!files_containing(&data, destroyed.as_bytes()).is_empty());

    let p = Plugin::restart(&data, &key, &socket).await;
    destroy(&p.admin, &first).await;
    p.stop().await;
    let found = files_containing(&data, destroyed.as_bytes());
    assert!(found.is_empty(), "the destroyed key is still in {found:?}");
    let found = files_containing(&data, kept.as_bytes());
    assert!(
        found.is_empty(),
        "the old sealing of the kept key is in {found:?}"
    );
    let after = sealed_fields(&stored_in_dir(&data).await);
    assert!(after[0].is_none() && after[1].is_some());

    let p = Plugin::restart(&data, &key, &socket).await;
    assert_eq!(decrypt(&socket, &ct, &kid).await.unwrap(), b"kept");
    p.stop().await;
    drop(dir);
}

/// A plugin stopped cleanly gives back the encryptions it reserved and did not use, so that
/// restarts do not add a block each to the count that rotation and the AES-GCM limit go by (a
/// crash still over-counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_restarts_do_not_inflate_the_encryption_count() {
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    let data = p.dir.path().join("data");
    let key = p.dir.path().join("root.key");
    let socket = p.socket.clone();
    let dir = p.dir;
    let (stop, task) = (p.stop, p.task);
    encrypt(&socket, b"a data key").await;
    let _ = stop.unwrap().send(());
    task.unwrap().await.unwrap().unwrap();
    drop(p.keyring);
    let mut counts = Vec::new();
    for _ in 0..3 {
        let p = Plugin::restart(&data, &key, &socket).await;
        encrypt(&socket, b"a data key").await;
        counts.push(list_keys(&p.admin).await[0].encryptions);
        p.stop().await;
    }
    assert!(
        counts.iter().all(|&n| n < 100) && counts.windows(2).all(|w| w[0] < w[1]),
        "{counts:?}"
    );
    drop(dir);
}

/// Finding 7, shared: after `destroy`, etcd's history no longer serves the earlier documents
/// (it was compacted to the destroy's revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_compacts_the_etcd_history_of_a_shared_keyring() {
    let c = Cluster::start(1, &[]);
    let r = &c.replicas[0];
    let (first, _) = rotate_and_retire(&r.admin).await;
    let (doc, before) = stored_in_etcd(&c.etcd);
    let destroyed = sealed_fields(&doc)[0].clone().unwrap();
    let ep = c.etcd.endpoints_flag();
    assert!(etcdctl_kv(&ep, KEY, &[&format!("--rev={before}")]).is_ok());
    destroy(&r.admin, &first).await;
    let e = etcdctl_kv(&ep, KEY, &[&format!("--rev={before}")]).unwrap_err();
    assert!(e.contains("compacted"), "{e}");
    let (now, _) = stored_in_etcd(&c.etcd);
    assert!(!String::from_utf8_lossy(&now).contains(&destroyed));
    assert_eq!(status(&r.socket).await.1, "ok");
}

/// Finding 8: a replica counts what the others reserved, so rotation by count (and the AES-GCM
/// hard stop) apply to the encryptions of every replica together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_counts_are_cluster_wide() {
    let etcd = Etcd::start();
    let backend: Arc<dyn Backend> = Arc::new(EtcdBackend::connect(&etcd.options()).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let spec = crate::support::hsm::test_seal(tmp.path());
    let location = KeyringLocation::Shared {
        backend,
        prefix: "/keyward".into(),
        label: format!("etcd:{}", etcd.endpoints_flag()),
        stale_after: keyring::DEFAULT_STALE_AFTER,
        state: None,
    };
    let opts = InitOptions {
        algorithm: Algorithm::Aes256Gcm,
        kdf: None,
    };
    Keyring::init(&location, &spec, &opts).await.unwrap();
    let policy = RotationPolicy {
        max_age: None,
        max_encryptions: Some(RESERVATION_BLOCK),
    };
    let a = Keyring::open(&location, &spec, policy).await.unwrap();
    let first = a.health().primary_key_id;
    assert!(a.keys()[0].encryptions < 10);
    a.maintain(0).await.unwrap();
    assert_eq!(a.health().primary_key_id, first, "not due on its own count");
    // A second replica reserves a block of its own: the cluster may now have used two.
    let _b = Keyring::open(&location, &spec, policy).await.unwrap();
    a.refresh().await.unwrap();
    assert!(
        a.keys()[0].encryptions >= RESERVATION_BLOCK,
        "{:?}",
        a.keys()
    );
    a.maintain(0).await.unwrap();
    assert_ne!(
        a.health().primary_key_id,
        first,
        "rotated by the global count"
    );
}

/// Finding 9: a replica that cannot accept the document in etcd (garbage here) reports
/// unhealthy at once, not only after the stale bound; the good document put back heals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_accept_the_stored_document_reports_unhealthy() {
    let c = Cluster::start(1, &[]);
    let socket = &c.replicas[0].socket;
    let (good, _) = stored_in_etcd(&c.etcd);
    etcdctl_put(
        &c.etcd.endpoints_flag(),
        KEY,
        b"garbage that is no keyring document at all",
    );
    let h = wait_for_healthz(socket, "not ok", |h| h != "ok").await;
    assert!(h.contains("invalid"), "{h}");
    etcdctl_put(&c.etcd.endpoints_flag(), KEY, &good);
    wait_for_healthz(socket, "ok", |h| h == "ok").await;
}

/// Finding 11: `kms init --data DIR` on an existing directory leaves its mode alone (here a
/// shared 1777 directory) and keeps only its own store private.
#[test]
fn kms_init_leaves_an_existing_directory_mode_alone() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let key = tmp.path().join("root.key");
    let (ok, _, err) = run(&[
        "kms",
        "init",
        "--data",
        shared.to_str().unwrap(),
        "--generate-keyfile",
        key.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&shared), 0o1777);
    assert_eq!(mode(&shared.join(keyring::DIR_STORE)), 0o700);
    // A directory kms init makes is private.
    let fresh = tmp.path().join("fresh");
    let (ok, _, err) = run(&[
        "kms",
        "init",
        "--data",
        fresh.to_str().unwrap(),
        "--seal",
        &format!("keyfile:{}", key.display()),
    ]);
    assert!(ok, "{err}");
    assert_eq!(mode(&fresh), 0o700);
}
