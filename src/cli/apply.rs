//! `keyward apply -f FILE|DIR|-` and `keyward apply -k DIR` (kustomize secretGenerator).
//!
//! Every input is read, parsed and validated before the server is contacted, so a bad manifest
//! writes nothing. Then each Secret is read from the server and created, left alone, or
//! updated (conditional on the resourceVersion just read; one retry on a conflict). A server
//! error for one Secret is printed kubectl-style and the others are still applied.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use tonic::Code;

use super::client::{self, Client, ClientArgs};
use super::{manifest, CliError};
use crate::api::{secret_from_pb, secret_to_pb};
use crate::pb::keyward_v1 as pb;
use crate::store::model::normalize;
use crate::store::Secret;

const AFTER_HELP: &str = "\
How the manifest is applied:
  keyward applies each Secret as the desired content of its data (after merging stringData),
  type, immutable, labels and annotations: a data key, label or annotation missing from the
  manifest is removed from the stored Secret. kubectl apply instead does a three-way merge with
  a last-applied-configuration annotation; keyward keeps no such annotation. An update is
  conditional on the resourceVersion just read.

  -k DIR reads DIR/kustomization.yaml (or .yml, or Kustomization): resources (plain manifest
  files), namespace, secretGenerator (name, namespace, type, literals, files, envs, env,
  options) and generatorOptions. Generated names carry the same hash suffix as kustomize's.

Examples:
  keyward apply -f secrets.yaml
  keyward apply -f ./manifests/ -R -n prod
  cat db.yaml | keyward apply -f -
  keyward apply -k ./overlay --dry-run=server";

/// `keyward apply`.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub(super) struct ApplyArgs {
    /// A manifest file (YAML or JSON, several documents, kind List), a directory (its *.yaml,
    /// *.yml and *.json files, sorted), or - for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub filename: Vec<String>,
    /// A directory holding a kustomization.yaml (resources, namespace, secretGenerator,
    /// generatorOptions).
    #[arg(
        short = 'k',
        long = "kustomize",
        value_name = "DIR",
        conflicts_with_all = ["filename", "recursive"]
    )]
    pub kustomize: Option<PathBuf>,
    /// Also read manifests in subdirectories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Namespace for Secrets whose manifest names none (default: default). A manifest naming
    /// another namespace is an error.
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespace: Option<String>,
    /// client: compare with the server and report, writing nothing; server: the server
    /// validates each write without making it.
    #[arg(
        long = "dry-run",
        value_enum,
        default_value_t = DryRun::None,
        value_name = "MODE",
        num_args = 0..=1,
        default_missing_value = "client"
    )]
    pub dry_run: DryRun,
    /// Print each Secret's name, or the resulting objects as YAML or JSON.
    #[arg(short = 'o', long = "output", value_enum, value_name = "FORMAT")]
    pub output: Option<Output>,
}

/// `--dry-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum DryRun {
    /// Write.
    None,
    /// Read from the server and report what would change; write nothing.
    Client,
    /// Send each write with dry_run: the server validates it but stores nothing.
    Server,
}

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Output {
    /// `secret/NAME` per object.
    Name,
    /// The resulting object(s) as YAML (a List when several).
    Yaml,
    /// The resulting object(s) as JSON (a List when several).
    Json,
}

/// One Secret to apply and where it came from (for messages).
#[derive(Debug)]
struct Item {
    secret: Secret,
    source: String,
}

