//! The `keyward` binary as people and programs use it: the operator's key and plugin commands,
//! the kubectl-shaped Secret commands, `apply`, `run` and `mount`, `bench`, `audit verify`, and
//! the README walkthrough verbatim.
//!
//! One test binary for the subject (`cargo test --test cli`). Shared harnesses live in
//! `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod apply;
mod audit;
mod bench;
mod consume;
mod hardening;
mod kubectl_parity;
mod operator;
mod printing;
mod readme;
mod secrets;
