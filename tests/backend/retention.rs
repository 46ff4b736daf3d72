//! What retention leaves in sled's trees: a deleted key's history is removed once its delete
//! leaves the log's window (review finding 12), and stores written before that get the same
//! pruning once when opened.

use std::path::Path;

use crate::support::rev;
use crate::support::sled_open;
use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::backend::{Backend, BackendError, Expect, WriteOutcome};

fn applied(outcome: Result<WriteOutcome, BackendError>) -> keyward::backend::Revision {
    match outcome {
        Ok(WriteOutcome::Applied { revision, .. }) => revision,
        other => panic!("expected an applied write, got {other:?}"),
    }
}

/// Every history and log entry in the store at `path` that mentions `needle` (in its key or its
/// value), read from sled's trees directly.
fn entries_mentioning(path: &Path, needle: &[u8]) -> Vec<String> {
    let db = sled_open(path);
    let mut found = Vec::new();
    for tree in ["history", "log", "kv"] {
        for item in db.open_tree(tree).expect("tree").iter() {
            let (k, v) = item.expect("entry");
            let hit = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            if hit(&k) || hit(&v) {
                found.push(format!("{tree}: {:?}", String::from_utf8_lossy(&k)));
            }
        }
    }
    found
}

#[tokio::test]
async fn a_deleted_keys_history_is_removed_when_its_delete_leaves_the_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    let opts = SledOptions {
        layer_bytes: keyward::backend::sled::DEFAULT_LAYER_BYTES,
        history_per_key: 10,
        log_retention: 5,
    };
    let backend = SledBackend::open(&path, opts).expect("open");
    let first = applied(
        backend
            .put(b"gone", b"leaked-credential-1".to_vec(), Expect::Absent)
            .await,
    );
    applied(
        backend
            .put(b"gone", b"leaked-credential-2".to_vec(), Expect::Any)
            .await,
    );
    let deleted = applied(backend.delete(b"gone", Expect::Any).await);
    // Inside the window, the old versions are still history.
    let (old, _) = backend.get(b"gone", Some(first)).await.expect("old read");
    assert_eq!(old.expect("version 1").value, b"leaked-credential-1");

    // Five more revisions move the window past the delete.
    for i in 0..5u8 {
        applied(backend.put(b"other", vec![i], Expect::Any).await);
    }
    let compacted = backend.compacted_revision().await.expect("compacted");
    assert!(compacted > deleted, "{compacted} should be past {deleted}");
    assert!(matches!(
        backend.get(b"gone", Some(first)).await,
        Err(BackendError::Compacted { .. })
    ));
    drop(backend);
    assert_eq!(
        entries_mentioning(&path, b"gone"),
        Vec::<String>::new(),
        "the deleted key is still in sled"
    );
    assert_eq!(
        entries_mentioning(&path, b"leaked-credential"),
        Vec::<String>::new()
    );

    // A name used again after its history was removed starts a fresh history.
    let backend = SledBackend::open(&path, opts).expect("reopen");
    let again = applied(backend.put(b"gone", b"new".to_vec(), Expect::Absent).await);
    let (kv, _) = backend.get(b"gone", None).await.expect("read");
    let kv = kv.expect("recreated");
    assert_eq!((kv.create_revision, kv.version), (Some(again), 1));
}

#[tokio::test]
async fn stores_from_before_get_their_deleted_history_pruned_once_on_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    // No log retention: nothing is compacted while writing.
    let opts = SledOptions {
        layer_bytes: keyward::backend::sled::DEFAULT_LAYER_BYTES,
        history_per_key: 10,
        log_retention: 0,
    };
    let backend = SledBackend::open(&path, opts).expect("open");
    applied(
        backend
            .put(b"gone", b"leaked-credential".to_vec(), Expect::Absent)
            .await,
    );
    applied(backend.delete(b"gone", Expect::Any).await);
    let kept = applied(backend.put(b"kept", b"v1".to_vec(), Expect::Absent).await);
    let last = applied(backend.put(b"kept", b"v2".to_vec(), Expect::Any).await);
    drop(backend);
    assert!(!entries_mentioning(&path, b"leaked-credential").is_empty());

    // Make it look like a store written by an older build whose compacted revision rose past
    // the delete: compacted revision moved to the last write, and no record of the pass.
    {
        let db = sled_open(&path);
        let meta = db.open_tree("meta").expect("meta");
        meta.insert("compacted_revision", &last.get().to_be_bytes())
            .expect("compacted");
        meta.remove("deleted_history_pruned")
            .expect("remove marker");
        db.open_tree("log")
            .expect("log")
            .clear()
            .expect("clear log");
        db.flush().expect("flush");
    }
    let backend = SledBackend::open(&path, opts).expect("reopen");
    assert_eq!(
        backend.compacted_revision().await.expect("compacted"),
        rev(last.get())
    );
    let (now, _) = backend.get(b"kept", None).await.expect("read");
    assert_eq!(now.expect("kept").value, b"v2");
    assert!(matches!(
        backend.get(b"kept", Some(kept)).await,
        Err(BackendError::Compacted { .. })
    ));
    drop(backend);
    assert_eq!(
        entries_mentioning(&path, b"gone"),
        Vec::<String>::new(),
        "the pass on open did not prune the deleted key"
    );
}

