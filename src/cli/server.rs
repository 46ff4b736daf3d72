//! `keyward server` and `keyward dev`: the store server's flags turned into the library's
//! [`StoreOptions`] (its files read, its errors worded with the flags and hints), and the dev
//! setup: a root key, a keyring, the KMS plugin and a store on kms v2 in one directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::access::AccessArgs;
use super::etcd::EtcdArgs;
use super::flags::{duration_or_never, socket_access};
use super::kms::{keyring_error, open_keyring, run_plugin, KeyringAt, RunArgs, ServeOptions};
use super::observe::{bind_metrics, spawn_metrics, ObserveArgs};
use super::process::{drain_on_signal, run_until_signal, runtime};
use super::{CliError, DEV_DIR};
use crate::backend::{BackendError, BackendSpec, LogOptions, SledOptions};
use crate::crypto::Algorithm;
use crate::keyring::{self, InitOptions, Keyring};
use crate::kms::PluginServer;
use crate::seal::{self, SealSpec};
use crate::server::{ServerError, StoreOptions, StoreServer, TcpOptions};
use crate::uds::SocketAccess;

/// Largest TLS key or tokens file read.
const MAX_PRIVATE_FILE: u64 = 1 << 20;

/// Where the store keeps Secrets: `--backend` of `server` and `dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum StoreBackendArg {
    /// Embedded sled in --data (the engine of stores created before log became the default;
    /// `keyward store convert` moves one to log).
    Sled,
    /// The embedded log-structured engine in --data (the default for a new directory): one
    /// append and one fdatasync per batch of writes, the log's oldest segments cleaned as they
    /// fill with overwritten versions. A directory opens only with the engine that created it.
    Log,
    /// An etcd cluster (--etcd-endpoints; `server` only).
    Etcd,
}

#[derive(Debug, Args)]
pub(super) struct ServerArgs {
    /// Where Secrets are stored: embedded in --data (the log-structured engine, or sled), or an
    /// etcd cluster. Default: the engine that created --data; a new directory gets log.
    #[arg(long, value_enum)]
    backend: Option<StoreBackendArg>,
    /// Directory of the embedded store (--backend sled or log).
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
    /// Also listen on TCP (requires --tls-cert, --tls-key and --client-ca or bearer tokens).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Also serve the Kubernetes API for Secrets (HTTPS, for kubectl and client libraries) on
    /// this address, with --tls-cert, --tls-key and --client-ca.
    #[arg(long, value_name = "ADDR")]
    kube_listen: Option<std::net::SocketAddr>,
    /// Requests (other than watches) one client address may have in flight on --kube-listen;
    /// more get 429 with Retry-After [default: 32].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    kube_max_in_flight_per_client: Option<u32>,
    /// Watches open at once on --kube-listen; more get 429 with Retry-After [default: 512].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    kube_max_watches: Option<u32>,
    /// PEM certificate chain for the TCP listener.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the TCP listener (mode 0600).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Accept TCP clients presenting a certificate signed by this PEM CA.
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Accept clients presenting `authorization: Bearer <token>` for a token in this file
    /// (one per line, mode 0600), as system:masters. Prefer --token-auth-file.
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    #[command(flatten)]
    access_control: AccessArgs,
    /// Most TCP connections open at once (lowered to what the open-file limit allows).
    #[arg(long, default_value_t = 1024, value_name = "N")]
    max_connections: usize,
    /// Most TCP connections open at once from one client address.
    #[arg(long, default_value_t = 64, value_name = "N")]
    max_connections_per_address: usize,
    /// How long a TCP client may take to complete the TLS handshake.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    tls_handshake_timeout: String,
    /// How long in-flight calls may take to finish after SIGTERM/SIGINT.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    drain_timeout: String,
    #[command(flatten)]
    pub(super) observe: ObserveArgs,
}

