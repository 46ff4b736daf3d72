//! Key rotation end to end: 10,000 Secrets under KEK A, rotate to B, migrate while a writer keeps
//! updating some of them, and prove that nothing is lost, nothing still needs A, and A can be
//! retired. Also an interrupted migration finishing on a rerun (and refusing a second one while it
//! runs), and the CLI commands.

use std::collections::HashMap;
use std::sync::Arc;

use crate::support::store::{secret_v, sled_store};
use crate::support::{config_text, kms_v2_provider, name, ns, Plugin};
use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::crypto::Algorithm;
use keyward::encryption::{config, Encryption, ParseOptions};
use keyward::store::migrate::MigrateOptions;
use keyward::store::{Secret, Store, StoreError};

async fn store_for(plugin: &Plugin, dir: &std::path::Path) -> Arc<Store> {
    sled_store(dir, &config_text(&kms_v2_provider(&plugin.socket))).await
}

fn secret(name: &str, value: &str) -> Secret {
    secret_v("drill", name, value.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_drill_10000_secrets() {
    const N: usize = 10_000;
    let plugin = Plugin::start(Algorithm::Aes256Gcm).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store_for(&plugin, &dir.path().join("store")).await;
    let key_a = plugin.keyring.health().primary_key_id.to_string();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..N).step_by(16) {
                store
                    .create(secret(&format!("s{i}"), &format!("v0-{i}")), false)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let before = store.encryption_coverage(false).await.unwrap();
    assert_eq!((before.total, before.stale), (N as u64, 0));
    assert_eq!(before.kms_key_ids, vec![key_a.clone()]);

    // Rotate the KEK. The store sees the new key_id at its next check; new writes use B.
    let key_b = plugin.keyring.rotate().await.unwrap().primary.key_id;
    let cov = store.encryption_coverage(false).await.unwrap();
    assert_eq!(cov.stale, N as u64, "everything under A is stale now");
    store
        .create(secret("after-rotation", "new"), false)
        .await
        .unwrap();

    // Migrate while a writer keeps updating some Secrets.
    let writer_store = store.clone();
    let writer = tokio::spawn(async move {
        let mut last = HashMap::new();
        for round in 1..=3 {
            for i in (0..N).step_by(97) {
                let value = format!("v{round}-{i}");
                writer_store
                    .update(secret(&format!("s{i}"), &value), false)
                    .await
                    .unwrap();
                last.insert(i, value);
            }
        }
        last
    });
    let done = store
        .migrate(
            MigrateOptions {
                dry_run: false,
                batch: 500,
                rate: 0.0,
            },
            |_| {},
        )
        .await
        .unwrap();
    let updated = writer.await.unwrap();
    assert_eq!(done.total, N as u64 + 1);
    assert_eq!(done.failed, 0);
    assert!(
        done.rewritten + done.conflicts >= N as u64 - updated.len() as u64,
        "{done:?}"
    );

    // Every Secret has its final content; nothing is under A any more.
    for i in 0..N {
        let s = store
            .get(&ns("drill"), &name(&format!("s{i}")), None)
            .await
            .unwrap();
        let want = updated
            .get(&i)
            .cloned()
            .unwrap_or_else(|| format!("v0-{i}"));
        assert_eq!(s.data["v"].as_slice(), want.as_bytes(), "s{i}");
    }
    let after = store.encryption_coverage(false).await.unwrap();
    assert_eq!(
        (after.stale, after.undecryptable),
        (0, 0),
        "{:?}",
        after.by_key
    );
    assert_eq!(after.kms_key_ids, vec![key_b.clone()]);

    // A can be retired; a fresh store process (no cached seeds) still reads everything.
    plugin.keyring.retire(&key_a).await.unwrap();
    drop(store);
    let fresh = store_for(&plugin, &dir.path().join("store")).await;
    let list = fresh
        .list(Some(&ns("drill")), &Default::default(), 0, None)
        .await
        .unwrap();
    assert_eq!(list.items.len(), N + 1);
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_migration_finishes_on_a_rerun() {
    let plugin = Plugin::start(Algorithm::Aes256Gcm).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store_for(&plugin, &dir.path().join("store")).await;
    for i in 0..600 {
        store
            .create(secret(&format!("s{i}"), &format!("v{i}")), false)
            .await
            .unwrap();
    }
    plugin.keyring.rotate().await.unwrap();
    // A dry run reports and writes nothing.
    let dry = store
        .migrate(
            MigrateOptions {
                dry_run: true,
                batch: 100,
                rate: 0.0,
            },
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(dry.rewritten, 600);
    assert_eq!(store.encryption_coverage(false).await.unwrap().stale, 600);
    // Kill the migration part-way (abort the task after the first batch).
    let s2 = store.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        s2.migrate(
            MigrateOptions {
                dry_run: false,
                batch: 100,
                rate: 0.0,
            },
            move |p| {
                let _ = tx.send(p.done);
            },
        )
        .await
    });
    while let Some(done) = rx.recv().await {
        if done >= 100 {
            // One migration at a time: a second one (even a dry run) is refused meanwhile.
            let second = store
                .migrate(
                    MigrateOptions {
                        dry_run: true,
                        ..MigrateOptions::default()
                    },
                    |_| {},
                )
                .await;
            assert!(
                matches!(second, Err(StoreError::MigrationRunning)),
                "{second:?}"
            );
            assert!(store.migration().running);
            task.abort();
            break;
        }
    }
    let _ = task.await;
    // The aborted migration is over: reported failed, not running.
    let status = store.migration();
    assert!(!status.running && status.failed == 1, "{status:?}");
    let mid = store.encryption_coverage(false).await.unwrap();
    assert!(
        mid.stale > 0 && mid.stale < 600,
        "interrupted part-way: {}",
        mid.stale
    );
    assert_eq!(mid.undecryptable, 0, "nothing half-written");
    let rest = store
        .migrate(MigrateOptions::default(), |_| {})
        .await
        .unwrap();
    // Rewrites already handed to the backend when the task was killed may still land: at most
    // one page (100 rewrites in flight).
    assert!(
        rest.rewritten <= mid.stale && mid.stale - rest.rewritten <= 100,
        "{rest:?} vs {} stale",
        mid.stale
    );
    assert_eq!(store.encryption_coverage(false).await.unwrap().stale, 0);
    for i in 0..600 {
        let s = store
            .get(&ns("drill"), &name(&format!("s{i}")), None)
            .await
            .unwrap();
        assert_eq!(s.data["v"].as_slice(), format!("v{i}").as_bytes());
    }
    plugin.stop().await;
}

#[test]
fn cli_status_and_migrate_after_a_kek_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let sock = data.join("keyward.sock");
    let _dev = crate::support::Proc::spawn(
        &["dev", "--data", data.to_str().unwrap()],
        &[],
        &dir.path().join("log"),
        &sock,
    );
    let server = format!("unix://{}", sock.display());
    let admin = data.join("kms-admin.sock").display().to_string();
    let kw = |args: &[&str]| kw_at(&server, args);
    for i in 0..5 {
        assert!(
            kw(&[
                "create",
                "secret",
                "generic",
                &format!("s{i}"),
                "--from-literal=k=v"
            ])
            .0
        );
    }
    let (ok, out, err) = kw(&["encryption", "status"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("writes use:     kms-v2 keyward-dev\nobjects:        5 at revision"),
        "{out}"
    );
    assert!(out.contains("stale:          0\n"), "{out}");
    let (ok, out, _) = kw(&["encryption", "status", "-o", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let old = v["kmsKeyIds"][0].as_str().unwrap().to_owned();
    let (ok, _, err) = crate::support::run(&["kms", "rotate", "--admin-socket", &admin]);
    assert!(ok, "{err}");
    let (ok, out, _) = kw(&["encryption", "status", "-o", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stale"], 5);
    assert_eq!(v["objects"].as_array().unwrap().len(), 5);
    let (ok, out, err) = kw(&["migrate", "--dry-run"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "would rewrite 5 of 5 objects (0 changed concurrently, 0 undecryptable)\n"
    );
    // Retiring the old KEK is refused while stored objects need it.
    assert_retire_refused(&server, &admin, &old, 5);
    let (ok, out, err) = kw(&["migrate", "--batch-size", "2"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "rewrote 5 of 5 objects (0 changed concurrently, 0 undecryptable)\n"
    );
    assert!(
        err.contains("5/5 objects, 5 rewritten"),
        "progress lines when not a terminal: {err}"
    );
    let (ok, out, _) = kw(&["encryption", "status"]);
    assert!(ok);
    assert!(out.contains("stale:          0\n"), "{out}");
    // The Secrets' earlier versions (their history) are still under the old KEK.
    let (ok, _, err) = kw(&["kms", "retire", &old, "--admin-socket", &admin]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "key_id {old} still protects 5 older versions the store keeps"
        )),
        "{err}"
    );
    let (ok, out, err) = kw(&["kms", "retire", &old, "--admin-socket", &admin, "--force"]);
    assert!(ok, "{err}");
    assert!(out.contains("is now disabled"), "{out}");
    let (ok, _, err) = kw(&["migrate", "--batch-size", "0"]);
    assert!(!ok);
    assert!(
        err.contains("--batch-size: must be a positive number"),
        "{err}"
    );
}

/// The server's own keys (here the audit log's checkpoint key) are sealed under the KEK like
/// Secrets: encryption status counts them, retiring the KEK that seals one is refused, and
/// `migrate` re-seals it, so the store still starts after the old KEK is destroyed.
#[test]
fn a_server_key_under_an_old_kek_holds_its_retirement_until_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let sock = data.join("keyward.sock");
    let audit = dir.path().join("audit.log");
    let args = [
        "dev",
        "--data",
        data.to_str().unwrap(),
        "--audit-log-path",
        audit.to_str().unwrap(),
    ];
    let dev = crate::support::Proc::spawn(&args, &[], &dir.path().join("log"), &sock);
    let server = format!("unix://{}", sock.display());
    let admin = data.join("kms-admin.sock").display().to_string();
    let kw = |args: &[&str]| kw_at(&server, args);
    let status = || {
        let (ok, out, err) = kw(&["encryption", "status", "-o", "json"]);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let v = status();
    assert_eq!(v["total"], 1, "the checkpoint key, and no Secret: {v}");
    assert_eq!(v["stale"], 0, "{v}");
    let old = v["kmsKeyIds"][0].as_str().unwrap().to_owned();
    let (ok, _, err) = crate::support::run(&["kms", "rotate", "--admin-socket", &admin]);
    assert!(ok, "{err}");
    let v = status();
    assert_eq!(v["stale"], 1, "{v}");
    assert_eq!(
        v["objects"][0]["key"], "/registry/keyward.io/keys/audit-checkpoint",
        "{v}"
    );
    assert_retire_refused(&server, &admin, &old, 1);
    let (ok, out, err) = kw(&["migrate"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "rewrote 1 of 1 objects (0 changed concurrently, 0 undecryptable)\n"
    );
    assert_eq!(status()["stale"], 0);
    for op in [
        vec!["kms", "retire", &old],
        vec!["kms", "destroy", &old, "--confirm", &old],
    ] {
        let (ok, _, err) = kw(&[op.as_slice(), &["--admin-socket", &admin]].concat());
        assert!(ok, "{op:?}: {err}");
    }
    drop(dev);
    // Restarted with the old KEK destroyed: the checkpoint key opens under the new one.
    let _dev = crate::support::Proc::spawn(&args, &[], &dir.path().join("log2"), &sock);
    let v = status();
    assert_eq!(
        (&v["total"], &v["stale"], &v["undecryptable"]),
        (&1.into(), &0.into(), &0.into()),
        "{v}"
    );
}

/// The older versions a Secret keeps (history, rollback, watches from a past revision) need
/// the KEK they were written under after `migrate` rewrote the current one: retiring it is
/// refused naming them, and `--force` retires it anyway.
#[test]
fn retiring_a_kek_older_versions_need_is_refused_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, server, admin) = dev_in(dir.path());
    let kw = |args: &[&str]| {
        let (ok, out, err) = kw_at(&server, args);
        assert!(ok, "{args:?}: {err}");
        out
    };
    kw(&["create", "secret", "generic", "r1", "--from-literal=a=A"]);
    std::fs::write(
        dir.path().join("r1.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: r1}\nstringData: {a: B}\n",
    )
    .unwrap();
    kw(&["apply", "-f", dir.path().join("r1.yaml").to_str().unwrap()]);
    let status: serde_json::Value =
        serde_json::from_str(&kw(&["encryption", "status", "-o", "json"])).unwrap();
    let old = status["kmsKeyIds"][0].as_str().unwrap().to_owned();
    let (ok, _, err) = crate::support::run(&["kms", "rotate", "--admin-socket", &admin]);
    assert!(ok, "{err}");
    kw(&["migrate"]);
    let retire = |force: bool| {
        let mut a = vec!["kms", "retire", old.as_str(), "--admin-socket", &admin];
        if force {
            a.push("--force");
        }
        kw_at(&server, &a)
    };
    let (ok, _, err) = retire(false);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "key_id {old} still protects 2 older versions the store keeps"
        )) && err.contains("--force"),
        "{err}"
    );
    let (ok, _, err) = retire(true);
    assert!(ok, "{err}");
}

/// A migration whose caller goes away (a killed `keyward migrate`) stops on the server: the
/// next one is not refused as already running, and a rerun finishes the job.
#[test]
fn a_migration_stops_when_its_caller_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let (_dev, server, admin) = dev_in(dir.path());
    let manifests: String = (0..300)
        .map(|i| format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: m{i}}}\nstringData: {{k: v}}\n---\n"))
        .collect();
    let file = dir.path().join("all.yaml");
    std::fs::write(&file, manifests).unwrap();
    let (ok, _, err) = kw_at(&server, &["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, _, err) = crate::support::run(&["kms", "rotate", "--admin-socket", &admin]);
    assert!(ok, "{err}");
    let mut slow =
        crate::support::binary::command(&["migrate", "--rate", "20", "--server", &server])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    slow.kill().unwrap();
    slow.wait().unwrap();
    // Refused only while the server has not yet seen the caller go (well under a second; the
    // killed one would have run for 13 s more).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    loop {
        let (ok, out, err) = kw_at(&server, &["migrate"]);
        if ok {
            assert!(out.starts_with("rewrote "), "{out}");
            break;
        }
        assert!(err.contains("already running"), "{err}");
        assert!(
            std::time::Instant::now() < deadline,
            "the killed caller's migration still runs"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ok, out, _) = kw_at(&server, &["encryption", "status", "-o", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stale"], 0, "{v}");
}

/// `keyward dev` on `dir/kw`: the process, its store's `--server` URL and its admin socket.
fn dev_in(dir: &std::path::Path) -> (crate::support::Proc, String, String) {
    let data = dir.join("kw");
    let sock = data.join("keyward.sock");
    let args = ["dev", "--data", data.to_str().unwrap()];
    let dev = crate::support::Proc::spawn(&args, &[], &dir.join("log"), &sock);
    let server = format!("unix://{}", sock.display());
    let admin = data.join("kms-admin.sock").display().to_string();
    (dev, server, admin)
}

/// `keyward ARGS --server SERVER` to completion; (success, stdout, stderr).
fn kw_at(server: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend(["--server", server]);
    crate::support::run(&all)
}

/// Retiring the KEK `old` (through the admin socket `admin`) is refused while `n` objects of
/// the store at `server` still need it.
fn assert_retire_refused(server: &str, admin: &str, old: &str, n: usize) {
    let (ok, _, err) = kw_at(server, &["kms", "retire", old, "--admin-socket", admin]);
    assert!(!ok);
    assert!(
        err.contains(&format!("key_id {old} still protects {n} stored objects")),
        "{err}"
    );
}

/// Objects whose key is lost: reported per object by List and by the coverage report, and
/// deletable only with the explicit unsafe flag (KEP-3926).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecryptable_objects_are_reported_and_deletable_only_explicitly() {
    use keyward::store::{Preconditions, StoreError};
    let cfg = |keys: &str| {
        let text = config_text(&format!("      - aesgcm: {{keys: [{keys}]}}\n"));
        config::parse(&text, ParseOptions::default()).unwrap()
    };
    let k1 = "{name: k1, secret: MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=}";
    let k2 = "{name: k2, secret: MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=}";
    let dir = tempfile::tempdir().unwrap();
    let backend = SledBackend::open(dir.path(), SledOptions::default()).unwrap();
    let store = Store::new(
        Arc::new(backend),
        Arc::new(Encryption::build(&cfg(k1)).await),
        "/registry",
    );
    store.create(secret("lost", "x"), false).await.unwrap();
    // k1 disappears from the configuration; a new Secret is written with k2.
    store.set_encryption(Arc::new(Encryption::build(&cfg(k2)).await));
    store.create(secret("kept", "y"), false).await.unwrap();
    let list = store
        .list(Some(&ns("drill")), &Default::default(), 0, None)
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "the readable one is listed");
    assert_eq!(list.items[0].metadata.name, "kept");
    assert_eq!(list.errors.len(), 1);
    assert_eq!(list.errors[0].0, "/registry/secrets/drill/lost");
    assert!(
        list.errors[0].1 == "no matching key was found for the provided AES transformer",
        "{}",
        list.errors[0].1
    );
    let cov = store.encryption_coverage(false).await.unwrap();
    assert_eq!((cov.total, cov.undecryptable), (2, 1));
    assert_eq!(cov.objects[0].key, "/registry/secrets/drill/lost");
    let e = store
        .delete(&ns("drill"), &name("lost"), &Preconditions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Undecryptable { .. }), "{e}");
    assert!(
        e.to_string().contains("--unsafe-ignore-decrypt-errors"),
        "{e}"
    );
    let pre = Preconditions {
        unsafe_ignore_decrypt_errors: true,
        ..Default::default()
    };
    store
        .delete(&ns("drill"), &name("lost"), &pre)
        .await
        .unwrap();
    let list = store
        .list(Some(&ns("drill")), &Default::default(), 0, None)
        .await
        .unwrap();
    assert!(list.errors.is_empty());
    assert_eq!(list.items.len(), 1);
}

/// A value that decrypts but is no Secret (aescbc has no integrity check: changed bytes
/// decrypt to garbage) is reported by the coverage and left alone by a migration, never
/// re-encrypted under the new authenticated key as if it were sound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_decrypts_to_garbage_is_reported_not_migrated() {
    use keyward::backend::{Backend, Expect};
    let cbc = "      - aescbc: {keys: [{name: c1, secret: MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=}]}\n";
    let gcm = "      - aesgcm: {keys: [{name: g1, secret: MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=}]}\n";
    let cfg = |text: &str| config::parse(&config_text(text), ParseOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(SledBackend::open(dir.path(), SledOptions::default()).unwrap());
    let store = Store::new(
        backend.clone(),
        Arc::new(Encryption::build(&cfg(cbc)).await),
        "/registry",
    );
    store.create(secret("sound", "x"), false).await.unwrap();
    store.create(secret("damaged", "y"), false).await.unwrap();
    // One byte of the damaged one's first ciphertext block changed, behind the store's back:
    // its padding (in the last block) is intact, so it decrypts.
    let key = b"/registry/secrets/drill/damaged";
    let (kv, _) = backend.get(key, None).await.unwrap();
    let kv = kv.unwrap();
    let mut value = kv.value.clone();
    let prefix = b"k8s:enc:aescbc:v1:c1:".len();
    value[prefix + 16] ^= 0x55;
    backend
        .put(key, value.clone(), Expect::ModRevision(kv.mod_revision))
        .await
        .unwrap();
    // Written with aesgcm from now on, the aescbc key kept for reading.
    store.set_encryption(Arc::new(
        Encryption::build(&cfg(&format!("{gcm}{cbc}"))).await,
    ));
    let cov = store.encryption_coverage(false).await.unwrap();
    assert_eq!((cov.total, cov.stale, cov.undecryptable), (2, 1, 1));
    let bad = cov.objects.iter().find(|o| o.error.is_some()).unwrap();
    assert_eq!(bad.key, "/registry/secrets/drill/damaged");
    let p = store
        .migrate(MigrateOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!((p.total, p.rewritten, p.failed), (2, 1, 1));
    let (after, _) = backend.get(key, None).await.unwrap();
    assert_eq!(after.unwrap().value, value, "left as it was");
    let cov = store.encryption_coverage(false).await.unwrap();
    assert_eq!((cov.stale, cov.undecryptable), (0, 1));
}

/// `--auto-migrate`: a change of write key is migrated after the settle time, not before.
#[tokio::test]
async fn automatic_migration_waits_for_the_settle_time() {
    let cfg = |keys: &str| {
        let text = config_text(&format!("      - aesgcm: {{keys: [{keys}]}}\n"));
        config::parse(&text, ParseOptions::default()).unwrap()
    };
    let k1 = "{name: k1, secret: MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=}";
    let k2 = "{name: k2, secret: MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=}";
    let dir = tempfile::tempdir().unwrap();
    let backend = SledBackend::open(dir.path(), SledOptions::default()).unwrap();
    let store = Arc::new(Store::new(
        Arc::new(backend),
        Arc::new(Encryption::build(&cfg(k1)).await),
        "/registry",
    ));
    for i in 0..20 {
        store
            .create(secret(&format!("s{i}"), "v"), false)
            .await
            .unwrap();
    }
    tokio::time::pause();
    let settle = std::time::Duration::from_secs(600);
    let _auto = store.spawn_auto_migrate(std::time::Duration::from_secs(10), settle);
    // Let the start-up migration (nothing stale) pass.
    for _ in 0..62 {
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        tokio::task::spawn_blocking(|| std::thread::sleep(std::time::Duration::from_millis(5)))
            .await
            .unwrap();
    }
    store.set_encryption(Arc::new(
        Encryption::build(&cfg(&format!("{k2}, {k1}"))).await,
    ));
    let stale = || async { store.encryption_coverage(false).await.unwrap().stale };
    for _ in 0..50 {
        tokio::time::advance(std::time::Duration::from_secs(10)).await;
        tokio::task::spawn_blocking(|| std::thread::sleep(std::time::Duration::from_millis(5)))
            .await
            .unwrap();
    }
    assert_eq!(stale().await, 20, "nothing happens before the settle time");
    // Paused time moves at most the settle time plus a few polls; real time (for the backend's
    // writer thread, slow on a loaded machine) is bounded separately.
    let mut waited = 0;
    let real_deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while stale().await > 0 {
        if waited < 300 {
            tokio::time::advance(std::time::Duration::from_secs(10)).await;
            waited += 10;
        } else {
            assert!(
                std::time::Instant::now() < real_deadline,
                "migrated within the settle time plus a few polls"
            );
        }
        // Real time for the backend's writer thread (a blocking task holds the paused clock).
        tokio::task::spawn_blocking(|| std::thread::sleep(std::time::Duration::from_millis(50)))
            .await
            .unwrap();
    }
}

/// The classic upgrade: Secrets under the static aescbc provider move to KMS v2 (kms first,
/// aescbc second), are migrated while a writer keeps updating some, and aescbc can then be
/// removed from the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_from_aescbc_to_kms_v2() {
    const N: usize = 10_000;
    let aescbc = "      - aescbc: {keys: [{name: old, secret: MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=}]}\n";
    let plugin = Plugin::start(Algorithm::Aes256Gcm).await;
    let kms = kms_v2_provider(&plugin.socket);
    let cfg =
        |providers: &str| config::parse(&config_text(providers), ParseOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backend = SledBackend::open(&dir.path().join("store"), SledOptions::default()).unwrap();
    let store = Arc::new(Store::new(
        Arc::new(backend),
        Arc::new(Encryption::build(&cfg(aescbc)).await),
        "/registry",
    ));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..N).step_by(16) {
                store
                    .create(secret(&format!("s{i}"), &format!("v0-{i}")), false)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Step 1: kms v2 first, aescbc still there to read old data.
    store.set_encryption(Arc::new(
        Encryption::build(&cfg(&format!("{kms}{aescbc}"))).await,
    ));
    let cov = store.encryption_coverage(false).await.unwrap();
    assert_eq!(cov.stale, N as u64);
    let writer_store = store.clone();
    let writer = tokio::spawn(async move {
        let mut last = HashMap::new();
        for round in 1..=2 {
            for i in (0..N).step_by(101) {
                let value = format!("v{round}-{i}");
                writer_store
                    .update(secret(&format!("s{i}"), &value), false)
                    .await
                    .unwrap();
                last.insert(i, value);
            }
        }
        last
    });
    let done = store
        .migrate(MigrateOptions::default(), |_| {})
        .await
        .unwrap();
    let updated = writer.await.unwrap();
    assert_eq!(done.failed, 0);
    let cov = store.encryption_coverage(false).await.unwrap();
    assert_eq!((cov.stale, cov.undecryptable), (0, 0));
    assert!(
        cov.by_key.keys().all(|(p, _)| p == "kms-v2"),
        "{:?}",
        cov.by_key
    );
    // Step 2: aescbc removed; everything still reads, with its final content.
    store.set_encryption(Arc::new(Encryption::build(&cfg(&kms)).await));
    for i in 0..N {
        let s = store
            .get(&ns("drill"), &name(&format!("s{i}")), None)
            .await
            .unwrap();
        let want = updated
            .get(&i)
            .cloned()
            .unwrap_or_else(|| format!("v0-{i}"));
        assert_eq!(s.data["v"].as_slice(), want.as_bytes(), "s{i}");
    }
    plugin.stop().await;
}
