//! The store's gRPC API, `keyward.v1`: the Secrets, Encryption and Auth services over the
//! guarded store ([`Access`](crate::access::Access)), conversion between protobuf and the
//! store's types at the edge, the mappings from errors to gRPC statuses ([`to_status`],
//! [`access_status`]) with the machine-readable [`Reason`] every status carries, and [`serve`],
//! which serves the services on already-bound listeners until shutdown.
//!
//! - `frontend`: [`Frontend`]: credentials off each request, authentication, impersonation.
//! - `asked`: what each call's message asks for, for the audit log of calls refused before
//!   their operation runs.
//! - `secrets`: `keyward.v1.Secrets` ([`SecretsService`]).
//! - `encryption`: `keyward.v1.Encryption` ([`EncryptionService`]).
//! - `auth`: `keyward.v1.Auth` ([`AuthService`]): reviews and token requests.
//! - `serve`: [`serve`], [`TlsListener`] and [`ServeError`].
//! - `request_errors`: the statuses of requests tonic refuses before a service sees them.

mod asked;
mod auth;
mod encryption;
mod frontend;
mod request_errors;
pub(crate) use request_errors::restate_as_grpc_go;
mod secrets;
mod serve;

use std::collections::BTreeMap;

use tonic::{Code, Status};
use zeroize::Zeroizing;

pub use crate::reason::{bad_request, Reason, REASON_KEY};
pub use auth::AuthService;
pub use encryption::EncryptionService;
pub use frontend::{
    access_status, Frontend, IMPERSONATE_EXTRA_PREFIX, IMPERSONATE_GROUP, IMPERSONATE_UID,
    IMPERSONATE_USER,
};
pub use secrets::SecretsService;
pub use serve::{serve, ServeError, TlsListener};

use crate::backend::{BackendError, KeyValue, Revision};
use crate::encryption::EncryptionError;
use crate::names::{FieldError, Namespace};
use crate::pb::keyward_v1 as pb;
use crate::store::model::{ObjectMeta, SecretBytes, SecretString};
use crate::store::{FieldSelector, ResourceVersion, Scope, Secret, SecretId, Selector, StoreError};

/// Maps a store error to a gRPC status carrying its [`Reason`]: caller mistakes get a specific
/// code and a message naming the field; failures of the environment are `Unavailable`; anything
/// else is `Internal` with the detail only in the log.
pub fn to_status(e: StoreError) -> Status {
    let (code, reason) = match &e {
        StoreError::Invalid { .. } => (Code::InvalidArgument, Reason::Invalid),
        StoreError::NotFound { .. } => (Code::NotFound, Reason::NotFound),
        StoreError::AlreadyExists { .. } => (Code::AlreadyExists, Reason::AlreadyExists),
        StoreError::Conflict { .. } | StoreError::PreconditionFailed { .. } => {
            (Code::Aborted, Reason::Conflict)
        }
        StoreError::Gone(_) => (Code::OutOfRange, Reason::Expired),
        // The message promises a token "in this response": here it is in the message.
        StoreError::ContinueExpired { continue_token } => {
            return Reason::Expired.status(
                Code::OutOfRange,
                format!("{e} Continue token: {continue_token}"),
            )
        }
        StoreError::MigrationRunning => (Code::FailedPrecondition, Reason::Conflict),
        StoreError::MigrationStopped => (Code::Cancelled, Reason::Timeout),
        StoreError::OutsideStore { .. } | StoreError::BadContinue { .. } => {
            (Code::InvalidArgument, Reason::BadRequest)
        }
        // A value no configured key opens: Kubernetes reports a failed decryption as an
        // internal error too.
        StoreError::Undecryptable { .. } => (Code::FailedPrecondition, Reason::InternalError),
        // Names the Secrets (storage keys, never values) the read could not do without.
        StoreError::Unreadable { .. } => (Code::Internal, Reason::InternalError),
        StoreError::Backend(BackendError::Unavailable(_) | BackendError::WatchTooSlow(_))
        | StoreError::Encryption(EncryptionError::Kms { .. }) => {
            (Code::Unavailable, Reason::ServiceUnavailable)
        }
        StoreError::Backend(BackendError::InvalidArgument(m)) => {
            return Reason::BadRequest.status(Code::InvalidArgument, m.clone())
        }
        StoreError::Backend(BackendError::FutureRevision { .. }) => {
            (Code::InvalidArgument, Reason::BadRequest)
        }
        _ => {
            tracing::error!(error = %e, "internal error");
            return Reason::InternalError
                .status(Code::Internal, "internal error; see the server's log");
        }
    };
    reason.status(code, e.to_string())
}

