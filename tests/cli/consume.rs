//! `keyward run` and `keyward mount` as a process uses them, against a real `keyward dev` on a
//! real Unix socket: environment variables and exec, the atomic-writer file layout, waiting for
//! Secrets and servers, and `mount --watch` under many updates (readers never see a mixed set).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{bin, Proc};
use keyward::pb::keyward_v1 as pb;
use keyward::pb::keyward_v1::secrets_client::SecretsClient;
use rustix::process::Signal;
use tonic::transport::Channel;

/// Every wait in this file is bounded by this.
const LIMIT: Duration = Duration::from_secs(60);

/// A temp dir, optionally a `keyward dev` serving in it, and a client runtime.
struct Env {
    server: Option<Proc>,
    rt: tokio::runtime::Runtime,
    data: PathBuf,
    sock: PathBuf,
    dir: tempfile::TempDir,
}

/// A finished `keyward` run.
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl Env {
    /// A temp dir without a server yet.
    fn empty() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        Env {
            server: None,
            rt: crate::support::client_runtime(),
            sock: data.join("keyward.sock"),
            data,
            dir,
        }
    }

    /// A temp dir with `keyward dev` serving.
    fn start() -> Env {
        let mut e = Env::empty();
        e.start_server();
        e
    }

    fn start_server(&mut self) {
        let n = fs::read_dir(self.dir.path()).unwrap().count();
        self.server = Some(Proc::spawn(
            &["dev", "--data", self.data.to_str().unwrap()],
            &[],
            &self.dir.path().join(format!("dev{n}.log")),
            &self.sock,
        ));
    }

    fn stop_server(&mut self) {
        let mut p = self.server.take().expect("a server is running");
        p.signal(Signal::INT);
        assert!(p.wait(LIMIT).success(), "{}", p.stderr());
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    async fn client(&self) -> SecretsClient<Channel> {
        SecretsClient::new(keyward::uds::unix_channel(&self.sock).await.unwrap())
    }

    /// Creates or replaces `ns/name` with `data`.
    fn put_ns(&self, ns: &str, name: &str, data: &[(&str, &[u8])]) {
        self.rt.block_on(async {
            let mut c = self.client().await;
            put_with(&mut c, ns, name, data).await;
        });
    }

    fn put(&self, name: &str, data: &[(&str, &[u8])]) {
        self.put_ns("default", name, data);
    }

    fn delete(&self, name: &str) {
        self.rt.block_on(async {
            self.client()
                .await
                .delete(pb::DeleteRequest {
                    namespace: "default".into(),
                    name: name.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        });
    }

    fn command(&self, args: &[&str], log: &str) -> (Command, PathBuf, PathBuf) {
        let (out, err) = (self.p(&format!("{log}.out")), self.p(&format!("{log}.err")));
        let mut cmd = Command::new(bin());
        if !args.contains(&"--server") {
            cmd.arg("--server").arg(self.url());
        }
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("KEYWARD_SERVER")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap());
        (cmd, out, err)
    }

    /// Runs `keyward --server URL ARGS` to completion (at most [`LIMIT`]).
    fn keyward(&self, args: &[&str]) -> Out {
        let (mut cmd, out, err) = self.command(args, "run");
        let mut p = Proc {
            child: cmd.spawn().unwrap(),
            stderr_path: err.clone(),
        };
        let status = p.wait(LIMIT);
        Out {
            status,
            stdout: fs::read_to_string(out).unwrap(),
            stderr: fs::read_to_string(err).unwrap(),
        }
    }

    /// Starts `keyward --server URL ARGS` in the background (killed on drop).
    fn spawn(&self, args: &[&str], log: &str) -> Proc {
        let (mut cmd, _, err) = self.command(args, log);
        Proc {
            child: cmd.spawn().unwrap(),
            stderr_path: err,
        }
    }
}

async fn put_with(c: &mut SecretsClient<Channel>, ns: &str, name: &str, data: &[(&str, &[u8])]) {
    let secret = crate::support::store::pb_secret(ns, name, data);
    let exists = c
        .get(pb::GetRequest {
            namespace: ns.into(),
            name: name.into(),
            revision: 0,
        })
        .await
        .is_ok();
    if exists {
        c.update(pb::UpdateRequest {
            secret: Some(secret),
            dry_run: false,
        })
        .await
        .unwrap();
    } else {
        c.create(pb::CreateRequest {
            secret: Some(secret),
            dry_run: false,
        })
        .await
        .unwrap();
    }
}

/// Polls `ok` every 20 ms until it holds; panics with `what` after [`LIMIT`].
fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `..YYYY_MM_DD_HH_MM_SS.<digits>`, the writer's timestamped directory.
fn is_ts_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("..") else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() > 20
        && b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 | 10 | 13 | 16 => *c == b'_',
            _ => c.is_ascii_digit(),
        })
        && b[19] == b'.'
        && b[20..].iter().all(u8::is_ascii_digit)
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// What is wrong with the layout of a projection of exactly `visible` names, or the data dir
/// name when nothing is.
fn layout(dir: &Path, visible: &[&str]) -> Result<String, String> {
    let ts = fs::read_link(dir.join("..data"))
        .map_err(|e| format!("..data: {e}"))?
        .into_os_string()
        .into_string()
        .map_err(|t| format!("..data -> {t:?}"))?;
    if !is_ts_name(&ts) || !dir.join(&ts).is_dir() {
        return Err(format!("..data -> {ts}, not a timestamped directory"));
    }
    let ts_mode = fs::metadata(dir.join(&ts))
        .map_err(|e| format!("{ts}: {e}"))?
        .permissions()
        .mode()
        & 0o7777;
    if ts_mode != 0o755 {
        return Err(format!("{ts} has mode {ts_mode:o}, not 755"));
    }
    let mut want: Vec<String> = visible.iter().map(|s| (*s).to_owned()).collect();
    want.push("..data".into());
    want.push(ts.clone());
    want.sort();
    let got = names(dir);
    if got != want {
        return Err(format!(
            "only ..data, one version and the visible names: want {want:?}, got {got:?}"
        ));
    }
    for name in visible {
        let target = fs::read_link(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
        if target != Path::new("..data").join(name) {
            return Err(format!(
                "{name} -> {target:?}, not a symlink through ..data"
            ));
        }
    }
    Ok(ts)
}

/// Checks the layout of a projection of exactly `visible` names and returns the data dir name.
/// A watching writer removes the previous version just after it swaps `..data`, which is when
/// the new content becomes readable, and may project the same content again (after a
/// reconnect): the layout is polled until it holds, up to [`LIMIT`], and the last problem seen
/// is the failure.
fn check_layout(dir: &Path, visible: &[&str]) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        match layout(dir, visible) {
            Ok(ts) => return ts,
            Err(problem) => assert!(
                Instant::now() < deadline,
                "timed out waiting for the layout: {problem}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_env_from_prefixes_skips_invalid_names_and_still_runs() {
    let env = Env::start();
    env.put(
        "db",
        &[
            ("user", b"admin"),
            ("password", b"s3=cr et"),
            ("a-b", b"dash"),
            ("tls.crt", b"cert"),
            (".hidden", b"h"),
            ("9lives", b"cat"),
        ],
    );
    env.put_ns("team", "api", &[("token", b"t0k3n")]);
    let out = env.keyward(&[
        "run",
        "--env-from",
        "secret/db",
        "--env-from",
        "secret/db:DB_",
        "--",
        "env",
    ]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    // kubelet's names (Kubernetes 1.27–1.33): dashes, dots and a leading dot are fine, a
    // leading digit is not; with a prefix every key is a name.
    let vars: Vec<&str> = out.stdout.lines().collect();
    for set in [
        "user=admin",
        "password=s3=cr et",
        "a-b=dash",
        "tls.crt=cert",
        ".hidden=h",
        "DB_user=admin",
        "DB_password=s3=cr et",
        "DB_a-b=dash",
        "DB_9lives=cat",
    ] {
        assert!(vars.contains(&set), "{set}: {vars:?}");
    }
    assert!(!vars.iter().any(|v| v.starts_with("9lives=")), "{vars:?}");
    let skipped: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("skipped keys of secret default/db"))
        .collect();
    assert_eq!(
        skipped.len(),
        1,
        "only the unprefixed --env-from: {}",
        out.stderr
    );
    assert!(
        skipped[0].ends_with("not valid environment variable names: 9lives"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3=cr et") && !out.stderr.contains("admin"));

    // --env overrides --env-from; -n picks the namespace.
    let out = env.keyward(&[
        "run",
        "--env-from",
        "secret/db",
        "--env",
        "user=secret/db:password",
        "--",
        "sh",
        "-c",
        r#"printf %s "$user""#,
    ]);
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (Some(0), "s3=cr et"),
        "{}",
        out.stderr
    );
    let out = env.keyward(&[
        "run",
        "-n",
        "team",
        "--env-from",
        "secret/api:API_",
        "--",
        "sh",
        "-c",
        r#"printf %s "$API_token""#,
    ]);
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (Some(0), "t0k3n"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr, "", "nothing skipped, nothing said");
}

#[test]
fn run_env_key_refs_missing_keys_and_optional() {
    let env = Env::start();
    env.put("db", &[("user", b"admin"), ("password", b"pa ss")]);
    let out = env.keyward(&[
        "run",
        "--env",
        "PASS=secret/db:password",
        "--",
        "sh",
        "-c",
        r#"printf %s "$PASS""#,
    ]);
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (Some(0), "pa ss"),
        "{}",
        out.stderr
    );

    // A missing key fails before exec: the command never runs.
    let marker = env.p("ran");
    let touch = format!("touch {}", marker.display());
    let out = env.keyward(&[
        "run",
        "--env",
        "PASS=secret/db:nope",
        "--",
        "sh",
        "-c",
        &touch,
    ]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .contains("error: secret default/db has no key \"nope\" (--env PASS=secret/db:nope)"),
        "{}",
        out.stderr
    );
    assert!(!marker.exists(), "the command ran");
    assert!(!out.stderr.contains("pa ss"));

    // --optional: missing keys and Secrets leave the variables unset, and are not waited for.
    let out = env.keyward(&[
        "run",
        "--optional",
        "--env",
        "PASS=secret/db:nope",
        "--env",
        "U=secret/db:user",
        "--env",
        "G=secret/ghost:k",
        "--env-from",
        "secret/ghost2",
        "--timeout",
        "10m",
        "--",
        "sh",
        "-c",
        r#"printf %s "${PASS-unset}:$U:${G-unset}""#,
    ]);
    assert_eq!(
        (out.code(), out.stdout.as_str()),
        (Some(0), "unset:admin:unset"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("has no key \"nope\"; PASS not set (--optional)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("secret default/ghost not found; G not set (--optional)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("secret default/ghost2 not found; --env-from skipped"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("waiting"), "{}", out.stderr);
}

#[test]
fn run_passes_the_exit_code_and_refuses_bad_values_and_flags() {
    let env = Env::start();
    env.put(
        "db",
        &[("user", b"admin"), ("bin", b"\xff\xfe"), ("nul", b"a\0b")],
    );
    let out = env.keyward(&[
        "run",
        "--env",
        "U=secret/db:user",
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(out.code(), Some(7), "{}", out.stderr);
    let out = env.keyward(&["run", "--", "sh", "-c", "exit 9"]);
    assert_eq!(out.code(), Some(9), "no Secrets: exec at once");

    for (key, problem) in [
        ("bin", "is not valid UTF-8"),
        ("nul", "contains a NUL byte"),
    ] {
        let var = format!("V=secret/db:{key}");
        let out = env.keyward(&["run", "--env", &var, "--", "true"]);
        assert_eq!(out.code(), Some(1));
        assert!(
            out.stderr.contains(&format!(
                "secret default/db key \"{key}\": the value {problem}"
            )),
            "{}",
            out.stderr
        );
    }
    // --env-from refuses them too: every variable is set, or the command does not run.
    let out = env.keyward(&["run", "--env-from", "secret/db", "--", "true"]);
    assert_eq!(out.code(), Some(1), "{}", out.stderr);

    for (args, needle) in [
        (
            &["--env", "FOO"][..],
            "'--env <VAR=secret/NAME:KEY>': expected VAR=secret/NAME:KEY",
        ),
        (
            &["--env", "1X=secret/db:user"][..],
            "VAR: Invalid value: \"1X\": a valid environment variable name must consist of",
        ),
        (&["--env", "X=db:user"][..], "expected VAR=secret/NAME:KEY"),
        (
            &["--env-from", "db"][..],
            "'--env-from <secret/NAME[:PREFIX]>': expected secret/NAME",
        ),
        (
            &["--env-from", "secret/db:..A"][..],
            "PREFIX: Invalid value: \"..A\": must not start with '..'",
        ),
        (
            &["--timeout", "soon"][..],
            "'--timeout <DURATION>': expected a duration",
        ),
    ] {
        let mut a = vec!["run"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--", "true"]);
        let out = env.keyward(&a);
        assert_eq!(out.code(), Some(2), "{args:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
    let out = env.keyward(&["run", "--env", "U=secret/db:user"]);
    assert_eq!(out.code(), Some(2));
    assert!(out.stderr.contains("<CMD>"), "{}", out.stderr);
    // As shells and `env`: 127 for a command not found, 126 for one that cannot be run.
    let plain = tempfile::NamedTempFile::new().unwrap();
    std::fs::set_permissions(
        plain.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = env.keyward(&["run", "--", plain.path().to_str().unwrap()]);
    assert_eq!(out.code(), Some(126), "{}", out.stderr);
    let out = env.keyward(&["run", "--", "no-such-program-kw"]);
    assert_eq!(out.code(), Some(127), "{}", out.stderr);
    let out = env.keyward(&["run", "--", "/nonexistent/program"]);
    assert_eq!(out.code(), Some(127));
    assert!(
        out.stderr.contains("cannot run \"/nonexistent/program\""),
        "{}",
        out.stderr
    );
}

#[test]
fn mount_writes_the_atomic_writer_layout() {
    let env = Env::start();
    env.put(
        "db",
        &[
            ("user", b"admin"),
            (".hidden", b"dot"),
            ("tls.crt", b"CERT"),
            ("tls.key", b"KEY"),
        ],
    );
    let dir = env.p("new/secrets");
    let d = dir.to_str().unwrap();
    let out = env.keyward(&["mount", "secret/db", d, "--default-mode", "0400"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.starts_with(&format!(
            "secret/db projected into {d} (4 files, resourceVersion "
        )),
        "{}",
        out.stdout
    );
    assert_eq!(mode(&dir), 0o700, "created 0700");
    let first = check_layout(&dir, &[".hidden", "tls.crt", "tls.key", "user"]);
    assert_eq!(fs::read(dir.join("user")).unwrap(), b"admin");
    assert_eq!(fs::read(dir.join(".hidden")).unwrap(), b"dot");
    assert_eq!(fs::read(dir.join("tls.crt")).unwrap(), b"CERT");
    for name in [".hidden", "tls.crt", "tls.key", "user"] {
        assert_eq!(mode(&dir.join(name)), 0o400, "{name}");
    }
    if !on_tmpfs(&dir) {
        assert!(
            out.stderr.contains("is not on tmpfs or ramfs"),
            "{}",
            out.stderr
        );
    }

    // Items: nested paths, per-item modes, the default mode 0600; names no longer projected go.
    let out = env.keyward(&[
        "mount",
        "secret/db",
        d,
        "--items",
        "tls.crt=certs/server.crt:0440",
        "--items",
        "tls.key=certs/private/server.key:0400",
        "--items",
        "user=username",
    ]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let second = check_layout(&dir, &["certs", "username"]);
    assert_ne!(first, second);
    assert!(!dir.join(&first).exists(), "the old version is removed");
    assert_eq!(fs::read(dir.join("certs/server.crt")).unwrap(), b"CERT");
    assert_eq!(
        fs::read(dir.join("certs/private/server.key")).unwrap(),
        b"KEY"
    );
    assert_eq!(mode(&dir.join("certs/server.crt")), 0o440);
    assert_eq!(mode(&dir.join("certs/private/server.key")), 0o400);
    assert_eq!(mode(&dir.join("username")), 0o600);
    assert_eq!(mode(&dir.join("certs/private")), 0o755);

    // A file that is not ours is never replaced.
    let other = env.p("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("user"), b"mine").unwrap();
    let out = env.keyward(&["mount", "secret/db", other.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .contains("is not a symlink written by keyward mount"),
        "{}",
        out.stderr
    );
    assert_eq!(names(&other), ["user"]);
    assert_eq!(fs::read(other.join("user")).unwrap(), b"mine");
}

fn on_tmpfs(p: &Path) -> bool {
    let t = rustix::fs::statfs(p).unwrap().f_type as u64 & 0xffff_ffff;
    t == 0x0102_1994 || t == 0x8584_58f6
}

#[test]
fn mount_rejects_bad_paths_and_unknown_keys_and_then_writes_nothing() {
    let env = Env::start();
    env.put("db", &[("user", b"admin"), ("pass", b"pw")]);
    let dir = env.p("out");
    let d = dir.to_str().unwrap();
    for (args, needle) in [
        (&["--items", "user=../x"][..], "must not contain '..'"),
        (&["--items", "user=a/../b"][..], "must not contain '..'"),
        (&["--items", "user=/etc/x"][..], "must be a relative path"),
        (&["--items", "user=..data"][..], "must not start with '..'"),
        (&["--items", "user=u:0778"][..], "expected an octal mode"),
        (
            &["--items", "user"][..],
            "expected KEY=PATH or KEY=PATH:MODE",
        ),
        (
            &["--default-mode", "01000"][..],
            "'--default-mode <MODE>': expected an octal mode from 0000 to 0777",
        ),
        (&["--default-mode", "rw"][..], "expected an octal mode"),
    ] {
        let mut a = vec!["mount", "secret/db", d];
        a.extend_from_slice(args);
        let out = env.keyward(&a);
        assert_eq!(out.code(), Some(2), "{args:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert!(!dir.exists(), "{args:?} created the directory");
    }
    let out = env.keyward(&["mount", "db", d]);
    assert_eq!(out.code(), Some(2));
    assert!(
        out.stderr.contains("expected secret/NAME"),
        "{}",
        out.stderr
    );
    let out = env.keyward(&[
        "mount",
        "secret/db",
        d,
        "--items",
        "a=x",
        "--items",
        "user=x/y",
    ]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("--items: the paths x and x/y collide"),
        "{}",
        out.stderr
    );

    // An item key that does not exist: an error, and nothing is written.
    let out = env.keyward(&[
        "mount",
        "secret/db",
        d,
        "--items",
        "user=u",
        "--items",
        "nope=n",
    ]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains(
            "secret default/db has no key \"nope\" (listed in --items); nothing was written"
        ),
        "{}",
        out.stderr
    );
    assert!(!dir.exists());
    // ... and an existing projection stays exactly as it was.
    assert_eq!(env.keyward(&["mount", "secret/db", d]).code(), Some(0));
    let before = check_layout(&dir, &["pass", "user"]);
    let out = env.keyward(&["mount", "secret/db", d, "--items", "nope=n"]);
    assert_eq!(out.code(), Some(1));
    assert_eq!(check_layout(&dir, &["pass", "user"]), before);
    assert_eq!(fs::read(dir.join("pass")).unwrap(), b"pw");
}

#[test]
fn no_wait_fails_fast_and_timeout_bounds_the_wait() {
    let env = Env::start();
    let d = env.p("out");
    let d = d.to_str().unwrap();
    for args in [
        &["mount", "secret/ghost", d, "--no-wait"][..],
        &[
            "run",
            "--env",
            "X=secret/ghost:k",
            "--no-wait",
            "--",
            "true",
        ][..],
    ] {
        let out = env.keyward(args);
        assert_eq!(out.code(), Some(1), "{args:?}");
        assert_eq!(
            out.stderr, "Error from server (NotFound): secrets \"ghost\" not found\n",
            "{args:?}"
        );
    }
    let out = env.keyward(&["mount", "secret/ghost", d, "--timeout", "1s"]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .starts_with("waiting for secret default/ghost: not found (retrying in 250ms)\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("error: timed out after 1s waiting for secret default/ghost: not found"),
        "{}",
        out.stderr
    );
    assert!(!env.p("out").exists());

    // No server at all.
    let nowhere = format!("unix://{}", env.p("none.sock").display());
    let out = env.keyward(&[
        "--server",
        &nowhere,
        "run",
        "--env",
        "X=secret/db:k",
        "--no-wait",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.starts_with(&format!(
            "error: cannot connect to the keyward server at {nowhere}"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("No such file or directory (os error 2)"),
        "the system's reason is shown: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("waiting"));
}

#[test]
fn mount_waits_for_the_server_and_for_the_secret() {
    let mut env = Env::empty();
    let dir = env.p("out");
    let d = dir.to_str().unwrap().to_owned();
    // The server is not up yet, then the Secret does not exist yet.
    let mut m = env.spawn(&["mount", "secret/late", &d, "--timeout", "1m"], "m1");
    wait_until("a connection retry", || {
        m.stderr()
            .contains("waiting for secret default/late: cannot connect")
    });
    env.start_server();
    wait_until("a not-found retry", || {
        m.stderr()
            .contains("waiting for secret default/late: not found (retrying in")
    });
    env.put("late", &[("k", b"v1")]);
    let status = m.wait(LIMIT);
    assert!(status.success(), "{}", m.stderr());
    assert!(
        m.stderr().contains(&format!(
            "waiting for secret default/late: cannot connect to the keyward server at {}",
            env.url()
        )),
        "{}",
        m.stderr()
    );
    assert_eq!(fs::read(dir.join("k")).unwrap(), b"v1");

    // The server is up and the Secret appears while we wait.
    let dir2 = env.p("out2");
    let mut m = env.spawn(&["mount", "secret/later", dir2.to_str().unwrap()], "m2");
    wait_until("a not-found retry", || {
        m.stderr()
            .contains("waiting for secret default/later: not found (retrying in")
    });
    env.put("later", &[("k", b"v2")]);
    assert!(m.wait(LIMIT).success(), "{}", m.stderr());
    assert_eq!(fs::read(dir2.join("k")).unwrap(), b"v2");
}

#[test]
fn mount_watch_follows_deletes_recreates_and_server_restarts() {
    let mut env = Env::start();
    env.put("w", &[("k", b"1"), ("gone", b"x")]);
    let dir = env.p("out");
    let mut m = env.spawn(
        &["mount", "secret/w", dir.to_str().unwrap(), "--watch"],
        "watch",
    );
    let read = |name: &str| fs::read(dir.join(name)).unwrap_or_default();
    wait_until("the first projection", || read("k") == b"1");
    env.put("w", &[("k", b"2")]);
    wait_until("the update", || read("k") == b"2");
    check_layout(&dir, &["k"]);

    env.delete("w");
    wait_until("the delete notice", || {
        m.stderr()
            .contains("secret default/w was deleted; keeping the last files")
    });
    assert_eq!(read("k"), b"2", "the last projection stays");
    env.put("w", &[("k", b"3"), ("n", b"new")]);
    wait_until("the re-creation", || {
        read("k") == b"3" && read("n") == b"new"
    });
    assert!(
        m.stderr().contains("secret default/w exists again"),
        "{}",
        m.stderr()
    );

    env.stop_server();
    wait_until("the reconnect notice", || {
        m.stderr().contains("watch of secret default/w interrupted")
    });
    assert_eq!(read("k"), b"3");
    env.start_server();
    env.put("w", &[("k", b"4")]);
    wait_until("the update after the restart", || read("k") == b"4");
    check_layout(&dir, &["k"]);
    assert!(m.child.try_wait().unwrap().is_none(), "still watching");

    m.signal(Signal::TERM);
    let status = m.wait(LIMIT);
    assert_eq!(status.code(), Some(0), "{}", m.stderr());
    assert!(
        m.stderr().contains("keyward mount: SIGTERM: stopping"),
        "{}",
        m.stderr()
    );
    assert_eq!(read("k"), b"4", "the files stay after the watch ends");
}

const KEYS: [&str; 5] = ["a", "b", ".c", "d", "e"];
const UPDATES: u32 = 200;
/// Rounds each reader does at least (it keeps going until the last version is on disk).
const MIN_ROUNDS: u64 = 2_000;

/// The value of `key` in version `v`: the version, the key, and a few KiB of the version again.
fn value(v: u32, key: &str) -> Vec<u8> {
    let mut s = format!("{v:08}:{key}:");
    for _ in 0..600 {
        s.push_str(&format!("{v:08};"));
    }
    s.into_bytes()
}

/// The version a read of `key` shows; panics on anything that is not a whole value.
fn version_of(b: &[u8], key: &str) -> u32 {
    let v: u32 = std::str::from_utf8(&b[..8.min(b.len())])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{key}: not a value: {:?}",
                String::from_utf8_lossy(&b[..b.len().min(40)])
            )
        });
    assert!(
        b == value(v, key).as_slice(),
        "{key}: a torn or partial value of version {v}"
    );
    v
}

#[derive(Debug, Default)]
struct Rounds {
    /// Rounds whose every file came from one version.
    consistent: u64,
    /// Visible-name rounds during which `..data` moved (files may then differ; each is whole).
    straddled: u64,
    /// Resolved-directory rounds whose directory was retired mid-round (retried).
    retried: u64,
    versions: BTreeSet<u32>,
}

/// Reads every visible name (`DIR/a`, each through `..data`), opening each file. When `..data`
/// did not move during the round, all files must be from one version; every file is always a
/// whole value, and versions never go back.
fn read_visible(dir: &Path, stop: &AtomicBool, deadline: Instant) -> Rounds {
    let mut r = Rounds::default();
    let mut last = 0;
    // A round begun after `stop` sees the last version: nothing changes any more.
    while Instant::now() < deadline {
        let stopping = stop.load(Ordering::SeqCst);
        let before = fs::read_link(dir.join("..data")).unwrap();
        let mut seen = Vec::new();
        let mut vanished = false;
        for key in KEYS {
            match fs::read(dir.join(key)) {
                Ok(b) => {
                    let v = version_of(&b, key);
                    assert!(v >= last, "{key}: version {v} after {last}");
                    last = v;
                    seen.push(v);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    vanished = true;
                    break;
                }
                Err(e) => panic!("{key}: {e}"),
            }
        }
        let after = fs::read_link(dir.join("..data")).unwrap();
        r.versions.extend(&seen);
        if before != after {
            r.straddled += 1;
            continue;
        }
        assert!(
            !vanished,
            "a visible name vanished while ..data stayed at {before:?}"
        );
        assert!(
            seen.iter().all(|v| *v == seen[0]),
            "one round through an unchanged ..data saw versions {seen:?}"
        );
        r.consistent += 1;
        if stopping && r.consistent + r.straddled >= MIN_ROUNDS {
            break;
        }
    }
    r
}

/// The kubelet-consumer pattern: resolve `..data` once, then read relative to that directory.
/// Every complete round is one version; a round whose directory was retired is retried.
fn read_resolved(dir: &Path, stop: &AtomicBool, deadline: Instant) -> Rounds {
    let mut r = Rounds::default();
    let mut last = 0;
    while Instant::now() < deadline {
        let stopping = stop.load(Ordering::SeqCst);
        let data = dir.join(fs::read_link(dir.join("..data")).unwrap());
        let mut seen = Vec::new();
        for key in KEYS {
            match fs::read(data.join(key)) {
                Ok(b) => seen.push(version_of(&b, key)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => panic!("{key}: {e}"),
            }
        }
        if seen.len() < KEYS.len() {
            assert_ne!(
                dir.join(fs::read_link(dir.join("..data")).unwrap()),
                data,
                "a file is missing from the current version"
            );
            r.retried += 1;
            continue;
        }
        assert!(
            seen.iter().all(|v| *v == seen[0]),
            "one resolved directory held versions {seen:?}"
        );
        assert!(seen[0] >= last, "version {} after {last}", seen[0]);
        last = seen[0];
        r.versions.insert(seen[0]);
        r.consistent += 1;
        if stopping && r.consistent + r.straddled >= MIN_ROUNDS {
            break;
        }
    }
    r
}

#[test]
fn mount_watch_readers_never_see_a_mixed_set() {
    let env = Env::start();
    let initial: Vec<Vec<u8>> = KEYS.iter().map(|k| value(0, k)).collect();
    let data: Vec<(&str, &[u8])> = KEYS
        .iter()
        .copied()
        .zip(initial.iter().map(Vec::as_slice))
        .collect();
    env.put("versioned", &data);
    let dir = env.p("out");
    let mut m = env.spawn(
        &[
            "mount",
            "secret/versioned",
            dir.to_str().unwrap(),
            "--watch",
        ],
        "watch",
    );
    wait_until("the first projection", || {
        dir.join("..data").exists() && KEYS.iter().all(|k| dir.join(k).exists())
    });

    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(180);
    let (visible, resolved) = std::thread::scope(|s| {
        let visible = s.spawn(|| read_visible(&dir, &stop, deadline));
        let resolved = s.spawn(|| read_resolved(&dir, &stop, deadline));
        let wrote = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            env.rt.block_on(async {
                let mut c = env.client().await;
                for v in 1..=UPDATES {
                    let vals: Vec<Vec<u8>> = KEYS.iter().map(|k| value(v, k)).collect();
                    let data: Vec<(&str, &[u8])> = KEYS
                        .iter()
                        .copied()
                        .zip(vals.iter().map(Vec::as_slice))
                        .collect();
                    put_with(&mut c, "default", "versioned", &data).await;
                }
            });
            wait_until("the last version on disk", || {
                KEYS.iter()
                    .all(|k| fs::read(dir.join(k)).is_ok_and(|b| b == value(UPDATES, k)))
            });
        }));
        stop.store(true, Ordering::SeqCst);
        let joined = (visible.join(), resolved.join());
        if let Err(p) = wrote {
            std::panic::resume_unwind(p);
        }
        match joined {
            (Ok(v), Ok(r)) => (v, r),
            (Err(p), _) | (_, Err(p)) => std::panic::resume_unwind(p),
        }
    });
    eprintln!(
        "visible names: {} one-version rounds, {} straddled an update; resolved ..data: {} rounds, {} retried; versions seen {} / {}",
        visible.consistent,
        visible.straddled,
        resolved.consistent,
        resolved.retried,
        visible.versions.len(),
        resolved.versions.len()
    );
    assert!(
        visible.consistent + visible.straddled >= MIN_ROUNDS,
        "{visible:?}"
    );
    assert!(visible.consistent > 0);
    assert!(resolved.consistent >= MIN_ROUNDS, "{resolved:?}");
    assert!(
        resolved.versions.len() > 1,
        "the readers ran while versions changed"
    );
    assert_eq!(resolved.versions.last(), Some(&UPDATES));

    // The final projection is exactly the last version, with nothing left over.
    check_layout(&dir, &KEYS);
    for k in KEYS {
        assert_eq!(fs::read(dir.join(k)).unwrap(), value(UPDATES, k));
    }
    m.signal(Signal::TERM);
    assert_eq!(m.wait(LIMIT).code(), Some(0), "{}", m.stderr());
}
