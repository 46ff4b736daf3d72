//! The RPC layer: a tower layer on a tonic server that measures every call at the HTTP/2 edge,
//! before routing: its duration (from the request to the end of its response body, or until the
//! client went away), its gRPC code (from a trailers-only response's headers, else from the
//! trailers), and the calls in flight.
//!
//! The method label is the full gRPC method (`/v2.KeyManagementService/Decrypt`, as
//! kube-apiserver labels its KMS calls) for the methods keyward serves, and `other` for any
//! other path, so a client cannot create series. Each (method, code) pair's histogram and
//! counter are looked up once and cached, so a call costs a string match, two clock reads, one
//! histogram observation and a few atomic adds.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The methods the KMS plugin's servers answer: KMS v2, KMS v1, gRPC health, keyward's admin API.
pub const KMS_METHODS: &[&str] = &[
    "/v2.KeyManagementService/Status",
    "/v2.KeyManagementService/Decrypt",
    "/v2.KeyManagementService/Encrypt",
    "/v1beta1.KeyManagementService/Version",
    "/v1beta1.KeyManagementService/Decrypt",
    "/v1beta1.KeyManagementService/Encrypt",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/keyward.v1.KmsAdmin/Status",
    "/keyward.v1.KmsAdmin/ListKeys",
    "/keyward.v1.KmsAdmin/Rotate",
    "/keyward.v1.KmsAdmin/Retire",
    "/keyward.v1.KmsAdmin/Destroy",
    "/keyward.v1.KmsAdmin/Unseal",
    "/keyward.v1.KmsAdmin/RekeyRoot",
];

/// The methods the store's API answers: `keyward.v1.Secrets`, `keyward.v1.Encryption` and
/// `keyward.v1.Auth`.
pub const STORE_METHODS: &[&str] = &[
    "/keyward.v1.Secrets/Create",
    "/keyward.v1.Secrets/Get",
    "/keyward.v1.Secrets/Update",
    "/keyward.v1.Secrets/Delete",
    "/keyward.v1.Secrets/List",
    "/keyward.v1.Secrets/Watch",
    "/keyward.v1.Secrets/History",
    "/keyward.v1.Secrets/Rollback",
    "/keyward.v1.Secrets/RawGet",
    "/keyward.v1.Secrets/RawList",
    "/keyward.v1.Encryption/Status",
    "/keyward.v1.Encryption/Migrate",
    "/keyward.v1.Auth/AccessReview",
    "/keyward.v1.Auth/RulesReview",
    "/keyward.v1.Auth/WhoAmI",
    "/keyward.v1.Auth/CreateToken",
];

/// The method label of every path not in the list.
const OTHER: &str = "other";

/// gRPC code names by number, as Go's `codes.Code.String()` spells them (kube-apiserver's
/// `grpc_status_code` label).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const OK: u8 = 0;
const CANCELED: u8 = 1;
const UNKNOWN: u8 = 2;

/// Bounds of the duration histograms: 10 µs, doubling, to about 5.2 s (20 buckets). A plugin
/// call takes tens of microseconds; a durable store write a few milliseconds.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
}

type MethodCode = [(&'static str, &'static str); 2];
type MethodOnly = [(&'static str, &'static str); 1];

/// The RPC metrics of one product (`keyward_<prefix>_*`).
pub(super) struct RpcMetrics {
    prefix: &'static str,
    what: &'static str,
    /// The known methods, then [`OTHER`].
    methods: Box<[Method]>,
    duration: Family<MethodCode, Histogram, fn() -> Histogram>,
    errors: Family<MethodCode, Counter>,
    in_flight: Family<MethodOnly, Gauge>,
}

/// One method's series, created on first use and then held.
struct Method {
    path: &'static str,
    in_flight: Gauge,
    duration: [OnceLock<Histogram>; 17],
    errors: [OnceLock<Counter>; 17],
}

impl std::fmt::Debug for RpcMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RpcMetrics(keyward_{}_*)", self.prefix)
    }
}

