//! `keyward bench`: load generators for any KMS v2 plugin, for keyward's secret store, for etcd
//! (the same store workloads, for comparison), and for the transport floor under them.
//!
//! Workers are tokio tasks sharing `--connections` connections (worker i uses connection
//! i mod connections), so calls are multiplexed as kube-apiserver does on its single plugin
//! connection. Each worker records the latency of its successful calls in its own HDR histogram
//! (microseconds); the histograms are merged at the end. Failed calls are counted by gRPC code
//! (etcd backend errors and socket errors are mapped to the nearest code).
//!
//! Two floors put the plugin's figures in context: `bench kms --op health` (an RPC whose handler
//! does no work, on the same server and socket) and `bench unix-pingpong` (fixed-size
//! request/reply exchanges over a bare Unix socket, no HTTP/2 or gRPC).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::client::{self, ClientArgs};
use super::CliError;
use crate::backend::etcd::{EtcdBackend, EtcdOptions};
use crate::backend::{Backend, BackendError, EventKind, Expect, RangeRequest, WriteOutcome};
use crate::pb::keyward_v1 as spb;
use crate::pb::kms_v2 as kpb;
use kpb::key_management_service_client::KeyManagementServiceClient;

/// Distinct payloads encrypted before a decrypt or mixed run.
const DECRYPT_POOL: u64 = 256;
/// Highest latency the histograms track (longer calls are recorded as this).
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Namespace of the Secrets `bench store` creates and uses.
const STORE_NAMESPACE: &str = "bench";
/// Data key holding each benchmark Secret's value.
const STORE_DATA_KEY: &str = "value";
/// Where `bench store --etcd` keeps its keys: where kube-apiserver (and keyward, with its default
/// `--etcd-prefix`) stores the Secrets of the namespace `bench`.
const ETCD_PREFIX: &str = "/registry/secrets/bench/";
/// Bytes at the start of each value that tag it (a write's number), so events can be matched.
const TAG_BYTES: usize = 8;

/// Load generators.
#[derive(Debug, Subcommand)]
pub(super) enum BenchCommand {
    /// Benchmark any KMS v2 plugin over its Unix socket (KMS v2 protocol only).
    ///
    /// Examples:
    ///   keyward bench kms --endpoint unix:///var/run/kms.sock --op decrypt --duration 30s
    ///   keyward bench kms --endpoint unix:///var/run/kms.sock --op health --concurrency 64
    ///   keyward bench kms --endpoint unix:///var/run/kms.sock --storm 50000 --concurrency 64
    #[command(verbatim_doc_comment)]
    Kms(BenchKmsArgs),
    /// Benchmark keyward's secret store (--server), or etcd itself (--etcd) for comparison.
    ///
    /// The store is driven with Secrets in the namespace `bench`; etcd with the same workloads
    /// on the keys /registry/secrets/bench/<name>, where kube-apiserver would keep them.
    ///
    /// Examples:
    ///   keyward bench store --op mixed --keys 1000 --value-size 4KiB --duration 30s
    ///   keyward bench store --etcd http://127.0.0.1:2379 --op put --concurrency 16
    ///   keyward bench store --op watch --watchers 4 --concurrency 16
    #[command(verbatim_doc_comment)]
    Store(BenchStoreArgs),
    /// The raw transport floor: fixed-size request/reply exchanges over a bare Unix socket.
    ///
    /// No HTTP/2 and no gRPC: an echo listener this command starts on a temporary socket, in its
    /// own threads. Each connection carries requests back to back; the echo returns them in order. Compare
    /// with `bench kms --op health` at the same --concurrency and --connections.
    ///
    /// Example: keyward bench unix-pingpong --concurrency 64 --payload 64 --duration 10s
    #[command(verbatim_doc_comment)]
    UnixPingpong(BenchPingPongArgs),
}

/// How long to run, how hard, and how to report: shared by every benchmark.
#[derive(Debug, Args)]
pub(super) struct LoadArgs {
    /// Concurrent workers (1 to 10000).
    #[arg(long, default_value = "16", value_name = "N")]
    concurrency: String,
    /// Connections the workers share (1 to 1000; at most --concurrency).
    #[arg(long, default_value = "4", value_name = "N")]
    connections: String,
    /// Measure for this long (e.g. 10s, 500ms, 1m); the default unless --requests is given.
    #[arg(long, value_name = "DURATION", conflicts_with = "requests")]
    duration: Option<String>,
    /// Measure exactly this many calls instead of a duration.
    #[arg(long, value_name = "N")]
    requests: Option<String>,
    /// Run unmeasured for this long first (0s for none).
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    warmup: String,
    /// Per-call timeout; a call taking longer counts as a DeadlineExceeded error.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    timeout: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    output: Format,
}

/// `bench kms` flags.
#[derive(Debug, Args)]
pub(super) struct BenchKmsArgs {
    /// The plugin's socket: unix:///absolute/path.
    #[arg(long, value_name = "URL")]
    endpoint: String,
    /// Call to measure; mixed is 1 Encrypt : 9 Decrypt, with 1 call in 100 a Status; health is
    /// grpc.health.v1 Health/Check (service ""), the empty-RPC floor on the same server and
    /// socket.
    #[arg(long, value_enum, default_value_t = KmsOp::Decrypt, conflicts_with = "storm")]
    op: KmsOp,
    /// Plaintext size for Encrypt (e.g. 32, 1KiB; up to 1MiB).
    #[arg(long, default_value = "32", value_name = "SIZE")]
    payload: String,
    /// Reproduce an apiserver restart: Encrypt N distinct payloads (untimed), then Decrypt all
    /// N as fast as possible and report the time to finish.
    #[arg(long, value_name = "N", conflicts_with_all = ["duration", "requests"])]
    storm: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
}

/// `bench store` flags.
#[derive(Debug, Args)]
pub(super) struct BenchStoreArgs {
    /// Call to measure: put (unconditional Update; etcd: Put), get (etcd: a linearizable
    /// Range), list (limit 100), mixed (90% get, 10% put), or watch (each call is a put, timed
    /// until the write is acknowledged and every watcher has received its event).
    #[arg(long, value_enum, default_value_t = StoreOp::Mixed)]
    op: StoreOp,
    /// Size of each Secret's value (e.g. 32, 1KiB, 4KiB; up to 1000KiB; at least 8 bytes with
    /// --op watch). With --etcd, each key's value is exactly this size.
    #[arg(long, default_value = "1KiB", value_name = "SIZE")]
    value_size: String,
    /// Secrets (or etcd keys) created or overwritten in the namespace `bench` before measuring
    /// (1 to 1000000).
    #[arg(long, default_value = "1000", value_name = "N")]
    keys: String,
    /// With --op watch: watches open on the namespace `bench` (1 to 1000); a write counts once
    /// every one of them has received its event.
    #[arg(long, value_name = "N")]
    watchers: Option<String>,
    /// Benchmark etcd directly instead of a keyward store: its client URLs, comma-separated
    /// (e.g. http://127.0.0.1:2379). Keys are /registry/secrets/bench/<name>.
    #[arg(
        long,
        value_name = "URLS",
        conflicts_with_all = ["client_cert", "client_key"]
    )]
    etcd: Option<String>,
    /// With --etcd: PEM CA that signed etcd's certificates (for https URLs).
    #[arg(long, value_name = "FILE", requires = "etcd")]
    etcd_ca: Option<PathBuf>,
    /// With --etcd: PEM client certificate for etcd (with --etcd-key).
    #[arg(long, value_name = "FILE", requires = "etcd")]
    etcd_cert: Option<PathBuf>,
    /// With --etcd: the client certificate's PEM private key.
    #[arg(long, value_name = "FILE", requires = "etcd")]
    etcd_key: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
}

