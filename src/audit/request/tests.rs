use super::*;
use crate::audit::{AuditLog, LogConfig};
use crate::crypto::Ed25519SigningKey;
use crate::reason::Reason;
use crate::store::model::{Secret, SecretBytes, SecretString};
use serde_json::{json, Value};
use std::time::{Duration, UNIX_EPOCH};

fn policy(level: &str) -> Policy {
    Policy::parse(&format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: {level}\n"
    ))
    .unwrap()
}

fn alice() -> Identity {
    Identity::new(
        "alice",
        "u-1",
        vec!["dev".into(), "system:authenticated".into()],
    )
}

fn get_db() -> Attributes {
    Attributes {
        user: alice(),
        verb: "get".into(),
        resource: "secrets".into(),
        namespace: "prod".into(),
        name: "db".into(),
        ..Default::default()
    }
}

fn info() -> RequestInfo {
    RequestInfo {
        audit_id: Some("0f0e8d2c-3b8a-4a46-9a53-2c2b9f3b1d10".into()),
        user_agent: "keyward/0.1.0".into(),
        received: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
        ..RequestInfo::new(
            "/keyward.v1.Secrets/Get",
            Peer::Tcp("[::ffff:10.1.2.3]:41000".parse().unwrap()),
        )
    }
}

fn json_of(e: &Event) -> Value {
    let mut v = serde_json::to_value(e).unwrap();
    v["stageTimestamp"] = json!("(now)");
    v
}

fn allow() -> Decision {
    Decision::Allow {
        reason: "RBAC: allowed by RoleBinding \"db-reader/prod\" of Role \"db-reader\" to User \"alice\"".into(),
    }
}

/// The exact event kube-apiserver would write for the same request, field by field and in
/// the same order.
#[tokio::test]
async fn events_have_the_upstream_shape() {
    let sink = Arc::new(MemorySink::new());
    let auditor = Auditor::new(policy("Metadata"), sink.clone());
    let mut rec = auditor.begin(&get_db(), info());
    assert_eq!(rec.level(), Level::Metadata);
    assert_eq!(rec.audit_id(), "0f0e8d2c-3b8a-4a46-9a53-2c2b9f3b1d10");
    rec.request_received(&allow(), None).await.unwrap();
    let mut secret = Secret::default();
    secret.metadata.name = "db".into();
    secret.metadata.uid = "s-uid".into();
    secret.metadata.resource_version = "17".into();
    rec.response_complete(
        ResponseStatus::success(200),
        Some(AuditObject::secret(&secret)),
    )
    .await
    .unwrap();
    let events = sink.events();
    assert_eq!(events.len(), 2);
    let annotations = json!({
        "authorization.k8s.io/decision": "allow",
        "authorization.k8s.io/reason": "RBAC: allowed by RoleBinding \"db-reader/prod\" of Role \"db-reader\" to User \"alice\"",
    });
    assert_eq!(
        json_of(&events[0]),
        json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": "0f0e8d2c-3b8a-4a46-9a53-2c2b9f3b1d10",
            "stage": "RequestReceived",
            "requestURI": "/keyward.v1.Secrets/Get",
            "verb": "get",
            "user": {"username": "alice", "uid": "u-1", "groups": ["dev", "system:authenticated"]},
            "sourceIPs": ["10.1.2.3"],
            "userAgent": "keyward/0.1.0",
            "objectRef": {"resource": "secrets", "namespace": "prod", "name": "db", "apiVersion": "v1"},
            "requestReceivedTimestamp": "2023-11-14T22:13:20.123456Z",
            "stageTimestamp": "(now)",
        }),
        "written before the request is authorized: no decision yet"
    );
    assert_eq!(
        serde_json::to_value(&events[0]).unwrap()["stageTimestamp"],
        "2023-11-14T22:13:20.123456Z",
        "RequestReceived is stamped when the request was received"
    );
    let done = events[1].to_json();
    let keys: Vec<&str> = [
        "kind",
        "apiVersion",
        "level",
        "auditID",
        "stage",
        "requestURI",
        "verb",
        "user",
        "sourceIPs",
        "userAgent",
        "objectRef",
        "responseStatus",
        "requestReceivedTimestamp",
        "stageTimestamp",
        "annotations",
    ]
    .to_vec();
    let mut at = 0;
    for k in keys {
        let pos = done[at..]
            .find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k} missing or out of order in {done}"));
        at += pos;
    }
    let v = json_of(&events[1]);
    assert_eq!(v["stage"], "ResponseComplete");
    assert_eq!(v["responseStatus"], json!({"metadata": {}, "code": 200}));
    // As kube-apiserver's: nothing from the response (a get has no request body to take a uid
    // or resourceVersion from).
    assert_eq!(
        v["objectRef"],
        json!({"resource": "secrets", "namespace": "prod", "name": "db", "apiVersion": "v1"})
    );
    assert!(v.get("responseObject").is_none(), "Metadata has no bodies");
    assert_eq!(v["annotations"], annotations);
    assert_ne!(events[1].to_json(), events[0].to_json());
}

