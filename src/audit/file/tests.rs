use super::*;
use crate::audit::chain::CHECKPOINT_ANNOTATION;
use crate::audit::writer::tests::dev_full;
use crate::audit::writer::LogConfig;
use crate::crypto::Ed25519SigningKey;

fn event(i: usize) -> Event {
    crate::audit::writer::tests::event(i)
}

/// A new log in a temporary directory (keep the directory while the log is used): its path,
/// its key and the log.
fn new_log() -> (tempfile::TempDir, PathBuf, Arc<Ed25519SigningKey>, LogFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = Arc::new(Ed25519SigningKey::generate().unwrap());
    let log = LogFile::open(&LogConfig::new(&path), key.clone()).unwrap();
    (dir, path, key, log)
}

/// A full disk: the write fails and nothing of it stays in the file; once the disk has room
/// again the log goes on and verifies.
#[test]
fn a_failed_write_leaves_nothing_behind() {
    let (_dir, path, key, mut log) = new_log();
    log.write_events(vec![event(0)]).unwrap();
    let good = fs::read(&path).unwrap();
    let real = log.replace_file(dev_full());
    let err = log.write_events(vec![event(1), event(2)]).unwrap_err();
    assert!(matches!(err, AuditError::Write { .. }), "{err}");
    assert!(log.dirty, "set_len on /dev/full fails too");
    log.replace_file(real);
    log.write_events(vec![event(3)]).unwrap();
    log.checkpoint(CheckpointKind::Shutdown).unwrap();
    let after = fs::read(&path).unwrap();
    assert!(after.starts_with(&good));
    let report = crate::audit::verify(&[&path], &[key.public_key().clone()]).unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
    assert_eq!(report.events, 2);
}

/// A log removed, renamed, replaced, cut or written to by someone else while the server has it
/// open takes no more events (they would be lost to every reader): each write fails, naming
/// what happened, in a log that syncs and in one that does not.
#[test]
fn a_log_removed_replaced_or_cut_while_open_takes_no_more_events() {
    for fsync in [true, false] {
        for damage in ["removed", "renamed", "replaced", "cut", "appended"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.log");
            let key = Arc::new(Ed25519SigningKey::generate().unwrap());
            let config = LogConfig {
                fsync,
                ..LogConfig::new(&path)
            };
            let mut log = LogFile::open(&config, key.clone()).unwrap();
            log.write_events(vec![event(0)]).unwrap();
            let len = fs::metadata(&path).unwrap().len();
            match damage {
                "removed" => fs::remove_file(&path).unwrap(),
                "renamed" => fs::rename(&path, dir.path().join("elsewhere.log")).unwrap(),
                "replaced" => {
                    let copy = dir.path().join("copy");
                    fs::copy(&path, &copy).unwrap();
                    fs::rename(&copy, &path).unwrap();
                }
                "cut" => OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap(),
                _ => {
                    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
                    std::io::Write::write_all(&mut f, b"{}\n").unwrap();
                }
            }
            // A log that does not sync looks at most every CHECK_EVERY.
            std::thread::sleep(CHECK_EVERY);
            let err = log.write_events(vec![event(1)]).unwrap_err().to_string();
            let want = match damage {
                "cut" | "appended" => "cut or written to by someone else while open",
                _ => "removed or replaced while the server had it open",
            };
            assert!(err.contains(want), "fsync {fsync}, {damage}: {err}");
            let again = log.write_events(vec![event(2)]).unwrap_err().to_string();
            assert!(
                again.contains(want),
                "fsync {fsync}, {damage}, again: {again}"
            );
        }
    }
}

