use super::*;
use crate::audit::chain::{parse_line, Checkpoint};
use crate::audit::{AuditLog, Auditor, LogConfig, Peer, Policy, RequestInfo};
use crate::authn::Identity;
use crate::authz::{Attributes, Decision};
use crate::crypto::Ed25519SigningKey;
use std::sync::Arc;

struct Log {
    dir: tempfile::TempDir,
    key: Arc<Ed25519SigningKey>,
}

impl Log {
    fn path(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    fn keys(&self) -> Vec<Ed25519PublicKey> {
        vec![self.key.public_key().clone()]
    }

    fn lines(&self) -> Vec<String> {
        crate::audit::writer::tests::read_lines(&self.path())
    }

    fn set_lines(&self, lines: &[String]) {
        std::fs::write(self.path(), lines.join("\n") + "\n").unwrap();
    }

    fn verify(&self) -> Report {
        verify(&[self.path()], &self.keys()).unwrap()
    }

    /// All files of the log, oldest first.
    fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort_by_key(|p| header(p).unwrap().unwrap().file);
        files
    }
}

async fn write_events(log: &AuditLog, from: usize, n: usize) {
    let policy =
        Policy::parse("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
            .unwrap();
    let auditor = Auditor::new(policy, Arc::new(log.clone()));
    for i in from..from + n {
        let attrs = Attributes {
            user: Identity::new(format!("user-{i}"), "", vec![]),
            verb: "get".into(),
            resource: "secrets".into(),
            namespace: "prod".into(),
            name: format!("s{i}"),
            ..Default::default()
        };
        let mut rec = auditor.begin(
            &attrs,
            RequestInfo::new("/keyward.v1.Secrets/Get", Peer::Unknown),
        );
        rec.request_received(
            &Decision::Allow {
                reason: String::new(),
            },
            None,
        )
        .await
        .unwrap();
    }
}

/// A closed log of `events` events with a checkpoint every `every` events.
async fn log_with(events: usize, every: u64, max_size: u64) -> Log {
    let log = Log {
        dir: tempfile::tempdir().unwrap(),
        key: Arc::new(Ed25519SigningKey::generate().unwrap()),
    };
    let config = LogConfig {
        checkpoint_every: every,
        max_size,
        ..LogConfig::new(log.path())
    };
    let w = AuditLog::open(config, log.key.clone()).await.unwrap();
    write_events(&w, 0, events).await;
    w.close().await.unwrap();
    log
}

fn problem(r: &Report) -> (ProblemKind, u64, String) {
    let p = r.problem.as_ref().expect("a problem");
    (p.kind, p.line, p.message.clone())
}

fn at(r: &Report) -> (ProblemKind, u64) {
    let p = problem(r);
    (p.0, p.1)
}

fn is_checkpoint(line: &str) -> bool {
    parse_line(line.as_bytes()).unwrap().checkpoint.is_some()
}

#[tokio::test]
async fn an_untouched_log_passes() {
    let log = log_with(10, 4, 0).await;
    let lines = log.lines();
    // open, 4 events, cp, 4 events, cp, 2 events, shutdown
    assert_eq!(lines.len(), 14);
    let r = log.verify();
    assert_eq!(r.problem, None);
    assert_eq!((r.lines, r.events, r.checkpoints), (14, 10, 4));
    assert_eq!((r.first_seq, r.last_seq), (1, 14));
    assert!(r.signatures_checked);
    assert_eq!(
        r.tail,
        Tail::Sealed {
            kind: CheckpointKind::Shutdown,
            path: log.path(),
            line: 14
        }
    );
    // Without keys the chain is still checked.
    let unsigned = verify(&[log.path()], &[]).unwrap();
    assert!(unsigned.is_intact() && !unsigned.signatures_checked);
}

#[tokio::test]
async fn an_edited_line_is_named() {
    let log = log_with(10, 4, 0).await;
    let mut lines = log.lines();
    assert!(!is_checkpoint(&lines[2]));
    lines[2] = lines[2].replace("user-1", "user-X");
    log.set_lines(&lines);
    let (kind, line, msg) = problem(&log.verify());
    assert_eq!((kind, line), (ProblemKind::Edited, 3));
    assert!(
        msg.contains("does not match the chain recorded in line 4"),
        "{msg}"
    );

    // An edited link (the chain annotation of line 3 itself).
    let log = log_with(10, 4, 0).await;
    let mut lines = log.lines();
    let info = parse_line(lines[2].as_bytes()).unwrap();
    lines[2] = lines[2].replace(&hex::encode(info.chain), &hex::encode([7u8; 32]));
    log.set_lines(&lines);
    assert_eq!(at(&log.verify()), (ProblemKind::Edited, 3));

    // An edited sequence number.
    let log = log_with(10, 4, 0).await;
    let mut lines = log.lines();
    lines[2] = lines[2].replace("\"keyward.io/seq\":\"3\"", "\"keyward.io/seq\":\"4\"");
    log.set_lines(&lines);
    assert_eq!(at(&log.verify()), (ProblemKind::Edited, 3));

    // An edit that breaks the JSON.
    let log = log_with(10, 4, 0).await;
    let mut lines = log.lines();
    lines[4].pop();
    log.set_lines(&lines);
    let (kind, line, _) = problem(&log.verify());
    assert_eq!((kind, line), (ProblemKind::Malformed, 5));
}

#[tokio::test]
async fn a_removed_line_is_named() {
    let log = log_with(10, 4, 0).await;
    let mut lines = log.lines();
    lines.remove(3);
    log.set_lines(&lines);
    let (kind, line, msg) = problem(&log.verify());
    assert_eq!((kind, line), (ProblemKind::Removed, 4));
    assert!(
        msg.contains("1 line removed before this line: the sequence jumps from 3 to 5"),
        "{msg}"
    );
    // The first line removed.
    let log = log_with(3, 4, 0).await;
    let mut lines = log.lines();
    lines.remove(0);
    log.set_lines(&lines);
    assert_eq!(problem(&log.verify()).0, ProblemKind::Malformed);
}

#[tokio::test]
async fn reordered_and_duplicated_lines_are_named() {
    let log = log_with(10, 4, 0).await;
    let mut lines = log.lines();
    lines.swap(2, 3);
    log.set_lines(&lines);
    let (kind, line, msg) = problem(&log.verify());
    assert_eq!((kind, line), (ProblemKind::Reordered, 3));
    assert!(
        msg.contains("this line has sequence 4, but 3 was expected (it is at line 4)"),
        "{msg}"
    );

    let log = log_with(10, 4, 0).await;
    let mut lines = log.lines();
    let dup = lines[2].clone();
    lines.insert(3, dup);
    log.set_lines(&lines);
    let (kind, line, _) = problem(&log.verify());
    assert_eq!((kind, line), (ProblemKind::Reordered, 4));
}

#[tokio::test]
async fn a_truncated_tail_is_unsealed() {
    let log = log_with(10, 4, 0).await;
    let mut lines = log.lines();
    lines.truncate(12); // ... cp at line 11, event at 12; lost: event 13, shutdown 14
    log.set_lines(&lines);
    let r = log.verify();
    assert_eq!(r.problem, None);
    assert_eq!(
        r.tail,
        Tail::Unsealed {
            path: log.path(),
            lines: 1,
            last_checkpoint_line: 11,
            last_checkpoint_kind: CheckpointKind::Periodic
        }
    );
    assert!(
        r.tail
            .to_string()
            .contains("unsealed tail of 1 line since the last checkpoint at line 11 (periodic)"),
        "{}",
        r.tail
    );
    // Cut right after a checkpoint: still unsealed (not a shutdown checkpoint).
    lines.truncate(11);
    log.set_lines(&lines);
    assert!(matches!(
        log.verify().tail,
        Tail::Unsealed {
            lines: 0,
            last_checkpoint_line: 11,
            ..
        }
    ));
    // Cut inside the last line (what a crash of the machine leaves of a log that does not
    // sync): unsealed too, with a note.
    let bytes = std::fs::read(log.path()).unwrap();
    std::fs::write(log.path(), &bytes[..bytes.len() - 20]).unwrap();
    let r = log.verify();
    assert_eq!(r.problem, None);
    assert!(matches!(
        r.tail,
        Tail::Unsealed {
            lines: 4,
            last_checkpoint_line: 6,
            ..
        }
    ));
    assert_eq!(
        r.notes,
        [format!(
            "{}:11: the last line is incomplete: the file was cut inside it (a crash while it was written, or a cut); the writer drops it when it restarts",
            log.path().display()
        )]
    );
    // Inside a line after the shutdown checkpoint: a cut, or an append after it.
    let log = log_with(3, 100, 0).await;
    let mut bytes = std::fs::read(log.path()).unwrap();
    bytes.extend_from_slice(b"{\"kind\":\"Ev");
    std::fs::write(log.path(), &bytes).unwrap();
    assert_eq!(at(&log.verify()), (ProblemKind::Truncated, 6));
}

/// A log cut back to a periodic checkpoint and reopened (its journal gone, or never kept):
/// the writer resumes after that checkpoint, and the verifier notes that what came after it
/// may be missing.
#[tokio::test]
async fn a_resume_after_a_periodic_checkpoint_is_noted() {
    let log = log_with(8, 4, 0).await;
    let mut lines = log.lines();
    lines.truncate(6); // open, 4 events, periodic checkpoint at line 6
    assert!(is_checkpoint(&lines[5]));
    log.set_lines(&lines);
    let _ = std::fs::remove_file(crate::audit::journal::journal_path(&log.path()));
    let config = LogConfig {
        checkpoint_every: 4,
        ..LogConfig::new(log.path())
    };
    let w = AuditLog::open(config, log.key.clone()).await.unwrap();
    write_events(&w, 8, 1).await;
    w.close().await.unwrap();
    let r = log.verify();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(
        r.notes,
        [format!(
            "{}:7: the writer restarted after stopping without a shutdown checkpoint: lines it wrote after the periodic checkpoint at line 6 may be missing (a crash, or a cut back to that checkpoint)",
            log.path().display()
        )]
    );
}

/// A crash in a file that a rotation opened (its `open` checkpoint at line 1, events after it
/// and no other checkpoint): the note names the unsealed lines, not a crash during the
/// rotation, which only a `resume` right after the `open` means.
#[tokio::test]
async fn a_resume_in_a_rotated_file_names_its_unsealed_lines() {
    let mut n = 40;
    let log = loop {
        // Enough events that the last file holds some after its open checkpoint.
        let log = log_with(n, 1000, 4096).await;
        if log.lines().len() > 3 {
            break log;
        }
        n += 1;
    };
    let files = log.files();
    assert!(files.len() >= 2, "{files:?}");
    assert_eq!(files.last(), Some(&log.path()));
    let mut lines = log.lines();
    let events = lines.len() - 2;
    assert!(events > 1, "{lines:?}");
    lines.pop(); // the shutdown checkpoint: as a crash leaves it
    log.set_lines(&lines);
    let _ = std::fs::remove_file(crate::audit::journal::journal_path(&log.path()));
    let config = LogConfig {
        checkpoint_every: 1000,
        max_size: 4096,
        ..LogConfig::new(log.path())
    };
    let w = AuditLog::open(config, log.key.clone()).await.unwrap();
    w.close().await.unwrap();
    let r = verify(&log.files(), &log.keys()).unwrap();
    assert!(r.is_intact(), "{:?}", r.problem);
    let resume = lines.len() + 1;
    // (The file may have been rotated since: its name is not checked.) With the journal gone,
    // the lines are unattested.
    let expected = format!(
        ".log:2-{}: written after the open checkpoint at line 1 by a writer that then stopped without closing the log;",
        resume - 1
    );
    assert!(
        r.notes.is_empty() && r.unattested.len() == 1 && r.unattested[0].contains(&expected),
        "{:?} {:?}",
        r.notes,
        r.unattested
    );
}

#[tokio::test]
async fn forged_and_replayed_checkpoints_fail() {
    // A checkpoint's note edited without the key.
    let log = log_with(10, 4, 0).await;
    let mut lines = log.lines();
    assert!(is_checkpoint(&lines[5]));
    let info = parse_line(lines[5].as_bytes()).unwrap();
    let (note, sig) = info.checkpoint.unwrap();
    let mut cp = Checkpoint::parse_note(&note).unwrap();
    cp.time = "2020-01-01T00:00:00.000000Z".into();
    let forged = render_checkpoint_line(&cp.note(), &cp.time, &cp.head, cp.seq, &sig);
    lines[5] = String::from_utf8(forged).unwrap();
    // Relink the next line so only the signature can tell.
    let next = parse_line(lines[6].as_bytes()).unwrap();
    lines[6] = lines[6].replace(
        &hex::encode(next.chain),
        &hex::encode(line_hash(lines[5].as_bytes())),
    );
    log.set_lines(&lines);
    let (kind, line, msg) = problem(&log.verify());
    assert_eq!((kind, line), (ProblemKind::Signature, 6), "{msg}");

    // The whole log rewritten and re-signed with another key.
    let other = Ed25519SigningKey::generate().unwrap();
    let log2 = log_with(3, 4, 0).await;
    let mut lines = log2.lines();
    let info = parse_line(lines[0].as_bytes()).unwrap();
    let (note, _) = info.checkpoint.unwrap();
    let cp = Checkpoint::parse_note(&note).unwrap();
    lines[0] = String::from_utf8(cp.signed_line(&other).unwrap()).unwrap();
    log2.set_lines(&lines);
    let (kind, line, msg) = problem(&log2.verify());
    assert_eq!((kind, line), (ProblemKind::UnknownKey, 1));
    assert!(msg.contains(&other.public_key().key_id()), "{msg}");

    // A checkpoint line edited outside its note.
    let log3 = log_with(10, 4, 0).await;
    let mut lines = log3.lines();
    let ts = lines[5].find("\"stageTimestamp\":\"").unwrap() + 18;
    lines[5].replace_range(ts..ts + 4, "1999");
    log3.set_lines(&lines);
    assert_eq!(at(&log3.verify()), (ProblemKind::Checkpoint, 6));

    // A valid shutdown checkpoint from another position, appended to seal a cut log.
    let log4 = log_with(10, 4, 0).await;
    let mut lines = log4.lines();
    let shutdown = lines.pop().unwrap();
    lines.truncate(9);
    lines.push(shutdown);
    log4.set_lines(&lines);
    assert_eq!(at(&log4.verify()), (ProblemKind::Removed, 10));
}

#[tokio::test]
async fn a_misplaced_checkpoint_fails_even_when_relinked() {
    let log = log_with(10, 4, 0).await;
    let mut lines = log.lines();
    // Move line 6 (a checkpoint) two lines down and repair the chain and sequence numbers
    // around it, as someone without the key could.
    let cp = lines.remove(5);
    lines.insert(7, cp);
    let mut prev = line_hash(lines[0].as_bytes());
    for (i, l) in lines.iter_mut().enumerate().skip(1) {
        let info = parse_line(l.as_bytes()).unwrap();
        if info.checkpoint.is_none() {
            *l = l
                .replace(&hex::encode(info.chain), &hex::encode(prev))
                .replace(
                    &format!("\"keyward.io/seq\":\"{}\"", info.seq),
                    &format!("\"keyward.io/seq\":\"{}\"", i + 1),
                );
        }
        prev = line_hash(l.as_bytes());
    }
    log.set_lines(&lines);
    let (kind, line, _) = problem(&log.verify());
    assert_eq!(line, 8);
    assert!(matches!(
        kind,
        ProblemKind::Checkpoint | ProblemKind::Reordered | ProblemKind::Edited
    ));
}

#[tokio::test]
async fn an_edit_hidden_by_a_recomputed_chain_is_named_by_the_next_checkpoint() {
    let log = log_with(10, 4, 0).await;
    let mut lines = log.lines();
    assert!(parse_line(lines[2].as_bytes())
        .unwrap()
        .checkpoint
        .is_none());
    lines[2] = lines[2].replacen("\"verb\":\"", "\"verb\":\"x", 1);
    // Every later line's chain recomputed, checkpoints' included (outside their signed note).
    let mut prev = line_hash(lines[2].as_bytes());
    for l in lines.iter_mut().skip(3) {
        let info = parse_line(l.as_bytes()).unwrap();
        let annotation = |h: &[u8]| format!("\"keyward.io/chain\":\"sha256:{}\"", hex::encode(h));
        *l = l.replace(&annotation(&info.chain), &annotation(&prev));
        prev = line_hash(l.as_bytes());
    }
    let next_checkpoint = 1
        + (3..lines.len())
            .find(|i| {
                parse_line(lines[*i].as_bytes())
                    .unwrap()
                    .checkpoint
                    .is_some()
            })
            .unwrap() as u64;
    log.set_lines(&lines);
    let (kind, line, msg) = problem(&log.verify());
    assert_eq!(kind, ProblemKind::Checkpoint, "{msg}");
    assert_eq!(line, next_checkpoint, "{msg}");
    assert!(
        msg.contains("a line between the checkpoint at line 1 and this one was edited"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_wrong_key_fails_at_line_1() {
    let log = log_with(3, 4, 0).await;
    let other = Ed25519SigningKey::generate().unwrap().public_key().clone();
    let r = verify(&[log.path()], std::slice::from_ref(&other)).unwrap();
    let (kind, line, msg) = problem(&r);
    assert_eq!((kind, line), (ProblemKind::UnknownKey, 1));
    assert!(
        msg.contains(&format!("not by the given public key ({})", other.key_id())),
        "{msg}"
    );
    // Either of two keys is fine (a key change).
    let both = verify(&[log.path()], &[other, log.key.public_key().clone()]).unwrap();
    assert!(both.is_intact());
}

#[tokio::test]
async fn lines_appended_after_shutdown_fail() {
    let log = log_with(3, 4, 0).await;
    let mut lines = log.lines();
    assert_eq!(lines.len(), 5);
    // A forged event that links correctly to the shutdown checkpoint.
    let info = parse_line(lines[1].as_bytes()).unwrap();
    let extra = lines[1]
        .replace(
            &hex::encode(info.chain),
            &hex::encode(line_hash(lines[4].as_bytes())),
        )
        .replace("\"keyward.io/seq\":\"2\"", "\"keyward.io/seq\":\"6\"");
    lines.push(extra);
    log.set_lines(&lines);
    let (kind, line, msg) = problem(&log.verify());
    assert_eq!((kind, line), (ProblemKind::Checkpoint, 6), "{msg}");
    assert!(
        msg.contains("appended after the shutdown checkpoint at line 5"),
        "{msg}"
    );
}

#[tokio::test]
async fn rotated_files_verify_in_any_order_and_must_be_complete() {
    let log = log_with(40, 5, 4000).await;
    let files = log.files();
    assert!(files.len() >= 3, "{files:?}");
    let mut shuffled = files.clone();
    shuffled.reverse();
    let r = verify(&shuffled, &log.keys()).unwrap();
    assert_eq!(r.problem, None);
    assert_eq!(r.events, 40);
    assert_eq!(
        r.files.iter().map(|f| f.index).collect::<Vec<_>>(),
        (0..files.len() as u64).collect::<Vec<_>>()
    );
    assert!(matches!(
        r.tail,
        Tail::Sealed {
            kind: CheckpointKind::Shutdown,
            ..
        }
    ));
    // The active file alone: the earlier files are noted, not required.
    let alone = verify(&[log.path()], &log.keys()).unwrap();
    assert!(alone.is_intact(), "{:?}", alone.problem);
    assert!(
        alone.notes[0].contains("earlier files were not given"),
        "{:?}",
        alone.notes
    );
    // A rotated file alone is sealed by its rotate checkpoint.
    let first = verify(&files[..1], &log.keys()).unwrap();
    assert!(matches!(
        first.tail,
        Tail::Sealed {
            kind: CheckpointKind::Rotate,
            ..
        }
    ));
    // A file missing in the middle.
    let gap = [files[0].clone(), files[2].clone()];
    let r = verify(&gap, &log.keys()).unwrap();
    let (kind, line, msg) = problem(&r);
    assert_eq!((kind, line), (ProblemKind::Files, 1));
    assert!(msg.contains("file index 1 (rotated as audit-"), "{msg}");
    // The same path twice is one file; a copy under another name is a duplicate.
    let twice = [files[0].clone(), files[0].clone()];
    assert!(verify(&twice, &log.keys()).unwrap().is_intact());
    let copy = log.dir.path().join("copy.log");
    std::fs::copy(&files[0], &copy).unwrap();
    let r = verify(&[files[0].clone(), copy.clone()], &log.keys()).unwrap();
    assert_eq!(at(&r), (ProblemKind::Files, 1));
    assert!(
        problem(&r).2.contains("are both file index 0"),
        "{:?}",
        r.problem
    );
    std::fs::remove_file(&copy).unwrap();
    // A rotated file cut short.
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    lines.pop();
    std::fs::write(&files[0], lines.join("\n") + "\n").unwrap();
    let r = verify(&files, &log.keys()).unwrap();
    let (kind, line, _) = problem(&r);
    assert_eq!((kind, line), (ProblemKind::Truncated, n as u64 - 1));
}

#[tokio::test]
async fn files_of_another_log_and_empty_files_fail() {
    let a = log_with(2, 4, 0).await;
    let b = log_with(2, 4, 0).await;
    // b's file renamed as a later file of a would still be index 0: a duplicate index.
    let r = verify(&[a.path(), b.path()], &a.keys()).unwrap();
    assert_eq!(at(&r), (ProblemKind::Files, 1));
    assert!(
        problem(&r).2.contains("belongs to another log"),
        "{:?}",
        r.problem
    );
    let empty = a.dir.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    let r = verify(&[empty], &a.keys()).unwrap();
    assert_eq!(at(&r), (ProblemKind::Truncated, 1));
    let plain = a.dir.path().join("plain.log");
    std::fs::write(&plain, "{\"kind\":\"Event\"}\n").unwrap();
    let r = verify(&[plain], &a.keys()).unwrap();
    assert_eq!(at(&r), (ProblemKind::Malformed, 1));
    assert!(verify(&[a.dir.path().join("missing")], &a.keys()).is_err());
}

#[tokio::test]
async fn events_are_valid_audit_events_with_bodies_and_statuses() {
    // Every line (checkpoints included) decodes as an audit.k8s.io/v1 Event.
    let log = log_with(5, 2, 0).await;
    for l in log.lines() {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["kind"], "Event");
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        for f in [
            "level",
            "auditID",
            "stage",
            "requestURI",
            "verb",
            "user",
            "requestReceivedTimestamp",
            "stageTimestamp",
        ] {
            assert!(v.get(f).is_some(), "{f} in {l}");
        }
    }
}
