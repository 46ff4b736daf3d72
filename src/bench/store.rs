//! `bench store`: put, get, list, a mix of them, or watched writes against keyward's secret
//! store (`keyward.v1.Secrets`) or, for comparison, against etcd itself with the same
//! workloads on the keys where kube-apiserver would keep the Secrets.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codegen::{Body, Bytes, StdError};
use tonic::{Code, Status};

use super::kube::KubeConn;
use super::report::Size;
use super::{
    code_name, drive, payload, prepare_error, setup, stamp, tag_of, timed, BenchError, Load,
    Progress, Report, Worker,
};
use crate::backend::etcd::EtcdBackend;
use crate::backend::{
    Backend, BackendError, EventKind, Expect, RangeRequest, Revision, WriteOutcome,
};
use crate::pb::keyward_v1 as spb;
use crate::pb::keyward_v1::secrets_client::SecretsClient;

/// Namespace of the Secrets `bench store` creates and uses.
pub const STORE_NAMESPACE: &str = "bench";
/// Data key holding each benchmark Secret's value.
const STORE_DATA_KEY: &str = "value";
/// Where `bench store` keeps its etcd keys: where kube-apiserver (and keyward, with its default
/// etcd prefix) stores the Secrets of the namespace `bench`.
pub const ETCD_PREFIX: &str = "/registry/secrets/bench/";

/// What a `keyward.v1.Secrets` client runs on: a tonic `Channel`, bare or behind an
/// interceptor (the bounds tonic's generated clients need, named once).
pub trait Transport:
    tonic::client::GrpcService<
        tonic::body::Body,
        Error: Into<StdError>,
        Future: Send,
        ResponseBody: Body<Data = Bytes, Error: Into<StdError> + Send> + Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<T> Transport for T where
    T: tonic::client::GrpcService<
            tonic::body::Body,
            Error: Into<StdError>,
            Future: Send,
            ResponseBody: Body<Data = Bytes, Error: Into<StdError> + Send> + Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The call `bench store` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Unconditional Update (etcd: Put).
    Put,
    /// Get (etcd: a linearizable Range).
    Get,
    /// List with limit 100.
    List,
    /// 90% get, 10% put.
    Mixed,
    /// A put, timed until it is acknowledged and every watcher has received its event.
    Watch,
}

impl StoreOp {
    /// Its name in reports: `put`, `get`, `list`, `mixed` or `watch`.
    pub fn name(self) -> &'static str {
        match self {
            StoreOp::Put => "put",
            StoreOp::Get => "get",
            StoreOp::List => "list",
            StoreOp::Mixed => "mixed",
            StoreOp::Watch => "watch",
        }
    }
}

/// What `bench store` drives, connected: one client per [`Load::connections`].
pub enum Target<T> {
    /// A keyward store.
    Keyward {
        /// Connected `keyward.v1.Secrets` clients.
        clients: Vec<SecretsClient<T>>,
        /// The server's address, for the report.
        server: String,
    },
    /// etcd, through keyward's etcd backend.
    Etcd {
        /// Connected backends.
        backends: Vec<EtcdBackend>,
        /// etcd's client URLs, for the report.
        endpoints: Vec<String>,
    },
    /// A keyward store through its Kubernetes API (no `--op watch`).
    Kube {
        /// Connected keep-alive connections.
        conns: Vec<KubeConn>,
        /// The server's URL, for the report.
        server: String,
    },
}

/// What `bench store` does.
#[derive(Debug, Clone, Copy)]
pub struct StoreWork {
    /// The call to measure.
    pub op: StoreOp,
    /// Value size in bytes (at least [`TAG_BYTES`](super::TAG_BYTES) for [`StoreOp::Watch`]).
    pub size: usize,
    /// Keys written before measuring and used by the workers.
    pub keys: u64,
    /// Watches open during [`StoreOp::Watch`] (0 otherwise).
    pub watchers: usize,
}

/// One connection of `bench store`.
enum StoreConn<T> {
    /// A keyward store's `keyward.v1.Secrets` API.
    Keyward(SecretsClient<T>),
    /// etcd's KV and Watch APIs, through [`EtcdBackend`] (linearizable reads).
    Etcd(EtcdBackend),
    /// A keyward store's Kubernetes API.
    Kube(KubeConn),
}

