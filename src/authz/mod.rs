//! May this identity do this: the request [`Attributes`] an authorizer decides on, the
//! [`Decision`] it returns (as kube-apiserver's `authorizer.Attributes` and `Decision`), and
//! Kubernetes RBAC as the authorizer.
//!
//! Front ends describe every request as attributes (verb, API group, resource, subresource,
//! namespace, name, or a non-resource path); the authorizer knows nothing of how the request
//! arrived. What this module owns:
//!
//! - [`rbac`]: `rbac.authorization.k8s.io/v1` Roles, ClusterRoles, RoleBindings and
//!   ClusterRoleBindings read from manifests and validated as kube-apiserver validates them, and
//!   [`Rbac`], their evaluation exactly as kube-apiserver's RBAC authorizer (behind its
//!   `system:masters` authorizer): default deny, the same allow reasons.
//! - [`policy`]: [`Policy`], the policy in force, loaded from a file or directory
//!   (`--authorization-policy`), swapped atomically when a background [`PolicyWatcher`] sees the
//!   files change; an invalid change keeps the old policy and shows in [`Policy::status`].
//! - [`forbidden`]: the Forbidden message of a denied request, word for word.
//! - [`review`]: `SelfSubjectAccessReview` and `SelfSubjectRulesReview` (`auth can-i`).
//! - [`impersonation`]: what a request acting as another user must be allowed, and the identity
//!   it then runs as.
//!
//! The request path is lock-free: [`Policy`] hands out the compiled [`Rbac`] through an
//! `ArcSwap`, and [`Rbac`] looks only at the bindings that name the caller.

pub mod forbidden;
pub mod impersonation;
pub mod policy;
pub mod rbac;
pub mod review;

pub use forbidden::{forbidden_message, Forbidden};
pub use impersonation::{impersonate, Impersonation, ImpersonationRequest};
pub use policy::{Policy, PolicyStatus, PolicyWatcher, DEFAULT_RELOAD_INTERVAL};
pub use rbac::{Problem, Rbac};
pub use review::{
    self_subject_access_review, self_subject_rules_review, AccessReviewSpec, NonResourceAttributes,
    NonResourceRule, ResourceAttributes, ResourceRule, SubjectAccessReviewStatus,
    SubjectRulesReviewStatus,
};

use std::path::PathBuf;

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

    /// Whether the verb only reads (`get`, `list`, `watch`: kube-apiserver's `IsReadOnly`).
    pub fn is_read_only(&self) -> bool {
        matches!(self.verb.as_str(), "get" | "list" | "watch")
    }

    /// A cluster-scoped request of `user` to `verb` a collection of `resource` in the core group;
    /// narrow it with the `with_*` methods, e.g.
    /// `Attributes::resource(user, "get", "secrets").with_namespace("prod").with_name("db")`.
    ///
    /// As in Kubernetes, a `create` (of a top-level resource) and a `deletecollection` carry no
    /// name, so `resourceNames` cannot restrict them; a `list` or `watch` carries one only when
    /// the request selects a single object (`metadata.name=<name>`).
    pub fn resource(user: Identity, verb: &str, resource: &str) -> Attributes {
        Attributes {
            user,
            verb: verb.to_owned(),
            resource: resource.to_owned(),
            ..Attributes::default()
        }
    }

    /// A request of `user` to `verb` (the lower-case HTTP method) the non-resource `path`.
    pub fn non_resource(user: Identity, verb: &str, path: &str) -> Attributes {
        Attributes {
            user,
            verb: verb.to_owned(),
            path: Some(path.to_owned()),
            ..Attributes::default()
        }
    }

    /// The same request in `namespace`.
    pub fn with_namespace(mut self, namespace: &str) -> Attributes {
        self.namespace = namespace.to_owned();
        self
    }

    /// The same request for the object `name`.
    pub fn with_name(mut self, name: &str) -> Attributes {
        self.name = name.to_owned();
        self
    }

    /// The same request in API group `group`.
    pub fn with_group(mut self, group: &str) -> Attributes {
        self.api_group = group.to_owned();
        self
    }

    /// The same request for `subresource`.
    pub fn with_subresource(mut self, subresource: &str) -> Attributes {
        self.subresource = subresource.to_owned();
        self
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

    /// The reason, allowed or not ("" if none).
    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow { reason } | Decision::Deny { reason } => reason,
        }
    }
}

