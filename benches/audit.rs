//! The audit log's cost per request, without the rest of a server: what a `get` at level
//! `Metadata` costs the access layer (the event template, the decision annotations, the
//! response's `objectRef`, serialising two events and appending them to the hash-chained log),
//! into a log that does not sync (`--audit-log-sync never`: CPU only) and into one that syncs
//! through its journal (one `fdatasync` per call here, as a lone client pays it). With the same
//! policy and the `RequestReceived` stage omitted, one event per call. At `Metadata` the response
//! gives only its reference (`AuditObject::reference`), as the access layer does. Compare with the server
//! figures in docs/benchmarks.md ("Authorization and audit").

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use keyward::audit::{
    AuditLog, AuditObject, Auditor, BatchConfig, Level, LogConfig, Peer, Policy, RequestInfo,
    ResponseStatus,
};
use keyward::authn::Identity;
use keyward::authz::{Attributes, Decision};
use keyward::crypto::Ed25519SigningKey;
use keyward::store::model::{ObjectMeta, Secret, SecretBytes};

const NONE: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n";
const METADATA: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n";
const METADATA_NO_RR: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n";

fn attrs() -> Attributes {
    Attributes {
        user: Identity::new("bench", "1001", vec!["system:authenticated".to_string()]),
        verb: "get".into(),
        api_group: String::new(),
        resource: "secrets".into(),
        subresource: String::new(),
        namespace: "bench".into(),
        name: "bench-0000114".into(),
        path: None,
    }
}

fn secret() -> Secret {
    let mut s = Secret {
        metadata: ObjectMeta {
            name: "bench-0000114".into(),
            namespace: "bench".into(),
            uid: "70a15a23-77f5-45a9-8085-1bd678e4dfe1".into(),
            resource_version: "517".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    s.data
        .insert("value".into(), SecretBytes::new(vec![b'x'; 1024]));
    s
}

/// One `get` as the access layer records it.
async fn one_get(auditor: &Auditor, attrs: &Attributes, decision: &Decision, secret: &Secret) {
    let info = RequestInfo::new("/keyward.v1.Secrets/Get", Peer::Unix { uid: 0 });
    let mut rec = auditor.begin(attrs, info);
    rec.defer_request_received();
    rec.request_received(decision, None).await.expect("written");
    // Below `RequestResponse` a get records no body (its objectRef takes nothing from it).
    let body = (rec.level() >= Level::RequestResponse).then(|| AuditObject::secret(secret));
    rec.response_complete(ResponseStatus::success(200), body)
        .await
        .expect("written");
}

fn bench_audit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let attrs = attrs();
    let secret = secret();
    let decision = Decision::Allow {
        reason: "RBAC: allowed by RoleBinding \"bench/bench\" of Role \"bench\" to User \"bench\""
            .into(),
    };
    let mut group = c.benchmark_group("audit_get");
    for (name, policy, fsync, batch) in [
        ("none", NONE, false, false),
        ("metadata_no_sync", METADATA, false, false),
        ("metadata_no_rr_no_sync", METADATA_NO_RR, false, false),
        ("metadata_batch", METADATA, false, true),
        ("metadata_no_rr_batch", METADATA_NO_RR, false, true),
        ("metadata_journal_sync", METADATA, true, false),
    ] {
        let path = dir.path().join(format!("{name}.log"));
        let signer = Arc::new(Ed25519SigningKey::generate().expect("key"));
        let log = rt
            .block_on(AuditLog::open(
                LogConfig {
                    fsync,
                    batch: batch.then(BatchConfig::default),
                    ..LogConfig::new(&path)
                },
                signer,
            ))
            .expect("log");
        let auditor = Auditor::new(
            Policy::parse(policy).expect("policy"),
            Arc::new(log.clone()),
        );
        group.bench_function(name, |b| {
            b.iter(|| rt.block_on(one_get(&auditor, &attrs, &decision, &secret)))
        });
        rt.block_on(log.close()).expect("close");
    }
    group.finish();
}

criterion_group!(benches, bench_audit);
criterion_main!(benches);
