//! Handing secrets to processes: `keyward run` (environment variables, then exec) and
//! `keyward mount` (files, written like kubelet's atomic writer).
//!
//! Both wait for a Secret that does not exist yet, or a server that does not answer yet, with
//! exponential backoff up to `--timeout` (each retry is announced on stderr), unless
//! `--no-wait`. Values never reach argv, stdout or the log.
//!
//! The variables and files themselves are built and written by [`crate::projection`]
//! (`mount` writes like kubelet's atomic writer); this module fetches the Secrets, waits,
//! watches, execs and prints.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::client::{self, Client, ClientArgs};
use super::secrets::Namespace;
use super::CliError;
use crate::api::secret_from_pb;
use crate::names::{self, DataKey, SecretName};
use crate::pb::keyward_v1 as pb;
use crate::projection::{
    self, AtomicWriter, EnvFrom, EnvNotice, EnvVar, Item, Mode, Projection, ProjectionError,
};
use crate::store::Secret;

/// First wait between attempts; doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts (and between watch reconnections).
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// `keyward run`.
///
/// Examples:
///   keyward run --env-from secret/db -- ./server
///   keyward run --env-from secret/db:DB_ --env API_TOKEN=secret/api:token -- ./server --port 8080
#[derive(Debug, Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    ns: Namespace,
    /// Every key of the Secret becomes a variable, named PREFIX+key (like envFrom); keys that
    /// are not valid variable names by kubelet's rule ([-._a-zA-Z][-._a-zA-Z0-9]*) are skipped
    /// and listed on stderr. Repeatable; later ones win.
    #[arg(long = "env-from", value_name = "secret/NAME[:PREFIX]", value_parser = parse_env_from)]
    env_from: Vec<EnvFrom>,
    /// One key as one variable (like secretKeyRef); overrides --env-from. Repeatable.
    #[arg(long = "env", value_name = "VAR=secret/NAME:KEY", value_parser = parse_env_var)]
    env: Vec<EnvVar>,
    /// Run anyway when a Secret or a key is missing (the variables are then not set); a
    /// missing Secret is not waited for.
    #[arg(long)]
    optional: bool,
    /// Let --env-from set this loader or interpreter variable (PATH, SHELL, LD_*, DYLD_*,
    /// BASH_ENV, ENV, PYTHON*, PERL*, RUBY*, NODE_*, JAVA_TOOL_OPTIONS, _JAVA_OPTIONS,
    /// CLASSPATH, GLIBC_TUNABLES, IFS, EDITOR, PAGER, GIT_SSH_COMMAND, ...), which is skipped by
    /// default because whoever writes the Secret would choose the code that runs. Repeatable.
    #[arg(long = "allow-env", value_name = "NAME")]
    allow_env: Vec<String>,
    #[command(flatten)]
    wait: WaitArgs,
    /// The command and its arguments; it replaces keyward (same pid, signals and exit code).
    /// A name without a slash is looked up in keyward's own PATH, before any variable is set.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `keyward mount`.
///
/// Examples:
///   keyward mount secret/db /run/secrets/db
///   keyward mount secret/web-tls /run/tls --items tls.crt=certs/server.crt --items tls.key=key.pem:0400 --watch
#[derive(Debug, Args)]
pub(super) struct MountArgs {
    /// The Secret: secret/NAME.
    #[arg(value_name = "secret/NAME", value_parser = parse_secret_ref)]
    secret: SecretRef,
    /// Target directory (created 0700 if missing; should be a tmpfs).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    ns: Namespace,
    /// Project only these keys, each to a relative path (like items); a listed key that does
    /// not exist is an error and nothing is written. Repeatable.
    #[arg(long = "items", value_name = "KEY=PATH[:MODE]", value_parser = parse_item)]
    items: Vec<Item>,
    /// Octal mode of the files (like defaultMode, but private by default: kubelet's 0644 is
    /// meant for a pod-private volume).
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode)]
    default_mode: Mode,
    /// Keep running and re-project every change of the Secret (stop with SIGTERM or Ctrl-C).
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    wait: WaitArgs,
}

