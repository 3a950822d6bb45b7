//! Calibration: what a request costs on one apiserver replica (CPU seconds by least squares
//! of CPU on the per-class arrival rates, off-CPU time and its spread from latency at low
//! load), and what the scheduler and controller-manager clients need. Thin or implausible data falls back
//! to the policy's priors, and the confidence says so.

use nalgebra::{DMatrix, DVector};
use queue_model::apiserver::{
    ApiserverLoad, ApiserverModel, ClassLimits, ClassLoad, ClassModel, EXPONENTIAL_SCV,
    MAX_NON_CPU_SCV, cpu_slowdown,
};
use queue_model::scheduler::SchedulerLoad;
use serde::{Deserialize, Serialize};

use crate::policy::{CalibrationPolicy, ClassPrior, ConfidenceLevel, Slo};
use crate::setting::ApiserverSettings;
use crate::snapshot::{ClientSample, ReplicaHistory, SchedulerSample};

/// Above this condition number (columns scaled to unit length) the rates move too much
/// together to tell the classes' costs apart.
const MAX_CONDITION: f64 = 1e3;
/// Latency samples above this CPU utilisation are not used to infer off-CPU time.
const LOW_LOAD_UTILIZATION: f64 = 0.7;
/// Off-CPU time above this is not believed (a stuck etcd, not a request cost).
const MAX_NON_CPU_S: f64 = 10.0;
/// A loaded step whose mean latency is this many times the model's at the quota is taken
/// for CPU the quota promised and the node did not give; below it, the model's own error.
/// Set between what was seen of each: on held-out points of the fidelity grid the model's
/// mean missed by up to 1.85x, and a converged overload window drifted to 1.6x the model's
/// mean with P99s of 0.3 s and no 429s (taken for contention at 1.5x, it predicted P99 7.5 s
/// and 12% rejections); a saturated window rejecting 11% showed 2.6x, the fidelity grid's
/// 1-core points 3.9x (docs/model-fidelity.md).
const CONTENTION_EXCESS: f64 = 2.0;
/// Cores found available above this share of the quota are within the model's error.
const CONTENTION_SHARE: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// cpu = baseline + D_ro·λ_ro + D_mu·λ_mu fitted freely.
    Regression,
    /// The priors' ratio of D_ro to D_mu kept, their scale fitted, baseline from the policy.
    ScaledPriors,
    /// The policy's priors as they are.
    Priors,
}

/// What requests cost on one apiserver replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiserverCalibration {
    pub read_only: ClassPrior,
    pub mutating: ClassPrior,
    /// CPU used with no requests (watches, GC), cores; not available to the queues.
    pub baseline_cpu_cores: f64,
    /// The CPU the process could get at load, baseline included, when that was clearly
    /// less than its quota: the node's other work (etcd, other components, neighbours'
    /// pods) took the rest and requests waited on the run queue, not on the quota. See
    /// [`available_cpu`]; the model counts on no more than this whatever the quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_cpu_cores: Option<f64>,
    pub method: CalibrationMethod,
    pub samples: usize,
    pub r_squared: Option<f64>,
    pub confidence: ConfidenceLevel,
    pub notes: Vec<String>,
}

/// What the calibrated model predicts for one apiserver at one load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PredictionAtLoad {
    /// CPU in use, the baseline included.
    pub cpu_cores: f64,
    pub read_only_p99_s: f64,
    pub mutating_p99_s: f64,
    pub read_only_rejection: f64,
    pub mutating_rejection: f64,
}

impl ApiserverCalibration {
    /// The model's prediction for `settings` at the given request rates: what a round
    /// judges settings by, for judging the model against a window measured after it.
    /// `None` when the settings leave no CPU beyond the baseline for requests.
    pub fn predict(
        &self,
        settings: &ApiserverSettings,
        read_only_rps: f64,
        mutating_rps: f64,
    ) -> Option<PredictionAtLoad> {
        let usable = self.queue_cores(settings.cpu_cores);
        if usable <= 0.0 {
            return None;
        }
        let model = ApiserverModel::new(
            &ApiserverLoad {
                read_only: self.read_only.load(read_only_rps),
                mutating: self.mutating.load(mutating_rps),
            },
            &settings.queue_setting(usable),
        )
        .ok()?;
        Some(PredictionAtLoad {
            cpu_cores: model.cpu_used_cores + self.baseline_cpu_cores,
            read_only_p99_s: model.read_only.response_percentile(0.99),
            mutating_p99_s: model.mutating.response_percentile(0.99),
            read_only_rejection: model.read_only.rejection_probability(),
            mutating_rejection: model.mutating.rejection_probability(),
        })
    }

    /// The cores a quota of `cores` leaves the queues.
    pub fn queue_cores(&self, cores: f64) -> f64 {
        queue_cores(cores, self.baseline_cpu_cores, self.available_cpu_cores)
    }

    fn priors(policy: &CalibrationPolicy, samples: usize, note: String) -> Self {
        Self {
            read_only: policy.read_only,
            mutating: policy.mutating,
            baseline_cpu_cores: policy.baseline_cpu_cores,
            available_cpu_cores: None,
            method: CalibrationMethod::Priors,
            samples,
            r_squared: None,
            confidence: ConfidenceLevel::Low,
            notes: vec![note],
        }
    }
}

