//! `kubectl apply -k` for Secrets: a kustomization's resources and secretGenerator, with
//! kustomize's (v5) generator semantics (env files, literals, files, options, generatorOptions)
//! and the name-suffix hash kustomize computes, so generated names match `kubectl kustomize`.
//!
//! Supported: `resources` (plain manifest files in or below the kustomization's directory),
//! `namespace`, `secretGenerator` (behavior `create` only: bases and overlays are not
//! supported) and `generatorOptions`. Any other kustomize field is refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{codec, files, ManifestError, SourcedSecret};
use crate::crypto;
use crate::store::model::SecretBytes;
use crate::store::Secret;

const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];
const SUPPORTED: &str =
    "apiVersion, kind, metadata, resources, namespace, secretGenerator, generatorOptions";
/// Kustomization fields kustomize knows that keyward does not implement.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "bases",
    "buildMetadata",
    "commonAnnotations",
    "commonLabels",
    "components",
    "configMapGenerator",
    "configurations",
    "crds",
    "generators",
    "helmChartInflationGenerator",
    "helmCharts",
    "helmGlobals",
    "images",
    "labels",
    "namePrefix",
    "nameSuffix",
    "openapi",
    "patches",
    "patchesJson6902",
    "patchesStrategicMerge",
    "replacements",
    "replicas",
    "sortOptions",
    "transformers",
    "validators",
    "vars",
];

/// Generator options (`options` of a generator, or top-level `generatorOptions`).
#[derive(Debug, Default, Clone)]
struct Options {
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    disable_name_suffix_hash: bool,
    immutable: bool,
}

