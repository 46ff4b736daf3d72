//! The plugin's inputs: KMS v2/v1 ciphertexts (the keyring envelope), read by the keyring and
//! over gRPC with any `key_id` and annotations; the keyring document as storage returns it
//! (etcd is writable by others); the `--seal` flag and Shamir shares.
//!
//! Properties: decrypt(encrypt(x)) = x; a ciphertext that is not exactly one the keyring made
//! never decrypts; a document whose bytes changed without the root key never opens.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Unstructured;
use keyward::backend::sled::{SledBackend, SledOptions};
use keyward::backend::{Backend, Expect};
use keyward::crypto::{self, Algorithm};
use keyward::keyring::{shared_key, InitOptions, Keyring, KeyringLocation, RotationPolicy};
use keyward::pb::kms_v1beta1 as v1;
use keyward::pb::kms_v2 as v2;
use keyward::seal::{self, SealSpec, Share};
use tonic::Code;

use crate::harness::{fuzz, regressions, runtime, Corpus, JSON_WORDS};
use crate::support::{Plugin, TempKeyring};

/// The keyring document's field names and values (with [`JSON_WORDS`]).
#[rustfmt::skip]
const DOCUMENT_WORDS: &[&str] = &[
    "\"format\"", "\"keyring_id\"", "\"algorithm\"", "\"seal\"", "\"kind\"", "\"keyfile\"",
    "\"passphrase-file\"", "\"shamir\"", "\"pkcs11\"", "\"next_seq\"", "\"keys\"", "\"id\"",
    "\"seq\"", "\"state\"", "\"primary\"", "\"decrypt-only\"", "\"disabled\"", "\"destroyed\"",
    "\"created_unix\"", "\"encryptions_reserved\"", "\"sealed\"", "\"root_id\"",
    "\"xchacha20-poly1305\"", "\"aes-256-gcm\"",
];

const PLAINTEXTS: &[&[u8]] = &[&[7u8; 32], b"x", &[0u8; 1000]];

/// Envelope words: the version and algorithm bytes, and lengths that matter.
fn envelope_dict() -> Vec<Vec<u8>> {
    vec![
        vec![1],
        vec![1, 1],
        vec![1, 2],
        vec![0],
        vec![2],
        vec![0xff; 16],
        vec![0; 12],
    ]
}

#[test]
fn keyring_ciphertexts() {
    let rt = runtime();
    for alg in Algorithm::ALL {
        let k = rt.block_on(TempKeyring::init(alg));
        let keyring = k.open();
        let key_id = keyring.health().primary_key_id.to_string();
        let seeds: Vec<Vec<u8>> = PLAINTEXTS
            .iter()
            .map(|pt| rt.block_on(keyring.encrypt(pt)).expect("encrypt").0)
            .collect();
        let corpus = Corpus {
            seeds: seeds.clone(),
            dict: envelope_dict(),
        };
        let name = match alg {
            Algorithm::Aes256Gcm => "keyring envelope (AES-256-GCM)",
            _ => "keyring envelope (XChaCha20-Poly1305)",
        };
        fuzz(name, 1500, &corpus, |input| {
            rt.block_on(async {
                for id in [None, Some(key_id.as_str()), Some("kw-1-00"), Some("")] {
                    match keyring.decrypt(input, id).await {
                        Ok(pt) => {
                            let i = seeds.iter().position(|s| s == input);
                            assert!(i.is_some(), "a ciphertext the keyring never made opened");
                            assert_eq!(pt.as_slice(), PLAINTEXTS[i.expect("checked")]);
                        }
                        Err(e) => assert!(!e.to_string().is_empty()),
                    }
                }
                // decrypt(encrypt(x)) = x for plaintexts the keyring accepts.
                if let Ok((ct, id)) = keyring.encrypt(input).await {
                    let pt = keyring.decrypt(&ct, Some(&id)).await.expect("decrypt");
                    assert_eq!(pt.as_slice(), input);
                }
            });
        });
    }
}

#[test]
fn kms_grpc_decrypt_with_any_key_id_and_annotations() {
    let rt = runtime();
    let plugin = rt.block_on(Plugin::start(Algorithm::Aes256Gcm));
    let (c2, c1) = rt.block_on(async { (plugin.v2().await, plugin.v1().await) });
    let (seed, key_id) = rt.block_on(async {
        let r = c2
            .clone()
            .encrypt(v2::EncryptRequest {
                plaintext: vec![9u8; 32],
                uid: "seed".into(),
            })
            .await
            .expect("encrypt")
            .into_inner();
        (r.ciphertext, r.key_id)
    });
    let mut with_id = key_id.as_bytes().to_vec();
    with_id.push(0);
    with_id.extend_from_slice(&seed);
    let corpus = Corpus {
        seeds: vec![with_id],
        dict: envelope_dict(),
    };
    fuzz("KMS gRPC Decrypt", 400, &corpus, |input| {
        // `key_id NUL ciphertext`, then arbitrary annotations and a uid from the same bytes.
        let (id, ct) = match input.iter().position(|&b| b == 0) {
            Some(i) => (&input[..i], &input[i + 1..]),
            None => (&b""[..], input),
        };
        let mut u = Unstructured::new(input);
        let annotations: std::collections::BTreeMap<String, Vec<u8>> =
            u.arbitrary().unwrap_or_default();
        let uid: String = u.arbitrary().unwrap_or_default();
        let id = String::from_utf8_lossy(id).into_owned();
        rt.block_on(async {
            let res = c2
                .clone()
                .decrypt(v2::DecryptRequest {
                    ciphertext: ct.to_vec(),
                    uid,
                    key_id: id.clone(),
                    annotations,
                })
                .await;
            match res {
                Ok(r) => {
                    assert!(
                        ct == seed.as_slice(),
                        "a ciphertext the plugin never made opened"
                    );
                    assert_eq!(r.into_inner().plaintext, vec![9u8; 32]);
                }
                Err(s) => assert!(
                    matches!(s.code(), Code::InvalidArgument | Code::NotFound),
                    "{:?}: {}",
                    s.code(),
                    s.message()
                ),
            }
            let res = c1
                .clone()
                .decrypt(v1::DecryptRequest {
                    version: id,
                    cipher: ct.to_vec(),
                })
                .await;
            if let Err(s) = res {
                assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
            }
        });
    });
    rt.block_on(plugin.stop());
}

