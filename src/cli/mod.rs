//! The command line: argument definitions, output, process hardening and signal handling.
//!
//! Errors from the library are wrapped with what to do next; nothing below this module prints.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

mod apply;
mod bench;
mod client;
mod consume;
mod encryption;
mod manifest;
mod secrets;
mod serve;

use crate::backend::{BackendSpec, EtcdBackend, EtcdOptions, SledOptions};
use crate::crypto::Algorithm;
use crate::keyring::{self, InitOptions, Keyring, KeyringError, KeyringLocation, RotationPolicy};
use crate::kms::PluginServer;
use crate::pb::keyward_v1 as admin_pb;
use crate::seal::{self, KdfParams, SealSpec};
use crate::uds as socket;

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
    Kms(KmsCommand),
    /// Run the KMS plugin and the secret store on a development data directory (created on
    /// first use; restarting on the same directory keeps every secret).
    ///
    /// Example: keyward dev --data ./keyward-dev
    Dev(DevArgs),
    /// Serve the encrypted secret store (keyward.v1.Secrets) on a Unix socket, and optionally
    /// on TCP with TLS and client authentication.
    ///
    /// Example:
    ///   keyward server --data /var/lib/keyward/store \
    ///     --encryption-config /etc/keyward/encryption-config.yaml --socket /run/keyward/keyward.sock
    #[command(verbatim_doc_comment)]
    Server(Box<ServerArgs>),
    /// Show stored bytes exactly as stored, like `etcdctl get`: values are encrypted.
    #[command(subcommand)]
    Raw(RawCommand),
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
    ///   keyward bench unix-pingpong --concurrency 64
    #[command(verbatim_doc_comment, subcommand)]
    Bench(bench::BenchCommand),
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
}

#[derive(Debug, Subcommand)]
enum RawCommand {
    /// Print one key and its stored value.
    ///
    /// Example: keyward raw get /registry/secrets/default/db
    Get {
        /// The storage key.
        key: String,
        /// Print the value as a hex dump instead of raw bytes.
        #[arg(long)]
        hex: bool,
    },
    /// Print every key with a prefix and its stored value.
    ///
    /// Example: keyward raw list /registry/secrets/ --keys-only
    List {
        /// Key prefix.
        prefix: String,
        /// Print only the keys.
        #[arg(long)]
        keys_only: bool,
        /// Print values as hex dumps instead of raw bytes.
        #[arg(long)]
        hex: bool,
        /// Stop after this many keys (0 = all).
        #[arg(long, default_value_t = 0)]
        limit: i64,
    },
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Where Secrets are stored: embedded sled in --data, or an etcd cluster.
    #[arg(long, value_enum, default_value_t = BackendArg::Sled)]
    backend: BackendArg,
    /// Directory of the embedded (sled) store (--backend sled).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(flatten)]
    etcd: EtcdArgs,
    /// kube-apiserver's EncryptionConfiguration file (apiserver.config.k8s.io/v1).
    #[arg(long, value_name = "FILE")]
    encryption_config: PathBuf,
    /// Unix socket for the API (mode 0600, or 0660 with --socket-group).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Make the socket 0660 and owned by this group (name or gid).
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// Also listen on TCP (requires --tls-cert, --tls-key and --client-ca or --tokens-file).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain for the TCP listener.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the TCP listener (mode 0600).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Accept TCP clients presenting a certificate signed by this PEM CA.
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Accept TCP clients presenting `authorization: Bearer <token>` for a token in this file
    /// (one per line, mode 0600).
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    /// How long in-flight calls may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    drain_timeout: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Sled,
    Etcd,
}

/// How to reach etcd (`server --backend etcd`, `kms serve --keyring etcd`).
#[derive(Debug, Args)]
struct EtcdArgs {
    /// etcd client URLs, comma-separated (http://host:2379 or https://host:2379).
    #[arg(long, value_name = "URL,...", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// PEM CA that signed the etcd servers' certificates (https endpoints).
    #[arg(long, value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd's client-certificate authentication.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert (mode 0600).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
}

impl EtcdArgs {
    /// Whether any etcd flag was given.
    fn given(&self) -> bool {
        !self.etcd_endpoints.is_empty()
            || self.etcd_ca.is_some()
            || self.etcd_cert.is_some()
            || self.etcd_key.is_some()
    }

    /// The client options; `who` names the flag that selected etcd, for errors.
    fn options(&self, who: &str) -> Result<EtcdOptions, CliError> {
        let endpoints: Vec<String> = self
            .etcd_endpoints
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(CliError::new(format!(
                "{who} needs --etcd-endpoints (e.g. http://127.0.0.1:2379)"
            )));
        }
        for e in &endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(CliError::new(format!(
                    "--etcd-endpoints: {e:?} must start with http:// or https://"
                )));
            }
        }
        Ok(EtcdOptions {
            endpoints,
            ca: self.etcd_ca.clone(),
            cert: self.etcd_cert.clone(),
            key: self.etcd_key.clone(),
            ..EtcdOptions::default()
        })
    }
}

