//! `keyward get`'s kubectl output formats and `keyward delete`'s selections, against the real
//! kubectl on the same store: each command is run by kubectl (through the dev server's
//! Kubernetes API) and by keyward (gRPC), and what they print and whether they succeed must
//! match: JSONPath templates (fields, ranges, filters, unions, slices, recursive descent,
//! quoted text), `jsonpath-as-json`, custom columns, `-L`, `--show-labels`, `--no-headers`,
//! `--ignore-not-found`; `delete -l`, `--field-selector`, `--all`, `-A`. Errors kubectl finds
//! in a template are keyward's too (without kubectl's dump of the object, which holds the
//! Secret's values).

use std::process::Command;

use crate::support::DevServer;

/// The newest kubectl installed.
fn kubectl() -> std::path::PathBuf {
    (27..=33)
        .rev()
        .map(|m| std::path::PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{m}")))
        .find(|p| p.exists())
        .unwrap_or_else(crate::support::tools::kubectl)
}

/// (exit code, stdout, stderr) of kubectl with `args` against the dev server.
fn kc(dev: &DevServer, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(kubectl())
        .arg("--kubeconfig")
        .arg(dev.kubeconfig())
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The Secrets both run against: two in `default` (one labelled, one annotated with quotes),
/// one in `other`.
fn populate(dev: &DevServer) {
    for args in [
        &[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=password=S!B*d$zDsb=",
            "--from-literal=username=admin",
        ][..],
        &["create", "secret", "generic", "web", "--from-literal=a=b"],
        &[
            "create",
            "secret",
            "generic",
            "far",
            "-n",
            "other",
            "--from-literal=c=d",
        ],
    ] {
        dev.ok(args);
    }
    let (code, _, err) = kc(
        dev,
        &[
            "label",
            "secret",
            "web",
            "app=web",
            "tier=front",
            "app.kubernetes.io/name=site",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kc(
        dev,
        &["annotate", "secret", "db", "note=a \"quoted\" value"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kc(dev, &["annotate", "secret", "web", "cjk=中文字符 café"]);
    assert_eq!(code, 0, "{err}");
}

/// The AGE column's cells (`5s`, `2m3s`) as `AGE`, so that runs a second apart compare equal.
fn without_ages(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            let is_age = !w.is_empty()
                && w.chars().next().is_some_and(|c| c.is_ascii_digit())
                && w.chars().all(|c| c.is_ascii_digit() || "smhd".contains(c))
                && w.chars().any(|c| "smhd".contains(c));
            if is_age {
                "AGE"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn get_prints_kubectls_jsonpath_custom_columns_and_label_columns() {
    let dev = DevServer::start();
    populate(&dev);
    // Metadata only the Kubernetes API sets, which keyward.v1 carries read-only.
    let (code, _, err) = kc(
        &dev,
        &[
            "patch",
            "secret",
            "web",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["example.com/keep"],"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"owner","uid":"6b7c1d3e-0000-4000-8000-000000000001"}]}}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let cases: &[&[&str]] = &[
        &["get", "secret", "web", "-o", "yaml"],
        &["get", "secret", "web", "-o", "json"],
        &["get", "secret", "web", "-o", "yaml", "--show-managed-fields"],
        &["get", "secrets", "-o", "json", "--show-managed-fields"],
        &["get", "secrets", "-o", "yaml"],
        &["get", "secret", "web", "-o", "jsonpath={.metadata.managedFields[*].manager} {.metadata.finalizers} {.metadata.ownerReferences[0].name}"],
        &["get", "secrets", "-o", "custom-columns=N:.metadata.name,M:.metadata.managedFields[0].manager,F:.metadata.finalizers"],
        &["get", "secret", "db", "-o", "jsonpath={.data.password}"],
        &["get", "secret", "db", "-o", "jsonpath={.data}"],
        &["get", "secret", "db", "-o", "jsonpath={.metadata.annotations.note}"],
        &["get", "secret", "db", "-o", "jsonpath=name: {.metadata.name} ns {.metadata.namespace}"],
        &["get", "secret", "db", "-o", "jsonpath={.nothere}{.data.nothere}"],
        &["get", "secret", "db", "-o", "jsonpath={.kind} {\"a\\tb\"} {'x'}{\"\\n\"}"],
        &["get", "secret", "db", "web", "-o", "jsonpath={.kind} {.items[*].metadata.name}"],
        &["get", "secrets", "-o", "jsonpath={.items[*].metadata.name}"],
        &["get", "secrets", "-A", "-o", "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{\"\\t\"}{.type}{\"\\n\"}{end}TAIL{.kind}"],
        &["get", "secrets", "-o", "jsonpath={range .items[*]}[{.metadata.name}]{range .metadata.labels.app}<{@}>{end}{end}"],
        &["get", "secrets", "-o", "jsonpath={.items[?(@.metadata.name==\"db\")].data.username}"],
        &["get", "secrets", "-o", "jsonpath={.items[?(@.metadata.labels.app)].metadata.name} {.items[?(@.metadata.name<\"e\")].metadata.name}"],
        &["get", "secrets", "-o", "jsonpath={.items[-1:].metadata.name} {.items[0,1].metadata.name} {.items[*]['metadata.name']}"],
        &["get", "secrets", "-o", "jsonpath={..kind}"],
        &["get", "secrets", "-o", "jsonpath={.items[1].metadata.labels}"],
        &["get", "secrets", "-n", "empty", "-o", "jsonpath={.items}"],
        &["get", "secrets", "-o", "jsonpath-as-json={.items[*].metadata.name}"],
        &["get", "secret", "db", "-o", "jsonpath-as-json={.data}{.nothing}"],
        &["get", "secrets", "-o", "custom-columns=NAME:.metadata.name,TYPE:.type,APP:.metadata.labels.app"],
        &["get", "secrets", "-o", "custom-columns=N:metadata.name,KEYS:{.data},V:.data.password", "--no-headers"],
        &["get", "secrets", "-n", "empty", "-o", "custom-columns=A:.metadata.name"],
        &["get", "secrets", "-L", "app.kubernetes.io/name,app", "-L", "tier"],
        &["get", "secrets", "--show-labels", "-A"],
        &["get", "secrets", "--show-labels", "--no-headers"],
        &["get", "secret", "nope", "--ignore-not-found"],
        &["get", "secret", "nope", "-o", "jsonpath={.kind}", "--ignore-not-found"],
        &["get", "secret", "nope", "db", "--ignore-not-found", "-o", "name"],
        &["get", "secret", "nope", "--ignore-not-found", "-o", "json"],
        &["get", "secret", "nope", "nope2", "--ignore-not-found", "-o", "yaml"],
        &["get", "secrets", "-l", "nomatch=1", "--ignore-not-found"],
        &["get", "secrets", "-l", "nomatch=1", "--ignore-not-found", "-o", "custom-columns=N:.metadata.name"],
        &["get", "secrets", "-L", ""],
        &["get", "secrets", "-l", " ", "-o", "name"],
        &["get", "secrets", "-o", "custom-columns=N:.metadata.name,C:.metadata.annotations.cjk,T:.type"],
        &["get", "secret", "db", "-o", "jsonpath={\"\\101\"}{'\\''}{\"\\u00e9\\x41\"}"],
    ];
    for args in cases {
        let (kcode, kout, kerr) = kc(&dev, args);
        let (code, out, err) = dev.kw(args);
        assert_eq!(
            (code, without_ages(&out)),
            (kcode, without_ages(&kout)),
            "{args:?}\nkeyward stderr: {err}\nkubectl stderr: {kerr}"
        );
    }
    // `-n` before the verb, as kubectl takes it.
    for args in [
        &["-n", "other", "get", "secrets", "-o", "name"][..],
        &["--namespace=other", "get", "secrets", "-o", "name"],
    ] {
        assert_eq!(dev.kw(args).1, kc(&dev, args).1, "{args:?}");
        assert_eq!(dev.kw(args).1, "secret/far\n");
    }
    // The values are printed: keyward's stdout holds the decoded password's base64.
    assert_eq!(
        dev.ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]),
        "UyFCKmQkekRzYj0="
    );
}

#[test]
fn template_errors_are_kubectls_without_the_object() {
    let dev = DevServer::start();
    populate(&dev);
    let cases: &[(&[&str], &str)] = &[
        (&["get", "secrets", "-o", "jsonpath={.items[5].metadata.name}"], "error: error executing jsonpath \"{.items[5].metadata.name}\": Error executing template: array index out of bounds: index 5, length 2"),
        (&["get", "secrets", "-o", "jsonpath={.items[1:0]}"], "Error executing template: starting index 1 is greater than ending index 0"),
        (&["get", "secrets", "-o", "jsonpath={end}"], "Error executing template: not in range, nothing to end"),
        (&["get", "secret", "db", "-o", "jsonpath={.kind[0]}"], "Error executing template: string is not array or slice"),
        (&["get", "secret", "db", "-o", "jsonpath={.metadata.name"], "error parsing jsonpath {.metadata.name, unclosed action"),
        (&["get", "secret", "db", "-o", "jsonpath="], "template format specified but no template given"),
        (&["get", "secret", "db", "-o", "custom-columns=A:.metadata.name,B"], "unexpected custom-columns spec: B, expected <header>:<json-path-expr>"),
        (&["get", "secret", "db", "-o", "custom-columns="], "custom-columns format specified but no custom columns given"),
        (&["get", "secret", "db", "-o", "foo"], "unable to match a printer suitable for the output format \"foo\""),
        (&["get", "secret", "db", "-o", "name", "--show-labels"], "error: --show-labels option cannot be used with name printer"),
        (&["get", "secrets", "-o", "yaml", "--show-labels"], "error: --show-labels option cannot be used with yaml printer"),
        (&["get", "secrets", "-o", "jsonpath={.kind}", "--show-labels"], "error: --show-labels option cannot be used with jsonpath={.kind} printer"),
        (&["get", "secret", "db", "-o", "jsonpath={\"\\'\"}"], "unquote string \"\\'\" error invalid syntax"),
        (&["get", "secret", "db", "-o", "jsonpath={\"\\\\\"}"], "unterminated quoted string"),
    ];
    for (args, message) in cases {
        let (kcode, _, kerr) = kc(&dev, args);
        assert_ne!(kcode, 0, "kubectl {args:?}");
        assert!(kerr.contains(message), "kubectl {args:?}: {kerr}");
        let (code, out, err) = dev.kw(args);
        assert_eq!(code, kcode, "{args:?}: {out}");
        assert!(err.contains(message), "{args:?}: {err}");
        // kubectl follows an execution error with the object, values and all; keyward does not.
        assert!(
            !err.contains("UyFC") && !err.contains("YWRtaW4"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn delete_selects_as_kubectl_does() {
    // Each case runs on the same Secrets: kubectl's run, then keyward's.
    let cases: &[&[&str]] = &[
        &["delete", "secret", "-l", "app=web"],
        &["delete", "secret", "-l", "app=none"],
        &["delete", "secrets", "--field-selector", "metadata.name=db"],
        &["delete", "secrets", "--all"],
        &["delete", "secrets", "--all", "-A"],
        &["delete", "secret", "nope", "--ignore-not-found"],
        &["delete", "secret", "nope", "db", "--ignore-not-found"],
        &["delete", "secret", "nope"],
        &["delete", "secret", "db", "-l", "app=web"],
        &["delete", "secrets", "--all", "-l", "app=web"],
        &["delete", "secret", "db", "-A"],
        &["delete", "secrets"],
        // An empty selector selects nothing: not a silent --all.
        &["delete", "secrets", "-l", ""],
        &["delete", "secrets", "-l", " ", "-A"],
        &["delete", "secrets", "--field-selector", ""],
        &["delete", "secret", "db", "-l", ""],
        &["delete", "secrets", "--all=true"],
        &["delete", "secrets", "--all=false"],
    ];
    let dev = DevServer::start();
    // Back to the same Secrets (kubectl clears them: it is the reference here).
    let reset = || {
        let (code, _, err) = kc(&dev, &["delete", "secrets", "--all", "-A"]);
        assert_eq!(code, 0, "{err}");
        populate(&dev);
    };
    for args in cases {
        reset();
        let kubectl = kc(&dev, args);
        let list = [
            "get",
            "secrets",
            "-A",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ];
        let left_by_kubectl = dev.ok(&list);
        reset();
        let keyward = dev.kw(args);
        assert_eq!(dev.ok(&list), left_by_kubectl, "{args:?}: what is left");
        assert_eq!(
            keyward.0, kubectl.0,
            "{args:?}: exit code; {keyward:?} {kubectl:?}"
        );
        assert_eq!(keyward.1, kubectl.1, "{args:?}: stdout");
        // kubectl's own error lines (keyward's are the same text).
        for line in kubectl
            .2
            .lines()
            .filter(|l| l.starts_with("error") || l.starts_with("Error"))
        {
            assert!(
                keyward.2.contains(line),
                "{args:?}: {line:?} in {:?}",
                keyward.2
            );
        }
    }
}

/// What a watch printed within a minute: the command (kubectl's or keyward's) is stopped once
/// `done` holds for its output so far, or after 60 s.
fn watch_output(mut cmd: Command, done: impl Fn(&str) -> bool) -> String {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let mut child = cmd
        .stdout(std::fs::File::create(&path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut out = String::new();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        out.clear();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        if done(&out) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    out
}

/// `get -w --output-watch-events` through JSON, YAML, JSONPath and custom columns prints each
/// event as kubectl does: `{type, object}` (JSON on one line, type first), the templates run on
/// the event. kubectl's objects carry managedFields (the Kubernetes API's do, keyward.v1's do
/// not), which are left out of the comparison.
#[test]
fn get_watch_events_print_as_kubectls() {
    let dev = DevServer::start();
    populate(&dev);
    let kubeconfig = dev.kubeconfig();
    let cases: &[(&str, usize)] = &[
        ("json", 2),
        ("yaml", 2),
        ("jsonpath={.type} {.object.metadata.name}{\"\\n\"}", 2),
        (
            "custom-columns=T:.type,N:.object.metadata.name,K:.object.data.username",
            2,
        ),
        ("jsonpath={.metadata.name}{.object.kind}{\"\\n\"}", 2),
    ];
    for &(output, events) in cases {
        let args = [
            "get",
            "secrets",
            "-w",
            "--output-watch-events",
            "-o",
            output,
        ];
        // Done once both Secrets' events are out (a template prints a line per event; the
        // columns a header first).
        let lines = events + usize::from(output.starts_with("custom-columns"));
        let enough = |out: &str| {
            if output == "yaml" {
                out.matches("\ntype: ADDED\n").count() >= events
            } else {
                out.lines().count() >= lines
            }
        };
        let mut kc = Command::new(kubectl());
        kc.arg("--kubeconfig").arg(&kubeconfig).args(args);
        let theirs = watch_output(kc, enough);
        let mut kw = crate::support::binary::command(&args);
        kw.arg("--server").arg(&dev.server);
        let ours = watch_output(kw, enough);
        let theirs = match output {
            "json" => theirs
                .lines()
                .map(|l| {
                    let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                    let meta = v["object"]["metadata"].as_object_mut().unwrap();
                    assert!(meta.remove("managedFields").is_some(), "{l}");
                    keyward::manifest::gojson::compact_event(
                        v["type"].as_str().unwrap(),
                        &v["object"],
                    ) + "\n"
                })
                .collect::<String>(),
            // managedFields' lines: from `    managedFields:` to the next key of metadata.
            "yaml" => {
                let mut skipping = false;
                let mut kept = String::new();
                for line in theirs.lines() {
                    if line == "    managedFields:" {
                        skipping = true;
                        continue;
                    }
                    if skipping && (line.starts_with("    - ") || line.starts_with("     ")) {
                        continue;
                    }
                    skipping = false;
                    kept.push_str(line);
                    kept.push('\n');
                }
                kept
            }
            _ => theirs,
        };
        assert_eq!(ours, theirs, "-o {output}");
        if output == "json" {
            assert!(ours.starts_with("{\"type\":\"ADDED\",\"object\":{\"apiVersion\":\"v1\""));
        }
    }
}

/// `create secret ... --dry-run=client -o yaml|json` prints what kubectl prints: the object the
/// client built (`creationTimestamp: null`, the namespace only with `-n`, the type only when
/// given), JSON in the typed object's field order.
#[test]
fn create_dry_run_prints_kubectls_object() {
    let dev = DevServer::start();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["web.example.com".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    dev.write("c.pem", cert.pem());
    dev.write("k.pem", key.serialize_pem());
    let cases: &[&[&str]] = &[
        &["generic", "s1", "--from-literal=a=b"],
        &["generic", "s1", "--from-literal=a=b", "-n", "foo"],
        &["generic", "s1", "--from-literal=a=b", "--type=x/y<&>"],
        &["generic", "s1", "--from-literal=a=b", "--type="],
        &["generic", "", "--from-literal=a=b"],
        &["tls", "t", "--cert=c.pem", "--key=k.pem"],
        &[
            "docker-registry",
            "d",
            "--docker-server=s",
            "--docker-username=u",
            "--docker-password=p",
        ],
    ];
    for case in cases {
        for o in ["yaml", "json"] {
            let args = [
                &["create", "secret"][..],
                case,
                &["--dry-run=client", "-o", o],
            ]
            .concat();
            let ours = dev.kw(&args);
            let o = Command::new(kubectl())
                .arg("--kubeconfig")
                .arg(dev.kubeconfig())
                .args(&args)
                .current_dir(dev.path(""))
                .output()
                .unwrap();
            let theirs = (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            );
            assert_eq!((ours.0, ours.1), theirs, "{args:?}: {}", ours.2);
        }
    }
}
