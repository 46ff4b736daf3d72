//! The etcd client: one lazily connected channel per endpoint (plain or TLS), unary calls that
//! fail over to the next endpoint, and watch streams opened the same way.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use zeroize::Zeroizing;

use super::invalid;
use crate::backend::{BackendError, Revision};
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::watch_client::WatchClient;

/// Largest response accepted from etcd (a page of a large list).
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// How to reach an etcd cluster. The TLS material is given as PEM bytes: where it comes from
/// (files, a secret manager) is the caller's business.
#[derive(Clone)]
pub struct EtcdOptions {
    /// Client URLs, `http://host:port` or `https://host:port`; at least one.
    pub endpoints: Vec<String>,
    /// CA bundle (PEM) that signed the etcd servers' certificates: required for https endpoints
    /// and with a client certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain (PEM) for etcd's client-certificate authentication; given
    /// together with `key_pem`.
    pub cert_pem: Option<Vec<u8>>,
    /// The client certificate's private key (PEM); zeroized when dropped.
    pub key_pem: Option<Zeroizing<Vec<u8>>>,
    /// Time to establish a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Time one request may take on one endpoint before the next is tried.
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            ca_pem: None,
            cert_pem: None,
            key_pem: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given = |b: bool| if b { "<pem>" } else { "none" };
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("ca_pem", &given(self.ca_pem.is_some()))
            .field("cert_pem", &given(self.cert_pem.is_some()))
            .field("key_pem", &given(self.key_pem.is_some()))
            .finish_non_exhaustive()
    }
}

/// Why [`EtcdOptions`] cannot be used; every case is the caller's input. Messages name the
/// options' own fields; a command line words them with its flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdOptionsError {
    /// No endpoint at all.
    #[error("endpoints: at least one URL is required (e.g. http://127.0.0.1:2379)")]
    NoEndpoints,
    /// A client certificate without its key, or a key without its certificate.
    #[error("cert_pem and key_pem must be given together")]
    CertWithoutKey,
    /// A client certificate without the CA that verifies etcd.
    #[error("cert_pem/key_pem need ca_pem, the CA that signed etcd's certificates")]
    ClientCertWithoutCa,
    /// An endpoint that is neither `http://` nor `https://`.
    #[error("endpoints: {0:?} must start with http:// or https://")]
    Scheme(String),
    /// An `https://` endpoint without a CA.
    #[error(
        "endpoints: {0:?} is https; give ca_pem (and cert_pem/key_pem for client authentication)"
    )]
    HttpsWithoutCa(String),
    /// An endpoint that does not parse as a URL.
    #[error("endpoints: {url:?} is not a URL: {reason}")]
    NotAUrl {
        /// The endpoint.
        url: String,
        /// What the URL parser said.
        reason: String,
    },
    /// TLS material given while every endpoint is `http://`: it would not be used.
    #[error(
        "ca_pem, cert_pem and key_pem apply to https:// endpoints; every endpoint given is http://"
    )]
    TlsWithoutHttps,
    /// TLS material that does not parse, or a certificate and key that do not belong together.
    #[error("{field}: {reason}")]
    BadTls {
        /// `ca_pem`, `cert_pem`, `key_pem`, or `cert_pem and key_pem`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl EtcdOptions {
    /// Checks the options without connecting: the client certificate and key come together and
    /// with a CA, and every endpoint is an `http://` or `https://` URL (an https one with a CA).
    /// [`EtcdClient::new`] refuses what this refuses.
    pub fn validate(&self) -> Result<(), EtcdOptionsError> {
        self.endpoints_checked().map(|_| ())
    }

    /// The endpoints, trimmed and parsed, with whether each is https.
    fn endpoints_checked(&self) -> Result<Vec<(String, bool, Endpoint)>, EtcdOptionsError> {
        if self.endpoints.is_empty() {
            return Err(EtcdOptionsError::NoEndpoints);
        }
        if self.cert_pem.is_some() != self.key_pem.is_some() {
            return Err(EtcdOptionsError::CertWithoutKey);
        }
        if self.cert_pem.is_some() && self.ca_pem.is_none() {
            return Err(EtcdOptionsError::ClientCertWithoutCa);
        }
        // `net`'s messages start with what is at fault: named here by these options' fields.
        let bad_tls = |e: String| {
            let (what, reason) = e.split_once(": ").unwrap_or(("", e.as_str()));
            EtcdOptionsError::BadTls {
                field: match what {
                    "client CA" => "ca_pem",
                    "certificate" => "cert_pem",
                    "key" => "key_pem",
                    _ => "cert_pem and key_pem",
                },
                reason: reason.to_owned(),
            }
        };
        if let Some(ca) = &self.ca_pem {
            crate::net::tls_roots(ca).map_err(bad_tls)?;
        }
        if let (Some(cert), Some(key)) = (&self.cert_pem, &self.key_pem) {
            crate::net::tls_identity(cert, key).map_err(bad_tls)?;
        }
        let mut out = Vec::with_capacity(self.endpoints.len());
        for url in &self.endpoints {
            let url = url.trim();
            let https = url.starts_with("https://");
            if !https && !url.starts_with("http://") {
                return Err(EtcdOptionsError::Scheme(url.to_owned()));
            }
            if https && self.ca_pem.is_none() {
                return Err(EtcdOptionsError::HttpsWithoutCa(url.to_owned()));
            }
            // user:password@ would be ignored (etcd authenticates keyward by its client
            // certificate), and must not be repeated in a message or a log.
            let rest = url.split_once("://").map_or(url, |(_, r)| r);
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            if let Some((_, host)) = authority.rsplit_once('@') {
                return Err(EtcdOptionsError::NotAUrl {
                    url: format!("{}://…@{host}", if https { "https" } else { "http" }),
                    reason: "credentials in the URL are not used: etcd authenticates keyward by its client certificate (cert_pem/key_pem)".into(),
                });
            }
            let not_a_url = |reason: String| EtcdOptionsError::NotAUrl {
                url: url.to_owned(),
                reason,
            };
            let ep = Endpoint::from_shared(url.to_owned()).map_err(|e| not_a_url(e.to_string()))?;
            check_host_and_port(ep.uri()).map_err(not_a_url)?;
            out.push((url.to_owned(), https, ep));
        }
        if self.ca_pem.is_some() && !out.iter().any(|(_, https, _)| *https) {
            return Err(EtcdOptionsError::TlsWithoutHttps);
        }
        Ok(out)
    }
}

