//! `keyward bench`: load generators for any KMS v2 plugin and for keyward's secret store.
//!
//! Workers are tokio tasks sharing `--connections` HTTP/2 connections (worker i uses connection
//! i mod connections), so calls are multiplexed as kube-apiserver does on its single plugin
//! connection. Each worker records the latency of its successful calls in its own HDR histogram
//! (microseconds); the histograms are merged at the end. Failed calls are counted by gRPC code.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::client::{self, ClientArgs};
use super::CliError;
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

/// Load generators.
#[derive(Debug, Subcommand)]
pub(super) enum BenchCommand {
    /// Benchmark any KMS v2 plugin over its Unix socket (KMS v2 protocol only).
    ///
    /// Examples:
    ///   keyward bench kms --endpoint unix:///var/run/kms.sock --op decrypt --duration 30s
    ///   keyward bench kms --endpoint unix:///var/run/kms.sock --storm 50000 --concurrency 64
    #[command(verbatim_doc_comment)]
    Kms(BenchKmsArgs),
    /// Benchmark keyward's secret store (--server) with Secrets in the namespace `bench`.
    ///
    /// Example: keyward bench store --op mixed --keys 1000 --value-size 4KiB --duration 30s
    #[command(verbatim_doc_comment)]
    Store(BenchStoreArgs),
}

/// How long to run, how hard, and how to report: shared by every benchmark.
#[derive(Debug, Args)]
pub(super) struct LoadArgs {
    /// Concurrent workers (1 to 10000).
    #[arg(long, default_value = "16", value_name = "N")]
    concurrency: String,
    /// HTTP/2 connections the workers share (1 to 1000; at most --concurrency).
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
    /// Call to measure; mixed is 1 Encrypt : 9 Decrypt, with 1 call in 100 a Status.
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
    /// Call to measure: put (unconditional Update), get, list (limit 100), or mixed (90% get,
    /// 10% put).
    #[arg(long, value_enum, default_value_t = StoreOp::Mixed)]
    op: StoreOp,
    /// Size of each Secret's value (e.g. 32, 1KiB, 4KiB; up to 1000KiB).
    #[arg(long, default_value = "1KiB", value_name = "SIZE")]
    value_size: String,
    /// Secrets created (or overwritten) in the namespace `bench` before measuring (1 to
    /// 1000000).
    #[arg(long, default_value = "1000", value_name = "N")]
    keys: String,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreOp {
    Put,
    Get,
    List,
    Mixed,
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
            super::runtime()?.block_on(bench_store(plan, client, a.op, size, keys))
        }
    }
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
    Ok(out)
}

/// A gRPC code's name as in the gRPC spec's Rust spelling, e.g. `Unavailable`.
fn code_name(c: Code) -> String {
    format!("{c:?}")
}

