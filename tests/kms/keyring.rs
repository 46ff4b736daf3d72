//! The keyring's behaviour, written once and run against both places a keyring lives: a data
//! directory (a `SledBackend` of its own) and a real etcd (an `EtcdBackend`, shared by
//! replicas), through the same `Backend` implementations the secret store uses.

use std::path::PathBuf;
use std::sync::Arc;

use crate::support::etcd::Etcd;
use keyward::backend::{Backend, EtcdBackend, Expect, SledBackend, SledOptions, WriteOutcome};
use keyward::crypto::{Algorithm, TAG_LEN};
use keyward::keyring::{
    self, InitOptions, KeyState, Keyring, KeyringError, KeyringLocation, RotationPolicy,
    HEADER_LEN, RESERVATION_BLOCK,
};
use keyward::seal::SealSpec;

/// Where the keyrings of one test live: each keyring has a name (a subdirectory, or a prefix).
enum Place {
    Dir,
    Etcd {
        etcd: Etcd,
        backend: Arc<dyn Backend>,
    },
}

struct Fixture {
    tmp: tempfile::TempDir,
    spec: SealSpec,
    place: Place,
}

impl Fixture {
    /// A fixture whose keyrings are sealed by a key file (or, with `KEYWARD_TEST_SEAL=pkcs11`,
    /// by a SoftHSM key).
    fn new(place: Place) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let spec = crate::support::hsm::test_seal(tmp.path());
        Fixture { tmp, spec, place }
    }

    fn dir() -> Fixture {
        Fixture::new(Place::Dir)
    }

    fn etcd() -> Fixture {
        let etcd = Etcd::start();
        let backend: Arc<dyn Backend> = Arc::new(EtcdBackend::connect(&etcd.options()).unwrap());
        Fixture::new(Place::Etcd { etcd, backend })
    }

    fn data(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Where the keyring `name` lives.
    fn location(&self, name: &str) -> KeyringLocation {
        match &self.place {
            Place::Dir => KeyringLocation::Dir(self.data(name)),
            Place::Etcd { etcd, backend } => KeyringLocation::Shared {
                backend: backend.clone(),
                prefix: format!("/{name}"),
                label: format!("etcd:{}", etcd.endpoints_flag()),
                stale_after: keyring::DEFAULT_STALE_AFTER,
                state: None,
            },
        }
    }

    /// Where `KeyringInfo::storage` says the keyring `name` is.
    fn storage(&self, name: &str) -> String {
        match &self.place {
            Place::Dir => format!("sled:{}", self.data(name).display()),
            Place::Etcd { etcd, .. } => {
                format!("etcd:{} key /{name}/kms/keyring", etcd.endpoints_flag())
            }
        }
    }

    async fn init(&self, name: &str, algorithm: Algorithm) -> keyring::KeyInfo {
        let opts = InitOptions {
            algorithm,
            kdf: None,
        };
        Keyring::init(&self.location(name), &self.spec, &opts)
            .await
            .unwrap()
    }

    async fn open(&self, name: &str) -> Result<Keyring, KeyringError> {
        Keyring::open(&self.location(name), &self.spec, RotationPolicy::default()).await
    }

    /// Keyrings in use at once on the keyring `name`: replicas of a shared one, or clones of
    /// the one a data directory allows.
    async fn replicas(&self, name: &str, n: usize) -> Vec<Keyring> {
        let mut out: Vec<Keyring> = Vec::new();
        for i in 0..n {
            out.push(match (&self.place, i) {
                (Place::Dir, 1..) => out[0].clone(),
                _ => self.open(name).await.unwrap(),
            });
        }
        out
    }

    /// The backend and key holding the keyring `name`, opened beside the keyring (which, in a
    /// data directory, must be closed).
    fn raw(&self, name: &str) -> (Arc<dyn Backend>, Vec<u8>) {
        match &self.place {
            Place::Dir => {
                let dir = self.data(name).join(keyring::DIR_STORE);
                let sled = SledBackend::open(&dir, SledOptions::default()).unwrap();
                (Arc::new(sled), keyring::DEFAULT_KEY.as_bytes().to_vec())
            }
            Place::Etcd { backend, .. } => (
                backend.clone(),
                keyring::shared_key(&format!("/{name}")).into_bytes(),
            ),
        }
    }

    /// The stored document of the keyring `name`: `HMAC ‖ json`.
    async fn stored(&self, name: &str) -> Vec<u8> {
        let (backend, key) = self.raw(name);
        let (kv, _) = backend.get(&key, None).await.unwrap();
        kv.expect("the keyring document is stored").value
    }

    async fn store(&self, name: &str, value: Vec<u8>) {
        let (backend, key) = self.raw(name);
        let out = backend.put(&key, value, Expect::Any).await.unwrap();
        assert!(matches!(out, WriteOutcome::Applied { .. }), "{out:?}");
    }
}

