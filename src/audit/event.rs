//! The `audit.k8s.io/v1` Event and its parts, serialised exactly as kube-apiserver writes them:
//! the same field names, the same field order, the same omitted empty fields, and timestamps in
//! `metav1.MicroTime` format (`2006-01-02T15:04:05.000000Z`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::object::AuditObject;
use crate::authn::Identity;
use crate::reason::Reason;

mod json;

pub(super) use json::decimal;

/// Audit annotation: `allow` or `forbid`, as kube-apiserver's authorization filter sets it.
pub const DECISION_ANNOTATION: &str = "authorization.k8s.io/decision";
/// Audit annotation: the authorizer's reason for its decision.
pub const REASON_ANNOTATION: &str = "authorization.k8s.io/reason";

/// An event's annotations, in key order. Keys (and most values) are constants: borrowed, not
/// copied per request.
pub type Annotations = BTreeMap<Cow<'static, str>, Cow<'static, str>>;

/// How much of a request is recorded; ordered from nothing to everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    /// Nothing.
    None,
    /// User, verb, object reference, timestamps, response status, annotations.
    Metadata,
    /// Metadata and the request object (resource requests only).
    Request,
    /// Request and the response object (resource requests only).
    RequestResponse,
}

impl Level {
    /// Every level, from `None` to `RequestResponse`.
    pub const ALL: [Level; 4] = [
        Level::None,
        Level::Metadata,
        Level::Request,
        Level::RequestResponse,
    ];

    /// The name as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When in a request's life an event is generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Stage {
    /// As soon as the request is received, before it is acted on.
    RequestReceived,
    /// Response headers sent, body not yet (long-running requests such as watch).
    ResponseStarted,
    /// The response is complete.
    ResponseComplete,
    /// Handling the request panicked.
    Panic,
}

impl Stage {
    /// Every stage, in request order.
    pub const ALL: [Stage; 4] = [
        Stage::RequestReceived,
        Stage::ResponseStarted,
        Stage::ResponseComplete,
        Stage::Panic,
    ];

    /// The name as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point in time, serialised as `metav1.MicroTime` (RFC 3339 in UTC with microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MicroTime(pub SystemTime);

impl MicroTime {
    /// Now.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for times from 1970 to 9999, written without allocating
    /// (every event carries two); `None` outside that range.
    fn text(&self) -> Option<[u8; 27]> {
        thread_local! {
            /// The last second this thread wrote and its text: the events of one second share it.
            static LAST: std::cell::Cell<Option<(u64, [u8; 27])>> = const { std::cell::Cell::new(None) };
        }
        let since = self.0.duration_since(std::time::UNIX_EPOCH).ok()?;
        let secs = since.as_secs();
        let mut out = match LAST.with(std::cell::Cell::get) {
            Some((s, text)) if s == secs => text,
            _ => {
                let text = Self::second_text(secs)?;
                LAST.with(|last| last.set(Some((secs, text))));
                text
            }
        };
        let mut micros = since.subsec_micros();
        for digit in out[20..26].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        Some(out)
    }

    /// `YYYY-MM-DDTHH:MM:SS.000000Z` for `secs` after the epoch; `None` from the year 10000.
    fn second_text(secs: u64) -> Option<[u8; 27]> {
        let days = secs / 86_400;
        if days >= 2_932_897 {
            return None; // 10000-01-01
        }
        let (year, month, day) = crate::go_time::civil_from_days(i64::try_from(days).ok()?);
        let (year, month, day) = (
            u64::try_from(year).ok()?,
            u64::try_from(month).ok()?,
            u64::try_from(day).ok()?,
        );
        let rem = secs % 86_400;
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, rem / 3600);
        put(14, 2, rem / 60 % 60);
        put(17, 2, rem % 60);
        Some(out)
    }
}

impl fmt::Display for MicroTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            // Only ASCII digits and separators are written.
            Some(text) => f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?),
            None => write!(f, "{}", humantime::format_rfc3339_micros(self.0)),
        }
    }
}

