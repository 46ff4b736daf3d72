//! Fixes of the security review (issue 15) seen from the command line: the admin socket admits
//! only the callers it lists and the shipped examples keep it away from kube-apiserver (finding
//! 3), `run --env-from` cannot be steered by a Secret's writer (finding 5), and a deleted
//! Secret's versions leave the disk with the history window (finding 12); and requests that
//! cannot be decoded or are too large are refused as the caller's mistake.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::binary::{bin, DevServer, Proc};

/// Runs `cmd` (with no `KEYWARD_SEAL`, `KEYWARD_SERVER` or stdin) to completion; returns
/// (success, stdout, stderr).
fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .env_remove("KEYWARD_SEAL")
        .env_remove("KEYWARD_SERVER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary with `args`, optionally as `uid`/`gid` through `setpriv`.
fn kw_as(ids: Option<(u32, u32)>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = match ids {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                bin(),
            ]);
            c
        }
        None => Command::new(bin()),
    };
    output(cmd.args(args))
}

fn dev(dir: &Path, extra: &[&str]) -> Proc {
    let data = dir.join("kw");
    let mut args = vec!["dev", "--data", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    Proc::spawn_ready(
        &args,
        &[],
        &dir.join("dev.log"),
        &[&data.join("keyward.sock"), &data.join("kms-admin.sock")],
    )
}

#[test]
fn admin_socket_admits_only_listed_callers() {
    let me = rustix::process::geteuid().as_raw();
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("kw/kms-admin.sock");
    let admin = admin.to_str().unwrap();
    // Default: the server's own uid (and root) is admitted.
    {
        let mut p = dev(dir.path(), &[]);
        let (ok, out, err) = kw_as(None, &["kms", "status", "--admin-socket", admin]);
        assert!(ok, "{err}");
        assert!(out.contains("healthz"), "{out}");
        if me == 0 {
            // Anyone else is refused even when the socket file lets them connect (a shared or
            // mounted directory, a loosened mode).
            std::fs::set_permissions(admin, std::fs::Permissions::from_mode(0o666)).unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(
                dir.path().join("kw"),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
            let (ok, _, err) = kw_as(
                Some((65534, 65534)),
                &["kms", "rotate", "--admin-socket", admin],
            );
            assert!(!ok);
            assert!(
                err.contains("permission denied: this socket admits uids 0 and gids none; uid 65534 (gid 65534) is not admitted"),
                "{err}"
            );
            assert!(err.contains("--admin-allow-uid"), "{err}");
        }
        p.signal(rustix::process::Signal::TERM);
        p.wait(std::time::Duration::from_secs(20));
    }
    // Listed uids and groups are admitted besides the server's own uid and root, and the socket
    // file lets them reach it: 0600 by default, 0660 with the one group listed, else 0666 (the
    // credentials check keeps the others out).
    let mode = || std::fs::metadata(admin).unwrap().permissions().mode() & 0o777;
    {
        let _p = dev(dir.path(), &["--admin-allow-uid", "4242"]);
        assert_eq!(mode(), 0o666);
        let (ok, _, err) = kw_as(None, &["kms", "keys", "--admin-socket", admin]);
        assert!(ok, "the server's own uid stays admitted: {err}");
        if me == 0 {
            let (ok, _, err) = kw_as(
                Some((65534, 65534)),
                &["kms", "keys", "--admin-socket", admin],
            );
            assert!(!ok);
            assert!(
                err.contains("this socket admits uids 0, 4242 and gids none; uid 65534 (gid 65534) is not admitted"),
                "{err}"
            );
        }
    }
    if me == 0 {
        let _p = dev(dir.path(), &["--admin-allow-uid", "65534"]);
        let (ok, out, err) = kw_as(
            Some((65534, 65534)),
            &["kms", "keys", "--admin-socket", admin],
        );
        assert!(ok, "a listed uid reaches the socket and is admitted: {err}");
        assert!(out.contains("kw-"), "{out}");
    }
    let gid = rustix::process::getegid().as_raw();
    let _p = dev(dir.path(), &["--admin-allow-gid", &gid.to_string()]);
    assert_eq!(mode(), 0o660);
    let (ok, _, err) = kw_as(None, &["kms", "keys", "--admin-socket", admin]);
    assert!(ok, "{err}");
}

/// `keyward dev` with an audit log records its admin socket's calls too, beside it
/// (`audit-kms-admin.log`), sealed at shutdown and verifiable with the key written next to it.
#[test]
fn dev_records_its_admin_socket_calls_beside_its_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
    )
    .unwrap();
    let log = dir.path().join("audit.log");
    let admin_log = dir.path().join("audit-kms-admin.log");
    let admin = dir.path().join("kw/kms-admin.sock");
    let mut p = dev(
        dir.path(),
        &[
            "--audit-log-path",
            log.to_str().unwrap(),
            "--audit-policy-file",
            policy.to_str().unwrap(),
        ],
    );
    let (ok, _, err) = kw_as(
        None,
        &["kms", "rotate", "--admin-socket", admin.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    p.signal(rustix::process::Signal::TERM);
    assert!(p.wait(std::time::Duration::from_secs(20)).success());
    let text = std::fs::read_to_string(&admin_log).unwrap();
    let rotate = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["stage"] == "ResponseComplete" && e["objectRef"]["subresource"] == "rotate")
        .unwrap_or_else(|| panic!("no rotate in {text}"));
    assert_eq!(rotate["responseStatus"]["code"], 200);
    let me = rustix::process::geteuid().as_raw().to_string();
    assert_eq!(rotate["annotations"]["keyward.io/peer-uid"], me.as_str());
    let key = format!("{}.pub", admin_log.display());
    let (ok, out, err) = kw_as(
        None,
        &[
            "audit",
            "verify",
            admin_log.to_str().unwrap(),
            "--public-key",
            &key,
        ],
    );
    assert!(ok, "{out}{err}");
}

/// Every shipped example keeps the admin socket in another directory than the KMS socket, which
/// kube-apiserver mounts.
#[test]
fn shipped_examples_keep_the_admin_socket_out_of_the_apiserver_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for d in ["deploy", "docs"] {
        let mut stack = vec![root.join(d)];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    files.push(p);
                }
            }
        }
    }
    let mut seen = 0;
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let words: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || c == '"' || c == '=' || c == '`')
            .collect();
        for (i, w) in words.iter().enumerate() {
            if *w != "--admin-socket" {
                continue;
            }
            let Some(admin) = words.get(i + 1) else {
                continue;
            };
            // The KMS socket of the same example: the nearest `--socket`.
            let Some(sock) = words
                .iter()
                .enumerate()
                .filter(|(j, w)| **w == "--socket" && *j + 1 < words.len())
                .min_by_key(|(j, _)| j.abs_diff(i))
                .map(|(j, _)| words[j + 1])
            else {
                continue;
            };
            let dir = |p: &str| Path::new(p).parent().map(Path::to_path_buf);
            // Examples outside a dev directory (absolute paths) must differ by directory.
            if admin.starts_with('/') && sock.starts_with('/') {
                seen += 1;
                assert_ne!(
                    dir(admin),
                    dir(sock),
                    "{}: admin socket {admin} next to the KMS socket {sock}",
                    f.display()
                );
            }
        }
    }
    assert!(seen > 0, "no example with both sockets found");
}

