//! The keyring: key-encryption keys (KEKs) with ids, states and rotation, sealed at rest.
//!
//! Its seams, one file each:
//! - `envelope`: the ciphertext format of [`Keyring::encrypt`] (version, algorithm, KEK id,
//!   nonce, AEAD), self-describing so that any KEK still in the keyring opens its own.
//! - `document`: the persisted document, one JSON value with every KEK sealed under a key derived
//!   from the root key and the whole authenticated by an HMAC (`HMAC-SHA256(mac_key, json) ‖
//!   json`), and the in-memory snapshot built from it.
//! - `storage`: where the document lives ([`KeyringLocation`]): one key in a
//!   [`Backend`](crate::backend::Backend), a sled store in a data directory or etcd shared by
//!   plugin replicas; compare-and-swap saves, following other writers, and the conversion of a
//!   data directory written by keyward 0.1.0.
//! - `reload`: taking in documents other writers stored (following, reloading, adopting only
//!   documents that move forward) and the bounded wait of a request for an unknown key id.
//! - `rollback`: the check that a document moves forward (generation, states, counts) and a
//!   replica's durable mark of the newest document it accepted.
//! - `policy`: [`RotationPolicy`] and the maintenance task that applies it.
//! - `sealed`: a keyring sealed with Shamir shares ([`SealedKeyring`]), opened once enough
//!   shares are handed in; and root-key rotation ([`Keyring::rekey_root`]).
//!
//! # Key ids
//! A KEK's public `key_id` is `kw-<seq>-<32 hex>`, where the hex is 16 random bytes drawn when
//! the KEK is created. Restoring an older backup and rotating again draws new random bytes, so a
//! key_id that was ever issued is never issued again (collision probability ~2^-128 per pair).
//!
//! # Counting
//! Random-nonce AES-GCM must not seal more than 2^32 times under one key. Each KEK counts its
//! encryptions; the count is persisted as a reservation in blocks of [`RESERVATION_BLOCK`], so
//! the hot path does no I/O and a crash can only over-count. The stored count of a shared keyring
//! is the sum of every replica's reservations, so limits apply to an upper bound of the
//! encryptions of all replicas together (what this process made, plus what the others reserved).
//! Rotation by count and by age is done by [`Keyring::start_maintenance`].
//!
//! # Concurrency
//! `encrypt`, `decrypt`, `health` and `keys` read an immutable snapshot (swapped whole with
//! `ArcSwap`) and atomic counters: no lock, no I/O. A change takes the writer lock, saves a
//! changed copy of the document with a compare-and-swap (reloading and deciding again if another
//! writer came first), and only then publishes the new snapshot. Each change runs as a task of
//! its own, so a caller that stops waiting (a client hanging up) cannot cut it between its write
//! and publishing it. A request never waits on a shared keyring's backend for longer than
//! [`REQUEST_IO_WAIT`]: an unknown key id starts a reload in the background, and a reservation
//! that the block of encryptions ran out for goes on in the background.
//!
//! # Destroy
//! Destroying a KEK erases its sealed material from the document, re-seals the remaining KEKs
//! under a new seal epoch, and drops the older copies of the document the storage holds: a data
//! directory's store is rewritten, etcd is compacted to the new revision. Copies outside
//! (backups, etcd snapshots, the etcd members' own files until they reuse them) still hold it:
//! see docs/security.md.

mod document;
mod envelope;
mod policy;
mod reload;
mod rollback;
mod sealed;
mod storage;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::backend::Revision;
use crate::crypto::{self, Algorithm, CryptoError, Key32};
use crate::seal::{KdfParams, SealError, SealSpec, SplitShares};
use document::{Counter, Counters, Doc, DocKeys, Kek, KeyRecord, Snapshot};
use rollback::Mark;
use storage::{DocStore, FollowGuard};

pub use envelope::{CIPHERTEXT_VERSION, HEADER_LEN, KEK_ID_LEN, MAX_CIPHERTEXT, MAX_PLAINTEXT};
pub use policy::{
    rotation_due, MaintenanceGuard, RotationPolicy, DEFAULT_ROTATE_AFTER,
    DEFAULT_ROTATE_AFTER_ENCRYPTIONS,
};
pub use rollback::MARK_FILE;
pub use sealed::{Rekeyed, SealedKeyring, UnsealProgress, UnsealStep};
pub use storage::{
    shared_key, KeyringLocation, CONFIRM_EVERY, DEFAULT_KEY, DEFAULT_STALE_AFTER, DIR_STORE,
    LEGACY_DIR,
};

