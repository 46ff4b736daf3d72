//! What a run measured and how it reads: the merged HDR histogram, calls and errors by code,
//! rendered as the text `keyward bench` prints or as one JSON object (the format scripts such
//! as benches/compare.sh read).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::Load;

/// Highest latency the histograms track (longer calls are recorded as this).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A histogram of latencies in microseconds, from 1µs to an hour, 3 significant digits.
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// The merged result of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Latency of the successful measured calls, in microseconds.
    pub latency: Histogram<u64>,
    /// Measured calls, successful or not.
    pub calls: u64,
    /// Failed measured calls by gRPC code name (e.g. `Unavailable`).
    pub errors: BTreeMap<String, u64>,
    /// From the end of the warm-up to the last worker's end.
    pub elapsed: Duration,
    /// Calls made during the warm-up (not measured).
    pub warmup_calls: u64,
    /// With a [`Rate`](super::Rate): measured calls that started more than one interval after
    /// they were due (0 in a closed loop).
    pub late_calls: u64,
}

/// A payload or value size as the report shows it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Size {
    /// JSON field, e.g. `payload_bytes`.
    pub json: &'static str,
    /// Text label, e.g. `payload`.
    pub label: &'static str,
    /// Bytes.
    pub bytes: usize,
}

/// A finished run: what was measured, where, how hard, and the [`Outcome`].
#[derive(Debug)]
pub struct Report {
    /// What was measured: `kms`, `store`, `etcd` or `unix-pingpong`.
    pub(super) target: &'static str,
    /// Where: the socket or URLs called.
    pub(super) endpoint: String,
    /// The operation, e.g. `decrypt` or `decrypt storm`.
    pub(super) op: String,
    pub(super) load: Load,
    pub(super) size: Option<Size>,
    /// Storm, keys, watchers: JSON name (also the text label), value.
    pub(super) counts: Vec<(&'static str, u64)>,
    pub(super) outcome: Outcome,
}

impl Report {
    /// The measurements.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    fn storm(&self) -> bool {
        self.counts.iter().any(|(k, _)| *k == "storm")
    }

