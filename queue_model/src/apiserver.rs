//! The kube-apiserver model: two request classes sharing C CPU cores.
//!
//! Each class (readOnly, mutating) is admitted up to its concurrency limit, waits in its
//! APF queue up to the queue length, and is rejected (HTTP 429) beyond that. A request
//! needs `cpu_s` of CPU and `non_cpu_s` of other time (etcd, admission, network). The
//! cores are shared like processor sharing — Go's scheduler runs whichever goroutines are
//! ready — so every request's CPU phase is stretched by the same slowdown x, which for
//! exponential work is that of an M/M/C queue fed the accepted CPU load:
//! x = 1 + ErlangC(C, A) / (C − A). The accepted load depends on x in turn (slower
//! requests hold their slots longer and more arrivals are rejected), so A is the fixed
//! point A = Σ throughput_k(x(A))·D_k, found by bisection. Each class is then an exact
//! M/M/c/K chain with service time T + D·x. The shape this gives: more concurrency raises
//! throughput until the CPU saturates; past that it only raises x, hence latency.

use std::collections::HashMap;

use foldhash::fast::FixedState;

use serde::{Deserialize, Serialize};

use crate::erlang::{erlang_b_unchecked, erlang_c_from_b};
use crate::error::{
    MAX_REQUEST_RATE, MIN_REQUEST_S, QueueModelError, Result, at_least_one, at_most, capacity,
    cores, non_negative,
};
use crate::limited_queue::LimitedQueue;
use crate::occupancy::Occupancy;

/// The two queues kube-apiserver keeps for non-long-running requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RequestClass {
    ReadOnly,
    Mutating,
}

/// Load of one request class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassLoad {
    /// λ, requests per second.
    pub arrival_rate: f64,
    /// D, CPU seconds per request.
    pub cpu_s: f64,
    /// T, seconds per request spent off the CPU (etcd, admission webhooks, network).
    pub non_cpu_s: f64,
    /// The squared coefficient of variation of T (1: exponential). A class mixes cheap GETs
    /// with large LISTs, and a busy node makes a few requests wait for a CPU slice: measured
    /// P99s run 6–16 times the mean, where an exponential gives 4.6. Above 1 T is
    /// hyperexponential, which puts the mass of the tail where the measurements have it.
    #[serde(default = "exponential_scv")]
    pub non_cpu_scv: f64,
}

/// The off-CPU time's variation when nothing says otherwise: exponential.
pub const EXPONENTIAL_SCV: f64 = 1.0;
/// Beyond this the balanced-means fit puts under 0.1% of requests in the slow branch, far
/// below what a P99 can see: a larger value would be a fit to noise.
pub const MAX_NON_CPU_SCV: f64 = 1000.0;

fn exponential_scv() -> f64 {
    EXPONENTIAL_SCV
}

/// Limits of one request class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClassLimits {
    /// Requests executing at once (`--max-requests-inflight` or APF seats).
    pub concurrency_limit: u32,
    /// Requests allowed to wait (one flow's APF hand size × queue length); 0 rejects at
    /// the limit.
    pub queue_length: u32,
}

/// What the apiserver is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ApiserverLoad {
    pub read_only: ClassLoad,
    pub mutating: ClassLoad,
}

/// The knobs the model is evaluated at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ApiserverSetting {
    /// CPU cores available to the apiserver process.
    pub cores: f64,
    pub read_only: ClassLimits,
    pub mutating: ClassLimits,
}

/// Predicted behaviour of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassPrediction {
    pub throughput: f64,
    /// Probability that a request is rejected with 429.
    pub rejection_probability: f64,
    /// Probability that an accepted request waits in the queue.
    pub p_wait: f64,
    /// Mean number of requests executing or queued.
    pub mean_number: f64,
    /// Mean time in service, CPU phase stretched by the slowdown.
    pub mean_service_s: f64,
    pub mean_response_s: f64,
    pub p50_response_s: f64,
    pub p99_response_s: f64,
}

/// Predicted behaviour of the whole apiserver.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ApiserverPrediction {
    pub read_only: ClassPrediction,
    pub mutating: ClassPrediction,
    /// The common stretch of CPU phases caused by contention (1 = none).
    pub cpu_slowdown: f64,
    /// CPU cores in use: Σ throughput·D.
    pub cpu_used_cores: f64,
    /// cpu_used_cores / cores.
    pub cpu_utilization: f64,
}

