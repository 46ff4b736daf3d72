//! The write-ahead log: a batch of changes becomes durable as **one** record appended to the
//! current segment and **one** `fdatasync`; sled is updated in memory and made durable only at
//! checkpoints. This module owns the byte format, the segment files and the recovery scan; the
//! writer decides when to append, sync, rotate and checkpoint.
//!
//! # Files
//!
//! `wal/` in the store directory holds segments named `<base>.wal`, `base` the first revision
//! they may hold as 20 decimal digits (so names sort by revision), and at most one `spare`: a
//! segment-sized file of zeros, already `fsync`ed, that the next rotation renames into place.
//! Segments are zero-filled before use (overwriting written blocks lets `fdatasync` skip the
//! file system's metadata journal; appending or filling preallocated extents would not: on this
//! project's ext4 VM an append of 2 KiB plus `fdatasync` took ~100 µs into a zeroed file against
//! ~140–175 µs into a growing or `fallocate`d one). The first segment after open is 1 MiB and
//! each next one twice the last, up to [`SEGMENT_BYTES`], so a store written little keeps a
//! small log. A record that does not fit in the rest of a segment starts a new one (a record
//! larger than a whole segment goes into an empty one, which grows).
//!
//! A segment starts with a 24-byte header: `"KWWAL\0\0\x01"` (magic and format 1),
//! `be64(base)`, CRC32C of those 16 bytes (`le32`), 4 zero bytes. Then records, back to back:
//!
//! ```text
//! le32(len) ‖ le32(crc32c(le32(len) ‖ payload)) ‖ payload
//! payload = 01 ‖ be64(first revision) ‖ be32(count) ‖ count × change
//! change  = 01 ‖ be32(key len) ‖ key ‖ be32(value len) ‖ value      (a put)
//!         | 02 ‖ be32(key len) ‖ key                                 (a delete)
//! ```
//!
//! A record is one batch of applied changes; change `i` has revision `first + i`. The first
//! record of a segment starts at its base, and each record starts right after the previous one.
//!
//! # Recovery
//!
//! Records are read in order. The first frame that does not check out (length zero or past the
//! end of the file, CRC mismatch, revision not the next one) ends the log, and then:
//!
//! - if any well-formed record of a later revision follows anywhere in that segment, or the
//!   segment is not the last one and holds anything but zeros after that point, the log is
//!   corrupt: [`BackendError::Corrupt`] names the file and the offset, and nothing is skipped;
//! - otherwise it is the torn tail of the last segment (a record whose `fdatasync` never
//!   finished, so never acknowledged): it is cut.
//!
//! This rule is sound because the writer appends a record only once every earlier record is
//! synced: at most the last record can be torn.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::io_error;
use crate::backend::files::{sync_path, zero_filled};
use crate::backend::frame::{checks_out, put_len_bytes, seal, FRAME_LEN};
use crate::backend::{BackendError, Revision};

/// The log's directory inside the store directory.
pub(super) const WAL_DIR: &str = "wal";
/// Size of a segment file (zero-filled ahead of use).
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;
const MAGIC: [u8; 8] = *b"KWWAL\0\0\x01";
pub(super) const HEADER_LEN: u64 = 24;
/// Payload bytes before the first change: kind, first revision, count.
const PAYLOAD_HEAD: usize = 13;
/// A longer record is not believed (the writer caps a batch far below this).
const MAX_PAYLOAD: usize = 1 << 30;
const KIND_BATCH: u8 = 1;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const SPARE: &str = "spare";
const SPARE_TMP: &str = "spare.tmp";
const SEGMENT_SUFFIX: &str = ".wal";

/// CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`) of `bytes`, continuing from `crc`
/// (0 to start): the CPU's CRC32 instruction where there is one (SSE 4.2, ARMv8), else tables.
pub(super) fn crc32c(crc: u32, bytes: &[u8]) -> u32 {
    ::crc32c::crc32c_append(crc, bytes)
}

/// Builds records in a reusable buffer: [`RecordBuilder::begin`], a [`RecordBuilder::put`] or
/// [`RecordBuilder::delete`] per change, then [`RecordBuilder::finish`] for the framed bytes.
#[derive(Default)]
pub(super) struct RecordBuilder {
    buf: Vec<u8>,
    count: u32,
}

