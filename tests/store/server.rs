//! `keyward server` and `keyward dev` as processes: the Unix socket, the TCP listener's TLS and
//! client authentication (certificates and bearer tokens), refusals of unsafe settings, and
//! restarts that keep every Secret.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::free_port;
use crate::support::store::{aesgcm_config, secrets_client, write_private};
use crate::support::{run, Proc};
use keyward::pb::keyward_v1 as pb;
use keyward::pb::keyward_v1::secrets_client::SecretsClient;
use rustix::process::Signal;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

fn secret(name: &str, v: &[u8]) -> pb::CreateRequest {
    pb::CreateRequest {
        secret: Some(pb::Secret {
            metadata: Some(pb::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            data: [("v".to_owned(), v.to_vec())].into_iter().collect(),
            ..Default::default()
        }),
        dry_run: false,
    }
}

fn rt() -> tokio::runtime::Runtime {
    crate::support::client_runtime()
}

#[test]
fn dev_runs_plugin_and_store_and_keeps_secrets_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let sock = data.join("keyward.sock");
    let rt = rt();
    {
        let mut p = Proc::spawn(
            &["dev", "--data", data.to_str().unwrap()],
            &[],
            &dir.path().join("log1"),
            &sock,
        );
        for s in ["kms.sock", "kms-admin.sock", "keyward.sock"] {
            assert_eq!(
                fs::metadata(data.join(s)).unwrap().permissions().mode() & 0o777,
                0o600,
                "{s}"
            );
        }
        rt.block_on(async {
            let mut c = secrets_client(&sock).await;
            c.create(secret("db", b"s3cret-dev-value")).await.unwrap();
        });
        let (ok, out, err) = run(&[
            "raw",
            "get",
            "/registry/secrets/default/db",
            "--server",
            &format!("unix://{}", sock.display()),
        ]);
        assert!(ok, "{err}");
        assert!(
            out.starts_with("/registry/secrets/default/db\nk8s:enc:kms:v2:keyward-dev:"),
            "{out}"
        );
        assert!(!out.contains("s3cret-dev-value"));
        let (ok, out, _) = run(&[
            "raw",
            "list",
            "/registry/secrets/",
            "--keys-only",
            "--server",
            &format!("unix://{}", sock.display()),
        ]);
        assert!(ok);
        assert_eq!(out, "/registry/secrets/default/db\n");
        // Raw reads stay within the store's Secrets (review finding 4): on a shared etcd, the
        // rest is kube-apiserver's other objects and the keyring.
        for args in [
            &["raw", "list", "/"][..],
            &["raw", "list", "/registry/"][..],
            &[
                "raw",
                "get",
                "/registry/configmaps/kube-system/cluster-info",
            ][..],
            &["raw", "get", "/keyward/kms/keyring"][..],
        ] {
            let server = format!("unix://{}", sock.display());
            let (ok, out, err) = run(&[args, &["--server", &server]].concat());
            assert!(!ok, "{args:?}: {out}");
            assert!(
                err.contains(
                    "is outside this store; raw reads are limited to keys under /registry/secrets/"
                ),
                "{args:?}: {err}"
            );
        }
        p.signal(Signal::INT);
        assert!(p.wait(Duration::from_secs(20)).success(), "{}", p.stderr());
        assert!(!sock.exists(), "sockets removed");
    }
    let _p = Proc::spawn(
        &["dev", "--data", data.to_str().unwrap()],
        &[],
        &dir.path().join("log2"),
        &sock,
    );
    rt.block_on(async {
        let mut c = secrets_client(&sock).await;
        let s = c
            .get(pb::GetRequest {
                namespace: String::new(),
                name: "db".into(),
                revision: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.data["v"], b"s3cret-dev-value");
    });
}

/// Every failure of a real server carries its reason in the status metadata (what the command
/// line decides its wording by), on the store's socket and on the plugin's admin socket; and
/// the log captured off a terminal has no colour codes.
#[test]
fn statuses_carry_a_reason_and_logs_no_colour() {
    use keyward::api::{Reason, REASON_KEY};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kw");
    let sock = data.join("keyward.sock");
    let mut p = Proc::spawn(
        &["dev", "--data", data.to_str().unwrap()],
        &[],
        &dir.path().join("log"),
        &sock,
    );
    let reason = |s: &tonic::Status| {
        let v = s.metadata().get(REASON_KEY).expect("a reason");
        v.to_str().unwrap().to_owned()
    };
    rt().block_on(async {
        let mut c = secrets_client(&sock).await;
        c.create(secret("db", b"v")).await.unwrap();
        let e = c.create(secret("db", b"v")).await.unwrap_err();
        assert_eq!(
            (e.code(), reason(&e)),
            (Code::AlreadyExists, "AlreadyExists".into())
        );
        let e = c.create(secret("Not_A_Name", b"v")).await.unwrap_err();
        assert_eq!(
            (e.code(), reason(&e)),
            (Code::InvalidArgument, "Invalid".into())
        );
        let e = c
            .get(pb::GetRequest {
                namespace: String::new(),
                name: "missing".into(),
                revision: 0,
            })
            .await
            .unwrap_err();
        assert_eq!((e.code(), reason(&e)), (Code::NotFound, "NotFound".into()));
        assert_eq!(Reason::of(&e), Some(Reason::NotFound));

        let admin = keyward::uds::unix_channel(data.join("kms-admin.sock"))
            .await
            .unwrap();
        let mut admin = pb::kms_admin_client::KmsAdminClient::new(admin);
        let e = admin
            .retire(pb::RetireRequest {
                key_id: "kw-no-such-key".into(),
            })
            .await
            .unwrap_err();
        assert_eq!((e.code(), reason(&e)), (Code::NotFound, "NotFound".into()));
    });
    p.signal(Signal::TERM);
    assert!(p.wait(Duration::from_secs(20)).success(), "{}", p.stderr());
    let log = p.stderr();
    assert!(log.contains("SIGTERM: draining"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log that is not a terminal: {log:?}"
    );
}

#[test]
fn server_refuses_unsafe_or_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = aesgcm_config(dir.path());
    let base = |extra: &[&str]| {
        let mut a = vec![
            "server".to_owned(),
            "--data".into(),
            dir.path().join("store").display().to_string(),
            "--encryption-config".into(),
            cfg.display().to_string(),
            "--socket".into(),
            dir.path().join("s.sock").display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&refs)
    };
    let cert = dir.path().join("c.pem");
    let key = dir.path().join("k.pem");
    fs::write(&cert, "x").unwrap();
    write_private(&key, b"x");
    let audit_log = dir.path().join("audit.log");
    let audit = audit_log.to_str().unwrap();
    for (args, want) in [
        (vec!["--listen", "127.0.0.1:0"], "--listen requires TLS"),
        (
            vec![
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
            "--listen requires client authentication",
        ),
        (
            vec!["--tls-cert", cert.to_str().unwrap()],
            "only apply with --listen",
        ),
        (
            vec!["--feature-gates", "Foo=true"],
            "--feature-gates: unrecognized feature gate: Foo",
        ),
        (
            vec!["--kube-max-watches", "8"],
            "--kube-max-watches only applies with --kube-listen",
        ),
        (
            vec!["--kube-max-in-flight-per-client", "0"],
            "invalid value '0' for '--kube-max-in-flight-per-client <N>': 0 is not in 1..=1000000",
        ),
        (
            vec!["--kube-max-watches", "many"],
            "invalid value 'many' for '--kube-max-watches <N>'",
        ),
        (
            vec!["--audit-log-mode", "batch"],
            "the following required arguments were not provided:\n  --audit-log-path <FILE>",
        ),
        (
            vec!["--audit-log-path", audit, "--audit-log-mode", "async"],
            "invalid value 'async' for '--audit-log-mode <MODE>'\n  [possible values: blocking-strict, blocking, batch]",
        ),
        (
            vec![
                "--audit-log-path",
                audit,
                "--audit-log-mode",
                "batch",
                "--audit-fail-open",
            ],
            "the argument '--audit-log-mode <MODE>' cannot be used with '--audit-fail-open'",
        ),
        (
            vec!["--audit-log-path", "-"],
            "--audit-log-path -: standard output is not supported",
        ),
        (
            vec!["--audit-log-path", audit, "--audit-log-maxage", "-3"],
            "--audit-log-maxage -3 can't be a negative number",
        ),
        (
            vec!["--audit-log-path", audit, "--audit-log-format", "yaml"],
            "invalid audit log format yaml, allowed formats are \"legacy,json\"",
        ),
        (
            vec!["--audit-log-path", audit, "--audit-log-format=legacy"],
            "--audit-log-format legacy: not supported",
        ),
        (
            vec!["--audit-log-path", audit, "--audit-log-compress"],
            "--audit-log-compress: not supported",
        ),
        (
            vec!["--audit-log-path", audit, "--audit-log-version", "audit.k8s.io/v1beta1"],
            "--audit-log-version audit.k8s.io/v1beta1: invalid group version",
        ),
        (
            vec![
                "--audit-log-path",
                audit,
                "--audit-log-mode=batch",
                "--audit-log-batch-max-size=0",
            ],
            "invalid audit batch log max batch size 0, must be a positive number",
        ),
        (
            vec![
                "--audit-log-path",
                audit,
                "--audit-log-mode",
                "batch",
                "--audit-log-batch-buffer-size",
                "0",
            ],
            "invalid audit batch log buffer size 0, must be a positive number",
        ),
        (
            vec![
                "--audit-log-path",
                audit,
                "--audit-log-mode",
                "batch",
                "--audit-log-batch-max-wait",
                "soon",
            ],
            "--audit-log-batch-max-wait: \"soon\" is not a duration; expected a Go duration such as 1ms, 500us or 0",
        ),
    ] {
        let (ok, _, err) = base(&args);
        assert!(!ok);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!audit_log.exists(), "{args:?}: a refused flag changes nothing");
    }
    let bad = dir.path().join("bad.yaml");
    fs::write(&bad, "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm: {keys: [{name: k1, secret: c2hvcnQ=}]}\n").unwrap();
    let (ok, _, err) = run(&[
        "server",
        "--data",
        dir.path().join("st").to_str().unwrap(),
        "--encryption-config",
        bad.to_str().unwrap(),
        "--socket",
        dir.path().join("x.sock").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("resources[0].providers[0].aesgcm.keys[0].secret"),
        "{err}"
    );
    assert!(!dir.path().join("x.sock").exists());
    // A world-readable TLS key is refused.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let tokens = dir.path().join("tokens");
    write_private(&tokens, b"0123456789abcdef0123\n");
    let (ok, _, err) = base(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tokens-file",
        tokens.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("chmod 600"), "{err}");
}

/// A bad users file, token file, RBAC policy, audit policy or store flag is refused, naming the
/// problem, before `keyward server` or `keyward dev` creates anything: no data directory, no
/// audit log, no socket.
#[test]
fn bad_files_and_flags_are_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = aesgcm_config(dir.path());
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        write_private(&p, text.as_bytes());
        p.display().to_string()
    };
    let empty = file("empty.yaml", "");
    let no_rules = file(
        "norules.yaml",
        "apiVersion: audit.k8s.io/v1\nkind: Policy\n",
    );
    let rbac = file(
        "rbac.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: r, namespace: x}\nrules:\n- {verbs: [get], resources: [secrets], apiGroups: [''], bogus: 1}\n",
    );
    let tokens = file("tokens.csv", "0123456789abcdef,app\n");
    let users = file("users.yaml", "nope\n");
    let not_a_ca = file("not-a-ca.pem", "notpem\n");
    let audit_log = dir.path().join("audit.log");
    let audit = audit_log.display().to_string();
    let data = dir.path().join("data");
    let socket = dir.path().join("s.sock");
    for (flags, want) in [
        (
            vec!["--audit-log-path", &audit, "--audit-policy-file", &empty],
            "audit policy is invalid: the file is empty",
        ),
        (
            vec!["--audit-log-path", &audit, "--audit-policy-file", &no_rules],
            "audit policy is invalid: loaded illegal policy with 0 rules",
        ),
        (
            vec!["--authorization-policy", &rbac],
            "rules[0]: unknown field \"rules[0].bogus\"",
        ),
        (
            vec!["--token-auth-file", &tokens],
            "must have at least 3 columns (token, user name, user uid), found 2",
        ),
        (
            vec!["--unix-users", &users],
            "expected a mapping with `users` and `groups`",
        ),
        (
            vec!["--root-ca-file", &not_a_ca],
            "not-a-ca.pem: data does not contain any valid RSA or ECDSA certificates",
        ),
        (
            vec!["--feature-gates", "KMSv2=true"],
            "--feature-gates: unrecognized feature gate: KMSv2; only KMSv1 is supported",
        ),
        (
            vec!["--feature-gates", "KMSv1=maybe"],
            "--feature-gates: invalid value of KMSv1=maybe, err: strconv.ParseBool: parsing \"maybe\": invalid syntax",
        ),
        (
            vec!["--feature-gates", "KMSv1"],
            "--feature-gates: missing bool value for KMSv1",
        ),
        (
            vec!["--auto-migrate", "--auto-migrate-settle", "soon"],
            "--auto-migrate-settle: \"soon\" is not a positive duration",
        ),
    ] {
        for cmd in ["server", "dev"] {
            let mut args = vec![cmd, "--data", data.to_str().unwrap()];
            if cmd == "server" {
                args.extend([
                    "--encryption-config",
                    cfg.to_str().unwrap(),
                    "--socket",
                    socket.to_str().unwrap(),
                ]);
            }
            args.extend(&flags);
            let (ok, _, err) = run(&args);
            assert!(!ok, "{cmd} {flags:?} was accepted");
            assert!(err.contains(want), "{cmd} {flags:?}: {err}");
            assert!(
                !data.exists(),
                "{cmd} {flags:?}: the data directory was created"
            );
            assert!(
                !audit_log.exists(),
                "{cmd} {flags:?}: the audit log was created"
            );
            assert!(!socket.exists(), "{cmd} {flags:?}: the socket was created");
        }
    }
    // The listeners are bound, and their files read, before the store is opened.
    let p = pki();
    let cert = file("srv.pem", &p.server_cert);
    let key = file("srv.key", &p.server_key);
    let rogue_key = file("rogue.key", &p.rogue_key);
    let junk = file("junk.pem", "not pem\n");
    let ca = file("ca.pem", &p.ca);
    let dir_log = dir.path().join("logs");
    fs::create_dir(&dir_log).unwrap();
    let regular = file("regular", "");
    let tls = |cert: &str, key: &str, ca: &str| -> Vec<String> {
        [
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--client-ca",
            ca,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let missing_dir = dir.path().join("no/such/dir/s.sock").display().to_string();
    for (flags, want) in [
        (
            vec!["--socket".to_owned(), missing_dir],
            "No such file or directory",
        ),
        (
            vec!["--socket".to_owned(), regular.clone()],
            "exists and is not a socket; refusing to replace it",
        ),
        (
            vec!["--audit-log-path".to_owned(), dir_log.display().to_string()],
            "is a directory; give the log's file",
        ),
        (
            tls(&junk, &key, &ca),
            "--tls-cert: certificate: no PEM certificate",
        ),
        (tls(&cert, &junk, &ca), "--tls-key: key: no PEM private key"),
        (
            tls(&cert, &rogue_key, &ca),
            "--tls-cert and --tls-key: certificate and key: keys may not be consistent",
        ),
        (
            tls(&cert, &key, &junk),
            "--client-ca: client CA: no PEM certificate",
        ),
    ] {
        let mut args = vec![
            "server".to_owned(),
            "--data".into(),
            data.display().to_string(),
            "--encryption-config".into(),
            cfg.display().to_string(),
        ];
        if !flags.contains(&"--socket".to_owned()) {
            args.extend(["--socket".to_owned(), socket.display().to_string()]);
        }
        args.extend(flags.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = run(&refs);
        assert!(!ok, "{flags:?} was accepted");
        assert!(err.contains(want), "{flags:?}: {err}");
        assert!(!data.exists(), "{flags:?}: the data directory was created");
        assert!(!socket.exists(), "{flags:?}: the socket was left");
    }
}

/// A file's warnings are logged once, by the load the server keeps, not again by the check
/// that reads every file before anything is created.
#[test]
fn file_warnings_are_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = aesgcm_config(dir.path());
    let tokens = dir.path().join("tokens.csv");
    write_private(&tokens, b"tok-0123456789,u,1\ntok-0123456789,v,2\n");
    let (mut p, _) = spawn_server(
        dir.path(),
        &cfg,
        "w",
        &["--token-auth-file", tokens.to_str().unwrap()],
    );
    p.signal(Signal::TERM);
    assert!(p.wait(Duration::from_secs(20)).success());
    let log = fs::read_to_string(dir.path().join("w.err")).unwrap();
    assert_eq!(
        log.matches("duplicate token has been found").count(),
        1,
        "{log}"
    );
}

/// `keyward server` with its data in `dir/NAME`, its socket `dir/NAME.sock`, the
/// configuration `cfg` and `extra` flags.
fn server_args(dir: &Path, cfg: &Path, name: &str, extra: &[&str]) -> Vec<String> {
    let path = |p: PathBuf| p.display().to_string();
    let mut args = vec![
        "server".to_owned(),
        "--data".to_owned(),
        path(dir.join(name)),
        "--encryption-config".to_owned(),
        path(cfg.to_owned()),
        "--socket".to_owned(),
        path(dir.join(format!("{name}.sock"))),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args
}

/// Starts [`server_args`]' server (stderr to `dir/NAME.err`) once its socket accepts; the
/// process and the socket.
fn spawn_server(dir: &Path, cfg: &Path, name: &str, extra: &[&str]) -> (Proc, PathBuf) {
    let args = server_args(dir, cfg, name, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sock = dir.join(format!("{name}.sock"));
    let p = Proc::spawn(&args, &[], &dir.join(format!("{name}.err")), &sock);
    (p, sock)
}

/// The audit log's public key is written once the log is open: a second server refused the log
/// (another process writes it) leaves the first one's key alone, and a log in a directory that
/// does not exist yet is created with its key.
#[test]
fn a_server_refused_the_audit_log_leaves_its_key_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = aesgcm_config(dir.path());
    let log = dir.path().join("new/sub/audit.log");
    let policy = dir.path().join("policy.yaml");
    fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
    )
    .unwrap();
    let (log_arg, policy_arg) = (log.display().to_string(), policy.display().to_string());
    let audit = [
        "--audit-log-path",
        log_arg.as_str(),
        "--audit-policy-file",
        policy_arg.as_str(),
    ];
    let _a = spawn_server(dir.path(), &cfg, "a", &audit);
    let public_key = log.with_extension("log.pub");
    let key = fs::read(&public_key).expect("the first server's public key");
    let b = server_args(dir.path(), &cfg, "b", &audit);
    let (ok, _, err) = run(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok);
    assert!(err.contains("another process is writing"), "{err}");
    assert_eq!(
        fs::read(&public_key).unwrap(),
        key,
        "the key is the first server's"
    );
    let keys: Vec<_> = fs::read_dir(log.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".pub"))
        .collect();
    assert_eq!(keys, ["audit.log.pub"]);
}

/// gRPC clients other than grpc-go and tonic: gRPC C-core (Python's grpcio here) sends the
/// socket's path as `:authority` unless told otherwise, which h2 alone answers with a reset
/// stream; the store answers them, call after call on one channel (HPACK's dynamic table in
/// use), and a call with 80 KiB of metadata (over h2's default limit of 16 KiB).
#[test]
fn grpcio_with_its_default_authority_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = aesgcm_config(dir.path());
    let (_server, sock) = spawn_server(dir.path(), &cfg, "s", &[]);
    let script = "import grpc, sys\n\
        for target in ('unix://' + sys.argv[1], 'unix:' + sys.argv[1]):\n\
        \x20   ch = grpc.insecure_channel(target)\n\
        \x20   call = ch.unary_unary('/keyward.v1.Secrets/List')\n\
        \x20   for _ in range(3):\n\
        \x20       call(b'', timeout=10)\n\
        \x20   call(b'', timeout=10, metadata=[('x-big-%d' % i, 'v' * 4096) for i in range(20)])\n\
        print('ok')\n";
    let out =
        crate::support::tools::python(&["grpc"], &["-c", script, sock.to_str().unwrap()], b"");
    assert_eq!(out, "ok\n");
}

