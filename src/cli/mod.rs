//! The command line: the `keyward` command and its subcommands, each family's flags and code in
//! its own file, and the dispatch from a parsed command line to them.
//!
//! - `kms`: the KMS plugin (init, serve, admin calls); `seal`: its root of trust (unseal,
//!   rekey-root, Shamir shares); `server`: `server` and `dev`; `raw`;
//!   `secrets`: kubectl-shaped Secret commands; `apply`; `consume`: `run` and `mount`;
//!   `encryption`: `encryption status` and `migrate`; `bench`: the load generators; `audit`:
//!   `audit verify`; `auth`: `auth can-i`, `auth whoami` and `create token`; `access`: the
//!   server's authentication, authorization and audit flags.
//! - Shared: `client` (finding and reaching a server), `etcd` (the `--etcd-*` flags and files),
//!   `flags` (durations, socket groups), `observe` (`--metrics-listen`, `--log-format`), `output` (tables, times, hex dumps), `progress`
//!   (progress bars), `error` ([`CliError`] and the wording of server errors), `process`
//!   (hardening, logging, runtime, signals).
//!
//! Errors from the library are wrapped with what to do next; nothing below this module prints.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod access;
mod apply;
mod audit;
mod auth;
mod bench;
mod client;
mod consume;
mod encryption;
mod error;
mod etcd;
mod flags;
mod jsonpath;
mod kms;
mod kube;
mod observe;
mod output;
mod printer;
mod process;
mod progress;
mod raw;
mod seal;
mod secrets;
mod server;
mod sources;
mod store;

pub use error::CliError;
pub use observe::LogFormat;
pub use process::{harden_process, init_tracing};

/// Default data directory of `keyward dev`.
pub const DEV_DIR: &str = "keyward-dev";

