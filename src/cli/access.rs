//! The access flags of `keyward server` and `keyward dev` (authentication, authorization,
//! audit, service account tokens), turned into the library's
//! [`AccessOptions`](crate::access::AccessOptions).

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::access::{AccessOptions, AuditOptions, ServiceAccountSettings};
use crate::audit::{AuditLog, Auditor, BatchConfig, FailureMode, LogConfig, Policy};
use crate::crypto::Key32;

/// Authentication, authorization and audit flags shared by `server` and `dev`.
#[derive(Debug, Args)]
pub(super) struct AccessArgs {
    /// Map Unix socket peers to users and groups (reloaded on change). Without it the server's
    /// own uid and root are system:admin in system:masters, other uids system:unix:<uid>.
    #[arg(long, value_name = "FILE")]
    unix_users: Option<PathBuf>,
    /// Bearer tokens in kube-apiserver's CSV format, token,user,uid,"group1,group2" (mode 0600,
    /// reloaded on change); accepted on every listener.
    #[arg(long, value_name = "FILE")]
    token_auth_file: Vec<PathBuf>,
    /// Accept bootstrap tokens: Secrets bootstrap-token-<id> in kube-system.
    #[arg(long)]
    enable_bootstrap_token_auth: bool,
    /// RBAC manifests (Role, ClusterRole, RoleBinding, ClusterRoleBinding) in a file or
    /// directory, reloaded on change. Without it only system:masters may do anything.
    #[arg(long, value_name = "FILE|DIR")]
    authorization_policy: Option<PathBuf>,
    /// Write audit events (audit.k8s.io/v1, hash-chained, signed checkpoints) to this file;
    /// its public key is written to FILE.pub.
    #[arg(long, value_name = "FILE")]
    audit_log_path: Option<PathBuf>,
    /// The audit.k8s.io/v1 Policy deciding what is recorded (without it nothing is; without
    /// --audit-log-path it has no effect, as in kube-apiserver).
    #[arg(long, value_name = "FILE")]
    audit_policy_file: Option<PathBuf>,
    /// Rotate the audit log at this many megabytes (0: never).
    #[arg(
        long,
        default_value_t = 100,
        value_name = "MB",
        allow_negative_numbers = true,
        requires = "audit_log_path"
    )]
    audit_log_maxsize: i64,
    /// Rotated audit log files kept at most, the newest (0: every one); older ones are removed
    /// after a rotation. What they held can no longer be verified.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "FILES",
        allow_negative_numbers = true,
        requires = "audit_log_path"
    )]
    audit_log_maxbackup: i64,
    /// Days a rotated audit log file is kept, by the time in its name (0: whatever its age).
    #[arg(
        long,
        default_value_t = 0,
        value_name = "DAYS",
        allow_negative_numbers = true,
        requires = "audit_log_path"
    )]
    audit_log_maxage: i64,
    /// Let requests proceed when their audit event cannot be written (default: refuse them);
    /// the same as --audit-log-mode blocking.
    #[arg(long, requires = "audit_log_path", conflicts_with = "audit_log_mode")]
    audit_fail_open: bool,
    /// When an audit event is on disk before its request goes on: `always` fsyncs each batch of
    /// events (survives power loss); `never` only writes them (kube-apiserver's log backend:
    /// survives a crash of keyward, not of the machine; the hash chain shows a lost tail).
    #[arg(long, value_name = "WHEN", default_value = "always", value_parser = ["always", "never"])]
    audit_log_sync: String,
    /// `blocking-strict`: a request goes on once its events are written, and is refused if
    /// they cannot be. `blocking`: as blocking-strict, but a request whose events cannot be
    /// written goes on (logged and counted). `batch`: requests queue their events and go on; a
    /// thread writes them (events of the last moments before a crash are lost).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "blocking-strict",
        value_parser = ["blocking-strict", "blocking", "batch"],
        requires = "audit_log_path"
    )]
    audit_log_mode: String,
    #[command(flatten)]
    audit_batch: AuditBatchArgs,
    #[command(flatten)]
    audit_compat: AuditCompatArgs,
    /// The issuer (iss) of service account tokens. Given more than once (as kube-apiserver's),
    /// the first signs new tokens and every one is accepted (to move to a new issuer without
    /// refusing the tokens the old one signed).
    #[arg(long, value_name = "URL", default_value = crate::authn::serviceaccount::DEFAULT_ISSUER)]
    service_account_issuer: Vec<String>,
    /// The key set's URL in the OpenID discovery document (/.well-known/openid-configuration),
    /// when verifiers fetch it from elsewhere than this API's /openid/v1/jwks (https only).
    #[arg(long, value_name = "URL")]
    service_account_jwks_uri: Option<String>,
    /// Audiences service account tokens must have (comma-separated; default: the issuer).
    #[arg(long, value_name = "AUD,...", value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// PEM CA written to ca.crt of kubernetes.io/service-account-token Secrets.
    #[arg(long, value_name = "FILE")]
    root_ca_file: Option<PathBuf>,
    /// The longest lifetime of a requested service account token (e.g. 24h; 1h to 2^32
    /// seconds): a longer request is shortened to it, with a warning.
    #[arg(long, value_name = "DURATION")]
    service_account_max_token_expiration: Option<String>,
}