/// What applying one Secret did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    fn verb(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// Runs `keyward apply`.
pub(super) fn apply(a: ApplyArgs, client: &ClientArgs) -> Result<(), CliError> {
    let mut items = match (&a.kustomize, a.filename.is_empty()) {
        (Some(dir), true) => kustomize::build(dir)?,
        (None, false) => read_inputs(&a.filename, a.recursive)?,
        _ => {
            return Err(CliError::new("must specify one of -f and -k")
                .hint("keyward apply -f FILE|DIR|- or keyward apply -k DIR"))
        }
    };
    if items.is_empty() {
        return Err(CliError::new("no objects passed to apply"));
    }
    resolve_namespaces(&mut items, a.namespace.as_deref())?;
    for it in &mut items {
        normalize(&mut it.secret);
        if let Err(errs) = crate::store::model::validate(&it.secret) {
            let detail: Vec<String> = errs.iter().map(ToString::to_string).collect();
            return Err(CliError::new(format!(
                "error validating {}: Secret {:?} is invalid: {}",
                it.source,
                it.secret.metadata.name,
                detail.join("; ")
            )));
        }
    }
    super::runtime()?.block_on(async {
        let mut c = client::connect(client).await?;
        let suffix = match a.dry_run {
            DryRun::None => "",
            DryRun::Client => " (dry run)",
            DryRun::Server => " (server dry run)",
        };
        let mut failed = false;
        let mut printed = Vec::new();
        for it in items {
            let name = it.secret.metadata.name.clone();
            match apply_one(&mut c, it.secret, a.dry_run).await {
                Ok((outcome, obj)) => match a.output {
                    None => println!("secret/{name} {}{suffix}", outcome.verb()),
                    Some(Output::Name) => println!("secret/{name}"),
                    Some(_) => printed.push(obj),
                },
                Err(status) => {
                    eprintln!("{}", client::server_error(status).message);
                    failed = true;
                }
            }
        }
        match a.output {
            Some(Output::Yaml) if printed.len() == 1 => {
                print!("{}", manifest::to_yaml(&printed[0]))
            }
            Some(Output::Json) if printed.len() == 1 => {
                println!("{}", manifest::secret_json(&printed[0]))
            }
            Some(Output::Yaml) if !printed.is_empty() => print!(
                "{}",
                serde_yaml_ng::to_string(&manifest::list_value(&printed)).unwrap_or_default()
            ),
            Some(Output::Json) if !printed.is_empty() => {
                println!("{}", manifest::to_json(&manifest::list_value(&printed)))
            }
            _ => {}
        }
        if failed {
            // Each error was printed as it happened; exit non-zero without repeating them.
            Err(CliError::silent())
        } else {
            Ok(())
        }
    })
}

/// Whether the stored Secret already has the desired content (both normalized).
fn same_content(desired: &Secret, stored: &Secret) -> bool {
    desired.data == stored.data
        && desired.type_ == stored.type_
        && desired.is_immutable() == stored.is_immutable()
        && desired.metadata.labels == stored.metadata.labels
        && desired.metadata.annotations == stored.metadata.annotations
}

/// Creates, updates or leaves one (normalized) Secret; returns what happened and the object
/// as it now is (or would be, for a dry run).
async fn apply_one(
    c: &mut Client,
    desired: Secret,
    dry_run: DryRun,
) -> Result<(Outcome, Secret), tonic::Status> {
    let ns = desired.metadata.namespace.clone();
    let name = desired.metadata.name.clone();
    let mut retried = false;
    loop {
        let stored = match c
            .get(pb::GetRequest {
                namespace: ns.clone(),
                name: name.clone(),
                revision: 0,
            })
            .await
        {
            Ok(r) => Some(secret_from_pb(r.into_inner())),
            Err(s) if s.code() == Code::NotFound => None,
            Err(s) => return Err(s),
        };
        let res = match stored {
            None => {
                if dry_run == DryRun::Client {
                    return Ok((Outcome::Created, desired));
                }
                c.create(pb::CreateRequest {
                    secret: Some(secret_to_pb(desired.clone())),
                    dry_run: dry_run == DryRun::Server,
                })
                .await
                .map(|r| (Outcome::Created, secret_from_pb(r.into_inner())))
            }
            Some(stored) => {
                if same_content(&desired, &stored) {
                    return Ok((Outcome::Unchanged, stored));
                }
                let mut next = desired.clone();
                next.metadata.resource_version = stored.metadata.resource_version.clone();
                if dry_run == DryRun::Client {
                    next.metadata.uid = stored.metadata.uid;
                    next.metadata.creation_timestamp = stored.metadata.creation_timestamp;
                    return Ok((Outcome::Configured, next));
                }
                c.update(pb::UpdateRequest {
                    secret: Some(secret_to_pb(next)),
                    dry_run: dry_run == DryRun::Server,
                })
                .await
                .map(|r| (Outcome::Configured, secret_from_pb(r.into_inner())))
            }
        };
        match res {
            // Someone else created, changed or deleted it between the read and the write:
            // read again and decide again, once.
            Err(s)
                if !retried
                    && matches!(
                        s.code(),
                        Code::Aborted | Code::AlreadyExists | Code::NotFound
                    ) =>
            {
                retried = true;
            }
            other => return other,
        }
    }
}

