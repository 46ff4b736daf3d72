//! The guarded operations: one method of [`Access`] per store operation, each building the
//! request's [`Attributes`] from the table in the module documentation, then admit (authorize,
//! audit `RequestReceived`), call the store, and complete (audit `ResponseComplete`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use super::{Access, AccessError, RequestContext};
use crate::audit::{AuditObject, Level, RequestAudit, ResponseStatus};
use crate::authn::serviceaccount::{IssuedToken, ServiceAccountRef, TokenRequest};
use crate::authn::Identity;
use crate::authz::{
    self, verbs as kverbs, AccessReviewSpec, Attributes, Authorizer, Decision, Forbidden,
    SubjectAccessReviewStatus, SubjectRulesReviewStatus,
};
use crate::backend::{BackendError, KeyValue, Revision};
use crate::names::{Namespace, SecretName};
use crate::store::migrate::{Coverage, MigrateOptions, MigrateProgress};
use crate::store::{
    FieldSelector, HistoryEntry, Preconditions, RawPage, ResourceVersion, Scope, Secret, SecretId,
    SecretList, Selector, Store, StoreError, WatchEvents, RESOURCE,
};

use super::verbs;

/// How long a read "not older than" a revision waits for the store to reach it: the watch
/// cache's `blockTimeout` in kube-apiserver.
const REVISION_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// How often the store's revision is looked at meanwhile.
const REVISION_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The encryption coverage and the write provider and key in force.
#[derive(Debug, Clone)]
pub struct EncryptionStatus {
    /// How every stored Secret is encrypted.
    pub coverage: Coverage,
    /// The provider new writes use (e.g. `kms`, `aesgcm`, `identity`).
    pub write_provider: String,
    /// The key name new writes use.
    pub write_key: String,
    /// When asked for: the kms v2 key_ids the kept older versions need, with their counts
    /// ([`crate::store::Store::history_key_ids`]).
    pub history_kms_key_ids: BTreeMap<String, u64>,
}

/// An admitted migration: authorized and recorded, not yet run ([`Migration::run`]).
#[derive(Debug)]
pub struct Migration {
    rec: RequestAudit,
    error_status: fn(&AccessError) -> ResponseStatus,
    store: Arc<Store>,
    metrics: Option<crate::metrics::Metrics>,
}

impl Migration {
    /// Rewrites every stale Secret and server key, calling `progress` as [`Store::migrate`]
    /// does; records the outcome.
    pub async fn run(
        self,
        opts: MigrateOptions,
        progress: impl FnMut(&MigrateProgress) + Send,
    ) -> Result<MigrateProgress, AccessError> {
        self.run_until(opts, progress, std::future::pending()).await
    }

    /// [`Migration::run`], stopped when `stop` completes first (its caller went away): what it
    /// rewrote stays rewritten, and the outcome is recorded as
    /// [`StoreError::MigrationStopped`](crate::store::StoreError::MigrationStopped).
    pub async fn run_until(
        mut self,
        opts: MigrateOptions,
        progress: impl FnMut(&MigrateProgress) + Send,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<MigrateProgress, AccessError> {
        let result = tokio::select! {
            r = self.store.migrate(opts, progress) => r.map_err(Into::into),
            () = stop => Err(crate::store::StoreError::MigrationStopped.into()),
        };
        Access::complete(
            (self.error_status, |_: &AccessError| None),
            &mut self.rec,
            self.metrics.as_ref(),
            result,
            |_, _| (ResponseStatus::success(201), None),
        )
        .await
    }
}

/// A watch stream that records `ResponseComplete` when it ends or is dropped.
struct AuditedWatch {
    inner: WatchEvents,
    rec: Option<RequestAudit>,
    /// The watch's field selector: events of Secrets it does not match are left out here (a
    /// watch authorized for the one Secret its selector names gets only that Secret's).
    fields: FieldSelector,
}

impl futures_core::Stream for AuditedWatch {
    type Item = <WatchEvents as futures_core::Stream>::Item;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let item = std::task::ready!(this.inner.as_mut().poll_next(cx));
            let left_out = match &item {
                Some(Ok(ev)) => {
                    ev.kind != crate::store::WatchKind::Bookmark && !this.fields.matches(&ev.object)
                }
                _ => false,
            };
            if !left_out {
                return Poll::Ready(item);
            }
        }
    }
}

impl Drop for AuditedWatch {
    fn drop(&mut self) {
        if let Some(mut rec) = self.rec.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = rec
                        .response_complete(ResponseStatus::success(200), None)
                        .await
                    {
                        tracing::error!(error = %e, "audit event of a finished watch not written");
                    }
                });
            }
        }
    }
}

/// The response body of a call that returns one Secret: whole (reduced) at `RequestResponse`,
/// none below it (the event's `objectRef` takes nothing from a response).
fn secret_body(s: &Secret, level: Level) -> Option<AuditObject> {
    (level >= Level::RequestResponse).then(|| AuditObject::secret(s))
}

