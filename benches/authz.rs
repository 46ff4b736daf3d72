//! RBAC authorization per request, as upstream's `BenchmarkAuthorize`
//! (plugin/pkg/auth/authorizer/rbac/rbac_test.go): a node's "allow list pods", "allow update
//! pods/status" and "forbid educate dolphins", over a policy shaped like a cluster's bootstrap
//! policy (dozens of system ClusterRoles and ClusterRoleBindings) plus 200 application
//! namespaces with their own Roles and RoleBindings. Two keyward cases follow: an application
//! reading its one Secret through a RoleBinding, and being refused a list. Loading (parse,
//! validate, compile) the whole policy is timed too.

use std::fmt::Write;

use criterion::{criterion_group, criterion_main, Criterion};
use keyward::authn::Identity;
use keyward::authz::rbac::parse_policy;
use keyward::authz::{Attributes, Authorizer, Rbac};

/// A system ClusterRole: name, then rules as (apiGroups, resources, verbs).
type RoleSpec = (
    &'static str,
    &'static [(&'static str, &'static str, &'static str)],
);

const READ: &str = "get,list,watch";

const SYSTEM_ROLES: &[RoleSpec] = &[
    (
        "system:node",
        &[
            ("", "pods", READ),
            ("", "pods/status", "update,patch"),
            ("", "pods/eviction", "create"),
            ("", "nodes", "get,list,watch,create,update,patch"),
            ("", "nodes/status", "update,patch"),
            ("", "events", "create,update,patch"),
            ("", "secrets,configmaps", "get,list,watch"),
            ("", "persistentvolumeclaims,persistentvolumes", "get"),
            ("", "endpoints,services", READ),
            (
                "storage.k8s.io",
                "volumeattachments,csidrivers,csinodes",
                "get,list,watch",
            ),
            (
                "coordination.k8s.io",
                "leases",
                "get,create,update,patch,delete",
            ),
            (
                "certificates.k8s.io",
                "certificatesigningrequests",
                "create,get,list,watch",
            ),
        ],
    ),
    (
        "system:kube-scheduler",
        &[
            ("", "events", "create,patch,update"),
            ("", "pods,nodes,persistentvolumeclaims", READ),
            ("", "bindings,pods/binding", "create"),
            ("", "pods/status", "patch,update"),
            ("apps", "replicasets,statefulsets", READ),
            ("policy", "poddisruptionbudgets", READ),
            ("coordination.k8s.io", "leases", "create,get,update"),
        ],
    ),
    (
        "system:kube-controller-manager",
        &[
            ("", "secrets,serviceaccounts", "create,get,list,watch"),
            ("", "serviceaccounts/token", "create"),
            ("", "events", "create,patch,update"),
            ("coordination.k8s.io", "leases", "create,get,update"),
            ("", "endpoints", "create,get,update"),
            ("", "namespaces", "get"),
        ],
    ),
    (
        "system:kube-proxy",
        &[
            ("", "endpoints,services", "list,watch"),
            ("", "nodes", "get,list,watch"),
            ("discovery.k8s.io", "endpointslices", "list,watch"),
        ],
    ),
    (
        "system:kube-dns",
        &[("", "endpoints,services", "list,watch")],
    ),
    ("system:discovery", &[]),
    (
        "system:basic-user",
        &[
            (
                "authorization.k8s.io",
                "selfsubjectaccessreviews,selfsubjectrulesreviews",
                "create",
            ),
            ("authentication.k8s.io", "selfsubjectreviews", "create"),
        ],
    ),
    ("system:public-info-viewer", &[]),
    (
        "system:auth-delegator",
        &[
            ("authentication.k8s.io", "tokenreviews", "create"),
            ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ],
    ),
    (
        "system:heapster",
        &[
            ("", "events,namespaces,nodes,pods", "get,list,watch"),
            ("extensions", "deployments", "get,list,watch"),
        ],
    ),
    (
        "system:node-problem-detector",
        &[
            ("", "nodes", "get"),
            ("", "nodes/status", "patch"),
            ("", "events", "create,patch,update"),
        ],
    ),
    (
        "system:kubelet-api-admin",
        &[
            ("", "nodes", "get,list,watch,proxy"),
            ("", "nodes/log,nodes/metrics,nodes/proxy,nodes/stats", "*"),
        ],
    ),
    (
        "system:node-bootstrapper",
        &[(
            "certificates.k8s.io",
            "certificatesigningrequests",
            "create,get,list,watch",
        )],
    ),
    (
        "system:volume-scheduler",
        &[
            ("", "persistentvolumes", "get,list,patch,update,watch"),
            ("storage.k8s.io", "storageclasses", READ),
        ],
    ),
    (
        "system:persistent-volume-provisioner",
        &[
            ("", "persistentvolumes", "create,delete,get,list,watch"),
            ("", "persistentvolumeclaims", "get,list,update,watch"),
            ("", "events", "create,list,patch,update,watch"),
        ],
    ),
    ("system:monitoring", &[]),
    (
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        &[(
            "certificates.k8s.io",
            "certificatesigningrequests/nodeclient",
            "create",
        )],
    ),
    (
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        &[(
            "certificates.k8s.io",
            "certificatesigningrequests/selfnodeclient",
            "create",
        )],
    ),
    (
        "admin",
        &[
            (
                "",
                "pods,services,configmaps,secrets,persistentvolumeclaims",
                "*",
            ),
            (
                "apps",
                "deployments,statefulsets,daemonsets,replicasets",
                "*",
            ),
            ("rbac.authorization.k8s.io", "roles,rolebindings", "*"),
            ("batch", "jobs,cronjobs", "*"),
        ],
    ),
    (
        "edit",
        &[
            (
                "",
                "pods,services,configmaps,secrets,persistentvolumeclaims",
                "*",
            ),
            (
                "apps",
                "deployments,statefulsets,daemonsets,replicasets",
                "*",
            ),
            ("batch", "jobs,cronjobs", "*"),
        ],
    ),
    (
        "view",
        &[
            (
                "",
                "pods,services,configmaps,persistentvolumeclaims,endpoints,events",
                READ,
            ),
            (
                "apps",
                "deployments,statefulsets,daemonsets,replicasets",
                READ,
            ),
            ("batch", "jobs,cronjobs", READ),
        ],
    ),
    ("cluster-admin", &[("*", "*", "*")]),
];