impl ClassLoad {
    fn validate(&self, class: RequestClass) -> Result<()> {
        let (rate, cpu, other, scv) = match class {
            RequestClass::ReadOnly => (
                "read_only.arrival_rate",
                "read_only.cpu_s",
                "read_only.non_cpu_s",
                "read_only.non_cpu_scv",
            ),
            RequestClass::Mutating => (
                "mutating.arrival_rate",
                "mutating.cpu_s",
                "mutating.non_cpu_s",
                "mutating.non_cpu_scv",
            ),
        };
        non_negative(rate, self.arrival_rate)?;
        at_most(
            rate,
            self.arrival_rate,
            MAX_REQUEST_RATE,
            "more requests per second than any apiserver serves",
        )?;
        non_negative(cpu, self.cpu_s)?;
        non_negative(other, self.non_cpu_s)?;
        if !(EXPONENTIAL_SCV..=MAX_NON_CPU_SCV).contains(&self.non_cpu_scv) {
            return Err(QueueModelError::InvalidArgument {
                name: scv,
                value: self.non_cpu_scv,
                reason: "must be between 1 (exponential) and 1000",
            });
        }
        if self.cpu_s + self.non_cpu_s < MIN_REQUEST_S {
            return Err(QueueModelError::InvalidArgument {
                name: cpu,
                value: self.cpu_s + self.non_cpu_s,
                reason: "is cpu_s + non_cpu_s: a request takes at least a microsecond",
            });
        }
        Ok(())
    }

    /// CPU cores this class asks for: λ·D.
    pub fn cpu_demand_cores(&self) -> f64 {
        self.arrival_rate * self.cpu_s
    }
}

impl ApiserverLoad {
    pub fn class(&self, class: RequestClass) -> &ClassLoad {
        match class {
            RequestClass::ReadOnly => &self.read_only,
            RequestClass::Mutating => &self.mutating,
        }
    }

    /// CPU cores both classes ask for: Σ λ·D.
    pub fn offered_cpu_cores(&self) -> f64 {
        self.read_only.cpu_demand_cores() + self.mutating.cpu_demand_cores()
    }

    pub fn validate(&self) -> Result<()> {
        self.read_only.validate(RequestClass::ReadOnly)?;
        self.mutating.validate(RequestClass::Mutating)
    }
}

impl ApiserverSetting {
    pub fn validate(&self) -> Result<()> {
        cores("cores", self.cores)?;
        at_least_one(
            "read_only.concurrency_limit",
            self.read_only.concurrency_limit,
        )?;
        at_least_one(
            "mutating.concurrency_limit",
            self.mutating.concurrency_limit,
        )?;
        capacity(
            "read_only.concurrency_limit + queue_length",
            self.read_only
                .concurrency_limit
                .saturating_add(self.read_only.queue_length),
        )?;
        capacity(
            "mutating.concurrency_limit + queue_length",
            self.mutating
                .concurrency_limit
                .saturating_add(self.mutating.queue_length),
        )?;
        Ok(())
    }
}

/// Mean stretch of a CPU phase when `cpu_load_cores` of work per second reach `cores`
/// cores shared by processor sharing (≥ 1; infinite at or past saturation).
///
/// Fractional cores are a CFS quota, which caps the CPU a container uses per 100 ms period,
/// not the speed of its threads: a request runs on a whole core until the period's quota is
/// spent. So the cores are ⌈C⌉ servers of speed 1 at the quota's utilisation A/C: a lone
/// request is not slowed, and the stretch grows without bound as A reaches C. (Taking C as
/// ⌊C⌋ servers of speed C/⌊C⌋ stretched every CPU phase of half a core twice even when
/// idle; on a real apiserver at a 0.5-core quota the mean latency at low load was below
/// that stretched CPU time alone.) Whole cores are M/M/C.
pub fn cpu_slowdown(cores: f64, cpu_load_cores: f64) -> f64 {
    if cpu_load_cores >= cores {
        return f64::INFINITY;
    }
    let servers = cores.ceil().max(1.0);
    let offered = servers * cpu_load_cores / cores;
    // Truncation is exact: `servers` is a whole number ≥ 1.
    let n = servers as u32;
    let wait = erlang_c_from_b(n, offered, erlang_b_unchecked(n, offered));
    (1.0 + wait / (servers - offered)).max(1.0)
}

