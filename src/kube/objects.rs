//! Secret JSON as kube-apiserver reads and writes it: request bodies (JSON, or YAML for
//! apply) decoded under `fieldValidation` with kube-apiserver's messages (unknown and duplicate
//! fields, wrong types, bad base64), and the Secret as kube-apiserver returns it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::KubeError;
use crate::store::model::{
    self, ManagedFieldsEntry, ObjectMeta, OwnerReference, Secret, SecretBytes, SecretString,
};

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
///
/// - unknown and duplicate fields: `Strict` refuses the body (400, `strict decoding error:
///   unknown field "metadata.foo", duplicate field "type"`, as [`KubeError::Undecodable`],
///   which a patch answers with its 422), `Warn` returns each as a warning, `Ignore` drops
///   them;
/// - a wrong type or bad base64 in `data` is a 400 whatever `validation` says;
/// - `apiVersion` and `kind` may be absent (the URL says what the body is); any other than
///   `v1` and `Secret` is a 400.
pub fn decode_secret(body: &[u8], validation: FieldValidation) -> Result<Decoded, KubeError> {
    decode_secret_with(body, validation, &[])
}

/// [`decode_secret`] of a body that was YAML, converted to JSON, with the YAML's repeated keys
/// ([`repeated_keys`](super::yaml_keys::repeated_keys)): kube-apiserver's YAML decoder reports
/// them first, as one error under `Strict` (`yaml: unmarshal errors:\n  line 5: key "name"
/// already set in map`) and as a warning each under `Warn`.
pub fn decode_secret_with(
    body: &[u8],
    validation: FieldValidation,
    yaml_repeats: &[String],
) -> Result<Decoded, KubeError> {
    // A JSON body (YAML ones arrive converted): YAML here is a JSON syntax error, as in
    // kube-apiserver's JSON serializer.
    let parsed = parse_with(body, Some(&SECRET), false)?;
    let version = parsed
        .value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1")
        .to_owned();
    let kind = parsed
        .value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Secret")
        .to_owned();
    let short = version.rsplit('/').next().unwrap_or_default().to_owned();
    if !parsed.value.is_object() {
        return Err(not_an_object("Secret", &parsed.value));
    }
    if version != "v1" && !version.is_empty() {
        return Err(KubeError::BadRequest(format!(
            "{kind} in version {short:?} cannot be handled as a Secret: no kind {kind:?} is registered for version {version:?} in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        )));
    }
    if kind != "Secret" && !kind.is_empty() {
        return Err(KubeError::BadRequest(format!(
            "{kind} in version {short:?} cannot be handled as a Secret: the kind of the object in the body ({kind}) is not Secret"
        )));
    }
    let mut walk = Walk::default();
    walk.object(&parsed.value, &SECRET, "");
    if let Some(e) = walk.type_error {
        return Err(KubeError::Undecodable(e.to_string()));
    }
    // Parsed against the schema: `strict` holds the unknown fields as well as the duplicates.
    let strict = parsed.strict;
    let yaml_error = (!yaml_repeats.is_empty())
        .then(|| format!("yaml: unmarshal errors:\n  {}", yaml_repeats.join("\n  ")));
    let mut secret =
        secret_from_json(&parsed.value).map_err(|e| KubeError::Undecodable(e.to_string()))?;
    // `managedFields: []` (not absent, not null) resets them, as one empty entry does.
    let reset = parsed
        .value
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty);
    if reset {
        secret.metadata.managed_fields = crate::store::managed::none_owned();
    }
    let warnings = match validation {
        FieldValidation::Strict if !strict.is_empty() || yaml_error.is_some() => {
            let all: Vec<String> = yaml_error.into_iter().chain(strict).collect();
            return Err(KubeError::Undecodable(format!(
                "strict decoding error: {}",
                all.join(", ")
            )));
        }
        FieldValidation::Warn => yaml_repeats.iter().cloned().chain(strict).collect(),
        _ => Vec::new(),
    };
    Ok(Decoded { secret, warnings })
}

/// The Secret as kube-apiserver returns it in JSON (no `stringData`).
pub fn encode_secret(secret: &Secret) -> Value {
    let mut v = serde_json::to_value(KubeSecret::from(secret)).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut() {
        m.shift_remove("stringData");
    }
    v
}

/// The Secret's metadata alone, as a `meta.k8s.io/v1` `PartialObjectMetadata` (what a
/// metadata-only client asks for, and a Table row's object): all of it, `managedFields`
/// included, as `meta.AsPartialObjectMetadata` copies it.
pub fn partial_object_metadata(s: &Secret) -> Value {
    let meta = serde_json::to_value(&s.metadata).unwrap_or(Value::Null);
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
}

/// The Secret as kube-apiserver writes it, bytes in its field order (`kind`, `apiVersion`,
/// `metadata`, `immutable`, `data`, `type`).
pub fn encode_secret_bytes(secret: &Secret) -> Vec<u8> {
    serde_json::to_vec(&KubeSecret::from(secret)).unwrap_or_default()
}

/// A Secret borrowed in kube-apiserver's JSON field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeSecret<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: &'a ObjectMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    immutable: Option<bool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data: &'a BTreeMap<String, SecretBytes>,
    #[serde(rename = "type", skip_serializing_if = "str::is_empty")]
    type_: &'a str,
}

impl<'a> From<&'a Secret> for KubeSecret<'a> {
    fn from(s: &'a Secret) -> Self {
        KubeSecret {
            kind: "Secret",
            api_version: "v1",
            metadata: &s.metadata,
            immutable: s.immutable,
            data: &s.data,
            type_: &s.type_,
        }
    }
}

