//! Readers of on-disk formats that earlier keyward releases wrote outside the storage seam
//! ([`Backend`](super::Backend)), so that newer code can convert them. Nothing here writes
//! those formats.
//!
//! keyward 0.1.0 kept its keyring in a plain sled 0.34 database: a few keys in the default tree,
//! no revisions. [`read_sled_default_tree`] reads such a database as key/value pairs; what the
//! pairs mean is the caller's business.

use std::path::Path;
use std::time::{Duration, Instant};

use super::BackendError;

/// Key/value pairs in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// How long opening waits for a handle dropped in this process to release the database.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// The key/value pairs of the default tree of the plain sled database in `dir`, in key order,
/// or `None` if `dir` holds no sled database (no `db` file; nothing is created then).
///
/// sled holds an exclusive lock on an open database, and a handle dropped in this process
/// releases it from a background thread a moment later, so a lock conflict is retried for a
/// few seconds before it is returned (see [`BackendError::is_locked`]).
pub fn read_sled_default_tree(dir: &Path) -> Result<Option<Pairs>, BackendError> {
    if !dir.join("db").is_file() {
        return Ok(None);
    }
    let deadline = Instant::now() + LOCK_WAIT;
    let db = loop {
        match ::sled::Config::new().path(dir).open().map_err(to_backend) {
            Ok(db) => break db,
            Err(e) if e.is_locked() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    };
    let pairs = db
        .iter()
        .map(|kv| {
            kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(to_backend)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(pairs))
}

fn to_backend(e: ::sled::Error) -> BackendError {
    match e {
        ::sled::Error::Corruption { .. } => BackendError::Corrupt(e.to_string()),
        other => BackendError::Io(other.to_string()),
    }
}

/// Writes `pairs` into the default tree of a plain sled database in `dir`, as keyward 0.1.0
/// did: for tests of conversions only.
#[cfg(test)]
pub(crate) fn write_sled_default_tree(dir: &Path, pairs: &[(&[u8], &[u8])]) {
    let db = ::sled::open(dir).expect("open a test database");
    for (k, v) in pairs {
        db.insert(k, *v).expect("insert");
    }
    db.flush().expect("flush");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pairs_and_creates_nothing_where_there_is_no_database() {
        let tmp = tempfile::tempdir().unwrap();
        let none = tmp.path().join("none");
        assert_eq!(read_sled_default_tree(&none).unwrap(), None);
        assert!(!none.exists(), "nothing was created");

        let dir = tmp.path().join("db");
        {
            let db = ::sled::open(&dir).unwrap();
            db.insert(b"b", b"2").unwrap();
            db.insert(b"a", b"1").unwrap();
            db.open_tree("other").unwrap().insert(b"c", b"3").unwrap();
            db.flush().unwrap();
        }
        assert_eq!(
            read_sled_default_tree(&dir).unwrap(),
            Some(vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ])
        );
    }
}
