//! Who did what, recorded so that it cannot be quietly changed, in kube-apiserver's formats:
//!
//! - [`Policy`]: an `audit.k8s.io/v1` Policy file (first matching rule wins; no policy, nothing
//!   logged) deciding each request's [`Level`] and omitted [`Stage`]s.
//! - [`Event`]: one `audit.k8s.io/v1` Event, built by [`Auditor::begin`] and [`RequestAudit`]
//!   (one call per stage) from the request's [`Attributes`](crate::authz::Attributes), its
//!   [`Decision`](crate::authz::Decision) and a [`RequestInfo`]. Request and response bodies are
//!   [`AuditObject`]s: a Secret is reduced to metadata (data keys without values) by its type.
//! - [`AuditLog`]: the writer. JSON lines, each line carrying the SHA-256 of the line before it
//!   (`keyward.io/chain`), signed checkpoints (periodic, at rotation and at shutdown), rotation by
//!   size that keeps the chain, every event durable before the request goes on (fail closed by
//!   default, [`FailureMode`]).
//! - [`verify`]: checks files written by [`AuditLog`] and names the first edited, removed,
//!   reordered or forged line, or an unsealed tail.
//!
//! Nothing here knows how a request arrived. The on-disk format is described in
//! `docs/design.md` ("Audit log format").

use std::path::PathBuf;

mod chain;
mod event;
mod file;
mod journal;
mod object;
mod policy;
mod request;
mod verify;
mod writer;

pub use chain::{
    read_public_key, CheckpointKind, CheckpointSigner, CHAIN_ANNOTATION, CHECKPOINT_ANNOTATION,
    CHECKPOINT_URI, CHECKPOINT_USER, CHECKPOINT_VERB, LOST_EVENTS_ANNOTATION,
    LOST_REASON_ANNOTATION, LOST_URI, LOST_VERB, PEER_UID_ANNOTATION, SEQ_ANNOTATION,
    SIGNATURE_ANNOTATION,
};
pub use event::{
    Annotations, Event, Level, MicroTime, ObjectReference, Peer, ResponseStatus, Stage, UserInfo,
    DECISION_ANNOTATION, REASON_ANNOTATION,
};
pub use object::{AuditObject, REDACTED_ANNOTATION_KEYS};
pub use policy::{Policy, RequestAuditConfig, Stages};
pub use request::{
    forwarded_ips, new_audit_id, AuditSink, Auditor, MemorySink, RequestAudit, RequestInfo,
};
pub use verify::{verify, FileSummary, Problem, ProblemKind, Report, Tail};
pub use writer::{AuditCounters, AuditLog, BatchConfig, FailureMode, LogConfig};

/// Errors of the audit layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The policy file could not be read (operator: the path; or the environment).
    #[error("cannot read audit policy {path}: {source}")]
    PolicyRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The policy is not a valid `audit.k8s.io/v1` Policy; each message names its field
    /// (operator).
    #[error("audit policy is invalid: {}", .0.join("; "))]
    PolicyInvalid(Vec<String>),
    /// A log file or its directory could not be created, opened, read or renamed
    /// (environment: permissions, missing directory, disk).
    #[error("audit log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An existing log file cannot be continued: it is not a keyward audit log or its last
    /// lines are unreadable (operator: move the file away to start a new log).
    #[error("audit log {path} cannot be continued: {message}")]
    Recover {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An event could not be written and made durable (environment: disk full, I/O error). The
    /// request it describes must not proceed.
    #[error("audit log {path}: write failed: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The checkpoint signer failed (the signer's environment, e.g. an HSM).
    #[error("audit checkpoint signing failed: {0}")]
    Sign(String),
    /// The log was closed, or its writer stopped after an internal failure (caller: an event
    /// written after `close`).
    #[error("the audit log is closed")]
    Closed,
    /// A public-key file is not an Ed25519 public key (operator).
    #[error("{path}: not an Ed25519 public key (expected a PEM PUBLIC KEY, or 32 bytes raw, base64 or hex)")]
    PublicKey {
        /// The file.
        path: PathBuf,
    },
}
