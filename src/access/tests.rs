//! The guarded store on a real sled store: audit before acting and fail closed, denied
//! requests recorded and refused, keys sealed (never plaintext), impersonation.

use std::sync::Arc;

use super::*;
use crate::audit::{MemorySink, Policy as AuditPolicy};
use crate::authn::Identity;
use crate::authz::rbac::parse_policy;
use crate::authz::Rbac;
use crate::backend::sled::{SledBackend, SledOptions};
use crate::encryption::config::{self, ParseOptions};
use crate::names::{Namespace, SecretName};
use crate::store::model::SecretBytes;
use crate::store::Secret;

const AESGCM: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm: {keys: [{name: k1, secret: MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=}]}\n";
const IDENTITY: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - identity: {}\n";

async fn store(dir: &std::path::Path, text: &str) -> Arc<Store> {
    let backend = Arc::new(SledBackend::open(dir, SledOptions::default()).unwrap());
    let cfg = config::parse(text, ParseOptions::default()).unwrap();
    let enc = Arc::new(crate::encryption::Encryption::build(&cfg).await);
    Arc::new(Store::new(backend, enc, "/registry"))
}

fn admin() -> RequestContext {
    let id = Identity::new("system:admin", "", vec!["system:masters".into()]);
    RequestContext::new(id, Source::InProcess, "/test")
}

fn app() -> RequestContext {
    RequestContext::new(Identity::new("app", "", vec![]), Source::InProcess, "/test")
}

/// The request an impersonating caller made: `get secrets/db` in `prod`.
fn original() -> Attributes {
    Attributes::resource(app().user, "get", "secrets")
        .with_namespace("prod")
        .with_name("db")
}

fn secret(name: &str, value: &[u8]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = name.into();
    s.metadata.namespace = "prod".into();
    s.data
        .insert("password".into(), SecretBytes::new(value.to_vec()));
    s
}

const POLICY: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r, namespace: prod}\nrules:\n  - {apiGroups: [\"\"], resources: [secrets], resourceNames: [db], verbs: [get]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: b, namespace: prod}\nsubjects:\n  - {kind: User, name: app, apiGroup: rbac.authorization.k8s.io}\nroleRef: {kind: Role, name: r, apiGroup: rbac.authorization.k8s.io}\n";

fn access(store: Arc<Store>, sink: Arc<MemorySink>) -> Access {
    let set = parse_policy([("policy.yaml", POLICY)]).unwrap().set;
    let policy = Arc::new(Policy::new(Rbac::new(&set)));
    let audit = AuditPolicy::parse(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: RequestResponse\n",
    )
    .unwrap();
    Access::new(store, policy, Auditor::new(audit, sink))
}

/// A store on `config` in a new directory, the [`access`] layer over it and its audit sink,
/// and `prod/db` created (value `value`) by the admin.
async fn with_db(
    config: &str,
    value: &[u8],
) -> (tempfile::TempDir, Arc<Store>, Arc<MemorySink>, Access) {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), config).await;
    let sink = Arc::new(MemorySink::new());
    let a = access(store.clone(), sink.clone());
    a.create(&admin(), secret("db", value), false)
        .await
        .unwrap();
    (dir, store, sink, a)
}

/// `prod` and `name`, as the store's operations take them.
fn prod(name: &str) -> (Namespace, SecretName) {
    (
        Namespace::try_from("prod").unwrap(),
        SecretName::try_from(name).unwrap(),
    )
}

/// The events `sink` holds from the `from`-th on, as JSON.
fn events_from(sink: &MemorySink, from: usize) -> Vec<serde_json::Value> {
    sink.events()[from..]
        .iter()
        .map(|e| serde_json::from_str(&e.to_json()).unwrap())
        .collect()
}

