//! The bytes a Secret is stored as before encryption: kube-apiserver's storage encoding, the
//! `k8s\0` protobuf envelope (`runtime.Unknown{typeMeta: v1/Secret, raw: core/v1 Secret}`),
//! written byte for byte as kube-apiserver's gogo-protobuf code writes it. Secrets written by
//! older builds as Kubernetes JSON are still read (kube-apiserver reads both too).
//!
//! Protobuf keeps `data` as raw bytes (JSON holds them in base64) and needs no escaping, so a
//! record with a 1 KiB value is about a quarter smaller and cheaper to write and read.
//! kube-apiserver's `metav1.Time` holds whole seconds; a Secret whose times are not RFC 3339 whole
//! seconds after 1970 in UTC would not come back as it was, so [`encode_exact`] refuses it and
//! the store writes that Secret as JSON. The store keeps every time as kube-apiserver does first
//! ([`crate::go_time`], `model::normalize`), so only a time before 1970 is such a time.
//!
//! The layout (tag bytes of kubernetes/api's and apimachinery's `generated.proto`): gogo writes
//! every non-pointer field, empty or not (`generateName`, `selfLink`, `resourceVersion` (always
//! empty: the revision is the version), `generation` 0, `creationTimestamp`, `fieldsType`,
//! `subresource`, each map entry's key and value), pointer fields only when set
//! (`deletionTimestamp`, `deletionGracePeriodSeconds`, `immutable`, `controller`, a managed
//! entry's `time` and `fieldsV1`), map entries sorted by key, a `Time` as `seconds` and `nanos`
//! (always 0), and an envelope that ends in an empty `contentEncoding` and `contentType`.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use prost::Message;
use zeroize::{Zeroize, Zeroizing};

use super::model::{self, Secret, SecretBytes};

/// The 4 bytes every Kubernetes protobuf object starts with ("k8s" and encoding style 0).
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// `runtime.TypeMeta{apiVersion: "v1", kind: "Secret"}` as written in the envelope.
const SECRET_TYPE_META: &[u8] = b"\x0a\x02v1\x12\x06Secret";

/// The latest time `metav1.Time` can carry here: 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;

/// `runtime.Unknown`: the envelope after the magic bytes.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Unknown {
    #[prost(message, optional, tag = "1")]
    pub type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", tag = "2")]
    pub raw: Vec<u8>,
    #[prost(string, tag = "3")]
    pub content_encoding: String,
    #[prost(string, tag = "4")]
    pub content_type: String,
}

/// `runtime.TypeMeta` (apiVersion first, unlike meta/v1's).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct TypeMeta {
    #[prost(string, tag = "1")]
    pub api_version: String,
    #[prost(string, tag = "2")]
    pub kind: String,
}

/// meta/v1 `Time` (`Timestamp` on the wire).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Time {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// meta/v1 `FieldsV1`: the JSON of a field set.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct FieldsV1 {
    #[prost(bytes = "vec", tag = "1")]
    pub raw: Vec<u8>,
}

/// meta/v1 `ManagedFieldsEntry`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ManagedFieldsEntry {
    #[prost(string, tag = "1")]
    pub manager: String,
    #[prost(string, tag = "2")]
    pub operation: String,
    #[prost(string, tag = "3")]
    pub api_version: String,
    #[prost(message, optional, tag = "4")]
    pub time: Option<Time>,
    #[prost(string, tag = "6")]
    pub fields_type: String,
    #[prost(message, optional, tag = "7")]
    pub fields_v1: Option<FieldsV1>,
    #[prost(string, tag = "8")]
    pub subresource: String,
}

/// meta/v1 `OwnerReference`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct OwnerReference {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub uid: String,
    #[prost(string, tag = "5")]
    pub api_version: String,
    #[prost(bool, optional, tag = "6")]
    pub controller: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub block_owner_deletion: Option<bool>,
}

