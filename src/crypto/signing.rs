//! JWS signatures for service account tokens: ES256 (ECDSA P-256 with SHA-256, the default)
//! and RS256 (RSASSA-PKCS1-v1_5 with SHA-256), as kube-apiserver signs them, through `ring`.
//!
//! A [`SigningKey`] is a private key kept as PKCS#8 DER in a zeroizing box (its serialised form
//! for sealed storage) plus the parsed key `ring` signs with; `ring` does not zeroize its own
//! copy, so the parsed key lives only as long as the `SigningKey`. A [`VerifyingKey`] is a
//! public key in DER SubjectPublicKeyInfo form with kube-apiserver's key id
//! (base64url(SHA-256(SPKI))).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use secrecy::{ExposeSecret, SecretSlice};
use zeroize::Zeroizing;

use super::{sha256, CryptoError};

/// A JWS signature algorithm keyward signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwsAlgorithm {
    /// ECDSA on P-256 with SHA-256; the signature is `r || s` (64 bytes), as JWS writes it.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (signing keys of 2048 to 4096 bits; public keys up to
    /// 8192 bits verify).
    Rs256,
}

impl JwsAlgorithm {
    /// The JWS `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            JwsAlgorithm::Es256 => "ES256",
            JwsAlgorithm::Rs256 => "RS256",
        }
    }

    /// The algorithm a JWS `alg` header names, if keyward supports it (`none`, `HS256` and
    /// every other value are not).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(JwsAlgorithm::Es256),
            "RS256" => Some(JwsAlgorithm::Rs256),
            _ => None,
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// DER prefix of a P-256 SubjectPublicKeyInfo: SEQUENCE { AlgorithmIdentifier { id-ecPublicKey,
/// prime256v1 }, BIT STRING (0 unused bits) }, followed by the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// Length of an uncompressed P-256 point.
const P256_POINT_LEN: usize = 65;
/// DER AlgorithmIdentifier { rsaEncryption, NULL }.
const RSA_ALGORITHM_ID: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// A public key that verifies JWS signatures, with its kube-apiserver key id.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    alg: JwsAlgorithm,
    /// DER SubjectPublicKeyInfo.
    spki: Vec<u8>,
    /// The key as `ring` takes it: the uncompressed point (ES256) or DER RSAPublicKey (RS256).
    raw: Vec<u8>,
    key_id: String,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({}, kid {})", self.alg, self.key_id)
    }
}

impl VerifyingKey {
    fn new(alg: JwsAlgorithm, spki: Vec<u8>, raw: Vec<u8>) -> Self {
        let key_id = B64URL.encode(sha256(&spki));
        Self {
            alg,
            spki,
            raw,
            key_id,
        }
    }

    /// Parses a DER SubjectPublicKeyInfo holding a P-256 or an RSA public key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, CryptoError> {
        if let Some(point) = der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            if point.len() == P256_POINT_LEN && point[0] == 0x04 {
                return Ok(Self::new(JwsAlgorithm::Es256, der.to_vec(), point.to_vec()));
            }
            return Err(CryptoError::InvalidKey);
        }
        let rsa = rsa_public_key_from_spki(der).ok_or(CryptoError::InvalidKey)?;
        Ok(Self::new(JwsAlgorithm::Rs256, der.to_vec(), rsa.to_vec()))
    }

    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.alg
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The key as a JSON Web Key (RFC 7517) for signature verification, in the field order
    /// kube-apiserver's JWKS document (go-jose) writes: `use, kty, kid, crv, alg, x, y` for
    /// P-256, `use, kty, kid, alg, n, e` for RSA (big-endian, without leading zeros).
    pub fn jwk(&self) -> serde_json::Value {
        let mut jwk = serde_json::Map::new();
        let mut put = |k: &str, v: String| {
            jwk.insert(k.to_owned(), v.into());
        };
        put("use", "sig".into());
        match self.alg {
            JwsAlgorithm::Es256 => {
                // The uncompressed point: 0x04, x, y.
                let (x, y) = self.raw[1..].split_at((P256_POINT_LEN - 1) / 2);
                put("kty", "EC".into());
                put("kid", self.key_id.clone());
                put("crv", "P-256".into());
                put("alg", "ES256".into());
                put("x", B64URL.encode(x));
                put("y", B64URL.encode(y));
            }
            JwsAlgorithm::Rs256 => {
                let (n, e) = rsa_components(&self.raw).unwrap_or_default();
                put("kty", "RSA".into());
                put("kid", self.key_id.clone());
                put("alg", "RS256".into());
                put("n", B64URL.encode(n));
                put("e", B64URL.encode(e));
            }
        }
        serde_json::Value::Object(jwk)
    }

    /// kube-apiserver's key id: base64url (no padding) of SHA-256 of the DER
    /// SubjectPublicKeyInfo.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Whether `signature` is a valid `alg` signature of `message` under this key. A signature
    /// made for another algorithm than the key's is never valid (no algorithm confusion).
    pub fn verify(&self, alg: JwsAlgorithm, message: &[u8], signature: &[u8]) -> bool {
        if alg != self.alg {
            return false;
        }
        let verifier: &dyn signature::VerificationAlgorithm = match self.alg {
            JwsAlgorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            JwsAlgorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(verifier, &self.raw)
            .verify(message, signature)
            .is_ok()
    }
}

