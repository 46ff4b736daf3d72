//! kubectl-shaped commands for Secrets: create (generic, docker-registry, tls), get, describe,
//! edit, delete, history and rollback.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, Subcommand, ValueEnum};
use zeroize::Zeroizing;

use super::client::{self, Client, ClientArgs};
use super::output::table;
use super::printer::{self, parse_output, GetOutput, Table};
use super::CliError;
use crate::api::{secret_from_pb, secret_read_from_pb, secret_to_pb};
use crate::backend::Revision;
use crate::manifest;
use crate::names::{self, DataKey};
use crate::pb::keyward_v1 as pb;
use crate::store::Secret;

/// `-n/--namespace`.
#[derive(Debug, Clone, Args)]
pub(super) struct Namespace {
    /// Namespace.
    #[arg(
        short = 'n',
        long = "namespace",
        default_value = "default",
        value_name = "NS"
    )]
    pub namespace: names::Namespace,
}

/// Output formats of commands that print what they wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum ObjectOutput {
    /// The object as YAML.
    Yaml,
    /// The object as JSON.
    Json,
    /// `secret/NAME`.
    Name,
}

/// `--dry-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum DryRun {
    /// Write.
    None,
    /// Print the object without contacting the server.
    Client,
    /// Let the server validate without writing.
    Server,
}

/// `keyward create`.
#[derive(Debug, Subcommand)]
pub(super) enum CreateCommand {
    /// Create a Secret.
    #[command(subcommand)]
    Secret(CreateSecret),
    /// Request a service account token (printed on stdout).
    ///
    /// Example: keyward create token app -n prod --duration 1h --audience vault
    #[command(verbatim_doc_comment)]
    Token(super::auth::CreateTokenArgs),
}

/// `keyward create secret ...`.
#[derive(Debug, Subcommand)]
pub(super) enum CreateSecret {
    /// A Secret from literals, files, directories and env files.
    ///
    /// Examples:
    ///   keyward create secret generic db --from-literal=user=admin --from-literal=password='s3=cret'
    ///   keyward create secret generic certs --from-file=./certs/ --from-file=ca.pem=/etc/ssl/ca.pem
    ///   keyward create secret generic app --from-env-file=app.env --dry-run=client -o yaml
    #[command(verbatim_doc_comment)]
    Generic {
        /// Name of the Secret.
        name: String,
        /// key=value (repeatable; the value may contain '=').
        #[arg(long = "from-literal", value_name = "KEY=VALUE")]
        from_literal: Vec<String>,
        /// [key=]path: a file (key defaults to its name) or a directory (one key per file).
        #[arg(long = "from-file", value_name = "[KEY=]PATH")]
        from_file: Vec<String>,
        /// A file of KEY=VALUE lines (repeatable).
        #[arg(long = "from-env-file", value_name = "PATH")]
        from_env_file: Vec<String>,
        /// The Secret's type (default Opaque).
        #[arg(long = "type", value_name = "TYPE")]
        type_: Option<String>,
        #[command(flatten)]
        common: CreateCommon,
    },
    /// A kubernetes.io/dockerconfigjson Secret for a registry.
    ///
    /// Example:
    ///   keyward create secret docker-registry regcred --docker-server=registry.example.com \
    ///     --docker-username=ci --docker-password=hunter2 --docker-email=ci@example.com
    #[command(verbatim_doc_comment, name = "docker-registry")]
    DockerRegistry {
        /// Name of the Secret.
        name: String,
        /// Registry server.
        #[arg(
            long,
            default_value = "https://index.docker.io/v1/",
            value_name = "SERVER"
        )]
        docker_server: String,
        /// Username.
        #[arg(long, value_name = "USER")]
        docker_username: String,
        /// Password.
        #[arg(long, value_name = "PASSWORD")]
        docker_password: String,
        /// Email.
        #[arg(long, value_name = "EMAIL")]
        docker_email: Option<String>,
        #[command(flatten)]
        common: CreateCommon,
    },
    /// A kubernetes.io/tls Secret from a PEM certificate and its key.
    ///
    /// Example: keyward create secret tls web-tls --cert=tls.crt --key=tls.key
    Tls {
        /// Name of the Secret.
        name: String,
        /// PEM certificate (chain).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// PEM private key matching the certificate.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[command(flatten)]
        common: CreateCommon,
    },
}

/// Options every `create secret` takes.
#[derive(Debug, Args)]
pub(super) struct CreateCommon {
    #[command(flatten)]
    ns: Namespace,
    /// Make the Secret immutable.
    #[arg(long)]
    immutable: bool,
    /// client: check here and write nothing (-o prints the object); server: validate on the
    /// server and write nothing.
    #[arg(long = "dry-run", value_enum, default_value_t = DryRun::None, value_name = "MODE", num_args = 0..=1, default_missing_value = "client")]
    dry_run: DryRun,
    /// Print the created object.
    #[arg(short = 'o', long = "output", value_enum, value_name = "FORMAT")]
    output: Option<ObjectOutput>,
}

