use super::*;
use crate::store::model::SecretBytes;
use serde_json::json;

const T0: &str = "2024-01-01T00:00:00Z";
const T1: &str = "2024-01-02T00:00:00Z";

fn config(extra: Value) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "ssa", "namespace": "default"}});
    for (k, x) in extra.as_object().unwrap() {
        match (k.as_str(), x) {
            ("metadata", Value::Object(m)) => {
                for (mk, mv) in m {
                    v["metadata"][mk] = mv.clone();
                }
            }
            _ => v[k] = x.clone(),
        }
    }
    v
}

fn entry(s: &Secret, manager: &str) -> ManagedFieldsEntryView {
    let e = s
        .metadata
        .managed_fields
        .iter()
        .find(|e| e.manager == manager)
        .unwrap_or_else(|| panic!("no entry for {manager}: {:?}", s.metadata.managed_fields));
    ManagedFieldsEntryView {
        operation: e.operation.clone(),
        time: e.time.clone(),
        fields: e.fields_v1.clone().unwrap_or(Value::Null),
    }
}

struct ManagedFieldsEntryView {
    operation: String,
    time: String,
    fields: Value,
}

/// A Secret created by `kubectl apply` (client-side): an `Update` entry.
fn csa_created(data: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = "ssa".into();
    s.metadata.namespace = "default".into();
    s.metadata.uid = "uid-1".into();
    s.metadata.resource_version = "7".into();
    for (k, v) in data {
        s.data
            .insert((*k).into(), SecretBytes::new(v.as_bytes().to_vec()));
    }
    s.type_ = "Opaque".into();
    record_update(None, &mut s, "kubectl-client-side-apply", T0);
    s
}

#[test]
fn create_by_apply_records_the_applied_fields() {
    let out = server_side_apply(
        None,
        &config(json!({"metadata": {"labels": {"team": "x"}}, "data": {"k": "dg=="}})),
        "kubectl",
        false,
        T0,
    )
    .unwrap();
    assert_eq!(out.type_, "Opaque");
    assert_eq!(out.data["k"].as_slice(), b"v");
    assert_eq!(out.metadata.labels["team"], "x");
    let e = &out.metadata.managed_fields;
    assert_eq!(e.len(), 1);
    let v = serde_json::to_value(&e[0]).unwrap();
    assert_eq!(
        v,
        json!({"manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": T0,
               "fieldsType": "FieldsV1",
               "fieldsV1": {"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:team": {}}}}})
    );
}

#[test]
fn conflict_with_an_update_manager_and_force() {
    let live = csa_created(&[("k", "a")]);
    let err = server_side_apply(
        Some(&live),
        &config(json!({"data": {"k": "Yg=="}})),
        "kubectl",
        false,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .data.k"#
    );
    match &err {
        KubeError::ApplyConflict { conflicts } => {
            assert_eq!(
                conflicts[0].cause_message(),
                r#"conflict with "kubectl-client-side-apply" using v1"#
            );
            assert_eq!(conflicts[0].field, ".data.k");
        }
        other => panic!("{other:?}"),
    }
    // The same value is no conflict: both own it.
    let same = server_side_apply(
        Some(&live),
        &config(json!({"data": {"k": "YQ=="}})),
        "kubectl",
        false,
        T1,
    )
    .unwrap();
    assert_eq!(
        entry(&same, "kubectl-client-side-apply").fields["f:data"]["f:k"],
        json!({})
    );
    assert_eq!(
        entry(&same, "kubectl").fields,
        json!({"f:data": {"f:k": {}}})
    );
    // Forced: the field moves.
    let forced = server_side_apply(
        Some(&live),
        &config(json!({"data": {"k": "Yg=="}})),
        "kubectl",
        true,
        T1,
    )
    .unwrap();
    assert_eq!(forced.data["k"].as_slice(), b"b");
    assert!(entry(&forced, "kubectl-client-side-apply").fields["f:data"]
        .get("f:k")
        .is_none());
    let mine = entry(&forced, "kubectl");
    assert_eq!((mine.operation.as_str(), mine.time.as_str()), ("Apply", T1));
    assert_eq!(forced.metadata.resource_version, "7", "a precondition");
    assert_eq!(forced.metadata.uid, "uid-1");
}