/// What an attempt of [`Access::patch`] writes.
enum Next {
    /// A server-side apply's Secret, where there was none.
    Create(Secret),
    /// The patched Secret, and whether a lost race may be retried ([`rebase`]).
    Update(Secret, bool),
}

/// A patch's result to write over `live`: with `live`'s resourceVersion as precondition
/// unless the patch set another (and whether a lost race may be retried: only with `live`'s).
fn rebase(live: &Secret, mut next: Secret) -> (Secret, bool) {
    let ours = next.metadata.resource_version.is_empty()
        || next.metadata.resource_version == live.metadata.resource_version;
    if next.metadata.resource_version.is_empty() {
        next.metadata
            .resource_version
            .clone_from(&live.metadata.resource_version);
    }
    // The uid kept from the version read is no precondition (kube-apiserver's patcher sets
    // none): a Secret deleted and created again meanwhile is read and patched again, where the
    // store would refuse the uid. The store keeps the stored version's uid.
    if next.metadata.uid == live.metadata.uid {
        next.metadata.uid.clear();
    }
    (next, ours)
}

/// The revision a list is read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListAt {
    /// The current state.
    Current,
    /// Exactly this revision (Gone once compacted, `FutureRevision` if not reached).
    Exact(Revision),
    /// The current state, which must have reached this revision (`FutureRevision` if not):
    /// kube-apiserver's `resourceVersionMatch=NotOlderThan`.
    NotOlderThan(Revision),
}

/// The attributes of a request by `user` to `verb` Secrets: in `namespace` ("": every one),
/// the one named `name` ("": none named).
pub fn secret_attributes(user: Identity, verb: &str, namespace: &str, name: &str) -> Attributes {
    Attributes::resource(user, verb, RESOURCE)
        .with_namespace(namespace)
        .with_name(name)
}

/// The attributes of `verb` on keyward's own cluster-scoped `resource` (`raw`, `encryption`,
/// `migrations`; [`verbs`]), `name` ("": none), by `user`.
pub fn keyward_attributes(user: Identity, verb: &str, resource: &str, name: &str) -> Attributes {
    Attributes::resource(user, verb, resource)
        .with_group(verbs::KEYWARD_GROUP)
        .with_name(name)
}

/// The attributes of a token request for the service account `namespace/name`, by `user`.
pub fn token_request_attributes(user: Identity, namespace: &str, name: &str) -> Attributes {
    Attributes::resource(user, kverbs::CREATE, "serviceaccounts")
        .with_subresource("token")
        .with_namespace(namespace)
        .with_name(name)
}

/// A self review: what a caller may do, or who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfReview {
    /// `selfsubjectaccessreviews` (`authorization.k8s.io`): may I do this?
    Access,
    /// `selfsubjectrulesreviews` (`authorization.k8s.io`): what may I do here?
    Rules,
    /// `selfsubjectreviews` (`authentication.k8s.io`): who am I?
    Subject,
}

/// The attributes of a self review (a `create` of its resource), by `user`.
pub fn review_attributes(user: Identity, review: SelfReview) -> Attributes {
    let (resource, group) = match review {
        SelfReview::Access => ("selfsubjectaccessreviews", "authorization.k8s.io"),
        SelfReview::Rules => ("selfsubjectrulesreviews", "authorization.k8s.io"),
        SelfReview::Subject => ("selfsubjectreviews", "authentication.k8s.io"),
    };
    Attributes::resource(user, kverbs::CREATE, resource).with_group(group)
}

impl Access {
    fn secrets(ctx: &RequestContext, verb: &str, namespace: &str, name: &str) -> Attributes {
        secret_attributes(ctx.user.clone(), verb, namespace, name)
    }

    fn keyward(ctx: &RequestContext, verb: &str, resource: &str, name: &str) -> Attributes {
        keyward_attributes(ctx.user.clone(), verb, resource, name)
    }

    /// Creates a Secret (`create secrets` in its namespace). A
    /// `kubernetes.io/service-account-token` Secret is filled by the server, whose signing key is
    /// created first if needed.
    pub async fn create(
        &self,
        ctx: &RequestContext,
        secret: Secret,
        dry_run: bool,
    ) -> Result<Secret, AccessError> {
        let request = |s: &Secret| Some(AuditObject::secret(s));
        self.create_as(ctx, secret, dry_run, kverbs::CREATE, request)
            .await
    }

    async fn create_as(
        &self,
        ctx: &RequestContext,
        secret: Secret,
        dry_run: bool,
        verb: &str,
        request: impl FnOnce(&Secret) -> Option<AuditObject>,
    ) -> Result<Secret, AccessError> {
        let ns = namespace_of(&secret);
        // A create names no object; a patch that creates names its own.
        let name = if verb == kverbs::CREATE {
            ""
        } else {
            secret.metadata.name.as_str()
        };
        let attrs = Self::secrets(ctx, verb, &ns, name);
        let mut rec = self.admit(ctx, &attrs, &[], || request(&secret)).await?;
        let result = self.create_checked(secret, dry_run).await;
        self.finish(ctx, &mut rec, result, 201, secret_body).await
    }

