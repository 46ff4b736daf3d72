//! The per-request recorder the access layer calls: [`Auditor::begin`] evaluates the policy
//! once, then [`RequestAudit`] writes one event per stage (`request_received`,
//! `response_started`, `response_complete`, `panic`), skipping omitted stages and everything at
//! level `None`, and attaching request and response objects only at the levels that include
//! them.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::chain::PEER_UID_ANNOTATION;
use super::event::{
    Event, EventStart, Level, MicroTime, ObjectReference, Peer, ResponseStatus, Stage, UserInfo,
    DECISION_ANNOTATION, REASON_ANNOTATION,
};
use super::object::AuditObject;
use super::policy::{Policy, RequestAuditConfig};
use super::AuditError;
use crate::authn::Identity;
use crate::authz::{Attributes, Decision};

/// Longest `userAgent` kept, in bytes; longer ones are cut and marked, as kube-apiserver does.
const MAX_USER_AGENT: usize = 1024;
const USER_AGENT_TRUNCATED: &str = "...TRUNCATED";

/// Where events go: the [`AuditLog`](super::AuditLog), or a [`MemorySink`] in tests.
#[async_trait::async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Records `event`; returns once it is durable. An error means the request it describes
    /// must not proceed.
    async fn write(&self, event: Event) -> Result<(), AuditError>;

    /// Records `events` in order at once if that needs no waiting (a log in batch mode with
    /// room in its queue): `Some` with what [`AuditSink::write_all`] would return, `None` to
    /// call it. Saves a request the boxed future of `write_all`.
    fn write_now(&self, events: &[Event]) -> Option<Result<(), AuditError>> {
        let _ = events;
        None
    }

    /// Records `events` in order; returns once all are durable. The log writes them with one
    /// sync.
    async fn write_all(&self, events: Vec<Event>) -> Result<(), AuditError> {
        for e in events {
            self.write(e).await?;
        }
        Ok(())
    }

    /// Counts `events` events that could not be written (`why`) although their request went on:
    /// a log records them in a `lost` line as soon as it can be written again.
    fn lost(&self, events: u64, why: &AuditError) {
        let _ = (events, why);
    }
}

/// A sink that keeps events in memory (tests), and can be told to fail.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<Event>>,
    failing: AtomicBool,
    lost: AtomicU64,
    /// Writes that succeed before every later one fails (`None`: no limit).
    writes_left: Mutex<Option<usize>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events written so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes every later write fail (`true`) or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Lets `writes` more writes succeed, then fails every later one (a disk filling up).
    pub fn fail_after(&self, writes: usize) {
        *self.writes_left.lock().unwrap_or_else(|e| e.into_inner()) = Some(writes);
    }

    /// Events counted as lost ([`AuditSink::lost`]).
    pub fn lost_events(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl AuditSink for MemorySink {
    async fn write(&self, event: Event) -> Result<(), AuditError> {
        let exhausted = match &mut *self.writes_left.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(0) => true,
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        };
        if exhausted || self.failing.load(Ordering::Relaxed) {
            return Err(AuditError::Write {
                path: "memory".into(),
                source: std::io::Error::other("the sink is set to fail"),
            });
        }
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
        Ok(())
    }

    fn lost(&self, events: u64, _why: &AuditError) {
        self.lost.fetch_add(events, Ordering::Relaxed);
    }
}

/// What the front end knows about a request beyond its [`Attributes`].
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The audit id the client sent (`Audit-ID` header), if any; a new UUID otherwise.
    pub audit_id: Option<String>,
    /// The request URI; for gRPC the method path, e.g. `/keyward.v1.Secrets/Get`.
    pub request_uri: String,
    /// `objectRef.apiVersion` of resource requests, e.g. `v1`.
    pub api_version: String,
    /// Where the request came from.
    pub peer: Peer,
    /// The addresses an HTTP client's `X-Forwarded-For` and `X-Real-Ip` headers name (claimed,
    /// not checked), which kube-apiserver records in `sourceIPs` before the peer's.
    pub forwarded_ips: Vec<std::net::IpAddr>,
    /// The client's user agent (not trusted; cut at 1024 bytes).
    pub user_agent: String,
    /// When the request impersonates `attrs.user`: the identity that authenticated. It is the
    /// event's `user` (and the policy matches it); `attrs.user` becomes `impersonatedUser`.
    pub impersonator: Option<Identity>,
    /// When the request was received.
    pub received: SystemTime,
    /// A long-running request (a watch on the Kubernetes API): as kube-apiserver, its
    /// `ResponseStarted` stage is recorded whenever its answer starts, also for an error.
    pub long_running: bool,
}