/// The cores a quota of `cores` leaves the queues: the quota less the baseline, and no
/// more than the node was seen to give (`available`, baseline included).
pub fn queue_cores(cores: f64, baseline: f64, available: Option<f64>) -> f64 {
    available.map_or(cores, |a| cores.min(a)) - baseline
}

/// Calibrates one apiserver replica from its history, which ran at `running`; its last
/// `recent` steps (the current window) are judged for CPU the node did not give.
pub fn calibrate_apiserver(
    history: Option<&ReplicaHistory>,
    running: &ApiserverSettings,
    recent: usize,
    policy: &CalibrationPolicy,
) -> ApiserverCalibration {
    let cores = running.cpu_cores;
    let Some(h) = history else {
        return ApiserverCalibration::priors(policy, 0, "no history: priors".into());
    };
    let rows: Vec<[f64; 3]> = (0..h.cpu_cores.len())
        .filter_map(|t| {
            let row = [
                *h.read_only_rate.get(t)?.as_ref()?,
                *h.mutating_rate.get(t)?.as_ref()?,
                *h.cpu_cores.get(t)?.as_ref()?,
            ];
            row.iter()
                .all(|v| v.is_finite() && *v >= 0.0)
                .then_some(row)
        })
        .collect();
    if rows.len() < policy.min_samples {
        return ApiserverCalibration::priors(
            policy,
            rows.len(),
            format!(
                "{} usable samples < {}: priors",
                rows.len(),
                policy.min_samples
            ),
        );
    }
    let mut c = fit_cpu(&rows, policy);
    let (ro, ro_note) = off_cpu_time(h, &c, cores, policy.read_only, true);
    let (mu, mu_note) = off_cpu_time(h, &c, cores, policy.mutating, false);
    (c.read_only.non_cpu_s, c.read_only.non_cpu_scv) = (ro.mean_s, ro.scv);
    (c.mutating.non_cpu_s, c.mutating.non_cpu_scv) = (mu.mean_s, mu.scv);
    for note in [ro_note, mu_note].into_iter().flatten() {
        c.notes.push(note);
        // Latency the model cannot be checked against makes its P99 a guess.
        c.confidence = c.confidence.min(ConfidenceLevel::Medium);
    }
    if let Some((available, note)) = available_cpu(h, &c, running, recent) {
        c.available_cpu_cores = Some(available);
        c.notes.push(note);
        // A neighbour's load is measured for this window only.
        c.confidence = c.confidence.min(ConfidenceLevel::Medium);
    }
    c
}

/// One loaded step, as the contention estimate reads it.
struct LoadedStep {
    /// CPU in use for requests (less the baseline), cores.
    cpu: f64,
    /// The step's request rates at the calibrated costs.
    load: ApiserverLoad,
    /// Each class's weight in the mean: its rate where its mean latency was measured, else 0
    /// (at least one is not).
    weights: [f64; 2],
    /// Mean latency over the classes, so weighted.
    measured_mean_s: f64,
}

impl LoadedStep {
    /// The model's mean latency of accepted requests with `usable` cores for the queues
    /// and the limits that were running: past saturation the limits, not the cores, say
    /// how long requests wait, as on the real apiserver.
    fn modelled_mean_s(&self, usable: f64, running: &ApiserverSettings) -> f64 {
        let Ok(m) = ApiserverModel::new(&self.load, &running.queue_setting(usable)) else {
            return f64::INFINITY;
        };
        let [ro, mu] = self.weights;
        (ro * m.read_only.mean_response() + mu * m.mutating.mean_response()) / (ro + mu)
    }

