//! `LoadSnapshot`: one round's view of the control plane's load, as the load fetcher builds
//! it from Prometheus or direct scrapes and the recommender reads it.
//!
//! A value that could not be measured or cannot be trusted is `None`, never a silent zero,
//! and a [`Finding`] says why, naming the metric and the replica.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{RecommenderError, Result};

/// The load on the whole control plane over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSnapshot {
    /// End of the window, seconds since the Unix epoch.
    pub time_unix_s: f64,
    /// Length of the window rates and percentiles are taken over, seconds.
    pub window_s: f64,
    pub source: Source,
    pub apiservers: Vec<ApiserverSample>,
    pub schedulers: Vec<SchedulerSample>,
    pub controller_managers: Vec<ControllerManagerSample>,
    /// Series over a longer window for forecasting and calibration; absent when not fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
    /// What the data-quality gate found. A `Blocking` finding means: do not act on this snapshot.
    pub findings: Vec<Finding>,
}

/// Where the numbers came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Source {
    Prometheus { url: String },
    Scrape { endpoints: Vec<String> },
}

/// Which control-plane component a replica is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Component {
    Apiserver,
    Scheduler,
    ControllerManager,
}

/// One replica of a component, as matched by the fetcher's label rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    pub component: Component,
    /// Stable name: the pod name where known (e.g. `apiserver-0`), else the instance.
    pub name: String,
    /// The scrape address (`instance` label or URL).
    pub instance: String,
}

/// Process-level numbers every component exposes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSample {
    /// rate(process_cpu_seconds_total): cores in use.
    pub cpu_cores: Option<f64>,
    /// The container's CPU limit, where known (from the pod spec or a config rule).
    pub cpu_limit_cores: Option<f64>,
    /// process_resident_memory_bytes, latest and the peak over the window.
    pub resident_memory_bytes: Option<f64>,
    pub peak_resident_memory_bytes: Option<f64>,
}

/// Latency percentiles derived from a histogram, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySummary {
    pub p50_s: f64,
    pub p90_s: f64,
    pub p99_s: f64,
    /// Requests the histogram counted over the window.
    pub count: f64,
}

/// One apiserver request class (readOnly or mutating) over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSample {
    /// Requests per second (all codes, long-running requests excluded).
    pub arrival_rate: Option<f64>,
    /// HTTP 429 responses per second.
    pub rejected_rate: Option<f64>,
    /// Other 5xx responses per second.
    pub error_rate: Option<f64>,
    /// From apiserver_request_sli_duration_seconds where present, else apiserver_request_duration_seconds.
    pub latency: Option<LatencySummary>,
    /// apiserver_current_inflight_requests: mean and max over the window.
    pub inflight_mean: Option<f64>,
    pub inflight_max: Option<f64>,
    /// apiserver_current_inqueue_requests (APF queues), mean over the window.
    pub inqueue_mean: Option<f64>,
}

/// An API Priority and Fairness priority level on one apiserver.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityLevelSample {
    pub dispatched_rate: Option<f64>,
    pub rejected_rate: Option<f64>,
    pub wait_p99_s: Option<f64>,
    pub nominal_seats: Option<f64>,
}

