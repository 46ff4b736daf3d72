//! Long-running commands: starting the secret store server (its files read and its errors worded
//! for the command line), and signal handling with a bounded drain. The KMS plugin is
//! [`crate::kms::PluginServer`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::api::Tokens;
use crate::backend::{BackendError, BackendSpec};
use crate::server::{ServerError, StoreOptions, StoreServer, TcpOptions};

/// Largest TLS key or tokens file read.
const MAX_PRIVATE_FILE: u64 = 1 << 20;

/// Cancels `token` on SIGTERM or SIGINT. The handlers are installed before this returns, so
/// call it first: a signal during start-up then also stops the process cleanly.
pub(super) fn cancel_on_signal(token: CancellationToken) -> Result<(), CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler = |kind| {
        signal(kind).map_err(|e| CliError::new(format!("cannot install a signal handler: {e}")))
    };
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        token.cancel();
    });
    Ok(())
}

/// Runs `server` until it ends or `token` is cancelled (servers then stop accepting and
/// drain), waiting at most `drain` for in-flight calls.
pub(super) async fn run_until_signal(
    drain: Duration,
    token: CancellationToken,
    server: impl Future<Output = Result<(), CliError>>,
) -> Result<(), CliError> {
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => return res,
        _ = token.cancelled() => {}
    }
    match tokio::time::timeout(drain, server).await {
        Ok(res) => res?,
        Err(_) => tracing::warn!(timeout = ?drain, "drain timed out; closing remaining calls"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Reads the TCP listener's files into the library's options: the certificate and client CA as
/// given, the key and tokens files only if private (mode 0600).
pub(super) fn tcp_options(
    listen: SocketAddr,
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    tokens: Option<&Path>,
) -> Result<TcpOptions, CliError> {
    let mut opts = TcpOptions::new(
        listen,
        read_file(cert, "--tls-cert")?,
        crate::seal::read_private_file(key, MAX_PRIVATE_FILE)?,
    );
    opts.client_ca = client_ca
        .map(|ca| read_file(ca, "--client-ca"))
        .transpose()?;
    opts.tokens = match tokens {
        Some(p) => {
            let raw = crate::seal::read_private_file(p, MAX_PRIVATE_FILE)?;
            let text = std::str::from_utf8(&raw)
                .map_err(|_| CliError::new(format!("--tokens-file {}: not UTF-8", p.display())))?;
            Some(
                Tokens::parse(text)
                    .map_err(|e| CliError::new(format!("--tokens-file {}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    Ok(opts)
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::new(format!("{what} {}: {e}", path.display())))
}

/// Starts the store server until `token` is cancelled, with its errors worded for the command
/// line (flag names and hints).
pub(super) async fn start_store(
    opts: StoreOptions,
    token: &CancellationToken,
) -> Result<StoreServer, CliError> {
    let etcd = matches!(opts.backend, BackendSpec::Etcd(_));
    StoreServer::start(opts, token.clone().cancelled_owned())
        .await
        .map_err(|e| match e {
            // etcd options the backend refused, and etcd not answering at start.
            ServerError::Backend(BackendError::InvalidArgument(m)) if etcd => CliError::new(m),
            ServerError::Backend(BackendError::Unavailable(m)) if etcd => CliError::new(m)
                .hint("check --etcd-endpoints, and --etcd-ca/--etcd-cert/--etcd-key for https"),
            ServerError::Listen { addr, source } => {
                CliError::new(format!("--listen {addr}: {source}"))
            }
            other => CliError::from(other),
        })
}
