//! Projecting Secrets to a process the way kubelet does: as files of a secret volume, or as
//! environment variables.
//!
//! - Files: a [`Projection`] (every key, or the listed [`Item`]s, each with a [`Mode`]) turns a
//!   Secret into [`File`]s, and an [`AtomicWriter`] writes them as kubelet's atomic writer
//!   fills a secret volume:
//!
//! ```text
//! DIR/..2026_11_29_12_00_00.123456789/   every file of one version (0755, files their mode)
//! DIR/..data -> ..2026_11_29_12_00_00.123456789   swapped with rename(2): readers see one version
//! DIR/password -> ..data/password         one symlink per top-level name
//! DIR/certs -> ..data/certs               nested item paths: the first component is the link
//! ```
//!
//! - Environment: [`build_env`] turns Secrets into variables like a container's `envFrom`
//!   (every key, with a prefix) and `secretKeyRef` (one key as one variable).
//!
//! Nothing here talks to a server or prints: warnings and notices go to a callback, failures
//! are a [`ProjectionError`].

use std::path::PathBuf;

mod env;
mod volume;
mod writer;

pub use env::{build_env, env_name_errors, is_env_name, is_loader_var, EnvFrom, EnvNotice, EnvVar};
pub use volume::{check_path, File, Item, Mode, Projection};
pub use writer::{AtomicWriter, Warning};

/// Why a projection was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// A projected path is empty (the caller's mistake).
    #[error("the path must not be empty")]
    EmptyPath,
    /// A projected path is absolute (the caller's mistake).
    #[error("{path:?} must be a relative path")]
    AbsolutePath {
        /// The path.
        path: String,
    },
    /// A projected path has a `..` component (the caller's mistake).
    #[error("{path:?} must not contain '..'")]
    ParentComponent {
        /// The path.
        path: String,
    },
    /// A projected path names no file: it is only `.` and `/` (the caller's mistake).
    #[error("{path:?} names no file")]
    NoFileName {
        /// The path.
        path: String,
    },
    /// A projected path starts with `..`, which names the writer's own files (the caller's
    /// mistake).
    #[error("{path:?} must not start with '..'")]
    ReservedPath {
        /// The path.
        path: String,
    },
    /// A projected path is longer than 4096 bytes, or one of its names longer than 255
    /// (kubelet's limits; the caller's mistake).
    #[error("{path}: {limit}")]
    TooLong {
        /// The path quoted (its first 64 characters and its length, when longer).
        path: String,
        /// Which limit, in kubelet's words.
        limit: &'static str,
    },
    /// A file mode is not octal from 0000 to 0777 (the caller's mistake).
    #[error("expected an octal mode from 0000 to 0777, such as 0400 or 0644")]
    InvalidMode,
    /// Two item paths are the same, or one is inside the other (the caller's mistake).
    #[error("the paths {} and {} collide", .first.display(), .second.display())]
    Collision {
        /// The shorter path.
        first: PathBuf,
        /// The path that is the same or below it.
        second: PathBuf,
    },
    /// A key of the Secret is not a valid relative path, so it cannot be a file name (the
    /// Secret's author: list the key as an item with another path).
    #[error("secret {namespace}/{name}: key {key:?}: {source}")]
    KeyPath {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The key.
        key: String,
        /// What is wrong with it as a path.
        source: Box<ProjectionError>,
    },
    /// Keys listed as items are not in the Secret (the caller's, or the Secret's author's).
    #[error("secret {namespace}/{name} has no key {}", .keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", "))]
    MissingKeys {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The keys missing.
        keys: Vec<String>,
    },
    /// The target exists and is not a directory (the caller's mistake).
    #[error("{} is not a directory", .dir.display())]
    NotADirectory {
        /// The target.
        dir: PathBuf,
    },
    /// The target exists but another user owns it, or others may write to it, so they could
    /// read or swap what is projected (the caller's: use a directory of your own, not writable
    /// by group or others).
    #[error("{} {reason}; refusing to write Secrets into it", .dir.display())]
    UnsafeDirectory {
        /// The target.
        dir: PathBuf,
        /// What is wrong, e.g. `is owned by uid 1000, not 0`.
        reason: String,
    },
    /// Another writer holds the target's lock (the caller's: stop it, or use another
    /// directory).
    #[error("another keyward mount is writing to {}", .dir.display())]
    Locked {
        /// The target.
        dir: PathBuf,
    },
    /// A name to project is taken by something the writer did not create; nothing was written
    /// (the caller's: remove it, or use an empty directory).
    #[error("{} exists and is not a symlink written by keyward mount; refusing to replace it", .path.display())]
    NotOurs {
        /// The file in the way.
        path: PathBuf,
    },
    /// A file system call failed (the environment).
    #[error("{action}: {source}")]
    Io {
        /// What was being done, e.g. `cannot write /run/db/..2026_...`.
        action: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A key named for one variable is not in the Secret (the caller's, or the Secret's
    /// author's).
    #[error("secret {namespace}/{secret} has no key {key:?}")]
    MissingEnvKey {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        secret: String,
        /// The key.
        key: String,
        /// The variable it was for.
        var: String,
        /// The keys the Secret has.
        keys: Vec<String>,
    },
    /// A value cannot be an environment variable: it is not UTF-8 or holds a NUL byte (the
    /// Secret's author: project it as a file instead).
    #[error("secret {namespace}/{secret} key {key:?}: the value {problem}, so it cannot be an environment variable")]
    EnvValue {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        secret: String,
        /// The key.
        key: String,
        /// What is wrong: `contains a NUL byte` or `is not valid UTF-8`.
        problem: &'static str,
    },
}

impl ProjectionError {
    /// An [`ProjectionError::Io`] for `action` (e.g. `cannot write /x`).
    fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProjectionError {
        let action = action.into();
        move |source| ProjectionError::Io { action, source }
    }
}