impl Serialize for MicroTime {
    /// Through [`Display`](fmt::Display), which writes the text in one piece (serde_json
    /// escapes it as it goes, without a `String` in between).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP connection: the remote address goes to `sourceIPs` (the IP only, as upstream).
    Tcp(SocketAddr),
    /// A Unix-socket connection: there is no IP, so `sourceIPs` stays empty and the peer's uid
    /// (from its socket credentials) goes to the annotation `keyward.io/peer-uid`.
    Unix {
        /// The peer process's uid.
        uid: u32,
    },
    /// Unknown (in-process callers, tests).
    Unknown,
}

/// `authentication/v1` UserInfo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// The user name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// The user's uid.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Extra attributes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl From<&Identity> for UserInfo {
    fn from(id: &Identity) -> Self {
        Self {
            username: id.name.clone(),
            uid: id.uid.clone(),
            groups: id.groups.clone(),
            extra: id.extra.clone(),
        }
    }
}

/// How many users each thread keeps made for [`UserInfo::shared`].
const RECENT_USERS: usize = 4;

/// A `UserInfo` shared by many events, with its JSON object as events write it.
pub(super) type SharedUser = (Arc<UserInfo>, Arc<[u8]>);

thread_local! {
    /// The users this thread made events for last, most recent first.
    static RECENT: std::cell::RefCell<[Option<SharedUser>; RECENT_USERS]> =
        const { std::cell::RefCell::new([None, None, None, None]) };
}

impl UserInfo {
    /// `id` as a `UserInfo` shared by the events of every request it makes, with its JSON: a
    /// caller making request after request gets the one this thread made last instead of a
    /// copy of its name, groups and extra attributes per request, and its events copy the
    /// object instead of escaping it again.
    pub(super) fn shared(id: &Identity) -> SharedUser {
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some(u) = recent.iter().flatten().find(|(u, _)| u.is(id)) {
                return u.clone();
            }
            let user = UserInfo::from(id);
            let mut json = Vec::new();
            json::user_info(&mut json, &user);
            let u: SharedUser = (Arc::new(user), json.into());
            recent.rotate_right(1);
            recent[0] = Some(u.clone());
            u
        })
    }

    fn is(&self, id: &Identity) -> bool {
        self.username == id.name
            && self.uid == id.uid
            && self.groups == id.groups
            && self.extra == id.extra
    }
}

/// The object a request is about (`objectRef`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// Resource, e.g. `secrets`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// Namespace.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The object's uid.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// API group ("" for core).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// API version, e.g. `v1`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// The object's resourceVersion.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Subresource.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// `metav1.Status` as an audit event's `responseStatus`: success carries only the code
/// (`{"metadata":{},"code":200}`), failure also `status: Failure`, message, reason and, when
/// the answer had them, its `details` (kube-apiserver's `LogResponseObject` copies them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseStatus {
    metadata: Empty,
    #[serde(skip_serializing_if = "str::is_empty")]
    status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<RawJson>,
    code: u16,
}

/// A JSON object kept as the text it was written as (a `responseStatus.details`, a Status
/// response body), so that its fields stay in kube-apiserver's order.
#[derive(Debug, Clone)]
pub(crate) struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    /// `text` if it is a JSON object.
    pub(crate) fn object(text: String) -> Option<Self> {
        if !text.trim_start().starts_with('{') {
            return None;
        }
        serde_json::value::RawValue::from_string(text)
            .ok()
            .map(RawJson)
    }

    /// The JSON text.
    pub(crate) fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Empty {}

impl ResponseStatus {
    /// A successful response with HTTP status `code` (200, 201).
    pub fn success(code: u16) -> Self {
        Self::bare(code)
    }

    /// A success answered with a `Status` object (a delete's `Success`): its `status` and
    /// `details` (the JSON text of a `metav1.StatusDetails`: name, kind, uid) as
    /// kube-apiserver's `LogResponseObject` copies them.
    pub fn success_status(code: u16, details: Option<String>) -> Self {
        Self {
            status: "Success",
            details: details.and_then(RawJson::object),
            ..Self::bare(code)
        }
    }