/// Encryptions reserved (persisted) at a time per KEK.
pub const RESERVATION_BLOCK: u64 = 1 << 18;
/// Hard stop for AES-GCM KEKs if rotation keeps failing: half of the 2^32 bound.
const AES_GCM_HARD_LIMIT: u64 = 1 << 31;
/// Attempts of a compare-and-swap change before giving up.
const MAX_CAS_ATTEMPTS: usize = 16;
/// Minimum time between reloads of a shared keyring for unknown key ids (ms).
const MISS_RELOAD_INTERVAL_MS: i64 = 100;
/// How long a request waits for a background reload (an unknown key id) or for a reservation
/// to be saved (a shared keyring's block of encryptions used up) before it fails: requests never
/// wait on etcd for longer, whatever etcd does.
pub const REQUEST_IO_WAIT: Duration = Duration::from_millis(500);
/// [`Inner::doc_problem`] values.
const DOC_OK: u8 = 0;
const DOC_INVALID: u8 = 1;
const DOC_ROLLED_BACK: u8 = 2;

/// Errors of this layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// There is no keyring at this location (operator: create one first).
    #[error("no keyring at {0}")]
    NotFound(String),
    /// Creating found an existing keyring (operator's input).
    #[error("a keyring already exists in {0}; refusing to replace it")]
    Exists(String),
    /// The keyring is sealed with Shamir shares: it opens only once enough shares are handed in
    /// ([`SealedKeyring`]) (operator's next step).
    #[error("the keyring is sealed with Shamir shares; hand in shares with `keyward kms unseal`")]
    Sealed,
    /// Another process re-sealed a shared keyring under a new root key (operator: restart this
    /// replica with the new seal).
    #[error("the shared keyring was re-sealed under a new root key by another replica; restart this replica with the new --seal")]
    Resealed,
    /// The root key does not open the keyring (operator's input), or the stored document was
    /// modified.
    #[error(
        "cannot unseal the keyring: wrong root key or passphrase, or the keyring was modified"
    )]
    Unseal,
    /// The keyring was sealed with another kind of root key source (operator's input).
    #[error("the keyring is sealed with {keyring}, but the root key given is {given}")]
    SealMismatch {
        /// Kind recorded in the keyring.
        keyring: &'static str,
        /// Kind of the root key source given.
        given: &'static str,
    },
    /// Reading the root key failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The stored keyring is malformed although authentic (a bug or a newer keyward).
    #[error("the keyring is corrupt: {0}")]
    Corrupt(String),
    /// The stored keyring has a format this version does not know (operator: upgrade keyward).
    #[error("unsupported keyring format version {0}; this keyward reads version 1")]
    UnsupportedFormat(String),
    /// The storage failed, is unreachable, or another process holds it (environment).
    #[error("keyring storage in {location}: {message}")]
    Storage {
        /// Where the keyring lives: a data directory, or a backend and key.
        location: String,
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
    /// The stored document does not move forward from the one this process holds or last
    /// accepted: an older generation, a known key forgotten or moved back to an earlier state
    /// (someone with write access to the storage replayed an old document, or restored a
    /// backup; operator: see the log and docs/security.md).
    #[error("refusing the keyring document in {location} as a rollback: {reason}")]
    RolledBack {
        /// Where the document lives.
        location: String,
        /// Why it does not move forward (key ids and numbers only).
        reason: String,
    },
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
    /// `keyfile`, `passphrase-file`, `pkcs11` or `shamir`.
    pub seal: &'static str,
    /// Where the keyring is stored: `sled:<dir>`, or `<label> key <key>` for a shared keyring
    /// (e.g. `etcd:<endpoints> key /keyward/kms/keyring`).
    pub storage: String,
    /// Rotation policy in force.
    pub policy: RotationPolicy,
}

/// Options for [`Keyring::init`].
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Algorithm for this keyring's KEKs.
    pub algorithm: Algorithm,
    /// Argon2id parameters, used only with `passphrase-file:`.
    pub kdf: Option<KdfParams>,
}

/// A keyring just created.
#[derive(Debug)]
pub struct Created {
    /// Its first (primary) KEK.
    pub first: KeyInfo,
    /// With a Shamir seal, the shares to hand out now: they are shown this once.
    pub shares: Option<SplitShares>,
}

/// Result of a rotation.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The new primary.
    pub primary: KeyInfo,
    /// The previous primary's key_id, now decrypt-only.
    pub previous_key_id: String,
}

/// What `Status` needs, read without I/O.
#[derive(Debug, Clone)]
pub struct Health {
    /// The last self-test passed and, for a shared keyring, it was confirmed current within its
    /// stale bound and the stored document was not refused (a rollback, garbage, another
    /// keyring, a re-seal elsewhere).
    pub healthy: bool,
    /// Why not healthy, for `healthz`.
    pub problem: Option<&'static str>,
    /// The primary KEK's key_id.
    pub primary_key_id: Arc<str>,
}

