//! The real `keyward server --backend etcd` on real etcd processes: a three-member cluster that
//! loses the member keyward talks to in the middle of a write load, a single member that goes
//! away and comes back, start-up refusals, and the stored bytes read back by an independent
//! client (`etcdctl`) and decrypted by an independent implementation (Python's `cryptography`).
//!
//! Needs Debian's etcd-server and etcd-client (`etcd`, `etcdctl`), and for the last test python3
//! with `tests/python/requirements.txt`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::etcd::{etcdctl_keys, etcdctl_kv, etcdctl_put, CtlKv, Etcd};
use crate::support::store::{aesgcm_config, secrets_client, AESGCM_KEY};
use crate::support::tools::python;
use crate::support::{bin, Proc};
use base64::Engine as _;
use keyward::pb::keyward_v1 as pb;
use keyward::pb::keyward_v1::secrets_client::SecretsClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// What every stored value starts with: the provider and the key's name.
const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:k1:";
/// Longest any one call may take before the test calls it a hang (keyward's own per-endpoint
/// timeout is 5 s, so a call fails well before this).
const CALL_LIMIT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `keyward server --backend etcd` as a child process, on a Unix socket in a temp dir.
struct Server {
    proc: Proc,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Server {
    /// Starts the server on `endpoints` and waits for its socket.
    fn start(endpoints: &str) -> Server {
        Self::start_logging(endpoints, "info")
    }

    /// Starts the server on `endpoints` with `RUST_LOG=log` and waits for its socket.
    fn start_logging(endpoints: &str, log: &str) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = aesgcm_config(dir.path());
        let socket = dir.path().join("keyward.sock");
        let proc = Proc::spawn(
            &[
                "server",
                "--backend",
                "etcd",
                "--etcd-endpoints",
                endpoints,
                "--encryption-config",
                cfg.to_str().expect("utf-8 path"),
                "--socket",
                socket.to_str().expect("utf-8 path"),
            ],
            &[("RUST_LOG", log), ("NO_COLOR", "1")],
            &dir.path().join("server.log"),
            &socket,
        );
        Server { proc, dir, socket }
    }

    async fn client(&self) -> SecretsClient<Channel> {
        secrets_client(&self.socket).await
    }

    /// Runs a client command against this server; returns (success, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin())
            .args(args)
            .arg("--server")
            .arg(format!("unix://{}", self.socket.display()))
            .env_remove("KEYWARD_SERVER")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run keyward");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Panics with the server's log if it has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.proc.child.try_wait().expect("try_wait") {
            panic!("keyward server exited ({status}): {}", self.proc.stderr());
        }
    }
}

fn secret(ns: &str, name: &str, key: &str, value: &[u8]) -> pb::Secret {
    crate::support::store::pb_secret(ns, name, &[(key, value)])
}

fn rv(s: &pb::Secret) -> i64 {
    s.metadata
        .as_ref()
        .expect("metadata")
        .resource_version
        .parse()
        .expect("numeric resourceVersion")
}

/// Awaits one call, failing the test if it hangs.
async fn within<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(CALL_LIMIT, call).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not return within {CALL_LIMIT:?}"),
    }
}

async fn create(c: &mut SecretsClient<Channel>, s: pb::Secret) -> Result<pb::Secret, Status> {
    let req = pb::CreateRequest {
        secret: Some(s),
        dry_run: false,
    };
    within("create", c.create(req))
        .await
        .map(|r| r.into_inner())
}

async fn update(c: &mut SecretsClient<Channel>, s: pb::Secret) -> Result<pb::Secret, Status> {
    let req = pb::UpdateRequest {
        secret: Some(s),
        dry_run: false,
    };
    within("update", c.update(req))
        .await
        .map(|r| r.into_inner())
}

async fn get(c: &mut SecretsClient<Channel>, ns: &str, name: &str) -> Result<pb::Secret, Status> {
    let req = pb::GetRequest {
        namespace: ns.into(),
        name: name.into(),
        revision: 0,
    };
    within("get", c.get(req)).await.map(|r| r.into_inner())
}

/// Polls `f` until it gives a value, for at most `limit` (only so that a bug cannot hang the
/// test; nothing is asserted about how long it takes).
fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{what}: still not so after {limit:?}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a. A three-member cluster loses the member keyward uses, under a write load.

