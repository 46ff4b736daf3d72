//! Protobuf bodies: the `k8s\0` envelope kubectl 1.32+ sends for Secrets and the
//! authorization and authentication reviews, decoded to the JSON the same request would carry;
//! and Secrets encoded the same way for clients that ask for protobuf responses.
//!
//! The messages are written by hand with the field numbers of kubernetes/api and apimachinery's
//! `generated.proto` (core/v1 Secret, meta/v1 ObjectMeta, authorization/v1,
//! authentication/v1). gogo-protobuf writes every non-pointer field, so a kubectl body holds
//! empty strings, zero integers and an empty `creationTimestamp`: empty is read as unset.

use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use prost::Message;
use serde_json::{json, Map, Value};

use super::KubeError;
use crate::store::model::Secret;
use crate::store::stored::{self, ObjectMeta, PbSecret, Time, TypeMeta, Unknown};

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = stored::MAGIC;
/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// A protobuf body decoded to the JSON the same request would have carried. `Debug` shows no
/// `data` or `stringData` value.
pub struct Decoded {
    /// `apiVersion` from the envelope.
    pub api_version: String,
    /// `kind` from the envelope.
    pub kind: String,
    /// The object as JSON (empty protobuf fields are unset, as kube-apiserver reads them).
    pub object: serde_json::Value,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoded")
            .field("api_version", &self.api_version)
            .field("kind", &self.kind)
            .field("object", &super::objects::Redacted(&self.object))
            .finish()
    }
}

/// authorization/v1 `FieldSelectorRequirement` and `LabelSelectorRequirement` (same shape).
#[derive(Clone, PartialEq, Message)]
struct SelectorRequirement {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    operator: String,
    #[prost(string, repeated, tag = "3")]
    values: Vec<String>,
}

/// authorization/v1 `FieldSelectorAttributes` and `LabelSelectorAttributes` (same shape).
#[derive(Clone, PartialEq, Message)]
struct SelectorAttributes {
    #[prost(string, tag = "1")]
    raw_selector: String,
    #[prost(message, repeated, tag = "2")]
    requirements: Vec<SelectorRequirement>,
}

/// authorization/v1 `ResourceAttributes`.
#[derive(Clone, PartialEq, Message)]
struct ResourceAttributes {
    #[prost(string, tag = "1")]
    namespace: String,
    #[prost(string, tag = "2")]
    verb: String,
    #[prost(string, tag = "3")]
    group: String,
    #[prost(string, tag = "4")]
    version: String,
    #[prost(string, tag = "5")]
    resource: String,
    #[prost(string, tag = "6")]
    subresource: String,
    #[prost(string, tag = "7")]
    name: String,
    #[prost(message, optional, tag = "8")]
    field_selector: Option<SelectorAttributes>,
    #[prost(message, optional, tag = "9")]
    label_selector: Option<SelectorAttributes>,
}

/// authorization/v1 `NonResourceAttributes`.
#[derive(Clone, PartialEq, Message)]
struct NonResourceAttributes {
    #[prost(string, tag = "1")]
    path: String,
    #[prost(string, tag = "2")]
    verb: String,
}

/// authorization/v1 `SelfSubjectAccessReviewSpec`.
#[derive(Clone, PartialEq, Message)]
struct AccessReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

/// authorization/v1 `SubjectAccessReviewStatus`.
#[derive(Clone, PartialEq, Message)]
struct AccessReviewStatus {
    #[prost(bool, tag = "1")]
    allowed: bool,
    #[prost(string, tag = "2")]
    reason: String,
    #[prost(string, tag = "3")]
    evaluation_error: String,
    #[prost(bool, tag = "4")]
    denied: bool,
}

/// authorization/v1 `SelfSubjectAccessReview`.
#[derive(Clone, PartialEq, Message)]
struct SelfSubjectAccessReview {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<AccessReviewSpec>,
    #[prost(message, optional, tag = "3")]
    status: Option<AccessReviewStatus>,
}

/// authorization/v1 `SelfSubjectRulesReviewSpec`.
#[derive(Clone, PartialEq, Message)]
struct RulesReviewSpec {
    #[prost(string, tag = "1")]
    namespace: String,
}

