//! One round for one ControlPlaneTuning: fetch the load, read the settings running now,
//! recommend, then by the mode record, report or apply. Returns when the next round is due.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType};
use load_fetcher::{FetchOptions, HistoryOptions, PrometheusSource};
use recommender::calibrate::{CalibrationMethod, PredictionAtLoad};
use recommender::safety::Action;
use recommender::snapshot::{ApiserverSample, ClassSample, LoadSnapshot};
use recommender::{Policy, Recommendation};
use updater::{Outcome, Recovery};

use super::current::{self, Live};
use super::status::{self, set_condition};
use super::tuning::{
    APPLYING, AppliedChange, ControlPlaneTuning, ControlPlaneTuningStatus, DATA_FRESH,
    DECISIONS_KEPT, DEGRADED, Decision, HISTORY_STEP_S, MODEL_CALIBRATED, Mode, PredictionError,
    RECOMMENDATION_READY,
};
use super::{Context, Error, Predicted};

/// What the round decided, for the log, the status and the metrics.
struct Decided {
    action: &'static str,
    reason: String,
}

/// Runs one round and says when the next is due.
pub async fn reconcile(tuning: &ControlPlaneTuning, ctx: &Context) -> Result<Duration, Error> {
    let spec = &tuning.spec;
    let interval = Duration::from_secs(u64::from(spec.interval_seconds.max(5)));
    let generation = tuning.metadata.generation;
    let mut status = tuning.status.clone().unwrap_or_default();
    status.observed_generation = generation;

    let decided = round(tuning, ctx, &mut status).await;
    let decided = match decided {
        Ok(d) => d,
        Err(error) => {
            set_condition(
                &mut status.conditions,
                DEGRADED,
                true,
                error.reason(),
                error.to_string(),
                generation,
            );
            Decided {
                action: "error",
                reason: error.to_string(),
            }
        }
    };
    tracing::info!(
        tuning = %tuning.metadata.name.as_deref().unwrap_or_default(),
        mode = spec.mode.as_str(),
        action = decided.action,
        reason = %decided.reason,
        "decision"
    );
    if spec.mode == Mode::Off {
        return Ok(interval);
    }
    status.decisions.insert(
        0,
        Decision {
            time: status::now_rfc3339(),
            mode: spec.mode,
            action: decided.action.to_owned(),
            reason: decided.reason,
        },
    );
    status.decisions.truncate(DECISIONS_KEPT);
    status::write(&ctx.tunings, &ctx.tuning, &status).await?;
    Ok(interval)
}

