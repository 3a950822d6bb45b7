//! Counting outcomes and latencies while the run goes, and the report made from them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::mix::{MixEntry, Verb};

/// Highest latency the histograms resolve; slower ones are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// HTTP 429: rejected by max-inflight or APF.
    Throttled,
    /// Any other HTTP status outside 2xx.
    Status(u16),
    /// No full response within the request timeout.
    Timeout,
    /// Connection refused or reset, TLS failure and the like.
    Transport,
}

/// Latencies in µs. 32-bit counts (4 billion per bucket) halve the memory of 64-bit ones.
pub type LatencyHistogram = Histogram<u32>;

/// An empty latency histogram (µs, 3 significant digits) that grows to the largest value it
/// holds: one sized for an hour from the start costs 180 KiB per verb and resource, and the
/// report's copies of ~100 of them were most of the generator's memory.
pub fn new_histogram() -> LatencyHistogram {
    Histogram::new(3).expect("3 significant digits are valid")
}

/// Records `latency` in µs, clamped to what the histograms resolve (1 µs to an hour).
pub fn record_latency(h: &mut LatencyHistogram, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    // `saturating_record` would clamp to the histogram's current top instead of growing it.
    h.record(us.clamp(1, MAX_LATENCY_US))
        .expect("a growing histogram takes any value up to an hour");
}

/// Live counters of one mix entry, shared by every request task.
pub struct OpStats {
    sent: AtomicU64,
    ok: AtomicU64,
    throttled: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    dropped: AtomicU64,
    no_target: AtomicU64,
    latency_us: Mutex<LatencyHistogram>,
    error_causes: Mutex<BTreeMap<String, u64>>,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            sent: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            no_target: AtomicU64::new(0),
            latency_us: Mutex::new(new_histogram()),
            error_causes: Mutex::new(BTreeMap::new()),
        }
    }
}

impl OpStats {
    pub fn record_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// The send would have exceeded the in-flight cap, so it was not made.
    pub fn record_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A DELETE found no object of the run left to delete, so it was not made.
    pub fn record_no_target(&self) {
        self.no_target.fetch_add(1, Ordering::Relaxed);
    }

    /// `latency` runs from the scheduled send time to the end of the response body.
    pub fn record(&self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Ok => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                record_latency(&mut lock(&self.latency_us), latency);
            }
            Outcome::Throttled => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Status(code) => self.record_error(&code.to_string()),
            Outcome::Timeout => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                self.record_error("timeout");
            }
            Outcome::Transport => self.record_error("transport"),
        }
    }

    fn record_error(&self, cause: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.error_causes)
            .entry(cause.to_owned())
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> Tally {
        Tally {
            sent: self.sent.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            no_target: self.no_target.load(Ordering::Relaxed),
            latency_us: lock(&self.latency_us).clone(),
            error_causes: lock(&self.error_causes).clone(),
        }
    }
}

/// A poisoned lock only means a recording task panicked; the counts are still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts and latencies at one moment, for one entry or summed over several.
#[derive(Clone)]
pub struct Tally {
    pub sent: u64,
    pub ok: u64,
    pub throttled: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub dropped: u64,
    pub no_target: u64,
    pub latency_us: LatencyHistogram,
    pub error_causes: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            sent: 0,
            ok: 0,
            throttled: 0,
            errors: 0,
            timeouts: 0,
            dropped: 0,
            no_target: 0,
            latency_us: new_histogram(),
            error_causes: BTreeMap::new(),
        }
    }
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.throttled += other.throttled;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.dropped += other.dropped;
        self.no_target += other.no_target;
        self.latency_us
            .add(&other.latency_us)
            .expect("auto-resizing histograms take any counts");
        for (k, v) in &other.error_causes {
            *self.error_causes.entry(k.clone()).or_default() += v;
        }
    }
}

/// Latency of successful requests, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyMs {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencyMs {
    pub fn from_histogram(h: &LatencyHistogram) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return LatencyMs {
                count: 0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                max: 0.0,
            };
        }
        LatencyMs {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// `GET`, ... or `ALL`.
    pub verb: String,
    /// Plural resource name or `*`.
    pub resource: String,
    /// Arrivals the schedule produced: sent + dropped + no_target.
    pub scheduled: u64,
    pub sent: u64,
    pub ok: u64,
    pub throttled_429: u64,
    /// Errors other than 429 (includes timeouts).
    pub errors: u64,
    pub timeouts: u64,
    /// Not sent: the in-flight cap was reached.
    pub dropped: u64,
    /// Not sent: a DELETE had no object of the run left to delete.
    pub no_target: u64,
    /// Requests sent per second of run time.
    pub achieved_rps: f64,
    /// Latency of 2xx responses, measured from each request's scheduled send time.
    pub latency_ms: LatencyMs,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub error_causes: BTreeMap<String, u64>,
}

