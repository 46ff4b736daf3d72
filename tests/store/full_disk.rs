//! A store whose disk refuses a write (here the file size limit, `prlimit --fsize`, with
//! SIGXFSZ ignored, so that a write past it fails with EFBIG as one on a full disk fails with
//! ENOSPC): the write that met it and every later one fail `Unavailable` saying the store must
//! be reopened, reads go on answering what was acknowledged, and a restart (with room again)
//! serves every acknowledged write.

use std::path::Path;
use std::process::Command;

use crate::support::binary::bin;
use crate::support::store::{aesgcm_config, pb_secret, secrets_client};
use crate::support::Proc;
use keyward::pb::keyward_v1 as pb;

/// `keyward server` on `dir`, its files limited to `fsize` bytes if given.
fn server(dir: &Path, fsize: Option<u64>) -> Proc {
    let sock = dir.join("kw.sock");
    let _ = std::fs::remove_file(&sock);
    let cfg = aesgcm_config(dir);
    let mut cmd = Command::new("sh");
    let limit = fsize.map_or(String::new(), |n| format!("prlimit --fsize={n}:{n} "));
    cmd.arg("-c")
        .arg(format!("trap '' XFSZ; exec {limit}\"$0\" \"$@\""))
        .arg(bin())
        .args([
            "server",
            "--data",
            dir.join("store").to_str().unwrap(),
            "--encryption-config",
            cfg.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
        ])
        .env_remove("KEYWARD_SEAL")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    Proc::start(cmd, &dir.join("log"), &[&sock])
}

/// The resourceVersion of Secret `default/name`, read through `c`.
async fn resource_version(
    c: &mut keyward::pb::keyward_v1::secrets_client::SecretsClient<tonic::transport::Channel>,
    name: &str,
) -> String {
    let got = c
        .get(pb::GetRequest {
            namespace: "default".into(),
            name: name.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e:?}"))
        .into_inner();
    got.metadata.expect("metadata").resource_version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_disk_write_stops_writes_not_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sock = d.join("kw.sock");
    let value = vec![b'v'; 200 * 1024];
    let mut acknowledged = Vec::new();
    {
        let proc = server(d, Some(3 << 20));
        let mut c = secrets_client(&sock).await;
        let mut refused = None;
        for i in 0..60 {
            let name = format!("s{i}");
            let created = c
                .create(pb::CreateRequest {
                    secret: Some(pb_secret("default", &name, &[("v", &value)])),
                    dry_run: false,
                })
                .await;
            match created {
                Ok(r) => {
                    acknowledged.push((name, r.into_inner().metadata.unwrap().resource_version))
                }
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let refused = refused.expect("a write past the file size limit was refused");
        assert!(acknowledged.len() >= 2, "{acknowledged:?}");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(
            refused.message().contains("must be reopened"),
            "{refused:?}"
        );
        // Reads answer what was acknowledged.
        let (first, rv) = &acknowledged[0];
        assert_eq!(resource_version(&mut c, first).await, *rv);
        let listed = c
            .list(pb::ListRequest {
                namespace: "default".into(),
                ..Default::default()
            })
            .await
            .expect("a list after the failed write")
            .into_inner();
        assert_eq!(listed.items.len(), acknowledged.len());
        // Writes stay refused.
        let again = c
            .create(pb::CreateRequest {
                secret: Some(pb_secret("default", "late", &[("v", b"x")])),
                dry_run: false,
            })
            .await
            .unwrap_err();
        assert_eq!(again.code(), tonic::Code::Unavailable, "{again:?}");
        drop(proc);
    }
    // Reopened with room: every acknowledged write is there, and writes work again.
    let _proc = server(d, None);
    let mut c = secrets_client(&sock).await;
    for (name, rv) in &acknowledged {
        assert_eq!(resource_version(&mut c, name).await, *rv);
    }
    c.create(pb::CreateRequest {
        secret: Some(pb_secret("default", "late", &[("v", b"x")])),
        dry_run: false,
    })
    .await
    .unwrap();
}
