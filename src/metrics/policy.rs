//! The authorization policy's state, read at scrape time from the [`Policy`] in force: whether
//! the files on disk are in force (a reload that failed keeps the old policy, and says so
//! here), reloads so far, and when the policy in force was loaded.

use std::sync::{Arc, Mutex, Weak};
use std::time::UNIX_EPOCH;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use super::keyring::gauge;
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