/// meta/v1 `ObjectMeta`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ObjectMeta {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub generate_name: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(string, tag = "4")]
    pub self_link: String,
    #[prost(string, tag = "5")]
    pub uid: String,
    #[prost(string, tag = "6")]
    pub resource_version: String,
    #[prost(int64, tag = "7")]
    pub generation: i64,
    #[prost(message, optional, tag = "8")]
    pub creation_timestamp: Option<Time>,
    #[prost(message, optional, tag = "9")]
    pub deletion_timestamp: Option<Time>,
    #[prost(int64, optional, tag = "10")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[prost(btree_map = "string, string", tag = "11")]
    pub labels: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "12")]
    pub annotations: BTreeMap<String, String>,
    #[prost(message, repeated, tag = "13")]
    pub owner_references: Vec<OwnerReference>,
    #[prost(string, repeated, tag = "14")]
    pub finalizers: Vec<String>,
    #[prost(message, repeated, tag = "17")]
    pub managed_fields: Vec<ManagedFieldsEntry>,
}

/// core/v1 `Secret`. Its values are zeroized when it is dropped.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PbSecret {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ObjectMeta>,
    #[prost(btree_map = "string, bytes", tag = "2")]
    pub data: BTreeMap<String, Vec<u8>>,
    #[prost(string, tag = "3")]
    pub r#type: String,
    #[prost(btree_map = "string, string", tag = "4")]
    pub string_data: BTreeMap<String, String>,
    #[prost(bool, optional, tag = "5")]
    pub immutable: Option<bool>,
}

impl Drop for PbSecret {
    fn drop(&mut self) {
        self.data.values_mut().for_each(Zeroize::zeroize);
        self.string_data.values_mut().for_each(Zeroize::zeroize);
    }
}

/// `s` in the storage encoding, or `None` if it would not decode to exactly `s`: a time that
/// is not RFC 3339 whole seconds in UTC after 1970, `stringData`, or an `apiVersion`/`kind`
/// other than `v1`/`Secret`. `resourceVersion` is written as it is (the store clears it first).
pub fn encode_exact(s: &Secret) -> Option<Zeroizing<Vec<u8>>> {
    if s.api_version != "v1" || s.kind != "Secret" || !s.string_data.is_empty() {
        return None;
    }
    write(s, true)
}

/// `s` as a `k8s\0` protobuf object, as kube-apiserver answers a client that asks for
/// protobuf; a time that does not parse is left out (`stringData` is never written).
pub fn encode(s: &Secret) -> Zeroizing<Vec<u8>> {
    write(s, false).unwrap_or_default()
}

