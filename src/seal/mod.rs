//! Root-key sources: where the key that seals the keyring comes from. One submodule each; the
//! `--seal` value names one ([`SealSpec`], parsed strictly, naming the field at fault).
//!
//! - `keyfile:PATH` ([`keyfile`]): a file holding 32 random bytes, raw or base64. Under systemd,
//!   `keyfile:%d/root.key` reads a credential that systemd decrypted (`LoadCredentialEncrypted=`).
//! - `passphrase-file:PATH` ([`passphrase`]): a passphrase stretched with Argon2id; the salt and
//!   cost parameters are stored with the keyring (they are not secret).
//! - `pkcs11:module=PATH;token=LABEL;key-label=LABEL;pin-file=PATH` ([`pkcs11`]): a random root
//!   key wrapped by an AES key that never leaves an HSM (AES-GCM inside the token); the wrapped
//!   root key is stored with the keyring and unwrapped once at start.
//! - `shamir:shares=N,threshold=M` ([`shamir`]): a random root key wrapped under a key split
//!   into N shares, M of which unseal it; bare `shamir` to serve (the counts are in the keyring).
//!
//! Key, passphrase and PIN files must not be readable by group or others. Nothing here knows
//! what the keyring holds: callers pass the keyring id to bind wrapped keys to it.

pub mod keyfile;
pub mod passphrase;
pub mod pkcs11;
pub mod shamir;

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::crypto::{CryptoError, Key32};

pub use keyfile::{generate_keyfile, read_keyfile};
pub use passphrase::{derive_from_passphrase_file, KdfParams};
pub use pkcs11::Pkcs11Spec;
pub use shamir::{ShamirParams, ShamirRecord, Share, ShareCollector, SplitShares};

/// Largest key, passphrase or PIN file read (a passphrase longer than this is a mistake).
const MAX_SECRET_FILE: u64 = 4096;

/// The accepted `--seal` forms, for messages.
pub const SEAL_FORMS: &str = "keyfile:PATH, passphrase-file:PATH, \
     pkcs11:module=PATH;token=LABEL;key-label=LABEL;pin-file=PATH or shamir:shares=N,threshold=M";

/// Errors of this layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The `--seal` value is not one of the accepted forms (caller's input).
    #[error("invalid seal {0:?}: expected {SEAL_FORMS}")]
    BadSpec(String),
    /// One field of a `--seal` value is wrong (caller's input); names the field, never a secret.
    #[error("invalid seal {kind}: {field}: {reason}")]
    BadField {
        /// The seal kind (`pkcs11`, `shamir`).
        kind: &'static str,
        /// The field at fault.
        field: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A key, passphrase or PIN file could not be read (environment).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key, passphrase or PIN file is readable by group or others (operator's setup).
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
    /// A key or share file already exists (operator's input).
    #[error("{0} already exists; refusing to overwrite a key file")]
    Exists(PathBuf),
    /// Writing a key or share file failed (environment).
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
    /// The HSM refused or failed (operator's setup: module, token, PIN, key; or the device).
    #[error("pkcs11: {0}")]
    Pkcs11(String),
    /// A Shamir share is malformed, from another share set, or repeated (operator's input).
    #[error("share refused: {0}")]
    Share(String),
    /// The shares given do not open this keyring (operator's input): a wrong or forged share.
    #[error("the shares given do not open this keyring; start again with the right shares")]
    SharesDoNotOpen,
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
    /// `pkcs11:module=PATH;token=LABEL;key-label=LABEL;pin-file=PATH`.
    Pkcs11(Pkcs11Spec),
    /// `shamir:shares=N,threshold=M` (to create shares), or bare `shamir` (to serve a keyring
    /// whose counts are stored with it).
    Shamir(Option<ShamirParams>),
}

impl fmt::Debug for SealSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealSpec::KeyFile(p) | SealSpec::PassphraseFile(p) => {
                write!(f, "{}:{}", self.kind(), p.display())
            }
            SealSpec::Pkcs11(p) => write!(f, "{p}"),
            SealSpec::Shamir(Some(p)) => write!(f, "{p}"),
            SealSpec::Shamir(None) => f.write_str("shamir"),
        }
    }
}

impl fmt::Display for SealSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl SealSpec {
    /// `"keyfile"`, `"passphrase-file"`, `"pkcs11"` or `"shamir"`.
    pub fn kind(&self) -> &'static str {
        match self {
            SealSpec::KeyFile(_) => "keyfile",
            SealSpec::PassphraseFile(_) => "passphrase-file",
            SealSpec::Pkcs11(_) => "pkcs11",
            SealSpec::Shamir(_) => "shamir",
        }
    }

    /// This seal with its files' real paths (symbolic links resolved, so that a link cannot be
    /// swapped after the check), refused if another user could have chosen a file: each file
    /// and every directory above it must be owned by this process's user or root and not
    /// writable by group or others (a directory with the sticky bit, such as `/tmp`, may be,
    /// since only an entry's owner can replace it there). A seal given over the KMS admin
    /// socket names files its caller picked: without this, a caller could hand the plugin a
    /// root key it knows, or a PKCS#11 module of its own to run in the plugin.
    pub fn into_trusted(self) -> Result<SealSpec, String> {
        let real = |p: &Path| -> Result<PathBuf, String> {
            let real =
                fs::canonicalize(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            check_owned_by_us(&real)?;
            Ok(real)
        };
        Ok(match self {
            SealSpec::KeyFile(p) => SealSpec::KeyFile(real(&p)?),
            SealSpec::PassphraseFile(p) => SealSpec::PassphraseFile(real(&p)?),
            SealSpec::Pkcs11(mut p) => {
                p.module = real(&p.module)?;
                p.pin_file = real(&p.pin_file)?;
                SealSpec::Pkcs11(p)
            }
            shamir @ SealSpec::Shamir(_) => shamir,
        })
    }

    /// Whether opening a keyring sealed this way needs operators to hand in shares at run time.
    pub fn needs_shares(&self) -> bool {
        matches!(self, SealSpec::Shamir(_))
    }
}

