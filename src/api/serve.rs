//! Serving the store's API: `keyward.v1.Secrets`, `Encryption` and `Auth` on the Unix socket,
//! and on an optional TLS listener within the connection limits of [`crate::net`]; every call on
//! either is authenticated and authorized by the [`Frontend`]. On shutdown both stop accepting
//! and drain in-flight calls.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Server, ServerTlsConfig};

use super::{AuthService, EncryptionService, Frontend, SecretsService};
use crate::metrics::RpcLayer;
use crate::net::{self, ConnLimits};

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

/// A bound TCP listener with its TLS settings and connection limits. Building one checks the TLS
/// settings, so a bad certificate or key is refused before anything is served.
pub struct TlsListener {
    listener: TcpListener,
    server: Server,
    limits: ConnLimits,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Serves TLS with `tls` on `listener`, within the default [`ConnLimits`].
    pub fn new(listener: TcpListener, tls: ServerTlsConfig) -> Result<Self, ServeError> {
        Self::with_limits(listener, tls, ConnLimits::default())
    }

    /// Like [`new`](Self::new), within `limits`: connection caps, the TLS handshake timeout,
    /// HTTP/2 keepalive, connection age and streams per connection.
    pub fn with_limits(
        listener: TcpListener,
        tls: ServerTlsConfig,
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
            limits,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Serves `keyward.v1.Secrets`, `Encryption` and `Auth` through `front` on `unix` and, if
/// given, on `tcp`, until `shutdown` completes; then stops accepting and drains in-flight calls.
/// Watch streams do not end on their own: close them
/// ([`Store::stop_watches`](crate::store::Store::stop_watches)) when shutdown starts, or the
/// drain waits for their clients. Every call on both listeners goes through `rpc`
/// ([`RpcLayer::disabled`] to measure nothing).
pub async fn serve(
    unix: UnixListener,
    tcp: Option<TlsListener>,
    front: Frontend,
    rpc: RpcLayer,
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

    let restate = tower::util::MapResponseLayer::new(
        super::request_errors::restate::<tonic::body::Body>
            as fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>,
    );
    let unix_server = http2_limits(Server::builder(), &ConnLimits::default())
        .layer(rpc.clone())
        .layer(restate.clone())
        .add_service(SecretsService::new(front.clone()).into_server())
        .add_service(EncryptionService::new(front.clone()).into_server())
        .add_service(AuthService::new(front.clone()).into_server())
        .serve_with_incoming_shutdown(net::unix_incoming(unix), token.clone().cancelled_owned());
    let unix = async { unix_server.await.map_err(ServeError::Unix) };
    let tcp = async {
        let Some(TlsListener {
            listener,
            server,
            limits,
        }) = tcp
        else {
            return Ok(());
        };
        server
            .layer(rpc)
            .layer(restate)
            .add_service(SecretsService::new(front.clone()).into_server())
            .add_service(EncryptionService::new(front.clone()).into_server())
            .add_service(AuthService::new(front.clone()).into_server())
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
        .http2_max_header_list_size(crate::net::MAX_HEADER_LIST_BYTES)
}
