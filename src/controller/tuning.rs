//! The `ControlPlaneTuning` custom resource: what a person asks of arak (the policy, the
//! mode, how often) and what arak reports back in its status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use recommender::Policy;
use recommender::policy::ConfidenceLevel;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Condition types, in the order a round establishes them.
pub const DATA_FRESH: &str = "DataFresh";
pub const MODEL_CALIBRATED: &str = "ModelCalibrated";
pub const RECOMMENDATION_READY: &str = "RecommendationReady";
pub const APPLYING: &str = "Applying";
pub const DEGRADED: &str = "Degraded";

/// Step of the per-replica history the forecast and the calibration read, seconds.
pub const HISTORY_STEP_S: u32 = 15;

/// Decisions kept in the status, newest first.
pub const DECISIONS_KEPT: usize = 10;

#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "arak.io",
    version = "v1alpha1",
    kind = "ControlPlaneTuning",
    namespaced,
    status = "ControlPlaneTuningStatus",
    shortname = "cpt",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".status.recommendation.action"}"#,
    printcolumn = r#"{"name":"Last applied","type":"date","jsonPath":".status.lastApplied.time"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneTuningSpec {
    pub mode: Mode,
    /// Seconds between rounds.
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 5))]
    pub interval_seconds: u32,
    /// Seconds after a change (or a rolled-back attempt) during which nothing changes;
    /// overrides the policy's `safety.cooldown_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_seconds: Option<u32>,
    /// Prometheus scraping the tuned control plane; `arak run --prometheus-url` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    /// Rates and percentiles are taken over this window.
    #[serde(default = "default_window_seconds")]
    #[schemars(range(min = 10))]
    pub window_seconds: u32,
    /// Per-replica history for the forecast and the calibration.
    #[serde(default = "default_history_seconds")]
    pub history_seconds: u32,
    /// The recommender policy, as in `config/examples/policy.yaml` (snake_case fields);
    /// its `current` section is ignored: the settings running now are read live.
    #[schemars(schema_with = "free_form_object")]
    pub policy: serde_json::Value,
}

/// What a round does with its recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    /// Observe only: log and count what it would do; write no status, change nothing.
    Off,
    /// Write the recommendation to the status; change nothing.
    Recommend,
    /// Apply the recommendation through the updater.
    Auto,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "Off",
            Mode::Recommend => "Recommend",
            Mode::Auto => "Auto",
        }
    }
}

fn default_interval_seconds() -> u32 {
    60
}

fn default_window_seconds() -> u32 {
    300
}

fn default_history_seconds() -> u32 {
    3600
}

/// The policy's own schema lives in the recommender, which validates it as a whole (with
/// field names in its errors); the API server only keeps it.
fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

