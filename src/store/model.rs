//! The Secret object as Kubernetes serialises it (`apiVersion: v1`, `kind: Secret`, base64
//! `data`), and the rules a valid Secret follows (`ValidateSecret`, `ValidateSecretUpdate`).

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::authz::go_quote;
pub use crate::names::FieldError;
use crate::names::{dns1123_subdomain_errors, regex_error, DataKey, Namespace, SecretName};

/// Largest total size of a Secret's `data` values (1 MiB).
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;
/// Largest total size of annotations (keys plus values), as Kubernetes limits them.
pub const MAX_ANNOTATIONS_SIZE: usize = 256 * 1024;
/// The default type.
pub const OPAQUE: &str = "Opaque";

/// A value of a Secret: zeroized on drop, base64 in JSON, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(pub Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps bytes.
    pub fn new(v: Vec<u8>) -> Self {
        Self(Zeroizing::new(v))
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Zeroizing::new(B64.encode(&*self.0)))
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(SecretBytesVisitor)
    }
}

/// Decodes a base64 string straight from the input when the deserializer can lend it (JSON
/// without escapes), so that no copy of the encoded value is made; otherwise from the copy it
/// hands over, which is zeroized.
struct SecretBytesVisitor;

impl SecretBytesVisitor {
    fn decode<E: serde::de::Error>(encoded: &[u8]) -> Result<SecretBytes, E> {
        let mut out = Zeroizing::new(Vec::with_capacity(encoded.len() / 4 * 3 + 3));
        B64.decode_vec(encoded, &mut out)
            .map_err(|_| E::custom("a data value is not valid base64"))?;
        Ok(SecretBytes(out))
    }
}

impl serde::de::Visitor<'_> for SecretBytesVisitor {
    type Value = SecretBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretBytes, E> {
        Self::decode(v.as_bytes())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretBytes, E> {
        let v = Zeroizing::new(v);
        Self::decode(v.as_bytes())
    }
}

/// A write-only `stringData` value: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(pub Zeroizing<String>);

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// One entry of `metadata.managedFields`: which manager owns which fields, through which
/// operation, and when it last changed them (kube-apiserver's `ManagedFieldsEntry`). History
/// reads the time of the last write from these entries.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedFieldsEntry {
    /// Writer name (`keyward` for `keyward.v1` writes, `kubectl-edit`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manager: String,
    /// `Apply` (server-side apply) or `Update` (every other write, creates included).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
    /// API version of the object written.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// RFC 3339 time of the manager's last change.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time: String,
    /// `FieldsV1` when `fields_v1` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fields_type: String,
    /// The owned fields as a `FieldsV1` trie (`{"f:data":{"f:k":{}}}`); see [`super::managed`].
    #[serde(default, rename = "fieldsV1", skip_serializing_if = "Option::is_none")]
    pub fields_v1: Option<serde_json::Value>,
    /// The subresource written through (empty: the object itself).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// One entry of `metadata.ownerReferences`: an object this Secret depends on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// The owner's API version (`apps/v1`).
    #[serde(default)]
    pub api_version: String,
    /// The owner's Kind.
    #[serde(default)]
    pub kind: String,
    /// The owner's name.
    #[serde(default)]
    pub name: String,
    /// The owner's uid (the merge key of the list).
    #[serde(default)]
    pub uid: String,
    /// This owner is the managing controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    /// Foreground deletion of the owner waits for this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// `metadata` of a Secret (the fields keyward keeps).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// DNS-1123 subdomain, at most 253 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Prefix of a name the store generates on create when `name` is empty
    /// ([`generate_name`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generate_name: String,
    /// DNS-1123 label, at most 63 characters; empty means `default`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Set by the store on create.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The backend revision of the last change; never stored, set on read.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// RFC 3339, set by the store on create.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub creation_timestamp: String,
    /// RFC 3339, set by the store when a delete found finalizers; never taken from a client.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deletion_timestamp: String,
    /// Set with `deletion_timestamp` (0: nothing to wait for but the finalizers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Objects this Secret depends on (kept for Kubernetes clients; keyward collects no garbage).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// Finalizers (qualified names). A delete of a Secret that has some only marks it
    /// ([`ObjectMeta::deletion_timestamp`]); it is removed when an update leaves none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Who owns which fields, and when each manager last wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<ManagedFieldsEntry>,
}

