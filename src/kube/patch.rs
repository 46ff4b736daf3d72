//! Patches on a Secret's JSON: strategic merge, JSON merge (RFC 7386), JSON patch (RFC 6902).

use serde_json::Value;

use super::KubeError;

/// `application/strategic-merge-patch+json` applied to `live` (the stored object's JSON).
pub fn strategic_merge(live: &Value, patch: &Value) -> Result<Value, KubeError> {
    let _ = (live, patch);
    Err(KubeError::UnsupportedMediaType("not implemented yet".into()))
}

/// `application/merge-patch+json` (RFC 7386) applied to `live`.
pub fn merge(live: &Value, patch: &Value) -> Result<Value, KubeError> {
    let _ = (live, patch);
    Err(KubeError::UnsupportedMediaType("not implemented yet".into()))
}

/// `application/json-patch+json` (RFC 6902) applied to `live`.
pub fn json_patch(live: &Value, patch: &Value) -> Result<Value, KubeError> {
    let _ = (live, patch);
    Err(KubeError::UnsupportedMediaType("not implemented yet".into()))
}
