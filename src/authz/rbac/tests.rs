//! keyward's RBAC cases: allow reasons, missing roles, manifests (YAML, JSON, lists),
//! validation messages, service accounts, named list/watch, the get-only application and
//! aggregation.

use std::collections::BTreeMap;

use super::upstream_tests::{cluster_role, rule, subjects};
use super::*;
use crate::authn::Identity;
use crate::authz::{Attributes, Authorizer, AuthzError, Decision};

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
    let reason = |user: Identity, ns: &str| {
        rbac.authorize(&Attributes::resource(user, "get", "secrets").with_namespace(ns))
            .reason()
            .to_owned()
    };
    assert_eq!(
        reason(Identity::new("carol", "", vec!["ops".into()]), "prod"),
        r#"RBAC: allowed by ClusterRoleBinding "admins" of ClusterRole "admin" to Group "ops""#
    );
    assert_eq!(
        reason(Identity::new("root", "", vec![]), ""),
        r#"RBAC: allowed by ClusterRoleBinding "admins" of ClusterRole "admin" to User "root""#
    );
    assert_eq!(
        reason(
            Identity::new("system:serviceaccount:prod:app", "", vec![]),
            "prod"
        ),
        r#"RBAC: allowed by RoleBinding "app-reads/prod" of Role "reader" to ServiceAccount "app/prod""#
    );
    assert_eq!(
        reason(
            Identity::new("system:serviceaccount:ci:deployer", "", vec![]),
            "prod"
        ),
        r#"RBAC: allowed by RoleBinding "sa-elsewhere/prod" of ClusterRole "admin" to ServiceAccount "deployer/ci""#
    );
    // The service account of the same name in another namespace is someone else.
    let other = Attributes::resource(
        Identity::new("system:serviceaccount:dev:app", "", vec![]),
        "get",
        "secrets",
    )
    .with_namespace("prod");
    assert_eq!(
        rbac.authorize(&other),
        Decision::Deny {
            reason: String::new()
        }
    );
    // system:masters: the privileged-group authorizer, before RBAC, with no reason.
    let masters = Attributes::resource(
        Identity::new("x", "", vec!["system:masters".into()]),
        "delete",
        "anything",
    );
    assert_eq!(
        rbac.authorize(&masters),
        Decision::Allow {
            reason: String::new()
        }
    );
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
    let a = Attributes::resource(Identity::new("app", "", vec!["g".into()]), "get", "secrets")
        .with_namespace("prod");
    assert_eq!(
        rbac.authorize(&a).reason(),
        r#"RBAC: [clusterrole.rbac.authorization.k8s.io "missing" not found, role.rbac.authorization.k8s.io "gone" not found]"#
    );
    let only = Attributes::resource(
        Identity::new("other", "", vec!["g".into()]),
        "get",
        "secrets",
    );
    assert_eq!(
        rbac.authorize(&only).reason(),
        r#"RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found"#
    );
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
    let ask = |verb: &str, ns: &str, name: &str| {
        rbac.authorize(
            &Attributes::resource(app.clone(), verb, "secrets")
                .with_namespace(ns)
                .with_name(name),
        )
    };
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
    let status = Attributes::resource(app.clone(), "get", "secrets")
        .with_namespace("prod")
        .with_name("db")
        .with_subresource("status");
    assert!(!rbac.authorize(&status).allowed());
    let other_group = Attributes::resource(app, "get", "secrets")
        .with_group("example.com")
        .with_namespace("prod")
        .with_name("db");
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
        assert!(
            rbac.authorize(&all.clone().with_name("db")).allowed(),
            "{verb} metadata.name=db"
        );
        assert!(
            !rbac.authorize(&all.with_name("other")).allowed(),
            "{verb} metadata.name=other"
        );
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
    let sa = |ns: &str, name: &str| {
        Identity::new(format!("system:serviceaccount:{ns}:{name}"), "", vec![])
    };
    let list = |user: Identity, ns: &str| {
        rbac.authorize(&Attributes::resource(user, "list", "secrets").with_namespace(ns))
            .allowed()
    };
    assert!(list(sa("prod", "app"), "prod"));
    assert!(!list(sa("prod", "app"), "dev"));
    assert!(!list(sa("dev", "app"), "prod"));
    assert!(!list(Identity::new("app", "", vec![]), "prod"));
    assert!(list(sa("ops", "operator"), "prod"));
    assert!(list(sa("ops", "operator"), ""));
    assert!(!list(sa("prod", "operator"), "prod"));
}