    fn rate(&self) -> f64 {
        let secs = self.outcome.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.outcome.calls as f64 / secs
        } else {
            0.0
        }
    }

    /// Whether a run at `rate` kept to it: at least 95 % of the rate achieved. A rate that is
    /// not kept leaves calls unstarted at the end of a `--duration` or lengthens a run of
    /// `--requests`. Late calls are not held against it: on a busy machine the client's own
    /// scheduling makes many calls start more than a short interval late.
    fn sustained(&self, rate: super::Rate) -> bool {
        self.rate() >= 0.95 * rate.per_second()
    }

    /// One JSON object: the run's settings, counts, throughput and latency percentiles (µs).
    pub fn json(&self) -> String {
        let o = &self.outcome;
        let errors: u64 = o.errors.values().sum();
        let secs = o.elapsed.as_secs_f64();
        let q = |p: f64| o.latency.value_at_quantile(p);
        let lat = |v: u64| if o.latency.is_empty() { 0 } else { v };
        let mut v = serde_json::json!({
            "target": self.target,
            "endpoint": self.endpoint,
            "op": self.op,
            "concurrency": self.load.concurrency,
            "connections": self.load.connections,
            "warmup_seconds": self.load.warmup.as_secs_f64(),
            "warmup_calls": o.warmup_calls,
            "calls": o.calls,
            "ok": o.calls - errors,
            "errors": errors,
            "errors_by_code": o.errors,
            "elapsed_seconds": secs,
            "calls_per_second": self.rate(),
            "latency_us": {
                "min": lat(o.latency.min()),
                "mean": if o.latency.is_empty() { 0.0 } else { o.latency.mean() },
                "p50": lat(q(0.5)),
                "p90": lat(q(0.9)),
                "p99": lat(q(0.99)),
                "p99_9": lat(q(0.999)),
                "max": lat(o.latency.max()),
            },
        });
        if let Some(size) = self.size {
            v[size.json] = size.bytes.into();
        }
        for (name, n) in &self.counts {
            v[*name] = (*n).into();
        }
        if self.storm() {
            v["time_to_finish_seconds"] = secs.into();
        }
        if let Some(rate) = self.load.rate {
            v["target_calls_per_second"] = rate.per_second().into();
            v["late_calls"] = o.late_calls.into();
            v["interval_us"] = micros(rate.interval()).into();
            v["rate_sustained"] = self.sustained(rate).into();
        }
        v.to_string()
    }

    /// A few lines for people: settings, calls, throughput, latency percentiles, errors.
    pub fn text(&self) -> String {
        let o = &self.outcome;
        let errors: u64 = o.errors.values().sum();
        let q = |p: f64| o.latency.value_at_quantile(p);
        let load = &self.load;
        let mut s = format!(
            "keyward bench {} {}: {} workers on {} connection{}",
            self.target,
            self.op,
            load.concurrency,
            load.connections,
            if load.connections == 1 { "" } else { "s" }
        );
        if let Some(rate) = load.rate {
            s += &format!(" at {} calls/s", show_rate(rate.per_second()));
        }
        if let Some(size) = self.size {
            s += &format!(", {} {}", size.label, show_bytes(size.bytes as u64));
        }
        for (name, n) in &self.counts {
            s += &format!(", {name} {n}");
        }
        if !load.warmup.is_zero() {
            s += &format!(
                ", after {} warm-up",
                humantime::format_duration(load.warmup)
            );
        }
        s += &format!("\n  endpoint:       {}\n", self.endpoint);
        if self.storm() {
            s += &format!("  time to finish: {}\n", show_secs(o.elapsed));
        }
        s += &format!(
            "  calls:          {} in {} ({} ok, {} errors)\n  throughput:     {:.1} calls/s\n",
            o.calls,
            show_secs(o.elapsed),
            o.calls - errors,
            errors,
            self.rate()
        );
        if let Some(rate) = load.rate {
            let interval = show_us(micros(rate.interval()));
            s += &format!(
                "  schedule:       {} calls/s offered, {:.1} achieved; {} calls started more than \
                 {interval} (one interval) late\n",
                show_rate(rate.per_second()),
                self.rate(),
                o.late_calls,
            );
            if !self.sustained(rate) {
                s += "  not sustained:  under 95 % of the offered rate achieved: the server (or \
                      this client) cannot keep this rate\n";
            }
        }
        if o.latency.is_empty() {
            s += "  latency:        no successful calls\n";
        } else {
            s += &format!(
                "  latency:        p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
                show_us(q(0.5)),
                show_us(q(0.9)),
                show_us(q(0.99)),
                show_us(q(0.999)),
                show_us(o.latency.max())
            );
        }
        if !o.errors.is_empty() {
            let list: Vec<String> = o.errors.iter().map(|(c, n)| format!("{c} {n}")).collect();
            s += &format!("  errors:         {}\n", list.join(", "));
        }
        s.pop();
        s
    }
}

/// Bytes in the largest exact unit: `1MiB`, `4KiB`, `33 bytes`.
pub(super) fn show_bytes(b: u64) -> String {
    if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{}MiB", b >> 20)
    } else if b >= 1 << 10 && b % (1 << 10) == 0 {
        format!("{}KiB", b >> 10)
    } else {
        format!("{b} bytes")
    }
}

