//! The secret store: Kubernetes Secret semantics (validation, `stringData`, `immutable`,
//! `resourceVersion` conflicts, preconditions, history, rollback, watch) on a revisioned
//! [`Backend`], every value encrypted by the configured [`Encryption`] chain.
//!
//! Objects are stored as Kubernetes JSON (`apiVersion: v1`, `kind: Secret`, base64 `data`)
//! under `<prefix>/secrets/<namespace>/<name>`, exactly where kube-apiserver keeps them, and
//! encrypted with that key as associated data. `resourceVersion` is the backend's
//! `mod_revision`; it is never stored.

mod cache;
mod error;
pub mod fields;
mod keys;
pub mod managed;
pub mod migrate;
pub mod model;
mod raw;
pub mod selector;
pub mod stored;
mod version;
mod watch;

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use zeroize::Zeroizing;

use crate::backend::{
    prefix_end, Backend, BackendError, Expect, KeyValue, RangeRequest, Revision, WriteOutcome,
};
use crate::encryption::{Encryption, ReadInfo};
use crate::names::{Namespace, SecretName};
use error::{conflict, field_invalid, not_found};
pub use error::{Preconditions, StoreError, MODIFIED};
pub use fields::FieldSelector;
use keys::{rooted_clean, ContinueToken};
pub use model::{FieldError, Secret, SecretId};
pub use raw::{RawPage, RAW_LIST_MAX};
pub use selector::Selector;
pub use version::ResourceVersion;

/// Where a list or watch looks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// Every namespace.
    #[default]
    All,
    /// One namespace.
    In(Namespace),
    /// A namespace name that is not valid, as a URL gave it. Nothing is stored under it, so a
    /// list finds nothing and a watch sees nothing: kube-apiserver checks a namespace's name
    /// only when it stores an object, and answers a list there with an empty list.
    Unchecked(String),
}

impl Scope {
    /// The one namespace `namespace` as a URL names it, valid or not ("" included: no
    /// Secret is stored under it).
    pub fn named(namespace: &str) -> Scope {
        Namespace::try_from(namespace)
            .map_or_else(|_| Scope::Unchecked(namespace.to_owned()), Scope::In)
    }

    /// The namespace as given ("" for every namespace).
    pub fn as_str(&self) -> &str {
        match self {
            Scope::All => "",
            Scope::In(ns) => ns.as_str(),
            Scope::Unchecked(ns) => ns,
        }
    }
}

impl From<Option<&Namespace>> for Scope {
    fn from(namespace: Option<&Namespace>) -> Scope {
        namespace.map_or(Scope::All, |ns| Scope::In(ns.clone()))
    }
}

impl From<&Namespace> for Scope {
    fn from(namespace: &Namespace) -> Scope {
        Scope::In(namespace.clone())
    }
}

/// Secrets per page of the list a watch without a revision starts with.
const WATCH_LIST_PAGE: usize = 100;

/// The field manager of writes through `keyward.v1` (gRPC and the keyward CLI).
pub const KEYWARD_MANAGER: &str = "keyward";

/// The resource name Secrets are stored under.
pub const RESOURCE: &str = "secrets";

/// Where the server keeps its own keys (`<prefix>/keyward.io/keys/<name>`), sealed by the
/// encryption chain for [`RESOURCE`]: encryption coverage and migration include them.
pub const SERVER_KEYS: &str = "keyward.io/keys";

/// One page of a list.
#[derive(Debug, Clone)]
pub struct SecretList {
    /// The Secrets, in key order (namespace, then name), shared with the store's cache of
    /// decoded objects (copy one with [`Arc::unwrap_or_clone`] to change it).
    pub items: Vec<Arc<Secret>>,
    /// The store revision the list reflects.
    pub resource_version: Revision,
    /// Token for the next page, if any.
    pub continue_token: Option<String>,
    /// How many Secrets the next pages hold, if counted ([`Store::remaining`]).
    pub remaining_item_count: Option<u64>,
    /// Objects in range that could not be decrypted or decoded (storage key, reason); they are
    /// reported here instead of failing the whole list.
    pub errors: Vec<(String, String)>,
}

/// Kind of a watch event, as Kubernetes names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    /// Created, or started matching the selector.
    Added,
    /// Changed.
    Modified,
    /// Deleted, or stopped matching the selector.
    Deleted,
    /// Progress, from a watch that asked for it ([`Store::watch_with_bookmarks`]): every
    /// change up to the object's `resourceVersion` (its only field) has been sent.
    Bookmark,
}

impl WatchKind {
    /// `ADDED`, `MODIFIED`, `DELETED` or `BOOKMARK`.
    pub fn name(self) -> &'static str {
        match self {
            WatchKind::Added => "ADDED",
            WatchKind::Modified => "MODIFIED",
            WatchKind::Deleted => "DELETED",
            WatchKind::Bookmark => "BOOKMARK",
        }
    }
}

/// A watch event.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// What happened.
    pub kind: WatchKind,
    /// The object (for a delete: its last state, with the delete's resourceVersion). Shared
    /// with the store's decoded-object cache and with every other watcher of the same change,
    /// so an event costs no copy of the Secret.
    pub object: Arc<Secret>,
}

