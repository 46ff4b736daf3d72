//! A stored kms v2 `EncryptedObject` read in place (facts §3.2): the ciphertext, key_id and
//! wrapped seed borrow the stored value instead of being copied out of it.
//!
//! The record kube-apiserver and keyward write (fields 1–5, each once, annotations as map
//! entries of a key and a value) is parsed here by hand. Anything else that is still valid
//! protobuf (unknown fields, groups, fields repeated) is left to prost's decoder of the same
//! message, so the result, and every error, is exactly what decoding the generated type gives.

use std::borrow::Cow;
use std::collections::BTreeMap;

use prost::Message;

use crate::pb::kms_v2 as v2;

/// The fields of a stored `EncryptedObject`, borrowed from the stored bytes where the record
/// has the usual shape, owned when prost had to decode it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct StoredObject<'a> {
    /// `encryptedData` (field 1): `info ‖ nonce ‖ ciphertext ‖ tag` in KDF mode.
    pub(super) encrypted_data: Cow<'a, [u8]>,
    /// `keyID` (field 2).
    pub(super) key_id: Cow<'a, str>,
    /// `encryptedDEKSource` (field 3): the seed or DEK as the plugin wrapped it.
    pub(super) encrypted_dek_source: Cow<'a, [u8]>,
    /// `annotations` (field 4); empty, and then not allocated, for most plugins.
    pub(super) annotations: BTreeMap<String, Vec<u8>>,
    /// `encryptedDEKSourceType` (field 5).
    pub(super) source_type: i32,
}

impl<'a> StoredObject<'a> {
    /// Reads `body` (the stored value after the provider prefix) as
    /// `v2::EncryptedObject::decode` would, failing with the same error.
    pub(super) fn decode(body: &'a [u8]) -> Result<Self, prost::DecodeError> {
        if let Some(obj) = parse(body) {
            return Ok(obj);
        }
        let obj = v2::EncryptedObject::decode(body)?;
        Ok(StoredObject {
            encrypted_data: Cow::Owned(obj.encrypted_data),
            key_id: Cow::Owned(obj.key_id),
            encrypted_dek_source: Cow::Owned(obj.encrypted_dek_source),
            annotations: obj.annotations,
            source_type: obj.encrypted_dek_source_type,
        })
    }
}

/// Protobuf wire types this parser reads.
const VARINT: u64 = 0;
const LEN: u64 = 2;

/// A cursor over protobuf bytes; every read returns `None` where prost would either fail or
/// need its general decoder.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A base-128 varint of at most 10 bytes whose value fits 64 bits.
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for (i, &b) in self.0.iter().enumerate().take(10) {
            if i == 9 && b > 1 {
                return None;
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.0 = &self.0[i + 1..];
                return Some(value);
            }
        }
        None
    }

    /// A field's key: `(field number, wire type)`.
    fn key(&mut self) -> Option<(u64, u64)> {
        let key = self.varint()?;
        let field = key >> 3;
        (key <= u64::from(u32::MAX) && field != 0).then_some((field, key & 7))
    }

    /// A length-delimited field's contents.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (v, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(v)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The usual shape of the record, borrowed; `None` for anything else.
fn parse(body: &[u8]) -> Option<StoredObject<'_>> {
    let mut obj = StoredObject {
        encrypted_data: Cow::Borrowed(&[]),
        key_id: Cow::Borrowed(""),
        encrypted_dek_source: Cow::Borrowed(&[]),
        annotations: BTreeMap::new(),
        source_type: 0,
    };
    let mut r = Reader(body);
    while !r.is_empty() {
        // A later occurrence of a singular field replaces the earlier one, as in prost.
        match r.key()? {
            (1, LEN) => obj.encrypted_data = Cow::Borrowed(r.bytes()?),
            (2, LEN) => obj.key_id = Cow::Borrowed(std::str::from_utf8(r.bytes()?).ok()?),
            (3, LEN) => obj.encrypted_dek_source = Cow::Borrowed(r.bytes()?),
            (4, LEN) => {
                let (k, v) = map_entry(r.bytes()?)?;
                obj.annotations.insert(k, v);
            }
            // prost reads an int32 as a varint truncated to 32 bits.
            (5, VARINT) => obj.source_type = r.varint()? as i32,
            _ => return None,
        }
    }
    Some(obj)
}

