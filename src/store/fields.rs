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

/// One term of a field selector (`a=b`, `a==b`, `a!=b`): its field and value, trimmed, and
/// whether it is `!=`; `None` without an operator.
pub fn field_term(term: &str) -> Option<(&str, &str, bool)> {
    let (f, v, negated) = if let Some((f, v)) = term.split_once("!=") {
        (f, v, true)
    } else if let Some((f, v)) = term.split_once("==") {
        (f, v, false)
    } else {
        let (f, v) = term.split_once('=')?;
        (f, v, false)
    };
    Some((f.trim(), v.trim(), negated))
}

impl FieldSelector {
    /// Parses `s`; the error is kube-apiserver's message (`invalid selector: ...` for a term
    /// without an operator, `field label not supported: F` for another field).
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        Self::parse_for(s, &["metadata.name", "metadata.namespace", "type"])
    }

    /// Parses `s` as a field selector of a kind whose selectable fields are `fields`, with
    /// [`FieldSelector::parse`]'s errors (only a Secret's selector can be matched).
    pub fn parse_for(s: &str, fields: &[&str]) -> Result<FieldSelector, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((field, value, negated)) = field_term(part) else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            if !fields.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push(Requirement {
                field: field.to_owned(),
                value: value.to_owned(),
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
    /// term, if that is a valid path segment (kube-apiserver's `RequiresExactMatch`).
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
            FieldSelector::parse("bogus").unwrap_err(),
            "invalid selector: 'bogus'; can't understand 'bogus'"
        );
        for (s, name) in [
            ("metadata.name==db", Some("db")),
            ("type=Opaque, metadata.name = db ", Some("db")),
            ("metadata.name!=db", None),
            ("metadata.name=..", None),
            ("", None),
        ] {
            assert_eq!(FieldSelector::parse(s).unwrap().name(), name, "{s:?}");
        }
        let empty = FieldSelector::parse("type=Opaque").unwrap();
        assert!(empty.matches(&Secret::default()));
    }
}