/// Store settings shared by `server` and `dev`.
#[derive(Debug, Args)]
pub(super) struct StoreArgs {
    /// Storage key prefix, like kube-apiserver's --etcd-prefix.
    #[arg(long, default_value = "/registry", value_name = "PREFIX")]
    etcd_prefix: String,
    /// Versions of each Secret kept for history and rollback (0 = all). On etcd, which keeps
    /// every version until it is compacted, the most versions `history` shows.
    #[arg(long, default_value_t = 10, value_name = "N")]
    history: usize,
    /// Revisions the embedded store keeps in its change log (0 = all): watches may resume and
    /// past revisions may be read only within it, and a deleted Secret's versions are erased
    /// from disk once its delete leaves it. Ignored on etcd, where etcd's compaction decides.
    #[arg(long, default_value_t = SledOptions::default().log_retention, value_name = "REVISIONS")]
    history_window: u64,
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

#[derive(Debug, Args)]
pub(super) struct DevArgs {
    /// Data directory: root key, keyring, store and sockets (kms.sock, kms-admin.sock,
    /// keyward.sock).
    #[arg(long, value_name = "DIR", default_value = DEV_DIR)]
    data: PathBuf,
    /// Engine of the store in DATA/store: the log-structured engine (log), or sled. A store
    /// opens only with the engine that created it. Default: that engine; a new store gets log.
    #[arg(long, value_enum)]
    backend: Option<StoreBackendArg>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    pub(super) observe: ObserveArgs,
    #[command(flatten)]
    access_control: AccessArgs,
    /// Address of the Kubernetes API (default: the last run's, else a free loopback port).
    #[arg(long, value_name = "ADDR")]
    kube_listen: Option<std::net::SocketAddr>,
}

fn kms_v1_gate(gates: Option<&str>) -> Result<bool, CliError> {
    let mut kms_v1 = false;
    for g in gates
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        // As kube-apiserver's gates parse: `Name=<Go bool>`.
        let (name, value) = g.split_once('=').unwrap_or((g, ""));
        if name.trim() != "KMSv1" {
            return Err(CliError::new(format!(
                "--feature-gates: unrecognized feature gate: {}; only KMSv1 is supported",
                name.trim()
            )));
        }
        kms_v1 = match value.trim() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            "" if !g.contains('=') => {
                return Err(CliError::new("--feature-gates: missing bool value for KMSv1"))
            }
            v => {
                return Err(CliError::new(format!(
                    "--feature-gates: invalid value of KMSv1={v}, err: strconv.ParseBool: parsing {v:?}: invalid syntax"
                )))
            }
        };
    }
    Ok(kms_v1)
}

/// The engine `--backend` names, or else the one whose store is in `dir`: sled for a sled
/// store, else the log-structured engine (also for a new directory). Without `--data` only
/// etcd applies, which still needs `--backend etcd` to be said.
fn engine_of(backend: Option<StoreBackendArg>, dir: Option<&Path>) -> StoreBackendArg {
    backend.unwrap_or(match dir {
        Some(dir) if crate::backend::sled::holds_sled_store(dir) => StoreBackendArg::Sled,
        _ => StoreBackendArg::Log,
    })
}

/// An embedded store in `dir`: it keeps the versions `--history` asks for, within the
/// revisions `--history-window` keeps.
fn embedded(backend: StoreBackendArg, dir: PathBuf, store: &StoreArgs) -> BackendSpec {
    match backend {
        StoreBackendArg::Log => BackendSpec::Log {
            dir,
            options: LogOptions {
                history_per_key: store.history,
                log_retention: store.history_window,
                ..LogOptions::default()
            },
        },
        StoreBackendArg::Sled | StoreBackendArg::Etcd => BackendSpec::Sled {
            dir,
            options: SledOptions {
                layer_bytes: crate::backend::sled::DEFAULT_LAYER_BYTES,
                history_per_key: store.history,
                log_retention: store.history_window,
            },
        },
    }
}

/// The store flags that are parsed, not copied: checked before anything is opened or created.
struct StoreFlags {
    kms_v1: bool,
    auto_migrate: Option<Duration>,
}

impl StoreFlags {
    fn parse(store: &StoreArgs) -> Result<Self, CliError> {
        Ok(Self {
            kms_v1: kms_v1_gate(store.feature_gates.as_deref())?,
            auto_migrate: if store.auto_migrate {
                Some(
                    duration_or_never("--auto-migrate-settle", &store.auto_migrate_settle)?
                        .unwrap_or(crate::store::migrate::DEFAULT_SETTLE),
                )
            } else {
                None
            },
        })
    }
}