/// A stream of watch events.
pub type WatchEvents =
    Pin<Box<dyn futures_core::Stream<Item = Result<WatchEvent, StoreError>> + Send + 'static>>;

/// Kind of a change in a Secret's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// First version.
    Created,
    /// A later version.
    Updated,
}

/// One retained version of a Secret.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// The revision that wrote it.
    pub revision: Revision,
    /// When (RFC 3339), from `managedFields`.
    pub time: String,
    /// Created or updated.
    pub change: ChangeKind,
    /// The Secret as of that revision.
    pub secret: Secret,
}

/// Fills server-generated fields of a Secret being created, as Kubernetes' token controller
/// fills `kubernetes.io/service-account-token` Secrets (`authn::legacy::TokenSecretFiller`).
/// The create answers with the Secret's `data` as it was sent, as upstream's create answers
/// before its controller fills the Secret in a later write: what the hook filled (a token) is
/// read with `get`, so that `create` alone never hands out a credential.
pub trait CreateHook: Send + Sync {
    /// Whether [`CreateHook::on_create`] fills `secret` (a Secret of its type); the store calls
    /// it, and copies the Secret's data as sent for the answer, only then.
    fn applies_to(&self, secret: &Secret) -> bool;

    /// Adjusts `secret` (valid, uid and creation time set) before it is stored; the result is
    /// validated again. Not called for dry runs. The error is why (never a value).
    fn on_create(&self, secret: &mut Secret) -> Result<(), String>;
}

/// The secret store.
pub struct Store {
    backend: Arc<dyn Backend>,
    encryption: ArcSwap<Encryption>,
    prefix: String,
    watches: tokio_util::sync::CancellationToken,
    /// Most versions `history` returns (0: all the backend retains).
    history_limit: usize,
    /// Watch streams open now.
    watchers: std::sync::atomic::AtomicUsize,
    /// The migration running now, or the last one.
    migration: std::sync::Mutex<migrate::MigrationStatus>,
    /// Held by the one migration (or dry run) allowed at a time.
    migrating: tokio::sync::Mutex<()>,
    /// Fills generated fields on create.
    create_hook: Option<Arc<dyn CreateHook>>,
    /// Secrets lists and watches decoded, by key and revision.
    decoded: cache::DecodedCache,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.prefix)
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// [`Store::watch_nothing`]'s stream: pending until the store's watches are stopped.
struct UntilStopped(Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>);

impl futures_core::Stream for UntilStopped {
    type Item = Result<WatchEvent, StoreError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::future::Future::poll(self.0.as_mut(), cx).map(|()| None)
    }
}

impl Store {
    /// A store on `backend`, encrypting with `encryption`'s chain for `secrets`, with keys
    /// under `prefix` (kube-apiserver's `--etcd-prefix`, default `/registry`).
    pub fn new(backend: Arc<dyn Backend>, encryption: Arc<Encryption>, prefix: &str) -> Self {
        let prefix = rooted_clean(prefix);
        Self {
            backend,
            encryption: ArcSwap::new(encryption),
            prefix,
            watches: tokio_util::sync::CancellationToken::new(),
            history_limit: 0,
            watchers: std::sync::atomic::AtomicUsize::new(0),
            migration: std::sync::Mutex::new(migrate::MigrationStatus::default()),
            migrating: tokio::sync::Mutex::new(()),
            create_hook: None,
            decoded: cache::DecodedCache::new(cache::DEFAULT_CACHE_BYTES),
        }
    }

    /// Runs `hook` on every Secret created (not on dry runs).
    pub fn with_create_hook(mut self, hook: Arc<dyn CreateHook>) -> Self {
        self.create_hook = Some(hook);
        self
    }

    /// Caps how many versions [`Store::history`] returns (0: every version the backend still
    /// retains). The sled backend keeps a bounded number per key anyway; etcd keeps every
    /// version until it is compacted, so the cap bounds the reads one call makes.
    pub fn with_history_limit(mut self, limit: usize) -> Self {
        self.history_limit = limit;
        self
    }

