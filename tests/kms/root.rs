//! The root of trust: root-key rotation and seal migration (keyfile → pkcs11 → shamir → keyfile,
//! in a data directory and on a shared etcd keyring), Shamir unseal through the binary with a
//! restart in between, wrong and mixed shares, bad seal strings and flags, and systemd
//! credentials read through `keyfile:`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::etcd::Etcd;
use crate::support::hsm::SoftHsm;
use crate::support::plugin::{admin_client, decrypt, encrypt, status};
use crate::support::{bin, client_runtime, run, Proc};
use keyward::backend::{Backend, EtcdBackend};
use keyward::crypto::Algorithm;
use keyward::keyring::{
    self, InitOptions, Keyring, KeyringError, KeyringLocation, RotationPolicy, SealedKeyring,
    UnsealStep,
};
use keyward::pb::keyward_v1::RekeyRootRequest;
use keyward::seal::{self, SealSpec};

fn opts() -> InitOptions {
    InitOptions {
        algorithm: Algorithm::Aes256Gcm,
        kdf: None,
    }
}

fn keyfile(dir: &Path, name: &str) -> SealSpec {
    let p = dir.join(name);
    seal::generate_keyfile(&p).unwrap();
    SealSpec::KeyFile(p)
}

async fn open(at: &KeyringLocation, spec: &SealSpec) -> Result<Keyring, KeyringError> {
    Keyring::open(at, spec, RotationPolicy::default()).await
}

/// Opens a Shamir-sealed keyring with `shares`.
async fn unseal(at: &KeyringLocation, shares: &[&str]) -> Keyring {
    let mut sealed = SealedKeyring::open(at, RotationPolicy::default())
        .await
        .unwrap();
    for (i, share) in shares.iter().enumerate() {
        match sealed.add_share(share).await.unwrap() {
            UnsealStep::Progress(p) => {
                assert_eq!(usize::from(p.given), i + 1);
                assert!(i + 1 < shares.len());
            }
            UnsealStep::Unsealed(k) => return k,
        }
    }
    panic!("not enough shares");
}

/// Every ciphertext in `made` decrypts under `kr`, and the keys are still `ids`.
async fn all_decrypt(kr: &Keyring, made: &[(Vec<u8>, Vec<u8>)], ids: &[String]) {
    for (ct, pt) in made {
        assert_eq!(
            kr.decrypt(ct, None).await.unwrap().as_slice(),
            pt.as_slice()
        );
    }
    let now: Vec<String> = kr.keys().into_iter().map(|k| k.key_id).collect();
    assert_eq!(now, ids, "key ids changed");
}

