//! Encryption coverage and re-encryption: which provider and key protects every stored object,
//! and rewriting stale ones with the current write provider and key.
//!
//! A rewrite re-encrypts the same plaintext and stores it with compare-and-swap on the
//! object's `mod_revision`: if a user changed the object meanwhile, their write (made with the
//! current provider) wins and the object is simply fresh already. Killed at any point, a rerun
//! finds whatever is still stale and finishes; nothing is ever half-written.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Store, StoreError, RESOURCE, SERVER_KEYS};
use crate::backend::{BackendError, Expect, KeyValue, RangeRequest, Revision, WriteOutcome};

/// How one stored object is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEncryption {
    /// Storage key.
    pub key: String,
    /// Revision of its last change.
    pub mod_revision: Revision,
    /// Provider kind, or empty if it could not be decrypted.
    pub provider: String,
    /// Key name, or `kms-name/key_id`.
    pub key_name: String,
    /// Not written by the current write provider and key.
    pub stale: bool,
    /// Why it could not be decrypted, if it could not.
    pub error: Option<String>,
}

/// Objects per provider and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// Objects examined.
    pub total: u64,
    /// Of which stale.
    pub stale: u64,
    /// Of which could not be decrypted.
    pub undecryptable: u64,
    /// (provider, key) → (objects, stale).
    pub by_key: BTreeMap<(String, String), (u64, u64)>,
    /// kms v2 key_ids that still protect data.
    pub kms_key_ids: Vec<String>,
    /// The store revision scanned.
    pub revision: Revision,
    /// Stale and undecryptable objects (all objects when asked for).
    pub objects: Vec<ObjectEncryption>,
}

/// The slowest migration rate asked for (rewrites per second; 0 is unlimited).
pub const MIN_RATE: f64 = 0.001;

/// Progress of a migration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateProgress {
    /// Objects found when the migration started.
    pub total: u64,
    /// Objects examined so far.
    pub done: u64,
    /// Stale objects rewritten with the current provider and key.
    pub rewritten: u64,
    /// Objects that changed concurrently (already fresh).
    pub conflicts: u64,
    /// Objects that could not be decrypted (left alone).
    pub failed: u64,
    /// Last key examined.
    pub last_key: String,
}

/// The migration running now, or the last one that finished (dry runs are not counted), as
/// [`Store::migration`] reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationStatus {
    /// A migration is running.
    pub running: bool,
    /// Migrations that finished since the store started.
    pub finished: u64,
    /// Migrations that failed since the store started.
    pub failed: u64,
    /// Progress of the running migration, or of the last one.
    pub progress: MigrateProgress,
}

/// A recorded migration in progress; dropped before it ends (the caller went away), it is
/// reported as failed and no longer running.
struct Running<'a>(&'a Store);

impl Running<'_> {
    /// The migration ended and its outcome is recorded by the caller: nothing to do on drop.
    fn ended(self) {
        std::mem::forget(self);
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut m = self.0.lock_migration();
        m.running = false;
        m.failed += 1;
    }
}

/// Options of [`Store::migrate`].
#[derive(Debug, Clone, Copy)]
pub struct MigrateOptions {
    /// Report what would change; write nothing.
    pub dry_run: bool,
    /// Keys read per page.
    pub batch: usize,
    /// At most this many rewrites per second (0 = unlimited).
    pub rate: f64,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            batch: 256,
            rate: 0.0,
        }
    }
}

/// Reads every object the encryption chain for Secrets sealed (the server's keys, then every
/// Secret) page by page, all pages at one revision.
struct Pager {
    start: Vec<u8>,
    end: Vec<u8>,
    /// The ranges still to read after this one (`start`, `end`).
    next: Vec<(Vec<u8>, Vec<u8>)>,
    revision: Option<Revision>,
    batch: usize,
    done: bool,
    /// Whether a page whose revision can no longer be read is read at the current one instead
    /// (a migration: its rewrites are conditional, so it needs no single snapshot).
    follows_current: bool,
}

/// `[start, end)` of every key under `prefix`.
fn range_of(prefix: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let end = super::prefix_end(&prefix);
    (prefix, end)
}