const WRITERS: usize = 4;
const NAMES_PER_WRITER: usize = 5;
/// Acknowledged writes (all writers) before the kill.
const BEFORE_KILL: usize = 60;
/// Acknowledged writes each writer makes after the kill before it stops.
const AFTER_KILL: usize = 25;

/// Shared progress of the writers.
#[derive(Default)]
struct Load {
    acked: AtomicUsize,
    killed: AtomicBool,
}

/// What one writer saw.
#[derive(Debug, Default)]
struct WriterReport {
    /// Per Secret: the last acknowledged (resourceVersion, value).
    acked: BTreeMap<String, (i64, Vec<u8>)>,
    /// Per Secret: values of writes that failed, so whose outcome is unknown.
    unknown: BTreeMap<String, BTreeSet<Vec<u8>>>,
    /// Writes acknowledged that were sent after the kill.
    after_kill: usize,
    /// Failures by gRPC code, with one message each.
    failures: BTreeMap<String, (usize, String)>,
}

/// Creates or updates (unconditionally) `name` with `value`, tracking whether it exists.
async fn put_secret(
    c: &mut SecretsClient<Channel>,
    name: &str,
    value: &[u8],
    exists: &mut bool,
) -> Result<pb::Secret, Status> {
    for _ in 0..3 {
        let s = secret("load", name, "v", value);
        let res = if *exists {
            update(c, s).await
        } else {
            create(c, s).await
        };
        match res {
            Ok(s) => {
                *exists = true;
                return Ok(s);
            }
            // An earlier create whose outcome was unknown did happen, or the other way round.
            Err(e) if e.code() == Code::AlreadyExists => *exists = true,
            Err(e) if e.code() == Code::NotFound => *exists = false,
            Err(e) => return Err(e),
        }
    }
    Err(Status::internal(
        "create and update disagree on whether it exists",
    ))
}

async fn writer(w: usize, socket: PathBuf, load: Arc<Load>) -> WriterReport {
    let mut c = secrets_client(&socket).await;
    let names: Vec<String> = (0..NAMES_PER_WRITER)
        .map(|j| format!("w{w}-s{j}"))
        .collect();
    let mut exists = vec![false; names.len()];
    let mut report = WriterReport::default();
    let deadline = Instant::now() + Duration::from_secs(180);
    for round in 0u32.. {
        for (j, name) in names.iter().enumerate() {
            let after_kill = load.killed.load(Ordering::SeqCst);
            let value = format!("{name}/round-{round}").into_bytes();
            match put_secret(&mut c, name, &value, &mut exists[j]).await {
                Ok(s) => {
                    report.acked.insert(name.clone(), (rv(&s), value));
                    load.acked.fetch_add(1, Ordering::SeqCst);
                    if after_kill {
                        report.after_kill += 1;
                    }
                }
                Err(e) => {
                    report
                        .unknown
                        .entry(name.clone())
                        .or_default()
                        .insert(value);
                    let entry = report
                        .failures
                        .entry(format!("{:?}", e.code()))
                        .or_insert((0, e.message().to_owned()));
                    entry.0 += 1;
                }
            }
        }
        if report.after_kill >= AFTER_KILL {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writer {w} stopped making progress: {report:?}"
        );
    }
    report
}

