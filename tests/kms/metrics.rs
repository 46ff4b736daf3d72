//! The plugin's `/metrics` and JSON logs, on the real binary: `keyward kms serve
//! --metrics-listen ... --log-format json`, scraped over HTTP and parsed by Python
//! prometheus_client's parsers. Counters move with the calls made, key ids appear only hashed,
//! and the flags refuse what they should, naming themselves.

use std::path::PathBuf;

use crate::support::metrics::{family, label_values, parse, scrape, scrape_accept, value};
use crate::support::plugin::{decrypt, encrypt, status};
use crate::support::{client_runtime, free_port, run, Proc};

const DECRYPT: &str = "/v2.KeyManagementService/Decrypt";
const ENCRYPT: &str = "/v2.KeyManagementService/Encrypt";
const STATUS: &str = "/v2.KeyManagementService/Status";
const DURATION: &str = "keyward_kms_request_duration_seconds";

struct Served {
    dir: tempfile::TempDir,
    proc: Proc,
    addr: String,
}

impl Served {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A keyring in a temp dir, served with metrics on a free loopback port and JSON logs.
fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let (ok, _, err) = run(&[
        "kms",
        "init",
        "--data",
        &p("data"),
        "--generate-keyfile",
        &p("root.key"),
    ]);
    assert!(ok, "{err}");
    let addr = format!("127.0.0.1:{}", crate::support::free_port());
    let proc = plugin(
        dir.path(),
        &["--metrics-listen", &addr, "--log-format", "json"],
        &[("RUST_LOG", "debug")],
    );
    Served { dir, proc, addr }
}

