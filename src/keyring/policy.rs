//! When the primary KEK is rotated on its own, and the maintenance task that does it.
//!
//! Random-nonce AES-GCM must not seal more than 2^32 times under one key, and the Kubernetes KMS
//! docs recommend rotating every 90 days. The maintenance task, every interval and whenever the
//! hot path asks for it, extends the primary's reservation of encryptions before it runs out,
//! rotates once [`rotation_due`] says so, and otherwise re-runs the self-test that `Status`
//! reports.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::document::now_unix;
use super::{Inner, KeyInfo, Keyring, KeyringError, RESERVATION_BLOCK};

/// Default rotation by count: a quarter of the 2^32 random-nonce bound of AES-GCM.
pub const DEFAULT_ROTATE_AFTER_ENCRYPTIONS: u64 = 1 << 30;
/// Default rotation by age: 90 days, as the Kubernetes KMS docs recommend.
pub const DEFAULT_ROTATE_AFTER: Duration = Duration::from_secs(90 * 24 * 3600);
/// Longest interval between maintenance passes.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

/// When the maintenance task rotates the primary KEK on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Rotate once the primary is this old; `None` disables.
    pub max_age: Option<Duration>,
    /// Rotate once the primary has sealed this many times; `None` disables.
    pub max_encryptions: Option<u64>,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            max_age: Some(DEFAULT_ROTATE_AFTER),
            max_encryptions: Some(DEFAULT_ROTATE_AFTER_ENCRYPTIONS),
        }
    }
}

impl RotationPolicy {
    /// How often to check this policy: every minute, or often enough for a short `max_age`
    /// (a quarter of it, at least every 100 ms).
    pub fn maintenance_interval(&self) -> Duration {
        self.max_age.map_or(MAINTENANCE_INTERVAL, |age| {
            (age / 4).clamp(Duration::from_millis(100), MAINTENANCE_INTERVAL)
        })
    }
}

/// Why the primary should be rotated now under `policy`, if it should.
pub fn rotation_due(policy: &RotationPolicy, primary: &KeyInfo, now: i64) -> Option<&'static str> {
    if let Some(max_age) = policy.max_age {
        let age = now.saturating_sub(primary.created_unix).max(0) as u64;
        if age >= max_age.as_secs() {
            return Some("age");
        }
    }
    if let Some(max) = policy.max_encryptions {
        if primary.encryptions >= max {
            return Some("encryption count");
        }
    }
    None
}

/// Owns the maintenance task; dropping it stops the task.
#[derive(Debug)]
pub struct MaintenanceGuard {
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for MaintenanceGuard {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Keyring {
    /// Starts the task that extends encryption reservations, rotates by policy and re-runs the
    /// self-test, at once and then every `interval` (and when encryptions call for it). It
    /// stops when the guard is dropped, or when the keyring is (it does not keep it alive).
    pub fn start_maintenance(&self, interval: Duration) -> MaintenanceGuard {
        let keyring: Weak<Inner> = Arc::downgrade(&self.inner);
        let wake = self.inner.wake.clone();
        let handle = tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let Some(inner) = keyring.upgrade() else {
                    return;
                };
                if let Err(e) = (Keyring { inner }).maintain(now_unix()).await {
                    tracing::error!(error = %e, "keyring maintenance failed");
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = wake.notified() => {}
                }
            }
        });
        MaintenanceGuard { handle }
    }

    /// One maintenance pass at time `now` (seconds since the epoch).
    pub async fn maintain(&self, now: i64) -> Result<(), KeyringError> {
        let primary = self.inner.snapshot.load().primary.clone();
        let used = primary.counter.used.load(Ordering::Relaxed);
        let need = used + RESERVATION_BLOCK / 2;
        if need >= primary.counter.reserved.load(Ordering::Acquire) {
            self.reserve(&primary, need + 1, used + RESERVATION_BLOCK)
                .await?;
        }
        if let Some(reason) = rotation_due(&self.inner.policy, &primary.info(), now) {
            tracing::info!(key_id_hash = %crate::crypto::key_id_hash(&primary.key_id), reason, "automatic rotation");
            self.rotate().await?;
        } else {
            self.self_test().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Algorithm;
    use crate::keyring::KeyState;

    #[test]
    fn rotation_policy() {
        let p = RotationPolicy {
            max_age: Some(Duration::from_secs(100)),
            max_encryptions: Some(10),
        };
        let mut k = KeyInfo {
            key_id: "kw-1-00".into(),
            seq: 1,
            state: KeyState::Primary,
            algorithm: Algorithm::Aes256Gcm,
            created_unix: 1000,
            encryptions: 0,
        };
        assert_eq!(rotation_due(&p, &k, 1099), None);
        assert_eq!(rotation_due(&p, &k, 1100), Some("age"));
        k.encryptions = 10;
        assert_eq!(rotation_due(&p, &k, 1000), Some("encryption count"));
        let off = RotationPolicy {
            max_age: None,
            max_encryptions: None,
        };
        assert_eq!(rotation_due(&off, &k, i64::MAX), None);
    }

    #[test]
    fn maintenance_interval_follows_a_short_max_age() {
        let with = |max_age| RotationPolicy {
            max_age,
            max_encryptions: None,
        };
        assert_eq!(
            RotationPolicy::default().maintenance_interval(),
            MAINTENANCE_INTERVAL
        );
        assert_eq!(with(None).maintenance_interval(), MAINTENANCE_INTERVAL);
        assert_eq!(
            with(Some(Duration::from_secs(8))).maintenance_interval(),
            Duration::from_secs(2)
        );
        assert_eq!(
            with(Some(Duration::from_millis(10))).maintenance_interval(),
            Duration::from_millis(100)
        );
    }
}
