//! Files the authenticators read (`--token-auth-file`, `--tokens-file`, `--unix-users`), kept in
//! memory and reloaded when they change.
//!
//! A [`WatchedFile`] holds the parsed content in force. [`WatchedFile::check_now`] reads the
//! file, and when its SHA-256 differs from the content in force, parses it and swaps the result
//! in atomically; requests in flight finish with the old content. A file that cannot be read or
//! parsed keeps the content in force: the reason is logged at `warn` (once per distinct bad
//! content) and kept in [`FileStatus::last_error`] for health reporting. Reasons never contain
//! a token: the parsers name lines and columns, not values.
//!
//! A [`Reloader`] task checks a set of files every interval ([`DEFAULT_INTERVAL`]) and acts on
//! a change only when two checks in a row see it ([`Reload::check_settled`]), so that a file
//! caught while an editor rewrites it in place is never applied; dropping it stops the task. It uses `tokio::time`, so a paused test clock drives it.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use zeroize::Zeroizing;

use super::AuthnError;
use crate::crypto::sha256;

/// How often a [`Reloader`] checks its files by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Largest file read (token files with thousands of entries fit).
pub const MAX_FILE_SIZE: u64 = 4 << 20;

/// Who may be able to read or change a watched file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAccess {
    /// It holds secrets (tokens): not readable or writable by group or others (mode 0600 or
    /// stricter), as keyward requires of every key and token file.
    Private,
    /// It grants identities (a users map): readable by anyone, but not writable by group or
    /// others, since whoever can write it chooses who is `system:masters`.
    NotWritableByOthers,
}

/// Reads `path` within `access`'s rules; the error names the file, never its content.
pub fn read_file(path: &Path, access: FileAccess) -> Result<Zeroizing<Vec<u8>>, String> {
    if access == FileAccess::Private {
        return crate::seal::read_private_file(path, MAX_FILE_SIZE).map_err(|e| e.to_string());
    }
    let shown = path.display();
    let file = fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{shown} has mode {mode:04o}: it must not be writable by group or others; run chmod go-w {shown}"
        ));
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(format!("{shown}: larger than {MAX_FILE_SIZE} bytes"));
    }
    let mut data = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    Ok(data)
}

/// What a watched file's checks have done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStatus {
    /// The file.
    pub path: PathBuf,
    /// Checks completed.
    pub checks: u64,
    /// New contents applied after the first load.
    pub reloads: u64,
    /// Checks that found a changed file and could not apply it.
    pub failures: u64,
    /// When content was last applied (the first load included).
    pub last_reload: Option<SystemTime>,
    /// Why the file on disk is not in force, if the last check failed; `None` once a check
    /// applies it or finds the content in force again.
    pub last_error: Option<String>,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The content is the one in force.
    Unchanged,
    /// New content was parsed and is now in force.
    Applied,
    /// The file changed but cannot be read or parsed; the content in force is kept.
    Failed {
        /// Why (never a token).
        error: String,
    },
}

type Parser<T> = Box<dyn Fn(&[u8]) -> Result<T, String> + Send + Sync>;

struct State {
    /// SHA-256 of the content in force.
    hash: [u8; 32],
    /// The last failure (content hash if read, message), to log each bad content once.
    failed: Option<(Option<[u8; 32]>, String)>,
    /// What the last settled check saw when it differed from the content in force (the
    /// content's hash, or the read error's): a change is acted on by [`Reload::check_settled`]
    /// only when two checks in a row see it, so a file caught half written is never applied.
    seen: Option<[u8; 32]>,
    /// Whether the content in force lists any entry ([`Entries`]).
    has_entries: bool,
    status: FileStatus,
}

/// What a watched file lists (tokens, users): a reload that would take a file that listed
/// entries to none is refused, as what a failed `generate > file` leaves. Judged on the parsed
/// content, so each format says what a comment is (a token file in kube-apiserver's CSV has
/// none: a line starting with `#` is a token).
pub trait Entries {
    /// Whether the content lists no entry.
    fn lists_nothing(&self) -> bool;
}

