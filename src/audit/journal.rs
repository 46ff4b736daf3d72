//! The sync journal: how a synced audit log makes a batch of lines durable without an `fsync`
//! of the log itself.
//!
//! The log is a file that grows with every line, and making an append to a growing file durable
//! costs a commit of the file system's metadata journal (on this project's ext4 VM, 1.6 KB per
//! sync: 123–267 µs when quiet, 3.7 ms while other builds wrote). So, as the store's write-ahead
//! log does, a batch's bytes are also written as one record into `.<log>.journal` beside the
//! log, a file of zeros written and synced once when it is created, and only the journal is
//! `fdatasync`ed: overwriting blocks that already exist needs no metadata commit (99–120 µs).
//! The log file itself is synced when the journal is full (then the journal starts again at its
//! beginning), at rotation and at the first line of each file.
//! Reopening a log applies the journal's records to it first, so every acknowledged line is in
//! the log again before its torn tail is looked at.
//!
//! A record, back to back from offset 0:
//!
//! ```text
//! "KWAJ" ‖ sha256(rest)[..8] ‖ log id (16 bytes) ‖ be64(file index) ‖ be64(offset) ‖ be32(len) ‖ bytes
//! ```
//!
//! `offset` is where `bytes` go in the file with that index of the log with that id. Records
//! are read from the start while they check out, have the same log id and file index as the
//! first, and each starts in the file where the previous one ended; stale records left from
//! before the journal last started again can never continue that chain (their offsets lie below
//! the point where the log was synced, or in another file).

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::crypto::sha256;

const MAGIC: &[u8; 4] = b"KWAJ";
/// Magic, check, log id, file index, offset, length.
const HEADER: usize = 4 + 8 + 16 + 8 + 8 + 4;
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

/// A record read back: `bytes` belong at `offset` of the file `target` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub target: Target,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// The journal file beside a synced log.
pub(super) struct Journal {
    file: File,
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
    pub fn open(log: &Path) -> io::Result<(Journal, Vec<Record>)> {
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
            read_records(&all)
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
        Ok((Journal { file, pos: 0, size }, records))
    }

    /// Writes `bytes` (which belong at `offset` of `target`'s file) as the next record and
    /// makes it durable. `Ok(false)`, with nothing written, when it does not fit: the caller
    /// syncs the log and calls [`Journal::restart`].
    pub fn append(&mut self, target: Target, offset: u64, bytes: &[u8]) -> io::Result<bool> {
        let Ok(len) = u32::try_from(bytes.len()) else {
            return Ok(false);
        };
        let total = (HEADER + bytes.len()) as u64;
        if self.pos + total > self.size {
            return Ok(false);
        }
        let mut record = Vec::with_capacity(total as usize);
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(&[0; 8]);
        record.extend_from_slice(&target.log_id);
        record.extend_from_slice(&target.file_index.to_be_bytes());
        record.extend_from_slice(&offset.to_be_bytes());
        record.extend_from_slice(&len.to_be_bytes());
        record.extend_from_slice(bytes);
        let check = sha256(&record[12..]);
        record[4..12].copy_from_slice(&check[..8]);
        self.file.write_all_at(&record, self.pos)?;
        self.file.sync_data()?;
        self.pos += total;
        Ok(true)
    }

    /// Starts again at the journal's beginning: everything recorded so far is durable in the
    /// log itself.
    pub fn restart(&mut self) {
        self.pos = 0;
    }
}

/// The chain of records at the start of `all` (see the module docs).
fn read_records(all: &[u8]) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    let mut at = 0usize;
    while let Some(record) = read_record(&all[at..]) {
        if let Some(last) = records.last() {
            let continues = last.target == record.target
                && last.offset + last.bytes.len() as u64 == record.offset;
            if !continues {
                break;
            }
        }
        at += HEADER + record.bytes.len();
        records.push(record);
    }
    records
}

fn read_record(at: &[u8]) -> Option<Record> {
    if at.len() < HEADER || &at[..4] != MAGIC {
        return None;
    }
    let len = u32::from_be_bytes(at[44..48].try_into().ok()?) as usize;
    let end = HEADER.checked_add(len)?;
    if at.len() < end || sha256(&at[12..end])[..8] != at[4..12] {
        return None;
    }
    Some(Record {
        target: Target {
            log_id: at[12..28].try_into().ok()?,
            file_index: u64::from_be_bytes(at[28..36].try_into().ok()?),
        },
        offset: u64::from_be_bytes(at[36..44].try_into().ok()?),
        bytes: at[HEADER..end].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (mut j, records) = Journal::open(&log).unwrap();
        assert!(records.is_empty());
        assert_eq!(
            std::fs::metadata(journal_path(&log)).unwrap().len(),
            JOURNAL_BYTES
        );
        assert!(j.append(target(0), 100, b"first\n").unwrap());
        assert!(j.append(target(0), 106, b"second\n").unwrap());
        drop(j);
        let (mut j, records) = Journal::open(&log).unwrap();
        assert_eq!(
            records
                .iter()
                .map(|r| (r.offset, r.bytes.clone()))
                .collect::<Vec<_>>(),
            [(100, b"first\n".to_vec()), (106, b"second\n".to_vec())]
        );
        // Started again after the log was synced at 113: the stale records behind the new one
        // do not continue it.
        assert!(j.append(target(0), 113, b"third\n").unwrap());
        drop(j);
        let (mut j, records) = Journal::open(&log).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].offset, 113);
        // Another file of the log does not continue the chain either.
        j.restart();
        assert!(j.append(target(1), 0, b"x").unwrap());
        assert!(j.append(target(0), 1, b"y").unwrap());
        drop(j);
        let (_, records) = Journal::open(&log).unwrap();
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn a_torn_or_edited_record_ends_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let (mut j, _) = Journal::open(&log).unwrap();
        assert!(j.append(target(0), 0, b"one\n").unwrap());
        assert!(j.append(target(0), 4, b"two\n").unwrap());
        drop(j);
        let path = journal_path(&log);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = HEADER + 4;
        bytes[second + HEADER + 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, records) = Journal::open(&log).unwrap();
        assert_eq!(records.len(), 1);
        // Every cut of a record is refused, never a panic.
        for cut in 0..bytes.len().min(2 * HEADER + 8) {
            let _ = read_records(&bytes[..cut]);
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
        let (mut j, _) = Journal::open(&dir.path().join("audit.log")).unwrap();
        let big = vec![b'x'; JOURNAL_BYTES as usize];
        assert!(!j.append(target(0), 0, &big).unwrap());
        assert!(j.append(target(0), 0, b"small").unwrap());
    }
}
