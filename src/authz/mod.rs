//! May this identity do this: the request [`Attributes`] an authorizer decides on, and the
//! [`Decision`] it returns, as kube-apiserver's `authorizer.Attributes` and `Decision`.
//!
//! Front ends describe every request as attributes (verb, API group, resource, subresource,
//! namespace, name, or a non-resource path); the authorizer knows nothing of how the request
//! arrived.

use crate::authn::Identity;

/// Verbs of resource requests, as Kubernetes spells them.
pub mod verbs {
    /// Read one object.
    pub const GET: &str = "get";
    /// Read a collection.
    pub const LIST: &str = "list";
    /// Follow changes to a collection or object.
    pub const WATCH: &str = "watch";
    /// Create an object.
    pub const CREATE: &str = "create";
    /// Replace an object.
    pub const UPDATE: &str = "update";
    /// Patch an object.
    pub const PATCH: &str = "patch";
    /// Delete an object.
    pub const DELETE: &str = "delete";
    /// Delete a collection.
    pub const DELETECOLLECTION: &str = "deletecollection";
    /// Act as another user, group or service account.
    pub const IMPERSONATE: &str = "impersonate";
}

/// What a request asks to do, for authorization and audit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// Who asks (after impersonation: the impersonated identity).
    pub user: Identity,
    /// The verb, e.g. `get` ([`verbs`]); for non-resource requests the lower-case HTTP method.
    pub verb: String,
    /// API group of the resource ("" for core, e.g. Secrets).
    pub api_group: String,
    /// Resource, e.g. `secrets`; "" for a non-resource request.
    pub resource: String,
    /// Subresource, "" if none.
    pub subresource: String,
    /// Namespace; "" for cluster-scoped requests and requests across all namespaces.
    pub namespace: String,
    /// Object name; "" for collections (unless a `metadata.name` field selector names one).
    pub name: String,
    /// For a non-resource request, its path (e.g. `/healthz`); `None` for resource requests.
    pub path: Option<String>,
}

impl Attributes {
    /// Whether this is a resource request (not a non-resource path).
    pub fn is_resource_request(&self) -> bool {
        self.path.is_none()
    }
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the reason names what allowed it (audit annotation
    /// `authorization.k8s.io/reason`).
    Allow {
        /// e.g. `RBAC: allowed by ClusterRoleBinding "admins" of ClusterRole "admin" to Group "ops"`.
        reason: String,
    },
    /// Not allowed (Kubernetes' "no opinion" from every authorizer is a denial); the reason,
    /// possibly empty, is appended to the Forbidden message.
    Deny {
        /// Why, if known.
        reason: String,
    },
}

impl Decision {
    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// Decides requests.
pub trait Authorizer: Send + Sync + 'static {
    /// The decision on `attrs`.
    fn authorize(&self, attrs: &Attributes) -> Decision;
}
