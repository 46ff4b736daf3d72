//! When a run's calls start, and which are measured: a closed loop (each worker starts its next
//! call as soon as its previous one returns) or an open loop at a fixed [`Rate`] (call i of the
//! measurement is due at its start + i/rate, whatever the calls before it did).
//!
//! In an open loop a late call is never skipped: it starts as soon as a worker is free, and its
//! latency counts from when it was due, so the queueing behind slow calls shows in the figures
//! instead of being left out (no coordinated omission). The workers bound the calls in flight;
//! a call that starts more than one interval after it was due counts as late.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{BenchError, Load, Stop};

/// The highest `--rate`, in calls per second.
pub const MAX_RATE: f64 = 1_000_000.0;
/// The lowest `--rate` above 0 (a closed loop), in calls per second: one call every 100 s.
pub const MIN_RATE: f64 = 0.01;

/// How much earlier than due a call may start: tokio's timer rounds a deadline up to its next
/// millisecond, so a worker asks to wake one tick before the call is due.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Calls per second on a fixed schedule: a finite number from [`MIN_RATE`] to [`MAX_RATE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(f64);

// A rate is never NaN, so its equality is an equivalence.
impl Eq for Rate {}

impl Rate {
    /// `per_second` calls per second, if it is from [`MIN_RATE`] to [`MAX_RATE`].
    pub fn new(per_second: f64) -> Option<Rate> {
        (MIN_RATE..=MAX_RATE)
            .contains(&per_second)
            .then_some(Rate(per_second))
    }

    /// Calls per second.
    pub fn per_second(self) -> f64 {
        self.0
    }

    /// The time between two calls' due times.
    pub fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.0)
    }

    /// How long after the first call call `i` is due, if that is a representable duration.
    fn offset(self, i: u64) -> Option<Duration> {
        Duration::try_from_secs_f64(i as f64 / self.0).ok()
    }
}

/// `--rate`: calls per second (e.g. `200` or `2.5`), from [`MIN_RATE`] to [`MAX_RATE`]; `0`
/// is a closed loop (`None`).
pub fn parse_rate(s: &str) -> Result<Option<Rate>, BenchError> {
    let value = s.trim();
    let n: f64 = value.parse().map_err(|_| BenchError::NotARate {
        value: s.to_owned(),
    })?;
    if n == 0.0 {
        return Ok(None);
    }
    Rate::new(n).map(Some).ok_or(BenchError::RateOutOfRange {
        value: s.to_owned(),
    })
}

/// What a worker does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    /// An unmeasured warm-up call numbered `n`, started at `due` (at once if `None`).
    Warm { n: u64, due: Option<Instant> },
    /// Measured call `n` (numbered from 0 across all workers), started at `due` (at once if
    /// `None`: a closed loop).
    Measure { n: u64, due: Option<Instant> },
    /// This worker is done.
    Stop,
}

/// A measured call that has started.
#[derive(Debug, Clone, Copy)]
pub(super) struct Begun {
    /// What its latency counts from: when it was due, or when it started if that was earlier.
    pub from: Instant,
    /// It started more than one interval after it was due.
    pub late: bool,
}

/// The turns of one run's workers, shared by them.
#[derive(Debug)]
pub(super) struct Schedule {
    /// The end of the warm-up: the measurement's first call is due then.
    start: Instant,
    /// With [`Stop::For`]: no call starts at or after this.
    end: Option<Instant>,
    /// With [`Stop::Requests`]: the number of measured calls.
    limit: Option<u64>,
    /// Measured calls started: the counter [`Progress`](super::Progress) reads. In a closed
    /// loop also the measured calls' numbering (up to one per worker past the limit).
    started: Arc<AtomicU64>,
    /// Warm-up calls handed out.
    warm: AtomicU64,
    /// Open loop: measured calls handed out, which number them.
    tickets: AtomicU64,
    open: Option<Open>,
}

/// An open loop's schedule.
#[derive(Debug)]
struct Open {
    rate: Rate,
    /// Calls due before [`Schedule::start`], during the warm-up.
    warm_calls: u64,
}