#[tokio::test]
async fn levels_decide_which_bodies_are_kept() {
    let mut s = Secret::default();
    s.metadata.name = "db".into();
    s.data.insert("k".into(), SecretBytes::new(b"v".to_vec()));
    for (level, req, resp) in [
        ("Metadata", false, false),
        ("Request", true, false),
        ("RequestResponse", true, true),
    ] {
        let sink = Arc::new(MemorySink::new());
        let auditor = Auditor::new(policy(level), sink.clone());
        let attrs = Attributes {
            verb: "update".into(),
            ..get_db()
        };
        let mut rec = auditor.begin(&attrs, info());
        rec.request_received(&allow(), Some(AuditObject::secret(&s)))
            .await
            .unwrap();
        rec.response_complete(ResponseStatus::success(200), Some(AuditObject::secret(&s)))
            .await
            .unwrap();
        let e = sink.events();
        assert!(
            !e[0].has_request_object(),
            "{level}: RequestReceived has no body"
        );
        assert_eq!(e[1].has_request_object(), req, "{level}");
        assert_eq!(e[1].has_response_object(), resp, "{level}");
    }
    // Non-resource requests never carry bodies.
    let sink = Arc::new(MemorySink::new());
    let auditor = Auditor::new(policy("RequestResponse"), sink.clone());
    let attrs = Attributes {
        user: alice(),
        verb: "get".into(),
        path: Some("/healthz".into()),
        ..Default::default()
    };
    let mut rec = auditor.begin(&attrs, RequestInfo::new("/healthz", Peer::Unknown));
    rec.request_received(&allow(), Some(AuditObject::json(json!({"a": 1}))))
        .await
        .unwrap();
    rec.response_complete(
        ResponseStatus::success(200),
        Some(AuditObject::json(json!({"b": 2}))),
    )
    .await
    .unwrap();
    let e = sink.events();
    assert!(!e[1].has_request_object() && !e[1].has_response_object());
    assert!(e[1].object_ref().is_none());
}

#[tokio::test]
async fn no_policy_or_level_none_records_nothing_and_omitted_stages_are_skipped() {
    let sink = Arc::new(MemorySink::new());
    let mut rec = Auditor::disabled().begin(&get_db(), info());
    assert_eq!(rec.level(), Level::None);
    assert!(!rec.audit_id().is_empty());
    rec.request_received(&allow(), None).await.unwrap();
    rec.response_complete(ResponseStatus::success(200), None)
        .await
        .unwrap();

    let auditor = Auditor::new(policy("None"), sink.clone());
    let mut rec = auditor.begin(&get_db(), info());
    rec.request_received(&allow(), None).await.unwrap();
    assert!(sink.events().is_empty());

    let omit = Policy::parse(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  omitStages: [ResponseStarted]\n",
    )
    .unwrap();
    let auditor = Auditor::new(omit, sink.clone());
    let mut rec = auditor.begin(
        &Attributes {
            verb: "watch".into(),
            ..get_db()
        },
        info(),
    );
    rec.request_received(&allow(), None).await.unwrap();
    rec.response_started().await.unwrap();
    rec.response_complete(ResponseStatus::success(200), None)
        .await
        .unwrap();
    rec.panic("boom").await.unwrap();
    let stages: Vec<Stage> = sink.events().iter().map(Event::stage).collect();
    assert_eq!(stages, [Stage::ResponseComplete, Stage::Panic]);
    let panic = serde_json::to_value(&sink.events()[1]).unwrap();
    assert_eq!(
        panic["responseStatus"],
        json!({"metadata": {}, "status": "Failure", "message": "APIServer panic'd: boom", "reason": "InternalError", "code": 500})
    );
}