/// The history entries (`history` tree) of `key` in the store at `path`: (revision, value).
fn history_of(path: &Path, key: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let db = sled_open(path);
    let mut prefix = key.to_vec();
    prefix.extend_from_slice(&[0, 1]);
    db.open_tree("history")
        .expect("history")
        .scan_prefix(&prefix)
        .map(|item| {
            let (k, v) = item.expect("entry");
            let rev: [u8; 8] = k[prefix.len()..].try_into().expect("revision");
            (i64::from_be_bytes(rev), v.to_vec())
        })
        .collect()
}

#[tokio::test]
async fn a_current_version_is_only_in_kv_and_older_ones_in_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    let opts = SledOptions {
        layer_bytes: keyward::backend::sled::DEFAULT_LAYER_BYTES,
        history_per_key: 3,
        log_retention: 0,
    };
    let backend = SledBackend::open(&path, opts).expect("open");
    let first = applied(backend.put(b"k", b"v1".to_vec(), Expect::Absent).await);
    applied(backend.put(b"once", b"only".to_vec(), Expect::Absent).await);
    drop(backend);
    assert_eq!(
        history_of(&path, b"k"),
        Vec::new(),
        "written once: no history"
    );
    assert_eq!(history_of(&path, b"once"), Vec::new());

    let backend = SledBackend::open(&path, opts).expect("reopen");
    let second = applied(backend.put(b"k", b"v2".to_vec(), Expect::Any).await);
    drop(backend);
    let history = history_of(&path, b"k");
    assert_eq!(
        history.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        vec![first.get()],
        "the replaced version moved to history"
    );
    assert!(history[0].1.ends_with(b"v1"));

    // Reads at past revisions and ranges merge `kv` and `history`.
    let backend = SledBackend::open(&path, opts).expect("reopen");
    let (at_first, _) = backend.get(b"k", Some(first)).await.expect("read");
    assert_eq!(at_first.expect("v1").value, b"v1");
    let (at_second, _) = backend.get(b"k", Some(second)).await.expect("read");
    assert_eq!(at_second.expect("v2").value, b"v2");
    let range = |revision| keyward::backend::RangeRequest {
        start: Vec::new(),
        end: Some(vec![0xff]),
        limit: 0,
        revision: Some(revision),
    };
    let values = |kvs: Vec<keyward::backend::KeyValue>| {
        kvs.into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect::<Vec<_>>()
    };
    let at = backend.range(range(first)).await.expect("range");
    assert_eq!(values(at.kvs), vec![(b"k".to_vec(), b"v1".to_vec())]);
    let at = backend.range(range(second)).await.expect("range");
    assert_eq!(
        values(at.kvs),
        vec![
            (b"k".to_vec(), b"v2".to_vec()),
            (b"once".to_vec(), b"only".to_vec())
        ]
    );
    // Beyond `history_per_key` versions the oldest is pruned and reads below it fail.
    for v in [b"v3", b"v4"] {
        applied(backend.put(b"k", v.to_vec(), Expect::Any).await);
    }
    assert!(matches!(
        backend.get(b"k", Some(first)).await,
        Err(BackendError::Compacted { .. })
    ));
    let (at_second, _) = backend.get(b"k", Some(second)).await.expect("read");
    assert_eq!(at_second.expect("v2").value, b"v2");
}