impl RequestInfo {
    /// A request to `request_uri` from `peer`, received now, `apiVersion` `v1`, no user agent,
    /// no impersonation.
    pub fn new(request_uri: impl Into<String>, peer: Peer) -> Self {
        Self {
            audit_id: None,
            request_uri: request_uri.into(),
            api_version: "v1".into(),
            peer,
            forwarded_ips: Vec::new(),
            user_agent: String::new(),
            impersonator: None,
            received: SystemTime::now(),
            long_running: false,
        }
    }
}

/// `sourceIPs` as kube-apiserver's `utilnet.SourceIPs` makes it: the forwarded addresses, then
/// the peer's unless it is the last of them.
fn source_ips(forwarded: &[std::net::IpAddr], peer: std::net::IpAddr) -> Vec<String> {
    let peer = peer.to_canonical();
    let mut ips: Vec<String> = forwarded
        .iter()
        .map(|ip| ip.to_canonical().to_string())
        .collect();
    if forwarded.last().map(|ip| ip.to_canonical()) != Some(peer) {
        ips.push(peer.to_string());
    }
    ips
}

/// The addresses of `X-Forwarded-For` (each valid one of its comma-separated list) and of
/// `X-Real-Ip` (if valid and not among them), as kube-apiserver reads them for `sourceIPs`.
pub fn forwarded_ips(forwarded_for: Option<&str>, real_ip: Option<&str>) -> Vec<std::net::IpAddr> {
    let mut ips: Vec<std::net::IpAddr> = forwarded_for
        .unwrap_or("")
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    if let Some(ip) = real_ip.and_then(|r| r.trim().parse().ok()) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

/// The policy and the sink: what the access layer holds.
#[derive(Clone)]
pub struct Auditor {
    policy: Option<Arc<Policy>>,
    sink: Option<Arc<dyn AuditSink>>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl Auditor {
    /// Records requests as `policy` says, to `sink`.
    pub fn new(policy: Policy, sink: Arc<dyn AuditSink>) -> Self {
        Self {
            policy: Some(Arc::new(policy)),
            sink: Some(sink),
        }
    }

    /// Records nothing (no `--audit-policy-file`, as kube-apiserver).
    pub fn disabled() -> Self {
        Self {
            policy: None,
            sink: None,
        }
    }

    /// Whether anything can be recorded.
    pub fn is_enabled(&self) -> bool {
        self.policy.is_some()
    }

    /// Starts recording the request `attrs` describes.
    pub fn begin(&self, attrs: &Attributes, mut info: RequestInfo) -> RequestAudit {
        let audit_id = info.audit_id.take().unwrap_or_else(new_audit_id);
        let authenticated = info.impersonator.as_ref().unwrap_or(&attrs.user);
        let config = match &self.policy {
            Some(p) => p.evaluate(authenticated, attrs),
            None => RequestAuditConfig::NONE,
        };
        let sink = match &self.sink {
            Some(s) if config.level > Level::None => s.clone(),
            _ => return RequestAudit::inert(audit_id),
        };
        let mut annotations = super::event::Annotations::new();
        for (key, value) in &authenticated.audit_annotations {
            annotations.insert((*key).into(), value.clone().into());
        }
        let source_ips = match info.peer {
            Peer::Tcp(addr) => source_ips(&info.forwarded_ips, addr.ip()),
            Peer::Unix { uid } => {
                annotations.insert(PEER_UID_ANNOTATION.into(), uid.to_string().into());
                Vec::new()
            }
            Peer::Unknown => Vec::new(),
        };
        let ((user, user_json), impersonated_user) = match &info.impersonator {
            Some(original) => (
                UserInfo::shared(original),
                Some(UserInfo::from(&attrs.user)),
            ),
            None => (UserInfo::shared(&attrs.user), None),
        };
        let object_ref = attrs.is_resource_request().then(|| ObjectReference {
            resource: attrs.resource.clone(),
            namespace: attrs.namespace.clone(),
            name: attrs.name.clone(),
            api_group: attrs.api_group.clone(),
            api_version: std::mem::take(&mut info.api_version),
            subresource: attrs.subresource.clone(),
            ..Default::default()
        });
        let event = Event::start(EventStart {
            level: config.level,
            audit_id,
            request_uri: info.request_uri,
            verb: attrs.verb.clone(),
            user,
            user_json: Some(user_json),
            impersonated_user,
            source_ips,
            user_agent: truncate_user_agent(info.user_agent),
            object_ref,
            received: MicroTime(info.received),
            annotations,
        });
        RequestAudit {
            sink: Some(sink),
            config,
            audit_id: String::new(),
            template: Some(event),
            resource_request: attrs.is_resource_request(),
            secrets: attrs.is_resource_request()
                && attrs.api_group.is_empty()
                && attrs.resource == "secrets",
            request_object: None,
            defer_received: false,
            pending: None,
            lost: false,
            long_running: info.long_running,
            started: false,
        }
    }
}

/// A random (version 4) UUID, from the thread's pool of public randomness: an audit id is
/// unique, not secret.
pub fn new_audit_id() -> String {
    let mut bytes = [0u8; 16];
    let id = match crate::crypto::fill_public_random(&mut bytes) {
        Ok(()) => uuid::Builder::from_random_bytes(bytes).into_uuid(),
        Err(_) => uuid::Uuid::new_v4(),
    };
    // Written into a buffer, not through `fmt` (every request makes one).
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut text).to_owned()
}

fn truncate_user_agent(mut ua: String) -> String {
    if ua.len() > MAX_USER_AGENT {
        let mut cut = MAX_USER_AGENT;
        while !ua.is_char_boundary(cut) {
            cut -= 1;
        }
        ua.truncate(cut);
        ua.push_str(USER_AGENT_TRUNCATED);
    }
    ua
}

/// One request being recorded: one call per stage. At level `None` every call does nothing.
#[derive(Debug)]
pub struct RequestAudit {
    sink: Option<Arc<dyn AuditSink>>,
    config: RequestAuditConfig,
    /// The audit id of a request that records nothing (the template holds the others').
    audit_id: String,
    template: Option<Event>,
    resource_request: bool,
    secrets: bool,
    request_object: Option<AuditObject>,
    /// Whether `RequestReceived` waits to be written with the next event.
    defer_received: bool,
    /// A `RequestReceived` event made but not yet written.
    pending: Option<Event>,
    /// The `ResponseComplete` event could not be written, and the request's outcome stood.
    lost: bool,
    /// [`RequestInfo::long_running`].
    long_running: bool,
    /// Whether `ResponseStarted` was recorded.
    started: bool,
}

impl std::fmt::Debug for dyn AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditSink")
    }
}