/// A component's own client towards the apiserver (client-go).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSample {
    /// rest_client_requests_total rate.
    pub request_rate: Option<f64>,
    /// rest_client_rate_limiter_duration_seconds: time requests waited on the client token bucket.
    pub throttle_wait_mean_s: Option<f64>,
    pub throttle_wait_p99_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiserverSample {
    pub replica: Replica,
    pub read_only: ClassSample,
    pub mutating: ClassSample,
    /// WATCH and other long-running requests, counted apart from the queues: started per second
    /// and currently open.
    pub long_running_rate: Option<f64>,
    pub long_running_open: Option<f64>,
    pub process: ProcessSample,
    /// Keyed by priority level name.
    pub priority_levels: BTreeMap<String, PriorityLevelSample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSample {
    pub replica: Replica,
    /// scheduler_pending_pods by `queue` (active, backoff, unschedulable, gated).
    pub pending_pods: BTreeMap<String, f64>,
    /// scheduler_schedule_attempts_total rate by `result` (scheduled, unschedulable, error).
    pub attempt_rate: BTreeMap<String, f64>,
    /// Pods bound per second.
    pub binding_rate: Option<f64>,
    /// scheduler_scheduling_attempt_duration_seconds.
    pub attempt_duration: Option<LatencySummary>,
    /// scheduler_pod_scheduling_sli_duration_seconds (Kubernetes ≥ 1.29).
    pub pod_scheduling_duration: Option<LatencySummary>,
    pub process: ProcessSample,
    pub client: ClientSample,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerManagerSample {
    pub replica: Replica,
    pub process: ProcessSample,
    pub client: ClientSample,
}

/// Evenly spaced series over the history window, one per replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    pub step_s: f64,
    /// Sample times, seconds since the Unix epoch.
    pub times_unix_s: Vec<f64>,
    pub replicas: Vec<ReplicaHistory>,
}

/// Each series has one entry per `History::times_unix_s`; `None` where there was no data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaHistory {
    pub replica: Replica,
    pub read_only_rate: Vec<Option<f64>>,
    pub mutating_rate: Vec<Option<f64>>,
    pub cpu_cores: Vec<Option<f64>>,
    pub read_only_p99_s: Vec<Option<f64>>,
    pub mutating_p99_s: Vec<Option<f64>>,
    /// Mean latency per step (histogram sum / count); absent from snapshots recorded before
    /// it was fetched.
    #[serde(default)]
    pub read_only_mean_s: Vec<Option<f64>>,
    #[serde(default)]
    pub mutating_mean_s: Vec<Option<f64>>,
    /// Peak resident memory per step.
    pub resident_memory_bytes: Vec<Option<f64>>,
}

/// What the data-quality gate found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    /// The metric (series name) concerned.
    pub metric: String,
    /// The replica concerned, if it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// A sentence for a person.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FindingKind {
    /// The newest sample is older than two scrape intervals.
    Stale,
    /// No series where one was expected.
    Missing,
    /// A counter went down within the window (a restart); the rate skipped over it.
    CounterReset,
    /// NaN or ±Inf where a number was expected.
    NotFinite,
    /// Below zero where only zero or more has a meaning (a rate, cores, bytes); left out.
    Negative,
    /// A histogram with no observations in the window.
    EmptyHistogram,
    /// A replica present earlier in the window (or last round) is gone.
    ReplicaVanished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// Worth knowing; the snapshot is still usable.
    Warning,
    /// The recommender must hold rather than act on this snapshot.
    Blocking,
}

