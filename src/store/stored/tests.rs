use super::*;
use crate::store::model::{ManagedFieldsEntry, OwnerReference};
use serde_json::json;

fn small() -> Secret {
    let mut s = Secret {
        api_version: "v1".into(),
        kind: "Secret".into(),
        metadata: model::ObjectMeta::default(),
        data: BTreeMap::new(),
        string_data: BTreeMap::new(),
        type_: "Opaque".into(),
        immutable: None,
    };
    s.metadata.name = "db".into();
    s.metadata.namespace = "ns".into();
    s.metadata.uid = "u1".into();
    s.metadata.creation_timestamp = "2023-11-14T22:13:20Z".into();
    s.data.insert("k".into(), SecretBytes::new(b"v".to_vec()));
    s
}

fn full() -> Secret {
    let mut s = small();
    let m = &mut s.metadata;
    m.generate_name = "d".into();
    m.deletion_timestamp = "2023-11-14T22:15:00Z".into();
    m.deletion_grace_period_seconds = Some(0);
    m.labels.insert("app".into(), "web".into());
    m.labels.insert("empty".into(), String::new());
    m.annotations.insert("note".into(), "hello".into());
    m.owner_references.push(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "d".into(),
        uid: "owner".into(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    });
    m.finalizers.push("example.com/keep".into());
    m.managed_fields.push(ManagedFieldsEntry {
        manager: "kubectl".into(),
        operation: "Apply".into(),
        api_version: "v1".into(),
        time: "2023-11-14T22:15:00Z".into(),
        fields_type: "FieldsV1".into(),
        fields_v1: Some(json!({"f:data": {"f:k": {}}})),
        subresource: String::new(),
    });
    m.managed_fields.push(ManagedFieldsEntry {
        manager: "other".into(),
        ..ManagedFieldsEntry::default()
    });
    s.data
        .insert("bin".into(), SecretBytes::new(vec![0, 1, 255]));
    s.data.insert("empty".into(), SecretBytes::new(Vec::new()));
    s.data
        .insert("large".into(), SecretBytes::new(vec![7u8; 3000]));
    s.type_ = "kubernetes.io/tls".into();
    s.immutable = Some(true);
    s
}

/// The small Secret's bytes, written out field by field from kubernetes/api's field numbers
/// (and checked against Python's google.protobuf in tests/kube/proto.rs).
const SMALL: &[u8] = b"k8s\x00\
\x0a\x0c\x0a\x02v1\x12\x06Secret\
\x12\x30\
\x0a\x1e\
\x0a\x02db\x12\x00\x1a\x02ns\x22\x00\x2a\x02u1\x32\x00\x38\x00\
\x42\x08\x08\x80\xe2\xcf\xaa\x06\x10\x00\
\x12\x06\x0a\x01k\x12\x01v\
\x1a\x06Opaque\
\x1a\x00\x22\x00";

#[test]
fn a_small_secret_is_written_as_kube_apiserver_writes_it() {
    let got = encode_exact(&small()).expect("exact");
    assert_eq!(got.as_slice(), SMALL, "{}", hex::encode(got.as_slice()));
    assert_eq!(decode(SMALL).expect("decode"), small());
}

#[test]
fn every_field_round_trips() {
    let s = full();
    let bytes = encode_exact(&s).expect("exact");
    assert_eq!(decode(&bytes).expect("decode"), s);
    // The response encoding is the same bytes, with a resourceVersion when there is one.
    assert_eq!(encode(&s).as_slice(), bytes.as_slice());
    let mut with_rv = s.clone();
    with_rv.metadata.resource_version = "42".into();
    let read = Unknown::decode(&encode(&with_rv)[4..]).expect("envelope");
    let meta = PbSecret::decode(read.raw.as_slice())
        .expect("secret")
        .metadata
        .take()
        .expect("metadata");
    assert_eq!(meta.resource_version, "42");
    // A value of 3000 bytes takes a two-byte length; the buffer was sized exactly.
    assert_eq!(bytes.capacity(), bytes.len());
}

