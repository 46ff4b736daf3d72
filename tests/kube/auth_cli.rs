//! `keyward auth can-i` and `keyward auth whoami` against kubectl's own output for the same
//! server and policy: the same lines on stdout and stderr and the same exit codes, whether the
//! question goes over the Kubernetes API (kubectl) or keyward's gRPC API (the CLI).

use crate::kubectl::{auth_world_with, World};

/// Rules that exercise kubectl's table: several verbs on non-resource URLs (one row per URL and
/// verb), a subresource in a group (`userextras.authentication.k8s.io/scopes`), names, and a
/// binding to a role that does not exist (an evaluation error that leaves the list complete).
const POLICY: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: app, namespace: prod}
rules:
  - {apiGroups: [\"\"], resources: [secrets], resourceNames: [db, api], verbs: [get]}
  - {apiGroups: [\"\"], resources: [secrets], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app, namespace: prod}
subjects: [{kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: Role, name: app, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: gone, namespace: prod}
subjects: [{kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: Role, name: no-such-role, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: probe}
rules:
  - {nonResourceURLs: [/z, /a/*], verbs: [get, post]}
  - {apiGroups: [authentication.k8s.io], resources: [userextras/scopes], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: probe}
subjects: [{kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: ClusterRole, name: probe, apiGroup: rbac.authorization.k8s.io}
";

/// `args` run by kubectl 1.33 as admin impersonating bob, and by `keyward` the same way over
/// the Unix socket: (exit code, stdout, stderr) of each.
fn both(w: &World, args: &[&str]) -> ((i32, String, String), (i32, String, String)) {
    let as_bob = [&["--as", "bob"][..], args].concat();
    let o = w.kubectl(33).run(&as_bob);
    let kubectl = (o.code, o.out, o.err);
    let keyward = w.dev.kw(&as_bob);
    (kubectl, keyward)
}

#[test]
fn keyward_auth_prints_what_kubectl_prints() {
    let w = auth_world_with(&[("policy.yaml", POLICY)], &[]);
    for args in [
        &["auth", "can-i", "--list", "-n", "prod"][..],
        &["auth", "can-i", "--list", "-n", "prod", "--no-headers"],
        // Columns of short cells (`[]`): kubectl's tabwriter makes them 6 wide.
        &["auth", "can-i", "--list", "-n", "nowhere", "--no-headers"],
        &["auth", "can-i", "get", "Secrets/db", "-n", "prod"],
        &["auth", "can-i", "get", "secrets.v1./api", "-n", "prod"],
        &["auth", "can-i", "get", "secrets/other", "-n", "prod"],
        &["auth", "can-i", "post", "/a/b"],
        &["auth", "can-i", "--list", "-A"],
        &["auth", "can-i", "--list", "get", "secrets"],
        &["auth", "can-i", "get"],
        &["auth", "can-i", "get", "/z", "--subresource", "x"],
        // kubectl's warnings: resources its mapper does not find in discovery (sent as typed),
        // unknown verbs (but with -A), cluster-scoped resources with a namespace.
        &["auth", "can-i", "get", "foo", "-n", "prod"],
        &["auth", "can-i", "get", "FOO.Bar"],
        &["auth", "can-i", "get", "sa"],
        &["auth", "can-i", "get", "secrets.apps", "-n", "prod"],
        &["auth", "can-i", "get", "pods.v1."],
        &["auth", "can-i", "frob", "secrets", "-n", "prod"],
        &["auth", "can-i", "frob", "secrets", "-A"],
        &["auth", "can-i", "frob", "/z"],
        &["auth", "can-i", "create", "selfsubjectaccessreviews"],
        &["auth", "can-i", "impersonate", "users/alice"],
        &["auth", "can-i", "list", "ev", "-n", "prod"],
        &["auth", "can-i", "get", "foo", "--no-headers"],
        &["auth", "can-i", "get", "Secret/db", "-n", "prod", "-q"],
        // pflag's booleans: `--flag=false`.
        &[
            "auth",
            "can-i",
            "get",
            "secrets/db",
            "-n",
            "prod",
            "-A=false",
            "--quiet=false",
        ],
        &["auth", "can-i", "--list=false", "get", "secrets", "-A=true"],
        &["auth", "can-i", "--list", "-n", "prod", "--no-headers=true"],
        &["auth", "whoami", "-o", "json"],
        &["auth", "whoami", "-o", "json", "--as-uid", "u-1"],
        &["auth", "whoami", "-o", "yaml"],
    ] {
        let (kubectl, keyward) = both(&w, args);
        // The two reviews were created at their own times.
        let created = |out: String| {
            out.lines()
                .map(|l| match l.find("creationTimestamp") {
                    Some(at) => format!("{}creationTimestamp: (a time)", &l[..at]),
                    None => l.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let keyward = (
            keyward.0,
            created(keyward.1),
            keyward
                .2
                .replace("keyward auth can-i -h", "kubectl auth can-i -h"),
        );
        let kubectl = (kubectl.0, created(kubectl.1), kubectl.2);
        assert_eq!(keyward, kubectl, "{args:?}");
    }
    // A caller who may not create a SelfSubjectReview: kubectl's words, not the server's.
    let args = ["--as", "system:anonymous", "auth", "whoami"];
    let o = w.kubectl(33).run(&args);
    assert_eq!(
        (o.code, o.err.as_str()),
        (1, "error: the selfsubjectreviews API is not enabled in the cluster or you do not have permission to call it\n")
    );
    assert_eq!(w.dev.kw(&args), (o.code, o.out, o.err));
}

/// Arguments kubectl refuses before it sends anything: both exit 1 (clap's usage status would be
/// 2), and groups or a uid without `--as` get kubectl's message.
#[test]
fn keyward_auth_refuses_arguments_as_kubectl_does() {
    let w = auth_world_with(&[("policy.yaml", POLICY)], &[]);
    for (args, needle) in [
        (
            &["auth", "can-i", "get", "secrets", "--as-group", "g"][..],
            "without impersonating a user",
        ),
        (
            &["auth", "whoami", "--as-uid", "u-1"],
            "without impersonating a user",
        ),
        (&["auth", "can-i", "get", "secrets", "--bogus"], "--bogus"),
        (&["auth", "can-i", "get", "secrets", "-A=maybe"], "maybe"),
        (&["auth", "whoami", "-o", "table"], "table"),
    ] {
        let kubectl = w.kubectl(33).run(args);
        let keyward = w.dev.kw(args);
        assert_eq!((kubectl.code, keyward.0), (1, 1), "{args:?}: {keyward:?}");
        for (who, err) in [("kubectl", &kubectl.err), ("keyward", &keyward.2)] {
            assert!(err.contains(needle), "{who} {args:?}: {err}");
        }
    }
}
