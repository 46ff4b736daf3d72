//! One Kubernetes API request as the handlers see it ([`KubeRequest`]: query parameters, the
//! headers that matter, the body), the options every write shares (`dryRun`, `fieldManager`,
//! `fieldValidation`, checked as kube-apiserver checks them), field selectors, request bodies
//! in JSON, YAML or protobuf, and what a handler answers ([`Reply`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;

use super::objects::FieldValidation;
use super::status::Status;
use super::KubeError;
use crate::access::RequestContext;
use crate::names::FieldError;

/// `Content-Type` of protobuf bodies.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// An authenticated request.
#[derive(Debug)]
pub struct KubeRequest {
    /// The caller.
    pub ctx: RequestContext,
    /// The query parameters (decoded; the last value of a repeated one).
    pub query: BTreeMap<String, String>,
    /// `Content-Type`, lower-case and without parameters ("" if none).
    pub content_type: String,
    /// `Accept` ("" if none).
    pub accept: String,
    /// `User-Agent` ("" if none).
    pub user_agent: String,
    /// The body (at most the body limit).
    pub body: Bytes,
    /// What it asks for, read from its URL: what it is authorized and audited as.
    pub info: super::info::RequestInfo,
}

impl KubeRequest {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// A boolean query parameter, as kube-apiserver's parameter codec reads it ([`go_bool`]).
    pub fn flag(&self, name: &str) -> bool {
        go_bool(self.param(name))
    }

    /// An integer query parameter, as kube-apiserver's parameter codec reads it
    /// (`strconv.ParseInt` of the first value): absent is `None`; one that does not parse,
    /// the empty value included, is its 400 with Go's error.
    pub fn int64(&self, name: &str) -> Result<Option<i64>, KubeError> {
        let Some(v) = self.param(name) else {
            return Ok(None);
        };
        v.parse::<i64>().map(Some).map_err(|_| {
            let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
            let why = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                "value out of range"
            } else {
                "invalid syntax"
            };
            KubeError::BadRequest(format!(
                "strconv.ParseInt: parsing {}: {why}",
                crate::authz::go_quote(v)
            ))
        })
    }

    /// The write options of a request whose options kind is `options` (`CreateOptions`,
    /// `UpdateOptions`, `PatchOptions`).
    pub fn write_options(&self, options: &str) -> Result<WriteOptions, KubeError> {
        let mut causes = Vec::new();
        let dry_run = match self.param("dryRun") {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                causes.push(FieldError::new(
                    "dryRun",
                    format!(
                        "Unsupported value: {}: supported values: \"All\"",
                        crate::authz::go_quote(other)
                    ),
                ));
                false
            }
        };
        let validation = match self.param("fieldValidation") {
            None | Some("") | Some("Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            Some(other) => {
                causes.push(FieldError::new(
                    "fieldValidation",
                    format!(
                        "Unsupported value: {}: supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"",
                        crate::authz::go_quote(other)
                    ),
                ));
                FieldValidation::Warn
            }
        };
        let given = self.param("fieldManager").unwrap_or("").to_owned();
        if given.len() > 128 {
            causes.push(FieldError::new(
                "fieldManager",
                "Too long: must have at most 128 bytes",
            ));
        }
        // `ValidateFieldManager`: printable characters only (Go's `unicode.IsPrint`: no
        // control characters, and no white space but the ASCII space), at byte positions.
        for (at, c) in given.char_indices() {
            if c.is_control() || (c.is_whitespace() && c != ' ') {
                causes.push(FieldError::new(
                    "fieldManager",
                    format!(
                        "Invalid value: {}: invalid character U+{:04X} (at position {at})",
                        crate::authz::go_quote(&given),
                        u32::from(c)
                    ),
                ));
            }
        }
        if !causes.is_empty() {
            return Err(KubeError::Invalid {
                kind: format!("{options}.meta.k8s.io"),
                name: String::new(),
                causes,
            });
        }
        Ok(WriteOptions {
            dry_run,
            validation,
            manager_given: !given.is_empty(),
            manager: if given.is_empty() {
                manager_from_user_agent(&self.user_agent)
            } else {
                given
            },
        })
    }

    /// The body as JSON bytes: JSON (or no `Content-Type`) as it is, YAML converted, protobuf
    /// decoded (its envelope must be `kind`); anything else is 415.
    pub fn json_body(&self, kind: &str) -> Result<Vec<u8>, KubeError> {
        match self.content_type.as_str() {
            "" | "application/json" => Ok(self.body.to_vec()),
            "application/yaml" => yaml_to_json(&self.body),
            PROTOBUF => {
                let d = super::proto::decode(&self.body)?;
                if d.kind != kind {
                    return Err(KubeError::BadRequest(format!(
                        "the body of the request was a {} but a {kind} was expected",
                        d.kind
                    )));
                }
                serde_json::to_vec(&d.object).map_err(|e| KubeError::BadRequest(e.to_string()))
            }
            _ => Err(unsupported_media_type(&[
                "application/json",
                "application/yaml",
                PROTOBUF,
            ])),
        }
    }

    /// The repeated keys of a YAML body ([`repeated_keys`](super::yaml_keys::repeated_keys)),
    /// which its conversion to JSON drops, unless `validation` ignores them; none for others.
    pub fn yaml_repeated_keys(&self, validation: FieldValidation) -> Vec<String> {
        if self.content_type == "application/yaml" && validation != FieldValidation::Ignore {
            super::yaml_keys::repeated_keys(&self.body)
        } else {
            Vec::new()
        }
    }

    /// The body as a JSON value (see [`json_body`](Self::json_body)); an empty body is `null`.
    pub fn json_value(&self, kind: &str) -> Result<Value, KubeError> {
        let bytes = self.json_body(kind)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            KubeError::BadRequest(format!(
                "the body of the request could not be decoded: {}",
                crate::redact::serde_values(&e.to_string())
            ))
        })
    }
}