/// A parsed file kept in force and reloaded on change.
pub struct WatchedFile<T> {
    path: PathBuf,
    access: FileAccess,
    what: &'static str,
    parse: Parser<T>,
    current: ArcSwap<T>,
    state: Mutex<State>,
}

impl<T> std::fmt::Debug for WatchedFile<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedFile")
            .field("what", &self.what)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<T: Entries + Send + Sync + 'static> WatchedFile<T> {
    /// Reads and parses `path` (a `what`, e.g. "token file", for log lines); fails if the
    /// first content cannot be read or parsed.
    pub fn load<F>(
        path: impl Into<PathBuf>,
        access: FileAccess,
        what: &'static str,
        parse: F,
    ) -> Result<Self, AuthnError>
    where
        F: Fn(&[u8]) -> Result<T, String> + Send + Sync + 'static,
    {
        let path = path.into();
        let file_err = |reason: String| AuthnError::File {
            path: path.display().to_string(),
            reason,
        };
        let bytes = read_file(&path, access).map_err(file_err)?;
        let value = parse(&bytes).map_err(file_err)?;
        let status = FileStatus {
            path: path.clone(),
            last_reload: Some(SystemTime::now()),
            ..FileStatus::default()
        };
        Ok(Self {
            state: Mutex::new(State {
                hash: sha256(&bytes),
                failed: None,
                seen: None,
                has_entries: !value.lists_nothing(),
                status,
            }),
            path,
            access,
            what,
            parse: Box::new(parse),
            current: ArcSwap::from_pointee(value),
        })
    }

    /// The content in force.
    pub fn current(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A file a [`Reloader`] can check; every [`WatchedFile`] is one.
pub trait Reload: Send + Sync {
    /// Reads the file and applies it if it changed and is valid (blocking I/O).
    fn check_now(&self) -> ReloadOutcome;
    /// As [`Reload::check_now`], but a change is acted on only when the previous settled
    /// check saw the same change (what a [`Reloader`] calls): a file being rewritten in place
    /// may be caught truncated or half written once, and that is not applied or reported.
    fn check_settled(&self) -> ReloadOutcome;
    /// What the checks have done so far.
    fn status(&self) -> FileStatus;
}

impl<T: Entries + Send + Sync + 'static> WatchedFile<T> {
    fn check(&self, settle: bool) -> ReloadOutcome {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.status.checks += 1;
        let read = read_file(&self.path, self.access);
        let hash = read.as_ref().ok().map(|b| sha256(b));
        if hash == Some(state.hash) {
            if state.failed.is_some() {
                tracing::info!(path = %self.path.display(), what = self.what, "the file on disk is the content in force again");
            }
            state.failed = None;
            state.seen = None;
            state.status.last_error = None;
            return ReloadOutcome::Unchanged;
        }
        if settle {
            let key = match &read {
                Ok(_) => hash.unwrap_or_default(),
                Err(e) => sha256(e.as_bytes()),
            };
            if state.seen != Some(key) {
                state.seen = Some(key);
                return ReloadOutcome::Unchanged;
            }
        }
        state.seen = None;
        // A file emptied (what a failed `generate > file` leaves) would lock out every caller
        // it listed: kept out, like a file that does not parse.
        let in_force_has_entries = state.has_entries;
        let result = read
            .and_then(|bytes| (self.parse)(&bytes))
            .and_then(|value| {
                if in_force_has_entries && value.lists_nothing() {
                    return Err(format!(
                        "{} has no entries: it would remove every entry, so the content in force \
                     is kept (to start with an empty file, restart the server)",
                        self.path.display()
                    ));
                }
                Ok(value)
            });
        match result {
            Ok(value) => {
                state.has_entries = !value.lists_nothing();
                self.current.store(Arc::new(value));
                state.hash = hash.unwrap_or_default();
                state.failed = None;
                state.status.reloads += 1;
                state.status.last_reload = Some(SystemTime::now());
                state.status.last_error = None;
                tracing::info!(path = %self.path.display(), what = self.what, "reloaded");
                ReloadOutcome::Applied
            }
            Err(error) => {
                let repeat = state
                    .failed
                    .as_ref()
                    .is_some_and(|(h, e)| *h == hash && *e == error);
                if !repeat {
                    state.status.failures += 1;
                    tracing::error!(path = %self.path.display(), what = self.what, %error, "not reloaded; keeping the content in force");
                    state.failed = Some((hash, error.clone()));
                }
                state.status.last_error = Some(error.clone());
                ReloadOutcome::Failed { error }
            }
        }
    }
}