#[tokio::test]
async fn audit_first_and_fail_closed() {
    let (_dir, store, sink, a) = with_db(AESGCM, b"value-one").await;
    let (ns, db) = prod("db");
    // The app may get db, and the log shows both stages, with no value.
    let got = a.get(&app(), &ns, &db, None).await.unwrap();
    assert_eq!(got.data["password"].as_slice(), b"value-one");
    let events = sink.events();
    let stages: Vec<_> = events.iter().map(|e| e.stage().as_str()).collect();
    assert_eq!(
        stages,
        [
            "RequestReceived",
            "ResponseComplete",
            "RequestReceived",
            "ResponseComplete"
        ]
    );
    let log: String = events.iter().map(|e| e.to_json()).collect();
    assert!(!log.contains("value-one") && !log.contains("dmFsdWUtb25l"));
    // Denied: recorded (forbid) and refused with Kubernetes' message; nothing written.
    let e = a
        .update(&app(), secret("db", b"value-two"), false)
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "secrets \"db\" is forbidden: User \"app\" cannot update resource \"secrets\" in API group \"\" in the namespace \"prod\"");
    assert_eq!(e.reason(), Reason::Forbidden);
    let last = sink.events().pop().unwrap();
    assert_eq!(last.response_status().unwrap().code(), 403);
    // The sink fails: every request is refused before the store is touched.
    sink.set_failing(true);
    let e = a
        .update(&admin(), secret("db", b"value-three"), false)
        .await
        .unwrap_err();
    assert!(matches!(e, AccessError::AuditUnavailable(_)), "{e}");
    let e = a.get(&admin(), &ns, &db, None).await.unwrap_err();
    assert_eq!(e.reason(), Reason::ServiceUnavailable);
    sink.set_failing(false);
    let now = store.get(&ns, &db, None).await.unwrap();
    assert_eq!(now.data["password"].as_slice(), b"value-one");
    // The disk fills between a write's two events: it acted after its RequestReceived was
    // recorded, so its outcome is answered (kube-apiserver fails only on RequestReceived) and
    // its ResponseComplete is counted as lost; a read then has nothing recorded: refused.
    sink.fail_after(1);
    a.update(&admin(), secret("db", b"value-four"), false)
        .await
        .unwrap();
    assert_eq!(sink.lost_events(), 1);
    let now = store.get(&ns, &db, None).await.unwrap();
    assert_eq!(now.data["password"].as_slice(), b"value-four");
    assert_eq!(
        sink.events().last().unwrap().stage().as_str(),
        "RequestReceived"
    );
    let e = a.get(&admin(), &ns, &db, None).await.unwrap_err();
    assert!(matches!(e, AccessError::AuditUnavailable(_)), "{e}");
    assert_eq!(sink.lost_events(), 1, "a refused read lost nothing");
    // A refused credential is refused whatever happens to its event; one not written is
    // counted as lost, so the log says so once it can be written again.
    let attrs = Attributes::resource(Identity::new("", "", vec![]), "get", "secrets")
        .with_namespace("prod")
        .with_name("db");
    let info = crate::audit::RequestInfo::new("/test", crate::audit::Peer::Unix { uid: 1000 });
    a.record_unauthenticated(&attrs, info.clone(), "Unauthorized")
        .await;
    assert_eq!(sink.lost_events(), 2);
    sink.fail_after(1);
    let written = sink.events().len();
    a.record_unauthenticated(&attrs, info, "Unauthorized").await;
    assert_eq!((sink.lost_events(), sink.events().len()), (2, written + 1));
}

#[tokio::test]
async fn impersonation_needs_the_verb() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), AESGCM).await;
    let sink = Arc::new(MemorySink::new());
    let a = access(store, sink.clone());
    let req = ImpersonationRequest {
        user: "app".into(),
        ..Default::default()
    };
    let ctx = a.impersonate(admin(), &req, &original()).await.unwrap();
    assert_eq!(ctx.user.name, "app");
    assert_eq!(ctx.impersonator.unwrap().name, "system:admin");
    let req = ImpersonationRequest {
        user: "system:admin".into(),
        ..Default::default()
    };
    let e = a.impersonate(app(), &req, &original()).await.unwrap_err();
    let message = "users \"system:admin\" is forbidden: User \"app\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope";
    assert_eq!(e.to_string(), message);
    // Recorded as kube-apiserver's audit filter, which runs before impersonation, records
    // it: the request made, refused, with no authorization decision.
    let events = sink.events();
    let stages: Vec<_> = events.iter().map(|e| e.stage().as_str()).collect();
    assert_eq!(stages, ["RequestReceived", "ResponseComplete"]);
    for e in &events {
        assert_eq!(e.verb(), "get");
        let r = e.object_ref().unwrap();
        assert_eq!(
            (r.resource.as_str(), r.namespace.as_str(), r.name.as_str()),
            ("secrets", "prod", "db")
        );
        assert!(e.impersonated_user().is_none());
        assert!(
            !e.to_json().contains("authorization.k8s.io/"),
            "{}",
            e.to_json()
        );
    }
    let status = events[1].response_status().unwrap();
    assert_eq!(status.code(), 403);
    assert!(events[1]
        .to_json()
        .contains("User \\\"app\\\" cannot impersonate resource \\\"users\\\""));
    let req = ImpersonationRequest {
        groups: vec!["ops".into()],
        ..Default::default()
    };
    assert!(matches!(
        a.impersonate(admin(), &req, &original()).await,
        Err(AccessError::ImpersonationWithoutUser(_))
    ));
}

