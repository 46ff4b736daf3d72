//! A watch opened while a write is on its way to disk sees that write. Each round starts a
//! write, waits a little (0–3 ms, so that the watch opens before, during or after the write's
//! sync), then opens a watch from the revision the write will take; the write's event must
//! arrive without any later write to push it out. Both embedded engines; each round has a
//! fresh key so that nothing else can deliver the event.

use std::sync::Arc;
use std::time::Duration;

use keyward::backend::logstore::{LogBackend, LogOptions};
use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::backend::{Backend, Expect, Revision, WriteOutcome};
use tokio_stream::StreamExt;

const ROUNDS: u64 = 150;

async fn each_write_reaches_a_watch_opened_during_it(backend: Arc<dyn Backend>) {
    for round in 0..ROUNDS {
        let before = backend.current_revision().await.expect("revision").get();
        let expected = Revision::new(before + 1).expect("a revision");
        let key = format!("/w/{round}").into_bytes();
        let writer = {
            let backend = backend.clone();
            let key = key.clone();
            tokio::spawn(async move { backend.put(&key, b"v".to_vec(), Expect::Any).await })
        };
        // Spread the watch's start over the write's lifetime.
        tokio::time::sleep(Duration::from_micros((round % 7) * 500)).await;
        let mut watch = backend.watch(b"/w/", Some(expected)).await.expect("watch");
        let written = writer.await.expect("join").expect("put");
        assert!(
            matches!(written, WriteOutcome::Applied { revision } if revision == expected),
            "round {round}: {written:?}"
        );
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap_or_else(|_| {
                panic!("round {round}: the write at revision {expected} never reached the watch")
            })
            .expect("an event")
            .expect("not an error");
        assert_eq!(event.kv.key, key, "round {round}");
        assert_eq!(event.kv.mod_revision, expected, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_engine_watch_opened_during_a_write_sees_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let b = LogBackend::open(&dir.path().join("log"), LogOptions::default()).expect("open");
    each_write_reaches_a_watch_opened_during_it(Arc::new(b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_engine_watch_opened_during_a_write_sees_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let b = SledBackend::open(&dir.path().join("sled"), SledOptions::default()).expect("open");
    each_write_reaches_a_watch_opened_during_it(Arc::new(b)).await;
}

/// A watch whose reader takes nothing while changes wait for it ends after a grace period
/// (it held them in memory, as many as were written, for as long as the reader slept): what
/// it had buffered is still delivered, then `WatchTooSlow`; a reader that keeps reading is
/// never ended.
async fn a_watch_that_is_not_read_ends(backend: Arc<dyn Backend>) {
    use keyward::backend::BackendError;
    let mut idle = backend.watch(b"/slow/", None).await.expect("watch");
    let mut busy = backend.watch(b"/slow/", None).await.expect("watch");
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(e) = busy.next().await {
            e.expect("a reader that keeps reading is not ended");
            n += 1;
            if n == 300 {
                break;
            }
        }
        n
    });
    for i in 0..300 {
        let key = format!("/slow/{}", i % 7).into_bytes();
        backend
            .put(&key, vec![b'v'; 4096], Expect::Any)
            .await
            .expect("put");
    }
    assert_eq!(reader.await.expect("join"), 300);
    // Past the grace period with no read: the idle watch has ended.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mut delivered = 0;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), idle.next()).await {
            Ok(Some(Ok(_))) => delivered += 1,
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("ended without saying why after {delivered} events"),
            Err(_) => panic!("still open after {delivered} events"),
        }
    };
    assert!(matches!(end, BackendError::WatchTooSlow(_)), "{end:?}");
    assert!((1..300).contains(&delivered), "{delivered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_engine_ends_a_watch_that_is_not_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let b = LogBackend::open(&dir.path().join("log"), LogOptions::default()).expect("open");
    a_watch_that_is_not_read_ends(Arc::new(b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_engine_ends_a_watch_that_is_not_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let b = SledBackend::open(&dir.path().join("sled"), SledOptions::default()).expect("open");
    a_watch_that_is_not_read_ends(Arc::new(b)).await;
}