/// One request class solved as an M/M/c/K chain at a given CPU slowdown; its rejections
/// also from the processor-sharing occupancy, when that is attached.
#[derive(Debug, Clone)]
pub struct ClassModel {
    queue: LimitedQueue,
    service_s: f64,
    arrival_rate: f64,
    limits: ClassLimits,
    /// Rejection by the processor-sharing occupancy, when known.
    shared_rejection: Option<f64>,
}

impl ClassModel {
    /// Inputs must be validated.
    pub fn new(load: &ClassLoad, limits: &ClassLimits, cpu_slowdown: f64) -> Self {
        let phases = (load.cpu_s * cpu_slowdown, load.non_cpu_s);
        let capacity = limits.concurrency_limit.saturating_add(limits.queue_length);
        Self {
            queue: LimitedQueue::new(
                load.arrival_rate,
                phases,
                limits.concurrency_limit,
                capacity,
            )
            .with_second_phase_scv(load.non_cpu_scv),
            service_s: phases.0 + phases.1,
            arrival_rate: load.arrival_rate,
            limits: *limits,
            shared_rejection: None,
        }
    }

    /// The same class with its rejections also taken from how many of its requests hold
    /// slots when the cores are shared (see `occupancy`). The chain's constant stretch gives
    /// the number in service a Poisson tail; the shared cores give it a geometric one, which
    /// is what rejects near a limit below saturation. Each view misses what the other sees
    /// (the chain: overload, where no stationary occupancy exists), so the larger counts.
    pub fn with_occupancy(mut self, occupancy: Option<&mut Occupancy>) -> Self {
        self.shared_rejection = occupancy.map(|o| {
            // Arrivals over the rate at which every slot completes requests.
            let drain = f64::from(self.limits.concurrency_limit) / self.service_s;
            o.rejection(&self.limits, self.arrival_rate / drain)
        });
        self
    }

    /// P(429): the larger of the chain's and the shared-core occupancy's, when attached.
    pub fn rejection_probability(&self) -> f64 {
        let chain = self.queue.rejection_probability();
        self.shared_rejection
            .map_or(chain, |shared| shared.max(chain))
    }

    pub fn throughput(&self) -> f64 {
        self.queue.throughput()
    }

    pub fn mean_response(&self) -> f64 {
        self.queue.mean_response()
    }

    /// P(response ≤ t): the share of accepted requests done within `t` seconds.
    pub fn within(&self, t: f64) -> f64 {
        1.0 - self.queue.response_survival(t)
    }

    pub fn response_percentile(&self, quantile: f64) -> f64 {
        self.queue.response_percentile(quantile)
    }

    pub fn prediction(&self) -> ClassPrediction {
        ClassPrediction {
            throughput: self.queue.throughput(),
            rejection_probability: self.rejection_probability(),
            p_wait: self.queue.wait_probability(),
            mean_number: self.queue.mean_number(),
            mean_service_s: self.service_s,
            mean_response_s: self.queue.mean_response(),
            p50_response_s: self.queue.response_percentile(0.5),
            p99_response_s: self.queue.response_percentile(0.99),
        }
    }
}

/// Both classes solved for one setting.
#[derive(Debug, Clone)]
pub struct ApiserverModel {
    pub read_only: ClassModel,
    pub mutating: ClassModel,
    /// The common stretch of CPU phases, x.
    pub cpu_slowdown: f64,
    /// Accepted CPU work, cores.
    pub cpu_used_cores: f64,
    cores: f64,
}

impl ApiserverModel {
    pub fn new(load: &ApiserverLoad, setting: &ApiserverSetting) -> Result<Self> {
        load.validate()?;
        setting.validate()?;
        let solve_at = |cpu_load: f64| {
            let x = cpu_slowdown(setting.cores, cpu_load);
            Self::from_classes(
                load,
                setting,
                ClassModel::new(&load.read_only, &setting.read_only, x),
                ClassModel::new(&load.mutating, &setting.mutating, x),
                x,
            )
        };
        let hi = load.offered_cpu_cores().min(setting.cores * (1.0 - 1e-9));
        let at_hi = solve_at(hi);
        if at_hi.accepts_all(hi) {
            return Ok(at_hi.sharing(load, setting.cores, hi));
        }
        // h(A) = accepted(A) − A falls from h(0) ≥ 0 to h(hi) < 0: find its root by false
        // position with the Illinois step, which converges in a handful of solves where
        // bisection needs dozens.
        let (mut lo, mut h_lo) = (0.0, solve_at(0.0).cpu_used_cores);
        let (mut hi, mut h_hi) = (hi, at_hi.cpu_used_cores - hi);
        let mut kept_side = 0i8;
        let mut root = hi;
        for _ in 0..100 {
            let a = (lo * h_hi - hi * h_lo) / (h_hi - h_lo);
            let h = solve_at(a).cpu_used_cores - a;
            root = a;
            if h > 0.0 {
                (lo, h_lo) = (a, h);
                if kept_side == 1 {
                    h_hi /= 2.0;
                }
                kept_side = 1;
            } else {
                (hi, h_hi) = (a, h);
                if kept_side == -1 {
                    h_lo /= 2.0;
                }
                kept_side = -1;
            }
            if h.abs() <= setting.cores * 1e-12 {
                break;
            }
            if hi - lo <= hi * 1e-10 {
                root = hi;
                break;
            }
        }
        Ok(solve_at(root).sharing(load, setting.cores, root))
    }