    /// A response known only by its HTTP status `code`: a success, or a failure answered
    /// without a Status object (kube-apiserver's `http.Error` answers, which it records with
    /// their code alone).
    pub fn bare(code: u16) -> Self {
        Self {
            metadata: Empty {},
            status: "",
            message: String::new(),
            reason: "",
            details: None,
            code,
        }
    }

    /// A failed response: the code is the one Kubernetes uses for `reason` (404 NotFound, 403
    /// Forbidden, 409 Conflict, 503 ServiceUnavailable...). `message` must not hold a secret.
    pub fn failure(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            metadata: Empty {},
            status: "Failure",
            message: message.into(),
            reason: reason.as_str(),
            details: None,
            code: reason.http_code(),
        }
    }

    /// A response with HTTP status `code`: a success below 400, else a failure with `reason`
    /// (a `metav1.StatusReason`, e.g. `NotAcceptable`) and `message`, which must not hold a
    /// secret.
    pub fn of(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        if code < 400 {
            return Self::success(code);
        }
        Self {
            metadata: Empty {},
            status: "Failure",
            message: message.into(),
            reason,
            details: None,
            code,
        }
    }

    /// A refused authentication (401), as kube-apiserver records it: only the message (what
    /// was attempted) and the code.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self {
            metadata: Empty {},
            status: "",
            message: message.into(),
            reason: "",
            details: None,
            code: 401,
        }
    }

    /// The same failure with the answer's `details`: the JSON text of a `metav1.StatusDetails`
    /// object (name, group, kind, uid, causes; none of which may hold a secret), kept even
    /// when empty (`{}`), as kube-apiserver copies a Status's details. A success or text that
    /// is not a JSON object keeps none.
    pub fn with_details(mut self, details: String) -> Self {
        if self.code >= 400 {
            self.details = RawJson::object(details);
        }
        self
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.code
    }
}

/// One `audit.k8s.io/v1` Event. Built only by [`RequestAudit`](super::RequestAudit), so that
/// request and response objects always pass through [`AuditObject`]'s reduction; read it
/// through the accessors or as JSON. The fields every stage of a request shares are kept once
/// (`Arc`), so that making the next stage's event copies only what changes.
#[derive(Debug, Clone)]
pub struct Event {
    common: Arc<Common>,
    stage: Stage,
    object_ref: Option<Arc<ObjectReference>>,
    response_status: Option<ResponseStatus>,
    request_object: Option<AuditObject>,
    response_object: Option<AuditObject>,
    stage_timestamp: MicroTime,
    pub(super) annotations: Arc<Annotations>,
}

/// What does not change between a request's stages.
#[derive(Debug)]
struct Common {
    level: Level,
    audit_id: String,
    request_uri: String,
    verb: String,
    user: Arc<UserInfo>,
    /// `user` as JSON, when it came with it ([`UserInfo::shared`]).
    user_json: Option<Arc<[u8]>>,
    impersonated_user: Option<UserInfo>,
    source_ips: Vec<String>,
    user_agent: String,
    request_received_timestamp: MicroTime,
}

/// The event as it is written: kube-apiserver's field names, order and omissions.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    kind: &'static str,
    api_version: &'static str,
    level: Level,
    #[serde(rename = "auditID")]
    audit_id: &'a str,
    stage: Stage,
    #[serde(rename = "requestURI")]
    request_uri: &'a str,
    verb: &'a str,
    user: &'a UserInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    impersonated_user: Option<&'a UserInfo>,
    #[serde(rename = "sourceIPs", skip_serializing_if = "no_items")]
    source_ips: &'a [String],
    #[serde(skip_serializing_if = "no_text")]
    user_agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_ref: Option<&'a ObjectReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_status: Option<&'a ResponseStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_object: Option<&'a AuditObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_object: Option<&'a AuditObject>,
    request_received_timestamp: MicroTime,
    stage_timestamp: MicroTime,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a Annotations,
}

fn no_items(v: &&[String]) -> bool {
    v.is_empty()
}