impl<T: Entries + Send + Sync + 'static> Reload for WatchedFile<T> {
    fn check_now(&self) -> ReloadOutcome {
        self.check(false)
    }

    fn check_settled(&self) -> ReloadOutcome {
        self.check(true)
    }

    fn status(&self) -> FileStatus {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status
            .clone()
    }
}

/// A task checking files every interval. Dropping it stops the task.
#[derive(Debug)]
pub struct Reloader {
    task: JoinHandle<()>,
}

impl Reloader {
    /// Checks every file of `files` every `interval` (the first check one interval from now),
    /// off the async threads. Must run in a tokio runtime.
    pub fn spawn(files: Vec<Arc<dyn Reload>>, interval: Duration) -> Self {
        let period = interval.max(Duration::from_millis(1));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let files = files.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for f in &files {
                        f.check_settled();
                    }
                })
                .await;
            }
        });
        Self { task }
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, text: &str, mode: u32) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    impl Entries for Vec<u32> {
        fn lists_nothing(&self) -> bool {
            self.is_empty()
        }
    }

    fn numbers(b: &[u8]) -> Result<Vec<u32>, String> {
        std::str::from_utf8(b)
            .map_err(|_| "not UTF-8".to_string())?
            .split_whitespace()
            .enumerate()
            .map(|(i, w)| {
                w.parse()
                    .map_err(|_| format!("word {}: not a number", i + 1))
            })
            .collect()
    }

    #[test]
    fn reload_applies_valid_changes_and_keeps_the_old_content_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write(&p, "1 2", 0o600);
        let w = WatchedFile::load(&p, FileAccess::Private, "numbers", numbers).unwrap();
        assert_eq!(*w.current(), [1, 2]);
        assert_eq!(w.check_now(), ReloadOutcome::Unchanged);

        write(&p, "1 2 3", 0o600);
        assert_eq!(w.check_now(), ReloadOutcome::Applied);
        assert_eq!(*w.current(), [1, 2, 3]);

        write(&p, "1 x", 0o600);
        let bad = ReloadOutcome::Failed {
            error: "word 2: not a number".into(),
        };
        assert_eq!(w.check_now(), bad);
        assert_eq!(w.check_now(), bad, "still failing, logged once");
        assert_eq!(*w.current(), [1, 2, 3], "the old content stays");
        let s = w.status();
        assert_eq!((s.checks, s.reloads, s.failures), (4, 1, 1));
        assert_eq!(s.last_error.as_deref(), Some("word 2: not a number"));

        // A private file that became readable by others is refused, and so is a missing one.
        write(&p, "4", 0o644);
        match w.check_now() {
            ReloadOutcome::Failed { error } => assert!(error.contains("0644"), "{error}"),
            o => panic!("{o:?}"),
        }
        fs::remove_file(&p).unwrap();
        assert!(matches!(w.check_now(), ReloadOutcome::Failed { .. }));
        assert_eq!(*w.current(), [1, 2, 3]);

        // Back to the content in force: healthy again.
        write(&p, "1 2 3", 0o600);
        assert_eq!(w.check_now(), ReloadOutcome::Unchanged);
        assert_eq!(w.status().last_error, None);
    }

    #[test]
    fn an_emptied_file_is_kept_out_but_an_empty_one_may_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write(&p, "1 2", 0o600);
        let w = WatchedFile::load(&p, FileAccess::Private, "numbers", numbers).unwrap();
        for emptied in ["", "\n  \n"] {
            write(&p, emptied, 0o600);
            match w.check_now() {
                ReloadOutcome::Failed { error } => {
                    assert!(
                        error.contains("has no entries: it would remove every entry"),
                        "{error}"
                    )
                }
                o => panic!("{emptied:?}: {o:?}"),
            }
            assert_eq!(*w.current(), [1, 2]);
            assert!(w.status().last_error.is_some());
        }
        write(&p, "3", 0o600);
        assert_eq!(w.check_now(), ReloadOutcome::Applied);
        // Started empty, it may stay empty and then get entries.
        write(&p, "", 0o600);
        let w = WatchedFile::load(&p, FileAccess::Private, "numbers", numbers).unwrap();
        write(&p, "\n", 0o600);
        assert_eq!(w.check_now(), ReloadOutcome::Applied);
        write(&p, "4", 0o600);
        assert_eq!(w.check_now(), ReloadOutcome::Applied);
        assert_eq!(*w.current(), [4]);
    }

    #[test]
    fn first_load_errors_name_the_file_and_access_rules_hold() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write(&p, "x", 0o600);
        let e = WatchedFile::load(&p, FileAccess::Private, "numbers", numbers).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: word 1: not a number", p.display())
        );
        write(&p, "1", 0o644);
        assert!(WatchedFile::load(&p, FileAccess::Private, "numbers", numbers).is_err());
        assert!(WatchedFile::load(&p, FileAccess::NotWritableByOthers, "n", numbers).is_ok());
        write(&p, "1", 0o664);
        let e = WatchedFile::load(&p, FileAccess::NotWritableByOthers, "n", numbers).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
    }

    #[test]
    fn a_settled_check_acts_only_on_what_two_checks_saw() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write(&p, "1 2", 0o600);
        let w = WatchedFile::load(&p, FileAccess::Private, "numbers", numbers).unwrap();
        // Caught truncated, then whole: the empty content is never in force.
        write(&p, "", 0o600);
        assert_eq!(w.check_settled(), ReloadOutcome::Unchanged);
        write(&p, "1 2 3", 0o600);
        assert_eq!(w.check_settled(), ReloadOutcome::Unchanged);
        assert_eq!(*w.current(), [1, 2]);
        assert_eq!(w.check_settled(), ReloadOutcome::Applied);
        assert_eq!(*w.current(), [1, 2, 3]);
        // A bad change is reported at the second check that sees it.
        write(&p, "x", 0o600);
        assert_eq!(w.check_settled(), ReloadOutcome::Unchanged);
        assert!(w.status().last_error.is_none());
        assert!(matches!(w.check_settled(), ReloadOutcome::Failed { .. }));
        assert_eq!(*w.current(), [1, 2, 3]);
        // A missing file likewise.
        fs::remove_file(&p).unwrap();
        assert_eq!(w.check_settled(), ReloadOutcome::Unchanged);
        assert!(matches!(w.check_settled(), ReloadOutcome::Failed { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn the_reloader_checks_every_interval_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write(&p, "1", 0o600);
        let w = Arc::new(WatchedFile::load(&p, FileAccess::Private, "numbers", numbers).unwrap());
        let r = Reloader::spawn(vec![w.clone()], Duration::from_secs(5));
        write(&p, "2", 0o600);
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if *w.current() == [2] {
                break;
            }
        }
        assert_eq!(*w.current(), [2]);
        drop(r);
        write(&p, "3", 0o600);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(*w.current(), [2], "no checks after drop");
    }
}
