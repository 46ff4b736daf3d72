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
//! root key ─┬─ HKDF-Expand(root, "keyward/v1 kek-seal")    → seal base
//!           ├─ HKDF-Expand(root, "keyward/v1 keyring-mac") → mac_key   (HMAC-SHA256)
//!           └─ HKDF-Expand(root, "keyward/v1 admin-audit-checkpoint") → the seed of the
//!              Ed25519 key signing the admin socket's audit checkpoints
//! seal_key (XChaCha20-Poly1305) = seal base                 before the first destroy,
//!   HKDF-Expand(seal base, "keyward/v1 kek-seal epoch " ‖ seal_epoch)  after (a new epoch each)
//! ```
//!
//! `generation` rises by one at every save and is covered by the MAC: see `rollback`.
//!
//! The seal record ([`SealRecord`], `"seal"` in the JSON) says where the root key comes from:
//! `{"kind":"keyfile"}`, `{"kind":"passphrase-file","argon2id":{...}}` (both as written by every
//! release), `{"kind":"pkcs11","token":..,"key_label":..,"wrapped":..}` (the root key wrapped by
//! the HSM) or `{"kind":"shamir","shares":..,"threshold":..,"set_id":..,"wrapped":..}` (the root
//! key wrapped under the key the shares rebuild). The newer kinds only add variants: documents
//! of the older kinds are unchanged and still open. [`reseal`] re-seals every KEK under a new
//! root key, keeping ids and metadata, for root-key rotation and seal migration.

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
use crate::seal::{self, pkcs11, shamir, KdfParams, RootKey, SealSpec, ShamirRecord, SplitShares};

/// Format of the keyring document.
const FORMAT_VERSION: u64 = 1;
const INFO_SEAL: &[u8] = b"keyward/v1 kek-seal";
const INFO_MAC: &[u8] = b"keyward/v1 keyring-mac";
const INFO_EPOCH: &[u8] = b"keyward/v1 kek-seal epoch ";
const INFO_ADMIN_AUDIT: &[u8] = b"keyward/v1 admin-audit-checkpoint";
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
    /// Random id of the root key, drawn at each root-key rotation (absent before the first), so
    /// that a replica can tell a document re-sealed elsewhere from a modified one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<String>,
    /// Random id of the seal epoch (hex): KEK material is sealed under a key derived from the
    /// root key and this id ([`DocKeys::seal_key`]). Drawn anew at every destroy, which re-seals
    /// the remaining KEKs (absent before the first destroy: the epoch of every release before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_epoch: Option<String>,
    /// Raised by one at every save; a document read back must not be older than one already
    /// accepted (see `rollback`). 0 in documents of releases before it.
    #[serde(default)]
    pub generation: u64,
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
    PassphraseFile {
        argon2id: KdfParams,
    },
    /// The root key wrapped by the HSM key `key_label` on `token` (labels for messages only:
    /// the `--seal` given decides which key is used).
    Pkcs11 {
        token: String,
        key_label: String,
        /// base64(iv ‖ AES-GCM ciphertext ‖ tag).
        wrapped: String,
    },
    Shamir {
        shares: u8,
        threshold: u8,
        set_id: String,
        /// base64(nonce ‖ XChaCha20-Poly1305 ciphertext ‖ tag).
        wrapped: String,
    },
}

