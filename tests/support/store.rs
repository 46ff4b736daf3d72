//! The secret store in this process ([`StoreHarness`], started through the library's
//! `StoreServer` as `keyward server` starts it), and EncryptionConfiguration files and provider
//! lines for the store under test.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::encryption::{config, Encryption, ParseOptions};
use keyward::pb::keyward_v1 as pb;
use keyward::pb::keyward_v1::secrets_client::SecretsClient;
use keyward::store::model::SecretBytes;
use keyward::store::{Secret, Store};
use keyward::uds as socket;
use tonic::transport::Channel;

/// A store server started in this process through the library's
/// [`keyward::server::StoreServer`], as `keyward server` starts it, serving until stopped.
pub struct StoreHarness {
    /// The store's Unix socket.
    pub socket: PathBuf,
    /// The store being served (released by `stop`, so its backend can be reopened).
    store: Option<std::sync::Arc<keyward::store::Store>>,
    /// The TCP listener's address, if the options asked for one.
    pub tcp_addr: Option<std::net::SocketAddr>,
    /// The Kubernetes API listener's address, if the options asked for one.
    pub kube_addr: Option<std::net::SocketAddr>,
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
            kube_addr: server.kube_addr(),
            stop: Some(stop),
            task: Some(tokio::spawn(server.serve())),
        }
    }

    /// The store being served.
    pub fn store(&self) -> &std::sync::Arc<keyward::store::Store> {
        self.store.as_ref().expect("the store server is serving")
    }

    /// A Secrets client on the Unix socket.
    pub async fn client(&self) -> SecretsClient<Channel> {
        secrets_client(&self.socket).await
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

/// An EncryptionConfiguration for Secrets with `providers` (YAML list items indented by six
/// spaces, e.g. `"      - identity: {}\n"`, as [`kms_provider`] and [`keys_provider`] make them).
pub fn config_text(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
    )
}

/// Writes [`config_text`]`(providers)` to `dir/encryption-config.yaml`.
pub fn encryption_config(dir: &Path, providers: &str) -> PathBuf {
    let path = dir.join("encryption-config.yaml");
    std::fs::write(&path, config_text(providers)).unwrap();
    path
}

/// The aesgcm key (32 bytes of `1`), base64 as in an EncryptionConfiguration.
pub const AESGCM_KEY: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";

/// Writes an EncryptionConfiguration with one aesgcm key (`k1` = [`AESGCM_KEY`]) to
/// `dir/enc.yaml`, readable by its owner only (as `keyward server` asks of a file holding keys).
pub fn aesgcm_config(dir: &Path) -> PathBuf {
    let path = dir.join("enc.yaml");
    write_private(
        &path,
        config_text(&keys_provider("aesgcm", &[("k1", AESGCM_KEY)])).as_bytes(),
    );
    path
}

/// Writes `data` to `path` with mode 0600.
pub fn write_private(path: &Path, data: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, data).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// The provider line for a KMS plugin of `api_version` (`v1` or `v2`) named `name` on `socket`.
pub fn kms_provider(api_version: &str, name: &str, socket: &Path) -> String {
    format!(
        "      - kms: {{apiVersion: {api_version}, name: {name}, endpoint: 'unix://{}'}}\n",
        socket.display()
    )
}

/// The provider line for KMS v2 through the plugin on `socket`, named `kw`.
pub fn kms_v2_provider(socket: &Path) -> String {
    kms_provider("v2", "kw", socket)
}

/// The provider line for a local-key provider (`aescbc`, `aesgcm`, `secretbox`) with `keys` as
/// (name, base64 secret) pairs.
pub fn keys_provider(kind: &str, keys: &[(&str, &str)]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(n, k)| format!("{{name: {n}, secret: {k}}}"))
        .collect();
    format!("      - {kind}: {{keys: [{}]}}\n", keys.join(", "))
}

/// A Secrets client on the store socket `socket`.
pub async fn secrets_client(socket: &Path) -> SecretsClient<Channel> {
    SecretsClient::new(
        socket::unix_channel(socket)
            .await
            .expect("connect to keyward"),
    )
}

/// A store without a server, on a sled directory at `dir`, encrypting as the
/// EncryptionConfiguration `text` says, under `/registry`.
pub async fn sled_store(dir: &Path, text: &str) -> Arc<Store> {
    sled_store_with(dir, text, SledOptions::default()).await
}

/// [`sled_store`] with the sled backend's options `opts`.
pub async fn sled_store_with(dir: &Path, text: &str, opts: SledOptions) -> Arc<Store> {
    let cfg = config::parse(text, ParseOptions::default()).expect("a valid configuration");
    let backend = SledBackend::open(dir, opts).expect("open the sled store");
    Arc::new(Store::new(
        Arc::new(backend),
        Arc::new(Encryption::build(&cfg).await),
        "/registry",
    ))
}

/// The Secret `namespace/name` whose key `v` holds `value`.
pub fn secret_v(namespace: &str, name: &str, value: &[u8]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = name.into();
    s.metadata.namespace = namespace.into();
    s.data.insert("v".into(), SecretBytes::new(value.to_vec()));
    s
}

/// The API Secret `ns/name` with `data` (key, value) pairs, as a client sends it.
pub fn pb_secret(ns: &str, name: &str, data: &[(&str, &[u8])]) -> pb::Secret {
    pb::Secret {
        metadata: Some(pb::ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        }),
        data: data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect(),
        ..Default::default()
    }
}