impl AccessArgs {
    /// Whether a bearer-token source other than `--tokens-file` is configured.
    pub(super) fn has_tokens(&self) -> bool {
        !self.token_auth_file.is_empty() || self.enable_bootstrap_token_auth
    }

    /// The library's options; `tokens_files` are `--tokens-file`s.
    pub(super) fn options(&self, tokens_files: Vec<PathBuf>) -> Result<AccessOptions, CliError> {
        self.check_service_account_urls()?;
        if self.audit_log_path.is_none() && self.audit_policy_file.is_some() {
            tracing::warn!(
                "--audit-policy-file has no effect without --audit-log-path: nothing is audited"
            );
        }
        let audit = self.audit_log_path.as_ref().map(|path| {
            audit_log_path_is_a_file(path)?;
            // kube-apiserver's checks and words.
            for (flag, n) in [
                ("--audit-log-maxage", self.audit_log_maxage),
                ("--audit-log-maxbackup", self.audit_log_maxbackup),
                ("--audit-log-maxsize", self.audit_log_maxsize),
            ] {
                if n < 0 {
                    return Err(CliError::new(format!(
                        "{flag} {n} can't be a negative number"
                    )));
                }
            }
            self.audit_compat.check(&self.audit_log_mode)?;
            let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
            let mut log = LogConfig::new(path.clone());
            log.max_size = unsigned(self.audit_log_maxsize).saturating_mul(1024 * 1024);
            log.max_backups = usize::try_from(self.audit_log_maxbackup).unwrap_or(0);
            log.max_age = (self.audit_log_maxage > 0).then(|| {
                std::time::Duration::from_secs(
                    unsigned(self.audit_log_maxage).saturating_mul(86_400),
                )
            });
            log.failure_mode = if self.audit_fail_open || self.audit_log_mode == "blocking" {
                FailureMode::Open
            } else {
                FailureMode::Closed
            };
            log.fsync = self.audit_log_sync == "always";
            log.batch = self.audit_batch.config(&self.audit_log_mode)?;
            Ok::<_, CliError>(AuditOptions {
                log,
                policy_file: self.audit_policy_file.clone(),
            })
        });
        let audit = audit.transpose()?;
        let ca_cert = self
            .root_ca_file
            .as_ref()
            .map(|p| {
                let pem = std::fs::read(p)
                    .map_err(|e| CliError::new(format!("--root-ca-file {}: {e}", p.display())))?;
                // Copied into every service-account-token Secret's ca.crt: certificates only
                // (kube-controller-manager's check and words).
                match crate::net::tls_roots(&pem) {
                    Ok(_) => Ok(pem),
                    Err(_) => Err(CliError::new(format!(
                        "--root-ca-file {}: data does not contain any valid RSA or ECDSA certificates",
                        p.display()
                    ))),
                }
            })
            .transpose()?;
        let options = AccessOptions {
            unix_users: self.unix_users.clone(),
            token_auth_files: self.token_auth_file.clone(),
            tokens_files,
            bootstrap_tokens: self.enable_bootstrap_token_auth,
            authorization_policy: self.authorization_policy.clone(),
            audit,
            service_accounts: ServiceAccountSettings {
                issuer: self
                    .service_account_issuer
                    .first()
                    .cloned()
                    .unwrap_or_default(),
                other_issuers: self
                    .service_account_issuer
                    .get(1..)
                    .unwrap_or_default()
                    .to_vec(),
                audiences: self
                    .api_audiences
                    .iter()
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .collect(),
                ca_cert,
                jwks_uri: self.service_account_jwks_uri.clone(),
                max_expiration: self.max_token_expiration()?,
            },
            reload_interval: std::time::Duration::ZERO,
        };
        options.check_files().map_err(CliError::new)?;
        Ok(options)
    }