/// Store settings shared by `server` and `dev`.
#[derive(Debug, Args)]
struct StoreArgs {
    /// Storage key prefix, like kube-apiserver's --etcd-prefix.
    #[arg(long, default_value = "/registry", value_name = "PREFIX")]
    etcd_prefix: String,
    /// Versions of each Secret kept for history and rollback (0 = all). On etcd, which keeps
    /// every version until it is compacted, the most versions `history` shows.
    #[arg(long, default_value_t = 10, value_name = "N")]
    history: usize,
    /// Feature gates, like kube-apiserver's; only KMSv1=true|false is known.
    #[arg(long, value_name = "GATES")]
    feature_gates: Option<String>,
    /// Re-read the encryption configuration every minute and swap in valid changes, keeping the
    /// old one on any error (kube-apiserver's --encryption-provider-config-automatic-reload).
    #[arg(long)]
    encryption_config_automatic_reload: bool,
    /// Re-encrypt stale data on its own: at start and after every change of write key or KMS
    /// key_id, once --auto-migrate-settle has passed.
    #[arg(long)]
    auto_migrate: bool,
    /// How long to wait after a key change before migrating (Kubernetes recommends 3 + N + M
    /// minutes: every apiserver and plugin must have moved to the new key).
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    auto_migrate_settle: String,
}