impl Row {
    pub fn new(verb: &str, resource: &str, t: &Tally, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        Row {
            verb: verb.to_owned(),
            resource: resource.to_owned(),
            scheduled: t.sent + t.dropped + t.no_target,
            sent: t.sent,
            ok: t.ok,
            throttled_429: t.throttled,
            errors: t.errors,
            timeouts: t.timeouts,
            dropped: t.dropped,
            no_target: t.no_target,
            achieved_rps: if secs > 0.0 {
                t.sent as f64 / secs
            } else {
                0.0
            },
            latency_ms: LatencyMs::from_histogram(&t.latency_us),
            error_causes: t.error_causes.clone(),
        }
    }
}

/// Who the requests were sent as.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IdentityReport {
    pub username: Option<String>,
    pub groups: Vec<String>,
    pub system_masters: bool,
}

/// Everything a run measured, as written to JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub run_id: String,
    pub apiserver: String,
    pub identity: IdentityReport,
    pub started_unix_s: f64,
    /// Time the arrivals ran for (shorter than the profile when interrupted).
    pub elapsed_s: f64,
    pub profile: String,
    pub arrivals: crate::arrivals::ArrivalProcess,
    pub target_requests: f64,
    pub max_inflight: usize,
    pub request_timeout_s: f64,
    pub interrupted: bool,
    /// CPU used while the arrivals ran (Linux only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<crate::cpu::CpuReport>,
    pub overall: Row,
    pub by_verb: Vec<Row>,
    pub by_verb_resource: Vec<Row>,
}

/// The rows of a report: per entry, per verb and overall.
pub fn build_rows(
    entries: &[MixEntry],
    tallies: &[Tally],
    elapsed: Duration,
) -> (Row, Vec<Row>, Vec<Row>) {
    let mut overall = Tally::default();
    let mut per_verb: BTreeMap<Verb, Tally> = BTreeMap::new();
    let mut rows = Vec::with_capacity(entries.len());
    for (e, t) in entries.iter().zip(tallies) {
        overall.add(t);
        per_verb.entry(e.verb).or_default().add(t);
        rows.push(Row::new(e.verb.as_str(), e.resource.plural(), t, elapsed));
    }
    let by_verb = per_verb
        .iter()
        .map(|(v, t)| Row::new(v.as_str(), "*", t, elapsed))
        .collect();
    (Row::new("ALL", "*", &overall, elapsed), by_verb, rows)
}

