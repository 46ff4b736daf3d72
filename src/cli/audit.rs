//! `keyward audit verify`: checks audit log files and says whether they are intact, with its
//! own exit codes (0 intact, 1 tampered, unverified (a checkpoint signed by a key not given),
//! unattested or unsealed, 2 usage).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::audit::{self, Report, Tail};

/// `keyward audit ...`.
#[derive(Debug, Subcommand)]
pub(super) enum AuditCommand {
    /// Check that audit log files are intact; name the first edited, removed, reordered or
    /// forged line.
    ///
    /// Checks the hash chain of every line, every signed checkpoint, and that the log ends with
    /// its shutdown checkpoint. Exit code 0: intact; 1: tampered, unverified (signed by a key
    /// not given), unattested lines (left after a crash, not vouched for when the writer
    /// restarted) or an unsealed tail; 2: usage (a file or key that cannot be read).
    ///
    /// Examples:
    ///   keyward audit verify /var/log/keyward/audit*.log --public-key /etc/keyward/audit.pub
    ///   keyward audit verify audit.log --public-key audit.pub --allow-unsealed-tail
    #[command(verbatim_doc_comment)]
    Verify(VerifyArgs),
}

/// `keyward audit verify`.
#[derive(Debug, Args)]
pub(super) struct VerifyArgs {
    /// The log files: the active file and any rotated ones, in any order.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The Ed25519 public key that signs the checkpoints (PEM, or 32 bytes raw, base64 or
    /// hex); repeat it for files signed before a key change. Without it only the chain is
    /// checked.
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<PathBuf>,
    /// Accept lines after the last checkpoint (a log the server is still writing).
    #[arg(long)]
    allow_unsealed_tail: bool,
    /// Accept lines a writer left unsealed when it stopped without closing the log and could
    /// not vouch for when it restarted (a log written with `--audit-log-sync never`).
    #[arg(long)]
    allow_unattested: bool,
    /// Accept a last file that was rotated: the log goes on in newer files that were not given
    /// (verifying older files alone). Without it that is INCOMPLETE, as when the newest file
    /// was removed.
    #[arg(long)]
    allow_newer_files_missing: bool,
}

/// Runs `keyward audit ...` and returns the exit code.
pub(super) fn audit(cmd: AuditCommand) -> ExitCode {
    let AuditCommand::Verify(args) = cmd;
    let usage = |e: audit::AuditError| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    };
    let keys = match args
        .public_keys
        .iter()
        .map(|p| audit::read_public_key(p))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(k) => k,
        Err(e) => return usage(e),
    };
    let report = match audit::verify(&args.files, &keys) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    for note in &report.notes {
        println!("note: {note}");
    }
    if let Some(p) = &report.problem {
        if p.kind == audit::ProblemKind::UnknownKey {
            // Not proof of tampering: the key may be one the writer used before (the KMS
            // plugin signs with a new key at every start, keeping the old public key aside).
            println!("UNVERIFIED: {p}");
            for kept in kept_keys(&args.public_keys) {
                println!("note: {} was kept beside a given key (the earlier key of a writer that changed keys): give it with another --public-key if you trust it", kept.display());
            }
            return ExitCode::from(1);
        }
        println!("TAMPERED: {p}");
        return ExitCode::from(1);
    }
    if !report.unattested.is_empty() && !args.allow_unattested {
        for u in &report.unattested {
            println!("UNATTESTED: {u}");
        }
        return ExitCode::from(1);
    }
    for u in &report.unattested {
        println!("note: unattested: {u}");
    }
    if !report.signatures_checked {
        eprintln!("warning: checkpoint signatures were not checked (no --public-key): whoever can write the files could have rewritten them whole");
    }
    match &report.tail {
        Tail::Unsealed { .. } if !args.allow_unsealed_tail => {
            println!("UNSEALED: {}", report.tail);
            ExitCode::from(1)
        }
        Tail::Sealed {
            kind: audit::CheckpointKind::Rotate,
            path,
            line,
        } if !args.allow_newer_files_missing => {
            println!(
                "INCOMPLETE: {}:{line}: the last file given ends with its rotate checkpoint: the log goes on in a newer file that was not given (removed, or left out; --allow-newer-files-missing verifies older files alone)",
                path.display()
            );
            ExitCode::from(1)
        }
        tail => {
            println!("OK: {}", summary(&report));
            if matches!(tail, Tail::Unsealed { .. }) {
                println!("note: {tail}");
            }
            ExitCode::SUCCESS
        }
    }
}

/// The public keys a writer kept beside `given` when it changed keys (`FILE.<key id>.pub`
/// beside `FILE.pub`) that were not given themselves.
fn kept_keys(given: &[PathBuf]) -> Vec<PathBuf> {
    let mut kept = Vec::new();
    for key in given {
        let (Some(dir), Some(name)) = (key.parent(), key.file_name().and_then(|n| n.to_str()))
        else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".pub") else {
            continue;
        };
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            let is_kept = file
                .strip_prefix(stem)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|rest| rest.strip_suffix(".pub"))
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()));
            let path = dir.join(file);
            if is_kept && !given.iter().any(|g| g == &path) && !kept.contains(&path) {
                kept.push(path);
            }
        }
    }
    kept.sort();
    kept
}

fn summary(r: &Report) -> String {
    let plural = |n: u64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    let mut s = format!(
        "{}, {} ({}, {}), sequence {}-{}",
        plural(r.files.len() as u64, "file"),
        plural(r.lines, "line"),
        plural(r.events, "event"),
        plural(
            r.checkpoints,
            if r.signatures_checked {
                "signed checkpoint"
            } else {
                "checkpoint"
            }
        ),
        r.first_seq,
        r.last_seq
    );
    if let Tail::Sealed { .. } = &r.tail {
        s.push_str(&format!("; {}", r.tail));
    }
    if r.lost_events > 0 {
        s.push_str(&format!(
            "; {} the writer could not write (see the notes)",
            plural(r.lost_events, "lost event")
        ));
    }
    s
}