impl RecordBuilder {
    pub(super) fn begin(&mut self, first: Revision) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; FRAME_LEN]);
        self.buf.push(KIND_BATCH);
        self.buf.extend_from_slice(&first.to_be_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.count = 0;
    }

    pub(super) fn put(&mut self, key: &[u8], value: &[u8]) {
        self.buf.push(OP_PUT);
        put_len_bytes(&mut self.buf, key);
        put_len_bytes(&mut self.buf, value);
        self.count += 1;
    }

    pub(super) fn delete(&mut self, key: &[u8]) {
        self.buf.push(OP_DELETE);
        put_len_bytes(&mut self.buf, key);
        self.count += 1;
    }

    /// Length of the record as built so far (what [`RecordBuilder::finish`] returns).
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The framed record (length, checksum, payload).
    pub(super) fn finish(&mut self) -> &[u8] {
        let count_at = FRAME_LEN + 9;
        self.buf[count_at..count_at + 4].copy_from_slice(&self.count.to_be_bytes());
        let len = u32::try_from(self.buf.len() - FRAME_LEN).unwrap_or(u32::MAX);
        seal(&mut self.buf, len);
        &self.buf
    }
}

/// One change of a logged batch: a put (`Some(value)`) or a delete (`None`).
pub(super) type LoggedChange = (Vec<u8>, Option<Vec<u8>>);

/// A decoded record.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LoggedBatch {
    pub(super) first: Revision,
    pub(super) changes: Vec<LoggedChange>,
}

impl LoggedBatch {
    /// The revision of the last change.
    pub(super) fn last(&self) -> Revision {
        let n = i64::try_from(self.changes.len()).unwrap_or(i64::MAX);
        Revision::new(self.first.get().saturating_add(n - 1)).unwrap_or(self.first)
    }
}

/// What a frame at an offset is.
enum Frame<'a> {
    /// A checked record: its payload and where the next frame starts.
    Record(&'a [u8], usize),
    /// Not a record (zeros, cut short, bad checksum).
    Invalid,
}

fn frame_at(data: &[u8], at: usize) -> Frame<'_> {
    let Some(head) = data.get(at..at + FRAME_LEN) else {
        return Frame::Invalid;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(PAYLOAD_HEAD..=MAX_PAYLOAD).contains(&len) {
        return Frame::Invalid;
    }
    let Some(payload) = data.get(at + FRAME_LEN..at + FRAME_LEN + len) else {
        return Frame::Invalid;
    };
    if payload[0] != KIND_BATCH {
        return Frame::Invalid;
    }
    if !checks_out(head, payload) {
        return Frame::Invalid;
    }
    Frame::Record(payload, at + FRAME_LEN + len)
}

/// The first revision a payload claims (the payload is at least [`PAYLOAD_HEAD`] long).
fn payload_first(payload: &[u8]) -> i64 {
    let mut arr = [0u8; 8];
    arr.copy_from_slice(&payload[1..9]);
    i64::from_be_bytes(arr)
}

fn decode_payload(payload: &[u8]) -> Option<LoggedBatch> {
    let first = Revision::new(payload_first(payload))?;
    let count = u32::from_be_bytes(payload.get(9..13)?.try_into().ok()?) as usize;
    let mut rest = &payload[PAYLOAD_HEAD..];
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    let mut changes = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let op = take(1)?[0];
        let key_len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let key = take(key_len)?.to_vec();
        let value = match op {
            OP_PUT => {
                let len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
                Some(take(len)?.to_vec())
            }
            OP_DELETE => None,
            _ => return None,
        };
        changes.push((key, value));
    }
    if !rest.is_empty() || changes.is_empty() {
        return None;
    }
    Some(LoggedBatch { first, changes })
}

fn header(base: Revision) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&base.to_be_bytes());
    let crc = crc32c(0, &h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

fn header_base(data: &[u8]) -> Option<Revision> {
    let h = data.get(..HEADER_LEN as usize)?;
    if h[..8] != MAGIC || h[20..] != [0; 4] {
        return None;
    }
    if crc32c(0, &h[..16]).to_le_bytes() != h[16..20] {
        return None;
    }
    Revision::from_be_bytes(h[8..16].try_into().ok()?)
}

/// The file name of the segment starting at `base`.
pub(super) fn segment_name(base: Revision) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", base.get())
}

