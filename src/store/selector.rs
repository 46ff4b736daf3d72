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

/// A token of kube-apiserver's label selector lexer (`k8s.io/apimachinery/pkg/labels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    End,
    ClosePar,
    Comma,
    /// `!`
    Not,
    DoubleEq,
    Eq,
    Gt,
    Ident,
    In,
    Lt,
    NotEq,
    NotIn,
    OpenPar,
}

fn special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol(s: &[u8]) -> Option<Tok> {
    Some(match s {
        b")" => Tok::ClosePar,
        b"," => Tok::Comma,
        b"!" => Tok::Not,
        b"==" => Tok::DoubleEq,
        b"=" => Tok::Eq,
        b">" => Tok::Gt,
        b"<" => Tok::Lt,
        b"!=" => Tok::NotEq,
        b"(" => Tok::OpenPar,
        _ => return None,
    })
}

/// The tokens of `s` and their text, ending with [`Tok::End`] (as the lexer, a NUL byte ends
/// the input).
fn lex(s: &str) -> Vec<(Tok, &str)> {
    let b = s.as_bytes();
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < end && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        if i == end {
            out.push((Tok::End, ""));
            return out;
        }
        let start = i;
        if special(b[i]) {
            // The longest run of symbols that is a token (every symbol alone is one).
            let mut tok = Tok::End;
            let mut j = i;
            while j < end && special(b[j]) {
                match symbol(&b[start..=j]) {
                    Some(t) => {
                        tok = t;
                        i = j + 1;
                    }
                    None => break,
                }
                j += 1;
            }
            out.push((tok, &s[start..i]));
        } else {
            while i < end && !special(b[i]) && !matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
                i += 1;
            }
            let word = &s[start..i];
            let tok = match word {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Ident,
            };
            out.push((tok, word));
        }
    }
}

/// kube-apiserver's label selector parser over [`lex`]'s tokens; its errors are upstream's
/// words.
struct Parser<'a> {
    toks: Vec<(Tok, &'a str)>,
    pos: usize,
}

impl<'a> Parser<'a> {
    /// The next token without taking it; `in` and `notin` read as identifiers where a value
    /// or key may stand (upstream's `Values` context).
    fn peek(&self, values: bool) -> (Tok, &'a str) {
        let (t, l) = self.toks.get(self.pos).copied().unwrap_or((Tok::End, ""));
        match t {
            Tok::In | Tok::NotIn if values => (Tok::Ident, l),
            _ => (t, l),
        }
    }

    fn next(&mut self, values: bool) -> (Tok, &'a str) {
        let t = self.peek(values);
        self.pos += 1;
        t
    }

