//! The message of a denied request, exactly as kube-apiserver writes it
//! (`pkg/endpoints/handlers/responsewriters/errors.go` `Forbidden`/`forbiddenMessage`, then
//! apimachinery `pkg/api/errors` `NewForbidden`):
//!
//! - `secrets "db" is forbidden: User "app" cannot get resource "secrets" in API group "" in
//!   the namespace "prod"`
//! - `secrets is forbidden: User "app" cannot list resource "secrets" in API group "" at the
//!   cluster scope` (no name; cluster scope)
//! - `forbidden: User "app" cannot get path "/metrics"` (non-resource request)
//!
//! `&`, `<` and `>` in the part naming the user and request are HTML-escaped; the authorizer's
//! reason, if any, is appended as `: <reason>`.

use std::fmt;

use super::{go_quote, Attributes};

/// A 403 Forbidden answer: the message and the `details` of Kubernetes' `Status`
/// (`{"reason":"Forbidden","code":403,"details":{"group","kind","name"}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    /// The whole message, e.g. `secrets "db" is forbidden: User "app" cannot get ...`.
    pub message: String,
    /// `details.group`: the request's API group.
    pub group: String,
    /// `details.kind`: the request's resource (Kubernetes puts the resource here).
    pub resource: String,
    /// `details.name`: the request's object name, "" if none.
    pub name: String,
}

impl Forbidden {
    /// The answer to `attrs` denied with the authorizer's `reason` ("" if none).
    pub fn new(attrs: &Attributes, reason: &str) -> Forbidden {
        let mut err = html_escape(&request_message(attrs));
        if !reason.is_empty() {
            err.push_str(": ");
            err.push_str(reason);
        }
        // NewForbidden(GroupResource{group, resource}, name, err).
        let group_resource = group_resource(attrs);
        let message = if attrs.api_group.is_empty() && attrs.resource.is_empty() {
            format!("forbidden: {err}")
        } else if attrs.name.is_empty() {
            format!("{group_resource} is forbidden: {err}")
        } else {
            format!(
                "{group_resource} {} is forbidden: {err}",
                go_quote(&attrs.name)
            )
        };
        Forbidden {
            message,
            group: attrs.api_group.clone(),
            resource: attrs.resource.clone(),
            name: attrs.name.clone(),
        }
    }

    /// The answer when a request allowed to change `attrs.name` would create it and `create` of
    /// that name is denied with `reason` (kube-apiserver's `withAuthorization` in its patch and
    /// update handlers): `secrets "NAME" is forbidden: REASON`, the reason as the authorizer
    /// gave it (RBAC gives none for a plain denial, so the message ends in `forbidden: `).
    pub fn on_create_by_update(attrs: &Attributes, reason: &str) -> Forbidden {
        Forbidden {
            message: format!(
                "{} {} is forbidden: {reason}",
                group_resource(attrs),
                go_quote(&attrs.name)
            ),
            group: attrs.api_group.clone(),
            resource: attrs.resource.clone(),
            name: attrs.name.clone(),
        }
    }
}

/// `GroupResource.String()`: `resource` or `resource.group`.
fn group_resource(attrs: &Attributes) -> String {
    if attrs.api_group.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}.{}", attrs.resource, attrs.api_group)
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The message for `attrs` denied with `reason` ([`Forbidden::new`]'s message).
pub fn forbidden_message(attrs: &Attributes, reason: &str) -> String {
    Forbidden::new(attrs, reason).message
}

/// `forbiddenMessage`.
fn request_message(attrs: &Attributes) -> String {
    let user = go_quote(&attrs.user.name);
    let verb = &attrs.verb;
    let Some(path) = &attrs.path else {
        let mut resource = attrs.resource.clone();
        if !attrs.subresource.is_empty() {
            resource.push('/');
            resource.push_str(&attrs.subresource);
        }
        let (resource, group) = (go_quote(&resource), go_quote(&attrs.api_group));
        return if attrs.namespace.is_empty() {
            format!("User {user} cannot {verb} resource {resource} in API group {group} at the cluster scope")
        } else {
            let ns = go_quote(&attrs.namespace);
            format!("User {user} cannot {verb} resource {resource} in API group {group} in the namespace {ns}")
        };
    };
    format!("User {user} cannot {verb} path {}", go_quote(path))
}

/// The responsewriters `sanitizer`: "Avoid emitting errors that look like valid HTML. Quotes are
/// okay."
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::Identity;

    fn user(name: &str) -> Identity {
        Identity::new(name, "", vec![])
    }

    #[test]
    fn namespaced_named_request() {
        let a = Attributes::resource(user("app"), "get", "secrets")
            .with_namespace("prod")
            .with_name("db");
        let f = Forbidden::new(&a, "");
        assert_eq!(
            f.message,
            r#"secrets "db" is forbidden: User "app" cannot get resource "secrets" in API group "" in the namespace "prod""#
        );
        assert_eq!(
            (f.group.as_str(), f.resource.as_str(), f.name.as_str()),
            ("", "secrets", "db")
        );
    }

    /// The real message of kyverno/kyverno#8721 (facts §2.4).
    #[test]
    fn list_without_name_prints_the_resource_only() {
        let a = Attributes::resource(
            user("system:serviceaccount:kyverno:kyverno-background-controller"),
            "list",
            "secrets",
        )
        .with_namespace("kyverno");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"secrets is forbidden: User "system:serviceaccount:kyverno:kyverno-background-controller" cannot list resource "secrets" in API group "" in the namespace "kyverno""#
        );
    }

    #[test]
    fn cluster_scope_group_subresource_and_reason() {
        let a = Attributes::resource(user("bob"), "update", "deployments")
            .with_group("apps")
            .with_subresource("scale")
            .with_name("web");
        assert_eq!(
            forbidden_message(
                &a,
                "RBAC: clusterrole.rbac.authorization.k8s.io \"ops\" not found"
            ),
            r#"deployments.apps "web" is forbidden: User "bob" cannot update resource "deployments/scale" in API group "apps" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io "ops" not found"#
        );
        let nodes = Attributes::resource(user("bob"), "list", "nodes");
        assert_eq!(
            forbidden_message(&nodes, ""),
            r#"nodes is forbidden: User "bob" cannot list resource "nodes" in API group "" at the cluster scope"#
        );
    }

    #[test]
    fn non_resource_request() {
        let a = Attributes::non_resource(user("bob"), "get", "/metrics");
        let f = Forbidden::new(&a, "");
        assert_eq!(
            f.message,
            r#"forbidden: User "bob" cannot get path "/metrics""#
        );
        assert_eq!((f.group.as_str(), f.resource.as_str()), ("", ""));
    }

    #[test]
    fn html_is_escaped_in_the_request_part_only() {
        let a = Attributes::resource(user("<b>&co"), "get", "secrets")
            .with_namespace("prod")
            .with_name("db");
        assert_eq!(
            forbidden_message(&a, "a <reason>"),
            r#"secrets "db" is forbidden: User "&lt;b&gt;&amp;co" cannot get resource "secrets" in API group "" in the namespace "prod": a <reason>"#
        );
    }

    #[test]
    fn names_are_quoted_as_go_quotes_them() {
        let a = Attributes::resource(user("a\"b\n"), "get", "secrets").with_namespace("prod");
        assert_eq!(
            forbidden_message(&a, ""),
            r#"secrets is forbidden: User "a\"b\n" cannot get resource "secrets" in API group "" in the namespace "prod""#
        );
    }
}
