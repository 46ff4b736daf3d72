//! etcd over TLS with client-certificate authentication, as production etcd runs: the backend
//! and both commands (`server --backend etcd`, `kms serve --keyring etcd`) with `--etcd-ca`,
//! `--etcd-cert` and `--etcd-key`, and the failures a wrong setup must give.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::support::etcd::member_command;
use crate::support::free_port;
use crate::support::{run, Proc};
use keyward::backend::etcd::{EtcdBackend, EtcdOptions};
use keyward::backend::{Backend, Expect};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

fn write(path: &Path, pem: &str, mode: u32) -> PathBuf {
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_owned()
}

fn pki(dir: &Path) -> Pki {
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        (params.self_signed(&key).unwrap(), key)
    };
    let (ca_cert, ca_key) = ca("keyward test etcd CA");
    let (other_cert, _) = ca("some other CA");
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["keyward".into()]);
    Pki {
        ca: write(&dir.join("ca.crt"), &ca_cert.pem(), 0o644),
        server_cert: write(&dir.join("server.crt"), &server_cert, 0o644),
        server_key: write(&dir.join("server.key"), &server_key, 0o600),
        client_cert: write(&dir.join("client.crt"), &client_cert, 0o644),
        client_key: write(&dir.join("client.key"), &client_key, 0o600),
        other_ca: write(&dir.join("other-ca.crt"), &other_cert.pem(), 0o644),
    }
}

