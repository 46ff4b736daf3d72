//! `metav1.Status`: every error of the Kubernetes API, and the success of a delete, as
//! kube-apiserver writes them (field order `kind, apiVersion, metadata, status, message, reason,
//! details, code`; `details.kind` is the resource plural except for Invalid, where it is the
//! Kind). [`Status::of`] is the one mapping from [`KubeError`] (and through it
//! [`AccessError`]'s own classification, [`AccessError::reason`]) to a status.

use serde::Serialize;

use super::KubeError;
use crate::access::AccessError;
use crate::authz::go_quote;
use crate::backend::BackendError;
use crate::names::FieldError;
use crate::reason::Reason;
use crate::store::StoreError;

/// The resource this API serves.
pub const SECRETS: &str = "secrets";

/// `metav1.Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    kind: &'static str,
    api_version: &'static str,
    metadata: ListMeta,
    /// `Failure` or `Success`.
    pub status: &'static str,
    /// The message kubectl prints.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The `StatusReason`, e.g. `NotFound`.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'static str,
    /// What the error is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
    /// The HTTP status code (omitted on a delete's success, as kube-apiserver omits it).
    #[serde(skip_serializing_if = "is_zero")]
    pub code: u16,
}

fn is_zero(c: &u16) -> bool {
    *c == 0
}

/// A Status's `metadata` (a ListMeta): empty but for the continue token of a 410 for an
/// expired one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
struct ListMeta {
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_token: Option<String>,
}

/// `details` of a Status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    /// The object's name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The API group.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The resource (or the Kind, for Invalid).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The object's uid (a delete's success).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Each field at fault.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
    /// When to retry (429).
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub retry_after_seconds: u32,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// One `details.causes` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// e.g. `FieldValueForbidden`; left out when empty, as kube-apiserver does.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// e.g. ``Forbidden: field is immutable when `immutable` is set``.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// e.g. `data`; left out when empty, as kube-apiserver does.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

impl Status {
    /// A failure with `code`, `reason` and `message`, no details.
    pub fn failure(code: u16, reason: &'static str, message: impl Into<String>) -> Status {
        Status {
            kind: "Status",
            api_version: "v1",
            metadata: ListMeta::default(),
            status: "Failure",
            message: message.into(),
            reason,
            details: None,
            code,
        }
    }

    /// The success of deleting Secret `name` whose uid was `uid`.
    pub fn deleted(name: &str, uid: &str) -> Status {
        Status {
            status: "Success",
            details: Some(Details {
                name: name.to_owned(),
                kind: SECRETS.to_owned(),
                uid: uid.to_owned(),
                ..Details::default()
            }),
            code: 0,
            ..Status::failure(0, "", "")
        }
    }

    /// `401 Unauthorized`, as the authentication filter answers.
    pub fn unauthorized() -> Status {
        Status::failure(401, "Unauthorized", "Unauthorized")
    }

