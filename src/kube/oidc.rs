//! The service account issuer's OpenID Connect discovery, as kube-apiserver serves it
//! (`ServiceAccountIssuerDiscovery`): `/.well-known/openid-configuration` names the issuer and
//! where its keys are, `/openid/v1/jwks` holds them, so that a verifier outside keyward (a
//! cloud's workload identity, Vault's JWT auth) can check service account tokens. Both are
//! non-resource paths, authorized (the bootstrap policy lets every service account read them)
//! and audited like any. As in kube-apiserver, they are served only when the issuer is an
//! `https` URL without query or fragment.

use bytes::Bytes;
use serde_json::json;

use super::request::Reply;
use super::KubeError;
use crate::access::Access;

/// The discovery document's path.
pub const CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";
/// The key set's path.
pub const JWKS_PATH: &str = "/openid/v1/jwks";

/// The answer to `GET path` for one of the two paths, `None` when discovery is not served
/// (no service account tokens, or an issuer that is not an `https` URL: kube-apiserver leaves
/// the endpoints out then, and they are a 404). `address` is the API's own `host:port`, where
/// the key set is found unless `--service-account-jwks-uri` says otherwise.
pub async fn answer(
    access: &Access,
    path: &str,
    address: &str,
) -> Result<Option<Reply>, KubeError> {
    let Some(issuer) = access.service_account_issuer().await? else {
        return Ok(None);
    };
    let name = issuer.issuer();
    if !served(name) {
        return Ok(None);
    }
    let key = issuer.verifying_key();
    let (content_type, body) = match path {
        CONFIGURATION_PATH => (
            "application/json",
            json!({
                "issuer": name,
                "jwks_uri": issuer
                    .jwks_uri()
                    .map_or_else(|| format!("https://{address}{JWKS_PATH}"), str::to_owned),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [key.algorithm().to_string()],
            }),
        ),
        _ => ("application/jwk-set+json", json!({"keys": [key.jwk()]})),
    };
    // Pre-rendered by kube-apiserver with `json.Marshal`: compact, no newline.
    let body = serde_json::to_vec(&body).unwrap_or_default();
    Ok(Some(Reply::Published {
        content_type,
        body: Bytes::from(body),
    }))
}

/// Whether discovery is served for `issuer`: an `https` URL with a host and no query or
/// fragment, as kube-apiserver's `NewOpenIDMetadata` requires.
fn served(issuer: &str) -> bool {
    issuer
        .strip_prefix("https://")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#']))
}

#[cfg(test)]
mod tests {
    #[test]
    fn served_only_for_https_issuers() {
        for (issuer, want) in [
            ("https://keyward.local", true),
            ("https://issuer.example/path", true),
            ("http://keyward.local", false),
            ("keyward", false),
            ("https://", false),
            ("https://x.example?a=b", false),
            ("https://x.example#f", false),
        ] {
            assert_eq!(super::served(issuer), want, "{issuer}");
        }
    }
}
