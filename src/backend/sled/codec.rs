//! Byte encodings of the sled backend's trees (the layout is in the parent module's docs):
//! records, tombstones, floor markers and log events, the order-preserving key escape of the
//! `history` tree, and big-endian revision keys. Decoding stored garbage never panics: it
//! gives [`BackendError::Corrupt`].

use ::sled::Tree;

use super::sled_error;
use crate::backend::{BackendError, Event, EventKind, KeyValue, Revision};

pub(super) const TAG_TOMBSTONE: u8 = 0;
pub(super) const TAG_RECORD: u8 = 1;
const TAG_FLOOR: u8 = 2;
const EVENT_PUT: u8 = 1;
const EVENT_DELETE: u8 = 2;
/// Events of format 3: the key and the revision of the version the change replaced; the values
/// are read from `kv` and `history`.
const EVENT_PUT_REF: u8 = 3;
const EVENT_DELETE_REF: u8 = 4;
/// Flag of a format 3 event: after this change its key's history kept versions below its floor
/// for the log; they are pruned when the event leaves the log's window.
const FLAG_REPRUNE: u8 = 1;

pub(super) fn rev_bytes(rev: Revision) -> [u8; 8] {
    // Big-endian, so that revisions sort numerically.
    rev.to_be_bytes()
}

pub(super) fn decode_rev_key(bytes: &[u8]) -> Result<Revision, BackendError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| BackendError::Corrupt(format!("bad revision key of {} bytes", bytes.len())))?;
    Revision::from_be_bytes(arr)
        .ok_or_else(|| BackendError::Corrupt("revision key out of range".to_string()))
}

pub(super) fn read_meta_rev(meta: &Tree, name: &[u8]) -> Result<Revision, BackendError> {
    match meta.get(name).map_err(sled_error)? {
        Some(bytes) => decode_rev_key(&bytes),
        None => Err(BackendError::Corrupt(format!(
            "meta entry {} is missing",
            String::from_utf8_lossy(name)
        ))),
    }
}

pub(super) fn describe_format(found: &[u8]) -> String {
    match <[u8; 4]>::try_from(found) {
        Ok(arr) => u32::from_be_bytes(arr).to_string(),
        Err(_) => format!("0x{}", hex::encode(found)),
    }
}

/// Order-preserving escape: `00` becomes `00 ff`; every other byte is itself.
pub(super) fn escape_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out
}

/// `esc(key) ‖ 00 01`: the prefix of every history entry of `key`.
pub(super) fn history_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = escape_key(key);
    out.extend_from_slice(&[0, 1]);
    out
}

pub(super) fn history_key_with(prefix: &[u8], rev: Revision) -> Vec<u8> {
    history_slot(prefix, rev_bytes(rev))
}

/// `prefix ‖ be64(0)`: where the key's floor marker lives, before all its entries.
pub(super) fn floor_key(prefix: &[u8]) -> Vec<u8> {
    history_slot(prefix, [0; 8])
}

fn history_slot(prefix: &[u8], slot: [u8; 8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 8);
    out.extend_from_slice(prefix);
    out.extend_from_slice(&slot);
    out
}

/// What one entry of a key's history is: the floor marker, or the version at a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// The floor marker (`be64(0)`).
    Floor,
    /// The version written at this revision.
    At(Revision),
}

fn decode_slot(bytes: &[u8]) -> Result<Slot, BackendError> {
    if bytes == [0; 8] {
        Ok(Slot::Floor)
    } else {
        decode_rev_key(bytes).map(Slot::At)
    }
}

/// Splits a history key into the key and the slot.
pub(super) fn decode_history_key(hkey: &[u8]) -> Result<(Vec<u8>, Slot), BackendError> {
    let bad = || BackendError::Corrupt("malformed history key".to_string());
    let mut key = Vec::with_capacity(hkey.len());
    let mut i = 0;
    loop {
        match hkey.get(i) {
            None => return Err(bad()),
            Some(0) => match hkey.get(i + 1) {
                Some(0xff) => {
                    key.push(0);
                    i += 2;
                }
                Some(1) => {
                    i += 2;
                    break;
                }
                _ => return Err(bad()),
            },
            Some(&b) => {
                key.push(b);
                i += 1;
            }
        }
    }
    Ok((key, decode_slot(&hkey[i..])?))
}

pub(super) fn decode_history_slot(prefix: &[u8], hkey: &[u8]) -> Result<Slot, BackendError> {
    match hkey.strip_prefix(prefix) {
        Some(rest) => decode_slot(rest),
        None => Err(BackendError::Corrupt(
            "history key outside its prefix".to_string(),
        )),
    }
}

pub(super) fn corrupt_history(prefix: &[u8], rev: Revision) -> BackendError {
    BackendError::Corrupt(format!(
        "history entry {rev} of key {} is malformed",
        hex::encode(prefix)
    ))
}