/// A request body parsed to JSON, with its duplicate (and, against a schema, unknown) fields.
/// `Debug` shows no `data` or `stringData` value.
pub struct Parsed {
    /// The body (for a duplicate field, the last value wins, as in Go).
    pub value: Value,
    /// `duplicate field "<path>"` (and `unknown field "<path>"` when parsed against a
    /// schema), in body order.
    pub strict: Vec<String>,
}

impl fmt::Debug for Parsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parsed")
            .field("value", &Redacted(&self.value))
            .field("strict", &self.strict)
            .finish()
    }
}

/// A Secret's JSON for `Debug`: `data` and `stringData` values (and the last-applied
/// annotation, which may hold them) shown as their length only.
pub(crate) struct Redacted<'a>(pub &'a Value);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut v = self.0.clone();
        if let Some(top) = v.as_object_mut() {
            for key in ["data", "stringData"] {
                if let Some(Value::Object(m)) = top.get_mut(key) {
                    for x in m.values_mut() {
                        let n = x.as_str().map_or(0, str::len);
                        *x = Value::String(format!("<{n} bytes>"));
                    }
                }
            }
            if let Some(Value::Object(a)) = top
                .get_mut("metadata")
                .and_then(|m| m.get_mut("annotations"))
            {
                for (k, x) in a.iter_mut() {
                    if k == "kubectl.kubernetes.io/last-applied-configuration" {
                        *x = Value::String("<redacted>".into());
                    }
                }
            }
        }
        write!(f, "{v}")
    }
}

/// Parses a body: JSON if it starts with `{` or `[` (duplicate fields are noted), else YAML
/// (the body of a server-side apply). 400 if it is neither.
pub fn parse_body(body: &[u8]) -> Result<Parsed, KubeError> {
    parse_with(body, None, true)
}

/// A patch body as kube-apiserver's strict decode reads it (`fieldValidation` `Warn` or
/// `Strict`): the JSON, and the fields it reports in body order — duplicate keys of a merge or
/// strategic merge patch (decoded into a map), duplicate and unknown fields of a JSON patch's
/// operations (decoded into its `[]jsonPatchOp`, each prefixed `json patch `). `None` for a body
/// that is not JSON, which the patch's own decoding refuses in its words.
pub fn parse_patch(body: &[u8], json_patch: bool) -> Option<(Value, Vec<String>)> {
    let parsed = parse_json(body, json_patch.then_some(&JSON_PATCH_OPS)).ok()?;
    let strict = if json_patch {
        parsed
            .strict
            .into_iter()
            .map(|e| format!("json patch {e}"))
            .collect()
    } else {
        parsed.strict
    };
    Some((parsed.value, strict))
}

/// The strict errors of [`parse_patch`] (none for a body that is not JSON).
pub fn patch_strict_errors(body: &[u8], json_patch: bool) -> Vec<String> {
    parse_patch(body, json_patch).map_or_else(Vec::new, |(_, strict)| strict)
}

