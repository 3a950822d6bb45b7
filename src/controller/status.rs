//! The ControlPlaneTuning status: conditions, the recommendation in brief, and writing it by
//! server-side apply so that arak owns exactly the status fields it sets.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use recommender::Recommendation;
use recommender::recommendation::{ApiserverPrediction, ClientPrediction};
use recommender::setting::{ApiserverSettings, ClientSettings};
use serde_json::json;

use super::Error;
use super::tuning::{
    ControlPlaneTuning, ControlPlaneTuningStatus, RecommendationSummary, ReplicaRecommendation,
};

/// Sets a condition, keeping its transition time when its status does not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" };
    let message = message.into();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Time(Timestamp::now());
        }
        c.status = status.to_owned();
        c.reason = reason.to_owned();
        c.message = message;
        c.observed_generation = generation;
        return;
    }
    conditions.push(Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    });
}

/// RFC 3339 for a time in seconds since the epoch.
pub fn rfc3339(unix_s: f64) -> String {
    Timestamp::from_millisecond((unix_s * 1000.0) as i64)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

pub fn now_rfc3339() -> String {
    Timestamp::now().to_string()
}

/// Seconds since the epoch of an RFC 3339 time the status holds.
pub fn unix_s(rfc3339: &str) -> Option<f64> {
    rfc3339
        .parse::<Timestamp>()
        .ok()
        .map(|t| t.as_millisecond() as f64 / 1000.0)
}

pub fn summary(r: &Recommendation) -> RecommendationSummary {
    let mut replicas = Vec::new();
    for a in &r.apiservers {
        replicas.push(ReplicaRecommendation {
            name: a.target.name.clone(),
            component: "apiserver".into(),
            stateful_set: a.target.stateful_set.clone(),
            current: apiserver_knobs(&a.current),
            recommended: apiserver_knobs(&a.recommended),
            predicted_current: apiserver_prediction(a.predicted_current.as_ref()),
            predicted_recommended: apiserver_prediction(a.predicted_recommended.as_ref()),
        });
    }
    for (component, list) in [
        ("scheduler", &r.schedulers),
        ("controller-manager", &r.controller_managers),
    ] {
        for c in list {
            replicas.push(ReplicaRecommendation {
                name: c.target.name.clone(),
                component: component.into(),
                stateful_set: c.target.stateful_set.clone(),
                current: client_knobs(&c.current),
                recommended: client_knobs(&c.recommended),
                predicted_current: client_prediction(c.predicted_current.as_ref()),
                predicted_recommended: client_prediction(c.predicted_recommended.as_ref()),
            });
        }
    }
    RecommendationSummary {
        time: rfc3339(r.time_unix_s),
        action: format!("{:?}", r.action).to_lowercase(),
        hold_reasons: r.hold_reasons.clone(),
        feasible: r.feasible,
        confidence: format!("{:?}", r.confidence).to_lowercase(),
        binding_constraint: r.binding_constraint.clone(),
        current_cost: r.current_cost,
        recommended_cost: r.recommended_cost,
        replicas,
    }
}

pub fn apiserver_knobs(s: &ApiserverSettings) -> BTreeMap<String, f64> {
    s.knobs().map(|(k, v)| (k.to_owned(), v)).into()
}

pub fn client_knobs(s: &ClientSettings) -> BTreeMap<String, f64> {
    s.knobs().map(|(k, v)| (k.to_owned(), v)).into()
}

/// Records when `r` raised each knob, now that it was applied, and forgets raises older
/// than `delay_s` (they no longer hold a knob up).
pub fn record_raises(status: &mut ControlPlaneTuningStatus, r: &Recommendation, delay_s: f64) {
    let now = now_rfc3339();
    let now_s = unix_s(&now).unwrap_or_default();
    status
        .raised_at
        .retain(|_, at| unix_s(at).is_some_and(|t| now_s - t < delay_s));
    for key in r.raised_knobs() {
        status.raised_at.insert(key, now.clone());
    }
}

/// The raises the status remembers, as the recommender reads them.
pub fn raised_unix_s(status: &ControlPlaneTuningStatus) -> BTreeMap<String, f64> {
    status
        .raised_at
        .iter()
        .filter_map(|(key, at)| Some((key.clone(), unix_s(at)?)))
        .collect()
}

fn apiserver_prediction(p: Option<&ApiserverPrediction>) -> BTreeMap<String, f64> {
    let Some(p) = p else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::from([
        ("cpu_utilization".into(), p.cpu_utilization),
        ("read_only_rejection".into(), p.read_only_rejection),
        ("mutating_rejection".into(), p.mutating_rejection),
        ("mutating_capacity_rps".into(), p.mutating_capacity_rps),
    ]);
    if let Some(v) = p.read_only_p99_s {
        out.insert("read_only_p99_s".into(), v);
    }
    if let Some(v) = p.mutating_p99_s {
        out.insert("mutating_p99_s".into(), v);
    }
    out
}

fn client_prediction(p: Option<&ClientPrediction>) -> BTreeMap<String, f64> {
    let Some(p) = p else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::from([("demand".into(), p.demand), ("slo_s".into(), p.slo_s)]);
    if let Some(v) = p.p99_s {
        out.insert("p99_s".into(), v);
    }
    out
}

/// Writes the whole status by server-side apply as field manager `arak`.
pub async fn write(
    api: &Api<ControlPlaneTuning>,
    name: &str,
    status: &ControlPlaneTuningStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": "arak.io/v1alpha1",
        "kind": "ControlPlaneTuning",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(updater::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!(
        "writing the status of ControlPlaneTuning {name}"
    )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_applied_change_records_its_raises_and_old_raises_are_forgotten() {
        let policy =
            recommender::Policy::from_yaml(include_str!("../../config/examples/policy.yaml"))
                .unwrap();
        let snapshot: recommender::snapshot::LoadSnapshot = serde_json::from_str(include_str!(
            "../../config/examples/snapshot-synthetic.json"
        ))
        .unwrap();
        let mut current = policy.current.clone().unwrap();
        // Smaller apiservers than the example's load needs: the recommendation raises them.
        for a in current.apiservers.values_mut() {
            a.cpu_cores = 1.0;
        }
        let r = recommender::recommend(&snapshot, &policy, &current).unwrap();
        let raised = r.raised_knobs();
        assert!(
            raised.iter().any(|k| k.ends_with("/cpu_cores")),
            "{raised:?}"
        );

        let mut status = ControlPlaneTuningStatus::default();
        status
            .raised_at
            .insert("gone/cpu_cores".into(), "2020-01-01T00:00:00Z".into());
        let recent = rfc3339(unix_s(&now_rfc3339()).unwrap() - 60.0);
        status
            .raised_at
            .insert("kept/queue_length".into(), recent.clone());
        record_raises(&mut status, &r, 1800.0);
        assert!(!status.raised_at.contains_key("gone/cpu_cores"));
        assert_eq!(status.raised_at["kept/queue_length"], recent);
        for key in &raised {
            assert!(status.raised_at.contains_key(key), "{key}");
        }
        // What the next round's recommender reads back.
        let read = raised_unix_s(&status);
        assert_eq!(read.len(), raised.len() + 1);
        assert!(read.values().all(|t| *t > 1.7e9));
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_it_flips() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, "DataFresh", true, "Fetched", "ok", Some(1));
        let first = conditions[0].last_transition_time.clone();
        set_condition(
            &mut conditions,
            "DataFresh",
            true,
            "Fetched",
            "again",
            Some(2),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].message, "again");
        set_condition(
            &mut conditions,
            "DataFresh",
            false,
            "FetchFailed",
            "down",
            Some(2),
        );
        assert_eq!(conditions[0].status, "False");
        assert!(conditions[0].last_transition_time >= first);
    }

    #[test]
    fn times_round_trip() {
        let text = rfc3339(1_764_032_400.5);
        assert_eq!(text, "2025-11-25T01:00:00.5Z");
        assert_eq!(unix_s(&text), Some(1_764_032_400.5));
    }
}