/// A one-member etcd that serves clients only over TLS and requires a client certificate.
struct TlsEtcd {
    dir: tempfile::TempDir,
    pki: Pki,
    url: String,
    child: Child,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsEtcd {
    fn start() -> TlsEtcd {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(dir.path());
        let url = format!("https://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = member_command(
            "tls",
            &dir.path().join("data"),
            &url,
            &peer,
            &format!("tls={peer}"),
            log,
        )
        .arg("--cert-file")
        .arg(&pki.server_cert)
        .arg("--key-file")
        .arg(&pki.server_key)
        .arg("--trusted-ca-file")
        .arg(&pki.ca)
        .arg("--client-cert-auth")
        .spawn()
        .unwrap();
        let etcd = TlsEtcd {
            dir,
            pki,
            url,
            child,
        };
        // Ready once a properly authenticated client can read.
        let rt = runtime();
        let backend = rt.block_on(async { EtcdBackend::connect(&etcd.options()).unwrap() });
        let deadline = Instant::now() + Duration::from_secs(30);
        while rt.block_on(backend.check()).is_err() {
            assert!(
                Instant::now() < deadline,
                "TLS etcd did not start: {}",
                std::fs::read_to_string(etcd.dir.path().join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    fn options(&self) -> EtcdOptions {
        let read = |p: &Path| std::fs::read(p).unwrap();
        EtcdOptions {
            endpoints: vec![self.url.clone()],
            ca_pem: Some(read(&self.pki.ca)),
            cert_pem: Some(read(&self.pki.client_cert)),
            key_pem: Some(read(&self.pki.client_key).into()),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
        }
    }

    fn tls_flags(&self) -> Vec<String> {
        vec![
            "--etcd-endpoints".into(),
            self.url.clone(),
            "--etcd-ca".into(),
            self.pki.ca.display().to_string(),
            "--etcd-cert".into(),
            self.pki.client_cert.display().to_string(),
            "--etcd-key".into(),
            self.pki.client_key.display().to_string(),
        ]
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_backend_talks_tls_with_a_client_certificate_and_refuses_wrong_setups() {
    let etcd = TlsEtcd::start();
    let rt = runtime();
    rt.block_on(async {
        let backend = EtcdBackend::connect(&etcd.options()).unwrap();
        let applied = backend
            .put(
                b"/registry/secrets/default/tls",
                b"v".to_vec(),
                Expect::Absent,
            )
            .await
            .unwrap();
        assert!(matches!(
            applied,
            keyward::backend::WriteOutcome::Applied { .. }
        ));
        let (kv, _) = backend
            .get(b"/registry/secrets/default/tls", None)
            .await
            .unwrap();
        assert_eq!(kv.unwrap().value, b"v");

        // No client certificate: etcd refuses the handshake.
        let no_cert = EtcdBackend::connect(&EtcdOptions {
            cert_pem: None,
            key_pem: None,
            ..etcd.options()
        })
        .unwrap();
        assert!(no_cert.check().await.is_err());
        // A CA that did not sign etcd's certificate: keyward refuses the server.
        let wrong_ca = EtcdBackend::connect(&EtcdOptions {
            ca_pem: Some(std::fs::read(&etcd.pki.other_ca).unwrap()),
            ..etcd.options()
        })
        .unwrap();
        assert!(wrong_ca.check().await.is_err());
    });
    // An https endpoint without a CA, a certificate without its key: each is refused before
    // any connection, naming the option (the command line names its flags instead, below).
    let err = EtcdBackend::connect(&EtcdOptions {
        ca_pem: None,
        cert_pem: None,
        key_pem: None,
        ..etcd.options()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("is https; give ca_pem"), "{err}");
    let err = EtcdBackend::connect(&EtcdOptions {
        key_pem: None,
        ..etcd.options()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("cert_pem and key_pem"), "{err}");
    assert!(!err.contains("--etcd"), "{err}");

    // The command line reads the files: a key file others can read is refused, naming the flag
    // and not the key.
    let readable = write(
        &etcd.dir.path().join("readable.key"),
        &std::fs::read_to_string(&etcd.pki.client_key).unwrap(),
        0o644,
    );
    let mut flags = etcd.tls_flags();
    let key_at = flags.len() - 1;
    flags[key_at] = readable.display().to_string();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let config = crate::support::encryption_config(etcd.dir.path(), "      - identity: {}\n");
    let socket = etcd.dir.path().join("refused.sock");
    let mut args = vec![
        "server",
        "--backend",
        "etcd",
        "--encryption-config",
        config.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
    ];
    args.extend_from_slice(&flags);
    let (ok, _, err) = run(&args);
    assert!(!ok);
    assert!(err.contains("error: --etcd-key: "), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

#[test]
fn server_and_shared_keyring_run_on_tls_etcd() {
    let etcd = TlsEtcd::start();
    let dir = tempfile::tempdir().unwrap();
    let tls = etcd.tls_flags();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();

    // A shared keyring over TLS, served by one replica.
    let key = dir.path().join("root.key");
    keyward::seal::generate_keyfile(&key).unwrap();
    let seal = format!("keyfile:{}", key.display());
    let mut args = vec!["kms", "init", "--keyring", "etcd", "--seal", &seal];
    args.extend_from_slice(&tls);
    let (ok, _, err) = run(&args);
    assert!(ok, "{err}");
    let kms_socket = dir.path().join("kms.sock");
    let mut args = vec![
        "kms",
        "serve",
        "--keyring",
        "etcd",
        "--seal",
        &seal,
        "--socket",
        kms_socket.to_str().unwrap(),
    ];
    args.extend_from_slice(&tls);
    let _plugin = Proc::spawn(&args, &[], &dir.path().join("kms.log"), &kms_socket);

    // The store on the same etcd, encrypting through that plugin with KMS v2.
    let config = crate::support::encryption_config(
        dir.path(),
        &crate::support::kms_provider("v2", "shared", &kms_socket),
    );
    let store_socket = dir.path().join("keyward.sock");
    let mut args = vec![
        "server",
        "--backend",
        "etcd",
        "--encryption-config",
        config.to_str().unwrap(),
        "--socket",
        store_socket.to_str().unwrap(),
    ];
    args.extend_from_slice(&tls);
    let _server = Proc::spawn(&args, &[], &dir.path().join("server.log"), &store_socket);
    let server = format!("unix://{}", store_socket.display());
    let (ok, out, err) = run(&[
        "--server",
        &server,
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=over-tls",
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&[
        "--server", &server, "get", "secret", "db", "--key", "password",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim_end(), "over-tls");

    // What etcd holds is KMS v2 ciphertext.
    let rt = runtime();
    let stored = rt.block_on(async {
        let backend = EtcdBackend::connect(&etcd.options()).unwrap();
        backend
            .get(b"/registry/secrets/default/db", None)
            .await
            .unwrap()
            .0
            .unwrap()
            .value
    });
    assert!(stored.starts_with(b"k8s:enc:kms:v2:shared:"));
    assert!(!stored.windows(8).any(|w| w == b"over-tls"));

    // Without the client certificate the server cannot start, and says where it failed.
    let (ok, _, err) = run(&[
        "server",
        "--backend",
        "etcd",
        "--etcd-endpoints",
        &etcd.url,
        "--etcd-ca",
        etcd.pki.ca.to_str().unwrap(),
        "--encryption-config",
        config.to_str().unwrap(),
        "--socket",
        dir.path().join("other.sock").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("cannot reach etcd at https://127.0.0.1:"),
        "{err}"
    );
}
