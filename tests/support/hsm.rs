//! SoftHSM2 tokens for the PKCS#11 seal ([`SoftHsm`]), and the root-key source the keyring and
//! plugin harnesses use ([`test_seal`]): a key file, or a SoftHSM key when the test process runs
//! with `KEYWARD_TEST_SEAL=pkcs11` (how `tests/kms/hsm.rs` runs the plugin and keyring suites
//! on an HSM).
//!
//! SoftHSM reads `SOFTHSM2_CONF` when a process initialises it, so every token of one test
//! process lives in one token directory of its own under the target directory's scratch space
//! (`SOFTHSM2_CONF` is set once, before any token is made, and child processes inherit it);
//! tokens are told apart by label. Keys are made the way the README says: `pkcs11-tool --keygen
//! --key-type AES:32 --sensitive --private` (non-extractable, usable only after login).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::tools::require_tool;
use keyward::seal::{self, Pkcs11Spec, SealSpec};

/// Debian's path of the SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// How to install what these tests need.
pub const INSTALL: &str = "apt-get install -y softhsm2 opensc";
/// The user PIN of every test token.
pub const PIN: &str = "87654321";
/// The environment variable that switches [`test_seal`] to SoftHSM.
pub const SEAL_ENV: &str = "KEYWARD_TEST_SEAL";

/// This process's SoftHSM configuration file (made, and `SOFTHSM2_CONF` set, on first use).
pub fn conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        require_tool("softhsm2-util", INSTALL);
        require_tool("pkcs11-tool", INSTALL);
        assert!(
            Path::new(MODULE).is_file(),
            "{MODULE} is missing; install it with `{INSTALL}`"
        );
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("softhsm");
        // Token directories of test processes that are gone.
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let pid = e.file_name().to_string_lossy().into_owned();
                if !Path::new("/proc").join(&pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let home = root.join(std::process::id().to_string());
        let tokens = home.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = home.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        // Set once, before this process or its children initialise SoftHSM.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        conf
    })
}

/// One SoftHSM token with one AES key, and a PIN file for it.
pub struct SoftHsm {
    /// Holds the PIN file, unless [`SoftHsm::in_dir`] put it in the caller's directory.
    pub dir: Option<tempfile::TempDir>,
    pub token: String,
    pub key_label: String,
    pub pin_file: PathBuf,
}

fn run_tool(cmd: &mut Command) {
    // Another process of the tests may be creating a token in the same directory, which SoftHSM's
    // tools cannot read halfway: try again a few times.
    let mut out = cmd.output().expect("run a SoftHSM tool");
    for _ in 0..20 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        out = cmd.output().expect("run a SoftHSM tool");
    }
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SoftHsm {
    /// A fresh token with a unique label and the key `keyward-root` on it; its PIN file in a
    /// temp dir of its own.
    pub fn new() -> SoftHsm {
        let dir = tempfile::tempdir().unwrap();
        let mut hsm = Self::in_dir(dir.path());
        hsm.dir = Some(dir);
        hsm
    }

    /// A fresh token as [`SoftHsm::new`] makes, its PIN file `dir/hsm.pin`.
    pub fn in_dir(dir: &Path) -> SoftHsm {
        static MAKING: Mutex<()> = Mutex::new(());
        conf();
        let _one = MAKING.lock().unwrap_or_else(|e| e.into_inner());
        let token = format!("kw-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        run_tool(Command::new("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            &token,
            "--so-pin",
            "12345678",
            "--pin",
            PIN,
        ]));
        let pin_file = dir.join("hsm.pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let hsm = SoftHsm {
            dir: None,
            token,
            key_label: "keyward-root".into(),
            pin_file,
        };
        hsm.keygen("keyward-root");
        hsm
    }

    /// Creates another non-extractable AES-256 key labelled `label` on the token.
    pub fn keygen(&self, label: &str) {
        self.keygen_with(label, "AES:32", &["--sensitive", "--private"]);
    }

    /// Creates a key of `key_type` labelled `label` with pkcs11-tool's attribute `flags`.
    pub fn keygen_with(&self, label: &str, key_type: &str, flags: &[&str]) {
        let args = [
            &["--keygen", "--key-type", key_type, "--label", label],
            flags,
        ]
        .concat();
        self.logged_in_tool(&args);
    }

    /// Deletes the key labelled `label` from the token.
    pub fn delete_key(&self, label: &str) {
        self.logged_in_tool(&["--delete-object", "--type", "secrkey", "--label", label]);
    }

    /// pkcs11-tool on this token, logged in, with `args`.
    fn logged_in_tool(&self, args: &[&str]) {
        run_tool(
            Command::new("pkcs11-tool")
                .args([
                    "--module",
                    MODULE,
                    "--token-label",
                    &self.token,
                    "--login",
                    "--pin",
                    PIN,
                ])
                .args(args),
        );
    }

    /// The seal for the key `key_label` on this token.
    pub fn spec_for(&self, key_label: &str) -> Pkcs11Spec {
        Pkcs11Spec {
            module: MODULE.into(),
            token: self.token.clone(),
            key_label: key_label.to_owned(),
            pin_file: self.pin_file.clone(),
        }
    }

    /// `pkcs11:` with this token's key.
    pub fn spec(&self) -> SealSpec {
        SealSpec::Pkcs11(self.spec_for(&self.key_label))
    }

    /// The `--seal` value of [`SoftHsm::spec`].
    pub fn seal(&self) -> String {
        self.spec().to_string()
    }
}

/// Whether this test process runs its keyrings on SoftHSM (`KEYWARD_TEST_SEAL=pkcs11`).
pub fn on_hsm() -> bool {
    std::env::var(SEAL_ENV).is_ok_and(|v| v == "pkcs11")
}

/// The root-key source a test keyring in `dir` uses: a new key file `dir/root.key`, or with
/// `KEYWARD_TEST_SEAL=pkcs11` a key on a new SoftHSM token (PIN file `dir/hsm.pin`).
pub fn test_seal(dir: &Path) -> SealSpec {
    if on_hsm() {
        SoftHsm::in_dir(dir).spec()
    } else {
        let key = dir.join("root.key");
        seal::generate_keyfile(&key).expect("generate the key file");
        SealSpec::KeyFile(key)
    }
}
