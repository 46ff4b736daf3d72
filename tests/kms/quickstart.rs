//! The README's HSM and Shamir quick starts, run verbatim with bash in a fresh directory (lines
//! marked `# refused` must fail), as `tests/cli/readme.rs` runs the walkthrough.

use std::process::Command;

use crate::support::hsm;

/// The `sh` block between `<!-- NAME -->` and `<!-- /NAME -->` in the README.
fn block(name: &str) -> String {
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
    block[code_start..code_end].to_owned()
}

/// Runs the quick start `name` in a temp dir with the built binary first on PATH; returns its
/// stdout, and the directory it ran in.
fn run_block(name: &str) -> (String, tempfile::TempDir) {
    let script: String = block(name)
        .lines()
        .map(|l| match l.rsplit_once("  # refused") {
            Some((cmd, _)) => format!(
                "if {cmd}; then echo 'expected a refusal: {}' >&2; exit 1; fi\n",
                cmd.replace('\'', "")
            ),
            None => format!("{l}\n"),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
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
        .env_remove("KEYWARD_SEAL")
        .env_remove("SOFTHSM2_CONF")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "quick start {name} failed\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, dir)
}

#[test]
fn the_hsm_quick_start_works_verbatim() {
    hsm::conf(); // checks softhsm2 and opensc are installed, naming the packages if not
    let (out, _dir) = run_block("quickstart-hsm");
    for want in [
        "sealed by pkcs11",
        "healthz:         ok",
        "sealed by:       pkcs11",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
}

#[test]
fn the_shamir_quick_start_works_verbatim() {
    let (out, dir) = run_block("quickstart-shamir");
    for want in [
        "wrote 5 Shamir shares",
        "0 of 3 shares given",
        "share accepted: 1 of 3 given; 2 more needed",
        "share accepted: 2 of 3 given; 1 more needed",
        "unsealed: the keyring is open; primary key_id kw-1-",
        "sealed by:       shamir",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(dir.path().join("shares/share-5").exists());
}
