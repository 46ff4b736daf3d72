//! AEAD primitives, HKDF, HMAC and randomness: the only module that names a cryptography crate.
//!
//! Keys are [`Key32`] (a zeroizing, redacting box over 32 bytes). An [`AeadKey`] holds an
//! instantiated cipher (key schedule computed once) so the hot path only seals and opens.
//! Every failure to open is the same opaque [`CryptoError::Open`]: wrong key, bad tag and bad
//! length look identical to the caller.

use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::XChaCha20Poly1305;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

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
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::getrandom(buf).map_err(|_| CryptoError::Random)
}

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

enum Cipher {
    Aes(Box<Aes256Gcm>),
    XChaCha(Box<XChaCha20Poly1305>),
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
            Algorithm::Aes256Gcm => Cipher::Aes(Box::new(Aes256Gcm::new(key.expose().into()))),
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
        if nonce.len() != self.alg.nonce_len() {
            return Err(CryptoError::Seal);
        }
        let start = out.len();
        out.extend_from_slice(plaintext);
        let buf = &mut out[start..];
        let tag = match &self.cipher {
            Cipher::Aes(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
            Cipher::XChaCha(c) => c.encrypt_in_place_detached(nonce.into(), aad, buf),
        };
        match tag {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(_) => {
                out[start..].zeroize();
                out.truncate(start);
                Err(CryptoError::Seal)
            }
        }
    }

    /// Opens `ciphertext || tag`. Any failure is [`CryptoError::Open`].
    pub fn open(
        &self,
        nonce: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if nonce.len() != self.alg.nonce_len() || sealed.len() < TAG_LEN {
            return Err(CryptoError::Open);
        }
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let mut buf = Zeroizing::new(ct.to_vec());
        let res = match &self.cipher {
            Cipher::Aes(c) => c.decrypt_in_place_detached(nonce.into(), aad, &mut buf, tag.into()),
            Cipher::XChaCha(c) => {
                c.decrypt_in_place_detached(nonce.into(), aad, &mut buf, tag.into())
            }
        };
        res.map_err(|_| CryptoError::Open)?;
        Ok(buf)
    }

    /// Seals with a fresh random nonce and returns `nonce || ciphertext || tag`.
    pub fn seal_random_nonce(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let n = self.alg.nonce_len();
        let mut out = Vec::with_capacity(n + plaintext.len() + TAG_LEN);
        out.resize(n, 0);
        fill_random(&mut out)?;
        let (nonce, _) = out.split_at(n);
        let nonce = nonce.to_vec();
        self.seal_into(&nonce, aad, plaintext, &mut out)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
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
}