    fn parse(&mut self) -> Result<Vec<Req>, String> {
        let mut reqs = Vec::new();
        loop {
            match self.peek(true) {
                (Tok::Ident | Tok::Not, _) => {
                    let r = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    match self.next(true) {
                        (Tok::End, _) => return Ok(reqs),
                        (Tok::Comma, _) => match self.peek(true) {
                            (Tok::Ident | Tok::Not, _) => {}
                            (_, l) => {
                                return Err(format!("found '{l}', expected: identifier after ','"))
                            }
                        },
                        (_, l) => {
                            return Err(format!("found '{l}', expected: ',' or 'end of string'"))
                        }
                    }
                }
                (Tok::End, _) => return Ok(reqs),
                (_, l) => {
                    return Err(format!(
                        "found '{l}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Req, String> {
        let (mut tok, mut key) = self.next(true);
        let not = tok == Tok::Not;
        if not {
            (tok, key) = self.next(true);
        }
        if tok != Tok::Ident {
            return Err(format!("found '{key}', expected: identifier"));
        }
        // `parseKeyAndInferOperator` checks the key with no field path.
        if let Some(e) = key_error(key, "<nil>") {
            return Err(e);
        }
        let key = key.to_owned();
        if not || matches!(self.peek(true).0, Tok::End | Tok::Comma) {
            // `NewRequirement` checks the key again, and no values.
            return Ok(if not {
                Req::NotExists(key)
            } else {
                Req::Exists(key)
            });
        }
        let op = match self.next(false) {
            (
                t @ (Tok::In
                | Tok::NotIn
                | Tok::Eq
                | Tok::DoubleEq
                | Tok::NotEq
                | Tok::Gt
                | Tok::Lt),
                _,
            ) => t,
            (_, l) => {
                return Err(format!(
                    "found '{l}', expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        };
        let values = if matches!(op, Tok::In | Tok::NotIn) {
            self.values()?
        } else {
            self.exact_value()?
        };
        new_requirement(key, op, values)
    }

    /// `( v, v, ... )`: the set of values, sorted and without repeats (`()` is the empty value).
    fn values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.next(true);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.peek(true);
        let mut set = std::collections::BTreeSet::new();
        match tok {
            Tok::Ident | Tok::Comma => {
                self.identifiers(&mut set)?;
                if self.next(true).0 != Tok::ClosePar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
            }
            Tok::ClosePar => {
                self.next(true);
                set.insert(String::new());
            }
            _ => return Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
        Ok(set.into_iter().collect())
    }

    fn identifiers(&mut self, set: &mut std::collections::BTreeSet<String>) -> Result<(), String> {
        loop {
            match self.next(true) {
                (Tok::Ident, lit) => {
                    set.insert(lit.to_owned());
                    match self.peek(true) {
                        (Tok::Comma, _) => {}
                        (Tok::ClosePar, _) => return Ok(()),
                        (_, l) => return Err(format!("found '{l}', expected: ',' or ')'")),
                    }
                }
                (Tok::Comma, _) => {
                    // `(,`, `,)` and `,,` stand for the empty value.
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.peek(true).0 {
                        Tok::ClosePar => {
                            set.insert(String::new());
                            return Ok(());
                        }
                        Tok::Comma => {
                            self.next(true);
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                (_, l) => return Err(format!("found '{l}', expected: ',', or identifier")),
            }
        }
    }

    /// The one value after `=`, `==`, `!=`, `>` or `<` (empty at the end or before a comma).
    fn exact_value(&mut self) -> Result<Vec<String>, String> {
        if matches!(self.peek(true).0, Tok::End | Tok::Comma) {
            return Ok(vec![String::new()]);
        }
        match self.next(true) {
            (Tok::Ident, lit) => Ok(vec![lit.to_owned()]),
            (_, lit) => Err(format!("found '{lit}', expected: identifier")),
        }
    }
}

/// `validateLabelKey`: the key is a qualified name, its rules joined as upstream joins them,
/// under `path`.
fn key_error(key: &str, path: &str) -> Option<String> {
    let errs = super::model::qualified_name_errors(key);
    (!errs.is_empty()).then(|| {
        format!(
            "{path}: Invalid value: {}: {}",
            crate::authz::go_quote(key),
            errs.join("; ")
        )
    })
}

/// `NewRequirement`: the requirement, or every rule it breaks (one error alone, several as
/// Go's aggregate prints them).
fn new_requirement(key: String, op: Tok, values: Vec<String>) -> Result<Req, String> {
    let mut errs: Vec<String> = key_error(&key, "key").into_iter().collect();
    let list = || crate::authz::go_string_slice(&values);
    let mut bound = None;
    match op {
        Tok::In | Tok::NotIn if values.is_empty() => errs.push(format!(
            "values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty",
            list()
        )),
        Tok::Gt | Tok::Lt => {
            for (i, v) in values.iter().enumerate() {
                match v.parse::<i64>() {
                    Ok(n) => bound = Some(n),
                    Err(_) => errs.push(format!(
                        "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                        crate::authz::go_quote(v)
                    )),
                }
            }
        }
        _ => {}
    }
    for (i, v) in values.iter().enumerate() {
        let bad = super::model::label_value_errors(v);
        if !bad.is_empty() {
            errs.push(format!(
                "values[{i}][{key}]: Invalid value: {}: {}",
                crate::authz::go_quote(v),
                bad.join("; ")
            ));
        }
    }
    match errs.as_slice() {
        [] => {}
        [one] => return Err(one.clone()),
        all => return Err(format!("[{}]", all.join(", "))),
    }
    let one = || values.first().cloned().unwrap_or_default();
    Ok(match op {
        Tok::In => Req::In(key, values),
        Tok::NotIn => Req::NotIn(key, values),
        Tok::NotEq => Req::Ne(key, one()),
        Tok::Gt => Req::Gt(key, bound.unwrap_or_default()),
        Tok::Lt => Req::Lt(key, bound.unwrap_or_default()),
        _ => Req::Eq(key, one()),
    })
}

/// The value of label `key` as a decimal integer, if it is one (`strconv.ParseInt`).
fn int_label(labels: &BTreeMap<String, String>, key: &str) -> Option<i64> {
    labels.get(key)?.parse().ok()
}

impl Selector {
    /// Parses a selector as kube-apiserver's `labels.Parse` does; the error is its message
    /// (`unable to parse requirement: ...` for a requirement that does not parse or breaks a
    /// rule).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Parser {
            toks: lex(s),
            pos: 0,
        };
        p.parse().map(Self)
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
            ("app in (),missing notin (,)", false),
            ("missing in (,x)", false),
            ("app in (db, web,)", true),
            ("in=x,notin", false),
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
            // As upstream: a non-integer bound, or one that is no label value; a key that is no
            // qualified name.
            "n<-1",
            "a>b",
            "a<1.5",
            "a/b/c=d",
            "-a=b",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    /// kube-apiserver's messages, word for word (`labels.Parse`).
    #[test]
    fn upstream_messages() {
        for (sel, want) in [
            ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
            ("grp in g1", "unable to parse requirement: found 'g1' expected: '('"),
            ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("a=b,", "found '', expected: identifier after ','"),
            ("=x", "found '=', expected: !, identifier, or 'end of string'"),
            ("!=x", "found '!=', expected: !, identifier, or 'end of string'"),
            ("! =x", "unable to parse requirement: found '=', expected: identifier"),
            ("a==(", "unable to parse requirement: found '(', expected: identifier"),
            ("a>b", "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer"),
            ("a/b/c", "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
        ] {
            assert_eq!(Selector::parse(sel).unwrap_err(), want, "{sel}");
        }
        let e = Selector::parse("a in (x/y, -z)").unwrap_err();
        assert!(
            e.starts_with(
                "unable to parse requirement: [values[0][a]: Invalid value: \"-z\": a valid label"
            ),
            "{e}"
        );
    }
}