fn no_text(v: &&str) -> bool {
    v.is_empty()
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = &*self.common;
        Wire {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: c.level,
            audit_id: &c.audit_id,
            stage: self.stage,
            request_uri: &c.request_uri,
            verb: &c.verb,
            user: &c.user,
            impersonated_user: self.impersonated_user_written(),
            source_ips: &c.source_ips,
            user_agent: &c.user_agent,
            object_ref: self.object_ref.as_deref(),
            response_status: self.response_status.as_ref(),
            request_object: self.request_object.as_ref(),
            response_object: self.response_object.as_ref(),
            request_received_timestamp: c.request_received_timestamp,
            stage_timestamp: self.stage_timestamp,
            annotations: &self.annotations,
        }
        .serialize(s)
    }
}

/// The fields an event starts with (crate-internal constructor arguments).
pub(super) struct EventStart {
    pub level: Level,
    pub audit_id: String,
    pub request_uri: String,
    pub verb: String,
    pub user: Arc<UserInfo>,
    /// `user`'s JSON object, if made already (`None`: written from `user`).
    pub user_json: Option<Arc<[u8]>>,
    pub impersonated_user: Option<UserInfo>,
    pub source_ips: Vec<String>,
    pub user_agent: String,
    pub object_ref: Option<ObjectReference>,
    pub received: MicroTime,
    pub annotations: Annotations,
}

impl Event {
    pub(super) fn start(s: EventStart) -> Self {
        Self {
            common: Arc::new(Common {
                level: s.level,
                audit_id: s.audit_id,
                request_uri: s.request_uri,
                verb: s.verb,
                user: s.user,
                user_json: s.user_json,
                impersonated_user: s.impersonated_user,
                source_ips: s.source_ips,
                user_agent: s.user_agent,
                request_received_timestamp: s.received,
            }),
            stage: Stage::RequestReceived,
            object_ref: s.object_ref.map(Arc::new),
            response_status: None,
            request_object: None,
            response_object: None,
            stage_timestamp: s.received,
            annotations: Arc::new(s.annotations),
        }
    }

    /// This event at `stage`, stamped `now`, with the given status and objects.
    pub(super) fn at_stage(
        &self,
        stage: Stage,
        now: MicroTime,
        status: Option<ResponseStatus>,
        request_object: Option<AuditObject>,
        response_object: Option<AuditObject>,
    ) -> Event {
        Event {
            common: self.common.clone(),
            stage,
            object_ref: self.object_ref.clone(),
            response_status: status,
            request_object,
            response_object,
            stage_timestamp: now,
            annotations: self.annotations.clone(),
        }
    }

    /// When the request was received.
    pub(super) fn request_received(&self) -> MicroTime {
        self.common.request_received_timestamp
    }

    pub(super) fn object_ref_mut(&mut self) -> Option<&mut ObjectReference> {
        self.object_ref.as_mut().map(Arc::make_mut)
    }

    /// The level the event was recorded at.
    pub fn level(&self) -> Level {
        self.common.level
    }

    /// The request's audit id (every stage of one request shares it).
    pub fn audit_id(&self) -> &str {
        &self.common.audit_id
    }

    /// The stage.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The verb.
    pub fn verb(&self) -> &str {
        &self.common.verb
    }

    /// The request URI (for gRPC, the method path).
    pub fn request_uri(&self) -> &str {
        &self.common.request_uri
    }

    /// The authenticated user.
    pub fn user(&self) -> &UserInfo {
        &self.common.user
    }

    /// The impersonated user, if the request impersonated one.
    pub fn impersonated_user(&self) -> Option<&UserInfo> {
        self.common.impersonated_user.as_ref()
    }

    /// The `impersonatedUser` this stage's line carries: none at `RequestReceived`, which
    /// kube-apiserver writes before it applies impersonation.
    pub(super) fn impersonated_user_written(&self) -> Option<&UserInfo> {
        self.common
            .impersonated_user
            .as_ref()
            .filter(|_| self.stage != Stage::RequestReceived)
    }

    /// The object reference (resource requests).
    pub fn object_ref(&self) -> Option<&ObjectReference> {
        self.object_ref.as_deref()
    }

