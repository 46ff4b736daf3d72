//! Handing secrets to processes: `keyward run` (environment variables, then exec) and
//! `keyward mount` (files, written like kubelet's atomic writer).
//!
//! Both wait for a Secret that does not exist yet, or a server that does not answer yet, with
//! exponential backoff up to `--timeout` (each retry is announced on stderr), unless
//! `--no-wait`. Values never reach argv, stdout or the log.
//!
//! `mount` writes a projection the way kubelet's atomic writer fills a secret volume:
//!
//! ```text
//! DIR/..2026_11_29_12_00_00.123456789/   every file of one version (0755, files --default-mode)
//! DIR/..data -> ..2026_11_29_12_00_00.123456789   swapped with rename(2): readers see one version
//! DIR/password -> ..data/password         one symlink per top-level name
//! DIR/certs -> ..data/certs               nested item paths: the first component is the link
//! ```
//!
//! DIR is created (0700) if it is missing; an existing DIR keeps its mode. While a `mount`
//! writes to DIR it holds an exclusive `flock` on it, so two writers cannot interleave.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt as _;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::client::{self, Client, ClientArgs};
use super::secrets::Namespace;
use super::CliError;
use crate::api::secret_from_pb;
use crate::pb::keyward_v1 as pb;
use crate::store::model::{is_dns1123_subdomain, validate_data_key, validate_namespace};
use crate::store::Secret;

/// First wait between attempts; doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts (and between watch reconnections).
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The symlink naming the current timestamped directory.
const DATA: &str = "..data";
/// The symlink renamed over [`DATA`].
const DATA_TMP: &str = "..data_tmp";
/// Temporary name used to replace a visible symlink that points somewhere else.
const LINK_TMP: &str = "..link_tmp";
/// statfs `f_type` of tmpfs.
const TMPFS_MAGIC: u64 = 0x0102_1994;
/// statfs `f_type` of ramfs.
const RAMFS_MAGIC: u64 = 0x8584_58f6;

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
    /// are not valid variable names are skipped and listed on stderr. Repeatable; later ones win.
    #[arg(long = "env-from", value_name = "secret/NAME[:PREFIX]", value_parser = parse_env_from)]
    env_from: Vec<EnvFrom>,
    /// One key as one variable (like secretKeyRef); overrides --env-from. Repeatable.
    #[arg(long = "env", value_name = "VAR=secret/NAME:KEY", value_parser = parse_env_var)]
    env: Vec<EnvVar>,
    /// Run anyway when a Secret or a key is missing (the variables are then not set); a
    /// missing Secret is not waited for.
    #[arg(long)]
    optional: bool,
    #[command(flatten)]
    wait: WaitArgs,
    /// The command and its arguments; it replaces keyward (same pid, signals and exit code).
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
    /// Octal mode of the files (like defaultMode).
    #[arg(long, value_name = "MODE", default_value = "0644", value_parser = parse_mode)]
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
struct SecretRef(String);

/// `--env-from secret/NAME[:PREFIX]`.
#[derive(Debug, Clone)]
struct EnvFrom {
    secret: String,
    prefix: String,
}

/// `--env VAR=secret/NAME:KEY`.
#[derive(Debug, Clone)]
struct EnvVar {
    var: String,
    secret: String,
    key: String,
}

/// `--items KEY=PATH[:MODE]`.
#[derive(Debug, Clone)]
struct Item {
    key: String,
    path: PathBuf,
    mode: Option<Mode>,
}

/// A file mode from 0 to 0o777.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mode(u32);

const SECRET_REF_FORM: &str = "expected secret/NAME, where NAME is a lowercase RFC 1123 subdomain";

fn secret_name(s: &str) -> Option<&str> {
    let name = s
        .strip_prefix("secret/")
        .or_else(|| s.strip_prefix("secrets/"))?;
    is_dns1123_subdomain(name).then_some(name)
}

fn parse_secret_ref(s: &str) -> Result<SecretRef, String> {
    secret_name(s)
        .map(|n| SecretRef(n.to_owned()))
        .ok_or_else(|| SECRET_REF_FORM.to_owned())
}