/// `--timeout` and `--no-wait`.
#[derive(Debug, Clone, Args)]
struct WaitArgs {
    /// How long to wait for a missing Secret or an unreachable server (e.g. 30s, 1m30s, 2min).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    timeout: Duration,
    /// Fail at once when the Secret is missing or the server is unreachable.
    #[arg(long)]
    no_wait: bool,
}

/// A `secret/NAME` argument.
#[derive(Debug, Clone)]
struct SecretRef(SecretName);

const SECRET_REF_FORM: &str = "expected secret/NAME, where NAME is a lowercase RFC 1123 subdomain";

fn secret_name(s: &str) -> Option<SecretName> {
    let name = s
        .strip_prefix("secret/")
        .or_else(|| s.strip_prefix("secrets/"))?;
    SecretName::try_from(name).ok()
}

fn parse_secret_ref(s: &str) -> Result<SecretRef, String> {
    secret_name(s)
        .map(SecretRef)
        .ok_or_else(|| SECRET_REF_FORM.to_owned())
}

fn parse_env_from(s: &str) -> Result<EnvFrom, String> {
    const FORM: &str = "expected secret/NAME or secret/NAME:PREFIX";
    let (secret, prefix) = s.split_once(':').unwrap_or((s, ""));
    let name = secret_name(secret).ok_or_else(|| format!("{FORM} ({SECRET_REF_FORM})"))?;
    let errors = projection::env_name_errors(prefix);
    if !prefix.is_empty() && !errors.is_empty() {
        return Err(format!(
            "{FORM}: PREFIX: Invalid value: {prefix:?}: {}",
            errors.join(", ")
        ));
    }
    Ok(EnvFrom {
        secret: name,
        prefix: prefix.to_owned(),
    })
}

fn parse_env_var(s: &str) -> Result<EnvVar, String> {
    const FORM: &str = "expected VAR=secret/NAME:KEY";
    let (var, rest) = s.split_once('=').ok_or(FORM)?;
    let errors = projection::env_name_errors(var);
    if !errors.is_empty() {
        return Err(format!(
            "{FORM}: VAR: Invalid value: {var:?}: {}",
            errors.join(", ")
        ));
    }
    let (secret, key) = rest.split_once(':').ok_or(FORM)?;
    let name = secret_name(secret).ok_or_else(|| format!("{FORM} ({SECRET_REF_FORM})"))?;
    let key = DataKey::parse("KEY", key).map_err(|e| format!("{FORM}: {e}"))?;
    Ok(EnvVar {
        var: var.to_owned(),
        secret: name,
        key,
    })
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    Mode::parse(s).map_err(|e| e.to_string())
}

fn parse_item(s: &str) -> Result<Item, String> {
    const FORM: &str = "expected KEY=PATH or KEY=PATH:MODE, e.g. tls.crt=certs/server.crt:0400";
    let (key, rest) = s.split_once('=').ok_or(FORM)?;
    let key = DataKey::parse("KEY", key).map_err(|e| format!("{FORM}: {e}"))?;
    // What follows the last colon is the mode when it is empty or looks meant as one (to be
    // refused unless it is an octal mode): a number in any form, typos such as `O400` or
    // `0640x`, or a symbolic mode such as `rw` or `u=rw`. Any other colon belongs to the path.
    let meant_as_mode = |m: &str| {
        let symbolic = m.bytes().all(|c| b"rwxXstugoa+=-,".contains(&c));
        let numeric = m
            .bytes()
            .next()
            .is_some_and(|c| b"0123456789oO+-".contains(&c))
            && m.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'+');
        symbolic || numeric
    };
    let (path, mode) = match rest.rsplit_once(':') {
        Some((p, m)) if meant_as_mode(m) => (
            p,
            Some(parse_mode(m).map_err(|e| format!("{FORM}: MODE {m:?}: {e}"))?),
        ),
        _ => (rest, None),
    };
    Item::new(key, path, mode).map_err(|e| format!("{FORM}: {e}"))
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    crate::go_duration::parse_unsigned(s)
        .or_else(|| super::flags::parse_duration(s).ok())
        .ok_or_else(|| "expected a duration such as 30s, 1m30s, 1.5m, 500ms or 2min".to_owned())
}