#[tokio::test]
async fn server_keys_are_sealed_and_refused_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), AESGCM).await;
    let keys = SealedKeys::new(store.clone());
    let k = keys
        .load_or_create(AUDIT_CHECKPOINT_KEY, || {
            Ok(zeroize::Zeroizing::new(vec![0x5a; 32]))
        })
        .await
        .unwrap();
    assert_eq!(k.as_slice(), [0x5a; 32]);
    // Outside the raw API's scope (the server's own keys are not Secrets): read the backend.
    let (raw, _) = store
        .backend()
        .get(b"/registry/keyward.io/keys/audit-checkpoint", None)
        .await
        .unwrap();
    let raw = raw.unwrap();
    assert!(raw.value.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
    assert!(!raw.value.windows(32).any(|w| w == [0x5a; 32]));
    // Loaded again, not regenerated.
    let again = keys
        .load_or_create(AUDIT_CHECKPOINT_KEY, || unreachable!("exists"))
        .await
        .unwrap();
    assert_eq!(again.as_slice(), k.as_slice());
    drop((keys, store));
    // With identity first, a key is never created.
    let dir = tempfile::tempdir().unwrap();
    let keys = SealedKeys::new(store_identity(dir.path()).await);
    let e = keys
        .load_or_create(SERVICE_ACCOUNT_SIGNING_KEY, || {
            Ok(zeroize::Zeroizing::new(vec![1; 32]))
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("stored in plaintext"), "{e}");
}

async fn store_identity(dir: &std::path::Path) -> Arc<Store> {
    store(dir, IDENTITY).await
}

/// The audit log records a store error with the reason the gRPC API answers with
/// (`api::to_status`): a bad continue token is the caller's 400 in both, not an internal error.
#[test]
fn audited_reasons_are_the_answered_ones() {
    let errors = || {
        vec![
            StoreError::BadContinue {
                why: "continue key is not valid".into(),
            },
            StoreError::MigrationRunning,
            StoreError::OutsideStore {
                field: "key",
                key: "/x".into(),
                scope: "/registry/secrets/".into(),
            },
            StoreError::Gone("1".into()),
            StoreError::NotFound {
                namespace: "prod".into(),
                name: "db".into(),
            },
            StoreError::Conflict {
                name: "db".into(),
                reason: "changed".into(),
            },
            StoreError::Backend(BackendError::Unavailable("down".into())),
        ]
    };
    for (e, same) in errors().into_iter().zip(errors()) {
        let answered = crate::reason::Reason::of(&crate::api::to_status(same));
        assert_eq!(Some(store_reason(&e)), answered, "{e}");
    }
}

/// A patch whose Secret changes between its read and its write is patched again on the new
/// version, as kube-apiserver's `GuaranteedUpdate` does: authorized and recorded once
/// (one `RequestReceived`, one `ResponseComplete`, the patch as request object), the other
/// writer's change kept. A patch that names its own resourceVersion is refused instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_retried_after_a_race_is_recorded_once() {
    let (_dir, store, sink, a) = with_db(IDENTITY, b"v1").await;
    let (ns, db) = prod("db");
    let before = sink.events().len();
    let rt = tokio::runtime::Handle::current();
    let mut reads = Vec::new();
    let request = || {
        Some(AuditObject::json(
            serde_json::json!({"metadata": {"labels": {"x": "1"}}}),
        ))
    };
    let patched = a
        .patch(
            &admin(),
            &ns,
            &db,
            false,
            request,
            |live: &Secret| -> Result<Secret, AccessError> {
                reads.push(live.metadata.resource_version.clone());
                if reads.len() == 1 {
                    // Another writer changes the Secret after this read.
                    let mut other = live.clone();
                    other
                        .data
                        .insert("other".into(), SecretBytes::new(b"w".to_vec()));
                    tokio::task::block_in_place(|| rt.block_on(store.update(other, false)))
                        .unwrap();
                }
                let mut next = live.clone();
                next.metadata.labels.insert("x".into(), "1".into());
                Ok(next)
            },
            None::<fn() -> Result<Secret, AccessError>>,
            |_| unreachable!("the patch applies to every version"),
        )
        .await
        .unwrap()
        .0;
    assert_eq!(reads.len(), 2, "read again after the race");
    assert_ne!(reads[0], reads[1]);
    assert_eq!(patched.metadata.labels["x"], "1");
    assert_eq!(patched.data["other"].as_slice(), b"w");
    let events = events_from(&sink, before);
    let stages: Vec<_> = events
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["RequestReceived", "ResponseComplete"],
        "{events:?}"
    );
    assert_eq!(events[0]["verb"], "patch");
    assert_eq!(events[1]["responseStatus"]["code"], 200);
    assert_eq!(
        events[1]["requestObject"],
        serde_json::json!({"metadata": {"labels": {"x": "1"}}})
    );
    // A resourceVersion of the patch's own is a precondition: read again after the race,
    // the patch still names the version it was written for, and the write is a 409, recorded.
    let before = sink.events().len();
    let mut named: Option<String> = None;
    let e = a
        .patch(
            &admin(),
            &ns,
            &db,
            false,
            || None,
            |live: &Secret| -> Result<Secret, AccessError> {
                let mut next = live.clone();
                if let Some(rv) = &named {
                    next.metadata.resource_version.clone_from(rv);
                    return Ok(next);
                }
                named = Some(live.metadata.resource_version.clone());
                let mut other = live.clone();
                other
                    .data
                    .insert("other".into(), SecretBytes::new(b"w2".to_vec()));
                tokio::task::block_in_place(|| rt.block_on(store.update(other, false))).unwrap();
                Ok(next)
            },
            None::<fn() -> Result<Secret, AccessError>>,
            |_| unreachable!(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::Conflict, "{e}");
    let stages: Vec<_> = sink.events()[before..]
        .iter()
        .map(|e| e.stage().as_str())
        .collect();
    assert_eq!(stages, ["RequestReceived", "ResponseComplete"]);
    let now = store.get(&ns, &db, None).await.unwrap();
    assert_eq!(now.data["other"].as_slice(), b"w2");

    // A patch of a Secret that is not there is a recorded 404 with its patch.
    let (_, nope) = prod("nope");
    let patch_doc = || {
        Some(AuditObject::json(
            serde_json::json!({"data": {"k": "dmFs"}}),
        ))
    };
    let never = |_: &Secret| -> Result<Secret, AccessError> { unreachable!("nothing to patch") };
    let before = sink.events().len();
    let e = a
        .patch(
            &admin(),
            &ns,
            &nope,
            false,
            patch_doc,
            never,
            None::<fn() -> Result<Secret, AccessError>>,
            |_| unreachable!(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Reason::NotFound, "{e}");
    let events = events_from(&sink, before);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["responseStatus"]["code"], 404);
    assert_eq!(
        events[1]["requestObject"],
        serde_json::json!({"data": {"k": null}})
    );
}