/// Runs `keyward --server URL ARGS` in the server's directory with `PATH` set to `path`.
fn kw_in(srv: &DevServer, path: &str, args: &[&str]) -> (bool, String, String) {
    output(
        Command::new(bin())
            .arg("--server")
            .arg(&srv.server)
            .args(args)
            .current_dir(srv.dir.path())
            .env("PATH", path)
            .env_remove("LD_PRELOAD"),
    )
}

#[test]
fn run_env_from_cannot_choose_the_program_or_its_loader() {
    let srv = DevServer::start();
    // An attacker's `env` in a directory the Secret's PATH names.
    let evil = srv.path("evil");
    std::fs::create_dir_all(&evil).unwrap();
    let fake = evil.join("env");
    std::fs::write(&fake, "#!/bin/sh\necho PWNED\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let evil = evil.to_str().unwrap();
    srv.ok(&[
        "create",
        "secret",
        "generic",
        "app-config",
        &format!("--from-literal=PATH={evil}"),
        "--from-literal=LD_PRELOAD=/nonexistent/evil.so",
        "--from-literal=BASH_ENV=/nonexistent/evil.sh",
        "--from-literal=DB_USER=app",
    ]);
    let path = "/usr/local/bin:/usr/bin:/bin";
    let (ok, out, err) = kw_in(
        &srv,
        path,
        &["run", "--env-from", "secret/app-config", "--", "env"],
    );
    assert!(ok, "{err}");
    assert!(
        !out.contains("PWNED"),
        "the Secret chose the program: {out}"
    );
    assert!(out.lines().any(|l| l == "DB_USER=app"), "{out}");
    assert!(out.lines().any(|l| l == format!("PATH={path}")), "{out}");
    assert!(
        !out.contains("LD_PRELOAD") && !out.contains("BASH_ENV"),
        "{out}"
    );
    assert!(
        err.contains("keyward run: skipped keys of secret default/app-config that would set loader or interpreter variables: BASH_ENV, LD_PRELOAD, PATH"),
        "{err}"
    );
    assert!(err.contains("--allow-env NAME"), "{err}");
    // Allowed by name, PATH reaches the program's environment, yet the program is still the one
    // keyward's own PATH finds.
    let (ok, out, err) = kw_in(
        &srv,
        path,
        &[
            "run",
            "--env-from",
            "secret/app-config",
            "--allow-env",
            "PATH",
            "--",
            "env",
        ],
    );
    assert!(ok, "{err}");
    assert!(!out.contains("PWNED"), "{out}");
    assert!(out.lines().any(|l| l == format!("PATH={evil}")), "{out}");
    assert!(!out.contains("LD_PRELOAD"), "{out}");
    // A program that is not in PATH is an error before anything runs.
    let (ok, _, err) = kw_in(&srv, path, &["run", "--", "no-such-program-kw"]);
    assert!(!ok);
    assert!(
        err.contains("cannot run \"no-such-program-kw\": not found in PATH"),
        "{err}"
    );
}

/// Runs the binary in `dir` with no `--server` and no `$KEYWARD_SERVER`.
fn kw_at(dir: &Path, args: &[&str]) -> (bool, String, String) {
    output(Command::new(bin()).args(args).current_dir(dir))
}

/// Without `--server` and `$KEYWARD_SERVER`, clients use `./keyward-dev/keyward.sock` only
/// from a directory of their own that nobody else can write, and say so (review finding 15).
#[test]
fn clients_use_the_dev_socket_only_from_their_own_private_directory() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("keyward-dev");
    std::fs::create_dir(&dev).unwrap();
    std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o777)).unwrap();
    for args in [&["get", "secrets"][..], &["kms", "status"][..]] {
        let (ok, _, err) = kw_at(dir.path(), args);
        assert!(!ok);
        assert!(
            err.contains("./keyward-dev is not a keyward dev directory of yours (mode 0777: writable by others); refusing to use its socket"),
            "{args:?}: {err}"
        );
        assert!(err.contains("--server"), "{err}");
    }
    std::fs::set_permissions(&dev, std::fs::Permissions::from_mode(0o700)).unwrap();
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&dev, Some(65534), None).unwrap();
        let (ok, _, err) = kw_at(dir.path(), &["get", "secrets"]);
        assert!(!ok);
        assert!(err.contains("(owned by uid 65534, not 0)"), "{err}");
        std::os::unix::fs::chown(&dev, Some(0), None).unwrap();
    }
    // A private directory of this user: used, and named.
    let (ok, _, err) = kw_at(dir.path(), &["get", "secrets"]);
    assert!(!ok, "no server runs there");
    assert!(
        err.contains("keyward: no --server or $KEYWARD_SERVER; using the keyward dev socket keyward-dev/keyward.sock"),
        "{err}"
    );
    assert!(
        err.contains("cannot connect to the keyward server at unix://keyward-dev/keyward.sock"),
        "{err}"
    );
}