/// Why an attempt to read a Secret did not return it.
enum Attempt {
    /// The Secret does not exist (yet).
    Missing(CliError),
    /// The server could not be reached or is unavailable; worth retrying.
    Unreachable(String, CliError),
    /// Anything else (bad request, permission denied): retrying will not help.
    Fatal(CliError),
}

/// Reads Secrets, waiting with backoff for missing ones and for the server.
struct Fetcher<'a> {
    args: &'a ClientArgs,
    client: Option<Client>,
    /// How long to keep trying; `None` with `--no-wait`.
    timeout: Option<Duration>,
    start: Instant,
}

impl<'a> Fetcher<'a> {
    fn new(args: &'a ClientArgs, wait: &WaitArgs) -> Self {
        Self {
            args,
            client: None,
            timeout: (!wait.no_wait).then_some(wait.timeout),
            start: Instant::now(),
        }
    }

    async fn attempt(
        &mut self,
        ns: &names::Namespace,
        name: &SecretName,
    ) -> Result<Secret, Attempt> {
        let mut client = match self.client.take() {
            Some(c) => c,
            None => match client::connect(self.args).await {
                Ok(c) => c,
                Err(e) => return Err(Attempt::Unreachable(e.message.clone(), e)),
            },
        };
        let req = pb::GetRequest {
            namespace: ns.to_string(),
            name: name.to_string(),
            revision: 0,
        };
        let got = client.get(req).await;
        match got {
            Ok(r) => {
                self.client = Some(client);
                Ok(secret_from_pb(r.into_inner()))
            }
            // Reconnect next time: the connection may be what failed.
            Err(s) if retryable(&s) => {
                let reason = format!("server unavailable: {}", s.message());
                Err(Attempt::Unreachable(reason, client::server_error(s)))
            }
            Err(s) => {
                self.client = Some(client);
                if s.code() == Code::NotFound {
                    Err(Attempt::Missing(client::server_error(s)))
                } else {
                    Err(Attempt::Fatal(client::server_error(s)))
                }
            }
        }
    }

    /// Reads `ns/name`. A missing Secret is `Ok(None)` at once when `missing_ok`; otherwise it
    /// is waited for like an unreachable server.
    async fn fetch(
        &mut self,
        ns: &names::Namespace,
        name: &SecretName,
        missing_ok: bool,
    ) -> Result<Option<Secret>, CliError> {
        let mut delay = FIRST_BACKOFF;
        loop {
            let (reason, err) = match self.attempt(ns, name).await {
                Ok(s) => return Ok(Some(s)),
                Err(Attempt::Missing(_)) if missing_ok => return Ok(None),
                Err(Attempt::Missing(e)) => ("not found".to_owned(), e),
                Err(Attempt::Unreachable(reason, e)) => (reason, e),
                Err(Attempt::Fatal(e)) => return Err(e),
            };
            let Some(timeout) = self.timeout else {
                return Err(err);
            };
            let left = timeout.saturating_sub(self.start.elapsed());
            if left.is_zero() {
                let e = CliError::new(format!(
                    "timed out after {} waiting for secret {ns}/{name}: {reason}",
                    humantime::format_duration(timeout)
                ));
                return Err(match err.hint {
                    Some(h) => e.hint(h),
                    None => e.hint(format!(
                        "create it (keyward create secret generic {name} -n {ns} ...), or wait longer with --timeout"
                    )),
                });
            }
            let left_ms =
                Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
            let pause = delay.min(left_ms.max(Duration::from_millis(1)));
            eprintln!(
                "waiting for secret {ns}/{name}: {reason} (retrying in {})",
                humantime::format_duration(pause)
            );
            tokio::time::sleep(pause).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }
}

/// Statuses that mean "the server is not there right now".
fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    ) || crate::uds::refused_while_closing(s)
}