#[test]
fn acknowledged_writes_survive_killing_the_etcd_member_in_use() {
    let mut etcd = Etcd::start_cluster(3);
    // The backend's debug log names the member a failed request went to.
    let mut srv =
        Server::start_logging(&etcd.endpoints_flag(), "info,keyward::backend::etcd=debug");
    let rt = runtime();
    let load = Arc::new(Load::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| rt.spawn(writer(w, srv.socket.clone(), load.clone())))
        .collect();

    // keyward's client starts on the first endpoint and stays there while it answers: kill it
    // with SIGKILL in the middle of the load, so requests must move to the other two.
    eventually("writes acknowledged before the kill", CALL_LIMIT, || {
        let n = load.acked.load(Ordering::SeqCst);
        if n >= BEFORE_KILL {
            Ok(())
        } else {
            Err(format!("{n} acknowledged"))
        }
    });
    etcd.kill(0);
    load.killed.store(true, Ordering::SeqCst);
    let reports: Vec<WriterReport> = rt.block_on(async {
        let mut reports = Vec::new();
        for w in writers {
            reports.push(w.await.expect("writer task"));
        }
        reports
    });
    srv.assert_running();

    // Writes kept succeeding on the remaining quorum (each writer stopped only after
    // AFTER_KILL acknowledged writes sent after the kill), and failed only as Unavailable: the
    // outcome of a write in flight on the dead member is unknown, and keyward says so.
    let mut failures: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for r in &reports {
        assert!(r.after_kill >= AFTER_KILL);
        for (code, (n, msg)) in &r.failures {
            let e = failures.entry(code.clone()).or_insert((0, msg.clone()));
            e.0 += n;
        }
    }
    eprintln!("failures during the failover: {failures:?}");
    assert!(
        failures.keys().all(|code| code == "Unavailable"),
        "only Unavailable is expected while a member dies: {failures:?}"
    );
    // The client really was on the killed member and moved: a request to it failed, or one
    // was retried on another member. (Every write acknowledged after the kill went to one of
    // the other two, since the first is dead.)
    let log = srv.proc.stderr();
    let dead = etcd.endpoint(0);
    assert!(
        log.lines().any(|l| l.contains("etcd endpoint switched")
            || (l.contains("etcd request failed") && l.contains(dead))),
        "no failover from {dead} logged: {log}"
    );

    // No acknowledged write is lost: each Secret is at its last acknowledged version, or at a
    // later one whose write failed (outcome unknown) and yet took effect.
    let survivors = format!("{},{}", etcd.endpoint(1), etcd.endpoint(2));
    let mut latest: BTreeMap<String, CtlKv> = BTreeMap::new();
    rt.block_on(async {
        let mut c = srv.client().await;
        for r in &reports {
            for (name, (acked_rv, acked_value)) in &r.acked {
                let s = get(&mut c, "load", name).await.expect("get after the load");
                let value = &s.data["v"];
                if rv(&s) == *acked_rv {
                    assert_eq!(value, acked_value, "{name} at its acknowledged revision");
                } else {
                    assert!(rv(&s) > *acked_rv, "{name} went back in time");
                    assert!(
                        r.unknown.get(name).is_some_and(|u| u.contains(value)),
                        "{name} holds {:?}, neither the acknowledged {:?} nor a failed write",
                        String::from_utf8_lossy(value),
                        String::from_utf8_lossy(acked_value)
                    );
                }
                // etcdctl, an independent client, sees the same revision, encrypted.
                let key = format!("/registry/secrets/load/{name}");
                let kv = etcdctl_kv(&survivors, &key, &[])
                    .expect("etcdctl get")
                    .unwrap_or_else(|| panic!("{key} missing in etcd"));
                assert_eq!(
                    kv.mod_revision,
                    rv(&s),
                    "{key}: resourceVersion = mod_revision"
                );
                assert!(
                    kv.value.starts_with(PREFIX),
                    "{key} is not stored with the provider prefix: {:?}",
                    String::from_utf8_lossy(&kv.value[..kv.value.len().min(40)])
                );
                assert!(
                    !contains(&kv.value, value),
                    "{key} holds its value in plaintext"
                );
                latest.insert(key, kv);
            }
        }
    });
    let keys = etcdctl_keys(&survivors, "/registry/secrets/load/");
    assert_eq!(
        keys,
        latest.keys().cloned().collect::<Vec<_>>(),
        "exactly the written Secrets are in etcd"
    );

    // The killed member comes back and catches up: a serializable read (answered from its own
    // copy, without asking the leader) shows every latest value.
    etcd.restart(0);
    let member0 = etcd.endpoint(0).to_owned();
    for (key, want) in &latest {
        eventually(
            &format!("{key} on the restarted member"),
            CALL_LIMIT,
            || match etcdctl_kv(&member0, key, &["--consistency=s"])? {
                Some(kv) if kv == *want => Ok(()),
                other => Err(format!("has {other:?}")),
            },
        );
    }
    // And the store keeps working with all three members.
    rt.block_on(async {
        let mut c = srv.client().await;
        let mut exists = true;
        let s = put_secret(&mut c, "w0-s0", b"after the restart", &mut exists)
            .await
            .expect("write after the member's restart");
        let kv =
            eventually(
                "the new write on the restarted member",
                CALL_LIMIT,
                || match etcdctl_kv(
                    &member0,
                    "/registry/secrets/load/w0-s0",
                    &["--consistency=s"],
                )? {
                    Some(kv) if kv.mod_revision == rv(&s) => Ok(kv),
                    other => Err(format!("has {other:?}")),
                },
            );
        assert!(kv.value.starts_with(PREFIX));
    });
    srv.assert_running();
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// b. etcd goes away and comes back.

#[test]
fn with_etcd_down_requests_fail_unavailable_and_recover_when_it_returns() {
    let mut etcd = Etcd::start();
    let mut srv = Server::start(&etcd.endpoints_flag());
    let rt = runtime();
    let made = rt.block_on(async {
        let mut c = srv.client().await;
        create(&mut c, secret("", "db", "password", b"before-the-outage"))
            .await
            .expect("create")
    });

    etcd.kill(0);
    rt.block_on(async {
        let mut c = srv.client().await;
        let e = create(&mut c, secret("", "other", "k", b"v"))
            .await
            .expect_err("create with etcd down");
        assert_eq!(e.code(), Code::Unavailable, "create: {e:?}");
        eprintln!("create with etcd down: {}", e.message());
        let mut next = made.clone();
        next.data.insert("password".into(), b"during".to_vec());
        let e = update(&mut c, next)
            .await
            .expect_err("update with etcd down");
        assert_eq!(e.code(), Code::Unavailable, "update: {e:?}");
        // A read fails too rather than answer from anything stale.
        let e = get(&mut c, "default", "db")
            .await
            .expect_err("get with etcd down");
        assert_eq!(e.code(), Code::Unavailable, "get: {e:?}");
        let e = within(
            "list",
            c.list(pb::ListRequest {
                namespace: "default".into(),
                ..Default::default()
            }),
        )
        .await
        .expect_err("list with etcd down");
        assert_eq!(e.code(), Code::Unavailable, "list: {e:?}");
    });
    // The CLI says what happened, the way kubectl does.
    let (ok, out, err) = srv.cli(&["create", "secret", "generic", "x", "--from-literal", "k=v"]);
    assert!(!ok, "create succeeded with etcd down: {out}");
    eprintln!("CLI create with etcd down:\n{err}");
    assert!(
        err.starts_with("Error from server (ServiceUnavailable): storage unavailable:"),
        "{err}"
    );
    assert!(err.contains(etcd.endpoint(0)), "names the endpoint: {err}");
    let (ok, out, err) = srv.cli(&["get", "secret", "db"]);
    assert!(!ok, "get succeeded with etcd down: {out}");
    assert!(
        err.starts_with("Error from server (ServiceUnavailable):"),
        "{err}"
    );
    srv.assert_running();

    // etcd comes back on its data; keyward, not restarted, serves again.
    etcd.restart(0);
    rt.block_on(async {
        let mut c = srv.client().await;
        let deadline = Instant::now() + CALL_LIMIT;
        let s = loop {
            match get(&mut c, "default", "db").await {
                Ok(s) => break s,
                Err(e) if e.code() == Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("get after etcd returned: {e:?}"),
            }
        };
        assert_eq!(s.data["password"], b"before-the-outage");
        assert_eq!(rv(&s), rv(&made));
        create(&mut c, secret("", "other", "k", b"v"))
            .await
            .expect("create after etcd returned");
        let mut next = s.clone();
        next.data.insert("password".into(), b"after".to_vec());
        let after = update(&mut c, next)
            .await
            .expect("update after etcd returned");
        assert!(rv(&after) > rv(&made));
    });
    let (ok, out, err) = srv.cli(&["get", "secret", "db", "-o", "json"]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        doc["data"]["password"],
        base64::engine::general_purpose::STANDARD.encode("after")
    );
    srv.assert_running();
}

// ---------------------------------------------------------------------------------------------
// c. Start-up refusals.

/// Runs `keyward server` to completion with `args` (plus an encryption config and a socket in
/// `dir`); returns stderr after checking it failed and left no socket behind.
fn server_refuses(dir: &Path, args: &[&str]) -> String {
    let cfg = aesgcm_config(dir);
    let socket = dir.join("refused.sock");
    let mut cmd = Command::new(bin());
    cmd.arg("server")
        .args(args)
        .arg("--encryption-config")
        .arg(&cfg)
        .arg("--socket")
        .arg(&socket)
        .env_remove("KEYWARD_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("run keyward server");
    let out = child.wait_with_output().expect("keyward server");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "keyward server {args:?} started; stderr:\n{err}"
    );
    assert!(!socket.exists(), "{args:?} left a socket behind");
    err
}

/// An etcd whose authentication is on refuses a client without an identity: keyward says so
/// at start (its status probe alone would pass) instead of starting and failing every
/// request as the caller's mistake.
#[test]
fn server_refuses_an_etcd_that_wants_credentials() {
    let etcdctl = crate::support::etcd::require_etcdctl();
    let etcd = Etcd::start();
    let ep = etcd.endpoint(0).to_owned();
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        let out = Command::new(&etcdctl)
            .args(["--endpoints", &ep])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let err = server_refuses(dir.path(), &["--backend", "etcd", "--etcd-endpoints", &ep]);
    assert!(
        err.contains("etcd refused the request: etcdserver: user name is empty (its authentication is on: give --etcd-cert/--etcd-key"),
        "{err}"
    );
}

#[test]
fn server_refuses_unreachable_etcd_and_bad_flags_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");

    // Nothing listens: refused at once, naming the endpoint and what to check.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let err = server_refuses(
        dir.path(),
        &["--backend", "etcd", "--etcd-endpoints", &closed],
    );
    eprintln!("unreachable etcd:\n{err}");
    assert!(
        err.contains(&format!("error: cannot reach etcd at {closed}")),
        "{err}"
    );
    assert!(err.contains("hint: check --etcd-endpoints"), "{err}");

    // Something accepts connections but never answers (a hung etcd): refused after keyward's
    // request timeout rather than hanging, again naming the endpoint.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
    let err = server_refuses(
        dir.path(),
        &["--backend", "etcd", "--etcd-endpoints", &silent_url],
    );
    eprintln!("silent etcd:\n{err}");
    assert!(
        err.contains(&format!("error: cannot reach etcd at {silent_url}")),
        "{err}"
    );
    drop(silent);

    // Flag combinations, each named in the message.
    let cases: [(&[&str], &str); 6] = [
        (
            &["--backend", "etcd"],
            "error: --backend etcd needs --etcd-endpoints (e.g. http://127.0.0.1:2379)",
        ),
        (
            &[
                "--backend",
                "etcd",
                "--etcd-endpoints",
                "http://127.0.0.1:2379",
                "--data",
                data,
            ],
            "error: --data applies to --backend sled or log; with --backend etcd the data lives in etcd",
        ),
        (&["--backend", "log"], "error: --backend log needs --data DIR"),
        (
            &["--data", data, "--etcd-endpoints", "http://127.0.0.1:2379"],
            "error: --etcd-endpoints, --etcd-ca, --etcd-cert and --etcd-key only apply with --backend etcd",
        ),
        (
            &["--backend", "etcd", "--etcd-endpoints", "127.0.0.1:2379"],
            "error: --etcd-endpoints: \"127.0.0.1:2379\" must start with http:// or https://",
        ),
        (
            // The etcd flags without --backend etcd (nor --data): the hint says how.
            &["--etcd-endpoints", "http://127.0.0.1:2379"],
            "hint: or store in etcd: --backend etcd --etcd-endpoints http://127.0.0.1:2379",
        ),
    ];
    for (args, want) in cases {
        let err = server_refuses(dir.path(), args);
        assert!(err.contains(want), "{args:?}: want {want:?}, got:\n{err}");
    }
    // A later endpoint is checked too, and https needs a CA.
    let err = server_refuses(
        dir.path(),
        &[
            "--backend",
            "etcd",
            "--etcd-endpoints",
            "http://127.0.0.1:2379,127.0.0.1:2380",
        ],
    );
    assert!(
        err.contains("--etcd-endpoints: \"127.0.0.1:2380\" must start with http:// or https://"),
        "{err}"
    );
    let err = server_refuses(
        dir.path(),
        &[
            "--backend",
            "etcd",
            "--etcd-endpoints",
            "https://127.0.0.1:2379",
        ],
    );
    eprintln!("https without a CA:\n{err}");
    assert!(err.contains("--etcd-ca"), "{err}");
    assert!(err.contains("https://127.0.0.1:2379"), "{err}");
    // --etcd-cert without --etcd-key is a usage error.
    let err = server_refuses(
        dir.path(),
        &[
            "--backend",
            "etcd",
            "--etcd-endpoints",
            "https://127.0.0.1:2379",
            "--etcd-cert",
            "cert.pem",
        ],
    );
    assert!(err.contains("--etcd-key"), "{err}");
    assert!(!Path::new(data).exists(), "no sled directory was created");
}