/// A store's log is signed by the store's key only: another key is refused at open (another
/// store's log, or a replaced backend), naming both keys; a log that allows key changes (the
/// KMS plugin's) is continued.
#[test]
fn a_single_key_log_opened_with_another_key_is_refused() {
    let (_dir, path, key, mut log) = new_log();
    log.write_events(vec![event(0)]).unwrap();
    log.checkpoint(CheckpointKind::Shutdown).unwrap();
    drop(log);
    let before = fs::read(&path).unwrap();
    let other = Arc::new(Ed25519SigningKey::generate().unwrap());
    let single = LogConfig {
        single_key: true,
        ..LogConfig::new(&path)
    };
    let Err(e) = LogFile::open(&single, other.clone()) else {
        panic!("continued under another key");
    };
    let e = e.to_string();
    assert!(
        e.contains(&format!(
            "line 1 is signed by key {}, not by this store's key {}",
            key.public_key().key_id(),
            other.public_key().key_id()
        )),
        "{e}"
    );
    assert_eq!(fs::read(&path).unwrap(), before, "the log was changed");
    // Its own key continues it; a log that allows key changes takes the other key.
    drop(LogFile::open(&single, key.clone()).unwrap());
    drop(LogFile::open(&LogConfig::new(&path), other.clone()).unwrap());
}

#[test]
fn backup_names_follow_lumberjack() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.log");
    let b = backup_path(&p);
    let name = b.file_name().unwrap().to_str().unwrap();
    // audit-2024-05-01T12-00-00.123.log
    assert_eq!(
        name.len(),
        "audit-2024-05-01T12-00-00.123.log".len(),
        "{name}"
    );
    assert!(name.starts_with("audit-20") && name.ends_with(".log") && !name.contains(':'));
    fs::write(&b, "").unwrap();
    let again = backup_path(&p);
    assert_ne!(again, b);
}

/// Callers serialise their events; the log adds the chain's annotations to an event's own
/// (or an `annotations` object where it has none) and drops any it must set itself.
#[test]
fn the_chain_annotations_are_spliced_into_the_callers_json() {
    let (_dir, path, key, mut log) = new_log();
    let mut annotated = event(1);
    annotated
        .annotations_mut()
        .insert("authorization.k8s.io/decision".into(), "allow".into());
    annotated
        .annotations_mut()
        .insert(CHECKPOINT_ANNOTATION.into(), "forged".into());
    annotated
        .annotations_mut()
        .insert(SEQ_ANNOTATION.into(), "999".into());
    log.write_lines(vec![EventLine::of(&event(0)), EventLine::of(&annotated)])
        .unwrap();
    log.checkpoint(CheckpointKind::Shutdown).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let plain = &lines[1]["annotations"];
    assert_eq!(plain.as_object().unwrap().len(), 2, "{plain}");
    assert!(plain[CHAIN_ANNOTATION]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let with_own = lines[2]["annotations"].as_object().unwrap();
    assert_eq!(with_own["authorization.k8s.io/decision"], "allow");
    assert_eq!(
        with_own[SEQ_ANNOTATION],
        lines[1]["annotations"][SEQ_ANNOTATION]
            .as_str()
            .map(|s| (s.parse::<u64>().unwrap() + 1).to_string())
            .unwrap()
    );
    assert!(!with_own.contains_key(CHECKPOINT_ANNOTATION));
    let report = crate::audit::verify(&[&path], &[key.public_key().clone()]).unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
    assert_eq!(report.events, 2);
}

/// A machine that stops before the log's pages reach the disk: the file comes back short, or
/// with zeros where lines were. Every batch that was acknowledged is in the sync journal, and
/// reopening puts it back before anything else, so the log verifies with all of its events.
#[test]
fn acknowledged_lines_lost_with_the_page_cache_come_back_from_the_journal() {
    for damage in ["cut", "zeros"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = Arc::new(Ed25519SigningKey::generate().unwrap());
        let mut log = LogFile::open(&LogConfig::new(&path), key.clone()).unwrap();
        let header_len = fs::metadata(&path).unwrap().len();
        for i in 0..3 {
            log.write_events(vec![event(2 * i), event(2 * i + 1)])
                .unwrap();
        }
        let written = fs::read(&path).unwrap();
        drop(log);
        match damage {
            "cut" => {
                let f = OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(header_len).unwrap();
            }
            _ => {
                let mut zeroed = written.clone();
                zeroed[header_len as usize..].fill(0);
                fs::write(&path, &zeroed).unwrap();
            }
        }
        let mut log = LogFile::open(&LogConfig::new(&path), key.clone()).unwrap();
        assert!(
            fs::read(&path).unwrap().starts_with(&written),
            "{damage}: the journal did not restore the acknowledged lines"
        );
        log.write_events(vec![event(6)]).unwrap();
        log.checkpoint(CheckpointKind::Shutdown).unwrap();
        let report = crate::audit::verify(&[&path], &[key.public_key().clone()]).unwrap();
        assert!(report.is_intact(), "{damage}: {:?}", report.problem);
        assert_eq!(report.events, 7, "{damage}");
    }
}

/// A line changed on disk after it was written is not put back from the journal, and the log
/// is not continued: a `resume` checkpoint would sign the changed last line, which no later
/// line's chain covers yet. The file stays as found (the lost line not put back either) for
/// `audit verify`, which fails on it.
#[test]
fn an_edited_line_stops_the_log_from_being_continued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = Arc::new(Ed25519SigningKey::generate().unwrap());
    let mut log = LogFile::open(&LogConfig::new(&path), key.clone()).unwrap();
    for i in 0..3 {
        log.write_events(vec![event(i)]).unwrap();
    }
    let written = fs::read(&path).unwrap();
    drop(log);
    let text = String::from_utf8(written.clone()).unwrap();
    let last = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    let second_last = text[..last - 1].rfind('\n').unwrap() + 1;
    let verb = text[second_last..].find("\"verb\":\"get\"").unwrap() + second_last;
    let mut edited = written.clone();
    edited[verb + 8..verb + 11].copy_from_slice(b"GET");
    // The last line lost as a crash loses it: the edited line is now the file's last.
    edited.truncate(last);
    fs::write(&path, &edited).unwrap();
    let Err(e) = LogFile::open(&LogConfig::new(&path), key.clone()) else {
        panic!("an edited log was continued");
    };
    let message = e.to_string();
    assert!(matches!(e, AuditError::Recover { .. }), "{message}");
    assert!(
        message.contains(&format!(
            "1 of its last lines differ from what was written (the sync journal holds them as written; the first at byte offset {second_last})"
        )),
        "{message}"
    );
    assert_eq!(fs::read(&path).unwrap(), edited, "the log was changed");
    let report = crate::audit::verify(&[&path], &[key.public_key().clone()]).unwrap();
    assert!(
        matches!(report.tail, crate::audit::Tail::Unsealed { lines: 2, .. }),
        "{:?}",
        report.tail
    );
}

