//! TLS client certificates, as kube-apiserver's `x509.CommonNameUserConversion` reads them: the
//! subject's common name is the user, each organization (O) a group, in order, and the extra
//! `authentication.kubernetes.io/credential-id` is `X509SHA256=<hex SHA-256 of the leaf DER>`.
//!
//! The chain was already verified by TLS (rustls, against `--client-ca`); this module only reads
//! the leaf. No certificate, or an empty common name, is no opinion. The subject's UID attribute
//! is not read (upstream reads it only behind the `AllowParsingUserUIDFromCertAuth` feature
//! gate, off by default).

use x509_parser::prelude::{FromDer, X509Certificate};

use super::{names, AuthnError, Identity};
use crate::crypto::sha256;

/// The identity of a verified client certificate chain (leaf first, DER), with
/// `system:authenticated`; `Ok(None)` for no certificate or an empty common name.
pub fn authenticate_client_cert<C: AsRef<[u8]>>(
    chain: &[C],
) -> Result<Option<Identity>, AuthnError> {
    let Some(leaf) = chain.first() else {
        return Ok(None);
    };
    let der = leaf.as_ref();
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| AuthnError::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(AuthnError::Certificate("trailing data".into()));
    }
    let subject = cert.subject();
    // Go keeps the last common name and every organization, skipping values that are not
    // strings.
    let name = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .last()
        .unwrap_or_default();
    if name.is_empty() {
        return Ok(None);
    }
    let groups = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_owned)
        .collect();
    let mut id = Identity::new(name, "", groups);
    id.extra.insert(
        names::CREDENTIAL_ID_KEY.to_owned(),
        vec![format!("X509SHA256={}", hex::encode(sha256(der)))],
    );
    Ok(Some(id.with_authenticated_group()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn cert(attrs: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        for (t, v) in attrs {
            dn.push(t.clone(), *v);
        }
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn common_name_is_the_user_and_organizations_are_groups() {
        let der = cert(&[
            (DnType::CommonName, "jbeda"),
            (DnType::OrganizationName, "app1"),
            // rcgen keeps one value per type: a second O through its OID (2.5.4.10).
            (DnType::CustomDnType(vec![2, 5, 4, 10]), "app2"),
        ]);
        let id = authenticate_client_cert(std::slice::from_ref(&der))
            .unwrap()
            .unwrap();
        assert_eq!(id.name, "jbeda");
        assert_eq!(id.uid, "");
        assert_eq!(id.groups, ["app1", "app2", names::SYSTEM_AUTHENTICATED]);
        assert_eq!(
            id.extra[names::CREDENTIAL_ID_KEY],
            [format!("X509SHA256={}", hex::encode(sha256(&der)))]
        );
        // Intermediates after the leaf are not read.
        let other = cert(&[(DnType::CommonName, "intermediate")]);
        let id2 = authenticate_client_cert(&[der, other]).unwrap().unwrap();
        assert_eq!(id2.name, "jbeda");
    }

    #[test]
    fn no_certificate_or_no_common_name_is_no_opinion_and_garbage_is_an_error() {
        assert!(authenticate_client_cert::<Vec<u8>>(&[]).unwrap().is_none());
        let no_cn = cert(&[(DnType::OrganizationName, "ops")]);
        assert!(authenticate_client_cert(&[no_cn]).unwrap().is_none());
        let empty_cn = cert(&[(DnType::CommonName, "")]);
        assert!(authenticate_client_cert(&[empty_cn]).unwrap().is_none());
        let e = authenticate_client_cert(&[b"not a certificate".to_vec()]).unwrap_err();
        assert!(matches!(e, AuthnError::Certificate(_)), "{e}");
        let mut trailing = cert(&[(DnType::CommonName, "a")]);
        trailing.push(0);
        assert!(authenticate_client_cert(&[trailing]).is_err());
    }
}
