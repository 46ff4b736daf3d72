//! What the Kubernetes API reads from a client: Secret bodies under each `fieldValidation`, and
//! patch bodies of the three patch types applied to a stored Secret's JSON, with their strict
//! decode. Nothing panics or hangs; a body's strict errors are the same under `Strict` (refused,
//! listing them) and `Warn` (accepted, one warning each); a secret value never appears in an
//! error; and a name is refused as unkeyable exactly when kube-apiserver's storage would.

use keyward::kube::objects::{decode_secret, patch_strict_errors, FieldValidation};
use keyward::kube::patch::{json_patch, merge, strategic_merge};
use keyward::kube::secrets::unkeyable_name;
use keyward::kube::yaml_keys::repeated_keys;
use keyward::kube::KubeError;
use serde_json::{json, Value};

use crate::harness::{fuzz, regressions, Corpus};

/// A value that must never be repeated in an error (`c2VjcmV0LXZhbHVl` is its base64).
const SECRET: &str = "secret-value";

fn live() -> Value {
    json!({
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "s", "namespace": "ns", "resourceVersion": "7",
                     "labels": {"app": "x"}, "finalizers": ["a/b"],
                     "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u1"}]},
        "data": {"k": "c2VjcmV0LXZhbHVl"},
        "type": "Opaque",
    })
}

/// Checks that an error's message carries no secret value.
fn no_secret(e: &KubeError) {
    let m = e.to_string();
    assert!(
        !m.contains(SECRET) && !m.contains("c2VjcmV0LXZhbHVl"),
        "an error repeats a secret value: {m}"
    );
}

#[test]
fn secret_bodies() {
    let corpus = Corpus::new(
        vec![
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"},"data":{"k":"c2VjcmV0LXZhbHVl"}}"#.to_vec(),
            br#"{"metadata":{"name":"a","foo":1},"type":"Opaque","type":"Opaque","stringData":{"p":"secret-value"}}"#.to_vec(),
            br#"{"metadata":{"name":"a","ownerReferences":[{"uid":"u","bogus":1}]},"immutable":true}"#.to_vec(),
        ],
        &[
            "{", "}", "[", "]", ",", ":", "\"", "\"data\"", "\"stringData\"", "\"metadata\"",
            "\"name\"", "\"type\"", "\"immutable\"", "\"labels\"", "\"ownerReferences\"",
            "\"managedFields\"", "\"bogus\"", "\"secret-value\"", "\"c2VjcmV0LXZhbHVl\"", "null",
            "true", "1", "\\u0000", "\\\"",
        ],
    );
    fuzz("Secret bodies", 3000, &corpus, |input| {
        let strict = decode_secret(input, FieldValidation::Strict);
        let warn = decode_secret(input, FieldValidation::Warn);
        let ignore = decode_secret(input, FieldValidation::Ignore);
        for r in [&strict, &warn, &ignore] {
            if let Err(e) = r {
                no_secret(e);
            }
        }
        match (&strict, &warn) {
            (Ok(s), Ok(w)) => {
                assert!(
                    s.warnings.is_empty() && w.warnings.is_empty(),
                    "{:?}",
                    w.warnings
                )
            }
            (Err(KubeError::Undecodable(m)), Ok(w)) => assert_eq!(
                m.strip_prefix("strict decoding error: "),
                Some(w.warnings.join(", ").as_str()),
                "Strict refuses what Warn warns about"
            ),
            (Err(s), Err(w)) => assert_eq!(s.to_string(), w.to_string()),
            (s, w) => panic!("Strict {s:?} against Warn {w:?}"),
        }
        assert_eq!(warn.is_ok(), ignore.is_ok());
    });
}

