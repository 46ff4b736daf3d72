//! Protobuf request bodies: the `k8s\0` envelope kubectl 1.32+ sends for Secrets and the
//! authorization and authentication reviews.

use super::KubeError;

/// A protobuf body decoded to the JSON the same request would have carried.
#[derive(Debug)]
pub struct Decoded {
    /// `apiVersion` from the envelope.
    pub api_version: String,
    /// `kind` from the envelope.
    pub kind: String,
    /// The object as JSON (empty protobuf fields are unset, as kube-apiserver reads them).
    pub object: serde_json::Value,
}

/// Decodes a `application/vnd.kubernetes.protobuf` body (Secret, SelfSubjectAccessReview,
/// SelfSubjectRulesReview, SelfSubjectReview).
pub fn decode(body: &[u8]) -> Result<Decoded, KubeError> {
    let _ = body;
    Err(KubeError::UnsupportedMediaType("not implemented yet".into()))
}
