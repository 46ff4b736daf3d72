//! Limited listeners for network front ends. [`tcp_incoming`] accepts TCP connections within a
//! global and a per-address cap that fit a descriptor budget (the soft `RLIMIT_NOFILE` minus the
//! descriptors open at start and a reserve), so clients that never authenticate cannot take the
//! descriptors the Unix listener and the backend need. [`unix_incoming`] and [`tcp_incoming`]
//! both back off when `accept` fails (out of descriptors, `EMFILE`/`ENFILE`) instead of spinning.
//! [`ConnLimits`] also carries the per-connection timeouts and stream cap a front end applies.
//! [`tls_identity`] and [`tls_roots`] read a TLS server's PEM files, naming what is wrong.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::log_throttle::LogThrottle;

/// First pause after an `accept` that failed for lack of resources; doubles up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between `accept` attempts while resources are exhausted.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one warning per this interval about refused connections or failing `accept`s.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Limits of a listener and its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnLimits {
    /// Most connections open at once; lowered to the descriptor budget when that is smaller.
    pub max_connections: usize,
    /// Most connections open at once from one client IP address.
    pub max_per_address: usize,
    /// Descriptors kept free for everything else (the Unix listener, the backend, files);
    /// `None`: a quarter of the soft descriptor limit, at least 32 and at most 1024.
    pub reserved_descriptors: Option<usize>,
    /// How long a client may take to complete the TLS handshake before it is disconnected.
    pub handshake_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings; a peer that does not answer one within
    /// `keepalive_timeout` is disconnected.
    pub keepalive_interval: Duration,
    /// How long to wait for a keepalive ping's answer.
    pub keepalive_timeout: Duration,
    /// Age at which a connection is asked to close (HTTP/2 GOAWAY): a connection without calls
    /// closes then, calls in flight finish first; clients reconnect.
    pub max_connection_age: Duration,
    /// Most concurrent HTTP/2 streams (calls) per connection.
    pub max_concurrent_streams: u32,
}

impl Default for ConnLimits {
    /// 1,024 connections, 64 per address, an automatic reserve, a 10 s handshake, keepalive
    /// pings every 30 s answered within 10 s, connections renewed after 10 minutes, 128 streams
    /// per connection.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_address: 64,
            reserved_descriptors: None,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(600),
            max_concurrent_streams: 128,
        }
    }
}

impl ConnLimits {
    /// The connections a listener started now may hold: [`max_connections`](Self::max_connections),
    /// lowered to the descriptors the soft `RLIMIT_NOFILE` leaves after those open now and the
    /// reserve.
    pub fn effective_max(&self) -> usize {
        let Some(soft) = soft_descriptor_limit() else {
            return self.max_connections;
        };
        let reserve = self
            .reserved_descriptors
            .unwrap_or_else(|| (soft / 4).clamp(32, 1024));
        let open = open_descriptors();
        let budget = soft.saturating_sub(open).saturating_sub(reserve);
        self.max_connections.min(budget)
    }
}

/// The soft descriptor limit, `None` if unlimited.
fn soft_descriptor_limit() -> Option<usize> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit
        .current
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Descriptors open in this process (0 if `/proc` cannot be read).
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// Connections open per address and in total; a [`Slot`] holds one.
#[derive(Debug)]
struct Gate {
    max: usize,
    per_address: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl Gate {
    /// A slot for a connection from `ip`, or `None` when a cap is reached.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_ip) = &mut *counts;
        let here = by_ip.get(&ip).copied().unwrap_or(0);
        if *total >= self.max || here >= self.per_address {
            return None;
        }
        *total += 1;
        by_ip.insert(ip, here + 1);
        Some(Slot {
            gate: self.clone(),
            ip,
        })
    }

    fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

/// One admitted connection's place in the [`Gate`], given back on drop.
#[derive(Debug)]
struct Slot {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.gate.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_ip) = &mut *counts;
        *total = total.saturating_sub(1);
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// An accepted TCP connection that holds its place under the caps until it is dropped.
#[derive(Debug)]
pub struct LimitedConn {
    stream: TcpStream,
    _slot: Slot,
}

impl LimitedConn {
    /// The connection.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

/// `AsyncWrite` for a connection type that writes straight to its `stream` field (the
/// wrappers here change what is read, or only hold a place, never what is written).
macro_rules! write_to_stream {
    ($conn:ty) => {
        impl tokio::io::AsyncWrite for $conn {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                tokio::io::AsyncWrite::poll_write(
                    std::pin::Pin::new(&mut self.get_mut().stream),
                    cx,
                    buf,
                )
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                tokio::io::AsyncWrite::poll_write_vectored(
                    std::pin::Pin::new(&mut self.get_mut().stream),
                    cx,
                    bufs,
                )
            }

            fn is_write_vectored(&self) -> bool {
                tokio::io::AsyncWrite::is_write_vectored(&self.stream)
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                tokio::io::AsyncWrite::poll_flush(
                    std::pin::Pin::new(&mut self.get_mut().stream),
                    cx,
                )
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                tokio::io::AsyncWrite::poll_shutdown(
                    std::pin::Pin::new(&mut self.get_mut().stream),
                    cx,
                )
            }
        }
    };
}
pub(crate) use write_to_stream;

write_to_stream!(LimitedConn);

impl Connected for LimitedConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Connections accepted by a limited listener, for `serve_with_incoming`; never yields an error
/// (failed `accept`s are retried with backoff). Dropping it stops accepting and closes the
/// listening socket.
pub type Incoming<T> = ReceiverStream<io::Result<T>>;

/// Accepts TCP connections on `listener` within `limits`: a connection over the global or the
/// per-address cap is closed at once (and a warning logged, at most every 10 s).
pub fn tcp_incoming(listener: TcpListener, limits: &ConnLimits) -> Incoming<LimitedConn> {
    let max = limits.effective_max();
    let local = listener.local_addr().ok();
    if max < limits.max_connections {
        tracing::warn!(listen = ?local, max_connections = max, asked = limits.max_connections,
            "the open-file limit (ulimit -n) lowers the TCP connection cap; raise it for more clients");
    }
    let gate = Arc::new(Gate {
        max,
        per_address: limits.max_per_address,
        counts: Mutex::new((0, HashMap::new())),
    });
    let refusals = LogThrottle::every(WARN_EVERY);
    accept_loop(listener, move |stream, peer: std::net::SocketAddr| {
        let Some(slot) = gate.admit(peer.ip()) else {
            drop(stream);
            if let Some(held_back) = refusals.admit() {
                tracing::warn!(listen = ?local, peer = %peer, open = gate.open(), held_back,
                    "connection cap reached: closing new TCP connections");
            }
            return None;
        };
        Some(LimitedConn {
            stream,
            _slot: slot,
        })
    })
}

/// The largest header list (gRPC metadata) a request may carry: 1 MiB. h2's default, 16 KiB,
/// refuses calls with more metadata (431), and closes the whole connection, every call on it,
/// for a header block over twice its limit; grpc-go's servers take up to 16 MiB.
pub const MAX_HEADER_LIST_BYTES: u32 = 1 << 20;

/// Accepts Unix connections on `listener`, backing off while `accept` fails; their requests
/// reach the gRPC server with a valid `:authority` whatever the client sent
/// ([`UnixConn`](crate::authority::UnixConn)).
pub fn unix_incoming(listener: UnixListener) -> Incoming<crate::authority::UnixConn> {
    accept_loop(listener, |stream, _| {
        Some(crate::authority::UnixConn::new(stream))
    })
}

/// A listening socket [`accept_loop`] can take connections from.
trait Accept: Send + 'static {
    /// An accepted connection.
    type Conn: Send + 'static;
    /// The peer's address.
    type Peer: Send + 'static;
    /// The next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Conn, Self::Peer)>> + Send;
}

impl Accept for TcpListener {
    type Conn = TcpStream;
    type Peer = std::net::SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, Self::Peer)>> + Send {
        TcpListener::accept(self)
    }
}

impl Accept for UnixListener {
    type Conn = UnixStream;
    type Peer = tokio::net::unix::SocketAddr;
    fn accept(&self) -> impl Future<Output = io::Result<(UnixStream, Self::Peer)>> + Send {
        UnixListener::accept(self)
    }
}