/// `bench unix-pingpong` flags.
#[derive(Debug, Args)]
pub(super) struct BenchPingPongArgs {
    /// Bytes in each request and in each echoed reply (e.g. 64, 1KiB; up to 1MiB).
    #[arg(long, default_value = "64", value_name = "SIZE")]
    payload: String,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KmsOp {
    Status,
    Encrypt,
    Decrypt,
    Mixed,
    Health,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreOp {
    Put,
    Get,
    List,
    Mixed,
    Watch,
}

/// Runs a benchmark and prints its report.
pub(super) fn bench(cmd: BenchCommand, client: &ClientArgs) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Kms(a) => {
            let plan = Plan::parse(&a.load, a.storm.is_some())?;
            let socket = kms_socket(&a.endpoint)?;
            let payload = parse_size("--payload", &a.payload, 1 << 20)?;
            let storm = a
                .storm
                .as_deref()
                .map(|s| parse_count("--storm", s, 1, 10_000_000))
                .transpose()?;
            super::runtime()?.block_on(bench_kms(plan, socket, a.op, payload, storm))
        }
        BenchCommand::Store(a) => {
            let plan = Plan::parse(&a.load, false)?;
            let size = parse_size("--value-size", &a.value_size, 1000 << 10)?;
            let keys = parse_count("--keys", &a.keys, 1, 1_000_000)?;
            let watchers = match (a.op, a.watchers.as_deref()) {
                (StoreOp::Watch, w) => parse_count("--watchers", w.unwrap_or("1"), 1, 1000)?,
                (_, None) => 0,
                (_, Some(_)) => {
                    return Err(CliError::new("--watchers: only meaningful with --op watch")
                        .hint("add --op watch, or drop --watchers"))
                }
            };
            if a.op == StoreOp::Watch && size < TAG_BYTES {
                return Err(CliError::new(format!(
                    "--value-size: --op watch needs at least {TAG_BYTES} bytes (got {size}): each \
                     value starts with the number of its write"
                )));
            }
            let target = match &a.etcd {
                Some(urls) => {
                    refuse_keyward_flags(client)?;
                    StoreTarget::Etcd(EtcdOptions {
                        endpoints: etcd_endpoints(urls, a.etcd_ca.is_some())?,
                        ca: a.etcd_ca.clone(),
                        cert: a.etcd_cert.clone(),
                        key: a.etcd_key.clone(),
                        request_timeout: plan.timeout,
                        ..EtcdOptions::default()
                    })
                }
                None => StoreTarget::Keyward(client),
            };
            let work = StoreWork {
                op: a.op,
                size,
                keys,
                watchers: watchers as usize,
            };
            super::runtime()?.block_on(bench_store(plan, target, work))
        }
        BenchCommand::UnixPingpong(a) => {
            let plan = Plan::parse(&a.load, false)?;
            let size = parse_size("--payload", &a.payload, 1 << 20)?;
            // The echo gets its own runtime (its own threads), as a server process would.
            let echo = super::runtime()?;
            let dir = tempfile::Builder::new()
                .prefix("keyward-pingpong-")
                .tempdir()
                .map_err(|e| CliError::new(format!("cannot create a temporary directory: {e}")))?;
            let path = dir.path().join("echo.sock");
            let listener = echo
                .block_on(async { UnixListener::bind(&path) })
                .map_err(|e| CliError::new(format!("cannot listen on {}: {e}", path.display())))?;
            echo.spawn(echo_serve(listener));
            let res = super::runtime()?.block_on(bench_pingpong(plan, &path, size));
            echo.shutdown_background();
            res
        }
    }
}

/// Refuses `--server`, `--ca-file` and `--token-file` next to `--etcd`. Their environment
/// variables are ignored instead: a shell set up for a keyward server can still benchmark etcd.
/// (clap's own conflict check cannot tell a flag from its environment variable.)
fn refuse_keyward_flags(client: &ClientArgs) -> Result<(), CliError> {
    let from_env = |var: &str| std::env::var_os(var).map(PathBuf::from);
    let given = [
        (
            "--server",
            client.server.as_ref().map(PathBuf::from),
            "KEYWARD_SERVER",
        ),
        ("--ca-file", client.ca_file.clone(), "KEYWARD_CA_FILE"),
        (
            "--token-file",
            client.token_file.clone(),
            "KEYWARD_TOKEN_FILE",
        ),
    ];
    for (flag, value, var) in given {
        if value.is_some() && value != from_env(var) {
            return Err(CliError::new(format!(
                "--etcd cannot be used with {flag}: --etcd benchmarks etcd directly, {flag} is for a keyward server"
            ))
            .hint("run `keyward bench store` once with --server and once with --etcd to compare them"));
        }
    }
    Ok(())
}

/// The `--etcd` client URLs: comma-separated `http://` or `https://` URLs.
fn etcd_endpoints(s: &str, have_ca: bool) -> Result<Vec<String>, CliError> {
    let hint = "give etcd's client URLs, comma-separated, e.g. http://127.0.0.1:2379";
    let mut urls = Vec::new();
    for u in s.split(',').map(str::trim) {
        if u.is_empty() {
            return Err(
                CliError::new(format!("--etcd {s:?}: an empty URL in the list")).hint(hint),
            );
        }
        let https = u.starts_with("https://");
        if !https && !u.starts_with("http://") {
            return Err(CliError::new(format!(
                "--etcd {u:?}: expected http://host:port or https://host:port"
            ))
            .hint(hint));
        }
        Endpoint::from_shared(u.to_owned())
            .map_err(|e| CliError::new(format!("--etcd {u:?}: not a valid URL: {e}")).hint(hint))?;
        if https && !have_ca {
            return Err(CliError::new(format!(
                "--etcd {u:?}: an https URL needs --etcd-ca, the CA that signed etcd's certificate"
            )));
        }
        urls.push(u.to_owned());
    }
    Ok(urls)
}

/// When measuring stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Requests(u64),
    For(Duration),
}

/// Validated [`LoadArgs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    concurrency: usize,
    connections: usize,
    stop: Stop,
    warmup: Duration,
    timeout: Duration,
    format: Format,
}

impl Plan {
    /// Validates the flags; a storm sets its own request count and has no warm-up.
    fn parse(a: &LoadArgs, storm: bool) -> Result<Plan, CliError> {
        let concurrency = parse_count("--concurrency", &a.concurrency, 1, 10_000)? as usize;
        let connections = parse_count("--connections", &a.connections, 1, 1000)? as usize;
        let stop = match (&a.requests, &a.duration) {
            (Some(n), _) => Stop::Requests(parse_count("--requests", n, 1, 1_000_000_000)?),
            (None, Some(d)) => Stop::For(parse_duration("--duration", d, false)?),
            (None, None) => Stop::For(Duration::from_secs(10)),
        };
        let warmup = if storm {
            Duration::ZERO
        } else {
            parse_duration("--warmup", &a.warmup, true)?
        };
        Ok(Plan {
            concurrency,
            connections: connections.min(concurrency),
            stop,
            warmup,
            timeout: parse_duration("--timeout", &a.timeout, false)?,
            format: a.output,
        })
    }
}

/// A whole number in `min..=max`, with an error naming `flag`.
fn parse_count(flag: &str, s: &str, min: u64, max: u64) -> Result<u64, CliError> {
    match s.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(CliError::new(format!(
            "{flag}: must be {min} to {max} (got {s})"
        ))),
        Err(_) => Err(CliError::new(format!(
            "{flag}: {s:?} is not a whole number (expected {min} to {max})"
        ))),
    }
}

/// A duration like `10s`, `500ms` or `1m` (at most a day).
fn parse_duration(flag: &str, s: &str, zero_ok: bool) -> Result<Duration, CliError> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        CliError::new(format!("{flag}: {s:?} is not a duration: {e}"))
            .hint("use a number with a unit, e.g. 10s, 500ms or 1m")
    })?;
    if d.is_zero() && !zero_ok {
        return Err(CliError::new(format!("{flag}: must be more than 0")));
    }
    if d > Duration::from_secs(86_400) {
        return Err(CliError::new(format!(
            "{flag}: must be at most 24h (got {s})"
        )));
    }
    Ok(d)
}

/// A size in bytes: `32`, `32B`, `1KiB`, `4KiB`, `1MiB` (also `KB`/`MB` as powers of 1000),
/// from 1 to `max`.
fn parse_size(flag: &str, s: &str, max: u64) -> Result<usize, CliError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "ki" | "k" => 1 << 10,
        "mib" | "mi" | "m" => 1 << 20,
        "kb" => 1000,
        "mb" => 1_000_000,
        _ => {
            return Err(CliError::new(format!("{flag}: {s:?} is not a size"))
                .hint("use bytes or a unit, e.g. 32, 1KiB, 4KiB or 1MiB"))
        }
    };
    let n: u64 = num.parse().map_err(|_| {
        CliError::new(format!("{flag}: {s:?} is not a size"))
            .hint("use bytes or a unit, e.g. 32, 1KiB, 4KiB or 1MiB")
    })?;
    match n.checked_mul(unit_bytes) {
        Some(b) if (1..=max).contains(&b) => Ok(b as usize),
        _ => Err(CliError::new(format!(
            "{flag}: must be 1 byte to {} (got {s})",
            show_bytes(max)
        ))),
    }
}

