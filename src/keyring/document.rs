//! The keyring document: what is persisted, how it is sealed and authenticated, and the
//! in-memory snapshot built from it.
//!
//! The document is JSON ([`Doc`]), stored as `HMAC-SHA256(mac_key, json) ‖ json`. Every KEK's
//! material inside it is sealed with XChaCha20-Poly1305 under `seal_key`, with associated data
//! binding it to the keyring id, its id, sequence number, creation time and algorithm
//! ([`kek_aad`]). `seal_key` and `mac_key` are derived from the root key with HKDF-Expand, so a
//! wrong root key fails the MAC before anything is changed, and any edit of the stored bytes
//! (states, counters, order) is detected.
//!
//! ```text
//! root key ─┬─ HKDF-Expand(root, "keyward/v1 kek-seal")    → seal_key  (XChaCha20-Poly1305)
//!           └─ HKDF-Expand(root, "keyward/v1 keyring-mac") → mac_key   (HMAC-SHA256)
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::envelope::KEK_ID_LEN;
use super::{InitOptions, KeyInfo, KeyState, KeyringError};
use crate::crypto::{self, AeadKey, Algorithm, Key32};
use crate::seal::{self, KdfParams, RootKey, SealSpec};

/// Format of the keyring document.
const FORMAT_VERSION: u64 = 1;
const INFO_SEAL: &[u8] = b"keyward/v1 kek-seal";
const INFO_MAC: &[u8] = b"keyward/v1 keyring-mac";
/// Length of the MAC in front of the stored JSON.
const MAC_LEN: usize = 32;

/// The persisted keyring.
#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct Doc {
    pub format: u64,
    /// Random id chosen at init (hex).
    pub keyring_id: String,
    /// Algorithm of new KEKs.
    pub algorithm: String,
    pub seal: SealRecord,
    /// Sequence number of the next KEK.
    pub next_seq: u64,
    /// Every KEK, oldest first.
    pub keys: Vec<KeyRecord>,
}

/// The root key's source, and its parameters (not secret).
#[derive(Serialize, Deserialize, Clone)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub(super) enum SealRecord {
    Keyfile,
    PassphraseFile { argon2id: KdfParams },
}

impl SealRecord {
    pub fn kind(&self) -> &'static str {
        match self {
            SealRecord::Keyfile => "keyfile",
            SealRecord::PassphraseFile { .. } => "passphrase-file",
        }
    }
}

/// One persisted KEK.
#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyRecord {
    /// Binary id (hex).
    pub id: String,
    pub seq: u64,
    pub state: KeyState,
    pub algorithm: String,
    pub created_unix: i64,
    /// Encryptions reserved so far: an upper bound of the encryptions made.
    pub encryptions_reserved: u64,
    /// base64(nonce ‖ sealed material ‖ tag); absent once destroyed.
    pub sealed: Option<String>,
}

impl KeyRecord {
    /// The public key_id of this record.
    pub fn key_id(&self) -> Result<String, KeyringError> {
        Ok(key_id_string(self.seq, &parse_id(&self.id)?))
    }
}

/// A document whose MAC checked out under the root key, and the keys derived from that root.
pub(super) struct Unsealed {
    pub doc: Doc,
    pub seal_key: Key32,
    pub mac_key: Key32,
    pub keyring_id: [u8; 16],
    pub algorithm: Algorithm,
}

// ----- in-memory form -----

/// Encryptions under one KEK: used, and reserved (persisted).
#[derive(Default)]
pub(super) struct Counter {
    pub used: AtomicU64,
    pub reserved: AtomicU64,
}

/// A KEK ready to use.
pub(super) struct Kek {
    pub id: [u8; KEK_ID_LEN],
    pub key_id: Arc<str>,
    pub seq: u64,
    pub state: KeyState,
    pub alg: Algorithm,
    pub created_unix: i64,
    /// None once destroyed.
    pub cipher: Option<AeadKey>,
    pub counter: Arc<Counter>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({}, {})", self.key_id, self.state.name())
    }
}

impl Kek {
    pub fn info(&self) -> KeyInfo {
        KeyInfo {
            key_id: self.key_id.to_string(),
            seq: self.seq,
            state: self.state,
            algorithm: self.alg,
            created_unix: self.created_unix,
            encryptions: self.counter.used.load(Ordering::Relaxed),
        }
    }
}

/// What the hot path reads: swapped whole on every change.
pub(super) struct Snapshot {
    pub primary: Arc<Kek>,
    pub by_id: HashMap<[u8; KEK_ID_LEN], Arc<Kek>>,
    pub ordered: Vec<Arc<Kek>>,
}

/// Counters by KEK id; they outlive snapshots, so counts carry over every change.
pub(super) type Counters = HashMap<[u8; KEK_ID_LEN], Arc<Counter>>;