impl RpcMetrics {
    /// Metrics `keyward_<prefix>_*` for the `methods` of a server (`what` names it in help).
    pub(super) fn new(prefix: &'static str, what: &'static str, methods: &[&'static str]) -> Self {
        let in_flight = Family::<MethodOnly, Gauge>::default();
        let methods = methods
            .iter()
            .copied()
            .chain([OTHER])
            .map(|path| Method {
                path,
                in_flight: in_flight.get_or_create_owned(&[("method", path)]),
                duration: std::array::from_fn(|_| OnceLock::new()),
                errors: std::array::from_fn(|_| OnceLock::new()),
            })
            .collect();
        RpcMetrics {
            prefix,
            what,
            methods,
            duration: Family::new_with_constructor(duration_buckets),
            errors: Family::default(),
            in_flight,
        }
    }

    pub(super) fn register(&self, r: &mut Registry) {
        let (p, what) = (self.prefix, self.what);
        r.register(
            format!("keyward_{p}_request_duration_seconds"),
            format!(
                "Time the {what} took to answer a gRPC call, from its request to the end of its \
                 response, by method and gRPC code; _count is the number of calls"
            ),
            self.duration.clone(),
        );
        r.register(
            format!("keyward_{p}_request_errors"),
            format!("gRPC calls to the {what} that ended with a code other than OK"),
            self.errors.clone(),
        );
        r.register(
            format!("keyward_{p}_requests_in_flight"),
            format!("gRPC calls the {what} is handling now, by method"),
            self.in_flight.clone(),
        );
    }

    fn start(self: &Arc<Self>, path: &str) -> Call {
        let method = self
            .methods
            .iter()
            .position(|m| m.path == path)
            .unwrap_or(self.methods.len() - 1);
        self.methods[method].in_flight.inc();
        Call {
            metrics: self.clone(),
            method,
            code: None,
            started: Instant::now(),
        }
    }

    fn finish(&self, method: usize, code: u8, seconds: f64) {
        let m = &self.methods[method];
        m.in_flight.dec();
        let code = usize::from(code);
        let labels = || [("method", m.path), ("code", CODE_NAMES[code])];
        m.duration[code]
            .get_or_init(|| self.duration.get_or_create_owned(&labels()))
            .observe(seconds);
        if code != usize::from(OK) {
            m.errors[code]
                .get_or_init(|| self.errors.get_or_create_owned(&labels()))
                .inc();
        }
    }
}

/// One call being measured; recorded when dropped (after the response ended, or when the
/// client went away: `Canceled` unless a code was seen).
struct Call {
    metrics: Arc<RpcMetrics>,
    method: usize,
    code: Option<u8>,
    started: Instant,
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(CANCELED);
        self.metrics
            .finish(self.method, code, self.started.elapsed().as_secs_f64());
    }
}

/// The gRPC code in `grpc-status`, if there is one (a value out of range is `Unknown`).
fn grpc_status(headers: &http::HeaderMap) -> Option<u8> {
    let value = headers.get("grpc-status")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<u8>().ok())
            .filter(|c| usize::from(*c) < CODE_NAMES.len())
            .unwrap_or(UNKNOWN),
    )
}

/// A tower layer measuring every call of the server it wraps (see the module docs); a
/// [`disabled`](Self::disabled) one passes calls through untouched.
#[derive(Debug, Clone, Default)]
pub struct RpcLayer {
    metrics: Option<Arc<RpcMetrics>>,
}

impl RpcLayer {
    /// A layer that measures nothing (metrics are off).
    pub fn disabled() -> Self {
        Self::default()
    }

