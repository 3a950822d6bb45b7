//! The measurements a snapshot is built from, defined once: the Prometheus source renders
//! each into PromQL, the scrape source evaluates each on two expositions.

use std::collections::BTreeMap;

use recommender::snapshot::{Component, Replica};

/// How a metric is reduced over the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Counter: per-second rate.
    Rate,
    /// Counter: total growth.
    Increase,
    /// Counter: how many times it went down.
    Resets,
    /// Histogram `_bucket` counter: growth per `le` bucket (rows carry an `le` label).
    BucketIncrease,
    /// Gauge: mean over the window.
    Mean,
    /// Gauge: peak over the window.
    Max,
    /// Gauge: the newest value.
    Last,
    /// Seconds since the newest sample (Prometheus only: a scrape is always fresh).
    Age,
}

/// What a measurement is for; the assembler looks rows up by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measure {
    Requests,
    RequestResets,
    SliLatencyBuckets,
    LatencyBuckets,
    InflightMean,
    InflightMax,
    InqueueMean,
    LongRunningOpen,
    PriorityDispatched,
    PriorityRejected,
    PriorityWaitBuckets,
    PriorityNominalSeats,
    /// `apiserver_flowcontrol_request_concurrency_limit`, the name before 1.30's `nominal_limit_seats`.
    PriorityConcurrencyLimit,
    Cpu,
    CpuResets,
    ResidentMemory,
    PeakResidentMemory,
    SampleAge,
    PendingPods,
    ScheduleAttempts,
    AttemptDurationBuckets,
    PodSchedulingSliBuckets,
    /// `scheduler_pod_scheduling_duration_seconds`, replaced by the SLI histogram in 1.29.
    PodSchedulingDurationBuckets,
    ClientRequests,
    ClientThrottleBuckets,
    ClientThrottleSeconds,
}

impl Measure {
    /// The older metric name to read only where the newer one has no series; asking for it
    /// up front would double the work of the heaviest queries on current clusters.
    pub fn fallback_for(self) -> Option<Measure> {
        match self {
            Measure::LatencyBuckets => Some(Measure::SliLatencyBuckets),
            Measure::PriorityConcurrencyLimit => Some(Measure::PriorityNominalSeats),
            Measure::PodSchedulingDurationBuckets => Some(Measure::PodSchedulingSliBuckets),
            _ => None,
        }
    }
}

/// One measurement: which metric, how reduced, grouped by which labels beyond the replica's.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub measure: Measure,
    pub component: Component,
    pub metric: &'static str,
    pub reduction: Reduction,
    pub by: &'static [&'static str],
    /// A `label=~regex` filter on the series, if any.
    pub filter: Option<(&'static str, &'static str)>,
}

/// The verbs of both queued classes, for latency histograms (a test checks it against them).
const QUEUED_VERBS: &str = "GET|LIST|POST|PUT|PATCH|APPLY|DELETE|DELETECOLLECTION";

