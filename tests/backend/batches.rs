//! sled's writer applies a batch together with the next one (one sled transaction for two log
//! records) when the next is already queued. Concurrent writers must leave exactly what applying
//! the same changes one at a time leaves: the same current values, the same per-key history at
//! every revision (pruned alike), the same change log with the same versions and previous
//! values, and each write acknowledged at the revision the log shows it at. With a short log
//! retention (batches are then applied one at a time whenever the log's window would reach the
//! deferred one) the same holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::support::sled_open;
use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::backend::{
    Backend, BackendError, Event, EventKind, Expect, KeyValue, RangeRequest, Revision, WriteOutcome,
};
use tokio_stream::StreamExt;

const TASKS: u64 = 16;
const WRITES_PER_TASK: u64 = 120;

/// What a task had acknowledged: key, revision, value (None: deleted).
type Acked = (Vec<u8>, Revision, Option<Vec<u8>>);

async fn write_concurrently(backend: Arc<SledBackend>) -> Vec<Acked> {
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..WRITES_PER_TASK {
                    let value = format!("t{task} n{n}").into_bytes();
                    let (key, outcome, value) = match n % 5 {
                        // Contended keys, conditional puts.
                        0 | 1 => {
                            let key = format!("shared/{}", n % 3).into_bytes();
                            let expect = match backend.get(&key, None).await.expect("get") {
                                (Some(kv), _) => Expect::ModRevision(kv.mod_revision),
                                (None, _) => Expect::Absent,
                            };
                            let outcome = backend.put(&key, value.clone(), expect).await;
                            (key, outcome, Some(value))
                        }
                        // Now and then a delete of one of the task's own keys.
                        4 => {
                            let key = format!("own/{task}/{}", n % 4).into_bytes();
                            (key.clone(), backend.delete(&key, Expect::Any).await, None)
                        }
                        _ => {
                            let key = format!("own/{task}/{}", n % 4).into_bytes();
                            let outcome = backend.put(&key, value.clone(), Expect::Any).await;
                            (key, outcome, Some(value))
                        }
                    };
                    match outcome.expect("write") {
                        WriteOutcome::Applied { revision, .. } => {
                            acked.push((key, revision, value))
                        }
                        WriteOutcome::Conflict { .. } | WriteOutcome::NotFound => {}
                    }
                }
                // Last, every own key is deleted: with a log window, most of these deletes
                // leave it, and the keys' history must go with them.
                for k in 0..4 {
                    let key = format!("own/{task}/{k}").into_bytes();
                    if let WriteOutcome::Applied { revision, .. } =
                        backend.delete(&key, Expect::Any).await.expect("delete")
                    {
                        acked.push((key, revision, None));
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("writer task"));
    }
    acked
}

/// Every event from revision `from` up to `current`.
async fn events_between(backend: &SledBackend, from: Revision, current: Revision) -> Vec<Event> {
    let mut events = Vec::new();
    if from > current {
        return events;
    }
    let mut stream = backend.watch(b"", Some(from)).await.expect("watch");
    while events.last().map(|e: &Event| e.kv.mod_revision) != Some(current) {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("an event within 20 s")
            .expect("stream open")
            .expect("event");
        events.push(event);
    }
    events
}

/// Every key's value at every revision in `revisions`, as a get at that revision sees it.
async fn reads_at(
    backend: &SledBackend,
    keys: &[Vec<u8>],
    revisions: impl Iterator<Item = Revision>,
) -> Vec<Result<Option<KeyValue>, String>> {
    let mut out = Vec::new();
    for revision in revisions {
        for key in keys {
            let read: Result<_, BackendError> = backend.get(key, Some(revision)).await;
            out.push(read.map(|(kv, _)| kv).map_err(|e| e.to_string()));
        }
    }
    out
}

