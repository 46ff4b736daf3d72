//! The redo file: every frozen layer's writes, made durable *before* the layer is written to
//! sled, so that the layer can be written key by key instead of in one sled transaction.
//!
//! A sled transaction (or batch) takes sled's global concurrency-control lock exclusively,
//! so every sled reader in the process waits while a layer of a few hundred writes is
//! committed; written key by key, readers go on. But sled may then persist any part of a
//! layer on its own (its I/O buffers are written out when full or on a timer), leaving a state
//! that is not the one after a whole log record, which the log's replay needs. The redo file
//! closes that hole: it holds, in order, the writes of every layer written to sled since sled
//! was last made durable (a checkpoint), each record `fdatasync`ed before the first of its
//! writes reaches sled. Opening a store re-applies them (the writes are plain puts and
//! removals of final values, so applying them again, or after part of them, gives the same
//! state), which puts sled back at the state after the last layer, and the log replays from
//! there. Making sled durable (a checkpoint, or [`CHECKPOINT_BYTES`] of records) empties the
//! file (truncated and `fsync`ed, so that no record older than sled's durable state can come
//! back and undo later changes).
//!
//! The file is `redo` in the store directory. Records back to back from offset 0:
//!
//! ```text
//! le32(len) ‖ le32(crc32c(le32(len) ‖ payload)) ‖ payload
//! payload = 01 ‖ be32(count) ‖ count × write
//! write   = tree (00 kv, 01 log, 02 history, 03 meta)
//!           ‖ 01 ‖ be32(key len) ‖ key ‖ be32(value len) ‖ value     (a put)
//!           | 02 ‖ be32(key len) ‖ key                                 (a removal)
//! ```
//!
//! A record is appended only once the previous one is synced and fully written to sled, so
//! only the last record can be torn, and a torn record never reached sled: it is cut. Any
//! other unreadable record is [`BackendError::Corrupt`], naming the offset.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ::sled::Tree;

use super::layers::TreeId;
use super::{io_error, sled_error};
use crate::backend::frame::{checks_out, seal, FRAME_LEN};
use crate::backend::BackendError;

/// The redo file's name in the store directory.
pub(super) const REDO_FILE: &str = "redo";
const KIND_LAYER: u8 = 1;
const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;
/// Once the file holds this much, the checkpoint thread makes sled durable (which empties it)
/// rather than waiting for the next log segment: it bounds the file's size on disk and the
/// work of re-applying it on open.
pub(super) const CHECKPOINT_BYTES: u64 = 32 << 20;
/// A longer record is not believed (a layer is a few hundred KiB).
const MAX_PAYLOAD: usize = 1 << 30;

/// One write of a layer: its tree, key and new value (None: removed).
pub(super) type RedoWrite<'a> = (TreeId, &'a [u8], Option<&'a [u8]>);

/// The open redo file and how much of it holds records.
pub(super) struct Redo {
    path: PathBuf,
    file: File,
    len: u64,
    /// Reused encoding buffer.
    buf: Vec<u8>,
}