#[tokio::test]
async fn denied_requests_record_forbid_and_the_status() {
    let sink = Arc::new(MemorySink::new());
    let auditor = Auditor::new(policy("Metadata"), sink.clone());
    let mut rec = auditor.begin(
        &Attributes {
            verb: "list".into(),
            name: String::new(),
            ..get_db()
        },
        info(),
    );
    rec.request_received(
        &Decision::Deny {
            reason: String::new(),
        },
        None,
    )
    .await
    .unwrap();
    let msg = r#"secrets is forbidden: User "alice" cannot list resource "secrets" in API group "" in the namespace "prod""#;
    rec.response_complete(ResponseStatus::failure(Reason::Forbidden, msg), None)
        .await
        .unwrap();
    let v = serde_json::to_value(&sink.events()[1]).unwrap();
    assert_eq!(v["annotations"]["authorization.k8s.io/decision"], "forbid");
    assert_eq!(v["annotations"]["authorization.k8s.io/reason"], "");
    assert_eq!(v["responseStatus"]["code"], 403);
    assert_eq!(v["responseStatus"]["message"], msg);
    assert_eq!(
        v["objectRef"],
        json!({"resource": "secrets", "namespace": "prod", "apiVersion": "v1"})
    );
}

/// A long-running request (a watch) records `ResponseStarted` whenever its answer starts: with
/// 200 when it streams, with its error when it is refused before, as kube-apiserver.
#[tokio::test]
async fn long_running_requests_start_their_answer_also_when_refused() {
    let watch = Attributes {
        verb: "watch".into(),
        name: String::new(),
        ..get_db()
    };
    let long = RequestInfo {
        long_running: true,
        ..info()
    };
    let stages = |sink: &MemorySink| -> Vec<(String, Value)> {
        sink.events()
            .iter()
            .map(|e| {
                let v = json_of(e);
                (
                    v["stage"].as_str().unwrap().to_owned(),
                    v["responseStatus"]["code"].clone(),
                )
            })
            .collect()
    };
    let sink = Arc::new(MemorySink::new());
    let auditor = Auditor::new(policy("Metadata"), sink.clone());
    let mut rec = auditor.begin(&watch, long.clone());
    let deny = Decision::Deny {
        reason: String::new(),
    };
    rec.request_received(&deny, None).await.unwrap();
    rec.response_complete(ResponseStatus::failure(Reason::Forbidden, "no"), None)
        .await
        .unwrap();
    let st = |s: &str, code: Value| (s.to_owned(), code);
    assert_eq!(
        stages(&sink),
        [
            st("RequestReceived", Value::Null),
            st("ResponseStarted", json!(403)),
            st("ResponseComplete", json!(403))
        ]
    );
    let sink = Arc::new(MemorySink::new());
    let auditor = Auditor::new(policy("Metadata"), sink.clone());
    let mut rec = auditor.begin(&watch, long);
    rec.request_received(&allow(), None).await.unwrap();
    rec.response_started().await.unwrap();
    rec.response_complete(ResponseStatus::success(200), None)
        .await
        .unwrap();
    assert_eq!(
        stages(&sink),
        [
            st("RequestReceived", Value::Null),
            st("ResponseStarted", json!(200)),
            st("ResponseComplete", json!(200))
        ]
    );
    // Not long-running: no ResponseStarted for a refusal.
    let sink = Arc::new(MemorySink::new());
    let auditor = Auditor::new(policy("Metadata"), sink.clone());
    let mut rec = auditor.begin(&watch, info());
    rec.request_received(&deny, None).await.unwrap();
    rec.response_complete(ResponseStatus::failure(Reason::Forbidden, "no"), None)
        .await
        .unwrap();
    assert_eq!(sink.events().len(), 2);
}

