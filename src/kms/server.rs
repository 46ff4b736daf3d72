//! The KMS plugin as a whole: its sockets bound, key maintenance running, and the services
//! served until shutdown. The CLI, tests and benches all start the plugin this way.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;

use super::PluginKeyring;
use crate::audit::Auditor;
use crate::keyring::{Keyring, SealedKeyring};
use crate::metrics::{KeyringReading, Metrics, RpcLayer};
use crate::uds::{self, PeerAllow, SocketAccess, SocketError, SocketGuard};

/// The KMS plugin with its sockets bound and key maintenance running (once its keyring is open).
#[derive(Debug)]
pub struct PluginServer {
    keyring: Arc<PluginKeyring>,
    kms: UnixListener,
    admin: Option<UnixListener>,
    /// Records the admin socket's calls.
    admin_audit: Auditor,
    /// Who may call the admin socket.
    admin_allow: PeerAllow,
    /// Remove the socket files when the server is done.
    guards: Vec<SocketGuard>,
    rpc: RpcLayer,
}

impl PluginServer {
    /// Binds the KMS socket at `socket` (with `access`) and, if given, the admin socket at
    /// `admin` (mode 0600; callers checked by [`with_admin_allow`](Self::with_admin_allow)), and starts key maintenance at the interval the keyring's rotation
    /// policy asks for. Must be called inside a tokio runtime.
    pub fn start(
        keyring: Keyring,
        socket: &Path,
        admin: Option<&Path>,
        access: SocketAccess,
    ) -> Result<PluginServer, SocketError> {
        let key_id = keyring.health().primary_key_id;
        let server = Self::bind(Arc::new(keyring.into()), socket, admin, access)?;
        tracing::info!(
            socket = %socket.display(),
            admin_socket = admin.map(|p| p.display().to_string()),
            key_id_hash = %crate::crypto::key_id_hash(&key_id),
            "serving KMS v2 and v1"
        );
        Ok(server)
    }

    /// Like [`PluginServer::start`] for a keyring sealed with Shamir shares: serves sealed
    /// (`Status` says so, `Encrypt` and `Decrypt` are refused) until the admin API's `Unseal`
    /// meets the threshold; maintenance starts then. `storage` says where the keyring lives.
    pub fn start_sealed(
        sealed: SealedKeyring,
        storage: String,
        socket: &Path,
        admin: Option<&Path>,
        access: SocketAccess,
    ) -> Result<PluginServer, SocketError> {
        let progress = sealed.progress();
        let server = Self::bind(
            Arc::new(PluginKeyring::sealed(sealed, storage)),
            socket,
            admin,
            access,
        )?;
        tracing::warn!(
            socket = %socket.display(),
            admin_socket = admin.map(|p| p.display().to_string()),
            threshold = progress.threshold,
            shares = progress.shares,
            "serving sealed: hand in Shamir shares with `keyward kms unseal`"
        );
        Ok(server)
    }

    fn bind(
        keyring: Arc<PluginKeyring>,
        socket: &Path,
        admin: Option<&Path>,
        access: SocketAccess,
    ) -> Result<PluginServer, SocketError> {
        // The admin socket first: once the KMS socket exists (what kube-apiserver and scripts
        // wait for), both do.
        let mut guards = Vec::with_capacity(2);
        let admin = match admin {
            Some(path) => {
                let (listener, guard) = uds::bind(path, SocketAccess::default())?;
                guards.push(guard);
                Some(listener)
            }
            None => None,
        };
        let (kms, kms_guard) = uds::bind(socket, access)?;
        guards.push(kms_guard);
        Ok(PluginServer {
            keyring,
            kms,
            admin,
            admin_audit: Auditor::disabled(),
            admin_allow: PeerAllow::default(),
            guards,
            rpc: RpcLayer::disabled(),
        })
    }

    /// Reports to `metrics`: every call on both sockets (`keyward_kms_*`) and the keyring's
    /// state (`keyward_keyring_*`, read at each scrape; sealed until unsealed).
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.rpc = metrics.kms_layer();
        let keyring = self.keyring.clone();
        metrics.watch_keyring(move || match keyring.open() {
            Some(open) => KeyringReading::of(open),
            None => KeyringReading::sealed(),
        });
        self
    }

    /// Records every admin socket call (status, keys, rotate, retire, destroy, unseal, rekey)
    /// with `auditor`, as the caller's peer uid.
    pub fn with_admin_audit(mut self, auditor: Auditor) -> PluginServer {
        self.admin_audit = auditor;
        self
    }

    /// Admits only the callers `allow` lists to the admin socket (by default the server's own
    /// uid and root); others get `PermissionDenied`, recorded in the admin audit log. The
    /// socket file lets the listed callers reach it: mode 0600 when only the server's own uid
    /// and root are listed, 0660 with its group when one group is listed besides them, else
    /// 0666 (the check of each caller's credentials is then what keeps the others out).
    pub fn with_admin_allow(mut self, allow: PeerAllow) -> Result<Self, SocketError> {
        if let (Some(_), Some(guard)) = (&self.admin, self.guards.first()) {
            let me = rustix::process::geteuid().as_raw();
            let others = allow.uids.iter().any(|u| *u != me && *u != 0);
            let reach = match (others, allow.gids.as_slice()) {
                (false, []) => None,
                (false, [gid]) => Some(SocketAccess { group: Some(*gid) }),
                _ => Some(SocketAccess::everyone()),
            };
            if let Some(access) = reach {
                uds::set_access(guard.path(), access)?;
            }
        }
        self.admin_allow = allow;
        Ok(self)
    }

    /// The keyring being served, once open.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.open()
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
            admin_audit,
            admin_allow,
            guards,
            rpc,
        } = self;
        let admin = admin.map(|a| (a, admin_allow));
        let res = super::serve(kms, admin, keyring, rpc, admin_audit, shutdown).await;
        drop(guards);
        res
    }
}
