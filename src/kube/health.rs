//! `/healthz`, `/livez` and `/readyz` as kube-apiserver answers them (its `healthz` package):
//! `ok`, or with `?verbose` one line per check (`[+]ping ok`) and `readyz check passed`; a failed
//! check makes the answer a 500 that lists every check, the failed one as `[-]store failed:
//! reason withheld` (these paths need no credentials, so why is only logged). `?exclude=NAME`
//! skips a check (`[+]store excluded: ok`), and names no check matches are warned about.
//!
//! Each check is also served alone, as kube-apiserver serves them (`/readyz/store`,
//! `/livez/ping`): `ok`, or a 500 `internal server error: <why>` (those paths need a rule of the
//! policy: the bootstrap policy's anonymous access covers the endpoints, not their checks).
//!
//! The checks: `ping` (the server answers) on all three, and `store` (the store answers a read
//! of its current revision within two seconds: a round trip to etcd, or the embedded engine's
//! index) on `/healthz` and `/readyz`. Liveness does not depend on the store, so that a store
//! outage makes the server unready rather than restarted. `authorization-policy` (the
//! authorization policy's files on disk are the policy in force: not while a change to them is
//! unreadable or invalid and the last valid policy stays in force) and `credential-files` (the
//! same for `--token-auth-file` and `--unix-users`) are on `/healthz` only: an operator sees them
//! there, and probes, which read `/livez` and `/readyz`, do not take a server that still
//! enforces its last valid files out of service for them. These paths need no credentials, so
//! the store is asked at most once a second ([`StoreProbe`]): a flood of probes is not a flood of
//! etcd reads (kube-apiserver limits its etcd check the same way). `kms-providers` (on
//! `/healthz` and `/readyz`) asks every kms v2 provider's plugin for its `Status` (an answer is
//! reused 20 s, a failure 3 s, as kube-apiserver's KMS probe) and fails while one is not
//! healthy, since writes need its plugin. It is there only when kms v2 providers are
//! configured: kube-apiserver's one check of that name for kms v2 plugins (it has
//! `kms-provider-<N>` per plugin when kms v1 ones are configured too, and `kms-providers` with
//! none at all when it reloads its configuration automatically). A failed check is logged at
//! most once a second.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::request::{query_pairs, Reply};
use crate::access::Access;
use crate::authz::go_quote;

/// How long the store check waits (kube-apiserver's `--etcd-healthcheck-timeout` default).
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a store check's outcome is reused.
const STORE_REUSE: Duration = Duration::from_secs(1);

/// The store check's last outcome, reused for a second; callers that arrive while a check runs
/// wait for it rather than starting their own.
#[derive(Debug, Default)]
pub struct StoreProbe {
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    /// The KMS check's last outcome (see [`StoreProbe::check_kms`]).
    kms: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl StoreProbe {
    /// Whether the store answers (`Err`: why, for the log only).
    async fn check(&self, access: &Access) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, outcome)) = last.as_ref() {
            if at.elapsed() < STORE_REUSE {
                return outcome.clone();
            }
        }
        let outcome = match tokio::time::timeout(STORE_TIMEOUT, access.current_revision()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", STORE_TIMEOUT.as_secs())),
        };
        *last = Some((Instant::now(), outcome.clone()));
        outcome
    }
}

/// How long a passed KMS check is reused (kube-apiserver's `kmsPluginHealthzPositiveTTL`).
const KMS_REUSE_OK: Duration = Duration::from_secs(20);
/// How long a failed one is (its `kmsPluginHealthzNegativeTTL`).
const KMS_REUSE_FAILED: Duration = Duration::from_secs(3);

