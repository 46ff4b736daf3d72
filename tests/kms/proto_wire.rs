//! Pins the KMS wire contract: fully qualified service and method paths, field numbers and types,
//! against hand-built protobuf bytes (facts file §1). A renamed package, a renumbered field or a
//! changed type fails here.

use keyward::crypto::Algorithm;
use keyward::pb::kms_v1beta1 as v1;
use keyward::pb::kms_v2 as v2;
use prost::Message;
use tonic::server::NamedService;

/// A length-delimited field: tag byte, length, bytes.
fn ld(field: u8, bytes: &[u8]) -> Vec<u8> {
    assert!(bytes.len() < 128);
    let mut v = vec![(field << 3) | 2, bytes.len() as u8];
    v.extend_from_slice(bytes);
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// One proto3 map<string, bytes> entry: key = 1, value = 2.
fn map_entry(field: u8, k: &str, v: &[u8]) -> Vec<u8> {
    ld(field, &cat(&[ld(1, k.as_bytes()), ld(2, v)]))
}

#[test]
fn service_names_are_upstream() {
    use keyward::pb::keyward_v1::kms_admin_server::KmsAdminServer;
    use v1::key_management_service_server::KeyManagementServiceServer as V1Server;
    use v2::key_management_service_server::KeyManagementServiceServer as V2Server;
    assert_eq!(
        <V2Server<keyward::kms::KmsV2> as NamedService>::NAME,
        "v2.KeyManagementService"
    );
    assert_eq!(
        <V1Server<keyward::kms::KmsV1> as NamedService>::NAME,
        "v1beta1.KeyManagementService"
    );
    assert_eq!(
        <KmsAdminServer<keyward::kms::KmsAdmin> as NamedService>::NAME,
        "keyward.v1.KmsAdmin"
    );
}

#[test]
fn v2_messages_field_numbers() {
    let status = v2::StatusResponse {
        version: "v2".into(),
        healthz: "ok".into(),
        key_id: "k".into(),
    };
    let want = cat(&[ld(1, b"v2"), ld(2, b"ok"), ld(3, b"k")]);
    assert_eq!(status.encode_to_vec(), want);
    assert_eq!(v2::StatusResponse::decode(&want[..]).unwrap(), status);
    assert!(v2::StatusRequest {}.encode_to_vec().is_empty());

    let dec = v2::DecryptRequest {
        ciphertext: b"ct".to_vec(),
        uid: "u".into(),
        key_id: "k".into(),
        annotations: std::collections::BTreeMap::from([("a.io".to_owned(), b"1".to_vec())]),
    };
    let want = cat(&[
        ld(1, b"ct"),
        ld(2, b"u"),
        ld(3, b"k"),
        map_entry(4, "a.io", b"1"),
    ]);
    assert_eq!(dec.encode_to_vec(), want);
    assert_eq!(v2::DecryptRequest::decode(&want[..]).unwrap(), dec);

    let want = ld(1, b"pt");
    assert_eq!(
        v2::DecryptResponse::decode(&want[..]).unwrap().plaintext,
        b"pt"
    );

    let enc = v2::EncryptRequest {
        plaintext: b"pt".to_vec(),
        uid: "u".into(),
    };
    let want = cat(&[ld(1, b"pt"), ld(2, b"u")]);
    assert_eq!(enc.encode_to_vec(), want);

    let resp = v2::EncryptResponse {
        ciphertext: b"ct".to_vec(),
        key_id: "k".into(),
        annotations: std::collections::BTreeMap::from([("a.io".to_owned(), b"1".to_vec())]),
    };
    let want = cat(&[ld(1, b"ct"), ld(2, b"k"), map_entry(3, "a.io", b"1")]);
    assert_eq!(resp.encode_to_vec(), want);
    assert_eq!(v2::EncryptResponse::decode(&want[..]).unwrap(), resp);
}

#[test]
fn v1beta1_messages_field_numbers() {
    let vr = v1::VersionRequest {
        version: "v1beta1".into(),
    };
    assert_eq!(vr.encode_to_vec(), ld(1, b"v1beta1"));
    let resp = v1::VersionResponse {
        version: "v1beta1".into(),
        runtime_name: "n".into(),
        runtime_version: "0.1.0".into(),
    };
    let want = cat(&[ld(1, b"v1beta1"), ld(2, b"n"), ld(3, b"0.1.0")]);
    assert_eq!(resp.encode_to_vec(), want);

    let d = v1::DecryptRequest {
        version: "v1beta1".into(),
        cipher: b"c".to_vec(),
    };
    let want = cat(&[ld(1, b"v1beta1"), ld(2, b"c")]);
    assert_eq!(d.encode_to_vec(), want);
    assert_eq!(
        v1::DecryptResponse::decode(&ld(1, b"p")[..]).unwrap().plain,
        b"p"
    );

    let e = v1::EncryptRequest {
        version: "v1beta1".into(),
        plain: b"p".to_vec(),
    };
    assert_eq!(e.encode_to_vec(), cat(&[ld(1, b"v1beta1"), ld(2, b"p")]));
    assert_eq!(
        v1::EncryptResponse::decode(&ld(1, b"c")[..])
            .unwrap()
            .cipher,
        b"c"
    );
}

/// Calls `path` with hand-encoded request bytes through a raw gRPC client and returns the raw
/// response bytes, so neither side's generated code decides the route or the encoding.
async fn raw_call(
    channel: tonic::transport::Channel,
    path: &'static str,
    request: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(RawBytes(request)),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner().0)
}