    pub(super) fn new(metrics: Arc<RpcMetrics>) -> Self {
        Self {
            metrics: Some(metrics),
        }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// A service wrapped by [`RpcLayer`].
#[derive(Debug, Clone)]
pub struct RpcService<S> {
    inner: S,
    metrics: Option<Arc<RpcMetrics>>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<RpcBody<ResBody>>;
    type Error = S::Error;
    type Future = RpcFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let call = self.metrics.as_ref().map(|m| m.start(req.uri().path()));
        RpcFuture {
            inner: self.inner.call(req),
            call,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of an [`RpcService`]: hands the call's measurement to the body.
    pub struct RpcFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, B, E> Future for RpcFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<RpcBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match res {
            Ok(resp) => {
                if let Some(c) = call.as_mut() {
                    // A trailers-only response (an error status) carries its code here.
                    c.code = grpc_status(resp.headers());
                }
                Ok(resp.map(|inner| RpcBody { inner, call }))
            }
            Err(e) => {
                if let Some(c) = call.as_mut() {
                    c.code = Some(UNKNOWN);
                }
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// The response body of an [`RpcService`]: records the call when it ends or is dropped.
    pub struct RpcBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for RpcBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(call), Some(trailers)) = (this.call.as_mut(), f.trailers_ref()) {
                    call.code = Some(grpc_status(trailers).unwrap_or(UNKNOWN));
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.as_mut() {
                    call.code = Some(UNKNOWN);
                }
            }
            None => {
                if let Some(mut call) = this.call.take() {
                    // A gRPC response always ends with a status; a body without one failed.
                    call.code.get_or_insert(UNKNOWN);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use tower::{Layer as _, ServiceExt as _};

    /// `/package.Service/Method` for every rpc in a proto file.
    fn methods_of(proto: &str) -> Vec<String> {
        let package = proto
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .expect("a package")
            .trim_end_matches(';');
        let mut service = "";
        let mut out = Vec::new();
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.trim_end_matches(" {").trim();
            } else if let Some(rest) = line.strip_prefix("rpc ") {
                let name = rest.split('(').next().expect("rpc name").trim();
                out.push(format!("/{package}.{service}/{name}"));
            }
        }
        out
    }

    #[test]
    fn method_lists_name_every_rpc_served() {
        let mut kms: Vec<String> = [
            include_str!("../../proto/kms/v2/api.proto"),
            include_str!("../../proto/kms/v1beta1/api.proto"),
            include_str!("../../proto/keyward/v1/kms_admin.proto"),
        ]
        .iter()
        .flat_map(|p| methods_of(p))
        .collect();
        kms.extend(
            [
                "/grpc.health.v1.Health/Check",
                "/grpc.health.v1.Health/Watch",
            ]
            .map(String::from),
        );
        let mut listed: Vec<String> = KMS_METHODS.iter().map(|s| s.to_string()).collect();
        kms.sort();
        listed.sort();
        assert_eq!(kms, listed);

        let mut store: Vec<String> = [
            include_str!("../../proto/keyward/v1/secrets.proto"),
            include_str!("../../proto/keyward/v1/encryption.proto"),
            include_str!("../../proto/keyward/v1/auth.proto"),
        ]
        .iter()
        .flat_map(|p| methods_of(p))
        .collect();
        let mut listed: Vec<String> = STORE_METHODS.iter().map(|s| s.to_string()).collect();
        store.sort();
        listed.sort();
        assert_eq!(store, listed);
    }

    fn response(status: Option<&str>) -> http::Response<http_body_util::Full<Bytes>> {
        let mut r = http::Response::new(http_body_util::Full::new(Bytes::new()));
        if let Some(s) = status {
            r.headers_mut().insert("grpc-status", s.parse().unwrap());
        }
        r
    }

    async fn call(layer: &RpcLayer, path: &str, status: Option<&'static str>, read: bool) {
        let svc = layer.layer(tower::service_fn(
            move |_req: http::Request<()>| async move {
                Ok::<_, std::convert::Infallible>(response(status))
            },
        ));
        let req = http::Request::builder().uri(path).body(()).unwrap();
        let resp = svc.oneshot(req).await.unwrap();
        if read {
            let _ = resp.into_body().collect().await;
        }
    }

    #[tokio::test]
    async fn codes_come_from_headers_or_the_end_and_unknown_paths_are_other() {
        let m = super::super::Metrics::new();
        let layer = m.kms_layer();
        call(&layer, "/v2.KeyManagementService/Decrypt", Some("3"), true).await;
        call(&layer, "/v2.KeyManagementService/Decrypt", Some("99"), true).await;
        // Dropped before its end, without a status: the client went away.
        call(&layer, "/v2.KeyManagementService/Status", None, false).await;
        call(
            &layer,
            "/v2.KeyManagementService/kw-1-secret",
            Some("12"),
            true,
        )
        .await;
        let text = m.render(false).await;
        for want in [
            "keyward_kms_request_duration_seconds_count{method=\"/v2.KeyManagementService/Decrypt\",code=\"InvalidArgument\"} 1\n",
            "keyward_kms_request_duration_seconds_count{method=\"/v2.KeyManagementService/Decrypt\",code=\"Unknown\"} 1\n",
            "keyward_kms_request_duration_seconds_count{method=\"/v2.KeyManagementService/Status\",code=\"Canceled\"} 1\n",
            "keyward_kms_request_errors_total{method=\"other\",code=\"Unimplemented\"} 1\n",
            "keyward_kms_requests_in_flight{method=\"/v2.KeyManagementService/Decrypt\"} 0\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("kw-1-secret"), "{text}");
        // Disabled: nothing measured, calls pass.
        call(
            &RpcLayer::disabled(),
            "/v2.KeyManagementService/Decrypt",
            None,
            true,
        )
        .await;
    }
}
