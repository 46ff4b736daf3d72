//! Upstream's RBAC test tables, ported (each test cites its file in kubernetes/kubernetes), and
//! the compiled index checked against a full scan of the bindings, as upstream evaluates.

use proptest::prelude::*;

use super::eval::applies_to;
use super::*;
use crate::authn::Identity;
use crate::authz::{Attributes, Authorizer, Decision};

fn strings(csv: &str) -> Vec<String> {
    csv.split(',').map(str::to_owned).collect()
}

/// rbac_test.go `newRule`: every field from a comma-separated list (so "" is `[""]`).
fn new_rule(verbs: &str, groups: &str, resources: &str, urls: &str) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        api_groups: strings(groups),
        resources: strings(resources),
        resource_names: Vec::new(),
        non_resource_urls: strings(urls),
    }
}

pub(super) fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta::new("", name),
        rules,
        aggregation_rule: None,
    }
}

/// rbac_test.go `"User:admin"`-style subjects.
pub(super) fn subjects(list: &[&str]) -> Vec<Subject> {
    list.iter()
        .map(|s| {
            let (kind, name) = s.split_once(':').expect("Kind:name");
            match kind {
                "User" => Subject::user(name),
                "Group" => Subject::group(name),
                "ServiceAccount" => Subject::service_account("", name),
                other => panic!("invalid kind {other}"),
            }
        })
        .collect()
}

fn cluster_binding(role: &str, subj: &[&str]) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta::new("", ""),
        subjects: subjects(subj),
        role_ref: RoleRef::cluster_role(role),
    }
}

fn binding_to_cluster_role(ns: &str, role: &str, subj: &[&str]) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta::new(ns, ""),
        subjects: subjects(subj),
        role_ref: RoleRef::cluster_role(role),
    }
}

/// rbac_test.go `defaultAttributes`: the groups string split on commas ("" is `[""]`).
fn attrs(
    user: &str,
    groups: &str,
    verb: &str,
    resource: &str,
    sub: &str,
    ns: &str,
    group: &str,
) -> Attributes {
    Attributes::resource(Identity::new(user, "", strings(groups)), verb, resource)
        .with_subresource(sub)
        .with_namespace(ns)
        .with_group(group)
}

fn url(name: &str, groups: &[&str], verb: &str, path: &str) -> Attributes {
    let groups = groups.iter().map(|g| g.to_string()).collect();
    Attributes::non_resource(Identity::new(name, "", groups), verb, path)
}