/// Parses `body` as JSON, or as YAML if `yaml` allows it and it does not start as JSON does.
fn parse_with(body: &[u8], shape: Option<&'static Shape>, yaml: bool) -> Result<Parsed, KubeError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        // kube-apiserver's summary of an empty body; of any other it is left out here, as
        // it quotes the body's first bytes.
        None if body.is_empty() => Err(KubeError::BadRequest(
            "the object provided is unrecognized (must be of type Secret): couldn't get version/kind; json parse error: unexpected end of JSON input (<empty>)".into(),
        )),
        Some(b'{') | Some(b'[') | None => parse_json(body, shape),
        Some(_) if !yaml => parse_json(body, shape),
        Some(_) => {
            let v = super::request::yaml_value(body, "error decoding YAML")?;
            Ok(Parsed {
                value: v,
                strict: Vec::new(),
            })
        }
    }
}

/// A JSON request body of kind `kind` read against `shape`: the value, its strict decoding
/// errors (duplicate and unknown fields, in body order) and the first field of the wrong type
/// (Go's `json: cannot unmarshal …`). A body that is not JSON is kube-apiserver's 400.
pub(crate) fn decode_shaped(
    body: &[u8],
    shape: &'static Shape,
    kind: &str,
) -> Result<(Value, Vec<String>, Option<String>), KubeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(KubeError::BadRequest(format!(
            "the object provided is unrecognized (must be of type {kind}): couldn't get version/kind; json parse error: unexpected end of JSON input (<empty>)"
        )));
    }
    let parsed = parse_json_as(body, Some(shape), kind)?;
    if !parsed.value.is_object() {
        return Err(not_an_object(kind, &parsed.value));
    }
    let mut walk = Walk::default();
    walk.object(&parsed.value, shape, "");
    Ok((parsed.value, parsed.strict, walk.type_error))
}

/// A JSON body that is not an object, as kube-apiserver's serializer refuses it: reading its
/// `apiVersion` and `kind` fails.
fn not_an_object(kind: &str, value: &Value) -> KubeError {
    KubeError::BadRequest(format!(
        "the object provided is unrecognized (must be of type {kind}): couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
        json_kind(value)
    ))
}

fn parse_json(body: &[u8], shape: Option<&'static Shape>) -> Result<Parsed, KubeError> {
    parse_json_as(body, shape, "Secret")
}

fn parse_json_as(
    body: &[u8],
    shape: Option<&'static Shape>,
    kind: &str,
) -> Result<Parsed, KubeError> {
    let strict = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Seed {
        path: String::new(),
        shape,
        strict: &strict,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v))
    .map_err(|e| {
        // Go's words for a syntax error (they quote at most one character of the body).
        let why = crate::go_json::syntax_error(body)
            .unwrap_or_else(|| crate::redact::serde_values(&e.to_string()));
        KubeError::BadRequest(format!(
            "the object provided is unrecognized (must be of type {kind}): couldn't get version/kind; json parse error: {why}"
        ))
    })?;
    Ok(Parsed {
        value,
        strict: deduplicated(strict.into_inner()),
    })
}

/// Strict errors as sigs.k8s.io/json keeps them: each message once, in first-seen order, at
/// most 100.
fn deduplicated(errors: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    errors
        .into_iter()
        .filter(|e| seen.insert(e.clone()))
        .take(100)
        .collect()
}

/// Builds a JSON value, noting duplicate keys with their path (`metadata.name`) and, against
/// a schema, unknown ones, in body order (as sigs.k8s.io/json reports them).
struct Seed<'a> {
    path: String,
    shape: Option<&'static Shape>,
    strict: &'a RefCell<Vec<String>>,
}