/// A Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// Always `v1`.
    #[serde(default = "api_version_v1")]
    pub api_version: String,
    /// Always `Secret`.
    #[serde(default = "kind_secret")]
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Values (base64 in JSON).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, SecretBytes>,
    /// Write-only values merged into `data` on write; never stored or returned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, SecretString>,
    /// Type; empty means `Opaque`.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// If true, `data` can never change again (the Secret can still be deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

fn api_version_v1() -> String {
    "v1".into()
}

fn kind_secret() -> String {
    "Secret".into()
}

impl Default for Secret {
    fn default() -> Self {
        Self {
            api_version: api_version_v1(),
            kind: kind_secret(),
            metadata: ObjectMeta::default(),
            data: BTreeMap::new(),
            string_data: BTreeMap::new(),
            type_: String::new(),
            immutable: None,
        }
    }
}

impl Secret {
    /// `immutable: true`.
    pub fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }

    /// The time of the last write: the newest `managedFields` time (empty if none is recorded).
    pub fn last_write_time(&self) -> String {
        self.metadata
            .managed_fields
            .iter()
            .map(|m| m.time.as_str())
            .max()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Characters of a generated name suffix (apimachinery `util/rand`: no vowels, no confusable
/// digits).
const NAME_SUFFIX_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of a generated name suffix.
const NAME_SUFFIX_LEN: usize = 5;
/// Longest prefix kept from `generateName` (63 - 5, as `SimpleNameGenerator`).
const MAX_GENERATE_NAME_PREFIX: usize = 58;

/// A name from `metadata.generateName`, as kube-apiserver's `SimpleNameGenerator` makes it: the
/// prefix cut to 58 characters, then 5 random characters of `[bcdfghjklmnpqrstvwxz2456789]`.
pub fn generate_name(prefix: &str) -> String {
    let mut end = prefix.len().min(MAX_GENERATE_NAME_PREFIX);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    let mut name = prefix[..end].to_owned();
    let mut added = 0;
    while added < NAME_SUFFIX_LEN {
        for b in uuid::Uuid::new_v4().into_bytes() {
            // Rejection sampling keeps the choice uniform (243 = 9 * 27).
            if b < 243 && added < NAME_SUFFIX_LEN {
                name.push(char::from(
                    NAME_SUFFIX_CHARS[usize::from(b) % NAME_SUFFIX_CHARS.len()],
                ));
                added += 1;
            }
        }
    }
    name
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError::new(field, message)
}

/// Where a Secret lives: its namespace and name, checked. [`validate`] gives it for a whole
/// Secret; [`SecretId::parse`] for a request that names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretId {
    /// `metadata.namespace`.
    pub namespace: Namespace,
    /// `metadata.name`.
    pub name: SecretName,
}

impl SecretId {
    /// A namespace and a name given separately (an empty namespace is `default`); every broken
    /// rule is reported, the name's first, as for a whole Secret.
    pub fn parse(namespace: &str, name: &str) -> Result<SecretId, Vec<FieldError>> {
        let namespace = match namespace {
            "" => Ok(Namespace::default()),
            ns => Namespace::try_from(ns),
        };
        match (namespace, SecretName::try_from(name)) {
            (Ok(namespace), Ok(name)) => Ok(SecretId { namespace, name }),
            (namespace, name) => Err(name.err().into_iter().chain(namespace.err()).collect()),
        }
    }
}

/// `IsQualifiedName`'s messages (none: valid): an optional DNS subdomain prefix and `/`, then a
/// name of at most 63 of `[-A-Za-z0-9_.]` starting and ending alphanumeric.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    const MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
    const FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
    let examples = ["MyName", "my.name", "123-abc"];
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(MSG, FMT, &examples)
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_owned());
    }
    let b = name.as_bytes();
    let matches = !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if !matches {
        errs.push(format!("name part {}", regex_error(MSG, FMT, &examples)));
    }
    errs
}

