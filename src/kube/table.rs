//! `meta.k8s.io/v1` Tables: what kubectl asks for (`Accept: ...;as=Table`) on every
//! human-readable `get`, with kube-apiserver's Secret columns NAME, TYPE, DATA, AGE and the
//! `includeObject` choice of what each row carries.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::objects::encode_secret;
use super::request::{negotiate_form, Form};
use super::KubeError;
use crate::store::Secret;

/// What each row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole Secret.
    Object,
}

impl IncludeObject {
    /// The `includeObject` parameter of a request whose `accept` asks for a Table; anything
    /// else is kube-apiserver's 400 (its `ValidateTableOptions`, in `optionsForTransform`'s
    /// words). A request for anything but a Table ignores the parameter, as kube-apiserver
    /// decodes it only to make a Table.
    pub fn of_request(v: Option<&str>, accept: &str) -> Result<IncludeObject, KubeError> {
        if !wants_table(accept) {
            return Ok(IncludeObject::Metadata);
        }
        match v {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(KubeError::BadRequest(format!(
                "Unable to convert to Table as requested: includeObject: Invalid value: {}: must be 'Metadata', 'Object', 'None', or empty",
                crate::authz::go_quote(other)
            ))),
        }
    }
}

/// Whether `accept` asks for a Table ([`negotiate_form`]).
pub fn wants_table(accept: &str) -> bool {
    negotiate_form(accept).is_some_and(|(_, f)| f == Form::Table)
}

/// The `PartialObjectMetadata` form `accept` asks for, if it asks for one
/// ([`negotiate_form`]).
pub fn wants_metadata(accept: &str) -> Option<Form> {
    negotiate_form(accept)
        .map(|(_, f)| f)
        .filter(|f| matches!(f, Form::Metadata | Form::MetadataList))
}

/// ObjectMeta's `name` documentation, the description of every Name column.
pub const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.";

/// ObjectMeta's `creationTimestamp` documentation, the description of every Age column.
pub const AGE_DOC: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";

/// The column definitions of a Secret Table.
pub fn columns() -> Value {
    json!([
        {"name":"Name","type":"string","format":"name","description":NAME_DOC,"priority":0},
        {"name":"Type","type":"string","format":"","description":"Used to facilitate programmatic handling of secret data.","priority":0},
        {"name":"Data","type":"string","format":"","description":"Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.","priority":0},
        {"name":"Age","type":"string","format":"","description":AGE_DOC,"priority":0}
    ])
}

/// One row for `s`.
pub fn row(s: &Secret, include: IncludeObject, now: SystemTime) -> Value {
    let age = crate::go_time::system_time(&s.metadata.creation_timestamp)
        .map(|t| human_duration(now.duration_since(t).unwrap_or_default().as_secs()))
        .unwrap_or_else(|| "<unknown>".into());
    let type_ = if s.type_.is_empty() {
        "Opaque"
    } else {
        &s.type_
    };
    let mut r = json!({"cells": [s.metadata.name, type_, s.data.len(), age]});
    let object = match include {
        IncludeObject::None => None,
        IncludeObject::Metadata => Some(super::objects::partial_object_metadata(s)),
        IncludeObject::Object => Some(encode_secret(s)),
    };
    if let (Some(o), Some(m)) = (object, r.as_object_mut()) {
        m.insert("object".into(), o);
    }
    r
}

/// A Table of `items` at `resource_version`; `headers` false leaves out the column definitions
/// (watch events after the first).
pub fn table<S: std::borrow::Borrow<Secret>>(
    items: &[S],
    resource_version: &str,
    continue_token: Option<&str>,
    include: IncludeObject,
    headers: bool,
) -> Value {
    let now = SystemTime::now();
    let mut meta = serde_json::Map::new();
    if !resource_version.is_empty() {
        meta.insert("resourceVersion".into(), resource_version.into());
    }
    if let Some(c) = continue_token {
        meta.insert("continue".into(), c.into());
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|s| row(s.borrow(), include, now))
        .collect();
    let mut t = json!({"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":meta});
    if let Some(m) = t.as_object_mut() {
        if headers {
            m.insert("columnDefinitions".into(), columns());
        }
        m.insert("rows".into(), rows.into());
    }
    t
}

/// Go's `duration.HumanDuration` of `secs` (kubectl's AGE: `33s`, `5m10s`, `3h`, `2d3h`).
pub fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    let hours = secs / 3600;
    if secs < 120 {
        format!("{secs}s")
    } else if minutes < 10 {
        match secs % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_as_kubectl_prints_them() {
        for (s, want) in [
            (0, "0s"),
            (33, "33s"),
            (119, "119s"),
            (120, "2m"),
            (310, "5m10s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60 * 5, "3h5m"),
            (10 * 3600, "10h"),
            (51 * 3600, "2d3h"),
            (48 * 3600, "2d"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn a_rows_metadata_is_all_of_it() {
        let mut s = Secret::default();
        s.metadata.name = "a".into();
        s.metadata.namespace = "default".into();
        s.metadata
            .managed_fields
            .push(crate::store::model::ManagedFieldsEntry {
                manager: "kubectl".into(),
                ..Default::default()
            });
        let r = row(&s, IncludeObject::Metadata, SystemTime::now());
        assert_eq!(r["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(
            r["object"]["metadata"]["managedFields"][0]["manager"],
            "kubectl"
        );
        assert!(row(&s, IncludeObject::None, SystemTime::now())
            .get("object")
            .is_none());
    }

    #[test]
    fn table_accept_and_include_object() {
        assert!(wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(
            "application/vnd.kubernetes.protobuf,application/json"
        ));
        // Protobuf Tables are not served: the next entry is taken.
        assert!(!wants_table(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(wants_table(
            "application/yaml;as=Table;v=v1beta1;g=meta.k8s.io"
        ));
        assert!(!wants_table("application/json;as=Table;v=v2;g=meta.k8s.io"));
        assert_eq!(
            wants_metadata("application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"),
            Some(Form::MetadataList)
        );
        assert_eq!(wants_metadata("application/json"), None);
        let as_table = "application/json;as=Table;v=v1;g=meta.k8s.io";
        assert_eq!(
            IncludeObject::of_request(Some("x"), as_table).unwrap_err().to_string(),
            "Unable to convert to Table as requested: includeObject: Invalid value: \"x\": must be 'Metadata', 'Object', 'None', or empty"
        );
        assert_eq!(
            IncludeObject::of_request(Some("x"), "application/json").unwrap(),
            IncludeObject::Metadata
        );
        let mut s = Secret::default();
        s.metadata.name = "s1".into();
        s.type_ = "Opaque".into();
        let t = table(&[s], "7", None, IncludeObject::None, true);
        assert_eq!(t["rows"][0]["cells"][0], "s1");
        assert_eq!(t["rows"][0]["cells"][2], 0);
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        assert!(t["rows"][0].get("object").is_none());
        assert_eq!(t["columnDefinitions"][3]["name"], "Age");
    }
}
