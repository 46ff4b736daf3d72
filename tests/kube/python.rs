//! The official Python client (`kubernetes` from PyPI, tests/python/kube_client.py) against
//! the Kubernetes API of a store server started in this process: reads, selectors, watch
//! (synthetic ADDED, live changes, `timeout_seconds`), the 410 path of a watch from a compacted
//! revision, and writes.

use std::path::{Path, PathBuf};

use crate::support::store::{aesgcm_config, pb_secret, secrets_client};
use crate::support::StoreHarness;
use keyward::backend::sled::SledOptions;
use keyward::backend::BackendSpec;
use keyward::kube::kubeconfig::{kubeconfig, DevCa};
use keyward::kube::KubeOptions;
use keyward::pb::keyward_v1 as pb;
use keyward::server::StoreOptions;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kube_client.py");

struct World {
    dir: tempfile::TempDir,
    server: StoreHarness,
    kubeconfig: PathBuf,
    metrics: keyward::metrics::Metrics,
}

/// A store serving the Kubernetes API with a dev CA, whose sled log keeps `retention`
/// revisions for watches; the admin kubeconfig beside it.
async fn start(retention: u64) -> World {
    start_with(retention, |_| {}).await
}

/// [`start`] with the Kubernetes listener's options changed by `adjust`.
async fn start_with(retention: u64, adjust: impl FnOnce(&mut KubeOptions)) -> World {
    start_full(retention, adjust, None, |_| {}).await
}

/// [`start_with`], authorizing with the RBAC `policy` if one is given.
async fn start_full(
    retention: u64,
    adjust: impl FnOnce(&mut KubeOptions),
    policy: Option<&str>,
    access: impl FnOnce(&mut keyward::access::AccessOptions),
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = DevCa::load_or_create(d).unwrap();
    let server_cert = ca.issue_server().unwrap();
    let mut kube = KubeOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        server_cert.cert.into_bytes(),
        zeroize::Zeroizing::new(server_cert.key.as_bytes().to_vec()),
    );
    kube.client_ca = Some(ca.pem().as_bytes().to_vec());
    kube.limits.bookmark_interval = std::time::Duration::from_millis(200);
    kube.limits.max_watches = 3;
    adjust(&mut kube);
    let mut o = StoreOptions::new(
        BackendSpec::Sled {
            dir: d.join("store"),
            options: SledOptions {
                layer_bytes: keyward::backend::sled::DEFAULT_LAYER_BYTES,
                log_retention: retention,
                ..SledOptions::default()
            },
        },
        aesgcm_config(d),
        d.join("kw.sock"),
    );
    o.kube = Some(kube);
    if let Some(policy) = policy {
        std::fs::write(d.join("policy.yaml"), policy).unwrap();
        o.access_control.authorization_policy = Some(d.join("policy.yaml"));
    }
    access(&mut o.access_control);
    let metrics = keyward::metrics::Metrics::new();
    o.metrics = Some(metrics.clone());
    let server = StoreHarness::start(o).await;
    let addr = server.kube_addr.expect("the Kubernetes API listens");
    let admin = ca
        .issue_client("admin", &["system:masters".to_owned()])
        .unwrap();
    let text = kubeconfig(&format!("https://{addr}"), ca.pem(), "kw", "admin", &admin);
    let kubeconfig = d.join("kubeconfig");
    std::fs::write(&kubeconfig, text.as_bytes()).unwrap();
    std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(d.join("admin.pem"), &admin.cert).unwrap();
    std::fs::write(d.join("admin.key"), admin.key.as_bytes()).unwrap();
    World {
        dir,
        server,
        kubeconfig,
        metrics,
    }
}

fn python(kubeconfig: &Path, args: &[&str]) {
    let k = kubeconfig.to_str().unwrap();
    let out = crate::support::tools::python(&["kubernetes"], &[&[SCRIPT, k], args].concat(), b"");
    assert_eq!(out.trim(), "ok", "{out}");
}

