//! The guarded store: the only way front ends reach the [`Store`]'s read and write operations.
//! Every operation takes a [`RequestContext`] (who, acting for whom, from where) and does, in
//! this order:
//!
//! 1. **authorize** the request's [`Attributes`] with the RBAC [`Policy`] in force;
//! 2. **audit** `RequestReceived` with the decision — if the event cannot be written the request
//!    fails `Unavailable` (fail closed; `--audit-fail-open` logs and goes on instead);
//! 3. a denied request stops here with [`AccessError::Forbidden`], Kubernetes' message word for
//!    word, and its `ResponseComplete` event (`403`, decision `forbid`);
//! 4. **call the store**;
//! 5. **audit** `ResponseComplete` with the status and, at the levels that keep bodies, the
//!    objects reduced by the audit module (a Secret is metadata and key names, never values).
//!    A read or refusal whose events cannot be written is refused (`Unavailable`: its
//!    `RequestReceived` is written with this event); a write's outcome stands, as in
//!    kube-apiserver (it acted after its `RequestReceived` was recorded), and the event is
//!    counted as lost, which the log records as soon as it can be written.
//!
//! Requests map to RBAC as Kubernetes maps them (the verbs are in [`verbs`]; the table is in
//! the README, "Who may read which Secret"):
//!
//! | operation | verb | resource (group) | namespace, name |
//! |---|---|---|---|
//! | get, get at a revision, history | `get` | `secrets` | the Secret's |
//! | list | `list` | `secrets` | the namespace ("" = all: cluster scope); the name its field selector selects (`metadata.name=NAME`), if any |
//! | watch | `watch` | `secrets` | as list; allowed or refused as a whole |
//! | create | `create` | `secrets` | the namespace, no name (`resourceNames` cannot restrict it) |
//! | update, rollback | `update` | `secrets` | the Secret's |
//! | patch (Kubernetes API; the stored object read for it too) | `patch` | `secrets` | the Secret's |
//! | server-side apply of an absent Secret | `patch` | `secrets` | the Secret's |
//! | delete | `delete` | `secrets` | the Secret's |
//! | delete ignoring decrypt errors | also `unsafe-delete-ignore-read-errors` | `secrets` | the Secret's (KEP-3926) |
//! | raw get / raw list | `get` / `list` | `raw` (`keyward.io`) | cluster scope; the key is the name of a raw get |
//! | encryption status | `get` | `encryption` (`keyward.io`) | cluster scope |
//! | migrate | `create` | `migrations` (`keyward.io`) | cluster scope |
//! | token request | `create` | `serviceaccounts/token` | the service account's |
//! | access, rules and self reviews | allowed to every authenticated identity, as Kubernetes' `system:basic-user` | | |
//!
//! Layering: `api` (and any later front end) converts its wire format, authenticates with
//! [`Authenticators`] and calls [`Access`]; it never calls `Store` methods for Secret operations
//! (`grep -rn 'store()\.\|Store::' src/api` finds none). The authenticators read their own
//! Secrets (bootstrap tokens, service-account-token Secrets) through
//! [`crate::authn::SecretLookup`], below this layer, as kube-apiserver's authenticators read
//! informers.
//!
//! Submodules: `context` ([`RequestContext`], [`Source`]), `authenticate` ([`Authenticators`],
//! [`Credentials`]), `keys` ([`SealedKeys`]: the server's keys sealed in the backend),
//! `service_accounts` ([`ServiceAccounts`]: the token issuer, its verifier and the
//! service-account-token Secret hook), `ops` (the operations), `setup` ([`AccessStack`]: the
//! layer as a server configures it from [`AccessOptions`]).

mod authenticate;
mod context;
mod keys;
mod ops;
mod service_accounts;
mod setup;

use std::sync::Arc;

pub use authenticate::{Authenticators, Credentials};
pub use context::{AnswerView, Answered, DeletionAnswer, RequestContext, Source};
pub use keys::{SealedKeys, AUDIT_CHECKPOINT_KEY, SERVICE_ACCOUNT_SIGNING_KEY};
pub use ops::{
    keyward_attributes, review_attributes, secret_attributes, token_request_attributes,
    EncryptionStatus, ListAt, Migration, SelfReview,
};
pub use service_accounts::{ServiceAccountSettings, ServiceAccounts, TokenSecretHook};
pub use setup::{
    public_key_path, write_public_key, AccessOptions, AccessStack, AuditOptions, SetupError,
};

