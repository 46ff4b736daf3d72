//! Who may read which Secret, over the store's real Unix socket: every authentication path
//! (Unix peer, token file, bootstrap token, service account token) good, wrong, expired,
//! malformed and revoked; RBAC from manifests for each verb with allowed and denied names, with
//! the exact status code and Forbidden message, and denied writes changing nothing; the audit
//! log holding no Secret value, and `keyward audit verify` passing on the live server's log.

use std::path::Path;

use crate::support::store::{aesgcm_config, pb_secret, write_private};
use crate::support::{run, StoreHarness};
use keyward::access::{AccessOptions, AuditOptions};
use keyward::audit::{BatchConfig, LogConfig};
use keyward::backend::sled::SledOptions;
use keyward::backend::BackendSpec;
use keyward::pb::keyward_v1 as pb;
use keyward::pb::keyward_v1::auth_client::AuthClient;
use keyward::pb::keyward_v1::secrets_client::SecretsClient;
use keyward::server::StoreOptions;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// The README's policy: `app` may only get `secrets/db` in `prod`; group `ops` may do
/// anything with Secrets in `prod`; the service account `prod:app` and bootstrap tokens may
/// get `db` too.
const POLICY: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: db-reader, namespace: prod}
rules:
  - apiGroups: [""]
    resources: [secrets]
    resourceNames: [db]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app-reads-db, namespace: prod}
subjects:
  - {kind: User, name: app, apiGroup: rbac.authorization.k8s.io}
  - {kind: ServiceAccount, name: app, namespace: prod}
  - {kind: Group, name: "system:bootstrappers", apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: Role, name: db-reader, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secret-admin, namespace: prod}
rules:
  - apiGroups: [""]
    resources: [secrets]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ops-admin, namespace: prod}
subjects:
  - {kind: Group, name: ops, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: Role, name: secret-admin, apiGroup: rbac.authorization.k8s.io}
"#;

const APP_TOKEN: &str = "app-token-0123456789abcdef";
const OPS_TOKEN: &str = "ops-token-0123456789abcdef";
const REVOKED_TOKEN: &str = "revoked-token-0123456789ab";
const BOOTSTRAP: &str = "abcdef.0123456789abcdef";

/// Every value written by the tests; none may appear in the audit log.
const VALUES: [&[u8]; 4] = [
    b"db-password-1",
    b"db-password-2",
    b"cache-pass",
    b"ops-new-val",
];

struct World {
    _dir: tempfile::TempDir,
    server: StoreHarness,
    audit: std::path::PathBuf,
    tokens: std::path::PathBuf,
    policy: std::path::PathBuf,
}

async fn start() -> World {
    start_with(None).await
}

/// [`start`], with the audit log in batch mode when `batch` is set.
async fn start_with(batch: Option<BatchConfig>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("policy.yaml"), POLICY).unwrap();
    let tokens = d.join("tokens.csv");
    write_private(
        &tokens,
        format!(
            "{APP_TOKEN},app,1001\n{OPS_TOKEN},olga,1002,\"ops,dev\"\n{REVOKED_TOKEN},gone,1003\n"
        )
        .as_bytes(),
    );
    std::fs::write(
        d.join("audit-policy.yaml"),
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: RequestResponse\n",
    )
    .unwrap();
    let audit = d.join("audit.log");
    let mut log = LogConfig::new(&audit);
    log.checkpoint_every = 10;
    log.batch = batch;
    let mut o = StoreOptions::new(
        BackendSpec::Sled {
            dir: d.join("store"),
            options: SledOptions::default(),
        },
        aesgcm_config(d),
        d.join("kw.sock"),
    );
    o.access_control = AccessOptions {
        token_auth_files: vec![tokens.clone()],
        bootstrap_tokens: true,
        authorization_policy: Some(d.join("policy.yaml")),
        audit: Some(AuditOptions {
            log,
            policy_file: Some(d.join("audit-policy.yaml")),
        }),
        reload_interval: std::time::Duration::from_millis(50),
        ..AccessOptions::default()
    };
    let server = StoreHarness::start(o).await;
    let policy = d.join("policy.yaml");
    World {
        _dir: dir,
        server,
        audit,
        tokens,
        policy,
    }
}

