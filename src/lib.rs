//! keyward: a Kubernetes KMS v2/v1 plugin with a sealed, rotating keyring, and an encrypted
//! secret store with Kubernetes Secret semantics.
//!
//! Modules, top to bottom (imports only point down):
//!
//! - [`cli`] owns the command line: argument definitions, output formatting, process hardening
//!   and signal handling. Nothing below it prints.
//! - [`server`] owns the store server: it opens the backend, loads the EncryptionConfiguration,
//!   builds the encryption chain and the store, binds the listeners and serves [`api`] until
//!   shutdown, with the reloader, automatic migration and socket guards it needs.
//! - [`api`] owns the `keyward.v1` gRPC services over the store (Secrets, Encryption), the
//!   mapping of store errors to gRPC statuses, client authentication on TCP, and `serve` on
//!   already-bound listeners.
//! - [`manifest`] owns Secret manifests: YAML/JSON codec, manifest files, kustomize generator.
//! - [`projection`] owns kubelet's ways to hand Secrets over: atomic secret volumes, env vars.
//! - [`bench`](mod@bench) owns the load generators (KMS v2, store, etcd, Unix floor) and their reports.
//! - [`kms`] owns the KMS plugin's gRPC services (KMS v2, KMS v1, health, admin), the mapping of
//!   keyring errors to gRPC statuses, and the plugin server (sockets, key maintenance, drain).
//! - [`store`] owns the secret store: the Secret model and its validation, registry operations
//!   (create, get, update, delete, list, watch, history, rollback) on a [`backend::Backend`],
//!   every value encrypted by an [`encryption`] chain.
//! - [`keyring`] owns key-encryption keys: their ids, states, counters, rotation policy and
//!   sealed persistence through the [`backend`] seam (sled in a data directory, or etcd shared by
//!   plugin replicas).
//! - [`encryption`] owns encryption at rest as kube-apiserver does it: the
//!   `EncryptionConfiguration` file and the provider chains (identity, aescbc, aesgcm, secretbox,
//!   kms v1, kms v2) that turn a storage key and plaintext into stored bytes and back.
//! - [`backend`] owns the storage seam: a revisioned key-value store with etcd's semantics
//!   (revisions, conditional writes, watch, compaction) and its implementations: sled embedded,
//!   and etcd over etcd's v3 gRPC API.
//! - [`seal`] owns root-key sources: key files and Argon2id passphrase files.
//! - [`names`] owns Kubernetes name rules (DNS-1123 labels and subdomains, FQDNs) and the
//!   checked names every layer takes: `Namespace`, `SecretName`, `DataKey`.
//! - [`go_duration`] owns Go's duration format (`3s`, `1m30s`), as Kubernetes files write it.
//! - [`uds`] owns Unix domain sockets: safe binding for servers, gRPC channels for clients,
//!   and `unix://` endpoints.
//! - [`crypto`] owns the cryptographic primitives; it is the only module that names an AEAD,
//!   KDF or MAC crate.
//! - [`pb`] holds the generated protobuf code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod crypto;
pub mod encryption;
pub mod go_duration;
pub mod keyring;
pub mod kms;
pub mod manifest;
pub mod names;
pub mod pb;
pub mod projection;
pub mod reason;
pub mod seal;
pub mod server;
pub mod store;
pub mod uds;
