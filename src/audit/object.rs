//! Request and response bodies as audit events carry them ([`AuditObject`]), and the one rule
//! that no Secret value ever reaches the log, at any level.
//!
//! A Secret is kept as [`SecretMeta`]: its metadata, its type and the *names* of its `data` and
//! `stringData` keys, each with the value `null`. The type has nowhere to put a value. The
//! values of [`REDACTED_ANNOTATION_KEYS`] (`kubectl apply` copies the whole object, values
//! included, into `kubectl.kubernetes.io/last-applied-configuration`) are `null` too.
//!
//! Bodies that arrive as JSON go through a whitelist instead: for a request on `secrets`, every
//! body (object, list, patch, DeleteOptions) keeps only fields that cannot hold a value; for any
//! other resource, every embedded object of kind `Secret` or `SecretList` is reduced the same
//! way.

use std::collections::{BTreeMap, BTreeSet};

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::store::model::{ManagedFieldsEntry, ObjectMeta, OwnerReference, Secret};

/// Annotations whose values are replaced by `null` in every logged Secret.
pub const REDACTED_ANNOTATION_KEYS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

/// A request or response body, reduced for the log. Build it with [`AuditObject::secret`],
/// [`AuditObject::secret_list`], [`AuditObject::json`] or [`AuditObject::status`].
#[derive(Debug, Clone, PartialEq)]
pub struct AuditObject(Repr);

#[derive(Debug, Clone, PartialEq)]
enum Repr {
    Secret(Box<SecretMeta>),
    SecretList(SecretListMeta),
    /// Never holds a Secret value: reduced when built.
    Json(Value),
    /// A patch (reduced as [`Repr::Json`]): it names no object of its own.
    Patch(Value),
    /// A `Status` answer (message, reason, details: no Secret value), as the answer's text.
    Status(super::event::RawJson),
}

impl Serialize for AuditObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Repr::Secret(m) => m.serialize(s),
            Repr::SecretList(l) => l.serialize(s),
            Repr::Json(v) | Repr::Patch(v) => v.serialize(s),
            Repr::Status(r) => r.serialize(s),
        }
    }
}

impl AuditObject {
    /// A Secret, reduced to its metadata and key names.
    pub fn secret(secret: &Secret) -> Self {
        Self(Repr::Secret(Box::new(SecretMeta::from_secret(secret))))
    }

