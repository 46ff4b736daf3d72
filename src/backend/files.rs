//! File helpers the embedded engines share: zero-filled segment files and `fsync` of a path.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::BackendError;

fn io_error(what: &str, e: &std::io::Error) -> BackendError {
    BackendError::Io(format!("cannot {what}: {e}"))
}

/// A new file of `bytes` zero bytes, written and `fsync`ed: writes over written blocks let
/// `fdatasync` skip the file system's metadata journal, where appends to a growing or
/// preallocated file would not.
pub(crate) fn zero_filled(path: &Path, bytes: u64) -> Result<File, BackendError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| io_error("create a log segment", &e))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])
            .map_err(|e| io_error("fill a log segment", &e))?;
        left -= n as u64;
    }
    file.sync_all()
        .map_err(|e| io_error("fsync a log segment", &e))?;
    Ok(file)
}

/// `fsync` of a file or directory by path.
pub(crate) fn sync_path(path: &Path) -> Result<(), BackendError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(&format!("fsync {}", path.display()), &e))
}
