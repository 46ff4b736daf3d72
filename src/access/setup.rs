//! The access layer as a server configures it ([`AccessOptions`]): the authenticators (Unix
//! users file, token files, bootstrap tokens, service account tokens), the RBAC policy (empty —
//! only `system:masters` — unless a file or directory is given, reloaded on change) and the
//! audit log (its checkpoint key sealed in the backend, its public key written beside it).
//! [`AccessStack`] owns what runs in the background and closes the audit log at shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::keys::{SealedKeys, AUDIT_CHECKPOINT_KEY};
use super::service_accounts::{ServiceAccountSettings, ServiceAccounts, TokenSecretHook};
use super::{Access, AccessError, Authenticators};
use crate::audit::{AuditError, AuditLog, Auditor, LogConfig, Policy as AuditPolicy};
use crate::authn::bootstrap::BootstrapTokens;
use crate::authn::reload::{Reload, Reloader, DEFAULT_INTERVAL};
use crate::authn::tokenfile::{StaticTokens, TokenFileFormat};
use crate::authn::unix::UnixAuthenticator;
use crate::authn::{AuthnError, TokenAuthenticator, TokenChain};
use crate::authz::{AuthzError, Policy, PolicyWatcher, Rbac, DEFAULT_RELOAD_INTERVAL};
use crate::crypto::{Ed25519PublicKey, Ed25519SigningKey, Key32};
use crate::store::Store;

/// The audit log's settings.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// How the log is written (path, rotation, checkpoints, failure mode).
    pub log: LogConfig,
    /// The `audit.k8s.io/v1` Policy file; without one nothing is recorded (as kube-apiserver),
    /// only checkpoints.
    pub policy_file: Option<PathBuf>,
}

/// Who may connect and what they may do: the access settings of a store server.
#[derive(Debug, Clone, Default)]
pub struct AccessOptions {
    /// `--unix-users`: maps peer uids and gids to users and groups (reloaded).
    pub unix_users: Option<PathBuf>,
    /// `--token-auth-file`: kube-apiserver's token CSV files (reloaded).
    pub token_auth_files: Vec<PathBuf>,
    /// `--tokens-file`: keyward's older one-token-per-line files (`system:masters`).
    pub tokens_files: Vec<PathBuf>,
    /// `--enable-bootstrap-token-auth`.
    pub bootstrap_tokens: bool,
    /// `--authorization-policy`: RBAC manifests in a file or directory (reloaded); none: an
    /// empty policy, under which only `system:masters` may do anything.
    pub authorization_policy: Option<PathBuf>,
    /// The audit log, if any.
    pub audit: Option<AuditOptions>,
    /// Service account tokens.
    pub service_accounts: ServiceAccountSettings,
    /// How often the policy and credential files are checked for changes (zero: the defaults).
    pub reload_interval: Duration,
}