/// The JSON document inside stored bytes.
fn json(stored: &[u8]) -> serde_json::Value {
    serde_json::from_slice(&stored[32..]).unwrap()
}

/// Runs a behaviour against a data directory and against etcd.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn in_a_data_directory() {
                super::$name(super::Fixture::dir()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn shared_through_etcd() {
                super::$name(super::Fixture::etcd()).await;
            }
        }
    )*};
}

on_both!(
    init_open_and_refuse_a_second_init,
    encrypt_decrypt_rotate_restart,
    retire_and_destroy_rules,
    a_tampered_stored_document_fails_to_unseal,
    reservations_survive_a_restart,
    a_clean_stop_gives_back_the_encryptions_it_did_not_use,
    concurrent_rotations_leave_exactly_one_primary,
);

async fn init_open_and_refuse_a_second_init(f: Fixture) {
    assert!(!Keyring::exists(&f.location("k")).await.unwrap());
    let e = f.open("k").await.unwrap_err();
    assert!(matches!(e, KeyringError::NotFound(_)), "{e}");
    let first = f.init("k", Algorithm::Aes256Gcm).await;
    assert!(first.key_id.starts_with("kw-1-"), "{first:?}");
    assert_eq!(first.state, KeyState::Primary);
    assert!(Keyring::exists(&f.location("k")).await.unwrap());
    let opts = InitOptions {
        algorithm: Algorithm::XChaCha20Poly1305,
        kdf: None,
    };
    let e = Keyring::init(&f.location("k"), &f.spec, &opts)
        .await
        .unwrap_err();
    assert!(matches!(e, KeyringError::Exists(_)), "{e}");
    let kr = f.open("k").await.unwrap();
    let h = kr.health();
    assert!(h.healthy && h.problem.is_none(), "{h:?}");
    assert_eq!(&*h.primary_key_id, first.key_id);
    let info = kr.info();
    assert_eq!(
        info.algorithm,
        Algorithm::Aes256Gcm,
        "the second init changed nothing"
    );
    assert_eq!(info.seal, f.spec.kind());
    assert_eq!(info.storage, f.storage("k"));
    assert_eq!(kr.keys().len(), 1);
}

async fn encrypt_decrypt_rotate_restart(f: Fixture) {
    for alg in Algorithm::ALL {
        let name = alg.name();
        let first = f.init(name, alg).await;
        let kr = f.open(name).await.unwrap();
        let (ct, kid) = kr.encrypt(&[9u8; 32]).await.unwrap();
        assert_eq!(ct.len(), HEADER_LEN + alg.nonce_len() + 32 + TAG_LEN);
        assert_eq!(&*kid, first.key_id);
        let back = kr.decrypt(&ct, Some(&kid)).await.unwrap();
        assert_eq!(back.as_slice(), &[9u8; 32]);
        let rot = kr.rotate().await.unwrap();
        assert_eq!(rot.previous_key_id, first.key_id);
        assert!(rot.primary.key_id.starts_with("kw-2-"), "{rot:?}");
        assert_eq!(*kr.health().primary_key_id, rot.primary.key_id);
        let (ct2, kid2) = kr.encrypt(b"under the second key").await.unwrap();
        assert_eq!(*kid2, rot.primary.key_id);
        assert_eq!(
            kr.decrypt(&ct, Some(&kid)).await.unwrap().as_slice(),
            &[9u8; 32]
        );
        // A valid ciphertext sent with another key_id is refused.
        assert!(matches!(
            kr.decrypt(&ct, Some(&rot.primary.key_id)).await,
            Err(KeyringError::Decrypt)
        ));
        drop(kr);

        let kr = f.open(name).await.unwrap();
        assert_eq!(*kr.health().primary_key_id, rot.primary.key_id);
        assert_eq!(kr.decrypt(&ct, None).await.unwrap().as_slice(), &[9u8; 32]);
        let back = kr.decrypt(&ct2, Some(&kid2)).await.unwrap();
        assert_eq!(back.as_slice(), b"under the second key");
        let keys = kr.keys();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].state, KeyState::DecryptOnly);
        assert_eq!(keys[1].state, KeyState::Primary);
        assert!(
            keys[0].encryptions >= 2,
            "counts survive restarts as upper bounds"
        );
    }
}

