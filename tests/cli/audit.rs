//! `keyward audit verify` on logs written by the library's `AuditLog`: an untouched log passes;
//! an edit, a deletion, a reordering, a truncation, a forged checkpoint and the wrong key each
//! fail with exit code 1, naming the line; unreadable input is exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use keyward::audit::{
    AuditLog, AuditObject, Auditor, LogConfig, Peer, Policy, RequestInfo, ResponseStatus,
};
use keyward::authn::Identity;
use keyward::authz::{Attributes, Decision};
use keyward::crypto::Ed25519SigningKey;

struct Log {
    dir: tempfile::TempDir,
    public_key: PathBuf,
}

impl Log {
    /// A closed log of 12 get requests (two events each), a checkpoint every 5 events, and
    /// its public key as PEM.
    fn write(max_size: u64) -> Log {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(Ed25519SigningKey::generate().unwrap());
        let public_key = dir.path().join("audit.pub");
        std::fs::write(&public_key, key.public_key().to_pem()).unwrap();
        let config = LogConfig {
            checkpoint_every: 5,
            max_size,
            ..LogConfig::new(dir.path().join("audit.log"))
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let log = AuditLog::open(config, key).await.unwrap();
            let policy = Policy::parse(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
            )
            .unwrap();
            let auditor = Auditor::new(policy, Arc::new(log.clone()));
            for i in 0..12 {
                let attrs = Attributes {
                    user: Identity::new("app", "", vec!["system:authenticated".into()]),
                    verb: "get".into(),
                    resource: "secrets".into(),
                    namespace: "prod".into(),
                    name: format!("db-{i}"),
                    ..Default::default()
                };
                let info = RequestInfo::new("/keyward.v1.Secrets/Get", Peer::Unix { uid: 1000 });
                let mut rec = auditor.begin(&attrs, info);
                let allow = Decision::Allow {
                    reason: "RBAC: allowed".into(),
                };
                rec.request_received(&allow, None).await.unwrap();
                rec.response_complete(ResponseStatus::success(200), None::<AuditObject>)
                    .await
                    .unwrap();
            }
            log.close().await.unwrap();
        });
        Log { dir, public_key }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.path())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn set_lines(&self, lines: &[String]) {
        std::fs::write(self.path(), lines.join("\n") + "\n").unwrap();
    }

    /// Changes the lines with `change`, runs `keyward audit verify`, expects exit code 1 and
    /// returns stdout.
    fn tampered(&self, change: impl FnOnce(&mut Vec<String>)) -> String {
        let mut lines = self.lines();
        change(&mut lines);
        self.set_lines(&lines);
        let (code, out, err) = self.verify(&[]);
        assert_eq!(code, 1, "{out}{err}");
        out
    }

    /// `keyward audit verify <active file> --public-key <pem> EXTRA...`.
    fn verify(&self, extra: &[&str]) -> (i32, String, String) {
        let mut args = vec![
            "audit".to_owned(),
            "verify".to_owned(),
            self.path().display().to_string(),
            "--public-key".to_owned(),
            self.public_key.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        kw(&args)
    }
}