/// `keyward get`.
#[derive(Debug, Args)]
pub(super) struct GetArgs {
    /// `secrets`, `secret` or `secret/NAME`.
    resource: String,
    /// Names (all Secrets if none).
    names: Vec<String>,
    #[command(flatten)]
    ns: Namespace,
    /// List Secrets of every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    /// Output format: wide, yaml, json, name, jsonpath=TEMPLATE (e.g.
    /// '{.data.password}'), jsonpath-file=FILE, jsonpath-as-json=TEMPLATE,
    /// custom-columns=HEADER:PATH,... (e.g. NAME:.metadata.name) or custom-columns-file=FILE.
    #[arg(id = "output", short = 'o', long = "output", value_name = "FORMAT")]
    output_format: Option<String>,
    /// `output_format` parsed, by [`get`] (a bad format or template is kubectl's error, exit
    /// status 1, not a usage error).
    #[arg(skip)]
    output: Option<GetOutput>,
    /// Print tables (and custom columns) without their header row.
    #[arg(long)]
    no_headers: bool,
    /// Add a LABELS column to the table.
    #[arg(long)]
    show_labels: bool,
    /// Keep metadata.managedFields in -o yaml and -o json (JSONPath and custom columns always
    /// see them), as kubectl's flag of that name.
    #[arg(long)]
    show_managed_fields: bool,
    /// Add a column for each of these label keys, e.g. -L app,tier.
    #[arg(
        short = 'L',
        long = "label-columns",
        value_name = "KEY",
        value_delimiter = ','
    )]
    label_columns: Vec<String>,
    /// Print nothing for named Secrets that do not exist (not an error).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    ignore_not_found: Option<bool>,
    /// Label selector, e.g. app=web,tier in (front,back).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    selector: Option<String>,
    /// Field selector on metadata.name, metadata.namespace and type, e.g.
    /// metadata.name=db (a list or watch of one Secret needs list or watch on it by name
    /// only).
    #[arg(long = "field-selector", value_name = "SELECTOR")]
    field_selector: Option<String>,
    /// After listing, stream changes.
    #[arg(short = 'w', long)]
    watch: bool,
    /// With --watch, print each change's type (ADDED, MODIFIED, DELETED) in an EVENT column.
    #[arg(long, requires = "watch")]
    output_watch_events: bool,
    /// Print one decoded value raw (for scripts), e.g. --key password.
    #[arg(long, value_name = "KEY", conflicts_with_all = ["output", "watch"])]
    key: Option<DataKey>,
    /// List in pages of this many Secrets (all at one revision), as kubectl does; 0 asks for
    /// the whole list at once.
    #[arg(long, default_value_t = 500, value_name = "N")]
    chunk_size: u32,
}

/// `keyward describe|edit|history secret NAME`.
#[derive(Debug, Args)]
pub(super) struct OneSecret {
    /// `secret` (then NAME), or `secret/NAME`.
    resource: String,
    /// Name.
    name: Option<String>,
    #[command(flatten)]
    ns: Namespace,
}

/// `keyward delete secret NAME...`.
#[derive(Debug, Args)]
pub(super) struct DeleteArgs {
    /// `secret` or `secrets` (then NAME...), or `secret/NAME...`.
    resource: String,
    /// Names.
    names: Vec<String>,
    #[command(flatten)]
    ns: Namespace,
    /// Only delete if the stored resourceVersion is this (an empty value is refused, never
    /// read as "no precondition").
    #[arg(long, value_name = "RV", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    resource_version: Option<String>,
    /// Delete even if the stored value cannot be decrypted (its key was lost). Unsafe: its
    /// preconditions cannot be checked.
    #[arg(long)]
    unsafe_ignore_decrypt_errors: bool,
    /// Delete the Secrets with these labels, e.g. app=web (listed first, then deleted one by
    /// one, as kubectl does: needs list and delete).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    selector: Option<String>,
    /// Delete the Secrets these fields select (metadata.name, metadata.namespace, type).
    #[arg(long = "field-selector", value_name = "SELECTOR")]
    field_selector: Option<String>,
    /// Delete every Secret in the namespace (with -A: in every namespace).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    all: Option<bool>,
    /// With --all, -l or --field-selector: in every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    /// Treat "not found" as a successful delete (the default with --all, -l and
    /// --field-selector).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    ignore_not_found: Option<bool>,
}

/// `keyward rollback secret NAME --to-revision N`.
#[derive(Debug, Args)]
pub(super) struct RollbackArgs {
    /// `secret` (then NAME), or `secret/NAME`.
    resource: String,
    /// Name.
    name: Option<String>,
    #[command(flatten)]
    ns: Namespace,
    /// The revision whose content to restore (see `keyward history secret NAME`).
    #[arg(long, value_name = "N")]
    to_revision: Revision,
}

