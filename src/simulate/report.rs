//! What the day showed under each policy: the summary table, its JSON, and the series the
//! plots draw.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::Options;
use super::arak::Arak;
use super::pods;
use super::policies::PolicyKind;
use super::workload::Workload;
use super::world::{IntervalObservation, Slo, World};

/// One interval of one policy, as plotted and written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalPoint {
    pub start_h: f64,
    /// Cluster-wide offered load, requests per second.
    pub read_only_rps: f64,
    pub mutating_rps: f64,
    /// The worst replica's P99 (of the interval's worst segment), seconds.
    pub read_only_p99_s: f64,
    pub mutating_p99_s: f64,
    /// Share of all requests rejected with 429.
    pub rejection: f64,
    /// Pods asked for in the interval: P99 time until running, seconds.
    pub pod_startup_p99_s: Option<f64>,
    pub slo_violation_min: f64,
    pub apiserver_cores: Vec<f64>,
    pub apiserver_cores_used: Vec<f64>,
    pub max_requests_inflight: Vec<u32>,
    pub max_mutating_requests_inflight: Vec<u32>,
    pub queue_length: Vec<u32>,
    pub scheduler_qps: f64,
    pub controller_manager_qps: f64,
}

/// The table's row for one policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    pub policy: PolicyKind,
    pub read_only_p99_worst_s: f64,
    pub read_only_p99_median_s: f64,
    pub mutating_p99_worst_s: f64,
    pub mutating_p99_median_s: f64,
    /// Requests rejected with 429 over all requests of the day.
    pub rejection_rate: f64,
    pub rejected_requests: f64,
    pub slo_violation_minutes: f64,
    /// Cores allocated to the apiservers × hours, summed over replicas.
    pub apiserver_core_hours: f64,
    /// The same for the scheduler and controller-manager.
    pub client_core_hours: f64,
    /// P99 startup of the pods asked for during the storms (from the ask to running).
    pub storm_pod_startup_p99_s: Option<f64>,
    /// From the storm's start until its last pod was bound.
    pub storm_clear_s: Option<f64>,
    /// What the scheduler model predicts for the storm's pods created at once, at the
    /// settings running when the storm began.
    pub storm_predicted_scheduler_clear_s: Option<f64>,
}