/// `TestAuthorizer` (plugin/pkg/auth/authorizer/rbac/rbac_test.go, kubernetes/kubernetes).
#[test]
fn upstream_test_authorizer() {
    struct Case {
        cluster_roles: Vec<ClusterRole>,
        role_bindings: Vec<RoleBinding>,
        cluster_role_bindings: Vec<ClusterRoleBinding>,
        pass: Vec<Attributes>,
        fail: Vec<Attributes>,
    }
    let cases = vec![
        Case {
            cluster_roles: vec![cluster_role("admin", vec![new_rule("*", "*", "*", "*")])],
            role_bindings: vec![binding_to_cluster_role(
                "ns1",
                "admin",
                &["User:admin", "Group:admins"],
            )],
            cluster_role_bindings: vec![],
            pass: vec![
                attrs("admin", "", "get", "Pods", "", "ns1", ""),
                attrs("admin", "", "watch", "Pods", "", "ns1", ""),
                attrs("admin", "group1", "watch", "Foobar", "", "ns1", ""),
                attrs("joe", "admins", "watch", "Foobar", "", "ns1", ""),
                attrs("joe", "group1,admins", "watch", "Foobar", "", "ns1", ""),
            ],
            fail: vec![
                attrs("admin", "", "GET", "Pods", "", "ns2", ""),
                attrs("admin", "", "GET", "Nodes", "", "", ""),
                attrs("admin", "admins", "GET", "Pods", "", "ns2", ""),
                attrs("admin", "admins", "GET", "Nodes", "", "", ""),
            ],
        },
        // Non-resource-url tests.
        Case {
            cluster_roles: vec![
                cluster_role(
                    "non-resource-url-getter",
                    vec![new_rule("get", "", "", "/apis")],
                ),
                cluster_role("non-resource-url", vec![new_rule("*", "", "", "/apis")]),
                cluster_role(
                    "non-resource-url-prefix",
                    vec![new_rule("get", "", "", "/apis/*")],
                ),
            ],
            role_bindings: vec![],
            cluster_role_bindings: vec![
                cluster_binding("non-resource-url-getter", &["User:foo", "Group:bar"]),
                cluster_binding("non-resource-url", &["User:admin", "Group:admin"]),
                cluster_binding(
                    "non-resource-url-prefix",
                    &["User:prefixed", "Group:prefixed"],
                ),
            ],
            pass: vec![
                url("foo", &[], "get", "/apis"),
                url("", &["bar"], "get", "/apis"),
                url("admin", &[], "get", "/apis"),
                url("", &["admin"], "get", "/apis"),
                url("admin", &[], "watch", "/apis"),
                url("", &["admin"], "watch", "/apis"),
                url("prefixed", &[], "get", "/apis/v1"),
                url("", &["prefixed"], "get", "/apis/v1"),
                url("prefixed", &[], "get", "/apis/v1/foobar"),
                url("", &["prefixed"], "get", "/apis/v1/foorbar"),
            ],
            fail: vec![
                // wrong verb
                url("foo", &[], "watch", "/apis"),
                url("", &["bar"], "watch", "/apis"),
                // wrong path
                url("foo", &[], "get", "/api/v1"),
                url("", &["bar"], "get", "/api/v1"),
                url("admin", &[], "get", "/api/v1"),
                url("", &["admin"], "get", "/api/v1"),
                // not covered by prefix
                url("prefixed", &[], "get", "/api/v1"),
                url("", &["prefixed"], "get", "/api/v1"),
            ],
        },
        // Subresource resolution: a rule on pods does not cover pods/status.
        Case {
            cluster_roles: vec![cluster_role("admin", vec![new_rule("*", "*", "pods", "*")])],
            role_bindings: vec![binding_to_cluster_role(
                "ns1",
                "admin",
                &["User:admin", "Group:admins"],
            )],
            cluster_role_bindings: vec![],
            pass: vec![attrs("admin", "", "get", "pods", "", "ns1", "")],
            fail: vec![attrs("admin", "", "get", "pods", "status", "ns1", "")],
        },
        // Subresource resolution: pods/status and */scale.
        Case {
            cluster_roles: vec![cluster_role(
                "admin",
                vec![
                    new_rule("*", "*", "pods/status", "*"),
                    new_rule("*", "*", "*/scale", "*"),
                ],
            )],
            role_bindings: vec![binding_to_cluster_role(
                "ns1",
                "admin",
                &["User:admin", "Group:admins"],
            )],
            cluster_role_bindings: vec![],
            pass: vec![
                attrs("admin", "", "get", "pods", "status", "ns1", ""),
                attrs("admin", "", "get", "pods", "scale", "ns1", ""),
                attrs("admin", "", "get", "deployments", "scale", "ns1", ""),
                attrs("admin", "", "get", "anything", "scale", "ns1", ""),
            ],
            fail: vec![attrs("admin", "", "get", "pods", "", "ns1", "")],
        },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        let rbac = Rbac::new(&PolicySet {
            roles: vec![],
            cluster_roles: c.cluster_roles,
            role_bindings: c.role_bindings,
            cluster_role_bindings: c.cluster_role_bindings,
        });
        for a in &c.pass {
            assert!(
                rbac.authorize(a).allowed(),
                "case {i}: incorrectly restricted {a:?}"
            );
        }
        for a in &c.fail {
            assert!(
                !rbac.authorize(a).allowed(),
                "case {i}: incorrectly passed {a:?}"
            );
        }
    }
}

pub(super) fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    PolicyRule {
        verbs: v(verbs),
        api_groups: v(groups),
        resources: v(resources),
        ..PolicyRule::default()
    }
}

fn url_rule(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    PolicyRule {
        verbs: v(verbs),
        non_resource_urls: v(urls),
        ..PolicyRule::default()
    }
}

fn req(verb: &str, group: &str, resource: &str, sub: &str) -> Attributes {
    Attributes::resource(Identity::default(), verb, resource)
        .with_group(group)
        .with_subresource(sub)
}

fn nonres(verb: &str, path: &str) -> Attributes {
    Attributes::non_resource(Identity::default(), verb, path)
}