/// The RSAPublicKey inside an RSA SubjectPublicKeyInfo, if `der` is exactly one.
fn rsa_public_key_from_spki(der: &[u8]) -> Option<&[u8]> {
    let (body, rest) = der_element(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let body = body.strip_prefix(&RSA_ALGORITHM_ID[..])?;
    let (bits, rest) = der_element(body, 0x03)?;
    if !rest.is_empty() {
        return None;
    }
    // No unused bits; the content is the DER RSAPublicKey SEQUENCE (checked by ring on use).
    let key = bits.strip_prefix(&[0u8])?;
    let (_, rest) = der_element(key, 0x30)?;
    rest.is_empty().then_some(key)
}

/// The modulus and public exponent of a DER RSAPublicKey, as unsigned big-endian integers
/// without leading zero bytes.
fn rsa_components(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let (body, _) = der_element(key, 0x30)?;
    let (n, rest) = der_element(body, 0x02)?;
    let (e, _) = der_element(rest, 0x02)?;
    let strip = |v: &[u8]| -> usize { v.iter().take_while(|b| **b == 0).count() };
    Some((&n[strip(n)..], &e[strip(e)..]))
}

/// Splits one DER element with tag `tag` off `input`: (its content, the rest).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, input) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (bytes, rest) = input.split_at(n);
        input = rest;
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        // DER: the shortest form, no leading zero byte.
        if len < 0x80 || bytes[0] == 0 {
            return None;
        }
        len
    };
    (input.len() >= len).then(|| input.split_at(len))
}

/// Appends a DER length.
fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// The SubjectPublicKeyInfo of an RSAPublicKey.
fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(rsa_public_key);
    let mut body = RSA_ALGORITHM_ID.to_vec();
    body.push(0x03);
    der_len(&mut body, bits.len());
    body.extend_from_slice(&bits);
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

enum Parsed {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private key that signs service account tokens: ES256 (generated here) or RS256 (imported).
/// The PKCS#8 bytes are zeroized on drop and never printed; no `Clone`.
pub struct SigningKey {
    pkcs8: SecretSlice<u8>,
    parsed: Parsed,
    public: VerifyingKey,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey({}, kid {}, [REDACTED])",
            self.public.alg, self.public.key_id
        )
    }
}

