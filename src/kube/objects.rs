//! Secret JSON as kube-apiserver reads and writes it.

use super::KubeError;
use crate::store::model::Secret;

/// `fieldValidation`: what to do with unknown or duplicate fields in a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn (the default when the parameter is absent).
    #[default]
    Warn,
    /// Refuse the request (400).
    Strict,
}

/// A Secret read from a request body, with the warnings to return (`Warning: 299 - "..."`).
#[derive(Debug)]
pub struct Decoded {
    /// The Secret.
    pub secret: Secret,
    /// Unknown or duplicate fields, when `fieldValidation` is `Warn`.
    pub warnings: Vec<String>,
}

/// Reads a Secret from a JSON (or YAML) request body under `validation`.
pub fn decode_secret(body: &[u8], validation: FieldValidation) -> Result<Decoded, KubeError> {
    let _ = (body, validation);
    Err(KubeError::BadRequest("not implemented yet".into()))
}

/// The Secret as kube-apiserver returns it in JSON.
pub fn encode_secret(secret: &Secret) -> serde_json::Value {
    serde_json::to_value(secret).unwrap_or(serde_json::Value::Null)
}
