//! The bytes on disk: segment files, their header, framed records, and the scan that reads them
//! back on open (cutting a torn tail, refusing anything else that does not check out).
//!
//! A segment `<seq>.seg` (`seq` in 20 decimal digits, so names sort) starts with a 24-byte
//! header: `"KWLOG\0\0\x02"` (magic and format 2), `be64(seq)`, CRC32C of those 16 bytes
//! (`le32`), 4 zero bytes. Records follow back to back; a zero length ends them:
//!
//! ```text
//! le32(len) ‖ le32(crc) ‖ le32(seq) ‖ payload
//!     crc = CRC32C, from the seed "KWL2", of le32(len) ‖ le32(seq) ‖ payload
//! payload = 01 ‖ be64(first revision) ‖ be32(count) ‖ count × change   (a batch)
//!         | 02 ‖ be64(revision)                                         (a compaction)
//!         | 03 ‖ be32(victim) ‖ u8(complete) ‖ be64(through) ‖ be64(compacted) ‖ be32(count)
//!              ‖ count × entry                                          (a relocation)
//! change  = 01 ‖ be32(key len) ‖ key ‖ be64(create revision) ‖ be64(version)
//!              ‖ be32(value len) ‖ value                                (a put)
//!         | 02 ‖ be32(key len) ‖ key                                    (a delete)
//! entry   = 01 ‖ be32(key len) ‖ key ‖ be64(floor) ‖ be64(revision) ‖ be64(create revision)
//!              ‖ be64(version; 0 for a delete) ‖ be32(value len) ‖ value    (a moved version)
//!         | 02 ‖ be32(key len) ‖ key ‖ be64(below)                     (versions gone)
//! ```
//!
//! Every record is written together with the zero length after it, so the data of a segment
//! ends at a zero length whatever the file held before: segments are zero-filled files or
//! cleaned segments used again, and the old records of a segment used again name another
//! `seq` (its header is replaced by [`RECYCLED`] before it is renamed), so that none of them
//! checks out as a record of the new one, and a search for a well-formed record after a bad
//! frame compares four bytes at each offset before it computes a checksum.
//!
//! Format 1 (`"KWLOG\0\0\x01"`, read but no longer written) frames a record as
//! `le32(len) ‖ le32(crc32c(le32(len) ‖ payload)) ‖ payload` with the same payloads, in
//! zero-filled segments only; a store's format-1 segments are read as they are until the
//! cleaner replaces them, and a format-1 segment is never used again.
//!
//! Change `i` of a batch has revision `first + i`; each batch starts at the revision after the
//! previous one. A put carries the key's create revision and version, so that replaying it
//! never needs the versions before it (the cleaner may have dropped them). A value is read in
//! place: the index keeps its segment, offset and length.
//!
//! A relocation is the cleaner's: every version the index still kept from segment `victim`
//! (and every segment before it, already gone), written again in full, in one or more records
//! of which the last says `complete` (1), after which those segments are deleted. Records of a
//! victim that no complete record follows are ignored on opening (the victim is still there). `through` is the last revision those segments held and `compacted`
//! the compacted revision when it was written; `floor` is the key's read floor. A key the
//! victim changed gets a "versions gone" entry when the index no longer keeps some of those
//! versions: every version of it below `below` is gone for good, so that a copy an older
//! relocation record still holds is not brought back on opening.

use std::path::{Path, PathBuf};

use crate::backend::frame::{checks_out, put_len_bytes, FRAME_LEN as V1_FRAME_LEN};
use crate::backend::BackendError;