impl RequestAudit {
    fn inert(audit_id: String) -> Self {
        Self {
            sink: None,
            config: RequestAuditConfig::NONE,
            audit_id,
            template: None,
            resource_request: false,
            secrets: false,
            request_object: None,
            defer_received: false,
            pending: None,
            lost: false,
            long_running: false,
            started: false,
        }
    }

    /// Makes [`RequestAudit::request_received`] keep its event and write it together with the
    /// next stage's, in one sync. Only for requests that change nothing before their next
    /// stage is recorded (reads, refusals): the response still waits for both events, but a
    /// request cancelled before then leaves no record.
    pub fn defer_request_received(&mut self) {
        self.defer_received = true;
    }

    /// Whether the `ResponseComplete` event could not be written although the request's outcome
    /// stood (see [`RequestAudit::response_complete`]).
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// The level the policy chose.
    pub fn level(&self) -> Level {
        self.config.level
    }

    /// The request's audit id (echo it to the client as `Audit-ID`).
    pub fn audit_id(&self) -> &str {
        match &self.template {
            Some(t) => t.audit_id(),
            None => &self.audit_id,
        }
    }

    /// Adds an annotation to this and every later event of the request. The chain
    /// annotations (`keyward.io/chain`, `keyward.io/seq`, ...) are the writer's and are
    /// replaced or removed when the event is written.
    pub fn annotate(
        &mut self,
        key: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) {
        if let Some(t) = &mut self.template {
            t.annotations_mut().insert(key.into(), value.into());
        }
    }

