//! AEAD primitives, HKDF, HMAC, randomness, constant-time comparison, Ed25519 signatures (audit
//! checkpoints) and JWS signatures ([`signing`]: ES256/RS256 for service account tokens): the only module that names a
//! cryptography crate.
//!
//! Keys are [`Key32`] (a zeroizing, redacting box over 32 bytes). An [`AeadKey`] holds an
//! instantiated cipher (key schedule computed once) so the hot path only seals and opens.
//! Every failure to open is the same opaque [`CryptoError::Open`]: wrong key, bad tag and bad
//! length look identical to the caller.

use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use chacha20poly1305::XChaCha20Poly1305;
use crypto_secretbox::XSalsa20Poly1305;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use sha2::Sha256;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::{Zeroize, Zeroizing};

pub mod signing;
pub use signing::{JwsAlgorithm, SigningKey, VerifyingKey};

/// Length of an AEAD authentication tag (both algorithms).
pub const TAG_LEN: usize = 16;

/// Errors of this layer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// Decryption failed: wrong key, tampered data, wrong nonce or truncated input (caller's data).
    #[error("decryption failed")]
    Open,
    /// Encryption failed; only possible for inputs beyond the algorithm's limits (caller's data).
    #[error("encryption failed: input too large")]
    Seal,
    /// The operating system's random generator failed (environment).
    #[error("the system random number generator failed")]
    Random,
    /// Bytes given as a private or public key are not a key of a supported kind (caller's data).
    #[error("not a supported key: expected a P-256 ECDSA key or an RSA key of 2048 to 4096 bits")]
    InvalidKey,
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::getrandom(buf).map_err(|_| CryptoError::Random)
}

/// Fills `buf` (at most [`PUBLIC_POOL`] bytes) with random bytes that are unique but not secret
/// (nonces, IVs, KDF info, audit ids): each thread takes them from the operating system
/// [`PUBLIC_POOL`] bytes at a time instead of one system call per value, and no byte is handed
/// out twice. Never for key material: the pool stays in memory until used.
pub fn fill_public_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    thread_local! {
        // The pool and how much of it was used (all of it at first: filled on first use).
        static POOL: std::cell::RefCell<([u8; PUBLIC_POOL], usize)> = const {
            std::cell::RefCell::new(([0; PUBLIC_POOL], PUBLIC_POOL))
        };
    }
    if buf.len() > PUBLIC_POOL {
        return fill_random(buf);
    }
    POOL.with(|cell| {
        let (pool, used) = &mut *cell.borrow_mut();
        if *used + buf.len() > PUBLIC_POOL {
            fill_random(pool)?;
            *used = 0;
        }
        buf.copy_from_slice(&pool[*used..*used + buf.len()]);
        *used += buf.len();
        Ok(())
    })
}

/// How many bytes of unique, public randomness a thread takes from the OS at a time.
pub const PUBLIC_POOL: usize = 4096;

/// Returns `N` random bytes.
pub fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    fill_random(&mut out)?;
    Ok(out)
}

/// 32 bytes of secret key material: zeroized on drop, redacted in `Debug`, no `Clone`.
pub struct Key32(SecretBox<[u8; 32]>);

impl Key32 {
    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = Self::zero();
        fill_random(key.0.expose_secret_mut())?;
        Ok(key)
    }

    /// Moves `bytes` into a key and zeroizes the source.
    pub fn from_bytes(bytes: &mut [u8; 32]) -> Self {
        let mut key = Self::zero();
        key.0.expose_secret_mut().copy_from_slice(bytes);
        bytes.zeroize();
        key
    }

    /// Copies a 32-byte slice into a key; `None` if the length is not 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 32 {
            return None;
        }
        let mut key = Self::zero();
        key.0.expose_secret_mut().copy_from_slice(bytes);
        Some(key)
    }

    fn zero() -> Self {
        Self(SecretBox::new(Box::new([0u8; 32])))
    }

    /// The raw key bytes. Keep the borrow short and never copy them out unzeroized.
    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32([REDACTED])")
    }
}

/// `HKDF-Expand(SHA-256, prk, info)` to 32 bytes. `prk` must already be uniformly random.
pub fn hkdf_expand(prk: &Key32, info: &[u8]) -> Key32 {
    let hk =
        hkdf::Hkdf::<Sha256>::from_prk(prk.expose()).expect("a 32-byte PRK is valid for SHA-256");
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand(info, out.as_mut())
        .expect("32 bytes is within HKDF-SHA256's output limit");
    Key32::from_bytes(&mut out)
}

