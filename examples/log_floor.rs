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
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};

use tokio::sync::oneshot;

#[path = "support/load.rs"]
mod load;

/// One version of a key: its revisions and where its value is in the log.
#[derive(Clone, Copy)]
struct Version {
    mod_revision: i64,
    create_revision: i64,
    version: i64,
    offset: u64,
    len: u32,
}

/// A put on its way to the writer: key, value, where to answer.
type Put = (Vec<u8>, Vec<u8>, oneshot::Sender<i64>);

struct Store {
    file: File,
    index: RwLock<BTreeMap<Vec<u8>, Vec<Version>>>,
    writes: mpsc::Sender<Put>,
}

impl Store {
    fn get(&self, key: &[u8]) -> Option<(Version, Vec<u8>)> {
        let v = *self.index.read().expect("index").get(key)?.last()?;
        let mut buf = vec![0u8; v.len as usize];
        self.file.read_exact_at(&mut buf, v.offset).expect("pread");
        Some((v, buf))
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> i64 {
        let (reply, rx) = oneshot::channel();
        self.writes.send((key, value, reply)).expect("send");
        rx.await.expect("put")
    }

    fn publish(&self, versions: &[(Vec<u8>, Version)]) {
        let mut index = self.index.write().expect("index");
        for (key, v) in versions {
            index.entry(key.clone()).or_default().push(*v);
        }
    }
}

/// Every put queued now, waiting for the first; `None` once the store is gone.
fn take_batch(rx: &mpsc::Receiver<Put>) -> Option<Vec<Put>> {
    let mut batch = vec![rx.recv().ok()?];
    batch.extend(rx.try_iter());
    Some(batch)
}

/// The log file: each batch one record, `be32(len) ‖ be32(crc32c) ‖ be64(first revision) ‖
/// (be32(key len) ‖ key ‖ be32(value len) ‖ value)*`, written but not synced.
struct Log {
    file: File,
    end: u64,
    revision: i64,
    buf: Vec<u8>,
}

impl Log {
    /// Appends `batch`; `latest` gives each key's newest version (for its create revision and
    /// version). Returns each put's new version.
    fn append(&mut self, batch: &[Put], latest: impl Fn(&[u8]) -> Option<Version>) -> Vec<Version> {
        let first = self.revision + 1;
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 16]);
        let mut versions = Vec::with_capacity(batch.len());
        for (key, value, _) in batch {
            self.revision += 1;
            let (create_revision, version) = match latest(key) {
                Some(v) => (v.create_revision, v.version + 1),
                None => (self.revision, 1),
            };
            self.buf
                .extend_from_slice(&(key.len() as u32).to_be_bytes());
            self.buf.extend_from_slice(key);
            self.buf
                .extend_from_slice(&(value.len() as u32).to_be_bytes());
            let offset = self.end + self.buf.len() as u64;
            self.buf.extend_from_slice(value);
            versions.push(Version {
                mod_revision: self.revision,
                create_revision,
                version,
                offset,
                len: value.len() as u32,
            });
        }
        let len = (self.buf.len() - 16) as u32;
        let crc = crc32c::crc32c(&self.buf[16..]);
        self.buf[0..4].copy_from_slice(&len.to_be_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_be_bytes());
        self.buf[8..16].copy_from_slice(&first.to_be_bytes());
        self.file.write_all_at(&self.buf, self.end).expect("write");
        self.end += self.buf.len() as u64;
        versions
    }
}

/// Answers each put of `batches` with its revision.
fn answer(batches: Vec<(Vec<Put>, Vec<Version>)>) {
    for (batch, versions) in batches {
        for ((_, _, reply), v) in batch.into_iter().zip(versions) {
            let _ = reply.send(v.mod_revision);
        }
    }
}

/// Keys and versions of a batch, to publish.
fn published(batch: &[Put], versions: &[Version]) -> Vec<(Vec<u8>, Version)> {
    batch
        .iter()
        .map(|p| p.0.clone())
        .zip(versions.iter().copied())
        .collect()
}

/// One batch at a time: append, `fdatasync`, publish, answer.
fn writer(mut log: Log, store: Arc<Store>, rx: mpsc::Receiver<Put>, commits: Arc<AtomicU64>) {
    while let Some(batch) = take_batch(&rx) {
        let versions = {
            let index = store.index.read().expect("index");
            log.append(&batch, |k| index.get(k).and_then(|v| v.last()).copied())
        };
        log.file.sync_data().expect("fdatasync");
        commits.fetch_add(1, Ordering::Relaxed);
        store.publish(&published(&batch, &versions));
        answer(vec![(batch, versions)]);
    }
}

/// [`writer`] with the `fdatasync`s on their own thread, so that appends and syncs overlap.
fn pipelined_writer(
    mut log: Log,
    store: Arc<Store>,
    rx: mpsc::Receiver<Put>,
    commits: Arc<AtomicU64>,
) {
    let (synced_tx, synced_rx) = mpsc::channel::<(Vec<Put>, Vec<Version>)>();
    let syncer = {
        let file = log.file.try_clone().expect("clone");
        let store = store.clone();
        std::thread::spawn(move || {
            while let Ok(first) = synced_rx.recv() {
                // Every batch queued now was written before it was queued: one sync covers all.
                let mut batches = vec![first];
                batches.extend(synced_rx.try_iter());
                file.sync_data().expect("fdatasync");
                commits.fetch_add(1, Ordering::Relaxed);
                for (batch, versions) in &batches {
                    store.publish(&published(batch, versions));
                }
                answer(batches);
            }
        })
    };
    let mut latest: HashMap<Vec<u8>, Version> = HashMap::new();
    while let Some(batch) = take_batch(&rx) {
        let versions = log.append(&batch, |k| latest.get(k).copied());
        for ((key, _, _), v) in batch.iter().zip(&versions) {
            latest.insert(key.clone(), *v);
        }
        synced_tx.send((batch, versions)).expect("syncer");
    }
    drop(synced_tx);
    syncer.join().expect("syncer");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (dir, secs) = load::args();
    std::fs::create_dir_all(&dir).expect("dir");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(std::path::Path::new(&dir).join("log"))
        .expect("open");
    let (tx, rx) = mpsc::channel();
    let store = Arc::new(Store {
        file: file.try_clone().expect("clone"),
        index: RwLock::new(BTreeMap::new()),
        writes: tx,
    });
    let commits = Arc::new(AtomicU64::new(0));
    let log = Log {
        file,
        end: 0,
        revision: 0,
        buf: Vec::with_capacity(1 << 20),
    };
    {
        let (store, commits) = (store.clone(), commits.clone());
        if std::env::args().nth(3).as_deref() == Some("pipelined") {
            std::thread::spawn(move || pipelined_writer(log, store, rx, commits));
        } else {
            std::thread::spawn(move || writer(log, store, rx, commits));
        }
    }
    for i in 0..load::KEYS {
        store.put(load::key(i), vec![7u8; load::VALUE_BYTES]).await;
    }
    let (rate, cpu) = load::drive(store.clone(), secs, |store, key, value| async move {
        assert!(store.get(&key).is_some());
        store.put(key, value).await;
    })
    .await;
    println!(
        "{rate:.0} puts/s, {cpu:.1} us cpu/put, commits {}",
        commits.load(Ordering::Relaxed)
    );
}
