//! What one run records (`run-<n>-<config>-<rep>.json`) and the experiment's metadata
//! (`experiment.json`): the files `report` reads back.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The three ways the tested control plane is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Config {
    /// Kubernetes defaults on modest CPU (the `native` overlay).
    Native,
    /// Over-provisioned once (the `static` overlay).
    Static,
    /// The `native` overlay with `arak run` in Auto mode tuning it.
    Arak,
}

impl Config {
    pub const ALL: [Config; 3] = [Config::Native, Config::Static, Config::Arak];

    pub fn name(self) -> &'static str {
        match self {
            Config::Native => "native",
            Config::Static => "static",
            Config::Arak => "arak",
        }
    }

    /// The test-control-plane overlay the hosted layer starts with.
    pub fn variant(self) -> &'static str {
        match self {
            Config::Native | Config::Arak => "native",
            Config::Static => "static",
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Config {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Config::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown configuration '{s}' (native, static or arak)"))
    }
}

/// What an experiment sets out to show, one per invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// A load above native's measured capacity, held for minutes.
    Overload,
    /// A compressed day: low, a peak above native's capacity, low again.
    Day,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Overload => "overload",
            Scenario::Day => "day",
        }
    }

    /// Written into experiment.json and the report before any result exists.
    pub fn hypothesis(self) -> &'static str {
        match self {
            Scenario::Overload => {
                "Held above the capacity of native's settings, native's apiservers queue and \
                 reject. arak, warmed up on the same load until it stops changing anything, \
                 gives them the CPU and concurrency its model says the load needs, so in the \
                 measured window its P99 per request class is at least 40% lower than \
                 native's, with at most 1e-4 of requests answered 429, and without a roll \
                 inside the window."
            }
            Scenario::Day => {
                "Over a compressed day (the load ramps from low to a peak above native's \
                 capacity and back), arak gives the apiservers CPU while the load needs it \
                 and takes it back after, so it spends no more CPU core-seconds than static, \
                 sized for the peak all day, at the same SLO attainment (the share of 15-s \
                 windows within the SLOs)."
            }
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that makes two result directories the same experiment: `report` merges only
/// directories whose parameters are equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioParams {
    pub scenario: Scenario,
    /// native's capacity: the highest rate of the sweep within the SLOs, or `--capacity`.
    pub capacity_rps: f64,
    /// Where the capacity came from (`sweep` or `given`).
    pub capacity_source: String,
    pub load_factor: f64,
    /// The offered load during the warm-up and the measured window (day: the peak).
    pub rate_rps: u32,
    /// day: the load at the cycle's ends and during the warm-up.
    pub low_rps: Option<u32>,
    pub measured_s: u64,
    /// The load after the measured window, if the run has a step.
    pub step_to_rps: Option<u32>,
    /// Longest warm-up arak gets to converge.
    pub warmup_timeout_s: u64,
    /// Warm-up of native and static; None: the median arak needed in the runs before.
    pub warmup_s: Option<u64>,
    pub tested_nodes: u32,
    /// kube-apiserver replicas (results from before the option had three).
    #[serde(default = "three")]
    pub apiservers: u32,
    /// The tested apiservers' scrape interval (results from before the option: the global 5 s).
    #[serde(default = "five")]
    pub apiserver_scrape_s: u32,
    pub arak_interval_s: u32,
    pub density_pods: Vec<u32>,
}

fn three() -> u32 {
    3
}

fn five() -> u32 {
    5
}

/// One rate of the capacity sweep (native, stress-test's default mix, the load user).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityPoint {
    pub rate_rps: u32,
    pub served_rps: Option<f64>,
    pub rejected_share: Option<f64>,
    /// P99 by class over the point's window (its first seconds left out), seconds.
    pub p99_s: BTreeMap<String, f64>,
    pub client_p99_ms: Option<f64>,
    pub within_slo: bool,
}

/// `capacity.json`: the sweep that sets the overload scenario's rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacitySweep {
    pub started_utc: String,
    pub point_s: u64,
    pub points: Vec<CapacityPoint>,
    /// The highest rate within the SLOs; None if even the first missed them.
    pub capacity_rps: Option<f64>,
    pub stopped_because: String,
    pub load_average_start: Option<[f64; 3]>,
    pub load_average_end: Option<[f64; 3]>,
}

/// The untimed warm-up before the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Warmup {
    pub rate_rps: u32,
    pub length_s: f64,
    /// arak runs: its rounds and changes in the warm-up, and whether it converged (two
    /// consecutive settled rounds, no roll under way) before the timeout.
    pub arak_rounds: Option<usize>,
    pub arak_applies: Option<usize>,
    pub converged: Option<bool>,
}

/// The compressed day's cycle and how the apiservers met the SLOs over it in 15-s windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleResult {
    pub profile: String,
    pub windows: Vec<crate::slo::SloWindow>,
    /// Share of the windows within the SLOs.
    pub slo_attainment: Option<f64>,
}

/// The load after the step and how the apiservers met the SLOs in 15-s windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub rate_rps: u32,
    pub start_unix_s: f64,
    pub end_unix_s: f64,
    pub windows: Vec<crate::slo::SloWindow>,
    pub time_to_adapt_s: Option<f64>,
    pub slo_miss_min: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
}