/// keyfile → pkcs11 → shamir → keyfile → keyfile: every ciphertext stays decryptable, key ids
/// never change, and after each step the previous root key opens nothing.
async fn rekey_chain(at: KeyringLocation, dir: &Path) {
    let h = SoftHsm::new();
    let first = keyfile(dir, "a.key");
    Keyring::init(&at, &first, &opts()).await.unwrap();
    let kr = open(&at, &first).await.unwrap();
    let mut made = Vec::new();
    let seal_once = |kr: Keyring, n: u8| async move {
        let pt = vec![n; 32];
        let (ct, _) = kr.encrypt(&pt).await.unwrap();
        (kr, (ct, pt))
    };
    let (kr, c) = seal_once(kr, 1).await;
    made.push(c);
    kr.rotate().await.unwrap();
    let ids: Vec<String> = kr.keys().into_iter().map(|k| k.key_id).collect();
    let (kr, c) = seal_once(kr, 2).await;
    made.push(c);

    // The current root key again is refused: a rotation needs a new one.
    let e = kr.rekey_root(&first, None).await.unwrap_err();
    assert!(matches!(e, KeyringError::Precondition(_)), "{e}");

    // keyfile → pkcs11.
    let r = kr.rekey_root(&h.spec(), None).await.unwrap();
    assert_eq!((r.seal, r.shares.is_none()), ("pkcs11", true));
    assert_eq!(kr.info().seal, "pkcs11");
    all_decrypt(&kr, &made, &ids).await;
    let (kr, c) = seal_once(kr, 3).await;
    made.push(c);
    drop(kr);
    let e = open(&at, &first).await.unwrap_err();
    assert!(
        matches!(
            e,
            KeyringError::SealMismatch {
                keyring: "pkcs11",
                ..
            }
        ),
        "{e}"
    );
    let kr = open(&at, &h.spec()).await.unwrap();
    all_decrypt(&kr, &made, &ids).await;

    // pkcs11 → shamir.
    let shamir: SealSpec = "shamir:shares=3,threshold=2".parse().unwrap();
    let r = kr.rekey_root(&shamir, None).await.unwrap();
    let shares = r.shares.expect("new shares");
    assert_eq!((r.seal, shares.shares.len()), ("shamir", 3));
    drop(kr);
    let e = open(&at, &h.spec()).await.unwrap_err();
    assert!(
        matches!(
            e,
            KeyringError::SealMismatch {
                keyring: "shamir",
                ..
            }
        ),
        "{e}"
    );
    let e = open(&at, &SealSpec::Shamir(None)).await.unwrap_err();
    assert!(matches!(e, KeyringError::Sealed), "{e}");
    let kr = unseal(&at, &[&shares.shares[2], &shares.shares[0]]).await;
    all_decrypt(&kr, &made, &ids).await;
    let (kr, c) = seal_once(kr, 4).await;
    made.push(c);

    // shamir → keyfile → another keyfile.
    let second = keyfile(dir, "b.key");
    let third = keyfile(dir, "c.key");
    kr.rekey_root(&second, None).await.unwrap();
    drop(kr);
    let e = SealedKeyring::open(&at, RotationPolicy::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            KeyringError::SealMismatch {
                keyring: "keyfile",
                ..
            }
        ),
        "{e}"
    );
    let kr = open(&at, &second).await.unwrap();
    kr.rekey_root(&third, None).await.unwrap();
    all_decrypt(&kr, &made, &ids).await;
    drop(kr);
    // The previous root key of the same kind opens nothing: the MAC fails.
    let e = open(&at, &second).await.unwrap_err();
    assert!(matches!(e, KeyringError::Unseal), "{e}");
    let e = open(&at, &first).await.unwrap_err();
    assert!(matches!(e, KeyringError::Unseal), "{e}");
    let kr = open(&at, &third).await.unwrap();
    all_decrypt(&kr, &made, &ids).await;
    assert_eq!(kr.info().seal, "keyfile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_root_through_every_seal_in_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    rekey_chain(KeyringLocation::Dir(dir.path().join("data")), dir.path()).await;
}

