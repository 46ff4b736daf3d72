//! The `audit.k8s.io/v1` Event and its parts, serialised exactly as kube-apiserver writes them:
//! the same field names, the same field order, the same omitted empty fields, and timestamps in
//! `metav1.MicroTime` format (`2006-01-02T15:04:05.000000Z`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::object::AuditObject;
use crate::authn::Identity;
use crate::reason::Reason;

/// Audit annotation: `allow` or `forbid`, as kube-apiserver's authorization filter sets it.
pub const DECISION_ANNOTATION: &str = "authorization.k8s.io/decision";
/// Audit annotation: the authorizer's reason for its decision.
pub const REASON_ANNOTATION: &str = "authorization.k8s.io/reason";

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
}

impl fmt::Display for MicroTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_micros(self.0))
    }
}

impl Serialize for MicroTime {
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
/// (`{"metadata":{},"code":200}`), failure also `status: Failure`, message and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseStatus {
    metadata: Empty,
    #[serde(skip_serializing_if = "str::is_empty")]
    status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    message: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'static str,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Empty {}

impl ResponseStatus {
    /// A successful response with HTTP status `code` (200, 201).
    pub fn success(code: u16) -> Self {
        Self {
            metadata: Empty {},
            status: "",
            message: String::new(),
            reason: "",
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
            code: reason.http_code(),
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
            code: 401,
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.code
    }
}

/// One `audit.k8s.io/v1` Event. Built only by [`RequestAudit`](super::RequestAudit), so that
/// request and response objects always pass through [`AuditObject`]'s reduction; read it
/// through the accessors or as JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    kind: &'static str,
    api_version: &'static str,
    level: Level,
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: Stage,
    #[serde(rename = "requestURI")]
    request_uri: String,
    verb: String,
    user: UserInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    impersonated_user: Option<UserInfo>,
    #[serde(rename = "sourceIPs", skip_serializing_if = "Vec::is_empty")]
    source_ips: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    user_agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_ref: Option<ObjectReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_status: Option<ResponseStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_object: Option<AuditObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_object: Option<AuditObject>,
    request_received_timestamp: MicroTime,
    stage_timestamp: MicroTime,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) annotations: BTreeMap<String, String>,
}

/// The fields an event starts with (crate-internal constructor arguments).
pub(super) struct EventStart {
    pub level: Level,
    pub audit_id: String,
    pub request_uri: String,
    pub verb: String,
    pub user: UserInfo,
    pub impersonated_user: Option<UserInfo>,
    pub source_ips: Vec<String>,
    pub user_agent: String,
    pub object_ref: Option<ObjectReference>,
    pub received: MicroTime,
    pub annotations: BTreeMap<String, String>,
}

impl Event {
    pub(super) fn start(s: EventStart) -> Self {
        Self {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: s.level,
            audit_id: s.audit_id,
            stage: Stage::RequestReceived,
            request_uri: s.request_uri,
            verb: s.verb,
            user: s.user,
            impersonated_user: s.impersonated_user,
            source_ips: s.source_ips,
            user_agent: s.user_agent,
            object_ref: s.object_ref,
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: s.received,
            stage_timestamp: s.received,
            annotations: s.annotations,
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
            stage,
            stage_timestamp: now,
            response_status: status,
            request_object,
            response_object,
            ..self.clone()
        }
    }

    pub(super) fn object_ref_mut(&mut self) -> Option<&mut ObjectReference> {
        self.object_ref.as_mut()
    }

    /// The level the event was recorded at.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The request's audit id (every stage of one request shares it).
    pub fn audit_id(&self) -> &str {
        &self.audit_id
    }

    /// The stage.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The verb.
    pub fn verb(&self) -> &str {
        &self.verb
    }

    /// The request URI (for gRPC, the method path).
    pub fn request_uri(&self) -> &str {
        &self.request_uri
    }

    /// The authenticated user.
    pub fn user(&self) -> &UserInfo {
        &self.user
    }

    /// The impersonated user, if the request impersonated one.
    pub fn impersonated_user(&self) -> Option<&UserInfo> {
        self.impersonated_user.as_ref()
    }

    /// The object reference (resource requests).
    pub fn object_ref(&self) -> Option<&ObjectReference> {
        self.object_ref.as_ref()
    }

    /// The response status (after the response started).
    pub fn response_status(&self) -> Option<&ResponseStatus> {
        self.response_status.as_ref()
    }

    /// Annotations.
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        &self.annotations
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
        serde_json::to_string(self).expect("an audit event always serialises")
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
        let codes: Vec<u16> = Reason::ALL.into_iter().map(Reason::http_code).collect();
        assert_eq!(
            codes,
            [400, 422, 404, 409, 409, 410, 401, 403, 504, 503, 500]
        );
    }

    #[test]
    fn levels_are_ordered() {
        assert!(Level::None < Level::Metadata);
        assert!(Level::Metadata < Level::Request);
        assert!(Level::Request < Level::RequestResponse);
    }
}