#[derive(Clone, Debug)]
struct RawBytes(Vec<u8>);

#[derive(Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = RawBytes;
    type Decode = RawBytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = RawBytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: RawBytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = RawBytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<RawBytes>, tonic::Status> {
        use bytes::Buf;
        let n = src.remaining();
        Ok(Some(RawBytes(src.copy_to_bytes(n).to_vec())))
    }
}

/// Splits a protobuf message of length-delimited fields into (field number, bytes).
fn fields(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = b[0];
        assert_eq!(tag & 7, 2, "only length-delimited fields expected");
        let len = b[1] as usize;
        assert!(len < 128, "test helper handles one-byte lengths");
        out.push((tag >> 3, b[2..2 + len].to_vec()));
        b = &b[2 + len..];
    }
    out
}

#[tokio::test]
async fn method_paths_and_bytes_over_the_socket() {
    let plugin = crate::support::Plugin::start(Algorithm::Aes256Gcm).await;
    let ch = keyward::uds::unix_channel(&plugin.socket).await.unwrap();

    let status = raw_call(ch.clone(), "/v2.KeyManagementService/Status", vec![])
        .await
        .unwrap();
    let f = fields(&status);
    assert_eq!(f[0], (1, b"v2".to_vec()));
    assert_eq!(f[1], (2, b"ok".to_vec()));
    assert_eq!(f[2].0, 3);
    let key_id = f[2].1.clone();

    let seed = [7u8; 32];
    let enc = raw_call(
        ch.clone(),
        "/v2.KeyManagementService/Encrypt",
        cat(&[ld(1, &seed), ld(2, b"uid-1")]),
    )
    .await
    .unwrap();
    let f = fields(&enc);
    assert_eq!(f[0].0, 1, "ciphertext is field 1");
    assert_eq!(
        f[1],
        (2, key_id.clone()),
        "key_id is field 2 and equals Status"
    );
    let ct = f[0].1.clone();

    let dec = raw_call(
        ch.clone(),
        "/v2.KeyManagementService/Decrypt",
        cat(&[ld(1, &ct), ld(2, b"uid-2"), ld(3, &key_id)]),
    )
    .await
    .unwrap();
    assert_eq!(fields(&dec), vec![(1, seed.to_vec())]);

    let ver = raw_call(
        ch.clone(),
        "/v1beta1.KeyManagementService/Version",
        ld(1, b"v1beta1"),
    )
    .await
    .unwrap();
    let f = fields(&ver);
    assert_eq!(f[0], (1, b"v1beta1".to_vec()));
    assert_eq!(f[1], (2, b"keyward".to_vec()));
    assert_eq!(f[2].0, 3);

    let enc = raw_call(
        ch.clone(),
        "/v1beta1.KeyManagementService/Encrypt",
        cat(&[ld(1, b"v1beta1"), ld(2, &seed)]),
    )
    .await
    .unwrap();
    let cipher = fields(&enc)[0].1.clone();
    let dec = raw_call(
        ch.clone(),
        "/v1beta1.KeyManagementService/Decrypt",
        cat(&[ld(1, b"v1beta1"), ld(2, &cipher)]),
    )
    .await
    .unwrap();
    assert_eq!(fields(&dec), vec![(1, seed.to_vec())]);

    // The admin API is not reachable on the apiserver's socket, and KMS is not on the admin one.
    let e = raw_call(ch.clone(), "/keyward.v1.KmsAdmin/Rotate", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    let admin = keyward::uds::unix_channel(&plugin.admin).await.unwrap();
    let e = raw_call(admin, "/v2.KeyManagementService/Status", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    plugin.stop().await;
}
