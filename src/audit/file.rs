//! One open log file and the chain state across files: appending events and checkpoints
//! durably, rotation by size, and recovery when an existing file is reopened. Blocking I/O:
//! the writer task calls it from `spawn_blocking` when it syncs, callers directly (a write to
//! the page cache) when it does not.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::chain::{
    line_hash, parse_line, render_lost_line, Checkpoint, CheckpointKind, CheckpointSigner,
    CHAIN_ANNOTATION, GENESIS, SEQ_ANNOTATION,
};
#[cfg(test)]
use super::event::Event;
use super::event::MicroTime;
use super::journal::{journal_key, journal_path, Journal, Record, Target};
use super::writer::LogConfig;
use super::AuditError;
#[cfg(test)]
pub(crate) use lines::EventLine;
pub(crate) use lines::EventLines;

/// The longest first line read when reopening a file (a header checkpoint is well under 1 KiB).
const MAX_HEADER: u64 = 64 * 1024;

/// More than any checkpoint line but an `open` one (about 900 bytes; a test checks the bound
/// with the longest numbers): a file with more room than this left needs no exact length.
const CHECKPOINT_LEN_BOUND: u64 = 2048;

/// Where the chain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// Bytes in the current file.
    size: u64,
    /// The current file's index in the log.
    file_index: u64,
    /// Sequence number of the current file's line 1.
    first_seq: u64,
    /// Sequence number the next line gets.
    next_seq: u64,
    /// Hash of the last line.
    head: [u8; 32],
    /// Event lines since the last checkpoint.
    since_checkpoint: u64,
}

/// Totals since the log was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct FileStats {
    pub checkpoints: u64,
    pub rotations: u64,
}

/// The open log.
pub(super) struct LogFile {
    path: PathBuf,
    max_size: u64,
    max_backups: usize,
    max_age: Option<Duration>,
    fsync: bool,
    /// The log is only ever signed by this writer's key ([`LogConfig::single_key`]).
    single_key: bool,
    checkpoint_every: u64,
    signer: Arc<dyn CheckpointSigner>,
    file: File,
    log_id: String,
    /// What is durable in the file.
    durable: State,
    /// Including `pending`.
    cur: State,
    pending: Vec<u8>,
    pending_checkpoints: u64,
    /// The end of the next event line (`chain_suffix`), kept between lines.
    suffix: Vec<u8>,
    /// A failed write may have left bytes after `durable.size` that could not be cut yet.
    dirty: bool,
    stats: FileStats,
    /// When the log syncs: where batches are made durable (see `journal.rs`).
    journal: Option<Journal>,
    /// Events not written whose requests went on ([`LogFile::note_lost`]), and the last reason:
    /// recorded by a `lost` line at the end of the next write.
    lost: u64,
    lost_reason: String,
    /// How many of `lost` the `lost` line in `pending` records.
    lost_pending: u64,
    /// When the open file was last found to still be the log ([`LogFile::check_file`]).
    checked: Option<std::time::Instant>,
    /// Whether [`LogFile::check_file`] looks (tests that write to a stand-in file do not).
    at_path: bool,
}

/// How often a log that does not sync checks that its open file is still the log (one that
/// syncs checks before every write).
const CHECK_EVERY: Duration = Duration::from_millis(50);

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `O_NOFOLLOW`: the log's files are never opened through a symbolic link, which whoever may
/// write to the log's directory could point at any file the server may write.
pub(super) const NO_FOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

fn create_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(NO_FOLLOW)
        .open(path)?;
    lock(&file)?;
    Ok(file)
}

