//! Turns [`Readings`] from either source into the samples of a `LoadSnapshot`, and runs the
//! data-quality checks that need only those readings (missing, non-finite, resets, stale,
//! empty histograms, vanished replicas).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use recommender::snapshot::{
    ApiserverSample, ClassSample, ClientSample, Component, ControllerManagerSample, Finding,
    FindingKind, LatencySummary, PriorityLevelSample, ProcessSample, Replica, SchedulerSample,
};

use crate::histogram::Histogram;
use crate::quality::Findings;
use crate::query::{Measure, Readings, Row, parse_le, queries};
use crate::request_class::{Outcome, RequestClass};

/// The samples and findings of one snapshot.
#[derive(Debug, Default)]
pub struct Assembly {
    pub apiservers: Vec<ApiserverSample>,
    pub schedulers: Vec<SchedulerSample>,
    pub controller_managers: Vec<ControllerManagerSample>,
    pub findings: Vec<Finding>,
}

/// `apiserver_selector` is only quoted in the finding when no apiserver is found at all.
pub fn assemble(
    readings: &Readings,
    scrape_interval: Duration,
    apiserver_selector: &str,
) -> Assembly {
    let mut findings = Findings::default();
    let index = Index::new(readings, &mut findings);
    let mut assembly = Assembly::default();

    for replica in index.replicas(Component::Apiserver) {
        let sample = apiserver(&index, &replica, scrape_interval, &mut findings);
        assembly.apiservers.push(sample);
    }
    for replica in index.replicas(Component::Scheduler) {
        let sample = scheduler(&index, &replica, scrape_interval, &mut findings);
        assembly.schedulers.push(sample);
    }
    for replica in index.replicas(Component::ControllerManager) {
        assembly.controller_managers.push(ControllerManagerSample {
            process: process(&index, &replica, scrape_interval, &mut findings),
            client: client(&index, &replica, &mut findings),
            replica,
        });
    }
    if assembly.apiservers.is_empty() {
        findings.block(
            FindingKind::Missing,
            "apiserver_request_total",
            None,
            format!(
                "no apiserver series at all (selector {{{apiserver_selector}}}): nothing to tune on"
            ),
        );
    }
    for (replica, why) in &readings.vanished {
        findings.warn(
            FindingKind::ReplicaVanished,
            "up",
            Some(replica),
            why.clone(),
        );
    }
    assembly.findings = findings.into_vec();
    assembly
}

/// Rows by component, measure and replica, without non-finite values.
struct Index<'a> {
    rows: BTreeMap<(Component, Measure, Replica), Vec<&'a Row>>,
    metrics: BTreeMap<Measure, &'static str>,
}

impl<'a> Index<'a> {
    fn new(readings: &'a Readings, findings: &mut Findings) -> Self {
        let metrics: BTreeMap<Measure, &'static str> = queries()
            .into_iter()
            .map(|q| (q.measure, q.metric))
            .collect();
        let mut rows: BTreeMap<_, Vec<&Row>> = BTreeMap::new();
        for ((component, measure), list) in &readings.rows {
            for row in list {
                if !row.value.is_finite() {
                    findings.warn(
                        FindingKind::NotFinite,
                        metrics.get(measure).copied().unwrap_or("?"),
                        Some(&row.replica),
                        format!("value {} for {:?}; left out", row.value, row.labels),
                    );
                    continue;
                }
                // Every measure but a sample's age (clock skew) is a rate, count or size.
                if row.value < 0.0 && *measure != Measure::SampleAge {
                    findings.warn(
                        FindingKind::Negative,
                        metrics.get(measure).copied().unwrap_or("?"),
                        Some(&row.replica),
                        format!("value {} for {:?}; left out", row.value, row.labels),
                    );
                    continue;
                }
                rows.entry((*component, *measure, row.replica.clone()))
                    .or_default()
                    .push(row);
            }
        }
        Index { rows, metrics }
    }

    fn replicas(&self, component: Component) -> BTreeSet<Replica> {
        self.rows
            .keys()
            .filter(|(c, m, _)| *c == component && *m != Measure::SampleAge)
            .map(|(_, _, r)| r.clone())
            .collect()
    }