impl SigningKey {
    /// A fresh ES256 (P-256) key from the operating system's random generator.
    pub fn generate_es256() -> Result<Self, CryptoError> {
        let rng = SystemRandom::new();
        // ring's own buffer is not zeroized (ring offers no way to); the copy kept here is.
        let pkcs8 = Zeroizing::new(
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| CryptoError::Random)?
                .as_ref()
                .to_vec(),
        );
        Self::from_pkcs8_der(&pkcs8)
    }

    /// A key from its unencrypted PKCS#8 v1 DER form (as [`SigningKey::to_pkcs8_der`] gives it,
    /// or `openssl genpkey` / Python `cryptography` write it): a P-256 ECDSA key (with its public
    /// key, as those tools write it) or an RSA key of 2048 to 4096 bits.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        let rng = SystemRandom::new();
        let (parsed, public) = if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
        {
            let point = k.public_key().as_ref().to_vec();
            let mut spki = P256_SPKI_PREFIX.to_vec();
            spki.extend_from_slice(&point);
            let public = VerifyingKey::new(JwsAlgorithm::Es256, spki, point);
            (Parsed::Ecdsa(k), public)
        } else if let Ok(k) = RsaKeyPair::from_pkcs8(der) {
            let raw = k.public_key().as_ref().to_vec();
            let public = VerifyingKey::new(JwsAlgorithm::Rs256, rsa_spki(&raw), raw);
            (Parsed::Rsa(k), public)
        } else {
            return Err(CryptoError::InvalidKey);
        };
        Ok(Self {
            pkcs8: SecretSlice::from(der.to_vec()),
            parsed,
            public,
            rng,
        })
    }

    /// The PKCS#8 DER bytes, to be sealed before they are stored. Never write them in plaintext.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.pkcs8.expose_secret().to_vec())
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.public.alg
    }

    /// The public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The key id ([`VerifyingKey::key_id`]).
    pub fn key_id(&self) -> &str {
        &self.public.key_id
    }

    /// Signs `message` with [`SigningKey::algorithm`]; the signature is in JWS form.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &self.parsed {
            Parsed::Ecdsa(k) => k
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| CryptoError::Random),
            Parsed::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
                    .map_err(|_| CryptoError::Random)?;
                Ok(sig)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_sign_verify_round_trip_and_tamper() {
        let key = SigningKey::generate_es256().unwrap();
        assert_eq!(key.algorithm(), JwsAlgorithm::Es256);
        let sig = key.sign(b"header.payload").unwrap();
        assert_eq!(sig.len(), 64);
        let public = key.verifying_key();
        assert!(public.verify(JwsAlgorithm::Es256, b"header.payload", &sig));
        assert!(!public.verify(JwsAlgorithm::Es256, b"header.payloaD", &sig));
        assert!(!public.verify(JwsAlgorithm::Rs256, b"header.payload", &sig));
        for i in 0..sig.len() {
            let mut bad = sig.clone();
            bad[i] ^= 1;
            assert!(!public.verify(JwsAlgorithm::Es256, b"header.payload", &bad));
        }
        // The serialised form gives the same key back; the SPKI parses to the same public key.
        let again = SigningKey::from_pkcs8_der(&key.to_pkcs8_der()).unwrap();
        assert_eq!(again.verifying_key(), public);
        let parsed = VerifyingKey::from_spki_der(public.spki_der()).unwrap();
        assert_eq!(&parsed, public);
        assert_eq!(public.key_id().len(), 43);
        assert_eq!(
            public.key_id(),
            B64URL.encode(sha256(public.spki_der())),
            "kid = base64url(SHA-256(SPKI))"
        );
        // Two keys differ.
        let other = SigningKey::generate_es256().unwrap();
        assert_ne!(other.key_id(), key.key_id());
        assert!(!other
            .verifying_key()
            .verify(JwsAlgorithm::Es256, b"header.payload", &sig));
    }

    #[test]
    fn bad_keys_are_refused_and_debug_is_redacted() {
        assert_eq!(
            SigningKey::from_pkcs8_der(b"not a key").unwrap_err(),
            CryptoError::InvalidKey
        );
        assert_eq!(
            VerifyingKey::from_spki_der(&[0x30, 0x00]).unwrap_err(),
            CryptoError::InvalidKey
        );
        let key = SigningKey::generate_es256().unwrap();
        let mut spki = key.verifying_key().spki_der().to_vec();
        spki.pop();
        assert!(VerifyingKey::from_spki_der(&spki).is_err());
        let der = key.to_pkcs8_der();
        let shown = format!("{key:?}");
        assert!(shown.contains("REDACTED") && shown.contains(key.key_id()));
        assert!(!shown.contains(&hex::encode(&der[der.len() - 8..])));
        assert_eq!(JwsAlgorithm::from_name("none"), None);
        assert_eq!(JwsAlgorithm::from_name("HS256"), None);
        assert_eq!(JwsAlgorithm::from_name("ES256"), Some(JwsAlgorithm::Es256));
    }

    #[test]
    fn der_lengths() {
        let mut v = Vec::new();
        der_len(&mut v, 0x7f);
        der_len(&mut v, 0x80);
        der_len(&mut v, 0x1234);
        assert_eq!(v, [0x7f, 0x81, 0x80, 0x82, 0x12, 0x34]);
        assert_eq!(
            der_element(&[0x30, 0x81, 0x80], 0x30),
            None,
            "truncated content"
        );
        assert_eq!(der_element(&[0x30, 0x81, 0x05, 1, 2, 3, 4, 5], 0x30), None);
        assert_eq!(
            der_element(&[0x30, 0x02, 1, 2, 9], 0x30),
            Some((&[1u8, 2][..], &[9u8][..]))
        );
    }
}
