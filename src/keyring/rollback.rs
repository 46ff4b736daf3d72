//! Rollback protection: a keyring document only moves forward.
//!
//! Every save raises the document's MAC-covered `generation` by one. A document read back (a
//! replica's change, or anything an etcd writer put there) is accepted only if it moves forward
//! from the one held ([`check_forward`]): a higher generation (or the same document again), no
//! known KEK forgotten, no KEK moved to an earlier state (primary → decrypt-only → disabled →
//! destroyed), no sequence number or encryption count lowered. An etcd writer without the root
//! key can replay old, authentic documents; this is what refuses them.
//!
//! A replica of a shared keyring also keeps the [`Mark`] of the newest document it accepted in a
//! local state file ([`MarkFile`], written durably), so a restart refuses a rolled-back document
//! too. The mark holds ids, states and counts only: no key material.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::document::Doc;
use super::{KeyState, KeyringError};
use crate::crypto;

/// The name of the mark file inside a replica's state directory.
pub const MARK_FILE: &str = "kms-keyring.mark";

/// What a replica knows of the newest keyring document it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Mark {
    /// The keyring's id (hex).
    pub keyring_id: String,
    /// The document's generation.
    pub generation: u64,
    /// SHA-256 of the stored document (hex): the same generation must be the same document.
    pub digest: String,
    /// The document's next sequence number.
    pub next_seq: u64,
    /// Every KEK by binary id (hex): its state and stored encryption count.
    pub keys: BTreeMap<String, MarkKey>,
}

/// One KEK in a [`Mark`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MarkKey {
    /// Sequence number, for messages (`key #N`: logs carry no key ids).
    pub seq: u64,
    /// State.
    pub state: KeyState,
    /// Stored encryption count.
    pub reserved: u64,
}

impl Mark {
    /// The mark of `doc`, stored as `stored`.
    pub fn of(doc: &Doc, stored: &[u8]) -> Mark {
        Mark {
            keyring_id: doc.keyring_id.clone(),
            generation: doc.generation,
            digest: hex::encode(crypto::sha256(stored)),
            next_seq: doc.next_seq,
            keys: doc
                .keys
                .iter()
                .map(|r| {
                    let k = MarkKey {
                        seq: r.seq,
                        state: r.state,
                        reserved: r.encryptions_reserved,
                    };
                    (r.id.clone(), k)
                })
                .collect(),
        }
    }
}

/// Position of a state in the only order keys move in.
fn rank(state: KeyState) -> u8 {
    match state {
        KeyState::Primary => 0,
        KeyState::DecryptOnly => 1,
        KeyState::Disabled => 2,
        KeyState::Destroyed => 3,
    }
}

/// Whether the document marked `new` moves forward from the one marked `held`; if not, why
/// (numbers only, fit for a log line).
pub(super) fn check_forward(held: &Mark, new: &Mark) -> Result<(), String> {
    if new.keyring_id != held.keyring_id {
        return Err(format!(
            "it is keyring {}, not {}",
            new.keyring_id, held.keyring_id
        ));
    }
    if new.generation == held.generation && new.digest == held.digest {
        return Ok(());
    }
    if new.generation <= held.generation {
        return Err(format!(
            "its generation {} is not newer than generation {} already seen",
            new.generation, held.generation
        ));
    }
    if new.next_seq < held.next_seq {
        return Err(format!(
            "its next key sequence {} is below {} already seen",
            new.next_seq, held.next_seq
        ));
    }
    for (id, k) in &held.keys {
        let Some(n) = new.keys.get(id) else {
            return Err(format!("it forgets key #{}", k.seq));
        };
        if rank(n.state) < rank(k.state) {
            return Err(format!(
                "it moves key #{} back from {} to {}",
                k.seq,
                k.state.name(),
                n.state.name()
            ));
        }
        if n.reserved < k.reserved {
            return Err(format!(
                "it lowers the encryption count of key #{} from {} to {}",
                k.seq, k.reserved, n.reserved
            ));
        }
    }
    Ok(())
}

