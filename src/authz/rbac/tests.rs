//! Upstream's RBAC tables, ported (each cites its file), then keyward's own cases: manifests,
//! validation messages, service accounts, named list/watch, the get-only application, and the
//! index checked against a full scan.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::eval::applies_to;
use super::*;
use crate::authn::Identity;
use crate::authz::{Attributes, Authorizer, AuthzError, Decision};

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

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta::new("", name),
        rules,
        aggregation_rule: None,
    }
}

/// rbac_test.go `"User:admin"`-style subjects.
fn subjects(list: &[&str]) -> Vec<Subject> {
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
fn attrs(user: &str, groups: &str, verb: &str, resource: &str, sub: &str, ns: &str, group: &str) -> Attributes {
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
            role_bindings: vec![binding_to_cluster_role("ns1", "admin", &["User:admin", "Group:admins"])],
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
                cluster_role("non-resource-url-getter", vec![new_rule("get", "", "", "/apis")]),
                cluster_role("non-resource-url", vec![new_rule("*", "", "", "/apis")]),
                cluster_role("non-resource-url-prefix", vec![new_rule("get", "", "", "/apis/*")]),
            ],
            role_bindings: vec![],
            cluster_role_bindings: vec![
                cluster_binding("non-resource-url-getter", &["User:foo", "Group:bar"]),
                cluster_binding("non-resource-url", &["User:admin", "Group:admin"]),
                cluster_binding("non-resource-url-prefix", &["User:prefixed", "Group:prefixed"]),
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
            role_bindings: vec![binding_to_cluster_role("ns1", "admin", &["User:admin", "Group:admins"])],
            cluster_role_bindings: vec![],
            pass: vec![attrs("admin", "", "get", "pods", "", "ns1", "")],
            fail: vec![attrs("admin", "", "get", "pods", "status", "ns1", "")],
        },
        // Subresource resolution: pods/status and */scale.
        Case {
            cluster_roles: vec![cluster_role(
                "admin",
                vec![new_rule("*", "*", "pods/status", "*"), new_rule("*", "*", "*/scale", "*")],
            )],
            role_bindings: vec![binding_to_cluster_role("ns1", "admin", &["User:admin", "Group:admins"])],
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
            assert!(rbac.authorize(a).allowed(), "case {i}: incorrectly restricted {a:?}");
        }
        for a in &c.fail {
            assert!(!rbac.authorize(a).allowed(), "case {i}: incorrectly passed {a:?}");
        }
    }
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
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
            let combos = [("group1", "resource1"), ("group2", "resource1"), ("group1", "resource2"), ("group2", "resource2")];
            for (i, (g, r)) in combos.into_iter().enumerate() {
                out.push(req(verb, g, r, sub.map_or("", |s| s[i])));
            }
        }
        out
    };
    let resource_cases = [
        ("star verb, exact match other", resource_grid(rule(&["*"], &["group1"], &["resource1"]), [true, false, false, false, true, false, false, false]), None),
        ("star group, exact match other", resource_grid(rule(&["verb1"], &["*"], &["resource1"]), [true, true, false, false, false, false, false, false]), None),
        ("star resource, exact match other", resource_grid(rule(&["verb1"], &["group1"], &["*"]), [true, false, true, false, false, false, false, false]), None),
        ("tuple expansion", resource_grid(rule(&["verb1", "verb2"], &["group1", "group2"], &["resource1", "resource2"]), [true; 8]), None),
        (
            "subresource expansion",
            resource_grid(rule(&["*"], &["*"], &["resource1/subresource1"]), [true, false, false, false, true, false, false, false]),
            Some(["subresource1", "subresource2", "subresource1", "subresource1"]),
        ),
    ];
    for (name, (rule, expected), sub) in resource_cases {
        for (request, want) in grid(sub).iter().zip(expected) {
            assert_eq!(rule_allows(request, &rule), want, "{name:?}: {request:?}");
        }
    }
    let paths = ["/foo", "/foo/bar", "/foo/baz", "/foo/bar/one", "/foo/baz/one"];
    let url_cases: [(&str, PolicyRule, Vec<(&str, &str, bool)>); 3] = [
        (
            "star nonresource, exact match other",
            url_rule(&["verb1"], &["*"]),
            paths.iter().map(|p| ("verb1", *p, true)).chain(paths.iter().map(|p| ("verb2", *p, false))).collect(),
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
                .flat_map(|v| paths.iter().map(move |p| (v, *p, *p == "/foo" || *p == "/foo/bar/one")))
                .collect(),
        ),
    ];
    for (name, rule, table) in url_cases {
        for (verb, path, want) in table {
            assert_eq!(rule_allows(&nonres(verb, path), &rule), want, "{name:?}: {verb} {path}");
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
        cluster_roles: vec![cluster_role("cluster-admin", vec![admin.clone()]), cluster_role("write-nodes", vec![write_nodes])],
        role_bindings: vec![RoleBinding {
            metadata: ObjectMeta::new("namespace1", ""),
            subjects: subjects(&["User:foobar", "Group:group1"]),
            role_ref: RoleRef::role("readthings"),
        }],
        cluster_role_bindings: vec![cluster_binding("cluster-admin", &["User:admin", "Group:admin"])],
    };
    let rbac = Rbac::new(&set);
    let cases: [(Identity, &str, Vec<PolicyRule>); 4] = [
        (Identity::new("foobar", "", vec![]), "namespace1", vec![read_pods, read_services]),
        (Identity::new("foobar", "", vec![]), "namespace2", vec![]),
        // Same as above but without a namespace. Only cluster rules should apply.
        (Identity::new("foobar", "", vec!["admin".into()]), "", vec![admin]),
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
    let cases: Vec<(&str, Vec<Subject>, Identity, &str, Option<usize>)> = vec![
        ("single subject that matches username", vec![Subject::user("foobar")], Identity::new("foobar", "", vec![]), "", Some(0)),
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
            vec![Subject::user("barfoo"), Subject::group("foobar"), sa("kube-system", "default")],
            Identity::new("system:serviceaccount:kube-system:default", "", vec![]),
            "default",
            Some(2),
        ),
        ("* user subject name doesn't match all users", vec![Subject::user("*")], Identity::new("foobar", "", vec![]), "default", None),
        (
            "binding to all authenticated and unauthenticated subjects matches authenticated user",
            vec![Subject::group("system:authenticated"), Subject::group("system:unauthenticated")],
            Identity::new("foobar", "", vec!["system:authenticated".into()]),
            "default",
            Some(0),
        ),
        (
            "binding to all authenticated and unauthenticated subjects matches anonymous user",
            vec![Subject::group("system:authenticated"), Subject::group("system:unauthenticated")],
            Identity::new("system:anonymous", "", vec!["system:unauthenticated".into()]),
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
            vec![rule(&["get", "list", "watch"], &[""], &["pods"]), rule(&["update", "patch"], &[""], &["pods/status"])],
        )],
        cluster_role_bindings: vec![cluster_binding("system:node", &["Group:system:nodes"])],
        ..PolicySet::default()
    };
    let rbac = Rbac::new(&set);
    let node = Identity::new("system:node:node1", "", vec!["system:nodes".into(), "system:authenticated".into()]);
    let list = Attributes::resource(node.clone(), "list", "pods");
    let status = Attributes::resource(node.clone(), "update", "pods").with_subresource("status").with_name("mypods").with_namespace("myns");
    let dolphins = Attributes::resource(node, "educate", "dolphins");
    assert!(rbac.authorize(&list).allowed(), "allow list pods");
    assert!(rbac.authorize(&status).allowed(), "allow update pods/status");
    assert!(!rbac.authorize(&dolphins).allowed(), "forbid educate dolphins");
}

