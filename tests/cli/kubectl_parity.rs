//! keyward's own CLI agrees with kubectl on the same store (issue 14):
//!
//! - `keyward apply` is kubectl's client-side apply: the last-applied annotation kubectl
//!   writes, the three-way merge (keys the manifest drops are removed, keys others added are
//!   kept, the stringData quirk), a manifest resourceVersion as a precondition;
//! - `keyward get -o yaml|json` prints byte for byte what the real kubectl prints for the same
//!   object: the JSON keyward prints is fed to `kubectl patch --local` (an offline kubectl
//!   command that prints its input object unchanged) of every installed kubectl 1.27–1.33,
//!   and both renderings are compared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use keyward::pb::keyward_v1 as pb;
use keyward::pb::keyward_v1::secrets_client::SecretsClient;
use serde_json::{json, Value};

use crate::support::DevServer;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The kubectl binaries to compare with: the package's `kubectl.1.27` … `kubectl.1.33` that
/// are installed, else `kubectl`.
fn kubectls() -> Vec<PathBuf> {
    let found: Vec<PathBuf> = (27..=33)
        .map(|m| PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{m}")))
        .filter(|p| p.exists())
        .collect();
    if found.is_empty() {
        vec![crate::support::tools::kubectl()]
    } else {
        found
    }
}

/// Runs a gRPC call against the dev server's store.
fn grpc<T>(
    dev: &DevServer,
    f: impl AsyncFnOnce(&mut SecretsClient<tonic::transport::Channel>) -> T,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = keyward::uds::unix_channel(dev.socket.clone())
            .await
            .unwrap();
        let mut c = SecretsClient::new(ch);
        f(&mut c).await
    })
}