impl LoadSnapshot {
    /// Checks what a fetcher could never have produced from a healthy control plane: a
    /// negative or non-finite number, a window or step that is not positive, history times
    /// out of order or series of the wrong length, one replica listed twice. Unmeasured
    /// values are `None` and pass; zero rates and gaps in the history are normal.
    pub fn validate(&self) -> Result<()> {
        at_least_zero("time_unix_s", Some(self.time_unix_s))?;
        greater_than_zero("window_s", self.window_s)?;
        let mut seen = BTreeSet::new();
        for a in &self.apiservers {
            let at = |f: &str| format!("apiservers.{}.{f}", a.replica.name);
            once(&mut seen, &a.replica)?;
            for (class, c) in [("read_only", &a.read_only), ("mutating", &a.mutating)] {
                for (f, v) in [
                    ("arrival_rate", c.arrival_rate),
                    ("rejected_rate", c.rejected_rate),
                    ("error_rate", c.error_rate),
                    ("inflight_mean", c.inflight_mean),
                    ("inflight_max", c.inflight_max),
                    ("inqueue_mean", c.inqueue_mean),
                ] {
                    at_least_zero(&at(&format!("{class}.{f}")), v)?;
                }
                latency(&at(&format!("{class}.latency")), c.latency.as_ref())?;
            }
            at_least_zero(&at("long_running_rate"), a.long_running_rate)?;
            at_least_zero(&at("long_running_open"), a.long_running_open)?;
            process(&at("process"), &a.process)?;
            for (level, l) in &a.priority_levels {
                for (f, v) in [
                    ("dispatched_rate", l.dispatched_rate),
                    ("rejected_rate", l.rejected_rate),
                    ("wait_p99_s", l.wait_p99_s),
                    ("nominal_seats", l.nominal_seats),
                ] {
                    at_least_zero(&at(&format!("priority_levels.{level}.{f}")), v)?;
                }
            }
        }
        for s in &self.schedulers {
            let at = |f: &str| format!("schedulers.{}.{f}", s.replica.name);
            once(&mut seen, &s.replica)?;
            for (map, values) in [
                ("pending_pods", &s.pending_pods),
                ("attempt_rate", &s.attempt_rate),
            ] {
                for (key, v) in values {
                    at_least_zero(&at(&format!("{map}.{key}")), Some(*v))?;
                }
            }
            at_least_zero(&at("binding_rate"), s.binding_rate)?;
            latency(&at("attempt_duration"), s.attempt_duration.as_ref())?;
            latency(
                &at("pod_scheduling_duration"),
                s.pod_scheduling_duration.as_ref(),
            )?;
            process(&at("process"), &s.process)?;
            client(&at("client"), &s.client)?;
        }
        for c in &self.controller_managers {
            let at = |f: &str| format!("controller_managers.{}.{f}", c.replica.name);
            once(&mut seen, &c.replica)?;
            process(&at("process"), &c.process)?;
            client(&at("client"), &c.client)?;
        }
        if let Some(h) = &self.history {
            h.validate()?;
        }
        Ok(())
    }

    /// False when any finding is `Blocking`: the recommender must hold.
    pub fn actionable(&self) -> bool {
        self.findings
            .iter()
            .all(|f| f.severity != Severity::Blocking)
    }
}

