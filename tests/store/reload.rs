//! Automatic reload of the encryption configuration file (facts §4.5): changes are picked up on
//! the next tick, bad files keep the configuration in force, kms v2 plugins must be healthy
//! before a configuration using them is applied, and a real store switches write keys.
//!
//! Every wait is bounded. Ticks run on real time with short intervals; checks that must happen
//! at a precise moment use `Reloader::check_now`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{config_text, keys_provider, Plugin};
use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::crypto::Algorithm;
use keyward::encryption::reload::{self, ReloadOptions, ReloadOutcome, ReloadStatus, Reloader};
use keyward::encryption::{config, Encryption, ParseOptions};
use keyward::store::{Secret, Store};
use tokio::sync::watch;

const K1: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="; // 32 bytes of '1'
const K2: &str = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI="; // 32 bytes of '2'
/// A 14-byte key: not an AES key size.
const SHORT: &str = "c2hvcnRrZXlzaG9ydGs=";
const SK: &str = "/registry/secrets/default/db";
/// Upper bound of every wait in this file.
const LIMIT: Duration = Duration::from_secs(30);

fn aesgcm(keys: &[(&str, &str)]) -> String {
    config_text(&keys_provider("aesgcm", keys))
}

fn kms2(name: &str, socket: &Path, timeout: &str) -> String {
    config_text(&format!(
        "      - kms: {{apiVersion: v2, name: {name}, endpoint: 'unix://{}', timeout: {timeout}}}\n",
        socket.display()
    ))
}

/// Records every configuration the reloader applies.
#[derive(Clone, Default)]
struct Slot(Arc<Mutex<Vec<Arc<Encryption>>>>);

