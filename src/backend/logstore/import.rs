//! Writing a new store from versions copied out of another one (`keyward store convert`).
//!
//! The copied versions are written as the cleaner writes what it relocates: relocation records
//! of a victim segment, here segment 1, which never existed. Opening installs them with their
//! revisions, create revisions and versions, rebuilds the change log's window from them and
//! applies the retention rules (which set every key's read floor), exactly as after a real
//! relocation; the writer's first batch then starts at the revision after `through`. A
//! relocation record may carry any revisions, where a batch needs consecutive ones, so a store
//! whose history has gaps below its window is copied as faithfully as one without.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::{self, Moved, RecordBuilder, HEADER_LEN};
use super::writer::{io_error, mark_newest};
use super::LogOptions;
use crate::backend::files::sync_path;
use crate::backend::{check_key, BackendError, KeyValue, Revision};

/// A relocation record is closed once it holds this many bytes (the cleaner's chunks are of
/// the same order), so that opening never reads one huge record.
const RECORD_BYTES: usize = 1 << 20;

/// The segment the imported versions claim to be relocated from.
const VICTIM: u32 = 1;

/// Writes versions into a new log-structured store directory; [`Import::finish`] makes it
/// whole and durable (before that, opening the directory would ignore every record).
pub struct Import {
    dir: PathBuf,
    segment_bytes: u64,
    builder: RecordBuilder,
    /// Whether `builder` holds a started relocation record.
    started: bool,
    through: i64,
    compacted: i64,
    seq: u32,
    /// The segment being written, and the bytes it holds.
    segment: Option<(File, u64)>,
    versions: u64,
}

impl std::fmt::Debug for Import {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Import")
            .field("dir", &self.dir)
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl Import {
    /// Starts a store in `dir`, which must not exist or be empty, whose current revision will
    /// be `through` and compacted revision `compacted`.
    pub fn create(
        dir: &Path,
        through: Revision,
        compacted: Revision,
    ) -> Result<Import, BackendError> {
        if compacted > through {
            return Err(BackendError::InvalidArgument(format!(
                "the compacted revision {compacted} is beyond the current revision {through}"
            )));
        }
        let empty = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(BackendError::Io(format!(
                    "cannot list {}: {e}",
                    dir.display()
                )))
            }
        };
        if !empty {
            return Err(BackendError::InvalidArgument(format!(
                "{} is not empty: a store is imported into a new directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| BackendError::Io(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Import {
            dir: dir.to_path_buf(),
            segment_bytes: LogOptions::default().segment_bytes,
            builder: RecordBuilder::default(),
            started: false,
            through: through.get(),
            compacted: compacted.get(),
            seq: VICTIM,
            segment: None,
            versions: 0,
        })
    }

    /// Adds one version: a put (`version` from 1, with its create revision) or a delete
    /// (`version` 0, as a delete event carries it), at or below the store's revision.
    pub fn version(&mut self, kv: &KeyValue) -> Result<(), BackendError> {
        self.entry(kv, 0)
    }

    /// Adds `kv` (again) as the key's read floor: reads of the key below its revision fail with
    /// [`BackendError::Compacted`], as they did in the source. Opening keeps the copy added
    /// last; the store's own retention rules may raise the floor further.
    pub fn floor_at(&mut self, kv: &KeyValue) -> Result<(), BackendError> {
        self.entry(kv, kv.mod_revision.get())
    }

    fn entry(&mut self, kv: &KeyValue, floor: i64) -> Result<(), BackendError> {
        check_key(&kv.key)?;
        let rev = kv.mod_revision.get();
        if rev > self.through {
            return Err(BackendError::InvalidArgument(format!(
                "a version at revision {rev} is beyond the current revision {}",
                self.through
            )));
        }
        let meta = match (kv.version, kv.create_revision) {
            (0, None) => Moved {
                rev,
                create: 0,
                version: 0,
            },
            (version, Some(create)) if version > 0 && create.get() <= rev => Moved {
                rev,
                create: create.get(),
                version,
            },
            _ => {
                return Err(BackendError::InvalidArgument(format!(
                    "the version at revision {rev} has version {} and create revision {:?}: a put has a version from 1 and a create revision at or below its own, a delete neither",
                    kv.version,
                    kv.create_revision.map(Revision::get)
                )))
            }
        };
        if !self.started {
            self.builder
                .begin_relocation(VICTIM, self.through, self.compacted);
            self.started = true;
        }
        self.builder.moved(&kv.key, floor, meta, &kv.value);
        self.versions += 1;
        if self.builder.len() >= RECORD_BYTES {
            self.write_record(false)?;
        }
        Ok(())
    }

    /// Versions added so far.
    pub fn versions(&self) -> u64 {
        self.versions
    }

    /// Writes the last record (the one that says the relocation is complete) and makes every
    /// segment and the directory durable.
    pub fn finish(mut self) -> Result<(), BackendError> {
        if !self.started {
            self.builder
                .begin_relocation(VICTIM, self.through, self.compacted);
            self.started = true;
        }
        self.write_record(true)?;
        if let Some((file, _)) = self.segment.take() {
            file.sync_data()
                .map_err(|e| io_error("fdatasync an imported segment", &e))?;
        }
        sync_path(&self.dir)?;
        mark_newest(&self.dir, self.seq)
    }

    /// Appends the started record to the current segment, or to a new one when it would not
    /// fit (a record larger than a segment gets one of its own).
    fn write_record(&mut self, complete: bool) -> Result<(), BackendError> {
        self.started = false;
        let len = self.builder.len() as u64;
        let fits = matches!(&self.segment, Some((_, used)) if *used + len <= self.segment_bytes || *used == HEADER_LEN);
        if !fits {
            if let Some((file, _)) = self.segment.take() {
                file.sync_data()
                    .map_err(|e| io_error("fdatasync an imported segment", &e))?;
            }
            self.seq += 1;
            let path = self.dir.join(format::segment_name(self.seq));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| BackendError::Io(format!("cannot create {}: {e}", path.display())))?;
            file.write_all(&format::header(self.seq))
                .map_err(|e| io_error("write a segment header", &e))?;
            self.segment = Some((file, HEADER_LEN));
        }
        let Some((file, used)) = self.segment.as_mut() else {
            return Err(BackendError::Io("no segment to write to".to_string()));
        };
        // Appended to a file that ends where its data does: no zero length needed after it.
        let record = self.builder.finish_relocation(complete, self.seq);
        file.write_all(record.record())
            .map_err(|e| io_error("write an imported record", &e))?;
        *used += len;
        Ok(())
    }
}