#[derive(Debug, Subcommand)]
enum KmsCommand {
    /// Create a sealed keyring with its first key-encryption key.
    ///
    /// Examples:
    ///   keyward kms init --generate-keyfile /etc/keyward/root.key
    ///   keyward kms init --data /var/lib/keyward --seal keyfile:/etc/keyward/root.key
    ///   keyward kms init --keyring etcd --etcd-endpoints https://10.0.0.1:2379,https://10.0.0.2:2379 \
    ///     --etcd-ca /etc/keyward/etcd-ca.crt --seal keyfile:/etc/keyward/root.key
    #[command(verbatim_doc_comment)]
    Init(InitArgs),
    /// Serve KMS v2 and v1 on --socket and the admin API on --admin-socket.
    ///
    /// Example:
    ///   keyward kms serve --data /var/lib/keyward --seal keyfile:/etc/keyward/root.key \
    ///     --socket /var/run/keyward/kms.sock --admin-socket /var/run/keyward/kms-admin.sock
    ///
    /// One keyring shared by a replica on every control-plane node (same root key everywhere):
    ///   keyward kms serve --keyring etcd --etcd-endpoints https://10.0.0.1:2379,https://10.0.0.2:2379 \
    ///     --etcd-ca /etc/keyward/etcd-ca.crt --seal keyfile:/etc/keyward/root.key \
    ///     --socket /var/run/keyward/kms.sock --admin-socket /var/run/keyward/kms-admin.sock
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
    /// Show the plugin's health, primary key and rotation policy; exits non-zero unless healthy.
    ///
    /// Example: keyward kms status --admin-socket /var/run/keyward/kms-admin.sock -o json
    #[command(verbatim_doc_comment)]
    Status(AdminArgs),
    /// List every key-encryption key with its state and use count.
    ///
    /// Example: keyward kms keys --admin-socket /var/run/keyward/kms-admin.sock
    #[command(verbatim_doc_comment)]
    Keys(AdminArgs),
    /// Create a new primary key; the old one keeps decrypting.
    ///
    /// Example: keyward kms rotate --admin-socket /var/run/keyward/kms-admin.sock
    #[command(verbatim_doc_comment)]
    Rotate(AdminArgs),
    /// Stop a decrypt-only key from decrypting (refused for the primary).
    ///
    /// Example: keyward kms retire kw-1-0f3a... --admin-socket /var/run/keyward/kms-admin.sock
    ///
    /// If a keyward store is reachable (--server, $KEYWARD_SERVER or the keyward dev socket),
    /// retiring a key_id that still protects stored objects is refused unless --force: run
    /// `keyward migrate` first. kube-apiserver's own data in etcd cannot be checked from here.
    #[command(verbatim_doc_comment)]
    Retire {
        /// key_id to retire.
        key_id: String,
        /// Retire even if stored objects still need this key.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Erase a retired key's material for good. Data it protects becomes unreadable.
    ///
    /// Example: keyward kms destroy kw-1-0f3a... --confirm kw-1-0f3a...
    #[command(verbatim_doc_comment)]
    Destroy {
        /// key_id to destroy.
        key_id: String,
        /// Repeat the key_id to confirm.
        #[arg(long, value_name = "KEY_ID")]
        confirm: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the keyring lives: `kms init` and `kms serve`.
#[derive(Debug, Args)]
struct KeyringArgs {
    /// Keep the keyring in --data (one plugin), or in etcd, shared by every plugin replica that
    /// has the same root key.
    #[arg(long, value_enum, default_value_t = BackendArg::Sled)]
    keyring: BackendArg,
    /// Data directory for the keyring (--keyring sled).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(flatten)]
    etcd: EtcdArgs,
    /// etcd key prefix of the shared keyring; it is stored at <PREFIX>/kms/keyring.
    #[arg(long, default_value = "/keyward", value_name = "PREFIX")]
    etcd_prefix: String,
}

/// Where a keyring lives, checked.
enum KeyringAt {
    Dir(PathBuf),
    Etcd { opts: EtcdOptions, prefix: String },
}

impl KeyringAt {
    /// The location for the keyring; for etcd, a client that connects when first used.
    fn open(&self, stale_after: Duration) -> Result<KeyringLocation, CliError> {
        match self {
            KeyringAt::Dir(dir) => Ok(KeyringLocation::Dir(dir.clone())),
            KeyringAt::Etcd { opts, prefix } => {
                let backend = EtcdBackend::connect(opts)
                    .map_err(|e| CliError::new(format!("--etcd-endpoints: {e}")))?;
                Ok(KeyringLocation::Shared {
                    backend: std::sync::Arc::new(backend),
                    prefix: prefix.clone(),
                    label: format!("etcd:{}", opts.endpoints.join(",")),
                    stale_after,
                })
            }
        }
    }
}

impl KeyringArgs {
    /// The keyring location; None when nothing names one (allowed only for `init
    /// --generate-keyfile`).
    fn location(&self) -> Result<Option<KeyringAt>, CliError> {
        match (self.keyring, &self.data) {
            (BackendArg::Sled, data) => {
                if self.etcd.given() {
                    return Err(CliError::new(
                        "--etcd-endpoints, --etcd-ca, --etcd-cert and --etcd-key only apply with --keyring etcd",
                    ));
                }
                Ok(data.clone().map(KeyringAt::Dir))
            }
            (BackendArg::Etcd, Some(_)) => Err(CliError::new(
                "--data applies to --keyring sled; with --keyring etcd the keyring lives in etcd",
            )),
            (BackendArg::Etcd, None) => {
                let prefix = self.etcd_prefix.trim();
                if !prefix.starts_with('/') || prefix.trim_matches('/').is_empty() {
                    return Err(CliError::new(format!(
                        "--etcd-prefix: {prefix:?} must be an absolute key prefix such as /keyward"
                    )));
                }
                Ok(Some(KeyringAt::Etcd {
                    opts: self.etcd.options("--keyring etcd")?,
                    prefix: prefix.to_owned(),
                }))
            }
        }
    }
}

#[derive(Debug, Args)]
struct InitArgs {
    #[command(flatten)]
    at: KeyringArgs,
    /// Root key source: keyfile:PATH or passphrase-file:PATH.
    #[arg(long, env = "KEYWARD_SEAL", value_name = "SEAL")]
    seal: Option<String>,
    /// Write a new root key file (32 random bytes, base64, mode 0600); never overwrites.
    /// With --data and no --seal, the new file also seals the keyring.
    #[arg(long, value_name = "PATH")]
    generate_keyfile: Option<PathBuf>,
    /// AEAD for this keyring's key-encryption keys.
    #[arg(long, value_enum, default_value_t = AlgorithmArg::Aes256Gcm)]
    algorithm: AlgorithmArg,
    /// Argon2id memory in KiB for passphrase-file: (minimum 19456).
    #[arg(long, default_value_t = 65536, value_name = "KIB")]
    argon2_memory_kib: u32,
    /// Argon2id iterations for passphrase-file: (minimum 2).
    #[arg(long, default_value_t = 3, value_name = "N")]
    argon2_iterations: u32,
    /// Argon2id lanes for passphrase-file:.
    #[arg(long, default_value_t = 4, value_name = "N")]
    argon2_parallelism: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AlgorithmArg {
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
    #[value(name = "xchacha20-poly1305")]
    XChaCha20Poly1305,
}

impl From<AlgorithmArg> for Algorithm {
    fn from(a: AlgorithmArg) -> Self {
        match a {
            AlgorithmArg::Aes256Gcm => Algorithm::Aes256Gcm,
            AlgorithmArg::XChaCha20Poly1305 => Algorithm::XChaCha20Poly1305,
        }
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    at: KeyringArgs,
    /// With --keyring etcd: report unhealthy once the replica could not confirm for this long
    /// that its keyring is current (it keeps serving the keys it has).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    etcd_stale_after: String,
    /// Root key source: keyfile:PATH or passphrase-file:PATH.
    #[arg(long, env = "KEYWARD_SEAL", value_name = "SEAL")]
    seal: String,
    /// Unix socket for kube-apiserver (KMS v2, KMS v1, gRPC health).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Unix socket for the admin API (rotate, keys, retire). Omit to serve no admin API.
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Make the sockets 0660 and owned by this group (name or gid); default is 0600.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Rotate the primary key once it is this old (e.g. 90d, 12h), or "never".
    #[arg(long, default_value = "90d", value_name = "DURATION")]
    rotate_after: String,
    /// Rotate the primary key after this many encryptions, or "never".
    #[arg(long, default_value_t = keyring::DEFAULT_ROTATE_AFTER_ENCRYPTIONS.to_string(), value_name = "N")]
    rotate_after_encryptions: String,
    /// How long in-flight calls may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    drain_timeout: String,
}

#[derive(Debug, Args)]
struct AdminArgs {
    /// The plugin's admin socket.
    #[arg(long, value_name = "PATH", default_value_os_t = Path::new(DEV_DIR).join("kms-admin.sock"))]
    admin_socket: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct DevArgs {
    /// Data directory: root key, keyring, store and sockets (kms.sock, kms-admin.sock,
    /// keyward.sock).
    #[arg(long, value_name = "DIR", default_value = DEV_DIR)]
    data: PathBuf,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    store: StoreArgs,
}

/// A command-line error: what went wrong and, when known, what to do about it.
#[derive(Debug)]
pub struct CliError {
    message: String,
    hint: Option<String>,
    /// Printed as is, without the `error: ` prefix (kubectl-style server errors).
    plain: bool,
}

impl CliError {
    fn new(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            hint: None,
            plain: false,
        }
    }

    /// An error already reported on stderr: exit non-zero, print nothing more.
    fn silent() -> Self {
        Self::plain("")
    }

    fn plain(message: impl std::fmt::Display) -> Self {
        Self {
            plain: true,
            ..Self::new(message)
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::new(e)
    }
}

fn status_error(s: tonic::Status) -> CliError {
    CliError::new(format!("{}: {}", code_name(s.code()), s.message()))
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::NotFound => "not found",
        tonic::Code::FailedPrecondition => "refused",
        tonic::Code::Unavailable => "unavailable",
        _ => "error",
    }
}

/// The umask and core-dump limit the process started with, restored for commands that
/// `keyward run` executes.
static INHERITED: std::sync::OnceLock<(rustix::fs::Mode, rustix::process::Rlimit)> =
    std::sync::OnceLock::new();

/// Prevents key material from reaching core dumps and makes new files private by default.
/// Call first thing in `main`, before any thread starts.
pub fn harden_process() {
    let umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let core = rustix::process::getrlimit(rustix::process::Resource::Core);
    // Only the soft limit: the hard limit stays, so the original can be restored for children.
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: core.maximum,
        },
    );
    let _ = INHERITED.set((umask, core));
}

/// Restores the umask and core-dump limit the process started with, just before `exec`-ing
/// another program (the dumpable flag is reset by `execve` itself).
fn restore_inherited() {
    if let Some((umask, core)) = INHERITED.get() {
        rustix::process::umask(*umask);
        let _ = rustix::process::setrlimit(rustix::process::Resource::Core, *core);
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). The HTTP/2 and gRPC transport crates
/// are additionally capped at `debug`: their `trace` output can include payload bytes.
pub fn init_tracing() {
    use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let cap = ["h2", "hyper", "hyper_util", "tonic", "tower"]
        .into_iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, c| {
            t.with_target(c, LevelFilter::DEBUG)
        });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(env.and(cap)),
        )
        .init();
}

/// Runs a parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.plain => {
            if !e.message.is_empty() {
                eprintln!("{}", e.message);
            }
            if let Some(h) = e.hint {
                eprintln!("hint: {h}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(h) = e.hint {
                eprintln!("hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Kms(KmsCommand::Init(a)) => init(a),
        Command::Kms(KmsCommand::Serve(a)) => {
            let seal: SealSpec = a.seal.parse()?;
            let opts = ServeOptions::parse(&a.run)?;
            let stale_after = parse_duration_or_never("--etcd-stale-after", &a.etcd_stale_after)?
                .unwrap_or(Duration::MAX);
            let Some(at) = a.at.location()? else {
                return Err(CliError::new("--data DIR is required (or --keyring etcd)"));
            };
            let rt = runtime()?;
            let keyring = rt.block_on(open_keyring(&at, &seal, opts.policy, stale_after))?;
            rt.block_on(serve(keyring, &a.socket, a.admin_socket.as_deref(), &opts))
        }
        Command::Kms(cmd) => runtime()?.block_on(admin(cmd, &cli.client)),
        Command::Dev(a) => dev(a),
        Command::Server(a) => server(*a),
        Command::Raw(cmd) => runtime()?.block_on(raw(cmd, &cli.client)),
        Command::Create(a) => secrets::create(a, &cli.client),
        Command::Get(a) => secrets::get(a, &cli.client),
        Command::Describe(a) => secrets::describe(a, &cli.client),
        Command::Edit(a) => secrets::edit(a, &cli.client),
        Command::Delete(a) => secrets::delete(a, &cli.client),
        Command::History(a) => secrets::history(a, &cli.client),
        Command::Rollback(a) => secrets::rollback(a, &cli.client),
        Command::Apply(a) => apply::apply(a, &cli.client),
        Command::Bench(c) => bench::bench(c, &cli.client),
        Command::Encryption(a) => encryption::encryption(a, &cli.client),
        Command::Migrate(a) => encryption::migrate(a, &cli.client),
        Command::Run(a) => consume::run(a, &cli.client),
        Command::Mount(a) => consume::mount(a, &cli.client),
    }
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))
}

fn init(a: InitArgs) -> Result<(), CliError> {
    if let Some(path) = &a.generate_keyfile {
        seal::generate_keyfile(path)?;
        println!("wrote root key file {} (mode 0600)", path.display());
    }
    let Some(at) = a.at.location()? else {
        if a.generate_keyfile.is_some() {
            return Ok(());
        }
        return Err(CliError::new(
            "--data DIR is required (or --keyring etcd, or only --generate-keyfile PATH)",
        ));
    };
    let seal: SealSpec = match (&a.seal, &a.generate_keyfile) {
        (Some(s), _) => s.parse()?,
        (None, Some(p)) => SealSpec::KeyFile(p.clone()),
        (None, None) => {
            return Err(CliError::new("--seal is required with --data")
                .hint("pass --seal keyfile:PATH, or --generate-keyfile PATH to create one"))
        }
    };
    let kdf = match seal {
        SealSpec::PassphraseFile(_) => Some(KdfParams::new(
            a.argon2_memory_kib,
            a.argon2_iterations,
            a.argon2_parallelism,
        )?),
        SealSpec::KeyFile(_) => None,
    };
    let init = InitOptions {
        algorithm: a.algorithm.into(),
        kdf,
    };
    let first = runtime()?.block_on(async {
        let location = at.open(keyring::DEFAULT_STALE_AFTER)?;
        Keyring::init(&location, &seal, &init)
            .await
            .map_err(|e| keyring_error(e, &at))
    })?;
    let place = match at {
        KeyringAt::Dir(data) => data.display().to_string(),
        KeyringAt::Etcd { opts, prefix } => format!(
            "etcd key {} ({})",
            keyring::shared_key(&prefix),
            opts.endpoints.join(",")
        ),
    };
    println!(
        "created keyring in {place} sealed by {}; primary key_id {}",
        seal.kind(),
        first.key_id
    );
    Ok(())
}

fn parse_duration_or_never(flag: &str, s: &str) -> Result<Option<Duration>, CliError> {
    if s == "never" {
        return Ok(None);
    }
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(CliError::new(format!(
            "{flag}: {s:?} is not a positive duration such as 90d, 12h, 30s, or \"never\""
        ))),
    }
}

