//! Handing memory freed after bulk work back to the system. An allocator keeps some of what was
//! freed for reuse, so after a migration rewrote every Secret the server could stay resident at
//! the migration's peak although its live heap is far smaller (measured with 100,000 Secrets and
//! glibc's malloc: 300.6 MiB resident after the migration without a release, 153.3 MiB with
//! `malloc_trim`). Asking the allocator to return those pages is a foreign call, and this library
//! has no unsafe code: the `keyward` binary installs the call (mimalloc's `mi_collect`) with
//! [`set_release`], and the library calls [`release_freed`] after bulk work. Without it (other
//! programs linking the library, tests) nothing happens.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn() -> bool> = OnceLock::new();

/// Installs `release`, which asks the allocator to return freed memory and says whether it
/// did. Only the first call installs anything; it returns whether this one did.
pub fn set_release(release: fn() -> bool) -> bool {
    RELEASE.set(release).is_ok()
}

/// Asks the allocator to return the memory it holds free, if a release was installed; whether
/// anything was returned. It may walk the whole heap: call it after bulk work, not per request.
pub fn release_freed() -> bool {
    RELEASE.get().is_some_and(|release| release())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn counting() -> bool {
        CALLS.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn other() -> bool {
        false
    }

    #[test]
    fn the_first_installed_release_runs_on_every_call() {
        assert!(set_release(counting));
        assert!(!set_release(other), "only the first call installs");
        assert!(release_freed());
        assert!(release_freed());
        // Other tests in this process may migrate, which releases too.
        assert!(CALLS.load(Ordering::SeqCst) >= 2);
    }
}
