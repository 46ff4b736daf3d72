//! kubelet's atomic writer: each version of a volume in a fresh timestamped directory, made
//! visible by one `rename(2)` of the `..data` symlink, so a reader never sees half of one
//! version and half of another.
//!
//! The target directory is created 0700 if it is missing; an existing one must belong to this
//! user and be writable by nobody else (it keeps its mode). It is locked with an exclusive
//! `flock` for as long as the writer lives, so two writers cannot interleave.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use super::{File, ProjectionError};

/// The symlink naming the current timestamped directory.
const DATA: &str = "..data";
/// The symlink renamed over [`DATA`].
const DATA_TMP: &str = "..data_tmp";
/// statfs `f_type` of tmpfs.
const TMPFS_MAGIC: u64 = 0x0102_1994;
/// statfs `f_type` of ramfs.
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// Something the caller should tell the user about a target directory.
#[derive(Debug)]
#[non_exhaustive]
pub enum Warning {
    /// The directory is not on tmpfs or ramfs, so values reach the disk.
    NotInMemory {
        /// The target.
        dir: PathBuf,
    },
    /// The directory's file system could not be told.
    UnknownFileSystem {
        /// The target.
        dir: PathBuf,
        /// Why.
        error: io::Error,
    },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::NotInMemory { dir } => write!(
                f,
                "{} is not on tmpfs or ramfs: Secret values will be written to disk \
                 (kubelet mounts a tmpfs for secret volumes)",
                dir.display()
            ),
            Warning::UnknownFileSystem { dir, error } => write!(
                f,
                "cannot tell the file system of {}: {error}",
                dir.display()
            ),
        }
    }
}

/// A target directory, locked for this writer.
#[derive(Debug)]
pub struct AtomicWriter {
    dir: PathBuf,
    /// Holds the exclusive `flock` on `dir`.
    _lock: fs::File,
}

/// The first component of a checked relative path: the name visible in the target directory.
fn top_name(p: &Path) -> Option<&OsStr> {
    match p.components().next() {
        Some(Component::Normal(n)) => Some(n),
        _ => None,
    }
}

/// Whether `name` is one of the writer's timestamped directories, as [`AtomicWriter`] names
/// them: `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN`, then the digits of a retry, if any. Anything else
/// (a user's `..2024_backup`) is not the writer's to remove.
fn is_ts_dir(name: &str) -> bool {
    const SHAPE: &[u8] = b"..dddd_dd_dd_dd_dd_dd.ddddddddd";
    let b = name.as_bytes();
    b.len() >= SHAPE.len()
        && b.iter().zip(SHAPE).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            s => c == s,
        })
        && b[SHAPE.len()..].iter().all(u8::is_ascii_digit)
}

/// Whether the entry at `p` is one of the writer's visible symlinks: `NAME -> ..data/NAME`.
fn is_our_link(p: &Path, name: &OsStr) -> bool {
    fs::read_link(p).is_ok_and(|t| t == Path::new(DATA).join(name))
}

