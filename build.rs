//! Compiles the protos in `proto/` with protox (a pure-Rust protobuf compiler), so that a plain
//! `cargo build` needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/kms/v2/api.proto",
        "proto/kms/v1beta1/api.proto",
        "proto/keyward/v1/kms_admin.proto",
        "proto/keyward/v1/secrets.proto",
        "proto/keyward/v1/encryption.proto",
        "proto/keyward/v1/auth.proto",
        "proto/k8s/apiserver/kmsv2/api.proto",
        "proto/etcd/rpc.proto",
        "proto/etcd/kv.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Ordered maps: deterministic encoding of annotations, so stored bytes are reproducible.
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
