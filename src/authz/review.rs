//! The reviews behind `kubectl auth can-i`, as plain values for the API layer to convert:
//!
//! - [`self_subject_access_review`] (`SelfSubjectAccessReview`, `authorization.k8s.io/v1`): may
//!   the caller do this? `allowed`, `denied` and `reason` as kube-apiserver's REST handler fills
//!   them from the authorizer's decision. RBAC never denies explicitly (it has "no opinion"),
//!   so a refused request is `allowed: false, denied: false`, as in Kubernetes.
//! - [`self_subject_rules_review`] (`SelfSubjectRulesReview`): the resource and non-resource
//!   rules that apply to the caller in a namespace (upstream `RBACAuthorizer.RulesFor`: rules of
//!   the ClusterRoleBindings, then of the namespace's RoleBindings), `incomplete: false`, and
//!   missing roles in `evaluationError`.

use super::rbac::{aggregate, PolicyRule, Rbac};
use super::{Attributes, Authorizer, AuthzError, Decision, RuleResolver};
use crate::authn::{names, Identity};

/// `spec.resourceAttributes` of an access review.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceAttributes {
    /// Namespace ("" for cluster-scoped resources and all namespaces).
    pub namespace: String,
    /// Verb, e.g. `get`, or `*` for all.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// API version (RBAC does not look at it).
    pub version: String,
    /// Resource, e.g. `secrets`.
    pub resource: String,
    /// Subresource, "" if none.
    pub subresource: String,
    /// Object name, "" for all.
    pub name: String,
}

/// `spec.nonResourceAttributes` of an access review.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NonResourceAttributes {
    /// The path, e.g. `/healthz`.
    pub path: String,
    /// The lower-case HTTP verb, e.g. `get`.
    pub verb: String,
}

/// What an access review asks (exactly one of the two, as the API requires).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessReviewSpec {
    /// A resource request.
    Resource(ResourceAttributes),
    /// A non-resource request.
    NonResource(NonResourceAttributes),
}

impl AccessReviewSpec {
    /// The request `user` would make.
    pub fn attributes(&self, user: &Identity) -> Attributes {
        match self {
            AccessReviewSpec::Resource(r) => {
                Attributes::resource(user.clone(), &r.verb, &r.resource)
                    .with_group(&r.group)
                    .with_subresource(&r.subresource)
                    .with_namespace(&r.namespace)
                    .with_name(&r.name)
            }
            AccessReviewSpec::NonResource(n) => {
                Attributes::non_resource(user.clone(), &n.verb, &n.path)
            }
        }
    }
}

/// `status` of an access review.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubjectAccessReviewStatus {
    /// The request would be allowed.
    pub allowed: bool,
    /// An authorizer explicitly denied it (never with RBAC: a refused request is `false`).
    pub denied: bool,
    /// Why, as the authorizer says (`RBAC: allowed by ...`, or "").
    pub reason: String,
    /// An error met while evaluating (unused by RBAC, which reports missing roles in `reason`).
    pub evaluation_error: String,
}

/// `SelfSubjectAccessReview`: whether `user` (the caller, after impersonation) may make the
/// request `spec` describes.
pub fn self_subject_access_review(
    authz: &dyn Authorizer,
    user: &Identity,
    spec: &AccessReviewSpec,
) -> SubjectAccessReviewStatus {
    let decision = authz.authorize(&spec.attributes(user));
    SubjectAccessReviewStatus {
        allowed: decision.allowed(),
        denied: false,
        reason: match decision {
            Decision::Allow { reason } | Decision::Deny { reason } => reason,
        },
        evaluation_error: String::new(),
    }
}

/// One `resourceRules` entry of a rules review.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceRule {
    /// `verbs`.
    pub verbs: Vec<String>,
    /// `apiGroups`.
    pub api_groups: Vec<String>,
    /// `resources`.
    pub resources: Vec<String>,
    /// `resourceNames` (empty: all).
    pub resource_names: Vec<String>,
}

