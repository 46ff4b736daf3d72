//! `keyward apply -f` and `keyward apply -k` against a real `keyward dev` in a temp dir. Every
//! command's stdout, stderr and exit code are compared whole; what the server stored is read
//! back over gRPC and compared whole too.
//!
//! The kustomize name-suffix hashes pinned here were produced by `kubectl kustomize`
//! (kustomize v5.0.1, v5.5.0 and v5.6.0) for the same inputs; `kustomize_matches_kubectl`
//! repeats that comparison live (it needs `kubectl`, and fails saying so without it).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::normalise;
use base64::Engine;
use keyward::pb::keyward_v1 as pb;
use keyward::pb::keyward_v1::secrets_client::SecretsClient;
use serde_json::Value;

/// The kustomization under tests/data/apply/kustomize/basic.
fn basic_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/apply/kustomize/basic")
}

/// Names `kubectl kustomize` gives the basic fixture's objects, in its output order.
const BASIC_NAMES: [&str; 4] = ["db-49c75kt86b", "plain", "static", "web-tls-6g6bd72m5t"];

#[derive(Debug, PartialEq, Eq)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn out(code: i32, stdout: &str, stderr: &str) -> Out {
    Out {
        code,
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
    }
}

/// The dev server, with commands whose whole result ([`Out`]) is compared.
struct Dev(crate::support::DevServer);

impl std::ops::Deref for Dev {
    type Target = crate::support::DevServer;
    fn deref(&self) -> &crate::support::DevServer {
        &self.0
    }
}

impl Dev {
    fn start() -> Dev {
        Dev(crate::support::DevServer::start())
    }

    /// Runs keyward in the temp dir with `--server`, optionally feeding `stdin`.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Out {
        let (code, stdout, stderr) = self.command(args, &[], stdin);
        Out {
            code,
            stdout,
            stderr,
        }
    }

    fn kw(&self, args: &[&str]) -> Out {
        self.run(args, None)
    }

    /// Every stored Secret, one line each, sorted: `ns/name type [immutable] labels{..}
    /// annotations{..} data{k=v,..}` with values as (lossy) text. The last-applied annotation
    /// is left out (see [`Dev::last_applied`]).
    fn stored(&self) -> Vec<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let items = rt.block_on(async {
            let ch = keyward::uds::unix_channel(self.socket.clone())
                .await
                .unwrap();
            SecretsClient::new(ch)
                .list(pb::ListRequest::default())
                .await
                .unwrap()
                .into_inner()
                .items
        });
        let kv = |m: &mut dyn Iterator<Item = (String, String)>| {
            m.map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut lines: Vec<String> = items
            .into_iter()
            .map(|s| {
                let m = s.metadata.unwrap_or_default();
                let labels: BTreeMap<_, _> = m.labels.into_iter().collect();
                let annotations: BTreeMap<_, _> = m
                    .annotations
                    .into_iter()
                    .filter(|(k, _)| k != LAST_APPLIED)
                    .collect();
                let data: BTreeMap<_, _> = s
                    .data
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect();
                format!(
                    "{}/{} {}{} labels{{{}}} annotations{{{}}} data{{{}}}",
                    m.namespace,
                    m.name,
                    s.r#type,
                    if s.immutable == Some(true) {
                        " immutable"
                    } else {
                        ""
                    },
                    kv(&mut labels.into_iter()),
                    kv(&mut annotations.into_iter()),
                    kv(&mut data.into_iter()),
                )
            })
            .collect();
        lines.sort();
        lines
    }
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

const TWO: &str = "\
apiVersion: v1
kind: Secret
metadata:
  name: db
  labels:
    app: shop
type: Opaque
data:
  user: YWRtaW4=
  password: b2xk
stringData:
  password: s3cret
---
apiVersion: v1
kind: Secret
metadata:
  name: api
data:
  token: dG9rZW4=
";