#[tokio::test]
async fn impersonation_unix_peers_user_agents_and_annotations() {
    let sink = Arc::new(MemorySink::new());
    // The policy matches the authenticated user, not the impersonated one.
    let p = Policy::parse(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  users: [ops]\n- level: None\n",
    )
    .unwrap();
    let auditor = Auditor::new(p, sink.clone());
    let long_agent = format!("{}é", "a".repeat(1023));
    let mut rec = auditor.begin(
        &get_db(),
        RequestInfo {
            impersonator: Some(Identity::new("ops", "", vec!["operators".into()])),
            user_agent: long_agent,
            ..RequestInfo::new("/keyward.v1.Secrets/Get", Peer::Unix { uid: 1000 })
        },
    );
    assert_eq!(rec.level(), Level::Request);
    rec.annotate("example.com/note", "hi");
    rec.request_received(&allow(), None).await.unwrap();
    let v = serde_json::to_value(&sink.events()[0]).unwrap();
    assert_eq!(
        v["user"],
        json!({"username": "ops", "groups": ["operators"]})
    );
    // RequestReceived is written before impersonation is applied, as kube-apiserver writes it;
    // the later stages name the impersonated user.
    assert!(v.get("impersonatedUser").is_none(), "{v}");
    rec.response_complete(ResponseStatus::success(200), None)
        .await
        .unwrap();
    let done = &sink.events()[1];
    assert_eq!(
        serde_json::to_value(done).unwrap()["impersonatedUser"]["username"],
        "alice"
    );
    assert!(done
        .to_json()
        .contains(",\"impersonatedUser\":{\"username\":\"alice\""));
    assert!(!sink.events()[0].to_json().contains("impersonatedUser"));
    assert!(v.get("sourceIPs").is_none());
    assert_eq!(v["annotations"]["keyward.io/peer-uid"], "1000");
    assert_eq!(v["annotations"]["example.com/note"], "hi");
    assert_eq!(
        v["userAgent"].as_str().unwrap(),
        format!("{}...TRUNCATED", "a".repeat(1023))
    );
    // The same request without impersonation is alice's, and not audited.
    let rec = auditor.begin(&get_db(), info());
    assert_eq!(rec.level(), Level::None);
}

#[tokio::test]
async fn a_failing_sink_fails_the_stage() {
    let sink = Arc::new(MemorySink::new());
    sink.set_failing(true);
    let auditor = Auditor::new(policy("Metadata"), sink.clone());
    let mut rec = auditor.begin(&get_db(), info());
    assert!(matches!(
        rec.request_received(&allow(), None).await,
        Err(AuditError::Write { .. })
    ));
}

/// Secrets with known values, written at every level and through every kind of body, to a real
/// log file: no value appears in the file's bytes, plain, base64 or hex.
#[tokio::test]
async fn no_secret_value_reaches_the_log_at_any_level() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let key = Arc::new(Ed25519SigningKey::generate().unwrap());
    let log = AuditLog::open(LogConfig::new(&path), key.clone())
        .await
        .unwrap();
    let values: Vec<String> = (0..6)
        .map(|i| format!("s3cr3t-{i}-{}", uuid::Uuid::new_v4().simple()))
        .collect();
    let mut s = Secret::default();
    s.metadata.name = "db".into();
    s.metadata.namespace = "prod".into();
    s.data.insert(
        "password".into(),
        SecretBytes::new(values[0].as_bytes().to_vec()),
    );
    s.data.insert(
        "binary".into(),
        SecretBytes::new(values[1].as_bytes().to_vec()),
    );
    s.string_data.insert(
        "token".into(),
        SecretString(zeroize::Zeroizing::new(values[2].clone())),
    );
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    s.metadata.annotations.insert(
        "kubectl.kubernetes.io/last-applied-configuration".into(),
        json!({"data": {"password": b64(&values[0])}, "stringData": {"plain": values[3]}})
            .to_string(),
    );
    let patch = json!({
        "data": {"password": b64(&values[4])},
        "stringData": {"token": values[5]},
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": values[3]}},
    });
    let json_patch = json!([{"op": "replace", "path": "/data/password", "value": b64(&values[4])}]);
    let as_json = serde_json::to_value(&s).unwrap();
    for level in ["None", "Metadata", "Request", "RequestResponse"] {
        let auditor = Auditor::new(policy(level), Arc::new(log.clone()));
        for (verb, body) in [
            ("create", Some(AuditObject::secret(&s))),
            ("update", Some(AuditObject::json(as_json.clone()))),
            ("patch", Some(AuditObject::json(patch.clone()))),
            ("patch", Some(AuditObject::json(json_patch.clone()))),
            ("get", None),
        ] {
            let attrs = Attributes {
                verb: verb.into(),
                ..get_db()
            };
            let mut rec = auditor.begin(&attrs, info());
            rec.request_received(&allow(), body).await.unwrap();
            rec.response_complete(ResponseStatus::success(200), Some(AuditObject::secret(&s)))
                .await
                .unwrap();
        }
        let list = Attributes {
            verb: "list".into(),
            name: String::new(),
            ..get_db()
        };
        let mut rec = auditor.begin(&list, info());
        rec.request_received(&allow(), None).await.unwrap();
        let items = [s.clone(), s.clone()];
        rec.response_complete(
            ResponseStatus::success(200),
            Some(AuditObject::secret_list(&items, "9", None)),
        )
        .await
        .unwrap();
        // A body of another resource that embeds a Secret.
        let other = Attributes {
            resource: "configmaps".into(),
            ..get_db()
        };
        let mut rec = auditor.begin(&other, info());
        rec.request_received(
            &allow(),
            Some(AuditObject::json(
                json!({"kind": "List", "items": [as_json.clone()]}),
            )),
        )
        .await
        .unwrap();
        rec.response_complete(ResponseStatus::success(200), None)
            .await
            .unwrap();
    }
    log.close().await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("\"password\":null"), "keys are listed");
    assert!(text.contains("RequestResponse"));
    for v in &values {
        for form in [
            v.clone(),
            b64(v),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v),
            hex::encode(v),
            hex::encode_upper(v),
        ] {
            assert!(!text.contains(&form), "{form} ({v}) reached the log");
        }
    }
    let report = crate::audit::verify(&[&path], &[key.public_key().clone()]).unwrap();
    assert!(report.is_intact(), "{:?}", report.problem);
}