/// [`start`] for the contention tests, whose many clients all come from 127.0.0.1: the
/// per-address caps (64 connections, 32 requests in flight by default) raised to 128, as an
/// operator would for such a client.
async fn start_for_many_clients() -> World {
    start_with(100_000, |kube| {
        kube.conn.max_per_address = 128;
        kube.limits.max_in_flight_per_client = 128;
    })
    .await
}

/// Runs a script of Python's standard library (`args`: the script, then its arguments) off
/// the runtime's threads; it must print "ok".
async fn stdlib_script<const N: usize>(args: [String; N]) {
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::tools::python(&["ssl", "http.client"], &args, b"")
    })
    .await
    .unwrap();
    assert_eq!(out.trim(), "ok", "{out}");
}

/// Runs kube_client.py's `args` (its MODE and arguments) against `w`, off the runtime's
/// threads (the script blocks).
async fn python_mode(w: &World, args: &[&str]) {
    let kubeconfig = w.kubeconfig.clone();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python(&kubeconfig, &args);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_reads_lists_watches_and_deletes() {
    let w = start(100_000).await;
    let mut c = secrets_client(&w.server.socket).await;
    let mut s1 = pb_secret("py", "s1", &[("user", b"admin")]);
    if let Some(m) = s1.metadata.as_mut() {
        m.labels.insert("tier".into(), "web".into());
    }
    for s in [s1, pb_secret("py", "s2", &[("k", b"v")])] {
        c.create(pb::CreateRequest {
            secret: Some(s),
            dry_run: false,
        })
        .await
        .unwrap();
    }
    python_mode(&w, &["read", "py"]).await;
    drop(w.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_watch_and_continue_from_a_compacted_revision_are_410() {
    let w = start(3).await;
    let mut c = secrets_client(&w.server.socket).await;
    for i in 0..10 {
        c.create(pb::CreateRequest {
            secret: Some(pb_secret("py", &format!("s{i}"), &[("k", b"v")])),
            dry_run: false,
        })
        .await
        .unwrap();
    }
    python_mode(&w, &["expired", "py", "1"]).await;
    // A list's continue token whose revision was compacted meanwhile.
    python_mode(&w, &["continue-expired", "py"]).await;
}

/// The wire: exact Status bodies, limits, OpenAPI v2, watch framing (Tables, bookmarks, 410).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_status_limits_and_watch_framing() {
    let w = start(3).await;
    let mut c = secrets_client(&w.server.socket).await;
    for i in 1..=8 {
        c.create(pb::CreateRequest {
            secret: Some(pb_secret("py", &format!("s{i}"), &[("k", b"v")])),
            dry_run: false,
        })
        .await
        .unwrap();
    }
    let d = w.dir.path().to_owned();
    let addr = w.server.kube_addr.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kube_http.py").to_owned();
    let path = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let args = [
        script,
        "127.0.0.1".to_owned(),
        addr.port().to_string(),
        path("ca.pem"),
        path("admin.pem"),
        path("admin.key"),
        "py".to_owned(),
        "1".to_owned(),
    ];
    stdlib_script(args).await;
    let m = w.metrics.render(false).await;
    for line in [
        "keyward_kube_requests_total{verb=\"get\",code=\"404\"}",
        "keyward_kube_requests_total{verb=\"get\",code=\"401\"} 2",
        "keyward_kube_requests_total{verb=\"create\",code=\"413\"} 1",
        "keyward_kube_requests_total{verb=\"watch\",code=\"429\"} 2",
        "keyward_kube_requests_total{verb=\"deletecollection\",code=\"200\"} 3",
        // An Accept header the server writes nothing of: counted by its code, not as "other".
        "keyward_kube_requests_total{verb=\"get\",code=\"406\"}",
        "keyward_kube_requests_total{verb=\"list\",code=\"406\"}",
    ] {
        assert!(m.contains(line), "{line} in {m}");
    }
}

/// A watch that allows bookmarks gets one 2 s before its `timeoutSeconds` ends it, as from
/// kube-apiserver, even when the periodic ones are an hour apart: a client whose watch times
/// out resumes from where the store had got to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bookmark_comes_before_a_watch_times_out() {
    let w = start_with(3, |k| {
        k.limits.bookmark_interval = std::time::Duration::from_secs(3600)
    })
    .await;
    let mut c = secrets_client(&w.server.socket).await;
    let created = c
        .create(pb::CreateRequest {
            secret: Some(pb_secret("py", "s1", &[("k", b"v")])),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    let rv = created.metadata.unwrap().resource_version;
    let d = w.dir.path().to_owned();
    let path = |f: &str| d.join(f).to_str().unwrap().to_owned();
    let script = "import http.client, json, ssl, sys\n\
        ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
        ctx.load_cert_chain(sys.argv[3], sys.argv[4])\n\
        c = http.client.HTTPSConnection('127.0.0.1', int(sys.argv[1]), context=ctx, timeout=30)\n\
        c.request('GET', '/api/v1/namespaces/py/secrets?watch=1&allowWatchBookmarks=true&timeoutSeconds=4&resourceVersion=' + sys.argv[5])\n\
        r = c.getresponse()\n\
        evs = [json.loads(l) for l in r.read().splitlines() if l.strip()]\n\
        got = [(e['type'], e['object']['metadata']['resourceVersion']) for e in evs]\n\
        assert got == [('BOOKMARK', sys.argv[5])], got\n\
        print('ok')\n";
    let args = [
        "-c".to_owned(),
        script.to_owned(),
        w.server.kube_addr.unwrap().port().to_string(),
        path("ca.pem"),
        path("admin.pem"),
        path("admin.key"),
        rv,
    ];
    stdlib_script(args).await;
}

/// What kube_refusals.py's users may do in namespace `py`: `lister` list and delete Secrets,
/// `collector` only deletecollection them, `single` get, list and watch Secret `a1` alone
/// (`resourceNames`); `nobody` has no role.
const REFUSALS_POLICY: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: lister, namespace: py}\nrules:\n  - {apiGroups: [\"\"], resources: [secrets], verbs: [list, delete]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: lister, namespace: py}\nsubjects: [{kind: User, name: lister, apiGroup: rbac.authorization.k8s.io}]\nroleRef: {kind: Role, name: lister, apiGroup: rbac.authorization.k8s.io}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: collector, namespace: py}\nrules:\n  - {apiGroups: [\"\"], resources: [secrets], verbs: [deletecollection]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: collector, namespace: py}\nsubjects: [{kind: User, name: collector, apiGroup: rbac.authorization.k8s.io}]\nroleRef: {kind: Role, name: collector, apiGroup: rbac.authorization.k8s.io}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: single, namespace: py}\nrules:\n  - {apiGroups: [\"\"], resources: [secrets], resourceNames: [a1], verbs: [get, list, watch]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: single, namespace: py}\nsubjects: [{kind: User, name: single, apiGroup: rbac.authorization.k8s.io}]\nroleRef: {kind: Role, name: single, apiGroup: rbac.authorization.k8s.io}\n";

/// Refusals as kube-apiserver makes them (tests/python/kube_refusals.py): authorization before
/// the body is read, deletecollection as its own verb with its preconditions applied to each
/// Secret, DeleteOptions validation, a dry-run create of a name taken, YAML nested too deep; a
/// list and watch of the one Secret a `resourceNames` rule allows; discovery and paths nothing
/// serves authorized too; and every request in the audit log, those the front end answers or
/// refuses alone included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_as_kube_apiserver_makes_them() {
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("audit.log");
    let policy = audit_dir.path().join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n",
    )
    .unwrap();
    let log = keyward::audit::LogConfig {
        fsync: false,
        ..keyward::audit::LogConfig::new(&audit_log)
    };
    let w = start_full(
        100_000,
        |_| {},
        Some(REFUSALS_POLICY),
        |a| {
            a.audit = Some(keyward::access::AuditOptions {
                log,
                policy_file: Some(policy),
            })
        },
    )
    .await;
    let d = w.dir.path().to_owned();
    let ca = DevCa::load_or_create(&d).unwrap();
    for user in ["nobody", "lister", "collector", "single"] {
        let cert = ca.issue_client(user, &[]).unwrap();
        std::fs::write(d.join(format!("{user}.pem")), &cert.cert).unwrap();
        std::fs::write(d.join(format!("{user}.key")), cert.key.as_bytes()).unwrap();
    }
    let mut c = secrets_client(&w.server.socket).await;
    for name in ["a1", "a2", "a3", "b1"] {
        let mut s = pb_secret("py", name, &[("k", b"v")]);
        if let Some(m) = s.metadata.as_mut() {
            m.labels.insert("g".into(), name[..1].into());
        }
        c.create(pb::CreateRequest {
            secret: Some(s),
            dry_run: false,
        })
        .await
        .unwrap();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/kube_refusals.py");
    let args = [
        script.to_owned(),
        "127.0.0.1".to_owned(),
        w.server.kube_addr.unwrap().port().to_string(),
        d.to_str().unwrap().to_owned(),
        "py".to_owned(),
        audit_log.to_str().unwrap().to_owned(),
    ];
    stdlib_script(args).await;
}

/// Create, patch, replace and delete: these run `kube::objects` and `kube::patch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_writes() {
    let w = start(100_000).await;
    python_mode(&w, &["write", "py"]).await;
}

/// Many Python clients at once: read-modify-replace of one Secret and merge patches of another
/// (`contend` in kube_client.py): no acknowledged write lost or applied twice, and a watch gives
/// exactly the acknowledged writes in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_contending_lose_no_write() {
    let w = start(100_000).await;
    python_mode(&w, &["contend", "race"]).await;
}

/// Upstream's TestPatchConflicts: 100 strategic merge patches of one Secret at once all succeed
/// (a patch without a resourceVersion is applied again to the new version for as long as the
/// object changes under it), each with its effect (`patch-storm` in kube_client.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_patches_all_succeed() {
    let w = start_for_many_clients().await;
    python_mode(&w, &["patch-storm", "storm"]).await;
}

