//! kubectl's JSONPath templates (`get -o jsonpath=...`, `-o custom-columns=...`): the dialect
//! of `k8s.io/client-go/util/jsonpath`, traced against kubectl 1.33. Text outside braces is
//! printed as it is; inside, an action walks the object: `.field` (`\.` escapes a dot),
//! `['field']`, `*`, `..` (recursive descent), `[i]`, `[start:end:step]` (negative indices
//! count from the end), unions `[a,b]`, filters `[?(@.x == "y")]` (`==`, `!=`, `<`, `>`, `<=`,
//! `>=`, or `[?(@.x)]` for presence), quoted text `{"\n"}`, and `{range ...}...{end}`. A
//! missing field gives nothing (kubectl's `--allow-missing-template-keys`, on by default).
//! Several results of one action are printed space-separated; objects and lists as compact
//! JSON.
//!
//! Unlike kubectl, an error never prints the object the template ran on: it holds the
//! Secret's values.

use serde_json::Value;

use crate::manifest::gojson;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Template {
    items: Vec<Item>,
}

/// Why a template was refused or could not run, in kubectl's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JsonPathError {
    /// The template does not parse (`error parsing jsonpath TEMPLATE, ...`).
    Parse(String),
    /// It parsed but could not run on the object (`Error executing template: ...`).
    Execute(String),
}