/// The journal is used only while the log syncs; a log opened without syncing takes back what
/// a journal holds and then removes it.
#[test]
fn a_log_that_does_not_sync_takes_back_a_journal_and_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let journal = crate::audit::journal::journal_path(&path);
    let key = Arc::new(Ed25519SigningKey::generate().unwrap());
    let mut log = LogFile::open(&LogConfig::new(&path), key.clone()).unwrap();
    let header_len = fs::metadata(&path).unwrap().len();
    log.write_events(vec![event(0)]).unwrap();
    let written = fs::read(&path).unwrap();
    drop(log);
    assert!(journal.exists());
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(header_len)
        .unwrap();
    let config = LogConfig {
        fsync: false,
        ..LogConfig::new(&path)
    };
    let mut log = LogFile::open(&config, key.clone()).unwrap();
    assert!(fs::read(&path).unwrap().starts_with(&written));
    assert!(!journal.exists());
    log.write_events(vec![event(1)]).unwrap();
    assert!(!journal.exists(), "no journal without syncing");
}

/// `--audit-log-maxbackup` and `--audit-log-maxage`, as lumberjack applies them after a
/// rotation: the newest rotated files are kept, older ones and those whose time is past the
/// age go; other files beside the log stay. What is left still verifies, the removed files
/// reported as not given.
#[test]
fn rotated_files_beyond_the_count_or_the_age_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let old = dir.path().join("audit-2020-01-01T00-00-00.000.log");
    fs::write(&old, "{}\n").unwrap();
    let unrelated = [
        "audit-notes.log",
        "audit-2020-01-01T00-00-00.000.txt",
        "other.log",
    ];
    for name in unrelated {
        fs::write(dir.path().join(name), "keep\n").unwrap();
    }
    let key = Arc::new(Ed25519SigningKey::generate().unwrap());
    let mut config = LogConfig::new(&path);
    config.max_size = 4096;
    config.max_backups = 2;
    config.max_age = Some(Duration::from_secs(30 * 86_400));
    let mut log = LogFile::open(&config, key.clone()).unwrap();
    for i in 0..40 {
        log.write_events(vec![event(i)]).unwrap();
    }
    log.checkpoint(CheckpointKind::Shutdown).unwrap();
    assert!(log.stats.rotations >= 4, "{:?}", log.stats);
    let kept = backups(&path);
    assert_eq!(kept.len(), 2, "{kept:?}");
    // The newest two: the rotated file the active one's `open` checkpoint names is among them.
    let active = fs::read_to_string(&path).unwrap();
    let named = kept.iter().any(|(_, p)| {
        active
            .lines()
            .next()
            .unwrap()
            .contains(p.file_name().unwrap().to_str().unwrap())
    });
    assert!(named, "{kept:?}\n{}", active.lines().next().unwrap());
    assert!(!old.exists(), "older than the age");
    for name in unrelated {
        assert!(dir.path().join(name).exists(), "{name}");
    }
    let mut files: Vec<PathBuf> = kept.into_iter().map(|(_, p)| p).collect();
    files.push(path.clone());
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let report = crate::audit::verify(&refs, &[key.public_key().clone()]).unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
    assert_eq!(report.files.len(), 3);
    assert!(!report.notes.is_empty(), "the removed files are noted");

    // Without limits every rotated file stays.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut config = LogConfig::new(&path);
    config.max_size = 4096;
    let mut log = LogFile::open(&config, key).unwrap();
    for i in 0..40 {
        log.write_events(vec![event(i)]).unwrap();
    }
    assert_eq!(backups(&path).len() as u64, log.stats.rotations);
}

