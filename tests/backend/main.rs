//! The storage seam: `SledBackend` and `EtcdBackend` against a model, `kill -9` crashes of a
//! writer, and real etcd clusters (member failover, the store server on a cluster, TLS with
//! client certificates), and what retention leaves on disk.
//!
//! One test binary for the subject (`cargo test --test backend`). `crash` re-runs this binary as
//! its writer child, selecting `crash::crash_writer_child` by its full test name. Shared harnesses
//! live in `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod batches;
mod convert;
mod crash;
mod etcd_cluster;
mod etcd_failover;
mod etcd_tls;
mod log_format;
mod model;
mod retention;
mod watch_start;
