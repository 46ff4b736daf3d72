//! `keyward bench`: the flags of the load generators in [`crate::bench`] (any KMS v2 plugin,
//! keyward's secret store, etcd, the Unix-socket floor), converted to its values; the report it
//! returns is printed as text or JSON, and its progress drawn on a terminal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use tokio::net::UnixListener;
use tonic::transport::Endpoint;

use super::client::{self, ClientArgs};
use super::flags::duration_up_to_a_day;
use super::process::runtime;
use super::{progress, CliError};
use crate::backend::etcd::{EtcdBackend, EtcdOptions};
use crate::bench::store::{StoreWork, Target};
use crate::bench::{self, kms, BenchError, Load, Progress, Report, Stop, TAG_BYTES};
use crate::uds::{self, UnixTarget};

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
    ///   keyward bench store --op get --rate 5000 --concurrency 32 --duration 30s
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
    /// Benchmark the store through its Kubernetes API (`keyward server --kube-listen`, as
    /// kubectl calls it) instead of keyward.v1 gRPC: the kubeconfig's current context gives the
    /// https:// server, its CA and a client certificate or token (e.g. keyward-dev/kubeconfig).
    /// Each connection carries one request at a time (HTTP/1.1, as client-go without HTTP/2):
    /// give --connections equal to --concurrency. Not with --op watch.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["etcd", "client_cert", "client_key"])]
    kubeconfig: Option<PathBuf>,
    /// Start calls on a fixed schedule of this many per second (an open loop; e.g. 200 or 2.5,
    /// from 0.01 to 1000000), the warm-up included, instead of each worker's next call as soon
    /// as its previous one returns (0, the default: a closed loop). Call i of the measurement
    /// is due at its start + i/rate; a late call is never skipped, and its latency counts from
    /// when it was due, not from when a worker was free to start it, so queueing behind slow
    /// calls is not hidden (no coordinated omission). --concurrency bounds the calls in flight.
    /// The report gives the target and the achieved rate and the calls started more than one
    /// interval late; with --duration, calls still due when the time is up are not started.
    #[arg(long, value_name = "CALLS_PER_SECOND", allow_negative_numbers = true)]
    rate: Option<String>,
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

impl From<KmsOp> for kms::KmsOp {
    fn from(op: KmsOp) -> Self {
        match op {
            KmsOp::Status => Self::Status,
            KmsOp::Encrypt => Self::Encrypt,
            KmsOp::Decrypt => Self::Decrypt,
            KmsOp::Mixed => Self::Mixed,
            KmsOp::Health => Self::Health,
        }
    }
}

impl From<StoreOp> for bench::store::StoreOp {
    fn from(op: StoreOp) -> Self {
        match op {
            StoreOp::Put => Self::Put,
            StoreOp::Get => Self::Get,
            StoreOp::List => Self::List,
            StoreOp::Mixed => Self::Mixed,
            StoreOp::Watch => Self::Watch,
        }
    }
}

