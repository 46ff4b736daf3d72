//! Gets, lists and watches served through the store's decoded-object cache give exactly what
//! decrypting every object again gives: the same pages cold and warm, every write seen at once,
//! nothing served once the configuration no longer holds the key, the same events to every
//! watcher. Migrations in pages (their rewrites sent to the backend a page at a time) keep every
//! object readable and leave nothing stale.

use std::sync::Arc;

use crate::support::store::{secret_v, sled_store};
use crate::support::{config_text, keys_provider, name, ns};
use keyward::backend::{Expect, WriteOutcome};
use keyward::encryption::{config, Encryption, ParseOptions};
use keyward::store::migrate::MigrateOptions;
use keyward::store::{ResourceVersion, Secret, Selector, Store, WatchKind};
use tokio_stream::StreamExt;

const K1: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="; // 32 bytes of '1'
const K2: &str = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI="; // 32 bytes of '2'
const NS: &str = "reads";

fn aesgcm(keys: &[(&str, &str)]) -> String {
    config_text(&keys_provider("aesgcm", keys))
}

async fn encryption(text: &str) -> Arc<Encryption> {
    let cfg = config::parse(text, ParseOptions::default()).unwrap();
    Arc::new(Encryption::build(&cfg).await)
}

fn secret(name: &str, value: &str) -> Secret {
    secret_v(NS, name, value.as_bytes())
}

/// A sled store in `dir` that keeps two versions of each Secret, encrypting with `k1`.
async fn sled_keeping_two(dir: &std::path::Path) -> Arc<Store> {
    let opts = keyward::backend::sled::SledOptions {
        history_per_key: 2,
        ..Default::default()
    };
    crate::support::store::sled_store_with(&dir.join("store"), &aesgcm(&[("k1", K1)]), opts).await
}

/// Every page of the namespace, `limit` at a time: the items, and how many pages there were.
async fn pages(store: &Store, limit: usize) -> (Vec<Arc<Secret>>, usize) {
    let (mut items, mut n, mut token) = (Vec::new(), 0, None::<String>);
    loop {
        let page = store
            .list(Some(&ns(NS)), &Selector::default(), limit, token.as_deref())
            .await
            .unwrap();
        assert!(page.errors.is_empty(), "{:?}", page.errors);
        items.extend(page.items);
        n += 1;
        match page.continue_token {
            Some(t) => token = Some(t),
            None => return (items, n),
        }
    }
}

#[tokio::test]
async fn list_pages_are_the_same_cold_warm_and_after_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir.path().join("store"), &aesgcm(&[("k1", K1)])).await;
    for i in 0..25 {
        store
            .create(secret(&format!("s{i:02}"), &format!("v{i}")), false)
            .await
            .unwrap();
    }
    let (cold, n) = pages(&store, 10).await;
    assert_eq!((cold.len(), n), (25, 3));
    let (warm, _) = pages(&store, 10).await;
    assert_eq!(cold, warm, "a warm cache gives the same pages");
    let (whole, _) = pages(&store, 0).await;
    assert_eq!(cold, whole, "and so does one page of everything");
    for (s, i) in cold.iter().zip(0..) {
        let got = store
            .get(&ns(NS), &name(&s.metadata.name), None)
            .await
            .unwrap();
        assert_eq!(**s, got, "a listed object is what a get decrypts ({i})");
    }

    let mut changed = Secret::clone(&cold[3]);
    changed.data.insert(
        "v".into(),
        keyward::store::model::SecretBytes::new(b"new".to_vec()),
    );
    let changed = store.update(changed, false).await.unwrap();
    store
        .delete(&ns(NS), &name("s05"), &Default::default())
        .await
        .unwrap();
    let (after, _) = pages(&store, 10).await;
    assert_eq!(after.len(), 24);
    assert_eq!(*after[3], changed, "an update is seen at once");
    assert_eq!(after[3].data["v"].as_slice(), b"new");
    assert!(
        after.iter().all(|s| s.metadata.name != "s05"),
        "a delete too"
    );
    let untouched: Vec<&Arc<Secret>> = cold
        .iter()
        .filter(|s| !["s03", "s05"].contains(&s.metadata.name.as_str()))
        .collect();
    let still: Vec<&Arc<Secret>> = after.iter().filter(|s| s.metadata.name != "s03").collect();
    assert_eq!(untouched, still);
}

