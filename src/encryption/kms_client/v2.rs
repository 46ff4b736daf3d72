//! The KMS v2 provider: one seed per plugin `key_id`, a key derived per write, `Status` polled
//! in the background, unwrapped seeds cached (facts §2, §3, §4.3).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prost::Message;
use tokio::time::Instant;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use super::derived::{DerivedId, DerivedKeys};
use super::object::StoredObject;
use super::{is_fqdn, new_uid, Plugin};
use crate::crypto::{self, key_id_hash, AesGcmKey, GCM_NONCE_LEN, TAG_LEN};
use crate::encryption::config::KmsConfiguration;
use crate::encryption::{EncryptionError, RandomSource};
use crate::pb::kms_v2 as v2;

/// Status poll period while healthy (upstream `kmsv2PluginHealthzPositiveInterval`).
pub const POLL_HEALTHY: Duration = Duration::from_secs(60);
/// Status poll period after a failure (upstream `kmsv2PluginHealthzNegativeInterval`).
pub const POLL_UNHEALTHY: Duration = Duration::from_secs(10);
/// Writes are allowed this long after the last good check (`kmsv2PluginWriteDEKSourceMaxTTL`).
pub const WRITE_TTL: Duration = Duration::from_secs(180);
/// Limit on `key_id` and on the wrapped seed (`KeyIDMaxSize`, `encryptedDEKSourceMaxSize`).
pub const MAX_KEY_ID: usize = 1024;
/// Limit on the wrapped seed.
pub const MAX_DEK_SOURCE: usize = 1024;
/// Limit on annotation keys plus values (`annotationsMaxSize`).
pub const MAX_ANNOTATIONS: usize = 32 * 1024;
/// Seed length (`MinSeedSizeExtendedNonceGCM`), also the HKDF info length.
pub const SEED_LEN: usize = 32;
/// Decrypted seeds kept for reads.
const SEED_CACHE: usize = 10_000;
/// Derived data keys kept for reads ([`DerivedKeys`]): AES-256-GCM key schedules of about
/// 1 KiB each.
const DERIVED_CACHE: usize = 4_096;
/// How long a derived key serves reads after it was derived (upstream: 10 minutes).
const DERIVED_TTL: Duration = Duration::from_secs(600);
/// `EncryptedDEKSourceType` values.
const SOURCE_AES_GCM_KEY: i32 = 0;
const SOURCE_HKDF_SEED: i32 = 1;

fn validate_key_id(key_id: &str) -> Result<(), String> {
    if key_id.is_empty() {
        Err("key_id is empty".into())
    } else if key_id.len() > MAX_KEY_ID {
        Err(format!(
            "key_id is {} bytes, more than {MAX_KEY_ID}",
            key_id.len()
        ))
    } else {
        Ok(())
    }
}

fn validate_annotations(a: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    let mut total = 0;
    for (k, v) in a {
        if !is_fqdn(k) {
            return Err(format!(
                "annotation key {k:?} is not a fully qualified domain name"
            ));
        }
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS {
        return Err(format!(
            "annotations are {total} bytes, more than {MAX_ANNOTATIONS}"
        ));
    }
    Ok(())
}

fn validate_dek_source(d: &[u8]) -> Result<(), String> {
    if d.is_empty() {
        Err("encrypted DEK source is empty".into())
    } else if d.len() > MAX_DEK_SOURCE {
        Err(format!(
            "encrypted DEK source is {} bytes, more than {MAX_DEK_SOURCE}",
            d.len()
        ))
    } else {
        Ok(())
    }
}

struct WriteState {
    seed: Zeroizing<Vec<u8>>,
    dek_source: Vec<u8>,
    key_id: String,
    annotations: BTreeMap<String, Vec<u8>>,
    /// [`seed_cache_key`] of this seed, so that a read of an object written under it finds
    /// the seed without hashing or a cache lookup.
    cache_key: [u8; 32],
    expires: Instant,
}

impl WriteState {
    /// Whether an object's wrapped seed, key_id and annotations are this seed's: then its seed
    /// is this one (what [`seed_cache_key`] of the same fields would find in the seed cache).
    fn wrote(&self, obj: &StoredObject<'_>) -> bool {
        obj.source_type == SOURCE_HKDF_SEED
            && *obj.encrypted_dek_source == *self.dek_source
            && obj.key_id == self.key_id
            && obj.annotations == self.annotations
    }
}

enum SeedKey {
    /// HKDF seed (`HKDF_SHA256_XNONCE_AES_GCM_SEED`).
    Seed(Zeroizing<Vec<u8>>),
    /// A plain AES-GCM DEK (`AES_GCM_KEY`, written by Kubernetes 1.27–1.28).
    Legacy(AesGcmKey),
}

/// What the last Status poll of a kms v2 provider found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsV2Status {
    /// Provider name.
    pub name: String,
    /// Plugin endpoint.
    pub endpoint: String,
    /// The last check succeeded.
    pub healthy: bool,
    /// The key_id new writes use, if any check ever succeeded.
    pub key_id: Option<String>,
    /// Why the last check failed.
    pub error: Option<String>,
}

