//! Data directories written by keyward 0.1.0 (`tests/fixtures/release-0.1.0`, see its README)
//! open and serve unchanged data with this keyward: the real binary converts the keyring to the
//! current layout on first start, keeps every key and every Secret, and starts again on the
//! converted directory.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{run, Proc};
use keyward::keyring::{DIR_STORE, LEGACY_DIR};
use keyward::pb::keyward_v1 as pb;
use keyward::pb::keyward_v1::secrets_client::SecretsClient;
use keyward::pb::kms_v2::key_management_service_client::KeyManagementServiceClient as V2Client;
use keyward::pb::kms_v2::{DecryptRequest, EncryptRequest, StatusRequest};
use keyward::uds;
use rustix::process::Signal;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/release-0.1.0");
/// The dev fixture's keys: the first (decrypt-only since the rotation) and the primary.
const OLD_KEY: &str = "kw-1-8fc6f481ce8dfdd168dcd8db42471cb1";
const NEW_KEY: &str = "kw-2-917e5bcbd741be0a3f51553f6be0a13c";
/// The passphrase fixture's one key.
const PASSPHRASE_KEY: &str = "kw-1-598c13bb290f16d2ba51882fc30c82cc";

/// Copies fixture `name` into `to` with the modes a data directory has (git keeps none):
/// directories 0700, files 0600.
fn copy_fixture(name: &str, to: &Path) {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        fs::set_permissions(to, fs::Permissions::from_mode(0o700)).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), &target).unwrap();
                fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
    copy(&Path::new(FIXTURES).join(name), to);
}

/// `keyward dev --data DATA`, up once its store socket answers.
fn start_dev(data: &Path, log: &Path) -> Proc {
    Proc::spawn(
        &["dev", "--data", data.to_str().unwrap()],
        &[],
        log,
        &data.join("keyward.sock"),
    )
}

fn stop(mut p: Proc) {
    p.signal(Signal::TERM);
    let status = p.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}: {}", p.stderr());
}

async fn secret(
    c: &mut SecretsClient<tonic::transport::Channel>,
    ns: &str,
    name: &str,
) -> pb::Secret {
    c.get(pb::GetRequest {
        namespace: ns.into(),
        name: name.into(),
        revision: 0,
    })
    .await
    .unwrap_or_else(|e| panic!("get {ns}/{name}: {e}"))
    .into_inner()
}

fn values(s: &pb::Secret) -> HashMap<String, String> {
    s.data
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap()))
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> HashMap<String, String> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `kms keys` through the admin socket: (key_id, state) of every key.
fn kms_keys(data: &Path) -> Vec<(String, String)> {
    let admin = data.join("kms-admin.sock");
    let (ok, out, err) = run(&["kms", "keys", "--admin-socket", admin.to_str().unwrap()]);
    assert!(ok, "{err}");
    out.lines()
        .skip(1)
        .map(|l| {
            let mut words = l.split_whitespace();
            let id = words.next().unwrap().to_owned();
            (id, words.next().unwrap().to_owned())
        })
        .collect()
}

