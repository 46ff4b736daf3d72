//! How a keyring takes in documents that others wrote: following a shared document, reloading
//! it (the read made before the writer lock is taken), adopting only a document that moves
//! forward (see `rollback`) and reporting unhealthy while the stored one is refused, and the
//! background reload that a request for an unknown key id waits for, briefly.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::rollback::{self, Mark};
use super::{
    document, storage, Keyring, KeyringError, Writer, DOC_INVALID, DOC_OK, DOC_ROLLED_BACK,
    MISS_RELOAD_INTERVAL_MS, REQUEST_IO_WAIT,
};
use crate::backend::Revision;

impl Keyring {
    /// Starts following the document if others may change it (see `storage`).
    pub(super) fn follow(&self) {
        let known = Arc::downgrade(&self.inner);
        let target = known.clone();
        let guard = self.inner.store.follow(
            // A followed keyring was saved or loaded, so it holds a revision.
            move || known.upgrade().and_then(|inner| inner.store.revision()),
            move || {
                let target = target.clone();
                async move {
                    let Some(inner) = target.upgrade() else {
                        return;
                    };
                    if let Err(e) = (Keyring { inner }).refresh().await {
                        tracing::warn!(error = %e, "cannot reload the shared keyring");
                    }
                }
            },
        );
        let _ = self.inner.follow.set(guard);
    }

    /// Reloads the keyring if another writer (a replica sharing it) changed its document. Only a
    /// read when nothing changed. The read is made before taking the writer lock, which is held
    /// only to check and adopt what was read.
    pub async fn refresh(&self) -> Result<(), KeyringError> {
        let loaded = self.load().await?;
        let mut w = self.inner.writer.lock().await;
        self.adopt(&mut w, loaded).await
    }

    /// Replaces the held document with the stored one, if it changed (see [`Keyring::adopt`]).
    pub(super) async fn reload_locked(&self, w: &mut Writer) -> Result<(), KeyringError> {
        let loaded = self.load().await?;
        self.adopt(w, loaded).await
    }

    async fn load(&self) -> Result<(Vec<u8>, Revision), KeyringError> {
        let store = &self.inner.store;
        store
            .load()
            .await?
            .ok_or_else(|| KeyringError::NotFound(store.location().to_owned()))
    }

    /// Adopts a document read from the store at `revision`, if it is newer than the one held. It
    /// must pass the MAC, belong to the same keyring and move forward from the one held (see
    /// `rollback`); a refused document makes the keyring report unhealthy until a good one is
    /// read, and the keyring keeps serving the keys it holds.
    async fn adopt(
        &self,
        w: &mut Writer,
        (stored, revision): (Vec<u8>, Revision),
    ) -> Result<(), KeyringError> {
        let store = &self.inner.store;
        match store.revision() {
            Some(held) if held == revision => {
                store.confirm();
                self.inner.doc_problem.store(DOC_OK, Ordering::Release);
                return Ok(());
            }
            // Read before a change this process already holds.
            Some(held) if revision < held => return Ok(()),
            _ => {}
        }
        let doc = match document::verify(&stored, &w.keys.mac_key, &self.inner.keyring_id) {
            Ok(doc) => doc,
            Err(KeyringError::Unseal) if self.resealed(&stored, w) => {
                self.inner.resealed_elsewhere.store(true, Ordering::Release);
                tracing::error!("{}", KeyringError::Resealed);
                return Err(KeyringError::Resealed);
            }
            Err(e) => return Err(self.refuse(w, revision, DOC_INVALID, e)),
        };
        let mark = Mark::of(&doc, &stored);
        if let Err(reason) = rollback::check_forward(&w.mark, &mark) {
            let e = rollback::refused(store.location(), reason);
            return Err(self.refuse(w, revision, DOC_ROLLED_BACK, e));
        }
        let mut counters = std::mem::take(&mut w.counters);
        let built = document::add_counters(&doc, &mut counters)
            .and_then(|()| self.build_snapshot(&doc, &w.keys.seal_key(&doc), &counters));
        w.counters = counters;
        let snapshot = match built {
            Ok(snapshot) => snapshot,
            Err(e) => return Err(self.refuse(w, revision, DOC_INVALID, e)),
        };
        let before = self.inner.snapshot.load().primary.key_id.clone();
        w.doc = doc;
        w.refused = None;
        store.set_revision(revision);
        self.inner.snapshot.store(Arc::new(snapshot));
        self.keep_mark(w, mark).await;
        store.confirm();
        self.inner.doc_problem.store(DOC_OK, Ordering::Release);
        let after = self.inner.snapshot.load().primary.key_id.clone();
        if before != after {
            tracing::info!(key_id_hash = %crate::crypto::key_id_hash(&after), previous_key_id_hash = %crate::crypto::key_id_hash(&before), "primary key changed by another replica");
        }
        Ok(())
    }

