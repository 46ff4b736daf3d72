//! The keyring's gauges, read at each scrape through a function the plugin gives
//! ([`Metrics::watch_keyring`](super::Metrics::watch_keyring)): sealed or not, healthy or not,
//! the primary key's age, encryptions and limits (its key id only hashed), keys by state, and
//! for a shared keyring how long ago it was confirmed current.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::crypto::key_id_hash;
use crate::keyring::{Confirmation, KeyState, Keyring};

/// What the keyring gauges show at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct KeyringReading {
    /// No root key yet (e.g. waiting for unseal shares): nothing below is known.
    pub sealed: bool,
    /// Status would answer `healthz: ok`.
    pub healthy: bool,
    /// The primary key, when unsealed.
    pub primary: Option<PrimaryKeyReading>,
    /// Keys per state.
    pub keys: Vec<(KeyState, u64)>,
    /// The rotation policy: rotate after this many encryptions.
    pub rotate_after_encryptions: Option<u64>,
    /// The rotation policy: rotate once the primary is this old.
    pub rotate_after: Option<Duration>,
    /// For a keyring shared with other replicas: when it was last confirmed current.
    pub shared: Option<Confirmation>,
}

/// The primary key as the gauges show it: its key id only hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrimaryKeyReading {
    /// `sha256:<hex>` of the key id ([`key_id_hash`]).
    pub key_id_hash: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: i64,
    /// Encryptions under it so far (an upper bound after a crash).
    pub encryptions: u64,
    /// Encryptions after which encrypting is refused, if the algorithm has such a bound.
    pub encryption_limit: Option<u64>,
}

impl KeyringReading {
    /// A keyring waiting for its root key.
    pub fn sealed() -> Self {
        KeyringReading {
            sealed: true,
            ..Self::default()
        }
    }

    /// An unsealed keyring, read from memory (no I/O, no key derivation).
    pub fn of(keyring: &Keyring) -> Self {
        let health = keyring.health();
        let keys = keyring.keys();
        let primary =
            keys.iter()
                .find(|k| k.state == KeyState::Primary)
                .map(|k| PrimaryKeyReading {
                    key_id_hash: key_id_hash(&k.key_id),
                    created_unix: k.created_unix,
                    encryptions: k.encryptions,
                    encryption_limit: keyring.encryption_limit(),
                });
        let states = [
            KeyState::Primary,
            KeyState::DecryptOnly,
            KeyState::Disabled,
            KeyState::Destroyed,
        ];
        let policy = keyring.info().policy;
        KeyringReading {
            sealed: false,
            healthy: health.healthy,
            primary,
            keys: states
                .into_iter()
                .map(|s| (s, keys.iter().filter(|k| k.state == s).count() as u64))
                .collect(),
            rotate_after_encryptions: policy.max_encryptions,
            rotate_after: policy.max_age,
            shared: keyring.confirmation(),
        }
    }
}

type Read = Box<dyn Fn() -> KeyringReading + Send + Sync>;

/// Encodes the reading of the function it holds.
#[derive(Default)]
pub(super) struct KeyringCollector {
    read: Mutex<Option<Arc<Read>>>,
}

impl std::fmt::Debug for KeyringCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyringCollector")
    }
}

impl KeyringCollector {
    pub(super) fn set(&self, read: Read) {
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(read));
    }
}

/// One unlabelled gauge.
pub(super) fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