/// Runs `args` until it exits (at most 30 s, then it is killed): (success, stderr).
fn kw_exits(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("KEYWARD_SEAL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `keyward dev` trusts the root key, CA and keyring it finds in its data directory, so it
/// refuses a directory someone else could have put them in (writable by others, or another
/// user's), creates a missing one 0700, and never writes its kubeconfig (the admin's client
/// key) through a symbolic link.
#[test]
fn dev_keeps_its_keys_only_in_a_directory_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (ok, err) = kw_exits(&["dev", "--data", shared.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(&format!("--data {}: mode 1777: writable by others; keyward dev keeps its root key, CA and keyring there", shared.display())),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&shared).unwrap().count(),
        0,
        "it wrote there"
    );
    if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&shared, Some(65534), None).unwrap();
        let (ok, err) = kw_exits(&["dev", "--data", shared.to_str().unwrap()]);
        assert!(!ok);
        assert!(
            err.contains(": owned by uid 65534, not 0; keyward dev"),
            "{err}"
        );
    }
    // A kubeconfig planted as a link (in a directory that was shared once): not followed.
    let own = dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.path().join("leak"), "").unwrap();
    std::os::unix::fs::symlink("../leak", own.join("kubeconfig")).unwrap();
    let (ok, err) = kw_exits(&["dev", "--data", own.to_str().unwrap()]);
    assert!(!ok, "{err}");
    assert!(err.contains("kubeconfig"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("leak")).unwrap(),
        b"",
        "written through the link"
    );
    // A new directory: made private.
    let fresh = dir.path().join("fresh");
    let dev = Proc::spawn_ready(
        &["dev", "--data", fresh.to_str().unwrap()],
        &[],
        &dir.path().join("fresh.log"),
        &[&fresh.join("keyward.sock")],
    );
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    drop(dev);
}

