//! The secret store: Kubernetes semantics over gRPC (on sled and on etcd), encryption at rest
//! through the real plugin, reloading the encryption configuration, migration after a key
//! rotation, `keyward server` as a process, and the metrics both products export (with the
//! dashboard and alert rules of deploy/ checked against them).
//!
//! One test binary for the subject (`cargo test --test store`). Shared harnesses live in
//! `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod access;
mod encryption;
mod full_disk;
mod kms_admin_audit;
mod listener;
mod metrics;
mod migrate;
mod reads;
mod reload;
mod semantics;
mod server;
