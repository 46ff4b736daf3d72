//! The keyring: key-encryption keys (KEKs) with ids, states and rotation, sealed at rest.
//!
//! # Persistence
//! The keyring is one JSON document in a sled database under the data directory (or, shared by
//! plugin replicas, under one key in etcd: see [`shared`]), stored as
//! `HMAC-SHA256(mac_key, json) || json`. Every KEK's material inside it is sealed with
//! XChaCha20-Poly1305 under `seal_key`, with associated data binding it to the keyring id, its
//! id, sequence number, algorithm and creation time. `seal_key` and `mac_key` are derived from
//! the root key with HKDF-Expand, so a wrong root key fails the MAC before anything is changed,
//! and any edit of the file (states, counters, order) is detected. Every write is fsynced.
//!
//! # Key ids
//! A KEK's public `key_id` is `kw-<seq>-<32 hex>`, where the hex is 16 random bytes drawn when
//! the KEK is created. Restoring an older backup and rotating again draws new random bytes, so a
//! key_id that was ever issued is never issued again (collision probability ~2^-128 per pair).
//!
//! # Ciphertexts
//! `Encrypt` output is self-describing: `version(1) = 1 || algorithm(1) || kek id(16) || nonce
//! || AEAD(plaintext) || tag(16)`, with the first 18 bytes as associated data. Any KEK still in
//! the keyring (primary or decrypt-only) opens its own ciphertexts.
//!
//! # Counting
//! Random-nonce AES-GCM must not seal more than 2^32 times under one key. Each KEK counts its
//! encryptions; the count is persisted as a reservation in blocks of [`RESERVATION_BLOCK`], so
//! the hot path does no I/O and a crash can only over-count. Rotation by count and by age is
//! done by [`Keyring::start_maintenance`].

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::backend::etcd::EtcdOptions;
use crate::crypto::{self, AeadKey, Algorithm, CryptoError, Key32, TAG_LEN};
use crate::seal::{self, KdfParams, RootKey, SealError, SealSpec};

pub mod shared;

use shared::{EtcdDoc, Saved};
pub use shared::{CONFIRM_EVERY, DEFAULT_STALE_AFTER};

/// Version byte of the ciphertext format.
pub const CIPHERTEXT_VERSION: u8 = 1;
/// Length of a KEK's binary id.
pub const KEK_ID_LEN: usize = 16;
/// Header length: version, algorithm, KEK id.
pub const HEADER_LEN: usize = 2 + KEK_ID_LEN;
/// Largest plaintext `encrypt` accepts (64 KiB).
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// Largest ciphertext `decrypt` looks at.
pub const MAX_CIPHERTEXT: usize = HEADER_LEN + 24 + MAX_PLAINTEXT + TAG_LEN;
/// Encryptions reserved (persisted) at a time per KEK.
pub const RESERVATION_BLOCK: u64 = 1 << 18;
/// Default rotation by count: a quarter of the 2^32 random-nonce bound of AES-GCM.
pub const DEFAULT_ROTATE_AFTER_ENCRYPTIONS: u64 = 1 << 30;
/// Default rotation by age: 90 days, as the Kubernetes KMS docs recommend.
pub const DEFAULT_ROTATE_AFTER: Duration = Duration::from_secs(90 * 24 * 3600);
/// Hard stop for AES-GCM KEKs if rotation keeps failing: half of the 2^32 bound.
const AES_GCM_HARD_LIMIT: u64 = 1 << 31;
/// Format of the keyring document and database layout.
const FORMAT_VERSION: u64 = 1;
const DB_FORMAT_KEY: &[u8] = b"format_version";
/// Attempts of a compare-and-swap change of a shared keyring before giving up.
const MAX_CAS_ATTEMPTS: usize = 16;
/// Minimum time between reloads of a shared keyring for unknown key ids (ms).
const MISS_RELOAD_INTERVAL_MS: i64 = 100;
const DB_DOC_KEY: &[u8] = b"keyring";
const INFO_SEAL: &[u8] = b"keyward/v1 kek-seal";
const INFO_MAC: &[u8] = b"keyward/v1 keyring-mac";

/// Errors of this layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// There is no keyring in the data directory (operator: run `keyward kms init`).
    #[error("no keyring in {0}; create one with `keyward kms init --data {0} --seal ...`")]
    NotFound(PathBuf),
    /// There is no keyring at this etcd key (operator: run `keyward kms init --keyring etcd`).
    #[error("no keyring at {0}; create one with `keyward kms init --keyring etcd --etcd-endpoints ... --seal ...`")]
    NotFoundShared(String),
    /// `init` found an existing keyring (operator's input).
    #[error("a keyring already exists in {0}; refusing to replace it")]
    Exists(PathBuf),
    /// The root key does not open the keyring (operator's input), or the file was modified.
    #[error(
        "cannot unseal the keyring: wrong root key or passphrase, or the keyring was modified"
    )]
    Unseal,
    /// The keyring was sealed with another kind of root key source (operator's input).
    #[error("the keyring is sealed with {keyring}, but --seal gave {given}")]
    SealMismatch {
        /// Kind recorded in the keyring.
        keyring: &'static str,
        /// Kind given on the command line.
        given: &'static str,
    },
    /// Reading the root key failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The stored keyring is malformed although authentic (a bug or a newer keyward).
    #[error("the keyring is corrupt: {0}")]
    Corrupt(String),
    /// The data directory has a format this version does not know (operator: upgrade keyward).
    #[error("unsupported keyring format version {0}; this keyward reads version 1")]
    UnsupportedFormat(String),
    /// The database failed, or another process holds it (environment).
    #[error("keyring storage in {path}: {message}")]
    Storage {
        /// The data directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// No KEK has this key_id (caller's input).
    #[error("no key with key_id {0:?} in this keyring")]
    UnknownKey(String),
    /// The operation is not allowed in the key's current state (caller's input).
    #[error("{0}")]
    Precondition(String),
    /// A request field is out of range (caller's input).
    #[error("{field}: {reason}")]
    InvalidInput {
        /// The field.
        field: &'static str,
        /// What is allowed.
        reason: String,
    },
    /// Decryption failed: unknown or disabled key, key_id mismatch, tampering, truncation.
    /// Deliberately opaque (caller's data).
    #[error("decryption failed")]
    Decrypt,
    /// The primary KEK reached its hard encryption limit and rotation failed (environment).
    #[error("the primary key reached its encryption limit and could not be rotated")]
    Exhausted,
    /// Randomness or sealing failed (environment).
    #[error("cryptographic failure: {0}")]
    Crypto(CryptoError),
}

