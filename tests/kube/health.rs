//! `/healthz`, `/livez`, `/readyz` as kube-apiserver answers them, against a store on a real
//! etcd: `ok`, the verbose check list, excluded and unknown checks, and a store that stops
//! answering (etcd killed) making `/readyz` and `/healthz` a 500 with the reason withheld (within
//! a second: the outcome is reused that long) while `/livez` stays `ok`; a KMS plugin that stops
//! answering makes them a 500 too (`kms-providers`). Read with Python's
//! stdlib HTTPS client, without credentials (as `system:anonymous`, authorized and audited);
//! and with credentials, checked as on any path (kubectl with a bad and a good token).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::etcd::Etcd;
use crate::support::store::aesgcm_config;
use crate::support::StoreHarness;
use keyward::backend::BackendSpec;
use keyward::kube::kubeconfig::DevCa;
use keyward::kube::KubeOptions;
use keyward::server::StoreOptions;

/// `GET path` without credentials: the status code and the body, which must be text not to
/// be sniffed (as Go's `http.Error` and kube-apiserver's health handlers write it).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (code, content_type, body) = get_any(addr, path);
    assert_eq!(
        content_type, "text/plain; charset=utf-8 nosniff",
        "{path}: {code} {body}"
    );
    (code, body)
}

/// `GET path` without credentials: the status code, `Content-Type` (followed by a space and
/// `X-Content-Type-Options` when there is one) and body.
fn get_any(addr: SocketAddr, path: &str) -> (u16, String, String) {
    request(addr, "GET", path)
}

/// `method path` without credentials: the status code, `Content-Type` (as [`get_any`]) and
/// body.
fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let script = "import http.client, ssl, sys\n\
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
        c = http.client.HTTPSConnection(sys.argv[1], int(sys.argv[2]), context=ctx, timeout=20)\n\
        c.request(sys.argv[4], sys.argv[3]); r = c.getresponse(); body = r.read().decode()\n\
        t = ' '.join(h for h in (r.getheader('Content-Type'), r.getheader('X-Content-Type-Options')) if h)\n\
        sys.stdout.write('%d\\n%s\\n%s' % (r.status, t, body))\n";
    let out = script_against(addr, script, &[path, method]);
    let mut parts = out.splitn(3, '\n');
    let code = parts.next().and_then(|c| c.parse().ok()).expect("status");
    let content_type = parts.next().expect("content type").to_owned();
    (
        code,
        content_type,
        parts.next().unwrap_or_default().to_owned(),
    )
}

/// With a request holding the client's only in-flight slot (its body never comes), another
/// request is kube-apiserver's 429 while the health probes still answer.
fn probes_pass_a_full_in_flight_limit(addr: SocketAddr) {
    let script = "import http.client, socket, ssl, sys, time\n\
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
        host, port = sys.argv[1], int(sys.argv[2])\n\
        held = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname=host)\n\
        held.sendall(b'POST /api/v1/namespaces/default/secrets HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\nContent-Length: 10\\r\\n\\r\\n')\n\
        def get(path):\n\
        \x20   c = http.client.HTTPSConnection(host, port, context=ctx, timeout=20)\n\
        \x20   c.request('GET', path); r = c.getresponse(); r.read(); return r.status\n\
        deadline = time.time() + 10\n\
        while get('/api/v1/namespaces/default/secrets') != 429:\n\
        \x20   assert time.time() < deadline, 'the held request never took the slot'; time.sleep(0.05)\n\
        for path in ('/livez', '/readyz', '/healthz', '/version'):\n\
        \x20   assert get(path) == 200, path\n\
        held.close()\n\
        sys.stdout.write('ok')\n";
    assert_eq!(script_against(addr, script, &[]), "ok");
}

/// Runs a Python `script` with the server's host and port, then `args`, as its arguments; its
/// stdout.
fn script_against(addr: SocketAddr, script: &str, args: &[&str]) -> String {
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    let argv = [&["-c", script, &host, &port][..], args].concat();
    crate::support::tools::python(&["ssl"], &argv, b"")
}

/// The Kubernetes API's address, as `w`'s admin kubeconfig names it.
fn server_of(w: &crate::kubectl::World) -> SocketAddr {
    std::fs::read_to_string(&w.admin)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("the kubeconfig names its server")
        .parse()
        .unwrap()
}

