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
        self.0
            .verify_tls12_signature(message, cert, dss)
            .or_else(|e| signed_with_cert_key(e, message, cert, dss))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .verify_tls13_signature(message, cert, dss)
            .or_else(|e| signed_with_cert_key(e, message, cert, dss))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The handshake's proof that the client holds its certificate's key, for a certificate webpki
/// will not read (an X.509 v1 certificate, which `openssl x509 -req` makes without
/// `-extfile`, and Go's crypto/x509 accepts): the signature is checked with the key the
/// certificate holds, so that the request goes on to the x509 authenticator, which refuses the
/// certificate with a 401 and a log line saying why, instead of a failed handshake. `error`
/// (webpki's) is returned when the certificate is readable by webpki, or not at all.
fn signed_with_cert_key(
    error: rustls::Error,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if !matches!(error, rustls::Error::InvalidCertificate(_)) {
        return Err(error);
    }
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return Err(error);
    };
    let spki = parsed.public_key();
    let Some(alg_id) = algorithm_identifier(spki.raw) else {
        return Err(error);
    };
    let key = spki.subject_public_key.data.as_ref();
    let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    let candidates = algorithms
        .mapping
        .iter()
        .filter(|(scheme, _)| *scheme == dss.scheme)
        .flat_map(|(_, algs)| algs.iter())
        .filter(|alg| alg.public_key_alg_id().as_ref() == alg_id);
    for alg in candidates {
        if alg.verify_signature(key, message, dss.signature()).is_ok() {
            return Ok(HandshakeSignatureValid::assertion());
        }
    }
    Err(rustls::Error::InvalidCertificate(
        rustls::CertificateError::BadSignature,
    ))
}

/// The contents of a DER `SubjectPublicKeyInfo`'s `AlgorithmIdentifier` (what webpki compares
/// with an algorithm's `public_key_alg_id`).
fn algorithm_identifier(spki: &[u8]) -> Option<&[u8]> {
    let (outer, _) = der_sequence(spki)?;
    der_sequence(outer).map(|(inner, _)| inner)
}

/// A DER SEQUENCE at the start of `der`: its contents and what follows it.
fn der_sequence(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        0x81..=0x84 => {
            let count = usize::from(first & 0x7f);
            let (bytes, rest) = (rest.get(..count)?, rest.get(count..)?);
            let len = bytes.iter().fold(0usize, |l, b| (l << 8) | usize::from(*b));
            (len, rest)
        }
        _ => return None,
    };
    Some((rest.get(..len)?, rest.get(len..)?))
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
                            let v1 = X509Certificate::from_der(leaf.as_ref())
                                .is_ok_and(|(_, c)| c.version().0 == 0);
                            let hint = if v1 {
                                "an X.509 v1 certificate, which keyward cannot verify: issue a v3 one (openssl x509 -req ... -extfile with extendedKeyUsage = clientAuth)"
                            } else {
                                ""
                            };
                            tracing::info!(peer = %peer, error = %e, held_back, hint, "client certificate refused");
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
