use super::*;
use crate::store::model::{OwnerReference, SecretString};
use serde_json::json;

fn secret(data: &[(&str, &str)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = "s".into();
    for (k, v) in data {
        s.data
            .insert((*k).into(), SecretBytes::new(v.as_bytes().to_vec()));
    }
    s
}

#[test]
fn fields_v1_round_trip_and_dot() {
    let v = json!({"f:data":{".":{},"f:a":{},"f:b":{}},"f:metadata":{"f:labels":{"f:x":{}},
        "f:ownerReferences":{".":{},"k:{\"uid\":\"u1\"}":{}},"f:finalizers":{"v:\"a/b\"":{}}},"f:type":{}});
    let set = FieldSet::from_fields_v1(Some(&v));
    assert_eq!(set.0.len(), 8);
    assert_eq!(set.to_fields_v1(), v);
    let shown: Vec<String> = set.iter().map(|p| p.to_string()).collect();
    assert!(shown.contains(&".data.a".to_owned()), "{shown:?}");
    assert!(shown.contains(&".metadata.ownerReferences[uid=\"u1\"]".to_owned()));
    assert!(shown.contains(&".metadata.finalizers[=\"a/b\"]".to_owned()));
}

#[test]
fn create_records_containers_and_leaves() {
    let mut s = secret(&[("pw", "x"), ("user", "y")]);
    s.metadata.labels.insert("app".into(), "web".into());
    record_update(None, &mut s, "kubectl-create", "2024-01-01T00:00:00Z");
    let e = &s.metadata.managed_fields;
    assert_eq!(e.len(), 1);
    assert_eq!(
        (
            e[0].manager.as_str(),
            e[0].operation.as_str(),
            e[0].api_version.as_str(),
            e[0].fields_type.as_str()
        ),
        ("kubectl-create", "Update", "v1", "FieldsV1")
    );
    assert_eq!(
        e[0].fields_v1,
        Some(json!({"f:data":{".":{},"f:pw":{},"f:user":{}},
            "f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:type":{}}))
    );
}

#[test]
fn updates_take_ownership_and_merge_with_earlier_entries() {
    let mut old = secret(&[("a", "1"), ("b", "2")]);
    record_update(None, &mut old, "creator", "2024-01-01T00:00:00Z");
    let mut new = old.clone();
    new.data
        .insert("a".into(), SecretBytes::new(b"changed".to_vec()));
    new.data.remove("b");
    record_update(Some(&old), &mut new, "editor", "2024-01-02T00:00:00Z");
    let m = decode(&new.metadata.managed_fields);
    let creator = &m[&ManagerId::new("creator", UPDATE)];
    let editor = &m[&ManagerId::new("editor", UPDATE)];
    let show = |s: &FieldSet| s.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    assert_eq!(show(&creator.fields), [".data", ".type"]);
    assert_eq!(show(&editor.fields), [".data.a"]);
    assert_eq!(editor.time, "2024-01-02T00:00:00Z");
    // Same manager again: merged, time refreshed.
    let mut third = new.clone();
    third.metadata.labels.insert("l".into(), "v".into());
    record_update(Some(&new), &mut third, "editor", "2024-01-03T00:00:00Z");
    let m = decode(&third.metadata.managed_fields);
    assert_eq!(
        show(&m[&ManagerId::new("editor", UPDATE)].fields),
        [".data.a", ".metadata.labels", ".metadata.labels.l"]
    );
    // A no-op write changes nothing.
    let mut same = third.clone();
    record_update(Some(&third), &mut same, "other", "2024-01-04T00:00:00Z");
    assert_eq!(same.metadata.managed_fields, third.metadata.managed_fields);
}

#[test]
fn explicit_managed_fields_replace_and_empty_keeps() {
    let mut old = secret(&[("a", "1")]);
    record_update(None, &mut old, "creator", "t1");
    let mut new = old.clone();
    new.metadata.managed_fields = vec![ManagedFieldsEntry {
        manager: "someone".into(),
        operation: "Apply".into(),
        api_version: "v1".into(),
        time: "t0".into(),
        fields_type: FIELDS_V1.into(),
        fields_v1: Some(json!({"f:data":{"f:a":{}}})),
        subresource: String::new(),
    }];
    record_update(Some(&old), &mut new, "kubectl", "t2");
    assert_eq!(new.metadata.managed_fields.len(), 1);
    assert_eq!(new.metadata.managed_fields[0].manager, "someone");
    let mut unaware = old.clone();
    unaware.metadata.managed_fields.clear();
    record_update(Some(&old), &mut unaware, "python", "t3");
    assert_eq!(unaware.metadata.managed_fields, old.metadata.managed_fields);
}

#[test]
fn a_reset_starts_from_nothing_and_nothing_owned_is_none_owned() {
    let mut old = secret(&[("a", "1")]);
    record_update(None, &mut old, "creator", "t1");
    assert_eq!(old.metadata.managed_fields.len(), 1);
    // `[{}]` with no other change: no manager owns anything.
    let mut reset = old.clone();
    reset.metadata.managed_fields = none_owned();
    record_update(Some(&old), &mut reset, "kubectl-patch", "t2");
    assert!(is_none_owned(&reset.metadata.managed_fields));
    // With a change, the writer owns what it changed, and only that.
    let mut changed = old.clone();
    changed.metadata.managed_fields = none_owned();
    changed
        .data
        .insert("b".into(), SecretBytes(b"2".to_vec().into()));
    record_update(Some(&old), &mut changed, "kubectl-patch", "t3");
    assert_eq!(changed.metadata.managed_fields.len(), 1);
    assert_eq!(changed.metadata.managed_fields[0].manager, "kubectl-patch");
    assert_eq!(
        changed.metadata.managed_fields[0].fields_v1,
        Some(json!({"f:data": {"f:b": {}}}))
    );
    assert!(!is_none_owned(&[]));
    assert_eq!(recorded(Vec::new()), none_owned());
}

#[test]
fn update_managers_beyond_ten_merge_into_ancient_changes() {
    let mut s = secret(&[]);
    record_update(None, &mut s, "m00", "2024-01-01T00:00:00Z");
    for i in 1..=10 {
        let mut next = s.clone();
        next.data
            .insert(format!("k{i:02}"), SecretBytes(b"v".to_vec().into()));
        let time = format!("2024-01-01T00:00:{i:02}Z");
        record_update(Some(&s), &mut next, &format!("m{i:02}"), &time);
        s = next;
    }
    // Eleven managers: the two oldest (m00 owns the type, m01 its key) are now one.
    let names: Vec<&str> = s
        .metadata
        .managed_fields
        .iter()
        .map(|e| e.manager.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "ancient-changes",
            "m02",
            "m03",
            "m04",
            "m05",
            "m06",
            "m07",
            "m08",
            "m09",
            "m10"
        ]
    );
    let ancient = &s.metadata.managed_fields[0];
    assert_eq!(ancient.operation, UPDATE);
    assert_eq!(ancient.time, "2024-01-01T00:00:01Z", "the later of the two");
    assert_eq!(
        ancient.fields_v1,
        Some(json!({"f:data": {".": {}, "f:k01": {}}, "f:type": {}}))
    );
    // The next new manager merges the oldest one left into it.
    let mut next = s.clone();
    next.data
        .insert("k11".into(), SecretBytes(b"v".to_vec().into()));
    record_update(Some(&s), &mut next, "m11", "2024-01-01T00:00:11Z");
    let ancient = &next.metadata.managed_fields[0];
    assert_eq!(
        (ancient.manager.as_str(), ancient.time.as_str()),
        ("ancient-changes", "2024-01-01T00:00:02Z")
    );
    assert_eq!(next.metadata.managed_fields.len(), MAX_UPDATE_MANAGERS);
    assert_eq!(
        go_identifier(&ManagerId::new("a<b", UPDATE)),
        r#"{"manager":"a\u003cb","operation":"Update","apiVersion":"v1"}"#
    );
}

