//! [`verify`]: checks log files written by [`AuditLog`](super::AuditLog) and reports the first
//! problem, naming its file and line.
//!
//! What is checked, line by line in chain order (files are ordered by the index in their
//! `open` checkpoint, whatever order they are given in):
//! - every line is JSON with `keyward.io/chain` and `keyward.io/seq`;
//! - sequence numbers go up by one (a gap is removed lines, a step back or a sequence found
//!   later is reordering);
//! - each line's chain is the SHA-256 of the line before (a mismatch is an edit);
//! - each checkpoint's note is signed by one of the given keys, was made for exactly this
//!   position (log, file, line, sequence, head: a checkpoint copied from elsewhere fails), and
//!   the rest of its line is what the note determines;
//! - line 1 of every file is its `open` checkpoint, a `rotate` checkpoint ends every file but
//!   the last, only a `resume` checkpoint follows a `shutdown` one.
//!
//! Lines after the last checkpoint cannot be proven complete: the last file ends either with a
//! `shutdown` (or `rotate`) checkpoint — [`Tail::Sealed`] — or with an unsealed tail
//! ([`Tail::Unsealed`]), which is what a cut log looks like, and also a log still being
//! written or whose writer stopped without closing it. The caller decides (the CLI fails unless
//! told the log is live).

use std::fmt;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};

use super::chain::{
    check_signature, hash_text, line_hash, parse_line, render_checkpoint_line, Checkpoint,
    CheckpointKind, LineInfo, SignatureError, GENESIS,
};
use super::AuditError;
use crate::crypto::Ed25519PublicKey;

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The files checked, in chain order.
    pub files: Vec<FileSummary>,
    /// Lines checked (events and checkpoints).
    pub lines: u64,
    /// Event lines.
    pub events: u64,
    /// Checkpoint lines.
    pub checkpoints: u64,
    /// Sequence number of the first line checked.
    pub first_seq: u64,
    /// Sequence number of the last line checked.
    pub last_seq: u64,
    /// Whether signatures were checked (keys were given).
    pub signatures_checked: bool,
    /// The first problem; checking stops there.
    pub problem: Option<Problem>,
    /// How the log ends ([`Tail::Unknown`] after a problem).
    pub tail: Tail,
    /// Facts worth knowing that are not problems (files not given, restarts after a crash,
    /// events the writer recorded as lost).
    pub notes: Vec<String>,
    /// Events the writer could not write although their requests went on, as its `lost` lines
    /// record them.
    pub lost_events: u64,
    /// Lines a restarted writer found after the last checkpoint and could not vouch for (its
    /// `resume` checkpoint names them): they may have been edited or added while it was
    /// stopped. Not proof of tampering, nor proof of its absence.
    pub unattested: Vec<String>,
}

impl Report {
    /// No line was edited, removed, reordered or forged. (The tail may still be unsealed.)
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

/// One file checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    /// The path given.
    pub path: PathBuf,
    /// Its index in the log.
    pub index: u64,
    /// Its lines.
    pub lines: u64,
}

/// How the log ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The last line is a signed `shutdown` checkpoint (closed cleanly) or a `rotate` checkpoint
    /// (the log continues in a file that was not given).
    Sealed {
        /// `Shutdown` or `Rotate`.
        kind: CheckpointKind,
        /// The file.
        path: PathBuf,
        /// The checkpoint's line.
        line: u64,
    },
    /// Lines after the last checkpoint, or a last checkpoint that is not `shutdown`.
    Unsealed {
        /// The file.
        path: PathBuf,
        /// Lines after the last checkpoint (0 if the file ends with a periodic one).
        lines: u64,
        /// The last checkpoint's line.
        last_checkpoint_line: u64,
        /// Its kind.
        last_checkpoint_kind: CheckpointKind,
    },
    /// Not known: checking stopped at a problem.
    Unknown,
}