/// A patch whose Secret is deleted, or deleted and created again, between its read and its
/// write: kube-apiserver's patcher sets no uid precondition and re-reads on the conflict, so
/// the patch applies to the new Secret (never a 409 about a uid the client did not send), an
/// absent one is a 404, and a server-side apply creates it (201), recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_racing_a_delete_applies_to_what_is_there_then() {
    for (recreate, apply) in [(true, false), (false, false), (false, true), (true, true)] {
        let (_dir, store, sink, a) = with_db(IDENTITY, b"v1").await;
        let (ns, db) = prod("db");
        let rt = tokio::runtime::Handle::current();
        let first_uid = store.get(&ns, &db, None).await.unwrap().metadata.uid;
        let mut reads = 0;
        let before = sink.events().len();
        let patch = |live: &Secret| -> Result<Secret, AccessError> {
            reads += 1;
            if reads == 1 {
                // Another writer deletes the Secret after this read, and creates it again.
                tokio::task::block_in_place(|| {
                    rt.block_on(async {
                        store.delete(&ns, &db, &Default::default()).await.unwrap();
                        if recreate {
                            let mut again = live.clone();
                            again.metadata.uid.clear();
                            again.metadata.resource_version.clear();
                            store.create(again, false).await.unwrap();
                        }
                    })
                });
            }
            let mut next = live.clone();
            next.metadata.labels.insert("x".into(), "1".into());
            Ok(next)
        };
        let template = store.get(&ns, &db, None).await.unwrap();
        let create = || -> Result<Secret, AccessError> {
            let mut s = template.clone();
            s.metadata.uid.clear();
            s.metadata.resource_version.clear();
            s.metadata.labels.insert("created".into(), "1".into());
            Ok(s)
        };
        let result = a
            .patch(
                &admin(),
                &ns,
                &db,
                false,
                || None,
                patch,
                apply.then_some(create),
                |_| unreachable!(),
            )
            .await;
        let case = format!("recreate {recreate}, apply {apply}");
        let code = match (recreate, apply) {
            (true, _) => {
                let (s, created) = result.unwrap();
                assert!(!created, "{case}");
                assert_eq!(s.metadata.labels["x"], "1", "{case}");
                assert_ne!(s.metadata.uid, first_uid, "{case}");
                200
            }
            (false, true) => {
                let (s, created) = result.unwrap();
                assert!(created, "{case}");
                assert_eq!(s.metadata.labels["created"], "1", "{case}");
                201
            }
            (false, false) => {
                let e = result.unwrap_err();
                assert_eq!(e.reason(), Reason::NotFound, "{case}: {e}");
                404
            }
        };
        let events = events_from(&sink, before);
        assert_eq!(events.len(), 2, "{case}: {events:?}");
        assert_eq!(events[1]["responseStatus"]["code"], code, "{case}");
    }
}