/// Events counted as lost are recorded by a `lost` line after the next lines written, once:
/// not while the disk refuses writes, and not again after.
#[test]
fn lost_events_are_recorded_by_the_next_write() {
    let (_dir, path, key, mut log) = new_log();
    log.write_events(vec![event(0)]).unwrap();
    log.note_lost(2, "No space left on device");
    let real = std::mem::replace(&mut log.file, dev_full());
    log.write_events(vec![event(1)]).unwrap_err();
    assert_eq!(log.lost(), 2, "still to be recorded");
    log.file = real;
    log.note_lost(1, "No space left on device");
    log.write_events(vec![event(2)]).unwrap();
    assert_eq!(log.lost(), 0);
    log.write_events(vec![event(3)]).unwrap();
    log.checkpoint(CheckpointKind::Shutdown).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verbs: Vec<&str> = lines.iter().map(|l| l["verb"].as_str().unwrap()).collect();
    assert_eq!(
        verbs,
        ["checkpoint", "get", "get", "lost", "get", "checkpoint"]
    );
    let lost = &lines[3];
    assert_eq!(lost["requestURI"], "/keyward.io/audit/lost");
    assert_eq!(lost["user"]["username"], "system:keyward:audit");
    assert_eq!(lost["annotations"]["keyward.io/lost-events"], "3");
    assert_eq!(
        lost["annotations"]["keyward.io/lost-reason"],
        "No space left on device"
    );
    let report = crate::audit::verify(&[&path], &[key.public_key().clone()]).unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
    assert_eq!(report.lost_events, 3);
    let note = format!(
        "{}:4: 3 events could not be written (No space left on device); the requests they describe went on",
        path.display()
    );
    assert_eq!(report.notes, [note]);
}