/// An etcd client URL names a host and, if any, a port that is a number, and nothing after
/// them (etcd serves its API at the root).
fn check_host_and_port(uri: &tonic::codegen::http::Uri) -> Result<(), String> {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6
            .split_once(']')
            .and_then(|(_, rest)| rest.strip_prefix(':')),
        None => host_port.split_once(':').map(|(_, p)| p),
    };
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err("no host".into());
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{port:?} is not a port (1 to 65535)"));
        }
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("a client URL is scheme://host:port, with no path".into());
    }
    Ok(())
}

struct Member {
    url: String,
    channel: Channel,
    /// Its cluster id was checked against the one this client serves (see
    /// [`EtcdClient::verify`]); cleared when it fails, so that whatever answers at its URL
    /// next is checked again.
    verified: AtomicBool,
}

/// A response that carries etcd's header (cluster id, revision).
pub(super) trait Headed {
    /// The header, if etcd sent one.
    fn header(&self) -> Option<&pb::ResponseHeader>;
}

macro_rules! headed {
    ($($t:ty),*) => {
        $(impl Headed for $t {
            fn header(&self) -> Option<&pb::ResponseHeader> {
                self.header.as_ref()
            }
        })*
    };
}

headed!(
    pb::RangeResponse,
    pb::PutResponse,
    pb::DeleteRangeResponse,
    pb::TxnResponse,
    pb::CompactionResponse,
    pb::StatusResponse
);

impl Headed for WatchParts {
    fn header(&self) -> Option<&pb::ResponseHeader> {
        self.created.header.as_ref()
    }
}