/// Decides requests.
pub trait Authorizer: Send + Sync + 'static {
    /// The decision on `attrs`.
    fn authorize(&self, attrs: &Attributes) -> Decision;
}

/// Lists the rules that apply to a user (`authorizer.RuleResolver`), for
/// [`self_subject_rules_review`].
pub trait RuleResolver: Send + Sync + 'static {
    /// The rules that apply to `user` in `namespace`.
    fn rules_for(&self, user: &Identity, namespace: &str) -> SubjectRulesReviewStatus;
}

/// Allows everything (kube-apiserver's `--authorization-mode=AlwaysAllow`): every request is
/// allowed with an empty reason, and every user has the rules `*` on everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _attrs: &Attributes) -> Decision {
        Decision::Allow {
            reason: String::new(),
        }
    }
}

impl RuleResolver for AlwaysAllow {
    fn rules_for(&self, _user: &Identity, _namespace: &str) -> SubjectRulesReviewStatus {
        review::everything()
    }
}

/// Errors of this layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// The policy file or directory cannot be read (operator's: the path given to
    /// `--authorization-policy`).
    #[error("cannot read authorization policy {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A policy file or directory that group or others may write, on a writable file
    /// system: whoever may write it chooses who may do anything (operator's).
    #[error("authorization policy {} has mode {mode:04o}: whoever may write it chooses who may do anything, so it must not be writable by group or others (or be on a read-only mount, as a ConfigMap volume); run chmod go-w {}", path.display(), path.display())]
    Writable {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A policy file is not UTF-8 text (operator's).
    #[error("authorization policy {} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The policy has invalid documents or objects (operator's); each problem names the file,
    /// the document, the object and the field.
    #[error("invalid authorization policy ({} problem{}):\n{}", problems.len(), if problems.len() == 1 { "" } else { "s" }, problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
    /// A reload found policy files that hold no object any more, while the policy in force
    /// has some: what a failed `generate > policy.yaml` leaves. Refused, so that a broken
    /// pipeline does not lock out every caller (operator's: restart to start empty).
    #[error("authorization policy {} holds no Role, ClusterRole, RoleBinding or ClusterRoleBinding: it would refuse every caller but system:masters, so the policy in force is kept (to start with an empty policy, restart the server)", path.display())]
    Emptied {
        /// The file or directory.
        path: PathBuf,
    },
    /// An impersonation request names groups, extra or a uid but no user (caller's: Bad
    /// Request in Kubernetes).
    #[error("requested {requested} without impersonating a user")]
    ImpersonationWithoutUser {
        /// What was requested, as kube-apiserver prints it.
        requested: String,
    },
    /// The caller may not do what it asked (caller's: 403 Forbidden); the message is
    /// Kubernetes' Forbidden message.
    #[error("{0}")]
    Forbidden(Forbidden),
    /// A rules review without a namespace (caller's: Bad Request).
    #[error("no namespace on request")]
    NoNamespace,
}

/// Go's `%#v` of a `[]string`, as apimachinery's field errors print a list value:
/// `[]string{"a", "b"}`.
pub(crate) fn go_string_slice(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// Go's `%q` of `s` (`strconv.Quote`), as Kubernetes quotes names in messages: `"` and `\\`
/// escaped, control and other non-printing characters as `\n`, `\x7f`, `\u00a0`.
pub(crate) fn go_quote(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') || c == '\u{feff}' => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_matches_strconv_quote() {
        for (input, want) in [
            ("db", r#""db""#),
            ("", r#""""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("tab\there\n", r#""tab\there\n""#),
            ("\u{1}\u{7f}", r#""\x01\x7f""#),
            ("\u{a0}é", r#""\u00a0é""#),
        ] {
            assert_eq!(go_quote(input), want, "{input:?}");
        }
    }

    #[test]
    fn attribute_builders() {
        let u = Identity::new("app", "", vec![]);
        let a = Attributes::resource(u.clone(), verbs::GET, "secrets")
            .with_namespace("prod")
            .with_name("db")
            .with_group("")
            .with_subresource("");
        assert!(a.is_resource_request());
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.name.as_str()),
            ("get", "prod", "db")
        );
        let n = Attributes::non_resource(u, "get", "/healthz");
        assert!(!n.is_resource_request());
        assert_eq!(Decision::Deny { reason: "x".into() }.reason(), "x");
        assert!(AlwaysAllow.authorize(&n).allowed());
    }
}
