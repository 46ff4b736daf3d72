//! Handing secrets to processes: `keyward run` (environment variables, then exec) and
//! `keyward mount` (files, written like kubelet's atomic writer).

use clap::Args;

use super::client::ClientArgs;
use super::CliError;

/// `keyward run`.
#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `keyward mount`.
#[derive(Debug, Args)]
pub(super) struct MountArgs {
    /// secret/NAME.
    pub secret: String,
    /// Target directory.
    pub dir: std::path::PathBuf,
}

/// Runs `keyward run`.
pub(super) fn run(_a: RunArgs, _client: &ClientArgs) -> Result<(), CliError> {
    Err(CliError::new("keyward run: being written"))
}

/// Runs `keyward mount`.
pub(super) fn mount(_a: MountArgs, _client: &ClientArgs) -> Result<(), CliError> {
    Err(CliError::new("keyward mount: being written"))
}