fn show_bytes(b: u64) -> String {
    if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{}MiB", b >> 20)
    } else if b >= 1 << 10 && b % (1 << 10) == 0 {
        format!("{}KiB", b >> 10)
    } else {
        format!("{b} bytes")
    }
}

/// The socket path of `--endpoint unix:///path`.
fn kms_socket(endpoint: &str) -> Result<PathBuf, CliError> {
    match endpoint.strip_prefix("unix://") {
        Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
        _ => Err(CliError::new(format!(
            "--endpoint {endpoint:?}: expected unix:///absolute/path/to/plugin.sock"
        ))
        .hint("KMS v2 plugins listen on Unix sockets, as in the EncryptionConfiguration endpoint")),
    }
}

/// One worker's call; `n` numbers the calls of a phase from 0 across all workers.
trait Worker: Send + 'static {
    fn call(&mut self, n: u64) -> impl Future<Output = Result<(), Status>> + Send;
}

/// The merged result of a run.
struct Outcome {
    latency: Histogram<u64>,
    calls: u64,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
    /// Calls made during the warm-up (not measured).
    warmup_calls: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Runs `workers` concurrently: unmeasured for `warmup`, then until `stop`.
async fn drive<W: Worker>(workers: Vec<W>, plan: &Plan) -> Result<Outcome, CliError> {
    let seq = Arc::new(AtomicU64::new(0));
    let warm_seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + plan.warmup;
    let (end, limit) = match plan.stop {
        Stop::For(d) => (Some(start + d), None),
        Stop::Requests(n) => (None, Some(n)),
    };
    let timeout = plan.timeout;
    let mut tasks = Vec::with_capacity(workers.len());
    for mut w in workers {
        let seq = seq.clone();
        let warm_seq = warm_seq.clone();
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let mut calls = 0u64;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let now = Instant::now();
                if now < start {
                    let n = warm_seq.fetch_add(1, Ordering::Relaxed);
                    let _ = tokio::time::timeout(timeout, w.call(n)).await;
                    continue;
                }
                if end.is_some_and(|end| now >= end) {
                    break;
                }
                let n = seq.fetch_add(1, Ordering::Relaxed);
                if limit.is_some_and(|limit| n >= limit) {
                    break;
                }
                let t0 = Instant::now();
                let res = match tokio::time::timeout(timeout, w.call(n)).await {
                    Ok(r) => r,
                    Err(_) => Err(Status::deadline_exceeded("client-side --timeout")),
                };
                let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                calls += 1;
                match res {
                    Ok(()) => latency.saturating_record(us.max(1)),
                    Err(s) => *errors.entry(code_name(s.code())).or_default() += 1,
                }
            }
            (latency, calls, errors, Instant::now())
        }));
    }
    let mut out = Outcome {
        latency: histogram(),
        calls: 0,
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
        warmup_calls: 0,
    };
    let mut last = start;
    for t in tasks {
        let (latency, calls, errors, done) = t
            .await
            .map_err(|e| CliError::new(format!("benchmark worker failed: {e}")))?;
        out.latency
            .add(&latency)
            .map_err(|e| CliError::new(format!("cannot merge latency histograms: {e}")))?;
        out.calls += calls;
        for (code, n) in errors {
            *out.errors.entry(code).or_default() += n;
        }
        last = last.max(done);
    }
    out.elapsed = last.saturating_duration_since(start);
    out.warmup_calls = warm_seq.load(Ordering::Relaxed);
    Ok(out)
}

/// A gRPC code's name as in the gRPC spec's Rust spelling, e.g. `Unavailable`.
fn code_name(c: Code) -> String {
    format!("{c:?}")
}

/// What the report describes.
struct Header {
    /// What was measured: `kms`, `store`, `etcd` or `unix-pingpong`.
    target: &'static str,
    /// Where: the socket or URLs called.
    endpoint: String,
    op: String,
    plan: Plan,
    /// Payload or value size: JSON name, text label, bytes.
    size: Option<(&'static str, &'static str, usize)>,
    /// `--storm N`, `--keys N`, `--watchers N`: JSON name (also the text label), value.
    counts: Vec<(&'static str, u64)>,
}

fn report(h: &Header, o: &Outcome) -> String {
    let errors: u64 = o.errors.values().sum();
    let secs = o.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        o.calls as f64 / secs
    } else {
        0.0
    };
    let q = |p: f64| o.latency.value_at_quantile(p);
    let lat = |v: u64| if o.latency.is_empty() { 0 } else { v };
    let storm = h.counts.iter().any(|(k, _)| *k == "storm");
    if h.plan.format == Format::Json {
        let mut v = serde_json::json!({
            "target": h.target,
            "endpoint": h.endpoint,
            "op": h.op,
            "concurrency": h.plan.concurrency,
            "connections": h.plan.connections,
            "warmup_seconds": h.plan.warmup.as_secs_f64(),
            "warmup_calls": o.warmup_calls,
            "calls": o.calls,
            "ok": o.calls - errors,
            "errors": errors,
            "errors_by_code": o.errors,
            "elapsed_seconds": secs,
            "calls_per_second": rate,
            "latency_us": {
                "min": lat(o.latency.min()),
                "mean": if o.latency.is_empty() { 0.0 } else { o.latency.mean() },
                "p50": lat(q(0.5)),
                "p90": lat(q(0.9)),
                "p99": lat(q(0.99)),
                "p99_9": lat(q(0.999)),
                "max": lat(o.latency.max()),
            },
        });
        if let Some((name, _, bytes)) = h.size {
            v[name] = bytes.into();
        }
        for (name, n) in &h.counts {
            v[*name] = (*n).into();
        }
        if storm {
            v["time_to_finish_seconds"] = secs.into();
        }
        return v.to_string();
    }
    let mut s = format!(
        "keyward bench {} {}: {} workers on {} connection{}",
        h.target,
        h.op,
        h.plan.concurrency,
        h.plan.connections,
        if h.plan.connections == 1 { "" } else { "s" }
    );
    if let Some((_, label, bytes)) = h.size {
        s += &format!(", {label} {}", show_bytes(bytes as u64));
    }
    for (name, n) in &h.counts {
        s += &format!(", {name} {n}");
    }
    if !h.plan.warmup.is_zero() {
        s += &format!(
            ", after {} warm-up",
            humantime::format_duration(h.plan.warmup)
        );
    }
    s += &format!("\n  endpoint:       {}\n", h.endpoint);
    if storm {
        s += &format!("  time to finish: {}\n", show_secs(o.elapsed));
    }
    s += &format!(
        "  calls:          {} in {} ({} ok, {} errors)\n  throughput:     {:.1} calls/s\n",
        o.calls,
        show_secs(o.elapsed),
        o.calls - errors,
        errors,
        rate
    );
    if o.latency.is_empty() {
        s += "  latency:        no successful calls\n";
    } else {
        s += &format!(
            "  latency:        p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
            show_us(q(0.5)),
            show_us(q(0.9)),
            show_us(q(0.99)),
            show_us(q(0.999)),
            show_us(o.latency.max())
        );
    }
    if !o.errors.is_empty() {
        let list: Vec<String> = o.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
        s += &format!("  errors:         {}\n", list.join(", "));
    }
    s.pop();
    s
}