/// `HKDF-Expand(SHA-256, prk, info)` to 32 bytes for a PRK of any length of at least 32 bytes
/// (kube-apiserver's KMS v2 seeds); `None` if `prk` is shorter.
pub fn hkdf_expand_slice(prk: &[u8], info: &[u8]) -> Option<Key32> {
    let hk = hkdf::Hkdf::<Sha256>::from_prk(prk).ok()?;
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand(info, out.as_mut()).ok()?;
    Some(Key32::from_bytes(&mut out))
}

/// `HMAC-SHA256(key, data)`.
pub fn hmac_sha256(key: &Key32, data: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Checks `tag == HMAC-SHA256(key, data)` in constant time.
pub fn hmac_sha256_verify(key: &Key32, data: &[u8], tag: &[u8]) -> bool {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("HMAC accepts any key length");
    mac.update(data);
    mac.verify_slice(tag).is_ok()
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(data).into()
}

/// A key id as logs and metrics show it, the way kube-apiserver writes key ids in its metrics:
/// `sha256:` and the lowercase hex SHA-256 of the id's bytes, unsalted (kube-apiserver's
/// `getHash`). Correlate by hashing the id from `keyward kms keys`:
/// `printf %s KEY_ID | sha256sum`.
pub fn key_id_hash(key_id: &str) -> String {
    format!("sha256:{}", hex::encode(sha256(key_id.as_bytes())))
}

/// A CSPRNG for libraries that take `rand_core`'s infallible `CryptoRng` (Shamir splitting):
/// ChaCha20's keystream under a key drawn from the operating system once, so that drawing from
/// it cannot fail afterwards. Zeroized on drop; one instance per use, never persisted.
pub struct KeystreamRng(chacha20::ChaCha20);

impl fmt::Debug for KeystreamRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeystreamRng([REDACTED])")
    }
}

impl KeystreamRng {
    /// A generator seeded from the operating system's CSPRNG.
    pub fn new() -> Result<Self, CryptoError> {
        use chacha20::cipher::KeyIvInit;
        let key = Key32::generate()?;
        Ok(Self(chacha20::ChaCha20::new(
            key.expose().into(),
            &[0u8; 12].into(),
        )))
    }
}

impl rand_core::TryRng for KeystreamRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        use chacha20::cipher::StreamCipher;
        dst.fill(0);
        self.0.apply_keystream(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for KeystreamRng {}

/// Whether `a == b`, in time that depends only on the lengths (tokens, secrets, MACs).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The index of the last item of `haystack` equal to `needle`, comparing every item in constant
/// time (the time does not depend on which item matches, or whether one does).
pub fn ct_position<'a>(
    needle: &[u8; 32],
    haystack: impl IntoIterator<Item = &'a [u8; 32]>,
) -> Option<usize> {
    let mut found = subtle::Choice::from(0u8);
    let mut index = 0u64;
    for (i, item) in haystack.into_iter().enumerate() {
        let hit = item.ct_eq(needle);
        index.conditional_assign(&(i as u64), hit);
        found |= hit;
    }
    bool::from(found).then_some(index as usize)
}

/// An AEAD algorithm keyward can wrap keys with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// AES-256-GCM with a random 96-bit nonce (NIST SP 800-38D: at most 2^32 seals per key).
    Aes256Gcm,
    /// XChaCha20-Poly1305 with a random 192-bit nonce.
    XChaCha20Poly1305,
}

impl Algorithm {
    /// Every algorithm, in id order.
    pub const ALL: [Algorithm; 2] = [Algorithm::Aes256Gcm, Algorithm::XChaCha20Poly1305];

    /// The one-byte id used in self-describing ciphertexts.
    pub fn id(self) -> u8 {
        match self {
            Algorithm::Aes256Gcm => 1,
            Algorithm::XChaCha20Poly1305 => 2,
        }
    }