/// No file outgrows `max_size`, whatever line comes last: events of every size, periodic
/// checkpoints, `lost` lines and the shutdown checkpoint all leave room for the checkpoint that
/// seals the file (lumberjack never writes past its maximum either).
#[test]
fn no_file_outgrows_the_maximum_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = Arc::new(Ed25519SigningKey::generate().unwrap());
    let mut config = LogConfig::new(&path);
    config.max_size = 6000;
    config.checkpoint_every = 2;
    let mut log = LogFile::open(&config, key.clone()).unwrap();
    for i in 0..300 {
        let mut ev = event(i);
        // Lines from about 500 bytes to 1.5 KB, so that each kind of line meets the limit.
        ev.annotations_mut()
            .insert("example.com/pad".into(), "x".repeat(i * 37 % 1000).into());
        if i % 7 == 3 {
            log.note_lost(1, "No space left on device");
        }
        log.write_events(vec![ev]).unwrap();
        if i % 11 == 5 {
            log.checkpoint(CheckpointKind::Periodic).unwrap();
        }
    }
    log.checkpoint(CheckpointKind::Shutdown).unwrap();
    assert!(log.stats.rotations >= 40, "{:?}", log.stats);
    let mut files: Vec<PathBuf> = backups(&path).into_iter().map(|(_, p)| p).collect();
    files.push(path.clone());
    for f in &files {
        let size = fs::metadata(f).unwrap().len();
        assert!(size <= 6000, "{}: {size} bytes", f.display());
    }
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let report = crate::audit::verify(&refs, &[key.public_key().clone()]).unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
    // The events and a `lost` line for each loss.
    let lost_lines = (0..300).filter(|i| i % 7 == 3).count();
    assert_eq!(report.events, 300 + lost_lines as u64);
}

/// [`CHECKPOINT_LEN_BOUND`] is more than any checkpoint but an `open` one can be, and
/// [`Checkpoint::line_len`] is the signed line's length.
#[test]
fn checkpoint_lines_stay_below_the_bound() {
    let key = Ed25519SigningKey::generate().unwrap();
    for kind in [
        CheckpointKind::Periodic,
        CheckpointKind::Rotate,
        CheckpointKind::Shutdown,
        CheckpointKind::Resume,
    ] {
        let cp = Checkpoint {
            log: uuid::Uuid::new_v4().to_string(),
            file: u64::MAX,
            line: u64::MAX,
            seq: u64::MAX,
            head: [0xff; 32],
            time: MicroTime::now().to_string(),
            kind,
            prev_file: None,
            unattested: None,
        };
        let line = cp.signed_line(&key).unwrap();
        assert_eq!(cp.line_len(&key), line.len());
        assert!((line.len() as u64) < CHECKPOINT_LEN_BOUND, "{}", line.len());
    }
}

/// The log and its journal are never opened through a symbolic link (whoever may write to the
/// log's directory could point them at any file the server may write): the start fails and the
/// link's target is untouched.
#[test]
fn links_in_the_log_directory_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "keep").unwrap();
    let key = Arc::new(Ed25519SigningKey::generate().unwrap());
    let path = dir.path().join("audit.log");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    assert!(LogFile::open(&LogConfig::new(&path), key.clone()).is_err());
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&victim, crate::audit::journal::journal_path(&path)).unwrap();
    assert!(LogFile::open(&LogConfig::new(&path), key.clone()).is_err());
    assert_eq!(fs::read(&victim).unwrap(), b"keep");
    // The public key beside the log replaces a link instead of writing through it.
    let public = crate::access::public_key_path(&path);
    std::os::unix::fs::symlink(&victim, &public).unwrap();
    crate::access::write_public_key(&path, key.public_key()).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"keep");
    assert!(!fs::symlink_metadata(&public).unwrap().is_symlink());
}

/// A log left by a crash, with `n` acknowledged event lines after its header: its path, key,
/// and the bytes written.
fn crashed_log(
    fsync: bool,
    n: usize,
) -> (tempfile::TempDir, PathBuf, Arc<Ed25519SigningKey>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = Arc::new(Ed25519SigningKey::generate().unwrap());
    let config = LogConfig {
        fsync,
        ..LogConfig::new(&path)
    };
    let mut log = LogFile::open(&config, key.clone()).unwrap();
    for i in 0..n {
        log.write_events(vec![event(i)]).unwrap();
    }
    drop(log);
    let written = fs::read(&path).unwrap();
    (dir, path, key, written)
}

