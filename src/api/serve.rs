//! Serving the store's API: `keyward.v1.Secrets` and `keyward.v1.Encryption` on the Unix socket,
//! and on an optional TLS listener where every call must authenticate, within the connection
//! limits of [`crate::net`]; on shutdown both stop accepting and drain in-flight calls.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Server, ServerTlsConfig};

use super::{Authenticator, EncryptionService, SecretsService};
use crate::net::{self, ConnLimits};
use crate::store::Store;

/// Errors of serving the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The TLS settings were refused, e.g. a certificate or key that is not valid PEM
    /// (operator's files).
    #[error("TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// Serving on the Unix socket failed (environment).
    #[error("server failed: {0}")]
    Unix(#[source] tonic::transport::Error),
    /// Serving on the TCP listener failed (environment).
    #[error("TCP server failed: {0}")]
    Tcp(#[source] tonic::transport::Error),
}

/// A bound TCP listener with its TLS settings and the [`Authenticator`] every call on it must
/// pass. Building one checks the TLS settings, so a bad certificate or key is refused before
/// anything is served.
pub struct TlsListener {
    listener: TcpListener,
    server: Server,
    auth: Authenticator,
    limits: ConnLimits,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Serves TLS with `tls` on `listener`, admitting the calls `auth` accepts, within the
    /// default [`ConnLimits`].
    pub fn new(
        listener: TcpListener,
        tls: ServerTlsConfig,
        auth: Authenticator,
    ) -> Result<Self, ServeError> {
        Self::with_limits(listener, tls, auth, ConnLimits::default())
    }

    /// Like [`new`](Self::new), within `limits`: connection caps, the TLS handshake timeout,
    /// HTTP/2 keepalive, connection age and streams per connection.
    pub fn with_limits(
        listener: TcpListener,
        tls: ServerTlsConfig,
        auth: Authenticator,
        limits: ConnLimits,
    ) -> Result<Self, ServeError> {
        let tls = tls.timeout(limits.handshake_timeout);
        let server = http2_limits(Server::builder(), &limits)
            .max_connection_age(limits.max_connection_age)
            .tls_config(tls)
            .map_err(ServeError::Tls)?;
        Ok(Self {
            listener,
            server,
            auth,
            limits,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Serves `keyward.v1.Secrets` and `keyward.v1.Encryption` over `store` on `unix` and, if
/// given, on `tcp`, until `shutdown` completes; then stops accepting and drains in-flight calls.
/// Watch streams do not end on their own: close them ([`Store::stop_watches`]) when shutdown
/// starts, or the drain waits for their clients.
pub async fn serve(
    unix: UnixListener,
    tcp: Option<TlsListener>,
    store: Arc<Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => trigger.cancel(),
            _ = trigger.cancelled() => {}
        }
    });

    let unix_server = http2_limits(Server::builder(), &ConnLimits::default())
        .add_service(SecretsService::new(store.clone()).into_server())
        .add_service(EncryptionService::new(store.clone()).into_server())
        .serve_with_incoming_shutdown(net::unix_incoming(unix), token.clone().cancelled_owned());
    let unix = async { unix_server.await.map_err(ServeError::Unix) };
    let tcp = async {
        let Some(TlsListener {
            listener,
            mut server,
            auth,
            limits,
        }) = tcp
        else {
            return Ok(());
        };
        let secrets_auth = auth.clone();
        server
            .add_service(InterceptedService::new(
                SecretsService::new(store.clone()).into_server(),
                move |r| secrets_auth.check(r),
            ))
            .add_service(InterceptedService::new(
                EncryptionService::new(store.clone()).into_server(),
                move |r| auth.check(r),
            ))
            .serve_with_incoming_shutdown(
                net::tcp_incoming(listener, &limits),
                token.clone().cancelled_owned(),
            )
            .await
            .map_err(ServeError::Tcp)
    };
    let res = tokio::try_join!(unix, tcp).map(|_| ());
    token.cancel();
    res
}

/// `server` with the per-connection HTTP/2 limits: streams per connection and keepalive pings.
fn http2_limits(server: Server, limits: &ConnLimits) -> Server {
    server
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
}
