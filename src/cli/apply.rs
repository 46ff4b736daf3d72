//! `keyward apply -f FILE|DIR|-` and `keyward apply -k DIR` (kustomize secretGenerator).
//!
//! Every input is read, parsed and validated before the server is contacted, so a bad manifest
//! writes nothing. Then each Secret is applied as kubectl's client-side apply does: created with
//! the `kubectl.kubernetes.io/last-applied-configuration` annotation when absent; otherwise
//! patched with the three-way merge of the last applied manifest, the new one and the live
//! object ([`crate::manifest::last_applied`]), sent as an update conditional on the live
//! resourceVersion (or on the manifest's, when it names one) and retried after a conflict as
//! kubectl retries. A server error for one Secret is printed kubectl-style and the others are
//! still applied.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde_json::{Map, Value};
use tonic::Code;

use super::client::{self, Client, ClientArgs};
use super::CliError;
use crate::api::{secret_from_pb, secret_to_pb};
use crate::manifest::last_applied::{self, ANNOTATION};
use crate::manifest::{self, kustomize, ManifestError, SourcedSecret};
use crate::names::Namespace;
use crate::pb::keyward_v1 as pb;
use crate::store::model::normalize;
use crate::store::Secret;

const AFTER_HELP: &str = "\
How the manifest is applied:
  As kubectl apply (client-side): keyward records the manifest in the
  kubectl.kubernetes.io/last-applied-configuration annotation and merges three ways: a data
  key, label or annotation the last applied manifest had and the new one drops is removed;
  what others added is kept; what the manifest sets is set. As with kubectl, dropping a
  stringData key does not remove the data key it wrote. A metadata.resourceVersion in the
  manifest is a precondition: if the Secret changed since, the apply fails with a Conflict.

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
    pub namespace: Option<Namespace>,
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
        (Some(dir), true) => kustomize::build(dir).map_err(flag_error)?,
        (None, false) => read_inputs(&a.filename, a.recursive)?,
        _ => {
            return Err(CliError::new("must specify one of -f and -k")
                .hint("keyward apply -f FILE|DIR|- or keyward apply -k DIR"))
        }
    };
    if items.is_empty() {
        return Err(CliError::new("no objects passed to apply"));
    }
    manifest::resolve_namespaces(&mut items, a.namespace.as_ref()).map_err(flag_error)?;
    let manifests: Vec<Value> = items.iter().map(manifest_object).collect();
    manifest::validate(&mut items)?;
    super::process::runtime()?.block_on(async {
        let mut c = client::connect(client).await?;
        let suffix = match a.dry_run {
            DryRun::None => "",
            DryRun::Client => " (dry run)",
            DryRun::Server => " (server dry run)",
        };
        let mut failed = false;
        let mut printed = Vec::new();
        for (it, manifest) in items.iter().zip(&manifests) {
            let name = it.secret.metadata.name.clone();
            match apply_one(&mut c, it, manifest, a.dry_run).await {
                Ok((outcome, obj)) => match a.output {
                    None => println!("secret/{name} {}{suffix}", outcome.verb()),
                    Some(Output::Name) => println!("secret/{name}"),
                    Some(_) => printed.push(obj),
                },
                Err(e) => {
                    e.print();
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
            Some(Output::Yaml) if !printed.is_empty() => {
                print!("{}", manifest::list_yaml(&printed))
            }
            Some(Output::Json) if !printed.is_empty() => {
                println!("{}", manifest::list_json(&printed))
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

/// The manifest as kubectl sends it: as written, with the namespace it resolved to (a
/// generated Secret: as generated).
fn manifest_object(it: &SourcedSecret) -> Value {
    let mut v = match &it.manifest {
        Some(v) => v.clone(),
        None => serde_json::to_value(&it.secret).unwrap_or(Value::Null),
    };
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "namespace".into(),
            Value::String(it.secret.metadata.namespace.clone()),
        );
    } else if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "metadata".into(),
            serde_json::json!({"namespace": it.secret.metadata.namespace}),
        );
    }
    v
}

/// How many times kubectl patches again after a conflict, and after how many it starts
/// waiting a second between tries.
const MAX_PATCH_RETRY: usize = 5;
const TRIES_BEFORE_BACKOFF: usize = 1;

/// kubectl's description of the object in its errors (`resource.Info`'s `String()`).
fn info(ns: &str, name: &str) -> String {
    format!(
        "Resource: \"/v1, Resource=secrets\", GroupVersionKind: \"/v1, Kind=Secret\"\nName: {name:?}, Namespace: {ns:?}"
    )
}

/// Applies one Secret (`it.secret` normalized, `manifest` as given); returns what happened
/// and the object as it now is (or would be, for a dry run). Errors are worded as kubectl's.
async fn apply_one(
    c: &mut Client,
    it: &SourcedSecret,
    manifest: &Value,
    dry_run: DryRun,
) -> Result<(Outcome, Secret), CliError> {
    let ns = it.secret.metadata.namespace.clone();
    let name = it.secret.metadata.name.clone();
    let modified = last_applied::modified(manifest);
    let source = &it.source;
    let mut attempt = 0;
    loop {
        if attempt > TRIES_BEFORE_BACKOFF {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let live = match c
            .get(pb::GetRequest {
                namespace: ns.clone(),
                name: name.clone(),
                revision: 0,
            })
            .await
        {
            Ok(r) => secret_from_pb(r.into_inner()),
            Err(s) if s.code() == Code::NotFound && attempt == 0 => {
                return create(c, &modified, dry_run, source).await;
            }
            Err(s) if attempt == 0 => {
                let context = format!(
                    "error when retrieving current configuration of:\n{}\nfrom server for: {source:?}: ",
                    info(&ns, &name)
                );
                return Err(client::server_error_when(s, &context));
            }
            Err(s) => return Err(client::server_error(s)),
        };
        let current = serde_json::to_value(&live).unwrap_or(Value::Null);
        if attempt == 0
            && dry_run != DryRun::Client
            && !live.metadata.annotations.contains_key(ANNOTATION)
        {
            eprintln!(
                "Warning: resource secrets/{name} is missing the {ANNOTATION} annotation which is required by keyward apply. keyward apply should only be used on resources created declaratively by either kubectl create --save-config, kubectl apply or keyward apply. The missing annotation will be patched automatically."
            );
        }
        let original = last_applied::original(&current);
        let patch = last_applied::three_way_patch(original.as_ref(), &modified, &current);
        if dry_run != DryRun::Client && patch.is_empty() {
            return Ok((Outcome::Unchanged, live));
        }
        let mut next = patched(&current, &patch, source, &name)?;
        // A resourceVersion the patch carries (from the manifest) is the precondition, as it is
        // for kube-apiserver; otherwise the live one.
        let manifest_rv = patch
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        next.metadata.resource_version = manifest_rv
            .clone()
            .unwrap_or_else(|| live.metadata.resource_version.clone());
        if dry_run == DryRun::Client {
            return Ok((Outcome::Configured, next));
        }
        match c
            .update(pb::UpdateRequest {
                secret: Some(secret_to_pb(next)),
                dry_run: dry_run == DryRun::Server,
            })
            .await
        {
            Ok(r) => return Ok((Outcome::Configured, secret_from_pb(r.into_inner()))),
            // Someone else changed it between the read and the write: read and patch again.
            // (A stale resourceVersion from the manifest stays stale: no point retrying.)
            Err(s)
                if s.code() == Code::Aborted
                    && manifest_rv.is_none()
                    && attempt < MAX_PATCH_RETRY => {}
            Err(s) => {
                let context = format!(
                    "error when applying patch:\n{}\nto:\n{}\nfor: {source:?}: ",
                    last_applied::redacted(&patch),
                    info(&ns, &name)
                );
                return Err(client::server_error_when(s, &context));
            }
        }
        attempt += 1;
    }
}

/// Creates the Secret from its manifest with the last-applied annotation.
async fn create(
    c: &mut Client,
    modified: &Value,
    dry_run: DryRun,
    source: &str,
) -> Result<(Outcome, Secret), CliError> {
    let mut secret: Secret = serde_json::from_value(go_nulls(modified.clone()))
        .map_err(|e| CliError::new(crate::redact::serde_values(&e.to_string())))?;
    normalize(&mut secret);
    if dry_run == DryRun::Client {
        return Ok((Outcome::Created, secret));
    }
    c.create(pb::CreateRequest {
        secret: Some(secret_to_pb(secret)),
        dry_run: dry_run == DryRun::Server,
    })
    .await
    .map(|r| (Outcome::Created, secret_from_pb(r.into_inner())))
    .map_err(|s| client::server_error_when(s, &format!("error when creating {source:?}: ")))
}

/// The live object with the patch applied, as a normalized Secret.
fn patched(
    current: &Value,
    patch: &Map<String, Value>,
    source: &str,
    name: &str,
) -> Result<Secret, CliError> {
    let v = last_applied::apply_patch(current, patch);
    let mut s: Secret = serde_json::from_value(go_nulls(v)).map_err(|e| {
        CliError::new(format!(
            "error when applying patch to secret {name:?} from {source:?}: {}",
            crate::redact::serde_values(&e.to_string())
        ))
    })?;
    normalize(&mut s);
    Ok(s)
}

/// `v` with its `null`s read as Go reads them into a Secret
/// ([`crate::manifest::codec::nulls_as_go_decodes_them`]: `creationTimestamp: null` is no
/// field).
fn go_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        crate::manifest::codec::nulls_as_go_decodes_them(m);
    }
    v
}

/// Adds the flag to the library's errors that concern one (as kubectl words them).
fn flag_error(e: ManifestError) -> CliError {
    match &e {
        ManifestError::NotKustomizeDir { .. } | ManifestError::KustomizeDir { .. } => {
            CliError::new(format!("-k {e}"))
        }
        ManifestError::NamespaceMismatch { object, .. } => CliError::new(format!(
            "{e}. You must pass '--namespace={object}' to perform this operation."
        )),
        _ => e.into(),
    }
}

/// Reads and parses every `-f` input.
fn read_inputs(inputs: &[String], recursive: bool) -> Result<Vec<SourcedSecret>, CliError> {
    let mut items = Vec::new();
    let mut stdin_read = false;
    for input in inputs {
        if input != "-" {
            items.extend(manifest::read_manifests(Path::new(input), recursive)?);
            continue;
        }
        if stdin_read {
            return Err(CliError::new("-f - (stdin) can be given only once"));
        }
        stdin_read = true;
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::new(format!("cannot read stdin: {e}")))?;
        let source = "STDIN";
        items.extend(manifest::parse_objects(&text, source)?.into_iter().map(
            |(secret, manifest)| SourcedSecret {
                secret,
                source: source.to_owned(),
                manifest: Some(manifest),
            },
        ));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::SecretBytes;

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

    /// The manifest of Secret `a` with `data.k = v`, and the item apply gets for it.
    fn desired(v: &str) -> (SourcedSecret, Value) {
        let mut s = Secret::default();
        s.metadata.name = "a".into();
        s.metadata.namespace = "default".into();
        s.data
            .insert("k".into(), SecretBytes::new(v.as_bytes().to_vec()));
        let manifest = serde_json::to_value(&s).unwrap();
        crate::store::model::normalize(&mut s);
        let item = SourcedSecret::new(s, "m.yaml");
        (item, manifest)
    }

    /// Applies `desired(v)` against a fake prepared by `setup`; returns the outcome (or the
    /// error's first line) and the calls the fake saw.
    fn apply_against(
        setup: impl FnOnce(&mut FakeState),
        v: &str,
    ) -> (Result<Outcome, String>, Vec<&'static str>, Option<String>) {
        let fake = Fake::default();
        setup(&mut fake.0.lock().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("fake.sock");
        let rt = super::super::process::runtime().unwrap();
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
                as_user: None,
                as_group: Vec::new(),
                as_uid: None,
            };
            let mut c = client::connect(&args).await.map_err(|e| e.message).unwrap();
            let (item, manifest) = desired(v);
            apply_one(&mut c, &item, &manifest, DryRun::None).await
        });
        let st = fake.0.lock().unwrap();
        let stored = st
            .secret
            .as_ref()
            .and_then(|s| s.data.get("k"))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        (
            res.map(|(o, _)| o)
                .map_err(|e| e.message.lines().next().unwrap_or("").to_owned()),
            st.calls.clone(),
            stored,
        )
    }

    /// Stores `a` as a first apply of `data.k = v1` leaves it.
    fn applied_v1(st: &mut FakeState) {
        let (_, manifest) = desired("v1");
        let mut s: Secret = serde_json::from_value(last_applied::modified(&manifest)).unwrap();
        crate::store::model::normalize(&mut s);
        Fake::default().with_rv(st, secret_to_pb(s));
    }

    #[test]
    fn conflicts_are_retried_as_kubectl_retries() {
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
            apply_against(applied_v1, "v1"),
            (Ok(Outcome::Unchanged), vec!["get"], Some("v1".into()))
        );
        assert_eq!(
            apply_against(applied_v1, "v2"),
            (
                Ok(Outcome::Configured),
                vec!["get", "update"],
                Some("v2".into())
            )
        );
        // One conflict: read again, patch again with the new resourceVersion.
        assert_eq!(
            apply_against(
                |st| {
                    applied_v1(st);
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
        // Conflicts that persist: after kubectl's five retries the last is reported.
        let mut calls = vec!["get", "update"];
        for _ in 0..MAX_PATCH_RETRY {
            calls.extend(["get", "update"]);
        }
        assert_eq!(
            apply_against(
                |st| {
                    applied_v1(st);
                    st.conflicts = 10;
                },
                "v2"
            ),
            (
                Err("Error from server (Conflict): error when applying patch:".into()),
                calls,
                Some("v1".into())
            )
        );
        // Created by someone else between the read and the create: kubectl does not retry.
        let (other, _) = desired("v1");
        assert_eq!(
            apply_against(|st| st.appears = Some(secret_to_pb(other.secret)), "v1"),
            (
                Err("Error from server (AlreadyExists): error when creating \"m.yaml\": secrets \"a\" already exists".into()),
                vec!["get", "create"],
                Some("v1".into())
            )
        );
    }
}
