//! `LoadSnapshot`: one round's view of the control plane's load, as the load fetcher builds
//! it from Prometheus or direct scrapes and the recommender reads it.
//!
//! A value that could not be measured or cannot be trusted is `None`, never a silent zero,
//! and a [`Finding`] says why, naming the metric and the replica.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
pub struct Replica {
    pub component: Component,
    /// Stable name: the pod name where known (e.g. `apiserver-0`), else the instance.
    pub name: String,
    /// The scrape address (`instance` label or URL).
    pub instance: String,
}

/// Process-level numbers every component exposes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
pub struct LatencySummary {
    pub p50_s: f64,
    pub p90_s: f64,
    pub p99_s: f64,
    /// Requests the histogram counted over the window.
    pub count: f64,
}

/// One apiserver request class (readOnly or mutating) over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
pub struct PriorityLevelSample {
    pub dispatched_rate: Option<f64>,
    pub rejected_rate: Option<f64>,
    pub wait_p99_s: Option<f64>,
    pub nominal_seats: Option<f64>,
}

/// A component's own client towards the apiserver (client-go).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientSample {
    /// rest_client_requests_total rate.
    pub request_rate: Option<f64>,
    /// rest_client_rate_limiter_duration_seconds: time requests waited on the client token bucket.
    pub throttle_wait_mean_s: Option<f64>,
    pub throttle_wait_p99_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
pub struct ControllerManagerSample {
    pub replica: Replica,
    pub process: ProcessSample,
    pub client: ClientSample,
}

/// Evenly spaced series over the history window, one per replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub step_s: f64,
    /// Sample times, seconds since the Unix epoch.
    pub times_unix_s: Vec<f64>,
    pub replicas: Vec<ReplicaHistory>,
}

/// Each series has one entry per `History::times_unix_s`; `None` where there was no data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// False when any finding is `Blocking`: the recommender must hold.
    pub fn actionable(&self) -> bool {
        self.findings
            .iter()
            .all(|f| f.severity != Severity::Blocking)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
