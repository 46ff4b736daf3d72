//! Server-side apply and `managedFields`.

use serde_json::Value;

use super::KubeError;
use crate::store::model::Secret;

/// Server-side apply of `applied` (the request body's JSON) by `manager` to `live` (`None`:
/// the object does not exist and is created). Returns the object to write, its
/// `managedFields` updated. `now` is the RFC 3339 time recorded.
pub fn server_side_apply(
    live: Option<&Secret>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Secret, KubeError> {
    let _ = (live, applied, manager, force, now);
    Err(KubeError::UnsupportedMediaType("not implemented yet".into()))
}

/// Records a non-apply write (create, update, patch) by `manager` in `new.metadata.managedFields`
/// (operation `Update`), given the object before it (`None` on create).
pub fn record_update(old: Option<&Secret>, new: &mut Secret, manager: &str, now: &str) {
    let _ = (old, new, manager, now);
}
