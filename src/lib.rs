//! keyward: a Kubernetes KMS v2/v1 plugin with a sealed, rotating keyring, and an encrypted
//! secret store with Kubernetes Secret semantics. One library, two products, one thin binary.
//!
//! # The map
//!
//! **The plugin** (`keyward kms serve`): kube-apiserver wraps its data-encryption keys here.
//! - [`kms`] owns the KMS v2 and v1 gRPC services, the health and admin services, the one mapping
//!   of keyring errors to gRPC statuses, and [`kms::PluginServer`] (sockets, key maintenance,
//!   drain).
//! - [`keyring`] owns key-encryption keys: ids, states, counters, the ciphertext envelope, the
//!   sealed and MAC'd document, rotation policy, and its persistence through the [`backend`]
//!   seam (sled in a data directory, or etcd shared by plugin replicas).
//! - [`seal`] owns root-key sources: key files, Argon2id passphrase files, PKCS#11 HSMs and
//!   Shamir shares.
//!
//! **The store** (`keyward server`): Kubernetes Secrets, encrypted at rest.
//! - [`authn`] owns who is asking: the [`authn::Identity`] and the authenticators (Unix peer
//!   credentials, client certificates, token files, bootstrap and service account tokens,
//!   service-account-token Secrets) with the bearer-token chain and file reload.
//! - [`authz`] owns whether they may: request [`authz::Attributes`], decisions, Kubernetes RBAC
//!   from manifests ([`authz::Rbac`], reloaded as [`authz::Policy`]), Forbidden messages, the
//!   `auth can-i` reviews and impersonation.
//! - [`audit`] owns who did what: the `audit.k8s.io/v1` policy and events (no Secret values),
//!   the hash-chained log with signed checkpoints, and [`audit::verify`].
//! - [`access`] owns the guarded store, the only way front ends reach the store: every operation
//!   authenticated ([`access::Authenticators`]), authorized (RBAC), audited (fail closed) and
//!   only then run; the server's sealed keys (service account signing, audit checkpoints).
//! - [`server`] owns the assembled store server: [`server::StoreServer`] opens the backend,
//!   loads the EncryptionConfiguration, builds the store and serves [`api`] until shutdown.
//! - [`kube`] owns the Kubernetes REST API for Secrets over [`access`] (so kubectl and client
//!   libraries work): discovery, OpenAPI, JSON and protobuf bodies, patches, server-side apply,
//!   Tables, watch and `metav1.Status` errors.
//! - [`api`] owns the `keyward.v1` gRPC services over [`access`] (Secrets, Encryption, Auth),
//!   reading each call's credentials, the mappings of errors to gRPC statuses, and
//!   [`api::serve`].
//! - [`store`] owns Secret semantics: the model and its validation, registry operations (create,
//!   get, update, delete, list, watch, history, rollback, migrate) on a [`backend::Backend`],
//!   every value encrypted by an [`encryption`] chain, and field ownership (`managedFields`),
//!   which both front ends record.
//! - [`encryption`] owns encryption at rest as kube-apiserver does it: the
//!   `EncryptionConfiguration` file and the provider chains (identity, aescbc, aesgcm, secretbox,
//!   kms v1, kms v2 through a KMS client) that turn a storage key and plaintext into stored bytes.
//! - [`backend`] (shared) owns the storage seam: a revisioned key-value store with etcd's
//!   semantics and its implementations, sled embedded and etcd over its v3 gRPC API.
//!
//! **Shared by both**: [`crypto`] (the only module naming an AEAD, KDF or MAC crate; key types
//! that zeroize), [`backend`], [`uds`] (Unix sockets: safe binding, client channels, `unix://`
//! endpoints), [`net`] (limited listeners: connection caps within a descriptor budget, accept
//! backoff, connection timeouts), [`names`] (Kubernetes names as types: namespaces, Secret names,
//! data keys), [`reason`] (the machine-readable reason every keyward gRPC status carries),
//! [`redact`] (serde decoders' error text without the values it quotes), [`log_throttle`] (log
//! lines a caller could cause at request rate, at most one a second), [`memory`] (returning
//! memory freed after bulk work to the system), [`go_duration`]
//! (Go's duration format, as Kubernetes files write it) and [`pb`] (the generated protobuf code).
//!
//! **Around the store**, used by the CLI: [`manifest`] (Secret manifests in YAML/JSON, manifest
//! files, the kustomize secretGenerator), [`projection`] (kubelet's ways to hand Secrets to a
//! process: atomic secret volumes, environment variables) and [`bench`](mod@bench) (load
//! generators for any KMS v2 plugin, the store and etcd, with their reports).
//!
//! **Observing both**: [`metrics`] owns the Prometheus registry, the tower layer that measures
//! the gRPC servers at their edge, the collectors that read the keyring's and the store's state
//! at scrape time, and the `/metrics` endpoint.
//!
//! **[`cli`] drives both**: argument definitions, reading files named by flags, output, process
//! hardening and signals. Nothing below it prints or names a flag.
//!
//! Imports only point down: `cli` → `server`, `api`, `kms`, `manifest`, `projection`, `bench` →
//! `access` → `authz`, `audit`, `authn` → `store`, `keyring` → `encryption`, `seal` →
//! `backend`, `crypto`, `names`, `uds`, `reason`, `pb`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod api;
pub mod audit;
pub mod authn;
pub mod authority;
pub mod authz;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod crypto;
pub mod encryption;
pub mod go_duration;
pub mod go_json;
pub mod go_time;
pub mod keyring;
pub mod kms;
pub mod kube;
pub mod log_throttle;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod names;
pub mod net;
pub mod pb;
pub mod projection;
pub mod reason;
pub mod redact;
pub mod seal;
pub mod server;
pub mod store;
pub mod uds;