fn read(dev: &DevServer, name: &str) -> pb::Secret {
    grpc(dev, async |c| {
        c.get(pb::GetRequest {
            namespace: "default".into(),
            name: name.into(),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner()
    })
}

/// Changes a Secret as another writer would (read, change, update).
fn other_writer(dev: &DevServer, name: &str, change: impl FnOnce(&mut pb::Secret)) {
    let mut s = read(dev, name);
    change(&mut s);
    grpc(dev, async |c| {
        c.update(pb::UpdateRequest {
            secret: Some(s),
            dry_run: false,
        })
        .await
        .unwrap();
    });
}

/// `data` as text, labels, and annotations other than the last-applied one.
fn content(s: &pb::Secret) -> String {
    let m = s.metadata.clone().unwrap_or_default();
    let data: BTreeMap<_, _> = s
        .data
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    let labels: BTreeMap<_, _> = m.labels.into_iter().collect();
    let annotations: BTreeMap<_, _> = m
        .annotations
        .into_iter()
        .filter(|(k, _)| k != LAST_APPLIED)
        .collect();
    format!("data={data:?} labels={labels:?} annotations={annotations:?}")
}

fn last_applied(s: &pb::Secret) -> String {
    s.metadata.clone().unwrap_or_default().annotations[LAST_APPLIED].clone()
}

fn rv(s: &pb::Secret) -> String {
    s.metadata.clone().unwrap_or_default().resource_version
}

#[test]
fn apply_is_kubectls_three_way_merge() {
    let dev = DevServer::start();
    let v1 = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  labels:\n    tier: web\ndata:\n  a: b25l\n  b: dHdv\n";
    dev.write("s.yaml", v1);
    assert_eq!(
        dev.kw(&["apply", "-f", "s.yaml"]),
        (0, "secret/s created\n".into(), String::new())
    );
    // The annotation kubectl writes: the manifest as given with the namespace kubectl sets,
    // `annotations: {}`, keys sorted, compact, a final newline.
    assert_eq!(
        last_applied(&read(&dev, "s")),
        "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"b25l\",\"b\":\"dHdv\"},\"kind\":\"Secret\",\"metadata\":{\"annotations\":{},\"labels\":{\"tier\":\"web\"},\"name\":\"s\",\"namespace\":\"default\"}}\n"
    );
    assert_eq!(
        dev.kw(&["apply", "-f", "s.yaml"]),
        (0, "secret/s unchanged\n".into(), String::new())
    );

    // Another writer adds a key and a label: apply keeps them.
    other_writer(&dev, "s", |s| {
        s.data.insert("other".into(), b"kept".to_vec());
        s.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("team".into(), "x".into());
    });
    // Change a, drop b and the label tier, add an annotation.
    let v2 = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  labels: {}\n  annotations:\n    note: hi\ndata:\n  a: dW5v\n";
    dev.write("s.yaml", v2);
    assert_eq!(
        dev.kw(&["apply", "-f", "s.yaml"]),
        (0, "secret/s configured\n".into(), String::new())
    );
    let now = read(&dev, "s");
    assert_eq!(
        content(&now),
        "data={\"a\": \"uno\", \"other\": \"kept\"} labels={\"team\": \"x\"} annotations={\"note\": \"hi\"}"
    );
    assert_eq!(
        last_applied(&now),
        "{\"apiVersion\":\"v1\",\"data\":{\"a\":\"dW5v\"},\"kind\":\"Secret\",\"metadata\":{\"annotations\":{\"note\":\"hi\"},\"labels\":{},\"name\":\"s\",\"namespace\":\"default\"}}\n"
    );

    // A stale resourceVersion in the manifest: kubectl's Conflict, nothing changes (the patch
    // is shown with its values withheld).
    dev.write(
        "stale.yaml",
        v2.replace("  name: s\n", "  name: s\n  resourceVersion: \"1\"\n")
            .replace("dW5v", "ZHJlaQ=="),
    );
    let before = read(&dev, "s");
    assert_eq!(
        dev.kw(&["apply", "-f", "stale.yaml"]),
        (
            1,
            String::new(),
            "Error from server (Conflict): error when applying patch:\n\
             {\"data\":{\"a\":\"(redacted)\"},\"metadata\":{\"annotations\":{\"kubectl.kubernetes.io/last-applied-configuration\":\"(redacted)\"},\"resourceVersion\":\"1\"}}\n\
             to:\n\
             Resource: \"/v1, Resource=secrets\", GroupVersionKind: \"/v1, Kind=Secret\"\n\
             Name: \"s\", Namespace: \"default\"\n\
             for: \"stale.yaml\": Operation cannot be fulfilled on secrets \"s\": the object has been modified; please apply your changes to the latest version and try again\n"
                .into()
        )
    );
    assert_eq!(read(&dev, "s"), before);
    // The current resourceVersion is no conflict.
    dev.write(
        "fresh.yaml",
        v2.replace(
            "  name: s\n",
            &format!("  name: s\n  resourceVersion: \"{}\"\n", rv(&before)),
        )
        .replace("dW5v", "ZHJlaQ=="),
    );
    assert_eq!(
        dev.kw(&["apply", "-f", "fresh.yaml"]),
        (0, "secret/s configured\n".into(), String::new())
    );
    assert!(content(&read(&dev, "s")).starts_with("data={\"a\": \"drei\", \"other\": \"kept\"}"));
}

#[test]
fn apply_keeps_keys_set_by_create_and_the_string_data_quirk() {
    let dev = DevServer::start();
    dev.ok(&["create", "secret", "generic", "c", "--from-literal=x=1"]);
    dev.write(
        "c.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: c\nstringData:\n  p: one\n  q: two\n",
    );
    assert_eq!(
        dev.kw(&["apply", "-f", "c.yaml"]),
        (
            0,
            "secret/c configured\n".into(),
            format!("Warning: resource secrets/c is missing the {LAST_APPLIED} annotation which is required by keyward apply. keyward apply should only be used on resources created declaratively by either kubectl create --save-config, kubectl apply or keyward apply. The missing annotation will be patched automatically.\n")
        )
    );
    assert_eq!(
        content(&read(&dev, "c")),
        "data={\"p\": \"one\", \"q\": \"two\", \"x\": \"1\"} labels={} annotations={}"
    );
    // Dropping q from stringData leaves data.q (kubectl sends "q": null inside stringData,
    // which the live object does not have); dropping it from a later manifest's data would
    // remove it only if the last apply had it in data.
    dev.write(
        "c.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: c\nstringData:\n  p: uno\n",
    );
    assert_eq!(
        dev.kw(&["apply", "-f", "c.yaml"]),
        (0, "secret/c configured\n".into(), String::new())
    );
    assert_eq!(
        content(&read(&dev, "c")),
        "data={\"p\": \"uno\", \"q\": \"two\", \"x\": \"1\"} labels={} annotations={}"
    );
    // describe leaves the annotation (stringData in clear) out, as kubectl's does.
    let d = dev.ok(&["describe", "secret", "c"]);
    assert!(
        d.contains("Annotations:  <none>\n") && !d.contains("uno"),
        "{d}"
    );
}

/// Annotation values (and keys) where YAML and JSON writers differ: number-, bool-, null- and
/// date-looking strings, indicators, spaces, line breaks, control and non-ASCII characters,
/// long lines that fold, a key longer than go-yaml's 128-byte simple-key limit.
fn tricky_annotations() -> Value {
    let long_words = "lorem ipsum dolor sit amet ".repeat(8);
    let long_key = format!("{}.{}.example.com/k", "a".repeat(60), "b".repeat(60));
    let values = [
        "2",
        "-3",
        "+1",
        "0x1F",
        "0o17",
        "0b101",
        "017",
        "08",
        "1e3",
        "1E3",
        "1_000",
        ".5",
        "1.",
        "0.",
        "1e",
        "e1",
        ".inf",
        "-.Inf",
        ".nan",
        "yes",
        "Yes",
        "no",
        "on",
        "OFF",
        "y",
        "N",
        "true",
        "False",
        "~",
        "null",
        "Null",
        "",
        "2024-05-01",
        "2024-05-01T12:00:00Z",
        "2024-5-1 1:2:3",
        "2024-13-01",
        "12:30",
        "1:20:30.5",
        "<<",
        "=",
        "- x",
        "-x",
        "? x",
        "?x",
        ": x",
        "x: y",
        "x:y",
        "a #b",
        "a#b",
        "# c",
        "[x]",
        "{x}",
        "*x",
        "&x",
        "!x",
        "|x",
        "> x",
        "'q'",
        "\"dq\"",
        "%x",
        "@x",
        "`x",
        "---",
        "...",
        "--x",
        " lead",
        "trail ",
        " ",
        "a\tb",
        "\u{1}",
        "a\r\nb",
        "😀",
        "héllo wörld",
        "日本語",
        "a\u{2028}b",
        "a\u{85}b",
        "\u{feff}x",
        "\u{a0}x",
        "<b>&amp;</b>",
        "back\\slash",
        "multi\nline\n",
        "no\nfinal",
        "\nlead",
        "keep\n\n",
        "\n",
        "sp \nafter",
        "line\n  indented\n",
        "trailing\n ",
        "-",
        "0",
        "-0",
        "00",
        "1__0",
        "0x",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551616",
        "1e400",
    ];
    let mut a = serde_json::Map::new();
    for (i, v) in values.iter().enumerate() {
        a.insert(format!("example.com/v{i}"), json!(v));
    }
    a.insert("fold-plain".into(), json!(long_words));
    a.insert("fold-single".into(), json!(format!("# {long_words}")));
    a.insert(
        "fold-double".into(),
        json!(format!("\u{1} {long_words}  two  spaces {long_words}")),
    );
    a.insert("fold-none".into(), json!("x".repeat(200)));
    a.insert(long_key, json!("long key"));
    for k in [
        "key9", "key10", "A", "a", "b", "B", "1", "10", "9", "a-b", "a.b", "a_b", "y", "on",
    ] {
        a.insert(k.into(), json!(k));
    }
    Value::Object(a)
}

/// Asserts two renderings are the same bytes, naming the first line that differs.
fn same_bytes(got: &str, want: &str, what: &str) {
    if got == want {
        return;
    }
    let (g, w): (Vec<&str>, Vec<&str>) = (got.split('\n').collect(), want.split('\n').collect());
    let i = (0..g.len().max(w.len()))
        .find(|&i| g.get(i) != w.get(i))
        .unwrap_or(0);
    panic!(
        "{what}: line {} differs\nkeyward: {:?}\nkubectl: {:?}",
        i + 1,
        g.get(i),
        w.get(i)
    );
}

fn kubectl_render(kubectl: &Path, dev: &DevServer, json_text: &str, format: &str) -> String {
    dev.write("obj.json", json_text);
    let o = Command::new(kubectl)
        .args([
            "patch",
            "--local",
            "-f",
            "obj.json",
            "--type=merge",
            "-p",
            "{}",
            "-o",
            format,
        ])
        .current_dir(dev.dir.path())
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("run kubectl");
    assert!(
        o.status.success(),
        "{}: {}",
        kubectl.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn get_yaml_and_json_are_kubectls_bytes() {
    let dev = DevServer::start();
    let mut data = serde_json::Map::new();
    for k in [
        "key9", "key10", "-dash", ".dot", "_u", "A", "a", "1", "10", "9", "tls.crt",
    ] {
        data.insert(k.into(), json!("dg=="));
    }
    let manifest = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tricky", "labels": {"v": "1", "ok": "yes", "plain": "web"},
                     "annotations": tricky_annotations()},
        "data": data,
        "type": "example.com/x",
    });
    dev.write("t.json", manifest.to_string());
    dev.ok(&["apply", "-f", "t.json"]);
    dev.write(
        "u.json",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"u"},"data":{"k":"dg=="},"immutable":true}"#,
    );
    dev.ok(&["apply", "-f", "u.json"]);

    for kubectl in kubectls() {
        let k = kubectl.display().to_string();
        for name in ["tricky", "u"] {
            let json_out = dev.ok(&["get", "secret", name, "-o", "json"]);
            let what = format!("{name} -o json, {k}");
            same_bytes(
                &json_out,
                &kubectl_render(&kubectl, &dev, &json_out, "json"),
                &what,
            );
            let yaml_out = dev.ok(&["get", "secret", name, "-o", "yaml"]);
            let what = format!("{name} -o yaml, {k}");
            same_bytes(
                &yaml_out,
                &kubectl_render(&kubectl, &dev, &json_out, "yaml"),
                &what,
            );
        }
    }

    // A list: kubectl's `kind: List` wrapper around the same items. kubectl prints the items
    // of anything holding `items` one by one, so the list is rendered as one Secret holding
    // them under `itemz` (which sorts where `items` does), then renamed back.
    let list_json = dev.ok(&["get", "secrets", "-o", "json"]);
    let list: Value = serde_json::from_str(&list_json).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["metadata"], json!({"resourceVersion": ""}));
    let holder = json!({
        "apiVersion": "v1",
        "itemz": list["items"],
        "kind": "Secret",
        "metadata": {"name": "holder", "resourceVersion": ""},
    });
    let kubectl = kubectls().pop().expect("a kubectl");
    let rendered = kubectl_render(&kubectl, &dev, &holder.to_string(), "yaml")
        .replacen("\nitemz:\n", "\nitems:\n", 1)
        .replacen(
            "\nkind: Secret\nmetadata:\n  name: holder\n",
            "\nkind: List\nmetadata:\n",
            1,
        );
    same_bytes(
        &dev.ok(&["get", "secrets", "-o", "yaml"]),
        &rendered,
        "list",
    );
}

