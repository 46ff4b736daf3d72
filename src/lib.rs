//! keyward: a Kubernetes KMS v2/v1 plugin with a sealed, rotating keyring, and (in progress) an
//! encrypted secret store with Kubernetes Secret semantics.
//!
//! Modules, top to bottom (imports only point down):
//!
//! - [`cli`] owns the command line: argument definitions, output formatting, process hardening
//!   and signal handling. Nothing below it prints.
//! - [`kms`] owns the KMS plugin's gRPC services (KMS v2, KMS v1, health, admin), the mapping of
//!   keyring errors to gRPC statuses, and Unix socket handling.
//! - [`keyring`] owns key-encryption keys: their ids, states, counters, rotation policy and
//!   sealed persistence in sled.
//! - [`seal`] owns root-key sources: key files and Argon2id passphrase files.
//! - [`crypto`] owns the cryptographic primitives; it is the only module that names an AEAD,
//!   KDF or MAC crate.
//! - [`pb`] holds the generated protobuf code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod crypto;
pub mod keyring;
pub mod kms;
pub mod pb;
pub mod seal;
