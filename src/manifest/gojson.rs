//! JSON as Go's `encoding/json` writes a decoded object (what kubectl prints and stores): map
//! keys in byte order, `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`..., numbers as Go
//! formats an `int64` or a `float64`. [`compact`] is `json.Marshal` (the last-applied
//! annotation's form), [`indented`] is `json.MarshalIndent(v, "", "    ")` (`-o json`).

use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// `v` as `json.Marshal` writes it: no spaces, no newline.
pub fn compact(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, None, 0);
    out
}

/// A watch event as `json.Marshal` writes `metav1.WatchEvent`: its fields in the struct's
/// order (`type`, then `object`), the object's keys in byte order.
pub fn compact_event(kind: &str, object: &Value) -> String {
    let mut out = String::from("{\"type\":");
    write_string(&mut out, kind);
    out.push_str(",\"object\":");
    write_value(&mut out, object, None, 0);
    out.push('}');
    out
}

/// `v` as `json.MarshalIndent(v, "", "    ")` writes it (no final newline).
pub fn indented(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, Some("    "), 0);
    out
}

/// Puts the keys of every object in `v` in byte order, as a Go map decoded from `v` is
/// written back (`json.Marshal`), so that a walk over `v` meets fields in Go's order.
pub fn sort_keys(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(sort_keys),
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut item) in entries {
                sort_keys(&mut item);
                m.insert(k, item);
            }
        }
        _ => {}
    }
}

fn newline(out: &mut String, indent: Option<&str>, depth: usize) {
    if let Some(unit) = indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(unit);
        }
    }
}

fn write_value(out: &mut String, v: &Value, indent: Option<&str>, depth: usize) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number(n)),
        Value::String(s) => write_string(out, s),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, depth + 1);
                write_value(out, item, indent, depth + 1);
            }
            newline(out, indent, depth);
            out.push(']');
        }
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Object(m) => write_object(out, m, indent, depth),
    }
}

fn write_object(out: &mut String, m: &Map<String, Value>, indent: Option<&str>, depth: usize) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        newline(out, indent, depth + 1);
        write_string(out, k);
        out.push(':');
        if indent.is_some() {
            out.push(' ');
        }
        write_value(out, &m[k], indent, depth + 1);
    }
    newline(out, indent, depth);
    out.push('}');
}

/// A JSON string as Go's `json.Marshal` writes it (HTML-safe escaping).
pub(super) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Go writes the `int64` or `float64` that `encoding/json` decoded it into.
fn number(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    go_float_json(n.as_f64().unwrap_or(0.0))
}

/// A `float64` as `encoding/json` writes it: shortest digits, `1e+21` style beyond
/// [1e-6, 1e21).
pub(super) fn go_float_json(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let e = go_exponent(f);
        // encoding/json shortens a two-digit negative exponent: e-07 -> e-7.
        match e.split_once("e-0") {
            Some((m, d)) if d.len() == 1 => format!("{m}e-{d}"),
            _ => e,
        }
    } else {
        format!("{f}")
    }
}

/// Shortest `%e` as Go's strconv writes it: `1.5e+06`, `1e-07` (two exponent digits at least).
pub(super) fn go_exponent(f: f64) -> String {
    let rust = format!("{f:e}");
    let (mantissa, exp) = rust.split_once('e').unwrap_or((&rust, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_html_safe_like_go() {
        let v = json!({"b": "<a&b>\u{2028}\u{1}\u{8}\t", "a": [], "c": {}});
        assert_eq!(
            compact(&v),
            r#"{"a":[],"b":"\u003ca\u0026b\u003e\u2028\u0001\b\t","c":{}}"#
        );
        assert_eq!(
            indented(&json!({"x": [1, {"y": null}]})),
            "{\n    \"x\": [\n        1,\n        {\n            \"y\": null\n        }\n    ]\n}"
        );
    }

    #[test]
    fn floats_like_go() {
        assert_eq!(go_float_json(1.5), "1.5");
        assert_eq!(go_float_json(1e21), "1e+21");
        assert_eq!(go_float_json(1e-7), "1e-7");
        assert_eq!(go_float_json(1.25e-10), "1.25e-10");
        assert_eq!(go_float_json(100.0), "100");
        assert_eq!(go_exponent(1234567.5), "1.2345675e+06");
    }
}