impl ControlPlaneTuningSpec {
    /// The validated policy, with the spec's cooldown in place of the policy's.
    pub fn policy(&self) -> recommender::Result<Policy> {
        // JSON is YAML: the recommender's parser gives its usual field-naming errors.
        let mut policy = Policy::from_yaml(&self.policy.to_string())?;
        policy.current = None;
        if let Some(cooldown) = self.cooldown_seconds {
            policy.safety.cooldown_s = f64::from(cooldown);
        }
        policy.validate()?;
        // The calibration fits the history's samples: with too few it stays on the priors,
        // whose confidence is low, and a policy that needs more would hold forever.
        let samples = (self.history_seconds / HISTORY_STEP_S + 1) as usize;
        if policy.safety.min_confidence > ConfidenceLevel::Low
            && samples < policy.calibration.min_samples
        {
            return Err(recommender::RecommenderError::Policy {
                field: "historySeconds".into(),
                reason: format!(
                    "{} s of history at the {HISTORY_STEP_S} s step is {samples} samples, fewer than \
                     the policy's calibration.min_samples ({}): the model would stay on its priors \
                     and never reach safety.min_confidence {:?}; use at least {} s",
                    self.history_seconds,
                    policy.calibration.min_samples,
                    policy.safety.min_confidence,
                    (policy.calibration.min_samples as u32 - 1) * HISTORY_STEP_S
                ),
            });
        }
        Ok(policy)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneTuningStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last round's recommendation, whatever the mode did with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<RecommendationSummary>,
    /// The last change arak made or tried to make.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<AppliedChange>,
    /// When arak last raised each knob (`replica/knob` → RFC 3339), for as long as the
    /// policy's scale-down delay: a knob raised more recently does not go down.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raised_at: BTreeMap<String, String>,
    /// What the last round's model predicted for the settings that then ran, against what
    /// the window since observed: P99 and rejections per class, and CPU. A prediction made
    /// before the window it is judged on, as the model-fidelity harness judges held-out
    /// points.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_error: Vec<PredictionError>,
    /// The last decisions, newest first.
    #[serde(default)]
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecommendationSummary {
    /// RFC 3339 time of the snapshot the round used.
    pub time: String,
    /// `change` or `hold`.
    pub action: String,
    #[serde(default)]
    pub hold_reasons: Vec<String>,
    pub feasible: bool,
    pub confidence: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_constraint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_cost: Option<f64>,
    pub replicas: Vec<ReplicaRecommendation>,
}

/// One replica's knobs, current and recommended, and what the model predicts for each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRecommendation {
    pub name: String,
    pub component: String,
    pub stateful_set: String,
    /// Knob name (the recommender's, e.g. `max_requests_inflight`) → value.
    pub current: BTreeMap<String, f64>,
    pub recommended: BTreeMap<String, f64>,
    /// Metric name (e.g. `mutating_p99_s`, `cpu_utilization`) → predicted value.
    #[serde(default)]
    pub predicted_current: BTreeMap<String, f64>,
    #[serde(default)]
    pub predicted_recommended: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedChange {
    /// RFC 3339.
    pub time: String,
    /// `Applied` or `RolledBack`.
    pub outcome: String,
    /// One line per knob: `replica knob from -> to (path)`.
    pub changes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictionError {
    pub replica: String,
    /// `readOnly`, `mutating`, or `process` for the CPU.
    pub class: String,
    /// `p99Seconds`, `rejection` (the share of requests answered 429) or `cpuCores`.
    pub quantity: String,
    pub predicted: f64,
    pub observed: f64,
    /// (predicted − observed) / observed for P99 and CPU; predicted − observed for
    /// rejections, whose observed share is mostly 0.
    pub error: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// RFC 3339.
    pub time: String,
    pub mode: Mode,
    /// `hold`, `change`, `applied`, `rolled-back`, `unchanged` or `error`.
    pub action: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_tuning_carries_a_valid_policy() {
        let text = include_str!("../../config/arak/controlplanetuning.yaml");
        let tuning: ControlPlaneTuning = serde_norway::from_str(text).unwrap();
        assert_eq!(tuning.spec.mode, Mode::Recommend);
        let policy = tuning.spec.policy().unwrap();
        assert_eq!(policy.apiservers.len(), 3);
        assert_eq!(policy.safety.cooldown_s, 600.0);
    }

    #[test]
    fn the_spec_cooldown_overrides_the_policy_and_errors_name_the_field() {
        let text = include_str!("../../config/arak/controlplanetuning.yaml");
        let mut tuning: ControlPlaneTuning = serde_norway::from_str(text).unwrap();
        tuning.spec.cooldown_seconds = Some(60);
        assert_eq!(tuning.spec.policy().unwrap().safety.cooldown_s, 60.0);
        tuning.spec.policy["max_cpu_utilization"] = serde_json::json!(1.5);
        let error = tuning.spec.policy().unwrap_err().to_string();
        assert!(error.contains("max_cpu_utilization"), "{error}");
    }

    #[test]
    fn a_history_too_short_to_calibrate_is_refused_when_the_policy_needs_calibration() {
        let text = include_str!("../../config/arak/controlplanetuning.yaml");
        let mut tuning: ControlPlaneTuning = serde_norway::from_str(text).unwrap();
        // min_samples 12 at a 15 s step: 165 s is the least.
        tuning.spec.history_seconds = 165;
        assert!(tuning.spec.policy().is_ok());
        tuning.spec.history_seconds = 120;
        let error = tuning.spec.policy().unwrap_err().to_string();
        assert!(
            error.contains("historySeconds") && error.contains("at least 165 s"),
            "{error}"
        );
        tuning.spec.policy["safety"]["min_confidence"] = serde_json::json!("low");
        assert!(
            tuning.spec.policy().is_ok(),
            "acting on priors needs no history"
        );
    }
}
