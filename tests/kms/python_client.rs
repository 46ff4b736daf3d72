//! Cross-language test: the real `keyward` binary serves KMS v2/v1 on a Unix socket, and an
//! independent Python grpcio client (tests/python/kms_flow.py, stubs generated at run time from
//! proto/) drives it the way kube-apiserver does, including a KEK rotation through the admin API.
//!
//! Needs python3 with grpcio and grpcio-tools:
//! `python3 -m pip install -r tests/python/requirements.txt`.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_keyward");
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Kills and reaps the server if the test panics before stopping it.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child already taken")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `n` lines of a log file, for failure messages.
fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read log: {e}>"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn output_text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn python_deps_present() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(output_text(&out)),
        Err(e) => Err(format!("cannot run python3: {e}")),
    }
}

fn accepts(path: &Path) -> bool {
    path.exists() && UnixStream::connect(path).is_ok()
}

/// Waits until both sockets accept connections, or the server exits, or the time runs out.
fn wait_for_sockets(server: &mut Child, sockets: &[&Path], log: &Path) {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if sockets.iter().all(|s| accepts(s)) {
            return;
        }
        if let Some(status) = server.try_wait().expect("try_wait on the server") {
            panic!(
                "keyward kms serve exited early with {status}; its log:\n{}",
                log_tail(log, 200)
            );
        }
        assert!(
            Instant::now() < deadline,
            "sockets {sockets:?} did not accept connections within {STARTUP_TIMEOUT:?}; server log:\n{}",
            log_tail(log, 200)
        );
        sleep(Duration::from_millis(50));
    }
}

fn wait_exit(server: &mut Child, log: &Path) -> ExitStatus {
    let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
    loop {
        if let Some(status) = server.try_wait().expect("try_wait on the server") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "keyward kms serve did not exit within {SHUTDOWN_TIMEOUT:?} of SIGTERM; server log:\n{}",
            log_tail(log, 200)
        );
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn python_grpcio_client_drives_kms_plugin_like_kube_apiserver() {
    if let Err(detail) = python_deps_present() {
        panic!(
            "python3 with grpcio and grpcio-tools is required for this test; install them with\n    \
             python3 -m pip install -r tests/python/requirements.txt\n{detail}"
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let key = dir.path().join("root.key");
    let kms_sock = dir.path().join("kms.sock");
    let admin_sock = dir.path().join("admin.sock");
    let log = dir.path().join("serve.log");

    // Create a keyring sealed by a freshly generated key file.
    let init = Command::new(BIN)
        .arg("kms")
        .arg("init")
        .arg("--data")
        .arg(&data)
        .arg("--generate-keyfile")
        .arg(&key)
        .output()
        .expect("run keyward kms init");
    assert!(
        init.status.success(),
        "keyward kms init failed\n{}",
        output_text(&init)
    );
    let mode = fs::metadata(&key).expect("key file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "generated key file mode is {mode:o}");

    let seal = format!("keyfile:{}", key.display());
    let log_file = File::create(&log).expect("create log");
    let server = Command::new(BIN)
        .arg("kms")
        .arg("serve")
        .arg("--data")
        .arg(&data)
        .arg("--seal")
        .arg(&seal)
        .arg("--socket")
        .arg(&kms_sock)
        .arg("--admin-socket")
        .arg(&admin_sock)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file.try_clone().expect("clone log")))
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("spawn keyward kms serve");
    let mut guard = ChildGuard(Some(server));
    wait_for_sockets(guard.child(), &[&kms_sock, &admin_sock], &log);

    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "python", "kms_flow.py"]
        .iter()
        .collect();
    let flow = Command::new("python3")
        .arg(&script)
        .arg("--socket")
        .arg(&kms_sock)
        .arg("--admin-socket")
        .arg(&admin_sock)
        .stdin(Stdio::null())
        .output()
        .expect("run tests/python/kms_flow.py");
    let flow_text = output_text(&flow);
    println!("{flow_text}");
    assert!(
        flow.status.success(),
        "kms_flow.py failed\n{flow_text}\n--- server log (tail) ---\n{}",
        log_tail(&log, 200)
    );
    let stdout = String::from_utf8_lossy(&flow.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("kms_flow: ") && l.ends_with(" passed, 0 failed")),
        "kms_flow.py printed no summary line\n{flow_text}"
    );

    // Graceful stop, as the kubelet or systemd would.
    let pid = guard.child().id();
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid fits i32"))
        .expect("non-zero pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
    let status = wait_exit(guard.child(), &log);
    guard.0 = None;
    assert!(
        status.success(),
        "keyward kms serve exited with {status} after SIGTERM; server log:\n{}",
        log_tail(&log, 200)
    );
    for sock in [&kms_sock, &admin_sock] {
        assert!(
            !sock.exists(),
            "{} still exists after a clean shutdown",
            sock.display()
        );
    }
}