/// The magic of format 2, written by this version.
pub(super) const MAGIC: [u8; 8] = *b"KWLOG\0\0\x02";
/// The magic of format 1, read only.
const MAGIC_V1: [u8; 8] = *b"KWLOG\0\0\x01";
/// The header a cleaned segment gets before it waits, renamed, to be used again: a segment
/// that still has it was never started.
pub(super) const RECYCLED: [u8; HEADER_LEN as usize] = *b"KWLOGRCY\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
pub(super) const HEADER_LEN: u64 = 24;
/// Bytes of a format-2 frame before its payload.
pub(super) const FRAME_LEN: usize = 12;
/// The zero length written after every record.
pub(super) const END_LEN: u64 = 4;
/// The checksum's seed in format 2 ("KWL2"), so that no format-1 frame checks out as one.
const CRC_SEED: u32 = u32::from_be_bytes(*b"KWL2");
pub(super) const SEGMENT_SUFFIX: &str = ".seg";
/// A longer record is not believed (the writer caps a batch far below this).
const MAX_PAYLOAD: usize = 1 << 30;
const KIND_BATCH: u8 = 1;
const KIND_COMPACT: u8 = 2;
const KIND_RELOCATE: u8 = 3;
const ENTRY_MOVED: u8 = 1;
const ENTRY_GONE: u8 = 2;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// How a segment frames its records: by the format its header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// Format 1: a zero-filled segment whose records are not bound to it.
    V1,
    /// Format 2: records bound to segment `seq`.
    V2 { seq: u32 },
}

/// The header of segment `seq` (format 2).
pub(super) fn header(seq: u32) -> [u8; HEADER_LEN as usize] {
    header_with(MAGIC, seq)
}

fn header_with(magic: [u8; 8], seq: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&magic);
    h[8..16].copy_from_slice(&u64::from(seq).to_be_bytes());
    let crc = crc32c::crc32c(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(super) fn segment_name(seq: u32) -> String {
    format!("{seq:020}{SEGMENT_SUFFIX}")
}

/// The store's segments, by sequence number.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u32, PathBuf)>, BackendError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| BackendError::Io(format!("cannot list {}: {e}", dir.display())))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| BackendError::Io(format!("cannot list {}: {e}", dir.display())))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        let seq = stem
            .parse::<u32>()
            .ok()
            .filter(|_| stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                BackendError::Corrupt(format!(
                    "{} is not a segment name (20 digits and {SEGMENT_SUFFIX})",
                    entry.path().display()
                ))
            })?;
        out.push((seq, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Builds one record in a reusable buffer.
#[derive(Default)]
pub(super) struct RecordBuilder {
    buf: Vec<u8>,
    count: u32,
}

impl RecordBuilder {
    /// Starts a record of `kind`: room for the framing, then the kind.
    fn start(&mut self, kind: u8) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; FRAME_LEN]);
        self.buf.push(kind);
        self.count = 0;
    }

    /// Adds a value with its length; returns its offset from the record's start.
    fn value(&mut self, value: &[u8]) -> usize {
        self.buf.extend_from_slice(&len32(value).to_be_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(value);
        at
    }

    /// Starts a batch whose first change gets revision `first`.
    pub(super) fn begin_batch(&mut self, first: i64) {
        self.start(KIND_BATCH);
        self.buf.extend_from_slice(&first.to_be_bytes());
        self.buf.extend_from_slice(&[0; 4]);
    }

    /// Adds a put (the key's create revision and version after it); returns the value's
    /// offset from the record's start.
    pub(super) fn put(&mut self, key: &[u8], create: i64, version: i64, value: &[u8]) -> usize {
        self.buf.push(OP_PUT);
        put_len_bytes(&mut self.buf, key);
        self.buf.extend_from_slice(&create.to_be_bytes());
        self.buf.extend_from_slice(&version.to_be_bytes());
        let at = self.value(value);
        self.count += 1;
        at
    }

    pub(super) fn delete(&mut self, key: &[u8]) {
        self.buf.push(OP_DELETE);
        put_len_bytes(&mut self.buf, key);
        self.count += 1;
    }

    /// Changes added since [`RecordBuilder::begin_batch`].
    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// Bytes so far, framing included (not the zero length written after the record).
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Starts a compaction record (framed by [`RecordBuilder::finish_compaction`]).
    pub(super) fn compaction(&mut self, revision: i64) {
        self.start(KIND_COMPACT);
        self.buf.extend_from_slice(&revision.to_be_bytes());
    }

    /// The framed compaction record for segment `seq`.
    pub(super) fn finish_compaction(&mut self, seq: u32) -> Framed<'_> {
        self.frame(seq)
    }

    /// Starts a relocation record for segment `victim` (see the module docs).
    pub(super) fn begin_relocation(&mut self, victim: u32, through: i64, compacted: i64) {
        self.start(KIND_RELOCATE);
        self.buf.extend_from_slice(&victim.to_be_bytes());
        self.buf.push(0);
        self.buf.extend_from_slice(&through.to_be_bytes());
        self.buf.extend_from_slice(&compacted.to_be_bytes());
        self.buf.extend_from_slice(&[0; 4]);
    }

    /// Adds a moved version; returns its value's offset from the record's start.
    pub(super) fn moved(&mut self, key: &[u8], floor: i64, meta: Moved, value: &[u8]) -> usize {
        self.buf.push(ENTRY_MOVED);
        put_len_bytes(&mut self.buf, key);
        for n in [floor, meta.rev, meta.create, meta.version] {
            self.buf.extend_from_slice(&n.to_be_bytes());
        }
        let at = self.value(value);
        self.count += 1;
        at
    }

    /// Adds a "versions gone" entry: every version of `key` below `below` is gone.
    pub(super) fn gone(&mut self, key: &[u8], below: i64) {
        self.buf.push(ENTRY_GONE);
        put_len_bytes(&mut self.buf, key);
        self.buf.extend_from_slice(&below.to_be_bytes());
        self.count += 1;
    }

    /// The framed relocation record for segment `seq`; `complete` if it is the victim's last.
    pub(super) fn finish_relocation(&mut self, complete: bool, seq: u32) -> Framed<'_> {
        self.buf[FRAME_LEN + 5] = u8::from(complete);
        let count_at = FRAME_LEN + 22;
        self.buf[count_at..count_at + 4].copy_from_slice(&self.count.to_be_bytes());
        self.frame(seq)
    }

    /// The framed batch record for segment `seq`.
    pub(super) fn finish_batch(&mut self, seq: u32) -> Framed<'_> {
        let count_at = FRAME_LEN + 9;
        self.buf[count_at..count_at + 4].copy_from_slice(&self.count.to_be_bytes());
        self.frame(seq)
    }

    fn frame(&mut self, seq: u32) -> Framed<'_> {
        let len = len32(&self.buf[FRAME_LEN..]).to_le_bytes();
        let seq = seq.to_le_bytes();
        self.buf[..4].copy_from_slice(&len);
        self.buf[8..FRAME_LEN].copy_from_slice(&seq);
        let crc = v2_crc(len, seq, &self.buf[FRAME_LEN..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let record = self.buf.len();
        self.buf.extend_from_slice(&[0; END_LEN as usize]);
        Framed {
            bytes: &self.buf,
            record,
        }
    }
}