/// authorization/v1 `SelfSubjectRulesReview` (a request's status is ignored).
#[derive(Clone, PartialEq, Message)]
struct SelfSubjectRulesReview {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<RulesReviewSpec>,
}

/// authentication/v1 `SelfSubjectReview` (a request's status is ignored).
#[derive(Clone, PartialEq, Message)]
struct SelfSubjectReview {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
}

/// authentication/v1 `TokenRequest` (kubectl 1.32+ `create token`; its status is ignored).
#[derive(Clone, PartialEq, Message)]
struct TokenRequest {
    #[prost(message, optional, tag = "1")]
    metadata: Option<ObjectMeta>,
    #[prost(message, optional, tag = "2")]
    spec: Option<TokenRequestSpec>,
}

/// authentication/v1 `TokenRequestSpec`.
#[derive(Clone, PartialEq, Message)]
struct TokenRequestSpec {
    #[prost(string, repeated, tag = "1")]
    audiences: Vec<String>,
    #[prost(message, optional, tag = "3")]
    bound_object_ref: Option<BoundObjectReference>,
    #[prost(int64, optional, tag = "4")]
    expiration_seconds: Option<i64>,
}

/// authentication/v1 `BoundObjectReference`.
#[derive(Clone, PartialEq, Message)]
struct BoundObjectReference {
    #[prost(string, tag = "1")]
    kind: String,
    #[prost(string, tag = "2")]
    api_version: String,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    uid: String,
}

/// Decodes a `application/vnd.kubernetes.protobuf` body (Secret, SelfSubjectAccessReview,
/// SelfSubjectRulesReview, SelfSubjectReview, TokenRequest).
///
/// A body without the `k8s\0` magic or with an envelope that does not decode is a 400; a kind
/// this server does not read as protobuf is a 415.
pub fn decode(body: &[u8]) -> Result<Decoded, KubeError> {
    let raw = body.strip_prefix(MAGIC.as_slice()).ok_or_else(|| {
        KubeError::BadRequest(
            "the body is not a Kubernetes protobuf object: it does not start with the 4-byte prefix \"k8s\\x00\"".into(),
        )
    })?;
    let envelope = Unknown::decode(raw).map_err(|e| {
        KubeError::BadRequest(format!(
            "the protobuf envelope (runtime.Unknown) does not decode: {e}"
        ))
    })?;
    if !envelope.content_encoding.is_empty() {
        return Err(KubeError::UnsupportedMediaType(format!(
            "the protobuf body has contentEncoding {:?}; only unencoded bodies are supported",
            envelope.content_encoding
        )));
    }
    let tm = envelope.type_meta.clone().unwrap_or_default();
    let object = decode_object(&tm, &envelope.raw)?;
    Ok(Decoded {
        api_version: tm.api_version,
        kind: tm.kind,
        object,
    })
}