pub(super) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A KEK's public key_id: `kw-<seq>-<hex of its binary id>`.
pub(super) fn key_id_string(seq: u64, id: &[u8; KEK_ID_LEN]) -> String {
    format!("kw-{seq}-{}", hex::encode(id))
}

/// The associated data sealing a KEK's material to its keyring, id, position and algorithm.
fn kek_aad(
    keyring_id: &[u8; 16],
    rec_id: &[u8; KEK_ID_LEN],
    seq: u64,
    alg: &str,
    created: i64,
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"keyward/v1 kek\0");
    aad.extend_from_slice(keyring_id);
    aad.extend_from_slice(rec_id);
    aad.extend_from_slice(&seq.to_be_bytes());
    aad.extend_from_slice(&created.to_be_bytes());
    aad.extend_from_slice(alg.as_bytes());
    aad
}

pub(super) fn parse_id(s: &str) -> Result<[u8; KEK_ID_LEN], KeyringError> {
    let mut id = [0u8; KEK_ID_LEN];
    hex::decode_to_slice(s, &mut id)
        .map_err(|_| KeyringError::Corrupt(format!("bad key id {s:?}")))?;
    Ok(id)
}

fn derive_root(spec: &SealSpec, record: &SealRecord) -> Result<RootKey, KeyringError> {
    match (spec, record) {
        (SealSpec::KeyFile(p), SealRecord::Keyfile) => Ok(seal::read_keyfile(p)?),
        (SealSpec::PassphraseFile(p), SealRecord::PassphraseFile { argon2id }) => {
            Ok(seal::derive_from_passphrase_file(p, argon2id)?)
        }
        _ => Err(KeyringError::SealMismatch {
            keyring: record.kind(),
            given: spec.kind(),
        }),
    }
}

/// A new KEK record (primary, nothing reserved) appended at `doc.next_seq`, sealed under
/// `seal_key`.
pub(super) fn new_key_record(
    doc: &mut Doc,
    keyring_id: &[u8; 16],
    seal_key: &Key32,
    alg: Algorithm,
) -> Result<KeyRecord, KeyringError> {
    let id = crypto::random_array::<KEK_ID_LEN>()?;
    let seq = doc.next_seq;
    doc.next_seq += 1;
    let created = now_unix();
    let material = Key32::generate()?;
    let aad = kek_aad(keyring_id, &id, seq, alg.name(), created);
    let sealed = AeadKey::new(Algorithm::XChaCha20Poly1305, seal_key)
        .seal_random_nonce(&aad, material.expose())?;
    Ok(KeyRecord {
        id: hex::encode(id),
        seq,
        state: KeyState::Primary,
        algorithm: alg.name().to_owned(),
        created_unix: created,
        encryptions_reserved: 0,
        sealed: Some(B64.encode(sealed)),
    })
}

/// A new keyring document with its first KEK, encoded for storage, and that KEK's info. Reads
/// the root key from `spec` (Argon2id for a passphrase: slow, call it off the async workers).
pub(super) fn new_doc(
    spec: &SealSpec,
    opts: &InitOptions,
) -> Result<(Vec<u8>, KeyInfo), KeyringError> {
    let record = match spec {
        SealSpec::KeyFile(_) => SealRecord::Keyfile,
        SealSpec::PassphraseFile(_) => SealRecord::PassphraseFile {
            argon2id: match &opts.kdf {
                Some(k) => k.clone(),
                None => KdfParams::recommended()?,
            },
        },
    };
    let root = derive_root(spec, &record)?;
    let keyring_id = crypto::random_array::<16>()?;
    let seal_key = crypto::hkdf_expand(root.key(), INFO_SEAL);
    let mac_key = crypto::hkdf_expand(root.key(), INFO_MAC);
    let mut doc = Doc {
        format: FORMAT_VERSION,
        keyring_id: hex::encode(keyring_id),
        algorithm: opts.algorithm.name().to_owned(),
        seal: record,
        next_seq: 1,
        keys: Vec::new(),
    };
    let rec = new_key_record(&mut doc, &keyring_id, &seal_key, opts.algorithm)?;
    let info = KeyInfo {
        key_id: rec.key_id()?,
        seq: rec.seq,
        state: KeyState::Primary,
        algorithm: opts.algorithm,
        created_unix: rec.created_unix,
        encryptions: 0,
    };
    doc.keys.push(rec);
    Ok((encode(&doc, &mac_key)?, info))
}

