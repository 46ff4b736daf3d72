//! `keyward bench` against a real `keyward dev` child process: JSON reports, the decrypt storm,
//! the store benchmark and flag errors. Never asserts a throughput or latency value.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::Proc;

struct Dev {
    _proc: Proc,
    dir: tempfile::TempDir,
}

impl Dev {
    fn start() -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        let proc = Proc::spawn(
            &["dev", "--data", data.to_str().unwrap()],
            &[],
            &dir.path().join("dev.log"),
            &data.join("keyward.sock"),
        );
        Dev { _proc: proc, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("kw").join(name)
    }

    fn kms_endpoint(&self) -> String {
        format!("unix://{}", self.path("kms.sock").display())
    }

    fn server(&self) -> String {
        format!("unix://{}", self.path("keyward.sock").display())
    }
}

/// Runs keyward; returns (exit code, stdout, stderr).
fn kw(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::bin())
        .args(args)
        .env_remove("KEYWARD_SERVER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs keyward, expects success and one JSON object on stdout.
fn kw_json(args: &[&str]) -> serde_json::Value {
    let (code, out, err) = kw(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Checks the counts and that the latency percentiles are ordered.
fn check_report(v: &serde_json::Value, calls: u64) {
    assert_eq!(v["calls"], calls, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["ok"], calls, "{v}");
    assert_eq!(v["errors_by_code"], serde_json::json!({}), "{v}");
    assert!(v["calls_per_second"].as_f64().unwrap() > 0.0, "{v}");
    let l = &v["latency_us"];
    let get = |k: &str| {
        l[k].as_u64()
            .unwrap_or_else(|| panic!("latency_us.{k}: {v}"))
    };
    assert!(get("p50") > 0, "{v}");
    assert!(get("min") <= get("p50"), "{v}");
    assert!(get("p50") <= get("p90"), "{v}");
    assert!(get("p90") <= get("p99"), "{v}");
    assert!(get("p99") <= get("p99_9"), "{v}");
    assert!(get("p99_9") <= get("max"), "{v}");
}

#[test]
fn kms_decrypt_storm_and_store() {
    let dev = Dev::start();
    let endpoint = dev.kms_endpoint();

    let v = kw_json(&[
        "bench",
        "kms",
        "--endpoint",
        &endpoint,
        "--op",
        "decrypt",
        "--requests",
        "500",
        "--concurrency",
        "8",
        "--warmup",
        "0s",
        "--output",
        "json",
    ]);
    check_report(&v, 500);
    assert_eq!(v["target"], "kms");
    assert_eq!(v["op"], "decrypt");
    assert_eq!(v["concurrency"], 8);
    assert_eq!(v["payload_bytes"], 32);

    let v = kw_json(&[
        "bench",
        "kms",
        "--endpoint",
        &endpoint,
        "--op",
        "mixed",
        "--requests",
        "200",
        "--concurrency",
        "4",
        "--warmup",
        "100ms",
        "--payload",
        "1KiB",
        "-o",
        "json",
    ]);
    check_report(&v, 200);
    assert_eq!(v["payload_bytes"], 1024);

    let v = kw_json(&[
        "bench",
        "kms",
        "--endpoint",
        &endpoint,
        "--storm",
        "300",
        "--concurrency",
        "16",
        "--output",
        "json",
    ]);
    check_report(&v, 300);
    assert_eq!(v["storm"], 300);
    assert!(v["time_to_finish_seconds"].as_f64().unwrap() > 0.0, "{v}");

    // Text output names the numbers with units.
    let (code, out, err) = kw(&[
        "bench",
        "kms",
        "--endpoint",
        &endpoint,
        "--op",
        "status",
        "--duration",
        "200ms",
        "--warmup",
        "0s",
        "--concurrency",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    for want in ["throughput:", "calls/s", "p50", "p99.9", "max"] {
        assert!(out.contains(want), "{want}: {out}");
    }

    let server = dev.server();
    let v = kw_json(&[
        "bench",
        "store",
        "--server",
        &server,
        "--op",
        "mixed",
        "--requests",
        "300",
        "--keys",
        "50",
        "--value-size",
        "1KiB",
        "--warmup",
        "0s",
        "--output",
        "json",
    ]);
    check_report(&v, 300);
    assert_eq!(v["target"], "store");
    assert_eq!(v["keys"], 50);
    assert_eq!(v["value_bytes"], 1024);

    // The keys exist now; a second run overwrites them and lists them.
    let v = kw_json(&[
        "bench",
        "store",
        "--server",
        &server,
        "--op",
        "list",
        "--requests",
        "20",
        "--keys",
        "50",
        "--warmup",
        "0s",
        "--concurrency",
        "2",
        "-o",
        "json",
    ]);
    check_report(&v, 20);
    let (code, out, err) = kw(&["get", "secrets", "-n", "bench", "--server", &server]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("bench-").count(), 50, "{out}");
}

#[test]
fn bad_flags_name_the_flag() {
    let endpoint = "unix:///nonexistent/kms.sock";
    for (args, want) in [
        (
            &["bench", "kms", "--endpoint", endpoint, "--concurrency", "0"][..],
            "--concurrency: must be 1 to 10000",
        ),
        (
            &["bench", "kms", "--endpoint", endpoint, "--duration", "soon"],
            "--duration: \"soon\" is not a duration",
        ),
        (
            &["bench", "kms", "--endpoint", endpoint, "--payload", "1GiB"],
            "--payload: \"1GiB\" is not a size",
        ),
        (
            &["bench", "kms", "--endpoint", endpoint, "--payload", "2MiB"],
            "--payload: must be 1 byte to 1MiB",
        ),
        (
            &["bench", "kms", "--endpoint", endpoint, "--storm", "0"],
            "--storm: must be 1 to",
        ),
        (
            &["bench", "kms", "--endpoint", "/run/kms.sock"],
            "--endpoint \"/run/kms.sock\": expected unix:///",
        ),
        (
            &["bench", "store", "--keys", "0"],
            "--keys: must be 1 to 1000000",
        ),
        (
            &["bench", "store", "--value-size", "lots"],
            "--value-size: \"lots\" is not a size",
        ),
        (
            &["bench", "store", "--requests=-5"],
            "--requests: \"-5\" is not a whole number",
        ),
    ] {
        let (code, _, err) = kw(args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }

    // Conflicting flags and unknown values are rejected by the parser, naming the flags.
    for (args, want) in [
        (
            &[
                "bench",
                "kms",
                "--endpoint",
                endpoint,
                "--storm",
                "5",
                "--requests",
                "5",
            ][..],
            &["--storm", "--requests"][..],
        ),
        (
            &["bench", "store", "--duration", "1s", "--requests", "5"],
            &["--duration", "--requests"],
        ),
        (
            &["bench", "kms", "--endpoint", endpoint, "--op", "delete"],
            &["--op"],
        ),
        (&["bench", "kms"], &["--endpoint"]),
    ] {
        let (code, _, err) = kw(args);
        assert_ne!(code, 0, "{args:?}");
        for w in want {
            assert!(err.contains(w), "{args:?}: {err}");
        }
    }

    // Nothing listening: a connection error naming the socket, not a hang.
    let (code, _, err) = kw(&["bench", "kms", "--endpoint", endpoint, "--requests", "1"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/kms.sock"), "{err}");
}
