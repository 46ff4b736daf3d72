//! The store's `/metrics` on real processes (`keyward dev`, `keyward server`), parsed by Python
//! prometheus_client's parser: calls, objects, watches, migration and sled's group commit are
//! counted; no Secret name or value, and no key id in clear, reaches a label. And the Grafana
//! dashboard and the alert rules in deploy/ only name metrics a real scrape has.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::metrics::{label_values, names, parse, scrape, scrape_parsed, value, Family};
use crate::support::plugin::{decrypt, status, Cluster};
use crate::support::store::{aesgcm_config, secrets_client};
use crate::support::{client_runtime, free_port, run, Proc};
use keyward::pb::keyward_v1 as pb;

const SECRET_NAME: &str = "very-private-name";
const SECRET_VALUE: &[u8] = b"s3cret-value-in-no-label";
const DURATION: &str = "keyward_store_request_duration_seconds_count";

fn create(name: &str) -> pb::CreateRequest {
    pb::CreateRequest {
        secret: Some(pb::Secret {
            metadata: Some(pb::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            data: [("v".to_owned(), SECRET_VALUE.to_vec())]
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        dry_run: false,
    }
}

fn get(name: &str) -> pb::GetRequest {
    pb::GetRequest {
        namespace: String::new(),
        name: name.into(),
        revision: 0,
    }
}

/// `keyward dev` on `data` with metrics on a free port; (process, metrics address).
fn dev(dir: &Path, data: &Path, extra: &[&str]) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "dev",
        "--data",
        data.to_str().unwrap(),
        "--metrics-listen",
        &addr,
    ];
    args.extend_from_slice(extra);
    let proc = Proc::spawn(&args, &[], &dir.join("dev.log"), &data.join("keyward.sock"));
    (proc, addr)
}

/// Polls the scrape until `check` holds (10 s at most); the last families.
/// How many Creates ended OK, by their duration histogram.
fn created(f: &[Family]) -> f64 {
    value(
        f,
        DURATION,
        &[("method", "/keyward.v1.Secrets/Create"), ("code", "OK")],
    )
}

fn scrape_until(addr: &str, check: impl Fn(&[Family]) -> bool) -> Vec<Family> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = scrape_parsed(addr);
        if check(&f) || Instant::now() > deadline {
            return f;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dev_counts_calls_objects_watches_and_migrations_and_names_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let sock = data.join("keyward.sock");
    let (p, addr) = dev(dir.path(), &data, &["--log-format", "json"]);
    let rt = client_runtime();
    let mut c = rt.block_on(secrets_client(&sock));
    for i in 0..2 {
        rt.block_on(c.create(create(&format!("{SECRET_NAME}-{i}"))))
            .unwrap();
    }
    // A call's duration is observed once its response has gone: wait for both.
    let first = scrape_until(&addr, |f| created(f) == 2.0);
    assert_eq!(created(&first), 2.0);
    assert_eq!(value(&first, "keyward_store_objects", &[]), 2.0);
    // The embedded store's writer (the log-structured engine, dev's default): one batch per
    // durable write at least, each synced.
    let batches = value(&first, "keyward_store_write_batch_size_count", &[]);
    assert!(batches >= 1.0, "{first:?}");
    assert_eq!(
        value(
            &first,
            "keyward_store_fsync_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        value(&first, "keyward_store_fsync_duration_seconds_count", &[])
    );
    // Commits (log records made durable; on sled, layers written to sled) are never more than
    // the syncs.
    let commits = value(&first, "keyward_store_commits_total", &[]);
    assert!(
        commits <= value(&first, "keyward_store_fsync_duration_seconds_count", &[]),
        "{first:?}"
    );
    // dev is both products in one registry: the store's kms v2 provider called the plugin.
    assert!(
        value(
            &first,
            "keyward_kms_request_duration_seconds_count",
            &[
                ("method", "/v2.KeyManagementService/Encrypt"),
                ("code", "OK")
            ]
        ) >= 1.0
    );

    // More calls: a read, a refused read, and a watch held open.
    rt.block_on(c.get(get(&format!("{SECRET_NAME}-0"))))
        .unwrap();
    let missing = rt.block_on(c.get(get("no-such-secret"))).unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let watch = rt
        .block_on(c.watch(pb::WatchRequest {
            field_selector: String::new(),
            namespace: String::new(),
            resource_version: String::new(),
            label_selector: String::new(),
        }))
        .unwrap()
        .into_inner();
    let watching = scrape_until(&addr, |f| value(f, "keyward_store_watchers", &[]) == 1.0);
    assert_eq!(value(&watching, "keyward_store_watchers", &[]), 1.0);
    assert_eq!(
        value(
            &watching,
            "keyward_store_requests_in_flight",
            &[("method", "/keyward.v1.Secrets/Watch")]
        ),
        1.0
    );
    let get_ok = &[("method", "/keyward.v1.Secrets/Get"), ("code", "OK")];
    let get_missing = &[("method", "/keyward.v1.Secrets/Get"), ("code", "NotFound")];
    assert_eq!(value(&watching, DURATION, get_ok), 1.0);
    assert_eq!(value(&watching, DURATION, get_missing), 1.0);
    assert_eq!(
        value(&watching, "keyward_store_request_errors_total", get_missing),
        1.0
    );
    drop(watch);
    let closed = scrape_until(&addr, |f| value(f, "keyward_store_watchers", &[]) == 0.0);
    assert_eq!(value(&closed, "keyward_store_watchers", &[]), 0.0);

    // A migration, through the CLI: counted when it ends, with its objects.
    let server = format!("unix://{}", sock.display());
    let (ok, _, err) = run(&["migrate", "--server", &server]);
    assert!(ok, "{err}");
    let migrated = scrape_parsed(&addr);
    assert_eq!(
        value(
            &migrated,
            "keyward_store_migrations_total",
            &[("result", "finished")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &migrated,
            "keyward_store_migration_objects",
            &[("objects", "found")]
        ),
        2.0
    );
    assert_eq!(
        value(&migrated, "keyward_store_migration_running", &[]),
        0.0
    );

    // An authorization denial, counted by verb: the server's own user impersonates one that
    // no policy allows anything.
    let (ok, _, err) = run(&[
        "get",
        "secret",
        SECRET_NAME,
        "--server",
        &server,
        "--as",
        "nobody",
    ]);
    assert!(!ok && err.contains("forbidden"), "{err}");
    let denied = scrape_parsed(&addr);
    assert_eq!(
        value(
            &denied,
            "keyward_authorization_denials_total",
            &[("verb", "get")]
        ),
        1.0
    );
    assert_eq!(
        value(&denied, "keyward_audit_write_failures_total", &[]),
        0.0
    );

    // Nothing identifying in the exposition: no Secret name or value, no key id in clear.
    let text = scrape(&addr);
    let (key_id, _) = rt.block_on(status(&data.join("kms.sock")));
    for secret in [SECRET_NAME, "no-such-secret", "s3cret-value", &key_id] {
        assert!(!text.contains(secret), "{secret:?} in\n{text}");
    }
    assert!(label_values(&parse(&text, false))
        .iter()
        .all(|v| !v.contains(SECRET_NAME) && !v.contains("kw-1-")));

    // The JSON log parses line by line, and hashes the key id.
    let log = p.stderr();
    assert!(!log.is_empty());
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
        assert!(v.get("message").is_some(), "{line}");
    }
    assert!(!log.contains(&key_id), "{log}");
    assert!(
        log.contains(&keyward::crypto::key_id_hash(&key_id)),
        "{log}"
    );
}

#[test]
fn server_reports_the_store_only() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("keyward.sock");
    let config = aesgcm_config(dir.path());
    let addr = format!("127.0.0.1:{}", free_port());
    let _p = Proc::spawn(
        &[
            "server",
            "--data",
            dir.path().join("data").to_str().unwrap(),
            "--encryption-config",
            config.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
            "--metrics-listen",
            &addr,
        ],
        &[],
        &dir.path().join("server.log"),
        &sock,
    );
    let rt = client_runtime();
    let mut c = rt.block_on(secrets_client(&sock));
    rt.block_on(c.create(create(SECRET_NAME))).unwrap();
    // A call's duration is observed once its response has gone: wait for it.
    let f = scrape_until(&addr, |f| created(f) == 1.0);
    assert_eq!(created(&f), 1.0);
    let text = scrape(&addr);
    assert_eq!(value(&f, "keyward_store_objects", &[]), 1.0);
    assert_eq!(value(&f, "keyward_audit_write_failures_total", &[]), 0.0);
    assert!(
        !text.contains("keyward_kms_") && !text.contains("keyward_keyring_"),
        "{text}"
    );
    assert!(!text.contains(SECRET_NAME), "{text}");
    // A bad flag names itself.
    let (ok, _, err) = run(&[
        "server",
        "--data",
        dir.path().join("other").to_str().unwrap(),
        "--encryption-config",
        config.to_str().unwrap(),
        "--socket",
        dir.path().join("other.sock").to_str().unwrap(),
        "--metrics-listen",
        "10.1.2.3:9464",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--metrics-listen 10.1.2.3:9464: not a loopback address"),
        "{err}"
    );
}

/// Every `keyward_*` name in `text`.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("keyward_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn dashboard_and_alert_rules_name_only_metrics_a_scrape_has() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dashboard = std::fs::read_to_string(root.join("grafana/keyward-dashboard.json")).unwrap();
    let rules = std::fs::read_to_string(root.join("prometheus/keyward-alerts.yaml")).unwrap();

    // The dashboard is JSON with panels whose queries are PromQL strings.
    let d: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON parses");
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() > 10);
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", p["title"]);
        assert!(targets.iter().all(|t| t["expr"].is_string()));
    }
    // The rules are a Prometheus rule file: groups of alerts, each with a severity and summary.
    let r: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rules).expect("rules YAML parses");
    let mut alerts = Vec::new();
    for g in r["groups"].as_sequence().expect("groups") {
        for rule in g["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("an alert name");
            assert!(rule["expr"].as_str().is_some(), "{name}");
            assert!(rule["labels"]["severity"].as_str().is_some(), "{name}");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{name}");
            alerts.push(name.to_owned());
        }
    }
    for want in [
        "KeywardKmsPluginUnhealthy",
        "KeywardKeyNearEncryptionLimit",
        "KeywardSharedKeyringStale",
        "KeywardAuditWriteFailures",
    ] {
        assert!(alerts.iter().any(|a| a == want), "{want} missing");
    }

    // Scrapes: a dev (plugin and store) after a failed call, and a replica of a shared keyring.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let (_dev, dev_addr) = dev(dir.path(), &data, &[]);
    let rt = client_runtime();
    let mut c = rt.block_on(secrets_client(&data.join("keyward.sock")));
    rt.block_on(c.create(create("a"))).unwrap();
    let _ = rt.block_on(c.get(get("missing")));
    let (key_id, _) = rt.block_on(status(&data.join("kms.sock")));
    let _ = rt.block_on(decrypt(&data.join("kms.sock"), b"garbage", &key_id));
    let replica_addr = format!("127.0.0.1:{}", free_port());
    let cluster = Cluster::start(1, &["--metrics-listen", &replica_addr]);
    let _ = rt.block_on(decrypt(&cluster.replicas[0].socket, b"garbage", &key_id));
    let mut scraped = names(&scrape_parsed(&dev_addr));
    let shared = scrape_until(&replica_addr, |f| {
        value(f, "keyward_keyring_shared_stale_after_seconds", &[]) > 0.0
    });
    scraped.extend(names(&shared));

    let used: BTreeSet<String> = referenced(&dashboard)
        .into_iter()
        .chain(referenced(&rules))
        .collect();
    assert!(used.len() > 15, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but in no scrape: {missing:?}\nscraped: {scraped:?}"
    );
}
