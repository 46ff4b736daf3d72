//! `keyward kms`: the KMS plugin's commands (init, serve, and the admin calls status, keys,
//! rotate, retire, destroy), their flags, where the keyring lives, how keyring errors are told
//! with the flags that fix them, and the key table and JSON the admin calls print. The root of
//! trust's own commands (`unseal`, `rekey-root`, Shamir shares shown or written) are in `seal`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use super::client::{self, ClientArgs};
use super::error::admin_error;
use super::etcd::{BackendArg, EtcdArgs};
use super::flags::{duration_or_never, socket_access};
use super::observe::{bind_metrics, spawn_metrics, ObserveArgs};
use super::output::{columns, fields, format_time, short_duration};
use super::process::{drain_on_signal, run_until_signal, runtime};
use super::seal::{self as seal_cli, RekeyArgs, ShareOutput, UnsealArgs};
use super::{CliError, DEV_DIR};
use crate::backend::{EtcdBackend, EtcdOptions};
use crate::crypto::Algorithm;
use crate::keyring::{
    self, InitOptions, Keyring, KeyringError, KeyringLocation, RotationPolicy, SealedKeyring,
};
use crate::kms::PluginServer;
use crate::pb::keyward_v1 as admin_pb;
use crate::seal::{self, KdfParams, SealSpec};
use crate::uds::{self, PeerAllow, SocketAccess};