    /// `--service-account-max-token-expiration`, with kube-apiserver's bounds and words.
    fn max_token_expiration(&self) -> Result<Option<std::time::Duration>, CliError> {
        let Some(text) = &self.service_account_max_token_expiration else {
            return Ok(None);
        };
        let d = crate::go_duration::parse(text).ok_or_else(|| {
            CliError::new(format!(
                "--service-account-max-token-expiration: invalid duration {text:?} (Go's format, such as 24h or 90m)"
            ))
        })?;
        let hour = std::time::Duration::from_secs(3600);
        if d < hour || d > crate::authn::serviceaccount::MAX_EXPIRATION {
            return Err(CliError::new(
                "--service-account-max-token-expiration: the service-account-max-token-expiration must be between 1 hour and 2^32 seconds",
            ));
        }
        Ok(Some(d))
    }

    /// `--service-account-issuer` and `--service-account-jwks-uri` as kube-apiserver checks
    /// them: an issuer is not empty and, if it has a `:`, parses as a URL; the key set's URL
    /// parses and is `https`. kube-apiserver's words.
    fn check_service_account_urls(&self) -> Result<(), CliError> {
        if self.service_account_issuer.is_empty() {
            return Err(CliError::new(
                "service-account-issuer should not be an empty string",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for issuer in &self.service_account_issuer {
            if issuer.is_empty() {
                return Err(CliError::new(
                    "service-account-issuer should not be an empty string",
                ));
            }
            if !seen.insert(issuer) {
                return Err(CliError::new(format!(
                    "service-account-issuer {issuer:?} is already specified"
                )));
            }
            if issuer.contains(':') {
                if let Err(e) = go_url_parse(issuer) {
                    return Err(CliError::new(format!(
                        "service-account-issuer {issuer:?} contained a ':' but was not a valid URL: {e}"
                    )));
                }
            }
        }
        if let Some(uri) = &self.service_account_jwks_uri {
            match go_url_parse(uri) {
                Err(e) => {
                    return Err(CliError::new(format!(
                        "service-account-jwks-uri must be a valid URL: {e}"
                    )))
                }
                Ok(scheme) if scheme != "https" => {
                    return Err(CliError::new(format!(
                        "service-account-jwks-uri requires https scheme, parsed as: {uri}"
                    )))
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// The scheme of `s` (lower case, empty for a relative reference) as Go's `url.Parse` reads
/// it, or `url.Parse`'s error for the mistakes it refuses: control characters, a missing
/// scheme before `:`, a bad `%` escape, a port that is not digits.
fn go_url_parse(s: &str) -> Result<String, String> {
    let fail = |why: String| Err(format!("parse {s:?}: {why}"));
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return fail("net/url: invalid control character in URL".into());
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                let shown = s.get(i..(i + 3).min(s.len())).unwrap_or("%");
                return fail(format!("invalid URL escape {shown:?}"));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let scheme = match s.split_once(':') {
        Some(("", _)) => return fail("missing protocol scheme".into()),
        Some((scheme, _))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            scheme.to_ascii_lowercase()
        }
        Some((before, _)) if !before.contains('/') => {
            return fail("first path segment in URL cannot contain colon".into())
        }
        _ => String::new(),
    };
    // The authority's port, if any, is digits.
    if let Some(rest) = s.split_once("://").map(|(_, rest)| rest) {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let port = match host.strip_prefix('[') {
            Some(v6) => v6
                .split_once(']')
                .map(|(_, after)| after)
                .unwrap_or_default(),
            None => host.rfind(':').map_or("", |i| &host[i..]),
        };
        if !port.is_empty()
            && !port
                .strip_prefix(':')
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            return fail(format!("invalid port {port:?} after host"));
        }
    }
    Ok(scheme)
}

/// The flags of `--audit-log-mode batch`.
#[derive(Debug, Args)]
pub(super) struct AuditBatchArgs {
    /// Batch mode: the most events queued; a request that would overfill the queue waits for
    /// room (kube-apiserver drops the event instead) [default: 10000].
    #[arg(long, value_name = "N", requires = "audit_log_path")]
    audit_log_batch_buffer_size: Option<i64>,
    /// Batch mode: how long events gather after a write while more keep coming, the most an
    /// event waits to be written (a Go duration such as 1ms or 500us; 0 writes at once)
    /// [default: 5ms].
    #[arg(long, value_name = "DURATION", requires = "audit_log_path")]
    audit_log_batch_max_wait: Option<String>,
}

impl AuditBatchArgs {
    /// The batch configuration of `mode`: `None` unless it is `batch`, where the flags must be
    /// valid; with another mode they are not used (nor checked, as kube-apiserver does not
    /// check unused options), which is logged.
    fn config(&self, mode: &str) -> Result<Option<BatchConfig>, CliError> {
        if mode != "batch" {
            let given = [
                (
                    "--audit-log-batch-buffer-size",
                    self.audit_log_batch_buffer_size.is_some(),
                ),
                (
                    "--audit-log-batch-max-wait",
                    self.audit_log_batch_max_wait.is_some(),
                ),
            ];
            for (flag, _) in given.iter().filter(|(_, set)| *set) {
                tracing::warn!("{flag} has no effect: it applies to --audit-log-mode batch, and the mode is {mode}");
            }
            return Ok(None);
        }
        let mut config = BatchConfig::default();
        if let Some(n) = self.audit_log_batch_buffer_size {
            config.buffer_size = usize::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                CliError::new(format!(
                    "invalid audit batch log buffer size {n}, must be a positive number"
                ))
            })?;
        }
        if let Some(w) = &self.audit_log_batch_max_wait {
            config.max_wait = crate::go_duration::parse_unsigned(w).ok_or_else(|| {
                CliError::new(format!(
                    "--audit-log-batch-max-wait: {w:?} is not a duration; expected a Go duration such as 1ms, 500us or 0"
                ))
            })?;
            if config.max_wait > std::time::Duration::from_secs(60) {
                return Err(CliError::new(format!(
                    "--audit-log-batch-max-wait: {w} is longer than the allowed 1m"
                )));
            }
        }
        Ok(Some(config))
    }
}

/// `--audit-log-path`'s file: `-` (kube-apiserver's standard output) and a directory are refused, since the
/// log is a file whose hash chain and checkpoints `keyward audit verify` reads.
fn audit_log_path_is_a_file(path: &std::path::Path) -> Result<(), CliError> {
    if path.as_os_str() == "-" {
        return Err(CliError::new(
            "--audit-log-path -: standard output is not supported; give a file (its hash chain and signed checkpoints are checked with keyward audit verify)",
        ));
    }
    if path.is_dir() {
        return Err(CliError::new(format!(
            "--audit-log-path {}: is a directory; give the log's file",
            path.display()
        )));
    }
    Ok(())
}

/// kube-apiserver's other `--audit-log-*` flags, accepted so that its flag set works here:
/// each value it allows is checked with its words; what keyward does not do (the legacy
/// format, compression, truncation, throttling) is refused when asked for.
#[derive(Debug, Args)]
pub(super) struct AuditCompatArgs {
    /// The audit log's format: json (keyward writes audit.k8s.io/v1 events as JSON lines only;
    /// kube-apiserver's legacy text format is refused).
    #[arg(long, value_name = "FORMAT", default_value = "json", hide = true)]
    audit_log_format: String,
    /// The events' API version: audit.k8s.io/v1 only.
    #[arg(
        long,
        value_name = "VERSION",
        default_value = "audit.k8s.io/v1",
        hide = true
    )]
    audit_log_version: String,
    /// Compress rotated files: refused (keyward audit verify reads them as written).
    #[arg(long, value_name = "BOOL", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = super::flags::parse_go_bool, hide = true)]
    audit_log_compress: bool,
    /// Truncate large events: refused (an event is written whole or the request fails).
    #[arg(long, value_name = "BOOL", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = super::flags::parse_go_bool, hide = true)]
    audit_log_truncate_enabled: bool,
    /// With truncation: the largest batch in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 10_485_760,
        allow_negative_numbers = true,
        hide = true
    )]
    audit_log_truncate_max_batch_size: i64,
    /// With truncation: the largest event in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 102_400,
        allow_negative_numbers = true,
        hide = true
    )]
    audit_log_truncate_max_event_size: i64,
    /// Batch mode: the most events per batch (keyward writes what is queued in one write).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true,
        hide = true
    )]
    audit_log_batch_max_size: i64,
    /// Batch mode: throttle batches: refused.
    #[arg(long, value_name = "BOOL", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = super::flags::parse_go_bool, hide = true)]
    audit_log_batch_throttle_enable: bool,
    /// With throttling: batches per second.
    #[arg(
        long,
        value_name = "QPS",
        default_value_t = 0.0,
        allow_negative_numbers = true,
        hide = true
    )]
    audit_log_batch_throttle_qps: f64,
    /// With throttling: batches at once.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true,
        hide = true
    )]
    audit_log_batch_throttle_burst: i64,
}