/// Accepts on `listener` in a task until the returned stream is dropped, handing each
/// connection to `admit` (which may close it: `None`), and backing off while `accept` fails.
fn accept_loop<L: Accept, T: Send + 'static>(
    listener: L,
    mut admit: impl FnMut(L::Conn, L::Peer) -> Option<T> + Send + 'static,
) -> Incoming<T> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut backoff = Backoff::new();
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((conn, peer)) => {
                    backoff.reset();
                    let Some(conn) = admit(conn, peer) else {
                        continue;
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if !backoff.pause(&e, tx.closed()).await {
                        return;
                    }
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The pause after a failed `accept`: none for errors of one connection (it was reset before
/// being accepted), growing from 10 ms to 1 s while resources are exhausted.
#[derive(Debug)]
struct Backoff {
    delay: Duration,
    warnings: LogThrottle,
}

impl Backoff {
    fn new() -> Self {
        Self {
            delay: MIN_BACKOFF,
            warnings: LogThrottle::every(WARN_EVERY),
        }
    }

    fn reset(&mut self) {
        self.delay = MIN_BACKOFF;
    }

    /// Waits after `e`; false when `closed` completes first (nobody takes connections any more).
    async fn pause(&mut self, e: &io::Error, closed: impl Future<Output = ()>) -> bool {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
        ) {
            return true;
        }
        if let Some(held_back) = self.warnings.admit() {
            tracing::warn!(error = %e, held_back, "accept failed; retrying with backoff (out of file descriptors? raise ulimit -n)");
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = closed => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

/// A TLS server's certificate chain and private key from PEM `cert` and `key`, checked to belong
/// together; an error names what is wrong (`certificate: no PEM certificate`, `key: ...`,
/// `certificate and key: ...`).
pub fn tls_identity(
    cert: &[u8],
    key: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("certificate: no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => "key: no PEM private key".to_owned(),
        e => format!("key: {e}"),
    })?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("protocol versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok((certs, key))
}

/// The client CA certificates of PEM `ca`; an error names what is wrong (`client CA: ...`).
pub fn tls_roots(ca: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        let c = c.map_err(|e| format!("client CA: {e}"))?;
        roots.add(c).map_err(|e| format!("client CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("client CA: no PEM certificate".into());
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_caps_per_address_and_in_total_and_gives_slots_back() {
        let gate = Arc::new(Gate {
            max: 3,
            per_address: 2,
            counts: Mutex::new((0, HashMap::new())),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "per-address cap");
        let _b1 = gate.admit(b).unwrap();
        assert!(gate.admit(b).is_none(), "global cap");
        drop(a1);
        let _b2 = gate.admit(b).expect("a slot given back is reused");
        assert!(gate.admit(a).is_none(), "global cap again");
        assert_eq!(gate.open(), 3);
    }

    #[test]
    fn effective_max_fits_the_descriptor_limit() {
        let limits = ConnLimits {
            max_connections: usize::MAX,
            ..ConnLimits::default()
        };
        if let Some(soft) = soft_descriptor_limit() {
            assert!(limits.effective_max() < soft);
        }
        let small = ConnLimits {
            max_connections: 3,
            ..ConnLimits::default()
        };
        assert!(small.effective_max() <= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_to_a_second_and_resets() {
        let mut b = Backoff::new();
        let emfile = io::Error::from_raw_os_error(24);
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            assert!(b.pause(&emfile, std::future::pending()).await);
        }
        assert_eq!(b.delay, MAX_BACKOFF);
        assert!(start.elapsed() >= Duration::from_secs(3));
        b.reset();
        assert_eq!(b.delay, MIN_BACKOFF);
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        let t = tokio::time::Instant::now();
        assert!(b.pause(&reset, std::future::pending()).await);
        assert_eq!(t.elapsed(), Duration::ZERO);
        assert!(!b.pause(&emfile, std::future::ready(())).await);
    }

    #[test]
    fn tls_files_name_what_is_wrong() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let (cert, key, other) = (cert.pem(), key.serialize_pem(), other.serialize_pem());
        assert!(super::tls_identity(cert.as_bytes(), key.as_bytes()).is_ok());
        let err = |c: &str, k: &str| super::tls_identity(c.as_bytes(), k.as_bytes()).unwrap_err();
        assert_eq!(err("junk", &key), "certificate: no PEM certificate");
        assert_eq!(err(&cert, "junk"), "key: no PEM private key");
        assert!(err(&cert, &other).starts_with("certificate and key: "));
        assert_eq!(super::tls_roots(cert.as_bytes()).unwrap().len(), 1);
        assert_eq!(
            super::tls_roots(b"junk").unwrap_err(),
            "client CA: no PEM certificate"
        );
    }
}
