//! Automatic reload of the `EncryptionConfiguration` file, as kube-apiserver's
//! `--encryption-provider-config-automatic-reload` does it (facts §4.5; upstream
//! `pkg/server/options/encryptionconfig/controller/controller.go`).
//!
//! A [`Reloader`] is a tokio task. Every interval (kube-apiserver: 1 minute,
//! [`DEFAULT_INTERVAL`]) it reads the file and hashes it (`sha256:<hex>`, the hash
//! [`config::load`] returns). When the hash differs from the configuration in force it:
//!
//! 1. parses and validates the file with [`ParseOptions::reload`] set;
//! 2. builds the new [`Encryption`];
//! 3. waits for every kms v2 provider of the new configuration to be healthy, running
//!    [`Encryption::check_kms_now`] every 100 ms for up to max(2 × the sum of the KMS timeouts,
//!    10 s), where a kms v1 timeout counts twice ([`kms_grace_period`]). kms v1 providers have no
//!    health check in keyward's client and are not waited for;
//! 4. hands the new `Arc<Encryption>` to the caller's `apply` (for the store:
//!    [`Store::set_encryption`](crate::store::Store::set_encryption)), which swaps it in
//!    atomically, and remembers the new hash.
//!
//! On any error (unreadable or deleted file, invalid configuration, a plugin not healthy in
//! time) the configuration in force is kept, the reason is logged at `warn` and recorded in the
//! [`ReloadStatus`], and the file is tried again on the next tick (never sooner: a bad file is
//! not re-read in a loop). Reasons never contain key material: [`ConfigError`] messages print
//! secrets as `REDACTED`.
//!
//! The old `Encryption` is released when the last in-flight call using it ends (it is an `Arc`),
//! which also stops its kms v2 Status polls.
//!
//! All waiting uses `tokio::time` (interval, sleep, timeout), so the task follows a paused test
//! clock; [`Reloader::check_now`] runs one check on demand (for tests, or a SIGHUP handler).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use zeroize::Zeroizing;

use super::config::{self, ConfigError, EncryptionConfiguration, KmsApiVersion, ParseOptions};
use super::{Encryption, ProviderConfiguration};

/// kube-apiserver's file poll period (`EncryptionConfigFileChangePollDuration`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// How often a new configuration's kms v2 providers are checked while waiting for them.
pub const DEFAULT_HEALTH_POLL: Duration = Duration::from_millis(100);
/// The shortest wait for a new configuration's kms v2 providers to become healthy.
pub const DEFAULT_MIN_HEALTH_WAIT: Duration = Duration::from_secs(10);

/// How a [`Reloader`] behaves. [`ReloadOptions::new`] gives kube-apiserver's timings for
/// everything but the file poll interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadOptions {
    /// Parse options (from flags). [`ParseOptions::reload`] is always set when reloading,
    /// whatever this says.
    pub parse: ParseOptions,
    /// How often the file is read and hashed ([`DEFAULT_INTERVAL`] in kube-apiserver). A zero
    /// interval is treated as 1 ms.
    pub interval: Duration,
    /// How often kms v2 providers are checked while waiting for them ([`DEFAULT_HEALTH_POLL`]).
    pub health_poll: Duration,
    /// The wait for kms v2 providers is max([`kms_grace_period`], this)
    /// ([`DEFAULT_MIN_HEALTH_WAIT`]).
    pub min_health_wait: Duration,
}

impl ReloadOptions {
    /// Options polling the file every `interval`, with kube-apiserver's health wait.
    pub fn new(parse: ParseOptions, interval: Duration) -> Self {
        Self {
            parse,
            interval,
            health_poll: DEFAULT_HEALTH_POLL,
            min_health_wait: DEFAULT_MIN_HEALTH_WAIT,
        }
    }

    /// How long the kms v2 providers of `config` are waited for:
    /// max([`kms_grace_period`]`(config)`, [`ReloadOptions::min_health_wait`]).
    pub fn health_wait(&self, config: &EncryptionConfiguration) -> Duration {
        kms_grace_period(config).max(self.min_health_wait)
    }
}

