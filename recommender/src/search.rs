//! The search for the cheapest setting that meets every constraint by the queue model.
//!
//! Apiserver, per replica: exhaustive over the grid of (cores, readOnly limit, mutating
//! limit, queue length), but it evaluates little of it, by two facts of the model:
//!
//! - With both rejections ≤ ε, the accepted CPU load A lies in [(1−ε)·offered, offered],
//!   so cores below ((1−ε)·offered + baseline) / max utilisation can never qualify.
//! - For fixed limits every constraint of a class (rejection, P(R ≤ SLO), capacity) gets
//!   worse as A grows: the CPU slowdown x(A) stretches every request, and the number of
//!   the class's requests holding slots (the occupancy, whose geometric tail decides the
//!   rejections) grows. So the least limit meeting a class's constraints at
//!   A = (1−ε)·offered is a lower bound of the true least one, and the least meeting them
//!   at A = offered is enough. Both are found by bisection, as each constraint is monotone
//!   in the limit; only the few settings between the two bounds need the full model.
//!
//! At each core count the queue lengths ascend, and the walk stops at the first whose least
//! memory is no cheaper than the best setting found: candidates rank by memory, then by
//! queue, and memory grows with the queue, so no longer queue can win (most rounds bisect
//! the limits for one or two queue lengths, not for the whole grid).
//!
//! Cores ascend; the search stops when even the least memory cannot make more cores
//! cheaper than the runner-up found so far.

use queue_model::apiserver::{
    ApiserverLoad, ApiserverModel, ClassLimits, ClassLoad, ClassModel, cpu_slowdown,
};
use queue_model::mmc::Mmc;
use queue_model::occupancy::Occupancy;
use queue_model::scheduler::{self, SchedulerLoad, SchedulerSetting};
use serde::{Deserialize, Serialize};

use crate::calibrate::queue_cores;
use crate::error::Result;
use crate::memory::MemorySizing;
use crate::policy::{CostWeights, KnobRange, Slo};
use crate::setting::ApiserverSettings;

/// Share of accepted requests that must finish within the P99 objective.
const P99: f64 = 0.99;

/// Limits are sized for this share of the rejection SLO. The SLO is judged on what a
/// window measured, and a window's load runs above the forecast of its mean (its busiest
/// minutes) while its count of rare 429s is noisy (at 1e-4 a minute of 2,000 requests/s
/// expects a dozen): a model at exactly the SLO misses it in about half the windows. The
/// occupancy's tail is geometric, so a tenth of the SLO costs only a few more slots, and
/// slots cost only memory.
pub const REJECTION_MARGIN: f64 = 0.1;

/// What a setting must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// Predicted CPU utilisation within the policy's headroom.
    CpuHeadroom,
    ReadOnlyRejection,
    MutatingRejection,
    ReadOnlyP99,
    MutatingP99,
    /// The clients' summed QPS fits the mutating capacity recommended with it.
    MutatingCapacity,
    /// Memory within the bounds and the node.
    MemoryBound,
    PodStartupP99,
    ClientThrottleP99,
    /// The lowest value the bounds and step limits allow was chosen.
    LowerBound,
    /// The queue room holds the largest burst measured (and is never empty).
    BurstRoom,
    /// Past saturation: a limit at the CPU's knee, as more concurrency adds only latency.
    CpuKnee,
}

/// Which constraint sized each limit of a setting: the one that a grid step less would
/// break (or break by more), or the bound that stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SizedBy {
    pub max_requests_inflight: Constraint,
    pub max_mutating_requests_inflight: Constraint,
    pub queue_length: Constraint,
}

/// How far a setting misses one constraint: 0 = met; relative excess otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub constraint: Constraint,
    pub amount: f64,
}

/// An apiserver setting with what the model says about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub settings: ApiserverSettings,
    pub cost: f64,
    pub cpu_utilization: f64,
    pub cpu_slowdown: f64,
    pub read_only_rejection: f64,
    pub mutating_rejection: f64,
    /// Mutating requests per second the replica serves with every slot busy.
    pub mutating_capacity_rps: f64,
    pub violations: Vec<Violation>,
}

