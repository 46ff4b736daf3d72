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
    /// 422 with a plain message and no details (a JSON patch whose `test` failed or whose path
    /// is missing; client's fault).
    #[error("{0}")]
    Unprocessable(String),
    /// 409 Conflict from server-side apply: fields owned by other managers with other values
    /// (client's fault; `force` takes them).
    #[error("Apply failed with {} conflict(s)", conflicts.len())]
    ApplyConflict {
        /// Each conflicting field.
        conflicts: Vec<ApplyConflict>,
    },
    /// What the guarded store said (authentication, authorization, audit, store rules).
    #[error(transparent)]
    Access(#[from] AccessError),
}

/// One field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The manager that owns the field.
    pub manager: String,
    /// The field's path as kube-apiserver prints it (`.data.k`).
    pub field: String,
}
