//! kubectl 1.27–1.33 reading, watching and deleting Secrets, and `auth can-i`/`whoami`, against
//! `keyward dev`: Secrets are written with keyward's own CLI (over the Unix socket), so these
//! tests check the read side of the Kubernetes API, authentication and RBAC on every version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::tools::{kubectl_minor, KUBECTL_MINORS};
use crate::support::DevServer;

/// A kubectl run: exit code, stdout, stderr.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub out: String,
    pub err: String,
}

/// kubectl 1.`minor` with `kubeconfig` and a cache directory of its own under `cache`.
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
    pub minor: u32,
}

impl Kubectl {
    pub fn new(minor: u32, kubeconfig: &Path, cache: &Path) -> Kubectl {
        Kubectl {
            bin: kubectl_minor(minor),
            kubeconfig: kubeconfig.to_owned(),
            cache: cache.join(format!("cache-{minor}")),
            minor,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache)
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        let o = self.command(args).output().expect("run kubectl");
        Out {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Runs and asserts success; stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.code, 0,
            "kubectl 1.{} {args:?}\nstdout: {}\nstderr: {}",
            self.minor, o.out, o.err
        );
        o.out
    }
}

/// `keyward dev` with its admin kubeconfig, and a kubectl of every version.
pub struct World {
    pub dev: DevServer,
    pub admin: PathBuf,
}

impl World {
    pub fn start(extra: &[&str]) -> World {
        Self::start_in(tempfile::tempdir().unwrap(), extra)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> World {
        let dev = DevServer::start_in(dir, extra);
        let admin = dev.kubeconfig();
        World { dev, admin }
    }

    /// The audit log of an [`audited_world`]: its text, and each line as JSON.
    pub fn audit_log(&self) -> (String, Vec<serde_json::Value>) {
        let text = std::fs::read_to_string(self.dev.path("audit.log")).unwrap();
        let events = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (text, events)
    }

    pub fn kubectl(&self, minor: u32) -> Kubectl {
        Kubectl::new(minor, &self.admin, self.dev.dir.path())
    }

    /// kubectl with another kubeconfig (its own cache).
    pub fn kubectl_as(&self, minor: u32, kubeconfig: &Path, who: &str) -> Kubectl {
        Kubectl::new(minor, kubeconfig, &self.dev.path(who))
    }

    /// Applies a manifest with keyward's own CLI.
    pub fn seed(&self, manifest: &str) {
        self.dev.write("seed.yaml", manifest);
        self.dev.ok(&["apply", "-f", "seed.yaml"]);
    }

    /// A kubeconfig for `user` in `groups` from `keyward kubeconfig`.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> PathBuf {
        let data = self.dev.path("kw");
        let mut args = vec![
            "kubeconfig",
            "--user",
            user,
            "--data",
            data.to_str().unwrap(),
        ];
        for g in groups {
            args.extend(["--group", g]);
        }
        let (ok, out, err) = crate::support::run(&args);
        assert!(ok, "{err}");
        let p = self.dev.path(&format!("{user}.kubeconfig"));
        std::fs::write(&p, out).unwrap();
        p
    }

    /// A kubeconfig trusting the dev CA that authenticates with `token` (no token: none).
    pub fn token_kubeconfig(&self, name: &str, token: Option<&str>) -> PathBuf {
        let user = token
            .map(|t| format!("    token: {t}\n"))
            .unwrap_or_default();
        self.user_kubeconfig(name, &user)
    }

    /// A kubeconfig trusting the dev CA whose user `name` has the fields `user` (lines
    /// indented by four spaces; empty: no credentials).
    pub fn user_kubeconfig(&self, name: &str, user: &str) -> PathBuf {
        let admin = std::fs::read_to_string(&self.admin).unwrap();
        let field = |key: &str| {
            admin
                .lines()
                .find_map(|l| l.trim().strip_prefix(key).map(str::trim))
                .unwrap()
                .to_owned()
        };
        let user = match user {
            "" => "  user: {}\n".to_owned(),
            fields => format!("  user:\n{fields}"),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kw\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {name}\n{user}contexts:\n- name: kw\n  context:\n    cluster: kw\n    user: {name}\n    namespace: default\ncurrent-context: kw\n",
            field("server:"),
            field("certificate-authority-data:")
        );
        let p = self.dev.path(&format!("{name}.kubeconfig"));
        std::fs::write(&p, text).unwrap();
        p
    }
}

const SEED: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s1\n  labels: {tier: web}\nstringData:\n  user: admin\n  pw: hunter2\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: plain\nstringData: {k: v}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: t1\n  namespace: prod\ntype: kubernetes.io/tls\ndata:\n  tls.crt: Y2VydA==\n  tls.key: a2V5\n";