impl SealRecord {
    pub fn kind(&self) -> &'static str {
        match self {
            SealRecord::Keyfile => "keyfile",
            SealRecord::PassphraseFile { .. } => "passphrase-file",
            SealRecord::Pkcs11 { .. } => "pkcs11",
            SealRecord::Shamir { .. } => "shamir",
        }
    }

    /// The Shamir record, for a keyring sealed with shares.
    pub fn shamir(&self) -> Option<ShamirRecord> {
        match self {
            SealRecord::Shamir {
                shares,
                threshold,
                set_id,
                wrapped,
            } => Some(ShamirRecord {
                shares: *shares,
                threshold: *threshold,
                set_id: set_id.clone(),
                wrapped: wrapped.clone(),
            }),
            _ => None,
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

/// The keys derived from a root key: one (per seal epoch) seals KEK material, one authenticates
/// the document, one is the seed of the key that signs the admin socket's audit checkpoints.
pub(super) struct DocKeys {
    seal_base: Key32,
    pub mac_key: Key32,
    admin_audit: Key32,
}

impl DocKeys {
    pub fn derive(root: &RootKey) -> DocKeys {
        DocKeys {
            seal_base: crypto::hkdf_expand(root.key(), INFO_SEAL),
            mac_key: crypto::hkdf_expand(root.key(), INFO_MAC),
            admin_audit: crypto::hkdf_expand(root.key(), INFO_ADMIN_AUDIT),
        }
    }

    /// `HKDF-Expand(root, "keyward/v1 admin-audit-checkpoint")`: the same seed at every start
    /// with the same root key, a new one after a root-key rotation.
    pub fn admin_audit_seed(&self) -> Key32 {
        let mut copy = *self.admin_audit.expose();
        Key32::from_bytes(&mut copy)
    }

    /// The key sealing the KEK material of `doc`: for the first epoch the base seal key, then
    /// `HKDF-Expand(base, "keyward/v1 kek-seal epoch " ‖ epoch id)`.
    pub fn seal_key(&self, doc: &Doc) -> Key32 {
        match &doc.seal_epoch {
            None => {
                Key32::from_slice(self.seal_base.expose()).expect("a Key32 holds exactly 32 bytes")
            }
            Some(epoch) => {
                let mut info = INFO_EPOCH.to_vec();
                info.extend_from_slice(epoch.as_bytes());
                crypto::hkdf_expand(&self.seal_base, &info)
            }
        }
    }
}

/// A document whose MAC checked out under the root key, and the keys derived from that root.
pub(super) struct Unsealed {
    pub doc: Doc,
    pub keys: DocKeys,
    pub keyring_id: [u8; 16],
    pub algorithm: Algorithm,
}

/// A new seal: its record, the root key it yields, and (Shamir) the shares to hand out.
pub(super) struct NewSeal {
    pub record: SealRecord,
    pub root: RootKey,
    pub shares: Option<SplitShares>,
}

// ----- in-memory form -----

/// Encryptions under one KEK: used here, reserved here (persisted), and reserved by every
/// process together (the stored count).
#[derive(Default)]
pub(super) struct Counter {
    pub used: AtomicU64,
    pub reserved: AtomicU64,
    pub stored: AtomicU64,
}

impl Counter {
    /// An upper bound of the encryptions under this KEK by every process sharing the keyring:
    /// those made here, plus what the others reserved (the stored count beyond this process's
    /// own reservations).
    pub fn global(&self) -> u64 {
        let used = self.used.load(Ordering::Relaxed);
        let reserved = self.reserved.load(Ordering::Acquire);
        let stored = self.stored.load(Ordering::Acquire);
        used.saturating_add(stored.saturating_sub(reserved))
    }
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
            encryptions: self.counter.global(),
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

/// The root key of a keyring sealed as `record`, from the source `spec` names (reads files, or
/// asks the HSM). A Shamir seal needs shares instead: [`KeyringError::Sealed`].
fn derive_root(
    spec: &SealSpec,
    record: &SealRecord,
    keyring_id: &[u8; 16],
) -> Result<RootKey, KeyringError> {
    match (spec, record) {
        (SealSpec::KeyFile(p), SealRecord::Keyfile) => Ok(seal::read_keyfile(p)?),
        (SealSpec::PassphraseFile(p), SealRecord::PassphraseFile { argon2id }) => {
            Ok(seal::derive_from_passphrase_file(p, argon2id)?)
        }
        (SealSpec::Pkcs11(p), SealRecord::Pkcs11 { wrapped, .. }) => {
            let wrapped = B64
                .decode(wrapped)
                .map_err(|_| KeyringError::Corrupt("the wrapped root key is not base64".into()))?;
            Ok(pkcs11::unwrap(p, &wrapped, keyring_id)?)
        }
        (SealSpec::Shamir(_), SealRecord::Shamir { .. }) => Err(KeyringError::Sealed),
        _ => Err(KeyringError::SealMismatch {
            keyring: record.kind(),
            given: spec.kind(),
        }),
    }
}

/// A new seal of the kind `spec` names for the keyring `keyring_id`: a root key read from a key
/// file or derived from a passphrase (with `kdf`, or recommended parameters), or a random one
/// wrapped by the HSM or under Shamir shares. Blocking (Argon2id, HSM): call it off the async
/// workers.
pub(super) fn new_seal(
    spec: &SealSpec,
    kdf: Option<&KdfParams>,
    keyring_id: &[u8; 16],
) -> Result<NewSeal, KeyringError> {
    let (record, root, shares) = match spec {
        SealSpec::KeyFile(p) => (SealRecord::Keyfile, seal::read_keyfile(p)?, None),
        SealSpec::PassphraseFile(p) => {
            let argon2id = match kdf {
                Some(k) => k.clone(),
                None => KdfParams::recommended()?,
            };
            let root = seal::derive_from_passphrase_file(p, &argon2id)?;
            (SealRecord::PassphraseFile { argon2id }, root, None)
        }
        SealSpec::Pkcs11(p) => {
            let root = RootKey::generate()?;
            let wrapped = pkcs11::wrap(p, &root, keyring_id)?;
            let record = SealRecord::Pkcs11 {
                token: p.token.clone(),
                key_label: p.key_label.clone(),
                wrapped: B64.encode(wrapped),
            };
            (record, root, None)
        }
        SealSpec::Shamir(Some(params)) => {
            let root = RootKey::generate()?;
            let (r, split) = shamir::seal_root(*params, &root, keyring_id)?;
            let record = SealRecord::Shamir {
                shares: r.shares,
                threshold: r.threshold,
                set_id: r.set_id,
                wrapped: r.wrapped,
            };
            (record, root, Some(split))
        }
        SealSpec::Shamir(None) => {
            return Err(KeyringError::InvalidInput {
                field: "seal",
                reason: "a new Shamir seal needs its counts: shamir:shares=N,threshold=M".into(),
            })
        }
    };
    Ok(NewSeal {
        record,
        root,
        shares,
    })
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

/// A new keyring document with its first KEK, encoded for storage, that KEK's info, and (Shamir)
/// the shares. Reads or makes the root key from `spec` (Argon2id, HSM: slow, call it off the
/// async workers).
pub(super) fn new_doc(
    spec: &SealSpec,
    opts: &InitOptions,
) -> Result<(Vec<u8>, KeyInfo, Option<SplitShares>), KeyringError> {
    let keyring_id = crypto::random_array::<16>()?;
    let NewSeal {
        record,
        root,
        shares,
    } = new_seal(spec, opts.kdf.as_ref(), &keyring_id)?;
    let keys = DocKeys::derive(&root);
    drop(root);
    let mut doc = Doc {
        format: FORMAT_VERSION,
        keyring_id: hex::encode(keyring_id),
        algorithm: opts.algorithm.name().to_owned(),
        seal: record,
        root_id: None,
        seal_epoch: None,
        generation: 1,
        next_seq: 1,
        keys: Vec::new(),
    };
    let seal_key = keys.seal_key(&doc);
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
    Ok((encode(&doc, &keys.mac_key)?, info, shares))
}

/// `doc` with every KEK's material re-sealed from `old` to `new` (same ids, states, counters and
/// associated data) and `record` as its seal.
pub(super) fn reseal(
    doc: &Doc,
    keyring_id: &[u8; 16],
    old: &DocKeys,
    new: &DocKeys,
    record: SealRecord,
) -> Result<Doc, KeyringError> {
    let mut out = doc.clone();
    reseal_material(&mut out, keyring_id, &old.seal_key(doc), &new.seal_key(doc))?;
    out.seal = record;
    out.root_id = Some(hex::encode(crypto::random_array::<8>()?));
    Ok(out)
}

/// `doc` in a new seal epoch: every remaining KEK's material re-sealed under the new epoch's
/// key, so that the sealed bytes of the document share nothing with earlier copies.
pub(super) fn new_epoch(
    doc: &Doc,
    keyring_id: &[u8; 16],
    keys: &DocKeys,
) -> Result<Doc, KeyringError> {
    let mut out = doc.clone();
    out.seal_epoch = Some(hex::encode(crypto::random_array::<16>()?));
    let new = keys.seal_key(&out);
    reseal_material(&mut out, keyring_id, &keys.seal_key(doc), &new)?;
    Ok(out)
}

/// Re-seals every KEK's material in `doc` from `old` to `new`.
fn reseal_material(
    doc: &mut Doc,
    keyring_id: &[u8; 16],
    old: &Key32,
    new: &Key32,
) -> Result<(), KeyringError> {
    let opener = AeadKey::new(Algorithm::XChaCha20Poly1305, old);
    let sealer = AeadKey::new(Algorithm::XChaCha20Poly1305, new);
    for rec in doc.keys.iter_mut() {
        let Some(sealed) = &rec.sealed else { continue };
        let sealed = B64
            .decode(sealed)
            .map_err(|_| KeyringError::Corrupt("sealed key is not base64".into()))?;
        let aad = kek_aad(
            keyring_id,
            &parse_id(&rec.id)?,
            rec.seq,
            &rec.algorithm,
            rec.created_unix,
        );
        let material = opener
            .open_with_nonce(&aad, &sealed)
            .map_err(|_| KeyringError::Unseal)?;
        rec.sealed = Some(B64.encode(sealer.seal_random_nonce(&aad, &material)?));
    }
    Ok(())
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

/// The seal record and keyring id of a stored document, read before anything is authenticated
/// (the root key is needed to check the MAC, and the record says how to get it). Nothing else in
/// the document is used until [`unseal_with_root`] checked it.
pub(super) fn peek(stored: &[u8]) -> Result<(SealRecord, [u8; 16]), KeyringError> {
    let doc = peek_doc(stored)?;
    let mut keyring_id = [0u8; 16];
    hex::decode_to_slice(&doc.keyring_id, &mut keyring_id).map_err(|_| KeyringError::Unseal)?;
    Ok((doc.seal, keyring_id))
}

/// The stored document, not authenticated: for [`peek`], and for telling a re-sealed document
/// from a modified one.
pub(super) fn peek_doc(stored: &[u8]) -> Result<Doc, KeyringError> {
    let (_, json) = split(stored)?;
    serde_json::from_slice(json).map_err(|_| KeyringError::Unseal)
}

/// Checks a stored document with the root key from `spec` and derives the keyring's keys. Reads
/// the root key (Argon2id for a passphrase, the HSM for pkcs11: slow, call it off the async
/// workers). Writes nothing.
pub(super) fn unseal(stored: &[u8], spec: &SealSpec) -> Result<Unsealed, KeyringError> {
    let (record, keyring_id) = peek(stored)?;
    let root = derive_root(spec, &record, &keyring_id)?;
    unseal_with_root(stored, &root)
}

/// Checks a stored document with `root` and derives the keyring's keys. Writes nothing.
pub(super) fn unseal_with_root(stored: &[u8], root: &RootKey) -> Result<Unsealed, KeyringError> {
    let (tag, json) = split(stored)?;
    let keys = DocKeys::derive(root);
    if !crypto::hmac_sha256_verify(&keys.mac_key, json, tag) {
        return Err(KeyringError::Unseal);
    }
    let doc: Doc =
        serde_json::from_slice(json).map_err(|e| KeyringError::Corrupt(e.to_string()))?;
    check_format(&doc)?;
    let mut keyring_id = [0u8; 16];
    hex::decode_to_slice(&doc.keyring_id, &mut keyring_id)
        .map_err(|_| KeyringError::Corrupt("bad keyring id".into()))?;
    let algorithm: Algorithm = doc
        .algorithm
        .parse()
        .map_err(|e: crypto::UnknownAlgorithm| KeyringError::Corrupt(e.to_string()))?;
    Ok(Unsealed {
        doc,
        keys,
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

/// Adds counters for keys not yet counted, starting at their stored reservation, and records
/// every key's stored (cluster-wide) reservation.
pub(super) fn add_counters(doc: &Doc, counters: &mut Counters) -> Result<(), KeyringError> {
    for rec in &doc.keys {
        let c = counters.entry(parse_id(&rec.id)?).or_insert_with(|| {
            let c = Counter::default();
            c.used.store(rec.encryptions_reserved, Ordering::Relaxed);
            c.reserved
                .store(rec.encryptions_reserved, Ordering::Relaxed);
            Arc::new(c)
        });
        c.stored
            .fetch_max(rec.encryptions_reserved, Ordering::AcqRel);
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
        let (stored, info, shares) = new_doc(spec, &opts).unwrap();
        assert!(shares.is_none());
        (stored, info)
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
        let seal_key = u.keys.seal_key(&u.doc);
        let snap = build_snapshot(&u.doc, &u.keyring_id, &seal_key, &counters).unwrap();
        assert_eq!(&*snap.primary.key_id, info.key_id);
        assert_eq!(
            verify(&stored, &u.keys.mac_key, &u.keyring_id)
                .unwrap()
                .next_seq,
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
            verify(&second, &u.keys.mac_key, &u.keyring_id),
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
            verify(&edited, &u.keys.mac_key, &u.keyring_id),
            Err(KeyringError::Unseal)
        ));
        assert!(matches!(
            unseal(&stored[..MAC_LEN - 1], &spec),
            Err(KeyringError::Corrupt(_))
        ));
    }

    #[test]
    fn the_admin_audit_seed_follows_the_root_key() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path(), "root.key");
        let (stored, _) = new(&spec);
        let first = unseal(&stored, &spec).unwrap().keys;
        let again = unseal(&stored, &spec).unwrap().keys;
        // Stable for one root key, so that each start signs with the same checkpoint key.
        assert_eq!(
            first.admin_audit_seed().expose(),
            again.admin_audit_seed().expose()
        );
        // Separate from the other derived keys.
        assert_ne!(first.admin_audit_seed().expose(), first.mac_key.expose());
        assert_ne!(first.admin_audit_seed().expose(), first.seal_base.expose());
        // Another root key, another seed.
        let other = keyfile(tmp.path(), "other.key");
        let (stored_other, _) = new(&other);
        let other_keys = unseal(&stored_other, &other).unwrap().keys;
        assert_ne!(
            first.admin_audit_seed().expose(),
            other_keys.admin_audit_seed().expose()
        );
    }
}