/// Runs a benchmark and prints its report.
pub(super) fn bench(cmd: BenchCommand, client: &ClientArgs) -> Result<(), CliError> {
    let (format, report) = match cmd {
        BenchCommand::Kms(a) => {
            let load = load(&a.load, a.storm.is_some())?;
            let b = kms::KmsBench {
                socket: kms_socket(&a.endpoint)?,
                op: a.op.into(),
                payload: flag("--payload", bench::parse_size(&a.payload, 1 << 20))?,
                storm: a
                    .storm
                    .as_deref()
                    .map(|s| flag("--storm", bench::parse_count(s, 1, 10_000_000)))
                    .transpose()?,
            };
            let p = Progress::default();
            let report = runtime()?
                .block_on(progress::bench(&p, kms::run(load, &b, &p)))
                .map_err(|e| match e {
                    BenchError::Connect { .. } => CliError::new(e).hint(
                        "check --endpoint: it must be the plugin's socket, as in the EncryptionConfiguration",
                    ),
                    e => e.into(),
                })?;
            (a.load.output, report)
        }
        BenchCommand::Store(a) => (a.load.output, bench_store(&a, client)?),
        BenchCommand::UnixPingpong(a) => {
            let load = load(&a.load, false)?;
            let size = flag("--payload", bench::parse_size(&a.payload, 1 << 20))?;
            // The echo gets its own runtime (its own threads), as a server process would.
            let echo = runtime()?;
            let dir = tempfile::Builder::new()
                .prefix("keyward-pingpong-")
                .tempdir()
                .map_err(|e| CliError::new(format!("cannot create a temporary directory: {e}")))?;
            let path = dir.path().join("echo.sock");
            let listener = echo
                .block_on(async { UnixListener::bind(&path) })
                .map_err(|e| CliError::new(format!("cannot listen on {}: {e}", path.display())))?;
            echo.spawn(bench::pingpong::serve_echo(listener));
            let p = Progress::default();
            let res = runtime()?.block_on(progress::bench(
                &p,
                bench::pingpong::run(load, &path, size, &p),
            ));
            echo.shutdown_background();
            (a.load.output, res?)
        }
    };
    match format {
        Format::Text => println!("{}", report.text()),
        Format::Json => println!("{}", report.json()),
    }
    Ok(())
}

