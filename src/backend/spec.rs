//! Which backend to open, as values rather than command-line words: an embedded directory (sled,
//! or the log-structured engine) with its retention settings, or an etcd cluster; and opening
//! it, proving for etcd that a member answers with a leader before anything is served.

use std::path::PathBuf;
use std::sync::Arc;

use super::etcd::{EtcdBackend, EtcdOptions};
use super::logstore::{LogBackend, LogOptions};
use super::sled::{SledBackend, SledOptions};
use super::{Backend, BackendError};

/// Where a store keeps its data.
#[derive(Debug, Clone)]
pub enum BackendSpec {
    /// Embedded sled in `dir` (created if missing).
    Sled {
        /// The data directory.
        dir: PathBuf,
        /// Retention settings.
        options: SledOptions,
    },
    /// The log-structured engine in `dir` (created if missing): the log is the store.
    Log {
        /// The data directory.
        dir: PathBuf,
        /// Retention settings.
        options: LogOptions,
    },
    /// An etcd cluster.
    Etcd(EtcdOptions),
}

impl BackendSpec {
    /// Embedded sled in `dir` with default retention.
    pub fn sled(dir: impl Into<PathBuf>) -> Self {
        BackendSpec::Sled {
            dir: dir.into(),
            options: SledOptions::default(),
        }
    }

    /// Opens the backend and says where its data lives (`sled:<dir>`, `log:<dir>` or
    /// `etcd:<endpoints>`, for logs).
    ///
    /// An embedded engine opens and locks its directory, and refuses one the other engine
    /// wrote ([`BackendError::OtherEngine`]). For etcd the client options are checked (a mistake
    /// is [`BackendError::InvalidArgument`]), then a member must answer with a leader: if none
    /// does, the error is [`BackendError::Unavailable`] saying `cannot reach etcd at
    /// <endpoints>: <why>`.
    pub async fn open(&self) -> Result<(Arc<dyn Backend>, String), BackendError> {
        match self {
            BackendSpec::Sled { dir, options } => {
                let backend = SledBackend::open(dir, *options)?;
                Ok((Arc::new(backend), format!("sled:{}", dir.display())))
            }
            BackendSpec::Log { dir, options } => {
                let backend = LogBackend::open(dir, *options)?;
                Ok((Arc::new(backend), format!("log:{}", dir.display())))
            }
            BackendSpec::Etcd(opts) => {
                let endpoints = opts.endpoints.join(",");
                let backend = EtcdBackend::connect(opts)?;
                let version = backend.check().await.map_err(|e| {
                    BackendError::Unavailable(format!("cannot reach etcd at {endpoints}: {e}"))
                })?;
                tracing::info!(endpoints = %endpoints, version = %version, "connected to etcd");
                Ok((Arc::new(backend), format!("etcd:{endpoints}")))
            }
        }
    }
}
