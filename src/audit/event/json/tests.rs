use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use super::write_event;
use crate::audit::chain::{
    CHAIN_ANNOTATION, CHECKPOINT_ANNOTATION, SEQ_ANNOTATION, SIGNATURE_ANNOTATION,
};
use crate::audit::event::{
    Event, EventStart, Level, MicroTime, ObjectReference, ResponseStatus, Stage, UserInfo,
};
use crate::audit::object::AuditObject;
use crate::reason::Reason;
use crate::store::model::{ObjectMeta, Secret, SecretBytes};

const RESERVED: [&str; 4] = [
    CHAIN_ANNOTATION,
    SEQ_ANNOTATION,
    CHECKPOINT_ANNOTATION,
    SIGNATURE_ANNOTATION,
];

/// Strings that need every kind of escaping: quotes, backslashes, each control character,
/// DEL, multi-byte UTF-8 (2, 3 and 4 bytes), the JSON-significant `/` and plain text.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9 :./_-]{0,12}",
        1 => Just("\"".to_string()),
        1 => Just("\\".to_string()),
        1 => Just("/".to_string()),
        1 => Just("\u{7f}".to_string()),
        1 => Just("é∂🔑\u{2028}\u{feff}".to_string()),
        2 => (0u8..0x20).prop_map(|b| char::from(b).to_string()),
        1 => any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|p| p.concat())
}

fn texts(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..max)
}

fn user_info() -> impl Strategy<Value = UserInfo> {
    (
        text(),
        text(),
        texts(4),
        prop::collection::btree_map(text(), texts(3), 0..3),
    )
        .prop_map(|(username, uid, groups, extra)| UserInfo {
            username,
            uid,
            groups,
            extra,
        })
}

fn object_ref() -> impl Strategy<Value = ObjectReference> {
    prop::collection::vec(prop_oneof![Just(String::new()), text()], 8).prop_map(|f| {
        ObjectReference {
            resource: f[0].clone(),
            namespace: f[1].clone(),
            name: f[2].clone(),
            uid: f[3].clone(),
            api_group: f[4].clone(),
            api_version: f[5].clone(),
            resource_version: f[6].clone(),
            subresource: f[7].clone(),
        }
    })
}

fn status() -> impl Strategy<Value = Option<ResponseStatus>> {
    prop_oneof![
        Just(None),
        (100u16..600).prop_map(|c| Some(ResponseStatus::success(c))),
        (0..Reason::ALL.len(), text())
            .prop_map(|(r, m)| Some(ResponseStatus::failure(Reason::ALL[r], m))),
        text().prop_map(|m| Some(ResponseStatus::unauthenticated(m))),
        (0..Reason::ALL.len(), text(), text(), text()).prop_map(|(r, m, name, cause)| {
            let details = serde_json::json!({
                "name": name,
                "kind": "secrets",
                "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "data"}],
            })
            .to_string();
            Some(ResponseStatus::failure(Reason::ALL[r], m).with_details(details))
        }),
    ]
}

fn object() -> impl Strategy<Value = Option<AuditObject>> {
    prop_oneof![
        Just(None),
        (text(), text(), text()).prop_map(|(name, ns, label)| {
            let mut s = Secret {
                metadata: ObjectMeta {
                    name,
                    namespace: ns,
                    uid: "70a15a23-77f5-45a9-8085-1bd678e4dfe1".into(),
                    resource_version: "517".into(),
                    ..Default::default()
                },
                ..Default::default()
            };
            s.metadata.labels.insert("l".into(), label);
            s.data
                .insert("value".into(), SecretBytes::new(b"x".to_vec()));
            Some(AuditObject::secret(&s))
        }),
        text().prop_map(|t| Some(AuditObject::json(
            serde_json::json!({"kind": "ConfigMap", "data": {"k": t}})
        ))),
    ]
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = prop_oneof![
        4 => text(),
        1 => (0..RESERVED.len()).prop_map(|i| RESERVED[i].to_string()),
        1 => Just("authorization.k8s.io/decision".to_string()),
    ];
    prop::collection::btree_map(key, text(), 0..5)
}

fn micro_time() -> impl Strategy<Value = MicroTime> {
    // Years 1970 to 9999 (`MicroTime` cannot write later ones either way).
    (0u64..253_402_300_800_000_000).prop_map(|m| MicroTime(UNIX_EPOCH + Duration::from_micros(m)))
}