impl Report {
    /// A fixed-width table for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "run {}  against {}  as {}{}",
            self.run_id,
            self.apiserver,
            self.identity.username.as_deref().unwrap_or("(unknown)"),
            if self.identity.system_masters {
                "  [system:masters: NOT subject to inflight limits or APF]"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "profile {} ({:?}), {:.1} s{}, target {:.0} requests, max in flight {}",
            self.profile,
            self.arrivals,
            self.elapsed_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            self.target_requests,
            self.max_inflight
        );
        let _ = writeln!(
            out,
            "{:<7} {:<23} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "VERB",
            "RESOURCE",
            "SENT",
            "OK",
            "429",
            "ERRORS",
            "DROPPED",
            "RATE/s",
            "P50 ms",
            "P90 ms",
            "P99 ms",
            "MAX ms"
        );
        let line = |out: &mut String, r: &Row| {
            let _ = writeln!(
                out,
                "{:<7} {:<23} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                r.verb,
                r.resource,
                r.sent,
                r.ok,
                r.throttled_429,
                r.errors,
                r.dropped + r.no_target,
                r.achieved_rps,
                r.latency_ms.p50,
                r.latency_ms.p90,
                r.latency_ms.p99,
                r.latency_ms.max
            );
        };
        for r in &self.by_verb_resource {
            line(&mut out, r);
        }
        let _ = writeln!(out, "{}", "-".repeat(118));
        for r in &self.by_verb {
            line(&mut out, r);
        }
        line(&mut out, &self.overall);
        if !self.overall.error_causes.is_empty() {
            let causes: Vec<String> = self
                .overall
                .error_causes
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(out, "errors by cause: {}", causes.join(", "));
        }
        if let Some(cpu) = &self.cpu {
            let _ = write!(
                out,
                "generator CPU {:.2} s ({:.1} ms per 1000 requests)",
                cpu.generator_s, cpu.generator_ms_per_1000_requests
            );
            if let (Some(pid), Some(w)) = (cpu.watched_pid, cpu.watched_s) {
                let _ = write!(
                    out,
                    "; pid {pid} CPU {w:.2} s; generator/pid {:.3}",
                    cpu.generator_to_watched.unwrap_or(f64::NAN)
                );
            }
            let _ = writeln!(out);
        }
        if self.overall.no_target > 0 {
            let _ = writeln!(
                out,
                "{} DELETEs found nothing of the run to delete (counted in DROPPED)",
                self.overall.no_target
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mix::Resource;

    fn entry(verb: Verb, resource: Resource) -> MixEntry {
        MixEntry {
            verb,
            resource,
            weight: 1.0,
        }
    }

    #[test]
    fn counts_every_outcome() {
        let s = OpStats::default();
        for _ in 0..5 {
            s.record_sent();
        }
        s.record(Outcome::Ok, Duration::from_millis(3));
        s.record(Outcome::Throttled, Duration::from_millis(1));
        s.record(Outcome::Status(404), Duration::from_millis(1));
        s.record(Outcome::Timeout, Duration::from_secs(10));
        s.record(Outcome::Transport, Duration::from_millis(1));
        s.record_dropped();
        s.record_no_target();
        let t = s.snapshot();
        assert_eq!((t.sent, t.ok, t.throttled, t.errors), (5, 1, 1, 3));
        assert_eq!((t.timeouts, t.dropped, t.no_target), (1, 1, 1));
        assert_eq!(t.latency_us.len(), 1, "only successes are in the histogram");
        assert_eq!(t.error_causes["404"], 1);
        assert_eq!(t.error_causes["timeout"], 1);
        assert_eq!(t.error_causes["transport"], 1);
        let row = Row::new("GET", "secrets", &t, Duration::from_secs(2));
        assert_eq!(row.scheduled, 7);
        assert_eq!(row.achieved_rps, 2.5);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let s = OpStats::default();
        // 1..=1000 ms, one each.
        for ms in 1..=1000u64 {
            s.record(Outcome::Ok, Duration::from_millis(ms));
        }
        let l = LatencyMs::from_histogram(&s.snapshot().latency_us);
        assert_eq!(l.count, 1000);
        // Three significant figures: within 0.1 %.
        for (got, want) in [
            (l.p50, 500.0),
            (l.p90, 900.0),
            (l.p99, 990.0),
            (l.max, 1000.0),
        ] {
            assert!((got - want).abs() <= want * 1e-3, "{got} vs {want}");
        }
        let empty = LatencyMs::from_histogram(&new_histogram());
        assert_eq!(empty.count, 0);
        assert_eq!(empty.p99, 0.0);
    }

    #[test]
    fn latencies_beyond_the_range_saturate() {
        let s = OpStats::default();
        s.record(Outcome::Ok, Duration::from_secs(100_000));
        s.record(Outcome::Ok, Duration::ZERO);
        let t = s.snapshot();
        assert_eq!(t.latency_us.len(), 2);
        assert!(t.latency_us.max() >= MAX_LATENCY_US / 2);
    }

    #[test]
    fn rows_aggregate_per_verb_and_overall() {
        let entries = [
            entry(Verb::Get, Resource::Secrets),
            entry(Verb::Get, Resource::ConfigMaps),
            entry(Verb::Post, Resource::Secrets),
        ];
        let stats: Vec<OpStats> = (0..3).map(|_| OpStats::default()).collect();
        for (i, s) in stats.iter().enumerate() {
            for k in 0..10 * (i as u64 + 1) {
                s.record_sent();
                s.record(Outcome::Ok, Duration::from_millis(1 + k + 100 * i as u64));
            }
        }
        stats[2].record_dropped();
        let tallies: Vec<Tally> = stats.iter().map(OpStats::snapshot).collect();
        let (overall, by_verb, rows) = build_rows(&entries, &tallies, Duration::from_secs(10));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].resource, "configmaps");
        assert_eq!(overall.sent, 60);
        assert_eq!(overall.scheduled, 61);
        assert_eq!(overall.achieved_rps, 6.0);
        assert_eq!(overall.latency_ms.count, 60);
        assert_eq!(by_verb.len(), 2);
        assert_eq!((by_verb[0].verb.as_str(), by_verb[0].sent), ("GET", 30));
        assert_eq!((by_verb[1].verb.as_str(), by_verb[1].dropped), ("POST", 1));
        // POST latencies were 201..=230 ms, so the overall max is theirs.
        assert!((overall.latency_ms.max - 230.0).abs() < 0.5);
    }

    #[test]
    fn report_renders_as_json_and_table() {
        let entries = [entry(Verb::List, Resource::Nodes)];
        let s = OpStats::default();
        s.record_sent();
        s.record(Outcome::Status(500), Duration::from_millis(2));
        let (overall, by_verb, rows) =
            build_rows(&entries, &[s.snapshot()], Duration::from_secs(1));
        let report = Report {
            run_id: "abc".into(),
            apiserver: "https://127.0.0.1:6443".into(),
            identity: IdentityReport {
                username: Some("admin".into()),
                groups: vec!["system:masters".into()],
                system_masters: true,
            },
            started_unix_s: 0.0,
            elapsed_s: 1.0,
            profile: "const:1@1s".into(),
            arrivals: crate::arrivals::ArrivalProcess::Poisson,
            target_requests: 1.0,
            max_inflight: 10,
            request_timeout_s: 5.0,
            interrupted: false,
            cpu: None,
            overall,
            by_verb,
            by_verb_resource: rows,
        };
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["overall"]["errors"], 1);
        assert_eq!(json["by_verb_resource"][0]["resource"], "nodes");
        assert_eq!(json["by_verb_resource"][0]["error_causes"]["500"], 1);
        assert_eq!(json["arrivals"], "poisson");
        let table = report.table();
        assert!(table.contains("LIST    nodes"), "{table}");
        assert!(table.contains("system:masters"));
        assert!(table.contains("500: 1"));
    }
}
