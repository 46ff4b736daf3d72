//! `keyward.v1.Auth`: the reviews behind `keyward auth can-i` and `keyward auth whoami`, and
//! service account token requests (`keyward create token`), over the guarded store.

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::bad_request;
use super::frontend::{access_status, Frontend};
use crate::authn::serviceaccount::DEFAULT_EXPIRATION;
use crate::authz::{AccessReviewSpec, NonResourceAttributes, ResourceAttributes};
use crate::pb::keyward_v1 as pb;

/// `keyward.v1.Auth`.
#[derive(Debug, Clone)]
pub struct AuthService {
    front: Frontend,
}

impl AuthService {
    /// A service over the guarded store of `front`.
    pub fn new(front: Frontend) -> Self {
        Self { front }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::auth_server::AuthServer<Self> {
        pb::auth_server::AuthServer::new(self)
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn access_review(
        &self,
        req: Request<pb::AccessReviewRequest>,
    ) -> Result<Response<pb::AccessReviewResponse>, Status> {
        let ctx = self
            .front
            .context(&req, "/keyward.v1.Auth/AccessReview")
            .await?;
        let r = req.into_inner();
        let spec = if r.path.is_empty() {
            AccessReviewSpec::Resource(ResourceAttributes {
                namespace: r.namespace,
                verb: r.verb,
                group: r.group,
                version: String::new(),
                resource: r.resource,
                subresource: r.subresource,
                name: r.name,
            })
        } else {
            AccessReviewSpec::NonResource(NonResourceAttributes {
                path: r.path,
                verb: r.verb,
            })
        };
        let st = self
            .front
            .access
            .access_review(&ctx, &spec, || None, |_| None)
            .await
            .map_err(access_status)?;
        Ok(Response::new(pb::AccessReviewResponse {
            allowed: st.allowed,
            denied: st.denied,
            reason: st.reason,
            evaluation_error: st.evaluation_error,
        }))
    }

    async fn rules_review(
        &self,
        req: Request<pb::RulesReviewRequest>,
    ) -> Result<Response<pb::RulesReviewResponse>, Status> {
        let ctx = self
            .front
            .context(&req, "/keyward.v1.Auth/RulesReview")
            .await?;
        let ns = req.into_inner().namespace;
        let st = self
            .front
            .access
            .rules_review(&ctx, &ns, || None, |_| None)
            .await
            .map_err(access_status)?;
        Ok(Response::new(pb::RulesReviewResponse {
            resource_rules: st
                .resource_rules
                .into_iter()
                .map(|r| pb::ResourceRule {
                    verbs: r.verbs,
                    api_groups: r.api_groups,
                    resources: r.resources,
                    resource_names: r.resource_names,
                })
                .collect(),
            non_resource_rules: st
                .non_resource_rules
                .into_iter()
                .map(|r| pb::NonResourceRule {
                    verbs: r.verbs,
                    non_resource_urls: r.non_resource_urls,
                })
                .collect(),
            incomplete: st.incomplete,
            evaluation_error: st.evaluation_error,
        }))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::UserInfo>, Status> {
        let ctx = self.front.context(&req, "/keyward.v1.Auth/WhoAmI").await?;
        let id = self
            .front
            .access
            .whoami(&ctx, || None, |_| None)
            .await
            .map_err(access_status)?;
        Ok(Response::new(pb::UserInfo {
            username: id.name,
            uid: id.uid,
            groups: id.groups,
            extra: id
                .extra
                .into_iter()
                .map(|(k, values)| (k, pb::ExtraValue { values }))
                .collect(),
        }))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let ctx = self
            .front
            .context(&req, "/keyward.v1.Auth/CreateToken")
            .await?;
        let r = req.into_inner();
        let expiration = match r.expiration_seconds {
            0 => DEFAULT_EXPIRATION,
            s if s > 0 => Duration::from_secs(s as u64),
            _ => {
                return Err(bad_request(
                    "expiration_seconds: must be 0 (default) or positive",
                ))
            }
        };
        let t = self
            .front
            .access
            .create_token(
                &ctx,
                &r.namespace,
                &r.service_account,
                r.audiences,
                expiration,
            )
            .await
            .map_err(access_status)?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: t.token.expose().to_owned(),
            expiration_timestamp: humantime::format_rfc3339_seconds(t.expiration).to_string(),
            expiration_seconds: i64::try_from(t.lifetime.as_secs()).unwrap_or(i64::MAX),
        }))
    }
}
