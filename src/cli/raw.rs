//! `keyward raw`: stored keys and values exactly as stored, like `etcdctl get` (values are
//! ciphertext), raw or as hex dumps.

use std::io::Write as _;

use clap::Subcommand;

use super::client::{self, ClientArgs};
use super::output::hex_dump;
use super::CliError;
use crate::pb::keyward_v1 as pb;

#[derive(Debug, Subcommand)]
pub(super) enum RawCommand {
    /// Print one key and its stored value (keys of the store's Secrets only).
    ///
    /// Example: keyward raw get /registry/secrets/default/db
    Get {
        /// The storage key.
        key: String,
        /// Print the value as a hex dump instead of raw bytes.
        #[arg(long)]
        hex: bool,
    },
    /// Print every key with a prefix and its stored value (the prefix must lie under the
    /// store's Secrets, e.g. /registry/secrets/).
    ///
    /// Example: keyward raw list /registry/secrets/ --keys-only
    List {
        /// Key prefix.
        prefix: String,
        /// Print only the keys.
        #[arg(long)]
        keys_only: bool,
        /// Print values as hex dumps instead of raw bytes.
        #[arg(long)]
        hex: bool,
        /// Stop after this many keys (0 = all).
        #[arg(long, default_value_t = 0)]
        limit: i64,
    },
}

/// Runs `keyward raw ...`.
pub(super) async fn raw(cmd: RawCommand, client: &ClientArgs) -> Result<(), CliError> {
    let mut out = Vec::new();
    match cmd {
        RawCommand::Get { key, hex } => {
            let kv = client::connect(client)
                .await?
                .raw_get(pb::RawGetRequest { key })
                .await
                .map_err(client::server_error)?
                .into_inner()
                .kv
                .unwrap_or_default();
            print_raw(&mut out, &kv, false, hex);
        }
        RawCommand::List {
            prefix,
            keys_only,
            hex,
            limit,
        } => {
            let mut c = client::connect(client).await?;
            let mut left = limit;
            let mut next = String::new();
            loop {
                let page = c
                    .raw_list(pb::RawListRequest {
                        prefix: prefix.clone(),
                        limit: left,
                        r#continue: next,
                    })
                    .await
                    .map_err(client::server_error)?
                    .into_inner();
                for kv in &page.kvs {
                    print_raw(&mut out, kv, keys_only, hex);
                }
                if limit > 0 {
                    left -= i64::try_from(page.kvs.len()).unwrap_or(i64::MAX).min(left);
                    if left == 0 {
                        break;
                    }
                }
                if page.r#continue.is_empty() {
                    break;
                }
                next = page.r#continue;
            }
        }
    }
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| CliError::new(format!("cannot write to stdout: {e}")))
}

/// The key on its own line, then (unless `keys_only`) the value: raw bytes and a newline, or
/// a hex dump.
fn print_raw(out: &mut Vec<u8>, kv: &pb::RawKeyValue, keys_only: bool, hex: bool) {
    out.extend_from_slice(kv.key.as_bytes());
    out.push(b'\n');
    if keys_only {
        return;
    }
    if hex {
        out.extend_from_slice(hex_dump(&kv.value).as_bytes());
    } else {
        out.extend_from_slice(&kv.value);
        out.push(b'\n');
    }
}