    /// The cores at which the model's mean equals the measured one: `quota` when the model
    /// at the quota already explains it, or when the process used nearly all its quota
    /// (then the quota is what held it, not its neighbours).
    ///
    /// In the model's terms: the cores its requests' work had. That can be less than the
    /// CPU the process used, since a saturated apiserver also burns CPU the per-request
    /// costs do not count (thousands of waiting goroutines, a busier collector): the model
    /// then sees the saturation, with its rejections, that the apiserver showed. Half the
    /// CPU used is as far as the search goes.
    fn available(&self, quota: f64, running: &ApiserverSettings) -> f64 {
        if self.cpu >= CONTENTION_SHARE * quota
            || self.modelled_mean_s(quota, running) * CONTENTION_EXCESS >= self.measured_mean_s
        {
            return quota;
        }
        // Fewer cores, longer waits.
        let (mut lo, mut hi) = (0.5 * self.cpu, quota);
        for _ in 0..30 {
            let mid = 0.5 * (lo + hi);
            if self.modelled_mean_s(mid, running) > self.measured_mean_s {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }
}

/// The CPU the apiserver could get in the most loaded third of the last `recent` steps,
/// baseline included, when clearly below its quota; with a note for the round.
///
/// A quota is a ceiling, not a promise: on a node whose other processes want its cores too,
/// a request waits on the run queue while the quota is far from spent. On the shared test
/// machine an apiserver with a 1.5-core quota used 1.14 cores at 290 requests/s, rejected
/// 11% and answered at a mean of 0.8 s and a P99 of 2.6 s, where the model, sure of 1.5
/// cores, predicted 0.07 s and no rejections and the round held "every SLO met". The mean
/// latency at load, against the costs calibrated at low load and the limits that were
/// running, shows how many cores the queues really had: the cores at which the model's
/// mean matches the measured one.
fn available_cpu(
    h: &ReplicaHistory,
    c: &ApiserverCalibration,
    running: &ApiserverSettings,
    recent: usize,
) -> Option<(f64, String)> {
    let quota = running.cpu_cores - c.baseline_cpu_cores;
    if quota <= 0.0 {
        return None;
    }
    let value = |series: &Vec<Option<f64>>, t: usize| {
        series
            .get(t)
            .copied()
            .flatten()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    let len = h.cpu_cores.len();
    let mut steps: Vec<LoadedStep> = (len.saturating_sub(recent.max(1))..len)
        .filter_map(|t| {
            let cpu = value(&h.cpu_cores, t)? - c.baseline_cpu_cores;
            let (ro, mu) = (value(&h.read_only_rate, t)?, value(&h.mutating_rate, t)?);
            let means = [&h.read_only_mean_s, &h.mutating_mean_s]
                .map(|series| value(series, t).filter(|m| *m > 0.0));
            let weights = [(ro, means[0]), (mu, means[1])].map(|(r, m)| m.map_or(0.0, |_| r));
            let weight = weights[0] + weights[1];
            let weighted =
                weights[0] * means[0].unwrap_or(0.0) + weights[1] * means[1].unwrap_or(0.0);
            (cpu > 0.0 && weight > 0.0).then(|| LoadedStep {
                cpu,
                load: ApiserverLoad {
                    read_only: c.read_only.load(ro),
                    mutating: c.mutating.load(mu),
                },
                weights,
                measured_mean_s: weighted / weight,
            })
        })
        .collect();
    if steps.is_empty() {
        return None;
    }
    // Queueing for CPU shows most where most CPU is in use. Each step is judged on its own
    // (pooling steps of different mixes finds cores that fit none of them), and the median
    // judgement stands.
    steps.sort_by(|a, b| b.cpu.total_cmp(&a.cpu));
    steps.truncate(steps.len().div_ceil(3));
    let mut judged: Vec<(f64, LoadedStep)> = steps
        .into_iter()
        .map(|step| (step.available(quota, running), step))
        .collect();
    judged.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (usable, step) = &judged[judged.len() / 2];
    let usable = *usable;
    (usable < CONTENTION_SHARE * quota).then(|| {
        let available = usable + c.baseline_cpu_cores;
        (
            available,
            format!(
                "mean latency {:.1} ms at {:.2} cores in use is {:.1}x the model's on the {}-core quota: \
                 the requests were served as if the apiserver had {available:.2} cores (the node's \
                 other work took the rest of the quota), and the model counts on no more",
                step.measured_mean_s * 1e3,
                step.cpu + c.baseline_cpu_cores,
                step.measured_mean_s / step.modelled_mean_s(quota, running),
                running.cpu_cores,
            ),
        )
    })
}

fn fit_cpu(rows: &[[f64; 3]], policy: &CalibrationPolicy) -> ApiserverCalibration {
    let n = rows.len();
    let y = DVector::from_iterator(n, rows.iter().map(|r| r[2]));
    let mean = y.mean();
    let total: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let r_squared = |predicted: &dyn Fn(&[f64; 3]) -> f64| {
        let residual: f64 = rows.iter().map(|r| (r[2] - predicted(r)).powi(2)).sum();
        if total > 0.0 {
            (1.0 - residual / total).max(0.0)
        } else {
            0.0
        }
    };
    let plausible = |d: f64| d >= policy.min_cpu_s && d <= policy.max_cpu_s;
    let mut notes = Vec::new();

    let x = DMatrix::from_fn(n, 3, |i, j| if j == 0 { 1.0 } else { rows[i][j - 1] });
    let norms: Vec<f64> = (0..3).map(|j| x.column(j).norm()).collect();
    if norms.iter().all(|v| *v > 0.0) {
        let scaled = DMatrix::from_fn(n, 3, |i, j| x[(i, j)] / norms[j]);
        let svd = scaled.svd(true, true);
        let (max, min) = (svd.singular_values.max(), svd.singular_values.min());
        let condition = if min > 0.0 { max / min } else { f64::INFINITY };
        match svd.solve(&y, 1e-12) {
            Ok(beta) if condition <= MAX_CONDITION => {
                let (b0, d_ro, d_mu) = (beta[0] / norms[0], beta[1] / norms[1], beta[2] / norms[2]);
                if b0 >= 0.0 && plausible(d_ro) && plausible(d_mu) {
                    let r2 = r_squared(&|r| b0 + d_ro * r[0] + d_mu * r[1]);
                    return ApiserverCalibration {
                        read_only: ClassPrior {
                            cpu_s: d_ro,
                            ..policy.read_only
                        },
                        mutating: ClassPrior {
                            cpu_s: d_mu,
                            ..policy.mutating
                        },
                        baseline_cpu_cores: b0,
                        available_cpu_cores: None,
                        method: CalibrationMethod::Regression,
                        samples: n,
                        r_squared: Some(r2),
                        confidence: if r2 >= 0.7 {
                            ConfidenceLevel::High
                        } else {
                            ConfidenceLevel::Medium
                        },
                        notes,
                    };
                }
                notes.push(format!(
                    "regression gave baseline {b0:.3} cores, D_ro {d_ro:.2e} s, D_mu {d_mu:.2e} s: implausible"
                ));
            }
            _ => notes.push(format!(
                "the class rates move together (condition {condition:.0}): their costs cannot be told apart"
            )),
        }
    } else {
        notes.push("a class had no requests in the whole history".into());
    }

    // One scale on the priors: needs only that requests were served at all. The baseline is
    // the policy's but never above the least CPU seen: an idle apiserver of a small control
    // plane uses a few hundredths of a core, and a baseline above every sample would leave
    // the requests no CPU, a scale of zero and nothing but the priors.
    let least = rows.iter().map(|r| r[2]).fold(f64::INFINITY, f64::min);
    let (p_ro, p_mu, b0) = (
        policy.read_only.cpu_s,
        policy.mutating.cpu_s,
        policy.baseline_cpu_cores.min(least),
    );
    let work: f64 = rows.iter().map(|r| p_ro * r[0] + p_mu * r[1]).sum();
    let used: f64 = rows.iter().map(|r| (r[2] - b0).max(0.0)).sum();
    let scale = used / work;
    if work > 0.0 && plausible(scale * p_ro) && plausible(scale * p_mu) {
        let r2 = r_squared(&|r| b0 + scale * (p_ro * r[0] + p_mu * r[1]));
        notes.push(format!("priors scaled by {scale:.3}"));
        return ApiserverCalibration {
            read_only: ClassPrior {
                cpu_s: scale * p_ro,
                ..policy.read_only
            },
            mutating: ClassPrior {
                cpu_s: scale * p_mu,
                ..policy.mutating
            },
            baseline_cpu_cores: b0,
            available_cpu_cores: None,
            method: CalibrationMethod::ScaledPriors,
            samples: n,
            r_squared: Some(r2),
            confidence: ConfidenceLevel::Medium,
            notes,
        };
    }
    let mut priors = ApiserverCalibration::priors(policy, n, "no plausible fit: priors".into());
    notes.append(&mut priors.notes);
    priors.notes = notes;
    priors
}

/// What a class's time off the CPU looks like: mean and squared coefficient of variation.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OffCpu {
    mean_s: f64,
    scv: f64,
}

/// Off-CPU time of a class, from the least loaded samples, where queueing is least and a
/// request's time is its CPU phase (D·x, the CPU as loaded then) plus T.
///
/// With the measured mean there, T is the mean less D·x, and T's variation is the one at
/// which the model's P99 matches the measured P99: the two moments fitted separately, since
/// real latency has a far heavier tail than one exponential stage (measured P99 / mean of
/// 6–16 on a kube-apiserver where an exponential gives 4.6; fitting T to the P99 alone made
/// the mean 2–2.6 times too high). Without a mean, T is the one whose P99 matches, at the
/// prior's variation.
fn off_cpu_time(
    h: &ReplicaHistory,
    c: &ApiserverCalibration,
    cores: f64,
    prior: ClassPrior,
    read_only: bool,
) -> (OffCpu, Option<String>) {
    let (class, rates, p99s, means) = if read_only {
        (
            "readOnly",
            &h.read_only_rate,
            &h.read_only_p99_s,
            &h.read_only_mean_s,
        )
    } else {
        (
            "mutating",
            &h.mutating_rate,
            &h.mutating_p99_s,
            &h.mutating_mean_s,
        )
    };
    let prior_time = OffCpu {
        mean_s: prior.non_cpu_s,
        scv: prior.non_cpu_scv,
    };
    let mut low: Vec<(f64, f64, f64, Option<f64>)> = (0..p99s.len())
        .filter_map(|t| {
            let latency = (*p99s.get(t)?)?;
            let rate = (*rates.get(t)?)?;
            let cpu = (*h.cpu_cores.get(t)?)?;
            let mean = means
                .get(t)
                .copied()
                .flatten()
                .filter(|m| m.is_finite() && *m > 0.0 && *m <= latency);
            (latency.is_finite() && latency > 0.0 && rate > 0.0)
                .then_some((cpu, rate, latency, mean))
        })
        .collect();
    if low.is_empty() {
        return (
            prior_time,
            Some(format!("no {class} latency history: prior off-CPU time")),
        );
    }
    // The least loaded third, by CPU in use: queueing there is least. Near saturation the
    // CPU stretch dominates the latency and says nothing about the time off the CPU.
    let usable = (cores - c.baseline_cpu_cores).max(1e-3);
    low.sort_by(|a, b| a.0.total_cmp(&b.0));
    low.truncate(low.len().div_ceil(3));
    low.retain(|r| r.0 - c.baseline_cpu_cores <= LOW_LOAD_UTILIZATION * usable);
    if low.is_empty() {
        return (
            prior_time,
            Some(format!(
                "{class}: no sample below {LOW_LOAD_UTILIZATION} CPU utilisation: prior off-CPU time"
            )),
        );
    }
    let (cpu_used, rate, measured, mean) = low[low.len() / 2];
    let d = if read_only {
        c.read_only.cpu_s
    } else {
        c.mutating.cpu_s
    };
    let x = cpu_slowdown(
        usable,
        (cpu_used - c.baseline_cpu_cores).clamp(0.0, usable * 0.99),
    );
    let unlimited = ClassLimits {
        concurrency_limit: 1_000_000,
        queue_length: 0,
    };
    let p99_at = |t: f64, scv: f64| {
        let load = ClassLoad {
            arrival_rate: rate,
            cpu_s: d,
            non_cpu_s: t,
            non_cpu_scv: scv,
        };
        ClassModel::new(&load, &unlimited, x).response_percentile(0.99)
    };
    let fitted = match mean {
        Some(mean) => {
            let t = mean - d * x;
            if t <= 0.0 {
                return (
                    OffCpu {
                        mean_s: 0.0,
                        scv: EXPONENTIAL_SCV,
                    },
                    Some(format!(
                        "{class} mean {mean:.4} s at low load is no more than its CPU time alone: off-CPU time 0"
                    )),
                );
            }
            OffCpu {
                mean_s: t,
                scv: tail_matching(|scv| p99_at(t, scv), measured),
            }
        }
        None => {
            let scv = prior.non_cpu_scv;
            if p99_at(0.0, scv) >= measured {
                return (
                    OffCpu { mean_s: 0.0, scv },
                    Some(format!(
                        "{class} P99 {measured:.4} s at low load is no more than its CPU time alone: off-CPU time 0"
                    )),
                );
            }
            let (mut lo, mut hi) = (0.0, measured);
            for _ in 0..50 {
                let mid = 0.5 * (lo + hi);
                if p99_at(mid, scv) < measured {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            OffCpu {
                mean_s: 0.5 * (lo + hi),
                scv,
            }
        }
    };
    if fitted.mean_s > MAX_NON_CPU_S {
        return (
            prior_time,
            Some(format!(
                "{class} off-CPU time {:.1} s is implausible: prior",
                fitted.mean_s
            )),
        );
    }
    (fitted, None)
}

/// The variation at which `p99(scv)` reaches `measured`, searched where the P99 grows with it:
/// with the mean held, a wider spread first lengthens the tail, then (past about 50, when
/// under 1% of requests are slow) hides the slow branch beyond the 99th percentile. A P99 no
/// longer than the exponential's gives 1 (the fit has no lighter tail; the P99 predicted
/// is then the higher, safe side); one beyond what any variation reaches, the longest.
fn tail_matching(p99: impl Fn(f64) -> f64, measured: f64) -> f64 {
    if p99(EXPONENTIAL_SCV) >= measured {
        return EXPONENTIAL_SCV;
    }
    // Log-spaced from 1 to MAX_NON_CPU_SCV: find the first that reaches the measurement,
    // stopping at the peak of the P99.
    const GRID: usize = 40;
    let at = |i: usize| MAX_NON_CPU_SCV.powf(i as f64 / GRID as f64);
    let (mut lo, mut best) = (EXPONENTIAL_SCV, p99(EXPONENTIAL_SCV));
    for i in 1..=GRID {
        let scv = at(i);
        let got = p99(scv);
        if got >= measured {
            let mut hi = scv;
            for _ in 0..40 {
                let mid = (lo * hi).sqrt();
                if p99(mid) < measured {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            return hi;
        }
        if got < best {
            break;
        }
        (lo, best) = (scv, got);
    }
    lo
}

/// What the scheduler must do and what its writes cost, from the current window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerCalibration {
    pub load: SchedulerLoad,
    /// Requests waited on the client token bucket beyond the pod-startup budget.
    pub throttled: bool,
    pub notes: Vec<String>,
}

/// Pod demand counts the pending backlog, which must drain within the pod-startup SLO: a
/// throttled scheduler binds no faster than its bucket allows, so bindings alone understate it.
pub fn calibrate_scheduler(
    sample: &SchedulerSample,
    policy: &CalibrationPolicy,
    slo: &Slo,
) -> SchedulerCalibration {
    let mut notes = Vec::new();
    let binding = sample.binding_rate.filter(|r| r.is_finite() && *r >= 0.0);
    let backlog: f64 = ["active", "backoff"]
        .iter()
        .filter_map(|q| sample.pending_pods.get(*q))
        .sum();
    if binding.is_none() {
        notes.push("no binding rate: pod demand from the backlog alone".into());
    }
    let pod_arrival_rate = binding.unwrap_or(0.0) + backlog / slo.pod_startup_p99_s;
    let requests_per_pod = match (sample.client.request_rate, binding) {
        (Some(requests), Some(b)) if b > 0.1 && requests.is_finite() => {
            (requests / b).clamp(1.0, 20.0)
        }
        _ => {
            notes.push("too few bindings to measure requests per pod: prior".into());
            policy.scheduler_requests_per_pod
        }
    };
    // The scheduling cycle runs on one goroutine and is CPU-bound, so its rate is the pods
    // bound per CPU second. Attempt durations would not do: they include the binding's wait
    // on the apiserver, which the cycle does not (binding is asynchronous).
    let cpu = sample
        .process
        .cpu_cores
        .filter(|c| c.is_finite() && *c > 0.0);
    let algorithm_rate = match (binding, cpu) {
        (Some(b), Some(cpu)) if b > 0.1 => (b / cpu).clamp(1.0, 100_000.0),
        _ => {
            notes.push("too few bindings to measure CPU per pod: prior algorithm rate".into());
            policy.scheduler_algorithm_rate
        }
    };
    SchedulerCalibration {
        load: SchedulerLoad {
            pod_arrival_rate,
            algorithm_rate,
            requests_per_pod,
        },
        throttled: throttled(&sample.client, slo),
        notes,
    }
}

/// Requests per second a controller-manager's client must let through. When it waits on
/// its own bucket, the rate seen is what the bucket allowed, so the demand is at least
/// the current QPS: the search then raises it a step per round until the waiting stops.
pub fn client_demand(client: &ClientSample, current_qps: f64, slo: &Slo) -> f64 {
    let seen = client
        .request_rate
        .filter(|r| r.is_finite() && *r >= 0.0)
        .unwrap_or(0.0);
    if throttled(client, slo) {
        seen.max(current_qps)
    } else {
        seen
    }
}

fn throttled(client: &ClientSample, slo: &Slo) -> bool {
    client
        .throttle_wait_p99_s
        .is_some_and(|w| w > slo.client_throttle_p99_s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Component, Replica};

    /// Settings a history ran at: `cores`, limits that never bind here.
    fn running(cores: f64) -> ApiserverSettings {
        ApiserverSettings {
            cpu_cores: cores,
            memory_bytes: 1e9,
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            queue_length: 50,
        }
    }

    fn history(rows: &[(f64, f64, f64)], p99: Option<(f64, f64)>) -> ReplicaHistory {
        ReplicaHistory {
            replica: Replica {
                component: Component::Apiserver,
                name: "apiserver-0".into(),
                instance: "127.0.0.1:6443".into(),
            },
            read_only_rate: rows.iter().map(|r| Some(r.0)).collect(),
            mutating_rate: rows.iter().map(|r| Some(r.1)).collect(),
            cpu_cores: rows.iter().map(|r| Some(r.2)).collect(),
            read_only_p99_s: rows.iter().map(|_| p99.map(|p| p.0)).collect(),
            mutating_p99_s: rows.iter().map(|_| p99.map(|p| p.1)).collect(),
            read_only_mean_s: Vec::new(),
            mutating_mean_s: Vec::new(),
            resident_memory_bytes: rows.iter().map(|_| Some(1e9)).collect(),
        }
    }

    #[test]
    fn regression_recovers_the_cpu_per_request() {
        // cpu = 0.2 + 0.003·ro + 0.007·mu with rates that vary independently.
        let rows: Vec<_> = (0..40)
            .map(|t| {
                let ro = 200.0 + 37.0 * f64::from(t % 7);
                let mu = 50.0 + 11.0 * f64::from(t % 5);
                (ro, mu, 0.2 + 0.003 * ro + 0.007 * mu)
            })
            .collect();
        let c = calibrate_apiserver(
            Some(&history(&rows, None)),
            &running(4.0),
            usize::MAX,
            &CalibrationPolicy::default(),
        );
        assert_eq!(c.method, CalibrationMethod::Regression);
        assert!((c.read_only.cpu_s - 0.003).abs() < 1e-9, "{c:?}");
        assert!((c.mutating.cpu_s - 0.007).abs() < 1e-9);
        assert!((c.baseline_cpu_cores - 0.2).abs() < 1e-6);
        // No latency history: the model's P99 is unchecked.
        assert_eq!(c.confidence, ConfidenceLevel::Medium);
    }

    #[test]
    fn collinear_rates_scale_the_priors_and_thin_data_uses_them() {
        let rows: Vec<_> = (0..20)
            .map(|t| {
                let ro = 100.0 + 10.0 * f64::from(t);
                (ro, ro / 4.0, 0.1 + 2.0 * (0.002 * ro + 0.005 * ro / 4.0))
            })
            .collect();
        let policy = CalibrationPolicy::default();
        let c = calibrate_apiserver(
            Some(&history(&rows, None)),
            &running(4.0),
            usize::MAX,
            &policy,
        );
        assert_eq!(c.method, CalibrationMethod::ScaledPriors);
        assert!((c.read_only.cpu_s - 0.004).abs() < 1e-9, "{c:?}");
        let thin = calibrate_apiserver(
            Some(&history(&rows[..3], None)),
            &running(4.0),
            usize::MAX,
            &policy,
        );
        assert_eq!(thin.method, CalibrationMethod::Priors);
        assert_eq!(thin.confidence, ConfidenceLevel::Low);
    }

    #[test]
    fn an_idle_apiserver_below_the_policy_baseline_still_scales_the_priors() {
        // A small apiserver under light load: 0.03–0.08 cores, all below the policy's 0.1.
        let rows: Vec<_> = (0..20)
            .map(|t| {
                let ro = 2.0 + 0.5 * f64::from(t);
                (ro, ro / 2.0, 0.02 + 0.003 * ro + 0.004 * ro / 2.0)
            })
            .collect();
        let c = calibrate_apiserver(
            Some(&history(&rows, None)),
            &running(0.25),
            usize::MAX,
            &CalibrationPolicy::default(),
        );
        assert_eq!(c.method, CalibrationMethod::ScaledPriors, "{c:?}");
        assert!((c.baseline_cpu_cores - 0.03).abs() < 1e-9, "{c:?}");
        assert!(
            c.read_only.cpu_s > 0.001 && c.mutating.cpu_s > 0.001,
            "{c:?}"
        );
    }

    #[test]
    fn the_prediction_at_a_load_follows_the_costs() {
        let c = ApiserverCalibration::priors(&CalibrationPolicy::default(), 0, String::new());
        let settings = ApiserverSettings {
            cpu_cores: 2.0,
            memory_bytes: 1e9,
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            queue_length: 50,
        };
        let (ro, mu) = (100.0, 50.0);
        let p = c.predict(&settings, ro, mu).unwrap();
        let demand = ro * c.read_only.cpu_s + mu * c.mutating.cpu_s + c.baseline_cpu_cores;
        assert!(
            (p.cpu_cores - demand).abs() < 1e-3 * demand,
            "{p:?} vs {demand}"
        );
        assert!(p.read_only_p99_s > c.read_only.non_cpu_s && p.read_only_rejection < 1e-6);
        let busier = c.predict(&settings, 4.0 * ro, 4.0 * mu).unwrap();
        assert!(busier.read_only_p99_s > p.read_only_p99_s);
        let starved = ApiserverSettings {
            cpu_cores: c.baseline_cpu_cores,
            ..settings
        };
        assert!(c.predict(&starved, ro, mu).is_none());
    }

    /// The model's mean and P99 of a class at `rate` per second on `cores` with nothing
    /// else running: what a low-load history sample shows of it.
    fn low_load(class: ClassPrior, rate: f64, cores: f64, baseline: f64) -> (f64, f64) {
        let load = class.load(rate);
        let x = cpu_slowdown(cores - baseline, rate * class.cpu_s);
        let unlimited = ClassLimits {
            concurrency_limit: 1_000_000,
            queue_length: 0,
        };
        let m = ClassModel::new(&load, &unlimited, x);
        (m.mean_response(), m.response_percentile(0.99))
    }

    #[test]
    fn a_heavy_tail_is_fitted_from_the_mean_and_the_p99() {
        // Requests of 2 ms CPU and 4 ms off it, with the off-CPU time 10 times as variable as
        // an exponential's: the history's mean and P99 are the model's at that truth.
        let truth = ClassPrior {
            cpu_s: 0.002,
            non_cpu_s: 0.004,
            non_cpu_scv: 10.0,
        };
        let (ro, mu, baseline, cores) = (50.0, 10.0, 0.05, 1.0);
        let rows: Vec<_> = (0..30)
            .map(|t| {
                let (r, m) = (ro + 5.0 * f64::from(t % 6), mu + 2.0 * f64::from(t % 4));
                (r, m, baseline + 0.002 * r + 0.003 * m)
            })
            .collect();
        let mut h = history(&rows, None);
        let (mut means, mut p99s) = (Vec::new(), Vec::new());
        for &(r, _, cpu) in &rows {
            let x = cpu_slowdown(cores - baseline, cpu - baseline);
            let load = truth.load(r);
            let unlimited = ClassLimits {
                concurrency_limit: 1_000_000,
                queue_length: 0,
            };
            let m = ClassModel::new(&load, &unlimited, x);
            means.push(Some(m.mean_response()));
            p99s.push(Some(m.response_percentile(0.99)));
        }
        (h.read_only_mean_s, h.read_only_p99_s) = (means.clone(), p99s.clone());
        (h.mutating_mean_s, h.mutating_p99_s) = (means, p99s);
        let c = calibrate_apiserver(
            Some(&h),
            &running(cores),
            usize::MAX,
            &CalibrationPolicy::default(),
        );
        assert_eq!(c.method, CalibrationMethod::Regression, "{c:?}");
        assert!(
            (c.read_only.non_cpu_s / truth.non_cpu_s - 1.0).abs() < 0.02,
            "{c:?}"
        );
        assert!(
            (c.read_only.non_cpu_scv / truth.non_cpu_scv - 1.0).abs() < 0.05,
            "{c:?}"
        );
        // The P99 alone, at an exponential's spread, would have made T far longer.
        let mut p99_only = h.clone();
        p99_only.read_only_mean_s.clear();
        let old = calibrate_apiserver(
            Some(&p99_only),
            &running(cores),
            usize::MAX,
            &CalibrationPolicy::default(),
        );
        assert!(
            old.read_only.non_cpu_s > 1.5 * truth.non_cpu_s && old.read_only.non_cpu_scv == 1.0,
            "{old:?}"
        );
        let (mean, p99) = low_load(c.read_only, ro, cores, c.baseline_cpu_cores);
        let (old_mean, _) = low_load(old.read_only, ro, cores, old.baseline_cpu_cores);
        let (true_mean, true_p99) = low_load(truth, ro, cores, baseline);
        assert!(
            (mean / true_mean - 1.0).abs() < 0.02,
            "{mean} vs {true_mean}"
        );
        assert!((p99 / true_p99 - 1.0).abs() < 0.02, "{p99} vs {true_p99}");
        assert!(old_mean > 1.3 * true_mean, "{old_mean} vs {true_mean}");
    }

    /// A history of an apiserver whose queues had `usable` cores, whatever its quota: low
    /// load for the first half, then a load that keeps `busy` cores in use for requests.
    fn history_with_usable_cores(
        usable: f64,
        busy: f64,
    ) -> (ReplicaHistory, ClassPrior, ClassPrior) {
        let ro = ClassPrior {
            cpu_s: 0.002,
            non_cpu_s: 0.004,
            non_cpu_scv: 4.0,
        };
        let mu = ClassPrior {
            cpu_s: 0.004,
            non_cpu_s: 0.008,
            non_cpu_scv: 2.0,
        };
        let baseline = 0.05;
        let rows: Vec<_> = (0..30)
            .map(|t| {
                // CPU for requests: 0.01–0.011 cores, then `busy` to 10% above, split
                // between the classes in proportions that vary apart from the total.
                let scale = if t < 15 { 0.01 } else { busy } * (1.0 + 0.05 * f64::from(t % 3));
                let split = 0.1 * f64::from(t % 4);
                let (r, m) = (
                    0.5 * scale * (1.0 + split) / ro.cpu_s,
                    0.5 * scale * (1.0 - split) / mu.cpu_s,
                );
                (r, m, baseline + ro.cpu_s * r + mu.cpu_s * m)
            })
            .collect();
        let mut h = history(&rows, None);
        h.read_only_p99_s.clear();
        h.mutating_p99_s.clear();
        let unlimited = ClassLimits {
            concurrency_limit: 1_000_000,
            queue_length: 0,
        };
        let class = |p: ClassPrior, rate: f64, x: f64| {
            let load = p.load(rate);
            let m = ClassModel::new(&load, &unlimited, x);
            (Some(m.mean_response()), Some(m.response_percentile(0.99)))
        };
        for &(r, m, cpu) in &rows {
            let x = cpu_slowdown(usable, cpu - baseline);
            let (mean, p99) = class(ro, r, x);
            h.read_only_mean_s.push(mean);
            h.read_only_p99_s.push(p99);
            let (mean, p99) = class(mu, m, x);
            h.mutating_mean_s.push(mean);
            h.mutating_p99_s.push(p99);
        }
        (h, ro, mu)
    }

    #[test]
    fn cpu_the_node_did_not_give_is_found_from_the_latency_at_load() {
        // A 1.5-core quota on a node that left the queues 0.7 cores: at 0.6 cores of
        // requests the apiserver queues for CPU as if nearly saturated.
        let quota = 1.5;
        let (h, _, _) = history_with_usable_cores(0.7, 0.6);
        let c = calibrate_apiserver(Some(&h), &running(quota), 15, &CalibrationPolicy::default());
        let available = c.available_cpu_cores.expect("contention found");
        let usable = c.queue_cores(quota);
        assert!((usable / 0.7 - 1.0).abs() < 0.1, "{usable} {c:?}");
        assert!((available - usable - c.baseline_cpu_cores).abs() < 1e-9);
        assert!(
            c.notes.iter().any(|n| n.contains("the node's other work")),
            "{c:?}"
        );
        // The same apiserver given its whole quota: nothing to find.
        let (h, _, _) = history_with_usable_cores(quota - 0.05, 0.6);
        let c = calibrate_apiserver(Some(&h), &running(quota), 15, &CalibrationPolicy::default());
        assert_eq!(c.available_cpu_cores, None, "{c:?}");
        assert!((c.queue_cores(quota) - (quota - c.baseline_cpu_cores)).abs() < 1e-12);
    }

    #[test]
    fn the_prediction_at_load_follows_the_cpu_the_node_gave() {
        let quota = 1.5;
        let (h, _, _) = history_with_usable_cores(0.7, 0.6);
        // A step at the least of the loads (0.6 cores): past it the P99 is too steep in
        // the cores for any estimate to hit closely.
        let t = 27;
        let settings = ApiserverSettings {
            cpu_cores: quota,
            memory_bytes: 1e9,
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            queue_length: 50,
        };
        let (ro, mu) = (h.read_only_rate[t].unwrap(), h.mutating_rate[t].unwrap());
        let measured = h.read_only_p99_s[t].unwrap();
        let found =
            calibrate_apiserver(Some(&h), &running(quota), 15, &CalibrationPolicy::default());
        let p = found.predict(&settings, ro, mu).unwrap();
        assert!(
            (p.read_only_p99_s / measured - 1.0).abs() < 0.25,
            "{} vs {measured}",
            p.read_only_p99_s
        );
        // Without latency at load to judge by, the quota is taken at its word and the P99
        // at load comes out far too short: what the estimate is for.
        let mut quiet = h.clone();
        for series in [&mut quiet.read_only_mean_s, &mut quiet.mutating_mean_s] {
            series.truncate(15);
        }
        let quiet = calibrate_apiserver(
            Some(&quiet),
            &running(quota),
            15,
            &CalibrationPolicy::default(),
        );
        assert_eq!(quiet.available_cpu_cores, None, "{quiet:?}");
        let q = quiet.predict(&settings, ro, mu).unwrap();
        assert!(
            q.read_only_p99_s < 0.7 * measured,
            "{} vs {measured}",
            q.read_only_p99_s
        );
    }

    #[test]
    fn a_tail_no_heavier_than_an_exponential_keeps_the_exponential() {
        let p99 = |scv: f64| 0.01 * (1.0 + scv.ln());
        assert_eq!(tail_matching(p99, 0.005), EXPONENTIAL_SCV);
        let got = tail_matching(p99, 0.02);
        assert!((p99(got) / 0.02 - 1.0).abs() < 1e-6, "{got}");
        // Beyond what any spread reaches: the longest tail, not a runaway value.
        let peaked = |scv: f64| 0.01 * (1.0 + (scv / 50.0).min(50.0 / scv));
        assert!((tail_matching(peaked, 1.0) - 50.0).abs() / 50.0 < 0.2);
    }

    #[test]
    fn off_cpu_time_reproduces_the_low_load_p99() {
        let rows: Vec<_> = (0..30)
            .map(|t| {
                let ro = 100.0 + 20.0 * f64::from(t % 6);
                let mu = 20.0 + 5.0 * f64::from(t % 4);
                (ro, mu, 0.1 + 0.002 * ro + 0.005 * mu)
            })
            .collect();
        let c = calibrate_apiserver(
            Some(&history(&rows, Some((0.1, 0.2)))),
            &running(4.0),
            usize::MAX,
            &CalibrationPolicy::default(),
        );
        assert_eq!(c.confidence, ConfidenceLevel::High, "{c:?}");
        // P99 of D·x + T with T dominant is about ln(100)·T.
        assert!(
            c.read_only.non_cpu_s > 0.015 && c.read_only.non_cpu_s < 0.025,
            "{c:?}"
        );
        assert!(c.mutating.non_cpu_s > 2.0 * c.read_only.non_cpu_s * 0.9);
    }
}
