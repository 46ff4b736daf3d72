//! Shared helpers for integration tests: an in-process plugin on real Unix sockets, and the real
//! `keyward` binary as a child process.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyward::crypto::Algorithm;
use keyward::keyring::{InitOptions, Keyring, RotationPolicy};
use keyward::kms;
use keyward::pb::keyward_v1::kms_admin_client::KmsAdminClient;
use keyward::pb::kms_v1beta1::key_management_service_client::KeyManagementServiceClient as V1Client;
use keyward::pb::kms_v2::key_management_service_client::KeyManagementServiceClient as V2Client;
use keyward::seal::{self, SealSpec};
use keyward::uds as socket;
use tonic::transport::Channel;

/// The plugin served in this process on sockets in a temp dir.
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
            &data,
            &spec,
            &InitOptions {
                algorithm: alg,
                kdf: None,
            },
        )
        .unwrap();
        let socket = dir.path().join("kms.sock");
        let (keyring, stop, task) =
            Self::serve(&data, &spec, &socket, &dir.path().join("admin.sock"));
        Plugin {
            socket,
            admin: dir.path().join("admin.sock"),
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
        let (keyring, stop, task) = Self::serve(data, &spec, socket, &admin);
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
    fn serve(
        data: &Path,
        spec: &SealSpec,
        socket: &Path,
        admin: &Path,
    ) -> (
        Keyring,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    ) {
        let keyring = Keyring::open(data, spec, RotationPolicy::default()).unwrap();
        let (l, g1) = socket::bind(socket, socket::SocketAccess::default()).unwrap();
        let (a, g2) = socket::bind(admin, socket::SocketAccess::default()).unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let k = keyring.clone();
        let task = tokio::spawn(async move {
            let _guards = (g1, g2);
            kms::serve(l, Some(a), k, async move {
                let _ = rx.await;
            })
            .await
        });
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