/// A client for the etcd v3 API subset keyward needs, with failover across endpoints.
#[derive(Clone)]
pub struct EtcdClient {
    members: Arc<Vec<Member>>,
    current: Arc<AtomicUsize>,
    request_timeout: Duration,
    /// The id of the cluster this client serves: the first member that answers sets it, and
    /// a member of another cluster is refused (0: not known yet).
    cluster: Arc<AtomicU64>,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.members.iter().map(|m| m.url.as_str()).collect();
        write!(f, "EtcdClient({})", urls.join(","))
    }
}

impl EtcdClient {
    /// Builds channels to every endpoint. Connections are made on first use, so this succeeds
    /// while etcd is down; must be called inside a tokio runtime.
    pub fn new(opts: &EtcdOptions) -> Result<EtcdClient, BackendError> {
        let endpoints = opts
            .endpoints_checked()
            .map_err(|e| invalid(e.to_string()))?;
        let plain: Vec<&str> = endpoints
            .iter()
            .filter(|(_, https, _)| !https)
            .map(|(url, _, _)| url.as_str())
            .collect();
        if !plain.is_empty() {
            tracing::warn!(endpoints = %plain.join(","),
                "plain http:// etcd endpoints: traffic is neither encrypted nor authenticated, so anyone on the path can read or change what keyward stores; use https:// with a CA and client certificates");
        }
        let tls = opts.ca_pem.as_ref().map(|ca| {
            let cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            match (&opts.cert_pem, &opts.key_pem) {
                (Some(cert), Some(key)) => cfg.identity(Identity::from_pem(cert, key.as_slice())),
                _ => cfg,
            }
        });
        let mut members = Vec::new();
        for (url, https, ep) in endpoints {
            let mut ep = ep
                .connect_timeout(opts.connect_timeout)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .tcp_nodelay(true);
            if let (true, Some(cfg)) = (https, &tls) {
                ep = ep
                    .tls_config(cfg.clone())
                    .map_err(|e| invalid(format!("etcd TLS configuration: {e}")))?;
            }
            members.push(Member {
                url,
                channel: ep.connect_lazy(),
                verified: AtomicBool::new(false),
            });
        }
        Ok(EtcdClient {
            members: Arc::new(members),
            current: Arc::new(AtomicUsize::new(0)),
            request_timeout: opts.request_timeout,
            cluster: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Checks, before member `i` is first sent a request (and again after it failed), that it
    /// belongs to the cluster this client serves: endpoints of two clusters would otherwise
    /// serve one cluster's data until a failover and the other's after it (a Secret written
    /// and acknowledged would vanish). The first member checked sets the cluster.
    async fn verify(&self, i: usize) -> Result<(), Status> {
        let m = &self.members[i];
        if m.verified.load(Ordering::Relaxed) {
            return Ok(());
        }
        let status = self.member_status(i).await?;
        self.same_cluster(i, status.header())?;
        m.verified.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Every endpoint that answers is a member of one cluster (checked at start, so that a
    /// list of endpoints of two clusters is refused at once rather than at a failover).
    pub async fn check_one_cluster(&self) -> Result<(), String> {
        let mut seen: Option<(u64, &str)> = None;
        for (i, m) in self.members.iter().enumerate() {
            let Ok(status) = self.member_status(i).await else {
                continue;
            };
            let Some(id) = status.header.map(|h| h.cluster_id) else {
                continue;
            };
            match seen {
                Some((first, url)) if first != id => {
                    return Err(format!(
                        "{url} is a member of etcd cluster {first:x} and {} of cluster {id:x}: give the endpoints of one cluster",
                        m.url
                    ))
                }
                Some(_) => {}
                None => seen = Some((id, &m.url)),
            }
        }
        Ok(())
    }

    /// Maintenance.Status of member `i` alone, within the request timeout.
    async fn member_status(&self, i: usize) -> Result<pb::StatusResponse, Status> {
        let m = &self.members[i];
        let mut c = MaintenanceClient::new(m.channel.clone());
        match tokio::time::timeout(self.request_timeout, c.status(pb::StatusRequest {})).await {
            Ok(res) => Ok(res?.into_inner()),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "etcd {} did not answer within {:?}",
                m.url, self.request_timeout
            ))),
        }
    }

    /// Refuses an answer of member `i` whose header names another cluster than the one this
    /// client serves (pinning it if none is yet).
    fn same_cluster(&self, i: usize, header: Option<&pb::ResponseHeader>) -> Result<(), Status> {
        let Some(id) = header.map(|h| h.cluster_id).filter(|&id| id != 0) else {
            return Ok(());
        };
        // Read first: once pinned, an answer costs one load, not a locked compare-and-swap.
        let pinned = match self.cluster.load(Ordering::Relaxed) {
            0 => match self
                .cluster
                .compare_exchange(0, id, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(pinned) => pinned,
            },
            pinned => pinned,
        };
        if pinned == id {
            return Ok(());
        }
        self.members[i].verified.store(false, Ordering::Relaxed);
        static OTHER_CLUSTER: crate::log_throttle::LogThrottle =
            crate::log_throttle::LogThrottle::new();
        let message = format!(
            "etcd {} is a member of cluster {id:x}, not of cluster {pinned:x} that this server uses; \
             it is not used (give --etcd-endpoints of one cluster only)",
            self.members[i].url
        );
        if let Some(held_back) = OTHER_CLUSTER.admit() {
            tracing::error!(held_back, "{message}");
        }
        Err(Status::unavailable(message))
    }

    /// The endpoint requests currently go to.
    pub fn current_endpoint(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.members.len();
        &self.members[i].url
    }

    fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.members[i].channel.clone()).max_decoding_message_size(MAX_RESPONSE)
    }

