//! [`Revision`]: a store revision, which starts at 1 and only grows, so a value below 1 is
//! refused where it enters (a gRPC request, a CLI flag, an etcd response, stored bytes).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};

/// A store revision: at least 1 (a new store is at revision 1, as etcd is).
///
/// Built with [`Revision::new`] or `TryFrom<i64>`; [`Revision::get`] gives the number back for
/// the wire (etcd and `keyward.v1` carry revisions as `int64`). Serializes as a plain integer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Revision(i64);

/// A number that is not a revision (below 1), or text that is not a number from 1 to `i64::MAX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a revision: a revision is an integer from 1 to 9223372036854775807")]
pub struct InvalidRevision {
    /// What was given.
    pub value: String,
}

impl Revision {
    /// The revision of a new, empty store.
    pub const FIRST: Revision = Revision(1);
    /// The largest revision.
    pub const MAX: Revision = Revision(i64::MAX);

    /// `r` as a revision, if it is at least 1.
    pub const fn new(r: i64) -> Option<Revision> {
        if r >= 1 {
            Some(Revision(r))
        } else {
            None
        }
    }

    /// The number (at least 1).
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The revision after this one (`None` past [`Revision::MAX`]): what the writer gives the
    /// next change, and where a watch after this revision starts.
    pub fn next(self) -> Option<Revision> {
        self.0.checked_add(1).map(Revision)
    }

    /// The revision before this one (`None` before [`Revision::FIRST`]).
    pub fn prev(self) -> Option<Revision> {
        Revision::new(self.0 - 1)
    }

    /// Big-endian bytes, so that encoded revisions sort numerically.
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The revision encoded by [`Revision::to_be_bytes`] (`None` for bytes of a number below 1).
    pub fn from_be_bytes(bytes: [u8; 8]) -> Option<Revision> {
        Revision::new(i64::from_be_bytes(bytes))
    }
}

impl TryFrom<i64> for Revision {
    type Error = InvalidRevision;

    fn try_from(r: i64) -> Result<Self, Self::Error> {
        Revision::new(r).ok_or_else(|| InvalidRevision {
            value: r.to_string(),
        })
    }
}

impl From<Revision> for i64 {
    fn from(r: Revision) -> i64 {
        r.0
    }
}

impl FromStr for Revision {
    type Err = InvalidRevision;

    /// A decimal of at least 1 (no sign, no spaces).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidRevision {
            value: s.to_owned(),
        };
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(invalid());
        }
        s.parse::<i64>()
            .ok()
            .and_then(Revision::new)
            .ok_or_else(invalid)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A [`Revision`] shared between threads (a backend's current or compacted revision).
#[derive(Debug)]
pub(crate) struct AtomicRevision(AtomicI64);

impl AtomicRevision {
    /// Holding `r`.
    pub(crate) fn new(r: Revision) -> AtomicRevision {
        AtomicRevision(AtomicI64::new(r.0))
    }

    /// The revision held.
    pub(crate) fn load(&self) -> Revision {
        // Only revisions are ever stored.
        Revision(self.0.load(Ordering::Acquire))
    }

    /// Replaces the revision held.
    pub(crate) fn store(&self, r: Revision) {
        self.0.store(r.0, Ordering::Release);
    }

    /// Raises the revision held to `r`, if `r` is larger.
    pub(crate) fn fetch_max(&self, r: Revision) {
        self.0.fetch_max(r.0, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numbers_from_one_are_revisions() {
        assert_eq!(Revision::new(1), Some(Revision::FIRST));
        assert_eq!(Revision::new(i64::MAX), Some(Revision::MAX));
        for bad in [0, -1, i64::MIN] {
            assert_eq!(Revision::new(bad), None, "{bad}");
            assert_eq!(
                Revision::try_from(bad).unwrap_err().to_string(),
                format!("\"{bad}\" is not a revision: a revision is an integer from 1 to 9223372036854775807")
            );
        }
        assert_eq!("42".parse::<Revision>().unwrap().get(), 42);
        for bad in ["", "0", "-1", "+1", " 1", "1e3", "9223372036854775808", "x"] {
            assert!(bad.parse::<Revision>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn next_prev_bytes_and_serde() {
        let r = Revision::new(5).unwrap();
        assert_eq!(r.next(), Revision::new(6));
        assert_eq!(r.prev(), Revision::new(4));
        assert_eq!(Revision::FIRST.prev(), None);
        assert_eq!(Revision::MAX.next(), None);
        assert_eq!(Revision::from_be_bytes(r.to_be_bytes()), Some(r));
        assert_eq!(Revision::from_be_bytes([0; 8]), None);
        assert!(Revision::FIRST.to_be_bytes() < Revision::new(256).unwrap().to_be_bytes());
        assert_eq!(serde_json::to_string(&r).unwrap(), "5");
        assert_eq!(serde_json::from_str::<Revision>("5").unwrap(), r);
        assert!(serde_json::from_str::<Revision>("0").is_err());
        assert_eq!(r.to_string(), "5");
    }

    #[test]
    fn atomic_revision_only_grows_with_fetch_max() {
        let a = AtomicRevision::new(Revision::new(3).unwrap());
        a.fetch_max(Revision::FIRST);
        assert_eq!(a.load().get(), 3);
        a.fetch_max(Revision::new(7).unwrap());
        assert_eq!(a.load().get(), 7);
        a.store(Revision::FIRST);
        assert_eq!(a.load(), Revision::FIRST);
    }
}