impl JsonPathError {
    /// The message without kubectl's prefixes.
    pub(super) fn message(&self) -> &str {
        match self {
            JsonPathError::Parse(m) | JsonPathError::Execute(m) => m,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Text(String),
    Action(Vec<Node>),
    /// `{range PATH}` BODY `{end}` (a missing `{end}` closes it at the template's end).
    Range(Vec<Node>, Vec<Item>),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A quoted string, or `true`/`false`, or a number: a constant.
    Const(Value),
    Field(String),
    Wildcard,
    Recursive,
    Slice(Slice),
    Union(Vec<Vec<Node>>),
    Filter(Box<Filter>),
    /// A word that is not `range`, `end`, `true` or `false`: an error when run, as kubectl's.
    Unknown(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slice {
    start: Option<i64>,
    end: Option<i64>,
    step: Option<i64>,
    /// `[i]`: the end is `i + 1` once `i` is counted from the end.
    single: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Vec<Node>,
    /// `None`: `[?(@.x)]`, the item passes if `left` finds anything.
    op: Option<(Op, Vec<Node>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

/// What an action token stream is parsed into before ranges are nested.
enum Piece {
    Text(String),
    Action(Vec<Node>),
    Range(Vec<Node>),
    End,
}

impl Template {
    /// Parses `text`.
    pub(super) fn parse(text: &str) -> Result<Self, JsonPathError> {
        // Filters nest by recursion: a bound on the text bounds it.
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(JsonPathError::Parse(format!(
                "the template is {} bytes; at most {MAX_TEMPLATE_BYTES} are allowed",
                text.len()
            )));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let (piece, after) = parse_action(&rest[open + 1..]).map_err(JsonPathError::Parse)?;
            pieces.push(piece);
            rest = after;
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        let mut pieces = pieces.into_iter();
        let items = nest(&mut pieces, 0)?;
        Ok(Template { items })
    }

    /// Runs the template on `root`: the text kubectl's `-o jsonpath` prints.
    pub(super) fn render(&self, root: &Value) -> Result<String, JsonPathError> {
        let mut out = String::new();
        for results in self.results(root)? {
            let texts: Vec<String> = results.iter().map(text_of).collect();
            out.push_str(&texts.join(" "));
        }
        Ok(out)
    }

    /// Each action's results as an indented JSON list, one per line (`-o jsonpath-as-json`).
    pub(super) fn render_json(&self, root: &Value) -> Result<String, JsonPathError> {
        let mut out = String::new();
        for results in self.results(root)? {
            out.push_str(&gojson::indented(&Value::Array(results)));
            out.push('\n');
        }
        Ok(out)
    }

    /// The values each action (and each text) gives, in order (ranges expanded).
    pub(super) fn results(&self, root: &Value) -> Result<Vec<Vec<Value>>, JsonPathError> {
        let mut all = Vec::new();
        run(&self.items, root, &mut all).map_err(JsonPathError::Execute)?;
        Ok(all)
    }
}

/// kubectl's relaxed path of a custom column or `--sort-by`: `a.b`, `.a.b`, `{a.b}` or
/// `{.a.b}`, as the template `{.a.b}`.
pub(super) fn relaxed(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Ok(String::new());
    }
    let inner = match path.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        Some(inner) => inner,
        None => path,
    };
    let inner = inner.strip_prefix('.').unwrap_or(inner);
    if inner.is_empty() || inner.contains(['{', '}']) {
        return Err("unexpected path string, expected a 'name1.name2' or '.name1.name2' or '{name1.name2}' or '{.name1.name2}'".into());
    }
    Ok(format!("{{.{inner}}}"))
}

/// The longest template taken.
const MAX_TEMPLATE_BYTES: usize = 16 * 1024;

/// Ranges nested deeper than this are refused (each level is a level of recursion).
const MAX_RANGE_DEPTH: usize = 64;

/// Builds the items up to the `{end}` that closes the range `depth` levels deep (0: none), or
/// the template's end.
fn nest(
    pieces: &mut impl Iterator<Item = Piece>,
    depth: usize,
) -> Result<Vec<Item>, JsonPathError> {
    let in_range = depth > 0;
    let mut items = Vec::new();
    while let Some(piece) = pieces.next() {
        match piece {
            Piece::Text(t) => items.push(Item::Text(t)),
            Piece::Action(nodes) => items.push(Item::Action(nodes)),
            Piece::Range(nodes) => {
                if depth == MAX_RANGE_DEPTH {
                    return Err(JsonPathError::Parse(format!(
                        "ranges nested more than {MAX_RANGE_DEPTH} deep"
                    )));
                }
                let body = nest(pieces, depth + 1)?;
                items.push(Item::Range(nodes, body));
            }
            Piece::End if in_range => return Ok(items),
            Piece::End => {
                return Err(JsonPathError::Execute(
                    "not in range, nothing to end".into(),
                ))
            }
        }
    }
    Ok(items)
}

/// Parses one action from just after its `{`: the piece and the text after its `}`.
fn parse_action(s: &str) -> Result<(Piece, &str), String> {
    let mut nodes = Vec::new();
    let mut range = false;
    let mut end = false;
    let mut rest = s;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            let piece = if end {
                Piece::End
            } else if range {
                Piece::Range(nodes)
            } else {
                Piece::Action(nodes)
            };
            return Ok((piece, after));
        }
        if let Some(after) = rest.strip_prefix("[?(") {
            let (filter, after) = parse_filter(after)?;
            nodes.push(Node::Filter(Box::new(filter)));
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix("..") {
            if nodes.last() == Some(&Node::Recursive) {
                return Err("invalid multiple recursive descent".into());
            }
            nodes.push(Node::Recursive);
            rest = after;
            if after.starts_with(is_alphanumeric) {
                rest = parse_field(after, &mut nodes);
            }
            continue;
        }
        let mut chars = rest.chars();
        let Some(c) = chars.next() else {
            return Err("unclosed action".into());
        };
        let after = chars.as_str();
        rest = match c {
            '\r' | '\n' => return Err("unclosed action".into()),
            ' ' | '@' | '$' => after,
            '[' => parse_bracket(after, &mut nodes)?,
            '"' | '\'' => {
                let (text, after) = parse_quote(after, c)?;
                nodes.push(Node::Const(Value::String(text)));
                after
            }
            '.' => parse_field(after, &mut nodes),
            '+' | '-' | '0'..='9' => {
                let len = 1 + after
                    .find(|c: char| c != '.' && !c.is_ascii_digit())
                    .unwrap_or(after.len());
                let number = &rest[..len];
                let value = if let Ok(i) = number.parse::<i64>() {
                    Value::from(i)
                } else if let Some(f) = number
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    Value::Number(f)
                } else {
                    return Err(format!("cannot parse number {number}"));
                };
                nodes.push(Node::Const(value));
                &rest[len..]
            }
            c if is_alphanumeric(c) => {
                let len = rest.find(is_terminator).unwrap_or(rest.len());
                match &rest[..len] {
                    "range" => range = true,
                    "end" => end = true,
                    "true" => nodes.push(Node::Const(Value::Bool(true))),
                    "false" => nodes.push(Node::Const(Value::Bool(false))),
                    word => nodes.push(Node::Unknown(word.to_owned())),
                }
                &rest[len..]
            }
            c => {
                return Err(format!(
                    "unrecognized character in action: U+{:04X} '{c}'",
                    u32::from(c)
                ))
            }
        };
    }
}

fn is_alphanumeric(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Where a field name ends.
fn is_terminator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\r' | '\n' | '.' | ',' | '[' | ']' | '$' | '@' | '{' | '}'
    )
}

/// A field name up to the next unescaped terminator (`*`: every member).
fn parse_field<'a>(s: &'a str, nodes: &mut Vec<Node>) -> &'a str {
    let mut name = String::new();
    let mut chars = s.char_indices();
    let mut end = s.len();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            if let Some((_, escaped)) = chars.next() {
                name.push(escaped);
            }
        } else if is_terminator(c) {
            end = i;
            break;
        } else {
            name.push(c);
        }
    }
    nodes.push(if name == "*" {
        Node::Wildcard
    } else {
        Node::Field(name)
    });
    &s[end..]
}

