//! `Recommendation`: what one round proposes, why, and what the model predicts for it and
//! for what runs now. Serialised to JSON for the updater and for people.

use queue_model::scheduler::SchedulerBottleneck;
use serde::{Deserialize, Serialize};

use crate::calibrate::ApiserverCalibration;
use crate::forecast::Forecast;
use crate::policy::ConfidenceLevel;
use crate::safety::Action;
use crate::search::{SizedBy, Violation};
use crate::setting::{ApiserverSettings, ClientSettings, knob_key};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The snapshot's time: the round is a function of its inputs, not of the clock.
    pub time_unix_s: f64,
    /// Apply `recommended` only when this is `change`.
    pub action: Action,
    /// Every reason to hold; empty when the action is `change`.
    pub hold_reasons: Vec<String>,
    /// Whether the recommended settings meet every constraint by the model.
    pub feasible: bool,
    pub confidence: ConfidenceLevel,
    /// The constraint that keeps the recommendation from being cheaper, with its replica.
    pub binding_constraint: Option<String>,
    pub current_cost: Option<f64>,
    pub recommended_cost: Option<f64>,
    /// The next cheapest feasible alternative (another core count on one apiserver).
    pub runner_up: Option<RunnerUp>,
    /// Summed client QPS of the scheduler and controller-manager, and the apiservers'
    /// summed mutating capacity it must fit in.
    pub client_qps_total: Option<f64>,
    pub apiserver_mutating_capacity_rps: Option<f64>,
    pub apiservers: Vec<ApiserverRecommendation>,
    pub schedulers: Vec<ClientRecommendation>,
    pub controller_managers: Vec<ClientRecommendation>,
    pub notes: Vec<String>,
}

impl Recommendation {
    /// The knobs this recommendation takes above what runs, by [`knob_key`]: what a caller
    /// that applies it records in [`crate::CurrentSettings::raised_unix_s`].
    pub fn raised_knobs(&self) -> Vec<String> {
        self.knobs_moved(|was, is| is > was)
    }

    /// The knobs, by [`knob_key`], whose recommended value against the current one
    /// satisfies `moved(current, recommended)`.
    pub fn knobs_moved(&self, moved: impl Fn(f64, f64) -> bool) -> Vec<String> {
        let apiservers = self.apiservers.iter().map(|a| {
            (
                &a.target.name,
                a.current.knobs().to_vec(),
                a.recommended.knobs().to_vec(),
            )
        });
        let clients = self
            .schedulers
            .iter()
            .chain(&self.controller_managers)
            .map(|c| {
                (
                    &c.target.name,
                    c.current.knobs().to_vec(),
                    c.recommended.knobs().to_vec(),
                )
            });
        apiservers
            .chain(clients)
            .flat_map(|(replica, current, recommended)| {
                current
                    .into_iter()
                    .zip(recommended)
                    .filter(|((_, was), (_, is))| moved(*was, *is))
                    .map(|((knob, _), _)| knob_key(replica, knob))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerUp {
    pub replica: String,
    pub settings: ApiserverSettings,
    /// Total cost of the round with this alternative in place of the chosen setting.
    pub cost: f64,
}

/// Where a replica's settings are applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    pub stateful_set: String,
    pub container: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiserverRecommendation {
    pub target: Target,
    pub current: ApiserverSettings,
    pub recommended: ApiserverSettings,
    pub predicted_current: Option<ApiserverPrediction>,
    pub predicted_recommended: Option<ApiserverPrediction>,
    pub binding: Option<Violation>,
    /// Which constraint sized each limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sized_by: Option<SizedBy>,
    /// The planned load on this replica, requests per second.
    pub planned_read_only_rps: Option<f64>,
    pub planned_mutating_rps: Option<f64>,
    pub forecast_read_only: Option<Forecast>,
    pub forecast_mutating: Option<Forecast>,
    pub calibration: Option<ApiserverCalibration>,
    /// Full model evaluations the search made.
    pub evaluations: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiserverPrediction {
    pub cpu_utilization: f64,
    /// None when the replica has no CPU left for requests.
    pub read_only_p99_s: Option<f64>,
    pub mutating_p99_s: Option<f64>,
    pub read_only_rejection: f64,
    pub mutating_rejection: f64,
    pub mutating_capacity_rps: f64,
    /// Constraints missed; empty when all are met.
    pub violations: Vec<Violation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientRecommendation {
    pub target: Target,
    pub current: ClientSettings,
    pub recommended: ClientSettings,
    pub predicted_current: Option<ClientPrediction>,
    pub predicted_recommended: Option<ClientPrediction>,
    pub notes: Vec<String>,
}

/// The scheduler's pending-pod P99 or the controller-manager's throttle-wait P99.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientPrediction {
    /// Requests (controller-manager) or pods (scheduler) per second it must handle.
    pub demand: f64,
    /// None when the demand exceeds what the setting lets through.
    pub p99_s: Option<f64>,
    pub slo_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottleneck: Option<SchedulerBottleneck>,
    pub violations: Vec<Violation>,
}
