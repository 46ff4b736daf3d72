//! The etcd implementation of [`Backend`]: etcd's v3 gRPC API, spoken directly with the protos in
//! `proto/etcd` (compiled by protox, so no system `protoc` is needed).
//!
//! Keys are stored as given (the store already lays them out as kube-apiserver does, under
//! `<prefix>/secrets/<namespace>/<name>`), so `etcdctl get --prefix /registry/secrets` shows
//! exactly what kube-apiserver would store. Revisions are etcd's own: `resourceVersion` is the
//! key's `mod_revision`, conditional writes are one `Txn` comparing `mod_revision` (or
//! `create_revision = 0` for create-only), history is read at past revisions, and watches are
//! etcd watches with `prev_kv`. etcd keeps every revision until it is compacted, so this
//! backend has no per-key history limit. One difference from the sled backend: a watch from
//! exactly the compacted revision is refused as compacted (watch from the next one), because
//! etcd before 3.4.34/3.5.16 silently drops a delete at that revision from the replay
//! (etcd-io/etcd#18089), and cannot give that event's `prev` in any version.
//!
//! # Endpoints and failover
//! Every endpoint gets its own lazily connected channel. A request goes to the current endpoint;
//! if that endpoint cannot be reached or times out, the next one becomes current. Reads are
//! retried on the next endpoint at once. A write is retried only when it certainly did not reach
//! the server (the connection could not be made); otherwise its outcome is unknown and the caller
//! gets [`BackendError::Unavailable`], as etcd's own client does.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use super::{
    check_key, prefix_end, Backend, BackendError, Event, EventKind, Expect, KeyValue, RangeRequest,
    RangeResponse, Revision, WatchStream, WriteOutcome,
};
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::mvccpb;

/// Largest response accepted from etcd (a page of a large list).
const MAX_RESPONSE: usize = 256 * 1024 * 1024;
/// What a write larger than etcd's request limit gets.
const TOO_LARGE: &str = "the object is larger than etcd accepts in one request: etcd's \
     --max-request-bytes is 1.5 MiB by default; raise it (e.g. to 4 MiB) to store Secrets near \
     Kubernetes' 1 MiB data limit";
/// Events buffered per watch before etcd's stream is back-pressured.
const WATCH_BUFFER: usize = 256;

/// How to reach an etcd cluster.
#[derive(Clone)]
pub struct EtcdOptions {
    /// Client URLs, `http://host:port` or `https://host:port`; at least one.
    pub endpoints: Vec<String>,
    /// CA bundle (PEM) that signed the etcd servers' certificates (https endpoints).
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-certificate authentication.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// Time to establish a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Time one request may take on one endpoint before the next is tried.
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            ca: None,
            cert: None,
            key: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key.as_ref().map(|_| "<path>"))
            .finish_non_exhaustive()
    }
}

struct Member {
    url: String,
    channel: Channel,
}

/// A client for the etcd v3 API subset keyward needs, with failover across endpoints.
#[derive(Clone)]
pub struct EtcdClient {
    members: Arc<Vec<Member>>,
    current: Arc<AtomicUsize>,
    request_timeout: Duration,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.members.iter().map(|m| m.url.as_str()).collect();
        write!(f, "EtcdClient({})", urls.join(","))
    }
}

fn invalid(msg: String) -> BackendError {
    BackendError::InvalidArgument(msg)
}

fn read_pem(path: &PathBuf, flag: &str) -> Result<Vec<u8>, BackendError> {
    std::fs::read(path).map_err(|e| invalid(format!("{flag} {}: cannot read: {e}", path.display())))
}

