//! The ciphertext format of [`Keyring::encrypt`](super::Keyring::encrypt): a data key (for
//! KMS v2, the apiserver's DEK seed) sealed under a KEK, self-describing so that any KEK still in
//! the keyring opens its own ciphertexts whichever KEK is primary now.
//!
//! ```text
//! version(1) = 1 ‖ algorithm(1) ‖ kek id(16) ‖ nonce(12 or 24, random) ‖ AEAD(plaintext) ‖ tag(16)
//! ```
//!
//! The algorithm byte is [`Algorithm::id`] (1 AES-256-GCM, 2 XChaCha20-Poly1305); the first
//! [`HEADER_LEN`] bytes are the AEAD's associated data, so a changed header fails to open. Every
//! failure to open is the one opaque [`KeyringError::Decrypt`].

use zeroize::Zeroizing;

use super::KeyringError;
use crate::crypto::{self, AeadKey, Algorithm, TAG_LEN};

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

/// Refuses an empty or oversized plaintext (caller's input).
pub(super) fn check_plaintext(plaintext: &[u8]) -> Result<(), KeyringError> {
    if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
        return Err(KeyringError::InvalidInput {
            field: "plaintext",
            reason: format!(
                "must be 1 to {MAX_PLAINTEXT} bytes, got {} bytes",
                plaintext.len()
            ),
        });
    }
    Ok(())
}

/// Seals `plaintext` under `cipher`, the KEK with binary id `kek_id`, with a random nonce.
pub(super) fn seal(
    kek_id: &[u8; KEK_ID_LEN],
    cipher: &AeadKey,
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyringError> {
    let alg = cipher.algorithm();
    let mut out = Vec::with_capacity(HEADER_LEN + alg.nonce_len() + plaintext.len() + TAG_LEN);
    out.push(CIPHERTEXT_VERSION);
    out.push(alg.id());
    out.extend_from_slice(kek_id);
    out.resize(HEADER_LEN + alg.nonce_len(), 0);
    crypto::fill_random(&mut out[HEADER_LEN..])?;
    let (header, nonce) = out.split_at(HEADER_LEN);
    let (header, nonce) = (header.to_vec(), nonce.to_vec());
    cipher.seal_into(&nonce, &header, plaintext, &mut out)?;
    Ok(out)
}

/// The algorithm and KEK id a ciphertext names, if it is plausibly one of ours.
pub(super) fn header(ciphertext: &[u8]) -> Result<(Algorithm, [u8; KEK_ID_LEN]), KeyringError> {
    if ciphertext.len() < HEADER_LEN || ciphertext.len() > MAX_CIPHERTEXT {
        return Err(KeyringError::Decrypt);
    }
    if ciphertext[0] != CIPHERTEXT_VERSION {
        return Err(KeyringError::Decrypt);
    }
    let alg = Algorithm::from_id(ciphertext[1]).ok_or(KeyringError::Decrypt)?;
    let id = ciphertext[2..HEADER_LEN]
        .try_into()
        .expect("the slice has KEK_ID_LEN bytes");
    Ok((alg, id))
}

/// Opens a ciphertext whose [`header`] named the KEK `cipher`.
pub(super) fn open(
    cipher: &AeadKey,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
    let alg = cipher.algorithm();
    let rest = ciphertext.get(HEADER_LEN..).ok_or(KeyringError::Decrypt)?;
    if rest.len() < alg.nonce_len() + TAG_LEN {
        return Err(KeyringError::Decrypt);
    }
    let (nonce, sealed) = rest.split_at(alg.nonce_len());
    Ok(cipher.open(nonce, &ciphertext[..HEADER_LEN], sealed)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key32;

    #[test]
    fn layout_and_every_tampering_fails_the_same_way() {
        for alg in Algorithm::ALL {
            let key = AeadKey::new(alg, &Key32::generate().unwrap());
            let id = [7u8; KEK_ID_LEN];
            let ct = seal(&id, &key, &[1u8; 32]).unwrap();
            assert_eq!(ct.len(), HEADER_LEN + alg.nonce_len() + 32 + TAG_LEN);
            assert_eq!((ct[0], ct[1]), (CIPHERTEXT_VERSION, alg.id()));
            assert_eq!(header(&ct).unwrap(), (alg, id));
            assert_eq!(open(&key, &ct).unwrap().as_slice(), &[1u8; 32]);
            for i in 0..ct.len() {
                let mut t = ct.clone();
                t[i] ^= 0x01;
                let res = header(&t).and_then(|(a, i)| {
                    if (a, i) == (alg, id) {
                        open(&key, &t)
                    } else {
                        Err(KeyringError::Decrypt)
                    }
                });
                assert!(matches!(res, Err(KeyringError::Decrypt)), "byte {i}");
            }
            for n in 0..ct.len() {
                let res = header(&ct[..n]).and_then(|_| open(&key, &ct[..n]));
                assert!(matches!(res, Err(KeyringError::Decrypt)), "length {n}");
            }
        }
        assert!(matches!(
            header(&vec![1u8; MAX_CIPHERTEXT + 1]),
            Err(KeyringError::Decrypt)
        ));
        assert!(matches!(
            check_plaintext(&[]),
            Err(KeyringError::InvalidInput {
                field: "plaintext",
                ..
            })
        ));
        assert!(check_plaintext(&vec![0; MAX_PLAINTEXT + 1]).is_err());
    }
}