impl Collector for KeyringCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(read) = self.read.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Ok(());
        };
        let r = read();
        let flag = |b: bool| i64::from(b);
        gauge(
            &mut enc,
            "keyward_keyring_sealed",
            "1 while the keyring waits for its root key (every Encrypt and Decrypt is refused), else 0",
            flag(r.sealed),
        )?;
        gauge(
            &mut enc,
            "keyward_keyring_healthy",
            "1 when Status answers healthz ok: unsealed, self-test passed and, if shared, confirmed current",
            flag(r.healthy && !r.sealed),
        )?;
        if let Some(p) = &r.primary {
            let m = enc.encode_descriptor(
                "keyward_keyring_primary_key_info",
                "Always 1; key_id_hash is sha256:<hex> of the primary key's key_id, as kube-apiserver hashes key ids",
                None,
                MetricType::Gauge,
            )?;
            let mut m = m;
            let labels = [("key_id_hash", p.key_id_hash.as_str())];
            ConstGauge::new(1i64).encode(m.encode_family(&labels)?)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            gauge(
                &mut enc,
                "keyward_keyring_primary_key_age_seconds",
                "Seconds since the primary key was created",
                (now - p.created_unix).max(0),
            )?;
            gauge(
                &mut enc,
                "keyward_keyring_primary_key_encryptions",
                "Encryptions under the primary key so far (an upper bound after a crash)",
                p.encryptions,
            )?;
            if let Some(limit) = p.encryption_limit {
                gauge(
                    &mut enc,
                    "keyward_keyring_primary_key_encryption_limit",
                    "Encryptions after which the primary key refuses to encrypt if rotation keeps failing (AES-256-GCM: 2^31)",
                    limit,
                )?;
            }
        }
        if let Some(n) = r.rotate_after_encryptions {
            gauge(
                &mut enc,
                "keyward_keyring_rotate_after_encryptions",
                "Rotation policy: the primary key is rotated after this many encryptions",
                n,
            )?;
        }
        if let Some(d) = r.rotate_after {
            gauge(
                &mut enc,
                "keyward_keyring_rotate_after_seconds",
                "Rotation policy: the primary key is rotated once it is this old",
                d.as_secs(),
            )?;
        }
        if !r.keys.is_empty() {
            let mut m = enc.encode_descriptor(
                "keyward_keyring_keys",
                "Key-encryption keys in the keyring, by state",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in &r.keys {
                let labels = [("state", state.name())];
                ConstGauge::new(*n as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        if let Some(c) = r.shared {
            gauge(
                &mut enc,
                "keyward_keyring_shared_confirmed_age_seconds",
                "Seconds since this replica last confirmed that its copy of the shared keyring is current",
                c.ago.as_secs_f64(),
            )?;
            gauge(
                &mut enc,
                "keyward_keyring_shared_stale_after_seconds",
                "The replica reports unhealthy once the confirmed age exceeds this (--etcd-stale-after)",
                c.stale_after.as_secs_f64(),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sealed_keyring_shows_only_its_state() {
        let m = super::super::Metrics::new();
        m.watch_keyring(KeyringReading::sealed);
        let text = m.render(false).await;
        assert!(text.contains("keyward_keyring_sealed 1\n"), "{text}");
        assert!(text.contains("keyward_keyring_healthy 0\n"), "{text}");
        assert!(!text.contains("primary"), "{text}");
        m.watch_keyring(|| KeyringReading {
            healthy: true,
            primary: Some(PrimaryKeyReading {
                key_id_hash: key_id_hash("kw-1-00"),
                created_unix: 0,
                encryptions: 5,
                encryption_limit: Some(1 << 31),
            }),
            shared: Some(Confirmation {
                ago: Duration::from_millis(1500),
                stale_after: Duration::from_secs(30),
            }),
            ..KeyringReading::default()
        });
        let text = m.render(false).await;
        for want in [
            "keyward_keyring_sealed 0\n",
            "keyward_keyring_healthy 1\n",
            "keyward_keyring_primary_key_encryptions 5\n",
            "keyward_keyring_primary_key_encryption_limit 2147483648\n",
            "keyward_keyring_shared_confirmed_age_seconds 1.5\n",
            &format!(
                "keyward_keyring_primary_key_info{{key_id_hash=\"{}\"}} 1\n",
                key_id_hash("kw-1-00")
            ),
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("kw-1-00"), "{text}");
    }
}
