//! What retention leaves in sled's trees: a deleted key's history is removed once its delete
//! leaves the log's window (review finding 12), and stores written before that get the same
//! pruning once when opened.

use std::path::Path;

use crate::model::sled_open;
use crate::support::rev;
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