/// `TestRuleMatches` (plugin/pkg/auth/authorizer/rbac/rbac_test.go): every named case, every
/// request of its table.
#[test]
fn upstream_test_rule_matches() {
    let resource_grid = |rule: PolicyRule, expected: [bool; 8]| (rule, expected);
    // Requests in upstream's order: verb1/verb2 × (group1,resource1) (group2,resource1)
    // (group1,resource2) (group2,resource2).
    let grid = |sub: Option<[&str; 4]>| -> Vec<Attributes> {
        let mut out = Vec::new();
        for verb in ["verb1", "verb2"] {
            let combos = [
                ("group1", "resource1"),
                ("group2", "resource1"),
                ("group1", "resource2"),
                ("group2", "resource2"),
            ];
            for (i, (g, r)) in combos.into_iter().enumerate() {
                out.push(req(verb, g, r, sub.map_or("", |s| s[i])));
            }
        }
        out
    };
    let resource_cases = [
        (
            "star verb, exact match other",
            resource_grid(
                rule(&["*"], &["group1"], &["resource1"]),
                [true, false, false, false, true, false, false, false],
            ),
            None,
        ),
        (
            "star group, exact match other",
            resource_grid(
                rule(&["verb1"], &["*"], &["resource1"]),
                [true, true, false, false, false, false, false, false],
            ),
            None,
        ),
        (
            "star resource, exact match other",
            resource_grid(
                rule(&["verb1"], &["group1"], &["*"]),
                [true, false, true, false, false, false, false, false],
            ),
            None,
        ),
        (
            "tuple expansion",
            resource_grid(
                rule(
                    &["verb1", "verb2"],
                    &["group1", "group2"],
                    &["resource1", "resource2"],
                ),
                [true; 8],
            ),
            None,
        ),
        (
            "subresource expansion",
            resource_grid(
                rule(&["*"], &["*"], &["resource1/subresource1"]),
                [true, false, false, false, true, false, false, false],
            ),
            Some([
                "subresource1",
                "subresource2",
                "subresource1",
                "subresource1",
            ]),
        ),
    ];
    for (name, (rule, expected), sub) in resource_cases {
        for (request, want) in grid(sub).iter().zip(expected) {
            assert_eq!(rule_allows(request, &rule), want, "{name:?}: {request:?}");
        }
    }
    let paths = [
        "/foo",
        "/foo/bar",
        "/foo/baz",
        "/foo/bar/one",
        "/foo/baz/one",
    ];
    /// (verb, path, allowed)
    type Requests<'a> = Vec<(&'a str, &'a str, bool)>;
    let url_cases: [(&str, PolicyRule, Requests); 3] = [
        (
            "star nonresource, exact match other",
            url_rule(&["verb1"], &["*"]),
            paths
                .iter()
                .map(|p| ("verb1", *p, true))
                .chain(paths.iter().map(|p| ("verb2", *p, false)))
                .collect(),
        ),
        (
            "star nonresource subpath",
            url_rule(&["verb1"], &["/foo/*"]),
            vec![
                ("verb1", "/foo", false),
                ("verb1", "/foo/bar", true),
                ("verb1", "/foo/baz", true),
                ("verb1", "/foo/bar/one", true),
                ("verb1", "/foo/baz/one", true),
                ("verb1", "/notfoo", false),
                ("verb1", "/notfoo/bar", false),
                ("verb1", "/notfoo/baz", false),
                ("verb1", "/notfoo/bar/one", false),
                ("verb1", "/notfoo/baz/one", false),
            ],
        ),
        (
            "star verb, exact nonresource",
            url_rule(&["*"], &["/foo", "/foo/bar/one"]),
            ["verb1", "verb2"]
                .into_iter()
                .flat_map(|v| {
                    paths
                        .iter()
                        .map(move |p| (v, *p, *p == "/foo" || *p == "/foo/bar/one"))
                })
                .collect(),
        ),
    ];
    for (name, rule, table) in url_cases {
        for (verb, path, want) in table {
            assert_eq!(
                rule_allows(&nonres(verb, path), &rule),
                want,
                "{name:?}: {verb} {path}"
            );
        }
    }
}

