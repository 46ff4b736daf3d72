//! Copying a store into a new log-structured one with its revisions and history
//! (`keyward store convert`).
//!
//! What a store can be asked for is what is copied: every key's current version, every change
//! the change log still holds (from the compacted revision on, each with the version before
//! it), and the current and compacted revisions. Reads and watches of the copy at any revision
//! from the compacted one on give what the source gave; `resourceVersion`s, `creationTimestamp`s
//! and encrypted bytes are unchanged, because the values are copied as stored.
//!
//! The copy is written into a sibling directory and renamed into place only once it has been
//! opened and compared with the source, key by key and change by change; a failed or
//! interrupted copy never leaves a store at the destination.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::files::sync_path;
use super::logstore::{Import, LogBackend, LogOptions};
use super::{Backend, BackendError, Event, KeyValue, RangeRequest, Revision, WatchStream};

/// Keys read per range request.
const PAGE: usize = 1000;

/// The length of a key of 0xff bytes that no store holds: the end of every page but the first.
const NO_KEY_LEN: usize = 1 << 16;

/// How long a replaying watch may go without an event before the copy gives up (the source
/// is not written to while it is copied, so its history arrives at once or never).
const EVENT_WAIT: Duration = Duration::from_secs(60);

/// What a copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Converted {
    /// Keys that exist at the current revision.
    pub keys: u64,
    /// Versions written (current ones, the change log's, and the one before each key's
    /// first change in it).
    pub versions: u64,
    /// The store's revision (the copy's next write gets the one after it).
    pub revision: Revision,
    /// The first revision the copy can be read or watched at.
    pub compacted: Revision,
}