pub(super) fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + kv.value.len());
    out.push(TAG_RECORD);
    put_revisions(&mut out, kv);
    out.extend_from_slice(&kv.value);
    out
}

/// `be64(create_revision) ‖ be64(mod_revision) ‖ be64(version)`; no create revision (a delete
/// event) is 0.
fn put_revisions(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.create_revision.map_or(0, Revision::get).to_be_bytes());
    out.extend_from_slice(&kv.mod_revision.to_be_bytes());
    out.extend_from_slice(&kv.version.to_be_bytes());
}

pub(super) fn decode_record(key: &[u8], bytes: &[u8]) -> Result<KeyValue, BackendError> {
    let mut r = Reader::new(bytes);
    if r.u8()? != TAG_RECORD {
        return Err(BackendError::Corrupt("expected a record".to_string()));
    }
    let create_revision = r.revision()?;
    let mod_revision = r.revision()?;
    let version = r.i64()?;
    Ok(KeyValue {
        key: key.to_vec(),
        value: r.rest().to_vec(),
        create_revision: Some(create_revision),
        mod_revision,
        version,
    })
}

/// The `mod_revision` of an encoded record, without decoding (or copying) its value.
pub(super) fn record_mod_revision(bytes: &[u8]) -> Result<Revision, BackendError> {
    let mut r = Reader::new(bytes);
    if r.u8()? != TAG_RECORD {
        return Err(BackendError::Corrupt("expected a record".to_string()));
    }
    r.revision()?;
    r.revision()
}

pub(super) fn encode_tombstone(rev: Revision) -> Vec<u8> {
    let mut out = vec![TAG_TOMBSTONE];
    out.extend_from_slice(&rev.to_be_bytes());
    out
}

pub(super) fn encode_floor(floor: Revision) -> Vec<u8> {
    let mut out = vec![TAG_FLOOR];
    out.extend_from_slice(&floor.to_be_bytes());
    out
}

pub(super) fn decode_floor(bytes: &[u8]) -> Result<Revision, BackendError> {
    let mut r = Reader::new(bytes);
    if r.u8()? != TAG_FLOOR {
        return Err(BackendError::Corrupt("expected a floor marker".to_string()));
    }
    r.revision()
}

/// A history entry: a record, or a tombstone (None).
pub(super) fn decode_history_value(
    key: &[u8],
    bytes: &[u8],
) -> Result<Option<KeyValue>, BackendError> {
    match bytes.first() {
        Some(&TAG_TOMBSTONE) => Ok(None),
        _ => decode_record(key, bytes).map(Some),
    }
}

/// A log event as stored: self-contained (stores of format 2), or a reference to the versions
/// in `kv` and `history` (format 3).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LoggedEvent {
    /// The whole event, values included.
    Full(Event),
    /// A change of `key` at the log entry's revision; `prev` is the revision of the version it
    /// replaced, if the key existed.
    Ref {
        kind: EventKind,
        key: Vec<u8>,
        prev: Option<Revision>,
    },
}

/// `kind ‖ be64(key len) ‖ key ‖ be64(replaced revision or 0) ‖ flags`: an event without values.
pub(super) fn encode_event_ref(
    kind: EventKind,
    key: &[u8],
    prev: Option<Revision>,
    reprune: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + key.len());
    out.push(match kind {
        EventKind::Put => EVENT_PUT_REF,
        EventKind::Delete => EVENT_DELETE_REF,
    });
    put_bytes(&mut out, key);
    out.extend_from_slice(&prev.map_or(0, Revision::get).to_be_bytes());
    out.push(if reprune { FLAG_REPRUNE } else { 0 });
    out
}

pub(super) fn decode_logged_event(bytes: &[u8]) -> Result<LoggedEvent, BackendError> {
    let kind = match bytes.first() {
        Some(&EVENT_PUT_REF) => EventKind::Put,
        Some(&EVENT_DELETE_REF) => EventKind::Delete,
        _ => return decode_event(bytes).map(LoggedEvent::Full),
    };
    let mut r = Reader::new(&bytes[1..]);
    let key = r.bytes()?.to_vec();
    let prev = Revision::new(r.i64()?);
    let flags = r.u8()?;
    if flags & !FLAG_REPRUNE != 0 || !r.rest().is_empty() {
        return Err(BackendError::Corrupt("malformed log event".to_string()));
    }
    Ok(LoggedEvent::Ref { kind, key, prev })
}

