//! `bench store --kubeconfig`: the store workloads through keyward's Kubernetes API (the REST
//! API kubectl and client libraries use), so that its cost can be put side by side with
//! `keyward.v1` gRPC on the same store.
//!
//! A [`KubeTarget`] is read from a kubeconfig (its current context: the server's `https://`
//! URL, the CA that signed its certificate, and a client certificate or a bearer token). Each
//! [`KubeConn`] is one HTTP/1.1 keep-alive connection over TLS, as client-go's transport keeps
//! per host; calls on one connection take turns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::sync::Mutex;
use tonic::Status;
use zeroize::Zeroizing;

use super::BenchError;

/// Where and as whom `bench store --kubeconfig` calls the Kubernetes API.
pub struct KubeTarget {
    /// The server's URL, for the report.
    pub server: String,
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header.
    authority: String,
    name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    /// `Authorization: Bearer …`, if the user has a token.
    token: Option<Arc<Zeroizing<String>>>,
}

impl std::fmt::Debug for KubeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTarget")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Config {
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "context", alias = "cluster", alias = "user")]
    value: T,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: String,
}

#[derive(Deserialize)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority-data", default)]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority", default)]
    ca_file: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
struct User {
    #[serde(default)]
    token: Option<String>,
    #[serde(rename = "client-certificate-data", default)]
    cert_data: Option<String>,
    #[serde(rename = "client-key-data", default)]
    key_data: Option<String>,
    #[serde(rename = "client-certificate", default)]
    cert_file: Option<PathBuf>,
    #[serde(rename = "client-key", default)]
    key_file: Option<PathBuf>,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> BenchError {
    BenchError::Target(format!("kubeconfig {}: {what}", path.display()))
}

/// PEM bytes from a `…-data` field (base64) or a file field (relative to the kubeconfig).
fn pem_of(
    path: &Path,
    field: &str,
    data: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Zeroizing<Vec<u8>>>, BenchError> {
    if let Some(d) = data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map_err(|_| bad(path, format!("{field}-data: not base64")))?;
        return Ok(Some(Zeroizing::new(bytes)));
    }
    if let Some(f) = file {
        let f = match path.parent() {
            Some(dir) if f.is_relative() => dir.join(f),
            _ => f.to_owned(),
        };
        let bytes = std::fs::read(&f)
            .map_err(|e| bad(path, format!("{field}: cannot read {}: {e}", f.display())))?;
        return Ok(Some(Zeroizing::new(bytes)));
    }
    Ok(None)
}

impl KubeTarget {
    /// Reads the current context of the kubeconfig at `path`. The server must be `https://`
    /// with a CA given (kubectl sends no credentials over plain HTTP, and the benchmark does
    /// not skip verification).
    pub fn from_kubeconfig(path: &Path) -> Result<KubeTarget, BenchError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(path, format!("cannot read it: {e}")))?;
        let cfg: Config = serde_yaml_ng::from_str(&text)
            .map_err(|e| bad(path, crate::redact::serde_values(&e.to_string())))?;
        let ctx = cfg
            .contexts
            .iter()
            .find(|c| c.name == cfg.current_context)
            .ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "current-context {:?} is not among its contexts",
                        cfg.current_context
                    ),
                )
            })?;
        let cluster = cfg
            .clusters
            .iter()
            .find(|c| c.name == ctx.value.cluster)
            .ok_or_else(|| bad(path, format!("no cluster named {:?}", ctx.value.cluster)))?;
        let user = match cfg.users.into_iter().find(|u| u.name == ctx.value.user) {
            Some(u) => u.value,
            None if ctx.value.user.is_empty() => User::default(),
            None => return Err(bad(path, format!("no user named {:?}", ctx.value.user))),
        };
        let server = cluster.value.server.trim_end_matches('/').to_owned();
        let uri: http::Uri = server
            .parse()
            .map_err(|_| bad(path, format!("server {server:?}: not a URL")))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad(
                path,
                format!("server {server:?}: only https:// servers are benchmarked"),
            ));
        }
        if !matches!(uri.path(), "" | "/") {
            return Err(bad(
                path,
                format!("server {server:?}: a path after the host is not supported"),
            ));
        }
        let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
            return Err(bad(path, format!("server {server:?}: no host")));
        };
        let authority = authority.as_str().to_owned();
        let addr = format!("{host}:{}", uri.port_u16().unwrap_or(443));
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name = ServerName::try_from(bare.clone()).map_err(|_| {
            bad(
                path,
                format!("server {server:?}: {bare:?} is not a host name"),
            )
        })?;

        let ca = pem_of(
            path,
            "certificate-authority",
            cluster.value.ca_data.as_deref(),
            cluster.value.ca_file.as_deref(),
        )?
        .ok_or_else(|| bad(path, "the cluster has no certificate-authority(-data)"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            let cert = cert.map_err(|e| bad(path, format!("certificate-authority: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(path, format!("certificate-authority: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BenchError::Internal(e.to_string()))?
            .with_root_certificates(roots);
        let cert = pem_of(
            path,
            "client-certificate",
            user.cert_data.as_deref(),
            user.cert_file.as_deref(),
        )?;
        let key = pem_of(
            path,
            "client-key",
            user.key_data.as_deref(),
            user.key_file.as_deref(),
        )?;
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(path, format!("client-certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|_| bad(path, "client-key: no PEM private key"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad(path, format!("client certificate and key: {e}")))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(bad(
                    path,
                    "a client certificate needs both client-certificate and client-key",
                ))
            }
        };
        Ok(KubeTarget {
            server,
            addr,
            authority,
            name,
            tls: Arc::new(tls),
            token: user.token.map(|t| Arc::new(Zeroizing::new(t))),
        })
    }

    /// Opens one connection.
    pub async fn connect(&self) -> Result<KubeConn, BenchError> {
        let fail = |detail: String| BenchError::Connect {
            target: "the Kubernetes API",
            endpoint: self.server.clone(),
            detail,
        };
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| fail(format!("TLS: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(KubeConn {
            sender: Arc::new(Mutex::new(sender)),
            authority: self.authority.clone(),
            token: self.token.clone(),
        })
    }
}