/// A Secret created by `kubectl apply` (client-side) from `data` (base64 values): its
/// last-applied annotation as kubectl writes it, and the `Update` entry owning both.
fn csa_applied(data: Value) -> Secret {
    let manifest = config(json!({"data": data.clone(), "type": "Opaque"}));
    let mut s = Secret::default();
    s.metadata.name = "ssa".into();
    s.metadata.namespace = "default".into();
    s.metadata.uid = "uid-1".into();
    s.metadata.resource_version = "7".into();
    s.metadata.annotations.insert(
        last_applied::ANNOTATION.into(),
        last_applied::configuration(&manifest),
    );
    for (k, v) in data.as_object().unwrap() {
        let bytes = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            v.as_str().unwrap(),
        )
        .unwrap();
        s.data.insert(k.clone(), SecretBytes::new(bytes));
    }
    s.type_ = "Opaque".into();
    record_update(None, &mut s, "kubectl-client-side-apply", T0);
    s
}

#[test]
fn kubectl_moves_from_client_side_apply_without_conflicts() {
    let live = csa_applied(json!({"k": "YQ==", "j": "YQ=="}));
    // kube-apiserver's lastAppliedManager: fields the annotation still describes as they are
    // are taken over by `kubectl apply --server-side` as if forced.
    let applied = config(json!({"data": {"k": "Yg=="}}));
    let out = server_side_apply(Some(&live), &applied, "kubectl", false, T1).unwrap();
    assert_eq!(out.data["k"].as_slice(), b"b");
    assert_eq!(
        entry(&out, "kubectl").fields,
        json!({"f:data": {"f:k": {}}})
    );
    let csa = entry(&out, "kubectl-client-side-apply").fields;
    assert!(csa["f:data"].get("f:k").is_none(), "{csa}");
    assert_eq!(csa["f:data"]["f:j"], json!({}), "{csa}");
    // lastAppliedUpdater: the annotation now holds this apply's configuration, so that a later
    // client-side apply starts from it.
    assert_eq!(
        out.metadata.annotations[last_applied::ANNOTATION],
        "{\"apiVersion\":\"v1\",\"data\":{\"k\":\"Yg==\"},\"kind\":\"Secret\",\"metadata\":{\"name\":\"ssa\",\"namespace\":\"default\"}}\n"
    );

    // Another field manager gets the conflict, and the annotation stays.
    let err = server_side_apply(Some(&live), &applied, "deployer", false, T1).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .data.k"#
    );
    let same = config(json!({"data": {"k": "YQ=="}}));
    let other = server_side_apply(Some(&live), &same, "deployer", false, T1).unwrap();
    assert_eq!(
        other.metadata.annotations[last_applied::ANNOTATION],
        live.metadata.annotations[last_applied::ANNOTATION]
    );

    // A field changed since the last client-side apply (here by `kubectl edit`) still conflicts.
    let mut edited = live.clone();
    edited
        .data
        .insert("k".into(), SecretBytes::new(b"c".to_vec()));
    record_update(Some(&live), &mut edited, "kubectl-edit", T0);
    let err = server_side_apply(Some(&edited), &applied, "kubectl", false, T1).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .data.k"#
    );

    // Without the annotation there is nothing to take over, and none is added.
    let plain = csa_created(&[("k", "a")]);
    assert!(server_side_apply(Some(&plain), &applied, "kubectl", false, T1).is_err());
    let out = server_side_apply(Some(&plain), &applied, "kubectl", true, T1).unwrap();
    assert!(!out
        .metadata
        .annotations
        .contains_key(last_applied::ANNOTATION));
}