    /// `404 NotFound` for a path this server does not serve, as go-restful's router answers
    /// through kube-apiserver's `serviceErrorHandler` (`NewGenericServerResponse`: empty
    /// details).
    pub fn no_route() -> Status {
        let mut s = Status::failure(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        s.details = Some(Details::default());
        s
    }

    /// `405 MethodNotAllowed` for a method no route of this path takes, as go-restful's router
    /// answers through kube-apiserver's `serviceErrorHandler` (`NewGenericServerResponse`).
    pub fn method_not_allowed() -> Status {
        let mut s = Status::failure(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        );
        s.details = Some(Details::default());
        s
    }

    /// `422 Invalid` of `kind` (a Kind, or `PatchOptions.meta.k8s.io`) named `name`: the message
    /// `<kind> "<name>" is invalid: <causes>`.
    pub fn invalid(kind: &str, name: &str, causes: &[FieldError]) -> Status {
        let agg: Vec<String> = causes.iter().map(ToString::to_string).collect();
        let agg = match agg.as_slice() {
            [] => String::new(),
            [one] => format!(": {one}"),
            many => format!(": [{}]", many.join(", ")),
        };
        let (kind_only, group) = match kind.split_once('.') {
            Some((k, g)) => (k, g),
            None => (kind, ""),
        };
        let mut s = Status::failure(
            422,
            "Invalid",
            format!("{kind} {} is invalid{agg}", go_quote(name)),
        );
        s.details = Some(Details {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: kind_only.to_owned(),
            causes: causes
                .iter()
                .map(|c| Cause {
                    reason: cause_reason(&c.message).to_owned(),
                    message: c.message.clone(),
                    field: c.field.clone(),
                })
                .collect(),
            ..Details::default()
        });
        s
    }

    /// The status of `e`.
    pub fn of(e: &KubeError) -> Status {
        match e {
            KubeError::BadRequest(m) => Status::failure(400, "BadRequest", m),
            KubeError::UnsupportedMediaType(m) => Status::failure(415, "UnsupportedMediaType", m),
            KubeError::NotAcceptableForm(m) => Status::failure(406, "NotAcceptable", *m),
            e @ (KubeError::NotAcceptable | KubeError::NotAcceptableWatch) => {
                Status::failure(406, "NotAcceptable", e.to_string())
            }
            KubeError::TooLarge(m) => Status::failure(413, "RequestEntityTooLarge", m),
            KubeError::Invalid { kind, name, causes } => Status::invalid(kind, name, causes),
            KubeError::Undecodable(_) => Status::failure(400, "BadRequest", e.to_string()),
            // A JSON patch that does not apply: kube-apiserver's NewGenericServerResponse(422),
            // whose message is fixed and whose details are empty (the patch library's words
            // are dropped).
            KubeError::Unprocessable(_) => {
                let mut s = Status::failure(
                    422,
                    "Invalid",
                    "the server rejected our request due to an error in our request",
                );
                s.details = Some(Details::default());
                s
            }
            KubeError::Expired(m) => Status::failure(410, "Expired", m),
            KubeError::Storage(m) => Status::failure(500, "", m),
            KubeError::TooLargeResourceVersion { .. } => {
                let mut s = Status::failure(504, "Timeout", e.to_string());
                s.details = Some(Details {
                    causes: vec![Cause {
                        reason: "ResourceVersionTooLarge".into(),
                        message: "Too large resource version".into(),
                        field: String::new(),
                    }],
                    retry_after_seconds: 1,
                    ..Details::default()
                });
                s
            }
            KubeError::ApplyConflict { conflicts } => {
                // The error's text is kube-apiserver's message, managers quoted as it prints them.
                let mut s = Status::failure(409, "Conflict", e.to_string());
                s.details = Some(Details {
                    causes: conflicts
                        .iter()
                        .map(|c| Cause {
                            reason: "FieldManagerConflict".into(),
                            message: c.cause_message(),
                            field: c.field.clone(),
                        })
                        .collect(),
                    ..Details::default()
                });
                s
            }
            KubeError::Untransformable { key, why } => {
                Status::corrupt_object(key, "data from the storage is not transformable", why)
            }
            KubeError::Access(a) => Status::of_access(a),
        }
    }

    /// The status of an access-layer error, classified by [`AccessError::reason`].
    pub fn of_access(e: &AccessError) -> Status {
        let reason = e.reason();
        match e {
            AccessError::NoCredentials | AccessError::Unauthenticated { .. } => {
                return Status::unauthorized()
            }
            AccessError::Forbidden(f) => {
                let mut s = Status::failure(403, "Forbidden", &f.message);
                s.details = Some(Details {
                    name: f.name.clone(),
                    group: f.group.clone(),
                    kind: f.resource.clone(),
                    ..Details::default()
                });
                return s;
            }
            AccessError::Store(se) => return Status::of_store(se, reason),
            AccessError::NamespaceNotFound(ns) => {
                let mut s = Status::failure(404, "NotFound", e.to_string());
                s.details = Some(Details {
                    name: ns.clone(),
                    kind: "namespaces".to_owned(),
                    ..Details::default()
                });
                return s;
            }
            _ => {}
        }
        match reason {
            Reason::InternalError => internal(&e.to_string()),
            r => Status::failure(r.http_code(), r.as_str(), e.to_string()),
        }
    }

    fn of_store(e: &StoreError, reason: Reason) -> Status {
        let named = |name: &str| {
            Some(Details {
                name: name.to_owned(),
                kind: SECRETS.to_owned(),
                ..Details::default()
            })
        };
        let details = match e {
            StoreError::Invalid { name, errors } => {
                return Status::invalid("Secret", name, errors);
            }
            // A list at a revision the store has not reached: the watch cache's answer once
            // it gave up waiting.
            StoreError::Backend(BackendError::FutureRevision { requested, current }) => {
                return Status::of(&KubeError::TooLargeResourceVersion {
                    requested: requested.get(),
                    current: current.get(),
                });
            }
            StoreError::Unreadable { errors } => return Status::store_read_error(errors),
            StoreError::Corrupt { key, reason } => {
                return Status::corrupt_object(key, "object not decodable", reason)
            }
            StoreError::NotFound { name, .. }
            | StoreError::AlreadyExists { name, .. }
            | StoreError::Conflict { name, .. } => named(name),
            StoreError::PreconditionFailed { name, .. } => Some(Details {
                name: name.to_owned(),
                kind: "Secret".to_owned(),
                ..Details::default()
            }),
            _ => None,
        };
        if reason == Reason::InternalError {
            return internal(&e.to_string());
        }
        let mut s = Status::failure(reason.http_code(), reason.as_str(), e.to_string());
        s.details = details;
        if let StoreError::ContinueExpired { continue_token } = e {
            s.metadata.continue_token = Some(continue_token.clone());
        }
        s
    }

    /// A list (or deletecollection, or a watch's starting list) that met Secrets it cannot
    /// read: kube-apiserver's `StorageReadError` (KEP-3926), each Secret a cause naming its
    /// storage key, at most 100 and then a `TooMany` cause.
    fn store_read_error(errors: &[(String, String)]) -> Status {
        const MAX: usize = 100;
        let mut causes: Vec<Cause> = errors
            .iter()
            .take(MAX)
            .map(|(key, why)| Cause {
                reason: "UnexpectedServerResponse".into(),
                message: corrupt_object_text(
                    key,
                    "data from the storage is not transformable",
                    why,
                ),
                field: key.clone(),
            })
            .collect();
        if errors.len() > MAX {
            causes.push(Cause {
                reason: "TooMany".into(),
                message: "too many errors, the list is truncated".into(),
                field: String::new(),
            });
        }
        let mut s = Status::failure(
            500,
            "StorageReadError",
            "failed to read one or more secrets from the storage",
        );
        s.details = Some(Details {
            name: "list".into(),
            kind: SECRETS.to_owned(),
            causes,
            ..Details::default()
        });
        s
    }

    /// One Secret that cannot be read (`what`: not transformable, or not decodable; `why`):
    /// kube-apiserver's internal error for a corrupt object, naming its storage key.
    pub fn corrupt_object(key: &str, what: &str, why: &str) -> Status {
        let text = corrupt_object_text(key, what, why);
        let mut s = Status::failure(
            500,
            "InternalError",
            format!("Internal error occurred: {text}"),
        );
        s.details = Some(Details {
            causes: vec![Cause {
                reason: String::new(),
                message: text,
                field: String::new(),
            }],
            ..Details::default()
        });
        s
    }

    /// The status as the audit log records a response (`responseStatus`): the code, and for a
    /// failure its reason, message (a generic one for an internal error, whose detail is only
    /// in the server's log) and details.
    pub fn audit(&self) -> crate::audit::ResponseStatus {
        let message = if self.reason == "InternalError" {
            "internal error"
        } else {
            self.message.as_str()
        };
        let details = self
            .details
            .as_ref()
            .and_then(|d| serde_json::to_string(d).ok());
        if self.status == "Success" {
            return crate::audit::ResponseStatus::success_status(self.http_code(), details);
        }
        let status = crate::audit::ResponseStatus::of(self.http_code(), self.reason, message);
        match details {
            Some(details) => status.with_details(details),
            None => status,
        }
    }

    /// The Status as the audit log's `responseObject` (kept at level `RequestResponse`): what
    /// the client was answered, as kube-apiserver's `LogResponseObject` records it.
    pub fn audit_object(&self) -> Option<crate::audit::AuditObject> {
        let text = String::from_utf8(self.to_json()).ok()?;
        crate::audit::AuditObject::status(text)
    }

    /// The HTTP status code to answer with (200 for a success without one).
    pub fn http_code(&self) -> u16 {
        if self.code == 0 {
            200
        } else {
            self.code
        }
    }

    /// The JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// kube-apiserver's `StorageError` text for a corrupt object at `key`.
fn corrupt_object_text(key: &str, what: &str, why: &str) -> String {
    format!("StorageError: corrupt object, Code: 7, Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: {what} revision=0: {why}")
}

/// `500 InternalError`; the detail goes to the log only.
fn internal(detail: &str) -> Status {
    tracing::error!(error = %detail, "internal error answering a Kubernetes API request");
    Status::failure(
        500,
        "InternalError",
        "Internal error occurred: internal error; see the server's log",
    )
}

/// The `CauseType` of a field error, from the type string its message starts with
/// (apimachinery `field.ErrorType`).
fn cause_reason(message: &str) -> &'static str {
    const TYPES: [(&str, &str); 9] = [
        ("Required value", "FieldValueRequired"),
        ("Invalid value", "FieldValueInvalid"),
        ("Forbidden", "FieldValueForbidden"),
        ("Too long", "FieldValueTooLong"),
        ("Too many", "FieldValueTooMany"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Not found", "FieldValueNotFound"),
        ("Internal error", "InternalError"),
    ];
    TYPES
        .iter()
        .find(|(prefix, _)| message.starts_with(prefix))
        .map_or("FieldValueInvalid", |(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &Status) -> String {
        String::from_utf8(s.to_json()).unwrap()
    }

    #[test]
    fn store_errors_are_kube_apiservers_statuses() {
        let nf = AccessError::Store(StoreError::NotFound {
            namespace: "default".into(),
            name: "nope".into(),
        });
        assert_eq!(
            json(&Status::of_access(&nf)),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets \"nope\" not found","reason":"NotFound","details":{"name":"nope","kind":"secrets"},"code":404}"#
        );
        let conflict = AccessError::Store(StoreError::Conflict {
            name: "s1".into(),
            reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
        });
        assert_eq!(
            json(&Status::of_access(&conflict)),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Operation cannot be fulfilled on secrets \"s1\": the object has been modified; please apply your changes to the latest version and try again","reason":"Conflict","details":{"name":"s1","kind":"secrets"},"code":409}"#
        );
        let invalid = AccessError::Store(StoreError::invalid(
            "imm",
            vec![FieldError::new(
                "data",
                "Forbidden: field is immutable when `immutable` is set",
            )],
        ));
        assert_eq!(
            json(&Status::of_access(&invalid)),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Secret \"imm\" is invalid: data: Forbidden: field is immutable when `immutable` is set","reason":"Invalid","details":{"name":"imm","kind":"Secret","causes":[{"reason":"FieldValueForbidden","message":"Forbidden: field is immutable when `immutable` is set","field":"data"}]},"code":422}"#
        );
        assert_eq!(
            json(&Status::unauthorized()),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
        );
        assert_eq!(
            json(&Status::deleted("s1", "u-1")),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":{"name":"s1","kind":"secrets","uid":"u-1"}}"#
        );
        let e = AccessError::Store(StoreError::Corrupt {
            key: "k".into(),
            reason: "r".into(),
        });
        assert_eq!(Status::of_access(&e).code, 500);
    }

    #[test]
    fn invalid_options_and_several_causes() {
        let s = Status::of(&KubeError::Invalid {
            kind: "PatchOptions.meta.k8s.io".into(),
            name: String::new(),
            causes: vec![FieldError::new(
                "fieldManager",
                "Required value: is required for apply patch",
            )],
        });
        assert_eq!(s.message, "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch");
        let d = s.details.unwrap();
        assert_eq!(
            (d.kind.as_str(), d.group.as_str()),
            ("PatchOptions", "meta.k8s.io")
        );
        let two = Status::invalid(
            "Secret",
            "x",
            &[
                FieldError::new("a", "Required value"),
                FieldError::new("b", "Invalid value: \"c\""),
            ],
        );
        assert_eq!(
            two.message,
            "Secret \"x\" is invalid: [a: Required value, b: Invalid value: \"c\"]"
        );
        let refused = Status::method_not_allowed();
        assert_eq!(
            String::from_utf8(refused.to_json()).unwrap(),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\
             \"message\":\"the server does not allow this method on the requested resource\",\
             \"reason\":\"MethodNotAllowed\",\"details\":{},\"code\":405}"
        );
    }
}