/// Twice the sum of the `timeout` of every `kms` provider in `config`, a kms v1 timeout counting
/// twice (its health check is two calls). kube-apiserver's `KMSCloseGracePeriod`; zero without
/// kms providers.
pub fn kms_grace_period(config: &EncryptionConfiguration) -> Duration {
    let sum: Duration = config
        .resources
        .iter()
        .flat_map(|r| &r.providers)
        .map(|p| match p {
            ProviderConfiguration::Kms(k) => match k.api_version {
                KmsApiVersion::V1 => k.timeout * 2,
                KmsApiVersion::V2 => k.timeout,
            },
            _ => Duration::ZERO,
        })
        .sum();
    sum * 2
}

/// What the reloader has done so far. Every check updates it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// `sha256:<hex>` of the file content in force (initially the hash given to
    /// [`Reloader::spawn`]).
    pub hash: String,
    /// Checks completed (ticks and [`Reloader::check_now`] calls).
    pub checks: u64,
    /// Configurations applied.
    pub reloads: u64,
    /// Checks that found a changed file and could not apply it.
    pub failures: u64,
    /// When the last configuration was applied.
    pub last_reload: Option<SystemTime>,
    /// When the last check failed.
    pub last_failure: Option<SystemTime>,
    /// Why the file on disk is not in force, if the last check failed; `None` once a check
    /// applies it or finds the file back at the hash in force.
    pub last_error: Option<String>,
    /// Hash of the file the last failed check rejected (`None` if it could not be read).
    pub failed_hash: Option<String>,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file's hash is the one in force: nothing was parsed or built.
    Unchanged,
    /// A new configuration was built, found healthy and applied.
    Applied {
        /// Its hash.
        hash: String,
    },
    /// The file changed but could not be applied; the configuration in force is kept.
    Failed {
        /// The file's hash, if it could be read.
        hash: Option<String>,
        /// Why (no key material).
        error: String,
    },
}

/// Why a changed file was not applied.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("kms v2 plugins not healthy within {wait:?}: {problems}")]
    Unhealthy { wait: Duration, problems: String },
}

type Apply = Box<dyn Fn(Arc<Encryption>) + Send + Sync + 'static>;

struct Worker {
    path: PathBuf,
    options: ReloadOptions,
    apply: Apply,
    status: watch::Sender<ReloadStatus>,
}

impl Worker {
    async fn check(&self) -> ReloadOutcome {
        let current = self.status.borrow().hash.clone();
        let outcome = match self.try_reload(&current).await {
            Ok(None) => ReloadOutcome::Unchanged,
            Ok(Some(hash)) => {
                tracing::info!(path = %self.path.display(), old_hash = %current, new_hash = %hash, "encryption configuration reloaded");
                ReloadOutcome::Applied { hash }
            }
            Err((hash, e)) => {
                let error = e.to_string();
                tracing::warn!(path = %self.path.display(), hash = hash.as_deref().unwrap_or("-"), hash_in_force = %current, error = %error, "encryption configuration not reloaded; keeping the configuration in force, retrying at the next check");
                ReloadOutcome::Failed { hash, error }
            }
        };
        self.status.send_modify(|s| {
            s.checks += 1;
            match &outcome {
                ReloadOutcome::Unchanged => {
                    s.last_error = None;
                    s.failed_hash = None;
                }
                ReloadOutcome::Applied { hash } => {
                    s.hash = hash.clone();
                    s.reloads += 1;
                    s.last_reload = Some(SystemTime::now());
                    s.last_error = None;
                    s.failed_hash = None;
                }
                ReloadOutcome::Failed { hash, error } => {
                    s.failures += 1;
                    s.last_failure = Some(SystemTime::now());
                    s.last_error = Some(error.clone());
                    s.failed_hash = hash.clone();
                }
            }
        });
        outcome
    }

