//! The sync journal: how a synced audit log makes a batch of lines durable without an `fsync`
//! of the log itself, and how a restart after a crash knows which of the log's last lines the
//! writer acknowledged.
//!
//! The log is a file that grows with every line, and making an append to a growing file durable
//! costs a commit of the file system's metadata journal (on this project's ext4 VM, 1.6 KB per
//! sync: 123–267 µs when quiet, 3.7 ms while other builds wrote). So, as the store's write-ahead
//! log does, a batch's bytes are also written as one record into `.<log>.journal` beside the
//! log, a file of zeros written and synced once when it is created, and only the journal is
//! `fdatasync`ed: overwriting blocks that already exist needs no metadata commit (99–120 µs).
//! The log file itself is synced when the journal is full (then the journal starts again at its
//! beginning, with an *anchor*: a record of no bytes that says how far the log was synced), at
//! rotation and at the first line of each file.
//! Reopening a log applies the journal's records to it first, so every acknowledged line is in
//! the log again before its torn tail is looked at.
//!
//! A record, back to back from offset 0:
//!
//! ```text
//! "KWA2" ‖ sha256(rest)[..8] ‖ mac (32 bytes) ‖ log id (16 bytes) ‖ be64(file index)
//!        ‖ be64(offset) ‖ be32(len) ‖ head (32 bytes) ‖ bytes
//! ```
//!
//! `offset` is where `bytes` go in the file with that index of the log with that id; `head` is
//! the chain's head after them (the SHA-256 of their last line; for an anchor, of the line that
//! ends at `offset`). `mac` is HMAC-SHA256, under a key only the writer can derive (from its
//! checkpoint signing key), of the log id, file index, offset, length and head: the head binds
//! every byte of the lines before it through their chain links, so a record whose `mac` checks
//! out vouches for the log up to its end, and nobody without the key can make one for lines
//! they added or changed while the writer was stopped. The unkeyed check finds a record torn by
//! a crash.
//!
//! Records are read from the start while they check out, each in the log and file of the one
//! before (or the next file of that log, from its offset 0: a rotation) and starting where the
//! previous one ended; stale records left from before the journal last started again can never
//! continue that chain (their offsets lie below the anchor's, or in another file).

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::crypto::{hmac_sha256, hmac_sha256_verify, sha256, Key32};

const MAGIC: &[u8; 4] = b"KWA2";
/// Magic, check, mac, log id, file index, offset, length, head.
const HEADER: usize = 4 + 8 + 32 + 16 + 8 + 8 + 4 + 32;
/// Where the fields the mac covers start (log id to head), and where they end.
const MACED: std::ops::Range<usize> = 44..HEADER;
/// What the writer signs to derive the journal's key (never written anywhere).
const KEY_CONTEXT: &[u8] = b"keyward audit sync journal key v1\n";
/// The journal's size: batches are appended until the next does not fit.
pub(super) const JOURNAL_BYTES: u64 = 16 * 1024 * 1024;

/// Where a journal's records belong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Target {
    /// The log's id (its `open` checkpoint's `log`, a UUID).
    pub log_id: [u8; 16],
    /// The file's index in the log.
    pub file_index: u64,
}

/// A record read back: `bytes` belong at `offset` of the file `target` names, and `head` is
/// the chain's head after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub target: Target,
    pub offset: u64,
    pub bytes: Vec<u8>,
    pub head: [u8; 32],
    /// Whether its mac checks out under the key the journal was opened with: written by this
    /// writer's key, not made or changed by someone else.
    pub authentic: bool,
}

