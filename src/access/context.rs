//! Who is asking and from where: the [`RequestContext`] every guarded operation takes, built by
//! a front end once the caller is authenticated (and, if asked, impersonation resolved).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use super::AccessError;
use crate::audit::{AuditObject, Peer, RequestInfo, ResponseStatus};
use crate::authn::Identity;
use crate::store::Secret;

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A Unix-socket connection: the peer's credentials as the kernel reports them.
    Unix {
        /// The peer process's effective uid.
        uid: u32,
        /// The peer process's effective gid.
        gid: u32,
    },
    /// A TCP connection from this address.
    Tcp(SocketAddr),
    /// A caller in this process (benchmarks, tests, the server's own work).
    InProcess,
}

impl Source {
    /// The audit event's view of the source (`sourceIPs` or the peer-uid annotation).
    pub fn peer(self) -> Peer {
        match self {
            Source::Unix { uid, .. } => Peer::Unix { uid },
            Source::Tcp(addr) => Peer::Tcp(addr),
            Source::InProcess => Peer::Unknown,
        }
    }
}

/// What a front end answers a delete that removed (or only marked) a Secret with, as the
/// audit log records it.
#[derive(Debug, Clone, Copy)]
pub struct DeletionAnswer {
    /// The answer's `responseStatus`, if it is a Status object (`None`: the Secret, a plain
    /// success).
    pub status: fn(&Secret) -> Option<ResponseStatus>,
    /// The answer as the response object (kept at level `RequestResponse`).
    pub body: fn(&Secret) -> Option<AuditObject>,
}

