//! `keyward store convert`: moves an embedded sled store to the log-structured engine, keeping
//! every key with its revisions and the retained history.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::error::CliError;
use super::process::runtime;
use crate::backend::{convert, SledBackend, SledOptions};

/// `keyward store ...`.
#[derive(Debug, Subcommand)]
pub(super) enum StoreCommand {
    /// Copy a sled store into a new log-structured one (the default engine since it was added),
    /// keeping every Secret, resourceVersion and the retained history.
    ///
    /// The server must be stopped. Give the --history and --history-window it runs with, so that
    /// the copy can read exactly the past versions the source could. The copy is opened and
    /// compared with the source, key by key and change by change, before it appears at --to;
    /// the source is left as it was.
    ///
    /// Examples:
    ///   keyward store convert --from /var/lib/keyward/store --to /var/lib/keyward/store.log
    ///   keyward store convert --from keyward-dev/store --to keyward-dev/store.log \
    ///     && mv keyward-dev/store keyward-dev/store.sled && mv keyward-dev/store.log keyward-dev/store
    #[command(verbatim_doc_comment)]
    Convert(ConvertArgs),
}

/// `keyward store convert`.
#[derive(Debug, Args)]
pub(super) struct ConvertArgs {
    /// The sled store: a stopped `keyward server`'s --data (for `keyward dev`, DATA/store).
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// The new directory for the copy (it must not exist).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// The server's --history: versions of each Secret that can be read (0 = all).
    #[arg(long, default_value_t = 10, value_name = "N")]
    history: usize,
    /// The server's --history-window: revisions kept in the change log (0 = all).
    #[arg(long, default_value_t = SledOptions::default().log_retention, value_name = "REVISIONS")]
    history_window: u64,
}

/// Runs `keyward store ...`.
pub(super) fn store(cmd: StoreCommand) -> Result<(), CliError> {
    let StoreCommand::Convert(a) = cmd;
    let from = a.from.display();
    if !crate::backend::sled::holds_sled_store(&a.from) {
        let what = if crate::backend::logstore::holds_log_store(&a.from) {
            "is a log-structured store already"
        } else {
            "holds no sled store (no `db` or `conf` file)"
        };
        return Err(CliError::new(format!("--from {from}: {what}")));
    }
    if a.to.exists() {
        return Err(CliError::new(format!(
            "--to {}: exists; the copy goes into a new directory",
            a.to.display()
        )));
    }
    let rt = runtime()?;
    let source = rt
        .block_on(async {
            let dir = a.from.clone();
            let opts = SledOptions {
                history_per_key: a.history,
                log_retention: a.history_window,
                ..SledOptions::default()
            };
            tokio::task::spawn_blocking(move || SledBackend::open(&dir, opts)).await
        })
        .map_err(|e| CliError::new(format!("--from {from}: cannot open the store: {e}")))?
        .map_err(|e| CliError::new(format!("--from {from}: {e}")))?;
    let converted = rt
        .block_on(convert::into_log(&source, &a.to))
        .map_err(|e| CliError::new(format!("store convert: {e}; nothing was written to --to")))?;
    drop(source);
    println!(
        "copied {} keys ({} versions) at revision {}, history from revision {}, into {} (log-structured); checked against {from}",
        converted.keys,
        converted.versions,
        converted.revision,
        converted.compacted,
        a.to.display()
    );
    println!(
        "next: serve --data {} (the sled store in {from} is unchanged; delete it once the copy serves)",
        a.to.display()
    );
    Ok(())
}
