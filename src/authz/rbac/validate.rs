//! The checks kube-apiserver makes before it stores an RBAC object
//! (`pkg/apis/rbac/validation/validation.go`: `ValidateRole`, `ValidateClusterRole`,
//! `ValidateRoleBinding`, `ValidateClusterRoleBinding`, `ValidatePolicyRule`,
//! `ValidateRoleBindingSubject`), worded as it words them, plus what a set of files needs and an
//! API server gets for free: no object defined twice, and aggregated ClusterRoles filled in as
//! the aggregation controller fills them (`pkg/controller/clusterroleaggregation`).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::parse::{describe, not_supported, FieldIssue, Located, Location, Object, Problem};
use super::types::{
    ClusterRole, LabelSelector, ObjectMeta, PolicyRule, PolicySet, SelectorOperator, Subject,
    GROUP_KIND, GROUP_NAME, SERVICE_ACCOUNT_KIND, USER_KIND,
};
use crate::authz::go_quote;
use crate::names::Namespace;
use crate::store::model::{label_value_errors, qualified_name_errors};

/// A validated policy and what is suspicious but allowed.
pub(crate) struct Checked {
    pub set: PolicySet,
    pub warnings: Vec<String>,
}

/// Validates `objects`, reporting each invalid object's problems (and duplicates) to `problems`,
/// and returns the valid ones as a [`PolicySet`] with aggregated ClusterRoles filled in.
pub(crate) fn check(objects: Vec<Located>, problems: &mut Vec<Problem>) -> Checked {
    let mut seen: HashMap<(&'static str, String, String), Location> = HashMap::new();
    let mut set = PolicySet::default();
    let mut binding_locations: Vec<Location> = Vec::new();
    let mut cluster_binding_locations: Vec<Location> = Vec::new();
    for Located { location, object } in objects {
        let meta = object.metadata();
        let name = describe(object.kind(), &meta.namespace, &meta.name);
        let issues = validate(&object);
        if !issues.is_empty() {
            problems.extend(issues.into_iter().map(|i| Problem {
                location: location.clone(),
                object: Some(name.clone()),
                field: i.field,
                message: i.message,
            }));
            continue;
        }
        let key = (object.kind(), meta.namespace.clone(), meta.name.clone());
        if let Some(first) = seen.get(&key) {
            problems.push(Problem {
                location,
                object: Some(name),
                field: "metadata.name".to_owned(),
                message: format!(
                    "Duplicate value: {}: the same {} is also defined at {first}",
                    go_quote(&meta.name),
                    object.kind()
                ),
            });
            continue;
        }
        seen.insert(key, location.clone());
        match object {
            Object::Role(o) => set.roles.push(o),
            Object::ClusterRole(o) => set.cluster_roles.push(o),
            Object::RoleBinding(o) => {
                binding_locations.push(location);
                set.role_bindings.push(o)
            }
            Object::ClusterRoleBinding(o) => {
                cluster_binding_locations.push(location);
                set.cluster_role_bindings.push(o)
            }
        }
    }
    aggregate(&mut set.cluster_roles);
    let warnings = dangling_references(&set, &binding_locations, &cluster_binding_locations);
    Checked { set, warnings }
}

fn validate(object: &Object) -> Vec<FieldIssue> {
    let mut issues = Vec::new();
    match object {
        Object::Role(r) => {
            validate_meta(&r.metadata, true, &mut issues);
            for (i, rule) in r.rules.iter().enumerate() {
                validate_rule(rule, true, &format!("rules[{i}]"), &mut issues);
            }
        }
        Object::ClusterRole(r) => validate_cluster_role(r, &mut issues),
        Object::RoleBinding(b) => {
            validate_meta(&b.metadata, true, &mut issues);
            validate_binding(
                &b.role_ref.api_group,
                &b.role_ref.kind,
                &b.role_ref.name,
                &["Role", "ClusterRole"],
                &mut issues,
            );
            for (i, s) in b.subjects.iter().enumerate() {
                validate_subject(s, true, &format!("subjects[{i}]"), &mut issues);
            }
        }
        Object::ClusterRoleBinding(b) => {
            validate_meta(&b.metadata, false, &mut issues);
            validate_binding(
                &b.role_ref.api_group,
                &b.role_ref.kind,
                &b.role_ref.name,
                &["ClusterRole"],
                &mut issues,
            );
            for (i, s) in b.subjects.iter().enumerate() {
                validate_subject(s, false, &format!("subjects[{i}]"), &mut issues);
            }
        }
    }
    issues
}

fn validate_meta(meta: &ObjectMeta, namespaced: bool, issues: &mut Vec<FieldIssue>) {
    if meta.name.is_empty() {
        issues.push(FieldIssue::new(
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    }
    for msg in crate::names::path_segment_problems(&meta.name) {
        issues.push(FieldIssue::new(
            "metadata.name",
            format!("Invalid value: {}: {msg}", go_quote(&meta.name)),
        ));
    }
    if namespaced {
        if meta.namespace.is_empty() {
            issues.push(FieldIssue::new("metadata.namespace", "Required value"));
        } else if let Err(e) = Namespace::try_from(meta.namespace.as_str()) {
            issues.push(FieldIssue::new(e.field, e.message));
        }
    } else if !meta.namespace.is_empty() {
        issues.push(FieldIssue::new(
            "metadata.namespace",
            "Forbidden: not allowed on this type",
        ));
    }
    // `ValidateLabels`, as `ValidateObjectMeta` checks them.
    for (k, v) in &meta.labels {
        for msg in qualified_name_errors(k) {
            issues.push(FieldIssue::new(
                "metadata.labels",
                format!("Invalid value: {}: {msg}", go_quote(k)),
            ));
        }
        for msg in label_value_errors(v) {
            issues.push(FieldIssue::new(
                "metadata.labels",
                format!("Invalid value: {}: {msg}", go_quote(v)),
            ));
        }
    }
}

fn validate_cluster_role(r: &ClusterRole, issues: &mut Vec<FieldIssue>) {
    validate_meta(&r.metadata, false, issues);
    for (i, rule) in r.rules.iter().enumerate() {
        validate_rule(rule, false, &format!("rules[{i}]"), issues);
    }
    if let Some(agg) = &r.aggregation_rule {
        if agg.cluster_role_selectors.is_empty() {
            issues.push(FieldIssue::new(
                "aggregationRule.clusterRoleSelectors",
                "Required value: at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
    }
}

/// `ValidatePolicyRule`.
fn validate_rule(rule: &PolicyRule, namespaced: bool, path: &str, issues: &mut Vec<FieldIssue>) {
    if rule.verbs.is_empty() {
        issues.push(FieldIssue::new(
            format!("{path}.verbs"),
            "Required value: verbs must contain at least one value",
        ));
    }
    if !rule.non_resource_urls.is_empty() {
        let field = format!("{path}.nonResourceURLs");
        let value = crate::authz::go_string_slice(&rule.non_resource_urls);
        if namespaced {
            issues.push(FieldIssue::new(
                field.clone(),
                format!(
                    "Invalid value: {value}: namespaced rules cannot apply to non-resource URLs"
                ),
            ));
        }
        if !rule.api_groups.is_empty()
            || !rule.resources.is_empty()
            || !rule.resource_names.is_empty()
        {
            issues.push(FieldIssue::new(
                field,
                format!("Invalid value: {value}: rules cannot apply to both regular resources and non-resource URLs"),
            ));
        }
        return;
    }
    if rule.api_groups.is_empty() {
        issues.push(FieldIssue::new(
            format!("{path}.apiGroups"),
            "Required value: resource rules must supply at least one api group",
        ));
    }
    if rule.resources.is_empty() {
        issues.push(FieldIssue::new(
            format!("{path}.resources"),
            "Required value: resource rules must supply at least one resource",
        ));
    }
}

fn validate_binding(
    api_group: &str,
    kind: &str,
    name: &str,
    kinds: &[&str],
    issues: &mut Vec<FieldIssue>,
) {
    if api_group != GROUP_NAME {
        issues.push(FieldIssue::new(
            "roleRef.apiGroup",
            not_supported(api_group, &[GROUP_NAME]),
        ));
    }
    if !kinds.contains(&kind) {
        issues.push(FieldIssue::new("roleRef.kind", not_supported(kind, kinds)));
    }
    if name.is_empty() {
        issues.push(FieldIssue::new("roleRef.name", "Required value"));
    }
    for msg in crate::names::path_segment_problems(name) {
        issues.push(FieldIssue::new(
            "roleRef.name",
            format!("Invalid value: {}: {msg}", go_quote(name)),
        ));
    }
}

/// The regular expression of `IsDNS1123Subdomain`, without its length limit.
fn dns1123_subdomain_shape(s: &str) -> bool {
    s.split('.').all(|part| {
        let b = part.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

/// `ValidateServiceAccountName` (`IsDNS1123Subdomain`), with apimachinery's messages.
fn service_account_name_problems(name: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if name.len() > 253 {
        out.push("must be no more than 253 characters");
    }
    if !dns1123_subdomain_shape(name) {
        out.push("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')");
    }
    out
}

/// `ValidateRoleBindingSubject`. A namespace on a User or Group subject is accepted and
/// ignored, as kube-apiserver's validation and RBAC authorizer do (`rbac/v1/types.go` says an
/// authorizer should report it, but upstream's does not), so that a cluster's policy loads.
fn validate_subject(s: &Subject, namespaced: bool, path: &str, issues: &mut Vec<FieldIssue>) {
    if s.name.is_empty() {
        issues.push(FieldIssue::new(format!("{path}.name"), "Required value"));
    }
    match s.kind.as_str() {
        SERVICE_ACCOUNT_KIND => {
            if !s.name.is_empty() {
                for msg in service_account_name_problems(&s.name) {
                    issues.push(FieldIssue::new(
                        format!("{path}.name"),
                        format!("Invalid value: {}: {msg}", go_quote(&s.name)),
                    ));
                }
            }
            if !s.api_group.is_empty() {
                issues.push(FieldIssue::new(
                    format!("{path}.apiGroup"),
                    not_supported(&s.api_group, &[""]),
                ));
            }
            if !namespaced && s.namespace.is_empty() {
                issues.push(FieldIssue::new(
                    format!("{path}.namespace"),
                    "Required value",
                ));
            }
        }
        USER_KIND | GROUP_KIND => {
            if s.api_group != GROUP_NAME {
                issues.push(FieldIssue::new(
                    format!("{path}.apiGroup"),
                    not_supported(&s.api_group, &[GROUP_NAME]),
                ));
            }
        }
        other => issues.push(FieldIssue::new(
            format!("{path}.kind"),
            not_supported(other, &[SERVICE_ACCOUNT_KIND, USER_KIND, GROUP_KIND]),
        )),
    }
}

/// Whether `labels` satisfy `selector` (`metav1.LabelSelectorAsSelector`; an empty selector
/// matches everything).
pub(crate) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|req| {
            let value = labels.get(&req.key);
            match req.operator {
                SelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
                SelectorOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
                SelectorOperator::Exists => value.is_some(),
                SelectorOperator::DoesNotExist => value.is_none(),
            }
        })
}

/// Fills in the rules of every ClusterRole with an `aggregationRule` as the aggregation
/// controller does (`syncClusterRole`): for each selector in order, the ClusterRoles it matches
/// (other than the role itself), sorted by name, contribute each rule not already present.
/// Aggregated roles may select other aggregated roles; this repeats until nothing changes, as
/// the controller's resyncs would.
pub(super) fn aggregate(roles: &mut [ClusterRole]) {
    let aggregated: Vec<usize> = (0..roles.len())
        .filter(|&i| roles[i].aggregation_rule.is_some())
        .collect();
    if aggregated.is_empty() {
        return;
    }
    let mut by_name: Vec<usize> = (0..roles.len()).collect();
    by_name.sort_by(|&a, &b| roles[a].metadata.name.cmp(&roles[b].metadata.name));
    for _ in 0..=roles.len() {
        let mut changed = false;
        for &i in &aggregated {
            let mut rules: Vec<PolicyRule> = Vec::new();
            let selectors = roles[i]
                .aggregation_rule
                .as_ref()
                .map(|a| a.cluster_role_selectors.clone())
                .unwrap_or_default();
            for selector in &selectors {
                for &j in &by_name {
                    if j == i || !selector_matches(selector, &roles[j].metadata.labels) {
                        continue;
                    }
                    for rule in &roles[j].rules {
                        if !rules.contains(rule) {
                            rules.push(rule.clone());
                        }
                    }
                }
            }
            if rules != roles[i].rules {
                roles[i].rules = rules;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

/// One warning per binding whose role is not in the policy. Kubernetes accepts such bindings
/// (the role may be created later); they grant nothing and every request they would apply to
/// reports the missing role in its denial reason.
fn dangling_references(
    set: &PolicySet,
    binding_locations: &[Location],
    cluster_binding_locations: &[Location],
) -> Vec<String> {
    let cluster_roles: HashSet<&str> = set
        .cluster_roles
        .iter()
        .map(|r| r.metadata.name.as_str())
        .collect();
    let roles: HashSet<(&str, &str)> = set
        .roles
        .iter()
        .map(|r| (r.metadata.namespace.as_str(), r.metadata.name.as_str()))
        .collect();
    let bindings = set
        .role_bindings
        .iter()
        .map(|b| ("RoleBinding", &b.metadata, &b.role_ref))
        .zip(binding_locations)
        .chain(
            set.cluster_role_bindings
                .iter()
                .map(|b| ("ClusterRoleBinding", &b.metadata, &b.role_ref))
                .zip(cluster_binding_locations),
        );
    let mut out = Vec::new();
    for ((kind, meta, role_ref), location) in bindings {
        let (missing, role_ns) = match role_ref.kind.as_str() {
            "Role" => (
                !roles.contains(&(meta.namespace.as_str(), role_ref.name.as_str())),
                meta.namespace.as_str(),
            ),
            _ => (!cluster_roles.contains(role_ref.name.as_str()), ""),
        };
        if missing {
            out.push(format!(
                "{location} ({}): roleRef: {} is not defined in the policy; the binding grants nothing",
                describe(kind, &meta.namespace, &meta.name),
                describe(&role_ref.kind, role_ns, &role_ref.name),
            ));
        }
    }
    out
}