/// Microseconds with a unit: `850µs`, `1.25ms`, `2.10s`.
fn show_us(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

fn show_secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// `size` bytes: random, with `n` in the first bytes so that payloads are distinct.
fn payload(size: usize, n: u64) -> Result<Vec<u8>, CliError> {
    let mut p = vec![0u8; size];
    getrandom::getrandom(&mut p)
        .map_err(|e| CliError::new(format!("cannot generate random payloads: {e}")))?;
    stamp(&mut p, n);
    Ok(p)
}

/// Writes `tag` big-endian into the first bytes of `buf` (its last bytes if `buf` is shorter).
fn stamp(buf: &mut [u8], tag: u64) {
    let t = tag.to_be_bytes();
    let k = buf.len().min(TAG_BYTES);
    buf[..k].copy_from_slice(&t[TAG_BYTES - k..]);
}

/// Whether `buf` starts with `tag` as [`stamp`] wrote it.
fn has_stamp(buf: &[u8], tag: u64) -> bool {
    let t = tag.to_be_bytes();
    let k = buf.len().min(TAG_BYTES);
    buf[..k] == t[TAG_BYTES - k..]
}

/// The tag at the start of a value of at least [`TAG_BYTES`] bytes.
fn tag_of(value: &[u8]) -> Option<u64> {
    let head: [u8; TAG_BYTES] = value.get(..TAG_BYTES)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

/// Runs `count` setup jobs on `concurrency` tasks; `job(i)` for each i in `0..count`.
async fn setup<T, F, Fut>(count: u64, concurrency: usize, job: F) -> Result<Vec<T>, CliError>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T, CliError>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(count as usize).max(1) {
        let next = next.clone();
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, CliError>(done);
                }
                done.push((i, job(i).await?));
            }
        }));
    }
    let mut all = Vec::with_capacity(count as usize);
    for t in tasks {
        all.extend(
            t.await
                .map_err(|e| CliError::new(format!("setup task failed: {e}")))??,
        );
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// A payload encrypted before the run, decrypted during it.
struct Sealed {
    plaintext: Vec<u8>,
    ciphertext: Vec<u8>,
    key_id: String,
    annotations: BTreeMap<String, Vec<u8>>,
}

type KmsClient = KeyManagementServiceClient<Channel>;

struct KmsWorker {
    client: KmsClient,
    health: HealthClient<Channel>,
    op: KmsOp,
    plaintext: Arc<Vec<u8>>,
    pool: Arc<Vec<Sealed>>,
}

impl KmsWorker {
    async fn encrypt(&mut self) -> Result<(), Status> {
        self.client
            .encrypt(kpb::EncryptRequest {
                plaintext: self.plaintext.to_vec(),
                uid: uuid::Uuid::new_v4().to_string(),
            })
            .await
            .map(drop)
    }

    async fn decrypt(&mut self, n: u64) -> Result<(), Status> {
        let s = &self.pool[(n % self.pool.len() as u64) as usize];
        let got = self
            .client
            .decrypt(kpb::DecryptRequest {
                ciphertext: s.ciphertext.clone(),
                uid: uuid::Uuid::new_v4().to_string(),
                key_id: s.key_id.clone(),
                annotations: s.annotations.clone(),
            })
            .await?
            .into_inner();
        if got.plaintext != s.plaintext {
            return Err(Status::data_loss("Decrypt returned a different plaintext"));
        }
        Ok(())
    }

    async fn status(&mut self) -> Result<(), Status> {
        self.client.status(kpb::StatusRequest {}).await.map(drop)
    }

    /// grpc.health.v1 Health/Check of the server as a whole (service ""); anything but SERVING
    /// counts as Unavailable.
    async fn health(&mut self) -> Result<(), Status> {
        let r = self
            .health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner();
        if r.status != ServingStatus::Serving as i32 {
            return Err(Status::unavailable(format!(
                "health: the plugin is not SERVING (status {})",
                r.status
            )));
        }
        Ok(())
    }
}

impl Worker for KmsWorker {
    async fn call(&mut self, n: u64) -> Result<(), Status> {
        match self.op {
            KmsOp::Status => self.status().await,
            KmsOp::Encrypt => self.encrypt().await,
            KmsOp::Decrypt => self.decrypt(n).await,
            KmsOp::Health => self.health().await,
            KmsOp::Mixed if n % 100 == 99 => self.status().await,
            KmsOp::Mixed if n % 10 == 0 => self.encrypt().await,
            KmsOp::Mixed => self.decrypt(n).await,
        }
    }
}

async fn bench_kms(
    mut plan: Plan,
    socket: PathBuf,
    op: KmsOp,
    size: usize,
    storm: Option<u64>,
) -> Result<(), CliError> {
    let mut channels = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let ch = crate::uds::unix_channel(&socket).await.map_err(|e| {
            CliError::new(format!(
                "cannot connect to the KMS plugin at unix://{}: {e}",
                socket.display()
            ))
            .hint("check --endpoint: it must be the plugin's socket, as in the EncryptionConfiguration")
        })?;
        channels.push(ch);
    }
    let clients: Vec<KmsClient> = channels.iter().cloned().map(KmsClient::new).collect();
    let op = if storm.is_some() { KmsOp::Decrypt } else { op };
    let pool_size = match (storm, op) {
        (Some(n), _) => n,
        (None, KmsOp::Decrypt | KmsOp::Mixed) => DECRYPT_POOL,
        (None, _) => 0,
    };
    if let Some(n) = storm {
        plan.stop = Stop::Requests(n);
    }
    let setup_clients = clients.clone();
    let timeout = plan.timeout;
    let pool = setup(pool_size, plan.concurrency, move |i| {
        let mut c = setup_clients[i as usize % setup_clients.len()].clone();
        async move {
            let plaintext = payload(size, i)?;
            let call = c.encrypt(kpb::EncryptRequest {
                plaintext: plaintext.clone(),
                uid: uuid::Uuid::new_v4().to_string(),
            });
            let r = match tokio::time::timeout(timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded("client-side --timeout")),
            }
            .map_err(|s| {
                CliError::new(format!(
                    "preparing ciphertexts: Encrypt failed ({}): {}",
                    code_name(s.code()),
                    s.message()
                ))
            })?
            .into_inner();
            Ok(Sealed {
                plaintext,
                ciphertext: r.ciphertext,
                key_id: r.key_id,
                annotations: r.annotations,
            })
        }
    })
    .await?;
    let pool = Arc::new(pool);
    let plaintext = Arc::new(payload(size, 0)?);
    let workers: Vec<KmsWorker> = (0..plan.concurrency)
        .map(|i| KmsWorker {
            client: clients[i % clients.len()].clone(),
            health: HealthClient::new(channels[i % channels.len()].clone()),
            op,
            plaintext: plaintext.clone(),
            pool: pool.clone(),
        })
        .collect();
    let outcome = drive(workers, &plan).await?;
    let header = Header {
        target: "kms",
        endpoint: format!("unix://{}", socket.display()),
        op: if storm.is_some() {
            "decrypt storm".into()
        } else {
            op_name(op)
        },
        plan,
        // Status and health calls carry no payload.
        size: matches!(op, KmsOp::Encrypt | KmsOp::Decrypt | KmsOp::Mixed).then_some((
            "payload_bytes",
            "payload",
            size,
        )),
        counts: storm.map(|n| ("storm", n)).into_iter().collect(),
    };
    println!("{}", report(&header, &outcome));
    Ok(())
}

fn op_name(op: impl ValueEnum) -> String {
    op.to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// What `bench store` calls.
enum StoreTarget<'a> {
    /// A keyward store, found as every client command finds it.
    Keyward(&'a ClientArgs),
    /// etcd, through keyward's etcd backend.
    Etcd(EtcdOptions),
}

/// What `bench store` does, validated.
#[derive(Debug, Clone, Copy)]
struct StoreWork {
    op: StoreOp,
    /// Value size in bytes.
    size: usize,
    /// Keys written before measuring and used by the workers.
    keys: u64,
    /// Watches open during `--op watch` (0 otherwise).
    watchers: usize,
}

/// One connection of `bench store`.
#[derive(Clone)]
enum StoreConn {
    /// A keyward store's `keyward.v1.Secrets` API.
    Keyward(client::Client),
    /// etcd's KV and Watch APIs, through [`EtcdBackend`] (linearizable reads).
    Etcd(EtcdBackend),
}

fn secret_name(i: u64) -> String {
    format!("bench-{i:07}")
}

/// The etcd key of the `i`th benchmark key: where kube-apiserver would store the Secret.
fn etcd_key(i: u64) -> Vec<u8> {
    format!("{ETCD_PREFIX}{}", secret_name(i)).into_bytes()
}

fn bench_secret(name: String, value: Vec<u8>) -> spb::Secret {
    spb::Secret {
        metadata: Some(spb::ObjectMeta {
            name,
            namespace: STORE_NAMESPACE.into(),
            ..Default::default()
        }),
        data: BTreeMap::from([(STORE_DATA_KEY.to_owned(), value)]),
        ..Default::default()
    }
}

/// A backend error as the gRPC code it would map to, so errors are counted alike for both
/// targets.
fn backend_status(e: BackendError) -> Status {
    match e {
        BackendError::Unavailable(m) => Status::unavailable(m),
        BackendError::InvalidArgument(m) => Status::invalid_argument(m),
        e @ (BackendError::Compacted { .. } | BackendError::FutureRevision { .. }) => {
            Status::out_of_range(e.to_string())
        }
        e => Status::internal(e.to_string()),
    }
}

/// Runs `call` with the client-side `--timeout`.
async fn timed<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("client-side --timeout")))
}

