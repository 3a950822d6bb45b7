//! The day of load `arak simulate` runs through: a diurnal curve of apiserver requests, LIST
//! bursts and pod-creation storms, read from YAML or built in. Times are of one day, in
//! hours since midnight; the curve repeats every day, so yesterday's evening is the same.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

pub const DAY_S: f64 = 86_400.0;

/// What one request of a class costs the apiserver, on average (exponentially distributed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestCost {
    pub cpu_s: f64,
    /// etcd, admission, network: time that does not hold a core.
    pub non_cpu_s: f64,
}

/// Extra LIST requests for a while (a controller resyncing, a dashboard refreshing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListBurst {
    pub start_h: f64,
    pub duration_min: f64,
    /// Cluster-wide LIST requests per second on top of the curve.
    pub rate_rps: f64,
    pub cost: RequestCost,
}

/// Many pods asked for at once (a big Deployment scaled up, a batch job).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodStorm {
    pub start_h: f64,
    /// The pods are asked for evenly over this long.
    pub duration_min: f64,
    pub pods: u32,
}

/// How pods go through the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodPipeline {
    /// Pods created per second at the day's peak outside storms (follows the curve).
    pub peak_churn_pods_per_s: f64,
    /// Controller-manager writes per pod it creates (the pod, the ReplicaSet's status).
    pub controller_manager_requests_per_pod: f64,
    /// Controller-manager requests per second that are not about new pods (leases, endpoints,
    /// status): they share its client token bucket.
    pub controller_manager_background_rps: f64,
    /// Scheduler writes per pod (the binding).
    pub scheduler_requests_per_pod: f64,
    /// Pods per second the scheduling algorithm places when nothing else limits it.
    pub scheduler_algorithm_rate: f64,
    /// Kubelet status writes per started pod: mutating apiserver load no arak knob limits.
    pub kubelet_writes_per_pod: f64,
    /// From binding to the pod running (image present), seconds.
    pub kubelet_start_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Cluster-wide requests per second at the peak of the curve, long-running ones excluded.
    pub peak_read_only_rps: f64,
    pub peak_mutating_rps: f64,
    /// The night's rate as a share of the peak.
    pub trough_share: f64,
    /// Hour of the peak; the trough is twelve hours away.
    pub peak_hour: f64,
    pub read_only: RequestCost,
    pub mutating: RequestCost,
    /// CPU an apiserver burns with no requests (watches, GC), cores.
    pub apiserver_baseline_cpu_cores: f64,
    pub pods: PodPipeline,
    #[serde(default)]
    pub list_bursts: Vec<ListBurst>,
    #[serde(default)]
    pub pod_storms: Vec<PodStorm>,
}

/// The built-in day, written out in `config/examples/simulate-day.yaml`.
pub const BUILT_IN_YAML: &str = include_str!("../../config/examples/simulate-day.yaml");