/// A framed record, with the zero length that follows it on disk.
pub(super) struct Framed<'a> {
    bytes: &'a [u8],
    record: usize,
}

impl Framed<'_> {
    /// The record alone.
    pub(super) fn record(&self) -> &[u8] {
        &self.bytes[..self.record]
    }

    /// The record and the zero length after it: what an append writes.
    pub(super) fn with_end(&self) -> &[u8] {
        self.bytes
    }
}

fn v2_crc(len: [u8; 4], seq: [u8; 4], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c_append(CRC_SEED, &len);
    crc32c::crc32c_append(crc32c::crc32c_append(crc, &seq), payload)
}

/// A length as four bytes (the writer refuses values and keys of 4 GiB or more first).
fn len32(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}

/// One change of a batch as read back: the key and, for a put, the value's offset and length
/// in the segment and the key's create revision and version.
pub(super) struct ReadChange<'a> {
    pub(super) key: &'a [u8],
    pub(super) value: Option<(u64, u32)>,
    /// `(create revision, version)` of a put; `(0, 0)` for a delete.
    pub(super) meta: (i64, i64),
}

/// A moved version's revisions (a delete has `version` 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Moved {
    pub(super) rev: i64,
    pub(super) create: i64,
    pub(super) version: i64,
}

/// One version of a relocation as read back, its value's offset and length in the segment.
pub(super) struct ReadMoved<'a> {
    pub(super) key: &'a [u8],
    pub(super) floor: i64,
    pub(super) meta: Moved,
    pub(super) value: (u64, u32),
}

