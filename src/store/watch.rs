//! Watch streams: without a revision, the Secrets present when the watch starts as `ADDED`
//! events, a page at a time; then every change after the start, decoded through the
//! decoded-object cache and filtered by the selector.
//!
//! A stream does its work when it is polled, in the task that sends its events on (the gRPC
//! response, the Kubernetes API's writer), with no task or channel of its own between the
//! backend and its reader. Only what is next is held: one page of the starting list, or one
//! change. An event's object is shared with the cache and with every other watcher of the same
//! change. The stream ends when it is dropped, when the backend ends it, after an error, or at
//! shutdown ([`Store::stop_watches`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{
    field_invalid, ResourceVersion, Scope, Secret, SecretList, Selector, Store, StoreError,
    WatchEvent, WatchEvents, WatchKind, WATCH_LIST_PAGE,
};
use crate::backend::{
    BackendError, Event, EventKind, Revision, WatchProgress, WatchStream as BackendEvents,
};

/// Work a stream waits for: the next page of its starting list, or the decode of one change.
type Step<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// Where a stream is.
enum Phase {
    /// Sending the page of the starting list in hand; then the next page, if any.
    Listing {
        items: std::vec::IntoIter<Arc<Secret>>,
        next_page: Option<String>,
    },
    /// Reading the next page of the starting list.
    Paging(Step<SecretList>),
    /// Following changes.
    Following,
    /// Decoding a change that was not in the decoded-object cache.
    Decoding(Step<Option<WatchEvent>>),
    /// Ended.
    Done,
}

/// How often a watch with bookmarks looks at its backend watch's progress.
const PROGRESS_CHECK: Duration = Duration::from_secs(1);

/// One open watch ([`Store::watch`]).
struct Watch {
    store: Arc<Store>,
    scope: Scope,
    selector: Arc<Selector>,
    events: BackendEvents,
    phase: Phase,
    /// Progress reports, if asked for ([`Store::watch_with_bookmarks`]).
    bookmarks: Option<Bookmarks>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The one name the watch is for, if it is for one ([`Store::watch_named`]).
    only: Option<Arc<str>>,
    /// Counts this watch in [`Store::watchers`] until the stream is dropped.
    _counted: Watcher,
}

/// What a watch with bookmarks needs to send them.
struct Bookmarks {
    /// The revision of the starting list, sent once the list is (`None`: no list).
    listed: Option<Revision>,
    /// The backend watch's progress, if it reports one, and when to look at it next.
    progress: Option<(WatchProgress, tokio::time::Interval)>,
    /// The progress read at the last tick, sent once the backend stream is found empty.
    seen: Option<Revision>,
    /// The newest revision sent (in an event or a bookmark).
    sent: Option<Revision>,
}

impl Bookmarks {
    /// A bookmark at `rev` if it is newer than anything sent.
    fn newer(&mut self, rev: Revision) -> Option<WatchEvent> {
        if self.sent.is_some_and(|sent| sent >= rev) {
            return None;
        }
        self.sent = Some(rev);
        let mut object = Secret::default();
        object.metadata.resource_version = rev.to_string();
        Some(WatchEvent {
            kind: WatchKind::Bookmark,
            object: Arc::new(object),
        })
    }

    /// Notes an event sent.
    fn note(&mut self, ev: &WatchEvent) {
        if let Ok(rev) = ev.object.metadata.resource_version.parse::<i64>() {
            self.sent = self.sent.max(Revision::new(rev));
        }
    }
}

/// One open watch in [`Store::watchers`], from its start until this is dropped.
struct Watcher(Arc<Store>);

