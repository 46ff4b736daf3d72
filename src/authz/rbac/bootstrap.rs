//! The part of Kubernetes' bootstrap RBAC policy that keyward's own endpoints follow: every
//! cluster has these ClusterRoles and ClusterRoleBindings (kube-apiserver creates them at
//! start), and keyward answers what they allow without a policy file saying so (the reviews
//! and `whoami` to every authenticated caller, discovery and OpenAPI to every authenticated
//! caller, health and `/version` to anyone). Adding them to the policy in force makes access
//! reviews, `kubectl auth can-i --list` and the authorization of those paths say what the
//! server does, as in a cluster.

use super::types::{
    ClusterRole, ClusterRoleBinding, ObjectMeta, PolicyRule, PolicySet, RoleRef, Subject,
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
    let role = |name: &str, rules| ClusterRole {
        metadata: ObjectMeta::new("", name),
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
        metadata: ObjectMeta::new("", name),
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

/// `set` with the bootstrap ClusterRoles and ClusterRoleBindings it does not define itself (a
/// policy copied from a cluster may hold them; its own objects of those names are kept).
pub fn with_bootstrap(set: &PolicySet) -> PolicySet {
    let mut out = set.clone();
    let (roles, bindings) = objects();
    add_missing(&mut out.cluster_roles, roles, |r| &r.metadata.name);
    add_missing(&mut out.cluster_role_bindings, bindings, |b| {
        &b.metadata.name
    });
    out
}

/// Appends to `objects` each of `ours` whose name none of them has.
fn add_missing<T>(objects: &mut Vec<T>, ours: Vec<T>, name: impl Fn(&T) -> &String) {
    for o in ours {
        if !objects.iter().any(|x| name(x) == name(&o)) {
            objects.push(o);
        }
    }
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
    fn a_policy_keeps_its_own_objects_of_those_names() {
        let set = parse_policy([(
            "p.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: system:basic-user}\nrules: []\n",
        )])
        .unwrap()
        .set;
        let merged = with_bootstrap(&set);
        let named = |n: &str| {
            merged
                .cluster_roles
                .iter()
                .filter(|r| r.metadata.name == n)
                .count()
        };
        assert_eq!((named(BASIC_USER), named(DISCOVERY)), (1, 1));
        let own = merged
            .cluster_roles
            .iter()
            .find(|r| r.metadata.name == BASIC_USER);
        assert_eq!(own.map(|r| r.rules.len()), Some(0));
        assert_eq!(merged.cluster_role_bindings.len(), 4);
    }
}