#[test]
fn created_unchanged_configured_across_applies() {
    let dev = Dev::start();
    dev.write("m.yaml", TWO);
    assert_eq!(
        dev.kw(&["apply", "-f", "m.yaml"]),
        out(0, "secret/db created\nsecret/api created\n", "")
    );
    // stringData wins over data for the same key, as on the server.
    let first = lines(&[
        "default/api Opaque labels{} annotations{} data{token=token}",
        "default/db Opaque labels{app=shop} annotations{} data{password=s3cret,user=admin}",
    ]);
    assert_eq!(dev.stored(), first);
    // As with kubectl, a manifest with stringData is never "unchanged": the live object holds
    // no stringData, so the three-way patch always sets it again (kubernetes/kubernetes#87736).
    assert_eq!(
        dev.kw(&["apply", "-f", "m.yaml"]),
        out(0, "secret/db configured\nsecret/api unchanged\n", "")
    );
    assert_eq!(dev.stored(), first);

    // A changed stringData value.
    dev.write("m.yaml", TWO.replace("password: s3cret", "password: n3w"));
    assert_eq!(
        dev.kw(&["apply", "-f", "m.yaml"]),
        out(0, "secret/db configured\nsecret/api unchanged\n", "")
    );
    // Three-way merge: a label and a data key the last apply set and this manifest no longer
    // names are removed; an annotation it adds is added.
    let edited = TWO
        .replace("password: s3cret", "password: n3w")
        .replace(
            "  labels:\n    app: shop\n",
            "  annotations:\n    owner: team-a\n",
        )
        .replace("  user: YWRtaW4=\n", "");
    dev.write("m.yaml", &edited);
    assert_eq!(
        dev.kw(&["apply", "-f", "m.yaml"]),
        out(0, "secret/db configured\nsecret/api unchanged\n", "")
    );
    assert_eq!(
        dev.stored(),
        lines(&[
            "default/api Opaque labels{} annotations{} data{token=token}",
            "default/db Opaque labels{} annotations{owner=team-a} data{password=n3w}",
        ])
    );
    assert_eq!(
        dev.kw(&["apply", "-f", "m.yaml"]),
        out(0, "secret/db configured\nsecret/api unchanged\n", "")
    );
    // A type change is refused by the server, kubectl-style; the other object is still
    // applied and the exit code is non-zero.
    dev.write(
        "m.yaml",
        edited
            .replace("type: Opaque", "type: example.com/other")
            .replace("dG9rZW4=", "dG9rZW4y"),
    );
    assert_eq!(
        dev.kw(&["apply", "-f", "m.yaml"]),
        out(
            1,
            "secret/api configured\n",
            "The Secret \"db\" is invalid: type: Invalid value: \"example.com/other\": field is immutable\n"
        )
    );
}

/// `null`s as Go decodes them, as kubectl and kube-apiserver read a manifest: what `create
/// --dry-run=client -o yaml` writes (`creationTimestamp: null`) applies, created then
/// configured; a `null` label or data value is the empty string.
#[test]
fn nulls_in_a_manifest_read_as_kubectl_reads_them() {
    let dev = Dev::start();
    for (value, verb) in [("a", "created"), ("b", "configured")] {
        let literal = format!("--from-literal=k={value}");
        let made = dev.run(
            &[
                "create",
                "secret",
                "generic",
                "piped",
                &literal,
                "--dry-run=client",
                "-o",
                "yaml",
            ],
            None,
        );
        assert!(made.stdout.contains("creationTimestamp: null"), "{made:?}");
        assert_eq!(
            dev.run(&["apply", "-f", "-"], Some(&made.stdout)),
            out(0, &format!("secret/piped {verb}\n"), "")
        );
    }
    let stdin = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: nulls\n  labels: {a: null}\n  \
                 creationTimestamp: null\nstringData: {k: null, j: x}\ntype: null\n";
    assert_eq!(dev.run(&["apply", "-f", "-"], Some(stdin)).code, 0);
    let got = dev.run(&["get", "secret", "nulls", "-o", "json"], None);
    let v: Value = serde_json::from_str(&got.stdout).unwrap();
    assert_eq!(v["metadata"]["labels"], serde_json::json!({"a": ""}));
    assert_eq!(v["data"], serde_json::json!({"j": "eA==", "k": ""}));
    assert_eq!(v["type"], "Opaque");
}