/// kustomize's `MergeGlobalOptionsIntoLocal`: local labels and annotations win over global
/// ones of the same key; a global `true` wins over a local `false`.
fn merge_options(local: Option<Options>, global: Option<&Options>) -> Options {
    let mut l = local.unwrap_or_default();
    let Some(g) = global else {
        return l;
    };
    for (mine, theirs) in [
        (&mut l.labels, &g.labels),
        (&mut l.annotations, &g.annotations),
    ] {
        match (mine.as_mut(), theirs) {
            (None, Some(t)) => *mine = Some(t.clone()),
            (Some(m), Some(t)) => {
                for (k, v) in t {
                    m.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            _ => {}
        }
    }
    l.disable_name_suffix_hash |= g.disable_name_suffix_hash;
    l.immutable |= g.immutable;
    l
}

/// Errors about the kustomization file name it.
struct Ctx {
    file: String,
    /// The directory as given (for messages).
    dir: PathBuf,
    /// The directory with symlinks resolved (for the in-or-below check).
    root: PathBuf,
}

impl Ctx {
    fn err(&self, at: &str, msg: impl std::fmt::Display) -> ManifestError {
        ManifestError::Kustomization {
            file: self.file.clone(),
            field: at.to_owned(),
            problem: msg.to_string(),
        }
    }

    fn check_fields(
        &self,
        m: &Map<String, Value>,
        allowed: &[&str],
        at: &str,
    ) -> Result<(), ManifestError> {
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(self.err(
                    at,
                    format!("unknown field {k:?} (known: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn string(
        &self,
        m: &Map<String, Value>,
        key: &str,
        at: &str,
    ) -> Result<Option<String>, ManifestError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(&join(at, key), "must be a string")),
        }
    }

    fn strings(
        &self,
        m: &Map<String, Value>,
        key: &str,
        at: &str,
    ) -> Result<Vec<String>, ManifestError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(self.err(&format!("{}[{i}]", join(at, key)), "must be a string")),
                })
                .collect(),
            Some(_) => Err(self.err(&join(at, key), "must be a list of strings")),
        }
    }

    fn string_map(
        &self,
        m: &Map<String, Value>,
        key: &str,
        at: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ManifestError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => o
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(self.err(
                        &format!("{}.{k}", join(at, key)),
                        "must be a string (quote it)",
                    )),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(self.err(&join(at, key), "must be a map of strings")),
        }
    }

    fn boolean(&self, m: &Map<String, Value>, key: &str, at: &str) -> Result<bool, ManifestError> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.err(&join(at, key), "must be true or false")),
        }
    }

    fn object<'v>(
        &self,
        v: &'v Value,
        at: &str,
    ) -> Result<Option<&'v Map<String, Value>>, ManifestError> {
        match v {
            Value::Null => Ok(None),
            Value::Object(o) => Ok(Some(o)),
            _ => Err(self.err(at, "must be a map")),
        }
    }

    fn options(&self, v: Option<&Value>, at: &str) -> Result<Option<Options>, ManifestError> {
        let Some(o) = v.map(|v| self.object(v, at)).transpose()?.flatten() else {
            return Ok(None);
        };
        self.check_fields(
            o,
            &[
                "labels",
                "annotations",
                "disableNameSuffixHash",
                "immutable",
            ],
            at,
        )?;
        Ok(Some(Options {
            labels: self.string_map(o, "labels", at)?,
            annotations: self.string_map(o, "annotations", at)?,
            disable_name_suffix_hash: self.boolean(o, "disableNameSuffixHash", at)?,
            immutable: self.boolean(o, "immutable", at)?,
        }))
    }

    /// A file named in the kustomization: relative to its directory, and (as kustomize's
    /// default load restrictions) in or below it.
    fn load(&self, rel: &str, at: &str) -> Result<(PathBuf, Vec<u8>), ManifestError> {
        let path = self.dir.join(rel);
        let real = std::fs::canonicalize(&path)
            .map_err(|e| self.err(at, format!("{}: {e}", path.display())))?;
        if !real.starts_with(&self.root) {
            return Err(self.err(
                at,
                format!(
                    "security; file '{}' is not in or below '{}'",
                    real.display(),
                    self.root.display()
                ),
            ));
        }
        if real.is_dir() {
            return Err(self.err(
                at,
                format!("{} is a directory; keyward reads only files here (nested kustomizations are not supported)", path.display()),
            ));
        }
        let data =
            std::fs::read(&real).map_err(|e| self.err(at, format!("{}: {e}", path.display())))?;
        Ok((path, data))
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// Reads `dir`'s kustomization and returns its Secrets in kustomize's output order.
pub fn build(dir: &Path) -> Result<Vec<SourcedSecret>, ManifestError> {
    if !dir.is_dir() {
        return Err(ManifestError::NotKustomizeDir {
            dir: dir.to_owned(),
        });
    }
    let found: Vec<PathBuf> = FILE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.is_file())
        .collect();
    let file = match found.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(ManifestError::NoKustomization {
                dir: dir.to_owned(),
            })
        }
        _ => {
            return Err(ManifestError::SeveralKustomizations {
                dir: dir.to_owned(),
            })
        }
    };
    let root = std::fs::canonicalize(dir).map_err(|source| ManifestError::KustomizeDir {
        dir: dir.to_owned(),
        source,
    })?;
    let ctx = Ctx {
        file: file.display().to_string(),
        dir: dir.to_owned(),
        root,
    };
    let text = files::read_text(&file)?;
    let value: Value = if text.trim().is_empty() {
        Value::Null
    } else if super::too_deep(text.as_bytes()).is_some() {
        let max = super::MAX_YAML_FLOW_DEPTH;
        return Err(ctx.err("", format!("not valid YAML: exceeded max depth of {max}")));
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| ctx.err("", format!("not valid YAML: {e}")))?
    };
    // An empty kustomization generates nothing (apply then reports no objects).
    let empty = Map::new();
    let top = ctx.object(&value, "")?.unwrap_or(&empty);
    for k in top.keys() {
        if KNOWN_UNSUPPORTED.contains(&k.as_str()) {
            return Err(ctx.err(
                "",
                format!(
                    "field {k:?} is not supported by keyward apply -k (supported: {SUPPORTED})"
                ),
            ));
        }
    }
    ctx.check_fields(
        top,
        &[
            "apiVersion",
            "kind",
            "metadata",
            "resources",
            "namespace",
            "secretGenerator",
            "generatorOptions",
        ],
        "",
    )?;
    if let Some(v) = ctx.string(top, "apiVersion", "")? {
        if v != "kustomize.config.k8s.io/v1beta1" {
            return Err(ctx.err(
                "apiVersion",
                format!("{v:?}: expected \"kustomize.config.k8s.io/v1beta1\""),
            ));
        }
    }
    if let Some(k) = ctx.string(top, "kind", "")? {
        if k != "Kustomization" {
            return Err(ctx.err("kind", format!("{k:?}: expected \"Kustomization\"")));
        }
    }
    let namespace = ctx.string(top, "namespace", "")?.unwrap_or_default();
    let global = ctx.options(top.get("generatorOptions"), "generatorOptions")?;

    // Each object with the name kustomize identifies it by (before any hash suffix).
    let mut objs: Vec<(SourcedSecret, String)> = Vec::new();
    for (i, r) in ctx.strings(top, "resources", "")?.iter().enumerate() {
        let at = format!("resources[{i}]");
        if r.contains("://") || r.starts_with("github.com/") {
            return Err(ctx.err(&at, format!("{r:?}: remote resources are not supported")));
        }
        let (path, raw) = ctx.load(r, &at)?;
        let source = path.display().to_string();
        let text = String::from_utf8(raw)
            .map_err(|_| ctx.err(&at, format!("{source}: not UTF-8 text")))?;
        for secret in codec::parse(&text, &source)? {
            let id = secret.metadata.name.clone();
            let source = source.clone();
            objs.push((SourcedSecret::new(secret, source), id));
        }
    }
    let gens = match top.get("secretGenerator") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ctx.err("secretGenerator", "must be a list")),
    };
    for (i, g) in gens.iter().enumerate() {
        let at = format!("secretGenerator[{i}]");
        let (secret, id) = generate(&ctx, g, &at, global.as_ref())?;
        let source = format!("{} ({at})", ctx.file);
        objs.push((SourcedSecret::new(secret, source), id));
    }
    if !namespace.is_empty() {
        for (it, _) in &mut objs {
            it.secret.metadata.namespace = namespace.clone();
        }
    }
    // kustomize refuses two objects with one id.
    let mut seen = std::collections::BTreeSet::new();
    for (it, id) in &objs {
        let ns = &it.secret.metadata.namespace;
        if !seen.insert((ns.clone(), id.clone())) {
            return Err(ctx.err(
                "",
                format!("Secret {id:?} (namespace {ns:?}) is defined twice"),
            ));
        }
    }
    let mut items: Vec<SourcedSecret> = objs.into_iter().map(|(it, _)| it).collect();
    // kustomize's legacy output order: by namespace (none sorts last) then name.
    items.sort_by_cached_key(|it| {
        let m = &it.secret.metadata;
        let ns = if m.namespace.is_empty() {
            "~X"
        } else {
            m.namespace.as_str()
        };
        format!("{ns}|{}", m.name)
    });
    Ok(items)
}