pub(crate) struct Pki {
    pub(crate) ca: String,
    pub(crate) server_cert: String,
    pub(crate) server_key: String,
    pub(crate) client_cert: String,
    pub(crate) client_key: String,
    pub(crate) rogue_cert: String,
    pub(crate) rogue_key: String,
}

pub(crate) fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |names: Vec<String>, signer: Option<(&rcgen::Certificate, &KeyPair)>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        // The client is an administrator: CN is the user, O the group (as kube-apiserver).
        if names == ["client"] {
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "client");
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, "system:masters");
        }
        let cert = match signer {
            Some((c, k)) => params.signed_by(&key, c, k).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()], Some((&ca, &ca_key)));
    let (client_cert, client_key) = leaf(vec!["client".into()], Some((&ca, &ca_key)));
    let (rogue_cert, rogue_key) = leaf(vec!["rogue".into()], None);
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
        rogue_cert,
        rogue_key,
    }
}

pub(crate) async fn tls_channel(
    port: u16,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

pub(crate) async fn create_with_token(
    ch: Channel,
    token: Option<&str>,
    name: &str,
) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(secret(name, b"v"));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    SecretsClient::new(ch).create(req).await.map(|_| ())
}

#[test]
fn tcp_listener_requires_tls_and_client_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = aesgcm_config(dir.path());
    let p = pki();
    let f = |n: &str, data: &str| {
        let path = dir.path().join(n);
        write_private(&path, data.as_bytes());
        path.display().to_string()
    };
    let (ca, cert, key) = (
        f("ca.pem", &p.ca),
        f("srv.pem", &p.server_cert),
        f("srv.key", &p.server_key),
    );
    let token = "tok-0123456789abcdef-XYZ";
    let tokens = f("tokens", &format!("# ops team\n{token}\n"));
    let port = free_port();
    let sock = dir.path().join("kw.sock");
    let listen = format!("127.0.0.1:{port}");
    let mut proc = Proc::spawn(
        &[
            "server",
            "--data",
            dir.path().join("store").to_str().unwrap(),
            "--encryption-config",
            cfg.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
            "--listen",
            &listen,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--client-ca",
            &ca,
            "--tokens-file",
            &tokens,
        ],
        &[],
        &dir.path().join("log"),
        &sock,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "TCP listener never came up: {}",
            proc.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = rt();
    rt.block_on(async {
        // A bearer token over TLS.
        let ch = tls_channel(port, &p.ca, None).await.unwrap();
        create_with_token(ch.clone(), Some(token), "by-token")
            .await
            .unwrap();
        let e = create_with_token(ch.clone(), Some("wrong-token-0123456789"), "x")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let e = create_with_token(ch.clone(), None, "x").await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(
            e.message().contains("client authentication required"),
            "{}",
            e.message()
        );
        // A client certificate signed by the CA.
        let ch = tls_channel(port, &p.ca, Some((&p.client_cert, &p.client_key)))
            .await
            .unwrap();
        create_with_token(ch, None, "by-cert").await.unwrap();
        // A certificate from another CA is rejected by the TLS handshake or the call.
        if let Ok(ch) = tls_channel(port, &p.ca, Some((&p.rogue_cert, &p.rogue_key))).await {
            assert!(create_with_token(ch, None, "rogue").await.is_err());
        }
        // Plaintext HTTP/2 on the TLS port fails.
        let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await;
        if let Ok(ch) = plain {
            assert!(create_with_token(ch, Some(token), "plain").await.is_err());
        }
        // Both show up on the Unix socket (no authentication there: 0600 protects it).
        let mut c = secrets_client(&sock).await;
        let list = c
            .list(pb::ListRequest::default())
            .await
            .unwrap()
            .into_inner();
        let names: Vec<_> = list
            .items
            .iter()
            .map(|s| s.metadata.as_ref().unwrap().name.clone())
            .collect();
        assert_eq!(names, vec!["by-cert".to_owned(), "by-token".to_owned()]);
    });
    // The CLI over https: CA file plus a token file, or a client certificate.
    let url = format!("https://localhost:{port}");
    let token_file = f("client-token", token);
    let (ok, out, err) = run(&[
        "get",
        "secrets",
        "--server",
        &url,
        "--ca-file",
        &ca,
        "--token-file",
        &token_file,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("by-cert") && out.contains("by-token"), "{out}");
    let (cc, ck) = (
        f("client.pem", &p.client_cert),
        f("client.key", &p.client_key),
    );
    let (ok, _, err) = run(&[
        "get",
        "secret",
        "by-cert",
        "--server",
        &url,
        "--ca-file",
        &ca,
        "--client-cert",
        &cc,
        "--client-key",
        &ck,
    ]);
    assert!(ok, "{err}");
    let bad_token = f("bad-token", "not-the-right-token-000");
    let (ok, _, err) = run(&[
        "get",
        "secrets",
        "--server",
        &url,
        "--ca-file",
        &ca,
        "--token-file",
        &bad_token,
    ]);
    assert!(!ok);
    assert_eq!(
        err,
        "Error from server (Unauthorized): invalid bearer token\n"
    );
    let (ok, _, err) = run(&[
        "get",
        "secrets",
        "--server",
        &format!("http://127.0.0.1:{port}"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("expected unix:///absolute/path/to/keyward.sock or https://host:port"),
        "{err}"
    );
    proc.signal(Signal::TERM);
    assert!(
        proc.wait(Duration::from_secs(20)).success(),
        "{}",
        proc.stderr()
    );
    let log = proc.stderr();
    assert!(!log.contains(token), "the token must not be logged");
}