pub(in crate::encryption) struct KmsV2 {
    plugin: Plugin,
    random: Arc<dyn RandomSource>,
    state: ArcSwapOption<WriteState>,
    first_version: Mutex<Option<String>>,
    health: Mutex<(bool, Option<String>)>,
    seeds: Mutex<lru::LruCache<[u8; 32], Arc<SeedKey>>>,
    derived: DerivedKeys<AesGcmKey>,
}

impl fmt::Debug for KmsV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KmsV2({}, {})", self.plugin.name, self.plugin.endpoint)
    }
}

/// Owns a kms v2 provider's Status poll; dropping it stops the poll.
#[derive(Debug)]
pub struct KmsPollGuard(tokio::task::JoinHandle<()>);

impl Drop for KmsPollGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// upstream `generateCacheKey`: SHA-256 over the source type, the wrapped seed, the key_id and
/// the sorted annotations, each length-prefixed.
fn seed_cache_key(
    source_type: i32,
    dek_source: &[u8],
    key_id: &str,
    annotations: &BTreeMap<String, Vec<u8>>,
) -> [u8; 32] {
    let mut b = Vec::with_capacity(16 + dek_source.len() + key_id.len());
    b.extend_from_slice(&(source_type as u32).to_be_bytes());
    b.extend_from_slice(&(dek_source.len() as u16).to_be_bytes());
    b.extend_from_slice(dek_source);
    b.extend_from_slice(&(key_id.len() as u16).to_be_bytes());
    b.extend_from_slice(key_id.as_bytes());
    if !annotations.is_empty() {
        b.extend_from_slice(&(annotations.len() as u32).to_be_bytes());
        for (k, v) in annotations {
            b.extend_from_slice(&(k.len() as u16).to_be_bytes());
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(&(v.len() as u16).to_be_bytes());
            b.extend_from_slice(v);
        }
    }
    crypto::sha256(&b)
}