use crate::audit::{AuditError, AuditObject, Auditor, Level, RequestAudit, ResponseStatus};
use crate::authn::reload::Reload;
use crate::authn::{AuthnError, Identity};
use crate::authz::{Attributes, Authorizer, Decision, Forbidden, ImpersonationRequest, Policy};
use crate::backend::BackendError;
use crate::encryption::EncryptionError;
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::store::{Store, StoreError};

/// Verbs and resources keyward adds to Kubernetes' for its own operations.
pub mod verbs {
    /// KEP-3926's verb for deleting an object whose stored value cannot be decrypted.
    pub const UNSAFE_DELETE: &str = "unsafe-delete-ignore-read-errors";
    /// The API group of keyward's own resources.
    pub const KEYWARD_GROUP: &str = "keyward.io";
    /// Stored bytes, as stored (`get`, `list`).
    pub const RAW: &str = "raw";
    /// Encryption coverage (`get`).
    pub const ENCRYPTION: &str = "encryption";
    /// Re-encryption of stale data (`create`).
    pub const MIGRATIONS: &str = "migrations";
}

/// Errors of the access layer: authentication, authorization, audit, and the store's own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// No credential where one is required: TCP without a client certificate or bearer token,
    /// or a Unix caller whose credentials the kernel did not report (caller).
    #[error(
        "client authentication required: a client certificate or an authorization: Bearer token"
    )]
    NoCredentials,
    /// A credential no authenticator accepts (caller's credential). The detail is logged;
    /// callers only learn which kind of credential was refused (`invalid bearer token`, as
    /// kube-apiserver's bearer-token filter words it, or `invalid client certificate`).
    #[error("invalid {what}")]
    Unauthenticated {
        /// `bearer token` or `client certificate`.
        what: &'static str,
        /// Why (logged, never shown to the caller).
        #[source]
        source: AuthnError,
    },
    /// The request is malformed (caller).
    #[error("{0}")]
    BadRequest(String),
    /// `Impersonate-*` asks for groups, extra or a uid without a user (caller). Refused before
    /// authorization, and recorded; kube-apiserver answers it with a plain-text 500
    /// (`responsewriters.InternalError`), the gRPC API with `InvalidArgument`.
    #[error("{0}")]
    ImpersonationWithoutUser(String),
    /// The identity may not do this (caller); Kubernetes' Forbidden message.
    #[error("{0}")]
    Forbidden(Forbidden),
    /// The request's audit event could not be written, so it was refused (environment: the
    /// audit log's disk).
    #[error(
        "the audit log is unavailable: the request was refused because it could not be recorded"
    )]
    AuditUnavailable(#[source] AuditError),
    /// The store refused or failed (see [`StoreError`] for whose fault).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A create in a namespace that does not exist, which here is a name no namespace can have
    /// (caller): kube-apiserver's NamespaceLifecycle admission refuses it before the object is
    /// validated.
    #[error("namespaces {} not found", crate::authz::go_quote(.0))]
    NamespaceNotFound(String),
    /// A token request breaks a rule, e.g. its duration or a name (caller).
    #[error("{0}")]
    InvalidTokenRequest(String),
    /// The server's own key material cannot be created or read: an `identity` write provider,
    /// a configuration without the key that sealed it (operator), or the backend (environment).
    #[error("server key {name:?}: {reason}")]
    KeyMaterial {
        /// Which key.
        name: String,
        /// Why (never key bytes).
        reason: String,
    },
}