impl Store {
    fn resource_prefix(&self) -> Vec<u8> {
        format!("{}/{RESOURCE}/", self.prefix).into_bytes()
    }

    fn server_keys_prefix(&self) -> Vec<u8> {
        format!("{}/{SERVER_KEYS}/", self.prefix).into_bytes()
    }

    fn pager(&self, batch: usize) -> Pager {
        let (start, end) = range_of(self.server_keys_prefix());
        Pager {
            start,
            end,
            next: vec![range_of(self.resource_prefix())],
            revision: None,
            batch: batch.max(1),
            done: false,
            follows_current: false,
        }
    }

    async fn next_page(&self, p: &mut Pager) -> Result<Option<Vec<KeyValue>>, StoreError> {
        if p.done {
            return Ok(None);
        }
        Ok(Some(self.read_page(p).await?.0))
    }

    /// Reads the pager's next page, even when it is done (an empty page then), and the
    /// revision every page is read at (fixed by the first read).
    async fn read_page(&self, p: &mut Pager) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let request = |revision| RangeRequest {
            start: p.start.clone(),
            end: Some(p.end.clone()),
            limit: p.batch,
            revision,
        };
        let resp = match self.backend.range(request(p.revision)).await {
            // The first page's revision left what the store keeps (on the embedded store, a
            // key written more than --history times since): the keys not yet visited are read
            // as they are now, every one of them still seen once.
            Err(BackendError::Compacted { .. }) if p.follows_current && p.revision.is_some() => {
                tracing::info!("the migration's list revision is no longer readable; reading the rest at the current revision");
                self.backend.range(request(None)).await?
            }
            resp => resp?,
        };
        p.revision = Some(resp.revision);
        match resp.kvs.last() {
            Some(kv) if resp.more => {
                let mut k = kv.key.clone();
                k.push(0);
                p.start = k;
            }
            _ => match p.next.pop() {
                Some((start, end)) => (p.start, p.end) = (start, end),
                None => p.done = true,
            },
        }
        Ok((resp.kvs, resp.revision))
    }

    /// Decrypts the object stored at `key` and, for a Secret, checks that it decodes: a value
    /// that decrypts to something else (foreign or damaged data, such as an aescbc value whose
    /// bytes were changed: that mode has no integrity check) is reported, and never
    /// re-encrypted as if it were sound.
    /// `secrets` is [`Store::resource_prefix`].
    async fn read_whole(
        t: &crate::encryption::Transformer,
        secrets: &[u8],
        key: &str,
        kv: &KeyValue,
    ) -> Result<(zeroize::Zeroizing<Vec<u8>>, crate::encryption::ReadInfo), StoreError> {
        let (plain, info) = t.from_storage(key, &kv.value).await?;
        if key.as_bytes().starts_with(secrets) {
            super::parse_stored(kv, key, &plain)?;
        }
        Ok((plain, info))
    }

    /// How every stored Secret, and every key the server keeps sealed, is encrypted.
    /// Undecryptable objects are reported, not fatal.
    pub async fn encryption_coverage(&self, all_objects: bool) -> Result<Coverage, StoreError> {
        // Ask the KMS plugins now: a key_id rotated since the last poll makes data stale.
        let encryption = self.encryption.load_full();
        encryption.check_kms_now().await;
        let t = encryption.for_resource(RESOURCE);
        let mut key_ids = std::collections::BTreeSet::new();
        let secrets = self.resource_prefix();
        let mut pager = self.pager(512);
        let (first, revision) = self.read_page(&mut pager).await?;
        let mut cov = Coverage {
            total: 0,
            stale: 0,
            undecryptable: 0,
            by_key: BTreeMap::new(),
            kms_key_ids: Vec::new(),
            revision,
            objects: Vec::new(),
        };
        let mut page = Some(first);
        while let Some(kvs) = page {
            for kv in kvs {
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                cov.total += 1;
                let obj = match Self::read_whole(&t, &secrets, &key, &kv).await {
                    Ok((_, info)) => {
                        if info.provider == "kms-v2" {
                            if let Some((_, id)) = info.key.split_once('/') {
                                key_ids.insert(id.to_owned());
                            }
                        }
                        let e = cov
                            .by_key
                            .entry((info.provider.to_owned(), info.key.clone()))
                            .or_default();
                        e.0 += 1;
                        if info.stale {
                            e.1 += 1;
                            cov.stale += 1;
                        }
                        ObjectEncryption {
                            key,
                            mod_revision: kv.mod_revision,
                            provider: info.provider.to_owned(),
                            key_name: info.key,
                            stale: info.stale,
                            error: None,
                        }
                    }
                    Err(e) => {
                        cov.undecryptable += 1;
                        ObjectEncryption {
                            key,
                            mod_revision: kv.mod_revision,
                            provider: String::new(),
                            key_name: String::new(),
                            stale: true,
                            error: Some(e.to_string()),
                        }
                    }
                };
                if all_objects || obj.stale {
                    cov.objects.push(obj);
                }
            }
            page = self.next_page(&mut pager).await?;
        }
        cov.kms_key_ids = key_ids.into_iter().collect();
        Ok(cov)
    }

    /// The kms v2 key_ids the older versions the store keeps (each Secret's history before its
    /// current version) are encrypted under, with how many versions each: what retiring a key
    /// would make unreadable besides the current objects. Versions that cannot be decrypted
    /// are not counted.
    pub async fn history_key_ids(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let t = self.encryption.load_full().for_resource(RESOURCE);
        let secrets = self.resource_prefix();
        let mut ids = BTreeMap::new();
        let mut pager = self.pager(512);
        let (first, _) = self.read_page(&mut pager).await?;
        let mut page = Some(first);
        while let Some(kvs) = page {
            // Secrets only: the server's own keys are read at their current version alone.
            for kv in kvs.into_iter().filter(|kv| kv.key.starts_with(&secrets)) {
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                let mut cur = kv;
                let mut seen = 1;
                loop {
                    let before = match cur.mod_revision.prev() {
                        Some(b) if cur.version > 1 && seen != self.history_limit => b,
                        _ => break,
                    };
                    cur = match self.backend.get(key.as_bytes(), Some(before)).await {
                        Ok((Some(prev), _)) => prev,
                        Ok((None, _)) | Err(BackendError::Compacted { .. }) => break,
                        Err(e) => return Err(e.into()),
                    };
                    seen += 1;
                    if let Ok((_, info)) = Self::read_whole(&t, &secrets, &key, &cur).await {
                        if info.provider == "kms-v2" {
                            if let Some((_, id)) = info.key.split_once('/') {
                                *ids.entry(id.to_owned()).or_insert(0) += 1;
                            }
                        }
                    }
                }
            }
            page = self.next_page(&mut pager).await?;
        }
        Ok(ids)
    }

    /// Stored Secrets now: every key under the resource prefix, counted by the backend
    /// without reading the values out.
    pub async fn count_objects(&self) -> Result<u64, StoreError> {
        self.count_under(self.resource_prefix()).await
    }

    /// Keys under `prefix` now, counted by the backend.
    async fn count_under(&self, prefix: Vec<u8>) -> Result<u64, StoreError> {
        let (start, end) = range_of(prefix);
        let (count, _) = self
            .backend
            .count(RangeRequest {
                start,
                end: Some(end),
                limit: 0,
                revision: None,
            })
            .await?;
        Ok(count)
    }

    /// The migration running now, or the last one (see [`MigrationStatus`]).
    pub fn migration(&self) -> MigrationStatus {
        self.lock_migration().clone()
    }

    fn lock_migration(&self) -> std::sync::MutexGuard<'_, MigrationStatus> {
        self.migration.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rewrites every stale Secret (and stale server key) with the current write provider and
    /// key, calling `progress` after every batch and at the end. One migration (or dry run) runs at a time: another
    /// call meanwhile is refused with [`StoreError::MigrationRunning`]. A real (not dry) run is
    /// reported by [`Store::migration`] while it runs and after, also when the caller drops it
    /// half way (counted as failed).
    pub async fn migrate(
        &self,
        opts: MigrateOptions,
        mut progress: impl FnMut(&MigrateProgress) + Send,
    ) -> Result<MigrateProgress, StoreError> {
        let _one = self
            .migrating
            .try_lock()
            .map_err(|_| StoreError::MigrationRunning)?;
        let record = !opts.dry_run;
        let mut running = record.then(|| {
            let mut m = self.lock_migration();
            m.running = true;
            m.progress = MigrateProgress::default();
            Running(self)
        });
        let res = self
            .migrate_reporting(opts, |p, to_caller| {
                if record {
                    self.lock_migration().progress = p.clone();
                }
                if to_caller {
                    progress(p)
                }
            })
            .await;
        if let Some(r) = running.take() {
            r.ended();
            let mut m = self.lock_migration();
            m.running = false;
            match &res {
                Ok(p) => {
                    m.finished += 1;
                    m.progress = p.clone();
                }
                Err(_) => m.failed += 1,
            }
        }
        if record {
            // Every page the migration read and rewrote is freed now: hand the pages the
            // allocator keeps back to the system (see `crate::memory`).
            let _ = tokio::task::spawn_blocking(crate::memory::release_freed).await;
        }
        res
    }

    /// [`Store::migrate`]'s work; `progress(p, to_caller)` after counting (not for the caller)
    /// and after every batch.
    async fn migrate_reporting(
        &self,
        opts: MigrateOptions,
        mut progress: impl FnMut(&MigrateProgress, bool) + Send,
    ) -> Result<MigrateProgress, StoreError> {
        // Rewrite under the plugin's current key_id, not the one seen at the last poll.
        let encryption = self.encryption.load_full();
        encryption.check_kms_now().await;
        let t = encryption.for_resource(RESOURCE);
        let mut p = MigrateProgress {
            total: self.count_objects().await?
                + self.count_under(self.server_keys_prefix()).await?,
            ..MigrateProgress::default()
        };
        progress(&p, false);
        // The callers refuse rates below MIN_RATE; a pause past an hour is an hour anyway.
        let pace = (opts.rate > 0.0).then(|| {
            Duration::try_from_secs_f64(1.0 / opts.rate)
                .unwrap_or(Duration::MAX)
                .min(Duration::from_secs(3600))
        });
        let secrets = self.resource_prefix();
        let mut pager = self.pager(opts.batch);
        pager.follows_current = true;
        // Without a rate limit, a page's rewrites go to the backend all at once, so that its
        // writer commits them as one batch (one log append and one sync for the page), and the
        // next page is read and re-encrypted while they are made durable. At most one page is
        // in flight, so memory stays bounded by two pages whatever the store holds.
        let mut in_flight: Option<(tokio::task::JoinSet<WriteResult>, PageSeen)> = None;
        while let Some(page) = self.next_page(&mut pager).await? {
            let mut seen = PageSeen::default();
            let mut writes = Vec::with_capacity(if opts.dry_run { 0 } else { page.len() });
            for kv in page {
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                seen.done += 1;
                match Self::read_whole(&t, &secrets, &key, &kv).await {
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "cannot decrypt; left as it is");
                        seen.failed += 1;
                    }
                    Ok((_, info)) if !info.stale => {}
                    Ok(_) if opts.dry_run => seen.rewritten += 1,
                    Ok((plain, _)) => {
                        let value = t.to_storage(&key, &plain).await?;
                        writes.push((kv.key, value, kv.mod_revision));
                    }
                }
                seen.last_key = key;
            }
            if let Some(d) = pace {
                for (key, value, rev) in writes {
                    let outcome = self
                        .backend
                        .put(&key, value, Expect::ModRevision(rev))
                        .await?;
                    count_rewrite(&mut p, outcome);
                    tokio::time::sleep(d).await;
                }
                seen.add_to(&mut p);
                progress(&p, true);
                continue;
            }
            // A page is reported once its rewrites are durable, as it was examined.
            if let Some((set, earlier)) = in_flight.take() {
                drain_rewrites(set, &mut p).await?;
                earlier.add_to(&mut p);
                progress(&p, true);
            }
            let mut set = tokio::task::JoinSet::new();
            for (key, value, rev) in writes {
                let backend = self.backend.clone();
                set.spawn(async move { backend.put(&key, value, Expect::ModRevision(rev)).await });
            }
            in_flight = Some((set, seen));
        }
        if let Some((set, last)) = in_flight.take() {
            drain_rewrites(set, &mut p).await?;
            last.add_to(&mut p);
            progress(&p, true);
        }
        Ok(p)
    }
}