impl fmt::Display for Tail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tail::Sealed { kind, path, line } => write!(
                f,
                "sealed by the {kind} checkpoint at {}:{line}",
                path.display()
            ),
            Tail::Unsealed {
                path,
                lines,
                last_checkpoint_line,
                last_checkpoint_kind,
            } => write!(
                f,
                "{}: unsealed tail of {lines} line{} since the last checkpoint at line {last_checkpoint_line} ({last_checkpoint_kind}): a log closed cleanly ends with a shutdown checkpoint, so lines after it may have been cut or edited (or the log is still being written, or its writer stopped without closing it)",
                path.display(),
                if *lines == 1 { "" } else { "s" },
            ),
            Tail::Unknown => f.write_str("unknown"),
        }
    }
}

/// What kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A line is not JSON or lacks the chain annotations.
    Malformed,
    /// A line's content changed.
    Edited,
    /// Lines are missing.
    Removed,
    /// Lines are out of order or duplicated.
    Reordered,
    /// A file was cut: an incomplete last line, or a rotated file without its final checkpoint.
    Truncated,
    /// A checkpoint that is unreadable, misplaced (copied from another position), or whose line
    /// was edited outside its note.
    Checkpoint,
    /// A checkpoint without a valid signature.
    Signature,
    /// A checkpoint signed by a key that was not given.
    UnknownKey,
    /// The set of files: one missing between two given, two with the same index, or one from
    /// another log.
    Files,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// The line the problem is at (1-based).
    pub line: u64,
    /// What kind.
    pub kind: ProblemKind,
    /// What is wrong, for people.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

/// Why a walk stopped early: a problem (recorded in the report) or a file that cannot be read.
enum Stop {
    Problem,
    Io(AuditError),
}

/// Where the chain stands between lines and files.
struct Walk<'a> {
    keys: &'a [Ed25519PublicKey],
    log: String,
    /// The hash the next line must link to; `None` when the previous file was not given.
    prev: Option<[u8; 32]>,
    prev_path: Option<PathBuf>,
    /// The index of the file being walked.
    file_index: u64,
    expected_seq: u64,
    report: Report,
}

impl Walk<'_> {
    fn stop(&mut self, path: &Path, line: u64, kind: ProblemKind, message: String) -> Stop {
        self.report.problem = Some(Problem {
            path: path.to_owned(),
            line,
            kind,
            message,
        });
        Stop::Problem
    }
}

/// Checks `files` (the active file and rotated ones, in any order) against `keys` (none: the
/// chain is checked but signatures are not). `Err` only when a file cannot be read.
pub fn verify(files: &[impl AsRef<Path>], keys: &[Ed25519PublicKey]) -> Result<Report, AuditError> {
    let mut walk = Walk {
        keys,
        log: String::new(),
        prev: None,
        prev_path: None,
        file_index: 0,
        expected_seq: 1,
        report: Report {
            files: Vec::new(),
            lines: 0,
            events: 0,
            checkpoints: 0,
            first_seq: 0,
            last_seq: 0,
            signatures_checked: !keys.is_empty(),
            problem: None,
            tail: Tail::Unknown,
            notes: Vec::new(),
            lost_events: 0,
            unattested: Vec::new(),
        },
    };
    let mut heads = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for path in files {
        let path = path.as_ref();
        if !seen.insert(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())) {
            continue;
        }
        match header(path)? {
            Ok(h) => heads.push((path.to_owned(), h)),
            Err((kind, message)) => {
                walk.stop(path, 1, kind, message);
                return Ok(walk.report);
            }
        }
    }
    heads.sort_by_key(|(_, h)| h.file);
    if check_file_set(&mut walk, &heads).is_err() {
        return Ok(walk.report);
    }
    for (i, (path, h)) in heads.iter().enumerate() {
        walk.file_index = h.file;
        match walk_file(&mut walk, path, i + 1 == heads.len()) {
            Ok(()) => {}
            Err(Stop::Problem) => {
                walk.report.tail = Tail::Unknown;
                break;
            }
            Err(Stop::Io(e)) => return Err(e),
        }
    }
    Ok(walk.report)
}

