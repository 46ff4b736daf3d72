//! `keyfile:PATH`: the root key is a file of 32 random bytes, raw or base64 (one line), that
//! must not be readable by group or others. systemd credentials fit here unchanged: with
//! `LoadCredentialEncrypted=root.key:...`, systemd decrypts the file (with the machine's TPM
//! and/or host key) into the unit's credentials directory, mode 0400, and `keyfile:%d/root.key`
//! names it (`%d` is that directory, the same as `$CREDENTIALS_DIRECTORY`).

use std::path::Path;

use base64::Engine;
use zeroize::Zeroizing;

use super::{read_secret_file, trim_newline, write_private_file, RootKey, SealError};
use crate::crypto::Key32;

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

/// Writes a new key file of 32 random bytes (base64, one line) with mode 0600.
/// Refuses to overwrite an existing file.
pub fn generate_keyfile(path: &Path) -> Result<(), SealError> {
    let key = Key32::generate()?;
    let mut text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.expose()));
    text.push('\n');
    write_private_file(path, text.as_bytes())
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
}