/// `tests/data/kubectl_recorder.py`: a stand-in kube-apiserver that serves discovery and the
/// Secrets it is given, and records what kubectl POSTs and PATCHes.
struct Recorder {
    child: std::process::Child,
    dir: tempfile::TempDir,
    server: String,
}

impl Recorder {
    fn start() -> Recorder {
        let python = crate::support::tools::require_python(&["json"]);
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kubectl_recorder.py");
        let child = Command::new(python)
            .arg(script)
            .arg(dir.path())
            .spawn()
            .expect("start the recorder");
        let port_file = dir.path().join("port");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !port_file.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "recorder did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let port = std::fs::read_to_string(port_file).unwrap();
        Recorder {
            child,
            dir,
            server: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Serves `object` as the live Secret `name`.
    fn set_live(&self, name: &str, object: &str) {
        std::fs::write(self.dir.path().join(format!("{name}.json")), object).unwrap();
    }

    /// The requests recorded since the last call (method, body).
    fn take(&self) -> Vec<(String, String)> {
        let path = self.dir.path().join("requests.jsonl");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["method"].as_str().unwrap().to_owned(),
                    v["body"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn apply(&self, kubectl: &Path, dev: &DevServer, file: &str) {
        let o = Command::new(kubectl)
            .args(["apply", "--validate=false", "-s", &self.server, "-f", file])
            .current_dir(dev.dir.path())
            .env("KUBECONFIG", "/dev/null")
            .output()
            .expect("run kubectl");
        assert!(
            o.status.success(),
            "{} apply: {}",
            kubectl.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The manifest object keyward applies for the single Secret in `text` (namespace default).
fn manifest_value(text: &str) -> Value {
    let mut v = keyward::manifest::parse_objects(text, "m").unwrap()[0]
        .1
        .clone();
    v["metadata"]["namespace"] = json!("default");
    v
}

/// Against the real kubectl's requests: the annotation it creates a Secret with is the one
/// keyward writes, and the three-way patch it sends for a changed manifest (against the live
/// object keyward holds, with a key another writer added) is the one keyward computes.
#[test]
fn kubectl_sends_what_keyward_applies() {
    let dev = DevServer::start();
    let rec = Recorder::start();
    let m1 = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\n  labels:\n    tier: web\n  annotations:\n    note: \"<b>&\\u00e9\"\nstringData:\n  a: one\n  b: two\ndata:\n  c: Mw==\n  d: NA==\n";
    dev.write("m1.yaml", m1);
    dev.ok(&["apply", "-f", "m1.yaml"]);
    let kubectl = kubectls().pop().expect("a kubectl");
    rec.apply(&kubectl, &dev, "m1.yaml");
    let reqs = rec.take();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].0, "POST");
    let posted: Value = serde_json::from_str(&reqs[0].1).unwrap();
    assert_eq!(
        posted["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap(),
        last_applied(&read(&dev, "app"))
    );

    other_writer(&dev, "app", |s| {
        s.data.insert("other".into(), b"kept".to_vec());
    });
    let live = dev.ok(&["get", "secret", "app", "-o", "json"]);
    rec.set_live("app", &live);
    let m2 = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app\n  annotations:\n    note: changed\nstringData:\n  a: uno\ndata:\n  c: Mw==\n";
    dev.write("m2.yaml", m2);
    rec.apply(&kubectl, &dev, "m2.yaml");
    let reqs = rec.take();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].0, "PATCH");
    let live: Value = serde_json::from_str(&live).unwrap();
    let ours = keyward::manifest::last_applied::three_way_patch(
        keyward::manifest::last_applied::original(&live).as_ref(),
        &keyward::manifest::last_applied::modified(&manifest_value(m2)),
        &live,
    );
    assert_eq!(
        keyward::manifest::gojson::compact(&Value::Object(ours)),
        reqs[0].1
    );

    // And keyward's own apply ends where kubectl's patch leads.
    dev.ok(&["apply", "-f", "m2.yaml"]);
    let theirs: serde_json::Map<String, Value> = serde_json::from_str(&reqs[0].1).unwrap();
    let want = keyward::manifest::last_applied::apply_patch(&live, &theirs);
    let got: Value =
        serde_json::from_str(&dev.ok(&["get", "secret", "app", "-o", "json"])).unwrap();
    assert_eq!(got["data"], want["data"]);
    assert_eq!(got["metadata"]["labels"], want["metadata"]["labels"]);
    assert_eq!(
        got["metadata"]["annotations"],
        want["metadata"]["annotations"]
    );
}

/// `keyward get secrets -w` prints what `kubectl get secrets -w` prints, with and without
/// `--output-watch-events`: the table's rows, each change's row lined up with the ones before
/// it (columns widen for a longer name, never shrink), no event type unless asked. Both watch
/// the same store at once; only AGE (the last column, which could tick between the two) is
/// left out of the comparison.
#[test]
fn get_watch_prints_kubectls_rows() {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;
    let dev = DevServer::start();
    let kubectl = kubectls().pop().unwrap();
    dev.ok(&["create", "secret", "generic", "short", "--from-literal=a=b"]);
    for (round, events) in [(0, false), (1, true)] {
        let extra: &[&str] = if events {
            &["--output-watch-events"]
        } else {
            &[]
        };
        let kubeconfig = dev.kubeconfig();
        let mut kc = Command::new(&kubectl)
            .args(
                [
                    &[
                        "--kubeconfig",
                        kubeconfig.to_str().unwrap(),
                        "get",
                        "secrets",
                        "-w",
                    ],
                    extra,
                ]
                .concat(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut kw = crate::support::binary::command(
            &[&["get", "secrets", "-w", "--server", &dev.server], extra].concat(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        // A watcher that prints less than expected is stopped after a minute: the read then
        // ends and the test fails instead of waiting forever.
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let pids = [kc.id(), kw.id()];
        let watchdog = std::thread::spawn(move || {
            if finished
                .recv_timeout(std::time::Duration::from_secs(60))
                .is_err()
            {
                for pid in pids {
                    let _ = Command::new("kill").arg(pid.to_string()).status();
                }
            }
        });
        let mut kc_lines = BufReader::new(kc.stdout.take().unwrap()).lines();
        let mut kw_lines = BufReader::new(kw.stdout.take().unwrap()).lines();
        let mut read = |n: usize| -> (Vec<String>, Vec<String>) {
            let take = |it: &mut dyn Iterator<Item = std::io::Result<String>>| {
                (0..n)
                    .map(|_| it.next().unwrap().unwrap())
                    .collect::<Vec<_>>()
            };
            (take(&mut kc_lines), take(&mut kw_lines))
        };
        // The list first (header and the rows there are), then each change.
        let mut seen = read(2 + round);
        let long = format!("a-much-longer-name-{round}");
        dev.ok(&["create", "secret", "generic", &long, "--from-literal=a=b"]);
        let more = read(1);
        seen.0.extend(more.0);
        seen.1.extend(more.1);
        let labelled = Command::new(&kubectl)
            .args([
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "label",
                "secret",
                "short",
            ])
            .arg(format!("round{round}=x"))
            .output()
            .unwrap();
        assert!(labelled.status.success(), "{labelled:?}");
        let more = read(1);
        seen.0.extend(more.0);
        seen.1.extend(more.1);
        let _ = done.send(());
        let _ = watchdog.join();
        let _ = kc.kill();
        let _ = kw.kill();
        let _ = (kc.wait(), kw.wait());
        let without_age = |lines: &[String]| -> Vec<String> {
            lines
                .iter()
                .map(|l| {
                    l.rsplit_once("   ")
                        .map_or(l.as_str(), |(rest, _)| rest)
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(
            without_age(&seen.1),
            without_age(&seen.0),
            "events {events}: {seen:?}"
        );
        assert_eq!(seen.1[0].starts_with("EVENT"), events);
    }
}

/// `keyward describe secret` prints kubectl's describe text: labels as `k=v` and annotations as
/// `k: v` (a long or multi-line value under its key, cut as kubectl cuts), the lines after the
/// first lined up under it, the data's sizes, never its values.
#[test]
fn describe_is_kubectls_text() {
    let dev = DevServer::start();
    let kubeconfig = dev.kubeconfig();
    dev.ok(&[
        "create",
        "secret",
        "generic",
        "desc",
        "--from-literal=a=secret-value",
        "--from-literal=bb=x",
    ]);
    let kubectl = |args: &[&str]| {
        let out = Command::new(kubectls().pop().unwrap())
            .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        // Go cuts a long annotation inside a character and prints the byte it ends on;
        // keyward prints U+FFFD there, which is what a terminal shows for it.
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    kubectl(&["label", "secret", "desc", "app=web", "tier=front"]);
    // Short, multi-line, long (cut to 138 bytes and "..."), and long with a multi-byte
    // character where Go cuts.
    let long = "z".repeat(300);
    let long_utf8 = format!("{}é{}", "y".repeat(137), "y".repeat(20));
    kubectl(&[
        "annotate",
        "secret",
        "desc",
        "note=hello",
        "owner=team a",
        "multi=first\nsecond line\n",
        &format!("long={long}"),
        &format!("utf={long_utf8}"),
    ]);
    // kubectl lists the data in Go's map order, which is random: compared as sorted lines,
    // keyward's own order (sorted) checked apart.
    let want = kubectl(&["describe", "secret", "desc"]);
    let got = dev.ok(&["describe", "secret", "desc"]);
    let (want_head, want_data) = want.split_once("====\n").unwrap();
    let (got_head, got_data) = got.split_once("====\n").unwrap();
    assert_eq!(got_head, want_head);
    fn sorted(t: &str) -> Vec<&str> {
        let mut l: Vec<&str> = t.lines().collect();
        l.sort_unstable();
        l
    }
    assert_eq!(sorted(got_data), sorted(want_data));
    assert_eq!(got_data, "a:   12 bytes\nbb:  1 bytes\n");
    assert!(!got.contains("secret-value"));
}
