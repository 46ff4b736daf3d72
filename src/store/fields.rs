//! Kubernetes field selectors on Secrets: `metadata.name`, `metadata.namespace` and `type`,
//! each `=`, `==` or `!=`, joined by commas (all must hold). A selector that asks for exactly
//! one name ([`FieldSelector::name`]) is how a list or watch of a single Secret is authorized
//! with that name, so that RBAC `resourceNames` can allow it, as in Kubernetes.

use super::Secret;

/// One requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    /// `metadata.name`, `metadata.namespace` or `type`.
    field: String,
    value: String,
    /// `!=`.
    negated: bool,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<Requirement>);

/// The terms of field selector `s` as kube-apiserver reads them (apimachinery's
/// `fields.ParseSelector`): split at commas not escaped by a backslash, sorted, empty ones
/// skipped; each is `field=value`, `field==value` or `field!=value` at its first operator, and
/// its value is unescaped (`\\`, `\,` and `\=`); nothing is trimmed. Returns (field, value,
/// negated) per term, in that sorted order, or kube-apiserver's message.
pub fn terms(s: &str) -> Result<Vec<(String, String, bool)>, String> {
    let mut parts = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.sort_unstable();
    let mut out = Vec::new();
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        let Some((field, op, value)) = (0..part.len())
            .filter(|i| part.is_char_boundary(*i))
            .find_map(|i| {
                ["!=", "==", "="]
                    .into_iter()
                    .find(|op| part[i..].starts_with(op))
                    .map(|op| (&part[..i], op, &part[i + op.len()..]))
            })
        else {
            return Err(format!(
                "invalid selector: '{s}'; can't understand '{part}'"
            ));
        };
        out.push((field.to_owned(), unescape(value)?, op == "!="));
    }
    Ok(out)
}

/// A field selector's value without its escapes (apimachinery's `fields.UnescapeValue`).
fn unescape(v: &str) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut escaped = false;
    for c in v.chars() {
        match c {
            '\\' | ',' | '=' if escaped => {
                out.push(c);
                escaped = false;
            }
            _ if escaped => {
                return Err(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                ))
            }
            '\\' => escaped = true,
            ',' | '=' => {
                // Go's `%v` of a rune: its number.
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    u32::from(c)
                ));
            }
            _ => out.push(c),
        }
    }
    if escaped {
        return Err("invalid field selector: invalid escape sequence: \\".to_owned());
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses `s` ([`terms`]); the error is kube-apiserver's message (`invalid selector: ...`
    /// for a term without an operator, `invalid field selector: ...` for a bad escape,
    /// `field label not supported: F` for another field).
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        Self::parse_for(s, &["metadata.name", "metadata.namespace", "type"])
    }

    /// Parses `s` as a field selector of a kind whose selectable fields are `fields`, with
    /// [`FieldSelector::parse`]'s errors (only a Secret's selector can be matched).
    pub fn parse_for(s: &str, fields: &[&str]) -> Result<FieldSelector, String> {
        let mut reqs = Vec::new();
        for (field, value, negated) in terms(s)? {
            if !fields.contains(&field.as_str()) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push(Requirement {
                field,
                value,
                negated,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// The selector `metadata.name=NAME`, built without parsing (a name in a URL's path).
    pub fn of_name(name: &str) -> FieldSelector {
        FieldSelector(vec![Requirement {
            field: "metadata.name".to_owned(),
            value: name.to_owned(),
            negated: false,
        }])
    }

    /// Whether `s` matches (a Secret without a type is `Opaque`).
    pub fn matches(&self, s: &Secret) -> bool {
        self.0.iter().all(|r| {
            let v = match r.field.as_str() {
                "metadata.name" => s.metadata.name.as_str(),
                "metadata.namespace" => s.metadata.namespace.as_str(),
                _ if s.type_.is_empty() => "Opaque",
                _ => s.type_.as_str(),
            };
            (v == r.value) != r.negated
        })
    }

    /// The one name the selector asks for: the value of its first `metadata.name=` (or `==`)
    /// term in sorted order, if that is a valid path segment (kube-apiserver's
    /// `RequiresExactMatch`).
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|r| !r.negated && r.field == "metadata.name")
            .map(|r| r.value.as_str())
            .filter(|n| crate::names::path_segment_problems(n).is_empty())
    }

    /// No requirement.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_secrets() {
        let f = FieldSelector::parse("metadata.name=s1,type!=kubernetes.io/tls").unwrap();
        let mut s = Secret::default();
        s.metadata.name = "s1".into();
        assert!(f.matches(&s));
        assert_eq!(f.name(), Some("s1"));
        s.type_ = "kubernetes.io/tls".into();
        assert!(!f.matches(&s));
        assert_eq!(
            FieldSelector::parse("spec.x=1").unwrap_err(),
            "field label not supported: spec.x"
        );
        assert_eq!(
            FieldSelector::parse("type=x,bogus").unwrap_err(),
            "invalid selector: 'type=x,bogus'; can't understand 'bogus'"
        );
        for (s, name) in [
            ("metadata.name==db", Some("db")),
            ("type=Opaque,metadata.name=db", Some("db")),
            // Sorted before the first name is taken, as upstream.
            ("metadata.name=other,metadata.name=db", Some("db")),
            (r"metadata.name=d\,b", Some("d,b")),
            ("metadata.name!=db", None),
            ("metadata.name=..", None),
            ("", None),
            (",", None),
        ] {
            assert_eq!(FieldSelector::parse(s).unwrap().name(), name, "{s:?}");
        }
        // Nothing is trimmed: a padded label is another label.
        assert_eq!(
            FieldSelector::parse(" metadata.name=db").unwrap_err(),
            "field label not supported:  metadata.name"
        );
        assert_eq!(
            terms(r"a=x\,y\=z\\,b!=c=d").unwrap_err(),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            terms(r"a=x\,y\=z\\,b!=\c").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \c"
        );
        assert_eq!(
            terms("b=1\\").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            terms(r"a=x\,y\=z\\,b==1").unwrap(),
            [
                ("a".to_owned(), r"x,y=z\".to_owned(), false),
                ("b".to_owned(), "1".to_owned(), false)
            ]
        );
        assert_eq!(
            terms("a=b!=c").unwrap_err(),
            "invalid field selector: unescaped character in value: 61"
        );
        let empty = FieldSelector::parse("type=Opaque").unwrap();
        assert!(empty.matches(&Secret::default()));
    }
}