/// The versions `compare_stored_agrees_with_the_json_comparison` compares pairwise.
fn versions() -> Vec<Secret> {
    let plain = secret(&[("a", "1"), ("b", "2")]);
    let mut changed = secret(&[("a", "1"), ("b", "3"), ("c", "4")]);
    changed.metadata.labels.insert("app".into(), "web".into());
    let mut string_data = secret(&[("a", "9")]);
    string_data
        .string_data
        .insert("a".into(), SecretString(String::from("1").into()));
    string_data
        .string_data
        .insert("z".into(), SecretString(String::from("zz").into()));
    let mut only_string_data = secret(&[]);
    only_string_data
        .string_data
        .insert("b".into(), SecretString(String::from("2").into()));
    let mut meta = plain.clone();
    meta.type_ = "kubernetes.io/tls".into();
    meta.immutable = Some(true);
    meta.metadata.annotations.insert("n".into(), "v".into());
    meta.metadata.finalizers.push("example.com/f".into());
    meta.metadata.owner_references.push(OwnerReference {
        uid: "u1".into(),
        name: "o".into(),
        ..OwnerReference::default()
    });
    meta.metadata.namespace = "ns".into();
    meta.metadata.deletion_timestamp = "2024-01-01T00:00:00Z".into();
    let mut managed = plain.clone();
    record_update(None, &mut managed, "creator", "t1");
    let mut untracked = plain.clone();
    untracked.metadata.uid = "u".into();
    untracked.metadata.resource_version = "7".into();
    untracked.metadata.creation_timestamp = "2024-01-01T00:00:00Z".into();
    untracked.metadata.namespace = "default".into();
    untracked.type_ = "Opaque".into();
    let mut grace = plain.clone();
    grace.metadata.deletion_grace_period_seconds = Some(0);
    grace.metadata.generate_name = "g-".into();
    vec![
        plain,
        untracked,
        grace,
        changed,
        string_data,
        only_string_data,
        meta,
        managed,
        secret(&[]),
    ]
}

