//! Long-running commands: the secret store server, and signal handling with a bounded drain
//! (the KMS plugin is [`crate::kms::PluginServer`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::CliError;
use crate::api::{Authenticator, EncryptionService, SecretsService, Tokens};
use crate::backend::etcd::{EtcdBackend, EtcdOptions};
use crate::backend::sled::{SledBackend, SledOptions};
use crate::backend::{Backend, BackendError};
use crate::encryption::{config, reload, Encryption, ParseOptions};
use crate::store::Store;
use crate::uds::{self, SocketAccess};

/// How often automatic migration looks for a change of write key.
const AUTO_MIGRATE_POLL: Duration = Duration::from_secs(10);
/// Largest TLS key or tokens file read.
const MAX_PRIVATE_FILE: u64 = 1 << 20;

/// Cancels `token` on SIGTERM or SIGINT. The handlers are installed before this returns, so
/// call it first: a signal during start-up then also stops the process cleanly.
pub(super) fn cancel_on_signal(token: CancellationToken) -> Result<(), CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler = |kind| {
        signal(kind).map_err(|e| CliError::new(format!("cannot install a signal handler: {e}")))
    };
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        token.cancel();
    });
    Ok(())
}

/// Runs `server` until it ends or `token` is cancelled (servers then stop accepting and
/// drain), waiting at most `drain` for in-flight calls.
pub(super) async fn run_until_signal(
    drain: Duration,
    token: CancellationToken,
    server: impl Future<Output = Result<(), CliError>>,
) -> Result<(), CliError> {
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => return res,
        _ = token.cancelled() => {}
    }
    match tokio::time::timeout(drain, server).await {
        Ok(res) => res?,
        Err(_) => tracing::warn!(timeout = ?drain, "drain timed out; closing remaining calls"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// The TCP listener's settings: TLS is required, and so is client authentication.
#[derive(Debug, Clone)]
pub(super) struct TcpOptions {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub tokens: Option<PathBuf>,
}

/// Settings of the secret store server.
#[derive(Debug, Clone)]
pub(super) struct StoreOptions {
    pub backend: BackendSpec,
    /// Versions per Secret kept (sled) and returned by history (both backends); 0 = all.
    pub history: usize,
    pub encryption_config: PathBuf,
    pub kms_v1: bool,
    pub prefix: String,
    pub socket: PathBuf,
    pub access: SocketAccess,
    pub tcp: Option<TcpOptions>,
    /// Poll the configuration file and swap in valid changes (kube-apiserver's
    /// --encryption-provider-config-automatic-reload).
    pub automatic_reload: bool,
    /// Migrate stale data on its own, this long after each key change.
    pub auto_migrate: Option<Duration>,
}

/// Where the store keeps its data.
#[derive(Debug, Clone)]
pub(super) enum BackendSpec {
    /// Embedded sled in `data`.
    Sled { data: PathBuf },
    /// An etcd cluster.
    Etcd(EtcdOptions),
}

impl BackendSpec {
    /// Opens the backend; for etcd, proves a member answers with a leader first.
    async fn open(&self, history: usize) -> Result<(Arc<dyn Backend>, String), CliError> {
        match self {
            BackendSpec::Sled { data } => {
                let backend = SledBackend::open(
                    data,
                    SledOptions {
                        history_per_key: history,
                        ..SledOptions::default()
                    },
                )?;
                Ok((Arc::new(backend), format!("sled:{}", data.display())))
            }
            BackendSpec::Etcd(opts) => {
                let backend = EtcdBackend::connect(opts).map_err(|e| match e {
                    BackendError::InvalidArgument(m) => CliError::new(m),
                    other => CliError::from(other),
                })?;
                let version = backend.check().await.map_err(|e| {
                    CliError::new(format!(
                        "cannot reach etcd at {}: {e}",
                        opts.endpoints.join(",")
                    ))
                    .hint("check --etcd-endpoints, and --etcd-ca/--etcd-cert/--etcd-key for https")
                })?;
                tracing::info!(endpoints = %opts.endpoints.join(","), version = %version, "connected to etcd");
                Ok((
                    Arc::new(backend),
                    format!("etcd:{}", opts.endpoints.join(",")),
                ))
            }
        }
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::new(format!("{what} {}: {e}", path.display())))
}

/// Opens the backend, loads the encryption configuration (contacting KMS plugins), binds the
/// listeners, and returns the future that serves until `token` is cancelled.
pub(super) async fn start_store(
    opts: &StoreOptions,
    token: CancellationToken,
) -> Result<impl Future<Output = Result<(), CliError>>, CliError> {
    let parse = ParseOptions {
        kms_v1: opts.kms_v1,
        reload: opts.automatic_reload,
    };
    let (cfg, hash) = config::load(&opts.encryption_config, parse)?;
    let tcp = match &opts.tcp {
        Some(t) => Some(tls_setup(t)?),
        None => None,
    };
    let (backend, location) = opts.backend.open(opts.history).await?;
    let encryption = Encryption::build(&cfg).await;
    for k in encryption.kms_v2_status() {
        if !k.healthy {
            tracing::warn!(provider = %k.name, endpoint = %k.endpoint, error = ?k.error, "kms v2 plugin not ready; writes fail until it answers");
        }
    }
    let store = Arc::new(
        Store::new(backend, Arc::new(encryption), &opts.prefix).with_history_limit(opts.history),
    );
    let reloader = opts.automatic_reload.then(|| {
        let target = store.clone();
        reload::spawn(
            opts.encryption_config.clone(),
            parse,
            reload::DEFAULT_INTERVAL,
            hash.clone(),
            move |e| target.set_encryption(e),
        )
    });
    let auto_migrate = opts
        .auto_migrate
        .map(|settle| store.spawn_auto_migrate(AUTO_MIGRATE_POLL, settle));
    // Watch streams never end on their own: close them when shutdown starts, so the drain ends.
    let closing = store.clone();
    let shutdown = token.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        closing.stop_watches();
    });
    let (unix, guard) = uds::bind(&opts.socket, opts.access)?;
    tracing::info!(socket = %opts.socket.display(), data = %location, config_hash = %hash, "serving keyward.v1.Secrets");
    let unix_server = Server::builder()
        .add_service(SecretsService::new(store.clone()).into_server())
        .add_service(EncryptionService::new(store.clone()).into_server())
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(unix),
            token.clone().cancelled_owned(),
        );
    let tcp_server = match tcp {
        Some((listen, tls, auth)) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| CliError::new(format!("--listen {listen}: {e}")))?;
            tracing::info!(listen = %listen, client_certs = auth.client_certs, tokens = auth.tokens.is_some(), "serving keyward.v1.Secrets over TLS");
            let auth2 = auth.clone();
            let svc = tonic::service::interceptor::InterceptedService::new(
                SecretsService::new(store.clone()).into_server(),
                move |r| auth.check(r),
            );
            let enc_svc = tonic::service::interceptor::InterceptedService::new(
                EncryptionService::new(store.clone()).into_server(),
                move |r| auth2.check(r),
            );
            Some(
                Server::builder()
                    .tls_config(tls)
                    .map_err(|e| CliError::new(format!("TLS configuration: {e}")))?
                    .add_service(svc)
                    .add_service(enc_svc)
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(listener),
                        token.clone().cancelled_owned(),
                    ),
            )
        }
        None => None,
    };
    Ok(async move {
        let _guard = guard;
        let _store = store;
        let _reloader = reloader;
        let _auto_migrate = auto_migrate;
        let unix = async {
            unix_server
                .await
                .map_err(|e| CliError::new(format!("server failed: {e}")))
        };
        let tcp = async {
            match tcp_server {
                Some(s) => s
                    .await
                    .map_err(|e| CliError::new(format!("TCP server failed: {e}"))),
                None => Ok(()),
            }
        };
        tokio::try_join!(unix, tcp).map(|_| ())
    })
}

fn tls_setup(t: &TcpOptions) -> Result<(SocketAddr, ServerTlsConfig, Authenticator), CliError> {
    let cert = read_file(&t.cert, "--tls-cert")?;
    let key = crate::seal::read_private_file(&t.key, MAX_PRIVATE_FILE)?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key.as_slice()));
    if let Some(ca) = &t.client_ca {
        tls = tls
            .client_ca_root(Certificate::from_pem(read_file(ca, "--client-ca")?))
            .client_auth_optional(t.tokens.is_some());
    }
    let tokens = match &t.tokens {
        Some(p) => {
            let raw = crate::seal::read_private_file(p, MAX_PRIVATE_FILE)?;
            let text = std::str::from_utf8(&raw)
                .map_err(|_| CliError::new(format!("--tokens-file {}: not UTF-8", p.display())))?;
            Some(
                Tokens::parse(text)
                    .map_err(|e| CliError::new(format!("--tokens-file {}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    Ok((
        t.listen,
        tls,
        Authenticator {
            client_certs: t.client_ca.is_some(),
            tokens,
        },
    ))
}