fn decode_object(tm: &TypeMeta, raw: &[u8]) -> Result<Value, KubeError> {
    let bad = |what: &str, e: prost::DecodeError| {
        KubeError::BadRequest(format!(
            "{what} in version {:?} cannot be handled as a {what}: {e}",
            tm.api_version.rsplit('/').next().unwrap_or_default()
        ))
    };
    let mut out = match (tm.api_version.as_str(), tm.kind.as_str()) {
        ("v1", "Secret") => {
            secret_json(&PbSecret::decode(raw).map_err(|e| bad("Secret", e))?)
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            let r = SelfSubjectAccessReview::decode(raw).map_err(|e| bad(&tm.kind, e))?;
            let mut o = Map::new();
            o.insert("metadata".into(), meta_json(r.metadata.as_ref()));
            let spec = r.spec.unwrap_or_default();
            let mut s = Map::new();
            if let Some(a) = &spec.resource_attributes {
                s.insert("resourceAttributes".into(), resource_attributes_json(a));
            }
            if let Some(a) = &spec.non_resource_attributes {
                s.insert(
                    "nonResourceAttributes".into(),
                    strings(&[("path", &a.path), ("verb", &a.verb)]),
                );
            }
            o.insert("spec".into(), Value::Object(s));
            if let Some(st) = &r.status {
                let mut m = Map::new();
                m.insert("allowed".into(), Value::Bool(st.allowed));
                if st.denied {
                    m.insert("denied".into(), Value::Bool(true));
                }
                put_str(&mut m, "reason", &st.reason);
                put_str(&mut m, "evaluationError", &st.evaluation_error);
                o.insert("status".into(), Value::Object(m));
            }
            Value::Object(o)
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            let r = SelfSubjectRulesReview::decode(raw).map_err(|e| bad(&tm.kind, e))?;
            let ns = r.spec.map(|s| s.namespace).unwrap_or_default();
            json!({"metadata": meta_json(r.metadata.as_ref()),
                   "spec": strings(&[("namespace", &ns)])})
        }
        (
            "authentication.k8s.io/v1"
            | "authentication.k8s.io/v1beta1"
            | "authentication.k8s.io/v1alpha1",
            "SelfSubjectReview",
        ) => {
            let r = SelfSubjectReview::decode(raw).map_err(|e| bad(&tm.kind, e))?;
            json!({"metadata": meta_json(r.metadata.as_ref())})
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            let r = TokenRequest::decode(raw).map_err(|e| bad(&tm.kind, e))?;
            let spec = r.spec.unwrap_or_default();
            let bound = spec.bound_object_ref.map(|b| {
                let mut o = Map::new();
                put_str(&mut o, "kind", &b.kind);
                put_str(&mut o, "apiVersion", &b.api_version);
                put_str(&mut o, "name", &b.name);
                put_str(&mut o, "uid", &b.uid);
                Value::Object(o)
            });
            json!({"metadata": meta_json(r.metadata.as_ref()),
                   "spec": {"audiences": spec.audiences,
                            "expirationSeconds": spec.expiration_seconds,
                            "boundObjectRef": bound}})
        }
        (version, kind) => {
            return Err(KubeError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (protobuf is read for v1 Secret, authorization.k8s.io/v1 SelfSubjectAccessReview and SelfSubjectRulesReview, authentication.k8s.io SelfSubjectReview, authentication.k8s.io/v1 TokenRequest; got {version:?} {kind:?})"
            )))
        }
    };
    if let Some(o) = out.as_object_mut() {
        // kind and apiVersion first, as the JSON body would have them.
        let mut m = Map::new();
        m.insert("kind".into(), Value::String(tm.kind.clone()));
        m.insert("apiVersion".into(), Value::String(tm.api_version.clone()));
        m.append(o);
        out = Value::Object(m);
    }
    Ok(out)
}

fn put_str(m: &mut Map<String, Value>, k: &str, v: &str) {
    if !v.is_empty() {
        m.insert(k.into(), Value::String(v.to_owned()));
    }
}

/// A JSON object of the string fields `pairs`, the empty ones left out (Go's `omitempty`).
pub(super) fn strings(pairs: &[(&str, &str)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        put_str(&mut m, k, v);
    }
    Value::Object(m)
}

fn selector_json(s: &SelectorAttributes) -> Value {
    let mut m = Map::new();
    put_str(&mut m, "rawSelector", &s.raw_selector);
    if !s.requirements.is_empty() {
        let reqs = s
            .requirements
            .iter()
            .map(|r| {
                let mut o = Map::new();
                put_str(&mut o, "key", &r.key);
                put_str(&mut o, "operator", &r.operator);
                if !r.values.is_empty() {
                    o.insert("values".into(), json!(r.values));
                }
                Value::Object(o)
            })
            .collect();
        m.insert("requirements".into(), Value::Array(reqs));
    }
    Value::Object(m)
}

fn resource_attributes_json(a: &ResourceAttributes) -> Value {
    let mut v = strings(&[
        ("namespace", &a.namespace),
        ("verb", &a.verb),
        ("group", &a.group),
        ("version", &a.version),
        ("resource", &a.resource),
        ("subresource", &a.subresource),
        ("name", &a.name),
    ]);
    if let Some(m) = v.as_object_mut() {
        if let Some(s) = &a.field_selector {
            m.insert("fieldSelector".into(), selector_json(s));
        }
        if let Some(s) = &a.label_selector {
            m.insert("labelSelector".into(), selector_json(s));
        }
    }
    v
}

