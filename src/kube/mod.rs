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

pub mod apply;
pub mod error;
pub mod objects;
pub mod patch;
pub mod proto;

pub use error::KubeError;