fn store_options(
    backend: BackendSpec,
    encryption_config: PathBuf,
    socket: PathBuf,
    access: SocketAccess,
    store: &StoreArgs,
    flags: StoreFlags,
) -> crate::server::StoreOptions {
    crate::server::StoreOptions {
        backend,
        history: store.history,
        encryption_config,
        kms_v1: flags.kms_v1,
        prefix: store.etcd_prefix.clone(),
        socket,
        access,
        tcp: None,
        kube: None,
        metrics: None,
        automatic_reload: store.encryption_config_automatic_reload,
        access_control: Default::default(),
        auto_migrate: flags.auto_migrate,
    }
}

/// Runs `keyward server` until SIGTERM or SIGINT, then drains.
pub(super) fn server(a: ServerArgs) -> Result<(), CliError> {
    let drain = duration_or_never("--drain-timeout", &a.drain_timeout)?
        .unwrap_or(Duration::from_secs(3600));
    let metrics_listen = a.observe.metrics_listen()?;
    let access = socket_access(a.socket_group.as_deref())?;
    let engine = engine_of(a.backend, a.data.as_deref());
    let backend = match (engine, a.data) {
        (StoreBackendArg::Sled | StoreBackendArg::Log, Some(data)) => {
            if a.etcd.given() {
                return Err(CliError::new(
                    "--etcd-endpoints, --etcd-ca, --etcd-cert and --etcd-key only apply with --backend etcd",
                ));
            }
            embedded(engine, data, &a.store)
        }
        (StoreBackendArg::Sled | StoreBackendArg::Log, None) => {
            let err = match a.backend {
                Some(StoreBackendArg::Sled) => CliError::new("--backend sled needs --data DIR"),
                Some(_) => CliError::new("--backend log needs --data DIR"),
                None => CliError::new(
                    "--data DIR is needed: the embedded store (the default) keeps Secrets there",
                ),
            };
            return Err(
                err.hint("or store in etcd: --backend etcd --etcd-endpoints http://127.0.0.1:2379")
            );
        }
        (StoreBackendArg::Etcd, None) => {
            BackendSpec::Etcd(a.etcd.options("--backend etcd", CliError::new)?)
        }
        (StoreBackendArg::Etcd, Some(_)) => return Err(CliError::new(
            "--data applies to --backend sled or log; with --backend etcd the data lives in etcd",
        )),
    };
    let flags = StoreFlags::parse(&a.store)?;
    let mut opts = store_options(
        backend,
        a.encryption_config,
        a.socket,
        access,
        &a.store,
        flags,
    );
    opts.access_control = a
        .access_control
        .options(a.tokens_file.iter().cloned().collect())?;
    let tokens = a.tokens_file.is_some() || a.access_control.has_tokens();
    let handshake = duration_or_never("--tls-handshake-timeout", &a.tls_handshake_timeout)?
        .ok_or_else(|| CliError::new("--tls-handshake-timeout: must be a duration such as 10s"))?;
    let conn = crate::net::ConnLimits {
        max_connections: a.max_connections,
        max_per_address: a.max_connections_per_address,
        handshake_timeout: handshake,
        ..crate::net::ConnLimits::default()
    };
    let tls_files = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        _ => None,
    };
    opts.tcp = match (a.listen, &a.tls_cert, &a.tls_key) {
        (None, None, None) if a.client_ca.is_none() => None,
        (None, _, _) if a.kube_listen.is_some() => None,
        (None, _, _) => {
            return Err(CliError::new(
                "--tls-cert, --tls-key and --client-ca only apply with --listen",
            ))
        }
        (Some(_), None, _) | (Some(_), _, None) => return Err(CliError::new(
            "--listen requires TLS: pass --tls-cert and --tls-key",
        )
        .hint("keyward never serves secrets over plaintext TCP; use --socket for local clients")),
        (Some(listen), Some(cert), Some(key)) => {
            if a.client_ca.is_none() && !tokens {
                return Err(CliError::new(
                    "--listen requires client authentication: pass --client-ca and/or --token-auth-file (or --tokens-file)",
                ));
            }
            let mut tcp = tcp_options(listen, cert, key, a.client_ca.as_deref())?;
            tcp.limits = conn;
            Some(tcp)
        }
    };
    let kube_limits = [
        (
            "--kube-max-in-flight-per-client",
            a.kube_max_in_flight_per_client,
        ),
        ("--kube-max-watches", a.kube_max_watches),
    ];
    if a.kube_listen.is_none() {
        if let Some((flag, _)) = kube_limits.iter().find(|(_, v)| v.is_some()) {
            return Err(CliError::new(format!(
                "{flag} only applies with --kube-listen"
            )));
        }
    }
    opts.kube = match (a.kube_listen, tls_files) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(
                CliError::new("--kube-listen requires TLS: pass --tls-cert and --tls-key")
                    .hint("kubectl sends no credentials over plain http://"),
            )
        }
        (Some(listen), Some((cert, key))) => {
            if a.client_ca.is_none() && !tokens {
                return Err(CliError::new(
                    "--kube-listen requires client authentication: pass --client-ca and/or --token-auth-file",
                ));
            }
            let tcp = tcp_options(listen, &cert, &key, a.client_ca.as_deref())?;
            let mut kube =
                super::kube::server_options(listen, tcp.cert, tcp.key, tcp.client_ca, conn);
            if let Some(n) = a.kube_max_in_flight_per_client {
                kube.limits.max_in_flight_per_client = n as usize;
            }
            if let Some(n) = a.kube_max_watches {
                kube.limits.max_watches = n as usize;
            }
            Some(kube)
        }
    };
    runtime()?.block_on(async {
        let token = CancellationToken::new();
        drain_on_signal(token.clone())?;
        let metrics = bind_metrics(metrics_listen).await?;
        opts.metrics = metrics.as_ref().map(|m| m.metrics().clone());
        let store = start_store(opts, &token).await?;
        if let Some(metrics) = metrics {
            spawn_metrics(metrics, &token);
        }
        run_until_signal(drain, token, async { Ok(store.serve().await?) }).await
    })
}