#[tokio::test]
async fn a_key_removed_from_the_configuration_stops_lists_and_gets_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sled = sled_store(&dir.path().join("sled"), &aesgcm(&[("k1", K1)])).await;
    // The log engine knows the current revision from memory: its gets need no read at all
    // when the cache holds the version.
    let log = keyward::backend::LogBackend::open(
        &dir.path().join("log"),
        keyward::backend::LogOptions::default(),
    )
    .unwrap();
    let log = Store::new(
        Arc::new(log),
        encryption(&aesgcm(&[("k1", K1)])).await,
        "/registry",
    );
    for store in [&*sled, &log] {
        for i in 0..3 {
            store
                .create(secret(&format!("s{i}"), "v"), false)
                .await
                .unwrap();
        }
        assert_eq!(pages(store, 0).await.0.len(), 3, "decoded once, cached");
        let (space, s1) = (ns(NS), name("s1"));
        let get = || store.get(&space, &s1, None);
        assert_eq!(get().await.unwrap().data["v"].as_slice(), b"v");

        store.set_encryption(encryption(&aesgcm(&[("k2", K2)])).await);
        let page = store
            .list(Some(&ns(NS)), &Selector::default(), 0, None)
            .await
            .unwrap();
        assert!(page.items.is_empty(), "nothing served without the key");
        assert_eq!(page.errors.len(), 3, "{:?}", page.errors);
        assert!(get().await.is_err(), "a get is not served without the key");

        store.set_encryption(encryption(&aesgcm(&[("k2", K2), ("k1", K1)])).await);
        assert_eq!(pages(store, 0).await.0.len(), 3, "readable again with it");
        assert_eq!(get().await.unwrap().data["v"].as_slice(), b"v");
    }
}

#[tokio::test]
async fn every_watcher_gets_the_same_events_as_a_get() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir.path().join("store"), &aesgcm(&[("k1", K1)])).await;
    let created = store.create(secret("w", "one"), false).await.unwrap();
    let from = ResourceVersion::try_from(created.metadata.resource_version.as_str()).unwrap();
    let mut a = store
        .watch(Some(&ns(NS)), Selector::default(), from)
        .await
        .unwrap();
    let mut b = store
        .watch(Some(&ns(NS)), Selector::default(), from)
        .await
        .unwrap();
    let mut labelled = store
        .watch(Some(&ns(NS)), Selector::parse("app=x").unwrap(), from)
        .await
        .unwrap();

    let mut s = created.clone();
    s.metadata.labels.insert("app".into(), "x".into());
    let updated = store.update(s, false).await.unwrap();
    let mut s = updated.clone();
    s.metadata.labels.clear();
    let unlabelled = store.update(s, false).await.unwrap();
    let deleted = store
        .delete(&ns(NS), &name("w"), &Default::default())
        .await
        .unwrap();
    let current = store.backend().current_revision().await.unwrap();

    for w in [&mut a, &mut b] {
        let e = w.next().await.unwrap().unwrap();
        assert_eq!((e.kind, &*e.object), (WatchKind::Modified, &updated));
        let e = w.next().await.unwrap().unwrap();
        assert_eq!((e.kind, &*e.object), (WatchKind::Modified, &unlabelled));
        let e = w.next().await.unwrap().unwrap();
        assert_eq!(e.kind, WatchKind::Deleted);
        assert_eq!(e.object.metadata.resource_version, current.to_string());
        let mut expect = deleted.clone();
        expect.metadata.resource_version = current.to_string();
        assert_eq!(*e.object, expect);
    }
    // Through a selector: added when it starts matching, deleted when it stops.
    let e = labelled.next().await.unwrap().unwrap();
    assert_eq!((e.kind, &*e.object), (WatchKind::Added, &updated));
    // The deletion carries the version that matched (as kube-apiserver's watchers send it),
    // at the revision of the change that made it stop matching.
    let e = labelled.next().await.unwrap().unwrap();
    assert_eq!(e.kind, WatchKind::Deleted);
    let mut expect = updated.clone();
    expect
        .metadata
        .resource_version
        .clone_from(&unlabelled.metadata.resource_version);
    assert_eq!(*e.object, expect);
}

