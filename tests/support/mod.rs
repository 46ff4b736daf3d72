//! Shared helpers for integration tests: an in-process plugin on real Unix sockets, an
//! in-process store server started by the library's `StoreServer`, and the real `keyward`
//! binary as a child process.
#![allow(dead_code)] // each test crate uses a different subset

pub mod etcd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyward::backend::Revision;
use keyward::crypto::Algorithm;
use keyward::keyring::{InitOptions, Keyring, KeyringLocation, RotationPolicy};
use keyward::kms::PluginServer;
use keyward::names::{Namespace, SecretName};
use keyward::pb::keyward_v1::kms_admin_client::KmsAdminClient;
use keyward::pb::kms_v1beta1::key_management_service_client::KeyManagementServiceClient as V1Client;
use keyward::pb::kms_v2::key_management_service_client::KeyManagementServiceClient as V2Client;
use keyward::seal::{self, SealSpec};
use keyward::uds as socket;
use tonic::transport::Channel;

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
    pub async fn start(alg: Algorithm) -> Plugin {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("root.key");
        seal::generate_keyfile(&key).unwrap();
        let spec = SealSpec::KeyFile(key);
        let data = dir.path().join("data");
        Keyring::init(
            &KeyringLocation::Dir(data.clone()),
            &spec,
            &InitOptions {
                algorithm: alg,
                kdf: None,
            },
        )
        .await
        .unwrap();
        let socket = dir.path().join("kms.sock");
        let admin = dir.path().join("admin.sock");
        let (keyring, stop, task) = Self::serve(&data, &spec, &socket, &admin).await;
        Plugin {
            socket,
            admin,
            dir,
            keyring,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Serves an existing keyring again on `socket` (its temp dir is owned by the caller).
    pub async fn restart(data: &Path, key: &Path, socket: &Path) -> Plugin {
        let spec = SealSpec::KeyFile(key.to_owned());
        let admin = socket.with_extension("admin");
        let (keyring, stop, task) = Self::serve(data, &spec, socket, &admin).await;
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
        V2Client::new(socket::unix_channel(&self.socket).await.unwrap())
    }

    pub async fn v1(&self) -> V1Client<Channel> {
        V1Client::new(socket::unix_channel(&self.socket).await.unwrap())
    }

    pub async fn admin(&self) -> KmsAdminClient<Channel> {
        KmsAdminClient::new(socket::unix_channel(&self.admin).await.unwrap())
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

/// Path of the built `keyward` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keyward")
}

/// Runs the binary to completion; returns (success, stdout, stderr).
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
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

/// A `keyward` child process; killed on drop.
pub struct Proc {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Proc {
    /// Spawns the binary with stderr to a file and waits until `ready` accepts connections.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], stderr_path: &Path, ready: &Path) -> Proc {
        let stderr = std::fs::File::create(stderr_path).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env_remove("KEYWARD_SEAL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut p = Proc {
            child,
            stderr_path: stderr_path.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(ready).is_err() {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("keyward exited early ({status}): {}", p.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "socket never came up: {}",
                p.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        p
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Waits for exit up to `limit`; returns the exit status.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `keyward dev` child process in a temp dir, and the binary run against it.
pub struct DevServer {
    _proc: Proc,
    pub dir: tempfile::TempDir,
    /// The store's socket.
    pub socket: PathBuf,
    /// `unix://` + socket, for `--server`.
    pub server: String,
}

impl DevServer {
    /// Starts `keyward dev --data DIR/kw` and waits for its store socket.
    pub fn start() -> DevServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("kw");
        let socket = data.join("keyward.sock");
        let proc = Proc::spawn(
            &["dev", "--data", data.to_str().unwrap()],
            &[],
            &dir.path().join("dev.log"),
            &socket,
        );
        DevServer {
            _proc: proc,
            server: format!("unix://{}", socket.display()),
            socket,
            dir,
        }
    }

    /// A path inside the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs the binary with `--server`, in the temp dir, with `env` and optional `stdin`;
    /// returns (exit code, stdout, stderr).
    pub fn command(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> (i32, String, String) {
        use std::io::Write as _;
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("--server")
            .arg(&self.server)
            .current_dir(self.dir.path())
            .env_remove("KEYWARD_SERVER")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let o = child.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

/// Replaces the per-run values of a printed object (uid, creationTimestamp, resourceVersion)
/// with placeholders, so whole outputs can be compared.
pub fn normalise(s: &str) -> String {
    let mut out = Vec::new();
    for line in s.lines() {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        out.push(if t.starts_with("uid: ") {
            format!("{indent}uid: UID")
        } else if t.starts_with("creationTimestamp: ") {
            format!("{indent}creationTimestamp: TIME")
        } else if t.starts_with("resourceVersion: ") {
            format!("{indent}resourceVersion: \"RV\"")
        } else {
            line.to_owned()
        });
    }
    out.join("\n") + if s.ends_with('\n') { "\n" } else { "" }
}

/// A store server started in this process through the library's
/// [`keyward::server::StoreServer`], as `keyward server` starts it, serving until stopped.
pub struct StoreHarness {
    /// The store's Unix socket.
    pub socket: PathBuf,
    /// The store being served (released by `stop`, so its backend can be reopened).
    store: Option<std::sync::Arc<keyward::store::Store>>,
    /// The TCP listener's address, if the options asked for one.
    pub tcp_addr: Option<std::net::SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), keyward::server::ServerError>>>,
}

impl StoreHarness {
    /// Starts the store with `options` and serves it in a task.
    pub async fn start(options: keyward::server::StoreOptions) -> StoreHarness {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let server = keyward::server::StoreServer::start(options, async move {
            let _ = rx.await;
        })
        .await
        .expect("start the store server");
        StoreHarness {
            socket: server.socket().to_owned(),
            store: Some(server.store().clone()),
            tcp_addr: server.tcp_addr(),
            stop: Some(stop),
            task: Some(tokio::spawn(server.serve())),
        }
    }

    /// The store being served.
    pub fn store(&self) -> &std::sync::Arc<keyward::store::Store> {
        self.store.as_ref().expect("the store server is serving")
    }

    /// A Secrets client on the Unix socket.
    pub async fn client(&self) -> keyward::pb::keyward_v1::secrets_client::SecretsClient<Channel> {
        keyward::pb::keyward_v1::secrets_client::SecretsClient::new(
            socket::unix_channel(&self.socket).await.unwrap(),
        )
    }

    /// An Encryption client on the Unix socket.
    pub async fn encryption(
        &self,
    ) -> keyward::pb::keyward_v1::encryption_client::EncryptionClient<Channel> {
        keyward::pb::keyward_v1::encryption_client::EncryptionClient::new(
            socket::unix_channel(&self.socket).await.unwrap(),
        )
    }

    /// Shuts the server down (watches close, calls drain) and waits until it has stopped and
    /// released its backend and socket. Does nothing the second time.
    pub async fn stop(&mut self) {
        self.store = None;
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().expect("the store server stops cleanly");
        }
    }
}

/// Writes an EncryptionConfiguration for Secrets with `providers` (YAML list items indented by
/// six spaces, e.g. `"      - identity: {}\n"`) to `dir/encryption-config.yaml`.
pub fn encryption_config(dir: &Path, providers: &str) -> PathBuf {
    let path = dir.join("encryption-config.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
        ),
    )
    .unwrap();
    path
}

/// The provider line for KMS v2 through the plugin on `socket`, named `kw`.
pub fn kms_v2_provider(socket: &Path) -> String {
    format!(
        "      - kms: {{apiVersion: v2, name: kw, endpoint: 'unix://{}'}}\n",
        socket.display()
    )
}

/// Revision `r` (tests name revisions by number).
pub fn rev(r: i64) -> Revision {
    Revision::new(r).expect("a revision is at least 1")
}

/// Namespace `ns`, which must be valid.
pub fn ns(ns: &str) -> Namespace {
    Namespace::try_from(ns).expect("a valid namespace")
}

/// Secret name `name`, which must be valid.
pub fn name(name: &str) -> SecretName {
    SecretName::try_from(name).expect("a valid Secret name")
}