impl From<CryptoError> for KeyringError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Open => KeyringError::Decrypt,
            other => KeyringError::Crypto(other),
        }
    }
}

/// State of a KEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// Encrypts new data and decrypts its own.
    Primary,
    /// Decrypts its own ciphertexts; encrypts nothing.
    DecryptOnly,
    /// Still sealed in the keyring but refuses to decrypt.
    Disabled,
    /// Material erased; the id is kept so it is never reissued.
    Destroyed,
}

impl KeyState {
    /// The name used in listings.
    pub fn name(self) -> &'static str {
        match self {
            KeyState::Primary => "primary",
            KeyState::DecryptOnly => "decrypt-only",
            KeyState::Disabled => "disabled",
            KeyState::Destroyed => "destroyed",
        }
    }

    fn decrypts(self) -> bool {
        matches!(self, KeyState::Primary | KeyState::DecryptOnly)
    }
}

/// Public facts about one KEK. Carries no key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The public key_id.
    pub key_id: String,
    /// Creation order within the keyring, from 1.
    pub seq: u64,
    /// Current state.
    pub state: KeyState,
    /// AEAD algorithm.
    pub algorithm: Algorithm,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: i64,
    /// Encryptions under this KEK (an upper bound after a crash).
    pub encryptions: u64,
}

/// Keyring-wide facts.
#[derive(Debug, Clone)]
pub struct KeyringInfo {
    /// Random id chosen at init (hex).
    pub keyring_id: String,
    /// Algorithm of new KEKs.
    pub algorithm: Algorithm,
    /// `keyfile` or `passphrase-file`.
    pub seal: &'static str,
    /// Where the keyring is stored: `sled:<dir>` or `etcd:<endpoints> key <key>`.
    pub storage: String,
    /// Rotation policy in force.
    pub policy: RotationPolicy,
}

/// When the maintenance task rotates the primary KEK on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Rotate once the primary is this old; `None` disables.
    pub max_age: Option<Duration>,
    /// Rotate once the primary has sealed this many times; `None` disables.
    pub max_encryptions: Option<u64>,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            max_age: Some(DEFAULT_ROTATE_AFTER),
            max_encryptions: Some(DEFAULT_ROTATE_AFTER_ENCRYPTIONS),
        }
    }
}

/// Options for [`Keyring::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Algorithm for this keyring's KEKs.
    pub algorithm: Algorithm,
    /// Argon2id parameters, used only with `passphrase-file:`.
    pub kdf: Option<KdfParams>,
}

/// Result of a rotation.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The new primary.
    pub primary: KeyInfo,
    /// The previous primary's key_id, now decrypt-only.
    pub previous_key_id: String,
}

// ----- persisted form -----

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Doc {
    format: u64,
    keyring_id: String,
    algorithm: String,
    seal: SealRecord,
    next_seq: u64,
    keys: Vec<KeyRecord>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum SealRecord {
    Keyfile,
    PassphraseFile { argon2id: KdfParams },
}

impl SealRecord {
    fn kind(&self) -> &'static str {
        match self {
            SealRecord::Keyfile => "keyfile",
            SealRecord::PassphraseFile { .. } => "passphrase-file",
        }
    }
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct KeyRecord {
    id: String,
    seq: u64,
    state: KeyState,
    algorithm: String,
    created_unix: i64,
    encryptions_reserved: u64,
    /// base64(nonce || sealed material || tag); absent once destroyed.
    sealed: Option<String>,
}

// ----- in-memory form -----

#[derive(Default)]
struct Counter {
    used: AtomicU64,
    reserved: AtomicU64,
}

struct Kek {
    id: [u8; KEK_ID_LEN],
    key_id: Arc<str>,
    seq: u64,
    state: KeyState,
    alg: Algorithm,
    created_unix: i64,
    cipher: Option<AeadKey>,
    counter: Arc<Counter>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kek({}, {})", self.key_id, self.state.name())
    }
}

impl Kek {
    fn info(&self) -> KeyInfo {
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
struct Snapshot {
    primary: Arc<Kek>,
    by_id: HashMap<[u8; KEK_ID_LEN], Arc<Kek>>,
    ordered: Vec<Arc<Kek>>,
}

struct Writer {
    doc: Doc,
    /// The sled database, for a keyring kept in a data directory.
    db: Option<sled::Db>,
    counters: HashMap<[u8; KEK_ID_LEN], Arc<Counter>>,
}

/// A keyring kept in etcd and shared by plugin replicas.
struct SharedState {
    doc: EtcdDoc,
    /// etcd revision of the document this replica holds.
    version: AtomicI64,
    /// Report unhealthy when not confirmed current for this long.
    stale_after_ms: i64,
    /// Last reload for an unknown key id (ms since the epoch), to bound reloads.
    last_miss_ms: AtomicI64,
}

struct Inner {
    /// Where the keyring lives: the data directory, or an etcd label, for messages.
    dir: PathBuf,
    shared: Option<SharedState>,
    snapshot: ArcSwap<Snapshot>,
    writer: Mutex<Writer>,
    seal_key: Key32,
    mac_key: Key32,
    keyring_id: [u8; 16],
    algorithm: Algorithm,
    seal_kind: &'static str,
    policy: RotationPolicy,
    healthy: AtomicBool,
    wake: tokio::sync::Notify,
}

/// An unsealed keyring. Cheap to clone (shared).
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Keyring({}, primary {})",
            hex::encode(self.inner.keyring_id),
            self.inner.snapshot.load().primary.key_id
        )
    }
}

/// What `Status` needs, read without I/O.
#[derive(Debug, Clone)]
pub struct Health {
    /// The last self-test passed and, for a shared keyring, it was confirmed current within its
    /// stale bound.
    pub healthy: bool,
    /// Why not healthy, for `healthz`.
    pub problem: Option<&'static str>,
    /// The primary KEK's key_id.
    pub primary_key_id: Arc<str>,
}

fn storage_err(dir: &Path) -> impl Fn(sled::Error) -> KeyringError + '_ {
    move |e| KeyringError::Storage {
        path: dir.to_owned(),
        message: e.to_string(),
    }
}

