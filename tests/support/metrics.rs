//! Reading a keyward process's `/metrics` the way a scraper does (plain HTTP over loopback) and
//! parsing it with an independent parser: Python `prometheus_client`'s
//! (tests/python/metrics_parse.py), so keyward's own encoder is never its own judge.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::tools::require_python;

/// `GET /metrics` with `accept`; the response body. Retries connecting for up to 10 s (the
/// endpoint is bound at start, but the process may still be starting).
pub fn scrape_accept(addr: &str, accept: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot reach {addr}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response with a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// `GET /metrics` as `curl` would: the Prometheus text format.
pub fn scrape(addr: &str) -> String {
    scrape_accept(addr, "*/*")
}

/// One sample of a parsed family.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The value; a non-finite one is `f64::INFINITY` or NaN.
    pub value: f64,
}

/// A metric family as prometheus_client parsed it. Counter family names have no `_total`
/// (their samples do).
#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub samples: Vec<Sample>,
}

/// Parses `text` with prometheus_client's Prometheus text parser (`openmetrics`: its OpenMetrics
/// parser).
pub fn parse(text: &str, openmetrics: bool) -> Vec<Family> {
    let python = require_python(&["prometheus_client"]);
    let script: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "python",
        "metrics_parse.py",
    ]
    .iter()
    .collect();
    let mut child = Command::new(python)
        .arg(script)
        .arg(if openmetrics {
            "openmetrics"
        } else {
            "prometheus"
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|f| Family {
            name: f["name"].as_str().unwrap().to_owned(),
            kind: f["type"].as_str().unwrap().to_owned(),
            samples: f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    name: s["name"].as_str().unwrap().to_owned(),
                    labels: s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect(),
                    value: match &s["value"] {
                        serde_json::Value::String(v) if v.contains("inf") => f64::INFINITY,
                        serde_json::Value::String(_) => f64::NAN,
                        v => v.as_f64().unwrap(),
                    },
                })
                .collect(),
        })
        .collect()
}

/// Scrapes `addr` and parses the Prometheus text format.
pub fn scrape_parsed(addr: &str) -> Vec<Family> {
    parse(&scrape(addr), false)
}

/// The family named `name` (without `_total` for a counter), if present.
pub fn family<'a>(families: &'a [Family], name: &str) -> Option<&'a Family> {
    families.iter().find(|f| f.name == name)
}

/// The value of the sample `name` whose labels include every pair of `labels`; 0 if none
/// (a series that does not exist yet has not counted anything).
pub fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    families
        .iter()
        .flat_map(|f| &f.samples)
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map_or(0.0, |s| s.value)
}

/// Every sample name and family name in `families`.
pub fn names(families: &[Family]) -> std::collections::BTreeSet<String> {
    families
        .iter()
        .flat_map(|f| {
            std::iter::once(f.name.clone()).chain(f.samples.iter().map(|s| s.name.clone()))
        })
        .collect()
}

/// Every label value in `families`.
pub fn label_values(families: &[Family]) -> Vec<String> {
    families
        .iter()
        .flat_map(|f| &f.samples)
        .flat_map(|s| s.labels.values().cloned())
        .collect()
}