/// A client-supplied string with a newline cannot forge a log line: control characters in a
/// logged field are escaped (review finding 19).
#[test]
fn logs_escape_client_supplied_control_characters() {
    use keyward::pb::kms_v2 as v2;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let log = dir.path().join("dev.log");
    let p = Proc::spawn_ready(
        &["dev", "--data", data.to_str().unwrap()],
        &[("RUST_LOG", "info,keyward=debug")],
        &log,
        &[&data.join("keyward.sock")],
    );
    let rt = crate::support::client_runtime();
    rt.block_on(async {
        let ch = keyward::uds::unix_channel(data.join("kms.sock"))
            .await
            .unwrap();
        let mut c = v2::key_management_service_client::KeyManagementServiceClient::new(ch);
        let _ = c
            .decrypt(v2::DecryptRequest {
                ciphertext: b"not a ciphertext".to_vec(),
                uid: "u1\n2026-01-01T00:00:00Z  INFO keyward: FORGED admin logged in".into(),
                key_id: "k\r\x1b[2J".into(),
                annotations: Default::default(),
            })
            .await;
    });
    let text = p.stderr();
    assert!(text.contains("u1\\x0a2026-01-01T00:00:00Z"), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line: {text}"
    );
    assert!(!text.contains('\r') && !text.contains('\x1b'), "{text}");
}

