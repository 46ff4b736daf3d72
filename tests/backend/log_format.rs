//! The log-structured engine's files read by an independent decoder
//! (tests/python/logstore_decode.py, written from the format in
//! `src/backend/logstore/format.rs`): after overwrites, deletes, a compaction and enough
//! cleaning that segments are used again, every segment checks out there and the current value
//! and mod revision of every key are what the engine serves.

use std::collections::BTreeMap;

use base64::Engine as _;
use keyward::backend::logstore::{LogBackend, LogOptions};
use keyward::backend::{Backend, Expect, RangeRequest, Revision};

use crate::support::tools::python;

#[tokio::test]
async fn an_independent_decoder_reads_the_segments_as_the_engine_serves_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let opts = LogOptions {
        history_per_key: 2,
        log_retention: 150,
        segment_bytes: 8192,
        clean_above_bytes: 0,
    };
    let b = LogBackend::open(&store, opts).expect("open");
    for i in 0..2500u32 {
        let key = format!("/registry/secrets/ns{}/s{}", i % 3, i % 23).into_bytes();
        if i % 17 == 0 {
            b.delete(&key, Expect::Any).await.expect("delete");
        } else {
            let value: Vec<u8> = (0..(i * 7) % 900).map(|j| (i + j) as u8).collect();
            b.put(&key, value, Expect::Any).await.expect("put");
        }
        if i == 1200 {
            let rev = b.current_revision().await.expect("revision").get() - 100;
            b.compact(Revision::new(rev).expect("a revision"))
                .await
                .expect("compact");
        }
    }
    let served: BTreeMap<String, (i64, String)> = b
        .range(RangeRequest::default())
        .await
        .expect("range")
        .kvs
        .into_iter()
        .map(|kv| {
            let key = base64::engine::general_purpose::STANDARD.encode(&kv.key);
            let value = base64::engine::general_purpose::STANDARD.encode(&kv.value);
            (key, (kv.mod_revision.get(), value))
        })
        .collect();
    drop(b);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/logstore_decode.py"
    );
    let path = store.to_str().expect("a UTF-8 path").to_owned();
    let out = tokio::task::spawn_blocking(move || {
        python(&["base64", "json", "struct"], &[script, &path], b"")
    })
    .await
    .expect("python");
    let decoded: serde_json::Value = serde_json::from_str(&out).expect("JSON from the decoder");
    let keys: BTreeMap<String, (i64, String)> = decoded["keys"]
        .as_object()
        .expect("keys")
        .iter()
        .map(|(k, v)| {
            let rev = v["mod_revision"].as_i64().expect("a revision");
            (
                k.clone(),
                (rev, v["value"].as_str().expect("a value").to_owned()),
            )
        })
        .collect();
    assert_eq!(
        keys, served,
        "the decoder's current values against the engine's"
    );
    assert!(served.len() > 20, "{} keys", served.len());
    assert!(
        decoded["used_again"].as_u64().expect("a count") > 0,
        "no segment used again: {decoded}"
    );
    println!(
        "decoded {} segments, {} records, {} versions; {} used again",
        decoded["segments"], decoded["records"], decoded["versions"], decoded["used_again"]
    );
}
