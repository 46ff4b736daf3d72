//! Kubernetes label selectors: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`,
//! `k>n`, `k<n` (integers), joined by commas (all must hold).

use std::collections::BTreeMap;

/// One requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    /// The label's value is an integer greater than this.
    Gt(String, i64),
    /// The label's value is an integer less than this.
    Lt(String, i64),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<Req>);

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 316
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/'))
}

/// A label value (`validation.IsValidLabelValue`): empty, or at most 63 of `[A-Za-z0-9._-]`
/// starting and ending alphanumeric. Unlike a key, it has no `prefix/`.
fn valid_value(s: &str) -> bool {
    let alnum = |c: Option<u8>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && alnum(s.bytes().next())
        && alnum(s.bytes().last())
}

/// Splits at commas that are not inside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced ')'".into());
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// The value of label `key` as a decimal integer, if it is one (`strconv.ParseInt`).
fn int_label(labels: &BTreeMap<String, String>, key: &str) -> Option<i64> {
    labels.get(key)?.parse().ok()
}

fn set(values: &str) -> Result<Vec<String>, String> {
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or("expected a parenthesised set such as (a,b)")?;
    if inner.trim().is_empty() {
        return Err("for 'in', 'notin' operators, values set can't be empty".into());
    }
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
    if vals.iter().any(|v| !valid_value(v)) {
        return Err(format!("invalid value in set {values:?}"));
    }
    Ok(vals)
}

impl Selector {
    /// Parses a selector. The error names the offending requirement.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self::default());
        }
        let mut reqs = Vec::new();
        for part in split_top(s)? {
            let p = part.trim();
            let bad = |why: &str| format!("invalid label selector requirement {p:?}: {why}");
            let req = if let Some((k, v)) = p.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(v).map_err(|e| bad(&e))?)
            } else if let Some((k, v)) = p.split_once(" in ") {
                Req::In(k.trim().into(), set(v).map_err(|e| bad(&e))?)
            } else if let Some((k, v)) = p.split_once('>').or_else(|| p.split_once('<')) {
                let n = v
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| bad("for 'Gt', 'Lt' operators, the value must be an integer"))?;
                if p.contains('>') {
                    Req::Gt(k.trim().into(), n)
                } else {
                    Req::Lt(k.trim().into(), n)
                }
            } else if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else {
                Req::Exists(p.into())
            };
            let (key, value) = match &req {
                Req::Eq(k, v) | Req::Ne(k, v) => (k, Some(v)),
                Req::In(k, _)
                | Req::NotIn(k, _)
                | Req::Exists(k)
                | Req::NotExists(k)
                | Req::Gt(k, _)
                | Req::Lt(k, _) => (k, None),
            };
            if !valid_token(key) {
                return Err(bad("the key must be a label key"));
            }
            // `validateLabelKey`: a qualified name, its rules joined as upstream joins them.
            let key_errors = super::model::qualified_name_errors(key);
            if !key_errors.is_empty() {
                return Err(bad(&format!(
                    "key: Invalid value: {}: {}",
                    crate::authz::go_quote(key),
                    key_errors.join("; ")
                )));
            }
            if let Some(v) = value {
                if !valid_value(v) {
                    return Err(bad("the value must be a label value"));
                }
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::Ne(k, v) => labels.get(k) != Some(v),
            Req::In(k, vs) => labels.get(k).is_some_and(|x| vs.contains(x)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|x| !vs.contains(x)),
            Req::Exists(k) => labels.contains_key(k),
            Req::NotExists(k) => !labels.contains_key(k),
            Req::Gt(k, n) => int_label(labels, k).is_some_and(|v| v > *n),
            Req::Lt(k, n) => int_label(labels, k).is_some_and(|v| v < *n),
        })
    }

    /// True for the empty selector.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    #[test]
    fn selector_semantics() {
        let l = labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("env", "prod"),
            ("n", "3"),
        ]);
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=db", false),
            ("app in (web,db)", true),
            ("app notin (web,db)", false),
            ("app notin (db)", true),
            ("missing notin (x)", true),
            ("missing in (x)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,env=prod", true),
            ("app=web, env in (prod, staging), !missing", true),
            ("app=web,env=dev", false),
            ("missing!=x", true),
            ("n>2", true),
            ("n > 3", false),
            ("n<4", true),
            ("n<-1", false),
            ("app>1", false),
            ("missing<9", false),
        ] {
            assert_eq!(Selector::parse(sel).unwrap().matches(&l), want, "{sel}");
        }
        for bad in [
            "app in web",
            "a=b=c",
            "(",
            "app in (a",
            "a b",
            "=x",
            "a=@",
            // Found by the fuzz targets: a value is a label value, without a key's `prefix/`.
            "a in (b/c)",
            "a=b/c",
            "a!=-x",
            // As upstream: an empty set, a non-integer bound, a key that is no qualified name.
            "a in ()",
            "a notin ( )",
            "a>b",
            "a<1.5",
            "a/b/c=d",
            "-a=b",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