/// What arak's recommender did over the day.
#[derive(Debug, Clone, Serialize)]
pub struct ArakActivity {
    pub rounds: usize,
    pub changes: usize,
    pub holds: BTreeMap<String, usize>,
    pub applied_by: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyRun {
    pub summary: PolicySummary,
    pub intervals: Vec<IntervalPoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arak: Option<ArakActivity>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayReport {
    pub intervals: usize,
    pub interval_s: f64,
    pub apiserver_replicas: usize,
    pub sample_window_s: f64,
    pub seed: u64,
    pub workload: Workload,
    pub policies: Vec<PolicyRun>,
    /// SVG files written, once written.
    pub plots: Vec<String>,
    pub run_time_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl PolicyRun {
    pub fn new(
        kind: PolicyKind,
        workload: &Workload,
        slo: &Slo,
        observed: Vec<IntervalObservation>,
        world: &World,
        arak: Option<&Arak>,
    ) -> Self {
        let pipeline = world.pipeline();
        let kubelet = workload.pods.kubelet_start_s;
        let mut requests = 0.0;
        let mut rejected = 0.0;
        let mut intervals = Vec::new();
        for o in &observed {
            let (from, to) = (o.start_s, o.start_s + o.length_s);
            let churn =
                workload.pods.peak_churn_pods_per_s * workload.diurnal_share(0.5 * (from + to));
            // The fluid sees backlogs; random arrivals queue a little even without one.
            let steady = pods::steady_pending_p99_s(workload, churn, &o.settings.scheduler);
            let pod_p99 = pipeline
                .delay_p99_s(from, to)
                .map(|fluid| fluid.max(if steady.is_finite() { steady } else { 0.0 }) + kubelet);
            let pods_late = pod_p99.is_some_and(|p| p > slo.pod_startup_p99_s);
            let violation_s = if pods_late {
                o.length_s
            } else {
                o.apiserver_violation_s
            };
            let mut interval_requests = 0.0;
            let mut interval_rejected = 0.0;
            for r in &o.replicas {
                for c in [&r.read_only, &r.mutating] {
                    interval_requests += c.arrival_rate * o.length_s;
                    interval_rejected += c.arrival_rate * c.rejection * o.length_s;
                }
            }
            requests += interval_requests;
            rejected += interval_rejected;
            let worst = |f: fn(&super::world::ReplicaObservation) -> f64| {
                o.replicas.iter().map(f).fold(0.0, f64::max)
            };
            intervals.push(IntervalPoint {
                start_h: from / 3600.0,
                read_only_rps: o.read_only_rps,
                mutating_rps: o.mutating_rps,
                read_only_p99_s: worst(|r| r.read_only.p99_s),
                mutating_p99_s: worst(|r| r.mutating.p99_s),
                rejection: if interval_requests > 0.0 {
                    interval_rejected / interval_requests
                } else {
                    0.0
                },
                pod_startup_p99_s: pod_p99,
                slo_violation_min: violation_s / 60.0,
                apiserver_cores: o.settings.apiservers.iter().map(|s| s.cpu_cores).collect(),
                apiserver_cores_used: o.replicas.iter().map(|r| r.cpu_used_cores).collect(),
                max_requests_inflight: o
                    .settings
                    .apiservers
                    .iter()
                    .map(|s| s.max_requests_inflight)
                    .collect(),
                max_mutating_requests_inflight: o
                    .settings
                    .apiservers
                    .iter()
                    .map(|s| s.max_mutating_requests_inflight)
                    .collect(),
                queue_length: o
                    .settings
                    .apiservers
                    .iter()
                    .map(|s| s.queue_length)
                    .collect(),
                scheduler_qps: o.settings.scheduler.client_qps,
                controller_manager_qps: o.settings.controller_manager.client_qps,
            });
        }
        let hours = |o: &IntervalObservation| o.length_s / 3600.0;
        let apiserver_core_hours = observed
            .iter()
            .map(|o| {
                o.settings
                    .apiservers
                    .iter()
                    .map(|s| s.cpu_cores)
                    .sum::<f64>()
                    * hours(o)
            })
            .sum();
        let client_core_hours = observed
            .iter()
            .map(|o| {
                (o.settings.scheduler.cpu_cores + o.settings.controller_manager.cpu_cores)
                    * hours(o)
            })
            .sum();

        let storms = workload.storm_windows();
        let storm_pod_startup_p99_s = storms
            .iter()
            .filter_map(|(s, e)| pipeline.delay_p99_s(*s, *e))
            .map(|p| p + kubelet)
            .reduce(f64::max);
        let storm_clear_s = storms
            .iter()
            .map(|(s, e)| pipeline.clear_time_s(*s, *e))
            .collect::<Option<Vec<f64>>>()
            .and_then(|v| v.into_iter().reduce(f64::max));
        let storm_predicted_scheduler_clear_s = workload
            .pod_storms
            .iter()
            .filter_map(|storm| {
                let at = storm.start_h * 3600.0;
                let o = observed
                    .iter()
                    .find(|o| o.start_s <= at && at < o.start_s + o.length_s)?;
                pods::predicted_storm_clear_s(workload, storm.pods, &o.settings.scheduler)
            })
            .reduce(f64::max);

        let series = |f: fn(&IntervalPoint) -> f64| intervals.iter().map(f).collect::<Vec<_>>();
        let worst = |v: Vec<f64>| v.into_iter().fold(0.0, f64::max);
        let summary = PolicySummary {
            policy: kind,
            read_only_p99_worst_s: worst(series(|p| p.read_only_p99_s)),
            read_only_p99_median_s: median(series(|p| p.read_only_p99_s)),
            mutating_p99_worst_s: worst(series(|p| p.mutating_p99_s)),
            mutating_p99_median_s: median(series(|p| p.mutating_p99_s)),
            rejection_rate: if requests > 0.0 {
                rejected / requests
            } else {
                0.0
            },
            rejected_requests: rejected,
            slo_violation_minutes: series(|p| p.slo_violation_min).iter().sum(),
            apiserver_core_hours,
            client_core_hours,
            storm_pod_startup_p99_s,
            storm_clear_s,
            storm_predicted_scheduler_clear_s,
        };
        Self {
            summary,
            intervals,
            arak: arak.map(|a| ArakActivity {
                rounds: a.rounds,
                changes: a.changes,
                holds: a.holds.clone(),
                applied_by: "through the updater's flag editing, all replicas at once",
            }),
        }
    }
}

impl DayReport {
    pub fn new(options: &Options, policies: Vec<PolicyRun>) -> Self {
        Self {
            intervals: options.intervals,
            interval_s: super::workload::DAY_S / options.intervals as f64,
            apiserver_replicas: options.policy.apiservers.len(),
            sample_window_s: options.sample_window_s,
            seed: options.seed,
            workload: options.workload.clone(),
            policies,
            plots: vec![],
            run_time_s: 0.0,
        }
    }

    /// The table a person reads: one row per policy.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "A day of load on {} apiservers, a scheduler and a controller-manager: {} intervals of {:.0} min, \
             {:.0} s simulated per replica and interval, seed {}.",
            self.apiserver_replicas,
            self.intervals,
            self.interval_s / 60.0,
            self.sample_window_s,
            self.seed
        );
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "{:<8} {:>17} {:>17} {:>9} {:>9} {:>9} {:>10}",
            "", "readOnly P99 s", "mutating P99 s", "429", "SLO-miss", "CPU", "storm pod"
        );
        let _ = writeln!(
            w,
            "{:<8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10}",
            "policy",
            "worst",
            "median",
            "worst",
            "median",
            "rate",
            "minutes",
            "core-h",
            "start P99"
        );
        for run in &self.policies {
            let s = &run.summary;
            let _ = writeln!(
                w,
                "{:<8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9.0} {:>9.1} {:>10}",
                s.policy_name(),
                seconds(s.read_only_p99_worst_s),
                seconds(s.read_only_p99_median_s),
                seconds(s.mutating_p99_worst_s),
                seconds(s.mutating_p99_median_s),
                rate(s.rejection_rate),
                s.slo_violation_minutes + 0.0,
                s.apiserver_core_hours,
                s.storm_pod_startup_p99_s
                    .map_or("-".into(), |v| format!("{} s", seconds(v))),
            );
        }
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "SLO-miss minutes: a class's P99 over 1 s, 429s over 1e-4 of requests, or pod startup P99 over 5 s. \
             CPU: apiserver cores allocated × hours (scheduler and controller-manager: {}). \
             Storm pod start: from the ask to running.",
            self.policies
                .iter()
                .map(|r| format!(
                    "{} {:.1}",
                    r.summary.policy_name(),
                    r.summary.client_core_hours
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for run in &self.policies {
            if let Some(a) = &run.arak {
                let holds: Vec<String> = a
                    .holds
                    .iter()
                    .map(|(reason, n)| format!("{n}× {reason}"))
                    .collect();
                let _ = writeln!(
                    w,
                    "arak: {} rounds of the recommender, {} changes applied {}; held: {}.",
                    a.rounds,
                    a.changes,
                    a.applied_by,
                    if holds.is_empty() {
                        "never".into()
                    } else {
                        holds.join(", ")
                    }
                );
            }
        }
        if !self.plots.is_empty() {
            let _ = writeln!(w, "Plots: {}", self.plots.join(", "));
        }
        let _ = writeln!(w, "Ran in {:.1} s.", self.run_time_s);
        out
    }
}

impl PolicySummary {
    fn policy_name(&self) -> &'static str {
        self.policy.name()
    }
}

fn seconds(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn rate(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v:.1e}")
    }
}
