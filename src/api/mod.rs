//! The `keyward.v1.Secrets` gRPC service over the [`Store`]: conversion between protobuf and
//! the store's types at the edge, the one mapping from store errors to gRPC statuses, and
//! client authentication for the TCP listener (client certificates or bearer tokens).

use std::collections::BTreeMap;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::backend::{BackendError, KeyValue};
use crate::encryption::EncryptionError;
use crate::pb::keyward_v1 as pb;
use crate::store::model::{ObjectMeta, SecretBytes, SecretString};
use crate::store::{ChangeKind, Preconditions, Secret, Selector, Store, StoreError};

/// Maps a store error to a gRPC status: caller mistakes get a specific code and a message
/// naming the field; failures of the environment are `Unavailable`; anything else is
/// `Internal` with the detail only in the log.
pub fn to_status(e: StoreError) -> Status {
    match e {
        StoreError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        StoreError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        StoreError::Conflict { .. } => Status::aborted(e.to_string()),
        StoreError::Gone(_) => Status::out_of_range(e.to_string()),
        StoreError::Undecryptable { .. } => Status::failed_precondition(e.to_string()),
        StoreError::Backend(BackendError::Unavailable(_)) => Status::unavailable(e.to_string()),
        StoreError::Backend(BackendError::InvalidArgument(m)) => Status::invalid_argument(m),
        StoreError::Backend(BackendError::FutureRevision { .. }) => {
            Status::invalid_argument(e.to_string())
        }
        StoreError::Encryption(EncryptionError::Kms { .. }) => Status::unavailable(e.to_string()),
        other => {
            tracing::error!(error = %other, "internal error");
            Status::internal("internal error; see the server's log")
        }
    }
}

/// A protobuf Secret to the store's type.
pub fn secret_from_pb(s: pb::Secret) -> Secret {
    let m = s.metadata.unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            creation_timestamp: m.creation_timestamp,
            labels: m.labels,
            annotations: m.annotations,
            managed_fields: Vec::new(),
        },
        data: s
            .data
            .into_iter()
            .map(|(k, v)| (k, SecretBytes::new(v)))
            .collect(),
        string_data: s
            .string_data
            .into_iter()
            .map(|(k, v)| (k, SecretString(Zeroizing::new(v))))
            .collect(),
        type_: s.r#type,
        immutable: s.immutable,
        ..Secret::default()
    }
}

/// The store's Secret to protobuf (`stringData` is never returned).
pub fn secret_to_pb(s: Secret) -> pb::Secret {
    let updated = s
        .metadata
        .managed_fields
        .first()
        .map(|m| m.time.clone())
        .unwrap_or_default();
    pb::Secret {
        metadata: Some(pb::ObjectMeta {
            name: s.metadata.name,
            namespace: s.metadata.namespace,
            uid: s.metadata.uid,
            resource_version: s.metadata.resource_version,
            creation_timestamp: s.metadata.creation_timestamp,
            labels: s.metadata.labels,
            annotations: s.metadata.annotations,
        }),
        data: s
            .data
            .into_iter()
            .map(|(k, v)| (k, v.0.to_vec()))
            .collect::<BTreeMap<_, _>>(),
        string_data: BTreeMap::new(),
        r#type: s.type_,
        immutable: s.immutable,
        updated,
    }
}

fn raw_to_pb(kv: KeyValue) -> pb::RawKeyValue {
    pb::RawKeyValue {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
    }
}

fn namespace_or_default(ns: &str) -> &str {
    if ns.is_empty() {
        "default"
    } else {
        ns
    }
}

fn selector(s: &str) -> Result<Selector, Status> {
    Selector::parse(s).map_err(|e| Status::invalid_argument(format!("label_selector: {e}")))
}

fn limit(n: i64, field: &str) -> Result<usize, Status> {
    usize::try_from(n)
        .map_err(|_| Status::invalid_argument(format!("{field}: must be 0 or positive")))
}

/// `keyward.v1.Secrets`.
#[derive(Debug, Clone)]
pub struct SecretsService {
    store: Arc<Store>,
}

impl SecretsService {
    /// A service over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::secrets_server::SecretsServer<Self> {
        pb::secrets_server::SecretsServer::new(self).max_decoding_message_size(4 << 20)
    }
}

type WatchStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<pb::WatchEvent, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl pb::secrets_server::Secrets for SecretsService {
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::Secret>, Status> {
        let req = req.into_inner();
        let s = req
            .secret
            .ok_or_else(|| Status::invalid_argument("secret: required"))?;
        let s = self
            .store
            .create(secret_from_pb(s), req.dry_run)
            .await
            .map_err(to_status)?;
        Ok(Response::new(secret_to_pb(s)))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Secret>, Status> {
        let req = req.into_inner();
        let rev = match req.revision {
            0 => None,
            r if r > 0 => Some(r),
            _ => {
                return Err(Status::invalid_argument(
                    "revision: must be 0 (current) or positive",
                ))
            }
        };
        let s = self
            .store
            .get(namespace_or_default(&req.namespace), &req.name, rev)
            .await
            .map_err(to_status)?;
        Ok(Response::new(secret_to_pb(s)))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::Secret>, Status> {
        let req = req.into_inner();
        let s = req
            .secret
            .ok_or_else(|| Status::invalid_argument("secret: required"))?;
        let s = self
            .store
            .update(secret_from_pb(s), req.dry_run)
            .await
            .map_err(to_status)?;
        Ok(Response::new(secret_to_pb(s)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Secret>, Status> {
        let req = req.into_inner();
        let pre = Preconditions {
            uid: Some(req.uid).filter(|u| !u.is_empty()),
            resource_version: Some(req.resource_version).filter(|r| !r.is_empty()),
            unsafe_ignore_decrypt_errors: req.unsafe_ignore_decrypt_errors,
        };
        let s = self
            .store
            .delete(namespace_or_default(&req.namespace), &req.name, &pre)
            .await
            .map_err(to_status)?;
        Ok(Response::new(secret_to_pb(s)))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let req = req.into_inner();
        let sel = selector(&req.label_selector)?;
        let ns = Some(req.namespace.as_str()).filter(|n| !n.is_empty());
        let list = self
            .store
            .list(
                ns,
                &sel,
                limit(req.limit, "limit")?,
                Some(req.r#continue.as_str()).filter(|c| !c.is_empty()),
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListResponse {
            items: list.items.into_iter().map(secret_to_pb).collect(),
            resource_version: list.resource_version,
            r#continue: list.continue_token.unwrap_or_default(),
            errors: list
                .errors
                .into_iter()
                .map(|(key, message)| pb::ObjectError { key, message })
                .collect(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use tokio_stream::StreamExt;
        let req = req.into_inner();
        let sel = selector(&req.label_selector)?;
        let ns = Some(req.namespace.as_str()).filter(|n| !n.is_empty());
        let events = self
            .store
            .watch(ns, sel, Some(req.resource_version.as_str()))
            .await
            .map_err(to_status)?;
        let out = events.map(|e| {
            e.map(|e| pb::WatchEvent {
                r#type: e.kind.name().to_owned(),
                object: Some(secret_to_pb(e.object)),
            })
            .map_err(to_status)
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let req = req.into_inner();
        let entries = self
            .store
            .history(namespace_or_default(&req.namespace), &req.name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::HistoryResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::HistoryEntry {
                    revision: e.revision,
                    time: e.time,
                    change: match e.change {
                        ChangeKind::Created => "created",
                        ChangeKind::Updated => "updated",
                    }
                    .to_owned(),
                    secret: Some(secret_to_pb(e.secret)),
                })
                .collect(),
        }))
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::Secret>, Status> {
        let req = req.into_inner();
        let s = self
            .store
            .rollback(
                namespace_or_default(&req.namespace),
                &req.name,
                req.to_revision,
            )
            .await
            .map_err(to_status)?;
        Ok(Response::new(secret_to_pb(s)))
    }

    async fn raw_get(
        &self,
        req: Request<pb::RawGetRequest>,
    ) -> Result<Response<pb::RawGetResponse>, Status> {
        let key = req.into_inner().key;
        if key.is_empty() {
            return Err(Status::invalid_argument("key: required"));
        }
        let kv = self.store.raw_get(&key).await.map_err(to_status)?;
        let kv = kv.ok_or_else(|| Status::not_found(format!("key {key:?} not found")))?;
        Ok(Response::new(pb::RawGetResponse {
            kv: Some(raw_to_pb(kv)),
        }))
    }

    async fn raw_list(
        &self,
        req: Request<pb::RawListRequest>,
    ) -> Result<Response<pb::RawListResponse>, Status> {
        let req = req.into_inner();
        let kvs = self
            .store
            .raw_list(&req.prefix, limit(req.limit, "limit")?)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RawListResponse {
            kvs: kvs.into_iter().map(raw_to_pb).collect(),
        }))
    }
}

/// `keyward.v1.Encryption`: coverage and migration.
#[derive(Debug, Clone)]
pub struct EncryptionService {
    store: Arc<Store>,
}

impl EncryptionService {
    /// A service over `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::encryption_server::EncryptionServer<Self> {
        pb::encryption_server::EncryptionServer::new(self)
    }
}

fn progress_pb(p: &crate::store::migrate::MigrateProgress, finished: bool) -> pb::MigrateProgress {
    pb::MigrateProgress {
        total: p.total as i64,
        done: p.done as i64,
        rewritten: p.rewritten as i64,
        conflicts: p.conflicts as i64,
        failed: p.failed as i64,
        last_key: p.last_key.clone(),
        finished,
    }
}

type ProgressStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = Result<pb::MigrateProgress, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl pb::encryption_server::Encryption for EncryptionService {
    async fn status(
        &self,
        req: Request<pb::EncryptionStatusRequest>,
    ) -> Result<Response<pb::EncryptionStatusResponse>, Status> {
        let cov = self
            .store
            .encryption_coverage(req.get_ref().all_objects)
            .await
            .map_err(to_status)?;
        let t = self.store.encryption().for_resource(crate::store::RESOURCE);
        let (wp, wk) = t.write_provider();
        Ok(Response::new(pb::EncryptionStatusResponse {
            revision: cov.revision,
            total: cov.total as i64,
            stale: cov.stale as i64,
            undecryptable: cov.undecryptable as i64,
            counts: cov
                .by_key
                .into_iter()
                .map(
                    |((provider, key_name), (objects, stale))| pb::ProviderCount {
                        provider,
                        key_name,
                        objects: objects as i64,
                        stale: stale as i64,
                    },
                )
                .collect(),
            kms_key_ids: cov.kms_key_ids,
            write_provider: wp.to_owned(),
            write_key: wk.to_owned(),
            objects: cov
                .objects
                .into_iter()
                .map(|o| pb::ObjectEncryption {
                    key: o.key,
                    mod_revision: o.mod_revision,
                    provider: o.provider,
                    key_name: o.key_name,
                    stale: o.stale,
                    error: o.error.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    type MigrateStream = ProgressStream;

    async fn migrate(
        &self,
        req: Request<pb::MigrateRequest>,
    ) -> Result<Response<Self::MigrateStream>, Status> {
        let req = req.into_inner();
        if req.batch_size < 0 || !(req.rate >= 0.0 && req.rate.is_finite()) {
            return Err(Status::invalid_argument(
                "batch_size and rate: must be 0 (default) or positive",
            ));
        }
        let opts = crate::store::migrate::MigrateOptions {
            dry_run: req.dry_run,
            batch: if req.batch_size == 0 {
                256
            } else {
                req.batch_size as usize
            },
            rate: req.rate,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let store = self.store.clone();
        tokio::spawn(async move {
            let progress_tx = tx.clone();
            let res = store
                .migrate(opts, move |p| {
                    let _ = progress_tx.try_send(Ok(progress_pb(p, false)));
                })
                .await;
            let last = match res {
                Ok(p) => Ok(progress_pb(&p, true)),
                Err(e) => Err(to_status(e)),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Bearer tokens accepted on the TCP listener, one per line in a file (blank lines and `#`
/// comments ignored). Compared in constant time.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<Zeroizing<Vec<u8>>>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.0.len())
    }
}

impl Tokens {
    /// Parses a tokens file's content. Each token must be at least 16 characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "line {}: a token must be at least 16 characters with no spaces",
                    i + 1
                ));
            }
            out.push(Zeroizing::new(t.as_bytes().to_vec()));
        }
        if out.is_empty() {
            return Err("the tokens file holds no token".into());
        }
        Ok(Self(Arc::new(out)))
    }

    /// Whether `presented` equals one of the tokens (every token is compared, in constant time
    /// per token).
    pub fn check(&self, presented: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0u8);
        for t in self.0.iter() {
            ok |= t.as_slice().ct_eq(presented);
        }
        ok.into()
    }
}

/// Authenticates a request on the TCP listener: a verified client certificate, or an
/// `authorization: Bearer <token>` header matching [`Tokens`].
#[derive(Clone, Debug)]
pub struct Authenticator {
    /// Client certificates verified by the TLS layer are accepted.
    pub client_certs: bool,
    /// Bearer tokens, if any.
    pub tokens: Option<Tokens>,
}

impl Authenticator {
    /// Checks one request's credentials.
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.client_certs && req.peer_certs().is_some_and(|c| !c.is_empty()) {
            return Ok(req);
        }
        if let Some(tokens) = &self.tokens {
            if let Some(h) = req.metadata().get("authorization") {
                if let Some(t) = h.as_bytes().strip_prefix(b"Bearer ") {
                    if tokens.check(t) {
                        return Ok(req);
                    }
                }
                return Err(Status::unauthenticated("invalid bearer token"));
            }
        }
        Err(Status::unauthenticated(
            "client authentication required: a client certificate or an authorization: Bearer token",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_rules_and_constant_time_check() {
        let t = Tokens::parse("# ops\n\n0123456789abcdef\nsecond-token-long-enough\n").unwrap();
        assert!(t.check(b"0123456789abcdef"));
        assert!(t.check(b"second-token-long-enough"));
        assert!(!t.check(b"0123456789abcdeX"));
        assert!(!t.check(b""));
        assert!(!format!("{t:?}").contains("0123"));
        assert!(Tokens::parse("short\n").unwrap_err().contains("line 1"));
        assert!(Tokens::parse("# only comments\n").is_err());
        assert!(Tokens::parse("has a space in it!!\n").is_err());
    }

    #[test]
    fn pb_round_trip_drops_string_data_on_output() {
        let mut s = pb::Secret {
            metadata: Some(pb::ObjectMeta {
                name: "a".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.data.insert("k".into(), b"v".to_vec());
        s.string_data.insert("s".into(), "x".into());
        let store_s = secret_from_pb(s);
        assert_eq!(store_s.string_data.len(), 1);
        let back = secret_to_pb(store_s);
        assert!(back.string_data.is_empty());
        assert_eq!(back.data["k"], b"v");
    }
}
