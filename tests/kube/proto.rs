//! `kube::proto` against Python's `google.protobuf` (tests/python/kube_proto.py).

use keyward::kube::objects::{decode_secret, FieldValidation};
use keyward::kube::proto;
use keyward::store::model::{ManagedFieldsEntry, OwnerReference, Secret, SecretBytes};
use serde_json::{json, Value};

use crate::support::store::{secret_v, sled_store};
use crate::support::tools::python;
use crate::support::{config_text, name, ns};

const SCRIPT: &str = "tests/python/kube_proto.py";

#[test]
fn python_made_bodies_decode_to_the_request_json() {
    let out = python(&["google.protobuf", "grpc_tools"], &[SCRIPT, "cases"], b"");
    let cases: Vec<Value> = serde_json::from_str(&out).expect("cases JSON");
    assert_eq!(cases.len(), 7);
    for c in &cases {
        let name = c["name"].as_str().expect("name");
        let body = hex::decode(c["body"].as_str().expect("body")).expect("hex");
        let d = proto::decode(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.object, c["expected"], "{name}");
        assert_eq!(d.object["kind"], Value::String(d.kind.clone()), "{name}");
        assert_eq!(
            d.object["apiVersion"],
            Value::String(d.api_version.clone()),
            "{name}"
        );
        if d.kind == "Secret" {
            // The JSON reads as a strict JSON body would.
            let bytes = serde_json::to_vec(&d.object).expect("json");
            let s = decode_secret(&bytes, FieldValidation::Strict)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .secret;
            assert_eq!(proto::secret_of(&d).expect("secret"), s, "{name}");
        }
    }
    // A tampered envelope is refused, not misread.
    let body = hex::decode(cases[0]["body"].as_str().expect("body")).expect("hex");
    let mut bad = body.clone();
    bad[0] = b'K';
    assert!(proto::decode(&bad).is_err());
    let truncated = &body[..body.len() - 3];
    assert!(proto::decode(truncated).is_err());
}

#[test]
fn keyward_protobuf_secret_reads_back_in_python() {
    let mut s = Secret::default();
    s.metadata.name = "out".into();
    s.metadata.namespace = "ns".into();
    s.metadata.uid = "u-1".into();
    s.metadata.resource_version = "9".into();
    s.metadata.creation_timestamp = "2023-11-14T22:13:20Z".into();
    s.metadata.labels.insert("app".into(), "web".into());
    s.metadata.owner_references.push(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "d".into(),
        uid: "owner".into(),
        controller: Some(true),
        block_owner_deletion: None,
    });
    s.metadata.finalizers.push("example.com/f".into());
    s.metadata.managed_fields.push(ManagedFieldsEntry {
        manager: "kubectl".into(),
        operation: "Apply".into(),
        api_version: "v1".into(),
        time: "2023-11-14T22:15:00Z".into(),
        fields_type: "FieldsV1".into(),
        fields_v1: Some(json!({"f:data": {"f:k": {}}})),
        subresource: String::new(),
    });
    s.data
        .insert("k".into(), SecretBytes::new(vec![0, 1, 2, 255]));
    s.type_ = "Opaque".into();
    let body = proto::encode_secret(&s);
    let out = python(
        &["google.protobuf", "grpc_tools"],
        &[SCRIPT, "decode-secret"],
        hex::encode(&body).as_bytes(),
    );
    let got: Value = serde_json::from_str(&out).expect("python JSON");
    assert_eq!(
        got,
        json!({
            "typeMeta": {"apiVersion": "v1", "kind": "Secret"},
            "name": "out", "namespace": "ns", "uid": "u-1", "resourceVersion": "9",
            "creationTimestamp": "2023-11-14T22:13:20Z",
            "labels": {"app": "web"}, "annotations": {},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d",
                                 "uid": "owner", "controller": true}],
            "finalizers": ["example.com/f"],
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                               "time": "2023-11-14T22:15:00Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:data": {"f:k": {}}}}],
            "data": {"k": "AAEC/w=="},
            "stringData": {},
            "type": "Opaque",
            "immutable": null
        })
    );
    // And keyward reads its own bytes back to the same Secret.
    let back = proto::secret_of(&proto::decode(&body).expect("decode")).expect("secret");
    assert_eq!(back, s);
}

