//! `keyward apply -f FILE|DIR|-` and `keyward apply -k DIR` (kustomize secretGenerator).

use clap::Args;

use super::client::ClientArgs;
use super::CliError;

/// `keyward apply`.
#[derive(Debug, Args)]
pub(super) struct ApplyArgs {
    /// Manifest file, directory, or - for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: Vec<String>,
}

/// Runs `keyward apply`.
pub(super) fn apply(_a: ApplyArgs, _client: &ClientArgs) -> Result<(), CliError> {
    Err(CliError::new("keyward apply: being written"))
}
