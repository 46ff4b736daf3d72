//! The store keeps Kubernetes metadata: managedFields the Kubernetes layer records are stored as
//! given, a `keyward.v1` write (no managedFields) keeps ownerReferences, finalizers and other
//! managers' entries and is recorded as manager `keyward`, generateName names a Secret.

use keyward::kube::apply::{record_update, server_side_apply};
use keyward::store::model::{OwnerReference, Secret, SecretBytes};
use keyward::store::{Preconditions, KEYWARD_MANAGER};
use serde_json::json;

use crate::support::store::{config_text, sled_store};

fn kube_secret(name: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = name.into();
    s.metadata.namespace = "default".into();
    s.metadata.finalizers = vec!["example.com/keep".into()];
    s.metadata.owner_references = vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: "d".into(),
        uid: "owner-uid".into(),
        controller: Some(true),
        block_owner_deletion: None,
    }];
    s.data.insert("a".into(), SecretBytes::new(b"1".to_vec()));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_metadata_survives_both_apis() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(dir.path(), &config_text("      - identity: {}\n")).await;
    let ns = "default".try_into().unwrap();
    let name = "s".try_into().unwrap();

    // A Kubernetes create: the layer records the Update entry itself; the store keeps it.
    let mut s = kube_secret("s");
    record_update(None, &mut s, "kubectl-create", "2024-01-01T00:00:00Z");
    let created = store.create(s.clone(), false).await.unwrap();
    assert_eq!(created.metadata.managed_fields, s.metadata.managed_fields);
    assert_eq!(created.metadata.finalizers, ["example.com/keep"]);

    // A keyward.v1 update carries none of it: kept, and recorded as `keyward`.
    let mut grpc = created.clone();
    grpc.metadata.managed_fields.clear();
    grpc.metadata.owner_references.clear();
    grpc.metadata.finalizers.clear();
    grpc.metadata.resource_version.clear();
    grpc.data
        .insert("b".into(), SecretBytes::new(b"2".to_vec()));
    let updated = store.update(grpc, false).await.unwrap();
    assert_eq!(updated.metadata.finalizers, ["example.com/keep"]);
    assert_eq!(updated.metadata.owner_references.len(), 1);
    let managers: Vec<&str> = updated
        .metadata
        .managed_fields
        .iter()
        .map(|e| e.manager.as_str())
        .collect();
    assert_eq!(managers, ["kubectl-create", KEYWARD_MANAGER]);
    assert_eq!(
        updated.metadata.managed_fields[1].fields_v1,
        Some(json!({"f:data": {"f:b": {}}}))
    );
    let read = store.get(&ns, &name, None).await.unwrap();
    assert_eq!(read, updated);
    let history = store.history(&ns, &name).await.unwrap();
    assert_eq!(history[0].time, updated.last_write_time());

    // A Kubernetes write that changes nothing is no write (managedFields times aside).
    let mut same = read.clone();
    record_update(
        Some(&read),
        &mut same,
        "kubectl-edit",
        "2030-01-01T00:00:00Z",
    );
    let unchanged = store.update(same, false).await.unwrap();
    assert_eq!(
        unchanged.metadata.resource_version,
        read.metadata.resource_version
    );

    // A Kubernetes PUT without finalizers removes them.
    let mut put = read.clone();
    put.metadata.finalizers.clear();
    put.metadata.managed_fields.clear();
    record_update(
        Some(&read),
        &mut put,
        "kubectl-replace",
        "2024-01-03T00:00:00Z",
    );
    let replaced = store.update(put, false).await.unwrap();
    assert!(replaced.metadata.finalizers.is_empty());

    // Server-side apply on top: the result is stored as is.
    let applied = server_side_apply(
        Some(&replaced),
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s", "namespace": "default", "labels": {"team": "x"}}}),
        "kubectl",
        false,
        "2024-01-04T00:00:00Z",
    )
    .unwrap();
    let stored = store.update(applied.clone(), false).await.unwrap();
    assert_eq!(stored.metadata.labels["team"], "x");
    assert_eq!(
        stored.metadata.managed_fields,
        applied.metadata.managed_fields
    );
    store
        .delete(&ns, &name, &Preconditions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_and_validation() {
    let dir = tempfile::tempdir().unwrap();
    let store = sled_store(dir.path(), &config_text("      - identity: {}\n")).await;
    let mut s = Secret::default();
    s.metadata.generate_name = "app-".into();
    let a = store.create(s.clone(), false).await.unwrap();
    let b = store.create(s.clone(), false).await.unwrap();
    for made in [&a, &b] {
        let suffix = made.metadata.name.strip_prefix("app-").unwrap();
        assert_eq!(suffix.len(), 5);
        assert!(suffix
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_eq!(made.metadata.generate_name, "app-");
    }
    assert_ne!(a.metadata.name, b.metadata.name);
    // Managed by keyward (a keyward.v1-style create).
    assert_eq!(a.metadata.managed_fields[0].manager, KEYWARD_MANAGER);

    let mut bad = kube_secret("bad");
    bad.metadata.owner_references[0].uid.clear();
    bad.metadata.finalizers = vec!["nope".into()];
    let err = store.create(bad, false).await.unwrap_err().to_string();
    assert!(
        err.contains("metadata.ownerReferences.uid: Invalid value: \"\": uid must not be empty"),
        "{err}"
    );
    assert!(
        err.contains("metadata.finalizers[0]: Invalid value: \"nope\": name is neither a standard finalizer name nor is it fully qualified"),
        "{err}"
    );
}
