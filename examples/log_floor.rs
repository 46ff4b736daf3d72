//! The floor of a log-structured write path, for comparison with `backend_put`: the same load
//! (16 tasks each read a key and put 1,100 bytes under it, 1,000 keys) against the least a
//! durable revisioned store can do per put. One writer thread takes every queued put as a batch,
//! works out revisions against an in-memory index, appends the batch to one file as one
//! checksummed record, `fdatasync`s it, then publishes the new versions (file offsets) in the
//! index and answers; a read finds the key's newest version in the index and `pread`s its value.
//! Every version stays (no compaction), nothing is ever written twice.
//!
//! With `pipelined` as the third argument, a sync thread does the `fdatasync`s: the writer
//! appends the next batch while the previous one syncs, and one `fdatasync` then covers every
//! record appended before it (records after an unsynced one are never acknowledged before it).
//!
//! `cargo run --release --example log_floor -- DIR [SECONDS] [pipelined]` (DIR is removed
//! first).
//!
//! This is a measurement, not a backend: no watch, no retention, no recovery.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .expect("stat")
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime")) / 100.0
}

/// One version of a key: its revisions and where its value is in the log.
#[derive(Clone, Copy)]
struct Version {
    mod_revision: i64,
    create_revision: i64,
    version: i64,
    offset: u64,
    len: u32,
}

struct Store {
    file: File,
    index: RwLock<BTreeMap<Vec<u8>, Vec<Version>>>,
    writes: mpsc::Sender<(Vec<u8>, Vec<u8>, oneshot::Sender<i64>)>,
}

impl Store {
    fn get(&self, key: &[u8]) -> Option<(Version, Vec<u8>)> {
        let v = *self.index.read().expect("index").get(key)?.last()?;
        let mut buf = vec![0u8; v.len as usize];
        self.file.read_exact_at(&mut buf, v.offset).expect("pread");
        Some((v, buf))
    }
}

fn writer(
    file: File,
    store: Arc<Store>,
    rx: mpsc::Receiver<(Vec<u8>, Vec<u8>, oneshot::Sender<i64>)>,
    commits: Arc<AtomicU64>,
) {
    let mut end = 0u64;
    let mut revision = 0i64;
    let mut buf = Vec::with_capacity(1 << 20);
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        buf.clear();
        buf.extend_from_slice(&[0u8; 16]); // length, checksum, first revision
        let mut planned = Vec::with_capacity(batch.len());
        {
            let index = store.index.read().expect("index");
            for (key, value, _) in &batch {
                revision += 1;
                let (create, version) = match index.get(key).and_then(|v| v.last()) {
                    Some(v) => (v.create_revision, v.version + 1),
                    None => (revision, 1),
                };
                buf.extend_from_slice(&(key.len() as u32).to_be_bytes());
                buf.extend_from_slice(key);
                buf.extend_from_slice(&(value.len() as u32).to_be_bytes());
                let offset = end + buf.len() as u64;
                buf.extend_from_slice(value);
                planned.push(Version {
                    mod_revision: revision,
                    create_revision: create,
                    version,
                    offset,
                    len: value.len() as u32,
                });
            }
        }
        let len = (buf.len() - 16) as u32;
        let crc = crc32c::crc32c(&buf[16..]);
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        buf[4..8].copy_from_slice(&crc.to_be_bytes());
        buf[8..16].copy_from_slice(&(revision - batch.len() as i64 + 1).to_be_bytes());
        file.write_all_at(&buf, end).expect("write");
        file.sync_data().expect("fdatasync");
        end += buf.len() as u64;
        commits.fetch_add(1, Ordering::Relaxed);
        {
            let mut index = store.index.write().expect("index");
            for ((key, _, _), v) in batch.iter().zip(&planned) {
                index.entry(key.clone()).or_default().push(*v);
            }
        }
        for ((_, _, reply), v) in batch.into_iter().zip(planned) {
            let _ = reply.send(v.mod_revision);
        }
    }
}

/// A batch appended but not yet synced: its keys, versions and where to answer.
type Appended = Vec<(Vec<u8>, Version, oneshot::Sender<i64>)>;

