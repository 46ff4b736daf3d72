//! The KMS plugin's admin socket in the audit log: `keyward kms serve --audit-log-path`
//! records every admin call with the caller's peer uid, the callers its allow list refuses
//! included, in a log that verifies with the keys written beside it.

use crate::support::run;
use crate::support::store::write_private;

/// `keyward kms serve` of the keyring `(data, seal)` on `dir/k.sock`, auditing to
/// `dir/admin-audit.log`, with `extra` flags (an `--admin-socket` among them is waited for too);
/// its stderr in `dir/stderr_name`.
fn serve(
    dir: &std::path::Path,
    (data, seal): (&std::path::Path, &str),
    extra: &[&str],
    stderr_name: &str,
) -> crate::support::Proc {
    let (sock, log) = (dir.join("k.sock"), dir.join("admin-audit.log"));
    let mut args = vec![
        "kms",
        "serve",
        "--data",
        data.to_str().unwrap(),
        "--seal",
        seal,
        "--socket",
        sock.to_str().unwrap(),
        "--audit-log-path",
        log.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let admin = extra
        .windows(2)
        .find(|w| w[0] == "--admin-socket")
        .map(|w| std::path::PathBuf::from(w[1]));
    let mut ready = vec![sock.as_path()];
    ready.extend(admin.as_deref());
    crate::support::Proc::spawn_ready(&args, &[], &dir.join(stderr_name), &ready)
}

/// `keyward kms serve --audit-log-path`: every admin socket call is recorded as the caller's
/// peer uid, and the log verifies with the public key written beside it.
#[test]
fn kms_admin_socket_calls_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("root.key");
    write_private(&root, &[7u8; 32]);
    let seal = format!("keyfile:{}", root.display());
    let data = d.join("kms");
    let (ok, _, err) = crate::support::kms_init(&data, &seal);
    assert!(ok, "{err}");
    let (sock, admin, log) = (
        d.join("k.sock"),
        d.join("a.sock"),
        d.join("admin-audit.log"),
    );
    let (ok, _, err) = run(&[
        "kms",
        "serve",
        "--data",
        data.to_str().unwrap(),
        "--seal",
        &seal,
        "--socket",
        sock.to_str().unwrap(),
        "--audit-log-path",
        log.to_str().unwrap(),
        "--audit-log-sync",
        "sometimes",
    ]);
    assert!(
        !ok && err.contains("invalid value 'sometimes' for '--audit-log-sync <WHEN>'"),
        "{err}"
    );
    assert!(
        !log.exists() && !sock.exists(),
        "a refused flag changes nothing"
    );
    let a = admin.to_str().unwrap();
    let mut proc = serve(
        d,
        (&data, &seal),
        // kube-apiserver's way: written before each call goes on, not fsynced.
        &["--admin-socket", a, "--audit-log-sync", "never"],
        "stderr",
    );
    for cmd in [&["kms", "status"][..], &["kms", "keys"], &["kms", "rotate"]] {
        let mut args = cmd.to_vec();
        args.extend(["--admin-socket", a]);
        let (ok, _, err) = run(&args);
        assert!(ok, "{err}");
    }
    let (ok, _, _) = run(&["kms", "retire", "no-such-key", "--admin-socket", a]);
    assert!(!ok);
    proc.signal(rustix::process::Signal::TERM);
    assert!(proc.wait(std::time::Duration::from_secs(20)).success());
    let text = std::fs::read_to_string(&log).unwrap();
    let uid = rustix::process::getuid().as_raw().to_string();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| {
            e["stage"] == "ResponseComplete" && e["verb"] != "checkpoint"
        })
        .collect();
    let seen: Vec<(String, String, String, String)> = events
        .iter()
        .map(|e| {
            assert_eq!(e["annotations"]["keyward.io/peer-uid"], uid.as_str());
            // The client as it named itself (tonic's gRPC user agent).
            assert!(
                e["userAgent"].as_str().is_some_and(|a| !a.is_empty()),
                "{e}"
            );
            (
                e["verb"].as_str().unwrap().to_owned(),
                e["objectRef"]["resource"].as_str().unwrap().to_owned(),
                e["objectRef"]["subresource"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                e["responseStatus"]["code"].to_string(),
            )
        })
        .collect();
    let s = |v: &str, r: &str, sub: &str, c: &str| (v.into(), r.into(), sub.into(), c.into());
    assert_eq!(
        seen,
        [
            s("get", "status", "", "200"),
            s("list", "keys", "", "200"),
            s("create", "keys", "rotate", "200"),
            s("update", "keys", "retire", "404"),
        ]
    );

    // A caller the allow list refuses is recorded too: decision forbid, 403.
    let mut proc = serve(
        d,
        (&data, &seal),
        &["--admin-socket", a, "--admin-allow-uid", "4242"],
        "stderr2",
    );
    // The server's own uid and root are always admitted: the refused caller is another user
    // (the socket is mode 0666 once another uid is listed; its directory must let it in).
    let mut command = match rustix::process::geteuid().is_root() {
        true => {
            for dir in [d, admin.parent().unwrap()] {
                let open = std::os::unix::fs::PermissionsExt::from_mode(0o755);
                std::fs::set_permissions(dir, open).unwrap();
            }
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
            c.arg(crate::support::bin());
            c
        }
        // Not root: the test's own uid is not the server's only when the server runs as root.
        false => panic!("this test runs as root, to call the plugin as another user"),
    };
    let out = command
        .args(["kms", "rotate", "--admin-socket", a])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not admitted"),
        "{err}"
    );
    proc.signal(rustix::process::Signal::TERM);
    assert!(proc.wait(std::time::Duration::from_secs(20)).success());
    let text = std::fs::read_to_string(&log).unwrap();
    let refused: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| {
            e["stage"] == "ResponseComplete" && e["responseStatus"]["code"] == 403
        })
        .collect();
    assert_eq!(refused.len(), 1, "{text}");
    let e = &refused[0];
    assert_eq!(e["verb"], "create");
    assert_eq!(e["objectRef"]["subresource"], "rotate");
    assert_eq!(e["annotations"]["authorization.k8s.io/decision"], "forbid");
    assert_eq!(e["annotations"]["keyward.io/peer-uid"], "65534");
    assert!(e["responseStatus"]["message"]
        .as_str()
        .unwrap()
        .contains("admits uids 0, 4242"));
    // The checkpoint key is derived from the root key: both starts signed with the same
    // key, so no earlier key was set aside and the log verifies with `FILE.pub` alone.
    assert_eq!(earlier_keys(d), Vec::<std::path::PathBuf>::new());
    let (ok, out, err) = verify(&log, &[]);
    assert!(ok, "{out}{err}");
    // `rekey-root`: the running plugin signs on with the old root's key, a start under the
    // new root with the new root's, and the one before is kept beside the log.
    let new_root = d.join("new-root.key");
    write_private(&new_root, &[9u8; 32]);
    let new_seal = format!("keyfile:{}", new_root.display());
    let mut proc = serve(d, (&data, &seal), &["--admin-socket", a], "stderr3");
    let (ok, _, err) = run(&[
        "kms",
        "rekey-root",
        "--new-seal",
        &new_seal,
        "--admin-socket",
        a,
    ]);
    assert!(ok, "{err}");
    proc.signal(rustix::process::Signal::TERM);
    assert!(proc.wait(std::time::Duration::from_secs(20)).success());
    assert_eq!(earlier_keys(d), Vec::<std::path::PathBuf>::new());
    let mut proc = serve(d, (&data, &new_seal), &[], "stderr4");
    proc.signal(rustix::process::Signal::TERM);
    assert!(proc.wait(std::time::Duration::from_secs(20)).success());
    let kept = earlier_keys(d);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let (ok, out, _) = verify(&log, &[]);
    assert!(!ok, "the first key's checkpoints need the first key: {out}");
    let (ok, out, err) = verify(&log, &kept);
    assert!(ok, "{out}{err}");
}

/// `keyward audit verify` of `log` with its current public key and `earlier` ones.
fn verify(log: &std::path::Path, earlier: &[std::path::PathBuf]) -> (bool, String, String) {
    let current = keyward::access::public_key_path(log);
    let mut args = vec!["audit", "verify", log.to_str().unwrap()];
    for key in std::iter::once(&current).chain(earlier) {
        args.extend(["--public-key", key.to_str().unwrap()]);
    }
    run(&args)
}

/// The keys kept beside `dir/admin-audit.log` that signed it before the current one.
fn earlier_keys(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| is_earlier_key(&p.file_name().unwrap().to_string_lossy()))
        .collect()
}

/// `admin-audit.log.<key id>.pub`: a key that signed the log before the current one.
fn is_earlier_key(name: &str) -> bool {
    name.starts_with("admin-audit.log.") && name.ends_with(".pub") && name != "admin-audit.log.pub"
}
