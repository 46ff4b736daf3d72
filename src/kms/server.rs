//! The KMS plugin as a whole: its sockets bound, key maintenance running, and the services
//! served until shutdown. The CLI, tests and benches all start the plugin this way.

use std::future::Future;
use std::path::Path;

use tokio::net::UnixListener;

use crate::keyring::{Keyring, MaintenanceGuard};
use crate::metrics::{KeyringReading, Metrics, RpcLayer};
use crate::uds::{self, SocketAccess, SocketError, SocketGuard};

/// The KMS plugin with its sockets bound and key maintenance running.
#[derive(Debug)]
pub struct PluginServer {
    keyring: Keyring,
    kms: UnixListener,
    admin: Option<UnixListener>,
    /// Remove the socket files when the server is done.
    guards: Vec<SocketGuard>,
    rpc: RpcLayer,
    _maintenance: MaintenanceGuard,
}

impl PluginServer {
    /// Binds the KMS socket at `socket` (with `access`) and, if given, the admin socket at
    /// `admin` (owner only), and starts key maintenance at the interval the keyring's rotation
    /// policy asks for. Must be called inside a tokio runtime.
    pub fn start(
        keyring: Keyring,
        socket: &Path,
        admin: Option<&Path>,
        access: SocketAccess,
    ) -> Result<PluginServer, SocketError> {
        let (kms, kms_guard) = uds::bind(socket, access)?;
        let mut guards = vec![kms_guard];
        let admin = match admin {
            Some(path) => {
                let (listener, guard) = uds::bind(path, SocketAccess::default())?;
                guards.push(guard);
                Some(listener)
            }
            None => None,
        };
        let maintenance = keyring.start_maintenance(keyring.info().policy.maintenance_interval());
        tracing::info!(
            socket = %socket.display(),
            admin_socket = ?admin.is_some().then(|| guards[1].path().display().to_string()),
            key_id_hash = %crate::crypto::key_id_hash(&keyring.health().primary_key_id),
            "serving KMS v2 and v1"
        );
        Ok(PluginServer {
            keyring,
            kms,
            admin,
            guards,
            rpc: RpcLayer::disabled(),
            _maintenance: maintenance,
        })
    }

    /// Reports to `metrics`: every call on both sockets (`keyward_kms_*`) and the keyring's
    /// state (`keyward_keyring_*`, read at each scrape).
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.rpc = metrics.kms_layer();
        let keyring = self.keyring.clone();
        metrics.watch_keyring(move || KeyringReading::of(&keyring));
        self
    }

    /// The keyring being served.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Serves until `shutdown` completes and in-flight calls have drained (see [`super::serve`]);
    /// then stops maintenance and removes the socket files.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let PluginServer {
            keyring,
            kms,
            admin,
            guards,
            rpc,
            _maintenance,
        } = self;
        let res = super::serve(kms, admin, keyring, rpc, shutdown).await;
        drop(guards);
        res
    }
}
