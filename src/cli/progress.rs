//! Progress bars on stderr, drawn with indicatif, for `migrate` and `bench`: only when stderr
//! is a terminal. Otherwise the commands print what they always have (plain lines, or
//! nothing). The library reports progress as values; this is the only place they are drawn.

use std::future::Future;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::bench::{Phase, Progress, Stop};

/// Whether progress bars are drawn: stderr is a terminal.
pub(super) fn on_terminal() -> bool {
    std::io::stderr().is_terminal()
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        // The templates are constants; a bad one falls back to the plain bar.
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// `migrate`'s bar: objects done out of all, and the counts as its message.
pub(super) struct MigrateBar(ProgressBar);

impl MigrateBar {
    pub(super) fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(style("[{bar:30}] {msg}"));
        MigrateBar(bar)
    }

    /// Shows `done` of `total` objects, with `line` (the counts, rate and ETA) beside the bar.
    pub(super) fn update(&self, done: u64, total: u64, line: String) {
        self.0.set_length(total);
        self.0.set_position(done);
        self.0.set_message(line);
    }

    /// Leaves the last state on the screen.
    pub(super) fn finish(self) {
        self.0.finish();
    }
}

/// Runs `run` (a benchmark that reports through `progress`), drawing its progress on a
/// terminal: preparation, warm-up, then the measurement over its duration or request count.
pub(super) async fn bench<T>(progress: &Progress, run: impl Future<Output = T>) -> T {
    if !on_terminal() {
        return run.await;
    }
    let bar = ProgressBar::new_spinner();
    let mut drawn = BenchBar::default();
    tokio::pin!(run);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            out = &mut run => {
                bar.finish_and_clear();
                return out;
            }
            _ = tick.tick() => drawn.draw(&bar, progress),
        }
    }
}

/// What the bench bar shows now.
#[derive(Default)]
struct BenchBar {
    phase: Phase,
    measuring_since: Option<Instant>,
}

impl BenchBar {
    fn draw(&mut self, bar: &ProgressBar, progress: &Progress) {
        let r = progress.read();
        if r.phase != self.phase {
            self.phase = r.phase;
            let (template, msg) = match r.phase {
                Phase::Starting => ("{spinner} {msg}", "connecting"),
                Phase::Preparing => ("[{bar:30}] {pos}/{len} {msg}", "preparing"),
                Phase::WarmingUp => ("{spinner} {msg}", "warming up"),
                Phase::Measuring => ("[{bar:30}] {msg}", "measuring"),
                Phase::Done => ("{spinner} {msg}", "reporting"),
            };
            bar.set_style(style(template));
            bar.set_message(msg);
            if r.phase == Phase::Measuring {
                self.measuring_since = Some(Instant::now());
            }
        }
        match (r.phase, r.stop) {
            (Phase::Preparing, _) => {
                bar.set_length(r.to_prepare);
                bar.set_position(r.prepared);
            }
            (Phase::Measuring, Some(Stop::Requests(n))) => {
                bar.set_length(n);
                bar.set_position(r.calls.min(n));
                bar.set_message(format!("{} of {n} calls", r.calls.min(n)));
            }
            (Phase::Measuring, Some(Stop::For(d))) => {
                let elapsed = self.measuring_since.map_or(Duration::ZERO, |t| t.elapsed());
                bar.set_length(d.as_millis() as u64);
                bar.set_position(elapsed.min(d).as_millis() as u64);
                bar.set_message(format!(
                    "{} calls, {}s of {}s",
                    r.calls,
                    elapsed.min(d).as_secs(),
                    d.as_secs()
                ));
            }
            _ => bar.tick(),
        }
    }
}