    /// Both classes with their rejections also from the shared-core occupancy at `cpu_load`.
    fn sharing(mut self, load: &ApiserverLoad, cores: f64, cpu_load: f64) -> Self {
        let occupancy = |class: &ClassLoad| Occupancy::new(class, cores, cpu_load);
        self.read_only = self
            .read_only
            .with_occupancy(occupancy(&load.read_only).as_mut());
        self.mutating = self
            .mutating
            .with_occupancy(occupancy(&load.mutating).as_mut());
        self
    }

    fn from_classes(
        load: &ApiserverLoad,
        setting: &ApiserverSetting,
        read_only: ClassModel,
        mutating: ClassModel,
        cpu_slowdown: f64,
    ) -> Self {
        let cpu_used_cores = read_only.throughput() * load.read_only.cpu_s
            + mutating.throughput() * load.mutating.cpu_s;
        Self {
            read_only,
            mutating,
            cpu_slowdown,
            cpu_used_cores,
            cores: setting.cores,
        }
    }

    /// True when the load assumed for the slowdown is (to rounding) all accepted: the fixed point.
    fn accepts_all(&self, assumed_cpu_load: f64) -> bool {
        self.cpu_used_cores >= assumed_cpu_load * (1.0 - 1e-9)
    }

    pub fn prediction(&self) -> ApiserverPrediction {
        ApiserverPrediction {
            read_only: self.read_only.prediction(),
            mutating: self.mutating.prediction(),
            cpu_slowdown: self.cpu_slowdown,
            cpu_used_cores: self.cpu_used_cores,
            cpu_utilization: self.cpu_used_cores / self.cores,
        }
    }
}

/// Predicts latency, rejection and CPU for one setting.
pub fn predict(load: &ApiserverLoad, setting: &ApiserverSetting) -> Result<ApiserverPrediction> {
    Ok(ApiserverModel::new(load, setting)?.prediction())
}

/// Evaluates many settings against one load, as a search over a grid does. Below CPU
/// saturation the slowdown depends only on the cores, so a class's solution depends only on
/// its limits and the cores: settings sharing those share one solve. Saturated settings,
/// whose slowdown comes from a fixed point of their own, are solved afresh.
#[derive(Debug)]
pub struct Evaluator {
    load: ApiserverLoad,
    /// foldhash: the std SipHash cost more than a solve's lookup saves.
    unsaturated: HashMap<(RequestClass, ClassLimits, u64), ClassModel, FixedState>,
    /// Each class's shared-core occupancy at the offered load, by the cores' bits.
    occupancies: HashMap<(RequestClass, u64), Option<Occupancy>, FixedState>,
}

impl Evaluator {
    pub fn new(load: &ApiserverLoad) -> Result<Self> {
        load.validate()?;
        Ok(Self {
            load: *load,
            unsaturated: HashMap::default(),
            occupancies: HashMap::default(),
        })
    }

    pub fn evaluate(&mut self, setting: &ApiserverSetting) -> Result<ApiserverModel> {
        setting.validate()?;
        let offered = self.load.offered_cpu_cores();
        if offered < setting.cores * (1.0 - 1e-9) {
            let x = cpu_slowdown(setting.cores, offered);
            let at = (setting.cores, offered, x);
            let read_only = self.class_at(RequestClass::ReadOnly, &setting.read_only, at);
            let mutating = self.class_at(RequestClass::Mutating, &setting.mutating, at);
            let model = ApiserverModel::from_classes(&self.load, setting, read_only, mutating, x);
            if model.accepts_all(offered) {
                return Ok(model);
            }
        }
        ApiserverModel::new(&self.load, setting)
    }