impl FromStr for SealSpec {
    type Err = SealError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "shamir" {
            return Ok(SealSpec::Shamir(None));
        }
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| SealError::BadSpec(s.to_owned()))?;
        match kind {
            "keyfile" | "passphrase-file" if rest.is_empty() => {
                Err(SealError::BadSpec(s.to_owned()))
            }
            "keyfile" => Ok(SealSpec::KeyFile(rest.into())),
            "passphrase-file" => Ok(SealSpec::PassphraseFile(rest.into())),
            "pkcs11" => Ok(SealSpec::Pkcs11(rest.parse()?)),
            "shamir" => Ok(SealSpec::Shamir(Some(rest.parse()?))),
            _ => Err(SealError::BadSpec(s.to_owned())),
        }
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

    /// A fresh random root key (for seals that wrap it: PKCS#11, Shamir).
    pub fn generate() -> Result<RootKey, SealError> {
        Ok(RootKey(Key32::generate()?))
    }

    pub(crate) fn from_key(key: Key32) -> RootKey {
        RootKey(key)
    }
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

fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, SealError> {
    read_private_file(path, MAX_SECRET_FILE)
}

fn trim_newline(data: &[u8]) -> &[u8] {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    data.strip_suffix(b"\r").unwrap_or(data)
}

/// Writes `contents` to a new file `path` with mode 0600 and fsyncs it and its directory.
/// Refuses to overwrite an existing file; a failed write removes what it created.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), SealError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
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
        file.write_all(contents)?;
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

/// `path` (a real path) and every directory above it are owned by this process's user or
/// root and not writable by group or others, unless a directory has the sticky bit.
fn check_owned_by_us(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    for at in path.ancestors() {
        let meta = fs::metadata(at).map_err(|e| format!("{}: {e}", at.display()))?;
        let mode = meta.mode() & 0o7777;
        if meta.uid() != 0 && meta.uid() != me {
            return Err(format!(
                "{} is owned by uid {}: a seal's files, and the directories above them, must be owned by uid {me} (this process) or root",
                at.display(),
                meta.uid()
            ));
        }
        let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky_dir {
            return Err(format!(
                "{} has mode {mode:04o}: a seal's files, and the directories above them, must not be writable by group or others",
                at.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seal's files must be this process's: another user's file, a file in a directory
    /// others may write, or a link to one are refused; a sticky directory is allowed.
    #[test]
    fn seal_files_must_be_the_processs_own() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("root.key");
        fs::write(&key, [7u8; 32]).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let spec = |p: &Path| SealSpec::KeyFile(p.to_owned());
        // tempdir is 0700 under /tmp, which is sticky.
        assert_eq!(spec(&key).into_trusted().map(drop), Ok(()));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = spec(&key).into_trusted().map(drop).unwrap_err();
        assert!(
            err.contains("has mode 0777") && err.contains("must not be writable"),
            "{err}"
        );
        let link = tempfile::tempdir().unwrap();
        symlink(&key, link.path().join("k")).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        // A link is resolved: the seal names the real file.
        assert_eq!(
            spec(&link.path().join("k")).into_trusted(),
            Ok(spec(&fs::canonicalize(&key).unwrap()))
        );
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = spec(&link.path().join("k")).into_trusted().unwrap_err();
        assert!(err.contains("has mode 0777"), "the link is followed: {err}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o620)).unwrap();
        assert!(spec(&key)
            .into_trusted()
            .unwrap_err()
            .contains("has mode 0620"));
        let missing = spec(&dir.path().join("nope")).into_trusted().unwrap_err();
        assert!(missing.contains("No such file"), "{missing}");
        if rustix::process::geteuid().is_root() {
            // Owned by another user.
            fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&key, Some(4242), None).unwrap();
            let err = spec(&key).into_trusted().map(drop).unwrap_err();
            assert!(err.contains("is owned by uid 4242"), "{err}");
        }
        assert_eq!(
            SealSpec::Shamir(None).into_trusted(),
            Ok(SealSpec::Shamir(None))
        );
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
        assert_eq!(
            "shamir".parse::<SealSpec>().unwrap(),
            SealSpec::Shamir(None)
        );
        assert_eq!(
            "shamir:shares=5,threshold=3"
                .parse::<SealSpec>()
                .unwrap()
                .to_string(),
            "shamir:shares=5,threshold=3"
        );
        for bad in [
            "",
            "keyfile",
            "keyfile:",
            "tpm:x",
            "/a/b",
            "passphrase-file:",
        ] {
            let e = bad.parse::<SealSpec>().unwrap_err().to_string();
            assert!(e.contains("keyfile:PATH") && e.contains("shamir:"), "{e}");
        }
    }
}