/// A migration reads its pages at one revision; when a Secret is written more often than the
/// store keeps versions of it (`--history`) meanwhile, that revision can no longer be read, and
/// the migration goes on at the current revision instead of failing (its rewrites are
/// conditional): every object is still visited once and rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_outlasting_a_hot_secrets_history_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_keeping_two(dir.path()).await;
    const N: usize = 40;
    for i in 0..N {
        store
            .create(secret(&format!("m{i:04}"), "v"), false)
            .await
            .unwrap();
    }
    store.set_encryption(encryption(&aesgcm(&[("k2", K2), ("k1", K1)])).await);
    let rt = tokio::runtime::Handle::current();
    let hot = store.get(&ns(NS), &name("m0039"), None).await.unwrap();
    let mut pages = 0;
    let done = store
        .migrate(
            MigrateOptions {
                batch: 5,
                ..MigrateOptions::default()
            },
            |_| {
                pages += 1;
                if pages == 2 {
                    // The last Secret, not yet visited, written five times: past its history.
                    tokio::task::block_in_place(|| {
                        rt.block_on(async {
                            for i in 0..5 {
                                let mut s = hot.clone();
                                s.metadata.resource_version.clear();
                                s.data.insert(
                                    "v".into(),
                                    keyward::store::model::SecretBytes::new(
                                        format!("w{i}").into_bytes(),
                                    ),
                                );
                                store.update(s, false).await.unwrap();
                            }
                        })
                    });
                }
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (done.total, done.done, done.failed),
        (N as u64, N as u64, 0),
        "{done:?}"
    );
    let cov = store.encryption_coverage(false).await.unwrap();
    assert_eq!((cov.stale, cov.undecryptable), (0, 0));
    assert_eq!(
        store.get(&ns(NS), &name("m0039"), None).await.unwrap().data["v"].as_slice(),
        b"w4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_in_pages_keeps_every_object_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir.path().join("store"), &aesgcm(&[("k1", K1)])).await;
    const N: usize = 600;
    for i in 0..N {
        store
            .create(secret(&format!("m{i:04}"), &format!("v{i}")), false)
            .await
            .unwrap();
    }
    // One object no provider can read: reported, left alone, never rewritten.
    let junk = store.storage_key(&ns(NS), &name("zz-junk"));
    let put = store
        .backend()
        .put(
            junk.as_bytes(),
            b"k8s:enc:aesgcm:v1:k9:junk".to_vec(),
            Expect::Absent,
        )
        .await
        .unwrap();
    assert!(matches!(put, WriteOutcome::Applied { .. }));
    store.set_encryption(encryption(&aesgcm(&[("k2", K2), ("k1", K1)])).await);
    // Warm the decoded-object cache with the versions the migration replaces.
    let warm = store
        .list(Some(&ns(NS)), &Selector::default(), 0, None)
        .await
        .unwrap();
    assert_eq!((warm.items.len(), warm.errors.len()), (N, 1));

    for batch in [7, 256] {
        let done = store
            .migrate(
                MigrateOptions {
                    batch,
                    ..MigrateOptions::default()
                },
                |_| {},
            )
            .await
            .unwrap();
        assert_eq!(
            (done.total, done.done, done.failed),
            (N as u64 + 1, N as u64 + 1, 1)
        );
        if batch == 7 {
            assert_eq!(done.rewritten, N as u64, "{done:?}");
        } else {
            assert_eq!(done.rewritten, 0, "nothing left to rewrite: {done:?}");
        }
        let cov = store.encryption_coverage(false).await.unwrap();
        assert_eq!(
            (cov.stale, cov.undecryptable),
            (0, 1),
            "only the junk is left"
        );
    }
    for i in 0..N {
        let key = store.storage_key(&ns(NS), &name(&format!("m{i:04}")));
        let raw = store.raw_get(&key).await.unwrap().expect("stored");
        assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:k2:"), "m{i:04}");
    }
    // Readable with k2 alone, and every value is what was written.
    store.set_encryption(encryption(&aesgcm(&[("k2", K2)])).await);
    let page = store
        .list(Some(&ns(NS)), &Selector::default(), 0, None)
        .await
        .unwrap();
    assert_eq!((page.items.len(), page.errors.len()), (N, 1));
    for (s, i) in page.items.iter().zip(0..) {
        assert_eq!(s.metadata.name, format!("m{i:04}"));
        assert_eq!(s.data["v"].as_slice(), format!("v{i}").as_bytes());
    }
}

/// A backend whose `get` returns every value with its last byte flipped while `corrupt` is set:
/// whatever the store decrypts from a get then fails, and whatever it takes from its cache does
/// not.
struct CorruptGets {
    inner: Arc<dyn keyward::backend::Backend>,
    corrupt: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl keyward::backend::Backend for CorruptGets {
    async fn get(
        &self,
        key: &[u8],
        revision: Option<keyward::backend::Revision>,
    ) -> Result<
        (
            Option<keyward::backend::KeyValue>,
            keyward::backend::Revision,
        ),
        keyward::backend::BackendError,
    > {
        let (mut kv, rev) = self.inner.get(key, revision).await?;
        if self.corrupt.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(last) = kv.as_mut().and_then(|kv| kv.value.last_mut()) {
                *last ^= 1;
            }
        }
        Ok((kv, rev))
    }
    async fn range(
        &self,
        req: keyward::backend::RangeRequest,
    ) -> Result<keyward::backend::RangeResponse, keyward::backend::BackendError> {
        self.inner.range(req).await
    }
    async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expect: Expect,
    ) -> Result<WriteOutcome, keyward::backend::BackendError> {
        self.inner.put(key, value, expect).await
    }
    async fn delete(
        &self,
        key: &[u8],
        expect: Expect,
    ) -> Result<WriteOutcome, keyward::backend::BackendError> {
        self.inner.delete(key, expect).await
    }
    async fn watch_with_progress(
        &self,
        prefix: &[u8],
        from: Option<keyward::backend::Revision>,
    ) -> Result<
        (
            keyward::backend::WatchStream,
            Option<keyward::backend::WatchProgress>,
        ),
        keyward::backend::BackendError,
    > {
        self.inner.watch_with_progress(prefix, from).await
    }
    async fn current_revision(
        &self,
    ) -> Result<keyward::backend::Revision, keyward::backend::BackendError> {
        self.inner.current_revision().await
    }
    async fn compact(
        &self,
        revision: keyward::backend::Revision,
    ) -> Result<(), keyward::backend::BackendError> {
        self.inner.compact(revision).await
    }
    async fn compacted_revision(
        &self,
    ) -> Result<keyward::backend::Revision, keyward::backend::BackendError> {
        self.inner.compacted_revision().await
    }
}

