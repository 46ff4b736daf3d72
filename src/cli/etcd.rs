//! How the command line reaches etcd: where data lives (`--backend`, `--keyring`), the
//! `--etcd-*` flags of `server` and `kms init|serve`, and the one place the TLS files they
//! name are read (also for `bench store --etcd`), with the etcd client's refusals worded with
//! those flags.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::CliError;
use crate::backend::etcd::{EtcdOptions, EtcdOptionsError};

/// Largest TLS file read.
const MAX_PEM: u64 = 1 << 20;

/// Where data lives: `--backend` of `server`, `--keyring` of `kms init|serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum BackendArg {
    Sled,
    Etcd,
}

/// How to reach etcd (`server --backend etcd`, `kms serve --keyring etcd`).
#[derive(Debug, Args)]
pub(super) struct EtcdArgs {
    /// etcd client URLs, comma-separated (http://host:2379 or https://host:2379).
    #[arg(long, value_name = "URL,...", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// PEM CA that signed the etcd servers' certificates (https endpoints).
    #[arg(long, value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// PEM client certificate for etcd's client-certificate authentication.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    etcd_cert: Option<PathBuf>,
    /// PEM private key of --etcd-cert (mode 0600).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
}

impl EtcdArgs {
    /// Whether any etcd flag was given.
    pub(super) fn given(&self) -> bool {
        !self.etcd_endpoints.is_empty()
            || self.etcd_ca.is_some()
            || self.etcd_cert.is_some()
            || self.etcd_key.is_some()
    }

    /// The client options with the TLS files read; `who` names the flag that selected etcd,
    /// and `refused` words what [`options`] refuses as the command always has.
    pub(super) fn options(
        &self,
        who: &str,
        refused: impl Fn(String) -> CliError,
    ) -> Result<EtcdOptions, CliError> {
        let endpoints: Vec<String> = self
            .etcd_endpoints
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(CliError::new(format!(
                "{who} needs --etcd-endpoints (e.g. http://127.0.0.1:2379)"
            )));
        }
        for e in &endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(CliError::new(format!(
                    "--etcd-endpoints: {e:?} must start with http:// or https://"
                )));
            }
        }
        options(
            endpoints,
            self.etcd_ca.as_deref(),
            self.etcd_cert.as_deref(),
            self.etcd_key.as_deref(),
            refused,
        )
    }
}

/// etcd client options for `endpoints`, the TLS files read (the CA and certificate as given,
/// the key only if private, mode 0600) and checked as the etcd client checks them. A problem is
/// worded with the `--etcd-*` flags, then passed to `refused` for the command's own wording.
pub(super) fn options(
    endpoints: Vec<String>,
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
    refused: impl Fn(String) -> CliError,
) -> Result<EtcdOptions, CliError> {
    let read = |path: &Path, flag: &str| {
        std::fs::read(path)
            .map_err(|e| refused(format!("{flag} {}: cannot read: {e}", path.display())))
    };
    let opts = EtcdOptions {
        endpoints,
        ca_pem: ca.map(|p| read(p, "--etcd-ca")).transpose()?,
        key_pem: key
            .map(|p| {
                crate::seal::read_private_file(p, MAX_PEM)
                    .map_err(|e| refused(format!("--etcd-key: {e}")))
            })
            .transpose()?,
        cert_pem: cert.map(|p| read(p, "--etcd-cert")).transpose()?,
        ..EtcdOptions::default()
    };
    opts.validate().map_err(|e| refused(flag_words(e)))?;
    Ok(opts)
}

