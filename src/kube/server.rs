//! The HTTPS listener of the Kubernetes API: TLS (rustls; a client certificate is requested and
//! verified against the client CA when one is configured, optional as in kube-apiserver) and
//! HTTP/1.1 (hyper) on connections accepted within [`ConnLimits`]; then, per request: limits
//! (body size, requests in flight per client, watches open), authentication and impersonation
//! through [`crate::access`], and routing to discovery, OpenAPI, the reviews and Secrets.
//!
//! Health (`/healthz`, `/livez`, `/readyz`) and `/version` answer without credentials: such a
//! request is kube-apiserver's anonymous user (`system:anonymous` in `system:unauthenticated`),
//! authorized by the bootstrap policy's `system:public-info-viewer` and audited like any
//! request, and not held back by the in-flight limit; a request that presents credentials is
//! authenticated, authorized and audited on them as on any path (a bad token is a 401). Every
//! other path needs a client certificate or a bearer token (401 otherwise).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use rustls::server::danger::ClientCertVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::absent::{self, Absent};
use super::client_certs::{ClientCerts, DeferredVerifier};
use super::info::RequestInfo;
use super::request::{
    json_to_yaml, negotiate, parse_query, warning_header, KubeRequest, Output, Reply,
};
use super::reviews::Review;
use super::status::Status;
use super::{discovery, health, namespaces, openapi, secrets, token, watch, KubeError};
use crate::access::{Access, AccessError, Authenticators, Credentials, RequestContext, Source};
use crate::authn::{parse_bearer, BearerHeader, Identity};
use crate::authz::ImpersonationRequest;
use crate::metrics::Metrics;
use crate::net::{self, ConnLimits};
use crate::store::{Scope, StoreError};

/// The header of a request's audit id, read from the client and echoed in every answer.
const AUDIT_ID: http::header::HeaderName = http::header::HeaderName::from_static("audit-id");

/// Limits of the Kubernetes API beyond the connection caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KubeLimits {
    /// Largest request body (kube-apiserver's 3 MiB); larger is 413.
    pub max_body: usize,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// Requests (other than watches) one client address may have in flight; more is 429.
    pub max_in_flight_per_client: usize,
    /// Watches open at once on the listener; more is 429.
    pub max_watches: usize,
    /// How long a client may take to send a request's body once its headers arrived.
    pub body_timeout: Duration,
    /// How often a watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
}

impl Default for KubeLimits {
    /// 3 MiB bodies, 10 s for headers and 60 s for a body, 32 requests in flight per client,
    /// 512 watches, a bookmark every minute (kube-apiserver's rhythm).
    fn default() -> Self {
        Self {
            max_body: 3 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            max_in_flight_per_client: 32,
            max_watches: 512,
            body_timeout: Duration::from_secs(60),
            bookmark_interval: Duration::from_secs(60),
        }
    }
}

/// The listener's settings: address, TLS and limits.
#[derive(Clone)]
#[non_exhaustive]
pub struct KubeOptions {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// PEM certificate chain presented to clients.
    pub cert: Vec<u8>,
    /// PEM private key of `cert`.
    pub key: Zeroizing<Vec<u8>>,
    /// PEM CA whose client certificates authenticate (CN user, O groups).
    pub client_ca: Option<Vec<u8>>,
    /// Connection caps and the TLS handshake timeout.
    pub conn: ConnLimits,
    /// Request limits.
    pub limits: KubeLimits,
}

impl KubeOptions {
    /// HTTPS on `listen` with this certificate and key, default limits, no client CA.
    pub fn new(listen: SocketAddr, cert: Vec<u8>, key: Zeroizing<Vec<u8>>) -> Self {
        Self {
            listen,
            cert,
            key,
            client_ca: None,
            conn: ConnLimits::default(),
            limits: KubeLimits::default(),
        }
    }
}

impl std::fmt::Debug for KubeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeOptions")
            .field("listen", &self.listen)
            .field("key", &format_args!("<redacted>"))
            .field("client_ca", &self.client_ca.is_some())
            .field("conn", &self.conn)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Errors of starting the listener.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeServeError {
    /// The certificate, key or client CA cannot be used (operator's files).
    #[error("Kubernetes API TLS configuration: {0}")]
    Tls(String),
    /// The address cannot be bound (operator's setup).
    #[error("cannot listen on {addr} for the Kubernetes API: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A bound listener with its TLS settings, ready to [`serve`].
pub struct KubeListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    /// Checks client certificates against the client CA, after the handshake.
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    conn: ConnLimits,
    limits: KubeLimits,
    addr: SocketAddr,
}

