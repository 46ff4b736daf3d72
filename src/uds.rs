//! Unix domain sockets: binding with safe permissions and stale-socket handling (servers),
//! gRPC channels to a socket path or a Linux abstract socket (clients), and the `unix://`
//! endpoints that name them ([`parse_unix_endpoint`]).

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint};

/// Errors binding or connecting a socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// Another process is accepting connections on the path (operator's setup).
    #[error("{0}: another process is listening on this socket; stop it or choose another path")]
    InUse(PathBuf),
    /// The path exists and is not a socket (operator's input).
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The group given for the socket does not exist (operator's input).
    #[error("no group named {0:?} in /etc/group")]
    UnknownGroup(String),
    /// An I/O error on the path (environment).
    #[error("{path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Who may connect: mode 0600, or 0660 with a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketAccess {
    /// Group id that may also connect; `None` for owner only.
    pub group: Option<u32>,
}

/// Group id meaning "everyone may connect" in [`SocketAccess::everyone`].
const EVERYONE: u32 = u32::MAX;

impl SocketAccess {
    /// Anyone may connect (mode 0666): for a socket whose server checks each caller's
    /// credentials itself ([`PeerAllow`]).
    pub fn everyone() -> Self {
        Self {
            group: Some(EVERYONE),
        }
    }

    fn mode(self) -> u32 {
        match self.group {
            Some(EVERYONE) => 0o666,
            Some(_) => 0o660,
            None => 0o600,
        }
    }
}

/// Gives the socket file at `path` `access`'s group and mode.
pub fn set_access(path: &Path, access: SocketAccess) -> Result<(), SocketError> {
    let io_err = |source| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(gid) = access.group.filter(|g| *g != EVERYONE) {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err)?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(access.mode())).map_err(io_err)
}

/// Who may call a socket's API, by the credentials the kernel reports for the connecting
/// process (`SO_PEERCRED`): a caller is admitted when its uid is in `uids` or its gid in `gids`.
/// A check on top of the socket file's mode, for sockets that must stay private even when the
/// directory holding them is shared (the KMS admin socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAllow {
    /// User ids admitted.
    pub uids: Vec<u32>,
    /// Group ids admitted (the caller's effective gid).
    pub gids: Vec<u32>,
}

impl Default for PeerAllow {
    /// The server's own effective uid and root.
    fn default() -> Self {
        let me = rustix::process::geteuid().as_raw();
        let mut uids = vec![me, 0];
        uids.dedup();
        Self {
            uids,
            gids: Vec::new(),
        }
    }
}

impl PeerAllow {
    /// Whether a caller running as `uid` with group `gid` is admitted.
    pub fn permits(&self, uid: u32, gid: u32) -> bool {
        self.uids.contains(&uid) || self.gids.contains(&gid)
    }

    /// Admits a caller whose peer credentials are `peer` (`(uid, gid)`; `None` if the kernel
    /// did not report them); otherwise `PermissionDenied`
    /// ([`Reason::Forbidden`](crate::reason::Reason::Forbidden)) saying who called and who is
    /// admitted.
    pub fn check_peer(&self, peer: Option<(u32, u32)>) -> Result<(), tonic::Status> {
        let list = |ids: &[u32]| {
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let caller = match peer {
            Some((uid, gid)) if self.permits(uid, gid) => return Ok(()),
            Some((uid, gid)) => format!("uid {uid} (gid {gid})"),
            None => "a caller whose credentials the kernel did not report".to_owned(),
        };
        tracing::warn!(caller = %caller, "refused a call on a socket that admits only some users");
        Err(crate::reason::Reason::Forbidden.status(
            tonic::Code::PermissionDenied,
            format!(
                "permission denied: this socket admits uids {} and gids {}; {caller} is not admitted",
                list(&self.uids),
                list(&self.gids)
            ),
        ))
    }

    /// [`PeerAllow::check_peer`] for a request that came over a Unix socket (a tonic
    /// interceptor).
    pub fn check<T>(&self, req: &tonic::Request<T>) -> Result<(), tonic::Status> {
        let cred = req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .and_then(|i| i.peer_cred);
        self.check_peer(cred.map(|c| (c.uid(), c.gid())))
    }
}

/// Resolves a group name or numeric id through /etc/group.
pub fn resolve_group(name: &str) -> Result<u32, SocketError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let groups = fs::read_to_string("/etc/group").map_err(|e| SocketError::Io {
        path: "/etc/group".into(),
        source: e,
    })?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let _pw = f.next()?;
            let gid = f.next()?.parse::<u32>().ok()?;
            (n == name).then_some(gid)
        })
        .next()
        .ok_or_else(|| SocketError::UnknownGroup(name.to_owned()))
}