fn resource_is_secret(r: &str, allow_slash: bool) -> Result<Option<String>, CliError> {
    match r {
        "secret" | "secrets" => Ok(None),
        r => match r
            .strip_prefix("secret/")
            .or_else(|| r.strip_prefix("secrets/"))
        {
            Some(name) if allow_slash && !name.is_empty() => Ok(Some(name.to_owned())),
            _ => Err(CliError::plain(format!(
                "error: the server doesn't have a resource type \"{}\": keyward serves secrets",
                r.split('/').next().unwrap_or(r)
            ))),
        },
    }
}

/// The names a command's arguments give: `secret NAME...` or `secret/NAME...` (every argument
/// in that form: kubectl's rule and words).
fn names_of(resource: &str, rest: &[String]) -> Result<Vec<String>, CliError> {
    match resource_is_secret(resource, true)? {
        Some(first) => {
            let mut names = vec![first];
            for n in rest {
                if !n.contains('/') {
                    return Err(mixed_forms());
                }
                names.extend(resource_is_secret(n, true)?);
            }
            Ok(names)
        }
        None if rest.iter().any(|n| n.contains('/')) => Err(mixed_forms()),
        None => Ok(rest.to_vec()),
    }
}

/// The one name a command's arguments give (`secret NAME` or `secret/NAME`).
fn one_name(resource: &str, name: Option<&String>) -> Result<String, CliError> {
    let name: Vec<String> = name.cloned().into_iter().collect();
    let mut names = names_of(resource, &name)?;
    match (names.pop(), names.is_empty()) {
        (Some(n), true) => Ok(n),
        (Some(_), false) => Err(CliError::new("one Secret name is expected")),
        (None, _) => Err(no_name()),
    }
}

/// kubectl's error for a command given a type and no name.
fn no_name() -> CliError {
    CliError::new("resource(s) were provided, but no name was specified")
}

/// kubectl's error for a type given both as an argument and in `type/name` form.
fn mixed_forms() -> CliError {
    CliError::new("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'keyward get resource/<resource_name>' instead of 'keyward get resource resource/<resource_name>'")
}

fn rt() -> Result<tokio::runtime::Runtime, CliError> {
    super::process::runtime()
}

mod create;
pub(super) use create::create;

/// One Secret, as `describe` shows and `edit` edits it: without the metadata only the
/// Kubernetes API sets, which a manifest of keyward's does not take.
async fn get_one(c: &mut Client, ns: &names::Namespace, name: &str) -> Result<Secret, CliError> {
    fetch_one(c, ns, name)
        .await
        .map(secret_from_pb)
        .map_err(client::server_error)
}

/// [`get_one`] with the server's status, as sent.
async fn fetch_one(
    c: &mut Client,
    ns: &names::Namespace,
    name: &str,
) -> Result<pb::Secret, tonic::Status> {
    c.get(pb::GetRequest {
        namespace: ns.to_string(),
        name: name.to_owned(),
        revision: 0,
    })
    .await
    .map(tonic::Response::into_inner)
}

