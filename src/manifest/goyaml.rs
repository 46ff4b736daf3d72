//! YAML as `kubectl get -o yaml` prints an object: sigs.k8s.io/yaml's `JSONToYAML`, i.e. the
//! JSON read back by go-yaml v2 and written by its emitter (a port of libyaml's). What matters
//! for byte-for-byte agreement, all reproduced here:
//!
//! - map keys in go-yaml's order: letters by code point, other characters before letters, runs
//!   of digits compared as numbers (`key9` before `key10`);
//! - a string stays plain only if go-yaml would read it back as a string: `"2"`, `"yes"`, `"y"`,
//!   `"~"`, `""`, `"0x1F"`, `"1e3"`, `"2024-05-01"`, `"1:20"` are double-quoted; strings holding
//!   a newline are literal blocks (`|`, `|-`, `|+`, `|2`);
//! - the emitter's own rules: leading/trailing spaces or indicator characters make it
//!   single-quoted, control or astral characters double-quoted with escapes, lines folded at
//!   spaces past column 80, keys longer than 128 bytes written as `? key`;
//! - sequences inside a mapping are not indented (`- item` under its key).

use serde_json::Value;

use super::gojson::{go_exponent, go_float_json};

/// The value as `kubectl get -o yaml` prints it, ending in a newline.
pub fn to_yaml(v: &Value) -> String {
    let mut e = Emitter {
        out: String::new(),
        column: 0,
        indent: -1,
        indents: Vec::new(),
        whitespace: true,
        indention: true,
    };
    e.node(v, Ctx::ROOT);
    // The implicit document end. (go-yaml writes no `...` after a `|+` block at the end,
    // unlike libyaml.)
    e.write_indent();
    e.out
}

const BEST_WIDTH: usize = 80;
const BEST_INDENT: i32 = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

#[derive(Clone, Copy)]
struct Ctx {
    mapping: bool,
    simple_key: bool,
}

impl Ctx {
    const ROOT: Ctx = Ctx {
        mapping: false,
        simple_key: false,
    };
    const ITEM: Ctx = Ctx {
        mapping: false,
        simple_key: false,
    };
    const VALUE: Ctx = Ctx {
        mapping: true,
        simple_key: false,
    };
    const KEY: Ctx = Ctx {
        mapping: true,
        simple_key: true,
    };
}

struct Emitter {
    out: String,
    /// Characters (not bytes) since the last line break.
    column: usize,
    indent: i32,
    indents: Vec<i32>,
    whitespace: bool,
    indention: bool,
}

impl Emitter {
    fn put(&mut self, c: char) {
        self.out.push(c);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
    }

    /// A line break character of a scalar: `\n` as a break, others written as they are.
    fn write_break(&mut self, c: char) {
        if c == '\n' {
            self.put_break();
        } else {
            self.out.push(c);
            self.column = 0;
        }
        self.indention = true;
    }