    /// The algorithm with one-byte id `id`.
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.id() == id)
    }

    /// Nonce length in bytes.
    pub fn nonce_len(self) -> usize {
        match self {
            Algorithm::Aes256Gcm => 12,
            Algorithm::XChaCha20Poly1305 => 24,
        }
    }

    /// The stable name used in configuration and listings.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Aes256Gcm => "aes-256-gcm",
            Algorithm::XChaCha20Poly1305 => "xchacha20-poly1305",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error parsing an [`Algorithm`] name.
#[derive(Debug, thiserror::Error)]
#[error("unknown algorithm {0:?}: expected aes-256-gcm or xchacha20-poly1305")]
pub struct UnknownAlgorithm(String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_owned()))
    }
}

type Aes192Gcm = AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;

/// An instantiated AEAD (key schedule computed once, zeroized on drop by the cipher crates).
enum Cipher {
    Aes128(Box<Aes128Gcm>),
    Aes192(Box<Aes192Gcm>),
    Aes256(Box<Aes256Gcm>),
    XChaCha(Box<XChaCha20Poly1305>),
    XSalsa(Box<XSalsa20Poly1305>),
}

impl Cipher {
    fn nonce_len(&self) -> usize {
        match self {
            Cipher::Aes128(_) | Cipher::Aes192(_) | Cipher::Aes256(_) => 12,
            Cipher::XChaCha(_) | Cipher::XSalsa(_) => 24,
        }
    }

    /// Encrypts `buf` in place; returns the tag.
    fn seal_detached(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        if nonce.len() != self.nonce_len() {
            return Err(CryptoError::Seal);
        }
        let tag = match self {
            Cipher::Aes128(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
            Cipher::Aes192(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
            Cipher::Aes256(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
            Cipher::XChaCha(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
            Cipher::XSalsa(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
        };
        tag.map(Into::into).map_err(|_| CryptoError::Seal)
    }

    /// Decrypts `buf` in place if `tag` authenticates it.
    fn open_detached(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        if nonce.len() != self.nonce_len() || tag.len() != TAG_LEN {
            return Err(CryptoError::Open);
        }
        let res = match self {
            Cipher::Aes128(c) => c.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into()),
            Cipher::Aes192(c) => c.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into()),
            Cipher::Aes256(c) => c.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into()),
            Cipher::XChaCha(c) => c.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into()),
            Cipher::XSalsa(c) => c.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into()),
        };
        res.map_err(|_| CryptoError::Open)
    }

    /// Appends `ciphertext || tag` of `plaintext` to `out`.
    fn seal_append(
        &self,
        nonce: &[u8],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let start = out.len();
        out.extend_from_slice(plaintext);
        match self.seal_detached(nonce, aad, &mut out[start..]) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(e) => {
                out[start..].zeroize();
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Opens `ciphertext || tag`.
    fn open_split(
        &self,
        nonce: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < TAG_LEN {
            return Err(CryptoError::Open);
        }
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let mut buf = Zeroizing::new(ct.to_vec());
        self.open_detached(nonce, aad, &mut buf, tag)?;
        Ok(buf)
    }
}

/// An instantiated AEAD key: the key schedule is computed once and zeroized on drop.
pub struct AeadKey {
    alg: Algorithm,
    cipher: Cipher,
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AeadKey({}, [REDACTED])", self.alg)
    }
}

impl AeadKey {
    /// Instantiates `alg` with `key`.
    pub fn new(alg: Algorithm, key: &Key32) -> Self {
        let cipher = match alg {
            Algorithm::Aes256Gcm => Cipher::Aes256(Box::new(Aes256Gcm::new(key.expose().into()))),
            Algorithm::XChaCha20Poly1305 => {
                Cipher::XChaCha(Box::new(XChaCha20Poly1305::new(key.expose().into())))
            }
        };
        Self { alg, cipher }
    }

    /// The algorithm of this key.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Appends `ciphertext || tag` of `plaintext` to `out`. `nonce` must be
    /// `algorithm().nonce_len()` bytes and never repeat under this key.
    pub fn seal_into(
        &self,
        nonce: &[u8],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.cipher.seal_append(nonce, aad, plaintext, out)
    }

    /// Opens `ciphertext || tag`. Any failure is [`CryptoError::Open`].
    pub fn open(
        &self,
        nonce: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.cipher.open_split(nonce, aad, sealed)
    }