/// The stored form: `HMAC-SHA256(mac_key, json) ‖ json`.
pub(super) fn encode(doc: &Doc, mac_key: &Key32) -> Result<Vec<u8>, KeyringError> {
    let json = serde_json::to_vec(doc).map_err(|e| KeyringError::Corrupt(e.to_string()))?;
    let mut value = Vec::with_capacity(MAC_LEN + json.len());
    value.extend_from_slice(&crypto::hmac_sha256(mac_key, &json));
    value.extend_from_slice(&json);
    Ok(value)
}

fn split(stored: &[u8]) -> Result<(&[u8], &[u8]), KeyringError> {
    if stored.len() < MAC_LEN {
        return Err(KeyringError::Corrupt("keyring record is truncated".into()));
    }
    Ok(stored.split_at(MAC_LEN))
}

fn check_format(doc: &Doc) -> Result<(), KeyringError> {
    if doc.format != FORMAT_VERSION {
        return Err(KeyringError::UnsupportedFormat(doc.format.to_string()));
    }
    Ok(())
}

/// Checks a stored document with the root key from `spec` and derives the keyring's keys. Reads
/// the root key (Argon2id for a passphrase: slow, call it off the async workers). Writes nothing.
pub(super) fn unseal(stored: &[u8], spec: &SealSpec) -> Result<Unsealed, KeyringError> {
    let (tag, json) = split(stored)?;
    // The seal parameters must be read before the MAC can be checked; they are checked right
    // after, and nothing else in the document is used until then.
    let doc: Doc = serde_json::from_slice(json).map_err(|_| KeyringError::Unseal)?;
    let root = derive_root(spec, &doc.seal)?;
    let mac_key = crypto::hkdf_expand(root.key(), INFO_MAC);
    if !crypto::hmac_sha256_verify(&mac_key, json, tag) {
        return Err(KeyringError::Unseal);
    }
    check_format(&doc)?;
    let seal_key = crypto::hkdf_expand(root.key(), INFO_SEAL);
    drop(root);
    let mut keyring_id = [0u8; 16];
    hex::decode_to_slice(&doc.keyring_id, &mut keyring_id)
        .map_err(|_| KeyringError::Corrupt("bad keyring id".into()))?;
    let algorithm: Algorithm = doc
        .algorithm
        .parse()
        .map_err(|e: crypto::UnknownAlgorithm| KeyringError::Corrupt(e.to_string()))?;
    Ok(Unsealed {
        doc,
        seal_key,
        mac_key,
        keyring_id,
        algorithm,
    })
}

/// Checks a document another writer stored, with the MAC key of the keyring already open: it
/// must be authentic and belong to the same keyring.
pub(super) fn verify(
    stored: &[u8],
    mac_key: &Key32,
    keyring_id: &[u8; 16],
) -> Result<Doc, KeyringError> {
    let (tag, json) = split(stored)?;
    if !crypto::hmac_sha256_verify(mac_key, json, tag) {
        return Err(KeyringError::Unseal);
    }
    let doc: Doc =
        serde_json::from_slice(json).map_err(|e| KeyringError::Corrupt(e.to_string()))?;
    check_format(&doc)?;
    if doc.keyring_id != hex::encode(keyring_id) {
        return Err(KeyringError::Corrupt(
            "the stored keyring was replaced by another keyring".into(),
        ));
    }
    Ok(doc)
}

/// Adds counters for keys not yet counted, starting at their stored reservation.
pub(super) fn add_counters(doc: &Doc, counters: &mut Counters) -> Result<(), KeyringError> {
    for rec in &doc.keys {
        counters.entry(parse_id(&rec.id)?).or_insert_with(|| {
            let c = Counter::default();
            c.used.store(rec.encryptions_reserved, Ordering::Relaxed);
            c.reserved
                .store(rec.encryptions_reserved, Ordering::Relaxed);
            Arc::new(c)
        });
    }
    Ok(())
}