impl AuditCompatArgs {
    /// kube-apiserver's checks of these flags (`AuditLogOptions.Validate`, in its words), then
    /// what keyward does not do.
    fn check(&self, mode: &str) -> Result<(), CliError> {
        let err = |m: String| Err(CliError::new(m));
        if !["json", "legacy"].contains(&self.audit_log_format.as_str()) {
            return err(format!(
                "invalid audit log format {}, allowed formats are \"legacy,json\"",
                self.audit_log_format
            ));
        }
        if self.audit_log_version != "audit.k8s.io/v1" {
            return err(format!(
                "--audit-log-version {}: invalid group version, allowed versions are [\"audit.k8s.io/v1\"]",
                self.audit_log_version
            ));
        }
        if mode == "batch" {
            if self.audit_log_batch_max_size <= 0 {
                return err(format!(
                    "invalid audit batch log max batch size {}, must be a positive number",
                    self.audit_log_batch_max_size
                ));
            }
            if self.audit_log_batch_throttle_enable {
                if self.audit_log_batch_throttle_qps <= 0.0 {
                    return err(format!(
                        "invalid audit batch log throttle QPS {}, must be a positive number",
                        self.audit_log_batch_throttle_qps
                    ));
                }
                if self.audit_log_batch_throttle_burst <= 0 {
                    return err(format!(
                        "invalid audit batch log throttle burst {}, must be a positive number",
                        self.audit_log_batch_throttle_burst
                    ));
                }
            }
        }
        if self.audit_log_truncate_enabled {
            let (batch, event) = (
                self.audit_log_truncate_max_batch_size,
                self.audit_log_truncate_max_event_size,
            );
            if event <= 0 {
                return err(format!(
                    "invalid audit truncate log max event size {event}, must be a positive number"
                ));
            }
            if batch < event {
                return err(format!(
                    "invalid audit truncate log max batch size {batch}, must be greater than max event size ({event})"
                ));
            }
        }
        let unsupported = [
            (self.audit_log_format == "legacy", "--audit-log-format legacy: not supported: keyward writes audit.k8s.io/v1 events as JSON lines (json), which its hash chain covers"),
            (self.audit_log_compress, "--audit-log-compress: not supported: rotated files stay as written, so that keyward audit verify can check them"),
            (self.audit_log_truncate_enabled, "--audit-log-truncate-enabled: not supported: an event is written whole, or its request fails"),
            (mode == "batch" && self.audit_log_batch_throttle_enable, "--audit-log-batch-throttle-enable: not supported: the batch writer writes what is queued as soon as --audit-log-batch-max-wait allows"),
        ];
        match unsupported.iter().find(|(asked, _)| *asked) {
            Some((_, why)) => err((*why).to_owned()),
            None => Ok(()),
        }
    }
}