/// Reads line 1 of `path`: the file's `open` checkpoint.
fn header(path: &Path) -> Result<Result<Checkpoint, (ProblemKind, String)>, AuditError> {
    let file = File::open(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut first = Vec::new();
    BufReader::new(file)
        .take(1024 * 1024)
        .read_until(b'\n', &mut first)
        .map_err(|source| AuditError::Io {
            path: path.to_owned(),
            source,
        })?;
    if first.is_empty() {
        return Ok(Err((ProblemKind::Truncated, "the file is empty".into())));
    }
    if first.pop() != Some(b'\n') {
        return Ok(Err((
            ProblemKind::Truncated,
            "incomplete line: the file was cut inside it".into(),
        )));
    }
    let not_header = |why: String| {
        (
            ProblemKind::Malformed,
            format!("not the open checkpoint that starts every keyward audit log file ({why})"),
        )
    };
    Ok(parse_line(&first)
        .map_err(not_header)
        .and_then(|info| {
            info.checkpoint
                .ok_or_else(|| not_header("no checkpoint".into()))
        })
        .and_then(|(note, _)| Checkpoint::parse_note(&note).map_err(not_header))
        .and_then(|c| {
            if c.kind == CheckpointKind::Open && c.line == 1 {
                Ok(c)
            } else {
                Err(not_header(format!(
                    "a {} checkpoint for line {}",
                    c.kind, c.line
                )))
            }
        }))
}

/// The files must be consecutive, distinct and of one log; sets where the chain starts.
fn check_file_set(walk: &mut Walk<'_>, heads: &[(PathBuf, Checkpoint)]) -> Result<(), Stop> {
    let Some((first_path, first)) = heads.first() else {
        return Ok(());
    };
    walk.log = first.log.clone();
    walk.expected_seq = first.seq;
    walk.report.first_seq = first.seq;
    if first.file == 0 {
        walk.prev = Some(GENESIS);
    } else {
        walk.report.notes.push(format!(
            "the log starts at file index {} ({}, sequence {}): earlier files were not given, and the link of its line 1 to them is not checked",
            first.file,
            first_path.display(),
            first.seq
        ));
    }
    for (path, h) in heads {
        if h.log != walk.log {
            return Err(walk.stop(
                path,
                1,
                ProblemKind::Files,
                format!(
                    "this file belongs to another log ({}) than {} ({})",
                    h.log,
                    first_path.display(),
                    walk.log
                ),
            ));
        }
    }
    for pair in heads.windows(2) {
        let ((a_path, a), (b_path, b)) = (&pair[0], &pair[1]);
        if a.file == b.file {
            return Err(walk.stop(
                b_path,
                1,
                ProblemKind::Files,
                format!(
                    "this file and {} are both file index {} of the log",
                    a_path.display(),
                    a.file
                ),
            ));
        }
        if b.file != a.file + 1 {
            let missing = b.prev_file.as_deref().unwrap_or("unknown");
            return Err(walk.stop(
                b_path,
                1,
                ProblemKind::Files,
                format!(
                    "file index {} (rotated as {missing}) is missing between {} (index {}) and this file (index {})",
                    b.file - 1,
                    a_path.display(),
                    a.file,
                    b.file
                ),
            ));
        }
    }
    Ok(())
}

fn walk_file(walk: &mut Walk<'_>, path: &Path, last_file: bool) -> Result<(), Stop> {
    let bytes = std::fs::read(path).map_err(|source| {
        Stop::Io(AuditError::Io {
            path: path.to_owned(),
            source,
        })
    })?;
    let (body, complete) = match bytes.strip_suffix(b"\n") {
        Some(body) => (body, true),
        None => (&bytes[..], false),
    };
    let mut lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if !complete {
        lines.pop();
    }
    let infos: Vec<Result<LineInfo, String>> = lines.iter().map(|l| parse_line(l)).collect();
    let count = lines.len() as u64;
    let mut last_cp: Option<(u64, CheckpointKind)> = None;
    let mut last_kind: Option<CheckpointKind> = None;
    for (i, line) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        let info = match &infos[i] {
            Ok(info) => info,
            Err(why) => {
                let msg = format!("not a keyward audit line: {why} (edited?)");
                return Err(walk.stop(path, n, ProblemKind::Malformed, msg));
            }
        };
        check_link(walk, path, n, line, info, &infos[i + 1..])?;
        let kind = match &info.checkpoint {
            Some((note, sig)) => {
                let since = last_cp.map(|(l, _)| l);
                let cp = check_checkpoint(walk, path, n, line, info, (note, sig), count, since)?;
                if cp.kind == CheckpointKind::Resume {
                    match last_cp.filter(|(_, k)| *k != CheckpointKind::Shutdown) {
                        Some((l, k)) if n - l > 1 && cp.unattested.is_some() => walk.report.unattested.push(format!(
                            "{}:{}-{}: written after the {k} checkpoint at line {l} by a writer that then stopped without closing the log; when it restarted nothing it keeps vouched for them (the log did not sync, or its sync journal was missing, changed or made under another key), so they may have been edited or added while it was stopped",
                            path.display(),
                            l + 1,
                            n - 1
                        )),
                        Some((1, CheckpointKind::Open)) if cp.file > 0 && n == 2 => walk.report.notes.push(format!(
                            "{}:{n}: the writer restarted after stopping without a shutdown checkpoint, and opened this file for the rotation that the previous file's last line (its rotate checkpoint) began: lines it wrote after that checkpoint may be missing (a crash before the rename, or a cut back to that checkpoint)",
                            path.display(),
                        )),
                        Some((l, k)) if n - l > 1 => walk.report.notes.push(format!(
                            "{}:{n}: the writer restarted after stopping without a shutdown checkpoint: lines {}-{} had not been sealed by a checkpoint before (the last was the {k} checkpoint at line {l}; its sync journal vouched for them), and lines it wrote after them may be missing (a crash, or a cut)",
                            path.display(),
                            l + 1,
                            n - 1
                        )),
                        Some((l, k)) => walk.report.notes.push(format!(
                            "{}:{n}: the writer restarted after stopping without a shutdown checkpoint: lines it wrote after the {k} checkpoint at line {l} may be missing (a crash, or a cut back to that checkpoint)",
                            path.display(),
                        )),
                        None => {}
                    }
                }
                walk.report.checkpoints += 1;
                last_cp = Some((n, cp.kind));
                Some(cp.kind)
            }
            None => {
                if let Some((lost, reason)) = &info.lost {
                    walk.report.lost_events += lost;
                    walk.report.notes.push(format!(
                        "{}:{n}: {lost} event{} could not be written ({reason}); the requests {} went on",
                        path.display(),
                        if *lost == 1 { "" } else { "s" },
                        if *lost == 1 { "it describes" } else { "they describe" },
                    ));
                }
                walk.report.events += 1;
                None
            }
        };
        if last_kind == Some(CheckpointKind::Shutdown) && kind != Some(CheckpointKind::Resume) {
            let msg = format!("appended after the shutdown checkpoint at line {}: a restarted writer starts with a resume checkpoint", n - 1);
            return Err(walk.stop(path, n, ProblemKind::Checkpoint, msg));
        }
        last_kind = kind;
        walk.prev = Some(line_hash(line));
        walk.expected_seq += 1;
        walk.report.lines += 1;
        walk.report.last_seq = info.seq;
    }
    if !complete {
        // In the last file, what a crash of the machine leaves of a log that does not sync
        // (and what the writer drops when it restarts): an unsealed tail. Elsewhere, or after
        // a shutdown checkpoint, a cut.
        if !last_file
            || matches!(
                last_kind,
                Some(CheckpointKind::Shutdown | CheckpointKind::Rotate)
            )
        {
            let msg = "incomplete line: the file was cut inside it".to_owned();
            return Err(walk.stop(path, count + 1, ProblemKind::Truncated, msg));
        }
        walk.report.notes.push(format!(
            "{}:{}: the last line is incomplete: the file was cut inside it (a crash while it was written, or a cut); the writer drops it when it restarts",
            path.display(),
            count + 1
        ));
    }
    walk.report.files.push(FileSummary {
        path: path.to_owned(),
        index: walk.file_index,
        lines: count,
    });
    let (l, k) = last_cp.expect("line 1 of every file is a checkpoint");
    let ends_with = (l == count).then_some(k);
    match (ends_with, last_file) {
        (Some(CheckpointKind::Rotate), _) => {
            walk.report.tail = Tail::Sealed {
                kind: CheckpointKind::Rotate,
                path: path.to_owned(),
                line: l,
            };
            if last_file {
                walk.report.notes.push(format!(
                    "{} was rotated: the log continues in a later file that was not given",
                    path.display()
                ));
            }
        }
        (_, false) => {
            let msg = format!("the file ends without its rotate checkpoint: lines after line {l} (its last checkpoint, {k}) may have been cut");
            return Err(walk.stop(path, count, ProblemKind::Truncated, msg));
        }
        (Some(CheckpointKind::Shutdown), true) => {
            walk.report.tail = Tail::Sealed {
                kind: CheckpointKind::Shutdown,
                path: path.to_owned(),
                line: l,
            };
        }
        (_, true) => {
            walk.report.tail = Tail::Unsealed {
                path: path.to_owned(),
                lines: count - l,
                last_checkpoint_line: l,
                last_checkpoint_kind: k,
            };
        }
    }
    walk.prev_path = Some(path.to_owned());
    Ok(())
}