async fn retire_and_destroy_rules(f: Fixture) {
    let first = f.init("k", Algorithm::Aes256Gcm).await;
    let kr = f.open("k").await.unwrap();
    let (ct, kid) = kr.encrypt(b"seed").await.unwrap();
    let e = kr.retire(&first.key_id).await.unwrap_err();
    assert!(e.to_string().contains("rotate first"), "{e}");
    assert!(kr.destroy(&first.key_id, &first.key_id).await.is_err());
    kr.rotate().await.unwrap();
    assert!(matches!(
        kr.destroy(&first.key_id, &first.key_id).await,
        Err(KeyringError::Precondition(_))
    ));
    assert_eq!(
        kr.retire(&first.key_id).await.unwrap().state,
        KeyState::Disabled
    );
    assert_eq!(
        kr.retire(&first.key_id).await.unwrap().state,
        KeyState::Disabled,
        "retire is idempotent"
    );
    assert!(matches!(
        kr.decrypt(&ct, Some(&kid)).await,
        Err(KeyringError::Decrypt)
    ));
    // The caller learns nothing more; the operator's log says why.
    assert_eq!(
        kr.decrypt_refusal(&ct, Some(&kid)),
        "its key is disabled (retired)"
    );
    assert!(matches!(
        kr.destroy(&first.key_id, "nope").await,
        Err(KeyringError::InvalidInput {
            field: "confirm",
            ..
        })
    ));
    assert_eq!(
        kr.destroy(&first.key_id, &first.key_id)
            .await
            .unwrap()
            .state,
        KeyState::Destroyed
    );
    assert!(matches!(
        kr.retire(&first.key_id).await,
        Err(KeyringError::Precondition(_))
    ));
    assert!(matches!(
        kr.retire("kw-9-00").await,
        Err(KeyringError::UnknownKey(_))
    ));
    drop(kr);

    // The stored document keeps the id but no material.
    let doc = json(&f.stored("k").await);
    assert_eq!(doc["keys"][0]["state"], "destroyed");
    assert!(doc["keys"][0]["sealed"].is_null(), "{doc}");
    let kr = f.open("k").await.unwrap();
    assert_eq!(kr.keys()[0].state, KeyState::Destroyed);
    assert!(matches!(
        kr.decrypt(&ct, Some(&kid)).await,
        Err(KeyringError::Decrypt)
    ));
    assert_eq!(kr.decrypt_refusal(&ct, Some(&kid)), "its key is destroyed");
    // Under the current key: a wrong key_id, an altered byte, a foreign header.
    let (ct, kid) = kr.encrypt(b"seed").await.unwrap();
    assert_eq!(
        kr.decrypt_refusal(&ct, Some(&first.key_id)),
        "the request's key_id is not the one it was made under"
    );
    let mut altered = ct.clone();
    *altered.last_mut().unwrap() ^= 1;
    assert_eq!(
        kr.decrypt_refusal(&altered, Some(&kid)),
        "it did not authenticate (altered, truncated, or not made by this keyring)"
    );
    assert_eq!(
        kr.decrypt_refusal(b"k8s:enc:xyz", None),
        "not a keyward ciphertext (bad header)"
    );
}

async fn a_tampered_stored_document_fails_to_unseal(f: Fixture) {
    let first = f.init("k", Algorithm::Aes256Gcm).await;
    let stored = f.stored("k").await;
    // Flip the primary's state inside the stored JSON, keeping the old MAC.
    let text = String::from_utf8(stored[32..].to_vec()).unwrap();
    assert!(text.contains(&first.key_id[5..]), "{text}");
    let mut edited = stored[..32].to_vec();
    edited.extend_from_slice(text.replace("\"primary\"", "\"disabled\"").as_bytes());
    f.store("k", edited).await;
    let e = f.open("k").await.unwrap_err();
    assert!(matches!(e, KeyringError::Unseal), "{e}");
    // The untouched document opens again.
    f.store("k", stored).await;
    f.open("k").await.unwrap();
}

