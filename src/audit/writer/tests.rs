use super::*;
use crate::audit::chain::{parse_line, Checkpoint};
use crate::audit::event::{EventStart, Level, MicroTime, UserInfo};
use crate::audit::{verify, CheckpointKind, Tail};
use crate::crypto::Ed25519SigningKey;
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

pub(in crate::audit) fn event(i: usize) -> Event {
    Event::start(EventStart {
        level: Level::Metadata,
        audit_id: uuid::Uuid::new_v4().to_string(),
        request_uri: "/keyward.v1.Secrets/Get".into(),
        verb: "get".into(),
        user: std::sync::Arc::new(UserInfo {
            username: format!("user-{i}"),
            ..Default::default()
        }),
        user_json: None,
        impersonated_user: None,
        source_ips: vec![],
        user_agent: String::new(),
        object_ref: None,
        received: MicroTime::now(),
        annotations: BTreeMap::new(),
    })
}

struct Setup {
    dir: tempfile::TempDir,
    key: Arc<Ed25519SigningKey>,
}

impl Setup {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            key: Arc::new(Ed25519SigningKey::generate().unwrap()),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("logs/audit.log")
    }

    fn config(&self) -> LogConfig {
        LogConfig::new(self.path())
    }

    async fn open(&self, config: LogConfig) -> AuditLog {
        AuditLog::open(config, self.key.clone()).await.unwrap()
    }

    fn verify(&self) -> crate::audit::Report {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        files.sort();
        verify(&files, &[self.key.public_key().clone()]).unwrap()
    }

    /// The rotated files, oldest first.
    fn backups(&self) -> Vec<PathBuf> {
        let mut backups: Vec<PathBuf> = std::fs::read_dir(self.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p != &self.path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        backups.sort_by_key(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let first = parse_line(text.lines().next().unwrap().as_bytes()).unwrap();
            Checkpoint::parse_note(&first.checkpoint.unwrap().0)
                .unwrap()
                .file
        });
        backups
    }

    fn lines(&self) -> Vec<String> {
        read_lines(&self.path())
    }
}

/// The lines of a file.
pub(in crate::audit) fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn kinds(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            match v["annotations"]["keyward.io/checkpoint"].as_str() {
                Some(note) => note
                    .lines()
                    .find_map(|l| l.strip_prefix("kind "))
                    .unwrap()
                    .to_owned(),
                None => "event".to_owned(),
            }
        })
        .collect()
}

#[tokio::test]
async fn creates_private_files_and_seals_them_at_close() {
    let s = Setup::new();
    let log = s.open(s.config()).await;
    assert_eq!(log.path(), s.path());
    assert_eq!(log.public_key(), s.key.public_key());
    for i in 0..3 {
        log.write(event(i)).await.unwrap();
    }
    log.close().await.unwrap();
    log.close().await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(s.path().parent().unwrap()), 0o700);
    assert_eq!(mode(&s.path()), 0o600);
    assert_eq!(
        kinds(&s.lines()),
        ["open", "event", "event", "event", "shutdown"]
    );
    assert!(matches!(log.write(event(9)).await, Err(AuditError::Closed)));
    let c = log.counters();
    assert_eq!(
        c,
        AuditCounters {
            events_written: 3,
            write_failures: 1,
            checkpoints_written: 2,
            rotations: 0
        }
    );
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert!(matches!(
        r.tail,
        Tail::Sealed {
            kind: CheckpointKind::Shutdown,
            ..
        }
    ));
}

#[tokio::test]
async fn open_mode_proceeds_and_counts_failures() {
    let s = Setup::new();
    let log = s
        .open(LogConfig {
            failure_mode: FailureMode::Open,
            ..s.config()
        })
        .await;
    log.close().await.unwrap();
    log.write(event(0)).await.unwrap();
    assert_eq!(log.counters().write_failures, 1);
    assert_eq!(log.counters().events_written, 0);
}