impl Schedule {
    /// The schedule of `load`, whose warm-up begins now; `started` counts the measured calls.
    pub(super) fn new(load: &Load, started: Arc<AtomicU64>) -> Schedule {
        let start = Instant::now() + load.warmup;
        let (end, limit) = match load.stop {
            Stop::For(d) => (Some(start + d), None),
            Stop::Requests(n) => (None, Some(n)),
        };
        let open = load.rate.map(|rate| Open {
            rate,
            warm_calls: (load.warmup.as_secs_f64() * rate.per_second()).ceil() as u64,
        });
        Schedule {
            start,
            end,
            limit,
            started,
            warm: AtomicU64::new(0),
            tickets: AtomicU64::new(0),
            open,
        }
    }

    /// When measuring begins.
    pub(super) fn start(&self) -> Instant {
        self.start
    }

    /// Warm-up calls made.
    pub(super) fn warmup_calls(&self) -> u64 {
        let handed_out = self.warm.load(Ordering::Relaxed);
        match &self.open {
            Some(open) => handed_out.min(open.warm_calls),
            None => handed_out,
        }
    }

    /// A worker's next turn.
    pub(super) fn next(&self) -> Turn {
        let Some(open) = &self.open else {
            return self.next_closed();
        };
        // Warm-up calls not handed out by the end of the warm-up are left out: they are not
        // measured, and a backlog of them would eat into the measurement.
        if Instant::now() < self.start && self.warm.load(Ordering::Relaxed) < open.warm_calls {
            let k = self.warm.fetch_add(1, Ordering::Relaxed);
            if k < open.warm_calls {
                let before = open.rate.offset(open.warm_calls - k);
                return Turn::Warm {
                    n: k,
                    // Due before the clock's origin (a machine up for less than the warm-up):
                    // at once.
                    due: before.and_then(|b| self.start.checked_sub(b)),
                };
            }
        }
        let n = self.tickets.fetch_add(1, Ordering::Relaxed);
        if self.limit.is_some_and(|limit| n >= limit) {
            return Turn::Stop;
        }
        let Some(due) = open.rate.offset(n).and_then(|o| self.start.checked_add(o)) else {
            return Turn::Stop;
        };
        // With a duration, calls still due when the time is up are not started: the achieved
        // rate shows them.
        if self
            .end
            .is_some_and(|end| due >= end || Instant::now() >= end)
        {
            return Turn::Stop;
        }
        Turn::Measure { n, due: Some(due) }
    }

    fn next_closed(&self) -> Turn {
        let now = Instant::now();
        if now < self.start {
            let n = self.warm.fetch_add(1, Ordering::Relaxed);
            return Turn::Warm { n, due: None };
        }
        if self.end.is_some_and(|end| now >= end) {
            return Turn::Stop;
        }
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        if self.limit.is_some_and(|limit| n >= limit) {
            return Turn::Stop;
        }
        Turn::Measure { n, due: None }
    }

    /// Waits until a call is due: wakes at most one timer tick early, and not at all for a call
    /// already due or without a due time.
    pub(super) async fn wait(&self, due: Option<Instant>) {
        if let Some(wake) = due.and_then(|d| d.checked_sub(TIMER_TICK)) {
            if wake > Instant::now() {
                tokio::time::sleep_until(wake).await;
            }
        }
    }