    /// The response status (after the response started).
    pub fn response_status(&self) -> Option<&ResponseStatus> {
        self.response_status.as_ref()
    }

    /// Annotations.
    pub fn annotations(&self) -> &Annotations {
        &self.annotations
    }

    /// The annotations to change (copied first if another stage's event shares them).
    pub(super) fn annotations_mut(&mut self) -> &mut Annotations {
        Arc::make_mut(&mut self.annotations)
    }

    /// Whether the event carries a request object.
    pub fn has_request_object(&self) -> bool {
        self.request_object.is_some()
    }

    /// Whether the event carries a response object.
    pub fn has_response_object(&self) -> bool {
        self.response_object.is_some()
    }

    /// The event as one line of JSON (no newline).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(1024);
        self.write_json(&mut out, &[]);
        // Written from `str`s, whole UTF-8 characters at a time, and ASCII.
        String::from_utf8(out).expect("an event's JSON is UTF-8")
    }

    /// Appends the event's JSON (no newline) to `out`, as its [`Serialize`] implementation
    /// writes it but without the annotations whose keys are in `omit`. Returns whether an
    /// `annotations` object was written; it is then the last member.
    pub(super) fn write_json(&self, out: &mut Vec<u8>, omit: &[&str]) -> bool {
        json::write_event(self, out, omit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn micro_time_is_metav1_format_in_utc() {
        let t = MicroTime(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456));
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456Z");
        let whole = MicroTime(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert_eq!(
            serde_json::to_string(&whole).unwrap(),
            "\"2023-11-14T22:13:20.000000Z\""
        );
    }

    #[test]
    fn micro_time_matches_humantime_across_the_calendar() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let check = |micros: u64| {
            let t = UNIX_EPOCH + Duration::from_micros(micros);
            assert_eq!(
                MicroTime(t).to_string(),
                humantime::format_rfc3339_micros(t).to_string(),
                "{micros}"
            );
        };
        // Leap days, century rules, the ends of the range.
        for secs in [0, 951_782_400, 951_868_799, 4_107_542_400, 253_402_300_799] {
            check(secs * 1_000_000);
            check(secs * 1_000_000 + 999_999);
        }
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check(x % 253_402_300_800_000_000);
        }
        let late = MicroTime(UNIX_EPOCH + Duration::from_secs(253_402_300_800));
        assert!(late.text().is_none(), "left to humantime");
    }

    #[test]
    fn response_status_has_kubernetes_shape() {
        assert_eq!(
            serde_json::to_string(&ResponseStatus::success(200)).unwrap(),
            r#"{"metadata":{},"code":200}"#
        );
        assert_eq!(
            serde_json::to_string(&ResponseStatus::failure(
                Reason::Forbidden,
                r#"secrets "db" is forbidden: User "app" cannot list resource "secrets" in API group "" in the namespace "prod""#
            ))
            .unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"secrets \"db\" is forbidden: User \"app\" cannot list resource \"secrets\" in API group \"\" in the namespace \"prod\"","reason":"Forbidden","code":403}"#
        );
        let details = r#"{"name":"nope","kind":"secrets"}"#.to_owned();
        assert_eq!(
            serde_json::to_string(
                &ResponseStatus::failure(Reason::NotFound, r#"secrets "nope" not found"#)
                    .with_details(details.clone())
            )
            .unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"secrets \"nope\" not found","reason":"NotFound","details":{"name":"nope","kind":"secrets"},"code":404}"#
        );
        // A success keeps none.
        assert_eq!(
            ResponseStatus::success(200).with_details(details),
            ResponseStatus::success(200)
        );
        let codes: Vec<u16> = Reason::ALL.into_iter().map(Reason::http_code).collect();
        assert_eq!(
            codes,
            [400, 422, 404, 409, 409, 410, 401, 403, 504, 503, 500, 413]
        );
    }

    #[test]
    fn levels_are_ordered() {
        assert!(Level::None < Level::Metadata);
        assert!(Level::Metadata < Level::Request);
        assert!(Level::Request < Level::RequestResponse);
    }
}