/// One `annotations` entry: key (field 1) and value (field 2), each defaulting to empty.
fn map_entry(entry: &[u8]) -> Option<(String, Vec<u8>)> {
    let (mut key, mut value): (&str, &[u8]) = ("", &[]);
    let mut r = Reader(entry);
    while !r.is_empty() {
        match r.key()? {
            (1, LEN) => key = std::str::from_utf8(r.bytes()?).ok()?,
            (2, LEN) => value = r.bytes()?,
            _ => return None,
        }
    }
    Some((key.to_owned(), value.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owned(obj: &StoredObject<'_>) -> v2::EncryptedObject {
        v2::EncryptedObject {
            encrypted_data: obj.encrypted_data.to_vec(),
            key_id: obj.key_id.to_string(),
            encrypted_dek_source: obj.encrypted_dek_source.to_vec(),
            annotations: obj.annotations.clone(),
            encrypted_dek_source_type: obj.source_type,
        }
    }

    fn record() -> v2::EncryptedObject {
        v2::EncryptedObject {
            encrypted_data: vec![7; 80],
            key_id: "key-1".into(),
            encrypted_dek_source: vec![9; 40],
            annotations: BTreeMap::from([("a.example.io".to_owned(), b"x".to_vec())]),
            encrypted_dek_source_type: 1,
        }
    }

    /// What keyward writes is read in place: every field borrows the stored bytes.
    #[test]
    fn the_usual_record_is_borrowed() {
        let bytes = record().encode_to_vec();
        let obj = parse(&bytes).expect("the usual shape");
        assert!(matches!(obj.encrypted_data, Cow::Borrowed(_)));
        assert!(matches!(obj.key_id, Cow::Borrowed(_)));
        assert!(matches!(obj.encrypted_dek_source, Cow::Borrowed(_)));
        assert_eq!(owned(&obj), record());
        assert_eq!(StoredObject::decode(&bytes).unwrap(), obj);
    }

    /// Shapes the hand parser leaves to prost still decode, to what prost decodes.
    #[test]
    fn other_valid_encodings_go_through_prost() {
        let mut bytes = record().encode_to_vec();
        bytes.extend_from_slice(&[0x30, 0x05]); // field 6, varint: unknown to the schema
        assert!(parse(&bytes).is_none());
        let obj = StoredObject::decode(&bytes).unwrap();
        assert_eq!(owned(&obj), record());
        // A field repeated: the last one wins in both.
        let mut twice = record().encode_to_vec();
        twice.extend_from_slice(&[0x12, 0x01, b'z']);
        let obj = StoredObject::decode(&twice).unwrap();
        assert_eq!(obj.key_id, "z");
        assert_eq!(obj, parse(&twice).unwrap());
    }

    /// Invalid records fail with prost's own error.
    #[test]
    fn invalid_records_fail_as_prost_fails() {
        for bad in [
            &[0x0a, 0x05, 1][..],          // length past the end
            &[0x12, 0x02, 0xff, 0xfe][..], // key_id not UTF-8
            &[0x2a, 0x00][..],             // field 5 with the wrong wire type
            &[0x00][..],                   // field 0
            &[0x80; 11][..],               // varint too long
        ] {
            let ours = StoredObject::decode(bad).unwrap_err().to_string();
            let prost = v2::EncryptedObject::decode(bad).unwrap_err().to_string();
            assert_eq!(ours, prost, "{bad:?}");
        }
    }

    fn arb_record() -> impl Strategy<Value = v2::EncryptedObject> {
        (
            proptest::collection::vec(any::<u8>(), 0..200),
            ".{0,20}",
            proptest::collection::vec(any::<u8>(), 0..50),
            proptest::collection::btree_map(
                ".{0,10}",
                proptest::collection::vec(any::<u8>(), 0..10),
                0..3,
            ),
            any::<i32>(),
        )
            .prop_map(|(d, k, s, a, t)| v2::EncryptedObject {
                encrypted_data: d,
                key_id: k,
                encrypted_dek_source: s,
                annotations: a,
                encrypted_dek_source_type: t,
            })
    }

    proptest! {
        /// Every record prost writes is read by the hand parser, to the same values.
        #[test]
        fn parses_what_prost_writes(rec in arb_record()) {
            let bytes = rec.encode_to_vec();
            let obj = parse(&bytes).expect("prost's own encoding");
            prop_assert_eq!(owned(&obj), rec);
        }

        /// On any bytes (records with bytes changed, cut or added, and noise) the result is
        /// prost's: the same values, or an error with the same text.
        #[test]
        fn agrees_with_prost_on_any_bytes(
            rec in arb_record(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut bytes = rec.encode_to_vec();
            if !bytes.is_empty() {
                for (i, b) in &edits {
                    let at = i.index(bytes.len());
                    bytes[at] = *b;
                }
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend_from_slice(&tail);
            let ours = StoredObject::decode(&bytes).map(|o| owned(&o)).map_err(|e| e.to_string());
            let prost = v2::EncryptedObject::decode(bytes.as_slice()).map_err(|e| e.to_string());
            prop_assert_eq!(ours, prost);
        }
    }
}
