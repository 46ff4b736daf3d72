//! RBAC evaluation exactly as kube-apiserver's RBAC authorizer does it:
//! `pkg/registry/rbac/validation/rule.go` (`VisitRulesFor`, `appliesTo`, `appliesToUser`,
//! `GetRoleReferenceRules`), `plugin/pkg/auth/authorizer/rbac/rbac.go` (`Authorize`,
//! `RuleAllows`, `RulesFor`) and `pkg/apis/rbac/v1/evaluation_helpers.go` (`VerbMatches`,
//! `APIGroupMatches`, `ResourceMatches`, `ResourceNameMatches`, `NonResourceURLMatches`), with
//! the privileged-group authorizer kube-apiserver puts first (`system:masters` may do anything).
//!
//! What differs is only how fast bindings are found: the policy is compiled once per load. Role
//! references are resolved ahead of time (a missing role becomes the same resolution error
//! upstream reports), and each scope (cluster-wide, and each namespace) indexes its bindings by
//! user name, service account user name and group, so a request looks at the bindings naming
//! the caller and nothing else, in policy order, exactly as a full scan would.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use super::types::{
    PolicyCounts, PolicyRule, PolicySet, Subject, ALL, GROUP_KIND, SERVICE_ACCOUNT_KIND, USER_KIND,
};
use crate::authn::{names, Identity};
use crate::authz::{go_quote, Attributes, Authorizer, Decision};

/// A compiled RBAC policy: the authorizer kube-apiserver runs with `--authorization-mode=RBAC`
/// (after its `system:masters` authorizer), over a fixed set of objects.
#[derive(Debug, Default)]
pub struct Rbac {
    cluster: Scope,
    namespaces: HashMap<String, Scope>,
    counts: PolicyCounts,
}

/// The bindings of one scope and their index by subject.
#[derive(Debug, Default)]
struct Scope {
    bindings: Vec<Binding>,
    /// User names (and service account user names) → bindings naming them, in policy order.
    users: HashMap<String, Vec<u32>>,
    /// Group names → bindings naming them, in policy order.
    groups: HashMap<String, Vec<u32>>,
}

type Rules = Arc<[PolicyRule]>;

#[derive(Debug)]
struct Binding {
    /// The binding's namespace ("" for a ClusterRoleBinding).
    namespace: String,
    subjects: Vec<Subject>,
    /// Per subject: `RBAC: allowed by <binding> of <role> to <subject>`.
    reasons: Vec<String>,
    /// The role's rules, or why they cannot be found.
    rules: Result<Rules, Arc<str>>,
}

/// What a binding grants to whom: the rules of the role it references.
struct RoleTable<'a> {
    cluster_roles: HashMap<&'a str, Rules>,
    roles: HashMap<(&'a str, &'a str), Rules>,
}

impl RoleTable<'_> {
    /// `GetRoleReferenceRules`, with the listers' NotFound messages.
    fn rules(&self, kind: &str, name: &str, binding_ns: &str) -> Result<Rules, Arc<str>> {
        match kind {
            "Role" => self.roles.get(&(binding_ns, name)).cloned().ok_or_else(|| {
                format!(
                    "role.rbac.authorization.k8s.io {} not found",
                    go_quote(name)
                )
                .into()
            }),
            "ClusterRole" => self.cluster_roles.get(name).cloned().ok_or_else(|| {
                format!(
                    "clusterrole.rbac.authorization.k8s.io {} not found",
                    go_quote(name)
                )
                .into()
            }),
            other => Err(format!("unsupported role reference kind: {}", go_quote(other)).into()),
        }
    }
}

/// `describeSubject`: `Kind "name"`, service accounts as `ServiceAccount "name/namespace"`.
fn describe_subject(s: &Subject, binding_ns: &str) -> String {
    if s.kind == SERVICE_ACCOUNT_KIND {
        let ns = if s.namespace.is_empty() {
            binding_ns
        } else {
            &s.namespace
        };
        format!("{} {}", s.kind, go_quote(&format!("{}/{ns}", s.name)))
    } else {
        format!("{} {}", s.kind, go_quote(&s.name))
    }
}