async fn round(
    tuning: &ControlPlaneTuning,
    ctx: &Context,
    status: &mut ControlPlaneTuningStatus,
) -> Result<Decided, Error> {
    let spec = &tuning.spec;
    let generation = tuning.metadata.generation;
    let policy = spec.policy()?;

    let snapshot = match fetch(tuning, ctx).await {
        Ok(s) => s,
        Err(error) => {
            ctx.health.metrics.error("fetch");
            ctx.health.metrics.hold("no-data");
            set_condition(
                &mut status.conditions,
                DATA_FRESH,
                false,
                "FetchFailed",
                error.to_string(),
                generation,
            );
            return Ok(Decided {
                action: "hold",
                reason: format!("no fresh load data: {error}"),
            });
        }
    };
    let blocking = snapshot
        .findings
        .iter()
        .filter(|f| f.severity == recommender::snapshot::Severity::Blocking)
        .map(|f| format!("{:?} {}: {}", f.kind, f.metric, f.detail))
        .collect::<Vec<_>>();
    set_condition(
        &mut status.conditions,
        DATA_FRESH,
        blocking.is_empty(),
        if blocking.is_empty() {
            "Fetched"
        } else {
            "NotActionable"
        },
        if blocking.is_empty() {
            format!("snapshot of {} s from Prometheus", snapshot.window_s)
        } else {
            blocking.join("; ")
        },
        generation,
    );
    observe_model_error(ctx, &snapshot, status);

    let last_change = status
        .last_applied
        .as_ref()
        .and_then(|a| status::unix_s(&a.time));
    let mut current = read_current(ctx, &policy, last_change)
        .await
        .inspect_err(|_| {
            ctx.health.metrics.error("current");
        })?;
    current.raised_unix_s = status::raised_unix_s(status);

    let started = Instant::now();
    let recommendation =
        recommender::recommend(&snapshot, &policy, &current).inspect_err(|_| {
            ctx.health.metrics.error("recommend");
        })?;
    ctx.health
        .metrics
        .recommend_duration
        .observe(started.elapsed().as_secs_f64());
    record_recommendation(ctx, &recommendation, status, generation);
    set_condition(
        &mut status.conditions,
        DEGRADED,
        false,
        "RoundCompleted",
        "",
        generation,
    );

    if recommendation.action == Action::Hold {
        for reason in &recommendation.hold_reasons {
            ctx.health.metrics.hold(hold_category(reason));
        }
        // A change that an earlier leader left unfinished makes the live templates read as
        // applied, so the round holds; it must still be finished or undone.
        if spec.mode == Mode::Auto
            && let Some(decided) = finish_unfinished(tuning, ctx, &recommendation, status).await?
        {
            return Ok(decided);
        }
        return Ok(Decided {
            action: "hold",
            reason: recommendation.hold_reasons.join("; "),
        });
    }
    let would = describe_change(&recommendation);
    match spec.mode {
        Mode::Off | Mode::Recommend => Ok(Decided {
            action: "change",
            reason: format!("would apply (mode {}): {would}", spec.mode.as_str()),
        }),
        Mode::Auto => apply(tuning, ctx, (&recommendation, &policy), status, &would).await,
    }
}

async fn fetch(tuning: &ControlPlaneTuning, ctx: &Context) -> Result<LoadSnapshot, Error> {
    let url = tuning
        .spec
        .prometheus_url
        .as_deref()
        .or(ctx.prometheus_url.as_deref())
        .ok_or(Error::NoPrometheus)?;
    let options = FetchOptions {
        window: Duration::from_secs(u64::from(tuning.spec.window_seconds)),
        history: (tuning.spec.history_seconds > 0).then(|| HistoryOptions {
            range: Duration::from_secs(u64::from(tuning.spec.history_seconds)),
            step: Duration::from_secs(u64::from(HISTORY_STEP_S)),
        }),
        at_unix_s: None,
    };
    let started = Instant::now();
    let snapshot = PrometheusSource::new(url, &ctx.fetch_client)?
        .fetch(&ctx.fetch_config, &options)
        .await?;
    ctx.health
        .metrics
        .fetch_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(snapshot)
}

async fn read_current(
    ctx: &Context,
    policy: &Policy,
    last_change_unix_s: Option<f64>,
) -> Result<recommender::CurrentSettings, Error> {
    let management = &ctx.updater.management;
    let stateful_sets: BTreeMap<String, StatefulSet> =
        Api::<StatefulSet>::namespaced(management.clone(), &ctx.updater.namespace)
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("listing StatefulSets"))?
            .items
            .into_iter()
            .filter_map(|s| Some((s.metadata.name.clone()?, s)))
            .collect();
    let pods = Api::<Pod>::namespaced(management.clone(), &ctx.updater.namespace)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing pods"))?
        .items;
    let levels = match &ctx.updater.tested {
        Some(tested) => Some(updater::apf::read_levels(tested).await?),
        None => None,
    };
    let live = Live {
        stateful_sets: &stateful_sets,
        pods: &pods,
        priority_levels: levels.as_deref(),
        apf_levels: &ctx.updater.options.plan.apf_levels,
    };
    current::read(policy, &live, last_change_unix_s).map_err(Error::Current)
}