/// Runs `keyward run`.
pub(super) fn run(a: RunArgs, client: &ClientArgs) -> Result<(), CliError> {
    let ns = &a.ns.namespace;
    let Some((program, args)) = a.command.split_first() else {
        return Err(CliError::new("a command is required after --"));
    };
    // Resolved before the Secrets' variables exist, so that a PATH among them cannot choose it.
    let path = resolve_program(program, std::env::var_os("PATH").as_deref()).ok_or_else(|| {
        CliError::new(format!("cannot run {program:?}: not found in PATH")).status(127)
    })?;
    let env = if a.env.is_empty() && a.env_from.is_empty() {
        Vec::new()
    } else {
        super::process::runtime()?.block_on(resolve_env(&a, ns, client))?
    };
    super::process::restore_inherited();
    let err = std::process::Command::new(&path)
        .arg0(program)
        .args(args)
        .envs(env)
        .exec();
    let status = match err.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    };
    Err(CliError::new(format!("cannot run {program:?}: {err}")).status(status))
}

/// `program` as `execvp` would find it in `path` (the first executable file of that name), or
/// as given when it names a path (has a slash).
fn resolve_program(program: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    if program.is_empty() {
        return None;
    }
    let path = path.unwrap_or(std::ffi::OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(path)
        // An empty entry means the current directory, as in execvp.
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            }
        })
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Fetches every Secret `a` names (once each, so all variables of one Secret come from one
/// version) and builds the variables: `--env-from` in order, then `--env` in order.
async fn resolve_env(
    a: &RunArgs,
    ns: &names::Namespace,
    client: &ClientArgs,
) -> Result<Vec<(String, OsString)>, CliError> {
    let mut fetcher = Fetcher::new(client, &a.wait);
    let mut secrets: BTreeMap<&SecretName, Option<Secret>> = BTreeMap::new();
    let names = a
        .env_from
        .iter()
        .map(|e| &e.secret)
        .chain(a.env.iter().map(|e| &e.secret));
    for name in names {
        if !secrets.contains_key(name) {
            let s = fetcher.fetch(ns, name, a.optional).await?;
            secrets.insert(name, s);
        }
    }
    let env = projection::build_env(
        ns,
        &secrets,
        &a.env_from,
        &a.env,
        a.optional,
        &a.allow_env,
        |n| eprintln!("keyward run: {}", notice(ns, &n)),
    );
    env.map_err(|e| match e {
        ProjectionError::MissingEnvKey {
            secret, key, var, keys, ..
        } => CliError::new(format!(
            "secret {ns}/{secret} has no key {key:?} (--env {var}=secret/{secret}:{key}); the command was not run"
        ))
        .hint(if keys.is_empty() {
            "the Secret has no keys; pass --optional to run without it".to_owned()
        } else {
            format!("its keys are {}; pass --optional to run without it", keys.join(", "))
        }),
        ProjectionError::EnvValue { ref secret, .. } => {
            let hint = format!("mount it as a file instead: keyward mount secret/{secret} DIR");
            CliError::new(format!("{e}; the command was not run")).hint(hint)
        }
        e => e.into(),
    })
}

/// What `keyward run` says about a variable it did not set.
fn notice(ns: &names::Namespace, n: &EnvNotice<'_>) -> String {
    match n {
        EnvNotice::FromMissing { secret } => {
            format!("secret {ns}/{secret} not found; --env-from skipped (--optional)")
        }
        EnvNotice::Skipped {
            secret,
            prefix,
            keys,
        } => format!(
            "skipped keys of secret {ns}/{secret} that are not valid environment variable names{}: {}",
            if prefix.is_empty() {
                String::new()
            } else {
                format!(" with prefix {prefix:?}")
            },
            keys.join(", ")
        ),
        EnvNotice::Unsafe { secret, vars } => format!(
            "skipped keys of secret {ns}/{secret} that would set loader or interpreter variables: {} (a Secret's writer must not choose the code that runs; --allow-env NAME sets one anyway)",
            vars.join(", ")
        ),
        EnvNotice::VarMissing { secret, var } => {
            format!("secret {ns}/{secret} not found; {var} not set (--optional)")
        }
        EnvNotice::KeyMissing { secret, key, var } => {
            format!("secret {ns}/{secret} has no key {key:?}; {var} not set (--optional)")
        }
    }
}

/// A projection error as `mount` words it, naming `--items` where it concerns them.
fn files_error(e: &ProjectionError) -> String {
    match e {
        ProjectionError::MissingKeys { .. } => format!("{e} (listed in --items)"),
        e => e.to_string(),
    }
}

/// A target-directory error with what to do about it.
fn writer_error(e: ProjectionError) -> CliError {
    let hint = match &e {
        ProjectionError::Locked { .. } => "stop it first, or mount into another directory",
        ProjectionError::NotOurs { .. } => "remove it, or mount into an empty directory",
        ProjectionError::UnsafeDirectory { .. } => {
            "mount into a directory of your own that only you can write (chmod go-w), or a new one"
        }
        _ => return e.into(),
    };
    CliError::new(e).hint(hint)
}

/// Prints a line on stdout; a closed stdout is not an error worth stopping for.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stdout(), "{line}");
}