/// The segments in `wal_dir`, oldest first, with their bases. Leftover temporary files (a
/// spare being prepared when the process died) are removed.
pub(super) fn list_segments(wal_dir: &Path) -> Result<Vec<(Revision, PathBuf)>, BackendError> {
    let mut segments = Vec::new();
    let entries = std::fs::read_dir(wal_dir).map_err(|e| io_error("list the log directory", &e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list the log directory", &e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == SPARE_TMP {
            std::fs::remove_file(entry.path()).map_err(|e| io_error("remove a spare", &e))?;
            continue;
        }
        if name == SPARE {
            continue;
        }
        let base = name
            .strip_suffix(SEGMENT_SUFFIX)
            .filter(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<i64>().ok())
            .and_then(Revision::new)
            .ok_or_else(|| {
                BackendError::Corrupt(format!(
                    "unexpected file {} in the write-ahead log",
                    entry.path().display()
                ))
            })?;
        segments.push((base, entry.path()));
    }
    segments.sort();
    Ok(segments)
}

fn corrupt_at(path: &Path, offset: usize, what: &str) -> BackendError {
    BackendError::Corrupt(format!(
        "write-ahead log {} at offset {offset}: {what}",
        path.display()
    ))
}

/// What reading the log found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Recovered {
    /// Records read.
    pub(super) records: u64,
    /// The revision after the last record (`None` if the log is empty).
    pub(super) next: Option<Revision>,
    /// A torn tail was cut: the file and the offset where it started.
    pub(super) torn: Option<(PathBuf, usize)>,
}

/// Reads every segment in order and calls `apply` with each record. Checks the rules in the
/// module docs; a violation is [`BackendError::Corrupt`] naming the file and offset.
pub(super) fn recover(
    segments: &[(Revision, PathBuf)],
    mut apply: impl FnMut(LoggedBatch) -> Result<(), BackendError>,
) -> Result<Recovered, BackendError> {
    let mut found = Recovered::default();
    for (i, (base, path)) in segments.iter().enumerate() {
        let last_segment = i + 1 == segments.len();
        let data =
            std::fs::read(path).map_err(|e| io_error(&format!("read {}", path.display()), &e))?;
        match header_base(&data) {
            Some(b) if b == *base => {}
            Some(b) => return Err(corrupt_at(path, 0, &format!("header says base {b}"))),
            None if last_segment && !any_record_after(&data, 0, *base) => {
                // Created but never written before the crash.
                found.torn = Some((path.clone(), 0));
                break;
            }
            None => return Err(corrupt_at(path, 0, "bad segment header")),
        }
        if let Some(next) = found.next {
            if next != *base {
                return Err(corrupt_at(
                    path,
                    0,
                    &format!(
                        "segment starts at revision {base}, the previous one ends before {next}"
                    ),
                ));
            }
        }
        let mut next = *base;
        let mut at = HEADER_LEN as usize;
        loop {
            match frame_at(&data, at) {
                Frame::Record(payload, end) if payload_first(payload) == next.get() => {
                    let batch = decode_payload(payload)
                        .ok_or_else(|| corrupt_at(path, at, "malformed record"))?;
                    next = batch
                        .last()
                        .next()
                        .ok_or_else(|| corrupt_at(path, at, "revision overflow"))?;
                    apply(batch)?;
                    found.records += 1;
                    at = end;
                }
                _ => break,
            }
        }
        found.next = Some(next);
        let rest = data.get(at..).unwrap_or_default();
        if rest.iter().all(|&b| b == 0) {
            continue;
        }
        if !last_segment {
            return Err(corrupt_at(path, at, "unreadable bytes in a sealed segment"));
        }
        if any_record_after(&data, at + 1, next) {
            return Err(corrupt_at(
                path,
                at,
                "unreadable record followed by later records",
            ));
        }
        found.torn = Some((path.clone(), at));
    }
    Ok(found)
}

/// Whether a well-formed record of revision `next` or later starts anywhere at or after `from`.
fn any_record_after(data: &[u8], from: usize, next: Revision) -> bool {
    let mut at = from;
    while at + FRAME_LEN + PAYLOAD_HEAD <= data.len() {
        if data[at..at + 4] == [0; 4] {
            at += 1;
            continue;
        }
        if data[at + FRAME_LEN] == KIND_BATCH {
            if let Frame::Record(payload, _) = frame_at(data, at) {
                if payload_first(payload) >= next.get() {
                    return true;
                }
            }
        }
        at += 1;
    }
    false
}

/// The segment being appended to.
pub(super) struct Segment {
    pub(super) file: std::sync::Arc<File>,
    /// Where the next record goes.
    pub(super) end: u64,
    /// The file's length: a record that would go past it starts a new segment (unless the
    /// segment is empty; then the file grows).
    pub(super) len: u64,
}

