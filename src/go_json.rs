//! The error Go's `json.Unmarshal(b, &map[string]interface{}{})` gives, word for word: what
//! kube-apiserver's validation of a `kubernetes.io/dockercfg` or `dockerconfigjson` Secret
//! reports for a value that is not a JSON object (`invalid character 'x' looking for beginning
//! of value`, `unexpected end of JSON input`, `json: cannot unmarshal array into Go value of
//! type map[string]interface {}`). The syntax check follows `encoding/json`'s scanner state by
//! state, quirks included (`tru` at the end of input is `invalid character ' ' in literal true
//! (expecting 'e')`, since the scanner feeds a space at the end). [`unmarshal_struct`] gives the
//! errors of decoding into a small struct (a continue token).

/// `encoding/json`'s nesting limit.
const MAX_DEPTH: usize = 10_000;

/// What `json.Unmarshal(data, &map[string]interface{}{})` returns: `Ok` for an object (or
/// `null`), else Go's error message.
pub fn unmarshal_object(data: &[u8]) -> Result<(), String> {
    let numbers = check_valid(data)?;
    let first = data.iter().find(|c| !is_space(**c));
    let kind = match first {
        Some(b'{') => {
            // Every number in an object is read as a float64; one out of its range is an error.
            return match numbers.into_iter().find(|n| {
                std::str::from_utf8(n)
                    .ok()
                    .and_then(|s| s.parse::<f64>().ok())
                    .is_some_and(f64::is_infinite)
            }) {
                Some(n) => Err(format!(
                    "json: cannot unmarshal number {} into Go value of type float64",
                    String::from_utf8_lossy(n)
                )),
                None => Ok(()),
            };
        }
        Some(b'n') => return Ok(()),
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b't' | b'f') => "bool",
        _ => "number",
    };
    Err(format!(
        "json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
    ))
}

/// The Go type of a struct field, for [`unmarshal_struct`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoField {
    /// `string`.
    String,
    /// `int64`.
    Int64,
}