impl<T: Clone> Clone for StoreConn<T> {
    fn clone(&self) -> Self {
        match self {
            StoreConn::Keyward(c) => StoreConn::Keyward(c.clone()),
            StoreConn::Etcd(b) => StoreConn::Etcd(b.clone()),
            StoreConn::Kube(k) => StoreConn::Kube(k.clone()),
        }
    }
}

fn secret_name(i: u64) -> String {
    format!("bench-{i:07}")
}

/// The etcd key of the `i`th benchmark key: where kube-apiserver would store the Secret.
fn etcd_key(i: u64) -> Vec<u8> {
    format!("{ETCD_PREFIX}{}", secret_name(i)).into_bytes()
}

fn bench_secret(name: String, value: Vec<u8>) -> spb::Secret {
    spb::Secret {
        metadata: Some(spb::ObjectMeta {
            name,
            namespace: STORE_NAMESPACE.into(),
            ..Default::default()
        }),
        data: BTreeMap::from([(STORE_DATA_KEY.to_owned(), value)]),
        ..Default::default()
    }
}

/// A backend error as the gRPC code it would map to, so errors are counted alike for both
/// targets.
fn backend_status(e: BackendError) -> Status {
    match e {
        BackendError::Unavailable(m) => Status::unavailable(m),
        BackendError::InvalidArgument(m) => Status::invalid_argument(m),
        e @ (BackendError::Compacted { .. } | BackendError::FutureRevision { .. }) => {
            Status::out_of_range(e.to_string())
        }
        e => Status::internal(e.to_string()),
    }
}

impl<T: Transport> StoreConn<T> {
    /// Overwrites key `i` unconditionally with `value`.
    async fn put(&mut self, i: u64, value: Vec<u8>) -> Result<(), Status> {
        match self {
            StoreConn::Keyward(c) => c
                .update(spb::UpdateRequest {
                    secret: Some(bench_secret(secret_name(i), value)),
                    dry_run: false,
                })
                .await
                .map(drop),
            StoreConn::Etcd(b) => match b
                .put(&etcd_key(i), value, Expect::Any)
                .await
                .map_err(backend_status)?
            {
                WriteOutcome::Applied { .. } => Ok(()),
                _ => Err(Status::internal("etcd did not apply an unconditional put")),
            },
            StoreConn::Kube(k) => {
                k.put(STORE_NAMESPACE, &secret_name(i), STORE_DATA_KEY, &value)
                    .await
            }
        }
    }

    /// Reads key `i`, which must exist.
    async fn get(&mut self, i: u64) -> Result<(), Status> {
        match self {
            StoreConn::Keyward(c) => c
                .get(spb::GetRequest {
                    namespace: STORE_NAMESPACE.into(),
                    name: secret_name(i),
                    revision: 0,
                })
                .await
                .map(drop),
            StoreConn::Etcd(b) => match b.get(&etcd_key(i), None).await {
                Ok((Some(_), _)) => Ok(()),
                Ok((None, _)) => Err(Status::not_found(format!(
                    "{ETCD_PREFIX}{} does not exist",
                    secret_name(i)
                ))),
                Err(e) => Err(backend_status(e)),
            },
            StoreConn::Kube(k) => k.get(STORE_NAMESPACE, &secret_name(i)).await,
        }
    }

