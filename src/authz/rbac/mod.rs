//! Kubernetes RBAC as a library: `rbac.authorization.k8s.io/v1` objects ([`types`]) read from
//! manifests and validated as kube-apiserver validates them ([`parse_policy`]), and [`Rbac`],
//! their evaluation exactly as kube-apiserver's RBAC authorizer.
//!
//! A policy is any number of YAML documents (separated by `---`) or JSON objects, each a
//! `Role`, `ClusterRole`, `RoleBinding` or `ClusterRoleBinding`, or a list of them (`kind:
//! List`, as `kubectl get ... -o yaml` prints). Loading refuses, naming the file, document,
//! object and field: unknown fields, other kinds, other API versions, what kube-apiserver's
//! validation refuses (`pkg/apis/rbac/validation`), User or Group subjects with a namespace,
//! and an object defined twice. ClusterRoles with an `aggregationRule` get the rules of the
//! ClusterRoles their selectors match, as the aggregation controller would give them.
//! Bindings to roles the policy does not define are accepted with a warning (Kubernetes
//! accepts them too); they grant nothing.

pub mod bootstrap;
mod eval;
mod parse;
pub mod types;
mod validate;

pub(crate) use eval::aggregate;
pub use eval::{rule_allows, AppliedRules, Rbac};
pub use parse::{Location, Problem};
pub use types::{
    AggregationRule, ClusterRole, ClusterRoleBinding, LabelSelector, LabelSelectorRequirement,
    ObjectMeta, PolicyCounts, PolicyRule, PolicySet, Role, RoleBinding, RoleRef, SelectorOperator,
    Subject,
};

use super::AuthzError;

/// A validated policy, and what is allowed but suspicious in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadedPolicy {
    /// The objects, in the order read.
    pub set: PolicySet,
    /// E.g. bindings to roles the policy does not define, naming file, document and binding.
    pub warnings: Vec<String>,
}

/// Parses and validates a policy from `(source, text)` inputs (`source` names the input in
/// problems, e.g. a file name), in order. Every problem of every input is reported at once.
pub fn parse_policy<'a>(
    inputs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<LoadedPolicy, AuthzError> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    let mut sources = Vec::new();
    for (source, text) in inputs {
        parse::parse_text(text, source, &mut objects, &mut problems);
        sources.push(source);
    }
    let checked = validate::check(objects, &mut problems);
    if !problems.is_empty() {
        // In the order of the inputs and their documents, whichever check found them.
        let input = |p: &parse::Problem| sources.iter().position(|s| *s == p.location.source);
        problems.sort_by_key(|p| (input(p), p.location.document, p.location.item));
        return Err(AuthzError::Invalid { problems });
    }
    Ok(LoadedPolicy {
        set: checked.set,
        warnings: checked.warnings,
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod upstream_tests;