/// Copies `source` into a new log-structured store at `dest` (which must not exist), then
/// opens the copy and checks it against the source. Nothing may write to `source` meanwhile
/// (the caller holds its directory's lock).
pub async fn into_log(source: &dyn Backend, dest: &Path) -> Result<Converted, BackendError> {
    if dest.exists() {
        return Err(BackendError::InvalidArgument(format!(
            "{} exists: the copy goes into a new directory",
            dest.display()
        )));
    }
    let partial = partial_dir(dest)?;
    if partial.exists() {
        return Err(BackendError::InvalidArgument(format!(
            "{} exists (left by an interrupted copy?): delete it, then run again",
            partial.display()
        )));
    }
    let result = copy_and_check(source, &partial).await;
    match result {
        Ok(converted) => {
            std::fs::rename(&partial, dest).map_err(|e| {
                BackendError::Io(format!(
                    "cannot rename {} to {}: {e}",
                    partial.display(),
                    dest.display()
                ))
            })?;
            if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_path(parent)?;
            }
            Ok(converted)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

/// `dest` with `.partial` added to its name.
fn partial_dir(dest: &Path) -> Result<PathBuf, BackendError> {
    let name = dest.file_name().ok_or_else(|| {
        BackendError::InvalidArgument(format!("{} does not name a directory", dest.display()))
    })?;
    let mut name = name.to_os_string();
    name.push(".partial");
    Ok(dest.with_file_name(name))
}

async fn copy_and_check(source: &dyn Backend, dir: &Path) -> Result<Converted, BackendError> {
    let through = source.current_revision().await?;
    let compacted = source.compacted_revision().await?;
    let (start, changes) = history(source, compacted, through).await?;
    let mut import = Import::create(dir, through, start)?;
    let mut changed = HashSet::new();
    if let Some(mut changes) = changes {
        for expected in first_change(start).get()..=through.get() {
            let event = next_event(&mut changes, expected, through).await?;
            if changed.insert(event.kv.key.clone()) {
                // The key's first change in the log: the version before it is still readable.
                if let Some(prev) = &event.prev {
                    import.version(prev)?;
                }
            }
            import.version(&event.kv)?;
        }
    }
    for key in &changed {
        if let Some(floor) = read_floor(source, key, first_change(start), through).await? {
            import.floor_at(&floor)?;
        }
    }
    let mut keys = 0;
    let mut pages = Pages::new(through);
    while let Some(page) = pages.next(source).await? {
        for kv in page.iter().filter(|kv| !changed.contains(&kv.key)) {
            import.version(kv)?;
        }
        keys += page.len() as u64;
    }
    pages.check_count(source).await?;
    let versions = import.versions();
    import.finish()?;
    check(source, dir, through, start).await?;
    Ok(Converted {
        keys,
        versions,
        revision: through,
        compacted: start,
    })
}

/// The first revision the change log holds: the compacted revision, but never the store's
/// first (which no change has).
fn first_change(compacted: Revision) -> Revision {
    compacted.max(Revision::new(Revision::FIRST.get() + 1).unwrap_or(Revision::FIRST))
}

/// The compacted revision, and a watch of every key from there on (`None` if no change is
/// retained: nothing changed since). A store may refuse its own compacted revision when it
/// has pruned further (sled's history): the copy then starts where the refusal says.
async fn history(
    source: &dyn Backend,
    compacted: Revision,
    through: Revision,
) -> Result<(Revision, Option<WatchStream>), BackendError> {
    if first_change(compacted) > through {
        return Ok((compacted, None));
    }
    match source.watch(b"", Some(first_change(compacted))).await {
        Ok(stream) => Ok((compacted, Some(stream))),
        Err(BackendError::Compacted { compacted, .. }) if first_change(compacted) <= through => {
            let stream = source.watch(b"", Some(first_change(compacted))).await?;
            Ok((compacted, Some(stream)))
        }
        Err(e) => Err(e),
    }
}

/// The version at `key`'s read floor when the floor is above `first` (reads below it fail
/// with [`BackendError::Compacted`] though the store's compacted revision is lower: the
/// per-key history limit, or a delete compacted away before the key's next version), found by
/// bisecting reads; `None` if `key` reads at `first`.
async fn read_floor(
    source: &dyn Backend,
    key: &[u8],
    first: Revision,
    through: Revision,
) -> Result<Option<KeyValue>, BackendError> {
    let readable = |r: i64| async move {
        let at =
            Revision::new(r).ok_or_else(|| BackendError::Corrupt(format!("no revision {r}")))?;
        match source.get(key, Some(at)).await {
            Ok((kv, _)) => Ok(Some(kv)),
            Err(BackendError::Compacted { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    };
    if readable(first.get()).await?.is_some() {
        return Ok(None);
    }
    // Unreadable at `lo`, readable at `hi` (the current revision always is).
    let (mut lo, mut hi) = (first.get(), through.get());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if readable(mid).await?.is_some() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let floor =
        Revision::new(hi).ok_or_else(|| BackendError::Corrupt(format!("no revision {hi}")))?;
    Ok(match readable(hi).await?.flatten() {
        Some(kv) if kv.mod_revision == floor => Some(kv),
        // A floor is at one of the key's versions; this store's is not, so the copy has none
        // (reads there give the truth rather than Compacted).
        Some(_) => None,
        // The floor is a delete: the key reads as absent from there.
        None => Some(KeyValue {
            key: key.to_vec(),
            value: Vec::new(),
            create_revision: None,
            mod_revision: floor,
            version: 0,
        }),
    })
}

/// The next change of a replaying watch, which must be at revision `expected`.
async fn next_event(
    changes: &mut WatchStream,
    expected: i64,
    through: Revision,
) -> Result<Event, BackendError> {
    let next = tokio::time::timeout(
        EVENT_WAIT,
        std::future::poll_fn(|cx| changes.as_mut().poll_next(cx)),
    )
    .await;
    let event = match next {
        Ok(Some(event)) => event?,
        Ok(None) | Err(_) => {
            return Err(BackendError::Corrupt(format!(
                "the change log ends before revision {expected} (the store is at {through})"
            )))
        }
    };
    let rev = event.kv.mod_revision.get();
    if rev != expected {
        return Err(BackendError::Corrupt(format!(
            "the change log has revision {rev} where revision {expected} was expected"
        )));
    }
    Ok(event)
}

/// Every key at one revision, a page at a time.
struct Pages {
    /// Where the next page starts (`None`: the first page; the whole key space).
    next: Option<Vec<u8>>,
    done: bool,
    revision: Revision,
    /// Keys read so far.
    seen: u64,
}

impl Pages {
    fn new(revision: Revision) -> Pages {
        Pages {
            next: None,
            done: false,
            revision,
            seen: 0,
        }
    }

    async fn next(&mut self, backend: &dyn Backend) -> Result<Option<Vec<KeyValue>>, BackendError> {
        if self.done {
            return Ok(None);
        }
        // A range has no open end: after the first page (the prefix "", every key), pages end
        // before a key longer than any a store keeps; `Pages::check_count` makes sure.
        let (start, end) = match self.next.take() {
            None => (Vec::new(), None),
            Some(after) => (after, Some(vec![0xff; NO_KEY_LEN])),
        };
        let resp = backend
            .range(RangeRequest {
                start,
                end,
                limit: PAGE,
                revision: Some(self.revision),
            })
            .await?;
        self.seen += resp.kvs.len() as u64;
        match resp.kvs.last() {
            Some(last) if resp.more => {
                let mut after = last.key.clone();
                after.push(0);
                self.next = Some(after);
            }
            _ => self.done = true,
        }
        Ok(Some(resp.kvs))
    }

    /// Fails unless the pages held every key `backend` counts at the revision.
    async fn check_count(&self, backend: &dyn Backend) -> Result<(), BackendError> {
        let (count, _) = backend
            .count(RangeRequest {
                revision: Some(self.revision),
                ..RangeRequest::default()
            })
            .await?;
        if count != self.seen {
            return Err(BackendError::Corrupt(format!(
                "read {} keys at revision {}, but the store counts {count}",
                self.seen, self.revision
            )));
        }
        Ok(())
    }
}

/// Opens the copy in `dir` and compares it with `source`: the revisions, every key at
/// `through`, and every change from `start` on with the version before it.
async fn check(
    source: &dyn Backend,
    dir: &Path,
    through: Revision,
    start: Revision,
) -> Result<(), BackendError> {
    let dir = dir.to_path_buf();
    let copy = tokio::task::spawn_blocking(move || LogBackend::open(&dir, LogOptions::default()))
        .await
        .map_err(|e| BackendError::Io(format!("opening the copy failed: {e}")))??;
    let differs = |what: String| BackendError::Corrupt(format!("the copy differs: {what}"));
    let (revision, compacted) = (
        copy.current_revision().await?,
        copy.compacted_revision().await?,
    );
    if revision != through || compacted != start {
        return Err(differs(format!(
            "it is at revision {revision} compacted at {compacted}, the source at {through} compacted at {start}"
        )));
    }
    let (mut mine, mut theirs) = (Pages::new(through), Pages::new(through));
    loop {
        match (mine.next(&copy).await?, theirs.next(source).await?) {
            (None, None) => {
                mine.check_count(&copy).await?;
                break;
            }
            (a, b) if a == b => {}
            (a, b) => {
                let first = |p: Option<Vec<KeyValue>>| {
                    p.and_then(|p| {
                        p.first()
                            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                    })
                };
                return Err(differs(format!(
                    "the keys in the page from {:?} (the source's from {:?})",
                    first(a),
                    first(b)
                )));
            }
        }
    }
    let from = first_change(start);
    if from <= through {
        let mut mine = copy.watch(b"", Some(from)).await?;
        let mut theirs = source.watch(b"", Some(from)).await?;
        for expected in from.get()..=through.get() {
            let a = next_event(&mut mine, expected, through).await?;
            let b = next_event(&mut theirs, expected, through).await?;
            if a != b {
                return Err(differs(format!("the change at revision {expected}")));
            }
        }
    }
    Ok(())
}