/// The audit flags of `keyward kms serve`: its admin socket's calls are recorded.
#[derive(Debug, Args)]
pub(super) struct KmsAuditArgs {
    /// Record every admin socket call (status, keys, rotate, retire, destroy, unseal, rekey)
    /// with the caller's peer uid (audit.k8s.io/v1, hash-chained, signed checkpoints). The
    /// checkpoint key is derived from the root key (a Shamir-sealed plugin, which has no root
    /// key until it is unsealed, makes one at start); its public key is written to FILE.pub.
    #[arg(long, value_name = "FILE")]
    audit_log_path: Option<PathBuf>,
    /// The audit.k8s.io/v1 Policy (default: every call at level Metadata).
    #[arg(long, value_name = "FILE", requires = "audit_log_path")]
    audit_policy_file: Option<PathBuf>,
    /// Let admin calls proceed when their audit event cannot be written (default: refuse).
    #[arg(long, requires = "audit_log_path")]
    audit_fail_open: bool,
    /// When an audit event is on disk before its request goes on: `always` fsyncs each batch of
    /// events (survives power loss); `never` only writes them (kube-apiserver's log backend:
    /// survives a crash of keyward, not of the machine; the hash chain shows a lost tail).
    #[arg(long, value_name = "WHEN", default_value = "always", value_parser = ["always", "never"])]
    audit_log_sync: String,
}