#[test]
fn lists_json_stdin_and_directories() {
    let dev = Dev::start();
    dev.write(
        "list.json",
        r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "l1"}, "data": {"k": "MQ=="}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "l2"}, "stringData": {"k": "2"}}
        ]}"#,
    );
    let stdin =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: from-stdin\nstringData:\n  k: s\n";
    assert_eq!(
        dev.run(&["apply", "-f", "list.json", "-f", "-"], Some(stdin)),
        out(
            0,
            "secret/l1 created\nsecret/l2 created\nsecret/from-stdin created\n",
            ""
        )
    );
    assert_eq!(
        dev.run(&["apply", "-f", "-"], Some(stdin)),
        out(0, "secret/from-stdin configured\n", "")
    );

    let doc = |name: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  k: v\n")
    };
    dev.write("dir/b.yaml", doc("d-b"));
    dev.write(
        "dir/a.json",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"d-a"},"stringData":{"k":"v"}}"#,
    );
    dev.write("dir/c.yml", doc("d-c"));
    dev.write("dir/notes.txt", "not a manifest: {{{");
    dev.write("dir/sub/d.yaml", doc("d-d"));
    assert_eq!(
        dev.kw(&["apply", "-f", "dir"]),
        out(
            0,
            "secret/d-a created\nsecret/d-b created\nsecret/d-c created\n",
            ""
        )
    );
    assert_eq!(
        dev.kw(&["apply", "-R", "-f", "dir"]),
        out(
            0,
            "secret/d-a configured\nsecret/d-b configured\nsecret/d-c configured\nsecret/d-d created\n",
            ""
        )
    );
    // A directory without manifests, and an empty file, hold no objects.
    fs::create_dir(dev.path("empty")).unwrap();
    dev.write("empty.yaml", "");
    for args in [["apply", "-f", "empty"], ["apply", "-f", "empty.yaml"]] {
        assert_eq!(
            dev.kw(&args),
            out(1, "", "error: no objects passed to apply\n")
        );
    }
    assert_eq!(dev.stored().len(), 7);
}

#[test]
fn namespace_rules() {
    let dev = Dev::start();
    dev.write(
        "ns.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: n1\nstringData:\n  k: v\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata:\n  name: n2\n  namespace: prod\nstringData:\n  k: v\n",
    );
    assert_eq!(
        dev.kw(&["apply", "-f", "ns.yaml"]),
        out(0, "secret/n1 created\nsecret/n2 created\n", "")
    );
    assert_eq!(
        dev.kw(&["apply", "-f", "ns.yaml", "-n", "prod"]),
        out(0, "secret/n1 created\nsecret/n2 configured\n", "")
    );
    assert_eq!(
        dev.kw(&["apply", "-f", "ns.yaml", "--namespace", "dev"]),
        out(
            1,
            "",
            "error: the namespace from the provided object \"prod\" does not match the namespace \"dev\". You must pass '--namespace=prod' to perform this operation.\n"
        )
    );
    assert_eq!(
        dev.stored(),
        lines(&[
            "default/n1 Opaque labels{} annotations{} data{k=v}",
            "prod/n1 Opaque labels{} annotations{} data{k=v}",
            "prod/n2 Opaque labels{} annotations{} data{k=v}",
        ])
    );
}

#[test]
fn immutable_refusal_keeps_applying_the_rest() {
    let dev = Dev::start();
    let manifest = |v: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\nimmutable: true\nstringData:\n  k: {v}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata:\n  name: b\nstringData:\n  k: {v}\n{extra}"
        )
    };
    dev.write("imm.yaml", manifest("v1", ""));
    assert_eq!(
        dev.kw(&["apply", "-f", "imm.yaml"]),
        out(0, "secret/a created\nsecret/b created\n", "")
    );
    let c = "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: c\nstringData:\n  k: v2\n";
    dev.write("imm.yaml", manifest("v2", c));
    assert_eq!(
        dev.kw(&["apply", "-f", "imm.yaml"]),
        out(
            1,
            "secret/b configured\nsecret/c created\n",
            "The Secret \"a\" is invalid: data: Forbidden: field is immutable when `immutable` is set\n"
        )
    );
    assert_eq!(
        dev.stored(),
        lines(&[
            "default/a Opaque immutable labels{} annotations{} data{k=v1}",
            "default/b Opaque labels{} annotations{} data{k=v2}",
            "default/c Opaque labels{} annotations{} data{k=v2}",
        ])
    );
}