fn shared(etcd: &Etcd, backend: &Arc<dyn Backend>) -> KeyringLocation {
    KeyringLocation::Shared {
        backend: backend.clone(),
        prefix: "/keyward".into(),
        label: format!("etcd:{}", etcd.endpoints_flag()),
        stale_after: keyring::DEFAULT_STALE_AFTER,
        state: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_root_through_every_seal_on_a_shared_etcd_keyring() {
    let etcd = Etcd::start();
    let backend: Arc<dyn Backend> = Arc::new(EtcdBackend::connect(&etcd.options()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    rekey_chain(shared(&etcd, &backend), dir.path()).await;
}

/// A replica sharing the keyring notices another one re-sealed it: it reports why it is
/// unhealthy, keeps decrypting with the keys it holds, and opens again with the new seal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_notices_that_another_re_sealed_the_shared_keyring() {
    let etcd = Etcd::start();
    let backend: Arc<dyn Backend> = Arc::new(EtcdBackend::connect(&etcd.options()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let at = shared(&etcd, &backend);
    let old = keyfile(dir.path(), "old.key");
    Keyring::init(&at, &old, &opts()).await.unwrap();
    let a = open(&at, &old).await.unwrap();
    let b = open(&at, &old).await.unwrap();
    let (ct, _) = a.encrypt(b"shared").await.unwrap();
    let new = keyfile(dir.path(), "new.key");
    a.rekey_root(&new, None).await.unwrap();
    let e = b.refresh().await.unwrap_err();
    assert!(matches!(e, KeyringError::Resealed), "{e}");
    let h = b.health();
    assert!(
        !h.healthy && h.problem.unwrap().contains("re-sealed"),
        "{h:?}"
    );
    assert_eq!(b.decrypt(&ct, None).await.unwrap().as_slice(), b"shared");
    let b2 = open(&at, &new).await.unwrap();
    assert!(b2.health().healthy);
    assert_eq!(b2.decrypt(&ct, None).await.unwrap().as_slice(), b"shared");
}

/// Wrong, repeated, mixed and forged shares are refused; none yields a wrong key, and the right
/// shares still open the keyring afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_mixed_shares_never_open_the_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let at = KeyringLocation::Dir(dir.path().join("data"));
    let other_at = KeyringLocation::Dir(dir.path().join("other"));
    let spec: SealSpec = "shamir:shares=5,threshold=3".parse().unwrap();
    let shares = Keyring::create(&at, &spec, &opts())
        .await
        .unwrap()
        .shares
        .unwrap();
    let foreign = Keyring::create(&other_at, &spec, &opts())
        .await
        .unwrap()
        .shares
        .unwrap();
    assert!(matches!(
        Keyring::init(&at, &spec, &opts()).await,
        Err(KeyringError::InvalidInput { field: "seal", .. })
    ));
    let mut sealed = SealedKeyring::open(&at, RotationPolicy::default())
        .await
        .unwrap();
    let refused = |r: Result<UnsealStep, KeyringError>| match r {
        Err(KeyringError::Seal(e)) => e.to_string(),
        other => panic!("expected a refused share, got {other:?}"),
    };
    sealed.add_share(&shares.shares[0]).await.unwrap();
    let e = refused(sealed.add_share(&foreign.shares[1]).await);
    assert!(e.contains("belongs to share set"), "{e}");
    let e = refused(sealed.add_share(&shares.shares[0]).await);
    assert!(e.contains("already given"), "{e}");
    let e = refused(sealed.add_share("kw1-not-a-share").await);
    assert!(e.contains("not a keyward share"), "{e}");
    assert_eq!(sealed.progress().given, 1);
    // A share whose value was changed and its check recomputed (a forgery, not a typo).
    let forged = forge(&shares.shares[1]);
    sealed.add_share(&forged).await.unwrap();
    let e = refused(sealed.add_share(&shares.shares[2]).await);
    assert!(e.contains("do not open this keyring"), "{e}");
    assert_eq!(
        sealed.progress().given,
        0,
        "a failed attempt forgets every share"
    );
    for s in &shares.shares[2..5] {
        if let UnsealStep::Unsealed(kr) = sealed.add_share(s).await.unwrap() {
            assert!(kr.health().healthy);
            return;
        }
    }
    panic!("the right shares did not open the keyring");
}

/// `share` with its first value byte flipped and a valid check (SHA-256 over the same fields).
fn forge(share: &str) -> String {
    let parts: Vec<&str> = share.split('-').collect();
    let mut set = [0u8; 8];
    hex::decode_to_slice(parts[1], &mut set).unwrap();
    let threshold: u8 = parts[2].parse().unwrap();
    let x: u8 = parts[3].parse().unwrap();
    let mut y = hex::decode(parts[4]).unwrap();
    y[0] ^= 0x01;
    let mut data = b"keyward/v1 shamir share\0".to_vec();
    data.extend_from_slice(&set);
    data.push(threshold);
    data.push(x);
    data.extend_from_slice(&y);
    let check = &keyward::crypto::sha256(&data)[..4];
    format!(
        "kw1-{}-{threshold}-{x}-{}-{}",
        parts[1],
        hex::encode(&y),
        hex::encode(check)
    )
}

/// `keyward kms unseal` with `share` on stdin; (success, stdout, stderr).
fn unseal_stdin(admin: &Path, share: &str) -> (bool, String, String) {
    unseal_with(admin, &[], share)
}

/// `keyward kms unseal --reset` with an empty line on stdin.
fn unseal_stdin_reset(admin: &Path) -> (bool, String, String) {
    unseal_with(admin, &["--reset"], "")
}

fn unseal_with(admin: &Path, flags: &[&str], share: &str) -> (bool, String, String) {
    let mut child = Command::new(bin())
        .args(["kms", "unseal", "--admin-socket", admin.to_str().unwrap()])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{share}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Serves sealed with Shamir shares, with metrics on `metrics` if given.
fn serve_sealed(
    data: &Path,
    socket: &Path,
    admin: &Path,
    log: &Path,
    metrics: Option<&str>,
) -> Proc {
    let mut args = vec![
        "kms",
        "serve",
        "--data",
        data.to_str().unwrap(),
        "--seal",
        "shamir",
        "--socket",
        socket.to_str().unwrap(),
        "--admin-socket",
        admin.to_str().unwrap(),
    ];
    if let Some(addr) = metrics {
        args.extend(["--metrics-listen", addr]);
    }
    Proc::spawn_ready(&args, &[], log, &[socket, admin])
}

/// `keyward_keyring_sealed` and `keyward_keyring_healthy` as scraped from `addr`.
fn sealed_and_healthy(addr: &str) -> (f64, f64) {
    use crate::support::metrics::{scrape_parsed, value};
    let families = scrape_parsed(addr);
    (
        value(&families, "keyward_keyring_sealed", &[]),
        value(&families, "keyward_keyring_healthy", &[]),
    )
}

/// init with shares in their own files → serve sealed (Status says so, Encrypt refused) → unseal
/// 3 of 5 one per call → serving; restart → sealed again → unseal with three other shares → every
/// ciphertext decrypts; then `rekey-root` back to a key file through the CLI.
#[test]
fn shamir_sealed_unsealed_serving_with_a_restart_in_between() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (data, shares, socket, admin) = (p("data"), p("shares"), p("kms.sock"), p("admin.sock"));
    let (ok, out, err) = run(&[
        "kms",
        "init",
        "--data",
        data.to_str().unwrap(),
        "--seal",
        "shamir:shares=5,threshold=3",
        "--share-dir",
        shares.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("sealed by shamir") && out.contains("wrote 5 Shamir shares"),
        "{out}"
    );
    assert!(
        !out.contains("kw1-"),
        "shares written to files are not printed: {out}"
    );
    use std::os::unix::fs::PermissionsExt;
    let share_file = |n: u32| shares.join(format!("share-{n}"));
    for n in 1..=5 {
        let mode = std::fs::metadata(share_file(n))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let share = |n: u32| {
        std::fs::read_to_string(share_file(n))
            .unwrap()
            .trim()
            .to_owned()
    };
    let rt = client_runtime();

    let metrics = format!("127.0.0.1:{}", crate::support::free_port());
    let proc = serve_sealed(&data, &socket, &admin, &p("serve1.log"), Some(&metrics));
    let (key_id, healthz) = rt.block_on(status(&socket));
    assert!(
        key_id.is_empty() && healthz.contains("sealed: 0 of 3"),
        "{healthz}"
    );
    assert_eq!(
        sealed_and_healthy(&metrics),
        (1.0, 0.0),
        "sealed, not healthy"
    );
    let e = rt
        .block_on(async {
            crate::support::plugin::v2_client(&socket)
                .await
                .encrypt(keyward::pb::kms_v2::EncryptRequest {
                    plaintext: vec![1; 32],
                    uid: "t".into(),
                })
                .await
        })
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().contains("sealed"), "{}", e.message());
    let admin_s = admin.to_str().unwrap();
    let (ok, out, err) = run(&["kms", "status", "--admin-socket", admin_s]);
    assert!(
        !ok && out.contains("0 of 3 shares given") && err.contains("kms unseal"),
        "{out}{err}"
    );
    let (ok, _, err) = run(&["kms", "keys", "--admin-socket", admin_s]);
    assert!(!ok && err.contains("sealed"), "{err}");

    let (ok, out, err) = unseal_stdin(&admin, &share(1));
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "share accepted: 1 of 3 given; 2 more needed");
    // --reset without a share forgets those given, and says so.
    let (ok, out, err) = unseal_stdin_reset(&admin);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "shares forgotten: 0 of 3 given; 3 needed");
    let (ok, out, err) = unseal_stdin(&admin, &share(1));
    assert!(ok && out.contains("1 of 3 given"), "{out}{err}");
    let (ok, out, err) = run(&[
        "kms",
        "unseal",
        "--admin-socket",
        admin_s,
        "--share-file",
        share_file(4).to_str().unwrap(),
    ]);
    assert!(ok && out.contains("2 of 3 given"), "{out}{err}");
    let (_, healthz) = rt.block_on(status(&socket));
    assert!(healthz.contains("sealed: 2 of 3"), "{healthz}");
    let (ok, out, err) = unseal_stdin(&admin, &share(5));
    assert!(
        ok && out.starts_with("unsealed: the keyring is open; primary key_id kw-1-"),
        "{out}{err}"
    );
    let (key_id, healthz) = rt.block_on(status(&socket));
    assert_eq!(healthz, "ok");
    assert_eq!(
        sealed_and_healthy(&metrics),
        (0.0, 1.0),
        "unsealed and healthy"
    );
    let (ct, ct_key) = rt.block_on(encrypt(&socket, b"before the restart"));
    assert_eq!(ct_key, key_id);
    let (ok, _, err) = unseal_stdin(&admin, &share(2));
    assert!(!ok && err.contains("already open"), "{err}");
    drop(proc);

    // Restart: sealed again, nothing given yet.
    let proc = serve_sealed(&data, &socket, &admin, &p("serve2.log"), None);
    let (_, healthz) = rt.block_on(status(&socket));
    assert!(healthz.contains("sealed: 0 of 3"), "{healthz}");
    assert_eq!(
        rt.block_on(decrypt(&socket, &ct, &key_id))
            .unwrap_err()
            .code(),
        tonic::Code::Unavailable
    );
    for n in [2, 3] {
        assert!(unseal_stdin(&admin, &share(n)).0);
    }
    let (ok, out, err) = unseal_stdin(&admin, &share(1));
    assert!(ok && out.starts_with("unsealed:"), "{out}{err}");
    assert_eq!(
        rt.block_on(decrypt(&socket, &ct, &key_id)).unwrap(),
        b"before the restart"
    );
    let log = proc.stderr();
    for n in 1..=5 {
        assert!(!log.contains(&share(n)), "a share reached the log");
    }

    // Back to a key file through the CLI (a relative path, made absolute for the plugin).
    seal::generate_keyfile(&p("new.key")).unwrap();
    let (ok, out, err) = run_in(
        dir.path(),
        &[
            "kms",
            "rekey-root",
            "--new-seal",
            "keyfile:new.key",
            "--admin-socket",
            admin_s,
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("key ids are unchanged") && err.contains("--seal 'keyfile:"),
        "{out}{err}"
    );
    drop(proc);
    let new_seal = format!("keyfile:{}", p("new.key").display());
    let mut proc = Proc::spawn(
        &[
            "kms",
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--seal",
            &new_seal,
            "--socket",
            socket.to_str().unwrap(),
        ],
        &[],
        &p("serve3.log"),
        &socket,
    );
    assert_eq!(
        rt.block_on(decrypt(&socket, &ct, &key_id)).unwrap(),
        b"before the restart"
    );
    proc.signal(rustix::process::Signal::TERM);
    proc.wait(Duration::from_secs(20));
}

/// Runs the binary in `dir`; (success, stdout, stderr).
fn run_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env_remove("KEYWARD_SEAL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Printed shares (no --share-dir) come once, one per line; a share from another keyring is
/// refused by the plugin, naming why.
#[test]
fn printed_shares_and_mixed_shares_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let init = |data: &PathBuf| {
        let (ok, out, err) = run(&[
            "kms",
            "init",
            "--data",
            data.to_str().unwrap(),
            "--seal",
            "shamir:shares=3,threshold=2",
        ]);
        assert!(ok, "{err}");
        let shares: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with("kw1-"))
            .map(str::to_owned)
            .collect();
        assert_eq!(shares.len(), 3, "{out}");
        assert!(out.contains("any 2 of these 3"), "{out}");
        shares
    };
    let mine = init(&p("data"));
    let theirs = init(&p("other"));
    let (socket, admin) = (p("kms.sock"), p("admin.sock"));
    let _proc = serve_sealed(&p("data"), &socket, &admin, &p("serve.log"), None);
    let (ok, _, err) = unseal_stdin(&admin, &theirs[0]);
    assert!(
        !ok && err.contains("belongs to share set") && err.contains("hint:"),
        "{err}"
    );
    let mut typo = mine[0].clone();
    let at = typo.len() - 12;
    let c = if &typo[at..=at] == "a" { "b" } else { "a" };
    typo.replace_range(at..=at, c);
    let (ok, _, err) = unseal_stdin(&admin, &typo);
    assert!(
        !ok && err.contains("check does not match") && !err.contains(&typo),
        "{err}"
    );
    let (ok, _, err) = unseal_stdin(&admin, "");
    assert!(!ok && err.contains("no share given"), "{err}");
    assert!(unseal_stdin(&admin, &mine[1]).0);
    let (ok, out, err) = unseal_stdin(&admin, &mine[2]);
    assert!(ok && out.starts_with("unsealed:"), "{out}{err}");
    // A re-key to new shares through the admin API returns them once.
    let rt = client_runtime();
    let r = rt
        .block_on(async {
            admin_client(&admin)
                .await
                .rekey_root(RekeyRootRequest {
                    new_seal: "shamir:shares=4,threshold=3".into(),
                })
                .await
        })
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.seal.as_str(), r.shares.len(), r.threshold),
        ("shamir", 4, 3)
    );
    let e = rt
        .block_on(async {
            admin_client(&admin)
                .await
                .rekey_root(RekeyRootRequest {
                    new_seal: "shamir:shares=2,threshold=3".into(),
                })
                .await
        })
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("new_seal: invalid seal shamir: shares:"),
        "{}",
        e.message()
    );
    // The files of a new seal are the plugin's own: a key file in a directory others may
    // write (one the caller could have planted) is refused, and nothing changes.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let planted = open.join("root.key");
    keyward::seal::generate_keyfile(&planted).unwrap();
    let e = rt
        .block_on(async {
            admin_client(&admin)
                .await
                .rekey_root(RekeyRootRequest {
                    new_seal: format!("keyfile:{}", planted.display()),
                })
                .await
        })
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("has mode 0777: a seal's files, and the directories above them, must not be writable by group or others"),
        "{}",
        e.message()
    );
}

