//! What a secret volume holds: every key of a Secret as a file, or the listed items, each at
//! its path with its mode (kubelet's `items`, `path`, `mode` and `defaultMode`).

use std::path::{Path, PathBuf};

use super::ProjectionError;
use crate::names::DataKey;
use crate::store::Secret;

/// A file mode from 0 to 0o777.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(u32);

impl Mode {
    /// The mode of `bits`, if at most 0o777.
    pub fn new(bits: u32) -> Option<Mode> {
        (bits <= 0o777).then_some(Mode(bits))
    }

    /// An octal mode as people write it: `0400`, `644`, `0o777`.
    pub fn parse(s: &str) -> Result<Mode, ProjectionError> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        if digits.is_empty()
            || digits.len() > 4
            || !digits.bytes().all(|c| (b'0'..=b'7').contains(&c))
        {
            return Err(ProjectionError::InvalidMode);
        }
        u32::from_str_radix(digits, 8)
            .ok()
            .and_then(Mode::new)
            .ok_or(ProjectionError::InvalidMode)
    }

    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

/// Longest projected path (kubelet's `maxPathLength`).
const MAX_PATH: usize = 4096;
/// Longest name in a projected path (kubelet's `maxFileNameLength`).
const MAX_NAME: usize = 255;

/// Checks a projected path and cleans it as kubelet does: relative, at most 4096 bytes with
/// names of at most 255, no `..` component, naming a file (not only `.` and `/`), and not
/// starting with `..` once cleaned (names starting with `..` are the writer's own).
pub fn check_path(p: &str) -> Result<PathBuf, ProjectionError> {
    if p.is_empty() {
        return Err(ProjectionError::EmptyPath);
    }
    let path = || p.to_owned();
    if p.starts_with('/') {
        return Err(ProjectionError::AbsolutePath { path: path() });
    }
    // kubelet's `validatePath`: checked before anything is written.
    let too_long = |limit| {
        let start: String = p.chars().take(64).collect();
        let shown = match start.len() < p.len() {
            true => format!("{start:?}... ({} bytes)", p.len()),
            false => format!("{start:?}"),
        };
        Err(ProjectionError::TooLong { path: shown, limit })
    };
    if p.len() > MAX_PATH {
        return too_long("must be less than or equal to 4096 characters");
    }
    if p.split('/').any(|part| part.len() > MAX_NAME) {
        return too_long("filenames must be less than or equal to 255 characters");
    }
    if p.split('/').any(|part| part == "..") {
        return Err(ProjectionError::ParentComponent { path: path() });
    }
    // Cleaned as kubelet cleans it (`path.Clean`): `./a`, `a/` and `a//b` name `a` and `a/b`.
    let clean = p
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/");
    if clean.is_empty() {
        return Err(ProjectionError::NoFileName { path: path() });
    }
    if clean.starts_with("..") {
        return Err(ProjectionError::ReservedPath { path: path() });
    }
    Ok(PathBuf::from(clean))
}

/// One key projected to a path (kubelet's `items` entry).
#[derive(Debug, Clone)]
pub struct Item {
    key: DataKey,
    path: PathBuf,
    mode: Option<Mode>,
}

impl Item {
    /// Key `key` at `path` (checked by [`check_path`]), with `mode` or the projection's
    /// default mode.
    pub fn new(key: DataKey, path: &str, mode: Option<Mode>) -> Result<Item, ProjectionError> {
        Ok(Item {
            key,
            path: check_path(path)?,
            mode,
        })
    }

    /// The Secret's key.
    pub fn key(&self) -> &DataKey {
        &self.key
    }

    /// Where it is written, relative to the volume.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its own mode, if it has one.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }
}

/// What to project: the listed items, or every key when there are none.
#[derive(Debug, Clone)]
pub struct Projection {
    items: Vec<Item>,
    default_mode: Mode,
}

/// One file of a projection.
pub struct File<'a> {
    /// Relative to the volume; checked by [`check_path`].
    path: PathBuf,
    data: &'a [u8],
    mode: u32,
}

/// Prints the path, size and mode, never the bytes.
impl std::fmt::Debug for File<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} bytes, {:04o})",
            self.path.display(),
            self.data.len(),
            self.mode
        )
    }
}

impl<'a> File<'a> {
    /// Where it is written, relative to the volume.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its content.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Its permission bits.
    pub fn mode(&self) -> u32 {
        self.mode
    }
}

impl Projection {
    /// A projection of `items` (every key when empty), files `default_mode` unless an item
    /// says otherwise. Refuses item paths that are listed twice or where one is inside
    /// another.
    pub fn new(items: Vec<Item>, default_mode: Mode) -> Result<Projection, ProjectionError> {
        let mut paths: Vec<&Path> = items.iter().map(|i| i.path.as_path()).collect();
        paths.sort();
        for w in paths.windows(2) {
            if w[1].starts_with(w[0]) {
                return Err(ProjectionError::Collision {
                    first: w[0].to_owned(),
                    second: w[1].to_owned(),
                });
            }
        }
        Ok(Projection {
            items,
            default_mode,
        })
    }