    fn get(&self, component: Component, measure: Measure, replica: &Replica) -> &[&'a Row] {
        self.rows
            .get(&(component, measure, replica.clone()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn metric(&self, measure: Measure) -> &'static str {
        self.metrics.get(&measure).copied().unwrap_or("?")
    }

    /// The sum of the rows, or `None` (and a Missing finding) when there are none.
    fn sum_or_missing(
        &self,
        component: Component,
        measure: Measure,
        replica: &Replica,
        findings: &mut Findings,
    ) -> Option<f64> {
        let rows = self.get(component, measure, replica);
        if rows.is_empty() {
            findings.warn(
                FindingKind::Missing,
                self.metric(measure),
                Some(replica),
                "no series for this replica".into(),
            );
            return None;
        }
        Some(rows.iter().map(|r| r.value).sum())
    }

    fn report_resets(
        &self,
        component: Component,
        measure: Measure,
        replica: &Replica,
        findings: &mut Findings,
    ) {
        let resets: f64 = self
            .get(component, measure, replica)
            .iter()
            .map(|r| r.value)
            .sum();
        if resets > 0.0 {
            findings.warn(
                FindingKind::CounterReset,
                self.metric(measure),
                Some(replica),
                format!("went down {resets} time(s) in the window (a restart); the rate counts from zero after it"),
            );
        }
    }
}

fn histogram(rows: &[&Row], keep: impl Fn(&Row) -> bool) -> Histogram {
    Histogram::from_buckets(
        rows.iter()
            .filter(|r| keep(r))
            .filter_map(|r| parse_le(r.label("le")).map(|le| (le, r.value))),
    )
}

/// Percentiles of a histogram measure; `None` with a finding when absent or empty.
fn latency(
    index: &Index,
    component: Component,
    measures: &[Measure],
    replica: &Replica,
    keep: impl Fn(&Row) -> bool,
    what: &str,
    findings: &mut Findings,
) -> Option<LatencySummary> {
    // The first measure with series for this replica wins (newer metric names first).
    let Some(&measure) = measures
        .iter()
        .find(|m| !index.get(component, **m, replica).is_empty())
    else {
        // Histogram series appear with their first observation, so none at all usually
        // means nothing observed yet (or a version without the metric).
        findings.warn(
            FindingKind::EmptyHistogram,
            index.metric(measures[0]).trim_end_matches("_bucket"),
            Some(replica),
            format!("no series yet: no {what} observed since start (or no such metric here)"),
        );
        return None;
    };
    let summary = histogram(index.get(component, measure, replica), keep).latency_summary();
    if summary.is_none() {
        findings.warn(
            FindingKind::EmptyHistogram,
            index.metric(measure).trim_end_matches("_bucket"),
            Some(replica),
            format!("no {what} observed in the window"),
        );
    }
    summary
}

fn apiserver(
    index: &Index,
    replica: &Replica,
    scrape_interval: Duration,
    findings: &mut Findings,
) -> ApiserverSample {
    use Component::Apiserver as A;
    let requests = index.get(A, Measure::Requests, replica);
    if requests.is_empty() {
        findings.warn(
            FindingKind::Missing,
            "apiserver_request_total",
            Some(replica),
            "no request counter: arrival rates unknown".into(),
        );
    }
    index.report_resets(A, Measure::RequestResets, replica, findings);
    // A class or code with no series had no requests since the process started: a real zero,
    // provided the counter exists at all.
    let request_sum = |keep: &dyn Fn(&Row) -> bool| {
        (!requests.is_empty()).then(|| requests.iter().filter(|r| keep(r)).map(|r| r.value).sum())
    };
    let class_of = |r: &Row| RequestClass::of_verb(r.label("verb"));
    let gauge = |measure: Measure, class: RequestClass| {
        let rows: Vec<_> = index
            .get(A, measure, replica)
            .iter()
            .filter(|r| RequestClass::of_request_kind(r.label("request_kind")) == Some(class))
            .map(|r| r.value)
            .collect();
        (!rows.is_empty()).then(|| rows.iter().sum())
    };
    if index.get(A, Measure::InflightMean, replica).is_empty() {
        findings.warn(
            FindingKind::Missing,
            "apiserver_current_inflight_requests",
            Some(replica),
            "no series: inflight unknown".into(),
        );
    }
    let mut class = |class: RequestClass, name: &str| ClassSample {
        arrival_rate: request_sum(&|r| class_of(r) == class),
        rejected_rate: request_sum(&|r| {
            class_of(r) == class && Outcome::of_code(r.label("code")) == Outcome::Rejected
        }),
        error_rate: request_sum(&|r| {
            class_of(r) == class && Outcome::of_code(r.label("code")) == Outcome::ServerError
        }),
        latency: latency(
            index,
            A,
            &[Measure::SliLatencyBuckets, Measure::LatencyBuckets],
            replica,
            |r| class_of(r) == class,
            &format!("{name} requests"),
            findings,
        ),
        inflight_mean: gauge(Measure::InflightMean, class),
        inflight_max: gauge(Measure::InflightMax, class),
        inqueue_mean: gauge(Measure::InqueueMean, class),
    };
    let read_only = class(RequestClass::ReadOnly, "readOnly");
    let mutating = class(RequestClass::Mutating, "mutating");
    ApiserverSample {
        replica: replica.clone(),
        read_only,
        mutating,
        long_running_rate: request_sum(&|r| class_of(r) == RequestClass::LongRunning),
        long_running_open: {
            let rows = index.get(A, Measure::LongRunningOpen, replica);
            (!rows.is_empty()).then(|| rows.iter().map(|r| r.value).sum())
        },
        process: process(index, replica, scrape_interval, findings),
        priority_levels: priority_levels(index, replica, findings),
    }
}

fn priority_levels(
    index: &Index,
    replica: &Replica,
    findings: &mut Findings,
) -> BTreeMap<String, PriorityLevelSample> {
    use Component::Apiserver as A;
    let dispatched = index.get(A, Measure::PriorityDispatched, replica);
    if dispatched.is_empty() {
        findings.warn(
            FindingKind::Missing,
            index.metric(Measure::PriorityDispatched),
            Some(replica),
            "no API Priority and Fairness series (APF off, or too old a version)".into(),
        );
        return BTreeMap::new();
    }
    let by_level = |measure: Measure| -> BTreeMap<&str, f64> {
        let mut sums = BTreeMap::new();
        for r in index.get(A, measure, replica) {
            *sums.entry(r.label("priority_level")).or_insert(0.0) += r.value;
        }
        sums
    };
    let dispatched = by_level(Measure::PriorityDispatched);
    let rejected = by_level(Measure::PriorityRejected);
    let seats = by_level(Measure::PriorityNominalSeats);
    let old_limit = by_level(Measure::PriorityConcurrencyLimit);
    let waits = index.get(A, Measure::PriorityWaitBuckets, replica);
    let levels: BTreeSet<&str> = dispatched
        .keys()
        .chain(rejected.keys())
        .chain(seats.keys())
        .chain(old_limit.keys())
        .copied()
        .collect();
    levels
        .into_iter()
        .map(|level| {
            let sample = PriorityLevelSample {
                dispatched_rate: Some(dispatched.get(level).copied().unwrap_or(0.0)),
                // Rejection series appear with the first rejection: absent means none yet.
                rejected_rate: Some(rejected.get(level).copied().unwrap_or(0.0)),
                wait_p99_s: histogram(waits, |r| r.label("priority_level") == level).quantile(0.99),
                nominal_seats: seats.get(level).or(old_limit.get(level)).copied(),
            };
            (level.to_owned(), sample)
        })
        .collect()
}

fn process(
    index: &Index,
    replica: &Replica,
    scrape_interval: Duration,
    findings: &mut Findings,
) -> ProcessSample {
    let component = replica.component;
    index.report_resets(component, Measure::CpuResets, replica, findings);
    let stale_after_s = 2.0 * scrape_interval.as_secs_f64();
    let age_s = index
        .get(component, Measure::SampleAge, replica)
        .iter()
        .map(|r| r.value)
        .fold(None, |max: Option<f64>, v| {
            Some(max.map_or(v, |m| m.max(v)))
        });
    let stale = age_s.is_some_and(|age| age > stale_after_s);
    if let Some(age) = age_s.filter(|_| stale) {
        let detail = format!(
            "newest sample is {age:.0} s old, more than two scrape intervals ({stale_after_s:.0} s)"
        );
        // Acting on an apiserver whose numbers stopped is acting blind; the others only inform.
        if component == Component::Apiserver {
            findings.block(
                FindingKind::Stale,
                "process_cpu_seconds_total",
                Some(replica),
                detail,
            );
        } else {
            findings.warn(
                FindingKind::Stale,
                "process_cpu_seconds_total",
                Some(replica),
                detail,
            );
        }
    }
    let keep_fresh = |v: Option<f64>| v.filter(|_| !stale);
    ProcessSample {
        cpu_cores: keep_fresh(index.sum_or_missing(component, Measure::Cpu, replica, findings)),
        cpu_limit_cores: None,
        resident_memory_bytes: keep_fresh(index.sum_or_missing(
            component,
            Measure::ResidentMemory,
            replica,
            findings,
        )),
        peak_resident_memory_bytes: {
            let rows = index.get(component, Measure::PeakResidentMemory, replica);
            (!rows.is_empty()).then(|| rows.iter().map(|r| r.value).fold(f64::MIN, f64::max))
        },
    }
}

fn scheduler(
    index: &Index,
    replica: &Replica,
    scrape_interval: Duration,
    findings: &mut Findings,
) -> SchedulerSample {
    use Component::Scheduler as S;
    let by_label = |measure: Measure, label: &str| -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for r in index.get(S, measure, replica) {
            *sums.entry(r.label(label).to_owned()).or_insert(0.0) += r.value;
        }
        sums
    };
    let pending_pods = by_label(Measure::PendingPods, "queue");
    let attempt_rate = by_label(Measure::ScheduleAttempts, "result");
    // The queue gauges exist from the start, attempt counters from the first attempt: with
    // the gauges there and no counter, nothing was attempted yet — a real zero.
    let binding_rate = if !attempt_rate.is_empty() || !pending_pods.is_empty() {
        Some(attempt_rate.get("scheduled").copied().unwrap_or(0.0))
    } else {
        findings.warn(
            FindingKind::Missing,
            "scheduler_pending_pods",
            Some(replica),
            "neither queue gauges nor attempt counters: scheduling load unknown".into(),
        );
        None
    };
    SchedulerSample {
        replica: replica.clone(),
        pending_pods,
        attempt_rate,
        binding_rate,
        attempt_duration: latency(
            index,
            S,
            &[Measure::AttemptDurationBuckets],
            replica,
            |_| true,
            "scheduling attempts",
            findings,
        ),
        pod_scheduling_duration: latency(
            index,
            S,
            &[
                Measure::PodSchedulingSliBuckets,
                Measure::PodSchedulingDurationBuckets,
            ],
            replica,
            |_| true,
            "scheduled pods",
            findings,
        ),
        process: process(index, replica, scrape_interval, findings),
        client: client(index, replica, findings),
    }
}

fn client(index: &Index, replica: &Replica, findings: &mut Findings) -> ClientSample {
    let component = replica.component;
    let waits = histogram(
        index.get(component, Measure::ClientThrottleBuckets, replica),
        |_| true,
    );
    let count = waits.count().filter(|c| *c > 0.0);
    let seconds: Option<f64> = {
        let rows = index.get(component, Measure::ClientThrottleSeconds, replica);
        (!rows.is_empty()).then(|| rows.iter().map(|r| r.value).sum())
    };
    ClientSample {
        request_rate: index.sum_or_missing(component, Measure::ClientRequests, replica, findings),
        throttle_wait_mean_s: count.zip(seconds).map(|(c, s)| s / c),
        throttle_wait_p99_s: waits.quantile(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Readings;
    use recommender::snapshot::Severity;

    fn replica(component: Component, name: &str) -> Replica {
        Replica {
            component,
            name: name.into(),
            instance: name.into(),
        }
    }

    fn row(replica: &Replica, labels: &[(&str, &str)], value: f64) -> Row {
        Row {
            replica: replica.clone(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn no_apiserver_series_is_blocking() {
        let assembly = assemble(
            &Readings::default(),
            Duration::from_secs(5),
            "job=~\"none\"",
        );
        assert!(assembly.apiservers.is_empty());
        assert!(
            assembly
                .findings
                .iter()
                .any(|f| f.kind == FindingKind::Missing
                    && f.severity == Severity::Blocking
                    && f.detail.contains("job=~\"none\""))
        );
    }

    /// Issue #17: negative rates, cores and bytes from Prometheus were stored silently.
    #[test]
    fn negative_values_are_left_out_with_a_finding() {
        let a = replica(Component::Apiserver, "apiserver-0");
        let mut readings = Readings::default();
        let r = &mut readings.rows;
        r.insert(
            (Component::Apiserver, Measure::Requests),
            vec![row(&a, &[("verb", "GET"), ("code", "200")], 10.0)],
        );
        r.insert(
            (Component::Apiserver, Measure::Cpu),
            vec![row(&a, &[], -2.0)],
        );
        r.insert(
            (Component::Apiserver, Measure::ResidentMemory),
            vec![row(&a, &[], -1e9)],
        );
        // A sample from a clock a little ahead is not a negative quantity.
        r.insert(
            (Component::Apiserver, Measure::SampleAge),
            vec![row(&a, &[], -0.5)],
        );
        let assembly = assemble(&readings, Duration::from_secs(5), "");
        let s = &assembly.apiservers[0];
        assert_eq!(s.process.cpu_cores, None);
        assert_eq!(s.process.resident_memory_bytes, None);
        let negative: Vec<&str> = assembly
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::Negative)
            .map(|f| f.metric.as_str())
            .collect();
        assert_eq!(
            negative,
            ["process_cpu_seconds_total", "process_resident_memory_bytes"]
        );
    }

    #[test]
    fn classes_codes_latency_and_findings_from_rows() {
        let a = replica(Component::Apiserver, "apiserver-0");
        let mut readings = Readings::default();
        let r = &mut readings.rows;
        r.insert(
            (Component::Apiserver, Measure::Requests),
            vec![
                row(&a, &[("verb", "GET"), ("code", "200")], 10.0),
                row(&a, &[("verb", "LIST"), ("code", "429")], 2.0),
                row(&a, &[("verb", "POST"), ("code", "201")], 4.0),
                row(&a, &[("verb", "DELETE"), ("code", "500")], 1.0),
                row(&a, &[("verb", "WATCH"), ("code", "200")], 0.5),
            ],
        );
        r.insert(
            (Component::Apiserver, Measure::LatencyBuckets),
            vec![
                row(&a, &[("verb", "GET"), ("le", "0.1")], 80.0),
                row(&a, &[("verb", "GET"), ("le", "1")], 100.0),
                row(&a, &[("verb", "GET"), ("le", "+Inf")], 100.0),
                row(&a, &[("verb", "POST"), ("le", "0.1")], 0.0),
                row(&a, &[("verb", "POST"), ("le", "+Inf")], 0.0),
            ],
        );
        r.insert(
            (Component::Apiserver, Measure::RequestResets),
            vec![row(&a, &[], 1.0)],
        );
        r.insert(
            (Component::Apiserver, Measure::Cpu),
            vec![row(&a, &[], f64::NAN)],
        );
        r.insert(
            (Component::Apiserver, Measure::SampleAge),
            vec![row(&a, &[], 60.0)],
        );
        readings
            .vanished
            .push((replica(Component::Apiserver, "apiserver-1"), "gone".into()));

        let assembly = assemble(&readings, Duration::from_secs(5), "");
        let s = &assembly.apiservers[0];
        assert_eq!(s.read_only.arrival_rate, Some(12.0));
        assert_eq!(s.read_only.rejected_rate, Some(2.0));
        assert_eq!(s.mutating.arrival_rate, Some(5.0));
        assert_eq!(s.mutating.error_rate, Some(1.0));
        assert_eq!(s.long_running_rate, Some(0.5));
        let latency = s.read_only.latency.unwrap();
        assert_eq!(latency.count, 100.0);
        assert!((latency.p50_s - 0.0625).abs() < 1e-9);
        assert_eq!(s.mutating.latency, None);
        assert_eq!(s.process.cpu_cores, None, "NaN is never a number");
        let kinds: Vec<_> = assembly
            .findings
            .iter()
            .map(|f| (f.kind, f.severity))
            .collect();
        for expected in [
            (FindingKind::EmptyHistogram, Severity::Warning),
            (FindingKind::CounterReset, Severity::Warning),
            (FindingKind::NotFinite, Severity::Warning),
            (FindingKind::Stale, Severity::Blocking),
            (FindingKind::ReplicaVanished, Severity::Warning),
            (FindingKind::Missing, Severity::Warning),
        ] {
            assert!(kinds.contains(&expected), "{expected:?} not in {kinds:?}");
        }
        assert!(assembly.findings.iter().all(|f| f.replica.is_some()));
    }
}