#[tokio::test]
async fn an_update_takes_the_version_it_replaces_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let sled = sled_store(&dir.path().join("store"), &aesgcm(&[("k1", K1)])).await;
    let backend = Arc::new(CorruptGets {
        inner: sled.backend().clone(),
        corrupt: false.into(),
    });
    let store = Store::new(
        backend.clone(),
        encryption(&aesgcm(&[("k1", K1)])).await,
        "/registry",
    );
    let created = store.create(secret("u", "one"), false).await.unwrap();
    backend
        .corrupt
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // A store without that cache decrypts what the backend returns, and fails.
    let uncached = Store::new(
        backend.clone(),
        encryption(&aesgcm(&[("k1", K1)])).await,
        "/registry",
    );
    assert!(
        uncached.get(&ns(NS), &name("u"), None).await.is_err(),
        "the backend's bytes are corrupt"
    );
    // The create left what it wrote in the cache: a get takes it from there.
    let got = store.get(&ns(NS), &name("u"), None).await.unwrap();
    assert_eq!(got.data, created.data);
    assert_eq!(
        got.metadata.resource_version,
        created.metadata.resource_version
    );

    // Nor does the update decrypt it.
    let mut next = created.clone();
    next.data.insert(
        "v".into(),
        keyward::store::model::SecretBytes::new(b"two".to_vec()),
    );
    let updated = store.update(next.clone(), false).await.unwrap();
    assert_eq!(updated.data["v"].as_slice(), b"two");
    assert_eq!(updated.metadata.uid, created.metadata.uid);
    // And so did the update, for the next one.
    next.metadata.resource_version = updated.metadata.resource_version.clone();
    next.data.insert(
        "v".into(),
        keyward::store::model::SecretBytes::new(b"three".to_vec()),
    );
    let third = store.update(next.clone(), false).await.unwrap();
    assert_eq!(third.data["v"].as_slice(), b"three");

    // An update that changes nothing still reads the stored value, to see whether it is stale.
    next.metadata.resource_version = third.metadata.resource_version.clone();
    assert!(store.update(next.clone(), false).await.is_err());

    backend
        .corrupt
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let got = store.get(&ns(NS), &name("u"), None).await.unwrap();
    assert_eq!(got, third, "what was cached is what a get decrypts");
    let unchanged = store.update(next, false).await.unwrap();
    assert_eq!(unchanged, third, "nothing written");
}