#[test]
fn compare_stored_agrees_with_the_json_comparison() {
    let all = versions();
    let olds = std::iter::once(None).chain(all.iter().map(Some));
    for (i, old) in olds.enumerate() {
        for (j, new) in all.iter().enumerate() {
            let want = compare(
                &flatten(&stored_json(old)),
                &flatten(&stored_json(Some(new))),
            );
            assert_eq!(compare_stored(old, new), want, "old {i}, new {j}");
        }
    }
}

/// A `FieldsV1` trie from a few keys, including the ones that make a trie non-canonical
/// (`"."` alone or at the root, untracked fields, non-object nodes).
fn trie() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        ".",
        "f:data",
        "f:a",
        "f:b",
        "f:metadata",
        "f:labels",
        "f:name",
        "f:type",
        "f:x",
    ]);
    let leaf = prop_oneof![
        8 => Just(json!({})),
        1 => Just(Value::Null),
        1 => Just(json!({".": {}})),
        1 => Just(json!({".": {"f:a": {}}})),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop::collection::btree_map(key.clone(), inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
    })
}

fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
    ManagedFieldsEntry {
        manager: manager.into(),
        operation: operation.into(),
        api_version: API_VERSION.into(),
        time: "t0".into(),
        fields_type: FIELDS_V1.into(),
        fields_v1: Some(fields),
        subresource: String::new(),
    }
}

/// A Secret with data keys among `a`, `b`, `c` and maybe a label.
fn small_secret() -> impl Strategy<Value = Secret> {
    let data = prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "c"]),
        prop::sample::select(vec!["1", "2"]),
        0..3,
    );
    (data, any::<bool>()).prop_map(|(data, label)| {
        let pairs: Vec<(&str, &str)> = data.into_iter().collect();
        let mut s = secret(&pairs);
        if label {
            s.metadata.labels.insert("l".into(), "v".into());
        }
        s
    })
}

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The shortcut's test of a trie holds only for tries that come back unchanged from
    /// their field set.
    #[test]
    fn a_canonical_trie_is_its_own_encoding(root in trie()) {
        if let Value::Object(m) = &root {
            if canonical_fields_v1(m) {
                let set = FieldSet::from_fields_v1(Some(&root)).stripped();
                prop_assert!(!set.is_empty());
                prop_assert_eq!(set.to_fields_v1(), root);
            }
        }
    }

    /// `record_update` with its shortcut gives exactly what decoding and encoding give,
    /// whatever the earlier entries (written by keyward, by another manager, or any trie).
    #[test]
    fn the_shortcut_agrees_with_the_full_bookkeeping(
        first in small_secret(),
        second in small_secret(),
        earlier in prop_oneof![
            Just(None),
            trie().prop_map(|t| Some(entry("keyward", UPDATE, t))),
            trie().prop_map(|t| Some(entry("other", UPDATE, t))),
            trie().prop_map(|t| Some(entry("keyward", APPLY, t))),
        ],
        writer in prop::sample::select(vec!["keyward", "other"]),
        writes_earlier in any::<bool>(),
    ) {
        let mut old = first;
        match earlier {
            Some(e) => old.metadata.managed_fields = vec![e],
            None => record_update(None, &mut old, "keyward", "t0"),
        }
        if writes_earlier {
            // A second entry: the shortcut must step aside.
            let mut again = old.clone();
            again.data.insert("z".into(), SecretBytes::new(b"z".to_vec()));
            record_update(Some(&old), &mut again, "third", "t1");
            old = again;
        }
        let mut fast = second.clone();
        record_update(Some(&old), &mut fast, writer, "t2");
        let mut full = second;
        record_update_in_full(Some(&old), &mut full, writer, "t2");
        prop_assert_eq!(fast.metadata.managed_fields, full.metadata.managed_fields);
    }
}

#[test]
fn the_usual_update_takes_the_shortcut() {
    let mut old = secret(&[("a", "1")]);
    record_update(None, &mut old, "keyward", "t1");
    let mut new = secret(&[("a", "2")]);
    assert!(same_owner(&old, &new, "keyward", "t2").is_some());
    record_update(Some(&old), &mut new, "keyward", "t2");
    assert_eq!(new.metadata.managed_fields[0].time, "t2");
    // A new key is not owned yet: the full bookkeeping runs.
    let newer = secret(&[("a", "2"), ("b", "3")]);
    assert!(same_owner(&new, &newer, "keyward", "t3").is_none());
}