#[test]
fn invalid_manifests_write_nothing() {
    let dev = Dev::start();
    let good = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: good\nstringData:\n  k: v\n---\n";
    for (doc, err) in [
        (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\nspec: {}\n",
            "error: error validating bad.yaml: secret \"x\": unknown field \"spec\"\n",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\ndata:\n  k: '%%%'\n",
            "error: error decoding secret \"x\" in bad.yaml: data[k]: a data value is not valid base64\n",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
            "error: error validating bad.yaml: kind \"ConfigMap\" is not supported; keyward stores kind Secret (or a List of them)\n",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\ndata:\n  bad key: dg==\n",
            "error: error validating bad.yaml: Secret \"x\" is invalid: data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')\n",
        ),
    ] {
        dev.write("bad.yaml", format!("{good}{doc}"));
        assert_eq!(dev.kw(&["apply", "-f", "bad.yaml"]), out(1, "", err), "{doc}");
        // An invalid file among several stops them all, before anything is written.
        dev.write("ok.yaml", good);
        assert_eq!(
            dev.kw(&["apply", "-f", "ok.yaml", "-f", "bad.yaml"]),
            out(1, "", err),
            "{doc}"
        );
    }
    assert_eq!(
        dev.kw(&["apply", "-f", "missing.yaml"]),
        out(1, "", "error: the path \"missing.yaml\" does not exist\n")
    );
    assert_eq!(
        dev.kw(&["apply"]),
        out(
            1,
            "",
            "error: must specify one of -f and -k\nhint: keyward apply -f FILE|DIR|- or keyward apply -k DIR\n"
        )
    );
    assert_eq!(dev.stored(), Vec::<String>::new());
}

#[test]
fn dry_runs_and_output_formats() {
    let dev = Dev::start();
    let doc = |v: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\nstringData:\n  k: {v}\n")
    };
    dev.write("a.yaml", doc("v1"));
    assert_eq!(
        dev.kw(&["apply", "-f", "a.yaml", "--dry-run=client"]),
        out(0, "secret/a created (dry run)\n", "")
    );
    assert_eq!(
        dev.kw(&["apply", "-f", "a.yaml", "--dry-run=server"]),
        out(0, "secret/a created (server dry run)\n", "")
    );
    assert_eq!(dev.stored(), Vec::<String>::new());
    assert_eq!(
        dev.kw(&["apply", "-f", "a.yaml", "-o", "name"]),
        out(0, "secret/a\n", "")
    );
    dev.write("a.yaml", doc("v2"));
    for (mode, suffix) in [("client", "(dry run)"), ("server", "(server dry run)")] {
        assert_eq!(
            dev.kw(&["apply", "-f", "a.yaml", &format!("--dry-run={mode}")]),
            out(0, &format!("secret/a configured {suffix}\n"), "")
        );
    }
    assert_eq!(
        dev.stored(),
        lines(&["default/a Opaque labels{} annotations{} data{k=v1}"])
    );
    let o = dev.kw(&["apply", "-f", "a.yaml", "-o", "yaml"]);
    assert_eq!((o.code, o.stderr.as_str()), (0, ""));
    assert_eq!(
        normalise(&o.stdout),
        "apiVersion: v1\ndata:\n  k: djI=\nkind: Secret\nmetadata:\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: |\n      {\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"annotations\":{},\"name\":\"a\",\"namespace\":\"default\"},\"stringData\":{\"k\":\"v2\"}}\n  creationTimestamp: TIME\n  name: a\n  namespace: default\n  resourceVersion: \"RV\"\n  uid: UID\ntype: Opaque\n"
    );
    // Several objects print as a List.
    dev.write(
        "b.yaml",
        format!(
            "{}---\n{}",
            doc("v2"),
            doc("v2").replace("name: a", "name: b")
        ),
    );
    let o = dev.kw(&["apply", "-f", "b.yaml", "-o", "json"]);
    assert_eq!((o.code, o.stderr.as_str()), (0, ""));
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["kind"], "List");
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(v["items"][1]["data"]["k"], "djI=");
}