#[tokio::test]
async fn a_format_2_store_with_current_versions_in_history_reads_the_same_after_the_upgrade() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    let opts = SledOptions {
        layer_bytes: keyward::backend::sled::DEFAULT_LAYER_BYTES,
        history_per_key: 2,
        log_retention: 0,
    };
    let backend = SledBackend::open(&path, opts).expect("open");
    let first = applied(backend.put(b"k", b"v1".to_vec(), Expect::Absent).await);
    let second = applied(backend.put(b"k", b"v2".to_vec(), Expect::Any).await);
    let gone = applied(backend.put(b"gone", b"g".to_vec(), Expect::Absent).await);
    let deleted = applied(backend.delete(b"gone", Expect::Any).await);
    drop(backend);
    // Format 2 also kept the current version in `history`.
    {
        let db = sled_open(&path);
        let kv = db.open_tree("kv").expect("kv");
        let history = db.open_tree("history").expect("history");
        let record = kv.get(b"k").expect("get").expect("current");
        let mut hkey = b"k\x00\x01".to_vec();
        hkey.extend_from_slice(&second.get().to_be_bytes());
        history.insert(hkey, record).expect("insert");
        db.open_tree("meta")
            .expect("meta")
            .insert("format_version", &2u32.to_be_bytes())
            .expect("version");
        db.flush().expect("flush");
    }
    let backend = SledBackend::open(&path, opts).expect("upgrade");
    let read = |revision| {
        let backend = &backend;
        async move {
            backend
                .get(b"k", Some(revision))
                .await
                .expect("read")
                .0
                .map(|kv| kv.value)
        }
    };
    assert_eq!(read(first).await, Some(b"v1".to_vec()));
    assert_eq!(read(second).await, Some(b"v2".to_vec()));
    let (g, _) = backend.get(b"gone", Some(gone)).await.expect("read");
    assert_eq!(g.expect("before the delete").value, b"g");
    assert!(backend
        .get(b"gone", Some(deleted))
        .await
        .expect("read")
        .0
        .is_none());
    // Another version: v1 is no longer readable (two kept) but stays for the log (no log
    // window here: the log keeps every event, whose values are the versions), v2 moves to
    // history (where it already was).
    let third = applied(backend.put(b"k", b"v3".to_vec(), Expect::Any).await);
    assert!(matches!(
        backend.get(b"k", Some(first)).await,
        Err(BackendError::Compacted { .. })
    ));
    assert_eq!(read(second).await, Some(b"v2".to_vec()));
    assert_eq!(read(third).await, Some(b"v3".to_vec()));
    drop(backend);
    assert_eq!(
        history_of(&path, b"k")
            .iter()
            .map(|(r, _)| *r)
            .collect::<Vec<_>>(),
        vec![0, first.get(), second.get()],
        "the floor marker, v1 (for the log) and v2"
    );
}

#[tokio::test]
async fn versions_below_the_floor_stay_while_the_log_needs_them_then_go() {
    use tokio_stream::StreamExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    let opts = SledOptions {
        layer_bytes: keyward::backend::sled::DEFAULT_LAYER_BYTES,
        history_per_key: 2,
        log_retention: 8,
    };
    let backend = SledBackend::open(&path, opts).expect("open");
    let mut revisions = Vec::new();
    for i in 0..6u8 {
        revisions.push(applied(
            backend.put(b"hot", vec![b'a' + i], Expect::Any).await,
        ));
    }
    // Only two versions are readable, but the log's events replay with their values and the
    // values they replaced.
    assert!(matches!(
        backend.get(b"hot", Some(revisions[3])).await,
        Err(BackendError::Compacted { .. })
    ));
    let from = backend
        .compacted_revision()
        .await
        .expect("compacted")
        .max(revisions[0]);
    let mut stream = backend.watch(b"", Some(from)).await.expect("watch");
    for (i, revision) in revisions.iter().enumerate() {
        if *revision < from {
            continue;
        }
        let event = stream.next().await.expect("event").expect("no error");
        assert_eq!(event.kv.mod_revision, *revision);
        assert_eq!(event.kv.value, vec![b'a' + i as u8]);
        match event.prev {
            None => assert_eq!(i, 0, "only the first put created the key"),
            Some(prev) => assert_eq!(prev.value, vec![b'a' + i as u8 - 1]),
        }
    }
    drop(stream);
    drop(backend);
    assert!(history_of(&path, b"hot").len() > 2, "kept for the log");

    // Once the window has moved past them, they go: the current version (in `kv`) is all
    // that reads at the compacted revision or later can see.
    let backend = SledBackend::open(&path, opts).expect("reopen");
    for i in 0..10u8 {
        applied(backend.put(b"other", vec![i], Expect::Any).await);
    }
    drop(backend);
    let left: Vec<i64> = history_of(&path, b"hot").iter().map(|(r, _)| *r).collect();
    assert_eq!(
        left,
        Vec::<i64>::new(),
        "pruned once the window moved past them"
    );
    let backend = SledBackend::open(&path, opts).expect("reopen");
    let (now, _) = backend.get(b"hot", None).await.expect("read");
    assert_eq!(now.expect("current").value, b"f");
}

