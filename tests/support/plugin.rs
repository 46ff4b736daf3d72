//! The KMS plugin in this process: a fresh keyring in a temp dir ([`TempKeyring`]), served on
//! real Unix sockets as the CLI serves it ([`Plugin`]); replicas of the real binary sharing a
//! keyring in etcd ([`Cluster`]); and KMS v2 and admin clients for any plugin socket.

use std::path::{Path, PathBuf};

use super::etcd::Etcd;
use super::{run, Proc};
use keyward::crypto::Algorithm;
use keyward::keyring::{InitOptions, Keyring, KeyringLocation, RotationPolicy};
use keyward::kms::PluginServer;
use keyward::pb::keyward_v1::kms_admin_client::KmsAdminClient;
use keyward::pb::kms_v1beta1::key_management_service_client::KeyManagementServiceClient as V1Client;
use keyward::pb::kms_v2::key_management_service_client::KeyManagementServiceClient as V2Client;
use keyward::pb::kms_v2::{DecryptRequest, EncryptRequest, StatusRequest};
use keyward::seal::SealSpec;
use keyward::uds as socket;
use tonic::transport::Channel;

/// A keyring made by `Keyring::init` in a temp dir: the key file `DIR/root.key` seals it (or,
/// with `KEYWARD_TEST_SEAL=pkcs11`, a SoftHSM key: see [`super::hsm::test_seal`]), its data
/// directory is `DIR/data`. The temp dir lives as long as this value.
pub struct TempKeyring {
    pub dir: tempfile::TempDir,
    /// The root key file (absent on SoftHSM).
    pub key: PathBuf,
    /// `keyfile:` + [`TempKeyring::key`], or the SoftHSM seal.
    pub spec: SealSpec,
    /// The data directory.
    pub data: PathBuf,
}

impl TempKeyring {
    /// Generates a key file and initialises a keyring with `algorithm` under it.
    pub async fn init(algorithm: Algorithm) -> TempKeyring {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("root.key");
        let spec = super::hsm::test_seal(dir.path());
        let data = dir.path().join("data");
        Keyring::init(
            &KeyringLocation::Dir(data.clone()),
            &spec,
            &InitOptions {
                algorithm,
                kdf: None,
            },
        )
        .await
        .expect("init the keyring");
        TempKeyring {
            dir,
            key,
            spec,
            data,
        }
    }

    /// Opens the keyring with the default rotation policy (see [`open_now`]).
    pub fn open(&self) -> Keyring {
        open_now(&KeyringLocation::Dir(self.data.clone()), &self.spec)
    }
}

/// The plugin served in this process on sockets in a temp dir, started as the CLI starts it
/// (`kms::PluginServer`: sockets, key maintenance, drain).
pub struct Plugin {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub admin: PathBuf,
    pub keyring: Keyring,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Plugin {
    /// A fresh keyring of `alg` ([`TempKeyring`]) served on `DIR/kms.sock` and `DIR/admin.sock`.
    pub async fn start(alg: Algorithm) -> Plugin {
        let k = TempKeyring::init(alg).await;
        let socket = k.dir.path().join("kms.sock");
        let admin = k.dir.path().join("admin.sock");
        let (keyring, stop, task) = Self::serve(&k.data, &k.spec, &socket, &admin).await;
        Plugin {
            socket,
            admin,
            dir: k.dir,
            keyring,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Serves an existing keyring again on `socket` (its temp dir is owned by the caller).
    pub async fn restart(data: &Path, key: &Path, socket: &Path) -> Plugin {
        Self::restart_with(data, &SealSpec::KeyFile(key.to_owned()), socket).await
    }

    /// Serves an existing keyring sealed by `spec` again on `socket`.
    pub async fn restart_with(data: &Path, spec: &SealSpec, socket: &Path) -> Plugin {
        let admin = socket.with_extension("admin");
        let (keyring, stop, task) = Self::serve(data, spec, socket, &admin).await;
        Plugin {
            dir: tempfile::tempdir().unwrap(),
            socket: socket.to_owned(),
            admin,
            keyring,
            stop: Some(stop),
            task: Some(task),
        }
    }

    #[allow(clippy::type_complexity)]
    async fn serve(
        data: &Path,
        spec: &SealSpec,
        socket: &Path,
        admin: &Path,
    ) -> (
        Keyring,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ) {
        let keyring = open_now(&KeyringLocation::Dir(data.to_owned()), spec);
        let server = PluginServer::start(
            keyring.clone(),
            socket,
            Some(admin),
            socket::SocketAccess::default(),
        )
        .unwrap();
        // Let key maintenance make its first pass (its self-test counts as an encryption) before
        // a test measures anything.
        tokio::task::yield_now().await;
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        (keyring, stop, task)
    }

    pub async fn v2(&self) -> V2Client<Channel> {
        v2_client(&self.socket).await
    }

    pub async fn v1(&self) -> V1Client<Channel> {
        V1Client::new(socket::unix_channel(&self.socket).await.unwrap())
    }

    pub async fn admin(&self) -> KmsAdminClient<Channel> {
        admin_client(&self.admin).await
    }

    /// Stops the server (drain) and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// Opens a keyring on a runtime of its own, blocking this thread until it is open. A (re)start
/// of the plugin then takes no time on the test's clock, paused or not, and no task of the test
/// runs meanwhile: from the test's side the plugin comes up at once, as one started in another
/// process would.
pub fn open_now(location: &KeyringLocation, spec: &SealSpec) -> Keyring {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(Keyring::open(location, spec, RotationPolicy::default()))
                .unwrap()
        })
        .join()
        .unwrap()
    })
}

