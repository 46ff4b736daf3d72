//! `passphrase-file:PATH`: the root key is Argon2id of a passphrase read from a file (which must
//! not be readable by group or others). The salt and cost parameters ([`KdfParams`]) are stored
//! in the clear with the keyring.

use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{read_secret_file, trim_newline, RootKey, SealError};
use crate::crypto::{self, Key32};

/// Argon2id cost parameters and salt, stored (in the clear) with the keyring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// 16 random bytes, base64.
    pub salt: String,
}

impl KdfParams {
    /// OWASP's minimum for Argon2id (19 MiB, 2 iterations, 1 lane); lower is refused.
    pub const MIN_M_COST_KIB: u32 = 19 * 1024;
    /// Minimum iterations accepted.
    pub const MIN_T_COST: u32 = 2;
    /// Default: RFC 9106's second recommended option (64 MiB, 3 iterations, 4 lanes).
    pub fn recommended() -> Result<Self, SealError> {
        Self::new(64 * 1024, 3, 4)
    }

    /// Parameters with a fresh random salt, checked against the minimums.
    pub fn new(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self, SealError> {
        let salt = crypto::random_array::<16>()?;
        let p = Self {
            m_cost_kib,
            t_cost,
            p_cost,
            salt: base64::engine::general_purpose::STANDARD.encode(salt),
        };
        p.check()?;
        Ok(p)
    }

    fn check(&self) -> Result<(), SealError> {
        if self.m_cost_kib < Self::MIN_M_COST_KIB || self.m_cost_kib > 4 * 1024 * 1024 {
            return Err(SealError::KdfParams(format!(
                "memory {} KiB is outside {}..=4194304 KiB",
                self.m_cost_kib,
                Self::MIN_M_COST_KIB
            )));
        }
        if self.t_cost < Self::MIN_T_COST || self.t_cost > 100 {
            return Err(SealError::KdfParams(format!(
                "iterations {} is outside {}..=100",
                self.t_cost,
                Self::MIN_T_COST
            )));
        }
        if !(1..=64).contains(&self.p_cost) {
            return Err(SealError::KdfParams(format!(
                "parallelism {} is outside 1..=64",
                self.p_cost
            )));
        }
        Ok(())
    }

    fn salt_bytes(&self) -> Result<Vec<u8>, SealError> {
        let salt = base64::engine::general_purpose::STANDARD
            .decode(&self.salt)
            .map_err(|_| SealError::KdfParams("salt is not base64".into()))?;
        if salt.len() < 16 {
            return Err(SealError::KdfParams("salt is shorter than 16 bytes".into()));
        }
        Ok(salt)
    }
}

/// Derives the root key from a passphrase file with Argon2id and `params`.
pub fn derive_from_passphrase_file(path: &Path, params: &KdfParams) -> Result<RootKey, SealError> {
    params.check()?;
    let data = read_secret_file(path)?;
    let pass = trim_newline(&data);
    if pass.is_empty() {
        return Err(SealError::BadContent {
            path: path.to_owned(),
            reason: "the passphrase file is empty",
        });
    }
    let salt = params.salt_bytes()?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
            .map_err(|e| SealError::KdfParams(e.to_string()))?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pass, &salt, out.as_mut())
        .map_err(|e| SealError::KdfParams(e.to_string()))?;
    Ok(RootKey(Key32::from_bytes(&mut out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn write_mode(path: &Path, data: &[u8], mode: u32) {
        fs::write(path, data).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn passphrase_derivation_is_deterministic_per_salt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        write_mode(&p, b"correct horse battery staple\n", 0o600);
        let params = KdfParams::new(KdfParams::MIN_M_COST_KIB, 2, 1).unwrap();
        let a = derive_from_passphrase_file(&p, &params).unwrap();
        let b = derive_from_passphrase_file(&p, &params).unwrap();
        assert_eq!(a.key().expose(), b.key().expose());
        let other = KdfParams::new(KdfParams::MIN_M_COST_KIB, 2, 1).unwrap();
        let c = derive_from_passphrase_file(&p, &other).unwrap();
        assert_ne!(a.key().expose(), c.key().expose());
        write_mode(&p, b"\n", 0o600);
        assert!(derive_from_passphrase_file(&p, &params)
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    #[test]
    fn weak_kdf_params_are_refused() {
        assert!(KdfParams::new(1024, 3, 1).is_err());
        assert!(KdfParams::new(64 * 1024, 1, 1).is_err());
        assert!(KdfParams::new(64 * 1024, 3, 0).is_err());
        assert!(KdfParams::recommended().is_ok());
    }
}