/// One `nonResourceRules` entry of a rules review.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NonResourceRule {
    /// `verbs`.
    pub verbs: Vec<String>,
    /// `nonResourceURLs`.
    pub non_resource_urls: Vec<String>,
}

/// `status` of a rules review.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubjectRulesReviewStatus {
    /// Rules on resources.
    pub resource_rules: Vec<ResourceRule>,
    /// Rules on non-resource URLs.
    pub non_resource_rules: Vec<NonResourceRule>,
    /// The lists may be missing rules (never with RBAC alone).
    pub incomplete: bool,
    /// Why some rules could not be listed (roles referenced but not defined), "" if none.
    pub evaluation_error: String,
}

/// `SelfSubjectRulesReview`: the rules that apply to `user` in `namespace`. An empty namespace
/// is refused as kube-apiserver refuses it ([`AuthzError::NoNamespace`], "no namespace on
/// request").
pub fn self_subject_rules_review(
    resolver: &dyn RuleResolver,
    user: &Identity,
    namespace: &str,
) -> Result<SubjectRulesReviewStatus, AuthzError> {
    if namespace.is_empty() {
        return Err(AuthzError::NoNamespace);
    }
    Ok(resolver.rules_for(user, namespace))
}

/// The rules of `*` on everything (`AlwaysAllow`, and the `cluster-admin` ClusterRole that
/// Kubernetes' bootstrap policy binds to `system:masters`).
pub(crate) fn everything() -> SubjectRulesReviewStatus {
    let all = || vec!["*".to_owned()];
    SubjectRulesReviewStatus {
        resource_rules: vec![ResourceRule {
            verbs: all(),
            api_groups: all(),
            resources: all(),
            resource_names: Vec::new(),
        }],
        non_resource_rules: vec![NonResourceRule {
            verbs: all(),
            non_resource_urls: all(),
        }],
        incomplete: false,
        evaluation_error: String::new(),
    }
}

/// `RBACAuthorizer.RulesFor`'s split of policy rules: a rule with resources is a resource rule,
/// one with non-resource URLs a non-resource rule.
fn split(rules: &[PolicyRule], status: &mut SubjectRulesReviewStatus) {
    for r in rules {
        if !r.resources.is_empty() {
            status.resource_rules.push(ResourceRule {
                verbs: r.verbs.clone(),
                api_groups: r.api_groups.clone(),
                resources: r.resources.clone(),
                resource_names: r.resource_names.clone(),
            });
        }
        if !r.non_resource_urls.is_empty() {
            status.non_resource_rules.push(NonResourceRule {
                verbs: r.verbs.clone(),
                non_resource_urls: r.non_resource_urls.clone(),
            });
        }
    }
}

