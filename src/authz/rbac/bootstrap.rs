//! The part of Kubernetes' bootstrap RBAC policy that keyward's own endpoints follow: every
//! cluster has these ClusterRoles and ClusterRoleBindings (kube-apiserver creates them at
//! start), and keyward answers what they allow without a policy file saying so (the reviews
//! and `whoami` to every authenticated caller, discovery and OpenAPI to every authenticated
//! caller, health and `/version` to anyone). Adding them to the policy in force makes access
//! reviews, `kubectl auth can-i --list` and the authorization of those paths say what the
//! server does, as in a cluster.

use super::types::{
    ClusterRole, ClusterRoleBinding, ObjectMeta, PolicyRule, PolicySet, RoleRef, Subject, ALL,
};
use crate::authn::names::{SYSTEM_AUTHENTICATED, SYSTEM_UNAUTHENTICATED};

/// `system:basic-user`: what a caller may learn about itself.
pub const BASIC_USER: &str = "system:basic-user";
/// `system:discovery`: health, version, discovery and OpenAPI.
pub const DISCOVERY: &str = "system:discovery";
/// `system:public-info-viewer`: health and version, also without credentials.
pub const PUBLIC_INFO_VIEWER: &str = "system:public-info-viewer";
/// `system:service-account-issuer-discovery`: the service account issuer's OpenID Connect
/// discovery, for every service account.
pub const ISSUER_DISCOVERY: &str = "system:service-account-issuer-discovery";

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn create(group: &str, resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(&["create"]),
        api_groups: strings(&[group]),
        resources: strings(resources),
        ..PolicyRule::default()
    }
}

fn get_urls(urls: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(&["get"]),
        non_resource_urls: strings(urls),
        ..PolicyRule::default()
    }
}

/// The four ClusterRoles and their bindings, as Kubernetes 1.30's bootstrap policy
/// (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`) defines them.
fn objects() -> (Vec<ClusterRole>, Vec<ClusterRoleBinding>) {
    // Labelled as upstream labels its defaults, which aggregation selectors may name.
    let meta = |name: &str| {
        let mut m = ObjectMeta::new("", name);
        m.labels
            .insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
        m
    };
    let role = |name: &str, rules| ClusterRole {
        metadata: meta(name),
        rules,
        aggregation_rule: None,
    };
    // Health and version: public information, and part of discovery too.
    let public = ["/livez", "/readyz", "/healthz", "/version", "/version/"];
    let discovery = [
        "/openapi",
        "/openapi/*",
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
    ];
    let roles = vec![
        role(
            DISCOVERY,
            vec![get_urls(&[&public[..], &discovery].concat())],
        ),
        role(
            BASIC_USER,
            vec![
                create(
                    "authorization.k8s.io",
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                create("authentication.k8s.io", &["selfsubjectreviews"]),
            ],
        ),
        role(PUBLIC_INFO_VIEWER, vec![get_urls(&public)]),
        role(
            ISSUER_DISCOVERY,
            vec![get_urls(&[
                "/.well-known/openid-configuration",
                "/.well-known/openid-configuration/",
                "/openid/v1/jwks",
                "/openid/v1/jwks/",
            ])],
        ),
    ];
    let binding = |name: &str, groups: &[&str]| ClusterRoleBinding {
        metadata: meta(name),
        subjects: groups.iter().map(|g| Subject::group(*g)).collect(),
        role_ref: RoleRef::cluster_role(name),
    };
    let bindings = vec![
        binding(DISCOVERY, &[SYSTEM_AUTHENTICATED]),
        binding(BASIC_USER, &[SYSTEM_AUTHENTICATED]),
        binding(
            PUBLIC_INFO_VIEWER,
            &[SYSTEM_AUTHENTICATED, SYSTEM_UNAUTHENTICATED],
        ),
        binding(ISSUER_DISCOVERY, &["system:serviceaccounts"]),
    ];
    (roles, bindings)
}

/// `set` with the bootstrap ClusterRoles and ClusterRoleBindings, reconciled as kube-apiserver
/// reconciles them at start: one the policy does not define is added; one it defines gets the
/// default rules it does not cover (a role) or the default subjects it lacks (a binding; one
/// bound to another role is replaced by the default), unless it is annotated
/// `rbac.authorization.kubernetes.io/autoupdate: "false"`, which keeps it as written. Nothing
/// of the policy's own is removed.
pub fn with_bootstrap(set: &PolicySet) -> PolicySet {
    let mut out = set.clone();
    let (roles, bindings) = objects();
    for ours in roles {
        match out
            .cluster_roles
            .iter_mut()
            .find(|r| r.metadata.name == ours.metadata.name)
        {
            None => out.cluster_roles.push(ours),
            Some(theirs) if theirs.metadata.protected => {}
            Some(theirs) => {
                let missing: Vec<PolicyRule> = ours
                    .rules
                    .iter()
                    .flat_map(breakdown)
                    .filter(|rule| !theirs.rules.iter().any(|t| covers(t, rule)))
                    .collect();
                theirs.rules.extend(missing);
                // The default labels it lacks (its own win), as upstream merges them.
                for (k, v) in ours.metadata.labels {
                    theirs.metadata.labels.entry(k).or_insert(v);
                }
            }
        }
    }
    for ours in bindings {
        match out
            .cluster_role_bindings
            .iter_mut()
            .find(|b| b.metadata.name == ours.metadata.name)
        {
            None => out.cluster_role_bindings.push(ours),
            Some(theirs) if theirs.metadata.protected => {}
            Some(theirs) if theirs.role_ref != ours.role_ref => *theirs = ours,
            Some(theirs) => {
                for subject in ours.subjects {
                    if !theirs.subjects.contains(&subject) {
                        theirs.subjects.push(subject);
                    }
                }
            }
        }
    }
    // Aggregated roles take their selected roles' rules as reconciled.
    super::validate::aggregate(&mut out.cluster_roles);
    out
}

/// `rule` as rules of one verb and one URL, or one verb, group and resource each.
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |s: &String| vec![s.clone()];
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for url in &rule.non_resource_urls {
            out.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..PolicyRule::default()
            });
        }
        for group in &rule.api_groups {
            for resource in &rule.resources {
                out.push(PolicyRule {
                    verbs: one(verb),
                    api_groups: one(group),
                    resources: one(resource),
                    resource_names: rule.resource_names.clone(),
                    ..PolicyRule::default()
                });
            }
        }
    }
    out
}