async fn reservations_survive_a_restart(f: Fixture) {
    f.init("k", Algorithm::Aes256Gcm).await;
    let kr = f.open("k").await.unwrap();
    let n0 = kr.keys()[0].encryptions;
    drop(kr);
    let stored = json(&f.stored("k").await)["keys"][0]["encryptions_reserved"]
        .as_u64()
        .unwrap();
    assert!(
        stored >= n0,
        "the stored reservation covers every encryption"
    );
    // A restart resumes at the persisted reservation, never below what was used, and reserves
    // a block of its own.
    let kr = f.open("k").await.unwrap();
    assert!(kr.keys()[0].encryptions >= n0 + RESERVATION_BLOCK);
    assert!(kr.keys()[0].encryptions >= stored);
    drop(kr);
    let after = json(&f.stored("k").await)["keys"][0]["encryptions_reserved"]
        .as_u64()
        .unwrap();
    assert_eq!(after, stored + RESERVATION_BLOCK);
}

async fn a_clean_stop_gives_back_the_encryptions_it_did_not_use(f: Fixture) {
    f.init("k", Algorithm::Aes256Gcm).await;
    let reserved = |stored: Vec<u8>| json(&stored)["keys"][0]["encryptions_reserved"].as_u64();
    if !matches!(f.place, Place::Dir) {
        // Shared: a stored count only rises (rollback protection), so nothing is given back.
        let kr = f.open("k").await.unwrap();
        let before = reserved(f.stored("k").await);
        kr.release_unused().await.unwrap();
        assert_eq!(reserved(f.stored("k").await), before);
        return;
    }
    for round in 0..3 {
        let kr = f.open("k").await.unwrap();
        for _ in 0..5 {
            kr.encrypt(b"a data key").await.unwrap();
        }
        let used = kr.keys()[0].encryptions;
        kr.release_unused().await.unwrap();
        assert_eq!(kr.keys()[0].encryptions, used, "round {round}");
        // An encryption after the release reserves again: it is never left uncounted.
        kr.encrypt(b"late").await.unwrap();
        let after_late = kr.keys()[0].encryptions;
        assert_eq!(after_late, used + 1);
        kr.release_unused().await.unwrap();
        drop(kr);
        assert_eq!(
            reserved(f.stored("k").await),
            Some(after_late),
            "round {round}"
        );
        // A restart resumes at the count, not a block above it.
        let kr = f.open("k").await.unwrap();
        let reopened = kr.keys()[0].encryptions;
        assert!(
            (after_late..after_late + 100).contains(&reopened),
            "round {round}: {reopened} after {after_late}"
        );
        kr.release_unused().await.unwrap();
    }
}

async fn concurrent_rotations_leave_exactly_one_primary(f: Fixture) {
    f.init("k", Algorithm::Aes256Gcm).await;
    let replicas = f.replicas("k", 3).await;
    for round in 0..3 {
        let mut tasks = Vec::new();
        for kr in &replicas {
            let kr = kr.clone();
            tasks.push(tokio::spawn(async move { kr.rotate().await }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap().unwrap().primary.key_id);
        }
        let mut seen = Vec::new();
        for kr in &replicas {
            kr.refresh().await.unwrap();
            let primaries: Vec<_> = kr
                .keys()
                .into_iter()
                .filter(|k| k.state == KeyState::Primary)
                .map(|k| k.key_id)
                .collect();
            assert_eq!(primaries.len(), 1, "round {round}: {primaries:?}");
            seen.push(primaries[0].clone());
        }
        assert!(seen.iter().all(|p| *p == seen[0]), "{seen:?}");
        assert!(results.contains(&seen[0]), "{seen:?} vs {results:?}");
    }
    drop(replicas);
    let doc = json(&f.stored("k").await);
    let primaries = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["state"] == "primary")
        .count();
    assert_eq!(primaries, 1, "{doc}");
}