/// A deferred `RequestReceived` is written with the next stage (in order), or alone when that
/// stage is omitted; nothing is written before.
#[tokio::test]
async fn a_deferred_request_received_goes_with_the_next_event() {
    let sink = Arc::new(MemorySink::new());
    let auditor = Auditor::new(policy("Metadata"), sink.clone());
    let mut rec = auditor.begin(&get_db(), info());
    rec.defer_request_received();
    rec.request_received(&allow(), None).await.unwrap();
    assert!(sink.events().is_empty(), "kept until the next stage");
    rec.response_complete(ResponseStatus::success(200), None)
        .await
        .unwrap();
    let stages: Vec<Stage> = sink.events().iter().map(Event::stage).collect();
    assert_eq!(stages, [Stage::RequestReceived, Stage::ResponseComplete]);

    // A failed write of the pair fails the request.
    let mut rec = auditor.begin(&get_db(), info());
    rec.defer_request_received();
    rec.request_received(&allow(), None).await.unwrap();
    sink.set_failing(true);
    assert!(rec
        .response_complete(ResponseStatus::success(200), None)
        .await
        .is_err());
    sink.set_failing(false);

    let omitting = Policy::parse(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [ResponseComplete]\nrules:\n- level: Metadata\n",
    )
    .unwrap();
    let sink = Arc::new(MemorySink::new());
    let auditor = Auditor::new(omitting, sink.clone());
    let mut rec = auditor.begin(&get_db(), info());
    rec.defer_request_received();
    rec.request_received(&allow(), None).await.unwrap();
    rec.response_complete(ResponseStatus::success(200), None)
        .await
        .unwrap();
    let stages: Vec<Stage> = sink.events().iter().map(Event::stage).collect();
    assert_eq!(stages, [Stage::RequestReceived]);
}

#[test]
fn audit_ids_are_distinct_version_4_uuids_across_refills() {
    let mut seen = std::collections::HashSet::new();
    // 4 KiB of randomness holds 256 ids: this crosses several refills.
    for _ in 0..1_000 {
        let id = new_audit_id();
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 4, "{id}");
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
        assert_eq!(parsed.hyphenated().to_string(), id, "the canonical text");
        assert!(seen.insert(id), "ids repeat");
    }
}

/// `sourceIPs` as kube-apiserver's `utilnet.SourceIPs`: every valid address of
/// `X-Forwarded-For`, `X-Real-Ip` unless among them, then the peer unless it is the last.
#[test]
fn source_ips_are_the_forwarded_then_the_peer() {
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let peer = ip("127.0.0.1");
    let fwd = forwarded_ips(Some("1.2.3.4, 5.6.7.8, bogus"), Some("9.9.9.9"));
    assert_eq!(fwd, [ip("1.2.3.4"), ip("5.6.7.8"), ip("9.9.9.9")]);
    assert_eq!(
        source_ips(&fwd, peer),
        ["1.2.3.4", "5.6.7.8", "9.9.9.9", "127.0.0.1"]
    );
    // The real IP already forwarded, the peer already last: neither twice.
    let fwd = forwarded_ips(Some("1.2.3.4,127.0.0.1"), Some("1.2.3.4"));
    assert_eq!(source_ips(&fwd, peer), ["1.2.3.4", "127.0.0.1"]);
    assert_eq!(source_ips(&forwarded_ips(None, None), peer), ["127.0.0.1"]);
    // An IPv4-mapped peer is written as IPv4.
    assert_eq!(source_ips(&[], ip("::ffff:10.0.0.1")), ["10.0.0.1"]);
}
