//! Root-key sources: where the key that seals the keyring comes from.
//!
//! - `keyfile:PATH`: a file holding 32 random bytes, raw or base64 (`head -c 32 /dev/urandom`).
//! - `passphrase-file:PATH`: a passphrase stretched with Argon2id; the salt and cost parameters
//!   are stored with the keyring (they are not secret).
//!
//! Both files must not be readable by group or others. Nothing here knows what the keyring holds.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, CryptoError, Key32};

/// Largest key or passphrase file read (a passphrase longer than this is a mistake).
const MAX_SECRET_FILE: u64 = 4096;

/// Errors of this layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The `--seal` value is not one of the accepted forms (caller's input).
    #[error("invalid seal {0:?}: expected keyfile:PATH or passphrase-file:PATH")]
    BadSpec(String),
    /// A key or passphrase file could not be read (environment).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key or passphrase file is readable by group or others (operator's setup).
    #[error("{path} has mode {mode:04o}: key material must not be readable by group or others; run chmod 600 {path}")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file's content is not a valid key or passphrase (operator's input).
    #[error("{path}: {reason}")]
    BadContent {
        /// The file.
        path: PathBuf,
        /// What is wrong, never the content itself.
        reason: &'static str,
    },
    /// `--generate-keyfile` found an existing file (operator's input).
    #[error("{0} already exists; refusing to overwrite a key file")]
    Exists(PathBuf),
    /// Writing a key file failed (environment).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Argon2id parameters are out of range (operator's input or a corrupt keyring).
    #[error("invalid Argon2id parameters: {0}")]
    KdfParams(String),
    /// Randomness was unavailable (environment).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Where the root key comes from, as given by `--seal`.
#[derive(Clone, PartialEq, Eq)]
pub enum SealSpec {
    /// `keyfile:PATH`.
    KeyFile(PathBuf),
    /// `passphrase-file:PATH`.
    PassphraseFile(PathBuf),
}

impl fmt::Debug for SealSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.path().display())
    }
}

impl SealSpec {
    /// `"keyfile"` or `"passphrase-file"`.
    pub fn kind(&self) -> &'static str {
        match self {
            SealSpec::KeyFile(_) => "keyfile",
            SealSpec::PassphraseFile(_) => "passphrase-file",
        }
    }

    /// The file the secret is read from.
    pub fn path(&self) -> &Path {
        match self {
            SealSpec::KeyFile(p) | SealSpec::PassphraseFile(p) => p,
        }
    }
}

impl FromStr for SealSpec {
    type Err = SealError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, path) = s
            .split_once(':')
            .ok_or_else(|| SealError::BadSpec(s.to_owned()))?;
        if path.is_empty() {
            return Err(SealError::BadSpec(s.to_owned()));
        }
        match kind {
            "keyfile" => Ok(SealSpec::KeyFile(path.into())),
            "passphrase-file" => Ok(SealSpec::PassphraseFile(path.into())),
            _ => Err(SealError::BadSpec(s.to_owned())),
        }
    }
}

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

/// The key that seals the keyring. Zeroized on drop; never printed.
#[derive(Debug)]
pub struct RootKey(Key32);

impl RootKey {
    /// The key material.
    pub fn key(&self) -> &Key32 {
        &self.0
    }
}

/// Reads the root key from a key file (32 raw bytes, or their base64 with optional newline).
pub fn read_keyfile(path: &Path) -> Result<RootKey, SealError> {
    let data = read_secret_file(path)?;
    if data.len() == 32 {
        return Ok(RootKey(Key32::from_slice(&data).expect("length checked")));
    }
    let text = trim_newline(&data);
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| SealError::BadContent {
                path: path.to_owned(),
                reason: "a key file must hold exactly 32 bytes, raw or base64-encoded",
            })?,
    );
    Key32::from_slice(&decoded)
        .map(RootKey)
        .ok_or_else(|| SealError::BadContent {
            path: path.to_owned(),
            reason: "the base64 in the key file does not decode to exactly 32 bytes",
        })
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

