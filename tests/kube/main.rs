//! The Kubernetes API layer's object semantics against independent implementations: protobuf
//! bodies built by Python's `google.protobuf` (from tests/data/kube/k8s_subset.proto, with
//! kubectl's empty fields) decoded by `keyward::kube::proto`, and keyward's protobuf Secret read
//! back by Python.
//!
//! One test binary for the subject (`cargo test --test kube`).

#[path = "../support/mod.rs"]
mod support;

mod proto;
mod store;