impl StoreProbe {
    /// Whether every kms v2 provider answers `Status` healthy: asked now (each plugin within
    /// its configured timeout) unless the last answer is recent, as kube-apiserver's KMS probe
    /// asks its plugin; between two probes the providers' own polls keep their state.
    async fn check_kms(&self, access: &Access) -> Result<(), String> {
        let mut last = self.kms.lock().await;
        if let Some((at, outcome)) = last.as_ref() {
            let reuse = match outcome {
                Ok(()) => KMS_REUSE_OK,
                Err(_) => KMS_REUSE_FAILED,
            };
            if at.elapsed() < reuse {
                return outcome.clone();
            }
        }
        access.check_kms_now().await;
        let failing: Vec<String> = access
            .kms_v2_status()
            .into_iter()
            .filter(|k| !k.healthy)
            .map(|k| {
                format!(
                    "kms provider {:?} ({}): {}",
                    k.name,
                    k.endpoint,
                    k.error
                        .as_deref()
                        .unwrap_or("no Status check has succeeded yet")
                )
            })
            .collect();
        let outcome = match failing.is_empty() {
            true => Ok(()),
            false => Err(failing.join("; ")),
        };
        *last = Some((Instant::now(), outcome.clone()));
        outcome
    }
}

/// One health endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/healthz`.
    Healthz,
    /// `/livez`.
    Livez,
    /// `/readyz`.
    Readyz,
}

impl Endpoint {
    /// The endpoint a request path names, if any.
    pub fn of_path(path: &str) -> Option<Endpoint> {
        match path {
            "/healthz" => Some(Endpoint::Healthz),
            "/livez" => Some(Endpoint::Livez),
            "/readyz" => Some(Endpoint::Readyz),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Endpoint::Healthz => "healthz",
            Endpoint::Livez => "livez",
            Endpoint::Readyz => "readyz",
        }
    }

    fn checks(self) -> &'static [Check] {
        match self {
            Endpoint::Livez => &[Check::Ping],
            Endpoint::Readyz => &[Check::Ping, Check::Store, Check::KmsProviders],
            Endpoint::Healthz => &[
                Check::Ping,
                Check::Store,
                Check::KmsProviders,
                Check::AuthorizationPolicy,
                Check::CredentialFiles,
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Ping,
    Store,
    KmsProviders,
    AuthorizationPolicy,
    CredentialFiles,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::Ping => "ping",
            Check::Store => "store",
            Check::KmsProviders => "kms-providers",
            Check::AuthorizationPolicy => "authorization-policy",
            Check::CredentialFiles => "credential-files",
        }
    }

    /// Whether the server has this check: `kms-providers` only with kms v2 providers
    /// configured, as kube-apiserver adds it.
    fn applies(self, access: &Access) -> bool {
        self != Check::KmsProviders || !access.kms_v2_status().is_empty()
    }

    /// `Err` carries why, for the log only.
    async fn run(self, access: &Access, store: &StoreProbe) -> Result<(), String> {
        match self {
            Check::Ping => Ok(()),
            Check::Store => store.check(access).await,
            Check::KmsProviders => store.check_kms(access).await,
            Check::AuthorizationPolicy => match access.policy().status().last_error {
                None => Ok(()),
                Some(e) => Err(format!(
                    "the authorization policy files on disk are not in force: {e}"
                )),
            },
            Check::CredentialFiles => {
                let errors: Vec<String> = access
                    .credential_file_errors()
                    .into_iter()
                    .map(|(path, e)| format!("{}: {e}", path.display()))
                    .collect();
                match errors.is_empty() {
                    true => Ok(()),
                    false => Err(format!(
                        "credential files on disk are not in force: {}",
                        errors.join("; ")
                    )),
                }
            }
        }
    }
}

/// Logs a failed check, at most once a second (the lines held back are counted in the next):
/// these paths need no credentials, so a flood of probes during an outage is not a flood of
/// log lines (kube-apiserver logs them only at verbosity 2).
fn log_failed(check: &str, endpoint: Endpoint, why: &str) {
    static FAILED: crate::log_throttle::LogThrottle = crate::log_throttle::LogThrottle::new();
    if let Some(held_back) = FAILED.admit() {
        tracing::warn!(check, endpoint = endpoint.name(), reason = %why, held_back, "health check failed");
    }
}