    /// A class below saturation at (cores, offered CPU load, slowdown x).
    fn class_at(
        &mut self,
        class: RequestClass,
        limits: &ClassLimits,
        (cores, offered, x): (f64, f64, f64),
    ) -> ClassModel {
        let load = self.load.class(class);
        if let Some(model) = self.unsaturated.get(&(class, *limits, x.to_bits())) {
            return model.clone();
        }
        let occupancy = self
            .occupancies
            .entry((class, cores.to_bits()))
            .or_insert_with(|| Occupancy::new(load, cores, offered));
        let model = ClassModel::new(load, limits, x).with_occupancy(occupancy.as_mut());
        self.unsaturated
            .insert((class, *limits, x.to_bits()), model.clone());
        model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_CORES;

    fn load(ro_rate: f64, mu_rate: f64) -> ApiserverLoad {
        ApiserverLoad {
            read_only: ClassLoad {
                arrival_rate: ro_rate,
                cpu_s: 0.004,
                non_cpu_s: 0.010,
                non_cpu_scv: EXPONENTIAL_SCV,
            },
            mutating: ClassLoad {
                arrival_rate: mu_rate,
                cpu_s: 0.008,
                non_cpu_s: 0.020,
                non_cpu_scv: EXPONENTIAL_SCV,
            },
        }
    }

    fn setting(cores: f64, ro: u32, mu: u32, queue: u32) -> ApiserverSetting {
        ApiserverSetting {
            cores,
            read_only: ClassLimits {
                concurrency_limit: ro,
                queue_length: queue,
            },
            mutating: ClassLimits {
                concurrency_limit: mu,
                queue_length: queue,
            },
        }
    }

    /// `arak model apiserver --cores 1e5` ran for tens of seconds; a rate of 1e300 or a
    /// core of 1e-300 printed a utilisation of 1e300 %. All are refused, naming the argument.
    #[test]
    fn inputs_beyond_any_node_are_refused_before_any_work() {
        let refused = |load: ApiserverLoad, cores: f64| {
            predict(&load, &setting(cores, 10, 5, 0)).unwrap_err()
        };
        let e = refused(load(1600.0, 300.0), 1e5);
        assert!(
            matches!(e, QueueModelError::TooLarge { name: "cores", limit, .. } if limit == MAX_CORES),
            "{e}"
        );
        let e = refused(load(1600.0, 300.0), 1e-300);
        assert!(e.to_string().contains("smallest CPU quantity"), "{e}");
        let e = refused(load(1e300, 300.0), 4.0);
        assert!(
            matches!(
                e,
                QueueModelError::TooLarge {
                    name: "read_only.arrival_rate",
                    ..
                }
            ),
            "{e}"
        );
        // The largest values allowed still give an answer.
        assert!(
            predict(
                &load(MAX_REQUEST_RATE, 300.0),
                &setting(MAX_CORES, 10, 5, 0)
            )
            .is_ok()
        );
    }

    #[test]
    fn concurrency_helps_until_the_cpu_saturates_then_only_adds_latency() {
        // 1200 read req/s × 4 ms = 4.8 cores asked of 4: more than the CPU can give.
        let l = load(1200.0, 10.0);
        let p = |limit| predict(&l, &setting(4.0, limit, 50, 0)).unwrap().read_only;
        let (small, enough, huge) = (p(5), p(60), p(2000));
        assert!(small.rejection_probability > 0.3, "{small:?}");
        assert!(enough.throughput > small.throughput);
        // Past saturation, throughput is capped by the cores, not the limit…
        let cap = 4.0 / 0.004;
        assert!(enough.throughput <= cap * (1.0 + 1e-6) && huge.throughput <= cap * (1.0 + 1e-6));
        assert!(huge.throughput < enough.throughput * 1.1);
        // …and the extra concurrency shows up as latency.
        assert!(
            huge.mean_response_s > 5.0 * enough.mean_response_s,
            "{huge:?} vs {enough:?}"
        );
    }

    #[test]
    fn overload_rejects_rather_than_diverges() {
        let p = predict(&load(5000.0, 10.0), &setting(4.0, 400, 200, 50)).unwrap();
        assert!(p.read_only.rejection_probability > 0.7, "{:?}", p.read_only);
        assert!(p.read_only.throughput <= 1000.0 + 1e-6);
        assert!(p.cpu_utilization <= 1.0 && p.cpu_utilization > 0.9);
        assert!(p.read_only.p99_response_s.is_finite());
    }

    #[test]
    fn a_lower_read_limit_shields_writes_from_a_read_flood() {
        // Reads ask for 12 cores of 4; their limit bounds how much they slow everything down.
        let writes = |ro_limit| {
            predict(&load(3000.0, 50.0), &setting(4.0, ro_limit, 100, 0))
                .unwrap()
                .mutating
        };
        let (tight, loose) = (writes(50), writes(400));
        assert!(
            tight.p99_response_s < loose.p99_response_s / 2.0,
            "{tight:?} vs {loose:?}"
        );
        assert!(tight.rejection_probability <= loose.rejection_probability);
    }

    #[test]
    fn a_spread_off_cpu_time_keeps_the_mean_and_lengthens_the_tail() {
        let setting = setting(4.0, 400, 200, 50);
        let plain = predict(&load(300.0, 60.0), &setting).unwrap();
        let mut spread = load(300.0, 60.0);
        spread.read_only.non_cpu_scv = 10.0;
        let spread = predict(&spread, &setting).unwrap();
        let ro = (plain.read_only, spread.read_only);
        assert!(
            (ro.1.mean_response_s / ro.0.mean_response_s - 1.0).abs() < 1e-9,
            "{ro:?}"
        );
        assert!(ro.1.p99_response_s > 1.5 * ro.0.p99_response_s, "{ro:?}");
        assert!(ro.1.p50_response_s < ro.0.p50_response_s, "{ro:?}");
        assert_eq!(plain.mutating, spread.mutating);
        for bad in [0.5, f64::NAN, 1e4] {
            let mut l = load(300.0, 60.0);
            l.mutating.non_cpu_scv = bad;
            let err = predict(&l, &setting).unwrap_err().to_string();
            assert!(err.contains("mutating.non_cpu_scv"), "{err}");
        }
    }

    #[test]
    fn slowdown_is_one_when_idle_and_grows_without_bound() {
        assert_eq!(cpu_slowdown(4.0, 0.0), 1.0);
        assert!(cpu_slowdown(4.0, 3.0) > cpu_slowdown(4.0, 2.0));
        assert!(cpu_slowdown(4.0, 3.999) > 100.0);
        assert_eq!(cpu_slowdown(4.0, 4.0), f64::INFINITY);
        // Half a core: a CFS quota, one core at utilisation ρ = A / 0.5, x = 1 / (1 − ρ);
        // a lone request runs at a whole core's speed.
        assert!((cpu_slowdown(0.5, 0.25) - 2.0).abs() < 1e-12);
        assert_eq!(cpu_slowdown(0.5, 0.0), 1.0);
        // Between whole cores: ⌈C⌉ cores at the quota's utilisation, past a smaller quota's
        // stretch and short of a larger one's.
        let (low, mid, high) = (
            cpu_slowdown(2.0, 1.5),
            cpu_slowdown(2.5, 1.5),
            cpu_slowdown(3.0, 1.5),
        );
        assert!(low > mid && mid > high, "{low} {mid} {high}");
    }

    #[test]
    fn the_evaluator_gives_what_the_model_gives() {
        let l = load(900.0, 120.0);
        let mut evaluator = Evaluator::new(&l).unwrap();
        for cores in [1.0, 2.5, 4.0] {
            for (ro, mu, q) in [(10, 5, 0), (100, 50, 20), (400, 200, 50), (100, 50, 20)] {
                let s = setting(cores, ro, mu, q);
                assert_eq!(
                    evaluator.evaluate(&s).unwrap().prediction(),
                    predict(&l, &s).unwrap()
                );
            }
        }
        assert!(evaluator.evaluate(&setting(0.0, 1, 1, 0)).is_err());
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let e = predict(&load(1.0, 1.0), &setting(0.0, 1, 1, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cores"), "{e}");
        let e = predict(&load(1.0, 1.0), &setting(1.0, 0, 1, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("read_only.concurrency_limit"), "{e}");
        let mut bad = load(1.0, 1.0);
        bad.mutating.cpu_s = f64::NAN;
        let e = predict(&bad, &setting(1.0, 1, 1, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mutating.cpu_s"), "{e}");
    }
}