    /// A `SecretList` of `items` at `resource_version`, each item reduced to its metadata and
    /// key names.
    pub fn secret_list<'a>(
        items: impl IntoIterator<Item = &'a Secret>,
        resource_version: &str,
        continue_token: Option<&str>,
    ) -> Self {
        Self(Repr::SecretList(SecretListMeta {
            api_version: "v1",
            kind: "SecretList",
            metadata: ListMeta {
                resource_version: resource_version.to_owned(),
                continue_: continue_token.unwrap_or_default().to_owned(),
            },
            items: items.into_iter().map(SecretMeta::from_secret).collect(),
        }))
    }

    /// Any JSON body. Every embedded object of kind `Secret` or `SecretList` is reduced to
    /// metadata; when the object is attached to a request on `secrets`, the whole body is
    /// reduced (see the module documentation).
    pub fn json(value: Value) -> Self {
        Self(Repr::Json(reduce_embedded(value)))
    }

    /// A patch body, reduced as [`AuditObject::json`]. As kube-apiserver's `LogRequestPatch`
    /// logs it, it fills nothing of `objectRef` (a merge patch's `metadata.uid` is not the
    /// object's) and keeps any `managedFields` it carries.
    pub fn patch(value: Value) -> Self {
        Self(Repr::Patch(reduce_embedded(value)))
    }

    /// A `Status` the client was answered with (its JSON, in kube-apiserver's field order),
    /// logged whole: it holds no Secret value. `None` if `json` is not a JSON object.
    pub fn status(json: String) -> Option<Self> {
        super::event::RawJson::object(json).map(|r| Self(Repr::Status(r)))
    }

    /// The object as a request on `secrets` may log it: JSON bodies (patches, DeleteOptions,
    /// objects without a kind) keep only fields that cannot hold a value.
    pub(super) fn for_secrets(self) -> Self {
        match self.0 {
            Repr::Json(v) => Self(Repr::Json(reduce_secret_json(&v))),
            Repr::Patch(v) => Self(Repr::Patch(reduce_secret_json(&v))),
            typed => Self(typed),
        }
    }

    /// The object without `metadata.managedFields` (its own and its items').
    pub(super) fn without_managed_fields(self) -> Self {
        match self.0 {
            Repr::Secret(mut m) => {
                m.metadata.managed_fields.clear();
                Self(Repr::Secret(m))
            }
            Repr::SecretList(mut l) => {
                for item in &mut l.items {
                    item.metadata.managed_fields.clear();
                }
                Self(Repr::SecretList(l))
            }
            Repr::Json(mut v) => {
                strip_managed_fields(&mut v);
                if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
                    items.iter_mut().for_each(strip_managed_fields);
                }
                // A Table's rows, as kube-apiserver's `copyWithoutManagedFields` strips them.
                if let Some(rows) = v.get_mut("rows").and_then(Value::as_array_mut) {
                    for row in rows {
                        if let Some(o) = row.get_mut("object") {
                            strip_managed_fields(o);
                        }
                    }
                }
                Self(Repr::Json(v))
            }
            kept @ (Repr::Status(_) | Repr::Patch(_)) => Self(kept),
        }
    }

    /// `metadata.name`, `uid` and `resourceVersion` of a single object (empty for a list or
    /// where absent).
    /// [`AuditObject::name_uid_and_resource_version`], taken out of an object that is not kept
    /// (a response below level `RequestResponse`): moved, not copied.
    pub(super) fn into_name_uid_and_resource_version(self) -> [String; 3] {
        match self.0 {
            Repr::Secret(m) => {
                let m = m.metadata;
                [m.name, m.uid, m.resource_version]
            }
            other => Self(other).name_uid_and_resource_version(),
        }
    }

    pub(super) fn name_uid_and_resource_version(&self) -> [String; 3] {
        match &self.0 {
            Repr::Secret(m) => [
                m.metadata.name.clone(),
                m.metadata.uid.clone(),
                m.metadata.resource_version.clone(),
            ],
            Repr::SecretList(_) | Repr::Status(_) | Repr::Patch(_) => Default::default(),
            Repr::Json(v) => ["name", "uid", "resourceVersion"].map(|f| {
                v.pointer(&format!("/metadata/{f}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            }),
        }
    }
}

/// A Secret without values.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretMeta {
    kind: &'static str,
    api_version: &'static str,
    metadata: MetaSummary,
    // In the order of Go's `v1.Secret` fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    immutable: Option<bool>,
    #[serde(
        skip_serializing_if = "BTreeSet::is_empty",
        serialize_with = "keys_only"
    )]
    data: BTreeSet<String>,
    #[serde(
        skip_serializing_if = "BTreeSet::is_empty",
        serialize_with = "keys_only"
    )]
    string_data: BTreeSet<String>,
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    type_: String,
}

impl SecretMeta {
    fn from_secret(s: &Secret) -> Self {
        Self {
            api_version: "v1",
            kind: "Secret",
            metadata: MetaSummary::from_meta(&s.metadata),
            data: s.data.keys().cloned().collect(),
            string_data: s.string_data.keys().cloned().collect(),
            type_: s.type_.clone(),
            immutable: s.immutable,
        }
    }
}

/// Serialises key names as a map whose every value is `null`.
fn keys_only<S: Serializer>(keys: &BTreeSet<String>, s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(keys.len()))?;
    for k in keys {
        m.serialize_entry(k, &())?;
    }
    m.end()
}

/// A Secret's metadata as the API answers it, annotations that may hold values (the
/// last-applied configuration) set to `null`. `managedFields` name fields, never values.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct MetaSummary {
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    generate_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    uid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    resource_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    creation_timestamp: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    deletion_timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deletion_grace_period_seconds: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    /// `None` for [`REDACTED_ANNOTATION_KEYS`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, Option<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    owner_references: Vec<OwnerReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    finalizers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    managed_fields: Vec<ManagedFieldsEntry>,
}

impl MetaSummary {
    fn from_meta(m: &ObjectMeta) -> Self {
        // `none_owned` (what the Kubernetes API hands the store for "no manager") is none.
        let managed_fields = match crate::store::managed::is_none_owned(&m.managed_fields) {
            true => Vec::new(),
            false => m.managed_fields.clone(),
        };
        Self {
            name: m.name.clone(),
            generate_name: m.generate_name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            creation_timestamp: m.creation_timestamp.clone(),
            deletion_timestamp: m.deletion_timestamp.clone(),
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            labels: m.labels.clone(),
            annotations: m
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), (!redacted(k)).then(|| v.clone())))
                .collect(),
            owner_references: m.owner_references.clone(),
            finalizers: m.finalizers.clone(),
            managed_fields,
        }
    }
}

