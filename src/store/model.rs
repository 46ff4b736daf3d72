//! The Secret object as Kubernetes serialises it (`apiVersion: v1`, `kind: Secret`, base64
//! `data`), and the rules a valid Secret follows (`ValidateSecret`, `ValidateSecretUpdate`).

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

pub use crate::names::FieldError;
use crate::names::{is_dns1123_subdomain, DataKey, Namespace, SecretName};

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
        let s = Zeroizing::new(String::deserialize(d)?);
        B64.decode(s.as_bytes())
            .map(SecretBytes::new)
            .map_err(|_| serde::de::Error::custom("a data value is not valid base64"))
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

/// One entry of `metadata.managedFields`: keyward records who changed the object and when, as
/// kube-apiserver does; history reads the time from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedFieldsEntry {
    /// Writer name (`keyward`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manager: String,
    /// `Create` or `Update`... as Kubernetes names operations (`Update` for both).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
    /// API version of the object written.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// RFC 3339 time of the write.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time: String,
}

/// `metadata` of a Secret (the fields keyward keeps).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// DNS-1123 subdomain, at most 253 characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
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
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Last writer and time.
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

/// A qualified name (label and annotation keys): optional DNS subdomain prefix and `/`, then a
/// name of at most 63 characters of `[A-Za-z0-9-_.]` starting and ending alphanumeric.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if !is_dns1123_subdomain(p) {
            return false;
        }
    }
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label value: empty, or at most 63 of `[A-Za-z0-9-_.]` starting and ending alphanumeric.
fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

/// Checks `metadata`; returns the Secret's id if its name and namespace are valid.
fn validate_metadata(m: &ObjectMeta, errs: &mut Vec<FieldError>) -> Option<SecretId> {
    let name = SecretName::try_from(m.name.as_str()).map_err(|e| errs.push(e));
    let namespace = Namespace::try_from(m.namespace.as_str()).map_err(|e| errs.push(e));
    for (k, v) in &m.labels {
        if !is_qualified_name(k) {
            errs.push(err(format!("metadata.labels[{k}]"), "Invalid value: a label key must be a qualified name ([prefix/]name, name at most 63 characters of [A-Za-z0-9-_.])"));
        }
        if !is_label_value(v) {
            errs.push(err(format!("metadata.labels[{k}]"), format!("Invalid value: {v:?}: a label value must be empty or at most 63 characters of [A-Za-z0-9-_.], starting and ending with an alphanumeric character")));
        }
    }
    let mut total = 0;
    for (k, v) in &m.annotations {
        if !is_qualified_name(&k.to_lowercase()) {
            errs.push(err(
                format!("metadata.annotations[{k}]"),
                "Invalid value: an annotation key must be a qualified name ([prefix/]name)",
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
    Some(SecretId {
        namespace: namespace.ok()?,
        name: name.ok()?,
    })
}

/// Defaults a Secret for writing: namespace `default`, type `Opaque`, and `stringData` merged
/// into `data` (each entry overwriting the same key), then cleared.
pub fn normalize(s: &mut Secret) {
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
        if let Err(e) = DataKey::try_from(k.as_str()) {
            errs.push(e);
        }
        total += v.as_slice().len();
    }
    if total > MAX_SECRET_SIZE {
        errs.push(err(
            "data",
            format!("Too long: must have at most {MAX_SECRET_SIZE} bytes (got {total})"),
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
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => errs.push(err(
            "data[username]",
            "Required value: at least one of username or password is required for kubernetes.io/basic-auth",
        )),
        "kubernetes.io/ssh-auth" if !ssh_key => errs.push(err(
            "data[ssh-privatekey]",
            "Required value: kubernetes.io/ssh-auth needs a non-empty ssh-privatekey",
        )),
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(err(
                        format!("data[{k}]"),
                        "Required value: kubernetes.io/tls needs tls.crt and tls.key",
                    ));
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

fn json_key(s: &Secret, key: &str, errs: &mut Vec<FieldError>) {
    match s.data.get(key) {
        None => errs.push(err(
            format!("data[{key}]"),
            format!("Required value: {} needs {key}", s.type_),
        )),
        Some(v) => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(v.as_slice()).is_err() {
                errs.push(err(
                    format!("data[{key}]"),
                    "Invalid value: \"<secret contents redacted>\": must be valid JSON",
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
            format!(
                "Invalid value: {:?}: field is immutable (was {:?})",
                new.type_, old.type_
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
            f[0].starts_with("data: Too long: must have at most 1048576 bytes"),
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
        assert!(with("kubernetes.io/tls", &[("tls.crt", b"c")])[0]
            .starts_with("data[tls.key]: Required"));
        assert!(with("kubernetes.io/tls", &[("tls.crt", b"c"), ("tls.key", b"k")]).is_empty());
        assert!(with("kubernetes.io/basic-auth", &[])[0].starts_with("data[username]"));
        assert!(with("kubernetes.io/basic-auth", &[("password", b"p")]).is_empty());
        assert!(
            with("kubernetes.io/ssh-auth", &[("ssh-privatekey", b"")])[0]
                .starts_with("data[ssh-privatekey]")
        );
        assert!(with(
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", b"{not json")]
        )[0]
        .contains("valid JSON"));
        assert!(with(
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", b"{\"auths\":{}}")]
        )
        .is_empty());
        assert!(with("kubernetes.io/dockercfg", &[])[0].starts_with("data[.dockercfg]"));
        assert!(
            with("kubernetes.io/service-account-token", &[])[0].contains("service-account.name")
        );
        assert!(
            with("example.com/custom", &[]).is_empty(),
            "custom types are allowed"
        );
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
        assert_eq!(fields(validate(&s)).len(), 2);
        let mut s = secret("a");
        s.metadata
            .annotations
            .insert("a".into(), "x".repeat(MAX_ANNOTATIONS_SIZE));
        assert!(fields(validate(&s))[0].starts_with("metadata.annotations: Too long"));
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
}