/// Removes the socket file on drop, if it is still the one this process created.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketGuard {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if let Ok(m) = fs::symlink_metadata(&self.path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Whether [`bind`] can bind a socket at `path`, without binding it: nothing is there, in a
/// directory that exists (`false`), or a stale socket nothing accepts on, which `bind` replaces
/// (`true`). A server checks this before it opens anything, so that a start refused for its
/// socket path changes nothing.
pub fn check_bindable(path: &Path) -> Result<bool, SocketError> {
    let io_err = |source| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match StdUnixStream::connect(path) {
            Ok(_) => Err(SocketError::InUse(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(true),
            Err(e) => Err(io_err(e)),
        },
        Ok(_) => Err(SocketError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            match fs::metadata(dir) {
                Ok(m) if m.is_dir() => Ok(false),
                Ok(_) => Err(io_err(io::Error::from(io::ErrorKind::NotADirectory))),
                Err(e) => Err(io_err(e)),
            }
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Binds a Unix socket at `path` with mode 0600 (0660 and the group with `access.group`).
/// An existing socket file is replaced only if nothing accepts connections on it.
/// Must be called inside a tokio runtime.
pub fn bind(path: &Path, access: SocketAccess) -> Result<(UnixListener, SocketGuard), SocketError> {
    let io_err = |source| SocketError::Io {
        path: path.to_owned(),
        source,
    };
    if check_bindable(path)? {
        tracing::info!(path = %path.display(), "replacing stale socket");
        fs::remove_file(path).map_err(io_err)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
    let meta = fs::symlink_metadata(path).map_err(io_err)?;
    let guard = SocketGuard {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    set_access(path, access)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    let listener = UnixListener::from_std(listener).map_err(io_err)?;
    Ok((listener, guard))
}

/// A Unix socket to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixTarget {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket name (without the leading `@`).
    Abstract(String),
}

impl std::fmt::Display for UnixTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnixTarget::Path(p) => write!(f, "unix://{}", p.display()),
            UnixTarget::Abstract(n) => write!(f, "unix:///@{n}"),
        }
    }
}

/// Why an endpoint does not name a Unix socket. Every case is the caller's input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The scheme is not `unix` (empty when the endpoint has none).
    #[error("unsupported scheme {0:?}, only unix is supported")]
    UnsupportedScheme(String),
    /// `unix:` with no absolute path after it (e.g. `unix://relative.sock`).
    #[error("the endpoint names no socket path; write unix:///absolute/path/to/socket")]
    NoSocketPath,
    /// A `%` in the path not followed by two hex digits, or decoding to invalid UTF-8.
    #[error("invalid percent-encoding in the endpoint path")]
    PercentEncoding,
    /// `unix:///@` with no name after the `@`.
    #[error("empty abstract socket name")]
    EmptyAbstractName,
}

/// `unix:///path` (or `unix://host/path`, whose host Go ignores) to the socket it names, the
/// path percent-decoded; a path starting with `/@` is a Linux abstract socket (k8s.io/kms
/// `util.ParseEndpoint`, which kube-apiserver uses for KMS plugin endpoints).
pub fn parse_unix_endpoint(endpoint: &str) -> Result<UnixTarget, EndpointError> {
    let Some((scheme, rest)) = endpoint.split_once(':') else {
        return Err(EndpointError::UnsupportedScheme(String::new()));
    };
    if scheme != "unix" {
        return Err(EndpointError::UnsupportedScheme(scheme.to_owned()));
    }
    let path = if let Some(after) = rest.strip_prefix("//") {
        after.find('/').map(|i| &after[i..]).unwrap_or("")
    } else {
        rest
    };
    if !path.starts_with('/') {
        return Err(EndpointError::NoSocketPath);
    }
    let path = percent_decode(path).ok_or(EndpointError::PercentEncoding)?;
    match path.strip_prefix("/@") {
        Some("") => Err(EndpointError::EmptyAbstractName),
        Some(name) => Ok(UnixTarget::Abstract(name.to_owned())),
        None => Ok(UnixTarget::Path(PathBuf::from(path))),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Connects one stream to `target`.
pub async fn connect(target: &UnixTarget) -> io::Result<UnixStream> {
    match target {
        UnixTarget::Path(p) => UnixStream::connect(p).await,
        UnixTarget::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            let s = StdUnixStream::connect_addr(&addr)?;
            s.set_nonblocking(true)?;
            UnixStream::from_std(s)
        }
    }
}

fn endpoint() -> Endpoint {
    // The authority is not used for routing; kube-apiserver sends "localhost" too.
    Endpoint::from_static("http://localhost")
}

/// A gRPC channel to a Unix socket file. Connects now: fails if nothing listens.
pub async fn unix_channel(path: impl Into<PathBuf>) -> Result<Channel, tonic::transport::Error> {
    channel(UnixTarget::Path(path.into())).await
}

/// A gRPC channel to `target`, a socket file or an abstract socket. Connects now: fails if
/// nothing listens.
pub async fn channel(target: UnixTarget) -> Result<Channel, tonic::transport::Error> {
    endpoint()
        .connect_with_connector(tower::service_fn(move |_| {
            let target = target.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(connect(&target).await?)) }
        }))
        .await
}