fn policy(run: &RunArgs) -> Result<RotationPolicy, CliError> {
    let max_age = parse_duration_or_never("--rotate-after", &run.rotate_after)?;
    let max_encryptions = match run.rotate_after_encryptions.as_str() {
        "never" => None,
        s => match s.parse::<u64>() {
            Ok(n) if n > 0 && n <= 1 << 31 => Some(n),
            _ => {
                return Err(CliError::new(format!(
                    "--rotate-after-encryptions: {s:?} is not a number from 1 to 2147483648 or \"never\""
                )))
            }
        },
    };
    Ok(RotationPolicy {
        max_age,
        max_encryptions,
    })
}

async fn open_keyring(
    at: &KeyringAt,
    seal: &SealSpec,
    policy: RotationPolicy,
    stale_after: Duration,
) -> Result<Keyring, CliError> {
    let location = at.open(stale_after)?;
    Keyring::open(&location, seal, policy)
        .await
        .map_err(|e| keyring_error(e, at))
}

/// A keyring error as the command line reports it: with the flags and commands that fix it.
fn keyring_error(e: KeyringError, at: &KeyringAt) -> CliError {
    match e {
        KeyringError::Unseal => CliError::new(e).hint(
            "check that --seal names the root key or passphrase the keyring was created with",
        ),
        KeyringError::NotFound(location) => CliError::new(match at {
            KeyringAt::Dir(dir) => format!(
                "no keyring in {0}; create one with `keyward kms init --data {0} --seal ...`",
                dir.display()
            ),
            KeyringAt::Etcd { .. } => format!(
                "no keyring at {location}; create one with `keyward kms init --keyring etcd --etcd-endpoints ... --seal ...`"
            ),
        }),
        KeyringError::SealMismatch { keyring, given } => CliError::new(format!(
            "the keyring is sealed with {keyring}, but --seal gave {given}"
        )),
        KeyringError::InvalidInput {
            field: "prefix",
            reason,
        } => CliError::new(format!("--etcd-prefix: {reason}")),
        other => CliError::new(other),
    }
}