/// `text`'s last line (without its newline), and where it starts.
fn last_line_of(text: &[u8]) -> (usize, &[u8]) {
    let body = &text[..text.len() - 1];
    let start = body.iter().rposition(|&b| b == b'\n').unwrap() + 1;
    (start, &body[start..])
}

/// The line an attacker adds after a crash: a copy of the last event as another user's, linked
/// to it with the chain's own (unkeyed) hash and the next sequence number.
fn forged_line(text: &[u8]) -> Vec<u8> {
    let (_, last) = last_line_of(text);
    let info = parse_line(last).unwrap();
    let mut ev: serde_json::Value = serde_json::from_slice(last).unwrap();
    ev["user"] = serde_json::json!({"username": "mallory"});
    ev["annotations"][CHAIN_ANNOTATION] = format!("sha256:{}", hex::encode(line_hash(last))).into();
    ev["annotations"][SEQ_ANNOTATION] = (info.seq + 1).to_string().into();
    let mut line = serde_json::to_vec(&ev).unwrap();
    line.push(b'\n');
    line
}

/// Lines added after the last one the sync journal acknowledged (what a crash between a
/// batch's write and its sync leaves, or what someone adds while the writer is stopped) are
/// cut, not signed by the `resume` checkpoint; the log verifies without them and without any
/// unattested line.
#[test]
fn lines_after_the_last_acknowledged_one_are_cut_not_signed() {
    let (_dir, path, key, written) = crashed_log(true, 3);
    let mut forged = written.clone();
    forged.extend_from_slice(&forged_line(&written));
    fs::write(&path, &forged).unwrap();
    let mut log = LogFile::open(&LogConfig::new(&path), key.clone()).unwrap();
    log.checkpoint(CheckpointKind::Shutdown).unwrap();
    let now = fs::read(&path).unwrap();
    assert!(now.starts_with(&written));
    assert!(!String::from_utf8_lossy(&now).contains("mallory"));
    let report = crate::audit::verify(&[&path], &[key.public_key().clone()]).unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
    assert!(report.unattested.is_empty(), "{:?}", report.unattested);
    assert_eq!(report.events, 3);
}

/// The journal's records cannot be rewritten to fit an edit: their mac covers the chain's head
/// after them, which only the writer's key can make, so a last line changed in the log and
/// the journal alike (the journal's unkeyed check made to fit) stops the log from being
/// continued.
#[test]
fn a_line_changed_in_the_log_and_its_journal_alike_is_refused() {
    let (_dir, path, key, written) = crashed_log(true, 3);
    let (start, last) = last_line_of(&written);
    let at = start + find(last, b"\"verb\":\"get\"") + 8;
    let mut edited = written.clone();
    edited[at..at + 3].copy_from_slice(b"GET");
    fs::write(&path, &edited).unwrap();
    // The same bytes in the journal's last record, with its check recomputed.
    let jpath = crate::audit::journal::journal_path(&path);
    let mut journal = fs::read(&jpath).unwrap();
    let needle = &written[start..written.len() - 1];
    let in_journal = (0..journal.len() - needle.len())
        .rev()
        .find(|&i| &journal[i..i + needle.len()] == needle)
        .unwrap();
    let j_at = in_journal + (at - start);
    journal[j_at..j_at + 3].copy_from_slice(b"GET");
    // One batch per event: the line ends the last record.
    let record = last_record(&journal);
    assert_eq!(record.1, in_journal + needle.len() + 1);
    recheck(&mut journal, record);
    fs::write(&jpath, &journal).unwrap();
    let Err(e) = LogFile::open(&LogConfig::new(&path), key.clone()) else {
        panic!("a log changed with its journal was continued");
    };
    assert!(
        e.to_string()
            .contains("1 of its last lines differ from what was written"),
        "{e}"
    );
    assert_eq!(fs::read(&path).unwrap(), edited, "the log was changed");
}