impl Workload {
    pub fn built_in() -> Self {
        Self::from_yaml(BUILT_IN_YAML).expect("the built-in workload is valid")
    }

    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let workload: Workload = serde_norway::from_str(text).context("workload YAML")?;
        workload.validate()?;
        Ok(workload)
    }

    /// Every error names the field and says what is wrong with it.
    pub fn validate(&self) -> anyhow::Result<()> {
        rate("peak_read_only_rps", self.peak_read_only_rps)?;
        rate("peak_mutating_rps", self.peak_mutating_rps)?;
        if self.peak_read_only_rps + self.peak_mutating_rps == 0.0 {
            bail!(
                "workload: peak_read_only_rps and peak_mutating_rps are both 0: nothing to simulate"
            );
        }
        if !(0.0..=1.0).contains(&self.trough_share) {
            bail!(
                "workload: trough_share must be within [0, 1], got {}",
                self.trough_share
            );
        }
        hour("peak_hour", self.peak_hour)?;
        cost("read_only", &self.read_only)?;
        cost("mutating", &self.mutating)?;
        non_negative(
            "apiserver_baseline_cpu_cores",
            self.apiserver_baseline_cpu_cores,
        )?;
        let p = &self.pods;
        non_negative("pods.peak_churn_pods_per_s", p.peak_churn_pods_per_s)?;
        non_negative(
            "pods.controller_manager_requests_per_pod",
            p.controller_manager_requests_per_pod,
        )?;
        non_negative(
            "pods.controller_manager_background_rps",
            p.controller_manager_background_rps,
        )?;
        positive(
            "pods.scheduler_requests_per_pod",
            p.scheduler_requests_per_pod,
        )?;
        positive("pods.scheduler_algorithm_rate", p.scheduler_algorithm_rate)?;
        non_negative("pods.kubelet_writes_per_pod", p.kubelet_writes_per_pod)?;
        non_negative("pods.kubelet_start_s", p.kubelet_start_s)?;
        for (i, b) in self.list_bursts.iter().enumerate() {
            hour(&format!("list_bursts[{i}].start_h"), b.start_h)?;
            positive(&format!("list_bursts[{i}].duration_min"), b.duration_min)?;
            rate(&format!("list_bursts[{i}].rate_rps"), b.rate_rps)?;
            cost(&format!("list_bursts[{i}].cost"), &b.cost)?;
        }
        for (i, s) in self.pod_storms.iter().enumerate() {
            hour(&format!("pod_storms[{i}].start_h"), s.start_h)?;
            positive(&format!("pod_storms[{i}].duration_min"), s.duration_min)?;
        }
        Ok(())
    }

    /// The curve's share of the peak at `t_s` seconds since some midnight: a cosine from the
    /// trough (12 h from the peak) to 1 at the peak.
    pub fn diurnal_share(&self, t_s: f64) -> f64 {
        let hours_from_peak = t_s / 3600.0 - self.peak_hour;
        let wave = (1.0 + (std::f64::consts::TAU * hours_from_peak / 24.0).cos()) / 2.0;
        self.trough_share + (1.0 - self.trough_share) * wave
    }

    /// Mean request rates and readOnly cost over `[from_s, to_s)`, cluster-wide.
    pub fn requests(&self, from_s: f64, to_s: f64) -> Requests {
        let mid = 0.5 * (from_s + to_s);
        let share = self.diurnal_share(mid);
        let mut read = self.peak_read_only_rps * share;
        let (mut cpu_work, mut other_work) =
            (read * self.read_only.cpu_s, read * self.read_only.non_cpu_s);
        for b in &self.list_bursts {
            let on = overlap_share(from_s, to_s, b.start_h * 3600.0, b.duration_min * 60.0);
            let rate = b.rate_rps * on;
            read += rate;
            cpu_work += rate * b.cost.cpu_s;
            other_work += rate * b.cost.non_cpu_s;
        }
        // LISTs and GETs share the readOnly class: its cost is their rate-weighted mean.
        let read_only_cost = if read > 0.0 {
            RequestCost {
                cpu_s: cpu_work / read,
                non_cpu_s: other_work / read,
            }
        } else {
            self.read_only
        };
        Requests {
            read_only_rps: read,
            mutating_rps: self.peak_mutating_rps * share,
            read_only_cost,
        }
    }

    /// Pods asked for per second, averaged over `[from_s, to_s)`: churn plus storms.
    pub fn pod_demand(&self, from_s: f64, to_s: f64) -> f64 {
        let churn = self.pods.peak_churn_pods_per_s * self.diurnal_share(0.5 * (from_s + to_s));
        let storms: f64 = self
            .pod_storms
            .iter()
            .map(|s| {
                let length = s.duration_min * 60.0;
                f64::from(s.pods) / length * overlap_share(from_s, to_s, s.start_h * 3600.0, length)
            })
            .sum();
        churn + storms
    }

    /// The storms as `[start, end)` seconds since midnight.
    pub fn storm_windows(&self) -> Vec<(f64, f64)> {
        self.pod_storms
            .iter()
            .map(|s| {
                (
                    s.start_h * 3600.0,
                    s.start_h * 3600.0 + s.duration_min * 60.0,
                )
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Requests {
    pub read_only_rps: f64,
    pub mutating_rps: f64,
    pub read_only_cost: RequestCost,
}

/// Share of `[from, to)` covered by an event of `length` starting at `start` on every day.
fn overlap_share(from: f64, to: f64, start: f64, length: f64) -> f64 {
    if to <= from {
        return 0.0;
    }
    let first_day = (from / DAY_S).floor() - 1.0;
    let last_day = (to / DAY_S).floor();
    let mut covered = 0.0;
    let mut day = first_day;
    while day <= last_day {
        let (s, e) = (day * DAY_S + start, day * DAY_S + start + length);
        covered += (e.min(to) - s.max(from)).max(0.0);
        day += 1.0;
    }
    covered / (to - from)
}

fn positive(name: &str, v: f64) -> anyhow::Result<()> {
    if !(v.is_finite() && v > 0.0) {
        bail!("workload: {name} must be a number greater than 0, got {v}");
    }
    Ok(())
}

fn non_negative(name: &str, v: f64) -> anyhow::Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        bail!("workload: {name} must be a number at least 0, got {v}");
    }
    Ok(())
}

/// Most requests per second a workload may ask of the whole control plane: the largest
/// clusters see about 2·10⁴, and the simulation's time grows with every arrival
/// (`peak_read_only_rps: 1e9` ran for minutes).
pub const MAX_CLUSTER_RPS: f64 = 100_000.0;

fn rate(name: &str, v: f64) -> anyhow::Result<()> {
    non_negative(name, v)?;
    if v > MAX_CLUSTER_RPS {
        bail!(
            "workload: {name} is {v} requests/s, above {MAX_CLUSTER_RPS}: more than any cluster serves"
        );
    }
    Ok(())
}

impl Workload {
    /// The most requests per second the workload asks at once: the peak of the curve and
    /// every list burst together.
    pub fn peak_rps(&self) -> f64 {
        self.peak_read_only_rps
            + self.peak_mutating_rps
            + self.list_bursts.iter().map(|b| b.rate_rps).sum::<f64>()
    }
}

fn hour(name: &str, v: f64) -> anyhow::Result<()> {
    if !(v.is_finite() && (0.0..24.0).contains(&v)) {
        bail!("workload: {name} must be an hour within [0, 24), got {v}");
    }
    Ok(())
}

fn cost(name: &str, c: &RequestCost) -> anyhow::Result<()> {
    non_negative(&format!("{name}.cpu_s"), c.cpu_s)?;
    non_negative(&format!("{name}.non_cpu_s"), c.non_cpu_s)?;
    if c.cpu_s + c.non_cpu_s < queue_model::MIN_REQUEST_S {
        bail!(
            "workload: {name}.cpu_s + {name}.non_cpu_s is {}: a request takes at least a microsecond",
            c.cpu_s + c.non_cpu_s
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Few cases per CI run; the long fuzz job sets `PROPTEST_CASES`, e.g.
    /// `PROPTEST_CASES=20000 cargo test --release --bin arak hostile`.
    fn config() -> proptest::test_runner::Config {
        proptest::test_runner::Config {
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(64),
            ..Default::default()
        }
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            proptest::num::f64::ANY,
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(1e9),
            Just(1e-300),
            Just(-1.0),
            0.0f64..100.0,
        ]
    }

    proptest! {
        #![proptest_config(config())]

        /// The built-in day with numbers swapped for any float: refused at the door, or every
        /// interval's load is finite and within what the simulation is bounded to
        /// (`peak_read_only_rps: 1e9` ran for minutes).
        #[test]
        fn hostile_workloads_are_refused_or_bounded(
            picks in prop::collection::vec((0usize..64, float()), 1..4),
        ) {
            let numbers = number_spans(BUILT_IN_YAML);
            let mut text = BUILT_IN_YAML.to_owned();
            // Replace from the back so earlier spans stay put.
            let mut spans: Vec<_> = picks
                .iter()
                .map(|(i, x)| (numbers[i % numbers.len()].clone(), *x))
                .collect();
            spans.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
            spans.dedup_by_key(|(r, _)| r.start);
            for (range, x) in spans {
                let yaml = if x.is_nan() { ".nan".into() } else if x.is_infinite() { ".inf".into() } else { format!("{x:e}") };
                text.replace_range(range, &yaml);
            }
            let Ok(w) = Workload::from_yaml(&text) else { return Ok(()) };
            prop_assert!(w.peak_rps() <= MAX_CLUSTER_RPS * (2 + w.list_bursts.len()) as f64);
            for hour in 0..24 {
                let r = w.requests(f64::from(hour) * 3600.0, f64::from(hour + 1) * 3600.0);
                prop_assert!(r.read_only_rps.is_finite() && r.read_only_rps >= 0.0, "{r:?}");
                prop_assert!(r.mutating_rps.is_finite() && r.mutating_rps >= 0.0, "{r:?}");
            }
        }
    }

    /// Byte spans of the numbers written after `: ` in a YAML text.
    fn number_spans(text: &str) -> Vec<std::ops::Range<usize>> {
        let mut spans = Vec::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i + 1 < bytes.len() {
            if bytes[i] == b':' && bytes[i + 1] == b' ' {
                let start = i + 2;
                let end = (start..bytes.len())
                    .find(|&j| !(bytes[j].is_ascii_digit() || bytes[j] == b'.'))
                    .unwrap_or(bytes.len());
                if end > start {
                    spans.push(start..end);
                }
            }
            i += 1;
        }
        spans
    }

    #[test]
    fn the_curve_peaks_at_the_peak_hour_and_bottoms_out_twelve_hours_away() {
        let w = Workload::built_in();
        let at = |h: f64| w.diurnal_share(h * 3600.0);
        assert!((at(w.peak_hour) - 1.0).abs() < 1e-12);
        assert!((at(w.peak_hour - 12.0) - w.trough_share).abs() < 1e-12);
        assert!((at(w.peak_hour + 12.0) - w.trough_share).abs() < 1e-12);
        // Periodic, and rising towards the peak.
        assert!((at(3.0) - at(27.0)).abs() < 1e-12);
        assert!(at(w.peak_hour - 2.0) < at(w.peak_hour - 1.0));
        for h in 0..48 {
            let s = at(f64::from(h) / 2.0);
            assert!((w.trough_share..=1.0).contains(&s), "{h}: {s}");
        }
    }

    #[test]
    fn bursts_and_storms_add_only_where_they_overlap() {
        let w = Workload::built_in();
        let b = w.list_bursts[0];
        let (start, end) = (
            b.start_h * 3600.0,
            b.start_h * 3600.0 + b.duration_min * 60.0,
        );
        let before = w.requests(start - 600.0, start);
        let during = w.requests(start, end);
        assert!(during.read_only_rps > before.read_only_rps + 0.9 * b.rate_rps);
        // LISTs cost more than GETs, so the mixed class costs more per request.
        assert!(during.read_only_cost.cpu_s > before.read_only_cost.cpu_s);
        // Half the burst in a window twice its length: half the rate.
        let half = w.requests(start - (end - start), end);
        let base = w.peak_read_only_rps * w.diurnal_share(start);
        assert!((half.read_only_rps - base - b.rate_rps / 2.0).abs() < 0.02 * base);

        let s = w.pod_storms[0];
        let (from, to) = (
            s.start_h * 3600.0,
            s.start_h * 3600.0 + s.duration_min * 60.0,
        );
        let pods = w.pod_demand(from, to) * (to - from);
        assert!(pods >= f64::from(s.pods), "{pods}");
        assert!(w.pod_demand(to, to + 600.0) < 1.0 + w.pods.peak_churn_pods_per_s);
    }

    #[test]
    fn events_repeat_every_day() {
        assert_eq!(overlap_share(0.0, 100.0, 50.0, 100.0), 0.5);
        assert_eq!(overlap_share(DAY_S, DAY_S + 100.0, 50.0, 100.0), 0.5);
        // Yesterday's late event spills over midnight.
        assert_eq!(overlap_share(0.0, 100.0, DAY_S - 50.0, 100.0), 0.5);
        assert_eq!(overlap_share(-100.0, 0.0, DAY_S - 50.0, 100.0), 0.5);
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = BUILT_IN_YAML.replace("trough_share: 0.3", "trough_share: 1.5");
        let e = Workload::from_yaml(&bad).unwrap_err().to_string();
        assert!(e.contains("trough_share"), "{e}");
        let unknown = format!("{BUILT_IN_YAML}\nsurprise: 1\n");
        let e = format!("{:#}", Workload::from_yaml(&unknown).unwrap_err());
        assert!(e.contains("surprise"), "{e}");
        let bad = BUILT_IN_YAML.replace("duration_min: 15", "duration_min: -15");
        let e = Workload::from_yaml(&bad).unwrap_err().to_string();
        assert!(e.contains("list_bursts[0].duration_min"), "{e}");
    }
}
