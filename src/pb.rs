//! Generated protobuf and gRPC code, one module per proto package. The rest of keyward converts
//! to its own types at the edge.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// KMS v2 (`package v2`), the API kube-apiserver uses.
pub mod kms_v2 {
    tonic::include_proto!("v2");
}

/// KMS v1 (`package v1beta1`), deprecated upstream.
pub mod kms_v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// keyward's own APIs (`package keyward.v1`).
pub mod keyward_v1 {
    tonic::include_proto!("keyward.v1");
}

/// etcd's v3 API subset (`package etcdserverpb`): KV, Watch and Maintenance.Status.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's stored key-value and event types (`package mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