impl AccessError {
    /// The Kubernetes reason of this error, as the audit log's `responseStatus` and the gRPC
    /// status carry it.
    pub fn reason(&self) -> Reason {
        match self {
            AccessError::NoCredentials | AccessError::Unauthenticated { .. } => {
                Reason::Unauthorized
            }
            AccessError::BadRequest(_)
            | AccessError::ImpersonationWithoutUser(_)
            | AccessError::InvalidTokenRequest(_) => Reason::BadRequest,
            AccessError::Forbidden(_) => Reason::Forbidden,
            AccessError::NamespaceNotFound(_) => Reason::NotFound,
            AccessError::AuditUnavailable(_) | AccessError::KeyMaterial { .. } => {
                Reason::ServiceUnavailable
            }
            AccessError::Store(e) => store_reason(e),
        }
    }

    /// Who a request whose credential was refused is recorded as: no user, with the audit
    /// annotations its authenticator added (a marked-invalid legacy token's).
    pub fn refused_identity(&self) -> Identity {
        let mut nobody = Identity::default();
        if let AccessError::Unauthenticated { source, .. } = self {
            nobody.audit_annotations = source.audit_annotations();
        }
        nobody
    }

    /// The `responseStatus` the audit log records for this error, unless the request's front
    /// end answers it otherwise ([`RequestContext::answering_errors_with`]).
    pub fn audit_status(&self) -> ResponseStatus {
        ResponseStatus::failure(self.reason(), self.audit_message())
    }

    /// The message the audit log may keep: the error's own for caller mistakes (they name
    /// fields, never values), a generic one for internal failures.
    fn audit_message(&self) -> String {
        match self.reason() {
            Reason::InternalError => "internal error".to_owned(),
            _ => self.to_string(),
        }
    }
}

/// The reason of a store error, as `api::to_status` reports it.
fn store_reason(e: &StoreError) -> Reason {
    match e {
        StoreError::Invalid { .. } | StoreError::CreateHook { .. } => Reason::Invalid,
        StoreError::NotFound { .. } => Reason::NotFound,
        StoreError::AlreadyExists { .. } => Reason::AlreadyExists,
        StoreError::Conflict { .. } | StoreError::PreconditionFailed { .. } => Reason::Conflict,
        StoreError::Gone(_) | StoreError::ContinueExpired { .. } => Reason::Expired,
        StoreError::MigrationRunning => Reason::Conflict,
        StoreError::MigrationStopped => Reason::Timeout,
        StoreError::OutsideStore { .. } | StoreError::BadContinue { .. } => Reason::BadRequest,
        StoreError::Backend(BackendError::Unavailable(_) | BackendError::WatchTooSlow(_))
        | StoreError::Encryption(EncryptionError::Kms { .. }) => Reason::ServiceUnavailable,
        StoreError::Backend(BackendError::InvalidArgument(_))
        | StoreError::Backend(BackendError::FutureRevision { .. }) => Reason::BadRequest,
        _ => Reason::InternalError,
    }
}

/// What an audit write failure becomes: the request is refused (fail closed), the log says
/// why and `keyward_audit_write_failures_total` counts it.
fn audit_failed(metrics: Option<&Metrics>) -> impl FnOnce(AuditError) -> AccessError + '_ {
    move |e| {
        tracing::error!(error = %e, "audit event not written; request refused");
        if let Some(m) = metrics {
            m.audit_write_failed();
        }
        AccessError::AuditUnavailable(e)
    }
}

/// The body a refusal is recorded with: what the front end answers it with, kept at level
/// `RequestResponse` only.
fn refusal_body(
    ctx: &RequestContext,
    rec: &RequestAudit,
    refusal: &AccessError,
) -> Option<AuditObject> {
    (rec.level() >= Level::RequestResponse)
        .then(|| ctx.error_body(refusal))
        .flatten()
}