#[cfg(test)]
pub(super) fn encode_event(event: &Event) -> Vec<u8> {
    let prev_len = event.prev.as_ref().map_or(0, |p| p.value.len() + 40);
    let mut out = Vec::with_capacity(64 + event.kv.key.len() + event.kv.value.len() + prev_len);
    out.push(match event.kind {
        EventKind::Put => EVENT_PUT,
        EventKind::Delete => EVENT_DELETE,
    });
    put_bytes(&mut out, &event.kv.key);
    put_kv_fields(&mut out, &event.kv);
    match &event.prev {
        Some(prev) => {
            out.push(1);
            put_kv_fields(&mut out, prev);
        }
        None => out.push(0),
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
fn put_kv_fields(out: &mut Vec<u8>, kv: &KeyValue) {
    put_revisions(out, kv);
    put_bytes(out, &kv.value);
}

pub(super) fn decode_event(bytes: &[u8]) -> Result<Event, BackendError> {
    let mut r = Reader::new(bytes);
    let kind = match r.u8()? {
        EVENT_PUT => EventKind::Put,
        EVENT_DELETE => EventKind::Delete,
        other => return Err(BackendError::Corrupt(format!("unknown event kind {other}"))),
    };
    let key = r.bytes()?.to_vec();
    let kv = r.kv_fields(&key)?;
    let prev = match r.u8()? {
        0 => None,
        1 => Some(r.kv_fields(&key)?),
        other => return Err(BackendError::Corrupt(format!("bad prev flag {other}"))),
    };
    if !r.rest().is_empty() {
        return Err(BackendError::Corrupt(
            "trailing bytes in a log event".to_string(),
        ));
    }
    Ok(Event { kind, kv, prev })
}

/// What leaving the log's window asks of a log event's key, read without decoding values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnLeaving {
    /// Nothing.
    Nothing,
    /// A delete: the key's history goes when it leaves.
    Deleted,
    /// The key's history kept versions below its floor for the log: prune them.
    Reprune,
}

/// The key of a log event and what its leaving the log's window asks, without decoding the
/// rest of it.
pub(super) fn leaving_of_event(bytes: &[u8]) -> Result<(&[u8], OnLeaving), BackendError> {
    let mut r = Reader::new(bytes);
    let kind = r.u8()?;
    let key = r.bytes()?;
    let on_leaving = match kind {
        EVENT_PUT => OnLeaving::Nothing,
        EVENT_DELETE | EVENT_DELETE_REF => OnLeaving::Deleted,
        EVENT_PUT_REF => {
            r.i64()?;
            if r.u8()? & FLAG_REPRUNE != 0 {
                OnLeaving::Reprune
            } else {
                OnLeaving::Nothing
            }
        }
        other => return Err(BackendError::Corrupt(format!("unknown event kind {other}"))),
    };
    Ok((key, on_leaving))
}

/// A bounds-checked cursor over stored bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BackendError> {
        if self.bytes.len() < n {
            return Err(BackendError::Corrupt("truncated stored value".to_string()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, BackendError> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, BackendError> {
        let mut arr = [0u8; 8];
        arr.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(arr))
    }

    /// A revision: a stored number below 1 is corrupt.
    fn revision(&mut self) -> Result<Revision, BackendError> {
        let r = self.i64()?;
        Revision::new(r)
            .ok_or_else(|| BackendError::Corrupt(format!("stored revision {r} is below 1")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], BackendError> {
        let len = u64::from_be_bytes(self.i64()?.to_be_bytes());
        let len = usize::try_from(len)
            .map_err(|_| BackendError::Corrupt("stored length out of range".to_string()))?;
        self.take(len)
    }

    fn kv_fields(&mut self, key: &[u8]) -> Result<KeyValue, BackendError> {
        // A delete event has no create revision (0).
        let create_revision = Revision::new(self.i64()?);
        let mod_revision = self.revision()?;
        let version = self.i64()?;
        let value = self.bytes()?.to_vec();
        Ok(KeyValue {
            key: key.to_vec(),
            value,
            create_revision,
            mod_revision,
            version,
        })
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_round_trip_and_keep_key_order() {
        let keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![0, 1],
            vec![0, 0xff],
            vec![1],
            b"a".to_vec(),
            b"a\x00".to_vec(),
            b"a\x00\x01".to_vec(),
            b"a\x01".to_vec(),
            b"ab".to_vec(),
            vec![0xff, 0xff],
        ];
        let mut encoded = Vec::new();
        for key in &keys {
            let floor = floor_key(&history_prefix(key));
            assert_eq!(
                decode_history_key(&floor).unwrap(),
                (key.clone(), Slot::Floor)
            );
            encoded.push((floor, key.clone(), 0));
            for rev in [1, 2, 300, i64::MAX] {
                let revision = Revision::new(rev).unwrap();
                let hkey = history_key_with(&history_prefix(key), revision);
                assert_eq!(
                    decode_history_key(&hkey).unwrap(),
                    (key.clone(), Slot::At(revision))
                );
                encoded.push((hkey, key.clone(), rev));
            }
        }
        // Sorting the encodings sorts by (key, revision), the floor marker first.
        encoded.sort_by(|a, b| a.0.cmp(&b.0));
        let order: Vec<(Vec<u8>, i64)> = encoded.iter().map(|(_, k, r)| (k.clone(), *r)).collect();
        let mut expected = order.clone();
        expected.sort();
        assert_eq!(order, expected);
        // A key's prefix never matches another key's entries.
        for a in &keys {
            for (hkey, b, _) in &encoded {
                assert_eq!(hkey.starts_with(&history_prefix(a)), a == b);
            }
        }
    }

    #[test]
    fn escaped_prefix_selects_exactly_the_keys_with_that_prefix() {
        let keys: [&[u8]; 6] = [b"a", b"a\x00", b"a\x00b", b"\x00", b"\x00\xff", b"b"];
        for p in keys.iter().chain([&b""[..], b"a\x00"].iter()) {
            for k in keys {
                let hkey = history_key_with(&history_prefix(k), rev(5));
                assert_eq!(
                    hkey.starts_with(&escape_key(p)),
                    k.starts_with(p),
                    "{p:?} {k:?}"
                );
            }
        }
    }

    fn rev(r: i64) -> Revision {
        Revision::new(r).unwrap()
    }

    #[test]
    fn events_round_trip_and_garbage_is_corrupt_not_a_panic() {
        let event = Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: b"k\x00".to_vec(),
                value: vec![1, 2, 3],
                create_revision: Some(rev(2)),
                mod_revision: rev(5),
                version: 3,
            },
            prev: Some(KeyValue {
                key: b"k\x00".to_vec(),
                value: vec![9],
                create_revision: Some(rev(2)),
                mod_revision: rev(4),
                version: 2,
            }),
        };
        let bytes = encode_event(&event);
        assert_eq!(decode_event(&bytes).unwrap(), event);
        let delete = Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: b"k\x00".to_vec(),
                value: Vec::new(),
                create_revision: None,
                mod_revision: rev(6),
                version: 0,
            },
            prev: event.prev.clone(),
        };
        assert_eq!(decode_event(&encode_event(&delete)).unwrap(), delete);
        assert_eq!(
            leaving_of_event(&encode_event(&delete)).unwrap(),
            (&b"k\x00"[..], OnLeaving::Deleted)
        );
        assert_eq!(
            leaving_of_event(&bytes).unwrap(),
            (&b"k\x00"[..], OnLeaving::Nothing)
        );
        assert!(leaving_of_event(&[]).is_err());
        assert!(leaving_of_event(&[EVENT_DELETE, 0, 0]).is_err());
        assert!(leaving_of_event(&[9]).is_err());
        assert_eq!(
            decode_logged_event(&bytes).unwrap(),
            LoggedEvent::Full(event.clone())
        );
        // Format 3 events: no values.
        for (kind, prev, reprune, leaving) in [
            (EventKind::Put, Some(rev(4)), true, OnLeaving::Reprune),
            (EventKind::Put, None, false, OnLeaving::Nothing),
            (EventKind::Delete, Some(rev(4)), false, OnLeaving::Deleted),
        ] {
            let refd = encode_event_ref(kind, b"k\x00", prev, reprune);
            assert_eq!(
                decode_logged_event(&refd).unwrap(),
                LoggedEvent::Ref {
                    kind,
                    key: b"k\x00".to_vec(),
                    prev
                }
            );
            assert_eq!(leaving_of_event(&refd).unwrap(), (&b"k\x00"[..], leaving));
            for cut in 0..refd.len() {
                assert!(decode_logged_event(&refd[..cut]).is_err());
            }
            let mut extra = refd.clone();
            extra.push(0);
            assert!(decode_logged_event(&extra).is_err());
        }
        // A record or floor below revision 1 is corrupt.
        let mut zero = encode_record(&event.prev.clone().unwrap());
        zero[9..17].copy_from_slice(&0i64.to_be_bytes());
        assert!(decode_record(b"k", &zero).is_err());
        assert!(decode_floor(&[TAG_FLOOR, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        for cut in 0..bytes.len() {
            assert!(decode_event(&bytes[..cut]).is_err());
        }
        let mut huge_len = bytes.clone();
        huge_len[1..9].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_event(&huge_len).is_err());
        assert!(decode_record(b"k", &[]).is_err());
        assert!(decode_record(b"k", &[TAG_RECORD, 0, 0]).is_err());
        assert!(decode_history_key(&[1, 2, 0]).is_err());
        assert!(decode_history_key(&[1, 0, 1, 0]).is_err());
        assert!(decode_floor(&[TAG_RECORD]).is_err());
    }
}