async fn channel(w: &World) -> Channel {
    keyward::uds::unix_channel(&w.server.socket).await.unwrap()
}

fn req<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

fn get(ns: &str, name: &str) -> pb::GetRequest {
    pb::GetRequest {
        namespace: ns.into(),
        name: name.into(),
        revision: 0,
    }
}

/// Creates `prod/db` and `prod/cache` as the admin.
async fn create_db_and_cache(admin: &mut SecretsClient<Channel>) {
    for (name, v) in [("db", VALUES[0]), ("cache", VALUES[2])] {
        admin
            .create(pb::CreateRequest {
                secret: Some(pb_secret("prod", name, &[("password", v)])),
                dry_run: false,
            })
            .await
            .unwrap();
    }
}

/// Every Secret operation as `token`, named for the report: `Ok(())` or the status.
async fn each_op(
    c: &mut SecretsClient<Channel>,
    token: Option<&str>,
    name: &str,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let ns = "prod";
    let mut out = Vec::new();
    out.push(("get", c.get(req(get(ns, name), token)).await.map(|_| ())));
    out.push((
        "history",
        c.history(req(
            pb::HistoryRequest {
                namespace: ns.into(),
                name: name.into(),
            },
            token,
        ))
        .await
        .map(|_| ()),
    ));
    out.push((
        "list",
        c.list(req(
            pb::ListRequest {
                namespace: ns.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|_| ()),
    ));
    out.push((
        "watch",
        c.watch(req(
            pb::WatchRequest {
                namespace: ns.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|_| ()),
    ));
    out.push((
        "create",
        c.create(req(
            pb::CreateRequest {
                secret: Some(pb_secret(ns, &format!("{name}-new"), &[("v", b"x")])),
                dry_run: true,
            },
            token,
        ))
        .await
        .map(|_| ()),
    ));
    out.push((
        "update",
        c.update(req(
            pb::UpdateRequest {
                secret: Some(pb_secret(ns, name, &[("v", VALUES[3])])),
                dry_run: true,
            },
            token,
        ))
        .await
        .map(|_| ()),
    ));
    out.push((
        "rollback",
        c.rollback(req(
            pb::RollbackRequest {
                namespace: ns.into(),
                name: name.into(),
                to_revision: 1_000_000,
            },
            token,
        ))
        .await
        .map(|_| ()),
    ));
    out.push((
        "delete",
        c.delete(req(
            pb::DeleteRequest {
                namespace: ns.into(),
                name: name.into(),
                resource_version: "1".into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|_| ()),
    ));
    out
}

fn forbidden(user: &str, verb: &str, name: &str) -> String {
    let what = if name.is_empty() {
        "secrets".to_owned()
    } else {
        format!("secrets \"{name}\"")
    };
    format!("{what} is forbidden: User \"{user}\" cannot {verb} resource \"secrets\" in API group \"\" in the namespace \"prod\"")
}

/// The name each operation is authorized on (create, list and watch carry none).
fn authorized_name<'a>(op: &str, name: &'a str) -> &'a str {
    match op {
        "create" | "list" | "watch" => "",
        _ => name,
    }
}

fn verb(op: &str) -> &str {
    match op {
        "history" => "get",
        "rollback" => "update",
        op => op,
    }
}

/// Asserts that `user` may do exactly `allowed` (as ops) and is refused the rest with the
/// exact Forbidden message.
fn check(user: &str, name: &str, results: &[(&str, Result<(), tonic::Status>)], allowed: &[&str]) {
    for (op, r) in results {
        if allowed.contains(op) {
            // Allowed: authorization passed (the store may still answer, e.g. a conflict).
            if let Err(e) = r {
                assert_ne!(
                    e.code(),
                    Code::PermissionDenied,
                    "{user} {op} {name}: {e:?}"
                );
                assert_ne!(e.code(), Code::Unauthenticated, "{user} {op} {name}: {e:?}");
            }
        } else {
            let e = r
                .as_ref()
                .expect_err(&format!("{user} {op} {name} must be refused"));
            assert_eq!(
                e.code(),
                Code::PermissionDenied,
                "{user} {op} {name}: {e:?}"
            );
            assert_eq!(
                e.message(),
                forbidden(user, verb(op), authorized_name(op, name)),
                "{op}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_read_which_secret() {
    who_may_read_which_secret_with(None).await;
}

/// The same with the audit log in batch mode (`--audit-log-mode batch`): requests do not wait
/// for their events, and every event is in the log once the server has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_read_which_secret_audited_in_batches() {
    who_may_read_which_secret_with(Some(BatchConfig {
        buffer_size: 4,
        max_wait: std::time::Duration::from_millis(2),
    }))
    .await;
}

async fn who_may_read_which_secret_with(batch: Option<BatchConfig>) {
    let w = start_with(batch).await;
    let ch = channel(&w).await;
    let mut admin = SecretsClient::new(ch.clone());
    let mut auth = AuthClient::new(ch.clone());
    // The test's own uid is the server's: system:admin in system:masters.
    let me = auth
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.username, "system:admin");
    assert!(me.groups.contains(&"system:masters".to_owned()));
    create_db_and_cache(&mut admin).await;
    admin
        .update(pb::UpdateRequest {
            secret: Some(pb_secret("prod", "db", &[("password", VALUES[1])])),
            dry_run: false,
        })
        .await
        .unwrap();
    // The bootstrap token's Secret, and a service account token.
    let bootstrap = |name: &str, id: &str, extra: &[(&str, &[u8])]| {
        let mut data: Vec<(&str, &[u8])> = vec![
            ("token-id", id.as_bytes()),
            ("token-secret", b"0123456789abcdef"),
            ("usage-bootstrap-authentication", b"true"),
        ];
        data.extend_from_slice(extra);
        let mut s = pb_secret("kube-system", name, &data);
        s.r#type = "bootstrap.kubernetes.io/token".into();
        s
    };
    for s in [
        bootstrap("bootstrap-token-abcdef", "abcdef", &[]),
        bootstrap(
            "bootstrap-token-expird",
            "expird",
            &[("expiration", b"2009-11-10T23:00:00Z")],
        ),
    ] {
        admin
            .create(pb::CreateRequest {
                secret: Some(s),
                dry_run: false,
            })
            .await
            .unwrap();
    }
    let sa_token = auth
        .create_token(pb::CreateTokenRequest {
            namespace: "prod".into(),
            service_account: "app".into(),
            audiences: vec![],
            expiration_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let other_audience = auth
        .create_token(pb::CreateTokenRequest {
            namespace: "prod".into(),
            service_account: "app".into(),
            audiences: vec!["somebody-else".into()],
            expiration_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner()
        .token;

    let mut c = SecretsClient::new(ch.clone());
    // Good credentials: each identity × each verb × allowed and denied names.
    let sa_user = "system:serviceaccount:prod:app";
    let bootstrap_user = "system:bootstrap:abcdef";
    let mut read_at = Vec::new();
    for (token, user) in [
        (APP_TOKEN, "app"),
        (sa_token.as_str(), sa_user),
        (BOOTSTRAP, bootstrap_user),
    ] {
        let r = each_op(&mut c, Some(token), "db").await;
        check(user, "db", &r, &["get", "history"]);
        let r = each_op(&mut c, Some(token), "cache").await;
        check(user, "cache", &r, &[]);
        // The allowed read returns the current value.
        let s = c.get(req(get("prod", "db"), Some(token))).await.unwrap();
        let s = s.into_inner();
        assert_eq!(s.data["password"], VALUES[1]);
        // A read of a version by its revision is recorded as one (the URI names it).
        let rv: i64 = s.metadata.unwrap().resource_version.parse().unwrap();
        let at = pb::GetRequest {
            revision: rv,
            ..get("prod", "db")
        };
        c.get(req(at, Some(token))).await.unwrap();
        read_at.push(format!("/keyward.v1.Secrets/Get?revision={rv}"));
    }
    let all = [
        "get", "history", "list", "watch", "create", "update", "rollback", "delete",
    ];
    for name in ["db", "cache"] {
        let r = each_op(&mut c, Some(OPS_TOKEN), name).await;
        check("olga", name, &r, &all);
    }
    // Another namespace is refused to the operators too.
    let e = c
        .get(req(get("default", "db"), Some(OPS_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "secrets \"db\" is forbidden: User \"olga\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\"");
    // Listing every namespace is cluster scope.
    let e = c
        .list(req(pb::ListRequest::default(), Some(OPS_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(e.message(), "secrets is forbidden: User \"olga\" cannot list resource \"secrets\" in API group \"\" at the cluster scope");

    // Denied writes change nothing.
    for (op, r) in each_op(&mut c, Some(APP_TOKEN), "db").await {
        if !matches!(op, "get" | "history") {
            assert_eq!(r.unwrap_err().code(), Code::PermissionDenied, "{op}");
        }
    }
    let e = c
        .update(req(
            pb::UpdateRequest {
                secret: Some(pb_secret("prod", "db", &[("password", VALUES[3])])),
                dry_run: false,
            },
            Some(APP_TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = c
        .delete(req(
            pb::DeleteRequest {
                namespace: "prod".into(),
                name: "db".into(),
                ..Default::default()
            },
            Some(APP_TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let now = admin.get(get("prod", "db")).await.unwrap().into_inner();
    assert_eq!(now.data["password"], VALUES[1]);
    let names: Vec<String> = admin
        .list(pb::ListRequest {
            namespace: "prod".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|s| s.metadata.unwrap().name)
        .collect();
    assert_eq!(names, ["cache", "db"]);

    // Wrong, expired, malformed credentials: Unauthenticated, never a fallback to the peer.
    let jwt_other_key = format!(
        "{}.{}",
        sa_token.rsplit_once('.').unwrap().0,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    );
    for bad in [
        "wrong-token-0123456789abcdef",
        "abcdef.ffffffffffffffff",
        "expird.0123456789abcdef",
        "abcdef.0123456789ABCDEF",
        "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln",
        jwt_other_key.as_str(),
        other_audience.as_str(),
    ] {
        let e = c.get(req(get("prod", "db"), Some(bad))).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{bad}");
        assert_eq!(e.message(), "invalid bearer token", "{bad}");
    }

    // Revoked: a token removed from the file stops working once the file is reloaded.
    let e = c
        .get(req(get("prod", "db"), Some(REVOKED_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    write_private(
        &w.tokens,
        format!("{APP_TOKEN},app,1001\n{OPS_TOKEN},olga,1002,\"ops,dev\"\n").as_bytes(),
    );
    wait_until_unauthenticated(&mut c, REVOKED_TOKEN).await;
    // A bootstrap token whose Secret is deleted.
    admin
        .delete(pb::DeleteRequest {
            namespace: "kube-system".into(),
            name: "bootstrap-token-abcdef".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = c
        .get(req(get("prod", "db"), Some(BOOTSTRAP)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // A legacy service-account-token Secret: filled by the server, revoked by deleting it.
    let mut legacy = pb_secret("prod", "app-token", &[]);
    legacy.r#type = "kubernetes.io/service-account-token".into();
    legacy
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .insert("kubernetes.io/service-account.name".into(), "app".into());
    let legacy = admin
        .create(pb::CreateRequest {
            secret: Some(legacy),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    // The create's answer holds no token (upstream's controller fills it in a later write):
    // `create` alone hands out no credential; `get` reads it.
    assert!(legacy.data.is_empty(), "{:?}", legacy.data.keys());
    let legacy = admin
        .get(get("prod", "app-token"))
        .await
        .unwrap()
        .into_inner();
    let legacy_token = String::from_utf8(legacy.data["token"].clone()).unwrap();
    assert_eq!(legacy.data["namespace"], b"prod");
    c.get(req(get("prod", "db"), Some(&legacy_token)))
        .await
        .unwrap();
    admin
        .delete(pb::DeleteRequest {
            namespace: "prod".into(),
            name: "app-token".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = c
        .get(req(get("prod", "db"), Some(&legacy_token)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Impersonation: the admin acting as app is app; app may not impersonate.
    let mut as_app = Request::new(get("prod", "cache"));
    as_app
        .metadata_mut()
        .insert("impersonate-user", "app".parse().unwrap());
    let e = admin.get(as_app).await.unwrap_err();
    assert_eq!(e.message(), forbidden("app", "get", "cache"));
    let mut r = req(get("prod", "db"), Some(APP_TOKEN));
    r.metadata_mut()
        .insert("impersonate-user", "olga".parse().unwrap());
    let e = c.get(r).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(e.message(), "users \"olga\" is forbidden: User \"app\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope");
    // A uid or extra is checked as on the Kubernetes API, never ignored: alone it is
    // InvalidArgument; beside a user, app may not impersonate it.
    let with = |pairs: &[(&'static str, &str)]| {
        let mut r = req(get("prod", "db"), Some(APP_TOKEN));
        for (k, v) in pairs {
            r.metadata_mut().append(*k, v.parse().unwrap());
        }
        r
    };
    let e = c.get(with(&[("impersonate-uid", "u1")])).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "requested [{UID  u1  authentication.k8s.io/v1  }] without impersonating a user"
        )
    );
    let e = c
        .get(with(&[("impersonate-extra-scopes", "s1")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    let e = c
        .get(with(&[
            ("impersonate-user", "app"),
            ("impersonate-uid", "u1"),
        ]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());

    // The policy is reloaded when its file changes; an invalid file keeps the policy in force.
    let list_as_app = || {
        req(
            pb::ListRequest {
                namespace: "prod".into(),
                ..Default::default()
            },
            Some(APP_TOKEN),
        )
    };
    // A rollback answers an earlier version's values: `update` alone does not allow it.
    std::fs::write(
        &w.policy,
        POLICY.replacen("verbs: [get]", "verbs: [update]", 1),
    )
    .unwrap();
    let rollback = || {
        let r = pb::RollbackRequest {
            namespace: "prod".into(),
            name: "db".into(),
            to_revision: 1,
        };
        req(r, Some(APP_TOKEN))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let e = c.rollback(rollback()).await.unwrap_err();
        if e.message() == forbidden("app", "get", "db") {
            break;
        }
        assert_eq!(e.message(), forbidden("app", "update", "db"), "{e:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "policy never reloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // (A rule naming db would not do: a list without a field selector names no object, so
    // resourceNames never match it; see `one_secret_is_listed_and_watched_by_name`.)
    let more = "verbs: [get]\n  - apiGroups: [\"\"]\n    resources: [secrets]\n    verbs: [list]";
    std::fs::write(&w.policy, POLICY.replacen("verbs: [get]", more, 1)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.list(list_as_app()).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "policy never reloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    std::fs::write(&w.policy, "kind: Role\nmetadata: {name: broken}\n").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.list(list_as_app()).await.unwrap();

    // A watch, allowed as a whole, then the server stops: the audit log is sealed.
    let mut events = admin
        .watch(pb::WatchRequest {
            namespace: "prod".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(events.next().await.is_some());
    drop(events);
    let mut w = w;
    w.server.stop().await;

    // No value ever reached the audit log, in plain text or base64.
    let log = std::fs::read(&w.audit).unwrap();
    assert!(log.len() > 1000, "the audit log recorded requests");
    let text = String::from_utf8_lossy(&log);
    use base64::Engine as _;
    for v in VALUES {
        let b64 = base64::engine::general_purpose::STANDARD.encode(v);
        for needle in [String::from_utf8_lossy(v).into_owned(), b64] {
            assert!(!text.contains(&needle), "{needle} is in the audit log");
        }
    }
    for t in [
        APP_TOKEN,
        OPS_TOKEN,
        sa_token.as_str(),
        legacy_token.as_str(),
        "0123456789abcdef",
    ] {
        assert!(!text.contains(t), "a credential is in the audit log");
    }
    assert!(text.contains("\"authorization.k8s.io/decision\":\"forbid\""));
    for uri in &read_at {
        assert!(
            text.contains(&format!("\"requestURI\":\"{uri}\"")),
            "no read of {uri}"
        );
    }
    assert!(text.contains("\"username\":\"olga\""));
    // A refused credential is recorded, as kube-apiserver does: what was attempted, 401.
    let refused: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["responseStatus"]["code"] == 401)
        .collect();
    assert!(!refused.is_empty(), "no failed authentication was recorded");
    for e in &refused {
        assert_eq!(e["stage"], "ResponseStarted");
        assert_eq!(e["user"], serde_json::json!({}));
        assert_eq!(
            e["responseStatus"]["message"],
            "Authentication failed, attempted: bearer"
        );
    }
    // Each recorded as the request its call makes (a policy on Secrets sees it): the revoked
    // legacy token's get of prod/db.
    assert!(
        refused.iter().any(|e| e["verb"] == "get"
            && e["objectRef"]
                == serde_json::json!({"resource": "secrets", "namespace": "prod", "name": "db", "apiVersion": "v1"})),
        "{refused:?}"
    );
    // So is a refused impersonation: app's get of prod/db, as app, 403, no decision.
    let impersonating: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| {
            e["responseStatus"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("users \"olga\" is forbidden"))
        })
        .collect();
    assert_eq!(impersonating.len(), 1, "{impersonating:?}");
    let e = &impersonating[0];
    assert_eq!(e["verb"], "get");
    assert_eq!(e["user"]["username"], "app");
    assert_eq!(e["objectRef"]["resource"], "secrets");
    assert_eq!(e["objectRef"]["namespace"], "prod");
    assert_eq!(e["objectRef"]["name"], "db");
    assert_eq!(e["responseStatus"]["code"], 403);
    assert!(
        e["annotations"]
            .get("authorization.k8s.io/decision")
            .is_none(),
        "{e}"
    );
    verify_log(&w.audit);
}

/// A list or watch whose field selector names one Secret is authorized with that name, as
/// kube-apiserver authorizes it: an identity allowed get, list and watch of `db` alone
/// (resourceNames) lists and follows `db`, sees nothing of the others, and is refused a list
/// or watch of the namespace or of another name; `keyward mount --watch` follows `db` with
/// exactly these permissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_secret_is_listed_and_watched_by_name() {
    let w = start().await;
    let ch = channel(&w).await;
    let mut admin = SecretsClient::new(ch.clone());
    let mut app = SecretsClient::new(ch);
    create_db_and_cache(&mut admin).await;
    let named = "verbs: [get, list, watch]";
    std::fs::write(&w.policy, POLICY.replacen("verbs: [get]", named, 1)).unwrap();
    let list = |fields: &str| {
        req(
            pb::ListRequest {
                namespace: "prod".into(),
                field_selector: fields.into(),
                ..Default::default()
            },
            Some(APP_TOKEN),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let page = loop {
        match app.list(list("metadata.name=db")).await {
            Ok(p) => break p.into_inner(),
            Err(e) => {
                assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "policy never reloaded"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let names: Vec<_> = page
        .items
        .iter()
        .map(|s| s.metadata.clone().unwrap_or_default().name)
        .collect();
    assert_eq!(names, ["db"]);
    for (fields, verb, name) in [
        ("", "list", ""),
        ("metadata.name=cache", "list", "cache"),
        ("metadata.name!=cache", "list", ""),
        ("type=Opaque", "list", ""),
    ] {
        let e = app.list(list(fields)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{fields}");
        assert_eq!(e.message(), forbidden("app", verb, name), "{fields}");
    }
    let e = app.list(list("spec.x=1")).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (
            Code::InvalidArgument,
            "field_selector: field label not supported: spec.x"
        )
    );
    let watch = |fields: &str| {
        req(
            pb::WatchRequest {
                namespace: "prod".into(),
                resource_version: page.resource_version.clone(),
                field_selector: fields.into(),
                ..Default::default()
            },
            Some(APP_TOKEN),
        )
    };
    for (fields, name) in [("", ""), ("metadata.name=cache", "cache")] {
        let e = app.watch(watch(fields)).await.unwrap_err();
        assert_eq!(e.message(), forbidden("app", "watch", name), "{fields}");
    }
    let mut events = app
        .watch(watch("metadata.name=db"))
        .await
        .unwrap()
        .into_inner();
    for (name, v) in [("cache", VALUES[2]), ("db", VALUES[1])] {
        admin
            .update(pb::UpdateRequest {
                secret: Some(pb_secret("prod", name, &[("password", v)])),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    let secret = ev.object.unwrap_or_default();
    assert_eq!(
        (
            ev.r#type.as_str(),
            secret.metadata.unwrap_or_default().name.as_str()
        ),
        ("MODIFIED", "db")
    );
    assert_eq!(secret.data["password"], VALUES[1]);
    drop(events);

    // `keyward mount --watch` as app: the file follows db's changes.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("app.token");
    write_private(&token_file, APP_TOKEN.as_bytes());
    let target = dir.path().join("db");
    // The keyward CLI as app, on the server's socket.
    let as_app = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        c.args(args)
            .arg("--token-file")
            .arg(&token_file)
            .arg("--server")
            .arg(format!("unix://{}", w.server.socket.display()))
            .stdin(std::process::Stdio::null());
        c
    };
    let mut mount = as_app(&["mount", "secret/db", "-n", "prod", "--watch"])
        .arg(&target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let file = target.join("password");
    let wait_for = |want: &[u8]| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::read(&file).ok().as_deref() != Some(want) {
            assert!(
                std::time::Instant::now() < deadline,
                "{file:?} never held {want:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    tokio::task::block_in_place(|| wait_for(VALUES[1]));
    admin
        .update(pb::UpdateRequest {
            secret: Some(pb_secret("prod", "db", &[("password", VALUES[0])])),
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::task::block_in_place(|| wait_for(VALUES[0]));
    mount.kill().unwrap();
    let out = mount.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("forbidden"), "{err}");

    // `keyward get secret db --watch` as app: the row, then db's next change.
    let mut get = as_app(&["get", "secret", "db", "-n", "prod", "--watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = get.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let line = || {
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("a line")
    };
    tokio::task::block_in_place(|| {
        assert!(line().starts_with("NAME"));
        assert!(line().starts_with("db "));
    });
    admin
        .update(pb::UpdateRequest {
            secret: Some(pb_secret("prod", "db", &[("password", VALUES[1])])),
            ..Default::default()
        })
        .await
        .unwrap();
    let changed = tokio::task::block_in_place(line);
    assert!(changed.contains("db"), "{changed}");
    get.kill().unwrap();
    let out = get.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("forbidden"), "{err}");
}

async fn wait_until_unauthenticated(c: &mut SecretsClient<Channel>, token: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let e = c
            .get(req(get("prod", "db"), Some(token)))
            .await
            .unwrap_err();
        if e.code() == Code::Unauthenticated {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reloaded: {e:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `keyward audit verify` passes on the server's log with the public key written beside it,
/// and names the line after an edit.
fn verify_log(log: &Path) {
    let key = keyward::access::public_key_path(log);
    let (ok, out, err) = run(&[
        "audit",
        "verify",
        log.to_str().unwrap(),
        "--public-key",
        key.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    let text = std::fs::read_to_string(log).unwrap();
    let edited = text.replacen("\"username\":\"olga\"", "\"username\":\"eve\"", 1);
    std::fs::write(log, edited).unwrap();
    let (ok, out, err) = run(&[
        "audit",
        "verify",
        log.to_str().unwrap(),
        "--public-key",
        key.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(format!("{out}{err}").contains("line"), "{out}{err}");
}
