//! The secret store's Kubernetes semantics over a real Unix socket with a real tonic client,
//! encrypting with KMS v2 through keyward's real plugin. Every test of semantics the backend
//! carries (create, update conflicts, immutability, delete preconditions, list pages, watch,
//! history, rollback, compaction, restart) runs three times from one body: on a real sled
//! directory (`<case>::sled`), on the log-structured engine's directory (`<case>::log`) and on a
//! real etcd server (`<case>::etcd`).

use std::sync::Arc;

use crate::support::etcd::Etcd;
use crate::support::{Plugin, StoreHarness};
use keyward::backend::logstore::LogOptions;
use keyward::backend::sled::SledOptions;
use keyward::backend::{Backend, BackendSpec};
use keyward::crypto::Algorithm;
use keyward::pb::keyward_v1 as pb;
use keyward::pb::keyward_v1::secrets_client::SecretsClient;
use keyward::server::StoreOptions;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

/// Where the store under test keeps its data.
enum Backing {
    /// A sled directory in the server's temp dir.
    Sled,
    /// A directory of the log-structured engine in the server's temp dir.
    Log,
    /// Its own etcd server, which keeps every revision until it is compacted.
    Etcd(Etcd),
}

/// A store server started by the library (`keyward::server::StoreServer`, as `keyward server`
/// starts it), encrypting with KMS v2 through an in-process plugin.
struct TestStore {
    plugin: Plugin,
    dir: tempfile::TempDir,
    backing: Backing,
    /// Versions per Secret kept (embedded) and shown by history (all), as `--history`.
    history: usize,
    server: Option<StoreHarness>,
}

impl TestStore {
    /// A store on sled with `--history history`.
    async fn sled(history: usize) -> TestStore {
        Self::start(Backing::Sled, history).await
    }

    /// A store on the log-structured engine with `--history history`.
    async fn log(history: usize) -> TestStore {
        Self::start(Backing::Log, history).await
    }

    /// A store on a fresh etcd server (started in about half a second) with `--history history`.
    async fn etcd(history: usize) -> TestStore {
        Self::etcd_with(history, &[]).await
    }

    /// A store on a fresh etcd server started with extra flags.
    async fn etcd_with(history: usize, flags: &[&str]) -> TestStore {
        let etcd = tokio::task::block_in_place(|| Etcd::start_with(flags));
        Self::start(Backing::Etcd(etcd), history).await
    }

    async fn start(backing: Backing, history: usize) -> TestStore {
        let plugin = Plugin::start(Algorithm::Aes256Gcm).await;
        let dir = tempfile::tempdir().unwrap();
        let mut s = TestStore {
            plugin,
            dir,
            backing,
            history,
            server: None,
        };
        s.serve().await;
        s
    }

    fn is_etcd(&self) -> bool {
        matches!(self.backing, Backing::Etcd(_))
    }

    fn server(&self) -> &StoreHarness {
        self.server.as_ref().expect("serving")
    }

    /// The backend the store serves from.
    fn backend(&self) -> Arc<dyn Backend> {
        self.server().store().backend().clone()
    }

    async fn serve(&mut self) {
        let config = crate::support::encryption_config(
            self.dir.path(),
            &crate::support::kms_v2_provider(&self.plugin.socket),
        );
        let backend = match &self.backing {
            Backing::Sled => BackendSpec::Sled {
                dir: self.dir.path().join("store"),
                options: SledOptions {
                    layer_bytes: keyward::backend::sled::DEFAULT_LAYER_BYTES,
                    history_per_key: self.history,
                    ..SledOptions::default()
                },
            },
            Backing::Log => BackendSpec::Log {
                dir: self.dir.path().join("store"),
                options: LogOptions {
                    history_per_key: self.history,
                    ..LogOptions::default()
                },
            },
            Backing::Etcd(etcd) => BackendSpec::Etcd(etcd.options()),
        };
        let mut options = StoreOptions::new(backend, config, self.dir.path().join("keyward.sock"));
        options.history = self.history;
        self.server = Some(StoreHarness::start(options).await);
    }

    /// Stops serving and serves again on the same data: an embedded engine reopens its directory; etcd is
    /// first killed with SIGKILL and restarted on its data directory.
    async fn restart(&mut self) {
        self.shutdown().await;
        if let Backing::Etcd(etcd) = &mut self.backing {
            tokio::task::block_in_place(|| etcd.restart(0));
        }
        self.serve().await;
    }

    async fn shutdown(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop().await;
        }
    }

    async fn client(&self) -> SecretsClient<Channel> {
        self.server().client().await
    }
}

fn secret(ns: &str, name: &str, data: &[(&str, &[u8])]) -> pb::Secret {
    crate::support::store::pb_secret(ns, name, data)
}

fn meta(s: &pb::Secret) -> &pb::ObjectMeta {
    s.metadata.as_ref().unwrap()
}

fn rv(s: &pb::Secret) -> i64 {
    meta(s).resource_version.parse().unwrap()
}

async fn create(
    c: &mut SecretsClient<Channel>,
    s: pb::Secret,
) -> Result<pb::Secret, tonic::Status> {
    c.create(pb::CreateRequest {
        secret: Some(s),
        dry_run: false,
    })
    .await
    .map(|r| r.into_inner())
}

async fn update(
    c: &mut SecretsClient<Channel>,
    s: pb::Secret,
) -> Result<pb::Secret, tonic::Status> {
    c.update(pb::UpdateRequest {
        secret: Some(s),
        dry_run: false,
    })
    .await
    .map(|r| r.into_inner())
}

async fn get(
    c: &mut SecretsClient<Channel>,
    ns: &str,
    name: &str,
) -> Result<pb::Secret, tonic::Status> {
    c.get(pb::GetRequest {
        namespace: ns.into(),
        name: name.into(),
        revision: 0,
    })
    .await
    .map(|r| r.into_inner())
}