/// What follows a `[`: a union, a `'key'`, an index or a slice.
fn parse_bracket<'a>(s: &'a str, nodes: &mut Vec<Node>) -> Result<&'a str, String> {
    let close = s.find([']', '\n']).filter(|&i| s.as_bytes()[i] == b']');
    let Some(close) = close else {
        return Err("unterminated array".into());
    };
    let text = match &s[..close] {
        "*" => ":",
        t => t,
    };
    let after = &s[close + 1..];
    if text.contains(',') {
        let mut union = Vec::new();
        for part in text.split(',') {
            let mut alt = Vec::new();
            let one = format!("{}]", part.trim_matches(' '));
            if !parse_bracket(&one, &mut alt)?.is_empty() {
                return Err(format!("invalid array index {part}"));
            }
            union.push(alt);
        }
        nodes.push(Node::Union(union));
        return Ok(after);
    }
    if let Some(key) = text
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .filter(|k| !k.contains('\''))
    {
        // kubectl reads `['a.b']` as `.a.b`.
        let action = format!(".{key}}}");
        match parse_action(&action)? {
            (Piece::Action(inner), "") => nodes.extend(inner),
            _ => return Err(format!("invalid array index {text}")),
        }
        return Ok(after);
    }
    nodes.push(Node::Slice(parse_slice(text)?));
    Ok(after)
}

/// `i`, `start:end` or `start:end:step`, each part optional and possibly negative.
fn parse_slice(text: &str) -> Result<Slice, String> {
    let invalid = || format!("invalid array index {text}");
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() > 3 {
        return Err(invalid());
    }
    let mut values = [None; 3];
    for (i, part) in parts.iter().enumerate() {
        let digits = part.strip_prefix('-').unwrap_or(part);
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        if !digits.is_empty() {
            values[i] = Some(
                part.parse::<i64>()
                    .map_err(|_| format!("array index {part} is not a number"))?,
            );
        } else if !part.is_empty() {
            // A lone `-`.
            return Err(invalid());
        }
    }
    Ok(Slice {
        start: values[0],
        end: values[1],
        step: values[2],
        single: parts.len() == 1,
    })
}