/// Sequence and chain of line `n`; `later` are the lines after it in the same file.
fn check_link(
    walk: &mut Walk<'_>,
    path: &Path,
    n: u64,
    line: &[u8],
    info: &LineInfo,
    later: &[Result<LineInfo, String>],
) -> Result<(), Stop> {
    let expected = walk.expected_seq;
    let linked = walk.prev.is_none_or(|p| p == info.chain);
    if info.seq != expected {
        let (kind, msg) = if linked {
            (
                ProblemKind::Edited,
                format!("this line was edited: its sequence number is {}, but the line it links to is sequence {}", info.seq, expected - 1),
            )
        } else if let Some(j) = later
            .iter()
            .position(|x| x.as_ref().is_ok_and(|x| x.seq == expected))
        {
            (
                ProblemKind::Reordered,
                format!("lines out of order: this line has sequence {}, but {expected} was expected (it is at line {})", info.seq, n + 1 + j as u64),
            )
        } else if info.seq < expected {
            (
                ProblemKind::Reordered,
                format!("line out of place: sequence {} where {expected} was expected (moved or duplicated)", info.seq),
            )
        } else {
            let missing = info.seq - expected;
            (
                ProblemKind::Removed,
                format!(
                    "{missing} line{} removed before this line: the sequence jumps from {} to {}",
                    if missing == 1 { "" } else { "s" },
                    expected - 1,
                    info.seq
                ),
            )
        };
        return Err(walk.stop(path, n, kind, msg));
    }
    if linked {
        return Ok(());
    }
    if n == 1 {
        let prev = walk
            .prev_path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let msg =
            format!("this line does not link to the last line of {prev}: one of them was edited");
        return Err(walk.stop(path, 1, ProblemKind::Edited, msg));
    }
    let next_links_here = later
        .first()
        .and_then(|r| r.as_ref().ok())
        .is_none_or(|next| next.chain == line_hash(line));
    if next_links_here {
        let msg = format!(
            "this line was edited: its SHA-256 does not match the chain recorded in line {n}"
        );
        Err(walk.stop(path, n - 1, ProblemKind::Edited, msg))
    } else {
        let msg = format!(
            "this line was edited: it does not link to line {}, and line {} does not link to it",
            n - 1,
            n + 1
        );
        Err(walk.stop(path, n, ProblemKind::Edited, msg))
    }
}