/// ClusterRoleBindings: (role, subjects as Kind:name).
const SYSTEM_BINDINGS: &[(&str, &str)] = &[
    ("cluster-admin", "Group:system:masters"),
    ("system:node", "Group:system:nodes"),
    ("system:kube-scheduler", "User:system:kube-scheduler"),
    (
        "system:kube-controller-manager",
        "User:system:kube-controller-manager",
    ),
    ("system:kube-proxy", "User:system:kube-proxy"),
    ("system:kube-dns", "ServiceAccount:kube-system/kube-dns"),
    ("system:discovery", "Group:system:authenticated"),
    ("system:basic-user", "Group:system:authenticated"),
    (
        "system:public-info-viewer",
        "Group:system:authenticated,Group:system:unauthenticated",
    ),
    ("system:monitoring", "Group:system:monitoring"),
    ("system:node-bootstrapper", "Group:system:bootstrappers"),
    (
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "Group:system:bootstrappers",
    ),
    (
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
        "Group:system:nodes",
    ),
    ("system:volume-scheduler", "User:system:kube-scheduler"),
    ("system:heapster", "ServiceAccount:kube-system/heapster"),
    (
        "system:node-problem-detector",
        "ServiceAccount:kube-system/npd",
    ),
    (
        "system:auth-delegator",
        "ServiceAccount:kube-system/metrics-server",
    ),
    ("view", "Group:auditors"),
];

/// A comma-separated list as a YAML flow sequence of quoted strings (`*` is an alias in YAML).
fn flow(csv: &str) -> String {
    let items: Vec<String> = csv.split(',').map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(", "))
}

fn rules_yaml(out: &mut String, rules: &[(&str, &str, &str)]) {
    if rules.is_empty() {
        out.push_str(
            "rules: [{nonResourceURLs: [/healthz, /livez, /readyz, /version], verbs: [get]}]\n",
        );
        return;
    }
    out.push_str("rules:\n");
    for (groups, resources, verbs) in rules {
        let (g, r, v) = (flow(groups), flow(resources), flow(verbs));
        let _ = writeln!(out, "- {{apiGroups: {g}, resources: {r}, verbs: {v}}}");
    }
}

