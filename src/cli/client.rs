//! Talking to a keyward server: discovery (`--server`, `KEYWARD_SERVER`, the `keyward dev`
//! socket), TLS and credentials for `https://` servers. Its errors are worded by
//! [`server_error`] (kubectl's style), used by every command that calls the server.

use std::path::{Path, PathBuf};

use clap::Args;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

pub(super) use super::error::{selector_error, server_error, server_error_when};
use super::{CliError, DEV_DIR};
use crate::pb::keyward_v1::secrets_client::SecretsClient;
use crate::uds::{self, UnixTarget};

/// Where the client flags sort among a command's own flags in its help. clap orders flags by a
/// number it hands out as the command line is built, and each new subcommand shifts it: this is
/// the place they had before `completion` was added, so no command's help moved.
const HELP_ORDER: usize = 17;

/// How a client command finds and authenticates to the server.
#[derive(Debug, Clone, Args)]
pub(super) struct ClientArgs {
    /// The server: unix:///path/to/keyward.sock or https://host:port. Defaults to
    /// $KEYWARD_SERVER, then ./keyward-dev/keyward.sock (the `keyward dev` socket; only if
    /// ./keyward-dev is this user's directory and writable by nobody else).
    #[arg(long, global = true, env = "KEYWARD_SERVER", value_name = "URL", display_order = HELP_ORDER)]
    pub server: Option<String>,
    /// PEM CA certificate that signed an https server's certificate.
    #[arg(long, global = true, env = "KEYWARD_CA_FILE", value_name = "FILE", display_order = HELP_ORDER + 1)]
    pub ca_file: Option<PathBuf>,
    /// File holding a bearer token (mode 0600), sent over the Unix socket or https.
    #[arg(long, global = true, env = "KEYWARD_TOKEN_FILE", value_name = "FILE", display_order = HELP_ORDER + 2)]
    pub token_file: Option<PathBuf>,
    /// PEM client certificate for an https server (with --client-key).
    #[arg(long, global = true, value_name = "FILE", display_order = HELP_ORDER + 3)]
    pub client_cert: Option<PathBuf>,
    /// PEM client key for an https server (with --client-cert).
    #[arg(long, global = true, value_name = "FILE", display_order = HELP_ORDER + 4)]
    pub client_key: Option<PathBuf>,
    /// Act as this user (needs the impersonate verb on users, or serviceaccounts for
    /// system:serviceaccount:<ns>:<name>).
    #[arg(long = "as", global = true, value_name = "USER", display_order = HELP_ORDER + 5)]
    pub as_user: Option<String>,
    /// Act as this group too (repeatable; needs the impersonate verb on groups).
    #[arg(long = "as-group", global = true, value_name = "GROUP", display_order = HELP_ORDER + 6)]
    pub as_group: Vec<String>,
    /// Act with this uid (with --as; needs the impersonate verb on uids.authentication.k8s.io).
    #[arg(long = "as-uid", global = true, value_name = "UID", display_order = HELP_ORDER + 7)]
    pub as_uid: Option<String>,
}

/// Adds `authorization: Bearer <token>` when a token is configured, and the impersonation
/// metadata of `--as`, `--as-group` and `--as-uid`.
#[derive(Clone)]
pub(super) struct Bearer {
    token: Option<MetadataValue<Ascii>>,
    as_user: Option<MetadataValue<Ascii>>,
    as_groups: Vec<MetadataValue<Ascii>>,
    as_uid: Option<MetadataValue<Ascii>>,
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let md = req.metadata_mut();
        if let Some(t) = &self.token {
            md.insert("authorization", t.clone());
        }
        if let Some(u) = &self.as_user {
            md.insert(crate::api::IMPERSONATE_USER, u.clone());
        }
        for g in &self.as_groups {
            md.append(crate::api::IMPERSONATE_GROUP, g.clone());
        }
        if let Some(u) = &self.as_uid {
            md.insert(crate::api::IMPERSONATE_UID, u.clone());
        }
        Ok(req)
    }
}