/// Bad seal strings and flag combinations fail before anything is created, naming the field.
#[test]
fn bad_seals_and_flags_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let key = dir.path().join("root.key");
    seal::generate_keyfile(&key).unwrap();
    let keyfile = format!("keyfile:{}", key.display());
    for (args, want) in [
        (
            vec!["kms", "init", "--data", d, "--seal", "shamir"],
            "needs its counts: shamir:shares=N,threshold=M",
        ),
        (
            vec![
                "kms",
                "init",
                "--data",
                d,
                "--seal",
                "shamir:shares=2,threshold=3",
            ],
            "invalid seal shamir: shares: 2 is fewer than the threshold 3",
        ),
        (
            vec![
                "kms",
                "init",
                "--data",
                d,
                "--seal",
                "shamir:shares=5,threshold=1",
            ],
            "threshold: must be at least 2",
        ),
        (
            vec!["kms", "init", "--data", d, "--seal", "shamir:n=5"],
            "invalid seal shamir: n: unknown field",
        ),
        (
            vec![
                "kms",
                "init",
                "--data",
                d,
                "--seal",
                &keyfile,
                "--share-dir",
                "x",
            ],
            "--share-dir only applies with --seal shamir",
        ),
        (
            vec!["kms", "init", "--data", d, "--seal", "pkcs11:module=/m"],
            "invalid seal pkcs11: token: required",
        ),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok && err.contains(want), "{args:?}: {err}");
        assert!(!data.exists(), "{args:?} created the data directory");
    }
    // A share directory that already holds a share is refused before the keyring is made.
    let shares = dir.path().join("shares");
    std::fs::create_dir(&shares).unwrap();
    std::fs::write(shares.join("share-2"), "x").unwrap();
    let (ok, _, err) = run(&[
        "kms",
        "init",
        "--data",
        d,
        "--seal",
        "shamir:shares=3,threshold=2",
        "--share-dir",
        shares.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("share-2 already exists"), "{err}");
    assert!(!data.exists());
    // A seal's files must be the plugin's own, as rekey-root's: a key file in a directory
    // others may write (where anyone could have planted or swapped it) is refused by init
    // and by serve.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    let planted = open.join("root.key");
    seal::generate_keyfile(&planted).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let planted = format!("keyfile:{}", planted.display());
    let unsafe_dir = format!(
        "--seal: {} has mode 0777: a seal's files, and the directories above them, must not be writable by group or others",
        open.display()
    );
    let (ok, _, err) = run(&["kms", "init", "--data", d, "--seal", &planted]);
    assert!(!ok && err.contains(&unsafe_dir), "{err}");
    assert!(!data.exists());

    assert!(run(&["kms", "init", "--data", d, "--seal", &keyfile]).0);
    let sock = dir.path().join("planted.sock");
    let (ok, _, err) = run(&[
        "kms",
        "serve",
        "--data",
        d,
        "--seal",
        &planted,
        "--socket",
        sock.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains(&unsafe_dir), "{err}");
    assert!(!sock.exists());
    let socket = dir.path().join("kms.sock");
    let s = socket.to_str().unwrap();
    for (args, want) in [
        (
            vec![
                "kms", "serve", "--data", d, "--seal", "shamir", "--socket", s,
            ],
            "--seal shamir needs --admin-socket",
        ),
        (
            vec![
                "kms",
                "serve",
                "--data",
                d,
                "--seal",
                "shamir",
                "--socket",
                s,
                "--admin-socket",
                "a.sock",
            ],
            "the keyring is sealed with keyfile, but --seal gave shamir",
        ),
        (
            vec![
                "kms",
                "serve",
                "--data",
                d,
                "--seal",
                &keyfile,
                "--socket",
                s,
                "--admin-socket",
                s,
            ],
            "--admin-socket must differ from --socket",
        ),
        (
            vec!["kms", "rekey-root", "--new-seal", "vault:x"],
            "--new-seal: invalid seal \"vault:x\"",
        ),
        (
            vec!["kms", "rekey-root", "--new-seal", "shamir"],
            "new shares need their counts",
        ),
        (
            vec![
                "kms",
                "rekey-root",
                "--new-seal",
                &keyfile,
                "--share-dir",
                "x",
            ],
            "--share-dir only applies with --seal shamir",
        ),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok && err.contains(want), "{args:?}: {err}");
        assert!(!socket.exists());
    }
}