/// A record as read back.
pub(super) enum ReadRecord<'a> {
    Batch {
        first: i64,
        changes: Vec<ReadChange<'a>>,
    },
    Compaction(i64),
    Relocation {
        victim: u32,
        complete: bool,
        through: i64,
        compacted: i64,
        moved: Vec<ReadMoved<'a>>,
        /// Keys with every version below a revision gone.
        gone: Vec<(&'a [u8], i64)>,
    },
}

impl Framing {
    /// Bytes of a frame before its payload.
    pub(super) fn frame_len(self) -> usize {
        match self {
            Framing::V1 => V1_FRAME_LEN,
            Framing::V2 { .. } => FRAME_LEN,
        }
    }

    /// The frame at `at`: `Ok(None)` where the data ends (a zero length, a format-1 frame of
    /// zeros, or too little room for one), `Err(())` for a frame that does not check out.
    fn frame_at(self, data: &[u8], at: usize) -> Result<Option<&[u8]>, ()> {
        let len_at = |head: &[u8]| u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        match self {
            Framing::V1 => {
                let Some(head) = data.get(at..at + V1_FRAME_LEN) else {
                    return Ok(None);
                };
                if head.iter().all(|b| *b == 0) {
                    return Ok(None);
                }
                let payload = payload_at(data, at + V1_FRAME_LEN, len_at(head))?;
                if !checks_out(head, payload) {
                    return Err(());
                }
                Ok(Some(payload))
            }
            Framing::V2 { seq } => {
                let Some(len) = data.get(at..at + 4).map(len_at) else {
                    return Ok(None);
                };
                if len == 0 {
                    return Ok(None);
                }
                let head = data.get(at..at + FRAME_LEN).ok_or(())?;
                if head[8..] != seq.to_le_bytes() {
                    return Err(());
                }
                let payload = payload_at(data, at + FRAME_LEN, len)?;
                let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
                let (len, seq) = (len.to_le_bytes(), seq.to_le_bytes());
                if v2_crc(len, seq, payload) != crc {
                    return Err(());
                }
                Ok(Some(payload))
            }
        }
    }

    /// Whether a frame of this segment could start at `at`: for format 2, its `seq` is there
    /// (checked before anything costlier, since a segment used again holds old records).
    fn may_start_at(self, data: &[u8], at: usize) -> bool {
        match self {
            Framing::V1 => true,
            Framing::V2 { seq } => data.get(at + 8..at + FRAME_LEN) == Some(&seq.to_le_bytes()),
        }
    }
}

/// The `len` bytes of payload at `at`, if the data holds them (and `len` is believable).
fn payload_at(data: &[u8], at: usize, len: u32) -> Result<&[u8], ()> {
    let len = len as usize;
    data.get(at..)
        .and_then(|rest| rest.get(..len))
        .filter(|_| len <= MAX_PAYLOAD)
        .ok_or(())
}

fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if p.len() < n {
        return None;
    }
    let (head, rest) = p.split_at(n);
    *p = rest;
    Some(head)
}