#[test]
fn kustomize_generator_names_options_and_reapply() {
    let dev = Dev::start();
    copy_dir(&basic_fixture(), &dev.path("k"));
    let created: String = BASIC_NAMES
        .iter()
        .map(|n| format!("secret/{n} created\n"))
        .collect();
    assert_eq!(dev.kw(&["apply", "-k", "k"]), out(0, &created, ""));
    let ca = fs::read_to_string(basic_fixture().join("certs/ca.pem")).unwrap();
    let crt = fs::read_to_string(basic_fixture().join("certs/tls.crt")).unwrap();
    let key = fs::read_to_string(basic_fixture().join("certs/tls.key")).unwrap();
    let settings = "{\"pool\": 5, \"timeout\": \"30s\"}\n";
    assert_eq!(
        dev.stored(),
        vec![
            format!(
                "shop/db-49c75kt86b Opaque labels{{app=shop,tier=backend}} annotations{{note=generated}} \
                 data{{DB_HOST=db.internal,DB_OPTS=sslmode=require,DB_PORT=5432,ca.crt={ca},password=s3=cret,settings.json={settings},username=admin}}"
            ),
            "shop/plain Opaque labels{app=shop,tier=global} annotations{note=generated} data{LEGACY=yes}".to_owned(),
            "shop/static Opaque labels{} annotations{} data{token=abc123}".to_owned(),
            format!(
                "shop/web-tls-6g6bd72m5t kubernetes.io/tls immutable labels{{app=shop,tier=global}} annotations{{note=generated}} \
                 data{{tls.crt={crt},tls.key={key}}}"
            ),
        ]
    );
    // `static` is a plain manifest with stringData: "configured" every time, as with kubectl.
    let unchanged: String = BASIC_NAMES
        .iter()
        .map(|n| {
            let verb = if *n == "static" {
                "configured"
            } else {
                "unchanged"
            };
            format!("secret/{n} {verb}\n")
        })
        .collect();
    assert_eq!(dev.kw(&["apply", "-k", "k"]), out(0, &unchanged, ""));

    // New content gives the generated Secret a new name (the old one stays, as with kubectl
    // apply without --prune); a generator without the hash suffix is updated in place.
    let kz = dev.path("k/kustomization.yaml");
    let text = fs::read_to_string(&kz).unwrap();
    fs::write(&kz, text.replace("username=admin", "username=root")).unwrap();
    dev.write("k/legacy.env", "LEGACY=no\n");
    assert_eq!(
        dev.kw(&["apply", "-k", "k"]),
        out(
            0,
            "secret/db-bgh6b2tth8 created\nsecret/plain configured\nsecret/static configured\nsecret/web-tls-6g6bd72m5t unchanged\n",
            ""
        )
    );
    assert_eq!(dev.stored().len(), 5);

    // The kustomization's namespace against -n.
    assert_eq!(
        dev.kw(&["apply", "-k", "k", "-n", "other"]),
        out(
            1,
            "",
            "error: the namespace from the provided object \"shop\" does not match the namespace \"other\". You must pass '--namespace=shop' to perform this operation.\n"
        )
    );
    assert_eq!(
        dev.kw(&["apply", "-k", "k", "-n", "shop", "-o", "name"]),
        out(
            0,
            "secret/db-bgh6b2tth8\nsecret/plain\nsecret/static\nsecret/web-tls-6g6bd72m5t\n",
            ""
        )
    );
}

/// Literal quoting, BOM and CRLF env files, binary files, empty generators, an unusual type
/// (Go's JSON escaping of `&<>`), and global vs local options.
const VARIANTS: &str = "\
secretGenerator:
- name: odd
  type: \"example.com/a&b<c>\"
  literals: [x=y]
- name: empty
- name: quoted
  literals: ['a=\"x\"', \"b='y'\", 'c=\"z', 'd=\"\"']
  envs: [crlf.env]
- name: bin
  files: [blob.bin, long=long.txt]
  options:
    disableNameSuffixHash: false
    labels: {scope: local}
generatorOptions:
  labels: {scope: global, team: t}
  immutable: true
";

fn write_variants(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("kustomization.yaml"), VARIANTS).unwrap();
    fs::write(
        dir.join("crlf.env"),
        b"\xef\xbb\xbfA=1\r\n  B=2\r\n#c\r\nC\r\n",
    )
    .unwrap();
    fs::write(
        dir.join("blob.bin"),
        (0..=255u8).cycle().take(700).collect::<Vec<u8>>(),
    )
    .unwrap();
    fs::write(dir.join("long.txt"), "x".repeat(60)).unwrap();
}