impl Seed<'_> {
    fn at(&self, path: String, shape: Option<&'static Shape>) -> Seed<'_> {
        Seed {
            path,
            shape,
            strict: self.strict,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        let item = match self.shape {
            Some(Shape::List(item, _)) => Some(*item),
            _ => None,
        };
        while let Some(v) =
            seq.next_element_seed(self.at(format!("{}[{}]", self.path, out.len()), item))?
        {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let path = join(&self.path, &k);
            let mut known = true;
            let child = match self.shape {
                Some(Shape::Struct(fields, _, _)) => match fields.iter().find(|(f, _)| *f == k) {
                    Some((_, s)) => Some(s),
                    None => {
                        self.strict
                            .borrow_mut()
                            .push(format!("unknown field {path:?}"));
                        known = false;
                        None
                    }
                },
                _ => None,
            };
            // Noted when the key is read, before anything inside its value; an unknown field
            // is reported as unknown only, however often it comes.
            if known && out.contains_key(&k) {
                self.strict
                    .borrow_mut()
                    .push(format!("duplicate field {path:?}"));
            }
            let v = map.next_value_seed(self.at(path, child))?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The shape of a field of a request body (a Secret, a review), with the Go type
/// `encoding/json` names in errors.
#[derive(Debug)]
pub(crate) enum Shape {
    /// A string of this Go type (`string`, `types.UID`, `v1.SecretType`).
    Str(&'static str),
    /// A boolean.
    Bool,
    /// An integer.
    Int,
    /// A `metav1.Time` (an RFC 3339 string or null).
    Time,
    /// Any JSON (`fieldsV1`).
    Any,
    /// A map of strings (labels, annotations, stringData).
    StrMap,
    /// A map of base64 strings (data).
    BytesMap,
    /// A list of strings (finalizers).
    StrList,
    /// A map of string lists (`extra`: `map[string]v1.ExtraValue`).
    StrListMap,
    /// A struct: its fields, its Go name (`ObjectMeta`) and Go type (`v1.ObjectMeta`).
    Struct(&'static [(&'static str, Shape)], &'static str, &'static str),
    /// A list of structs, with the list's Go type.
    List(&'static Shape, &'static str),
}

pub(crate) const STRING: Shape = Shape::Str("string");

const OWNER_REFERENCE: Shape = Shape::Struct(
    &[
        ("apiVersion", STRING),
        ("kind", STRING),
        ("name", STRING),
        ("uid", Shape::Str("types.UID")),
        ("controller", Shape::Bool),
        ("blockOwnerDeletion", Shape::Bool),
    ],
    "OwnerReference",
    "v1.OwnerReference",
);

const MANAGED_FIELDS_ENTRY: Shape = Shape::Struct(
    &[
        ("manager", STRING),
        ("operation", Shape::Str("v1.ManagedFieldsOperationType")),
        ("apiVersion", STRING),
        ("time", Shape::Time),
        ("fieldsType", STRING),
        ("fieldsV1", Shape::Any),
        ("subresource", STRING),
    ],
    "ManagedFieldsEntry",
    "v1.ManagedFieldsEntry",
);

pub(crate) const OBJECT_META: Shape = Shape::Struct(
    &[
        ("name", STRING),
        ("generateName", STRING),
        ("namespace", STRING),
        ("selfLink", STRING),
        ("uid", Shape::Str("types.UID")),
        ("resourceVersion", STRING),
        ("generation", Shape::Int),
        ("creationTimestamp", Shape::Time),
        ("deletionTimestamp", Shape::Time),
        ("deletionGracePeriodSeconds", Shape::Int),
        ("labels", Shape::StrMap),
        ("annotations", Shape::StrMap),
        (
            "ownerReferences",
            Shape::List(&OWNER_REFERENCE, "[]v1.OwnerReference"),
        ),
        ("finalizers", Shape::StrList),
        (
            "managedFields",
            Shape::List(&MANAGED_FIELDS_ENTRY, "[]v1.ManagedFieldsEntry"),
        ),
    ],
    "ObjectMeta",
    "v1.ObjectMeta",
);

/// kube-apiserver's `[]jsonPatchOp`, the type a JSON patch is strictly decoded into.
const JSON_PATCH_OPS: Shape = Shape::List(
    &Shape::Struct(
        &[
            ("op", STRING),
            ("path", STRING),
            ("from", STRING),
            ("value", Shape::Any),
        ],
        "jsonPatchOp",
        "handlers.jsonPatchOp",
    ),
    "[]handlers.jsonPatchOp",
);

/// The core/v1 Secret schema.
pub(crate) const SECRET: Shape = Shape::Struct(
    &[
        ("apiVersion", STRING),
        ("kind", STRING),
        ("metadata", OBJECT_META),
        ("immutable", Shape::Bool),
        ("data", Shape::BytesMap),
        ("stringData", Shape::StrMap),
        ("type", Shape::Str("v1.SecretType")),
    ],
    "Secret",
    "v1.Secret",
);

/// Go's name for the JSON type of `v` in `encoding/json` errors (`number`, `object`, ...).
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Walks a body against the schema: unknown fields and the first type error.
#[derive(Default)]
pub(crate) struct Walk {
    /// `unknown field "<path>"`, in the schema walk's order.
    pub unknown: Vec<String>,
    /// Go's `json: cannot unmarshal …` for the first wrong type.
    pub type_error: Option<String>,
    /// The Go struct being decoded (`encoding/json`'s error context).
    within: &'static str,
    /// The field path without list indices (`metadata.ownerReferences.uid`).
    fields: Vec<String>,
}

impl Walk {
    fn wrong(&mut self, v: &Value, go_type: &str) {
        if self.type_error.is_some() {
            return;
        }
        self.type_error = Some(if self.fields.is_empty() {
            format!(
                "json: cannot unmarshal {} into Go value of type {go_type}",
                json_kind(v)
            )
        } else {
            format!(
                "json: cannot unmarshal {} into Go struct field {}.{} of type {go_type}",
                json_kind(v),
                self.within,
                self.fields.join(".")
            )
        });
    }

    /// Checks `v` (at `path`, for unknown-field messages) against `shape`.
    pub fn object(&mut self, v: &Value, shape: &Shape, path: &str) {
        if v.is_null() {
            return;
        }
        match shape {
            Shape::Str(go) if !v.is_string() => self.wrong(v, go),
            Shape::Bool if !v.is_boolean() => self.wrong(v, "bool"),
            Shape::Int if !(v.is_i64() || v.is_u64()) => self.wrong(v, "int64"),
            // metav1.Time reads a string first.
            Shape::Time if !v.is_string() && self.type_error.is_none() => {
                self.type_error = Some(format!(
                    "json: cannot unmarshal {} into Go value of type string",
                    json_kind(v)
                ));
            }
            Shape::StrMap | Shape::BytesMap => {
                let (map_type, value_type) = if matches!(shape, Shape::StrMap) {
                    ("map[string]string", "string")
                } else {
                    ("map[string][]uint8", "[]uint8")
                };
                match v.as_object() {
                    None => self.wrong(v, map_type),
                    Some(m) => {
                        for x in m.values() {
                            if !(x.is_string() || x.is_null()) {
                                self.wrong(x, value_type);
                            }
                        }
                    }
                }
            }
            Shape::StrList => match v.as_array() {
                None => self.wrong(v, "[]string"),
                Some(a) => {
                    for x in a {
                        if !x.is_string() {
                            self.wrong(x, "string");
                        }
                    }
                }
            },
            Shape::StrListMap => match v.as_object() {
                None => self.wrong(v, "map[string]v1.ExtraValue"),
                Some(m) => {
                    for x in m.values().filter(|x| !x.is_null()) {
                        match x.as_array() {
                            None => self.wrong(x, "v1.ExtraValue"),
                            Some(a) => {
                                for y in a.iter().filter(|y| !y.is_string()) {
                                    self.wrong(y, "string");
                                }
                            }
                        }
                    }
                }
            },
            Shape::List(item, go) => match v.as_array() {
                None => self.wrong(v, go),
                Some(a) => {
                    for (i, x) in a.iter().enumerate() {
                        self.object(x, item, &format!("{path}[{i}]"));
                    }
                }
            },
            Shape::Struct(fields, name, go) => match v.as_object() {
                None => self.wrong(v, go),
                Some(m) => {
                    let outer = std::mem::replace(&mut self.within, name);
                    for (k, x) in m {
                        let at = join(path, k);
                        match fields.iter().find(|(f, _)| f == k) {
                            Some((_, s)) => {
                                self.fields.push(k.clone());
                                self.object(x, s, &at);
                                self.fields.pop();
                            }
                            None => self.unknown.push(format!("unknown field {at:?}")),
                        }
                    }
                    self.within = outer;
                }
            },
            _ => {}
        }
    }
}

/// Go's error for the `metav1.Time` at `key` of a request body's object if Go does not parse
/// it (kube-apiserver refuses the body; an empty string does not parse either). The times that
/// parse are kept as `metav1.Time` keeps them by [`model::normalize_times`].
fn check_time(m: &Map<String, Value>, key: &str) -> Result<(), String> {
    match m.get(key) {
        Some(Value::String(t)) => crate::go_time::parse_rfc3339(t).map(drop),
        _ => Ok(()),
    }
}

/// The known fields of a (checked) Secret body as a [`Secret`]; bad base64 and bad times are
/// errors with Go's messages.
pub(crate) fn secret_from_json(v: &Value) -> Result<Secret, String> {
    let mut s = Secret::default();
    let empty = Map::new();
    let top = v.as_object().unwrap_or(&empty);
    let str_of = |m: &Map<String, Value>, k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let str_map = |v: Option<&Value>| -> BTreeMap<String, String> {
        v.and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(m) = top.get("metadata").and_then(Value::as_object) {
        let meta = &mut s.metadata;
        meta.name = str_of(m, "name");
        meta.generate_name = str_of(m, "generateName");
        meta.namespace = str_of(m, "namespace");
        meta.uid = str_of(m, "uid");
        meta.resource_version = str_of(m, "resourceVersion");
        check_time(m, "creationTimestamp")?;
        // Set by the server only, but a client's must still parse.
        check_time(m, "deletionTimestamp")?;
        meta.creation_timestamp = str_of(m, "creationTimestamp");
        meta.labels = str_map(m.get("labels"));
        meta.annotations = str_map(m.get("annotations"));
        if let Some(a) = m.get("ownerReferences").and_then(Value::as_array) {
            meta.owner_references = a
                .iter()
                .map(|r| serde_json::from_value::<OwnerReference>(strip_nulls(r)))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
        }
        if let Some(a) = m.get("finalizers").and_then(Value::as_array) {
            meta.finalizers = a
                .iter()
                .map(|f| f.as_str().unwrap_or_default().to_owned())
                .collect();
        }
        if let Some(a) = m.get("managedFields").and_then(Value::as_array) {
            meta.managed_fields = a
                .iter()
                .map(|e| serde_json::from_value::<ManagedFieldsEntry>(strip_nulls(e)))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            for entry in a.iter().filter_map(Value::as_object) {
                check_time(entry, "time")?;
            }
        }
        model::normalize_times(meta);
    }
    if let Some(m) = top.get("data").and_then(Value::as_object) {
        for (k, v) in m {
            let bytes = go_base64(v.as_str().unwrap_or_default())
                .map_err(|at| format!("illegal base64 data at input byte {at}"))?;
            s.data.insert(k.clone(), SecretBytes::new(bytes));
        }
    }
    if let Some(m) = top.get("stringData").and_then(Value::as_object) {
        for (k, v) in m {
            s.string_data.insert(
                k.clone(),
                SecretString(Zeroizing::new(v.as_str().unwrap_or_default().to_owned())),
            );
        }
    }
    s.type_ = str_of(top, "type");
    s.immutable = top.get("immutable").and_then(Value::as_bool);
    Ok(s)
}

/// An object without its `null` fields (Go leaves such fields at their zero value).
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Decodes standard base64 as Go's `encoding/base64.StdEncoding` does (what `encoding/json`
/// uses for `[]byte`): `\r` and `\n` are skipped, padding is required, unused trailing bits are
/// ignored. An error is the input offset Go reports (`illegal base64 data at input byte N`).
pub fn go_base64(s: &str) -> Result<Vec<u8>, usize> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let src = s.as_bytes();
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0usize;
    loop {
        let mut dbuf = [0u32; 4];
        let mut dlen = 4;
        let mut j = 0usize;
        let mut trailing_err = None;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                // Padding is required, so a short final quantum is an error.
                return Err(si - j);
            }
            let c = src[si];
            si += 1;
            if let Some(v) = val(c) {
                dbuf[j] = v;
                j += 1;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                continue;
            }
            if c != b'=' {
                return Err(si - 1);
            }
            // Padding: the quantum ends here.
            match j {
                0 | 1 => return Err(si - 1),
                2 => {
                    while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(src.len());
                    }
                    if src[si] != b'=' {
                        return Err(si - 1);
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && (src[si] == b'\n' || src[si] == b'\r') {
                si += 1;
            }
            if si < src.len() {
                trailing_err = Some(si);
            }
            dlen = j;
            break;
        }
        let val = dbuf[0] << 18 | dbuf[1] << 12 | dbuf[2] << 6 | dbuf[3];
        let bytes = [(val >> 16) as u8, (val >> 8) as u8, val as u8];
        out.extend_from_slice(&bytes[..dlen - 1]);
        if let Some(at) = trailing_err {
            return Err(at);
        }
        if dlen < 4 {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err_of(r: Result<Decoded, KubeError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn decodes_kubectl_create_body() {
        let body = br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s1","creationTimestamp":null},"data":{"pw":"aHVudGVyMg==","user":"YWRtaW4="}}"#;
        let d = decode_secret(body, FieldValidation::Strict).unwrap();
        assert_eq!(d.secret.metadata.name, "s1");
        assert_eq!(d.secret.data["pw"].as_slice(), b"hunter2");
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn strict_errors_once_each_in_key_order() {
        // A repeated unknown field is unknown once; a duplicate is reported at its key, before
        // anything inside its value; each message once.
        let body = br#"{"bar":1,"bar":2,"data":{"k":"eA=="},"data":{"k":"eA==","k":"eQ=="},"type":"a","type":"b","type":"c"}"#;
        assert_eq!(
            decode_secret(body, FieldValidation::Warn).unwrap().warnings,
            [
                r#"unknown field "bar""#,
                r#"duplicate field "data""#,
                r#"duplicate field "data.k""#,
                r#"duplicate field "type""#,
            ]
        );
    }

    #[test]
    fn patch_bodies_strict_errors() {
        let merge = br#"{"data":{"k":"eA==","k":"eQ=="},"bogus":1,"bogus":2}"#;
        assert_eq!(
            patch_strict_errors(merge, false),
            [r#"duplicate field "data.k""#, r#"duplicate field "bogus""#]
        );
        let ops = br#"[{"op":"add","op":"add","path":"/x","value":{"a":1,"a":2},"x":1},{"op":"remove","path":"/y"}]"#;
        assert_eq!(
            patch_strict_errors(ops, true),
            [
                r#"json patch duplicate field "[0].op""#,
                r#"json patch duplicate field "[0].value.a""#,
                r#"json patch unknown field "[0].x""#,
            ]
        );
        assert!(patch_strict_errors(b"{not json", false).is_empty());
        assert!(patch_strict_errors(br#"[{"op":"add","path":"/a","value":1}]"#, true).is_empty());
    }

    #[test]
    fn unknown_and_duplicate_fields_per_validation() {
        let body =
            br#"{"metadata":{"name":"a","foo":1},"type":"Opaque","type":"Opaque","bar":true}"#;
        assert_eq!(
            err_of(decode_secret(body, FieldValidation::Strict)),
            r#"Secret in version "v1" cannot be handled as a Secret: strict decoding error: unknown field "metadata.foo", duplicate field "type", unknown field "bar""#
        );
        let d = decode_secret(body, FieldValidation::Warn).unwrap();
        assert_eq!(
            d.warnings,
            [
                r#"unknown field "metadata.foo""#,
                r#"duplicate field "type""#,
                r#"unknown field "bar""#
            ]
        );
        let d = decode_secret(body, FieldValidation::Ignore).unwrap();
        assert!(d.warnings.is_empty());
        assert_eq!(d.secret.metadata.name, "a");
        let one = br#"{"metadata":{"name":"a","foo":"x"}}"#;
        assert_eq!(
            err_of(decode_secret(one, FieldValidation::Strict)),
            r#"Secret in version "v1" cannot be handled as a Secret: strict decoding error: unknown field "metadata.foo""#
        );
        let nested = br#"{"metadata":{"name":"a","ownerReferences":[{"uid":"u","zz":1}]}}"#;
        assert!(err_of(decode_secret(nested, FieldValidation::Strict))
            .ends_with(r#"unknown field "metadata.ownerReferences[0].zz""#));
    }

    #[test]
    fn bad_base64_types_and_versions() {
        let bad = br#"{"metadata":{"name":"a"},"data":{"k":"abc"}}"#;
        assert_eq!(
            err_of(decode_secret(bad, FieldValidation::Ignore)),
            r#"Secret in version "v1" cannot be handled as a Secret: illegal base64 data at input byte 0"#
        );
        let bad = br#"{"data":{"k":"aGk!"}}"#;
        assert!(err_of(decode_secret(bad, FieldValidation::Warn)).ends_with("input byte 3"));
        let wrong = br#"{"type":5}"#;
        assert_eq!(
            err_of(decode_secret(wrong, FieldValidation::Warn)),
            r#"Secret in version "v1" cannot be handled as a Secret: json: cannot unmarshal number into Go struct field Secret.type of type v1.SecretType"#
        );
        let nested = br#"{"metadata":{"ownerReferences":[{"uid":1}]}}"#;
        assert!(err_of(decode_secret(nested, FieldValidation::Warn)).ends_with(
            "json: cannot unmarshal number into Go struct field OwnerReference.metadata.ownerReferences.uid of type types.UID"
        ));
        let labels = br#"{"metadata":{"labels":{"a":1}}}"#;
        assert!(err_of(decode_secret(labels, FieldValidation::Warn)).ends_with(
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string"
        ));
        let v = br#"{"apiVersion":"apps/v1","kind":"Secret"}"#;
        assert!(err_of(decode_secret(v, FieldValidation::Warn))
            .starts_with(r#"Secret in version "v1" cannot be handled as a Secret: no kind "Secret" is registered for version "apps/v1""#));
        assert!(matches!(
            decode_secret(b"{not json", FieldValidation::Warn),
            Err(KubeError::BadRequest(_))
        ));
        // A Secret body is JSON (YAML ones are converted first): YAML is Go's syntax error.
        let yaml = b"apiVersion: v1\nkind: Secret\nmetadata:\n  name: y\nstringData:\n  a: b\n";
        assert!(err_of(decode_secret(yaml, FieldValidation::Strict))
            .ends_with("json parse error: invalid character 'a' looking for beginning of value"));
    }

    #[test]
    fn times_are_kept_as_metav1_time_keeps_them() {
        let body = br#"{"metadata":{"name":"t","creationTimestamp":"2024-01-01T02:00:00.5+02:00","managedFields":[
            {"manager":"py","operation":"Update","apiVersion":"v1","time":"2024-01-01T00:00:00+00:00","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},
            {"manager":"zero","operation":"Update","apiVersion":"v1","time":"0001-01-01T00:00:00Z"},
            {"manager":"none","operation":"Update","apiVersion":"v1","time":null}]}}"#;
        let d = decode_secret(body, FieldValidation::Strict).unwrap();
        let m = &d.secret.metadata;
        assert_eq!(m.creation_timestamp, "2024-01-01T00:00:00Z");
        let times: Vec<&str> = m.managed_fields.iter().map(|e| e.time.as_str()).collect();
        assert_eq!(times, ["2024-01-01T00:00:00Z", "", ""]);
        for (field, time, error) in [
            (
                "creationTimestamp",
                "2024-02-30T00:00:00Z",
                r#"parsing time "2024-02-30T00:00:00Z": day out of range"#,
            ),
            (
                "deletionTimestamp",
                "yesterday",
                r#"parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006""#,
            ),
            (
                "creationTimestamp",
                "",
                r#"parsing time "" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "2006""#,
            ),
        ] {
            let body = format!(r#"{{"metadata":{{"name":"t","{field}":"{time}"}}}}"#);
            assert_eq!(
                err_of(decode_secret(body.as_bytes(), FieldValidation::Warn)),
                format!(r#"Secret in version "v1" cannot be handled as a Secret: {error}"#),
                "{field}: {time:?}"
            );
        }
        let body = br#"{"metadata":{"name":"t","managedFields":[{"manager":"m","time":"2024-01-01T00:00:00"}]}}"#;
        assert_eq!(
            err_of(decode_secret(body, FieldValidation::Warn)),
            r#"Secret in version "v1" cannot be handled as a Secret: parsing time "2024-01-01T00:00:00" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "Z07:00""#
        );
    }

    #[test]
    fn debug_shows_no_values() {
        let p =
            parse_body(br#"{"data":{"k":"aHVudGVyMg=="},"stringData":{"s":"hunter2"}}"#).unwrap();
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("aHVudGVyMg"),
            "{shown}"
        );
    }

    #[test]
    fn go_base64_matches_go() {
        assert_eq!(go_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(go_base64("aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(go_base64("").unwrap(), b"");
        assert_eq!(go_base64("YR==").unwrap(), b"a", "unused bits are ignored");
        assert_eq!(go_base64("abc"), Err(0));
        assert_eq!(go_base64("abcde"), Err(4));
        assert_eq!(go_base64("ab=c"), Err(2));
        assert_eq!(go_base64("a==="), Err(1));
        assert_eq!(go_base64("ab=="), Ok(vec![0x69]));
        assert_eq!(go_base64("ab==x"), Err(4));
        assert_eq!(go_base64("ab="), Err(3));
    }

    #[test]
    fn encodes_like_kube_apiserver() {
        let d = decode_secret(
            br#"{"metadata":{"name":"a","namespace":"ns"},"stringData":{"x":"y"},"data":{"k":"dg=="},"type":"Opaque","immutable":true}"#,
            FieldValidation::Strict,
        )
        .unwrap();
        let v = encode_secret(&d.secret);
        assert_eq!(
            v,
            json!({"kind":"Secret","apiVersion":"v1","metadata":{"name":"a","namespace":"ns"},
                   "immutable":true,"data":{"k":"dg=="},"type":"Opaque"})
        );
        let bytes = String::from_utf8(encode_secret_bytes(&d.secret)).unwrap();
        assert!(
            bytes.starts_with(r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"a""#),
            "{bytes}"
        );
        assert!(bytes.ends_with(r#""immutable":true,"data":{"k":"dg=="},"type":"Opaque"}"#));
    }
}