/// `mount` refuses a target directory that someone else owns or may write to, and writes
/// private files by default (review finding 10).
#[test]
fn mount_refuses_shared_directories_and_writes_private_files() {
    let srv = DevServer::start();
    srv.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=hunter2",
    ]);
    let shared = srv.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, _, err) = srv.kw(&["mount", "secret/db", shared.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(
            "has mode 0777: group or others may write to it; refusing to write Secrets into it"
        ),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&shared).unwrap().count(),
        0,
        "nothing written"
    );
    if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&shared, Some(65534), None).unwrap();
        let (code, _, err) = srv.kw(&["mount", "secret/db", shared.to_str().unwrap()]);
        assert_ne!(code, 0);
        assert!(err.contains("is owned by uid 65534, not 0"), "{err}");
    }
    // A directory of one's own (here 0755, as `mkdir` makes it): files are 0600.
    let mine = srv.path("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o755)).unwrap();
    srv.ok(&["mount", "secret/db", mine.to_str().unwrap()]);
    let mode = std::fs::metadata(mine.join("password"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

/// `edit` keeps its plaintext file in `$XDG_RUNTIME_DIR` (or /dev/shm) and removes it when a
/// signal ends keyward (review finding 13).
#[test]
fn edit_removes_its_plaintext_file_on_signals() {
    use std::time::{Duration, Instant};
    let srv = DevServer::start();
    srv.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=hunter2",
    ]);
    for (sig, code) in [
        (rustix::process::Signal::HUP, 129),
        (rustix::process::Signal::TERM, 143),
    ] {
        let runtime = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin())
            .args(["edit", "secret", "db", "--server", &srv.server])
            .env("EDITOR", "sleep 30 #")
            .env("XDG_RUNTIME_DIR", runtime.path())
            .env_remove("KEYWARD_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let file = loop {
            let found = std::fs::read_dir(runtime.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .find(|e| e.file_name().to_string_lossy().starts_with("keyward-edit-"))
                .and_then(|d| std::fs::read_dir(d.path()).ok()?.next()?.ok());
            // The file is created before it is written: wait for its content too.
            let written = found.filter(|f| {
                std::fs::read_to_string(f.path()).is_ok_and(|text| text.contains("password:"))
            });
            if let Some(f) = written {
                break f.path();
            }
            assert!(
                Instant::now() < deadline,
                "no edit file holding the Secret in $XDG_RUNTIME_DIR"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{sig:?}");
        assert!(!file.exists(), "{sig:?}: {} is still there", file.display());
        assert_eq!(
            std::fs::read_dir(runtime.path()).unwrap().count(),
            0,
            "{sig:?}: the plaintext stayed behind"
        );
    }
}

/// A manifest whose field has a value of the wrong type is refused without echoing the value
/// (review finding 19: serde quoted it).
#[test]
fn decoding_errors_do_not_echo_values() {
    let srv = DevServer::start();
    srv.write(
        "bad.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nimmutable: hunter2-secret-value\nstringData:\n  password: x\n",
    );
    srv.write(
        "bad2.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  labels: 123456789\n",
    );
    for f in ["bad.yaml", "bad2.yaml"] {
        let (code, _, err) = srv.kw(&["apply", "-f", f]);
        assert_ne!(code, 0);
        assert!(err.contains("invalid type"), "{err}");
        assert!(
            !err.contains("hunter2-secret-value") && !err.contains("123456789"),
            "{f}: {err}"
        );
    }
}

/// A store on plain `http://` etcd endpoints starts, with a warning (review finding 19).
#[test]
fn plain_http_etcd_endpoints_are_warned_about() {
    let etcd = crate::support::etcd::Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::support::store::aesgcm_config(dir.path());
    let sock = dir.path().join("kw.sock");
    let p = Proc::spawn(
        &[
            "server",
            "--backend",
            "etcd",
            "--etcd-endpoints",
            &etcd.endpoints_flag(),
            "--encryption-config",
            cfg.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
        ],
        &[],
        &dir.path().join("log"),
        &sock,
    );
    let log = p.stderr();
    assert!(
        log.contains(
            "plain http:// etcd endpoints: traffic is neither encrypted nor authenticated"
        ),
        "{log}"
    );
}

/// An encryption configuration holding keys that other users may read is warned about (not
/// refused: kube-apiserver reads it whatever its mode); at 0600 nothing is said.
#[test]
fn an_encryption_configuration_others_may_read_is_warned_about() {
    let warning = "the encryption configuration holds keys and other users may read it";
    for (mode, warned) in [(0o644, true), (0o600, false)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::support::store::aesgcm_config(dir.path());
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(mode)).unwrap();
        let sock = dir.path().join("kw.sock");
        let data = dir.path().join("data");
        let p = Proc::spawn(
            &[
                "server",
                "--data",
                data.to_str().unwrap(),
                "--encryption-config",
                cfg.to_str().unwrap(),
                "--socket",
                sock.to_str().unwrap(),
            ],
            &[],
            &dir.path().join("log"),
            &sock,
        );
        let log = p.stderr();
        assert_eq!(log.contains(warning), warned, "{mode:o}: {log}");
    }
}

/// Finding 12: with `--history-window 5`, a deleted Secret's versions are erased from the
/// store's files once five more revisions have been written, instead of staying on disk until
/// the name is used again.
#[test]
fn a_deleted_secrets_versions_leave_the_disk_with_the_history_window() {
    let dir = tempfile::tempdir().unwrap();
    let server = format!("unix://{}", dir.path().join("kw/keyward.sock").display());
    let kw = |args: &[&str]| {
        let (ok, out, err) = kw_as(None, &[args, &["--server", &server]].concat());
        assert!(ok, "{args:?}: {err}");
        out
    };
    // The entries of a tree whose key names the Secret, read from sled's files directly.
    let store = dir.path().join("kw/store");
    let entries_of = |tree: &str, name: &str| -> usize {
        let db = crate::support::sled_open(&store);
        let tree = db.open_tree(tree).unwrap();
        let needle = format!("/secrets/default/{name}");
        tree.iter()
            .keys()
            .filter(|k| {
                let k = k.as_ref().unwrap();
                k.windows(needle.len()).any(|w| w == needle.as_bytes())
            })
            .count()
    };
    let history_of = |name: &str| entries_of("history", name);
    // Every stored version: the current one is in `kv`, older ones in `history`.
    let versions_of = |name: &str| entries_of("kv", name) + entries_of("history", name);
    let stop = |mut p: Proc| {
        p.signal(rustix::process::Signal::TERM);
        assert!(p.wait(std::time::Duration::from_secs(30)).success());
    };

    let p = dev(dir.path(), &["--backend", "sled", "--history-window", "5"]);
    kw(&[
        "create",
        "secret",
        "generic",
        "leaked",
        "--from-literal=k=v1",
    ]);
    kw(&["create", "secret", "generic", "kept", "--from-literal=k=v1"]);
    kw(&["delete", "secret", "leaked"]);
    stop(p);
    assert!(
        history_of("leaked") > 0,
        "the delete is still in the window"
    );

    let p = dev(dir.path(), &["--backend", "sled", "--history-window", "5"]);
    for i in 0..5 {
        kw(&[
            "create",
            "secret",
            "generic",
            &format!("other{i}"),
            "--from-literal=k=v",
        ]);
    }
    stop(p);
    assert_eq!(
        versions_of("leaked"),
        0,
        "the deleted Secret is still on disk"
    );
    assert_eq!(
        versions_of("kept"),
        1,
        "a live Secret keeps its current version"
    );

    // The flag takes a number of revisions.
    let (ok, _, err) = kw_as(None, &["dev", "--history-window", "lots"]);
    assert!(!ok);
    assert!(
        err.contains("invalid value 'lots' for '--history-window <REVISIONS>'"),
        "{err}"
    );
}

/// Requests refused before a service sees them get the API's statuses, not tonic's: a message
/// that is not protobuf is the caller's mistake (InvalidArgument, BadRequest; seen by Python's
/// grpcio), one over the size a call may carry is too large (ResourceExhausted,
/// RequestEntityTooLarge, as kube-apiserver's 413), which the CLI shows as such.
#[test]
fn undecodable_and_oversized_requests_are_the_callers_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kw/keyward.sock");
    let server = format!("unix://{}", socket.display());
    let _dev = dev(dir.path(), &[]);
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'A'; 3_000_000]).unwrap();
    let (a, b) = (
        format!("--from-file=a={}", big.display()),
        format!("--from-file=b={}", big.display()),
    );
    let (ok, _, err) = kw_as(
        None,
        &[
            "create", "secret", "generic", "big", &a, &b, "--server", &server,
        ],
    );
    assert!(!ok);
    assert!(
        err.starts_with("Error from server (RequestEntityTooLarge): Request entity too large: limit is 4194304 bytes, the request has 60000"),
        "{err}"
    );
    let script = "import grpc, sys\n\
        ch = grpc.insecure_channel('unix://' + sys.argv[1])\n\
        for body in (b'\\x0a\\xff', b'\\x12\\x02\\xff\\xfe'):\n\
        \x20   try:\n\
        \x20       ch.unary_unary('/keyward.v1.Secrets/Get')(body, timeout=20)\n\
        \x20       print('OK')\n\
        \x20   except grpc.RpcError as e:\n\
        \x20       md = dict(e.trailing_metadata() or ())\n\
        \x20       print(e.code().name, md.get('keyward-reason'), e.details())\n";
    let out =
        crate::support::tools::python(&["grpc"], &["-c", script, socket.to_str().unwrap()], b"");
    assert_eq!(
        out,
        "INVALID_ARGUMENT BadRequest failed to decode Protobuf message: GetRequest.namespace: invalid varint\n\
         INVALID_ARGUMENT BadRequest failed to decode Protobuf message: GetRequest.name: invalid string value: data is not UTF-8 encoded\n"
    );
    let (ok, _, _) = kw_as(None, &["get", "secret", "big", "--server", &server]);
    assert!(!ok, "nothing was created");
}