/// A repeated key is refused with go-yaml's words and its line (counted in the file), whatever
/// document it is in, rather than read as its last value.
#[test]
fn repeated_keys_are_refused() {
    let yaml = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: r}
rules: [{apiGroups: [\"\"], resources: [secrets], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: b, namespace: prod}
subjects: [{kind: User, name: u, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: ClusterRole, name: r, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: ClusterRole, name: cluster-admin, apiGroup: rbac.authorization.k8s.io}
";
    assert_eq!(
        problems(yaml),
        [r#"policy.yaml: document 2: line 11: key "roleRef" already set in map"#]
    );
    let rules = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r, namespace: a}\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  verbs: [get]\n  verbs: [\"*\"]\n";
    assert_eq!(
        problems(rules),
        [r#"policy.yaml: document 1: line 8: key "verbs" already set in map"#]
    );
}

/// Problems come in document order, whichever check found them (parsing finds an unknown
/// field before validation sees an earlier document's bad reference).
#[test]
fn problems_are_listed_in_document_order() {
    let yaml = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: b, namespace: prod}
subjects: [{kind: User, name: u, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: Role, name: r, apiGroup: example.com}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: r, namespace: prod}
spec: {}
";
    let found = problems(yaml);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("document 1"), "{found:?}");
    assert!(found[1].contains("document 2"), "{found:?}");
}

/// Labels are checked as `ValidateObjectMeta` checks them.
#[test]
fn invalid_labels_are_refused() {
    let yaml = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r, labels: {\"bad key!\": v, ok: \"bad value!\"}}\n";
    let found = problems(yaml);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains(r#"metadata.labels: Invalid value: "bad key!": name part must consist of alphanumeric characters"#),
        "{found:?}"
    );
    assert!(
        found[1].contains(
            r#"metadata.labels: Invalid value: "bad value!": a valid label must be an empty string"#
        ),
        "{found:?}"
    );
}

/// A User or Group subject with a namespace loads, and its namespace is ignored, as in
/// kube-apiserver (a cluster's exported policy loads as it is).
#[test]
fn user_and_group_subjects_with_a_namespace_apply_everywhere_they_are_bound() {
    let yaml = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: secret-reader}
rules: [{apiGroups: [""], resources: [secrets], verbs: [list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: readers}
subjects:
  - {kind: User, name: alice, namespace: prod, apiGroup: rbac.authorization.k8s.io}
  - {kind: Group, name: ops, namespace: dev, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: ClusterRole, name: secret-reader, apiGroup: rbac.authorization.k8s.io}
"#;
    let rbac = Rbac::new(&load(yaml).set);
    let list = |user: Identity, ns: &str| {
        rbac.authorize(&Attributes::resource(user, "list", "secrets").with_namespace(ns))
            .allowed()
    };
    assert!(list(Identity::new("alice", "", vec![]), "other"));
    assert!(list(Identity::new("bob", "", vec!["ops".into()]), "prod"));
    assert!(!list(Identity::new("bob", "", vec![]), "dev"));
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
    // kubectl flattens a `List` of any apiVersion.
    let grouped = "apiVersion: rbac.authorization.k8s.io/v1\nkind: List\nitems: []\n";
    assert!(parse_policy([("c.yaml", grouped)]).is_ok());
    let loaded = parse_policy([("a.json", json), ("b.yaml", typed)]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.set.counts();
    assert_eq!(
        (
            c.roles,
            c.cluster_roles,
            c.role_bindings,
            c.cluster_role_bindings
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(
        loaded.set.cluster_roles[0].metadata.labels,
        BTreeMap::from([("a".into(), "b".into())])
    );
    // The defaulted subject apiGroup.
    assert_eq!(
        loaded.set.role_bindings[0].subjects[0].api_group,
        "rbac.authorization.k8s.io"
    );
    let rbac = Rbac::new(&loaded.set);
    let dev = Identity::new("d", "", vec!["devs".into()]);
    assert!(rbac
        .authorize(&Attributes::resource(dev.clone(), "get", "configmaps").with_namespace("x"))
        .allowed());
    assert!(rbac
        .authorize(
            &Attributes::resource(dev, "get", "secrets")
                .with_namespace("prod")
                .with_name("s")
        )
        .allowed());
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
            &[r#"policy.yaml: document 1 (Role "Prod/r"): metadata.namespace: Invalid value: "Prod": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"#],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r, namespace: p}\nrules:\n- nonResourceURLs: [/healthz]\n  verbs: [get]\n",
            &[r#"policy.yaml: document 1 (Role "p/r"): rules[0].nonResourceURLs: Invalid value: []string{"/healthz"}: namespaced rules cannot apply to non-resource URLs"#],
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: r}\nrules:\n- nonResourceURLs: [/healthz]\n  resources: [pods]\n  verbs: [get]\n- apiGroups: ['']\n",
            &[
                r#"policy.yaml: document 1 (ClusterRole "r"): rules[0].nonResourceURLs: Invalid value: []string{"/healthz"}: rules cannot apply to both regular resources and non-resource URLs"#,
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
    assert!(
        syntax[0].starts_with("policy.yaml: document 1: not valid YAML or JSON: "),
        "{}",
        syntax[0]
    );
}

#[test]
fn error_display_lists_every_problem() {
    let e = parse_policy([("a.yaml", "kind: Role\n"), ("b.yaml", "kind: Pod\n")]).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("invalid authorization policy (2 problems):\n  a.yaml: document 1 (Role \"\"): apiVersion: Required value\n"), "{text}");
    assert!(
        text.contains("\n  b.yaml: document 1 (Pod \"\"): kind: Unsupported value: \"Pod\""),
        "{text}"
    );
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
        set.cluster_roles
            .iter()
            .find(|r| r.metadata.name == name)
            .unwrap()
            .rules
            .iter()
            .map(|r| r.resources.join(","))
            .collect()
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

/// Runs `kubectl <args> --dry-run=client` (offline) and returns its output; fails, saying to
/// install kubectl, without it (the test tools of the README's test command).
fn kubectl(args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .arg("--dry-run=client")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("`kubectl` is needed for this test ({e}); install it (see the README's test command)")
        });
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
}

/// Manifests written by an independent implementation, `kubectl create ... -o yaml|json`, load
/// as they are (kubectl adds `creationTimestamp: null` and `rules: null`) and mean what kubectl
/// meant.
#[test]
fn kubectl_generated_manifests_load() {
    let inputs = [
        kubectl(&["create", "clusterrole", "health", "--verb=get", "--non-resource-url=/healthz", "--non-resource-url=/apis/*", "-o", "yaml"]),
        kubectl(&["create", "clusterrole", "agg", "--aggregation-rule=example.com/agg=true", "-o", "json"]),
        kubectl(&["create", "clusterrolebinding", "health", "--clusterrole=health", "--group=system:authenticated", "-o", "yaml"]),
        kubectl(&["create", "clusterrolebinding", "ops", "--clusterrole=agg", "--user=u", "--group=g", "--serviceaccount=ops:op", "-o", "json"]),
        kubectl(&["create", "rolebinding", "app", "--role=reader", "--serviceaccount=prod:app", "-n", "prod", "-o", "yaml"]),
        // `kubectl create role` needs a server to resolve resources: written by hand.
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: reader, namespace: prod}\nrules: [{apiGroups: [\"\"], resources: [secrets], resourceNames: [db], verbs: [get]}]\n".to_owned(),
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: ops-part, labels: {example.com/agg: \"true\"}}\nrules: [{apiGroups: [\"\"], resources: [configmaps], verbs: [list]}]\n".to_owned(),
    ];
    let named: Vec<(String, &str)> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("kubectl-{i}"), t.as_str()))
        .collect();
    let loaded =
        parse_policy(named.iter().map(|(n, t)| (n.as_str(), *t))).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let rbac = Rbac::new(&loaded.set);
    let user = |name: &str, groups: &[&str]| {
        Identity::new(name, "", groups.iter().map(|g| g.to_string()).collect())
    };
    let anyone = user("x", &["system:authenticated"]);
    assert!(rbac
        .authorize(&Attributes::non_resource(anyone.clone(), "get", "/healthz"))
        .allowed());
    assert!(rbac
        .authorize(&Attributes::non_resource(
            anyone.clone(),
            "get",
            "/apis/apps"
        ))
        .allowed());
    assert!(!rbac
        .authorize(&Attributes::non_resource(anyone, "get", "/apis"))
        .allowed());
    for who in [
        user("u", &[]),
        user("v", &["g"]),
        user("system:serviceaccount:ops:op", &[]),
    ] {
        assert!(rbac
            .authorize(&Attributes::resource(who, "list", "configmaps").with_namespace("any"))
            .allowed());
    }
    let app = user("system:serviceaccount:prod:app", &[]);
    assert!(rbac
        .authorize(
            &Attributes::resource(app.clone(), "get", "secrets")
                .with_namespace("prod")
                .with_name("db")
        )
        .allowed());
    assert!(!rbac
        .authorize(&Attributes::resource(app, "list", "secrets").with_namespace("prod"))
        .allowed());
}