impl Scope {
    fn add(&mut self, binding: Binding) {
        let idx = u32::try_from(self.bindings.len()).expect("fewer than 2^32 bindings in a scope");
        let push = |map: &mut HashMap<String, Vec<u32>>, key: String| {
            let list = map.entry(key).or_default();
            if list.last() != Some(&idx) {
                list.push(idx);
            }
        };
        for s in &binding.subjects {
            match s.kind.as_str() {
                USER_KIND => push(&mut self.users, s.name.clone()),
                GROUP_KIND => push(&mut self.groups, s.name.clone()),
                SERVICE_ACCOUNT_KIND => {
                    let ns = if s.namespace.is_empty() {
                        &binding.namespace
                    } else {
                        &s.namespace
                    };
                    if !ns.is_empty() {
                        let user = format!("{}{ns}:{}", names::SERVICE_ACCOUNT_USER_PREFIX, s.name);
                        push(&mut self.users, user);
                    }
                }
                // Unknown kinds never match (appliesToUser).
                _ => {}
            }
        }
        self.bindings.push(binding);
    }

    /// Calls `f` with each binding that applies to `user`, in policy order, and the index of
    /// its first subject that does (`appliesTo`), until `f` breaks.
    fn visit<'a, B>(
        &'a self,
        user: &Identity,
        mut f: impl FnMut(&'a Binding, usize) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        // The bindings naming the user or one of its groups: one list as is, several merged
        // back into policy order.
        let lists = self.users.get(user.name.as_str()).into_iter().chain(
            user.groups
                .iter()
                .filter_map(|g| self.groups.get(g.as_str())),
        );
        let mut first: &[u32] = &[];
        let mut merged: Vec<u32> = Vec::new();
        let mut sources = 0;
        for list in lists {
            sources += 1;
            if sources == 1 {
                first = list;
            } else {
                if sources == 2 {
                    merged.extend_from_slice(first);
                }
                merged.extend_from_slice(list);
            }
        }
        let candidates: &[u32] = if sources <= 1 {
            first
        } else {
            merged.sort_unstable();
            merged.dedup();
            &merged
        };
        for &i in candidates {
            let binding = &self.bindings[i as usize];
            if let Some(subject) = applies_to(user, &binding.subjects, &binding.namespace) {
                f(binding, subject)?;
            }
        }
        ControlFlow::Continue(())
    }
}

/// `appliesTo`: the index of the first of `subjects` that names `user`, for a binding in
/// `namespace` ("" for a ClusterRoleBinding).
pub(crate) fn applies_to(user: &Identity, subjects: &[Subject], namespace: &str) -> Option<usize> {
    subjects
        .iter()
        .position(|s| applies_to_user(user, s, namespace))
}

/// `appliesToUser`: users by exact name (`*` is not a wildcard), groups by membership, service
/// accounts by their user name `system:serviceaccount:<ns>:<name>`, the namespace defaulting to
/// the binding's. Other kinds never apply.
fn applies_to_user(user: &Identity, s: &Subject, namespace: &str) -> bool {
    match s.kind.as_str() {
        USER_KIND => user.name == s.name,
        GROUP_KIND => user.in_group(&s.name),
        SERVICE_ACCOUNT_KIND => {
            let ns = if s.namespace.is_empty() {
                namespace
            } else {
                &s.namespace
            };
            !ns.is_empty() && service_account_matches(ns, &s.name, &user.name)
        }
        _ => false,
    }
}

/// `serviceaccount.MatchesUsername`.
fn service_account_matches(namespace: &str, name: &str, username: &str) -> bool {
    username
        .strip_prefix(names::SERVICE_ACCOUNT_USER_PREFIX)
        .and_then(|rest| rest.strip_prefix(namespace))
        .and_then(|rest| rest.strip_prefix(':'))
        == Some(name)
}

/// `VerbMatches`.
fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == ALL || v == verb)
}

/// `APIGroupMatches`.
fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    rule.api_groups.iter().any(|g| g == ALL || g == group)
}

