//! `kill -9` crash test for both embedded engines (`SledBackend` with its write-ahead log, and
//! `LogBackend`, whose log is the store): a child process (this test binary again, in writer
//! mode) writes from several tasks at once and prints every acknowledged write and every event
//! its live watch delivers; the parent kills it at a random moment, tears the tail of the
//! write-ahead log (cuts an unacknowledged last record mid-way, or writes a torn record or garbage
//! after the last record; now and then it first checks that a corrupt earlier record makes
//! opening fail, naming the file and offset), reopens the store and checks that every acknowledged write and every
//! watched event is there, that a torn batch is wholly absent or wholly present, that the
//! current values, the per-key history and the change log agree (a batch is never half applied),
//! that revisions only grow across restarts, and that the store takes new writes. Twenty cycles
//! on the same directory; `KEYWARD_CRASH_CYCLES=N` runs more (see docs/testing.md).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::backend::logstore::{LogBackend, LogOptions};
use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::backend::{Backend, BackendError, Expect, KeyValue, Revision, WriteOutcome};
use tokio_stream::StreamExt;

/// Set in the child: the store directory. Its presence selects writer mode.
const DIR_ENV: &str = "KEYWARD_CRASH_CHILD_DIR";
/// Set in the child: the round number, so that values differ between rounds.
const ROUND_ENV: &str = "KEYWARD_CRASH_CHILD_ROUND";
/// Set in the child: which engine it writes with (`sled` or `log`).
const ENGINE_ENV: &str = "KEYWARD_CRASH_CHILD_ENGINE";
const READY: &str = "@@READY";
const ACK: &str = "@@ACK ";
const EVENT: &str = "@@EVENT ";
/// Cycles of the long version (default [`ROUNDS`]).
const CYCLES_ENV: &str = "KEYWARD_CRASH_CYCLES";

const ROUNDS: u32 = 20;
const WRITER_TASKS: u32 = 8;
/// Wall time the default run may take before it stops starting cycles (a CI bound); the long
/// version gets this per 20 cycles.
const BUDGET_PER_20: Duration = Duration::from_secs(75);