impl AtomicWriter {
    /// Creates `dir` (0700) if needed, or checks that the existing one is this user's and
    /// writable by nobody else ([`ProjectionError::UnsafeDirectory`]), reports through `warn`
    /// when it is not in memory, and locks it.
    pub fn open(dir: &Path, warn: impl FnOnce(Warning)) -> Result<AtomicWriter, ProjectionError> {
        let cannot = |what: &str| ProjectionError::io(format!("cannot {what} {}", dir.display()));
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {
                let me = rustix::process::geteuid().as_raw();
                let reason = match crate::uds::exposure(&m) {
                    None => None,
                    Some(crate::uds::Exposure::Owner(uid)) => {
                        Some(format!("is owned by uid {uid}, not {me}"))
                    }
                    Some(crate::uds::Exposure::Writable(mode)) => Some(format!(
                        "has mode {mode:04o}: group or others may write to it"
                    )),
                };
                if let Some(reason) = reason {
                    return Err(ProjectionError::UnsafeDirectory {
                        dir: dir.to_owned(),
                        reason,
                    });
                }
            }
            Ok(_) => {
                return Err(ProjectionError::NotADirectory {
                    dir: dir.to_owned(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(cannot("create"))?,
            Err(e) => return Err(cannot("read")(e)),
        }
        match rustix::fs::statfs(dir) {
            Ok(st) => {
                // `f_type` is signed on some targets; the magic numbers are 32-bit.
                #[allow(clippy::unnecessary_cast)] // u32 on a few targets, i64 on others
                let kind = (st.f_type as u64) & 0xffff_ffff;
                if kind != TMPFS_MAGIC && kind != RAMFS_MAGIC {
                    warn(Warning::NotInMemory {
                        dir: dir.to_owned(),
                    });
                }
            }
            Err(e) => warn(Warning::UnknownFileSystem {
                dir: dir.to_owned(),
                error: e.into(),
            }),
        }
        let lock = fs::File::open(dir).map_err(cannot("open"))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(ProjectionError::Locked {
                    dir: dir.to_owned(),
                })
            }
            Err(e) => return Err(cannot("lock")(e.into())),
        }
        Ok(AtomicWriter {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// The target directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `files` as one new version, like kubelet's atomic writer: a fresh timestamped
    /// directory, then `..data` swapped to it with one rename, then the visible symlinks, then
    /// names no longer projected and the old version are removed. Nothing is written when a
    /// visible name is taken by something that is not one of our symlinks.
    pub fn write(&self, files: &[File<'_>]) -> Result<(), ProjectionError> {
        let dir = &self.dir;
        let io = |what: &str, p: &Path| ProjectionError::io(format!("{what} {}", p.display()));
        let top: BTreeSet<&OsStr> = files.iter().filter_map(|f| top_name(f.path())).collect();
        // Never replace something that is not ours (a file, a directory, a symlink pointing
        // anywhere but `..data/NAME`): check before writing anything.
        for name in &top {
            let p = dir.join(name);
            match fs::symlink_metadata(&p) {
                Ok(_) if !is_our_link(&p, name) => {
                    return Err(ProjectionError::NotOurs { path: p })
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot read", &p)(e)),
            }
        }
        let ts = self.new_ts_dir()?;
        let ts_path = dir.join(&ts);
        if let Err(e) = write_files(&ts_path, files) {
            let _ = fs::remove_dir_all(&ts_path);
            return Err(io("cannot write", &ts_path)(e));
        }
        // The swap: readers resolving ..data see either the old or the new directory. If it
        // cannot be made, the new version goes again (as kubelet removes it): no copy of the
        // values is left behind.
        let tmp = dir.join(DATA_TMP);
        let swapped = remove_if_exists(&tmp)
            .map_err(io("cannot remove", &tmp))
            .and_then(|()| symlink(&ts, &tmp).map_err(io("cannot create", &tmp)))
            .and_then(|()| {
                fs::rename(&tmp, dir.join(DATA)).map_err(ProjectionError::io(format!(
                    "cannot rename {} to {DATA}",
                    tmp.display()
                )))
            });
        if let Err(e) = swapped {
            if fs::read_link(&tmp).is_ok_and(|t| t == Path::new(&ts)) {
                let _ = fs::remove_file(&tmp);
            }
            let _ = fs::remove_dir_all(&ts_path);
            return Err(e);
        }
        for name in &top {
            let link = dir.join(name);
            match fs::symlink_metadata(&link) {
                Ok(_) if is_our_link(&link, name) => {}
                Ok(_) => return Err(ProjectionError::NotOurs { path: link }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    symlink(Path::new(DATA).join(name), &link)
                        .map_err(io("cannot create", &link))?;
                }
                Err(e) => return Err(io("cannot read", &link)(e)),
            }
        }
        // Visible names no longer projected (ours by their `..data/NAME` target, so names left
        // by an interrupted writer go too), the old version, and versions left behind.
        let entries = fs::read_dir(dir).map_err(io("cannot list", dir))?;
        for entry in entries.flatten() {
            let (name, path) = (entry.file_name(), entry.path());
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let stale = if kind.is_symlink() {
                !top.contains(name.as_os_str()) && is_our_link(&path, &name)
            } else {
                kind.is_dir() && name.to_str().is_some_and(is_ts_dir) && name != ts.as_str()
            };
            if !stale {
                continue;
            }
            let removed = if kind.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                remove_if_exists(&path)
            };
            removed.map_err(io("cannot remove", &path))?;
        }
        Ok(())
    }

    /// Creates `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN` (UTC) in the target directory.
    fn new_ts_dir(&self) -> Result<String, ProjectionError> {
        let mut last = None;
        for attempt in 0..100u32 {
            let stamp: String = humantime::format_rfc3339_nanos(SystemTime::now())
                .to_string()
                .chars()
                .filter(|c| *c != 'Z')
                .map(|c| if matches!(c, '-' | 'T' | ':') { '_' } else { c })
                .collect();
            let name = if attempt == 0 {
                format!("..{stamp}")
            } else {
                format!("..{stamp}{attempt}")
            };
            let p = self.dir.join(&name);
            match fs::DirBuilder::new().mode(0o755).create(&p) {
                Ok(()) => {
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                        .map_err(ProjectionError::io(format!("cannot chmod {}", p.display())))?;
                    return Ok(name);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => {
                    return Err(ProjectionError::io(format!(
                        "cannot create {}",
                        p.display()
                    ))(e))
                }
            }
        }
        Err(ProjectionError::io(format!(
            "cannot create a new directory in {}",
            self.dir.display()
        ))(last.unwrap_or_else(|| {
            io::Error::from(io::ErrorKind::AlreadyExists)
        })))
    }
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes every file under `base` (directories 0755, files their mode; the umask does not apply).
fn write_files(base: &Path, files: &[File<'_>]) -> io::Result<()> {
    for f in files {
        let mut parent = base.to_owned();
        if let Some(dirs) = f.path().parent() {
            for c in dirs.components() {
                parent.push(c);
                match fs::DirBuilder::new().mode(0o755).create(&parent) {
                    Ok(()) => fs::set_permissions(&parent, fs::Permissions::from_mode(0o755))?,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(base.join(f.path()))?;
        file.write_all(f.data())?;
        file.set_permissions(fs::Permissions::from_mode(f.mode()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::DataKey;
    use crate::projection::{Item, Mode, Projection};
    use crate::store::model::SecretBytes;
    use crate::store::Secret;

    fn secret(data: &[(&str, &[u8])]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = "db".into();
        s.metadata.namespace = "default".into();
        s.data = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretBytes::new(v.to_vec())))
            .collect();
        s
    }

    fn mode(bits: u32) -> Mode {
        Mode::new(bits).unwrap()
    }

    #[test]
    fn timestamped_directories_are_told_by_their_whole_name() {
        assert!(is_ts_dir("..2026_12_07_10_08_02.946245123"));
        assert!(
            is_ts_dir("..2026_12_07_10_08_02.9462451231"),
            "a retry's digits"
        );
        for not in [
            "..2024_backup",
            "..2026_12_07_10_08_02.94624512",
            "..2026_12_07_10_08_02.946245123x",
            "..data",
            "2026_12_07_10_08_02.946245123",
        ] {
            assert!(!is_ts_dir(not), "{not}");
        }
    }

    #[test]
    fn projection_layout_and_update() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let mut warnings = Vec::new();
        let t = AtomicWriter::open(&dir, |w| warnings.push(w)).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let e = AtomicWriter::open(&dir, drop).unwrap_err();
        assert!(
            matches!(e, ProjectionError::Locked { .. }),
            "a second writer must be refused: {e}"
        );
        let all = Projection::new(vec![], mode(0o640)).unwrap();
        let s = secret(&[("a", b"1"), (".b", b"2")]);
        t.write(&all.files(&s).unwrap()).unwrap();
        let first = fs::read_link(dir.join(DATA)).unwrap();
        assert!(is_ts_dir(first.to_str().unwrap()), "{first:?}");
        assert_eq!(fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(fs::read(dir.join(".b")).unwrap(), b"2");
        assert_eq!(
            fs::metadata(dir.join("a")).unwrap().permissions().mode() & 0o777,
            0o640
        );

        let items = Projection::new(
            vec![
                Item::new(DataKey::try_from("a").unwrap(), "x/y", Some(mode(0o400))).unwrap(),
                Item::new(DataKey::try_from("a").unwrap(), "z", None).unwrap(),
            ],
            mode(0o644),
        )
        .unwrap();
        let s = secret(&[("a", b"3"), (".b", b"4")]);
        t.write(&items.files(&s).unwrap()).unwrap();
        assert_eq!(fs::read(dir.join("x/y")).unwrap(), b"3");
        assert_eq!(
            fs::metadata(dir.join("x/y")).unwrap().permissions().mode() & 0o777,
            0o400
        );
        assert_eq!(
            fs::metadata(dir.join("z")).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let visible = || {
            let mut names: Vec<String> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| !is_ts_dir(n))
                .collect();
            names.sort();
            names
        };
        assert_eq!(visible(), ["..data", "x", "z"]);
        assert!(!dir.join(&first).exists(), "the old version is removed");

        // Leftovers of an interrupted writer: a version and a visible name. The user's own
        // entries stay, even a directory named almost like a version.
        fs::create_dir(dir.join("..2020_01_01_00_00_00.000000001")).unwrap();
        symlink("..data/ghost", dir.join("ghost")).unwrap();
        symlink("/elsewhere", dir.join("user-link")).unwrap();
        fs::create_dir(dir.join("..2024_backup")).unwrap();
        fs::write(dir.join("..2024_backup/keep"), b"mine").unwrap();
        t.write(&items.files(&s).unwrap()).unwrap();
        assert_eq!(
            visible(),
            ["..2024_backup", "..data", "user-link", "x", "z"]
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 6, "one version left");
        assert_eq!(fs::read(dir.join("..2024_backup/keep")).unwrap(), b"mine");

        // A symlink of the user's with a projected name is not replaced.
        fs::remove_file(dir.join("z")).unwrap();
        symlink("/etc/hostname", dir.join("z")).unwrap();
        let e = t.write(&items.files(&s).unwrap()).unwrap_err();
        assert!(matches!(e, ProjectionError::NotOurs { .. }), "{e}");
        assert_eq!(
            fs::read_link(dir.join("z")).unwrap(),
            Path::new("/etc/hostname")
        );
        fs::remove_file(dir.join("z")).unwrap();
        t.write(&items.files(&s).unwrap()).unwrap();

        // A swap that cannot be made leaves no copy of the values behind.
        let before: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        fs::create_dir(dir.join(DATA_TMP)).unwrap();
        fs::write(dir.join(DATA_TMP).join("x"), b"").unwrap();
        let e = t.write(&items.files(&s).unwrap()).unwrap_err();
        assert!(e.to_string().contains("cannot remove"), "{e}");
        fs::remove_dir_all(dir.join(DATA_TMP)).unwrap();
        let after: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(before.len(), after.len(), "{after:?}");

        fs::write(dir.join("a"), b"user file").unwrap();
        let e = t.write(&all.files(&s).unwrap()).unwrap_err();
        assert!(e.to_string().contains("not a symlink written by"), "{e}");
        assert_eq!(
            fs::read(dir.join("x/y")).unwrap(),
            b"3",
            "a refused projection changes nothing"
        );
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            AtomicWriter::open(&file, drop).unwrap_err(),
            ProjectionError::NotADirectory { .. }
        ));
    }
}