impl EtcdClient {
    /// Builds channels to every endpoint. Connections are made on first use, so this succeeds
    /// while etcd is down; must be called inside a tokio runtime.
    pub fn new(opts: &EtcdOptions) -> Result<EtcdClient, BackendError> {
        if opts.endpoints.is_empty() {
            return Err(invalid(
                "--etcd-endpoints: at least one URL is required (e.g. http://127.0.0.1:2379)"
                    .into(),
            ));
        }
        if opts.cert.is_some() != opts.key.is_some() {
            return Err(invalid(
                "--etcd-cert and --etcd-key must be given together".into(),
            ));
        }
        let mut tls = None;
        if opts.ca.is_some() || opts.cert.is_some() {
            let mut cfg = ClientTlsConfig::new();
            let Some(ca) = &opts.ca else {
                return Err(invalid(
                    "--etcd-cert/--etcd-key need --etcd-ca, the CA that signed etcd's certificates"
                        .into(),
                ));
            };
            cfg = cfg.ca_certificate(Certificate::from_pem(read_pem(ca, "--etcd-ca")?));
            if let (Some(cert), Some(key)) = (&opts.cert, &opts.key) {
                let key_pem = crate::seal::read_private_file(key, 1 << 20)
                    .map_err(|e| invalid(format!("--etcd-key: {e}")))?;
                cfg = cfg.identity(Identity::from_pem(
                    read_pem(cert, "--etcd-cert")?,
                    key_pem.as_slice(),
                ));
            }
            tls = Some(cfg);
        }
        let mut members = Vec::new();
        for url in &opts.endpoints {
            let url = url.trim();
            let https = url.starts_with("https://");
            if !https && !url.starts_with("http://") {
                return Err(invalid(format!(
                    "--etcd-endpoints: {url:?} must start with http:// or https://"
                )));
            }
            if https && tls.is_none() {
                return Err(invalid(format!(
                    "--etcd-endpoints: {url:?} is https; give --etcd-ca (and --etcd-cert/--etcd-key for client authentication)"
                )));
            }
            let mut ep = Endpoint::from_shared(url.to_owned())
                .map_err(|e| invalid(format!("--etcd-endpoints: {url:?} is not a URL: {e}")))?
                .connect_timeout(opts.connect_timeout)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .tcp_nodelay(true);
            if https {
                if let Some(cfg) = &tls {
                    ep = ep
                        .tls_config(cfg.clone())
                        .map_err(|e| invalid(format!("etcd TLS configuration: {e}")))?;
                }
            }
            members.push(Member {
                url: url.to_owned(),
                channel: ep.connect_lazy(),
            });
        }
        Ok(EtcdClient {
            members: Arc::new(members),
            current: Arc::new(AtomicUsize::new(0)),
            request_timeout: opts.request_timeout,
        })
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
    async fn call<T, F, Fut>(&self, idempotent: bool, f: F) -> Result<T, Status>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.members.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for attempt in 0..n {
            let i = (start + attempt) % n;
            let res = match tokio::time::timeout(self.request_timeout, f(i)).await {
                Ok(res) => res,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "etcd {} did not answer within {:?}",
                    self.members[i].url, self.request_timeout
                ))),
            };
            match res {
                Ok(resp) => {
                    if attempt > 0 {
                        self.current.store(i, Ordering::Relaxed);
                        tracing::info!(endpoint = %self.members[i].url, "etcd endpoint switched");
                    }
                    return Ok(resp.into_inner());
                }
                Err(status) if member_failed(&status) => {
                    let retry = idempotent || never_sent(&status);
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
                Err(status) => return Err(status),
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
                    revision,
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

/// The member failed or could not be reached: try another.
fn member_failed(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
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

/// The etcd implementation of [`Backend`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EtcdBackend {
    client: EtcdClient,
    /// A lower bound of etcd's compacted revision (compaction only moves forward).
    compacted: Arc<AtomicI64>,
}

fn kv_from(kv: mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
    }
}

fn header_revision(h: Option<pb::ResponseHeader>) -> Result<Revision, BackendError> {
    h.map(|h| h.revision)
        .ok_or_else(|| BackendError::Corrupt("etcd response without a header".into()))
}

fn check_revision(revision: Option<Revision>) -> Result<Revision, BackendError> {
    match revision {
        None => Ok(0),
        Some(r) if r < 1 => Err(invalid(format!("revision must be at least 1, got {r}"))),
        Some(r) => Ok(r),
    }
}

fn put_op(key: &[u8], value: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value,
            prev_kv: true,
            ..Default::default()
        })),
    }
}

fn delete_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.to_vec(),
                prev_kv: true,
                ..Default::default()
            },
        )),
    }
}

fn get_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

fn compare(
    key: &[u8],
    target: CompareTarget,
    result: CompareResult,
    value: TargetUnion,
) -> pb::Compare {
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.to_vec(),
        target_union: Some(value),
        range_end: Vec::new(),
    }
}

