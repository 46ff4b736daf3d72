//! Watch framing: `?watch=true` answered at once with headers, then one JSON event
//! `{"type","object"}` per line (the `\n` the Python client splits on), as plain Secrets or as
//! one-row Tables (column definitions only in the first). `resourceVersion` `""`/`"0"` starts
//! with synthetic ADDED events, `"N"` with the changes after N; a revision older than history is
//! an ERROR event carrying a 410 Expired Status (HTTP 200, as kube-apiserver). BOOKMARKs are
//! sent when `allowWatchBookmarks` is set, periodically and 2 s before `timeoutSeconds` ends the
//! stream.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::objects::{encode_secret, partial_object_metadata};
use super::request::KubeRequest;
use super::status::Status;
use super::table::{self, IncludeObject};
use super::KubeError;
use crate::access::{Access, AccessError};
use crate::names::FieldError;
use crate::store::{
    FieldSelector, ResourceVersion, Scope, Selector, StoreError, WatchEvents, WatchKind,
};

/// A started watch: the content type and the lines to stream.
#[derive(Debug)]
pub struct WatchReply {
    /// `application/json` or the Table content type.
    pub content_type: &'static str,
    /// Each event, newline-terminated.
    pub lines: mpsc::Receiver<Bytes>,
}

/// How a watch's events are written.
struct Framing {
    table: Option<IncludeObject>,
    /// Objects as `PartialObjectMetadata`.
    metadata_only: bool,
    fields: FieldSelector,
    first: bool,
}

impl Framing {
    /// A BOOKMARK at `rv`: an object of the watched kind with only its resourceVersion (and
    /// the zero creationTimestamp Go writes as `null`, as kube-apiserver's bookmarks carry).
    fn bookmark(&mut self, rv: &str) -> Bytes {
        let (kind, version) = if self.metadata_only {
            ("PartialObjectMetadata", "meta.k8s.io/v1")
        } else {
            ("Secret", "v1")
        };
        self.event(
            "BOOKMARK",
            json!({"kind":kind,"apiVersion":version,
                "metadata":{"resourceVersion":rv,"creationTimestamp":null}}),
        )
    }

    fn event(&mut self, kind: &str, object: Value) -> Bytes {
        /// `metav1.WatchEvent`, its fields in kube-apiserver's order.
        #[derive(serde::Serialize)]
        struct WatchEvent<'a> {
            r#type: &'a str,
            object: Value,
        }
        let mut line = serde_json::to_vec(&WatchEvent {
            r#type: kind,
            object,
        })
        .unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn secret_event(&mut self, kind: &str, s: &crate::store::Secret) -> Bytes {
        let object = match self.table {
            Some(include) => {
                let headers = std::mem::replace(&mut self.first, false);
                table::table(
                    std::slice::from_ref(s),
                    &s.metadata.resource_version,
                    None,
                    include,
                    headers,
                )
            }
            None if self.metadata_only => partial_object_metadata(s),
            None => encode_secret(s),
        };
        self.event(kind, object)
    }

    fn error_event(&mut self, status: &Status) -> Bytes {
        self.event("ERROR", serde_json::to_value(status).unwrap_or(Value::Null))
    }
}