/// The first of `needles` found in `hay`, in one pass (etcd's preallocated WAL files are 64 MiB
/// and tests are built unoptimised).
fn find_any<'a>(hay: &[u8], needles: &'a [Vec<u8>]) -> Option<&'a [u8]> {
    let mut first = [false; 256];
    for n in needles {
        first[n[0] as usize] = true;
    }
    for i in 0..hay.len() {
        if first[hay[i] as usize] {
            if let Some(n) = needles.iter().find(|n| hay[i..].starts_with(n)) {
                return Some(n);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Conformance cases: each body runs on sled, on the log-structured engine and on etcd (see
// `on_sled_and_etcd!` at the end).

async fn create_get_and_validation(srv: TestStore) {
    let mut c = srv.client().await;
    let mut s = secret("", "db", &[("password", b"hunter2")]);
    s.string_data.insert("user".into(), "admin".into());
    s.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("app".into(), "web".into());
    let made = create(&mut c, s.clone()).await.unwrap();
    let m = meta(&made);
    assert_eq!(m.namespace, "default");
    assert_eq!(made.r#type, "Opaque");
    assert!(uuid::Uuid::parse_str(&m.uid).is_ok());
    assert!(m.creation_timestamp.ends_with('Z'));
    assert!(rv(&made) > 1);
    assert!(made.string_data.is_empty(), "stringData is write-only");
    assert_eq!(made.data["user"], b"admin");
    let got = get(&mut c, "default", "db").await.unwrap();
    assert_eq!(got.data, made.data);
    assert_eq!(meta(&got).resource_version, m.resource_version);
    assert_eq!(meta(&got).uid, m.uid);

    let e = create(&mut c, s.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(e.message(), "secrets \"db\" already exists");
    let e = get(&mut c, "default", "nope").await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "secrets \"nope\" not found")
    );

    for (bad, field) in [
        (secret("", "Bad_Name", &[]), "metadata.name"),
        (secret("Bad-NS", "x", &[]), "metadata.namespace"),
        (secret("", "x", &[("no/slash", b"v")]), "data[no/slash]"),
        (secret("", "x", &[("..dots", b"v")]), "data[..dots]"),
        (
            secret("", "big", &[("a", &vec![0u8; 1024 * 1024 + 1])]),
            "data: Too long",
        ),
    ] {
        let e = create(&mut c, bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    let mut tls = secret("", "tls", &[("tls.crt", b"c")]);
    tls.r#type = "kubernetes.io/tls".into();
    let e = create(&mut c, tls).await.unwrap_err();
    assert!(
        e.message().contains("data[tls.key]: Required value"),
        "{}",
        e.message()
    );
    let mut with_rv = secret("", "rv", &[]);
    with_rv.metadata.as_mut().unwrap().resource_version = "5".into();
    let e = create(&mut c, with_rv).await.unwrap_err();
    assert!(
        e.message().contains("metadata.resourceVersion"),
        "{}",
        e.message()
    );
    // Exactly 1 MiB is accepted; dry run writes nothing.
    let dry = c
        .create(pb::CreateRequest {
            secret: Some(secret("", "dry", &[("a", &vec![1u8; 1024 * 1024])])),
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(meta(&dry).resource_version.is_empty());
    assert_eq!(
        get(&mut c, "default", "dry").await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn update_conflicts_and_immutability(srv: TestStore) {
    let mut c = srv.client().await;
    let v1 = create(&mut c, secret("ns1", "app", &[("k", b"1")]))
        .await
        .unwrap();
    // With the current resourceVersion: applied.
    let mut next = v1.clone();
    next.data.insert("k".into(), b"2".to_vec());
    let v2 = update(&mut c, next).await.unwrap();
    assert!(rv(&v2) > rv(&v1));
    assert_eq!(meta(&v2).uid, meta(&v1).uid);
    assert_eq!(meta(&v2).creation_timestamp, meta(&v1).creation_timestamp);
    // With a stale one: conflict, nothing written.
    let mut stale = v1.clone();
    stale.data.insert("k".into(), b"3".to_vec());
    let e = update(&mut c, stale.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert!(
        e.message().contains("the object has been modified"),
        "{}",
        e.message()
    );
    assert_eq!(get(&mut c, "ns1", "app").await.unwrap().data["k"], b"2");
    // Without one: unconditional.
    stale.metadata.as_mut().unwrap().resource_version.clear();
    let v3 = update(&mut c, stale).await.unwrap();
    assert_eq!(v3.data["k"], b"3");
    // An unchanged update writes nothing.
    let same = update(&mut c, v3.clone()).await.unwrap();
    assert_eq!(rv(&same), rv(&v3));
    // uid precondition.
    let mut wrong_uid = v3.clone();
    wrong_uid.metadata.as_mut().unwrap().uid = "00000000-0000-0000-0000-000000000000".into();
    assert_eq!(
        update(&mut c, wrong_uid).await.unwrap_err().code(),
        Code::Aborted
    );
    // Type cannot change.
    let mut t = v3.clone();
    t.r#type = "example.com/other".into();
    let e = update(&mut c, t).await.unwrap_err();
    assert!(
        e.message().contains("type: Invalid value") && e.message().contains("immutable"),
        "{}",
        e.message()
    );
    // Missing Secret.
    assert_eq!(
        update(&mut c, secret("ns1", "ghost", &[]))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Immutable Secrets.
    let mut im = secret("ns1", "frozen", &[("k", b"v")]);
    im.immutable = Some(true);
    let frozen = create(&mut c, im).await.unwrap();
    let mut change = frozen.clone();
    change.data.insert("k".into(), b"w".to_vec());
    let e = update(&mut c, change).await.unwrap_err();
    assert!(e.message().contains("data: Forbidden"), "{}", e.message());
    let mut unset = frozen.clone();
    unset.immutable = Some(false);
    assert!(update(&mut c, unset)
        .await
        .unwrap_err()
        .message()
        .contains("immutable: Forbidden"));
    let mut relabel = frozen.clone();
    relabel
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("tier".into(), "gold".into());
    let relabeled = update(&mut c, relabel).await.unwrap();
    assert_eq!(meta(&relabeled).labels["tier"], "gold");
    c.delete(pb::DeleteRequest {
        namespace: "ns1".into(),
        name: "frozen".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut again = secret("ns1", "frozen", &[("k", b"new")]);
    again.immutable = Some(true);
    create(&mut c, again).await.unwrap();
}

async fn delete_preconditions(srv: TestStore) {
    let mut c = srv.client().await;
    let s = create(&mut c, secret("", "gone", &[("k", b"v")]))
        .await
        .unwrap();
    let del = |uid: &str, rv: &str| pb::DeleteRequest {
        namespace: "default".into(),
        name: "gone".into(),
        uid: uid.into(),
        resource_version: rv.into(),
        unsafe_ignore_decrypt_errors: false,
    };
    let e = c.delete(del("wrong-uid", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert!(
        e.message()
            .contains("the UID in the precondition (wrong-uid) does not match"),
        "{}",
        e.message()
    );
    let e = c.delete(del("", "1")).await.unwrap_err();
    assert!(
        e.message()
            .contains("the ResourceVersion in the precondition (1) does not match"),
        "{}",
        e.message()
    );
    // The request's strings are parsed at the edge, with the messages the store gives.
    for rv in ["abc", "0", "-1", "1e3", " 1"] {
        let e = c.delete(del("", rv)).await.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::InvalidArgument,
                format!("Secret \"gone\" is invalid: metadata.resourceVersion: Invalid value: {rv:?}: must be a positive integer").as_str()
            )
        );
    }
    let e = c
        .delete(pb::DeleteRequest {
            namespace: "Bad".into(),
            name: "Bad".into(),
            ..del("", "abc")
        })
        .await
        .unwrap_err();
    assert!(
        e.message()
            .starts_with("Secret \"Bad\" is invalid: metadata.name: Invalid value: \"Bad\"")
            && e.message()
                .contains("; metadata.namespace: Invalid value: \"Bad\"")
            && !e.message().contains("resourceVersion"),
        "names are checked first, both reported: {}",
        e.message()
    );
    let e = c
        .watch(pb::WatchRequest {
            field_selector: String::new(),
            namespace: String::new(),
            resource_version: "18446744073709551616".into(),
            label_selector: String::new(),
        })
        .await
        .expect_err("an invalid resourceVersion is refused");
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "resource_version: Invalid value: \"18446744073709551616\": must be a positive integer"
        )
    );
    let e = c
        .rollback(pb::RollbackRequest {
            namespace: String::new(),
            name: "gone".into(),
            to_revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "Secret \"gone\" is invalid: revision: Invalid value: 0: must be a revision of this Secret's history (at least 1)"
        )
    );
    let out = c
        .delete(del(&meta(&s).uid, &meta(&s).resource_version))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.data["k"], b"v");
    assert_eq!(
        c.delete(del("", "")).await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn list_namespaces_selectors_and_pages(srv: TestStore) {
    let mut c = srv.client().await;
    for ns in ["a", "b"] {
        for i in 0..5 {
            let mut s = secret(ns, &format!("s{i}"), &[("k", b"v")]);
            s.metadata.as_mut().unwrap().labels.insert(
                "parity".into(),
                if i % 2 == 0 { "even" } else { "odd" }.into(),
            );
            create(&mut c, s).await.unwrap();
        }
    }
    // A namespace that is a prefix of another is not mixed in.
    create(&mut c, secret("a2", "x", &[])).await.unwrap();
    let list = |ns: &str, sel: &str, limit: i64, cont: &str| pb::ListRequest {
        field_selector: String::new(),
        namespace: ns.into(),
        label_selector: sel.into(),
        limit,
        r#continue: cont.into(),
    };
    let all = c.list(list("", "", 0, "")).await.unwrap().into_inner();
    assert_eq!(all.items.len(), 11);
    assert!(all.r#continue.is_empty());
    let a = c.list(list("a", "", 0, "")).await.unwrap().into_inner();
    assert_eq!(a.items.len(), 5);
    assert!(a.items.iter().all(|s| meta(s).namespace == "a"));
    let even = c
        .list(list("", "parity=even", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(even.items.len(), 6);
    let odd_a = c
        .list(list("a", "parity in (odd)", 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(odd_a.items.len(), 2);
    // Pages of 3 at one revision: a write between pages is not seen.
    let p1 = c.list(list("", "", 3, "")).await.unwrap().into_inner();
    assert_eq!(p1.items.len(), 3);
    assert!(!p1.r#continue.is_empty());
    create(&mut c, secret("a", "s9", &[])).await.unwrap();
    let mut seen: Vec<String> = p1
        .items
        .iter()
        .map(|s| format!("{}/{}", meta(s).namespace, meta(s).name))
        .collect();
    let mut cont = p1.r#continue.clone();
    while !cont.is_empty() {
        let p = c.list(list("", "", 3, &cont)).await.unwrap().into_inner();
        assert_eq!(p.resource_version, p1.resource_version);
        seen.extend(
            p.items
                .iter()
                .map(|s| format!("{}/{}", meta(s).namespace, meta(s).name)),
        );
        cont = p.r#continue;
    }
    assert_eq!(seen.len(), 11, "{seen:?}");
    assert!(!seen.contains(&"a/s9".to_owned()));
    // Pages with a selector still fill up.
    let p = c
        .list(list("", "parity=odd", 2, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.items.len(), 2);
    assert!(!p.r#continue.is_empty());
    // Bad input names the field.
    let e = c.list(list("", "a in b", 0, "")).await.unwrap_err();
    assert!(
        e.message().starts_with("label_selector:"),
        "{}",
        e.message()
    );
    let e = c.list(list("", "", 0, "garbage")).await.unwrap_err();
    assert!(e.message().contains("continue"), "{}", e.message());
    let e = c.list(list("", "", -1, "")).await.unwrap_err();
    assert!(e.message().starts_with("limit:"), "{}", e.message());
}

async fn watch_replays_then_follows(srv: TestStore) {
    let mut c = srv.client().await;
    let s1 = create(&mut c, secret("w", "one", &[("k", b"1")]))
        .await
        .unwrap();
    let mut s1b = s1.clone();
    s1b.data.insert("k".into(), b"2".to_vec());
    update(&mut c, s1b).await.unwrap();
    // From the create's revision: the update is replayed, then live changes follow.
    let mut stream = c
        .watch(pb::WatchRequest {
            field_selector: String::new(),
            namespace: "w".into(),
            resource_version: meta(&s1).resource_version.clone(),
            label_selector: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut c2 = srv.client().await;
    create(&mut c2, secret("w", "two", &[])).await.unwrap();
    create(&mut c2, secret("other", "ignored", &[]))
        .await
        .unwrap();
    c2.delete(pb::DeleteRequest {
        namespace: "w".into(),
        name: "one".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push((
            ev.r#type.clone(),
            meta(ev.object.as_ref().unwrap()).name.clone(),
        ));
    }
    assert_eq!(
        got,
        vec![
            ("MODIFIED".into(), "one".into()),
            ("ADDED".into(), "two".into()),
            ("DELETED".into(), "one".into())
        ]
    );
    // From nothing: the current state as ADDED.
    let mut fresh = c
        .watch(pb::WatchRequest {
            namespace: "w".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ev = fresh.next().await.unwrap().unwrap();
    assert_eq!(
        (
            ev.r#type.as_str(),
            meta(ev.object.as_ref().unwrap()).name.as_str()
        ),
        ("ADDED", "two")
    );
    // A label selector turns label changes into ADDED/DELETED.
    let mut sel = c
        .watch(pb::WatchRequest {
            field_selector: String::new(),
            namespace: "w".into(),
            resource_version: "1".into(),
            label_selector: "team=x".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut two = get(&mut c, "w", "two").await.unwrap();
    two.metadata
        .as_mut()
        .unwrap()
        .labels
        .insert("team".into(), "x".into());
    let two = update(&mut c, two).await.unwrap();
    let mut two2 = two.clone();
    two2.metadata.as_mut().unwrap().labels.clear();
    update(&mut c, two2).await.unwrap();
    let a = sel.next().await.unwrap().unwrap();
    let b = sel.next().await.unwrap().unwrap();
    assert_eq!((a.r#type.as_str(), b.r#type.as_str()), ("ADDED", "DELETED"));
    let e = c
        .watch(pb::WatchRequest {
            resource_version: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

async fn history_get_at_revision_and_rollback(srv: TestStore) {
    let mut c = srv.client().await;
    let mut cur = create(&mut c, secret("", "h", &[("v", b"0")]))
        .await
        .unwrap();
    let mut revs = vec![rv(&cur)];
    for i in 1..5u8 {
        let mut n = cur.clone();
        n.data.insert("v".into(), vec![b'0' + i]);
        cur = update(&mut c, n).await.unwrap();
        revs.push(rv(&cur));
    }
    let history = |mut c: SecretsClient<Channel>| async move {
        let h = c
            .history(pb::HistoryRequest {
                namespace: String::new(),
                name: "h".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let got: Vec<(i64, String, Vec<u8>)> = h
            .entries
            .iter()
            .map(|e| {
                (
                    e.revision,
                    e.change.clone(),
                    e.secret.as_ref().unwrap().data["v"].clone(),
                )
            })
            .collect();
        (h, got)
    };
    let last3 = vec![
        (revs[4], "updated".to_owned(), b"4".to_vec()),
        (revs[3], "updated".to_owned(), b"3".to_vec()),
        (revs[2], "updated".to_owned(), b"2".to_vec()),
    ];
    if srv.is_etcd() {
        // etcd has no per-key history limit: it keeps every revision until it is
        // compacted. The store's limit (`--history 3`) caps what history shows, while the
        // oldest version can still be read. Compacting at the third version's revision
        // then leaves what sled's per-key limit of 3 leaves.
        assert_eq!(history(c.clone()).await.1, last3);
        let oldest = c
            .get(pb::GetRequest {
                namespace: String::new(),
                name: "h".into(),
                revision: revs[0],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(oldest.data["v"], b"0");
        srv.backend()
            .compact(crate::support::rev(revs[2]))
            .await
            .unwrap();
    }
    // Only the last 3 versions are kept, newest first.
    let (h, got) = history(c.clone()).await;
    assert_eq!(got, last3);
    assert!(h.entries.iter().all(|e| e.time.ends_with('Z')));
    let at = c
        .get(pb::GetRequest {
            namespace: String::new(),
            name: "h".into(),
            revision: revs[3],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(at.data["v"], b"3");
    let e = c
        .get(pb::GetRequest {
            namespace: String::new(),
            name: "h".into(),
            revision: revs[0],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    // Rollback writes the old content as a new revision.
    let rb = c
        .rollback(pb::RollbackRequest {
            namespace: String::new(),
            name: "h".into(),
            to_revision: revs[2],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rb.data["v"], b"2");
    assert!(rv(&rb) > revs[4]);
    let e = c
        .rollback(pb::RollbackRequest {
            namespace: String::new(),
            name: "h".into(),
            to_revision: revs[0],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    let e = c
        .rollback(pb::RollbackRequest {
            namespace: String::new(),
            name: "h".into(),
            to_revision: 1 << 40,
        })
        .await
        .unwrap_err();
    // The range is this Secret's: from its creation to its latest version.
    let range = format!(
        "must be a revision of this Secret's history ({}..={})",
        revs[0],
        rv(&rb)
    );
    assert!(
        e.message().contains("revision: Invalid value") && e.message().contains(&range),
        "{}",
        e.message()
    );
    let mut im = secret("", "ice", &[("v", b"1")]);
    im.immutable = Some(true);
    let ice = create(&mut c, im).await.unwrap();
    let e = c
        .rollback(pb::RollbackRequest {
            namespace: String::new(),
            name: "ice".into(),
            to_revision: rv(&ice),
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("immutable: Forbidden"),
        "{}",
        e.message()
    );
}

async fn raw_view_restart_and_no_plaintext_on_disk(mut srv: TestStore) {
    let mut c = srv.client().await;
    // Thousands of Secrets, each with a unique marker value.
    let marker = |i: usize| format!("PLAINTEXT-MARKER-{i:05}-ZQX");
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let mut c = srv.client().await;
        tasks.push(tokio::spawn(async move {
            for i in (t..2000).step_by(8) {
                let mut s = secret("bulk", &format!("s{i}"), &[("v", marker(i).as_bytes())]);
                s.string_data.insert("sd".into(), marker(i + 100_000));
                s.metadata
                    .as_mut()
                    .unwrap()
                    .annotations
                    .insert("note".into(), "not secret".into());
                create(&mut c, s).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let raw = c
        .raw_get(pb::RawGetRequest {
            key: "/registry/secrets/bulk/s7".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .kv
        .unwrap();
    assert!(
        raw.value.starts_with(b"k8s:enc:kms:v2:kw:"),
        "stored encrypted"
    );
    // Raw lists come in pages of at most 1000 keys.
    let mut kvs = Vec::new();
    let mut next = String::new();
    loop {
        let page = c
            .raw_list(pb::RawListRequest {
                prefix: "/registry/secrets/bulk/".into(),
                limit: 0,
                r#continue: next,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.kvs.len() <= 1000);
        kvs.extend(page.kvs);
        if page.r#continue.is_empty() {
            break;
        }
        next = page.r#continue;
    }
    assert_eq!(kvs.len(), 2000);
    assert!(kvs
        .iter()
        .all(|kv| kv.value.starts_with(b"k8s:enc:kms:v2:kw:")));
    assert_eq!(
        c.raw_get(pb::RawGetRequest { key: String::new() })
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // Restart: everything is still there.
    srv.restart().await;
    let mut c = srv.client().await;
    assert_eq!(
        get(&mut c, "bulk", "s1999").await.unwrap().data["v"],
        marker(1999).as_bytes()
    );
    srv.shutdown().await;
    // No marker anywhere under the data directories, in plain or base64 form.
    use base64::Engine;
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for i in [0usize, 1, 777, 1999] {
        needles.push(marker(i).into_bytes());
        needles.push(marker(i + 100_000).into_bytes());
        needles.push(
            base64::engine::general_purpose::STANDARD
                .encode(marker(i))
                .into_bytes(),
        );
    }
    needles.push(b"PLAINTEXT-MARKER".to_vec());
    let mut files = 0;
    let mut stack = vec![srv.dir.path().to_owned(), srv.plugin.dir.path().to_owned()];
    // On etcd: its data directory (WAL, snapshots, bbolt database) and its log.
    if let Backing::Etcd(etcd) = &srv.backing {
        stack.push(etcd.dir.path().to_owned());
    }
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                files += 1;
                if let Some(n) = find_any(&bytes, &needles) {
                    panic!(
                        "{} holds plaintext: {}",
                        p.display(),
                        String::from_utf8_lossy(n)
                    );
                }
            }
        }
    }
    assert!(files >= 3, "scanned the store and keyring files");
}

/// The largest valid Secret (1 MiB of data and 256 KiB of annotations, as Kubernetes allows)
/// is stored and read back whole, on etcd with its default 1.5 MiB request limit too: keyward
/// stores it as kube-apiserver does, in protobuf with its data as raw bytes (about 1.25 MiB).
async fn largest_valid_secret_is_stored(srv: TestStore) {
    let mut c = srv.client().await;
    let (s, data, note, value) = largest_secret();
    let made = create(&mut c, s).await.unwrap();
    let got = get(&mut c, "default", "largest").await.unwrap();
    assert_eq!(meta(&got).resource_version, meta(&made).resource_version);
    assert!(got.data["a"] == data, "data read back whole");
    assert_eq!(meta(&got).annotations[&note], value);
}

/// The largest Secret Kubernetes accepts, with its data, annotation key and annotation value.
fn largest_secret() -> (pb::Secret, Vec<u8>, String, String) {
    let data = vec![0x5au8; 1024 * 1024];
    let mut s = secret("", "largest", &[("a", &data)]);
    let note = "n".to_owned();
    let value = "v".repeat(256 * 1024 - note.len());
    s.metadata
        .as_mut()
        .unwrap()
        .annotations
        .insert(note.clone(), value.clone());
    (s, data, note, value)
}

/// Compaction expires what was read before it: a continue token (answered, as kube-apiserver
/// does, with a token that goes on at the current revision), a read at an old revision and a
/// watch from an old resourceVersion all fail with OutOfRange (Kubernetes' 410 Gone, "too old
/// resource version"); reads and watches from now keep working.
async fn compaction_expires_old_revisions_tokens_and_watches(srv: TestStore) {
    let mut c = srv.client().await;
    // A page of namespace `c`.
    let list_c = |limit, token: String| pb::ListRequest {
        namespace: "c".into(),
        limit,
        r#continue: token,
        ..Default::default()
    };
    let mut first = None;
    for i in 0..5 {
        let s = create(&mut c, secret("c", &format!("s{i}"), &[("k", b"v")]))
            .await
            .unwrap();
        first.get_or_insert(s);
    }
    let first = first.unwrap();
    let page = c.list(list_c(2, String::new())).await.unwrap().into_inner();
    assert!(!page.r#continue.is_empty());
    let listed_at: i64 = page.resource_version.parse().unwrap();
    let mut next = first.clone();
    next.data.insert("k".into(), b"w".to_vec());
    let updated = update(&mut c, next).await.unwrap();
    create(&mut c, secret("c", "late", &[])).await.unwrap();
    let backend = srv.backend();
    let now = backend.current_revision().await.unwrap();
    backend.compact(now).await.unwrap();

    let e = c
        .list(list_c(2, page.r#continue.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(
        e.message().starts_with(
            "The provided continue parameter is too old to display a consistent list result."
        ),
        "{}",
        e.message()
    );
    // As kube-apiserver's: a token that goes on from the same key at the current revision.
    let (_, token) = e.message().split_once("Continue token: ").unwrap();
    let rest = c
        .list(list_c(10, token.to_owned()))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<String> = rest
        .items
        .iter()
        .map(|s| s.metadata.clone().unwrap_or_default().name)
        .collect();
    assert_eq!(names, ["s2", "s3", "s4"]);
    assert!(rest.resource_version.parse::<i64>().unwrap() >= now.get());
    let e = c
        .get(pb::GetRequest {
            namespace: "c".into(),
            name: "s0".into(),
            revision: rv(&first),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    let e = c
        .watch(pb::WatchRequest {
            field_selector: String::new(),
            namespace: "c".into(),
            resource_version: listed_at.to_string(),
            label_selector: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(
        e.message().contains("too old resource version"),
        "{}",
        e.message()
    );
    // History keeps only what compaction left: the current version.
    let h = c
        .history(pb::HistoryRequest {
            namespace: "c".into(),
            name: "s0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let revisions: Vec<i64> = h.entries.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, vec![rv(&updated)]);
    // From now on, all is well: a fresh list, its pages, and a watch from its revision.
    let list = c.list(list_c(0, String::new())).await.unwrap().into_inner();
    assert_eq!(list.items.len(), 6);
    let mut w = c
        .watch(pb::WatchRequest {
            field_selector: String::new(),
            namespace: "c".into(),
            resource_version: list.resource_version.clone(),
            label_selector: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let made = create(&mut c, secret("c", "after", &[])).await.unwrap();
    let ev = tokio::time::timeout(std::time::Duration::from_secs(20), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.r#type, "ADDED");
    assert_eq!(
        meta(ev.object.as_ref().unwrap()).resource_version,
        meta(&made).resource_version
    );
}

/// The store server serves `keyward.v1.Encryption` next to Secrets: coverage names the write
/// provider and the plugin's key_id, and a migration streams its progress to the end.
async fn encryption_service_reports_coverage_and_migrates(srv: TestStore) {
    let mut c = srv.client().await;
    for i in 0..3 {
        create(&mut c, secret("enc", &format!("s{i}"), &[("k", b"v")]))
            .await
            .unwrap();
    }
    let mut e = srv.server().encryption().await;
    let st = e
        .status(pb::EncryptionStatusRequest {
            all_objects: true,
            include_history: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (st.write_provider.as_str(), st.write_key.as_str()),
        ("kms-v2", "kw")
    );
    assert_eq!((st.total, st.stale, st.undecryptable), (3, 0, 0));
    let key_id = srv.plugin.keyring.health().primary_key_id.to_string();
    assert_eq!(st.kms_key_ids, vec![key_id]);
    assert_eq!(st.objects.len(), 3);
    let mut progress = e
        .migrate(pb::MigrateRequest {
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(p) = progress.next().await {
        last = Some(p.unwrap());
    }
    let last = last.expect("a final progress message");
    assert!(last.finished);
    assert_eq!((last.total, last.rewritten, last.failed), (3, 0, 0));
    // A rate too small to pace by is refused naming it (it panicked the migration, and the
    // stream ended as if it had finished).
    for rate in [1e-300, 5e-324, 1e-20, 0.0009] {
        let e = e
            .migrate(pb::MigrateRequest {
                dry_run: true,
                rate,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{rate}: {e:?}");
        assert!(e.message().starts_with("rate: must be 0"), "{e:?}");
    }
}

/// A watch from a revision the store has not reached is refused (it used to wait silently, or
/// overflow at `i64::MAX`), and a watch without one streams the current Secrets a page at a
/// time: every one of them arrives (review findings 14 and 17).
async fn watch_from_a_future_revision_is_refused_and_the_initial_list_is_paged(srv: TestStore) {
    let mut c = srv.client().await;
    for i in 0..130 {
        create(&mut c, secret("big", &format!("s{i:03}"), &[("k", b"v")]))
            .await
            .unwrap();
    }
    let current: i64 = c
        .list(pb::ListRequest {
            namespace: "big".into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .resource_version
        .parse()
        .unwrap();
    for rv in [current + 1000, i64::MAX] {
        let e = c
            .watch(pb::WatchRequest {
                field_selector: String::new(),
                namespace: "big".into(),
                resource_version: rv.to_string(),
                label_selector: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{rv}: {}", e.message());
        assert_eq!(
            e.message(),
            format!("revision {rv} is in the future; the current revision is {current}"),
        );
    }
    let mut stream = c
        .watch(pb::WatchRequest {
            field_selector: String::new(),
            namespace: "big".into(),
            resource_version: String::new(),
            label_selector: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut names = Vec::new();
    while names.len() < 130 {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
            .await
            .expect("the initial list arrives")
            .unwrap()
            .unwrap();
        names.push(ev.object.unwrap().metadata.unwrap().name);
    }
    let want: Vec<String> = (0..130).map(|i| format!("s{i:03}")).collect();
    assert_eq!(names, want);
}

/// What one writer of [`contended_writes_lose_nothing`] had acknowledged: the resourceVersion of
/// each applied change, the Secret's name and the `data` it wrote there.
type Acked = Vec<(i64, String, std::collections::BTreeMap<String, Vec<u8>>)>;

/// Read-modify-write counters under contention, blind writes to one hot Secret and no-op updates,
/// from many clients at once. Every acknowledged change must be applied exactly once at its own
/// revision, and a watch must deliver exactly the acknowledged changes, in revision order, with
/// the bytes each wrote: no lost update, no change applied twice, no stale object returned.
async fn contended_writes_lose_nothing(srv: TestStore) {
    const COUNTERS: usize = 3;
    const INCREMENTERS: usize = 6;
    const INCREMENTS: usize = 25;
    const BLIND: usize = 2;
    const BLIND_WRITES: usize = 30;
    let ns = "race";
    let mut c = srv.client().await;
    let mut last = 0;
    for i in 0..COUNTERS {
        let s = create(&mut c, secret(ns, &format!("c{i}"), &[("n", b"0")]));
        last = rv(&s.await.unwrap());
    }
    let hot = create(&mut c, secret(ns, "hot", &[("w", b"-")]));
    last = last.max(rv(&hot.await.unwrap()));
    let mut stream = c
        .watch(pb::WatchRequest {
            field_selector: String::new(),
            namespace: ns.into(),
            resource_version: last.to_string(),
            label_selector: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    let mut tasks = Vec::new();
    for t in 0..INCREMENTERS {
        let mut c = srv.client().await;
        tasks.push(tokio::spawn(async move {
            let mut acked: Acked = Vec::new();
            for i in 0..INCREMENTS {
                let name = format!("c{}", (t + i) % COUNTERS);
                loop {
                    let cur = get(&mut c, ns, &name).await.unwrap();
                    let n: u64 = std::str::from_utf8(&cur.data["n"])
                        .unwrap()
                        .parse()
                        .unwrap();
                    // Every other increment first sends the object back unchanged: no write.
                    if i % 2 == 0 {
                        match update(&mut c, cur.clone()).await {
                            Ok(same) => assert_eq!(rv(&same), rv(&cur), "a no-op update wrote"),
                            Err(e) => assert_eq!(e.code(), Code::Aborted, "{e:?}"),
                        }
                    }
                    let mut next = cur.clone();
                    next.data
                        .insert("n".into(), (n + 1).to_string().into_bytes());
                    match update(&mut c, next).await {
                        Ok(done) => {
                            assert!(rv(&done) > rv(&cur));
                            assert_eq!(done.data["n"], (n + 1).to_string().into_bytes());
                            acked.push((rv(&done), name.clone(), done.data.clone()));
                            break;
                        }
                        // Someone else incremented it first: read again.
                        Err(e) if e.code() == Code::Aborted => continue,
                        Err(e) => panic!("increment of {name}: {e:?}"),
                    }
                }
            }
            acked
        }));
    }
    for t in 0..BLIND {
        let mut c = srv.client().await;
        tasks.push(tokio::spawn(async move {
            let mut acked: Acked = Vec::new();
            for i in 0..BLIND_WRITES {
                // No resourceVersion: the store retries its own conflicts; the write lands once.
                let w = format!("{t}-{i}");
                let done = update(&mut c, secret(ns, "hot", &[("w", w.as_bytes())]))
                    .await
                    .unwrap();
                assert_eq!(done.data["w"], w.as_bytes());
                acked.push((rv(&done), "hot".into(), done.data.clone()));
            }
            acked
        }));
    }
    // A reader meanwhile: a counter never goes back.
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let mut c = srv.client().await;
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut seen = [0u64; COUNTERS];
            while writing.load(std::sync::atomic::Ordering::SeqCst) {
                for (i, seen) in seen.iter_mut().enumerate() {
                    let s = get(&mut c, ns, &format!("c{i}")).await.unwrap();
                    let n: u64 = std::str::from_utf8(&s.data["n"]).unwrap().parse().unwrap();
                    assert!(n >= *seen, "c{i} went back from {seen} to {n}");
                    *seen = n;
                }
            }
        })
    };
    let mut acked: Acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    reader.await.unwrap();
    acked.sort_by_key(|(rv, ..)| *rv);
    let revisions: std::collections::BTreeSet<i64> = acked.iter().map(|(rv, ..)| *rv).collect();
    assert_eq!(
        revisions.len(),
        acked.len(),
        "two changes acknowledged at one revision"
    );

    // The final state: each counter counted every acknowledged increment.
    for i in 0..COUNTERS {
        let name = format!("c{i}");
        let count = acked.iter().filter(|(_, n, _)| *n == name).count();
        let s = get(&mut c, ns, &name).await.unwrap();
        assert_eq!(s.data["n"], count.to_string().into_bytes(), "{name}");
    }
    // The watch: exactly the acknowledged changes, in order, with what each wrote.
    let mut events = Vec::new();
    while events.len() < acked.len() {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
            .await
            .expect("every acknowledged change is watched")
            .unwrap()
            .unwrap();
        assert_eq!(ev.r#type, "MODIFIED");
        let o = ev.object.unwrap();
        events.push((rv(&o), meta(&o).name.clone(), o.data));
    }
    assert_eq!(events, acked);
}

/// Clients racing to create, then to delete, one name: each time exactly one wins and every
/// other gets `AlreadyExists` or `NotFound`; the winner's object is the one stored.
/// An update that names the current resourceVersion and loses the race to a delete is told the
/// Secret is gone (NotFound), never that it was modified (Conflict): kube-apiserver reads the
/// object again when its write's transaction fails, and then finds nothing to update.
async fn an_update_racing_a_delete_finds_it_gone(srv: TestStore) {
    let mut c = srv.client().await;
    let (mut applied, mut gone) = (0, 0);
    for round in 0..60 {
        let name = format!("r{round}");
        let s = create(&mut c, secret("race", &name, &[("k", b"v1")]))
            .await
            .unwrap();
        let mut next = s.clone();
        next.data.insert("k".into(), b"v2".to_vec());
        let (mut cu, mut cd) = (c.clone(), c.clone());
        let up = tokio::spawn(async move { update(&mut cu, next).await });
        let del = tokio::spawn(async move {
            cd.delete(pb::DeleteRequest {
                namespace: "race".into(),
                name,
                ..Default::default()
            })
            .await
        });
        del.await.unwrap().unwrap();
        match up.await.unwrap() {
            Ok(_) => applied += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::NotFound, "round {round}: {e:?}");
                gone += 1;
            }
        }
    }
    assert_eq!(applied + gone, 60);
}

async fn racing_creates_and_deletes_have_one_winner(srv: TestStore) {
    const CLIENTS: usize = 6;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(srv.client().await);
    }
    for round in 0..8 {
        let creates: Vec<_> = clients
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, mut c)| {
                tokio::spawn(async move {
                    let who = format!("{round}-{i}");
                    create(&mut c, secret("dup", "x", &[("who", who.as_bytes())])).await
                })
            })
            .collect();
        let mut won = Vec::new();
        for r in creates {
            match r.await.unwrap() {
                Ok(s) => won.push(s),
                Err(e) => assert_eq!(e.code(), Code::AlreadyExists, "{e:?}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {} creates won", won.len());
        let mut c = clients[0].clone();
        let stored = get(&mut c, "dup", "x").await.unwrap();
        assert_eq!((rv(&stored), &stored.data), (rv(&won[0]), &won[0].data));

        let deletes: Vec<_> = clients
            .iter()
            .cloned()
            .map(|mut c| {
                tokio::spawn(async move {
                    c.delete(pb::DeleteRequest {
                        namespace: "dup".into(),
                        name: "x".into(),
                        ..Default::default()
                    })
                    .await
                })
            })
            .collect();
        let mut deleted = 0;
        for r in deletes {
            match r.await.unwrap() {
                Ok(gone) => {
                    deleted += 1;
                    assert_eq!(gone.into_inner().data, stored.data);
                }
                Err(e) => assert_eq!(e.code(), Code::NotFound, "{e:?}"),
            }
        }
        assert_eq!(deleted, 1, "round {round}: {deleted} deletes won");
        assert_eq!(
            get(&mut c, "dup", "x").await.unwrap_err().code(),
            Code::NotFound
        );
    }
}

/// Runs each case, with `--history N`, on sled (`<case>::sled`), on the log-structured engine
/// (`<case>::log`) and on a real etcd server (`<case>::etcd`), with optional attributes for the
/// etcd run.
macro_rules! on_sled_and_etcd {
    ($($case:ident($history:expr) $(, etcd: #[$attr:meta])?;)*) => {
        $(
            mod $case {
                use super::TestStore;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sled() {
                    super::$case(TestStore::sled($history).await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn log() {
                    super::$case(TestStore::log($history).await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $(#[$attr])?
                async fn etcd() {
                    super::$case(TestStore::etcd($history).await).await;
                }
            }
        )*
    };
}

/// A Kubernetes watch's bookmarks (`Store::watch_with_bookmarks`): on every engine one where
/// the starting list ends, at the list's revision. Then the embedded engines report how far
/// they have looked, so a change in another namespace moves the next bookmark; etcd reports no
/// progress without progress requests (not used: etcd 3.4.23 can answer one before events up
/// to its revision were sent), so there the next item is the next event in the namespace and
/// the Kubernetes watch's bookmarks carry that event's revision (the README's claim).
async fn kubernetes_watch_bookmarks(srv: TestStore) {
    use keyward::store::{ResourceVersion, Selector, WatchKind};
    let mut c = srv.client().await;
    create(&mut c, secret("bm", "a", &[])).await.unwrap();
    let other = create(&mut c, secret("bm-other", "b", &[])).await.unwrap();
    let store = srv.server().store().clone();
    let mut w = store
        .watch_with_bookmarks(
            Some(&crate::support::ns("bm")),
            Selector::default(),
            ResourceVersion::Unset,
        )
        .await
        .unwrap();
    assert_eq!(next(&mut w).await.0, WatchKind::Added);
    let listed = next(&mut w).await;
    assert_eq!(
        (listed.0, &listed.2),
        (WatchKind::Bookmark, &meta(&other).resource_version)
    );
    let elsewhere = create(&mut c, secret("bm-other", "c", &[])).await.unwrap();
    if !srv.is_etcd() {
        let progress = next(&mut w).await;
        assert_eq!(
            (progress.0, &progress.2),
            (WatchKind::Bookmark, &meta(&elsewhere).resource_version)
        );
    }
    let here = create(&mut c, secret("bm", "d", &[])).await.unwrap();
    let ev = next(&mut w).await;
    assert_eq!(
        (ev.0, ev.1.as_str(), &ev.2),
        (WatchKind::Added, "d", &meta(&here).resource_version)
    );
}

/// A watch through a label selector sees a Secret added when a change makes it match and
/// deleted when a change makes it stop matching; the deletion carries the version that
/// matched, at the revision of that change, as kube-apiserver's watchers send it.
async fn watch_through_a_selector_sees_secrets_come_and_go(srv: TestStore) {
    use keyward::store::{ResourceVersion, Selector, WatchKind};
    let mut c = srv.client().await;
    let labelled = |value: &str, tier: Option<&str>| {
        let mut s = secret("sel", "w", &[("k", value.as_bytes())]);
        if let Some(t) = tier {
            s.metadata
                .as_mut()
                .unwrap()
                .labels
                .insert("tier".into(), t.into());
        }
        s
    };
    let first = create(&mut c, labelled("v0", None)).await.unwrap();
    let store = srv.server().store().clone();
    let from = ResourceVersion::try_from(meta(&first).resource_version.as_str()).unwrap();
    let mut w = store
        .watch(
            Some(&crate::support::ns("sel")),
            Selector::parse("tier=web").unwrap(),
            from,
        )
        .await
        .unwrap();
    let web = update(&mut c, labelled("v1", Some("web"))).await.unwrap();
    let db = update(&mut c, labelled("v2", Some("db"))).await.unwrap();
    let ev = next_event(&mut w).await;
    assert_eq!(ev.kind, WatchKind::Added);
    assert_eq!(
        ev.object.metadata.resource_version,
        meta(&web).resource_version
    );
    let ev = next_event(&mut w).await;
    assert_eq!(ev.kind, WatchKind::Deleted);
    assert_eq!(
        ev.object.metadata.resource_version,
        meta(&db).resource_version
    );
    assert_eq!(
        ev.object.metadata.labels["tier"], "web",
        "the version that matched"
    );
    assert_eq!(ev.object.data["k"].as_slice(), b"v1");
}

/// The next event or bookmark of `w` (within 10 s).
async fn next_event(w: &mut keyward::store::WatchEvents) -> keyward::store::WatchEvent {
    tokio::time::timeout(std::time::Duration::from_secs(10), w.next())
        .await
        .expect("an event or bookmark")
        .unwrap()
        .unwrap()
}

/// The next event or bookmark of `w` (within 10 s): kind, name, resourceVersion.
async fn next(w: &mut keyward::store::WatchEvents) -> (keyward::store::WatchKind, String, String) {
    let ev = next_event(w).await;
    let m = &ev.object.metadata;
    (ev.kind, m.name.clone(), m.resource_version.clone())
}

on_sled_and_etcd! {
    kubernetes_watch_bookmarks(10);
    watch_through_a_selector_sees_secrets_come_and_go(10);
    create_get_and_validation(10);
    largest_valid_secret_is_stored(10);
    update_conflicts_and_immutability(10);
    delete_preconditions(10);
    list_namespaces_selectors_and_pages(10);
    watch_replays_then_follows(10);
    watch_from_a_future_revision_is_refused_and_the_initial_list_is_paged(10);
    // sled keeps 3 versions per key; etcd keeps all until compaction (see the body).
    history_get_at_revision_and_rollback(3);
    compaction_expires_old_revisions_tokens_and_watches(10);
    raw_view_restart_and_no_plaintext_on_disk(10);
    encryption_service_reports_coverage_and_migrates(10);
    contended_writes_lose_nothing(10);
    racing_creates_and_deletes_have_one_winner(10);
    an_update_racing_a_delete_finds_it_gone(10);
}