/// Every Secret the dev fixture holds, with its values and history; its two keys in their
/// states; and a fresh Encrypt/Decrypt round trip through the plugin.
async fn check_dev(data: &Path) {
    let channel = uds::unix_channel(&data.join("keyward.sock")).await.unwrap();
    let mut c = SecretsClient::new(channel);
    let db = secret(&mut c, "default", "db").await;
    assert_eq!(
        values(&db),
        pairs(&[("password", "changed"), ("user", "admin")])
    );
    let api = secret(&mut c, "prod", "api").await;
    assert_eq!(values(&api), pairs(&[("token", "abc123")]));
    let after = secret(&mut c, "default", "after-rotation").await;
    assert_eq!(values(&after), pairs(&[("k", "v2")]));
    let history = c
        .history(pb::HistoryRequest {
            namespace: "default".into(),
            name: "db".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let revisions: Vec<(i64, &str)> = history
        .iter()
        .map(|e| (e.revision, e.change.as_str()))
        .collect();
    assert_eq!(revisions, [(5, "updated"), (2, "created")]);
    assert_eq!(
        values(history[1].secret.as_ref().unwrap()),
        pairs(&[("password", "s3cret"), ("user", "admin")])
    );
    let listed = c
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.items.len(), 3);
    assert!(listed.errors.is_empty(), "{:?}", listed.errors);

    assert_eq!(
        kms_keys(data),
        [
            (OLD_KEY.to_owned(), "decrypt-only".to_owned()),
            (NEW_KEY.to_owned(), "primary".to_owned())
        ]
    );
    let mut kms = V2Client::new(uds::unix_channel(&data.join("kms.sock")).await.unwrap());
    let status = kms.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (status.key_id.as_str(), status.healthz.as_str()),
        (NEW_KEY, "ok")
    );
    let wrapped = kms
        .encrypt(EncryptRequest {
            plaintext: b"a fresh seed".to_vec(),
            uid: "upgrade".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wrapped.key_id, NEW_KEY);
    let plain = kms
        .decrypt(DecryptRequest {
            ciphertext: wrapped.ciphertext,
            uid: "upgrade".into(),
            key_id: wrapped.key_id,
            annotations: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .plaintext;
    assert_eq!(plain, b"a fresh seed");
}

/// The keyring directory of the dev data directory `data`, and its layout now.
fn layout(data: &Path) -> (bool, bool) {
    let kms = data.join("kms");
    (kms.join(LEGACY_DIR).exists(), kms.join(DIR_STORE).exists())
}

fn temp_data(tmp: &tempfile::TempDir) -> PathBuf {
    let data = tmp.path().join("dev");
    copy_fixture("dev", &data);
    assert_eq!(
        layout(&data),
        (true, false),
        "the fixture has the 0.1.0 layout"
    );
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_directory_of_0_1_0_serves_its_data_and_keys_and_is_converted_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = temp_data(&tmp);
    let p = start_dev(&data, &tmp.path().join("first.log"));
    check_dev(&data).await;
    assert_eq!(
        layout(&data),
        (false, true),
        "converted; the old copy removed"
    );
    assert!(
        p.stderr().contains("converted the keyring"),
        "{}",
        p.stderr()
    );
    stop(p);

    // A second start opens the converted directory as it is.
    let p = start_dev(&data, &tmp.path().join("second.log"));
    check_dev(&data).await;
    assert!(
        !p.stderr().contains("converted the keyring"),
        "{}",
        p.stderr()
    );
    assert_eq!(layout(&data), (false, true));
    stop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_interrupted_after_writing_its_temporary_store_is_redone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = temp_data(&tmp);
    // What a crash while converting leaves: the old layout, and a half-made temporary store.
    let half = data.join("kms").join(format!("{DIR_STORE}.tmp"));
    fs::create_dir_all(&half).unwrap();
    fs::write(half.join("db"), b"half written").unwrap();
    fs::write(half.join("conf"), b"").unwrap();
    let p = start_dev(&data, &tmp.path().join("dev.log"));
    check_dev(&data).await;
    assert_eq!(layout(&data), (false, true));
    assert!(!half.exists(), "the half-made store was discarded");
    stop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passphrase_keyring_of_0_1_0_opens_with_its_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("passphrase");
    copy_fixture("passphrase", &dir);
    let (pp, socket) = (dir.join("pp"), tmp.path().join("kms.sock"));
    let seal = format!("passphrase-file:{}", dir.join("pass.txt").display());
    let serve = |log: &str| {
        Proc::spawn(
            &[
                "kms",
                "serve",
                "--data",
                pp.to_str().unwrap(),
                "--seal",
                &seal,
                "--socket",
                socket.to_str().unwrap(),
            ],
            &[],
            &tmp.path().join(log),
            &socket,
        )
    };
    for log in ["first.log", "second.log"] {
        let p = serve(log);
        let mut kms = V2Client::new(uds::unix_channel(&socket).await.unwrap());
        let status = kms.status(StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(status.key_id, PASSPHRASE_KEY);
        assert_eq!(status.healthz, "ok");
        assert!(!pp.join(LEGACY_DIR).exists() && pp.join(DIR_STORE).exists());
        stop(p);
    }
}
