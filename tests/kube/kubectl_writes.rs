//! kubectl 1.27–1.33 writing Secrets through the Kubernetes API: every command of the Secret
//! documentation that changes something (create generic/tls/docker-registry, `--dry-run=server`,
//! client-side apply with its three-way merge, server-side apply, patch of the three types,
//! label, annotate, replace with a stale resourceVersion, immutable Secrets), the protobuf
//! request bodies of kubectl 1.32+ (create and the auth reviews), and twelve kubectl processes
//! writing one Secret at once.
//!
//! These run the object semantics of `kube::objects`, `kube::proto`, `kube::patch` and
//! `kube::apply` (strict decoding, protobuf, patches, server-side apply).

use crate::kubectl::{Kubectl, World};

use crate::support::tools::KUBECTL_MINORS;

/// The PEM pair `create secret tls` reads.
fn tls_files(w: &World) -> (String, String) {
    let cert = w.dev.path("tls.crt");
    let key = w.dev.path("tls.key");
    let ca = keyward::kube::kubeconfig::DevCa::load_or_create(w.dev.dir.path()).unwrap();
    let pair = ca.issue_server().unwrap();
    std::fs::write(&cert, &pair.cert).unwrap();
    std::fs::write(&key, pair.key.as_bytes()).unwrap();
    (
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    )
}

#[test]
fn kubectl_creates_secrets_on_every_version() {
    let w = World::start(&[]);
    let (cert, key) = tls_files(&w);
    w.dev.write("env.txt", "A=1\nB=two\n");
    w.dev.write("file.txt", "from a file");
    let env = w.dev.path("env.txt");
    let file = w.dev.path("file.txt");
    for minor in KUBECTL_MINORS {
        let k = w.kubectl(minor);
        let g = format!("g{minor}");
        assert_eq!(
            k.ok(&[
                "create",
                "secret",
                "generic",
                &g,
                "--from-literal=user=admin",
                &format!("--from-file=f={}", file.display())
            ]),
            format!("secret/{g} created\n")
        );
        assert_eq!(
            k.ok(&["get", "secret", &g, "-o", "jsonpath={.data.f}"]),
            "ZnJvbSBhIGZpbGU="
        );
        let e = format!("e{minor}");
        k.ok(&[
            "create",
            "secret",
            "generic",
            &e,
            &format!("--from-env-file={}", env.display()),
        ]);
        assert_eq!(
            k.ok(&["get", "secret", &e, "-o", "jsonpath={.data.B}"]),
            "dHdv"
        );
        let t = format!("t{minor}");
        k.ok(&[
            "create", "secret", "tls", &t, "--cert", &cert, "--key", &key,
        ]);
        assert_eq!(
            k.ok(&["get", "secret", &t, "-o", "jsonpath={.type}"]),
            "kubernetes.io/tls"
        );
        let d = format!("d{minor}");
        k.ok(&[
            "create",
            "secret",
            "docker-registry",
            &d,
            "--docker-server=r.example",
            "--docker-username=u",
            "--docker-password=p",
        ]);
        assert_eq!(
            k.ok(&["get", "secret", &d, "-o", "jsonpath={.type}"]),
            "kubernetes.io/dockerconfigjson"
        );
        let dup = k.run(&["create", "secret", "generic", &g, "--from-literal=a=b"]);
        assert_eq!(
            dup.err,
            format!("error: failed to create secret secrets \"{g}\" already exists\n")
        );
        let dry = format!("dry{minor}");
        let out = k.ok(&[
            "create",
            "secret",
            "generic",
            &dry,
            "--from-literal=a=b",
            "--dry-run=server",
            "-o",
            "jsonpath={.metadata.name}",
        ]);
        assert_eq!(out, dry);
        let gone = k.run(&["get", "secret", &dry]);
        assert_eq!(gone.code, 1, "a server dry run stores nothing");
    }
}