fn generate(
    ctx: &Ctx,
    g: &Value,
    at: &str,
    global: Option<&Options>,
) -> Result<(Secret, String), ManifestError> {
    let Some(o) = ctx.object(g, at)? else {
        return Err(ctx.err(at, "must be a map"));
    };
    ctx.check_fields(
        o,
        &[
            "name",
            "namespace",
            "behavior",
            "type",
            "literals",
            "files",
            "envs",
            "env",
            "options",
        ],
        at,
    )?;
    let name = ctx.string(o, "name", at)?.unwrap_or_default();
    if name.is_empty() {
        return Err(ctx.err(at, "name is required"));
    }
    let at = &format!("{at} (secret {name:?})");
    match ctx.string(o, "behavior", at)?.as_deref() {
        None | Some("" | "create") => {}
        Some(b) => {
            return Err(ctx.err(
                &join(at, "behavior"),
                format!(
                "{b:?} needs a base kustomization, which keyward does not support; use \"create\""
            ),
            ))
        }
    }
    let mut data: BTreeMap<String, SecretBytes> = BTreeMap::new();
    let mut add = |k: String, v: Vec<u8>, at: &str| -> Result<(), ManifestError> {
        if data.contains_key(&k) {
            return Err(ctx.err(at, format!("key {k:?} is given twice")));
        }
        data.insert(k, SecretBytes::new(v));
        Ok(())
    };
    // kustomize's order: env files, then literals, then files.
    let mut envs = ctx.strings(o, "envs", at)?;
    if let Some(e) = ctx.string(o, "env", at)? {
        envs.push(e);
    }
    for e in &envs {
        let at = join(at, "envs");
        let (path, raw) = ctx.load(e, &at)?;
        let raw = Zeroizing::new(raw);
        for (k, v) in
            env_pairs(&raw).map_err(|m| ctx.err(&at, format!("{}: {m}", path.display())))?
        {
            add(k, v.as_bytes().to_vec(), &at)?;
        }
    }
    for l in ctx.strings(o, "literals", at)? {
        let at = join(at, "literals");
        let (k, v) = parse_literal(&l).map_err(|m| ctx.err(&at, m))?;
        add(k, v.into_bytes(), &at)?;
    }
    for f in ctx.strings(o, "files", at)? {
        let at = join(at, "files");
        let (k, p) = parse_file_source(&f).map_err(|m| ctx.err(&at, m))?;
        let (_, content) = ctx.load(&p, &at)?;
        add(k, content, &at)?;
    }
    let opts = merge_options(ctx.options(o.get("options"), &join(at, "options"))?, global);
    let type_ = match ctx.string(o, "type", at)? {
        Some(t) if !t.is_empty() => t,
        _ => crate::store::model::OPAQUE.to_owned(),
    };
    let mut s = Secret {
        type_,
        ..Secret::default()
    };
    s.metadata.namespace = ctx.string(o, "namespace", at)?.unwrap_or_default();
    s.metadata.labels = opts.labels.unwrap_or_default();
    s.metadata.annotations = opts.annotations.unwrap_or_default();
    if opts.immutable {
        s.immutable = Some(true);
    }
    s.metadata.name = if opts.disable_name_suffix_hash {
        name.clone()
    } else {
        format!("{name}-{}", secret_hash(&s.type_, Some(&data)))
    };
    s.data = data;
    Ok((s, name))
}