/// The plaintext an identity store keeps for a Secret is byte for byte what kube-apiserver
/// keeps for it, as Python's `google.protobuf` writes it under gogo-protobuf's rules; a Secret
/// whose times protobuf would change is kept as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_plaintext_is_kube_apiserver_storage_encoding() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = sled_store(dir.path(), &config_text("      - identity: {}\n")).await;
    let mut s = secret_v("apps", "db-credentials", b"hunter2");
    let m = &mut s.metadata;
    m.labels.insert("tier".into(), "db".into());
    m.labels.insert("app".into(), "web".into());
    m.annotations.insert("note".into(), "ünïcode".into());
    m.owner_references.push(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "web".into(),
        uid: "0f1e2d3c".into(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    });
    m.finalizers.push("example.com/keep".into());
    m.managed_fields.push(ManagedFieldsEntry {
        manager: "kubectl-client-side-apply".into(),
        operation: "Update".into(),
        api_version: "v1".into(),
        time: "2024-02-29T12:00:00Z".into(),
        fields_type: "FieldsV1".into(),
        fields_v1: Some(json!({"f:data": {".": {}, "f:v": {}}})),
        subresource: String::new(),
    });
    s.data
        .insert("bin".into(), SecretBytes::new(vec![0, 0xff, 0x80]));
    s.data.insert("empty".into(), SecretBytes::new(Vec::new()));
    s.data
        .insert("pem".into(), SecretBytes::new(vec![b'x'; 300]));
    s.type_ = "kubernetes.io/tls-like".into();
    s.immutable = Some(true);
    let mut created = store.create(s, false).await.expect("create");
    let kv = store
        .raw_get("/registry/secrets/apps/db-credentials")
        .await
        .expect("raw get")
        .expect("stored");
    created.metadata.resource_version.clear();
    let doc = serde_json::to_vec(&created).expect("JSON");
    let want = tokio::task::spawn_blocking(move || {
        python(
            &["google.protobuf", "grpc_tools"],
            &[SCRIPT, "storage-secret"],
            &doc,
        )
    })
    .await
    .expect("python");
    assert_eq!(hex::encode(&kv.value), want.trim());

    // A fractional managedFields time loses its fraction, as in kube-apiserver, and the Secret
    // is still stored in its encoding; a time before 1970, which that encoding cannot hold as
    // keyward writes it, is kept in a JSON record and reads back the same.
    for (id, time, stored_as, back) in [
        (
            "fractional",
            "2024-02-29T12:00:00.25+00:00",
            &b"k8s\0"[..],
            "2024-02-29T12:00:00Z",
        ),
        ("old", "1969-12-31T23:59:59Z", b"{", "1969-12-31T23:59:59Z"),
    ] {
        let mut s = secret_v("apps", id, b"v");
        s.metadata.managed_fields.push(ManagedFieldsEntry {
            manager: "m".into(),
            operation: "Update".into(),
            api_version: "v1".into(),
            time: time.into(),
            ..ManagedFieldsEntry::default()
        });
        let created = store.create(s, false).await.expect("create");
        assert_eq!(created.metadata.managed_fields[0].time, back);
        let kv = store
            .raw_get(&format!("/registry/secrets/apps/{id}"))
            .await
            .expect("raw get")
            .expect("stored");
        assert!(
            kv.value.starts_with(stored_as),
            "{id}: {:?}",
            &kv.value[..8]
        );
        let read = store.get(&ns("apps"), &name(id), None).await.expect("get");
        assert_eq!(read.metadata.managed_fields[0].time, back, "{id}");
    }
}