    /// Watch streams open now (each [`Store::watch`] until its stream is dropped or ends).
    pub fn watchers(&self) -> usize {
        self.watchers.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends every open watch stream (at shutdown, so that a server can drain).
    pub fn stop_watches(&self) {
        self.watches.cancel();
    }

    /// A watch stream with nothing in it, which ends when [`Store::stop_watches`] ends every
    /// watch: a front end's watch of a collection keyward holds none of.
    pub fn watch_nothing(&self) -> WatchEvents {
        Box::pin(UntilStopped(Box::pin(
            self.watches.clone().cancelled_owned(),
        )))
    }

    /// Replaces the encryption configuration (automatic reload); in-flight calls finish with
    /// the old one.
    pub fn set_encryption(&self, encryption: Arc<Encryption>) {
        self.encryption.store(encryption);
        // What was decrypted under the old configuration is read again under the new one.
        self.decoded.clear();
    }

    /// The encryption in force.
    pub fn encryption(&self) -> Arc<Encryption> {
        self.encryption.load_full()
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The storage key prefix (`/registry` by default; "" for none), without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/secrets/<namespace>/<name>`: the storage key and AES-GCM associated data.
    pub fn storage_key(&self, namespace: &Namespace, name: &SecretName) -> String {
        format!("{}/{RESOURCE}/{namespace}/{name}", self.prefix)
    }

    /// The keys a list or watch of `scope` reads: `<prefix>/secrets/<namespace>/`. Under a
    /// namespace that is not valid no key is stored (a key's namespace is valid, and the `/`
    /// after it falls in the name, which holds none), so its prefix finds nothing.
    fn namespace_prefix(&self, scope: &Scope) -> String {
        match scope {
            Scope::All => format!("{}/{RESOURCE}/", self.prefix),
            ns => format!("{}/{RESOURCE}/{}/", self.prefix, ns.as_str()),
        }
    }

    /// Encrypts `s` as stored: in kube-apiserver's protobuf encoding ([`stored`]), or as JSON
    /// if protobuf would not give it back exactly; without `resourceVersion` (taken out while
    /// it is serialized, so that the Secret is not copied).
    async fn encode(&self, key: &str, s: &mut Secret) -> Result<Vec<u8>, StoreError> {
        let resource_version = std::mem::take(&mut s.metadata.resource_version);
        let plain = match stored::encode_exact(s) {
            Some(pb) => Ok(pb),
            None => serde_json::to_vec(&*s).map(Zeroizing::new),
        };
        s.metadata.resource_version = resource_version;
        let plain = plain.map_err(|e| StoreError::Corrupt {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
        let t = self.encryption.load().for_resource(RESOURCE);
        Ok(t.to_storage(key, &plain).await?)
    }

    /// Puts `value`, the encoding of `s` by an encoding that started at `generation`, under
    /// `key`, and caches `s` as what decoding it would give once it is written, so that
    /// watchers and the next update do not decrypt it again (a Secret whose encoding would not
    /// decode to exactly itself is left out). While the put is in flight, watchers that see it
    /// take `s` too. Returns the outcome and `s`, with its `resourceVersion` if it applied.
    async fn put_cached(
        &self,
        key: &str,
        value: Vec<u8>,
        expect: Expect,
        s: Secret,
        generation: u64,
    ) -> Result<(WriteOutcome, Secret), StoreError> {
        let cacheable = decodes_to_itself(&s);
        let s = Arc::new(s);
        let in_flight = (cacheable && self.watchers() > 0).then(|| {
            self.decoded
                .in_flight(key.as_bytes(), &value, s.clone(), generation)
        });
        let outcome = self.backend.put(key.as_bytes(), value, expect).await?;
        let revision = match outcome {
            WriteOutcome::Applied { revision, .. } => Some(revision),
            _ => None,
        };
        let revision = revision.map(|r| (r, r.to_string()));
        if let Some((revision, rv)) = &revision {
            // Cached before the write in flight is forgotten, so a watcher finds one of them.
            if cacheable && !self.decoded.contains(key.as_bytes(), *revision) {
                let mut cached = Secret::clone(&s);
                cached.metadata.resource_version = rv.clone();
                self.decoded
                    .insert(key.as_bytes(), *revision, generation, Arc::new(cached));
            }
        }
        drop(in_flight);
        let mut s = Arc::try_unwrap(s).unwrap_or_else(|s| Secret::clone(&s));
        if let Some((_, rv)) = revision {
            s.metadata.resource_version = rv;
        }
        Ok((outcome, s))
    }

    /// Decrypts and decodes a stored object; also says how it was read (provider, staleness).
    pub async fn decode(&self, kv: &KeyValue) -> Result<(Secret, ReadInfo), StoreError> {
        let key = String::from_utf8_lossy(&kv.key);
        let t = self.encryption.load().for_resource(RESOURCE);
        let (json, info) = t.from_storage(&key, &kv.value).await?;
        Ok((parse_stored(kv, &key, &json)?, info))
    }

    /// [`Store::decode`] that says only whether the object is stale ([`ReadInfo::stale`]).
    async fn decode_stale(&self, kv: &KeyValue) -> Result<(Secret, bool), StoreError> {
        let key = String::from_utf8_lossy(&kv.key);
        let t = self.encryption.load().for_resource(RESOURCE);
        let read = match t.from_storage_stale(&key, &kv.value).await {
            Ok((json, stale)) => parse_stored(kv, &key, &json).map(|s| (s, stale)),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = &read {
            // Named here, where the key is known (a client is told only that a read failed);
            // at most once a second, as a client may repeat the read at request rate.
            static UNREADABLE: crate::log_throttle::LogThrottle =
                crate::log_throttle::LogThrottle::new();
            if let Some(held_back) = UNREADABLE.admit() {
                tracing::error!(key = %key, revision = %kv.mod_revision, error = %e, held_back, "a stored Secret cannot be read");
            }
        }
        read
    }

    /// [`Store::decode`] for lists and watches, through the decoded-object cache: an object
    /// already decoded at this key and revision is not decrypted again.
    async fn decode_cached(&self, kv: &KeyValue) -> Result<Arc<Secret>, StoreError> {
        if let Some(s) = self
            .decoded
            .get_or_in_flight(&kv.key, &kv.value, kv.mod_revision)
        {
            return Ok(s);
        }
        let generation = self.decoded.generation();
        let s = Arc::new(self.decode_stale(kv).await?.0);
        self.decoded
            .insert(&kv.key, kv.mod_revision, generation, s.clone());
        Ok(s)
    }

    /// Records a write in `managedFields` unless the caller did: a write without them comes
    /// from a client that does not carry Kubernetes metadata (`keyward.v1`), recorded as
    /// manager [`KEYWARD_MANAGER`]; the Kubernetes API always hands them over, recorded by
    /// [`managed::record_update`] or server-side apply under its field manager, and
    /// [`managed::none_owned`] when no manager owns anything (stored as none, as
    /// kube-apiserver stores them).
    fn stamp(old: Option<&Secret>, s: &mut Secret) {
        if managed::is_none_owned(&s.metadata.managed_fields) {
            s.metadata.managed_fields.clear();
        } else if s.metadata.managed_fields.is_empty() {
            managed::record_update(old, s, KEYWARD_MANAGER, &now_rfc3339());
        }
    }

    /// What [`Store::create`] checks before anything else: defaults `s` ([`model::normalize`]),
    /// names it from `metadata.generateName` if it has no name ([`model::generate_name`]),
    /// refuses a set `resourceVersion` and validates it. Callers that must do work before a
    /// create (e.g. create a signing key) call it first, so that a refused create changes nothing.
    pub fn prepare_create(s: &mut Secret) -> Result<SecretId, StoreError> {
        model::normalize(s);
        if s.metadata.name.is_empty() && !s.metadata.generate_name.is_empty() {
            s.metadata.name = model::generate_name(&s.metadata.generate_name);
        }
        let name = s.metadata.name.clone();
        if !s.metadata.resource_version.is_empty() {
            return Err(field_invalid(
                &name,
                "metadata.resourceVersion",
                "Invalid value: resourceVersion should not be set on objects to be created",
            ));
        }
        model::validate(s).map_err(|e| StoreError::invalid(&name, e))
    }

    /// Creates a Secret. With `dry_run`, validates and returns what would be stored. A name
    /// generated from `generateName` that is taken is generated again (up to 8 tries, as
    /// kube-apiserver's `RetryGenerateName`).
    pub async fn create(&self, s: Secret, dry_run: bool) -> Result<Secret, StoreError> {
        let generated = s.metadata.name.is_empty() && !s.metadata.generate_name.is_empty();
        let mut tries = 0;
        loop {
            match self.create_once(s.clone(), dry_run).await {
                Err(StoreError::AlreadyExists { .. }) if generated && tries < 7 => tries += 1,
                other => return other,
            }
        }
    }

    async fn create_once(&self, mut s: Secret, dry_run: bool) -> Result<Secret, StoreError> {
        let id = Self::prepare_create(&mut s)?;
        let name = s.metadata.name.clone();
        // Set by the store only, as kube-apiserver does (a client's value is dropped).
        s.metadata.deletion_timestamp.clear();
        s.metadata.deletion_grace_period_seconds = None;
        s.metadata.uid = uuid::Uuid::new_v4().to_string();
        s.metadata.creation_timestamp = now_rfc3339();
        Self::stamp(None, &mut s);
        let key = self.storage_key(&id.namespace, &id.name);
        if dry_run {
            // As kube-apiserver's dry-run storage: a name taken is AlreadyExists.
            if self.backend.get(key.as_bytes(), None).await?.0.is_some() {
                return Err(StoreError::AlreadyExists {
                    namespace: s.metadata.namespace,
                    name,
                });
            }
            return Ok(s);
        }
        // What the hook fills is not in the answer (see `CreateHook`).
        let mut sent_data = None;
        if let Some(hook) = self.create_hook.as_ref().filter(|h| h.applies_to(&s)) {
            let before = s.data.clone();
            hook.on_create(&mut s)
                .map_err(|reason| StoreError::CreateHook {
                    name: name.clone(),
                    reason,
                })?;
            model::validate(&s).map_err(|e| StoreError::invalid(&name, e))?;
            sent_data = (before != s.data).then_some(before);
        }
        let generation = self.decoded.generation();
        let value = self.encode(&key, &mut s).await?;
        match self
            .put_cached(&key, value, Expect::Absent, s, generation)
            .await?
        {
            (WriteOutcome::Applied { .. }, mut s) => {
                if let Some(data) = sent_data {
                    s.data = data;
                }
                Ok(s)
            }
            (WriteOutcome::Conflict { .. } | WriteOutcome::NotFound, s) => {
                Err(StoreError::AlreadyExists {
                    namespace: s.metadata.namespace,
                    name,
                })
            }
        }
    }

    /// Reads a Secret, optionally as of a past revision.
    pub async fn get(
        &self,
        namespace: &Namespace,
        name: &SecretName,
        revision: Option<Revision>,
    ) -> Result<Secret, StoreError> {
        let key = self.storage_key(namespace, name);
        // A version the decoded-object cache holds (a write, list or watch put it there) is
        // not decrypted again; for the current one, when the backend knows its revision from
        // memory, not even read. A miss decodes without caching: a get of one object after
        // another would only churn the cache (measured: 28 % fewer gets/s with 30,000 keys).
        let mut looked_up = None;
        if revision.is_none() {
            if let Some(Ok(Some(rev))) = self.backend.mod_revision_in_memory(key.as_bytes()) {
                if let Some(s) = self.decoded.get(key.as_bytes(), rev) {
                    return Ok(Secret::clone(&s));
                }
                looked_up = Some(rev);
            }
        }
        let (kv, _) = self.backend.get(key.as_bytes(), revision).await?;
        let kv = kv.ok_or_else(|| not_found(namespace, name))?;
        if looked_up != Some(kv.mod_revision) {
            if let Some(s) = self.decoded.get(&kv.key, kv.mod_revision) {
                return Ok(Secret::clone(&s));
            }
        }
        Ok(self.decode_stale(&kv).await?.0)
    }

    /// Replaces a Secret. With a `resourceVersion`, it must match the stored one (Conflict
    /// otherwise); without, the update applies to whatever is stored. Nothing is written if
    /// nothing changed and the stored value is not stale.
    pub async fn update(&self, mut s: Secret, dry_run: bool) -> Result<Secret, StoreError> {
        model::normalize(&mut s);
        let name = s.metadata.name.clone();
        // `ValidateSecretUpdate` reports the rules of an update (type, immutable) before those
        // of any Secret: the latter wait for the stored version, unless the name is not one
        // that could be stored.
        let checked = model::validate(&s);
        let id = match &checked {
            Ok(id) => id.clone(),
            Err(errs) => SecretId::parse(&s.metadata.namespace, &name)
                .map_err(|_| StoreError::invalid(&name, errs.clone()))?,
        };
        let want_rv = ResourceVersion::try_from(s.metadata.resource_version.as_str())
            .and_then(|rv| rv.exact(ResourceVersion::FIELD))
            .map_err(|e| StoreError::invalid(&name, vec![e]))?;
        let key = self.storage_key(&id.namespace, &id.name);
        loop {
            // The stored version, from the decoded-object cache if a write, list or watch left
            // it there (then, if the backend knows the current revision from memory, its stored
            // value is not even read); whether it is stale is then only worked out if it matters.
            let cached = match self.backend.mod_revision_in_memory(key.as_bytes()) {
                Some(Ok(Some(rev))) => self.decoded.get(key.as_bytes(), rev).map(|old| (rev, old)),
                Some(Ok(None)) => return Err(not_found(&id.namespace, &id.name)),
                Some(Err(e)) => return Err(e.into()),
                None => None,
            };
            // `cur`: the stored key-value, if it was read.
            let (cur_rev, cur, old, stale) = match cached {
                Some((rev, old)) => (rev, None, old, None),
                None => {
                    let (cur, _) = self.backend.get(key.as_bytes(), None).await?;
                    let cur = cur.ok_or_else(|| not_found(&id.namespace, &id.name))?;
                    match self.decoded.get(&cur.key, cur.mod_revision) {
                        Some(old) => (cur.mod_revision, Some(cur), old, None),
                        None => {
                            let (old, stale) = self.decode_stale(&cur).await?;
                            (cur.mod_revision, Some(cur), Arc::new(old), Some(stale))
                        }
                    }
                }
            };
            // The uid first, as kube-apiserver's storage checks it before the update reads the
            // version, in the words of its storage error.
            if !s.metadata.uid.is_empty() && s.metadata.uid != old.metadata.uid {
                return Err(StoreError::Conflict {
                    name,
                    reason: format!(
                        "StorageError: invalid object, Code: 4, Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        s.metadata.uid, old.metadata.uid
                    ),
                });
            }
            if want_rv.is_some_and(|rv| rv != cur_rev) {
                return Err(conflict(&name));
            }
            let mut errs = model::validate_update(&s, &old).err().unwrap_or_default();
            errs.extend(checked.as_ref().err().into_iter().flatten().cloned());
            if !errs.is_empty() {
                return Err(StoreError::invalid(&name, errs));
            }
            let mut next = s.clone();
            next.metadata.uid = old.metadata.uid.clone();
            next.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
            next.metadata.deletion_timestamp = old.metadata.deletion_timestamp.clone();
            next.metadata.deletion_grace_period_seconds =
                old.metadata.deletion_grace_period_seconds;
            // A Kubernetes write always carries managedFields (`none_owned` for none).
            let keyward_v1 = next.metadata.managed_fields.is_empty();
            if keyward_v1 {
                // keyward.v1 carries no ownerReferences, finalizers or generateName: keep them.
                next.metadata.owner_references = old.metadata.owner_references.clone();
                next.metadata.finalizers = old.metadata.finalizers.clone();
                next.metadata.generate_name = old.metadata.generate_name.clone();
            }
            let unchanged = next.data == old.data
                && next.type_ == old.type_
                && next.immutable == old.immutable
                && next.metadata.labels == old.metadata.labels
                && next.metadata.annotations == old.metadata.annotations
                && next.metadata.owner_references == old.metadata.owner_references
                && next.metadata.finalizers == old.metadata.finalizers
                && next.metadata.generate_name == old.metadata.generate_name
                && (keyward_v1
                    || managed::same_but_times(
                        &next.metadata.managed_fields,
                        &old.metadata.managed_fields,
                    )
                    || (managed::is_none_owned(&next.metadata.managed_fields)
                        && old.metadata.managed_fields.is_empty()));
            let deleting = !old.metadata.deletion_timestamp.is_empty();
            if deleting {
                let added: Vec<&String> = next
                    .metadata
                    .finalizers
                    .iter()
                    .filter(|f| !old.metadata.finalizers.contains(f))
                    .collect();
                if !added.is_empty() {
                    let list = added
                        .iter()
                        .map(|f| format!("{f:?}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(StoreError::invalid(
                        &name,
                        vec![FieldError::new(
                            "metadata.finalizers",
                            format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}"),
                        )],
                    ));
                }
            }
            if unchanged {
                let stale = match (stale, cur) {
                    (Some(stale), _) => stale,
                    (None, Some(cur)) => self.decode_stale(&cur).await?.1,
                    (None, None) => match self.backend.get(key.as_bytes(), None).await?.0 {
                        Some(cur) if cur.mod_revision == cur_rev => {
                            self.decode_stale(&cur).await?.1
                        }
                        // Changed since: start again from what is stored now.
                        _ => continue,
                    },
                };
                if !stale {
                    return Ok(Arc::unwrap_or_clone(old));
                }
            }
            Self::stamp(Some(&old), &mut next);
            if dry_run {
                next.metadata.resource_version = old.metadata.resource_version.clone();
                return Ok(next);
            }
            let expect = Expect::ModRevision(cur_rev);
            let outcome = if deleting && next.metadata.finalizers.is_empty() {
                // The last finalizer is gone: the delete that marked it completes now.
                let outcome = self.backend.delete(key.as_bytes(), expect).await?;
                if let WriteOutcome::Applied { revision, .. } = outcome {
                    next.metadata.resource_version = revision.to_string();
                }
                outcome
            } else {
                let generation = self.decoded.generation();
                let value = self.encode(&key, &mut next).await?;
                let (outcome, written) = self
                    .put_cached(&key, value, expect, next, generation)
                    .await?;
                next = written;
                outcome
            };
            match outcome {
                WriteOutcome::Applied { .. } => return Ok(next),
                // Changed or deleted since it was read: read it again, as kube-apiserver's
                // `GuaranteedUpdate` does, so that a precondition checks what is there now: a
                // Secret deleted meanwhile is NotFound, one changed is the precondition's
                // Conflict (above), and without one the update applies to the new version.
                WriteOutcome::Conflict { .. } | WriteOutcome::NotFound => continue,
            }
        }
    }

    /// Deletes a Secret if `pre` holds; returns it as it was. A Secret with finalizers is only
    /// marked (`deletionTimestamp`, grace 0) and returned as marked; the update that removes its
    /// last finalizer deletes it, as kube-apiserver does.
    pub async fn delete(
        &self,
        namespace: &Namespace,
        name: &SecretName,
        pre: &Preconditions,
    ) -> Result<Secret, StoreError> {
        let key = self.storage_key(namespace, name);
        loop {
            let (cur, _) = self.backend.get(key.as_bytes(), None).await?;
            let cur = cur.ok_or_else(|| not_found(namespace, name))?;
            let old = match self.decode_stale(&cur).await {
                Ok((old, _)) => old,
                Err(StoreError::Encryption(e)) if pre.unsafe_ignore_decrypt_errors => {
                    tracing::warn!(key = %key, error = %e, "deleting an object that cannot be decrypted");
                    match self
                        .backend
                        .delete(key.as_bytes(), Expect::ModRevision(cur.mod_revision))
                        .await?
                    {
                        WriteOutcome::Applied { .. } => {
                            let mut gone = Secret::default();
                            gone.metadata.name = name.to_string();
                            gone.metadata.namespace = namespace.to_string();
                            return Ok(gone);
                        }
                        _ => continue,
                    }
                }
                Err(StoreError::Encryption(e)) => {
                    return Err(StoreError::Undecryptable {
                        name: name.to_string(),
                        reason: e.to_string(),
                    })
                }
                Err(e) => return Err(e),
            };
            pre.check(name.as_str(), &old.metadata.uid, cur.mod_revision)?;
            if !old.metadata.finalizers.is_empty() {
                // kube-apiserver's graceful deletion: mark it, and wait for its finalizers to
                // be removed by updates (the last removal deletes it).
                if !old.metadata.deletion_timestamp.is_empty() {
                    return Ok(old);
                }
                let mut marked = old.clone();
                marked.metadata.deletion_timestamp = now_rfc3339();
                marked.metadata.deletion_grace_period_seconds = Some(0);
                let value = self.encode(&key, &mut marked).await?;
                match self
                    .backend
                    .put(key.as_bytes(), value, Expect::ModRevision(cur.mod_revision))
                    .await?
                {
                    WriteOutcome::Applied { revision, .. } => {
                        marked.metadata.resource_version = revision.to_string();
                        return Ok(marked);
                    }
                    WriteOutcome::NotFound => return Err(not_found(namespace, name)),
                    WriteOutcome::Conflict { .. } => continue,
                }
            }
            match self
                .backend
                .delete(key.as_bytes(), Expect::ModRevision(cur.mod_revision))
                .await?
            {
                WriteOutcome::Applied { .. } => return Ok(old),
                WriteOutcome::NotFound => return Err(not_found(namespace, name)),
                WriteOutcome::Conflict { .. } => continue,
            }
        }
    }

    /// Lists Secrets in `scope` (a namespace, or all), filtered by `selector`, at most `limit`
    /// (0 = all) per page. A continue token reads the next page at the same revision.
    pub async fn list(
        &self,
        scope: impl Into<Scope>,
        selector: &Selector,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<SecretList, StoreError> {
        self.list_at(&scope.into(), selector, limit, continue_token, None)
            .await
    }

    /// [`list`](Self::list) as of revision `at` (the current one if `None`; a continue token
    /// carries its own): Gone if it was compacted away, a backend `FutureRevision` error if
    /// the store has not reached it.
    pub async fn list_at(
        &self,
        scope: &Scope,
        selector: &Selector,
        limit: usize,
        continue_token: Option<&str>,
        at: Option<Revision>,
    ) -> Result<SecretList, StoreError> {
        self.list_matching(scope, selector, |_| true, None, limit, continue_token, at)
            .await
    }

    /// [`list_at`](Self::list_at) of the Secrets `keep` keeps too (a field selector): a page
    /// holds `limit` of them (or the last ones), read on past those it drops, as
    /// kube-apiserver's storage fills a page whatever its selectors drop. `name` (a field
    /// selector's `metadata.name`) in one namespace reads that key alone, as kube-apiserver's
    /// registry does (`MatchesSingle`): no other Secret's state, such as versions a past
    /// revision needs that are no longer kept, decides the answer.
    #[allow(clippy::too_many_arguments)] // every option of a list request
    pub async fn list_matching(
        &self,
        scope: &Scope,
        selector: &Selector,
        keep: impl Fn(&Secret) -> bool,
        name: Option<&str>,
        limit: usize,
        continue_token: Option<&str>,
        at: Option<Revision>,
    ) -> Result<SecretList, StoreError> {
        let prefix = self.namespace_prefix(scope);
        let (first, end) = match name.filter(|_| matches!(scope, Scope::In(_))) {
            Some(name) => {
                let key = format!("{prefix}{name}").into_bytes();
                let mut end = key.clone();
                end.push(0);
                (key, end)
            }
            None => (prefix.clone().into_bytes(), prefix_end(prefix.as_bytes())),
        };
        let (mut start, mut revision) = match continue_token {
            None | Some("") => (first.clone(), at),
            Some(t) => ContinueToken::decode(t, &prefix)?,
        };
        start = start.max(first);
        let mut items = Vec::new();
        let mut errors = Vec::new();
        loop {
            let want = if limit == 0 { 0 } else { limit - items.len() };
            let resp = self
                .backend
                .range(RangeRequest {
                    start: start.clone(),
                    end: Some(end.clone()),
                    limit: want,
                    revision,
                })
                .await
                .map_err(|e| match e {
                    // As kube-apiserver's etcd storage: a token to go on at the current revision
                    // from where this one stood.
                    BackendError::Compacted { .. } if continue_token.is_some() => {
                        StoreError::ContinueExpired {
                            continue_token: ContinueToken::encode(&start, &prefix, -1),
                        }
                    }
                    other => other.into(),
                })?;
            revision = Some(resp.revision);
            for kv in &resp.kvs {
                let s = match self.decode_cached(kv).await {
                    Ok(s) => s,
                    Err(e @ (StoreError::Encryption(_) | StoreError::Corrupt { .. })) => {
                        errors.push((String::from_utf8_lossy(&kv.key).into_owned(), e.to_string()));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if selector.matches(&s.metadata.labels) && keep(&s) {
                    items.push(s);
                }
            }
            let next = resp.kvs.last().map(|kv| {
                let mut k = kv.key.clone();
                k.push(0);
                k
            });
            match next {
                Some(k) if resp.more => {
                    start = k;
                    if limit != 0 && items.len() >= limit {
                        let tok = ContinueToken::encode(&start, &prefix, resp.revision.get());
                        return Ok(SecretList {
                            items,
                            resource_version: resp.revision,
                            continue_token: Some(tok),
                            remaining_item_count: None,
                            errors,
                        });
                    }
                }
                _ => {
                    return Ok(SecretList {
                        items,
                        resource_version: resp.revision,
                        continue_token: None,
                        remaining_item_count: None,
                        errors,
                    })
                }
            }
        }
    }

    /// How many Secrets of `scope` the pages after `continue_token` hold (at the token's
    /// revision), as kube-apiserver's `remainingItemCount`: counted in the index, nothing read.
    pub async fn remaining(&self, scope: &Scope, continue_token: &str) -> Result<u64, StoreError> {
        let prefix = self.namespace_prefix(scope);
        let (start, revision) = ContinueToken::decode(continue_token, &prefix)?;
        let (count, _) = self
            .backend
            .count(RangeRequest {
                start,
                end: Some(prefix_end(prefix.as_bytes())),
                limit: 0,
                revision,
            })
            .await?;
        Ok(count)
    }

    /// The retained versions of a Secret, newest first.
    pub async fn history(
        &self,
        namespace: &Namespace,
        name: &SecretName,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let key = self.storage_key(namespace, name);
        let (cur, _) = self.backend.get(key.as_bytes(), None).await?;
        let mut cur = cur.ok_or_else(|| not_found(namespace, name))?;
        let mut out = Vec::new();
        loop {
            let (s, _) = self.decode_stale(&cur).await?;
            out.push(HistoryEntry {
                revision: cur.mod_revision,
                time: s.last_write_time(),
                change: if cur.version == 1 {
                    ChangeKind::Created
                } else {
                    ChangeKind::Updated
                },
                secret: s,
            });
            let before = match cur.mod_revision.prev() {
                Some(before) if cur.version > 1 && out.len() != self.history_limit => before,
                _ => break,
            };
            match self.backend.get(key.as_bytes(), Some(before)).await {
                Ok((Some(prev), _)) => cur = prev,
                Ok((None, _)) | Err(BackendError::Compacted { .. }) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Writes the content (data, labels, annotations) the Secret had at `revision` as a new
    /// revision. Refused for immutable Secrets.
    pub async fn rollback(
        &self,
        namespace: &Namespace,
        name: &SecretName,
        revision: Revision,
    ) -> Result<Secret, StoreError> {
        let key = self.storage_key(namespace, name);
        let (cur, _) = self.backend.get(key.as_bytes(), None).await?;
        let cur = cur.ok_or_else(|| not_found(namespace, name))?;
        let name = name.as_str();
        let (current, _) = self.decode_stale(&cur).await?;
        if current.is_immutable() {
            return Err(field_invalid(
                name,
                "immutable",
                "Forbidden: an immutable Secret cannot be rolled back; delete and recreate it",
            ));
        }
        let created = cur.create_revision.unwrap_or(cur.mod_revision);
        if revision > cur.mod_revision || revision < created {
            return Err(field_invalid(
                name,
                "revision",
                format!(
                    "Invalid value: {revision}: must be a revision of this Secret's history ({created}..={})",
                    cur.mod_revision
                ),
            ));
        }
        let (old, _) = self.backend.get(key.as_bytes(), Some(revision)).await?;
        let old = match old {
            Some(kv) if kv.create_revision == cur.create_revision => kv,
            _ => {
                return Err(field_invalid(
                    name,
                    "revision",
                    format!(
                        "Invalid value: {revision}: this Secret had no version at that revision"
                    ),
                ));
            }
        };
        let (old, _) = self.decode_stale(&old).await?;
        let mut next = current.clone();
        // Recorded as a keyward.v1 write (manager `keyward`).
        next.metadata.managed_fields.clear();
        next.data = old.data;
        next.metadata.labels = old.metadata.labels;
        next.metadata.annotations = old.metadata.annotations;
        next.immutable = old.immutable;
        self.update(next, false).await
    }
}

/// The Secret in the plaintext `plain` read from `kv` (stored at `key`), at `kv`'s revision:
/// kube-apiserver's protobuf encoding ([`stored`]), or JSON as older builds wrote it.
fn parse_stored(kv: &KeyValue, key: &str, plain: &[u8]) -> Result<Secret, StoreError> {
    let mut s = if plain.starts_with(stored::MAGIC) {
        stored::decode(plain).map_err(|reason| StoreError::Corrupt {
            key: key.to_owned(),
            reason,
        })?
    } else {
        // A JSON record may hold times as a client sent them (older builds kept them): read
        // them as kube-apiserver would.
        let mut s: Secret = serde_json::from_slice(plain).map_err(|e| StoreError::Corrupt {
            key: key.to_owned(),
            reason: crate::redact::serde_values(&e.to_string()),
        })?;
        model::normalize_times(&mut s.metadata);
        s
    };
    s.metadata.resource_version = kv.mod_revision.to_string();
    Ok(s)
}

/// Whether decoding `s`'s stored encoding gives `s` back: true of every Secret the store
/// writes (normalized, so without `stringData`) unless a client sent a `managedFields` entry
/// whose `fieldsV1` is not a trie of objects (a `null` would come back as absent). Times need
/// no check: writes keep them as `metav1.Time` does ([`model::normalize`]), which is what
/// reading gives, and a Secret whose times protobuf would not keep is stored as JSON.
fn decodes_to_itself(s: &Secret) -> bool {
    fn trie(v: &serde_json::Value) -> bool {
        v.as_object().is_some_and(|m| m.values().all(trie))
    }
    s.string_data.is_empty()
        && s.metadata
            .managed_fields
            .iter()
            .all(|e| e.fields_v1.as_ref().is_none_or(trie))
}