/// How a response body is written ([`negotiate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// JSON (also for clients that put protobuf first: every Kubernetes client that asks for
    /// protobuf takes JSON too).
    Json,
    /// YAML, kube-apiserver's: its JSON with the keys sorted, as `sigs.k8s.io/yaml` writes it.
    Yaml,
    /// Nothing in `Accept` is written here: JSON indented by two spaces, as kube-apiserver's
    /// `WriteRawJSON` writes an error (its 406, or the error it had) when negotiation fails.
    Raw,
}

/// What form of an object a client asked for (`as=` of its chosen `Accept` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The object itself.
    Object,
    /// A `meta.k8s.io` Table.
    Table,
    /// `PartialObjectMetadata`.
    Metadata,
    /// `PartialObjectMetadataList`.
    MetadataList,
}

/// [`negotiate_form`]'s output only.
pub fn negotiate(accept: &str) -> Option<Output> {
    negotiate_form(accept).map(|(output, _)| output)
}

/// kube-apiserver's output negotiation (`NegotiateOutputMediaType`) for what keyward writes:
/// the `Accept` entries in order of `q` (`q=0` refuses), the first of JSON, YAML, protobuf,
/// `application/*` or `*/*` whose transform, if any, kube-apiserver allows
/// (`AllowsMediaTypeTransform`): `as=Table` in JSON or YAML, `as=PartialObjectMetadata` or
/// `PartialObjectMetadataList` in any, each with `g=meta.k8s.io` and `v=v1` or `v1beta1`.
/// Protobuf is answered in JSON (every Kubernetes client that asks for it takes JSON too). No
/// `Accept` is JSON; none acceptable is `None` (406).
pub fn negotiate_form(accept: &str) -> Option<(Output, Form)> {
    if accept.trim().is_empty() {
        return Some((Output::Json, Form::Object));
    }
    let mut entries: Vec<(f32, &str)> = accept
        .split(',')
        .map(|entry| {
            let params = entry.split_once(';').map_or("", |(_, p)| p);
            let q = params
                .split(';')
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (q, entry)
        })
        .filter(|(q, _)| *q > 0.0)
        .collect();
    entries.sort_by(|a, b| b.0.total_cmp(&a.0));
    entries.into_iter().find_map(|(_, entry)| {
        let mut parts = entry.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let params: Vec<(&str, &str)> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        // `stream=watch` asks for the media type's stream form: YAML has none, and no other
        // stream is served.
        let stream = param("stream").filter(|s| !s.is_empty());
        if stream.is_some_and(|s| s != "watch" || media == "application/yaml") {
            return None;
        }
        let output = match media.as_str() {
            "application/yaml" => Output::Yaml,
            "application/json"
            | "application/vnd.kubernetes.protobuf"
            | "application/*"
            | "*/*" => Output::Json,
            _ => return None,
        };
        let form = match param("as") {
            None => return Some((output, Form::Object)),
            Some("Table") => Form::Table,
            Some("PartialObjectMetadata") => Form::Metadata,
            Some("PartialObjectMetadataList") => Form::MetadataList,
            Some(_) => return None,
        };
        let meta_version =
            param("g") == Some("meta.k8s.io") && matches!(param("v"), Some("v1" | "v1beta1"));
        let allowed = match form {
            Form::Table => matches!(
                media.as_str(),
                "application/json" | "application/yaml" | "application/*" | "*/*"
            ),
            _ => true,
        };
        (meta_version && allowed).then_some((output, form))
    })
}