#[test]
fn kustomize_variants_have_pinned_names() {
    let dev = Dev::start();
    write_variants(&dev.path("v"));
    let want = "secret/bin-f7hb69mgb5 created\nsecret/empty-46f8b28mk5 created\nsecret/odd-8m592m6f8b created\nsecret/quoted-d84d2tt9h8 created\n";
    assert_eq!(dev.kw(&["apply", "-k", "v"]), out(0, want, ""));
    let stored = dev.stored();
    assert_eq!(
        stored[1..],
        lines(&[
            "default/empty-46f8b28mk5 Opaque immutable labels{scope=global,team=t} annotations{} data{}",
            "default/odd-8m592m6f8b example.com/a&b<c> immutable labels{scope=global,team=t} annotations{} data{x=y}",
            "default/quoted-d84d2tt9h8 Opaque immutable labels{scope=global,team=t} annotations{} data{A=1,B=2,C=,a=x,b=y,c=\"z,d=}",
        ])
    );
    assert!(
        stored[0].starts_with("default/bin-f7hb69mgb5 Opaque immutable labels{scope=local,team=t}"),
        "{}",
        stored[0]
    );
    assert_eq!(
        dev.kw(&["apply", "-k", "v"]),
        out(0, &want.replace("created", "unchanged"), "")
    );
}

#[test]
fn kustomize_errors_name_the_field_and_write_nothing() {
    let dev = Dev::start();
    dev.write("k/in.txt", "x");
    dev.write("outside.txt", "x");
    let root = fs::canonicalize(dev.path("k")).unwrap();
    let outside = fs::canonicalize(dev.path("outside.txt")).unwrap();
    let g = "secretGenerator:\n- name: a\n";
    for (k, err) in [
        (
            "bogus: 1\n".to_owned(),
            "unknown field \"bogus\" (known: apiVersion, kind, metadata, resources, namespace, secretGenerator, generatorOptions)".to_owned(),
        ),
        (
            "namePrefix: x-\n".to_owned(),
            "field \"namePrefix\" is not supported by keyward apply -k (supported: apiVersion, kind, metadata, resources, namespace, secretGenerator, generatorOptions)".to_owned(),
        ),
        (
            "kind: Component\n".to_owned(),
            "kind: \"Component\": expected \"Kustomization\"".to_owned(),
        ),
        (
            "secretGenerator:\n- name: a\n  foo: 1\n".to_owned(),
            "secretGenerator[0]: unknown field \"foo\" (known: name, namespace, behavior, type, literals, files, envs, env, options)".to_owned(),
        ),
        (
            format!("{g}  options: {{bar: 1}}\n"),
            "secretGenerator[0] (secret \"a\").options: unknown field \"bar\" (known: labels, annotations, disableNameSuffixHash, immutable)".to_owned(),
        ),
        (
            format!("{g}  options: {{labels: {{n: 1}}}}\n"),
            "secretGenerator[0] (secret \"a\").options.labels.n: must be a string (quote it)".to_owned(),
        ),
        (
            "secretGenerator:\n- literals: [a=1]\n".to_owned(),
            "secretGenerator[0]: name is required".to_owned(),
        ),
        (
            format!("{g}  literals: [a=1, a=2]\n"),
            "secretGenerator[0] (secret \"a\").literals: key \"a\" is given twice".to_owned(),
        ),
        (
            format!("{g}  literals: [noeq]\n"),
            "secretGenerator[0] (secret \"a\").literals: invalid literal source \"noeq\", expected key=value".to_owned(),
        ),
        (
            format!("{g}  files: [in.txt]\n  literals: [in.txt=1]\n"),
            "secretGenerator[0] (secret \"a\").files: key \"in.txt\" is given twice".to_owned(),
        ),
        (
            format!("{g}  files: [k=v=w]\n"),
            "secretGenerator[0] (secret \"a\").files: \"k=v=w\": key names and file paths cannot contain '='".to_owned(),
        ),
        (
            format!("{g}  files: [missing.txt]\n"),
            "secretGenerator[0] (secret \"a\").files: k/missing.txt: No such file or directory (os error 2)".to_owned(),
        ),
        (
            format!("{g}  files: [../outside.txt]\n"),
            format!(
                "secretGenerator[0] (secret \"a\").files: security; file '{}' is not in or below '{}'",
                outside.display(),
                root.display()
            ),
        ),
        (
            format!("{g}  behavior: merge\n"),
            "secretGenerator[0] (secret \"a\").behavior: \"merge\" needs a base kustomization, which keyward does not support; use \"create\"".to_owned(),
        ),
        (
            "resources: [in.txt]\n".to_owned(),
            "error parsing k/in.txt: a manifest must be an object".to_owned(),
        ),
    ] {
        dev.write("k/kustomization.yaml", &k);
        let want = if err.starts_with("error parsing") {
            format!("error: {err}\n")
        } else {
            format!("error: kustomization k/kustomization.yaml: {err}\n")
        };
        assert_eq!(dev.kw(&["apply", "-k", "k"]), out(1, "", &want), "{k}");
    }
    fs::remove_file(dev.path("k/kustomization.yaml")).unwrap();
    assert_eq!(
        dev.kw(&["apply", "-k", "k"]),
        out(
            1,
            "",
            "error: unable to find one of 'kustomization.yaml', 'kustomization.yml' or 'Kustomization' in directory 'k'\n"
        )
    );
    assert_eq!(dev.stored(), Vec::<String>::new());
}

