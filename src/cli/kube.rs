//! The Kubernetes API on the command line: `--kube-listen` of `server` and `dev` turned into
//! [`KubeOptions`], the dev setup (its CA, the admin kubeconfig, the address kept across
//! restarts) and `keyward kubeconfig` for another identity.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use zeroize::Zeroizing;

use super::{CliError, DEV_DIR};
use crate::kube::kubeconfig::{kubeconfig, write_private, DevCa, PkiError};
use crate::kube::KubeOptions;
use crate::net::ConnLimits;

/// Where `keyward dev` keeps its Kubernetes API address, so that kubeconfigs stay valid.
pub(super) const ADDR_FILE: &str = "kube.addr";
/// The admin kubeconfig `keyward dev` writes.
pub(super) const KUBECONFIG_FILE: &str = "kubeconfig";
/// The user of the dev admin kubeconfig.
const DEV_ADMIN: &str = "keyward-dev-admin";
/// The context and cluster name in dev kubeconfigs.
const CONTEXT: &str = "keyward-dev";

#[derive(Debug, Args)]
pub(super) struct KubeconfigArgs {
    /// The user the client certificate names (its CN; a certificate without one
    /// authenticates nobody, so an empty name is refused).
    #[arg(long, value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    user: String,
    /// A group of the user (its O; repeat for a second).
    #[arg(long = "group", value_name = "GROUP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    groups: Vec<String>,
    /// The `keyward dev` data directory whose CA signs the certificate.
    #[arg(long, value_name = "DIR", default_value = DEV_DIR)]
    data: PathBuf,
    /// The API's URL (default: the address `keyward dev` serves on).
    #[arg(long, value_name = "URL")]
    server: Option<String>,
}

fn pki(e: PkiError) -> CliError {
    CliError::new(e.to_string())
}

/// `keyward kubeconfig`: prints a kubeconfig for `--user` (and `--group`s), signed by the dev CA.
pub(super) fn kubeconfig_command(a: KubeconfigArgs) -> Result<(), CliError> {
    let ca_cert = a.data.join(crate::kube::kubeconfig::CA_CERT_FILE);
    if !ca_cert.exists() {
        return Err(
            CliError::new(format!("no development CA in {}", a.data.display()))
                .hint("start `keyward dev` (with --data DIR if not ./keyward-dev) first"),
        );
    }
    let ca = DevCa::load_or_create(&a.data).map_err(pki)?;
    let server = match a.server {
        Some(s) => s,
        None => {
            let saved = a.data.join(ADDR_FILE);
            let addr = std::fs::read_to_string(&saved)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
                .ok_or_else(|| {
                    CliError::new(format!(
                        "{}: no Kubernetes API address saved; pass --server https://HOST:PORT",
                        saved.display()
                    ))
                })?;
            url(addr)
        }
    };
    let client = ca.issue_client(&a.user, &a.groups).map_err(pki)?;
    print!(
        "{}",
        kubeconfig(&server, ca.pem(), CONTEXT, &a.user, &client).as_str()
    );
    Ok(())
}

/// `https://` URL of a listener address (a wildcard address is reached on loopback).
pub(super) fn url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

/// The Kubernetes API settings of `keyward server --kube-listen`.
pub(super) fn server_options(
    listen: SocketAddr,
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
    client_ca: Option<Vec<u8>>,
    conn: ConnLimits,
) -> KubeOptions {
    let mut o = KubeOptions::new(listen, cert, key);
    o.client_ca = client_ca;
    o.conn = conn;
    o
}

/// The dev setup: the CA of `dir` (created once), a fresh server certificate, and the address:
/// `listen` if given, else the one kept from the last run if it is free, else any loopback port.
pub(super) fn dev_options(dir: &Path, listen: Option<SocketAddr>) -> Result<KubeOptions, CliError> {
    let ca = DevCa::load_or_create(dir).map_err(pki)?;
    let server = ca.issue_server().map_err(pki)?;
    let listen = listen.unwrap_or_else(|| {
        std::fs::read_to_string(dir.join(ADDR_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            .filter(|a| std::net::TcpListener::bind(a).is_ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    });
    let mut o = KubeOptions::new(
        listen,
        server.cert.into_bytes(),
        Zeroizing::new(server.key.as_bytes().to_vec()),
    );
    o.client_ca = Some(ca.pem().as_bytes().to_vec());
    Ok(o)
}

/// After the dev server bound `addr`: keeps the address and writes the admin kubeconfig
/// (`system:masters`, mode 0600); returns its path.
pub(super) fn dev_kubeconfig(dir: &Path, addr: SocketAddr) -> Result<PathBuf, CliError> {
    let ca = DevCa::load_or_create(dir).map_err(pki)?;
    std::fs::write(dir.join(ADDR_FILE), format!("{addr}\n")).map_err(|e| {
        CliError::new(format!(
            "cannot write {}: {e}",
            dir.join(ADDR_FILE).display()
        ))
    })?;
    let admin = ca
        .issue_client(DEV_ADMIN, &["system:masters".to_owned()])
        .map_err(pki)?;
    let path = dir.join(KUBECONFIG_FILE);
    let text = kubeconfig(&url(addr), ca.pem(), CONTEXT, DEV_ADMIN, &admin);
    write_private(&path, text.as_bytes()).map_err(pki)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::KubeconfigArgs;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: KubeconfigArgs,
    }

    #[test]
    fn an_empty_user_or_group_is_refused() {
        let parse = |args: &[&str]| Cli::try_parse_from(["kubeconfig"].iter().chain(args));
        assert!(parse(&["--user", "app", "--group", "devs"]).is_ok());
        for bad in [&["--user", ""][..], &["--user", "app", "--group", ""]] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("a value is required for '--"), "{bad:?}: {e}");
        }
    }
}