/// Runs `keyward dev`: creates what is missing in the directory, then serves both products
/// until SIGTERM or SIGINT.
pub(super) fn dev(a: DevArgs) -> Result<(), CliError> {
    if a.backend == Some(StoreBackendArg::Etcd) {
        return Err(CliError::new(
            "--backend: dev stores in its data directory (sled or log); for etcd run `keyward server --backend etcd`",
        ));
    }
    let metrics_listen = a.observe.metrics_listen()?;
    // Flags and the files they name are checked before the directory is created or changed.
    let opts = ServeOptions::parse(&a.run)?;
    let access_control = a.access_control.options(Vec::new())?;
    let flags = StoreFlags::parse(&a.store)?;
    let dir = &a.data;
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(dir)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
    // Its root key, CA and keyring are trusted as found: only in a directory no one else may
    // have put them in.
    let meta = std::fs::metadata(dir)
        .map_err(|e| CliError::new(format!("--data {}: {e}", dir.display())))?;
    if let Some(why) = super::client::not_private(&meta) {
        return Err(CliError::new(format!(
            "--data {}: {why}; keyward dev keeps its root key, CA and keyring there, so it must be a directory of yours that nobody else can write",
            dir.display()
        )));
    }
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
    let mut store_opts = store_options(
        embedded(
            engine_of(a.backend, Some(&dir.join("store"))),
            dir.join("store"),
            &a.store,
        ),
        config_path.clone(),
        store_socket.clone(),
        opts.access,
        &a.store,
        flags,
    );
    store_opts.access_control = access_control;
    store_opts.kube = Some(super::kube::dev_options(&dir, a.kube_listen)?);
    // Without --root-ca-file, `ca.crt` of service-account-token Secrets is the dev CA, which
    // signs the Kubernetes API's certificate (kube-controller-manager uses its cluster's CA).
    let sa = &mut store_opts.access_control.service_accounts;
    if sa.ca_cert.is_none() {
        let ca = dir.join(crate::kube::kubeconfig::CA_CERT_FILE);
        sa.ca_cert = Some(
            std::fs::read(&ca)
                .map_err(|e| CliError::new(format!("cannot read {}: {e}", ca.display())))?,
        );
    }
    let key_id = keyring.health().primary_key_id;
    // With an audit log, the admin socket's calls (key rotation, retire, destroy) are recorded
    // too, beside it, as `kms serve --audit-log-path` records them (every call at Metadata).
    let admin_audit = store_opts.access_control.audit.as_ref().map(|a| {
        (
            super::access::dev_admin_audit_path(&a.log.path),
            a.log.failure_mode,
            a.log.fsync,
        )
    });
    let reserved = keyring.clone();
    let res = rt.block_on(async {
        let token = CancellationToken::new();
        drain_on_signal(token.clone())?;
        let metrics = bind_metrics(metrics_listen).await?;
        let (admin_auditor, admin_log) = match &admin_audit {
            Some((path, failure, fsync)) => {
                let seed = Some(keyring.admin_audit_seed().await);
                let (auditor, log) =
                    super::access::open_admin_audit(path, None, *failure, *fsync, seed).await?;
                (auditor, Some(log))
            }
            None => (crate::audit::Auditor::disabled(), None),
        };
        let mut plugin = PluginServer::start(keyring, &kms_socket, Some(&admin), opts.access)?
            .with_admin_allow(opts.admin_allow)?
            .with_admin_audit(admin_auditor);
        if let Some(m) = &metrics {
            plugin = plugin.with_metrics(m.metrics());
            store_opts.metrics = Some(m.metrics().clone());
        }
        let plugin = tokio::spawn(run_plugin(plugin, token.clone()));
        let store = start_store(store_opts, &token).await?;
        if let Some(metrics) = metrics {
            spawn_metrics(metrics, &token);
        }
        let kube_addr = store
            .kube_addr()
            .ok_or_else(|| CliError::new("the Kubernetes API listener did not start"))?;
        let kubeconfig = super::kube::dev_kubeconfig(&dir, kube_addr)?;
        let export = if a.data.is_relative() {
            format!("$PWD/{}", a.data.join(super::kube::KUBECONFIG_FILE).display())
        } else {
            kubeconfig.display().to_string()
        };
        println!(
            "keyward dev: KMS plugin and secret store in {} (development root key {}; not for production)\n\
             \n  secret store:     unix://{}\n  Kubernetes API:   {} (admin kubeconfig {})\n  KMS v2/v1 socket: {}\n  admin socket:     {}\n  primary key_id:   {}\n  store config:     {}\n\
             \nTry (from this directory; elsewhere, or with another --data, add --server unix://{}):\n  keyward create secret generic demo --from-literal=password=s3cret\n  keyward get secrets\n  keyward get secret demo -o yaml\n  keyward raw get /registry/secrets/default/demo --hex\n  keyward kms keys --admin-socket {}\n\
             \nkubectl (in another terminal):\n  export KUBECONFIG={}\n  kubectl get secrets\n\
             \nEncryptionConfiguration for a kube-apiserver using this plugin:\n\n{}\nStop with Ctrl-C.",
            dir.display(),
            dir.join("root.key").display(),
            store_socket.display(),
            super::kube::url(kube_addr),
            kubeconfig.display(),
            kms_socket.display(),
            admin.display(),
            key_id,
            config_path.display(),
            store_socket.display(),
            admin.display(),
            export,
            encryption_config_snippet(&kms_socket),
        );
        let both = async {
            store.serve().await?;
            plugin.await.map_err(|e| CliError::new(format!("KMS plugin task failed: {e}")))?
        };
        let res = run_until_signal(opts.drain, token, both).await;
        super::kms::close_audit(admin_log).await;
        res
    });
    super::kms::give_back_if_failed(&rt, &res, &reserved);
    res
}