/// The refusal of a document that does not move forward.
pub(super) fn refused(location: &str, reason: String) -> KeyringError {
    KeyringError::RolledBack {
        location: location.to_owned(),
        reason,
    }
}

/// A replica's mark file: the [`Mark`] of the newest document it accepted, as JSON, mode 0600,
/// replaced atomically and durably (temp file, fsync, rename, fsync of the directory).
#[derive(Debug, Clone)]
pub(super) struct MarkFile {
    path: PathBuf,
}

impl MarkFile {
    /// The mark file in the state directory `dir` (created 0700 if missing).
    pub fn in_dir(dir: &Path) -> MarkFile {
        MarkFile {
            path: dir.join(MARK_FILE),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, e: impl std::fmt::Display) -> KeyringError {
        KeyringError::Storage {
            location: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// The mark stored, if any. Blocking.
    pub fn load(&self) -> Result<Option<Mark>, KeyringError> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.error(format!("unreadable keyring mark: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Replaces the stored mark with `mark`, durably. Blocking.
    pub fn store(&self, mark: &Mark) -> Result<(), KeyringError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| self.error(e))?;
        }
        let json = serde_json::to_vec(mark).map_err(|e| self.error(e))?;
        // A name of this process's own: replicas sharing a state directory never write one file.
        let tmp = self
            .path
            .with_extension(format!("mark.{}.tmp", std::process::id()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| self.error(e))?;
        f.write_all(&json).map_err(|e| self.error(e))?;
        f.sync_all().map_err(|e| self.error(e))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(|e| self.error(e))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(generation: u64, digest: &str, keys: &[(u64, KeyState, u64)]) -> Mark {
        Mark {
            keyring_id: "aa".into(),
            generation,
            digest: digest.into(),
            next_seq: 3,
            keys: keys
                .iter()
                .map(|(id, state, reserved)| {
                    let k = MarkKey {
                        seq: *id,
                        state: *state,
                        reserved: *reserved,
                    };
                    (id.to_string(), k)
                })
                .collect(),
        }
    }

    #[test]
    fn only_forward_documents_are_accepted() {
        use KeyState::*;
        let held = mark(5, "d5", &[(1, DecryptOnly, 10), (2, Primary, 10)]);
        assert_eq!(check_forward(&held, &held.clone()), Ok(()));
        let next = mark(6, "d6", &[(1, Disabled, 10), (2, Primary, 20)]);
        assert_eq!(check_forward(&held, &next), Ok(()));
        let cases = [
            (
                mark(4, "d4", &[(1, DecryptOnly, 10), (2, Primary, 10)]),
                "generation 4",
            ),
            (
                mark(5, "dx", &[(1, DecryptOnly, 10), (2, Primary, 10)]),
                "generation 5",
            ),
            (mark(6, "d6", &[(2, Primary, 10)]), "forgets key #1"),
            (
                mark(6, "d6", &[(1, Primary, 10), (2, Primary, 10)]),
                "back from decrypt-only",
            ),
            (
                mark(6, "d6", &[(1, DecryptOnly, 9), (2, Primary, 10)]),
                "lowers",
            ),
        ];
        for (new, want) in cases {
            let e = check_forward(&held, &new).unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        let mut other = next.clone();
        other.keyring_id = "bb".into();
        assert!(check_forward(&held, &other).is_err());
    }

    #[test]
    fn the_mark_file_round_trips_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let f = MarkFile::in_dir(&tmp.path().join("state"));
        assert_eq!(f.load().unwrap(), None);
        let m = mark(3, "d", &[(1, KeyState::Primary, 1)]);
        f.store(&m).unwrap();
        f.store(&m).unwrap();
        assert_eq!(f.load().unwrap(), Some(m));
        let mode = fs::metadata(f.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(tmp.path().join("state"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }
}