/// Status and metrics of a recommendation, and its predictions kept for the next window.
fn record_recommendation(
    ctx: &Context,
    r: &Recommendation,
    status: &mut ControlPlaneTuningStatus,
    generation: Option<i64>,
) {
    let metrics = &ctx.health.metrics;
    let summary = status::summary(r);
    for replica in &summary.replicas {
        for (knob, value) in &replica.current {
            metrics.set_knob(&replica.name, knob, "current", *value);
        }
        for (knob, value) in &replica.recommended {
            metrics.set_knob(&replica.name, knob, "recommended", *value);
        }
    }
    let mut predicted = Predicted::new();
    for a in &r.apiservers {
        if let Some(p) = &a.predicted_current {
            for (class, p99) in [
                ("readOnly", p.read_only_p99_s),
                ("mutating", p.mutating_p99_s),
            ] {
                if let Some(p99) = p99 {
                    metrics.set_p99(&a.target.name, class, "predicted", p99);
                }
            }
        }
        if let Some(c) = &a.calibration {
            predicted.insert(a.target.name.clone(), (c.clone(), a.current));
        }
    }
    *ctx.predicted.lock().unwrap_or_else(|e| e.into_inner()) = predicted;

    let calibrations: Vec<_> = r
        .apiservers
        .iter()
        .filter_map(|a| Some((&a.target.name, a.calibration.as_ref()?)))
        .collect();
    let fitted = !calibrations.is_empty()
        && calibrations
            .iter()
            .all(|(_, c)| c.method != CalibrationMethod::Priors);
    let message = calibrations
        .iter()
        .map(|(name, c)| {
            format!(
                "{name}: {:?} from {} samples (confidence {:?})",
                c.method, c.samples, c.confidence
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    set_condition(
        &mut status.conditions,
        MODEL_CALIBRATED,
        fitted,
        if fitted { "Fitted" } else { "Priors" },
        message,
        generation,
    );
    set_condition(
        &mut status.conditions,
        RECOMMENDATION_READY,
        r.feasible,
        if r.feasible { "Feasible" } else { "Infeasible" },
        format!(
            "{:?}{}",
            r.action,
            r.binding_constraint
                .as_ref()
                .map(|b| format!(", binding: {b}"))
                .unwrap_or_default()
        ),
        generation,
    );
    status.recommendation = Some(summary);
}

/// A quantity the model predicts and a window observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Judged {
    ReadOnlyP99,
    MutatingP99,
    ReadOnlyRejection,
    MutatingRejection,
    CpuCores,
}

impl Judged {
    const ALL: [Judged; 5] = [
        Judged::ReadOnlyP99,
        Judged::MutatingP99,
        Judged::ReadOnlyRejection,
        Judged::MutatingRejection,
        Judged::CpuCores,
    ];

    fn class(self) -> &'static str {
        match self {
            Judged::ReadOnlyP99 | Judged::ReadOnlyRejection => "readOnly",
            Judged::MutatingP99 | Judged::MutatingRejection => "mutating",
            Judged::CpuCores => "process",
        }
    }

    /// The status's name (camelCase) and the metric label's (snake_case).
    fn quantity(self) -> (&'static str, &'static str) {
        match self {
            Judged::ReadOnlyP99 | Judged::MutatingP99 => ("p99Seconds", "p99_seconds"),
            Judged::ReadOnlyRejection | Judged::MutatingRejection => ("rejection", "rejection"),
            Judged::CpuCores => ("cpuCores", "cpu_cores"),
        }
    }

    fn predicted(self, p: &PredictionAtLoad) -> f64 {
        match self {
            Judged::ReadOnlyP99 => p.read_only_p99_s,
            Judged::MutatingP99 => p.mutating_p99_s,
            Judged::ReadOnlyRejection => p.read_only_rejection,
            Judged::MutatingRejection => p.mutating_rejection,
            Judged::CpuCores => p.cpu_cores,
        }
    }

    /// What the window observed of it, where it says.
    fn observed(self, sample: &ApiserverSample) -> Option<f64> {
        let rejected = |c: &ClassSample| {
            let arrivals = c.arrival_rate.filter(|r| *r > 0.0)?;
            Some(c.rejected_rate? / arrivals)
        };
        match self {
            Judged::ReadOnlyP99 => sample.read_only.latency.map(|l| l.p99_s),
            Judged::MutatingP99 => sample.mutating.latency.map(|l| l.p99_s),
            Judged::ReadOnlyRejection => rejected(&sample.read_only),
            Judged::MutatingRejection => rejected(&sample.mutating),
            Judged::CpuCores => sample.process.cpu_cores,
        }
        .filter(|v| v.is_finite() && *v >= 0.0)
    }

    /// Relative for times and CPU; absolute for the rejected share, mostly 0 when observed.
    fn error(self, predicted: f64, observed: f64) -> Option<f64> {
        match self {
            Judged::ReadOnlyRejection | Judged::MutatingRejection => Some(predicted - observed),
            _ => (observed > 0.0).then(|| (predicted - observed) / observed),
        }
    }
}

/// The last round's model, at the load this window measured, against what it observed:
/// the model's own error (the forecast's is reported apart), on data it was not fitted to.
fn observe_model_error(
    ctx: &Context,
    snapshot: &LoadSnapshot,
    status: &mut ControlPlaneTuningStatus,
) {
    let predicted = ctx
        .predicted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let metrics = &ctx.health.metrics;
    let mut errors = Vec::new();
    for sample in &snapshot.apiservers {
        let replica = &sample.replica.name;
        let prediction = predicted.get(replica).and_then(|(c, settings)| {
            c.predict(
                settings,
                sample.read_only.arrival_rate?,
                sample.mutating.arrival_rate?,
            )
        });
        for judged in Judged::ALL {
            let Some(observed) = judged.observed(sample) else {
                continue;
            };
            if matches!(judged, Judged::ReadOnlyP99 | Judged::MutatingP99) {
                metrics.set_p99(replica, judged.class(), "observed", observed);
            }
            let Some(value) = prediction.as_ref().map(|p| judged.predicted(p)) else {
                continue;
            };
            let Some(error) = judged.error(value, observed) else {
                continue;
            };
            let (quantity, label) = judged.quantity();
            metrics.set_model_error(replica, judged.class(), label, error);
            errors.push(PredictionError {
                replica: replica.clone(),
                class: judged.class().to_owned(),
                quantity: quantity.to_owned(),
                predicted: value,
                observed,
                error,
            });
        }
    }
    if !errors.is_empty() {
        status.model_error = errors;
    }
}

/// Whether a change may start now: not while shutting down nor with a stale lease.
fn may_change(ctx: &Context) -> Option<Decided> {
    // A shutdown or a lost lease between the recommendation and here: leave it to the
    // next leader rather than start a roll that may not be followed through.
    if ctx.shutting_down() {
        return Some(Decided {
            action: "hold",
            reason: "shutting down: not starting a change".into(),
        });
    }
    if !ctx.is_leader() {
        return Some(Decided {
            action: "hold",
            reason: "the lease was not renewed in time: not starting a change".into(),
        });
    }
    None
}

async fn apply(
    tuning: &ControlPlaneTuning,
    ctx: &Context,
    (recommendation, policy): (&Recommendation, &Policy),
    status: &mut ControlPlaneTuningStatus,
    would: &str,
) -> Result<Decided, Error> {
    if let Some(decided) = may_change(ctx) {
        return Ok(decided);
    }
    set_condition(
        &mut status.conditions,
        APPLYING,
        true,
        "Rolling",
        would,
        tuning.metadata.generation,
    );
    status::write(&ctx.tunings, &ctx.tuning, status).await?;
    let outcome = updater::apply(&ctx.updater, recommendation).await;
    let decided = record_outcome(tuning, ctx, status, would, outcome).await?;
    if decided.action == "applied" {
        status::record_raises(status, recommendation, policy.safety.scale_down_delay_s);
    }
    Ok(decided)
}

/// Finishes (when `recommendation` still wants it) or rolls back a change that an earlier
/// leader left with intent annotations; None when there is none.
async fn finish_unfinished(
    tuning: &ControlPlaneTuning,
    ctx: &Context,
    recommendation: &Recommendation,
    status: &mut ControlPlaneTuningStatus,
) -> Result<Option<Decided>, Error> {
    let unfinished = updater::unfinished(&ctx.updater).await?;
    if unfinished.is_empty() {
        return Ok(None);
    }
    if let Some(decided) = may_change(ctx) {
        return Ok(Some(decided));
    }
    let what = format!(
        "the unfinished change of StatefulSet(s) {}",
        unfinished.join(", ")
    );
    set_condition(
        &mut status.conditions,
        APPLYING,
        true,
        "Recovering",
        format!("finishing or rolling back {what}"),
        tuning.metadata.generation,
    );
    status::write(&ctx.tunings, &ctx.tuning, status).await?;
    let outcome = match updater::recover(&ctx.updater, Some(recommendation)).await {
        Ok(Recovery::Done {
            finished,
            rolled_back,
        }) => {
            let changes: Vec<String> = finished
                .iter()
                .map(|s| format!("StatefulSet {s}: finished"))
                .chain(
                    rolled_back
                        .iter()
                        .map(|s| format!("StatefulSet {s}: rolled back")),
                )
                .collect();
            ctx.publish_change(
                Event {
                    type_: EventType::Normal,
                    reason: "Recovered".into(),
                    note: Some(truncate_note(&changes.join("; "))),
                    action: "Recover".into(),
                    secondary: None,
                },
                &tuning.object_ref(&()),
            )
            .await;
            let reason = changes.join(", ");
            set_condition(
                &mut status.conditions,
                APPLYING,
                false,
                "Done",
                reason.clone(),
                tuning.metadata.generation,
            );
            // Recorded as a change: the cooldown counts from here.
            status.last_applied = Some(AppliedChange {
                time: status::now_rfc3339(),
                outcome: if finished.is_empty() {
                    "RolledBack"
                } else {
                    "Applied"
                }
                .into(),
                changes,
                reason: None,
            });
            return Ok(Some(Decided {
                action: "recovered",
                reason,
            }));
        }
        Ok(Recovery::Rejected(rejection)) => Ok(Outcome::Rejected(rejection)),
        Ok(Recovery::Interrupted { unfinished, reason }) => Ok(Outcome::Interrupted {
            plan: updater::Plan::default(),
            unfinished,
            reason,
        }),
        Err(error) => Err(error),
    };
    record_outcome(tuning, ctx, status, &what, outcome)
        .await
        .map(Some)
}

/// Status, event and metrics of what the updater did with `change`.
async fn record_outcome(
    tuning: &ControlPlaneTuning,
    ctx: &Context,
    status: &mut ControlPlaneTuningStatus,
    change: &str,
    outcome: Result<Outcome, updater::Error>,
) -> Result<Decided, Error> {
    let generation = tuning.metadata.generation;
    let reference = tuning.object_ref(&());
    let (decided, applied) = match outcome {
        Ok(Outcome::Unchanged { .. }) => (
            Decided {
                action: "unchanged",
                reason: "already in effect".into(),
            },
            None,
        ),
        Ok(Outcome::Applied { plan }) => {
            ctx.health.metrics.applies.inc();
            let changes = plan_lines(&plan);
            ctx.publish_change(
                Event {
                    type_: EventType::Normal,
                    reason: "Applied".into(),
                    note: Some(truncate_note(&changes.join("; "))),
                    action: "Apply".into(),
                    secondary: None,
                },
                &reference,
            )
            .await;
            (
                Decided {
                    action: "applied",
                    reason: change.to_owned(),
                },
                Some(AppliedChange {
                    time: status::now_rfc3339(),
                    outcome: "Applied".into(),
                    changes,
                    reason: None,
                }),
            )
        }
        Ok(Outcome::Rejected(rejection)) => {
            ctx.health.metrics.rollbacks.inc();
            let reason = format!(
                "{}{}: {}",
                rejection.component,
                rejection
                    .stateful_set
                    .as_deref()
                    .map(|s| format!(" StatefulSet {s}"))
                    .unwrap_or_default(),
                rejection.reason
            );
            ctx.publish_change(
                Event {
                    type_: EventType::Warning,
                    reason: "RolledBack".into(),
                    note: Some(truncate_note(&reason)),
                    action: "Apply".into(),
                    secondary: None,
                },
                &reference,
            )
            .await;
            (
                Decided {
                    action: "rolled-back",
                    reason: reason.clone(),
                },
                // Recorded as a change: the cooldown then keeps arak from retrying at once.
                Some(AppliedChange {
                    time: status::now_rfc3339(),
                    outcome: "RolledBack".into(),
                    changes: vec![change.to_owned()],
                    reason: Some(reason),
                }),
            )
        }
        Ok(Outcome::Interrupted {
            unfinished, reason, ..
        }) => {
            let reason = interrupted_reason(&unfinished, &reason);
            tracing::warn!(%reason, "roll interrupted by shutdown");
            ctx.publish_change(
                Event {
                    type_: EventType::Normal,
                    reason: "Interrupted".into(),
                    note: Some(truncate_note(&reason)),
                    action: "Apply".into(),
                    secondary: None,
                },
                &reference,
            )
            .await;
            // Not recorded as a change: the next leader's round is to finish it at once.
            (
                Decided {
                    action: "interrupted",
                    reason,
                },
                None,
            )
        }
        Err(error) => {
            ctx.health.metrics.error("apply");
            ctx.publish(
                Event {
                    type_: EventType::Warning,
                    reason: "ApplyFailed".into(),
                    note: Some(truncate_note(&error.to_string())),
                    action: "Apply".into(),
                    secondary: None,
                },
                &reference,
            )
            .await;
            set_condition(
                &mut status.conditions,
                APPLYING,
                false,
                "Failed",
                error.to_string(),
                generation,
            );
            return Err(error.into());
        }
    };
    let condition_reason = match decided.action {
        "rolled-back" => "RolledBack",
        "interrupted" => "Interrupted",
        _ => "Done",
    };
    set_condition(
        &mut status.conditions,
        APPLYING,
        false,
        condition_reason,
        decided.reason.clone(),
        generation,
    );
    if applied.is_some() {
        status.last_applied = applied;
    }
    Ok(decided)
}

/// The decision's reason for a roll stopped by shutdown: what stopped it and what the next
/// leader is left to finish.
fn interrupted_reason(unfinished: &[String], reason: &str) -> String {
    let left = if unfinished.is_empty() {
        "nothing is left unfinished".to_owned()
    } else {
        format!(
            "left for the next leader: StatefulSet(s) {} keep their intent",
            unfinished.join(", ")
        )
    };
    format!("interrupted by shutdown ({reason}); {left}")
}

/// One line per knob that would change: `replica knob current -> recommended`.
fn describe_change(r: &Recommendation) -> String {
    let summary = status::summary(r);
    let mut lines = Vec::new();
    for replica in &summary.replicas {
        for (knob, to) in &replica.recommended {
            let from = replica.current.get(knob).copied().unwrap_or_default();
            if from != *to {
                lines.push(format!("{} {knob} {from} -> {to}", replica.name));
            }
        }
    }
    if lines.is_empty() {
        "no knob changes".into()
    } else {
        lines.join(", ")
    }
}

fn plan_lines(plan: &updater::Plan) -> Vec<String> {
    let apf = plan.apf.iter().map(|l| {
        format!(
            "PriorityLevelConfiguration {} queueLengthLimit {} -> {} (apf)",
            l.name, l.from_queue_length_limit, l.to_queue_length_limit
        )
    });
    let knobs = plan.stateful_sets.iter().flat_map(|s| {
        s.changes.iter().map(|c| {
            format!(
                "{} {} {} -> {} ({:?})",
                c.replica, c.knob, c.from, c.to, c.path
            )
        })
    });
    apf.chain(knobs).collect()
}

/// Event notes are limited to 1 KiB by the API server.
fn truncate_note(note: &str) -> String {
    if note.len() <= 1000 {
        return note.to_owned();
    }
    let mut end = 1000;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &note[..end])
}