/// `bench store`: validates the flags, connects to the store or etcd, and runs.
fn bench_store(a: &BenchStoreArgs, client: &ClientArgs) -> Result<Report, CliError> {
    let load = store_load(a)?;
    let size = flag("--value-size", bench::parse_size(&a.value_size, 1000 << 10))?;
    let keys = flag("--keys", bench::parse_count(&a.keys, 1, 1_000_000))?;
    let watchers = match (a.op, a.watchers.as_deref()) {
        (StoreOp::Watch, w) => flag("--watchers", bench::parse_count(w.unwrap_or("1"), 1, 1000))?,
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
    let etcd = match &a.etcd {
        Some(urls) => {
            refuse_keyward_flags(client)?;
            let endpoints = etcd_endpoints(urls, a.etcd_ca.is_some())?;
            // The etcd client's refusals read as they did when it named the flags itself.
            let refused = |m| {
                CliError::new(format!("--etcd {urls}: invalid request: {m}"))
                    .hint("check --etcd, --etcd-ca, --etcd-cert and --etcd-key")
            };
            let opts = super::etcd::options(
                endpoints,
                a.etcd_ca.as_deref(),
                a.etcd_cert.as_deref(),
                a.etcd_key.as_deref(),
                refused,
            )?;
            Some(EtcdOptions {
                request_timeout: load.timeout,
                ..opts
            })
        }
        None => None,
    };
    let work = StoreWork {
        op: a.op.into(),
        size,
        keys,
        watchers: watchers as usize,
    };
    if a.kubeconfig.is_some() && a.op == StoreOp::Watch {
        return Err(CliError::new(
            "--op watch: not measured through the Kubernetes API (--kubeconfig)",
        )
        .hint("measure watch over keyward.v1 gRPC (without --kubeconfig)"));
    }
    let kube = match &a.kubeconfig {
        Some(path) => Some(
            bench::kube::KubeTarget::from_kubeconfig(path)
                .map_err(|e| CliError::new(format!("--kubeconfig: {e}")))?,
        ),
        None => None,
    };
    runtime()?.block_on(async {
        if let Some(kube) = kube {
            let mut conns = Vec::with_capacity(load.connections);
            for _ in 0..load.connections {
                conns.push(kube.connect().await?);
            }
            let target = Target::<tonic::transport::Channel>::Kube {
                conns,
                server: kube.server.clone(),
            };
            let p = Progress::default();
            return Ok(progress::bench(&p, bench::store::run(load, target, work, &p)).await?);
        }
        let target = match etcd {
            Some(opts) => Target::Etcd {
                backends: connect_etcd(&opts, load.connections).await?,
                endpoints: opts.endpoints,
            },
            None => {
                let mut clients = Vec::with_capacity(load.connections);
                for _ in 0..load.connections {
                    clients.push(client::connect(client).await?);
                }
                let server = client.server.clone().unwrap_or_else(|| {
                    let dev = Path::new(super::DEV_DIR).join("keyward.sock");
                    format!(
                        "unix://{}",
                        std::path::absolute(&dev).unwrap_or(dev).display()
                    )
                });
                Target::Keyward { clients, server }
            }
        };
        let p = Progress::default();
        Ok(progress::bench(&p, bench::store::run(load, target, work, &p)).await?)
    })
}

/// `n` connections to etcd, the first checked to answer.
async fn connect_etcd(opts: &EtcdOptions, n: usize) -> Result<Vec<EtcdBackend>, CliError> {
    let urls = opts.endpoints.join(",");
    let mut backends = Vec::with_capacity(n);
    for _ in 0..n {
        backends.push(EtcdBackend::connect(opts).map_err(|e| {
            CliError::new(format!("--etcd {urls}: {e}"))
                .hint("check --etcd, --etcd-ca, --etcd-cert and --etcd-key")
        })?);
    }
    if let Some(b) = backends.first() {
        b.check().await.map_err(|e| {
            CliError::new(format!("cannot reach etcd at {urls}: {e}"))
                .hint("check --etcd: it must list etcd's client URLs, and etcd must be running")
        })?;
    }
    Ok(backends)
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

/// `bench store`'s [`Load`]: the shared flags and `--rate`.
fn store_load(a: &BenchStoreArgs) -> Result<Load, CliError> {
    Ok(Load {
        rate: match &a.rate {
            Some(r) => flag("--rate", bench::parse_rate(r))?,
            None => None,
        },
        ..load(&a.load, false)?
    })
}

/// The shared flags as a [`Load`]; a storm sets its own request count and has no warm-up.
fn load(a: &LoadArgs, storm: bool) -> Result<Load, CliError> {
    let concurrency = flag(
        "--concurrency",
        bench::parse_count(&a.concurrency, 1, 10_000),
    )?;
    let connections = flag("--connections", bench::parse_count(&a.connections, 1, 1000))?;
    let stop = match (&a.requests, &a.duration) {
        (Some(n), _) => {
            Stop::Requests(flag("--requests", bench::parse_count(n, 1, 1_000_000_000))?)
        }
        (None, Some(d)) => Stop::For(duration_up_to_a_day("--duration", d, false)?),
        (None, None) => Stop::For(Duration::from_secs(10)),
    };
    let warmup = if storm {
        Duration::ZERO
    } else {
        duration_up_to_a_day("--warmup", &a.warmup, true)?
    };
    Ok(Load {
        concurrency: concurrency as usize,
        connections: connections.min(concurrency) as usize,
        stop,
        warmup,
        timeout: duration_up_to_a_day("--timeout", &a.timeout, false)?,
        rate: None,
    })
}

/// A value the library refused, as an error naming `name`, with an example where it helps.
fn flag<T>(name: &str, value: Result<T, BenchError>) -> Result<T, CliError> {
    value.map_err(|e| {
        let shown = CliError::new(format!("{name}: {e}"));
        match e {
            BenchError::NotASize { .. } => {
                shown.hint("use bytes or a unit, e.g. 32, 1KiB, 4KiB or 1MiB")
            }
            _ => shown,
        }
    })
}

/// The socket of `--endpoint unix:///path`, read as kube-apiserver reads a KMS endpoint.
fn kms_socket(endpoint: &str) -> Result<UnixTarget, CliError> {
    uds::parse_unix_endpoint(endpoint).map_err(|_| {
        CliError::new(format!(
            "--endpoint {endpoint:?}: expected unix:///absolute/path/to/plugin.sock"
        ))
        .hint("KMS v2 plugins listen on Unix sockets, as in the EncryptionConfiguration endpoint")
    })
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

    fn load_args(cmd: &BenchCommand) -> &LoadArgs {
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
        assert_eq!(
            load(load_args(&cmd), false).unwrap(),
            Load {
                concurrency: 16,
                connections: 4,
                stop: Stop::For(Duration::from_secs(10)),
                warmup: Duration::from_secs(1),
                timeout: Duration::from_secs(10),
                rate: None,
            }
        );
        let BenchCommand::Kms(a) = cmd else { panic!() };
        assert_eq!(a.load.output, Format::Text);
        assert_eq!(a.op, KmsOp::Decrypt);
        assert_eq!(bench::parse_size(&a.payload, 1 << 20).unwrap(), 32);
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
        let plan = load(load_args(&cmd), false).unwrap();
        assert_eq!(plan.stop, Stop::Requests(300));
        assert_eq!(plan.connections, 2, "capped at --concurrency");
        assert_eq!(plan.warmup, Duration::from_millis(500));
        assert_eq!(load_args(&cmd).output, Format::Json);
        let cmd = parse(&["store", "--duration", "1m"]).unwrap();
        let plan = load(load_args(&cmd), true).unwrap();
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
            let e = load(load_args(&cmd), false).unwrap_err();
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
            UnixTarget::Path(PathBuf::from("/run/kms.sock"))
        );
        assert_eq!(
            kms_socket("unix:///@kms").unwrap(),
            UnixTarget::Abstract("kms".into())
        );
        let e = flag("--storm", bench::parse_count("0", 1, 10)).unwrap_err();
        assert_eq!(e.message, "--storm: must be 1 to 10 (got 0)");
    }

    #[test]
    fn rates() {
        let store = |args: &[&str]| {
            let mut all = vec!["store"];
            all.extend_from_slice(args);
            let BenchCommand::Store(a) = parse(&all).unwrap() else {
                panic!()
            };
            store_load(&a)
        };
        assert_eq!(store(&[]).unwrap().rate, None, "a closed loop by default");
        assert_eq!(store(&["--rate", "0"]).unwrap().rate, None);
        let rate = store(&["--rate", "200"]).unwrap().rate.unwrap();
        assert_eq!(rate.per_second(), 200.0);
        assert_eq!(
            store(&["--rate", "2.5"])
                .unwrap()
                .rate
                .unwrap()
                .per_second(),
            2.5
        );
        for (rate, want) in [
            (
                "-1",
                "--rate: must be 0 (a closed loop) or 0.01 to 1000000 calls per second (got -1)",
            ),
            ("NaN", "--rate: must be 0 (a closed loop) or 0.01 to"),
            ("1000001", "--rate: must be 0 (a closed loop) or 0.01 to"),
            (
                "fast",
                "--rate: \"fast\" is not a number of calls per second",
            ),
        ] {
            let e = store(&["--rate", rate]).unwrap_err();
            assert!(e.message.starts_with(want), "{rate}: {}", e.message);
        }
        // --rate belongs to bench store only.
        assert!(parse(&["kms", "--endpoint", "unix:///k", "--rate", "5"]).is_err());
    }

    #[test]
    fn sizes_and_durations_name_the_flag_with_an_example() {
        let e = flag("--value-size", bench::parse_size("1MiB", 1000 << 10)).unwrap_err();
        assert_eq!(
            e.message,
            "--value-size: must be 1 byte to 1000KiB (got 1MiB)"
        );
        assert_eq!(e.hint, None);
        let e = flag("--payload", bench::parse_size("1GiB", 1 << 20)).unwrap_err();
        assert_eq!(e.message, "--payload: \"1GiB\" is not a size");
        assert_eq!(
            e.hint.as_deref(),
            Some("use bytes or a unit, e.g. 32, 1KiB, 4KiB or 1MiB")
        );
        let e = duration_up_to_a_day("--warmup", "soon", true).unwrap_err();
        assert!(e
            .message
            .starts_with("--warmup: \"soon\" is not a duration"));
        assert_eq!(
            e.hint.as_deref(),
            Some("use a number with a unit, e.g. 10s, 500ms or 1m")
        );
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
        assert_eq!(load(load_args(&cmd), false).unwrap().concurrency, 64);
        let BenchCommand::UnixPingpong(a) = cmd else {
            panic!()
        };
        assert_eq!(bench::parse_size(&a.payload, 1 << 20).unwrap(), 1024);
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
}