impl Redo {
    /// Opens (creating if needed) the redo file of the store in `dir`, applies every record it
    /// holds to sled's trees (`trees` in [`TreeId`] order) and cuts a torn last record. The
    /// records stay until the next [`Redo::clear`], which the caller runs once sled is durable.
    pub(super) fn open(dir: &Path, trees: [&Tree; 4]) -> Result<Redo, BackendError> {
        let path = dir.join(REDO_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error("open the redo file", &e))?;
        if !existed {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("sync the store directory", &e))?;
        }
        let data = std::fs::read(&path).map_err(|e| io_error("read the redo file", &e))?;
        let mut at = 0;
        let mut applied = 0usize;
        while at < data.len() {
            match frame_at(&data, at) {
                Frame::Record(payload) => {
                    let writes = decode_payload(payload)
                        .ok_or_else(|| corrupt_at(&path, at, "undecodable record"))?;
                    for (tree, key, value) in writes {
                        let tree = trees[tree as usize];
                        match value {
                            Some(value) => tree.insert(key, value).map(drop),
                            None => tree.remove(key).map(drop),
                        }
                        .map_err(sled_error)?;
                    }
                    applied += 1;
                    at += FRAME_LEN + payload.len();
                }
                Frame::Torn => break,
                Frame::Bad => return Err(corrupt_at(&path, at, "checksum mismatch")),
            }
        }
        if at < data.len() {
            tracing::warn!(
                file = %path.display(),
                offset = at,
                "cut the torn tail of the redo file (a layer that never reached sled)"
            );
            file.set_len(at as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("cut the redo file", &e))?;
        }
        if applied > 0 {
            tracing::info!(layers = applied, "re-applied layers from the redo file");
        }
        Ok(Redo {
            path,
            file,
            len: at as u64,
            buf: Vec::new(),
        })
    }

    /// Appends a layer's writes as one record and `fdatasync`s it.
    pub(super) fn append<'a>(
        &mut self,
        writes: impl Iterator<Item = RedoWrite<'a>>,
    ) -> Result<(), BackendError> {
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(&[0; FRAME_LEN]);
        buf.push(KIND_LAYER);
        buf.extend_from_slice(&[0; 4]);
        let mut count = 0u32;
        for (tree, key, value) in writes {
            buf.push(tree as u8);
            match value {
                Some(value) => {
                    buf.push(OP_PUT);
                    put_len_bytes(buf, key)?;
                    put_len_bytes(buf, value)?;
                }
                None => {
                    buf.push(OP_REMOVE);
                    put_len_bytes(buf, key)?;
                }
            }
            count = count.checked_add(1).ok_or_else(too_large)?;
        }
        buf[FRAME_LEN + 1..FRAME_LEN + 5].copy_from_slice(&count.to_be_bytes());
        let len = u32::try_from(buf.len() - FRAME_LEN).map_err(|_| too_large())?;
        seal(buf, len);
        self.file
            .write_all_at(buf, self.len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_error("append to the redo file", &e))?;
        self.len += buf.len() as u64;
        if buf.capacity() > 4 << 20 {
            *buf = Vec::new();
        }
        Ok(())
    }

    /// Bytes of records the file holds.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Empties the file once sled is durable: truncated and `fsync`ed, so that no record can
    /// come back after a crash.
    pub(super) fn clear(&mut self) -> Result<(), BackendError> {
        if self.len == 0 {
            return Ok(());
        }
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| io_error(&format!("empty {}", self.path.display()), &e))?;
        self.len = 0;
        Ok(())
    }
}

fn too_large() -> BackendError {
    BackendError::Io("a layer is too large for the redo file".to_string())
}

fn put_len_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), BackendError> {
    let len = u32::try_from(bytes.len()).map_err(|_| too_large())?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

enum Frame<'a> {
    Record(&'a [u8]),
    /// The frame runs past the end of the file (or is all zeros): a write cut short.
    Torn,
    /// A complete frame whose checksum does not match.
    Bad,
}

fn frame_at(data: &[u8], at: usize) -> Frame<'_> {
    let Some(head) = data.get(at..at + FRAME_LEN) else {
        return Frame::Torn;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > MAX_PAYLOAD {
        return Frame::Torn;
    }
    let Some(payload) = data.get(at + FRAME_LEN..at + FRAME_LEN + len) else {
        return Frame::Torn;
    };
    if !checks_out(head, payload) {
        // The last record's bytes may have reached the disk only in part.
        return if at + FRAME_LEN + len == data.len() {
            Frame::Torn
        } else {
            Frame::Bad
        };
    }
    Frame::Record(payload)
}

fn decode_payload(payload: &[u8]) -> Option<Vec<RedoWrite<'_>>> {
    let (&kind, rest) = payload.split_first()?;
    if kind != KIND_LAYER {
        return None;
    }
    let (count, mut rest) = take_u32(rest)?;
    let mut writes = Vec::with_capacity((count as usize).min(rest.len() / 6));
    for _ in 0..count {
        let (&tree, r) = rest.split_first()?;
        let tree = match tree {
            0 => TreeId::Kv,
            1 => TreeId::Log,
            2 => TreeId::History,
            3 => TreeId::Meta,
            _ => return None,
        };
        let (&op, r) = r.split_first()?;
        let (key, r) = take_bytes(r)?;
        let (value, r) = match op {
            OP_PUT => {
                let (value, r) = take_bytes(r)?;
                (Some(value), r)
            }
            OP_REMOVE => (None, r),
            _ => return None,
        };
        writes.push((tree, key, value));
        rest = r;
    }
    rest.is_empty().then_some(writes)
}

fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), rest))
}

fn take_bytes(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = take_u32(bytes)?;
    let len = len as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn corrupt_at(path: &Path, offset: usize, what: &str) -> BackendError {
    BackendError::Corrupt(format!(
        "{}: {what} at offset {offset}; the store cannot be opened safely",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trees(db: &::sled::Db) -> [Tree; 4] {
        ["kv", "log", "history", "meta"].map(|n| db.open_tree(n).unwrap())
    }

    fn refs(t: &[Tree; 4]) -> [&Tree; 4] {
        [&t[0], &t[1], &t[2], &t[3]]
    }

    #[test]
    fn records_are_reapplied_in_order_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let db = ::sled::Config::new().temporary(true).open().unwrap();
        let t = trees(&db);
        let mut redo = Redo::open(dir.path(), refs(&t)).unwrap();
        redo.append(
            [
                (TreeId::Kv, &b"a"[..], Some(&b"1"[..])),
                (TreeId::Kv, &b"b"[..], Some(&b"2"[..])),
                (TreeId::Meta, &b"m"[..], Some(&b"x"[..])),
            ]
            .into_iter(),
        )
        .unwrap();
        redo.append(
            [
                (TreeId::Kv, &b"a"[..], None),
                (TreeId::Log, &b"l"[..], Some(&b""[..])),
            ]
            .into_iter(),
        )
        .unwrap();
        drop(redo);
        // A third record cut short.
        let path = dir.path().join(REDO_FILE);
        let good = std::fs::metadata(&path).unwrap().len();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 1, 0]);
        std::fs::write(&path, &bytes).unwrap();

        let mut redo = Redo::open(dir.path(), refs(&t)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        assert_eq!(t[0].get(b"a").unwrap(), None);
        assert_eq!(t[0].get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(t[1].get(b"l").unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(t[3].get(b"m").unwrap().as_deref(), Some(&b"x"[..]));
        // Applying again gives the same state; clearing empties the file.
        t[0].insert(b"b", &b"newer"[..]).unwrap();
        drop(redo);
        redo = Redo::open(dir.path(), refs(&t)).unwrap();
        assert_eq!(t[0].get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        redo.clear().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        t[0].insert(b"b", &b"newer"[..]).unwrap();
        drop(redo);
        Redo::open(dir.path(), refs(&t)).unwrap();
        assert_eq!(t[0].get(b"b").unwrap().as_deref(), Some(&b"newer"[..]));
    }

    #[test]
    fn a_damaged_record_before_the_last_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let db = ::sled::Config::new().temporary(true).open().unwrap();
        let t = trees(&db);
        let mut redo = Redo::open(dir.path(), refs(&t)).unwrap();
        for v in [&b"1"[..], &b"2"[..]] {
            redo.append([(TreeId::Kv, &b"a"[..], Some(v))].into_iter())
                .unwrap();
        }
        drop(redo);
        let path = dir.path().join(REDO_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FRAME_LEN + 3] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = Redo::open(dir.path(), refs(&t)).err().unwrap();
        assert!(
            matches!(&err, BackendError::Corrupt(m) if m.contains("redo") && m.contains("offset 0")),
            "{err:?}"
        );
    }
}
