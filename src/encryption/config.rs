//! `EncryptionConfiguration` (`apiserver.config.k8s.io/v1`): strict decoding, defaulting and
//! validation with kube-apiserver's rules and messages (facts §4.1; upstream
//! `pkg/apis/apiserver/validation/validation_encryption.go` and `encryptionconfig/config.go`).
//!
//! Parsing yields typed values only: a local provider's keys are ciphers that can hold nothing
//! but a key of a valid size ([`AesCbcKey`], [`AesGcmKey`], [`SecretboxKey`]), and a kms
//! provider's endpoint is the socket it names ([`UnixTarget`]). Key material never appears in
//! `Debug` output or in error messages (they print `REDACTED`).

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::crypto::{AesCbcKey, AesGcmKey, SecretboxKey};
pub use crate::go_duration::parse as parse_go_duration;
pub use crate::uds::{parse_unix_endpoint, EndpointError, UnixTarget};

/// Default KMS call timeout (upstream `defaults.go`).
pub const DEFAULT_KMS_TIMEOUT: Duration = Duration::from_secs(3);
/// Default KMS v1 DEK cache size (upstream `defaults.go`).
pub const DEFAULT_KMS_V1_CACHE_SIZE: i32 = 1000;

/// Errors loading a configuration. Every one is the operator's input (or an unreadable file).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read encryption configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid YAML/JSON, an unknown or duplicate field, a wrong type, or an unknown kind.
    #[error("encryption configuration: {0}")]
    Decode(String),
    /// Decoded, but breaks one or more rules; each names its field.
    #[error("encryption configuration is invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Options that kube-apiserver takes from flags rather than from the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// `--feature-gates=KMSv1=true`: allow `kms` providers with `apiVersion: v1` (off by default
    /// since Kubernetes 1.29).
    pub kms_v1: bool,
    /// The file is being reloaded (`--encryption-provider-config-automatic-reload`): KMS v1
    /// names must then be unique too.
    pub reload: bool,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct EncryptionConfiguration {
    /// Rules in file order.
    pub resources: Vec<ResourceConfiguration>,
}

/// One rule: which resources, encrypted by which providers (first one writes).
#[derive(Debug, Clone)]
pub struct ResourceConfiguration {
    /// Resource strings: `resource`, `resource.group`, `*.`, `*.group` or `*.*`.
    pub resources: Vec<String>,
    /// Providers in order.
    pub providers: Vec<ProviderConfiguration>,
}

/// One provider.
#[derive(Debug, Clone)]
pub enum ProviderConfiguration {
    /// Stores plaintext.
    Identity,
    /// AES-CBC with PKCS#7 padding (keys in order; the first writes).
    AesCbc(Vec<KeyConfig<AesCbcKey>>),
    /// AES-GCM with random nonces.
    AesGcm(Vec<KeyConfig<AesGcmKey>>),
    /// XSalsa20-Poly1305.
    Secretbox(Vec<KeyConfig<SecretboxKey>>),
    /// Envelope encryption through a KMS plugin.
    Kms(KmsConfiguration),
}

/// A named key of a local provider: `K` is the provider's cipher ([`AesCbcKey`],
/// [`AesGcmKey`] or [`SecretboxKey`]), built when the file is parsed, so it always holds a key of
/// a size the provider accepts. The key bytes are zeroized when the last clone is dropped.
pub struct KeyConfig<K> {
    /// The key's name, written into every value's prefix.
    pub name: String,
    /// The key, shared with the provider chains built from this configuration.
    pub key: Arc<K>,
}

impl<K> Clone for KeyConfig<K> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            key: self.key.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyConfig<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyConfig({}, [REDACTED])", self.name)
    }
}

/// KMS API version of a `kms` provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsApiVersion {
    /// `v1` (deprecated; needs [`ParseOptions::kms_v1`]).
    V1,
    /// `v2`.
    V2,
}