fn impersonation_value(flag: &str, v: &str) -> Result<MetadataValue<Ascii>, CliError> {
    v.parse()
        .map_err(|_| CliError::new(format!("{flag} {v:?}: not a valid name (ASCII only)")))
}

/// A connected `keyward.v1.Secrets` client.
pub(super) type Client = SecretsClient<InterceptedService<Channel, Bearer>>;

enum Target {
    Unix(UnixTarget),
    Https(String),
}

fn target(args: &ClientArgs) -> Result<Target, CliError> {
    match args.server.as_deref() {
        None | Some("") => {
            let socket = dev_socket("keyward.sock")?;
            eprintln!(
                "keyward: no --server or $KEYWARD_SERVER; using the keyward dev socket {}",
                socket.display()
            );
            Ok(Target::Unix(UnixTarget::Path(socket)))
        }
        Some(url) => {
            if url.starts_with("https://") {
                return Ok(Target::Https(url.to_owned()));
            }
            if let Ok(target) = uds::parse_unix_endpoint(url) {
                return Ok(Target::Unix(target));
            }
            Err(CliError::new(format!(
                "--server {url:?}: expected unix:///absolute/path/to/keyward.sock or https://host:port"
            ))
            .hint("plain http is not supported: keyward serves TCP only over TLS"))
        }
    }
}

/// `./keyward-dev/<name>`, the default socket, only if `./keyward-dev` is what `keyward dev`
/// makes: a real directory (not a link) of this user that nobody else can write (or absent, so
/// that connecting fails with the usual error). A directory someone else planted in the current
/// directory could hold their socket, which would receive values or hand out false ones.
pub(super) fn dev_socket(name: &str) -> Result<PathBuf, CliError> {
    let dir = Path::new(DEV_DIR);
    let refuse = |why: String| {
        CliError::new(format!(
            "no --server or $KEYWARD_SERVER, and ./{DEV_DIR} is not a keyward dev directory of yours ({why}); refusing to use its socket"
        ))
        .hint("pass --server unix:///path/to/keyward.sock (or https://...), or set KEYWARD_SERVER")
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(refuse(e.to_string())),
        Ok(m) if !m.is_dir() => return Err(refuse("not a directory".into())),
        Ok(m) => {
            if let Some(why) = not_private(&m) {
                return Err(refuse(why));
            }
        }
    }
    Ok(dir.join(name))
}

/// Why a directory `m` describes is not one only this user may change (owned by another uid,
/// or writable by its group or others); `None` if it is.
pub(super) fn not_private(m: &std::fs::Metadata) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    crate::uds::exposure(m).map(|e| match e {
        crate::uds::Exposure::Owner(uid) => format!("owned by uid {uid}, not {me}"),
        crate::uds::Exposure::Writable(mode) => format!("mode {mode:04o}: writable by others"),
    })
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::new(format!("{flag} {}: {e}", path.display())))
}

/// Largest answer the CLI takes from its server (tonic's default is 4 MiB): a page of 500
/// Secrets of up to 1 MiB each, as kube-apiserver allows them, fits.
const MAX_ANSWER_BYTES: usize = 1 << 30;

/// Connects to the server named by `args`.
pub(super) async fn connect(args: &ClientArgs) -> Result<Client, CliError> {
    let (channel, bearer) = channel(args).await?;
    Ok(
        SecretsClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(MAX_ANSWER_BYTES),
    )
}