impl Candidate {
    pub fn feasible(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn total_violation(&self) -> f64 {
        self.violations.iter().map(|v| v.amount).sum()
    }

    /// The constraint missed by most.
    pub fn worst(&self) -> Option<Violation> {
        self.violations
            .iter()
            .copied()
            .max_by(|a, b| a.amount.total_cmp(&b.amount))
    }
}

/// One apiserver replica's search space and constraints.
#[derive(Debug, Clone)]
pub struct ApiserverProblem {
    /// The planned load on this replica, with calibrated costs.
    pub load: ApiserverLoad,
    pub baseline_cpu_cores: f64,
    /// The most CPU the node gives this replica whatever its quota, when measured below
    /// it ([`crate::calibrate::ApiserverCalibration::available_cpu_cores`]).
    pub available_cpu_cores: Option<f64>,
    /// Grids already cut to the bounds, the node and the step limits.
    pub cores: KnobRange,
    pub read_limit: KnobRange,
    pub mutating_limit: KnobRange,
    pub queue_length: KnobRange,
    pub memory: MemorySizing,
    /// Mutating requests per second this replica must be able to take from the clients.
    pub required_mutating_capacity: f64,
    /// The least queue room the measured bursts ask for (the queue grid starts there or
    /// above); reported as the reason when the room sits on it.
    pub burst_room: f64,
    pub slo: Slo,
    pub max_cpu_utilization: f64,
    pub cost: CostWeights,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiserverOutcome {
    /// The cheapest feasible setting, or the least violating if none is.
    pub best: Candidate,
    /// The cheapest feasible setting with other cores, when there is one.
    pub runner_up: Option<Candidate>,
    /// What keeps the best from being cheaper.
    pub binding: Violation,
    /// What sized each of the best's limits.
    pub sized_by: SizedBy,
    /// Settings the full model was evaluated at (class solves not counted).
    pub evaluations: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Class {
    ReadOnly,
    Mutating,
}

/// The cores shared at one accepted CPU load: the mean stretch of a CPU phase, and how many
/// requests of each class hold slots (what a limit's rejections follow).
struct Sharing {
    x: f64,
    read_only: Option<Occupancy>,
    mutating: Option<Occupancy>,
}

impl Sharing {
    fn occupancy(&mut self, class: Class) -> Option<&mut Occupancy> {
        match class {
            Class::ReadOnly => self.read_only.as_mut(),
            Class::Mutating => self.mutating.as_mut(),
        }
    }
}

impl ApiserverProblem {
    /// The CPU a quota of `cores` really gives, the baseline included.
    fn effective_cores(&self, cores: f64) -> f64 {
        self.available_cpu_cores.map_or(cores, |a| cores.min(a))
    }

    /// The cores a quota of `cores` leaves the queues.
    pub fn queue_cores(&self, cores: f64) -> f64 {
        queue_cores(cores, self.baseline_cpu_cores, self.available_cpu_cores)
    }

    fn offered_cpu(&self) -> f64 {
        self.load.read_only.cpu_demand_cores() + self.load.mutating.cpu_demand_cores()
    }

    /// The rejection probability a setting's limits are sized for.
    pub fn rejection_target(&self) -> f64 {
        self.slo.rejection_probability * REJECTION_MARGIN
    }

    /// Least cores that can keep the headroom when rejections are within the bound.
    pub fn cores_floor(&self) -> f64 {
        let accepted = (1.0 - self.rejection_target()) * self.offered_cpu();
        (accepted + self.baseline_cpu_cores) / self.max_cpu_utilization
    }

    fn class_load(&self, class: Class) -> &ClassLoad {
        match class {
            Class::ReadOnly => &self.load.read_only,
            Class::Mutating => &self.load.mutating,
        }
    }

    fn limit_grid(&self, class: Class) -> &KnobRange {
        match class {
            Class::ReadOnly => &self.read_limit,
            Class::Mutating => &self.mutating_limit,
        }
    }

    fn slo_s(&self, class: Class) -> f64 {
        match class {
            Class::ReadOnly => self.slo.read_only_p99_s(),
            Class::Mutating => self.slo.mutating_p99_s,
        }
    }

    fn capacity_rps(&self, limit: f64, x: f64) -> f64 {
        let m = &self.load.mutating;
        limit / (m.cpu_s * x + m.non_cpu_s)
    }

    /// The cores of a replica with `usable` of them free for requests, at CPU load `cpu_load`.
    fn sharing(&self, usable: f64, cpu_load: f64) -> Sharing {
        Sharing {
            x: cpu_slowdown(usable, cpu_load),
            read_only: Occupancy::new(&self.load.read_only, usable, cpu_load),
            mutating: Occupancy::new(&self.load.mutating, usable, cpu_load),
        }
    }

    /// Whether one class meets its constraints with the cores shared as in `sharing`.
    fn class_ok(&self, class: Class, limit: f64, queue: f64, sharing: &mut Sharing) -> bool {
        let limits = ClassLimits {
            concurrency_limit: limit as u32,
            queue_length: queue as u32,
        };
        let x = sharing.x;
        let m = ClassModel::new(self.class_load(class), &limits, x)
            .with_occupancy(sharing.occupancy(class));
        m.rejection_probability() <= self.rejection_target()
            && m.within(self.slo_s(class)) >= P99
            && (class == Class::ReadOnly
                || self.capacity_rps(limit, x) >= self.required_mutating_capacity)
    }

    /// The least grid limit meeting the class's constraints as shared, by bisection.
    fn least_limit(&self, class: Class, queue: f64, sharing: &mut Sharing) -> Option<f64> {
        let grid = self.limit_grid(class);
        let values: Vec<f64> = grid.values().collect();
        if !self.class_ok(class, *values.last()?, queue, sharing) {
            return None;
        }
        let (mut lo, mut hi) = (0, values.len() - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.class_ok(class, values[mid], queue, sharing) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Some(values[lo])
    }

    fn settings(&self, cores: f64, ro: f64, mu: f64, queue: f64) -> ApiserverSettings {
        let mut s = ApiserverSettings {
            cpu_cores: cores,
            memory_bytes: 0.0,
            max_requests_inflight: ro as u32,
            max_mutating_requests_inflight: mu as u32,
            queue_length: queue as u32,
        };
        s.memory_bytes = self.memory.bytes(f64::from(s.total_inflight())).0;
        s
    }

    /// Cost of a setting at these cores with the least memory the grids allow.
    fn cost_floor(&self, cores: f64) -> f64 {
        let least = self.settings(
            cores,
            self.read_limit.min,
            self.mutating_limit.min,
            self.queue_length.min,
        );
        self.cost.cost(cores, least.memory_bytes)
    }

    /// The full model at one setting.
    pub fn check(&self, s: &ApiserverSettings) -> Result<Candidate> {
        let cost = self.cost.cost(s.cpu_cores, s.memory_bytes);
        let mut violations = Vec::new();
        let usable = self.queue_cores(s.cpu_cores);
        let effective = self.effective_cores(s.cpu_cores);
        if usable <= 0.0 {
            violations.push(Violation {
                constraint: Constraint::CpuHeadroom,
                amount: self.baseline_cpu_cores / effective / self.max_cpu_utilization,
            });
            return Ok(Candidate {
                settings: *s,
                cost,
                cpu_utilization: 1.0,
                cpu_slowdown: f64::INFINITY,
                read_only_rejection: 1.0,
                mutating_rejection: 1.0,
                mutating_capacity_rps: 0.0,
                violations,
            });
        }
        let model = ApiserverModel::new(&self.load, &s.queue_setting(usable))?;
        let utilization = (model.cpu_used_cores + self.baseline_cpu_cores) / effective;
        let capacity = self.capacity_rps(
            f64::from(s.max_mutating_requests_inflight),
            model.cpu_slowdown,
        );
        let eps = self.rejection_target();
        let mut miss = |constraint, amount: f64| {
            if amount > 0.0 {
                violations.push(Violation { constraint, amount });
            }
        };
        miss(
            Constraint::CpuHeadroom,
            utilization / self.max_cpu_utilization - 1.0,
        );
        // Rejections are compared in orders of magnitude, against the target the limits are
        // sized for: 1e-3 against 1e-4 misses by 1.
        let (ro_rej, mu_rej) = (
            model.read_only.rejection_probability(),
            model.mutating.rejection_probability(),
        );
        miss(Constraint::ReadOnlyRejection, (ro_rej / eps).log10());
        miss(Constraint::MutatingRejection, (mu_rej / eps).log10());
        // A P99 miss is the share of requests over the SLO beyond the allowed 1%, plus how far
        // the mean is past what an exponential response with that P99 would have: the share
        // alone stops growing once nearly every request is late, the mean does not.
        let late = |class: &ClassModel, slo_s: f64| {
            let share = (P99 - class.within(slo_s)) / (1.0 - P99);
            if share > 0.0 {
                share
                    + (class.mean_response() * (1.0 / (1.0 - P99)).ln() / slo_s)
                        .ln()
                        .max(0.0)
            } else {
                share
            }
        };
        miss(
            Constraint::ReadOnlyP99,
            late(&model.read_only, self.slo.read_only_p99_s()),
        );
        miss(
            Constraint::MutatingP99,
            late(&model.mutating, self.slo.mutating_p99_s),
        );
        miss(
            Constraint::MutatingCapacity,
            self.required_mutating_capacity / capacity - 1.0,
        );
        // A room below what the measured bursts ask for (as far as the bounds allow) is a
        // miss of its own: the Poisson model sees no cost in it, so without this a current
        // room too small for the bursts would be kept by the deadband at no saving.
        let floor = self.burst_room.min(self.queue_length.max);
        miss(
            Constraint::BurstRoom,
            floor / f64::from(s.queue_length.max(1)) - 1.0,
        );
        if !self.memory.bytes(f64::from(s.total_inflight())).1 {
            miss(
                Constraint::MemoryBound,
                s.memory_bytes / self.memory.grid.max - 1.0,
            );
        }
        Ok(Candidate {
            settings: *s,
            cost,
            cpu_utilization: utilization,
            cpu_slowdown: model.cpu_slowdown,
            read_only_rejection: ro_rej,
            mutating_rejection: mu_rej,
            mutating_capacity_rps: capacity,
            violations,
        })
    }

    /// The cheapest feasible setting at these cores, if any; `evaluations` counts full solves.
    fn best_at(&self, cores: f64, evaluations: &mut usize) -> Result<Option<Candidate>> {
        let usable = self.queue_cores(cores);
        if usable <= 0.0 || self.effective_cores(cores) < self.cores_floor() {
            return Ok(None);
        }
        let offered = self.offered_cpu();
        let mut low = self.sharing(usable, (1.0 - self.rejection_target()) * offered);
        let mut high = self.sharing(usable, offered);
        // Candidates rank by memory, then smaller queues, then smaller limits. Memory grows
        // with the queue, so the queues are walked upwards and the walk stops at the first
        // queue whose least memory (the grids' least limits) is no cheaper than the best
        // found: that queue and every longer one can only tie it on memory and lose on the
        // queue, or cost more. Their limits are never bisected.
        let mut best: Option<Candidate> = None;
        for queue in self.queue_length.values() {
            let floor = self.settings(cores, self.read_limit.min, self.mutating_limit.min, queue);
            if best
                .as_ref()
                .is_some_and(|b| floor.memory_bytes >= b.settings.memory_bytes)
            {
                break;
            }
            let mut bounds = |class| {
                let lo = self.least_limit(class, queue, &mut low)?;
                let hi = self
                    .least_limit(class, queue, &mut high)
                    .unwrap_or(self.limit_grid(class).max);
                Some((lo, hi))
            };
            let (Some(ro), Some(mu)) = (bounds(Class::ReadOnly), bounds(Class::Mutating)) else {
                continue;
            };
            let mut ranked = Vec::new();
            let mut r = ro.0;
            while r <= ro.1 {
                let mut m = mu.0;
                while m <= mu.1 {
                    ranked.push(self.settings(cores, r, m, queue));
                    m += self.mutating_limit.step;
                }
                r += self.read_limit.step;
            }
            // Cheapest memory first; ties go to smaller limits.
            ranked.sort_by(|a, b| {
                a.memory_bytes
                    .total_cmp(&b.memory_bytes)
                    .then(a.max_requests_inflight.cmp(&b.max_requests_inflight))
                    .then(
                        a.max_mutating_requests_inflight
                            .cmp(&b.max_mutating_requests_inflight),
                    )
            });
            for s in ranked {
                // A shorter queue's best wins ties on memory.
                if best
                    .as_ref()
                    .is_some_and(|b| s.memory_bytes >= b.settings.memory_bytes)
                {
                    break;
                }
                *evaluations += 1;
                let c = self.check(&s)?;
                if c.feasible() {
                    best = Some(c);
                    break;
                }
            }
        }
        Ok(best)
    }

    /// The most requests of a class worth running at once on `usable` cores: enough to keep
    /// the class's share of the CPU busy while each request also waits off-CPU,
    /// usable · share · (D + T) / D. Past it the cores are saturated and more concurrency
    /// only stretches every request; APF's seats are meant to stop there.
    fn knee_limit(&self, class: Class, usable: f64) -> f64 {
        let load = self.class_load(class);
        let grid = self.limit_grid(class);
        let offered = self.offered_cpu();
        if load.cpu_s <= 0.0 || offered <= 0.0 {
            return grid.max;
        }
        let share = load.cpu_demand_cores() / offered;
        let knee = usable * share * (load.cpu_s + load.non_cpu_s) / load.cpu_s;
        grid.ceil(KNEE_MARGIN * knee).unwrap_or(grid.max)
    }

    /// The setting at these cores that misses its constraints by least. Past saturation no
    /// limit makes the apiserver faster: APF's seats are meant to stop at the CPU's knee, so
    /// each class gets the concurrency that keeps its share of the cores busy
    /// ([`Self::knee_limit`]) and the excess is rejected rather than stretched or left
    /// idle (searched freely, the limits went to thousands of slots on a saturated
    /// recording, and to 10 readOnly slots, shedding 83% of reads, at five times the
    /// example's load). Only the waiting room is chosen, among a few finite values.
    fn least_violating_at(&self, cores: f64, evaluations: &mut usize) -> Result<Candidate> {
        let usable = self.queue_cores(cores).max(1e-9);
        let ro = self.knee_limit(Class::ReadOnly, usable);
        let mu = self.knee_limit(Class::Mutating, usable);
        let mut best: Option<Candidate> = None;
        for queue in spread(&self.queue_length, SPREAD_POINTS) {
            *evaluations += 1;
            let c = self.check(&self.settings(cores, ro, mu, queue))?;
            if best
                .as_ref()
                .is_none_or(|b| c.total_violation() < b.total_violation())
            {
                best = Some(c);
            }
        }
        Ok(best.expect("a grid has at least one value"))
    }

    /// Why a setting with fewer cores than `cores` does not qualify.
    fn binding(&self, cores: f64, evaluations: &mut usize) -> Result<Violation> {
        let Some(lower) = self.cores.floor(cores - self.cores.step) else {
            return Ok(Violation {
                constraint: Constraint::LowerBound,
                amount: 0.0,
            });
        };
        let effective = self.effective_cores(lower);
        if effective < self.cores_floor() || effective <= self.baseline_cpu_cores {
            let floor = self.cores_floor();
            return Ok(Violation {
                constraint: Constraint::CpuHeadroom,
                amount: floor / effective - 1.0,
            });
        }
        let c = self.least_violating_at(lower, evaluations)?;
        Ok(c.worst().unwrap_or(Violation {
            constraint: Constraint::MemoryBound,
            amount: 0.0,
        }))
    }

    pub fn solve(&self) -> Result<ApiserverOutcome> {
        let mut evaluations = 0;
        let mut best: Option<Candidate> = None;
        let mut runner_up: Option<Candidate> = None;
        let start = self
            .cores
            .ceil(self.cores_floor())
            .unwrap_or(self.cores.max);
        let grid = KnobRange {
            min: start,
            ..self.cores
        };
        for cores in grid.values() {
            let bar = runner_up.as_ref().or(best.as_ref()).map(|c| c.cost);
            if bar.is_some_and(|bar| self.cost_floor(cores) >= bar) && runner_up.is_some() {
                break;
            }
            if let Some(c) = self.best_at(cores, &mut evaluations)? {
                match &best {
                    Some(b) if c.cost < b.cost => {
                        runner_up = best.replace(c);
                    }
                    Some(_) => {
                        if runner_up.as_ref().is_none_or(|r| c.cost < r.cost) {
                            runner_up = Some(c);
                        }
                    }
                    None => best = Some(c),
                }
            }
        }
        match best {
            Some(best) => {
                let binding = self.binding(best.settings.cpu_cores, &mut evaluations)?;
                let sized_by = self.sized_by(&best, &mut evaluations)?;
                Ok(ApiserverOutcome {
                    best,
                    runner_up,
                    binding,
                    sized_by,
                    evaluations,
                })
            }
            None => {
                let best = self.least_violating_at(self.cores.max, &mut evaluations)?;
                let binding = best.worst().expect("infeasible has a violation");
                let sized_by = self.sized_by(&best, &mut evaluations)?;
                Ok(ApiserverOutcome {
                    best,
                    runner_up: None,
                    binding,
                    sized_by,
                    evaluations,
                })
            }
        }
    }

    /// Why each limit of `c` is not a grid step lower: the bound or floor it sits on, the
    /// knee it is capped at, or the constraint a step less would break by most.
    fn sized_by(&self, c: &Candidate, evaluations: &mut usize) -> Result<SizedBy> {
        let s = c.settings;
        let usable = self.queue_cores(s.cpu_cores);
        let mut limit = |class: Class, value: u32| -> Result<Constraint> {
            let grid = self.limit_grid(class);
            let value = f64::from(value);
            let Some(lower) = grid.floor(value - grid.step).filter(|_| value > grid.min) else {
                return Ok(Constraint::LowerBound);
            };
            if !c.feasible() && usable > 0.0 && value >= self.knee_limit(class, usable) {
                return Ok(Constraint::CpuKnee);
            }
            let mut fewer = s;
            match class {
                Class::ReadOnly => fewer.max_requests_inflight = lower as u32,
                Class::Mutating => fewer.max_mutating_requests_inflight = lower as u32,
            }
            self.worsened(c, &fewer, evaluations)
        };
        let max_requests_inflight = limit(Class::ReadOnly, s.max_requests_inflight)?;
        let max_mutating_requests_inflight =
            limit(Class::Mutating, s.max_mutating_requests_inflight)?;
        let queue = f64::from(s.queue_length);
        let grid = &self.queue_length;
        let queue_length = if queue - grid.step < self.burst_room {
            Constraint::BurstRoom
        } else {
            match grid.floor(queue - grid.step).filter(|_| queue > grid.min) {
                None => Constraint::LowerBound,
                Some(lower) => {
                    let mut less = s;
                    less.queue_length = lower as u32;
                    self.worsened(c, &less, evaluations)?
                }
            }
        };
        Ok(SizedBy {
            max_requests_inflight,
            max_mutating_requests_inflight,
            queue_length,
        })
    }

    /// The constraint that `other` misses by most beyond what `c` misses it by; memory's
    /// bound when none gets worse (the cheaper setting was ruled out only by its cost tie).
    fn worsened(
        &self,
        c: &Candidate,
        other: &ApiserverSettings,
        evaluations: &mut usize,
    ) -> Result<Constraint> {
        *evaluations += 1;
        let o = self.check(&self.settings(
            other.cpu_cores,
            f64::from(other.max_requests_inflight),
            f64::from(other.max_mutating_requests_inflight),
            f64::from(other.queue_length),
        ))?;
        let amount = |cand: &Candidate, k: Constraint| {
            cand.violations
                .iter()
                .find(|v| v.constraint == k)
                .map_or(0.0, |v| v.amount)
        };
        Ok(o.violations
            .iter()
            .map(|v| (v.constraint, v.amount - amount(c, v.constraint)))
            .filter(|(_, d)| *d > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(Constraint::MemoryBound, |(k, _)| k))
    }
}

/// Limits tried per class when no setting is feasible.
const SPREAD_POINTS: usize = 5;

/// How far past the CPU's knee a limit may go when nothing is feasible: the knee is a mean,
/// and a little more concurrency keeps the cores busy through its fluctuations.
const KNEE_MARGIN: f64 = 1.5;

/// `n` grid values spaced geometrically from `min` to `max`, both included, without repeats.
fn spread(grid: &KnobRange, n: usize) -> Vec<f64> {
    let lo = grid.min.max(1.0);
    let ratio = (grid.max.max(lo) / lo).powf(1.0 / (n - 1) as f64);
    let mut v: Vec<f64> = std::iter::once(grid.min)
        .chain((0..n).filter_map(|i| grid.floor(lo * ratio.powi(i as i32))))
        .collect();
    v.dedup();
    v
}

/// The least grid QPS for which `ok` holds (monotone in QPS), or the most if none does.
fn least_qps(grid: &KnobRange, ok: impl Fn(f64) -> bool) -> (f64, bool) {
    let values: Vec<f64> = grid.values().collect();
    if !ok(grid.max) {
        return (grid.max, false);
    }
    let (mut lo, mut hi) = (0, values.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if ok(values[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    (values[lo], true)
}

/// Scheduler: the least QPS whose pending-pod P99 meets the pod-startup SLO, with the
/// apiserver not binding (the coupling constraint makes sure of that).
pub fn scheduler_qps(load: &SchedulerLoad, grid: &KnobRange, slo: &Slo) -> (f64, bool) {
    least_qps(grid, |qps| {
        scheduler::predict(
            load,
            &SchedulerSetting {
                client_qps: qps,
                client_burst: 0,
                apiserver_capacity: f64::INFINITY,
            },
        )
        .is_ok_and(|p| p.p99_pending_s <= slo.pod_startup_p99_s)
    })
}

/// Controller-manager: the least QPS at which its requests' P99 wait on the token bucket,
/// taken as an M/M/1 queue served at `qps`, meets the client-throttle SLO.
pub fn controller_manager_qps(demand_rps: f64, grid: &KnobRange, slo: &Slo) -> (f64, bool) {
    least_qps(grid, |qps| {
        Mmc::new(demand_rps, qps, 1)
            .and_then(|q| q.wait_percentile(P99))
            .is_ok_and(|w| w <= slo.client_throttle_p99_s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::MemoryPolicy;

    fn problem(ro_rate: f64, mu_rate: f64) -> ApiserverProblem {
        let range = |min, max, step| KnobRange { min, max, step };
        ApiserverProblem {
            load: ApiserverLoad {
                read_only: ClassLoad {
                    arrival_rate: ro_rate,
                    cpu_s: 0.002,
                    non_cpu_s: 0.015,
                    non_cpu_scv: 1.0,
                },
                mutating: ClassLoad {
                    arrival_rate: mu_rate,
                    cpu_s: 0.005,
                    non_cpu_s: 0.025,
                    non_cpu_scv: 1.0,
                },
            },
            baseline_cpu_cores: 0.2,
            available_cpu_cores: None,
            cores: range(0.5, 16.0, 0.25),
            read_limit: range(10.0, 3000.0, 10.0),
            mutating_limit: range(5.0, 1000.0, 5.0),
            queue_length: range(0.0, 200.0, 25.0),
            memory: MemorySizing {
                peak_bytes: Some(2e9),
                observed_inflight_max: 50.0,
                current_bytes: 4e9,
                grid: range(1e9, 32e9, 0.25e9),
                policy: MemoryPolicy::default(),
            },
            required_mutating_capacity: 0.0,
            burst_room: 0.0,
            slo: Slo::default(),
            max_cpu_utilization: 0.85,
            cost: CostWeights::default(),
        }
    }

    /// Every setting of a coarse grid, by the full model: the search must find the same.
    fn brute_force(p: &ApiserverProblem) -> Option<Candidate> {
        let mut best: Option<Candidate> = None;
        for cores in p.cores.values() {
            for ro in p.read_limit.values() {
                for mu in p.mutating_limit.values() {
                    for q in p.queue_length.values() {
                        let c = p.check(&p.settings(cores, ro, mu, q)).unwrap();
                        if c.feasible() && best.as_ref().is_none_or(|b| c.cost < b.cost) {
                            best = Some(c);
                        }
                    }
                }
            }
        }
        best
    }

    #[test]
    fn matches_brute_force_on_a_coarse_grid() {
        let mut p = problem(1500.0, 300.0);
        p.cores = KnobRange {
            min: 1.0,
            max: 8.0,
            step: 0.5,
        };
        p.read_limit = KnobRange {
            min: 5.0,
            max: 200.0,
            step: 5.0,
        };
        p.mutating_limit = KnobRange {
            min: 5.0,
            max: 100.0,
            step: 5.0,
        };
        p.queue_length = KnobRange {
            min: 0.0,
            max: 40.0,
            step: 20.0,
        };
        let found = p.solve().unwrap();
        let truth = brute_force(&p).unwrap();
        assert!(found.best.feasible());
        assert!(
            (found.best.cost - truth.cost).abs() < 1e-12,
            "{found:?} vs {truth:?}"
        );
        assert_eq!(found.best.settings.cpu_cores, truth.settings.cpu_cores);
        assert!(found.evaluations < 50, "{}", found.evaluations);
        let runner = found.runner_up.unwrap();
        assert!(
            runner.cost >= found.best.cost && runner.settings.cpu_cores != truth.settings.cpu_cores
        );
    }

    #[test]
    fn limits_cover_the_tail_of_the_requests_in_service_with_a_margin() {
        // Not the mean concurrency: the number of a class's requests on shared cores has a
        // geometric tail, and the limit must sit far enough out in it that rejections stay
        // a tenth of the SLO. The M/M/c/K view alone put the limits where the simulation
        // measured 1e-4 to 1e-3.
        for (ro, mu) in [(300.0, 60.0), (1500.0, 300.0), (3000.0, 600.0)] {
            let p = problem(ro, mu);
            let s = p.solve().unwrap().best.settings;
            let usable = s.cpu_cores - p.baseline_cpu_cores;
            let cpu = p.offered_cpu();
            let x = cpu_slowdown(usable, cpu);
            for (class, limit) in [
                (&p.load.read_only, s.max_requests_inflight),
                (&p.load.mutating, s.max_mutating_requests_inflight),
            ] {
                let service_s = class.cpu_s * x + class.non_cpu_s;
                let mean = class.arrival_rate * service_s;
                assert!(f64::from(limit) >= 1.5 * mean, "{s:?}: mean {mean}");
                let rejection = Occupancy::new(class, usable, cpu).unwrap().rejection(
                    &ClassLimits {
                        concurrency_limit: limit,
                        queue_length: s.queue_length,
                    },
                    class.arrival_rate * service_s / f64::from(limit),
                );
                assert!(
                    rejection <= p.slo.rejection_probability * REJECTION_MARGIN,
                    "{s:?}: {rejection:e}"
                );
            }
        }
    }

    #[test]
    fn cpu_headroom_binds_at_moderate_load() {
        let out = problem(1500.0, 300.0).solve().unwrap();
        // 3 + 1.5 + 0.2 cores of demand / 0.85 = 5.53 → 5.75 cores.
        assert_eq!(out.best.settings.cpu_cores, 5.75);
        assert_eq!(out.binding.constraint, Constraint::CpuHeadroom);
        assert!(out.best.cpu_utilization <= 0.85);
    }

    #[test]
    fn impossible_load_gives_the_least_violating_setting() {
        let out = problem(20_000.0, 300.0).solve().unwrap();
        assert!(!out.best.feasible());
        assert_eq!(out.best.settings.cpu_cores, 16.0);
        assert!(out.binding.amount > 0.0);
    }

    #[test]
    fn client_qps_is_the_least_that_meets_the_slo() {
        let grid = KnobRange {
            min: 5.0,
            max: 1000.0,
            step: 5.0,
        };
        let load = SchedulerLoad {
            pod_arrival_rate: 100.0,
            algorithm_rate: 300.0,
            requests_per_pod: 1.0,
        };
        let (qps, ok) = scheduler_qps(&load, &grid, &Slo::default());
        // p99 = ln(100)/(qps − 100) ≤ 5 → qps ≥ 100.92.
        assert!(ok && qps == 105.0, "{qps}");
        let (qps, ok) = controller_manager_qps(40.0, &grid, &Slo::default());
        assert!(ok && qps > 40.0 && qps <= 90.0, "{qps}");
    }
}