/// A hold reason's category: the metric label, a small fixed set whatever the text says.
fn hold_category(reason: &str) -> &'static str {
    const CATEGORIES: [(&str, &str); 7] = [
        ("snapshot not actionable", "data-quality"),
        ("is not in the snapshot", "missing-replica"),
        ("no request rates", "no-load"),
        ("confidence", "confidence"),
        ("cooldown", "cooldown"),
        ("deadband", "deadband"),
        ("current ones", "unchanged"),
    ];
    CATEGORIES
        .iter()
        .find(|(text, _)| reason.contains(text))
        .map_or("other", |(_, category)| category)
}

#[cfg(test)]
mod tests {
    use super::*;
    use recommender::snapshot::{LatencySummary, ProcessSample, Replica};

    #[test]
    fn each_quantity_is_judged_against_what_the_window_observed() {
        let mut sample = ApiserverSample {
            replica: Replica {
                component: recommender::snapshot::Component::Apiserver,
                name: "apiserver-0".into(),
                instance: "127.0.0.1:6443".into(),
            },
            read_only: ClassSample::default(),
            mutating: ClassSample::default(),
            long_running_rate: None,
            long_running_open: None,
            process: ProcessSample {
                cpu_cores: Some(1.5),
                ..ProcessSample::default()
            },
            priority_levels: BTreeMap::new(),
        };
        sample.read_only.arrival_rate = Some(200.0);
        sample.read_only.rejected_rate = Some(2.0);
        sample.mutating.latency = Some(LatencySummary {
            p50_s: 0.01,
            p90_s: 0.05,
            p99_s: 0.2,
            count: 1000.0,
        });
        assert_eq!(Judged::ReadOnlyRejection.observed(&sample), Some(0.01));
        assert_eq!(Judged::MutatingP99.observed(&sample), Some(0.2));
        assert_eq!(Judged::CpuCores.observed(&sample), Some(1.5));
        // No arrivals measured: no rejected share, rather than a division by zero.
        assert_eq!(Judged::MutatingRejection.observed(&sample), None);
        assert_eq!(Judged::ReadOnlyP99.observed(&sample), None);
        // Times and CPU relative, rejections in shares of requests.
        assert_eq!(
            Judged::CpuCores.error(1.8, 1.5).map(|e| (e * 1e9).round()),
            Some(0.2e9)
        );
        assert_eq!(Judged::ReadOnlyRejection.error(0.0, 0.01), Some(-0.01));
        assert_eq!(Judged::MutatingP99.error(0.1, 0.0), None);
        assert_eq!(
            Judged::ALL.map(Judged::quantity).map(|q| q.1),
            [
                "p99_seconds",
                "p99_seconds",
                "rejection",
                "rejection",
                "cpu_cores"
            ]
        );
    }

    #[test]
    fn hold_reasons_fall_into_few_categories() {
        assert_eq!(
            hold_category("cooldown: last change 12 s ago, 600 s required"),
            "cooldown"
        );
        assert_eq!(
            hold_category("snapshot not actionable: stale apiserver_request_total"),
            "data-quality"
        );
        assert_eq!(
            hold_category("apiserver `apiserver-3` is not in the snapshot"),
            "missing-replica"
        );
        assert_eq!(hold_category("something new"), "other");
    }

    #[test]
    fn an_interruption_says_what_the_next_leader_finishes() {
        let reason = interrupted_reason(
            &["apiserver-1".into(), "apiserver-2".into()],
            "stop requested after StatefulSet apiserver-0",
        );
        assert_eq!(
            reason,
            "interrupted by shutdown (stop requested after StatefulSet apiserver-0); left for the next leader: StatefulSet(s) apiserver-1, apiserver-2 keep their intent"
        );
        assert!(interrupted_reason(&[], "stop requested").ends_with("nothing is left unfinished"));
    }

    #[test]
    fn long_notes_are_cut_on_a_character() {
        let note = "é".repeat(600);
        let cut = truncate_note(&note);
        assert!(cut.len() <= 1004 && cut.ends_with('…'));
    }
}