fn kw(args: &[String]) -> (i32, String, String) {
    let out = Command::new(crate::support::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Layout of the log: line 1 open checkpoint; events at 2-6, checkpoint 7, events 8-12,
/// checkpoint 13, ... 24 events in all, shutdown checkpoint last.
#[test]
fn an_untouched_log_passes() {
    let log = Log::write(0);
    let (code, out, err) = log.verify(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!(
            "OK: 1 file, 30 lines (24 events, 6 signed checkpoints), sequence 1-30; sealed by the shutdown checkpoint at {}:30\n",
            s(&log.path())
        )
    );
    assert_eq!(err, "");
    // Every line is an audit.k8s.io/v1 Event; checkpoints are skippable by verb.
    let events = log
        .lines()
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["verb"] != "checkpoint")
        .inspect(|v| assert_eq!(v["apiVersion"], "audit.k8s.io/v1"))
        .count();
    assert_eq!(events, 24);
    // Without a key: the chain is checked, with a warning.
    let (code, out, err) = kw(&["audit".into(), "verify".into(), s(&log.path())]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("OK: 1 file, 30 lines (24 events, 6 checkpoints)"),
        "{out}"
    );
    assert!(
        err.starts_with("warning: checkpoint signatures were not checked"),
        "{err}"
    );
}

#[test]
fn an_edited_line_fails_naming_it() {
    let log = Log::write(0);
    let out = log.tampered(|lines| lines[3] = lines[3].replace("db-1", "db-9"));
    assert_eq!(
        out,
        format!(
            "TAMPERED: {}:4: this line was edited: its SHA-256 does not match the chain recorded in line 5\n",
            s(&log.path())
        )
    );
}

#[test]
fn a_deleted_line_fails_naming_it() {
    let log = Log::write(0);
    let out = log.tampered(|lines| {
        lines.remove(8);
    });
    assert_eq!(
        out,
        format!(
            "TAMPERED: {}:9: 1 line removed before this line: the sequence jumps from 8 to 10\n",
            s(&log.path())
        )
    );
}

#[test]
fn reordered_lines_fail_naming_them() {
    let log = Log::write(0);
    let out = log.tampered(|lines| lines.swap(9, 10));
    assert_eq!(
        out,
        format!(
            "TAMPERED: {}:10: lines out of order: this line has sequence 11, but 10 was expected (it is at line 11)\n",
            s(&log.path())
        )
    );
}

#[test]
fn a_truncated_log_fails_unless_it_is_live() {
    let log = Log::write(0);
    let mut lines = log.lines();
    lines.truncate(16); // checkpoint at 13, events 14-16; the rest is gone
    log.set_lines(&lines);
    let (code, out, _) = log.verify(&[]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        format!(
            "UNSEALED: {}: unsealed tail of 3 lines since the last checkpoint at line 13 (periodic): a log closed cleanly ends with a shutdown checkpoint, so lines after it may have been cut or edited (or the log is still being written, or its writer stopped without closing it)\n",
            s(&log.path())
        )
    );
    let (code, out, _) = log.verify(&["--allow-unsealed-tail"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(
            "OK: 1 file, 16 lines (13 events, 3 signed checkpoints), sequence 1-16\nnote: "
        ),
        "{out}"
    );
    // Cut inside the last line: what a crash of the machine can leave, an unsealed tail.
    let bytes = std::fs::read(log.path()).unwrap();
    std::fs::write(log.path(), &bytes[..bytes.len() - 10]).unwrap();
    let (code, out, _) = log.verify(&[]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with(&format!(
            "note: {}:16: the last line is incomplete: the file was cut inside it",
            s(&log.path())
        )) && out.contains("\nUNSEALED: "),
        "{out}"
    );
    let (code, out, _) = log.verify(&["--allow-unsealed-tail"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_forged_checkpoint_fails_naming_it() {
    let log = Log::write(0);
    // Line 7 is a checkpoint: move its time without the key.
    let out = log.tampered(|lines| {
        assert!(lines[6].contains("\"verb\":\"checkpoint\""));
        let v: serde_json::Value = serde_json::from_str(&lines[6]).unwrap();
        let time = v["stageTimestamp"].as_str().unwrap().to_owned();
        lines[6] = lines[6].replace(&time, "2020-01-01T00:00:00.000000Z");
    });
    assert_eq!(
        out,
        format!(
            "TAMPERED: {}:7: the checkpoint's signature does not verify: it was forged or edited\n",
            s(&log.path())
        )
    );
}

/// A checkpoint signed by a key that was not given is unverified, not proof of tampering; a
/// key the writer kept beside the given one when it changed keys (`FILE.<id>.pub`, as the KMS
/// plugin's admin log does at every start) is pointed to, not trusted.
#[test]
fn the_wrong_key_fails_at_line_1() {
    let log = Log::write(0);
    let other = Ed25519SigningKey::generate().unwrap();
    let other_pem = log.dir.path().join("other.pub");
    std::fs::write(&other_pem, other.public_key().to_pem()).unwrap();
    let verify = || {
        kw(&[
            "audit".into(),
            "verify".into(),
            s(&log.path()),
            "--public-key".into(),
            s(&other_pem),
        ])
    };
    let (code, out, _) = verify();
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().next().unwrap(),
        format!(
            "UNVERIFIED: {}:1: the checkpoint is signed by key {}, not by the given public key ({})",
            s(&log.path()),
            std::fs::read_to_string(&log.public_key)
                .ok()
                .and_then(|pem| keyward::crypto::Ed25519PublicKey::from_pem(&pem))
                .unwrap()
                .key_id(),
            other.public_key().key_id()
        ),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    let kept = log.dir.path().join("other.0123abcd.pub");
    std::fs::copy(&log.public_key, &kept).unwrap();
    let (code, out, _) = verify();
    assert_eq!(code, 1);
    assert_eq!(
        out.lines().nth(1).unwrap(),
        format!("note: {} was kept beside a given key (the earlier key of a writer that changed keys): give it with another --public-key if you trust it", s(&kept)),
        "{out}"
    );
}

#[test]
fn rotated_files_verify_together_in_any_order() {
    let log = Log::write(4000);
    let mut files: Vec<String> = std::fs::read_dir(log.dir.path())
        .unwrap()
        .map(|e| s(&e.unwrap().path()))
        .filter(|p| p.ends_with(".log"))
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    files.sort();
    files.reverse();
    let mut args = vec!["audit".to_owned(), "verify".to_owned()];
    args.extend(files.iter().cloned());
    args.extend(["--public-key".to_owned(), s(&log.public_key)]);
    let (code, out, err) = kw(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("OK: {} files, ", files.len())),
        "{out}"
    );
    assert!(out.contains("24 events"), "{out}");

    // Without the newest file (the active one, which is not a rotated `audit-<time>.log`):
    // INCOMPLETE, naming the last given file's rotate checkpoint, unless older files alone
    // are what is verified.
    let older: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("/audit.log"))
        .cloned()
        .collect();
    assert_eq!(older.len(), files.len() - 1, "{files:?}");
    let mut args = vec!["audit".to_owned(), "verify".to_owned()];
    args.extend(older.iter().cloned());
    args.extend(["--public-key".to_owned(), s(&log.public_key)]);
    let (code, out, err) = kw(&args);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines().any(|l| l.starts_with("INCOMPLETE: ")
            && l.contains("the log goes on in a newer file that was not given")),
        "{out}"
    );
    args.push("--allow-newer-files-missing".to_owned());
    let (code, out, err) = kw(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK: "), "{out}");
}

#[test]
fn unreadable_input_is_a_usage_error() {
    let log = Log::write(0);
    let missing = log.dir.path().join("missing.log");
    let (code, _, err) = kw(&[
        "audit".into(),
        "verify".into(),
        s(&missing),
        "--public-key".into(),
        s(&log.public_key),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with(&format!("error: audit log {}: ", s(&missing))),
        "{err}"
    );
    let bad_key = log.dir.path().join("bad.pub");
    std::fs::write(&bad_key, "not a key").unwrap();
    let (code, _, err) = kw(&[
        "audit".into(),
        "verify".into(),
        s(&log.path()),
        "--public-key".into(),
        s(&bad_key),
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        format!(
            "error: {}: not an Ed25519 public key (expected a PEM PUBLIC KEY, or 32 bytes raw, base64 or hex)\n",
            s(&bad_key)
        )
    );
    let (code, _, err) = kw(&["audit".into(), "verify".into()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("required arguments were not provided"),
        "{err}"
    );
}

/// An independent implementation (Python: hashlib and `cryptography`) recomputes the chain and
/// verifies every checkpoint signature of a rotated log, and rejects an edited one.
#[test]
fn python_cross_check_of_the_format() {
    let python = crate::support::tools::require_python(&["cryptography"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/audit_check.py");
    let log = Log::write(4000);
    let mut files: Vec<PathBuf> = std::fs::read_dir(log.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    // Chain order: the file index in each file's first line.
    files.sort_by_key(|p| {
        let text = std::fs::read_to_string(p).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let note = first["annotations"]["keyward.io/checkpoint"]
            .as_str()
            .unwrap()
            .to_owned();
        note.lines()
            .find_map(|l| l.strip_prefix("file "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    });
    assert_eq!(files.last(), Some(&log.path()));
    let run = |files: &[PathBuf]| {
        let out = Command::new(&python)
            .arg(script)
            .arg(&log.public_key)
            .args(files)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(&files);
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events"], 24);
    assert_eq!(v["last"], "shutdown");
    // An event of the first file edited (the last may hold checkpoints only).
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let edited = text.replacen("db-", "db_", 1);
    assert_ne!(edited, text);
    std::fs::write(&files[0], edited).unwrap();
    let (code, out) = run(&files);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("FAIL "), "{out}");
}