/// Takes the file's exclusive lock, so that a second writer (another process on the same log)
/// is refused instead of breaking the chain. Released when the file is closed.
fn lock(file: &File) -> io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(io::Error::from)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(parent(path)).and_then(|d| d.sync_all())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl LogFile {
    /// Opens the log at `config.path`: creates it (0600, in a 0700 directory created if missing)
    /// with its `open` checkpoint, or continues an existing file after a `resume` checkpoint.
    pub fn open(config: &LogConfig, signer: Arc<dyn CheckpointSigner>) -> Result<Self, AuditError> {
        let existed = config.path.exists();
        let journal = journal_path(&config.path);
        let journal_existed = journal.exists();
        let opened = Self::open_or_create(config, signer);
        if opened.is_err() {
            // Not left behind empty or half written (a full disk refuses the start), nor the
            // journal made for it (also when the file that was there is refused, such as one
            // that is not an audit log): the next start creates them again.
            if !existed {
                let _ = fs::remove_file(&config.path);
            }
            if !journal_existed {
                let _ = fs::remove_file(&journal);
            }
        }
        opened
    }

    fn open_or_create(
        config: &LogConfig,
        signer: Arc<dyn CheckpointSigner>,
    ) -> Result<Self, AuditError> {
        let path = config.path.clone();
        let dir = parent(&path);
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(NO_FOLLOW)
            .open(&path)
            .map_err(io_err(&path))?;
        lock(&file).map_err(|e| AuditError::Recover {
            path: path.clone(),
            message: format!("another process is writing it ({e})"),
        })?;
        let meta = file.metadata().map_err(io_err(&path))?;
        if !meta.is_file() {
            // Rotation renames the log and creates a new one in its place: never a device's.
            return Err(AuditError::Recover {
                path: path.clone(),
                message: "not a regular file: the log is rotated by renaming it and creating another in its place; give the path of a file (to record nothing, leave out --audit-log-path)".into(),
            });
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the audit log file is readable or writable by other users; keyward creates it 0600");
        }
        let empty = State {
            size: 0,
            file_index: 0,
            first_seq: 1,
            next_seq: 1,
            head: GENESIS,
            since_checkpoint: 0,
        };
        // A log that does not sync still takes back what a journal left by a run that did.
        let journal_file = journal_path(&path);
        let (journal, records) = if config.fsync || journal_file.exists() {
            let key = journal_key(&*signer)?;
            let (journal, records) = Journal::open(&path, key).map_err(io_err(&journal_file))?;
            (config.fsync.then_some(journal), records)
        } else {
            (None, Vec::new())
        };
        let mut log = LogFile {
            path,
            max_size: config.max_size,
            max_backups: config.max_backups,
            max_age: config.max_age,
            fsync: config.fsync,
            single_key: config.single_key,
            checkpoint_every: config.checkpoint_every.max(1),
            signer,
            file,
            log_id: uuid::Uuid::new_v4().to_string(),
            durable: empty,
            cur: empty,
            pending: Vec::new(),
            pending_checkpoints: 0,
            suffix: Vec::new(),
            dirty: false,
            stats: FileStats::default(),
            journal,
            lost: 0,
            lost_reason: String::new(),
            lost_pending: 0,
            checked: None,
            at_path: true,
        };
        let restored = match meta.len() {
            0 => log.restore_empty_file(&records)?,
            len => len,
        };
        if restored == 0 {
            log.push_checkpoint(CheckpointKind::Open, None)?;
            log.flush()?;
            log.seal()?;
            sync_dir(&log.path).map_err(io_err(&log.path))?;
        } else {
            log.recover(restored, records)?;
        }
        if !config.fsync && journal_file.exists() {
            fs::remove_file(&journal_file).map_err(io_err(&journal_file))?;
        }
        Ok(log)
    }

    /// Where this file's batches are journaled.
    fn target(&self, file_index: u64) -> Target {
        let mut log_id = [0u8; 16];
        log_id.copy_from_slice(&crate::crypto::sha256(self.log_id.as_bytes())[..16]);
        Target { log_id, file_index }
    }

    /// Makes everything written to the current file durable in the file itself (when the log
    /// syncs), and starts the journal again.
    fn seal(&mut self) -> Result<(), AuditError> {
        let target = self.target(self.durable.file_index);
        if let Some(journal) = &mut self.journal {
            self.file.sync_data().map_err(io_err(&self.path))?;
            journal
                .restart(target, self.durable.size, &self.durable.head)
                .map_err(io_err(&journal_path(&self.path)))?;
        }
        Ok(())
    }

    /// Puts the journal's records for the current file back into it (a crash may have lost
    /// acknowledged lines that only the journal holds), refuses a file whose journaled lines
    /// were changed, and makes the file durable. When the records are `authentic` (this
    /// writer's, by their mac) they also say where the acknowledged lines end: what lies
    /// beyond (a batch written but not yet synced when the writer stopped, or lines added
    /// since) is cut off. Returns the file's length afterwards.
    fn apply_journal(
        &mut self,
        mine: &[&Record],
        authentic: bool,
        len: u64,
    ) -> Result<u64, AuditError> {
        let (Some(first), Some(last)) = (mine.first(), mine.last()) else {
            return Ok(len);
        };
        let refuse = |message: String| {
            AuditError::Recover {
            path: self.path.clone(),
            message: format!("{message}; keep it as evidence (`keyward audit verify` reports what it can) and move it, with its rotated files, away to start a new log"),
        }
        };
        if authentic && first.offset > len {
            return Err(refuse(format!(
                "it is {len} bytes long, but the sync journal says its first {} bytes were made durable: lines were cut from it while the writer was stopped",
                first.offset
            )));
        }
        // The log is opened for appending, where `pwrite` appends; write through another handle.
        let out = OpenOptions::new()
            .write(true)
            .custom_flags(NO_FOLLOW)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        // What the file holds of each record: a crash loses a tail (past the end, or zeros
        // where the file system had not written the data); anything else that differs was
        // changed after it was written. Such a log is not continued: the writer's next
        // checkpoint would sign the changed lines where no later line's chain covers them yet.
        let mut lost = Vec::new();
        let mut edited = Vec::new();
        for r in mine {
            if authentic {
                // The head the mac vouches for is the hash of the record's last line (of the
                // line that ends where an anchor stands): lines changed in the journal and the
                // log alike, their links made to fit, do not hash to it.
                let last_line = match r.bytes.is_empty() {
                    true => self.line_before(r.offset)?,
                    false => last_line(&r.bytes).to_vec(),
                };
                if line_hash(&last_line) != r.head {
                    edited.push(r.end().saturating_sub(last_line.len() as u64 + 1));
                    continue;
                }
            }
            let on_disk = usize::try_from(len.saturating_sub(r.offset))
                .unwrap_or(usize::MAX)
                .min(r.bytes.len());
            let mut have = vec![0u8; on_disk];
            self.file
                .read_exact_at(&mut have, r.offset)
                .map_err(io_err(&self.path))?;
            if on_disk == r.bytes.len() && have == r.bytes {
                continue;
            }
            match have.iter().zip(&r.bytes).any(|(h, w)| h != w && *h != 0) {
                true => edited.push(r.offset),
                false => lost.push(r),
            }
        }
        if let Some(first) = edited.first() {
            return Err(refuse(format!(
                "{} of its last lines differ from what was written (the sync journal holds them as written; the first at byte offset {first}): it was changed after it was written, and continuing it would sign the change",
                edited.len()
            )));
        }
        let mut restored = 0u64;
        for r in lost {
            out.write_all_at(&r.bytes, r.offset)
                .map_err(io_err(&self.path))?;
            restored += r.bytes.len() as u64;
        }
        if restored > 0 {
            tracing::warn!(path = %self.path.display(), bytes = restored, "restored acknowledged audit lines from the sync journal (the machine stopped before the log reached the disk)");
        }
        let len = self.file.metadata().map_err(io_err(&self.path))?.len();
        let end = last.end();
        let len = if authentic && len > end {
            tracing::warn!(path = %self.path.display(), bytes = len - end, acknowledged_to = end, "cutting the audit log back to the last line the sync journal acknowledged: what follows is, by the journal, a batch whose sync a crash interrupted (its requests were never answered), lines added while the writer was stopped, or lines cut from the journal or an older copy of it put back (`keyward audit verify` then notes that lines may be missing)");
            out.set_len(end).map_err(io_err(&self.path))?;
            end
        } else {
            len
        };
        out.sync_all().map_err(io_err(&self.path))?;
        Ok(len)
    }

    /// The line (without its newline) that ends at `offset`, just before it.
    fn line_before(&self, offset: u64) -> Result<Vec<u8>, AuditError> {
        line_ending_at(&self.file, offset).map_err(io_err(&self.path))
    }

    /// For an empty (or new) active file: what the sync journal says it holds. Its authentic
    /// records of a file from its start (a file a rotation began, whose first lines a crash
    /// kept from the disk) are written back, and the file's new length returned; nothing is
    /// (0: a new log starts) when the journal holds no authentic record, or only the anchor at
    /// the end of a file a rotation sealed (a crash between the rename and the new file's first
    /// line). Otherwise the log was removed or emptied while the writer was stopped, and
    /// starting again would overwrite the journal, the only record of its lines: refused.
    fn restore_empty_file(&mut self, records: &[Record]) -> Result<u64, AuditError> {
        let Some(last) = records.iter().rev().find(|r| r.authentic) else {
            return Ok(0);
        };
        let only_anchors = records.iter().all(|r| r.bytes.is_empty());
        if only_anchors && self.a_rotated_file_ends_with(&last.head) {
            return Ok(0);
        }
        let file: Vec<&Record> = records.iter().filter(|r| r.target == last.target).collect();
        let whole = file
            .first()
            .is_some_and(|r| r.offset == 0 && !r.bytes.is_empty())
            && file.iter().all(|r| r.authentic);
        if whole {
            // In order and back to back: on this handle (opened to append) each write lands
            // where the previous ended, which is its offset.
            for r in &file {
                self.file
                    .write_all_at(&r.bytes, r.offset)
                    .map_err(io_err(&self.path))?;
            }
            self.file.sync_all().map_err(io_err(&self.path))?;
            tracing::warn!(path = %self.path.display(), bytes = last.end(), "restored the audit log's first lines from the sync journal (the machine stopped before the new file reached the disk)");
            return Ok(last.end());
        }
        Err(AuditError::Recover {
            path: self.path.clone(),
            message: format!(
                "it is missing or empty, but its sync journal ({}) holds acknowledged lines of file {} of a log, up to byte offset {}: the log was removed or emptied while the writer was stopped; keep the journal and any rotated files as evidence and move them away to start a new log",
                journal_path(&self.path).display(),
                last.target.file_index,
                last.end()
            ),
        })
    }

    /// Whether a rotated file of this log ends with the line whose hash is `head`.
    fn a_rotated_file_ends_with(&self, head: &[u8; 32]) -> bool {
        backups(&self.path).into_iter().any(|(_, path)| {
            let Ok(file) = File::open(&path) else {
                return false;
            };
            file.metadata()
                .and_then(|m| line_ending_at(&file, m.len()))
                .is_ok_and(|line| line_hash(&line) == *head)
        })
    }

    /// Continues an existing file: reads its header, puts back what the sync journal holds for
    /// it (cutting what the journal says was never acknowledged), reads its last line, drops
    /// an incomplete last line (a write cut by a crash, never acknowledged), finishes a
    /// rotation that a crash interrupted, and writes a `resume` checkpoint, which names the
    /// lines after the last checkpoint that nothing vouches for.
    fn recover(&mut self, len: u64, journaled: Vec<Record>) -> Result<(), AuditError> {
        let path = self.path.clone();
        let refuse = |message: String| AuditError::Recover {
            path: path.clone(),
            message: format!("{message}; move the file away to start a new log"),
        };
        let first_nl = find_newline(&self.file, 0, len.min(MAX_HEADER))
            .map_err(io_err(&self.path))?
            .ok_or_else(|| refuse("line 1 is incomplete".into()))?;
        let mut first = vec![0; first_nl as usize];
        self.file
            .read_exact_at(&mut first, 0)
            .map_err(io_err(&self.path))?;
        let opening = parse_line(&first).ok().and_then(|l| l.checkpoint);
        let header = opening
            .as_ref()
            .and_then(|(note, _)| Checkpoint::parse_note(note).ok())
            .filter(|c| c.kind == CheckpointKind::Open && c.line == 1)
            .ok_or_else(|| refuse("line 1 is not the header of a keyward audit log".into()))?;
        if let (true, Some((note, sig))) = (self.single_key, &opening) {
            let own = self.signer.public_key();
            if let Err(super::chain::SignatureError::UnknownKey(id)) =
                super::chain::check_signature(note, sig, std::slice::from_ref(&own))
            {
                return Err(refuse(format!(
                    "line 1 is signed by key {id}, not by this store's key {}: it is another store's log, or this store's backend (which holds its key) was replaced; keep it as evidence",
                    own.key_id()
                )));
            }
        }
        self.log_id = header.log.clone();
        let target = self.target(header.file);
        if let Some(later) = journaled
            .iter()
            .find(|r| r.target.log_id == target.log_id && r.target.file_index > target.file_index)
        {
            return Err(refuse(format!(
                "it is file {} of its log, but the sync journal holds lines of file {} of the same log, written after it: the newer file was removed or this older one put back in its place; keep the files as evidence",
                header.file, later.target.file_index
            )));
        }
        let mine: Vec<&Record> = journaled.iter().filter(|r| r.target == target).collect();
        let authentic = !mine.is_empty() && mine.iter().all(|r| r.authentic);
        if !authentic && mine.iter().any(|r| r.authentic) {
            // Written under one key in one run: some not checking out were changed.
            return Err(refuse(
                "some of the sync journal's records for it check out under the writer's key and some do not: the journal was changed while the writer was stopped; keep it and the log as evidence".into(),
            ));
        }
        let len = self.apply_journal(&mine, authentic, len)?;

        let last_nl = rfind_newline(&self.file, len)
            .map_err(io_err(&self.path))?
            .expect("line 1 ends with a newline");
        let good = last_nl + 1;
        if good < len {
            tracing::warn!(path = %self.path.display(), bytes = len - good, "dropping the incomplete last line of the audit log (a write cut short by a crash)");
            self.file.set_len(good).map_err(io_err(&self.path))?;
            self.file.sync_all().map_err(io_err(&self.path))?;
        }
        let last = self.line_before(good)?;
        let start = last_nl - last.len() as u64;
        let info = parse_line(&last)
            .map_err(|why| refuse(format!("its last line is not a keyward audit line ({why})")))?;
        self.log_id = header.log;
        self.durable = State {
            size: good,
            file_index: header.file,
            first_seq: header.seq,
            next_seq: info.seq + 1,
            head: line_hash(&last),
            since_checkpoint: 0,
        };
        self.cur = self.durable;
        // A checkpoint ends the file only where it was made for (a copy of another is an
        // event line here, as `audit verify` reports it) and, when it names this writer's key,
        // with its signature.
        let own = [self.signer.public_key()];
        let linked = match start {
            0 => info.chain == GENESIS,
            _ => line_hash(&self.line_before(start)?) == info.chain,
        };
        let last_kind = info.checkpoint.and_then(|(note, sig)| {
            let cp = Checkpoint::parse_note(&note).ok()?;
            let placed = linked
                && cp.log == self.log_id
                && cp.file == header.file
                && cp.seq == info.seq
                && cp.line == info.seq - header.seq + 1;
            let signed = !matches!(
                super::chain::check_signature(&note, &sig, &own),
                Err(super::chain::SignatureError::Invalid | super::chain::SignatureError::Malformed)
            );
            (placed && signed).then_some(cp.kind)
        });
        // Lines after the last checkpoint are vouched for by authentic journal records; without
        // them (a log that does not sync, a journal missing, changed or made under another
        // key) the resume checkpoint, which must sign the chain's head, says they are not.
        let mut unattested = None;
        if last_kind.is_none() && !authentic {
            let sealed = last_checkpoint_seq(&self.file, start)
                .map_err(io_err(&self.path))?
                .unwrap_or(header.seq);
            let why = match (&self.journal, mine.is_empty()) {
                (None, true) => "the log does not sync (--audit-log-sync never), so no journal holds them",
                (Some(_), true) => "the sync journal holds nothing for this file (it was removed, or the log was written without syncing)",
                (_, false) => "the sync journal's records for them were not made with this writer's key (a new signing key, or they were changed)",
            };
            tracing::warn!(path = %self.path.display(), first_seq = sealed + 1, last_seq = info.seq, "the audit log's lines after its last checkpoint cannot be vouched for: {why}; the resume checkpoint records them as unattested and `keyward audit verify` reports them");
            // (A last line whose own sequence number is off is `audit verify`'s to report.)
            unattested = Some((sealed + 1, info.seq.max(sealed + 1)));
        }
        if last_kind != Some(CheckpointKind::Shutdown) && last_kind != Some(CheckpointKind::Rotate)
        {
            // A crash, or a tail cut while the writer was stopped: `audit verify` reports the
            // lines after the last signed checkpoint before this.
            tracing::warn!(path = %self.path.display(), line_seq = info.seq, journaled = self.journal.is_some(), "the audit log does not end with a shutdown checkpoint: its writer stopped without closing it, or its tail was cut while it was stopped; continuing after a resume checkpoint (`keyward audit verify` reports the lines its last signed checkpoint before this does not cover)");
        }
        let sealed_for_rotation = last_kind == Some(CheckpointKind::Rotate);
        // A file sealed for rotation gets its successor first; either way the restart is
        // recorded (a cut back to a rotate checkpoint looks like a crash before the rename).
        if sealed_for_rotation {
            self.start_next_file(self.durable)?;
        }
        let mut resume = self.next_checkpoint(CheckpointKind::Resume, None);
        resume.unattested = unattested;
        self.push_signed(&resume)?;
        self.flush()
    }

    /// Event lines written since the last checkpoint.
    pub fn since_checkpoint(&self) -> u64 {
        self.cur.since_checkpoint
    }

    /// Checkpoints and rotations so far.
    pub fn stats(&self) -> FileStats {
        self.stats
    }

    /// Swaps the file written to (tests: `/dev/full` for a full disk); returns the one before.
    #[cfg(test)]
    pub fn replace_file(&mut self, file: File) -> File {
        self.at_path = false;
        std::mem::replace(&mut self.file, file)
    }

    /// Appends `events` in order: [`LogFile::append`] of their lines.
    #[cfg(test)]
    pub fn write_events(&mut self, events: Vec<Event>) -> Result<(), AuditError> {
        let mut lines = EventLines::default();
        events.iter().for_each(|e| lines.push(e));
        self.append(&lines)
    }

    /// Appends `lines` in order: [`LogFile::append`] of all of them.
    #[cfg(test)]
    pub fn write_lines(&mut self, lines: Vec<EventLine>) -> Result<(), AuditError> {
        let mut all = EventLines::default();
        lines.iter().for_each(|l| all.append(&l.0));
        self.append(&all)
    }

    /// Appends `lines` in order, each with the chain's annotations, with a checkpoint after
    /// every `checkpoint_every` events and a rotation when the file would outgrow `max_size`;
    /// all of it written (and synced, unless the log does not sync) when this returns `Ok`. On
    /// error, whatever was not yet written is cut from the file again.
    pub fn append(&mut self, lines: &EventLines) -> Result<(), AuditError> {
        self.clean()?;
        for (json, annotated) in lines.iter() {
            // `...,"annotations":{...}}`: the chain's pairs go before the last two braces;
            // without annotations, an object for them goes before the last brace.
            let (body, opener): (&[u8], &[u8]) = if annotated {
                (&json[..json.len() - 2], b",")
            } else {
                (&json[..json.len() - 1], b",\"annotations\":{")
            };
            self.chain_suffix();
            if self.needs_rotation(body.len() + opener.len() + self.suffix.len()) {
                self.rotate()?;
                self.chain_suffix();
            }
            let suffix = std::mem::take(&mut self.suffix);
            self.push_parts(&[body, opener, &suffix]);
            self.suffix = suffix;
            self.cur.since_checkpoint += 1;
            if self.cur.since_checkpoint >= self.checkpoint_every {
                self.push_checkpoint_or_rotate(CheckpointKind::Periodic)?;
            }
        }
        // After the lines: in batch mode they may include the `RequestReceived` of a request
        // whose `ResponseComplete` is among the events lost.
        self.push_lost()?;
        self.flush()
    }

    /// Writes a checkpoint of `kind` now (periodic, or shutdown), durably.
    pub fn checkpoint(&mut self, kind: CheckpointKind) -> Result<(), AuditError> {
        self.clean()?;
        self.push_lost()?;
        self.push_checkpoint_or_rotate(kind)?;
        self.flush()
    }

    /// A checkpoint of `kind`, or a rotation (whose `rotate` checkpoint seals the file) if the
    /// checkpoint would leave no room for that one.
    fn push_checkpoint_or_rotate(&mut self, kind: CheckpointKind) -> Result<(), AuditError> {
        let near_end =
            self.max_size > 0 && self.cur.size + 2 * CHECKPOINT_LEN_BOUND > self.max_size;
        if near_end && self.needs_rotation(self.next_checkpoint(kind, None).line_len(&*self.signer))
        {
            self.rotate()?;
            if kind == CheckpointKind::Periodic {
                return Ok(());
            }
        }
        self.push_checkpoint(kind, None)
    }

    /// Counts `events` events that were not written although their requests went on (`reason`:
    /// why): the next write records them in a `lost` line, after its own lines.
    pub fn note_lost(&mut self, events: u64, reason: &str) {
        self.lost += events;
        reason.clone_into(&mut self.lost_reason);
    }

    /// Events counted by [`LogFile::note_lost`] and not yet recorded.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Adds the `lost` line of the events counted and not yet recorded to what is pending.
    fn push_lost(&mut self) -> Result<(), AuditError> {
        if self.lost == 0 || self.lost_pending > 0 {
            return Ok(());
        }
        let render = |f: &Self| {
            render_lost_line(
                f.lost,
                &f.lost_reason,
                &MicroTime::now().to_string(),
                &f.cur.head,
                f.cur.next_seq,
            )
        };
        let mut line = render(self);
        if self.needs_rotation(line.len()) {
            self.rotate()?;
            line = render(self);
        }
        self.push_parts(&[&line]);
        self.cur.since_checkpoint += 1;
        self.lost_pending = self.lost;
        Ok(())
    }

    /// Cuts bytes a failed write left behind, if an earlier attempt could not.
    fn clean(&mut self) -> Result<(), AuditError> {
        if self.dirty {
            self.file
                .set_len(self.durable.size)
                .map_err(|source| AuditError::Write {
                    path: self.path.clone(),
                    source,
                })?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Sets `suffix` to what ends an event line at the chain's current position: the chain's
    /// two annotations, then the braces that close `annotations` and the event.
    fn chain_suffix(&mut self) {
        let mut hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(self.cur.head, &mut hex);
        let line = &mut self.suffix;
        line.clear();
        for part in [
            b"\"".as_slice(),
            CHAIN_ANNOTATION.as_bytes(),
            b"\":\"sha256:",
            &hex,
            b"\",\"",
            SEQ_ANNOTATION.as_bytes(),
            b"\":\"",
        ] {
            line.extend_from_slice(part);
        }
        super::event::decimal(line, self.cur.next_seq);
        line.extend_from_slice(b"\"}}");
    }

    /// Appends the line made of `parts` (and its newline) to what is pending, and moves the
    /// chain on: the line is hashed where it was copied to.
    fn push_parts(&mut self, parts: &[&[u8]]) {
        let start = self.pending.len();
        for part in parts {
            self.pending.extend_from_slice(part);
        }
        self.cur.head = line_hash(&self.pending[start..]);
        self.cur.size += (self.pending.len() - start) as u64 + 1;
        self.cur.next_seq += 1;
        self.pending.push(b'\n');
    }

    /// The checkpoint of `kind` that would be written next.
    fn next_checkpoint(&self, kind: CheckpointKind, prev_file: Option<String>) -> Checkpoint {
        Checkpoint {
            log: self.log_id.clone(),
            file: self.cur.file_index,
            line: self.cur.next_seq - self.cur.first_seq + 1,
            seq: self.cur.next_seq,
            head: self.cur.head,
            time: MicroTime::now().to_string(),
            kind,
            prev_file,
            unattested: None,
        }
    }

    fn push_checkpoint(
        &mut self,
        kind: CheckpointKind,
        prev_file: Option<String>,
    ) -> Result<(), AuditError> {
        self.push_signed(&self.next_checkpoint(kind, prev_file))
    }

    /// Appends the line of `checkpoint`, which must be [`LogFile::next_checkpoint`]'s.
    fn push_signed(&mut self, checkpoint: &Checkpoint) -> Result<(), AuditError> {
        let line = checkpoint.signed_line(&*self.signer)?;
        self.push_parts(&[&line]);
        self.cur.since_checkpoint = 0;
        self.pending_checkpoints += 1;
        Ok(())
    }

    /// Writes and syncs what is pending; on failure cuts it off again.
    fn flush(&mut self) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Only a journaled batch needs it (a hash of the log's id).
        let target =
            (self.fsync && self.journal.is_some()).then(|| self.target(self.durable.file_index));
        let offset = self.durable.size;
        let (end, head) = (self.cur.size, self.cur.head);
        if let Err(source) = self.check_file() {
            // Nothing was written, and the file is not this writer's to cut back any more.
            self.forget_after(self.durable);
            return Err(AuditError::Write {
                path: self.path.clone(),
                source,
            });
        }
        let written = self.file.write_all(&self.pending).and_then(|()| {
            match (&mut self.journal, target) {
                (_, _) if !self.fsync => Ok(()),
                (Some(journal), Some(target)) => {
                    if !journal.append(target, offset, &self.pending, &head)? {
                        // Full: the log itself takes this batch and all before it.
                        self.file.sync_data()?;
                        journal.restart(target, end, &head)?;
                    }
                    Ok(())
                }
                _ => self.file.sync_data(),
            }
        });
        match written {
            Ok(()) => {
                self.durable = self.cur;
                self.lost -= std::mem::take(&mut self.lost_pending);
                self.pending.clear();
                self.stats.checkpoints += self.pending_checkpoints;
                self.pending_checkpoints = 0;
                Ok(())
            }
            Err(source) => {
                self.undo_to(self.durable);
                Err(AuditError::Write {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Whether the open file is still the log: at its path (not removed, renamed or replaced)
    /// and as long as this writer made it (not cut or written by anyone else). Events written
    /// to a file that is no longer the log would be lost to every reader: the write fails
    /// instead, and the failure mode decides (closed: requests are refused until a restart,
    /// whose recovery then judges the log). At most every [`CHECK_EVERY`] when the log does
    /// not sync (two `stat` calls), before every write when it does.
    fn check_file(&mut self) -> io::Result<()> {
        let now = std::time::Instant::now();
        if !self.at_path
            || !self.fsync
                && self
                    .checked
                    .is_some_and(|t| now.duration_since(t) < CHECK_EVERY)
        {
            return Ok(());
        }
        use std::os::unix::fs::MetadataExt as _;
        let open = self.file.metadata()?;
        let replaced = match fs::symlink_metadata(&self.path) {
            Ok(at_path) => at_path.ino() != open.ino() || at_path.dev() != open.dev(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(e),
        };
        if replaced || open.nlink() == 0 {
            return Err(io::Error::other(
                "the file was removed or replaced while the server had it open; events would \
                 be written where no reader sees them, so none are (restart the server: its \
                 recovery checks the log)",
            ));
        }
        if !self.dirty && open.len() != self.durable.size {
            return Err(io::Error::other(format!(
                "the file is {} bytes long, but this server wrote {}: it was cut or written to \
                 by someone else while open (restart the server: its recovery checks the log)",
                open.len(),
                self.durable.size
            )));
        }
        self.checked = Some(now);
        Ok(())
    }

    /// Forgets what is pending and everything after `state` (the file unchanged).
    fn forget_after(&mut self, state: State) {
        self.pending.clear();
        self.pending_checkpoints = 0;
        self.lost_pending = 0;
        self.durable = state;
        self.cur = state;
    }

    /// Forgets everything after `state` and cuts the current file back to it.
    fn undo_to(&mut self, state: State) {
        self.forget_after(state);
        if let Err(e) = self.file.set_len(state.size) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot cut a failed write from the audit log; retrying before the next write");
            self.dirty = true;
        }
    }

    fn needs_rotation(&self, line_len: usize) -> bool {
        let lines_in_file = self.cur.next_seq - self.cur.first_seq;
        if self.max_size == 0 || lines_in_file <= 1 {
            return false;
        }
        let after = self.cur.size + line_len as u64 + 1;
        // The `rotate` checkpoint that will seal the file must fit after the line too, so that
        // no file outgrows `max_size` (lumberjack's rule). Its exact length is rendered only
        // near the end of the file.
        after + CHECKPOINT_LEN_BOUND > self.max_size
            && after + self.rotate_checkpoint_len() + 1 > self.max_size
    }

    /// The length of the `rotate` checkpoint line after one more line.
    fn rotate_checkpoint_len(&self) -> u64 {
        let mut cp = self.next_checkpoint(CheckpointKind::Rotate, None);
        cp.line += 1;
        cp.seq += 1;
        cp.line_len(&*self.signer) as u64
    }

    /// Seals the current file with a `rotate` checkpoint and continues in a new one.
    fn rotate(&mut self) -> Result<(), AuditError> {
        self.flush()?;
        let before = self.durable;
        self.push_checkpoint(CheckpointKind::Rotate, None)?;
        self.flush()?;
        self.seal()?;
        self.start_next_file(before)?;
        self.stats.rotations += 1;
        prune_backups(
            &self.path,
            self.max_backups,
            self.max_age,
            std::time::SystemTime::now(),
        );
        Ok(())
    }

    /// Renames the sealed current file aside and starts the next file with an `open`
    /// checkpoint that links to it and names it. On failure the old file is put back and cut
    /// back to `before` (the state before its `rotate` checkpoint).
    fn start_next_file(&mut self, before: State) -> Result<(), AuditError> {
        let backup = backup_path(&self.path);
        if let Err(source) = fs::rename(&self.path, &backup) {
            self.undo_to(before);
            return Err(AuditError::Io {
                path: backup,
                source,
            });
        }
        let new = match create_file(&self.path) {
            Ok(f) => f,
            Err(source) => {
                let _ = fs::rename(&backup, &self.path);
                self.undo_to(before);
                return Err(AuditError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let old = std::mem::replace(&mut self.file, new);
        let sealed = self.durable;
        self.durable = State {
            size: 0,
            file_index: sealed.file_index + 1,
            first_seq: sealed.next_seq,
            since_checkpoint: 0,
            ..sealed
        };
        self.cur = self.durable;
        let name = backup.file_name().map(|n| n.to_string_lossy().into_owned());
        let header = self
            .push_checkpoint(CheckpointKind::Open, name)
            .and_then(|()| self.flush())
            .and_then(|()| self.seal())
            .and_then(|()| sync_dir(&self.path).map_err(io_err(&self.path)));
        if let Err(e) = header {
            let _ = fs::remove_file(&self.path);
            let _ = fs::rename(&backup, &self.path);
            self.file = old;
            self.undo_to(before);
            return Err(e);
        }
        Ok(())
    }
}

/// The file name of `path` before its extension, and the extension with its dot ("" if none).
fn stem_and_ext(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (stem, ext)
}

/// `<dir>/<stem>-<UTC time>.<ext>`, lumberjack's backup name (time `2006-01-02T15-04-05.000`),
/// with `-N` added if that name is taken.
fn backup_path(path: &Path) -> PathBuf {
    let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now())
        .to_string()
        .trim_end_matches('Z')
        .replace(':', "-");
    let (stem, ext) = stem_and_ext(path);
    let dir = parent(path);
    let mut candidate = dir.join(format!("{stem}-{stamp}{ext}"));
    let mut n = 1;
    while candidate.exists() {
        candidate = dir.join(format!("{stem}-{stamp}-{n}{ext}"));
        n += 1;
    }
    candidate
}

/// The rotated files of the log at `path`, newest first: `<stem>-<time>[-N].<ext>` beside it,
/// with the time lumberjack writes (`2006-01-02T15-04-05.000`, UTC).
fn backups(path: &Path) -> Vec<(std::time::SystemTime, PathBuf)> {
    let (stem, ext) = stem_and_ext(path);
    let prefix = format!("{stem}-");
    let Ok(entries) = fs::read_dir(parent(path)) else {
        return Vec::new();
    };
    let mut found: Vec<((std::time::SystemTime, u64), PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let middle = name.strip_prefix(&prefix)?.strip_suffix(&ext)?;
            // `2006-01-02T15-04-05.000` is 23 bytes; `-N` may follow.
            let stamp = middle.get(..23)?;
            // `-N`: the N-th file rotated within that millisecond.
            let n = match &middle[23..] {
                "" => 0,
                rest => rest
                    .strip_prefix('-')
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))?
                    .parse::<u64>()
                    .ok()?,
            };
            let (date, time) = stamp.split_once('T')?;
            let rfc3339 = format!("{date}T{}Z", time.replacen('-', ":", 2));
            let at = humantime::parse_rfc3339(&rfc3339).ok()?;
            Some(((at, n), e.path()))
        })
        .collect();
    found.sort_by_key(|b| std::cmp::Reverse(b.0));
    found.into_iter().map(|((at, _), p)| (at, p)).collect()
}

/// Removes the rotated files of the log at `path` beyond the newest `max_backups` (0: none
/// beyond) and those whose time is before `now - max_age`, as lumberjack's `MaxBackups` and
/// `MaxAge` do after a rotation. A file that cannot be removed is logged and left.
fn prune_backups(
    path: &Path,
    max_backups: usize,
    max_age: Option<Duration>,
    now: std::time::SystemTime,
) {
    if max_backups == 0 && max_age.is_none() {
        return;
    }
    let cutoff = max_age.and_then(|age| now.checked_sub(age));
    for (i, (at, file)) in backups(path).into_iter().enumerate() {
        let surplus = max_backups > 0 && i >= max_backups;
        let expired = cutoff.is_some_and(|c| at < c);
        if !(surplus || expired) {
            continue;
        }
        match fs::remove_file(&file) {
            Ok(()) => {
                tracing::info!(file = %file.display(), "removed a rotated audit log file (--audit-log-maxbackup, --audit-log-maxage)")
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "a rotated audit log file could not be removed")
            }
        }
    }
}

/// Position of the first `\n` in `[from, to)`.
fn find_newline(file: &File, from: u64, to: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 8192];
    let mut pos = from;
    while pos < to {
        let n = ((to - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)?;
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            return Ok(Some(pos + i as u64));
        }
        pos += n as u64;
    }
    Ok(None)
}

/// The line (without its newline) whose newline is the byte before `offset` (empty at 0).
fn line_ending_at(file: &File, offset: u64) -> io::Result<Vec<u8>> {
    let Some(end) = offset.checked_sub(1) else {
        return Ok(Vec::new());
    };
    let start = rfind_newline(file, end)?.map_or(0, |p| p + 1);
    let mut line = vec![0; (end - start) as usize];
    file.read_exact_at(&mut line, start)?;
    Ok(line)
}

/// The last line of `bytes`, which end with a newline (without it).
fn last_line(bytes: &[u8]) -> &[u8] {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    &body[start..]
}

/// The sequence number of the last checkpoint line in the file before `end` (the start of a
/// line), read back a chunk at a time.
fn last_checkpoint_seq(file: &File, end: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 1 << 20;
    let checkpoint_seq = |line: &[u8]| {
        parse_line(line)
            .ok()
            .filter(|l| l.checkpoint.is_some())
            .map(|l| l.seq)
    };
    // The bytes from `start` up to the lines already looked at, which end with a newline.
    let (mut buf, mut start) = (Vec::new(), end);
    loop {
        let mut hi = buf.len();
        while hi > 0 {
            let newline = hi - 1;
            match buf[..newline].iter().rposition(|&b| b == b'\n') {
                Some(p) => {
                    if let Some(seq) = checkpoint_seq(&buf[p + 1..newline]) {
                        return Ok(Some(seq));
                    }
                    hi = p + 1;
                }
                None if start == 0 => return Ok(checkpoint_seq(&buf[..newline])),
                None => break,
            }
        }
        if start == 0 {
            return Ok(None);
        }
        buf.truncate(hi);
        let from = start.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (start - from) as usize];
        file.read_exact_at(&mut chunk, from)?;
        chunk.extend_from_slice(&buf);
        (buf, start) = (chunk, from);
    }
}

/// Position of the last `\n` before `before`.
fn rfind_newline(file: &File, before: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = before;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        file.read_exact_at(&mut buf[..n], start)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + i as u64));
        }
        end = start;
    }
    Ok(None)
}

mod lines;
#[cfg(test)]
mod tests;