/// Sets each Secret's namespace: its manifest's, else `-n`, else `default`. A manifest
/// namespace that differs from an explicit `-n` is an error (as kubectl).
fn resolve_namespaces(items: &mut [Item], flag: Option<&str>) -> Result<(), CliError> {
    let flag = flag.filter(|n| !n.is_empty());
    for it in items.iter_mut() {
        let ns = &mut it.secret.metadata.namespace;
        match flag {
            Some(f) if !ns.is_empty() && ns != f => {
                return Err(CliError::new(format!(
                    "the namespace from the provided object {ns:?} does not match the namespace {f:?}. You must pass '--namespace={ns}' to perform this operation."
                )))
            }
            Some(f) => *ns = f.to_owned(),
            None if ns.is_empty() => *ns = "default".to_owned(),
            None => {}
        }
    }
    Ok(())
}

fn is_manifest_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The manifest files of a directory in kubectl's order: entries sorted by name, files with a
/// manifest extension, subdirectories walked in place when `recursive`.
fn dir_files(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| CliError::new(format!("cannot read directory {}: {e}", dir.display())))?;
    let mut entries = Vec::new();
    for e in rd {
        let e =
            e.map_err(|e| CliError::new(format!("cannot read directory {}: {e}", dir.display())))?;
        entries.push(e);
    }
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            if recursive {
                dir_files(&path, true, out)?;
            }
        } else if is_manifest_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String, CliError> {
    let raw = std::fs::read(path)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(raw)
        .map_err(|_| CliError::new(format!("error parsing {}: not UTF-8 text", path.display())))
}

/// Reads and parses every `-f` input.
fn read_inputs(inputs: &[String], recursive: bool) -> Result<Vec<Item>, CliError> {
    let mut items = Vec::new();
    let mut stdin_read = false;
    for input in inputs {
        let mut sources: Vec<(String, String)> = Vec::new();
        if input == "-" {
            if stdin_read {
                return Err(CliError::new("-f - (stdin) can be given only once"));
            }
            stdin_read = true;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::new(format!("cannot read stdin: {e}")))?;
            sources.push(("STDIN".to_owned(), text));
        } else {
            let path = Path::new(input);
            let meta = std::fs::metadata(path)
                .map_err(|_| CliError::new(format!("the path {input:?} does not exist")))?;
            if meta.is_dir() {
                let mut files = Vec::new();
                dir_files(path, recursive, &mut files)?;
                for f in files {
                    sources.push((f.display().to_string(), read_text(&f)?));
                }
            } else {
                sources.push((input.clone(), read_text(path)?));
            }
        }
        for (source, text) in sources {
            for secret in manifest::parse(&text, &source)? {
                items.push(Item {
                    secret,
                    source: source.clone(),
                });
            }
        }
    }
    Ok(items)
}

/// `kubectl apply -k` for Secrets: a kustomization's resources and secretGenerator, with
/// kustomize's (v5) generator semantics and name-suffix hash.
mod kustomize {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;
    use serde_json::{Map, Value};
    use sha2::{Digest, Sha256};
    use zeroize::Zeroizing;

    use super::{manifest, CliError, Item};
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
        fn err(&self, at: &str, msg: impl std::fmt::Display) -> CliError {
            if at.is_empty() {
                CliError::new(format!("kustomization {}: {msg}", self.file))
            } else {
                CliError::new(format!("kustomization {}: {at}: {msg}", self.file))
            }
        }

        fn check_fields(
            &self,
            m: &Map<String, Value>,
            allowed: &[&str],
            at: &str,
        ) -> Result<(), CliError> {
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
        ) -> Result<Option<String>, CliError> {
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
        ) -> Result<Vec<String>, CliError> {
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
        ) -> Result<Option<BTreeMap<String, String>>, CliError> {
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

        fn boolean(&self, m: &Map<String, Value>, key: &str, at: &str) -> Result<bool, CliError> {
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
        ) -> Result<Option<&'v Map<String, Value>>, CliError> {
            match v {
                Value::Null => Ok(None),
                Value::Object(o) => Ok(Some(o)),
                _ => Err(self.err(at, "must be a map")),
            }
        }