/// Whether `path` is a health endpoint or one of its checks (`/healthz`, `/readyz/store`).
pub fn is_health_path(path: &str) -> bool {
    Endpoint::of_path(path).is_some()
        || path
            .rsplit_once('/')
            .and_then(|(base, name)| Some((Endpoint::of_path(base)?, name)))
            .is_some_and(|(e, name)| e.checks().iter().any(|c| c.name() == name))
}

/// `/version`, also with a final slash (kube-apiserver serves both).
fn is_version_path(path: &str) -> bool {
    matches!(path, "/version" | "/version/")
}

/// A health endpoint, one of its checks, or `/version`: the paths a request without
/// credentials may reach as `system:anonymous` (kube-apiserver's `system:public-info-viewer`
/// allows the endpoints and `/version`; a check's own path needs a rule of the policy).
pub fn is_public_path(path: &str) -> bool {
    is_version_path(path) || is_health_path(path)
}

/// The answer of a health endpoint (any method), one of its checks, or `GET /version`, if
/// `path` is one.
pub async fn public_info(
    method: &http::Method,
    path: &str,
    query: &str,
    access: &Access,
    store: &StoreProbe,
) -> Option<Reply> {
    if *method != http::Method::GET && !is_health_path(path) {
        return None;
    }
    let health = match Endpoint::of_path(path) {
        Some(endpoint) => Some(answer(endpoint, query, access, store).await),
        None => answer_one(path, access, store).await,
    };
    if let Some((code, text)) = health {
        return Some(Reply::Raw {
            code,
            content_type: "text/plain; charset=utf-8",
            body: text.into(),
        });
    }
    is_version_path(path).then(|| Reply::Raw {
        code: 200,
        content_type: "application/json",
        body: super::discovery::version().into(),
    })
}

/// The answer to `GET /<endpoint>/<check>` (kube-apiserver serves each check of an endpoint
/// alone): `ok`, or a 500 `internal server error: <why>` (as kube-apiserver's
/// `adaptCheckToHandler`: these paths need a rule of their own, so the caller was allowed the
/// detail); `None` if `path` names no check of an endpoint.
pub async fn answer_one(path: &str, access: &Access, store: &StoreProbe) -> Option<(u16, String)> {
    let (base, name) = path.rsplit_once('/')?;
    let endpoint = Endpoint::of_path(base)?;
    let check = endpoint
        .checks()
        .iter()
        .find(|c| c.name() == name && c.applies(access))?;
    Some(match check.run(access, store).await {
        Ok(()) => (200, "ok".to_owned()),
        Err(why) => {
            log_failed(name, endpoint, &why);
            // Go's http.Error ends the message with a newline.
            (500, format!("internal server error: {why}\n"))
        }
    })
}

/// The answer to `GET <endpoint>?<query>`: the status code and the plain-text body.
pub async fn answer(
    endpoint: Endpoint,
    query: &str,
    access: &Access,
    store: &StoreProbe,
) -> (u16, String) {
    let mut verbose = false;
    let mut excluded = BTreeSet::new();
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "verbose" => verbose = true,
            "exclude" => {
                excluded.insert(v);
            }
            _ => {}
        }
    }
    let mut out = String::new();
    let mut failed = Vec::new();
    for check in endpoint.checks().iter().filter(|c| c.applies(access)) {
        let name = check.name();
        if excluded.remove(name) {
            out.push_str(&format!("[+]{name} excluded: ok\n"));
            continue;
        }
        match check.run(access, store).await {
            Ok(()) => out.push_str(&format!("[+]{name} ok\n")),
            Err(why) => {
                out.push_str(&format!("[-]{name} failed: reason withheld\n"));
                log_failed(name, endpoint, &why);
                failed.push(name);
            }
        }
    }
    if !excluded.is_empty() {
        let names: Vec<String> = excluded.iter().map(|n| go_quote(n)).collect();
        out.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for {}\n",
            names.join(",")
        ));
    }
    let name = endpoint.name();
    if !failed.is_empty() {
        // Go's http.Error ends the message with a newline.
        return (500, format!("{out}{name} check failed\n"));
    }
    if !verbose {
        return (200, "ok".to_owned());
    }
    (200, format!("{out}{name} check passed\n"))
}
