//! How `get` prints Secrets: kubectl's output formats (`-o wide|yaml|json|name|jsonpath=...|
//! jsonpath-file=...|jsonpath-as-json=...|custom-columns=...|custom-columns-file=...`) and its
//! table (with `--no-headers`, `--show-labels` and `-L/--label-columns`).

use std::time::SystemTime;

use serde_json::Value;

use super::jsonpath::{self, JsonPathError, Template};
use super::output::age;
use super::CliError;
use crate::manifest;
use crate::store::Secret;

/// An output format of `get`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum GetOutput {
    /// The table with resourceVersion and immutable columns.
    Wide,
    /// The object(s) as YAML.
    Yaml,
    /// The object(s) as JSON.
    Json,
    /// `secret/NAME` per object.
    Name,
    /// A JSONPath template's text (`as_json`: each action's results as a JSON list).
    JsonPath {
        template: Template,
        text: String,
        as_json: bool,
        /// `-o`'s value, as kubectl names the printer.
        spec: String,
    },
    /// One column per `HEADER:PATH`.
    CustomColumns {
        columns: Vec<Column>,
        /// `-o`'s value, as kubectl names the printer.
        spec: String,
    },
}

impl GetOutput {
    /// The printer as kubectl names it in its errors (`-o`'s value); `None` for the table.
    pub(super) fn printer_name(&self) -> Option<String> {
        match self {
            GetOutput::Wide => None,
            GetOutput::Yaml => Some("yaml".into()),
            GetOutput::Json => Some("json".into()),
            GetOutput::Name => Some("name".into()),
            GetOutput::JsonPath { spec, .. } | GetOutput::CustomColumns { spec, .. } => {
                Some(spec.clone())
            }
        }
    }
}

/// One custom column.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Column {
    header: String,
    template: Template,
}

/// The formats `-o` takes, as kubectl lists them (those keyward has).
const FORMATS: &str =
    "custom-columns,custom-columns-file,json,jsonpath,jsonpath-as-json,jsonpath-file,name,wide,yaml";

/// Parses `-o`'s value (kubectl's messages).
pub(super) fn parse_output(s: &str) -> Result<GetOutput, String> {
    let (format, arg) = match s.split_once('=') {
        Some((f, a)) => (f, Some(a)),
        None => (s, None),
    };
    let file = |what: &str| -> Result<String, String> {
        let path = arg
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("{what} format specified but no {what} file given"))?;
        read_limited(path).map_err(|e| format!("error reading {what} {path}: {e}"))
    };
    let template = |text: String, as_json: bool| -> Result<GetOutput, String> {
        if text.is_empty() {
            return Err("template format specified but no template given".into());
        }
        let template = Template::parse(&text).map_err(|e| match e {
            JsonPathError::Parse(m) => format!("error parsing jsonpath {text}, {m}"),
            // An `{end}` without its range, found before the template runs.
            JsonPathError::Execute(m) => {
                format!("error executing jsonpath {text:?}: Error executing template: {m}")
            }
        })?;
        Ok(GetOutput::JsonPath {
            template,
            text,
            as_json,
            spec: s.to_owned(),
        })
    };
    match (format, arg) {
        ("wide", None) => Ok(GetOutput::Wide),
        ("yaml", None) => Ok(GetOutput::Yaml),
        ("json", None) => Ok(GetOutput::Json),
        ("name", None) => Ok(GetOutput::Name),
        ("jsonpath", a) => template(a.unwrap_or_default().to_owned(), false),
        ("jsonpath-as-json", a) => template(a.unwrap_or_default().to_owned(), true),
        ("jsonpath-file", _) => template(file("template")?, false),
        ("custom-columns", a) => columns(a.unwrap_or_default(), s),
        ("custom-columns-file", _) => columns_file(&file("custom-columns")?, s),
        _ => Err(format!(
            "unable to match a printer suitable for the output format \"{s}\", allowed formats are: {FORMATS}"
        )),
    }
}

/// The most a template or custom-columns file may hold (a template itself is refused beyond
/// 16 KiB).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The text of `path`, at most [`MAX_FILE_BYTES`].
fn read_limited(path: &str) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    Ok(text)
}

/// `HEADER:PATH,...`.
fn columns(spec: &str, output: &str) -> Result<GetOutput, String> {
    if spec.is_empty() {
        return Err("custom-columns format specified but no custom columns given".into());
    }
    let mut cols = Vec::new();
    for part in spec.split(',') {
        let (header, path) = part.split_once(':').ok_or_else(|| {
            format!("unexpected custom-columns spec: {part}, expected <header>:<json-path-expr>")
        })?;
        cols.push(column(header, path)?);
    }
    Ok(GetOutput::CustomColumns {
        columns: cols,
        spec: output.to_owned(),
    })
}