    /// Lists the first 100 keys of the namespace `bench`.
    async fn list(&mut self) -> Result<(), Status> {
        match self {
            StoreConn::Keyward(c) => c
                .list(spb::ListRequest {
                    namespace: STORE_NAMESPACE.into(),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .map(drop),
            StoreConn::Etcd(b) => b
                .range(RangeRequest {
                    start: ETCD_PREFIX.as_bytes().to_vec(),
                    end: None,
                    limit: 100,
                    revision: None,
                })
                .await
                .map(drop)
                .map_err(backend_status),
            StoreConn::Kube(k) => k.list(STORE_NAMESPACE, 100).await,
        }
    }

    /// Creates key `i` with `value`, or overwrites it if a previous run left it.
    async fn prepare(
        &mut self,
        i: u64,
        value: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), BenchError> {
        let what = match self {
            StoreConn::Keyward(_) | StoreConn::Kube(_) => {
                format!("Secret {STORE_NAMESPACE}/{}", secret_name(i))
            }
            StoreConn::Etcd(_) => format!("etcd key {ETCD_PREFIX}{}", secret_name(i)),
        };
        let fail = |call: &'static str, s: Status| prepare_error(what.clone(), call)(s);
        match self {
            StoreConn::Keyward(c) => {
                let created = timed(
                    timeout,
                    c.create(spb::CreateRequest {
                        secret: Some(bench_secret(secret_name(i), value.clone())),
                        dry_run: false,
                    }),
                )
                .await;
                match created {
                    Ok(_) => Ok(()),
                    Err(s) if s.code() == Code::AlreadyExists => timed(timeout, self.put(i, value))
                        .await
                        .map_err(|s| fail("Update", s)),
                    Err(s) => Err(fail("Create", s)),
                }
            }
            StoreConn::Etcd(_) => timed(timeout, self.put(i, value))
                .await
                .map_err(|s| fail("Put", s)),
            StoreConn::Kube(k) => {
                let name = secret_name(i);
                let created = timed(
                    timeout,
                    k.create(STORE_NAMESPACE, &name, STORE_DATA_KEY, &value),
                )
                .await;
                match created {
                    Ok(()) => Ok(()),
                    Err(s) if s.code() == Code::AlreadyExists => timed(timeout, self.put(i, value))
                        .await
                        .map_err(|s| fail("PUT", s)),
                    Err(s) => Err(fail("POST", s)),
                }
            }
        }
    }

    /// Opens a watch on the namespace `bench` that reports every event's tag to `board`, from
    /// just after `from` (as returned by [`StoreConn::revision`]).
    async fn watch(
        &mut self,
        from: Revision,
        board: Arc<WatchBoard>,
    ) -> Result<JoinHandle<()>, BenchError> {
        let fail = |e: String| BenchError::Target(format!("cannot open a watch: {e}"));
        match self {
            StoreConn::Kube(_) => Err(fail("not measured through the Kubernetes API".into())),
            StoreConn::Keyward(c) => {
                let mut stream = c
                    .watch(spb::WatchRequest {
                        namespace: STORE_NAMESPACE.into(),
                        resource_version: from.to_string(),
                        label_selector: String::new(),
                        field_selector: String::new(),
                    })
                    .await
                    .map_err(|s| fail(format!("{}: {}", code_name(s.code()), s.message())))?
                    .into_inner();
                Ok(tokio::spawn(async move {
                    loop {
                        match stream.message().await {
                            Ok(Some(ev)) => {
                                let value =
                                    ev.object.and_then(|s| s.data.get(STORE_DATA_KEY).cloned());
                                if let Some(tag) = value.as_deref().and_then(tag_of) {
                                    board.delivered(tag);
                                }
                            }
                            Ok(None) => return board.end("the store ended the watch".into()),
                            Err(s) => {
                                return board.end(format!(
                                    "the watch failed ({}): {}",
                                    code_name(s.code()),
                                    s.message()
                                ))
                            }
                        }
                    }
                }))
            }
            StoreConn::Etcd(b) => {
                use tokio_stream::StreamExt as _;
                let mut stream = b
                    .watch(ETCD_PREFIX.as_bytes(), from.next())
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                Ok(tokio::spawn(async move {
                    loop {
                        match stream.next().await {
                            Some(Ok(ev)) => {
                                if ev.kind == EventKind::Put {
                                    if let Some(tag) = tag_of(&ev.kv.value) {
                                        board.delivered(tag);
                                    }
                                }
                            }
                            Some(Err(e)) => return board.end(format!("the watch failed: {e}")),
                            None => return board.end("etcd ended the watch".into()),
                        }
                    }
                }))
            }
        }
    }

    /// The current revision: a watch from it sees every later write.
    async fn revision(&mut self) -> Result<Revision, BenchError> {
        match self {
            StoreConn::Kube(_) => Err(BenchError::Target(
                "watch is not measured through the Kubernetes API".into(),
            )),
            StoreConn::Keyward(c) => {
                let list = c
                    .list(spb::ListRequest {
                        namespace: STORE_NAMESPACE.into(),
                        limit: 1,
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| {
                        BenchError::Target(format!(
                            "cannot read the store's revision: List failed ({}): {}",
                            code_name(s.code()),
                            s.message()
                        ))
                    })?
                    .into_inner();
                list.resource_version.parse().map_err(|_| {
                    BenchError::Target(format!(
                        "the store answered List with a resourceVersion that is not a number: {:?}",
                        list.resource_version
                    ))
                })
            }
            StoreConn::Etcd(b) => b
                .current_revision()
                .await
                .map_err(|e| BenchError::Target(format!("cannot read etcd's revision: {e}"))),
        }
    }
}

/// The writes of `--op watch` waiting for their events. Each write's value starts with a tag
/// unique in the run; a write is done once every watcher has received the event carrying it.
struct WatchBoard {
    watchers: usize,
    next_tag: AtomicU64,
    state: Mutex<BoardState>,
}

#[derive(Default)]
struct BoardState {
    /// Tag → (watchers that have not seen it yet, who to tell when none are left).
    waiting: HashMap<u64, (usize, oneshot::Sender<()>)>,
    /// Why a watch ended; once set, no write can complete.
    ended: Option<String>,
}

/// A write registered on the board; unregisters itself when dropped (done, failed or timed
/// out).
struct Expected {
    board: Arc<WatchBoard>,
    tag: u64,
    seen: oneshot::Receiver<()>,
}

impl WatchBoard {
    fn new(watchers: usize) -> Arc<WatchBoard> {
        Arc::new(WatchBoard {
            watchers,
            next_tag: AtomicU64::new(0),
            state: Mutex::new(BoardState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BoardState> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new write; its value must carry the returned tag.
    fn expect(self: &Arc<Self>) -> Result<Expected, Status> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        if let Some(why) = &st.ended {
            return Err(Status::unavailable(why.clone()));
        }
        st.waiting.insert(tag, (self.watchers, tx));
        Ok(Expected {
            board: self.clone(),
            tag,
            seen: rx,
        })
    }

    /// One watcher received the event tagged `tag` (unknown tags are ignored).
    fn delivered(&self, tag: u64) {
        let mut st = self.lock();
        if let Some((left, _)) = st.waiting.get_mut(&tag) {
            *left -= 1;
            if *left == 0 {
                if let Some((_, done)) = st.waiting.remove(&tag) {
                    let _ = done.send(());
                }
            }
        }
    }

    /// A watch ended: every waiting and later write fails with `why`.
    fn end(&self, why: String) {
        let mut st = self.lock();
        st.ended.get_or_insert(why);
        st.waiting.clear();
    }
}

impl Expected {
    /// Waits until every watcher has received this write's event.
    async fn seen(&mut self) -> Result<(), Status> {
        match (&mut self.seen).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Status::unavailable(
                self.board
                    .lock()
                    .ended
                    .clone()
                    .unwrap_or_else(|| "the watch ended".into()),
            )),
        }
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        self.board.lock().waiting.remove(&self.tag);
    }
}

struct StoreWorker<T> {
    conn: StoreConn<T>,
    work: StoreWork,
    value: Arc<Vec<u8>>,
    board: Option<Arc<WatchBoard>>,
}

impl<T: Transport> StoreWorker<T> {
    /// This run's value with `tag` in front, so that no update is a no-op.
    fn value(&self, tag: u64) -> Vec<u8> {
        let mut value = self.value.to_vec();
        stamp(&mut value, tag);
        value
    }

    async fn put(&mut self, n: u64) -> Result<(), Status> {
        let value = self.value(n);
        self.conn.put(n % self.work.keys, value).await
    }

    /// A put, done once it is acknowledged and every watcher has received its event.
    async fn watched_put(&mut self, n: u64) -> Result<(), Status> {
        let Some(board) = &self.board else {
            return Err(Status::internal("a watch workload without watchers"));
        };
        let mut expected = board.expect()?;
        let value = self.value(expected.tag);
        self.conn.put(n % self.work.keys, value).await?;
        expected.seen().await
    }
}

impl<T: Transport> Worker for StoreWorker<T> {
    async fn call(&mut self, n: u64) -> Result<(), Status> {
        match self.work.op {
            StoreOp::Put => self.put(n).await,
            StoreOp::Get => self.conn.get(n % self.work.keys).await,
            StoreOp::List => self.conn.list().await,
            StoreOp::Mixed if n % 10 == 9 => self.put(n).await,
            StoreOp::Mixed => self.conn.get(n % self.work.keys).await,
            StoreOp::Watch => self.watched_put(n).await,
        }
    }
}

/// Runs `bench store`: creates (or overwrites) `work.keys` keys with this run's value size,
/// opens the watches of [`StoreOp::Watch`], then measures.
pub async fn run<T: Transport>(
    load: Load,
    target: Target<T>,
    work: StoreWork,
    progress: &Progress,
) -> Result<Report, BenchError> {
    let (conns, name, endpoint): (Vec<StoreConn<T>>, _, _) = match target {
        Target::Keyward { clients, server } => (
            clients.into_iter().map(StoreConn::Keyward).collect(),
            "store",
            server,
        ),
        Target::Etcd {
            backends,
            endpoints,
        } => (
            backends.into_iter().map(StoreConn::Etcd).collect(),
            "etcd",
            endpoints.join(","),
        ),
        Target::Kube { conns, server } => {
            if work.op == StoreOp::Watch {
                return Err(BenchError::Target(
                    "--op watch is not measured through the Kubernetes API".into(),
                ));
            }
            (
                conns.into_iter().map(StoreConn::Kube).collect(),
                "store (Kubernetes API)",
                server,
            )
        }
    };
    if conns.is_empty() {
        return Err(BenchError::Internal(
            "bench store without a connection".into(),
        ));
    }
    let setup_conns = conns.clone();
    let timeout = load.timeout;
    let size = work.size;
    // Create the keys, or overwrite those a previous run left with this run's value size.
    setup(work.keys, load.concurrency, progress, move |i| {
        let mut c = setup_conns[i as usize % setup_conns.len()].clone();
        async move { c.prepare(i, payload(size, i)?, timeout).await }
    })
    .await?;
    let mut watches = Vec::new();
    let board = if work.op == StoreOp::Watch {
        let board = WatchBoard::new(work.watchers);
        let mut first = conns[0].clone();
        let from = first.revision().await?;
        for i in 0..work.watchers {
            let mut c = conns[i % conns.len()].clone();
            watches.push(c.watch(from, board.clone()).await?);
        }
        Some(board)
    } else {
        None
    };
    let value = Arc::new(payload(size, 0)?);
    let workers: Vec<StoreWorker<T>> = (0..load.concurrency)
        .map(|i| StoreWorker {
            conn: conns[i % conns.len()].clone(),
            work,
            value: value.clone(),
            board: board.clone(),
        })
        .collect();
    let outcome = drive(workers, &load, progress).await;
    for w in watches {
        w.abort();
    }
    let mut counts = vec![("keys", work.keys)];
    if work.op == StoreOp::Watch {
        counts.push(("watchers", work.watchers as u64));
    }
    Ok(Report {
        target: name,
        endpoint,
        op: work.op.name().into(),
        load,
        size: Some(Size {
            json: "value_bytes",
            label: "value",
            bytes: size,
        }),
        counts,
        outcome: outcome?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watch_board_waits_for_every_watcher() {
        let board = WatchBoard::new(2);
        let mut a = board.expect().unwrap();
        let b = board.expect().unwrap();
        assert_ne!(a.tag, b.tag);
        board.delivered(a.tag);
        board.delivered(12345); // not ours: ignored
        assert!(
            tokio::time::timeout(Duration::from_millis(20), a.seen())
                .await
                .is_err(),
            "one watcher of two has seen it"
        );
        board.delivered(a.tag);
        a.seen().await.unwrap();
        drop(a);
        // A dropped (e.g. timed out) write leaves nothing behind.
        drop(b);
        assert!(board.lock().waiting.is_empty());
        let mut c = board.expect().unwrap();
        board.end("etcd ended the watch".into());
        assert_eq!(
            c.seen().await.unwrap_err().message(),
            "etcd ended the watch"
        );
        assert_eq!(
            board.expect().err().unwrap().code(),
            Code::Unavailable,
            "no write can complete once a watch has ended"
        );
    }
}