    /// `Ok(None)`: unchanged. `Ok(Some(hash))`: applied. `Err((hash if read, why))`.
    async fn try_reload(
        &self,
        current: &str,
    ) -> Result<Option<String>, (Option<String>, ReloadError)> {
        let (bytes, hash) = read_and_hash(&self.path).map_err(|e| (None, e.into()))?;
        if hash == current {
            return Ok(None);
        }
        let fail = |e: ReloadError| (Some(hash.clone()), e);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| fail(ConfigError::Decode("the file is not UTF-8".into()).into()))?;
        let opts = ParseOptions {
            reload: true,
            ..self.options.parse
        };
        let cfg = config::parse(text, opts).map_err(|e| fail(e.into()))?;
        drop(bytes);
        let enc = Encryption::build(&cfg).await;
        let wait = self.options.health_wait(&cfg);
        if !self.wait_healthy(&enc, wait).await {
            let problems = enc
                .kms_v2_status()
                .into_iter()
                .filter(|s| !s.healthy)
                .map(|s| {
                    format!(
                        "{} ({}): {}",
                        s.name,
                        s.endpoint,
                        s.error.as_deref().unwrap_or("no successful check yet")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(fail(ReloadError::Unhealthy { wait, problems }));
        }
        (self.apply)(Arc::new(enc));
        Ok(Some(hash))
    }

    /// Whether every kms v2 provider of `enc` became healthy within `wait`. The first check
    /// already ran in [`Encryption::build`].
    async fn wait_healthy(&self, enc: &Encryption, wait: Duration) -> bool {
        if enc.kms_v2_status().iter().all(|s| s.healthy) {
            return true;
        }
        tokio::time::timeout(wait, async {
            loop {
                tokio::time::sleep(self.options.health_poll).await;
                if enc.check_kms_now().await {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }
}

/// Reads the file and returns its bytes and `sha256:<hex>` (the same hash as [`config::load`]).
fn read_and_hash(path: &Path) -> Result<(Zeroizing<Vec<u8>>, String), ConfigError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?);
    let hash = format!("sha256:{}", hex::encode(crate::crypto::sha256(&bytes)));
    Ok((bytes, hash))
}

/// The automatic reload task. Dropping it stops the task (a reload in progress is abandoned and
/// nothing is applied).
pub struct Reloader {
    task: JoinHandle<()>,
    status: watch::Receiver<ReloadStatus>,
    trigger: mpsc::Sender<oneshot::Sender<ReloadOutcome>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// Starts watching `path`, whose content in force hashes to `initial_hash` (the hash
    /// [`config::load`] returned when the caller built the current [`Encryption`]). The first
    /// check runs one interval from now. Each new configuration is handed to `apply`, which is
    /// called from the task (keep it short: a store swap). Must run in a tokio runtime.
    pub fn spawn<F>(path: PathBuf, options: ReloadOptions, initial_hash: String, apply: F) -> Self
    where
        F: Fn(Arc<Encryption>) + Send + Sync + 'static,
    {
        let (status_tx, status_rx) = watch::channel(ReloadStatus {
            hash: initial_hash,
            ..ReloadStatus::default()
        });
        let (trigger_tx, mut trigger_rx) = mpsc::channel::<oneshot::Sender<ReloadOutcome>>(8);
        let period = options.interval.max(Duration::from_millis(1));
        let worker = Worker {
            path,
            options,
            apply: Box::new(apply),
            status: status_tx,
        };
        // Measured from now, not from the task's first poll.
        let first = tokio::time::Instant::now() + period;
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(first, period);
            // A check longer than the interval (waiting for a plugin) does not cause a burst.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        worker.check().await;
                    }
                    Some(reply) = trigger_rx.recv() => {
                        let outcome = worker.check().await;
                        let _ = reply.send(outcome);
                    }
                }
            }
        });
        Self {
            task,
            status: status_rx,
            trigger: trigger_tx,
        }
    }

    /// Runs one check now (after any check in progress) and returns its outcome; `None` if the
    /// task is no longer running. Does not move the next tick.
    pub async fn check_now(&self) -> Option<ReloadOutcome> {
        let (tx, rx) = oneshot::channel();
        self.trigger.send(tx).await.ok()?;
        rx.await.ok()
    }

    /// The current status.
    pub fn status(&self) -> ReloadStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change; `changed()` fails once the task has stopped.
    pub fn subscribe(&self) -> watch::Receiver<ReloadStatus> {
        self.status.clone()
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// [`Reloader::spawn`] with kube-apiserver's health wait ([`ReloadOptions::new`]): polls `path`
/// every `interval` and hands each new configuration to `apply`. Drop the returned value to stop.
pub fn spawn<F>(
    path: PathBuf,
    opts: ParseOptions,
    interval: Duration,
    initial_hash: String,
    apply: F,
) -> Reloader
where
    F: Fn(Arc<Encryption>) + Send + Sync + 'static,
{
    Reloader::spawn(
        path,
        ReloadOptions::new(opts, interval),
        initial_hash,
        apply,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const K1: &str = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="; // 32 bytes of '1'
    const K2: &str = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI="; // 32 bytes of '2'

    fn text(providers: &str) -> String {
        format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}")
    }

    fn aesgcm(name: &str, key: &str) -> String {
        text(&format!(
            "      - aesgcm: {{keys: [{{name: {name}, secret: {key}}}]}}\n"
        ))
    }

    fn parse(t: &str) -> EncryptionConfiguration {
        config::parse(
            t,
            ParseOptions {
                kms_v1: true,
                reload: true,
            },
        )
        .unwrap()
    }

    type Slot = Arc<Mutex<Vec<Arc<Encryption>>>>;

    fn start(path: &Path, interval: Duration) -> (Reloader, Slot, watch::Receiver<ReloadStatus>) {
        let (_, hash) = config::load(path, ParseOptions::default()).unwrap();
        let applied: Slot = Arc::default();
        let a = applied.clone();
        let r = spawn(
            path.to_owned(),
            ParseOptions::default(),
            interval,
            hash,
            move |e| a.lock().unwrap().push(e),
        );
        let rx = r.subscribe();
        (r, applied, rx)
    }

    #[test]
    fn grace_period_and_health_wait() {
        let opts = ReloadOptions::new(ParseOptions::default(), DEFAULT_INTERVAL);
        let local = parse(&aesgcm("k1", K1));
        assert_eq!(kms_grace_period(&local), Duration::ZERO);
        assert_eq!(opts.health_wait(&local), Duration::from_secs(10));
        let v2 = |name: &str, t: &str| {
            format!("      - kms: {{apiVersion: v2, name: {name}, endpoint: 'unix:///tmp/{name}.sock', timeout: {t}}}\n")
        };
        let v1 = |name: &str, t: &str| {
            format!("      - kms: {{apiVersion: v1, name: {name}, endpoint: 'unix:///tmp/{name}.sock', timeout: {t}}}\n")
        };
        // One v2 at the default 3s: 2 × 3 s = 6 s, below the 10 s floor.
        let c = parse(&text(
            "      - kms: {apiVersion: v2, name: a, endpoint: 'unix:///tmp/a.sock'}\n",
        ));
        assert_eq!(kms_grace_period(&c), Duration::from_secs(6));
        assert_eq!(opts.health_wait(&c), Duration::from_secs(10));
        // v2 4s + v2 2s = 6 s; doubled: 12 s.
        let c = parse(&text(&(v2("a", "4s") + &v2("b", "2s"))));
        assert_eq!(opts.health_wait(&c), Duration::from_secs(12));
        // A v1 timeout counts twice: 2 × (2 × 3 s + 1 s) = 14 s.
        let c = parse(&text(&(v1("a", "3s") + &v2("b", "1s"))));
        assert_eq!(kms_grace_period(&c), Duration::from_secs(14));
        assert_eq!(opts.health_wait(&c), Duration::from_secs(14));
        // Providers of every rule count.
        let c = parse(&format!(
            "{}  - resources: [configmaps]\n    providers:\n{}",
            text(&v2("a", "2s")),
            v2("b", "3s")
        ));
        assert_eq!(kms_grace_period(&c), Duration::from_secs(10));
    }

    #[test]
    fn hash_is_the_one_config_load_returns() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("enc.yaml");
        std::fs::write(&p, aesgcm("k1", K1)).unwrap();
        let (_, h) = config::load(&p, ParseOptions::default()).unwrap();
        assert_eq!(read_and_hash(&p).unwrap().1, h);
        assert!(h.starts_with("sha256:") && h.len() == 7 + 64, "{h}");
    }

    #[tokio::test]
    async fn check_now_unchanged_then_applied() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("enc.yaml");
        std::fs::write(&p, aesgcm("k1", K1)).unwrap();
        let (r, applied, _rx) = start(&p, Duration::from_secs(3600));
        assert_eq!(r.check_now().await, Some(ReloadOutcome::Unchanged));
        assert!(applied.lock().unwrap().is_empty());
        std::fs::write(&p, aesgcm("k2", K2)).unwrap();
        let Some(ReloadOutcome::Applied { hash }) = r.check_now().await else {
            panic!("not applied: {:?}", r.status());
        };
        let s = r.status();
        assert_eq!(
            (s.hash.as_str(), s.checks, s.reloads),
            (hash.as_str(), 2, 1)
        );
        let enc = applied.lock().unwrap()[0].clone();
        assert_eq!(
            enc.for_resource("secrets").write_provider(),
            ("aesgcm", "k2")
        );
    }

    #[tokio::test]
    async fn a_bad_file_is_reported_with_its_hash_and_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("enc.yaml");
        std::fs::write(&p, aesgcm("k1", K1)).unwrap();
        let (r, applied, _rx) = start(&p, Duration::from_secs(3600));
        let before = r.status().hash;
        std::fs::write(&p, [0xff, 0xfe, b'\n']).unwrap();
        let Some(ReloadOutcome::Failed { hash, error }) = r.check_now().await else {
            panic!("{:?}", r.status());
        };
        assert!(error.contains("not UTF-8"), "{error}");
        let s = r.status();
        assert_eq!(s.failed_hash, hash);
        assert!(s.failed_hash.is_some());
        assert_eq!(s.hash, before);
        assert_eq!(s.last_error.as_deref(), Some(error.as_str()));
        assert!(applied.lock().unwrap().is_empty());
        // Back to the content in force: nothing to do, and nothing is wrong any more.
        std::fs::write(&p, aesgcm("k1", K1)).unwrap();
        assert_eq!(r.check_now().await, Some(ReloadOutcome::Unchanged));
        let s = r.status();
        assert_eq!((s.failures, s.last_error, s.failed_hash), (1, None, None));
    }

    #[tokio::test]
    async fn dropping_the_reloader_stops_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("enc.yaml");
        std::fs::write(&p, aesgcm("k1", K1)).unwrap();
        let (r, applied, mut rx) = start(&p, Duration::from_millis(10));
        drop(r);
        // The task owns the status sender: once it is gone, `changed` fails.
        tokio::time::timeout(Duration::from_secs(10), async {
            while rx.changed().await.is_ok() {}
        })
        .await
        .expect("task stopped");
        std::fs::write(&p, aesgcm("k2", K2)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(applied.lock().unwrap().is_empty());
    }

    /// The reloader's schedule under tokio's paused clock: exactly one check per interval.
    #[tokio::test(start_paused = true)]
    async fn paused_clock_drives_the_ticks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("enc.yaml");
        std::fs::write(&p, aesgcm("k1", K1)).unwrap();
        let start = tokio::time::Instant::now();
        let (r, applied, mut rx) = start_paused_helper(&p);
        std::fs::write(&p, aesgcm("k2", K2)).unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!rx.has_changed().unwrap(), "no check before one interval");
        rx.changed().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        let s = rx.borrow_and_update().clone();
        assert_eq!((s.checks, s.reloads), (1, 1));
        assert_eq!(
            applied.lock().unwrap()[0]
                .for_resource("secrets")
                .write_provider(),
            ("aesgcm", "k2")
        );
        rx.changed().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(120));
        let s = rx.borrow_and_update().clone();
        assert_eq!((s.checks, s.reloads), (2, 1));
        std::fs::write(&p, aesgcm("k3", "c2hvcnQ=")).unwrap();
        rx.changed().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(180));
        assert_eq!(rx.borrow_and_update().failures, 1);
        rx.changed().await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(240),
            "one retry per tick"
        );
        assert_eq!(rx.borrow_and_update().failures, 2);
        std::fs::remove_file(&p).unwrap();
        rx.changed().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(300));
        assert_eq!(rx.borrow_and_update().failures, 3);
        std::fs::write(&p, aesgcm("k1", K1)).unwrap();
        rx.changed().await.unwrap();
        let s = rx.borrow_and_update().clone();
        assert_eq!((s.reloads, s.failures), (2, 3));
        assert_eq!(applied.lock().unwrap().len(), 2);
        drop(r);
    }

    fn start_paused_helper(path: &Path) -> (Reloader, Slot, watch::Receiver<ReloadStatus>) {
        start(path, DEFAULT_INTERVAL)
    }
}