/// A custom-columns file: a line of headers, then a line of paths, split on blanks.
fn columns_file(text: &str, output: &str) -> Result<GetOutput, String> {
    // kubectl's words.
    const FORMAT: &str = "Expected format is one line of space separated headers, one line of space separated column specs.";
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(headers) = lines.next() else {
        return Err(format!("invalid template, missing header line. {FORMAT}"));
    };
    let Some(paths) = lines.next() else {
        return Err(format!("invalid template, missing spec line. {FORMAT}"));
    };
    let headers: Vec<&str> = headers.split_whitespace().collect();
    let paths: Vec<&str> = paths.split_whitespace().collect();
    if headers.len() != paths.len() {
        return Err(format!(
            "number of headers ({}) and field specifications ({}) don't match",
            headers.len(),
            paths.len()
        ));
    }
    let cols = headers
        .into_iter()
        .zip(paths)
        .map(|(h, p)| column(h, p))
        .collect::<Result<_, _>>()?;
    Ok(GetOutput::CustomColumns {
        columns: cols,
        spec: output.to_owned(),
    })
}

fn column(header: &str, path: &str) -> Result<Column, String> {
    let text = jsonpath::relaxed(path)?;
    let template = Template::parse(&text).map_err(|e| e.message().to_owned())?;
    Ok(Column {
        header: header.to_owned(),
        template,
    })
}

/// What a template prints for `objects`: the object itself when one was asked for by name,
/// else a `kind: List` of them (as kubectl runs it).
pub(super) fn jsonpath_text(
    output: &GetOutput,
    objects: &[Secret],
    single: bool,
) -> Result<String, CliError> {
    let root = match objects {
        [one] if single => manifest::object_value(one),
        _ => manifest::list_of(objects.iter().map(manifest::object_value).collect()),
    };
    jsonpath_value(output, &root)
}

/// What a template prints for `root` (an object, a list, or a watch event).
pub(super) fn jsonpath_value(output: &GetOutput, root: &Value) -> Result<String, CliError> {
    let GetOutput::JsonPath {
        template,
        text,
        as_json,
        ..
    } = output
    else {
        return Ok(String::new());
    };
    let printed = if *as_json {
        template.render_json(root)
    } else {
        template.render(root)
    };
    printed.map_err(|e| match e {
        JsonPathError::Execute(m) => CliError::plain(format!(
            "error: error executing jsonpath {text:?}: Error executing template: {m}"
        )),
        JsonPathError::Parse(m) => {
            CliError::plain(format!("error: error parsing jsonpath {text}, {m}"))
        }
    })
}

/// A watch event as kubectl prints it with `--output-watch-events` through JSON, YAML, JSONPath
/// and custom columns: `{"type": ..., "object": ...}`, the object with its `managedFields` when
/// it carries them (kubectl leaves them in events).
pub(super) fn event_value(kind: &str, s: &Secret) -> Value {
    serde_json::json!({"type": kind, "object": manifest::object_value(s)})
}

/// The rows of custom columns for `objects` (the header row first unless `no_headers`).
pub(super) fn custom_rows(
    cols: &[Column],
    objects: &[Secret],
    no_headers: bool,
) -> Result<Vec<Vec<String>>, CliError> {
    custom_value_rows(cols, objects.iter().map(manifest::object_value), no_headers)
}