#[test]
fn kubectl_apply_patch_label_replace_on_every_version() {
    let w = World::start(&[]);
    for minor in KUBECTL_MINORS {
        let k = w.kubectl(minor);
        let app = format!("app{minor}");
        let manifest = |data: &str| {
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {app}\n  labels: {{tier: web}}\nstringData:\n{data}")
        };
        let file = w.dev.path(&format!("{app}.yaml"));
        let f = file.to_str().unwrap();
        std::fs::write(&file, manifest("  a: one\n  b: two\n")).unwrap();
        assert_eq!(k.ok(&["apply", "-f", f]), format!("secret/{app} created\n"));
        // Another writer adds a key; apply keeps it (three-way merge).
        k.ok(&[
            "patch",
            "secret",
            &app,
            "-p",
            "{\"stringData\":{\"other\":\"x\"}}",
        ]);
        std::fs::write(&file, manifest("  a: uno\n")).unwrap();
        assert_eq!(
            k.ok(&["apply", "-f", f]),
            format!("secret/{app} configured\n")
        );
        let data: serde_json::Value =
            serde_json::from_str(&k.ok(&["get", "secret", &app, "-o", "jsonpath={.data}"]))
                .unwrap();
        assert_eq!(data["a"], "dW5v");
        assert_eq!(data["other"], "eA==");
        // apply --prune, with the allowlist this API needs (kubectl's default list names kinds
        // it does not serve): a labelled Secret left out of the files is deleted.
        let (kept, pruned) = (format!("kept{minor}"), format!("pruned{minor}"));
        let label = format!("prune={minor}");
        let keep = w.dev.path(&format!("keep{minor}.yaml"));
        let gone = w.dev.path(&format!("gone{minor}.yaml"));
        for (path, name) in [(&keep, kept.as_str()), (&gone, pruned.as_str())] {
            let m = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  labels: {{prune: \"{minor}\"}}\nstringData: {{a: b}}\n");
            std::fs::write(path, m).unwrap();
        }
        let (keep, gone) = (keep.to_str().unwrap(), gone.to_str().unwrap());
        k.ok(&["apply", "-f", keep, "-f", gone]);
        let out = k.ok(&[
            "apply",
            "--prune",
            "-l",
            &label,
            "--prune-allowlist=core/v1/Secret",
            "-f",
            keep,
        ]);
        assert!(
            out.contains(&format!("secret/{pruned} pruned")),
            "1.{minor}: {out}"
        );
        assert_eq!(
            k.ok(&["get", "secrets", "-l", &label, "-o", "name"]),
            format!("secret/{kept}\n")
        );
        // apply -k: kustomize's secretGenerator (a name with its content hash), then a
        // changed literal makes a new Secret beside the old one.
        let kdir = w.dev.path(&format!("kustomize{minor}"));
        std::fs::create_dir_all(&kdir).unwrap();
        let kust = |pw: &str| {
            format!(
                "secretGenerator:\n- name: gen{minor}\n  literals:\n  - username=admin\n  - password={pw}\n"
            )
        };
        std::fs::write(kdir.join("kustomization.yaml"), kust("one")).unwrap();
        let out = k.ok(&["apply", "-k", kdir.to_str().unwrap()]);
        assert!(
            out.starts_with(&format!("secret/gen{minor}-")) && out.ends_with(" created\n"),
            "{out}"
        );
        let generated = out
            .trim_end()
            .trim_end_matches(" created")
            .trim_start_matches("secret/")
            .to_owned();
        assert_eq!(
            k.ok(&[
                "get",
                "secret",
                &generated,
                "-o",
                "jsonpath={.data.username}"
            ]),
            "YWRtaW4="
        );
        assert_eq!(
            k.ok(&["apply", "-k", kdir.to_str().unwrap()]),
            format!("secret/{generated} unchanged\n")
        );
        std::fs::write(kdir.join("kustomization.yaml"), kust("two")).unwrap();
        let out = k.ok(&["apply", "-k", kdir.to_str().unwrap()]);
        assert!(
            out.ends_with(" created\n") && !out.contains(&generated),
            "{out}"
        );
        k.ok(&["label", "secret", &app, "env=prod"]);
        k.ok(&["annotate", "secret", &app, "note=hello"]);
        assert_eq!(
            k.ok(&[
                "get",
                "secret",
                &app,
                "-o",
                "jsonpath={.metadata.labels.env}/{.metadata.annotations.note}"
            ]),
            "prod/hello"
        );
        k.ok(&["label", "secret", &app, "env-"]);
        // edit: the editor changes a label in the buffer; kubectl sends a strategic merge patch.
        let editor = w.dev.path("editor.sh");
        std::fs::write(
            &editor,
            "#!/bin/sh\nsed -i 's/tier: web/tier: edited/' \"$1\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let edited = k
            .command(&["edit", "secret", &app])
            .env("KUBE_EDITOR", &editor)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&edited.stdout),
            format!("secret/{app} edited\n"),
            "{}",
            String::from_utf8_lossy(&edited.stderr)
        );
        assert_eq!(
            k.ok(&[
                "get",
                "secret",
                &app,
                "-o",
                "jsonpath={.metadata.labels.tier}"
            ]),
            "edited"
        );
        k.ok(&[
            "patch",
            "secret",
            &app,
            "--type=merge",
            "-p",
            "{\"metadata\":{\"labels\":{\"m\":\"1\"}}}",
        ]);
        k.ok(&[
            "patch",
            "secret",
            &app,
            "--type=json",
            "-p",
            "[{\"op\":\"remove\",\"path\":\"/data/other\"}]",
        ]);
        let data = k.ok(&[
            "get",
            "secret",
            &app,
            "-o",
            "jsonpath={.data.other}{.metadata.labels.m}",
        ]);
        assert_eq!(data, "1");
        // Replace with the live resourceVersion works; a stale one is a Conflict.
        let live = k.ok(&["get", "secret", &app, "-o", "yaml"]);
        let stale = w.dev.path(&format!("{app}-stale.yaml"));
        std::fs::write(&stale, &live).unwrap();
        assert_eq!(
            k.ok(&["replace", "-f", stale.to_str().unwrap()]),
            format!("secret/{app} replaced\n")
        );
        k.ok(&["label", "secret", &app, "moved=on"]);
        let conflict = k.run(&["replace", "-f", stale.to_str().unwrap()]);
        assert_eq!(conflict.code, 1);
        assert!(conflict.err.contains(&format!("Error from server (Conflict): error when replacing \"{}\": Operation cannot be fulfilled on secrets \"{app}\": the object has been modified; please apply your changes to the latest version and try again", stale.display())), "{}", conflict.err);
        // Server-side apply: create, update, then a conflict with another manager.
        let ssa = format!("ssa{minor}");
        let sfile = w.dev.path(&format!("{ssa}.yaml"));
        std::fs::write(
            &sfile,
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {ssa}\ndata:\n  k: dg==\n"),
        )
        .unwrap();
        let s = sfile.to_str().unwrap();
        assert_eq!(
            k.ok(&["apply", "--server-side", "-f", s]),
            format!("secret/{ssa} serverside-applied\n")
        );
        std::fs::write(
            &sfile,
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {ssa}\ndata:\n  k: dzI=\n"),
        )
        .unwrap();
        let other = k.run(&["apply", "--server-side", "--field-manager=other", "-f", s]);
        assert_eq!(other.code, 1, "{}", other.out);
        assert!(
            other.err.contains(
                "error: Apply failed with 1 conflict: conflict with \"kubectl\": .data.k\n"
            ),
            "{}",
            other.err
        );
        assert_eq!(
            k.ok(&[
                "apply",
                "--server-side",
                "--field-manager=other",
                "--force-conflicts",
                "-f",
                s
            ]),
            format!("secret/{ssa} serverside-applied\n")
        );
        // Finalizers hold a delete: the Secret is marked (deletionTimestamp), no finalizer can
        // be added any more, and removing the last one completes the delete.
        let fin = format!("fin{minor}");
        k.ok(&["create", "secret", "generic", &fin, "--from-literal=k=v"]);
        k.ok(&[
            "patch",
            "secret",
            &fin,
            "--type=merge",
            "-p",
            "{\"metadata\":{\"finalizers\":[\"example.com/hold\"]}}",
        ]);
        assert_eq!(
            k.ok(&["delete", "secret", &fin, "--wait=false"]),
            format!("secret \"{fin}\" deleted\n")
        );
        assert!(!k
            .ok(&[
                "get",
                "secret",
                &fin,
                "-o",
                "jsonpath={.metadata.deletionTimestamp}"
            ])
            .is_empty());
        let added = k.run(&[
            "patch",
            "secret",
            &fin,
            "--type=merge",
            "-p",
            "{\"metadata\":{\"finalizers\":[\"example.com/other\"]}}",
        ]);
        assert_eq!(added.code, 1);
        assert!(
            added.err.contains("metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"example.com/other\"}"),
            "{}",
            added.err
        );
        k.ok(&[
            "patch",
            "secret",
            &fin,
            "--type=json",
            "-p",
            "[{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}]",
        ]);
        let gone = k.run(&["get", "secret", &fin]);
        assert!(gone.err.contains("(NotFound)"), "{}", gone.err);
        // Immutable Secrets refuse changes with kubectl's exact message.
        let imm = format!("imm{minor}");
        let ifile = w.dev.path(&format!("{imm}.yaml"));
        std::fs::write(&ifile, format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {imm}\nimmutable: true\nstringData: {{k: v}}\n")).unwrap();
        k.ok(&["apply", "-f", ifile.to_str().unwrap()]);
        let refused = k.run(&[
            "patch",
            "secret",
            &imm,
            "-p",
            "{\"stringData\":{\"k\":\"w\"}}",
        ]);
        assert_eq!(
            refused.err,
            format!("The Secret \"{imm}\" is invalid: data: Forbidden: field is immutable when `immutable` is set\n")
        );
    }
}

/// kubectl 1.32+ sends `auth can-i` and `auth whoami` reviews as protobuf.
#[test]
fn kubectl_protobuf_reviews() {
    let w = World::start(&[]);
    for minor in [32, 33] {
        let k = w.kubectl(minor);
        assert_eq!(k.ok(&["auth", "can-i", "get", "secrets"]), "yes\n");
        assert!(k.ok(&["auth", "can-i", "--list"]).contains("*.*"));
        assert!(k.ok(&["auth", "whoami"]).contains("keyward-dev-admin"));
    }
}

/// From client-side apply to server-side apply and back, as the Kubernetes documentation
/// describes it: `apply --server-side` (field manager `kubectl`) takes over the fields the
/// last-applied annotation still describes without a conflict, and keeps that annotation in
/// step, so that a later client-side apply removes what the server-side one added.
#[test]
fn kubectl_moves_between_client_side_and_server_side_apply() {
    let w = World::start(&[]);
    for minor in KUBECTL_MINORS {
        let k = w.kubectl(minor);
        let name = format!("move{minor}");
        let m1 = w.dev.path(&format!("{name}-1.yaml"));
        let m2 = w.dev.path(&format!("{name}-2.yaml"));
        std::fs::write(
            &m1,
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  labels: {{t: a}}\ndata:\n  a: MQ==\n"),
        )
        .unwrap();
        std::fs::write(
            &m2,
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  labels: {{t: a, u: b}}\ndata:\n  a: eA==\n  k2: dg==\n"),
        )
        .unwrap();
        let (m1, m2) = (m1.to_str().unwrap(), m2.to_str().unwrap());
        assert_eq!(
            k.ok(&["apply", "-f", m1]),
            format!("secret/{name} created\n")
        );
        assert_eq!(
            k.ok(&["apply", "--server-side", "-f", m2]),
            format!("secret/{name} serverside-applied\n"),
            "kubectl 1.{minor}"
        );
        let last = k.ok(&[
            "get",
            "secret",
            &name,
            "-o",
            "jsonpath={.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}",
        ]);
        assert!(
            last.contains("\"k2\":\"dg==\"") && last.contains("\"u\":\"b\""),
            "1.{minor}: {last}"
        );
        // Another field manager still conflicts with what kubectl owns now.
        let other = k.run(&["apply", "--server-side", "--field-manager=other", "-f", m1]);
        assert_eq!(other.code, 1, "1.{minor}: {}", other.out);
        assert!(
            other.err.contains("conflict with \"kubectl\""),
            "1.{minor}: {}",
            other.err
        );
        // Back to client-side apply: the three-way merge from the updated annotation removes
        // the key and the label the server-side apply added.
        assert_eq!(
            k.ok(&["apply", "-f", m1]),
            format!("secret/{name} configured\n")
        );
        assert_eq!(
            k.ok(&[
                "get",
                "secret",
                &name,
                "-o",
                "jsonpath={.data}|{.metadata.labels}",
            ]),
            "{\"a\":\"MQ==\"}|{\"t\":\"a\"}",
            "kubectl 1.{minor}"
        );
    }
}

/// A manager left owning nothing is dropped, and `managedFields: [{}]` or `[]` resets them:
/// with no manager left, the Secret has no `managedFields` (kube-apiserver's field manager),
/// not an entry of keyward's own; the next apply starts with `before-first-apply`.
#[test]
fn managers_owning_nothing_leave_no_managed_fields() {
    let w = World::start(&[]);
    for minor in KUBECTL_MINORS {
        let k = w.kubectl(minor);
        let name = format!("owned{minor}");
        let full = w.dev.path(&format!("{name}-full.yaml"));
        let bare = w.dev.path(&format!("{name}-bare.yaml"));
        let head = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n");
        std::fs::write(&full, format!("{head}data:\n  a: MQ==\n")).unwrap();
        std::fs::write(&bare, &head).unwrap();
        let managed = |k: &Kubectl| {
            k.ok(&[
                "get",
                "secret",
                &name,
                "--show-managed-fields",
                "-o",
                "jsonpath={.metadata.managedFields[*].manager}|{.data}",
            ])
        };
        for file in [&full, &bare] {
            assert_eq!(
                k.ok(&["apply", "--server-side", "-f", file.to_str().unwrap()]),
                format!("secret/{name} serverside-applied\n"),
                "kubectl 1.{minor}"
            );
        }
        assert_eq!(
            managed(&k),
            "|",
            "kubectl 1.{minor}: the applier owns nothing"
        );
        for reset in [r#"[{}]"#, "[]"] {
            k.ok(&[
                "patch",
                "secret",
                &name,
                "--type=merge",
                "-p",
                r#"{"data":{"b":"Mg=="}}"#,
            ]);
            assert_eq!(
                managed(&k),
                r#"kubectl-patch|{"b":"Mg=="}"#,
                "kubectl 1.{minor}"
            );
            let patch = format!(r#"{{"metadata":{{"managedFields":{reset}}}}}"#);
            k.ok(&["patch", "secret", &name, "--type=merge", "-p", &patch]);
            assert_eq!(
                managed(&k),
                r#"|{"b":"Mg=="}"#,
                "kubectl 1.{minor}: {reset}"
            );
            k.ok(&[
                "patch",
                "secret",
                &name,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/data"}]"#,
            ]);
        }
        // The first apply to an object without managedFields records `before-first-apply` as
        // owning what the object had (its type).
        k.ok(&["apply", "--server-side", "-f", full.to_str().unwrap()]);
        assert_eq!(
            managed(&k),
            r#"kubectl before-first-apply|{"a":"MQ=="}"#,
            "kubectl 1.{minor}"
        );
    }
}

/// Writes by more than ten field managers keep ten `Update` entries: the oldest are merged
/// into `ancient-changes` (kube-apiserver's cap).
#[test]
fn update_managers_are_capped_at_ten() {
    let w = World::start(&[]);
    let minor = *KUBECTL_MINORS.last().expect("a kubectl version");
    let k = w.kubectl(minor);
    k.ok(&["create", "secret", "generic", "many", "--from-literal=a=1"]);
    for i in 0..11 {
        let manager = format!("--field-manager=m{i:02}");
        k.ok(&["label", "secret", "many", &format!("l{i:02}=v"), &manager]);
    }
    let managers = k.ok(&[
        "get",
        "secret",
        "many",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    let managers: Vec<&str> = managers.split(' ').collect();
    assert_eq!(managers.len(), 10, "{managers:?}");
    assert!(managers.contains(&"ancient-changes"), "{managers:?}");
    assert!(managers.contains(&"m10"), "{managers:?}");
    assert!(!managers.contains(&"kubectl-create"), "{managers:?}");
}

/// A replace whose `resourceVersion` is "0" is unconditional, as kube-apiserver reads it.
#[test]
fn a_replace_with_resource_version_zero_is_unconditional() {
    let w = World::start(&[]);
    let k = w.kubectl(*KUBECTL_MINORS.last().expect("a kubectl version"));
    k.ok(&["create", "secret", "generic", "zero", "--from-literal=a=1"]);
    k.ok(&["label", "secret", "zero", "moved=yes"]);
    let manifest = w.dev.path("zero.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: zero\n  resourceVersion: \"0\"\nstringData: {a: \"2\"}\n",
    )
    .unwrap();
    k.ok(&["replace", "-f", manifest.to_str().unwrap()]);
    assert_eq!(
        k.ok(&["get", "secret", "zero", "-o", "jsonpath={.data.a}"]),
        "Mg=="
    );
}

/// kubectl processes writing one Secret at once (labels, annotations, and server-side apply of
/// a key per field manager): every command succeeds and every change lands, since
/// kube-apiserver (and keyward) apply a patch again to the new version when the object changed
/// under it.
#[test]
fn concurrent_kubectl_writers_all_land() {
    let w = World::start(&[]);
    for minor in [27, 33] {
        let k = w.kubectl(minor);
        let name = format!("busy{minor}");
        k.ok(&[
            "create",
            "secret",
            "generic",
            &name,
            "--from-literal=base=x",
        ]);
        let mut children = Vec::new();
        for i in 0..4 {
            let label = format!("l{i}=v{i}");
            let note = format!("a{i}=n{i}");
            let file = w.dev.path(&format!("{name}-{i}.yaml"));
            std::fs::write(
                &file,
                format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  k{i}: s{i}\n"),
            )
            .unwrap();
            let manager = format!("--field-manager=m{i}");
            let f = file.to_str().unwrap().to_owned();
            for args in [
                vec!["label", "secret", &name, &label],
                vec!["annotate", "secret", &name, &note],
                vec!["apply", "--server-side", &manager, "-f", &f],
            ] {
                children.push((args.join(" "), k.command(&args).spawn().unwrap()));
            }
        }
        for (what, child) in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "1.{minor}: kubectl {what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let got = k.ok(&[
            "get",
            "secret",
            &name,
            "-o",
            "json",
            "--show-managed-fields",
        ]);
        let got: serde_json::Value = serde_json::from_str(&got).unwrap();
        for i in 0..4 {
            assert_eq!(
                got["metadata"]["labels"][format!("l{i}")],
                format!("v{i}"),
                "1.{minor}"
            );
            assert_eq!(
                got["metadata"]["annotations"][format!("a{i}")],
                format!("n{i}"),
                "1.{minor}"
            );
            let value =
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("s{i}"));
            assert_eq!(got["data"][format!("k{i}")], value, "1.{minor}");
        }
        let managers: Vec<&str> = got["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        for i in 0..4 {
            assert!(
                managers.contains(&format!("m{i}").as_str()),
                "1.{minor}: {managers:?}"
            );
        }
    }
}

/// The bodies of writes at level `RequestResponse`, as kube-apiserver logs them and with no
/// Secret value: a patch's request object is the patch (its values reduced to key names),
/// not the merged Secret; a delete's is the DeleteOptions kubectl sent and its response
/// object the Success Status it was answered with.
#[test]
fn kubectl_patch_and_delete_bodies_are_audited_as_kube_apiserver_logs_them() {
    let w = crate::kubectl::audited_world("RequestResponse");
    let k = w.kubectl(33);
    k.ok(&[
        "patch",
        "secret",
        "s1",
        "-p",
        r#"{"metadata":{"labels":{"x":"1"}},"data":{"k":"c2VjcmV0LXBhdGNoZWQ="}}"#,
    ]);
    k.ok(&[
        "patch",
        "secret",
        "plain",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/data/j","value":"anNvbi1zZWNyZXQ="}]"#,
    ]);
    assert_eq!(k.ok(&["delete", "secret", "s1"]), "secret \"s1\" deleted\n");
    assert_eq!(
        k.ok(&["delete", "secret", "plain", "--dry-run=server"]),
        "secret \"plain\" deleted (server dry run)\n"
    );
    // A patch that fails is recorded with its patch too (one that does not apply: 422; one of
    // a Secret that is not there never leaves kubectl, which reads it first).
    let failed = k.run(&[
        "patch",
        "secret",
        "plain",
        "--type",
        "json",
        "-p",
        r#"[{"op":"test","path":"/data/k","value":"dGVzdC1zZWNyZXQ="}]"#,
    ]);
    assert_eq!(failed.code, 1, "{}", failed.err);
    // A read is recorded in the form the client received: kubectl's Table.
    k.ok(&["get", "secrets"]);
    let (audit, events) = w.audit_log();
    for value in [
        "c2VjcmV0LXBhdGNoZWQ=",
        "secret-patched",
        "anNvbi1zZWNyZXQ=",
        "json-secret",
        "hunter2",
        "dGVzdC1zZWNyZXQ=",
    ] {
        assert!(!audit.contains(value), "{value} in the audit log");
    }
    let complete = |verb: &str, name: &str| -> &serde_json::Value {
        events
            .iter()
            .find(|e| {
                e["stage"] == "ResponseComplete"
                    && e["verb"] == verb
                    && e["objectRef"]["name"] == name
            })
            .unwrap_or_else(|| panic!("no {verb} of {name}: {audit}"))
    };
    let table = events
        .iter()
        .find(|e| e["stage"] == "ResponseComplete" && e["verb"] == "list")
        .unwrap_or_else(|| panic!("no list: {audit}"));
    let table = &table["responseObject"];
    assert_eq!(table["kind"], "Table", "{table}");
    assert_eq!(table["columnDefinitions"][0]["name"], "Name", "{table}");
    let names: Vec<&str> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cells"][0].as_str().unwrap())
        .collect();
    assert!(names.contains(&"plain"), "{table}");
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    let strategic = complete("patch", "s1");
    assert_eq!(
        strategic["requestObject"],
        serde_json::json!({"metadata": {"labels": {"x": "1"}}, "data": {"k": null}}),
    );
    assert_eq!(strategic["responseObject"]["kind"], "Secret");
    assert_eq!(
        strategic["responseObject"]["data"]["k"],
        serde_json::Value::Null
    );
    let json = complete("patch", "plain");
    assert_eq!(
        json["requestObject"],
        serde_json::json!([{"op": "add", "path": "/data/j"}]),
    );
    let refused: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["stage"] == "ResponseComplete" && e["verb"] == "patch")
        .filter(|e| e["responseStatus"]["code"] != 200)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["responseStatus"]["code"], 422);
    assert_eq!(
        refused[0]["requestObject"],
        serde_json::json!([{"op": "test", "path": "/data/k"}]),
    );
    let delete = complete("delete", "s1");
    assert_eq!(
        delete["requestObject"],
        serde_json::json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background"}),
    );
    // Bodies in kube-apiserver's key order: the decoded object re-encoded, kind first.
    assert!(
        audit.contains(r#""requestObject":{"kind":"DeleteOptions","apiVersion":"meta.k8s.io/v1","propagationPolicy":"Background"}"#),
        "{audit}"
    );
    assert!(
        audit.contains(
            r#""responseObject":{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s1""#
        ),
        "{audit}"
    );
    let answer = &delete["responseObject"];
    assert_eq!(answer["kind"], "Status", "{delete}");
    assert_eq!(answer["status"], "Success");
    assert_eq!(answer["details"]["name"], "s1");
    assert_eq!(answer["details"]["kind"], "secrets");
    // The Status answered, as kube-apiserver's `LogResponseObject` copies it (at any level).
    let uid = answer["details"]["uid"].as_str().unwrap();
    assert_eq!(
        delete["responseStatus"].to_string(),
        format!(
            r#"{{"metadata":{{}},"status":"Success","details":{{"name":"s1","kind":"secrets","uid":"{uid}"}},"code":200}}"#
        )
    );
    // A dry run is recorded as the delete it is, with its options.
    let dry = complete("delete", "plain");
    assert_eq!(
        dry["requestObject"],
        serde_json::json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background", "dryRun": ["All"]}),
    );
    assert_eq!(dry["responseObject"]["status"], "Success", "{dry}");
    assert_eq!(
        k.ok(&["get", "secret", "plain", "-o", "name"]),
        "secret/plain\n"
    );
}

