//! Secrets the store cannot read, through the Kubernetes API: failed as kube-apiserver fails
//! them (KEP-3926's `StorageReadError`, corrupt objects named by their storage keys), never
//! left out of a list as if they did not exist.

use std::time::Duration;

use crate::kubectl::World;
use crate::support::tools::KUBECTL_MINORS;

/// Secrets whose KMS key was destroyed cannot be read: kube-apiserver fails a list, a watch's
/// starting list and a deletecollection that meet one as a whole (`StorageReadError`, each
/// Secret named by its storage key) and a get names the key, instead of leaving such Secrets
/// out as if they did not exist.
#[test]
fn unreadable_secrets_fail_lists_as_kube_apiserver_does() {
    let w = World::start(&[]);
    w.seed("apiVersion: v1\nkind: Secret\nmetadata:\n  name: lost\nstringData: {a: b}\n");
    let admin = w.dev.path("kw/kms-admin.sock").display().to_string();
    let status = w.dev.command(
        &["kms", "status", "--admin-socket", &admin, "-o", "json"],
        &[],
        None,
    );
    let old: serde_json::Value = serde_json::from_str(&status.1).unwrap();
    let old = old["primary_key_id"].as_str().unwrap().to_owned();
    for op in [
        vec!["kms", "rotate"],
        vec!["kms", "retire", &old, "--force"],
        vec!["kms", "destroy", &old, "--confirm", &old],
    ] {
        let (code, _, err) = w.dev.command(
            &[op.as_slice(), &["--admin-socket", &admin]].concat(),
            &[],
            None,
        );
        assert_eq!(code, 0, "{op:?}: {err}");
    }
    // Restarted, so that nothing read before the destroy is still cached.
    let World {
        mut dev,
        admin: kubeconfig,
    } = w;
    dev.terminate(Duration::from_secs(30));
    let crate::support::DevServer { dir, .. } = dev;
    let w = World::start_in(dir, &[]);
    assert_eq!(w.admin, kubeconfig);
    w.seed("apiVersion: v1\nkind: Secret\nmetadata:\n  name: kept\nstringData: {a: b}\n");
    let key = "/registry/secrets/default/lost";
    let k = w.kubectl(KUBECTL_MINORS[KUBECTL_MINORS.len() - 1]);
    let list = k.run(&["get", "secrets"]);
    assert_ne!(list.code, 0, "{}", list.out);
    assert!(
        list.err
            .contains("failed to read one or more secrets from the storage"),
        "{}",
        list.err
    );
    // The Status as sent: kubectl logs the response body at -v=8.
    let raw = k.run(&["get", "secrets", "-v=8"]);
    let body = raw
        .err
        .lines()
        .find_map(|l| l.find("{\"kind\":\"Status\"").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("{raw:?}"));
    let status: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{raw:?}"));
    assert_eq!(
        (
            &status["code"],
            &status["reason"],
            &status["details"]["name"],
            &status["details"]["kind"]
        ),
        (
            &500.into(),
            &"StorageReadError".into(),
            &"list".into(),
            &"secrets".into()
        ),
        "{status}"
    );
    let cause = &status["details"]["causes"][0];
    assert_eq!(
        (&cause["reason"], &cause["field"]),
        (&"UnexpectedServerResponse".into(), &key.into()),
        "{status}"
    );
    assert!(
        cause["message"].as_str().unwrap().starts_with(&format!(
            "StorageError: corrupt object, Code: 7, Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: data from the storage is not transformable revision=0: "
        )),
        "{status}"
    );
    let get = k.run(&["get", "secret", "lost"]);
    assert!(
        get.err.starts_with(&format!(
            "Error from server (InternalError): Internal error occurred: StorageError: corrupt object, Code: 7, Key: {key},"
        )),
        "{}",
        get.err
    );
    // The readable one is still there to get; a deletecollection deletes nothing; a delete of
    // the unreadable one names its key (KEP-3926's unsafe delete removes it).
    k.ok(&["get", "secret", "kept"]);
    let all = k.run(&["delete", "secrets", "--all"]);
    assert_ne!(all.code, 0, "{}", all.out);
    k.ok(&["get", "secret", "kept"]);
    let manifest = w.dev.path("lost.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: lost\nstringData: {a: c}\n",
    )
    .unwrap();
    let replace = k.run(&["replace", "-f", manifest.to_str().unwrap()]);
    assert!(
        replace.err.contains(&format!(
            "StorageError: corrupt object, Code: 7, Key: {key},"
        )),
        "{replace:?}"
    );
    let del = k.run(&["delete", "secret", "lost"]);
    assert!(
        del.err.contains(&format!(
            "StorageError: corrupt object, Code: 7, Key: {key},"
        )),
        "{del:?}"
    );
    // A list or watch of one other name reads that Secret alone, as kube-apiserver does.
    assert_eq!(
        k.ok(&[
            "get",
            "secrets",
            "--field-selector",
            "metadata.name=kept",
            "-o",
            "name"
        ]),
        "secret/kept\n"
    );
    let one = k.run(&[
        "get",
        "secrets",
        "--field-selector",
        "metadata.name=kept",
        "-w",
        "-o",
        "name",
        "--request-timeout",
        "3s",
    ]);
    assert!(one.out.contains("secret/kept"), "{one:?}");
    assert!(!one.err.contains("failed to read"), "{one:?}");
    let watch = k.run(&["get", "secrets", "-w", "--request-timeout", "10s"]);
    assert!(
        watch
            .err
            .contains("failed to read one or more secrets from the storage"),
        "{watch:?}"
    );
    // The keyward.v1 list names it and lists the rest.
    let (code, out, err) = w.dev.command(&["get", "secrets"], &[], None);
    assert!(
        out.contains("kept") && err.contains(key),
        "{code} {out} {err}"
    );
}