#[allow(clippy::too_many_arguments)] // one line's every view, checked in one place
fn check_checkpoint(
    walk: &mut Walk<'_>,
    path: &Path,
    n: u64,
    line: &[u8],
    info: &LineInfo,
    (note, signature): (&str, &str),
    lines_in_file: u64,
    since: Option<u64>,
) -> Result<Checkpoint, Stop> {
    let cp = match Checkpoint::parse_note(note) {
        Ok(cp) => cp,
        Err(why) => {
            let msg = format!("unreadable checkpoint: {why}");
            return Err(walk.stop(path, n, ProblemKind::Checkpoint, msg));
        }
    };
    if !walk.keys.is_empty() {
        if let Err(e) = check_signature(note, signature, walk.keys) {
            let (kind, msg) = match e {
                SignatureError::Malformed => (
                    ProblemKind::Signature,
                    "the checkpoint has no valid signature".to_owned(),
                ),
                SignatureError::Invalid => (
                    ProblemKind::Signature,
                    "the checkpoint's signature does not verify: it was forged or edited"
                        .to_owned(),
                ),
                SignatureError::UnknownKey(id) => {
                    let given: Vec<String> = walk.keys.iter().map(|k| k.key_id()).collect();
                    (
                        ProblemKind::UnknownKey,
                        format!(
                            "the checkpoint is signed by key {id}, not by the given public key ({})",
                            given.join(", ")
                        ),
                    )
                }
            };
            return Err(walk.stop(path, n, kind, msg));
        }
    }
    let position = [
        ("log", cp.log.clone(), walk.log.clone()),
        ("file", cp.file.to_string(), walk.file_index.to_string()),
        ("line", cp.line.to_string(), n.to_string()),
        ("seq", cp.seq.to_string(), info.seq.to_string()),
        ("head", hash_text(&cp.head), hash_text(&info.chain)),
    ];
    if let Some((field, says, here)) = position.iter().find(|(_, a, b)| a != b) {
        let msg = match (*field, since) {
            // Made for this very position, but the lines before it no longer hash to what it
            // signed: one of them was edited and the chain recomputed after it to hide that.
            ("head", Some(l)) => format!(
                "the lines before this checkpoint hash to {here}, not to the head {says} it signed: a line between the checkpoint at line {l} and this one was edited, and the chain recomputed after it to hide the edit"
            ),
            _ => format!("the checkpoint was made for another position (its {field} is {says}, here it is {here}): copied from elsewhere"),
        };
        return Err(walk.stop(path, n, ProblemKind::Checkpoint, msg));
    }
    if render_checkpoint_line(note, &cp.time, &info.chain, info.seq, signature) != line {
        let msg = "the checkpoint line was edited outside its signed note".to_owned();
        return Err(walk.stop(path, n, ProblemKind::Checkpoint, msg));
    }
    let misplaced = match cp.kind {
        CheckpointKind::Open => (n != 1).then_some("an open checkpoint belongs on line 1"),
        _ if n == 1 => Some("line 1 must be the file's open checkpoint"),
        CheckpointKind::Rotate => (n != lines_in_file).then_some(
            "a rotate checkpoint must be the last line of its file, but lines follow it",
        ),
        _ => None,
    };
    if let Some(why) = misplaced {
        return Err(walk.stop(path, n, ProblemKind::Checkpoint, why.to_owned()));
    }
    Ok(cp)
}

#[cfg(test)]
mod tests;
