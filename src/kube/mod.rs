//! The Kubernetes REST API for core/v1 Secrets, so that unmodified kubectl (1.27–1.33), client-go
//! programs and the official Python client work against keyward's store.
//!
//! Everything here sits on [`crate::access`]: a request is authenticated, authorized and
//! audited exactly as a `keyward.v1` gRPC call, and reaches the same store, so an object written
//! through one API is the same object (uid, resourceVersion, watch) through the other.
//!
//! - [`error`]: the one error type of this layer and its `metav1.Status` form.
//! - [`objects`]: Secret JSON as kube-apiserver reads and writes it (strict field validation).
//! - [`proto`]: protobuf request bodies (the `k8s\0` envelope kubectl 1.32+ sends).
//! - [`patch`]: strategic merge, JSON merge (RFC 7386) and JSON (RFC 6902) patches.
//! - [`apply`]: server-side apply and `managedFields`.
//! - [`server`]: the HTTPS listener ([`KubeListener`], [`serve`]), limits, authentication and
//!   routing ([`KubeApi`]).
//! - [`info`]: what a request asks for (verb, resource, name, or a non-resource path), read
//!   from its URL as kube-apiserver reads it to authorize and audit every request.
//! - [`request`]: one request's parameters, options and body; what a handler answers.
//! - [`secrets`]: the `secrets` resource's handlers; [`watch`]: watch framing.
//! - [`discovery`], [`openapi`]: what kubectl reads before anything else; [`health`]:
//!   `/healthz`, `/livez`, `/readyz` with kube-apiserver's checks output.
//! - [`reviews`]: `auth can-i` and `auth whoami`; [`token`]: `kubectl create token`.
//! - [`status`]: `metav1.Status`, the one mapping from errors; [`table`]: `meta.k8s.io` Tables.
//! - [`kubeconfig`]: the development CA, certificates and kubeconfig files.

pub mod absent;
pub mod apply;
pub mod client_certs;
pub mod discovery;
pub mod error;
pub mod health;
pub mod info;
pub mod kubeconfig;
pub mod namespaces;
pub mod objects;
pub mod oidc;
pub mod openapi;
pub mod patch;
pub mod proto;
pub mod request;
pub mod reviews;
pub mod secrets;
pub mod server;
pub mod status;
pub mod table;
pub mod token;
pub mod watch;
pub use crate::manifest::yaml_keys;

pub use error::KubeError;
pub use server::{serve, KubeApi, KubeLimits, KubeListener, KubeOptions, KubeServeError};
pub use status::Status;