/// One object of `kubectl kustomize` or `keyward apply -o json` output, as the server would
/// store it: (namespace, name) -> type, immutable, labels, annotations, decoded data.
type Objects = BTreeMap<(String, String), String>;

fn describe_objects(docs: &[Value]) -> Objects {
    let b64 = base64::engine::general_purpose::STANDARD;
    let map = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Objects::new();
    for d in docs {
        let m = &d["metadata"];
        let ns = m["namespace"].as_str().unwrap_or("default").to_owned();
        let name = m["name"].as_str().unwrap().to_owned();
        let mut data: BTreeMap<String, Vec<u8>> = map(&d["data"])
            .into_iter()
            .map(|(k, v)| {
                let clean: String = v.split_whitespace().collect();
                (k, b64.decode(clean).unwrap())
            })
            .collect();
        for (k, v) in map(&d["stringData"]) {
            data.insert(k, v.into_bytes());
        }
        out.insert(
            (ns, name),
            format!(
                "type={} immutable={} labels={:?} annotations={:?} data={:?}",
                d["type"].as_str().unwrap_or("Opaque"),
                d["immutable"].as_bool().unwrap_or(false),
                map(&m["labels"]),
                map(&m["annotations"])
                    .into_iter()
                    .filter(|(k, _)| k != LAST_APPLIED)
                    .collect::<BTreeMap<_, _>>(),
                data
            ),
        );
    }
    out
}

/// The same kustomizations through a real `kubectl kustomize`: the same objects, names (hash
/// suffixes included), namespaces, labels, annotations and data.
#[test]
fn kustomize_matches_kubectl() {
    let kubectl = crate::support::tools::kubectl();
    let dev = Dev::start();
    copy_dir(&basic_fixture(), &dev.path("basic"));
    write_variants(&dev.path("variants"));
    for dir in ["basic", "variants"] {
        let kubectl = Command::new(&kubectl)
            .args(["kustomize", dir])
            .current_dir(dev.dir.path())
            .output()
            .expect("run kubectl");
        assert!(
            kubectl.status.success(),
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&kubectl.stderr)
        );
        let text = String::from_utf8(kubectl.stdout).unwrap();
        let mut docs = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            use serde::Deserialize;
            let v = Value::deserialize(doc).unwrap();
            if !v.is_null() {
                docs.push(v);
            }
        }
        let want = describe_objects(&docs);
        let o = dev.kw(&["apply", "-k", dir, "--dry-run=client", "-o", "json"]);
        assert_eq!((o.code, o.stderr.as_str()), (0, ""), "{dir}");
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        let got = describe_objects(v["items"].as_array().unwrap());
        assert_eq!(got, want, "{dir}");
        // Same order as kubectl's output too.
        let order = |docs: &[Value]| -> Vec<String> {
            docs.iter()
                .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(order(v["items"].as_array().unwrap()), order(&docs), "{dir}");
    }
}