impl StoreConn {
    /// Connects `n` times to `target` (one HTTP/2 connection each) and checks that it answers.
    async fn connect(target: &StoreTarget<'_>, n: usize) -> Result<Vec<StoreConn>, CliError> {
        let mut conns = Vec::with_capacity(n);
        match target {
            StoreTarget::Keyward(args) => {
                for _ in 0..n {
                    conns.push(StoreConn::Keyward(client::connect(args).await?));
                }
            }
            StoreTarget::Etcd(opts) => {
                let urls = opts.endpoints.join(",");
                for _ in 0..n {
                    let b = EtcdBackend::connect(opts).map_err(|e| {
                        CliError::new(format!("--etcd {urls}: {e}"))
                            .hint("check --etcd, --etcd-ca, --etcd-cert and --etcd-key")
                    })?;
                    conns.push(StoreConn::Etcd(b));
                }
                if let Some(StoreConn::Etcd(b)) = conns.first() {
                    b.check().await.map_err(|e| {
                        CliError::new(format!("cannot reach etcd at {urls}: {e}"))
                            .hint("check --etcd: it must list etcd's client URLs, and etcd must be running")
                    })?;
                }
            }
        }
        Ok(conns)
    }

    /// Overwrites key `i` unconditionally with `value`.
    async fn put(&mut self, i: u64, value: Vec<u8>) -> Result<(), Status> {
        match self {
            StoreConn::Keyward(c) => c
                .update(spb::UpdateRequest {
                    secret: Some(bench_secret(secret_name(i), value)),
                    dry_run: false,
                })
                .await
                .map(drop),
            StoreConn::Etcd(b) => match b
                .put(&etcd_key(i), value, Expect::Any)
                .await
                .map_err(backend_status)?
            {
                WriteOutcome::Applied { .. } => Ok(()),
                _ => Err(Status::internal("etcd did not apply an unconditional put")),
            },
        }
    }

    /// Reads key `i`, which must exist.
    async fn get(&mut self, i: u64) -> Result<(), Status> {
        match self {
            StoreConn::Keyward(c) => c
                .get(spb::GetRequest {
                    namespace: STORE_NAMESPACE.into(),
                    name: secret_name(i),
                    revision: 0,
                })
                .await
                .map(drop),
            StoreConn::Etcd(b) => match b.get(&etcd_key(i), None).await {
                Ok((Some(_), _)) => Ok(()),
                Ok((None, _)) => Err(Status::not_found(format!(
                    "{ETCD_PREFIX}{} does not exist",
                    secret_name(i)
                ))),
                Err(e) => Err(backend_status(e)),
            },
        }
    }

