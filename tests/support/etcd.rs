//! Real etcd servers for tests: one member, or a cluster of several processes on loopback ports,
//! each with its data directory in a temp dir. Needs Debian's `etcd-server` (`/usr/bin/etcd`) or
//! `KEYWARD_ETCD_BIN`, and `etcdctl` (Debian's `etcd-client`) as an independent client; a test
//! that needs either fails without it, naming the package. `.ci/run` installs both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// The etcd binary: `KEYWARD_ETCD_BIN`, else `etcd` on `PATH`.
pub fn etcd_bin() -> String {
    let bin = std::env::var("KEYWARD_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
    assert!(
        runs(&bin, "--version"),
        "etcd is needed for this test and was not found as {bin:?}: install Debian's etcd-server \
         (apt-get install etcd-server), or set KEYWARD_ETCD_BIN"
    );
    bin
}

/// `etcdctl`, or a failure saying how to install it.
pub fn require_etcdctl() -> String {
    super::require_tool("etcdctl", "apt-get install etcd-client");
    assert!(
        runs("etcdctl", "version"),
        "etcdctl is needed for this test and `etcdctl version` failed: install Debian's \
         etcd-client (apt-get install etcd-client)"
    );
    "etcdctl".to_owned()
}

/// Whether `program arg` runs and succeeds (etcdctl speaking the v3 API).
fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .env("ETCDCTL_API", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The command line of one etcd member named `name` with its data in `data_dir`, serving
/// clients on `client_url` and peers on `peer_url` in a cluster of `initial_cluster`, logging
/// warnings to `log`. Callers add TLS or other flags.
pub fn member_command(
    name: &str,
    data_dir: &Path,
    client_url: &str,
    peer_url: &str,
    initial_cluster: &str,
    log: std::fs::File,
) -> Command {
    let mut cmd = Command::new(etcd_bin());
    cmd.args(["--name", name])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", client_url])
        .args(["--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url])
        .args(["--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", initial_cluster])
        .args(["--logger", "zap", "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    cmd
}

/// One etcd member process.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
}

/// An etcd cluster of one or more members on loopback.
pub struct Etcd {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    initial_cluster: String,
    /// Extra etcd flags for every member (e.g. `--max-request-bytes`).
    extra: Vec<String>,
}

impl Etcd {
    /// One member, ready to serve.
    pub fn start() -> Etcd {
        Self::start_cluster(1)
    }

    /// One member started with extra etcd flags, ready to serve.
    pub fn start_with(extra: &[&str]) -> Etcd {
        Self::start_cluster_with(1, extra)
    }

    /// `n` members forming one cluster, ready to serve (a leader is elected).
    pub fn start_cluster(n: usize) -> Etcd {
        Self::start_cluster_with(n, &[])
    }

    /// `n` members with extra etcd flags, ready to serve.
    pub fn start_cluster_with(n: usize, extra: &[&str]) -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut members = Vec::new();
        for i in 0..n {
            members.push(Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                data_dir: dir.path().join(format!("m{i}")),
                child: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            dir,
            members,
            initial_cluster,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        etcd.wait_ready();
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.path().join(format!("m{i}.log"))).expect("log");
        let m = &mut self.members[i];
        let child = member_command(
            &m.name,
            &m.data_dir,
            &m.client_url,
            &m.peer_url,
            &self.initial_cluster,
            log,
        )
        .args(["--initial-cluster-state", "new"])
        .args(["--initial-cluster-token", "keyward-test"])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .args(&self.extra)
        .spawn()
        .expect("start etcd");
        m.child = Some(child);
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> &str {
        &self.members[i].client_url
    }

    /// The endpoints as one comma-separated flag value.
    pub fn endpoints_flag(&self) -> String {
        self.endpoints().join(",")
    }

    /// Backend options for this cluster.
    pub fn options(&self) -> keyward::backend::etcd::EtcdOptions {
        keyward::backend::etcd::EtcdOptions {
            endpoints: self.endpoints(),
            ..Default::default()
        }
    }

    /// Kills member `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts member `i` on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready();
    }

    /// Waits until every running member answers a linearizable read (so a leader exists).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            loop {
                let url = format!("{}/health", m.client_url);
                if health(&url) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} did not become healthy; log:\n{}",
                    m.name,
                    self.log(&m.name)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Member `name`'s log.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// `etcdctl get <key> --print-value-only` through an independent client.
    pub fn etcdctl_get(&self, key: &str) -> Vec<u8> {
        let out = Command::new(require_etcdctl())
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &self.endpoints_flag(),
                "get",
                key,
                "--print-value-only",
            ])
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl get failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut v = out.stdout;
        // etcdctl prints the value followed by a newline.
        if v.last() == Some(&b'\n') {
            v.pop();
        }
        v
    }
}

/// One key as etcd stores it, read by `etcdctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtlKv {
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

/// `etcdctl --endpoints <endpoints> get <key> -w json <extra...>`: the key (None if absent), or
/// etcdctl's error output. Values come base64-encoded in JSON, so any bytes read back exactly.
pub fn etcdctl_kv(endpoints: &str, key: &str, extra: &[&str]) -> Result<Option<CtlKv>, String> {
    use base64::Engine as _;
    let out = Command::new(require_etcdctl())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "5s"])
        .args(["get", key, "-w", "json"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("etcdctl printed no JSON ({e}): {:?}", out.stdout))?;
    let Some(kv) = doc["kvs"].as_array().and_then(|kvs| kvs.first()) else {
        return Ok(None);
    };
    let int = |f: &str| kv[f].as_i64().unwrap_or(0);
    let value = base64::engine::general_purpose::STANDARD
        .decode(kv["value"].as_str().unwrap_or(""))
        .map_err(|e| format!("etcdctl value is not base64: {e}"))?;
    Ok(Some(CtlKv {
        value,
        create_revision: int("create_revision"),
        mod_revision: int("mod_revision"),
        version: int("version"),
    }))
}

/// `etcdctl --endpoints <endpoints> get <prefix> --prefix --keys-only`: every key under
/// `prefix`, in order.
pub fn etcdctl_keys(endpoints: &str, prefix: &str) -> Vec<String> {
    let out = Command::new(require_etcdctl())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "5s"])
        .args(["get", prefix, "--prefix", "--keys-only"])
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl get --prefix failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `etcdctl --endpoints <endpoints> put <key>` with the value on stdin, so any bytes go in.
pub fn etcdctl_put(endpoints: &str, key: &str, value: &[u8]) {
    use std::io::Write as _;
    let mut child = Command::new(require_etcdctl())
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "5s"])
        .args(["put", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(value)
        .expect("write the value to etcdctl");
    let out = child.wait_with_output().expect("etcdctl");
    assert!(
        out.status.success(),
        "etcdctl put failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GET /health over plain HTTP: etcd answers `{"health":"true"}` once it has a leader and can
/// serve a linearizable read.
fn health(url: &str) -> bool {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