fn subjects_yaml(out: &mut String, subjects: &str) {
    out.push_str("subjects:\n");
    for s in subjects.split(',') {
        let (kind, name) = s.split_once(':').expect("Kind:name");
        if let Some((ns, sa)) = name.split_once('/').filter(|_| kind == "ServiceAccount") {
            let _ = writeln!(
                out,
                "- {{kind: ServiceAccount, name: {sa}, namespace: {ns}}}"
            );
        } else {
            let _ = writeln!(out, "- {{kind: {kind}, name: \"{name}\"}}");
        }
    }
}

/// The whole policy as one multi-document YAML file.
fn policy_yaml() -> String {
    let mut y = String::new();
    for (name, rules) in SYSTEM_ROLES {
        let _ = writeln!(y, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: \"{name}\"}}");
        rules_yaml(&mut y, rules);
    }
    for (role, subjects) in SYSTEM_BINDINGS {
        let _ = writeln!(y, "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: \"{role}\"}}");
        subjects_yaml(&mut y, subjects);
        let _ = writeln!(y, "roleRef: {{kind: ClusterRole, name: \"{role}\"}}");
    }
    for i in 0..200 {
        let ns = format!("team-{i}");
        let _ = writeln!(
            y,
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: app-secrets, namespace: {ns}}}\nrules: [{{apiGroups: [\"\"], resources: [secrets], resourceNames: [db, api-key], verbs: [get]}}]"
        );
        let _ = writeln!(
            y,
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: app-secrets, namespace: {ns}}}\nsubjects: [{{kind: ServiceAccount, name: app}}, {{kind: User, name: app-{i}}}]\nroleRef: {{kind: Role, name: app-secrets}}"
        );
        let _ = writeln!(
            y,
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: devs, namespace: {ns}}}\nsubjects: [{{kind: Group, name: team-{i}-devs}}]\nroleRef: {{kind: ClusterRole, name: edit}}"
        );
        let _ = writeln!(
            y,
            "---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: viewers, namespace: {ns}}}\nsubjects: [{{kind: Group, name: team-{i}-viewers}}, {{kind: Group, name: auditors}}]\nroleRef: {{kind: ClusterRole, name: view}}"
        );
    }
    y
}

fn bench_authorize(c: &mut Criterion) {
    let yaml = policy_yaml();
    let loaded = parse_policy([("bench.yaml", yaml.as_str())]).expect("the bench policy is valid");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let rbac = Rbac::new(&loaded.set);

    let node = Identity::new(
        "system:node:node1",
        "",
        vec!["system:nodes".into(), "system:authenticated".into()],
    );
    let app = Identity::new(
        "system:serviceaccount:team-123:app",
        "",
        vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:team-123".into(),
            "system:authenticated".into(),
        ],
    );
    let requests = [
        (
            "allow list pods",
            Attributes::resource(node.clone(), "list", "pods"),
            true,
        ),
        (
            "allow update pods/status",
            Attributes::resource(node.clone(), "update", "pods")
                .with_subresource("status")
                .with_name("mypods")
                .with_namespace("myns"),
            true,
        ),
        (
            "forbid educate dolphins",
            Attributes::resource(node, "educate", "dolphins"),
            false,
        ),
        (
            "allow get secrets/db by RoleBinding",
            Attributes::resource(app.clone(), "get", "secrets")
                .with_namespace("team-123")
                .with_name("db"),
            true,
        ),
        (
            "forbid list secrets",
            Attributes::resource(app, "list", "secrets").with_namespace("team-123"),
            false,
        ),
    ];
    let mut group = c.benchmark_group("authorize");
    for (name, attrs, allowed) in &requests {
        assert_eq!(rbac.authorize(attrs).allowed(), *allowed, "{name}");
        group.bench_function(*name, |b| {
            b.iter(|| std::hint::black_box(rbac.authorize(std::hint::black_box(attrs))))
        });
    }
    group.finish();

    let mut load = c.benchmark_group("load");
    load.sample_size(10);
    load.bench_function("parse, validate and compile the policy", |b| {
        b.iter(|| {
            let loaded = parse_policy([("bench.yaml", yaml.as_str())]).expect("valid");
            std::hint::black_box(Rbac::new(&loaded.set))
        })
    });
    load.finish();
}

criterion_group!(benches, bench_authorize);
criterion_main!(benches);