    fn write_indent(&mut self) {
        let indent = self.indent.max(0) as usize;
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put(' ');
        }
        self.whitespace = true;
        self.indention = true;
    }

    fn indicator(&mut self, s: &str, need_whitespace: bool, is_whitespace: bool, indention: bool) {
        if need_whitespace && !self.whitespace {
            self.put(' ');
        }
        for c in s.chars() {
            self.put(c);
        }
        self.whitespace = is_whitespace;
        self.indention = self.indention && indention;
    }

    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        self.indents.push(self.indent);
        if self.indent < 0 {
            self.indent = if flow { BEST_INDENT } else { 0 };
        } else if !indentless {
            self.indent += BEST_INDENT;
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().unwrap_or(-1);
    }

    fn node(&mut self, v: &Value, ctx: Ctx) {
        match v {
            Value::Object(m) if m.is_empty() => self.empty_flow("{", "}"),
            Value::Array(a) if a.is_empty() => self.empty_flow("[", "]"),
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_by(|a, b| key_order(a, b));
                self.increase_indent(false, false);
                for k in keys {
                    self.write_indent();
                    let key = Scalar::string(k);
                    if !key.analysis.multiline && k.len() <= 128 {
                        self.scalar(&key, Ctx::KEY);
                        self.indicator(":", false, false, false);
                    } else {
                        self.indicator("?", true, false, true);
                        self.scalar(&key, Ctx::VALUE);
                        self.write_indent();
                        self.indicator(":", true, false, true);
                    }
                    self.node(&m[k], Ctx::VALUE);
                }
                self.pop_indent();
            }
            Value::Array(items) => {
                let indentless = ctx.mapping && !self.indention;
                self.increase_indent(false, indentless);
                for item in items {
                    self.write_indent();
                    self.indicator("-", true, false, true);
                    self.node(item, Ctx::ITEM);
                }
                self.pop_indent();
            }
            scalar => self.scalar(&Scalar::of(scalar), ctx),
        }
    }

    fn empty_flow(&mut self, open: &str, close: &str) {
        self.indicator(open, true, true, false);
        self.increase_indent(true, false);
        self.pop_indent();
        self.indicator(close, false, false, false);
    }

    fn scalar(&mut self, s: &Scalar, ctx: Ctx) {
        let a = &s.analysis;
        let mut style = s.style;
        if ctx.simple_key && a.multiline {
            style = Style::Double;
        }
        if style == Style::Plain
            && (!a.block_plain_allowed || (s.text.is_empty() && ctx.simple_key))
        {
            style = Style::Single;
        }
        if style == Style::Single && !a.single_quoted_allowed {
            style = Style::Double;
        }
        if style == Style::Literal && (!a.block_allowed || ctx.simple_key) {
            style = Style::Double;
        }
        self.increase_indent(true, false);
        let breaks = !ctx.simple_key;
        match style {
            Style::Plain => self.plain_or_single(&s.text, breaks, false),
            Style::Single => self.plain_or_single(&s.text, breaks, true),
            Style::Double => self.double_quoted(&s.text, breaks),
            Style::Literal => self.literal(&s.text),
        }
        self.pop_indent();
    }

    /// A plain or single-quoted scalar: line breaks doubled (a single one would fold into a
    /// space), long lines folded at a single space past the width, `'` doubled when quoted.
    /// (A plain scalar never starts or ends with a space, so the same folding rule serves
    /// both.)
    fn plain_or_single(&mut self, text: &str, allow_breaks: bool, quoted: bool) {
        if quoted {
            self.indicator("'", true, false, false);
        } else if !self.whitespace {
            self.put(' ');
        }
        let chars: Vec<char> = text.chars().collect();
        let (mut spaces, mut breaks) = (false, false);
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && i > 0
                    && i + 1 < chars.len()
                    && chars[i + 1] != ' '
                {
                    self.write_indent();
                } else {
                    self.put(c);
                }
                spaces = true;
            } else if is_break(c) {
                if !breaks && c == '\n' {
                    self.put_break();
                }
                self.write_break(c);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if quoted && c == '\'' {
                    self.put('\'');
                }
                self.put(c);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        if quoted {
            self.indicator("'", false, false, false);
        }
        self.whitespace = false;
        self.indention = false;
    }

    fn double_quoted(&mut self, text: &str, allow_breaks: bool) {
        self.indicator("\"", true, false, false);
        let chars: Vec<char> = text.chars().collect();
        // libyaml's Go port checks for a byte order mark at the start of the value, not at
        // each character: after a leading BOM every character is escaped.
        let bom = text.starts_with('\u{feff}');
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if bom || !is_printable(c) || is_break(c) || c == '"' || c == '\\' {
                self.put('\\');
                match escape(c) {
                    Some(e) => self.put(e),
                    None => {
                        let v = c as u32;
                        let (letter, digits) = match v {
                            0..=0xff => ('x', 2),
                            0x100..=0xffff => ('u', 4),
                            _ => ('U', 8),
                        };
                        self.put(letter);
                        for k in (0..digits).rev() {
                            let d = (v >> (k * 4)) & 0xf;
                            self.put(
                                char::from_digit(d, 16).map_or('0', |h| h.to_ascii_uppercase()),
                            );
                        }
                    }
                }
                spaces = false;
            } else if c == ' ' {
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && i > 0
                    && i + 1 < chars.len()
                {
                    self.write_indent();
                    if chars[i + 1] == ' ' {
                        self.put('\\');
                    }
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                self.put(c);
                spaces = false;
            }
        }
        self.indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn literal(&mut self, text: &str) {
        self.indicator("|", true, false, false);
        let chars: Vec<char> = text.chars().collect();
        if matches!(chars.first(), Some(&c) if c == ' ' || is_break(c)) {
            self.indicator(&BEST_INDENT.to_string(), false, false, false);
        }
        let n = chars.len();
        let chomp = if n == 0 || !is_break(chars[n - 1]) {
            Some("-")
        } else if n == 1 || is_break(chars[n - 2]) {
            Some("+")
        } else {
            None
        };
        if let Some(h) = chomp {
            self.indicator(h, false, false, false);
        }
        self.put_break();
        self.indention = true;
        self.whitespace = true;
        let mut breaks = true;
        for &c in &chars {
            if is_break(c) {
                self.write_break(c);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

/// The short escapes of a double-quoted scalar.
fn escape(c: char) -> Option<char> {
    Some(match c {
        '\0' => '0',
        '\u{7}' => 'a',
        '\u{8}' => 'b',
        '\t' => 't',
        '\n' => 'n',
        '\u{b}' => 'v',
        '\u{c}' => 'f',
        '\r' => 'r',
        '\u{1b}' => 'e',
        '"' => '"',
        '\\' => '\\',
        '\u{85}' => 'N',
        '\u{a0}' => '_',
        '\u{2028}' => 'L',
        '\u{2029}' => 'P',
        _ => return None,
    })
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// libyaml's printable set (astral characters are not in it).
fn is_printable(c: char) -> bool {
    let v = c as u32;
    v == 0x0a
        || (0x20..=0x7e).contains(&v)
        || (0xa0..=0xd7ff).contains(&v)
        || ((0xe000..=0xfffd).contains(&v) && v != 0xfeff)
}

/// A scalar to write: its text, the style the encoder asks for, and what the emitter allows.
struct Scalar {
    text: String,
    style: Style,
    analysis: Analysis,
}

impl Scalar {
    fn new(text: String, style: Style) -> Scalar {
        let analysis = Analysis::of(&text);
        Scalar {
            text,
            style,
            analysis,
        }
    }

    /// A string as go-yaml's encoder styles it.
    fn string(s: &str) -> Scalar {
        let style = if s.contains('\n') {
            Style::Literal
        } else if resolves_to_str(s) && !is_base60_float(s) {
            Style::Plain
        } else {
            Style::Double
        };
        Scalar::new(s.to_owned(), style)
    }

    fn of(v: &Value) -> Scalar {
        let text = match v {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            Value::Number(n) => yaml_float(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => return Scalar::string(s),
            // Collections are written by `node`.
            Value::Array(_) | Value::Object(_) => String::new(),
        };
        Scalar::new(text, Style::Plain)
    }
}

/// A float as it reaches go-yaml through JSON: an integral one reads back as an int, others
/// are written with Go's `%g` (`1.5`, `1e+06`, `1e-05`).
fn yaml_float(f: f64) -> String {
    let json = go_float_json(f);
    if json.parse::<i64>().is_ok() || json.parse::<u64>().is_ok() {
        return json;
    }
    let exp: i32 = format!("{f:e}")
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    if !(-4..6).contains(&exp) {
        go_exponent(f)
    } else {
        format!("{f}")
    }
}

/// What libyaml's analysis of a scalar allows.
struct Analysis {
    multiline: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

impl Analysis {
    fn of(s: &str) -> Analysis {
        if s.is_empty() {
            return Analysis {
                multiline: false,
                block_plain_allowed: true,
                single_quoted_allowed: true,
                block_allowed: false,
            };
        }
        let chars: Vec<char> = s.chars().collect();
        let mut block_indicators = s.starts_with("---") || s.starts_with("...");
        let (mut line_breaks, mut special, mut tabs) = (false, false, false);
        let (mut leading_space, mut leading_break) = (false, false);
        let (mut trailing_space, mut trailing_break) = (false, false);
        let (mut break_space, mut space_break) = (false, false);
        let (mut prev_space, mut prev_break) = (false, false);
        let mut preceded_by_ws = true;
        for (i, &c) in chars.iter().enumerate() {
            let followed_by_ws = chars
                .get(i + 1)
                .is_none_or(|&n| n == ' ' || n == '\t' || is_break(n));
            if i == 0 {
                match c {
                    '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\''
                    | '"' | '%' | '@' | '`' => block_indicators = true,
                    '?' | ':' | '-' if followed_by_ws => block_indicators = true,
                    _ => {}
                }
            } else {
                match c {
                    ':' if followed_by_ws => block_indicators = true,
                    '#' if preceded_by_ws => block_indicators = true,
                    _ => {}
                }
            }
            if c == '\t' {
                tabs = true;
            } else if !is_printable(c) {
                special = true;
            }
            let last = i + 1 == chars.len();
            if c == ' ' {
                leading_space |= i == 0;
                trailing_space |= last;
                break_space |= prev_break;
                prev_space = true;
                prev_break = false;
            } else if is_break(c) {
                line_breaks = true;
                leading_break |= i == 0;
                trailing_break |= last;
                space_break |= prev_space;
                prev_space = false;
                prev_break = true;
            } else {
                prev_space = false;
                prev_break = false;
            }
            preceded_by_ws = c == ' ' || c == '\t' || is_break(c);
        }
        let mut a = Analysis {
            multiline: line_breaks,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: true,
        };
        if leading_space || leading_break || trailing_space || trailing_break {
            a.block_plain_allowed = false;
        }
        if trailing_space {
            a.block_allowed = false;
        }
        if break_space {
            a.block_plain_allowed = false;
            a.single_quoted_allowed = false;
        }
        if space_break || tabs || special {
            a.block_plain_allowed = false;
            a.single_quoted_allowed = false;
        }
        if space_break || special {
            a.block_allowed = false;
        }
        if line_breaks || block_indicators {
            a.block_plain_allowed = false;
        }
        a
    }
}

/// go-yaml's map key order (its `keyList.Less`) for string keys.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    if key_less(a, b) {
        Ordering::Less
    } else if key_less(b, a) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

fn key_less(a: &str, b: &str) -> bool {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    for i in 0..ar.len().min(br.len()) {
        if ar[i] == br[i] {
            continue;
        }
        let (al, bl) = (ar[i].is_alphabetic(), br[i].is_alphabetic());
        if al && bl {
            return ar[i] < br[i];
        }
        if al || bl {
            return bl;
        }
        let (mut an, mut bn) = (0i64, 0i64);
        if ar[i] == '0' || br[i] == '0' {
            let nonzero_before = ar[..i]
                .iter()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .any(|&c| c != '0');
            if nonzero_before {
                an = 1;
                bn = 1;
            }
        }
        let digits = |r: &[char], n: &mut i64| {
            let mut j = i;
            while j < r.len() && r[j].is_ascii_digit() {
                *n = n
                    .wrapping_mul(10)
                    .wrapping_add(i64::from(r[j] as u8 - b'0'));
                j += 1;
            }
            j
        };
        let ai = digits(&ar, &mut an);
        let bi = digits(&br, &mut bn);
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return ar[i] < br[i];
    }
    ar.len() < br.len()
}

/// Whether go-yaml v2 reads `s`, written plain, back as a string (its `resolve`).
fn resolves_to_str(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N", "no",
        "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "", "~", "null", "Null",
        "NULL", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
        "-.Inf", "-.INF", "<<",
    ];
    let hint = match s.as_bytes().first() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => return true,
    };
    if SPECIAL.contains(&s) {
        return false;
    }
    match hint {
        b'.' => !is_go_dot_float(s),
        b'D' | b'S' => {
            if is_timestamp(s) {
                return false;
            }
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            !(is_go_int(&plain) || is_yaml_float(&plain))
        }
        _ => true,
    }
}

/// Digits of `s` in `base`, at least one unless `empty_ok`.
fn all_digits(s: &str, base: u32, empty_ok: bool) -> bool {
    (empty_ok || !s.is_empty()) && s.chars().all(|c| c.is_digit(base))
}

/// An unsigned Go integer literal (`strconv.ParseUint(s, 0, 64)` syntax, any size; values
/// past `u128` saturate).
fn unsigned_literal(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    let (digits, base) = match b {
        [] => return None,
        [b'0', p, _, ..] if matches!(p.to_ascii_lowercase(), b'b' | b'o' | b'x') => {
            let base = match p.to_ascii_lowercase() {
                b'b' => 2,
                b'o' => 8,
                _ => 16,
            };
            (&s[2..], base)
        }
        // "0" alone is octal with no digits.
        [b'0', ..] => (&s[1..], 8),
        _ => (s, 10),
    };
    if !all_digits(digits, base, true) {
        return None;
    }
    if digits.is_empty() {
        return Some(0);
    }
    Some(u128::from_str_radix(digits, base).unwrap_or(u128::MAX))
}

/// go-yaml's int resolution: `ParseInt`/`ParseUint` base 0, or a big unsigned literal.
fn is_go_int(plain: &str) -> bool {
    if let Some(rest) = plain.strip_prefix(['+', '-']) {
        let neg = plain.starts_with('-');
        return match unsigned_literal(rest) {
            Some(v) if neg => v <= 1u128 << 63,
            Some(v) => v < 1u128 << 63,
            None => false,
        };
    }
    unsigned_literal(plain).is_some()
}

/// go-yaml's float pattern `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`, and a
/// finite value.
fn is_yaml_float(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => all_digits(frac, 10, false),
        Some((int, frac)) => all_digits(int, 10, false) && all_digits(frac, 10, true),
        None => all_digits(mantissa, 10, false),
    };
    let exp_ok = exp.is_none_or(|e| all_digits(e.strip_prefix(['+', '-']).unwrap_or(e), 10, false));
    mantissa_ok && exp_ok && s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// `strconv.ParseFloat` on a string starting with `.`: digits (underscores between them), an
/// optional exponent, a finite value.
fn is_go_dot_float(s: &str) -> bool {
    let body = &s[1..];
    let (frac, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let separated = |d: &str| {
        !d.is_empty()
            && d.split('_').all(|part| all_digits(part, 10, false))
            && d.chars().all(|c| c.is_ascii_digit() || c == '_')
    };
    let exp_ok = exp.is_none_or(|e| separated(e.strip_prefix(['+', '-']).unwrap_or(e)));
    let clean: String = s.chars().filter(|&c| c != '_').collect();
    separated(frac) && exp_ok && clean.parse::<f64>().is_ok_and(f64::is_finite)
}

/// go-yaml's base-60 float pattern `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
fn is_base60_float(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (main, frac) = match body.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (body, None),
    };
    let mut parts = main.split(':');
    let head = parts.next().unwrap_or("");
    let head_ok = head.starts_with(|c: char| c.is_ascii_digit())
        && head.chars().all(|c| c.is_ascii_digit() || c == '_');
    let rest: Vec<&str> = parts.collect();
    let rest_ok = !rest.is_empty()
        && rest.iter().all(|p| match p.as_bytes() {
            [d] => d.is_ascii_digit(),
            [a, b] => (b'0'..=b'5').contains(a) && b.is_ascii_digit(),
            _ => false,
        });
    let frac_ok = frac.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit() || c == '_'));
    head_ok && rest_ok && frac_ok
}

/// go-yaml's timestamp resolution: `time.Parse` with `2006-1-2T15:4:5.999999999Z07:00` (or a
/// lower-case `t`), `2006-1-2 15:4:5.999999999` or `2006-1-2`.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let year: u32 = s[..4].parse().unwrap_or(0);
    let mut p = Cursor { s: b, i: 5 };
    let Some(month) = p.num() else { return false };
    if !p.eat(b'-') {
        return false;
    }
    let Some(day) = p.num() else { return false };
    if !(1..=12).contains(&month) || day < 1 || day > days_in(month, year) {
        return false;
    }
    if p.done() {
        return true;
    }
    let zoned = match b[p.i] {
        b'T' | b't' => true,
        b' ' => false,
        _ => return false,
    };
    p.i += 1;
    let time_ok = (|| {
        let h = p.num()?;
        p.eat(b':').then_some(())?;
        let m = p.num()?;
        p.eat(b':').then_some(())?;
        let sec = p.num()?;
        (h < 24 && m < 60 && sec < 60).then_some(())
    })()
    .is_some();
    if !time_ok {
        return false;
    }
    if p.i + 1 < b.len() && matches!(b[p.i], b'.' | b',') && b[p.i + 1].is_ascii_digit() {
        p.i += 1;
        while !p.done() && b[p.i].is_ascii_digit() {
            p.i += 1;
        }
    }
    if !zoned {
        return p.done();
    }
    if p.eat(b'Z') {
        return p.done();
    }
    let z = &b[p.i..];
    z.len() == 6
        && matches!(z[0], b'+' | b'-')
        && z[1..3].iter().all(u8::is_ascii_digit)
        && z[3] == b':'
        && z[4..6].iter().all(u8::is_ascii_digit)
        && (z[1] - b'0') * 10 + (z[2] - b'0') <= 24
        && (z[4] - b'0') * 10 + (z[5] - b'0') <= 60
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, c: u8) -> bool {
        let ok = self.s.get(self.i) == Some(&c);
        self.i += usize::from(ok);
        ok
    }

    /// One or two digits, as Go's `getnum(value, false)`.
    fn num(&mut self) -> Option<u32> {
        let d = |c: Option<&u8>| {
            c.filter(|c| c.is_ascii_digit())
                .map(|c| u32::from(c - b'0'))
        };
        let first = d(self.s.get(self.i))?;
        self.i += 1;
        match d(self.s.get(self.i)) {
            Some(second) => {
                self.i += 1;
                Some(first * 10 + second)
            }
            None => Some(first),
        }
    }
}