/// kustomize's (v5.0–v5.6) env-file reading: lines as Go's bufio.ScanLines splits them
/// (a trailing `\r` dropped), a UTF-8 BOM stripped from the first line, leading white
/// space trimmed, blank lines and `#` comments skipped, `KEY=VALUE` split at the first `=`
/// with the value kept as is; a line without `=` is the key with an empty value.
fn env_pairs(content: &[u8]) -> Result<Vec<(String, Zeroizing<String>)>, String> {
    let mut out = Vec::new();
    let mut lines: Vec<&[u8]> = content.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for (i, line) in lines.into_iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut text =
            std::str::from_utf8(line).map_err(|_| format!("line {} is not valid UTF-8", i + 1))?;
        if i == 0 {
            text = text.strip_prefix('\u{feff}').unwrap_or(text);
        }
        let text = text.trim_start();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let (k, v) = text.split_once('=').unwrap_or((text, ""));
        out.push((k.to_owned(), Zeroizing::new(v.to_owned())));
    }
    Ok(out)
}

/// kustomize's literal source `key=value`: split at the first `=`; one pair of matching
/// surrounding quotes (`"` or `'`) is removed from the value.
fn parse_literal(src: &str) -> Result<(String, String), String> {
    match src.split_once('=') {
        Some((k, v)) if !k.is_empty() => {
            let b = v.as_bytes();
            let quoted = b.len() >= 2 && b[0] == b[b.len() - 1] && (b[0] == b'"' || b[0] == b'\'');
            let v = if quoted { &v[1..v.len() - 1] } else { v };
            Ok((k.to_owned(), v.to_owned()))
        }
        _ => Err(format!(
            "invalid literal source {src:?}, expected key=value"
        )),
    }
}

/// kustomize's file source: `path` (the key is the path's last element) or `key=path`.
fn parse_file_source(src: &str) -> Result<(String, String), String> {
    match src.matches('=').count() {
        0 => {
            let trimmed = src.trim_end_matches('/');
            let key = if trimmed.is_empty() {
                if src.is_empty() {
                    "."
                } else {
                    "/"
                }
            } else {
                trimmed.rsplit('/').next().unwrap_or(trimmed)
            };
            Ok((key.to_owned(), src.to_owned()))
        }
        1 => {
            let (k, p) = src.split_once('=').unwrap_or_default();
            if k.is_empty() {
                Err(format!("key name for file path {p:?} missing"))
            } else if p.is_empty() {
                Err(format!("file path for key name {k:?} missing"))
            } else {
                Ok((k.to_owned(), p.to_owned()))
            }
        }
        _ => Err(format!(
            "{src:?}: key names and file paths cannot contain '='"
        )),
    }
}

/// A Go `encoding/json` string (HTML-safe escaping, as `json.Marshal` writes it).
fn go_json_string(s: &str, out: &mut String) {
    super::gojson::write_string(out, s);
}