// ---------------------------------------------------------------------------------------------
// d. The stored bytes, through independent implementations.

/// What the Python cross-check imports (tests/python/kw_encryption.py, encryption_check.py).
const PY_MODULES: [&str; 3] = ["grpc", "cryptography", "nacl"];

#[test]
fn etcdctl_reads_what_python_decrypts_and_keyward_reads_what_python_encrypts() {
    let etcd = Etcd::start();
    let srv = Server::start(&etcd.endpoints_flag());
    let rt = runtime();
    let value = b"s3cret-cross-check-value";
    let made = rt.block_on(async {
        let mut c = srv.client().await;
        create(&mut c, secret("interop", "cross", "password", value))
            .await
            .expect("create")
    });
    let key = "/registry/secrets/interop/cross";
    let kv = etcdctl_kv(&etcd.endpoints_flag(), key, &[])
        .expect("etcdctl get")
        .expect("stored");
    assert_eq!(kv.mod_revision, rv(&made));
    assert!(
        kv.value.starts_with(PREFIX),
        "{:?}",
        String::from_utf8_lossy(&kv.value)
    );
    assert!(!contains(&kv.value, value), "plaintext in etcd");
    let b64 = base64::engine::general_purpose::STANDARD;
    assert!(
        !contains(&kv.value, b64.encode(value).as_bytes()),
        "base64 plaintext in etcd"
    );

    // Python's `cryptography` (tests/python/kw_encryption.py) decrypts the bytes etcdctl read,
    // with the storage key as associated data, to the bytes kube-apiserver stores for the
    // Secret (its `k8s\0` protobuf encoding), which Python's `google.protobuf` reads
    // (tests/python/kube_proto.py).
    let pydir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");
    let case = serde_json::json!({
        "provider": "aesgcm",
        "storage_key": key,
        "stored": b64.encode(&kv.value),
        "key_name": "k1",
        "key": AESGCM_KEY,
    });
    let decrypt = format!(
        "import base64, json, sys\nsys.path.insert(0, {pydir:?})\nimport kw_encryption as kw\n\
         c = json.load(sys.stdin)\n\
         pt = kw.aesgcm_decrypt(c['key_name'], base64.b64decode(c['key']), c['storage_key'], base64.b64decode(c['stored']))\n\
         print(base64.b64encode(pt).decode())\n"
    );
    let out = python(&PY_MODULES, &["-c", &decrypt], case.to_string().as_bytes());
    let plaintext = b64.decode(out.trim()).expect("base64 from python");
    let out = python(
        &["google.protobuf", "grpc_tools"],
        &[&format!("{pydir}/kube_proto.py"), "decode-secret"],
        hex::encode(&plaintext).as_bytes(),
    );
    let doc: serde_json::Value = serde_json::from_str(&out).expect("python's JSON");
    let m = made.metadata.as_ref().expect("metadata");
    assert_eq!(doc["typeMeta"]["apiVersion"], "v1");
    assert_eq!(doc["typeMeta"]["kind"], "Secret");
    assert_eq!(doc["type"], "Opaque");
    assert_eq!(doc["name"], "cross");
    assert_eq!(doc["namespace"], "interop");
    assert_eq!(doc["uid"], m.uid.as_str());
    assert_eq!(
        doc["resourceVersion"], "",
        "resourceVersion is etcd's mod_revision, never stored: {doc}"
    );
    assert_eq!(doc["data"]["password"], b64.encode(value));

    // The full cross-check: the AAD binds the value to its key, and Python encrypts the same
    // plaintext itself; etcdctl puts Python's bytes under the key, and keyward reads them.
    let dir = tempfile::tempdir().expect("temp dir");
    let written = dir.path().join("written.json");
    let back = dir.path().join("back.json");
    let mut case = case;
    case["plaintext"] = b64.encode(&plaintext).into();
    fs::write(&written, serde_json::json!({ "cases": [case] }).to_string()).expect("write cases");
    let out = python(
        &PY_MODULES,
        &[
            &format!("{pydir}/encryption_check.py"),
            "--written",
            written.to_str().expect("utf-8 path"),
            "--out",
            back.to_str().expect("utf-8 path"),
        ],
        b"",
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("encryption_check: ") && l.ends_with(" passed, 0 failed")),
        "{out}"
    );
    assert!(
        out.contains("decrypting under a different storage key fails (AAD)"),
        "{out}"
    );
    let back: serde_json::Value =
        serde_json::from_slice(&fs::read(&back).expect("python's output")).expect("JSON");
    let theirs = b64
        .decode(back["cases"][0]["stored"].as_str().expect("stored"))
        .expect("base64");
    assert!(theirs.starts_with(PREFIX) && theirs != kv.value);
    etcdctl_put(&etcd.endpoints_flag(), key, &theirs);
    let now = etcdctl_kv(&etcd.endpoints_flag(), key, &[])
        .expect("etcdctl get")
        .expect("stored");
    assert_eq!(now.value, theirs);
    let got = rt.block_on(async {
        let mut c = srv.client().await;
        get(&mut c, "interop", "cross").await.expect("get")
    });
    assert_eq!(got.data["password"], value);
    assert_eq!(got.metadata.as_ref().expect("metadata").uid, m.uid);
    assert_eq!(rv(&got), now.mod_revision);
}

