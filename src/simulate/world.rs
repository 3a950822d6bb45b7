//! One simulated control plane: its apiserver replicas run each interval through the
//! two-class processor-sharing simulator of `queue_model::sim`, the pods through the fluid
//! pipeline, and what they showed is kept as the interval's observation.

use anyhow::Context;
use queue_model::sim::{ClassReport, SimClass, SimConfig, simulate};
use recommender::{ApiserverSettings, ClientSettings};
use serde::Serialize;

use super::pods::{Pipeline, PodInterval};
use super::workload::{RequestCost, Workload};

/// The knobs every policy sets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub apiservers: Vec<ApiserverSettings>,
    pub scheduler: ClientSettings,
    pub controller_manager: ClientSettings,
}

/// SLOs the day is judged by (Kubernetes' own).
#[derive(Debug, Clone, Copy)]
pub struct Slo {
    pub read_only_p99_s: f64,
    pub mutating_p99_s: f64,
    pub rejection: f64,
    pub pod_startup_p99_s: f64,
}

/// How much of each interval is simulated.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// Simulated seconds per replica and load segment.
    pub window_s: f64,
    pub seed: u64,
}

/// One class on one replica over an interval.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ClassObservation {
    pub arrival_rate: f64,
    pub rejection: f64,
    pub mean_s: f64,
    pub p50_s: f64,
    pub p90_s: f64,
    pub p99_s: f64,
    /// Requests the simulation measured (the latency's sample size).
    pub sampled: u64,
    /// Requests executing or queued, mean and a high mark.
    pub in_system_mean: f64,
    pub in_system_max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaObservation {
    pub read_only: ClassObservation,
    pub mutating: ClassObservation,
    pub cpu_used_cores: f64,
    pub resident_memory_bytes: f64,
    pub peak_resident_memory_bytes: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IntervalObservation {
    pub index: i64,
    /// Seconds since the first simulated midnight.
    pub start_s: f64,
    pub length_s: f64,
    pub settings: Settings,
    /// Cluster-wide offered request rates (pod writes included).
    pub read_only_rps: f64,
    pub mutating_rps: f64,
    pub replicas: Vec<ReplicaObservation>,
    /// Seconds of the interval in which some replica missed an apiserver SLO.
    pub apiserver_violation_s: f64,
    #[serde(skip)]
    pub pods: PodInterval,
}

/// Resident memory of an apiserver: a fixed heap plus a little per request in flight.
const BASE_MEMORY_BYTES: f64 = 1.5 * 1024.0 * 1024.0 * 1024.0;
const BYTES_PER_REQUEST: f64 = 1024.0 * 1024.0;
/// Sub-steps of the interval whose load is this much above the median form the peak segment.
const PEAK_SEGMENT_FACTOR: f64 = 1.1;
/// Fewest arrivals a sample may have, so quiet intervals still give a P99.
const MIN_ARRIVALS: u64 = 2_000;

pub struct World {
    pub settings: Settings,
    pipeline: Pipeline,
    last_mutating_rejection: f64,
}

/// One replica's load over a stretch of the interval.
#[derive(Debug, Clone, Copy)]
struct Segment {
    duration_s: f64,
    read_only_rps: f64,
    mutating_rps: f64,
    read_only_cost: RequestCost,
}

impl World {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            pipeline: Pipeline::default(),
            last_mutating_rejection: 0.0,
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Runs interval `index` (negative: before the first midnight) of `length_s` seconds.
    pub fn run_interval(
        &mut self,
        workload: &Workload,
        index: i64,
        length_s: f64,
        sampling: Sampling,
        slo: &Slo,
    ) -> anyhow::Result<IntervalObservation> {
        let from = index as f64 * length_s;
        let to = from + length_s;
        let substeps = (length_s / 60.0).ceil().max(1.0) as usize;
        let pods = self.pipeline.advance(
            workload,
            from,
            to,
            &self.settings.scheduler,
            &self.settings.controller_manager,
            self.last_mutating_rejection,
            substeps,
        );
        let replicas = self.settings.apiservers.len() as f64;
        let sub_s = length_s / substeps as f64;
        // The load balancer splits every request evenly over the replicas.
        let steps: Vec<Segment> = (0..substeps)
            .map(|k| {
                let t = from + k as f64 * sub_s;
                let r = workload.requests(t, t + sub_s);
                Segment {
                    duration_s: sub_s,
                    read_only_rps: r.read_only_rps / replicas,
                    mutating_rps: (r.mutating_rps + pods.write_rps[k]) / replicas,
                    read_only_cost: r.read_only_cost,
                }
            })
            .collect();
        let segments = split_segments(&steps, workload);

        let mut observations = Vec::new();
        // Per segment: a replica's P99 over its SLO, and each class's requests and rejections
        // summed over the replicas (the 429 share a client behind the load balancer sees).
        let mut late = vec![false; segments.len()];
        let mut requests = vec![[0.0f64; 2]; segments.len()];
        let mut rejections = vec![[0.0f64; 2]; segments.len()];
        for (r, setting) in self.settings.apiservers.iter().enumerate() {
            let mut runs = Vec::new();
            for (g, segment) in segments.iter().enumerate() {
                let seed = mix(mix(mix(sampling.seed, index as u64), r as u64), g as u64);
                let report = run_segment(workload, setting, segment, sampling.window_s, seed)
                    .with_context(|| format!("interval {index}, apiserver {r}"))?;
                late[g] |= report.read_only.p99_response_s > slo.read_only_p99_s
                    || report.mutating.p99_response_s > slo.mutating_p99_s;
                for (k, (rate, class)) in [
                    (segment.read_only_rps, &report.read_only),
                    (segment.mutating_rps, &report.mutating),
                ]
                .into_iter()
                .enumerate()
                {
                    requests[g][k] += rate * segment.duration_s;
                    rejections[g][k] += rate * segment.duration_s * class.rejection_rate;
                }
                runs.push((segment, report));
            }
            observations.push(combine(&runs, setting));
        }
        let violating: Vec<bool> = (0..segments.len())
            .map(|g| {
                late[g]
                    || (0..2).any(|k| {
                        requests[g][k] > 0.0 && rejections[g][k] / requests[g][k] > slo.rejection
                    })
            })
            .collect();
        let mutating_offered: f64 = requests.iter().map(|r| r[1]).sum();
        let mutating_rejected: f64 = rejections.iter().map(|r| r[1]).sum();
        self.last_mutating_rejection = if mutating_offered > 0.0 {
            mutating_rejected / mutating_offered
        } else {
            0.0
        };
        let apiserver_violation_s = segments
            .iter()
            .zip(&violating)
            .filter(|(_, v)| **v)
            .map(|(s, _)| s.duration_s)
            .sum();
        let mean = |f: fn(&Segment) -> f64| {
            steps.iter().map(|s| f(s) * s.duration_s).sum::<f64>() / length_s * replicas
        };
        Ok(IntervalObservation {
            index,
            start_s: from,
            length_s,
            settings: self.settings.clone(),
            read_only_rps: mean(|s| s.read_only_rps),
            mutating_rps: mean(|s| s.mutating_rps),
            replicas: observations,
            apiserver_violation_s,
            pods,
        })
    }

    /// Lets the pipeline finish what the day left pending, so late pods get a startup time.
    pub fn drain(&mut self, workload: &Workload, from_s: f64, length_s: f64) {
        self.pipeline.advance(
            workload,
            from_s,
            from_s + length_s,
            &self.settings.scheduler,
            &self.settings.controller_manager,
            self.last_mutating_rejection,
            1,
        );
    }
}

/// The two simulated classes' reports.
struct SegmentReport {
    read_only: ClassReport,
    mutating: ClassReport,
    cpu_used_cores: f64,
}

fn run_segment(
    workload: &Workload,
    setting: &ApiserverSettings,
    segment: &Segment,
    window_s: f64,
    seed: u64,
) -> anyhow::Result<SegmentReport> {
    let total_rate = segment.read_only_rps + segment.mutating_rps;
    let baseline = workload.apiserver_baseline_cpu_cores;
    if total_rate <= 0.0 {
        let idle = ClassReport {
            arrivals: 0,
            rejected: 0,
            rejection_rate: 0.0,
            throughput: 0.0,
            mean_response_s: 0.0,
            p50_response_s: 0.0,
            p90_response_s: 0.0,
            p99_response_s: 0.0,
        };
        return Ok(SegmentReport {
            read_only: idle.clone(),
            mutating: idle,
            cpu_used_cores: baseline.min(setting.cpu_cores),
        });
    }
    // The baseline burn is not available to requests; a sliver is always left to them.
    let cores = (setting.cpu_cores - baseline).max(0.05);
    let class = |rate: f64, cost: RequestCost, limit: u32| SimClass {
        arrival_rate: rate,
        cpu_s: cost.cpu_s,
        non_cpu_s: cost.non_cpu_s,
        concurrency_limit: limit.max(1),
        queue_length: Some(setting.queue_length),
    };
    let arrivals = ((total_rate * window_s).ceil() as u64).max(MIN_ARRIVALS);
    let config = SimConfig {
        cores,
        classes: vec![
            class(
                segment.read_only_rps,
                segment.read_only_cost,
                setting.max_requests_inflight,
            ),
            class(
                segment.mutating_rps,
                workload.mutating,
                setting.max_mutating_requests_inflight,
            ),
        ],
        arrivals,
        // Long enough for the queues to fill to their typical level first.
        warmup_arrivals: arrivals / 5,
        seed,
    };
    let report = simulate(&config)?;
    let mut classes = report.classes.into_iter();
    let (read_only, mutating) = (classes.next().unwrap(), classes.next().unwrap());
    Ok(SegmentReport {
        read_only,
        mutating,
        cpu_used_cores: report.cpu_utilization * cores + baseline.min(setting.cpu_cores),
    })
}

/// Groups the interval's sub-steps into an ordinary and (if there is one) a peak segment, so a
/// short burst is simulated at its own load rather than diluted into the interval's mean.
fn split_segments(steps: &[Segment], workload: &Workload) -> Vec<Segment> {
    let cpu = |s: &Segment| {
        s.read_only_rps * s.read_only_cost.cpu_s + s.mutating_rps * workload.mutating.cpu_s
    };
    let mut sorted: Vec<f64> = steps.iter().map(cpu).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let (peak, ordinary): (Vec<&Segment>, Vec<&Segment>) = steps
        .iter()
        .partition(|s| cpu(s) > median * PEAK_SEGMENT_FACTOR);
    [ordinary, peak]
        .into_iter()
        .filter(|group| !group.is_empty())
        .map(|group| {
            let duration: f64 = group.iter().map(|s| s.duration_s).sum();
            let weighted = |f: &dyn Fn(&Segment) -> f64| {
                group.iter().map(|s| f(s) * s.duration_s).sum::<f64>()
            };
            let read = weighted(&|s| s.read_only_rps);
            let cost = |f: &dyn Fn(&RequestCost) -> f64| {
                if read > 0.0 {
                    weighted(&|s| s.read_only_rps * f(&s.read_only_cost)) / read
                } else {
                    f(&group[0].read_only_cost)
                }
            };
            Segment {
                duration_s: duration,
                read_only_rps: read / duration,
                mutating_rps: weighted(&|s| s.mutating_rps) / duration,
                read_only_cost: RequestCost {
                    cpu_s: cost(&|c| c.cpu_s),
                    non_cpu_s: cost(&|c| c.non_cpu_s),
                },
            }
        })
        .collect()
}

/// One replica's interval from its segments: rates and CPU weighted by time, the P99 of the
/// worst segment (what the interval's worst minutes showed).
fn combine(runs: &[(&Segment, SegmentReport)], setting: &ApiserverSettings) -> ReplicaObservation {
    let total_s: f64 = runs.iter().map(|(s, _)| s.duration_s).sum();
    let class = |rate: fn(&Segment) -> f64, report: fn(&SegmentReport) -> &ClassReport| {
        let requests: f64 = runs.iter().map(|(s, _)| rate(s) * s.duration_s).sum();
        let weighted = |f: fn(&ClassReport) -> f64| {
            if requests > 0.0 {
                runs.iter()
                    .map(|(s, r)| f(report(r)) * rate(s) * s.duration_s)
                    .sum::<f64>()
                    / requests
            } else {
                0.0
            }
        };
        let in_system: Vec<f64> = runs
            .iter()
            .map(|(_, r)| report(r).throughput * report(r).mean_response_s)
            .collect();
        let in_system_mean = runs
            .iter()
            .zip(&in_system)
            .map(|((s, _), n)| n * s.duration_s)
            .sum::<f64>()
            / total_s;
        let high = in_system.iter().copied().fold(0.0, f64::max);
        ClassObservation {
            arrival_rate: requests / total_s,
            rejection: weighted(|c| c.rejection_rate),
            mean_s: weighted(|c| c.mean_response_s),
            p50_s: weighted(|c| c.p50_response_s),
            p90_s: weighted(|c| c.p90_response_s),
            p99_s: runs
                .iter()
                .map(|(_, r)| report(r).p99_response_s)
                .fold(0.0, f64::max),
            sampled: runs.iter().map(|(_, r)| report(r).arrivals).sum(),
            in_system_mean,
            // Poisson-like spread around the busiest segment's mean.
            in_system_max: high + 3.0 * high.sqrt(),
        }
    };
    let read_only = class(|s| s.read_only_rps, |r| &r.read_only);
    let mutating = class(|s| s.mutating_rps, |r| &r.mutating);
    let cpu_used_cores = runs
        .iter()
        .map(|(s, r)| r.cpu_used_cores * s.duration_s)
        .sum::<f64>()
        / total_s;
    let capacity = f64::from(setting.total_inflight());
    let memory = |n: f64| BASE_MEMORY_BYTES + BYTES_PER_REQUEST * n.min(capacity);
    ReplicaObservation {
        resident_memory_bytes: memory(read_only.in_system_mean + mutating.in_system_mean),
        peak_resident_memory_bytes: memory(read_only.in_system_max + mutating.in_system_max),
        read_only,
        mutating,
        cpu_used_cores,
    }
}

/// splitmix64: independent seeds per interval, replica and segment from one `--seed`; the
/// policies share them, so they are compared on the same random arrivals.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a
        .wrapping_add(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
