//! Cross-language test: the real `keyward` binary serves KMS v2/v1 on a Unix socket, and an
//! independent Python grpcio client (tests/python/kms_flow.py, stubs generated at run time from
//! proto/) drives it the way kube-apiserver does, including a KEK rotation through the admin API.
//!
//! Needs python3 with grpcio and grpcio-tools:
//! `python3 -m pip install -r tests/python/requirements.txt`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::tools::require_python;
use crate::support::{bin, Proc};

fn output_text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn python_grpcio_client_drives_kms_plugin_like_kube_apiserver() {
    let python = require_python(&["grpc", "grpc_tools"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let key = dir.path().join("root.key");
    let kms_sock = dir.path().join("kms.sock");
    let admin_sock = dir.path().join("admin.sock");
    let log = dir.path().join("serve.log");

    // Create a keyring sealed by a freshly generated key file.
    let init = Command::new(bin())
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
    let mut server = Proc::spawn_ready(
        &[
            "kms",
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--seal",
            &seal,
            "--socket",
            kms_sock.to_str().unwrap(),
            "--admin-socket",
            admin_sock.to_str().unwrap(),
        ],
        &[],
        &log,
        &[&kms_sock, &admin_sock],
    );

    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "python", "kms_flow.py"]
        .iter()
        .collect();
    let flow = Command::new(&python)
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
        "kms_flow.py failed\n{flow_text}\n--- server log ---\n{}",
        server.stderr()
    );
    let stdout = String::from_utf8_lossy(&flow.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("kms_flow: ") && l.ends_with(" passed, 0 failed")),
        "kms_flow.py printed no summary line\n{flow_text}"
    );

    // Graceful stop, as the kubelet or systemd would.
    server.signal(rustix::process::Signal::TERM);
    let status = server.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "keyward kms serve exited with {status} after SIGTERM; server log:\n{}",
        server.stderr()
    );
    for sock in [&kms_sock, &admin_sock] {
        assert!(
            !sock.exists(),
            "{} still exists after a clean shutdown",
            sock.display()
        );
    }
}