/// `body` (JSON) as kube-apiserver writes YAML: `sigs.k8s.io/yaml`'s `JSONToYAML`, go-yaml v2's
/// layout byte for byte ([`crate::manifest::goyaml`], as kubectl prints objects). `None` if it
/// is not JSON.
pub fn json_to_yaml(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    Some(crate::manifest::goyaml::to_yaml(&value))
}

/// 415 naming the media types accepted.
pub fn unsupported_media_type(accepted: &[&str]) -> KubeError {
    KubeError::UnsupportedMediaType(format!(
        "the body of the request was in an unknown format - accepted media types include: {}",
        accepted.join(", ")
    ))
}

/// YAML bytes as JSON bytes.
pub fn yaml_to_json(body: &[u8]) -> Result<Vec<u8>, KubeError> {
    let v = yaml_value(body, "error converting YAML to JSON")?;
    serde_json::to_vec(&v).map_err(|e| KubeError::BadRequest(e.to_string()))
}

pub use crate::manifest::MAX_YAML_FLOW_DEPTH;

/// A YAML body as a JSON value; 400 with `context` before the parser's words (values redacted)
/// if it is not YAML or nests flow collections deeper than [`MAX_YAML_FLOW_DEPTH`].
pub fn yaml_value(body: &[u8], context: &str) -> Result<Value, KubeError> {
    if crate::manifest::too_deep(body).is_some() {
        return Err(KubeError::BadRequest(format!(
            "{context}: yaml: exceeded max depth of {MAX_YAML_FLOW_DEPTH}"
        )));
    }
    serde_yaml_ng::from_slice(body).map_err(|e| {
        KubeError::BadRequest(format!(
            "{context}: {}",
            crate::redact::serde_values(&e.to_string())
        ))
    })
}

/// The options of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldValidation`.
    pub validation: FieldValidation,
    /// The field manager: `fieldManager`, or the User-Agent's prefix.
    pub manager: String,
    /// Whether `fieldManager` was given.
    pub manager_given: bool,
}

/// kube-apiserver's default field manager: the User-Agent up to its first `/`, printable
/// characters only, at most 128.
pub fn manager_from_user_agent(ua: &str) -> String {
    ua.split('/')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect()
}

/// Decodes `%XX` and `+` in a query component.
pub fn percent_decode(s: &str) -> String {
    decode(s, true)
}

/// A URL path with its `%XX` escapes decoded (`+` stays), as Go's `URL.Path` holds it: what
/// kube-apiserver splits into segments and reads names from.
pub fn path_decode(s: &str) -> String {
    decode(s, false)
}

fn decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters of `query`.
pub fn parse_query(query: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in query_pairs(query) {
        // kube-apiserver's conversions read a parameter's first value.
        out.entry(k).or_insert(v);
    }
    out
}

/// Every `key=value` of a query in order, decoded (a key without `=` has an empty value).
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
}