/// `TestDefaultRuleResolver` (pkg/registry/rbac/validation/rule_test.go): the rules that apply
/// per user and namespace, compared as sets.
#[test]
fn upstream_test_default_rule_resolver() {
    let read_pods = rule(&["GET", "WATCH"], &["v1"], &["pods"]);
    let read_services = rule(&["GET", "WATCH"], &["v1"], &["services"]);
    let write_nodes = rule(&["PUT", "CREATE", "UPDATE"], &["v1"], &["nodes"]);
    let admin = rule(&["*"], &["*"], &["*"]);
    let set = PolicySet {
        roles: vec![Role {
            metadata: ObjectMeta::new("namespace1", "readthings"),
            rules: vec![read_pods.clone(), read_services.clone()],
        }],
        cluster_roles: vec![
            cluster_role("cluster-admin", vec![admin.clone()]),
            cluster_role("write-nodes", vec![write_nodes]),
        ],
        role_bindings: vec![RoleBinding {
            metadata: ObjectMeta::new("namespace1", ""),
            subjects: subjects(&["User:foobar", "Group:group1"]),
            role_ref: RoleRef::role("readthings"),
        }],
        cluster_role_bindings: vec![cluster_binding(
            "cluster-admin",
            &["User:admin", "Group:admin"],
        )],
    };
    let rbac = Rbac::new(&set);
    let cases: [(Identity, &str, Vec<PolicyRule>); 4] = [
        (
            Identity::new("foobar", "", vec![]),
            "namespace1",
            vec![read_pods, read_services],
        ),
        (Identity::new("foobar", "", vec![]), "namespace2", vec![]),
        // Same as above but without a namespace. Only cluster rules should apply.
        (
            Identity::new("foobar", "", vec!["admin".into()]),
            "",
            vec![admin],
        ),
        (Identity::default(), "", vec![]),
    ];
    for (i, (user, ns, mut want)) in cases.into_iter().enumerate() {
        let got = rbac.rules_for(&user, ns);
        assert!(got.errors.is_empty(), "case {i}: {:?}", got.errors);
        let mut rules = got.rules;
        let key = |r: &PolicyRule| format!("{r:?}");
        rules.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(rules, want, "case {i}");
    }
}

/// `TestAppliesTo` (pkg/registry/rbac/validation/rule_test.go), with the index of the subject
/// that applies.
#[test]
fn upstream_test_applies_to() {
    let sa = |ns: &str, name: &str| Subject::service_account(ns, name);
    /// (name, subjects, user, binding namespace, index of the subject that applies)
    type Case<'a> = (&'a str, Vec<Subject>, Identity, &'a str, Option<usize>);
    let cases: Vec<Case> = vec![
        (
            "single subject that matches username",
            vec![Subject::user("foobar")],
            Identity::new("foobar", "", vec![]),
            "",
            Some(0),
        ),
        (
            "multiple subjects, one that matches username",
            vec![Subject::user("barfoo"), Subject::user("foobar")],
            Identity::new("foobar", "", vec![]),
            "",
            Some(1),
        ),
        (
            "multiple subjects, none that match username",
            vec![Subject::user("barfoo"), Subject::user("foobar")],
            Identity::new("zimzam", "", vec![]),
            "",
            None,
        ),
        (
            "multiple subjects, one that match group",
            vec![Subject::user("barfoo"), Subject::group("foobar")],
            Identity::new("zimzam", "", vec!["foobar".into()]),
            "",
            Some(1),
        ),
        (
            "multiple subjects, one that match group, should ignore namespace",
            vec![Subject::user("barfoo"), Subject::group("foobar")],
            Identity::new("zimzam", "", vec!["foobar".into()]),
            "namespace1",
            Some(1),
        ),
        (
            "multiple subjects with a service account that matches",
            vec![
                Subject::user("barfoo"),
                Subject::group("foobar"),
                sa("kube-system", "default"),
            ],
            Identity::new("system:serviceaccount:kube-system:default", "", vec![]),
            "default",
            Some(2),
        ),
        (
            "* user subject name doesn't match all users",
            vec![Subject::user("*")],
            Identity::new("foobar", "", vec![]),
            "default",
            None,
        ),
        (
            "binding to all authenticated and unauthenticated subjects matches authenticated user",
            vec![
                Subject::group("system:authenticated"),
                Subject::group("system:unauthenticated"),
            ],
            Identity::new("foobar", "", vec!["system:authenticated".into()]),
            "default",
            Some(0),
        ),
        (
            "binding to all authenticated and unauthenticated subjects matches anonymous user",
            vec![
                Subject::group("system:authenticated"),
                Subject::group("system:unauthenticated"),
            ],
            Identity::new(
                "system:anonymous",
                "",
                vec!["system:unauthenticated".into()],
            ),
            "default",
            Some(1),
        ),
    ];
    for (name, subjects, user, ns, want) in cases {
        assert_eq!(applies_to(&user, &subjects, ns), want, "{name}");
    }
}