fn take_u32(p: &mut &[u8]) -> Option<u32> {
    take(p, 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn take_i64(p: &mut &[u8]) -> Option<i64> {
    take(p, 8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes)
}

/// Decodes a payload found at `payload_at` in its segment.
fn decode(payload: &[u8], payload_at: usize) -> Option<ReadRecord<'_>> {
    let mut p = payload;
    match *take(&mut p, 1)?.first()? {
        KIND_BATCH => {
            let first = take_i64(&mut p)?;
            let count = take_u32(&mut p)?;
            let mut changes = Vec::with_capacity(count.min(1 << 16) as usize);
            for _ in 0..count {
                let op = *take(&mut p, 1)?.first()?;
                let klen = take_u32(&mut p)? as usize;
                let key = take(&mut p, klen)?;
                let (value, meta) = match op {
                    OP_PUT => {
                        let meta = (take_i64(&mut p)?, take_i64(&mut p)?);
                        let vlen = take_u32(&mut p)?;
                        let at = payload_at + (payload.len() - p.len());
                        take(&mut p, vlen as usize)?;
                        (Some((at as u64, vlen)), meta)
                    }
                    OP_DELETE => (None, (0, 0)),
                    _ => return None,
                };
                changes.push(ReadChange { key, value, meta });
            }
            p.is_empty().then_some(ReadRecord::Batch { first, changes })
        }
        KIND_COMPACT => {
            let rev = take_i64(&mut p)?;
            p.is_empty().then_some(ReadRecord::Compaction(rev))
        }
        KIND_RELOCATE => {
            let victim = take_u32(&mut p)?;
            let complete = match *take(&mut p, 1)?.first()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            let through = take_i64(&mut p)?;
            let compacted = take_i64(&mut p)?;
            let count = take_u32(&mut p)?;
            let mut moved = Vec::with_capacity(count.min(1 << 16) as usize);
            let mut gone = Vec::new();
            for _ in 0..count {
                let tag = *take(&mut p, 1)?.first()?;
                let klen = take_u32(&mut p)? as usize;
                let key = take(&mut p, klen)?;
                match tag {
                    ENTRY_MOVED => {}
                    ENTRY_GONE => {
                        gone.push((key, take_i64(&mut p)?));
                        continue;
                    }
                    _ => return None,
                }
                let floor = take_i64(&mut p)?;
                let meta = Moved {
                    rev: take_i64(&mut p)?,
                    create: take_i64(&mut p)?,
                    version: take_i64(&mut p)?,
                };
                let vlen = take_u32(&mut p)?;
                let at = payload_at + (payload.len() - p.len());
                take(&mut p, vlen as usize)?;
                moved.push(ReadMoved {
                    key,
                    floor,
                    meta,
                    value: (at as u64, vlen),
                });
            }
            p.is_empty().then_some(ReadRecord::Relocation {
                victim,
                complete,
                through,
                compacted,
                moved,
                gone,
            })
        }
        _ => None,
    }
}

/// What scanning one segment found.
pub(super) struct Scanned<'a> {
    /// Records in order, each with its offset.
    pub(super) records: Vec<(usize, ReadRecord<'a>)>,
    /// Where the data ends (the next record goes here).
    pub(super) end: usize,
    /// Set when the data ends at a frame that does not check out: its offset.
    pub(super) bad_at: Option<usize>,
}

/// Checks the header of segment `seq` in `data`; returns how its records are framed.
pub(super) fn check_header(data: &[u8], seq: u32, path: &Path) -> Result<Framing, BackendError> {
    match data.get(..HEADER_LEN as usize) {
        Some(h) if *h == header(seq) => Ok(Framing::V2 { seq }),
        Some(h) if *h == header_with(MAGIC_V1, seq) => Ok(Framing::V1),
        _ => Err(BackendError::Corrupt(format!(
            "{} does not start with the header of segment {seq}",
            path.display()
        ))),
    }
}

/// Whether the last segment `seq` was never started: a crash came while it was being created,
/// filled with zeros, taken from the cleaned segments or given its header. Its header does not
/// check out and it holds no record of its own: a cleaned segment waiting to be used again
/// (header [`RECYCLED`]) holds only other segments' records; any other may be a format-1
/// segment whose header was damaged, so a record of either format makes it corrupt instead.
pub(super) fn unstarted(data: &[u8], seq: u32) -> bool {
    if check_header(data, seq, Path::new("")).is_ok() {
        return false;
    }
    let own = Framing::V2 { seq };
    if data.get(..HEADER_LEN as usize) == Some(&RECYCLED[..]) {
        return !any_record_after(data, 0, own);
    }
    !any_record_after(data, 0, own) && !any_record_after(data, 0, Framing::V1)
}

/// Reads every record of a segment's `data` (its header checked, which said `framing`).
pub(super) fn scan(data: &[u8], framing: Framing) -> Scanned<'_> {
    let mut records = Vec::new();
    let mut at = HEADER_LEN as usize;
    loop {
        match framing.frame_at(data, at) {
            Ok(None) => {
                return Scanned {
                    records,
                    end: at,
                    bad_at: None,
                }
            }
            Ok(Some(payload)) => match decode(payload, at + framing.frame_len()) {
                Some(record) => {
                    records.push((at, record));
                    at += framing.frame_len() + payload.len();
                }
                None => {
                    return Scanned {
                        records,
                        end: at,
                        bad_at: Some(at),
                    }
                }
            },
            Err(()) => {
                return Scanned {
                    records,
                    end: at,
                    bad_at: Some(at),
                }
            }
        }
    }
}