/// Many tasks at once: every event is written once, the chain order is the file order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_are_serialised() {
    concurrent_writers(true).await;
}

/// The same without syncing, where callers combine their lines into shared writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_are_serialised_without_sync() {
    concurrent_writers(false).await;
}

/// Batch mode, synced or not, with a queue of one event: writers wait for room instead of
/// losing events, every event is written by the time the log has closed, and writes after
/// that are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_mode_writes_every_queued_event() {
    for fsync in [true, false] {
        let s = Setup::new();
        let log = s
            .open(LogConfig {
                checkpoint_every: 50,
                fsync,
                batch: Some(BatchConfig {
                    buffer_size: 1,
                    max_wait: Duration::from_millis(1),
                }),
                ..s.config()
            })
            .await;
        check_concurrent_writers(&s, &log).await;
        assert!(matches!(log.write(event(0)).await, Err(AuditError::Closed)));
        assert_eq!(log.counters().write_failures, 1);
    }
}

/// Batch mode: the writer thread writes queued events on its own, without a further call or
/// a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_writes_in_the_background() {
    let s = Setup::new();
    let log = s
        .open(LogConfig {
            batch: Some(BatchConfig::default()),
            ..s.config()
        })
        .await;
    for i in 0..3 {
        log.write(event(i)).await.unwrap();
    }
    wait_written(&log, 3).await;
    assert_eq!(kinds(&s.lines()), ["open", "event", "event", "event"]);
    log.close().await.unwrap();
    assert!(s.verify().is_intact());
}

/// Callers waiting for a combined write while the log closes all get an answer: written
/// before the shutdown checkpoint, or `Closed`; none waits forever, and the log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_racing_a_close_without_sync_are_all_answered() {
    let s = Setup::new();
    let log = s
        .open(LogConfig {
            fsync: false,
            ..s.config()
        })
        .await;
    let tasks = spawn_writers(&log, 32, 200);
    tokio::time::sleep(Duration::from_millis(5)).await;
    log.close().await.unwrap();
    let mut written = 0;
    for t in tasks {
        written += tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("every writer is answered")
            .unwrap();
    }
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, written);
    assert_eq!(log.counters().events_written, written);
}

/// `tasks` tasks, each writing up to `each` events (distinct users) until the log is closed;
/// each returns how many it wrote.
fn spawn_writers(log: &AuditLog, tasks: usize, each: usize) -> Vec<JoinHandle<u64>> {
    (0..tasks)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut written = 0;
                for i in 0..each {
                    match log.write(event(t * 1000 + i)).await {
                        Ok(()) => written += 1,
                        Err(AuditError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                written
            })
        })
        .collect()
}

async fn concurrent_writers(fsync: bool) {
    let s = Setup::new();
    let log = s
        .open(LogConfig {
            checkpoint_every: 50,
            fsync,
            ..s.config()
        })
        .await;
    check_concurrent_writers(&s, &log).await;
}

/// 32 tasks of 20 events each on `log` (a checkpoint every 50 events), then the log closes: all
/// 640 events are in it once, in chain order.
async fn check_concurrent_writers(s: &Setup, log: &AuditLog) {
    for t in spawn_writers(log, 32, 20) {
        assert_eq!(t.await.unwrap(), 20);
    }
    log.close().await.unwrap();
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 640);
    assert_eq!(r.checkpoints, 1 + 640 / 50 + 1);
    assert_eq!(log.counters().events_written, 640);
    let mut users: Vec<String> = s
        .lines()
        .iter()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["user"]["username"]
                .as_str()
                .filter(|u| u.starts_with("user-"))
                .map(str::to_owned)
        })
        .collect();
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 640);
}