/// A watch's `sendInitialEvents` and `resourceVersionMatch`, checked as kube-apiserver 1.30
/// (the version `/version` reports) checks them with its default feature gates: the WatchList
/// gate is off there, so `sendInitialEvents` is refused and a client such as client-go's
/// reflector falls back to a list and a watch.
fn check_watch_options(req: &KubeRequest) -> Result<(), KubeError> {
    let matching = req.param("resourceVersionMatch").unwrap_or("");
    let initial = req.param("sendInitialEvents").is_some();
    let forbidden =
        |field: &str, message: &str| FieldError::new(field, format!("Forbidden: {message}"));
    let mut causes = Vec::new();
    if initial {
        if matching != "NotOlderThan" {
            causes.push(forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        causes.push(forbidden(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
        ));
    }
    if !matching.is_empty() {
        if !initial {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if matching != "NotOlderThan" {
            causes.push(FieldError::new(
                "resourceVersionMatch",
                format!(
                    "Unsupported value: {}: supported values: \"NotOlderThan\"",
                    crate::authz::go_quote(matching)
                ),
            ));
        }
        if req.param("continue").is_some_and(|c| !c.is_empty()) {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(super::secrets::list_options_invalid(causes))
    }
}

/// What every watch's options say, checked in kube-apiserver's order (the field selector
/// apart: it depends on what is watched).
struct Options {
    framing: Framing,
    selector: Selector,
    rv: ResourceVersion,
    timeout: Option<Duration>,
}

impl Options {
    /// `fields` reads the field selector, between the label selector and the revision.
    fn parse(
        req: &KubeRequest,
        fields: impl FnOnce(&KubeRequest) -> Result<FieldSelector, KubeError>,
    ) -> Result<Options, KubeError> {
        check_watch_options(req)?;
        if super::request::negotiate(&req.accept) == Some(super::request::Output::Yaml) {
            return Err(KubeError::NotAcceptableWatch);
        }
        let include = IncludeObject::of_request(req.param("includeObject"), &req.accept)?;
        let selector = Selector::parse(req.param("labelSelector").unwrap_or(""))
            .map_err(KubeError::BadRequest)?;
        let fields = fields(req)?;
        let rv = super::secrets::resource_version(req)?;
        // A negative timeout ends the watch at once, as kube-apiserver's timer does; 0 is no
        // timeout given (kube-apiserver does not tell `timeoutSeconds=0` from unset).
        let timeout = req
            .int64("timeoutSeconds")?
            .filter(|t| *t != 0)
            .map(|t| Duration::from_secs(u64::try_from(t).unwrap_or(0)));
        let framing = Framing {
            table: table::wants_table(&req.accept).then_some(include),
            metadata_only: table::wants_metadata(&req.accept).is_some(),
            fields,
            first: true,
        };
        Ok(Options {
            framing,
            selector,
            rv,
            timeout,
        })
    }
}

/// Starts the watch `req` asks for on Secrets in `scope` (a namespace, or all), with a BOOKMARK
/// every `bookmark_every` if it allows them. `permit` (the watch's place under the server's
/// cap) is held until the stream ends.
pub async fn start(
    access: &Access,
    req: &KubeRequest,
    scope: Scope,
    name: Option<&str>,
    bookmark_every: Duration,
    permit: impl Send + 'static,
) -> Result<WatchReply, KubeError> {
    let Options {
        mut framing,
        selector,
        rv,
        timeout,
    } = Options::parse(req, |req| {
        let fields = super::secrets::field_selector(req)?;
        // A name in the path is a `metadata.name` selector; one given as well must ask for it.
        match name {
            Some(name) if fields.is_empty() => Ok(FieldSelector::of_name(name)),
            Some(name) if fields.name() != Some(name) => Err(KubeError::BadRequest(
                "fieldSelector metadata.name doesn't match requested name".into(),
            )),
            _ => Ok(fields),
        }
    })?;
    let bookmarks = req.flag("allowWatchBookmarks").then_some(bookmark_every);
    // kube-apiserver's watch of JSON is `application/json`, whatever the events carry.
    let content_type = "application/json";
    let (tx, lines) = mpsc::channel(64);
    match access
        .watch(&req.ctx, &scope, selector, &framing.fields, rv, true)
        .await
    {
        Ok(events) => {
            let start_rv = rv.revision().map(|r| r.to_string());
            tokio::spawn(async move {
                let _permit = permit;
                run(events, tx, framing, timeout, bookmarks, start_rv).await;
            });
        }
        Err(AccessError::Store(StoreError::Gone(m))) => {
            let status = Status::failure(410, "Expired", format!("too old resource version: {m}"));
            let _ = tx.try_send(framing.error_event(&status));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(WatchReply {
        content_type,
        lines,
    })
}

/// Starts a watch of a collection keyward holds nothing of (Events, Services; `fields` are
/// its selectable fields): its options are checked as any watch's, and it stays open with
/// nothing to send until `timeoutSeconds` or the client ends it. Authorized and recorded
/// (`ResponseStarted`, then `ResponseComplete` at its end) as the request's own attributes.
pub async fn start_empty(
    access: &Access,
    req: &KubeRequest,
    fields: &[&str],
    permit: impl Send + 'static,
) -> Result<WatchReply, KubeError> {
    // Nothing is matched against the selector: it is checked, and left at matching all.
    let opts = Options::parse(req, |req| {
        FieldSelector::parse_for(req.param("fieldSelector").unwrap_or(""), fields)
            .map(|_| FieldSelector::default())
            .map_err(KubeError::BadRequest)
    })?;
    let attrs = req.info.attributes(req.ctx.user.clone());
    let events = access.watch_nothing(&req.ctx, &attrs).await?;
    let (tx, lines) = mpsc::channel(1);
    tokio::spawn(async move {
        let _permit = permit;
        run(events, tx, opts.framing, opts.timeout, None, None).await;
    });
    Ok(WatchReply {
        content_type: "application/json",
        lines,
    })
}

/// How long before a watch's `timeoutSeconds` ends it its last bookmark is sent.
const PRE_TIMEOUT_BOOKMARK: Duration = Duration::from_secs(2);

async fn run(
    mut events: WatchEvents,
    tx: mpsc::Sender<Bytes>,
    mut framing: Framing,
    timeout: Option<Duration>,
    bookmarks: Option<Duration>,
    mut last_rv: Option<String>,
) {
    let now = tokio::time::Instant::now();
    let deadline = timeout.map(|t| now + t);
    let mut bookmark = tokio::time::interval(bookmarks.unwrap_or(Duration::from_secs(3600)));
    bookmark.tick().await;
    // As kube-apiserver: one more bookmark 2 s before the deadline, so that a client whose
    // watch times out resumes from where it had got to.
    let mut pre_timeout = deadline
        .and_then(|d| d.checked_sub(PRE_TIMEOUT_BOOKMARK))
        .filter(|at| bookmarks.is_some() && *at > now);
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let until_pre_timeout = async {
            match pre_timeout {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let line = tokio::select! {
            ev = events.next() => match ev {
                None => return,
                // The store's progress: what the next bookmark says.
                Some(Ok(ev)) if ev.kind == WatchKind::Bookmark => {
                    last_rv = Some(ev.object.metadata.resource_version.clone());
                    continue;
                }
                Some(Ok(ev)) => {
                    // The starting list's objects carry their own revisions, older than the
                    // list's: no bookmark before the store's first one says where it ends.
                    if last_rv.is_some() {
                        last_rv = Some(ev.object.metadata.resource_version.clone());
                    }
                    if !framing.fields.matches(&ev.object) {
                        continue;
                    }
                    framing.secret_event(ev.kind.name(), &ev.object)
                }
                // A watch that fell behind its reader ends as kube-apiserver ends a watcher
                // that does not keep up: the stream closes, and the client watches again from
                // the last resourceVersion it got.
                Some(Err(StoreError::Backend(crate::backend::BackendError::WatchTooSlow(_)))) => return,
                Some(Err(e)) => {
                    let status = match e {
                        StoreError::Gone(m) => Status::failure(410, "Expired", format!("too old resource version: {m}")),
                        other => Status::of_access(&AccessError::Store(other)),
                    };
                    let _ = tx.send(framing.error_event(&status)).await;
                    return;
                }
            },
            _ = bookmark.tick(), if bookmarks.is_some() && last_rv.is_some() => {
                framing.bookmark(last_rv.as_deref().unwrap_or_default())
            }
            _ = until_pre_timeout => {
                pre_timeout = None;
                match &last_rv {
                    Some(rv) => framing.bookmark(rv),
                    None => continue,
                }
            }
            _ = until_deadline => return,
            _ = tx.closed() => return,
        };
        if tx.send(line).await.is_err() {
            return;
        }
    }
}
