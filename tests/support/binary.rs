//! The built `keyward` binary as a child process: one run to completion ([`run`]), a server
//! kept running until dropped ([`Proc`]), a `keyward dev` with commands run against it
//! ([`DevServer`]), and [`normalise`] for comparing printed objects whole.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the built `keyward` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keyward")
}

/// Runs the binary to completion; returns (success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .env_remove("KEYWARD_SEAL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `keyward kms init --data DATA --seal SEAL` to completion; (success, stdout, stderr).
pub fn kms_init(data: &Path, seal: &str) -> (bool, String, String) {
    run(&[
        "kms",
        "init",
        "--data",
        data.to_str().unwrap(),
        "--seal",
        seal,
    ])
}

/// The binary with `args`, stdin and stdout on /dev/null, and no `KEYWARD_SEAL` from the
/// test's environment.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("KEYWARD_SEAL")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// A `keyward` child process; killed on drop.
pub struct Proc {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Proc {
    /// Spawns the binary with stderr to a file and waits until `ready` accepts connections.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], stderr_path: &Path, ready: &Path) -> Proc {
        Self::spawn_ready(args, env, stderr_path, &[ready])
    }

    /// Spawns the binary with stderr to a file and waits until every socket in `ready` accepts
    /// connections.
    pub fn spawn_ready(
        args: &[&str],
        env: &[(&str, &str)],
        stderr_path: &Path,
        ready: &[&Path],
    ) -> Proc {
        let mut cmd = command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::start(cmd, stderr_path, ready)
    }

    /// Spawns `cmd` (made by [`command`], perhaps with a working directory or environment added)
    /// with stderr to a file and waits until every socket in `ready` accepts connections (gives
    /// up after 30 s, or when the process exits first).
    pub fn start(mut cmd: Command, stderr_path: &Path, ready: &[&Path]) -> Proc {
        let stderr = std::fs::File::create(stderr_path).unwrap();
        let child = cmd.stderr(stderr).spawn().unwrap();
        let mut p = Proc {
            child,
            stderr_path: stderr_path.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for socket in ready {
            while std::os::unix::net::UnixStream::connect(socket).is_err() {
                if let Some(status) = p.child.try_wait().unwrap() {
                    panic!("keyward exited early ({status}): {}", p.stderr());
                }
                assert!(
                    Instant::now() < deadline,
                    "socket {} never came up: {}",
                    socket.display(),
                    p.stderr()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        p
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Waits for exit up to `limit`; returns the exit status.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `keyward dev` child process in a temp dir, and the binary run against it.
pub struct DevServer {
    proc: Proc,
    pub dir: tempfile::TempDir,
    /// The store's socket.
    pub socket: PathBuf,
    /// `unix://` + socket, for `--server`.
    pub server: String,
}

impl DevServer {
    /// Starts `keyward dev --data DIR/kw` and waits for its store socket.
    pub fn start() -> DevServer {
        Self::start_with(&[])
    }

    /// Starts `keyward dev --data DIR/kw EXTRA...` (files `extra` names are relative to the
    /// temp dir, which [`DevServer::start_in`] lets the caller fill first) and waits for its
    /// store socket.
    pub fn start_with(extra: &[&str]) -> DevServer {
        Self::start_in(tempfile::tempdir().unwrap(), extra)
    }

    /// [`DevServer::start_with`] in `dir`.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> DevServer {
        let data = dir.path().join("kw");
        let socket = data.join("keyward.sock");
        let mut cmd = command(&[&["dev", "--data", data.to_str().unwrap()], extra].concat());
        cmd.current_dir(dir.path());
        let proc = Proc::start(cmd, &dir.path().join("dev.log"), &[&socket]);
        DevServer {
            proc,
            server: format!("unix://{}", socket.display()),
            socket,
            dir,
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the server to exit; its status.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.proc.signal(rustix::process::Signal::TERM);
        self.proc.wait(limit)
    }

    /// The admin kubeconfig `keyward dev` writes (waits up to 30 s for it).
    pub fn kubeconfig(&self) -> PathBuf {
        let p = self.path("kw/kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.exists() {
            assert!(Instant::now() < deadline, "keyward dev wrote no kubeconfig");
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    /// A path inside the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs the binary with `--server`, in the temp dir, with `env` and optional `stdin`;
    /// returns (exit code, stdout, stderr).
    pub fn command(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> (i32, String, String) {
        use std::io::Write as _;
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("--server")
            .arg(&self.server)
            .current_dir(self.dir.path())
            .env_remove("KEYWARD_SERVER")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let o = child.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// [`DevServer::command`] with `env` and no stdin.
    pub fn kw_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        self.command(args, env, None)
    }

    /// [`DevServer::command`] with no stdin.
    pub fn kw(&self, args: &[&str]) -> (i32, String, String) {
        self.kw_env(args, &[])
    }

    /// [`DevServer::kw`], which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.kw(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    }

    /// Writes `content` to `rel` in the temp dir, creating its directories.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("a path in the temp dir")).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// Replaces the per-run values of a printed object (uid, creationTimestamp, resourceVersion)
/// with placeholders, so whole outputs can be compared.
pub fn normalise(s: &str) -> String {
    let mut out = Vec::new();
    for line in s.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        out.push(if t.starts_with("uid: ") {
            format!("{indent}uid: UID")
        } else if t.starts_with("creationTimestamp: ") {
            format!("{indent}creationTimestamp: TIME")
        } else if t.starts_with("resourceVersion: ") {
            format!("{indent}resourceVersion: \"RV\"")
        } else {
            line.to_owned()
        });
    }
    out.join("\n") + if s.ends_with('\n') { "\n" } else { "" }
}
