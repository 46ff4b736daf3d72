//! `kill -9` crash test for `SledBackend`: a child process (this test binary again, in writer
//! mode) writes concurrently and prints every acknowledged write; the parent kills it at a random
//! moment, reopens the store and checks that every acknowledged write is there, that the current
//! values, the per-key history and the change log agree (a batch is never half applied), and
//! that the store takes new writes. Many rounds on the same directory.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::backend::{Backend, BackendError, Expect, KeyValue, Revision, WriteOutcome};
use tokio_stream::StreamExt;

/// Set in the child: the store directory. Its presence selects writer mode.
const DIR_ENV: &str = "KEYWARD_CRASH_CHILD_DIR";
/// Set in the child: the round number, so that values differ between rounds.
const ROUND_ENV: &str = "KEYWARD_CRASH_CHILD_ROUND";
const READY: &str = "@@READY";
const ACK: &str = "@@ACK ";

const ROUNDS: u32 = 20;
const WRITER_TASKS: u32 = 8;

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
    let rest = &line[line.find(ACK)? + ACK.len()..];
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
        let backend =
            Arc::new(SledBackend::open(Path::new(&dir), SledOptions::default()).expect("open"));
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
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
    if std::env::var_os(DIR_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store");
    let exe = std::env::current_exe().expect("test binary");
    let child_test = crate::support::test_name(module_path!(), "crash_writer_child");
    let started = Instant::now();
    let mut acks: Vec<Ack> = Vec::new();
    let mut rounds = 0;
    for round in 0..ROUNDS {
        if started.elapsed() > Duration::from_secs(50) {
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
        let round_acks: Vec<Ack> = before_kill
            .iter()
            .cloned()
            .chain(lines.iter())
            .filter_map(|line| parse_ack(&line))
            .collect();
        assert!(
            !round_acks.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        acks.extend(round_acks);
        verify(&path, &acks, round);
        rounds += 1;
    }
    assert!(rounds >= 5, "only {rounds} rounds ran in the time budget");
    println!(
        "{rounds} rounds, {} acknowledged writes checked, {:.1} s",
        acks.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Reopens the store after a crash and checks it against every acknowledged write.
fn verify(path: &Path, acks: &[Ack], round: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ctx = format!("after round {round}");
        let backend =
            SledBackend::open(path, SledOptions::default()).expect("reopen after kill -9");
        let current = backend.current_revision().await.expect("current revision");
        let compacted = backend
            .compacted_revision()
            .await
            .expect("compacted revision");

        // Revisions: unique among acknowledged writes, none beyond the current revision.
        let mut seen = HashSet::new();
        let mut latest: HashMap<&[u8], &Ack> = HashMap::new();
        let by_revision: HashMap<Revision, &Ack> = acks.iter().map(|a| (a.revision, a)).collect();
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
    });
}