impl Record {
    /// Where its bytes end in its file.
    pub fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

/// The key that makes records authentic: derived from the checkpoint signing key (an Ed25519
/// signature is a function of the key and the message), so the same key comes back after a
/// restart and nobody without the signing key can compute it.
pub(super) fn journal_key(
    signer: &dyn super::chain::CheckpointSigner,
) -> Result<Key32, super::AuditError> {
    let mut sig = zeroize::Zeroizing::new(signer.sign(KEY_CONTEXT)?);
    let mut key = zeroize::Zeroizing::new(sha256(sig.as_slice()));
    zeroize::Zeroize::zeroize(&mut *sig);
    Ok(Key32::from_bytes(&mut key))
}

/// The journal file beside a synced log.
pub(super) struct Journal {
    file: File,
    key: Key32,
    /// Where the next record goes.
    pos: u64,
    size: u64,
}

/// `.<log's name>.journal` beside the log: hidden, so that tools collecting `audit*.log*`
/// never read it as a log.
pub(super) fn journal_path(log: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(
        log.file_name()
            .unwrap_or_else(|| std::ffi::OsStr::new("audit")),
    );
    name.push(".journal");
    log.with_file_name(name)
}

impl Journal {
    /// Opens the journal beside `log` (creating it, zero-filled and synced, 0600) and returns
    /// the records it holds. The next record is written at its start: the caller applies the
    /// records and syncs the log before it appends anything.
    pub fn open(log: &Path, key: Key32) -> io::Result<(Journal, Vec<Record>)> {
        let path = journal_path(log);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(super::file::NO_FOLLOW)
            .open(&path)?;
        let mode = file.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:04o}", mode & 0o7777), "the audit log's sync journal is readable or writable by other users; keyward creates it 0600");
        }
        let len = file.metadata()?.len();
        let records = if len > 0 {
            let mut all = Vec::with_capacity(len as usize);
            file.read_to_end(&mut all)?;
            read_records(&all, &key)
        } else {
            Vec::new()
        };
        if len < JOURNAL_BYTES {
            let filled = (|| {
                let zeros = vec![0u8; 1 << 20];
                let mut at = len;
                while at < JOURNAL_BYTES {
                    let n = (JOURNAL_BYTES - at).min(zeros.len() as u64) as usize;
                    file.write_all_at(&zeros[..n], at)?;
                    at += n as u64;
                }
                file.sync_all()?;
                let dir = match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir,
                    _ => Path::new("."),
                };
                File::open(dir).and_then(|d| d.sync_all())
            })();
            if let Err(e) = filled {
                // A journal this call created is not left half made (on a full disk, taking
                // the space the log needs); one that held records keeps them.
                if len == 0 {
                    let _ = std::fs::remove_file(&path);
                } else {
                    let _ = file.set_len(len);
                }
                return Err(e);
            }
        }
        let size = len.max(JOURNAL_BYTES);
        Ok((
            Journal {
                file,
                key,
                pos: 0,
                size,
            },
            records,
        ))
    }

    /// Writes `bytes` (which belong at `offset` of `target`'s file, and after which the
    /// chain's head is `head`) as the next record and makes it durable. `Ok(false)`, with
    /// nothing written, when it does not fit: the caller syncs the log and calls
    /// [`Journal::restart`].
    pub fn append(
        &mut self,
        target: Target,
        offset: u64,
        bytes: &[u8],
        head: &[u8; 32],
    ) -> io::Result<bool> {
        let Ok(len) = u32::try_from(bytes.len()) else {
            return Ok(false);
        };
        let total = (HEADER + bytes.len()) as u64;
        if self.pos + total > self.size {
            return Ok(false);
        }
        let record = self.record(target, offset, len, head, bytes);
        self.file.write_all_at(&record, self.pos)?;
        self.file.sync_data()?;
        self.pos += total;
        Ok(true)
    }

    /// Starts again at the journal's beginning, once everything recorded so far is durable in
    /// the log itself: with an anchor that says `target`'s file is durable up to `offset`,
    /// where the chain's head is `head`.
    pub fn restart(&mut self, target: Target, offset: u64, head: &[u8; 32]) -> io::Result<()> {
        let anchor = self.record(target, offset, 0, head, &[]);
        self.file.write_all_at(&anchor, 0)?;
        self.file.sync_data()?;
        self.pos = anchor.len() as u64;
        Ok(())
    }

    fn record(
        &self,
        target: Target,
        offset: u64,
        len: u32,
        head: &[u8; 32],
        bytes: &[u8],
    ) -> Vec<u8> {
        let mut record = Vec::with_capacity(HEADER + bytes.len());
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(&[0; 8 + 32]);
        record.extend_from_slice(&target.log_id);
        record.extend_from_slice(&target.file_index.to_be_bytes());
        record.extend_from_slice(&offset.to_be_bytes());
        record.extend_from_slice(&len.to_be_bytes());
        record.extend_from_slice(head);
        let mac = hmac_sha256(&self.key, &record[MACED]);
        record[12..44].copy_from_slice(&mac);
        record.extend_from_slice(bytes);
        let check = sha256(&record[12..]);
        record[4..12].copy_from_slice(&check[..8]);
        record
    }
}

/// The chain of records at the start of `all` (see the module docs).
fn read_records(all: &[u8], key: &Key32) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    let mut at = 0usize;
    while let Some(record) = read_record(&all[at..], key) {
        if let Some(last) = records.last() {
            let same_file = last.target == record.target && last.end() == record.offset;
            let next_file = last.target.log_id == record.target.log_id
                && last.target.file_index.checked_add(1) == Some(record.target.file_index)
                && record.offset == 0;
            if !same_file && !next_file {
                break;
            }
        }
        at += HEADER + record.bytes.len();
        records.push(record);
    }
    records
}

