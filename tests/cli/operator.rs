//! The `keyward` binary as an operator uses it: key files, init, serve, signals, restarts,
//! admin commands and log hygiene. Every test runs the real binary on real sockets.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::plugin::{decrypt, encrypt, status, v2_client};
use crate::support::{run, Proc};
use base64::Engine;
use keyward::pb::kms_v2 as v2;
use rustix::process::Signal;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// A temp dir with a generated key file and an initialised keyring.
    fn new() -> Setup {
        let s = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        let (ok, out, err) = run(&[
            "kms",
            "init",
            "--data",
            s.p("data").to_str().unwrap(),
            "--generate-keyfile",
            s.p("root.key").to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        assert!(out.contains("primary key_id kw-1-"), "{out}");
        s
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.p(name).to_str().unwrap().to_owned()
    }

    fn seal(&self) -> String {
        format!("keyfile:{}", self.s("root.key"))
    }

    fn serve(&self, extra: &[&str], env: &[(&str, &str)]) -> Proc {
        let (data, seal, sock, admin) = (
            self.s("data"),
            self.seal(),
            self.s("kms.sock"),
            self.s("admin.sock"),
        );
        let mut args = vec![
            "kms",
            "serve",
            "--data",
            &data,
            "--seal",
            &seal,
            "--socket",
            &sock,
            "--admin-socket",
            &admin,
        ];
        args.extend_from_slice(extra);
        Proc::spawn(&args, env, &self.p("serve.log"), &self.p("kms.sock"))
    }

    fn admin(&self, args: &[&str]) -> (bool, String, String) {
        let admin = self.s("admin.sock");
        let mut all = vec!["kms"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--admin-socket", &admin]);
        run(&all)
    }
}

fn rt() -> tokio::runtime::Runtime {
    crate::support::client_runtime()
}

async fn status_key_id(sock: &Path) -> String {
    status(sock).await.0
}

#[test]
fn generate_keyfile_is_0600_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("root.key");
    let (ok, _, err) = run(&["kms", "init", "--generate-keyfile", key.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = fs::read(&key).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8(before.clone()).unwrap().trim_end())
        .unwrap();
    assert_eq!(decoded.len(), 32);
    let (ok, _, err) = run(&["kms", "init", "--generate-keyfile", key.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("already exists; refusing to overwrite"),
        "{err}"
    );
    assert_eq!(fs::read(&key).unwrap(), before);
}

#[test]
fn init_refuses_bad_key_files_and_existing_keyrings() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let data = dir.path().join("data");
    // head -c 32 /dev/urandom > root.key, but world-readable.
    fs::write(&key, [7u8; 32]).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let seal = format!("keyfile:{}", key.display());
    let (ok, _, err) = crate::support::kms_init(&data, &seal);
    assert!(!ok);
    assert!(
        err.contains("mode 0644") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!data.exists(), "a refused init creates nothing");
    // Zeros (`head -c 32 /dev/zero`) are no key.
    let zeros = dir.path().join("zeros");
    fs::write(&zeros, [0u8; 32]).unwrap();
    fs::set_permissions(&zeros, fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, _, err) = crate::support::kms_init(&data, &format!("keyfile:{}", zeros.display()));
    assert!(!ok && err.contains("32 zero bytes"), "{err}");
    assert!(!data.exists(), "a refused init creates nothing");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, _, err) = crate::support::kms_init(&data, &seal);
    assert!(ok, "{err}");
    let (ok, _, err) = crate::support::kms_init(&data, &seal);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
    for (bad, want) in [
        (
            "tpm2:x",
            "expected keyfile:PATH, passphrase-file:PATH, pkcs11:",
        ),
        ("pkcs11:x", "invalid seal pkcs11: x: expected NAME=VALUE"),
        ("keyfile:/nonexistent/k", "cannot read /nonexistent/k"),
    ] {
        let d2 = dir.path().join("d2");
        let (ok, _, err) = crate::support::kms_init(&d2, bad);
        assert!(!ok);
        assert!(err.contains(want), "{err}");
        assert!(!d2.exists());
    }
    let (ok, _, err) = run(&[
        "kms",
        "init",
        "--data",
        dir.path().join("d3").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("--seal is required"), "{err}");
}

#[test]
fn serve_with_the_wrong_root_key_fails_clearly() {
    let s = Setup::new();
    let other = s.p("other.key");
    assert!(run(&["kms", "init", "--generate-keyfile", other.to_str().unwrap()]).0);
    let (ok, _, err) = run(&[
        "kms",
        "serve",
        "--data",
        &s.s("data"),
        "--seal",
        &format!("keyfile:{}", other.display()),
        "--socket",
        &s.s("kms.sock"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("cannot unseal the keyring: wrong root key or passphrase"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    assert!(!s.p("kms.sock").exists());
    // The right key still works: nothing was changed.
    let mut p = s.serve(&[], &[]);
    p.signal(Signal::TERM);
    assert!(p.wait(Duration::from_secs(20)).success());
}

#[test]
fn kill_9_and_restart_keep_every_ciphertext_and_key_id() {
    let s = Setup::new();
    let sock = s.p("kms.sock");
    let rt = rt();
    let mut made = Vec::new();
    for round in 0..3u8 {
        let p = s.serve(&[], &[]);
        let kid = rt.block_on(status_key_id(&sock));
        for i in 0..20u8 {
            let pt = [round, i, 42, 42, 42, 42, 42, 42];
            let (ct, k) = rt.block_on(encrypt(&sock, &pt));
            assert_eq!(k, kid);
            made.push((pt, ct, k));
        }
        let (ok, out, err) = s.admin(&["rotate"]);
        assert!(ok, "{err}");
        assert!(out.starts_with("rotated: new primary key_id kw-"), "{out}");
        let rotated = rt.block_on(status_key_id(&sock));
        assert_ne!(rotated, kid);
        p.signal(Signal::KILL);
        drop(p);
        // After kill -9 the primary is the rotated one, and everything decrypts.
        let p = s.serve(&[], &[]);
        assert_eq!(
            rt.block_on(status_key_id(&sock)),
            rotated,
            "stale socket replaced, key kept"
        );
        for (pt, ct, k) in &made {
            assert_eq!(rt.block_on(decrypt(&sock, ct, k)).unwrap(), pt);
        }
        p.signal(Signal::KILL);
    }
    let (ok, out, _) = run(&["kms", "status", "--admin-socket", &s.s("admin.sock")]);
    assert!(!ok, "nothing serves now: {out}");
}

#[test]
fn sigterm_drains_and_removes_sockets() {
    let s = Setup::new();
    let mut p = s.serve(&[], &[]);
    assert!(s.p("admin.sock").exists());
    let mode = fs::metadata(s.p("kms.sock")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Calls in flight when the signal arrives finish; afterwards the plugin is gone.
    let sock = s.p("kms.sock");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    // Encryptions answered so far: the signal goes out once some were (not after a fixed time,
    // which a loaded machine may not reach one in).
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let answered_in_load = answered.clone();
    let load = rt.spawn(async move {
        let mut c = v2_client(&sock).await;
        c.status(v2::StatusRequest {}).await.unwrap();
        started_tx.send(()).unwrap();
        let mut ok = 0;
        for _ in 0..2000 {
            match c
                .encrypt(v2::EncryptRequest {
                    plaintext: vec![1; 32],
                    uid: "u".into(),
                })
                .await
            {
                Ok(_) => {
                    ok += 1;
                    answered_in_load.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Err(e) => {
                    // After the drain the connection closes: a refused or reset call, never a
                    // wrong answer. A call the client starts after the server's GOAWAY
                    // (NO_ERROR) was never processed; tonic's client reports that one as
                    // `Internal` with the GOAWAY as its source (grpc-go retries it instead).
                    let detail = format!("{e:?}");
                    let refused_by_goaway = e.code() == tonic::Code::Internal
                        && detail.contains("GoAway(")
                        && detail.contains("NO_ERROR");
                    assert!(
                        refused_by_goaway
                            || matches!(
                                e.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::Unknown
                                    | tonic::Code::Cancelled
                            ),
                        "{detail}"
                    );
                    break;
                }
            }
        }
        ok
    });
    started_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let start = Instant::now();
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no encryption answered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    p.signal(Signal::TERM);
    let status = p.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}: {}", p.stderr());
    let served = rt.block_on(load).unwrap();
    assert!(served > 0);
    assert!(!s.p("kms.sock").exists() && !s.p("admin.sock").exists());
    assert!(p.stderr().contains("SIGTERM: draining"), "{}", p.stderr());
}

#[test]
fn socket_in_use_is_not_stolen_and_non_sockets_are_not_replaced() {
    let s = Setup::new();
    let _p = s.serve(&[], &[]);
    // A second plugin (own keyring) pointed at the same socket path must refuse.
    let s2 = Setup::new();
    let (ok, _, err) = run(&[
        "kms",
        "serve",
        "--data",
        &s2.s("data"),
        "--seal",
        &s2.seal(),
        "--socket",
        &s.s("kms.sock"),
    ]);
    assert!(!ok);
    assert!(err.contains("another process is listening"), "{err}");
    // The same data directory is locked by the running plugin.
    let (ok, _, err) = run(&[
        "kms",
        "serve",
        "--data",
        &s.s("data"),
        "--seal",
        &s.seal(),
        "--socket",
        &s.s("x.sock"),
    ]);
    assert!(!ok);
    assert!(err.contains("in use by another keyward process"), "{err}");
    let file = s2.p("plain-file");
    fs::write(&file, b"keep me").unwrap();
    let (ok, _, err) = run(&[
        "kms",
        "serve",
        "--data",
        &s2.s("data"),
        "--seal",
        &s2.seal(),
        "--socket",
        file.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn socket_group_makes_the_socket_0660() {
    let s = Setup::new();
    let gid = rustix::process::getgid().as_raw().to_string();
    let _p = s.serve(&["--socket-group", &gid], &[]);
    let meta = fs::metadata(s.p("kms.sock")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // The admin socket stays owner-only.
    assert_eq!(
        fs::metadata(s.p("admin.sock"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let (ok, _, err) = run(&[
        "kms",
        "serve",
        "--data",
        &s.s("data"),
        "--seal",
        &s.seal(),
        "--socket",
        &s.s("y.sock"),
        "--socket-group",
        "no-such-group-kw",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--socket-group") && err.contains("no-such-group-kw"),
        "{err}"
    );
}

#[test]
fn admin_commands_text_and_json() {
    let s = Setup::new();
    let _p = s.serve(&[], &[]);
    let (ok, out, err) = s.admin(&["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("healthz:         ok"), "{out}");
    assert!(
        out.contains("rotate after:    90d / 1073741824 encryptions"),
        "{out}"
    );
    let (ok, out, _) = s.admin(&["status", "-o", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["healthz"], "ok");
    let first = v["primary_key_id"].as_str().unwrap().to_owned();
    assert!(s.admin(&["rotate"]).0);
    let (ok, out, _) = s.admin(&["keys"]);
    assert!(ok);
    let lines: Vec<_> = out.lines().collect();
    assert!(lines[0].starts_with("KEY_ID"), "{out}");
    assert!(
        lines[1].contains(&first) && lines[1].contains("decrypt-only"),
        "{out}"
    );
    assert!(
        lines[2].contains("primary") && lines[2].contains("aes-256-gcm"),
        "{out}"
    );
    let (ok, _, err) = s.admin(&["retire", &first]);
    assert!(ok, "{err}");
    let (ok, _, err) = s.admin(&["destroy", &first, "--confirm", "wrong"]);
    assert!(!ok);
    assert!(err.contains("confirm: must repeat the key_id"), "{err}");
    let (ok, out, err) = s.admin(&["destroy", &first, "--confirm", &first]);
    assert!(ok, "{err}");
    assert!(out.contains("erased"), "{out}");
    let (ok, out, _) = s.admin(&["keys", "-o", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["state"], "destroyed");
    let (ok, _, err) = run(&["kms", "keys", "--admin-socket", &s.s("nope.sock")]);
    assert!(!ok);
    assert!(err.contains("cannot connect to the admin socket"), "{err}");
    assert!(
        err.contains("No such file or directory (os error 2)"),
        "{err}"
    );
}

#[test]
fn automatic_rotation_by_age_and_by_count() {
    let s = Setup::new();
    let sock = s.p("kms.sock");
    let rt = rt();
    let wait_for_change = |from: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = rt.block_on(status_key_id(&sock));
            if now != from {
                return now;
            }
            assert!(Instant::now() < deadline, "no automatic rotation");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    {
        let _p = s.serve(&["--rotate-after", "1s"], &[]);
        let k0 = rt.block_on(status_key_id(&sock));
        let k1 = wait_for_change(&k0);
        wait_for_change(&k1);
    }
    let _p = s.serve(&["--rotate-after-encryptions", "3"], &[]);
    let k0 = rt.block_on(status_key_id(&sock));
    for _ in 0..3 {
        rt.block_on(encrypt(&sock, b"x"));
    }
    wait_for_change(&k0);
}

#[test]
fn passphrase_file_seal_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("pass");
    fs::write(&pass, "correct horse battery staple\n").unwrap();
    fs::set_permissions(&pass, fs::Permissions::from_mode(0o600)).unwrap();
    let data = dir.path().join("data");
    let seal = format!("passphrase-file:{}", pass.display());
    let weak = run(&[
        "kms",
        "init",
        "--data",
        data.to_str().unwrap(),
        "--seal",
        &seal,
        "--argon2-memory-kib",
        "1024",
    ]);
    assert!(!weak.0 && weak.2.contains("Argon2id"), "{}", weak.2);
    let (ok, _, err) = run(&[
        "kms",
        "init",
        "--data",
        data.to_str().unwrap(),
        "--seal",
        &seal,
        "--argon2-memory-kib",
        "19456",
        "--argon2-iterations",
        "2",
        "--argon2-parallelism",
        "1",
    ]);
    assert!(ok, "{err}");
    let sock = dir.path().join("kms.sock");
    let log = dir.path().join("log");
    let mut p = Proc::spawn(
        &[
            "kms",
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
        ],
        &[("KEYWARD_SEAL", &seal)],
        &log,
        &sock,
    );
    let rt = rt();
    let (ct, kid) = rt.block_on(encrypt(&sock, b"seed"));
    assert_eq!(rt.block_on(decrypt(&sock, &ct, &kid)).unwrap(), b"seed");
    p.signal(Signal::TERM);
    p.wait(Duration::from_secs(20));
    fs::write(&pass, "wrong horse\n").unwrap();
    let (ok, _, err) = run(&[
        "kms",
        "serve",
        "--data",
        data.to_str().unwrap(),
        "--seal",
        &seal,
        "--socket",
        sock.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("wrong root key or passphrase"), "{err}");
    let (ok, _, err) = run(&[
        "kms",
        "serve",
        "--data",
        data.to_str().unwrap(),
        "--seal",
        &format!("keyfile:{}", pass.display()),
        "--socket",
        sock.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("sealed with passphrase-file"), "{err}");
}

/// Nothing secret in the logs at trace level: not the plaintext in any common encoding, not the
/// root key. Also checks that core dumps are disabled for the process.
#[test]
fn trace_logs_carry_no_secrets_and_core_dumps_are_off() {
    let s = Setup::new();
    let p = s.serve(&[], &[("RUST_LOG", "trace")]);
    let limits = fs::read_to_string(format!("/proc/{}/limits", p.child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    // The soft limit is 0; the hard limit is kept so `keyward run` can restore it for children.
    let soft = core
        .trim_start_matches("Max core file size")
        .split_whitespace()
        .next();
    assert_eq!(soft, Some("0"), "{core}");

    let secret: Vec<u8> = (0..32u8).map(|i| 0xa0 ^ i.wrapping_mul(37)).collect();
    let sock = s.p("kms.sock");
    let rt = rt();
    let (ct, kid) = rt.block_on(encrypt(&sock, &secret));
    assert_eq!(rt.block_on(decrypt(&sock, &ct, &kid)).unwrap(), secret);
    let _ = rt.block_on(decrypt(&sock, &ct[..40], &kid));
    assert!(s.admin(&["rotate"]).0);
    let (ct2, kid2) = rt.block_on(encrypt(&sock, &secret));
    assert_eq!(rt.block_on(decrypt(&sock, &ct2, &kid2)).unwrap(), secret);
    drop(p);

    let log = fs::read(s.p("serve.log")).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "trace logging was not on"
    );
    assert!(text.contains("encrypt"), "handlers log at debug");
    let b64 = base64::engine::general_purpose::STANDARD;
    let root = fs::read_to_string(s.p("root.key")).unwrap();
    let root_raw = b64.decode(root.trim_end()).unwrap();
    let mut needles: Vec<(String, Vec<u8>)> = vec![
        ("plaintext raw".into(), secret.clone()),
        ("plaintext hex".into(), hex::encode(&secret).into_bytes()),
        ("plaintext base64".into(), b64.encode(&secret).into_bytes()),
        (
            "plaintext debug".into(),
            format!("{:?}", &secret[..8])
                .trim_end_matches(']')
                .as_bytes()
                .to_vec(),
        ),
        (
            "root key base64".into(),
            root.trim_end().as_bytes().to_vec(),
        ),
        ("root key raw".into(), root_raw.clone()),
        ("root key hex".into(), hex::encode(&root_raw).into_bytes()),
    ];
    // Escaped forms, as h2/tonic would print bytes.
    needles.push((
        "plaintext escaped".into(),
        secret[..8]
            .iter()
            .flat_map(|b| std::ascii::escape_default(*b))
            .collect(),
    ));
    for (what, needle) in needles {
        assert!(
            !log.windows(needle.len()).any(|w| w == needle.as_slice()),
            "{what} found in the log"
        );
    }
}

#[test]
fn dev_starts_the_plugin_and_keeps_its_key_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let sock = data.join("kms.sock");
    let rt = rt();
    let first = {
        let mut p = Proc::spawn(
            &["dev", "--data", data.to_str().unwrap()],
            &[],
            &dir.path().join("log"),
            &sock,
        );
        let kid = rt.block_on(status_key_id(&sock));
        assert_eq!(
            fs::metadata(data.join("root.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        p.signal(Signal::INT);
        assert!(p.wait(Duration::from_secs(20)).success(), "{}", p.stderr());
        kid
    };
    let _p = Proc::spawn(
        &["dev", "--data", data.to_str().unwrap()],
        &[],
        &dir.path().join("log2"),
        &sock,
    );
    assert_eq!(rt.block_on(status_key_id(&sock)), first);
    let (ok, out, err) = run(&[
        "kms",
        "keys",
        "--admin-socket",
        data.join("kms-admin.sock").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(&first));
}

/// `keyward dev --backend log` stores in the log-structured engine; a restart without the flag
/// opens the engine the directory holds; the other engine is refused, naming the flag.
/// Starts `keyward dev` on `data` (with `extra` flags) until it serves its store socket.
fn dev_on(data: &Path, extra: &[&str], log: &Path) -> Proc {
    let mut args = vec!["dev", "--data", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    Proc::spawn(&args, &[], log, &data.join("keyward.sock"))
}

fn stop(mut p: Proc) {
    p.signal(Signal::INT);
    assert!(p.wait(Duration::from_secs(20)).success(), "{}", p.stderr());
}

/// `keyward` with `--server` pointing at `dev`'s store socket in `data`; must succeed.
fn kw_at(data: &Path, args: &[&str]) -> String {
    let server = format!("unix://{}", data.join("keyward.sock").display());
    let (ok, out, err) = run(&[args, &["--server", &server]].concat());
    assert!(ok, "{args:?}: {err}");
    out
}

/// The names of `dir`'s files.
fn file_names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// A new directory gets the log-structured engine; it then opens without `--backend`, and
/// `--backend sled` is refused, naming the engine that created it.
#[test]
fn dev_on_the_log_structured_engine_keeps_its_secrets_and_refuses_the_other_engine() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let p = dev_on(&data, &[], &dir.path().join("log"));
    kw_at(
        &data,
        &[
            "create",
            "secret",
            "generic",
            "demo",
            "--from-literal=password=s3cret",
        ],
    );
    stop(p);
    let files = file_names(&data.join("store"));
    assert!(
        files.iter().any(|n| n.ends_with(".seg"))
            && !files.iter().any(|n| n == "db" || n == "conf"),
        "a new store is not log-structured: {files:?}"
    );
    let (ok, _, err) = run(&["dev", "--data", data.to_str().unwrap(), "--backend", "sled"]);
    assert!(!ok);
    assert!(
        err.contains("holds a log-structured store") && err.contains("--backend log"),
        "{err}"
    );
    let _p = dev_on(&data, &[], &dir.path().join("log2"));
    let out = kw_at(&data, &["get", "secret", "demo", "-o", "json"]);
    assert!(out.contains("\"password\": \"czNjcmV0\""), "{out}");
}

/// A sled store (from before log was the default) keeps opening with sled, and `keyward store
/// convert` copies it into a log-structured store that serves the same Secrets, resourceVersions
/// and history; bad uses are refused and write nothing.
#[test]
fn a_sled_store_keeps_its_engine_and_converts_to_the_log_structured_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let store = data.join("store");
    let copy = data.join("store.log");
    let p = dev_on(&data, &["--backend", "sled"], &dir.path().join("log1"));
    for (name, value) in [("db", "one"), ("api", "key"), ("gone", "bye")] {
        kw_at(
            &data,
            &[
                "create",
                "secret",
                "generic",
                name,
                &format!("--from-literal=v={value}"),
            ],
        );
    }
    for value in ["two", "three"] {
        let manifest = kw_at(&data, &["get", "secret", "db", "-o", "json"])
            .replace(
                "\"b25l\"",
                &format!(
                    "\"{}\"",
                    base64::engine::general_purpose::STANDARD.encode(value)
                ),
            )
            .replace(
                "\"dHdv\"",
                &format!(
                    "\"{}\"",
                    base64::engine::general_purpose::STANDARD.encode(value)
                ),
            );
        let file = dir.path().join("db.json");
        fs::write(&file, manifest).unwrap();
        kw_at(&data, &["apply", "-f", file.to_str().unwrap()]);
    }
    kw_at(&data, &["delete", "secret", "gone"]);
    // Without --backend, the existing sled store stays on sled.
    stop(p);
    let p = dev_on(&data, &[], &dir.path().join("log2"));
    let before = kw_at(&data, &["get", "secrets", "-o", "json"]);
    let history = kw_at(&data, &["history", "secret", "db"]);
    assert_eq!(history.lines().count(), 4, "{history}");
    assert!(!file_names(&store).iter().any(|n| n.ends_with(".seg")));

    // While the server runs, the store is locked: nothing is copied.
    let convert = |from: &Path, to: &Path| {
        run(&[
            "store",
            "convert",
            "--from",
            from.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ])
    };
    let (ok, _, err) = convert(&store, &copy);
    assert!(!ok && err.contains("--from"), "{err}");
    assert!(!copy.exists());
    stop(p);

    let (ok, out, err) = convert(&store, &copy);
    assert!(ok, "{err}");
    assert!(
        out.contains("copied 2 keys") && out.contains("checked against"),
        "{out}"
    );
    assert!(file_names(&copy).iter().any(|n| n.ends_with(".seg")));
    assert!(!file_names(&data).iter().any(|n| n.ends_with(".partial")));
    // Refused: an existing destination, a store that is log-structured already, no store.
    let (ok, _, err) = convert(&store, &copy);
    assert!(
        !ok && err.contains("--to") && err.contains("exists"),
        "{err}"
    );
    let (ok, _, err) = convert(&copy, &dir.path().join("x"));
    assert!(
        !ok && err.contains("is a log-structured store already"),
        "{err}"
    );
    let (ok, _, err) = convert(dir.path(), &dir.path().join("x"));
    assert!(!ok && err.contains("holds no sled store"), "{err}");
    assert!(!dir.path().join("x").exists());

    fs::rename(&store, data.join("store.sled")).unwrap();
    fs::rename(&copy, &store).unwrap();
    let _p = dev_on(&data, &[], &dir.path().join("log3"));
    assert_eq!(kw_at(&data, &["get", "secrets", "-o", "json"]), before);
    assert_eq!(kw_at(&data, &["history", "secret", "db"]), history);
    // The next write continues the revisions.
    kw_at(
        &data,
        &["create", "secret", "generic", "new", "--from-literal=v=x"],
    );
    let all = kw_at(&data, &["get", "secrets", "-o", "json"]);
    let rv = |name: &str| -> i64 {
        let v: serde_json::Value = serde_json::from_str(&all).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == name)
            .unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(rv("new") > rv("db").max(rv("api")) + 1, "{all}");
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, script, err) = run(&["completion", shell]);
        assert!(ok, "{shell}: {err}");
        for sub in [
            "kms", "dev", "server", "get", "apply", "migrate", "bench", "mount",
        ] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
        assert!(script.contains("--server"), "{shell}: no global flags");
    }
    let (_, bash, _) = run(&["completion", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyward.bash");
    fs::write(&path, bash).unwrap();
    let check = std::process::Command::new(crate::support::tools::bash())
        .arg("-n")
        .arg(&path)
        .output()
        .expect("run bash");
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let (ok, _, err) = run(&["completion", "powershell"]);
    assert!(!ok);
    assert!(err.contains("[possible values: bash, zsh, fish]"), "{err}");
}