#[test]
fn patch_bodies() {
    let corpus = Corpus::new(
        vec![
            br#"{"data":{"k":"eA==","k":"eQ=="},"bogus":1}"#.to_vec(),
            br#"{"metadata":{"labels":{"$patch":"replace","b":"c"},"$setElementOrder/finalizers":["a/b"],"finalizers":["c/d"]}}"#.to_vec(),
            br#"{"metadata":{"ownerReferences":[{"uid":"u1","$patch":"delete"}]},"stringData":{"p":"secret-value"}}"#.to_vec(),
            br#"[{"op":"add","path":"/data/x","value":"eA=="},{"op":"test","path":"/type","value":"Opaque"},{"op":"move","from":"/data/k","path":"/data/m"}]"#.to_vec(),
            br#"[{"op":"add","op":"add","path":"/bogus","value":{"a":1,"a":2},"x":1}]"#.to_vec(),
        ],
        &[
            "{", "}", "[", "]", ",", ":", "\"", "\"op\"", "\"add\"", "\"remove\"", "\"replace\"",
            "\"move\"", "\"copy\"", "\"test\"", "\"path\"", "\"from\"", "\"value\"", "\"/data\"",
            "\"/data/k\"", "\"/metadata/labels\"", "\"/-\"", "\"~1\"", "\"$patch\"", "\"delete\"",
            "\"merge\"", "\"$retainKeys\"", "\"$setElementOrder/finalizers\"",
            "\"$deleteFromPrimitiveList/finalizers\"", "\"data\"", "\"stringData\"",
            "\"metadata\"", "\"ownerReferences\"", "\"uid\"", "\"u1\"", "\"finalizers\"", "null",
            "5", "\"secret-value\"",
        ],
    );
    let live = live();
    fuzz("patch bodies", 3000, &corpus, |input| {
        let merge_strict = patch_strict_errors(input, false);
        let ops_strict = patch_strict_errors(input, true);
        assert!(ops_strict.iter().all(|e| e.starts_with("json patch ")));
        assert!(merge_strict.len() <= 100 && ops_strict.len() <= 100);
        let Ok(patch) = serde_json::from_slice::<Value>(input) else {
            assert!(merge_strict.is_empty() && ops_strict.is_empty());
            return;
        };
        for strict_decode in [false, true] {
            for r in [
                merge(&live, &patch, strict_decode),
                json_patch(&live, &patch, strict_decode),
            ] {
                if let Err(e) = r {
                    no_secret(&e);
                }
            }
        }
        match strategic_merge(&live, &patch) {
            Ok(out) => assert!(out.is_object(), "{out}"),
            Err(e) => no_secret(&e),
        }
    });
}

#[test]
fn unkeyable_names() {
    let corpus = Corpus::text(
        &["a", ".", "..", "a%b", "a/b", "..."],
        &[".", "/", "%", "a"],
    );
    fuzz("unkeyable names", 3000, &corpus, |input| {
        let name = String::from_utf8_lossy(input);
        let bad = name == "." || name == ".." || name.contains('/') || name.contains('%');
        match unkeyable_name(&name) {
            Some(m) => {
                assert!(bad, "{name:?}");
                assert!(m.starts_with("Name parameter invalid: "), "{m}");
            }
            None => assert!(!bad, "{name:?}"),
        }
    });
}

/// YAML bodies' repeated keys: nothing panics, and each report names a line of the body and
/// never a value.
#[test]
fn yaml_repeated_keys() {
    let corpus = Corpus::text(
        &[
            "a: 1\na: secret-value\n",
            "data:\n  k: x\n  k:\n    secret-value\n",
            "{\"a\": {\"b\": 1, \"b\": 2}, \"a\": [1]}",
        ],
        &[
            "a", ":", " ", "\n", "  ", "-", "{", "}", "[", "]", ",", "\"", "&x", "*x", "<<", "1",
            "true", "~",
        ],
    );
    fuzz("YAML repeated keys", 3000, &corpus, |input| {
        let lines = input.iter().filter(|b| **b == b'\n').count() + 1;
        let repeats = repeated_keys(input);
        for r in &repeats {
            assert!(!r.contains(SECRET), "{r}");
            let line: usize = r
                .strip_prefix("line ")
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{r}"));
            assert!((1..=lines).contains(&line), "{r} of {lines} lines");
            assert!(r.ends_with(" already set in map"), "{r}");
        }
    });
}

#[test]
fn regression_inputs() {
    regressions(
        "kube regressions",
        &[
            b"",
            b"{",
            b"[",
            b"{\"data\":null}",
            b"[{}]",
            b"{\"$patch\":5}",
        ],
        |input| {
            let _ = decode_secret(input, FieldValidation::Strict);
            let _ = patch_strict_errors(input, true);
            if let Ok(patch) = serde_json::from_slice::<Value>(input) {
                let _ = strategic_merge(&live(), &patch);
            }
        },
    );
}