    /// The files of `s`: every key, or the items (all of whose keys must exist).
    pub fn files<'s>(&self, s: &'s Secret) -> Result<Vec<File<'s>>, ProjectionError> {
        let (namespace, name) = (&s.metadata.namespace, &s.metadata.name);
        if self.items.is_empty() {
            return s
                .data
                .iter()
                .map(|(k, v)| {
                    let path = check_path(k).map_err(|e| ProjectionError::KeyPath {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        key: k.clone(),
                        source: Box::new(e),
                    })?;
                    Ok(File {
                        path,
                        data: v.as_slice(),
                        mode: self.default_mode.0,
                    })
                })
                .collect();
        }
        let missing: Vec<String> = self
            .items
            .iter()
            .filter(|i| !s.data.contains_key(i.key.as_str()))
            .map(|i| i.key.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ProjectionError::MissingKeys {
                namespace: namespace.clone(),
                name: name.clone(),
                keys: missing,
            });
        }
        Ok(self
            .items
            .iter()
            .filter_map(|i| {
                s.data.get(i.key.as_str()).map(|v| File {
                    path: i.path.clone(),
                    data: v.as_slice(),
                    mode: i.mode.unwrap_or(self.default_mode).0,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::SecretBytes;

    fn key(k: &str) -> DataKey {
        DataKey::try_from(k).unwrap()
    }

    #[test]
    fn paths_and_modes() {
        for good in ["a", ".env", "a.b", "c/d", "a:b", "a/..b"] {
            assert_eq!(check_path(good).unwrap(), Path::new(good));
        }
        // Cleaned as kubelet's `path.Clean` does.
        for (given, clean) in [
            ("./a", "a"),
            ("a/", "a"),
            ("a//b", "a/b"),
            ("a/./b/", "a/b"),
        ] {
            assert_eq!(check_path(given).unwrap(), Path::new(clean), "{given}");
        }
        for (bad, want) in [
            ("", "the path must not be empty"),
            ("/etc/passwd", "\"/etc/passwd\" must be a relative path"),
            ("../x", "\"../x\" must not contain '..'"),
            ("a/..", "\"a/..\" must not contain '..'"),
            (".", "\".\" names no file"),
            ("./", "\"./\" names no file"),
            ("..data", "\"..data\" must not start with '..'"),
            ("./..data", "\"./..data\" must not start with '..'"),
        ] {
            assert_eq!(check_path(bad).unwrap_err().to_string(), want, "{bad}");
        }
        assert_eq!(Mode::parse("0400").unwrap(), Mode(0o400));
        assert_eq!(Mode::parse("644").unwrap(), Mode(0o644));
        assert_eq!(Mode::parse("0o777").unwrap(), Mode(0o777));
        for bad in ["", "0800", "1000", "01000", "rw", "-1"] {
            assert!(Mode::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Mode::new(0o1000), None);
    }

    #[test]
    fn items_must_not_collide_and_must_exist() {
        let items = |paths: &[&str]| {
            paths
                .iter()
                .map(|p| Item::new(key("k"), p, None).unwrap())
                .collect::<Vec<_>>()
        };
        let m = Mode(0o644);
        assert!(Projection::new(items(&["a", "b", "a.b", "c/d", "c/e"]), m).is_ok());
        assert!(Projection::new(items(&["a", "a"]), m).is_err());
        assert_eq!(
            Projection::new(items(&["a/b", "a"]), m)
                .unwrap_err()
                .to_string(),
            "the paths a and a/b collide"
        );
        let mut s = Secret::default();
        s.metadata.name = "db".into();
        s.metadata.namespace = "default".into();
        s.data.insert("k".into(), SecretBytes::new(b"v".to_vec()));
        s.data
            .insert("../x".into(), SecretBytes::new(b"v".to_vec()));
        let e = Projection::new(vec![], m).unwrap().files(&s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret default/db: key \"../x\": \"../x\" must not contain '..'"
        );
        let p = Projection::new(
            vec![
                Item::new(key("k"), "x/y", Some(Mode(0o400))).unwrap(),
                Item::new(key("nope"), "n", None).unwrap(),
                Item::new(key("gone"), "g", None).unwrap(),
            ],
            m,
        )
        .unwrap();
        assert_eq!(
            p.files(&s).unwrap_err().to_string(),
            "secret default/db has no key \"nope\", \"gone\""
        );
        let p = Projection::new(
            vec![
                Item::new(key("k"), "x/y", Some(Mode(0o400))).unwrap(),
                Item::new(key("k"), "z", None).unwrap(),
            ],
            m,
        )
        .unwrap();
        let f = p.files(&s).unwrap();
        assert_eq!(
            format!("{f:?}"),
            "[x/y (1 bytes, 0400), z (1 bytes, 0644)]",
            "Debug shows no values"
        );
    }
}