impl std::fmt::Debug for KubeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeListener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl KubeListener {
    /// Checks the TLS settings and binds `options.listen`.
    pub async fn bind(options: KubeOptions) -> Result<KubeListener, KubeServeError> {
        let (acceptor, client_verifier) = tls_acceptor(&options)?;
        let listen_error = |source| KubeServeError::Listen {
            addr: options.listen,
            source,
        };
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        Ok(KubeListener {
            listener,
            acceptor,
            client_verifier,
            conn: options.conn,
            limits: options.limits,
            addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The acceptor, and the client CA's verifier when there is one: TLS asks for a client
/// certificate and takes any, which each request then checks (`client_certs`).
fn tls_acceptor(
    o: &KubeOptions,
) -> Result<(TlsAcceptor, Option<Arc<dyn ClientCertVerifier>>), KubeServeError> {
    let tls = |what: &str, e: &dyn std::fmt::Display| KubeServeError::Tls(format!("{what}: {e}"));
    let (certs, key) = crate::net::tls_identity(&o.cert, &o.key).map_err(KubeServeError::Tls)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("protocol versions", &e))?;
    let (builder, client_verifier) = match &o.client_ca {
        Some(ca) => {
            let roots = crate::net::tls_roots(ca).map_err(KubeServeError::Tls)?;
            // Optional, as kube-apiserver requests it: bearer tokens authenticate too.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls("client CA", &e))?;
            let deferred = Arc::new(DeferredVerifier(verifier.clone()));
            (builder.with_client_cert_verifier(deferred), Some(verifier))
        }
        None => (builder.with_no_client_auth(), None),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| tls("certificate and key", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), client_verifier))
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn full(b: Bytes) -> Body {
    Full::new(b).boxed_unsync()
}

/// The Kubernetes API over the guarded store.
#[derive(Debug)]
pub struct KubeApi {
    access: Arc<Access>,
    authn: Arc<Authenticators>,
    limits: KubeLimits,
    address: String,
    watches: Arc<AtomicUsize>,
    in_flight: Mutex<HashMap<IpAddr, usize>>,
    metrics: Option<Metrics>,
    /// The health endpoints' store check, asked at most once a second.
    store_probe: health::StoreProbe,
}

/// A request's place among its client's requests in flight.
struct InFlight<'a> {
    api: &'a KubeApi,
    ip: IpAddr,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self.api.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A watch's place under the listener's cap.
struct WatchPermit(Arc<AtomicUsize>);

impl Drop for WatchPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl KubeApi {
    /// The API over `access`, authenticating with `authn`; `address` is what `/api` reports.
    pub fn new(
        access: Arc<Access>,
        authn: Arc<Authenticators>,
        limits: KubeLimits,
        address: String,
    ) -> Self {
        Self {
            access,
            authn,
            limits,
            address,
            watches: Arc::new(AtomicUsize::new(0)),
            in_flight: Mutex::new(HashMap::new()),
            store_probe: health::StoreProbe::default(),
            metrics: None,
        }
    }

    /// Counts requests in `metrics` (`keyward_kube_requests_total{verb,code}`).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn enter(&self, ip: IpAddr) -> Option<InFlight<'_>> {
        let mut m = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.limits.max_in_flight_per_client {
            return None;
        }
        *n += 1;
        Some(InFlight { api: self, ip })
    }

    fn watch_permit(&self) -> Option<WatchPermit> {
        let n = self.watches.fetch_add(1, Ordering::Relaxed);
        let permit = WatchPermit(self.watches.clone());
        (n < self.limits.max_watches).then_some(permit)
    }

    /// Answers one request from `peer`, whose TLS client presented `certs`. Every
    /// answer carries the request's audit id in `Audit-Id`, as kube-apiserver's
    /// `WithAuditInit` sets it: the client's `Audit-ID` if it sent one, else a new UUID.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        certs: &ClientCerts,
    ) -> Response<Body> {
        let audit_id = match req.headers().get(AUDIT_ID) {
            Some(v) if !v.is_empty() => v.clone(),
            _ => {
                let v = http::HeaderValue::from_str(&crate::audit::new_audit_id())
                    .unwrap_or_else(|_| http::HeaderValue::from_static(""));
                req.headers_mut().insert(AUDIT_ID, v.clone());
                v
            }
        };
        let verb = verb_of(
            req.method(),
            req.uri().path(),
            req.uri().query().unwrap_or(""),
        );
        // `Bearer  <token>`: ignored, with kube-apiserver's warning on the answer.
        let extra_space = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .is_some_and(|h| parse_bearer(&h) == BearerHeader::Empty { extra_space: true });
        let mut resp = self.answer(req, peer, certs).await;
        if let Some(m) = &self.metrics {
            m.kube_request(verb, resp.status().as_u16());
        }
        resp.headers_mut().insert(AUDIT_ID, audit_id);
        if extra_space {
            let warning = warning_header(crate::authn::BEARER_EXTRA_SPACE_WARNING);
            if let Ok(v) = http::HeaderValue::from_str(&warning) {
                resp.headers_mut().append(http::header::WARNING, v);
            }
        }
        resp
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        certs: &ClientCerts,
    ) -> Response<Body> {
        let method = req.method().clone();
        // Decoded, as Go's `URL.Path`: names and segments are read from it.
        let path = super::request::path_decode(req.uri().path());
        let uri = req
            .uri()
            .path_and_query()
            .map_or_else(|| path.clone(), |p| p.as_str().to_owned());
        let uri = super::request::redact_access_token(uri);
        // A request that no credential authenticates is kube-apiserver's anonymous user on the
        // health endpoints, their checks and `/version`, whatever its method, then authorized
        // as any request (the bootstrap policy lets it get the endpoints and `/version`);
        // elsewhere it is a 401. A bad credential is a 401 on these paths too.
        let anonymous_path = health::is_public_path(&path);
        let credentialed = || {
            certs.presented()
                || req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()))
                    .is_some_and(|h| matches!(parse_bearer(&h), BearerHeader::Token(_)))
        };
        // Probes are not held back by the in-flight limit (kube-apiserver exempts them from its
        // priority and fairness too).
        let probe = anonymous_path && !credentialed();
        let _in_flight = match probe {
            true => None,
            false => match self.enter(peer.ip()) {
                Some(permit) => Some(permit),
                None => return json_response(Reply::TooManyRequests),
            },
        };
        let (parts, body) = req.into_parts();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        // Errors are written as the client asked too (kube-apiserver negotiates them).
        let output = negotiate(&header("accept")).unwrap_or(Output::Raw);
        let pretty = pretty_print(parts.uri.query().unwrap_or(""), &header("user-agent"));
        let reply = |r: Reply| response(r, output, pretty);
        // A request whose audit event cannot be stored fails as kube-apiserver fails it
        // (`responsewriters.InternalError`), whoever refused it; so does an impersonation of
        // groups, extra or a uid without a user.
        let fail = |e: KubeError| match e {
            KubeError::Access(AccessError::AuditUnavailable(_)) => reply(Reply::internal_error(
                &parts.uri,
                "failed to store audit event",
            )),
            KubeError::Access(AccessError::ImpersonationWithoutUser(why)) => {
                reply(Reply::internal_error(&parts.uri, &why))
            }
            e => reply(e.into()),
        };
        // Read (or drained) first, so that a client still sending sees the answer; a body too
        // large or too slow is answered as kube-apiserver's handler answers it: after
        // authentication, impersonation and authorization, and recorded.
        let (body, unread) = match self.read_body(&parts.headers, body).await {
            Ok(b) => (b, None),
            Err(e) => (Bytes::new(), Some(e)),
        };
        let query = parse_query(parts.uri.query().unwrap_or(""));
        let info = RequestInfo::parse(&method, &path, &query);
        let ctx = match self
            .context(&parts.headers, peer, certs, uri, &info, anonymous_path)
            .await
        {
            Ok(ctx) => ctx,
            Err(e) => return fail(e),
        };
        let content_type = header("content-type")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let kreq = KubeRequest {
            ctx,
            info,
            query,
            content_type,
            accept: header("accept"),
            user_agent: header("user-agent"),
            body,
        };
        let query = parts.uri.query().unwrap_or("");
        // Health endpoints answer any method, as kube-apiserver's handlers do (a HEAD or POST
        // is authorized as its verb first, like any request with credentials).
        let answered = match anonymous_path {
            true => {
                health::public_info(&method, &path, query, &self.access, &self.store_probe).await
            }
            false => None,
        };
        let mut routed = match (unread, answered) {
            (Some(e), _) => Err(e),
            (None, Some(r)) => Ok(Routed::Reply(r)),
            (None, None) => self.route(&method, &path, &kreq).await,
        };
        if !kreq.ctx.is_recorded() {
            routed = self.record(&kreq, routed).await;
        }
        match routed {
            Ok(Routed::Reply(r)) => reply(r),
            Ok(Routed::Watch(w)) => {
                let stream = ReceiverStream::new(w.lines).map(|b| Ok(Frame::data(b)));
                let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
                let h = resp.headers_mut();
                if let Ok(v) = http::HeaderValue::from_str(w.content_type) {
                    h.insert(http::header::CONTENT_TYPE, v);
                }
                // A watch carries Secrets: kube-apiserver's WithCacheControl marks it too.
                h.insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("no-cache, private"),
                );
                resp
            }
            Err(KubeError::NotAcceptable) => {
                response(KubeError::NotAcceptable.into(), Output::Raw, false)
            }
            Err(e) => fail(e),
        }
    }

    /// The body, at most `max_body`; a larger one is 413, after reading (and dropping) up to
    /// twice the limit, so that a client still sending sees the answer rather than a reset.
    async fn read_body(&self, headers: &HeaderMap, mut body: Incoming) -> Result<Bytes, KubeError> {
        let max = self.limits.max_body;
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let read = async {
            let mut buf = bytes::BytesMut::new();
            let mut seen = 0usize;
            while let Some(frame) = body.frame().await {
                let frame = frame
                    .map_err(|e| KubeError::BadRequest(format!("reading the request body: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    seen += data.len();
                    if seen <= max {
                        buf.extend_from_slice(&data);
                    } else if seen > 2 * max {
                        break;
                    }
                }
            }
            Ok::<_, KubeError>((buf.freeze(), seen))
        };
        let Ok(read) = tokio::time::timeout(self.limits.body_timeout, read).await else {
            return Err(KubeError::BadRequest(
                "the request body was not received in time".into(),
            ));
        };
        let (buf, seen) = read?;
        if seen > max || declared.is_some_and(|n| n > max) {
            return Err(KubeError::TooLarge(format!(
                "Request entity too large: limit is {max}"
            )));
        }
        Ok(buf)
    }

    /// Authenticates the request (as `system:anonymous` if no credential proves an identity
    /// and `anonymous_path`: a health endpoint or `/version`) and applies `Impersonate-*`
    /// headers.
    /// A refused credential is recorded in the audit log as kube-apiserver records it: what
    /// the request asked for (`info`), no user, 401 and the methods attempted.
    async fn context(
        &self,
        headers: &HeaderMap,
        peer: SocketAddr,
        certs: &ClientCerts,
        uri: String,
        info: &RequestInfo,
        anonymous_path: bool,
    ) -> Result<RequestContext, KubeError> {
        // Header values as text as Go's net/http hands them on: bytes past ASCII are kept (an
        // `Impersonate-User` that is not ASCII impersonates that name, or is refused; it is
        // never ignored). Bytes that are not UTF-8 become U+FFFD.
        // Borrowed when the value is UTF-8 (nearly always): copied only where it is kept.
        let get = |name: &str| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
        };
        let authorization = get("authorization");
        let creds = Credentials::Tls {
            client_certs: certs.verified(),
            client_certs_refused: certs.refused(),
            authorization: authorization.as_deref(),
        };
        let audit_id = get(AUDIT_ID.as_str()).map(std::borrow::Cow::into_owned);
        let user_agent = get("user-agent").unwrap_or_default().into_owned();
        let forwarded = crate::audit::forwarded_ips(
            get("x-forwarded-for").as_deref(),
            get("x-real-ip").as_deref(),
        );
        let authenticated = match self.authn.authenticate(creds).await {
            Err(AccessError::NoCredentials) if anonymous_path => Ok(Identity::anonymous()),
            r => r,
        };
        let user = match authenticated {
            Ok(user) => user,
            Err(e) => {
                let mut audit = crate::audit::RequestInfo::new(uri, Source::Tcp(peer).peer());
                audit.audit_id = audit_id;
                audit.user_agent = user_agent;
                audit.forwarded_ips = forwarded;
                if let Some(r) = &info.resource {
                    audit.api_version.clone_from(&r.version);
                }
                let attrs = info.attributes(e.refused_identity());
                let query = audit.request_uri.split_once('?').map_or("", |(_, q)| q);
                let access_token = super::request::query_pairs(query)
                    .find(|(k, _)| k == "access_token")
                    .is_some_and(|(_, v)| !v.trim().is_empty());
                self.access
                    .record_unauthenticated(&attrs, audit, &creds.failure_message(access_token))
                    .await;
                return Err(e.into());
            }
        };
        // Failures are recorded with the Status this API answers them with.
        // A plain-text answer (`http.Error`) is recorded with its code alone, and no body.
        let mut ctx = RequestContext::new(user, Source::Tcp(peer), uri)
            .answering_errors_with(|e| match e {
                AccessError::ImpersonationWithoutUser(_) => crate::audit::ResponseStatus::bare(500),
                e => Status::of_access(e).audit(),
            })
            .recording_error_bodies(|e| match e {
                AccessError::ImpersonationWithoutUser(_) => None,
                e => Status::of_access(e).audit_object(),
            })
            .recording_deletions_as(secrets::DELETION_ANSWER)
            .failing_partial_lists();
        ctx.audit_id = audit_id;
        ctx.user_agent = user_agent;
        ctx.forwarded_ips = forwarded;
        ctx.long_running = info.verb == "watch";
        if let Some(r) = &info.resource {
            ctx.api_version.clone_from(&r.version);
        }
        let all = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect()
        };
        let mut imp = ImpersonationRequest {
            user: get("impersonate-user").unwrap_or_default().into_owned(),
            uid: get("impersonate-uid").unwrap_or_default().into_owned(),
            groups: all("impersonate-group"),
            ..ImpersonationRequest::default()
        };
        for name in headers.keys() {
            if let Some(key) = name.as_str().strip_prefix("impersonate-extra-") {
                imp.extra
                    .insert(super::request::percent_decode(key), all(name.as_str()));
            }
        }
        // A refused impersonation is recorded as the request the caller made.
        let original = info.attributes(ctx.user.clone());
        Ok(self.access.impersonate(ctx, &imp, &original).await?)
    }

    async fn route(
        &self,
        method: &Method,
        path: &str,
        req: &KubeRequest,
    ) -> Result<Routed, KubeError> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let reply = |r: Reply| Ok(Routed::Reply(r));
        // The request info read the collection GET as a watch or a list already.
        let watching = || req.info.verb == "watch";
        // Every request is authorized from its URL before anything else is read, as
        // kube-apiserver's filters authorize it, whether or not anything here serves it. A get
        // of one Secret is authorized by its handler instead (once), unless it is refused with
        // a 406 first.
        let named_get = matches!(
            segs.as_slice(),
            ["api", "v1", "namespaces", _, "secrets", _]
        ) && *method == Method::GET;
        if !named_get || acceptable(req).is_err() {
            let attrs = req.info.attributes(req.ctx.user.clone());
            self.access.refuse_if_denied(&req.ctx, &attrs).await?;
        }
        match (method, segs.as_slice()) {
            (&Method::GET, ["api"]) => reply(Reply::ok(discovery::api_versions(&self.address))),
            (&Method::GET, ["apis"]) => reply(Reply::ok(discovery::api_group_list())),
            (&Method::GET, ["api", "v1"]) => reply(Reply::ok(discovery::core_v1_resources())),
            (&Method::GET, ["apis", g]) => match discovery::api_group(g) {
                Some(doc) => reply(Reply::ok(doc)),
                None => reply(Reply::Status(Status::no_route())),
            },
            (&Method::GET, ["apis", g, v]) => match discovery::group_resources(g, v) {
                Some(doc) => reply(Reply::ok(doc)),
                None => reply(Reply::Status(Status::no_route())),
            },
            (&Method::POST, ["apis", g, v, r]) => match Review::at(g, v, r) {
                Some(review) => reply(review.answer(&self.access, req, None).await?),
                None => reply(Reply::Status(Status::no_route())),
            },
            (
                &Method::POST,
                ["apis", "authorization.k8s.io", "v1", "namespaces", ns, "localsubjectaccessreviews"],
            ) => reply(
                Review::LocalSubject
                    .answer(&self.access, req, Some(ns))
                    .await?,
            ),
            (&Method::GET, ["api", "v1", "namespaces", ns]) => {
                acceptable(req)?;
                reply(namespaces::get(ns))
            }
            (&Method::POST, ["api", "v1", "namespaces", ns, "serviceaccounts", sa, "token"]) => {
                acceptable(req)?;
                reply(token::create(&self.access, req, ns, sa).await?)
            }
            (&Method::GET, [".well-known", "openid-configuration"] | ["openid", "v1", "jwks"]) => {
                match super::oidc::answer(&self.access, path, &self.address).await? {
                    Some(r) => reply(r),
                    None => reply(Reply::Status(Status::no_route())),
                }
            }
            (&Method::GET, ["openapi", "v2"]) => reply(Reply::Raw {
                code: 200,
                content_type: openapi::V2_CONTENT_TYPE,
                body: Bytes::new(),
            }),
            (&Method::GET, ["openapi", "v3"]) => reply(Reply::ok(openapi::v3_index())),
            (&Method::GET, ["openapi", "v3", "api", "v1"]) => {
                reply(Reply::ok(openapi::v3_core_v1()))
            }
            // go-restful's router refuses a method no route of the path takes before it
            // looks at `Accept` or anything else.
            (m, ["api", "v1", "secrets"]) if *m != Method::GET => {
                reply(Reply::Status(Status::method_not_allowed()))
            }
            (m, ["api", "v1", "namespaces", _, "secrets"])
                if !matches!(*m, Method::GET | Method::POST | Method::DELETE) =>
            {
                reply(Reply::Status(Status::method_not_allowed()))
            }
            (m, ["api", "v1", "namespaces", _, "secrets", _])
                if !matches!(
                    *m,
                    Method::GET | Method::PUT | Method::PATCH | Method::DELETE
                ) =>
            {
                reply(Reply::Status(Status::method_not_allowed()))
            }
            // The deprecated watch paths, still served by kube-apiserver: a GET of them is a
            // watch whatever `watch` says, and a name in the path selects that Secret.
            (m, ["api", "v1", "watch", "secrets"])
            | (m, ["api", "v1", "watch", "namespaces", _, "secrets"])
            | (m, ["api", "v1", "watch", "namespaces", _, "secrets", _])
                if *m != Method::GET =>
            {
                reply(Reply::Status(Status::method_not_allowed()))
            }
            (_, ["api", "v1", "watch", "secrets"]) => {
                acceptable(req)?;
                self.watch(req, Scope::All, None).await
            }
            (_, ["api", "v1", "watch", "namespaces", ns, "secrets"]) => {
                acceptable(req)?;
                self.watch(req, Scope::named(ns), None).await
            }
            (_, ["api", "v1", "watch", "namespaces", ns, "secrets", name]) => {
                acceptable(req)?;
                self.watch(req, Scope::named(ns), Some(name)).await
            }
            (m, ["api", "v1", "events" | "services"])
            | (m, ["api", "v1", "namespaces", _, "events" | "services"])
            | (m, ["api", "v1", "namespaces", _, "events" | "services", _])
                if *m != Method::GET =>
            {
                reply(Reply::Status(Status::method_not_allowed()))
            }
            (_, ["api", "v1", r @ ("events" | "services")])
            | (_, ["api", "v1", "namespaces", _, r @ ("events" | "services")]) => {
                let Some(what) = Absent::of(r) else {
                    return reply(Reply::Status(Status::no_route()));
                };
                acceptable(req)?;
                if watching() {
                    let Some(permit) = self.watch_permit() else {
                        return reply(Reply::TooManyRequests);
                    };
                    let w = watch::start_empty(&self.access, req, what.fields(), permit).await?;
                    Ok(Routed::Watch(w))
                } else {
                    reply(absent::list(&self.access, req, what).await?)
                }
            }
            (_, ["api", "v1", "namespaces", _, r @ ("events" | "services"), name]) => {
                let Some(what) = Absent::of(r) else {
                    return reply(Reply::Status(Status::no_route()));
                };
                acceptable(req)?;
                reply(absent::get(what, name))
            }
            (m, ["api", "v1", "secrets"]) => {
                acceptable(req)?;
                match *m {
                    Method::GET if watching() => self.watch(req, Scope::All, None).await,
                    Method::GET => reply(secrets::list(&self.access, req, &Scope::All).await?),
                    _ => reply(Reply::Status(Status::method_not_allowed())),
                }
            }
            (m, ["api", "v1", "namespaces", ns, "secrets"]) => {
                // Not checked here: a list, watch or deletecollection in a namespace that is
                // not valid finds nothing, and a create there is refused by the Secret's
                // validation, as in kube-apiserver.
                acceptable(req)?;
                match *m {
                    Method::GET if watching() => self.watch(req, Scope::named(ns), None).await,
                    Method::GET => {
                        reply(secrets::list(&self.access, req, &Scope::named(ns)).await?)
                    }
                    Method::POST => reply(secrets::create(&self.access, req, ns).await?),
                    Method::DELETE => reply(
                        secrets::delete_collection(&self.access, req, &Scope::named(ns)).await?,
                    ),
                    _ => reply(Reply::Status(Status::method_not_allowed())),
                }
            }
            (m, ["api", "v1", "namespaces", ns, "secrets", name]) => {
                let id = match secrets::secret_id(ns, name) {
                    Ok(id) => id,
                    // Nothing is stored under a name that is not valid: a read, change or
                    // delete of it is NotFound (a server-side apply would create it: Invalid),
                    // and one the storage cannot key is BadRequest, whatever the method.
                    Err(e) => {
                        let named = matches!(
                            *m,
                            Method::GET | Method::PUT | Method::PATCH | Method::DELETE
                        );
                        let apply = *m == Method::PATCH
                            && req.content_type == "application/apply-patch+yaml";
                        let refusal = match secrets::unkeyable_name(name) {
                            Some(message) if named => AccessError::BadRequest(message),
                            None if named && !apply => AccessError::Store(StoreError::NotFound {
                                namespace: ns.to_string(),
                                name: name.to_string(),
                            }),
                            // NamespaceLifecycle admission comes before the object's validation.
                            None if apply && !crate::names::Namespace::errors(ns).is_empty() => {
                                AccessError::NamespaceNotFound(ns.to_string())
                            }
                            _ => return Err(e),
                        };
                        let attrs = req.info.attributes(req.ctx.user.clone());
                        let access = &self.access;
                        return Err(access
                            .refuse_after_authorization(&req.ctx, &attrs, refusal)
                            .await
                            .into());
                    }
                };
                acceptable(req)?;
                let r = match *m {
                    Method::GET => secrets::get(&self.access, req, &id).await?,
                    Method::PUT => secrets::update(&self.access, req, &id).await?,
                    Method::PATCH => secrets::patch(&self.access, req, &id).await?,
                    Method::DELETE => secrets::delete(&self.access, req, &id).await?,
                    _ => Reply::Status(Status::method_not_allowed()),
                };
                reply(r)
            }
            _ => reply(Reply::Status(Status::no_route())),
        }
    }

    /// Records `req`, which no operation of the access layer took in hand, as `routed` ends it
    /// (kube-apiserver records every request); a policy that now refuses it turns it into
    /// that refusal.
    async fn record(
        &self,
        req: &KubeRequest,
        routed: Result<Routed, KubeError>,
    ) -> Result<Routed, KubeError> {
        let (status, body) = match &routed {
            Ok(Routed::Reply(Reply::Status(s))) => (s.audit(), s.audit_object()),
            Ok(Routed::Reply(r)) => (r.audit_status(), None),
            Ok(Routed::Watch(_)) => (crate::audit::ResponseStatus::success(200), None),
            Err(e) => {
                let s = Status::of(e);
                (s.audit(), s.audit_object())
            }
        };
        let attrs = req.info.attributes(req.ctx.user.clone());
        self.access.record(&req.ctx, &attrs, status, body).await?;
        routed
    }

    /// A watch of `scope`, or of the Secret `name` in it (the deprecated named watch path).
    async fn watch(
        &self,
        req: &KubeRequest,
        scope: Scope,
        name: Option<&str>,
    ) -> Result<Routed, KubeError> {
        let Some(permit) = self.watch_permit() else {
            return Ok(Routed::Reply(Reply::TooManyRequests));
        };
        Ok(Routed::Watch(
            watch::start(
                &self.access,
                req,
                scope,
                name,
                self.limits.bookmark_interval,
                permit,
            )
            .await?,
        ))
    }
}

