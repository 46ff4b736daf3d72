//! Runs the README walkthrough verbatim against a fresh `keyward dev`: every command must
//! succeed, except those marked `# refused`, which must fail.

use std::process::Command;

use crate::support::Proc;

fn walkthrough() -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("<!-- walkthrough -->")
        .expect("walkthrough start marker");
    let end = readme
        .find("<!-- /walkthrough -->")
        .expect("walkthrough end marker");
    let block = &readme[start..end];
    let code_start = block.find("```sh\n").expect("sh block") + "```sh\n".len();
    let code_end = block[code_start..].find("```").expect("block end") + code_start;
    block[code_start..code_end].to_owned()
}

#[test]
fn readme_walkthrough_works_verbatim() {
    let script: String = walkthrough()
        .lines()
        .map(|l| match l.rsplit_once("  # refused") {
            Some((cmd, _)) => format!(
                "if {cmd}; then echo 'expected a refusal: {}' >&2; exit 1; fi\n",
                cmd.replace('\'', "")
            ),
            None => format!("{l}\n"),
        })
        .collect();
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
    let bin_dir = std::path::Path::new(crate::support::bin())
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(crate::support::tools::bash())
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("KEYWARD_SERVER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walkthrough failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    for want in [
        "secret/db created",
        "secret/web-tls created",
        "s3cr=t",
        "secret/db edited",
        "root",
        "secret/app created",
        "secret/app unchanged",
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