/// A Secret value as kustomize's generator writes it: base64, and when that is 70
/// characters or longer, cut into lines of 70, each ending in `\n`.
fn generator_base64(v: &[u8]) -> String {
    let enc = B64.encode(v);
    if enc.len() < 70 {
        return enc;
    }
    let mut out = String::with_capacity(enc.len() + enc.len() / 70 + 1);
    for chunk in enc.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// The JSON kustomize's hasher (`api/hasher`, encodeSecret) hashes for a Secret:
/// `{"data":{KEY:VALUE...},"kind":"Secret","name":"","type":TYPE}` with sorted keys and
/// the generator's base64 values. `name` is always empty: kustomize looks the name up
/// with the single path element "metadata/name", which never matches. `data` is `""`
/// when the object has no data field.
fn secret_hash_input(type_: &str, data: Option<&BTreeMap<String, SecretBytes>>) -> String {
    let mut out = String::from("{\"data\":");
    match data {
        None => out.push_str("\"\""),
        Some(d) => {
            out.push('{');
            for (i, (k, v)) in d.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_json_string(k, &mut out);
                out.push(':');
                go_json_string(&Zeroizing::new(generator_base64(v.as_slice())), &mut out);
            }
            out.push('}');
        }
    }
    out.push_str(",\"kind\":\"Secret\",\"name\":\"\",\"type\":");
    go_json_string(type_, &mut out);
    out.push('}');
    out
}