impl RuleResolver for Rbac {
    /// The RBAC rules of `user` in `namespace`. A member of `system:masters` is shown first the
    /// rules of the `cluster-admin` ClusterRole Kubernetes binds to that group (`*` on
    /// everything), matching what it may do: its privileged-group authorizer needs no binding.
    fn rules_for(&self, user: &Identity, namespace: &str) -> SubjectRulesReviewStatus {
        let mut status = if user.in_group(names::SYSTEM_MASTERS) {
            everything()
        } else {
            SubjectRulesReviewStatus::default()
        };
        let applied = Rbac::rules_for(self, user, namespace);
        split(&applied.rules, &mut status);
        if !applied.errors.is_empty() {
            let errors: Vec<&str> = applied.errors.iter().map(String::as_str).collect();
            status.evaluation_error = aggregate(&errors);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::rbac::parse_policy;
    use crate::authz::AlwaysAllow;

    const POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: health}
rules: [{nonResourceURLs: [/healthz, /readyz], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: health}
subjects: [{kind: Group, name: system:authenticated}]
roleRef: {kind: ClusterRole, name: health}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: prod}
rules: [{apiGroups: [""], resources: [secrets], resourceNames: [db], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app, namespace: prod}
subjects: [{kind: User, name: app}]
roleRef: {kind: Role, name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: broken, namespace: prod}
subjects: [{kind: User, name: app}]
roleRef: {kind: ClusterRole, name: edit}
"#;

    fn rbac() -> Rbac {
        Rbac::new(&parse_policy([("p.yaml", POLICY)]).unwrap().set)
    }

    fn app() -> Identity {
        Identity::new("app", "", vec!["system:authenticated".into()])
    }

    fn secrets(verb: &str, name: &str) -> AccessReviewSpec {
        AccessReviewSpec::Resource(ResourceAttributes {
            namespace: "prod".into(),
            verb: verb.into(),
            version: "v1".into(),
            resource: "secrets".into(),
            name: name.into(),
            ..ResourceAttributes::default()
        })
    }

    /// `kubectl auth can-i get secrets/db -n prod` → yes; `can-i list secrets` → no, with
    /// `allowed: false, denied: false` as RBAC's "no opinion" gives.
    #[test]
    fn access_review() {
        let r = rbac();
        let yes = self_subject_access_review(&r, &app(), &secrets("get", "db"));
        assert_eq!(
            yes,
            SubjectAccessReviewStatus {
                allowed: true,
                denied: false,
                reason: r#"RBAC: allowed by RoleBinding "app/prod" of Role "reader" to User "app""#
                    .into(),
                evaluation_error: String::new(),
            }
        );
        let no = self_subject_access_review(&r, &app(), &secrets("list", ""));
        assert!(!no.allowed && !no.denied);
        assert_eq!(
            no.reason,
            r#"RBAC: clusterrole.rbac.authorization.k8s.io "edit" not found"#
        );
        let health = AccessReviewSpec::NonResource(NonResourceAttributes {
            path: "/healthz".into(),
            verb: "get".into(),
        });
        assert!(self_subject_access_review(&r, &app(), &health).allowed);
        let anonymous = Identity::new(
            "system:anonymous",
            "",
            vec!["system:unauthenticated".into()],
        );
        assert!(!self_subject_access_review(&r, &anonymous, &health).allowed);
        assert!(self_subject_access_review(&AlwaysAllow, &anonymous, &health).allowed);
    }

    /// `kubectl auth can-i --list -n prod`.
    #[test]
    fn rules_review() {
        let r = rbac();
        let got = self_subject_rules_review(&r, &app(), "prod").unwrap();
        assert_eq!(
            got.resource_rules,
            [ResourceRule {
                verbs: vec!["get".into()],
                api_groups: vec!["".into()],
                resources: vec!["secrets".into()],
                resource_names: vec!["db".into()],
            }]
        );
        assert_eq!(
            got.non_resource_rules,
            [NonResourceRule {
                verbs: vec!["get".into()],
                non_resource_urls: vec!["/healthz".into(), "/readyz".into()],
            }]
        );
        assert!(!got.incomplete);
        assert_eq!(
            got.evaluation_error,
            r#"clusterrole.rbac.authorization.k8s.io "edit" not found"#
        );

        let elsewhere = self_subject_rules_review(&r, &app(), "dev").unwrap();
        assert!(elsewhere.resource_rules.is_empty() && elsewhere.evaluation_error.is_empty());
        assert_eq!(elsewhere.non_resource_rules.len(), 1);

        assert!(matches!(
            self_subject_rules_review(&r, &app(), ""),
            Err(AuthzError::NoNamespace)
        ));
        let root = Identity::new("root", "", vec!["system:masters".into()]);
        let masters = self_subject_rules_review(&r, &root, "prod").unwrap();
        assert_eq!(masters, everything());
        assert_eq!(
            self_subject_rules_review(&AlwaysAllow, &app(), "prod").unwrap(),
            everything()
        );
    }
}
