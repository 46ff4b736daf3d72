//! What sled leaves undone for its files: `fsync` of the data file, of new blob files and of
//! changed directories after each flush, and waiting until sled has released its lock on the
//! directory.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{io_error, sled_error};
use crate::backend::BackendError;

/// Waits, when the backend is gone, until sled has released the directory.
///
/// sled's background threads hold its files (and the `flock` on `db`) for a moment after the
/// last handle is dropped; waiting here (bounded) means the store can be reopened as soon as
/// the backend has been dropped.
pub(super) struct ReleaseWait {
    pub(super) db_path: PathBuf,
}

impl Drop for ReleaseWait {
    fn drop(&mut self) {
        wait_until_unlocked(&self.db_path, RELEASE_WAIT);
    }
}

/// How long opening waits for sled's lock on the directory, and dropping for its release.
pub(super) const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Waits (at most `timeout`) until nobody holds sled's `flock` on `db_path`. sled's background
/// threads keep the file open for a moment after a database is dropped, so a store closed in
/// this process could not otherwise be reopened right away.
pub(super) fn wait_until_unlocked(db_path: &Path, timeout: Duration) {
    let Ok(file) = File::open(db_path) else {
        // Not created yet (or unreadable: sled will report it).
        return;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = rustix::fs::flock(&file, rustix::fs::FlockOperation::Unlock);
                return;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => return,
        }
    }
}

/// Makes sled's files durable beyond what `sled::Db::flush` does.
pub(super) struct FileSync {
    dir: PathBuf,
    /// sled's data file, kept open for `fsync`.
    db_file: File,
    /// Entries of `dir` at the last directory sync.
    dir_names: HashSet<OsString>,
    /// Blob files already synced.
    blobs: HashSet<OsString>,
}

impl FileSync {
    pub(super) fn new(dir: &Path) -> Result<Self, BackendError> {
        let db_file = File::open(dir.join("db")).map_err(|e| io_error("open the db file", &e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            db_file,
            dir_names: HashSet::new(),
            blobs: HashSet::new(),
        })
    }

    /// Flushes sled and `fsync`s what it leaves unsynced: new blob files (first, so that no
    /// durable log entry points at a lost blob), the data file, and changed directories.
    pub(super) fn make_durable(&mut self, db: &::sled::Db) -> Result<(), BackendError> {
        self.sync_blobs()?;
        db.flush().map_err(sled_error)?;
        self.db_file
            .sync_all()
            .map_err(|e| io_error("fsync the db file", &e))?;
        let names = list_dir(&self.dir)?;
        if names != self.dir_names {
            for name in names.difference(&self.dir_names) {
                // `conf` is written once at creation; `snap.*` files sled syncs itself.
                if name == "conf" {
                    sync_file(&self.dir.join(name))?;
                }
            }
            sync_file(&self.dir)?;
            self.dir_names = names;
        }
        Ok(())
    }

    fn sync_blobs(&mut self) -> Result<(), BackendError> {
        let blob_dir = self.dir.join("blobs");
        if !blob_dir.exists() {
            return Ok(());
        }
        let names = list_dir(&blob_dir)?;
        let mut synced_any = false;
        for name in names.difference(&self.blobs) {
            match File::open(blob_dir.join(name)) {
                Ok(file) => file
                    .sync_all()
                    .map_err(|e| io_error("fsync a blob file", &e))?,
                // sled removed it meanwhile (garbage collection).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("open a blob file", &e)),
            }
            synced_any = true;
        }
        if synced_any || names.len() != self.blobs.len() {
            sync_file(&blob_dir)?;
        }
        self.blobs = names;
        Ok(())
    }
}

fn list_dir(dir: &Path) -> Result<HashSet<OsString>, BackendError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("list the store directory", &e))?;
    let mut names = HashSet::new();
    for entry in entries {
        names.insert(
            entry
                .map_err(|e| io_error("list the store directory", &e))?
                .file_name(),
        );
    }
    Ok(names)
}

fn sync_file(path: &Path) -> Result<(), BackendError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(&format!("fsync {}", path.display()), &e))
}