/// `BenchmarkAuthorize`'s requests (rbac_test.go) against a node role, checked for their
/// decisions here; `benches/authz.rs` times them.
#[test]
fn upstream_benchmark_requests_decide_as_named() {
    let set = PolicySet {
        cluster_roles: vec![cluster_role(
            "system:node",
            vec![
                rule(&["get", "list", "watch"], &[""], &["pods"]),
                rule(&["update", "patch"], &[""], &["pods/status"]),
            ],
        )],
        cluster_role_bindings: vec![cluster_binding("system:node", &["Group:system:nodes"])],
        ..PolicySet::default()
    };
    let rbac = Rbac::new(&set);
    let node = Identity::new(
        "system:node:node1",
        "",
        vec!["system:nodes".into(), "system:authenticated".into()],
    );
    let list = Attributes::resource(node.clone(), "list", "pods");
    let status = Attributes::resource(node.clone(), "update", "pods")
        .with_subresource("status")
        .with_name("mypods")
        .with_namespace("myns");
    let dolphins = Attributes::resource(node, "educate", "dolphins");
    assert!(rbac.authorize(&list).allowed(), "allow list pods");
    assert!(
        rbac.authorize(&status).allowed(),
        "allow update pods/status"
    );
    assert!(
        !rbac.authorize(&dolphins).allowed(),
        "forbid educate dolphins"
    );
}

/// A full scan of every binding in order, as `VisitRulesFor` does: the index must decide
/// exactly the same, with the same reason.
fn full_scan(set: &PolicySet, a: &Attributes) -> Decision {
    if a.user.in_group("system:masters") {
        return Decision::Allow {
            reason: String::new(),
        };
    }
    let cluster_rules = |name: &str| {
        set.cluster_roles
            .iter()
            .find(|r| r.metadata.name == name)
            .map(|r| r.rules.clone())
    };
    for b in &set.cluster_role_bindings {
        if let Some(i) = applies_to(&a.user, &b.subjects, "") {
            if cluster_rules(&b.role_ref.name)
                .is_some_and(|rules| rules.iter().any(|r| rule_allows(a, r)))
            {
                let s = &b.subjects[i];
                let who = if s.kind == "ServiceAccount" {
                    format!("{}/{}", s.name, s.namespace)
                } else {
                    s.name.clone()
                };
                return Decision::Allow {
                    reason: format!("RBAC: allowed by ClusterRoleBinding {:?} of ClusterRole {:?} to {} {who:?}", b.metadata.name, b.role_ref.name, s.kind),
                };
            }
        }
    }
    if !a.namespace.is_empty() {
        for b in set
            .role_bindings
            .iter()
            .filter(|b| b.metadata.namespace == a.namespace)
        {
            if let Some(i) = applies_to(&a.user, &b.subjects, &a.namespace) {
                let rules = if b.role_ref.kind == "Role" {
                    set.roles
                        .iter()
                        .find(|r| {
                            r.metadata.namespace == a.namespace
                                && r.metadata.name == b.role_ref.name
                        })
                        .map(|r| r.rules.clone())
                } else {
                    cluster_rules(&b.role_ref.name)
                };
                if rules.is_some_and(|rules| rules.iter().any(|r| rule_allows(a, r))) {
                    let s = &b.subjects[i];
                    let who = if s.kind == "ServiceAccount" {
                        format!(
                            "{}/{}",
                            s.name,
                            if s.namespace.is_empty() {
                                &a.namespace
                            } else {
                                &s.namespace
                            }
                        )
                    } else {
                        s.name.clone()
                    };
                    return Decision::Allow {
                        reason: format!(
                            "RBAC: allowed by RoleBinding \"{}/{}\" of {} {:?} to {} {who:?}",
                            b.metadata.name,
                            b.metadata.namespace,
                            b.role_ref.kind,
                            b.role_ref.name,
                            s.kind
                        ),
                    };
                }
            }
        }
    }
    Decision::Deny {
        reason: String::new(),
    }
}

fn pick(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(names).prop_map(str::to_owned)
}

fn arb_subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        pick(&["u1", "u2", "system:serviceaccount:n1:sa"]).prop_map(Subject::user),
        pick(&["g1", "g2", "system:masters"]).prop_map(Subject::group),
        (pick(&["", "n1", "n2"]), pick(&["sa", "sb"]))
            .prop_map(|(ns, n)| Subject::service_account(ns, n)),
    ]
}

