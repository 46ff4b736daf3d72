//! The access flags of `keyward server` and `keyward dev` (authentication, authorization,
//! audit, service account tokens), turned into the library's
//! [`AccessOptions`](crate::access::AccessOptions).

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::access::{AccessOptions, AuditOptions, ServiceAccountSettings};
use crate::audit::{AuditLog, Auditor, BatchConfig, FailureMode, LogConfig, Policy};

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
    /// The audit.k8s.io/v1 Policy deciding what is recorded (without it nothing is).
    #[arg(long, value_name = "FILE", requires = "audit_log_path")]
    audit_policy_file: Option<PathBuf>,
    /// Rotate the audit log at this many megabytes (0: never).
    #[arg(
        long,
        default_value_t = 100,
        value_name = "MB",
        requires = "audit_log_path"
    )]
    audit_log_maxsize: u64,
    /// Rotated audit log files kept at most, the newest (0: every one); older ones are removed
    /// after a rotation. What they held can no longer be verified.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "FILES",
        requires = "audit_log_path"
    )]
    audit_log_maxbackup: usize,
    /// Days a rotated audit log file is kept, by the time in its name (0: whatever its age).
    #[arg(
        long,
        default_value_t = 0,
        value_name = "DAYS",
        requires = "audit_log_path"
    )]
    audit_log_maxage: u64,
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
    /// The issuer (iss) of service account tokens, and the only one accepted.
    #[arg(long, value_name = "URL", default_value = crate::authn::serviceaccount::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// Audiences service account tokens must have (comma-separated; default: the issuer).
    #[arg(long, value_name = "AUD,...", value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// PEM CA written to ca.crt of kubernetes.io/service-account-token Secrets.
    #[arg(long, value_name = "FILE")]
    root_ca_file: Option<PathBuf>,
}

impl AccessArgs {
    /// Whether a bearer-token source other than `--tokens-file` is configured.
    pub(super) fn has_tokens(&self) -> bool {
        !self.token_auth_file.is_empty() || self.enable_bootstrap_token_auth
    }

    /// The library's options; `tokens_files` are `--tokens-file`s.
    pub(super) fn options(&self, tokens_files: Vec<PathBuf>) -> Result<AccessOptions, CliError> {
        let audit = self.audit_log_path.as_ref().map(|path| {
            let mut log = LogConfig::new(path.clone());
            log.max_size = self.audit_log_maxsize.saturating_mul(1024 * 1024);
            log.max_backups = self.audit_log_maxbackup;
            log.max_age = (self.audit_log_maxage > 0).then(|| {
                std::time::Duration::from_secs(self.audit_log_maxage.saturating_mul(86_400))
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
                std::fs::read(p)
                    .map_err(|e| CliError::new(format!("--root-ca-file {}: {e}", p.display())))
            })
            .transpose()?;
        Ok(AccessOptions {
            unix_users: self.unix_users.clone(),
            token_auth_files: self.token_auth_file.clone(),
            tokens_files,
            bootstrap_tokens: self.enable_bootstrap_token_auth,
            authorization_policy: self.authorization_policy.clone(),
            audit,
            service_accounts: ServiceAccountSettings {
                issuer: self.service_account_issuer.clone(),
                audiences: self
                    .api_audiences
                    .iter()
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .collect(),
                ca_cert,
            },
            reload_interval: std::time::Duration::ZERO,
        })
    }
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
    /// valid; the flags are refused with another mode.
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
            return match given.iter().find(|(_, set)| *set) {
                Some((flag, _)) => Err(CliError::new(format!(
                    "{flag} applies only to --audit-log-mode batch (the mode is {mode})"
                ))),
                None => Ok(None),
            };
        }
        let mut config = BatchConfig::default();
        if let Some(n) = self.audit_log_batch_buffer_size {
            config.buffer_size = usize::try_from(n)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    CliError::new(format!(
                        "--audit-log-batch-buffer-size: invalid audit batch log buffer size {n}, must be a positive number"
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

/// The audit flags of `keyward kms serve`: its admin socket's calls are recorded.
#[derive(Debug, Args)]
pub(super) struct KmsAuditArgs {
    /// Record every admin socket call (status, keys, rotate, retire, destroy, unseal, rekey)
    /// with the caller's peer uid (audit.k8s.io/v1, hash-chained, signed checkpoints). The
    /// checkpoint key lives in memory only; its public key is written to FILE.pub.
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
    pub(super) async fn open(&self) -> Result<(Auditor, Option<AuditLog>), CliError> {
        let Some(path) = &self.audit_log_path else {
            return Ok((Auditor::disabled(), None));
        };
        let policy = match &self.audit_policy_file {
            Some(p) => Policy::load(p)?,
            None => Policy::parse(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n",
            )?,
        };
        let mut config = LogConfig::new(path.clone());
        if self.audit_fail_open {
            config.failure_mode = FailureMode::Open;
        }
        config.fsync = self.audit_log_sync == "always";
        let signer = std::sync::Arc::new(crate::crypto::Ed25519SigningKey::generate()?);
        let public_key = signer.public_key().clone();
        // A new key each start: written once the log opened with it, so that a start that
        // fails leaves no key that signed nothing.
        let log = AuditLog::open(config, signer)
            .await
            .map_err(|e| CliError::new(format!("--audit-log-path: {e}")))?;
        crate::access::write_public_key(path, &public_key).map_err(|e| {
            CliError::new(format!(
                "--audit-log-path: cannot write the public key: {e}"
            ))
        })?;
        Ok((
            Auditor::new(policy, std::sync::Arc::new(log.clone())),
            Some(log),
        ))
    }
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