/// Owns the automatic-migration task; dropping it stops the task.
#[derive(Debug)]
pub struct AutoMigrateGuard(tokio::task::JoinHandle<()>);

impl Drop for AutoMigrateGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What examining one page found, added to the progress once its rewrites are done.
#[derive(Default)]
struct PageSeen {
    done: u64,
    failed: u64,
    /// Stale objects counted as rewritten by a dry run.
    rewritten: u64,
    last_key: String,
}

impl PageSeen {
    fn add_to(self, p: &mut MigrateProgress) {
        p.done += self.done;
        p.failed += self.failed;
        p.rewritten += self.rewritten;
        if !self.last_key.is_empty() {
            p.last_key = self.last_key;
        }
    }
}

/// The outcome of one rewrite's conditional put.
type WriteResult = Result<WriteOutcome, crate::backend::BackendError>;

/// Counts a rewrite's outcome: applied, or changed (or deleted) concurrently.
fn count_rewrite(p: &mut MigrateProgress, outcome: WriteOutcome) {
    match outcome {
        WriteOutcome::Applied { .. } => p.rewritten += 1,
        WriteOutcome::Conflict { .. } | WriteOutcome::NotFound => p.conflicts += 1,
    }
}

/// Waits for every rewrite of a page and counts them; the first failure ends the migration.
async fn drain_rewrites(
    mut set: tokio::task::JoinSet<WriteResult>,
    p: &mut MigrateProgress,
) -> Result<(), StoreError> {
    while let Some(res) = set.join_next().await {
        let outcome = res.map_err(|e| {
            StoreError::Backend(crate::backend::BackendError::Io(format!(
                "rewrite task failed: {e}"
            )))
        })??;
        count_rewrite(p, outcome);
    }
    Ok(())
}