/// Two `keyward server` processes on one etcd serve one store: what one writes the other reads,
/// a stale resourceVersion from either conflicts, and a watch on one sees the other's writes.
#[test]
fn two_servers_on_one_etcd_serve_one_store() {
    let etcd = Etcd::start();
    let a = Server::start(&etcd.endpoints_flag());
    let b = Server::start(&etcd.endpoints_flag());
    // Both must hold the same aesgcm key to read each other's writes: the config is the same.
    let rt = runtime();
    rt.block_on(async {
        let mut ca = a.client().await;
        let mut cb = b.client().await;
        let mut watch = within(
            "watch",
            cb.watch(pb::WatchRequest {
                field_selector: String::new(),
                namespace: "shared".into(),
                resource_version: String::new(),
                label_selector: String::new(),
            }),
        )
        .await
        .expect("watch through b")
        .into_inner();

        let made = create(&mut ca, secret("shared", "db", "k", b"from a"))
            .await
            .expect("create through a");
        let read = get(&mut cb, "shared", "db").await.expect("get through b");
        assert_eq!(read.data["k"], b"from a");
        assert_eq!(rv(&read), rv(&made));

        // An update through b, then a's stale copy conflicts.
        let mut changed = read.clone();
        changed.data.insert("k".into(), b"from b".to_vec());
        let updated = update(&mut cb, changed).await.expect("update through b");
        assert!(rv(&updated) > rv(&made));
        let mut stale = made.clone();
        stale.data.insert("k".into(), b"stale".to_vec());
        let err = update(&mut ca, stale)
            .await
            .expect_err("stale update through a");
        assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
        assert_eq!(
            get(&mut ca, "shared", "db")
                .await
                .expect("get through a")
                .data["k"],
            b"from b"
        );

        // b's watch saw a's create and its own update, in order.
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let ev = within("watch event", watch.message())
                .await
                .expect("watch stream")
                .expect("an event");
            seen.push((ev.r#type, rv(ev.object.as_ref().expect("object"))));
        }
        assert_eq!(
            seen,
            vec![
                ("ADDED".to_owned(), rv(&made)),
                ("MODIFIED".to_owned(), rv(&updated))
            ]
        );
    });
}
