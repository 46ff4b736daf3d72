//! The store's gRPC API, `keyward.v1`: the Secrets and Encryption services over the
//! [`Store`](crate::store::Store), conversion between protobuf and the store's types at the
//! edge, the one mapping from store errors to gRPC statuses ([`to_status`]), client
//! authentication for the TCP listener, and [`serve`], which serves both services on
//! already-bound listeners until shutdown.
//!
//! - `secrets`: `keyward.v1.Secrets` ([`SecretsService`]).
//! - `encryption`: `keyward.v1.Encryption` ([`EncryptionService`]).
//! - `auth`: [`Tokens`] and the [`Authenticator`] of TCP clients.
//! - `serve`: [`serve`], [`TlsListener`] and [`ServeError`].

mod auth;
mod encryption;
mod secrets;
mod serve;

use std::collections::BTreeMap;

use tonic::Status;
use zeroize::Zeroizing;

pub use auth::{Authenticator, Tokens};
pub use encryption::EncryptionService;
pub use secrets::SecretsService;
pub use serve::{serve, ServeError, TlsListener};

use crate::backend::{BackendError, KeyValue, Revision};
use crate::encryption::EncryptionError;
use crate::names::{FieldError, Namespace};
use crate::pb::keyward_v1 as pb;
use crate::store::model::{ObjectMeta, SecretBytes, SecretString};
use crate::store::{ResourceVersion, Secret, SecretId, Selector, StoreError};

/// Maps a store error to a gRPC status: caller mistakes get a specific code and a message
/// naming the field; failures of the environment are `Unavailable`; anything else is
/// `Internal` with the detail only in the log.
pub fn to_status(e: StoreError) -> Status {
    match e {
        StoreError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        StoreError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        StoreError::Conflict { .. } => Status::aborted(e.to_string()),
        StoreError::Gone(_) => Status::out_of_range(e.to_string()),
        StoreError::Undecryptable { .. } => Status::failed_precondition(e.to_string()),
        StoreError::Backend(BackendError::Unavailable(_)) => Status::unavailable(e.to_string()),
        StoreError::Backend(BackendError::InvalidArgument(m)) => Status::invalid_argument(m),
        StoreError::Backend(BackendError::FutureRevision { .. }) => {
            Status::invalid_argument(e.to_string())
        }
        StoreError::Encryption(EncryptionError::Kms { .. }) => Status::unavailable(e.to_string()),
        other => {
            tracing::error!(error = %other, "internal error");
            Status::internal("internal error; see the server's log")
        }
    }
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
            managed_fields: Vec::new(),
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

/// The store's Secret to protobuf (`stringData` is never returned).
pub fn secret_to_pb(s: Secret) -> pb::Secret {
    let updated = s
        .metadata
        .managed_fields
        .first()
        .map(|m| m.time.clone())
        .unwrap_or_default();
    pb::Secret {
        metadata: Some(pb::ObjectMeta {
            name: s.metadata.name,
            namespace: s.metadata.namespace,
            uid: s.metadata.uid,
            resource_version: s.metadata.resource_version,
            creation_timestamp: s.metadata.creation_timestamp,
            labels: s.metadata.labels,
            annotations: s.metadata.annotations,
        }),
        data: s
            .data
            .into_iter()
            .map(|(k, v)| (k, v.0.to_vec()))
            .collect::<BTreeMap<_, _>>(),
        string_data: BTreeMap::new(),
        r#type: s.type_,
        immutable: s.immutable,
        updated,
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
fn namespace_filter(ns: &str) -> Result<Option<Namespace>, Status> {
    match ns {
        "" => Ok(None),
        ns => Namespace::try_from(ns)
            .map(Some)
            .map_err(|e| invalid("", vec![e])),
    }
}

/// A request's `resource_version`, reported under the object field it stands for.
fn resource_version(name: &str, rv: &str) -> Result<ResourceVersion, Status> {
    ResourceVersion::try_from(rv).map_err(|e| invalid(name, vec![e]))
}

fn selector(s: &str) -> Result<Selector, Status> {
    Selector::parse(s).map_err(|e| Status::invalid_argument(format!("label_selector: {e}")))
}

fn limit(n: i64, field: &str) -> Result<usize, Status> {
    usize::try_from(n)
        .map_err(|_| Status::invalid_argument(format!("{field}: must be 0 or positive")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