/// Unseals every KEK of `doc` and checks the document's structure (order, one primary, states
/// matching material).
pub(super) fn build_snapshot(
    doc: &Doc,
    keyring_id: &[u8; 16],
    seal_key: &Key32,
    counters: &Counters,
) -> Result<Snapshot, KeyringError> {
    let unseal = AeadKey::new(Algorithm::XChaCha20Poly1305, seal_key);
    let mut by_id = HashMap::new();
    let mut ordered = Vec::new();
    let mut primary = None;
    let mut last_seq = 0;
    for rec in &doc.keys {
        let id = parse_id(&rec.id)?;
        if rec.seq <= last_seq || rec.seq >= doc.next_seq {
            return Err(KeyringError::Corrupt(
                "key sequence numbers out of order".into(),
            ));
        }
        last_seq = rec.seq;
        let alg: Algorithm = rec
            .algorithm
            .parse()
            .map_err(|e: crypto::UnknownAlgorithm| KeyringError::Corrupt(e.to_string()))?;
        let cipher = match (&rec.sealed, rec.state) {
            (None, KeyState::Destroyed) => None,
            (Some(_), KeyState::Destroyed) | (None, _) => {
                return Err(KeyringError::Corrupt(format!(
                    "key {} has state {} but material {}",
                    rec.seq,
                    rec.state.name(),
                    if rec.sealed.is_some() {
                        "present"
                    } else {
                        "absent"
                    }
                )))
            }
            (Some(sealed), _) => {
                let sealed = B64
                    .decode(sealed)
                    .map_err(|_| KeyringError::Corrupt("sealed key is not base64".into()))?;
                let aad = kek_aad(keyring_id, &id, rec.seq, &rec.algorithm, rec.created_unix);
                let material = unseal
                    .open_with_nonce(&aad, &sealed)
                    .map_err(|_| KeyringError::Unseal)?;
                let key = Key32::from_slice(&material)
                    .ok_or_else(|| KeyringError::Corrupt("sealed key is not 32 bytes".into()))?;
                Some(AeadKey::new(alg, &key))
            }
        };
        let kek = Arc::new(Kek {
            id,
            key_id: key_id_string(rec.seq, &id).into(),
            seq: rec.seq,
            state: rec.state,
            alg,
            created_unix: rec.created_unix,
            cipher,
            counter: counters.get(&id).cloned().unwrap_or_default(),
        });
        if rec.state == KeyState::Primary {
            if primary.is_some() {
                return Err(KeyringError::Corrupt("more than one primary key".into()));
            }
            primary = Some(kek.clone());
        }
        if by_id.insert(id, kek.clone()).is_some() {
            return Err(KeyringError::Corrupt("duplicate key id".into()));
        }
        ordered.push(kek);
    }
    let primary = primary.ok_or_else(|| KeyringError::Corrupt("no primary key".into()))?;
    Ok(Snapshot {
        primary,
        by_id,
        ordered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyfile(dir: &std::path::Path, name: &str) -> SealSpec {
        let p = dir.join(name);
        seal::generate_keyfile(&p).unwrap();
        SealSpec::KeyFile(p)
    }

    fn new(spec: &SealSpec) -> (Vec<u8>, KeyInfo) {
        let opts = InitOptions {
            algorithm: Algorithm::Aes256Gcm,
            kdf: None,
        };
        new_doc(spec, &opts).unwrap()
    }

    #[test]
    fn a_new_document_unseals_with_its_root_key_only() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path(), "root.key");
        let (stored, info) = new(&spec);
        let u = unseal(&stored, &spec).unwrap();
        assert_eq!(u.doc.keys.len(), 1);
        assert_eq!(u.doc.keys[0].key_id().unwrap(), info.key_id);
        assert!(info.key_id.starts_with("kw-1-"));
        let mut counters = Counters::new();
        add_counters(&u.doc, &mut counters).unwrap();
        let snap = build_snapshot(&u.doc, &u.keyring_id, &u.seal_key, &counters).unwrap();
        assert_eq!(&*snap.primary.key_id, info.key_id);
        assert_eq!(
            verify(&stored, &u.mac_key, &u.keyring_id).unwrap().next_seq,
            2
        );
        let other = keyfile(tmp.path(), "other.key");
        assert!(matches!(unseal(&stored, &other), Err(KeyringError::Unseal)));
        let pass = SealSpec::PassphraseFile(tmp.path().join("x"));
        assert!(matches!(
            unseal(&stored, &pass),
            Err(KeyringError::SealMismatch {
                keyring: "keyfile",
                given: "passphrase-file"
            })
        ));
        // Another keyring, even under the same root key, is not accepted as a reload.
        let (second, _) = new(&spec);
        assert!(matches!(
            verify(&second, &u.mac_key, &u.keyring_id),
            Err(KeyringError::Corrupt(_))
        ));
    }

    #[test]
    fn any_edit_of_the_stored_bytes_fails_the_mac() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path(), "root.key");
        let (stored, _) = new(&spec);
        // Flip the primary's state inside the stored JSON, keeping the old MAC.
        let text = String::from_utf8(stored[MAC_LEN..].to_vec()).unwrap();
        let mut edited = stored[..MAC_LEN].to_vec();
        edited.extend_from_slice(text.replace("\"primary\"", "\"disabled\"").as_bytes());
        assert!(matches!(unseal(&edited, &spec), Err(KeyringError::Unseal)));
        let u = unseal(&stored, &spec).unwrap();
        assert!(matches!(
            verify(&edited, &u.mac_key, &u.keyring_id),
            Err(KeyringError::Unseal)
        ));
        assert!(matches!(
            unseal(&stored[..MAC_LEN - 1], &spec),
            Err(KeyringError::Corrupt(_))
        ));
    }
}