/// The embedded engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sled,
    Log,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Log => "log",
        }
    }

    fn from_name(name: &str) -> Engine {
        match name {
            "sled" => Engine::Sled,
            "log" => Engine::Log,
            other => panic!("unknown engine {other:?}"),
        }
    }

    /// Opens the store with default options (the check after a crash).
    fn open(self, dir: &Path) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(match self {
            Engine::Sled => Arc::new(SledBackend::open(dir, SledOptions::default())?),
            Engine::Log => Arc::new(LogBackend::open(dir, LogOptions::default())?),
        })
    }

    /// Opens the store as the writer of `round` does. Rounds take turns: for sled, layers
    /// written after every batch, every few batches, and at the default size, so that kills
    /// land while layers are being written too; for the log-structured engine, 64 KiB
    /// segments, 1 MiB segments (both cleaned as soon as they take twice what is kept) and
    /// the defaults, so that kills land while segments are relocated and deleted; for both,
    /// every other round keeps a short change log, so that log entries leave the window all
    /// the time.
    fn open_for_round(self, dir: &Path, round: u32) -> Result<Arc<dyn Backend>, BackendError> {
        let short_log = round % 2 == 1;
        Ok(match self {
            Engine::Sled => {
                let opts = SledOptions {
                    layer_bytes: [0, 4096, SledOptions::default().layer_bytes][round as usize % 3],
                    log_retention: if short_log {
                        200
                    } else {
                        SledOptions::default().log_retention
                    },
                    ..SledOptions::default()
                };
                Arc::new(SledBackend::open(dir, opts)?)
            }
            Engine::Log => {
                let (segment_bytes, clean_above_bytes) = match round % 3 {
                    0 => (64 << 10, 0),
                    1 => (1 << 20, 0),
                    _ => (
                        LogOptions::default().segment_bytes,
                        LogOptions::default().clean_above_bytes,
                    ),
                };
                let opts = LogOptions {
                    log_retention: if short_log {
                        200
                    } else {
                        LogOptions::default().log_retention
                    },
                    segment_bytes,
                    clean_above_bytes,
                    ..LogOptions::default()
                };
                Arc::new(LogBackend::open(dir, opts)?)
            }
        })
    }

    /// Bytes of a log record's frame before its payload: sled's write-ahead log frames with
    /// `le32 length, le32 CRC32C`; the log-structured engine (format 2) adds `le32 segment`.
    fn frame_len(self) -> usize {
        match self {
            Engine::Sled => 8,
            Engine::Log => 12,
        }
    }

    /// Where the log's segments are, and their file extension.
    fn segments(self, store: &Path) -> (std::path::PathBuf, &'static str) {
        match self {
            Engine::Sled => (store.join("wal"), "wal"),
            Engine::Log => (store.to_path_buf(), "seg"),
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `key|round|task|counter|padding|fnv(everything before)`.
fn make_value(key: &[u8], round: u32, task: u32, counter: u64, padding: usize) -> Vec<u8> {
    let mut body = format!("{}|{round}|{task}|{counter}|", hex::encode(key)).into_bytes();
    body.extend(std::iter::repeat_n(b'x', padding));
    body.push(b'|');
    let sum = fnv1a(&body);
    body.extend_from_slice(format!("{sum:016x}").as_bytes());
    body
}

/// Checks a stored value's checksum and that it names `key`.
fn check_value(key: &[u8], value: &[u8]) -> Result<(), String> {
    if value.len() < 17 {
        return Err(format!("value of {} bytes is too short", value.len()));
    }
    let (body, sum) = value.split_at(value.len() - 16);
    let sum = std::str::from_utf8(sum).map_err(|_| "checksum is not text".to_string())?;
    if format!("{:016x}", fnv1a(body)) != sum {
        return Err("checksum mismatch".to_string());
    }
    let named = body.split(|&b| b == b'|').next().unwrap_or_default();
    if named != hex::encode(key).as_bytes() {
        return Err("value names another key".to_string());
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct Ack {
    key: Vec<u8>,
    revision: Revision,
    hash: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    parse_tagged(line, ACK)
}

/// A watched event, printed as `@@EVENT key revision hash` (same fields as an ack).
fn parse_event(line: &str) -> Option<Ack> {
    parse_tagged(line, EVENT)
}

fn parse_tagged(line: &str, tag: &str) -> Option<Ack> {
    let rest = &line[line.find(tag)? + tag.len()..];
    let mut parts = rest.split_whitespace();
    let key = hex::decode(parts.next()?).ok()?;
    let revision = parts.next()?.parse().ok()?;
    let hash = u64::from_str_radix(parts.next()?, 16).ok()?;
    Some(Ack {
        key,
        revision,
        hash,
    })
}

/// Writer mode: runs only in the child (passes at once otherwise).
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let round: u32 = std::env::var(ROUND_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .expect("round number");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let engine = Engine::from_name(&std::env::var(ENGINE_ENV).expect("engine"));
        let backend = engine.open_for_round(Path::new(&dir), round).expect("open");
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        // A live watch of everything: its events must be durable, in order, without gaps.
        let mut stream = backend.watch(b"", None).await.expect("watch");
        let mut next = backend
            .current_revision()
            .await
            .expect("current revision")
            .get()
            + 1;
        {
            let out = Arc::clone(&out);
            tokio::spawn(async move {
                while let Some(event) = stream.next().await {
                    let event = event.expect("watch event");
                    if event.kv.mod_revision.get() != next {
                        eprintln!("watch: expected {next}, got {}", event.kv.mod_revision);
                        std::process::abort();
                    }
                    next += 1;
                    let mut out = out.lock().expect("stdout");
                    writeln!(
                        out,
                        "{EVENT}{} {} {:016x}",
                        hex::encode(&event.kv.key),
                        event.kv.mod_revision,
                        fnv1a(&event.kv.value)
                    )
                    .expect("print");
                    out.flush().expect("flush");
                }
            });
        }
        {
            let mut out = out.lock().expect("stdout");
            writeln!(out, "\n{READY}").expect("print");
            out.flush().expect("flush");
        }
        let started = Instant::now();
        let tasks: Vec<_> = (0..WRITER_TASKS)
            .map(|task| {
                let backend = Arc::clone(&backend);
                let out = Arc::clone(&out);
                tokio::spawn(async move {
                    let mut counter = 0u64;
                    // The parent kills us long before this; the bound only guards against an
                    // orphaned child.
                    while started.elapsed() < Duration::from_secs(60) {
                        counter += 1;
                        let (key, expect) = if counter % 2 == 0 {
                            // Contended keys, conditional writes.
                            let key = format!("shared/{}", counter % 3).into_bytes();
                            let expect = match backend.get(&key, None).await.expect("get") {
                                (Some(kv), _) => Expect::ModRevision(kv.mod_revision),
                                (None, _) => Expect::Absent,
                            };
                            (key, expect)
                        } else {
                            (
                                format!("own/{task}/{}", counter % 4).into_bytes(),
                                Expect::Any,
                            )
                        };
                        // Now and then a value large enough for sled to store as a blob file.
                        let padding = if counter % 97 == 0 {
                            300_000
                        } else {
                            (counter % 50) as usize
                        };
                        let value = make_value(&key, round, task, counter, padding);
                        let hash = fnv1a(&value);
                        match backend.put(&key, value, expect).await.expect("put") {
                            WriteOutcome::Applied { revision, .. } => {
                                let mut out = out.lock().expect("stdout");
                                writeln!(out, "{ACK}{} {revision} {hash:016x}", hex::encode(&key))
                                    .expect("print");
                                out.flush().expect("flush");
                            }
                            WriteOutcome::Conflict { .. } => {}
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer task");
        }
    });
}

/// Reads the child's stdout; sends only complete lines (a line cut by the kill is dropped).
fn read_lines(stdout: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.ends_with(b"\n") => {
                    if tx
                        .send(String::from_utf8_lossy(&line).into_owned())
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => return,
            }
        }
    });
    rx
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("random bytes");
    u64::from_le_bytes(bytes)
}

#[test]
fn kill_9_never_loses_an_acknowledged_write() {
    if std::env::var_os(DIR_ENV).is_none() {
        crash_cycles(Engine::Sled);
    }
}

#[test]
fn kill_9_never_loses_an_acknowledged_write_to_the_log_structured_engine() {
    if std::env::var_os(DIR_ENV).is_none() {
        crash_cycles(Engine::Log);
    }
}

/// Twenty (or `KEYWARD_CRASH_CYCLES`) crash cycles of `engine` on one directory.
fn crash_cycles(engine: Engine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    let exe = std::env::current_exe().expect("test binary");
    let child_test = crate::support::test_name(module_path!(), "crash_writer_child");
    let cycles: u32 = std::env::var(CYCLES_ENV)
        .ok()
        .map(|n| n.parse().expect("KEYWARD_CRASH_CYCLES is a number"))
        .unwrap_or(ROUNDS);
    let budget = BUDGET_PER_20 * cycles.div_ceil(20).max(1);
    let started = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    let mut watched: Vec<Ack> = Vec::new();
    let mut last_current = Revision::FIRST;
    let mut torn_kinds = HashMap::new();
    let mut redo_kills = 0u32;
    let mut reused_kills = 0u32;
    let mut rounds = 0;
    for round in 0..cycles {
        if started.elapsed() > budget {
            break;
        }
        let mut child = Command::new(&exe)
            .args([
                child_test.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, &path)
            .env(ROUND_ENV, round.to_string())
            .env(ENGINE_ENV, engine.name())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the writer child");
        let lines = read_lines(child.stdout.take().expect("child stdout"));
        let mut stderr = child.stderr.take().expect("child stderr");
        let child_failed = |stderr: &mut std::process::ChildStderr, why: &str| -> ! {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            panic!("round {round}: {why}; child stderr:\n{text}");
        };

        // Wait until it has opened the store, then let it write for 50–400 ms.
        let mut ready = false;
        let mut before_kill = Vec::new();
        while !ready {
            match lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains(READY) => ready = true,
                Ok(line) => before_kill.push(line),
                Err(_) => {
                    let _ = rustix::process::kill_process(
                        rustix::process::Pid::from_child(&child),
                        rustix::process::Signal::KILL,
                    );
                    let _ = child.wait();
                    child_failed(&mut stderr, "the child never became ready");
                }
            }
        }
        // Let it write until it has acknowledged something (a loaded machine may take long for
        // the first fsync), then for a further 0–350 ms, so the kill lands at a random point.
        while !before_kill.iter().any(|l| parse_ack(l).is_some()) {
            match lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => before_kill.push(line),
                Err(_) => {
                    let _ = rustix::process::kill_process(
                        rustix::process::Pid::from_child(&child),
                        rustix::process::Signal::KILL,
                    );
                    let _ = child.wait();
                    child_failed(&mut stderr, "the child acknowledged nothing in 30 s");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(random_u64() % 351));
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::KILL,
        )
        .expect("kill -9 the child");
        let status = child.wait().expect("wait for the child");
        if status.signal() != Some(9) {
            child_failed(
                &mut stderr,
                &format!("the child was not killed but ended with {status}"),
            );
        }
        let output: Vec<String> = before_kill.into_iter().chain(lines.iter()).collect();
        let round_acks: Vec<Ack> = output.iter().filter_map(|l| parse_ack(l)).collect();
        assert!(
            !round_acks.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        let round_watched: Vec<Ack> = output.iter().filter_map(|l| parse_event(l)).collect();
        // A watched event was durable even if its writer was killed before printing the ack.
        let max_acked = round_acks
            .iter()
            .chain(&round_watched)
            .map(|a| a.revision)
            .max();
        acks.extend(round_acks);
        watched.extend(round_watched);
        // Layers written to sled since its last checkpoint, which opening re-applies.
        if std::fs::metadata(path.join("redo")).is_ok_and(|m| m.len() > 0) {
            redo_kills += 1;
        }
        if killed_with_segments_used_again(engine, &path) {
            reused_kills += 1;
        }
        if round % 4 == 1 && corruption_before_the_tail_is_refused(engine, &path) {
            *torn_kinds
                .entry("an earlier record corrupt: refused")
                .or_insert(0) += 1;
        }
        let torn = tear_the_log_tail(engine, &path, round, max_acked);
        *torn_kinds.entry(torn.kind).or_insert(0) += 1;
        last_current = verify(engine, &path, &acks, &watched, round, &torn, last_current);
        rounds += 1;
    }
    assert!(
        rounds == cycles || rounds >= 10,
        "only {rounds} of {cycles} cycles ran in {budget:?}"
    );
    println!(
        "{}: {rounds} cycles, {} acknowledged writes and {} watched events checked, torn tails {torn_kinds:?}, {redo_kills} kills with layers in the redo file, {reused_kills} kills with cleaned segments used again, {:.1} s",
        engine.name(),
        acks.len(),
        watched.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        engine != Engine::Log || reused_kills > 0,
        "no kill found cleaned segments used again: the rounds of small segments reuse them"
    );
}

/// What was done to the log's tail after a kill.
#[derive(Debug)]
struct Torn {
    kind: &'static str,
    /// Revisions of an unacknowledged last record that was cut mid-way: after restart they must
    /// be all present (sled had written the batch itself) or all absent (always, for the
    /// log-structured engine).
    cut_batch: Option<(Revision, Revision)>,
}

/// A log record's offset, length (frame included), kind, and for a batch (kind 1) its first
/// revision and count of changes.
type RecordSpan = (usize, usize, u8, i64, u32);

/// The write-ahead log's last segment and its records.
fn last_segment_records(
    engine: Engine,
    store: &Path,
) -> Option<(std::path::PathBuf, Vec<RecordSpan>)> {
    let last = log_segments(engine, store).pop()?;
    let data = std::fs::read(&last).expect("read the last log segment");
    let records = segment_records(engine, &data);
    Some((last, records))
}

/// The write-ahead log's segments, in order.
fn log_segments(engine: Engine, store: &Path) -> Vec<std::path::PathBuf> {
    let (dir, extension) = engine.segments(store);
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    segments.sort();
    segments
}

/// The records of one log segment's `data`.
fn segment_records(engine: Engine, data: &[u8]) -> Vec<RecordSpan> {
    let mut records = Vec::new();
    // The layout of src/backend/sled/wal.rs and src/backend/logstore/format.rs: a 24-byte
    // header, then frames (le32 length first; see `Engine::frame_len`), each payload starting
    // with its kind, and for a batch be64 first revision, be32 count, ... Frames are walked by
    // length only, up to a zero length (which the log-structured engine writes after every
    // record, since a segment it uses again holds old records after it).
    let frame = engine.frame_len();
    let mut at = 24;
    while at + frame <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || at + frame + len > data.len() {
            break;
        }
        let payload = &data[at + frame..at + frame + len];
        let (first, count) = if len >= 13 {
            (
                i64::from_be_bytes(payload[1..9].try_into().expect("8 bytes")),
                u32::from_be_bytes(payload[9..13].try_into().expect("4 bytes")),
            )
        } else {
            (0, 0)
        };
        records.push((at, frame + len, payload[0], first, count));
        at += frame + len;
    }
    records
}

/// Whether the kill left the log-structured engine with cleaned segments used again (old bytes
/// after the zero length that ends a segment's records, which reopening must not read) or one
/// waiting to be (`recycled`, which reopening keeps).
fn killed_with_segments_used_again(engine: Engine, store: &Path) -> bool {
    if engine != Engine::Log {
        return false;
    }
    store.join("recycled").exists()
        || log_segments(engine, store).iter().any(|segment| {
            let data = std::fs::read(segment).expect("read a log segment");
            let records = segment_records(engine, &data);
            let end = records.last().map_or(24, |&(offset, len, ..)| offset + len);
            data.get(end + 4..)
                .is_some_and(|rest| rest.iter().any(|b| *b != 0))
        })
}

/// Flips a bit in the first record of the log's last segment, if a later record follows it:
/// opening must then fail with an error naming the file and the offset (nothing is skipped).
/// The bit is flipped back afterwards. Returns whether it was tried.
fn corruption_before_the_tail_is_refused(engine: Engine, store: &Path) -> bool {
    let Some((segment, records)) = last_segment_records(engine, store) else {
        return false;
    };
    if records.len() < 2 {
        return false;
    }
    let (offset, len, ..) = records[0];
    let frame = engine.frame_len();
    let at = (offset + frame + (len - frame) / 2) as u64;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .expect("open the last log segment");
    use std::os::unix::fs::FileExt;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).expect("read a byte");
    file.write_all_at(&[byte[0] ^ 0x10], at)
        .expect("flip a bit");
    match engine.open(store) {
        Err(BackendError::Corrupt(message)) => {
            assert!(
                message.contains(&segment.display().to_string())
                    && message.contains(&format!("offset {offset}")),
                "the error names the file and offset {offset}: {message}"
            );
        }
        Err(other) => panic!("a corrupt earlier record gave {other:?}"),
        Ok(_) => panic!("a corrupt earlier record was skipped"),
    }
    file.write_all_at(&byte, at).expect("flip the bit back");
    true
}

/// Tears the log's tail as a crash in the middle of an append would: cycle by cycle, cuts an
/// unacknowledged last record mid-way (truncating sled's log, zeroing the rest of the record
/// in the log-structured engine's preallocated segment), writes the first half of a next
/// record after the last one, or writes garbage there. Never touches a record of which a write
/// was acknowledged or watched (`max_acked` is the newest revision either way).
fn tear_the_log_tail(
    engine: Engine,
    store: &Path,
    round: u32,
    max_acked: Option<Revision>,
) -> Torn {
    let untouched = Torn {
        kind: "none (no log segment)",
        cut_batch: None,
    };
    let Some((segment, records)) = last_segment_records(engine, store) else {
        return untouched;
    };
    let Some(&(offset, len, kind, first, count)) = records.last() else {
        return Torn {
            kind: "none (empty segment)",
            cut_batch: None,
        };
    };
    let end = offset + len;
    let last = first + i64::from(count) - 1;
    // Only a batch tells whether it was acknowledged; any other record (a compaction, the
    // log-structured engine's relocation) may have been synced, and a crash cannot cut that.
    let unacked = kind == 1 && max_acked.is_none_or(|m| first > m.get());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .expect("open the last log segment");
    use std::os::unix::fs::FileExt;
    match round % 3 {
        0 if unacked => {
            let cut = offset + 1 + (random_u64() as usize % (len - 1));
            match engine {
                Engine::Sled => file.set_len(cut as u64).expect("truncate the log"),
                // Its segments are filled to their size before use: a crash leaves the
                // record's first bytes and the zeros that were there, never a shorter file
                // (which opening refuses as a file cut short).
                Engine::Log => file
                    .write_all_at(&vec![0; end - cut], cut as u64)
                    .expect("zero the record's tail"),
            }
            Torn {
                kind: "cut an unacknowledged record",
                cut_batch: Some((
                    Revision::new(first).expect("a revision"),
                    Revision::new(last).expect("a revision"),
                )),
            }
        }
        0 | 1 => {
            // The last record again as the next one (its revisions moved on), half written.
            let mut next = std::fs::read(&segment).expect("read")[offset..end].to_vec();
            let first_at = engine.frame_len() + 1;
            next[first_at..first_at + 8].copy_from_slice(&(last + 1).to_be_bytes());
            let half = next.len() / 2;
            if !placed_as_the_writer_would(engine, &mut next, end, &file) {
                return untouched;
            }
            file.write_all_at(&next[..half], end as u64)
                .expect("write a torn record");
            Torn {
                kind: "half a record after the last",
                cut_batch: None,
            }
        }
        _ => {
            let mut garbage: Vec<u8> = (0..64).map(|_| random_u64() as u8 | 1).collect();
            if !placed_as_the_writer_would(engine, &mut garbage, end, &file) {
                return untouched;
            }
            file.write_all_at(&garbage, end as u64)
                .expect("write garbage");
            Torn {
                kind: "garbage after the last record",
                cut_batch: None,
            }
        }
    }
}

/// The log-structured engine appends a record only where it fits before its segment's end (it
/// starts a new segment otherwise), so the length a torn append leaves never reaches past the
/// file (opening refuses that as a file cut short): `bytes`' length field is brought within the
/// room after `end`. False if no record fits there (the writer would be in the next segment).
fn placed_as_the_writer_would(
    engine: Engine,
    bytes: &mut [u8],
    end: usize,
    file: &std::fs::File,
) -> bool {
    if let Engine::Log = engine {
        let size = file.metadata().expect("stat the segment").len() as usize;
        let room = size.saturating_sub(end + 4 + engine.frame_len());
        if room == 0 {
            return false;
        }
        let declared = u32::from_le_bytes(bytes[..4].try_into().expect("a length")) as usize;
        let len = u32::try_from(declared.clamp(1, room)).expect("a segment's size");
        bytes[..4].copy_from_slice(&len.to_le_bytes());
    }
    true
}

/// Reopens the store after a crash and checks it against every acknowledged write and watched
/// event; returns the current revision after the check's own write.
fn verify(
    engine: Engine,
    path: &Path,
    acks: &[Ack],
    watched: &[Ack],
    round: u32,
    torn: &Torn,
    last_current: Revision,
) -> Revision {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ctx = format!("after round {round} ({})", torn.kind);
        let backend = engine.open(path).expect("reopen after kill -9");
        let current = backend.current_revision().await.expect("current revision");
        assert!(
            current >= last_current,
            "{ctx}: the revision went back from {last_current} to {current}"
        );
        if let Some((first, last)) = torn.cut_batch {
            assert!(
                current < first || current >= last,
                "{ctx}: the cut batch {first}..={last} is half visible (current {current})"
            );
            // The log-structured engine has nothing but the log: a cut record is gone.
            assert!(
                engine == Engine::Sled || current < first,
                "{ctx}: the cut batch {first}..={last} is visible (current {current})"
            );
        }
        // What a watch delivered was durable: it is there after the crash.
        for event in watched {
            assert!(
                event.revision <= current,
                "{ctx}: watched revision {} > current {current}",
                event.revision
            );
        }
        let compacted = backend
            .compacted_revision()
            .await
            .expect("compacted revision");

        // Revisions: unique among acknowledged writes, none beyond the current revision.
        let mut seen = HashSet::new();
        let mut latest: HashMap<&[u8], &Ack> = HashMap::new();
        let by_revision: HashMap<Revision, &Ack> = acks.iter().map(|a| (a.revision, a)).collect();
        let watched_by_revision: HashMap<Revision, &Ack> =
            watched.iter().map(|a| (a.revision, a)).collect();
        for ack in acks {
            assert!(
                seen.insert(ack.revision),
                "{ctx}: revision {} acknowledged twice",
                ack.revision
            );
            assert!(
                ack.revision <= current,
                "{ctx}: acked revision {} > current {current}",
                ack.revision
            );
            let entry = latest.entry(ack.key.as_slice()).or_insert(ack);
            if ack.revision > entry.revision {
                *entry = ack;
            }
        }

        // Every key holds its last acknowledged write, or a later write.
        for (key, ack) in &latest {
            let (kv, _) = backend.get(key, None).await.expect("get");
            let kv = kv.unwrap_or_else(|| panic!("{ctx}: acknowledged key {key:?} is missing"));
            check_value(key, &kv.value).unwrap_or_else(|e| panic!("{ctx}: key {key:?}: {e}"));
            assert!(
                kv.mod_revision >= ack.revision,
                "{ctx}: key {key:?} went back from acked revision {} to {}",
                ack.revision,
                kv.mod_revision
            );
            if let Some(acked) = by_revision.get(&kv.mod_revision) {
                assert_eq!(
                    acked.key.as_slice(),
                    *key,
                    "{ctx}: revision {} is another key's",
                    kv.mod_revision
                );
                assert_eq!(
                    fnv1a(&kv.value),
                    acked.hash,
                    "{ctx}: key {key:?} holds another value"
                );
            }
        }

        // Every acknowledged write reads back at its revision, unless history was pruned.
        for ack in acks {
            match backend.get(&ack.key, Some(ack.revision)).await {
                Ok((Some(kv), _)) => {
                    assert_eq!(kv.mod_revision, ack.revision, "{ctx}: {ack:?}");
                    assert_eq!(fnv1a(&kv.value), ack.hash, "{ctx}: {ack:?}");
                }
                Err(BackendError::Compacted { .. }) => {}
                other => panic!("{ctx}: reading {ack:?} at its revision gave {other:?}"),
            }
        }

        // The current values are well formed and their revisions unique.
        let all = backend.range(Default::default()).await.expect("range");
        let mut mod_revisions = HashSet::new();
        for kv in &all.kvs {
            check_value(&kv.key, &kv.value).unwrap_or_else(|e| panic!("{ctx}: {:?}: {e}", kv.key));
            assert!(
                mod_revisions.insert(kv.mod_revision),
                "{ctx}: duplicate mod_revision"
            );
            assert!(
                kv.mod_revision <= current
                    && kv.create_revision.is_some_and(|c| c <= kv.mod_revision)
            );
        }

        // The change log has every retained revision exactly once and agrees with the acks,
        // the history and the current values: no batch is half applied.
        let from = compacted.max(Revision::new(2).expect("a revision"));
        let mut stream = backend.watch(b"", Some(from)).await.expect("watch");
        let mut last_event: HashMap<Vec<u8>, KeyValue> = HashMap::new();
        for expected in (from.get()..=current.get()).filter_map(Revision::new) {
            let event = match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
                Ok(Some(Ok(event))) => event,
                other => panic!("{ctx}: log replay ended at {expected}: {other:?}"),
            };
            assert_eq!(
                event.kv.mod_revision, expected,
                "{ctx}: log gap or duplicate"
            );
            check_value(&event.kv.key, &event.kv.value)
                .unwrap_or_else(|e| panic!("{ctx}: event {expected}: {e}"));
            if let Some(ack) = by_revision.get(&expected) {
                assert_eq!(
                    (&ack.key, ack.hash),
                    (&event.kv.key, fnv1a(&event.kv.value)),
                    "{ctx}"
                );
            }
            if let Some(seen) = watched_by_revision.get(&expected) {
                assert_eq!(
                    (&seen.key, seen.hash),
                    (&event.kv.key, fnv1a(&event.kv.value)),
                    "{ctx}: a watched event differs from the log after restart"
                );
            }
            if let Some(prev) = &event.prev {
                assert!(prev.mod_revision < expected);
            }
            last_event.insert(event.kv.key.clone(), event.kv);
        }
        drop(stream);
        for kv in &all.kvs {
            if let Some(logged) = last_event.get(&kv.key) {
                assert_eq!(logged, kv, "{ctx}: log and current value disagree");
            } else {
                assert!(
                    kv.mod_revision < from,
                    "{ctx}: {:?} changed without a log entry",
                    kv.key
                );
            }
            match backend.get(&kv.key, Some(kv.mod_revision)).await {
                Ok((Some(at), _)) => {
                    assert_eq!(&at, kv, "{ctx}: history and current value disagree")
                }
                // A current value older than the log's window cannot be read at its revision.
                Err(BackendError::Compacted { .. }) if kv.mod_revision < compacted => {}
                other => panic!(
                    "{ctx}: history of {:?} at its mod_revision: {other:?}",
                    kv.key
                ),
            }
        }
        assert_eq!(
            last_event.len(),
            last_event
                .keys()
                .filter(|k| all.kvs.iter().any(|kv| &kv.key == *k))
                .count()
        );

        // The store takes new writes.
        let key = format!("post/{round}").into_bytes();
        let value = make_value(&key, round, 99, 0, 0);
        match backend
            .put(&key, value.clone(), Expect::Absent)
            .await
            .expect("post-crash put")
        {
            WriteOutcome::Applied { revision, .. } => assert_eq!(Some(revision), current.next()),
            other => panic!("{ctx}: post-crash put gave {other:?}"),
        }
        let (kv, _) = backend.get(&key, None).await.expect("get");
        assert_eq!(kv.expect("post-crash key").value, value);
        current.next().expect("a revision")
    })
}
