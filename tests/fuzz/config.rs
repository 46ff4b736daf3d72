//! Configuration files an operator writes: the EncryptionConfiguration, token files (the
//! `--token-auth-file` CSV and `--tokens-file` lines), the `--unix-users` file, RBAC manifests
//! and audit policies.

use keyward::audit;
use keyward::authn::tokenfile::{TokenFileFormat, TokenTable};
use keyward::authn::unix::UnixUsers;
use keyward::authz::rbac::parse_policy;
use keyward::encryption::{config, ParseOptions};

use crate::harness::{fuzz, quotes_no_value, regressions, Corpus, YAML_WORDS};

const ENCRYPTION_SEEDS: &[&str] = &[
    "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm: {keys: [{name: k1, secret: MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=}]}\n      - identity: {}\n",
    "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets, configmaps, '*.apps']\n    providers:\n      - kms: {apiVersion: v2, name: kw, endpoint: 'unix:///run/kms.sock', timeout: 3s}\n      - aescbc: {keys: [{name: old, secret: MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=}]}\n      - secretbox: {keys: [{name: sb, secret: MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=}]}\n      - identity: {}\n",
    "{\"apiVersion\":\"apiserver.config.k8s.io/v1\",\"kind\":\"EncryptionConfiguration\",\"resources\":[{\"resources\":[\"*.*\"],\"providers\":[{\"kms\":{\"apiVersion\":\"v1\",\"name\":\"old\",\"endpoint\":\"unix:///k.sock\",\"cachesize\":100}},{\"identity\":{}}]}]}",
];

#[test]
fn encryption_configuration() {
    let corpus = Corpus::text(
        ENCRYPTION_SEEDS,
        &[
            YAML_WORDS,
            &[
                "apiVersion",
                "kind",
                "EncryptionConfiguration",
                "apiserver.config.k8s.io/v1",
                "resources",
                "providers",
                "identity",
                "aesgcm",
                "aescbc",
                "secretbox",
                "kms",
                "keys",
                "name",
                "secret",
                "endpoint",
                "unix:///k.sock",
                "timeout",
                "cachesize",
                "v1",
                "v2",
                "secrets",
                "*.",
                "*.*",
                "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=",
                "3s",
                "-1s",
            ],
        ]
        .concat(),
    );
    fuzz("EncryptionConfiguration", 600, &corpus, |input| {
        let text = String::from_utf8_lossy(input);
        for opts in [
            ParseOptions::default(),
            ParseOptions {
                kms_v1: true,
                reload: true,
            },
        ] {
            match config::parse(&text, opts) {
                Ok(cfg) => assert!(!cfg.resources.is_empty(), "a valid config with no rule"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with("encryption configuration"), "{msg}");
                    assert!(quotes_no_value(&msg), "a value in the error: {msg}");
                }
            }
        }
    });
}

#[test]
fn token_files() {
    let corpus = Corpus::text(
        &[
            "s3cret,alice,1000,\"dev,ops\"\n",
            "t0k3n,bob,uid-2\n# comment\n\ntok,carol,3,system:masters\n",
            "line-token-1\nline-token-2\n",
        ],
        &[
            "\"",
            ",",
            "\n",
            "\r\n",
            "#",
            " ",
            "\"\"",
            "system:masters",
            "alice",
            "1000",
            "tok",
        ],
    );
    fuzz("token files", 3000, &corpus, |input| {
        for format in [TokenFileFormat::Csv, TokenFileFormat::Lines] {
            match TokenTable::parse(input, format, "tokens.csv") {
                Ok(table) => {
                    let _ = (table.is_empty(), table.len());
                    let _ = table.lookup("s3cret");
                }
                Err(e) => {
                    assert!(!e.is_empty());
                    assert!(
                        !e.contains("s3cret") && !e.contains("t0k3n"),
                        "a token in: {e}"
                    );
                }
            }
        }
    });
}

#[test]
fn unix_users_files() {
    let corpus = Corpus::text(
        &[
            "users:\n  - uid: 1000\n    name: alice\n    groups: [dev]\ngroups:\n  - gid: 1001\n    groups: [ops]\n",
            "users: []\n",
            "",
        ],
        &[YAML_WORDS, &["users", "groups", "uid", "gid", "name", "alice", "dev", "system:masters", "4294967296"]].concat(),
    );
    fuzz("unix users", 1500, &corpus, |input| {
        if let Err(e) = UnixUsers::parse(input) {
            assert!(!e.is_empty());
        }
    });
}