#[tokio::test]
async fn what_writes_cache_is_what_decrypting_gives() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir.path().join("store"), &aesgcm(&[("k1", K1)])).await;
    let mut s = secret("full", "v");
    s.metadata.labels.insert("app".into(), "web".into());
    s.metadata.annotations.insert("note".into(), "x".into());
    s.metadata.finalizers.push("example.com/keep".into());
    s.type_ = "example.com/custom".into();
    s.string_data.insert(
        "from-string".into(),
        keyward::store::model::SecretString(String::from("s").into()),
    );
    let created = store.create(s, false).await.unwrap();
    let mut next = created.clone();
    next.metadata.labels.insert("tier".into(), "1".into());
    next.immutable = Some(false);
    let updated = store.update(next, false).await.unwrap();
    let key = store.storage_key(&ns(NS), &name("full"));
    for (written, rev) in [
        (&created, &created.metadata.resource_version),
        (&updated, &updated.metadata.resource_version),
    ] {
        let rev = ResourceVersion::try_from(rev.as_str())
            .unwrap()
            .exact("rv")
            .unwrap()
            .unwrap();
        let (kv, _) = store
            .backend()
            .get(key.as_bytes(), Some(rev))
            .await
            .unwrap();
        let (decoded, _) = store.decode(&kv.unwrap()).await.unwrap();
        assert_eq!(&decoded, written);
    }
    let page = store
        .list(Some(&ns(NS)), &Selector::default(), 0, None)
        .await
        .unwrap();
    assert_eq!(*page.items[0], updated, "a list serves the cached write");
}

/// A watch without a revision starts with every Secret as ADDED, a page at a time as its reader
/// takes them, however many there are (more than any buffer between the store and the reader),
/// then follows; it stops counting in `watchers` when dropped.
#[tokio::test]
async fn a_watch_without_a_revision_starts_with_more_secrets_than_any_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir.path().join("store"), &aesgcm(&[("k1", K1)])).await;
    let creates: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create(secret(&format!("s{i:03}"), "v"), false)
                    .await
                    .unwrap()
            })
        })
        .collect();
    for c in creates {
        c.await.unwrap();
    }
    let mut w = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        store.watch(Some(&ns(NS)), Selector::default(), ResourceVersion::Unset),
    )
    .await
    .expect("the watch starts without waiting for a reader")
    .unwrap();
    assert_eq!(store.watchers(), 1);
    for i in 0..300 {
        let e = w.next().await.unwrap().unwrap();
        assert_eq!(e.kind, WatchKind::Added);
        assert_eq!(e.object.metadata.name, format!("s{i:03}"));
    }
    let live = store.create(secret("late", "v"), false).await.unwrap();
    let e = w.next().await.unwrap().unwrap();
    assert_eq!((e.kind, &*e.object), (WatchKind::Added, &live));
    drop(w);
    assert_eq!(store.watchers(), 0);
}