/// A protobuf Secret to the store's type.
pub fn secret_from_pb(s: pb::Secret) -> Secret {
    let m = s.metadata.unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            creation_timestamp: m.creation_timestamp,
            labels: m.labels,
            annotations: m.annotations,
            // ownerReferences, finalizers and managedFields are not in keyward.v1: the store
            // keeps the stored ones on update (see `Store::update`).
            ..ObjectMeta::default()
        },
        data: s
            .data
            .into_iter()
            .map(|(k, v)| (k, SecretBytes::new(v)))
            .collect(),
        string_data: s
            .string_data
            .into_iter()
            .map(|(k, v)| (k, SecretString(Zeroizing::new(v))))
            .collect(),
        type_: s.r#type,
        immutable: s.immutable,
        ..Secret::default()
    }
}

/// The metadata keyward.v1 has no fields of its own for, as JSON (empty if there is none):
/// the fields of Kubernetes' `ObjectMeta` JSON, borrowed (no copy on a get's path).
fn kubernetes_metadata(m: &ObjectMeta) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Only<'a> {
        #[serde(skip_serializing_if = "str::is_empty")]
        generate_name: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        deletion_timestamp: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        deletion_grace_period_seconds: Option<i64>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        owner_references: &'a [crate::store::model::OwnerReference],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        finalizers: &'a [String],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        managed_fields: &'a [crate::store::model::ManagedFieldsEntry],
    }
    if m.generate_name.is_empty()
        && m.deletion_timestamp.is_empty()
        && m.deletion_grace_period_seconds.is_none()
        && m.owner_references.is_empty()
        && m.finalizers.is_empty()
        && m.managed_fields.is_empty()
    {
        return String::new();
    }
    serde_json::to_string(&Only {
        generate_name: &m.generate_name,
        deletion_timestamp: &m.deletion_timestamp,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        owner_references: &m.owner_references,
        finalizers: &m.finalizers,
        managed_fields: &m.managed_fields,
    })
    .unwrap_or_default()
}

/// A Secret read over keyward.v1 (a client's view), with the metadata only the Kubernetes API
/// sets ([`pb::ObjectMeta::kubernetes_metadata`]). A server takes requests with
/// [`secret_from_pb`], which ignores it.
pub fn secret_read_from_pb(s: pb::Secret) -> Secret {
    let extra = s
        .metadata
        .as_ref()
        .map(|m| m.kubernetes_metadata.as_str())
        .filter(|j| !j.is_empty())
        .and_then(|j| serde_json::from_str::<ObjectMeta>(j).ok());
    let mut out = secret_from_pb(s);
    if let Some(x) = extra {
        let m = &mut out.metadata;
        m.generate_name = x.generate_name;
        m.deletion_timestamp = x.deletion_timestamp;
        m.deletion_grace_period_seconds = x.deletion_grace_period_seconds;
        m.owner_references = x.owner_references;
        m.finalizers = x.finalizers;
        m.managed_fields = x.managed_fields;
    }
    out
}

/// The store's Secret to protobuf (`stringData` is never returned); its values are moved, not
/// copied.
pub fn secret_to_pb(mut s: Secret) -> pb::Secret {
    let data = std::mem::take(&mut s.data)
        .into_iter()
        // Moved out, not copied: the emptied `Zeroizing` has nothing left to wipe.
        .map(|(k, mut v)| (k, std::mem::take(&mut *v.0)))
        .collect();
    pb_with_data(&s, data)
}

/// A Secret shared with the store's cache (a list's item) to protobuf: only what the API returns
/// is copied.
pub fn shared_secret_to_pb(s: &Secret) -> pb::Secret {
    let data = s
        .data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_slice().to_vec()))
        .collect();
    pb_with_data(s, data)
}

/// `s` as protobuf with `data` as its values.
fn pb_with_data(s: &Secret, data: BTreeMap<String, Vec<u8>>) -> pb::Secret {
    let m = &s.metadata;
    pb::Secret {
        metadata: Some(pb::ObjectMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            creation_timestamp: m.creation_timestamp.clone(),
            labels: m.labels.clone(),
            annotations: m.annotations.clone(),
            kubernetes_metadata: kubernetes_metadata(m),
        }),
        data,
        string_data: BTreeMap::new(),
        r#type: s.type_.clone(),
        immutable: s.immutable,
        updated: s.last_write_time(),
    }
}

fn raw_to_pb(kv: KeyValue) -> pb::RawKeyValue {
    pb::RawKeyValue {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: kv.value,
        create_revision: kv.create_revision.map_or(0, Revision::get),
        mod_revision: kv.mod_revision.get(),
        version: kv.version,
    }
}

/// Rules a request about Secret `name` breaks, as the store reports an invalid object.
fn invalid(name: &str, errors: Vec<FieldError>) -> Status {
    to_status(StoreError::invalid(name, errors))
}

/// The Secret a request names: its namespace (empty: `default`) and name.
fn secret_id(namespace: &str, name: &str) -> Result<SecretId, Status> {
    SecretId::parse(namespace, name).map_err(|e| invalid(name, e))
}