/// Once the log itself was synced (the journal then starts again with an anchor that names
/// how far, and the chain's head there), a log cut below that point, or whose line before it
/// was changed, is not continued.
#[test]
fn a_log_cut_or_changed_below_its_synced_length_is_refused() {
    for damage in ["cut", "edit"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let key = Arc::new(Ed25519SigningKey::generate().unwrap());
        let mut log = LogFile::open(&LogConfig::new(&path), key.clone()).unwrap();
        for i in 0..3 {
            log.write_events(vec![event(i)]).unwrap();
        }
        log.seal().unwrap();
        drop(log);
        let written = fs::read(&path).unwrap();
        let (start, last) = last_line_of(&written);
        let mut damaged = written.clone();
        match damage {
            "cut" => damaged.truncate(start),
            _ => {
                let at = start + find(last, b"\"verb\":\"get\"") + 8;
                damaged[at..at + 3].copy_from_slice(b"GET");
            }
        }
        fs::write(&path, &damaged).unwrap();
        let Err(e) = LogFile::open(&LogConfig::new(&path), key.clone()) else {
            panic!("{damage}: the log was continued");
        };
        let expected = match damage {
            "cut" => format!(
                "it is {start} bytes long, but the sync journal says its first {} bytes were made durable",
                written.len()
            ),
            _ => format!("1 of its last lines differ from what was written (the sync journal holds them as written; the first at byte offset {start})"),
        };
        assert!(e.to_string().contains(&expected), "{damage}: {e}");
        assert_eq!(
            fs::read(&path).unwrap(),
            damaged,
            "{damage}: the log was changed"
        );
    }
}

/// Without a journal (`--audit-log-sync never`) nothing vouches for the lines a crash left
/// after the last checkpoint: the `resume` checkpoint names them as unattested, and verify
/// reports them, also when one was forged.
#[test]
fn unsealed_lines_nothing_vouches_for_are_named_by_the_resume_checkpoint() {
    let (_dir, path, key, written) = crashed_log(false, 3);
    let mut forged = written.clone();
    forged.extend_from_slice(&forged_line(&written));
    fs::write(&path, &forged).unwrap();
    let config = LogConfig {
        fsync: false,
        ..LogConfig::new(&path)
    };
    let mut log = LogFile::open(&config, key.clone()).unwrap();
    log.checkpoint(CheckpointKind::Shutdown).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("unattested 2-5\\n"), "{text}");
    let report = crate::audit::verify(&[&path], &[key.public_key().clone()]).unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
    assert_eq!(report.unattested.len(), 1, "{:?}", report.unattested);
    assert!(
        report.unattested[0].contains("audit.log:2-5: written after the open checkpoint at line 1"),
        "{:?}",
        report.unattested
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

/// A log removed or emptied while the writer was stopped, its journal left: the journal holds
/// the only record of its acknowledged lines, so the writer refuses to start a new log over it
/// (and leaves the journal as it was).
#[test]
fn a_log_removed_or_emptied_beside_its_journal_is_refused() {
    for damage in ["removed", "emptied"] {
        let (_dir, path, key, _) = crashed_log(true, 3);
        let jpath = crate::audit::journal::journal_path(&path);
        let journal = fs::read(&jpath).unwrap();
        match damage {
            "removed" => fs::remove_file(&path).unwrap(),
            _ => fs::write(&path, b"").unwrap(),
        }
        let Err(e) = LogFile::open(&LogConfig::new(&path), key.clone()) else {
            panic!("{damage}: a new log was started over the journal");
        };
        assert!(
            e.to_string()
                .contains("it is missing or empty, but its sync journal")
                && e.to_string()
                    .contains("holds acknowledged lines of file 0 of a log"),
            "{damage}: {e}"
        );
        assert_eq!(
            fs::read(&jpath).unwrap(),
            journal,
            "{damage}: the journal was changed"
        );
    }
}

/// Records of one run are all authentic or none (another signing key): some authentic and some
/// not means the journal was changed, and the log is not continued.
#[test]
fn a_journal_with_some_records_changed_is_refused() {
    let (_dir, path, key, _) = crashed_log(true, 3);
    let jpath = crate::audit::journal::journal_path(&path);
    let mut journal = fs::read(&jpath).unwrap();
    // The last record's head changed: its mac no longer checks out; its unkeyed check made
    // to fit.
    let record = last_record(&journal);
    journal[record.0 + 111] ^= 1; // the head's last byte
    recheck(&mut journal, record);
    fs::write(&jpath, &journal).unwrap();
    let Err(e) = LogFile::open(&LogConfig::new(&path), key.clone()) else {
        panic!("a log with a changed journal was continued");
    };
    assert!(
        e.to_string()
            .contains("some of the sync journal's records for it check out"),
        "{e}"
    );
}

/// A checkpoint line copied to the end of the log is not taken as one: the lines before it
/// are still named unattested when nothing vouches for them.
#[test]
fn a_checkpoint_copied_to_the_end_does_not_seal_the_tail() {
    let (_dir, path, key, written) = crashed_log(false, 3);
    let header = written.split(|&b| b == b'\n').next().unwrap().to_vec();
    let mut copied = written.clone();
    copied.extend_from_slice(&header);
    copied.push(b'\n');
    fs::write(&path, &copied).unwrap();
    let config = LogConfig {
        fsync: false,
        ..LogConfig::new(&path)
    };
    let mut log = LogFile::open(&config, key.clone()).unwrap();
    log.checkpoint(CheckpointKind::Shutdown).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("\\nunattested 2-"), "{text}");
    let report = crate::audit::verify(&[&path], &[key.public_key().clone()]).unwrap();
    assert!(!report.is_intact(), "the copy is verify's to report");
}