impl History {
    fn validate(&self) -> Result<()> {
        greater_than_zero("history.step_s", self.step_s)?;
        for (i, t) in self.times_unix_s.iter().enumerate() {
            at_least_zero(&format!("history.times_unix_s[{i}]"), Some(*t))?;
        }
        for (i, pair) in self.times_unix_s.windows(2).enumerate() {
            if pair[0] >= pair[1] {
                return Err(invalid(
                    format!("history.times_unix_s[{}]", i + 1),
                    format!(
                        "{} does not come after {}: times must rise",
                        pair[1], pair[0]
                    ),
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for r in &self.replicas {
            once(&mut seen, &r.replica)?;
            for (f, series) in [
                ("read_only_rate", &r.read_only_rate),
                ("mutating_rate", &r.mutating_rate),
                ("cpu_cores", &r.cpu_cores),
                ("read_only_p99_s", &r.read_only_p99_s),
                ("mutating_p99_s", &r.mutating_p99_s),
                ("resident_memory_bytes", &r.resident_memory_bytes),
                ("read_only_mean_s", &r.read_only_mean_s),
                ("mutating_mean_s", &r.mutating_mean_s),
            ] {
                let at = format!("history.replicas.{}.{f}", r.replica.name);
                // The means may be absent altogether: snapshots recorded before they were
                // fetched have none.
                let optional = f.ends_with("_mean_s") && series.is_empty();
                if series.len() != self.times_unix_s.len() && !optional {
                    return Err(invalid(
                        at,
                        format!(
                            "{} values for {} times",
                            series.len(),
                            self.times_unix_s.len()
                        ),
                    ));
                }
                for (i, v) in series.iter().enumerate() {
                    at_least_zero(&format!("{at}[{i}]"), *v)?;
                }
            }
        }
        Ok(())
    }
}

fn invalid(field: String, reason: String) -> RecommenderError {
    RecommenderError::Snapshot { field, reason }
}

/// A component's replica appears once: two entries would be two answers for one replica.
fn once<'a>(seen: &mut BTreeSet<(Component, &'a str)>, r: &'a Replica) -> Result<()> {
    if !seen.insert((r.component, r.name.as_str())) {
        let list = match r.component {
            Component::Apiserver => "apiservers",
            Component::Scheduler => "schedulers",
            Component::ControllerManager => "controller_managers",
        };
        return Err(invalid(
            format!("{list}.{}", r.name),
            "the replica is listed twice".into(),
        ));
    }
    Ok(())
}

fn at_least_zero(field: &str, v: Option<f64>) -> Result<()> {
    match v {
        Some(v) if !(v.is_finite() && v >= 0.0) => Err(invalid(
            field.into(),
            format!("{v} is not a finite number ≥ 0"),
        )),
        _ => Ok(()),
    }
}

fn greater_than_zero(field: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(invalid(
            field.into(),
            format!("{v} is not a finite number > 0"),
        ));
    }
    Ok(())
}

fn latency(field: &str, l: Option<&LatencySummary>) -> Result<()> {
    let Some(l) = l else { return Ok(()) };
    for (f, v) in [
        ("p50_s", l.p50_s),
        ("p90_s", l.p90_s),
        ("p99_s", l.p99_s),
        ("count", l.count),
    ] {
        at_least_zero(&format!("{field}.{f}"), Some(v))?;
    }
    Ok(())
}

fn process(field: &str, p: &ProcessSample) -> Result<()> {
    for (f, v) in [
        ("cpu_cores", p.cpu_cores),
        ("cpu_limit_cores", p.cpu_limit_cores),
        ("resident_memory_bytes", p.resident_memory_bytes),
        ("peak_resident_memory_bytes", p.peak_resident_memory_bytes),
    ] {
        at_least_zero(&format!("{field}.{f}"), v)?;
    }
    Ok(())
}

fn client(field: &str, c: &ClientSample) -> Result<()> {
    for (f, v) in [
        ("request_rate", c.request_rate),
        ("throttle_wait_mean_s", c.throttle_wait_mean_s),
        ("throttle_wait_p99_s", c.throttle_wait_p99_s),
    ] {
        at_least_zero(&format!("{field}.{f}"), v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RecommenderError;

    fn replica(name: &str) -> Replica {
        Replica {
            component: Component::Apiserver,
            name: name.into(),
            instance: "127.0.0.1:6443".into(),
        }
    }

    #[test]
    fn round_trips_through_json_and_keeps_unusable_values_unusable() {
        let snapshot = LoadSnapshot {
            time_unix_s: 1_764_000_000.0,
            window_s: 300.0,
            source: Source::Prometheus {
                url: "http://127.0.0.1:9090".into(),
            },
            apiservers: vec![ApiserverSample {
                replica: replica("apiserver-0"),
                read_only: ClassSample {
                    arrival_rate: Some(120.5),
                    latency: None,
                    ..ClassSample::default()
                },
                mutating: ClassSample::default(),
                long_running_rate: Some(0.2),
                long_running_open: Some(40.0),
                process: ProcessSample {
                    cpu_cores: Some(1.5),
                    ..ProcessSample::default()
                },
                priority_levels: BTreeMap::from([(
                    "workload-low".into(),
                    PriorityLevelSample::default(),
                )]),
            }],
            schedulers: vec![],
            controller_managers: vec![],
            history: None,
            findings: vec![Finding {
                kind: FindingKind::EmptyHistogram,
                severity: Severity::Warning,
                metric: "apiserver_request_duration_seconds".into(),
                replica: Some("apiserver-0".into()),
                detail: "no readOnly requests observed".into(),
            }],
        };
        let json = serde_json::to_string(&snapshot).unwrap();
        let back: LoadSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snapshot);
        assert!(
            json.contains("\"latency\":null"),
            "unusable values stay explicit: {json}"
        );
        assert!(back.actionable());
    }

    const LOOPBACK: &str = include_str!("../../config/examples/snapshot-loopback.json");
    const SYNTHETIC: &str = include_str!("../../config/examples/snapshot-synthetic.json");

    fn field_of(e: RecommenderError) -> String {
        match e {
            RecommenderError::Snapshot { field, .. } => field,
            other => panic!("not a snapshot error: {other}"),
        }
    }

    #[test]
    fn recorded_snapshots_are_valid() {
        for text in [LOOPBACK, SYNTHETIC] {
            let s: LoadSnapshot = serde_json::from_str(text).unwrap();
            s.validate().unwrap();
        }
    }

    /// Issue #17: negative rates, CPU and memory, `window_s` 0, `step_s` ≤ 0, reversed
    /// history and one replica listed twice were all accepted.
    #[test]
    fn values_no_healthy_control_plane_produces_are_refused_by_field() {
        let base: LoadSnapshot = serde_json::from_str(SYNTHETIC).unwrap();
        let name = base.apiservers[0].replica.name.clone();
        let refused = |change: &dyn Fn(&mut LoadSnapshot)| {
            let mut s = base.clone();
            change(&mut s);
            field_of(s.validate().unwrap_err())
        };
        assert_eq!(
            refused(&|s| s.apiservers[0].read_only.arrival_rate = Some(-3.0)),
            format!("apiservers.{name}.read_only.arrival_rate")
        );
        assert_eq!(
            refused(&|s| s.apiservers[0].process.cpu_cores = Some(f64::NAN)),
            format!("apiservers.{name}.process.cpu_cores")
        );
        assert_eq!(
            refused(&|s| s.apiservers[0].process.resident_memory_bytes = Some(-1.0)),
            format!("apiservers.{name}.process.resident_memory_bytes")
        );
        assert_eq!(refused(&|s| s.window_s = 0.0), "window_s");
        assert_eq!(
            refused(&|s| s.history.as_mut().unwrap().step_s = -15.0),
            "history.step_s"
        );
        assert_eq!(
            refused(&|s| s.history.as_mut().unwrap().times_unix_s.reverse()),
            "history.times_unix_s[1]"
        );
        assert_eq!(
            refused(&|s| {
                let h = s.history.as_mut().unwrap();
                h.replicas[0].cpu_cores.pop();
            }),
            format!(
                "history.replicas.{}.cpu_cores",
                base.history.as_ref().unwrap().replicas[0].replica.name
            )
        );
        assert_eq!(
            refused(&|s| s.apiservers.push(s.apiservers[0].clone())),
            format!("apiservers.{name}")
        );
        // A zero rate and a gap in the history are what a quiet, healthy plane gives.
        let mut quiet = base.clone();
        quiet.apiservers[0].mutating.arrival_rate = Some(0.0);
        quiet.history.as_mut().unwrap().replicas[0].read_only_rate[0] = None;
        quiet.validate().unwrap();
    }

    #[test]
    fn misspelt_keys_below_the_top_level_are_refused() {
        let text = SYNTHETIC.replacen("\"arrival_rate\"", "\"arival_rate\"", 1);
        assert_ne!(text, SYNTHETIC);
        let e = serde_json::from_str::<LoadSnapshot>(&text).unwrap_err();
        assert!(e.to_string().contains("arival_rate"), "{e}");
    }

    #[test]
    fn a_blocking_finding_makes_the_snapshot_not_actionable() {
        let mut s: LoadSnapshot = serde_json::from_str(
            r#"{"time_unix_s":0,"window_s":60,"source":{"kind":"scrape","endpoints":[]},
                "apiservers":[],"schedulers":[],"controller_managers":[],"findings":[]}"#,
        )
        .unwrap();
        assert!(s.actionable());
        s.findings.push(Finding {
            kind: FindingKind::Stale,
            severity: Severity::Blocking,
            metric: "apiserver_request_total".into(),
            replica: None,
            detail: "newest sample 40 s old".into(),
        });
        assert!(!s.actionable());
    }
}