/// The Kubernetes verb of a request, for metrics.
fn verb_of(method: &Method, path: &str, query: &str) -> &'static str {
    let named =
        path.trim_matches('/').split('/').count() == 6 && path.starts_with("/api/v1/namespaces/");
    let watch = query
        .split('&')
        .any(|p| matches!(p, "watch=true" | "watch=1" | "watch=True"));
    match *method {
        Method::GET if watch || path.starts_with("/api/v1/watch/") => "watch",
        Method::GET if path.ends_with("/secrets") => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// What a route answers. One per request, moved a few times on its way out: boxing the
/// larger reply would cost an allocation per request for no gain.
#[allow(clippy::large_enum_variant)]
enum Routed {
    Reply(Reply),
    Watch(watch::WatchReply),
}

/// Refuses (406) a request for Secrets whose `Accept` names nothing keyward writes, as
/// kube-apiserver's handlers do once the request is authorized.
fn acceptable(req: &KubeRequest) -> Result<(), KubeError> {
    negotiate(&req.accept)
        .map(drop)
        .ok_or(KubeError::NotAcceptable)
}

/// Whether kube-apiserver indents its JSON answer (`isPrettyPrint`): `?pretty=` with a Go
/// boolean decides; without one, the user agents of curl, Wget and browsers get it indented.
fn pretty_print(raw_query: &str, user_agent: &str) -> bool {
    if raw_query.contains("pretty") {
        if let Some(v) = parse_query(raw_query)
            .get("pretty")
            .filter(|v| !v.is_empty())
        {
            return matches!(v.as_str(), "1" | "t" | "T" | "TRUE" | "true" | "True");
        }
    }
    ["curl", "Wget", "Mozilla/5.0"]
        .iter()
        .any(|p| user_agent.starts_with(p))
}

fn json_response(r: Reply) -> Response<Body> {
    response(r, Output::Json, false)
}

/// `r` written as `output` asks: a JSON body as YAML for [`Output::Yaml`], as kube-apiserver
/// writes any object or Status a client asked YAML for, and indented when `indent` (see
/// [`pretty_print`]); other bodies as they are.
fn response(r: Reply, output: Output, indent: bool) -> Response<Body> {
    // A Status that says when to retry also says it in `Retry-After`, as kube-apiserver's
    // `ErrorNegotiated` does, and so does the 429 of a limit, as its in-flight filters do:
    // client-go (kubectl, controllers) retries a 429 only with that header.
    let published = matches!(r, Reply::Published { .. });
    let (retry_after, plain) = match &r {
        Reply::Status(s) => (
            s.details.as_ref().map_or(0, |d| d.retry_after_seconds),
            false,
        ),
        Reply::TooManyRequests => (1, true),
        _ => (0, false),
    };
    // Indented when negotiation failed (`WriteRawJSON`) or the client asked for it (`?pretty`,
    // curl's user agent).
    let indent = output == Output::Raw || (indent && output == Output::Json);
    let (code, content_type, body, warnings) = r.into_parts(indent);
    let json = content_type == "application/json";
    let mut resp = match output {
        Output::Yaml if json && !published => match json_to_yaml(&body) {
            Some(y) => respond(code, "application/yaml", Bytes::from(y), &warnings),
            None => respond(code, content_type, body, &warnings),
        },
        _ => respond(code, content_type, body, &warnings),
    };
    if retry_after > 0 {
        resp.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(retry_after),
        );
    }
    if published {
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("public, max-age=3600"),
        );
    }
    if plain {
        // `http.Error` marks its text as not to be sniffed.
        resp.headers_mut().insert(
            http::header::X_CONTENT_TYPE_OPTIONS,
            http::HeaderValue::from_static("nosniff"),
        );
    }
    resp
}