    /// Records that the document at `revision` was refused (`problem`), logging it once.
    fn refuse(
        &self,
        w: &mut Writer,
        revision: Revision,
        problem: u8,
        e: KeyringError,
    ) -> KeyringError {
        self.inner.doc_problem.store(problem, Ordering::Release);
        if w.refused != Some(revision) {
            w.refused = Some(revision);
            tracing::error!(error = %e, revision = revision.get(), "refusing the stored keyring document; reporting unhealthy");
        }
        e
    }

    /// Holds `mark` as the newest document accepted and, for a replica with a state directory,
    /// stores it durably. A mark that cannot be stored is logged: the document is in use
    /// already.
    pub(super) async fn keep_mark(&self, w: &mut Writer, mark: Mark) {
        if let Some(file) = self.inner.store.mark_file().cloned() {
            let copy = mark.clone();
            let location = file.path().display().to_string();
            if let Err(e) = storage::blocking(&location, move || file.store(&copy)).await {
                tracing::error!(error = %e, "cannot store the keyring's mark");
            }
        }
        w.mark = mark;
    }

    /// Whether `stored`, which the held MAC key did not open, is this keyring under another seal
    /// (re-sealed by another process) rather than a modified document.
    fn resealed(&self, stored: &[u8], w: &Writer) -> bool {
        document::peek_doc(stored).is_ok_and(|doc| {
            doc.keyring_id == hex::encode(self.inner.keyring_id)
                && (doc.root_id != w.doc.root_id
                    || serde_json::to_string(&doc.seal).ok()
                        != serde_json::to_string(&w.doc.seal).ok())
        })
    }

    /// A shared keyring may lack a key another replica just created: starts a reload in the
    /// background (one at a time, at most once per [`MISS_RELOAD_INTERVAL_MS`], so that made-up
    /// key ids cannot flood the backend) and waits for the one running, at most
    /// [`REQUEST_IO_WAIT`]. Never takes the writer lock, and never waits on the backend longer.
    pub(super) async fn wait_for_reload(&self) {
        if !self.inner.store.shared_with_others() {
            return;
        }
        let reloaded = self.inner.reloaded.notified();
        tokio::pin!(reloaded);
        reloaded.as_mut().enable();
        if !self.inner.reloading.load(Ordering::Acquire) {
            let now = storage::now_ms();
            let last = self.inner.last_miss_ms.load(Ordering::Acquire);
            if now - last < MISS_RELOAD_INTERVAL_MS
                || self
                    .inner
                    .last_miss_ms
                    .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                || self.inner.reloading.swap(true, Ordering::AcqRel)
            {
                return;
            }
            let k = self.clone();
            tokio::spawn(async move {
                if let Err(e) = k.refresh().await {
                    tracing::warn!(error = %e, "cannot reload the shared keyring for an unknown key id");
                }
                k.inner.reloading.store(false, Ordering::Release);
                k.inner.reloaded.notify_waiters();
            });
        }
        let _ = tokio::time::timeout(REQUEST_IO_WAIT, reloaded).await;
    }
}