/// When a shared keyring was last confirmed current: see [`Keyring::confirmation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmation {
    /// Time since the last read that proved the held document current.
    pub ago: std::time::Duration,
    /// The keyring reports unhealthy once `ago` exceeds this.
    pub stale_after: std::time::Duration,
}

/// The document as this process holds it, and the keys of its root key; changed only under the
/// writer lock.
struct Writer {
    doc: Doc,
    counters: Counters,
    keys: DocKeys,
    /// The mark of the newest document accepted: a document read back must move forward from it.
    mark: Mark,
    /// The last revision refused (logged once).
    refused: Option<Revision>,
}

struct Inner {
    store: DocStore,
    snapshot: ArcSwap<Snapshot>,
    writer: tokio::sync::Mutex<Writer>,
    keyring_id: [u8; 16],
    algorithm: Algorithm,
    /// Kind of the current seal (changes with [`Keyring::rekey_root`]).
    seal_kind: RwLock<&'static str>,
    policy: RotationPolicy,
    healthy: AtomicBool,
    /// Another replica re-sealed the shared document under a root key this one does not have.
    resealed_elsewhere: AtomicBool,
    /// Whether the stored document was refused: `DOC_OK`, `DOC_INVALID`, `DOC_ROLLED_BACK`.
    doc_problem: AtomicU8,
    /// A background reload for an unknown key id is running.
    reloading: AtomicBool,
    /// Signalled when a background reload ends.
    reloaded: tokio::sync::Notify,
    /// Wakes the maintenance task early (reservation running low, rotation count reached).
    wake: Arc<tokio::sync::Notify>,
    /// Last reload for an unknown key id (ms since the epoch), to bound reloads.
    last_miss_ms: AtomicI64,
    /// The tasks following a shared document; they stop when the keyring is dropped.
    follow: OnceLock<FollowGuard>,
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

impl Keyring {
    /// Creates a keyring at `location` with its first KEK, sealed under the root key from
    /// `spec`. Refuses to replace an existing keyring (in a data directory, in either layout);
    /// a refused init, or a root key that cannot be read, changes nothing.
    ///
    /// A Shamir seal's shares would be lost here: use [`Keyring::create`] for those.
    pub async fn init(
        location: &KeyringLocation,
        spec: &SealSpec,
        opts: &InitOptions,
    ) -> Result<KeyInfo, KeyringError> {
        if spec.needs_shares() {
            return Err(KeyringError::InvalidInput {
                field: "seal",
                reason:
                    "a Shamir-sealed keyring is made with Keyring::create, which returns its shares"
                        .into(),
            });
        }
        Ok(Self::create(location, spec, opts).await?.first)
    }

    /// Creates a keyring as [`Keyring::init`] does, and returns the shares of a Shamir seal
    /// (shown once: they are not stored anywhere).
    pub async fn create(
        location: &KeyringLocation,
        spec: &SealSpec,
        opts: &InitOptions,
    ) -> Result<Created, KeyringError> {
        storage::refuse_existing(location)?;
        let (spec, opts) = (spec.clone(), opts.clone());
        let (stored, first, shares) = storage::blocking(&storage::describe(location), move || {
            document::new_doc(&spec, &opts)
        })
        .await?;
        storage::create(location, stored).await?;
        Ok(Created { first, shares })
    }

    /// Whether a keyring exists at `location` (in a data directory, in either layout).
    pub async fn exists(location: &KeyringLocation) -> Result<bool, KeyringError> {
        storage::exists(location).await
    }

    /// Opens and unseals the keyring at `location`. A wrong root key fails before anything is
    /// written; a data directory written by keyward 0.1.0 is converted once the root key opened
    /// it. A shared keyring then follows the changes other replicas make, and reports unhealthy
    /// once it could not confirm it is current for longer than its stale bound.
    ///
    /// A keyring sealed with Shamir shares cannot open this way ([`KeyringError::Sealed`]): see
    /// [`SealedKeyring::open`].
    pub async fn open(
        location: &KeyringLocation,
        spec: &SealSpec,
        policy: RotationPolicy,
    ) -> Result<Keyring, KeyringError> {
        let found = storage::Found::find(location).await?;
        let (stored, spec) = (found.stored().to_vec(), spec.clone());
        let unsealed = storage::blocking(&storage::describe(location), move || {
            document::unseal(&stored, &spec)
        })
        .await?;
        Self::from_unsealed(found, unsealed, policy).await
    }

