//! The Kubernetes API for Secrets, driven by the real clients: every kubectl minor version from
//! 1.27 to 1.33 against a running `keyward dev` (the admin kubeconfig it writes, client
//! certificates from `keyward kubeconfig`, bearer and service account tokens), and the official
//! Python client against a store server started in this process.
//!
//! One test binary for the subject (`cargo test --test kube`). Shared harnesses live in
//! `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod kubectl;
mod kubectl_writes;
mod python;