/// keyward: a Kubernetes KMS v2 plugin with a sealed, rotating keyring, and an encrypted
/// secret store with Kubernetes Secret semantics.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: client::ClientArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The KMS plugin: create a keyring, serve it, and manage its keys.
    #[command(subcommand)]
    Kms(kms::KmsCommand),
    /// Run the KMS plugin and the secret store on a development data directory (created on
    /// first use; restarting on the same directory keeps every secret).
    ///
    /// Example: keyward dev --data ./keyward-dev
    Dev(Box<server::DevArgs>),
    /// Serve the encrypted secret store (keyward.v1.Secrets) on a Unix socket, and optionally
    /// on TCP with TLS and client authentication.
    ///
    /// Example:
    ///   keyward server --data /var/lib/keyward/store \
    ///     --encryption-config /etc/keyward/encryption-config.yaml --socket /run/keyward/keyward.sock
    #[command(verbatim_doc_comment)]
    Server(Box<server::ServerArgs>),
    /// Show stored bytes exactly as stored, like `etcdctl get`: values are encrypted.
    #[command(subcommand)]
    Raw(raw::RawCommand),
    /// Create a Secret: generic, docker-registry or tls.
    #[command(subcommand)]
    Create(secrets::CreateCommand),
    /// List Secrets, or print one (-o yaml|json, or one decoded value with --key).
    ///
    /// Examples:
    ///   keyward get secrets -A
    ///   keyward get secret db -o yaml
    ///   keyward get secret db --key password
    #[command(verbatim_doc_comment)]
    Get(secrets::GetArgs),
    /// Show a Secret's metadata and the size of each value (never the values).
    ///
    /// Example: keyward describe secret db -n prod
    #[command(verbatim_doc_comment)]
    Describe(secrets::OneSecret),
    /// Edit a Secret in $EDITOR (then $VISUAL, then vi); a concurrent change is reported,
    /// never overwritten; an unchanged or empty file cancels.
    ///
    /// Example: EDITOR=nano keyward edit secret db
    #[command(verbatim_doc_comment)]
    Edit(secrets::OneSecret),
    /// Delete Secrets.
    ///
    /// Example: keyward delete secret db cache -n prod
    #[command(verbatim_doc_comment)]
    Delete(secrets::DeleteArgs),
    /// List a Secret's retained versions (revision, time, change, keys), newest first.
    ///
    /// Example: keyward history secret db
    #[command(verbatim_doc_comment)]
    History(secrets::OneSecret),
    /// Write an earlier version's content (data, labels, annotations) as a new version.
    ///
    /// Example: keyward rollback secret db --to-revision 42
    #[command(verbatim_doc_comment)]
    Rollback(secrets::RollbackArgs),
    /// Encryption coverage: which provider and key protects every stored object.
    #[command(subcommand)]
    Encryption(encryption::EncryptionCommand),
    /// Re-encrypt every stale object with the current write provider and key (resumable;
    /// concurrent user updates are never overwritten).
    ///
    /// Examples:
    ///   keyward migrate --dry-run
    ///   keyward migrate --rate 500
    #[command(verbatim_doc_comment)]
    Migrate(encryption::MigrateArgs),
    /// Load generators: any KMS v2 plugin, a keyward store or etcd, and the transport floors;
    /// latency percentiles from an HDR histogram.
    ///
    /// Examples:
    ///   keyward bench kms --endpoint unix:///var/run/keyward/kms.sock --op decrypt --concurrency 64
    ///   keyward bench kms --endpoint unix:///var/run/keyward/kms.sock --storm 10000
    ///   keyward bench store --op mixed --value-size 1KiB --concurrency 16 --duration 10s
    ///   keyward bench store --etcd http://127.0.0.1:2379 --op put --concurrency 16
    ///   keyward bench store --op get --rate 5000 --duration 30s
    ///   keyward bench unix-pingpong --concurrency 64
    #[command(verbatim_doc_comment, subcommand)]
    Bench(bench::BenchCommand),
    /// Embedded stores: move a sled store to the log-structured engine (keyward store convert).
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Audit logs: check that a log is intact (keyward audit verify FILE...).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Inspect authorization: may I do this (can-i), and who am I (whoami).
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Print a kubeconfig for another identity on `keyward dev`'s Kubernetes API (a client
    /// certificate signed by the dev CA: CN the user, O the groups).
    ///
    /// Example: keyward kubeconfig --user alice --group devs > alice.kubeconfig
    #[command(verbatim_doc_comment)]
    Kubeconfig(kube::KubeconfigArgs),
    /// Create or update Secrets from manifests (-f) or a kustomization (-k).
    ///
    /// Examples:
    ///   keyward apply -f secrets.yaml
    ///   keyward get secret db -o yaml | keyward apply -f -
    ///   keyward apply -k ./overlays/prod
    #[command(verbatim_doc_comment)]
    Apply(apply::ApplyArgs),
    /// Run a command with Secret values in its environment (the command replaces keyward).
    ///
    /// Examples:
    ///   keyward run --env-from secret/db -- env
    ///   keyward run --env-from secret/db:DB_ --env TOKEN=secret/api:token -- ./server
    #[command(verbatim_doc_comment)]
    Run(consume::RunArgs),
    /// Write a Secret's values as files, swapped in atomically like kubelet does (--watch
    /// follows changes).
    ///
    /// Examples:
    ///   keyward mount secret/db /run/secrets/db
    ///   keyward mount secret/web-tls /etc/web/tls --items tls.crt=server.crt --items tls.key=server.key:0400 --watch
    #[command(verbatim_doc_comment)]
    Mount(consume::MountArgs),
    /// Print a shell completion script for bash, zsh or fish.
    ///
    /// Examples:
    ///   source <(keyward completion bash)
    ///   keyward completion zsh > "${fpath[1]}/_keyward"
    ///   keyward completion fish > ~/.config/fish/completions/keyward.fish
    #[command(verbatim_doc_comment)]
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

impl Cli {
    /// The log format the command asks for (`--log-format` of `kms serve`, `server` and `dev`;
    /// text for every other command).
    pub fn log_format(&self) -> LogFormat {
        match &self.command {
            Command::Kms(kms::KmsCommand::Serve(a)) => a.observe.log_format,
            Command::Dev(a) => a.observe.log_format,
            Command::Server(a) => a.observe.log_format,
            _ => LogFormat::Text,
        }
    }

    /// Whether the command serves the secret store (`server`, `dev`): the commands whose CPU per
    /// request the binary trades memory for (its choice of allocator).
    pub fn serves_store(&self) -> bool {
        matches!(self.command, Command::Dev(_) | Command::Server(_))
    }
}

/// Shells `keyward completion` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Cli {
    /// Parses the process's arguments. A usage error ends the process as clap's do (status
    /// 2), but with kubectl's status 1 under `keyward auth`, whose exit status is its answer.
    pub fn parse_args() -> Self {
        let args = namespace_after_command(std::env::args_os().collect());
        match Self::try_parse_from(&args) {
            Ok(cli) => cli,
            Err(e) if e.use_stderr() && is_auth_command(&args) => {
                // Nothing more can be reported if stderr is gone.
                let _ = e.print();
                std::process::exit(1)
            }
            Err(e) => e.exit(),
        }
    }
}