/// Every read kubectl does of Secrets, on every version, against the same objects.
#[test]
fn kubectl_reads_secrets_on_every_version() {
    let w = World::start(&[]);
    w.seed(SEED);
    for minor in KUBECTL_MINORS {
        let k = w.kubectl(minor);
        let table = k.ok(&["get", "secrets"]);
        let lines: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            ["NAME", "TYPE", "DATA", "AGE"],
            "1.{minor}: {table}"
        );
        assert_eq!(
            lines[1][..3],
            ["plain", "Opaque", "1"],
            "1.{minor}: {table}"
        );
        assert_eq!(lines[2][..3], ["s1", "Opaque", "2"], "1.{minor}: {table}");
        let one = k.ok(&["get", "secret", "s1"]);
        assert_eq!(one.lines().count(), 2, "1.{minor}: {one}");
        let yaml = k.ok(&["get", "secret", "s1", "-o", "yaml"]);
        for want in [
            "kind: Secret",
            "  name: s1",
            "  pw: aHVudGVyMg==",
            "    tier: web",
            "type: Opaque",
        ] {
            assert!(yaml.contains(want), "1.{minor}: {want:?} in {yaml}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&k.ok(&["get", "secret", "s1", "-o", "json"])).unwrap();
        assert_eq!(json["data"]["user"], "YWRtaW4=");
        assert!(json["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty()));
        assert_eq!(
            k.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.user}"]),
            "YWRtaW4="
        );
        assert_eq!(
            k.ok(&["get", "secrets", "-o", "name"]),
            "secret/plain\nsecret/s1\n"
        );
        assert_eq!(
            k.ok(&["get", "secrets", "-l", "tier=web", "-o", "name"]),
            "secret/s1\n"
        );
        assert_eq!(
            k.ok(&[
                "get",
                "secrets",
                "--field-selector",
                "metadata.name=plain",
                "-o",
                "name"
            ]),
            "secret/plain\n"
        );
        let all = k.ok(&[
            "get",
            "secrets",
            "-A",
            "--field-selector",
            "type=kubernetes.io/tls",
        ]);
        let rows: Vec<Vec<&str>> = all
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            ["NAMESPACE", "NAME", "TYPE", "DATA", "AGE"],
            "{all}"
        );
        assert_eq!(
            rows[1][..4],
            ["prod", "t1", "kubernetes.io/tls", "2"],
            "{all}"
        );
        assert_eq!(rows.len(), 2, "{all}");
        let labels = k.ok(&["get", "secret", "s1", "--show-labels"]);
        assert!(labels.contains("tier=web"), "{labels}");
        let described = k.ok(&["describe", "secret", "s1"]);
        for want in [
            "Name:         s1",
            "Namespace:    default",
            "Type:  Opaque",
            "pw:    7 bytes",
            "user:  5 bytes",
        ] {
            assert!(
                described.contains(want),
                "1.{minor}: {want:?} in {described}"
            );
        }
        let nf = k.run(&["get", "secret", "nope"]);
        assert_eq!(nf.code, 1);
        assert_eq!(
            nf.err,
            "Error from server (NotFound): secrets \"nope\" not found\n"
        );
        // Outside `default`, kubectl reads the namespace after a NotFound and prints the
        // namespace's error if that read is NotFound too: any valid name is a namespace here.
        for (verb, ns, want) in [
            ("get", "team", "secrets \"nope\" not found"),
            ("describe", "team", "secrets \"nope\" not found"),
            ("get", "Bad_NS", "namespaces \"Bad_NS\" not found"),
        ] {
            let nf = k.run(&[verb, "secret", "nope", "-n", ns]);
            assert_eq!(
                (nf.code, nf.err.as_str()),
                (
                    1,
                    format!("Error from server (NotFound): {want}\n").as_str()
                ),
                "1.{minor}: {verb} -n {ns}"
            );
        }
        // A create in a namespace that cannot exist is NotFound for the namespace, as
        // kube-apiserver's NamespaceLifecycle admission answers before any validation (in
        // kubectl's words for `create secret`).
        let nowhere = k.run(&[
            "create",
            "secret",
            "generic",
            "x",
            "-n",
            "Bad_NS",
            "--from-literal=a=b",
        ]);
        assert_eq!(
            (nowhere.code, nowhere.err.as_str()),
            (
                1,
                "error: failed to create secret namespaces \"Bad_NS\" not found\n"
            ),
            "1.{minor}"
        );
        let bad = k.run(&["get", "secrets", "--field-selector", "spec.x=1"]);
        assert_eq!(bad.code, 1);
        assert!(
            bad.err.contains("field label not supported: spec.x"),
            "{}",
            bad.err
        );
        let empty = k.run(&["get", "secrets", "-n", "empty"]);
        assert_eq!(
            (empty.code, empty.err.as_str()),
            (0, "No resources found in empty namespace.\n")
        );
    }
}

/// `kubectl get -w` sees changes made through keyward's own API; `-w` on one object starts with
/// it (the synthetic ADDED of `resourceVersion=0`); delete, and a server dry-run delete.
#[test]
fn kubectl_watches_and_deletes_on_every_version() {
    let w = World::start(&[]);
    w.seed(SEED);
    for minor in KUBECTL_MINORS {
        let k = w.kubectl(minor);
        let name = format!("w{minor}");
        // Both watches have printed their start (the list's rows, s1's first state) before the
        // writes, and are stopped once the writes showed up (or after 30 s).
        let list = Watching::start(&k, &["get", "secrets", "-w"]);
        let one = Watching::start(
            &k,
            &[
                "get",
                "secret",
                "s1",
                "-w",
                "-o",
                "jsonpath={.metadata.name}:{.metadata.labels.round}{\"\\n\"}",
            ],
        );
        list.wait_for(|out| out.lines().any(|l| l.starts_with("s1 ")));
        one.wait_for(|out| out.lines().any(|l| l.starts_with("s1:")));
        w.seed(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData: {{a: b}}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s1\n  labels: {{tier: web, round: r{minor}}}\nstringData:\n  user: admin\n  pw: hunter2\n"
        ));
        let listed = list.wait_for(|out| out.lines().any(|l| l.starts_with(&format!("{name} "))));
        let rows: Vec<Vec<&str>> = listed
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            ["NAME", "TYPE", "DATA", "AGE"],
            "1.{minor}: {listed}"
        );
        let watched = one.wait_for(|out| out.lines().any(|l| l == format!("s1:r{minor}")));
        assert!(
            watched.lines().any(|l| l == format!("s1:r{minor}")),
            "1.{minor}: the change to s1 is watched: {watched:?}"
        );
        drop((list, one));
        assert_eq!(
            k.ok(&["delete", "secret", &name, "--dry-run=server"]),
            format!("secret \"{name}\" deleted (server dry run)\n")
        );
        k.ok(&["get", "secret", &name]);
        assert_eq!(
            k.ok(&["delete", "secret", &name]),
            format!("secret \"{name}\" deleted\n")
        );
        let gone = k.run(&["get", "secret", &name]);
        assert_eq!(
            gone.err,
            format!("Error from server (NotFound): secrets \"{name}\" not found\n")
        );
    }
}

