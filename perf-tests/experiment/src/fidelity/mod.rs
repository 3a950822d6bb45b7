//! `experiment fidelity`: how well arak's apiserver queue model predicts a real
//! kube-apiserver. A grid of settings (CPU quota × inflight limits) × offered load × request
//! mix runs on one hosted apiserver; the model is calibrated from part of the grid as the
//! recommender calibrates it, predicts the rest, and `fidelity report` writes
//! docs/model-fidelity.md from the results directory.

pub mod doc;
pub mod predict;
pub mod run;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The apiserver's `--max-requests-inflight` / `--max-mutating-requests-inflight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub read_only: u32,
    pub mutating: u32,
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.read_only, self.mutating)
    }
}

impl FromStr for Limits {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (r, m) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: limits are READONLY/MUTATING, e.g. 400/200"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("`{s}`: `{v}` is not a positive integer"))
        };
        Ok(Limits {
            read_only: parse(r)?,
            mutating: parse(m)?,
        })
    }
}

/// The request mixes of the grid, as stress-test `--mix` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// About 90% GET/LIST of configmaps.
    Read,
    /// About 80% POST/PUT/PATCH/DELETE of configmaps.
    Write,
    /// LISTs of a namespace of 200 configmaps: few, expensive reads.
    List,
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Read => "read",
            Mix::Write => "write",
            Mix::List => "list",
        }
    }

    /// The stress-test mix. POSTs and DELETEs come at the same rate so the namespace, and
    /// with it the cost of a LIST, stays the same size through a point.
    pub fn yaml(self) -> &'static str {
        match self {
            Mix::Read => concat!(
                "- {verb: GET, resource: configmaps, weight: 80}\n",
                "- {verb: LIST, resource: configmaps, weight: 8}\n",
                "- {verb: POST, resource: configmaps, weight: 3}\n",
                "- {verb: PATCH, resource: configmaps, weight: 4}\n",
                "- {verb: PUT, resource: configmaps, weight: 2}\n",
                "- {verb: DELETE, resource: configmaps, weight: 3}\n",
            ),
            Mix::Write => concat!(
                "- {verb: GET, resource: configmaps, weight: 15}\n",
                "- {verb: LIST, resource: configmaps, weight: 3}\n",
                "- {verb: POST, resource: configmaps, weight: 25}\n",
                "- {verb: PATCH, resource: configmaps, weight: 22}\n",
                "- {verb: PUT, resource: configmaps, weight: 10}\n",
                "- {verb: DELETE, resource: configmaps, weight: 25}\n",
            ),
            Mix::List => concat!(
                "- {verb: GET, resource: configmaps, weight: 50}\n",
                "- {verb: LIST, resource: configmaps, weight: 45}\n",
                "- {verb: PATCH, resource: configmaps, weight: 5}\n",
            ),
        }
    }
}

impl Mix {
    /// Objects per kind the run prepares: a LIST costs in proportion to what it returns.
    pub fn pool_size(self) -> u32 {
        match self {
            Mix::List => 200,
            Mix::Read | Mix::Write => 10,
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Mix::Read),
            "write" => Ok(Mix::Write),
            "list" => Ok(Mix::List),
            _ => Err(format!("`{s}`: a mix is read, write or list")),
        }
    }
}

/// The two request classes of the model.
pub const CLASSES: [&str; 2] = ["readOnly", "mutating"];

/// What one class did during a point's measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassMeasure {
    /// Requests that reached the apiserver, 429s included (all clients), per second.
    pub offered_rps: f64,
    /// Requests answered other than with 429, per second.
    pub served_rps: f64,
    /// 429s / offered.
    pub rejected_share: f64,
    /// From the apiserver's `apiserver_request_duration_seconds` (429s included: the
    /// histogram has no code label).
    pub mean_s: Option<f64>,
    pub p99_s: Option<f64>,
    /// The load user's requests as stress-test counted them.
    pub client: Option<ClientMeasure>,
}

/// stress-test's own view of one class (its report is per verb; merged here).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientMeasure {
    pub sent_rps: f64,
    pub ok_rps: f64,
    pub throttled_share: f64,
    /// Other failures (timeouts, transport) per sent request.
    pub error_share: f64,
    /// P99 of successful requests, from the verbs' P50/P90/P99/max (see `merge_p99`).
    pub p99_s: Option<f64>,
}