/// The default settle time before an automatic migration: the Kubernetes KMS docs recommend
/// migrating `3 + N + M` minutes after a KEK rotation (3 minutes for every apiserver's write
/// state to expire, N for the plugins to pick the key up, M ≥ 5 as a buffer).
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(10 * 60);

impl Store {
    /// What new writes use: provider, key and (kms v2) the plugin's current key_id.
    fn write_identity(&self) -> (String, String, Option<String>) {
        let enc = self.encryption.load_full();
        let t = enc.for_resource(RESOURCE);
        let (p, k) = t.write_provider();
        let key_id = if p == "kms-v2" {
            enc.kms_v2_status()
                .into_iter()
                .find(|s| s.name == k)
                .and_then(|s| s.key_id)
        } else {
            None
        };
        (p.to_owned(), k.to_owned(), key_id)
    }

    /// Migrates stale data on its own: at start, and whenever the write provider, key or kms
    /// key_id changes, it waits `settle` (checking every `poll`) and then runs
    /// [`Store::migrate`]. A change during the wait restarts the wait.
    pub fn spawn_auto_migrate(
        self: &std::sync::Arc<Self>,
        poll: Duration,
        settle: Duration,
    ) -> AutoMigrateGuard {
        let store = self.clone();
        AutoMigrateGuard(tokio::spawn(async move {
            let mut last = store.write_identity();
            let mut since = tokio::time::Instant::now();
            let mut pending = true;
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = store.write_identity();
                if now != last {
                    tracing::info!(provider = %now.0, key = %now.1, "write key changed; migrating after the settle time");
                    last = now;
                    since = tokio::time::Instant::now();
                    pending = true;
                }
                if pending && since.elapsed() >= settle {
                    match store.migrate(MigrateOptions::default(), |_| {}).await {
                        Ok(p) => {
                            tracing::info!(
                                rewritten = p.rewritten,
                                total = p.total,
                                conflicts = p.conflicts,
                                undecryptable = p.failed,
                                "automatic migration finished"
                            );
                            pending = false;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "automatic migration failed; retrying after the settle time");
                            since = tokio::time::Instant::now();
                        }
                    }
                }
            }
        }))
    }
}