/// The guarded store. Cheap to share (`Arc`).
pub struct Access {
    store: Arc<Store>,
    policy: Arc<Policy>,
    auditor: Auditor,
    service_accounts: Option<Arc<ServiceAccounts>>,
    /// The credential files reloaded on change (`--token-auth-file`, `--unix-users`), for health.
    credential_files: Vec<Arc<dyn Reload>>,
    /// Where denials and audit write failures are counted, once metrics are on.
    metrics: std::sync::OnceLock<Metrics>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("store", &self.store)
            .field("auditor", &self.auditor)
            .field("service_accounts", &self.service_accounts)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Guards `store` with `policy` and records requests with `auditor`.
    pub fn new(store: Arc<Store>, policy: Arc<Policy>, auditor: Auditor) -> Self {
        Self {
            store,
            policy,
            auditor,
            service_accounts: None,
            credential_files: Vec::new(),
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Counts authorization denials (`keyward_authorization_denials_total{verb}`) and audit
    /// write failures (`keyward_audit_write_failures_total`) in `metrics` from now on.
    /// Also reports the policy's state (`keyward_authorization_policy_*`) and the credential
    /// files' (`keyward_credential_files_*`).
    pub fn report_to(&self, metrics: &Metrics) {
        metrics.watch_policy(&self.policy);
        metrics.watch_credential_files(&self.credential_files);
        let _ = self.metrics.set(metrics.clone());
    }

    fn metrics(&self) -> Option<&Metrics> {
        self.metrics.get()
    }

    /// Issues service account tokens with `sa` (TokenRequest, service-account-token Secrets).
    pub fn with_service_accounts(mut self, sa: Arc<ServiceAccounts>) -> Self {
        self.service_accounts = Some(sa);
        self
    }

    /// Reports the state of `files` (the credential files reloaded on change) in
    /// [`Access::credential_file_errors`].
    pub fn with_credential_files(mut self, files: Vec<Arc<dyn Reload>>) -> Self {
        self.credential_files = files;
        self
    }

    /// The credential files whose content on disk is not in force (unreadable or invalid: the
    /// last valid content stays in force), with why.
    pub fn credential_file_errors(&self) -> Vec<(std::path::PathBuf, String)> {
        self.credential_files
            .iter()
            .filter_map(|f| {
                let st = f.status();
                st.last_error.map(|e| (st.path, e))
            })
            .collect()
    }

    /// The authorization policy in force.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The audit recorder.
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// The storage key of the Secret `namespace/name` (`<prefix>/secrets/<namespace>/<name>`).
    pub fn storage_key(
        &self,
        namespace: &crate::names::Namespace,
        name: &crate::names::SecretName,
    ) -> String {
        self.store.storage_key(namespace, name)
    }

    /// The request `ctx` acting as `request` asks (kube-apiserver's impersonation filter): the
    /// caller must be allowed `impersonate` on each part; a malformed request (groups without
    /// a user) is a bad request. A refusal is Forbidden, recorded as kube-apiserver's audit
    /// filter (which runs before impersonation) records it: as the request the caller made,
    /// `original` (its attributes as far as the front end knows them), at the level the audit
    /// policy gives that request, with the 403 and no authorization annotations.
    pub async fn impersonate(
        &self,
        ctx: RequestContext,
        request: &ImpersonationRequest,
        original: &Attributes,
    ) -> Result<RequestContext, AccessError> {
        let plan = match request.plan(&ctx.user) {
            Ok(Some(plan)) => plan,
            Ok(None) => return Ok(ctx),
            Err(e) => {
                let refusal = AccessError::ImpersonationWithoutUser(e.to_string());
                return Err(self.refuse_impersonation(&ctx, original, refusal).await);
            }
        };
        for check in &plan.checks {
            if let Decision::Deny { reason } = self.policy.authorize(check) {
                if let Some(m) = self.metrics() {
                    m.authorization_denied(&check.verb);
                }
                let refusal = AccessError::Forbidden(Forbidden::new(check, &reason));
                return Err(self.refuse_impersonation(&ctx, original, refusal).await);
            }
        }
        Ok(ctx.acting_as(plan.identity))
    }

    /// Records `refusal` of an impersonation as the request the caller made (`original`), as
    /// kube-apiserver audits it (before it impersonates or authorizes), and returns it (or why
    /// it could not be recorded).
    async fn refuse_impersonation(
        &self,
        ctx: &RequestContext,
        original: &Attributes,
        refusal: AccessError,
    ) -> AccessError {
        ctx.mark_recorded();
        let mut rec = self.auditor.begin(original, ctx.audit_info());
        let body = refusal_body(ctx, &rec, &refusal);
        match rec
            .refused_before_authorization((ctx.error_status())(&refusal), body)
            .await
        {
            Ok(()) => refusal,
            Err(e) => audit_failed(self.metrics())(e),
        }
    }

    /// Refuses, and records as refused, a request `attrs` its caller may not make, before the
    /// request's body is read: kube-apiserver authorizes what the URL says before a handler
    /// decodes anything, so a caller without the permission gets 403 whatever it sent. An
    /// allowed request goes on; its handler authorizes and records it as usual.
    pub async fn refuse_if_denied(
        &self,
        ctx: &RequestContext,
        attrs: &Attributes,
    ) -> Result<(), AccessError> {
        if self.policy.authorize(attrs).allowed() {
            return Ok(());
        }
        // Records the refusal and returns Forbidden (unless the policy changed since).
        self.admit(ctx, attrs, &[], || None).await.map(drop)
    }

    /// Authorizes and records a request `attrs` that no operation here took in hand: one a
    /// front end answered alone (discovery, OpenAPI, a path nothing serves) or refused before
    /// it reached the store (options that do not parse, a 406). kube-apiserver authorizes and
    /// audits every request whatever its handler does; `status` is how it ended, and `body`
    /// (at level `RequestResponse`) what it was answered with. A request the
    /// policy refuses is [`AccessError::Forbidden`] (recorded as such), to be answered instead.
    pub async fn record(
        &self,
        ctx: &RequestContext,
        attrs: &Attributes,
        status: ResponseStatus,
        body: Option<AuditObject>,
    ) -> Result<(), AccessError> {
        let mut rec = self.admit(ctx, attrs, &[], || None).await?;
        let body = body.filter(|_| rec.level() >= Level::RequestResponse);
        rec.response_complete(status, body)
            .await
            .map_err(audit_failed(self.metrics()))
    }

    /// Answers a request `attrs` about a Secret that cannot exist (its name or namespace is
    /// not valid, so nothing is stored under it) as kube-apiserver, which checks names only
    /// when it reaches its storage: authorized and recorded as any request, then `refusal`
    /// (NotFound for a name nothing can be stored under, BadRequest for one its storage
    /// cannot key). Returns the error to answer with.
    pub async fn refuse_after_authorization(
        &self,
        ctx: &RequestContext,
        attrs: &Attributes,
        refusal: AccessError,
    ) -> AccessError {
        let mut rec = match self.admit(ctx, attrs, &[], || None).await {
            Ok(rec) => rec,
            Err(e) => return e,
        };
        let refused: Result<std::convert::Infallible, AccessError> = Err(refusal);
        match self.finish(ctx, &mut rec, refused, 0, |_, _| None).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    /// Records a request whose credentials were refused (`attrs` with an empty user: what the
    /// request asked for, as far as the front end knows; `message` from
    /// [`Credentials::failure_message`](crate::access::Credentials::failure_message)). The request is
    /// refused whatever happens here, so a write failure is only logged and counted.
    pub async fn record_unauthenticated(
        &self,
        attrs: &Attributes,
        info: crate::audit::RequestInfo,
        message: &str,
    ) {
        let mut rec = self.auditor.begin(attrs, info);
        if let Err(e) = rec.authentication_failed(message).await {
            if let Some(m) = self.metrics() {
                m.audit_write_failed();
            }
            tracing::error!(error = %e, "the audit event of a refused authentication was not written");
        }
    }

    /// Authorizes `attrs` (and `also`, each of which must be allowed too) and records
    /// `RequestReceived`. A denied request is recorded as complete (403) and refused.
    async fn admit(
        &self,
        ctx: &RequestContext,
        attrs: &Attributes,
        also: &[Attributes],
        request: impl FnOnce() -> Option<AuditObject>,
    ) -> Result<RequestAudit, AccessError> {
        let mut decision = self.policy.authorize(attrs);
        let mut refused = attrs;
        if decision.allowed() {
            for a in also {
                let d = self.policy.authorize(a);
                if !d.allowed() {
                    decision = d;
                    refused = a;
                    break;
                }
            }
        }
        ctx.mark_recorded();
        let mut rec = self.auditor.begin(attrs, ctx.audit_info());
        if !decision.allowed() || attrs.is_read_only() {
            // Nothing happens before the next stage is recorded: one sync for both events.
            rec.defer_request_received();
        }
        // The object its front end decoded, if it kept one; else the access layer's.
        let body = if rec.level() > Level::None {
            ctx.request_object().or_else(request)
        } else {
            None
        };
        rec.request_received(&decision, body)
            .await
            .map_err(audit_failed(self.metrics()))?;
        if let Decision::Deny { reason } = &decision {
            if let Some(m) = self.metrics() {
                m.authorization_denied(&refused.verb);
            }
            let f = Forbidden::new(refused, reason);
            tracing::debug!(user = %ctx.user.name, "{}", f.message);
            let refusal = AccessError::Forbidden(f);
            let body = refusal_body(ctx, &rec, &refusal);
            rec.response_complete((ctx.error_status())(&refusal), body)
                .await
                .map_err(audit_failed(self.metrics()))?;
            return Err(refusal);
        }
        Ok(rec)
    }

    /// Admits `attrs`, runs `call` and records its outcome with `code` and the body `respond`
    /// gives (see [`Access::complete`]).
    async fn guarded<T>(
        &self,
        ctx: &RequestContext,
        attrs: &Attributes,
        request: impl FnOnce() -> Option<AuditObject>,
        code: u16,
        respond: impl FnOnce(&T, Level) -> Option<AuditObject>,
        call: impl std::future::Future<Output = Result<T, AccessError>>,
    ) -> Result<T, AccessError> {
        let mut rec = self.admit(ctx, attrs, &[], request).await?;
        let result = call.await;
        self.finish(ctx, &mut rec, result, code, respond).await
    }

    /// [`Access::complete`] for a request of `ctx`.
    async fn finish<T>(
        &self,
        ctx: &RequestContext,
        rec: &mut RequestAudit,
        result: Result<T, AccessError>,
        code: u16,
        respond: impl FnOnce(&T, Level) -> Option<AuditObject>,
    ) -> Result<T, AccessError> {
        self.finish_answered(ctx, rec, result, |v, level| {
            let body = match level >= Level::RequestResponse {
                true => respond(v, level),
                false => None,
            };
            (ResponseStatus::success(code), body)
        })
        .await
    }

    /// As [`Access::finish`], with the success's `responseStatus` and body (kept only at level
    /// `RequestResponse`) from `respond`.
    async fn finish_answered<T>(
        &self,
        ctx: &RequestContext,
        rec: &mut RequestAudit,
        result: Result<T, AccessError>,
        respond: impl FnOnce(&T, Level) -> (ResponseStatus, Option<AuditObject>),
    ) -> Result<T, AccessError> {
        Self::complete(
            (ctx.error_status(), |e: &AccessError| ctx.error_body(e)),
            rec,
            self.metrics(),
            result,
            respond,
        )
        .await
    }

    /// Records `ResponseComplete` for `result`: the status and body `respond` gives (the body
    /// kept only at level `RequestResponse`); for an error, the status and (at level
    /// `RequestResponse`) the body `error` gives.
    async fn complete<T>(
        error: (
            fn(&AccessError) -> ResponseStatus,
            impl FnOnce(&AccessError) -> Option<AuditObject>,
        ),
        rec: &mut RequestAudit,
        metrics: Option<&Metrics>,
        result: Result<T, AccessError>,
        respond: impl FnOnce(&T, Level) -> (ResponseStatus, Option<AuditObject>),
    ) -> Result<T, AccessError> {
        let level = rec.level();
        let (error_status, error_body) = error;
        let (status, body) = match &result {
            Ok(v) => match respond(v, level) {
                (status, body) if level >= Level::RequestResponse => (status, body),
                (status, _) => (status, None),
            },
            Err(e) if level >= Level::RequestResponse => (error_status(e), error_body(e)),
            Err(e) => (error_status(e), None),
        };
        rec.response_complete(status, body)
            .await
            .map_err(audit_failed(metrics))?;
        if let (true, Some(m)) = (rec.lost(), metrics) {
            m.audit_write_failed();
        }
        result
    }
}

#[cfg(test)]
mod tests;