/// The log's entries in sled: (first, last) revision of each, read from sled directly.
fn log_spans(path: &Path) -> Vec<(i64, i64)> {
    let db = sled_open(path);
    let rev = |b: &[u8]| i64::from_be_bytes(b.try_into().expect("8 bytes"));
    db.open_tree("log")
        .expect("log")
        .iter()
        .map(|item| {
            let (k, _) = item.expect("entry");
            match k.len() {
                8 => (rev(&k), rev(&k)),
                16 => (rev(&k[..8]), rev(&k[8..])),
                n => panic!("log key of {n} bytes"),
            }
        })
        .collect()
}

#[tokio::test]
async fn the_log_is_chunked_in_sled_and_a_format_4_store_with_one_entry_per_revision_replays() {
    use tokio_stream::StreamExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    let opts = SledOptions {
        layer_bytes: keyward::backend::sled::DEFAULT_LAYER_BYTES,
        history_per_key: 10,
        log_retention: 30,
    };
    let backend = SledBackend::open(&path, opts).expect("open");
    let mut written = Vec::new();
    for i in 0..20u8 {
        let key = [b'k', b'0' + i % 4];
        if i % 7 == 6 {
            applied(backend.delete(&key, Expect::Any).await);
            written.push((key, None));
        } else {
            applied(backend.put(&key, vec![i], Expect::Any).await);
            written.push((key, Some(vec![i])));
        }
    }
    drop(backend);
    // One layer, so one chunk for the twenty revisions (the store starts at revision 1).
    assert_eq!(log_spans(&path), vec![(2, 21)]);

    // Make it a format 4 store: one `be64(revision) -> event` entry per revision.
    {
        let db = sled_open(&path);
        let log = db.open_tree("log").expect("log");
        let (key, chunk) = log.first().expect("first").expect("the chunk");
        let mut at = 0;
        let mut revision = 2i64;
        while at < chunk.len() {
            let len = u32::from_be_bytes(chunk[at..at + 4].try_into().expect("len")) as usize;
            log.insert(revision.to_be_bytes(), &chunk[at + 4..at + 4 + len])
                .expect("insert");
            at += 4 + len;
            revision += 1;
        }
        assert_eq!(revision, 22);
        log.remove(key).expect("remove the chunk");
        db.open_tree("meta")
            .expect("meta")
            .insert("format_version", &4u32.to_be_bytes())
            .expect("version");
        db.flush().expect("flush");
    }
    assert_eq!(log_spans(&path).len(), 20);

    let backend = SledBackend::open(&path, opts).expect("upgrade");
    let replay = |from: i64, n: usize| {
        let backend = &backend;
        async move {
            let mut stream = backend.watch(b"", Some(rev(from))).await.expect("watch");
            let mut events = Vec::new();
            for _ in 0..n {
                events.push(stream.next().await.expect("event").expect("no error"));
            }
            events
        }
    };
    let events = replay(2, 20).await;
    for (i, (event, (key, value))) in events.iter().zip(&written).enumerate() {
        assert_eq!(event.kv.mod_revision.get(), i as i64 + 2);
        assert_eq!(event.kv.key, key);
        match value {
            Some(v) => assert_eq!(&event.kv.value, v),
            None => assert_eq!(event.kind, keyward::backend::EventKind::Delete),
        }
    }
    // New revisions go in chunks next to the old entries; a watch reads across both.
    for i in 0..5u8 {
        applied(backend.put(b"new", vec![i], Expect::Any).await);
    }
    let events = replay(19, 8).await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.kv.mod_revision.get())
            .collect::<Vec<_>>(),
        (19..=26).collect::<Vec<_>>()
    );
    assert_eq!(events[7].kv.value, vec![4]);
    // The window moves past the old entries: they go, and replay below the window is refused.
    for i in 0..30u8 {
        applied(backend.put(b"new", vec![i], Expect::Any).await);
    }
    let compacted = backend.compacted_revision().await.expect("compacted");
    assert_eq!(compacted.get(), 56 - 30 + 1);
    assert!(matches!(
        backend.watch(b"", Some(rev(compacted.get() - 1))).await,
        Err(BackendError::Compacted { .. })
    ));
    let events = replay(compacted.get(), 30).await;
    assert_eq!(events.last().expect("last").kv.mod_revision.get(), 56);
    drop(backend);
    // The old entries are gone, and so are the revisions that left the window while in memory.
    assert_eq!(log_spans(&path), vec![(27, 56)]);
}
