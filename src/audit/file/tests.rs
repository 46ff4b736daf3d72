use super::*;
use crate::audit::writer::LogConfig;
use crate::crypto::Ed25519SigningKey;

fn event(i: usize) -> Event {
    crate::audit::writer::tests::event(i)
}

/// A full disk: the write fails and nothing of it stays in the file; once the disk has room
/// again the log goes on and verifies.
#[test]
fn a_failed_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = Arc::new(Ed25519SigningKey::generate().unwrap());
    let mut log = LogFile::open(&LogConfig::new(&path), key.clone()).unwrap();
    log.write_events(vec![event(0)]).unwrap();
    let good = fs::read(&path).unwrap();
    let real = std::mem::replace(
        &mut log.file,
        OpenOptions::new().append(true).open("/dev/full").unwrap(),
    );
    let err = log.write_events(vec![event(1), event(2)]).unwrap_err();
    assert!(matches!(err, AuditError::Write { .. }), "{err}");
    assert!(log.dirty, "set_len on /dev/full fails too");
    log.file = real;
    log.write_events(vec![event(3)]).unwrap();
    log.checkpoint(CheckpointKind::Shutdown).unwrap();
    let after = fs::read(&path).unwrap();
    assert!(after.starts_with(&good));
    let report = crate::audit::verify(&[&path], &[key.public_key().clone()]).unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
    assert_eq!(report.events, 2);
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