/// Encrypts `plaintext` in KDF mode and returns the serialized `EncryptedObject` (without the
/// provider prefix). `info` and `nonce` are the write's random draws.
#[allow(clippy::too_many_arguments)] // mirrors every field of the record it builds
pub(in crate::encryption) fn v2_seal(
    seed: &[u8],
    info: &[u8; SEED_LEN],
    nonce: &[u8; GCM_NONCE_LEN],
    key_id: &str,
    dek_source: &[u8],
    annotations: &BTreeMap<String, Vec<u8>>,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, crypto::CryptoError> {
    let dek = crypto::hkdf_expand_slice(seed, info).ok_or(crypto::CryptoError::Seal)?;
    let gcm = AesGcmKey::aes256(&dek);
    let mut data = Vec::with_capacity(SEED_LEN + GCM_NONCE_LEN + plaintext.len() + TAG_LEN);
    data.extend_from_slice(info);
    data.extend_from_slice(nonce);
    gcm.seal_into(nonce, aad, plaintext, &mut data)?;
    Ok(v2::EncryptedObject {
        encrypted_data: data,
        key_id: key_id.to_owned(),
        encrypted_dek_source: dek_source.to_vec(),
        annotations: annotations.clone(),
        encrypted_dek_source_type: SOURCE_HKDF_SEED,
    }
    .encode_to_vec())
}

/// The data key of a KDF-mode object: `HKDF-Expand(seed, info)` as AES-256-GCM; `None` if the
/// seed is too short to derive from.
fn derive(seed: &[u8], info: &[u8]) -> Option<AesGcmKey> {
    Some(AesGcmKey::aes256(&crypto::hkdf_expand_slice(seed, info)?))
}

/// Splits KDF-mode `encrypted_data` into `(info, nonce, sealed)`; `None` if too short.
fn split_kdf_data(data: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    if data.len() < SEED_LEN + GCM_NONCE_LEN + TAG_LEN {
        return None;
    }
    let (info, rest) = data.split_at(SEED_LEN);
    let (nonce, sealed) = rest.split_at(GCM_NONCE_LEN);
    Some((info, nonce, sealed))
}

/// Opens legacy-mode `encrypted_data` (nonce, then ciphertext and tag) under the DEK itself.
fn open_legacy(gcm: &AesGcmKey, aad: &[u8], data: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if data.len() < GCM_NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, sealed) = data.split_at(GCM_NONCE_LEN);
    gcm.open(nonce, aad, sealed).ok()
}