    /// Runs one unary request with failover. `idempotent` requests are retried on the next
    /// endpoint after any transport failure; others only when the request was never sent.
    async fn call<T: Headed, F, Fut>(&self, idempotent: bool, f: F) -> Result<T, Status>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.members.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for attempt in 0..n {
            let i = (start + attempt) % n;
            // A member not (or no longer) known to be of this cluster is checked before it is
            // sent anything: the request is then never sent to it if it is not.
            let verified = match self.verify(i).await {
                Ok(()) => Ok(()),
                Err(s) if member_failed(&s) => Err((s, true)),
                Err(s) => return Err(s),
            };
            let res = match verified {
                Err(failed) => Err(failed),
                Ok(()) => match tokio::time::timeout(self.request_timeout, f(i)).await {
                    Ok(Ok(resp)) => {
                        let resp = resp.into_inner();
                        match self.same_cluster(i, resp.header()) {
                            Ok(()) => Ok(resp),
                            // Its answer is not this cluster's: whatever it did is ignored,
                            // and a write's outcome here is unknown.
                            Err(s) => Err((s, false)),
                        }
                    }
                    Ok(Err(s)) => Err((s, false)),
                    Err(_) => Err((
                        Status::deadline_exceeded(format!(
                            "etcd {} did not answer within {:?}",
                            self.members[i].url, self.request_timeout
                        )),
                        false,
                    )),
                },
            };
            match res {
                Ok(resp) => {
                    if attempt > 0 {
                        self.current.store(i, Ordering::Relaxed);
                        tracing::info!(endpoint = %self.members[i].url, "etcd endpoint switched");
                    }
                    return Ok(resp);
                }
                Err((status, unsent)) if member_failed(&status) => {
                    self.members[i].verified.store(false, Ordering::Relaxed);
                    let retry = idempotent || unsent || never_sent(&status);
                    tracing::debug!(endpoint = %self.members[i].url, error = %status.message(), "etcd request failed");
                    let next = (i + 1) % n;
                    if n > 1
                        && self
                            .current
                            .compare_exchange(start % n, next, Ordering::Relaxed, Ordering::Relaxed)
                            .is_ok()
                    {
                        tracing::info!(
                            failed = %self.members[i].url,
                            next = %self.members[next].url,
                            error = %status.message(),
                            "etcd endpoint failed; switching"
                        );
                    }
                    // A member that failed mid-request leaves the outcome unknown: Unavailable.
                    last = Some(Status::unavailable(format!(
                        "etcd {}: {}",
                        self.members[i].url,
                        status.message()
                    )));
                    if !retry {
                        break;
                    }
                }
                Err((status, _)) => return Err(status),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no etcd endpoint")))
    }

    /// KV.Range.
    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        self.call(true, |i| {
            let mut c = self.kv(i);
            let req = req.clone();
            async move { c.range(req).await }
        })
        .await
    }