/// `keyward get secrets|secret NAME...`.
pub(super) fn get(mut a: GetArgs, client: &ClientArgs) -> Result<(), CliError> {
    use std::io::Write as _;
    a.output = a
        .output_format
        .as_deref()
        .map(parse_output)
        .transpose()
        .map_err(CliError::new)?;
    let names = names_of(&a.resource, &a.names)?;
    if a.key.is_some() && names.len() != 1 {
        return Err(CliError::plain(
            "error: --key needs exactly one Secret name",
        ));
    }
    // kubectl's rules and words: names select by themselves, in one namespace.
    let (selector, field_selector) = (given(&a.selector), given(&a.field_selector));
    if !names.is_empty() && (selector.is_some() || field_selector.is_some()) {
        return Err(CliError::plain(
            "error: name cannot be provided when a selector is specified",
        ));
    }
    if !names.is_empty() && a.all_namespaces {
        return Err(CliError::plain(
            "error: a resource cannot be retrieved by name across all namespaces",
        ));
    }
    if let Some(printer) = a.output.as_ref().and_then(GetOutput::printer_name) {
        if a.show_labels {
            return Err(CliError::plain(format!(
                "error: --show-labels option cannot be used with {printer} printer"
            )));
        }
    }
    let ignore_not_found = a.ignore_not_found == Some(true);
    let ns = a.ns.namespace.clone();
    let mut undecryptable = 0;
    let mut failed: Vec<CliError> = Vec::new();
    rt()?.block_on(async {
        let mut c = client::connect(client).await?;
        let (mut items, rv) = if names.is_empty() {
            let namespace = if a.all_namespaces {
                String::new()
            } else {
                ns.to_string()
            };
            let (selector, fields) = (selector.clone(), field_selector.clone());
            let listed = list_all(&mut c, namespace, selector, fields, a.chunk_size).await?;
            undecryptable = listed.undecryptable;
            (listed.items, listed.resource_version)
        } else {
            // As kubectl: every name is read; what was found is printed, then the errors.
            let mut items = Vec::new();
            for n in &names {
                match fetch_one(&mut c, &ns, n).await {
                    Ok(s) => items.push(secret_read_from_pb(s)),
                    // A watch reads its Secret first, whatever --ignore-not-found says (kubectl).
                    Err(e) if ignore_not_found && !a.watch && e.code() == tonic::Code::NotFound => {
                    }
                    Err(e) => failed.push(client::server_error(e)),
                }
            }
            if items.is_empty() {
                if let Some(last) = failed.pop() {
                    failed.iter().for_each(CliError::print);
                    return Err(last);
                }
            }
            (items, String::new())
        };
        // Nothing found and nothing to watch: kubectl prints nothing at all.
        if ignore_not_found && items.is_empty() && failed.is_empty() && !a.watch {
            return Ok(());
        }
        if let Some(k) = &a.key {
            let Some(s) = items.first() else {
                return Ok(());
            };
            let k = k.as_str();
            let v = s.data.get(k).ok_or_else(|| {
                CliError::plain(format!(
                    "error: secret {:?} has no key {k:?} (keys: {})",
                    s.metadata.name,
                    s.data.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            std::io::stdout()
                .write_all(v.as_slice())
                .map_err(|e| CliError::new(format!("cannot write to stdout: {e}")))?;
            return Ok(());
        }
        // kubectl's JSON and YAML printers drop managedFields unless asked to keep them.
        let drop_managed =
            !a.show_managed_fields && matches!(a.output, Some(GetOutput::Yaml | GetOutput::Json));
        if drop_managed {
            items
                .iter_mut()
                .for_each(|s| s.metadata.managed_fields.clear());
        }
        let now = SystemTime::now();
        let single = names.len() == 1 && items.len() == 1;
        // Watching with -o yaml|json prints objects one by one, as kubectl does: the current
        // ones, then each event's (YAML documents separated by `---`).
        let documents = a.watch && matches!(a.output, Some(GetOutput::Yaml | GetOutput::Json));
        let mut printed = 0usize;
        // Tables: the rows of a watch's events line up with those before them, as kubectl's;
        // with --output-watch-events each row starts with its event's type.
        let table = Table {
            all_namespaces: a.all_namespaces,
            label_columns: a.label_columns.clone(),
            show_labels: a.show_labels,
        };
        let events = a.output_watch_events;
        let mut head = table.header();
        if events {
            // kubectl sizes the column for MODIFIED from the start.
            head.insert(0, format!("{:<8}", "EVENT"));
        }
        let mut growing = if a.no_headers {
            super::output::GrowingTable::headless()
        } else {
            super::output::GrowingTable::new(head)
        };
        // Custom columns (their header is a row of their own).
        let mut columns = super::output::GrowingTable::headless();
        let watch_row = |s: &Secret, kind: &str, now: SystemTime| {
            let mut r = table.row(s, now);
            if events {
                r.insert(0, kind.to_owned());
            }
            r
        };
        match &a.output {
            // A list is printed even when empty (kubectl: `[]`, or the custom columns' header);
            // named Secrets only if one was found.
            Some(o @ GetOutput::JsonPath { .. }) => {
                if a.watch {
                    // One object at a time, as the watch's events after them.
                    for s in &items {
                        if events {
                            print!("{}", watch_jsonpath(o, s, "ADDED")?);
                        } else {
                            print!(
                                "{}",
                                printer::jsonpath_text(o, std::slice::from_ref(s), true)?
                            );
                        }
                    }
                } else if !items.is_empty() || names.is_empty() {
                    print!("{}", printer::jsonpath_text(o, &items, single)?);
                }
            }
            Some(GetOutput::CustomColumns { columns: cols, .. }) => {
                if events && a.watch {
                    let values = items.iter().map(|s| printer::event_value("ADDED", s));
                    let rows = printer::custom_value_rows(cols, values, a.no_headers)?;
                    print!("{}", columns.block(rows));
                } else if !items.is_empty() || names.is_empty() {
                    let rows = printer::custom_rows(cols, &items, a.no_headers)?;
                    print!("{}", columns.block(rows));
                }
            }
            _ if documents => {
                for s in &items {
                    print_document(
                        s,
                        a.output.as_ref(),
                        events.then_some("ADDED"),
                        &mut printed,
                    );
                }
            }
            // The objects as read (their managedFields already dropped unless asked for).
            Some(GetOutput::Yaml) if single => print!(
                "{}",
                manifest::goyaml::to_yaml(&manifest::object_value(&items[0]))
            ),
            Some(GetOutput::Json) if single => {
                println!("{}", manifest::to_json(&manifest::object_value(&items[0])))
            }
            Some(GetOutput::Yaml) => print!("{}", manifest::goyaml::to_yaml(&objects(&items))),
            Some(GetOutput::Json) => println!("{}", manifest::to_json(&objects(&items))),
            Some(GetOutput::Name) => {
                for s in &items {
                    println!("secret/{}", s.metadata.name);
                }
            }
            Some(GetOutput::Wide) | None => {
                // Named Secrets that were not found are not "no resources" with --ignore-not-found.
                let quiet = ignore_not_found && !names.is_empty();
                if items.is_empty() && !a.watch && !quiet {
                    if a.all_namespaces {
                        eprintln!("No resources found");
                    } else {
                        eprintln!("No resources found in {ns} namespace.");
                    }
                } else if !items.is_empty() {
                    let rows = items.iter().map(|s| watch_row(s, "ADDED", now)).collect();
                    print!("{}", growing.block(rows));
                }
            }
        }
        if let Some(last) = failed.pop() {
            let _ = std::io::stdout().flush();
            failed.iter().for_each(CliError::print);
            return Err(last);
        }
        if a.watch {
            // The newest of the named Secrets' versions (numerically: "10" is after "9").
            let rv = if rv.is_empty() {
                items
                    .iter()
                    .filter_map(|s| s.metadata.resource_version.parse::<Revision>().ok())
                    .max()
                    .map(|r| r.to_string())
                    .unwrap_or_default()
            } else {
                rv
            };
            let mut stream = c
                .watch(pb::WatchRequest {
                    namespace: if a.all_namespaces {
                        String::new()
                    } else {
                        ns.to_string()
                    },
                    resource_version: rv,
                    label_selector: selector.clone().unwrap_or_default(),
                    // One Secret is watched by name, as kubectl does: `watch` on that name
                    // suffices (resourceNames); several need the namespace's.
                    field_selector: match names.as_slice() {
                        [one] => format!("metadata.name={one}"),
                        _ => field_selector.clone().unwrap_or_default(),
                    },
                })
                .await
                .map_err(|e| {
                    client::selector_error(
                        e,
                        selector.as_deref().unwrap_or_default(),
                        field_selector.as_deref().unwrap_or_default(),
                    )
                })?
                .into_inner();
            use tokio_stream::StreamExt;
            while let Some(ev) = stream.next().await {
                let ev = ev.map_err(client::server_error)?;
                let mut s = secret_read_from_pb(ev.object.unwrap_or_default());
                if drop_managed {
                    s.metadata.managed_fields.clear();
                }
                if !names.is_empty() && !names.contains(&s.metadata.name) {
                    continue;
                }
                match &a.output {
                    Some(GetOutput::Yaml | GetOutput::Json) => print_document(
                        &s,
                        a.output.as_ref(),
                        events.then_some(ev.r#type.as_str()),
                        &mut printed,
                    ),
                    Some(GetOutput::Name) => println!("secret/{}", s.metadata.name),
                    Some(o @ GetOutput::JsonPath { .. }) if events => {
                        print!("{}", watch_jsonpath(o, &s, &ev.r#type)?)
                    }
                    Some(o @ GetOutput::JsonPath { .. }) => {
                        print!(
                            "{}",
                            printer::jsonpath_text(o, std::slice::from_ref(&s), true)?
                        )
                    }
                    Some(GetOutput::CustomColumns { columns: cols, .. }) => {
                        let rows = if events {
                            let event = printer::event_value(&ev.r#type, &s);
                            printer::custom_value_rows(cols, [event], true)?
                        } else {
                            printer::custom_rows(cols, std::slice::from_ref(&s), true)?
                        };
                        print!("{}", columns.block(rows))
                    }
                    _ => print!(
                        "{}",
                        growing.block(vec![watch_row(&s, &ev.r#type, SystemTime::now())])
                    ),
                }
                let _ = std::io::stdout().flush();
            }
        }
        Ok::<(), CliError>(())
    })?;
    if undecryptable > 0 {
        return Err(undecryptable_error(undecryptable));
    }
    Ok(())
}

/// Secrets as kubectl's `kind: List`, each object as read.
fn objects(items: &[Secret]) -> serde_json::Value {
    manifest::list_of(items.iter().map(manifest::object_value).collect())
}

/// `keyward describe secret NAME`: metadata and key sizes, never values.
pub(super) fn describe(a: OneSecret, client: &ClientArgs) -> Result<(), CliError> {
    let name = one_name(&a.resource, a.name.as_ref())?;
    let s = rt()?.block_on(async {
        let mut c = client::connect(client).await?;
        get_one(&mut c, &a.ns.namespace, &name).await
    })?;
    print!("{}", describe_text(&s));
    Ok(())
}

/// One object of a watch as kubectl's printers write it: YAML documents separated by `---`
/// (none before the first), JSON objects one after another; with --output-watch-events
/// (`event` is its type) the event `{type, object}`, its JSON on one line.
fn print_document(
    s: &Secret,
    output: Option<&GetOutput>,
    event: Option<&str>,
    printed: &mut usize,
) {
    let yaml = output == Some(&GetOutput::Yaml);
    if yaml && *printed > 0 {
        println!("---");
    }
    match event {
        Some(kind) if yaml => print!(
            "{}",
            manifest::goyaml::to_yaml(&printer::event_value(kind, s))
        ),
        Some(kind) => println!(
            "{}",
            manifest::gojson::compact_event(kind, &manifest::object_value(s))
        ),
        None if yaml => print!("{}", manifest::goyaml::to_yaml(&manifest::object_value(s))),
        None => println!("{}", manifest::to_json(&manifest::object_value(s))),
    }
    *printed += 1;
}

/// A JSONPath template run on one watch event (`--output-watch-events`).
fn watch_jsonpath(output: &GetOutput, s: &Secret, kind: &str) -> Result<String, CliError> {
    printer::jsonpath_value(output, &printer::event_value(kind, s))
}

/// Labels (`sep` "=") or annotations (`sep` ": ") as kubectl's describe prints them: one per
/// line, the lines after the first lined up under it.
fn kv_lines(m: &BTreeMap<String, String>, sep: &str) -> String {
    if m.is_empty() {
        return "<none>\n".into();
    }
    let mut out = String::new();
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push_str(&" ".repeat(14));
        }
        let _ = writeln!(out, "{k}{sep}{v}");
    }
    out
}

/// Annotations as kubectl's describe prints them (`printAnnotationsMultiline`): `key: value`,
/// or, for a value with a newline or longer than its line allows (140 with the key), the key
/// alone and then each line of the value on its own, indented two more, cut to 138 bytes and
/// `...`.
fn annotation_lines(m: &BTreeMap<String, String>) -> String {
    const MAX_ANNOTATION_LEN: usize = 140;
    const INDENT: usize = 14;
    if m.is_empty() {
        return "<none>\n".into();
    }
    let shorten = |line: &str| -> String {
        let max = MAX_ANNOTATION_LEN - 2;
        if line.len() <= max {
            return line.to_owned();
        }
        // Go cuts bytes, whatever character they split.
        format!("{}...", String::from_utf8_lossy(&line.as_bytes()[..max]))
    };
    let mut out = String::new();
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.push_str(&" ".repeat(INDENT));
        }
        let v = v.strip_suffix('\n').unwrap_or(v);
        if v.len() + k.len() + 2 > MAX_ANNOTATION_LEN || v.contains('\n') {
            let _ = writeln!(out, "{k}:");
            for line in v.split('\n') {
                let _ = writeln!(out, "{}  {}", " ".repeat(INDENT), shorten(line));
            }
        } else {
            let _ = writeln!(out, "{k}: {v}");
        }
    }
    out
}

/// The `describe` text, kubectl's layout.
pub(super) fn describe_text(s: &Secret) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Name:         {}", s.metadata.name);
    let _ = writeln!(out, "Namespace:    {}", s.metadata.namespace);
    let _ = write!(out, "Labels:       {}", kv_lines(&s.metadata.labels, "="));
    // As kubectl's describe, without the last-applied annotation (it holds the values of a
    // manifest's stringData in clear).
    let mut annotations = s.metadata.annotations.clone();
    annotations.remove(crate::manifest::last_applied::ANNOTATION);
    let _ = write!(out, "Annotations:  {}", annotation_lines(&annotations));
    let _ = writeln!(out, "\nType:  {}", s.type_);
    if s.is_immutable() {
        let _ = writeln!(out, "Immutable:  true");
    }
    let _ = writeln!(out, "\nData\n====");
    // kubectl's tabwriter: the sizes lined up two spaces after the longest key.
    let rows: Vec<Vec<String>> = s
        .data
        .iter()
        .map(|(k, v)| vec![format!("{k}:"), format!("{} bytes", v.as_slice().len())])
        .collect();
    out.push_str(&super::output::columns(&rows, 2, &[]));
    out
}

/// `keyward delete secret NAME...`, or the Secrets `--all`, `-l` or `--field-selector` select.
pub(super) fn delete(a: DeleteArgs, client: &ClientArgs) -> Result<(), CliError> {
    let names = names_of(&a.resource, &a.names)?;
    let (selector, field_selector) = (given(&a.selector), given(&a.field_selector));
    let all = a.all == Some(true);
    let selecting = all || selector.is_some() || field_selector.is_some();
    // kubectl's rules and words.
    if all && (selector.is_some() || field_selector.is_some()) {
        return Err(CliError::plain(
            "error: setting 'all' parameter but found a non empty selector. ",
        ));
    }
    if selecting && !names.is_empty() {
        return Err(CliError::plain(
            "error: name cannot be provided when a selector is specified",
        ));
    }
    if a.all_namespaces && !names.is_empty() {
        return Err(CliError::plain(
            "error: a resource cannot be retrieved by name across all namespaces",
        ));
    }
    if names.is_empty() && !selecting {
        return Err(no_name());
    }
    if selecting && a.resource_version.is_some() {
        return Err(CliError::new(
            "--resource-version applies to named Secrets, not to --all, -l or --field-selector",
        ));
    }
    let ignore_not_found = a.ignore_not_found.unwrap_or(selecting);
    let mut undecryptable = 0;
    rt()?.block_on(async {
        let mut c = client::connect(client).await?;
        let targets: Vec<(names::Namespace, String)> = if selecting {
            let listed = list_all(
                &mut c,
                if a.all_namespaces {
                    String::new()
                } else {
                    a.ns.namespace.to_string()
                },
                selector.clone(),
                field_selector.clone(),
                500,
            )
            .await?;
            undecryptable = listed.undecryptable;
            if listed.items.is_empty() && undecryptable == 0 {
                println!("No resources found");
                return Ok(());
            }
            listed
                .items
                .into_iter()
                .map(|s| {
                    let ns = s
                        .metadata
                        .namespace
                        .parse()
                        .unwrap_or_else(|_| a.ns.namespace.clone());
                    (ns, s.metadata.name)
                })
                .collect()
        } else {
            names
                .into_iter()
                .map(|n| (a.ns.namespace.clone(), n))
                .collect()
        };
        let mut first_err = None;
        for (ns, n) in &targets {
            let res = c
                .delete(pb::DeleteRequest {
                    namespace: ns.to_string(),
                    name: n.clone(),
                    uid: String::new(),
                    resource_version: a.resource_version.clone().unwrap_or_default(),
                    unsafe_ignore_decrypt_errors: a.unsafe_ignore_decrypt_errors,
                })
                .await;
            match res {
                Ok(_) => println!("secret \"{n}\" deleted"),
                Err(e) if ignore_not_found && e.code() == tonic::Code::NotFound => {}
                Err(e) => {
                    let e = client::server_error(e);
                    eprintln!("{}", e.message);
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            // Each error was printed as it happened; exit non-zero without repeating it.
            Some(_) => Err(CliError::silent()),
            None if undecryptable > 0 => Err(undecryptable_error(undecryptable)),
            None => Ok(()),
        }
    })
}

/// A selector flag's value, trimmed; an empty one is none (as kubectl reads `-l ''`: not a
/// selector that selects everything).
fn given(selector: &Option<String>) -> Option<String> {
    selector
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// What [`list_all`] found.
struct Listed {
    items: Vec<Secret>,
    /// The list's resourceVersion (its first page's).
    resource_version: String,
    /// Secrets that could not be decrypted (each reported on stderr as it came).
    undecryptable: usize,
}

/// Every Secret of `namespace` ("" for all) the selectors select, in pages of `limit` (0: at
/// once), all at one revision.
async fn list_all(
    c: &mut Client,
    namespace: String,
    label_selector: Option<String>,
    field_selector: Option<String>,
    limit: u32,
) -> Result<Listed, CliError> {
    let mut listed = Listed {
        items: Vec::new(),
        resource_version: String::new(),
        undecryptable: 0,
    };
    let mut token = String::new();
    loop {
        let page = c
            .list(pb::ListRequest {
                namespace: namespace.clone(),
                label_selector: label_selector.clone().unwrap_or_default(),
                limit: i64::from(limit),
                r#continue: std::mem::take(&mut token),
                field_selector: field_selector.clone().unwrap_or_default(),
            })
            .await
            .map_err(|e| {
                client::selector_error(
                    e,
                    label_selector.as_deref().unwrap_or_default(),
                    field_selector.as_deref().unwrap_or_default(),
                )
            })?
            .into_inner();
        // Secrets that cannot be decrypted are listed by key only: reported, and the command
        // fails at the end.
        for e in &page.errors {
            eprintln!("error: {}: {}", e.key, e.message);
        }
        listed.undecryptable += page.errors.len();
        listed
            .items
            .extend(page.items.into_iter().map(secret_read_from_pb));
        if listed.resource_version.is_empty() {
            listed.resource_version = page.resource_version;
        }
        if page.r#continue.is_empty() {
            return Ok(listed);
        }
        token = page.r#continue;
    }
}

/// The error of a command that met Secrets it could not decrypt (each listed above it).
fn undecryptable_error(n: usize) -> CliError {
    CliError::plain(format!(
        "error: {n} Secrets could not be decrypted (listed above); see `keyward encryption status`"
    ))
}

/// `keyward history secret NAME`.
pub(super) fn history(a: OneSecret, client: &ClientArgs) -> Result<(), CliError> {
    let name = one_name(&a.resource, a.name.as_ref())?;
    let h = rt()?.block_on(async {
        let mut c = client::connect(client).await?;
        c.history(pb::HistoryRequest {
            namespace: a.ns.namespace.to_string(),
            name,
        })
        .await
        .map_err(client::server_error)
    })?;
    let mut rows = vec![["REVISION", "TIME", "CHANGE", "DATA", "KEYS"]
        .map(String::from)
        .to_vec()];
    for e in h.into_inner().entries {
        let s = e.secret.unwrap_or_default();
        rows.push(vec![
            e.revision.to_string(),
            e.time,
            e.change,
            s.data.len().to_string(),
            s.data.keys().cloned().collect::<Vec<_>>().join(","),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// `keyward rollback secret NAME --to-revision N`.
pub(super) fn rollback(a: RollbackArgs, client: &ClientArgs) -> Result<(), CliError> {
    let name = one_name(&a.resource, a.name.as_ref())?;
    let s = rt()?.block_on(async {
        let mut c = client::connect(client).await?;
        c.rollback(pb::RollbackRequest {
            namespace: a.ns.namespace.to_string(),
            name: name.clone(),
            to_revision: a.to_revision.get(),
        })
        .await
        .map_err(client::server_error)
    })?;
    let s = s.into_inner();
    let rv = s.metadata.map(|m| m.resource_version).unwrap_or_default();
    println!(
        "secret/{name} rolled back to revision {} (resourceVersion {rv})",
        a.to_revision
    );
    Ok(())
}

/// `keyward edit secret NAME`: `$KUBE_EDITOR` (then `$EDITOR`, as kubectl, then `$VISUAL`,
/// then `vi`) on the YAML; on an error
/// the file is reopened with the error as a comment at the top; an unchanged or empty file
/// cancels; the update carries the resourceVersion it was edited from. The plaintext file lives
/// in a private directory on tmpfs when there is one, removed on every way out, signals included.
pub(super) fn edit(a: OneSecret, client: &ClientArgs) -> Result<(), CliError> {
    let name = one_name(&a.resource, a.name.as_ref())?;
    let rt = rt()?;
    let mut c = rt.block_on(client::connect(client))?;
    let original = rt.block_on(get_one(&mut c, &a.ns.namespace, &name))?;
    let original_yaml = Zeroizing::new(manifest::to_yaml(&original));
    let editor = ["KUBE_EDITOR", "EDITOR", "VISUAL"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|e| !e.trim().is_empty()))
        .unwrap_or_else(|| "vi".into());
    let dir = super::process::plaintext_temp_dir("keyward-edit-")?;
    let editing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    super::process::remove_on_signal(&rt, dir.path().to_owned(), editing.clone())?;
    let path = dir
        .path()
        .join(format!("{}-secret-{}.yaml", a.ns.namespace, name));
    let header = "# Please edit the object below. Lines beginning with a '#' will be ignored,\n\
                  # and an empty file will abort the edit. If an error occurs while saving this file will be\n\
                  # reopened with the relevant failures.\n#\n";
    let mut content = Zeroizing::new(format!("{header}{}", *original_yaml));
    // The last edit that failed: saved again unchanged, the edit stops (as kubectl does).
    let mut failed: Option<Zeroizing<String>> = None;
    loop {
        write_private(&path, content.as_bytes())?;
        editing.store(true, std::sync::atomic::Ordering::SeqCst);
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{editor} \"$1\""))
            .arg("sh")
            .arg(&path)
            .status();
        editing.store(false, std::sync::atomic::Ordering::SeqCst);
        let status = status
            .map_err(|e| CliError::new(format!("cannot start the editor {editor:?}: {e}")))?;
        if !status.success() {
            return Err(CliError::plain(format!(
                "error: the editor {editor:?} exited with {status}; edit cancelled"
            )));
        }
        let edited = Zeroizing::new(
            std::fs::read_to_string(&path)
                .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?,
        );
        let body: Zeroizing<String> = Zeroizing::new(
            edited
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect(),
        );
        if body.trim().is_empty() {
            eprintln!("Edit cancelled, saved file was empty.");
            return Ok(());
        }
        if *body == *original_yaml {
            eprintln!("Edit cancelled, no changes made.");
            return Ok(());
        }
        if failed.as_ref() == Some(&body) {
            return Err(CliError::new(
                "Edit cancelled, no valid changes were saved.",
            ));
        }
        let err = match manifest::parse(&body, "the edited file") {
            Ok(mut v) if v.len() == 1 => {
                let mut s = v.remove(0);
                if s.metadata.name != original.metadata.name
                    || s.metadata.namespace != original.metadata.namespace
                {
                    Some(
                        "metadata.name and metadata.namespace cannot be changed by edit".to_owned(),
                    )
                } else {
                    // The update is conditional on the version that was edited.
                    s.metadata.resource_version = original.metadata.resource_version.clone();
                    let res = rt.block_on(c.update(pb::UpdateRequest {
                        secret: Some(secret_to_pb(s)),
                        dry_run: false,
                    }));
                    match res {
                        Ok(_) => {
                            println!("secret/{name} edited");
                            return Ok(());
                        }
                        Err(e)
                            if e.code() == tonic::Code::Aborted
                                || e.code() == tonic::Code::NotFound =>
                        {
                            // Someone changed or deleted the Secret since it was opened: never
                            // overwrite their change.
                            return Err(client::server_error(e)
                                .hint("the Secret changed while you edited it; your edit was not applied: run edit again"));
                        }
                        Err(e) => Some(client::server_error(e).message),
                    }
                }
            }
            Ok(_) => Some("the edited file must hold exactly one Secret".to_owned()),
            Err(e) => Some(e.to_string()),
        };
        let msg = err.unwrap_or_default();
        let commented: String = msg.lines().map(|l| format!("# {l}\n")).collect();
        content = Zeroizing::new(format!(
            "{header}# {}\n{commented}#\n{}",
            "The edited file had a problem:", *body
        ));
        failed = Some(body);
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
    std::io::Write::write_all(&mut f, data)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}