/// What the etcd client refused, named by the flags that set it.
fn flag_words(e: EtcdOptionsError) -> String {
    match e {
        EtcdOptionsError::NoEndpoints => {
            "--etcd-endpoints: at least one URL is required (e.g. http://127.0.0.1:2379)".into()
        }
        EtcdOptionsError::CertWithoutKey => {
            "--etcd-cert and --etcd-key must be given together".into()
        }
        EtcdOptionsError::ClientCertWithoutCa => {
            "--etcd-cert/--etcd-key need --etcd-ca, the CA that signed etcd's certificates".into()
        }
        EtcdOptionsError::Scheme(url) => {
            format!("--etcd-endpoints: {url:?} must start with http:// or https://")
        }
        EtcdOptionsError::HttpsWithoutCa(url) => format!(
            "--etcd-endpoints: {url:?} is https; give --etcd-ca (and --etcd-cert/--etcd-key for client authentication)"
        ),
        EtcdOptionsError::NotAUrl { url, reason } => format!(
            "--etcd-endpoints: {url:?} is not a URL: {}",
            reason.replace("(cert_pem/key_pem)", "(--etcd-cert/--etcd-key)")
        ),
        EtcdOptionsError::TlsWithoutHttps => {
            "--etcd-ca, --etcd-cert and --etcd-key apply to https:// endpoints; every --etcd-endpoints URL given is http://".into()
        }
        EtcdOptionsError::BadTls { field, reason } => {
            let flag = match field {
                "ca_pem" => "--etcd-ca",
                "cert_pem" => "--etcd-cert",
                "key_pem" => "--etcd-key",
                _ => "--etcd-cert and --etcd-key",
            };
            format!("{flag}: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(m: String) -> CliError {
        CliError::new(format!("refused: {m}"))
    }

    #[test]
    fn files_are_read_and_problems_name_the_flags() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        // A self-signed certificate: the CA, and the client certificate with its key.
        let pair = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["etcd".into()])
            .unwrap()
            .self_signed(&pair)
            .unwrap()
            .pem();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &cert).unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, pair.serialize_pem()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let urls = || vec!["https://e:2379".to_owned()];
        let o = options(urls(), Some(&ca), Some(&ca), Some(&key), refused).unwrap();
        assert_eq!(o.ca_pem.as_deref(), Some(cert.as_bytes()));
        assert_eq!(
            o.key_pem.as_deref().map(Vec::as_slice),
            Some(pair.serialize_pem().as_bytes())
        );
        // What the files hold, named by flag; TLS flags with only http:// endpoints.
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not PEM").unwrap();
        let e = options(urls(), Some(&junk), None, None, refused).unwrap_err();
        assert_eq!(e.message, "refused: --etcd-ca: no PEM certificate");
        let other = dir.path().join("other.pem");
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = options(urls(), Some(&ca), Some(&ca), Some(&other), refused).unwrap_err();
        assert!(
            e.message
                .starts_with("refused: --etcd-cert and --etcd-key: "),
            "{}",
            e.message
        );
        let plain = || vec!["http://e:2379".to_owned()];
        let e = options(plain(), Some(&ca), None, None, refused).unwrap_err();
        assert_eq!(e.message, "refused: --etcd-ca, --etcd-cert and --etcd-key apply to https:// endpoints; every --etcd-endpoints URL given is http://");
        let missing = dir.path().join("missing.pem");
        let e = options(urls(), Some(&missing), None, None, refused).unwrap_err();
        assert!(
            e.message.starts_with(&format!(
                "refused: --etcd-ca {}: cannot read: ",
                missing.display()
            )),
            "{}",
            e.message
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = options(urls(), Some(&ca), Some(&ca), Some(&key), refused).unwrap_err();
        assert!(
            e.message.starts_with("refused: --etcd-key: "),
            "{}",
            e.message
        );
        assert!(!e.message.contains("PRIVATE KEY"), "{}", e.message);
        let e = options(urls(), None, None, None, refused).unwrap_err();
        assert_eq!(
            e.message,
            "refused: --etcd-endpoints: \"https://e:2379\" is https; give --etcd-ca (and --etcd-cert/--etcd-key for client authentication)"
        );
        let e = options(urls(), Some(&ca), Some(&ca), None, refused).unwrap_err();
        assert_eq!(
            e.message,
            "refused: --etcd-cert and --etcd-key must be given together"
        );
    }
}