fn redacted(annotation: &str) -> bool {
    REDACTED_ANNOTATION_KEYS.contains(&annotation)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretListMeta {
    kind: &'static str,
    api_version: &'static str,
    metadata: ListMeta,
    items: Vec<SecretMeta>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(skip_serializing_if = "String::is_empty")]
    resource_version: String,
    #[serde(rename = "continue", skip_serializing_if = "String::is_empty")]
    continue_: String,
}

// ----- JSON bodies -----

/// Reduces every embedded `Secret` / `SecretList` object in a body of another resource.
fn reduce_embedded(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            if matches!(
                m.get("kind").and_then(Value::as_str),
                Some("Secret" | "SecretList")
            ) {
                Value::Object(reduce_secret_object(&m))
            } else {
                Value::Object(
                    m.into_iter()
                        .map(|(k, v)| (k, reduce_embedded(v)))
                        .collect(),
                )
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(reduce_embedded).collect()),
        other => other,
    }
}

/// Any body of a request on `secrets`: an object (Secret, SecretList, DeleteOptions, a merge
/// patch) keeps only value-free fields; a JSON Patch keeps each operation's `op`, `path` and
/// `from`; anything else becomes `null`.
fn reduce_secret_json(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(reduce_secret_object(m)),
        Value::Array(ops) => Value::Array(
            ops.iter()
                .filter_map(Value::as_object)
                .map(|op| only_strings(op, &["op", "path", "from"]))
                .collect(),
        ),
        _ => Value::Null,
    }
}

fn reduce_secret_object(m: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in m {
        let kept = match (k.as_str(), v) {
            ("apiVersion" | "kind" | "type" | "propagationPolicy", Value::String(_))
            | ("immutable" | "orphanDependents", Value::Bool(_))
            | ("gracePeriodSeconds", Value::Number(_)) => Some(v.clone()),
            ("dryRun", Value::Array(a)) => Some(Value::Array(strings(a))),
            ("preconditions", Value::Object(p)) => {
                Some(only_strings(p, &["uid", "resourceVersion"]))
            }
            ("metadata", Value::Object(meta)) => Some(Value::Object(reduce_meta(meta))),
            ("data" | "stringData", Value::Object(values)) => Some(Value::Object(
                values
                    .iter()
                    .map(|(k, v)| {
                        // No data key starts with `$`: only the `$patch` directive is kept.
                        let kept = (k == "$patch").then(|| directive(k, v)).flatten();
                        (k.clone(), kept.unwrap_or(Value::Null))
                    })
                    .collect(),
            )),
            ("items", Value::Array(items)) => {
                Some(Value::Array(items.iter().map(reduce_secret_json).collect()))
            }
            // A Table's columns and rows (the Kubernetes API's answer to `kubectl get`): column
            // definitions and the cells of a Secret's row (name, type, key count, age) hold no
            // value; each row's object is reduced as any.
            ("columnDefinitions", Value::Array(columns)) => Some(Value::Array(
                columns
                    .iter()
                    .filter_map(Value::as_object)
                    .map(|c| {
                        let mut kept = only_strings(c, &["name", "type", "format", "description"]);
                        if let (Some(p @ Value::Number(_)), Value::Object(k)) =
                            (c.get("priority"), &mut kept)
                        {
                            k.insert("priority".into(), p.clone());
                        }
                        kept
                    })
                    .collect(),
            )),
            ("rows", Value::Array(rows)) => Some(Value::Array(
                rows.iter()
                    .filter_map(Value::as_object)
                    .map(|r| {
                        let mut row = Map::new();
                        if let Some(Value::Array(cells)) = r.get("cells") {
                            let cells = cells
                                .iter()
                                .map(|c| match c {
                                    Value::String(_) | Value::Number(_) => c.clone(),
                                    _ => Value::Null,
                                })
                                .collect();
                            row.insert("cells".into(), Value::Array(cells));
                        }
                        if let Some(o) = r.get("object") {
                            row.insert("object".into(), reduce_secret_json(o));
                        }
                        Value::Object(row)
                    })
                    .collect(),
            )),
            _ => directive(k, v),
        };
        if let Some(kept) = kept {
            out.insert(k.clone(), kept);
        }
    }
    out
}