fn arb_rule() -> impl Strategy<Value = PolicyRule> {
    (
        proptest::collection::vec(pick(&["get", "list", "*"]), 1..3),
        proptest::collection::vec(pick(&["", "apps", "*"]), 1..2),
        proptest::collection::vec(
            pick(&["secrets", "pods", "pods/status", "*/status", "*"]),
            1..3,
        ),
        proptest::collection::vec(pick(&["db", "x"]), 0..2),
    )
        .prop_map(
            |(verbs, api_groups, resources, resource_names)| PolicyRule {
                verbs,
                api_groups,
                resources,
                resource_names,
                non_resource_urls: vec![],
            },
        )
}

fn arb_policy() -> impl Strategy<Value = PolicySet> {
    let role_names = &["r1", "r2", "r3"];
    (
        proptest::collection::vec(
            (
                pick(&["n1", "n2"]),
                pick(role_names),
                proptest::collection::vec(arb_rule(), 0..3),
            ),
            0..4,
        ),
        proptest::collection::vec(
            (
                pick(role_names),
                proptest::collection::vec(arb_rule(), 0..3),
            ),
            0..3,
        ),
        proptest::collection::vec(
            (
                pick(&["n1", "n2"]),
                any::<bool>(),
                pick(role_names),
                proptest::collection::vec(arb_subject(), 0..4),
            ),
            0..6,
        ),
        proptest::collection::vec(
            (
                pick(role_names),
                proptest::collection::vec(arb_subject(), 0..4),
            ),
            0..4,
        ),
    )
        .prop_map(|(roles, cluster_roles, rbs, crbs)| {
            let mut set = PolicySet::default();
            for (ns, name, rules) in roles {
                if !set
                    .roles
                    .iter()
                    .any(|r| r.metadata.namespace == ns && r.metadata.name == name)
                {
                    set.roles.push(Role {
                        metadata: ObjectMeta::new(ns, name),
                        rules,
                    });
                }
            }
            for (name, rules) in cluster_roles {
                if !set.cluster_roles.iter().any(|r| r.metadata.name == name) {
                    set.cluster_roles.push(cluster_role(&name, rules));
                }
            }
            for (i, (ns, to_role, role, subjects)) in rbs.into_iter().enumerate() {
                let role_ref = if to_role {
                    RoleRef::role(role)
                } else {
                    RoleRef::cluster_role(role)
                };
                set.role_bindings.push(RoleBinding {
                    metadata: ObjectMeta::new(ns, format!("rb{i}")),
                    subjects,
                    role_ref,
                });
            }
            for (i, (role, subjects)) in crbs.into_iter().enumerate() {
                set.cluster_role_bindings.push(ClusterRoleBinding {
                    metadata: ObjectMeta::new("", format!("crb{i}")),
                    subjects: subjects
                        .into_iter()
                        .filter(|s| s.kind != "ServiceAccount" || !s.namespace.is_empty())
                        .collect(),
                    role_ref: RoleRef::cluster_role(role),
                });
            }
            set
        })
}

fn arb_request() -> impl Strategy<Value = Attributes> {
    (
        pick(&[
            "u1",
            "u2",
            "system:serviceaccount:n1:sa",
            "system:serviceaccount:n2:sb",
        ]),
        proptest::collection::vec(pick(&["g1", "g2", "g3"]), 0..3),
        pick(&["get", "list", "watch"]),
        pick(&["", "apps"]),
        pick(&["secrets", "pods"]),
        pick(&["", "status"]),
        pick(&["", "n1", "n2"]),
        pick(&["", "db", "x"]),
    )
        .prop_map(|(user, groups, verb, group, resource, sub, ns, name)| {
            Attributes::resource(Identity::new(user, "", groups), &verb, &resource)
                .with_group(&group)
                .with_subresource(&sub)
                .with_namespace(&ns)
                .with_name(&name)
        })
}

proptest! {
    #[test]
    fn index_decides_as_a_full_scan(set in arb_policy(), requests in proptest::collection::vec(arb_request(), 1..16)) {
        let rbac = Rbac::new(&set);
        for a in &requests {
            let got = rbac.authorize(a);
            // Missing roles add a reason to denials; compare the decision, and reasons of allows.
            let want = full_scan(&set, a);
            prop_assert_eq!(got.allowed(), want.allowed(), "{:?}", a);
            if want.allowed() {
                prop_assert_eq!(got, want, "{:?}", a);
            }
        }
    }
}