/// The store's EncryptionConfiguration for `keyward dev`: kms v2 through the dev plugin.
fn dev_encryption_config(kms_socket: &Path) -> String {
    format!(
        "# Written by keyward dev: Secrets are encrypted with KMS v2 through the dev plugin.\n{}",
        kms_v2_config("keyward-dev", kms_socket, "")
    )
}

/// Reads the TCP listener's files into the library's options: the certificate and client CA as
/// given, the key only if private (mode 0600).
fn tcp_options(
    listen: SocketAddr,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TcpOptions, CliError> {
    let mut opts = TcpOptions::new(
        listen,
        read_file(cert, "--tls-cert")?,
        seal::read_private_file(key, MAX_PRIVATE_FILE)?,
    );
    opts.client_ca = client_ca
        .map(|ca| read_file(ca, "--client-ca"))
        .transpose()?;
    Ok(opts)
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::new(format!("{what} {}: {e}", path.display())))
}

/// Starts the store server until `token` is cancelled, with its errors worded for the command
/// line (flag names and hints).
async fn start_store(
    opts: StoreOptions,
    token: &CancellationToken,
) -> Result<StoreServer, CliError> {
    let etcd = matches!(opts.backend, BackendSpec::Etcd(_));
    StoreServer::start(opts, token.clone().cancelled_owned())
        .await
        .map_err(|e| match e {
            // etcd options the backend refused, and etcd not answering at start.
            ServerError::Backend(BackendError::InvalidArgument(m)) if etcd => CliError::new(m),
            ServerError::Backend(BackendError::Unavailable(m)) if etcd => CliError::new(m)
                .hint("check --etcd-endpoints, and --etcd-ca/--etcd-cert/--etcd-key for https"),
            ServerError::Backend(e @ BackendError::OtherEngine { found, .. }) => {
                let hint = if found == "sled" {
                    "pass --backend sled, or move the store to the log-structured engine with `keyward store convert`"
                } else {
                    "pass --backend log"
                };
                CliError::new(e.to_string()).hint(hint)
            }
            ServerError::Listen { addr, source } => {
                CliError::new(format!("--listen {addr}: {source}"))
            }
            ServerError::Tls(m) | ServerError::Kube(crate::kube::KubeServeError::Tls(m)) => {
                // The message starts with what it is about: name its flag.
                let flag = [
                    ("certificate and key", "--tls-cert and --tls-key"),
                    ("certificate", "--tls-cert"),
                    ("key", "--tls-key"),
                    ("client CA", "--client-ca"),
                ]
                .into_iter()
                .find_map(|(what, flag)| m.starts_with(what).then_some(flag))
                .unwrap_or("TLS configuration");
                CliError::new(format!("{flag}: {m}"))
            }
            other => CliError::from(other),
        })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// An EncryptionConfiguration that makes kube-apiserver use the plugin at `socket` for Secrets.
fn encryption_config_snippet(socket: &Path) -> String {
    kms_v2_config("keyward", socket, "      - identity: {}\n")
}

/// An EncryptionConfiguration whose first provider for Secrets is the KMS v2 plugin `name` at
/// `socket`, followed by the `more` provider lines.
fn kms_v2_config(name: &str, socket: &Path, more: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n  \
           - resources:\n      \
               - secrets\n    \
             providers:\n      \
               - kms:\n          \
                   apiVersion: v2\n          \
                   name: {name}\n          \
                   endpoint: unix://{}\n          \
                   timeout: 3s\n{more}",
        socket.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_uses_v2_and_unix_endpoint() {
        let s = encryption_config_snippet(Path::new("/run/k/kms.sock"));
        assert!(s.contains("apiVersion: v2"));
        assert!(s.contains("endpoint: unix:///run/k/kms.sock"));
        assert!(
            s.ends_with("          timeout: 3s\n      - identity: {}\n"),
            "{s}"
        );
        let d = dev_encryption_config(Path::new("/d/kms.sock"));
        assert!(d.starts_with("# Written by keyward dev: "), "{d}");
        assert!(d.ends_with("          name: keyward-dev\n          endpoint: unix:///d/kms.sock\n          timeout: 3s\n"), "{d}");
    }
}