/// Writes a new key file of 32 random bytes (base64, one line) with mode 0600.
/// Refuses to overwrite an existing file.
pub fn generate_keyfile(path: &Path) -> Result<(), SealError> {
    let key = Key32::generate()?;
    let mut text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.expose()));
    text.push('\n');
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SealError::Exists(path.to_owned()),
            _ => SealError::Write {
                path: path.to_owned(),
                source: e,
            },
        })?;
    let write = |file: &mut fs::File| -> std::io::Result<()> {
        // The mode passed to open() is filtered by the umask; make sure it is exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    };
    write(&mut file).map_err(|e| {
        let _ = fs::remove_file(path);
        SealError::Write {
            path: path.to_owned(),
            source: e,
        }
    })?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| SealError::Write {
                path: dir.to_owned(),
                source: e,
            })?;
    }
    Ok(())
}

fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, SealError> {
    read_private_file(path, MAX_SECRET_FILE)
}

/// Reads a file that holds secrets (a key, a passphrase, a TLS private key, tokens): it must
/// be a regular file of at most `max` bytes, not readable by group or others.
pub fn read_private_file(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let read_err = |source| SealError::Read {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(SealError::BadContent {
            path: path.to_owned(),
            reason: "not a regular file",
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SealError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > max {
        return Err(SealError::BadContent {
            path: path.to_owned(),
            reason: "file is larger than expected for a key, passphrase or token file",
        });
    }
    let mut data = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    use std::io::Read;
    file.take(max + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    Ok(data)
}

fn trim_newline(data: &[u8]) -> &[u8] {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    data.strip_suffix(b"\r").unwrap_or(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_mode(path: &Path, data: &[u8], mode: u32) {
        fs::write(path, data).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn spec_parsing() {
        assert_eq!(
            "keyfile:/a/b".parse::<SealSpec>().unwrap(),
            SealSpec::KeyFile("/a/b".into())
        );
        assert_eq!(
            "passphrase-file:x".parse::<SealSpec>().unwrap(),
            SealSpec::PassphraseFile("x".into())
        );
        for bad in ["", "keyfile", "keyfile:", "pkcs11:x", "/a/b"] {
            let e = bad.parse::<SealSpec>().unwrap_err().to_string();
            assert!(e.contains("keyfile:PATH"), "{e}");
        }
    }

    #[test]
    fn keyfile_raw_and_base64_agree_and_generate_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let gen = dir.path().join("gen.key");
        generate_keyfile(&gen).unwrap();
        assert_eq!(
            fs::metadata(&gen).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(generate_keyfile(&gen), Err(SealError::Exists(_))));
        let k1 = read_keyfile(&gen).unwrap();
        let raw = dir.path().join("raw.key");
        write_mode(&raw, k1.key().expose(), 0o600);
        let k2 = read_keyfile(&raw).unwrap();
        assert_eq!(k1.key().expose(), k2.key().expose());
        // Raw 32 bytes that happen to end in '\n' are still raw.
        let mut nl = [7u8; 32];
        nl[31] = b'\n';
        write_mode(&raw, &nl, 0o400);
        assert_eq!(read_keyfile(&raw).unwrap().key().expose(), &nl);
    }

    #[test]
    fn keyfile_rejections_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_mode(&p, &[1u8; 32], 0o644);
        let e = read_keyfile(&p).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        write_mode(&p, &[1u8; 31], 0o600);
        let e = read_keyfile(&p).unwrap_err().to_string();
        assert!(e.contains("exactly 32 bytes"), "{e}");
        write_mode(&p, b"c2hvcnQ=\n", 0o600);
        let e = read_keyfile(&p).unwrap_err().to_string();
        assert!(e.contains("32 bytes"), "{e}");
        let e = read_keyfile(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
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
