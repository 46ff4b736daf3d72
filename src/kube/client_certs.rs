//! Client certificates on the Kubernetes API as kube-apiserver treats them: TLS asks for one
//! and takes any (its handshake still proves the client holds the certificate's key), and the
//! x509 authenticator checks it against the client CA for each request. A certificate from
//! another CA, for another usage or out of its validity is then a 401 `Unauthorized` (and an
//! audit event, `Authentication failed, attempted: x509`), or the request is authenticated by
//! its bearer token instead; not a failed handshake kubectl can only report as
//! `remote error: tls: unknown certificate`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Refused certificates, at most one line a second.
static HANDSHAKE_REFUSED: crate::log_throttle::LogThrottle =
    crate::log_throttle::LogThrottle::new();

/// The handshake's verifier: asks for a certificate with the client CA's names, checks the
/// client's signature with its key, and leaves the chain to [`ClientCerts::verify`].
#[derive(Debug)]
pub(super) struct DeferredVerifier(pub(super) Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for DeferredVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Bearer tokens authenticate too.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Checked after the handshake, per request (`ClientCerts`).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The certificates a connection's client presented (leaf first), and until when they verify
/// against the client CA: checked once when the connection is made, their validity then
/// compared with the time of each request.
#[derive(Debug, Default)]
pub struct ClientCerts {
    chain: Vec<CertificateDer<'static>>,
    /// Seconds since the epoch after which the chain no longer verifies; `None` if it did not
    /// verify at all.
    valid_until: Option<i64>,
}

impl ClientCerts {
    /// Whether the client presented a certificate (verified or not).
    pub fn presented(&self) -> bool {
        !self.chain.is_empty()
    }

    /// `chain` checked with `verifier` (the client CA's) now.
    pub(super) fn verify(
        chain: Vec<CertificateDer<'static>>,
        verifier: Option<&Arc<dyn ClientCertVerifier>>,
        peer: std::net::SocketAddr,
    ) -> ClientCerts {
        let valid_until = match (verifier, chain.split_first()) {
            (Some(v), Some((leaf, intermediates))) => {
                match v.verify_client_cert(leaf, intermediates, UnixTime::now()) {
                    Ok(_) => not_after(&chain),
                    Err(e) => {
                        if let Some(held_back) = HANDSHAKE_REFUSED.admit() {
                            tracing::info!(peer = %peer, error = %e, held_back, "client certificate refused");
                        }
                        None
                    }
                }
            }
            _ => None,
        };
        ClientCerts { chain, valid_until }
    }

    /// The chain, if it verifies now.
    pub fn verified(&self) -> Option<&[CertificateDer<'static>]> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        match self.valid_until {
            Some(until) if now <= until && !self.chain.is_empty() => Some(&self.chain),
            _ => None,
        }
    }

    /// Whether the client presented certificates that do not verify (now).
    pub fn refused(&self) -> bool {
        !self.chain.is_empty() && self.verified().is_none()
    }
}

/// The earliest `notAfter` of the chain's certificates; `None` if one does not parse.
fn not_after(chain: &[CertificateDer<'static>]) -> Option<i64> {
    chain
        .iter()
        .map(|c| {
            X509Certificate::from_der(c.as_ref())
                .ok()
                .map(|(_, cert)| cert.validity().not_after.timestamp())
        })
        .try_fold(i64::MAX, |min, t| t.map(|t| min.min(t)))
}