/// Polls `/readyz` until it answers `code` (within 30 s, else fails saying `what`).
fn readyz_becomes(addr: SocketAddr, code: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(addr, "/readyz").0 != code {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_as_kube_apiserver_writes_them_and_a_lost_store_is_unready() {
    let mut etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = DevCa::load_or_create(d).unwrap();
    let cert = ca.issue_server().unwrap();
    let mut kube = KubeOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        cert.cert.into_bytes(),
        zeroize::Zeroizing::new(cert.key.as_bytes().to_vec()),
    );
    // One request in flight per client: probes are not held back by it.
    kube.limits.max_in_flight_per_client = 1;
    let mut o = StoreOptions::new(
        BackendSpec::Etcd(etcd.options()),
        aesgcm_config(d),
        d.join("kw.sock"),
    );
    o.kube = Some(kube);
    // Each check's own path is not in the bootstrap policy's `system:public-info-viewer`: a
    // ClusterRole opens them to anonymous probes, as an operator would in a cluster.
    let policy = d.join("probes.yaml");
    std::fs::write(
        &policy,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: probes}\n\
         rules:\n- {verbs: [get], nonResourceURLs: [/healthz/*, /livez/*, /readyz/*]}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
         metadata: {name: probes}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: probes}\n\
         subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:unauthenticated}]\n",
    )
    .unwrap();
    o.access_control.authorization_policy = Some(policy.clone());
    let tokens = d.join("tokens.csv");
    std::fs::write(&tokens, "probe-0c9f2f3a1b7d4e5f9a8b,probe,1001\n").unwrap();
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    o.access_control.token_auth_files = vec![tokens.clone()];
    o.access_control.reload_interval = Duration::from_millis(20);
    let metrics = keyward::metrics::Metrics::new();
    o.metrics = Some(metrics.clone());
    let server = StoreHarness::start(o).await;
    let addr = server.kube_addr.expect("the Kubernetes API listens");
    // The files' state in the metrics, as `/healthz` shows it: (policy, credential files)
    // healthy, and the credential files' reloads.
    let rt = tokio::runtime::Handle::current();
    let gauges = move || {
        let text = rt.block_on(metrics.render(false));
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{name} not in\n{text}"))
                .to_owned()
        };
        // When the policy in force was loaded: a time of this era.
        let loaded = value("keyward_authorization_policy_loaded_timestamp_seconds");
        assert!(loaded.parse::<u64>().unwrap() > 1_700_000_000, "{loaded}");
        (
            value("keyward_authorization_policy_healthy"),
            value("keyward_credential_files_healthy"),
            value("keyward_credential_files_reloads_total"),
        )
    };

    tokio::task::spawn_blocking(move || {
        let state = |policy: &str, files: &str, reloads: &str| {
            (policy.to_owned(), files.to_owned(), reloads.to_owned())
        };
        assert_eq!(gauges(), state("1", "1", "0"));
        for path in ["/healthz", "/livez", "/readyz"] {
            assert_eq!(get(addr, path), (200, "ok".to_owned()), "{path}");
        }
        probes_pass_a_full_in_flight_limit(addr);
        // Each check alone.
        for path in [
            "/healthz/ping",
            "/healthz/store",
            "/livez/ping",
            "/readyz/store",
        ] {
            assert_eq!(get(addr, path), (200, "ok".to_owned()), "{path}");
        }
        assert_eq!(
            get(addr, "/readyz?verbose"),
            (
                200,
                "[+]ping ok\n[+]store ok\nreadyz check passed\n".to_owned()
            )
        );
        assert_eq!(
            get(addr, "/livez?verbose=1"),
            (200, "[+]ping ok\nlivez check passed\n".to_owned())
        );
        assert_eq!(
            get(
                addr,
                "/healthz?verbose&exclude=store&exclude=etcd&exclude=nope"
            ),
            (
                200,
                "[+]ping ok\n[+]store excluded: ok\n[+]authorization-policy ok\n[+]credential-files ok\n\
                 warn: some health checks cannot be excluded: no matches for \"etcd\",\"nope\"\n\
                 healthz check passed\n"
                    .to_owned()
            )
        );

        // A broken change to the policy: the last valid one stays in force, and `/healthz`
        // (which probes do not read) says so; `/readyz` and `/livez` stay ok.
        let good = std::fs::read(&policy).unwrap();
        std::fs::write(&policy, "kind: ClusterRole\n  bad: [indent\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(addr, "/healthz").0 != 500 {
            assert!(Instant::now() < deadline, "the broken policy never showed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            get(addr, "/healthz?verbose"),
            (
                500,
                "[+]ping ok\n[+]store ok\n[-]authorization-policy failed: reason withheld\n[+]credential-files ok\nhealthz check failed\n"
                    .to_owned()
            )
        );
        assert_eq!(get(addr, "/healthz/authorization-policy").0, 500);
        assert_eq!(gauges(), state("0", "1", "0"));
        assert_eq!(get(addr, "/readyz"), (200, "ok".to_owned()));
        assert_eq!(get(addr, "/livez/ping"), (200, "ok".to_owned()), "still in force");
        std::fs::write(&policy, good).unwrap();
        while get(addr, "/healthz").0 != 200 {
            assert!(Instant::now() < deadline, "the restored policy never showed");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The same for a token file that cannot be used (a line without a user).
        let good = std::fs::read(&tokens).unwrap();
        std::fs::write(&tokens, "only-a-token\n").unwrap();
        while get(addr, "/healthz").0 != 500 {
            assert!(Instant::now() < deadline, "the broken token file never showed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            get(addr, "/healthz?verbose").1,
            "[+]ping ok\n[+]store ok\n[+]authorization-policy ok\n[-]credential-files failed: reason withheld\nhealthz check failed\n"
        );
        assert_eq!(get(addr, "/readyz"), (200, "ok".to_owned()));
        assert_eq!(gauges(), state("1", "0", "0"));
        // A valid change is put in force and counted.
        std::fs::write(&tokens, "probe-0c9f2f3a1b7d4e5f9a8b,probe,1001\nother-7a1b2c3d4e5f6a7b8c9d,other,1002\n").unwrap();
        while get(addr, "/healthz").0 != 200 {
            assert!(Instant::now() < deadline, "the changed token file never showed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(gauges(), state("1", "1", "1"));
        std::fs::write(&tokens, good).unwrap();

        // The store stops answering: unready (once the last second's outcome expires),
        // unhealthy, still alive; why is not shown.
        etcd.kill(0);
        readyz_becomes(addr, 500, "unready once etcd is gone");
        let unready = "[+]ping ok\n[-]store failed: reason withheld\nreadyz check failed\n";
        assert_eq!(get(addr, "/readyz"), (500, unready.to_owned()));
        assert_eq!(get(addr, "/readyz?verbose"), (500, unready.to_owned()));
        assert_eq!(get(addr, "/healthz").0, 500, "healthz checks the store too");
        assert_eq!(get(addr, "/readyz?exclude=store"), (200, "ok".to_owned()));
        // A check's own path, which a rule of the policy opened, says why (kube-apiserver's
        // `adaptCheckToHandler`); the endpoints do not.
        let (code, why) = get(addr, "/readyz/store");
        assert_eq!(code, 500);
        assert!(
            why.starts_with("internal server error: ") && !why.contains("withheld"),
            "{why}"
        );
        assert_eq!(get(addr, "/readyz/ping"), (200, "ok".to_owned()));
        assert_eq!(get(addr, "/livez"), (200, "ok".to_owned()));

        // Back: ready again.
        etcd.restart(0);
        readyz_becomes(addr, 200, "ready again after etcd is back");
    })
    .await
    .unwrap();
    drop(server);
}

/// A KMS plugin that stops answering makes the server unready and unhealthy (`kms-providers`,
/// asked on demand as kube-apiserver's KMS probe asks, a failure reused 3 s), while it stays
/// alive; a plugin back on its socket makes it ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_plugin_that_stops_answering_makes_the_server_unready() {
    use crate::support::store::{config_text, kms_v2_provider, write_private};
    let plugin = crate::support::Plugin::start(keyward::crypto::Algorithm::Aes256Gcm).await;
    let (socket, plugin_dir) = (plugin.socket.clone(), plugin.dir.path().to_owned());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = DevCa::load_or_create(d).unwrap();
    let cert = ca.issue_server().unwrap();
    let kube = KubeOptions::new(
        "127.0.0.1:0".parse().unwrap(),
        cert.cert.into_bytes(),
        zeroize::Zeroizing::new(cert.key.as_bytes().to_vec()),
    );
    let enc = d.join("enc.yaml");
    write_private(&enc, config_text(&kms_v2_provider(&socket)).as_bytes());
    let mut o = StoreOptions::new(
        BackendSpec::Log {
            dir: d.join("store"),
            options: keyward::backend::logstore::LogOptions::default(),
        },
        enc,
        d.join("kw.sock"),
    );
    o.kube = Some(kube);
    let server = StoreHarness::start(o).await;
    let addr = server.kube_addr.expect("the Kubernetes API listens");
    let verbose = tokio::task::spawn_blocking(move || get(addr, "/readyz?verbose"))
        .await
        .unwrap();
    assert_eq!(
        verbose,
        (
            200,
            "[+]ping ok\n[+]store ok\n[+]kms-providers ok\nreadyz check passed\n".to_owned()
        )
    );
    // Stopped, its directory (the keyring) kept to serve it again.
    let _keep_dir = plugin.dir;
    {
        let mut stop = plugin.stop;
        let _ = stop.take().map(|s| s.send(()));
        plugin.task.unwrap().await.unwrap().unwrap();
    }
    drop(plugin.keyring);
    // A passed check is reused 20 s, as kube-apiserver's: unready within that.
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(40);
        while get(addr, "/readyz").0 != 500 {
            assert!(Instant::now() < deadline, "never unready without its KMS plugin");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            get(addr, "/readyz?verbose"),
            (
                500,
                "[+]ping ok\n[+]store ok\n[-]kms-providers failed: reason withheld\nreadyz check failed\n"
                    .to_owned()
            )
        );
        assert_eq!(get(addr, "/healthz").0, 500);
        assert_eq!(get(addr, "/readyz?exclude=kms-providers"), (200, "ok".to_owned()));
        assert_eq!(get(addr, "/livez"), (200, "ok".to_owned()));
    })
    .await
    .unwrap();
    // The same keyring served again on the same socket: ready again (a failure is reused 3 s).
    let key = plugin_dir.join("root.key");
    let back = crate::support::Plugin::restart(&plugin_dir.join("data"), &key, &socket).await;
    tokio::task::spawn_blocking(move || readyz_becomes(addr, 200, "ready once the plugin is back"))
        .await
        .unwrap();
    back.stop().await;
    drop(server);
}

/// A health or version request that presents credentials is authenticated on them, as
/// kube-apiserver authenticates every request (only a request without any falls back to its
/// anonymous user): a bad bearer token is a 401, recorded as a failed authentication; a good
/// one reads the answer, recorded as its user's request. One without credentials is
/// `system:anonymous`, allowed what the bootstrap policy's `system:public-info-viewer` allows
/// (the health paths themselves, not each check: 403) and recorded as such; any other path is
/// a 401 (kubectl, which asks for a user name when its kubeconfig has no credentials, is not
/// the client here).
#[test]
fn health_with_credentials_is_authenticated_like_any_path() {
    let w = crate::kubectl::audited_world("Metadata");
    let server = server_of(&w);
    assert_eq!(get(server, "/livez"), (200, "ok".to_owned()));
    let (code, content_type, body) = get_any(server, "/livez/ping");
    assert_eq!(
        (code, content_type.as_str()),
        (403, "application/json"),
        "{body}"
    );
    assert!(
        body.contains(
            r#""message":"forbidden: User \"system:anonymous\" cannot get path \"/livez/ping\"""#
        ),
        "{body}"
    );
    let (code, _, body) = get_any(server, "/api/v1/namespaces/default/secrets");
    assert_eq!(code, 401, "{body}");
    let bad = w.token_kubeconfig("mallory", Some("not-a-token-of-this-server"));
    let k = w.kubectl_as(33, &bad, "mallory");
    for path in ["/healthz", "/readyz", "/livez", "/version"] {
        let out = k.run(&["get", "--raw", path]);
        assert_eq!(out.code, 1, "{path}: {}", out.out);
        assert!(out.err.contains("Unauthorized"), "{path}: {}", out.err);
    }
    let good = w.token_kubeconfig("bob", Some(crate::kubectl::BOB_TOKEN));
    let k = w.kubectl_as(33, &good, "bob");
    assert_eq!(k.ok(&["get", "--raw", "/healthz"]), "ok");
    // Health endpoints answer any method (authorized as its verb: the admin may POST), and
    // `/version/` is `/version`, as kube-apiserver serves them.
    w.dev.write("empty.json", "{}");
    let body = w.dev.path("empty.json");
    let posted = w
        .kubectl(33)
        .ok(&["create", "--raw", "/healthz", "-f", body.to_str().unwrap()]);
    assert_eq!(posted, "ok");
    assert_eq!(
        k.ok(&["get", "--raw", "/version/"]),
        k.ok(&["get", "--raw", "/version"])
    );
    // Each group `/apis` lists has its `APIGroup` document, as kube-apiserver serves it.
    let list: serde_json::Value = serde_json::from_str(&k.ok(&["get", "--raw", "/apis"])).unwrap();
    for g in list["groups"].as_array().unwrap() {
        let name = g["name"].as_str().unwrap();
        let doc: serde_json::Value =
            serde_json::from_str(&k.ok(&["get", "--raw", &format!("/apis/{name}")])).unwrap();
        assert_eq!(doc["kind"], "APIGroup", "{doc}");
        assert_eq!(doc["name"], name);
        assert_eq!(doc["versions"], g["versions"]);
        assert_eq!(doc["preferredVersion"], g["preferredVersion"]);
    }
    assert!(k
        .run(&["get", "--raw", "/apis/apps"])
        .err
        .contains("NotFound"));
    // `version.Info` indented, in its field order, as kube-apiserver's `WriteRawJSON`.
    let version = k.ok(&["get", "--raw", "/version"]);
    assert!(
        version.starts_with(
            "{\n  \"major\": \"1\",\n  \"minor\": \"30\",\n  \"gitVersion\": \"v1.30.0-keyward-"
        ),
        "{version}"
    );
    assert!(
        version.ends_with("\"platform\": \"linux/amd64\"\n}"),
        "{version}"
    );
    let (audit, mut events) = w.audit_log();
    let anonymous: Vec<_> = events
        .iter()
        .filter(|e| e["user"]["username"] == "system:anonymous" && e["stage"] == "ResponseComplete")
        .collect();
    assert_eq!(anonymous.len(), 2, "/livez and /livez/ping: {audit}");
    let e = anonymous[0];
    assert_eq!(e["requestURI"], "/livez");
    assert_eq!(
        e["user"]["groups"],
        serde_json::json!(["system:unauthenticated"])
    );
    assert_eq!(
        (&e["verb"], &e["responseStatus"]["code"]),
        (&"get".into(), &200.into())
    );
    assert_eq!(
        e["annotations"]["authorization.k8s.io/reason"],
        "RBAC: allowed by ClusterRoleBinding \"system:public-info-viewer\" of ClusterRole \"system:public-info-viewer\" to Group \"system:unauthenticated\""
    );
    assert_eq!(anonymous[1]["responseStatus"]["code"], 403);
    // The Forbidden Status's empty details, copied as kube-apiserver copies them.
    assert_eq!(
        anonymous[1]["responseStatus"]["details"],
        serde_json::json!({})
    );
    events.retain(|e| e["requestURI"] == "/healthz");
    let refused = events
        .iter()
        .find(|e| e["responseStatus"]["code"] == 401)
        .unwrap_or_else(|| panic!("no 401 of /healthz: {audit}"));
    assert_eq!(refused["user"], serde_json::json!({}));
    assert_eq!(
        refused["responseStatus"]["message"],
        "Authentication failed, attempted: bearer"
    );
    let read = events
        .iter()
        .find(|e| e["stage"] == "ResponseComplete" && e["user"]["username"] == "bob")
        .unwrap_or_else(|| panic!("no read of /healthz by bob: {audit}"));
    assert_eq!(read["responseStatus"]["code"], 200);
    assert_eq!(read["verb"], "get");
}

/// A request that no credential authenticates is `system:anonymous` on the health and version
/// paths whatever its method, authorized as its verb (the bootstrap policy allows `get`: a HEAD
/// or POST is kube-apiserver's 403), and a 401 elsewhere. A client certificate of the client
/// CA without a common name proves no identity (kube-apiserver's x509 authenticator has no
/// opinion on it), so it is anonymous there too, not refused.
#[test]
fn anonymous_requests_are_authorized_as_their_verb() {
    let w = crate::kubectl::audited_world("Metadata");
    let server = server_of(&w);
    for (method, path) in [("HEAD", "/livez"), ("POST", "/readyz"), ("PUT", "/version")] {
        let (code, _, body) = request(server, method, path);
        assert_eq!(code, 403, "{method} {path}: {body}");
        if method != "HEAD" {
            let verb = method.to_lowercase();
            let message = format!(
                r#""message":"forbidden: User \"system:anonymous\" cannot {verb} path \"{path}\"""#
            );
            assert!(body.contains(&message), "{method} {path}: {body}");
        }
    }
    assert_eq!(request(server, "POST", "/api").0, 401);
    // A token in the URL is refused (kube-apiserver reads none there) and recorded as
    // attempted, without its value.
    let (code, _, body) = request(
        server,
        "GET",
        "/api/v1/secrets?access_token=s3cr3t-in-url&limit=1",
    );
    assert_eq!(code, 401, "{body}");
    let (audit, events) = w.audit_log();
    assert!(!audit.contains("s3cr3t-in-url"), "{audit}");
    let refused = events
        .iter()
        .find(|e| e["requestURI"] == "/api/v1/secrets?access_token=REDACTED&limit=1")
        .unwrap_or_else(|| panic!("no event of the request: {audit}"));
    assert_eq!(
        refused["responseStatus"]["message"],
        "Authentication failed, attempted: access_token"
    );

    let key = std::fs::read_to_string(w.dev.path("kw/kube-ca.key")).unwrap();
    let key = rcgen::KeyPair::from_pem(&key).unwrap();
    let ca = crate::kubectl::ca_cert("keyward-dev-ca", &key);
    let (cert, cert_key) = crate::kubectl::client_cert(
        "",
        "system:masters",
        (&ca, &key),
        (2020, 2090),
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let cfg = crate::kubectl::cert_kubeconfig(&w, "nameless", &cert, &cert_key, None);
    let k = w.kubectl_as(33, &cfg, "nameless");
    assert_eq!(k.ok(&["get", "--raw", "/livez"]), "ok");
    let out = k.run(&["get", "--raw", "/livez/ping"]);
    assert!(
        out.err
            .contains(r#"User "system:anonymous" cannot get path "/livez/ping""#),
        "{}",
        out.err
    );
    let out = k.run(&["get", "--raw", "/api/v1/namespaces/default/secrets"]);
    assert!(out.err.contains("Unauthorized"), "{}", out.err);
    // Stricter than Go's verifier, as the README says: a certificate whose only extended key
    // usage is anyExtendedKeyUsage, and a CA certificate presented as the client's own, are
    // refused (401) rather than authenticated.
    let any = crate::kubectl::client_cert(
        "anyuse",
        "system:masters",
        (&ca, &key),
        (2020, 2090),
        rcgen::ExtendedKeyUsagePurpose::Any,
    );
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "intermediate");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let as_leaf = (
        p.signed_by(&ca_key, &ca, &key).unwrap().pem(),
        ca_key.serialize_pem(),
    );
    for (name, (cert, cert_key)) in [("anyuse", &any), ("intermediate", &as_leaf)] {
        let cfg = crate::kubectl::cert_kubeconfig(&w, name, cert, cert_key, None);
        let out = w.kubectl_as(33, &cfg, name).run(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/secrets",
        ]);
        assert!(out.err.contains("Unauthorized"), "{name}: {}", out.err);
    }
    // With a token beside it, the token decides.
    let cfg = crate::kubectl::cert_kubeconfig(
        &w,
        "nameless-bob",
        &cert,
        &cert_key,
        Some(crate::kubectl::BOB_TOKEN),
    );
    let me = w.kubectl_as(33, &cfg, "nameless-bob").ok(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(me, "bob");
}