/// The comparisons that make `expect` hold in a txn (None: unconditional).
fn conditions(key: &[u8], expect: Expect) -> Option<Vec<pb::Compare>> {
    match expect {
        Expect::Any => None,
        Expect::Absent => Some(vec![compare(
            key,
            CompareTarget::Create,
            CompareResult::Equal,
            TargetUnion::CreateRevision(0),
        )]),
        // etcd reports mod_revision 0 for a missing key: also require that the key exists.
        Expect::ModRevision(r) => Some(vec![
            compare(
                key,
                CompareTarget::Mod,
                CompareResult::Equal,
                TargetUnion::ModRevision(r),
            ),
            compare(
                key,
                CompareTarget::Create,
                CompareResult::Greater,
                TargetUnion::CreateRevision(0),
            ),
        ]),
    }
}

impl EtcdBackend {
    /// A backend on the etcd cluster at `opts.endpoints`. Connects lazily; call
    /// [`EtcdBackend::check`] to fail fast when etcd is unreachable. Needs a tokio runtime.
    pub fn connect(opts: &EtcdOptions) -> Result<EtcdBackend, BackendError> {
        Ok(EtcdBackend {
            client: EtcdClient::new(opts)?,
            compacted: Arc::new(AtomicI64::new(1)),
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    /// Asks a member for its status: proves etcd is reachable and has a leader. Returns the
    /// server version.
    pub async fn check(&self) -> Result<String, BackendError> {
        let st = self
            .client
            .status()
            .await
            .map_err(|s| self.error(s, None))?;
        if st.leader == 0 {
            return Err(BackendError::Unavailable(format!(
                "etcd {} has no leader",
                self.client.current_endpoint()
            )));
        }
        Ok(st.version)
    }

    /// Maps an etcd status to this layer's error; `requested` is the revision a read asked for.
    fn error(&self, status: Status, requested: Option<Revision>) -> BackendError {
        let msg = status.message();
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                BackendError::Unavailable(msg.to_owned())
            }
            Code::InvalidArgument if msg.contains("request is too large") => {
                BackendError::InvalidArgument(TOO_LARGE.to_owned())
            }
            Code::ResourceExhausted if msg.contains("larger than max") => {
                BackendError::InvalidArgument(TOO_LARGE.to_owned())
            }
            Code::ResourceExhausted if msg.contains("space exceeded") => {
                BackendError::Unavailable(format!(
                    "etcd is out of space ({msg}): compact and defragment it, or raise its --quota-backend-bytes"
                ))
            }
            Code::InvalidArgument => BackendError::InvalidArgument(msg.to_owned()),
            Code::OutOfRange if msg.contains("compacted") => BackendError::Compacted {
                requested: requested.unwrap_or(0),
                compacted: self.compacted.load(Ordering::Relaxed),
            },
            Code::OutOfRange if msg.contains("future") => BackendError::FutureRevision {
                requested: requested.unwrap_or(0),
                current: 0,
            },
            _ => BackendError::Io(format!("etcd: {msg}")),
        }
    }

    /// Fills in what etcd's errors leave out: the compacted or current revision.
    async fn complete(&self, e: BackendError) -> BackendError {
        match e {
            BackendError::Compacted { requested, .. } => match self.compacted_revision().await {
                Ok(compacted) => BackendError::Compacted {
                    requested,
                    compacted,
                },
                Err(e) => e,
            },
            BackendError::FutureRevision { requested, .. } => match self.current_revision().await {
                Ok(current) => BackendError::FutureRevision { requested, current },
                Err(e) => e,
            },
            other => other,
        }
    }

    async fn raw_range(
        &self,
        req: pb::RangeRequest,
        requested: Option<Revision>,
    ) -> Result<pb::RangeResponse, BackendError> {
        match self.client.range(req).await {
            Ok(resp) => Ok(resp),
            Err(status) => Err(self.complete(self.error(status, requested)).await),
        }
    }

    async fn write_txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse, BackendError> {
        self.client.txn(req).await.map_err(|s| self.error(s, None))
    }

    /// Refuses a watch etcd could not replay whole. etcd accepts a watch from a compacted
    /// revision and cancels it later, so this asks first. It also refuses a watch from exactly
    /// the compacted revision: etcd before 3.4.34 and 3.5.16 drops a delete at that revision
    /// from the replay (etcd-io/etcd#18089), so such a watch could miss a deletion; the caller
    /// relists instead, as after any compaction.
    async fn check_watchable(&self, from: Revision) -> Result<(), BackendError> {
        if from == 0 {
            return Ok(());
        }
        let compacted = self.compacted_revision().await?;
        if from < compacted || (from == compacted && compacted > 1) {
            return Err(BackendError::Compacted {
                requested: from,
                compacted: if compacted > 1 {
                    compacted + 1
                } else {
                    compacted
                },
            });
        }
        Ok(())
    }

    /// Opens an etcd watch on `prefix` (every key when empty) from `from` (0: from now), with
    /// `prev_kv`. A compacted `from` gives [`BackendError::Compacted`].
    async fn open_watch(&self, prefix: &[u8], from: Revision) -> Result<WatchParts, BackendError> {
        let (key, range_end) = if prefix.is_empty() {
            (vec![0], vec![0])
        } else {
            (prefix.to_vec(), prefix_end(prefix))
        };
        let create = pb::WatchCreateRequest {
            key,
            range_end,
            start_revision: from,
            prev_kv: true,
            ..Default::default()
        };
        let parts = self
            .client
            .watch(create)
            .await
            .map_err(|s| self.error(s, None))?;
        let created = &parts.created;
        if created.compact_revision > 0 {
            self.compacted
                .fetch_max(created.compact_revision, Ordering::Relaxed);
            return Err(BackendError::Compacted {
                requested: from,
                compacted: created.compact_revision,
            });
        }
        if created.canceled {
            return Err(BackendError::Io(format!(
                "etcd refused the watch: {}",
                created.cancel_reason
            )));
        }
        Ok(parts)
    }

    /// Whether a read at `revision` is possible (not compacted).
    async fn readable_at(&self, revision: Revision) -> Result<bool, BackendError> {
        let req = pb::RangeRequest {
            key: vec![0],
            revision,
            count_only: true,
            ..Default::default()
        };
        match self.client.range(req).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::OutOfRange && s.message().contains("compacted") => {
                Ok(false)
            }
            Err(s) => Err(self.error(s, Some(revision))),
        }
    }
}