    /// KV.Put (not retried once sent).
    pub async fn put(&self, req: pb::PutRequest) -> Result<pb::PutResponse, Status> {
        self.call(false, |i| {
            let mut c = self.kv(i);
            let req = req.clone();
            async move { c.put(req).await }
        })
        .await
    }

    /// KV.DeleteRange (not retried once sent).
    pub async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, Status> {
        self.call(false, |i| {
            let mut c = self.kv(i);
            let req = req.clone();
            async move { c.delete_range(req).await }
        })
        .await
    }

    /// KV.Txn (not retried once sent).
    pub async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        self.call(false, |i| {
            let mut c = self.kv(i);
            let req = req.clone();
            async move { c.txn(req).await }
        })
        .await
    }

    /// KV.Compact (idempotent).
    pub async fn compact(&self, revision: Revision) -> Result<pb::CompactionResponse, Status> {
        self.call(true, |i| {
            let mut c = self.kv(i);
            async move {
                c.compact(pb::CompactionRequest {
                    revision: revision.get(),
                    physical: true,
                })
                .await
            }
        })
        .await
    }

    /// Maintenance.Status of the current endpoint's member.
    pub async fn status(&self) -> Result<pb::StatusResponse, Status> {
        self.call(true, |i| {
            let mut c = MaintenanceClient::new(self.members[i].channel.clone());
            async move { c.status(pb::StatusRequest {}).await }
        })
        .await
    }

    /// Opens a watch stream on the current endpoint (failing over like a read), sends `create`
    /// and waits for etcd's `created` answer. Returns the request sender (keep it alive: etcd
    /// ends the watch when the client's side closes), the response stream, and that answer.
    pub async fn watch(&self, create: pb::WatchCreateRequest) -> Result<WatchParts, Status> {
        let timeout = self.request_timeout;
        self.call(true, |i| {
            let mut c = WatchClient::new(self.members[i].channel.clone())
                .max_decoding_message_size(MAX_RESPONSE);
            let create = create.clone();
            async move {
                // Each attempt needs its own request stream.
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let first = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
                };
                tx.send(first)
                    .await
                    .map_err(|_| Status::internal("watch request channel closed"))?;
                let mut stream = c
                    .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                let created = match tokio::time::timeout(timeout, stream.message()).await {
                    Ok(Ok(Some(resp))) => resp,
                    Ok(Ok(None)) => {
                        return Err(Status::unavailable("etcd closed the watch stream"))
                    }
                    Ok(Err(status)) => return Err(status),
                    Err(_) => {
                        return Err(Status::deadline_exceeded("etcd did not confirm the watch"))
                    }
                };
                Ok(tonic::Response::new(WatchParts {
                    requests: tx,
                    responses: stream,
                    created,
                }))
            }
        })
        .await
    }
}

/// An open etcd watch.
pub struct WatchParts {
    /// The client's side of the stream; etcd ends the watch when it is dropped.
    pub requests: tokio::sync::mpsc::Sender<pb::WatchRequest>,
    /// etcd's responses after `created`.
    pub responses: tonic::Streaming<pb::WatchResponse>,
    /// etcd's first answer (`created`, or `canceled` with the reason).
    pub created: pb::WatchResponse,
}

impl std::fmt::Debug for WatchParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchParts")
            .field("watch_id", &self.created.watch_id)
            .finish_non_exhaustive()
    }
}