fn read_record(at: &[u8], key: &Key32) -> Option<Record> {
    if at.len() < HEADER || &at[..4] != MAGIC {
        return None;
    }
    let len = u32::from_be_bytes(at[76..80].try_into().ok()?) as usize;
    let end = HEADER.checked_add(len)?;
    if at.len() < end || sha256(&at[12..end])[..8] != at[4..12] {
        return None;
    }
    Some(Record {
        target: Target {
            log_id: at[44..60].try_into().ok()?,
            file_index: u64::from_be_bytes(at[60..68].try_into().ok()?),
        },
        offset: u64::from_be_bytes(at[68..76].try_into().ok()?),
        head: at[80..112].try_into().ok()?,
        authentic: hmac_sha256_verify(key, &at[MACED], &at[12..44]),
        bytes: at[HEADER..end].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key32 {
        Key32::from_bytes(&mut [9; 32])
    }

    const H: [u8; 32] = [5; 32];

    fn target(file_index: u64) -> Target {
        Target {
            log_id: [7; 16],
            file_index,
        }
    }

    #[test]
    fn records_come_back_in_order_until_the_chain_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let (mut j, records) = Journal::open(&log, key()).unwrap();
        assert!(records.is_empty());
        assert_eq!(
            std::fs::metadata(journal_path(&log)).unwrap().len(),
            JOURNAL_BYTES
        );
        assert!(j.append(target(0), 100, b"first\n", &H).unwrap());
        assert!(j.append(target(0), 106, b"second\n", &H).unwrap());
        drop(j);
        let (mut j, records) = Journal::open(&log, key()).unwrap();
        assert_eq!(
            records
                .iter()
                .map(|r| (r.offset, r.bytes.clone()))
                .collect::<Vec<_>>(),
            [(100, b"first\n".to_vec()), (106, b"second\n".to_vec())]
        );
        // Started again after the log was synced at 113: the stale records behind the new one
        // do not continue it.
        assert!(j.append(target(0), 113, b"third\n", &H).unwrap());
        drop(j);
        let (mut j, records) = Journal::open(&log, key()).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].offset, 113);
        // Started again with an anchor; the next file of the log from its start (a rotation)
        // continues the chain, any other place in another file does not.
        j.restart(target(0), 119, &H).unwrap();
        assert!(j.append(target(1), 0, b"x", &H).unwrap());
        assert!(j.append(target(1), 1, b"y", &H).unwrap());
        assert!(j.append(target(2), 5, b"z", &H).unwrap());
        drop(j);
        let (_, records) = Journal::open(&log, key()).unwrap();
        assert_eq!(
            records
                .iter()
                .map(|r| (r.target.file_index, r.offset, r.bytes.clone()))
                .collect::<Vec<_>>(),
            [
                (0, 119, vec![]),
                (1, 0, b"x".to_vec()),
                (1, 1, b"y".to_vec())
            ]
        );
        assert!(records.iter().all(|r| r.authentic && r.head == H));
    }

    #[test]
    fn records_are_authentic_only_under_the_key_they_were_made_with() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let (mut j, _) = Journal::open(&log, key()).unwrap();
        assert!(j.append(target(0), 0, b"one\n", &H).unwrap());
        drop(j);
        let (_, records) = Journal::open(&log, Key32::from_bytes(&mut [8; 32])).unwrap();
        assert_eq!(records.len(), 1);
        assert!(!records[0].authentic);
        // A changed head, with the unkeyed check made to fit, is read but not authentic.
        let path = journal_path(&log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER - 1] ^= 1;
        let check = sha256(&bytes[12..HEADER + 4]);
        bytes[4..12].copy_from_slice(&check[..8]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, records) = Journal::open(&log, key()).unwrap();
        assert_eq!(records.len(), 1);
        assert!(!records[0].authentic);
    }

    #[test]
    fn a_torn_or_edited_record_ends_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let (mut j, _) = Journal::open(&log, key()).unwrap();
        assert!(j.append(target(0), 0, b"one\n", &H).unwrap());
        assert!(j.append(target(0), 4, b"two\n", &H).unwrap());
        drop(j);
        let path = journal_path(&log);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = HEADER + 4;
        bytes[second + HEADER + 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, records) = Journal::open(&log, key()).unwrap();
        assert_eq!(records.len(), 1);
        // Every cut of a record is refused, never a panic.
        for cut in 0..bytes.len().min(2 * HEADER + 8) {
            let _ = read_records(&bytes[..cut], &key());
        }
    }

    #[test]
    fn a_log_named_without_a_directory_keeps_its_journal_in_the_current_one() {
        assert_eq!(
            journal_path(Path::new("audit.log")),
            Path::new(".audit.log.journal")
        );
        assert_eq!(
            journal_path(Path::new("/var/log/keyward/audit.log")),
            Path::new("/var/log/keyward/.audit.log.journal")
        );
    }

    #[test]
    fn a_batch_that_does_not_fit_is_refused_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(&dir.path().join("audit.log"), key()).unwrap();
        let big = vec![b'x'; JOURNAL_BYTES as usize];
        assert!(!j.append(target(0), 0, &big, &H).unwrap());
        assert!(j.append(target(0), 0, b"small", &H).unwrap());
    }
}