/// systemd decrypts a `LoadCredentialEncrypted=` credential into the unit's credentials
/// directory (`%d`, i.e. `$CREDENTIALS_DIRECTORY`), mode 0400 in a read-only directory; the
/// `keyfile:` seal reads it from there, and the deploy example wires exactly that.
#[tokio::test]
async fn keyfile_reads_a_systemd_credential() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials/keyward-kms.service");
    std::fs::create_dir_all(&creds).unwrap();
    let key = creds.join("root.key");
    std::fs::write(&key, keyward::crypto::random_array::<32>().unwrap()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o500)).unwrap();
    let seal: SealSpec = format!("keyfile:{}/root.key", creds.display())
        .parse()
        .unwrap();
    let at = KeyringLocation::Dir(dir.path().join("data"));
    let first = Keyring::init(&at, &seal, &opts()).await.unwrap();
    let kr = open(&at, &seal).await.unwrap();
    assert_eq!(*kr.health().primary_key_id, *first.key_id);
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();

    let unit = include_str!("../../deploy/systemd/keyward-kms-credentials.conf");
    for want in [
        "LoadCredentialEncrypted=root.key:/etc/keyward/root.key.cred",
        "--seal keyfile:%d/root.key",
        "ExecStart=\n",
    ] {
        assert!(unit.contains(want), "the drop-in lacks {want:?}");
    }
}