/// `RunArgs`, checked before anything is opened.
struct ServeOptions {
    policy: RotationPolicy,
    access: socket::SocketAccess,
    drain: Duration,
}

impl ServeOptions {
    fn parse(run: &RunArgs) -> Result<Self, CliError> {
        Ok(Self {
            policy: policy(run)?,
            access: socket::SocketAccess {
                group: run
                    .socket_group
                    .as_deref()
                    .map(socket::resolve_group)
                    .transpose()?,
            },
            drain: parse_duration_or_never("--drain-timeout", &run.drain_timeout)?
                .unwrap_or(Duration::from_secs(3600)),
        })
    }
}

async fn serve(
    keyring: Keyring,
    socket_path: &Path,
    admin_path: Option<&Path>,
    opts: &ServeOptions,
) -> Result<(), CliError> {
    let token = CancellationToken::new();
    serve::cancel_on_signal(token.clone())?;
    let plugin = PluginServer::start(keyring, socket_path, admin_path, opts.access)?;
    serve::run_until_signal(opts.drain, token.clone(), run_plugin(plugin, token)).await
}

/// Serves the plugin until `token` is cancelled and its calls have drained.
async fn run_plugin(plugin: PluginServer, token: CancellationToken) -> Result<(), CliError> {
    plugin
        .serve(token.cancelled_owned())
        .await
        .map_err(|e| CliError::new(format!("KMS plugin failed: {e}")))
}