/// A quoted string (after its opening quote `q`), with Go's escapes.
fn parse_quote(s: &str, q: char) -> Result<(String, &str), String> {
    // kubectl's lexer: the literal ends at the first quote not right after a backslash.
    let mut prev = '\0';
    let mut close = None;
    for (i, c) in s.char_indices() {
        match c {
            '\n' => break,
            c if c == q && prev != '\\' => {
                close = Some(i);
                break;
            }
            _ => {}
        }
        prev = c;
    }
    let Some(close) = close else {
        return Err("unterminated quoted string".into());
    };
    let body = &s[..close];
    let invalid = || format!("unquote string {q}{body}{q} error invalid syntax");
    // Go's `strconv.Unquote` of the literal.
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = chars.next().ok_or_else(invalid)?;
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            '\\' => out.push('\\'),
            // A quote is escaped only in a literal it would end.
            e if e == q => out.push(e),
            'x' | 'u' | 'U' | '0'..='7' => {
                let (n, radix) = match e {
                    'x' => (2, 16),
                    'u' => (4, 16),
                    'U' => (8, 16),
                    _ => (2, 8),
                };
                let mut digits: String = if radix == 8 {
                    e.to_string()
                } else {
                    String::new()
                };
                digits.extend(chars.by_ref().take(n));
                let want = if radix == 8 { 3 } else { n };
                let value = u32::from_str_radix(&digits, radix)
                    .ok()
                    .filter(|_| digits.len() == want)
                    .filter(|v| radix == 16 || *v <= 0xff)
                    .ok_or_else(invalid)?;
                out.push(char::from_u32(value).ok_or_else(invalid)?);
            }
            _ => return Err(invalid()),
        }
    }
    Ok((out, &s[close + q.len_utf8()..]))
}

/// `[?( ... )]` after its `[?(`: the filter and the text after its `]`.
fn parse_filter(s: &str) -> Result<(Filter, &str), String> {
    let mut quote: Option<char> = None;
    let mut close = None;
    let mut prev = '\0';
    for (i, c) in s.char_indices() {
        match c {
            '\n' => break,
            '"' | '\'' if quote.is_none() => quote = Some(c),
            c if Some(c) == quote && prev != '\\' => quote = None,
            ')' if quote.is_none() => {
                close = Some(i);
                break;
            }
            _ => {}
        }
        prev = c;
    }
    let Some(close) = close else {
        return Err("unterminated filter".into());
    };
    let Some(after) = s[close + 1..].strip_prefix(']') else {
        return Err("unclosed array expect ]".into());
    };
    let text = &s[..close];
    let sub = |t: &str| -> Result<Vec<Node>, String> {
        match parse_action(&format!("{t}}}"))? {
            (Piece::Action(nodes), "") => Ok(nodes),
            _ => Err(format!("invalid filter {text}")),
        }
    };
    // The operator: the first run of `!<>=` after some text, as kubectl's expression.
    let op_at = text
        .char_indices()
        .find(|&(i, c)| i > 0 && "!<>=".contains(c))
        .map(|(i, _)| i);
    let filter = match op_at {
        Some(i) => {
            let op_len = text[i..]
                .find(|c: char| !"!<>=".contains(c))
                .unwrap_or(text.len() - i);
            let right = &text[i + op_len..];
            if right.is_empty() {
                return Err(format!("invalid filter {text}"));
            }
            let op = match &text[i..i + op_len] {
                "==" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                ">" => Op::Gt,
                "<=" => Op::Le,
                ">=" => Op::Ge,
                other => return Err(format!("unrecognized filter operator {other}")),
            };
            Filter {
                left: sub(&text[..i])?,
                op: Some((op, sub(right)?)),
            }
        }
        None => Filter {
            left: sub(text)?,
            op: None,
        },
    };
    Ok((filter, after))
}

/// Runs `items` on `root`, appending each action's results (and each text) to `all`.
fn run(items: &[Item], root: &Value, all: &mut Vec<Vec<Value>>) -> Result<(), String> {
    for item in items {
        match item {
            Item::Text(t) => all.push(vec![Value::String(t.clone())]),
            Item::Action(nodes) => all.push(walk(nodes, vec![root])?),
            Item::Range(nodes, body) => {
                for value in walk(nodes, vec![root])? {
                    run(body, &value, all)?;
                }
            }
        }
    }
    Ok(())
}

