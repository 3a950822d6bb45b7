//! The policy: which replicas arak tunes, the SLOs, the bounds and steps of every knob and
//! the safety rules. Read from YAML and validated as a whole before a round uses it, so a
//! round never meets a nonsensical number.

use std::collections::{BTreeMap, BTreeSet};

use queue_model::apiserver::{ClassLoad, EXPONENTIAL_SCV, MAX_NON_CPU_SCV};
use queue_model::{MAX_CAPACITY, MAX_CORES, MIN_CORES};
use serde::{Deserialize, Serialize};

use crate::error::{Result, policy_error};
use crate::setting::CurrentSettings;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub apiservers: Vec<ReplicaPlacement>,
    #[serde(default)]
    pub schedulers: Vec<ReplicaPlacement>,
    #[serde(default)]
    pub controller_managers: Vec<ReplicaPlacement>,
    #[serde(default)]
    pub slo: Slo,
    pub bounds: Bounds,
    #[serde(default)]
    pub step_limits: StepLimits,
    #[serde(default)]
    pub safety: Safety,
    #[serde(default)]
    pub cost: CostWeights,
    #[serde(default)]
    pub forecast: ForecastPolicy,
    #[serde(default)]
    pub calibration: CalibrationPolicy,
    #[serde(default)]
    pub memory: MemoryPolicy,
    /// Highest predicted CPU utilisation a recommended setting may have. The apiserver
    /// model's P99 is within 10% up to ~85% and ~30% too low at 95%.
    #[serde(default = "default_max_cpu_utilization")]
    pub max_cpu_utilization: f64,
    #[serde(default)]
    pub load_share: LoadShare,
    /// The settings running now, when they are kept with the policy.
    #[serde(default)]
    pub current: Option<CurrentSettings>,
}

/// One replica: its StatefulSet, container and the node it is pinned to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaPlacement {
    /// The replica's name in the snapshot (the pod name, e.g. `apiserver-0`).
    pub name: String,
    pub stateful_set: String,
    pub container: String,
    pub node_allocatable: NodeAllocatable,
    /// The master node the replica runs on. Replicas naming the same node share its
    /// allocatable, one budget: each is sized within what the others on it leave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What the replica's master node can give it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAllocatable {
    pub cpu_cores: f64,
    pub memory_bytes: f64,
}

/// Service-level objectives, Kubernetes' own by default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Slo {
    pub mutating_p99_s: f64,
    pub single_object_read_p99_s: f64,
    pub list_p99_s: f64,
    pub pod_startup_p99_s: f64,
    /// Highest acceptable probability that a request is rejected with 429.
    pub rejection_probability: f64,
    /// P99 time a controller-manager request waits on its own client token bucket: by
    /// default the whole mutating budget, since the bucket is modelled as an M/M/1 queue
    /// that ignores the burst and so overstates the wait.
    pub client_throttle_p99_s: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Self {
            mutating_p99_s: 1.0,
            single_object_read_p99_s: 1.0,
            list_p99_s: 30.0,
            pod_startup_p99_s: 5.0,
            rejection_probability: 1e-4,
            client_throttle_p99_s: 1.0,
        }
    }
}

impl Slo {
    /// The model has one readOnly class holding both GETs and LISTs, so it must meet the
    /// stricter of their two objectives.
    pub fn read_only_p99_s(&self) -> f64 {
        self.single_object_read_p99_s.min(self.list_p99_s)
    }
}

/// A knob's allowed values: `min`, `min + step`, … up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnobRange {
    pub min: f64,
    pub max: f64,
    pub step: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    pub apiserver: ApiserverBounds,
    pub scheduler: ClientBounds,
    pub controller_manager: ClientBounds,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiserverBounds {
    pub cpu_cores: KnobRange,
    pub memory_bytes: KnobRange,
    pub max_requests_inflight: KnobRange,
    pub max_mutating_requests_inflight: KnobRange,
    /// One flow's waiting room per class in the sized APF levels: hand size × queue length
    /// limit (Kubernetes' defaults give 6 × 50 = 300).
    pub queue_length: KnobRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientBounds {
    pub cpu_cores: KnobRange,
    pub memory_bytes: KnobRange,
    pub client_qps: KnobRange,
    /// Burst is set to `burst_per_qps × qps` within these bounds (client-go's default is 2).
    pub client_burst: KnobRange,
    #[serde(default = "default_burst_per_qps")]
    pub burst_per_qps: f64,
}

/// How far one round may move a knob: to at most `×max_increase_factor` and at least
/// `÷max_decrease_factor` of its current value (and always by one grid step, except that a
/// decrease factor of 1 means a knob never goes down).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepLimits {
    pub max_increase_factor: f64,
    pub max_decrease_factor: f64,
}