/// A C identifier: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn parse_env_from(s: &str) -> Result<EnvFrom, String> {
    const FORM: &str = "expected secret/NAME or secret/NAME:PREFIX";
    let (secret, prefix) = s.split_once(':').unwrap_or((s, ""));
    let name = secret_name(secret).ok_or_else(|| format!("{FORM} ({SECRET_REF_FORM})"))?;
    if !prefix.is_empty() && !is_env_name(prefix) {
        return Err(format!(
            "{FORM}: the prefix {prefix:?} must be a valid variable name start ([A-Za-z_][A-Za-z0-9_]*)"
        ));
    }
    Ok(EnvFrom {
        secret: name.to_owned(),
        prefix: prefix.to_owned(),
    })
}

fn parse_env_var(s: &str) -> Result<EnvVar, String> {
    const FORM: &str = "expected VAR=secret/NAME:KEY";
    let (var, rest) = s.split_once('=').ok_or(FORM)?;
    if !is_env_name(var) {
        return Err(format!(
            "{FORM}: {var:?} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"
        ));
    }
    let (secret, key) = rest.split_once(':').ok_or(FORM)?;
    let name = secret_name(secret).ok_or_else(|| format!("{FORM} ({SECRET_REF_FORM})"))?;
    validate_data_key("KEY", key).map_err(|e| format!("{FORM}: {e}"))?;
    Ok(EnvVar {
        var: var.to_owned(),
        secret: name.to_owned(),
        key: key.to_owned(),
    })
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    const FORM: &str = "expected an octal mode from 0000 to 0777, such as 0400 or 0644";
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|c| (b'0'..=b'7').contains(&c))
    {
        return Err(FORM.to_owned());
    }
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(Mode(m)),
        _ => Err(FORM.to_owned()),
    }
}

/// Checks a projected path: relative, no `.`, `..` or empty components, and not starting with
/// `..` (names starting with `..` are the writer's own).
fn check_rel_path(p: &str) -> Result<PathBuf, String> {
    if p.is_empty() {
        return Err("the path must not be empty".to_owned());
    }
    if p.starts_with('/') {
        return Err(format!("{p:?} must be a relative path"));
    }
    for part in p.split('/') {
        match part {
            ".." => return Err(format!("{p:?} must not contain a '..' component")),
            "" | "." => return Err(format!("{p:?} must not contain empty or '.' components")),
            _ => {}
        }
    }
    if p.starts_with("..") {
        return Err(format!("{p:?} must not start with '..'"));
    }
    Ok(PathBuf::from(p))
}

fn parse_item(s: &str) -> Result<Item, String> {
    const FORM: &str = "expected KEY=PATH or KEY=PATH:MODE, e.g. tls.crt=certs/server.crt:0400";
    let (key, rest) = s.split_once('=').ok_or(FORM)?;
    validate_data_key("KEY", key).map_err(|e| format!("{FORM}: {e}"))?;
    // A trailing `:digits` is the mode; any other colon belongs to the path.
    let (path, mode) = match rest.rsplit_once(':') {
        Some((p, m))
            if !m.is_empty()
                && m.strip_prefix("0o")
                    .unwrap_or(m)
                    .bytes()
                    .all(|c| c.is_ascii_digit()) =>
        {
            (
                p,
                Some(parse_mode(m).map_err(|e| format!("{FORM}: MODE {m:?}: {e}"))?),
            )
        }
        _ => (rest, None),
    };
    let path = check_rel_path(path).map_err(|e| format!("{FORM}: {e}"))?;
    Ok(Item {
        key: key.to_owned(),
        path,
        mode,
    })
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    go_duration(s)
        .or_else(|| humantime::parse_duration(s).ok())
        .ok_or_else(|| "expected a duration such as 30s, 1m30s, 1.5m, 500ms or 2min".to_owned())
}