impl Slot {
    fn apply(&self) -> impl Fn(Arc<Encryption>) + Send + Sync + 'static {
        let s = self.0.clone();
        move |e| s.lock().unwrap().push(e)
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn last(&self) -> Arc<Encryption> {
        self.0.lock().unwrap().last().cloned().expect("applied")
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    slot: Slot,
    reloader: Reloader,
    initial: Encryption,
}

/// Writes `content`, loads it as the configuration in force, and starts a reloader on it.
async fn fixture(content: &str, options: impl FnOnce(&mut ReloadOptions)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("encryption.yaml");
    std::fs::write(&path, content).unwrap();
    let (cfg, hash) = config::load(&path, ParseOptions::default()).unwrap();
    let initial = Encryption::build(&cfg).await;
    let slot = Slot::default();
    let mut opts = ReloadOptions::new(ParseOptions::default(), Duration::from_secs(3600));
    options(&mut opts);
    let reloader = Reloader::spawn(path.clone(), opts, hash, slot.apply());
    Fixture {
        _dir: dir,
        path,
        slot,
        reloader,
        initial,
    }
}

/// Waits (bounded) until the status satisfies `f`.
async fn wait_status(
    rx: &mut watch::Receiver<ReloadStatus>,
    what: &str,
    f: impl FnMut(&ReloadStatus) -> bool,
) -> ReloadStatus {
    let res = tokio::time::timeout(LIMIT, async { rx.wait_for(f).await.map(|s| s.clone()) }).await;
    match res {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => panic!("{what}: reloader stopped"),
        Err(_) => panic!("{what}: not within {LIMIT:?}: {:?}", *rx.borrow()),
    }
}

async fn failed(r: &Reloader) -> String {
    match r.check_now().await {
        Some(ReloadOutcome::Failed { error, .. }) => error,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_change_is_applied_after_one_interval() {
    let interval = Duration::from_millis(200);
    let f = fixture(&aesgcm(&[("k1", K1)]), |o| o.interval = interval).await;
    assert_eq!(
        f.initial.for_resource("secrets").write_provider(),
        ("aesgcm", "k1")
    );
    let mut rx = f.reloader.subscribe();
    let start = tokio::time::Instant::now();
    std::fs::write(&f.path, aesgcm(&[("k2", K2), ("k1", K1)])).unwrap();
    let s = wait_status(&mut rx, "reload", |s| s.reloads == 1).await;
    let took = start.elapsed();
    // The first tick is one interval after spawn, never at once.
    assert!(took >= interval - Duration::from_millis(50), "{took:?}");
    assert_eq!(f.slot.count(), 1);
    let enc = f.slot.last();
    let t = enc.for_resource("secrets");
    assert_eq!(t.write_provider(), ("aesgcm", "k2"));
    // The new chain still reads what the old one wrote, as stale.
    let old = f
        .initial
        .for_resource("secrets")
        .to_storage(SK, b"v")
        .await
        .unwrap();
    let (pt, info) = t.from_storage(SK, &old).await.unwrap();
    assert_eq!(
        (pt.as_slice(), info.key.as_str(), info.stale),
        (&b"v"[..], "k1", true)
    );
    let (_, hash) = config::load(&f.path, ParseOptions::default()).unwrap();
    assert_eq!(s.hash, hash);
    assert_eq!((s.failures, s.last_error.clone()), (0, None));
    assert!(s.last_reload.is_some());
    // Later ticks see the same hash and do not rebuild.
    let n = s.checks;
    wait_status(&mut rx, "more ticks", |s| s.checks >= n + 2).await;
    assert_eq!((f.slot.count(), f.reloader.status().reloads), (1, 1));
}

#[tokio::test]
async fn an_unchanged_file_is_never_rebuilt() {
    let f = fixture(&aesgcm(&[("k1", K1)]), |o| {
        o.interval = Duration::from_millis(20)
    })
    .await;
    let mut rx = f.reloader.subscribe();
    wait_status(&mut rx, "ticks", |s| s.checks >= 3).await;
    // Rewriting the same bytes (a new mtime) is not a change either.
    std::fs::write(&f.path, aesgcm(&[("k1", K1)])).unwrap();
    let n = f.reloader.status().checks;
    wait_status(&mut rx, "ticks", |s| s.checks >= n + 3).await;
    assert_eq!(f.reloader.check_now().await, Some(ReloadOutcome::Unchanged));
    let s = f.reloader.status();
    assert_eq!((s.reloads, s.failures, s.last_reload), (0, 0, None));
    assert_eq!(f.slot.count(), 0);
}

#[tokio::test]
async fn invalid_files_keep_the_old_config_and_name_the_problem() {
    let f = fixture(&aesgcm(&[("k1", K1)]), |_| {}).await;
    let r = &f.reloader;
    let in_force = r.status().hash;

    // Bad key length: the error names the field and never shows the key.
    std::fs::write(&f.path, aesgcm(&[("k2", SHORT)])).unwrap();
    let e = failed(r).await;
    assert!(
        e.contains("resources[0].providers[0].aesgcm.keys[0].secret"),
        "{e}"
    );
    assert!(e.contains("expected length, got 14"), "{e}");
    assert!(!e.contains(SHORT) && e.contains("REDACTED"), "{e}");
    let s = r.status();
    assert_eq!(s.last_error.as_deref(), Some(e.as_str()));
    let (bad_hash, failures) = (s.failed_hash.clone().unwrap(), s.failures);
    assert_ne!(bad_hash, in_force);
    assert_eq!((s.hash.as_str(), failures), (in_force.as_str(), 1));

    // The same bad file again: tried again, and fails again.
    assert_eq!(failed(r).await, e);
    assert_eq!(r.status().failures, 2);

    // Unknown field.
    std::fs::write(
        &f.path,
        aesgcm(&[("k2", K2)]).replace("    providers:", "    bogus: 1\n    providers:"),
    )
    .unwrap();
    let e = failed(r).await;
    assert!(e.contains("unknown field `bogus`"), "{e}");

    // Empty file.
    std::fs::write(&f.path, "").unwrap();
    let e = failed(r).await;
    assert!(e.contains("empty"), "{e}");

    // Deleted file: no hash, a read error naming the path.
    std::fs::remove_file(&f.path).unwrap();
    let e = failed(r).await;
    assert!(
        e.contains("cannot read encryption configuration")
            && e.contains(&f.path.display().to_string()),
        "{e}"
    );
    let s = r.status();
    assert_eq!((s.failed_hash, s.failures), (None, 5));
    assert_eq!(s.hash, in_force);
    assert_eq!((s.reloads, f.slot.count()), (0, 0));

    // A later valid file is applied and clears the error.
    std::fs::write(&f.path, aesgcm(&[("k2", K2), ("k1", K1)])).unwrap();
    let Some(ReloadOutcome::Applied { hash }) = r.check_now().await else {
        panic!("{:?}", r.status());
    };
    let s = r.status();
    assert_eq!((s.hash, s.reloads, s.failures), (hash, 1, 5));
    assert_eq!((s.last_error, s.failed_hash), (None, None));
    assert!(s.last_failure.is_some());
    assert_eq!(
        f.slot.last().for_resource("secrets").write_provider(),
        ("aesgcm", "k2")
    );
}

#[tokio::test]
async fn a_bad_file_is_retried_once_per_tick_not_in_a_loop() {
    let interval = Duration::from_millis(100);
    let f = fixture(&aesgcm(&[("k1", K1)]), |o| o.interval = interval).await;
    let mut rx = f.reloader.subscribe();
    std::fs::write(&f.path, "not: [valid").unwrap();
    let start = tokio::time::Instant::now();
    // Ticks before the write found nothing to do (single-threaded test runtime: none races it).
    let before = f.reloader.status().checks;
    wait_status(&mut rx, "first failure", |s| s.failures >= 1).await;
    // A few ticks later (by condition, not a fixed sleep: a loaded machine ticks late).
    wait_status(&mut rx, "more failures", |s| s.failures >= 3).await;
    let elapsed = start.elapsed();
    let s = f.reloader.status();
    // At most one check per interval since the reloader started (plus slack for one tick).
    let most = (elapsed.as_millis() / interval.as_millis()) as u64 + 2;
    assert!(
        s.failures >= 2 && s.failures <= most,
        "{} failures in {elapsed:?}",
        s.failures
    );
    assert_eq!((s.checks - before, s.reloads), (s.failures, 0));
    // Fixed: applied at the next tick.
    std::fs::write(&f.path, aesgcm(&[("k2", K2)])).unwrap();
    wait_status(&mut rx, "reload", |s| s.reloads == 1).await;
    assert_eq!(f.slot.count(), 1);
}

#[tokio::test]
async fn kms_v2_is_not_applied_until_the_plugin_is_healthy() {
    let f = fixture(&aesgcm(&[("k1", K1)]), |o| {
        // 2 × 100 ms of KMS timeouts is below this floor: each attempt waits 500 ms.
        o.min_health_wait = Duration::from_millis(500);
    })
    .await;
    let r = &f.reloader;
    let socket = f.path.with_file_name("kms.sock");
    std::fs::write(&f.path, kms2("kw", &socket, "100ms")).unwrap();

    // Nothing listens: the attempt ends after the health wait and names the plugin.
    let start = tokio::time::Instant::now();
    let e = failed(r).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(e.contains("not healthy within 500ms"), "{e}");
    assert!(e.contains("kw (unix://") && e.contains("kms.sock"), "{e}");
    assert_eq!((f.slot.count(), r.status().reloads), (0, 0));
    assert_eq!(
        f.initial.for_resource("secrets").write_provider(),
        ("aesgcm", "k1")
    );

    // The plugin appears (its socket is linked where the configuration points).
    let p = Plugin::start(Algorithm::Aes256Gcm).await;
    std::os::unix::fs::symlink(&p.socket, &socket).unwrap();
    let Some(ReloadOutcome::Applied { .. }) = r.check_now().await else {
        panic!("{:?}", r.status());
    };
    let enc = f.slot.last();
    let t = enc.for_resource("secrets");
    assert_eq!(t.write_provider(), ("kms-v2", "kw"));
    let v = t.to_storage(SK, b"through the plugin").await.unwrap();
    assert!(v.starts_with(b"k8s:enc:kms:v2:kw:"));
    let (pt, info) = t.from_storage(SK, &v).await.unwrap();
    assert_eq!(
        (pt.as_slice(), info.stale),
        (&b"through the plugin"[..], false)
    );
    assert!(enc.kms_v2_status()[0].healthy);
    drop(enc);
    drop(f);
    p.stop().await;
}

#[tokio::test]
async fn a_plugin_that_comes_up_during_the_health_wait_is_waited_for() {
    let f = fixture(&aesgcm(&[("k1", K1)]), |o| {
        o.min_health_wait = Duration::from_secs(20);
    })
    .await;
    let socket = f.path.with_file_name("kms.sock");
    std::fs::write(&f.path, kms2("kw", &socket, "100ms")).unwrap();
    let mut rx = f.reloader.subscribe();
    let check = f.reloader.check_now();
    let bring_up = async {
        // Let the first checks fail, then start the plugin.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(f.slot.count(), 0, "applied before the plugin was up");
        let p = Plugin::start(Algorithm::Aes256Gcm).await;
        std::os::unix::fs::symlink(&p.socket, &socket).unwrap();
        p
    };
    let (outcome, p) = tokio::time::timeout(LIMIT, async { tokio::join!(check, bring_up) })
        .await
        .expect("bounded");
    assert!(
        matches!(outcome, Some(ReloadOutcome::Applied { .. })),
        "{outcome:?}"
    );
    let s = wait_status(&mut rx, "status", |s| s.reloads == 1).await;
    assert_eq!(s.failures, 0, "one attempt, no failure");
    assert_eq!(
        f.slot.last().for_resource("secrets").write_provider(),
        ("kms-v2", "kw")
    );
    drop(f);
    p.stop().await;
}

#[tokio::test]
async fn dropping_the_reloader_stops_reloading() {
    let f = fixture(&aesgcm(&[("k1", K1)]), |o| {
        o.interval = Duration::from_millis(20)
    })
    .await;
    let mut rx = f.reloader.subscribe();
    wait_status(&mut rx, "a tick", |s| s.checks >= 1).await;
    let Fixture {
        _dir,
        path,
        slot,
        reloader,
        ..
    } = f;
    drop(reloader);
    tokio::time::timeout(LIMIT, async { while rx.changed().await.is_ok() {} })
        .await
        .expect("the task ends: its status sender is dropped");
    std::fs::write(&path, aesgcm(&[("k2", K2)])).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(slot.count(), 0);
}

fn secret(name: &str, value: &[u8]) -> Secret {
    crate::support::store::secret_v("default", name, value)
}

#[tokio::test]
async fn a_store_switches_write_key_and_still_reads_old_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("encryption.yaml");
    std::fs::write(&path, aesgcm(&[("k1", K1)])).unwrap();
    let (cfg, hash) = config::load(&path, ParseOptions::default()).unwrap();
    let backend = SledBackend::open(&dir.path().join("store"), SledOptions::default()).unwrap();
    let store = Arc::new(Store::new(
        Arc::new(backend),
        Arc::new(Encryption::build(&cfg).await),
        "/registry",
    ));
    let s = store.clone();
    let reloader = reload::spawn(
        path.clone(),
        ParseOptions::default(),
        Duration::from_millis(100),
        hash,
        move |e| s.set_encryption(e),
    );
    let mut rx = reloader.subscribe();

    store.create(secret("old", b"one"), false).await.unwrap();
    let raw = |name: &str| {
        let store = store.clone();
        let key = store.storage_key(&crate::support::ns("default"), &crate::support::name(name));
        async move { store.raw_get(&key).await.unwrap().expect("stored") }
    };
    assert!(raw("old").await.value.starts_with(b"k8s:enc:aesgcm:v1:k1:"));

    std::fs::write(&path, aesgcm(&[("k2", K2), ("k1", K1)])).unwrap();
    wait_status(&mut rx, "reload", |s| s.reloads == 1).await;
    assert_eq!(
        store.encryption().for_resource("secrets").write_provider(),
        ("aesgcm", "k2")
    );

    // New writes use k2.
    store.create(secret("new", b"two"), false).await.unwrap();
    let new = raw("new").await;
    assert!(new.value.starts_with(b"k8s:enc:aesgcm:v1:k2:"));
    let (s, info) = store.decode(&new).await.unwrap();
    assert_eq!(s.data["v"].as_slice(), b"two");
    assert_eq!((info.key.as_str(), info.stale), ("k2", false));

    // The old value still reads, through k1, as stale.
    let old = raw("old").await;
    assert!(old.value.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
    let (s, info) = store.decode(&old).await.unwrap();
    assert_eq!(s.data["v"].as_slice(), b"one");
    assert_eq!((info.key.as_str(), info.stale), ("k1", true));
    let got = store
        .get(
            &crate::support::ns("default"),
            &crate::support::name("old"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(got.data["v"].as_slice(), b"one");

    // A bad edit afterwards leaves k2 in force.
    std::fs::write(&path, aesgcm(&[("k3", SHORT)])).unwrap();
    wait_status(&mut rx, "failure", |s| s.failures >= 1).await;
    assert_eq!(
        store.encryption().for_resource("secrets").write_provider(),
        ("aesgcm", "k2")
    );
    store
        .create(secret("later", b"three"), false)
        .await
        .unwrap();
    assert!(raw("later")
        .await
        .value
        .starts_with(b"k8s:enc:aesgcm:v1:k2:"));
}