async fn channel(args: &ClientArgs) -> Result<(Channel, Bearer), CliError> {
    // kubectl's (client-go's clientcmd) check, before anything is sent.
    if args.as_user.as_deref().is_none_or(str::is_empty)
        && (!args.as_group.is_empty() || args.as_uid.is_some())
    {
        return Err(CliError::new(
            "requesting uid, groups or user-extra without impersonating a user",
        )
        .hint("give --as USER with --as-group and --as-uid"));
    }
    if args.client_cert.is_some() != args.client_key.is_some() {
        return Err(CliError::new("--client-cert and --client-key go together"));
    }
    let (channel, shown) = match target(args)? {
        Target::Unix(target) => {
            if args.client_cert.is_some() {
                return Err(CliError::new(
                    "--client-cert and --client-key are for an https:// server: over a Unix socket the server knows the client by its uid",
                ));
            }
            let shown = target.to_string();
            let ch = uds::channel(target).await.map_err(|e| {
                CliError::new(format!(
                    "cannot connect to the keyward server at {shown}: {}",
                    super::error::with_causes(&e)
                ))
                .hint("start one with `keyward dev` or `keyward server`, or pass --server")
            })?;
            (ch, shown)
        }
        Target::Https(url) => {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &args.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--ca-file")?));
            }
            match (&args.client_cert, &args.client_key) {
                (Some(c), Some(k)) => {
                    let key = crate::seal::read_private_file(k, 1 << 20)?;
                    tls = tls.identity(Identity::from_pem(
                        read(c, "--client-cert")?,
                        key.as_slice(),
                    ));
                }
                (None, None) => {}
                _ => return Err(CliError::new("--client-cert and --client-key go together")),
            }
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| CliError::new(format!("--server {url:?}: {e}")))?
                .tls_config(tls)
                .map_err(|e| CliError::new(format!("TLS settings: {e}")))?;
            let ch = endpoint.connect().await.map_err(|e| {
                CliError::new(format!(
                    "cannot connect to the keyward server at {url}: {}",
                    super::error::with_causes(&e)
                ))
                .hint("check --server and --ca-file")
            })?;
            (ch, url)
        }
    };
    tracing::debug!(server = %shown, "connected");
    let token = match &args.token_file {
        Some(p) => {
            let raw = crate::seal::read_private_file(p, 1 << 16)?;
            let t = String::from_utf8_lossy(&raw).trim().to_owned();
            // Never sent without one: the request would go as whoever the socket says.
            if t.is_empty() {
                return Err(CliError::new(format!(
                    "--token-file {}: the file holds no token",
                    p.display()
                )));
            }
            let v: MetadataValue<Ascii> = format!("Bearer {t}").parse().map_err(|_| {
                CliError::new(format!("--token-file {}: not a valid token", p.display()))
            })?;
            Some(v)
        }
        None => None,
    };
    let as_user = args
        .as_user
        .as_deref()
        .map(|u| impersonation_value("--as", u))
        .transpose()?;
    let as_groups = args
        .as_group
        .iter()
        .map(|g| impersonation_value("--as-group", g))
        .collect::<Result<_, _>>()?;
    let as_uid = args
        .as_uid
        .as_deref()
        .map(|u| impersonation_value("--as-uid", u))
        .transpose()?;
    Ok((
        channel,
        Bearer {
            token,
            as_user,
            as_groups,
            as_uid,
        },
    ))
}

/// A connected `keyward.v1.Encryption` client.
pub(super) type EncryptionClient =
    crate::pb::keyward_v1::encryption_client::EncryptionClient<InterceptedService<Channel, Bearer>>;

/// Connects to the server's encryption service.
pub(super) async fn connect_encryption(args: &ClientArgs) -> Result<EncryptionClient, CliError> {
    let (channel, bearer) = channel(args).await?;
    Ok(
        crate::pb::keyward_v1::encryption_client::EncryptionClient::with_interceptor(
            channel, bearer,
        ),
    )
}

/// A connected `keyward.v1.Auth` client.
pub(super) type AuthClient =
    crate::pb::keyward_v1::auth_client::AuthClient<InterceptedService<Channel, Bearer>>;

/// Connects to the server's auth service.
pub(super) async fn connect_auth(args: &ClientArgs) -> Result<AuthClient, CliError> {
    let (channel, bearer) = channel(args).await?;
    Ok(crate::pb::keyward_v1::auth_client::AuthClient::with_interceptor(channel, bearer))
}
