//! The PKCS#11 seal on SoftHSM2: the plugin and keyring suites run again with every keyring
//! sealed by an HSM key, and each way the HSM can refuse (missing module, wrong PIN, missing key,
//! a token that stops answering) gives a clear error and changes nothing.

use std::path::Path;
use std::process::Command;

use crate::support::hsm::{self, SoftHsm};
use crate::support::plugin::{decrypt, encrypt, status};
use crate::support::{run, Plugin};
use keyward::crypto::Algorithm;
use keyward::keyring::{InitOptions, Keyring, KeyringError, KeyringLocation, RotationPolicy};
use keyward::seal::{Pkcs11Spec, SealSpec};

/// `tests/kms/plugin.rs` and `tests/kms/keyring.rs` pass with their keyrings sealed by SoftHSM
/// keys: this test binary runs those modules again in a child with `KEYWARD_TEST_SEAL=pkcs11`.
#[test]
fn the_plugin_and_keyring_suites_pass_on_softhsm() {
    hsm::conf();
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["plugin::", "keyring::", "--test-threads", "2"])
        .env(hsm::SEAL_ENV, "pkcs11")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the suites failed on SoftHSM:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ran = stdout
        .lines()
        .filter(|l| l.starts_with("test ") && l.ends_with(" ok"))
        .count();
    assert!(ran >= 15, "too few tests ran on SoftHSM:\n{stdout}");
}

fn opts() -> InitOptions {
    InitOptions {
        algorithm: Algorithm::Aes256Gcm,
        kdf: None,
    }
}

/// Runs `f` with a copy of `spec` changed by `change`, expecting init to fail with `want` and
/// create nothing.
async fn init_refused(
    dir: &Path,
    spec: &Pkcs11Spec,
    change: impl FnOnce(&mut Pkcs11Spec),
    want: &str,
) {
    let mut bad = spec.clone();
    change(&mut bad);
    let data = dir.join("refused");
    let e = Keyring::init(
        &KeyringLocation::Dir(data.clone()),
        &SealSpec::Pkcs11(bad.clone()),
        &opts(),
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains(want), "{bad}: {text}");
    assert!(!text.contains(hsm::PIN), "the PIN leaked: {text}");
    assert!(!data.exists(), "a refused init created {}", data.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hsm_refusal_is_clear_and_changes_nothing() {
    let h = SoftHsm::new();
    let spec = h.spec_for(&h.key_label);
    let dir = tempfile::tempdir().unwrap();
    init_refused(
        dir.path(),
        &spec,
        |s| s.module = "/nonexistent/libpkcs11.so".into(),
        "module /nonexistent/libpkcs11.so: no such file",
    )
    .await;
    init_refused(
        dir.path(),
        &spec,
        |s| s.token = "no-such-token".into(),
        "no initialized token labelled \"no-such-token\"",
    )
    .await;
    // The tokens there are named: labels quoted, SoftHSM's free slot as not initialized.
    init_refused(
        dir.path(),
        &spec,
        |s| s.token = "no-such-token".into(),
        ": not initialized)",
    )
    .await;
    init_refused(
        dir.path(),
        &spec,
        |s| s.key_label = "missing".into(),
        "no AES key labelled \"missing\"",
    )
    .await;
    let wrong_pin = dir.path().join("wrong.pin");
    std::fs::write(&wrong_pin, "11112222\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong_pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    init_refused(
        dir.path(),
        &spec,
        |s| s.pin_file = wrong_pin.clone(),
        "wrong PIN for token",
    )
    .await;
    std::fs::set_permissions(&wrong_pin, std::fs::Permissions::from_mode(0o644)).unwrap();
    init_refused(
        dir.path(),
        &spec,
        |s| s.pin_file = wrong_pin.clone(),
        "chmod 600",
    )
    .await;
    // Two keys with one label are ambiguous.
    h.keygen("twice");
    h.keygen("twice");
    init_refused(
        dir.path(),
        &spec,
        |s| s.key_label = "twice".into(),
        "2 AES keys are labelled \"twice\"",
    )
    .await;

    // The right seal works; opening with another key of the same token fails without change.
    let data = KeyringLocation::Dir(dir.path().join("data"));
    let first = Keyring::init(&data, &SealSpec::Pkcs11(spec.clone()), &opts())
        .await
        .unwrap();
    h.keygen("other");
    let e = Keyring::open(
        &data,
        &SealSpec::Pkcs11(h.spec_for("other")),
        RotationPolicy::default(),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("does not open this keyring's wrapped root key"),
        "{e}"
    );
    let e = Keyring::open(
        &data,
        &SealSpec::KeyFile(dir.path().join("x")),
        RotationPolicy::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            KeyringError::SealMismatch {
                keyring: "pkcs11",
                given: "keyfile"
            }
        ),
        "{e}"
    );
    let kr = Keyring::open(&data, &SealSpec::Pkcs11(spec), RotationPolicy::default())
        .await
        .unwrap();
    assert_eq!(&*kr.health().primary_key_id, first.key_id);
    assert_eq!(kr.info().seal, "pkcs11");
}

/// The HSM is used once at start: a plugin keeps serving when its token goes away, a re-key to
/// the missing key fails and changes nothing, and a restart fails clearly until the key is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hsm_failing_mid_run_changes_nothing() {
    let h = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spec = h.spec();
    Keyring::init(&KeyringLocation::Dir(data.clone()), &spec, &opts())
        .await
        .unwrap();
    let socket = dir.path().join("kms.sock");
    let p = Plugin::restart_with(&data, &spec, &socket).await;
    let (ct, key_id) = encrypt(&socket, b"seed").await;
    // The token loses the key (as an HSM that was reset or swapped would).
    h.delete_key(&h.key_label);
    let (key_now, healthz) = status(&socket).await;
    assert_eq!(
        (key_now.as_str(), healthz.as_str()),
        (key_id.as_str(), "ok")
    );
    assert_eq!(decrypt(&socket, &ct, &key_id).await.unwrap(), b"seed");
    let e = p.keyring.rekey_root(&spec, None).await.unwrap_err();
    assert!(e.to_string().contains("no AES key labelled"), "{e}");
    // The refused re-key left the keyring as it was: it keeps serving under its root key.
    let (ct2, _) = encrypt(&socket, b"after").await;
    assert_eq!(decrypt(&socket, &ct2, &key_id).await.unwrap(), b"after");
    p.stop().await;
    let e = Keyring::open(
        &KeyringLocation::Dir(data.clone()),
        &spec,
        RotationPolicy::default(),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("no AES key labelled \"keyward-root\""),
        "{e}"
    );
}