fn io_err(dir: &Path) -> impl Fn(std::io::Error) -> KeyringError + '_ {
    move |e| KeyringError::Storage {
        path: dir.to_owned(),
        message: e.to_string(),
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn key_id_string(seq: u64, id: &[u8; KEK_ID_LEN]) -> String {
    format!("kw-{seq}-{}", hex::encode(id))
}

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

fn parse_id(s: &str) -> Result<[u8; KEK_ID_LEN], KeyringError> {
    let mut id = [0u8; KEK_ID_LEN];
    hex::decode_to_slice(s, &mut id)
        .map_err(|_| KeyringError::Corrupt(format!("bad key id {s:?}")))?;
    Ok(id)
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("keyring")
}

/// Opens the keyring database. sled holds an exclusive file lock; a Db dropped in this process
/// releases it asynchronously (its flusher thread), so a lock conflict is retried for a moment
/// before it is reported as another process holding the keyring.
fn open_db(dir: &Path) -> Result<sled::Db, KeyringError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let res = sled::Config::new()
            .path(db_path(dir))
            .mode(sled::Mode::LowSpace)
            .open();
        match res {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(KeyringError::Storage {
                        path: dir.to_owned(),
                        message: "the keyring is in use by another keyward process".into(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(storage_err(dir)(e)),
        }
    }
}

/// Flushes sled and fsyncs its files: sled 0.34's `flush` uses `sync_file_range`, which does
/// not flush the device cache or file metadata.
fn durable_flush(db: &sled::Db, dir: &Path) -> Result<(), KeyringError> {
    db.flush().map_err(storage_err(dir))?;
    let path = db_path(dir);
    for entry in fs::read_dir(&path).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if entry.file_type().map_err(io_err(dir))?.is_file() {
            fs::File::open(entry.path())
                .and_then(|f| f.sync_all())
                .map_err(io_err(dir))?;
        }
    }
    fs::File::open(&path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
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

impl Keyring {
    /// Creates a keyring in `dir` with its first KEK, sealed under the root key from `spec`.
    pub fn init(dir: &Path, spec: &SealSpec, opts: &InitOptions) -> Result<KeyInfo, KeyringError> {
        if db_path(dir).exists() {
            return Err(KeyringError::Exists(dir.to_owned()));
        }
        // Read the root key before touching the directory, so a bad key file changes nothing.
        let (doc, mac_key, info) = new_doc(spec, opts)?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        let db = open_db(dir)?;
        db.insert(DB_FORMAT_KEY, FORMAT_VERSION.to_string().as_bytes())
            .map_err(storage_err(dir))?;
        write_doc(&db, dir, &doc, &mac_key)?;
        if let Some(parent) = dir.parent() {
            let _ = fs::File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(info)
    }

    /// Creates a keyring shared through etcd under `<prefix>/kms/keyring`, with its first KEK
    /// sealed under the root key from `spec`. Refuses to replace an existing one.
    pub fn init_shared(
        etcd: &EtcdOptions,
        prefix: &str,
        spec: &SealSpec,
        opts: &InitOptions,
    ) -> Result<KeyInfo, KeyringError> {
        let (doc, mac_key, info) = new_doc(spec, opts)?;
        let store = EtcdDoc::connect(etcd, &shared_key(prefix))?;
        match store.save(encode_doc(&doc, &mac_key)?, 0)? {
            Saved::Done(_) => Ok(info),
            Saved::Conflict => Err(KeyringError::Exists(PathBuf::from(store.label()))),
        }
    }

    /// Opens and unseals the keyring in `dir`. A wrong root key fails before anything is written.
    pub fn open(
        dir: &Path,
        spec: &SealSpec,
        policy: RotationPolicy,
    ) -> Result<Keyring, KeyringError> {
        if !db_path(dir).join("db").exists() {
            return Err(KeyringError::NotFound(dir.to_owned()));
        }
        let db = open_db(dir)?;
        match db.get(DB_FORMAT_KEY).map_err(storage_err(dir))? {
            Some(v) if v.as_ref() == FORMAT_VERSION.to_string().as_bytes() => {}
            Some(v) => {
                return Err(KeyringError::UnsupportedFormat(
                    String::from_utf8_lossy(&v).into_owned(),
                ))
            }
            None => return Err(KeyringError::NotFound(dir.to_owned())),
        }
        let stored = db
            .get(DB_DOC_KEY)
            .map_err(storage_err(dir))?
            .ok_or_else(|| KeyringError::NotFound(dir.to_owned()))?;
        Self::unseal(&stored, spec, policy, dir.to_owned(), Some(db), None)
    }

    /// Opens and unseals the keyring shared through etcd under `<prefix>/kms/keyring`, and
    /// follows changes other replicas make. The keyring reports unhealthy once it could not
    /// confirm it is current for longer than `stale_after`.
    pub fn open_shared(
        etcd: &EtcdOptions,
        prefix: &str,
        spec: &SealSpec,
        policy: RotationPolicy,
        stale_after: Duration,
    ) -> Result<Keyring, KeyringError> {
        let store = EtcdDoc::connect(etcd, &shared_key(prefix))?;
        let (stored, revision) = store
            .load()?
            .ok_or_else(|| KeyringError::NotFoundShared(store.label().to_owned()))?;
        let label = PathBuf::from(store.label());
        let shared = SharedState {
            doc: store,
            version: AtomicI64::new(revision),
            stale_after_ms: i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX),
            last_miss_ms: AtomicI64::new(0),
        };
        let keyring = Self::unseal(&stored, spec, policy, label, None, Some(shared))?;
        let known = Arc::downgrade(&keyring.inner);
        let target = Arc::downgrade(&keyring.inner);
        if let Some(shared) = &keyring.inner.shared {
            shared.doc.follow(
                move || {
                    known
                        .upgrade()
                        .and_then(|i| i.shared.as_ref().map(|s| s.version.load(Ordering::Acquire)))
                },
                move || {
                    if let Some(inner) = target.upgrade() {
                        if let Err(e) = (Keyring { inner }).refresh() {
                            tracing::warn!(error = %e, "cannot reload the shared keyring");
                        }
                    }
                },
            );
        }
        Ok(keyring)
    }

    /// Checks the stored document with the root key and builds the keyring.
    fn unseal(
        stored: &[u8],
        spec: &SealSpec,
        policy: RotationPolicy,
        dir: PathBuf,
        db: Option<sled::Db>,
        shared: Option<SharedState>,
    ) -> Result<Keyring, KeyringError> {
        if stored.len() < 32 {
            return Err(KeyringError::Corrupt("keyring record is truncated".into()));
        }
        let (tag, json) = stored.split_at(32);
        // The seal parameters must be read before the MAC can be checked; they are checked right
        // after, and nothing else in the document is used until then.
        let doc: Doc = serde_json::from_slice(json).map_err(|_| KeyringError::Unseal)?;
        let root = derive_root(spec, &doc.seal)?;
        let mac_key = crypto::hkdf_expand(root.key(), INFO_MAC);
        if !crypto::hmac_sha256_verify(&mac_key, json, tag) {
            return Err(KeyringError::Unseal);
        }
        if doc.format != FORMAT_VERSION {
            return Err(KeyringError::UnsupportedFormat(doc.format.to_string()));
        }
        let seal_key = crypto::hkdf_expand(root.key(), INFO_SEAL);
        drop(root);
        let mut keyring_id = [0u8; 16];
        hex::decode_to_slice(&doc.keyring_id, &mut keyring_id)
            .map_err(|_| KeyringError::Corrupt("bad keyring id".into()))?;
        let algorithm: Algorithm = doc
            .algorithm
            .parse()
            .map_err(|e: crypto::UnknownAlgorithm| KeyringError::Corrupt(e.to_string()))?;
        let mut counters = HashMap::new();
        add_counters(&doc, &mut counters)?;
        let snapshot = build_snapshot(&doc, &keyring_id, &seal_key, &counters)?;
        let seal_kind = doc.seal.kind();
        let inner = Arc::new(Inner {
            dir,
            shared,
            snapshot: ArcSwap::from_pointee(snapshot),
            writer: Mutex::new(Writer { doc, db, counters }),
            seal_key,
            mac_key,
            keyring_id,
            algorithm,
            seal_kind,
            policy,
            healthy: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        });
        let keyring = Keyring { inner };
        // Reserve a first block of encryptions for the primary so the hot path starts I/O-free.
        let primary = keyring.inner.snapshot.load().primary.clone();
        let used = primary.counter.used.load(Ordering::Relaxed);
        keyring.reserve(&primary, used + 1, used + RESERVATION_BLOCK)?;
        keyring.self_test();
        Ok(keyring)
    }

    /// Reloads a shared keyring from etcd if another replica changed it. A no-op for a keyring
    /// in a data directory.
    pub fn refresh(&self) -> Result<(), KeyringError> {
        if self.inner.shared.is_none() {
            return Ok(());
        }
        let mut w = self.lock_writer();
        self.reload_locked(&mut w)
    }

    /// Replaces the held document with the one in etcd, if it changed. The new document must
    /// pass the MAC and belong to the same keyring.
    fn reload_locked(&self, w: &mut Writer) -> Result<(), KeyringError> {
        let Some(shared) = &self.inner.shared else {
            return Err(KeyringError::Storage {
                path: self.inner.dir.clone(),
                message: "the keyring changed underneath this process".into(),
            });
        };
        let (stored, revision) = shared
            .doc
            .load()?
            .ok_or_else(|| KeyringError::NotFoundShared(shared.doc.label().to_owned()))?;
        if revision == shared.version.load(Ordering::Acquire) {
            return Ok(());
        }
        if stored.len() < 32 {
            return Err(KeyringError::Corrupt("keyring record is truncated".into()));
        }
        let (tag, json) = stored.split_at(32);
        if !crypto::hmac_sha256_verify(&self.inner.mac_key, json, tag) {
            return Err(KeyringError::Unseal);
        }
        let doc: Doc =
            serde_json::from_slice(json).map_err(|e| KeyringError::Corrupt(e.to_string()))?;
        if doc.format != FORMAT_VERSION {
            return Err(KeyringError::UnsupportedFormat(doc.format.to_string()));
        }
        if doc.keyring_id != hex::encode(self.inner.keyring_id) {
            return Err(KeyringError::Corrupt(
                "the shared keyring was replaced by another keyring".into(),
            ));
        }
        add_counters(&doc, &mut w.counters)?;
        let snapshot = build_snapshot(
            &doc,
            &self.inner.keyring_id,
            &self.inner.seal_key,
            &w.counters,
        )?;
        let before = self.inner.snapshot.load().primary.key_id.clone();
        w.doc = doc;
        shared.version.store(revision, Ordering::Release);
        self.inner.snapshot.store(Arc::new(snapshot));
        let after = self.inner.snapshot.load().primary.key_id.clone();
        if before != after {
            tracing::info!(key_id = %after, previous = %before, "primary key changed by another replica");
        }
        Ok(())
    }

    /// Keyring-wide facts.
    pub fn info(&self) -> KeyringInfo {
        KeyringInfo {
            keyring_id: hex::encode(self.inner.keyring_id),
            algorithm: self.inner.algorithm,
            seal: self.inner.seal_kind,
            storage: if self.inner.shared.is_some() {
                self.inner.dir.display().to_string()
            } else {
                format!("sled:{}", self.inner.dir.display())
            },
            policy: self.inner.policy,
        }
    }

    /// Health and primary key_id, without I/O or key derivation.
    pub fn health(&self) -> Health {
        let current = self.inner.shared.as_ref().is_none_or(|sh| {
            shared::now_ms() - sh.doc.confirmed_ms.load(Ordering::Acquire) <= sh.stale_after_ms
        });
        let tested = self.inner.healthy.load(Ordering::Acquire);
        Health {
            healthy: tested && current,
            problem: if !tested {
                Some("keyring self-test failed")
            } else if !current {
                Some(
                    "shared keyring not confirmed current: etcd unreachable beyond the stale bound",
                )
            } else {
                None
            },
            primary_key_id: self.inner.snapshot.load().primary.key_id.clone(),
        }
    }

    /// Every KEK, oldest first.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.inner
            .snapshot
            .load()
            .ordered
            .iter()
            .map(|k| k.info())
            .collect()
    }

    /// Wraps `plaintext` (1..=64 KiB) under the primary KEK; returns the ciphertext and the
    /// primary's key_id.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<(Vec<u8>, Arc<str>), KeyringError> {
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(KeyringError::InvalidInput {
                field: "plaintext",
                reason: format!(
                    "must be 1 to {MAX_PLAINTEXT} bytes, got {} bytes",
                    plaintext.len()
                ),
            });
        }
        let primary = self.inner.snapshot.load().primary.clone();
        self.count_encryption(&primary)?;
        let cipher = primary
            .cipher
            .as_ref()
            .expect("the primary KEK always has material");
        let alg = primary.alg;
        let mut out = Vec::with_capacity(HEADER_LEN + alg.nonce_len() + plaintext.len() + TAG_LEN);
        out.push(CIPHERTEXT_VERSION);
        out.push(alg.id());
        out.extend_from_slice(&primary.id);
        out.resize(HEADER_LEN + alg.nonce_len(), 0);
        crypto::fill_random(&mut out[HEADER_LEN..])?;
        let (header, nonce) = out.split_at(HEADER_LEN);
        let (header, nonce) = (header.to_vec(), nonce.to_vec());
        cipher.seal_into(&nonce, &header, plaintext, &mut out)?;
        Ok((out, primary.key_id.clone()))
    }

    /// Unwraps a ciphertext made by [`Keyring::encrypt`]. With `key_id`, the ciphertext must
    /// also have been made under that key_id. Every failure is [`KeyringError::Decrypt`].
    pub fn decrypt(
        &self,
        ciphertext: &[u8],
        key_id: Option<&str>,
    ) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        if ciphertext.len() < HEADER_LEN || ciphertext.len() > MAX_CIPHERTEXT {
            return Err(KeyringError::Decrypt);
        }
        if ciphertext[0] != CIPHERTEXT_VERSION {
            return Err(KeyringError::Decrypt);
        }
        let alg = Algorithm::from_id(ciphertext[1]).ok_or(KeyringError::Decrypt)?;
        let id: [u8; KEK_ID_LEN] = ciphertext[2..HEADER_LEN]
            .try_into()
            .expect("slice has KEK_ID_LEN bytes");
        let found = self.inner.snapshot.load().by_id.get(&id).cloned();
        let kek = match found {
            Some(kek) => kek,
            None => {
                self.refresh_for_unknown_key();
                self.inner
                    .snapshot
                    .load()
                    .by_id
                    .get(&id)
                    .cloned()
                    .ok_or(KeyringError::Decrypt)?
            }
        };
        if !kek.state.decrypts() || kek.alg != alg {
            return Err(KeyringError::Decrypt);
        }
        if let Some(want) = key_id {
            if want != &*kek.key_id {
                return Err(KeyringError::Decrypt);
            }
        }
        let cipher = kek.cipher.as_ref().ok_or(KeyringError::Decrypt)?;
        let rest = &ciphertext[HEADER_LEN..];
        if rest.len() < alg.nonce_len() + TAG_LEN {
            return Err(KeyringError::Decrypt);
        }
        let (nonce, sealed) = rest.split_at(alg.nonce_len());
        Ok(cipher.open(nonce, &ciphertext[..HEADER_LEN], sealed)?)
    }

    /// Encrypts and decrypts a random value with the primary and records the result as the
    /// health that [`Keyring::health`] reports.
    pub fn self_test(&self) -> bool {
        let ok = (|| -> Result<bool, KeyringError> {
            let probe = Zeroizing::new(crypto::random_array::<32>()?);
            let (ct, key_id) = self.encrypt(probe.as_ref())?;
            let back = self.decrypt(&ct, Some(&key_id))?;
            Ok(back.as_slice() == probe.as_ref())
        })()
        .unwrap_or(false);
        self.inner.healthy.store(ok, Ordering::Release);
        if !ok {
            tracing::error!("keyring self-test failed; reporting unhealthy");
        }
        ok
    }

    /// A shared keyring may lack a key another replica just created: reload from etcd, at most
    /// once per [`MISS_RELOAD_INTERVAL_MS`] so that made-up key ids cannot flood etcd.
    fn refresh_for_unknown_key(&self) {
        let Some(shared) = &self.inner.shared else {
            return;
        };
        let now = shared::now_ms();
        let last = shared.last_miss_ms.load(Ordering::Acquire);
        if now - last < MISS_RELOAD_INTERVAL_MS
            || shared
                .last_miss_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "cannot reload the shared keyring for an unknown key id");
        }
    }

    /// Creates a new primary KEK; the old primary becomes decrypt-only. Blocking (fsync, or a
    /// compare-and-swap in etcd). If another replica rotates the shared keyring meanwhile, its
    /// new primary is the result: concurrent rotations never make two primaries, nor rotate
    /// twice for one request.
    pub fn rotate(&self) -> Result<Rotated, KeyringError> {
        let mut w = self.lock_writer();
        let previous = self.inner.snapshot.load().primary.key_id.to_string();
        for _ in 0..MAX_CAS_ATTEMPTS {
            if *self.inner.snapshot.load().primary.key_id != *previous {
                break;
            }
            let mut doc = w.doc.clone();
            for rec in doc.keys.iter_mut() {
                if rec.state == KeyState::Primary {
                    rec.state = KeyState::DecryptOnly;
                }
            }
            let mut rec = new_key_record(
                &mut doc,
                &self.inner.keyring_id,
                &self.inner.seal_key,
                self.inner.algorithm,
            )?;
            rec.encryptions_reserved = RESERVATION_BLOCK;
            let id = parse_id(&rec.id)?;
            doc.keys.push(rec);
            let counter = Arc::new(Counter::default());
            counter.reserved.store(RESERVATION_BLOCK, Ordering::Relaxed);
            w.counters.insert(id, counter);
            if self.commit(&mut w, doc)? {
                break;
            }
            self.reload_locked(&mut w)?;
        }
        drop(w);
        let primary = self.inner.snapshot.load().primary.info();
        if primary.key_id == previous {
            return Err(self.too_busy());
        }
        tracing::info!(key_id = %primary.key_id, previous = %previous, "rotated primary key");
        self.self_test();
        Ok(Rotated {
            primary,
            previous_key_id: previous,
        })
    }

    fn too_busy(&self) -> KeyringError {
        KeyringError::Storage {
            path: self.inner.dir.clone(),
            message: format!(
                "the keyring kept changing under {MAX_CAS_ATTEMPTS} attempts; try again"
            ),
        }
    }

    /// Moves a decrypt-only KEK to disabled. Refuses the primary. Idempotent for disabled keys.
    pub fn retire(&self, key_id: &str) -> Result<KeyInfo, KeyringError> {
        self.change_state(key_id, |rec| match rec.state {
            KeyState::Primary => Err(KeyringError::Precondition(format!(
                "key_id {key_id:?} is the primary key; rotate first, then retire it"
            ))),
            KeyState::Destroyed => Err(KeyringError::Precondition(format!(
                "key_id {key_id:?} is already destroyed"
            ))),
            KeyState::DecryptOnly | KeyState::Disabled => {
                rec.state = KeyState::Disabled;
                Ok(())
            }
        })
    }

    /// Erases a disabled KEK's material for good; `confirm` must repeat `key_id`.
    pub fn destroy(&self, key_id: &str, confirm: &str) -> Result<KeyInfo, KeyringError> {
        if confirm != key_id {
            return Err(KeyringError::InvalidInput {
                field: "confirm",
                reason: "must repeat the key_id being destroyed exactly".into(),
            });
        }
        self.change_state(key_id, |rec| match rec.state {
            KeyState::Disabled => {
                rec.state = KeyState::Destroyed;
                rec.sealed = None;
                Ok(())
            }
            KeyState::Destroyed => Err(KeyringError::Precondition(format!(
                "key_id {key_id:?} is already destroyed"
            ))),
            _ => Err(KeyringError::Precondition(format!(
                "key_id {key_id:?} is {}; retire it before destroying it",
                rec.state.name()
            ))),
        })
    }

    /// Starts the background task that extends encryption reservations, rotates by policy and
    /// re-runs the self-test every `interval`. It stops when the guard is dropped.
    pub fn start_maintenance(&self, interval: Duration) -> MaintenanceGuard {
        let keyring = self.clone();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = keyring.inner.wake.notified() => {}
                }
                let k = keyring.clone();
                let res = tokio::task::spawn_blocking(move || k.maintain(now_unix())).await;
                match res {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "keyring maintenance failed"),
                    Err(e) => tracing::error!(error = %e, "keyring maintenance panicked"),
                }
            }
        });
        MaintenanceGuard { handle }
    }

    /// One maintenance pass at time `now` (seconds since the epoch). Blocking.
    pub fn maintain(&self, now: i64) -> Result<(), KeyringError> {
        let primary = self.inner.snapshot.load().primary.clone();
        let used = primary.counter.used.load(Ordering::Relaxed);
        let need = used + RESERVATION_BLOCK / 2;
        if need >= primary.counter.reserved.load(Ordering::Acquire) {
            self.reserve(&primary, need + 1, used + RESERVATION_BLOCK)?;
        }
        if let Some(reason) = rotation_due(&self.inner.policy, &primary.info(), now) {
            tracing::info!(key_id = %primary.key_id, reason, "automatic rotation");
            self.rotate()?;
        } else {
            self.self_test();
        }
        Ok(())
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic while holding the lock cannot leave the document half-changed: every change
        // is made on a copy and committed at once.
        self.inner.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change_state(
        &self,
        key_id: &str,
        f: impl Fn(&mut KeyRecord) -> Result<(), KeyringError>,
    ) -> Result<KeyInfo, KeyringError> {
        let mut w = self.lock_writer();
        let mut committed = false;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut doc = w.doc.clone();
            let rec = doc
                .keys
                .iter_mut()
                .find(|r| {
                    parse_id(&r.id)
                        .map(|id| key_id_string(r.seq, &id) == key_id)
                        .unwrap_or(false)
                })
                .ok_or_else(|| KeyringError::UnknownKey(key_id.to_owned()))?;
            f(rec)?;
            if self.commit(&mut w, doc)? {
                committed = true;
                break;
            }
            self.reload_locked(&mut w)?;
        }
        drop(w);
        if !committed {
            return Err(self.too_busy());
        }
        let info = self
            .keys()
            .into_iter()
            .find(|k| k.key_id == key_id)
            .ok_or_else(|| KeyringError::UnknownKey(key_id.to_owned()))?;
        tracing::info!(key_id, state = info.state.name(), "key state changed");
        Ok(info)
    }

    /// Persists `doc` durably, then publishes the new snapshot. Returns false, changing
    /// nothing, if another replica changed the shared keyring first (reload and retry).
    fn commit(&self, w: &mut Writer, doc: Doc) -> Result<bool, KeyringError> {
        let snapshot = build_snapshot(
            &doc,
            &self.inner.keyring_id,
            &self.inner.seal_key,
            &w.counters,
        )?;
        if !self.persist(w, &doc)? {
            return Ok(false);
        }
        w.doc = doc;
        self.inner.snapshot.store(Arc::new(snapshot));
        Ok(true)
    }

    /// Writes `doc` to the data directory (fsynced) or to etcd (compare-and-swap on the
    /// revision this replica holds). False: etcd holds a newer document.
    fn persist(&self, w: &Writer, doc: &Doc) -> Result<bool, KeyringError> {
        if let Some(db) = &w.db {
            write_doc(db, &self.inner.dir, doc, &self.inner.mac_key)?;
            return Ok(true);
        }
        let Some(shared) = &self.inner.shared else {
            return Err(KeyringError::Corrupt("the keyring has no storage".into()));
        };
        let value = encode_doc(doc, &self.inner.mac_key)?;
        match shared
            .doc
            .save(value, shared.version.load(Ordering::Acquire))?
        {
            Saved::Done(revision) => {
                shared.version.store(revision, Ordering::Release);
                Ok(true)
            }
            Saved::Conflict => Ok(false),
        }
    }

    fn count_encryption(&self, kek: &Kek) -> Result<(), KeyringError> {
        let n = kek.counter.used.fetch_add(1, Ordering::Relaxed);
        if kek.alg == Algorithm::Aes256Gcm && n >= AES_GCM_HARD_LIMIT {
            return Err(KeyringError::Exhausted);
        }
        let reserved = kek.counter.reserved.load(Ordering::Acquire);
        if n >= reserved {
            self.reserve(kek, n + 1, n + RESERVATION_BLOCK)?;
        } else if reserved - n == RESERVATION_BLOCK / 2 {
            self.inner.wake.notify_one();
        }
        if let Some(max) = self.inner.policy.max_encryptions {
            if n + 1 == max {
                self.inner.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Makes sure at least `need` encryptions are reserved for `kek`, persisting up to `target`
    /// if not.
    ///
    /// The stored count grows by exactly what this process adds to its own allowance, so with a
    /// shared keyring the stored count bounds the encryptions of all replicas together (each
    /// replica starts counting from the stored count, which can only over-count).
    fn reserve(&self, kek: &Kek, need: u64, target: u64) -> Result<(), KeyringError> {
        let mut w = self.lock_writer();
        for _ in 0..MAX_CAS_ATTEMPTS {
            let local = kek.counter.reserved.load(Ordering::Acquire);
            if local >= need {
                return Ok(());
            }
            let delta = target.saturating_sub(local).max(need - local);
            let mut doc = w.doc.clone();
            let id = hex::encode(kek.id);
            let rec = doc
                .keys
                .iter_mut()
                .find(|r| r.id == id)
                .ok_or_else(|| KeyringError::Corrupt("reserving for an unknown key".into()))?;
            rec.encryptions_reserved = rec.encryptions_reserved.saturating_add(delta);
            if self.persist(&w, &doc)? {
                w.doc = doc;
                kek.counter.reserved.store(local + delta, Ordering::Release);
                return Ok(());
            }
            self.reload_locked(&mut w)?;
        }
        Err(self.too_busy())
    }
}

/// Why the primary should be rotated now under `policy`, if it should.
pub fn rotation_due(policy: &RotationPolicy, primary: &KeyInfo, now: i64) -> Option<&'static str> {
    if let Some(max_age) = policy.max_age {
        let age = now.saturating_sub(primary.created_unix).max(0) as u64;
        if age >= max_age.as_secs() {
            return Some("age");
        }
    }
    if let Some(max) = policy.max_encryptions {
        if primary.encryptions >= max {
            return Some("encryption count");
        }
    }
    None
}

/// Owns the maintenance task; dropping it stops the task.
#[derive(Debug)]
pub struct MaintenanceGuard {
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for MaintenanceGuard {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn new_key_record(
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

/// The stored form: `HMAC-SHA256(mac_key, json) || json`.
fn encode_doc(doc: &Doc, mac_key: &Key32) -> Result<Vec<u8>, KeyringError> {
    let json = serde_json::to_vec(doc).map_err(|e| KeyringError::Corrupt(e.to_string()))?;
    let mut value = Vec::with_capacity(32 + json.len());
    value.extend_from_slice(&crypto::hmac_sha256(mac_key, &json));
    value.extend_from_slice(&json);
    Ok(value)
}

fn write_doc(db: &sled::Db, dir: &Path, doc: &Doc, mac_key: &Key32) -> Result<(), KeyringError> {
    db.insert(DB_DOC_KEY, encode_doc(doc, mac_key)?)
        .map_err(storage_err(dir))?;
    durable_flush(db, dir)
}

/// A new keyring document with its first KEK, its MAC key, and that KEK's info.
fn new_doc(spec: &SealSpec, opts: &InitOptions) -> Result<(Doc, Key32, KeyInfo), KeyringError> {
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
        key_id: key_id_string(rec.seq, &parse_id(&rec.id)?),
        seq: rec.seq,
        state: KeyState::Primary,
        algorithm: opts.algorithm,
        created_unix: rec.created_unix,
        encryptions: 0,
    };
    doc.keys.push(rec);
    Ok((doc, mac_key, info))
}

/// Counters for keys not yet counted, starting at their stored reservation.
fn add_counters(
    doc: &Doc,
    counters: &mut HashMap<[u8; KEK_ID_LEN], Arc<Counter>>,
) -> Result<(), KeyringError> {
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

/// The etcd key of a shared keyring under `prefix`.
pub fn shared_key(prefix: &str) -> String {
    format!("/{}/kms/keyring", prefix.trim_matches('/'))
}

fn build_snapshot(
    doc: &Doc,
    keyring_id: &[u8; 16],
    seal_key: &Key32,
    counters: &HashMap<[u8; KEK_ID_LEN], Arc<Counter>>,
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

    fn keyfile(dir: &Path) -> SealSpec {
        let p = dir.join("root.key");
        seal::generate_keyfile(&p).unwrap();
        SealSpec::KeyFile(p)
    }

    fn opts(alg: Algorithm) -> InitOptions {
        InitOptions {
            algorithm: alg,
            kdf: None,
        }
    }

    #[test]
    fn init_open_encrypt_decrypt_rotate_restart() {
        for alg in Algorithm::ALL {
            let tmp = tempfile::tempdir().unwrap();
            let spec = keyfile(tmp.path());
            let data = tmp.path().join("data");
            let first = Keyring::init(&data, &spec, &opts(alg)).unwrap();
            assert!(first.key_id.starts_with("kw-1-"));
            assert!(matches!(
                Keyring::init(&data, &spec, &opts(alg)),
                Err(KeyringError::Exists(_))
            ));
            let kr = Keyring::open(&data, &spec, RotationPolicy::default()).unwrap();
            let h = kr.health();
            assert!(h.healthy);
            assert_eq!(&*h.primary_key_id, first.key_id);
            let (ct, kid) = kr.encrypt(&[9u8; 32]).unwrap();
            assert_eq!(ct.len(), HEADER_LEN + alg.nonce_len() + 32 + TAG_LEN);
            assert_eq!(&*kid, first.key_id);
            assert_eq!(kr.decrypt(&ct, Some(&kid)).unwrap().as_slice(), &[9u8; 32]);
            let rot = kr.rotate().unwrap();
            assert_eq!(rot.previous_key_id, first.key_id);
            assert!(rot.primary.key_id.starts_with("kw-2-"));
            assert_eq!(kr.decrypt(&ct, Some(&kid)).unwrap().as_slice(), &[9u8; 32]);
            // Wrong key_id for a valid ciphertext is refused.
            assert!(matches!(
                kr.decrypt(&ct, Some(&rot.primary.key_id)),
                Err(KeyringError::Decrypt)
            ));
            drop(kr);
            let kr = Keyring::open(&data, &spec, RotationPolicy::default()).unwrap();
            assert_eq!(&*kr.health().primary_key_id, rot.primary.key_id);
            assert_eq!(kr.decrypt(&ct, Some(&kid)).unwrap().as_slice(), &[9u8; 32]);
            let keys = kr.keys();
            assert_eq!(keys.len(), 2);
            assert_eq!(keys[0].state, KeyState::DecryptOnly);
            assert!(
                keys[0].encryptions >= 2,
                "counts survive restarts as upper bounds"
            );
        }
    }

    #[test]
    fn wrong_root_key_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path());
        let data = tmp.path().join("data");
        Keyring::init(&data, &spec, &opts(Algorithm::Aes256Gcm)).unwrap();
        let before = snapshot_dir(&data);
        let other = tmp.path().join("other.key");
        seal::generate_keyfile(&other).unwrap();
        let e =
            Keyring::open(&data, &SealSpec::KeyFile(other), RotationPolicy::default()).unwrap_err();
        assert!(matches!(e, KeyringError::Unseal), "{e}");
        assert!(before == snapshot_dir(&data), "keyring content changed");
        let e = Keyring::open(
            &data,
            &SealSpec::PassphraseFile(tmp.path().join("x")),
            RotationPolicy::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("sealed with keyfile"), "{e}");
        let e =
            Keyring::open(&tmp.path().join("none"), &spec, RotationPolicy::default()).unwrap_err();
        assert!(matches!(e, KeyringError::NotFound(_)));
    }

    /// The stored keyring record and format version (sled's own housekeeping files may change
    /// on any open; the keyring's content must not).
    fn snapshot_dir(dir: &Path) -> Vec<Vec<u8>> {
        let db = open_db(dir).unwrap();
        [DB_FORMAT_KEY, DB_DOC_KEY]
            .iter()
            .map(|k| db.get(k).unwrap().unwrap().to_vec())
            .collect()
    }

    #[test]
    fn retire_and_destroy_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path());
        let data = tmp.path().join("data");
        let first = Keyring::init(&data, &spec, &opts(Algorithm::Aes256Gcm)).unwrap();
        let kr = Keyring::open(&data, &spec, RotationPolicy::default()).unwrap();
        let (ct, kid) = kr.encrypt(b"seed").unwrap();
        let e = kr.retire(&first.key_id).unwrap_err();
        assert!(e.to_string().contains("rotate first"), "{e}");
        assert!(kr.destroy(&first.key_id, &first.key_id).is_err());
        kr.rotate().unwrap();
        assert!(matches!(
            kr.destroy(&first.key_id, &first.key_id),
            Err(KeyringError::Precondition(_))
        ));
        assert_eq!(kr.retire(&first.key_id).unwrap().state, KeyState::Disabled);
        assert!(matches!(
            kr.decrypt(&ct, Some(&kid)),
            Err(KeyringError::Decrypt)
        ));
        assert!(matches!(
            kr.destroy(&first.key_id, "nope"),
            Err(KeyringError::InvalidInput {
                field: "confirm",
                ..
            })
        ));
        assert_eq!(
            kr.destroy(&first.key_id, &first.key_id).unwrap().state,
            KeyState::Destroyed
        );
        assert!(matches!(
            kr.retire("kw-9-00"),
            Err(KeyringError::UnknownKey(_))
        ));
        drop(kr);
        let kr = Keyring::open(&data, &spec, RotationPolicy::default()).unwrap();
        assert_eq!(kr.keys()[0].state, KeyState::Destroyed);
        assert!(matches!(
            kr.decrypt(&ct, Some(&kid)),
            Err(KeyringError::Decrypt)
        ));
    }

    #[test]
    fn tampered_ciphertexts_all_fail_the_same_way() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path());
        let data = tmp.path().join("data");
        Keyring::init(&data, &spec, &opts(Algorithm::Aes256Gcm)).unwrap();
        let kr = Keyring::open(&data, &spec, RotationPolicy::default()).unwrap();
        let (ct, kid) = kr.encrypt(&[1u8; 32]).unwrap();
        for i in 0..ct.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = ct.clone();
                t[i] ^= bit;
                assert!(matches!(
                    kr.decrypt(&t, Some(&kid)),
                    Err(KeyringError::Decrypt)
                ));
            }
        }
        for n in 0..ct.len() {
            assert!(matches!(
                kr.decrypt(&ct[..n], None),
                Err(KeyringError::Decrypt)
            ));
        }
        let mut long = ct.clone();
        long.push(0);
        assert!(matches!(
            kr.decrypt(&long, None),
            Err(KeyringError::Decrypt)
        ));
        assert!(matches!(
            kr.decrypt(&vec![1u8; MAX_CIPHERTEXT + 1], None),
            Err(KeyringError::Decrypt)
        ));
    }

    #[test]
    fn tampered_keyring_file_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path());
        let data = tmp.path().join("data");
        let first = Keyring::init(&data, &spec, &opts(Algorithm::Aes256Gcm)).unwrap();
        {
            // Flip the primary's state inside the stored JSON, keeping the old MAC.
            let db = open_db(&data).unwrap();
            let v = db.get(DB_DOC_KEY).unwrap().unwrap().to_vec();
            let text = String::from_utf8(v[32..].to_vec()).unwrap();
            assert!(text.contains(&first.key_id[5..]));
            let edited = text.replace("\"primary\"", "\"disabled\"");
            let mut nv = v[..32].to_vec();
            nv.extend_from_slice(edited.as_bytes());
            db.insert(DB_DOC_KEY, nv).unwrap();
            db.flush().unwrap();
        }
        let e = Keyring::open(&data, &spec, RotationPolicy::default()).unwrap_err();
        assert!(matches!(e, KeyringError::Unseal), "{e}");
    }

    #[test]
    fn rotation_policy() {
        let p = RotationPolicy {
            max_age: Some(Duration::from_secs(100)),
            max_encryptions: Some(10),
        };
        let mut k = KeyInfo {
            key_id: "kw-1-00".into(),
            seq: 1,
            state: KeyState::Primary,
            algorithm: Algorithm::Aes256Gcm,
            created_unix: 1000,
            encryptions: 0,
        };
        assert_eq!(rotation_due(&p, &k, 1099), None);
        assert_eq!(rotation_due(&p, &k, 1100), Some("age"));
        k.encryptions = 10;
        assert_eq!(rotation_due(&p, &k, 1000), Some("encryption count"));
        let off = RotationPolicy {
            max_age: None,
            max_encryptions: None,
        };
        assert_eq!(rotation_due(&off, &k, i64::MAX), None);
    }

    #[test]
    fn maintenance_rotates_by_count() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path());
        let data = tmp.path().join("data");
        Keyring::init(&data, &spec, &opts(Algorithm::Aes256Gcm)).unwrap();
        let policy = RotationPolicy {
            max_age: None,
            max_encryptions: Some(5),
        };
        let kr = Keyring::open(&data, &spec, policy).unwrap();
        let before = kr.health().primary_key_id;
        kr.maintain(now_unix()).unwrap();
        assert_eq!(kr.health().primary_key_id, before, "not due yet");
        for _ in 0..5 {
            kr.encrypt(b"x").unwrap();
        }
        kr.maintain(now_unix()).unwrap();
        assert_ne!(kr.health().primary_key_id, before);
        assert!(kr.health().healthy);
    }

    #[test]
    fn reservations_cover_every_encryption_across_crashes() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path());
        let data = tmp.path().join("data");
        Keyring::init(&data, &spec, &opts(Algorithm::Aes256Gcm)).unwrap();
        let kr = Keyring::open(&data, &spec, RotationPolicy::default()).unwrap();
        let n0 = kr.keys()[0].encryptions;
        drop(kr);
        // A restart resumes at the persisted reservation, never below what was used.
        let kr = Keyring::open(&data, &spec, RotationPolicy::default()).unwrap();
        assert!(kr.keys()[0].encryptions >= n0 + RESERVATION_BLOCK);
    }
}
