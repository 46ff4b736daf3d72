//! The authorization policy's state, read at scrape time from the [`Policy`] in force: whether
//! the files on disk are in force (a reload that failed keeps the old policy, and says so
//! here), reloads so far, and when the policy in force was loaded. The same for the credential
//! files (`--token-auth-file`, `--unix-users`).

use std::sync::{Arc, Mutex, Weak};
use std::time::UNIX_EPOCH;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use super::keyring::gauge;
use crate::authn::reload::Reload;
use crate::authz::Policy;

/// Reports the policy it holds (weakly: once the server drops it, nothing is reported).
#[derive(Default)]
pub(super) struct PolicyCollector(Mutex<Weak<Policy>>);

impl std::fmt::Debug for PolicyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PolicyCollector")
    }
}

impl PolicyCollector {
    pub(super) fn set(&self, policy: &Arc<Policy>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(policy);
    }
}

impl Collector for PolicyCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(policy) = self.0.lock().unwrap_or_else(|e| e.into_inner()).upgrade() else {
            return Ok(());
        };
        let status = policy.status();
        gauge(
            &mut enc,
            "keyward_authorization_policy_healthy",
            "1 when the authorization policy files on disk are the policy in force; 0 while they are unreadable or invalid (the last valid policy stays in force)",
            i64::from(status.healthy()),
        )?;
        let reloads = ConstCounter::new(status.reloads);
        let m = enc.encode_descriptor(
            "keyward_authorization_policy_reloads",
            "Times a changed authorization policy was put in force",
            None,
            reloads.metric_type(),
        )?;
        reloads.encode(m)?;
        let loaded = status
            .loaded_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        gauge(
            &mut enc,
            "keyward_authorization_policy_loaded_timestamp_seconds",
            "When the authorization policy in force was loaded, seconds since the Unix epoch",
            loaded,
        )
    }
}

/// Reports the credential files reloaded on change (weakly, as [`PolicyCollector`]).
#[derive(Default)]
pub(super) struct CredentialFilesCollector(Mutex<Vec<Weak<dyn Reload>>>);

impl std::fmt::Debug for CredentialFilesCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialFilesCollector")
    }
}

impl CredentialFilesCollector {
    pub(super) fn set(&self, files: &[Arc<dyn Reload>]) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            files.iter().map(Arc::downgrade).collect();
    }
}

impl Collector for CredentialFilesCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses: Vec<_> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .map(|f| f.status())
            .collect();
        gauge(
            &mut enc,
            "keyward_credential_files_healthy",
            "1 when every credential file on disk (--token-auth-file, --unix-users) is the content in force; 0 while one is unreadable or invalid (its last valid content stays in force)",
            i64::from(statuses.iter().all(|s| s.last_error.is_none())),
        )?;
        let reloads = ConstCounter::new(statuses.iter().map(|s| s.reloads).sum::<u64>());
        let m = enc.encode_descriptor(
            "keyward_credential_files_reloads",
            "Times a changed credential file was put in force",
            None,
            reloads.metric_type(),
        )?;
        reloads.encode(m)
    }
}
