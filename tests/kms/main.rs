//! The KMS plugin: its gRPC semantics and wire contract, the keyring behind it (in a data
//! directory and in etcd), replicas sharing one keyring, an independent Python client, its
//! metrics and JSON logs, data directories written by an earlier release, and the root of trust
//! (PKCS#11 on SoftHSM, Shamir unseal, root-key rotation, systemd credentials, the README's
//! quick starts).
//!
//! One test binary for the subject (`cargo test --test kms`); each module was a binary of its
//! own before. Shared harnesses live in `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod hardening;
mod hsm;
mod keyring;
mod metrics;
mod plugin;
mod proto_wire;
mod python_client;
mod quickstart;
mod root;
mod shared;
mod upgrade;
