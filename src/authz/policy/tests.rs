use super::*;

use std::os::unix::fs::symlink;

const READER: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: prod}
rules: [{apiGroups: [""], resources: [secrets], resourceNames: [db], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app, namespace: prod}
subjects: [{kind: User, name: app}]
roleRef: {kind: Role, name: reader}
"#;

const WRITER: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: writer}
rules: [{apiGroups: [""], resources: [secrets], verbs: [create, update]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: app-writes}
subjects: [{kind: User, name: app}]
roleRef: {kind: ClusterRole, name: writer}
"#;

fn get_db() -> Attributes {
    Attributes::resource(Identity::new("app", "", vec![]), "get", "secrets")
        .with_namespace("prod")
        .with_name("db")
}

fn create() -> Attributes {
    Attributes::resource(Identity::new("app", "", vec![]), "create", "secrets")
        .with_namespace("prod")
}

#[test]
fn loads_a_file_or_a_directory_of_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.yaml");
    std::fs::write(&file, READER).unwrap();
    let p = Policy::load(&file).unwrap();
    assert!(p.authorize(&get_db()).allowed());
    assert!(!p.authorize(&create()).allowed());
    let st = p.status();
    assert_eq!(st.source.as_deref(), Some(file.as_path()));
    assert!(st.hash.starts_with("sha256:") && st.healthy() && st.warnings.is_empty());
    assert_eq!((st.counts.roles, st.counts.role_bindings), (1, 1));

    // A directory: policy files in name order; other files and subdirectories ignored;
    // symlinked files (a ConfigMap volume) followed.
    let d = dir.path().join("policy");
    std::fs::create_dir_all(d.join("..data")).unwrap();
    std::fs::write(d.join("..data/b-writer.yml"), WRITER).unwrap();
    symlink("..data/b-writer.yml", d.join("b-writer.yml")).unwrap();
    std::fs::write(d.join("a-reader.json.yaml"), READER).unwrap();
    std::fs::write(d.join("README.md"), "not a policy").unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/bad.yaml"), "kind: Nonsense").unwrap();
    let p = Policy::load(&d).unwrap();
    assert!(p.authorize(&get_db()).allowed());
    assert!(p.authorize(&create()).allowed());
    assert_eq!(p.status().counts.cluster_role_bindings, 1);

    // Problems name the file.
    std::fs::write(
        d.join("c.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n",
    )
    .unwrap();
    let e = Policy::load(&d).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "{}: document 1 (Secret \"s\"): kind: Unsupported value",
            d.join("c.yaml").display()
        )),
        "{e}"
    );

    let missing = Policy::load(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(missing, AuthzError::Read { .. }), "{missing}");
    std::fs::write(dir.path().join("bin.yaml"), [0xff, 0xfe]).unwrap();
    assert!(matches!(
        Policy::load(&dir.path().join("bin.yaml")),
        Err(AuthzError::NotUtf8 { .. })
    ));

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let p = Policy::load(&empty).unwrap();
    assert!(!p.authorize(&get_db()).allowed());
    assert_eq!(p.status().warnings.len(), 1);
}

#[test]
fn reload_swaps_a_valid_change_and_keeps_the_policy_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, READER).unwrap();
    let p = Policy::load(&file).unwrap();
    let first = p.status();
    assert!(!p.reload().unwrap(), "unchanged");

    // A valid change is put in force.
    std::fs::write(&file, format!("{READER}---{WRITER}")).unwrap();
    assert!(p.reload().unwrap());
    assert!(p.authorize(&create()).allowed());
    let st = p.status();
    assert_ne!(st.hash, first.hash);
    assert_eq!((st.reloads, st.checks), (1, 3));

    // An invalid change keeps the policy in force and says why, naming file and field.
    let bad = WRITER.replace("kind: User", "kind: Usr");
    std::fs::write(&file, &bad).unwrap();
    let e = p.reload().unwrap_err().to_string();
    let want = format!("{}: document 2 (ClusterRoleBinding \"app-writes\"): subjects[0].kind: Unsupported value: \"Usr\"", file.display());
    assert!(e.contains(&want), "{e}");
    assert!(p.authorize(&create()).allowed() && p.authorize(&get_db()).allowed());
    let st = p.status();
    assert!(!st.healthy());
    assert!(st.last_error.as_deref().unwrap().contains(&want));
    assert!(st.last_error_at.is_some());
    assert_eq!(st.reloads, 1);
    // The same bad content is reported once, and stays in the status.
    assert!(!p.reload().unwrap());
    assert!(!p.status().healthy());

    // A deleted file is another problem; the policy stays.
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(p.reload(), Err(AuthzError::Read { .. })));
    assert!(p.authorize(&create()).allowed());

    // Putting back the content in force clears the error without a reload.
    std::fs::write(&file, format!("{READER}---{WRITER}")).unwrap();
    assert!(!p.reload().unwrap());
    assert!(p.status().healthy());

    // A good change after a bad one goes in.
    std::fs::write(&file, &bad).unwrap();
    assert!(p.reload().is_err());
    std::fs::write(&file, READER).unwrap();
    assert!(p.reload().unwrap());
    assert!(!p.authorize(&create()).allowed());
    let st = p.status();
    assert!(st.healthy());
    assert_eq!(st.reloads, 2);
}