/// The arguments of `keyward kms serve` of the keyring in `dir/data` (sealed by
/// `dir/root.key`) on `dir/kms.sock` and `dir/admin.sock`, then `extra`.
fn serve_args(dir: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let mut args: Vec<String> = vec![
        "kms".into(),
        "serve".into(),
        "--data".into(),
        p("data"),
        "--seal".into(),
        format!("keyfile:{}", p("root.key")),
        "--socket".into(),
        p("kms.sock"),
        "--admin-socket".into(),
        p("admin.sock"),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `keyward kms serve` of the keyring in `dir/data` (sealed by `dir/root.key`) on
/// `dir/kms.sock` and `dir/admin.sock`, with `extra` flags, ready.
fn plugin(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let args = serve_args(dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn_ready(
        &args,
        env,
        &dir.join("serve.log"),
        &[&dir.join("kms.sock"), &dir.join("admin.sock")],
    )
}

#[test]
fn counters_move_with_calls_and_key_ids_appear_only_hashed() {
    let s = serve();
    let sock = s.p("kms.sock");
    let rt = client_runtime();
    let before = parse(&scrape(&s.addr), false);
    let decrypts_before = value(
        &before,
        &format!("{DURATION}_count"),
        &[("method", DECRYPT), ("code", "OK")],
    );

    let (key_id, healthz) = rt.block_on(status(&sock));
    assert_eq!(healthz, "ok");
    let (ct, enc_key_id) = rt.block_on(encrypt(&sock, &[7u8; 32]));
    assert_eq!(enc_key_id, key_id);
    for _ in 0..3 {
        assert_eq!(
            rt.block_on(decrypt(&sock, &ct, &key_id)).unwrap(),
            [7u8; 32]
        );
    }
    let refused = rt.block_on(decrypt(&sock, b"not a ciphertext", &key_id));
    assert_eq!(refused.unwrap_err().code(), tonic::Code::InvalidArgument);

    // A call's duration is observed once its response has gone: scrape until the last is in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (text, after) = loop {
        let text = scrape(&s.addr);
        let after = parse(&text, false);
        let refused = value(
            &after,
            &format!("{DURATION}_count"),
            &[("method", DECRYPT), ("code", "InvalidArgument")],
        );
        if refused >= 1.0 || std::time::Instant::now() > deadline {
            break (text, after);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let count = |method: &str, code: &str| {
        value(
            &after,
            &format!("{DURATION}_count"),
            &[("method", method), ("code", code)],
        )
    };
    assert_eq!(count(DECRYPT, "OK") - decrypts_before, 3.0, "{text}");
    assert_eq!(count(DECRYPT, "InvalidArgument"), 1.0, "{text}");
    assert!(count(ENCRYPT, "OK") >= 1.0, "{text}");
    assert!(count(STATUS, "OK") >= 1.0, "{text}");
    assert_eq!(
        value(
            &after,
            "keyward_kms_request_errors_total",
            &[("method", DECRYPT), ("code", "InvalidArgument")]
        ),
        1.0,
        "{text}"
    );
    // Histogram buckets are cumulative and end at +Inf with the count.
    assert_eq!(
        value(
            &after,
            &format!("{DURATION}_bucket"),
            &[("method", DECRYPT), ("code", "OK"), ("le", "+Inf")]
        ),
        count(DECRYPT, "OK")
    );
    assert_eq!(
        family(&after, DURATION).expect("duration family").kind,
        "histogram"
    );
    assert_eq!(
        value(
            &after,
            "keyward_kms_requests_in_flight",
            &[("method", DECRYPT)]
        ),
        0.0
    );

    // The keyring's state.
    assert_eq!(value(&after, "keyward_keyring_sealed", &[]), 0.0);
    assert_eq!(value(&after, "keyward_keyring_healthy", &[]), 1.0);
    let hash = keyward::crypto::key_id_hash(&key_id);
    assert_eq!(
        value(
            &after,
            "keyward_keyring_primary_key_info",
            &[("key_id_hash", &hash)]
        ),
        1.0,
        "{text}"
    );
    assert!(value(&after, "keyward_keyring_primary_key_encryptions", &[]) >= 1.0);
    assert_eq!(
        value(&after, "keyward_keyring_primary_key_encryption_limit", &[]),
        2147483648.0
    );
    assert_eq!(
        value(&after, "keyward_keyring_keys", &[("state", "primary")]),
        1.0
    );
    // The rotation policy, as `--rotate-after` and `--rotate-after-encryptions` default it.
    assert_eq!(
        value(&after, "keyward_keyring_rotate_after_seconds", &[]),
        (90 * 24 * 3600) as f64
    );
    assert_eq!(
        value(&after, "keyward_keyring_rotate_after_encryptions", &[]),
        1073741824.0
    );
    assert!(value(&after, "keyward_build_info", &[]) == 1.0);
    // No key id in clear anywhere: not in a label, not in the text.
    assert!(!text.contains(&key_id), "{text}");
    assert!(label_values(&after).iter().all(|v| !v.contains("kw-1-")));

    // The same registry in OpenMetrics, for scrapers that ask for it.
    let om = scrape_accept(&s.addr, "application/openmetrics-text; version=1.0.0");
    assert!(om.ends_with("# EOF\n"), "{om}");
    let om = parse(&om, true);
    assert_eq!(
        value(
            &om,
            &format!("{DURATION}_count"),
            &[("method", DECRYPT), ("code", "InvalidArgument")]
        ),
        1.0
    );

    // JSON logs: every stderr line is a JSON object; key ids only hashed.
    let log = s.proc.stderr();
    let mut saw_hash = false;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v.get(field).is_some(), "{field} missing: {line}");
        }
        saw_hash |= v.get("key_id_hash").and_then(|h| h.as_str()) == Some(hash.as_str());
    }
    assert!(saw_hash, "no log line carries key_id_hash {hash}:\n{log}");
    assert!(
        !log.contains(&key_id),
        "a key id in clear in the log:\n{log}"
    );
    assert!(
        log.contains("\"metrics_listen\""),
        "the endpoint is logged:\n{log}"
    );
}

#[test]
fn metrics_flags_refuse_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let base = |extra: &[&str]| serve_args(dir.path(), extra);
    let port = free_port();
    let any = format!("0.0.0.0:{port}");
    for (extra, want) in [
        (
            vec!["--metrics-listen", any.as_str()],
            "--metrics-listen 0.0.0.0:",
        ),
        (
            vec!["--metrics-listen", "localhost"],
            "invalid value 'localhost' for '--metrics-listen <ADDR>'",
        ),
        (vec!["--metrics-listen-any"], "--metrics-listen <ADDR>"),
        (
            vec!["--log-format", "xml"],
            "invalid value 'xml' for '--log-format <FORMAT>'",
        ),
    ] {
        let args = base(&extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = run(&args);
        assert!(!ok, "{extra:?} accepted");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    // A non-loopback address is refused before anything is opened, with what to do.
    let args = base(&["--metrics-listen", &any]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, _, err) = run(&args);
    assert!(err.contains("--metrics-listen-any"), "{err}");
    assert!(!dir.path().join("kms.sock").exists());
}

/// A start refused after the keyring was opened gives back the encryptions opening reserved:
/// a plugin failing to start again and again (under a supervisor) does not count a block of
/// 262,144 per attempt as used.
#[test]
fn a_taken_metrics_port_is_refused_before_the_sockets_are_bound() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    let (ok, _, err) = run(&[
        "kms",
        "init",
        "--data",
        &p("data"),
        "--generate-keyfile",
        &p("root.key"),
    ]);
    assert!(ok, "{err}");
    let refused = |extra: &[&str]| {
        let mut args = serve_args(dir.path(), &["--metrics-listen", &addr]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = run(&args);
        assert!(!ok);
        err
    };
    let err = refused(&[]);
    assert!(err.contains(&format!("--metrics-listen {addr}: ")), "{err}");
    assert!(!dir.path().join("kms.sock").exists());
    // With --log-format json, why it stopped is a JSON line like the others.
    let err = refused(&["--log-format", "json"]);
    let last: serde_json::Value = serde_json::from_str(err.trim_end().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(last["level"], "ERROR", "{err}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains(&format!("--metrics-listen {addr}: ")),
        "{err}"
    );
    // Once more, then served: the primary key has counted almost nothing.
    refused(&[]);
    drop(taken);
    let admin = p("admin.sock");
    let proc = plugin(dir.path(), &[], &[]);
    let (ok, out, err) = run(&["kms", "keys", "--admin-socket", &admin, "-o", "json"]);
    assert!(ok, "{err}");
    let keys: serde_json::Value = serde_json::from_str(&out).unwrap();
    let used = keys[0]["encryptions"].as_u64().unwrap_or(u64::MAX);
    assert!(used < 100, "{out}");
    drop(proc);
}

/// Flags that would do nothing are refused naming themselves, an admin command pointed at the
/// KMS socket says so, and `retire` of a key it cannot take prints only the plugin's refusal.
#[test]
fn wrong_sockets_and_flags_without_effect_are_named() {
    let s = serve();
    let kms = s.p("kms.sock").to_str().unwrap().to_owned();
    let admin = s.p("admin.sock").to_str().unwrap().to_owned();
    let (ok, _, err) = run(&["kms", "status", "--admin-socket", &kms]);
    assert!(!ok);
    assert!(
        err.contains("does not serve the plugin's admin API") && err.contains("--admin-socket"),
        "{err}"
    );
    for id in ["", "kw-9-nope"] {
        let (ok, _, err) = run(&["kms", "retire", id, "--admin-socket", &admin]);
        assert!(!ok);
        assert!(!err.contains("note:"), "{err}");
    }
    let seal = format!("keyfile:{}", s.p("root.key").display());
    let other = s.p("other.sock").to_str().unwrap().to_owned();
    let data = s.p("data").to_str().unwrap().to_owned();
    let (ok, _, err) = run(&[
        "kms",
        "serve",
        "--data",
        &data,
        "--seal",
        &seal,
        "--socket",
        &other,
        "--admin-allow-uid",
        "4242",
    ]);
    assert!(
        !ok && err.contains("--admin-allow-uid") && err.contains("--admin-socket"),
        "{err}"
    );
    assert!(!s.p("other.sock").exists());
    let (ok, _, err) = run(&[
        "kms",
        "init",
        "--data",
        s.p("data2").to_str().unwrap(),
        "--seal",
        &seal,
        "--argon2-iterations",
        "5",
    ]);
    assert!(
        !ok && err.contains("--argon2-iterations") && err.contains("passphrase-file"),
        "{err}"
    );
    assert!(!s.p("data2").exists());
}
