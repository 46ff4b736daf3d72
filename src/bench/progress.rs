//! How far a run has got, as values a caller reads while the run goes on (the command line
//! draws a progress bar from them). The run updates them; nothing here prints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Stop;

/// What a run is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Connecting, or anything before the first preparation.
    #[default]
    Starting,
    /// Creating the data the workload uses: keys, ciphertexts.
    Preparing,
    /// Running unmeasured.
    WarmingUp,
    /// Measuring, until the run's [`Stop`].
    Measuring,
    /// The measurement is over.
    Done,
}

/// A reading of [`Progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reading {
    /// What the run is doing.
    pub phase: Phase,
    /// Preparation jobs finished.
    pub prepared: u64,
    /// Preparation jobs in all.
    pub to_prepare: u64,
    /// Measured calls started (with [`Stop::Requests`], briefly up to one per worker more than
    /// the limit).
    pub calls: u64,
    /// When measuring stops; set once measuring is about to begin.
    pub stop: Option<Stop>,
}

/// How far a run has got. Cheap to clone: clones share one state, which the run updates and
/// any clone reads ([`Progress::read`]).
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<State>);

#[derive(Debug, Default)]
struct State {
    /// Phase, preparation total and stop: changed a few times per run.
    stage: Mutex<Reading>,
    prepared: AtomicU64,
    /// Measured calls started: the workers' shared call counter itself.
    calls: Arc<AtomicU64>,
}

impl Progress {
    /// The current reading.
    pub fn read(&self) -> Reading {
        Reading {
            prepared: self.0.prepared.load(Ordering::Relaxed),
            calls: self.0.calls.load(Ordering::Relaxed),
            ..*self.stage()
        }
    }

    fn stage(&self) -> MutexGuard<'_, Reading> {
        // A reading is plain data: one left by a panicking holder is still a reading.
        self.0.stage.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set(&self, phase: Phase) {
        self.stage().phase = phase;
    }

    pub(super) fn preparing(&self, jobs: u64) {
        let mut stage = self.stage();
        stage.phase = Phase::Preparing;
        stage.to_prepare = jobs;
        self.0.prepared.store(0, Ordering::Relaxed);
    }

    pub(super) fn prepared_one(&self) {
        self.0.prepared.fetch_add(1, Ordering::Relaxed);
    }

    /// Measuring begins (after a warm-up, if any) and ends at `stop`; returns the counter the
    /// workers number their measured calls with.
    pub(super) fn measuring(&self, stop: Stop, warmup: bool) -> Arc<AtomicU64> {
        let mut stage = self.stage();
        stage.phase = if warmup {
            Phase::WarmingUp
        } else {
            Phase::Measuring
        };
        stage.stop = Some(stop);
        self.0.calls.store(0, Ordering::Relaxed);
        self.0.calls.clone()
    }
}