    /// Seals with a fresh random nonce and returns `nonce || ciphertext || tag`.
    pub fn seal_random_nonce(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let n = self.alg.nonce_len();
        let mut nonce = [0u8; 24];
        fill_random(&mut nonce[..n])?;
        let mut out = Vec::with_capacity(n + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce[..n]);
        self.seal_into(&nonce[..n], aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// Opens `nonce || ciphertext || tag` as written by [`AeadKey::seal_random_nonce`].
    pub fn open_with_nonce(
        &self,
        aad: &[u8],
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let n = self.alg.nonce_len();
        if data.len() < n {
            return Err(CryptoError::Open);
        }
        let (nonce, sealed) = data.split_at(n);
        self.open(nonce, aad, sealed)
    }
}

/// AES-GCM with a 128-, 192- or 256-bit key and 96-bit nonces, as kube-apiserver's `aesgcm`
/// provider and KMS data keys use it.
pub struct AesGcmKey(Cipher);

impl fmt::Debug for AesGcmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesGcmKey([REDACTED])")
    }
}

/// Nonce length of AES-GCM.
pub const GCM_NONCE_LEN: usize = 12;

impl AesGcmKey {
    /// The key lengths [`AesGcmKey::new`] accepts, in bytes (AES-128, AES-192, AES-256).
    pub const KEY_SIZES: &'static [usize] = &[16, 24, 32];

    /// A key of one of [`AesGcmKey::KEY_SIZES`] bytes; `None` for any other length.
    pub fn new(key: &[u8]) -> Option<Self> {
        let cipher = match key.len() {
            16 => Cipher::Aes128(Box::new(Aes128Gcm::new_from_slice(key).ok()?)),
            24 => Cipher::Aes192(Box::new(Aes192Gcm::new_from_slice(key).ok()?)),
            32 => Cipher::Aes256(Box::new(Aes256Gcm::new_from_slice(key).ok()?)),
            _ => return None,
        };
        Some(Self(cipher))
    }

    /// AES-256-GCM under `key`.
    pub fn aes256(key: &Key32) -> Self {
        Self(Cipher::Aes256(Box::new(Aes256Gcm::new(
            key.expose().into(),
        ))))
    }

    /// Appends `ciphertext || tag` to `out`, with a 12-byte `nonce`.
    pub fn seal_into(
        &self,
        nonce: &[u8],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.0.seal_append(nonce, aad, plaintext, out)
    }

    /// Opens `ciphertext || tag`.
    pub fn open(
        &self,
        nonce: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.0.open_split(nonce, aad, sealed)
    }
}

/// NaCl `secretbox` (XSalsa20-Poly1305, 24-byte nonce). Its sealed form is `tag || ciphertext`
/// (the tag first), as Go's `golang.org/x/crypto/nacl/secretbox` writes it.
pub struct SecretboxKey(Cipher);

impl fmt::Debug for SecretboxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretboxKey([REDACTED])")
    }
}

/// Nonce length of secretbox.
pub const SECRETBOX_NONCE_LEN: usize = 24;

impl SecretboxKey {
    /// The key length [`SecretboxKey::new`] accepts, in bytes.
    pub const KEY_SIZES: &'static [usize] = &[32];

    /// A 32-byte key; `None` for any other length.
    pub fn new(key: &[u8]) -> Option<Self> {
        Some(Self(Cipher::XSalsa(Box::new(
            XSalsa20Poly1305::new_from_slice(key).ok()?,
        ))))
    }

    /// Appends `tag || ciphertext` to `out`.
    pub fn seal_into(
        &self,
        nonce: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let tag_at = out.len();
        out.extend_from_slice(&[0u8; TAG_LEN]);
        out.extend_from_slice(plaintext);
        match self
            .0
            .seal_detached(nonce, b"", &mut out[tag_at + TAG_LEN..])
        {
            Ok(tag) => {
                out[tag_at..tag_at + TAG_LEN].copy_from_slice(&tag);
                Ok(())
            }
            Err(e) => {
                out[tag_at..].zeroize();
                out.truncate(tag_at);
                Err(e)
            }
        }
    }

    /// Opens `tag || ciphertext`.
    pub fn open(&self, nonce: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < TAG_LEN {
            return Err(CryptoError::Open);
        }
        let (tag, ct) = sealed.split_at(TAG_LEN);
        let mut buf = Zeroizing::new(ct.to_vec());
        self.0.open_detached(nonce, b"", &mut buf, tag)?;
        Ok(buf)
    }
}