/// P50 and P99 of one request class over the stress window, seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassLatency {
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
}

/// The measured window's load and what the tested apiservers did under it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StressResult {
    pub profile: String,
    pub start_unix_s: f64,
    pub end_unix_s: f64,
    /// By class (`mutating`, `read`, `list`), from the apiservers' request-duration histograms.
    pub classes: BTreeMap<String, ClassLatency>,
    /// Share of the tested apiservers' requests answered 429, all clients.
    pub rejected_share: Option<f64>,
    /// Requests per second the apiservers answered over the window.
    pub served_rps: Option<f64>,
    /// Share of the window's scrapes of the tested apiservers that answered: below 1 the
    /// counters above have gaps (an apiserver down or too slow for its /metrics).
    #[serde(default)]
    pub scraped_share: Option<f64>,
    /// The generator's own view: sent, throttled (429), P99 in ms.
    pub client_sent: Option<f64>,
    pub client_throttled: Option<f64>,
    pub client_p99_ms: Option<f64>,
    /// P99 per class over time: (seconds since the measured window began, seconds).
    pub p99_series: BTreeMap<String, Vec<(f64, f64)>>,
}

/// One `stress-test density` run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DensityResult {
    pub pods: u32,
    pub ok: bool,
    pub reason: Option<String>,
    pub pod_startup_p50_s: Option<f64>,
    pub pod_startup_p99_s: Option<f64>,
    /// Pods scheduled per second.
    pub throughput_p50: Option<f64>,
    pub throughput_p99: Option<f64>,
    pub throughput_max: Option<f64>,
    pub elapsed_s: f64,
}

/// The control plane's settings at one moment: `<StatefulSet>/<knob>` → value (flags as
/// numbers, `cpu` = the container's CPU limit, else its request, in cores).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SettingsSample {
    /// Seconds since the measured window began (negative in the warm-up).
    pub t_s: f64,
    pub values: BTreeMap<String, f64>,
}

/// What `arak run` did in an `arak` run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArakOutcome {
    /// Whether a change was applied (the ControlPlaneTuning's status has `lastApplied`).
    pub acted: bool,
    pub last_applied: Option<serde_json::Value>,
    pub conditions: Option<serde_json::Value>,
    /// The last decisions from its log (one JSON line each).
    pub last_decisions: Vec<String>,
    /// Lines of its log at WARN or ERROR (at most a few dozen).
    pub problems: Vec<String>,
    /// The status' last recommendation (with the model's predictions for the running and
    /// the recommended settings) and prediction errors, read at the end of the window.
    pub recommendation: Option<serde_json::Value>,
    pub model_error: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub index: u32,
    pub config: Config,
    pub rep: u32,
    pub status: Status,
    pub reason: Option<String>,
    pub started_unix_s: f64,
    pub finished_unix_s: f64,
    pub load_average_start: Option<[f64; 3]>,
    pub load_average_end: Option<[f64; 3]>,
    pub stress: Option<StressResult>,
    pub density: Vec<DensityResult>,
    pub density_note: Option<String>,
    /// Core-seconds of the tested control plane (apiservers, controller-manager, scheduler,
    /// etcd) over the measured window.
    pub cpu_core_seconds: Option<f64>,
    pub cpu_by_job: BTreeMap<String, f64>,
    /// Highest summed RSS of the tested apiservers, controller-manager and scheduler.
    pub peak_rss_bytes: Option<f64>,
    pub settings: Vec<SettingsSample>,
    pub arak: Option<ArakOutcome>,
    pub warmup: Option<Warmup>,
    /// arak runs: decisions that applied a change inside the measured window (they count
    /// against arak: its roll is in the numbers).
    pub applies_in_window: Vec<String>,
    pub step: Option<StepResult>,
    /// day: the cycle (the measured window is the cycle).
    pub cycle: Option<CycleResult>,
}

impl RunRecord {
    pub fn new(index: u32, config: Config, rep: u32, started_unix_s: f64) -> RunRecord {
        RunRecord {
            index,
            config,
            rep,
            status: Status::Failed,
            reason: None,
            started_unix_s,
            finished_unix_s: started_unix_s,
            load_average_start: None,
            load_average_end: None,
            stress: None,
            density: Vec::new(),
            density_note: None,
            cpu_core_seconds: None,
            cpu_by_job: BTreeMap::new(),
            peak_rss_bytes: None,
            settings: Vec::new(),
            arak: None,
            warmup: None,
            applies_in_window: Vec::new(),
            step: None,
            cycle: None,
        }
    }

    pub fn file_name(&self) -> String {
        format!("run-{:02}-{}-{}.json", self.index, self.config, self.rep)
    }
}

/// The experiment as a whole: how it was started and on what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    pub params: ScenarioParams,
    pub hypothesis: String,
    pub started_utc: String,
    pub command: String,
    pub reps: u32,
    pub configs: Vec<Config>,
    pub warmup_command: String,
    pub stress_command: String,
    pub density_pods: Vec<u32>,
    pub density_command: Option<String>,
    pub arak_command: String,
    pub arak_policy: serde_json::Value,
    pub versions: BTreeMap<String, String>,
    pub machine: BTreeMap<String, String>,
}