/// What a read answered, for [`AnswerView`].
#[derive(Debug, Clone, Copy)]
pub enum Answered<'a> {
    /// One Secret (a get).
    Secret(&'a Secret),
    /// A page of a list.
    List(&'a crate::store::SecretList),
}

/// The form a front end answers a read in when it is not the Secret or SecretList itself (a
/// Kubernetes API Table, or metadata only), so that the audit log records, at level
/// `RequestResponse`, what the client received (kube-apiserver's `LogResponseObject`).
#[derive(Clone)]
pub struct AnswerView(std::sync::Arc<dyn Fn(Answered<'_>) -> Option<AuditObject> + Send + Sync>);

impl AnswerView {
    /// The view that renders an answer with `render`.
    pub fn new(
        render: impl Fn(Answered<'_>) -> Option<AuditObject> + Send + Sync + 'static,
    ) -> Self {
        Self(std::sync::Arc::new(render))
    }

    /// The answer as the client received it.
    pub fn render(&self, answer: Answered<'_>) -> Option<AuditObject> {
        (self.0)(answer)
    }
}

impl std::fmt::Debug for AnswerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerView")
    }
}

/// One request as the access layer sees it: the identity it runs as (after impersonation), the
/// identity that authenticated if it impersonates, its source, and what the audit log records
/// about it. It carries no credential.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The identity the request runs as, is authorized as and is audited as `user` (or, when
    /// impersonating, as `impersonatedUser`).
    pub user: Identity,
    /// When impersonating: the identity that authenticated.
    pub impersonator: Option<Identity>,
    /// Where the request came from.
    pub source: Source,
    /// The audit id the client sent (`audit-id` metadata), if any; a new UUID otherwise.
    pub audit_id: Option<String>,
    /// The client's user agent (not trusted).
    pub user_agent: String,
    /// The request URI; for gRPC the method path, e.g. `/keyward.v1.Secrets/Get`.
    pub request_uri: String,
    /// When the request arrived.
    pub received: SystemTime,
    /// The API version the request names (`objectRef.apiVersion` in the audit log): `v1`
    /// unless a front end reads another from the request (`/apis/GROUP/v1beta1/...`).
    pub api_version: String,
    /// What an HTTP client's `X-Forwarded-For` and `X-Real-Ip` name, for the audit log's
    /// `sourceIPs` ([`crate::audit::forwarded_ips`]).
    pub forwarded_ips: Vec<std::net::IpAddr>,
    /// A long-running request (a watch on the Kubernetes API): its `ResponseStarted` stage is
    /// recorded also when it is refused or fails ([`RequestInfo::long_running`]).
    pub long_running: bool,
    /// Set once the request is in the audit log's hands ([`RequestContext::is_recorded`]).
    recorded: Recorded,
    /// The status a failed request is answered with, as the audit log records it.
    error_status: fn(&AccessError) -> ResponseStatus,
    /// The body a failed request is answered with, for the audit log at level
    /// `RequestResponse` (the Kubernetes API's Status); `None`: no body is recorded.
    error_body: Option<fn(&AccessError) -> Option<AuditObject>>,
    /// How its front end answers a delete, for the audit log ([`DeletionAnswer`]); `None`:
    /// with the deleted Secret.
    deleted_answer: Option<DeletionAnswer>,
    /// The request's object as its front end decoded it, before any check of it
    /// ([`RequestContext::keep_request_object`]).
    request_object: std::sync::OnceLock<AuditObject>,
    /// The form a read is answered in, if not the Secret or list itself.
    answer_view: std::sync::OnceLock<AnswerView>,
    /// A list that meets Secrets it cannot read fails as a whole
    /// ([`RequestContext::failing_partial_lists`]).
    whole_lists: bool,
}

/// Whether the access layer took the request in hand; a clone starts with the value it had.
#[derive(Debug, Default)]
struct Recorded(AtomicBool);

impl Clone for Recorded {
    fn clone(&self) -> Self {
        Recorded(AtomicBool::new(self.0.load(Ordering::Relaxed)))
    }
}

impl RequestContext {
    /// A request of `user` from `source` to `request_uri`, received now, with no user agent,
    /// no audit id and no impersonation.
    pub fn new(user: Identity, source: Source, request_uri: impl Into<String>) -> Self {
        Self {
            user,
            impersonator: None,
            source,
            audit_id: None,
            user_agent: String::new(),
            request_uri: request_uri.into(),
            received: SystemTime::now(),
            api_version: "v1".to_owned(),
            forwarded_ips: Vec::new(),
            long_running: false,
            recorded: Recorded::default(),
            error_status: AccessError::audit_status,
            error_body: None,
            deleted_answer: None,
            request_object: std::sync::OnceLock::new(),
            answer_view: std::sync::OnceLock::new(),
            whole_lists: false,
        }
    }

    /// The same request, a list that meets Secrets it cannot decrypt or decode failing as a
    /// whole ([`crate::store::StoreError::Unreadable`]), as kube-apiserver's does: a client
    /// that gets a list believes it holds every Secret. Without it a list answers the others
    /// and names those (keyward.v1's `ListResponse.errors`).
    pub fn failing_partial_lists(mut self) -> Self {
        self.whole_lists = true;
        self
    }

    /// Whether [`RequestContext::failing_partial_lists`] was asked for.
    pub(super) fn wants_whole_lists(&self) -> bool {
        self.whole_lists
    }

    /// Keeps the request's `object` as its front end decoded it, before checking it: what the
    /// audit log records of the request (`objectRef`'s name, uid and resourceVersion, and the
    /// `requestObject` at level `Request`) whether a check refuses it before the access layer
    /// sees it or not, as kube-apiserver logs the object right after decoding it. The first
    /// object kept stays.
    pub fn keep_request_object(&self, object: AuditObject) {
        // A second object is ignored, as documented.
        let _ = self.request_object.set(object);
    }

    /// The object [`RequestContext::keep_request_object`] kept.
    pub(super) fn request_object(&self) -> Option<AuditObject> {
        self.request_object.get().cloned()
    }

    /// The same request, its errors recorded in the audit log as `status` says its front end
    /// answers them (the Kubernetes API answers some with another code or message than the
    /// gRPC API), so that the log records what the client was told.
    pub fn answering_errors_with(mut self, status: fn(&AccessError) -> ResponseStatus) -> Self {
        self.error_status = status;
        self
    }

    /// The same request, the body its front end answers an error with recorded as the
    /// response object at level `RequestResponse` (kube-apiserver logs the Status it writes).
    pub fn recording_error_bodies(mut self, body: fn(&AccessError) -> Option<AuditObject>) -> Self {
        self.error_body = Some(body);
        self
    }

    /// The same request, a delete recorded with what its front end answers it with
    /// (kube-apiserver answers a Secret's delete with a Success Status, not the object, and
    /// records that Status in `responseStatus`).
    pub fn recording_deletions_as(mut self, answer: DeletionAnswer) -> Self {
        self.deleted_answer = Some(answer);
        self
    }

    /// The same request, a read (get or list) recorded as `view` renders its answer: the form
    /// the client asked for (a Table, metadata only). The first view given is kept.
    pub fn answering_reads_as(&self, view: AnswerView) {
        let _ = self.answer_view.set(view);
    }

    /// The form a read is answered in, if its front end said.
    pub(super) fn answer_view(&self) -> Option<&AnswerView> {
        self.answer_view.get()
    }

    /// How a delete's answer is recorded, if its front end said.
    pub(super) fn deleted_answer(&self) -> Option<DeletionAnswer> {
        self.deleted_answer
    }

    /// How a request that failed is recorded.
    pub(super) fn error_status(&self) -> fn(&AccessError) -> ResponseStatus {
        self.error_status
    }

    /// The response object a failed request is recorded with, if its front end gave one.
    pub(super) fn error_body(&self, e: &AccessError) -> Option<AuditObject> {
        self.error_body.and_then(|f| f(e))
    }

    /// Whether an operation of the access layer has taken the request in hand: authorized it
    /// and begun its audit record (then it also records how it ends). A front end records a
    /// request that none reached, or that it answered alone, itself
    /// ([`Access::record`](super::Access::record)).
    pub fn is_recorded(&self) -> bool {
        self.recorded.0.load(Ordering::Relaxed)
    }

    pub(super) fn mark_recorded(&self) {
        self.recorded.0.store(true, Ordering::Relaxed);
    }

    /// The same request running as `user` on behalf of the current identity (impersonation).
    pub fn acting_as(mut self, user: Identity) -> Self {
        let original = std::mem::replace(&mut self.user, user);
        self.impersonator = Some(original);
        self
    }

    /// What the audit log needs beyond the request's attributes.
    pub(crate) fn audit_info(&self) -> RequestInfo {
        let mut info = RequestInfo::new(self.request_uri.clone(), self.source.peer());
        info.audit_id = self.audit_id.clone();
        info.user_agent = self.user_agent.clone();
        info.impersonator = self.impersonator.clone();
        info.received = self.received;
        info.api_version.clone_from(&self.api_version);
        info.forwarded_ips.clone_from(&self.forwarded_ips);
        info.long_running = self.long_running;
        info
    }
}
