//! `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token`: kube-apiserver's TokenRequest
//! (`authentication.k8s.io/v1`), so that `kubectl create token NAME -n NS [--duration D]
//! [--audience A]` issues the same signed token as `keyward create token`. The body (JSON, YAML
//! or protobuf) is read and checked as kube-apiserver's `TokenREST` checks it; the token is
//! issued by the access layer (authorized as `create serviceaccounts/token`, recorded without
//! the token) and returned in the request object's `status`.
//!
//! Service accounts are not objects here: any valid name in any valid namespace gets a token,
//! as with `keyward create token`. A token bound to an object (`boundObjectRef`) is not
//! issued: nothing here would revoke it when the object goes.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::request::{KubeRequest, Reply};
use super::KubeError;
use crate::access::Access;
use crate::authn::serviceaccount::{DEFAULT_EXPIRATION, MAX_EXPIRATION, MIN_EXPIRATION};
use crate::names::FieldError;

const KIND: &str = "TokenRequest";
const API_VERSION: &str = "authentication.k8s.io/v1";
/// The group and kind kube-apiserver names in a TokenRequest's Invalid errors.
const GROUP_KIND: &str = "TokenRequest.authentication.k8s.io";

/// Issues a token for the service account `namespace/name` from the TokenRequest in `req`.
pub async fn create(
    access: &Access,
    req: &KubeRequest,
    namespace: &str,
    name: &str,
) -> Result<Reply, KubeError> {
    let body = req.json_value(KIND)?;
    let body = match body {
        Value::Null => json!({}),
        Value::Object(_) => body,
        _ => {
            return Err(KubeError::BadRequest(format!(
                "the body of the request must be a {KIND} object"
            )))
        }
    };
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or(KIND);
    let api_version = body
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or(API_VERSION);
    if (kind, api_version) != (KIND, API_VERSION) {
        return Err(KubeError::BadRequest(format!(
            "the body of the request is a {api_version} {kind}; expected an {API_VERSION} {KIND}"
        )));
    }
    let meta = |field: &str| {
        body.pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    // The name and namespace of the body, if given, must be the URL's.
    for (field, given, want, what) in [
        ("metadata.name", meta("name"), name, "name"),
        (
            "metadata.namespace",
            meta("namespace"),
            namespace,
            "namespace",
        ),
    ] {
        if !given.is_empty() && given != want {
            return Err(invalid(
                name,
                field,
                format!(
                    "Invalid value: {}: must match the service account {what} if specified",
                    crate::authz::go_quote(given)
                ),
            ));
        }
    }
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    if !matches!(spec.get("boundObjectRef"), None | Some(Value::Null)) {
        return Err(KubeError::BadRequest(
            "spec.boundObjectRef: keyward does not issue tokens bound to an object; leave it empty"
                .into(),
        ));
    }
    let audiences = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                KubeError::BadRequest("spec.audiences: must be a list of strings".into())
            })?,
        Some(_) => {
            return Err(KubeError::BadRequest(
                "spec.audiences: must be a list of strings".into(),
            ))
        }
    };
    let seconds = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION.as_secs() as i64,
        Some(v) => v.as_i64().ok_or_else(|| {
            KubeError::BadRequest("spec.expirationSeconds: must be an integer".into())
        })?,
    };
    if seconds < MIN_EXPIRATION.as_secs() as i64 {
        return Err(invalid(
            "",
            "spec.expirationSeconds",
            format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
        ));
    }
    if seconds > MAX_EXPIRATION.as_secs() as i64 {
        return Err(invalid(
            "",
            "spec.expirationSeconds",
            format!(
                "Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let now = SystemTime::now();
    let issued = access
        .create_token(
            &req.ctx,
            namespace,
            name,
            audiences,
            Duration::from_secs(seconds as u64),
        )
        .await?;
    let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    // Shortened to the server's most allowed: said in a warning, as kube-apiserver does.
    let granted = issued.lifetime.as_secs() as i64;
    let warnings = if granted < seconds {
        vec![format!(
            "requested expiration of {seconds} seconds shortened to {granted} seconds"
        )]
    } else {
        Vec::new()
    };
    Ok(Reply::Json {
        code: 201,
        body: json!({
            "kind": KIND,
            "apiVersion": API_VERSION,
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": time(now)},
            "spec": {"audiences": issued.audiences, "expirationSeconds": granted, "boundObjectRef": null},
            "status": {"token": issued.token.expose(), "expirationTimestamp": time(issued.expiration)},
        }),
        warnings,
    })
}

/// kube-apiserver's 422 for a TokenRequest (`NewInvalid(TokenRequest, name, ...)`).
fn invalid(name: &str, field: &str, message: String) -> KubeError {
    KubeError::Invalid {
        kind: GROUP_KIND.into(),
        name: name.into(),
        causes: vec![FieldError::new(field, message)],
    }
}