/// Ten clients at once each remove their own finalizer from a Secret being deleted: all succeed
/// and the last removal deletes it; fifty concurrent creates with `generateName` get fifty
/// names (`finalizers` in kube_client.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_finalizer_removals_and_generated_names() {
    let w = start_for_many_clients().await;
    python_mode(&w, &["finalizers", "fin"]).await;
}

/// Four field managers server-side apply one key at once: without force exactly one wins and
/// the others get kube-apiserver's apply conflict naming the winner; with force all succeed and
/// the key has one owner (`apply-race` in kube_client.py).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_server_side_applies_conflict_as_upstream() {
    let w = start(100_000).await;
    python_mode(&w, &["apply-race", "race"]).await;
}

/// The Python client's read-modify-replace sends back every time it read with a `+00:00`
/// offset (and would send fractions): the server keeps them as kube-apiserver does, whole
/// seconds in UTC, so the Secret is still stored in kube-apiserver's protobuf encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_times_come_back_as_kube_apiserver_writes_them() {
    let w = start(100_000).await;
    python_mode(&w, &["times", "py"]).await;
    let kv = w
        .server
        .store()
        .raw_get("/registry/secrets/py/times")
        .await
        .unwrap()
        .expect("stored");
    let config = keyward::encryption::config::parse(
        &std::fs::read_to_string(w.dir.path().join("enc.yaml")).unwrap(),
        keyward::encryption::ParseOptions {
            kms_v1: false,
            reload: false,
        },
    )
    .unwrap();
    let enc = keyward::encryption::Encryption::build(&config).await;
    let (plain, _) = enc
        .for_resource("secrets")
        .from_storage("/registry/secrets/py/times", &kv.value)
        .await
        .unwrap();
    assert!(
        plain.starts_with(keyward::store::stored::MAGIC),
        "stored as {:?}",
        String::from_utf8_lossy(&plain[..plain.len().min(16)])
    );
    let s = keyward::store::stored::decode(&plain).unwrap();
    let managers: Vec<(&str, &str)> = s
        .metadata
        .managed_fields
        .iter()
        .map(|m| (m.manager.as_str(), m.time.as_str()))
        .collect();
    assert_eq!(managers.len(), 3, "{managers:?}");
    assert!(
        managers
            .iter()
            .all(|(_, t)| t.ends_with('Z') && t.len() == 20),
        "{managers:?}"
    );
}