    /// The keyring of a document found at its location and proved authentic.
    async fn from_unsealed(
        found: storage::Found,
        unsealed: document::Unsealed,
        policy: RotationPolicy,
    ) -> Result<Keyring, KeyringError> {
        let mark = Mark::of(&unsealed.doc, found.stored());
        let store = found.into_store().await?;
        if let Some(file) = store.mark_file().cloned() {
            let location = store.location().to_owned();
            let new = mark.clone();
            storage::blocking(&location.clone(), move || {
                if let Some(seen) = file.load()? {
                    rollback::check_forward(&seen, &new).map_err(|reason| {
                        let reason = format!(
                            "{reason} (seen by this replica, per {}; if the keyring was restored \
                             on purpose, remove that file)",
                            file.path().display()
                        );
                        tracing::error!(%reason, "refusing a rolled-back shared keyring");
                        rollback::refused(&location, reason)
                    })?;
                }
                file.store(&new)
            })
            .await?;
        }
        store.confirm();
        let mut counters = Counters::new();
        document::add_counters(&unsealed.doc, &mut counters)?;
        let snapshot = document::build_snapshot(
            &unsealed.doc,
            &unsealed.keyring_id,
            &unsealed.keys.seal_key(&unsealed.doc),
            &counters,
        )?;
        let keyring = Keyring {
            inner: Arc::new(Inner {
                store,
                snapshot: ArcSwap::from_pointee(snapshot),
                seal_kind: RwLock::new(unsealed.doc.seal.kind()),
                writer: tokio::sync::Mutex::new(Writer {
                    doc: unsealed.doc,
                    counters,
                    keys: unsealed.keys,
                    mark,
                    refused: None,
                }),
                keyring_id: unsealed.keyring_id,
                algorithm: unsealed.algorithm,
                policy,
                healthy: AtomicBool::new(false),
                resealed_elsewhere: AtomicBool::new(false),
                doc_problem: AtomicU8::new(DOC_OK),
                reloading: AtomicBool::new(false),
                reloaded: tokio::sync::Notify::new(),
                wake: Arc::new(tokio::sync::Notify::new()),
                last_miss_ms: AtomicI64::new(0),
                follow: OnceLock::new(),
            }),
        };
        // Reserve a first block of encryptions for the primary so the hot path starts I/O-free.
        let primary = keyring.inner.snapshot.load().primary.clone();
        let used = primary.counter.used.load(Ordering::Relaxed);
        keyring
            .reserve(&primary, used + 1, used + RESERVATION_BLOCK)
            .await?;
        keyring.self_test().await;
        keyring.follow();
        Ok(keyring)
    }

    fn build_snapshot(
        &self,
        doc: &Doc,
        seal_key: &Key32,
        counters: &Counters,
    ) -> Result<Snapshot, KeyringError> {
        document::build_snapshot(doc, &self.inner.keyring_id, seal_key, counters)
    }

    /// The seed of the key that signs the admin socket's audit checkpoints, derived from the
    /// root key the keyring was opened with: the same at every start until the root key is
    /// rotated, and known only to a process that can open the keyring.
    pub async fn admin_audit_seed(&self) -> Key32 {
        self.inner.writer.lock().await.keys.admin_audit_seed()
    }

    /// Keyring-wide facts.
    pub fn info(&self) -> KeyringInfo {
        KeyringInfo {
            keyring_id: hex::encode(self.inner.keyring_id),
            algorithm: self.inner.algorithm,
            seal: *self
                .inner
                .seal_kind
                .read()
                .unwrap_or_else(|e| e.into_inner()),
            storage: self.inner.store.description().to_owned(),
            policy: self.inner.policy,
        }
    }