/// A watch with bookmarks says how far the store has got: where its starting list ends (the
/// list's revision, not its last object's), then changes it leaves out (another namespace).
/// A watch without them sends none.
#[tokio::test]
async fn bookmarks_follow_the_store_not_the_last_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(&dir.path().join("store"), &aesgcm(&[("k1", K1)])).await;
    store.create(secret("a", "one"), false).await.unwrap();
    let elsewhere = store
        .create(secret_v("elsewhere", "b", b"x"), false)
        .await
        .unwrap();
    let mut w = store
        .watch_with_bookmarks(Some(&ns(NS)), Selector::default(), ResourceVersion::Unset)
        .await
        .unwrap();
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!(
        (ev.kind, ev.object.metadata.name.as_str()),
        (WatchKind::Added, "a")
    );
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!(
        (ev.kind, &ev.object.metadata.resource_version),
        (WatchKind::Bookmark, &elsewhere.metadata.resource_version)
    );
    let later = store
        .create(secret_v("elsewhere", "c", b"y"), false)
        .await
        .unwrap();
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), w.next())
        .await
        .expect("a bookmark within the progress check's second")
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.kind, &ev.object.metadata.resource_version),
        (WatchKind::Bookmark, &later.metadata.resource_version)
    );

    let mut plain = store
        .watch(Some(&ns(NS)), Selector::default(), ResourceVersion::Unset)
        .await
        .unwrap();
    assert_eq!(plain.next().await.unwrap().unwrap().kind, WatchKind::Added);
    store
        .create(secret_v("elsewhere", "d", b"z"), false)
        .await
        .unwrap();
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(2500), plain.next()).await;
    assert!(quiet.is_err(), "no bookmark without asking: {quiet:?}");

    // A starting list of several pages: the bookmark comes after the last one.
    let mut last = String::new();
    for i in 0..250 {
        let s = secret_v("paged", &format!("p{i:03}"), b"v");
        last = store
            .create(s, false)
            .await
            .unwrap()
            .metadata
            .resource_version;
    }
    let mut w = store
        .watch_with_bookmarks(
            Some(&ns("paged")),
            Selector::default(),
            ResourceVersion::Unset,
        )
        .await
        .unwrap();
    // A later change elsewhere: progress moves past the list, the list's bookmark does not.
    store
        .create(secret_v("elsewhere", "e", b"w"), false)
        .await
        .unwrap();
    for i in 0..250 {
        let ev = w.next().await.unwrap().unwrap();
        assert_eq!(ev.kind, WatchKind::Added, "event {i}");
    }
    let ev = w.next().await.unwrap().unwrap();
    assert_eq!(
        (ev.kind, ev.object.metadata.resource_version.as_str()),
        (WatchKind::Bookmark, last.as_str())
    );
}

/// A list of one name at a past revision (a field selector's `metadata.name`) reads that key
/// alone, as kube-apiserver's registry does: another Secret written more often than the history
/// keeps since then does not make it "too old"; a list of the whole namespace at that revision,
/// which needs that Secret's pruned version, is.
#[tokio::test]
async fn a_past_list_of_one_name_is_not_expired_by_another_secrets_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_keeping_two(dir.path()).await;
    let quiet = store.create(secret("a-quiet", "v"), false).await.unwrap();
    store.create(secret("b-hot", "0"), false).await.unwrap();
    let past = keyward::backend::Revision::new(
        quiet.metadata.resource_version.parse::<i64>().unwrap() + 1,
    )
    .unwrap();
    for i in 1..=5 {
        let mut hot = store.get(&ns(NS), &name("b-hot"), None).await.unwrap();
        hot.data.insert(
            "k".into(),
            keyward::store::model::SecretBytes::new(i.to_string().into_bytes()),
        );
        store.update(hot, false).await.unwrap();
    }
    let scope = keyward::store::Scope::from(&ns(NS));
    let one = store
        .list_matching(
            &scope,
            &Selector::default(),
            |_| true,
            Some("a-quiet"),
            0,
            None,
            Some(past),
        )
        .await
        .unwrap();
    let names: Vec<&str> = one.items.iter().map(|s| s.metadata.name.as_str()).collect();
    assert_eq!(names, ["a-quiet"]);
    assert_eq!(one.resource_version, past);
    let all = store
        .list_at(&scope, &Selector::default(), 0, None, Some(past))
        .await
        .unwrap_err();
    assert!(
        matches!(all, keyward::store::StoreError::Gone(_)),
        "{all:?}"
    );
}
