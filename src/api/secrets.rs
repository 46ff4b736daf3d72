//! `keyward.v1.Secrets`: the store's registry operations over gRPC, thin handlers that
//! authenticate the caller, convert the request, call the guarded store
//! ([`Access`](crate::access::Access)) and map the error with [`access_status`].

use tonic::{Code, Request, Response, Status};

use super::frontend::{access_status, Frontend};
use super::{
    field_selector, invalid, limit, namespace_filter, raw_to_pb, resource_version, secret_from_pb,
    secret_id, secret_to_pb, selector, shared_secret_to_pb, to_status,
};
use crate::access::ListAt;
use crate::backend::Revision;
use crate::names::FieldError;
use crate::pb::keyward_v1 as pb;
use crate::reason::{bad_request, Reason};
use crate::store::{ChangeKind, Preconditions, ResourceVersion};

/// `keyward.v1.Secrets`.
#[derive(Debug, Clone)]
pub struct SecretsService {
    front: Frontend,
}

/// The method path of `keyward.v1.Secrets/<method>`, the audit log's `requestURI`.
fn uri(method: &str) -> String {
    format!("/keyward.v1.Secrets/{method}")
}

impl SecretsService {
    /// A service over the guarded store of `front`.
    pub fn new(front: Frontend) -> Self {
        Self { front }
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
        let ctx = self.front.context(&req, &uri("Create")).await?;
        let req = req.into_inner();
        let s = req.secret.ok_or_else(|| bad_request("secret: required"))?;
        let s = self
            .front
            .access
            .create(&ctx, secret_from_pb(s), req.dry_run)
            .await
            .map_err(access_status)?;
        Ok(Response::new(secret_to_pb(s)))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Secret>, Status> {
        let mut ctx = self.front.context(&req, &uri("Get")).await?;
        let req = req.into_inner();
        // The audit log tells a read of an earlier version from a read of the current one.
        if req.revision != 0 {
            ctx.request_uri = format!("{}?revision={}", ctx.request_uri, req.revision);
        }
        let rev = match req.revision {
            0 => None,
            r => Some(
                Revision::new(r)
                    .ok_or_else(|| bad_request("revision: must be 0 (current) or positive"))?,
            ),
        };
        let id = secret_id(&req.namespace, &req.name)?;
        let s = self
            .front
            .access
            .get(&ctx, &id.namespace, &id.name, rev)
            .await
            .map_err(access_status)?;
        Ok(Response::new(secret_to_pb(s)))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::Secret>, Status> {
        let ctx = self.front.context(&req, &uri("Update")).await?;
        let req = req.into_inner();
        let s = req.secret.ok_or_else(|| bad_request("secret: required"))?;
        let s = self
            .front
            .access
            .update(&ctx, secret_from_pb(s), req.dry_run)
            .await
            .map_err(access_status)?;
        Ok(Response::new(secret_to_pb(s)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::Secret>, Status> {
        let ctx = self.front.context(&req, &uri("Delete")).await?;
        let req = req.into_inner();
        let id = secret_id(&req.namespace, &req.name)?;
        let pre = Preconditions {
            uid: Some(req.uid).filter(|u| !u.is_empty()),
            resource_version: ResourceVersion::try_from(req.resource_version.as_str())
                .and_then(|rv| rv.exact(ResourceVersion::FIELD))
                .map_err(|e| invalid(&req.name, vec![e]))?,
            unsafe_ignore_decrypt_errors: req.unsafe_ignore_decrypt_errors,
        };
        let s = self
            .front
            .access
            .delete(&ctx, &id.namespace, &id.name, &pre, false, None)
            .await
            .map_err(access_status)?;
        Ok(Response::new(secret_to_pb(s)))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let ctx = self.front.context(&req, &uri("List")).await?;
        let req = req.into_inner();
        let sel = selector(&req.label_selector)?;
        let fields = field_selector(&req.field_selector)?;
        let ns = namespace_filter(&req.namespace)?;
        let list = self
            .front
            .access
            .list(
                &ctx,
                &ns,
                &sel,
                &fields,
                limit(req.limit, "limit")?,
                Some(req.r#continue.as_str()).filter(|c| !c.is_empty()),
                ListAt::Current,
                false,
            )
            .await
            .map_err(access_status)?;
        Ok(Response::new(pb::ListResponse {
            items: list.items.iter().map(|s| shared_secret_to_pb(s)).collect(),
            resource_version: list.resource_version.to_string(),
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
        let ctx = self.front.context(&req, &uri("Watch")).await?;
        use tokio_stream::StreamExt;
        let req = req.into_inner();
        let sel = selector(&req.label_selector)?;
        let fields = field_selector(&req.field_selector)?;
        let ns = namespace_filter(&req.namespace)?;
        let rv = resource_version(&req.resource_version)?;
        let events = self
            .front
            .access
            .watch(&ctx, &ns, sel, &fields, rv, false)
            .await
            .map_err(access_status)?;
        let out = events.map(|e| {
            e.map(|e| pb::WatchEvent {
                r#type: e.kind.name().to_owned(),
                object: Some(shared_secret_to_pb(&e.object)),
            })
            .map_err(to_status)
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let ctx = self.front.context(&req, &uri("History")).await?;
        let req = req.into_inner();
        let id = secret_id(&req.namespace, &req.name)?;
        let entries = self
            .front
            .access
            .history(&ctx, &id.namespace, &id.name)
            .await
            .map_err(access_status)?;
        Ok(Response::new(pb::HistoryResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::HistoryEntry {
                    revision: e.revision.get(),
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
        let ctx = self.front.context(&req, &uri("Rollback")).await?;
        let req = req.into_inner();
        let id = secret_id(&req.namespace, &req.name)?;
        let revision = Revision::new(req.to_revision).ok_or_else(|| {
            invalid(
                &req.name,
                vec![FieldError::new(
                    "revision",
                    format!(
                        "Invalid value: {}: must be a revision of this Secret's history (at least 1)",
                        req.to_revision
                    ),
                )],
            )
        })?;
        let s = self
            .front
            .access
            .rollback(&ctx, &id.namespace, &id.name, revision)
            .await
            .map_err(access_status)?;
        Ok(Response::new(secret_to_pb(s)))
    }

    async fn raw_get(
        &self,
        req: Request<pb::RawGetRequest>,
    ) -> Result<Response<pb::RawGetResponse>, Status> {
        let ctx = self.front.context(&req, &uri("RawGet")).await?;
        let key = req.into_inner().key;
        if key.is_empty() {
            return Err(bad_request("key: required"));
        }
        let kv = self
            .front
            .access
            .raw_get(&ctx, &key)
            .await
            .map_err(access_status)?;
        let kv = kv.ok_or_else(|| {
            Reason::NotFound.status(Code::NotFound, format!("key {key:?} not found"))
        })?;
        Ok(Response::new(pb::RawGetResponse {
            kv: Some(raw_to_pb(kv)),
        }))
    }

    async fn raw_list(
        &self,
        req: Request<pb::RawListRequest>,
    ) -> Result<Response<pb::RawListResponse>, Status> {
        let ctx = self.front.context(&req, &uri("RawList")).await?;
        let req = req.into_inner();
        let page = self
            .front
            .access
            .raw_list(
                &ctx,
                &req.prefix,
                limit(req.limit, "limit")?,
                Some(req.r#continue.as_str()),
            )
            .await
            .map_err(access_status)?;
        Ok(Response::new(pb::RawListResponse {
            kvs: page.kvs.into_iter().map(raw_to_pb).collect(),
            r#continue: page.continue_token.unwrap_or_default(),
        }))
    }
}