    /// Stores a new Secret; a service account token Secret only where tokens are issued.
    async fn create_checked(&self, secret: Secret, dry_run: bool) -> Result<Secret, AccessError> {
        if !dry_run
            && secret.type_ == crate::authn::legacy::TOKEN_SECRET_TYPE
            // Only for a Secret the store would accept: a refused create changes nothing.
            && Store::prepare_create(&mut secret.clone()).is_ok()
        {
            match &self.service_accounts {
                Some(sa) => {
                    sa.issuer().await?;
                }
                None => {
                    return Err(AccessError::InvalidTokenRequest(
                        "this server does not issue service account tokens".into(),
                    ))
                }
            }
        }
        Ok(self.store.create(secret, dry_run).await?)
    }

    /// Reads a Secret, as of `revision` if given (`get secrets` on the Secret).
    pub async fn get(
        &self,
        ctx: &RequestContext,
        namespace: &Namespace,
        name: &SecretName,
        revision: Option<Revision>,
    ) -> Result<Secret, AccessError> {
        self.get_at(ctx, namespace, name, revision, None).await
    }

    /// The current version of a Secret, read as the Kubernetes API reads one at
    /// `resourceVersion` N (`get secrets` on it): not older than N, so a `FutureRevision` error
    /// (kube-apiserver's 504 `Too large resource version`) if the store has not reached N
    /// within three seconds.
    pub async fn get_not_older_than(
        &self,
        ctx: &RequestContext,
        namespace: &Namespace,
        name: &SecretName,
        min: Revision,
    ) -> Result<Secret, AccessError> {
        self.get_at(ctx, namespace, name, None, Some(min)).await
    }

    async fn get_at(
        &self,
        ctx: &RequestContext,
        namespace: &Namespace,
        name: &SecretName,
        revision: Option<Revision>,
        min: Option<Revision>,
    ) -> Result<Secret, AccessError> {
        let attrs = Self::secrets(ctx, kverbs::GET, namespace.as_str(), name.as_str());
        let call = async {
            if let Some(requested) = min {
                self.reach_revision(requested).await?;
            }
            Ok(self.store.get(namespace, name, revision).await?)
        };
        let respond = |s: &Secret, level| match ctx.answer_view() {
            Some(view) => view.render(crate::access::Answered::Secret(s)),
            None => secret_body(s, level),
        };
        self.guarded(ctx, &attrs, || None, 200, respond, call).await
    }

    /// Reads the stored Secret an update (a PUT) is about to replace, authorized as the update:
    /// kube-apiserver reads the stored object inside the write, so `get` is not needed. The
    /// read is part of the request, not one of its own: a refused read is recorded as the
    /// request's end (403); otherwise the update that follows records the request, or, if none
    /// does, the front end ([`RequestContext::is_recorded`]), so that the audit log has one
    /// event per stage.
    pub async fn read_for_update(
        &self,
        ctx: &RequestContext,
        namespace: &Namespace,
        name: &SecretName,
    ) -> Result<Secret, AccessError> {
        let attrs = Self::secrets(ctx, kverbs::UPDATE, namespace.as_str(), name.as_str());
        self.refuse_if_denied(ctx, &attrs).await?;
        Ok(self.store.get(namespace, name, None).await?)
    }

    /// The retained versions of a Secret (`get secrets` on it: history shows old values).
    pub async fn history(
        &self,
        ctx: &RequestContext,
        namespace: &Namespace,
        name: &SecretName,
    ) -> Result<Vec<HistoryEntry>, AccessError> {
        let attrs = Self::secrets(ctx, kverbs::GET, namespace.as_str(), name.as_str());
        let call = async { Ok(self.store.history(namespace, name).await?) };
        let respond = |h: &Vec<HistoryEntry>, _| {
            Some(AuditObject::secret_list(
                h.iter().map(|e| &e.secret),
                "",
                None,
            ))
        };
        self.guarded(ctx, &attrs, || None, 200, respond, call).await
    }

    /// Replaces a Secret (`update secrets` on it).
    pub async fn update(
        &self,
        ctx: &RequestContext,
        secret: Secret,
        dry_run: bool,
    ) -> Result<Secret, AccessError> {
        let ns = namespace_of(&secret);
        let attrs = Self::secrets(ctx, kverbs::UPDATE, &ns, &secret.metadata.name);
        let mut rec = self
            .admit(ctx, &attrs, &[], || Some(AuditObject::secret(&secret)))
            .await?;
        let result = self.store.update(secret, dry_run).await.map_err(Into::into);
        self.finish(ctx, &mut rec, result, 200, secret_body).await
    }

