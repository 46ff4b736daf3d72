//! The secret store: Kubernetes semantics over gRPC (on sled and on etcd), encryption at rest
//! through the real plugin, reloading the encryption configuration, migration after a key
//! rotation, and `keyward server` as a process.
//!
//! One test binary for the subject (`cargo test --test store`). Shared harnesses live in
//! `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod encryption;
mod listener;
mod migrate;
mod reload;
mod semantics;
mod server;