fn days_in(month: u32, year: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoting_follows_go_yaml_resolution() {
        for s in [
            "2",
            "yes",
            "on",
            "y",
            "N",
            "~",
            "",
            "null",
            "0x1F",
            "1e3",
            "1_000",
            "-0b11",
            "017",
            "08",
            ".5",
            "2024-05-01",
            "2024-05-01T12:00:00Z",
            "1:20",
            "+1",
            ".inf",
            "-.5e-3",
        ] {
            assert!(
                !resolves_to_str(s) || is_base60_float(s),
                "{s:?} should be quoted"
            );
        }
        for s in [
            "abc",
            "2024-13-01",
            "1e400",
            "0x",
            "09x",
            "+",
            ".",
            "1.2.3",
            "<<x",
            "nan",
            "0b2",
            "2024-05-01T25:00:00Z",
            "yess",
            "12:60",
        ] {
            assert!(
                resolves_to_str(s) && !is_base60_float(s),
                "{s:?} should be plain"
            );
        }
    }

    #[test]
    fn keys_sort_like_go_yaml() {
        let mut k = vec![
            "key10", "key9", "b", "B", "_a", "a", "-x", ".y", "a1", "a01",
        ];
        k.sort_by(|a, b| key_order(a, b));
        assert_eq!(
            k,
            ["-x", ".y", "_a", "B", "a", "a1", "a01", "b", "key9", "key10"]
        );
    }

    #[test]
    fn escapes_like_go_yaml() {
        let v = json!({"bom": "\u{feff}x y", "emoji": "😀", "ctl": "a\u{1}\t", "zz": "x\n\n"});
        assert_eq!(
            to_yaml(&v),
            "bom: \"\\uFEFF\\x78\\x20\\x79\"\nctl: \"a\\x01\\t\"\nemoji: \"\\U0001F600\"\nzz: |+\n  x\n\n"
        );
    }

    #[test]
    fn layout_like_kubectl() {
        let v = json!({
            "metadata": {"annotations": {"m": "a\nb\n", "e": "", "s": " x"}, "list": ["y", {"k": 1.5}]},
            "items": [],
            "o": {},
        });
        assert_eq!(
            to_yaml(&v),
            "items: []\nmetadata:\n  annotations:\n    e: \"\"\n    m: |\n      a\n      b\n    s: ' x'\n  list:\n  - \"y\"\n  - k: 1.5\no: {}\n"
        );
    }
}