#[test]
fn a_last_applied_annotation_too_large_to_keep_is_removed() {
    let live = csa_applied(json!({"k": "YQ=="}));
    let big = "x".repeat(150 * 1024);
    let applied = config(json!({"metadata": {"annotations": {"big": big}}, "data": {"k": "YQ=="}}));
    let out = server_side_apply(Some(&live), &applied, "kubectl", false, T1).unwrap();
    assert_eq!(out.metadata.annotations["big"], big);
    assert!(!out
        .metadata
        .annotations
        .contains_key(last_applied::ANNOTATION));
    // The applied configuration's own last-applied annotation is never copied into the new one.
    let applied = config(json!({"metadata": {"annotations": {
        last_applied::ANNOTATION: "{}", "team": "x"}}, "data": {"k": "YQ=="}}));
    let out = server_side_apply(Some(&live), &applied, "kubectl", true, T1).unwrap();
    assert_eq!(
        out.metadata.annotations[last_applied::ANNOTATION],
        "{\"apiVersion\":\"v1\",\"data\":{\"k\":\"YQ==\"},\"kind\":\"Secret\",\"metadata\":{\"annotations\":{\"team\":\"x\"},\"name\":\"ssa\",\"namespace\":\"default\"}}\n"
    );
}

#[test]
fn several_conflicts_are_grouped_by_manager() {
    let mut live = csa_created(&[("a", "1"), ("b", "2")]);
    let mut next = live.clone();
    next.type_ = "Opaque".into();
    next.metadata.labels.insert("l".into(), "v".into());
    record_update(Some(&live), &mut next, "kubectl-label", T0);
    live = next;
    let err = server_side_apply(
        Some(&live),
        &config(json!({"metadata": {"labels": {"l": "w"}}, "data": {"a": "eA==", "b": "eA=="}})),
        "kubectl",
        false,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 3 conflicts: conflicts with \"kubectl-client-side-apply\" using v1:\n- .data.a\n- .data.b\nconflicts with \"kubectl-label\" using v1:\n- .metadata.labels.l"
    );
}

#[test]
fn fields_no_longer_applied_are_removed_unless_owned() {
    let first = server_side_apply(
        None,
        &config(json!({"data": {"a": "MQ==", "b": "Mg=="},
                       "metadata": {"finalizers": ["example.com/f"],
                                    "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u1"}]}})),
        "kubectl",
        false,
        T0,
    )
    .unwrap();
    assert_eq!(
        entry(&first, "kubectl").fields["f:metadata"],
        json!({"f:finalizers": {"v:\"example.com/f\"": {}},
               "f:ownerReferences": {"k:{\"uid\":\"u1\"}": {}}})
    );
    let second = server_side_apply(
        Some(&first),
        &config(json!({"data": {"a": "MQ=="}})),
        "kubectl",
        false,
        T1,
    )
    .unwrap();
    assert_eq!(second.data.keys().collect::<Vec<_>>(), ["a"]);
    assert!(second.metadata.finalizers.is_empty());
    assert!(second.metadata.owner_references.is_empty());
    assert_eq!(
        entry(&second, "kubectl").fields,
        json!({"f:data": {"f:a": {}}})
    );
    // A field someone else also owns stays.
    let mut shared = first.clone();
    let mut edited = shared.clone();
    edited
        .data
        .insert("b".into(), SecretBytes::new(b"edited".to_vec()));
    record_update(Some(&shared), &mut edited, "kubectl-edit", T0);
    shared = edited;
    let third = server_side_apply(
        Some(&shared),
        &config(json!({"data": {"a": "MQ=="}})),
        "kubectl",
        false,
        T1,
    )
    .unwrap();
    assert_eq!(third.data["b"].as_slice(), b"edited");
}