        fn options(&self, v: Option<&Value>, at: &str) -> Result<Option<Options>, CliError> {
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
        fn load(&self, rel: &str, at: &str) -> Result<(PathBuf, Vec<u8>), CliError> {
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
            let data = std::fs::read(&real)
                .map_err(|e| self.err(at, format!("{}: {e}", path.display())))?;
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
    pub(super) fn build(dir: &Path) -> Result<Vec<Item>, CliError> {
        if !dir.is_dir() {
            return Err(CliError::new(format!(
                "-k {}: must be a directory holding a kustomization.yaml",
                dir.display()
            )));
        }
        let found: Vec<PathBuf> = FILE_NAMES
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.is_file())
            .collect();
        let file = match found.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(CliError::new(format!(
                    "unable to find one of 'kustomization.yaml', 'kustomization.yml' or 'Kustomization' in directory '{}'",
                    dir.display()
                )))
            }
            _ => return Err(CliError::new(format!("found multiple kustomization files under: {}", dir.display()))),
        };
        let root = std::fs::canonicalize(dir)
            .map_err(|e| CliError::new(format!("-k {}: {e}", dir.display())))?;
        let ctx = Ctx {
            file: file.display().to_string(),
            dir: dir.to_owned(),
            root,
        };
        let text = super::read_text(&file)?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_yaml_ng::from_str(&text)
                .map_err(|e| ctx.err("", format!("not valid YAML: {e}")))?
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
        let mut objs: Vec<(Item, String)> = Vec::new();
        for (i, r) in ctx.strings(top, "resources", "")?.iter().enumerate() {
            let at = format!("resources[{i}]");
            if r.contains("://") || r.starts_with("github.com/") {
                return Err(ctx.err(&at, format!("{r:?}: remote resources are not supported")));
            }
            let (path, raw) = ctx.load(r, &at)?;
            let source = path.display().to_string();
            let text = String::from_utf8(raw)
                .map_err(|_| ctx.err(&at, format!("{source}: not UTF-8 text")))?;
            for secret in manifest::parse(&text, &source)? {
                let id = secret.metadata.name.clone();
                let source = source.clone();
                objs.push((Item { secret, source }, id));
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
            objs.push((Item { secret, source }, id));
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
        let mut items: Vec<Item> = objs.into_iter().map(|(it, _)| it).collect();
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
    ) -> Result<(Secret, String), CliError> {
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
                    format!("{b:?} needs a base kustomization, which keyward does not support; use \"create\""),
                ))
            }
        }
        let mut data: BTreeMap<String, SecretBytes> = BTreeMap::new();
        let mut add = |k: String, v: Vec<u8>, at: &str| -> Result<(), CliError> {
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
    pub(super) fn env_pairs(content: &[u8]) -> Result<Vec<(String, Zeroizing<String>)>, String> {
        let mut out = Vec::new();
        let mut lines: Vec<&[u8]> = content.split(|b| *b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        for (i, line) in lines.into_iter().enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut text = std::str::from_utf8(line)
                .map_err(|_| format!("line {} is not valid UTF-8", i + 1))?;
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
    pub(super) fn parse_literal(src: &str) -> Result<(String, String), String> {
        match src.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                let b = v.as_bytes();
                let quoted =
                    b.len() >= 2 && b[0] == b[b.len() - 1] && (b[0] == b'"' || b[0] == b'\'');
                let v = if quoted { &v[1..v.len() - 1] } else { v };
                Ok((k.to_owned(), v.to_owned()))
            }
            _ => Err(format!(
                "invalid literal source {src:?}, expected key=value"
            )),
        }
    }

    /// kustomize's file source: `path` (the key is the path's last element) or `key=path`.
    pub(super) fn parse_file_source(src: &str) -> Result<(String, String), String> {
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
    pub(super) fn go_json_string(s: &str, out: &mut String) {
        use std::fmt::Write as _;
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
                c if (c as u32) < 0x20
                    || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') =>
                {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    /// A Secret value as kustomize's generator writes it: base64, and when that is 70
    /// characters or longer, cut into lines of 70, each ending in `\n`.
    pub(super) fn generator_base64(v: &[u8]) -> String {
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
    pub(super) fn secret_hash_input(
        type_: &str,
        data: Option<&BTreeMap<String, SecretBytes>>,
    ) -> String {
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
    pub(super) fn hash_suffix(encoded: &[u8]) -> String {
        let hex = hex::encode(Sha256::digest(encoded));
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
    pub(super) fn secret_hash(type_: &str, data: Option<&BTreeMap<String, SecretBytes>>) -> String {
        hash_suffix(Zeroizing::new(secret_hash_input(type_, data)).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::kustomize::*;
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

    #[test]
    fn namespace_rules() {
        let item = |ns: &str| Item {
            secret: {
                let mut s = Secret::default();
                s.metadata.name = "a".into();
                s.metadata.namespace = ns.into();
                s
            },
            source: "m".into(),
        };
        let mut v = vec![item(""), item("x")];
        resolve_namespaces(&mut v, None).unwrap();
        assert_eq!(
            (
                v[0].secret.metadata.namespace.as_str(),
                v[1].secret.metadata.namespace.as_str()
            ),
            ("default", "x")
        );
        let mut v = [item(""), item("x")];
        resolve_namespaces(&mut v[..1], Some("y")).unwrap();
        assert_eq!(v[0].secret.metadata.namespace, "y");
        let e = resolve_namespaces(&mut v[1..], Some("y")).unwrap_err();
        assert!(
            e.message.contains("does not match the namespace \"y\""),
            "{}",
            e.message
        );
    }

    /// An in-memory `keyward.v1.Secrets` holding one Secret, that can fail the next writes
    /// with ABORTED (after bumping the resourceVersion, as a concurrent writer would) or
    /// ALREADY_EXISTS (after storing `appears`, as a concurrent creator would).
    #[derive(Default)]
    struct FakeState {
        secret: Option<pb::Secret>,
        rv: u64,
        conflicts: usize,
        appears: Option<pb::Secret>,
        calls: Vec<&'static str>,
    }

    #[derive(Clone, Default)]
    struct Fake(std::sync::Arc<std::sync::Mutex<FakeState>>);

    type Res<T> = Result<tonic::Response<T>, tonic::Status>;

    impl Fake {
        fn with_rv(&self, st: &mut FakeState, mut s: pb::Secret) -> pb::Secret {
            st.rv += 1;
            let m = s.metadata.get_or_insert_with(Default::default);
            m.resource_version = st.rv.to_string();
            m.namespace = "default".into();
            if s.r#type.is_empty() {
                s.r#type = "Opaque".into();
            }
            st.secret = Some(s.clone());
            s
        }
    }

    #[tonic::async_trait]
    impl pb::secrets_server::Secrets for Fake {
        async fn create(&self, r: tonic::Request<pb::CreateRequest>) -> Res<pb::Secret> {
            let mut st = self.0.lock().unwrap();
            st.calls.push("create");
            if let Some(other) = st.appears.take() {
                self.with_rv(&mut st, other);
            }
            if st.secret.is_some() {
                return Err(tonic::Status::already_exists(
                    "secrets \"a\" already exists",
                ));
            }
            let s = r.into_inner().secret.unwrap_or_default();
            Ok(tonic::Response::new(self.with_rv(&mut st, s)))
        }
        async fn get(&self, _: tonic::Request<pb::GetRequest>) -> Res<pb::Secret> {
            let mut st = self.0.lock().unwrap();
            st.calls.push("get");
            st.secret
                .clone()
                .map(tonic::Response::new)
                .ok_or_else(|| tonic::Status::not_found("secrets \"a\" not found"))
        }
        async fn update(&self, r: tonic::Request<pb::UpdateRequest>) -> Res<pb::Secret> {
            let mut st = self.0.lock().unwrap();
            st.calls.push("update");
            let s = r.into_inner().secret.unwrap_or_default();
            let want = s.metadata.clone().unwrap_or_default().resource_version;
            if st.conflicts > 0 {
                st.conflicts -= 1;
                st.rv += 1;
                let rv = st.rv.to_string();
                if let Some(m) = st.secret.as_mut().and_then(|s| s.metadata.as_mut()) {
                    m.resource_version = rv;
                }
            }
            if want != st.rv.to_string() {
                return Err(tonic::Status::aborted(
                    "Operation cannot be fulfilled on secrets \"a\": the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            Ok(tonic::Response::new(self.with_rv(&mut st, s)))
        }
        async fn delete(&self, _: tonic::Request<pb::DeleteRequest>) -> Res<pb::Secret> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn list(&self, _: tonic::Request<pb::ListRequest>) -> Res<pb::ListResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        type WatchStream = std::pin::Pin<
            Box<dyn futures_core::Stream<Item = Result<pb::WatchEvent, tonic::Status>> + Send>,
        >;
        async fn watch(&self, _: tonic::Request<pb::WatchRequest>) -> Res<Self::WatchStream> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn history(&self, _: tonic::Request<pb::HistoryRequest>) -> Res<pb::HistoryResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn rollback(&self, _: tonic::Request<pb::RollbackRequest>) -> Res<pb::Secret> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn raw_get(&self, _: tonic::Request<pb::RawGetRequest>) -> Res<pb::RawGetResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
        async fn raw_list(
            &self,
            _: tonic::Request<pb::RawListRequest>,
        ) -> Res<pb::RawListResponse> {
            Err(tonic::Status::unimplemented("fake"))
        }
    }

    fn desired(v: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = "a".into();
        s.data
            .insert("k".into(), SecretBytes::new(v.as_bytes().to_vec()));
        normalize(&mut s);
        s
    }

    /// Applies `desired(v)` against a fake prepared by `setup`; returns the outcome (or the
    /// error code) and the calls the fake saw.
    fn apply_against(
        setup: impl FnOnce(&mut FakeState),
        v: &str,
    ) -> (Result<Outcome, Code>, Vec<&'static str>, Option<String>) {
        let fake = Fake::default();
        setup(&mut fake.0.lock().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("fake.sock");
        let rt = super::super::runtime().unwrap();
        let res = rt.block_on(async {
            let listener = tokio::net::UnixListener::bind(&sock).unwrap();
            let server = pb::secrets_server::SecretsServer::new(fake.clone());
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(server)
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
            );
            let args = ClientArgs {
                server: Some(format!("unix://{}", sock.display())),
                ca_file: None,
                token_file: None,
                client_cert: None,
                client_key: None,
            };
            let mut c = client::connect(&args).await.map_err(|e| e.message).unwrap();
            apply_one(&mut c, desired(v), DryRun::None).await
        });
        let st = fake.0.lock().unwrap();
        let stored = st
            .secret
            .as_ref()
            .and_then(|s| s.data.get("k"))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        (
            res.map(|(o, _)| o).map_err(|s| s.code()),
            st.calls.clone(),
            stored,
        )
    }

    fn stored_v1(st: &mut FakeState) {
        let mut s = secret_to_pb(desired("v1"));
        s.metadata.as_mut().unwrap().resource_version = String::new();
        Fake::default().with_rv(st, s);
    }

    #[test]
    fn a_conflict_is_retried_once_after_reading_again() {
        // Created, unchanged, configured without any conflict.
        assert_eq!(
            apply_against(|_| {}, "v1"),
            (
                Ok(Outcome::Created),
                vec!["get", "create"],
                Some("v1".into())
            )
        );
        assert_eq!(
            apply_against(stored_v1, "v1"),
            (Ok(Outcome::Unchanged), vec!["get"], Some("v1".into()))
        );
        assert_eq!(
            apply_against(stored_v1, "v2"),
            (
                Ok(Outcome::Configured),
                vec!["get", "update"],
                Some("v2".into())
            )
        );
        // One conflict: read again, update again with the new resourceVersion.
        assert_eq!(
            apply_against(
                |st| {
                    stored_v1(st);
                    st.conflicts = 1;
                },
                "v2"
            ),
            (
                Ok(Outcome::Configured),
                vec!["get", "update", "get", "update"],
                Some("v2".into())
            )
        );
        // Conflicts that persist: the second is reported.
        assert_eq!(
            apply_against(
                |st| {
                    stored_v1(st);
                    st.conflicts = 5;
                },
                "v2"
            ),
            (
                Err(Code::Aborted),
                vec!["get", "update", "get", "update"],
                Some("v1".into())
            )
        );
        // Created by someone else between the read and the create, with the same content.
        assert_eq!(
            apply_against(|st| st.appears = Some(secret_to_pb(desired("v1"))), "v1"),
            (
                Ok(Outcome::Unchanged),
                vec!["get", "create", "get"],
                Some("v1".into())
            )
        );
    }
}
