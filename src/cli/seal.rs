//! The root of trust on the command line: Shamir shares shown once or written to their own 0600
//! files (`kms init`, `kms rekey-root`), `keyward kms unseal` (one share per call, from stdin or
//! a file, never argv) and `keyward kms rekey-root`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::Args;

use super::kms::admin_client;
use super::{CliError, DEV_DIR};
use crate::pb::keyward_v1 as admin_pb;
use crate::seal::{self, SealSpec, SplitShares};

/// Largest share file read.
const MAX_SHARE_FILE: u64 = 1024;

/// Where new Shamir shares go.
#[derive(Debug, Args)]
pub(super) struct ShareOutput {
    /// With a shamir: seal, write each new share to its own file DIR/share-N (mode 0600; DIR is
    /// created 0700 if missing) instead of printing them.
    #[arg(long, value_name = "DIR")]
    share_dir: Option<PathBuf>,
}

impl ShareOutput {
    /// Refuses --share-dir without a new Shamir seal, and a directory where the share files
    /// cannot be created, before anything is changed.
    pub(super) fn check(&self, seal: &SealSpec) -> Result<(), CliError> {
        let Some(dir) = &self.share_dir else {
            return Ok(());
        };
        let SealSpec::Shamir(Some(params)) = seal else {
            return Err(CliError::new(
                "--share-dir only applies with --seal shamir:shares=N,threshold=M",
            ));
        };
        if dir.exists() && !dir.is_dir() {
            return Err(CliError::new(format!(
                "--share-dir: {} is not a directory",
                dir.display()
            )));
        }
        for n in 1..=params.shares {
            let path = share_path(dir, n);
            if path.exists() {
                return Err(CliError::new(format!(
                    "--share-dir: {} already exists; refusing to overwrite a share",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Prints the shares, or writes each to its own file; either way says how many unseal.
    pub(super) fn emit(&self, split: &SplitShares) -> Result<(), CliError> {
        let shares: Vec<&str> = split.shares.iter().map(|s| s.as_str()).collect();
        self.emit_lines(&split.set_id, split.threshold, &shares)
    }

    fn emit_lines(&self, set_id: &str, threshold: u8, shares: &[&str]) -> Result<(), CliError> {
        let n = shares.len();
        let Some(dir) = &self.share_dir else {
            println!(
                "Shamir shares of set {set_id}: any {threshold} of these {n} unseal the keyring. \
                 They are shown only now: give each to a different holder."
            );
            for share in shares {
                println!("{share}");
            }
            return Ok(());
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CliError::new(format!("--share-dir {}: {e}", dir.display())))?;
        for (i, share) in shares.iter().enumerate() {
            let path = share_path(dir, (i + 1) as u8);
            let mut line = zeroize::Zeroizing::new(share.to_string());
            line.push('\n');
            if let Err(e) = seal::write_private_file(&path, line.as_bytes()) {
                // The keyring is already sealed under these shares: do not lose them.
                eprintln!("error: {e}; the shares not yet written follow");
                for share in &shares[i..] {
                    println!("{share}");
                }
                return Err(CliError::silent());
            }
        }
        println!(
            "wrote {n} Shamir shares of set {set_id} to {} (share-1 .. share-{n}, mode 0600): \
             any {threshold} unseal the keyring; give each to a different holder",
            dir.display()
        );
        Ok(())
    }
}

fn share_path(dir: &Path, n: u8) -> PathBuf {
    dir.join(format!("share-{n}"))
}

use std::os::unix::fs::DirBuilderExt;

/// `keyward kms unseal`.
#[derive(Debug, Args)]
pub(super) struct UnsealArgs {
    /// The plugin's admin socket.
    #[arg(long, value_name = "PATH", default_value_os_t = Path::new(DEV_DIR).join("kms-admin.sock"))]
    admin_socket: PathBuf,
    /// Read the share from this file (mode 0600 or stricter) instead of stdin.
    #[arg(long, value_name = "FILE")]
    share_file: Option<PathBuf>,
    /// Forget the shares given so far first (with no share: only forget).
    #[arg(long)]
    reset: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = super::kms::Output::Text)]
    output: super::kms::Output,
}

/// Reads one share: from `file`, or one line of stdin (not echoed on a terminal).
fn read_share(file: Option<&Path>, reset: bool) -> Result<zeroize::Zeroizing<String>, CliError> {
    let text = match file {
        Some(path) => {
            let raw = seal::read_private_file(path, MAX_SHARE_FILE)?;
            zeroize::Zeroizing::new(
                String::from_utf8(raw.to_vec())
                    .map_err(|_| CliError::new(format!("{}: not text", path.display())))?,
            )
        }
        None => {
            let stdin = std::io::stdin();
            let tty = stdin.is_terminal();
            if tty && reset {
                return Ok(zeroize::Zeroizing::new(String::new()));
            }
            let echo = tty.then(|| {
                eprint!("Share (input hidden): ");
                let _ = std::io::stderr().flush();
                EchoOff::new()
            });
            let mut line = zeroize::Zeroizing::new(String::new());
            let read = stdin.lock().read_line(&mut line);
            drop(echo);
            if tty {
                eprintln!();
            }
            read.map_err(|e| CliError::new(format!("cannot read a share from stdin: {e}")))?;
            line
        }
    };
    let trimmed = zeroize::Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() && !reset {
        return Err(CliError::new("no share given")
            .hint("pipe one share to stdin, or pass --share-file FILE"));
    }
    Ok(trimmed)
}

/// Terminal echo turned off while a share is typed; restored on drop.
struct EchoOff(Option<rustix::termios::Termios>);

impl EchoOff {
    fn new() -> EchoOff {
        let fd = std::io::stdin();
        let Ok(saved) = rustix::termios::tcgetattr(&fd) else {
            return EchoOff(None);
        };
        let mut quiet = saved.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let ok =
            rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &quiet).is_ok();
        EchoOff(ok.then_some(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

/// Runs `keyward kms unseal`.
pub(super) async fn unseal(a: UnsealArgs) -> Result<(), CliError> {
    let share = read_share(a.share_file.as_deref(), a.reset)?;
    let mut client = admin_client(&a.admin_socket).await?;
    let r = client
        .unseal(admin_pb::UnsealRequest {
            share: share.to_string(),
            reset: a.reset,
        })
        .await
        .map_err(|s| {
            // A refusal of the caller keeps the hint that comes with it; a share that does
            // not fit gets this one.
            let refused = s.code() == tonic::Code::PermissionDenied;
            let e = super::error::admin_error(s);
            if refused || e.message.contains("already open") {
                e
            } else {
                e.hint("check the share, or start again with `keyward kms unseal --reset`")
            }
        })?
        .into_inner();
    if a.output == super::kms::Output::Json {
        println!(
            "{}",
            serde_json::json!({
                "sealed": r.sealed, "given": r.given, "threshold": r.threshold,
                "shares": r.shares, "primary_key_id": r.primary_key_id,
            })
        );
    } else if r.sealed && a.reset && r.given == 0 {
        println!(
            "shares forgotten: 0 of {} given; {} needed",
            r.threshold, r.threshold
        );
    } else if r.sealed {
        println!(
            "share accepted: {} of {} given; {} more needed",
            r.given,
            r.threshold,
            r.threshold.saturating_sub(r.given)
        );
    } else {
        println!(
            "unsealed: the keyring is open; primary key_id {}",
            r.primary_key_id
        );
    }
    Ok(())
}

/// `keyward kms rekey-root`.
#[derive(Debug, Args)]
pub(super) struct RekeyArgs {
    /// The new root key source (read by the plugin, on its host): keyfile:PATH,
    /// passphrase-file:PATH, pkcs11:module=PATH;token=LABEL;key-label=LABEL;pin-file=PATH or
    /// shamir:shares=N,threshold=M. Relative paths are made absolute here.
    #[arg(long, value_name = "SEAL")]
    new_seal: String,
    #[command(flatten)]
    shares: ShareOutput,
    /// The plugin's admin socket.
    #[arg(long, value_name = "PATH", default_value_os_t = Path::new(DEV_DIR).join("kms-admin.sock"))]
    admin_socket: PathBuf,
}

/// `spec` with its relative paths made absolute (the plugin may run elsewhere on this host).
fn absolute(spec: SealSpec) -> Result<SealSpec, CliError> {
    let abs = |p: PathBuf| -> Result<PathBuf, CliError> {
        std::path::absolute(&p).map_err(|e| CliError::new(format!("{}: {e}", p.display())))
    };
    Ok(match spec {
        SealSpec::KeyFile(p) => SealSpec::KeyFile(abs(p)?),
        SealSpec::PassphraseFile(p) => SealSpec::PassphraseFile(abs(p)?),
        SealSpec::Pkcs11(mut p) => {
            p.module = abs(p.module)?;
            p.pin_file = abs(p.pin_file)?;
            SealSpec::Pkcs11(p)
        }
        other => other,
    })
}

/// Runs `keyward kms rekey-root`.
pub(super) async fn rekey_root(a: RekeyArgs) -> Result<(), CliError> {
    let spec: SealSpec = a
        .new_seal
        .parse()
        .map_err(|e| CliError::new(format!("--new-seal: {e}")))?;
    if matches!(spec, SealSpec::Shamir(None)) {
        return Err(CliError::new(
            "--new-seal shamir: new shares need their counts: shamir:shares=N,threshold=M",
        ));
    }
    a.shares.check(&spec)?;
    let spec = absolute(spec)?;
    let mut client = admin_client(&a.admin_socket).await?;
    let r = client
        .rekey_root(admin_pb::RekeyRootRequest {
            new_seal: spec.to_string(),
        })
        .await
        .map_err(super::error::admin_error)?
        .into_inner();
    println!(
        "re-sealed every key under a new root key from {}; key ids are unchanged (primary {}), \
         and the old root key opens nothing now",
        r.seal, r.primary_key_id
    );
    if !r.shares.is_empty() {
        let lines: Vec<&str> = r.shares.iter().map(String::as_str).collect();
        let set = lines[0].split('-').nth(1).unwrap_or("?");
        a.shares.emit_lines(set, r.threshold as u8, &lines)?;
    }
    let serve_seal = match &spec {
        SealSpec::Shamir(_) => "shamir".to_owned(),
        other => other.to_string(),
    };
    eprintln!(
        "note: restart the plugin (every replica sharing this keyring) with --seal '{serve_seal}'"
    );
    Ok(())
}