/// [`writer`] with the `fdatasync`s on their own thread, so that appends and syncs overlap.
fn pipelined_writer(
    file: File,
    store: Arc<Store>,
    rx: mpsc::Receiver<(Vec<u8>, Vec<u8>, oneshot::Sender<i64>)>,
    commits: Arc<AtomicU64>,
) {
    let (synced_tx, synced_rx) = mpsc::channel::<Appended>();
    let syncer = {
        let (file, store) = (file.try_clone().expect("clone"), store.clone());
        std::thread::spawn(move || {
            while let Ok(first) = synced_rx.recv() {
                // Every batch queued now was written before it was queued: one sync covers all.
                let mut batches = vec![first];
                while let Ok(more) = synced_rx.try_recv() {
                    batches.push(more);
                }
                file.sync_data().expect("fdatasync");
                commits.fetch_add(1, Ordering::Relaxed);
                {
                    let mut index = store.index.write().expect("index");
                    for (key, v, _) in batches.iter().flatten() {
                        index.entry(key.clone()).or_default().push(*v);
                    }
                }
                for (_, v, reply) in batches.into_iter().flatten() {
                    let _ = reply.send(v.mod_revision);
                }
            }
        })
    };
    let mut end = 0u64;
    let mut revision = 0i64;
    let mut latest: std::collections::HashMap<Vec<u8>, Version> = std::collections::HashMap::new();
    let mut buf = Vec::with_capacity(1 << 20);
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        buf.clear();
        buf.extend_from_slice(&[0u8; 16]);
        let mut appended = Vec::with_capacity(batch.len());
        for (key, value, reply) in batch {
            revision += 1;
            let (create, version) = match latest.get(&key) {
                Some(v) => (v.create_revision, v.version + 1),
                None => (revision, 1),
            };
            buf.extend_from_slice(&(key.len() as u32).to_be_bytes());
            buf.extend_from_slice(&key);
            buf.extend_from_slice(&(value.len() as u32).to_be_bytes());
            let offset = end + buf.len() as u64;
            buf.extend_from_slice(&value);
            let v = Version {
                mod_revision: revision,
                create_revision: create,
                version,
                offset,
                len: value.len() as u32,
            };
            latest.insert(key.clone(), v);
            appended.push((key, v, reply));
        }
        let len = (buf.len() - 16) as u32;
        let crc = crc32c::crc32c(&buf[16..]);
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        buf[4..8].copy_from_slice(&crc.to_be_bytes());
        buf[8..16].copy_from_slice(&(revision - appended.len() as i64 + 1).to_be_bytes());
        file.write_all_at(&buf, end).expect("write");
        end += buf.len() as u64;
        synced_tx.send(appended).expect("syncer");
    }
    drop(synced_tx);
    syncer.join().expect("syncer");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::args().nth(1).expect("dir");
    let secs: u64 = std::env::args()
        .nth(2)
        .map_or(10, |s| s.parse().expect("secs"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = std::path::Path::new(&dir).join("log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let (tx, rx) = mpsc::channel();
    let store = Arc::new(Store {
        file: file.try_clone().expect("clone"),
        index: RwLock::new(BTreeMap::new()),
        writes: tx,
    });
    let commits = Arc::new(AtomicU64::new(0));
    {
        let (store, commits) = (store.clone(), commits.clone());
        if std::env::args().nth(3).as_deref() == Some("pipelined") {
            std::thread::spawn(move || pipelined_writer(file, store, rx, commits));
        } else {
            std::thread::spawn(move || writer(file, store, rx, commits));
        }
    }
    let value = vec![7u8; 1100];
    let put = |store: &Store, key: Vec<u8>, value: Vec<u8>| {
        let (reply, rx) = oneshot::channel();
        store.writes.send((key, value, reply)).expect("send");
        rx
    };
    for i in 0..1000u32 {
        let key = format!("/registry/secrets/bench/key-{i:05}").into_bytes();
        put(&store, key, value.clone()).await.expect("put");
    }
    let done = Arc::new(AtomicU64::new(0));
    let (t0, c0) = (Instant::now(), cpu_secs());
    let deadline = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for t in 0..16u32 {
        let (store, done, value) = (store.clone(), done.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while Instant::now() < deadline {
                let key = format!("/registry/secrets/bench/key-{:05}", (i * 7919) % 1000);
                let cur = store.get(key.as_bytes());
                assert!(cur.is_some());
                put(&store, key.into_bytes(), value.clone())
                    .await
                    .expect("put");
                done.fetch_add(1, Ordering::Relaxed);
                i += 16;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let (el, cpu) = (t0.elapsed().as_secs_f64(), cpu_secs() - c0);
    let n = done.load(Ordering::Relaxed) as f64;
    std::io::stdout().flush().expect("flush");
    println!(
        "{:.0} puts/s, {:.1} us cpu/put, commits {}",
        n / el,
        cpu * 1e6 / n,
        commits.load(Ordering::Relaxed)
    );
}