/// The log directory's files: creating, rotating and removing segments, and the spare.
pub(super) struct WalDir {
    dir: PathBuf,
}

impl WalDir {
    /// The log directory of the store in `store_dir`, created (durably) if missing.
    pub(super) fn open(store_dir: &Path) -> Result<WalDir, BackendError> {
        let dir = store_dir.join(WAL_DIR);
        if !dir.exists() {
            std::fs::create_dir(&dir).map_err(|e| io_error("create the log directory", &e))?;
            sync_path(store_dir)?;
        }
        Ok(WalDir { dir })
    }

    pub(super) fn path(&self) -> &Path {
        &self.dir
    }

    /// Starts a segment for revisions from `base` (the spare if there is one, else `bytes` of
    /// zeros), with its header written and synced, and its directory entry durable.
    pub(super) fn create_segment(
        &self,
        base: Revision,
        bytes: u64,
    ) -> Result<Segment, BackendError> {
        let path = self.dir.join(segment_name(base));
        let spare = self.dir.join(SPARE);
        let file = if spare.exists() {
            std::fs::rename(&spare, &path).map_err(|e| io_error("rename the spare segment", &e))?;
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_error("open a log segment", &e))?
        } else {
            zero_filled(&path, bytes.max(HEADER_LEN))?
        };
        let len = file
            .metadata()
            .map_err(|e| io_error("read a log segment's length", &e))?
            .len();
        file.write_all_at(&header(base), 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error("write a segment header", &e))?;
        sync_path(&self.dir)?;
        Ok(Segment {
            file: std::sync::Arc::new(file),
            end: HEADER_LEN,
            len,
        })
    }

    /// Prepares a spare segment of `bytes` if there is none (zero-filled and synced). Slow:
    /// called off the write path.
    pub(super) fn prepare_spare(&self, bytes: u64) -> Result<(), BackendError> {
        let spare = self.dir.join(SPARE);
        if spare.exists() {
            return Ok(());
        }
        let tmp = self.dir.join(SPARE_TMP);
        drop(zero_filled(&tmp, bytes.max(HEADER_LEN))?);
        std::fs::rename(&tmp, &spare).map_err(|e| io_error("rename the spare segment", &e))?;
        sync_path(&self.dir)
    }

    /// Removes every segment whose base is below `base`, then syncs the directory.
    pub(super) fn remove_before(&self, base: Revision) -> Result<(), BackendError> {
        let mut removed = false;
        for (b, path) in list_segments(&self.dir)? {
            if b < base {
                std::fs::remove_file(&path).map_err(|e| io_error("remove a log segment", &e))?;
                removed = true;
            }
        }
        if removed {
            sync_path(&self.dir)?;
        }
        Ok(())
    }

    /// Removes every segment (the spare stays), then syncs the directory.
    pub(super) fn remove_all(&self) -> Result<(), BackendError> {
        self.remove_before(Revision::MAX)
    }

    /// Removes the spare segment, if any.
    pub(super) fn remove_spare(&self) -> Result<(), BackendError> {
        match std::fs::remove_file(self.dir.join(SPARE)) {
            Ok(()) => sync_path(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove the spare segment", &e)),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn rev(r: i64) -> Revision {
        Revision::new(r).unwrap()
    }

    #[test]
    fn crc32c_known_answers() {
        // RFC 3720 (iSCSI) appendix B.4 test vectors, and the common "123456789" check value.
        assert_eq!(crc32c(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(0, &[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(0, &[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(0, &ascending), 0x46DD_794E);
        // Incremental equals one-shot.
        assert_eq!(crc32c(crc32c(0, b"1234"), b"56789"), 0xE306_9283);
        // A flipped bit changes it.
        assert_ne!(crc32c(0, b"123456788"), 0xE306_9283);
    }

    pub(in crate::backend::sled) fn record(
        first: i64,
        changes: &[(&[u8], Option<&[u8]>)],
    ) -> Vec<u8> {
        let mut b = RecordBuilder::default();
        b.begin(rev(first));
        for (k, v) in changes {
            match v {
                Some(v) => b.put(k, v),
                None => b.delete(k),
            }
        }
        b.finish().to_vec()
    }

    pub(in crate::backend::sled) fn segment(base: i64, records: &[Vec<u8>]) -> Vec<u8> {
        let mut data = header(rev(base)).to_vec();
        for r in records {
            data.extend_from_slice(r);
        }
        data.resize(data.len() + 4096, 0);
        data
    }

    pub(in crate::backend::sled) fn write(
        dir: &Path,
        base: i64,
        data: &[u8],
    ) -> (Revision, PathBuf) {
        let path = dir.join(segment_name(rev(base)));
        std::fs::write(&path, data).unwrap();
        (rev(base), path)
    }

    fn read_all(
        segments: &[(Revision, PathBuf)],
    ) -> Result<(Vec<LoggedBatch>, Recovered), BackendError> {
        let mut batches = Vec::new();
        let found = recover(segments, |b| {
            batches.push(b);
            Ok(())
        })?;
        Ok((batches, found))
    }

    #[test]
    fn records_round_trip_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let a = record(2, &[(b"k", Some(b"v")), (b"", Some(b"")), (b"k", None)]);
        let b = record(5, &[(b"x\x00y", Some(&[0u8; 300]))]);
        let c = record(6, &[(b"z", None)]);
        let s1 = write(dir.path(), 2, &segment(2, &[a, b]));
        let s2 = write(dir.path(), 6, &segment(6, &[c]));
        let (batches, found) = read_all(&[s1, s2]).unwrap();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[0].first, rev(2));
        assert_eq!(batches[0].last(), rev(4));
        assert_eq!(batches[0].changes[2], (b"k".to_vec(), None));
        assert_eq!(batches[1].changes[0].1.as_deref(), Some(&[0u8; 300][..]));
        assert_eq!(
            (found.records, found.next, found.torn),
            (3, Some(rev(7)), None)
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_anything_before_it_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = record(2, &[(b"a", Some(b"1"))]);
        let b = record(3, &[(b"b", Some(&[7u8; 100]))]);
        let c = record(4, &[(b"c", Some(b"3"))]);
        let clean = segment(2, &[a.clone(), b.clone(), c.clone()]);
        let tail_at = HEADER_LEN as usize + a.len() + b.len();

        // The last record cut anywhere, or garbage after the last record: a torn tail.
        for cut in [1, 4, 8, 12, c.len() - 1] {
            let mut data = segment(2, &[a.clone(), b.clone()]);
            data[tail_at..tail_at + cut].copy_from_slice(&c[..cut]);
            let seg = write(dir.path(), 2, &data);
            let (batches, found) = read_all(&[seg]).unwrap();
            assert_eq!(batches.len(), 2, "cut {cut}");
            assert_eq!(found.torn.unwrap().1, tail_at);
            assert_eq!(found.next, Some(rev(4)));
        }
        let mut garbage = clean.clone();
        let end = tail_at + c.len();
        garbage[end..end + 5].copy_from_slice(b"trash");
        let (batches, found) = read_all(&[write(dir.path(), 2, &garbage)]).unwrap();
        assert_eq!((batches.len(), found.torn.unwrap().1), (3, end));

        // A flipped bit in any record but the last, with a good record after it: an error
        // naming the file and the offset.
        for offset in [HEADER_LEN as usize + 9, HEADER_LEN as usize + a.len() + 30] {
            let mut bad = clean.clone();
            bad[offset] ^= 1;
            let seg = write(dir.path(), 2, &bad);
            let err = read_all(std::slice::from_ref(&seg))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&seg.1.display().to_string()), "{err}");
            assert!(err.contains("offset"), "{err}");
        }

        // A sealed (not last) segment must end cleanly.
        let mut sealed = segment(2, &[a.clone(), b.clone()]);
        sealed[tail_at + 3] = 1;
        let s1 = write(dir.path(), 2, &sealed);
        let s2 = write(dir.path(), 4, &segment(4, std::slice::from_ref(&c)));
        assert!(matches!(read_all(&[s1, s2]), Err(BackendError::Corrupt(_))));

        // A gap between segments is an error.
        let s1 = write(dir.path(), 2, &segment(2, std::slice::from_ref(&a)));
        let s2 = write(dir.path(), 4, &segment(4, std::slice::from_ref(&c)));
        assert!(matches!(read_all(&[s1, s2]), Err(BackendError::Corrupt(_))));

        // A last segment whose header never made it: empty.
        let s1 = write(dir.path(), 2, &segment(2, &[a, b]));
        let s2 = write(dir.path(), 4, &[0u8; 4096]);
        let (batches, found) = read_all(&[s1, s2]).unwrap();
        assert_eq!((batches.len(), found.next), (2, Some(rev(4))));
        assert_eq!(found.torn.unwrap().1, 0);
    }
}