/// Runs `keyward mount`.
pub(super) fn mount(a: MountArgs, client: &ClientArgs) -> Result<(), CliError> {
    let ns = a.ns.namespace;
    let spec = Projection::new(a.items, a.default_mode)
        .map_err(|e| CliError::new(format!("--items: {e}")))?;
    let name = a.secret.0;
    super::process::runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        if a.watch {
            super::process::cancel_on_signal(cancel.clone(), |name| {
                eprintln!("keyward mount: {name}: stopping")
            })?;
        }
        let mut fetcher = Fetcher::new(client, &a.wait);
        let secret = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            s = fetcher.fetch(&ns, &name, false) => s?,
        };
        let secret =
            secret.ok_or_else(|| CliError::new(format!("secret {ns}/{name} not found")))?;
        let files = spec
            .files(&secret)
            .map_err(|e| CliError::new(format!("{}; nothing was written", files_error(&e))))?;
        let target =
            AtomicWriter::open(&a.dir, |w| eprintln!("warning: {w}")).map_err(writer_error)?;
        target.write(&files).map_err(writer_error)?;
        let rv = secret.metadata.resource_version.clone();
        say(format_args!(
            "secret/{name} projected into {} ({} files, resourceVersion {rv})",
            a.dir.display(),
            files.len()
        ));
        if !a.watch {
            return Ok(());
        }
        let follower = Follower {
            args: client,
            ns,
            name,
            target,
            spec,
            rv: rv.clone(),
            projected: rv,
            deleted: false,
            relist: false,
        };
        follower.run(cancel).await
    })
}

/// How a watch session ended.
enum Ended {
    /// The server or the connection went away: reconnect after a pause.
    Interrupted(String),
    /// The revision we watch from is older than the server keeps: re-read, then watch again.
    Gone,
}

/// `mount --watch`: follows one Secret and re-projects every change.
struct Follower<'a> {
    args: &'a ClientArgs,
    ns: names::Namespace,
    name: SecretName,
    target: AtomicWriter,
    spec: Projection,
    /// The store revision to watch after.
    rv: String,
    /// The resourceVersion on disk.
    projected: String,
    /// The Secret was deleted; the last projection stays.
    deleted: bool,
    /// Re-read the Secret before watching (after [`Ended::Gone`]).
    relist: bool,
}