/// Output to a pipe whose reader has gone (`keyward ... | head`) ends the command with an error
/// naming it, not with a panic's report.
#[test]
fn a_closed_stdout_pipe_is_an_error_not_a_panic() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    // Far more YAML than a pipe buffers.
    std::fs::write(&big, vec![7u8; 600 * 1024]).unwrap();
    let from = format!("--from-file={}", big.display());
    let mut child = crate::support::binary::command(&[
        "create",
        "secret",
        "generic",
        "x",
        &from,
        "--dry-run=client",
        "-o",
        "yaml",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut first = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The read end is dropped here: the rest of the output meets a closed pipe.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "error: cannot write to stdout: Broken pipe (os error 32)\n"
    );
}

/// Credentials the client was told to use are used or refused, never dropped: an empty token
/// file would have sent the request as whoever the socket says (the admin, for the user who
/// started `keyward dev`), and a client certificate means nothing over a Unix socket.
#[test]
fn credentials_given_are_never_silently_dropped() {
    let dev = crate::support::DevServer::start();
    let empty = dev.path("empty.token");
    std::fs::write(&empty, "\n").unwrap();
    std::fs::set_permissions(&empty, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let token = format!("--token-file={}", empty.display());
    let (code, out, err) = dev.kw(&["get", "secrets", &token]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            1,
            "",
            format!(
                "error: --token-file {}: the file holds no token\n",
                empty.display()
            )
            .as_str()
        )
    );
    let cert = format!("--client-cert={}", empty.display());
    let key = format!("--client-key={}", empty.display());
    let (code, _, err) = dev.kw(&["get", "secrets", &cert]);
    assert_eq!(
        (code, err.as_str()),
        (1, "error: --client-cert and --client-key go together\n")
    );
    let (code, _, err) = dev.kw(&["get", "secrets", &cert, &key]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("error: --client-cert and --client-key are for an https:// server"),
        "{err}"
    );
}