/// The legacy token flow through kubectl, tracked as kube-apiserver tracks it: a
/// `kubernetes.io/service-account-token` Secret created with `kubectl apply` is filled in (its
/// `ca.crt` is `keyward dev`'s CA); its
/// token authenticates as the service account, the request's audit events say which Secret
/// (`authentication.k8s.io/legacy-token-manual-secret`), and the Secret is labelled with the day
/// of use; labelled `kubernetes.io/legacy-token-invalid-since`, the token is refused (401, with
/// `authentication.k8s.io/legacy-token-invalidated: NAME/NAMESPACE` in the event).
#[test]
fn kubectl_legacy_service_account_tokens_are_tracked() {
    let w = crate::kubectl::audited_world("Metadata");
    let admin = w.kubectl(33);
    w.dev.write(
        "sa-token.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-token\n  annotations:\n    kubernetes.io/service-account.name: app\ntype: kubernetes.io/service-account-token\n",
    );
    admin.ok(&["apply", "-f", w.dev.path("sa-token.yaml").to_str().unwrap()]);
    // The create's answer holds no token (kube-controller-manager fills it in a later write):
    // `create` alone hands out no credential.
    w.dev.write(
        "sa-token-2.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-token-2\n  annotations:\n    kubernetes.io/service-account.name: app\ntype: kubernetes.io/service-account-token\n",
    );
    let answered = admin.ok(&[
        "create",
        "-f",
        w.dev.path("sa-token-2.yaml").to_str().unwrap(),
        "-o",
        "jsonpath={.data}",
    ]);
    assert_eq!(answered.trim(), "", "{answered}");
    // A service account no namespace can hold: stored as given, never filled (as upstream).
    w.dev.write(
        "sa-token-bad.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bad-token\n  annotations:\n    kubernetes.io/service-account.name: Not:Valid\ntype: kubernetes.io/service-account-token\n",
    );
    admin.ok(&[
        "create",
        "-f",
        w.dev.path("sa-token-bad.yaml").to_str().unwrap(),
    ]);
    let stored = admin.ok(&["get", "secret", "bad-token", "-o", "jsonpath={.data}"]);
    assert_eq!(stored.trim(), "", "{stored}");
    let token = admin.ok(&["get", "secret", "app-token", "-o", "jsonpath={.data.token}"]);
    let token = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, token.trim()).unwrap(),
    )
    .unwrap();
    // ca.crt: the dev CA, which signs the API's certificate.
    let ca = admin.ok(&[
        "get",
        "secret",
        "app-token",
        "-o",
        r"jsonpath={.data.ca\.crt}",
    ]);
    let ca = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, ca.trim()).unwrap();
    assert_eq!(ca, std::fs::read(w.dev.path("kw/kube-ca.crt")).unwrap());
    let cfg = w.token_kubeconfig("app", Some(&token));
    let app = w.kubectl_as(33, &cfg, "app");
    assert!(app
        .ok(&["auth", "whoami"])
        .contains("system:serviceaccount:default:app"));
    let mut today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    today.truncate(10);
    let label = admin.ok(&[
        "get",
        "secret",
        "app-token",
        "-o",
        r"jsonpath={.metadata.labels.kubernetes\.io/legacy-token-last-used}",
    ]);
    assert_eq!(label, today);
    // Used again the same day: no second write.
    assert!(app
        .ok(&["auth", "whoami"])
        .contains("system:serviceaccount:default:app"));
    admin.ok(&[
        "label",
        "secret",
        "app-token",
        "kubernetes.io/legacy-token-invalid-since=2026-01-01",
    ]);
    let refused = app.run(&["auth", "whoami"]);
    assert_eq!(refused.code, 1);
    assert!(refused.err.contains("Unauthorized"), "{}", refused.err);
    let (audit, events) = w.audit_log();
    let used = events
        .iter()
        .find(|e| e["user"]["username"] == "system:serviceaccount:default:app")
        .unwrap_or_else(|| panic!("no request of the service account: {audit}"));
    assert_eq!(
        used["annotations"]["authentication.k8s.io/legacy-token-manual-secret"],
        "app-token"
    );
    assert_eq!(
        used["annotations"]["authentication.k8s.io/legacy-token"],
        "system:serviceaccount:default:app"
    );
    // The label is the server's own patch, recorded as kube-apiserver records its loopback
    // patch (system:apiserver), once for the day.
    let labelled: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["user"]["username"] == "system:apiserver" && e["stage"] == "ResponseComplete")
        .collect();
    assert_eq!(labelled.len(), 1, "{labelled:?}");
    assert_eq!(labelled[0]["verb"], "patch");
    assert_eq!(labelled[0]["objectRef"]["name"], "app-token");
    assert_eq!(
        labelled[0]["user"]["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );
    assert_eq!(labelled[0]["responseStatus"]["code"], 200);
    let invalidated = events
        .iter()
        .find(|e| e["responseStatus"]["code"] == 401)
        .unwrap_or_else(|| panic!("no refusal: {audit}"));
    assert_eq!(
        invalidated["annotations"]["authentication.k8s.io/legacy-token-invalidated"],
        "app-token/default"
    );
    assert!(!audit.contains(&token), "the token is in the audit log");
}

/// A server-side apply of a Secret that does not exist creates it, so besides `patch` it needs
/// `create` of that name, as kube-apiserver's patch handler authorizes a create on update: dave
/// (delete and patch, no create) is refused with upstream's Forbidden (the authorizer gives no
/// reason for a plain denial, so the message ends in `forbidden: `), a dry run too, nothing is
/// created, and the audit log records the allowed patch answered 403. Once the Secret exists,
/// dave's apply is a patch and goes through.
#[test]
fn server_side_apply_that_creates_needs_create() {
    let w = crate::kubectl::audited_world("Metadata");
    let dave_cfg = w.token_kubeconfig("dave", Some(crate::kubectl::DAVE_TOKEN));
    w.dev.write(
        "new.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: newone\n  namespace: default\nstringData:\n  a: b\n",
    );
    let file = w.dev.path("new.yaml");
    let file = file.to_str().unwrap();
    let admin = w.kubectl(33);
    for minor in [27, 33] {
        let dave = w.kubectl_as(minor, &dave_cfg, "dave");
        for dry_run in [&[][..], &["--dry-run=server"]] {
            let o = dave.run(&[&["apply", "--server-side", "-f", file][..], dry_run].concat());
            assert_eq!(o.code, 1, "{o:?}");
            assert_eq!(
                o.err,
                "Error from server (Forbidden): secrets \"newone\" is forbidden: \n"
            );
        }
    }
    let absent = admin.run(&["get", "secret", "newone"]);
    assert_eq!(
        absent.err,
        "Error from server (NotFound): secrets \"newone\" not found\n"
    );
    let (_, events) = w.audit_log();
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e["user"]["username"] == "dave" && e["verb"] == "patch")
        .filter(|e| e["stage"] == "ResponseComplete")
        .collect();
    assert_eq!(refused.len(), 4, "{refused:?}");
    for e in refused {
        assert_eq!(e["verb"], "patch");
        assert_eq!(e["responseStatus"]["code"], 403);
        assert_eq!(e["annotations"]["authorization.k8s.io/decision"], "allow");
    }
    // An invalid Secret is refused as invalid (422), not forbidden: kube-apiserver validates
    // the object before it authorizes its create.
    w.dev.write(
        "bad.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bad\n  namespace: default\ntype: kubernetes.io/tls\n",
    );
    let bad = w.dev.path("bad.yaml");
    let dave = w.kubectl_as(33, &dave_cfg, "dave");
    let o = dave.run(&["apply", "--server-side", "-f", bad.to_str().unwrap()]);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.err.contains("The Secret \"bad\" is invalid: "), "{o:?}");
    admin.ok(&["create", "-f", file]);
    assert_eq!(
        dave.ok(&["apply", "--server-side", "-f", file]),
        "secret/newone serverside-applied\n"
    );
}