impl Follower<'_> {
    async fn run(mut self, cancel: CancellationToken) -> Result<(), CliError> {
        let mut delay = FIRST_BACKOFF;
        loop {
            let ended = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                e = self.session(&mut delay) => e,
            };
            match ended {
                Ended::Gone => {
                    eprintln!(
                        "watch of secret {}/{}: resourceVersion {} is no longer retained; re-reading the Secret",
                        self.ns, self.name, self.rv
                    );
                    self.relist = true;
                }
                Ended::Interrupted(reason) => eprintln!(
                    "watch of secret {}/{} interrupted: {reason} (reconnecting in {})",
                    self.ns,
                    self.name,
                    humantime::format_duration(delay)
                ),
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    /// Connects, re-reads if needed, and applies watch events until the stream ends.
    async fn session(&mut self, delay: &mut Duration) -> Ended {
        let ended = |s: tonic::Status| match s.code() {
            Code::OutOfRange => Ended::Gone,
            _ if retryable(&s) => Ended::Interrupted(format!("connection lost: {}", s.message())),
            _ => Ended::Interrupted(client::server_error(s).message),
        };
        let mut c = match client::connect(self.args).await {
            Ok(c) => c,
            Err(e) => return Ended::Interrupted(e.message),
        };
        if self.relist {
            let list = match c
                .list(pb::ListRequest {
                    namespace: self.ns.to_string(),
                    field_selector: format!("metadata.name={}", self.name),
                    ..Default::default()
                })
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) => return ended(s),
            };
            let current = list
                .items
                .into_iter()
                .map(secret_from_pb)
                .find(|s| s.metadata.name == self.name.as_str());
            match current {
                Some(s) => self.apply(&s),
                None => self.note_deleted(),
            }
            self.rv = list.resource_version;
            self.relist = false;
        }
        let req = pb::WatchRequest {
            namespace: self.ns.to_string(),
            resource_version: self.rv.clone(),
            label_selector: String::new(),
            // This Secret alone, so that `list` and `watch` on it by name (resourceNames)
            // suffice, as for kubelet.
            field_selector: format!("metadata.name={}", self.name),
        };
        let mut stream = match c.watch(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => return ended(s),
        };
        *delay = FIRST_BACKOFF;
        loop {
            match stream.message().await {
                Ok(Some(ev)) => self.event(ev),
                Ok(None) => return Ended::Interrupted("the server ended the watch".to_owned()),
                Err(s) => return ended(s),
            }
        }
    }

    fn event(&mut self, ev: pb::WatchEvent) {
        let Some(obj) = ev.object else { return };
        let s = secret_from_pb(obj);
        if !s.metadata.resource_version.is_empty() {
            self.rv.clone_from(&s.metadata.resource_version);
        }
        if s.metadata.name != self.name.as_str() {
            return;
        }
        match ev.r#type.as_str() {
            "ADDED" | "MODIFIED" => self.apply(&s),
            "DELETED" => self.note_deleted(),
            _ => {}
        }
    }

    fn note_deleted(&mut self) {
        if !self.deleted {
            eprintln!(
                "secret {}/{} was deleted; keeping the last files in {} and waiting for it to come back",
                self.ns,
                self.name,
                self.target.dir().display()
            );
            self.deleted = true;
        }
    }

    /// Projects `s` unless it is the version on disk. Failures keep the last projection.
    fn apply(&mut self, s: &Secret) {
        if self.deleted {
            eprintln!("secret {}/{} exists again", self.ns, self.name);
            self.deleted = false;
        }
        let rv = &s.metadata.resource_version;
        if *rv == self.projected {
            return;
        }
        let files = match self.spec.files(s) {
            Ok(f) => f,
            Err(e) => {
                eprintln!(
                    "{} (resourceVersion {rv}); keeping the last files",
                    files_error(&e)
                );
                return;
            }
        };
        match self.target.write(&files) {
            Ok(()) => {
                self.projected.clone_from(rv);
                say(format_args!(
                    "secret/{} updated in {} ({} files, resourceVersion {rv})",
                    self.name,
                    self.target.dir().display(),
                    files.len()
                ));
            }
            Err(e) => eprintln!(
                "cannot project resourceVersion {rv} of secret {}/{}: {e}; keeping the last files",
                self.ns, self.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_and_human_durations() {
        let ms = Duration::from_millis;
        for (s, want) in [
            ("0", Duration::ZERO),
            ("30s", ms(30_000)),
            ("1m30s", ms(90_000)),
            ("1.5m", ms(90_000)),
            ("500ms", ms(500)),
            ("2h", ms(7_200_000)),
            ("1h2m3.25s", ms(3_723_250)),
            ("10us", Duration::from_micros(10)),
            ("2min", ms(120_000)),
            ("1m 30s", ms(90_000)),
        ] {
            assert_eq!(parse_timeout(s).unwrap(), want, "{s}");
        }
        for s in ["", "s", "30", "-1s", "1x", "1..5s", "soon"] {
            assert!(parse_timeout(s).is_err(), "{s}");
        }
    }

    #[test]
    fn env_flags() {
        let f = parse_env_from("secret/db:DB_").unwrap();
        assert_eq!((f.secret.as_str(), f.prefix.as_str()), ("db", "DB_"));
        assert_eq!(parse_env_from("secret/db").unwrap().prefix, "");
        for bad in [
            "db",
            "secret/",
            "secret/DB",
            "configmap/db",
            "secret/db:1X",
            "secret/db:..A",
            "secret/db:A=B",
        ] {
            assert!(parse_env_from(bad).is_err(), "{bad}");
        }
        // kubelet's names: dashes and dots are fine.
        assert_eq!(parse_env_from("secret/db:A-B.").unwrap().prefix, "A-B.");
        let v = parse_env_var("PASS=secret/db:pass.word").unwrap();
        assert_eq!(
            (v.var.as_str(), v.secret.as_str(), v.key.as_str()),
            ("PASS", "db", "pass.word")
        );
        for bad in [
            "PASS",
            "PASS=db:k",
            "1X=secret/db:k",
            "..B=secret/db:k",
            "P=secret/db",
            "P=secret/db:",
            "P=secret/db:a/b",
        ] {
            let e = parse_env_var(bad).unwrap_err();
            assert!(e.starts_with("expected VAR=secret/NAME:KEY"), "{bad}: {e}");
        }
        assert_eq!(parse_env_var("A-B=secret/db:k").unwrap().var, "A-B");
    }

    #[test]
    fn items_and_modes() {
        use std::path::Path;
        let i = parse_item("tls.crt=certs/server.crt:0400").unwrap();
        assert_eq!(
            (i.key().as_str(), i.path(), i.mode()),
            ("tls.crt", Path::new("certs/server.crt"), Mode::new(0o400))
        );
        let i = parse_item("k=a:b").unwrap();
        assert_eq!((i.path(), i.mode()), (Path::new("a:b"), None));
        let i = parse_item("k=dump:v2").unwrap();
        assert_eq!((i.path(), i.mode()), (Path::new("dump:v2"), None));
        assert_eq!(parse_item(".env=.env").unwrap().path(), Path::new(".env"));
        for bad in [
            "k",
            "=p",
            "k=",
            "k=/etc/passwd",
            "k=../x",
            "k=a/../b",
            "k=a/..",
            "k=..data",
            "k=.",
            "k=p:0778",
            "k=p:1000",
            "k=p:01000",
            "k=p:-1",
            "k=p:",
            "..k=p",
            // Modes mistyped: refused, not taken as part of the file's name.
            "k=p:O400",
            "k=p:0x1ff",
            "k=p:0640x",
            "k=p:rw",
            "k=p:u=rw",
        ] {
            assert!(parse_item(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mode("0400").unwrap(), Mode::new(0o400).unwrap());
        let long = format!("k=a/{}", "n".repeat(256));
        let e = parse_item(&long).unwrap_err();
        assert!(
            e.ends_with("... (258 bytes): filenames must be less than or equal to 255 characters"),
            "{e}"
        );
        let deep = format!("k={}", "n/".repeat(2100));
        assert!(parse_item(&deep)
            .unwrap_err()
            .ends_with(": must be less than or equal to 4096 characters"));
        let e = parse_item("k=p:0778").unwrap_err();
        assert!(
            e.ends_with(
                "MODE \"0778\": expected an octal mode from 0000 to 0777, such as 0400 or 0644"
            ),
            "{e}"
        );
    }
}