impl KmsAuditArgs {
    /// Opens the admin audit log, if asked: the auditor and the log (to close at shutdown).
    /// `seed` is the keyring's ([`crate::keyring::Keyring::admin_audit_seed`]), when it is open.
    pub(super) async fn open(
        &self,
        seed: Option<Key32>,
    ) -> Result<(Auditor, Option<AuditLog>), CliError> {
        let Some(path) = &self.audit_log_path else {
            return Ok((Auditor::disabled(), None));
        };
        audit_log_path_is_a_file(path)?;
        let failure = match self.audit_fail_open {
            true => FailureMode::Open,
            false => FailureMode::Closed,
        };
        let (auditor, log) = open_admin_audit(
            path,
            self.audit_policy_file.as_deref(),
            failure,
            self.audit_log_sync == "always",
            seed,
        )
        .await?;
        Ok((auditor, Some(log)))
    }
}

/// The audit log of a KMS plugin's admin socket at `path`: events under the policy in
/// `policy_file` (default: every call at level Metadata), checkpoints signed by the key of
/// `seed` (the keyring's, derived from its root key), or without one by a key made now and kept
/// in memory; its public key is written to `path.pub` once the log is open.
pub(super) async fn open_admin_audit(
    path: &std::path::Path,
    policy_file: Option<&std::path::Path>,
    failure_mode: FailureMode,
    fsync: bool,
    seed: Option<Key32>,
) -> Result<(Auditor, AuditLog), CliError> {
    let policy = match policy_file {
        Some(p) => Policy::load(p)?,
        None => Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n",
        )?,
    };
    let mut config = LogConfig::new(path.to_owned());
    config.failure_mode = failure_mode;
    config.fsync = fsync;
    let signer = std::sync::Arc::new(match seed {
        Some(seed) => crate::crypto::Ed25519SigningKey::from_seed(seed),
        None => crate::crypto::Ed25519SigningKey::generate()?,
    });
    let public_key = signer.public_key().clone();
    // Written once the log opened with it, so that a start that fails leaves no key that
    // signed nothing.
    let log = AuditLog::open(config, signer)
        .await
        .map_err(|e| CliError::new(format!("--audit-log-path: {e}")))?;
    crate::access::write_public_key(path, &public_key).map_err(|e| {
        CliError::new(format!(
            "--audit-log-path: cannot write the public key: {e}"
        ))
    })?;
    Ok((Auditor::new(policy, std::sync::Arc::new(log.clone())), log))
}