/// Whether a well-formed record of this segment starts anywhere in `data` after `from` (then a
/// bad frame before it is corruption, not a torn tail: only the last record can be torn).
pub(super) fn any_record_after(data: &[u8], from: usize, framing: Framing) -> bool {
    let frame = framing.frame_len();
    (from + 1..data.len().saturating_sub(frame)).any(|at| {
        framing.may_start_at(data, at)
            && matches!(framing.frame_at(data, at), Ok(Some(p)) if decode(p, at + frame).is_some())
    })
}

/// Whether the frame at `at` says it is longer than what is left of `data`. A record the
/// writer appends always fits in its segment, whose size is fixed before it is used, so a torn
/// record never runs past the end of the file: only a file cut short leaves one that does.
pub(super) fn runs_past_end(data: &[u8], at: usize, framing: Framing) -> bool {
    let Some(head) = data.get(at..at + 4) else {
        return false;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    len != 0 && len <= MAX_PAYLOAD && at + framing.frame_len() + len > data.len()
}

/// A format-2 segment's bytes as format 1 wrote the same records (each frame without its
/// segment number, the old checksum), zero-filled to the same size: for tests of stores
/// written before format 2.
#[cfg(test)]
pub(super) fn as_format_1(data: &[u8], seq: u32) -> Vec<u8> {
    let mut out = header_with(MAGIC_V1, seq).to_vec();
    let scanned = scan(data, Framing::V2 { seq });
    assert_eq!(scanned.bad_at, None, "a format-2 segment that checks out");
    let mut at = HEADER_LEN as usize;
    while at < scanned.end {
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let payload = &data[at + FRAME_LEN..at + FRAME_LEN + len as usize];
        let mut frame = vec![0u8; V1_FRAME_LEN];
        frame.extend_from_slice(payload);
        crate::backend::frame::seal(&mut frame, len);
        out.extend_from_slice(&frame);
        at += FRAME_LEN + len as usize;
    }
    out.resize(data.len(), 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segment `seq`: its header, then `records` (each written with its zero length), then
    /// `after` (what the file held before).
    fn segment(seq: u32, records: &[Vec<u8>], after: &[u8]) -> Vec<u8> {
        let mut data = header(seq).to_vec();
        for r in records {
            data.extend_from_slice(r);
        }
        data.extend_from_slice(&[0; END_LEN as usize]);
        data.extend_from_slice(after);
        data.resize(data.len() + 64, 0);
        data
    }

    fn batch(b: &mut RecordBuilder, seq: u32, first: i64, value: &[u8]) -> Vec<u8> {
        b.begin_batch(first);
        b.put(b"k", 2, first, value);
        b.finish_batch(seq).record().to_vec()
    }

    /// The same payload framed as format 1 wrote it.
    fn as_v1(record: &[u8]) -> Vec<u8> {
        let payload = &record[FRAME_LEN..];
        let mut out = vec![0u8; V1_FRAME_LEN];
        out.extend_from_slice(payload);
        crate::backend::frame::seal(&mut out, len32(payload));
        out
    }

    #[test]
    fn records_round_trip_with_value_offsets() {
        let mut b = RecordBuilder::default();
        b.begin_batch(7);
        let at = b.put(b"k1", 3, 2, b"value one");
        b.delete(b"k2");
        let framed = b.finish_batch(3);
        assert_eq!(
            &framed.with_end()[framed.record().len()..],
            &[0; END_LEN as usize]
        );
        let batch = framed.record().to_vec();
        b.compaction(5);
        let compaction = b.finish_compaction(3).record().to_vec();
        let data = segment(3, &[batch.clone(), compaction.clone()], &[]);
        let framing = check_header(&data, 3, Path::new("x")).expect("header");
        assert_eq!(framing, Framing::V2 { seq: 3 });
        let s = scan(&data, framing);
        assert_eq!(s.bad_at, None);
        assert_eq!(s.end, HEADER_LEN as usize + batch.len() + compaction.len());
        assert_eq!(compaction.len(), FRAME_LEN + 9);
        let ReadRecord::Batch { first, changes } = &s.records[0].1 else {
            panic!("a batch")
        };
        assert_eq!(*first, 7);
        assert_eq!((changes[0].key, changes[0].meta), (&b"k1"[..], (3, 2)));
        let (off, len) = changes[0].value.expect("a put");
        assert_eq!(off as usize, HEADER_LEN as usize + at);
        assert_eq!(
            &data[off as usize..off as usize + len as usize],
            b"value one"
        );
        assert!(changes[1].value.is_none());
        assert!(matches!(s.records[1].1, ReadRecord::Compaction(5)));
        assert!(check_header(&data, 4, Path::new("x")).is_err());
    }

    #[test]
    fn a_relocation_round_trips_with_its_metadata_and_value_offsets() {
        let mut b = RecordBuilder::default();
        b.begin_relocation(4, 90, 12);
        let meta = Moved {
            rev: 17,
            create: 9,
            version: 3,
        };
        let at = b.moved(b"key", 15, meta, b"old value");
        let tombstone = Moved {
            rev: 18,
            create: 0,
            version: 0,
        };
        b.moved(b"gone", 0, tombstone, b"");
        b.gone(b"older", 12);
        let record = b.finish_relocation(true, 3).record().to_vec();
        let data = segment(3, &[record], &[]);
        let s = scan(&data, Framing::V2 { seq: 3 });
        assert_eq!(s.bad_at, None);
        let ReadRecord::Relocation {
            victim,
            complete,
            through,
            compacted,
            moved,
            gone,
        } = &s.records[0].1
        else {
            panic!("a relocation")
        };
        assert_eq!(
            (*victim, *complete, *through, *compacted, moved.len()),
            (4, true, 90, 12, 2)
        );
        assert_eq!(
            (moved[0].key, moved[0].floor, moved[0].meta),
            (&b"key"[..], 15, meta)
        );
        let (off, len) = moved[0].value;
        assert_eq!(off as usize, HEADER_LEN as usize + at);
        assert_eq!(&data[off as usize..][..len as usize], b"old value");
        assert_eq!(
            (moved[1].key, moved[1].meta, moved[1].value.1),
            (&b"gone"[..], tombstone, 0)
        );
        assert_eq!(gone, &[(&b"older"[..], 12)]);
    }

    #[test]
    fn a_damaged_frame_ends_the_scan_and_a_later_record_is_found() {
        let mut b = RecordBuilder::default();
        let r1 = batch(&mut b, 3, 2, b"v");
        let r2 = batch(&mut b, 3, 3, b"w");
        let framing = Framing::V2 { seq: 3 };
        let mut data = segment(3, &[r1.clone(), r2], &[]);
        let second = HEADER_LEN as usize + r1.len();
        // A torn second record: nothing well formed after it.
        let mut torn = data.clone();
        torn[second + 16] ^= 1;
        let s = scan(&torn, framing);
        assert_eq!((s.records.len(), s.bad_at), (1, Some(second)));
        assert!(!any_record_after(&torn, second, framing));
        // A damaged first record with an intact second one: corruption.
        data[HEADER_LEN as usize + 14] ^= 1;
        let s = scan(&data, framing);
        assert_eq!((s.records.len(), s.bad_at), (0, Some(HEADER_LEN as usize)));
        assert!(any_record_after(&data, HEADER_LEN as usize, framing));
    }

    #[test]
    fn old_records_of_a_segment_used_again_never_check_out() {
        let mut b = RecordBuilder::default();
        // What the file held as segment 3: records that check out there.
        let old: Vec<u8> = (0..20)
            .flat_map(|i| batch(&mut b, 3, 10 + i, b"an old value"))
            .collect();
        let new = batch(&mut b, 9, 2, b"new");
        // Used again as segment 9: its record, its zero length, then the old bytes.
        let data = segment(9, std::slice::from_ref(&new), &old);
        let s = scan(&data, Framing::V2 { seq: 9 });
        assert_eq!((s.records.len(), s.bad_at), (1, None));
        // The zero length lost (a crash during the next append): the old records are a
        // bad frame with nothing of segment 9 after it, which is a torn tail.
        let mut lost = header(9).to_vec();
        lost.extend_from_slice(&new);
        lost.extend_from_slice(&old);
        let s = scan(&lost, Framing::V2 { seq: 9 });
        let end = HEADER_LEN as usize + new.len();
        assert_eq!((s.records.len(), s.bad_at), (1, Some(end)));
        assert!(!any_record_after(&lost, end, Framing::V2 { seq: 9 }));
        // Read as segment 3, the same bytes do check out: the binding is what refuses them.
        assert_eq!(
            scan(&[&header(3)[..], &old].concat(), Framing::V2 { seq: 3 })
                .records
                .len(),
            20
        );
        // Format-1 frames of the same payloads never check out in format 2.
        let v1: Vec<u8> = (0..4)
            .flat_map(|i| as_v1(&batch(&mut b, 1, 1 + i, b"x")))
            .collect();
        let data = [&header(1)[..], &v1].concat();
        let s = scan(&data, Framing::V2 { seq: 1 });
        assert_eq!((s.records.len(), s.bad_at), (0, Some(HEADER_LEN as usize)));
        assert!(!any_record_after(&data, 0, Framing::V2 { seq: 1 }));
    }

    #[test]
    fn format_1_segments_are_read_with_their_own_framing() {
        let mut b = RecordBuilder::default();
        b.begin_batch(4);
        let at = b.put(b"k", 4, 1, b"kept value");
        let r1 = as_v1(b.finish_batch(2).record());
        let r2 = as_v1(&batch(&mut b, 2, 5, b"next"));
        let mut data = header_with(MAGIC_V1, 2).to_vec();
        data.extend_from_slice(&r1);
        data.extend_from_slice(&r2);
        data.resize(data.len() + 64, 0);
        let framing = check_header(&data, 2, Path::new("x")).expect("a format-1 header");
        assert_eq!(framing, Framing::V1);
        let s = scan(&data, framing);
        assert_eq!((s.records.len(), s.bad_at), (2, None));
        assert_eq!(s.end, HEADER_LEN as usize + r1.len() + r2.len());
        let ReadRecord::Batch { changes, .. } = &s.records[0].1 else {
            panic!("a batch")
        };
        let (off, len) = changes[0].value.expect("a put");
        // The value sits four bytes earlier than in format 2: a shorter frame.
        assert_eq!(off as usize, HEADER_LEN as usize + at - 4);
        assert_eq!(&data[off as usize..][..len as usize], b"kept value");
    }

    #[test]
    fn a_segment_is_unstarted_only_without_records_of_its_own() {
        let mut b = RecordBuilder::default();
        let old: Vec<u8> = (0..5)
            .flat_map(|i| batch(&mut b, 4, 1 + i, b"old"))
            .collect();
        // A cleaned segment renamed to segment 7 before its header was written.
        let recycled = [&RECYCLED[..], &old].concat();
        assert!(unstarted(&recycled, 7));
        // ... with a record of segment 7 in it: not a leftover.
        let own = [&RECYCLED[..], &batch(&mut b, 7, 9, b"mine")].concat();
        assert!(!unstarted(&own, 7));
        // Zeros, or nothing.
        assert!(unstarted(&[0u8; 4096], 7));
        assert!(unstarted(&[], 7));
        // A format-1 segment whose header was damaged holds records: not unstarted.
        let v1 = [
            &[0u8; HEADER_LEN as usize][..],
            &as_v1(&batch(&mut b, 7, 1, b"v")),
        ]
        .concat();
        assert!(!unstarted(&v1, 7));
        // A started one.
        assert!(!unstarted(&segment(7, &[], &[]), 7));
    }
}
