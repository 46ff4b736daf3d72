//! `/metrics` over plain HTTP/1.1 on a TCP listener of its own, never on a gRPC socket. The
//! Prometheus text format by default, OpenMetrics when the `Accept` header asks for it. Each
//! connection must send its request headers within 10 s, and at most 64 connections are served
//! at once (more are closed at once): a scraper needs one.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{Metrics, OPENMETRICS_TEXT, PROMETHEUS_TEXT};

/// Most connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// Time a connection has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The metrics endpoint, bound.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
    metrics: Metrics,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port: see [`local_addr`](Self::local_addr)) to serve
    /// `metrics`. Whether a non-loopback address is acceptable is the caller's decision.
    pub async fn bind(addr: SocketAddr, metrics: Metrics) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(MetricsServer {
            listener,
            addr,
            metrics,
        })
    }

    /// The metrics it serves.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `GET /metrics` until `shutdown` completes; then stops accepting and closes the
    /// open connections.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = &mut shutdown => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: wait a little rather than spin.
                    tracing::warn!(error = %e, "metrics endpoint cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if conns.len() >= MAX_CONNECTIONS {
                continue;
            }
            let metrics = self.metrics.clone();
            conns.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(respond(&metrics, req).await) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(error = %e, "metrics connection ended with an error");
                }
            });
        }
        conns.abort_all();
    }
}

/// Answers one request.
async fn respond<B>(metrics: &Metrics, req: http::Request<B>) -> http::Response<Full<Bytes>> {
    let reply = |status: http::StatusCode, text: &'static str| {
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(text.as_bytes())))
            .expect("a static response is valid")
    };
    if req.uri().path() != "/metrics" {
        return reply(
            http::StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return reply(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are allowed\n",
        );
    }
    let openmetrics = req
        .headers()
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let body = metrics.render(openmetrics).await;
    http::Response::builder()
        .header(
            http::header::CONTENT_TYPE,
            if openmetrics {
                OPENMETRICS_TEXT
            } else {
                PROMETHEUS_TEXT
            },
        )
        .body(Full::new(Bytes::from(body)))
        .expect("a response with a valid content type")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn get(addr: SocketAddr, path: &str, accept: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_both_formats_at_metrics_only() {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), Metrics::new())
            .await
            .unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        let text = get(addr, "/metrics", "*/*").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(PROMETHEUS_TEXT), "{text}");
        assert!(text.contains("keyward_build_info{version="), "{text}");
        let om = get(
            addr,
            "/metrics",
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.3",
        )
        .await;
        assert!(om.contains(OPENMETRICS_TEXT), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let missing = get(addr, "/", "*/*").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let _ = stop.send(());
        task.await.unwrap();
    }
}
