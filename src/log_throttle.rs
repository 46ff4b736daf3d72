//! Log lines that a caller, or a failing dependency, could cause at request rate: each kind at
//! most once per interval (a second unless said otherwise), the lines held back counted in the
//! next one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One kind of log line, let through at most once per interval (the lines held back are
/// counted in the next one): a client with a revoked token cannot fill the log.
#[derive(Debug)]
pub struct LogThrottle {
    /// The interval, in milliseconds.
    every_ms: u64,
    /// Milliseconds since [`LogThrottle::epoch`] before which nothing more is logged.
    next_ms: AtomicU64,
    held_back: AtomicU64,
}

impl LogThrottle {
    /// A line a second; the first goes through.
    pub const fn new() -> Self {
        Self::every(Duration::from_secs(1))
    }

    /// A line per `interval`; the first goes through.
    pub const fn every(interval: Duration) -> Self {
        LogThrottle {
            every_ms: interval.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub fn admit(&self) -> Option<u64> {
        let now = u64::try_from(Self::epoch().elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let due = now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        match due {
            true => Some(self.held_back.swap(0, Ordering::Relaxed)),
            false => {
                self.held_back.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_a_second_with_the_count_held_back() {
        let t = LogThrottle::new();
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), None);
        assert_eq!(t.admit(), None);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(t.admit(), Some(2));
        assert_eq!(t.admit(), None);
        // Another interval: none at all lets every line through.
        let every = LogThrottle::every(Duration::ZERO);
        assert_eq!((every.admit(), every.admit()), (Some(0), Some(0)));
    }
}