async fn admin(cmd: KmsCommand, store: &client::ClientArgs) -> Result<(), CliError> {
    let args = match &cmd {
        KmsCommand::Status(a) | KmsCommand::Keys(a) | KmsCommand::Rotate(a) => a,
        KmsCommand::Retire { admin, .. } | KmsCommand::Destroy { admin, .. } => admin,
        KmsCommand::Init(_) | KmsCommand::Serve(_) => unreachable!("handled by run"),
    };
    let channel = socket::unix_channel(args.admin_socket.clone())
        .await
        .map_err(|e| {
            CliError::new(format!(
                "cannot connect to the admin socket {}: {e}",
                args.admin_socket.display()
            ))
            .hint("start the plugin (keyward kms serve --admin-socket PATH, or keyward dev), or pass --admin-socket")
        })?;
    let mut client = admin_pb::kms_admin_client::KmsAdminClient::new(channel);
    let json = args.output == Output::Json;
    let mut unhealthy = false;
    let out = match cmd {
        KmsCommand::Status(_) => {
            let s = client
                .status(admin_pb::AdminStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if s.healthz != "ok" {
                unhealthy = true;
            }
            if json {
                serde_json::json!({
                    "healthz": s.healthz, "primary_key_id": s.primary_key_id,
                    "keyring_id": s.keyring_id, "algorithm": s.algorithm, "seal": s.seal,
                    "rotate_after_seconds": s.rotate_after_seconds,
                    "rotate_after_encryptions": s.rotate_after_encryptions,
                    "key_count": s.key_count, "storage": s.storage,
                })
                .to_string()
            } else {
                let never = |n: u64, f: &dyn Fn(u64) -> String| {
                    if n == 0 {
                        "never".to_owned()
                    } else {
                        f(n)
                    }
                };
                format!(
                    "healthz:         {}\nprimary key_id:  {}\nkeyring:         {}\nstored in:       {}\nalgorithm:       {}\nsealed by:       {}\nkeys:            {}\nrotate after:    {} / {} encryptions",
                    s.healthz,
                    s.primary_key_id,
                    s.keyring_id,
                    s.storage,
                    s.algorithm,
                    s.seal,
                    s.key_count,
                    never(s.rotate_after_seconds, &short_duration),
                    never(s.rotate_after_encryptions, &|n| n.to_string()),
                )
            }
        }
        KmsCommand::Keys(_) => {
            let keys = client
                .list_keys(admin_pb::ListKeysRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .keys;
            if json {
                serde_json::Value::Array(keys.iter().map(key_json).collect()).to_string()
            } else {
                key_table(&keys)
            }
        }
        KmsCommand::Rotate(_) => {
            let r = client
                .rotate(admin_pb::RotateRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let primary = r.primary.unwrap_or_default();
            if json {
                serde_json::json!({"primary": key_json(&primary), "previous_key_id": r.previous_key_id})
                    .to_string()
            } else {
                format!(
                    "rotated: new primary key_id {} (previous {} is now decrypt-only)",
                    primary.key_id, r.previous_key_id
                )
            }
        }
        KmsCommand::Retire { key_id, force, .. } => {
            if !force {
                check_unreferenced(&key_id, store).await?;
            }
            let k = client
                .retire(admin_pb::RetireRequest { key_id })
                .await
                .map_err(status_error)?
                .into_inner()
                .key
                .unwrap_or_default();
            if json {
                key_json(&k).to_string()
            } else {
                format!(
                    "retired: key_id {} is now {}",
                    k.key_id,
                    state_name(k.state)
                )
            }
        }
        KmsCommand::Destroy {
            key_id, confirm, ..
        } => {
            let k = client
                .destroy(admin_pb::DestroyRequest { key_id, confirm })
                .await
                .map_err(status_error)?
                .into_inner()
                .key
                .unwrap_or_default();
            if json {
                key_json(&k).to_string()
            } else {
                format!("destroyed: key material of {} is erased", k.key_id)
            }
        }
        KmsCommand::Init(_) | KmsCommand::Serve(_) => unreachable!("handled by run"),
    };
    println!("{out}");
    if unhealthy {
        return Err(
            CliError::new("the plugin reports it is not healthy (healthz is not \"ok\")")
                .hint("see the plugin's log for the failed self-test"),
        );
    }
    Ok(())
}

/// `90d`, `12h`, `5m` or `30s`: the largest unit that divides `secs` exactly.
fn short_duration(secs: u64) -> String {
    match secs {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Refuses when a reachable keyward store still holds objects under `key_id`.
async fn check_unreferenced(key_id: &str, store: &client::ClientArgs) -> Result<(), CliError> {
    let explicit = store.server.as_deref().is_some_and(|s| !s.is_empty());
    if !explicit && !Path::new(DEV_DIR).join("keyward.sock").exists() {
        eprintln!("note: no keyward store to check; data encrypted under {key_id} elsewhere (such as kube-apiserver's etcd) is not checked");
        return Ok(());
    }
    let mut c = client::connect_encryption(store).await?;
    let status = c
        .status(crate::pb::keyward_v1::EncryptionStatusRequest { all_objects: false })
        .await
        .map_err(client::server_error)?
        .into_inner();
    if status.kms_key_ids.iter().any(|k| k == key_id) {
        let n: i64 = status
            .counts
            .iter()
            .filter(|c| c.key_name.ends_with(&format!("/{key_id}")))
            .map(|c| c.objects)
            .sum();
        return Err(CliError::new(format!(
            "key_id {key_id} still protects {n} stored objects; retiring it would make them unreadable"
        ))
        .hint("run `keyward migrate` first (or pass --force)"));
    }
    Ok(())
}

fn state_name(state: i32) -> &'static str {
    match admin_pb::KeyState::try_from(state) {
        Ok(admin_pb::KeyState::Primary) => "primary",
        Ok(admin_pb::KeyState::DecryptOnly) => "decrypt-only",
        Ok(admin_pb::KeyState::Disabled) => "disabled",
        Ok(admin_pb::KeyState::Destroyed) => "destroyed",
        _ => "unknown",
    }
}

fn format_time(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn key_json(k: &admin_pb::KeyInfo) -> serde_json::Value {
    serde_json::json!({
        "key_id": k.key_id,
        "state": state_name(k.state),
        "algorithm": k.algorithm,
        "created": format_time(k.created_unix),
        "encryptions": k.encryptions,
    })
}

fn key_table(keys: &[admin_pb::KeyInfo]) -> String {
    let width = keys
        .iter()
        .map(|k| k.key_id.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = format!(
        "{:<width$}  {:<12}  {:<18}  {:<20}  ENCRYPTIONS",
        "KEY_ID", "STATE", "ALGORITHM", "CREATED"
    );
    for k in keys {
        let _ = write!(
            out,
            "\n{:<width$}  {:<12}  {:<18}  {:<20}  {}",
            k.key_id,
            state_name(k.state),
            k.algorithm,
            format_time(k.created_unix),
            k.encryptions
        );
    }
    out
}

fn kms_v1_gate(gates: Option<&str>) -> Result<bool, CliError> {
    let mut kms_v1 = false;
    for g in gates
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        match g {
            "KMSv1=true" => kms_v1 = true,
            "KMSv1=false" => kms_v1 = false,
            other => {
                return Err(CliError::new(format!(
                    "--feature-gates: unknown gate {other:?}; only KMSv1=true|false is supported"
                )))
            }
        }
    }
    Ok(kms_v1)
}

/// sled keeps the versions `--history` asks for.
fn sled_options(store: &StoreArgs) -> SledOptions {
    SledOptions {
        history_per_key: store.history,
        ..SledOptions::default()
    }
}

fn store_options(
    backend: BackendSpec,
    encryption_config: PathBuf,
    socket: PathBuf,
    access: socket::SocketAccess,
    store: &StoreArgs,
) -> Result<crate::server::StoreOptions, CliError> {
    Ok(crate::server::StoreOptions {
        backend,
        history: store.history,
        encryption_config,
        kms_v1: kms_v1_gate(store.feature_gates.as_deref())?,
        prefix: store.etcd_prefix.clone(),
        socket,
        access,
        tcp: None,
        automatic_reload: store.encryption_config_automatic_reload,
        auto_migrate: if store.auto_migrate {
            Some(
                parse_duration_or_never("--auto-migrate-settle", &store.auto_migrate_settle)?
                    .unwrap_or(crate::store::migrate::DEFAULT_SETTLE),
            )
        } else {
            None
        },
    })
}

fn server(a: ServerArgs) -> Result<(), CliError> {
    let drain = parse_duration_or_never("--drain-timeout", &a.drain_timeout)?
        .unwrap_or(Duration::from_secs(3600));
    let access = socket::SocketAccess {
        group: a
            .socket_group
            .as_deref()
            .map(socket::resolve_group)
            .transpose()?,
    };
    let backend = match (a.backend, a.data) {
        (BackendArg::Sled, Some(data)) => {
            if a.etcd.given() {
                return Err(CliError::new(
                    "--etcd-endpoints, --etcd-ca, --etcd-cert and --etcd-key only apply with --backend etcd",
                ));
            }
            BackendSpec::Sled {
                dir: data,
                options: sled_options(&a.store),
            }
        }
        (BackendArg::Sled, None) => {
            return Err(
                CliError::new("--backend sled (the default) needs --data DIR").hint(
                    "or store in etcd: --backend etcd --etcd-endpoints http://127.0.0.1:2379",
                ),
            )
        }
        (BackendArg::Etcd, None) => BackendSpec::Etcd(a.etcd.options("--backend etcd")?),
        (BackendArg::Etcd, Some(_)) => {
            return Err(CliError::new(
                "--data applies to --backend sled; with --backend etcd the data lives in etcd",
            ))
        }
    };
    let mut opts = store_options(backend, a.encryption_config, a.socket, access, &a.store)?;
    opts.tcp = match (a.listen, a.tls_cert, a.tls_key) {
        (None, None, None) if a.client_ca.is_none() && a.tokens_file.is_none() => None,
        (None, _, _) => {
            return Err(CliError::new(
                "--tls-cert, --tls-key, --client-ca and --tokens-file only apply with --listen",
            ))
        }
        (Some(_), None, _) | (Some(_), _, None) => return Err(CliError::new(
            "--listen requires TLS: pass --tls-cert and --tls-key",
        )
        .hint("keyward never serves secrets over plaintext TCP; use --socket for local clients")),
        (Some(listen), Some(cert), Some(key)) => {
            if a.client_ca.is_none() && a.tokens_file.is_none() {
                return Err(CliError::new(
                    "--listen requires client authentication: pass --client-ca and/or --tokens-file",
                ));
            }
            Some(serve::tcp_options(
                listen,
                &cert,
                &key,
                a.client_ca.as_deref(),
                a.tokens_file.as_deref(),
            )?)
        }
    };
    runtime()?.block_on(async {
        let token = CancellationToken::new();
        serve::cancel_on_signal(token.clone())?;
        let store = serve::start_store(opts, &token).await?;
        serve::run_until_signal(drain, token, async { Ok(store.serve().await?) }).await
    })
}

fn dev(a: DevArgs) -> Result<(), CliError> {
    let dir = &a.data;
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
    let dir = absolute(dir);
    let root = dir.join("root.key");
    if !root.exists() {
        seal::generate_keyfile(&root)?;
    }
    let seal = SealSpec::KeyFile(root);
    let at = KeyringAt::Dir(dir.join("kms"));
    let rt = runtime()?;
    rt.block_on(async {
        let location = at.open(keyring::DEFAULT_STALE_AFTER)?;
        if !Keyring::exists(&location)
            .await
            .map_err(|e| keyring_error(e, &at))?
        {
            let init = InitOptions {
                algorithm: Algorithm::Aes256Gcm,
                kdf: None,
            };
            Keyring::init(&location, &seal, &init)
                .await
                .map_err(|e| keyring_error(e, &at))?;
        }
        Ok::<_, CliError>(())
    })?;
    let opts = ServeOptions::parse(&a.run)?;
    let keyring = rt.block_on(open_keyring(
        &at,
        &seal,
        opts.policy,
        keyring::DEFAULT_STALE_AFTER,
    ))?;
    let kms_socket = dir.join("kms.sock");
    let admin = dir.join("kms-admin.sock");
    let store_socket = dir.join("keyward.sock");
    let config_path = dir.join("encryption-config.yaml");
    if !config_path.exists() {
        std::fs::write(&config_path, dev_encryption_config(&kms_socket))
            .map_err(|e| CliError::new(format!("cannot write {}: {e}", config_path.display())))?;
    }
    let store_opts = store_options(
        BackendSpec::Sled {
            dir: dir.join("store"),
            options: sled_options(&a.store),
        },
        config_path.clone(),
        store_socket.clone(),
        opts.access,
        &a.store,
    )?;
    let key_id = keyring.health().primary_key_id;
    rt.block_on(async {
        let token = CancellationToken::new();
        serve::cancel_on_signal(token.clone())?;
        let plugin = PluginServer::start(keyring, &kms_socket, Some(&admin), opts.access)?;
        let plugin = tokio::spawn(run_plugin(plugin, token.clone()));
        let store = serve::start_store(store_opts, &token).await?;
        println!(
            "keyward dev: KMS plugin and secret store in {} (development root key {}; not for production)\n\
             \n  secret store:     unix://{}\n  KMS v2/v1 socket: {}\n  admin socket:     {}\n  primary key_id:   {}\n  store config:     {}\n\
             \nTry (from this directory; elsewhere, or with another --data, add --server unix://{}):\n  keyward create secret generic demo --from-literal=password=s3cret\n  keyward get secrets\n  keyward get secret demo -o yaml\n  keyward raw get /registry/secrets/default/demo --hex\n  keyward kms keys --admin-socket {}\n\
             \nEncryptionConfiguration for a kube-apiserver using this plugin:\n\n{}\nStop with Ctrl-C.",
            dir.display(),
            dir.join("root.key").display(),
            store_socket.display(),
            kms_socket.display(),
            admin.display(),
            key_id,
            config_path.display(),
            store_socket.display(),
            admin.display(),
            encryption_config_snippet(&kms_socket),
        );
        let both = async {
            store.serve().await?;
            plugin.await.map_err(|e| CliError::new(format!("KMS plugin task failed: {e}")))?
        };
        serve::run_until_signal(opts.drain, token, both).await
    })
}

/// The store's EncryptionConfiguration for `keyward dev`: kms v2 through the dev plugin.
fn dev_encryption_config(kms_socket: &Path) -> String {
    format!(
        "# Written by keyward dev: Secrets are encrypted with KMS v2 through the dev plugin.\n\
         apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n  \
           - resources:\n      \
               - secrets\n    \
             providers:\n      \
               - kms:\n          \
                   apiVersion: v2\n          \
                   name: keyward-dev\n          \
                   endpoint: unix://{}\n          \
                   timeout: 3s\n",
        kms_socket.display()
    )
}

fn print_raw(
    out: &mut Vec<u8>,
    kv: &crate::pb::keyward_v1::RawKeyValue,
    keys_only: bool,
    hex: bool,
) {
    out.extend_from_slice(kv.key.as_bytes());
    out.push(b'\n');
    if keys_only {
        return;
    }
    if hex {
        for (i, chunk) in kv.value.chunks(16).enumerate() {
            let hexes: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let text: String = chunk
                .iter()
                .map(|b| {
                    if b.is_ascii_graphic() || *b == b' ' {
                        *b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            let _ = writeln!(
                WriteVec(out),
                "{:08x}  {:<47}  |{text}|",
                i * 16,
                hexes.join(" ")
            );
        }
    } else {
        out.extend_from_slice(&kv.value);
        out.push(b'\n');
    }
}

/// `fmt::Write` into a byte buffer.
struct WriteVec<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for WriteVec<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

async fn raw(cmd: RawCommand, client: &client::ClientArgs) -> Result<(), CliError> {
    use crate::pb::keyward_v1 as pb;
    use std::io::Write as _;
    let mut out = Vec::new();
    match cmd {
        RawCommand::Get { key, hex } => {
            let kv = client::connect(client)
                .await?
                .raw_get(pb::RawGetRequest { key })
                .await
                .map_err(client::server_error)?
                .into_inner()
                .kv
                .unwrap_or_default();
            print_raw(&mut out, &kv, false, hex);
        }
        RawCommand::List {
            prefix,
            keys_only,
            hex,
            limit,
        } => {
            let kvs = client::connect(client)
                .await?
                .raw_list(pb::RawListRequest { prefix, limit })
                .await
                .map_err(client::server_error)?
                .into_inner()
                .kvs;
            for kv in &kvs {
                print_raw(&mut out, kv, keys_only, hex);
            }
        }
    }
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| CliError::new(format!("cannot write to stdout: {e}")))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// An EncryptionConfiguration that makes kube-apiserver use the plugin at `socket` for Secrets.
pub fn encryption_config_snippet(socket: &Path) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n  \
           - resources:\n      \
               - secrets\n    \
             providers:\n      \
               - kms:\n          \
                   apiVersion: v2\n          \
                   name: keyward\n          \
                   endpoint: unix://{}\n          \
                   timeout: 3s\n      \
               - identity: {{}}\n",
        socket.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_and_counts_are_validated() {
        let run = |age: &str, n: &str| RunArgs {
            socket_group: None,
            rotate_after: age.into(),
            rotate_after_encryptions: n.into(),
            drain_timeout: "10s".into(),
        };
        let p = policy(&run("90d", "1000")).unwrap();
        assert_eq!(p.max_age, Some(Duration::from_secs(90 * 86400)));
        assert_eq!(p.max_encryptions, Some(1000));
        let p = policy(&run("never", "never")).unwrap();
        assert_eq!((p.max_age, p.max_encryptions), (None, None));
        for (age, n, want) in [
            ("0s", "1", "--rotate-after"),
            ("soon", "1", "--rotate-after"),
            ("1d", "0", "--rotate-after-encryptions"),
            ("1d", "-3", "--rotate-after-encryptions"),
            ("1d", "9999999999999", "--rotate-after-encryptions"),
        ] {
            let e = policy(&run(age, n)).unwrap_err();
            assert!(e.message.starts_with(want), "{}", e.message);
        }
    }

    #[test]
    fn snippet_uses_v2_and_unix_endpoint() {
        let s = encryption_config_snippet(Path::new("/run/k/kms.sock"));
        assert!(s.contains("apiVersion: v2"));
        assert!(s.contains("endpoint: unix:///run/k/kms.sock"));
    }
}