#[tokio::test(start_paused = true)]
async fn checkpoints_every_n_events_or_t_seconds() {
    let s = Setup::new();
    let log = s
        .open(LogConfig {
            checkpoint_every: 3,
            checkpoint_interval: Duration::from_secs(60),
            ..s.config()
        })
        .await;
    for i in 0..4 {
        log.write(event(i)).await.unwrap();
    }
    assert_eq!(
        kinds(&s.lines()),
        ["open", "event", "event", "event", "periodic", "event"]
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(log.counters().checkpoints_written, 2);
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(log.counters().checkpoints_written, 3);
    // Idle: no checkpoint without new events.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(log.counters().checkpoints_written, 3);
    log.checkpoint().await.unwrap();
    assert_eq!(log.counters().checkpoints_written, 3);
    log.write(event(9)).await.unwrap();
    log.checkpoint().await.unwrap();
    assert_eq!(log.counters().checkpoints_written, 4);
    log.close().await.unwrap();
    assert_eq!(
        kinds(&s.lines())[6..],
        ["periodic", "event", "periodic", "shutdown"]
    );
    assert!(s.verify().is_intact());
}

#[tokio::test]
async fn rotation_keeps_the_chain_and_names_the_previous_file() {
    let s = Setup::new();
    let log = s
        .open(LogConfig {
            max_size: 3000,
            ..s.config()
        })
        .await;
    for i in 0..30 {
        log.write(event(i)).await.unwrap();
    }
    log.close().await.unwrap();
    let rotations = log.counters().rotations;
    assert!(rotations >= 3, "{rotations}");
    let backups = s.backups();
    assert_eq!(backups.len() as u64, rotations);
    for b in &backups {
        let name = b.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("audit-") && name.ends_with(".log"),
            "{name}"
        );
        assert_eq!(
            std::fs::metadata(b).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Never more than the maximum, the checkpoint that seals the file included
        // (lumberjack's rule).
        let size = std::fs::metadata(b).unwrap().len();
        assert!(size <= 3000, "{size}");
    }
    assert!(std::fs::metadata(s.path()).unwrap().len() <= 3000);
    let header: serde_json::Value = serde_json::from_str(&s.lines()[0]).unwrap();
    let note = header["annotations"]["keyward.io/checkpoint"]
        .as_str()
        .unwrap();
    let newest = backups
        .last()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(note.contains(&format!("prev-file {newest}\n")), "{note}");
    assert!(note.contains(&format!("file {rotations}\n")), "{note}");
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert_eq!(r.events, 30);
}

#[tokio::test]
async fn reopening_resumes_the_chain() {
    let s = Setup::new();
    let log = s.open(s.config()).await;
    log.write(event(0)).await.unwrap();
    log.close().await.unwrap();
    // Clean restart: resume after the shutdown checkpoint.
    let log = s.open(s.config()).await;
    log.write(event(1)).await.unwrap();
    log.close().await.unwrap();
    // A crash: the last lines were not sealed, and a write was cut mid-line.
    let mut lines = s.lines();
    while kinds(&lines).last().is_some_and(|k| k == "shutdown") {
        lines.pop();
    }
    let mut text = lines.join("\n") + "\n";
    text.push_str("{\"kind\":\"Event\",\"apiVers");
    std::fs::write(s.path(), text).unwrap();
    // Lines the sync journal still holds would be put back (they were acknowledged); these
    // stand for lines that never were.
    std::fs::remove_file(crate::audit::journal::journal_path(&s.path())).unwrap();
    let log = s.open(s.config()).await;
    log.write(event(2)).await.unwrap();
    log.close().await.unwrap();
    assert_eq!(
        kinds(&s.lines()),
        ["open", "event", "shutdown", "resume", "event", "resume", "event", "shutdown"]
    );
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problem);
    // With the journal gone, nothing vouches for the event left after the crash.
    assert!(
        r.unattested.len() == 1
            && r.unattested[0].ends_with(":5-5: written after the resume checkpoint at line 4 by a writer that then stopped without closing the log; when it restarted nothing it keeps vouched for them (the log did not sync, or its sync journal was missing, changed or made under another key), so they may have been edited or added while it was stopped"),
        "{:?}",
        r.unattested
    );
}