/// The member failed or could not be reached: try another. A connection that broke under a
/// request ends it as cancelled (keyward cancels none itself: its own time limit is
/// `DeadlineExceeded`).
fn member_failed(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    ) && !status.message().contains("mvcc:")
}

/// The request certainly never reached a server: the connection could not be made.
fn never_sent(status: &Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) {
                return true;
            }
        }
        if e.to_string().contains("tcp connect error") {
            return true;
        }
        source = e.source();
    }
    status.message().contains("tcp connect error")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(endpoints: &[&str]) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            ..EtcdOptions::default()
        }
    }

    #[test]
    fn options_are_checked_with_their_own_field_names() {
        let pair = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["etcd".into()])
            .unwrap()
            .self_signed(&pair)
            .unwrap()
            .pem();
        let pem = || Some(ca.clone().into_bytes());
        assert_eq!(opts(&[]).validate(), Err(EtcdOptionsError::NoEndpoints));
        let cert_only = EtcdOptions {
            cert_pem: pem(),
            ..opts(&["http://e:2379"])
        };
        assert_eq!(cert_only.validate(), Err(EtcdOptionsError::CertWithoutKey));
        let no_ca = EtcdOptions {
            key_pem: Some(Zeroizing::new(b"key".to_vec())),
            ..cert_only
        };
        assert_eq!(no_ca.validate(), Err(EtcdOptionsError::ClientCertWithoutCa));
        assert_eq!(
            opts(&["http://a:1", "e:2379"]).validate(),
            Err(EtcdOptionsError::Scheme("e:2379".into()))
        );
        let e = opts(&["https://e:2379"]).validate().unwrap_err();
        assert_eq!(e, EtcdOptionsError::HttpsWithoutCa("https://e:2379".into()));
        assert_eq!(
            e.to_string(),
            "endpoints: \"https://e:2379\" is https; give ca_pem (and cert_pem/key_pem for client authentication)"
        );
        assert!(matches!(
            opts(&["http://[::1"]).validate(),
            Err(EtcdOptionsError::NotAUrl { .. })
        ));
        for (bad, why) in [
            (
                "http://127.0.0.1:notaport",
                "\"notaport\" is not a port (1 to 65535)",
            ),
            ("http://127.0.0.1:0", "\"0\" is not a port (1 to 65535)"),
            (
                "http://e:2379/v3",
                "a client URL is scheme://host:port, with no path",
            ),
        ] {
            assert_eq!(
                opts(&[bad]).validate(),
                Err(EtcdOptionsError::NotAUrl {
                    url: bad.into(),
                    reason: why.into()
                })
            );
        }
        assert_eq!(opts(&["http://[::1]:2379", "http://e"]).validate(), Ok(()));
        let creds = opts(&["http://root:hunter2@e:2379"])
            .validate()
            .unwrap_err();
        assert!(!creds.to_string().contains("hunter2"), "{creds}");
        assert!(
            creds.to_string().starts_with(
                "endpoints: \"http://…@e:2379\" is not a URL: credentials in the URL are not used"
            ),
            "{creds}"
        );
        let junk_ca = EtcdOptions {
            ca_pem: Some(b"junk".to_vec()),
            ..opts(&["https://e:2379"])
        };
        assert_eq!(
            junk_ca.validate().unwrap_err().to_string(),
            "ca_pem: no PEM certificate"
        );
        let unused_ca = EtcdOptions {
            ca_pem: pem(),
            ..opts(&["http://e:2379"])
        };
        assert_eq!(unused_ca.validate(), Err(EtcdOptionsError::TlsWithoutHttps));
        let with_ca = EtcdOptions {
            ca_pem: pem(),
            ..opts(&[" https://e:2379 ", "http://f:2379"])
        };
        assert_eq!(with_ca.validate(), Ok(()));
        let debug = format!(
            "{:?}",
            EtcdOptions {
                key_pem: Some(Zeroizing::new(b"SECRET".to_vec())),
                ..with_ca
            }
        );
        assert!(
            !debug.contains("SECRET") && debug.contains("key_pem: \"<pem>\""),
            "{debug}"
        );
    }
}