/// A `kms` provider.
#[derive(Debug, Clone)]
pub struct KmsConfiguration {
    /// `v1` or `v2` (an empty `apiVersion` means `v1`, as upstream defaults it).
    pub api_version: KmsApiVersion,
    /// Provider name, written into every value's prefix.
    pub name: String,
    /// The endpoint as written (`unix:///path`).
    pub endpoint: String,
    /// The socket it names.
    pub target: UnixTarget,
    /// KMS v1 DEK cache size (negative disables); `None` for v2.
    pub cache_size: Option<i32>,
    /// Timeout of every call to the plugin.
    pub timeout: Duration,
}

// ----- strict decoding -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    resources: Option<Vec<RawResource>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    resources: Option<Vec<String>>,
    providers: Option<Vec<RawProvider>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    aesgcm: Option<RawKeys>,
    aescbc: Option<RawKeys>,
    secretbox: Option<RawKeys>,
    identity: Option<RawIdentity>,
    kms: Option<RawKms>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    keys: Option<Vec<RawKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: Option<String>,
    secret: Option<Zeroizing<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKms {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    name: Option<String>,
    endpoint: Option<String>,
    cachesize: Option<i32>,
    timeout: Option<String>,
}

/// Reads and validates the file at `path`. Also returns `sha256:<hex>` of its bytes, the hash
/// kube-apiserver's automatic reload compares.
pub fn load(
    path: &Path,
    opts: ParseOptions,
) -> Result<(EncryptionConfiguration, String), ConfigError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?);
    let hash = format!("sha256:{}", hex::encode(crate::crypto::sha256(&bytes)));
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ConfigError::Decode("the file is not UTF-8".into()))?;
    let config = parse(text, opts)?;
    warn_if_keys_readable(path, &config);
    Ok((config, hash))
}

/// Warns when a file that holds keys (an `aescbc`, `aesgcm` or `secretbox` provider) may be read
/// by other users. kube-apiserver reads such a file whatever its mode, so it is not refused.
fn warn_if_keys_readable(path: &Path, config: &EncryptionConfiguration) {
    use std::os::unix::fs::PermissionsExt as _;
    let holds_keys = config.resources.iter().flat_map(|r| &r.providers).any(|p| {
        matches!(
            p,
            ProviderConfiguration::AesCbc(_)
                | ProviderConfiguration::AesGcm(_)
                | ProviderConfiguration::Secretbox(_)
        )
    });
    let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o7777);
    if holds_keys && mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:04o}"), "the encryption configuration holds keys and other users may read it; make it 0600");
    }
}

/// Decodes (YAML or JSON, strictly) and validates a configuration.
pub fn parse(text: &str, opts: ParseOptions) -> Result<EncryptionConfiguration, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::Decode("the file is empty".into()));
    }
    let raw: RawConfig = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigError::Decode(crate::redact::serde_values(&e.to_string())))?;
    match (raw.api_version.as_deref(), raw.kind.as_deref()) {
        (Some("apiserver.config.k8s.io/v1"), Some("EncryptionConfiguration"))
        | (Some("v1"), Some("EncryptionConfig")) => {}
        (None, _) | (_, None) => {
            return Err(ConfigError::Decode(
                "apiVersion and kind are required: apiVersion: apiserver.config.k8s.io/v1, kind: EncryptionConfiguration".into(),
            ))
        }
        (Some(v), Some(k)) => {
            return Err(ConfigError::Decode(format!(
                "no kind {k:?} is registered for version {v:?}: expected apiVersion: apiserver.config.k8s.io/v1, kind: EncryptionConfiguration"
            )))
        }
    }
    let mut errs = Vec::new();
    let raw_resources = raw.resources.unwrap_or_default();
    if raw_resources.is_empty() {
        return Err(ConfigError::Invalid(vec![
            "resources: Required value: at least one resources is required".into(),
        ]));
    }
    let mut kms_names = HashSet::new();
    let mut out = Vec::new();
    for (i, rc) in raw_resources.into_iter().enumerate() {
        let r_path = format!("resources[{i}].resources");
        let p_path = format!("resources[{i}].providers");
        let resources = rc.resources.unwrap_or_default();
        if resources.is_empty() {
            errs.push(format!(
                "{r_path}: Required value: at least one {r_path} is required"
            ));
        }
        validate_resource_overlap(&resources, &r_path, &mut errs);
        validate_resource_names(&resources, &r_path, &mut errs);
        let raw_providers = rc.providers.unwrap_or_default();
        if raw_providers.is_empty() {
            errs.push(format!(
                "{p_path}: Required value: at least one {p_path} is required"
            ));
        }
        let mut providers = Vec::new();
        for (j, p) in raw_providers.into_iter().enumerate() {
            let path = format!("{p_path}[{j}]");
            if let Some(p) = provider(p, &path, &mut kms_names, opts, &mut errs) {
                providers.push(p);
            }
        }
        out.push(ResourceConfiguration {
            resources,
            providers,
        });
    }
    if errs.is_empty() {
        check_masking(&out, &mut errs);
    }
    if errs.is_empty() {
        Ok(EncryptionConfiguration { resources: out })
    } else {
        Err(ConfigError::Invalid(errs))
    }
}