#[test]
fn string_data_quirk() {
    let first = server_side_apply(
        None,
        &config(json!({"stringData": {"pw": "hunter2"}})),
        "kubectl",
        false,
        T0,
    )
    .unwrap();
    assert_eq!(first.data["pw"].as_slice(), b"hunter2");
    assert!(first.string_data.is_empty());
    assert_eq!(
        entry(&first, "kubectl").fields,
        json!({"f:stringData": {"f:pw": {}}})
    );
    let second = server_side_apply(Some(&first), &config(json!({})), "kubectl", false, T1).unwrap();
    assert_eq!(
        second.data["pw"].as_slice(),
        b"hunter2",
        "data.pw stays (kubernetes/kubernetes#108008)"
    );
    // No applied field left: the manager's entry goes.
    assert!(second
        .metadata
        .managed_fields
        .iter()
        .all(|e| e.manager != "kubectl"));
}

#[test]
fn refused_configurations() {
    let bad = |v: Value| {
        server_side_apply(None, &v, "kubectl", false, T0)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        bad(json!({"apiVersion": "apps/v1", "kind": "Secret"})),
        "Incorrect version specified in apply patch. Specified patch version: apps/v1, expected: v1"
    );
    assert_eq!(
        bad(config(json!({"metadata": {"foo": 1}}))),
        "failed to create typed patch object (default/ssa; /v1, Kind=Secret): .metadata.foo: field not declared in schema"
    );
    assert_eq!(
        bad(config(
            json!({"metadata": {"managedFields": [{"manager": "x"}]}})
        )),
        "metadata.managedFields must be nil"
    );
}

#[test]
fn no_op_apply_keeps_the_time() {
    let first = server_side_apply(
        None,
        &config(json!({"data": {"a": "MQ=="}})),
        "kubectl",
        false,
        T0,
    )
    .unwrap();
    let again = server_side_apply(
        Some(&first),
        &config(json!({"data": {"a": "MQ=="}})),
        "kubectl",
        false,
        T1,
    )
    .unwrap();
    assert_eq!(entry(&again, "kubectl").time, T0);
    assert_eq!(again.metadata.managed_fields, first.metadata.managed_fields);
}

#[test]
fn managers_from_user_agents() {
    assert_eq!(
        manager_or_user_agent(None, "OpenAPI-Generator/37.0.2/python"),
        "OpenAPI-Generator"
    );
    assert_eq!(
        manager_or_user_agent(Some("kubectl-edit"), "kubectl/v1.33.1"),
        "kubectl-edit"
    );
    assert_eq!(manager_or_user_agent(Some(""), "a\u{7}b/1"), "ab");
    assert_eq!(manager_or_user_agent(None, &"x".repeat(300)).len(), 128);
}

#[test]
fn an_object_without_managed_fields_is_owned_by_before_first_apply() {
    let mut live = csa_created(&[("k", "a"), ("l", "b")]);
    live.metadata.managed_fields.clear();
    // The same value is shared; a new key is the applier's; nothing conflicts.
    let first = server_side_apply(
        Some(&live),
        &config(json!({"data": {"k": "YQ==", "m": "Yw=="}})),
        "mgr",
        false,
        T1,
    )
    .unwrap();
    let before = entry(&first, BEFORE_FIRST_APPLY);
    assert_eq!(
        (before.operation.as_str(), before.time.as_str()),
        ("Update", T1)
    );
    assert_eq!(
        before.fields,
        json!({"f:data": {".": {}, "f:k": {}, "f:l": {}}, "f:type": {}})
    );
    assert_eq!(
        entry(&first, "mgr").fields,
        json!({"f:data": {"f:k": {}, "f:m": {}}})
    );
    // A changed value conflicts with it.
    let err = server_side_apply(
        Some(&live),
        &config(json!({"data": {"k": "eg=="}})),
        "mgr",
        false,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "before-first-apply" using v1: .data.k"#
    );
    // An object with managedFields is not given one.
    let owned = csa_created(&[("k", "a")]);
    let applied = server_side_apply(
        Some(&owned),
        &config(json!({"data": {"k": "YQ=="}})),
        "mgr",
        false,
        T1,
    )
    .unwrap();
    assert!(applied
        .metadata
        .managed_fields
        .iter()
        .all(|e| e.manager != BEFORE_FIRST_APPLY));
}