/// A strategic merge patch directive, kept as it is: `$patch` (`replace`, `merge`, `delete`),
/// and the key or field lists of `$retainKeys`, `$setElementOrder/FIELD` and
/// `$deleteFromPrimitiveList/FIELD` (key names and finalizers, never a value of `data`).
fn directive(key: &str, value: &Value) -> Option<Value> {
    match (key, value) {
        ("$patch", Value::String(d)) if matches!(d.as_str(), "replace" | "merge" | "delete") => {
            Some(value.clone())
        }
        ("$retainKeys", Value::Array(a)) => Some(Value::Array(strings(a))),
        (k, Value::Array(a))
            if k.starts_with("$setElementOrder/") || k.starts_with("$deleteFromPrimitiveList/") =>
        {
            Some(Value::Array(strings(a)))
        }
        _ => None,
    }
}

fn reduce_meta(m: &Map<String, Value>) -> Map<String, Value> {
    const STRINGS: &[&str] = &[
        "name",
        "generateName",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "continue",
    ];
    let mut out = Map::new();
    for (k, v) in m {
        let kept = match (k.as_str(), v) {
            (f, Value::String(_)) if STRINGS.contains(&f) => Some(v.clone()),
            (
                "generation" | "deletionGracePeriodSeconds" | "remainingItemCount",
                Value::Number(_),
            ) => Some(v.clone()),
            ("labels", Value::Object(l)) => Some(Value::Object(
                l.iter()
                    .filter(|(_, v)| v.is_string())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )),
            ("annotations", Value::Object(a)) => Some(Value::Object(
                a.iter()
                    .filter(|(_, v)| v.is_string())
                    .map(|(k, v)| {
                        let v = if redacted(k) { Value::Null } else { v.clone() };
                        (k.clone(), v)
                    })
                    .collect(),
            )),
            ("finalizers", Value::Array(a)) => Some(Value::Array(strings(a))),
            ("managedFields", Value::Array(a)) => Some(Value::Array(
                a.iter()
                    .filter_map(Value::as_object)
                    .map(|f| {
                        let mut kept = only_strings(
                            f,
                            &[
                                "manager",
                                "operation",
                                "apiVersion",
                                "time",
                                "fieldsType",
                                "subresource",
                            ],
                        );
                        // The field set (`f:data: {f:password: {}}`): names only, as the
                        // client received it.
                        if let (Some(fields @ Value::Object(_)), Value::Object(k)) =
                            (f.get("fieldsV1"), &mut kept)
                        {
                            k.insert("fieldsV1".into(), field_names(fields));
                        }
                        kept
                    })
                    .collect(),
            )),
            ("ownerReferences", Value::Array(a)) => Some(Value::Array(
                a.iter()
                    .filter_map(Value::as_object)
                    .map(|r| {
                        let mut kept = only_strings(r, &["apiVersion", "kind", "name", "uid"]);
                        for flag in ["controller", "blockOwnerDeletion"] {
                            if let (Some(b @ Value::Bool(_)), Value::Object(k)) =
                                (r.get(flag), &mut kept)
                            {
                                k.insert(flag.to_owned(), b.clone());
                            }
                        }
                        kept
                    })
                    .collect(),
            )),
            _ => directive(k, v),
        };
        if let Some(kept) = kept {
            out.insert(k.clone(), kept);
        }
    }
    out
}

/// A `fieldsV1` set reduced to its shape: objects of objects (the field names), anything
/// else dropped.
fn field_names(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| v.is_object())
                .map(|(k, v)| (k.clone(), field_names(v)))
                .collect(),
        ),
        _ => Value::Object(Map::new()),
    }
}