impl KmsV2 {
    pub(in crate::encryption) fn new(c: &KmsConfiguration, random: Arc<dyn RandomSource>) -> Self {
        Self {
            plugin: Plugin::new(c),
            random,
            state: ArcSwapOption::empty(),
            first_version: Mutex::new(None),
            health: Mutex::new((false, None)),
            seeds: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(SEED_CACHE).expect("non-zero"),
            )),
            derived: DerivedKeys::new(DERIVED_CACHE, DERIVED_TTL),
        }
    }

    fn client(&self) -> v2::key_management_service_client::KeyManagementServiceClient<Channel> {
        v2::key_management_service_client::KeyManagementServiceClient::new(
            self.plugin.channel.clone(),
        )
    }

    pub(in crate::encryption) fn status(&self) -> KmsV2Status {
        let (healthy, error) = self
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        KmsV2Status {
            name: self.plugin.name.clone(),
            endpoint: self.plugin.endpoint.clone(),
            healthy,
            key_id: self.state.load().as_ref().map(|s| s.key_id.clone()),
            error,
        }
    }

    /// One health check: Status, and a new seed through Encrypt when the key_id changed.
    pub(in crate::encryption) async fn check(&self) -> bool {
        let res = self.check_inner().await;
        let ok = res.is_ok();
        let error = res.err().map(|e| e.to_string());
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        // Warn when the failure is new or different; repeats (a plugin down for a while) are
        // debug, so a 100 ms health wait does not flood the log.
        match &error {
            Some(e) if health.1.as_ref() != Some(e) => {
                tracing::warn!(provider = %self.plugin.name, error = %e, "kms v2 plugin is not healthy")
            }
            Some(e) => {
                tracing::debug!(provider = %self.plugin.name, error = %e, "kms v2 plugin still not healthy")
            }
            None if !health.0 && health.1.is_some() => {
                tracing::info!(provider = %self.plugin.name, "kms v2 plugin is healthy again")
            }
            None => {}
        }
        *health = (ok, error);
        ok
    }

    async fn check_inner(&self) -> Result<(), EncryptionError> {
        let st = self
            .plugin
            .call("Status", || {
                let mut c = self.client();
                async move { c.status(v2::StatusRequest {}).await }
            })
            .await?;
        let mut problems = Vec::new();
        if st.healthz != "ok" {
            problems.push(format!("got unexpected healthz status: {}", st.healthz));
        }
        if st.version != "v2" && st.version != "v2beta1" {
            problems.push(format!(
                "got unexpected version {:?}, expected v2 or v2beta1",
                st.version
            ));
        } else {
            let mut first = self.first_version.lock().unwrap_or_else(|p| p.into_inner());
            match first.as_deref() {
                None => *first = Some(st.version.clone()),
                Some(v) if v != st.version => problems.push(
                    "KMSv2 API version should not change after the initial status response".into(),
                ),
                Some(_) => {}
            }
        }
        if let Err(e) = validate_key_id(&st.key_id) {
            problems.push(e);
        }
        if !problems.is_empty() {
            return Err(self.plugin.contract(problems.join(", ")));
        }
        let now = Instant::now();
        if let Some(state) = self.state.load_full() {
            if state.key_id == st.key_id {
                self.state.store(Some(Arc::new(WriteState {
                    seed: state.seed.clone(),
                    dek_source: state.dek_source.clone(),
                    key_id: state.key_id.clone(),
                    annotations: state.annotations.clone(),
                    cache_key: state.cache_key,
                    expires: now + WRITE_TTL,
                })));
                return Ok(());
            }
        }
        self.rotate_seed(&st.key_id, now).await
    }

    async fn rotate_seed(&self, status_key_id: &str, now: Instant) -> Result<(), EncryptionError> {
        let mut seed = Zeroizing::new(vec![0u8; SEED_LEN]);
        self.random
            .fill(&mut seed)
            .map_err(EncryptionError::Crypto)?;
        let resp = self
            .plugin
            .call("Encrypt", || {
                let mut c = self.client();
                let request = v2::EncryptRequest {
                    plaintext: seed.to_vec(),
                    uid: new_uid(),
                };
                async move { c.encrypt(request).await }
            })
            .await?;
        validate_dek_source(&resp.ciphertext)
            .and_then(|()| validate_key_id(&resp.key_id))
            .and_then(|()| validate_annotations(&resp.annotations))
            .map_err(|e| self.plugin.contract(e))?;
        if resp.key_id != status_key_id {
            return Err(self.plugin.contract(format!(
                "failed to rotate DEK: Encrypt returned key_id {} but Status reported {}",
                key_id_hash(&resp.key_id),
                key_id_hash(status_key_id)
            )));
        }
        let cache_key = seed_cache_key(
            SOURCE_HKDF_SEED,
            &resp.ciphertext,
            &resp.key_id,
            &resp.annotations,
        );
        self.seeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(cache_key, Arc::new(SeedKey::Seed(seed.clone())));
        tracing::info!(provider = %self.plugin.name, key_id_hash = %key_id_hash(&resp.key_id), "new kms v2 seed");
        self.state.store(Some(Arc::new(WriteState {
            seed,
            dek_source: resp.ciphertext,
            key_id: resp.key_id,
            annotations: resp.annotations,
            cache_key,
            expires: now + WRITE_TTL,
        })));
        Ok(())
    }

    pub(in crate::encryption) fn start_polling(self: Arc<Self>) -> KmsPollGuard {
        KmsPollGuard(tokio::spawn(async move {
            let mut healthy = self.health.lock().unwrap_or_else(|p| p.into_inner()).0;
            loop {
                tokio::time::sleep(if healthy {
                    POLL_HEALTHY
                } else {
                    POLL_UNHEALTHY
                })
                .await;
                healthy = self.check().await;
            }
        }))
    }

    pub(in crate::encryption) fn seal_into(
        &self,
        rnd: &dyn RandomSource,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EncryptionError> {
        let Some(state) = self.state.load_full() else {
            return Err(self.plugin.err(
                "no usable key: the plugin has not yet answered Status and Encrypt successfully",
            ));
        };
        if Instant::now() > state.expires {
            return Err(self.plugin.err(format!(
                "encrypted DEK source with key_id hash {} expired: no successful Status check for more than {}s",
                key_id_hash(&state.key_id),
                WRITE_TTL.as_secs()
            )));
        }
        let mut rand = Zeroizing::new([0u8; SEED_LEN + GCM_NONCE_LEN]);
        rnd.fill_public(rand.as_mut())
            .map_err(EncryptionError::Crypto)?;
        let info: &[u8; SEED_LEN] = rand[..SEED_LEN].try_into().expect("length");
        let nonce: &[u8; GCM_NONCE_LEN] = rand[SEED_LEN..].try_into().expect("length");
        let obj = v2_seal(
            &state.seed,
            info,
            nonce,
            &state.key_id,
            &state.dek_source,
            &state.annotations,
            aad,
            plaintext,
        )
        .map_err(EncryptionError::Crypto)?;
        out.extend_from_slice(&obj);
        Ok(())
    }

    /// Opens `data` (`info ‖ nonce ‖ sealed`) with the key derived from `seed` (the seed
    /// cache's entry `cache_key`) for its `info`; `None` if it does not open.
    fn open_under_seed(
        &self,
        cache_key: &[u8; 32],
        seed: &[u8],
        aad: &[u8],
        data: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        let (info, nonce, sealed) = split_kdf_data(data)?;
        let mut id: DerivedId = [0u8; 64];
        id[..32].copy_from_slice(cache_key);
        id[32..].copy_from_slice(info);
        self.derived
            .with(
                &id,
                Instant::now(),
                || derive(seed, info),
                |gcm| gcm.open(nonce, aad, sealed).ok(),
            )
            .flatten()
    }

    /// The one opaque error of a value that does not open.
    fn decrypt_failed(&self) -> EncryptionError {
        EncryptionError::Decrypt {
            provider: "kms-v2",
            key: self.plugin.name.clone(),
        }
    }

    /// Decrypts a stored record (without prefix). Returns the plaintext, whether it is stale,
    /// and the key_id it was written under (borrowed from `body` where the record allows).
    pub(in crate::encryption) async fn open<'a>(
        &self,
        aad: &[u8],
        body: &'a [u8],
    ) -> Result<(Zeroizing<Vec<u8>>, bool, Cow<'a, str>), EncryptionError> {
        let malformed = |reason: String| EncryptionError::Malformed {
            provider: "kms-v2",
            reason,
        };
        let obj = StoredObject::decode(body).map_err(|e| malformed(e.to_string()))?;
        if obj.encrypted_data.is_empty() {
            return Err(malformed("encrypted data is empty".into()));
        }
        validate_key_id(&obj.key_id)
            .and_then(|()| validate_dek_source(&obj.encrypted_dek_source))
            .and_then(|()| validate_annotations(&obj.annotations))
            .map_err(malformed)?;
        let source_type = obj.source_type;
        if source_type != SOURCE_HKDF_SEED && source_type != SOURCE_AES_GCM_KEY {
            return Err(malformed(format!(
                "unknown encryptedDEKSourceType {source_type}"
            )));
        }
        // Like kube-apiserver, nothing is read before the plugin has answered once.
        // (A guard, not a reference count: it is let go before any await.)
        let guard = self.state.load();
        let Some(state) = guard.as_deref() else {
            return Err(self.plugin.err(
                "cannot read: the plugin has not yet answered Status and Encrypt successfully",
            ));
        };
        // Nearly every object was written under the seed writes use now: that one is taken as
        // it is, without hashing the fields that name it or locking the seed cache.
        if state.wrote(&obj) {
            return self
                .open_under_seed(&state.cache_key, &state.seed, aad, &obj.encrypted_data)
                .map(|pt| (pt, false, obj.key_id))
                .ok_or_else(|| self.decrypt_failed());
        }
        let other_key_id = obj.key_id != state.key_id;
        drop(guard);
        let cache_key = seed_cache_key(
            source_type,
            &obj.encrypted_dek_source,
            &obj.key_id,
            &obj.annotations,
        );
        let cached = self
            .seeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cache_key)
            .cloned();
        let key = match cached {
            Some(k) => k,
            None => {
                let plain = Zeroizing::new(
                    self.plugin
                        .call("Decrypt", || {
                            let mut c = self.client();
                            let request = v2::DecryptRequest {
                                ciphertext: obj.encrypted_dek_source.to_vec(),
                                uid: new_uid(),
                                key_id: obj.key_id.to_string(),
                                annotations: obj.annotations.clone(),
                            };
                            async move { c.decrypt(request).await }
                        })
                        .await?
                        .plaintext,
                );
                let key = if source_type == SOURCE_HKDF_SEED {
                    if plain.len() < SEED_LEN {
                        return Err(self.plugin.contract(format!(
                            "decrypted seed is {} bytes, fewer than {SEED_LEN}",
                            plain.len()
                        )));
                    }
                    SeedKey::Seed(plain)
                } else {
                    SeedKey::Legacy(AesGcmKey::new(&plain).ok_or_else(|| {
                        self.plugin
                            .contract("decrypted DEK is not a valid AES key length")
                    })?)
                };
                let key = Arc::new(key);
                self.seeds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .put(cache_key, key.clone());
                key
            }
        };
        let pt = match &*key {
            SeedKey::Seed(seed) => self.open_under_seed(&cache_key, seed, aad, &obj.encrypted_data),
            SeedKey::Legacy(gcm) => open_legacy(gcm, aad, &obj.encrypted_data),
        }
        .ok_or_else(|| self.decrypt_failed())?;
        let stale = other_key_id || source_type != SOURCE_HKDF_SEED;
        Ok((pt, stale, obj.key_id))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The key derived for reads opens what `v2_seal` sealed under the same seed and info, and
    /// nothing sealed under other info or for another path; a short seed derives nothing.
    #[test]
    fn derived_keys_open_what_v2_seal_sealed() {
        let seed = [7u8; SEED_LEN];
        let (info, nonce) = ([2u8; SEED_LEN], [3u8; GCM_NONCE_LEN]);
        let sealed = v2_seal(
            &seed,
            &info,
            &nonce,
            "k",
            b"src",
            &BTreeMap::new(),
            b"aad",
            b"v",
        )
        .unwrap();
        let obj = StoredObject::decode(&sealed).unwrap();
        let (i, n, ct) = split_kdf_data(&obj.encrypted_data).unwrap();
        let key = derive(&seed, i).unwrap();
        assert_eq!(&*key.open(n, b"aad", ct).unwrap(), b"v");
        assert!(
            key.open(n, b"other path", ct).is_err(),
            "the AAD still binds"
        );
        let other = derive(&seed, &[9u8; SEED_LEN]).unwrap();
        assert!(other.open(n, b"aad", ct).is_err(), "other info, other key");
        assert!(derive(&[0u8; 16], i).is_none(), "short seed");
        assert!(split_kdf_data(&[0u8; 40]).is_none(), "short data");
    }

    /// Through the provider's cache: a read derives once, and later reads of objects under
    /// the same seed and info reuse that key.
    #[test]
    fn reads_reuse_the_derived_key() {
        let seed = [7u8; SEED_LEN];
        let info = [2u8; SEED_LEN];
        let cache: DerivedKeys<AesGcmKey> = DerivedKeys::new(4, DERIVED_TTL);
        let mut id = [1u8; 64];
        id[32..].copy_from_slice(&info);
        let derivations = std::cell::Cell::new(0);
        for _ in 0..3 {
            let made = cache.with(
                &id,
                Instant::now(),
                || {
                    derivations.set(derivations.get() + 1);
                    derive(&seed, &info)
                },
                |_| (),
            );
            assert!(made.is_some());
        }
        assert_eq!(derivations.get(), 1);
    }

    #[test]
    fn seed_cache_key_covers_every_field() {
        let a = BTreeMap::from([("a.io".to_owned(), b"1".to_vec())]);
        let base = seed_cache_key(1, b"src", "kid", &a);
        assert_ne!(base, seed_cache_key(0, b"src", "kid", &a));
        assert_ne!(base, seed_cache_key(1, b"srd", "kid", &a));
        assert_ne!(base, seed_cache_key(1, b"src", "kie", &a));
        assert_ne!(base, seed_cache_key(1, b"src", "kid", &BTreeMap::new()));
        assert_eq!(base, seed_cache_key(1, b"src", "kid", &a.clone()));
    }
}
