//! What clients present before they are anyone: bearer tokens (service account JWTs, through
//! the authenticator that verifies them) and client certificates (DER, through the parser that
//! reads their subject).
//!
//! Properties: only a token the issuer signed authenticates, as the account it names; a
//! certificate either yields an identity or a clear error.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keyward::authn::serviceaccount::{ServiceAccountIssuer, ServiceAccountRef, TokenRequest};
use keyward::authn::x509::authenticate_client_cert;
use keyward::crypto::SigningKey;

use crate::harness::{fuzz, regressions, runtime, Corpus};

/// Compact JWS words: separators, base64url of JSON's start and end, header fields.
#[rustfmt::skip]
const JWT_WORDS: &[&str] = &[
    ".", "eyJ", "fQ", "=", "-", "_", "A", "\"alg\"", "\"ES256\"", "\"none\"", "\"crit\"",
];

#[test]
fn service_account_tokens() {
    let rt = runtime();
    let issuer = ServiceAccountIssuer::new(
        "https://keyward.example",
        Arc::new(SigningKey::generate_es256().expect("a signing key")),
    )
    .with_default_audiences(vec!["keyward".into()]);
    let auth = issuer.authenticator();
    let now = SystemTime::now();
    let token = |name: &str| {
        issuer
            .issue(
                &TokenRequest {
                    service_account: ServiceAccountRef {
                        namespace: "default".into(),
                        name: name.into(),
                        uid: "u-1".into(),
                    },
                    audiences: Vec::new(),
                    expiration: Duration::from_secs(3600),
                },
                now,
            )
            .expect("issue")
            .token
            .expose()
            .to_owned()
    };
    let seeds = [token("app"), token("ci")];
    let corpus = Corpus::new(
        seeds.iter().map(|t| t.as_bytes().to_vec()).collect(),
        JWT_WORDS,
    );
    fuzz("service account tokens", 1500, &corpus, |input| {
        let t = String::from_utf8_lossy(input);
        match rt.block_on(auth.authenticate_at(&t, now)) {
            Ok(Some(id)) => {
                assert!(
                    seeds.contains(&t.to_string()),
                    "a token nobody signed authenticated"
                );
                assert!(
                    id.name.starts_with("system:serviceaccount:default:"),
                    "{}",
                    id.name
                );
            }
            Ok(None) => {}
            Err(e) => assert!(!e.to_string().contains(t.as_ref()) || t.is_empty()),
        }
    });
}

#[test]
fn client_certificates() {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::new(vec!["client.example".into()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "dev");
    let der = params
        .self_signed(&key)
        .expect("a certificate")
        .der()
        .to_vec();
    let corpus = Corpus::new(vec![der], &[]);
    fuzz(
        "client certificates",
        1500,
        &corpus,
        |input| match authenticate_client_cert(&[input]) {
            Ok(Some(id)) => assert!(!id.name.is_empty()),
            Ok(None) => {}
            Err(e) => assert!(!e.to_string().is_empty()),
        },
    );
}

#[test]
fn regression_inputs() {
    // Inputs that once failed a target of this module (none yet).
    regressions("authn regressions", &[b"", b"\x30", b"\x30\x80"], |input| {
        let _ = authenticate_client_cert(&[input]);
    });
}