    /// A measured call due at `due` starts now.
    pub(super) fn begin(&self, due: Option<Instant>) -> Begun {
        let now = Instant::now();
        match (&self.open, due) {
            (Some(open), Some(due)) => {
                self.started.fetch_add(1, Ordering::Relaxed);
                Begun {
                    from: due.min(now),
                    late: now.saturating_duration_since(due) > open.rate.interval(),
                }
            }
            _ => Begun {
                from: now,
                late: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        for (s, want) in [
            ("200", Some(200.0)),
            (" 2.5 ", Some(2.5)),
            ("1e6", Some(1e6)),
            ("0.01", Some(0.01)),
            ("0", None),
            ("0.0", None),
        ] {
            assert_eq!(parse_rate(s).unwrap().map(Rate::per_second), want, "{s:?}");
        }
        for (s, want) in [
            (
                "-5",
                "must be 0 (a closed loop) or 0.01 to 1000000 calls per second (got -5)",
            ),
            ("1000001", "must be 0 (a closed loop) or 0.01 to"),
            ("0.001", "must be 0 (a closed loop) or 0.01 to"),
            ("NaN", "must be 0 (a closed loop) or 0.01 to"),
            ("inf", "must be 0 (a closed loop) or 0.01 to"),
            (
                "fast",
                "\"fast\" is not a number of calls per second (expected 0 for a closed loop, or \
                 0.01 to 1000000)",
            ),
            ("200/s", "\"200/s\" is not a number"),
            ("", "\"\" is not a number"),
        ] {
            let e = parse_rate(s).unwrap_err().to_string();
            assert!(e.starts_with(want), "{s:?}: {e}");
        }
        assert_eq!(
            Rate::new(200.0).unwrap().interval(),
            Duration::from_millis(5)
        );
        assert_eq!(Rate::new(f64::NAN), None);
    }

    fn load(rate: f64, warmup_ms: u64, stop: Stop) -> Load {
        Load {
            concurrency: 2,
            connections: 1,
            stop,
            warmup: Duration::from_millis(warmup_ms),
            timeout: Duration::from_secs(1),
            rate: Rate::new(rate),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_turns_are_due_on_a_grid() {
        let s = Schedule::new(
            &load(100.0, 25, Stop::Requests(3)),
            Arc::new(AtomicU64::new(0)),
        );
        let start = s.start();
        let ms = Duration::from_millis;
        // 25 ms of warm-up at 10 ms a call: three calls, the last one 10 ms before the start.
        let want = [
            Turn::Warm {
                n: 0,
                due: Some(start - ms(30)),
            },
            Turn::Warm {
                n: 1,
                due: Some(start - ms(20)),
            },
            Turn::Warm {
                n: 2,
                due: Some(start - ms(10)),
            },
            Turn::Measure {
                n: 0,
                due: Some(start),
            },
            Turn::Measure {
                n: 1,
                due: Some(start + ms(10)),
            },
            Turn::Measure {
                n: 2,
                due: Some(start + ms(20)),
            },
            Turn::Stop,
            Turn::Stop,
        ];
        for w in want {
            assert_eq!(s.next(), w);
        }
        assert_eq!(s.warmup_calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_stops_at_the_end_even_behind() {
        let s = Schedule::new(
            &load(100.0, 0, Stop::For(Duration::from_millis(25))),
            Arc::new(AtomicU64::new(0)),
        );
        let start = s.start();
        assert_eq!(
            s.next(),
            Turn::Measure {
                n: 0,
                due: Some(start)
            }
        );
        // 50 ms late: the calls due at 10 and 20 ms are not started after the end.
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(s.next(), Turn::Stop);
        assert_eq!(s.warmup_calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_leaves_out_the_warm_up_it_could_not_start() {
        let s = Schedule::new(
            &load(100.0, 50, Stop::Requests(2)),
            Arc::new(AtomicU64::new(0)),
        );
        let start = s.start();
        assert!(matches!(s.next(), Turn::Warm { n: 0, .. }));
        // The warm-up is over with four of its five calls never started: measuring begins.
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(
            s.next(),
            Turn::Measure {
                n: 0,
                due: Some(start)
            }
        );
        assert_eq!(s.warmup_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_wait_until_due_and_count_lateness() {
        let started = Arc::new(AtomicU64::new(0));
        let s = Schedule::new(&load(100.0, 0, Stop::Requests(10)), started.clone());
        let t0 = Instant::now();
        let Turn::Measure { due, .. } = s.next() else {
            panic!()
        };
        let Turn::Measure { due: second, .. } = s.next() else {
            panic!()
        };
        s.wait(second).await;
        // Woken one tick early: the latency counts from the start, not from the due time.
        assert_eq!(Instant::now(), t0 + Duration::from_millis(9));
        let b = s.begin(second);
        assert_eq!(b.from, t0 + Duration::from_millis(9));
        assert!(!b.late);
        // The first call, 9 ms late (within an interval), then 11 ms late.
        let b = s.begin(due);
        assert_eq!((b.from, b.late), (t0, false));
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(s.begin(due).late);
        assert_eq!(started.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_turns() {
        let started = Arc::new(AtomicU64::new(0));
        let s = Schedule::new(&load(0.0, 10, Stop::Requests(2)), started.clone());
        assert_eq!(s.next(), Turn::Warm { n: 0, due: None });
        assert_eq!(s.next(), Turn::Warm { n: 1, due: None });
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(s.next(), Turn::Measure { n: 0, due: None });
        assert_eq!(s.next(), Turn::Measure { n: 1, due: None });
        assert_eq!(s.next(), Turn::Stop);
        assert_eq!(s.warmup_calls(), 2);
        let b = s.begin(None);
        assert_eq!((b.from, b.late), (Instant::now(), false));
    }
}