    /// Health and primary key_id, without I/O or key derivation.
    pub fn health(&self) -> Health {
        let current = self.inner.store.current();
        let tested = self.inner.healthy.load(Ordering::Acquire);
        let resealed = self.inner.resealed_elsewhere.load(Ordering::Acquire);
        let doc = self.inner.doc_problem.load(Ordering::Acquire);
        Health {
            healthy: tested && current && !resealed && doc == DOC_OK,
            problem: if resealed {
                Some("shared keyring re-sealed under a new root key by another replica; restart with the new seal")
            } else if doc == DOC_ROLLED_BACK {
                Some("shared keyring in etcd was rolled back to an older document; refusing it (see the plugin's log)")
            } else if doc != DOC_OK {
                Some("shared keyring in etcd is invalid or not this keyring; refusing it (see the plugin's log)")
            } else if !tested {
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

    /// For a keyring shared with other replicas: how long ago it was last confirmed current,
    /// and the bound after which [`Keyring::health`] reports it stale. `None` for a keyring in a
    /// data directory, which nobody else changes. No I/O.
    pub fn confirmation(&self) -> Option<Confirmation> {
        self.inner
            .store
            .confirmation()
            .map(|(ago, stale_after)| Confirmation { ago, stale_after })
    }

    /// Encryptions a KEK of this keyring's algorithm may make before [`Keyring::encrypt`]
    /// refuses ([`KeyringError::Exhausted`]) because rotation kept failing; `None` when the
    /// algorithm has no such bound (XChaCha20-Poly1305's 192-bit nonces).
    pub fn encryption_limit(&self) -> Option<u64> {
        (self.inner.algorithm == Algorithm::Aes256Gcm).then_some(AES_GCM_HARD_LIMIT)
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
    /// primary's key_id. Awaits only when the primary's reserved block of encryptions is used up
    /// (the maintenance task normally extends it well before).
    pub async fn encrypt(&self, plaintext: &[u8]) -> Result<(Vec<u8>, Arc<str>), KeyringError> {
        envelope::check_plaintext(plaintext)?;
        let primary = self.inner.snapshot.load().primary.clone();
        self.count_encryption(&primary).await?;
        let cipher = primary
            .cipher
            .as_ref()
            .expect("the primary KEK always has material");
        let out = envelope::seal(&primary.id, cipher, plaintext)?;
        Ok((out, primary.key_id.clone()))
    }

    /// Unwraps a ciphertext made by [`Keyring::encrypt`]. With `key_id`, the ciphertext must
    /// also have been made under that key_id. Every failure is [`KeyringError::Decrypt`]. Awaits
    /// only for a KEK id a shared keyring does not know (a peer may just have rotated): a reload
    /// runs in the background, and this waits for it at most [`REQUEST_IO_WAIT`].
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        key_id: Option<&str>,
    ) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        let (alg, id) = envelope::header(ciphertext)?;
        let found = self.inner.snapshot.load().by_id.get(&id).cloned();
        let kek = match found {
            Some(kek) => kek,
            None => {
                self.wait_for_reload().await;
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
        envelope::open(cipher, ciphertext)
    }

    /// Why [`Keyring::decrypt`] refused `ciphertext` (for the operator's log: callers get
    /// only the opaque [`KeyringError::Decrypt`]).
    pub fn decrypt_refusal(&self, ciphertext: &[u8], key_id: Option<&str>) -> &'static str {
        let Ok((alg, id)) = envelope::header(ciphertext) else {
            return "not a keyward ciphertext (bad header)";
        };
        let snapshot = self.inner.snapshot.load();
        let Some(kek) = snapshot.by_id.get(&id) else {
            return "made under a key this keyring does not hold";
        };
        match kek.state {
            KeyState::Disabled => "its key is disabled (retired)",
            KeyState::Destroyed => "its key is destroyed",
            _ if kek.alg != alg => "its algorithm is not its key's",
            _ if key_id.is_some_and(|want| want != &*kek.key_id) => {
                "the request's key_id is not the one it was made under"
            }
            _ => "it did not authenticate (altered, truncated, or not made by this keyring)",
        }
    }

    /// Encrypts and decrypts a random value with the primary and records the result as the
    /// health that [`Keyring::health`] reports.
    pub async fn self_test(&self) -> bool {
        let ok = async {
            let probe = Zeroizing::new(crypto::random_array::<32>()?);
            let (ct, key_id) = self.encrypt(probe.as_ref()).await?;
            let back = self.decrypt(&ct, Some(&key_id)).await?;
            Ok::<_, KeyringError>(back.as_slice() == probe.as_ref())
        }
        .await
        .unwrap_or(false);
        self.inner.healthy.store(ok, Ordering::Release);
        if !ok {
            tracing::error!("keyring self-test failed; reporting unhealthy");
        }
        ok
    }

    /// Runs a change of the keyring as a task of its own (see the module docs).
    async fn detached<T, F>(&self, change: impl FnOnce(Keyring) -> F) -> Result<T, KeyringError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, KeyringError>> + Send + 'static,
    {
        let task = tokio::spawn(change(self.clone()));
        storage::joined(task.await, self.inner.store.location())
    }

    /// Creates a new primary KEK; the old primary becomes decrypt-only. Durable when it returns.
    /// If another writer rotates a shared keyring meanwhile, its new primary is the result:
    /// concurrent rotations never make two primaries, nor rotate twice for one request.
    pub async fn rotate(&self) -> Result<Rotated, KeyringError> {
        self.detached(|k| async move { k.rotate_now().await }).await
    }

    async fn rotate_now(&self) -> Result<Rotated, KeyringError> {
        let mut w = self.inner.writer.lock().await;
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
            let seal_key = w.keys.seal_key(&doc);
            let mut rec = document::new_key_record(
                &mut doc,
                &self.inner.keyring_id,
                &seal_key,
                self.inner.algorithm,
            )?;
            rec.encryptions_reserved = RESERVATION_BLOCK;
            let id = document::parse_id(&rec.id)?;
            doc.keys.push(rec);
            let counter = Arc::new(Counter::default());
            counter.reserved.store(RESERVATION_BLOCK, Ordering::Relaxed);
            counter.stored.store(RESERVATION_BLOCK, Ordering::Relaxed);
            w.counters.insert(id, counter);
            if self.commit(&mut w, doc).await? {
                break;
            }
            self.reload_locked(&mut w).await?;
        }
        drop(w);
        let primary = self.inner.snapshot.load().primary.info();
        if primary.key_id == previous {
            return Err(self.too_busy());
        }
        tracing::info!(key_id_hash = %crypto::key_id_hash(&primary.key_id), previous_key_id_hash = %crypto::key_id_hash(&previous), "rotated primary key");
        self.self_test().await;
        Ok(Rotated {
            primary,
            previous_key_id: previous,
        })
    }

    fn too_busy(&self) -> KeyringError {
        KeyringError::Storage {
            location: self.inner.store.location().to_owned(),
            message: format!(
                "the keyring kept changing under {MAX_CAS_ATTEMPTS} attempts; try again"
            ),
        }
    }

    /// Moves a decrypt-only KEK to disabled. Refuses the primary. Idempotent for disabled keys.
    pub async fn retire(&self, key_id: &str) -> Result<KeyInfo, KeyringError> {
        self.change_state(key_id, |key_id, rec| match rec.state {
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
        .await
    }

    /// Erases a disabled KEK's material for good; `confirm` must repeat `key_id`.
    pub async fn destroy(&self, key_id: &str, confirm: &str) -> Result<KeyInfo, KeyringError> {
        if confirm != key_id {
            return Err(KeyringError::InvalidInput {
                field: "confirm",
                reason: "must repeat the key_id being destroyed exactly".into(),
            });
        }
        self.change_state(key_id, |key_id, rec| match rec.state {
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
        .await
    }

    /// Applies `rule` to the record of `key_id` and saves the result.
    async fn change_state(
        &self,
        key_id: &str,
        rule: fn(&str, &mut KeyRecord) -> Result<(), KeyringError>,
    ) -> Result<KeyInfo, KeyringError> {
        let key_id = key_id.to_owned();
        self.detached(move |k| async move { k.change_state_now(&key_id, rule).await })
            .await
    }

    async fn change_state_now(
        &self,
        key_id: &str,
        rule: fn(&str, &mut KeyRecord) -> Result<(), KeyringError>,
    ) -> Result<KeyInfo, KeyringError> {
        let mut w = self.inner.writer.lock().await;
        let mut committed = false;
        let mut destroyed = false;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut doc = w.doc.clone();
            let rec = doc
                .keys
                .iter_mut()
                .find(|r| r.key_id().is_ok_and(|id| id == key_id))
                .ok_or_else(|| KeyringError::UnknownKey(key_id.to_owned()))?;
            rule(key_id, rec)?;
            destroyed = rec.state == KeyState::Destroyed;
            if destroyed {
                // The remaining keys are sealed anew: the document shares no sealed bytes with
                // its earlier copies.
                doc = document::new_epoch(&doc, &self.inner.keyring_id, &w.keys)?;
            }
            if self.commit(&mut w, doc).await? {
                committed = true;
                break;
            }
            self.reload_locked(&mut w).await?;
        }
        if committed && destroyed {
            // Drop the superseded copies that still hold the destroyed key's sealed material.
            match self.inner.store.shred().await {
                Ok(()) => tracing::info!("dropped the older copies of the keyring"),
                Err(e) => tracing::error!(
                    error = %e,
                    "a key is destroyed, but older copies of the keyring could not be dropped"
                ),
            }
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
        tracing::info!(key_id_hash = %crypto::key_id_hash(key_id), state = info.state.name(), "key state changed");
        Ok(info)
    }

    /// Saves `doc`, then publishes the new snapshot. Returns false, changing nothing, if
    /// another writer changed the stored document first (reload and retry).
    async fn commit(&self, w: &mut Writer, mut doc: Doc) -> Result<bool, KeyringError> {
        let snapshot = self.build_snapshot(&doc, &w.keys.seal_key(&doc), &w.counters)?;
        let Some(mark) = self.save(&mut doc, &w.keys.mac_key).await? else {
            return Ok(false);
        };
        w.doc = doc;
        self.inner.snapshot.store(Arc::new(snapshot));
        self.keep_mark(w, mark).await;
        Ok(true)
    }

    /// Saves `doc` (a changed copy of the document held) as the next generation, with a
    /// compare-and-swap on the revision this process holds, and returns its mark. None: the
    /// stored document is newer.
    async fn save(&self, doc: &mut Doc, mac_key: &Key32) -> Result<Option<Mark>, KeyringError> {
        doc.generation += 1;
        let value = document::encode(doc, mac_key)?;
        let mark = Mark::of(doc, &value);
        Ok(self.inner.store.save(value).await?.then_some(mark))
    }

    /// Counts one encryption under `kek`. The limits apply to the count of every process
    /// sharing the keyring ([`Counter::global`]). Awaits only when this process's reserved block
    /// is used up; a shared keyring then waits at most [`REQUEST_IO_WAIT`] for the reservation
    /// to be saved (it goes on in the background).
    async fn count_encryption(&self, kek: &Arc<Kek>) -> Result<(), KeyringError> {
        let n = kek.counter.used.fetch_add(1, Ordering::Relaxed);
        let reserved = kek.counter.reserved.load(Ordering::Acquire);
        let global = kek.counter.global().saturating_sub(1);
        if kek.alg == Algorithm::Aes256Gcm && global >= AES_GCM_HARD_LIMIT {
            return Err(KeyringError::Exhausted);
        }
        if n >= reserved {
            let reserve = self.reserve(kek, n + 1, n + RESERVATION_BLOCK);
            if !self.inner.store.shared_with_others() {
                reserve.await?;
            } else if tokio::time::timeout(REQUEST_IO_WAIT, reserve)
                .await
                .is_err()
            {
                return Err(KeyringError::Storage {
                    location: self.inner.store.location().to_owned(),
                    message: format!(
                        "could not save a reservation of encryptions within {REQUEST_IO_WAIT:?}"
                    ),
                });
            }
        } else if reserved - n == RESERVATION_BLOCK / 2 {
            self.inner.wake.notify_one();
        }
        if let Some(max) = self.inner.policy.max_encryptions {
            if global + 1 >= max {
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
    async fn reserve(&self, kek: &Arc<Kek>, need: u64, target: u64) -> Result<(), KeyringError> {
        if kek.counter.reserved.load(Ordering::Acquire) >= need {
            return Ok(());
        }
        let kek = kek.clone();
        self.detached(move |k| async move { k.reserve_now(&kek, need, target).await })
            .await
    }

    async fn reserve_now(&self, kek: &Kek, need: u64, target: u64) -> Result<(), KeyringError> {
        let mut w = self.inner.writer.lock().await;
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
            let stored = rec.encryptions_reserved;
            if let Some(mark) = self.save(&mut doc, &w.keys.mac_key).await? {
                w.doc = doc;
                kek.counter.reserved.store(local + delta, Ordering::Release);
                kek.counter.stored.fetch_max(stored, Ordering::AcqRel);
                self.keep_mark(&mut w, mark).await;
                return Ok(());
            }
            self.reload_locked(&mut w).await?;
        }
        Err(self.too_busy())
    }

    /// Gives back the encryptions this process reserved and did not use, so that a clean stop
    /// does not leave a whole block counted as used (a crash still over-counts; nothing ever
    /// under-counts). For when encryptions have stopped; one made later reserves again. A
    /// keyring shared with other replicas keeps its count: there a stored count only rises,
    /// which is how a rolled-back document is told.
    pub async fn release_unused(&self) -> Result<(), KeyringError> {
        if self.inner.store.shared_with_others() {
            return Ok(());
        }
        self.detached(|k| async move { k.release_now().await })
            .await
    }

    async fn release_now(&self) -> Result<(), KeyringError> {
        let mut w = self.inner.writer.lock().await;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut doc = w.doc.clone();
            // (counter, reserved before, counted, stored after) per key giving some back.
            let mut released = Vec::new();
            for rec in &mut doc.keys {
                let Some(counter) = w.counters.get(&document::parse_id(&rec.id)?) else {
                    continue;
                };
                let reserved = counter.reserved.load(Ordering::Acquire);
                // An encryption that reads the lowered reservation reserves again (and waits
                // for this lock); one that read it before counted itself before `counted`
                // is read, so it is kept in the stored count.
                let before = counter.used.load(Ordering::Acquire);
                counter
                    .reserved
                    .store(before.min(reserved), Ordering::Release);
                let counted = counter.used.load(Ordering::Acquire);
                let unused = reserved.saturating_sub(counted);
                if unused == 0 {
                    counter.reserved.store(reserved, Ordering::Release);
                    continue;
                }
                rec.encryptions_reserved = rec.encryptions_reserved.saturating_sub(unused);
                released.push((counter.clone(), reserved, counted, rec.encryptions_reserved));
            }
            if released.is_empty() {
                return Ok(());
            }
            let saved = self.save(&mut doc, &w.keys.mac_key).await;
            for (counter, reserved, counted, stored) in &released {
                match saved {
                    Ok(Some(_)) => {
                        counter.reserved.store(*counted, Ordering::Release);
                        counter.stored.store(*stored, Ordering::Release);
                    }
                    _ => counter.reserved.store(*reserved, Ordering::Release),
                }
            }
            if let Some(mark) = saved? {
                w.doc = doc;
                self.keep_mark(&mut w, mark).await;
                return Ok(());
            }
            self.reload_locked(&mut w).await?;
        }
        Err(self.too_busy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn keyfile(dir: &Path, name: &str) -> SealSpec {
        let p = dir.join(name);
        crate::seal::generate_keyfile(&p).unwrap();
        SealSpec::KeyFile(p)
    }

    fn opts() -> InitOptions {
        InitOptions {
            algorithm: Algorithm::Aes256Gcm,
            kdf: None,
        }
    }

    /// The stored document, read through a store of its own (the keyring must be closed).
    async fn stored(data: &Path) -> Vec<u8> {
        let found = storage::Found::find(&KeyringLocation::Dir(data.to_owned()))
            .await
            .unwrap();
        found.stored().to_vec()
    }

    #[tokio::test]
    async fn wrong_root_key_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path(), "root.key");
        let data = KeyringLocation::Dir(tmp.path().join("data"));
        Keyring::init(&data, &spec, &opts()).await.unwrap();
        let before = stored(&tmp.path().join("data")).await;
        let other = keyfile(tmp.path(), "other.key");
        let e = Keyring::open(&data, &other, RotationPolicy::default())
            .await
            .unwrap_err();
        assert!(matches!(e, KeyringError::Unseal), "{e}");
        assert!(
            before == stored(&tmp.path().join("data")).await,
            "keyring content changed"
        );
        let pass = SealSpec::PassphraseFile(tmp.path().join("x"));
        let e = Keyring::open(&data, &pass, RotationPolicy::default())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("sealed with keyfile"), "{e}");
        let none = KeyringLocation::Dir(tmp.path().join("none"));
        let e = Keyring::open(&none, &spec, RotationPolicy::default())
            .await
            .unwrap_err();
        assert!(matches!(e, KeyringError::NotFound(_)));
    }

    #[tokio::test]
    async fn maintenance_rotates_by_count() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path(), "root.key");
        let data = KeyringLocation::Dir(tmp.path().join("data"));
        Keyring::init(&data, &spec, &opts()).await.unwrap();
        let policy = RotationPolicy {
            max_age: None,
            max_encryptions: Some(5),
        };
        let kr = Keyring::open(&data, &spec, policy).await.unwrap();
        let before = kr.health().primary_key_id;
        kr.maintain(document::now_unix()).await.unwrap();
        assert_eq!(kr.health().primary_key_id, before, "not due yet");
        for _ in 0..5 {
            kr.encrypt(b"x").await.unwrap();
        }
        kr.maintain(document::now_unix()).await.unwrap();
        assert_ne!(kr.health().primary_key_id, before);
        assert!(kr.health().healthy);
    }

    /// The maintenance task does not keep the keyring (and its store) alive: once the keyring
    /// is dropped, the directory can be opened again at once, even with the guard still held.
    #[tokio::test]
    async fn maintenance_does_not_keep_the_keyring_open() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = keyfile(tmp.path(), "root.key");
        let data = KeyringLocation::Dir(tmp.path().join("data"));
        Keyring::init(&data, &spec, &opts()).await.unwrap();
        let kr = Keyring::open(&data, &spec, RotationPolicy::default())
            .await
            .unwrap();
        let guard = kr.start_maintenance(std::time::Duration::from_millis(10));
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        drop(kr);
        let again = Keyring::open(&data, &spec, RotationPolicy::default())
            .await
            .unwrap();
        assert!(again.health().healthy);
        drop(guard);
    }

    /// A data directory written by keyward 0.1.0 (the committed fixture) opens with its root
    /// key, and is converted only then: a wrong root key leaves it as it was.
    #[tokio::test]
    async fn a_release_0_1_0_directory_is_converted_once_its_root_key_opens_it() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release-0.1.0/passphrase");
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("pp");
        std::fs::create_dir_all(data.join(LEGACY_DIR)).unwrap();
        for f in ["conf", "db"] {
            let to = data.join(LEGACY_DIR).join(f);
            std::fs::copy(fixture.join("pp").join(LEGACY_DIR).join(f), &to).unwrap();
        }
        let pass = tmp.path().join("pass.txt");
        std::fs::copy(fixture.join("pass.txt"), &pass).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let location = KeyringLocation::Dir(data.clone());
        let other = keyfile(tmp.path(), "root.key");
        assert!(matches!(
            Keyring::open(&location, &other, RotationPolicy::default()).await,
            Err(KeyringError::SealMismatch { .. })
        ));
        assert!(data.join(LEGACY_DIR).exists() && !data.join(DIR_STORE).exists());
        let spec = SealSpec::PassphraseFile(pass);
        let kr = Keyring::open(&location, &spec, RotationPolicy::default())
            .await
            .unwrap();
        let keys = kr.keys();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key_id, "kw-1-598c13bb290f16d2ba51882fc30c82cc");
        assert_eq!(keys[0].algorithm, Algorithm::XChaCha20Poly1305);
        assert!(!data.join(LEGACY_DIR).exists() && data.join(DIR_STORE).exists());
        assert!(matches!(
            Keyring::init(&location, &spec, &opts()).await,
            Err(KeyringError::Exists(_))
        ));
    }
}