/// The string-valued fields of `m` named in `keep`, as an object.
fn only_strings(m: &Map<String, Value>, keep: &[&str]) -> Value {
    Value::Object(
        m.iter()
            .filter(|(k, v)| keep.contains(&k.as_str()) && v.is_string())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

fn strings(a: &[Value]) -> Vec<Value> {
    a.iter().filter(|v| v.is_string()).cloned().collect()
}

fn strip_managed_fields(v: &mut Value) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.shift_remove("managedFields");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{ManagedFieldsEntry, SecretBytes, SecretString};
    use serde_json::json;

    const APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

    fn secret() -> Secret {
        let mut s = Secret::default();
        s.metadata.name = "db".into();
        s.metadata.namespace = "prod".into();
        s.metadata.uid = "u-1".into();
        s.metadata.resource_version = "42".into();
        s.metadata.labels.insert("app".into(), "web".into());
        s.metadata.annotations.insert("note".into(), "hello".into());
        s.metadata.annotations.insert(
            APPLIED.into(),
            r#"{"data":{"password":"aHVudGVyMg=="}}"#.into(),
        );
        s.metadata.managed_fields.push(ManagedFieldsEntry {
            manager: "keyward".into(),
            operation: "Update".into(),
            api_version: "v1".into(),
            time: "2024-01-01T00:00:00Z".into(),
            fields_type: "FieldsV1".into(),
            fields_v1: Some(json!({"f:data": {".": {}, "f:password": {}}})),
            ..ManagedFieldsEntry::default()
        });
        s.metadata.finalizers.push("example.com/keep".into());
        s.metadata.owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: "u-2".into(),
            controller: Some(true),
            block_owner_deletion: None,
        });
        s.data
            .insert("password".into(), SecretBytes::new(b"hunter2".to_vec()));
        s.string_data.insert(
            "token".into(),
            SecretString(zeroize::Zeroizing::new("tok-123".into())),
        );
        s.type_ = "Opaque".into();
        s
    }

    #[test]
    fn a_secret_keeps_metadata_and_key_names_only() {
        let got = serde_json::to_value(AuditObject::secret(&secret())).unwrap();
        assert_eq!(
            got,
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": "db", "namespace": "prod", "uid": "u-1", "resourceVersion": "42",
                    "labels": {"app": "web"},
                    "annotations": {"note": "hello", APPLIED: null},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u-2", "controller": true}],
                    "finalizers": ["example.com/keep"],
                    "managedFields": [{"manager": "keyward", "operation": "Update", "apiVersion": "v1", "time": "2024-01-01T00:00:00Z",
                                       "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:password": {}}}}],
                },
                "data": {"password": null},
                "stringData": {"token": null},
                "type": "Opaque",
            })
        );
        let stripped =
            serde_json::to_value(AuditObject::secret(&secret()).without_managed_fields()).unwrap();
        assert!(stripped["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn a_list_keeps_its_resource_version_and_reduces_every_item() {
        let items = [secret(), secret()];
        let got =
            serde_json::to_value(AuditObject::secret_list(&items, "77", Some("next"))).unwrap();
        assert_eq!(got["kind"], "SecretList");
        assert_eq!(
            got["metadata"],
            json!({"resourceVersion": "77", "continue": "next"})
        );
        assert_eq!(got["items"][1]["data"], json!({"password": null}));
        assert!(!got.to_string().contains("hunter2"));
    }

    #[test]
    fn json_bodies_on_secrets_keep_only_value_free_fields() {
        let patch = json!({
            "metadata": {"annotations": {APPLIED: "{\"data\":{\"k\":\"c2VjcmV0\"}}", "a": "b", "n": 1}, "labels": {"x": "y"}},
            "data": {"k": "c2VjcmV0"},
            "stringData": {"s": "secret"},
            "unknown": {"value": "secret"},
        });
        let got = serde_json::to_value(AuditObject::json(patch).for_secrets()).unwrap();
        assert_eq!(
            got,
            json!({
                "metadata": {"annotations": {APPLIED: null, "a": "b"}, "labels": {"x": "y"}},
                "data": {"k": null},
                "stringData": {"s": null},
            })
        );
        let json_patch = json!([
            {"op": "replace", "path": "/data/k", "value": "c2VjcmV0"},
            {"op": "copy", "from": "/data/a", "path": "/data/b"},
        ]);
        assert_eq!(
            serde_json::to_value(AuditObject::json(json_patch).for_secrets()).unwrap(),
            json!([{"op": "replace", "path": "/data/k"}, {"op": "copy", "from": "/data/a", "path": "/data/b"}])
        );
        let delete = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": "5"}, "dryRun": ["All"], "gracePeriodSeconds": 0});
        assert_eq!(
            serde_json::to_value(AuditObject::json(delete.clone()).for_secrets()).unwrap(),
            delete
        );
        assert_eq!(
            serde_json::to_value(AuditObject::json(json!("c2VjcmV0")).for_secrets()).unwrap(),
            Value::Null
        );
    }

    /// Strategic merge patch directives hold no value of `data`: kept as sent, while the
    /// values beside them are not (nor a `$patch` that is not a directive).
    #[test]
    fn strategic_merge_directives_are_kept() {
        let patch = json!({
            "$setElementOrder/data": ["a", "b"],
            "$retainKeys": ["data", "type"],
            "data": {"$patch": "replace", "a": "c2VjcmV0", "b": "dmFsdWU="},
            "stringData": {"$patch": "s3cret-not-a-directive"},
            "metadata": {
                "$deleteFromPrimitiveList/finalizers": ["example.com/x"],
                "labels": {"$patch": "delete"},
            },
        });
        let got = serde_json::to_value(AuditObject::json(patch).for_secrets()).unwrap();
        assert_eq!(
            got,
            json!({
                "$setElementOrder/data": ["a", "b"],
                "$retainKeys": ["data", "type"],
                "data": {"$patch": "replace", "a": null, "b": null},
                "stringData": {"$patch": null},
                "metadata": {
                    "$deleteFromPrimitiveList/finalizers": ["example.com/x"],
                    "labels": {"$patch": "delete"},
                },
            })
        );
    }

    #[test]
    fn secrets_embedded_in_other_bodies_are_reduced() {
        let list = json!({
            "kind": "List",
            "items": [
                {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "a"}, "data": {"k": "c2VjcmV0"}},
                {"kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"k": "visible"}},
                {"type": "ADDED", "object": {"kind": "Secret", "stringData": {"k": "secret"}}},
            ]
        });
        let got = serde_json::to_value(AuditObject::json(list)).unwrap();
        assert_eq!(got["items"][0]["data"], json!({"k": null}));
        assert_eq!(got["items"][1]["data"], json!({"k": "visible"}));
        assert_eq!(got["items"][2]["object"]["stringData"], json!({"k": null}));
    }

    #[test]
    fn name_uid_and_resource_version_come_from_single_objects() {
        let [name, uid, rv] = AuditObject::secret(&secret()).name_uid_and_resource_version();
        assert_eq!((uid.as_str(), rv.as_str()), ("u-1", "42"));
        assert_eq!(name, secret().metadata.name);
        let j = AuditObject::json(json!({"metadata": {"uid": "x", "resourceVersion": "9"}}));
        assert_eq!(
            j.name_uid_and_resource_version(),
            [String::new(), "x".to_owned(), "9".to_owned()]
        );
        let l = AuditObject::secret_list(&[secret()], "1", None);
        assert_eq!(l.name_uid_and_resource_version(), <[String; 3]>::default());
        // A patch names no object, whatever its metadata says.
        let p = AuditObject::patch(json!({"metadata": {"uid": "x", "resourceVersion": "9"}}));
        assert_eq!(p.name_uid_and_resource_version(), <[String; 3]>::default());
        for o in [AuditObject::secret(&secret()), j, l] {
            let ids = o.name_uid_and_resource_version();
            assert_eq!(o.into_name_uid_and_resource_version(), ids);
        }
    }

    /// A Table (kubectl's `get`): each row's object keeps its managedFields' field names (the
    /// client received them), and `omitManagedFields` drops them from the rows too, as
    /// kube-apiserver's `copyWithoutManagedFields`.
    #[test]
    fn table_rows_keep_field_names_and_lose_managed_fields_when_omitted() {
        let table = json!({
            "kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "columnDefinitions": [{"name": "Name", "type": "string", "format": "name", "priority": 0}],
            "rows": [{"cells": ["db", "Opaque", 1, "5s"], "object": {
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "db", "managedFields": [{
                    "manager": "kubectl-create", "operation": "Update", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {".": {}, "f:password": {}}, "f:type": "hunter2"}}]}}}],
        });
        let reduced = AuditObject::json(table).for_secrets();
        let got = serde_json::to_value(&reduced).unwrap();
        assert_eq!(
            got["rows"][0]["object"]["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {".": {}, "f:password": {}}}),
            "{got}"
        );
        assert!(!got.to_string().contains("hunter2"), "{got}");
        let omitted = serde_json::to_value(reduced.without_managed_fields()).unwrap();
        assert!(
            omitted["rows"][0]["object"]["metadata"]
                .get("managedFields")
                .is_none(),
            "{omitted}"
        );
        assert_eq!(
            omitted["rows"][0]["cells"],
            json!(["db", "Opaque", 1, "5s"])
        );
    }
}