    /// Stage `RequestReceived`, then the authorization decision (annotations
    /// `authorization.k8s.io/decision` = `allow` | `forbid` and `authorization.k8s.io/reason`)
    /// for the later stages, as kube-apiserver writes its `RequestReceived` before it authorizes;
    /// keeps the request body for the later stages (at level `Request` and above). Call it
    /// before acting on the request; an error means the request must be refused.
    pub async fn request_received(
        &mut self,
        decision: &Decision,
        request_object: Option<AuditObject>,
    ) -> Result<(), AuditError> {
        let (value, reason) = match decision {
            Decision::Allow { reason } => ("allow", reason),
            Decision::Deny { reason } => ("forbid", reason),
        };
        self.emit(Stage::RequestReceived, None, None).await?;
        self.annotate(DECISION_ANNOTATION, value);
        self.annotate(REASON_ANNOTATION, reason.clone());
        if let Some(obj) = request_object.and_then(|o| self.reduce(o)) {
            if self.config.level >= Level::Request {
                self.fill_object_ref(obj.name_uid_and_resource_version());
                self.request_object = Some(obj);
            } else {
                self.fill_object_ref(obj.into_name_uid_and_resource_version());
            }
        }
        Ok(())
    }

    /// The request was refused before it was authorized, as kube-apiserver's impersonation
    /// filter refuses an impersonation the caller may not make before its authorization filter
    /// runs: stages `RequestReceived` and `ResponseComplete` (written together) with `status`,
    /// the answer's `body` (kept at level `RequestResponse`) and no authorization annotations.
    pub async fn refused_before_authorization(
        &mut self,
        status: ResponseStatus,
        body: Option<AuditObject>,
    ) -> Result<(), AuditError> {
        self.defer_received = true;
        self.emit(Stage::RequestReceived, None, None).await?;
        self.response_complete(status, body).await
    }

    /// Stage `ResponseStarted` (long-running requests such as watch), status 200.
    pub async fn response_started(&mut self) -> Result<(), AuditError> {
        self.started = true;
        self.emit(
            Stage::ResponseStarted,
            Some(ResponseStatus::success(200)),
            None,
        )
        .await
    }

    /// Stage `ResponseComplete`, with the response's status and body (the body is kept at level
    /// `RequestResponse` only; as kube-apiserver's, `objectRef` takes nothing from it: its uid
    /// and resourceVersion come from the request's body alone).
    ///
    /// An error means the request must be refused; it comes only for a request that has not
    /// acted yet (its `RequestReceived` deferred: a read or a refusal). The outcome of one that
    /// may have acted (a write) stands whatever happens to this event, as in kube-apiserver,
    /// which refuses a request only when its `RequestReceived` cannot be stored: an event that
    /// cannot be written then is logged and counted as lost (the log records the loss).
    pub async fn response_complete(
        &mut self,
        status: ResponseStatus,
        response_object: Option<AuditObject>,
    ) -> Result<(), AuditError> {
        let obj = response_object
            .filter(|_| self.config.level >= Level::RequestResponse)
            .and_then(|o| self.reduce(o));
        // A long-running request that ends before it started answering (refused, or failed)
        // starts and completes with its answer, as kube-apiserver records it.
        let started = match self.long_running && !std::mem::replace(&mut self.started, true) {
            true => {
                self.emit(Stage::ResponseStarted, Some(status.clone()), obj.clone())
                    .await
            }
            false => Ok(()),
        };
        let written = match started {
            Ok(()) => self.emit(Stage::ResponseComplete, Some(status), obj).await,
            Err(e) => Err(e),
        };
        match written {
            Err(e) if !self.defer_received => {
                tracing::error!(error = %e, audit_id = self.audit_id(), "the ResponseComplete event of a request that had already acted was not written; its outcome is answered");
                if let Some(sink) = &self.sink {
                    sink.lost(1, &e);
                }
                self.lost = true;
                Ok(())
            }
            written => written,
        }
    }