const RBAC_SEEDS: &[&str] = &[
    "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {namespace: prod, name: reader}\nrules:\n  - apiGroups: [\"\"]\n    resources: [secrets]\n    verbs: [get, list]\n    resourceNames: [db]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {namespace: prod, name: app-reads}\nsubjects:\n  - {kind: ServiceAccount, name: app, namespace: prod}\n  - {kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}\nroleRef: {kind: Role, name: reader, apiGroup: rbac.authorization.k8s.io}\n",
    "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: agg\n  labels: {team: a}\naggregationRule:\n  clusterRoleSelectors:\n    - matchLabels: {team: a}\n    - matchExpressions: [{key: tier, operator: In, values: [x]}]\nrules:\n  - nonResourceURLs: [\"/healthz\", \"/logs*\"]\n    verbs: [get]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: admins}\nsubjects: [{kind: Group, name: ops, apiGroup: rbac.authorization.k8s.io}]\nroleRef: {kind: ClusterRole, name: agg, apiGroup: rbac.authorization.k8s.io}\n",
    "{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"ClusterRole\",\"metadata\":{\"name\":\"r\"},\"rules\":[{\"apiGroups\":[\"*\"],\"resources\":[\"*\"],\"verbs\":[\"*\"]}]}]}",
];

#[test]
fn rbac_policies() {
    let corpus = Corpus::text(
        RBAC_SEEDS,
        &[
            YAML_WORDS,
            &[
                "apiVersion",
                "rbac.authorization.k8s.io/v1",
                "kind",
                "Role",
                "ClusterRole",
                "RoleBinding",
                "ClusterRoleBinding",
                "List",
                "items",
                "metadata",
                "name",
                "namespace",
                "rules",
                "apiGroups",
                "resources",
                "verbs",
                "resourceNames",
                "nonResourceURLs",
                "subjects",
                "roleRef",
                "ServiceAccount",
                "User",
                "Group",
                "aggregationRule",
                "clusterRoleSelectors",
                "matchLabels",
                "matchExpressions",
                "operator",
                "In",
                "NotIn",
                "Exists",
                "DoesNotExist",
                "*",
                "get",
                "secrets",
                "/healthz",
            ],
        ]
        .concat(),
    );
    fuzz("RBAC policy", 600, &corpus, |input| {
        let text = String::from_utf8_lossy(input);
        match parse_policy([("policy.yaml", text.as_ref())]) {
            Ok(loaded) => {
                let rbac = keyward::authz::Rbac::new(&loaded.set);
                let _ = rbac.counts();
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    });
}

/// Found by the audit policy target: a non-resource URL ending in a multi-byte character
/// panicked (a string sliced inside a character).
const MULTIBYTE_URL: &[u8] = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Request\n    nonResourceURLs: [\"/logs\u{fffd}\"]\n".as_bytes();

const AUDIT_SEEDS: &[&str] = &[
    "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: None\n    users: [\"system:kube-proxy\"]\n    verbs: [watch]\n  - level: Metadata\n    resources: [{group: \"\", resources: [secrets, \"pods/log\"], resourceNames: [a]}]\n    namespaces: [prod]\n  - level: Request\n    nonResourceURLs: [\"/logs*\"]\n  - level: RequestResponse\n    userGroups: [ops]\n    omitStages: [ResponseStarted]\n",
    "{\"apiVersion\":\"audit.k8s.io/v1\",\"kind\":\"Policy\",\"rules\":[{\"level\":\"Metadata\"}]}",
];

#[test]
fn audit_policies() {
    let corpus = Corpus::text(
        AUDIT_SEEDS,
        &[
            YAML_WORDS,
            &[
                "apiVersion",
                "audit.k8s.io/v1",
                "kind",
                "Policy",
                "rules",
                "level",
                "None",
                "Metadata",
                "Request",
                "RequestResponse",
                "omitStages",
                "RequestReceived",
                "ResponseStarted",
                "ResponseComplete",
                "Panic",
                "users",
                "userGroups",
                "verbs",
                "resources",
                "group",
                "resourceNames",
                "namespaces",
                "nonResourceURLs",
                "/logs*",
                "pods/*",
                "*/log",
                "omitManagedFields",
            ],
        ]
        .concat(),
    );
    fuzz("audit policy", 800, &corpus, |input| {
        let text = String::from_utf8_lossy(input);
        match audit::Policy::parse(&text) {
            Ok(policy) => {
                let _ = policy.rule_count();
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    });
}

#[test]
fn regression_inputs() {
    // Inputs that once failed a target of this module.
    regressions(
        "config regressions",
        &[
            b"",
            b"\xff",
            b"---",
            b"[",
            b"kind: List",
            LEAKED_KEY,
            MULTIBYTE_URL,
        ],
        |input| {
            let text = String::from_utf8_lossy(input);
            let _ = config::parse(&text, ParseOptions::default());
            let _ = audit::Policy::parse(&text);
            let _ = parse_policy([("p", text.as_ref())]);
            let _ = UnixUsers::parse(input);
            let _ = TokenTable::parse(input, TokenFileFormat::Csv, "t");
            if let Err(e) = config::parse(&text, ParseOptions::default()) {
                let msg = e.to_string();
                assert!(quotes_no_value(&msg), "a value in the error: {msg}");
            }
        },
    );
}

/// Found by the EncryptionConfiguration target: a mangled provider line made its key a string
/// value that the decoder's error quoted.
const LEAKED_KEY: &[u8] = b"apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm-  MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=}]}\n      - identity: {}\n";