/// The rows of custom columns for objects (or watch events) as values.
pub(super) fn custom_value_rows(
    cols: &[Column],
    objects: impl IntoIterator<Item = Value>,
    no_headers: bool,
) -> Result<Vec<Vec<String>>, CliError> {
    let mut rows = Vec::new();
    if !no_headers {
        rows.push(cols.iter().map(|c| c.header.clone()).collect());
    }
    for obj in objects {
        let mut row = Vec::new();
        for c in cols {
            let found: Vec<Value> = c
                .template
                .results(&obj)
                .map_err(|e| CliError::plain(format!("error: {}", e.message())))?
                .into_iter()
                .flatten()
                .collect();
            row.push(if found.is_empty() {
                "<none>".to_owned()
            } else {
                found
                    .iter()
                    .map(jsonpath::go_text)
                    .collect::<Vec<_>>()
                    .join(",")
            });
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The table's columns: kubectl's for Secrets (the same with `-o wide`: the Secret printer has
/// no wide columns), then one per `-L` label, then LABELS with `--show-labels`.
#[derive(Debug, Clone, Default)]
pub(super) struct Table {
    pub all_namespaces: bool,
    pub label_columns: Vec<String>,
    pub show_labels: bool,
}

impl Table {
    /// The `-L` keys (an empty one adds no column, as kubectl's).
    fn label_keys(&self) -> impl Iterator<Item = &String> {
        self.label_columns.iter().filter(|k| !k.is_empty())
    }

    /// The header row.
    pub(super) fn header(&self) -> Vec<String> {
        let mut h: Vec<String> = Vec::new();
        if self.all_namespaces {
            h.push("NAMESPACE".into());
        }
        h.extend(["NAME", "TYPE", "DATA", "AGE"].map(String::from));
        // kubectl heads a label's column with the last part of its key, upper-cased.
        for key in self.label_keys() {
            let last = key.rsplit('/').next().unwrap_or(key);
            h.push(last.to_uppercase());
        }
        if self.show_labels {
            h.push("LABELS".into());
        }
        h
    }

    /// The row of `s`.
    pub(super) fn row(&self, s: &Secret, now: SystemTime) -> Vec<String> {
        let mut r = Vec::new();
        if self.all_namespaces {
            r.push(s.metadata.namespace.clone());
        }
        r.push(s.metadata.name.clone());
        r.push(s.type_.clone());
        r.push(s.data.len().to_string());
        r.push(age(&s.metadata.creation_timestamp, now));
        for key in self.label_keys() {
            r.push(s.metadata.labels.get(key).cloned().unwrap_or_default());
        }
        if self.show_labels {
            // Sorted as `key=value` texts, as kubectl's `labels.Set.String` sorts them.
            let mut labels: Vec<String> = s
                .metadata
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort_unstable();
            r.push(if labels.is_empty() {
                "<none>".to_owned()
            } else {
                labels.join(",")
            });
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        parse_output(s).expect_err(s)
    }

    /// kubectl 1.33's messages for the same values.
    #[test]
    fn formats_and_their_errors() {
        assert_eq!(parse_output("yaml"), Ok(GetOutput::Yaml));
        assert_eq!(
            err("foo"),
            format!("unable to match a printer suitable for the output format \"foo\", allowed formats are: {FORMATS}")
        );
        assert_eq!(
            err("jsonpath"),
            "template format specified but no template given"
        );
        assert_eq!(
            err("jsonpath="),
            "template format specified but no template given"
        );
        assert_eq!(
            err("jsonpath={.metadata.name"),
            "error parsing jsonpath {.metadata.name, unclosed action"
        );
        assert_eq!(
            err("custom-columns="),
            "custom-columns format specified but no custom columns given"
        );
        assert_eq!(
            err("custom-columns=A:.metadata.name,B"),
            "unexpected custom-columns spec: B, expected <header>:<json-path-expr>"
        );
        assert_eq!(
            err("custom-columns=A:{{x}}"),
            "unexpected path string, expected a 'name1.name2' or '.name1.name2' or '{name1.name2}' or '{.name1.name2}'"
        );
        assert_eq!(err("custom-columns=A:.x["), "unterminated array");
        assert!(err("jsonpath-file=/nonexistent/t")
            .starts_with("error reading template /nonexistent/t: "));
        let big = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(big.path(), vec![b'x'; 70_000]).unwrap();
        let e = err(&format!("custom-columns-file={}", big.path().display()));
        assert!(e.ends_with("larger than 65536 bytes"), "{e}");
        let expected = "Expected format is one line of space separated headers, one line of space separated column specs.";
        assert_eq!(
            columns_file("\n\n", "f").unwrap_err(),
            format!("invalid template, missing header line. {expected}")
        );
        assert_eq!(
            columns_file("NAME TYPE\n", "f").unwrap_err(),
            format!("invalid template, missing spec line. {expected}")
        );
        assert_eq!(
            columns_file("NAME TYPE\n.metadata.name\n", "f").unwrap_err(),
            "number of headers (2) and field specifications (1) don't match"
        );
        assert!(matches!(
            columns_file("NAME TYPE\n.metadata.name .type\n", "f"),
            Ok(GetOutput::CustomColumns { .. })
        ));
        assert!(matches!(
            parse_output("jsonpath={.data}"),
            Ok(GetOutput::JsonPath { as_json: false, .. })
        ));
    }

    #[test]
    fn custom_columns_as_kubectl_prints_them() {
        let Ok(GetOutput::CustomColumns { columns: cols, .. }) = parse_output(
            "custom-columns=NAME:.metadata.name,KEYS:{.data},X:.data.*,APP:.metadata.labels.app",
        ) else {
            panic!("parse")
        };
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "default"},
            "data": {"password": "cA==", "username": "YWRtaW4="},
            "type": "Opaque",
        }))
        .unwrap();
        let rows = custom_rows(&cols, &[s], false).unwrap();
        assert_eq!(rows[0], ["NAME", "KEYS", "X", "APP"]);
        assert_eq!(
            rows[1],
            [
                "db",
                "map[password:cA== username:YWRtaW4=]",
                "cA==,YWRtaW4=",
                "<none>"
            ]
        );
    }

    #[test]
    fn label_columns_and_labels() {
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "default",
                         "labels": {"app.kubernetes.io/name": "dbx", "tier": "db"}},
            "type": "Opaque",
        }))
        .unwrap();
        let t = Table {
            label_columns: vec!["app.kubernetes.io/name".into(), "app".into()],
            show_labels: true,
            ..Table::default()
        };
        assert_eq!(
            t.header(),
            ["NAME", "TYPE", "DATA", "AGE", "NAME", "APP", "LABELS"]
        );
        let row = t.row(&s, SystemTime::now());
        assert_eq!(row[4..], ["dbx", "", "app.kubernetes.io/name=dbx,tier=db"]);
        let mut s = s;
        s.metadata.labels.insert("app".into(), "web".into());
        // "app.kubernetes.io/name=dbx" < "app=web": '.' sorts before '='.
        assert_eq!(
            t.row(&s, SystemTime::now())[6],
            "app.kubernetes.io/name=dbx,app=web,tier=db"
        );
    }
}