/// One step of the per-point history the calibration reads (the recommender's
/// `ReplicaHistory` fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryStep {
    pub t_unix_s: f64,
    pub read_only_rate: Option<f64>,
    pub mutating_rate: Option<f64>,
    pub cpu_cores: Option<f64>,
    pub read_only_p99_s: Option<f64>,
    pub mutating_p99_s: Option<f64>,
    /// Mean latency per step; runs recorded before it was fetched lack it.
    #[serde(default)]
    pub read_only_mean_s: Option<f64>,
    #[serde(default)]
    pub mutating_mean_s: Option<f64>,
}

/// One grid point, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    pub index: u32,
    pub quota_cores: f64,
    pub limits: Limits,
    pub mix: Mix,
    /// Offered load as a share of `capacity_rps`.
    pub load_share: f64,
    /// The capacity the load was sized from (estimated for the quota and mix).
    pub capacity_rps: f64,
    pub target_rps: f64,
    pub window_start_unix_s: f64,
    pub window_end_unix_s: f64,
    pub classes: BTreeMap<String, ClassMeasure>,
    /// rate(process_cpu_seconds_total) of the apiserver over the window.
    pub cpu_cores: Option<f64>,
    /// The apiserver's CPU over the whole load, from /proc (stress-test `--watch-pid`).
    pub cpu_cores_proc: Option<f64>,
    /// The CFS quota found on the apiserver's cgroup, cores.
    pub cfs_quota_cores: Option<f64>,
    /// Share of CFS periods in which the apiserver was throttled.
    pub throttled_periods_share: Option<f64>,
    /// Index of dispersion (variance / mean) of the apiserver's per-scrape (5 s) request counts.
    pub dispersion_index_5s: Option<f64>,
    /// APF's global-default level (the load user's): nominal and current seat limits.
    pub apf_global_default_nominal_seats: Option<f64>,
    pub apf_global_default_current_seats: Option<f64>,
    pub load_average_start: Option<[f64; 3]>,
    pub load_average_end: Option<[f64; 3]>,
    /// Share of the machine's CPU time busy during the load, all cores.
    pub machine_busy_share: Option<f64>,
    /// Why the point is flagged as disturbed by other work on the machine, if it is.
    pub disturbed: Option<String>,
    pub history: Vec<HistoryStep>,
    /// Failure of the point, if it failed (then the measures may be missing).
    pub error: Option<String>,
}

/// The run as a whole: what was asked and where it ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FidelityRun {
    pub started_utc: String,
    pub finished_utc: Option<String>,
    pub command: String,
    pub stress_command: String,
    pub quotas_cores: Vec<f64>,
    pub limits: Vec<Limits>,
    pub loads: Vec<f64>,
    pub calibration_loads: Vec<f64>,
    pub mixes: Vec<Mix>,
    pub point_s: u64,
    pub warmup_s: u64,
    pub min_samples: usize,
    /// Capacity estimates: "<quota>/<mix>" → req/s, with how they were found.
    pub capacity: BTreeMap<String, CapacityEstimate>,
    pub versions: BTreeMap<String, String>,
    pub machine: BTreeMap<String, String>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityEstimate {
    pub capacity_rps: f64,
    pub probe_rps: f64,
    /// The apiserver's idle CPU before the probe, cores.
    pub idle_cpu_cores: f64,
    /// CPU seconds per request at the probe (idle CPU taken out).
    pub cpu_s_per_request: f64,
}

/// The files of a results directory.
pub const RUN_FILE: &str = "fidelity.json";
pub const POINTS_FILE: &str = "points.json";
pub const PREDICTIONS_FILE: &str = "predictions.json";
/// Prose written after looking at a run, included in the report as it is.
pub const ANALYSIS_FILE: &str = "analysis.md";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_print() {
        let l: Limits = "400/200".parse().unwrap();
        assert_eq!(
            l,
            Limits {
                read_only: 400,
                mutating: 200
            }
        );
        assert_eq!(l.to_string(), "400/200");
        assert!("400".parse::<Limits>().is_err());
        assert!("0/10".parse::<Limits>().is_err());
    }

    #[test]
    fn mixes_round_trip() {
        for m in [Mix::Read, Mix::Write, Mix::List] {
            assert_eq!(m.name().parse::<Mix>().unwrap(), m);
        }
    }
}