    /// Lists the first 100 keys of the namespace `bench`.
    async fn list(&mut self) -> Result<(), Status> {
        match self {
            StoreConn::Keyward(c) => c
                .list(spb::ListRequest {
                    namespace: STORE_NAMESPACE.into(),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .map(drop),
            StoreConn::Etcd(b) => b
                .range(RangeRequest {
                    start: ETCD_PREFIX.as_bytes().to_vec(),
                    end: None,
                    limit: 100,
                    revision: None,
                })
                .await
                .map(drop)
                .map_err(backend_status),
        }
    }

    /// Creates key `i` with `value`, or overwrites it if a previous run left it.
    async fn prepare(&mut self, i: u64, value: Vec<u8>, timeout: Duration) -> Result<(), CliError> {
        let what = match self {
            StoreConn::Keyward(_) => format!("Secret {STORE_NAMESPACE}/{}", secret_name(i)),
            StoreConn::Etcd(_) => format!("etcd key {ETCD_PREFIX}{}", secret_name(i)),
        };
        let fail = |call: &str, s: Status| {
            CliError::new(format!(
                "preparing {what}: {call} failed ({}): {}",
                code_name(s.code()),
                s.message()
            ))
        };
        match self {
            StoreConn::Keyward(c) => {
                let created = timed(
                    timeout,
                    c.create(spb::CreateRequest {
                        secret: Some(bench_secret(secret_name(i), value.clone())),
                        dry_run: false,
                    }),
                )
                .await;
                match created {
                    Ok(_) => Ok(()),
                    Err(s) if s.code() == Code::AlreadyExists => timed(timeout, self.put(i, value))
                        .await
                        .map_err(|s| fail("Update", s)),
                    Err(s) => Err(fail("Create", s)),
                }
            }
            StoreConn::Etcd(_) => timed(timeout, self.put(i, value))
                .await
                .map_err(|s| fail("Put", s)),
        }
    }

    /// Opens a watch on the namespace `bench` that reports every event's tag to `board`, from
    /// just after `from` (as returned by [`StoreConn::revision`]).
    async fn watch(
        &mut self,
        from: i64,
        board: Arc<WatchBoard>,
    ) -> Result<JoinHandle<()>, CliError> {
        let fail = |e: String| CliError::new(format!("cannot open a watch: {e}"));
        match self {
            StoreConn::Keyward(c) => {
                let mut stream = c
                    .watch(spb::WatchRequest {
                        namespace: STORE_NAMESPACE.into(),
                        resource_version: from.to_string(),
                        label_selector: String::new(),
                    })
                    .await
                    .map_err(|s| fail(format!("{}: {}", code_name(s.code()), s.message())))?
                    .into_inner();
                Ok(tokio::spawn(async move {
                    loop {
                        match stream.message().await {
                            Ok(Some(ev)) => {
                                let value =
                                    ev.object.and_then(|s| s.data.get(STORE_DATA_KEY).cloned());
                                if let Some(tag) = value.as_deref().and_then(tag_of) {
                                    board.delivered(tag);
                                }
                            }
                            Ok(None) => return board.end("the store ended the watch".into()),
                            Err(s) => {
                                return board.end(format!(
                                    "the watch failed ({}): {}",
                                    code_name(s.code()),
                                    s.message()
                                ))
                            }
                        }
                    }
                }))
            }
            StoreConn::Etcd(b) => {
                use tokio_stream::StreamExt as _;
                let mut stream = b
                    .watch(ETCD_PREFIX.as_bytes(), from + 1)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                Ok(tokio::spawn(async move {
                    loop {
                        match stream.next().await {
                            Some(Ok(ev)) => {
                                if ev.kind == EventKind::Put {
                                    if let Some(tag) = tag_of(&ev.kv.value) {
                                        board.delivered(tag);
                                    }
                                }
                            }
                            Some(Err(e)) => return board.end(format!("the watch failed: {e}")),
                            None => return board.end("etcd ended the watch".into()),
                        }
                    }
                }))
            }
        }
    }

    /// The current revision: a watch from it sees every later write.
    async fn revision(&mut self) -> Result<i64, CliError> {
        match self {
            StoreConn::Keyward(c) => {
                let list = c
                    .list(spb::ListRequest {
                        namespace: STORE_NAMESPACE.into(),
                        limit: 1,
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| {
                        CliError::new(format!(
                            "cannot read the store's revision: List failed ({}): {}",
                            code_name(s.code()),
                            s.message()
                        ))
                    })?
                    .into_inner();
                list.resource_version.parse().map_err(|_| {
                    CliError::new(format!(
                        "the store answered List with a resourceVersion that is not a number: {:?}",
                        list.resource_version
                    ))
                })
            }
            StoreConn::Etcd(b) => b
                .current_revision()
                .await
                .map_err(|e| CliError::new(format!("cannot read etcd's revision: {e}"))),
        }
    }
}

/// The writes of `--op watch` waiting for their events. Each write's value starts with a tag
/// unique in the run; a write is done once every watcher has received the event carrying it.
struct WatchBoard {
    watchers: usize,
    next_tag: AtomicU64,
    state: Mutex<BoardState>,
}

#[derive(Default)]
struct BoardState {
    /// Tag → (watchers that have not seen it yet, who to tell when none are left).
    waiting: HashMap<u64, (usize, oneshot::Sender<()>)>,
    /// Why a watch ended; once set, no write can complete.
    ended: Option<String>,
}

/// A write registered on the board; unregisters itself when dropped (done, failed or timed
/// out).
struct Expected {
    board: Arc<WatchBoard>,
    tag: u64,
    seen: oneshot::Receiver<()>,
}

impl WatchBoard {
    fn new(watchers: usize) -> Arc<WatchBoard> {
        Arc::new(WatchBoard {
            watchers,
            next_tag: AtomicU64::new(0),
            state: Mutex::new(BoardState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BoardState> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new write; its value must carry the returned tag.
    fn expect(self: &Arc<Self>) -> Result<Expected, Status> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut st = self.lock();
        if let Some(why) = &st.ended {
            return Err(Status::unavailable(why.clone()));
        }
        st.waiting.insert(tag, (self.watchers, tx));
        Ok(Expected {
            board: self.clone(),
            tag,
            seen: rx,
        })
    }

    /// One watcher received the event tagged `tag` (unknown tags are ignored).
    fn delivered(&self, tag: u64) {
        let mut st = self.lock();
        if let Some((left, _)) = st.waiting.get_mut(&tag) {
            *left -= 1;
            if *left == 0 {
                if let Some((_, done)) = st.waiting.remove(&tag) {
                    let _ = done.send(());
                }
            }
        }
    }

    /// A watch ended: every waiting and later write fails with `why`.
    fn end(&self, why: String) {
        let mut st = self.lock();
        st.ended.get_or_insert(why);
        st.waiting.clear();
    }
}

impl Expected {
    /// Waits until every watcher has received this write's event.
    async fn seen(&mut self) -> Result<(), Status> {
        match (&mut self.seen).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Status::unavailable(
                self.board
                    .lock()
                    .ended
                    .clone()
                    .unwrap_or_else(|| "the watch ended".into()),
            )),
        }
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        self.board.lock().waiting.remove(&self.tag);
    }
}

struct StoreWorker {
    conn: StoreConn,
    work: StoreWork,
    value: Arc<Vec<u8>>,
    board: Option<Arc<WatchBoard>>,
}

impl StoreWorker {
    /// This run's value with `tag` in front, so that no update is a no-op.
    fn value(&self, tag: u64) -> Vec<u8> {
        let mut value = self.value.to_vec();
        stamp(&mut value, tag);
        value
    }

    async fn put(&mut self, n: u64) -> Result<(), Status> {
        let value = self.value(n);
        self.conn.put(n % self.work.keys, value).await
    }

    /// A put, done once it is acknowledged and every watcher has received its event.
    async fn watched_put(&mut self, n: u64) -> Result<(), Status> {
        let Some(board) = &self.board else {
            return Err(Status::internal("--op watch without watchers"));
        };
        let mut expected = board.expect()?;
        let value = self.value(expected.tag);
        self.conn.put(n % self.work.keys, value).await?;
        expected.seen().await
    }
}

impl Worker for StoreWorker {
    async fn call(&mut self, n: u64) -> Result<(), Status> {
        match self.work.op {
            StoreOp::Put => self.put(n).await,
            StoreOp::Get => self.conn.get(n % self.work.keys).await,
            StoreOp::List => self.conn.list().await,
            StoreOp::Mixed if n % 10 == 9 => self.put(n).await,
            StoreOp::Mixed => self.conn.get(n % self.work.keys).await,
            StoreOp::Watch => self.watched_put(n).await,
        }
    }
}

async fn bench_store(plan: Plan, target: StoreTarget<'_>, work: StoreWork) -> Result<(), CliError> {
    let conns = StoreConn::connect(&target, plan.connections).await?;
    let setup_conns = conns.clone();
    let timeout = plan.timeout;
    let size = work.size;
    // Create the keys, or overwrite those a previous run left with this run's value size.
    setup(work.keys, plan.concurrency, move |i| {
        let mut c = setup_conns[i as usize % setup_conns.len()].clone();
        async move { c.prepare(i, payload(size, i)?, timeout).await }
    })
    .await?;
    let mut watches = Vec::new();
    let board = if work.op == StoreOp::Watch {
        let board = WatchBoard::new(work.watchers);
        let mut first = conns[0].clone();
        let from = first.revision().await?;
        for i in 0..work.watchers {
            let mut c = conns[i % conns.len()].clone();
            watches.push(c.watch(from, board.clone()).await?);
        }
        Some(board)
    } else {
        None
    };
    let value = Arc::new(payload(size, 0)?);
    let workers: Vec<StoreWorker> = (0..plan.concurrency)
        .map(|i| StoreWorker {
            conn: conns[i % conns.len()].clone(),
            work,
            value: value.clone(),
            board: board.clone(),
        })
        .collect();
    let outcome = drive(workers, &plan).await;
    for w in watches {
        w.abort();
    }
    let outcome = outcome?;
    let (target, endpoint) = match &target {
        StoreTarget::Keyward(args) => (
            "store",
            args.server.clone().unwrap_or_else(|| {
                let dev = Path::new(super::DEV_DIR).join("keyward.sock");
                format!(
                    "unix://{}",
                    std::path::absolute(&dev).unwrap_or(dev).display()
                )
            }),
        ),
        StoreTarget::Etcd(opts) => ("etcd", opts.endpoints.join(",")),
    };
    let mut counts = vec![("keys", work.keys)];
    if work.op == StoreOp::Watch {
        counts.push(("watchers", work.watchers as u64));
    }
    let header = Header {
        target,
        endpoint,
        op: op_name(work.op),
        plan,
        size: Some(("value_bytes", "value", size)),
        counts,
    };
    println!("{}", report(&header, &outcome));
    Ok(())
}

/// The echo listener of `bench unix-pingpong`: every connection gets back what it sends.
async fn echo_serve(listener: UnixListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (mut r, mut w) = stream.into_split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// One client connection of `bench unix-pingpong`. Requests are written whole under the write
/// lock, in the order their waiters are queued; the echo returns them in that order, and a reader
/// task hands each reply to the waiter at the front of the queue.
struct Pipe {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    state: Mutex<PipeState>,
}

#[derive(Default)]
struct PipeState {
    /// (tag, waiter) of each request written and not yet answered, oldest first.
    waiting: VecDeque<(u64, oneshot::Sender<bool>)>,
    /// The connection failed; no request can be answered.
    closed: bool,
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        // The queue stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads `size`-byte replies and hands each to the oldest waiter, telling it whether the reply
/// carries its tag. Ends (failing every waiter) when the connection does.
async fn read_replies(r: OwnedReadHalf, pipe: Arc<Pipe>, size: usize) {
    let mut r = tokio::io::BufReader::with_capacity(64 << 10, r);
    let mut buf = vec![0u8; size];
    while r.read_exact(&mut buf).await.is_ok() {
        let Some((tag, done)) = pipe.lock().waiting.pop_front() else {
            break;
        };
        let _ = done.send(has_stamp(&buf, tag));
    }
    let mut st = pipe.lock();
    st.closed = true;
    st.waiting.clear();
}

struct PingWorker {
    pipe: Arc<Pipe>,
    request: Arc<Vec<u8>>,
    next_tag: Arc<AtomicU64>,
}

impl Worker for PingWorker {
    async fn call(&mut self, _n: u64) -> Result<(), Status> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let mut msg = self.request.to_vec();
        stamp(&mut msg, tag);
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.pipe.writer.lock().await;
            {
                let mut st = self.pipe.lock();
                if st.closed {
                    return Err(Status::unavailable("the echo connection closed"));
                }
                st.waiting.push_back((tag, tx));
            }
            w.write_all(&msg)
                .await
                .map_err(|e| Status::unavailable(format!("writing to the echo socket: {e}")))?;
        }
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Status::data_loss("the echo does not match the request")),
            Err(_) => Err(Status::unavailable("the echo connection closed")),
        }
    }
}

async fn bench_pingpong(plan: Plan, path: &Path, size: usize) -> Result<(), CliError> {
    let mut pipes = Vec::with_capacity(plan.connections);
    let mut readers = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let stream = UnixStream::connect(path).await.map_err(|e| {
            CliError::new(format!(
                "cannot connect to the echo listener at {}: {e}",
                path.display()
            ))
        })?;
        let (r, w) = stream.into_split();
        let pipe = Arc::new(Pipe {
            writer: tokio::sync::Mutex::new(w),
            state: Mutex::new(PipeState::default()),
        });
        readers.push(tokio::spawn(read_replies(r, pipe.clone(), size)));
        pipes.push(pipe);
    }
    let request = Arc::new(payload(size, 0)?);
    let next_tag = Arc::new(AtomicU64::new(0));
    let workers: Vec<PingWorker> = (0..plan.concurrency)
        .map(|i| PingWorker {
            pipe: pipes[i % pipes.len()].clone(),
            request: request.clone(),
            next_tag: next_tag.clone(),
        })
        .collect();
    let outcome = drive(workers, &plan).await;
    for r in readers {
        r.abort();
    }
    let header = Header {
        target: "unix-pingpong",
        endpoint: format!("unix://{}", path.display()),
        op: "echo".into(),
        plan,
        size: Some(("payload_bytes", "payload", size)),
        counts: Vec::new(),
    };
    println!("{}", report(&header, &outcome?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Like the real command line: the client flags are global.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BenchCommand,
        #[command(flatten)]
        client: ClientArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.cmd)
    }

    fn load(cmd: &BenchCommand) -> &LoadArgs {
        match cmd {
            BenchCommand::Kms(a) => &a.load,
            BenchCommand::Store(a) => &a.load,
            BenchCommand::UnixPingpong(a) => &a.load,
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cmd = parse(&["kms", "--endpoint", "unix:///k.sock"]).unwrap();
        let plan = Plan::parse(load(&cmd), false).unwrap();
        assert_eq!(
            plan,
            Plan {
                concurrency: 16,
                connections: 4,
                stop: Stop::For(Duration::from_secs(10)),
                warmup: Duration::from_secs(1),
                timeout: Duration::from_secs(10),
                format: Format::Text,
            }
        );
        let BenchCommand::Kms(a) = cmd else { panic!() };
        assert_eq!(a.op, KmsOp::Decrypt);
        assert_eq!(parse_size("--payload", &a.payload, 1 << 20).unwrap(), 32);
    }

    #[test]
    fn plan_flags() {
        let cmd = parse(&[
            "store",
            "--requests",
            "300",
            "--concurrency",
            "2",
            "--warmup",
            "500ms",
            "-o",
            "json",
        ])
        .unwrap();
        let plan = Plan::parse(load(&cmd), false).unwrap();
        assert_eq!(plan.stop, Stop::Requests(300));
        assert_eq!(plan.connections, 2, "capped at --concurrency");
        assert_eq!(plan.warmup, Duration::from_millis(500));
        assert_eq!(plan.format, Format::Json);
        let cmd = parse(&["store", "--duration", "1m"]).unwrap();
        let plan = Plan::parse(load(&cmd), true).unwrap();
        assert_eq!(plan.stop, Stop::For(Duration::from_secs(60)));
        assert_eq!(plan.warmup, Duration::ZERO, "no warm-up in a storm");
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for (args, want) in [
            (
                &["--concurrency", "0"][..],
                "--concurrency: must be 1 to 10000",
            ),
            (
                &["--concurrency", "10001"],
                "--concurrency: must be 1 to 10000",
            ),
            (&["--concurrency", "many"], "--concurrency:"),
            (&["--connections", "0"], "--connections: must be 1 to 1000"),
            (&["--requests", "0"], "--requests: must be 1 to"),
            (&["--duration", "0s"], "--duration: must be more than 0"),
            (
                &["--duration", "soon"],
                "--duration: \"soon\" is not a duration",
            ),
            (&["--duration", "10"], "--duration:"),
            (&["--warmup", "2d"], "--warmup: must be at most 24h"),
            (&["--timeout", "0ms"], "--timeout: must be more than 0"),
        ] {
            let mut all = vec!["store"];
            all.extend_from_slice(args);
            let cmd = parse(&all).unwrap();
            let e = Plan::parse(load(&cmd), false).unwrap_err();
            assert!(e.message.starts_with(want), "{args:?}: {}", e.message);
        }
        assert!(parse(&["store", "--duration", "1s", "--requests", "5"]).is_err());
        let e = parse(&[
            "kms",
            "--endpoint",
            "unix:///k",
            "--storm",
            "5",
            "--requests",
            "5",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--storm") && e.contains("--requests"), "{e}");
        let e = parse(&["kms", "--endpoint", "unix:///k", "--op", "bogus"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--op"), "{e}");
        for bad in ["kms.sock", "unix://kms.sock", "/abs/kms.sock", "tcp://x"] {
            let e = kms_socket(bad).unwrap_err();
            assert!(e.message.starts_with("--endpoint"), "{}", e.message);
        }
        assert_eq!(
            kms_socket("unix:///run/kms.sock").unwrap(),
            PathBuf::from("/run/kms.sock")
        );
        let e = parse_count("--storm", "0", 1, 10).unwrap_err();
        assert_eq!(e.message, "--storm: must be 1 to 10 (got 0)");
    }

    #[test]
    fn durations() {
        for (s, want) in [
            ("10s", 10_000),
            ("500ms", 500),
            ("1m", 60_000),
            ("1m30s", 90_000),
        ] {
            let d = parse_duration("--duration", s, false).unwrap();
            assert_eq!(d, Duration::from_millis(want), "{s}");
        }
        assert_eq!(
            parse_duration("--warmup", "0s", true).unwrap(),
            Duration::ZERO
        );
    }

    #[test]
    fn sizes() {
        for (s, want) in [
            ("32", 32),
            ("32B", 32),
            ("1KiB", 1024),
            ("4KiB", 4096),
            ("1MiB", 1 << 20),
            ("2kb", 2000),
            (" 7 KiB ", 7 * 1024),
        ] {
            assert_eq!(parse_size("--payload", s, 1 << 20).unwrap(), want, "{s}");
        }
        for (s, want) in [
            ("0", "--value-size: must be 1 byte to 1000KiB"),
            ("1MiB", "--value-size: must be 1 byte to 1000KiB"),
            ("99999999999999999999", "--value-size: \""),
            ("1GiB", "--value-size: \"1GiB\" is not a size"),
            ("KiB", "--value-size: \"KiB\" is not a size"),
            ("-1", "--value-size: \"-1\" is not a size"),
            ("1.5KiB", "--value-size: \"1.5KiB\" is not a size"),
        ] {
            let e = parse_size("--value-size", s, 1000 << 10).unwrap_err();
            assert!(e.message.starts_with(want), "{s}: {}", e.message);
        }
    }

    #[test]
    fn units() {
        assert_eq!(show_us(850), "850µs");
        assert_eq!(show_us(1250), "1.25ms");
        assert_eq!(show_us(2_100_000), "2.10s");
        assert_eq!(show_bytes(1 << 20), "1MiB");
        assert_eq!(show_bytes(4096), "4KiB");
        assert_eq!(show_bytes(33), "33 bytes");
    }

    #[test]
    fn payloads_are_distinct() {
        let a = payload(32, 1).unwrap();
        let b = payload(32, 2).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a[..8], b[..8]);
        assert_eq!(payload(1, 300).unwrap().len(), 1);
    }

    /// Fails one call in four with `Unavailable`, after sleeping `n % 3` ms.
    struct Fake;

    impl Worker for Fake {
        async fn call(&mut self, n: u64) -> Result<(), Status> {
            tokio::time::sleep(Duration::from_millis(n % 3)).await;
            if n % 4 == 3 {
                Err(Status::unavailable("down"))
            } else {
                Ok(())
            }
        }
    }

    fn plan(stop: Stop, format: Format) -> Plan {
        Plan {
            concurrency: 4,
            connections: 1,
            stop,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(5),
            format,
        }
    }

    #[tokio::test]
    async fn drive_counts_calls_errors_and_latency() {
        let p = plan(Stop::Requests(100), Format::Json);
        let o = drive((0..4).map(|_| Fake).collect(), &p).await.unwrap();
        assert_eq!(o.calls, 100);
        assert_eq!(o.warmup_calls, 0);
        assert_eq!(o.errors, BTreeMap::from([("Unavailable".to_owned(), 25)]));
        assert_eq!(o.latency.len(), 75);
        let h = Header {
            target: "kms",
            endpoint: "unix:///k.sock".into(),
            op: "decrypt".into(),
            plan: p,
            size: Some(("payload_bytes", "payload", 32)),
            counts: vec![("storm", 100)],
        };
        let v: serde_json::Value = serde_json::from_str(&report(&h, &o)).unwrap();
        assert_eq!(v["calls"], 100);
        assert_eq!(v["ok"], 75);
        assert_eq!(v["errors"], 25);
        assert_eq!(v["errors_by_code"]["Unavailable"], 25);
        assert_eq!(v["payload_bytes"], 32);
        assert_eq!(v["storm"], 100);
        assert!(v["time_to_finish_seconds"].is_f64());
        let l = &v["latency_us"];
        let get = |k: &str| l[k].as_u64().unwrap();
        assert!(get("min") <= get("p50"));
        assert!(get("p50") <= get("p90") && get("p90") <= get("p99"));
        assert!(get("p99") <= get("p99_9") && get("p99_9") <= get("max"));
        let text = report(
            &Header {
                plan: plan(Stop::Requests(100), Format::Text),
                ..h
            },
            &o,
        );
        assert!(text.contains("time to finish:"), "{text}");
        assert!(text.contains("errors:         Unavailable 25"), "{text}");
        assert!(text.contains("p99.9"), "{text}");
    }

    #[tokio::test]
    async fn drive_for_a_duration_with_warmup() {
        let mut p = plan(Stop::For(Duration::from_millis(50)), Format::Text);
        p.warmup = Duration::from_millis(20);
        let o = drive((0..4).map(|_| Fake).collect(), &p).await.unwrap();
        assert!(o.calls > 0);
        assert!(
            o.warmup_calls >= 4,
            "each worker warms up: {}",
            o.warmup_calls
        );
        assert!(o.elapsed >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn slow_calls_time_out() {
        struct Slow;
        impl Worker for Slow {
            async fn call(&mut self, _: u64) -> Result<(), Status> {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }
        }
        let mut p = plan(Stop::Requests(2), Format::Text);
        p.concurrency = 2;
        p.timeout = Duration::from_millis(10);
        let o = drive(vec![Slow, Slow], &p).await.unwrap();
        assert_eq!(
            o.errors,
            BTreeMap::from([("DeadlineExceeded".to_owned(), 2)])
        );
        assert!(report(
            &Header {
                target: "store",
                endpoint: "unix:///s.sock".into(),
                op: "get".into(),
                plan: p,
                size: None,
                counts: Vec::new(),
            },
            &o
        )
        .contains("no successful calls"));
    }

    #[test]
    fn new_flags_parse() {
        let BenchCommand::Kms(a) =
            parse(&["kms", "--endpoint", "unix:///k", "--op", "health"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.op, KmsOp::Health);
        let BenchCommand::Store(a) = parse(&[
            "store",
            "--etcd",
            "http://127.0.0.1:2379,http://127.0.0.1:22379",
            "--op",
            "watch",
            "--watchers",
            "3",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.op, StoreOp::Watch);
        assert_eq!(a.watchers.as_deref(), Some("3"));
        assert_eq!(
            etcd_endpoints(a.etcd.as_deref().unwrap(), false).unwrap(),
            ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
        );
        let cmd = parse(&["unix-pingpong", "--payload", "1KiB", "--concurrency", "64"]).unwrap();
        assert_eq!(Plan::parse(load(&cmd), false).unwrap().concurrency, 64);
        let BenchCommand::UnixPingpong(a) = cmd else {
            panic!()
        };
        assert_eq!(parse_size("--payload", &a.payload, 1 << 20).unwrap(), 1024);
        // TLS files for etcd only make sense with --etcd; client certificates only without.
        let e = parse(&["store", "--etcd-ca", "ca.pem"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--etcd"), "{e}");
        let e = parse(&["store", "--etcd", "http://e:2379", "--client-key", "k"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--etcd") && e.contains("--client-key"), "{e}");
    }

    #[test]
    fn etcd_urls_name_the_flag() {
        for (urls, want) in [
            ("", "--etcd \"\": an empty URL"),
            (
                "http://a:1,,http://b:1",
                "--etcd \"http://a:1,,http://b:1\": an empty URL",
            ),
            (
                "127.0.0.1:2379",
                "--etcd \"127.0.0.1:2379\": expected http://",
            ),
            (
                "unix:///e.sock",
                "--etcd \"unix:///e.sock\": expected http://",
            ),
            ("http://[::1", "--etcd \"http://[::1\": not a valid URL"),
            (
                "https://e:2379",
                "--etcd \"https://e:2379\": an https URL needs --etcd-ca",
            ),
        ] {
            let e = etcd_endpoints(urls, false).unwrap_err();
            assert!(e.message.starts_with(want), "{urls}: {}", e.message);
        }
        assert_eq!(
            etcd_endpoints(" https://e:2379 ", true).unwrap(),
            ["https://e:2379"]
        );
    }

    #[test]
    fn stamps() {
        let mut v = vec![0xaa; 16];
        stamp(&mut v, 0x0102_0304_0506_0708);
        assert_eq!(v[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(v[8..], [0xaa; 8]);
        assert_eq!(tag_of(&v), Some(0x0102_0304_0506_0708));
        assert!(has_stamp(&v, 0x0102_0304_0506_0708));
        assert!(!has_stamp(&v, 7));
        assert_eq!(tag_of(&v[..7]), None);
        let mut short = [0u8; 2];
        stamp(&mut short, 0x0102_0304_0506_0708);
        assert_eq!(short, [7, 8]);
        assert!(has_stamp(&short, 0x0708));
    }

    #[tokio::test]
    async fn watch_board_waits_for_every_watcher() {
        let board = WatchBoard::new(2);
        let mut a = board.expect().unwrap();
        let b = board.expect().unwrap();
        assert_ne!(a.tag, b.tag);
        board.delivered(a.tag);
        board.delivered(12345); // not ours: ignored
        assert!(
            tokio::time::timeout(Duration::from_millis(20), a.seen())
                .await
                .is_err(),
            "one watcher of two has seen it"
        );
        board.delivered(a.tag);
        a.seen().await.unwrap();
        drop(a);
        // A dropped (e.g. timed out) write leaves nothing behind.
        drop(b);
        assert!(board.lock().waiting.is_empty());
        let mut c = board.expect().unwrap();
        board.end("etcd ended the watch".into());
        assert_eq!(
            c.seen().await.unwrap_err().message(),
            "etcd ended the watch"
        );
        assert_eq!(
            board.expect().err().unwrap().code(),
            Code::Unavailable,
            "no write can complete once a watch has ended"
        );
    }

    #[tokio::test]
    async fn pingpong_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("echo.sock");
        let server = tokio::spawn(echo_serve(UnixListener::bind(&path).unwrap()));
        let p = plan(Stop::Requests(500), Format::Json);
        let stream = UnixStream::connect(&path).await.unwrap();
        let (r, w) = stream.into_split();
        let pipe = Arc::new(Pipe {
            writer: tokio::sync::Mutex::new(w),
            state: Mutex::new(PipeState::default()),
        });
        let reader = tokio::spawn(read_replies(r, pipe.clone(), 100));
        let next_tag = Arc::new(AtomicU64::new(0));
        let workers = (0..4)
            .map(|_| PingWorker {
                pipe: pipe.clone(),
                request: Arc::new(payload(100, 0).unwrap()),
                next_tag: next_tag.clone(),
            })
            .collect();
        let o = drive(workers, &p).await.unwrap();
        assert_eq!(o.calls, 500);
        assert!(o.errors.is_empty(), "{:?}", o.errors);
        assert_eq!(o.latency.len(), 500);
        server.abort();
        reader.abort();
        // Once the connection is gone, calls fail at once instead of waiting for --timeout.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (r, w) = ours.into_split();
        let pipe = Arc::new(Pipe {
            writer: tokio::sync::Mutex::new(w),
            state: Mutex::new(PipeState::default()),
        });
        drop(theirs);
        read_replies(r, pipe.clone(), 100).await;
        let mut w = PingWorker {
            pipe,
            request: Arc::new(vec![0; 100]),
            next_tag,
        };
        assert_eq!(w.call(0).await.unwrap_err().code(), Code::Unavailable);
    }
}