/// Applies `nodes` in turn to the values in hand.
fn walk(nodes: &[Node], input: Vec<&Value>) -> Result<Vec<Value>, String> {
    let mut cur: Vec<Value> = input.into_iter().cloned().collect();
    for node in nodes {
        cur = step(node, cur)?;
    }
    Ok(cur)
}

fn step(node: &Node, input: Vec<Value>) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    match node {
        Node::Const(v) => out = vec![v.clone(); input.len()],
        Node::Unknown(word) => return Err(format!("unrecognized identifier {word}")),
        Node::Field(name) => {
            for v in input {
                if let Value::Object(mut m) = v {
                    if let Some(found) = m.shift_remove(name) {
                        out.push(found);
                    }
                }
            }
        }
        Node::Wildcard => input.into_iter().for_each(|v| out.extend(children(v))),
        Node::Recursive => input.into_iter().for_each(|v| descend(v, &mut out)),
        Node::Slice(s) => {
            for v in input {
                match v {
                    Value::Null => {}
                    Value::Array(items) => out.extend(slice(items, *s)?),
                    other => return Err(format!("{} is not array or slice", go_type(&other))),
                }
            }
        }
        Node::Union(alts) => {
            for alt in alts {
                out.extend(walk(alt, input.iter().collect())?);
            }
        }
        Node::Filter(f) => {
            for v in input {
                let items = match v {
                    Value::Array(items) => items,
                    other => {
                        return Err(format!(
                            "{} is not array or slice and cannot be filtered",
                            go_text(&other)
                        ))
                    }
                };
                for item in items {
                    if passes(f, &item)? {
                        out.push(item);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Members of an object (in key order, as Go's maps have none to keep), items of a list,
/// bytes of a string.
fn children(v: Value) -> Vec<Value> {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries.into_iter().map(|(_, v)| v).collect()
        }
        Value::Array(items) => items,
        Value::String(s) => s.bytes().map(Value::from).collect(),
        _ => Vec::new(),
    }
}

/// `v` and everything under it that has members, depth first (kubectl's `..`).
fn descend(v: Value, out: &mut Vec<Value>) {
    let kids = children(v.clone());
    if kids.is_empty() {
        return;
    }
    out.push(v);
    for kid in kids {
        descend(kid, out);
    }
}

fn slice(items: Vec<Value>, s: Slice) -> Result<Vec<Value>, String> {
    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
    // Saturating: indices are whatever the template says, up to i64's ends.
    let mut start = s.start.unwrap_or(0);
    if start < 0 {
        start = start.saturating_add(len);
    }
    if s.single && !(0..len).contains(&start) {
        return Err(format!(
            "array index out of bounds: index {start}, length {len}"
        ));
    }
    let mut end = if s.single {
        start + 1
    } else {
        s.end.unwrap_or(len)
    };
    if end < 0 {
        end = end.saturating_add(len);
    }
    if end != start {
        if start < 0 || start >= len {
            return Err(format!(
                "array index out of bounds: index {start}, length {len}"
            ));
        }
        if end > len || end < 0 {
            return Err(format!(
                "array index out of bounds: index {}, length {len}",
                end.saturating_sub(1)
            ));
        }
    }
    if start > end {
        return Err(format!(
            "starting index {start} is greater than ending index {end}"
        ));
    }
    let step = s.step.unwrap_or(1);
    if step <= 0 {
        return Err("step must be > 0".into());
    }
    let (start, end, step) = (
        usize::try_from(start).unwrap_or(0),
        usize::try_from(end).unwrap_or(0),
        usize::try_from(step).unwrap_or(1),
    );
    Ok(items
        .into_iter()
        .skip(start)
        .take(end.saturating_sub(start))
        .step_by(step)
        .collect())
}

fn passes(f: &Filter, item: &Value) -> Result<bool, String> {
    let lefts = walk(&f.left, vec![item])?;
    let Some((op, right)) = &f.op else {
        return Ok(!lefts.is_empty());
    };
    // A missing field makes no comparison (kubectl lets it through as "no match").
    if lefts.is_empty() {
        return Ok(false);
    }
    let rights = walk(right, vec![item])?;
    let (left, right) = match (lefts.as_slice(), rights.as_slice()) {
        ([l], [r]) => (l, r),
        _ => return Err("can only compare one element at a time".into()),
    };
    let order = match (left, right) {
        (Value::String(l), Value::String(r)) => Some(l.cmp(r)),
        (Value::Number(l), Value::Number(r)) => l
            .as_f64()
            .zip(r.as_f64())
            .and_then(|(l, r)| l.partial_cmp(&r)),
        (Value::Bool(l), Value::Bool(r)) if matches!(op, Op::Eq | Op::Ne) => Some(l.cmp(r)),
        _ => None,
    };
    let Some(order) = order else {
        return Err("incompatible types for comparison".into());
    };
    use std::cmp::Ordering::*;
    Ok(match op {
        Op::Eq => order == Equal,
        Op::Ne => order != Equal,
        Op::Lt => order == Less,
        Op::Gt => order == Greater,
        Op::Le => order != Greater,
        Op::Ge => order != Less,
    })
}

/// How `-o jsonpath` prints one result: strings as they are, objects and lists as compact JSON
/// (keys in order), numbers and booleans as Go prints them.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(_) | Value::Array(_) => gojson::compact(v),
        other => go_text(other),
    }
}

/// A value as Go's `fmt` prints a decoded JSON value (`%v`): what a custom column shows.
pub(super) fn go_text(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_float(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_text).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let parts: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", go_text(v)))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// The Go type a decoded JSON value has, as an error names it.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// A float as Go's `%v` writes it: the shortest digits, with an exponent below 1e-4 or from
/// 1e21 on... as `strconv.FormatFloat(f, 'g', -1, 64)`: from 1e6 on.
fn go_float(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    // Rust's `{:e}` gives the shortest digits: "1.5e6", "-1e-5".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"kind": "Secret", "metadata": {"name": "db", "namespace": "default"},
                 "data": {"password": "cA==", "username": "YWRtaW4="}, "type": "Opaque"},
                {"kind": "Secret", "metadata": {"name": "ssa", "labels": {"app": "web", "tier": "db"}},
                 "data": {"a": "Yg=="}, "type": "Opaque", "immutable": true},
            ],
            "metadata": {"resourceVersion": ""},
        })
    }

    fn render(t: &str, v: &Value) -> Result<String, JsonPathError> {
        Template::parse(t)?.render(v)
    }

    fn ok(t: &str) -> String {
        render(t, &list()).unwrap_or_else(|e| panic!("{t}: {e:?}"))
    }

    fn exec_err(t: &str) -> String {
        match render(t, &list()) {
            Err(JsonPathError::Execute(m)) => m,
            other => panic!("{t}: {other:?}"),
        }
    }

    fn parse_err(t: &str) -> String {
        match Template::parse(t) {
            Err(JsonPathError::Parse(m)) => m,
            other => panic!("{t}: {other:?}"),
        }
    }

    /// Each expected text is what kubectl 1.33 printed for the same template and objects.
    #[test]
    fn prints_what_kubectl_prints() {
        let cases = [
            ("{.items[*].metadata.name}", "db ssa"),
            (
                "{range .items[*]}{.metadata.name}{\"\\t\"}{.type}{\"\\n\"}{end}",
                "db\tOpaque\nssa\tOpaque\n",
            ),
            (
                "{range .items[*]}{.metadata.name}{\"\\n\"}{end}TAIL{.kind}",
                "db\nssa\nTAILList",
            ),
            (
                "HEAD{range .items[*]}[{.metadata.name}]{end}",
                "HEAD[db][ssa]",
            ),
            (
                "{range .items[*]}{range .data.*}<{@}>{end};{end}",
                "<cA==><YWRtaW4=>;<Yg==>;",
            ),
            ("{range .items[*]}{.metadata.name} {end}", "db ssa "),
            ("{range .items[*]}{.metadata.name}", "dbssa"),
            (
                "{.items[0].data}",
                "{\"password\":\"cA==\",\"username\":\"YWRtaW4=\"}",
            ),
            (
                "{.items[*].data}",
                "{\"password\":\"cA==\",\"username\":\"YWRtaW4=\"} {\"a\":\"Yg==\"}",
            ),
            ("{.nothere}", ""),
            ("{.items[0].data.nothere}", ""),
            (
                "name: {.items[0].metadata.name} ns {.items[0].metadata.namespace}",
                "name: db ns default",
            ),
            (
                "{.items[?(@.metadata.name==\"db\")].data.username}",
                "YWRtaW4=",
            ),
            ("{.items[?(@.metadata.name<\"e\")].metadata.name}", "db"),
            ("{.items[?(@.type!=\"x\")].metadata.name}", "db ssa"),
            ("{.items[?(@.metadata.labels.app)].metadata.name}", "ssa"),
            ("{.items[?(@.x==1)].metadata.name}", ""),
            ("{..kind}", "List Secret Secret"),
            ("{.items[1].metadata.labels.*}", "web db"),
            ("{.items[1].metadata.labels['app','tier']}", "web db"),
            ("{.items[*]['metadata.name']}", "db ssa"),
            ("{.items[-1:].metadata.name}", "ssa"),
            ("{.items[-1].metadata.name}", "ssa"),
            ("{.items[0:0].metadata.name}", ""),
            ("{.items[2:].metadata.name}", ""),
            ("{.items[0:2:2].metadata.name}", "db"),
            ("{.items[0, 1].metadata.name}", "db ssa"),
            ("{$.kind}", "List"),
            ("{.kind}{.apiVersion}", "Listv1"),
            ("{.kind.x}", ""),
            ("{.kind.*}", "76 105 115 116"),
            ("{.kind} {\"a\\tb\"} {'x'}", "List a\tb x"),
            ("{\"\\101\"}{\"\\x42\"}{'\\''}{\"\\u00e9\"}", "AB'é"),
            ("{ .kind }", "List"),
            ("{.kind}}", "List}"),
            ("{true}", "true"),
            ("{3}", "3"),
            ("{.metadata.resourceVersion}", ""),
            ("{.items[1].immutable}", "true"),
            ("no braces", "no braces"),
        ];
        for (t, want) in cases {
            assert_eq!(ok(t), want, "{t}");
        }
    }

    #[test]
    fn errors_are_kubectls() {
        assert_eq!(parse_err("{.metadata.name"), "unclosed action");
        assert_eq!(
            parse_err("{{.kind}}"),
            "unrecognized character in action: U+007B '{'"
        );
        assert_eq!(parse_err("{.items[x]}"), "invalid array index x");
        assert_eq!(
            parse_err("{.items[ 0 ].metadata.name}"),
            "invalid array index  0 "
        );
        assert_eq!(
            parse_err("{.items[0,1].metadata[\"name\"]}"),
            "invalid array index \"name\""
        );
        assert_eq!(parse_err("{.x["), "unterminated array");
        assert_eq!(parse_err("{\"abc}"), "unterminated quoted string");
        // kubectl's lexer and Go's unquoting: a quote after a backslash does not end the
        // literal; `\'` is no escape in a double-quoted one.
        assert_eq!(parse_err("{\"\\\\\"}"), "unterminated quoted string");
        assert_eq!(
            parse_err("{\"\\'\"}"),
            "unquote string \"\\'\" error invalid syntax"
        );
        assert_eq!(
            parse_err("{\"\\x\"}"),
            "unquote string \"\\x\" error invalid syntax"
        );
        assert_eq!(parse_err("{.items[?(@.a==\"b\"}"), "unterminated filter");
        assert_eq!(parse_err("{....a}"), "invalid multiple recursive descent");
        assert_eq!(exec_err("{end}"), "not in range, nothing to end");
        assert_eq!(
            exec_err("{.items[*].metadata.name}{end}"),
            "not in range, nothing to end"
        );
        assert_eq!(exec_err("{foo}"), "unrecognized identifier foo");
        assert_eq!(
            parse_err(&"{range .items[*]}".repeat(100)),
            "ranges nested more than 64 deep"
        );
        assert_eq!(
            parse_err(&format!("{{.items{}}}", "[?(@".repeat(10_000))),
            "the template is 40008 bytes; at most 16384 are allowed"
        );
        // Filters nested as deep as the bound allows parse (or fail) without a stack overflow.
        let deep = format!("{{.items{}}}", "[?(@.a".repeat(2_700));
        assert!(Template::parse(&deep).is_err());
        assert_eq!(
            exec_err("{.items[5].metadata.name}"),
            "array index out of bounds: index 5, length 2"
        );
        assert_eq!(
            exec_err("{.items[-5].metadata.name}"),
            "array index out of bounds: index -3, length 2"
        );
        assert_eq!(
            exec_err("{.items[:5].metadata.name}"),
            "array index out of bounds: index 4, length 2"
        );
        assert_eq!(
            exec_err("{.items[1:0].metadata.name}"),
            "starting index 1 is greater than ending index 0"
        );
        assert_eq!(exec_err("{.items[::-1].metadata.name}"), "step must be > 0");
        // Indices at i64's ends are errors, not overflows.
        assert_eq!(
            exec_err("{.items[9223372036854775807]}"),
            "array index out of bounds: index 9223372036854775807, length 2"
        );
        assert_eq!(
            exec_err("{.items[:-9223372036854775808]}"),
            "array index out of bounds: index -9223372036854775807, length 2"
        );
        assert_eq!(
            parse_err("{.items[99999999999999999999]}"),
            "array index 99999999999999999999 is not a number"
        );
        assert_eq!(exec_err("{.kind[0]}"), "string is not array or slice");
        assert_eq!(
            exec_err("{.items[0].data[0]}"),
            "map[string]interface {} is not array or slice"
        );
    }

    #[test]
    fn as_json_and_as_go_text() {
        let t = Template::parse("{.items[*].metadata.name}").unwrap();
        assert_eq!(
            t.render_json(&list()).unwrap(),
            "[\n    \"db\",\n    \"ssa\"\n]\n"
        );
        let t = Template::parse("{.nothing}").unwrap();
        assert_eq!(t.render_json(&list()).unwrap(), "[]\n");
        assert_eq!(
            go_text(&json!({"b": {"c": [1, "x"]}, "a": "Yg=="})),
            "map[a:Yg== b:map[c:[1 x]]]"
        );
        for (f, want) in [
            (3.0, "3"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.5, "0.5"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
        ] {
            assert_eq!(go_float(f), want, "{f}");
        }
    }

    #[test]
    fn relaxed_paths() {
        for p in [
            ".metadata.name",
            "metadata.name",
            "{metadata.name}",
            "{.metadata.name}",
        ] {
            assert_eq!(relaxed(p).unwrap(), "{.metadata.name}", "{p}");
        }
        assert!(relaxed("{{x}}").is_err());
        assert!(relaxed(".").is_err());
    }

    /// Templates drawn from the language's pieces, at random: parsing and running them gives
    /// text or an error, never a panic or a hang.
    #[test]
    fn random_templates_never_panic() {
        const PIECES: [&str; 34] = [
            "{",
            "}",
            ".",
            "..",
            "[",
            "]",
            "*",
            "[?(",
            ")",
            "@",
            "$",
            "'",
            "\"",
            ",",
            ":",
            "-",
            "1",
            "0",
            "9223372036854775807",
            "items",
            "metadata",
            "name",
            "labels",
            "range",
            "end",
            "==",
            "<",
            "!=",
            "\\",
            " ",
            "x",
            "é",
            "\n",
            "true",
        ];
        let root = list();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            let mut t = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for i in 0..(x % 24) {
                let r = x.rotate_left((i * 5) as u32) ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                t.push_str(PIECES[(r % PIECES.len() as u64) as usize]);
            }
            if let Ok(template) = Template::parse(&t) {
                let _ = template.render(&root);
                let _ = template.render_json(&root);
            }
            let _ = relaxed(&t);
        }
    }
}