    /// Patches a Secret (`patch secrets` on it, the read of the stored version included):
    /// `apply` computes the new version from the stored one, which is written with the stored
    /// resourceVersion as precondition. When the Secret changed between the read and the
    /// write (also when it was deleted and created again), the new version is read and patched
    /// again, as kube-apiserver's `GuaranteedUpdate` does, unless the patch set a
    /// resourceVersion of its own (then it is a precondition: 409). The request is authorized
    /// and recorded once, whatever the number of attempts, with `request` (the patch as the
    /// audit log records it) as its request object, whatever the outcome: an absent Secret
    /// (404), a patch that does not apply (`apply`'s error, recorded with the status and body
    /// `recorded_as` gives).
    ///
    /// With `create` (a server-side apply), an absent Secret — at the first read or any later
    /// one — is created from what `create` makes, as kube-apiserver's apply creates on update:
    /// that also needs `create` of that name (refused with its Forbidden: `secrets "NAME" is
    /// forbidden: ` and the authorizer's reason), checked once the object validates (an invalid
    /// one gets its 422 from the store first). When another writer creates it meanwhile, the
    /// apply is made to that one: a lost race is never AlreadyExists. Returns the Secret and
    /// whether this request created it.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch<E: From<AccessError>>(
        &self,
        ctx: &RequestContext,
        namespace: &Namespace,
        name: &SecretName,
        dry_run: bool,
        request: impl FnOnce() -> Option<AuditObject>,
        mut apply: impl FnMut(&Secret) -> Result<Secret, E>,
        mut create: Option<impl FnMut() -> Result<Secret, E>>,
        recorded_as: impl Fn(&E) -> (ResponseStatus, Option<AuditObject>),
    ) -> Result<(Secret, bool), E> {
        let attrs = Self::secrets(ctx, kverbs::PATCH, namespace.as_str(), name.as_str());
        self.refuse_if_denied(ctx, &attrs).await?;
        let mut live = self.store.get(namespace, name, None).await;
        let mut rec = self.admit(ctx, &attrs, &[], request).await?;
        loop {
            let made = match (live, create.as_mut()) {
                (Err(StoreError::NotFound { .. }), Some(create)) => create().map(Next::Create),
                (Err(e), _) => {
                    let result = Err(e.into());
                    let s = self.finish(ctx, &mut rec, result, 200, secret_body).await?;
                    return Ok((s, false));
                }
                (Ok(stored), _) => apply(&stored).map(|patched| {
                    let (next, retry) = rebase(&stored, patched);
                    Next::Update(next, retry)
                }),
            };
            let next = match made {
                Ok(made) => made,
                Err(e) => {
                    let (status, body) = recorded_as(&e);
                    let body = body.filter(|_| rec.level() >= Level::RequestResponse);
                    rec.response_complete(status, body)
                        .await
                        .map_err(super::audit_failed(self.metrics()))?;
                    return Err(e);
                }
            };
            match next {
                Next::Create(new) => match self.create_by_apply(ctx, new, dry_run).await {
                    Err(AccessError::Store(StoreError::AlreadyExists { .. })) => {}
                    result => {
                        let s = self.finish(ctx, &mut rec, result, 201, secret_body).await?;
                        return Ok((s, true));
                    }
                },
                Next::Update(next, retry) => match self.store.update(next, dry_run).await {
                    Err(e) if retry && e.is_modified() => {}
                    // Deleted since it was read: an apply creates it.
                    Err(StoreError::NotFound { .. }) if retry && create.is_some() => {}
                    written => {
                        let result = written.map_err(AccessError::from);
                        let s = self.finish(ctx, &mut rec, result, 200, secret_body).await?;
                        return Ok((s, false));
                    }
                },
            }
            live = self.store.get(namespace, name, None).await;
        }
    }

    /// The create of a server-side apply that found no Secret: also needs `create` of its
    /// name, checked on an object that validates (kube-apiserver validates before it
    /// authorizes the create: an invalid one gets its 422 from the store). A refusal is
    /// counted; the caller records the outcome.
    async fn create_by_apply(
        &self,
        ctx: &RequestContext,
        secret: Secret,
        dry_run: bool,
    ) -> Result<Secret, AccessError> {
        let ns = namespace_of(&secret);
        let create = Self::secrets(ctx, kverbs::CREATE, &ns, &secret.metadata.name);
        let valid = Store::prepare_create(&mut secret.clone()).is_ok();
        if let Some(Decision::Deny { reason }) = valid.then(|| self.policy.authorize(&create)) {
            if let Some(m) = self.metrics() {
                m.authorization_denied(kverbs::CREATE);
            }
            return Err(AccessError::Forbidden(Forbidden::on_create_by_update(
                &create, &reason,
            )));
        }
        self.create_checked(secret, dry_run).await
    }

    /// Writes an earlier version's content as a new version (`update secrets` on it, and `get`:
    /// the answer holds that version's values).
    pub async fn rollback(
        &self,
        ctx: &RequestContext,
        namespace: &Namespace,
        name: &SecretName,
        revision: Revision,
    ) -> Result<Secret, AccessError> {
        let attrs = Self::secrets(ctx, kverbs::UPDATE, namespace.as_str(), name.as_str());
        // It answers the earlier version's values, which only `get` may read.
        let read = [Self::secrets(
            ctx,
            kverbs::GET,
            namespace.as_str(),
            name.as_str(),
        )];
        let mut rec = self.admit(ctx, &attrs, &read, || None).await?;
        let result = self
            .store
            .rollback(namespace, name, revision)
            .await
            .map_err(Into::into);
        self.finish(ctx, &mut rec, result, 200, secret_body).await
    }

    /// Deletes a Secret (`delete secrets` on it; ignoring decrypt errors also needs
    /// `unsafe-delete-ignore-read-errors`); a `dry_run` reads it and checks the preconditions,
    /// and changes nothing. `options` is the request's DeleteOptions as the audit log records
    /// them, if it sent any.
    #[allow(clippy::too_many_arguments)] // every option of a delete request
    pub async fn delete(
        &self,
        ctx: &RequestContext,
        namespace: &Namespace,
        name: &SecretName,
        pre: &Preconditions,
        dry_run: bool,
        options: Option<AuditObject>,
    ) -> Result<Secret, AccessError> {
        let attrs = Self::secrets(ctx, kverbs::DELETE, namespace.as_str(), name.as_str());
        let also: Vec<Attributes> = if pre.unsafe_ignore_decrypt_errors {
            vec![Self::secrets(
                ctx,
                verbs::UNSAFE_DELETE,
                namespace.as_str(),
                name.as_str(),
            )]
        } else {
            Vec::new()
        };
        let mut rec = self.admit(ctx, &attrs, &also, || options).await?;
        let result = if dry_run {
            match self.store.get(namespace, name, None).await {
                Ok(s) => pre.check_secret(&s).map(|()| s),
                Err(e) => Err(e),
            }
        } else {
            self.store.delete(namespace, name, pre).await
        }
        .map_err(Into::into);
        let answer = ctx.deleted_answer();
        let respond = |s: &Secret, level| {
            let status = answer.and_then(|a| (a.status)(s));
            let body = match answer {
                Some(a) if level >= Level::RequestResponse => (a.body)(s),
                _ => secret_body(s, level),
            };
            (status.unwrap_or(ResponseStatus::success(200)), body)
        };
        self.finish_answered(ctx, &mut rec, result, respond).await
    }

    /// Deletes the Secrets of `scope` (one namespace, valid or not) that `selector` and `keep`
    /// select, each with `pre` as its preconditions (`dry_run`: only checked), as
    /// kube-apiserver's `deletecollection`: authorized and recorded once, as that verb. A Secret
    /// deleted meanwhile by someone else is skipped; any other failure stops there and is the
    /// answer (what was deleted before it stays deleted). Answers the Secrets deleted, at the
    /// revision of the list they came from. `options` is the request's DeleteOptions as the
    /// audit log records them, if it sent any.
    #[allow(clippy::too_many_arguments)] // every option of a deletecollection request
    pub async fn delete_collection(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        selector: &Selector,
        keep: impl Fn(&Secret) -> bool,
        pre: &Preconditions,
        dry_run: bool,
        options: Option<AuditObject>,
    ) -> Result<SecretList, AccessError> {
        let attrs = Self::secrets(ctx, kverbs::DELETECOLLECTION, scope.as_str(), "");
        let call = async {
            let mut list = self.store.list(scope.clone(), selector, 0, None).await?;
            // Nothing is deleted unless every Secret in range can be read, as kube-apiserver's
            // deletecollection lists first: one it cannot read would stay behind unnoticed.
            if !list.errors.is_empty() {
                let errors = std::mem::take(&mut list.errors);
                return Err(StoreError::Unreadable { errors }.into());
            }
            // The answer is the list as it was before the deletes (kube-apiserver's
            // DeleteCollection returns the list it took): no item newer than the list.
            let matched: Vec<Arc<Secret>> = list.items.drain(..).filter(|s| keep(s)).collect();
            for s in &matched {
                let result = if dry_run {
                    pre.check_secret(s)
                } else {
                    let id = SecretId::parse(&s.metadata.namespace, &s.metadata.name)
                        .map_err(|e| StoreError::invalid(&s.metadata.name, e))?;
                    self.store
                        .delete(&id.namespace, &id.name, pre)
                        .await
                        .map(drop)
                };
                match result {
                    Ok(()) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(SecretList {
                items: matched,
                continue_token: None,
                ..list
            })
        };
        let respond = |l: &SecretList, level| {
            (level >= Level::RequestResponse).then(|| {
                AuditObject::secret_list(
                    l.items.iter().map(|s| &**s),
                    &l.resource_version.to_string(),
                    None,
                )
            })
        };
        self.guarded(ctx, &attrs, || options, 200, respond, call)
            .await
    }

    /// Lists Secrets (`list secrets` in the namespace, or at the cluster scope for all), at
    /// the revision `at` asks for (see [`ListAt`]). With `count_remaining`, a page with
    /// more after it through an empty `selector` counts them ([`Store::remaining`]), as
    /// kube-apiserver's `remainingItemCount`. The list holds the Secrets `fields` matches; a
    /// field selector that names one Secret (`metadata.name=NAME`) has the list authorized
    /// with that name, so that `resourceNames` can allow it, as kube-apiserver authorizes it.
    #[allow(clippy::too_many_arguments)] // every option of a list request
    pub async fn list(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        selector: &Selector,
        fields: &FieldSelector,
        limit: usize,
        continue_token: Option<&str>,
        at: ListAt,
        count_remaining: bool,
    ) -> Result<SecretList, AccessError> {
        let name = fields.name().unwrap_or("");
        let attrs = Self::secrets(ctx, kverbs::LIST, scope.as_str(), name);
        let call = async {
            let exact = match at {
                ListAt::Exact(r) => Some(r),
                _ => None,
            };
            if let ListAt::NotOlderThan(requested) = at {
                self.reach_revision(requested).await?;
            }
            let keep = |s: &Secret| fields.matches(s);
            let mut list = self
                .store
                .list_matching(
                    scope,
                    selector,
                    keep,
                    fields.name(),
                    limit,
                    continue_token,
                    exact,
                )
                .await?;
            // A list of one name reads that Secret alone in kube-apiserver: another that
            // cannot be read is none of its business.
            if let Some(name) = fields.name() {
                list.errors
                    .retain(|(key, _)| key.rsplit('/').next() == Some(name));
            }
            if ctx.wants_whole_lists() && !list.errors.is_empty() {
                let errors = std::mem::take(&mut list.errors);
                return Err(StoreError::Unreadable { errors }.into());
            }
            if let ListAt::NotOlderThan(requested) = at {
                if requested > list.resource_version {
                    return Err(StoreError::Backend(BackendError::FutureRevision {
                        requested,
                        current: list.resource_version,
                    })
                    .into());
                }
            }
            if let Some(token) = list.continue_token.as_deref() {
                if count_remaining && selector.is_empty() && fields.is_empty() {
                    list.remaining_item_count = Some(self.store.remaining(scope, token).await?);
                }
            }
            Ok(list)
        };
        let respond = |l: &SecretList, level| match ctx.answer_view() {
            Some(view) => view.render(crate::access::Answered::List(l)),
            None => (level >= Level::RequestResponse).then(|| {
                AuditObject::secret_list(
                    l.items.iter().map(|s| &**s),
                    &l.resource_version.to_string(),
                    l.continue_token.as_deref(),
                )
            }),
        };
        self.guarded(ctx, &attrs, || None, 200, respond, call).await
    }

    /// Follows changes (`watch secrets`, as list): allowed or refused as a whole, with
    /// bookmarks among the events if asked ([`Store::watch_with_bookmarks`]). The audit log
    /// gets `ResponseStarted` now and `ResponseComplete` when the stream ends. `fields` filters
    /// and authorizes as in [`Access::list`].
    pub async fn watch(
        &self,
        ctx: &RequestContext,
        scope: &Scope,
        selector: Selector,
        fields: &FieldSelector,
        resource_version: ResourceVersion,
        bookmarks: bool,
    ) -> Result<WatchEvents, AccessError> {
        let name = fields.name().unwrap_or("");
        let attrs = Self::secrets(ctx, kverbs::WATCH, scope.as_str(), name);
        let mut rec = self.admit(ctx, &attrs, &[], || None).await?;
        let events = self
            .store
            .watch_named(
                scope.clone(),
                selector,
                resource_version,
                bookmarks,
                fields.name(),
            )
            .await;
        match events {
            Ok(events) => {
                rec.response_started()
                    .await
                    .map_err(super::audit_failed(self.metrics()))?;
                Ok(Box::pin(AuditedWatch {
                    inner: events,
                    rec: Some(rec),
                    fields: fields.clone(),
                }))
            }
            Err(e) => {
                self.finish(ctx, &mut rec, Err(e.into()), 200, |_: &WatchEvents, _| None)
                    .await
            }
        }
    }

    /// Waits until the store has reached revision `requested`, for at most
    /// [`REVISION_WAIT`] (kube-apiserver's watch cache waits as long for a read "not older
    /// than" a revision it has not seen yet); a `FutureRevision` error if it has not by then.
    async fn reach_revision(&self, requested: Revision) -> Result<(), AccessError> {
        let deadline = tokio::time::Instant::now() + REVISION_WAIT;
        loop {
            let current = self.current_revision().await?;
            if requested <= current {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Backend(BackendError::FutureRevision {
                    requested,
                    current,
                })
                .into());
            }
            tokio::time::sleep(REVISION_POLL).await;
        }
    }

    /// Asks every kms v2 provider's plugin for its Status now (health checks); whether all
    /// answered healthy.
    pub async fn check_kms_now(&self) -> bool {
        self.store.encryption().check_kms_now().await
    }

    /// Health of the store's kms v2 providers, as their last Status poll saw it (health checks).
    pub fn kms_v2_status(&self) -> Vec<crate::encryption::KmsV2Status> {
        self.store.encryption().kms_v2_status()
    }

    /// The store's current revision: the `resourceVersion` of a list of a collection keyward
    /// holds nothing of (Events, Services), from which a watch of it may start. The caller
    /// authorized and records that request.
    pub async fn current_revision(&self) -> Result<Revision, AccessError> {
        Ok(self
            .store
            .backend()
            .current_revision()
            .await
            .map_err(StoreError::from)?)
    }

    /// Follows a collection keyward holds nothing of (`attrs`: a watch of Events or Services):
    /// allowed or refused as any watch, recorded `ResponseStarted` now and `ResponseComplete`
    /// when the stream ends. The stream yields nothing, and ends only when the store stops its
    /// watches (at shutdown).
    pub async fn watch_nothing(
        &self,
        ctx: &RequestContext,
        attrs: &Attributes,
    ) -> Result<WatchEvents, AccessError> {
        let mut rec = self.admit(ctx, attrs, &[], || None).await?;
        rec.response_started()
            .await
            .map_err(super::audit_failed(self.metrics()))?;
        Ok(Box::pin(AuditedWatch {
            inner: self.store.watch_nothing(),
            rec: Some(rec),
            fields: FieldSelector::default(),
        }))
    }

    /// The stored bytes of `key` (`get raw.keyward.io` named the key, cluster scope).
    pub async fn raw_get(
        &self,
        ctx: &RequestContext,
        key: &str,
    ) -> Result<Option<KeyValue>, AccessError> {
        let attrs = Self::keyward(ctx, kverbs::GET, verbs::RAW, key);
        let call = async { Ok(self.store.raw_get(key).await?) };
        self.guarded(ctx, &attrs, || None, 200, |_, _| None, call)
            .await
    }

    /// One page of the stored bytes under `prefix`, within the store's own Secrets (`list
    /// raw.keyward.io`, cluster scope); `continue_token` from the previous page.
    pub async fn raw_list(
        &self,
        ctx: &RequestContext,
        prefix: &str,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<RawPage, AccessError> {
        let attrs = Self::keyward(ctx, kverbs::LIST, verbs::RAW, "");
        let call = async { Ok(self.store.raw_list(prefix, limit, continue_token).await?) };
        self.guarded(ctx, &attrs, || None, 200, |_, _| None, call)
            .await
    }

    /// Encryption coverage (`get encryption.keyward.io`, cluster scope).
    pub async fn encryption_status(
        &self,
        ctx: &RequestContext,
        all_objects: bool,
        include_history: bool,
    ) -> Result<EncryptionStatus, AccessError> {
        let attrs = Self::keyward(ctx, kverbs::GET, verbs::ENCRYPTION, "");
        let call = async {
            let coverage = self.store.encryption_coverage(all_objects).await?;
            let history_kms_key_ids = match include_history {
                true => self.store.history_key_ids().await?,
                false => BTreeMap::new(),
            };
            let t = self.store.encryption().for_resource(RESOURCE);
            let (wp, wk) = t.write_provider();
            Ok(EncryptionStatus {
                coverage,
                write_provider: wp.to_owned(),
                write_key: wk.to_owned(),
                history_kms_key_ids,
            })
        };
        self.guarded(ctx, &attrs, || None, 200, |_, _| None, call)
            .await
    }

    /// Admits a migration (`create migrations.keyward.io`, cluster scope); run it with
    /// [`Migration::run`].
    pub async fn migrate(&self, ctx: &RequestContext) -> Result<Migration, AccessError> {
        let attrs = Self::keyward(ctx, kverbs::CREATE, verbs::MIGRATIONS, "");
        let rec = self.admit(ctx, &attrs, &[], || None).await?;
        Ok(Migration {
            rec,
            error_status: ctx.error_status(),
            store: self.store.clone(),
            metrics: self.metrics().cloned(),
        })
    }

    /// Issues a token for the service account `namespace/name` (`create serviceaccounts/token`
    /// named the service account).
    pub async fn create_token(
        &self,
        ctx: &RequestContext,
        namespace: &str,
        name: &str,
        audiences: Vec<String>,
        expiration: std::time::Duration,
    ) -> Result<IssuedToken, AccessError> {
        let attrs = token_request_attributes(ctx.user.clone(), namespace, name);
        let mut rec = self.admit(ctx, &attrs, &[], || None).await?;
        let result = async {
            let sa = self.service_accounts.as_ref().ok_or_else(|| {
                AccessError::InvalidTokenRequest(
                    "this server does not issue service account tokens".into(),
                )
            })?;
            let issuer = sa.issuer().await?;
            let request = TokenRequest {
                service_account: ServiceAccountRef {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    uid: String::new(),
                },
                audiences,
                expiration: sa.lifetime(expiration),
            };
            issuer
                .issue(&request, SystemTime::now())
                .map_err(|e| AccessError::InvalidTokenRequest(e.to_string()))
        }
        .await;
        if let Ok(t) = &result {
            rec.annotate(
                "authentication.kubernetes.io/issued-credential-id",
                format!("JTI={}", t.jti),
            );
        }
        self.finish(ctx, &mut rec, result, 201, |_, _| None).await
    }

    /// `SelfSubjectAccessReview`: may the caller do what `spec` describes (allowed to every
    /// authenticated identity; recorded). `request` and `respond` give the review as sent and
    /// as answered, for the audit log at levels `Request` and `RequestResponse` (called only
    /// then).
    pub async fn access_review(
        &self,
        ctx: &RequestContext,
        spec: &AccessReviewSpec,
        request: impl FnOnce() -> Option<AuditObject>,
        respond: impl FnOnce(&SubjectAccessReviewStatus) -> Option<AuditObject>,
    ) -> Result<SubjectAccessReviewStatus, AccessError> {
        let mut rec = self.review_admit(ctx, SelfReview::Access, request).await?;
        let status = authz::self_subject_access_review(&*self.policy, &ctx.user, spec);
        self.finish(ctx, &mut rec, Ok(status), 201, |s, _| respond(s))
            .await
    }

    /// The service account token issuer (its signing key created and sealed on first use), if
    /// service account tokens are served. Its public keys are public: reading them needs no
    /// permission of the access layer (the Kubernetes API authorizes the discovery paths).
    pub async fn service_account_issuer(
        &self,
    ) -> Result<Option<Arc<crate::authn::serviceaccount::ServiceAccountIssuer>>, AccessError> {
        match &self.service_accounts {
            Some(sa) => sa.issuer().await.map(Some),
            None => Ok(None),
        }
    }

    /// `SubjectAccessReview`, or in `namespace` a `LocalSubjectAccessReview`: may `subject` (as
    /// given: no group is added) do what `spec` describes. Needs `create` on the review's
    /// resource (`subjectaccessreviews`, or `localsubjectaccessreviews` in the namespace, in
    /// `authorization.k8s.io`); recorded (`request` and `respond` as for
    /// [`Access::access_review`]).
    #[allow(clippy::too_many_arguments)] // the review, and what the audit log keeps of it
    pub async fn subject_access_review(
        &self,
        ctx: &RequestContext,
        namespace: Option<&str>,
        subject: &Identity,
        spec: &AccessReviewSpec,
        request: impl FnOnce() -> Option<AuditObject>,
        respond: impl FnOnce(&SubjectAccessReviewStatus) -> Option<AuditObject>,
    ) -> Result<SubjectAccessReviewStatus, AccessError> {
        let attrs = match namespace {
            Some(ns) => Attributes::resource(
                ctx.user.clone(),
                kverbs::CREATE,
                "localsubjectaccessreviews",
            )
            .with_namespace(ns),
            None => Attributes::resource(ctx.user.clone(), kverbs::CREATE, "subjectaccessreviews"),
        }
        .with_group("authorization.k8s.io");
        let mut rec = self.admit(ctx, &attrs, &[], request).await?;
        let status = authz::self_subject_access_review(&*self.policy, subject, spec);
        self.finish(ctx, &mut rec, Ok(status), 201, |s, _| respond(s))
            .await
    }

    /// `SelfSubjectRulesReview`: the caller's rules in `namespace` (`request` and `respond` as
    /// for [`Access::access_review`]).
    pub async fn rules_review(
        &self,
        ctx: &RequestContext,
        namespace: &str,
        request: impl FnOnce() -> Option<AuditObject>,
        respond: impl FnOnce(&SubjectRulesReviewStatus) -> Option<AuditObject>,
    ) -> Result<SubjectRulesReviewStatus, AccessError> {
        let mut rec = self.review_admit(ctx, SelfReview::Rules, request).await?;
        let result = authz::self_subject_rules_review(&*self.policy, &ctx.user, namespace)
            .map_err(|e| AccessError::BadRequest(e.to_string()));
        self.finish(ctx, &mut rec, result, 201, |s, _| respond(s))
            .await
    }

    /// `SelfSubjectReview`: who the caller is (after impersonation); `request` and `respond` as
    /// for [`Access::access_review`].
    pub async fn whoami(
        &self,
        ctx: &RequestContext,
        request: impl FnOnce() -> Option<AuditObject>,
        respond: impl FnOnce(&Identity) -> Option<AuditObject>,
    ) -> Result<Identity, AccessError> {
        let mut rec = self.review_admit(ctx, SelfReview::Subject, request).await?;
        self.finish(ctx, &mut rec, Ok(ctx.user.clone()), 201, |id, _| {
            respond(id)
        })
        .await
    }

    /// A review is a `create` of its resource, authorized as any request: the bootstrap
    /// ClusterRole `system:basic-user` allows it to every authenticated identity, unless the
    /// policy defines that ClusterRole (or its binding) itself.
    async fn review_admit(
        &self,
        ctx: &RequestContext,
        review: SelfReview,
        request: impl FnOnce() -> Option<AuditObject>,
    ) -> Result<RequestAudit, AccessError> {
        let attrs = review_attributes(ctx.user.clone(), review);
        self.admit(ctx, &attrs, &[], request).await
    }
}

/// The namespace of a Secret as the store defaults it (`default` when empty).
fn namespace_of(s: &Secret) -> String {
    if s.metadata.namespace.is_empty() {
        "default".to_owned()
    } else {
        s.metadata.namespace.clone()
    }
}