/// Reads a Secret in the storage encoding (`plain` starts with [`MAGIC`]). What does not
/// decode, or holds another kind, is an error naming what is wrong (never a value).
pub fn decode(plain: &[u8]) -> Result<Secret, String> {
    let body = plain
        .strip_prefix(MAGIC.as_slice())
        .ok_or("no \"k8s\\x00\" prefix")?;
    let mut envelope =
        Unknown::decode(body).map_err(|e| format!("the runtime.Unknown envelope: {e}"))?;
    let raw = Zeroizing::new(std::mem::take(&mut envelope.raw));
    let tm = envelope.type_meta.unwrap_or_default();
    if tm.api_version != "v1" || tm.kind != "Secret" {
        return Err(format!(
            "a stored object of apiVersion {:?}, kind {:?}, not v1 Secret",
            tm.api_version, tm.kind
        ));
    }
    if !envelope.content_encoding.is_empty() {
        return Err(format!(
            "contentEncoding {:?}; only unencoded objects are read",
            envelope.content_encoding
        ));
    }
    let mut pb = PbSecret::decode(raw.as_slice()).map_err(|e| format!("the Secret: {e}"))?;
    let m = pb.metadata.take().unwrap_or_default();
    let time = |field: &str, t: Option<Time>| match t {
        None => Ok(String::new()),
        Some(t) if t.seconds <= 0 => Ok(String::new()),
        Some(t) if t.seconds > MAX_SECONDS => Err(format!("{field}: a time after the year 9999")),
        Some(t) => {
            let at = UNIX_EPOCH + Duration::from_secs(t.seconds.unsigned_abs());
            Ok(humantime::format_rfc3339_seconds(at).to_string())
        }
    };
    let mut managed_fields = Vec::with_capacity(m.managed_fields.len());
    for (i, e) in m.managed_fields.into_iter().enumerate() {
        let fields_v1 = match e.fields_v1 {
            Some(f) if !f.raw.is_empty() => {
                match serde_json::from_slice::<serde_json::Value>(&f.raw) {
                    Ok(serde_json::Value::Null) => None,
                    Ok(v) => Some(v),
                    Err(e) => {
                        return Err(format!(
                            "metadata.managedFields[{i}].fieldsV1 is not JSON: {e}"
                        ))
                    }
                }
            }
            _ => None,
        };
        managed_fields.push(model::ManagedFieldsEntry {
            manager: e.manager,
            operation: e.operation,
            api_version: e.api_version,
            time: time(&format!("metadata.managedFields[{i}].time"), e.time)?,
            fields_type: e.fields_type,
            fields_v1,
            subresource: e.subresource,
        });
    }
    let metadata = model::ObjectMeta {
        name: m.name,
        generate_name: m.generate_name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: String::new(),
        creation_timestamp: time("metadata.creationTimestamp", m.creation_timestamp)?,
        deletion_timestamp: time("metadata.deletionTimestamp", m.deletion_timestamp)?,
        deletion_grace_period_seconds: m.deletion_grace_period_seconds,
        labels: m.labels,
        annotations: m.annotations,
        owner_references: m
            .owner_references
            .into_iter()
            .map(|r| model::OwnerReference {
                api_version: r.api_version,
                kind: r.kind,
                name: r.name,
                uid: r.uid,
                controller: r.controller,
                block_owner_deletion: r.block_owner_deletion,
            })
            .collect(),
        finalizers: m.finalizers,
        managed_fields,
    };
    let data = std::mem::take(&mut pb.data)
        .into_iter()
        .map(|(k, v)| (k, SecretBytes::new(v)))
        .collect();
    let mut string_data = BTreeMap::new();
    for (k, v) in std::mem::take(&mut pb.string_data) {
        string_data.insert(k, model::SecretString(Zeroizing::new(v)));
    }
    Ok(Secret {
        api_version: "v1".into(),
        kind: "Secret".into(),
        metadata,
        data,
        string_data,
        type_: std::mem::take(&mut pb.r#type),
        immutable: pb.immutable,
    })
}

/// The seconds of an RFC 3339 time; with `exact`, only a time that formats back to the same
/// string (UTC, whole seconds) after 1970, else `Err`. Without it, what does not parse is `None`.
fn seconds(t: &str, exact: bool) -> Result<Option<i64>, ()> {
    if t.is_empty() {
        return Ok(None);
    }
    let parsed = crate::go_time::parse_rfc3339(t)
        .ok()
        .map(|at| at.unix)
        .filter(|&s| s > 0);
    match parsed {
        Some(s) if !exact || crate::go_time::format_rfc3339_utc(s) == t => Ok(Some(s)),
        _ if exact => Err(()),
        _ => Ok(None),
    }
}

/// Bytes of `v` as a protobuf varint.
fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Length of a length-delimited field with a one-byte tag and `n` bytes of content.
fn field_len(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

/// A length-delimited field: `tag`, the length of `bytes`, `bytes`.
fn put_bytes(out: &mut Vec<u8>, tag: &[u8], bytes: &[u8]) {
    out.extend_from_slice(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A `Time` of `seconds` (nanos 0) as a length-delimited field with `tag`.
fn put_time(out: &mut Vec<u8>, tag: u8, seconds: Option<i64>) {
    out.push(tag);
    match seconds {
        None => out.push(0),
        Some(s) => {
            let s = s as u64;
            out.push((1 + varint_len(s) + 2) as u8);
            out.push(0x08);
            put_varint(out, s);
            out.extend_from_slice(&[0x10, 0x00]);
        }
    }
}

/// `map<string, string>` entries with `tag`, in key order (a `BTreeMap`'s).
fn put_string_map(out: &mut Vec<u8>, tag: u8, map: &BTreeMap<String, String>) {
    for (k, v) in map {
        out.push(tag);
        put_varint(out, (field_len(k.len()) + field_len(v.len())) as u64);
        put_bytes(out, &[0x0a], k.as_bytes());
        put_bytes(out, &[0x12], v.as_bytes());
    }
}

fn write_meta(m: &model::ObjectMeta, exact: bool) -> Result<Vec<u8>, ()> {
    let mut out = Vec::with_capacity(256);
    put_bytes(&mut out, &[0x0a], m.name.as_bytes());
    put_bytes(&mut out, &[0x12], m.generate_name.as_bytes());
    put_bytes(&mut out, &[0x1a], m.namespace.as_bytes());
    put_bytes(&mut out, &[0x22], b"");
    put_bytes(&mut out, &[0x2a], m.uid.as_bytes());
    put_bytes(&mut out, &[0x32], m.resource_version.as_bytes());
    out.extend_from_slice(&[0x38, 0x00]);
    put_time(&mut out, 0x42, seconds(&m.creation_timestamp, exact)?);
    if let Some(s) = seconds(&m.deletion_timestamp, exact)? {
        put_time(&mut out, 0x4a, Some(s));
    }
    if let Some(g) = m.deletion_grace_period_seconds {
        out.push(0x50);
        put_varint(&mut out, g as u64);
    }
    put_string_map(&mut out, 0x5a, &m.labels);
    put_string_map(&mut out, 0x62, &m.annotations);
    let mut item = Vec::new();
    for r in &m.owner_references {
        item.clear();
        put_bytes(&mut item, &[0x0a], r.kind.as_bytes());
        put_bytes(&mut item, &[0x1a], r.name.as_bytes());
        put_bytes(&mut item, &[0x22], r.uid.as_bytes());
        put_bytes(&mut item, &[0x2a], r.api_version.as_bytes());
        if let Some(c) = r.controller {
            item.extend_from_slice(&[0x30, u8::from(c)]);
        }
        if let Some(b) = r.block_owner_deletion {
            item.extend_from_slice(&[0x38, u8::from(b)]);
        }
        put_bytes(&mut out, &[0x6a], &item);
    }
    for f in &m.finalizers {
        put_bytes(&mut out, &[0x72], f.as_bytes());
    }
    for e in &m.managed_fields {
        item.clear();
        put_bytes(&mut item, &[0x0a], e.manager.as_bytes());
        put_bytes(&mut item, &[0x12], e.operation.as_bytes());
        put_bytes(&mut item, &[0x1a], e.api_version.as_bytes());
        if let Some(s) = seconds(&e.time, exact)? {
            put_time(&mut item, 0x22, Some(s));
        }
        put_bytes(&mut item, &[0x32], e.fields_type.as_bytes());
        if let Some(v) = &e.fields_v1 {
            let raw = serde_json::to_vec(v).map_err(drop)?;
            let mut fields = Vec::with_capacity(field_len(raw.len()));
            put_bytes(&mut fields, &[0x0a], &raw);
            put_bytes(&mut item, &[0x3a], &fields);
        }
        put_bytes(&mut item, &[0x42], e.subresource.as_bytes());
        put_bytes(&mut out, &[0x8a, 0x01], &item);
    }
    Ok(out)
}

/// The whole object, written once into a buffer of its exact size (so that no reallocation
/// leaves a copy of the values behind).
fn write(s: &Secret, exact: bool) -> Option<Zeroizing<Vec<u8>>> {
    let meta = write_meta(&s.metadata, exact).ok()?;
    let entry_len =
        |k: &String, v: &SecretBytes| field_len(k.len()) + field_len(v.as_slice().len());
    let raw_len = field_len(meta.len())
        + s.data
            .iter()
            .map(|(k, v)| field_len(entry_len(k, v)))
            .sum::<usize>()
        + field_len(s.type_.len())
        + if s.immutable.is_some() { 2 } else { 0 };
    let total = MAGIC.len() + field_len(SECRET_TYPE_META.len()) + field_len(raw_len) + 4;
    let mut out = Zeroizing::new(Vec::with_capacity(total));
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, &[0x0a], SECRET_TYPE_META);
    out.push(0x12);
    put_varint(&mut out, raw_len as u64);
    put_bytes(&mut out, &[0x0a], &meta);
    for (k, v) in &s.data {
        out.push(0x12);
        put_varint(&mut out, entry_len(k, v) as u64);
        put_bytes(&mut out, &[0x0a], k.as_bytes());
        put_bytes(&mut out, &[0x12], v.as_slice());
    }
    put_bytes(&mut out, &[0x1a], s.type_.as_bytes());
    if let Some(i) = s.immutable {
        out.extend_from_slice(&[0x28, u8::from(i)]);
    }
    out.extend_from_slice(&[0x1a, 0x00, 0x22, 0x00]);
    debug_assert_eq!(out.len(), total);
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests;