/// Go's error for `json.Unmarshal(data, &v)` into a struct `go_type` (package-qualified, e.g.
/// `storage.continueToken`) whose JSON fields are `fields`, if it fails: the syntax error, a
/// value that is not an object (`json: cannot unmarshal array into Go value of type
/// storage.continueToken`), or the first field of the wrong type (`json: cannot unmarshal
/// string into Go struct field continueToken.rv of type int64`). Other fields are ignored and
/// `null` leaves a field as it is, as in Go.
pub fn unmarshal_struct(data: &[u8], go_type: &str, fields: &[(&str, GoField)]) -> Option<String> {
    use serde_json::Value;
    if let Err(e) = check_valid(data) {
        return Some(e);
    }
    let value: Value = serde_json::from_slice(data).ok()?;
    let kind = |v: &Value| match v {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::Object(_) => "object",
        Value::Null => "null",
    };
    let object = match &value {
        Value::Object(o) => o,
        Value::Null => return None,
        other => {
            return Some(format!(
                "json: cannot unmarshal {} into Go value of type {go_type}",
                kind(other)
            ))
        }
    };
    let short = go_type.rsplit('.').next().unwrap_or(go_type);
    object.iter().find_map(|(key, v)| {
        let (name, field) = fields.iter().find(|(name, _)| name == key)?;
        let (what, go) = match (field, v) {
            (_, Value::Null) | (GoField::String, Value::String(_)) => return None,
            (GoField::Int64, Value::Number(n)) if n.is_i64() => return None,
            (GoField::Int64, Value::Number(n)) => (format!("number {n}"), "int64"),
            (GoField::Int64, other) => (kind(other).to_owned(), "int64"),
            (GoField::String, other) => (kind(other).to_owned(), "string"),
        };
        Some(format!(
            "json: cannot unmarshal {what} into Go struct field {short}.{name} of type {go}"
        ))
    })
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// What an open container expects next (`encoding/json`'s parse states).
#[derive(Clone, Copy, PartialEq)]
enum Container {
    ObjectKey,
    ObjectValue,
    ArrayValue,
}

/// The scanner's states (named as in `scanner.go`).
#[derive(Clone, Copy, PartialEq)]
enum State {
    BeginValue,
    BeginValueOrEmpty,
    BeginStringOrEmpty,
    BeginString,
    EndValue,
    EndTop,
    InString,
    InStringEsc,
    InStringEscU(u8),
    Neg,
    One,
    Zero,
    Dot,
    Dot0,
    E,
    ESign,
    E0,
    /// Inside `true`, `false` or `null`: the literal and how many bytes were read.
    Literal(&'static [u8], usize),
}

/// Go's syntax error for `data` (`encoding/json`'s `checkValid`), if it is not valid JSON.
pub fn syntax_error(data: &[u8]) -> Option<String> {
    check_valid(data).err()
}

/// `checkValid`: `Ok` with the text of every number, or Go's syntax error.
fn check_valid(data: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut s = Scanner {
        stack: Vec::new(),
        state: State::BeginValue,
        number_start: 0,
        numbers: Vec::new(),
    };
    for (i, &c) in data.iter().enumerate() {
        s.step(c, i, data)?;
    }
    if s.state == State::EndTop {
        return Ok(s.numbers);
    }
    s.step(b' ', data.len(), data)?;
    if s.state == State::EndTop {
        Ok(s.numbers)
    } else {
        Err("unexpected end of JSON input".to_owned())
    }
}

struct Scanner<'a> {
    stack: Vec<Container>,
    state: State,
    number_start: usize,
    numbers: Vec<&'a [u8]>,
}

impl<'a> Scanner<'a> {
    fn step(&mut self, c: u8, at: usize, data: &'a [u8]) -> Result<(), String> {
        use State::*;
        match self.state {
            BeginValueOrEmpty if c == b']' => self.end_value(c, at, data),
            BeginStringOrEmpty if c == b'}' => {
                if let Some(top) = self.stack.last_mut() {
                    *top = Container::ObjectValue;
                }
                self.end_value(c, at, data)
            }
            BeginValue | BeginValueOrEmpty | BeginStringOrEmpty if is_space(c) => Ok(()),
            BeginStringOrEmpty | BeginString => match c {
                b'"' => {
                    self.state = InString;
                    Ok(())
                }
                c if is_space(c) => Ok(()),
                c => Err(error(c, "looking for beginning of object key string")),
            },
            BeginValue | BeginValueOrEmpty => self.begin_value(c, at),
            EndValue => self.end_value(c, at, data),
            EndTop if is_space(c) => Ok(()),
            EndTop => Err(error(c, "after top-level value")),
            InString => match c {
                b'"' => {
                    self.state = EndValue;
                    Ok(())
                }
                b'\\' => {
                    self.state = InStringEsc;
                    Ok(())
                }
                c if c < 0x20 => Err(error(c, "in string literal")),
                _ => Ok(()),
            },
            InStringEsc => match c {
                b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {
                    self.state = InString;
                    Ok(())
                }
                b'u' => {
                    self.state = InStringEscU(0);
                    Ok(())
                }
                c => Err(error(c, "in string escape code")),
            },
            InStringEscU(n) if c.is_ascii_hexdigit() => {
                self.state = if n == 3 {
                    InString
                } else {
                    InStringEscU(n + 1)
                };
                Ok(())
            }
            InStringEscU(_) => Err(error(c, "in \\u hexadecimal character escape")),
            Neg => match c {
                b'0' => {
                    self.state = Zero;
                    Ok(())
                }
                b'1'..=b'9' => {
                    self.state = One;
                    Ok(())
                }
                c => Err(error(c, "in numeric literal")),
            },
            One if c.is_ascii_digit() => Ok(()),
            One | Zero => match c {
                b'.' => {
                    self.state = Dot;
                    Ok(())
                }
                b'e' | b'E' => {
                    self.state = E;
                    Ok(())
                }
                c => self.end_value(c, at, data),
            },
            Dot if c.is_ascii_digit() => {
                self.state = Dot0;
                Ok(())
            }
            Dot => Err(error(c, "after decimal point in numeric literal")),
            Dot0 | E0 if c.is_ascii_digit() => Ok(()),
            Dot0 if matches!(c, b'e' | b'E') => {
                self.state = E;
                Ok(())
            }
            Dot0 | E0 => self.end_value(c, at, data),
            E if matches!(c, b'+' | b'-') => {
                self.state = ESign;
                Ok(())
            }
            E | ESign if c.is_ascii_digit() => {
                self.state = E0;
                Ok(())
            }
            E | ESign => Err(error(c, "in exponent of numeric literal")),
            Literal(word, read) => {
                if c != word[read] {
                    let name = std::str::from_utf8(word).unwrap_or_default();
                    return Err(error(
                        c,
                        &format!("in literal {name} (expecting {})", quote_char(word[read])),
                    ));
                }
                self.state = if read + 1 == word.len() {
                    EndValue
                } else {
                    Literal(word, read + 1)
                };
                Ok(())
            }
        }
    }

    fn begin_value(&mut self, c: u8, at: usize) -> Result<(), String> {
        self.state = match c {
            b'{' => {
                self.push(c, Container::ObjectKey)?;
                State::BeginStringOrEmpty
            }
            b'[' => {
                self.push(c, Container::ArrayValue)?;
                State::BeginValueOrEmpty
            }
            b'"' => State::InString,
            b'-' => State::Neg,
            b'0' => State::Zero,
            b'1'..=b'9' => State::One,
            b't' => State::Literal(b"true", 1),
            b'f' => State::Literal(b"false", 1),
            b'n' => State::Literal(b"null", 1),
            c => return Err(error(c, "looking for beginning of value")),
        };
        if matches!(c, b'-' | b'0'..=b'9') {
            self.number_start = at;
        }
        Ok(())
    }

    fn push(&mut self, c: u8, container: Container) -> Result<(), String> {
        self.stack.push(container);
        if self.stack.len() > MAX_DEPTH {
            return Err(error(c, "exceeded max depth"));
        }
        Ok(())
    }

    fn end_value(&mut self, c: u8, at: usize, data: &'a [u8]) -> Result<(), String> {
        if matches!(
            self.state,
            State::One | State::Zero | State::Dot0 | State::E0
        ) {
            self.numbers.push(&data[self.number_start..at]);
        }
        let Some(&top) = self.stack.last() else {
            self.state = State::EndTop;
            return self.step(c, at, data);
        };
        if is_space(c) {
            self.state = State::EndValue;
            return Ok(());
        }
        match (top, c) {
            (Container::ObjectKey, b':') => {
                self.set_top(Container::ObjectValue);
                self.state = State::BeginValue;
            }
            (Container::ObjectKey, c) => return Err(error(c, "after object key")),
            (Container::ObjectValue, b',') => {
                self.set_top(Container::ObjectKey);
                self.state = State::BeginString;
            }
            (Container::ObjectValue, b'}') | (Container::ArrayValue, b']') => {
                self.stack.pop();
                self.state = if self.stack.is_empty() {
                    State::EndTop
                } else {
                    State::EndValue
                };
            }
            (Container::ObjectValue, c) => return Err(error(c, "after object key:value pair")),
            (Container::ArrayValue, b',') => self.state = State::BeginValue,
            (Container::ArrayValue, c) => return Err(error(c, "after array element")),
        }
        Ok(())
    }

    fn set_top(&mut self, container: Container) {
        if let Some(top) = self.stack.last_mut() {
            *top = container;
        }
    }
}

/// `invalid character 'x' <context>`.
fn error(c: u8, context: &str) -> String {
    format!("invalid character {} {context}", quote_char(c))
}

/// Go's `quoteChar`: the byte as a rune (`string(c)`) quoted by `strconv.Quote`, in single
/// quotes.
fn quote_char(c: u8) -> String {
    let inner = match c {
        b'\'' => "\\'".to_owned(),
        b'"' => "\"".to_owned(),
        b'\\' => "\\\\".to_owned(),
        0x07 => "\\a".to_owned(),
        0x08 => "\\b".to_owned(),
        0x0c => "\\f".to_owned(),
        b'\n' => "\\n".to_owned(),
        b'\r' => "\\r".to_owned(),
        b'\t' => "\\t".to_owned(),
        0x0b => "\\v".to_owned(),
        0x00..=0x1f | 0x7f => format!("\\x{c:02x}"),
        // U+0080 to U+009F are controls, U+00A0 a space and U+00AD a format character: Go
        // does not print them.
        0x80..=0xa0 | 0xad => format!("\\u{c:04x}"),
        c => char::from(c).to_string(),
    };
    format!("'{inner}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_errors_are_gos() {
        let fields = [
            ("v", GoField::String),
            ("rv", GoField::Int64),
            ("start", GoField::String),
        ];
        let err = |data: &[u8]| unmarshal_struct(data, "storage.continueToken", &fields);
        for ok in [
            &b"null"[..],
            b"{}",
            br#"{"v":"x","rv":-1,"start":"a","other":[1]}"#,
            br#"{"rv":null}"#,
        ] {
            assert_eq!(err(ok), None, "{}", String::from_utf8_lossy(ok));
        }
        for (data, want) in [
            (&b"hello"[..], "invalid character 'h' looking for beginning of value"),
            (b"\x81\xaa", "invalid character '\\u0081' looking for beginning of value"),
            (b"[1]", "json: cannot unmarshal array into Go value of type storage.continueToken"),
            (br#"{"rv":"5"}"#, "json: cannot unmarshal string into Go struct field continueToken.rv of type int64"),
            (br#"{"rv":1.5}"#, "json: cannot unmarshal number 1.5 into Go struct field continueToken.rv of type int64"),
            (br#"{"start":"a","v":2}"#, "json: cannot unmarshal number into Go struct field continueToken.v of type string"),
        ] {
            assert_eq!(err(data).as_deref(), Some(want), "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn objects_and_null_unmarshal() {
        for ok in [
            &br#"{"auths":{"r.example":{"auth":"dTpw"}}}"#[..],
            b" {} ",
            b"null",
            br#"{"a":[1,-2.5e3,true,false,null,"\u00e9\n"],"b":{}}"#,
            br#"{"tiny":1e-400}"#,
        ] {
            assert_eq!(
                unmarshal_object(ok),
                Ok(()),
                "{}",
                String::from_utf8_lossy(ok)
            );
        }
    }

    #[test]
    fn errors_are_gos() {
        let cases: [(&[u8], &str); 22] = [
            (b"", "unexpected end of JSON input"),
            (b"   ", "unexpected end of JSON input"),
            (b"{", "unexpected end of JSON input"),
            (br#"{"a":1"#, "unexpected end of JSON input"),
            (
                b"not json",
                "invalid character 'o' in literal null (expecting 'u')",
            ),
            (b"x", "invalid character 'x' looking for beginning of value"),
            (
                b"tru",
                "invalid character ' ' in literal true (expecting 'e')",
            ),
            (
                b"{a:1}",
                "invalid character 'a' looking for beginning of object key string",
            ),
            (br#"{"a" 1}"#, "invalid character '1' after object key"),
            (
                br#"{"a":1 "b":2}"#,
                "invalid character '\"' after object key:value pair",
            ),
            (b"[1 2]", "invalid character '2' after array element"),
            (b"{} {}", "invalid character '{' after top-level value"),
            (
                b"{\"a\":\"x\ny\"}",
                "invalid character '\\n' in string literal",
            ),
            (
                br#"{"a":"\q"}"#,
                "invalid character 'q' in string escape code",
            ),
            (
                br#"{"a":"\u12g4"}"#,
                "invalid character 'g' in \\u hexadecimal character escape",
            ),
            (b"{\"a\":-}", "invalid character '}' in numeric literal"),
            (
                b"{\"a\":1.}",
                "invalid character '}' after decimal point in numeric literal",
            ),
            (
                b"{\"a\":1e}",
                "invalid character '}' in exponent of numeric literal",
            ),
            (
                b"{\"a\":01}",
                "invalid character '1' after object key:value pair",
            ),
            (
                b"\xc3\xa9",
                "invalid character '\u{c3}' looking for beginning of value",
            ),
            (
                b"[]",
                "json: cannot unmarshal array into Go value of type map[string]interface {}",
            ),
            (
                br#"{"big":1e400}"#,
                "json: cannot unmarshal number 1e400 into Go value of type float64",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                unmarshal_object(input),
                Err(want.to_owned()),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        for (input, kind) in [
            (&b"\"s\""[..], "string"),
            (b"12", "number"),
            (b"true", "bool"),
        ] {
            assert_eq!(
                unmarshal_object(input),
                Err(format!(
                    "json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
                ))
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(
            unmarshal_object(deep.as_bytes()),
            Err("invalid character '[' exceeded max depth".to_owned())
        );
    }

    #[test]
    fn quote_char_is_gos() {
        assert_eq!(quote_char(b'a'), "'a'");
        assert_eq!(quote_char(b'\''), "'\\''");
        assert_eq!(quote_char(b'"'), "'\"'");
        assert_eq!(quote_char(0x01), "'\\x01'");
        assert_eq!(quote_char(0x7f), "'\\x7f'");
        assert_eq!(quote_char(0x85), "'\\u0085'");
        assert_eq!(quote_char(0xe9), "'é'");
    }
}