/// A KMS v2 client on the plugin socket `socket`.
pub async fn v2_client(socket: &Path) -> V2Client<Channel> {
    V2Client::new(socket::unix_channel(socket).await.unwrap())
}

/// An admin client on the admin socket `socket`.
pub async fn admin_client(socket: &Path) -> KmsAdminClient<Channel> {
    KmsAdminClient::new(socket::unix_channel(socket).await.unwrap())
}

/// Every key the admin API on `socket` lists, oldest first.
pub async fn list_keys(socket: &Path) -> Vec<keyward::pb::keyward_v1::KeyInfo> {
    admin_client(socket)
        .await
        .list_keys(keyward::pb::keyward_v1::ListKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
}

/// KMS v2 `Status` through `socket`: (key_id, healthz).
pub async fn status(socket: &Path) -> (String, String) {
    let s = v2_client(socket)
        .await
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    (s.key_id, s.healthz)
}

/// KMS v2 `Encrypt` of `plaintext` through `socket`: (ciphertext, key_id).
pub async fn encrypt(socket: &Path, plaintext: &[u8]) -> (Vec<u8>, String) {
    let r = v2_client(socket)
        .await
        .encrypt(EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    (r.ciphertext, r.key_id)
}

/// KMS v2 `Decrypt` of `ciphertext` under `key_id` through `socket`: the plaintext, or the
/// plugin's status.
pub async fn decrypt(
    socket: &Path,
    ciphertext: &[u8],
    key_id: &str,
) -> Result<Vec<u8>, tonic::Status> {
    v2_client(socket)
        .await
        .decrypt(DecryptRequest {
            ciphertext: ciphertext.to_vec(),
            uid: "test".into(),
            key_id: key_id.to_owned(),
            annotations: Default::default(),
        })
        .await
        .map(|r| r.into_inner().plaintext)
}

/// Polls `client`'s KMS v2 `Status` every `every` until it reports `key_id` (healthz staying
/// `ok`); returns the time since `since`. Gives up after 15 s.
pub async fn wait_for_key_id(
    client: &mut V2Client<Channel>,
    key_id: &str,
    since: std::time::Instant,
    every: std::time::Duration,
) -> std::time::Duration {
    loop {
        let s = client
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(s.healthz, "ok");
        if s.key_id == key_id {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < std::time::Duration::from_secs(15),
            "replica still reports {}, not {key_id}",
            s.key_id
        );
        tokio::time::sleep(every).await;
    }
}

/// One `keyward kms serve --keyring etcd` child of a [`Cluster`].
pub struct Replica {
    /// Its KMS socket.
    pub socket: PathBuf,
    /// Its admin socket.
    pub admin: PathBuf,
    pub proc: Proc,
}

/// Plugin replicas sharing one keyring in a real etcd: `keyward kms serve --keyring etcd`
/// processes on their own sockets in a temp dir, sealed by one key file.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The root key file.
    pub key: PathBuf,
    pub etcd: Etcd,
    pub replicas: Vec<Replica>,
}

/// `keyward kms init --keyring etcd` on `etcd`, sealed by the key file `key`.
pub fn init_in_etcd(etcd: &Etcd, key: &Path) {
    let seal = format!("keyfile:{}", key.display());
    let (ok, out, err) = run(&[
        "kms",
        "init",
        "--keyring",
        "etcd",
        "--etcd-endpoints",
        &etcd.endpoints_flag(),
        "--seal",
        &seal,
    ]);
    assert!(ok, "kms init failed: {err}");
    assert!(out.contains("etcd key /keyward/kms/keyring"), "{out}");
}

impl Cluster {
    /// A fresh etcd, a keyring initialised in it, and `n` replicas started with the extra
    /// `kms serve` flags `extra`, each ready on its socket.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let etcd = Etcd::start();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("root.key");
        keyward::seal::generate_keyfile(&key).unwrap();
        init_in_etcd(&etcd, &key);
        let mut c = Cluster {
            dir,
            key,
            etcd,
            replicas: Vec::new(),
        };
        for i in 0..n {
            let r = c.spawn(i, extra);
            c.replicas.push(r);
        }
        c
    }

    /// The `kms serve` command line of replica `i`: sockets `kms{i}.sock` and `admin{i}.sock`,
    /// state directory `state{i}`, then `extra`.
    pub fn serve_args(&self, i: usize, extra: &[&str]) -> Vec<String> {
        let path = |name: String| self.dir.path().join(name).display().to_string();
        let mut args: Vec<String> = [
            "kms",
            "serve",
            "--keyring",
            "etcd",
            "--etcd-endpoints",
            &self.etcd.endpoints_flag(),
            "--seal",
            &format!("keyfile:{}", self.key.display()),
            "--socket",
            &path(format!("kms{i}.sock")),
            "--admin-socket",
            &path(format!("admin{i}.sock")),
            "--state",
            &path(format!("state{i}")),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Starts replica `i` ([`Cluster::serve_args`]; log `replica{i}.log`).
    pub fn spawn(&self, i: usize, extra: &[&str]) -> Replica {
        let socket = self.dir.path().join(format!("kms{i}.sock"));
        let admin = self.dir.path().join(format!("admin{i}.sock"));
        let args = self.serve_args(i, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn(
            &args,
            &[("RUST_LOG", "keyward=debug")],
            &self.dir.path().join(format!("replica{i}.log")),
            &socket,
        );
        Replica {
            socket,
            admin,
            proc,
        }
    }
}
