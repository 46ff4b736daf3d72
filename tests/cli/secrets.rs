//! The kubectl-shaped commands (create, get, describe, edit, delete, history, rollback) against
//! a real `keyward dev` in a temp dir. Outputs are compared whole (stdout, stderr, exit code),
//! with only the values that differ per run (uid, timestamps, revisions) normalised.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{normalise, DevServer as Dev};

#[test]
fn create_generic_get_describe_delete() {
    let dev = Dev::start();
    fs::write(dev.path("ca.pem"), "CA DATA\n").unwrap();
    fs::create_dir(dev.path("dir")).unwrap();
    fs::write(dev.path("dir/a.txt"), "aaa").unwrap();
    fs::write(dev.path("dir/.hidden"), "hh").unwrap();
    fs::create_dir(dev.path("dir/sub")).unwrap();
    fs::write(
        dev.path("app.env"),
        "# comment\nMODE=prod\n\nURL=https://x?a=b\n",
    )
    .unwrap();
    let out = dev.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=user=admin",
        "--from-literal=password=s3=cret",
        &format!("--from-file=root-ca={}", dev.path("ca.pem").display()),
    ]);
    assert_eq!(out, "secret/db created\n");
    dev.ok(&[
        "create",
        "secret",
        "generic",
        "files",
        &format!("--from-file={}", dev.path("dir").display()),
        "-n",
        "team",
    ]);
    // (kubectl refuses --from-env-file with --from-file or --from-literal.)
    dev.ok(&[
        "create",
        "secret",
        "generic",
        "envs",
        &format!("--from-env-file={}", dev.path("app.env").display()),
        "-n",
        "other",
    ]);

    let (code, out, err) = dev.kw(&["get", "secrets"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("NAME   TYPE     DATA   AGE"), "{out}");
    assert!(lines[1].starts_with("db     Opaque   3      "), "{out}");
    let out = dev.ok(&["get", "secrets", "-A"]);
    assert!(
        out.lines()
            .next()
            .unwrap()
            .starts_with("NAMESPACE   NAME    TYPE     DATA   AGE"),
        "{out}"
    );
    assert!(out.contains("team        files   Opaque   2"), "{out}");
    assert!(out.contains("other       envs    Opaque   2"), "{out}");
    // kubectl's Secret printer has no wide columns: `-o wide` is the table.
    let wide = dev.ok(&["get", "secret", "db", "-o", "wide"]);
    let lines: Vec<&str> = wide.lines().collect();
    assert_eq!(lines.len(), 2, "{wide}");
    assert_eq!(lines[0].trim_end(), "NAME   TYPE     DATA   AGE", "{wide}");
    assert!(lines[1].starts_with("db     Opaque   3      "), "{wide}");
    assert_eq!(
        dev.ok(&["get", "secrets", "-o", "name", "-n", "team"]),
        "secret/files\n"
    );

    let yaml = dev.ok(&["get", "secret", "db", "-o", "yaml"]);
    assert_eq!(
        normalise(&yaml),
        "apiVersion: v1\ndata:\n  password: czM9Y3JldA==\n  root-ca: Q0EgREFUQQo=\n  user: YWRtaW4=\nkind: Secret\nmetadata:\n  creationTimestamp: TIME\n  name: db\n  namespace: default\n  resourceVersion: \"RV\"\n  uid: UID\ntype: Opaque\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&dev.ok(&["get", "secret/db", "-o", "json"])).unwrap();
    assert_eq!(json["data"]["user"], "YWRtaW4=");
    assert!(json.get("stringData").is_none());
    assert_eq!(
        dev.ok(&["get", "secret", "db", "--key", "password"]),
        "s3=cret"
    );
    assert_eq!(
        dev.ok(&["get", "secret", "files", "-n", "team", "--key", ".hidden"]),
        "hh"
    );
    assert_eq!(
        dev.ok(&["get", "secret", "envs", "-n", "other", "--key", "URL"]),
        "https://x?a=b"
    );

    let d = dev.ok(&["describe", "secret", "db"]);
    assert_eq!(
        d,
        "Name:         db\nNamespace:    default\nLabels:       <none>\nAnnotations:  <none>\n\nType:  Opaque\n\nData\n====\npassword:  7 bytes\nroot-ca:   8 bytes\nuser:      5 bytes\n"
    );
    assert!(!d.contains("admin") && !d.contains("s3=cret"));

    // Errors read like kubectl's.
    assert_eq!(
        dev.kw(&["get", "secret", "nope"]),
        (
            1,
            String::new(),
            "Error from server (NotFound): secrets \"nope\" not found\n".into()
        )
    );
    let (code, _, err) = dev.kw(&["create", "secret", "generic", "db", "--from-literal=a=b"]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "Error from server (AlreadyExists): secrets \"db\" already exists\n"
        )
    );
    let (code, _, err) = dev.kw(&["create", "secret", "generic", "Bad_Name"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("The Secret \"Bad_Name\" is invalid: metadata.name: Invalid value"),
        "{err}"
    );
    let (code, _, err) = dev.kw(&["create", "secret", "generic", "x", "--from-literal=novalue"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "error: --from-literal: \"novalue\" is not KEY=VALUE\n")
    );
    let (code, _, err) = dev.kw(&[
        "create",
        "secret",
        "generic",
        "x",
        "--from-literal=bad/key=v",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: --from-literal: data[bad/key]: Invalid value"),
        "{err}"
    );
    // A key given twice, by any mix of sources, is refused as kubectl refuses it.
    let dir = dev.path("keys");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a"), "from-dir").unwrap();
    let env = dev.path("dup.env");
    fs::write(&env, "A=1\nA=2\n").unwrap();
    let dir_flag = format!("--from-file={}", dir.display());
    let env_flag = format!("--from-env-file={}", env.display());
    for (sources, key) in [
        (&["--from-literal=a=1", "--from-literal=a=2"][..], "a"),
        (&[&dir_flag, "--from-literal=a=lit"], "a"),
        (&[&env_flag], "A"),
    ] {
        let args = [&["create", "secret", "generic", "dup"], sources].concat();
        let (code, _, err) = dev.kw(&args);
        assert_eq!(
            (code, err.as_str()),
            (
                1,
                format!("error: cannot add key {key}, another key by that name already exists\n")
                    .as_str()
            ),
            "{sources:?}"
        );
    }
    assert_eq!(
        dev.kw(&["get", "secret", "dup"]).0,
        1,
        "nothing was created"
    );
    // `--from-file` as kubectl parses it.
    for (spec, want) in [
        ("=f", "key name for file path f missing"),
        ("k=", "file path for key name k missing"),
        ("k=a=b", "key names or file paths cannot contain '='"),
    ] {
        let (code, _, err) = dev.kw(&["create", "secret", "generic", "ff", "--from-file", spec]);
        assert_eq!(
            (code, err.as_str()),
            (1, format!("error: --from-file: {want}\n").as_str()),
            "{spec}"
        );
    }
    let (code, _, err) = dev.kw(&["get", "configmaps"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("doesn't have a resource type \"configmaps\""),
        "{err}"
    );
    let (code, _, err) = dev.kw(&["get", "secret", "db", "--key", "missing"]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "error: secret \"db\" has no key \"missing\" (keys: password, root-ca, user)\n"
        )
    );
    // Names all in `secret/NAME` form or none, as kubectl asks; --key prints one value only.
    let mixed = "error: there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'keyward get resource/<resource_name>' instead of 'keyward get resource resource/<resource_name>'\n";
    for args in [
        &["get", "secret/db", "dry"][..],
        &["get", "secret", "secret/db"],
    ] {
        assert_eq!(
            dev.kw(args),
            (1, String::new(), mixed.to_owned()),
            "{args:?}"
        );
    }
    assert_eq!(
        dev.ok(&["get", "secret/db", "secrets/db", "-o", "name"]),
        "secret/db\nsecret/db\n"
    );
    for args in [
        &["get", "secret", "db", "--key", "user", "-o", "yaml"][..],
        &["get", "secret", "db", "--key", "user", "-w"],
    ] {
        let (code, _, err) = dev.kw(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains("cannot be used with"), "{args:?}: {err}");
    }
    let (_, _, err) = dev.kw(&["get", "secrets", "-n", "empty"]);
    assert_eq!(err, "No resources found in empty namespace.\n");

    // --dry-run=client prints the manifest and writes nothing.
    let out = dev.ok(&[
        "create",
        "secret",
        "generic",
        "dry",
        "--from-literal=k=v",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    assert_eq!(out, "apiVersion: v1\ndata:\n  k: dg==\nkind: Secret\nmetadata:\n  creationTimestamp: null\n  name: dry\n");
    assert_eq!(dev.kw(&["get", "secret", "dry"]).0, 1);

    // An empty precondition (a script's unset variable) is refused, not read as none.
    let (code, _, err) = dev.kw(&["delete", "secret", "db", "--resource-version", ""]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: a value is required for '--resource-version <RV>'"),
        "{err}"
    );
    let (code, out, err) = dev.kw(&["delete", "secret", "db", "ghost"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            1,
            "secret \"db\" deleted\n",
            "Error from server (NotFound): secrets \"ghost\" not found\n"
        )
    );
}

#[test]
fn docker_registry_and_tls() {
    let dev = Dev::start();
    dev.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "--docker-server=registry.example.com",
        "--docker-username=ci",
        "--docker-password=hunter2",
        "--docker-email=ci@example.com",
    ]);
    let cfg = dev.ok(&["get", "secret", "regcred", "--key", ".dockerconfigjson"]);
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let entry = &v["auths"]["registry.example.com"];
    assert_eq!(entry["username"], "ci");
    assert_eq!(entry["password"], "hunter2");
    assert_eq!(entry["email"], "ci@example.com");
    assert_eq!(entry["auth"], "Y2k6aHVudGVyMg=="); // base64("ci:hunter2")
    assert!(dev
        .ok(&["get", "secret", "regcred"])
        .contains("kubernetes.io/dockerconfigjson   1"));
    for empty in ["--docker-server", "--docker-username", "--docker-password"] {
        let flags = [
            ("--docker-server", "r.example"),
            ("--docker-username", "ci"),
            ("--docker-password", "pw"),
        ]
        .map(|(flag, v)| format!("{flag}={}", if flag == empty { "" } else { v }));
        let mut args = vec!["create", "secret", "docker-registry", "empty"];
        args.extend(flags.iter().map(String::as_str));
        let (code, _, err) = dev.kw(&args);
        assert_eq!(
            (code, err.as_str()),
            (1, "error: the combination of --docker-username, --docker-password and --docker-server is required (none may be empty)\n"),
            "{empty}"
        );
    }
    assert_eq!(dev.kw(&["get", "secret", "empty"]).0, 1);

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["web.example.com".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    fs::write(dev.path("tls.crt"), cert.pem()).unwrap();
    fs::write(dev.path("tls.key"), key.serialize_pem()).unwrap();
    fs::write(dev.path("other.key"), other.serialize_pem()).unwrap();
    fs::write(dev.path("junk"), "not pem").unwrap();
    let c = dev.path("tls.crt").display().to_string();
    let k = dev.path("tls.key").display().to_string();
    assert_eq!(
        dev.ok(&["create", "secret", "tls", "web", "--cert", &c, "--key", &k]),
        "secret/web created\n"
    );
    assert_eq!(
        dev.ok(&["get", "secret", "web", "--key", "tls.crt"]),
        cert.pem()
    );
    let (code, _, err) = dev.kw(&[
        "create",
        "secret",
        "tls",
        "web2",
        "--cert",
        &c,
        "--key",
        &dev.path("other.key").display().to_string(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: tls: private key does not match public key"),
        "{err}"
    );
    let (code, _, err) = dev.kw(&[
        "create",
        "secret",
        "tls",
        "web3",
        "--cert",
        &dev.path("junk").display().to_string(),
        "--key",
        &k,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no PEM block found"), "{err}");
}

fn editor_script(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
    p.display().to_string()
}

#[test]
fn edit_with_a_scripted_editor() {
    let dev = Dev::start();
    dev.ok(&[
        "create",
        "secret",
        "generic",
        "app",
        "--from-literal=mode=dev",
    ]);
    // Unchanged file: cancelled.
    let noop = editor_script(dev.dir.path(), "noop.sh", "true");
    let (code, out, err) = dev.kw_env(&["edit", "secret", "app"], &[("EDITOR", &noop)]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "", "Edit cancelled, no changes made.\n")
    );
    // A real change: mode=dev (ZGV2) becomes prod (cHJvZA==).
    let change = editor_script(
        dev.dir.path(),
        "change.sh",
        "sed -i 's/ZGV2/cHJvZA==/' \"$1\"",
    );
    let (code, out, _) = dev.kw_env(&["edit", "secret", "app"], &[("EDITOR", &change)]);
    assert_eq!((code, out.as_str()), (0, "secret/app edited\n"));
    assert_eq!(dev.ok(&["get", "secret", "app", "--key", "mode"]), "prod");
    // $VISUAL is used when $EDITOR is unset.
    let (code, out, _) = dev.kw_env(
        &["edit", "secret", "app"],
        &[
            ("EDITOR", ""),
            (
                "VISUAL",
                &editor_script(
                    dev.dir.path(),
                    "v.sh",
                    "sed -i 's/cHJvZA==/c3RhZ2U=/' \"$1\"",
                ),
            ),
        ],
    );
    assert_eq!((code, out.as_str()), (0, "secret/app edited\n"));
    // An invalid edit reopens the file with the error on top; the second pass fixes it.
    let state = dev.path("pass");
    let fix = editor_script(
        dev.dir.path(),
        "fix.sh",
        &format!(
            "if [ ! -f {s} ]; then touch {s}; sed -i 's/^type: Opaque/type: example.com\\/other/' \"$1\"; else grep -q 'type: Invalid value' \"$1\"; cp \"$1\" {s}.seen; sed -i 's/^type: example.com\\/other/type: Opaque/; s/c3RhZ2U=/ZmluYWw=/' \"$1\"; fi",
            s = state.display()
        ),
    );
    let (code, out, err) = dev.kw_env(&["edit", "secret", "app"], &[("EDITOR", &fix)]);
    assert_eq!((code, out.as_str()), (0, "secret/app edited\n"), "{err}");
    let seen = fs::read_to_string(format!("{}.seen", state.display())).unwrap();
    assert!(
        seen.starts_with("# Please edit the object below."),
        "{seen}"
    );
    assert!(seen.contains("# The edited file had a problem:\n# The Secret \"app\" is invalid: type: Invalid value"), "{seen}");
    assert_eq!(dev.ok(&["get", "secret", "app", "--key", "mode"]), "final");
    // A concurrent change while editing is a conflict, not an overwrite.
    let server = dev.server.clone();
    let racer = editor_script(
        dev.dir.path(),
        "race.sh",
        &format!(
            "{bin} create secret generic tmp --from-literal=a=b --server {server} >/dev/null\n{bin} delete secret app --server {server} >/dev/null\n{bin} create secret generic app --from-literal=mode=theirs --server {server} >/dev/null\nsed -i 's/ZmluYWw=/bWluZQ==/' \"$1\"",
            bin = crate::support::bin()
        ),
    );
    let (code, _, err) = dev.kw_env(&["edit", "secret", "app"], &[("EDITOR", &racer)]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("Error from server (Conflict)")
            || err.starts_with("Error from server (NotFound)"),
        "{err}"
    );
    assert_eq!(dev.ok(&["get", "secret", "app", "--key", "mode"]), "theirs");
    // Immutable Secrets refuse data changes.
    dev.ok(&[
        "create",
        "secret",
        "generic",
        "frozen",
        "--from-literal=k=v",
        "--immutable",
    ]);
    let freeze = editor_script(dev.dir.path(), "freeze.sh", "if grep -q 'data: Forbidden' \"$1\"; then : > \"$1\"; else sed -i 's/dg==/dzI=/' \"$1\"; fi");
    let (code, _, err) = dev.kw_env(&["edit", "secret", "frozen"], &[("EDITOR", &freeze)]);
    assert_eq!(
        (code, err.as_str()),
        (0, "Edit cancelled, saved file was empty.\n")
    );
    assert_eq!(dev.ok(&["get", "secret", "frozen", "--key", "k"]), "v");
    // The same invalid edit saved twice stops the edit, as kubectl does (not an endless loop).
    let calls = dev.path("calls");
    let stubborn = editor_script(
        dev.dir.path(),
        "stubborn.sh",
        &format!(
            "echo call >> {}\nprintf 'apiVersion: v1\\nkind: Secret\\nmetadata:\\n  name: frozen\\ndata:\\n  k: \"!!notb64\"\\n' > \"$1\"",
            calls.display()
        ),
    );
    let (code, _, err) = dev.kw_env(&["edit", "secret", "frozen"], &[("EDITOR", &stubborn)]);
    assert_eq!(
        (code, err.as_str()),
        (1, "error: Edit cancelled, no valid changes were saved.\n")
    );
    assert_eq!(fs::read_to_string(&calls).unwrap(), "call\ncall\n");
    assert_eq!(dev.ok(&["get", "secret", "frozen", "--key", "k"]), "v");
}

#[test]
fn history_and_rollback() {
    let dev = Dev::start();
    dev.ok(&["create", "secret", "generic", "h", "--from-literal=v=1"]);
    let bump = |v: &str| {
        let script = editor_script(
            dev.dir.path(),
            &format!("b{v}.sh"),
            &format!("sed -i 's/^  v: .*/  v: {}/' \"$1\"", base64_of(v)),
        );
        let (code, _, err) = dev.kw_env(&["edit", "secret", "h"], &[("EDITOR", &script)]);
        assert_eq!(code, 0, "{err}");
    };
    bump("2");
    bump("3");
    let out = dev.ok(&["history", "secret", "h"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("REVISION   TIME") && lines[0].ends_with("CHANGE    DATA   KEYS"),
        "{out}"
    );
    assert!(
        lines[1].contains("updated") && lines[3].contains("created"),
        "{out}"
    );
    let first_rev = lines[3].split_whitespace().next().unwrap().to_owned();
    let out = dev.ok(&["rollback", "secret", "h", "--to-revision", &first_rev]);
    assert!(
        out.starts_with(&format!("secret/h rolled back to revision {first_rev}")),
        "{out}"
    );
    assert_eq!(dev.ok(&["get", "secret", "h", "--key", "v"]), "1");
    let (code, _, err) = dev.kw(&["rollback", "secret", "h", "--to-revision", "999999"]);
    assert_eq!(code, 1);
    assert!(err.contains("revision: Invalid value: 999999"), "{err}");
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn get_watch_streams_changes() {
    use std::io::{BufRead, BufReader};
    let dev = Dev::start();
    dev.ok(&[
        "create",
        "secret",
        "generic",
        "before",
        "--from-literal=k=v",
    ]);
    let mut child = Command::new(crate::support::bin())
        .args(["get", "secrets", "--watch", "--server", &dev.server])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("a line from --watch")
    };
    assert!(next().starts_with("NAME"));
    assert!(next().starts_with("before "));
    dev.ok(&[
        "create",
        "secret",
        "generic",
        "during",
        "--from-literal=k=v",
    ]);
    // kubectl's rows: no event type (that is --output-watch-events), lined up with the list's.
    let line = next();
    assert!(line.starts_with("during   Opaque   1      "), "{line}");
    dev.ok(&["delete", "secret", "before"]);
    let line = next();
    assert!(line.starts_with("before   Opaque   1      "), "{line}");
    let _ = child.kill();
    let _ = child.wait();
}

/// `get secrets` lists in pages (`--chunk-size`, 500 by default as kubectl's), every page at one
/// revision: any page size gives the same list as one request, in every output.
#[test]
fn get_lists_in_chunks_like_one_request() {
    let dev = Dev::start();
    for i in 0..7 {
        dev.ok(&[
            "create",
            "secret",
            "generic",
            &format!("s{i}"),
            &format!("--from-literal=v={i}"),
        ]);
    }
    dev.ok(&[
        "create",
        "secret",
        "generic",
        "other",
        "-n",
        "kube-system",
        "--from-literal=v=x",
    ]);
    // (The table's AGE column could tick between two calls.)
    for output in ["name", "json", "yaml"] {
        for scope in [&["-A"][..], &["-n", "default"][..]] {
            let whole = dev.ok(&[
                &["get", "secrets", "-o", output, "--chunk-size", "0"],
                scope,
            ]
            .concat());
            for chunk in ["1", "2", "3", "500"] {
                let paged = dev.ok(&[
                    &["get", "secrets", "-o", output, "--chunk-size", chunk],
                    scope,
                ]
                .concat());
                assert_eq!(paged, whole, "{output} {scope:?} {chunk}");
            }
        }
    }
    let names = dev.ok(&["get", "secrets", "-A", "-o", "name", "--chunk-size", "2"]);
    assert_eq!(names.lines().count(), 8, "{names}");
    let (code, _, err) = dev.kw(&["get", "secrets", "--chunk-size=-1"]);
    assert!(code != 0 && err.contains("--chunk-size"), "{err}");
}

/// Names select by themselves, in one namespace: with a label or field selector, or with `-A`,
/// `get` refuses as kubectl does (a selector that matched nothing read as "it exists" before).
#[test]
fn get_by_name_refuses_selectors_and_all_namespaces() {
    let dev = Dev::start();
    dev.ok(&["create", "secret", "generic", "named", "--from-literal=k=v"]);
    for (args, words) in [
        (
            &["-l", "team=x"][..],
            "name cannot be provided when a selector is specified",
        ),
        (
            &["--field-selector", "metadata.name=x"][..],
            "name cannot be provided when a selector is specified",
        ),
        (
            &["-l", "team=x", "-w"][..],
            "name cannot be provided when a selector is specified",
        ),
        (
            &["-A"][..],
            "a resource cannot be retrieved by name across all namespaces",
        ),
        (
            &["-A", "-l", "team=x"][..],
            "name cannot be provided when a selector is specified",
        ),
    ] {
        let (code, out, err) = dev.kw(&[&["get", "secret", "named"], args].concat());
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert_eq!(err.trim(), format!("error: {words}"), "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    // Several names, some missing: what was found is printed, then an error for each missing
    // one (kubectl's output), and the exit code is 1.
    let (code, out, err) = dev.kw(&["get", "secrets", "gone", "named", "missing", "-o", "name"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            1,
            "secret/named\n",
            "Error from server (NotFound): secrets \"gone\" not found\nError from server (NotFound): secrets \"missing\" not found\n"
        )
    );
}

/// `--from-env-file` as kubectl reads it (`processEnvFileLine`), and its other rules: a byte
/// order mark dropped, keys held to the environment variable name rule, a bare key taking its
/// value from the environment, no mixing with `--from-file` or `--from-literal`; and a client
/// dry run without `-o` says what it would do, never printing the values.
#[test]
fn env_files_and_client_dry_runs_as_kubectl() {
    let dev = Dev::start();
    let data = |file: &str, text: &[u8]| {
        fs::write(dev.path(file), text).unwrap();
        let flag = format!("--from-env-file={}", dev.path(file).display());
        let args = [
            "create",
            "secret",
            "generic",
            "e",
            &flag,
            "--dry-run=client",
            "-o",
            "json",
        ];
        let (code, out, err) = dev.command(&args, &[("FROM_ENV", "v")], None);
        match code {
            0 => Ok(serde_json::from_str::<serde_json::Value>(&out).unwrap()["data"].clone()),
            _ => Err(err),
        }
    };
    assert_eq!(
        data(
            "bom.env",
            b"\xef\xbb\xbfA=bom\n  B=x \n#c\n\nC=\nFROM_ENV\nUNSET_HERE\n"
        )
        .unwrap(),
        serde_json::json!({"A": "Ym9t", "B": "eCA=", "C": "", "FROM_ENV": "dg==", "UNSET_HERE": ""})
    );
    assert_eq!(
        data("digit.env", b"1A=x\n").unwrap_err(),
        "error: \"1A\" is not a valid key name: a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')\n"
    );
    assert!(data("space.env", b"B =x\n")
        .unwrap_err()
        .starts_with("error: \"B \" is not a valid key name"));
    let flag = format!("--from-env-file={}", dev.path("bom.env").display());
    let (code, out, err) = dev.kw(&[
        "create",
        "secret",
        "generic",
        "e",
        &flag,
        "--from-literal=a=b",
    ]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            1,
            "",
            "error: from-env-file cannot be combined with from-file or from-literal\n"
        )
    );
    let (code, out, err) = dev.kw(&[
        "create",
        "secret",
        "generic",
        "dr",
        "--from-literal=password=hunter2",
        "--dry-run=client",
    ]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "secret/dr created (dry run)\n", "")
    );
    assert_eq!(dev.kw(&["get", "secret", "dr"]).0, 1, "nothing written");
    // A directory's regular files only: a symbolic link in it (to a file anywhere) is skipped.
    fs::create_dir(dev.path("keys")).unwrap();
    fs::write(dev.path("keys/config"), "ok").unwrap();
    fs::write(dev.path("outside"), "not for the Secret").unwrap();
    std::os::unix::fs::symlink(dev.path("outside"), dev.path("keys/stolen")).unwrap();
    let flag = format!("--from-file={}", dev.path("keys").display());
    let out = dev.ok(&[
        "create",
        "secret",
        "generic",
        "d",
        &flag,
        "--dry-run=client",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["data"], serde_json::json!({"config": "b2s="}));
}

/// `secret/NAME` works wherever a Secret is named, as in kubectl (describe, history, rollback,
/// edit, delete), and a type without a name is kubectl's error.
#[test]
fn type_slash_name_names_a_secret_everywhere() {
    let dev = Dev::start();
    dev.ok(&["create", "secret", "generic", "sl", "--from-literal=a=b"]);
    assert!(dev
        .ok(&["describe", "secret/sl"])
        .starts_with("Name:         sl\n"));
    let history = dev.ok(&["history", "secrets/sl"]);
    assert!(
        history
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("created")),
        "{history}"
    );
    let rev = history
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let editor = dev.path("editor.sh");
    fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/^  a: .*/  a: Yw==/' \"$1\"\n",
    )
    .unwrap();
    fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, out, err) = dev.command(
        &["edit", "secret/sl"],
        &[("KUBE_EDITOR", editor.to_str().unwrap())],
        None,
    );
    assert_eq!((code, out.as_str()), (0, "secret/sl edited\n"), "{err}");
    assert_eq!(dev.ok(&["get", "secret", "sl", "--key", "a"]), "c");
    let out = dev.ok(&["rollback", "secret/sl", "--to-revision", &rev]);
    assert!(
        out.starts_with("secret/sl rolled back to revision"),
        "{out}"
    );
    assert_eq!(dev.ok(&["get", "secret", "sl", "--key", "a"]), "b");
    for args in [
        &["describe", "secret"][..],
        &["delete", "secrets"],
        &["history", "secret"],
    ] {
        let (code, _, err) = dev.kw(args);
        assert_eq!(
            (code, err.as_str()),
            (
                1,
                "error: resource(s) were provided, but no name was specified\n"
            ),
            "{args:?}"
        );
    }
    assert_eq!(dev.ok(&["delete", "secret/sl"]), "secret \"sl\" deleted\n");
}