/// `IsValidLabelValue`'s messages (none: valid): at most 63 characters, empty or
/// alphanumeric at both ends with `-`, `_` and `.` between.
pub(crate) fn label_value_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_owned());
    }
    let b = v.as_bytes();
    let matches = b.is_empty()
        || (b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric());
    if !matches {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Finalizer names core objects accept without a `/` (`IsStandardFinalizerName`).
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// `generateName`, as `ValidateObjectMeta` checks it first of all.
fn validate_generate_name(m: &ObjectMeta, errs: &mut Vec<FieldError>) {
    if m.generate_name.is_empty() {
        return;
    }
    // `maskTrailingDash`: a prefix may end in `-`.
    let masked = match m.generate_name.strip_suffix('-') {
        Some(rest) if !rest.is_empty() => format!("{rest}a"),
        _ => m.generate_name.clone(),
    };
    for msg in dns1123_subdomain_errors(&masked) {
        errs.push(err(
            "metadata.generateName",
            format!("Invalid value: {:?}: {msg}", m.generate_name),
        ));
    }
}

/// `ownerReferences` and `finalizers`, as `ValidateObjectMeta` checks them (field paths and
/// messages as kube-apiserver's).
fn validate_kube_metadata(m: &ObjectMeta, errs: &mut Vec<FieldError>) {
    let path = "metadata.ownerReferences";
    let mut controller: Option<String> = None;
    for r in &m.owner_references {
        let version = r.api_version.rsplit('/').next().unwrap_or_default();
        if version.is_empty() {
            errs.push(err(
                format!("{path}.apiVersion"),
                format!(
                    "Invalid value: {:?}: version must not be empty",
                    r.api_version
                ),
            ));
        }
        if r.kind.is_empty() {
            errs.push(err(
                format!("{path}.kind"),
                "Invalid value: \"\": kind must not be empty",
            ));
        }
        if r.name.is_empty() {
            errs.push(err(
                format!("{path}.name"),
                "Invalid value: \"\": name must not be empty",
            ));
        }
        if r.uid.is_empty() {
            errs.push(err(
                format!("{path}.uid"),
                "Invalid value: \"\": uid must not be empty",
            ));
        }
        if r.api_version == "v1" && r.kind == "Event" {
            errs.push(err(path, "Invalid value: \"/v1, Kind=Event\": /v1, Kind=Event is disallowed from being an owner"));
        }
        if r.controller == Some(true) {
            let this = format!("{}/{}", r.kind, r.name);
            match &controller {
                Some(first) => errs.push(err(path, format!("Invalid value: \"\": Only one reference can have Controller set to true. Found \"true\" in references for {first} and {this}"))),
                None => controller = Some(this),
            }
        }
    }
    // apimachinery's `ValidateFinalizers`: the names, then the conflicting pair, at the list.
    let path = "metadata.finalizers";
    for f in &m.finalizers {
        for msg in qualified_name_errors(f) {
            errs.push(err(path, format!("Invalid value: {f:?}: {msg}")));
        }
    }
    let has = |f: &str| m.finalizers.iter().any(|x| x == f);
    if has("orphan") && has("foregroundDeletion") {
        // Go's `%#v` of the list.
        let list: Vec<String> = m.finalizers.iter().map(|f| go_quote(f)).collect();
        errs.push(err(
            path,
            format!(
                "Invalid value: []string{{{}}}: finalizer orphan and foregroundDeletion cannot be both set",
                list.join(", ")
            ),
        ));
    }
    // One empty entry is `managed::none_owned` (no manager owns anything), stored as none.
    let none_owned = super::managed::is_none_owned(&m.managed_fields);
    for (i, e) in m.managed_fields.iter().enumerate().filter(|_| !none_owned) {
        let path = format!("metadata.managedFields[{i}]");
        if e.operation != "Apply" && e.operation != "Update" {
            errs.push(err(
                format!("{path}.operation"),
                format!(
                    "Invalid value: {:?}: must be `Apply` or `Update`",
                    e.operation
                ),
            ));
        }
        if !e.fields_type.is_empty() && e.fields_type != "FieldsV1" {
            errs.push(err(
                format!("{path}.fieldsType"),
                format!("Invalid value: {:?}: must be `FieldsV1`", e.fields_type),
            ));
        }
        if e.manager.chars().count() > 128 {
            errs.push(err(
                format!("{path}.manager"),
                "Too long: must have at most 128 bytes",
            ));
        }
        if e.subresource.len() > 256 {
            errs.push(err(
                format!("{path}.subresource"),
                "Too long: must have at most 256 bytes",
            ));
        }
    }
    // core's checks after all of apimachinery's, each at its entry: the name again, and a
    // name without a `/` must be a standard one.
    for (i, f) in m.finalizers.iter().enumerate() {
        let path = format!("metadata.finalizers[{i}]");
        for msg in qualified_name_errors(f) {
            errs.push(err(&path, format!("Invalid value: {f:?}: {msg}")));
        }
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()) {
            errs.push(err(&path, format!("Invalid value: {f:?}: name is neither a standard finalizer name nor is it fully qualified")));
        }
    }
}

