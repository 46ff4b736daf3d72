//! Kubernetes name rules shared by every layer (apimachinery `pkg/util/validation`): DNS-1123
//! labels and subdomains, fully qualified domain names, and the names keyward's layers pass
//! around already checked: [`Namespace`], [`SecretName`] and [`DataKey`].
//!
//! The name types live here, not in `store::model`, because the store, the gRPC API, the
//! projection module and the CLI all take them, and this module is the one all of them may
//! import. Each is built once where a value enters (a gRPC request, a CLI flag, a validated
//! Secret) with `TryFrom`, which refuses an invalid value with a [`FieldError`] naming the field
//! and worded as kube-apiserver words it; past that point the value cannot be invalid.

use std::fmt;

/// `path.IsValidPathSegmentName`: what keeps `name` from being one segment of a URL path (it
/// may not be `.` or `..`, nor contain `/` or `%`); empty if nothing. The rule for RBAC object
/// names (`ValidateRBACName`) and for the name a field selector gives a request.
pub fn path_segment_problems(name: &str) -> Vec<String> {
    for bad in [".", ".."] {
        if name == bad {
            return vec![format!("may not be '{bad}'")];
        }
    }
    ["/", "%"]
        .into_iter()
        .filter(|bad| name.contains(bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// DNS-1123 label (`IsDNS1123Label`): 1 to 63 of `[a-z0-9-]`, starting and ending
/// alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_dns1123_label_shape(s)
}

/// DNS-1123 subdomain (`IsDNS1123Subdomain`): at most 253 characters of labels joined by dots,
/// each of `[a-z0-9-]` starting and ending alphanumeric. Like apimachinery, it does not limit
/// a label to 63 characters (a Secret may be named with 200 `a`s).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label_shape)
}

/// `RegexError` of apimachinery: the message, examples, then the pattern (each example is
/// followed by `, `, and `or` joins them with a space each side, hence Go's double spaces).
pub fn regex_error(msg: &str, pattern: &str, examples: &[&str]) -> String {
    let examples: String = examples
        .iter()
        .map(|e| format!("'{e}', "))
        .collect::<Vec<_>>()
        .join(" or ");
    format!("{msg} (e.g. {examples}regex used for validation is '{pattern}')")
}

/// apimachinery's `hasChDirPrefix`: a name that is `.` or `..` or starts with `..`.
pub fn chdir_prefix_error(s: &str) -> Option<&'static str> {
    match s {
        "." => Some("must not be '.'"),
        ".." => Some("must not be '..'"),
        _ if s.starts_with("..") => Some("must not start with '..'"),
        _ => None,
    }
}

/// `IsDNS1123Subdomain`'s messages (none: valid).
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push("must be no more than 253 characters".to_owned());
    }
    if s.is_empty() || !s.split('.').all(is_dns1123_label_shape) {
        out.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
            &["example.com"],
        ));
    }
    out
}

