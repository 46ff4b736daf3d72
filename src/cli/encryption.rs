//! `keyward encryption status` and `keyward migrate`: what protects every stored object, and
//! rewriting stale ones with the current provider and key (a progress bar on a terminal).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::client::{self, ClientArgs};
use super::output::{fields, table};
use super::process::runtime;
use super::progress::{self, MigrateBar};
use super::CliError;
use crate::pb::keyward_v1 as pb;

/// `keyward encryption ...`.
#[derive(Debug, Subcommand)]
pub(super) enum EncryptionCommand {
    /// Objects per provider and key, how many are stale, and which kms key_ids still protect
    /// data.
    ///
    /// Example: keyward encryption status -o json
    #[command(verbatim_doc_comment)]
    Status {
        /// List every object, not only stale and undecryptable ones.
        #[arg(long)]
        all: bool,
        /// Output format: text or json.
        #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
}

/// `keyward migrate`.
#[derive(Debug, Args)]
pub(super) struct MigrateArgs {
    /// Report what would be rewritten; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keys read per batch.
    #[arg(long, default_value_t = 256, value_name = "N")]
    batch_size: i64,
    /// At most this many rewrites per second (0 = unlimited).
    #[arg(long, default_value_t = 0.0, value_name = "PER_SECOND")]
    rate: f64,
}

/// Runs `keyward encryption ...`.
pub(super) fn encryption(cmd: EncryptionCommand, client: &ClientArgs) -> Result<(), CliError> {
    let EncryptionCommand::Status { all, output } = cmd;
    let s = runtime()?.block_on(async {
        let mut c = client::connect_encryption(client).await?;
        c.status(pb::EncryptionStatusRequest {
            all_objects: all,
            include_history: false,
        })
        .await
        .map(|r| r.into_inner())
        .map_err(client::server_error)
    })?;
    if output == "json" {
        let v = serde_json::json!({
            "revision": s.revision,
            "total": s.total,
            "stale": s.stale,
            "undecryptable": s.undecryptable,
            "writeProvider": s.write_provider,
            "writeKey": s.write_key,
            "kmsKeyIds": s.kms_key_ids,
            "counts": s.counts.iter().map(|c| serde_json::json!({
                "provider": c.provider, "key": c.key_name, "objects": c.objects, "stale": c.stale,
            })).collect::<Vec<_>>(),
            "objects": s.objects.iter().map(|o| serde_json::json!({
                "key": o.key, "modRevision": o.mod_revision, "provider": o.provider,
                "keyName": o.key_name, "stale": o.stale, "error": o.error,
            })).collect::<Vec<_>>(),
        });
        println!("{}", crate::manifest::to_json(&v));
        return Ok(());
    }
    let write = if s.write_key.is_empty() {
        s.write_provider.clone()
    } else {
        format!("{} {}", s.write_provider, s.write_key)
    };
    let mut summary = vec![
        ("writes use", write),
        ("objects", format!("{} at revision {}", s.total, s.revision)),
        ("stale", s.stale.to_string()),
        ("undecryptable", s.undecryptable.to_string()),
    ];
    if !s.kms_key_ids.is_empty() {
        summary.push(("kms key_ids", s.kms_key_ids.join(", ")));
    }
    println!("{}\n", fields(&summary));
    let mut rows = vec![vec![
        "PROVIDER".to_owned(),
        "KEY".into(),
        "OBJECTS".into(),
        "STALE".into(),
    ]];
    for c in &s.counts {
        rows.push(vec![
            c.provider.clone(),
            c.key_name.clone(),
            c.objects.to_string(),
            c.stale.to_string(),
        ]);
    }
    print!("{}", table(&rows));
    if !s.objects.is_empty() {
        println!();
        for o in &s.objects {
            if o.error.is_empty() {
                let state = if o.stale { "stale" } else { "fresh" };
                println!("{}  {} {} ({state})", o.key, o.provider, o.key_name);
            } else {
                println!("{}  cannot decrypt: {}", o.key, o.error);
            }
        }
    }
    Ok(())
}

/// Runs `keyward migrate`: a progress bar on a terminal, periodic log lines otherwise.
pub(super) fn migrate(a: MigrateArgs, client: &ClientArgs) -> Result<(), CliError> {
    if a.batch_size <= 0 {
        return Err(CliError::new("--batch-size: must be a positive number"));
    }
    if !(a.rate >= 0.0 && a.rate.is_finite())
        || (a.rate > 0.0 && a.rate < crate::store::migrate::MIN_RATE)
    {
        return Err(CliError::new(format!(
            "--rate: must be 0 (unlimited) or at least {} rewrites per second",
            crate::store::migrate::MIN_RATE
        )));
    }
    let bar = progress::on_terminal().then(MigrateBar::new);
    let last = runtime()?.block_on(async {
        use tokio_stream::StreamExt;
        let mut c = client::connect_encryption(client).await?;
        let mut stream = c
            .migrate(pb::MigrateRequest {
                dry_run: a.dry_run,
                batch_size: a.batch_size,
                rate: a.rate,
            })
            .await
            .map_err(client::server_error)?
            .into_inner();
        let started = Instant::now();
        let mut last_log = Instant::now();
        let mut last = pb::MigrateProgress::default();
        while let Some(p) = stream.next().await {
            let p = p.map_err(client::server_error)?;
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            let rate = p.done as f64 / elapsed;
            let eta = if rate > 0.0 { (p.total - p.done).max(0) as f64 / rate } else { 0.0 };
            let line = format!(
                "{}/{} objects, {} rewritten, {} changed concurrently, {} undecryptable, {:.0}/s, ETA {}",
                p.done,
                p.total,
                p.rewritten,
                p.conflicts,
                p.failed,
                rate,
                humantime::format_duration(Duration::from_secs(eta.round() as u64))
            );
            if let Some(bar) = &bar {
                bar.update(p.done.max(0) as u64, p.total.max(0) as u64, line);
            } else if p.finished || last_log.elapsed() >= Duration::from_secs(2) {
                eprintln!("{line}");
                last_log = Instant::now();
            }
            last = p;
        }
        if let Some(bar) = bar {
            bar.finish();
        }
        Ok::<_, CliError>(last)
    })?;
    if !last.finished {
        return Err(CliError::new(
            "the migration stream ended early; run keyward migrate again to finish",
        ));
    }
    let verb = if a.dry_run {
        "would rewrite"
    } else {
        "rewrote"
    };
    println!(
        "{verb} {} of {} objects ({} changed concurrently, {} undecryptable)",
        last.rewritten, last.total, last.conflicts, last.failed
    );
    if last.failed > 0 {
        return Err(
            CliError::new(format!("{} objects could not be decrypted", last.failed))
                .hint("see `keyward encryption status` for which, and why"),
        );
    }
    Ok(())
}