/// Feeds one backend watch stream from etcd. When the member serving it fails, the watch is
/// reopened (on the next reachable member) from the revision after the last event delivered,
/// so a member failure loses and repeats nothing.
struct WatchFeed {
    backend: EtcdBackend,
    prefix: Vec<u8>,
    /// Revision of the next event to deliver.
    next: Revision,
    tx: tokio::sync::mpsc::Sender<Result<Event, BackendError>>,
}

/// How long a broken watch keeps trying to reopen before it reports `Unavailable`.
const WATCH_RESUME_FOR: std::time::Duration = std::time::Duration::from_secs(30);

impl WatchFeed {
    async fn run(mut self, mut parts: WatchParts) {
        loop {
            match self.pump(&mut parts).await {
                Ok(()) => return,
                Err(e @ BackendError::Compacted { .. }) => {
                    let _ = self.tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, next = self.next, "etcd watch broke; resuming");
                    match self.resume().await {
                        Some(p) => parts = p,
                        None => {
                            let _ = self.tx.send(Err(e)).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Reopens the watch from `next`, retrying with backoff for [`WATCH_RESUME_FOR`].
    async fn resume(&mut self) -> Option<WatchParts> {
        let deadline = tokio::time::Instant::now() + WATCH_RESUME_FOR;
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            if self.tx.is_closed() {
                return None;
            }
            let opened = match self.backend.check_watchable(self.next).await {
                Ok(()) => self.backend.open_watch(&self.prefix, self.next).await,
                Err(e) => Err(e),
            };
            match opened {
                Ok(parts) => return Some(parts),
                Err(e @ BackendError::Compacted { .. }) => {
                    let _ = self.tx.send(Err(e)).await;
                    return None;
                }
                Err(_) if tokio::time::Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
                Err(_) => return None,
            }
        }
    }

    /// Delivers events until the receiver goes (Ok) or etcd's stream fails (Err).
    async fn pump(&mut self, parts: &mut WatchParts) -> Result<(), BackendError> {
        loop {
            let msg = tokio::select! {
                _ = self.tx.closed() => return Ok(()),
                msg = parts.responses.message() => msg,
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    return Err(BackendError::Unavailable(
                        "etcd closed the watch stream".into(),
                    ))
                }
                Err(status) => {
                    return Err(BackendError::Unavailable(format!(
                        "etcd watch failed: {}",
                        status.message()
                    )))
                }
            };
            if resp.compact_revision > 0 {
                self.backend
                    .compacted
                    .fetch_max(resp.compact_revision, Ordering::Relaxed);
                return Err(BackendError::Compacted {
                    requested: self.next,
                    compacted: resp.compact_revision,
                });
            }
            if resp.canceled {
                return Err(BackendError::Unavailable(format!(
                    "etcd cancelled the watch: {}",
                    resp.cancel_reason
                )));
            }
            // etcd sends every event of a revision in one response, so resuming after the
            // last response's revision neither repeats nor skips an event.
            let last = resp
                .events
                .iter()
                .filter_map(|e| e.kv.as_ref())
                .map(|kv| kv.mod_revision)
                .max();
            for ev in resp.events {
                let kind = if ev.r#type == mvccpb::event::EventType::Delete as i32 {
                    EventKind::Delete
                } else {
                    EventKind::Put
                };
                let Some(kv) = ev.kv else { continue };
                let event = Event {
                    kind,
                    kv: kv_from(kv),
                    prev: ev.prev_kv.map(kv_from),
                };
                if self.tx.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
            }
            if let Some(last) = last {
                self.next = self.next.max(last + 1);
            }
        }
    }
}

fn txn_first(resp: &mut pb::TxnResponse) -> Option<pb::response_op::Response> {
    if resp.responses.is_empty() {
        None
    } else {
        resp.responses.swap_remove(0).response
    }
}

fn range_first(resp: Option<pb::response_op::Response>) -> Option<KeyValue> {
    match resp {
        Some(pb::response_op::Response::ResponseRange(r)) => r.kvs.into_iter().next().map(kv_from),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Backend for EtcdBackend {
    async fn get(
        &self,
        key: &[u8],
        revision: Option<Revision>,
    ) -> Result<(Option<KeyValue>, Revision), BackendError> {
        check_key(key)?;
        let rev = check_revision(revision)?;
        let req = pb::RangeRequest {
            key: key.to_vec(),
            revision: rev,
            ..Default::default()
        };
        let resp = self.raw_range(req, revision).await?;
        let at = match revision {
            Some(r) => r,
            None => header_revision(resp.header)?,
        };
        Ok((resp.kvs.into_iter().next().map(kv_from), at))
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, BackendError> {
        let rev = check_revision(req.revision)?;
        let key = if req.start.is_empty() {
            vec![0]
        } else {
            req.start.clone()
        };
        let (range_end, empty) = match &req.end {
            None if req.start.is_empty() => (vec![0], false),
            None => (prefix_end(&req.start), false),
            Some(end) => (end.clone(), end.as_slice() <= key.as_slice()),
        };
        let limit = i64::try_from(req.limit)
            .map_err(|_| invalid(format!("limit {} is too large", req.limit)))?;
        let ereq = if empty {
            // Nothing can match, but the revision must still be checked as etcd would.
            pb::RangeRequest {
                key: vec![0],
                revision: rev,
                count_only: true,
                ..Default::default()
            }
        } else {
            pb::RangeRequest {
                key,
                range_end,
                limit,
                revision: rev,
                ..Default::default()
            }
        };
        let resp = self.raw_range(ereq, req.revision).await?;
        let revision = match req.revision {
            Some(r) => r,
            None => header_revision(resp.header)?,
        };
        if empty {
            return Ok(RangeResponse {
                kvs: Vec::new(),
                more: false,
                revision,
            });
        }
        Ok(RangeResponse {
            kvs: resp.kvs.into_iter().map(kv_from).collect(),
            more: resp.more,
            revision,
        })
    }

    async fn put(
        &self,
        key: &[u8],
        value: Vec<u8>,
        expect: Expect,
    ) -> Result<WriteOutcome, BackendError> {
        check_key(key)?;
        let Some(compare) = conditions(key, expect) else {
            let req = pb::PutRequest {
                key: key.to_vec(),
                value,
                prev_kv: true,
                ..Default::default()
            };
            let resp = self
                .client
                .put(req)
                .await
                .map_err(|s| self.error(s, None))?;
            return Ok(WriteOutcome::Applied {
                revision: header_revision(resp.header)?,
                prev: resp.prev_kv.map(kv_from),
            });
        };
        let mut resp = self
            .write_txn(pb::TxnRequest {
                compare,
                success: vec![put_op(key, value)],
                failure: vec![get_op(key)],
            })
            .await?;
        let revision = header_revision(resp.header)?;
        let first = txn_first(&mut resp);
        if !resp.succeeded {
            return Ok(WriteOutcome::Conflict {
                current: range_first(first),
            });
        }
        let prev = match first {
            Some(pb::response_op::Response::ResponsePut(p)) => p.prev_kv.map(kv_from),
            _ => None,
        };
        Ok(WriteOutcome::Applied { revision, prev })
    }

    async fn delete(&self, key: &[u8], expect: Expect) -> Result<WriteOutcome, BackendError> {
        check_key(key)?;
        match expect {
            Expect::Any => {
                let req = pb::DeleteRangeRequest {
                    key: key.to_vec(),
                    prev_kv: true,
                    ..Default::default()
                };
                let resp = self
                    .client
                    .delete_range(req)
                    .await
                    .map_err(|s| self.error(s, None))?;
                if resp.deleted == 0 {
                    return Ok(WriteOutcome::NotFound);
                }
                Ok(WriteOutcome::Applied {
                    revision: header_revision(resp.header)?,
                    prev: resp.prev_kvs.into_iter().next().map(kv_from),
                })
            }
            // Deleting a key that must be absent changes nothing either way.
            Expect::Absent => match self.get(key, None).await?.0 {
                Some(current) => Ok(WriteOutcome::Conflict {
                    current: Some(current),
                }),
                None => Ok(WriteOutcome::NotFound),
            },
            Expect::ModRevision(_) => {
                let compare = conditions(key, expect).unwrap_or_default();
                let mut resp = self
                    .write_txn(pb::TxnRequest {
                        compare,
                        success: vec![delete_op(key)],
                        failure: vec![get_op(key)],
                    })
                    .await?;
                let revision = header_revision(resp.header)?;
                let first = txn_first(&mut resp);
                if !resp.succeeded {
                    return Ok(WriteOutcome::Conflict {
                        current: range_first(first),
                    });
                }
                let prev = match first {
                    Some(pb::response_op::Response::ResponseDeleteRange(d)) => {
                        d.prev_kvs.into_iter().next().map(kv_from)
                    }
                    _ => None,
                };
                Ok(WriteOutcome::Applied { revision, prev })
            }
        }
    }

    async fn watch(&self, prefix: &[u8], from: Revision) -> Result<WatchStream, BackendError> {
        if from < 0 {
            return Err(invalid(format!(
                "watch revision must not be negative, got {from}"
            )));
        }
        self.check_watchable(from).await?;
        let parts = self.open_watch(prefix, from).await?;
        // Revision of the next event this watch delivers.
        let next = if from == 0 {
            parts.created.header.as_ref().map_or(0, |h| h.revision) + 1
        } else {
            from
        };
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let feed = WatchFeed {
            backend: self.clone(),
            prefix: prefix.to_vec(),
            next,
            tx,
        };
        tokio::spawn(feed.run(parts));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision, BackendError> {
        let resp = self
            .raw_range(
                pb::RangeRequest {
                    key: vec![0],
                    count_only: true,
                    ..Default::default()
                },
                None,
            )
            .await?;
        header_revision(resp.header)
    }

    async fn compact(&self, revision: Revision) -> Result<(), BackendError> {
        let current = self.current_revision().await?;
        if revision > current {
            return Err(BackendError::FutureRevision {
                requested: revision,
                current,
            });
        }
        if revision <= self.compacted_revision().await? {
            return Ok(());
        }
        match self.client.compact(revision).await {
            Ok(_) => {}
            // Compacted concurrently to this revision or beyond: the same end state.
            Err(s) if s.code() == Code::OutOfRange && s.message().contains("compacted") => {}
            Err(s) => return Err(self.error(s, Some(revision))),
        }
        self.compacted.fetch_max(revision, Ordering::Relaxed);
        Ok(())
    }

    async fn compacted_revision(&self) -> Result<Revision, BackendError> {
        // etcd does not report its compacted revision directly; a read at revision r fails
        // exactly when r is below it. Search from the known lower bound.
        let mut lo = self.compacted.load(Ordering::Relaxed).max(1);
        if self.readable_at(lo).await? {
            return Ok(lo);
        }
        let mut hi = self.current_revision().await?;
        // Invariant: lo is not readable, hi is.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.readable_at(mid).await? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        self.compacted.fetch_max(hi, Ordering::Relaxed);
        Ok(hi)
    }
}