/// A Go `time.ParseDuration` string without sign: `0`, or numbers with an optional fraction,
/// each followed by a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `1h2m3.5s`.
fn go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let digits = |r: &str| r.bytes().take_while(u8::is_ascii_digit).count();
    let mut rest = s;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (int, r) = rest.split_at(digits(rest));
        let (frac, r) = match r.strip_prefix('.') {
            Some(r) => r.split_at(digits(r)),
            None => ("", r),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let unit_len = r
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(r.len());
        let (unit, r) = r.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        nanos = nanos.checked_add(int.checked_mul(scale)?)?;
        let (mut f, mut div) = (0u128, 1u128);
        for d in frac.bytes().take(18) {
            f = f * 10 + u128::from(d - b'0');
            div *= 10;
        }
        nanos = nanos.checked_add(f * scale / div)?;
        rest = r;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

fn checked_namespace(ns: &str) -> Result<String, CliError> {
    validate_namespace(ns)
        .map_err(|e| CliError::new(format!("-n/--namespace {ns:?}: {}", e.message)))?;
    Ok(ns.to_owned())
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

    async fn attempt(&mut self, ns: &str, name: &str) -> Result<Secret, Attempt> {
        let mut client = match self.client.take() {
            Some(c) => c,
            None => match client::connect(self.args).await {
                Ok(c) => c,
                Err(e) => return Err(Attempt::Unreachable(e.message.clone(), e)),
            },
        };
        let req = pb::GetRequest {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            revision: 0,
        };
        let got = client.get(req).await;
        match got {
            Ok(r) => {
                self.client = Some(client);
                Ok(secret_from_pb(r.into_inner()))
            }
            // Reconnect next time: the connection may be what failed.
            Err(s) if retryable(s.code()) => {
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
        ns: &str,
        name: &str,
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

/// Status codes that mean "the server is not there right now".
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

/// Runs `keyward run`.
pub(super) fn run(a: RunArgs, client: &ClientArgs) -> Result<(), CliError> {
    let ns = checked_namespace(&a.ns.namespace)?;
    let Some((program, args)) = a.command.split_first() else {
        return Err(CliError::new("a command is required after --"));
    };
    let env = if a.env.is_empty() && a.env_from.is_empty() {
        Vec::new()
    } else {
        super::runtime()?.block_on(resolve_env(&a, &ns, client))?
    };
    super::restore_inherited();
    let err = std::process::Command::new(program)
        .args(args)
        .envs(env)
        .exec();
    Err(CliError::new(format!("cannot run {program:?}: {err}")))
}

/// Fetches every Secret `a` names (once each, so all variables of one Secret come from one
/// version) and builds the variables: `--env-from` in order, then `--env` in order.
async fn resolve_env(
    a: &RunArgs,
    ns: &str,
    client: &ClientArgs,
) -> Result<Vec<(String, OsString)>, CliError> {
    let mut fetcher = Fetcher::new(client, &a.wait);
    let mut secrets: BTreeMap<&str, Option<Secret>> = BTreeMap::new();
    let names = a
        .env_from
        .iter()
        .map(|e| e.secret.as_str())
        .chain(a.env.iter().map(|e| e.secret.as_str()));
    for name in names {
        if !secrets.contains_key(name) {
            let s = fetcher.fetch(ns, name, a.optional).await?;
            secrets.insert(name, s);
        }
    }
    let mut env = Vec::new();
    for from in &a.env_from {
        let Some(Some(s)) = secrets.get(from.secret.as_str()) else {
            eprintln!(
                "keyward run: secret {ns}/{} not found; --env-from skipped (--optional)",
                from.secret
            );
            continue;
        };
        let mut skipped = Vec::new();
        for (key, value) in &s.data {
            let var = format!("{}{key}", from.prefix);
            if !is_env_name(&var) {
                skipped.push(key.as_str());
                continue;
            }
            env.push((var, env_value(ns, &from.secret, key, value.as_slice())?));
        }
        if !skipped.is_empty() {
            eprintln!(
                "keyward run: skipped keys of secret {ns}/{} that are not valid environment variable names{}: {}",
                from.secret,
                if from.prefix.is_empty() {
                    String::new()
                } else {
                    format!(" with prefix {:?}", from.prefix)
                },
                skipped.join(", ")
            );
        }
    }
    for e in &a.env {
        let Some(Some(s)) = secrets.get(e.secret.as_str()) else {
            eprintln!(
                "keyward run: secret {ns}/{} not found; {} not set (--optional)",
                e.secret, e.var
            );
            continue;
        };
        match s.data.get(&e.key) {
            Some(v) => env.push((
                e.var.clone(),
                env_value(ns, &e.secret, &e.key, v.as_slice())?,
            )),
            None if a.optional => eprintln!(
                "keyward run: secret {ns}/{} has no key {:?}; {} not set (--optional)",
                e.secret, e.key, e.var
            ),
            None => {
                let keys: Vec<&str> = s.data.keys().map(String::as_str).collect();
                return Err(CliError::new(format!(
                    "secret {ns}/{} has no key {:?} (--env {}=secret/{}:{}); the command was not run",
                    e.secret, e.key, e.var, e.secret, e.key
                ))
                .hint(if keys.is_empty() {
                    "the Secret has no keys; pass --optional to run without it".to_owned()
                } else {
                    format!("its keys are {}; pass --optional to run without it", keys.join(", "))
                }));
            }
        }
    }
    Ok(env)
}

/// A value as an environment variable: UTF-8 without NUL.
fn env_value(ns: &str, secret: &str, key: &str, v: &[u8]) -> Result<OsString, CliError> {
    let problem = if v.contains(&0) {
        "contains a NUL byte"
    } else {
        match std::str::from_utf8(v) {
            Ok(s) => return Ok(OsString::from(s)),
            Err(_) => "is not valid UTF-8",
        }
    };
    Err(CliError::new(format!(
        "secret {ns}/{secret} key {key:?}: the value {problem}, so it cannot be an environment variable; the command was not run"
    ))
    .hint(format!("mount it as a file instead: keyward mount secret/{secret} DIR")))
}

/// What to project: the listed items, or every key.
struct Spec {
    items: Vec<Item>,
    default_mode: u32,
}

/// One file of a projection.
struct FileSpec<'a> {
    /// Relative to the timestamped directory; checked by [`check_rel_path`].
    path: PathBuf,
    data: &'a [u8],
    mode: u32,
}

/// Prints the path, size and mode, never the bytes.
impl std::fmt::Debug for FileSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} bytes, {:04o})",
            self.path.display(),
            self.data.len(),
            self.mode
        )
    }
}