/// `ResourceMatches`: `*`, the exact `resource` or `resource/subresource`, or `*/subresource`.
/// A rule on `pods` does not match `pods/status`.
fn resource_matches(rule: &PolicyRule, resource: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|r| {
        if r == ALL {
            return true;
        }
        if subresource.is_empty() {
            return r == resource;
        }
        let combined = r.len() == resource.len() + 1 + subresource.len()
            && r.starts_with(resource)
            && r.as_bytes()[resource.len()] == b'/'
            && r.ends_with(subresource);
        combined
            || (r.len() == subresource.len() + 2 && r.starts_with("*/") && r.ends_with(subresource))
    })
}

/// `ResourceNameMatches`: an empty list allows every name; otherwise the request must name one
/// of them (a request without a name, such as a list without a `metadata.name` field selector,
/// does not match).
fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    rule.resource_names.is_empty() || rule.resource_names.iter().any(|n| n == name)
}

/// `NonResourceURLMatches`: `*`, the exact path, or a rule ending in `*` as a prefix (`/apis/*`
/// does not match `/apis`).
fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|u| {
        u == ALL
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|_| path.starts_with(u.trim_end_matches('*')))
    })
}

/// `RuleAllows`: whether `rule` allows the request `attrs` (its user is not looked at).
pub fn rule_allows(attrs: &Attributes, rule: &PolicyRule) -> bool {
    match &attrs.path {
        None => {
            verb_matches(rule, &attrs.verb)
                && api_group_matches(rule, &attrs.api_group)
                && resource_matches(rule, &attrs.resource, &attrs.subresource)
                && resource_name_matches(rule, &attrs.name)
        }
        Some(path) => verb_matches(rule, &attrs.verb) && non_resource_url_matches(rule, path),
    }
}

/// `utilerrors.NewAggregate(errs).Error()`: one message as is, several deduplicated in `[a, b]`.
pub(crate) fn aggregate(errors: &[&str]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(e) {
            seen.push(e);
        }
    }
    if seen.len() == 1 {
        seen[0].to_owned()
    } else {
        format!("[{}]", seen.join(", "))
    }
}

/// The rules that apply to a user in a namespace ([`Rbac::rules_for`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppliedRules {
    /// Rules from ClusterRoleBindings, then from RoleBindings of the namespace, in policy order.
    pub rules: Vec<PolicyRule>,
    /// Roles that applying bindings reference but the policy does not define.
    pub errors: Vec<String>,
}

impl Rbac {
    /// Compiles `policy` (already validated, or built by hand). Bindings to roles the policy
    /// does not define are kept: they grant nothing, and requests they apply to carry the
    /// resolution error in their denial reason, as kube-apiserver's do.
    pub fn new(policy: &PolicySet) -> Rbac {
        let table = RoleTable {
            cluster_roles: policy
                .cluster_roles
                .iter()
                .map(|r| (r.metadata.name.as_str(), Rules::from(r.rules.as_slice())))
                .collect(),
            roles: policy
                .roles
                .iter()
                .map(|r| {
                    let key = (r.metadata.namespace.as_str(), r.metadata.name.as_str());
                    (key, Rules::from(r.rules.as_slice()))
                })
                .collect(),
        };
        let mut rbac = Rbac {
            counts: policy.counts(),
            ..Rbac::default()
        };
        for b in &policy.cluster_role_bindings {
            let prefix = format!(
                "RBAC: allowed by ClusterRoleBinding {} of {} {} to ",
                go_quote(&b.metadata.name),
                b.role_ref.kind,
                go_quote(&b.role_ref.name)
            );
            rbac.cluster.add(Binding {
                reasons: b
                    .subjects
                    .iter()
                    .map(|s| prefix.clone() + &describe_subject(s, ""))
                    .collect(),
                namespace: String::new(),
                subjects: b.subjects.clone(),
                rules: table.rules(&b.role_ref.kind, &b.role_ref.name, ""),
            });
        }
        for b in &policy.role_bindings {
            let ns = &b.metadata.namespace;
            let prefix = format!(
                "RBAC: allowed by RoleBinding {} of {} {} to ",
                go_quote(&format!("{}/{ns}", b.metadata.name)),
                b.role_ref.kind,
                go_quote(&b.role_ref.name)
            );
            rbac.namespaces.entry(ns.clone()).or_default().add(Binding {
                reasons: b
                    .subjects
                    .iter()
                    .map(|s| prefix.clone() + &describe_subject(s, ns))
                    .collect(),
                namespace: ns.clone(),
                subjects: b.subjects.clone(),
                rules: table.rules(&b.role_ref.kind, &b.role_ref.name, ns),
            });
        }
        rbac
    }