fn respond(code: u16, content_type: &str, body: Bytes, warnings: &[String]) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    if content_type.starts_with("text/plain") {
        h.insert(
            http::header::X_CONTENT_TYPE_OPTIONS,
            http::HeaderValue::from_static("nosniff"),
        );
    }
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, private"),
    );
    for w in warnings {
        if let Ok(v) = http::HeaderValue::from_str(&warning_header(w)) {
            h.append(http::header::WARNING, v);
        }
    }
    resp
}

/// Serves `api` on `listener` until `shutdown`: then stops accepting, lets requests in flight
/// finish (watches end when the store closes them) and returns.
pub async fn serve(
    listener: KubeListener,
    api: Arc<KubeApi>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let KubeListener {
        listener,
        acceptor,
        client_verifier,
        conn,
        limits,
        addr,
    } = listener;
    tracing::info!(listen = %addr, "serving the Kubernetes API over HTTPS");
    let stop = CancellationToken::new();
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let mut incoming = net::tcp_incoming(listener, &conn);
    tokio::pin!(shutdown);
    loop {
        let c = tokio::select! {
            c = incoming.next() => c,
            _ = &mut shutdown => break,
        };
        let Some(Ok(c)) = c else { break };
        let Ok(peer) = c.stream().peer_addr() else {
            continue;
        };
        let (acceptor, api, stop, alive) =
            (acceptor.clone(), api.clone(), stop.clone(), alive.clone());
        let verifier = client_verifier.clone();
        let handshake = conn.handshake_timeout;
        tokio::spawn(async move {
            let _alive = alive;
            let tls = match tokio::time::timeout(handshake, acceptor.accept(c)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let chain = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            let certs = Arc::new(ClientCerts::verify(chain, verifier.as_ref(), peer));
            let service = hyper::service::service_fn(move |req| {
                let (api, certs) = (api.clone(), certs.clone());
                async move { Ok::<_, Infallible>(api.handle(req, peer, &certs).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(peer = %peer, error = %e, "connection ended");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(incoming);
    stop.cancel();
    drop(alive);
    let _ = all_done.recv().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_of_requests() {
        let ns = "/api/v1/namespaces/default/secrets";
        for (method, path, query, want) in [
            (Method::GET, ns, "", "list"),
            (Method::GET, ns, "watch=true&resourceVersion=0", "watch"),
            (Method::GET, "/api/v1/secrets", "watch=1", "watch"),
            (
                Method::GET,
                "/api/v1/watch/namespaces/default/secrets/s1",
                "",
                "watch",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/secrets/s1",
                "",
                "get",
            ),
            (Method::GET, "/api", "", "get"),
            (Method::POST, ns, "", "create"),
            (
                Method::PUT,
                "/api/v1/namespaces/default/secrets/s1",
                "",
                "update",
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/default/secrets/s1",
                "",
                "patch",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/default/secrets/s1",
                "",
                "delete",
            ),
            (Method::DELETE, ns, "", "deletecollection"),
            (Method::OPTIONS, ns, "", "other"),
        ] {
            assert_eq!(
                verb_of(&method, path, query),
                want,
                "{method} {path}?{query}"
            );
        }
    }

    #[test]
    fn bad_tls_files_are_refused_before_binding() {
        let o = KubeOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            b"not a certificate".to_vec(),
            Zeroizing::new(b"not a key".to_vec()),
        );
        let e = tls_acceptor(&o).err().unwrap();
        assert!(
            e.to_string()
                .starts_with("Kubernetes API TLS configuration: "),
            "{e}"
        );
    }
}
