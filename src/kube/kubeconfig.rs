//! The development PKI of `keyward dev` and `keyward kubeconfig`: a CA kept in the data
//! directory (`kube-ca.crt`, `kube-ca.key`, mode 0600), the listener's certificate for
//! `127.0.0.1`, `::1` and `localhost` issued at each start, client certificates as
//! kube-apiserver reads them (CN the user, O the groups), and kubeconfig files that carry them.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use zeroize::Zeroizing;

/// The CA certificate's file in the data directory.
pub const CA_CERT_FILE: &str = "kube-ca.crt";
/// The CA key's file in the data directory (mode 0600).
pub const CA_KEY_FILE: &str = "kube-ca.key";
/// The CA's common name.
const CA_NAME: &str = "keyward-dev-ca";
/// Most groups a client certificate carries (two O attributes: the certificate library keeps
/// one value per attribute type, and names the second by its OID).
pub const MAX_GROUPS: usize = 2;

/// Errors of the development PKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file cannot be read or written (environment).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate cannot be made, or the stored CA key is not valid (the file's content).
    #[error("certificate: {0}")]
    Certificate(String),
    /// More groups than a certificate can carry (caller).
    #[error("at most {MAX_GROUPS} groups can be put in a client certificate")]
    TooManyGroups,
}

fn cert_err(e: rcgen::Error) -> PkiError {
    PkiError::Certificate(e.to_string())
}

/// The CA, loaded or created.
pub struct DevCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// A leaf certificate's key pair and PEM.
#[derive(Clone)]
pub struct Issued {
    /// PEM certificate.
    pub cert: String,
    /// PEM private key.
    pub key: Zeroizing<String>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("key", &format_args!("<redacted>"))
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// The CA of `dir`, created (and written) if it has none.
    pub fn load_or_create(dir: &Path) -> Result<DevCa, PkiError> {
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| PkiError::Io { path, source }
        };
        if key_path.exists() && cert_path.exists() {
            let pem = Zeroizing::new(std::fs::read_to_string(&key_path).map_err(io(&key_path))?);
            let key = KeyPair::from_pem(&pem).map_err(cert_err)?;
            // The same subject and key: certificates it signs chain to the stored CA certificate.
            let cert = ca_params()?.self_signed(&key).map_err(cert_err)?;
            let pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            return Ok(DevCa { cert, key, pem });
        }
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = ca_params()?.self_signed(&key).map_err(cert_err)?;
        let pem = cert.pem();
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, &pem).map_err(io(&cert_path))?;
        Ok(DevCa { cert, key, pem })
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `127.0.0.1`, `::1` and `localhost`.
    pub fn issue_server(&self) -> Result<Issued, PkiError> {
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).map_err(cert_err)?;
        p.subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        p.subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "keyward");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(p)
    }

    /// A client certificate for `user` in `groups` (CN and O, as kube-apiserver reads them).
    pub fn issue_client(&self, user: &str, groups: &[String]) -> Result<Issued, PkiError> {
        if groups.len() > MAX_GROUPS {
            return Err(PkiError::TooManyGroups);
        }
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        p.distinguished_name = DistinguishedName::new();
        if let Some(g) = groups.first() {
            p.distinguished_name
                .push(DnType::OrganizationName, g.as_str());
        }
        if let Some(g) = groups.get(1) {
            p.distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 10]), g.as_str());
        }
        p.distinguished_name.push(DnType::CommonName, user);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(p)
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(cert_err)?;
        Ok(Issued {
            cert: cert.pem(),
            key: Zeroizing::new(key.serialize_pem()),
        })
    }
}

/// A kubeconfig for `server` (e.g. `https://127.0.0.1:6443`) trusting `ca_pem`, as `user` with
/// the client certificate `client`; its context and cluster are named `context`.
pub fn kubeconfig(
    server: &str,
    ca_pem: &str,
    context: &str,
    user: &str,
    client: &Issued,
) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user:?}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {user:?}\n    namespace: default\ncurrent-context: {context}\n",
        ca = B64.encode(ca_pem),
        cert = B64.encode(&client.cert),
        key = Zeroizing::new(B64.encode(client.key.as_bytes())).as_str(),
    ))
}

/// Writes `data` to `path` with mode 0600 (replacing the file).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    // Not through a symbolic link: a key is never written into a file someone else points at.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::x509::authenticate_client_cert;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn client_certificates_carry_user_and_groups_and_the_ca_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::load_or_create(dir.path()).unwrap();
        let c = ca
            .issue_client("alice", &["system:masters".into(), "devs".into()])
            .unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(c.cert.as_bytes()).unwrap();
        let id = authenticate_client_cert(&[der]).unwrap().unwrap();
        assert_eq!(id.name, "alice");
        assert_eq!(
            id.groups,
            ["system:masters", "devs", "system:authenticated"]
        );
        let again = DevCa::load_or_create(dir.path()).unwrap();
        assert_eq!(again.pem(), ca.pem());
        assert!(matches!(
            ca.issue_client("a", &["x".into(), "y".into(), "z".into()]),
            Err(PkiError::TooManyGroups)
        ));
        let cfg = kubeconfig("https://127.0.0.1:1", ca.pem(), "keyward-dev", "alice", &c);
        assert!(cfg.contains("current-context: keyward-dev"));
    }
}
