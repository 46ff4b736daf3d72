//! The store server: opens the backend, loads the EncryptionConfiguration, builds the encryption
//! chain and the [`Store`], binds the listeners and serves the API ([`api::serve`]) until
//! shutdown.
//!
//! [`StoreServer`] owns what lives as long as the server: the listeners and the socket guard, the
//! configuration reloader, automatic migration, and closing watches when shutdown starts. The CLI
//! (`keyward server`, `keyward dev`), the tests and the benches all start the store here. Options
//! are values: the caller reads files and parses flags, and adds its own words to the errors.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use zeroize::Zeroizing;

use crate::access::{AccessOptions, AccessStack, SetupError, TokenSecretHook};
use crate::api::{self, Frontend, ServeError, TlsListener};
use crate::backend::{BackendError, BackendSpec};
use crate::encryption::config::{self, ConfigError};
use crate::encryption::reload::{self, Reloader};
use crate::encryption::{Encryption, ParseOptions};
use crate::kube::{KubeApi, KubeListener, KubeOptions, KubeServeError};
use crate::metrics::{Metrics, RpcLayer};
use crate::net::ConnLimits;
use crate::store::migrate::AutoMigrateGuard;
use crate::store::Store;
use crate::uds::{self, SocketAccess, SocketError, SocketGuard};

/// How often automatic migration looks for a change of write key.
const AUTO_MIGRATE_POLL: Duration = Duration::from_secs(10);

/// Versions per Secret kept by default (the CLI's `--history` default).
pub const DEFAULT_HISTORY: usize = 10;

/// The TCP listener's settings: TLS is required, and so is client authentication (a client
/// certificate signed by `client_ca`, or a bearer token of [`AccessOptions`]).
#[derive(Clone)]
#[non_exhaustive]
pub struct TcpOptions {
    /// Address to listen on; port 0 picks a free port ([`StoreServer::tcp_addr`] says which).
    pub listen: SocketAddr,
    /// PEM certificate chain presented to clients.
    pub cert: Vec<u8>,
    /// PEM private key of `cert`.
    pub key: Zeroizing<Vec<u8>>,
    /// PEM CA: clients presenting a certificate it signed are accepted.
    pub client_ca: Option<Vec<u8>>,
    /// Connection caps and timeouts (before any client has authenticated, too).
    pub limits: ConnLimits,
}

impl TcpOptions {
    /// TLS on `listen` with this certificate and key, and no client certificate accepted yet:
    /// set `client_ca`.
    pub fn new(listen: SocketAddr, cert: Vec<u8>, key: Zeroizing<Vec<u8>>) -> Self {
        Self {
            listen,
            cert,
            key,
            client_ca: None,
            limits: ConnLimits::default(),
        }
    }
}

impl std::fmt::Debug for TcpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpOptions")
            .field("listen", &self.listen)
            .field("cert", &format_args!("{} bytes", self.cert.len()))
            .field("key", &format_args!("<redacted>"))
            .field("client_ca", &self.client_ca.as_ref().map(Vec::len))
            .field("limits", &self.limits)
            .finish()
    }
}

/// Settings of the store server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Where the data lives.
    pub backend: BackendSpec,
    /// Versions per Secret returned by history (and, on sled, what `backend` should keep);
    /// 0 = all.
    pub history: usize,
    /// kube-apiserver's EncryptionConfiguration file (re-read when `automatic_reload` is set).
    pub encryption_config: PathBuf,
    /// Allow `kms` providers with `apiVersion: v1` (kube-apiserver's `KMSv1` feature gate).
    pub kms_v1: bool,
    /// Storage key prefix, like kube-apiserver's `--etcd-prefix`.
    pub prefix: String,
    /// The Unix socket to serve on.
    pub socket: PathBuf,
    /// Who may connect to `socket`.
    pub access: SocketAccess,
    /// Also serve on TCP with TLS.
    pub tcp: Option<TcpOptions>,
    /// Also serve the Kubernetes API (HTTPS) for Secrets.
    pub kube: Option<KubeOptions>,
    /// Poll the configuration file and swap in valid changes (kube-apiserver's
    /// `--encryption-provider-config-automatic-reload`).
    pub automatic_reload: bool,
    /// Migrate stale data on its own, this long after each change of write key.
    pub auto_migrate: Option<Duration>,
    /// Report calls (`keyward_store_*`) and the store's state here.
    pub metrics: Option<Metrics>,
    /// Authentication, authorization and audit.
    pub access_control: AccessOptions,
}