/// One keep-alive connection to the Kubernetes API; clones share it (taking turns).
#[derive(Clone)]
pub struct KubeConn {
    sender: Arc<Mutex<SendRequest<Full<Bytes>>>>,
    authority: String,
    token: Option<Arc<Zeroizing<String>>>,
}

/// The gRPC code nearest to an HTTP status, so errors are counted alike for every target.
fn status_of(code: StatusCode, body: &[u8]) -> Status {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| code.to_string());
    match code.as_u16() {
        400 | 422 => Status::invalid_argument(message),
        401 => Status::unauthenticated(message),
        403 => Status::permission_denied(message),
        404 => Status::not_found(message),
        409 if message.contains("already exists") => Status::already_exists(message),
        409 => Status::aborted(message),
        410 => Status::out_of_range(message),
        413 | 429 => Status::resource_exhausted(message),
        503 => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

impl KubeConn {
    /// One request; the body is read whole (so the connection can be reused).
    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(), Status> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::USER_AGENT, "keyward-bench");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.token {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", t.as_str()),
            );
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut sender = self.sender.lock().await;
        sender
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("the connection closed: {e}")))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let code = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .to_bytes();
        drop(sender);
        if code.is_success() {
            Ok(())
        } else {
            Err(status_of(code, &body))
        }
    }

    /// `PUT` of the Secret `namespace/name` holding `key: value` (an unconditional update).
    pub async fn put(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), Status> {
        let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
        let body = secret_json(namespace, name, key, value);
        self.call(Method::PUT, &path, Some(body)).await
    }

    /// `POST` of the Secret `namespace/name` holding `key: value`.
    pub async fn create(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), Status> {
        let path = format!("/api/v1/namespaces/{namespace}/secrets");
        let body = secret_json(namespace, name, key, value);
        self.call(Method::POST, &path, Some(body)).await
    }

    /// `GET` of the Secret `namespace/name`.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<(), Status> {
        let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
        self.call(Method::GET, &path, None).await
    }

    /// `GET` of the first `limit` Secrets of `namespace`.
    pub async fn list(&self, namespace: &str, limit: u32) -> Result<(), Status> {
        let path = format!("/api/v1/namespaces/{namespace}/secrets?limit={limit}");
        self.call(Method::GET, &path, None).await
    }
}

fn secret_json(namespace: &str, name: &str, key: &str, value: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: b64},
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kubeconfig");
        let write = |s: &str| std::fs::write(&p, s).unwrap();
        write("current-context: x\ncontexts: []\n");
        let e = KubeTarget::from_kubeconfig(&p).unwrap_err().to_string();
        assert!(
            e.contains("current-context \"x\" is not among its contexts"),
            "{e}"
        );
        write(
            "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n\
             clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: t}}]\n",
        );
        let e = KubeTarget::from_kubeconfig(&p).unwrap_err().to_string();
        assert!(e.contains("only https:// servers"), "{e}");
        write(
            "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n\
             clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\nusers: [{name: u, user: {token: tok-SECRET-123}}]\n",
        );
        let e = KubeTarget::from_kubeconfig(&p).unwrap_err().to_string();
        assert!(e.contains("no certificate-authority"), "{e}");
        assert!(!e.contains("SECRET"), "the token is not shown: {e}");
    }

    #[test]
    fn http_statuses_map_to_the_nearest_code() {
        let body = br#"{"kind":"Status","message":"secrets \"x\" not found","code":404}"#;
        let s = status_of(StatusCode::NOT_FOUND, body);
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "secrets \"x\" not found");
        let s = status_of(
            StatusCode::CONFLICT,
            br#"{"message":"secrets \"x\" already exists"}"#,
        );
        assert_eq!(s.code(), tonic::Code::AlreadyExists);
        assert_eq!(
            status_of(StatusCode::CONFLICT, b"").code(),
            tonic::Code::Aborted
        );
    }
}
