//! Fuzz targets for every parser that takes bytes from outside, on stable Rust (proptest draws
//! and shrinks, `arbitrary` shapes; see [`harness`]): ciphertexts and requests the plugin
//! receives ([`kms`]), what the store reads back from its backend ([`stored`]), bearer tokens and
//! client certificates ([`authn`]), the files an operator writes ([`config`]), Secret and patch
//! bodies the Kubernetes API reads ([`kube`]), manifests and kustomizations ([`manifest`]) and
//! the small text formats of flags and requests ([`text`]).
//! Each target checks that nothing panics or hangs and, where the format has one, a round-trip
//! property. [`catalogue`] is the bad-input catalogue: malformed inputs at every interface, each a
//! clear error naming the field that changes nothing.
//!
//! `cargo test --test fuzz` runs each target for a bounded number of cases (CI);
//! `KEYWARD_FUZZ_CASES=N KEYWARD_FUZZ_SEED=random cargo test --test fuzz` runs longer (see
//! docs/testing.md). Every input that once failed stays in its module's `regression_inputs`.

#[path = "../support/mod.rs"]
mod support;

mod authn;
mod catalogue;
mod config;
mod harness;
mod kms;
mod kube;
mod manifest;
mod stored;
mod text;