impl StoreOptions {
    /// A store on `backend`, encrypting as `encryption_config` says, serving on `socket` (mode
    /// 0600); the other settings are the CLI's defaults: [`DEFAULT_HISTORY`] versions, prefix
    /// `/registry`, no KMS v1, no TCP, no reload, no automatic migration, no metrics.
    pub fn new(backend: BackendSpec, encryption_config: PathBuf, socket: PathBuf) -> Self {
        Self {
            backend,
            history: DEFAULT_HISTORY,
            encryption_config,
            kms_v1: false,
            prefix: "/registry".to_owned(),
            socket,
            access: SocketAccess::default(),
            tcp: None,
            kube: None,
            automatic_reload: false,
            auto_migrate: None,
            metrics: None,
            access_control: AccessOptions::default(),
        }
    }
}

/// Errors of starting and running the store server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The EncryptionConfiguration cannot be read or is invalid (operator's file).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The backend cannot be opened: a bad data directory or etcd options (operator's input),
    /// or, as [`BackendError::Unavailable`], no etcd member answers (environment, or the
    /// operator's endpoints and TLS settings).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The Unix socket cannot be bound: another server on it, or a bad path (operator's
    /// setup).
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The TCP address cannot be bound, e.g. it is in use (operator's setup).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The TLS settings were refused (operator's files), or serving failed (environment).
    #[error(transparent)]
    Api(#[from] ServeError),
    /// Authentication, authorization or audit cannot be set up (operator's files, or the
    /// environment).
    #[error(transparent)]
    Access(#[from] SetupError),
    /// The Kubernetes API listener cannot start: its TLS files (operator's) or its address.
    #[error(transparent)]
    Kube(#[from] KubeServeError),
    /// The TCP listener's certificate, key or client CA cannot be used (operator's files).
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// The secret store, started: backend open, listeners bound. [`serve`](Self::serve) runs it until
/// the shutdown future given to [`start`](Self::start) completes and calls have drained.
/// Dropping it without serving stops everything it started.
pub struct StoreServer {
    store: Arc<Store>,
    access: AccessStack,
    unix: UnixListener,
    tcp: Option<TlsListener>,
    tcp_addr: Option<SocketAddr>,
    kube: Option<(KubeListener, crate::kube::KubeLimits)>,
    guard: SocketGuard,
    location: String,
    config_hash: String,
    reloader: Option<Reloader>,
    auto_migrate: Option<AutoMigrateGuard>,
    rpc: RpcLayer,
    metrics: Option<Metrics>,
    token: CancellationToken,
    _cancel_on_drop: DropGuard,
}

impl std::fmt::Debug for StoreServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreServer")
            .field("socket", &self.guard.path())
            .field("tcp_addr", &self.tcp_addr)
            .field("location", &self.location)
            .field("config_hash", &self.config_hash)
            .finish_non_exhaustive()
    }
}

impl StoreServer {
    /// Loads the EncryptionConfiguration, checks the socket's path and binds the TCP listeners,
    /// opens the backend, builds the [`Store`] (contacting its KMS plugins), starts the reloader
    /// and automatic migration if asked, and binds the Unix socket. Serving starts with
    /// [`serve`](Self::serve); `shutdown` ends it.
    pub async fn start(
        options: StoreOptions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<StoreServer, ServerError> {
        let parse = ParseOptions {
            kms_v1: options.kms_v1,
            reload: options.automatic_reload,
        };
        let (cfg, hash) = config::load(&options.encryption_config, parse)?;
        // The listeners are checked (the socket's path) or bound (TCP addresses, with their
        // TLS files read) before the backend is opened, as etcd binds before it opens its
        // data: a start refused for a listener creates no store. TCP calls wait in the backlog
        // until serving starts; the Unix socket, whose file tells that the server is ready, is
        // bound last.
        uds::check_bindable(&options.socket)?;
        let (tcp, tcp_addr) = match options.tcp {
            Some(t) => {
                let (l, addr) = bind_tls(t).await?;
                (Some(l), Some(addr))
            }
            None => (None, None),
        };
        let kube = match options.kube {
            Some(k) => {
                let limits = k.limits;
                Some((KubeListener::bind(k).await?, limits))
            }
            None => None,
        };
        let (backend, location) = options.backend.open().await?;
        let encryption = Encryption::build(&cfg).await;
        for k in encryption.kms_v2_status() {
            if !k.healthy {
                tracing::warn!(provider = %k.name, endpoint = %k.endpoint, error = ?k.error, "kms v2 plugin not ready; writes fail until it answers");
            }
        }
        let hook = TokenSecretHook::default();
        let store = Arc::new(
            Store::new(backend, Arc::new(encryption), &options.prefix)
                .with_history_limit(options.history)
                .with_create_hook(Arc::new(hook.clone())),
        );
        let access = AccessStack::start(store.clone(), hook, options.access_control).await?;
        let reloader = options.automatic_reload.then(|| {
            let target = store.clone();
            reload::spawn(
                options.encryption_config.clone(),
                parse,
                reload::DEFAULT_INTERVAL,
                hash.clone(),
                move |e| target.set_encryption(e),
            )
        });
        let auto_migrate = options
            .auto_migrate
            .map(|settle| store.spawn_auto_migrate(AUTO_MIGRATE_POLL, settle));
        let rpc = match &options.metrics {
            Some(m) => {
                m.watch_store(&store);
                access.access.report_to(m);
                m.store_layer()
            }
            None => RpcLayer::disabled(),
        };
        let (unix, guard) = uds::bind(&options.socket, options.access)?;
        tracing::info!(socket = %options.socket.display(), data = %location, config_hash = %hash, "serving keyward.v1.Secrets");

        let token = CancellationToken::new();
        let trigger = token.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown => trigger.cancel(),
                _ = trigger.cancelled() => {}
            }
        });
        Ok(StoreServer {
            store,
            access,
            unix,
            tcp,
            tcp_addr,
            kube,
            guard,
            location,
            config_hash: hash,
            reloader,
            auto_migrate,
            rpc,
            metrics: options.metrics.clone(),
            _cancel_on_drop: token.clone().drop_guard(),
            token,
        })
    }

    /// The store being served.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The access layer: the guarded store, the authenticators and the audit log.
    pub fn access(&self) -> &AccessStack {
        &self.access
    }

    /// The Unix socket's path.
    pub fn socket(&self) -> &Path {
        self.guard.path()
    }

    /// The address the TCP listener is bound to, if there is one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The address the Kubernetes API listener is bound to, if there is one.
    pub fn kube_addr(&self) -> Option<SocketAddr> {
        self.kube.as_ref().map(|(l, _)| l.local_addr())
    }

    /// Where the data lives: `sled:<dir>` or `etcd:<endpoints>`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The hash (`sha256:<hex>`) of the EncryptionConfiguration in force at start.
    pub fn config_hash(&self) -> &str {
        &self.config_hash
    }

    /// The configuration reloader, when automatic reload is on.
    pub fn reloader(&self) -> Option<&Reloader> {
        self.reloader.as_ref()
    }

    /// Serves until shutdown: then stops accepting, closes watch streams (they never end on
    /// their own), drains in-flight calls, stops the background tasks and removes the socket.
    pub async fn serve(self) -> Result<(), ServerError> {
        let StoreServer {
            store,
            access,
            unix,
            tcp,
            kube,
            guard,
            reloader,
            auto_migrate,
            rpc,
            metrics,
            token,
            _cancel_on_drop,
            ..
        } = self;
        let kube = async {
            if let Some((listener, limits)) = kube {
                let address = listener.local_addr().to_string();
                let mut api =
                    KubeApi::new(access.access.clone(), access.authn.clone(), limits, address);
                if let Some(m) = metrics {
                    api = api.with_metrics(m);
                }
                let api = Arc::new(api);
                crate::kube::serve(listener, api, token.clone().cancelled_owned()).await;
            }
        };
        let closing = async {
            token.cancelled().await;
            store.stop_watches();
        };
        let serving = async {
            let front = Frontend::new(access.access.clone(), access.authn.clone());
            let res = api::serve(unix, tcp, front, rpc, token.clone().cancelled_owned()).await;
            token.cancel();
            res
        };
        let (res, (), ()) = tokio::join!(serving, closing, kube);
        drop((reloader, auto_migrate));
        if let Err(e) = access.close().await {
            tracing::error!(error = %e, "audit log: the shutdown checkpoint was not written");
        }
        drop(guard);
        res.map_err(ServerError::from)
    }
}

/// Binds the TCP listener and checks the TLS settings; returns it with its bound address.
async fn bind_tls(t: TcpOptions) -> Result<(TlsListener, SocketAddr), ServerError> {
    // Read here to name what is wrong; tonic's own error says only "transport error".
    crate::net::tls_identity(&t.cert, &t.key).map_err(ServerError::Tls)?;
    if let Some(ca) = &t.client_ca {
        crate::net::tls_roots(ca).map_err(ServerError::Tls)?;
    }
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(&t.cert, t.key.as_slice()));
    if let Some(ca) = &t.client_ca {
        // Bearer tokens authenticate too, so a certificate is optional at the TLS layer; a
        // call with neither is refused by the access layer.
        tls = tls
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(true);
    }
    let listen_error = |source| ServerError::Listen {
        addr: t.listen,
        source,
    };
    let listener = TcpListener::bind(t.listen).await.map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    tracing::info!(listen = %addr, client_certs = t.client_ca.is_some(), "serving keyward.v1.Secrets over TLS");
    Ok((TlsListener::with_limits(listener, tls, t.limits)?, addr))
}
