//! Statuses for requests tonic refuses before a service sees them, in the API's terms: a message
//! that is not valid protobuf is the caller's mistake (`InvalidArgument`, [`Reason::BadRequest`];
//! tonic says `Internal`), and one over the size a call may carry is too large
//! (`ResourceExhausted`, [`Reason::RequestEntityTooLarge`], as kube-apiserver's 413; tonic says
//! `OutOfRange`, which this API keeps for a revision older than its history). Both are
//! trailers-only responses whose status tonic also leaves in the response's extensions.

use tonic::{Code, Status};

use crate::reason::{bad_request, Reason};

/// tonic's message for a request that is not valid protobuf.
const UNDECODABLE: &str = "failed to decode Protobuf message";
/// tonic's message for a request over the decoding limit, before the sizes.
const TOO_LARGE: &str = "Error, decoded message length too large: found ";

/// Gives `resp` the status above when it is one of tonic's refusals; anything else as is.
pub(super) fn restate<B>(resp: http::Response<B>) -> http::Response<B> {
    restate_with(resp, |status| match status.code() {
        Code::Internal if status.message().starts_with(UNDECODABLE) => {
            // prost names a field that is a Rust keyword with its raw prefix (`r#type`); the
            // proto calls it `type`.
            Some(bad_request(status.message().replace(".r#", ".")))
        }
        Code::OutOfRange => too_large(status.message()).map(|(found, limit)| {
            Reason::RequestEntityTooLarge.status(
                Code::ResourceExhausted,
                format!(
                    "Request entity too large: limit is {limit} bytes, the request has {found}"
                ),
            )
        }),
        _ => None,
    })
}

/// [`restate`] for a service that speaks as grpc-go does (the KMS plugin, whose client is
/// kube-apiserver's grpc-go): a request over the size limit is `ResourceExhausted` with
/// grpc-go's words; anything else as is.
pub(crate) fn restate_as_grpc_go<B>(resp: http::Response<B>) -> http::Response<B> {
    restate_with(resp, |status| match status.code() {
        Code::OutOfRange => too_large(status.message()).map(|(found, limit)| {
            Status::resource_exhausted(format!(
                "grpc: received message larger than max ({found} vs. {limit})"
            ))
        }),
        _ => None,
    })
}

/// Replaces the status of a trailers-only `resp` (headers and extensions) with what `with`
/// makes of it, if it makes anything.
fn restate_with<B>(
    mut resp: http::Response<B>,
    with: impl FnOnce(&Status) -> Option<Status>,
) -> http::Response<B> {
    let Some(restated) = resp.extensions().get::<Status>().and_then(with) else {
        return resp;
    };
    if restated.add_header(resp.headers_mut()).is_ok() {
        resp.extensions_mut().insert(restated);
    }
    resp
}

/// The sizes of tonic's "decoded message length too large: found N bytes, the limit is: M
/// bytes".
fn too_large(message: &str) -> Option<(u64, u64)> {
    let rest = message.strip_prefix(TOO_LARGE)?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some((found.parse().ok()?, limit.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restated(status: Status) -> Status {
        let resp = restate(status.into_http::<()>());
        let from_headers = Status::from_header_map(resp.headers()).unwrap();
        let kept = resp.extensions().get::<Status>().unwrap();
        assert_eq!(
            (kept.code(), kept.message()),
            (from_headers.code(), from_headers.message())
        );
        from_headers
    }

    #[test]
    fn tonics_refusals_are_restated_and_other_statuses_kept() {
        let s = restated(Status::internal(
            "failed to decode Protobuf message: GetRequest.namespace: invalid varint",
        ));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(Reason::of(&s), Some(Reason::BadRequest));
        assert_eq!(
            s.message(),
            "failed to decode Protobuf message: GetRequest.namespace: invalid varint"
        );
        let s = restated(Status::internal(
            "failed to decode Protobuf message: Secret.r#type: invalid string value: data is not UTF-8 encoded",
        ));
        assert_eq!(
            s.message(),
            "failed to decode Protobuf message: Secret.type: invalid string value: data is not UTF-8 encoded"
        );

        let s = restated(Status::out_of_range(
            "Error, decoded message length too large: found 6000048 bytes, the limit is: 4194304 bytes",
        ));
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(Reason::of(&s), Some(Reason::RequestEntityTooLarge));
        assert_eq!(
            s.message(),
            "Request entity too large: limit is 4194304 bytes, the request has 6000048"
        );

        for kept in [
            Reason::Expired.status(Code::OutOfRange, "too old resource version: 3 (9)"),
            Status::internal("internal error"),
            bad_request("limit: must be at least 0"),
        ] {
            let s = restated(kept.clone());
            assert_eq!((s.code(), s.message()), (kept.code(), kept.message()));
            assert_eq!(Reason::of(&s), Reason::of(&kept));
        }
    }
}