/// `IsDNS1123Label`'s messages (none: valid).
pub fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_owned());
    }
    if !is_dns1123_label_shape(s) {
        out.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "123-abc"],
        ));
    }
    out
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, of any length.
fn is_dns1123_label_shape(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `field` with each message as `Invalid value: "<value>": <message>` (`field.Invalid`).
fn invalid_each(field: &str, value: &str, messages: Vec<String>) -> Vec<FieldError> {
    if messages.is_empty() {
        return Vec::new();
    }
    let quoted = crate::authz::go_quote(value);
    messages
        .into_iter()
        .map(|m| FieldError::new(field, format!("Invalid value: {quoted}: {m}")))
        .collect()
}

/// `IsFullyQualifiedDomainName`: one trailing dot allowed, then a DNS-1123 subdomain of at least
/// two labels.
pub fn is_fqdn(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    is_dns1123_subdomain(name)
        && name.split('.').count() >= 2
        && name.split('.').all(is_dns1123_label)
}

/// A rule a value breaks: the field and what is allowed, as kube-apiserver reports it
/// (`metadata.name: Invalid value: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `data[tls.crt]` or `metadata.name`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl FieldError {
    /// `field` breaks a rule, described by `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// The methods and conversions every checked name has: `as_str`, `into_string`, `Display`,
/// `AsRef<str>`, and `TryFrom<String>`/`TryFrom<&str>`/`FromStr` through the type's `check`.
macro_rules! checked_name {
    ($ty:ident) => {
        impl $ty {
            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as a `String`.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = FieldError;

            fn try_from(s: String) -> Result<Self, FieldError> {
                $ty::check(&s)?;
                Ok($ty(s))
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = FieldError;

            fn try_from(s: &str) -> Result<Self, FieldError> {
                $ty::check(s)?;
                Ok($ty(s.to_owned()))
            }
        }

        impl std::str::FromStr for $ty {
            type Err = FieldError;

            fn from_str(s: &str) -> Result<Self, FieldError> {
                $ty::try_from(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A namespace: a DNS-1123 label (at most 63 of `[a-z0-9-]`, starting and ending
/// alphanumeric), as `ValidateNamespaceName` requires. Errors name `metadata.namespace`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace(String);

checked_name!(Namespace);

impl Namespace {
    /// The field errors name.
    pub const FIELD: &'static str = "metadata.namespace";

    fn check(ns: &str) -> Result<(), FieldError> {
        Self::errors(ns).into_iter().next().map_or(Ok(()), Err)
    }

    /// Every error `ValidateObjectMeta` reports for `ns` as a namespace, in its words.
    pub fn errors(ns: &str) -> Vec<FieldError> {
        if ns.is_empty() {
            return vec![FieldError::new(Self::FIELD, "Required value")];
        }
        invalid_each(Self::FIELD, ns, dns1123_label_errors(ns))
    }
}

impl Default for Namespace {
    /// `default`, the namespace of a Secret that names none.
    fn default() -> Namespace {
        Namespace("default".to_owned())
    }
}

/// A Secret's name: a DNS-1123 subdomain (at most 253 characters of `[a-z0-9-.]`, labels
/// starting and ending alphanumeric), as `ValidateSecretName` requires. Errors name
/// `metadata.name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(String);

checked_name!(SecretName);

impl SecretName {
    /// The field errors name.
    pub const FIELD: &'static str = "metadata.name";

    fn check(name: &str) -> Result<(), FieldError> {
        Self::errors(name).into_iter().next().map_or(Ok(()), Err)
    }

    /// Every error `ValidateObjectMeta` reports for `name` as a Secret's name, in its words.
    pub fn errors(name: &str) -> Vec<FieldError> {
        if name.is_empty() {
            return vec![FieldError::new(
                Self::FIELD,
                "Required value: name or generateName is required",
            )];
        }
        invalid_each(Self::FIELD, name, dns1123_subdomain_errors(name))
    }
}

/// A key of a Secret's `data`: 1 to 253 of `[-._a-zA-Z0-9]`, not `.` or `..`, not starting
/// with `..` (`IsConfigMapKey`, which `ValidateSecret` applies to every key). Errors name
/// `data[KEY]`; [`DataKey::parse`] names another field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DataKey(String);

checked_name!(DataKey);

impl DataKey {
    /// The field errors name, as `data[KEY]`.
    pub const FIELD: &'static str = "data";

    fn check(key: &str) -> Result<(), FieldError> {
        Self::check_in(Self::FIELD, key)
    }

    /// `key` as a data key; an error names the field `field[key]` (e.g. `KEY[a/b]` for a flag's
    /// `KEY` part).
    pub fn parse(field: &str, key: &str) -> Result<DataKey, FieldError> {
        Self::check_in(field, key)?;
        Ok(DataKey(key.to_owned()))
    }

    fn check_in(field: &str, key: &str) -> Result<(), FieldError> {
        match Self::errors_in(field, key).into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every error `IsConfigMapKey` finds in `key`, in its order and words (what
    /// `ValidateSecret` reports for a bad `data` key), naming the field `field[key]`.
    pub fn errors_in(field: &str, key: &str) -> Vec<FieldError> {
        let mut problems = Vec::new();
        if key.len() > 253 {
            problems.push("must be no more than 253 characters".to_owned());
        }
        let chars_ok = !key.is_empty()
            && key
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
        if !chars_ok {
            problems.push(regex_error(
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                "[-._a-zA-Z0-9]+",
                &["key.name", "KEY_NAME", "key-name"],
            ));
        }
        problems.extend(chdir_prefix_error(key).map(str::to_owned));
        if problems.is_empty() {
            return Vec::new();
        }
        invalid_each(&format!("{field}[{key}]"), key, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_subdomains_fqdns() {
        assert!(is_dns1123_label("a-1"));
        for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain(&format!("{}.b", "a".repeat(253))));
        assert!(
            is_dns1123_subdomain(&"a".repeat(245)),
            "no limit on a label"
        );
        assert!(
            !is_fqdn(&format!("{}.com", "a".repeat(64))),
            "but an FQDN's"
        );
        // The apiserver's FQDN test cases (kmsv2 envelope_test.go).
        for ok in [
            "a.com",
            "k8s.io",
            "10.0.0.1",
            "version.encryption.remote.io",
            "a.b.",
        ] {
            assert!(is_fqdn(ok), "{ok}");
        }
        for bad in [
            "com",
            "Dev.k8s.io",
            "*.example.com",
            "underscores_are_bad.k8s.io",
            "http://foo.example.com",
            "a..com",
        ] {
            assert!(!is_fqdn(bad), "{bad}");
        }
    }

    /// `ValidateNamespaceName` is `IsDNS1123Label` (apimachinery validation.go): at most 63
    /// characters, lower case alphanumerics and '-', alphanumeric at both ends.
    #[test]
    fn namespaces_are_dns1123_labels() {
        let max = "a".repeat(63);
        for ok in ["default", "a", "kube-system", "0", "a-1-b", max.as_str()] {
            let ns = Namespace::try_from(ok).unwrap();
            assert_eq!((ns.as_str(), ns.to_string()), (ok, ok.to_owned()));
        }
        let regex = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
        for bad in ["A", "-a", "a-", "a.b", "a_b", "ä"] {
            let e = Namespace::try_from(bad.to_owned()).unwrap_err();
            assert_eq!(e.field, "metadata.namespace", "{bad:?}");
            assert_eq!(e.message, format!("Invalid value: {bad:?}: {regex}"));
        }
        let long = "a".repeat(64);
        let shown: Vec<String> = Namespace::errors(&long)
            .iter()
            .map(|e| e.message.clone())
            .collect();
        assert_eq!(
            shown,
            [format!(
                "Invalid value: {long:?}: must be no more than 63 characters"
            )]
        );
        assert_eq!(
            Namespace::errors("")[0].to_string(),
            "metadata.namespace: Required value"
        );
        assert_eq!(Namespace::errors(&format!("-{long}")).len(), 2);
        assert_eq!(Namespace::default().as_str(), "default");
    }

    /// `ValidateSecretName` is `IsDNS1123Subdomain`: at most 253 characters, DNS-1123 labels
    /// joined by dots; empty is "Required value".
    #[test]
    fn secret_names_are_dns1123_subdomains() {
        let label = "a".repeat(63);
        let max = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(max.len(), 253);
        for ok in ["db", "a.b-c", "0.0", "web-tls", max.as_str()] {
            assert_eq!(SecretName::try_from(ok).unwrap().as_str(), ok);
        }
        let e = SecretName::try_from("").unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        let regex = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
        for bad in ["A", "-a", "a-", "a_b", "a..b", ".a", "a/b"] {
            let e = SecretName::try_from(bad).unwrap_err();
            assert_eq!(e.field, "metadata.name", "{bad:?}");
            assert_eq!(e.message, format!("Invalid value: {bad:?}: {regex}"));
        }
        let long = "a".repeat(254);
        assert_eq!(
            SecretName::try_from(long.as_str()).unwrap_err().message,
            format!("Invalid value: {long:?}: must be no more than 253 characters")
        );
        assert_eq!("db".parse::<SecretName>().unwrap().into_string(), "db");
    }

    /// `IsConfigMapKey`: at most 253 of `[-._a-zA-Z0-9]`, not `.` or `..`, not starting
    /// with `..`.
    #[test]
    fn data_keys_are_config_map_keys() {
        let max = "k".repeat(253);
        for ok in [".env", "a-b_c.d", "tls.crt", "A", "x..y", max.as_str()] {
            assert_eq!(DataKey::try_from(ok).unwrap().as_str(), ok);
        }
        // Every error of `IsConfigMapKey`, in its words.
        let regex = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
        let errors = |key: &str| -> Vec<String> {
            DataKey::errors_in("data", key)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        for bad in ["", "a/b", "a b", "ключ"] {
            assert_eq!(
                errors(bad),
                [format!("data[{bad}]: Invalid value: {bad:?}: {regex}")]
            );
            assert_eq!(
                DataKey::try_from(bad).unwrap_err().to_string(),
                errors(bad)[0]
            );
        }
        let long = "k".repeat(254);
        assert_eq!(
            errors(&long),
            [format!(
                "data[{long}]: Invalid value: \"{long}\": must be no more than 253 characters"
            )]
        );
        assert_eq!(
            errors(&format!("..{}/", "k".repeat(252))).len(),
            3,
            "too long, bad character and a '..' prefix"
        );
        for (bad, why) in [
            (".", "must not be '.'"),
            ("..", "must not be '..'"),
            ("..a", "must not start with '..'"),
        ] {
            assert_eq!(
                errors(bad),
                [format!("data[{bad}]: Invalid value: {bad:?}: {why}")]
            );
        }
        assert_eq!(
            errors("a\u{1}"),
            [format!("data[a\u{1}]: Invalid value: \"a\\x01\": {regex}")]
        );
        let e = DataKey::parse("KEY", "a/b").unwrap_err();
        assert_eq!(e.field, "KEY[a/b]");
        assert_eq!(DataKey::parse("KEY", "ok").unwrap().as_str(), "ok");
    }
}