/// A policy file or directory that group or others may write is refused at start and not
/// put in force on a reload (whoever may write it chooses who may do anything).
#[test]
fn a_policy_others_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let chmod = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, READER).unwrap();
    for mode in [0o666, 0o620, 0o602] {
        chmod(&file, mode);
        let e = Policy::load(&file).unwrap_err();
        assert!(matches!(e, AuthzError::Writable { .. }), "{mode:o}: {e}");
        assert!(
            e.to_string().contains(&format!("has mode {mode:04o}")),
            "{mode:o}: {e}"
        );
    }
    // A directory others may write: anyone could add a policy file to it.
    chmod(&file, 0o644);
    chmod(dir.path(), 0o777);
    let e = Policy::load(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("has mode 0777") && e.contains("chmod go-w"),
        "{e}"
    );
    chmod(dir.path(), 0o755);
    let p = Policy::load(dir.path()).unwrap();
    // Made writable later: the change is not read, the policy in force stays.
    std::fs::write(&file, format!("{READER}---{WRITER}")).unwrap();
    chmod(&file, 0o666);
    assert!(matches!(p.reload(), Err(AuthzError::Writable { .. })));
    assert!(!p.authorize(&create()).allowed());
    chmod(&file, 0o644);
    assert!(p.reload().unwrap());
    assert!(p.authorize(&create()).allowed());
}

#[test]
fn an_emptied_policy_is_kept_out() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, READER).unwrap();
    let p = Policy::load(&file).unwrap();
    for emptied in ["", "# regenerating\n", "---\n"] {
        std::fs::write(&file, emptied).unwrap();
        let e = p.reload().unwrap_err();
        assert!(matches!(e, AuthzError::Emptied { .. }), "{emptied:?}: {e}");
        assert!(
            p.authorize(&get_db()).allowed(),
            "the policy in force stays"
        );
        assert!(!p.status().healthy());
    }
    std::fs::write(&file, format!("{READER}---{WRITER}")).unwrap();
    assert!(p.reload().unwrap());
    assert!(p.status().healthy());
    // A server started with an empty policy takes one later.
    std::fs::write(&file, "").unwrap();
    let p = Policy::load(&file).unwrap();
    std::fs::write(&file, READER).unwrap();
    assert!(p.reload().unwrap());
    assert!(p.authorize(&get_db()).allowed());
}

#[test]
fn a_policy_built_in_code_is_not_reloaded() {
    let p = Policy::new(Rbac::empty());
    assert!(!p.reload().unwrap());
    assert!(!p.authorize(&get_db()).allowed());
    let masters = Identity::new("root", "", vec!["system:masters".into()]);
    assert_eq!(
        RuleResolver::rules_for(&p, &masters, "prod"),
        crate::authz::review::everything()
    );
    let loaded = crate::authz::rbac::parse_policy([("x", READER)]).unwrap();
    p.replace(Rbac::new(&loaded.set));
    assert!(p.authorize(&get_db()).allowed());
    assert_eq!(p.status().reloads, 1);
}

/// Yields until the watcher has run its check (the check itself does not sleep).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_watcher_reloads_on_change_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, READER).unwrap();
    let p = Arc::new(Policy::load(&file).unwrap());
    let watcher = p.watch(DEFAULT_RELOAD_INTERVAL);

    std::fs::write(&file, format!("{READER}---{WRITER}")).unwrap();
    tokio::time::advance(DEFAULT_RELOAD_INTERVAL / 2).await;
    settle().await;
    assert!(!p.authorize(&create()).allowed(), "not before the interval");
    tokio::time::advance(DEFAULT_RELOAD_INTERVAL / 2).await;
    settle().await;
    assert!(
        !p.authorize(&create()).allowed(),
        "seen once: it may be half written"
    );
    tokio::time::advance(DEFAULT_RELOAD_INTERVAL).await;
    settle().await;
    assert!(
        p.authorize(&create()).allowed(),
        "reloaded when two checks saw the same change"
    );
    assert_eq!(p.status().reloads, 1);

    // A file caught truncated (an empty policy, valid, denying all) at one check and whole
    // at the next is never put in force.
    std::fs::write(&file, "").unwrap();
    tokio::time::advance(DEFAULT_RELOAD_INTERVAL).await;
    settle().await;
    std::fs::write(&file, format!("{READER}---{WRITER}\n# edited")).unwrap();
    tokio::time::advance(DEFAULT_RELOAD_INTERVAL).await;
    settle().await;
    assert!(p.authorize(&create()).allowed());
    assert_eq!(p.status().reloads, 1, "the empty file never went in force");
    tokio::time::advance(DEFAULT_RELOAD_INTERVAL).await;
    settle().await;
    assert_eq!(p.status().reloads, 2);

    // A bad change: kept, recorded for health checks.
    std::fs::write(&file, "kind: Role\n").unwrap();
    for _ in 0..2 {
        tokio::time::advance(DEFAULT_RELOAD_INTERVAL).await;
        settle().await;
    }
    assert!(p.authorize(&create()).allowed());
    assert!(p
        .status()
        .last_error
        .unwrap()
        .contains("apiVersion: Required value"));

    drop(watcher);
    std::fs::write(&file, READER).unwrap();
    tokio::time::advance(DEFAULT_RELOAD_INTERVAL * 3).await;
    settle().await;
    assert!(
        p.authorize(&create()).allowed(),
        "a dropped watcher reloads nothing"
    );
    assert!(!p.status().healthy());
}