prop_compose! {
    fn event()(
        level in 0..Level::ALL.len(),
        stage in 0..Stage::ALL.len(),
        audit_id in text(),
        request_uri in text(),
        verb in text(),
        user in user_info(),
        impersonated_user in prop::option::of(user_info()),
        source_ips in texts(3),
        user_agent in text(),
        object_ref in prop::option::of(object_ref()),
        received in micro_time(),
        now in micro_time(),
        annotations in annotations(),
        status in status(),
        request_object in object(),
        response_object in object(),
    ) -> Event {
        let start = Event::start(EventStart {
            level: Level::ALL[level],
            audit_id,
            request_uri,
            verb,
            user: std::sync::Arc::new(user),
            user_json: None,
            impersonated_user,
            source_ips,
            user_agent,
            object_ref,
            received,
            annotations: annotations.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        });
        start.at_stage(Stage::ALL[stage], now, status, request_object, response_object)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The hand-written line is serde_json's, byte for byte.
    #[test]
    fn the_line_is_serde_jsons(ev in event()) {
        let mut out = Vec::new();
        let annotated = write_event(&ev, &mut out, &[]);
        let expected = serde_json::to_vec(&ev).unwrap();
        prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
        prop_assert_eq!(annotated, !ev.annotations().is_empty());
        prop_assert_eq!(ev.to_json().into_bytes(), expected);
    }

    /// Left-out annotations are as if the event did not have them: the object disappears when
    /// nothing is left in it.
    #[test]
    fn skipped_annotations_are_left_out(ev in event()) {
        let mut out = vec![b'x'];
        let annotated = write_event(&ev, &mut out, &RESERVED);
        let mut clean = ev.clone();
        for k in RESERVED {
            clean.annotations_mut().remove(k);
        }
        let expected = serde_json::to_vec(&clean).unwrap();
        prop_assert_eq!(String::from_utf8_lossy(&out[1..]), String::from_utf8_lossy(&expected));
        prop_assert_eq!(annotated, !clean.annotations().is_empty());
        prop_assert!(!annotated || out.ends_with(b"}}"));
    }
}

/// Every ASCII byte and a few others alone in a string, against serde_json.
#[test]
fn every_character_is_escaped_as_serde_json_escapes_it() {
    let mut chars: Vec<char> = (0u8..=0x7f).map(char::from).collect();
    chars.extend([
        '\u{80}',
        '\u{ff}',
        '\u{2028}',
        '\u{2029}',
        '\u{fffd}',
        '\u{10ffff}',
    ]);
    for c in chars {
        for s in [c.to_string(), format!("a{c}b{c}{c}")] {
            let mut out = Vec::new();
            super::string(&mut out, &s);
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{:?}", s);
        }
    }
}

/// The eight-bytes-at-a-time test agrees with the table on every word it is given.
#[test]
fn the_word_test_agrees_with_the_table() {
    let naive = |w: u64| {
        w.to_le_bytes()
            .iter()
            .any(|&b| super::ESCAPE[usize::from(b)] != 0)
    };
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Bytes near the edges: 0x1f/0x20, 0x21-0x23, 0x5b-0x5d, 0x7f-0x81, 0x00, 0xff.
        let edges = [
            0x00, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xff,
        ];
        let mixed = u64::from_le_bytes(x.to_le_bytes().map(|b| edges[usize::from(b) % 12]));
        for w in [x, mixed] {
            assert_eq!(super::needs_escape(w), naive(w), "{w:#018x}");
        }
    }
    for b in 0..=255u8 {
        for at in 0..8 {
            let mut bytes = [b'a'; 8];
            bytes[at] = b;
            let w = u64::from_le_bytes(bytes);
            assert_eq!(super::needs_escape(w), naive(w), "{w:#018x}");
        }
    }
}

/// What is kept between events (a shared user's object, the last long annotation value a
/// thread escaped) is used only for the same user and the same text: a sequence of events
/// that share, change and return to users and long values writes what serde_json writes for
/// each.
#[test]
fn kept_user_objects_and_long_values_are_used_only_for_the_same_ones() {
    use crate::authn::Identity;
    let users = [
        UserInfo::shared(&Identity::new(
            "app",
            "",
            vec!["system:authenticated".into()],
        )),
        UserInfo::shared(&Identity::new("ops \"admin\"", "42", vec![])),
    ];
    let reasons = [
        r#"RBAC: allowed by RoleBinding "bench/bench" of Role "bench" to User "bench""#.to_string(),
        r#"RBAC: allowed by RoleBinding "bench/bench" of Role "bench" to User "bench2""#
            .to_string(),
        "short".to_string(),
        format!("{}\"", "x".repeat(5000)),
    ];
    let order = [
        (0, 0),
        (0, 0),
        (1, 0),
        (0, 1),
        (0, 1),
        (1, 2),
        (1, 3),
        (1, 3),
        (0, 0),
    ];
    for (u, r) in order {
        let mut annotations = crate::audit::event::Annotations::new();
        annotations.insert(
            "authorization.k8s.io/reason".into(),
            reasons[r].clone().into(),
        );
        let ev = Event::start(EventStart {
            level: Level::Metadata,
            audit_id: "id".into(),
            request_uri: "/x".into(),
            verb: "get".into(),
            user: users[u].0.clone(),
            user_json: Some(users[u].1.clone()),
            impersonated_user: None,
            source_ips: vec![],
            user_agent: String::new(),
            object_ref: None,
            received: MicroTime(UNIX_EPOCH),
            annotations,
        });
        let mut out = Vec::new();
        write_event(&ev, &mut out, &[]);
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&serde_json::to_vec(&ev).unwrap()),
            "user {u}, reason {r}"
        );
    }
}