/// Where `keyward dev` records its KMS admin socket's calls when the store's audit log is at
/// `store_log`: beside it, `<stem>-kms-admin.<ext>` (`audit.log` → `audit-kms-admin.log`).
pub(super) fn dev_admin_audit_path(store_log: &std::path::Path) -> PathBuf {
    let stem = store_log
        .file_stem()
        .map_or_else(|| "audit".into(), |s| s.to_string_lossy().into_owned());
    let name = match store_log.extension() {
        Some(ext) => format!("{stem}-kms-admin.{}", ext.to_string_lossy()),
        None => format!("{stem}-kms-admin"),
    };
    store_log.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        access: AccessArgs,
    }

    /// The audit log's configuration for `args` after `--audit-log-path a.log`.
    fn log(args: &[&str]) -> LogConfig {
        let argv = ["keyward", "--audit-log-path", "a.log"];
        let cli = Cli::try_parse_from(argv.iter().chain(args)).unwrap();
        cli.access.options(Vec::new()).unwrap().audit.unwrap().log
    }

    #[test]
    fn service_account_urls_are_checked_as_kube_apiserver_checks_them() {
        let check = |args: &[&str]| {
            let cli = Cli::try_parse_from(["keyward"].iter().chain(args)).unwrap();
            cli.access
                .options(Vec::new())
                .map(drop)
                .map_err(|e| e.message)
        };
        for ok in [
            &["--service-account-issuer", "keyward"][..],
            &["--service-account-issuer", "https://issuer.example/x%2Fy"],
            &["--service-account-issuer", "spiffe://cluster"],
            &["--service-account-jwks-uri", "HTTPS://keys.example/jwks"],
            &["--service-account-issuer", "https://u:p@[::1]:8443/x"],
            &["--service-account-issuer", "https://issuer.example:443"],
            &[
                "--service-account-issuer",
                "https://new.example",
                "--service-account-issuer",
                "https://old.example",
            ],
        ] {
            assert_eq!(check(ok), Ok(()), "{ok:?}");
        }
        // Several: the first signs, the others are accepted too.
        let cli = Cli::try_parse_from([
            "keyward",
            "--service-account-issuer",
            "https://new.example",
            "--service-account-issuer",
            "https://old.example",
        ])
        .unwrap();
        let sa = cli.access.options(Vec::new()).unwrap().service_accounts;
        assert_eq!(
            (sa.issuer.as_str(), sa.other_issuers.as_slice()),
            (
                "https://new.example",
                &["https://old.example".to_owned()][..]
            )
        );
        for (args, want) in [
            (
                &["--service-account-issuer", ""][..],
                "service-account-issuer should not be an empty string",
            ),
            (
                &["--service-account-issuer", "https://x/%zz"],
                r#"service-account-issuer "https://x/%zz" contained a ':' but was not a valid URL: parse "https://x/%zz": invalid URL escape "%zz""#,
            ),
            (
                &["--service-account-issuer", ":8443"],
                r#"service-account-issuer ":8443" contained a ':' but was not a valid URL: parse ":8443": missing protocol scheme"#,
            ),
            (
                &["--service-account-issuer", "1cluster:x"],
                r#"service-account-issuer "1cluster:x" contained a ':' but was not a valid URL: parse "1cluster:x": first path segment in URL cannot contain colon"#,
            ),
            (
                &["--service-account-issuer", "http://x:notaport"],
                r#"service-account-issuer "http://x:notaport" contained a ':' but was not a valid URL: parse "http://x:notaport": invalid port ":notaport" after host"#,
            ),
            (
                &[
                    "--service-account-issuer",
                    "https://a.example",
                    "--service-account-issuer",
                    "https://a.example",
                ][..],
                r#"service-account-issuer "https://a.example" is already specified"#,
            ),
            (
                &["--service-account-jwks-uri", "http://baz.com"],
                "service-account-jwks-uri requires https scheme, parsed as: http://baz.com",
            ),
            (
                &["--service-account-jwks-uri", "keys.example/jwks"],
                "service-account-jwks-uri requires https scheme, parsed as: keys.example/jwks",
            ),
            (
                &["--service-account-jwks-uri", "https://k\tx"],
                r#"service-account-jwks-uri must be a valid URL: parse "https://k\tx": net/url: invalid control character in URL"#,
            ),
        ] {
            assert_eq!(check(args), Err(want.to_owned()), "{args:?}");
        }
    }

    #[test]
    fn audit_modes_map_to_the_log_configuration() {
        let strict = log(&[]);
        assert_eq!(
            (strict.failure_mode, &strict.batch),
            (FailureMode::Closed, &None)
        );
        for open in [
            &["--audit-log-mode", "blocking"][..],
            &["--audit-fail-open"],
        ] {
            let c = log(open);
            assert_eq!(
                (c.failure_mode, &c.batch),
                (FailureMode::Open, &None),
                "{open:?}"
            );
        }
        let batch = log(&[
            "--audit-log-mode",
            "batch",
            "--audit-log-batch-buffer-size",
            "7",
            "--audit-log-batch-max-wait",
            "250us",
        ]);
        assert_eq!(
            batch.batch,
            Some(BatchConfig {
                buffer_size: 7,
                max_wait: std::time::Duration::from_micros(250),
            })
        );
        assert_eq!(batch.failure_mode, FailureMode::Closed);
        assert_eq!(
            log(&["--audit-log-mode", "batch"]).batch,
            Some(BatchConfig::default())
        );
    }

    /// kube-apiserver's other audit flags at the values keyward writes by are accepted, so a
    /// kube-apiserver flag set starts; batch flags outside batch mode are not used (nor
    /// checked), as there.
    #[test]
    fn kube_apiserver_audit_flags_are_accepted() {
        let c = log(&[
            "--audit-log-format=json",
            "--audit-log-version=audit.k8s.io/v1",
            "--audit-log-compress=false",
            "--audit-log-truncate-enabled=false",
            "--audit-log-truncate-max-event-size=0",
            "--audit-log-batch-max-size=1",
            "--audit-log-batch-buffer-size=0",
            "--audit-log-batch-throttle-enable=false",
            "--audit-log-mode=blocking",
        ]);
        assert_eq!((c.failure_mode, &c.batch), (FailureMode::Open, &None));
        let argv = ["keyward", "--audit-policy-file", "p.yaml"];
        let cli = Cli::try_parse_from(argv).unwrap();
        assert!(cli.access.options(Vec::new()).unwrap().audit.is_none());
    }

    /// `--audit-log-maxbackup` and `--audit-log-maxage` (days), 0 keeping every rotated file;
    /// a value that is not a number is refused, naming the flag.
    #[test]
    fn rotation_limits_map_to_the_log_configuration() {
        let all = log(&[]);
        assert_eq!((all.max_backups, all.max_age), (0, None));
        let kept = log(&["--audit-log-maxbackup", "3", "--audit-log-maxage", "7"]);
        assert_eq!(kept.max_backups, 3);
        assert_eq!(
            kept.max_age,
            Some(std::time::Duration::from_secs(7 * 86_400))
        );
        let argv = [
            "keyward",
            "--audit-log-path",
            "a.log",
            "--audit-log-maxage",
            "seven",
        ];
        let e = Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(e.contains("--audit-log-maxage"), "{e}");
    }
}
