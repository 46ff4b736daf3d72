//! The Kubernetes API layer's error: each variant is one `metav1.Status` reason.

use crate::access::AccessError;
use crate::names::FieldError;

/// Why a Kubernetes API request failed. Messages never contain a Secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// 400 BadRequest: the client sent a body, patch or parameter that cannot be read (its
    /// fault); the message is kube-apiserver's.
    #[error("{0}")]
    BadRequest(String),
    /// 415 UnsupportedMediaType: a body in a format this server does not read (client's fault).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 406 NotAcceptable: `Accept` names no media type this server writes (client's fault).
    #[error("only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf")]
    NotAcceptable,
    /// 406 NotAcceptable for a watch: `Accept` picks a media type keyward writes, but not as a
    /// stream of events (YAML), as kube-apiserver's `NegotiateOutputMediaTypeStream` refuses it.
    #[error("only the following media types are accepted: application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch")]
    NotAcceptableWatch,
    /// 406 NotAcceptable: `Accept` asks for a form of the object that does not fit what the
    /// request reads (`PartialObjectMetadata` of a list, or the list form of one object), as
    /// kube-apiserver's response transform refuses it.
    #[error("{0}")]
    NotAcceptableForm(&'static str),
    /// 413 RequestEntityTooLarge: a body or patch over the limits (client's fault).
    #[error("{0}")]
    TooLarge(String),
    /// 422 Invalid: the object breaks field rules (client's fault). `kind` is the Kind
    /// (`Secret`), `name` the object's name.
    #[error("{kind} \"{name}\" is invalid")]
    Invalid {
        /// The object's Kind.
        kind: String,
        /// The object's name.
        name: String,
        /// Each broken rule.
        causes: Vec<FieldError>,
    },
    /// 400 BadRequest: a Secret body with a field of the wrong type or `data` that is not
    /// base64 (client's fault). A patch that leaves its Secret so is a 422 instead.
    #[error("Secret in version \"v1\" cannot be handled as a Secret: {0}")]
    Undecodable(String),
    /// A JSON patch whose `test` failed or whose path is missing (client's fault): 422 with
    /// kube-apiserver's fixed message; the patch library's words are for the log.
    #[error("{0}")]
    Unprocessable(String),
    /// 409 Conflict from server-side apply: fields owned by other managers with other values
    /// (client's fault; `force` takes them). Displays kube-apiserver's message exactly
    /// (`Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1:
    /// .data.k`); each conflict is one `FieldManagerConflict` cause
    /// ([`ApplyConflict::cause_message`], [`ApplyConflict::field`]).
    #[error("{}", apply_conflict_message(conflicts))]
    ApplyConflict {
        /// Each conflicting field.
        conflicts: Vec<ApplyConflict>,
    },
    /// 410 Expired: a list asked for a revision already compacted away (client's fault: list
    /// again); the message is kube-apiserver's.
    #[error("{0}")]
    Expired(String),
    /// 500 without a reason: an error kube-apiserver's storage (or its strategic merge patch)
    /// returns that is not an API status, which its handlers pass on as it is
    /// (`resourceVersion should not be set on objects to be created`, a `resourceVersion` that
    /// is not a number, an unknown `$patch` directive, an applied configuration that does not
    /// fit the schema); the message is kube-apiserver's.
    #[error("{0}")]
    Storage(String),
    /// 504 Timeout: a read asked for a revision the store has not reached (kube-apiserver's
    /// `ResourceVersionTooLarge`; the client retries after a second).
    #[error("Timeout: Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion {
        /// The revision asked for.
        requested: i64,
        /// The store's revision.
        current: i64,
    },
    /// 500 InternalError: the Secret at storage key `key` cannot be decrypted (`why`), named
    /// as kube-apiserver names a corrupt object.
    #[error("{key}: {why}")]
    Untransformable {
        /// The storage key.
        key: String,
        /// Why it cannot be decrypted.
        why: String,
    },
    /// What the guarded store said (authentication, authorization, audit, store rules).
    #[error(transparent)]
    Access(#[from] AccessError),
}

/// One field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The manager that owns the field, as kube-apiserver prints it: quoted, and for an
    /// `Update` manager with its API version (`"kubectl-client-side-apply" using v1`; an
    /// `Apply` manager is just `"kubectl"`).
    pub manager: String,
    /// The field's path as kube-apiserver prints it (`.data.k`).
    pub field: String,
}

impl ApplyConflict {
    /// The `message` of this conflict's `details.causes` entry
    /// (`conflict with "kubectl-client-side-apply" using v1`).
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.manager)
    }
}

/// kube-apiserver's message for apply conflicts (`getConflictMessage`): one conflict inline,
/// several grouped by manager (managers sorted, each field on a `- ` line).
fn apply_conflict_message(conflicts: &[ApplyConflict]) -> String {
    if let [one] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager, one.field
        );
    }
    let mut by_manager: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for c in conflicts {
        by_manager.entry(&c.manager).or_default().push(&c.field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(fields.into_iter().map(|f| format!("- {f}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}