/// Runs the concurrent writes on a fresh store, checks it against the same writes applied one
/// at a time, and says whether some batches were applied together.
async fn applied_together_match_applied_one_at_a_time(opts: SledOptions) -> bool {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = Arc::new(SledBackend::open(&dir.path().join("together"), opts).expect("open"));
    let acked = write_concurrently(Arc::clone(&backend)).await;
    let stats = backend.writer_stats();
    let current = backend.current_revision().await.expect("revision");
    let merged = stats.commits < stats.sync_seconds.count;

    // Every change was acknowledged (conflicts change nothing): the acknowledgements, in
    // revision order, are every change the store holds.
    let mut acked = acked;
    acked.sort_by_key(|(_, revision, _)| *revision);
    let revisions: Vec<i64> = acked.iter().map(|(_, r, _)| r.get()).collect();
    assert_eq!(revisions, (2..=current.get()).collect::<Vec<_>>());

    // The same changes, one at a time, on a fresh store.
    let one = SledBackend::open(&dir.path().join("one-at-a-time"), opts).expect("open");
    for (key, revision, value) in &acked {
        let outcome = match value {
            Some(value) => one.put(key, value.clone(), Expect::Any).await,
            None => one.delete(key, Expect::Any).await,
        };
        match outcome.expect("write") {
            WriteOutcome::Applied { revision: r, .. } => assert_eq!(r, *revision),
            other => panic!("replayed {other:?}"),
        }
    }
    assert_eq!(one.current_revision().await.expect("revision"), current);
    let compacted = backend.compacted_revision().await.expect("compacted");
    assert_eq!(
        one.compacted_revision().await.expect("compacted"),
        compacted
    );

    // The same log (versions, create revisions, previous values) ...
    let from = compacted.max(Revision::new(2).expect("revision 2"));
    let events = events_between(&backend, from, current).await;
    assert_eq!(
        events,
        events_between(&one, from, current).await,
        "same log from revision {from}"
    );
    for event in &events {
        let (key, _, value) =
            &acked[usize::try_from(event.kv.mod_revision.get() - 2).expect("index")];
        assert_eq!(&event.kv.key, key);
        match value {
            Some(value) => assert_eq!((event.kind, &event.kv.value), (EventKind::Put, value)),
            None => assert_eq!(event.kind, EventKind::Delete),
        }
    }
    // ... the same current values ...
    let everything = RangeRequest {
        start: Vec::new(),
        end: Some(vec![0xff]),
        ..RangeRequest::default()
    };
    assert_eq!(
        backend.range(everything.clone()).await.expect("range").kvs,
        one.range(everything).await.expect("range").kvs,
        "same current values"
    );
    // ... and the same history at every revision still readable.
    let mut keys: Vec<Vec<u8>> = acked.iter().map(|(k, _, _)| k.clone()).collect();
    keys.sort();
    keys.dedup();
    let revisions = || (from.get()..=current.get()).filter_map(Revision::new);
    assert_eq!(
        reads_at(&backend, &keys, revisions()).await,
        reads_at(&one, &keys, revisions()).await,
        "same history at every revision"
    );

    // On disk too. With a log window, history pruning depends on where batches begin and end
    // (a batch prunes at its own compacted revision), so only its rule is checked: a key whose
    // delete left the window has no history left. Without one, every tree is the same.
    drop(backend);
    drop(one);
    let trees = |name: &str| {
        let db = sled_open(&dir.path().join(name));
        ["kv", "history", "log", "meta"].map(|tree| {
            let entries = db
                .open_tree(tree)
                .expect("tree")
                .iter()
                .map(|item| item.expect("entry"));
            if tree == "log" {
                // Chunks depend on where layers ended: compare the events they hold.
                entries.flat_map(|(k, v)| log_events(&k, &v)).collect()
            } else {
                entries
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect::<Vec<_>>()
            }
        })
    };
    let together = trees("together");
    let mut last_change: BTreeMap<&[u8], (Revision, bool)> = BTreeMap::new();
    for (key, revision, value) in &acked {
        last_change.insert(key, (*revision, value.is_none()));
    }
    for (key, (revision, deleted)) in last_change {
        if deleted && revision < compacted {
            let mut prefix = key.to_vec();
            prefix.extend_from_slice(&[0, 1]);
            let left = together[1]
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .count();
            assert_eq!(
                left,
                0,
                "{} deleted at {revision}, below {compacted}: history left",
                String::from_utf8_lossy(key)
            );
        }
    }
    if opts.log_retention == 0 {
        let one_at_a_time = trees("one-at-a-time");
        for (i, tree) in ["kv", "history", "log", "meta"].iter().enumerate() {
            assert!(
                together[i] == one_at_a_time[i],
                "tree {tree}: {} entries applied together, {} one at a time",
                together[i].len(),
                one_at_a_time[i].len()
            );
        }
    }
    merged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_applied_together_leave_what_one_at_a_time_leaves() {
    let opts = SledOptions {
        layer_bytes: keyward::backend::sled::DEFAULT_LAYER_BYTES,
        history_per_key: 4,
        log_retention: 0,
    };
    // Whether a request is queued when a batch has been logged depends on timing (a batch that
    // took every writer's request has none after it): run again, each run checked, until some
    // batches were applied together.
    let mut runs = 0;
    while !applied_together_match_applied_one_at_a_time(opts).await {
        runs += 1;
        assert!(runs < 5, "no batches applied together in {runs} runs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_short_log_window_too() {
    // (versions per key, log retention): with windows of 24 and 6 the next batch often reaches
    // the deferred one, which is then applied alone.
    for (history_per_key, log_retention) in [(3, 300), (2, 24), (2, 6)] {
        let opts = SledOptions {
            layer_bytes: keyward::backend::sled::DEFAULT_LAYER_BYTES,
            history_per_key,
            log_retention,
        };
        applied_together_match_applied_one_at_a_time(opts).await;
    }
}

/// The per-revision events of one entry of sled's log: a chunk (`be64(first) ‖ be64(last)` ->
/// `be32(len) ‖ event` for each revision) split up.
fn log_events(key: &[u8], chunk: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    assert_eq!(key.len(), 16, "a chunk's key");
    let mut revision = i64::from_be_bytes(key[..8].try_into().expect("first"));
    let mut events = Vec::new();
    let mut at = 0;
    while at < chunk.len() {
        let len = u32::from_be_bytes(chunk[at..at + 4].try_into().expect("len")) as usize;
        events.push((
            revision.to_be_bytes().to_vec(),
            chunk[at + 4..at + 4 + len].to_vec(),
        ));
        at += 4 + len;
        revision += 1;
    }
    assert_eq!(
        revision - 1,
        i64::from_be_bytes(key[8..].try_into().expect("last"))
    );
    events
}