/// kubectl takes `-n NS` before its verb (`kubectl -n prod get secrets`); keyward's commands
/// take it after theirs: a leading `-n NS`, `-nNS`, `-n=NS`, `--namespace NS` or
/// `--namespace=NS` is moved to the end of the command's own arguments (before a `--`).
fn namespace_after_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return args;
    };
    let taken = match first {
        "-n" | "--namespace" if args.len() > 2 => 2,
        f if f.starts_with("--namespace=") || (f.starts_with("-n") && f.len() > 2) => 1,
        _ => return args,
    };
    let flag: Vec<std::ffi::OsString> = args.drain(1..1 + taken).collect();
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    args.splice(end..end, flag);
    args
}

/// Whether `args` run `keyward auth can-i` or `keyward auth whoami`.
fn is_auth_command(args: &[std::ffi::OsString]) -> bool {
    args.windows(2)
        .any(|w| w[0] == "auth" && (w[1] == "can-i" || w[1] == "whoami"))
}

/// Runs a parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    let json = cli.log_format() == LogFormat::Json;
    let Cli { command, client } = cli;
    let result = match command {
        // Exit codes of its own: 1 tampered, 2 usage.
        Command::Audit(cmd) => return audit::audit(cmd),
        command => run(command, &client),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A server logging JSON ends with a JSON line too: the reason it stopped is the line a
        // log shipper must not drop.
        Err(e) if json && !e.message.is_empty() => {
            match &e.hint {
                Some(hint) => tracing::error!(hint = %hint, "{}", e.message),
                None => tracing::error!("{}", e.message),
            }
            ExitCode::from(e.status)
        }
        Err(e) => {
            e.print();
            ExitCode::from(e.status)
        }
    }
}

fn run(command: Command, client: &client::ClientArgs) -> Result<(), CliError> {
    match command {
        Command::Kms(cmd) => kms::kms(cmd, client),
        Command::Dev(a) => server::dev(*a),
        Command::Server(a) => server::server(*a),
        Command::Raw(cmd) => process::runtime()?.block_on(raw::raw(cmd, client)),
        Command::Create(a) => secrets::create(a, client),
        Command::Get(a) => secrets::get(a, client),
        Command::Describe(a) => secrets::describe(a, client),
        Command::Edit(a) => secrets::edit(a, client),
        Command::Delete(a) => secrets::delete(a, client),
        Command::History(a) => secrets::history(a, client),
        Command::Rollback(a) => secrets::rollback(a, client),
        Command::Apply(a) => apply::apply(a, client),
        Command::Bench(c) => bench::bench(c, client),
        Command::Encryption(a) => encryption::encryption(a, client),
        Command::Migrate(a) => encryption::migrate(a, client),
        Command::Auth(a) => auth::auth(a, client),
        Command::Kubeconfig(a) => kube::kubeconfig_command(a),
        Command::Run(a) => consume::run(a, client),
        Command::Mount(a) => consume::mount(a, client),
        Command::Store(cmd) => store::store(cmd),
        Command::Completion { shell } => completion(shell),
        Command::Audit(_) => unreachable!("`main` runs audit commands"),
    }
}

/// Prints the completion script for `shell`.
fn completion(shell: Shell) -> Result<(), CliError> {
    use clap::CommandFactory as _;
    use std::io::Write as _;
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Into memory first: the generator panics on a failed write, such as a closed pipe.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "keyward", &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|e| CliError::new(format!("cannot write to stdout: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_namespace_goes_after_the_command() {
        let moved = |args: &[&str]| -> Vec<String> {
            namespace_after_command(args.iter().map(std::ffi::OsString::from).collect())
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            moved(&["keyward", "-n", "prod", "get", "secrets"]),
            ["keyward", "get", "secrets", "-n", "prod"]
        );
        assert_eq!(
            moved(&[
                "keyward",
                "--namespace=prod",
                "run",
                "--env",
                "X=secret/a:k",
                "--",
                "env",
                "-n",
                "x"
            ]),
            [
                "keyward",
                "run",
                "--env",
                "X=secret/a:k",
                "--namespace=prod",
                "--",
                "env",
                "-n",
                "x"
            ]
        );
        assert_eq!(
            moved(&["keyward", "-nprod", "delete", "secret", "a"])[4],
            "-nprod"
        );
        // Anything else is left as it is (clap reports what is wrong).
        for args in [
            &["keyward", "get", "-n", "x"][..],
            &["keyward", "-n"],
            &["keyward"],
        ] {
            assert_eq!(moved(args), args);
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
