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
use super::CliError;
use crate::api::{secret_from_pb, secret_to_pb};
use crate::manifest::{self, kustomize, same_content, ManifestError, SourcedSecret};
use crate::names::Namespace;
use crate::pb::keyward_v1 as pb;
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
        items.extend(
            manifest::parse(&text, source)?
                .into_iter()
                .map(|secret| SourcedSecret {
                    secret,
                    source: source.to_owned(),
                }),
        );
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

    fn desired(v: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = "a".into();
        s.data
            .insert("k".into(), SecretBytes::new(v.as_bytes().to_vec()));
        crate::store::model::normalize(&mut s);
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