/// RFC 3339 (seconds, UTC) of a protobuf time; a zero time is unset (Go's zero `metav1.Time`).
fn time_json(t: Option<&Time>) -> Option<String> {
    let t = t?;
    if t.seconds <= 0 {
        return None;
    }
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(t.seconds).ok()?);
    Some(humantime::format_rfc3339_seconds(at).to_string())
}

fn meta_json(m: Option<&ObjectMeta>) -> Value {
    let Some(m) = m else {
        return Value::Object(Map::new());
    };
    let mut o = Map::new();
    put_str(&mut o, "name", &m.name);
    put_str(&mut o, "generateName", &m.generate_name);
    put_str(&mut o, "namespace", &m.namespace);
    put_str(&mut o, "uid", &m.uid);
    put_str(&mut o, "resourceVersion", &m.resource_version);
    if let Some(t) = time_json(m.creation_timestamp.as_ref()) {
        o.insert("creationTimestamp".into(), Value::String(t));
    }
    if !m.labels.is_empty() {
        o.insert("labels".into(), json!(m.labels));
    }
    if !m.annotations.is_empty() {
        o.insert("annotations".into(), json!(m.annotations));
    }
    if !m.owner_references.is_empty() {
        let refs = m
            .owner_references
            .iter()
            .map(|r| {
                let mut v = json!({"apiVersion": r.api_version, "kind": r.kind,
                                   "name": r.name, "uid": r.uid});
                if let Some(c) = r.controller {
                    v["controller"] = Value::Bool(c);
                }
                if let Some(b) = r.block_owner_deletion {
                    v["blockOwnerDeletion"] = Value::Bool(b);
                }
                v
            })
            .collect();
        o.insert("ownerReferences".into(), Value::Array(refs));
    }
    if !m.finalizers.is_empty() {
        o.insert("finalizers".into(), json!(m.finalizers));
    }
    if !m.managed_fields.is_empty() {
        let entries = m
            .managed_fields
            .iter()
            .map(|e| {
                let mut v = Map::new();
                put_str(&mut v, "manager", &e.manager);
                put_str(&mut v, "operation", &e.operation);
                put_str(&mut v, "apiVersion", &e.api_version);
                if let Some(t) = time_json(e.time.as_ref()) {
                    v.insert("time".into(), Value::String(t));
                }
                put_str(&mut v, "fieldsType", &e.fields_type);
                if let Some(f) = &e.fields_v1 {
                    let fields = serde_json::from_slice(&f.raw)
                        .unwrap_or_else(|_| Value::Object(Map::new()));
                    v.insert("fieldsV1".into(), fields);
                }
                put_str(&mut v, "subresource", &e.subresource);
                Value::Object(v)
            })
            .collect();
        o.insert("managedFields".into(), Value::Array(entries));
    }
    Value::Object(o)
}

fn secret_json(s: &PbSecret) -> Value {
    let mut o = Map::new();
    o.insert("metadata".into(), meta_json(s.metadata.as_ref()));
    if let Some(i) = s.immutable {
        o.insert("immutable".into(), Value::Bool(i));
    }
    if !s.data.is_empty() {
        let data = s
            .data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(B64.encode(v))))
            .collect();
        o.insert("data".into(), Value::Object(data));
    }
    if !s.string_data.is_empty() {
        o.insert("stringData".into(), json!(s.string_data));
    }
    put_str(&mut o, "type", &s.r#type);
    Value::Object(o)
}

/// The Secret as a `k8s\0` protobuf body (`runtime.Unknown{v1, Secret}`), for clients that
/// ask for `application/vnd.kubernetes.protobuf`: kube-apiserver's encoding, the one the store
/// writes ([`stored::encode`]; no `stringData`).
pub fn encode_secret(secret: &Secret) -> Vec<u8> {
    std::mem::take(&mut *stored::encode(secret))
}