    /// A policy with no objects: only `system:masters` may do anything.
    pub fn empty() -> Rbac {
        Rbac::default()
    }

    /// [`Rbac::new`] of `policy` with the bootstrap ClusterRoles and bindings it does not define
    /// itself ([`bootstrap`](super::bootstrap)): what a server's policy is. Its counts are
    /// those of `policy`.
    pub fn with_bootstrap(policy: &PolicySet) -> Rbac {
        Rbac {
            counts: policy.counts(),
            ..Rbac::new(&super::bootstrap::with_bootstrap(policy))
        }
    }

    /// How many objects of each kind the policy holds.
    pub fn counts(&self) -> PolicyCounts {
        self.counts
    }

    /// `VisitRulesFor`: each binding that applies to `user`, ClusterRoleBindings first, then
    /// (if `namespace` is not "") the RoleBindings of `namespace`.
    fn visit<'a, B>(
        &'a self,
        user: &Identity,
        namespace: &str,
        mut f: impl FnMut(&'a Binding, usize) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        self.cluster.visit(user, &mut f)?;
        if !namespace.is_empty() {
            if let Some(scope) = self.namespaces.get(namespace) {
                scope.visit(user, &mut f)?;
            }
        }
        ControlFlow::Continue(())
    }

    /// `RulesFor`: every rule that applies to `user` in `namespace` ("" for cluster-wide rules
    /// only), and the resolution errors met. The `system:masters` shortcut is not included
    /// (see [`RuleResolver`](crate::authz::RuleResolver) for that).
    pub fn rules_for(&self, user: &Identity, namespace: &str) -> AppliedRules {
        let mut out = AppliedRules::default();
        let _ = self.visit(user, namespace, |binding, _| -> ControlFlow<()> {
            match &binding.rules {
                Ok(rules) => out.rules.extend(rules.iter().cloned()),
                Err(e) => out.errors.push(e.to_string()),
            }
            ControlFlow::Continue(())
        });
        out
    }
}

impl Authorizer for Rbac {
    /// kube-apiserver's authorizer chain for `--authorization-mode=RBAC`: members of
    /// `system:masters` are allowed with an empty reason (the privileged-group authorizer);
    /// otherwise the first rule that allows wins, with reason `RBAC: allowed by ...`; otherwise
    /// the request is denied, with reason `RBAC: <resolution errors>` if roles were missing, or
    /// "".
    fn authorize(&self, attrs: &Attributes) -> Decision {
        if attrs.user.in_group(names::SYSTEM_MASTERS) {
            return Decision::Allow {
                reason: String::new(),
            };
        }
        let mut errors: Vec<&str> = Vec::new();
        let found = self.visit(&attrs.user, &attrs.namespace, |binding, subject| {
            match &binding.rules {
                Ok(rules) => {
                    if rules.iter().any(|r| rule_allows(attrs, r)) {
                        return ControlFlow::Break(&binding.reasons[subject]);
                    }
                }
                Err(e) => errors.push(e),
            }
            ControlFlow::Continue(())
        });
        if let ControlFlow::Break(reason) = found {
            return Decision::Allow {
                reason: reason.clone(),
            };
        }
        tracing::debug!(
            user = %attrs.user.name,
            groups = ?attrs.user.groups,
            verb = %attrs.verb,
            resource = %attrs.resource,
            subresource = %attrs.subresource,
            api_group = %attrs.api_group,
            name = %attrs.name,
            namespace = %attrs.namespace,
            path = attrs.path.as_deref().unwrap_or(""),
            "RBAC: no rules authorize the request"
        );
        let reason = if errors.is_empty() {
            String::new()
        } else {
            format!("RBAC: {}", aggregate(&errors))
        };
        Decision::Deny { reason }
    }
}