impl Default for StepLimits {
    fn default() -> Self {
        Self {
            max_increase_factor: 2.0,
            max_decrease_factor: 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Safety {
    /// A change that fixes no predicted SLO violation must save at least this share of cost.
    pub deadband_saving_share: f64,
    /// Seconds after a change during which nothing else changes.
    pub cooldown_s: f64,
    /// Below this confidence in the load or the calibration, hold.
    pub min_confidence: ConfidenceLevel,
    /// Seconds after a change before a change that lowers any knob, while every SLO is met;
    /// and, whatever the SLOs, seconds after arak raised a knob before that knob goes down.
    pub scale_down_delay_s: f64,
}

impl Default for Safety {
    fn default() -> Self {
        Self {
            deadband_saving_share: 0.05,
            cooldown_s: 600.0,
            min_confidence: ConfidenceLevel::Medium,
            // Three cooldowns: a load that drops for good is still served by what it had,
            // only at a little more cost, for half an hour.
            scale_down_delay_s: 1800.0,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "camelCase")]
pub enum ConfidenceLevel {
    Low,
    #[default]
    Medium,
    High,
}

/// Cost of a setting: `cpu_core × cores + memory_gib × GiB`, summed over replicas. With the
/// defaults a core outweighs 10 GiB, so the search spends least CPU first, then memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostWeights {
    pub cpu_core: f64,
    pub memory_gib: f64,
}

impl Default for CostWeights {
    fn default() -> Self {
        Self {
            cpu_core: 1.0,
            memory_gib: 0.1,
        }
    }
}

impl CostWeights {
    pub fn cost(&self, cpu_cores: f64, memory_bytes: f64) -> f64 {
        self.cpu_core * cpu_cores + self.memory_gib * memory_bytes / GIB
    }
}

pub(crate) const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ForecastMethod {
    Latest,
    Ewma,
    #[default]
    Holt,
    HoltWinters,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastPolicy {
    pub method: ForecastMethod,
    /// Plan for this upper quantile of the forecast (0.5 = the point forecast).
    pub quantile: f64,
    /// How far ahead to plan, seconds: about the time until the next change can land.
    pub horizon_s: f64,
    /// Smoothing of the level, trend and season (Holt-Winters' α, β, γ).
    pub level_smoothing: f64,
    pub trend_smoothing: f64,
    pub season_smoothing: f64,
    /// Length of a season for Holt-Winters, seconds.
    pub season_s: f64,
}

impl Default for ForecastPolicy {
    fn default() -> Self {
        Self {
            method: ForecastMethod::Holt,
            quantile: 0.9,
            horizon_s: 300.0,
            level_smoothing: 0.5,
            trend_smoothing: 0.1,
            season_smoothing: 0.1,
            season_s: 86_400.0,
        }
    }
}

/// What a request class costs when the history cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassPrior {
    pub cpu_s: f64,
    pub non_cpu_s: f64,
    /// The off-CPU time's squared coefficient of variation (1: exponential); the calibration
    /// fits it from the measured mean and P99 where the history has both.
    #[serde(default = "exponential_scv")]
    pub non_cpu_scv: f64,
}

fn exponential_scv() -> f64 {
    EXPONENTIAL_SCV
}

impl ClassPrior {
    /// The class at `arrival_rate` requests per second with these costs, as the model takes it.
    pub fn load(self, arrival_rate: f64) -> ClassLoad {
        ClassLoad {
            arrival_rate,
            cpu_s: self.cpu_s,
            non_cpu_s: self.non_cpu_s,
            non_cpu_scv: self.non_cpu_scv,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalibrationPolicy {
    /// Fewer usable history samples than this and the priors are used, with low confidence.
    pub min_samples: usize,
    pub read_only: ClassPrior,
    pub mutating: ClassPrior,
    /// CPU an apiserver burns with no requests (watches, GC), cores.
    pub baseline_cpu_cores: f64,
    /// Plausible CPU seconds per request; a fit outside is not believed.
    pub min_cpu_s: f64,
    pub max_cpu_s: f64,
    /// Pods per second the scheduling algorithm places, when the snapshot cannot tell
    /// (too few bindings to divide its CPU by).
    pub scheduler_algorithm_rate: f64,
    /// Mutating API requests per scheduled pod, when the snapshot cannot tell.
    pub scheduler_requests_per_pod: f64,
}

impl Default for CalibrationPolicy {
    fn default() -> Self {
        Self {
            min_samples: 12,
            read_only: ClassPrior {
                cpu_s: 0.002,
                non_cpu_s: 0.015,
                non_cpu_scv: EXPONENTIAL_SCV,
            },
            mutating: ClassPrior {
                cpu_s: 0.005,
                non_cpu_s: 0.025,
                non_cpu_scv: EXPONENTIAL_SCV,
            },
            baseline_cpu_cores: 0.1,
            min_cpu_s: 1e-5,
            max_cpu_s: 0.5,
            scheduler_algorithm_rate: 300.0,
            scheduler_requests_per_pod: 1.0,
        }
    }
}

/// Memory = observed peak × (1 + `headroom_share`) + `bytes_per_inflight_request` for every
/// request the new limits admit beyond the most seen at once; never below the peak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryPolicy {
    pub headroom_share: f64,
    pub bytes_per_inflight_request: f64,
}

impl Default for MemoryPolicy {
    fn default() -> Self {
        Self {
            headroom_share: 0.25,
            bytes_per_inflight_request: 1024.0 * 1024.0,
        }
    }
}

/// How the load balancer spreads the apiserver load over the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoadShare {
    /// In proportion to each node's allocatable CPU: a least-connections balancer sends
    /// more to the replicas that finish requests sooner.
    #[default]
    NodeCpu,
    /// As observed in the snapshot.
    Observed,
}

fn default_max_cpu_utilization() -> f64 {
    0.85
}

fn default_burst_per_qps() -> f64 {
    2.0
}

impl Policy {
    /// Parses and validates a policy.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let policy: Policy = serde_norway::from_str(text)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Every error names the field and says what is wrong with it.
    pub fn validate(&self) -> Result<()> {
        if self.apiservers.is_empty() {
            return Err(policy_error("apiservers", "at least one apiserver replica"));
        }
        for (list, replicas) in self.replica_lists() {
            // Names are per component: a hosted layout may name replicas after their node.
            let mut names = BTreeSet::new();
            for (i, r) in replicas.iter().enumerate() {
                let at = format!("{list}[{i}]");
                if r.name.is_empty() {
                    return Err(policy_error(format!("{at}.name"), "must not be empty"));
                }
                if !names.insert(r.name.as_str()) {
                    return Err(policy_error(
                        format!("{at}.name"),
                        format!("`{}` is named twice", r.name),
                    ));
                }
                positive(
                    &format!("{at}.node_allocatable.cpu_cores"),
                    r.node_allocatable.cpu_cores,
                )?;
                positive(
                    &format!("{at}.node_allocatable.memory_bytes"),
                    r.node_allocatable.memory_bytes,
                )?;
            }
        }
        let s = &self.slo;
        positive("slo.mutating_p99_s", s.mutating_p99_s)?;
        positive("slo.single_object_read_p99_s", s.single_object_read_p99_s)?;
        positive("slo.list_p99_s", s.list_p99_s)?;
        positive("slo.pod_startup_p99_s", s.pod_startup_p99_s)?;
        positive("slo.client_throttle_p99_s", s.client_throttle_p99_s)?;
        open_unit("slo.rejection_probability", s.rejection_probability)?;

        let a = &self.bounds.apiserver;
        a.cpu_cores.validate("bounds.apiserver.cpu_cores", false)?;
        a.cpu_cores
            .within_model_cores("bounds.apiserver.cpu_cores")?;
        a.memory_bytes
            .validate("bounds.apiserver.memory_bytes", false)?;
        a.max_requests_inflight
            .validate("bounds.apiserver.max_requests_inflight", true)?;
        a.max_mutating_requests_inflight
            .validate("bounds.apiserver.max_mutating_requests_inflight", true)?;
        a.queue_length
            .validate("bounds.apiserver.queue_length", true)?;
        for (field, limit) in [
            ("max_requests_inflight", &a.max_requests_inflight),
            (
                "max_mutating_requests_inflight",
                &a.max_mutating_requests_inflight,
            ),
        ] {
            let most = limit.max + a.queue_length.max;
            if most > f64::from(MAX_CAPACITY) {
                return Err(policy_error(
                    format!("bounds.apiserver.{field}.max"),
                    format!(
                        "{} plus queue_length.max {} lets {most} requests in at once; \
                         the model takes at most {MAX_CAPACITY}, more than any apiserver holds",
                        limit.max, a.queue_length.max
                    ),
                ));
            }
        }
        if a.max_requests_inflight.min < 1.0 || a.max_mutating_requests_inflight.min < 1.0 {
            return Err(policy_error(
                "bounds.apiserver.max_requests_inflight.min",
                "inflight limits must be at least 1",
            ));
        }
        for (name, b) in [
            ("scheduler", &self.bounds.scheduler),
            ("controller_manager", &self.bounds.controller_manager),
        ] {
            b.cpu_cores
                .validate(&format!("bounds.{name}.cpu_cores"), false)?;
            b.cpu_cores
                .within_model_cores(&format!("bounds.{name}.cpu_cores"))?;
            b.memory_bytes
                .validate(&format!("bounds.{name}.memory_bytes"), false)?;
            b.client_qps
                .validate(&format!("bounds.{name}.client_qps"), false)?;
            b.client_burst
                .validate(&format!("bounds.{name}.client_burst"), true)?;
            positive(&format!("bounds.{name}.client_qps.min"), b.client_qps.min)?;
            positive(&format!("bounds.{name}.burst_per_qps"), b.burst_per_qps)?;
        }
        for (list, replicas) in self.replica_lists() {
            let bounds = self.resource_bounds(list);
            for (i, r) in replicas.iter().enumerate() {
                let at = format!("{list}[{i}].node_allocatable");
                if bounds.0.min > r.node_allocatable.cpu_cores {
                    return Err(policy_error(
                        format!("{at}.cpu_cores"),
                        format!(
                            "{} cores is below the CPU bound's minimum {}: the replica cannot fit its node",
                            r.node_allocatable.cpu_cores, bounds.0.min
                        ),
                    ));
                }
                if bounds.1.min > r.node_allocatable.memory_bytes {
                    return Err(policy_error(
                        format!("{at}.memory_bytes"),
                        format!(
                            "{} bytes is below the memory bound's minimum {}: the replica cannot fit its node",
                            r.node_allocatable.memory_bytes, bounds.1.min
                        ),
                    ));
                }
            }
        }

        // A node is one budget: every replica on it must say the same of its allocatable,
        // and the least each may be given must fit it together.
        struct Node {
            first: String,
            allocatable: NodeAllocatable,
            least_cpu_cores: f64,
            least_memory_bytes: f64,
        }
        let mut nodes: BTreeMap<&str, Node> = BTreeMap::new();
        for (list, replicas) in self.replica_lists() {
            let (cpu, memory) = self.resource_bounds(list);
            for (i, r) in replicas.iter().enumerate() {
                let Some(name) = r.node.as_deref() else {
                    continue;
                };
                let at = format!("{list}[{i}]");
                if name.is_empty() {
                    return Err(policy_error(format!("{at}.node"), "must not be empty"));
                }
                let node = nodes.entry(name).or_insert_with(|| Node {
                    first: at.clone(),
                    allocatable: r.node_allocatable,
                    least_cpu_cores: 0.0,
                    least_memory_bytes: 0.0,
                });
                if node.allocatable != r.node_allocatable {
                    return Err(policy_error(
                        format!("{at}.node_allocatable"),
                        format!(
                            "node `{name}` has {} cores and {} bytes here but {} cores and {} bytes in {}",
                            r.node_allocatable.cpu_cores,
                            r.node_allocatable.memory_bytes,
                            node.allocatable.cpu_cores,
                            node.allocatable.memory_bytes,
                            node.first
                        ),
                    ));
                }
                node.least_cpu_cores += cpu.min;
                node.least_memory_bytes += memory.min;
                if node.least_cpu_cores > node.allocatable.cpu_cores
                    || node.least_memory_bytes > node.allocatable.memory_bytes
                {
                    return Err(policy_error(
                        format!("{at}.node"),
                        format!(
                            "the replicas on node `{name}` need at least {} cores and {} bytes by the bounds' minimums; it has {} and {}",
                            node.least_cpu_cores,
                            node.least_memory_bytes,
                            node.allocatable.cpu_cores,
                            node.allocatable.memory_bytes
                        ),
                    ));
                }
            }
        }

        let st = &self.step_limits;
        at_least_one("step_limits.max_increase_factor", st.max_increase_factor)?;
        at_least_one("step_limits.max_decrease_factor", st.max_decrease_factor)?;
        let sa = &self.safety;
        fraction("safety.deadband_saving_share", sa.deadband_saving_share)?;
        non_negative("safety.cooldown_s", sa.cooldown_s)?;
        non_negative("safety.scale_down_delay_s", sa.scale_down_delay_s)?;
        non_negative("cost.cpu_core", self.cost.cpu_core)?;
        non_negative("cost.memory_gib", self.cost.memory_gib)?;
        if self.cost.cpu_core + self.cost.memory_gib == 0.0 {
            return Err(policy_error("cost", "the weights must not both be zero"));
        }

        let f = &self.forecast;
        if !(0.5..1.0).contains(&f.quantile) {
            return Err(policy_error(
                "forecast.quantile",
                format!(
                    "{} is outside [0.5, 1): plan for the median or above",
                    f.quantile
                ),
            ));
        }
        positive("forecast.horizon_s", f.horizon_s)?;
        if f.horizon_s > MAX_HORIZON_S {
            return Err(policy_error(
                "forecast.horizon_s",
                format!(
                    "{} s is beyond {MAX_HORIZON_S} s: a change lands within minutes, and the \
                     rounds after it plan again",
                    f.horizon_s
                ),
            ));
        }
        open_unit("forecast.level_smoothing", f.level_smoothing)?;
        open_unit("forecast.trend_smoothing", f.trend_smoothing)?;
        open_unit("forecast.season_smoothing", f.season_smoothing)?;
        positive("forecast.season_s", f.season_s)?;

        let c = &self.calibration;
        if c.min_samples < 3 {
            return Err(policy_error(
                "calibration.min_samples",
                "a fit of three coefficients needs at least 3 samples",
            ));
        }
        positive("calibration.min_cpu_s", c.min_cpu_s)?;
        positive("calibration.max_cpu_s", c.max_cpu_s)?;
        if c.min_cpu_s > c.max_cpu_s {
            return Err(policy_error(
                "calibration.min_cpu_s",
                format!("{} is above max_cpu_s {}", c.min_cpu_s, c.max_cpu_s),
            ));
        }
        for (name, p) in [("read_only", c.read_only), ("mutating", c.mutating)] {
            let field = format!("calibration.{name}.cpu_s");
            positive(&field, p.cpu_s)?;
            if p.cpu_s < c.min_cpu_s || p.cpu_s > c.max_cpu_s {
                return Err(policy_error(
                    field,
                    format!("{} is outside [min_cpu_s, max_cpu_s]", p.cpu_s),
                ));
            }
            non_negative(&format!("calibration.{name}.non_cpu_s"), p.non_cpu_s)?;
            if !(EXPONENTIAL_SCV..=MAX_NON_CPU_SCV).contains(&p.non_cpu_scv) {
                return Err(policy_error(
                    format!("calibration.{name}.non_cpu_scv"),
                    format!(
                        "{} is outside [1, {MAX_NON_CPU_SCV}] (1: an exponential off-CPU time)",
                        p.non_cpu_scv
                    ),
                ));
            }
        }
        non_negative("calibration.baseline_cpu_cores", c.baseline_cpu_cores)?;
        positive(
            "calibration.scheduler_algorithm_rate",
            c.scheduler_algorithm_rate,
        )?;
        positive(
            "calibration.scheduler_requests_per_pod",
            c.scheduler_requests_per_pod,
        )?;

        fraction("memory.headroom_share", self.memory.headroom_share)?;
        non_negative(
            "memory.bytes_per_inflight_request",
            self.memory.bytes_per_inflight_request,
        )?;
        if !(self.max_cpu_utilization > 0.0 && self.max_cpu_utilization <= 1.0) {
            return Err(policy_error(
                "max_cpu_utilization",
                format!("{} is outside (0, 1]", self.max_cpu_utilization),
            ));
        }
        if let Some(current) = &self.current {
            current.validate(self)?;
        }
        Ok(())
    }

    /// Every replica of every component.
    pub fn replica_placements(&self) -> impl Iterator<Item = &ReplicaPlacement> {
        self.apiservers
            .iter()
            .chain(&self.schedulers)
            .chain(&self.controller_managers)
    }

    pub(crate) fn replica_lists(&self) -> [(&'static str, &[ReplicaPlacement]); 3] {
        [
            ("apiservers", &self.apiservers),
            ("schedulers", &self.schedulers),
            ("controller_managers", &self.controller_managers),
        ]
    }

    /// CPU and memory bounds of the component a replica list holds.
    fn resource_bounds(&self, list: &str) -> (KnobRange, KnobRange) {
        let b = &self.bounds;
        match list {
            "apiservers" => (b.apiserver.cpu_cores, b.apiserver.memory_bytes),
            "schedulers" => (b.scheduler.cpu_cores, b.scheduler.memory_bytes),
            _ => (
                b.controller_manager.cpu_cores,
                b.controller_manager.memory_bytes,
            ),
        }
    }
}

/// Furthest ahead a round may plan. A change lands within a cooldown and a roll (minutes),
/// and every round after it plans again; a day ahead planned 600× today's load from a trend.
const MAX_HORIZON_S: f64 = 3_600.0;

/// The most points a knob's grid may have: the search walks grids, and a step typed a
/// billion times too small (`step: 1e-9`) would otherwise allocate terabytes.
const MAX_GRID_POINTS: f64 = 100_000.0;

impl KnobRange {
    fn validate(&self, field: &str, whole: bool) -> Result<()> {
        non_negative(&format!("{field}.min"), self.min)?;
        non_negative(&format!("{field}.max"), self.max)?;
        positive(&format!("{field}.step"), self.step)?;
        if self.min > self.max {
            return Err(policy_error(
                format!("{field}.min"),
                format!("{} is above max {}", self.min, self.max),
            ));
        }
        let points = (self.max - self.min) / self.step + 1.0;
        if points > MAX_GRID_POINTS {
            return Err(policy_error(
                format!("{field}.step"),
                format!(
                    "{} makes {points:.3e} grid points from {} to {}; at most {MAX_GRID_POINTS:.0}",
                    self.step, self.min, self.max
                ),
            ));
        }
        if whole {
            for (part, v) in [("min", self.min), ("max", self.max), ("step", self.step)] {
                if v.fract() != 0.0 {
                    return Err(policy_error(
                        format!("{field}.{part}"),
                        format!("{v} is not a whole number of requests"),
                    ));
                }
                if v > f64::from(u32::MAX) {
                    return Err(policy_error(
                        format!("{field}.{part}"),
                        format!("{v} is above {}, the largest the flag takes", u32::MAX),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A CPU grid the queue model can evaluate: its cost grows with the cores.
    fn within_model_cores(&self, field: &str) -> Result<()> {
        if self.max > MAX_CORES {
            return Err(policy_error(
                format!("{field}.max"),
                format!(
                    "{} cores is above {MAX_CORES}, more than any master node has \
                     (millicores typed as cores?)",
                    self.max
                ),
            ));
        }
        if self.min < MIN_CORES {
            return Err(policy_error(
                format!("{field}.min"),
                format!(
                    "{} is below {MIN_CORES} (1m), Kubernetes' smallest CPU quantity",
                    self.min
                ),
            ));
        }
        Ok(())
    }

    /// The grid value nearest `value` from above (`value` itself when on the grid), or
    /// `None` past `max`.
    pub fn ceil(&self, value: f64) -> Option<f64> {
        if value <= self.min {
            return Some(self.min);
        }
        // A small tolerance keeps values a rounding error above a grid point on it.
        let k = ((value - self.min) / self.step - 1e-9).ceil();
        let v = self.at(k);
        (v <= self.max + 1e-9 * self.step).then_some(v.min(self.max))
    }

    /// The grid value nearest `value` from below, or `None` below `min`.
    pub fn floor(&self, value: f64) -> Option<f64> {
        if value < self.min - 1e-9 * self.step {
            return None;
        }
        let k = ((value - self.min) / self.step + 1e-9).floor();
        Some(self.at(k).min(self.max))
    }

    /// The grid point nearest `value`, on the grid's line even outside `[min, max]`: a
    /// setting the bounds exclude stays visibly out of bounds.
    pub fn nearest(&self, value: f64) -> f64 {
        self.at(((value - self.min) / self.step).round())
    }

    /// The same grid restricted to `[lo, hi]`, or `None` if no grid point lies inside.
    pub fn within(&self, lo: f64, hi: f64) -> Option<KnobRange> {
        let min = self.ceil(lo.max(self.min))?;
        let max = self.floor(hi.min(self.max))?;
        (min <= max).then_some(KnobRange {
            min,
            max,
            step: self.step,
        })
    }

    /// Grid values from `min` to `max`.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        let n = ((self.max - self.min) / self.step + 1e-9).floor() as usize;
        (0..=n).map(move |k| self.at(k as f64))
    }

    /// The k-th grid value. Whole grids (bytes, requests) are exact already; fractional ones
    /// (cores) are rounded to nine decimals so that 0.1 + 1 × 0.05 reads 0.15.
    fn at(&self, k: f64) -> f64 {
        let v = self.min + k * self.step;
        if self.min.fract() == 0.0 && self.step.fract() == 0.0 {
            v
        } else {
            (v * 1e9).round() / 1e9
        }
    }
}

fn non_negative(field: &str, v: f64) -> Result<()> {
    if !v.is_finite() {
        return Err(policy_error(field, format!("{v} is not a finite number")));
    }
    if v < 0.0 {
        return Err(policy_error(field, format!("{v} is negative")));
    }
    Ok(())
}

fn positive(field: &str, v: f64) -> Result<()> {
    non_negative(field, v)?;
    if v == 0.0 {
        return Err(policy_error(field, "must be greater than zero"));
    }
    Ok(())
}

fn fraction(field: &str, v: f64) -> Result<()> {
    non_negative(field, v)?;
    if v >= 1.0 {
        return Err(policy_error(field, format!("{v} is not below 1")));
    }
    Ok(())
}

fn open_unit(field: &str, v: f64) -> Result<()> {
    positive(field, v)?;
    if v >= 1.0 {
        return Err(policy_error(
            field,
            format!("{v} is not strictly between 0 and 1"),
        ));
    }
    Ok(())
}

fn at_least_one(field: &str, v: f64) -> Result<()> {
    non_negative(field, v)?;
    if v < 1.0 {
        return Err(policy_error(field, format!("{v} is below 1")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RecommenderError;

    const EXAMPLE: &str = include_str!("../../config/examples/policy.yaml");

    fn field_of(e: RecommenderError) -> String {
        match e {
            RecommenderError::Policy { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn the_example_policy_is_valid() {
        let p = Policy::from_yaml(EXAMPLE).unwrap();
        assert_eq!(p.apiservers.len(), 3);
        assert_eq!(p.slo, Slo::default());
    }

    #[test]
    fn errors_name_the_field() {
        let negative = EXAMPLE.replace("mutating_p99_s: 1.0", "mutating_p99_s: -1.0");
        let e = Policy::from_yaml(&negative).unwrap_err();
        assert!(e.to_string().contains("negative"), "{e}");
        assert_eq!(field_of(e), "slo.mutating_p99_s");

        let mut p = Policy::from_yaml(EXAMPLE).unwrap();
        p.bounds.apiserver.queue_length.min = 1500.0;
        assert_eq!(
            field_of(p.validate().unwrap_err()),
            "bounds.apiserver.queue_length.min"
        );

        for scv in [0.5, f64::NAN, 2000.0] {
            let mut p = Policy::from_yaml(EXAMPLE).unwrap();
            p.calibration.mutating.non_cpu_scv = scv;
            assert_eq!(
                field_of(p.validate().unwrap_err()),
                "calibration.mutating.non_cpu_scv"
            );
        }

        let mut p = Policy::from_yaml(EXAMPLE).unwrap();
        p.apiservers[1].node_allocatable.cpu_cores = 0.25;
        let e = p.validate().unwrap_err();
        assert!(e.to_string().contains("cannot fit"), "{e}");
        assert_eq!(field_of(e), "apiservers[1].node_allocatable.cpu_cores");

        // A step a billion times too small is refused, not walked.
        let mut p = Policy::from_yaml(EXAMPLE).unwrap();
        p.bounds.scheduler.client_qps.step = 1e-9;
        let e = p.validate().unwrap_err();
        assert!(e.to_string().contains("grid points"), "{e}");
        assert_eq!(field_of(e), "bounds.scheduler.client_qps.step");
    }

    fn current_error(e: RecommenderError) -> String {
        match e {
            RecommenderError::Current { field, .. } => field,
            other => panic!("not a current-settings error: {other}"),
        }
    }

    /// Issue #17: millicores typed as cores took 9 s (40000) to minutes (1e9); NaN, zero
    /// or negative values gave "cost NaN" and always Change.
    #[test]
    fn current_settings_a_running_replica_cannot_have_are_refused() {
        let apiserver_0 = "apiserver-0: { cpu_cores: 4, memory_bytes: 8589934592";
        for (bad, field) in [
            ("cpu_cores: 40000", "apiservers.apiserver-0.cpu_cores"),
            ("cpu_cores: .nan", "apiservers.apiserver-0.cpu_cores"),
            ("cpu_cores: 0", "apiservers.apiserver-0.cpu_cores"),
            ("cpu_cores: -4", "apiservers.apiserver-0.cpu_cores"),
        ] {
            let text = EXAMPLE.replace(
                apiserver_0,
                &format!("apiserver-0: {{ {bad}, memory_bytes: 8589934592"),
            );
            let e = Policy::from_yaml(&text).unwrap_err();
            assert!(e.to_string().contains(field), "{bad}: {e}");
            assert_eq!(current_error(e), field, "{bad}");
        }
        let mut p = Policy::from_yaml(EXAMPLE).unwrap();
        let cm = p.current.as_mut().unwrap();
        cm.apiservers.get_mut("apiserver-1").unwrap().memory_bytes = 1e30;
        assert_eq!(
            current_error(p.validate().unwrap_err()),
            "apiservers.apiserver-1.memory_bytes"
        );
        let mut p = Policy::from_yaml(EXAMPLE).unwrap();
        let c = p.current.as_mut().unwrap();
        c.apiservers
            .get_mut("apiserver-2")
            .unwrap()
            .max_requests_inflight = 0;
        assert_eq!(
            current_error(p.validate().unwrap_err()),
            "apiservers.apiserver-2.max_requests_inflight"
        );
        let mut p = Policy::from_yaml(EXAMPLE).unwrap();
        let c = p.current.as_mut().unwrap();
        c.schedulers.get_mut("scheduler-0").unwrap().client_qps = f64::NAN;
        assert_eq!(
            current_error(p.validate().unwrap_err()),
            "schedulers.scheduler-0.client_qps"
        );
        let mut p = Policy::from_yaml(EXAMPLE).unwrap();
        let c = p.current.as_mut().unwrap();
        c.controller_managers
            .get_mut("controller-manager-0")
            .unwrap()
            .client_burst = 0;
        assert_eq!(
            current_error(p.validate().unwrap_err()),
            "controller_managers.controller-manager-0.client_burst"
        );
        let mut p = Policy::from_yaml(EXAMPLE).unwrap();
        p.current.as_mut().unwrap().apiservers.remove("apiserver-1");
        let e = p.validate().unwrap_err();
        assert!(
            matches!(&e, RecommenderError::CurrentMissing { replica } if replica == "apiserver-1"),
            "{e}"
        );
    }

    /// Values past what the queue model evaluates in reasonable time, or past what a flag
    /// takes, are refused with the field and the limit.
    #[test]
    fn bounds_beyond_the_model_and_the_flags_are_refused() {
        let mut p = Policy::from_yaml(EXAMPLE).unwrap();
        p.bounds.apiserver.cpu_cores.max = 1e5;
        p.bounds.apiserver.cpu_cores.step = 10.0;
        p.apiservers
            .iter_mut()
            .for_each(|a| a.node_allocatable.cpu_cores = 1e6);
        let e = p.validate().unwrap_err();
        assert!(e.to_string().contains("millicores"), "{e}");
        assert_eq!(field_of(e), "bounds.apiserver.cpu_cores.max");

        let mut p = Policy::from_yaml(EXAMPLE).unwrap();
        p.bounds.apiserver.max_requests_inflight.max = 1e12;
        p.bounds.apiserver.max_requests_inflight.step = 1e12;
        let e = p.validate().unwrap_err();
        assert!(
            !e.to_string().contains("not a whole number"),
            "1e12 is a whole number: {e}"
        );
        assert!(e.to_string().contains("4294967295"), "{e}");

        let mut p = Policy::from_yaml(EXAMPLE).unwrap();
        p.bounds.apiserver.max_mutating_requests_inflight.max = 99_900.0;
        p.bounds.apiserver.max_mutating_requests_inflight.step = 100.0;
        let e = p.validate().unwrap_err();
        assert!(e.to_string().contains("at once"), "{e}");
        assert_eq!(
            field_of(e),
            "bounds.apiserver.max_mutating_requests_inflight.max"
        );

        for horizon_s in [86_400.0, 1e12] {
            let mut p = Policy::from_yaml(EXAMPLE).unwrap();
            p.forecast.horizon_s = horizon_s;
            assert_eq!(field_of(p.validate().unwrap_err()), "forecast.horizon_s");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = Policy::from_yaml(&EXAMPLE.replace("cooldown_s:", "cooldown:")).unwrap_err();
        assert!(e.to_string().contains("cooldown"), "{e}");
    }

    #[test]
    fn grids_round_to_their_steps() {
        let r = KnobRange {
            min: 0.5,
            max: 8.0,
            step: 0.25,
        };
        assert_eq!(r.ceil(1.1), Some(1.25));
        assert_eq!(r.ceil(1.25), Some(1.25));
        assert_eq!(r.ceil(9.0), None);
        assert_eq!(r.floor(1.1), Some(1.0));
        assert_eq!(r.floor(0.1), None);
        assert_eq!(r.within(1.1, 2.0).unwrap().values().count(), 4);
        assert_eq!(r.nearest(1.1), 1.0);
        assert_eq!(r.nearest(1.2), 1.25);
        assert_eq!(r.nearest(9.1), 9.0, "past max stays past max");
    }
}