/// AES-CBC with PKCS#7 padding and no authentication, as kube-apiserver's `aescbc` provider
/// uses it (16-byte IV; 128-, 192- or 256-bit keys).
pub struct AesCbcKey(Zeroizing<Vec<u8>>);

impl fmt::Debug for AesCbcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesCbcKey([REDACTED])")
    }
}

/// AES block size, also the CBC IV length.
pub const AES_BLOCK: usize = 16;

impl AesCbcKey {
    /// The key lengths [`AesCbcKey::new`] accepts, in bytes (AES-128, AES-192, AES-256).
    pub const KEY_SIZES: &'static [usize] = &[16, 24, 32];

    /// A key of one of [`AesCbcKey::KEY_SIZES`] bytes; `None` for any other length.
    pub fn new(key: &[u8]) -> Option<Self> {
        Self::KEY_SIZES
            .contains(&key.len())
            .then(|| Self(Zeroizing::new(key.to_vec())))
    }

    /// AES-256-CBC under `key`.
    pub fn aes256(key: &Key32) -> Self {
        Self(Zeroizing::new(key.expose().to_vec()))
    }

    /// Appends AES-CBC(PKCS#7(plaintext)) with `iv` to `out`.
    pub fn encrypt_into(&self, iv: &[u8; AES_BLOCK], plaintext: &[u8], out: &mut Vec<u8>) {
        use cbc::cipher::{BlockEncryptMut, KeyIvInit};
        let pad = AES_BLOCK - plaintext.len() % AES_BLOCK;
        let start = out.len();
        out.extend_from_slice(plaintext);
        out.extend(std::iter::repeat_n(pad as u8, pad));
        let buf = &mut out[start..];
        let len = buf.len();
        let res = match self.0.len() {
            16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(&self.0, iv).map(|c| {
                c.encrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(buf, len)
                    .map(|_| ())
            }),
            24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(&self.0, iv).map(|c| {
                c.encrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(buf, len)
                    .map(|_| ())
            }),
            _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(&self.0, iv).map(|c| {
                c.encrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(buf, len)
                    .map(|_| ())
            }),
        };
        debug_assert!(
            matches!(res, Ok(Ok(()))),
            "key length and padding were checked"
        );
    }

    /// Decrypts and checks the padding the way kube-apiserver does (pad byte non-zero, at most the
    /// data length, every pad byte equal). Not authenticated: a wrong key usually, but not
    /// always, fails the padding check.
    pub fn decrypt(&self, iv: &[u8], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        use cbc::cipher::{BlockDecryptMut, KeyIvInit};
        if iv.len() != AES_BLOCK || ciphertext.is_empty() || ciphertext.len() % AES_BLOCK != 0 {
            return Err(CryptoError::Open);
        }
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let res = match self.0.len() {
            16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&self.0, iv).map(|c| {
                c.decrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(&mut buf)
                    .map(|_| ())
            }),
            24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(&self.0, iv).map(|c| {
                c.decrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(&mut buf)
                    .map(|_| ())
            }),
            _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&self.0, iv).map(|c| {
                c.decrypt_padded_mut::<cbc::cipher::block_padding::NoPadding>(&mut buf)
                    .map(|_| ())
            }),
        };
        if !matches!(res, Ok(Ok(()))) {
            return Err(CryptoError::Open);
        }
        let pad = *buf.last().ok_or(CryptoError::Open)? as usize;
        if pad == 0 || pad > buf.len() {
            return Err(CryptoError::Open);
        }
        let body = buf.len() - pad;
        let mut bad = 0u8;
        for b in &buf[body..] {
            bad |= b ^ pad as u8;
        }
        if bad != 0 {
            return Err(CryptoError::Open);
        }
        buf.truncate(body);
        Ok(buf)
    }
}

/// Length of an Ed25519 signature.
pub const ED25519_SIGNATURE_LEN: usize = 64;

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410 §4): the key's 32 bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// An Ed25519 signing key (RFC 8032): its 32-byte seed, zeroized on drop, redacted in `Debug`,
/// no `Clone`. The expanded key is derived for each signature and dropped right after (the
/// signing crate does not zeroize it, so it is never kept).
pub struct Ed25519SigningKey {
    seed: Key32,
    public: Ed25519PublicKey,
}