/// The allow reasons of `rule.go`'s describers, and `system:masters`.
#[test]
fn allow_reasons_name_binding_role_and_subject() {
    let set = PolicySet {
        roles: vec![Role {
            metadata: ObjectMeta::new("prod", "reader"),
            rules: vec![rule(&["get"], &[""], &["secrets"])],
        }],
        cluster_roles: vec![cluster_role("admin", vec![rule(&["*"], &["*"], &["*"])])],
        role_bindings: vec![
            RoleBinding {
                metadata: ObjectMeta::new("prod", "app-reads"),
                subjects: vec![Subject::service_account("", "app")],
                role_ref: RoleRef::role("reader"),
            },
            RoleBinding {
                metadata: ObjectMeta::new("prod", "sa-elsewhere"),
                subjects: vec![Subject::service_account("ci", "deployer")],
                role_ref: RoleRef::cluster_role("admin"),
            },
        ],
        cluster_role_bindings: vec![ClusterRoleBinding {
            metadata: ObjectMeta::new("", "admins"),
            subjects: subjects(&["User:root", "Group:ops"]),
            role_ref: RoleRef::cluster_role("admin"),
        }],
    };
    let rbac = Rbac::new(&set);
    let reason = |user: Identity, ns: &str| rbac.authorize(&Attributes::resource(user, "get", "secrets").with_namespace(ns)).reason().to_owned();
    assert_eq!(
        reason(Identity::new("carol", "", vec!["ops".into()]), "prod"),
        r#"RBAC: allowed by ClusterRoleBinding "admins" of ClusterRole "admin" to Group "ops""#
    );
    assert_eq!(reason(Identity::new("root", "", vec![]), ""), r#"RBAC: allowed by ClusterRoleBinding "admins" of ClusterRole "admin" to User "root""#);
    assert_eq!(
        reason(Identity::new("system:serviceaccount:prod:app", "", vec![]), "prod"),
        r#"RBAC: allowed by RoleBinding "app-reads/prod" of Role "reader" to ServiceAccount "app/prod""#
    );
    assert_eq!(
        reason(Identity::new("system:serviceaccount:ci:deployer", "", vec![]), "prod"),
        r#"RBAC: allowed by RoleBinding "sa-elsewhere/prod" of ClusterRole "admin" to ServiceAccount "deployer/ci""#
    );
    // The service account of the same name in another namespace is someone else.
    let other = Attributes::resource(Identity::new("system:serviceaccount:dev:app", "", vec![]), "get", "secrets").with_namespace("prod");
    assert_eq!(rbac.authorize(&other), Decision::Deny { reason: String::new() });
    // system:masters: the privileged-group authorizer, before RBAC, with no reason.
    let masters = Attributes::resource(Identity::new("x", "", vec!["system:masters".into()]), "delete", "anything");
    assert_eq!(rbac.authorize(&masters), Decision::Allow { reason: String::new() });
    assert!(!Rbac::empty().authorize(&other).allowed());
}

/// A binding to a missing role grants nothing and says why, as upstream's resolution errors.
#[test]
fn missing_roles_are_resolution_errors_in_the_reason() {
    let set = PolicySet {
        role_bindings: vec![RoleBinding {
            metadata: ObjectMeta::new("prod", "b"),
            subjects: subjects(&["User:app"]),
            role_ref: RoleRef::role("gone"),
        }],
        cluster_role_bindings: vec![
            ClusterRoleBinding {
                metadata: ObjectMeta::new("", "c1"),
                subjects: subjects(&["Group:g"]),
                role_ref: RoleRef::cluster_role("missing"),
            },
            ClusterRoleBinding {
                metadata: ObjectMeta::new("", "c2"),
                subjects: subjects(&["User:app"]),
                role_ref: RoleRef::cluster_role("missing"),
            },
        ],
        ..PolicySet::default()
    };
    let rbac = Rbac::new(&set);
    let a = Attributes::resource(Identity::new("app", "", vec!["g".into()]), "get", "secrets").with_namespace("prod");
    assert_eq!(
        rbac.authorize(&a).reason(),
        r#"RBAC: [clusterrole.rbac.authorization.k8s.io "missing" not found, role.rbac.authorization.k8s.io "gone" not found]"#
    );
    let only = Attributes::resource(Identity::new("other", "", vec!["g".into()]), "get", "secrets");
    assert_eq!(rbac.authorize(&only).reason(), r#"RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found"#);
    let applied = rbac.rules_for(&Identity::new("app", "", vec![]), "prod");
    assert!(applied.rules.is_empty());
    assert_eq!(applied.errors.len(), 2);
}

fn load(yaml: &str) -> LoadedPolicy {
    parse_policy([("policy.yaml", yaml)]).unwrap_or_else(|e| panic!("{e}"))
}

fn problems(yaml: &str) -> Vec<String> {
    match parse_policy([("policy.yaml", yaml)]) {
        Err(AuthzError::Invalid { problems }) => problems.iter().map(ToString::to_string).collect(),
        other => panic!("expected problems, got {other:?}"),
    }
}

const APP_POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: db-reader
  namespace: prod
rules:
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: ["db"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: app-db-reader
  namespace: prod
subjects:
- kind: User
  name: app
roleRef:
  kind: Role
  name: db-reader
  apiGroup: rbac.authorization.k8s.io
"#;

/// The issue's application: allowed only `get` on `secrets/db` in `prod`.
#[test]
fn get_only_application_reads_db_and_nothing_else() {
    let rbac = Rbac::new(&load(APP_POLICY).set);
    let app = Identity::new("app", "", vec!["system:authenticated".into()]);
    let ask = |verb: &str, ns: &str, name: &str| rbac.authorize(&Attributes::resource(app.clone(), verb, "secrets").with_namespace(ns).with_name(name));
    let d = ask("get", "prod", "db");
    assert_eq!(d, Decision::Allow { reason: r#"RBAC: allowed by RoleBinding "app-db-reader/prod" of Role "db-reader" to User "app""#.into() });
    for (verb, ns, name) in [
        ("get", "prod", "other"),
        ("get", "prod", ""),
        ("list", "prod", ""),
        ("watch", "prod", ""),
        ("get", "dev", "db"),
        ("get", "", "db"),
        ("create", "prod", ""),
        ("update", "prod", "db"),
        ("patch", "prod", "db"),
        ("delete", "prod", "db"),
        ("deletecollection", "prod", ""),
    ] {
        assert!(!ask(verb, ns, name).allowed(), "{verb} {ns}/{name}");
    }
    // A list or watch selecting metadata.name=db carries the name, but the verb is not granted.
    assert!(!ask("list", "prod", "db").allowed());
    assert!(!ask("watch", "prod", "db").allowed());
    // Not get on a subresource or in another group either.
    let status = Attributes::resource(app.clone(), "get", "secrets").with_namespace("prod").with_name("db").with_subresource("status");
    assert!(!rbac.authorize(&status).allowed());
    let other_group = Attributes::resource(app, "get", "secrets").with_group("example.com").with_namespace("prod").with_name("db");
    assert!(!rbac.authorize(&other_group).allowed());
}

/// `resourceNames` with list and watch: only a request naming one object (a `metadata.name`
/// field selector) can match, and only that name.
#[test]
fn named_list_and_watch_need_the_name() {
    let yaml = APP_POLICY.replace(r#"verbs: ["get"]"#, r#"verbs: ["get", "list", "watch"]"#);
    let rbac = Rbac::new(&load(&yaml).set);
    let app = Identity::new("app", "", vec![]);
    for verb in ["list", "watch"] {
        let all = Attributes::resource(app.clone(), verb, "secrets").with_namespace("prod");
        assert!(!rbac.authorize(&all).allowed(), "{verb} without a name");
        assert!(rbac.authorize(&all.clone().with_name("db")).allowed(), "{verb} metadata.name=db");
        assert!(!rbac.authorize(&all.with_name("other")).allowed(), "{verb} metadata.name=other");
    }
}

/// ServiceAccount subjects: a RoleBinding's subject without a namespace is the binding's
/// namespace; a ClusterRoleBinding's names its own.
#[test]
fn service_account_subjects_from_manifests() {
    let yaml = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: secret-reader}
rules: [{apiGroups: [""], resources: [secrets], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: local-sa, namespace: prod}
subjects: [{kind: ServiceAccount, name: app}]
roleRef: {kind: ClusterRole, name: secret-reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: everywhere}
subjects: [{kind: ServiceAccount, name: operator, namespace: ops}]
roleRef: {kind: ClusterRole, name: secret-reader, apiGroup: rbac.authorization.k8s.io}
"#;
    let rbac = Rbac::new(&load(yaml).set);
    let sa = |ns: &str, name: &str| Identity::new(format!("system:serviceaccount:{ns}:{name}"), "", vec![]);
    let list = |user: Identity, ns: &str| rbac.authorize(&Attributes::resource(user, "list", "secrets").with_namespace(ns)).allowed();
    assert!(list(sa("prod", "app"), "prod"));
    assert!(!list(sa("prod", "app"), "dev"));
    assert!(!list(sa("dev", "app"), "prod"));
    assert!(!list(Identity::new("app", "", vec![]), "prod"));
    assert!(list(sa("ops", "operator"), "prod"));
    assert!(list(sa("ops", "operator"), ""));
    assert!(!list(sa("prod", "operator"), "prod"));
}

#[test]
fn manifests_json_lists_and_typed_lists() {
    let json = r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[
      {"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"view","uid":"u","resourceVersion":"7","creationTimestamp":"2024-01-01T00:00:00Z","labels":{"a":"b"},"annotations":{"x":"y"}},"rules":[{"apiGroups":[""],"resources":["configmaps"],"verbs":["get"]}]},
      {"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"view"},"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"devs"}],"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"}}
    ]}"#;
    let typed = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleList
items:
- metadata: {name: r, namespace: prod}
  rules: [{apiGroups: [""], resources: [secrets], verbs: [get]}]
---
# an empty document
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBindingList
items:
- metadata: {name: r, namespace: prod}
  subjects: [{kind: Group, name: devs}]
  roleRef: {kind: Role, name: r}
"#;
    let loaded = parse_policy([("a.json", json), ("b.yaml", typed)]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.set.counts();
    assert_eq!((c.roles, c.cluster_roles, c.role_bindings, c.cluster_role_bindings), (1, 1, 1, 1));
    assert_eq!(loaded.set.cluster_roles[0].metadata.labels, BTreeMap::from([("a".into(), "b".into())]));
    // The defaulted subject apiGroup.
    assert_eq!(loaded.set.role_bindings[0].subjects[0].api_group, "rbac.authorization.k8s.io");
    let rbac = Rbac::new(&loaded.set);
    let dev = Identity::new("d", "", vec!["devs".into()]);
    assert!(rbac.authorize(&Attributes::resource(dev.clone(), "get", "configmaps").with_namespace("x")).allowed());
    assert!(rbac.authorize(&Attributes::resource(dev, "get", "secrets").with_namespace("prod").with_name("s")).allowed());
}

/// Messages name file, document (and list item), object and field, worded as
/// kube-apiserver's validation (pkg/apis/rbac/validation/validation.go).
#[test]
fn validation_messages() {
    let cases: [(&str, &[&str]); 14] = [
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {namespace: prod}\nrules: []\n",
            &[r#"policy.yaml: document 1 (Role "prod/"): metadata.name: Required value: name or generateName is required"#],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r}\n",
            &[r#"policy.yaml: document 1 (Role "r"): metadata.namespace: Required value"#],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r, namespace: prod}\n",
            &[r#"policy.yaml: document 1 (ClusterRole "prod/r"): metadata.namespace: Forbidden: not allowed on this type"#],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: a/b}\n",
            &[r#"policy.yaml: document 1 (ClusterRole "a/b"): metadata.name: Invalid value: "a/b": may not contain '/'"#],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r, namespace: Prod}\n",
            &[r#"policy.yaml: document 1 (Role "Prod/r"): metadata.namespace: Invalid value: "Prod": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (at most 63 characters)"#],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r, namespace: p}\nrules:\n- nonResourceURLs: [/healthz]\n  verbs: [get]\n",
            &[r#"policy.yaml: document 1 (Role "p/r"): rules[0].nonResourceURLs: Invalid value: ["/healthz"]: namespaced rules cannot apply to non-resource URLs"#],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules:\n- nonResourceURLs: [/healthz]\n  resources: [pods]\n  verbs: [get]\n- apiGroups: ['']\n",
            &[
                r#"policy.yaml: document 1 (ClusterRole "r"): rules[0].nonResourceURLs: Invalid value: ["/healthz"]: rules cannot apply to both regular resources and non-resource URLs"#,
                r#"policy.yaml: document 1 (ClusterRole "r"): rules[1].verbs: Required value: verbs must contain at least one value"#,
                r#"policy.yaml: document 1 (ClusterRole "r"): rules[1].resources: Required value: resource rules must supply at least one resource"#,
            ],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules:\n- resources: [pods]\n  verbz: [get]\n",
            // Fields are read before objects are validated: the other problems of this rule
            // show once the unknown field is fixed.
            &[r#"policy.yaml: document 1 (ClusterRole "r"): rules[0]: unknown field "rules[0].verbz" (known fields: apiGroups, nonResourceURLs, resourceNames, resources, verbs)"#],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\nspec: {}\nsubjects:\n- {kind: ServiceAccount, name: app}\n- {kind: User, name: u, apiGroup: rbac, namespace: prod}\n- {kind: Robot, name: r}\n- {kind: ServiceAccount, name: Bad_Name, namespace: x, apiGroup: v1}\nroleRef: {kind: Role, name: x, apiGroup: example.com}\n",
            &[
                r#"policy.yaml: document 1 (ClusterRoleBinding "b"): unknown field "spec" (known fields: apiVersion, kind, metadata, subjects, roleRef)"#,
            ],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\nsubjects:\n- {kind: ServiceAccount, name: app}\n- {kind: User, name: u, apiGroup: rbac, namespace: prod}\n- {kind: Robot, name: r}\n- {kind: ServiceAccount, name: Bad_Name, namespace: x, apiGroup: v1}\n- {kind: Group}\nroleRef: {kind: Role, name: x, apiGroup: example.com}\n",
            &[
                r#"policy.yaml: document 1 (ClusterRoleBinding "b"): roleRef.apiGroup: Unsupported value: "example.com": supported values: "rbac.authorization.k8s.io""#,
                r#"policy.yaml: document 1 (ClusterRoleBinding "b"): roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole""#,
                r#"policy.yaml: document 1 (ClusterRoleBinding "b"): subjects[0].namespace: Required value"#,
                r#"policy.yaml: document 1 (ClusterRoleBinding "b"): subjects[1].apiGroup: Unsupported value: "rbac": supported values: "rbac.authorization.k8s.io""#,
                r#"policy.yaml: document 1 (ClusterRoleBinding "b"): subjects[1].namespace: Forbidden: a User subject has no namespace"#,
                r#"policy.yaml: document 1 (ClusterRoleBinding "b"): subjects[2].kind: Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group""#,
                r#"policy.yaml: document 1 (ClusterRoleBinding "b"): subjects[3].name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#,
                r#"policy.yaml: document 1 (ClusterRoleBinding "b"): subjects[3].apiGroup: Unsupported value: "v1": supported values: """#,
                r#"policy.yaml: document 1 (ClusterRoleBinding "b"): subjects[4].name: Required value"#,
            ],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: b, namespace: p}\nroleRef: {kind: Role}\n",
            &[r#"policy.yaml: document 1 (RoleBinding "p/b"): roleRef.name: Required value"#],
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\napiVersion: rbac.authorization.k8s.io/v1beta1\nkind: Role\nmetadata: {name: r, namespace: p}\n---\nkind: Role\n---\n[1, 2]\n",
            &[
                r#"policy.yaml: document 1 (Secret "s"): kind: Unsupported value: "Secret": supported values: "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "List"; a policy holds only RBAC objects"#,
                r#"policy.yaml: document 2 (Role "p/r"): apiVersion: Unsupported value: "rbac.authorization.k8s.io/v1beta1": supported values: "rbac.authorization.k8s.io/v1""#,
                r#"policy.yaml: document 3 (Role ""): apiVersion: Required value"#,
                r#"policy.yaml: document 4: a document must be an object (a Kubernetes manifest), not a list"#,
            ],
        ),
        (
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: rbac.authorization.k8s.io/v1\n  kind: ClusterRole\n  metadata: {name: ok}\n- apiVersion: rbac.authorization.k8s.io/v1\n  kind: ClusterRole\n  metadata: {name: bad}\n  rules: [{verbs: get}]\n",
            &[r#"policy.yaml: document 1, items[1] (ClusterRole "bad"): rules[0].verbs: Invalid value: a string: must be a list of strings"#],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: a}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: a}\n",
            &[r#"policy.yaml: document 2 (ClusterRole "a"): metadata.name: Duplicate value: "a": the same ClusterRole is also defined at policy.yaml: document 1"#],
        ),
    ];
    for (yaml, want) in cases {
        assert_eq!(problems(yaml), *want, "{yaml}");
    }
    let syntax = problems("kind: [unclosed\n");
    assert_eq!(syntax.len(), 1);
    assert!(syntax[0].starts_with("policy.yaml: document 1: not valid YAML or JSON: "), "{}", syntax[0]);
}

#[test]
fn error_display_lists_every_problem() {
    let e = parse_policy([("a.yaml", "kind: Role\n"), ("b.yaml", "kind: Pod\n")]).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("invalid authorization policy (2 problems):\n  a.yaml: document 1 (Role \"\"): apiVersion: Required value\n"), "{text}");
    assert!(text.contains("\n  b.yaml: document 1 (Pod \"\"): kind: Unsupported value: \"Pod\""), "{text}");
}

#[test]
fn dangling_role_references_are_warnings() {
    let yaml = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: b, namespace: prod}
subjects: [{kind: User, name: u}]
roleRef: {kind: Role, name: nope}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: c}
subjects: [{kind: User, name: u}]
roleRef: {kind: ClusterRole, name: edit}
"#;
    assert_eq!(
        load(yaml).warnings,
        [
            r#"policy.yaml: document 1 (RoleBinding "prod/b"): roleRef: Role "prod/nope" is not defined in the policy; the binding grants nothing"#,
            r#"policy.yaml: document 2 (ClusterRoleBinding "c"): roleRef: ClusterRole "edit" is not defined in the policy; the binding grants nothing"#,
        ]
    );
}

/// Aggregated ClusterRoles get the rules of the roles their selectors match (the aggregation
/// controller's `syncClusterRole`), transitively, rules deduplicated, roles by name.
#[test]
fn aggregation_rules_fill_cluster_roles() {
    let yaml = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: monitoring}
aggregationRule:
  clusterRoleSelectors:
  - matchLabels: {rbac.example.com/aggregate-to-monitoring: "true"}
rules: [{apiGroups: [""], resources: [stale], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: z-endpoints, labels: {rbac.example.com/aggregate-to-monitoring: "true"}}
rules: [{apiGroups: [""], resources: [endpoints], verbs: [get]}, {apiGroups: [""], resources: [services], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: a-services, labels: {rbac.example.com/aggregate-to-monitoring: "true", tier: x}}
rules: [{apiGroups: [""], resources: [services], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: top}
aggregationRule:
  clusterRoleSelectors:
  - matchExpressions: [{key: tier, operator: NotIn, values: [x]}, {key: rbac.example.com/aggregate-to-monitoring, operator: Exists}]
  - matchExpressions: [{key: name, operator: In, values: [mon]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: mon-alias, labels: {name: mon}}
aggregationRule:
  clusterRoleSelectors: [{matchLabels: {rbac.example.com/aggregate-to-monitoring: "true"}}]
"#;
    let set = load(yaml).set;
    let rules = |name: &str| -> Vec<String> {
        set.cluster_roles.iter().find(|r| r.metadata.name == name).unwrap().rules.iter().map(|r| r.resources.join(",")).collect()
    };
    assert_eq!(rules("monitoring"), ["services", "endpoints"]);
    assert_eq!(rules("mon-alias"), ["services", "endpoints"]);
    assert_eq!(rules("top"), ["endpoints", "services"]);
    let bad = problems("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: a}\naggregationRule:\n  clusterRoleSelectors:\n  - matchExpressions: [{key: k, operator: In}, {key: k, operator: Exists, values: [v]}, {key: k, operator: Near}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: b}\naggregationRule: {}\n");
    assert_eq!(
        bad,
        [
            r#"policy.yaml: document 1 (ClusterRole "a"): aggregationRule.clusterRoleSelectors[0].matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"#,
            r#"policy.yaml: document 1 (ClusterRole "a"): aggregationRule.clusterRoleSelectors[0].matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"#,
            r#"policy.yaml: document 1 (ClusterRole "a"): aggregationRule.clusterRoleSelectors[0].matchExpressions[2].operator: Invalid value: "Near": not a valid selector operator"#,
            r#"policy.yaml: document 2 (ClusterRole "b"): aggregationRule.clusterRoleSelectors: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"#,
        ]
    );
}

/// A full scan of every binding in order, as `VisitRulesFor` does: the index must decide
/// exactly the same, with the same reason.
fn full_scan(set: &PolicySet, a: &Attributes) -> Decision {
    if a.user.in_group("system:masters") {
        return Decision::Allow { reason: String::new() };
    }
    let cluster_rules = |name: &str| set.cluster_roles.iter().find(|r| r.metadata.name == name).map(|r| r.rules.clone());
    for b in &set.cluster_role_bindings {
        if let Some(i) = applies_to(&a.user, &b.subjects, "") {
            if cluster_rules(&b.role_ref.name).is_some_and(|rules| rules.iter().any(|r| rule_allows(a, r))) {
                let s = &b.subjects[i];
                let who = if s.kind == "ServiceAccount" { format!("{}/{}", s.name, s.namespace) } else { s.name.clone() };
                return Decision::Allow {
                    reason: format!("RBAC: allowed by ClusterRoleBinding {:?} of ClusterRole {:?} to {} {who:?}", b.metadata.name, b.role_ref.name, s.kind),
                };
            }
        }
    }
    if !a.namespace.is_empty() {
        for b in set.role_bindings.iter().filter(|b| b.metadata.namespace == a.namespace) {
            if let Some(i) = applies_to(&a.user, &b.subjects, &a.namespace) {
                let rules = if b.role_ref.kind == "Role" {
                    set.roles.iter().find(|r| r.metadata.namespace == a.namespace && r.metadata.name == b.role_ref.name).map(|r| r.rules.clone())
                } else {
                    cluster_rules(&b.role_ref.name)
                };
                if rules.is_some_and(|rules| rules.iter().any(|r| rule_allows(a, r))) {
                    let s = &b.subjects[i];
                    let who = if s.kind == "ServiceAccount" {
                        format!("{}/{}", s.name, if s.namespace.is_empty() { &a.namespace } else { &s.namespace })
                    } else {
                        s.name.clone()
                    };
                    return Decision::Allow {
                        reason: format!(
                            "RBAC: allowed by RoleBinding \"{}/{}\" of {} {:?} to {} {who:?}",
                            b.metadata.name, b.metadata.namespace, b.role_ref.kind, b.role_ref.name, s.kind
                        ),
                    };
                }
            }
        }
    }
    Decision::Deny { reason: String::new() }
}

fn pick(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(names).prop_map(str::to_owned)
}

fn arb_subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        pick(&["u1", "u2", "system:serviceaccount:n1:sa"]).prop_map(Subject::user),
        pick(&["g1", "g2", "system:masters"]).prop_map(Subject::group),
        (pick(&["", "n1", "n2"]), pick(&["sa", "sb"])).prop_map(|(ns, n)| Subject::service_account(ns, n)),
    ]
}

fn arb_rule() -> impl Strategy<Value = PolicyRule> {
    (
        proptest::collection::vec(pick(&["get", "list", "*"]), 1..3),
        proptest::collection::vec(pick(&["", "apps", "*"]), 1..2),
        proptest::collection::vec(pick(&["secrets", "pods", "pods/status", "*/status", "*"]), 1..3),
        proptest::collection::vec(pick(&["db", "x"]), 0..2),
    )
        .prop_map(|(verbs, api_groups, resources, resource_names)| PolicyRule {
            verbs,
            api_groups,
            resources,
            resource_names,
            non_resource_urls: vec![],
        })
}

fn arb_policy() -> impl Strategy<Value = PolicySet> {
    let role_names = &["r1", "r2", "r3"];
    (
        proptest::collection::vec((pick(&["n1", "n2"]), pick(role_names), proptest::collection::vec(arb_rule(), 0..3)), 0..4),
        proptest::collection::vec((pick(role_names), proptest::collection::vec(arb_rule(), 0..3)), 0..3),
        proptest::collection::vec((pick(&["n1", "n2"]), any::<bool>(), pick(role_names), proptest::collection::vec(arb_subject(), 0..4)), 0..6),
        proptest::collection::vec((pick(role_names), proptest::collection::vec(arb_subject(), 0..4)), 0..4),
    )
        .prop_map(|(roles, cluster_roles, rbs, crbs)| {
            let mut set = PolicySet::default();
            for (ns, name, rules) in roles {
                if !set.roles.iter().any(|r| r.metadata.namespace == ns && r.metadata.name == name) {
                    set.roles.push(Role { metadata: ObjectMeta::new(ns, name), rules });
                }
            }
            for (name, rules) in cluster_roles {
                if !set.cluster_roles.iter().any(|r| r.metadata.name == name) {
                    set.cluster_roles.push(cluster_role(&name, rules));
                }
            }
            for (i, (ns, to_role, role, subjects)) in rbs.into_iter().enumerate() {
                let role_ref = if to_role { RoleRef::role(role) } else { RoleRef::cluster_role(role) };
                set.role_bindings.push(RoleBinding { metadata: ObjectMeta::new(ns, format!("rb{i}")), subjects, role_ref });
            }
            for (i, (role, subjects)) in crbs.into_iter().enumerate() {
                set.cluster_role_bindings.push(ClusterRoleBinding {
                    metadata: ObjectMeta::new("", format!("crb{i}")),
                    subjects: subjects.into_iter().filter(|s| s.kind != "ServiceAccount" || !s.namespace.is_empty()).collect(),
                    role_ref: RoleRef::cluster_role(role),
                });
            }
            set
        })
}

fn arb_request() -> impl Strategy<Value = Attributes> {
    (
        pick(&["u1", "u2", "system:serviceaccount:n1:sa", "system:serviceaccount:n2:sb"]),
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