/// Errors of setting up the access layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A users or token file is missing, not private or invalid (operator).
    #[error(transparent)]
    Authn(#[from] AuthnError),
    /// The authorization policy cannot be read or is invalid (operator).
    #[error(transparent)]
    Authz(#[from] AuthzError),
    /// The audit policy or log cannot be used (operator, or the environment's disk).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The server's keys cannot be created or read (operator's configuration, environment).
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The audit public key cannot be written beside the log (environment).
    #[error("cannot write the audit public key {path}: {source}")]
    PublicKey {
        /// The `.pub` file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The access layer of a running server and what it runs in the background.
#[derive(Debug)]
pub struct AccessStack {
    /// The guarded store.
    pub access: Arc<Access>,
    /// The authenticators.
    pub authn: Arc<Authenticators>,
    audit_log: Option<AuditLog>,
    _policy_watcher: Option<PolicyWatcher>,
    _reloader: Option<Reloader>,
}

impl AccessOptions {
    /// Reads and checks every file these options name (the users file, the token files, the
    /// RBAC policy and the audit policy) without starting anything: a server calls this before
    /// it creates or opens anything on disk, so that a bad file is refused with nothing changed.
    /// [`AccessStack::start`] reads them again, and logs their warnings: this check is silent.
    pub fn check_files(&self) -> Result<(), SetupError> {
        let silent = tracing::subscriber::NoSubscriber::default();
        tracing::subscriber::with_default(silent, || self.read_files())
    }

    fn read_files(&self) -> Result<(), SetupError> {
        if let Some(p) = &self.unix_users {
            UnixAuthenticator::with_users_file(UnixAuthenticator::server_uid(), p.clone())?;
        }
        for p in &self.token_auth_files {
            StaticTokens::load(p.clone(), TokenFileFormat::Csv)?;
        }
        for p in &self.tokens_files {
            StaticTokens::load(p.clone(), TokenFileFormat::Lines)?;
        }
        if let Some(p) = &self.authorization_policy {
            Policy::load(p)?;
        }
        if let Some(p) = self.audit.as_ref().and_then(|a| a.policy_file.as_deref()) {
            AuditPolicy::load(p)?;
        }
        Ok(())
    }
}

impl AccessStack {
    /// Builds the access layer over `store`, whose create hook is `hook`.
    pub async fn start(
        store: Arc<Store>,
        hook: TokenSecretHook,
        options: AccessOptions,
    ) -> Result<AccessStack, SetupError> {
        let interval = |d: Duration| {
            if options.reload_interval.is_zero() {
                d
            } else {
                options.reload_interval
            }
        };
        let server_uid = UnixAuthenticator::server_uid();
        let unix = match &options.unix_users {
            Some(p) => UnixAuthenticator::with_users_file(server_uid, p.clone())?,
            None => UnixAuthenticator::new(server_uid),
        };
        let mut reloadable: Vec<Arc<dyn Reload>> = unix.reloadable().into_iter().collect();
        let mut chain: Vec<Arc<dyn TokenAuthenticator>> = Vec::new();
        let files = options
            .token_auth_files
            .iter()
            .map(|p| (p, TokenFileFormat::Csv))
            .chain(
                options
                    .tokens_files
                    .iter()
                    .map(|p| (p, TokenFileFormat::Lines)),
            );
        for (path, format) in files {
            let t = StaticTokens::load(path.clone(), format)?;
            reloadable.push(t.reloadable());
            chain.push(Arc::new(t));
        }
        if options.bootstrap_tokens {
            chain.push(Arc::new(BootstrapTokens::new(store.clone())));
        }
        let (auditor, audit_log) = match options.audit {
            Some(a) => {
                let keys = SealedKeys::new(store.clone());
                let seed = keys
                    .load_or_create(AUDIT_CHECKPOINT_KEY, || {
                        let k = Key32::generate()?;
                        Ok(zeroize::Zeroizing::new(k.expose().to_vec()))
                    })
                    .await?;
                let seed = Key32::from_slice(&seed).ok_or_else(|| AccessError::KeyMaterial {
                    name: AUDIT_CHECKPOINT_KEY.to_owned(),
                    reason: "not 32 bytes".into(),
                })?;
                let signer = Arc::new(Ed25519SigningKey::from_seed(seed));
                let policy = a
                    .policy_file
                    .as_deref()
                    .map(AuditPolicy::load)
                    .transpose()?;
                let public_key = signer.public_key().clone();
                let path = a.log.path.clone();
                // The store's key lives in its backend: a log opened by another key is another
                // store's.
                let config = LogConfig {
                    single_key: true,
                    ..a.log
                };
                // The public key is written once the log is open (locked) with it: a start
                // refused the log (another process writes it, a directory to create) leaves the
                // key beside it alone.
                let log = AuditLog::open(config, signer).await?;
                write_public_key(&path, &public_key).map_err(|source| SetupError::PublicKey {
                    path: public_key_path(&path),
                    source,
                })?;
                let auditor = match policy {
                    Some(p) => Auditor::new(p, Arc::new(log.clone())),
                    None => {
                        tracing::warn!("--audit-log-path without --audit-policy-file: no request is recorded (as kube-apiserver), only checkpoints");
                        Auditor::disabled()
                    }
                };
                (auditor, Some(log))
            }
            None => (Auditor::disabled(), None),
        };
        let sa = ServiceAccounts::load(
            store.clone(),
            hook,
            options.service_accounts.clone(),
            auditor.clone(),
        )
        .await?;
        chain.push(sa.clone());
        let authn = Arc::new(Authenticators::new(unix, TokenChain::new(chain)));
        let credential_files = reloadable.clone();
        let reloader = (!reloadable.is_empty())
            .then(|| Reloader::spawn(reloadable, interval(DEFAULT_INTERVAL)));

        let policy = Arc::new(match &options.authorization_policy {
            Some(p) => Policy::load(p)?,
            None => Policy::new(Rbac::with_bootstrap(&Default::default())),
        });
        let policy_watcher = options
            .authorization_policy
            .is_some()
            .then(|| policy.watch(interval(DEFAULT_RELOAD_INTERVAL)));

        let access = Arc::new(
            Access::new(store, policy, auditor)
                .with_service_accounts(sa)
                .with_credential_files(credential_files),
        );
        Ok(AccessStack {
            access,
            authn,
            audit_log,
            _policy_watcher: policy_watcher,
            _reloader: reloader,
        })
    }

    /// The audit log, if one is written.
    pub fn audit_log(&self) -> Option<&AuditLog> {
        self.audit_log.as_ref()
    }

    /// Writes the audit log's shutdown checkpoint and closes it.
    pub async fn close(&self) -> Result<(), AuditError> {
        match &self.audit_log {
            Some(log) => log.close().await,
            None => Ok(()),
        }
    }
}

/// `<log>.pub`: where the audit log's public key is written.
pub fn public_key_path(log: &std::path::Path) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Writes `key` to `<log>.pub`. A different key already there (the log was signed by another
/// key before) is kept as `<log>.<key id>.pub`, so that `keyward audit verify` can be given
/// every key of a log.
pub fn write_public_key(log: &std::path::Path, key: &Ed25519PublicKey) -> std::io::Result<()> {
    let path = public_key_path(log);
    let pem = key.to_pem();
    if let Ok(old) = std::fs::read_to_string(&path) {
        if old == pem {
            return Ok(());
        }
        if let Some(old_key) = Ed25519PublicKey::from_pem(&old) {
            let mut kept = log.as_os_str().to_owned();
            kept.push(format!(".{}.pub", old_key.key_id()));
            std::fs::rename(&path, PathBuf::from(kept))?;
        }
    }
    // Not through a symbolic link (whoever may write to the log's directory could point it at
    // any file the server may write), and replaced, not written into.
    let fresh = std::fs::remove_file(&path).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(e),
    });
    fresh?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::io::Write::write_all(&mut f, pem.as_bytes())
}
