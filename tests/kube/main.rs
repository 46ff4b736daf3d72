//! The Kubernetes API for Secrets, driven by the real clients: every kubectl minor version from
//! 1.27 to 1.33 against a running `keyward dev` (the admin kubeconfig it writes, client
//! certificates from `keyward kubeconfig`, bearer and service account tokens), the official
//! Python client against a store server started in this process, and the object semantics
//! against independent implementations (protobuf bodies built by Python's `google.protobuf`
//! with kubectl's empty fields, decoded by `keyward::kube::proto`, and keyward's protobuf
//! Secret read back by Python).
//!
//! One test binary for the subject (`cargo test --test kube`). Shared harnesses live in
//! `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod auth_cli;
mod health;
mod kubectl;
mod kubectl_writes;
mod oidc;
mod proto;
mod python;
mod store;
mod tokens;
mod unreadable;