/// Microseconds with a unit: `850µs`, `1.25ms`, `2.10s`.
fn show_us(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// A duration in whole microseconds (saturating).
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Calls per second: whole when whole (`200`), else with up to three decimals (`2.5`).
fn show_rate(r: f64) -> String {
    let s = format!("{r:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn show_secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{load, Fake};
    use super::super::{drive, Progress, Stop};
    use super::*;

    /// A `store get` report of `outcome`.
    fn store_get(load: Load, outcome: Outcome) -> Report {
        Report {
            target: "store",
            endpoint: "unix:///s.sock".into(),
            op: "get".into(),
            load,
            size: None,
            counts: Vec::new(),
            outcome,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_is_reported() {
        let mut p = load(Stop::For(Duration::from_millis(200)));
        p.rate = super::super::Rate::new(500.0);
        let outcome = drive((0..4).map(|_| Fake).collect(), &p, &Progress::default())
            .await
            .unwrap();
        let mut r = store_get(p, outcome);
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["calls"], 100, "{v}");
        assert_eq!(v["target_calls_per_second"], 500.0, "{v}");
        assert_eq!(v["late_calls"], 0, "{v}");
        assert_eq!(v["interval_us"], 2000, "{v}");
        assert_eq!(v["rate_sustained"], true, "{v}");
        let achieved = v["calls_per_second"].as_f64().unwrap();
        // The last call was due at 198 ms: 100 calls in a little under 200 ms.
        assert!((450.0..=520.0).contains(&achieved), "{v}");
        let text = r.text();
        assert!(
            text.starts_with("keyward bench store get: 4 workers on 1 connection at 500 calls/s\n"),
            "{text}"
        );
        assert!(
            text.contains("  schedule:       500 calls/s offered, ")
                && text
                    .contains(" achieved; 0 calls started more than 2.00ms (one interval) late\n"),
            "{text}"
        );
        assert!(!text.contains("not sustained"), "{text}");
        // Late calls alone do not make a rate unsustained; a shortfall does.
        r.outcome.late_calls = 20;
        assert!(!r.text().contains("not sustained"), "{}", r.text());
        r.outcome.elapsed = Duration::from_millis(220);
        assert!(r.text().contains("\n  not sustained:  "), "{}", r.text());
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&r.json()).unwrap()["rate_sustained"],
            false
        );
    }

    #[test]
    fn units() {
        assert_eq!(show_us(850), "850µs");
        assert_eq!(show_us(1250), "1.25ms");
        assert_eq!(show_us(2_100_000), "2.10s");
        assert_eq!(show_bytes(1 << 20), "1MiB");
        assert_eq!(show_bytes(4096), "4KiB");
        assert_eq!(show_bytes(33), "33 bytes");
        assert_eq!(show_rate(200.0), "200");
        assert_eq!(show_rate(2.5), "2.5");
        assert_eq!(show_rate(0.01), "0.01");
    }

    #[tokio::test]
    async fn json_and_text() {
        let p = load(Stop::Requests(100));
        let outcome = drive((0..4).map(|_| Fake).collect(), &p, &Progress::default())
            .await
            .unwrap();
        let r = Report {
            target: "kms",
            endpoint: "unix:///k.sock".into(),
            op: "decrypt".into(),
            load: p,
            size: Some(Size {
                json: "payload_bytes",
                label: "payload",
                bytes: 32,
            }),
            counts: vec![("storm", 100)],
            outcome,
        };
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["calls"], 100);
        assert_eq!(v["ok"], 75);
        assert_eq!(v["errors"], 25);
        assert_eq!(v["errors_by_code"]["Unavailable"], 25);
        assert_eq!(v["payload_bytes"], 32);
        assert_eq!(v["storm"], 100);
        assert!(v["time_to_finish_seconds"].is_f64());
        let l = &v["latency_us"];
        let get = |k: &str| l[k].as_u64().unwrap();
        assert!(get("min") <= get("p50"));
        assert!(get("p50") <= get("p90") && get("p90") <= get("p99"));
        assert!(get("p99") <= get("p99_9") && get("p99_9") <= get("max"));
        let text = r.text();
        assert!(
            text.starts_with("keyward bench kms decrypt: 4 workers on 1 connection, payload 32 bytes, storm 100\n"),
            "{text}"
        );
        assert!(text.contains("time to finish:"), "{text}");
        assert!(text.contains("errors:         Unavailable 25"), "{text}");
        assert!(text.contains("p99.9"), "{text}");
        let empty = store_get(
            p,
            Outcome {
                latency: histogram(),
                calls: 2,
                errors: BTreeMap::from([("DeadlineExceeded".to_owned(), 2)]),
                elapsed: Duration::from_millis(10),
                warmup_calls: 0,
                late_calls: 0,
            },
        );
        assert!(empty.text().contains("no successful calls"));
        let v: serde_json::Value = serde_json::from_str(&empty.json()).unwrap();
        assert!(v.get("target_calls_per_second").is_none(), "{v}");
        assert!(v.get("late_calls").is_none(), "{v}");
        assert!(!empty.text().contains("schedule:"));

        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&empty.json()).unwrap()["latency_us"]["p99"],
            0
        );
    }
}
