//! The flags every long-running command shares for being watched: `--metrics-listen` (and the
//! `--metrics-listen-any` that a non-loopback address needs) and `--log-format`; starting the
//! metrics endpoint they ask for.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::metrics::{Metrics, MetricsServer};

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (in colour on a terminal).
    #[default]
    Text,
    /// One JSON object a line with the same fields (`timestamp`, `level`, `target`, `message`
    /// and the event's fields), for log shippers.
    Json,
}

/// `--metrics-listen`, `--metrics-listen-any` and `--log-format`: `kms serve`, `server`, `dev`.
#[derive(Debug, Args)]
pub(super) struct ObserveArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP, no authentication), e.g.
    /// 127.0.0.1:9464; off unless given. Loopback addresses only, unless --metrics-listen-any.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Allow --metrics-listen on an address other than loopback. Metrics carry no keys, values
    /// or Secret names (key ids only hashed), but they are readable by anyone who can connect.
    #[arg(long, requires = "metrics_listen")]
    metrics_listen_any: bool,
    /// Log format on stderr: text, or json (one JSON object a line, for log shippers). Key ids
    /// in logs are hashed (sha256:<hex>) in both.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub(super) log_format: LogFormat,
}

impl ObserveArgs {
    /// The metrics address asked for, checked: loopback, or `--metrics-listen-any`.
    pub(super) fn metrics_listen(&self) -> Result<Option<SocketAddr>, CliError> {
        match self.metrics_listen {
            Some(addr) if !addr.ip().is_loopback() && !self.metrics_listen_any => {
                Err(CliError::new(format!(
                    "--metrics-listen {addr}: not a loopback address; /metrics is plain HTTP \
                     without authentication"
                ))
                .hint(
                    "use 127.0.0.1:PORT (scrape through a local agent), or pass \
                     --metrics-listen-any to serve it on this address",
                ))
            }
            other => Ok(other),
        }
    }
}

/// Binds the metrics endpoint `--metrics-listen` asks for (with a fresh registry), before
/// anything else is bound: a taken port then changes nothing. Must be called inside the
/// runtime.
pub(super) async fn bind_metrics(
    addr: Option<SocketAddr>,
) -> Result<Option<MetricsServer>, CliError> {
    let Some(addr) = addr else { return Ok(None) };
    let server = MetricsServer::bind(addr, Metrics::new())
        .await
        .map_err(|e| CliError::new(format!("--metrics-listen {addr}: {e}")))?;
    Ok(Some(server))
}

/// Serves a bound metrics endpoint until `token` is cancelled.
pub(super) fn spawn_metrics(server: MetricsServer, token: &CancellationToken) {
    tracing::info!(metrics_listen = %server.local_addr(), "serving Prometheus metrics at /metrics");
    tokio::spawn(server.serve(token.clone().cancelled_owned()));
}