/// Every measurement, for every component.
pub fn queries() -> Vec<Query> {
    use Component::*;
    use Measure as M;
    use Reduction as R;
    let q = |measure, component, metric, reduction, by, filter| Query {
        measure,
        component,
        metric,
        reduction,
        by,
        filter,
    };
    let verbs = Some(("verb", QUEUED_VERBS));
    let mut all = vec![
        q(
            M::Requests,
            Apiserver,
            "apiserver_request_total",
            R::Rate,
            &["verb", "code"][..],
            None,
        ),
        q(
            M::RequestResets,
            Apiserver,
            "apiserver_request_total",
            R::Resets,
            &[],
            None,
        ),
        q(
            M::SliLatencyBuckets,
            Apiserver,
            "apiserver_request_sli_duration_seconds_bucket",
            R::BucketIncrease,
            &["verb"],
            verbs,
        ),
        q(
            M::LatencyBuckets,
            Apiserver,
            "apiserver_request_duration_seconds_bucket",
            R::BucketIncrease,
            &["verb"],
            verbs,
        ),
        q(
            M::InflightMean,
            Apiserver,
            "apiserver_current_inflight_requests",
            R::Mean,
            &["request_kind"],
            None,
        ),
        q(
            M::InflightMax,
            Apiserver,
            "apiserver_current_inflight_requests",
            R::Max,
            &["request_kind"],
            None,
        ),
        q(
            M::InqueueMean,
            Apiserver,
            "apiserver_current_inqueue_requests",
            R::Mean,
            &["request_kind"],
            None,
        ),
        q(
            M::LongRunningOpen,
            Apiserver,
            "apiserver_longrunning_requests",
            R::Last,
            &[],
            None,
        ),
        q(
            M::PriorityDispatched,
            Apiserver,
            "apiserver_flowcontrol_dispatched_requests_total",
            R::Rate,
            &["priority_level"],
            None,
        ),
        q(
            M::PriorityRejected,
            Apiserver,
            "apiserver_flowcontrol_rejected_requests_total",
            R::Rate,
            &["priority_level"],
            None,
        ),
        q(
            M::PriorityWaitBuckets,
            Apiserver,
            "apiserver_flowcontrol_request_wait_duration_seconds_bucket",
            R::BucketIncrease,
            &["priority_level"],
            None,
        ),
        q(
            M::PriorityNominalSeats,
            Apiserver,
            "apiserver_flowcontrol_nominal_limit_seats",
            R::Last,
            &["priority_level"],
            None,
        ),
        q(
            M::PriorityConcurrencyLimit,
            Apiserver,
            "apiserver_flowcontrol_request_concurrency_limit",
            R::Last,
            &["priority_level"],
            None,
        ),
        q(
            M::PendingPods,
            Scheduler,
            "scheduler_pending_pods",
            R::Last,
            &["queue"],
            None,
        ),
        q(
            M::ScheduleAttempts,
            Scheduler,
            "scheduler_schedule_attempts_total",
            R::Rate,
            &["result"],
            None,
        ),
        q(
            M::AttemptDurationBuckets,
            Scheduler,
            "scheduler_scheduling_attempt_duration_seconds_bucket",
            R::BucketIncrease,
            &[],
            None,
        ),
        q(
            M::PodSchedulingSliBuckets,
            Scheduler,
            "scheduler_pod_scheduling_sli_duration_seconds_bucket",
            R::BucketIncrease,
            &[],
            None,
        ),
        q(
            M::PodSchedulingDurationBuckets,
            Scheduler,
            "scheduler_pod_scheduling_duration_seconds_bucket",
            R::BucketIncrease,
            &[],
            None,
        ),
    ];
    for component in [Apiserver, Scheduler, ControllerManager] {
        all.extend([
            q(
                M::Cpu,
                component,
                "process_cpu_seconds_total",
                R::Rate,
                &[],
                None,
            ),
            q(
                M::CpuResets,
                component,
                "process_cpu_seconds_total",
                R::Resets,
                &[],
                None,
            ),
            q(
                M::ResidentMemory,
                component,
                "process_resident_memory_bytes",
                R::Last,
                &[],
                None,
            ),
            q(
                M::PeakResidentMemory,
                component,
                "process_resident_memory_bytes",
                R::Max,
                &[],
                None,
            ),
            q(
                M::SampleAge,
                component,
                "process_cpu_seconds_total",
                R::Age,
                &[],
                None,
            ),
        ]);
    }
    for component in [Scheduler, ControllerManager] {
        all.extend([
            q(
                M::ClientRequests,
                component,
                "rest_client_requests_total",
                R::Rate,
                &[],
                None,
            ),
            q(
                M::ClientThrottleBuckets,
                component,
                "rest_client_rate_limiter_duration_seconds_bucket",
                R::BucketIncrease,
                &[],
                None,
            ),
            q(
                M::ClientThrottleSeconds,
                component,
                "rest_client_rate_limiter_duration_seconds_sum",
                R::Increase,
                &[],
                None,
            ),
        ]);
    }
    all
}

/// One reduced value for one replica and one combination of the query's `by` labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub replica: Replica,
    /// The query's `by` labels (and `le` for bucket increases).
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Row {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Everything a source read, keyed by component and measure.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    pub rows: BTreeMap<(Component, Measure), Vec<Row>>,
    /// Replicas seen earlier (history window or first scrape) but not now, with why.
    pub vanished: Vec<(Replica, String)>,
}

impl Readings {
    pub fn rows(&self, component: Component, measure: Measure) -> &[Row] {
        self.rows
            .get(&(component, measure))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// Parses an `le` label value, `+Inf` included.
pub fn parse_le(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        t => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_class::{MUTATING_VERBS, READ_ONLY_VERBS};

    #[test]
    fn the_latency_verb_filter_is_both_classes() {
        assert_eq!(QUEUED_VERBS, format!("{READ_ONLY_VERBS}|{MUTATING_VERBS}"));
        assert_eq!(parse_le("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_le("0.25"), Some(0.25));
    }
}