impl Spec {
    /// Refuses item paths that are listed twice or where one is inside another.
    fn check(&self) -> Result<(), CliError> {
        let mut paths: Vec<&Path> = self.items.iter().map(|i| i.path.as_path()).collect();
        paths.sort();
        for w in paths.windows(2) {
            if w[1].starts_with(w[0]) {
                return Err(CliError::new(format!(
                    "--items: the paths {} and {} collide",
                    w[0].display(),
                    w[1].display()
                )));
            }
        }
        Ok(())
    }

    /// The files of `s`, or the error naming what is missing.
    fn files<'s>(&self, s: &'s Secret) -> Result<Vec<FileSpec<'s>>, String> {
        let who = format!("secret {}/{}", s.metadata.namespace, s.metadata.name);
        if self.items.is_empty() {
            return s
                .data
                .iter()
                .map(|(k, v)| {
                    Ok(FileSpec {
                        path: check_rel_path(k).map_err(|e| format!("{who}: key {k:?}: {e}"))?,
                        data: v.as_slice(),
                        mode: self.default_mode,
                    })
                })
                .collect();
        }
        let missing: Vec<String> = self
            .items
            .iter()
            .filter(|i| !s.data.contains_key(&i.key))
            .map(|i| format!("{:?}", i.key))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{who} has no key {} (listed in --items)",
                missing.join(", ")
            ));
        }
        Ok(self
            .items
            .iter()
            .filter_map(|i| {
                s.data.get(&i.key).map(|v| FileSpec {
                    path: i.path.clone(),
                    data: v.as_slice(),
                    mode: i.mode.map_or(self.default_mode, |m| m.0),
                })
            })
            .collect())
    }
}