#[derive(Debug, Subcommand)]
pub(super) enum KmsCommand {
    /// Create a sealed keyring with its first key-encryption key.
    ///
    /// Examples:
    ///   keyward kms init --generate-keyfile /etc/keyward/root.key
    ///   keyward kms init --data /var/lib/keyward --seal keyfile:/etc/keyward/root.key
    ///   keyward kms init --data /var/lib/keyward \
    ///     --seal 'pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=keyward;key-label=keyward-root;pin-file=/etc/keyward/hsm.pin'
    ///   keyward kms init --data /var/lib/keyward --seal shamir:shares=5,threshold=3 --share-dir ./shares
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
    Serve(Box<ServeArgs>),
    /// Hand in one Shamir share to a plugin serving sealed (from stdin or --share-file, never
    /// the command line); the keyring opens once enough shares were given.
    ///
    /// Examples:
    ///   keyward kms unseal --admin-socket /var/run/keyward/kms-admin.sock < share-1
    ///   keyward kms unseal --admin-socket /var/run/keyward/kms-admin.sock --share-file /media/usb/share-2
    #[command(verbatim_doc_comment)]
    Unseal(UnsealArgs),
    /// Re-seal every key-encryption key under a new root key (any seal kind to any other); key
    /// ids do not change and the old root key opens nothing afterwards. Restart the plugin with
    /// the new --seal.
    ///
    /// Examples:
    ///   keyward kms rekey-root --new-seal keyfile:/etc/keyward/root-2026.key
    ///   keyward kms rekey-root --new-seal shamir:shares=5,threshold=3 --share-dir ./new-shares
    #[command(verbatim_doc_comment)]
    RekeyRoot(RekeyArgs),
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
pub(super) enum KeyringAt {
    Dir(PathBuf),
    Etcd {
        opts: EtcdOptions,
        prefix: String,
        /// The replica's state directory (`kms serve --state`).
        state: Option<PathBuf>,
    },
}

impl KeyringAt {
    /// The location for the keyring; for etcd, a client that connects when first used.
    pub(super) fn open(&self, stale_after: Duration) -> Result<KeyringLocation, CliError> {
        match self {
            KeyringAt::Dir(dir) => Ok(KeyringLocation::Dir(dir.clone())),
            KeyringAt::Etcd {
                opts,
                prefix,
                state,
            } => {
                let backend = EtcdBackend::connect(opts)
                    .map_err(|e| CliError::new(format!("--etcd-endpoints: {e}")))?;
                Ok(KeyringLocation::Shared {
                    backend: std::sync::Arc::new(backend),
                    prefix: prefix.clone(),
                    label: format!("etcd:{}", opts.endpoints.join(",")),
                    stale_after,
                    state: state.clone(),
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
                    opts: self.etcd.options("--keyring etcd", CliError::new)?,
                    prefix: prefix.to_owned(),
                    state: None,
                }))
            }
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct InitArgs {
    #[command(flatten)]
    at: KeyringArgs,
    /// Root key source: keyfile:PATH, passphrase-file:PATH,
    /// pkcs11:module=PATH;token=LABEL;key-label=LABEL;pin-file=PATH or shamir:shares=N,threshold=M.
    #[arg(long, env = "KEYWARD_SEAL", value_name = "SEAL")]
    seal: Option<String>,
    #[command(flatten)]
    shares: ShareOutput,
    /// Write a new root key file (32 random bytes, base64, mode 0600); never overwrites.
    /// With --data and no --seal, the new file also seals the keyring.
    #[arg(long, value_name = "PATH")]
    generate_keyfile: Option<PathBuf>,
    /// AEAD for this keyring's key-encryption keys.
    #[arg(long, value_enum, default_value_t = AlgorithmArg::Aes256Gcm)]
    algorithm: AlgorithmArg,
    /// Argon2id memory in KiB for passphrase-file: (minimum 19456; default 65536).
    #[arg(long, value_name = "KIB")]
    argon2_memory_kib: Option<u32>,
    /// Argon2id iterations for passphrase-file: (minimum 2; default 3).
    #[arg(long, value_name = "N")]
    argon2_iterations: Option<u32>,
    /// Argon2id lanes for passphrase-file: (default 4).
    #[arg(long, value_name = "N")]
    argon2_parallelism: Option<u32>,
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
pub(super) struct ServeArgs {
    #[command(flatten)]
    at: KeyringArgs,
    /// With --keyring etcd: report unhealthy once the replica could not confirm for this long
    /// that its keyring is current (it keeps serving the keys it has).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    etcd_stale_after: String,
    /// Root key source: keyfile:PATH, passphrase-file:PATH,
    /// pkcs11:module=PATH;token=LABEL;key-label=LABEL;pin-file=PATH, or shamir (start sealed and
    /// wait for `keyward kms unseal`).
    #[arg(long, env = "KEYWARD_SEAL", value_name = "SEAL")]
    seal: String,
    /// With --keyring etcd: this replica's state directory (created 0700). It keeps the newest
    /// keyring generation this replica accepted, so that a restart refuses a keyring rolled back
    /// in etcd. Without it, only a running replica detects a rollback.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Unix socket for kube-apiserver (KMS v2, KMS v1, gRPC health).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Unix socket for the admin API (rotate, keys, retire). Omit to serve no admin API.
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    pub(super) observe: ObserveArgs,
    #[command(flatten)]
    audit: super::access::KmsAuditArgs,
}

/// How a plugin serves: `kms serve` and `dev`.
#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// Make the sockets 0660 and owned by this group (name or gid); default is 0600.
    #[arg(long, value_name = "GROUP")]
    pub(super) socket_group: Option<String>,
    /// Rotate the primary key once it is this old (e.g. 90d, 12h), or "never".
    #[arg(long, default_value = "90d", value_name = "DURATION")]
    pub(super) rotate_after: String,
    /// Rotate the primary key after this many encryptions, or "never".
    #[arg(long, default_value_t = keyring::DEFAULT_ROTATE_AFTER_ENCRYPTIONS.to_string(), value_name = "N")]
    pub(super) rotate_after_encryptions: String,
    /// How long in-flight calls may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub(super) drain_timeout: String,
    /// Admit callers running as this uid to the admin socket too (repeatable, or
    /// comma-separated), besides the server's own uid and root.
    #[arg(long, value_name = "UID", value_delimiter = ',')]
    pub(super) admin_allow_uid: Vec<u32>,
    /// Admit callers whose group is this one (name or gid) to the admin socket (repeatable, or
    /// comma-separated).
    #[arg(long, value_name = "GROUP", value_delimiter = ',')]
    pub(super) admin_allow_gid: Vec<String>,
}

#[derive(Debug, Args)]
pub(super) struct AdminArgs {
    /// The plugin's admin socket.
    #[arg(long, value_name = "PATH", default_value_os_t = Path::new(DEV_DIR).join("kms-admin.sock"))]
    admin_socket: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Output {
    Text,
    Json,
}

/// Runs `keyward kms ...`; the admin calls go to `--admin-socket`, and `retire` checks the
/// store that `store` names.
pub(super) fn kms(cmd: KmsCommand, store: &ClientArgs) -> Result<(), CliError> {
    let (args, call) = match cmd {
        KmsCommand::Init(a) => return init(a),
        KmsCommand::Serve(a) => return serve(*a),
        KmsCommand::Unseal(a) => return runtime()?.block_on(seal_cli::unseal(a)),
        KmsCommand::RekeyRoot(a) => return runtime()?.block_on(seal_cli::rekey_root(a)),
        KmsCommand::Status(a) => (a, Call::Status),
        KmsCommand::Keys(a) => (a, Call::Keys),
        KmsCommand::Rotate(a) => (a, Call::Rotate),
        KmsCommand::Retire {
            key_id,
            force,
            admin,
        } => (admin, Call::Retire { key_id, force }),
        KmsCommand::Destroy {
            key_id,
            confirm,
            admin,
        } => (admin, Call::Destroy { key_id, confirm }),
    };
    runtime()?.block_on(admin(&args, call, store))
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
    let seal = trusted(seal)?;
    // A key file of zeros (`head -c 32 /dev/zero`, a mistake for /dev/urandom) is no key.
    if let SealSpec::KeyFile(path) = &seal {
        if seal::keyfile::read_keyfile(path).is_ok_and(|k| k.key().expose() == &[0u8; 32]) {
            return Err(CliError::new(format!(
                "--seal keyfile:{}: the key file holds 32 zero bytes, which is no key",
                path.display()
            ))
            .hint(
                "write one with `keyward kms init --generate-keyfile PATH` (or from /dev/urandom)",
            ));
        }
    }
    let argon2 = [
        a.argon2_memory_kib,
        a.argon2_iterations,
        a.argon2_parallelism,
    ];
    let kdf = match seal {
        SealSpec::PassphraseFile(_) => Some(KdfParams::new(
            a.argon2_memory_kib.unwrap_or(65536),
            a.argon2_iterations.unwrap_or(3),
            a.argon2_parallelism.unwrap_or(4),
        )?),
        _ if argon2.iter().any(Option::is_some) => {
            return Err(CliError::new(
                "--argon2-memory-kib, --argon2-iterations and --argon2-parallelism apply to \
                 --seal passphrase-file:PATH (a passphrase is stretched; a key file, an HSM key \
                 or Shamir shares are not)",
            ))
        }
        _ => None,
    };
    if matches!(seal, SealSpec::Shamir(None)) {
        return Err(CliError::new(
            "--seal shamir: a new keyring needs its counts: shamir:shares=N,threshold=M",
        ));
    }
    a.shares.check(&seal)?;
    let init = InitOptions {
        algorithm: a.algorithm.into(),
        kdf,
    };
    let created = runtime()?.block_on(async {
        let location = at.open(keyring::DEFAULT_STALE_AFTER)?;
        Keyring::create(&location, &seal, &init)
            .await
            .map_err(|e| keyring_error(e, &at))
    })?;
    let first = created.first;
    let place = match at {
        KeyringAt::Dir(data) => data.display().to_string(),
        KeyringAt::Etcd { opts, prefix, .. } => format!(
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
    match created.shares {
        Some(shares) => a.shares.emit(&shares),
        None => Ok(()),
    }
}

/// `seal` with its files' real paths, refused if another user could have chosen one of them
/// (see [`SealSpec::into_trusted`]: the rule `rekey-root` applies to the seal it is handed).
fn trusted(seal: SealSpec) -> Result<SealSpec, CliError> {
    seal.into_trusted()
        .map_err(|e| CliError::new(format!("--seal: {e}")))
}

/// Runs `keyward kms serve` until SIGTERM or SIGINT, then drains.
fn serve(a: ServeArgs) -> Result<(), CliError> {
    let seal: SealSpec = a.seal.parse()?;
    let opts = ServeOptions::parse(&a.run)?;
    let stale_after =
        duration_or_never("--etcd-stale-after", &a.etcd_stale_after)?.unwrap_or(Duration::MAX);
    let Some(mut at) = a.at.location()? else {
        return Err(CliError::new("--data DIR is required (or --keyring etcd)"));
    };
    match (&mut at, a.state) {
        (KeyringAt::Etcd { state, .. }, Some(dir)) => *state = Some(dir),
        (KeyringAt::Etcd { .. }, None) => tracing::warn!(
            "--keyring etcd without --state: a restart of this replica cannot detect a keyring \
             rolled back in etcd"
        ),
        (KeyringAt::Dir(_), Some(_)) => {
            return Err(CliError::new(
                "--state applies to --keyring etcd; a keyring in --data needs no other state",
            ))
        }
        (KeyringAt::Dir(_), None) => {}
    }
    let allows = !a.run.admin_allow_uid.is_empty() || !a.run.admin_allow_gid.is_empty();
    if a.admin_socket.is_none() && allows {
        return Err(CliError::new(
            "--admin-allow-uid and --admin-allow-gid admit callers to the admin socket: give \
             --admin-socket PATH too (without it there is none)",
        ));
    }
    if a.admin_socket.as_deref() == Some(a.socket.as_path()) {
        return Err(CliError::new(
            "--admin-socket must differ from --socket: the admin API has a socket of its own \
             (in another directory, which kube-apiserver does not mount)",
        ));
    }
    let metrics_listen = a.observe.metrics_listen()?;
    // The flags are checked first; then the files they name.
    let seal = trusted(seal)?;
    let rt = runtime()?;
    let opened = if seal.needs_shares() {
        if a.admin_socket.is_none() {
            return Err(CliError::new(
                "--seal shamir needs --admin-socket: the shares are handed in there",
            ));
        }
        let location = at.open(stale_after)?;
        let storage = match &at {
            KeyringAt::Dir(dir) => format!("sled:{}", dir.display()),
            KeyringAt::Etcd { opts, prefix, .. } => format!(
                "etcd:{} key {}",
                opts.endpoints.join(","),
                keyring::shared_key(prefix)
            ),
        };
        let sealed = rt
            .block_on(SealedKeyring::open(&location, opts.policy))
            .map_err(|e| keyring_error(e, &at))?;
        Opened::Sealed(Box::new(sealed), storage)
    } else {
        Opened::Open(rt.block_on(open_keyring(&at, &seal, opts.policy, stale_after))?)
    };
    // Opening reserved a block of encryptions; a start that fails after it (a socket, the
    // metrics address, the audit log) gives it back, as a clean stop does.
    let reserved = match &opened {
        Opened::Open(keyring) => Some(keyring.clone()),
        Opened::Sealed(..) => None,
    };
    let res = rt.block_on(async {
        let token = CancellationToken::new();
        drain_on_signal(token.clone())?;
        let metrics = bind_metrics(metrics_listen).await?;
        // The admin audit key is derived from the root key, unless the keyring waits for
        // its Shamir shares.
        let seed = match &opened {
            Opened::Open(keyring) => Some(keyring.admin_audit_seed().await),
            Opened::Sealed(..) => None,
        };
        let (auditor, log) = a.audit.open(seed).await?;
        let admin = a.admin_socket.as_deref();
        let plugin = match opened {
            Opened::Sealed(sealed, storage) => {
                PluginServer::start_sealed(*sealed, storage, &a.socket, admin, opts.access)?
            }
            Opened::Open(keyring) => PluginServer::start(keyring, &a.socket, admin, opts.access)?,
        };
        let mut plugin = plugin
            .with_admin_audit(auditor)
            .with_admin_allow(opts.admin_allow)?;
        if let Some(metrics) = metrics {
            plugin = plugin.with_metrics(metrics.metrics());
            spawn_metrics(metrics, &token);
        }
        let res = run_until_signal(opts.drain, token.clone(), run_plugin(plugin, token)).await;
        close_audit(log).await;
        res
    });
    if let Some(keyring) = reserved {
        give_back_if_failed(&rt, &res, &keyring);
    }
    res
}

/// After a start or a run that failed (`res`): gives back the encryptions `keyring` reserved
/// and did not use, so that a plugin failing to start (again and again, under a supervisor)
/// does not count a block per attempt as used.
pub(super) fn give_back_if_failed(
    rt: &tokio::runtime::Runtime,
    res: &Result<(), CliError>,
    keyring: &Keyring,
) {
    if res.is_ok() {
        return;
    }
    if let Err(e) = rt.block_on(keyring.release_unused()) {
        tracing::warn!(error = %e, "unused encryption reservations were not given back; the keyring counts them as used");
    }
}

/// The keyring `kms serve` serves: open, or sealed with Shamir shares until `Unseal`.
enum Opened {
    Sealed(Box<SealedKeyring>, String),
    Open(Keyring),
}

/// Writes the admin audit log's shutdown checkpoint.
pub(super) async fn close_audit(log: Option<crate::audit::AuditLog>) {
    if let Some(log) = log {
        if let Err(e) = log.close().await {
            tracing::error!(error = %e, "admin audit log: the shutdown checkpoint was not written");
        }
    }
}

fn policy(run: &RunArgs) -> Result<RotationPolicy, CliError> {
    let max_age = duration_or_never("--rotate-after", &run.rotate_after)?;
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

/// Opens (unseals) the keyring at `at`, its errors worded for the command line.
pub(super) async fn open_keyring(
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
pub(super) fn keyring_error(e: KeyringError, at: &KeyringAt) -> CliError {
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
        e @ KeyringError::RolledBack { .. } => CliError::new(e).hint(
            "someone with write access to etcd put an older keyring document there, or it was \
             restored from a backup; see docs/security.md (\"Recovering from a refused keyring\")",
        ),
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
pub(super) struct ServeOptions {
    pub(super) policy: RotationPolicy,
    pub(super) access: SocketAccess,
    pub(super) drain: Duration,
    pub(super) admin_allow: PeerAllow,
}

impl ServeOptions {
    pub(super) fn parse(run: &RunArgs) -> Result<Self, CliError> {
        Ok(Self {
            policy: policy(run)?,
            access: socket_access(run.socket_group.as_deref())?,
            drain: duration_or_never("--drain-timeout", &run.drain_timeout)?
                .unwrap_or(Duration::from_secs(3600)),
            admin_allow: admin_allow(run)?,
        })
    }
}

/// `--admin-allow-uid` and `--admin-allow-gid`: the server's own uid and root, the uids given
/// and the groups given.
fn admin_allow(run: &RunArgs) -> Result<PeerAllow, CliError> {
    let mut allow = PeerAllow::default();
    for uid in &run.admin_allow_uid {
        if !allow.uids.contains(uid) {
            allow.uids.push(*uid);
        }
    }
    for g in &run.admin_allow_gid {
        let gid =
            uds::resolve_group(g).map_err(|e| CliError::new(format!("--admin-allow-gid: {e}")))?;
        allow.gids.push(gid);
    }
    Ok(allow)
}

/// Serves the plugin until `token` is cancelled and its calls have drained.
pub(super) async fn run_plugin(
    plugin: PluginServer,
    token: CancellationToken,
) -> Result<(), CliError> {
    plugin
        .serve(token.cancelled_owned())
        .await
        .map_err(|e| CliError::new(format!("KMS plugin failed: {e}")))
}

/// An admin call and its arguments.
enum Call {
    Status,
    Keys,
    Rotate,
    Retire { key_id: String, force: bool },
    Destroy { key_id: String, confirm: String },
}

/// A client of the plugin's admin socket `path`.
pub(super) async fn admin_client(
    path: &Path,
) -> Result<admin_pb::kms_admin_client::KmsAdminClient<tonic::transport::Channel>, CliError> {
    // The default (./keyward-dev/kms-admin.sock) only from a dev directory of this user.
    let default = Path::new(DEV_DIR).join("kms-admin.sock");
    let path = if path == default {
        client::dev_socket("kms-admin.sock")?
    } else {
        path.to_owned()
    };
    let path = path.as_path();
    let channel = uds::unix_channel(path.to_owned()).await.map_err(|e| {
        CliError::new(format!(
            "cannot connect to the admin socket {}: {}",
            path.display(),
            super::error::with_causes(&e)
        ))
        .hint("start the plugin (keyward kms serve --admin-socket PATH, or keyward dev), or pass --admin-socket")
    })?;
    Ok(admin_pb::kms_admin_client::KmsAdminClient::new(channel))
}

async fn admin(args: &AdminArgs, call: Call, store: &ClientArgs) -> Result<(), CliError> {
    let mut client = admin_client(&args.admin_socket).await?;
    let json = args.output == Output::Json;
    let mut unhealthy = false;
    let mut sealed = false;
    let out = match call {
        Call::Status => {
            let s = client
                .status(admin_pb::AdminStatusRequest {})
                .await
                .map_err(admin_error)?
                .into_inner();
            unhealthy = s.healthz != "ok";
            sealed = s.sealed;
            if json && s.sealed {
                serde_json::json!({
                    "healthz": s.healthz, "sealed": true, "seal": s.seal, "storage": s.storage,
                    "unseal_given": s.unseal_given, "unseal_threshold": s.unseal_threshold,
                    "unseal_shares": s.unseal_shares,
                })
                .to_string()
            } else if json {
                serde_json::json!({
                    "healthz": s.healthz, "primary_key_id": s.primary_key_id,
                    "keyring_id": s.keyring_id, "algorithm": s.algorithm, "seal": s.seal,
                    "rotate_after_seconds": s.rotate_after_seconds,
                    "rotate_after_encryptions": s.rotate_after_encryptions,
                    "key_count": s.key_count, "storage": s.storage,
                })
                .to_string()
            } else if s.sealed {
                fields(&[
                    ("healthz", s.healthz),
                    ("stored in", s.storage),
                    ("sealed by", s.seal),
                    (
                        "unseal",
                        format!(
                            "{} of {} shares given ({} made)",
                            s.unseal_given, s.unseal_threshold, s.unseal_shares
                        ),
                    ),
                ])
            } else {
                let never = |n: u64, f: &dyn Fn(u64) -> String| {
                    if n == 0 {
                        "never".to_owned()
                    } else {
                        f(n)
                    }
                };
                let rotate = format!(
                    "{} / {} encryptions",
                    never(s.rotate_after_seconds, &short_duration),
                    never(s.rotate_after_encryptions, &|n| n.to_string()),
                );
                fields(&[
                    ("healthz", s.healthz),
                    ("primary key_id", s.primary_key_id),
                    ("keyring", s.keyring_id),
                    ("stored in", s.storage),
                    ("algorithm", s.algorithm),
                    ("sealed by", s.seal),
                    ("keys", s.key_count.to_string()),
                    ("rotate after", rotate),
                ])
            }
        }
        Call::Keys => {
            let keys = client
                .list_keys(admin_pb::ListKeysRequest {})
                .await
                .map_err(admin_error)?
                .into_inner()
                .keys;
            if json {
                serde_json::Value::Array(keys.iter().map(key_json).collect()).to_string()
            } else {
                key_table(&keys)
            }
        }
        Call::Rotate => {
            let r = client
                .rotate(admin_pb::RotateRequest {})
                .await
                .map_err(admin_error)?
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
        Call::Retire { key_id, force } => {
            let unchecked = match force {
                true => None,
                false => check_unreferenced(&key_id, store).await?,
            };
            let r = client.retire(admin_pb::RetireRequest { key_id }).await;
            let k = r.map_err(admin_error)?.into_inner().key;
            // Said once the key is retired (not before a refusal, which says why).
            if let Some(note) = unchecked {
                eprintln!("{note}");
            }
            key_out(k, json, |k| {
                format!(
                    "retired: key_id {} is now {}",
                    k.key_id,
                    state_name(k.state)
                )
            })
        }
        Call::Destroy { key_id, confirm } => {
            let r = client
                .destroy(admin_pb::DestroyRequest { key_id, confirm })
                .await;
            let k = r.map_err(admin_error)?.into_inner().key;
            key_out(k, json, |k| {
                format!("destroyed: key material of {} is erased", k.key_id)
            })
        }
    };
    println!("{out}");
    if sealed {
        return Err(
            CliError::new("the plugin is sealed: it serves no Encrypt or Decrypt yet")
                .hint("hand in Shamir shares with `keyward kms unseal`"),
        );
    }
    if unhealthy {
        return Err(
            CliError::new("the plugin reports it is not healthy (healthz is not \"ok\")")
                .hint("see the plugin's log for the failed self-test"),
        );
    }
    Ok(())
}

/// Refuses when a reachable keyward store still holds objects under `key_id`; with no store to
/// ask, the note to print once the key is retired.
async fn check_unreferenced(key_id: &str, store: &ClientArgs) -> Result<Option<String>, CliError> {
    let explicit = store.server.as_deref().is_some_and(|s| !s.is_empty());
    if !explicit && !Path::new(DEV_DIR).join("keyward.sock").exists() {
        return Ok(Some(format!("note: no keyward store was checked; data encrypted under {key_id} elsewhere (such as kube-apiserver's etcd) is not checked")));
    }
    let mut c = client::connect_encryption(store).await?;
    let status = c
        .status(crate::pb::keyward_v1::EncryptionStatusRequest {
            all_objects: false,
            include_history: true,
        })
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
    if let Some(n) = status.history_kms_key_ids.get(key_id) {
        return Err(CliError::new(format!(
            "key_id {key_id} still protects {n} older versions the store keeps (history, \
             rollback, watches from a past revision); retiring it would make them unreadable"
        ))
        .hint(
            "pass --force to retire it anyway (those versions can then no longer be read); \
             they leave as the Secrets are written again or deleted",
        ));
    }
    Ok(None)
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

/// A key the plugin returned, as JSON or as `text` says it.
fn key_out(
    k: Option<admin_pb::KeyInfo>,
    json: bool,
    text: impl FnOnce(&admin_pb::KeyInfo) -> String,
) -> String {
    let k = k.unwrap_or_default();
    if json {
        key_json(&k).to_string()
    } else {
        text(&k)
    }
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

/// The keys, one a line; STATE, ALGORITHM and CREATED as wide as their longest possible value
/// (`decrypt-only`, `xchacha20-poly1305`, an RFC 3339 time), so tables line up across calls.
fn key_table(keys: &[admin_pb::KeyInfo]) -> String {
    let mut rows = vec![["KEY_ID", "STATE", "ALGORITHM", "CREATED", "ENCRYPTIONS"]
        .map(String::from)
        .to_vec()];
    rows.extend(keys.iter().map(|k| {
        vec![
            k.key_id.clone(),
            state_name(k.state).to_owned(),
            k.algorithm.clone(),
            format_time(k.created_unix),
            k.encryptions.to_string(),
        ]
    }));
    let mut table = columns(&rows, 2, &[0, 12, 18, 20]);
    table.pop();
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_counts_are_validated() {
        let run = |age: &str, n: &str| RunArgs {
            socket_group: None,
            rotate_after: age.into(),
            rotate_after_encryptions: n.into(),
            drain_timeout: "10s".into(),
            admin_allow_uid: Vec::new(),
            admin_allow_gid: Vec::new(),
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
    fn key_table_columns_line_up_whatever_the_keys() {
        let key = |id: &str, state: admin_pb::KeyState| admin_pb::KeyInfo {
            key_id: id.into(),
            state: state as i32,
            algorithm: "aes-256-gcm".into(),
            created_unix: 0,
            encryptions: 7,
        };
        assert_eq!(
            key_table(&[
                key("kw-1-0f3a", admin_pb::KeyState::Primary),
                key("kw-1-77", admin_pb::KeyState::DecryptOnly)
            ]),
            "KEY_ID     STATE         ALGORITHM           CREATED               ENCRYPTIONS\n\
             kw-1-0f3a  primary       aes-256-gcm         1970-01-01T00:00:00Z  7\n\
             kw-1-77    decrypt-only  aes-256-gcm         1970-01-01T00:00:00Z  7"
        );
        assert_eq!(
            key_table(&[]),
            "KEY_ID  STATE         ALGORITHM           CREATED               ENCRYPTIONS"
        );
    }
}