    /// The request's credentials were refused: one event at stage `ResponseStarted` with a
    /// 401 status whose message says what was attempted (kube-apiserver's failed-authentication
    /// audit). Begin such a request with an empty user. The request is refused whatever
    /// happens here, so an event that cannot be written is also counted as lost (the log
    /// records the loss once it can be written again); the error is returned to be logged.
    pub async fn authentication_failed(&mut self, message: &str) -> Result<(), AuditError> {
        let written = self
            .emit(
                Stage::ResponseStarted,
                Some(ResponseStatus::unauthenticated(message)),
                None,
            )
            .await;
        if let (Err(e), Some(sink)) = (&written, &self.sink) {
            sink.lost(1, e);
        }
        written
    }

    /// Stage `Panic`: handling the request panicked with `message`.
    pub async fn panic(&mut self, message: &str) -> Result<(), AuditError> {
        let status = ResponseStatus::failure(
            crate::reason::Reason::InternalError,
            format!("APIServer panic'd: {message}"),
        );
        self.emit(Stage::Panic, Some(status), None).await
    }

    /// The object as this request may log it; `None` for non-resource requests.
    fn reduce(&self, obj: AuditObject) -> Option<AuditObject> {
        if !self.resource_request {
            return None;
        }
        let obj = if self.secrets { obj.for_secrets() } else { obj };
        Some(if self.config.omit_managed_fields {
            obj.without_managed_fields()
        } else {
            obj
        })
    }

    /// Fills the `objectRef` fields the request left empty from its object's `[name, uid,
    /// resourceVersion]`.
    fn fill_object_ref(&mut self, [name, uid, rv]: [String; 3]) {
        let fills = |r: &ObjectReference| {
            (r.name.is_empty() && !name.is_empty())
                || (r.uid.is_empty() && !uid.is_empty())
                || (r.resource_version.is_empty() && !rv.is_empty())
        };
        // Copied only if something changes (another stage's event may share it).
        if !self
            .template
            .as_ref()
            .and_then(Event::object_ref)
            .is_some_and(fills)
        {
            return;
        }
        if let Some(r) = self.template.as_mut().and_then(Event::object_ref_mut) {
            // A create names its object in its body (or gets a generated name).
            if r.name.is_empty() {
                r.name = name;
            }
            if r.uid.is_empty() {
                r.uid = uid;
            }
            if r.resource_version.is_empty() {
                r.resource_version = rv;
            }
        }
    }

    async fn emit(
        &mut self,
        stage: Stage,
        status: Option<ResponseStatus>,
        response_object: Option<AuditObject>,
    ) -> Result<(), AuditError> {
        let (Some(sink), Some(template)) = (&self.sink, &self.template) else {
            return Ok(());
        };
        if self.config.omit_stages.contains(stage) {
            return match self.pending.take() {
                Some(received) => record(&**sink, [received]).await,
                None => Ok(()),
            };
        }
        let request_object = match stage {
            Stage::RequestReceived => None,
            _ => self.request_object.clone(),
        };
        // RequestReceived is stamped when the request was received, as kube-apiserver's
        // `ProcessEventStage` stamps it.
        let now = match stage {
            Stage::RequestReceived => template.request_received(),
            _ => MicroTime::now(),
        };
        let event = template.at_stage(stage, now, status, request_object, response_object);
        if stage == Stage::RequestReceived && self.defer_received {
            self.pending = Some(event);
            return Ok(());
        }
        match self.pending.take() {
            Some(received) => record(&**sink, [received, event]).await,
            None => record(&**sink, [event]).await,
        }
    }
}

/// Writes `events` in order through `sink`: at once if it takes them without waiting
/// ([`AuditSink::write_now`]), else through its (boxed) `write_all`.
async fn record<const N: usize>(
    sink: &dyn AuditSink,
    events: [Event; N],
) -> Result<(), AuditError> {
    match sink.write_now(&events) {
        Some(written) => written,
        None => sink.write_all(events.into()).await,
    }
}

#[cfg(test)]
mod tests;