/// kustomize's `encode(hex256(...))`: the first 10 hex digits of SHA-256, with 0, 1, 3, a
/// and e replaced by g, h, k, m and t (so the suffix never looks like a number).
fn hash_suffix(encoded: &[u8]) -> String {
    let hex = hex::encode(crypto::sha256(encoded));
    hex[..10]
        .chars()
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

/// The name suffix kustomize gives a generated Secret of this type and data.
pub fn secret_hash(type_: &str, data: Option<&BTreeMap<String, SecretBytes>>) -> String {
    hash_suffix(Zeroizing::new(secret_hash_input(type_, data)).as_bytes())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::model::SecretBytes;

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, SecretBytes> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretBytes::new(v.to_vec())))
            .collect()
    }

    /// Vectors from kustomize's own api/hasher/hasher_test.go (TestSecretHash /
    /// TestEncodeSecret), which hash objects without a name.
    #[test]
    fn hasher_matches_kustomize_unit_vectors() {
        assert_eq!(
            secret_hash_input("my-type", None),
            r#"{"data":"","kind":"Secret","name":"","type":"my-type"}"#
        );
        assert_eq!(secret_hash("my-type", None), "5gmgkf8578");
        let one = data(&[("one", b"")]);
        assert_eq!(
            secret_hash_input("my-type", Some(&one)),
            r#"{"data":{"one":""},"kind":"Secret","name":"","type":"my-type"}"#
        );
        assert_eq!(secret_hash("my-type", Some(&one)), "74bd68bm66");
        // The sha256 of nothing, as hasher_test.go's Test_hex256 pins it: e3b0c44298 -> t
        // for e, k for 3, g for 0.
        assert_eq!(hash_suffix(b""), "tkbgc44298");
    }

    /// Names `kubectl kustomize` (kustomize v5.0.1, v5.5.0 and v5.6.0) printed for these
    /// generators.
    #[test]
    fn hasher_matches_kubectl_kustomize() {
        assert_eq!(secret_hash("Opaque", Some(&BTreeMap::new())), "46f8b28mk5");
        assert_eq!(
            secret_hash("Opaque", Some(&data(&[("a", b"b")]))),
            "k695gkmbtk"
        );
        assert_eq!(
            secret_hash("Opaque", Some(&data(&[("a", b"1")]))),
            "25khgmg44c"
        );
        assert_eq!(
            secret_hash("Opaque", Some(&data(&[("k", b"v")]))),
            "ftgtgc4t9f"
        );
        let long = [b'x'; 60];
        let s1 = data(&[
            ("A", b"1"),
            ("B ", b" two "),
            ("C", b"\"q\""),
            ("eq", b"a=b"),
            ("f.txt", b"line1   \nline2\t\nend"),
            ("k2", &long),
            ("q", b"'quoted\""),
            ("user", b"admin"),
        ]);
        assert_eq!(secret_hash("Opaque", Some(&s1)), "khd56gmfbk");
    }

    #[test]
    fn generator_base64_wraps_at_70() {
        use base64::Engine;
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        assert_eq!(generator_base64(b""), "");
        // 51 bytes -> 68 characters: one line, no newline.
        assert_eq!(generator_base64(&[7u8; 51]), b64(&[7u8; 51]));
        // 52 bytes -> 72 characters: 70, newline, 2, newline.
        let e = b64(&[7u8; 52]);
        assert_eq!(
            generator_base64(&[7u8; 52]),
            format!("{}\n{}\n", &e[..70], &e[70..])
        );
        // 105 bytes -> 140 characters: two full lines, each with its newline.
        let e = b64(&[7u8; 105]);
        assert_eq!(
            generator_base64(&[7u8; 105]),
            format!("{}\n{}\n", &e[..70], &e[70..])
        );
    }

    #[test]
    fn go_json_escapes_like_encoding_json() {
        let mut s = String::new();
        go_json_string("a<b>&\"\\\n\u{1}\u{2028}é", &mut s);
        assert_eq!(s, r#""a\u003cb\u003e\u0026\"\\\n\u0001\u2028é""#);
    }

    #[test]
    fn env_files_literals_and_file_sources() {
        let pairs =
            env_pairs(b"\xef\xbb\xbfA=1\n  B = two \n# c\n\nC=\"q\"\r\nNOVALUE\nD=x=y").unwrap();
        let got: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "1"),
                ("B ", " two "),
                ("C", "\"q\""),
                ("NOVALUE", ""),
                ("D", "x=y")
            ]
        );
        assert!(env_pairs(b"A=\xff\n").unwrap_err().contains("line 1"));
        for (src, want) in [
            ("q1=\"x\"", "x"),
            ("q2='x'", "x"),
            ("q3=\"x'", "\"x'"),
            ("q4=\"\"x\"\"", "\"x\""),
            ("q5='", "'"),
            ("q6=\" x \"", " x "),
            ("eq=a=b", "a=b"),
            ("e=", ""),
        ] {
            assert_eq!(parse_literal(src).unwrap().1, want, "{src}");
        }
        assert!(parse_literal("noeq").is_err());
        assert!(parse_literal("=v").is_err());
        assert_eq!(
            parse_file_source("dir/f.txt").unwrap(),
            ("f.txt".into(), "dir/f.txt".into())
        );
        assert_eq!(
            parse_file_source("k=dir/f.txt").unwrap(),
            ("k".into(), "dir/f.txt".into())
        );
        assert!(parse_file_source("=f").unwrap_err().contains("key name"));
        assert!(parse_file_source("k=").unwrap_err().contains("file path"));
        assert!(parse_file_source("k=v=w")
            .unwrap_err()
            .contains("cannot contain '='"));
    }

    /// The basic fixture of tests/cli/apply.rs builds to the names `kubectl kustomize` printed
    /// for it, in its order, with the kustomization's namespace and generator options.
    #[test]
    fn build_matches_kubectl_kustomize_on_the_fixture() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/apply/kustomize/basic");
        let items = build(&dir).unwrap();
        let names: Vec<&str> = items
            .iter()
            .map(|i| i.secret.metadata.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["db-49c75kt86b", "plain", "static", "web-tls-6g6bd72m5t"]
        );
        assert!(items.iter().all(|i| i.secret.metadata.namespace == "shop"));
        let db = &items[0].secret;
        assert_eq!(db.metadata.labels["tier"], "backend", "local options win");
        assert_eq!(db.metadata.labels["app"], "shop");
        assert_eq!(db.data["password"].as_slice(), b"s3=cret");
        assert!(items[3].secret.is_immutable());
        assert!(items[0]
            .source
            .ends_with("kustomization.yaml (secretGenerator[0])"));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let e = build(&dir.path().join("none")).unwrap_err();
        assert!(matches!(e, ManifestError::NotKustomizeDir { .. }), "{e}");
        let e = build(dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("unable to find one of"), "{e}");
        let file = dir.path().join("kustomization.yaml");
        std::fs::write(
            &file,
            "secretGenerator:
- name: a
  literals: [noeq]
",
        )
        .unwrap();
        assert_eq!(
            build(dir.path()).unwrap_err().to_string(),
            format!(
                "kustomization {}: secretGenerator[0] (secret \"a\").literals: invalid literal source \"noeq\", expected key=value",
                file.display()
            )
        );
        std::fs::write(&file, "namePrefix: x-\n").unwrap();
        let e = build(dir.path()).unwrap_err().to_string();
        assert!(e.contains(": field \"namePrefix\" is not supported"), "{e}");
    }
}