impl Ed25519SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self::from_seed(Key32::generate()?))
    }

    /// The key whose RFC 8032 seed ("private key") is `seed`; every 32-byte value is one.
    pub fn from_seed(seed: Key32) -> Self {
        let public = Ed25519PublicKey(Self::pair(&seed).public_key_bytes());
        Self { seed, public }
    }

    fn pair(seed: &Key32) -> Ed25519Pair {
        Ed25519Pair(
            ring::signature::Ed25519KeyPair::from_seed_unchecked(seed.expose())
                .expect("every 32-byte seed is an Ed25519 key"),
        )
    }

    /// The seed, for sealing the key at rest. Keep the borrow short.
    pub fn seed(&self) -> &Key32 {
        &self.seed
    }

    /// The public key that verifies this key's signatures.
    pub fn public_key(&self) -> &Ed25519PublicKey {
        &self.public
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; ED25519_SIGNATURE_LEN] {
        let pair = Self::pair(&self.seed);
        let mut out = [0u8; ED25519_SIGNATURE_LEN];
        out.copy_from_slice(pair.0.sign(message).as_ref());
        out
    }
}

impl fmt::Debug for Ed25519SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519SigningKey(public {})", self.public.key_id())
    }
}

/// A short-lived expanded key pair (never stored).
struct Ed25519Pair(ring::signature::Ed25519KeyPair);

impl Ed25519Pair {
    fn public_key_bytes(&self) -> [u8; 32] {
        use ring::signature::KeyPair as _;
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.public_key().as_ref());
        out
    }
}

/// An Ed25519 public key: 32 bytes, nothing secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ed25519PublicKey([u8; 32]);

impl Ed25519PublicKey {
    /// The key with these 32 bytes; `None` for another length. (Whether the bytes are a point
    /// on the curve is checked when verifying: a bad key verifies nothing.)
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }

    /// A short id: hex of the first 8 bytes of SHA-256 of the key.
    pub fn key_id(&self) -> String {
        hex::encode(&sha256(&self.0)[..8])
    }

    /// The key as a PEM `PUBLIC KEY` (RFC 8410 SubjectPublicKeyInfo), as `openssl pkey -pubout`
    /// writes it.
    pub fn to_pem(&self) -> String {
        use base64::Engine as _;
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
    }

    /// A key from a PEM `PUBLIC KEY` holding an Ed25519 SubjectPublicKeyInfo; `None` otherwise.
    pub fn from_pem(text: &str) -> Option<Self> {
        use base64::Engine as _;
        let body = text
            .trim()
            .strip_prefix("-----BEGIN PUBLIC KEY-----")?
            .strip_suffix("-----END PUBLIC KEY-----")?;
        let b64: String = body.split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        Self::from_bytes(der.strip_prefix(&ED25519_SPKI_PREFIX[..])?)
    }
}