/// Where the journal's last record starts and ends (records lie back to back from 0; a
/// record's header is 112 bytes, its length at bytes 76..80).
fn last_record(journal: &[u8]) -> (usize, usize) {
    let (mut at, mut last) = (0, (0, 0));
    while journal.get(at..at + 4) == Some(b"KWA2".as_slice()) {
        let len = u32::from_be_bytes(journal[at + 76..at + 80].try_into().unwrap()) as usize;
        last = (at, at + 112 + len);
        at = last.1;
    }
    last
}

/// Makes the unkeyed check of the record at `start..end` fit its bytes again, as anyone can.
fn recheck(journal: &mut [u8], (start, end): (usize, usize)) {
    let check = crate::crypto::sha256(&journal[start + 12..end]);
    journal[start + 4..start + 12].copy_from_slice(&check[..8]);
}

/// A new file whose first lines only the journal holds (a crash right after a rotation's
/// first line, before the file reached the disk): written back and continued, not refused.
#[test]
fn an_empty_file_the_journal_holds_from_its_start_is_written_back() {
    let (_dir, path, key, written) = crashed_log(true, 2);
    let header = parse_line(written.split(|&b| b == b'\n').next().unwrap()).unwrap();
    let (note, _) = header.checkpoint.unwrap();
    let log_id = Checkpoint::parse_note(&note).unwrap().log;
    let mut id = [0u8; 16];
    id.copy_from_slice(&crate::crypto::sha256(log_id.as_bytes())[..16]);
    let target = Target {
        log_id: id,
        file_index: 0,
    };
    let jkey = journal_key(&*key).unwrap();
    let (mut journal, _) = Journal::open(&path, jkey).unwrap();
    let (_, last) = last_line_of(&written);
    assert!(journal
        .append(target, 0, &written, &line_hash(last))
        .unwrap());
    drop(journal);
    fs::write(&path, b"").unwrap();
    let mut log = LogFile::open(&LogConfig::new(&path), key.clone()).unwrap();
    log.checkpoint(CheckpointKind::Shutdown).unwrap();
    assert!(fs::read(&path).unwrap().starts_with(&written));
    let report = crate::audit::verify(&[&path], &[key.public_key().clone()]).unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
    assert!(report.unattested.is_empty(), "{:?}", report.unattested);
    assert_eq!(report.events, 2);
}
