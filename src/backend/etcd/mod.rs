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
//!
//! # Source files
//!
//! `client` holds the client (endpoints, TLS, failover); `watch` the watch checks and the feed
//! that resumes a broken etcd watch; this file the mapping of [`Backend`] onto etcd's API.

mod client;
mod watch;

use std::sync::Arc;

use tonic::{Code, Status};

pub use client::{EtcdClient, EtcdOptions, EtcdOptionsError, WatchParts};

use super::{
    check_key, prefix_end, AtomicRevision, Backend, BackendError, Expect, KeyValue, RangeRequest,
    RangeResponse, Revision, WatchProgress, WatchStream, WriteOutcome,
};
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::mvccpb;
use watch::{WatchFeed, WATCH_BUFFER};

/// What a write larger than etcd's request limit gets.
const TOO_LARGE: &str = "the object is larger than etcd accepts in one request: etcd's \
     --max-request-bytes is 1.5 MiB by default; raise it (e.g. to 4 MiB) to store Secrets near \
     Kubernetes' 1 MiB data limit";

fn invalid(msg: String) -> BackendError {
    BackendError::InvalidArgument(msg)
}

/// The etcd implementation of [`Backend`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EtcdBackend {
    client: EtcdClient,
    /// A lower bound of etcd's compacted revision (compaction only moves forward).
    compacted: Arc<AtomicRevision>,
}

/// A revision etcd sent: below 1 is a broken response.
fn etcd_revision(r: i64, what: &str) -> Result<Revision, BackendError> {
    Revision::new(r).ok_or_else(|| BackendError::Corrupt(format!("etcd sent {what} {r}")))
}

fn kv_from(kv: mvccpb::KeyValue) -> Result<KeyValue, BackendError> {
    Ok(KeyValue {
        // A delete event carries create_revision 0.
        create_revision: Revision::new(kv.create_revision),
        mod_revision: etcd_revision(kv.mod_revision, "mod_revision")?,
        key: kv.key,
        value: kv.value,
        version: kv.version,
    })
}

fn kvs_from(kvs: Vec<mvccpb::KeyValue>) -> Result<Vec<KeyValue>, BackendError> {
    kvs.into_iter().map(kv_from).collect()
}

fn first_kv(kvs: Vec<mvccpb::KeyValue>) -> Result<Option<KeyValue>, BackendError> {
    kvs.into_iter().next().map(kv_from).transpose()
}

fn header_revision(h: Option<pb::ResponseHeader>) -> Result<Revision, BackendError> {
    let h = h.ok_or_else(|| BackendError::Corrupt("etcd response without a header".into()))?;
    etcd_revision(h.revision, "header revision")
}

/// A read revision on etcd's wire: 0 reads the current state.
fn wire(revision: Option<Revision>) -> i64 {
    revision.map_or(0, Revision::get)
}

fn put_op(key: &[u8], value: Vec<u8>) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value,
            ..Default::default()
        })),
    }
}