/// A decoded protobuf Secret as the store's type (its JSON read as a JSON body would be).
pub fn secret_of(decoded: &Decoded) -> Result<Secret, KubeError> {
    super::objects::secret_from_json(&decoded.object).map_err(|e| {
        KubeError::BadRequest(format!(
            "Secret in version \"v1\" cannot be handled as a Secret: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{self, SecretBytes};
    use std::collections::BTreeMap;

    /// An envelope of `kind` around `raw`, without a content encoding.
    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        stored::tests::envelope(api_version, kind, raw, "")
    }

    #[test]
    fn kubectl_style_secret_with_empty_fields() {
        // As gogo writes it: every string present, empty creationTimestamp.
        let meta = ObjectMeta {
            name: "s1".into(),
            creation_timestamp: Some(Time::default()),
            ..Default::default()
        };
        let mut raw = Vec::new();
        // Force the empty strings onto the wire the way gogo does (prost skips them).
        for tag in [2u8, 3, 4, 5, 6] {
            raw.extend([tag << 3 | 2, 0]);
        }
        raw.extend([0x38, 0]); // generation = 0
        let mut m = meta.encode_to_vec();
        m.extend(raw);
        let mut s = Vec::new();
        prost::encoding::bytes::encode(1, &m, &mut s);
        let sec = PbSecret {
            metadata: None,
            data: [("pw".to_owned(), b"hunter2".to_vec())].into(),
            r#type: String::new(),
            string_data: BTreeMap::new(),
            immutable: None,
        };
        s.extend(sec.encode_to_vec());
        let d = decode(&envelope("v1", "Secret", s)).unwrap();
        assert_eq!((d.api_version.as_str(), d.kind.as_str()), ("v1", "Secret"));
        assert_eq!(
            d.object,
            json!({"kind":"Secret","apiVersion":"v1","metadata":{"name":"s1"},"data":{"pw":"aHVudGVyMg=="}})
        );
        let secret = secret_of(&d).unwrap();
        assert_eq!(secret.data["pw"].as_slice(), b"hunter2");
        assert!(
            !format!("{d:?}").contains("aHVudGVyMg"),
            "Debug shows no value"
        );
    }

    #[test]
    fn access_review() {
        let r = SelfSubjectAccessReview {
            metadata: Some(ObjectMeta::default()),
            spec: Some(AccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: "default".into(),
                    verb: "get".into(),
                    resource: "secrets".into(),
                    ..Default::default()
                }),
                non_resource_attributes: None,
            }),
            status: Some(AccessReviewStatus::default()),
        };
        let d = decode(&envelope(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            r.encode_to_vec(),
        ))
        .unwrap();
        assert_eq!(
            d.object,
            json!({"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1",
                   "metadata":{},"spec":{"resourceAttributes":{"namespace":"default","verb":"get","resource":"secrets"}},
                   "status":{"allowed":false}})
        );
    }

    #[test]
    fn bad_envelopes() {
        assert!(matches!(decode(b"{}"), Err(KubeError::BadRequest(_))));
        assert!(matches!(
            decode(b"k8s\0\x0a\xff"),
            Err(KubeError::BadRequest(_))
        ));
        assert!(matches!(
            decode(&envelope("v1", "ConfigMap", vec![])),
            Err(KubeError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn secret_round_trip() {
        let mut s = Secret::default();
        s.metadata.name = "a".into();
        s.metadata.namespace = "ns".into();
        s.metadata.creation_timestamp = "2024-05-06T07:08:09Z".into();
        s.metadata.finalizers = vec!["example.com/f".into()];
        s.metadata.owner_references = vec![model::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "d".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }];
        s.metadata.managed_fields = vec![model::ManagedFieldsEntry {
            manager: "m".into(),
            operation: "Update".into(),
            api_version: "v1".into(),
            time: "2024-05-06T07:08:09Z".into(),
            fields_type: "FieldsV1".into(),
            fields_v1: Some(json!({"f:data":{"f:k":{}}})),
            subresource: String::new(),
        }];
        s.data.insert("k".into(), SecretBytes::new(b"v".to_vec()));
        s.type_ = "Opaque".into();
        let back = secret_of(&decode(&encode_secret(&s)).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
