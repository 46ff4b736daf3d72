//! Test support shared by every integration test binary (`tests/*/main.rs`) and by the benches:
//! the plugin served in this process ([`plugin`]), the store server started through the library
//! and EncryptionConfiguration writers ([`store`]), SoftHSM tokens for the PKCS#11 seal ([`hsm`]),
//! the built `keyward` binary as a child process ([`binary`]), scraping and independently parsing
//! `/metrics` ([`metrics`]), real etcd servers ([`etcd`]) and the external programs tests
//! cross-check against
//! ([`tools`]: a missing one fails the test, naming what to install).
//!
//! Included, not a crate: a test binary says `#[path = "../support/mod.rs"] mod support;` in its
//! `main.rs`, a bench `#[path = "../tests/support/mod.rs"] mod support;`. Cargo does not build
//! this directory as a test of its own (it has no `main.rs`).
#![allow(dead_code)] // each test binary and bench uses a different subset

pub mod binary;
pub mod etcd;
pub mod hsm;
pub mod metrics;
pub mod plugin;
pub mod store;
pub mod tools;

// The names most tests use, at the top; each binary uses a different subset.
#[allow(unused_imports)]
pub use binary::{bin, kms_init, normalise, run, DevServer, Proc};
#[allow(unused_imports)]
pub use plugin::{open_now, Plugin, TempKeyring};
#[allow(unused_imports)]
pub use store::{
    config_text, encryption_config, keys_provider, kms_provider, kms_v2_provider, StoreHarness,
};
#[allow(unused_imports)]
pub use tools::require_tool;

use keyward::backend::Revision;
use keyward::names::{Namespace, SecretName};

/// Revision `r` (tests name revisions by number).
pub fn rev(r: i64) -> Revision {
    Revision::new(r).expect("a revision is at least 1")
}

/// Namespace `ns`, which must be valid.
pub fn ns(ns: &str) -> Namespace {
    Namespace::try_from(ns).expect("a valid namespace")
}

/// Secret name `name`, which must be valid.
pub fn name(name: &str) -> SecretName {
    SecretName::try_from(name).expect("a valid Secret name")
}

/// The name libtest gives test function `test` of the module whose `module_path!()` is
/// `module_path` (the path without the crate's name): what a test that runs its own binary as a
/// child passes with `--exact` to select one test, wherever the module sits.
pub fn test_name(module_path: &str, test: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, module)) => format!("{module}::{test}"),
        None => test.to_owned(),
    }
}

/// A loopback TCP port that was free a moment ago and that this process has not handed out
/// before, so that tests running at once in one binary never pick the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A runtime for a test's gRPC clients of a child process. It has a worker thread of its own,
/// so that a client's connection closes as soon as the client is dropped: on a current-thread
/// runtime nothing runs the closing while the test waits for the child, and a child told to
/// stop would wait for that idle connection until its drain timeout (10 s).
pub fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Opens a sled database directly, waiting for a previous user in this process to let go of it
/// (sled's background threads release the directory a moment after the last handle is dropped).
pub fn sled_open(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("retrying sled::open: {e}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("sled::open: {e}"),
        }
    }
}