/// `keyward kms init|serve --seal pkcs11:...` through the binary, and the strict parser's
/// messages.
#[test]
fn the_cli_serves_on_an_hsm_and_names_bad_fields() {
    let h = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (ok, out, err) = run(&["kms", "init", "--data", d, "--seal", &h.seal()]);
    assert!(ok, "{err}");
    assert!(out.contains("sealed by pkcs11"), "{out}");
    for (seal, want) in [
        (
            "pkcs11:module=/m.so;token=t;key-label=k",
            "invalid seal pkcs11: pin-file: required",
        ),
        (
            "pkcs11:module=/m.so;token=t;key-label=k;pin-file=/p;slot=1",
            "invalid seal pkcs11: slot: unknown field",
        ),
        (
            "pkcs11:module=/m.so;token=;key-label=k;pin-file=/p",
            "invalid seal pkcs11: token: must not be empty",
        ),
        (
            "tpm2:x",
            "expected keyfile:PATH, passphrase-file:PATH, pkcs11:",
        ),
    ] {
        let other = dir.path().join("other");
        let (ok, _, err) = crate::support::kms_init(&other, seal);
        assert!(!ok && err.contains(want), "{seal}: {err}");
        assert!(!other.exists());
    }
    let socket = dir.path().join("kms.sock");
    let mut p = crate::support::Proc::spawn(
        &[
            "kms",
            "serve",
            "--data",
            d,
            "--seal",
            &h.seal(),
            "--socket",
            socket.to_str().unwrap(),
        ],
        &[],
        &dir.path().join("serve.log"),
        &socket,
    );
    p.signal(rustix::process::Signal::TERM);
    assert!(p.wait(std::time::Duration::from_secs(20)).success());
    assert!(!p.stderr().contains(hsm::PIN), "the PIN reached the log");
}

/// A wrapping key weaker than the token can keep it (not private: usable without login and
/// stored unencrypted by SoftHSM; AES-128) still opens the keyring, with a warning that says
/// what is weak and how to make a strong one; a strong key gets no warning.
#[test]
fn a_weak_hsm_key_is_named_in_a_warning() {
    let h = SoftHsm::new();
    h.keygen_with("weak", "AES:16", &["--sensitive"]);
    let dir = tempfile::tempdir().unwrap();
    let init = |name: &str, seal: &str| {
        let data = dir.path().join(name);
        let (ok, _, err) = crate::support::kms_init(&data, seal);
        assert!(ok, "{err}");
        err
    };
    let weak = format!("{}", SealSpec::Pkcs11(h.spec_for("weak")));
    let err = init("weak", &weak);
    assert!(
        err.contains("the HSM key is not private (usable without login; SoftHSM stores it unencrypted), shorter than 256 bits; create it with pkcs11-tool --keygen --key-type AES:32 --sensitive --private"),
        "{err}"
    );
    let err = init("strong", &h.seal());
    assert!(!err.contains("the HSM key is"), "{err}");
}