#[tokio::test]
async fn dropping_every_handle_seals_the_log() {
    let s = Setup::new();
    let log = s.open(s.config()).await;
    log.write(event(0)).await.unwrap();
    drop(log);
    for _ in 0..500 {
        if kinds(&s.lines()).last().is_some_and(|k| k == "shutdown") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no shutdown checkpoint: {:?}", kinds(&s.lines()));
}

#[tokio::test]
async fn an_interrupted_rotation_is_finished_on_open() {
    let s = Setup::new();
    let log = s
        .open(LogConfig {
            max_size: 2500,
            ..s.config()
        })
        .await;
    for i in 0..6 {
        log.write(event(i)).await.unwrap();
    }
    log.close().await.unwrap();
    assert!(log.counters().rotations >= 1);
    // The newest rotated file put back in place of the active one: the sync journal holds lines
    // of the file that was removed, so the log is not continued, and nothing is changed.
    let newest = s.backups().pop().unwrap();
    std::fs::rename(&newest, s.path()).unwrap();
    let before = std::fs::read(s.path()).unwrap();
    let err = AuditLog::open(s.config(), s.key.clone()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the sync journal holds lines of file")
            && err
                .to_string()
                .contains("the newer file was removed or this older one put back in its place"),
        "{err}"
    );
    assert_eq!(std::fs::read(s.path()).unwrap(), before);
    // Without the journal's record of the later file, this is what a crash between sealing
    // the file and renaming it leaves.
    std::fs::remove_file(crate::audit::journal::journal_path(&s.path())).unwrap();
    let log = s.open(s.config()).await;
    log.write(event(9)).await.unwrap();
    log.close().await.unwrap();
    // The restart is recorded: the active file it replaced (a cut, here) shows in a note.
    assert_eq!(kinds(&s.lines()), ["open", "resume", "event", "shutdown"]);
    let r = s.verify();
    assert!(r.is_intact(), "{:?}", r.problem);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("opened this file for the rotation that the previous file's last line (its rotate checkpoint) began")),
        "{:?}",
        r.notes
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_keyward_log_is_refused() {
    let s = Setup::new();
    std::fs::create_dir_all(s.path().parent().unwrap()).unwrap();
    std::fs::write(s.path(), "{\"kind\":\"Event\"}\n").unwrap();
    let err = AuditLog::open(s.config(), s.key.clone()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("line 1 is not the header of a keyward audit log; move the file away"),
        "{err}"
    );
    // Nothing made for it is left behind: the file as it was, and no sync journal.
    assert_eq!(
        std::fs::read_to_string(s.path()).unwrap(),
        "{\"kind\":\"Event\"}\n"
    );
    assert!(!crate::audit::journal::journal_path(&s.path()).exists());
}

/// A log is renamed when it rotates: a path that is not a regular file (a device such as
/// /dev/null, a pipe) is refused, and left as it is.
#[tokio::test]
async fn a_path_that_is_not_a_regular_file_is_refused() {
    let s = Setup::new();
    std::fs::create_dir_all(s.path().parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        s.path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let err = AuditLog::open(s.config(), s.key.clone()).await.unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(std::fs::metadata(s.path()).unwrap().file_type().is_fifo());
}

#[tokio::test]
async fn a_second_writer_is_refused() {
    let s = Setup::new();
    let log = s.open(s.config()).await;
    let err = AuditLog::open(s.config(), s.key.clone()).await.unwrap_err();
    assert!(
        err.to_string().contains("another process is writing it"),
        "{err}"
    );
    log.close().await.unwrap();
    let again = s.open(s.config()).await;
    again.close().await.unwrap();
    assert!(s.verify().is_intact());
}

#[tokio::test(start_paused = true)]
async fn a_zero_interval_checkpoints_by_count_only() {
    let s = Setup::new();
    let log = s
        .open(LogConfig {
            checkpoint_every: 2,
            checkpoint_interval: Duration::ZERO,
            ..s.config()
        })
        .await;
    log.write(event(0)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(log.counters().checkpoints_written, 1);
    log.write(event(1)).await.unwrap();
    assert_eq!(log.counters().checkpoints_written, 2);
    log.close().await.unwrap();
}

/// Waits until the log has written `n` events (fails after 10 s).
async fn wait_written(log: &AuditLog, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.counters().events_written < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} events never written"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Swaps the log's file for `/dev/full` (a full disk) or back; returns the one it replaced.
fn swap_file(log: &AuditLog, file: std::fs::File) -> std::fs::File {
    with_file(&log.inner.file, |f| f.replace_file(file)).expect("the log is open")
}

/// `/dev/full`: a file every write to fails, as on a full disk.
pub(in crate::audit) fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .append(true)
        .open("/dev/full")
        .unwrap()
}

/// Writes `i` until the log takes it (`true`) or 10 s pass; each refusal is `Unavailable`'s
/// cause, the write error.
async fn written_when_possible(log: &AuditLog, i: usize) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match log.write(event(i)).await {
            Ok(()) => return true,
            Err(e) => assert!(matches!(e, AuditError::Write { .. }), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// Batch mode on a full disk: the batch that failed is kept and written once the disk has
/// room, and meanwhile requests are refused (fail closed) rather than answered with events
/// that would be dropped; in open mode they go on, and the log records their events as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_keeps_a_failed_batch_and_refuses_until_it_is_written() {
    for mode in [FailureMode::Closed, FailureMode::Open] {
        let s = Setup::new();
        let log = s
            .open(LogConfig {
                failure_mode: mode,
                batch: Some(BatchConfig {
                    buffer_size: 100,
                    max_wait: Duration::from_millis(1),
                }),
                ..s.config()
            })
            .await;
        log.write(event(0)).await.unwrap();
        wait_written(&log, 1).await;
        let real = swap_file(&log, dev_full());
        // Queued; its write fails.
        log.write(event(1)).await.unwrap();
        // Until the writer has failed, events queue; then they are refused (closed) or go on
        // unwritten, counted as lost (open).
        let mut twos = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = log.write(event(2)).await;
            twos += 1;
            let failing = log.inner.batch.as_ref().unwrap().is_failing();
            match mode {
                FailureMode::Closed if r.is_err() => break,
                FailureMode::Open if failing => {
                    // Failing until a write succeeds, which /dev/full never lets: lost.
                    log.write(event(2)).await.unwrap();
                    twos += 1;
                    break;
                }
                _ => assert!(r.is_ok(), "{mode:?}: {r:?}"),
            }
            assert!(std::time::Instant::now() < deadline, "the log never failed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        swap_file(&log, real);
        if mode == FailureMode::Closed {
            assert!(written_when_possible(&log, 3).await, "never writable again");
        } else {
            wait_written(&log, 2).await;
        }
        log.close().await.unwrap();
        let r = s.verify();
        assert!(r.is_intact(), "{mode:?}: {:?}", r.problem);
        let lines = s.lines();
        let users: Vec<String> = lines
            .iter()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["user"]["username"].as_str().map(str::to_owned)
            })
            .filter(|u| u.starts_with("user-"))
            .collect();
        // Event 1, queued before the failure, is not lost; every event 2 was written, or
        // refused (closed: the last one), or counted as lost (open).
        assert!(users.contains(&"user-1".to_owned()), "{mode:?}: {users:?}");
        let written = users.iter().filter(|u| *u == "user-2").count() as u64;
        match mode {
            FailureMode::Closed => assert_eq!((written, r.lost_events), (twos - 1, 0)),
            FailureMode::Open => {
                assert!(r.lost_events >= 1, "{lines:?}");
                assert_eq!(written + r.lost_events, twos, "{lines:?}");
            }
        }
    }
}