/// What the report describes.
struct Header {
    target: &'static str,
    op: String,
    plan: Plan,
    /// Payload or value size: JSON name, text label, bytes.
    size: Option<(&'static str, &'static str, usize)>,
    /// `--storm N` or `--keys N`.
    count: Option<(&'static str, u64)>,
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
    let storm = h.count.filter(|(k, _)| *k == "storm");
    if h.plan.format == Format::Json {
        let mut v = serde_json::json!({
            "target": h.target,
            "op": h.op,
            "concurrency": h.plan.concurrency,
            "connections": h.plan.connections,
            "warmup_seconds": h.plan.warmup.as_secs_f64(),
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
        if let Some((name, n)) = h.count {
            v[name] = n.into();
        }
        if storm.is_some() {
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
    if let Some((name, n)) = h.count {
        s += &format!(", {name} {n}");
    }
    if !h.plan.warmup.is_zero() {
        s += &format!(
            ", after {} warm-up",
            humantime::format_duration(h.plan.warmup)
        );
    }
    s += "\n";
    if storm.is_some() {
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
    let tag = n.to_be_bytes();
    let k = size.min(tag.len());
    p[..k].copy_from_slice(&tag[tag.len() - k..]);
    Ok(p)
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
}

impl Worker for KmsWorker {
    async fn call(&mut self, n: u64) -> Result<(), Status> {
        match self.op {
            KmsOp::Status => self.status().await,
            KmsOp::Encrypt => self.encrypt().await,
            KmsOp::Decrypt => self.decrypt(n).await,
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
    let mut clients = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        let ch = crate::uds::unix_channel(&socket).await.map_err(|e| {
            CliError::new(format!(
                "cannot connect to the KMS plugin at unix://{}: {e}",
                socket.display()
            ))
            .hint("check --endpoint: it must be the plugin's socket, as in the EncryptionConfiguration")
        })?;
        clients.push(KmsClient::new(ch));
    }
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
            op,
            plaintext: plaintext.clone(),
            pool: pool.clone(),
        })
        .collect();
    let outcome = drive(workers, &plan).await?;
    let header = Header {
        target: "kms",
        op: if storm.is_some() {
            "decrypt storm".into()
        } else {
            op_name(op)
        },
        plan,
        size: Some(("payload_bytes", "payload", size)),
        count: storm.map(|n| ("storm", n)),
    };
    println!("{}", report(&header, &outcome));
    Ok(())
}

fn op_name(op: impl ValueEnum) -> String {
    op.to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

struct StoreWorker {
    client: client::Client,
    op: StoreOp,
    keys: u64,
    value: Arc<Vec<u8>>,
}

fn secret_name(i: u64) -> String {
    format!("bench-{i:07}")
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

impl StoreWorker {
    async fn put(&mut self, n: u64) -> Result<(), Status> {
        // A different value every time, so that no update is a no-op.
        let mut value = self.value.to_vec();
        let tag = n.to_be_bytes();
        let k = value.len().min(tag.len());
        value[..k].copy_from_slice(&tag[tag.len() - k..]);
        let secret = bench_secret(secret_name(n % self.keys), value);
        self.client
            .update(spb::UpdateRequest {
                secret: Some(secret),
                dry_run: false,
            })
            .await
            .map(drop)
    }

    async fn get(&mut self, n: u64) -> Result<(), Status> {
        self.client
            .get(spb::GetRequest {
                namespace: STORE_NAMESPACE.into(),
                name: secret_name(n % self.keys),
                revision: 0,
            })
            .await
            .map(drop)
    }

    async fn list(&mut self) -> Result<(), Status> {
        self.client
            .list(spb::ListRequest {
                namespace: STORE_NAMESPACE.into(),
                limit: 100,
                ..Default::default()
            })
            .await
            .map(drop)
    }
}

impl Worker for StoreWorker {
    async fn call(&mut self, n: u64) -> Result<(), Status> {
        match self.op {
            StoreOp::Put => self.put(n).await,
            StoreOp::Get => self.get(n).await,
            StoreOp::List => self.list().await,
            StoreOp::Mixed if n % 10 == 9 => self.put(n).await,
            StoreOp::Mixed => self.get(n).await,
        }
    }
}

async fn bench_store(
    plan: Plan,
    args: &ClientArgs,
    op: StoreOp,
    size: usize,
    keys: u64,
) -> Result<(), CliError> {
    let mut clients = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        clients.push(client::connect(args).await?);
    }
    let setup_clients = clients.clone();
    let timeout = plan.timeout;
    // Create the keys, or overwrite those a previous run left with this run's value size.
    setup(keys, plan.concurrency, move |i| {
        let mut c = setup_clients[i as usize % setup_clients.len()].clone();
        async move {
            let value = payload(size, i)?;
            let fail = |what: &str, s: Status| {
                CliError::new(format!(
                    "preparing Secret {STORE_NAMESPACE}/{}: {what} failed ({}): {}",
                    secret_name(i),
                    code_name(s.code()),
                    s.message()
                ))
            };
            let created = tokio::time::timeout(
                timeout,
                c.create(spb::CreateRequest {
                    secret: Some(bench_secret(secret_name(i), value.clone())),
                    dry_run: false,
                }),
            )
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("client-side --timeout")));
            match created {
                Ok(_) => Ok(()),
                Err(s) if s.code() == Code::AlreadyExists => {
                    let updated = tokio::time::timeout(
                        timeout,
                        c.update(spb::UpdateRequest {
                            secret: Some(bench_secret(secret_name(i), value)),
                            dry_run: false,
                        }),
                    )
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("client-side --timeout")));
                    updated.map(drop).map_err(|s| fail("Update", s))
                }
                Err(s) => Err(fail("Create", s)),
            }
        }
    })
    .await?;
    let value = Arc::new(payload(size, 0)?);
    let workers: Vec<StoreWorker> = (0..plan.concurrency)
        .map(|i| StoreWorker {
            client: clients[i % clients.len()].clone(),
            op,
            keys,
            value: value.clone(),
        })
        .collect();
    let outcome = drive(workers, &plan).await?;
    let header = Header {
        target: "store",
        op: op_name(op),
        plan,
        size: Some(("value_bytes", "value", size)),
        count: Some(("keys", keys)),
    };
    println!("{}", report(&header, &outcome));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: BenchCommand,
    }

    fn parse(args: &[&str]) -> Result<BenchCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.cmd)
    }

    fn load(cmd: &BenchCommand) -> &LoadArgs {
        match cmd {
            BenchCommand::Kms(a) => &a.load,
            BenchCommand::Store(a) => &a.load,
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
        assert_eq!(o.errors, BTreeMap::from([("Unavailable".to_owned(), 25)]));
        assert_eq!(o.latency.len(), 75);
        let h = Header {
            target: "kms",
            op: "decrypt".into(),
            plan: p,
            size: Some(("payload_bytes", "payload", 32)),
            count: Some(("storm", 100)),
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
                op: "get".into(),
                plan: p,
                size: None,
                count: None,
            },
            &o
        )
        .contains("no successful calls"));
    }
}