/// A namespace to list or watch (empty: every namespace).
fn namespace_filter(ns: &str) -> Result<Scope, Status> {
    match ns {
        "" => Ok(Scope::All),
        ns => Namespace::try_from(ns)
            .map(Scope::In)
            .map_err(|e| request_field("namespace", e)),
    }
}

/// The `resource_version` a list or watch starts from.
fn resource_version(rv: &str) -> Result<ResourceVersion, Status> {
    ResourceVersion::try_from(rv).map_err(|e| request_field("resource_version", e))
}

/// A bad request field of a call that names no object (a list or watch): named as the
/// request's field, not as a field of a Secret.
fn request_field(field: &str, e: FieldError) -> Status {
    bad_request(format!("{field}: {}", e.message))
}

fn selector(s: &str) -> Result<Selector, Status> {
    Selector::parse(s).map_err(|e| bad_request(format!("label_selector: {e}")))
}

fn field_selector(s: &str) -> Result<FieldSelector, Status> {
    FieldSelector::parse(s).map_err(|e| bad_request(format!("field_selector: {e}")))
}

fn limit(n: i64, field: &str) -> Result<usize, Status> {
    usize::try_from(n).map_err(|_| bad_request(format!("{field}: must be 0 or positive")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each store error's code and reason, and whether the message is the error's own text.
    #[test]
    fn every_store_error_maps_to_its_code_and_reason() {
        use crate::backend::Revision;
        let kms = EncryptionError::Kms {
            name: "k".into(),
            endpoint: "unix:///k.sock".into(),
            message: "down".into(),
        };
        let cases = [
            (
                StoreError::Invalid {
                    name: "a".into(),
                    errors: Vec::new(),
                },
                Code::InvalidArgument,
                Reason::Invalid,
            ),
            (
                StoreError::NotFound {
                    namespace: "default".into(),
                    name: "a".into(),
                },
                Code::NotFound,
                Reason::NotFound,
            ),
            (
                StoreError::AlreadyExists {
                    namespace: "default".into(),
                    name: "a".into(),
                },
                Code::AlreadyExists,
                Reason::AlreadyExists,
            ),
            (
                StoreError::Conflict {
                    name: "a".into(),
                    reason: "changed".into(),
                },
                Code::Aborted,
                Reason::Conflict,
            ),
            (
                StoreError::Gone("compacted".into()),
                Code::OutOfRange,
                Reason::Expired,
            ),
            (
                StoreError::Undecryptable {
                    name: "a".into(),
                    reason: "no key".into(),
                },
                Code::FailedPrecondition,
                Reason::InternalError,
            ),
            (
                StoreError::Backend(BackendError::Unavailable("down".into())),
                Code::Unavailable,
                Reason::ServiceUnavailable,
            ),
            (
                StoreError::Encryption(kms),
                Code::Unavailable,
                Reason::ServiceUnavailable,
            ),
            (
                StoreError::Backend(BackendError::InvalidArgument("empty key".into())),
                Code::InvalidArgument,
                Reason::BadRequest,
            ),
            (
                StoreError::Backend(BackendError::FutureRevision {
                    requested: Revision::new(9).unwrap(),
                    current: Revision::new(3).unwrap(),
                }),
                Code::InvalidArgument,
                Reason::BadRequest,
            ),
            (
                StoreError::Corrupt {
                    key: "/registry/secrets/default/a".into(),
                    reason: "not protobuf".into(),
                },
                Code::Internal,
                Reason::InternalError,
            ),
        ];
        for (e, code, reason) in cases {
            let shown = e.to_string();
            let s = to_status(e);
            assert_eq!((s.code(), Reason::of(&s)), (code, Some(reason)), "{shown}");
            match (code, reason) {
                (Code::Internal, _) => {
                    assert_eq!(s.message(), "internal error; see the server's log")
                }
                (_, Reason::BadRequest) if shown.starts_with("invalid request") => {
                    assert_eq!(s.message(), "empty key")
                }
                _ => assert_eq!(s.message(), shown),
            }
        }
        let s = bad_request("limit: must be 0 or positive");
        assert_eq!(
            (s.code(), Reason::of(&s)),
            (Code::InvalidArgument, Some(Reason::BadRequest))
        );
    }

    #[test]
    fn pb_round_trip_drops_string_data_on_output() {
        let mut s = pb::Secret {
            metadata: Some(pb::ObjectMeta {
                name: "a".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.data.insert("k".into(), b"v".to_vec());
        s.string_data.insert("s".into(), "x".into());
        let store_s = secret_from_pb(s);
        assert_eq!(store_s.string_data.len(), 1);
        let back = secret_to_pb(store_s);
        assert!(back.string_data.is_empty());
        assert_eq!(back.data["k"], b"v");
    }
}
