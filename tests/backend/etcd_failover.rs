//! The etcd backend when a member dies: reads, writes and watches move to the remaining quorum,
//! and a watch resumes where it was, delivering every change once, in order.

use std::time::Duration;

use crate::support::etcd::Etcd;
use keyward::backend::etcd::EtcdBackend;
use keyward::backend::{Backend, BackendError, EventKind, Expect, Revision, WriteOutcome};
use tokio_stream::StreamExt;

/// Puts until acknowledged: a write in flight when a member dies may fail with `Unavailable`
/// (its outcome unknown); it is retried as a client would, as an unconditional put.
async fn put_acked(backend: &EtcdBackend, key: &str, value: &str) -> Revision {
    for _ in 0..100 {
        match backend
            .put(key.as_bytes(), value.as_bytes().to_vec(), Expect::Any)
            .await
        {
            Ok(WriteOutcome::Applied { revision, .. }) => return revision,
            Ok(other) => panic!("unconditional put gave {other:?}"),
            Err(BackendError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
    panic!("put {key} never succeeded")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_and_watches_survive_a_member_kill() {
    let mut etcd = Etcd::start_cluster(3);
    let backend = EtcdBackend::connect(&etcd.options()).expect("connect");
    let start = backend.current_revision().await.expect("revision");
    let mut watch = backend.watch(b"/w/", start.next()).await.expect("watch");
    let mut acked = Vec::new();
    for i in 0..20 {
        acked.push((
            put_acked(&backend, &format!("/w/{i:03}"), "before").await,
            i,
        ));
    }
    // The first endpoint is the one in use: kill it.
    assert_eq!(
        backend.client().current_endpoint(),
        etcd.members[0].client_url
    );
    etcd.kill(0);
    for i in 20..40 {
        acked.push((put_acked(&backend, &format!("/w/{i:03}"), "after").await, i));
    }
    assert_ne!(
        backend.client().current_endpoint(),
        etcd.members[0].client_url
    );
    // Reads are served by the remaining quorum, linearizably.
    for &(revision, i) in &acked {
        let (kv, _) = backend
            .get(format!("/w/{i:03}").as_bytes(), None)
            .await
            .expect("get");
        assert_eq!(
            kv.expect("acknowledged write present").mod_revision,
            revision
        );
    }
    // The watch delivered every acknowledged write once, in revision order, across the kill.
    let mut seen = Vec::new();
    while seen.len() < acked.len() {
        let ev = tokio::time::timeout(Duration::from_secs(40), watch.next())
            .await
            .expect("watch stalled")
            .expect("watch ended")
            .expect("watch error");
        assert_eq!(ev.kind, EventKind::Put);
        seen.push(ev.kv.mod_revision);
    }
    let mut want: Vec<Revision> = acked.iter().map(|(r, _)| *r).collect();
    want.sort();
    assert_eq!(seen, want);

    // The killed member comes back and catches up.
    etcd.restart(0);
    let last = format!("/w/{:03}", 39);
    let caught_up = etcd.etcdctl_get(&last);
    assert_eq!(caught_up, b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_member_gone_requests_fail_unavailable_and_recover() {
    let mut etcd = Etcd::start();
    let backend = EtcdBackend::connect(&etcd.options()).expect("connect");
    put_acked(&backend, "/x/a", "1").await;
    etcd.kill(0);
    assert!(matches!(
        backend.get(b"/x/a", None).await,
        Err(BackendError::Unavailable(_))
    ));
    assert!(matches!(
        backend.put(b"/x/a", b"2".to_vec(), Expect::Any).await,
        Err(BackendError::Unavailable(_))
    ));
    etcd.restart(0);
    let mut ok = false;
    for _ in 0..100 {
        if let Ok((Some(kv), _)) = backend.get(b"/x/a", None).await {
            assert_eq!(kv.value, b"1");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "never recovered after etcd came back");
}

/// Log lines written while a test runs, to read back.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// An etcd that stops answering is in the server's log at warn, not only in the clients'
/// answers, and at most once a second however many requests fail.
#[tokio::test(flavor = "current_thread")]
async fn an_unavailable_etcd_is_logged_once_a_second() {
    let cap = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(cap.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut etcd = Etcd::start();
    let backend = EtcdBackend::connect(&etcd.options()).expect("connect");
    put_acked(&backend, "/u/a", "1").await;
    etcd.kill(0);
    // The throttle is the process's: other tests of this binary that stop an etcd may take
    // a second's line, so requests go on until one shows here (at most a few seconds).
    let started = std::time::Instant::now();
    let mut requests = 0;
    let lines = loop {
        assert!(matches!(
            backend.get(b"/u/a", None).await,
            Err(BackendError::Unavailable(_))
        ));
        requests += 1;
        let log = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains("etcd unavailable"))
            .map(str::to_owned)
            .collect();
        if (!lines.is_empty() && requests >= 10) || started.elapsed() > Duration::from_secs(10) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = started.elapsed().as_secs() as usize;
    assert!(
        !lines.is_empty() && lines.len() <= seconds + 1 && lines.len() < requests,
        "{requests} requests in {seconds} s: {lines:?}"
    );
    assert!(lines[0].contains("WARN"), "{lines:?}");
}

/// An etcd that comes back without its history (here: its data wiped, as after a restore
/// from an older snapshot) is below the revisions a watch delivered: the watch ends as
/// compacted, so that its client lists again, instead of waiting for revisions the new history
/// reuses for other changes and losing them unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_when_etcd_loses_its_history() {
    let mut etcd = Etcd::start();
    let backend = EtcdBackend::connect(&etcd.options()).expect("connect");
    for i in 0..10 {
        put_acked(&backend, &format!("/h/{i}"), "v").await;
    }
    let now = backend.current_revision().await.expect("revision");
    let mut watch = backend.watch(b"/h/", now.next()).await.expect("watch");
    put_acked(&backend, "/h/seen", "v").await;
    let ev = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("watch stalled")
        .expect("watch ended")
        .expect("watch error");
    assert_eq!(ev.kv.key, b"/h/seen");
    etcd.kill(0);
    std::fs::remove_dir_all(&etcd.members[0].data_dir).expect("wipe etcd");
    etcd.restart(0);
    let end = tokio::time::timeout(Duration::from_secs(40), watch.next())
        .await
        .expect("watch stalled");
    assert!(
        matches!(end, Some(Err(BackendError::Compacted { .. }))),
        "{end:?}"
    );
}

/// Endpoints of two clusters are refused at start: one cluster's data would be served until
/// a failover, the other's after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_of_two_clusters_are_refused() {
    let a = Etcd::start();
    let b = Etcd::start();
    let mut opts = a.options();
    opts.endpoints.push(b.endpoint(0).to_owned());
    let backend = EtcdBackend::connect(&opts).expect("connect");
    let err = backend.check().await.expect_err("two clusters");
    assert!(
        err.to_string()
            .contains(&format!("{} is a member of etcd cluster", a.endpoint(0)))
            && err
                .to_string()
                .contains("give the endpoints of one cluster"),
        "{err}"
    );
    // With only the first cluster's endpoint it is fine.
    let one = EtcdBackend::connect(&a.options()).expect("connect");
    one.check().await.expect("one cluster");
}

/// A member of another cluster behind a listed URL (down at start, then up with another
/// cluster's data) is checked before it is sent anything and never used: once the first
/// cluster is gone, reads and writes fail `Unavailable` instead of being served by, and
/// written to, the other cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_cluster_is_never_used() {
    let mut a = Etcd::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = |_| crate::support::free_port();
    let (b_client, b_peer) = (
        format!("http://127.0.0.1:{}", port(0)),
        format!("http://127.0.0.1:{}", port(1)),
    );
    let mut opts = a.options();
    opts.endpoints.push(b_client.clone());
    let backend = EtcdBackend::connect(&opts).expect("connect");
    backend.check().await.expect("one cluster answers");
    put_acked(&backend, "/c/x", "a").await;
    let log = std::fs::File::create(dir.path().join("b.log")).expect("log");
    let mut b = crate::support::etcd::member_command(
        "b",
        &dir.path().join("b"),
        &b_client,
        &b_peer,
        &format!("b={b_peer}"),
        log,
    )
    .spawn()
    .expect("start the other etcd");
    let ctl = crate::support::etcd::require_etcdctl();
    let up = (0..100).any(|_| {
        let ok = std::process::Command::new(&ctl)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &b_client, "endpoint", "health"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    assert!(up, "the other etcd did not start");
    a.kill(0);
    // Every attempt fails (the first ones may fail on the dead member's broken connection
    // before the other is even tried); once the other is tried, its cluster is named.
    let mut named = false;
    for _ in 0..30 {
        let read = backend.get(b"/c/x", None).await;
        let write = backend.put(b"/c/y", b"b".to_vec(), Expect::Any).await;
        assert!(
            matches!(write, Err(BackendError::Unavailable(_))),
            "{write:?}"
        );
        match read {
            Err(BackendError::Unavailable(m)) => named |= m.contains("is a member of cluster"),
            other => panic!("read through another cluster: {other:?}"),
        }
        if named {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        named,
        "the other cluster's member was never refused by name"
    );
    assert!(
        crate::support::etcd::etcdctl_keys(&b_client, "/c/").is_empty(),
        "the other cluster was written to"
    );
    let _ = b.kill();
    let _ = b.wait();
}
