//! Runs the README walkthrough verbatim against a fresh `keyward dev`: every command must
//! succeed, except those marked `# refused`, which must fail.

use std::process::Command;

use crate::support::Proc;

/// The `sh` block between `<!-- NAME -->` and `<!-- /NAME -->` in the README, as a bash script
/// in which lines marked `# refused` must fail.
fn script(name: &str) -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find(&format!("<!-- {name} -->"))
        .unwrap_or_else(|| panic!("README marker {name}"));
    let end = readme
        .find(&format!("<!-- /{name} -->"))
        .unwrap_or_else(|| panic!("README end marker {name}"));
    let block = &readme[start..end];
    let code_start = block.find("```sh\n").expect("sh block") + "```sh\n".len();
    let code_end = block[code_start..].find("```").expect("block end") + code_start;
    block[code_start..code_end]
        .lines()
        .map(|l| match l.rsplit_once("  # refused") {
            Some((cmd, _)) => format!(
                "if {cmd}; then echo 'expected a refusal: {}' >&2; exit 1; fi\n",
                cmd.replace('\'', "")
            ),
            None => format!("{l}\n"),
        })
        .collect()
}

/// Runs `script` with bash in `dir`, the built binary first on PATH, for at most ten
/// minutes; returns (stdout, stderr) once it succeeded.
fn run_script(dir: &std::path::Path, script: &str, what: &str) -> (String, String) {
    let bin_dir = std::path::Path::new(crate::support::bin())
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Bounded, so that a server that never comes up fails the test instead of hanging it;
    // `timeout` signals its whole process group, servers the script started included.
    let out = Command::new("timeout")
        .args(["--kill-after=10", "600"])
        .arg(crate::support::tools::bash())
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("KEYWARD_SERVER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn readme_walkthrough_works_verbatim() {
    let script = script("walkthrough");
    assert!(
        script.contains("keyward create secret tls"),
        "walkthrough found"
    );
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("keyward-dev/keyward.sock");
    let log = dir.path().join("dev.log");
    // `keyward dev` with its default data directory, in the walkthrough's working directory.
    let mut cmd = crate::support::binary::command(&["dev"]);
    cmd.current_dir(dir.path());
    let _dev = Proc::start(cmd, &log, &[&sock]);
    let (stdout, stderr) = run_script(dir.path(), &script, "walkthrough");
    for want in [
        "secret/db created",
        "secret/web-tls created",
        "s3cr=t",
        // `--key` prints the value as it is (no newline), then JSONPath's through base64.
        "s3cr=ts3cr=t\n",
        "\nweb-tls   kubernetes.io/tls\n",
        "secret/db edited",
        "root",
        "secret/app created",
        "secret/app configured",
        "user=root",
        "k8s:enc:kms:v2",
        "secret \"frozen\" deleted",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    assert!(
        stderr.contains("The Secret \"frozen\" is invalid") && stderr.contains("data: Forbidden"),
        "the immutable refusal is reported:\n{stderr}"
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["auths"]["registry.example.com"]["auth"],
        "Y2k6aHVudGVyMg=="
    );
    let after = stdout
        .split("rolled back to revision")
        .nth(1)
        .expect("rollback ran");
    assert!(
        after.contains("admin"),
        "rollback restored the first version:\n{after}"
    );
}

/// The README's "Who may read which Secret" section, run verbatim with bash in a fresh
/// directory: it starts its own `keyward dev` with the access flags, and stops it.
#[test]
fn readme_access_section_works_verbatim() {
    let script = script("access");
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = run_script(dir.path(), &script, "access section");
    for want in [
        "Username    system:admin",
        "s3cret",
        "yes",
        "no",
        "secret/api created",
        // kubectl's layout and order: the bootstrap policy's rules first (sorted by their Go
        // string), then the app's own.
        "Resources                                       Non-Resource URLs   Resource Names   Verbs\nselfsubjectreviews.authentication.k8s.io        []                  []               [create]\n",
        "                                                [/version]          []               [get]\nsecrets                                         []                  [db]             [get]\n",
        "Username    system:bootstrap:07401b",
        "OK: 1 file",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    for want in [
        "Error from server (Forbidden): secrets \"cache\" is forbidden: User \"app\" cannot get resource \"secrets\" in API group \"\" in the namespace \"prod\"",
        "Error from server (Forbidden): secrets is forbidden: User \"app\" cannot list resource \"secrets\" in API group \"\" in the namespace \"prod\"",
        "Error from server (Forbidden): secrets \"db\" is forbidden: User \"app\" cannot delete resource \"secrets\" in API group \"\" in the namespace \"prod\"",
        "Error from server (Forbidden): secrets is forbidden: User \"olga\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"",
        "Error from server (Forbidden): secrets \"cache\" is forbidden: User \"system:serviceaccount:prod:app\" cannot get resource \"secrets\" in API group \"\" in the namespace \"prod\"",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in\n{stderr}");
    }
    let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    for value in [
        "s3cret",
        "hunter2",
        "f395accd246ae52d",
        "app-0c9f2f3a1b7d4e5f",
    ] {
        assert!(!log.contains(value), "{value} is in the audit log");
    }
}

/// The README's kubectl walkthrough (the Kubernetes documentation's Secret tasks), verbatim,
/// with the installed `kubectl` against a fresh `keyward dev` in the walkthrough's directory.
#[test]
fn readme_kubectl_walkthrough_works_verbatim() {
    let kubectl = crate::support::tools::kubectl();
    let script = script("kubectl");
    assert!(
        script.contains("kubectl create secret generic"),
        "block found"
    );
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("keyward-dev/keyward.sock");
    let mut cmd = crate::support::binary::command(&["dev"]);
    cmd.current_dir(dir.path());
    let _dev = Proc::start(cmd, &dir.path().join("dev.log"), &[&sock]);
    let kubeconfig = dir.path().join("keyward-dev/kubeconfig");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !kubeconfig.exists() {
        assert!(std::time::Instant::now() < deadline, "no kubeconfig");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // kubectl's discovery cache goes under $HOME: the temp dir's.
    let script = format!(
        "export HOME={}\nexport PATH={}:$PATH\n{script}",
        dir.path().display(),
        kubectl.parent().unwrap().display()
    );
    let (stdout, stderr) = run_script(dir.path(), &script, "kubectl walkthrough");
    for want in [
        "secret/db-user-pass created",
        "secret/db-user-pass-files created",
        "db-user-pass-files   Opaque   2",
        "password:  12 bytes",
        "S!B\\*d$zDsb=",
        "secret/mysecret created",
        "secret/mysecret labeled",
        "secret/mysecret\n",
        "secret/mysecret serverside-applied",
        "secret/frozen patched",
        "tier: backend",
        "secret \"db-user-pass\" deleted",
        "yes\n",
    ] {
        assert!(
            stdout.contains(want),
            "{want:?} missing\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    assert!(
        stderr.contains("field is immutable when `immutable` is set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("secrets is forbidden: User \"alice\" cannot list resource \"secrets\""),
        "{stderr}"
    );
}