/// The MAC key of a keyring document under `root` (the derivation `keyring::document` states).
fn mac_key(keyfile: &Path) -> crypto::Key32 {
    let root = seal::read_keyfile(keyfile).expect("the root key");
    crypto::hkdf_expand(root.key(), b"keyward/v1 keyring-mac")
}

#[test]
fn keyring_documents() {
    let rt = runtime();
    let tmp = tempfile::tempdir().expect("temp dir");
    let keyfile = tmp.path().join("root.key");
    seal::generate_keyfile(&keyfile).expect("a key file");
    let spec = SealSpec::KeyFile(keyfile.clone());
    let backend: Arc<dyn Backend> =
        Arc::new(SledBackend::open(&tmp.path().join("kv"), SledOptions::default()).expect("sled"));
    let location = KeyringLocation::Shared {
        backend: backend.clone(),
        prefix: "/kw".into(),
        label: "fuzz".into(),
        stale_after: Duration::from_secs(3600),
        state: None,
    };
    let key = shared_key("/kw");
    let stored = rt.block_on(async {
        Keyring::init(
            &location,
            &spec,
            &InitOptions {
                algorithm: Algorithm::XChaCha20Poly1305,
                kdf: None,
            },
        )
        .await
        .expect("init");
        // A second key, so that documents hold more than one record.
        let k = Keyring::open(&location, &spec, RotationPolicy::default())
            .await
            .expect("open");
        k.rotate().await.expect("rotate");
        drop(k);
        backend
            .get(key.as_bytes(), None)
            .await
            .expect("get")
            .0
            .expect("the document")
            .value
    });
    let mac = mac_key(&keyfile);
    let json = stored[32..].to_vec();
    // Seeds are the JSON; the first byte of an input says whether it gets a valid MAC.
    let corpus = Corpus::new(
        vec![
            [b"m".as_slice(), &json].concat(),
            [b"r".as_slice(), &stored].concat(),
        ],
        &[JSON_WORDS, DOCUMENT_WORDS].concat(),
    );
    fuzz("keyring document", 250, &corpus, |input| {
        let (with_mac, body) = match input.split_first() {
            Some((b, rest)) => (b % 2 == 1, rest),
            None => (false, input),
        };
        let value = if with_mac {
            [crypto::hmac_sha256(&mac, body).as_slice(), body].concat()
        } else {
            body.to_vec()
        };
        rt.block_on(async {
            backend
                .put(key.as_bytes(), value.clone(), Expect::Any)
                .await
                .expect("put");
            match Keyring::open(&location, &spec, RotationPolicy::default()).await {
                Ok(k) => {
                    assert!(
                        with_mac || value == stored,
                        "a document changed without the root key opened"
                    );
                    assert!(!k.keys().is_empty());
                    if let Ok((ct, id)) = k.encrypt(b"probe").await {
                        let pt = k.decrypt(&ct, Some(&id)).await.expect("decrypt");
                        assert_eq!(pt.as_slice(), b"probe");
                    }
                }
                // The untouched document may be refused too (a replayed older document).
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        });
    });
}

#[test]
fn seal_flags_and_shares() {
    let corpus = Corpus::text(
        &[
            "keyfile:/etc/keyward/root.key",
            "passphrase-file:/run/pass",
            "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=kw;key-label=root;pin-file=/p",
            "shamir:shares=5,threshold=3",
            "shamir",
        ],
        &[
            "keyfile:",
            "passphrase-file:",
            "pkcs11:",
            "shamir:",
            "module=",
            "token=",
            "key-label=",
            "pin-file=",
            "shares=",
            "threshold=",
            ";",
            ",",
            "=",
            "0",
            "255",
            "256",
            "kw1-",
            "-",
        ],
    );
    fuzz("seal flag and Shamir shares", 3000, &corpus, |input| {
        let s = String::from_utf8_lossy(input);
        if let Err(e) = SealSpec::from_str(&s) {
            assert!(!e.to_string().is_empty());
        }
        if let Err(e) = Share::parse(&s) {
            assert!(!e.to_string().is_empty());
        }
    });
}

#[test]
fn regression_inputs() {
    // Inputs that once failed a target of this module (none yet).
    regressions(
        "kms regressions",
        &[
            b"",
            b"shamir:shares=0,threshold=0",
            b"shamir:shares=256,threshold=1",
        ],
        |input| {
            let _ = SealSpec::from_str(&String::from_utf8_lossy(input));
        },
    );
}