/// Checks `metadata`; returns the Secret's id if its name and namespace are valid.
fn validate_metadata(m: &ObjectMeta, errs: &mut Vec<FieldError>) -> Option<SecretId> {
    validate_generate_name(m, errs);
    let name_errors = SecretName::errors(&m.name);
    let namespace_errors = Namespace::errors(&m.namespace);
    let valid_id = name_errors.is_empty() && namespace_errors.is_empty();
    errs.extend(name_errors);
    errs.extend(namespace_errors);
    // `ValidateLabels`: each error names `metadata.labels` and shows the key or value.
    for (k, v) in &m.labels {
        for msg in qualified_name_errors(k) {
            errs.push(err(
                "metadata.labels",
                format!("Invalid value: {}: {msg}", go_quote(k)),
            ));
        }
        for msg in label_value_errors(v) {
            errs.push(err(
                "metadata.labels",
                format!("Invalid value: {}: {msg}", go_quote(v)),
            ));
        }
    }
    // `ValidateAnnotations`: keys are qualified names in any case.
    let mut total = 0;
    for (k, v) in &m.annotations {
        for msg in qualified_name_errors(&k.to_lowercase()) {
            errs.push(err(
                "metadata.annotations",
                format!("Invalid value: {}: {msg}", go_quote(k)),
            ));
        }
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS_SIZE {
        errs.push(err(
            "metadata.annotations",
            format!("Too long: must have at most {MAX_ANNOTATIONS_SIZE} bytes"),
        ));
    }
    validate_kube_metadata(m, errs);
    if !valid_id {
        return None;
    }
    Some(SecretId {
        namespace: Namespace::try_from(m.namespace.as_str()).ok()?,
        name: SecretName::try_from(m.name.as_str()).ok()?,
    })
}

/// Every `metav1.Time` of `m` as kube-apiserver keeps it: whole seconds in UTC, Go's zero time
/// unset ([`crate::go_time::metav1_json`]). A time Go would not parse is left as it is (the
/// Kubernetes API refuses it before it gets here).
pub fn normalize_times(m: &mut ObjectMeta) {
    fn canonical(t: &mut String) {
        if !t.is_empty() {
            if let Ok(kept) = crate::go_time::metav1_json(t) {
                *t = kept.unwrap_or_default();
            }
        }
    }
    canonical(&mut m.creation_timestamp);
    canonical(&mut m.deletion_timestamp);
    for e in &mut m.managed_fields {
        canonical(&mut e.time);
    }
}

/// Defaults a Secret for writing: namespace `default`, type `Opaque`, its times as
/// `metav1.Time` keeps them ([`normalize_times`]), and `stringData` merged into `data` (each
/// entry overwriting the same key), then cleared.
pub fn normalize(s: &mut Secret) {
    normalize_times(&mut s.metadata);
    if s.metadata.namespace.is_empty() {
        s.metadata.namespace = "default".into();
    }
    if s.type_.is_empty() {
        s.type_ = OPAQUE.into();
    }
    for (k, v) in std::mem::take(&mut s.string_data) {
        s.data.insert(k, SecretBytes::new(v.0.as_bytes().to_vec()));
    }
    if s.api_version.is_empty() {
        s.api_version = api_version_v1();
    }
    if s.kind.is_empty() {
        s.kind = kind_secret();
    }
}

/// `ValidateSecret`: every rule for a Secret about to be written (after [`normalize`]). Every
/// broken rule is reported, as kube-apiserver does; a valid Secret gives its [`SecretId`].
pub fn validate(s: &Secret) -> Result<SecretId, Vec<FieldError>> {
    let mut errs = Vec::new();
    if s.api_version != "v1" {
        errs.push(err(
            "apiVersion",
            format!(
                "Unsupported value: {:?}: supported values: \"v1\"",
                s.api_version
            ),
        ));
    }
    if s.kind != "Secret" {
        errs.push(err(
            "kind",
            format!(
                "Unsupported value: {:?}: supported values: \"Secret\"",
                s.kind
            ),
        ));
    }
    let id = validate_metadata(&s.metadata, &mut errs);
    let mut total = 0usize;
    for (k, v) in &s.data {
        errs.extend(DataKey::errors_in(DataKey::FIELD, k));
        total += v.as_slice().len();
    }
    if total > MAX_SECRET_SIZE {
        errs.push(err(
            "data",
            format!("Too long: must have at most {MAX_SECRET_SIZE} bytes"),
        ));
    }
    let has = |k: &str| s.data.contains_key(k);
    let sa_name = s
        .metadata
        .annotations
        .get("kubernetes.io/service-account.name")
        .is_some_and(|v| !v.is_empty());
    let ssh_key = s
        .data
        .get("ssh-privatekey")
        .is_some_and(|v| !v.as_slice().is_empty());
    match s.type_.as_str() {
        "kubernetes.io/service-account-token" if !sa_name => errs.push(err(
            "metadata.annotations[kubernetes.io/service-account.name]",
            "Required value",
        )),
        "kubernetes.io/dockercfg" => json_key(s, ".dockercfg", &mut errs),
        "kubernetes.io/dockerconfigjson" => json_key(s, ".dockerconfigjson", &mut errs),
        // Messages as `ValidateSecret` words them: `field.Required(path, "")`.
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(err("data[username]", "Required value"));
            errs.push(err("data[password]", "Required value"));
        }
        "kubernetes.io/ssh-auth" if !ssh_key => {
            errs.push(err("data[ssh-privatekey]", "Required value"));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(err(format!("data[{k}]"), "Required value"));
                }
            }
        }
        _ => {}
    }
    match id {
        Some(id) if errs.is_empty() => Ok(id),
        _ => Err(errs),
    }
}