/// Whether `theirs` allows everything the broken-down rule `one` allows.
fn covers(theirs: &PolicyRule, one: &PolicyRule) -> bool {
    let has = |list: &[String], item: &str| list.iter().any(|x| x == ALL || x == item);
    let verb = one.verbs.first().map_or("", String::as_str);
    if !has(&theirs.verbs, verb) {
        return false;
    }
    if let Some(url) = one.non_resource_urls.first() {
        return theirs.non_resource_urls.iter().any(|t| {
            t == url || t == ALL || t.strip_suffix('*').is_some_and(|p| url.starts_with(p))
        });
    }
    let group = one.api_groups.first().map_or("", String::as_str);
    let resource = one.resources.first().map_or("", String::as_str);
    let names = &one.resource_names;
    let named = theirs.resource_names.is_empty()
        || (!names.is_empty() && names.iter().all(|n| theirs.resource_names.contains(n)));
    has(&theirs.api_groups, group) && has(&theirs.resources, resource) && named
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::Identity;
    use crate::authz::rbac::{parse_policy, Rbac};
    use crate::authz::{self_subject_rules_review, Attributes, Authorizer};

    fn user(groups: &[&str]) -> Identity {
        Identity {
            name: "carol".into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..Identity::default()
        }
    }

    #[test]
    fn every_authenticated_user_may_review_itself_and_read_discovery() {
        let rbac = Rbac::with_bootstrap(&PolicySet::default());
        let carol = user(&[SYSTEM_AUTHENTICATED]);
        let review = Attributes::resource(carol.clone(), "create", "selfsubjectrulesreviews")
            .with_group("authorization.k8s.io");
        assert_eq!(
            rbac.authorize(&review).reason(),
            r#"RBAC: allowed by ClusterRoleBinding "system:basic-user" of ClusterRole "system:basic-user" to Group "system:authenticated""#
        );
        assert!(rbac
            .authorize(&Attributes::non_resource(carol.clone(), "get", "/apis/x"))
            .allowed());
        assert!(!rbac
            .authorize(&Attributes::non_resource(carol.clone(), "get", "/metrics"))
            .allowed());
        assert!(!rbac
            .authorize(&Attributes::resource(carol.clone(), "get", "secrets"))
            .allowed());
        let anonymous = user(&[SYSTEM_UNAUTHENTICATED]);
        assert!(rbac
            .authorize(&Attributes::non_resource(
                anonymous.clone(),
                "get",
                "/healthz"
            ))
            .allowed());
        assert!(!rbac
            .authorize(&Attributes::non_resource(anonymous, "get", "/api"))
            .allowed());
        let rules = self_subject_rules_review(&rbac, &carol, "default").unwrap();
        assert_eq!(rules.resource_rules.len(), 2);
        assert_eq!(rules.non_resource_rules.len(), 2);
        assert_eq!(rbac.counts(), PolicySet::default().counts());
    }

    #[test]
    fn a_policy_s_own_objects_of_those_names_are_reconciled_unless_protected() {
        let set = parse_policy([(
            "p.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:basic-user, annotations: {rbac.authorization.kubernetes.io/autoupdate: \"false\"}}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:public-info-viewer, annotations: {rbac.authorization.kubernetes.io/autoupdate: \"true\"}}
rules: [{nonResourceURLs: [/version, /extra], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:discovery}
rules: [{nonResourceURLs: [\"/api*\", /livez], verbs: [\"*\"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: system:public-info-viewer}
subjects: [{kind: User, name: probe, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: ClusterRole, name: system:public-info-viewer, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: system:discovery}
subjects: [{kind: User, name: probe, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: ClusterRole, name: elsewhere, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: all-defaults}
aggregationRule:
  clusterRoleSelectors: [{matchLabels: {kubernetes.io/bootstrapping: rbac-defaults}}]
",
        )])
        .unwrap()
        .set;
        let merged = with_bootstrap(&set);
        let role = |n: &str| {
            let found: Vec<_> = merged
                .cluster_roles
                .iter()
                .filter(|r| r.metadata.name == n)
                .collect();
            assert_eq!(found.len(), 1, "{n}");
            found[0].clone()
        };
        let urls = |r: &ClusterRole| -> Vec<String> {
            r.rules
                .iter()
                .flat_map(|r| r.non_resource_urls.clone())
                .collect()
        };
        // Protected: as written.
        assert!(role(BASIC_USER).rules.is_empty());
        // Its own rules kept, the default paths it lacks added (kubelet probes keep working).
        assert_eq!(
            urls(&role(PUBLIC_INFO_VIEWER)),
            [
                "/version",
                "/extra",
                "/livez",
                "/readyz",
                "/healthz",
                "/version/"
            ]
        );
        // What its rules already cover (a prefix, every verb) is not added again.
        let discovery = urls(&role(DISCOVERY));
        assert!(
            !discovery.contains(&"/api".to_owned()) && !discovery.contains(&"/api/*".to_owned())
        );
        assert!(!discovery.contains(&"/apis/*".to_owned()));
        assert!(discovery.contains(&"/openapi/*".to_owned()));
        assert!(discovery.contains(&"/healthz".to_owned()));
        assert_eq!(discovery.iter().filter(|u| *u == "/livez").count(), 1);
        // Bindings: the default subjects added; one bound to another role is the default.
        let binding = |n: &str| {
            merged
                .cluster_role_bindings
                .iter()
                .find(|b| b.metadata.name == n)
                .unwrap()
                .clone()
        };
        let names = |b: ClusterRoleBinding| -> Vec<String> {
            b.subjects.into_iter().map(|s| s.name).collect()
        };
        assert_eq!(
            names(binding(PUBLIC_INFO_VIEWER)),
            ["probe", SYSTEM_AUTHENTICATED, SYSTEM_UNAUTHENTICATED]
        );
        assert_eq!(names(binding(DISCOVERY)), [SYSTEM_AUTHENTICATED]);
        assert_eq!(
            binding(DISCOVERY).role_ref,
            RoleRef::cluster_role(DISCOVERY)
        );
        assert_eq!(merged.cluster_role_bindings.len(), 4);
        // An aggregated role takes the defaults' rules as reconciled (labelled as upstream's
        // defaults, a policy's own role of such a name included).
        let all = urls(&role("all-defaults"));
        assert!(all.contains(&"/openid/v1/jwks".to_owned()), "{all:?}");
        assert!(all.contains(&"/extra".to_owned()), "{all:?}");
        assert!(all.contains(&"/livez".to_owned()), "{all:?}");
        // Anonymous probes are allowed by the reconciled policy.
        let rbac = Rbac::with_bootstrap(&set);
        let probe = Attributes::non_resource(user(&[SYSTEM_UNAUTHENTICATED]), "get", "/livez");
        assert!(rbac.authorize(&probe).allowed());
    }
}