#[test]
fn secrets_protobuf_would_change_are_not_exact() {
    for (t, response) in [
        ("2023-11-14T22:13:20.5Z", "2023-11-14T22:13:20Z"),
        // Read as Go reads it (keyward's old parser dropped offsets here).
        ("2023-11-14T23:13:20+01:00", "2023-11-14T22:13:20Z"),
        ("1970-01-01T00:00:00Z", ""),
        ("1969-12-31T23:59:59Z", ""),
        ("yesterday", ""),
    ] {
        let mut s = small();
        s.metadata.managed_fields.push(ManagedFieldsEntry {
            manager: "m".into(),
            time: t.into(),
            ..ManagedFieldsEntry::default()
        });
        assert!(encode_exact(&s).is_none(), "{t}");
        // The response encoding writes the whole seconds of a time, or leaves it out.
        let back = decode(&encode(&s)).expect("decode");
        assert_eq!(back.metadata.managed_fields[0].time, response, "{t}");
    }
    let mut s = small();
    s.string_data
        .insert("x".into(), model::SecretString(Zeroizing::new("y".into())));
    assert!(encode_exact(&s).is_none());
    let mut s = small();
    s.kind = "ConfigMap".into();
    assert!(encode_exact(&s).is_none());
}

/// An envelope of `kind` around `raw`, as Python's or Go's encoders write it.
pub(crate) fn envelope(
    api_version: &str,
    kind: &str,
    raw: Vec<u8>,
    content_encoding: &str,
) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: api_version.into(),
                kind: kind.into(),
            }),
            raw,
            content_encoding: content_encoding.into(),
            content_type: String::new(),
        }
        .encode_to_vec(),
    );
    out
}

#[test]
fn what_is_not_a_stored_secret_is_an_error_naming_it() {
    let raw = || Unknown::decode(&SMALL[4..]).expect("envelope").raw;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{}".to_vec(), "prefix"),
        (SMALL[..SMALL.len() - 20].to_vec(), "envelope"),
        (envelope("v1", "ConfigMap", raw(), ""), "ConfigMap"),
        (envelope("apps/v1", "Secret", raw(), ""), "apps/v1"),
        (envelope("v1", "Secret", raw(), "gzip"), "contentEncoding"),
        (
            envelope("v1", "Secret", vec![0x0a, 0x05, 0x01], ""),
            "the Secret",
        ),
    ];
    for (bytes, want) in cases {
        let err = decode(&bytes).expect_err(want);
        assert!(err.contains(want), "{want}: {err}");
    }
    let mut s = small();
    s.metadata
        .managed_fields
        .push(ManagedFieldsEntry::default());
    let mut read = PbSecret::decode(
        Unknown::decode(&encode_exact(&s).expect("exact")[4..])
            .expect("envelope")
            .raw
            .as_slice(),
    )
    .expect("secret");
    if let Some(m) = read.metadata.as_mut() {
        m.managed_fields[0].fields_v1 = Some(FieldsV1 {
            raw: b"{not json".to_vec(),
        });
        m.creation_timestamp = Some(Time {
            seconds: MAX_SECONDS + 1,
            nanos: 0,
        });
    }
    let err = decode(&envelope("v1", "Secret", read.encode_to_vec(), "")).expect_err("bad");
    assert!(err.contains("metadata.managedFields[0].fieldsV1"), "{err}");
    assert!(!err.contains("not json"), "the bytes are not echoed: {err}");
}

#[test]
fn objects_kube_apiserver_wrote_read_with_its_extra_fields_ignored() {
    let mut read = PbSecret::decode(
        Unknown::decode(&SMALL[4..])
            .expect("envelope")
            .raw
            .as_slice(),
    )
    .expect("secret");
    if let Some(m) = read.metadata.as_mut() {
        m.generation = 3;
        m.self_link = "/api/v1/namespaces/ns/secrets/db".into();
        m.resource_version = "77".into();
    }
    let back = decode(&envelope("v1", "Secret", read.encode_to_vec(), "")).expect("decode");
    assert_eq!(
        back,
        small(),
        "resourceVersion comes from the revision, not the bytes"
    );
}