/// A docker config key: required, and a JSON object as Go's `json.Unmarshal` into a
/// `map[string]interface{}` reads it (its error is the message; the value is not shown).
fn json_key(s: &Secret, key: &str, errs: &mut Vec<FieldError>) {
    match s.data.get(key) {
        None => errs.push(err(format!("data[{key}]"), "Required value")),
        Some(v) => {
            if let Err(e) = crate::go_json::unmarshal_object(v.as_slice()) {
                errs.push(err(
                    format!("data[{key}]"),
                    format!("Invalid value: \"<secret contents redacted>\": {e}"),
                ));
            }
        }
    }
}

/// `ValidateSecretUpdate`: the rules between the stored Secret and its replacement (both
/// normalized).
pub fn validate_update(new: &Secret, old: &Secret) -> Result<(), Vec<FieldError>> {
    let mut errs = Vec::new();
    if new.type_ != old.type_ {
        errs.push(err(
            "type",
            // `ValidateImmutableField`'s words.
            format!(
                "Invalid value: {}: field is immutable",
                go_quote(&new.type_)
            ),
        ));
    }
    if old.is_immutable() {
        if !new.is_immutable() {
            errs.push(err(
                "immutable",
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
        if new.data != old.data {
            errs.push(err(
                "data",
                "Forbidden: field is immutable when `immutable` is set",
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = name.into();
        normalize(&mut s);
        s
    }

    fn fields<T>(r: Result<T, Vec<FieldError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn json_shape_and_redacted_debug() {
        let mut s = secret("db");
        s.data
            .insert("password".into(), SecretBytes::new(b"hunter2".to_vec()));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "Secret");
        assert_eq!(json["type"], "Opaque");
        assert_eq!(json["data"]["password"], "aHVudGVyMg==");
        assert!(json.get("stringData").is_none());
        let back: Secret = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("aHVudGVyMg"),
            "{dbg}"
        );
        let bad: Result<Secret, _> = serde_json::from_str(r#"{"data":{"a":"!!"}}"#);
        assert!(bad.unwrap_err().to_string().contains("not valid base64"));
    }

    #[test]
    fn secret_ids_report_both_fields() {
        let id = SecretId::parse("", "db").unwrap();
        assert_eq!((id.namespace.as_str(), id.name.as_str()), ("default", "db"));
        assert_eq!(
            SecretId::parse("team", "db").unwrap().namespace.as_str(),
            "team"
        );
        let errs: Vec<String> = SecretId::parse("Bad", "")
            .unwrap_err()
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(errs, ["metadata.name", "metadata.namespace"]);
    }

    #[test]
    fn string_data_overwrites_data() {
        let mut s = Secret::default();
        s.metadata.name = "x".into();
        s.data.insert("a".into(), SecretBytes::new(b"old".to_vec()));
        s.string_data
            .insert("a".into(), SecretString(Zeroizing::new("new".into())));
        s.string_data
            .insert("b".into(), SecretString(Zeroizing::new("bee".into())));
        normalize(&mut s);
        assert_eq!(s.data["a"].as_slice(), b"new");
        assert_eq!(s.data["b"].as_slice(), b"bee");
        assert!(s.string_data.is_empty());
        assert_eq!(
            (s.metadata.namespace.as_str(), s.type_.as_str()),
            ("default", "Opaque")
        );
    }

    #[test]
    fn names_namespaces_keys_and_size() {
        assert_eq!(
            validate(&secret("a.b-c")).unwrap(),
            SecretId {
                namespace: Namespace::default(),
                name: SecretName::try_from("a.b-c").unwrap()
            }
        );
        for bad in ["", "A", "-a", "a_b", "a..b", &"a".repeat(254)] {
            assert!(!fields(validate(&secret(bad))).is_empty(), "{bad}");
        }
        let mut s = secret("ok");
        s.metadata.namespace = "x".repeat(64);
        assert!(fields(validate(&s))[0].starts_with("metadata.namespace"));
        for (k, ok) in [
            (".env", true),
            ("a-b_c.d", true),
            ("..a", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("", false),
        ] {
            let mut s = secret("ok");
            s.data.insert(k.into(), SecretBytes::default());
            assert_eq!(validate(&s).is_ok(), ok, "{k:?}");
        }
        let mut s = secret("big");
        s.data
            .insert("a".into(), SecretBytes::new(vec![0; MAX_SECRET_SIZE]));
        assert!(validate(&s).is_ok(), "exactly 1 MiB is allowed");
        s.data.insert("b".into(), SecretBytes::new(vec![0; 1]));
        let f = fields(validate(&s));
        assert!(
            f[0] == "data: Too long: must have at most 1048576 bytes",
            "{f:?}"
        );
    }

    #[test]
    fn built_in_types() {
        let with = |t: &str, kv: &[(&str, &[u8])]| {
            let mut s = secret("t");
            s.type_ = t.into();
            for (k, v) in kv {
                s.data.insert((*k).into(), SecretBytes::new(v.to_vec()));
            }
            fields(validate(&s))
        };
        // The words of `ValidateSecret`.
        assert_eq!(
            with("kubernetes.io/tls", &[("tls.crt", b"c")]),
            ["data[tls.key]: Required value"]
        );
        assert_eq!(
            with("kubernetes.io/tls", &[]),
            [
                "data[tls.crt]: Required value",
                "data[tls.key]: Required value"
            ]
        );
        assert!(with("kubernetes.io/tls", &[("tls.crt", b"c"), ("tls.key", b"k")]).is_empty());
        assert_eq!(
            with("kubernetes.io/basic-auth", &[]),
            [
                "data[username]: Required value",
                "data[password]: Required value"
            ]
        );
        assert!(with("kubernetes.io/basic-auth", &[("password", b"p")]).is_empty());
        assert_eq!(
            with("kubernetes.io/ssh-auth", &[("ssh-privatekey", b"")]),
            ["data[ssh-privatekey]: Required value"]
        );
        assert_eq!(
            with(
                "kubernetes.io/dockerconfigjson",
                &[(".dockerconfigjson", b"{not json")]
            ),
            [
                r#"data[.dockerconfigjson]: Invalid value: "<secret contents redacted>": invalid character 'n' looking for beginning of object key string"#
            ]
        );
        assert_eq!(
            with("kubernetes.io/dockercfg", &[(".dockercfg", b"[]")]),
            [
                r#"data[.dockercfg]: Invalid value: "<secret contents redacted>": json: cannot unmarshal array into Go value of type map[string]interface {}"#
            ]
        );
        assert!(with(
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", b"{\"auths\":{}}")]
        )
        .is_empty());
        assert_eq!(
            with("kubernetes.io/dockercfg", &[]),
            ["data[.dockercfg]: Required value"]
        );
        assert_eq!(
            with("kubernetes.io/service-account-token", &[]),
            ["metadata.annotations[kubernetes.io/service-account.name]: Required value"]
        );
        assert!(
            with("example.com/custom", &[]).is_empty(),
            "custom types are allowed"
        );
    }

    #[test]
    fn times_are_kept_as_metav1_time_keeps_them() {
        let mut s = secret("t");
        s.metadata.creation_timestamp = "2024-01-01T02:00:00.5+02:00".into();
        for time in ["2024-01-01T00:00:00+00:00", "0001-01-01T00:00:00Z", "soon"] {
            s.metadata.managed_fields.push(ManagedFieldsEntry {
                time: time.into(),
                ..ManagedFieldsEntry::default()
            });
        }
        normalize(&mut s);
        assert_eq!(s.metadata.creation_timestamp, "2024-01-01T00:00:00Z");
        let times: Vec<&str> = s
            .metadata
            .managed_fields
            .iter()
            .map(|e| e.time.as_str())
            .collect();
        assert_eq!(times, ["2024-01-01T00:00:00Z", "", "soon"]);
    }

    #[test]
    fn labels_and_annotations() {
        let mut s = secret("l");
        s.metadata
            .labels
            .insert("app.kubernetes.io/name".into(), "web".into());
        s.metadata.labels.insert("tier".into(), "".into());
        assert!(validate(&s).is_ok());
        s.metadata.labels.insert("bad key!".into(), "x".into());
        s.metadata.labels.insert("ok".into(), "-bad".into());
        // `ValidateLabels`' words: the field is `metadata.labels`, the value the key or value.
        assert_eq!(
            fields(validate(&s)),
            [
                r#"metadata.labels: Invalid value: "bad key!": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"#,
                r#"metadata.labels: Invalid value: "-bad": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"#,
            ]
        );
        let mut s = secret("k");
        s.metadata
            .annotations
            .insert("Example.COM/Ok".into(), "v".into());
        assert!(
            validate(&s).is_ok(),
            "annotation keys are checked in lower case"
        );
        s.metadata.annotations.insert("a/b/c".into(), "v".into());
        assert_eq!(
            fields(validate(&s)),
            [
                r#"metadata.annotations: Invalid value: "a/b/c": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"#
            ]
        );
        let mut s = secret("a");
        s.metadata
            .annotations
            .insert("a".into(), "x".repeat(MAX_ANNOTATIONS_SIZE));
        assert!(fields(validate(&s))[0].starts_with("metadata.annotations: Too long"));
    }

    #[test]
    fn kubernetes_metadata_rules_and_old_objects() {
        // An object stored before these fields existed still decodes.
        let old: Secret = serde_json::from_str(
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"o","managedFields":[{"manager":"keyward","operation":"Update","apiVersion":"v1","time":"2024-01-01T00:00:00Z"}]},"type":"Opaque"}"#,
        )
        .unwrap();
        assert!(old.metadata.finalizers.is_empty() && old.metadata.owner_references.is_empty());
        assert_eq!(old.last_write_time(), "2024-01-01T00:00:00Z");
        let mut s = secret("k");
        s.metadata.finalizers = vec!["kubernetes".into(), "example.com/x".into()];
        s.metadata.owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "d".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: None,
        });
        s.metadata.generate_name = "app-".into();
        assert!(validate(&s).is_ok());
        let mut twice = s.clone();
        let mut second = twice.metadata.owner_references[0].clone();
        second.name = "e".into();
        second.uid = "v".into();
        twice.metadata.owner_references.push(second);
        assert_eq!(
            fields(validate(&twice)),
            ["metadata.ownerReferences: Invalid value: \"\": Only one reference can have Controller set to true. Found \"true\" in references for Deployment/d and Deployment/e"]
        );
        let mut bad = secret("k");
        bad.metadata.finalizers = vec!["a/b/c".into()];
        bad.metadata.generate_name = "Bad_".into();
        let f = fields(validate(&bad));
        assert!(
            f[0].starts_with(
                "metadata.generateName: Invalid value: \"Bad_\": a lowercase RFC 1123 subdomain"
            ),
            "{f:?}"
        );
        assert_eq!(
            f.len(),
            3,
            "the qualified-name error twice, as upstream: {f:?}"
        );
        assert!(f[1].contains("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"), "{f:?}");
        // apimachinery's at the list, core's at the entry, after every other metadata error.
        assert!(
            f[1].starts_with("metadata.finalizers: Invalid value: \"a/b/c\": "),
            "{f:?}"
        );
        assert!(
            f[2].starts_with("metadata.finalizers[0]: Invalid value: \"a/b/c\": "),
            "{f:?}"
        );
        let mut pair = secret("k");
        pair.metadata.finalizers =
            vec!["orphan".into(), "foregroundDeletion".into(), "nope".into()];
        assert_eq!(
            fields(validate(&pair)),
            [
                "metadata.finalizers: Invalid value: []string{\"orphan\", \"foregroundDeletion\", \"nope\"}: finalizer orphan and foregroundDeletion cannot be both set",
                "metadata.finalizers[2]: Invalid value: \"nope\": name is neither a standard finalizer name nor is it fully qualified",
            ]
        );
        let mut mf = secret("k");
        mf.metadata.managed_fields.push(ManagedFieldsEntry {
            manager: "m".into(),
            operation: "Patch".into(),
            fields_type: "FieldsV2".into(),
            ..ManagedFieldsEntry::default()
        });
        assert_eq!(
            fields(validate(&mf)),
            [
                "metadata.managedFields[0].operation: Invalid value: \"Patch\": must be `Apply` or `Update`",
                "metadata.managedFields[0].fieldsType: Invalid value: \"FieldsV2\": must be `FieldsV1`"
            ]
        );
        let name = generate_name(&"x".repeat(70));
        assert_eq!(name.len(), 63);
        assert!(name.starts_with(&"x".repeat(58)));
    }

    #[test]
    fn update_rules() {
        let mut old = secret("u");
        old.data.insert("k".into(), SecretBytes::new(b"v".to_vec()));
        let mut new = old.clone();
        new.type_ = "kubernetes.io/tls".into();
        assert!(fields(validate_update(&new, &old))[0].starts_with("type: Invalid value"));
        old.immutable = Some(true);
        let mut new = old.clone();
        new.metadata.labels.insert("a".into(), "b".into());
        assert!(validate_update(&new, &old).is_ok(), "metadata may change");
        new.data.insert("k".into(), SecretBytes::new(b"w".to_vec()));
        assert!(fields(validate_update(&new, &old))[0].starts_with("data: Forbidden"));
        let mut new = old.clone();
        new.immutable = Some(false);
        assert!(fields(validate_update(&new, &old))[0].starts_with("immutable: Forbidden"));
        new.immutable = None;
        assert!(!fields(validate_update(&new, &old)).is_empty());
    }

    /// `ValidateObjectMeta` reports `generateName` before the name generated from it.
    #[test]
    fn generate_name_errors_come_first() {
        let mut s = secret("Gen_x7k2p");
        s.metadata.generate_name = "Gen_".into();
        let f = fields(validate(&s));
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(
            f[0].starts_with("metadata.generateName: Invalid value: \"Gen_\""),
            "{f:?}"
        );
        assert!(
            f[1].starts_with("metadata.name: Invalid value: \"Gen_x7k2p\""),
            "{f:?}"
        );
    }
}