fn delete_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.to_vec(),
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
                TargetUnion::ModRevision(r.get()),
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
            compacted: Arc::new(AtomicRevision::new(Revision::FIRST)),
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
        // Status answers without credentials; a read shows whether etcd wants some (its auth
        // is on, and this client is no etcd user). A user without access to this one key may
        // still have the store's prefix: only a missing or refused identity stops the start.
        let probe = pb::RangeRequest {
            key: vec![0],
            count_only: true,
            ..Default::default()
        };
        match self.client.range(probe).await {
            Err(s) if is_auth_refusal(&s) => return Err(self.error(s, None)),
            _ => {}
        }
        self.client
            .check_one_cluster()
            .await
            .map_err(BackendError::Unavailable)?;
        Ok(st.version)
    }

    /// Maps an etcd status to this layer's error; `requested` is the revision a read asked for.
    /// Pass the error through [`EtcdBackend::complete`] to fill in the current revision of a
    /// [`BackendError::FutureRevision`].
    fn error(&self, status: Status, requested: Option<Revision>) -> BackendError {
        let msg = status.message();
        match (status.code(), requested) {
            (Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled, _) => {
                // Clients see it in their answers; the operator sees it here (once a second).
                static UNAVAILABLE: crate::log_throttle::LogThrottle =
                    crate::log_throttle::LogThrottle::new();
                let cancelled = status.code() == Code::Cancelled;
                if let Some(held_back) = (!cancelled).then(|| UNAVAILABLE.admit()).flatten() {
                    // The message names the member that failed (the current one may differ).
                    tracing::warn!(error = msg, held_back, "etcd unavailable");
                }
                BackendError::Unavailable(msg.to_owned())
            }
            _ if is_auth_refusal(&status) || status.code() == Code::PermissionDenied => {
                BackendError::Io(format!(
                    "etcd refused the request: {msg} (its authentication is on: give \
                     --etcd-cert/--etcd-key, a client certificate whose CN is an etcd user \
                     with read and write access to the store's prefix)"
                ))
            }
            (Code::InvalidArgument, _) if msg.contains("request is too large") => {
                BackendError::InvalidArgument(TOO_LARGE.to_owned())
            }
            (Code::ResourceExhausted, _) if msg.contains("larger than max") => {
                BackendError::InvalidArgument(TOO_LARGE.to_owned())
            }
            (Code::ResourceExhausted, _) if msg.contains("space exceeded") => {
                BackendError::Unavailable(format!(
                    "etcd is out of space ({msg}): compact and defragment it, or raise its --quota-backend-bytes"
                ))
            }
            (Code::InvalidArgument, _) => BackendError::InvalidArgument(msg.to_owned()),
            (Code::OutOfRange, Some(requested)) if msg.contains("compacted") => {
                BackendError::Compacted {
                    requested,
                    compacted: self.compacted.load(),
                }
            }
            // `current` is a placeholder until `complete` asks etcd.
            (Code::OutOfRange, Some(requested)) if msg.contains("future") => {
                BackendError::FutureRevision {
                    requested,
                    current: Revision::FIRST,
                }
            }
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

    /// Whether a read at `revision` is possible (not compacted).
    async fn readable_at(&self, revision: Revision) -> Result<bool, BackendError> {
        let req = pb::RangeRequest {
            key: vec![0],
            revision: revision.get(),
            count_only: true,
            ..Default::default()
        };
        match self.client.range(req).await {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::OutOfRange && s.message().contains("compacted") => {
                Ok(false)
            }
            Err(s) => Err(self.complete(self.error(s, Some(revision))).await),
        }
    }
}

/// etcd refused the caller's identity: none given while its authentication is on
/// (`user name is empty`), or a token or certificate it does not accept.
fn is_auth_refusal(status: &Status) -> bool {
    match status.code() {
        Code::Unauthenticated => true,
        Code::InvalidArgument => status.message().contains("user name is empty"),
        _ => false,
    }
}

fn txn_first(resp: &mut pb::TxnResponse) -> Option<pb::response_op::Response> {
    if resp.responses.is_empty() {
        None
    } else {
        resp.responses.swap_remove(0).response
    }
}

fn range_first(resp: Option<pb::response_op::Response>) -> Result<Option<KeyValue>, BackendError> {
    match resp {
        Some(pb::response_op::Response::ResponseRange(r)) => first_kv(r.kvs),
        _ => Ok(None),
    }
}

/// The etcd key and range end of `req`'s keys, or None if its range holds no key.
fn etcd_bounds(req: &RangeRequest) -> Option<(Vec<u8>, Vec<u8>)> {
    let key = if req.start.is_empty() {
        vec![0]
    } else {
        req.start.clone()
    };
    match &req.end {
        None if req.start.is_empty() => Some((key, vec![0])),
        None => Some((key, prefix_end(&req.start))),
        Some(end) if end.as_slice() <= key.as_slice() => None,
        Some(end) => Some((key, end.clone())),
    }
}

impl EtcdBackend {
    /// Sends the etcd range `build(key, range_end)` makes of `req`'s bounds, at `req`'s
    /// revision. A range that holds no key is not read (None), but its revision is still
    /// checked as etcd would. Returns the response and the revision read at.
    async fn range_of(
        &self,
        req: &RangeRequest,
        build: impl FnOnce(Vec<u8>, Vec<u8>) -> pb::RangeRequest + Send,
    ) -> Result<(Option<pb::RangeResponse>, Revision), BackendError> {
        let bounds = etcd_bounds(req);
        let empty = bounds.is_none();
        let ereq = pb::RangeRequest {
            revision: wire(req.revision),
            ..match bounds {
                Some((key, range_end)) => build(key, range_end),
                None => pb::RangeRequest {
                    key: vec![0],
                    count_only: true,
                    ..Default::default()
                },
            }
        };
        let resp = self.raw_range(ereq, req.revision).await?;
        let revision = match req.revision {
            Some(r) => r,
            None => header_revision(resp.header)?,
        };
        Ok(((!empty).then_some(resp), revision))
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
        let req = pb::RangeRequest {
            key: key.to_vec(),
            revision: wire(revision),
            ..Default::default()
        };
        let resp = self.raw_range(req, revision).await?;
        let at = match revision {
            Some(r) => r,
            None => header_revision(resp.header)?,
        };
        Ok((first_kv(resp.kvs)?, at))
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, BackendError> {
        let limit = i64::try_from(req.limit)
            .map_err(|_| invalid(format!("limit {} is too large", req.limit)))?;
        let (resp, revision) = self
            .range_of(&req, |key, range_end| pb::RangeRequest {
                key,
                range_end,
                limit,
                ..Default::default()
            })
            .await?;
        Ok(match resp {
            None => RangeResponse {
                kvs: Vec::new(),
                more: false,
                revision,
            },
            Some(resp) => RangeResponse {
                kvs: kvs_from(resp.kvs)?,
                more: resp.more,
                revision,
            },
        })
    }

    async fn count(&self, req: RangeRequest) -> Result<(u64, Revision), BackendError> {
        let (resp, revision) = self
            .range_of(&req, |key, range_end| pb::RangeRequest {
                key,
                range_end,
                count_only: true,
                ..Default::default()
            })
            .await?;
        let count = match resp {
            None => 0,
            Some(resp) => u64::try_from(resp.count)
                .map_err(|_| BackendError::Corrupt(format!("etcd counted {} keys", resp.count)))?,
        };
        Ok((count, revision))
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
                ..Default::default()
            };
            let resp = self
                .client
                .put(req)
                .await
                .map_err(|s| self.error(s, None))?;
            return Ok(WriteOutcome::Applied {
                revision: header_revision(resp.header)?,
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
                current: range_first(first)?,
            });
        }
        Ok(WriteOutcome::Applied { revision })
    }

    async fn delete(&self, key: &[u8], expect: Expect) -> Result<WriteOutcome, BackendError> {
        check_key(key)?;
        match expect {
            Expect::Any => {
                let req = pb::DeleteRangeRequest {
                    key: key.to_vec(),
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
                        current: range_first(first)?,
                    });
                }
                Ok(WriteOutcome::Applied { revision })
            }
        }
    }

    async fn watch_with_progress(
        &self,
        prefix: &[u8],
        from: Option<Revision>,
    ) -> Result<(WatchStream, Option<WatchProgress>), BackendError> {
        if let Some(from) = from {
            self.check_watchable(from).await?;
        }
        let parts = self.open_watch(prefix, from).await?;
        // Revision of the next event this watch delivers.
        let next = match from {
            Some(from) => from,
            None => header_revision(parts.created.header)?
                .next()
                .ok_or_else(|| BackendError::Corrupt("etcd's revision cannot grow".into()))?,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let feed = WatchFeed {
            backend: self.clone(),
            prefix: prefix.to_vec(),
            next,
            tx,
        };
        tokio::spawn(feed.run(parts));
        // etcd reports no progress without progress requests (see `WatchProgress`).
        let stream: WatchStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok((stream, None))
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
            Err(s) => return Err(self.complete(self.error(s, Some(revision))).await),
        }
        self.compacted.fetch_max(revision);
        Ok(())
    }

    async fn compacted_revision(&self) -> Result<Revision, BackendError> {
        // etcd does not report its compacted revision directly; a read at revision r fails
        // exactly when r is below it. Search from the known lower bound.
        let mut lo = self.compacted.load();
        if self.readable_at(lo).await? {
            return Ok(lo);
        }
        let mut hi = self.current_revision().await?;
        // Invariant: lo is not readable, hi is (so lo < mid < hi).
        while hi.get() - lo.get() > 1 {
            // Between lo and hi, so a revision: `unwrap_or` is never taken.
            let mid = Revision::new(lo.get() + (hi.get() - lo.get()) / 2).unwrap_or(hi);
            if self.readable_at(mid).await? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        self.compacted.fetch_max(hi);
        Ok(hi)
    }
}
