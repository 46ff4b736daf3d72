//! Raw reads: stored keys and values exactly as stored (ciphertext), for audits like
//! `etcdctl get`, limited to the store's own Secrets (`<prefix>/secrets/`) so that a client
//! cannot read the rest of a shared etcd (kube-apiserver's other objects, a shared keyring), and
//! listed in pages of at most [`RAW_LIST_MAX`] keys.

use super::{ContinueToken, Store, StoreError, RESOURCE};
use crate::backend::{prefix_end, KeyValue, RangeRequest, Revision};

/// Most keys one raw list returns; a larger limit, or none (0), is capped to it and the rest
/// is paged with a continue token.
pub const RAW_LIST_MAX: usize = 1000;

/// One page of a raw list.
#[derive(Debug, Clone)]
pub struct RawPage {
    /// The keys and values, in key order.
    pub kvs: Vec<KeyValue>,
    /// The revision the page (and every following page) reflects.
    pub revision: Revision,
    /// Token for the next page, if more keys match.
    pub continue_token: Option<String>,
}

impl Store {
    /// `<prefix>/secrets/`: the keys raw reads may name.
    pub fn raw_scope(&self) -> String {
        format!("{}/{RESOURCE}/", self.prefix)
    }

    fn check_raw_scope(&self, field: &'static str, key: &str) -> Result<(), StoreError> {
        let scope = self.raw_scope();
        if key.starts_with(&scope) {
            Ok(())
        } else {
            Err(StoreError::OutsideStore {
                field,
                key: key.to_owned(),
                scope,
            })
        }
    }

    /// Reads the raw stored bytes of a key under [`raw_scope`](Self::raw_scope), exactly as
    /// stored (for audits); other keys are refused ([`StoreError::OutsideStore`]).
    pub async fn raw_get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.check_raw_scope("key", key)?;
        Ok(self.backend.get(key.as_bytes(), None).await?.0)
    }

    /// Lists raw stored keys with `prefix`, which must lie under [`raw_scope`](Self::raw_scope)
    /// (for audits): at most `limit` keys, capped to [`RAW_LIST_MAX`] (0: the cap), and a
    /// continue token for the next page, read at the same revision.
    pub async fn raw_list(
        &self,
        prefix: &str,
        limit: usize,
        continue_token: Option<&str>,
    ) -> Result<RawPage, StoreError> {
        self.check_raw_scope("prefix", prefix)?;
        let limit = if limit == 0 {
            RAW_LIST_MAX
        } else {
            limit.min(RAW_LIST_MAX)
        };
        // Tokens hold keys relative to the prefix's last `/`, as kube-apiserver's are relative
        // to a directory; a start before the prefix is the prefix.
        let base = &prefix[..prefix.rfind('/').map_or(0, |i| i + 1)];
        let (start, revision) = match continue_token.filter(|t| !t.is_empty()) {
            None => (prefix.as_bytes().to_vec(), None),
            Some(t) => {
                let (start, revision) = ContinueToken::decode(t, base)?;
                (start.max(prefix.as_bytes().to_vec()), revision)
            }
        };
        let resp = self
            .backend
            .range(RangeRequest {
                start,
                end: Some(prefix_end(prefix.as_bytes())),
                limit,
                revision,
            })
            .await?;
        let continue_token = match resp.kvs.last() {
            Some(last) if resp.more => {
                let mut next = last.key.clone();
                next.push(0);
                Some(ContinueToken::encode(&next, base, resp.revision.get()))
            }
            _ => None,
        };
        Ok(RawPage {
            kvs: resp.kvs,
            revision: resp.revision,
            continue_token,
        })
    }
}