/// `uri` with the value of each non-empty `access_token` query parameter (a bearer token in
/// the URL, which kube-apiserver's audit log records as sent) replaced by `REDACTED`: no
/// credential reaches the audit log. The parameter stays, so that the refusal still says
/// `attempted: access_token`.
pub fn redact_access_token(uri: String) -> String {
    let Some((path, query)) = uri.split_once('?') else {
        return uri;
    };
    // Nearly every request: no parameter can be `access_token` without naming it or encoding
    // a character of it.
    if !query.contains("access_token") && !query.contains('%') {
        return uri;
    }
    fn token_key(p: &str) -> Option<&str> {
        p.split_once('=')
            .filter(|(k, v)| {
                percent_decode(k) == "access_token" && !percent_decode(v).trim().is_empty()
            })
            .map(|(k, _)| k)
    }
    if !query.split('&').any(|p| token_key(p).is_some()) {
        return uri;
    }
    let query: Vec<String> = query
        .split('&')
        .map(|p| match token_key(p) {
            Some(k) => format!("{k}=REDACTED"),
            None => p.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// A boolean query parameter as kube-apiserver's parameter codec reads it
/// (`Convert_Slice_string_To_bool`): absent is false; present, anything but `0` and `false`
/// (in any case) is true, the empty value included.
pub fn go_bool(value: Option<&str>) -> bool {
    value.is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// `v` as kube-apiserver's JSON serializer writes it: compact and followed by a newline (Go's
/// `json.Encoder`), or indented by two spaces with none after (`json.MarshalIndent`, for
/// `?pretty` and when negotiation failed).
fn json_bytes<T: serde::Serialize + ?Sized>(v: &T, indent: bool) -> Bytes {
    let json = if indent {
        serde_json::to_vec_pretty(v)
    } else {
        serde_json::to_vec(v).map(|mut j| {
            j.push(b'\n');
            j
        })
    };
    Bytes::from(json.unwrap_or_default())
}

/// What a handler answers.
#[derive(Debug)]
pub enum Reply {
    /// A JSON object with this code and warnings (`Warning: 299` headers).
    Json {
        /// HTTP code.
        code: u16,
        /// The body.
        body: Value,
        /// Warnings.
        warnings: Vec<String>,
    },
    /// A Table.
    Table(Value),
    /// A Status.
    Status(Status),
    /// `429` as kube-apiserver's in-flight limits write it (`http.Error`): plain text, not a
    /// Status, with `Retry-After: 1`. client-go waits that long and retries.
    TooManyRequests,
    /// A public document, served as it is whatever `Accept` asks and cacheable for an hour
    /// (kube-apiserver's OpenID Connect discovery: `Cache-Control: public, max-age=3600`).
    Published {
        /// `Content-Type`.
        content_type: &'static str,
        /// The bytes.
        body: Bytes,
    },
    /// Fixed bytes with a code and a content type.
    Raw {
        /// HTTP code.
        code: u16,
        /// `Content-Type`.
        content_type: &'static str,
        /// The bytes.
        body: Bytes,
    },
}

/// The body of kube-apiserver's 429 (`http.Error` adds the newline).
pub const TOO_MANY_REQUESTS: &[u8] = b"Too many requests, please try again later.\n";

impl Reply {
    /// `200` with `body`.
    pub fn ok(body: Value) -> Reply {
        Reply::Json {
            code: 200,
            body,
            warnings: Vec::new(),
        }
    }

    /// (code, content type, body bytes, warnings); JSON bodies indented when `indent`.
    pub fn into_parts(self, indent: bool) -> (u16, &'static str, Bytes, Vec<String>) {
        match self {
            Reply::Json {
                code,
                body,
                warnings,
            } => (
                code,
                "application/json",
                json_bytes(&body, indent),
                warnings,
            ),
            // kube-apiserver writes a Table with its serializer's media type.
            Reply::Table(t) => (200, "application/json", json_bytes(&t, indent), Vec::new()),
            Reply::Status(s) => (
                s.http_code(),
                "application/json",
                json_bytes(&s, indent),
                Vec::new(),
            ),
            Reply::TooManyRequests => (
                429,
                "text/plain; charset=utf-8",
                Bytes::from_static(TOO_MANY_REQUESTS),
                Vec::new(),
            ),
            Reply::Raw {
                code,
                content_type,
                body,
            } => (code, content_type, body, Vec::new()),
            Reply::Published { content_type, body } => (200, content_type, body, Vec::new()),
        }
    }
}

impl Reply {
    /// kube-apiserver's plain-text 500 for a request to `uri` that failed with `why`
    /// (`responsewriters.InternalError`: `http.Error` of `Internal Server Error: %q: <why>`, `&`,
    /// `<` and `>` made HTML entities), e.g. `failed to store audit event`.
    pub fn internal_error(uri: &http::Uri, why: &str) -> Reply {
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut quoted = String::with_capacity(target.len() + 2);
        quoted.push('"');
        for c in target.chars() {
            match c {
                '"' | '\\' => {
                    quoted.push('\\');
                    quoted.push(c);
                }
                c if c.is_control() => quoted.push_str(&format!("\\x{:02x}", u32::from(c))),
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        let text = format!("Internal Server Error: {quoted}: {why}\n")
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        Reply::Raw {
            code: 500,
            content_type: "text/plain; charset=utf-8",
            body: text.into(),
        }
    }

    /// How the response ends, for the audit log.
    pub fn audit_status(&self) -> crate::audit::ResponseStatus {
        match self {
            Reply::Json { code, .. } => crate::audit::ResponseStatus::success(*code),
            Reply::Table(_) => crate::audit::ResponseStatus::success(200),
            Reply::Raw { code, .. } => crate::audit::ResponseStatus::success(*code),
            Reply::Published { .. } => crate::audit::ResponseStatus::success(200),
            Reply::Status(s) => s.audit(),
            // kube-apiserver's audit filter records the code it saw written, and no Status.
            Reply::TooManyRequests => crate::audit::ResponseStatus::success(429),
        }
    }
}

impl From<KubeError> for Reply {
    fn from(e: KubeError) -> Reply {
        Reply::Status(Status::of(&e))
    }
}

/// A `Warning` header value: `299 - "<text>"` with `"` and `\` escaped.
pub fn warning_header(text: &str) -> String {
    let mut q = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            q.push('\\');
        }
        if !c.is_control() {
            q.push(c);
        }
    }
    format!("299 - \"{q}\"")
}

#[cfg(test)]
mod tests {

    #[test]
    fn access_tokens_are_redacted_from_the_request_uri() {
        for (uri, want) in [
            (
                "/api/v1/namespaces/a/secrets",
                "/api/v1/namespaces/a/secrets",
            ),
            ("/api?limit=5", "/api?limit=5"),
            (
                "/api?access_token=s3cr3t&limit=5",
                "/api?access_token=REDACTED&limit=5",
            ),
            (
                "/api?limit=5&access%5Ftoken=s3cr3t",
                "/api?limit=5&access%5Ftoken=REDACTED",
            ),
            // Empty (after trimming): not a token, kept.
            ("/api?access_token=&x=1", "/api?access_token=&x=1"),
            ("/api?access_token=%20", "/api?access_token=%20"),
            (
                "/api?access_token=a&access_token=b",
                "/api?access_token=REDACTED&access_token=REDACTED",
            ),
        ] {
            assert_eq!(super::redact_access_token(uri.to_owned()), want, "{uri}");
        }
    }

    #[test]
    fn an_unstored_audit_event_is_kube_apiservers_internal_error() {
        let uri: http::Uri = "/api/v1/namespaces/default/secrets?labelSelector=a%3Db&limit=5"
            .parse()
            .unwrap();
        let (code, content_type, body, _) =
            super::Reply::internal_error(&uri, "failed to store audit event").into_parts(false);
        assert_eq!((code, content_type), (500, "text/plain; charset=utf-8"));
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "Internal Server Error: \"/api/v1/namespaces/default/secrets?labelSelector=a%3Db&amp;limit=5\": failed to store audit event\n"
        );
    }

    #[test]
    fn output_is_negotiated_as_kube_apiserver_negotiates_it() {
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        for (accept, want) in [
            ("", Some(Output::Json)),
            ("*/*", Some(Output::Json)),
            ("application/json, */*", Some(Output::Json)),
            (table, Some(Output::Json)),
            (
                "application/vnd.kubernetes.protobuf, application/json",
                Some(Output::Json),
            ),
            ("application/yaml", Some(Output::Yaml)),
            (
                "application/yaml;stream=watch, application/json",
                Some(Output::Json),
            ),
            ("application/json;stream=watch", Some(Output::Json)),
            ("application/json;stream=events", None),
            (
                "application/yaml;q=0.5, application/json",
                Some(Output::Json),
            ),
            (
                "application/json;q=0.1, application/yaml",
                Some(Output::Yaml),
            ),
            ("text/html", None),
            ("application/json;q=0", None),
            ("application/json;as=Foo;g=meta.k8s.io;v=v1", None),
            (
                "application/json;as=Foo;g=meta.k8s.io;v=v1, text/plain, application/yaml",
                Some(Output::Yaml),
            ),
        ] {
            assert_eq!(negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn yaml_is_the_json_with_sorted_keys() {
        let y = json_to_yaml(br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s","labels":{"b":"1","a":"2"}},"data":{"k":"dg=="}}"#).unwrap();
        assert_eq!(
            y,
            "apiVersion: v1\ndata:\n  k: dg==\nkind: Secret\nmetadata:\n  labels:\n    a: \"2\"\n    b: \"1\"\n  name: s\n"
        );
        assert!(json_to_yaml(b"not json").is_none());
        // go-yaml v2's quoting and folding: a timestamp double-quoted, a message with ": "
        // single-quoted and folded past column 80.
        let status = json_to_yaml(br#"{"metadata":{"creationTimestamp":"2026-12-03T17:00:00Z"},"message":"secrets \"cache\" is forbidden: User \"app\" cannot get resource \"secrets\" in API group \"\" in the namespace \"prod\""}"#).unwrap();
        assert_eq!(
            status,
            "message: 'secrets \"cache\" is forbidden: User \"app\" cannot get resource \"secrets\" in\n  API group \"\" in the namespace \"prod\"'\nmetadata:\n  creationTimestamp: \"2026-12-03T17:00:00Z\"\n"
        );
    }

    use super::*;

    /// Deeply nested flow collections are refused before the parser sees them; within the
    /// bound the parser's own limit applies, and ordinary bodies parse.
    #[test]
    fn yaml_nesting_is_bounded_before_parsing() {
        let nested = |n: usize| format!("a: {}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
        let err = yaml_value(&nested(100_000), "ctx").unwrap_err();
        assert_eq!(
            err.to_string(),
            KubeError::BadRequest("ctx: yaml: exceeded max depth of 1000".into()).to_string()
        );
        assert!(yaml_value(&nested(MAX_YAML_FLOW_DEPTH + 1), "ctx").is_err());
        let err = yaml_value(&nested(MAX_YAML_FLOW_DEPTH), "ctx").unwrap_err();
        assert!(
            err.to_string().contains("recursion limit exceeded"),
            "{err}"
        );
        let ok = yaml_value(
            b"kind: Secret\nmetadata: {name: x, labels: {a: '[[[{'}}\n",
            "ctx",
        )
        .unwrap();
        assert_eq!(ok["metadata"]["labels"]["a"], "[[[{");
    }

    #[test]
    fn query_and_selectors() {
        let q = parse_query("labelSelector=tier%3Dweb&limit=500&watch&x=a+b%2");
        assert_eq!(q["labelSelector"], "tier=web");
        assert_eq!(q["watch"], "");
        assert_eq!(q["x"], "a b%2");
    }

    #[test]
    fn managers_and_warnings() {
        assert_eq!(
            manager_from_user_agent("OpenAPI-Generator/37.0.2/python"),
            "OpenAPI-Generator"
        );
        assert_eq!(
            manager_from_user_agent("kubectl/v1.33.1 (linux/amd64)"),
            "kubectl"
        );
        assert_eq!(
            warning_header("unknown field \"metadata.foo\""),
            r#"299 - "unknown field \"metadata.foo\"""#
        );
    }
}