fn provider(
    p: RawProvider,
    path: &str,
    kms_names: &mut HashSet<String>,
    opts: ParseOptions,
    errs: &mut Vec<String>,
) -> Option<ProviderConfiguration> {
    let found = [
        p.kms.is_some(),
        p.aesgcm.is_some(),
        p.aescbc.is_some(),
        p.secretbox.is_some(),
        p.identity.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if found == 0 {
        errs.push(format!("{path}: Invalid value: provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity"));
        return None;
    }
    if found > 1 {
        errs.push(format!("{path}: Invalid value: more than one provider specified in a single element, should split into different list elements"));
        return None;
    }
    if p.identity.is_some() {
        return Some(ProviderConfiguration::Identity);
    }
    if let Some(k) = p.aesgcm {
        let path = format!("{path}.aesgcm.keys");
        return keys(k, &path, AesGcmKey::KEY_SIZES, AesGcmKey::new, errs)
            .map(ProviderConfiguration::AesGcm);
    }
    if let Some(k) = p.aescbc {
        let path = format!("{path}.aescbc.keys");
        return keys(k, &path, AesCbcKey::KEY_SIZES, AesCbcKey::new, errs)
            .map(ProviderConfiguration::AesCbc);
    }
    if let Some(k) = p.secretbox {
        let path = format!("{path}.secretbox.keys");
        return keys(k, &path, SecretboxKey::KEY_SIZES, SecretboxKey::new, errs)
            .map(ProviderConfiguration::Secretbox);
    }
    let k = p.kms?;
    kms(k, &format!("{path}.kms"), kms_names, opts, errs).map(ProviderConfiguration::Kms)
}

/// Decodes a local provider's keys into ciphers made by `new`, which accepts a key of any of
/// `sizes` bytes (named in the error for any other length).
fn keys<K>(
    raw: RawKeys,
    path: &str,
    sizes: &[usize],
    new: fn(&[u8]) -> Option<K>,
    errs: &mut Vec<String>,
) -> Option<Vec<KeyConfig<K>>> {
    let raw = raw.keys.unwrap_or_default();
    if raw.is_empty() {
        errs.push(format!(
            "{path}: Required value: at least one keys is required"
        ));
        return None;
    }
    let before = errs.len();
    let mut out = Vec::new();
    for (i, k) in raw.into_iter().enumerate() {
        let name = k.name.unwrap_or_default();
        if name.is_empty() {
            errs.push(format!(
                "{path}[{i}].name: Required value: name is a mandatory field for a key"
            ));
        }
        let secret = k.secret.unwrap_or_default();
        if secret.is_empty() {
            errs.push(format!(
                "{path}[{i}].secret: Required value: secret is a mandatory field for a key"
            ));
            continue;
        }
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(secret.as_bytes()) else {
            errs.push(format!(
                "{path}[{i}].secret: Invalid value: \"REDACTED\": secrets must be base64 encoded"
            ));
            continue;
        };
        let bytes = Zeroizing::new(bytes);
        let Some(key) = new(&bytes) else {
            errs.push(format!(
                "{path}[{i}].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got {}, expected one of {sizes:?}",
                bytes.len()
            ));
            continue;
        };
        out.push(KeyConfig {
            name,
            key: Arc::new(key),
        });
    }
    (errs.len() == before).then_some(out)
}

fn kms(
    k: RawKms,
    path: &str,
    names: &mut HashSet<String>,
    opts: ParseOptions,
    errs: &mut Vec<String>,
) -> Option<KmsConfiguration> {
    let before = errs.len();
    let version = k.api_version.unwrap_or_default();
    let version = if version.is_empty() {
        "v1".to_owned()
    } else {
        version
    };
    let name = k.name.unwrap_or_default();
    if name.is_empty() {
        errs.push(format!(
            "{path}.name: Required value: name is a mandatory field for a provider"
        ));
    }
    if version != "v1" && name.contains(':') {
        errs.push(format!("{path}.name: Invalid value: {name:?}: invalid KMS provider name {name}, must not contain ':'"));
    }
    if (opts.reload || version != "v1") && names.contains(&name) {
        errs.push(format!("{path}.name: Invalid value: {name:?}: duplicate KMS provider name {name}, names must be unique"));
    }
    names.insert(name.clone());
    let timeout = match k.timeout.as_deref() {
        None => DEFAULT_KMS_TIMEOUT,
        Some(t) => match parse_go_duration(t) {
            Some(d) if d > Duration::ZERO => d,
            Some(_) => {
                errs.push(format!(
                    "{path}.timeout: Invalid value: {t:?}: timeout should be a positive value"
                ));
                DEFAULT_KMS_TIMEOUT
            }
            None => {
                errs.push(format!("{path}.timeout: Invalid value: {t:?}: not a duration such as 3s, 500ms or 1m30s"));
                DEFAULT_KMS_TIMEOUT
            }
        },
    };
    let endpoint = k.endpoint.unwrap_or_default();
    let target = if endpoint.is_empty() {
        errs.push(format!(
            "{path}.endpoint: Invalid value: \"\": endpoint is a mandatory field for a kms"
        ));
        None
    } else {
        match parse_unix_endpoint(&endpoint) {
            Ok(t) => Some(t),
            Err(e) => {
                let msg = match e {
                    EndpointError::UnsupportedScheme(scheme) => format!(
                        "unsupported scheme {scheme:?} for KMS provider, only unix is supported"
                    ),
                    e => e.to_string(),
                };
                errs.push(format!(
                    "{path}.endpoint: Invalid value: {endpoint:?}: {msg}"
                ));
                None
            }
        }
    };
    let cache_size = match (version.as_str(), k.cachesize) {
        ("v1", None) => Some(DEFAULT_KMS_V1_CACHE_SIZE),
        ("v1", Some(0)) => {
            errs.push(format!("{path}.cachesize: Invalid value: 0: cachesize should be a positive value, or negative to disable"));
            None
        }
        ("v1", Some(n)) => Some(n),
        (_, Some(n)) => {
            errs.push(format!(
                "{path}.cachesize: Invalid value: {n}: cachesize is not supported in v2"
            ));
            None
        }
        (_, None) => None,
    };
    let api_version = match version.as_str() {
        "v1" => KmsApiVersion::V1,
        "v2" => KmsApiVersion::V2,
        other => {
            errs.push(format!("{path}.apiVersion: Invalid value: {other:?}: unsupported apiVersion apiVersion for KMS provider, only v1 and v2 are supported"));
            KmsApiVersion::V2
        }
    };
    if api_version == KmsApiVersion::V1 && !opts.kms_v1 && errs.len() == before {
        errs.push(format!("{path}.apiVersion: KMSv1 is deprecated and will only receive security updates going forward. Use KMSv2 instead. Set --feature-gates=KMSv1=true to use the deprecated KMSv1 feature."));
    }
    if errs.len() != before {
        return None;
    }
    Some(KmsConfiguration {
        api_version,
        name,
        endpoint,
        target: target?,
        cache_size,
        timeout,
    })
}

/// `schema.ParseGroupResource`: `resource.group`, split at the first dot.
fn group_resource(s: &str) -> (&str, &str) {
    match s.split_once('.') {
        Some((r, g)) => (r, g),
        None => (s, ""),
    }
}

fn validate_resource_overlap(resources: &[String], path: &str, errs: &mut Vec<String>) {
    if resources.len() < 2 {
        return;
    }
    let parsed: Vec<_> = resources.iter().map(|r| group_resource(r)).collect();
    let (mut overlap, mut duplicate) = (false, false);
    for (i, r1) in parsed.iter().enumerate() {
        for (j, r2) in parsed.iter().enumerate() {
            if i == j {
                continue;
            }
            if r1 == r2 && !duplicate {
                duplicate = true;
                continue;
            }
            if overlap {
                continue;
            }
            if *r1 == ("*", "*") {
                overlap = true;
                continue;
            }
            if r1.1 != r2.1 {
                continue;
            }
            if r1.0 == "*" || r2.0 == "*" {
                overlap = true;
            }
        }
    }
    let list = format!("{resources:?}");
    if duplicate {
        errs.push(format!(
            "{path}: Invalid value: {list}: the same resource cannot be specified multiple times"
        ));
    }
    if overlap {
        errs.push(format!("{path}: Invalid value: {list}: using overlapping resources such as 'secrets' and '*.' in the same resource list is not allowed as they will be masked"));
    }
}

fn validate_resource_names(resources: &[String], path: &str, errs: &mut Vec<String>) {
    for (j, res) in resources.iter().enumerate() {
        let p = format!("{path}[{j}]");
        let msg = if res.to_lowercase() != *res {
            "resource name should not contain capital letters"
        } else if res == "*" {
            "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"
        } else if matches!(
            res.as_str(),
            "apiserveripinfo" | "serviceipallocations" | "servicenodeportallocations"
        ) {
            "resources which do not have REST API/s cannot be encrypted"
        } else {
            let (r, g) = group_resource(res);
            if g == "events.k8s.io" {
                "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"
            } else if g == "extensions" {
                "'extensions' group has been removed and cannot be used for encryption"
            } else if g == "*" && r != "*" {
                "encrypting the same resource across groups is not supported"
            } else {
                continue;
            }
        };
        errs.push(format!("{p}: Invalid value: {res:?}: {msg}"));
    }
}

/// How a resource rule is printed in the masking error (upstream `grYAMLString`).
fn rule_string(r: &str, g: &str) -> String {
    match (r, g) {
        ("*", "") => "*.".to_owned(),
        (r, "") => r.to_owned(),
        (r, g) => format!("{r}.{g}"),
    }
}

/// An earlier `*.group` or `*.*` rule masks a later resource (upstream config.go).
fn check_masking(rules: &[ResourceConfiguration], errs: &mut Vec<String>) {
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for rule in rules {
        for res in &rule.resources {
            let (r, g) = group_resource(res);
            for (mr, mg) in [("*", g), ("*", "*")] {
                if seen.contains(&(mr.to_owned(), mg.to_owned())) {
                    errs.push(format!(
                        "resource {:?} is masked by earlier rule {:?}",
                        rule_string(r, g),
                        rule_string(mr, mg)
                    ));
                    return;
                }
            }
            seen.insert((r.to_owned(), g.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K32: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    const K16: &str = "MDEyMzQ1Njc4OWFiY2RlZg=="; // 16 bytes

    fn wrap(resources: &str, providers: &str) -> String {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: {resources}\n    providers:\n{providers}"
        )
    }

    fn err(text: &str) -> String {
        parse(text, ParseOptions::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn full_config_parses_with_defaults() {
        let text = format!(
            r#"apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets, configmaps]
    providers:
      - kms: {{apiVersion: v2, name: kw, endpoint: "unix:///run/kw/kms.sock"}}
      - aescbc: {{keys: [{{name: k1, secret: {K32}}}, {{name: k2, secret: {K16}}}]}}
      - aesgcm: {{keys: [{{name: g1, secret: {K16}}}]}}
      - secretbox: {{keys: [{{name: s1, secret: {K32}}}]}}
      - kms: {{name: old, endpoint: "unix:///@abstract", cachesize: -1, timeout: 1m30s}}
      - identity: {{}}
  - resources: ["*.apps"]
    providers: [{{identity: {{}}}}]
"#
        );
        let c = parse(
            &text,
            ParseOptions {
                kms_v1: true,
                reload: false,
            },
        )
        .unwrap();
        assert_eq!(c.resources.len(), 2);
        let p = &c.resources[0].providers;
        match &p[0] {
            ProviderConfiguration::Kms(k) => {
                assert_eq!(k.api_version, KmsApiVersion::V2);
                assert_eq!(k.timeout, DEFAULT_KMS_TIMEOUT);
                assert_eq!(k.cache_size, None);
                assert_eq!(k.target, UnixTarget::Path("/run/kw/kms.sock".into()));
            }
            other => panic!("{other:?}"),
        }
        match &p[4] {
            ProviderConfiguration::Kms(k) => {
                assert_eq!(
                    k.api_version,
                    KmsApiVersion::V1,
                    "empty apiVersion defaults to v1"
                );
                assert_eq!(k.cache_size, Some(-1));
                assert_eq!(k.timeout, Duration::from_secs(90));
                assert_eq!(k.target, UnixTarget::Abstract("abstract".into()));
            }
            other => panic!("{other:?}"),
        }
        assert!(format!("{:?}", p[1]).contains("REDACTED"));
        assert!(
            !format!("{:?}", p[1]).contains("48"),
            "no key bytes in Debug"
        );
        // The legacy spelling and JSON are accepted.
        let json = r#"{"apiVersion":"v1","kind":"EncryptionConfig","resources":[{"resources":["secrets"],"providers":[{"identity":{}}]}]}"#;
        parse(json, ParseOptions::default()).unwrap();
    }

    #[test]
    fn decoding_is_strict() {
        for (text, want) in [
            ("", "empty"),
            ("   \n", "empty"),
            ("kind: EncryptionConfiguration\nresources: []", "apiVersion and kind are required"),
            ("apiVersion: v9\nkind: Foo\n", "no kind \"Foo\""),
            (&wrap("[secrets]", "      - identity: {}\n        bogus: 1\n"), "unknown field `bogus`"),
            (&wrap("[secrets]", "      - Identity: {}\n"), "unknown field `Identity`"),
            (&wrap("[secrets]", "      - identity: {x: 1}\n"), "unknown field `x`"),
            (&wrap("[secrets]", "      - kms: {name: a, endpoint: 'unix:///a', timeout: 3}\n"), "kms.timeout: Invalid value: \"3\": not a duration"),
            (
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nkind: EncryptionConfiguration\n",
                "duplicate",
            ),
            ("extra: 1\napiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n", "unknown field `extra`"),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?} -> {e}");
        }
    }

    #[test]
    fn validation_rules_name_the_field() {
        let cases: Vec<(String, &str)> = vec![
            (
                "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n".into(),
                "resources: Required value: at least one resources is required",
            ),
            (wrap("[]", "      - identity: {}\n"), "resources[0].resources: Required value"),
            (wrap("[secrets]", "      []\n"), "resources[0].providers: Required value"),
            (wrap("[secrets]", "      - {}\n"), "provider does not contain any of the expected providers"),
            (
                wrap("[secrets]", "      - identity: {}\n        aescbc: {keys: []}\n"),
                "resources[0].providers[0]: Invalid value: more than one provider",
            ),
            (wrap("[secrets]", "      - aescbc: {keys: []}\n"), "resources[0].providers[0].aescbc.keys: Required value: at least one keys is required"),
            (wrap("[secrets]", "      - aesgcm: {}\n"), "aesgcm.keys: Required value"),
            (
                wrap("[secrets]", &format!("      - aesgcm: {{keys: [{{secret: {K32}}}]}}\n")),
                "aesgcm.keys[0].name: Required value: name is a mandatory field for a key",
            ),
            (wrap("[secrets]", "      - aesgcm: {keys: [{name: a}]}\n"), "aesgcm.keys[0].secret: Required value"),
            (wrap("[secrets]", "      - aesgcm: {keys: [{name: a, secret: '!!!'}]}\n"), "secrets must be base64 encoded"),
            (
                wrap("[secrets]", "      - aescbc: {keys: [{name: a, secret: YWJj}]}\n"),
                "aescbc.keys[0].secret: Invalid value: \"REDACTED\": secret is not of the expected length, got 3, expected one of [16, 24, 32]",
            ),
            (
                wrap("[secrets]", &format!("      - secretbox: {{keys: [{{name: a, secret: {K16}}}]}}\n")),
                "got 16, expected one of [32]",
            ),
            (wrap("[secrets]", "      - kms: {apiVersion: v2, endpoint: 'unix:///a'}\n"), "kms.name: Required value"),
            (wrap("[secrets]", "      - kms: {apiVersion: v2, name: 'a:b', endpoint: 'unix:///a'}\n"), "must not contain ':'"),
            (
                wrap("[secrets]", "      - kms: {apiVersion: v2, name: a, endpoint: 'unix:///a'}\n      - kms: {apiVersion: v2, name: a, endpoint: 'unix:///b'}\n"),
                "providers[1].kms.name: Invalid value: \"a\": duplicate KMS provider name a",
            ),
            (wrap("[secrets]", "      - kms: {apiVersion: v2, name: a}\n"), "kms.endpoint: Invalid value: \"\": endpoint is a mandatory field"),
            (
                wrap("[secrets]", "      - kms: {apiVersion: v2, name: a, endpoint: 'tcp://1.2.3.4:5'}\n"),
                "unsupported scheme \"tcp\" for KMS provider, only unix is supported",
            ),
            (wrap("[secrets]", "      - kms: {apiVersion: v2, name: a, endpoint: 'unix://rel.sock'}\n"), "names no socket path"),
            (
                wrap("[secrets]", "      - kms: {apiVersion: v2, name: a, endpoint: '/run/kms.sock'}\n"),
                "kms.endpoint: Invalid value: \"/run/kms.sock\": unsupported scheme \"\" for KMS provider, only unix is supported",
            ),
            (wrap("[secrets]", "      - kms: {apiVersion: v2, name: a, endpoint: 'unix:///@'}\n"), "kms.endpoint: Invalid value: \"unix:///@\": empty abstract socket name"),
            (wrap("[secrets]", "      - kms: {apiVersion: v2, name: a, endpoint: 'unix:///a%zz'}\n"), "invalid percent-encoding in the endpoint path"),
            (wrap("[secrets]", "      - kms: {apiVersion: v2, name: a, endpoint: 'unix:///a', timeout: 0s}\n"), "kms.timeout: Invalid value: \"0s\": timeout should be a positive value"),
            (wrap("[secrets]", "      - kms: {apiVersion: v2, name: a, endpoint: 'unix:///a', timeout: -1s}\n"), "timeout should be a positive value"),
            (wrap("[secrets]", "      - kms: {apiVersion: v2, name: a, endpoint: 'unix:///a', timeout: 3 seconds}\n"), "not a duration"),
            (wrap("[secrets]", "      - kms: {apiVersion: v2, name: a, endpoint: 'unix:///a', cachesize: 10}\n"), "cachesize is not supported in v2"),
            (wrap("[secrets]", "      - kms: {apiVersion: v3, name: a, endpoint: 'unix:///a'}\n"), "only v1 and v2 are supported"),
            (wrap("[secrets]", "      - kms: {name: a, endpoint: 'unix:///a'}\n"), "KMSv1 is deprecated"),
            (wrap("[Secrets]", "      - identity: {}\n"), "resources[0].resources[0]: Invalid value: \"Secrets\": resource name should not contain capital letters"),
            (wrap("['*']", "      - identity: {}\n"), "use '*.' to encrypt all the resources"),
            (wrap("[serviceipallocations]", "      - identity: {}\n"), "do not have REST API"),
            (wrap("['*.events.k8s.io']", "      - identity: {}\n"), "Use 'events' instead"),
            (wrap("[deployments.extensions]", "      - identity: {}\n"), "'extensions' group has been removed"),
            (wrap("['secrets.*']", "      - identity: {}\n"), "encrypting the same resource across groups is not supported"),
            (wrap("[secrets, secrets]", "      - identity: {}\n"), "the same resource cannot be specified multiple times"),
            (wrap("[secrets, '*.']", "      - identity: {}\n"), "overlapping resources"),
            (wrap("['*.*', deployments.apps]", "      - identity: {}\n"), "overlapping resources"),
        ];
        for (text, want) in cases {
            let e = err(&text);
            assert!(e.contains(want), "{text}\n-> {e}\nwant {want}");
        }
        // The cache size rule for v1, with the feature gate on.
        let text = wrap(
            "[secrets]",
            "      - kms: {name: a, endpoint: 'unix:///a', cachesize: 0}\n",
        );
        let e = parse(
            &text,
            ParseOptions {
                kms_v1: true,
                reload: false,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("kms.cachesize: Invalid value: 0: cachesize should be a positive value, or negative to disable"), "{e}");
        // v1 names may repeat unless reloading.
        let text = wrap("[secrets]", "      - kms: {name: a, endpoint: 'unix:///a'}\n      - kms: {name: a, endpoint: 'unix:///b'}\n");
        parse(
            &text,
            ParseOptions {
                kms_v1: true,
                reload: false,
            },
        )
        .unwrap();
        let e = parse(
            &text,
            ParseOptions {
                kms_v1: true,
                reload: true,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("duplicate KMS provider name"), "{e}");
    }

    #[test]
    fn earlier_wildcards_mask_later_rules() {
        let two = |a: &str, b: &str| {
            format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [{a}]\n    providers: [{{identity: {{}}}}]\n  - resources: [{b}]\n    providers: [{{identity: {{}}}}]\n")
        };
        assert!(err(&two("'*.'", "secrets"))
            .contains("resource \"secrets\" is masked by earlier rule \"*.\""));
        assert!(err(&two("'*.*'", "deployments.apps"))
            .contains("resource \"deployments.apps\" is masked by earlier rule \"*.*\""));
        assert!(
            err(&two("'*.apps'", "deployments.apps")).contains("masked by earlier rule \"*.apps\"")
        );
        assert!(
            err(&two("'*.'", "'*.'")).contains("resource \"*.\" is masked by earlier rule \"*.\"")
        );
        // A specific rule before a wildcard is fine, and so is a repeat of a specific resource.
        parse(&two("secrets", "'*.'"), ParseOptions::default()).unwrap();
        parse(&two("secrets", "secrets"), ParseOptions::default()).unwrap();
        parse(&two("'*.apps'", "secrets"), ParseOptions::default()).unwrap();
    }

    #[test]
    fn debug_of_a_parsed_config_shows_no_key_material() {
        const K24: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"; // 24 bytes
        let text = wrap(
            "[secrets]",
            &format!(
                "      - aescbc: {{keys: [{{name: c1, secret: {K32}}}, {{name: c2, secret: {K16}}}]}}\n      - aesgcm: {{keys: [{{name: g1, secret: {K24}}}]}}\n      - secretbox: {{keys: [{{name: s1, secret: {K32}}}]}}\n      - kms: {{apiVersion: v2, name: kw, endpoint: 'unix:///run/kms.sock'}}\n      - identity: {{}}\n"
            ),
        );
        let c = parse(&text, ParseOptions::default()).unwrap();
        // The keys are the ciphers, built once here.
        match &c.resources[0].providers[..] {
            [ProviderConfiguration::AesCbc(cbc), ProviderConfiguration::AesGcm(gcm), ProviderConfiguration::Secretbox(sb), ProviderConfiguration::Kms(_), ProviderConfiguration::Identity] =>
            {
                let names: Vec<_> = cbc.iter().map(|k| k.name.as_str()).collect();
                assert_eq!(names, ["c1", "c2"]);
                assert_eq!((gcm[0].name.as_str(), sb[0].name.as_str()), ("g1", "s1"));
            }
            other => panic!("{other:?}"),
        }
        // Every key decodes to ASCII "0123456789abcdef...": look for it in every form Debug
        // could print bytes or strings (text, decimal bytes, hex, base64).
        let forbidden = [
            K32,
            K24,
            K16,
            "MDEyMzQ1Njc4OWFiY2Rl",
            "0123456789abcdef",
            "48, 49, 50",
            "0x30",
            "30313233",
            "48,\n",
        ];
        for shown in [
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{:?}", c.clone()),
        ] {
            for f in forbidden {
                assert!(!shown.contains(f), "{f:?} in {shown}");
            }
            assert!(shown.contains("KeyConfig(c1, [REDACTED])"), "{shown}");
            assert!(shown.contains("KeyConfig(s1, [REDACTED])"), "{shown}");
        }
    }
}