/// A `kubectl ... -w` running, its output collected as it comes.
struct Watching {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Watching {
    fn start(k: &Kubectl, args: &[&str]) -> Watching {
        let mut child = k.command(args).spawn().unwrap();
        let out = Self::collect(child.stdout.take().unwrap());
        let err = Self::collect(child.stderr.take().unwrap());
        Watching { child, out, err }
    }

    /// What `from` gives, collected as it comes by a thread of its own.
    fn collect(
        mut from: impl std::io::Read + Send + 'static,
    ) -> std::sync::Arc<std::sync::Mutex<String>> {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        text
    }

    /// What kubectl printed to stderr once `done` holds for it, or after 30 s.
    fn wait_for_stderr(&self, done: impl Fn(&str) -> bool) -> String {
        Self::wait_on(&self.err, done)
    }

    /// The output once `done` holds for it, or after 30 s (the caller's assertion then says
    /// what is missing).
    fn wait_for(&self, done: impl Fn(&str) -> bool) -> String {
        Self::wait_on(&self.out, done)
    }

    /// `text` once `done` holds for it, or after 30 s.
    fn wait_on(text: &std::sync::Mutex<String>, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let now = text.lock().unwrap().clone();
            if done(&now) || std::time::Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The RBAC policy of the authentication tests: group `devs` and user `bob` may read Secrets
/// in `default`; nobody else but `system:masters` may do anything.
const POLICY: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: reader, namespace: default}\nrules:\n  - apiGroups: [\"\"]\n    resources: [secrets]\n    verbs: [get, list, watch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: readers, namespace: default}\nsubjects:\n  - {kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}\n  - {kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}\n  - {kind: ServiceAccount, name: app, namespace: default}\nroleRef: {kind: Role, name: reader, apiGroup: rbac.authorization.k8s.io}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: deleter, namespace: default}\nrules:\n  - apiGroups: [\"\"]\n    resources: [secrets]\n    verbs: [delete, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: deleters, namespace: default}\nsubjects:\n  - {kind: User, name: dave, apiGroup: rbac.authorization.k8s.io}\nroleRef: {kind: Role, name: deleter, apiGroup: rbac.authorization.k8s.io}\n";

pub(crate) const BOB_TOKEN: &str = "bob-token-0123456789abcdef";
pub(crate) const DAVE_TOKEN: &str = "dave-token-0123456789abcdef";

fn auth_world() -> World {
    auth_world_with(&[], &[])
}

/// [`auth_world`] with more `files` (name, content) in its directory and more flags.
pub(crate) fn auth_world_with(files: &[(&str, &str)], extra: &[&str]) -> World {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{BOB_TOKEN},bob,1001\n{DAVE_TOKEN},dave,1004\n"),
    )
    .unwrap();
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let flags = [
        &[
            "--authorization-policy",
            "policy.yaml",
            "--token-auth-file",
            "tokens.csv",
        ],
        extra,
    ]
    .concat();
    let w = World::start_in(dir, &flags);
    w.seed(SEED);
    w
}

/// [`auth_world`] with an audit log (`audit.log`) of every request at `level`.
pub(crate) fn audited_world(level: &str) -> World {
    let policy = format!("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: {level}\n");
    auth_world_with(
        &[("audit-policy.yaml", &policy)],
        &[
            "--audit-log-path",
            "audit.log",
            "--audit-policy-file",
            "audit-policy.yaml",
        ],
    )
}

/// kube-apiserver's Forbidden for `user` doing `verb` on Secrets in `default` (`name`: one).
fn forbidden(user: &str, verb: &str, name: Option<&str>) -> String {
    let what = match name {
        Some(n) => format!("secrets \"{n}\""),
        None => "secrets".to_owned(),
    };
    format!("Error from server (Forbidden): {what} is forbidden: User \"{user}\" cannot {verb} resource \"secrets\" in API group \"\" in the namespace \"default\"\n")
}

/// Client certificates (admin in `system:masters`, a user in a group), a bearer token from the
/// token file, a service account token and no credentials at all, each with RBAC applied as over
/// gRPC; `auth can-i` (and `--list`) and `auth whoami`. On 1.32 and 1.33 the reviews are sent as
/// protobuf: see `kubectl_writes::kubectl_protobuf_reviews`.
#[test]
fn kubectl_authenticates_and_is_authorized_as_over_grpc() {
    let w = auth_world();
    let alice = w.kubeconfig_for("alice", &["devs"]);
    let carol = w.kubeconfig_for("carol", &[]);
    let bob = w.token_kubeconfig("bob", Some(BOB_TOKEN));
    let (code, sa_token, err) = w.dev.kw(&["create", "token", "app", "-n", "default"]);
    assert_eq!(code, 0, "{err}");
    let sa = w.token_kubeconfig("app", Some(sa_token.trim()));
    let nobody = w.token_kubeconfig("nobody", None);
    let dave = w.token_kubeconfig("dave", Some(DAVE_TOKEN));
    let wrong = w.token_kubeconfig("wrong", Some("not-a-token"));
    for minor in [27, 28, 29, 30, 31] {
        let admin = w.kubectl(minor);
        assert_eq!(admin.ok(&["auth", "can-i", "delete", "secrets"]), "yes\n");
        let listed = admin.ok(&["auth", "can-i", "--list"]);
        assert!(listed.contains("*.*"), "{listed}");
        let me = admin.ok(&["auth", "whoami"]);
        assert!(me.contains("keyward-dev-admin"), "{me}");
        assert!(me.contains("[system:masters system:authenticated]"), "{me}");

        for (who, cfg, user) in [
            ("alice", &alice, "alice"),
            ("bob", &bob, "bob"),
            ("app", &sa, "system:serviceaccount:default:app"),
        ] {
            let k = w.kubectl_as(minor, cfg, who);
            assert_eq!(
                k.ok(&["get", "secrets", "-o", "name"]),
                "secret/plain\nsecret/s1\n",
                "{who}"
            );
            assert_eq!(k.ok(&["auth", "can-i", "get", "secrets"]), "yes\n", "{who}");
            let no = k.run(&["auth", "can-i", "delete", "secrets"]);
            assert_eq!((no.code, no.out.as_str()), (1, "no\n"), "{who}");
            let d = k.run(&["delete", "secret", "s1"]);
            assert_eq!(d.err, forbidden(user, "delete", Some("s1")), "{who}");
            let p = k.run(&["get", "secrets", "-n", "prod"]);
            assert!(p.err.contains(&format!("User \"{user}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"prod\"")), "{who}: {}", p.err);
            let me = k.ok(&["auth", "whoami"]);
            assert!(me.contains(user), "{who}: {me}");
        }
        // Impersonation needs `impersonate`; the admin has it.
        let as_alice = admin.run(&[
            "get",
            "secret",
            "t1",
            "-n",
            "prod",
            "--as",
            "alice",
            "--as-group",
            "devs",
        ]);
        assert!(
            as_alice.err.contains("User \"alice\" cannot get resource"),
            "{}",
            as_alice.err
        );

        // A server dry-run delete is authorized as a delete only (no `get`), as in Kubernetes.
        let d = w.kubectl_as(minor, &dave, "dave");
        assert_eq!(
            d.ok(&["delete", "secret", "s1", "--dry-run=server"]),
            "secret \"s1\" deleted (server dry run)\n"
        );
        let g = d.run(&["get", "secret", "s1"]);
        assert_eq!(g.err, forbidden("dave", "get", Some("s1")));

        let c = w.kubectl_as(minor, &carol, "carol");
        let list = c.run(&["get", "secrets"]);
        assert_eq!(
            (list.code, list.err.clone()),
            (1, forbidden("carol", "list", None))
        );
        let get = c.run(&["get", "secret", "s1"]);
        assert_eq!(get.err, forbidden("carol", "get", Some("s1")));
        // With no binding, what Kubernetes' bootstrap policy grants every authenticated user
        // (and keyward's endpoints follow): the reviews, discovery, health and version.
        let listed = c.ok(&["auth", "can-i", "--list"]);
        for rule in [
            "selfsubjectaccessreviews.authorization.k8s.io   []                  []               [create]",
            "selfsubjectreviews.authentication.k8s.io        []                  []               [create]",
            "[/api/*]            []               [get]",
            "[/version]          []               [get]",
        ] {
            assert!(listed.contains(rule), "1.{minor}: {rule:?} in\n{listed}");
        }
        assert!(!listed.contains("secrets"), "1.{minor}: {listed}");
        assert_eq!(c.ok(&["auth", "can-i", "get", "/version"]), "yes\n");
        assert_eq!(
            c.ok(&[
                "auth",
                "can-i",
                "create",
                "selfsubjectreviews.authentication.k8s.io"
            ]),
            "yes\n"
        );
        let k = w.kubectl_as(minor, &wrong, "wrong");
        let o = k.run(&["get", "secrets"]);
        assert_eq!(o.code, 1);
        assert!(
            o.err.ends_with("error: You must be logged in to the server (the server has asked for the client to provide credentials)\n"),
            "1.{minor}: {}",
            o.err
        );
        // Without credentials kubectl asks for a user name on the terminal (none here): refused.
        let k = w.kubectl_as(minor, &nobody, "nobody");
        assert_eq!(k.run(&["get", "secrets"]).code, 1);
    }
}

/// `kubectl create token` on every version (1.32 and 1.33 send the TokenRequest as protobuf):
/// the token authenticates as the service account and is authorized by its bindings; a
/// lifetime under ten minutes is kube-apiserver's 422, another audience's token is refused, a
/// user without `create serviceaccounts/token` gets 403, and no token reaches the audit log.
#[test]
fn kubectl_creates_service_account_tokens_on_every_version() {
    let w = audited_world("RequestResponse");
    let bob = w.token_kubeconfig("bob", Some(BOB_TOKEN));
    let mut issued = Vec::new();
    let create =
        |more: &[&'static str]| [&["create", "token", "app", "-n", "default"], more].concat();
    for minor in [27, 28, 29, 30, 31, 32, 33] {
        let admin = w.kubectl(minor);
        let token = admin.ok(&create(&["--duration", "20m"]));
        let token = token.trim().to_owned();
        let sa = w.token_kubeconfig(&format!("app-{minor}"), Some(&token));
        let k = w.kubectl_as(minor, &sa, &format!("app-{minor}"));
        assert_eq!(
            k.ok(&["get", "secrets", "-o", "name"]),
            "secret/plain\nsecret/s1\n"
        );
        let me = k.ok(&["auth", "whoami"]);
        assert!(
            me.contains("system:serviceaccount:default:app"),
            "1.{minor}: {me}"
        );
        let short = admin.run(&create(&["--duration", "5m"]));
        assert_eq!(
            (short.code, short.err.as_str()),
            (1, "error: failed to create token: TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes\n"),
            "1.{minor}"
        );
        let other = admin.ok(&create(&["--audience", "elsewhere"]));
        let o = w.token_kubeconfig(&format!("other-{minor}"), Some(other.trim()));
        let refused = w
            .kubectl_as(minor, &o, &format!("other-{minor}"))
            .run(&["get", "secrets"]);
        assert!(
            refused.err.contains("You must be logged in to the server"),
            "1.{minor}: {}",
            refused.err
        );
        let b = w.kubectl_as(minor, &bob, "bob").run(&create(&[]));
        assert_eq!(
            b.err,
            "error: failed to create token: serviceaccounts \"app\" is forbidden: User \"bob\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\"\n",
            "1.{minor}"
        );
        issued.extend([token, other.trim().to_owned()]);
    }
    let audit = std::fs::read_to_string(w.dev.path("audit.log")).unwrap();
    assert!(audit.contains("/serviceaccounts/app/token"), "{audit}");
    for t in &issued {
        assert!(!audit.contains(t.as_str()), "a token in the audit log");
    }
    // At level RequestResponse a refusal's Status is the response object, as kube-apiserver
    // logs what it writes.
    let refused = audit
        .lines()
        .find(|l| {
            l.contains(r#""username":"bob""#)
                && l.contains(r#""stage":"ResponseComplete""#)
                && l.contains("/serviceaccounts/app/token")
        })
        .expect("bob's refused token request is audited");
    let e: serde_json::Value = serde_json::from_str(refused).unwrap();
    assert_eq!(e["responseObject"]["kind"], "Status", "{refused}");
    assert_eq!(e["responseObject"]["code"], 403);
    assert_eq!(
        e["responseObject"]["details"],
        e["responseStatus"]["details"]
    );
    assert!(refused.contains(r#""responseObject":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#), "{refused}");
}

/// One audit event per stage per request, as kube-apiserver writes them: a patch and an update
/// (which read the stored object before they write), a patch refused after that read, a
/// review, and an impersonation the caller may not make, recorded as the request it made
/// (kube-apiserver audits before it impersonates), with its 403 and no authorization decision;
/// a failure's `responseStatus` carries the answer's details.
#[test]
fn kubectl_requests_are_audited_once_per_stage() {
    let w = audited_world("Metadata");
    let admin = w.kubectl(33);
    admin.ok(&["label", "secret", "s1", "x=1"]);
    let live = admin.ok(&["get", "secret", "plain", "-o", "json"]);
    std::fs::write(w.dev.path("plain.json"), live).unwrap();
    admin.ok(&["replace", "-f", w.dev.path("plain.json").to_str().unwrap()]);
    assert_eq!(admin.run(&["get", "secret", "nope"]).code, 1);
    // A patch the stored object does not survive (refused after the read).
    let bad = admin.run(&["patch", "secret", "plain", "-p", r#"{"data":{"k":"%%%"}}"#]);
    assert_eq!(bad.code, 1, "{}", bad.err);
    let bob = w.token_kubeconfig("bob", Some(BOB_TOKEN));
    let k = w.kubectl_as(33, &bob, "bob");
    assert!(k.ok(&["auth", "whoami"]).contains("bob"));
    // `--raw`: no discovery first (which the impersonation would refuse too).
    let refused = k.run(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/secrets/s1",
        "--as",
        "dave",
    ]);
    assert_eq!(
        refused.err,
        "Error from server (Forbidden): users \"dave\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope\n"
    );
    let (audit, mut events) = w.audit_log();
    events.retain(|e| e["kind"] == "Event");
    let mut seen = std::collections::HashSet::new();
    for e in &events {
        let key = (e["auditID"].to_string(), e["stage"].to_string());
        assert!(
            seen.insert(key),
            "two events of one stage of one request: {e}"
        );
    }
    let verbs = |verb: &str, uri: &str| {
        events
            .iter()
            .filter(|e| e["verb"] == verb && e["requestURI"].as_str().unwrap().contains(uri))
            .count()
    };
    // Each request has its RequestReceived and its ResponseComplete.
    assert_eq!(verbs("patch", "/secrets/s1"), 2, "{audit}");
    assert_eq!(verbs("update", "/secrets/plain"), 2, "{audit}");
    assert_eq!(verbs("patch", "/secrets/plain"), 2, "{audit}");
    assert_eq!(verbs("create", "/selfsubjectreviews"), 2, "{audit}");
    let impersonation: Vec<_> = events
        .iter()
        .filter(|e| e["user"]["username"] == "bob" && e["objectRef"]["name"] == "s1")
        .collect();
    assert_eq!(impersonation.len(), 2, "{audit}");
    for e in &impersonation {
        assert_eq!(e["verb"], "get");
        assert_eq!(e["objectRef"]["resource"], "secrets");
        assert!(e.get("impersonatedUser").is_none(), "{e}");
        assert!(
            e["annotations"]
                .get("authorization.k8s.io/decision")
                .is_none(),
            "{e}"
        );
    }
    let status = &impersonation[1]["responseStatus"];
    assert_eq!(status["code"], 403);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("cannot impersonate"),
        "{status}"
    );
    // A failure's details, as kube-apiserver copies them from the Status it answered, in the
    // order of metav1.Status's fields.
    let missing = events
        .iter()
        .find(|e| {
            e["stage"] == "ResponseComplete"
                && e["requestURI"] == "/api/v1/namespaces/default/secrets/nope"
        })
        .unwrap();
    assert_eq!(
        missing["responseStatus"].to_string(),
        r#"{"metadata":{},"status":"Failure","message":"secrets \"nope\" not found","reason":"NotFound","details":{"name":"nope","kind":"secrets"},"code":404}"#
    );
    let line = audit
        .lines()
        .find(|l| {
            l.contains(r#""requestURI":"/api/v1/namespaces/default/secrets/nope""#)
                && l.contains("ResponseComplete")
        })
        .unwrap();
    assert!(
        line.contains(
            r#""reason":"NotFound","details":{"name":"nope","kind":"secrets"},"code":404}"#
        ),
        "{line}"
    );
    let review = events
        .iter()
        .find(|e| {
            e["stage"] == "ResponseComplete" && e["objectRef"]["resource"] == "selfsubjectreviews"
        })
        .unwrap();
    assert_eq!(
        review["annotations"]["authorization.k8s.io/reason"],
        "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \"system:basic-user\" to Group \"system:authenticated\""
    );
    // Header values past ASCII are names like any other (kubectl sends them as UTF-8): an
    // impersonation is checked, never dropped.
    let raw_as = |k: &Kubectl, who: &str| {
        k.run(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/secrets/s1",
            "--as",
            who,
        ])
    };
    assert_eq!(
        raw_as(&k, "b\u{f8}b").err,
        "Error from server (Forbidden): users \"b\u{f8}b\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope\n"
    );
    let refused = raw_as(&admin, "b\u{f8}b");
    assert_eq!(
        refused.err,
        "Error from server (Forbidden): secrets \"s1\" is forbidden: User \"b\u{f8}b\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\"\n",
        "the admin may impersonate b\u{f8}b, who may not read s1"
    );
}

/// A kubeconfig trusting the dev CA with the client certificate `cert` and key `key` (PEM), and
/// `token` if given.
pub(crate) fn cert_kubeconfig(
    w: &World,
    name: &str,
    cert: &str,
    key: &str,
    token: Option<&str>,
) -> PathBuf {
    use base64::Engine as _;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let mut user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(cert),
        b64(key)
    );
    if let Some(t) = token {
        user.push_str(&format!("    token: {t}\n"));
    }
    w.user_kubeconfig(name, &user)
}

/// A certificate (PEM, with its key) for `user` in `group` and `usage`, signed by `issuer` (a
/// certificate and its key), valid from the first to the second of `years`.
pub(crate) fn client_cert(
    user: &str,
    group: &str,
    issuer: (&rcgen::Certificate, &rcgen::KeyPair),
    years: (i32, i32),
    usage: rcgen::ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, group);
    p.distinguished_name.push(rcgen::DnType::CommonName, user);
    p.extended_key_usages = vec![usage];
    p.not_before = rcgen::date_time_ymd(years.0, 1, 1);
    p.not_after = rcgen::date_time_ymd(years.1, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer.0, issuer.1).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// An X.509 v1 certificate (no extensions) for `user` in `group`, signed by the dev CA, made
/// as `openssl x509 -req` makes it without `-extfile`: (certificate, key) in PEM.
fn v1_client_cert(w: &World, user: &str, group: &str) -> (String, String) {
    let openssl = crate::support::tools::require_tool("openssl", "apt-get install openssl");
    let dir = tempfile::tempdir().unwrap();
    let (key, csr, crt) = (
        dir.path().join("v1.key"),
        dir.path().join("v1.csr"),
        dir.path().join("v1.crt"),
    );
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&openssl)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let subject = format!("/CN={user}/O={group}");
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
        "-subj",
        &subject,
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        w.dev.path("kw/kube-ca.crt").to_str().unwrap(),
        "-CAkey",
        w.dev.path("kw/kube-ca.key").to_str().unwrap(),
        "-set_serial",
        "7",
        "-days",
        "2",
        "-out",
        crt.to_str().unwrap(),
    ]);
    let pem = std::fs::read_to_string(&crt).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(parsed.version().0, 0, "a v1 certificate");
    (pem, std::fs::read_to_string(&key).unwrap())
}

/// A CA certificate named `name` with `key`.
pub(crate) fn ca_cert(name: &str, key: &rcgen::KeyPair) -> rcgen::Certificate {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p.self_signed(key).unwrap()
}

/// Client certificates that do not verify (another CA's; an expired one and a server-only one
/// of the right CA) are kube-apiserver's 401 `Unauthorized` and an audit event of a failed x509
/// authentication, not a failed TLS handshake; with a valid bearer token beside them the token authenticates; a
/// valid certificate authenticates whatever token comes with it (the x509 authenticator is
/// asked first).
#[test]
fn kubectl_refused_client_certificates_are_unauthorized() {
    let w = audited_world("Metadata");
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other_ca = ca_cert("another-ca", &other_key);
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let foreign = client_cert(
        "mallory",
        "system:masters",
        (&other_ca, &other_key),
        (2020, 2090),
        ClientAuth,
    );
    let dev_key = std::fs::read_to_string(w.dev.path("kw/kube-ca.key")).unwrap();
    let dev_key = rcgen::KeyPair::from_pem(&dev_key).unwrap();
    let dev_ca = ca_cert("keyward-dev-ca", &dev_key);
    let dev = (&dev_ca, &dev_key);
    let expired = client_cert("mallory", "system:masters", dev, (2020, 2021), ClientAuth);
    let server_only = client_cert("mallory", "system:masters", dev, (2020, 2090), ServerAuth);
    let current = client_cert("carol", "devs", dev, (2020, 2090), ClientAuth);
    let v1 = v1_client_cert(&w, "mallory", "system:masters");
    let unauthorized = "error: You must be logged in to the server (Unauthorized)\n";
    let refused = [
        ("foreign", &foreign),
        ("expired", &expired),
        ("server-only", &server_only),
        // Go reads X.509 v1 certificates, webpki does not: refused, but as a 401 too.
        ("v1", &v1),
    ];
    for (name, (cert, key)) in refused {
        let cfg = cert_kubeconfig(&w, name, cert, key, None);
        let out = w.kubectl_as(33, &cfg, name).run(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/secrets",
        ]);
        assert_eq!((out.code, out.err.as_str()), (1, unauthorized), "{name}");
        // With a valid token beside it, the token authenticates.
        let cfg = cert_kubeconfig(&w, &format!("{name}-bob"), cert, key, Some(BOB_TOKEN));
        let me = w.kubectl_as(33, &cfg, &format!("{name}-bob")).ok(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ]);
        assert_eq!(me, "bob", "{name}");
    }
    // A certificate of the client CA decides, whatever token comes with it.
    let cfg = cert_kubeconfig(&w, "carol", &current.0, &current.1, Some("not-a-token"));
    let me = w.kubectl_as(33, &cfg, "carol").ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(me, "carol");
    let audit = std::fs::read_to_string(w.dev.path("audit.log")).unwrap();
    let lines: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains(r#""requestURI":"/api/v1/namespaces/default/secrets""#))
        .collect();
    assert_eq!(lines.len(), refused.len(), "{audit}");
    for l in lines {
        assert!(l.contains(r#""stage":"ResponseStarted""#), "{l}");
        assert!(
            l.contains(r#""message":"Authentication failed, attempted: x509","code":401"#),
            "{l}"
        );
    }
}

/// Discovery, OpenAPI and health as kubectl and probes read them, on every version.
#[test]
fn kubectl_version_explain_and_api_resources() {
    let w = World::start(&[]);
    for minor in KUBECTL_MINORS {
        let k = w.kubectl(minor);
        let v = k.ok(&["version", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(v["serverVersion"]["major"], "1");
        let explained = k.ok(&["explain", "secret.data"]);
        assert!(
            explained.contains("Data contains the secret data"),
            "1.{minor}: {explained}"
        );
        // Down to the fields of metadata's own lists.
        let owners = k.ok(&["explain", "secret.metadata.ownerReferences"]);
        assert!(
            owners.contains("blockOwnerDeletion") && owners.contains("uid"),
            "1.{minor}: {owners}"
        );
        let managed = k.ok(&["explain", "secret.metadata.managedFields.fieldsV1"]);
        assert!(managed.contains("FieldsV1"), "1.{minor}: {managed}");
        let resources = k.ok(&["api-resources"]);
        assert!(
            resources.lines().any(|l| l.starts_with("secrets ")),
            "{resources}"
        );
        assert_eq!(k.ok(&["get", "--raw", "/healthz"]), "ok");
        // What kubectl reads on its own besides Secrets: Events and Services, of which
        // keyward holds none.
        let info = k.ok(&["cluster-info"]);
        assert!(info.contains("is running at "), "1.{minor}: {info}");
        for args in [
            &["events", "-n", "kube-system"][..],
            &["events", "--for", "secret/s1"],
            &["get", "services", "-n", "kube-system"],
            &["get", "ev,svc", "-A"],
            &["get", "all"],
        ] {
            let o = k.run(args);
            assert_eq!(o.code, 0, "1.{minor} {args:?}: {}", o.err);
            assert!(o.out.is_empty(), "1.{minor} {args:?}: {}", o.out);
            assert!(
                o.err.starts_with("No events found") || o.err.starts_with("No resources found"),
                "1.{minor} {args:?}: {}",
                o.err
            );
        }
    }
}

/// A watch of Events (of which keyward holds none, so it never sends anything) ends when the
/// server shuts down, as watches of Secrets do: `kubectl events --watch` does not keep
/// `keyward dev` from stopping, even without a drain deadline.
#[test]
fn an_events_watch_ends_at_shutdown() {
    let mut w = World::start(&["--drain-timeout", "never"]);
    let k = w.kubectl(*KUBECTL_MINORS.last().unwrap());
    let mut watching = k.command(&["events", "-A", "--watch"]).spawn().unwrap();
    // The watch is open once the dev server has recorded it (its audit log is off, so wait a
    // little and check kubectl is still waiting).
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        watching.try_wait().unwrap().is_none(),
        "kubectl events --watch ended early"
    );
    let status = w.dev.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let _ = watching.kill();
    let _ = watching.wait();
}

/// `keyward server --kube-listen` serves the Kubernetes API with the server's TLS files and
/// client CA (and refuses it without TLS); `keyward dev` keeps its kubeconfig private.
#[test]
fn server_kube_listen_serves_kubectl() {
    use crate::support::store::{aesgcm_config, write_private};
    use keyward::kube::kubeconfig::{kubeconfig, DevCa};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, _, err) = crate::support::run(&[
        "server",
        "--data",
        d.join("x").to_str().unwrap(),
        "--encryption-config",
        "none.yaml",
        "--socket",
        d.join("x.sock").to_str().unwrap(),
        "--kube-listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--kube-listen requires TLS: pass --tls-cert and --tls-key"),
        "{err}"
    );

    let ca = DevCa::load_or_create(d).unwrap();
    let server = ca.issue_server().unwrap();
    std::fs::write(d.join("srv.pem"), &server.cert).unwrap();
    write_private(&d.join("srv.key"), server.key.as_bytes());
    let port = crate::support::free_port();
    let cfg = aesgcm_config(d);
    let socket = d.join("kw.sock");
    let _p = crate::support::Proc::spawn(
        &[
            "server",
            "--data",
            d.join("store").to_str().unwrap(),
            "--encryption-config",
            cfg.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            "--kube-listen",
            &format!("127.0.0.1:{port}"),
            "--tls-cert",
            d.join("srv.pem").to_str().unwrap(),
            "--tls-key",
            d.join("srv.key").to_str().unwrap(),
            "--client-ca",
            d.join(keyward::kube::kubeconfig::CA_CERT_FILE)
                .to_str()
                .unwrap(),
            "--kube-max-watches",
            "1",
        ],
        &[],
        &d.join("server.log"),
        &socket,
    );
    let admin = ca
        .issue_client("root", &["system:masters".to_owned()])
        .unwrap();
    let text = kubeconfig(
        &format!("https://127.0.0.1:{port}"),
        ca.pem(),
        "kw",
        "root",
        &admin,
    );
    let kc = d.join("kubeconfig");
    std::fs::write(&kc, text.as_bytes()).unwrap();
    let (ok, _, err) = crate::support::run(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=pw=x",
        "--server",
        &format!("unix://{}", socket.display()),
    ]);
    assert!(ok, "{err}");
    for minor in [27, 33] {
        let k = Kubectl::new(minor, &kc, d);
        assert_eq!(k.ok(&["get", "secrets", "-o", "name"]), "secret/db\n");
    }
    let k = Kubectl::new(27, &kc, d);
    assert!(k
        .ok(&["auth", "whoami", "-o", "json"])
        .contains("\"username\": \"root\""));

    // --kube-max-watches 1: a second watch gets 429 with Retry-After, which kubectl waits for
    // and retries, so it starts once the first one ends. Both run with -v=6, which logs each
    // call's status and each wait.
    let watching = |log: &str| {
        log.lines()
            .any(|l| l.contains("watch=true") && l.contains("200 OK"))
    };
    for minor in [27, 33] {
        let k = Kubectl::new(minor, &kc, d);
        let first = Watching::start(&k, &["get", "secrets", "-w", "-o", "name", "-v=6"]);
        let log = first.wait_for_stderr(watching);
        assert!(
            watching(&log),
            "1.{minor}: the first watch did not start: {log}"
        );
        let second = Watching::start(
            &k,
            &[
                "get",
                "secret",
                "db",
                "-w",
                "-o",
                "jsonpath={.metadata.labels.round}{\"\\n\"}",
                "-v=6",
            ],
        );
        let log = second.wait_for_stderr(|log| log.contains("Retry-After"));
        assert!(
            log.contains("429 Too Many Requests") && log.contains("Retry-After"),
            "1.{minor}: the second watch was not refused and retried: {log}"
        );
        drop(first);
        let log = second.wait_for_stderr(watching);
        assert!(
            watching(&log),
            "1.{minor}: the retried watch did not start: {log}"
        );
        let round = format!("r{minor}");
        k.ok(&[
            "label",
            "--overwrite",
            "secret",
            "db",
            &format!("round={round}"),
        ]);
        let out = second.wait_for(|out| out.lines().any(|l| l == round));
        assert!(out.lines().any(|l| l == round), "1.{minor}: {out:?}");
    }

    let w = World::start(&[]);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&w.admin).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let ca_key = w.dev.path("kw/kube-ca.key");
    assert_eq!(
        std::fs::metadata(ca_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