impl fmt::Debug for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519PublicKey({})", self.key_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values drawn from the pool across several refills never repeat; a draw larger than the
    /// pool comes straight from the OS, and the pool goes on after it.
    #[test]
    fn public_randomness_is_never_handed_out_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 * PUBLIC_POOL / 44 {
            let mut b = [0u8; 44];
            fill_public_random(&mut b).unwrap();
            assert!(seen.insert(b), "a 44-byte draw repeated");
        }
        let mut big = vec![0u8; PUBLIC_POOL + 1];
        fill_public_random(&mut big).unwrap();
        assert!(big.iter().any(|b| *b != 0));
        let mut tail = [0u8; 16];
        fill_public_random(&mut tail).unwrap();
        assert_ne!(tail, [0u8; 16]);
    }

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// The AES key schedule in an [`AesGcmKey`] wipes itself when dropped (the `aes` crate's
    /// `zeroize` feature), so dropping the key zeroizes it: what caches of keys rely on when
    /// they evict (the kms v2 derived-key cache). (GHASH's subkey is not wiped: `polyval` is
    /// built without its `zeroize` feature.)
    #[test]
    fn aes_key_schedules_zeroize_on_drop() {
        fn zeroizes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroizes_on_drop::<aes::Aes128>();
        zeroizes_on_drop::<aes::Aes192>();
        zeroizes_on_drop::<aes::Aes256>();
    }

    /// AES-256-GCM test case 16 of McGrew & Viega, "The Galois/Counter Mode of Operation"
    /// (the GCM specification's appendix B): 256-bit key, 96-bit IV, with AAD.
    #[test]
    fn aes256gcm_known_answer_and_tamper() {
        let key = Key32::from_slice(&unhex(
            "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        ))
        .unwrap();
        let nonce = unhex("cafebabefacedbaddecaf888");
        let pt = unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        let aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let expect = unhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662\
76fc6ece0f4e1768cddf8853bb2d551b");
        let k = AeadKey::new(Algorithm::Aes256Gcm, &key);
        let mut out = Vec::new();
        k.seal_into(&nonce, &aad, &pt, &mut out).unwrap();
        assert_eq!(out, expect);
        assert_eq!(
            k.open(&nonce, &aad, &out).unwrap().as_slice(),
            pt.as_slice()
        );
        for i in 0..out.len() {
            let mut t = out.clone();
            t[i] ^= 0x01;
            assert_eq!(k.open(&nonce, &aad, &t), Err(CryptoError::Open), "byte {i}");
        }
        let mut bad_aad = aad.clone();
        bad_aad[0] ^= 1;
        assert_eq!(k.open(&nonce, &bad_aad, &out), Err(CryptoError::Open));
    }

    /// XChaCha20-Poly1305 test vector from draft-irtf-cfrg-xchacha-03 §A.3.1.
    #[test]
    fn xchacha20poly1305_known_answer_and_tamper() {
        let key = Key32::from_slice(&unhex(
            "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
        ))
        .unwrap();
        let nonce = unhex("404142434445464748494a4b4c4d4e4f5051525354555657");
        let aad = unhex("50515253c0c1c2c3c4c5c6c7");
        let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let expect = unhex("bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e\
c0875924c1c7987947deafd8780acf49");
        let k = AeadKey::new(Algorithm::XChaCha20Poly1305, &key);
        let mut out = Vec::new();
        k.seal_into(&nonce, &aad, pt, &mut out).unwrap();
        assert_eq!(out, expect);
        assert_eq!(
            k.open(&nonce, &aad, &out).unwrap().as_slice(),
            pt.as_slice()
        );
        for i in 0..out.len() {
            let mut t = out.clone();
            t[i] ^= 0x80;
            assert_eq!(k.open(&nonce, &aad, &t), Err(CryptoError::Open), "byte {i}");
        }
    }

    /// RFC 5869 test case 1's OKM can't be used directly (it runs Extract); instead check
    /// Expand against the same test case's PRK, which is exactly Expand's input.
    #[test]
    fn hkdf_expand_rfc5869_case1() {
        let prk = Key32::from_slice(&unhex(
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
        ))
        .unwrap();
        let okm = hkdf_expand(&prk, &unhex("f0f1f2f3f4f5f6f7f8f9"));
        assert_eq!(
            hex::encode(okm.expose()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }

    /// RFC 4231 test case 2.
    #[test]
    fn hmac_rfc4231_case2_shape() {
        // RFC 4231 uses the 4-byte key "Jefe"; HMAC pads keys to the block size, so a 32-byte key
        // of "Jefe" followed by zeros gives the same MAC.
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(b"Jefe");
        let key = Key32::from_bytes(&mut k);
        let tag = hmac_sha256(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_verify(
            &key,
            b"what do ya want for nothing?",
            &tag
        ));
        let mut bad = tag;
        bad[31] ^= 1;
        assert!(!hmac_sha256_verify(
            &key,
            b"what do ya want for nothing?",
            &bad
        ));
    }

    #[test]
    fn key_sizes_are_the_lengths_new_accepts() {
        for len in 0..=64 {
            let key = vec![7u8; len];
            let want = |sizes: &[usize]| sizes.contains(&len);
            assert_eq!(
                AesGcmKey::new(&key).is_some(),
                want(AesGcmKey::KEY_SIZES),
                "{len}"
            );
            assert_eq!(
                AesCbcKey::new(&key).is_some(),
                want(AesCbcKey::KEY_SIZES),
                "{len}"
            );
            assert_eq!(
                SecretboxKey::new(&key).is_some(),
                want(SecretboxKey::KEY_SIZES),
                "{len}"
            );
        }
        // The 256-bit constructors are the same ciphers as `new` with 32 bytes.
        let key = Key32::from_slice(&[9u8; 32]).unwrap();
        let (nonce, iv) = ([1u8; GCM_NONCE_LEN], [2u8; AES_BLOCK]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        AesGcmKey::aes256(&key)
            .seal_into(&nonce, b"ad", b"pt", &mut a)
            .unwrap();
        AesGcmKey::new(&[9u8; 32])
            .unwrap()
            .seal_into(&nonce, b"ad", b"pt", &mut b)
            .unwrap();
        assert_eq!(a, b);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        AesCbcKey::aes256(&key).encrypt_into(&iv, b"pt", &mut a);
        AesCbcKey::new(&[9u8; 32])
            .unwrap()
            .encrypt_into(&iv, b"pt", &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn constant_time_helpers() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        let items = [[1u8; 32], [2u8; 32], [1u8; 32]];
        assert_eq!(ct_position(&[1u8; 32], &items), Some(2), "the last match");
        assert_eq!(ct_position(&[2u8; 32], &items), Some(1));
        assert_eq!(ct_position(&[3u8; 32], &items), None);
        assert_eq!(ct_position(&[3u8; 32], &[]), None);
    }

    #[test]
    fn debug_is_redacted() {
        let key = Key32::from_slice(&[0x41; 32]).unwrap();
        let s = format!("{key:?} {:?}", AeadKey::new(Algorithm::Aes256Gcm, &key));
        assert!(!s.contains("41"), "{s}");
        assert!(s.contains("REDACTED"));
    }

    #[test]
    fn random_nonce_round_trip_and_wrong_lengths() {
        for alg in Algorithm::ALL {
            let k = AeadKey::new(alg, &Key32::generate().unwrap());
            let c = k.seal_random_nonce(b"ad", b"hello").unwrap();
            assert_eq!(c.len(), alg.nonce_len() + 5 + TAG_LEN);
            assert_eq!(k.open_with_nonce(b"ad", &c).unwrap().as_slice(), b"hello");
            assert_eq!(k.open_with_nonce(b"ad", &c[..3]), Err(CryptoError::Open));
            assert_eq!(k.open(&[0; 5], b"", &c), Err(CryptoError::Open));
            assert_eq!(
                k.seal_into(&[0; 5], b"", b"x", &mut Vec::new()),
                Err(CryptoError::Seal)
            );
            assert_eq!(alg.name().parse::<Algorithm>().unwrap(), alg);
            assert_eq!(Algorithm::from_id(alg.id()), Some(alg));
        }
        assert!("aes".parse::<Algorithm>().is_err());
    }

    /// RFC 8032 §7.1 TEST 1 and TEST 2: seed → public key → signature, and tampering.
    #[test]
    fn ed25519_rfc8032_vectors_and_tamper() {
        let cases = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
        ];
        for (seed, public, msg, sig) in cases {
            let key = Ed25519SigningKey::from_seed(Key32::from_slice(&unhex(seed)).unwrap());
            assert_eq!(hex::encode(key.public_key().as_bytes()), public);
            let msg = unhex(msg);
            let s = key.sign(&msg);
            assert_eq!(hex::encode(s), sig);
            let pk = key.public_key();
            assert!(pk.verify(&msg, &s));
            for i in 0..s.len() {
                let mut t = s;
                t[i] ^= 1;
                assert!(!pk.verify(&msg, &t), "signature byte {i}");
            }
            let mut other = msg.clone();
            other.push(0);
            assert!(!pk.verify(&other, &s));
            assert!(!pk.verify(&msg, &s[..63]));
        }
        assert!(!format!("{:?}", Ed25519SigningKey::generate().unwrap()).contains("seed"));
    }

    #[test]
    fn ed25519_public_key_pem_round_trips() {
        let key = Ed25519SigningKey::generate().unwrap();
        let pem = key.public_key().to_pem();
        assert!(
            pem.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"),
            "{pem}"
        );
        assert_eq!(
            Ed25519PublicKey::from_pem(&pem).as_ref(),
            Some(key.public_key())
        );
        assert_eq!(
            Ed25519PublicKey::from_pem(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
            ),
            None
        );
        assert_eq!(Ed25519PublicKey::from_bytes(&[0; 31]), None);
        assert_eq!(key.public_key().key_id().len(), 16);
    }
}