/// The first component of a checked relative path: the name visible in the target directory.
fn top_name(p: &Path) -> Option<&std::ffi::OsStr> {
    match p.components().next() {
        Some(Component::Normal(n)) => Some(n),
        _ => None,
    }
}

/// Whether `name` is one of the writer's timestamped directories (`..2026_...`).
fn is_ts_dir(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 7 && b.starts_with(b"..") && b[2..6].iter().all(u8::is_ascii_digit) && b[6] == b'_'
}

/// A target directory of `mount`, locked for this process.
struct Target {
    dir: PathBuf,
    /// Holds the exclusive `flock` on `dir`.
    _lock: fs::File,
}

impl Target {
    /// Creates `dir` (0700) if needed, warns when it is not in memory, and locks it.
    fn open(dir: &Path) -> Result<Target, CliError> {
        let cannot = |what: &str, e: io::Error| {
            CliError::new(format!("cannot {what} {}: {e}", dir.display()))
        };
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(CliError::new(format!(
                    "{} is not a directory",
                    dir.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| cannot("create", e))?,
            Err(e) => return Err(cannot("read", e)),
        }
        match rustix::fs::statfs(dir) {
            Ok(st) => {
                // `f_type` is signed on some targets; the magic numbers are 32-bit.
                #[allow(clippy::unnecessary_cast)] // u32 on a few targets, i64 on others
                let kind = (st.f_type as u64) & 0xffff_ffff;
                if kind != TMPFS_MAGIC && kind != RAMFS_MAGIC {
                    eprintln!(
                        "warning: {} is not on tmpfs or ramfs: Secret values will be written to disk \
                         (kubelet mounts a tmpfs for secret volumes)",
                        dir.display()
                    );
                }
            }
            Err(e) => eprintln!(
                "warning: cannot tell the file system of {}: {e}",
                dir.display()
            ),
        }
        let lock = fs::File::open(dir).map_err(|e| cannot("open", e))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(CliError::new(format!(
                    "another keyward mount is writing to {}",
                    dir.display()
                ))
                .hint("stop it first, or mount into another directory"))
            }
            Err(e) => return Err(cannot("lock", e.into())),
        }
        Ok(Target {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// Writes `files` as one new version, like kubelet's atomic writer: a fresh timestamped
    /// directory, then `..data` swapped to it with one rename, then the visible symlinks, then
    /// names no longer projected and the old version are removed. Nothing is written when a
    /// visible name is taken by something that is not one of our symlinks.
    fn project(&self, files: &[FileSpec<'_>]) -> Result<(), CliError> {
        let dir = &self.dir;
        let err = |what: String, e: io::Error| CliError::new(format!("{what}: {e}"));
        let top: BTreeSet<&std::ffi::OsStr> =
            files.iter().filter_map(|f| top_name(&f.path)).collect();
        // Never replace something that is not ours: check before writing anything.
        for name in &top {
            let p = dir.join(name);
            match fs::symlink_metadata(&p) {
                Ok(m) if !m.file_type().is_symlink() => {
                    return Err(CliError::new(format!(
                        "{} exists and is not a symlink written by keyward mount; refusing to replace it",
                        p.display()
                    ))
                    .hint("remove it, or mount into an empty directory"));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(format!("cannot read {}", p.display()), e)),
            }
        }
        let ts = self.new_ts_dir()?;
        let ts_path = dir.join(&ts);
        if let Err(e) = write_files(&ts_path, files) {
            let _ = fs::remove_dir_all(&ts_path);
            return Err(err(format!("cannot write {}", ts_path.display()), e));
        }
        // The swap: readers resolving ..data see either the old or the new directory.
        let tmp = dir.join(DATA_TMP);
        remove_if_exists(&tmp).map_err(|e| err(format!("cannot remove {}", tmp.display()), e))?;
        symlink(&ts, &tmp).map_err(|e| err(format!("cannot create {}", tmp.display()), e))?;
        fs::rename(&tmp, dir.join(DATA))
            .map_err(|e| err(format!("cannot rename {} to {DATA}", tmp.display()), e))?;
        for name in &top {
            let link = dir.join(name);
            let want = Path::new(DATA).join(name);
            match fs::read_link(&link) {
                Ok(t) if t == want => {}
                Ok(_) => {
                    let tmp = dir.join(LINK_TMP);
                    remove_if_exists(&tmp)
                        .map_err(|e| err(format!("cannot remove {}", tmp.display()), e))?;
                    symlink(&want, &tmp)
                        .map_err(|e| err(format!("cannot create {}", tmp.display()), e))?;
                    fs::rename(&tmp, &link)
                        .map_err(|e| err(format!("cannot replace {}", link.display()), e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    symlink(&want, &link)
                        .map_err(|e| err(format!("cannot create {}", link.display()), e))?;
                }
                Err(e) => return Err(err(format!("cannot read {}", link.display()), e)),
            }
        }
        // Visible names no longer projected (ours by their `..data/NAME` target, so names left
        // by an interrupted writer go too), the old version, and versions left behind.
        let entries =
            fs::read_dir(dir).map_err(|e| err(format!("cannot list {}", dir.display()), e))?;
        for entry in entries.flatten() {
            let (name, path) = (entry.file_name(), entry.path());
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let stale = if kind.is_symlink() {
                !top.contains(name.as_os_str())
                    && fs::read_link(&path).is_ok_and(|t| t == Path::new(DATA).join(&name))
            } else {
                kind.is_dir() && name.to_str().is_some_and(is_ts_dir) && name != ts.as_str()
            };
            if !stale {
                continue;
            }
            let removed = if kind.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                remove_if_exists(&path)
            };
            removed.map_err(|e| err(format!("cannot remove {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Creates `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN` (UTC) in the target directory.
    fn new_ts_dir(&self) -> Result<String, CliError> {
        let mut last = None;
        for attempt in 0..100u32 {
            let stamp: String = humantime::format_rfc3339_nanos(SystemTime::now())
                .to_string()
                .chars()
                .filter(|c| *c != 'Z')
                .map(|c| if matches!(c, '-' | 'T' | ':') { '_' } else { c })
                .collect();
            let name = if attempt == 0 {
                format!("..{stamp}")
            } else {
                format!("..{stamp}{attempt}")
            };
            let p = self.dir.join(&name);
            match fs::DirBuilder::new().mode(0o755).create(&p) {
                Ok(()) => {
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                        .map_err(|e| CliError::new(format!("cannot chmod {}: {e}", p.display())))?;
                    return Ok(name);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(CliError::new(format!("cannot create {}: {e}", p.display()))),
            }
        }
        Err(CliError::new(format!(
            "cannot create a new directory in {}: {}",
            self.dir.display(),
            last.map_or_else(String::new, |e| e.to_string())
        )))
    }
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes every file under `base` (directories 0755, files their mode; the umask does not apply).
fn write_files(base: &Path, files: &[FileSpec<'_>]) -> io::Result<()> {
    for f in files {
        let mut parent = base.to_owned();
        if let Some(dirs) = f.path.parent() {
            for c in dirs.components() {
                parent.push(c);
                match fs::DirBuilder::new().mode(0o755).create(&parent) {
                    Ok(()) => fs::set_permissions(&parent, fs::Permissions::from_mode(0o755))?,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(base.join(&f.path))?;
        file.write_all(f.data)?;
        file.set_permissions(fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

/// Cancels `token` on SIGTERM or SIGINT.
fn cancel_on_signal(token: CancellationToken) -> Result<(), CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler = |kind| {
        signal(kind).map_err(|e| CliError::new(format!("cannot install a signal handler: {e}")))
    };
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("keyward mount: {name}: stopping");
        token.cancel();
    });
    Ok(())
}

/// Prints a line on stdout; a closed stdout is not an error worth stopping for.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stdout(), "{line}");
}

/// Runs `keyward mount`.
pub(super) fn mount(a: MountArgs, client: &ClientArgs) -> Result<(), CliError> {
    let ns = checked_namespace(&a.ns.namespace)?;
    let spec = Spec {
        items: a.items,
        default_mode: a.default_mode.0,
    };
    spec.check()?;
    let name = a.secret.0;
    super::runtime()?.block_on(async {
        let cancel = CancellationToken::new();
        if a.watch {
            cancel_on_signal(cancel.clone())?;
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
            .map_err(|e| CliError::new(format!("{e}; nothing was written")))?;
        let target = Target::open(&a.dir)?;
        target.project(&files)?;
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
    ns: String,
    name: String,
    target: Target,
    spec: Spec,
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
            c if retryable(c) => Ended::Interrupted(format!("connection lost: {}", s.message())),
            _ => Ended::Interrupted(client::server_error(s).message),
        };
        let mut c = match client::connect(self.args).await {
            Ok(c) => c,
            Err(e) => return Ended::Interrupted(e.message),
        };
        if self.relist {
            let list = match c
                .list(pb::ListRequest {
                    namespace: self.ns.clone(),
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
                .find(|s| s.metadata.name == self.name);
            match current {
                Some(s) => self.apply(&s),
                None => self.note_deleted(),
            }
            self.rv = list.resource_version;
            self.relist = false;
        }
        let req = pb::WatchRequest {
            namespace: self.ns.clone(),
            resource_version: self.rv.clone(),
            label_selector: String::new(),
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
        if s.metadata.name != self.name {
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
                self.target.dir.display()
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
                eprintln!("{e} (resourceVersion {rv}); keeping the last files");
                return;
            }
        };
        match self.target.project(&files) {
            Ok(()) => {
                self.projected.clone_from(rv);
                say(format_args!(
                    "secret/{} updated in {} ({} files, resourceVersion {rv})",
                    self.name,
                    self.target.dir.display(),
                    files.len()
                ));
            }
            Err(e) => eprintln!(
                "cannot project resourceVersion {rv} of secret {}/{}: {}; keeping the last files",
                self.ns, self.name, e.message
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::SecretBytes;

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
            "secret/db:A-B",
        ] {
            assert!(parse_env_from(bad).is_err(), "{bad}");
        }
        let v = parse_env_var("PASS=secret/db:pass.word").unwrap();
        assert_eq!(
            (v.var.as_str(), v.secret.as_str(), v.key.as_str()),
            ("PASS", "db", "pass.word")
        );
        for bad in [
            "PASS",
            "PASS=db:k",
            "1X=secret/db:k",
            "A-B=secret/db:k",
            "P=secret/db",
            "P=secret/db:",
            "P=secret/db:a/b",
        ] {
            let e = parse_env_var(bad).unwrap_err();
            assert!(e.starts_with("expected VAR=secret/NAME:KEY"), "{bad}: {e}");
        }
        assert!(
            is_env_name("_a1")
                && is_env_name("A")
                && !is_env_name("")
                && !is_env_name("a.b")
                && !is_env_name("9a")
        );
    }

    #[test]
    fn items_and_modes() {
        let i = parse_item("tls.crt=certs/server.crt:0400").unwrap();
        assert_eq!(
            (i.key.as_str(), i.path.as_path(), i.mode),
            ("tls.crt", Path::new("certs/server.crt"), Some(Mode(0o400)))
        );
        let i = parse_item("k=a:b").unwrap();
        assert_eq!((i.path.as_path(), i.mode), (Path::new("a:b"), None));
        assert_eq!(parse_item(".env=.env").unwrap().path, Path::new(".env"));
        for bad in [
            "k",
            "=p",
            "k=",
            "k=/etc/passwd",
            "k=../x",
            "k=a/../b",
            "k=a/..",
            "k=..data",
            "k=a//b",
            "k=./a",
            "k=a/",
            "k=p:0778",
            "k=p:1000",
            "k=p:01000",
            "..k=p",
        ] {
            assert!(parse_item(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_mode("0400").unwrap(), Mode(0o400));
        assert_eq!(parse_mode("644").unwrap(), Mode(0o644));
        assert_eq!(parse_mode("0o777").unwrap(), Mode(0o777));
        for bad in ["", "0800", "1000", "01000", "rw", "-1"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
        let spec = |paths: &[&str]| Spec {
            items: paths
                .iter()
                .map(|p| parse_item(&format!("k={p}")).unwrap())
                .collect(),
            default_mode: 0o644,
        };
        assert!(spec(&["a", "b", "a.b", "c/d", "c/e"]).check().is_ok());
        assert!(spec(&["a", "a"]).check().is_err());
        assert!(spec(&["a/b", "a"]).check().is_err());
    }

    fn secret(data: &[(&str, &[u8])]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = "db".into();
        s.metadata.namespace = "default".into();
        s.data = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretBytes::new(v.to_vec())))
            .collect();
        s
    }

    #[test]
    fn projection_layout_and_update() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let t = Target::open(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(
            Target::open(&dir).is_err(),
            "a second writer must be refused"
        );
        let all = Spec {
            items: vec![],
            default_mode: 0o640,
        };
        let s = secret(&[("a", b"1"), (".b", b"2")]);
        t.project(&all.files(&s).unwrap()).unwrap();
        let first = fs::read_link(dir.join(DATA)).unwrap();
        assert!(is_ts_dir(first.to_str().unwrap()), "{first:?}");
        assert_eq!(fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(fs::read(dir.join(".b")).unwrap(), b"2");
        assert_eq!(
            fs::metadata(dir.join("a")).unwrap().permissions().mode() & 0o777,
            0o640
        );

        let items = Spec {
            items: vec![
                parse_item("a=x/y:0400").unwrap(),
                parse_item("a=z").unwrap(),
            ],
            default_mode: 0o644,
        };
        let s = secret(&[("a", b"3"), (".b", b"4")]);
        t.project(&items.files(&s).unwrap()).unwrap();
        assert_eq!(fs::read(dir.join("x/y")).unwrap(), b"3");
        assert_eq!(
            fs::metadata(dir.join("x/y")).unwrap().permissions().mode() & 0o777,
            0o400
        );
        assert_eq!(
            fs::metadata(dir.join("z")).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !is_ts_dir(n))
            .collect();
        names.sort();
        assert_eq!(names, ["..data", "x", "z"]);
        assert!(!dir.join(&first).exists(), "the old version is removed");

        // Leftovers of an interrupted writer: a version and a visible name.
        fs::create_dir(dir.join("..2020_01_01_00_00_00.1")).unwrap();
        symlink("..data/ghost", dir.join("ghost")).unwrap();
        symlink("/elsewhere", dir.join("user-link")).unwrap();
        t.project(&items.files(&s).unwrap()).unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !is_ts_dir(n))
            .collect();
        names.sort();
        assert_eq!(names, ["..data", "user-link", "x", "z"]);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 5, "one version left");

        let missing = Spec {
            items: vec![parse_item("nope=n").unwrap()],
            default_mode: 0o644,
        };
        assert!(missing.files(&s).unwrap_err().contains("\"nope\""));
        fs::write(dir.join("a"), b"user file").unwrap();
        let e = t.project(&all.files(&s).unwrap()).unwrap_err();
        assert!(e.message.contains("not a symlink"), "{}", e.message);
        assert_eq!(
            fs::read(dir.join("x/y")).unwrap(),
            b"3",
            "a refused projection changes nothing"
        );
    }

    #[test]
    fn env_values_must_be_utf8_without_nul() {
        assert_eq!(env_value("n", "s", "k", b"ok=1").unwrap(), "ok=1");
        let e = env_value("n", "s", "k", b"a\0b").unwrap_err();
        assert!(
            e.message.contains("key \"k\"") && e.message.contains("NUL"),
            "{}",
            e.message
        );
        let e = env_value("n", "s", "k", b"\xff").unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
    }
}