impl Watcher {
    fn count(store: Arc<Store>) -> Self {
        store
            .watchers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Watcher(store)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0
            .watchers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Store {
    /// Watches Secrets in `scope` (a namespace, or all) matching `selector`. With a revision
    /// ([`ResourceVersion::At`]), replays every change after it (older than retained history:
    /// [`StoreError::Gone`]); without one (`""` or `"0"`), starts with an ADDED event per
    /// existing Secret.
    pub async fn watch(
        self: &Arc<Self>,
        scope: impl Into<Scope>,
        selector: Selector,
        resource_version: ResourceVersion,
    ) -> Result<WatchEvents, StoreError> {
        self.watch_with(scope.into(), selector, resource_version, false, None)
            .await
    }

    /// [`Store::watch`] as a Kubernetes watch: with [`WatchKind::Bookmark`] events among the
    /// others, one when the starting list has been sent (at the list's revision), and then, at
    /// most every second, one at the revision up to which every change has been looked at
    /// (those the scope or selector leave out too), when it is newer than what was sent and the
    /// backend can tell (the embedded engines; not etcd). A revision the store has not reached
    /// is waited for, as kube-apiserver waits (`Store::watch` refuses it).
    pub async fn watch_with_bookmarks(
        self: &Arc<Self>,
        scope: impl Into<Scope>,
        selector: Selector,
        resource_version: ResourceVersion,
    ) -> Result<WatchEvents, StoreError> {
        self.watch_with(scope.into(), selector, resource_version, true, None)
            .await
    }

    /// [`Store::watch`] (with bookmarks if `bookmarks`, as [`Store::watch_with_bookmarks`]) of
    /// the Secrets named `only` alone, if given (a field selector on `metadata.name`, as a
    /// kubelet watches the Secrets a pod mounts): the others are not read at all, so one that
    /// cannot be read fails no watch but its own, as kube-apiserver reads the one key.
    pub async fn watch_named(
        self: &Arc<Self>,
        scope: impl Into<Scope>,
        selector: Selector,
        resource_version: ResourceVersion,
        bookmarks: bool,
        only: Option<&str>,
    ) -> Result<WatchEvents, StoreError> {
        self.watch_with(
            scope.into(),
            selector,
            resource_version,
            bookmarks,
            only.map(Arc::from),
        )
        .await
    }

    /// A watch; `kubernetes` gives it a Kubernetes watch's bookmarks and its wait for a
    /// revision not reached yet ([`Store::watch_with_bookmarks`]).
    async fn watch_with(
        self: &Arc<Self>,
        scope: Scope,
        selector: Selector,
        resource_version: ResourceVersion,
        kubernetes: bool,
        only: Option<Arc<str>>,
    ) -> Result<WatchEvents, StoreError> {
        let listed = matches!(
            resource_version,
            ResourceVersion::Unset | ResourceVersion::Any
        );
        let (after, phase) = match resource_version {
            // The current Secrets, a page at a time (at one revision, the first page's), so that
            // memory stays bounded by a page however many there are.
            ResourceVersion::Unset | ResourceVersion::Any => {
                let page = whole(
                    self.list_at(&scope, &selector, WATCH_LIST_PAGE, None, None)
                        .await?,
                    only.as_deref(),
                )?;
                let phase = Phase::Listing {
                    items: page.items.into_iter(),
                    next_page: page.continue_token,
                };
                (page.resource_version, phase)
            }
            ResourceVersion::At(rev) => {
                // A Kubernetes watch waits for a revision the store has not reached (its
                // changes come when it does), as kube-apiserver's does.
                let current = self.backend.current_revision().await?;
                if rev > current && !kubernetes {
                    // In the words of a Get at such a revision (a Secret named "" was none).
                    return Err(StoreError::Backend(BackendError::FutureRevision {
                        requested: rev,
                        current,
                    }));
                }
                (rev, Phase::Following)
            }
        };
        let from = after.next().ok_or_else(|| {
            field_invalid(
                "",
                ResourceVersion::FIELD,
                format!("Invalid value: \"{after}\": no revision follows it"),
            )
        })?;
        let prefix = self.namespace_prefix(&scope);
        let (events, progress) = self
            .backend
            .watch_with_progress(prefix.as_bytes(), Some(from))
            .await
            .map_err(|e| match e {
                // Named by the version the caller gave, as kube-apiserver does, and the oldest
                // one a watch may still start from.
                BackendError::Compacted { compacted, .. } => {
                    StoreError::Gone(format!("{after} ({})", compacted.get() - 1))
                }
                other => other.into(),
            })?;
        let bookmarks = kubernetes.then(|| {
            let progress = progress.map(|p| {
                let mut tick = tokio::time::interval_at(
                    tokio::time::Instant::now() + PROGRESS_CHECK,
                    PROGRESS_CHECK,
                );
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                (p, tick)
            });
            Bookmarks {
                listed: listed.then_some(after),
                progress,
                seen: None,
                sent: (!listed).then_some(after),
            }
        });
        Ok(Box::pin(Watch {
            store: self.clone(),
            scope,
            selector: Arc::new(selector),
            events,
            phase,
            bookmarks,
            stop: Box::pin(self.watches.clone().cancelled_owned()),
            only,
            _counted: Watcher::count(self.clone()),
        }))
    }

    /// The event a watch through `selector` sees of the change `ev`, if it sees one, when what
    /// it needs decoded is in the decoded-object cache; `None` if something is not.
    fn watch_event_cached(&self, ev: &Event, selector: &Selector) -> Option<Option<WatchEvent>> {
        let prev = match &ev.prev {
            Some(p) if needs_prev(ev, selector) => Some(self.decoded.get(&p.key, p.mod_revision)?),
            _ => None,
        };
        let cur = match ev.kind {
            EventKind::Put => Some(self.decoded.get_or_in_flight(
                &ev.kv.key,
                &ev.kv.value,
                ev.kv.mod_revision,
            )?),
            EventKind::Delete => None,
        };
        Some(watch_event(ev, selector, prev, cur))
    }

    /// [`Store::watch_event_cached`], decrypting what the cache does not hold.
    async fn watch_event_decoded(
        &self,
        ev: &Event,
        selector: &Selector,
    ) -> Result<Option<WatchEvent>, StoreError> {
        let prev = match &ev.prev {
            Some(p) if needs_prev(ev, selector) => Some(self.decode_cached(p).await?),
            _ => None,
        };
        let cur = match ev.kind {
            EventKind::Put => Some(self.decode_cached(&ev.kv).await?),
            EventKind::Delete => None,
        };
        Ok(watch_event(ev, selector, prev, cur))
    }
}

/// Whether the event of `ev` through `selector` depends on the version it replaced: an update
/// seen through no selector needs only to know that there was one, not what it held, and is
/// not decrypted then.
fn needs_prev(ev: &Event, selector: &Selector) -> bool {
    ev.prev.is_some() && !(ev.kind == EventKind::Put && selector.is_empty())
}

/// The event a watch through `selector` sees of `ev`, given the version it replaced (when
/// [`needs_prev`]) and, for a put, the version it wrote.
fn watch_event(
    ev: &Event,
    selector: &Selector,
    prev: Option<Arc<Secret>>,
    cur: Option<Arc<Secret>>,
) -> Option<WatchEvent> {
    let prev_matches = match &prev {
        Some(p) => selector.matches(&p.metadata.labels),
        None => ev.prev.is_some() && selector.is_empty(),
    };
    let (kind, object) = match ev.kind {
        EventKind::Delete => (
            WatchKind::Deleted,
            with_resource_version(prev.filter(|_| prev_matches)?, ev.kv.mod_revision),
        ),
        EventKind::Put => {
            let cur = cur?;
            match (prev_matches, selector.matches(&cur.metadata.labels)) {
                (false, true) => (WatchKind::Added, cur),
                (true, true) => (WatchKind::Modified, cur),
                // As kube-apiserver's watchers: the version that matched, at the revision of
                // the change that made it stop matching.
                (true, false) => (
                    WatchKind::Deleted,
                    with_resource_version(prev?, ev.kv.mod_revision),
                ),
                (false, false) => return None,
            }
        }
    };
    Some(WatchEvent { kind, object })
}

/// `s` with `resourceVersion` set to `revision` (a copy, if it is shared).
fn with_resource_version(s: Arc<Secret>, revision: Revision) -> Arc<Secret> {
    let mut s = Arc::unwrap_or_clone(s);
    s.metadata.resource_version = revision.to_string();
    Arc::new(s)
}

impl futures_core::Stream for Watch {
    type Item = Result<WatchEvent, StoreError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // At shutdown, stop even if nothing changes.
        if matches!(this.phase, Phase::Done) || this.stop.as_mut().poll(cx).is_ready() {
            this.phase = Phase::Done;
            return Poll::Ready(None);
        }
        loop {
            match &mut this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Listing { items, next_page } => {
                    if let Some(object) = items.next() {
                        return Poll::Ready(Some(Ok(WatchEvent {
                            kind: WatchKind::Added,
                            object,
                        })));
                    }
                    this.phase = match next_page.take() {
                        Some(token) => {
                            let (store, selector) = (this.store.clone(), this.selector.clone());
                            let scope = this.scope.clone();
                            Phase::Paging(Box::pin(async move {
                                store
                                    .list_at(&scope, &selector, WATCH_LIST_PAGE, Some(&token), None)
                                    .await
                            }))
                        }
                        None => Phase::Following,
                    };
                    // The list's end, once its last page is sent.
                    let following = matches!(this.phase, Phase::Following);
                    let listed = this.bookmarks.as_mut().filter(|_| following).and_then(|b| {
                        let rev = b.listed.take()?;
                        b.newer(rev)
                    });
                    if let Some(bookmark) = listed {
                        return Poll::Ready(Some(Ok(bookmark)));
                    }
                }
                Phase::Paging(page) => match page.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(page)) => match whole(page, this.only.as_deref()) {
                        Ok(page) => {
                            this.phase = Phase::Listing {
                                items: page.items.into_iter(),
                                next_page: page.continue_token,
                            }
                        }
                        Err(e) => return this.fail(e),
                    },
                    Poll::Ready(Err(e)) => return this.fail(e),
                },
                Phase::Decoding(step) => match step.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(out)) => {
                        this.phase = Phase::Following;
                        if let Some(ev) = out {
                            return this.send(ev);
                        }
                    }
                    Poll::Ready(Err(e)) => return this.fail(e),
                },
                Phase::Following => {
                    // The progress is read before the stream is found empty: every change
                    // up to it was in the stream by then.
                    if let Some(b) = this.bookmarks.as_mut() {
                        if let Some((progress, tick)) = b.progress.as_mut() {
                            if tick.poll_tick(cx).is_ready() {
                                b.seen = progress.revision();
                            }
                        }
                    }
                    match this.events.as_mut().poll_next(cx) {
                        Poll::Pending => {
                            let progress = this.bookmarks.as_mut().and_then(|b| {
                                let rev = b.seen.take()?;
                                b.newer(rev)
                            });
                            return match progress {
                                Some(bookmark) => Poll::Ready(Some(Ok(bookmark))),
                                None => Poll::Pending,
                            };
                        }
                        Poll::Ready(None) => {
                            this.phase = Phase::Done;
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Some(Err(e))) => return this.fail(e.into()),
                        Poll::Ready(Some(Ok(ev))) => {
                            if this.only.as_deref().is_some_and(|n| !names(&ev.kv.key, n)) {
                                continue;
                            }
                            match this.store.watch_event_cached(&ev, &this.selector) {
                                Some(Some(out)) => return this.send(out),
                                Some(None) => {}
                                None => {
                                    let (store, selector) =
                                        (this.store.clone(), this.selector.clone());
                                    this.phase = Phase::Decoding(Box::pin(async move {
                                        store.watch_event_decoded(&ev, &selector).await
                                    }));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

impl Watch {
    /// Sends `ev`, a change.
    fn send(&mut self, ev: WatchEvent) -> Poll<Option<Result<WatchEvent, StoreError>>> {
        if let Some(b) = self.bookmarks.as_mut() {
            b.note(&ev);
        }
        Poll::Ready(Some(Ok(ev)))
    }

    /// Ends the stream with `e`.
    fn fail(&mut self, e: StoreError) -> Poll<Option<Result<WatchEvent, StoreError>>> {
        self.phase = Phase::Done;
        Poll::Ready(Some(Err(e)))
    }
}

/// A page of a watch's starting list, refused if it met Secrets it cannot read (of the name
/// `only`, if the watch is for one): a watch cannot name them, and leaving them out would tell
/// the client they do not exist.
fn whole(mut page: super::SecretList, only: Option<&str>) -> Result<super::SecretList, StoreError> {
    let mut errors = std::mem::take(&mut page.errors);
    if let Some(name) = only {
        errors.retain(|(key, _)| names(key.as_bytes(), name));
        page.items.retain(|s| s.metadata.name == name);
    }
    match errors.is_empty() {
        true => Ok(page),
        false => Err(StoreError::Unreadable { errors }),
    }
}

/// Whether the storage key `key` is of a Secret named `name` (its last segment).
fn names(key: &[u8], name: &str) -> bool {
    key.rsplit(|&b| b == b'/').next() == Some(name.as_bytes())
}