/// A gRPC channel to `target` that connects on first use and reconnects after failures, so a
/// plugin that starts later or restarts is picked up without rebuilding the client.
pub fn lazy_channel(target: UnixTarget) -> Channel {
    endpoint().connect_with_connector_lazy(tower::service_fn(move |_| {
        let target = target.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(connect(&target).await?)) }
    }))
}

/// Whether the call was refused by a server shutting down, so that the server never processed
/// it: it began on a connection the server had just closed with GOAWAY (`NO_ERROR`), which
/// tonic reports as `Internal`, or the connection closed before the request was sent on it
/// (`Cancelled`, from hyper). Such a call is as retryable as `Unavailable`, and safe to send
/// again whatever it does: grpc-go, kube-apiserver's client, retries both transparently.
pub fn refused_while_closing(s: &tonic::Status) -> bool {
    let mut cause = std::error::Error::source(s);
    while let Some(e) = cause {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_canceled() {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

/// The code a failed call has in gRPC's terms: a call that failed in the transport (the
/// connection broke under it, so no server answered) is `Unavailable`, as grpc-go (kube-apiserver's
/// client) reports it, where tonic says `Unknown`; any other status keeps its code.
pub fn grpc_code(s: &tonic::Status) -> tonic::Code {
    let mut cause = std::error::Error::source(s);
    while let Some(e) = cause {
        if s.code() == tonic::Code::Unknown
            && (e.is::<tonic::transport::Error>()
                || e.is::<hyper::Error>()
                || e.is::<std::io::Error>())
        {
            return tonic::Code::Unavailable;
        }
        cause = e.source();
    }
    s.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An internal error, with or without a transport error as its source, a reset stream and
    /// `Unavailable` are not refusals while closing. (The refusals themselves, a GOAWAY and a
    /// request never sent, come from real connections in the store tests
    /// `kms_calls_refused_by_a_closing_plugin_are_made_again` and
    /// `kms_v1_writes_across_graceful_plugin_restarts_fail_only_while_it_is_down`.)
    #[test]
    fn only_a_goaway_is_a_refusal_while_closing() {
        assert!(!refused_while_closing(&tonic::Status::internal(
            "h2 protocol error: http2 error"
        )));
        let mut s = tonic::Status::internal("boom");
        s.set_source(std::sync::Arc::new(std::io::Error::other(
            "connection reset",
        )));
        assert!(!refused_while_closing(&s));
        let mut s = tonic::Status::internal("stream reset");
        s.set_source(std::sync::Arc::new(h2::Error::from(h2::Reason::NO_ERROR)));
        assert!(!refused_while_closing(&s), "a reset stream is not a GOAWAY");
        assert!(!refused_while_closing(&tonic::Status::unavailable("down")));
    }

    /// A call that broke in the transport is Unavailable; a status a server sent keeps its code.
    #[test]
    fn transport_failures_are_unavailable() {
        let mut s = tonic::Status::unknown("transport error");
        s.set_source(std::sync::Arc::new(std::io::Error::other(
            "connection reset",
        )));
        assert_eq!(grpc_code(&s), tonic::Code::Unavailable);
        assert_eq!(
            grpc_code(&tonic::Status::unknown("from the plugin")),
            tonic::Code::Unknown
        );
        let mut s = tonic::Status::internal("boom");
        s.set_source(std::sync::Arc::new(std::io::Error::other("x")));
        assert_eq!(grpc_code(&s), tonic::Code::Internal);
    }

    #[tokio::test]
    async fn bind_modes_stale_and_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        let (l, guard) = bind(&p, SocketAccess::default()).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            bind(&p, SocketAccess::default()),
            Err(SocketError::InUse(_))
        ));
        assert!(matches!(check_bindable(&p), Err(SocketError::InUse(_))));
        // Close the listener without removing the file: it is now stale.
        drop(l);
        std::mem::forget(guard);
        assert!(check_bindable(&p).unwrap(), "a stale socket is replaced");
        assert!(!check_bindable(&dir.path().join("new.sock")).unwrap());
        for missing in ["no/s.sock", "file/s.sock"] {
            fs::write(dir.path().join("file"), b"x").unwrap();
            assert!(
                matches!(
                    check_bindable(&dir.path().join(missing)),
                    Err(SocketError::Io { .. })
                ),
                "{missing}"
            );
        }
        fs::remove_file(dir.path().join("file")).unwrap();
        let (_l, guard) = bind(&p, SocketAccess::default()).unwrap();
        drop(guard);
        assert!(!p.exists(), "the guard removes its socket");
        let f = dir.path().join("file");
        fs::write(&f, b"x").unwrap();
        assert!(matches!(
            bind(&f, SocketAccess::default()),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(fs::read(&f).unwrap(), b"x");
        let gid = rustix::process::getgid().as_raw();
        let (_l, _g) = bind(&p, SocketAccess { group: Some(gid) }).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o660
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_unix_endpoint("unix:///var/run/kms.sock"),
            Ok(UnixTarget::Path("/var/run/kms.sock".into()))
        );
        assert_eq!(
            parse_unix_endpoint("unix://ignored-host/var/run/kms.sock"),
            Ok(UnixTarget::Path("/var/run/kms.sock".into()))
        );
        assert_eq!(
            parse_unix_endpoint("unix:/var/run/kms.sock"),
            Ok(UnixTarget::Path("/var/run/kms.sock".into()))
        );
        assert_eq!(
            parse_unix_endpoint("unix:///tmp/a%20b.sock"),
            Ok(UnixTarget::Path("/tmp/a b.sock".into()))
        );
        assert_eq!(
            parse_unix_endpoint("unix:///@foo"),
            Ok(UnixTarget::Abstract("foo".into()))
        );
        for (bad, want) in [
            ("unix://foo.sock", EndpointError::NoSocketPath),
            ("unix://", EndpointError::NoSocketPath),
            ("unix:///@", EndpointError::EmptyAbstractName),
            ("unix:///a%2", EndpointError::PercentEncoding),
            ("unix:///a%zz", EndpointError::PercentEncoding),
            ("unix:///a%ff", EndpointError::PercentEncoding),
            (
                "/var/run/kms.sock",
                EndpointError::UnsupportedScheme(String::new()),
            ),
            (
                "http://x/y",
                EndpointError::UnsupportedScheme("http".into()),
            ),
        ] {
            assert_eq!(parse_unix_endpoint(bad), Err(want), "{bad}");
        }
        // Display prints the endpoint a target would be parsed from.
        for e in ["unix:///var/run/kms.sock", "unix:///@foo"] {
            assert_eq!(parse_unix_endpoint(e).unwrap().to_string(), e);
        }
    }

    #[test]
    fn groups_resolve() {
        assert_eq!(resolve_group("0").unwrap(), 0);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(matches!(
            resolve_group("no-such-group-kw"),
            Err(SocketError::UnknownGroup(_))
        ));
    }
}

/// How a directory is open to others: what keeps it from being one only this process's user
/// may change (its callers trust what they find in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exposure {
    /// Owned by this uid, not the process's effective uid.
    Owner(u32),
    /// Writable by its group or others: this mode (the permission bits).
    Writable(u32),
}

/// The [`Exposure`] of the directory `m` describes; `None` if only this user may change it.
pub(crate) fn exposure(m: &std::fs::Metadata) -> Option<Exposure> {
    use std::os::unix::fs::MetadataExt as _;
    let mode = m.mode() & 0o7777;
    if m.uid() != rustix::process::geteuid().as_raw() {
        Some(Exposure::Owner(m.uid()))
    } else if mode & 0o022 != 0 {
        Some(Exposure::Writable(mode))
    } else {
        None
    }
}
