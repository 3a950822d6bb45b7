//! Calibrates arak's apiserver model from the calibration points exactly as the recommender
//! does (`recommender::calibrate::calibrate_apiserver` on a `ReplicaHistory`), predicts every
//! point with `queue_model::apiserver::ApiserverModel` as `recommender::search` checks a
//! setting (cores = quota − calibrated baseline, or what the node was seen to give where
//! the calibration found less), and computes the errors. Pure: no I/O.

use queue_model::apiserver::{ApiserverLoad, ApiserverModel, ApiserverSetting, ClassLimits};
use recommender::calibrate::{ApiserverCalibration, calibrate_apiserver};
use recommender::policy::CalibrationPolicy;
use recommender::setting::ApiserverSettings;
use recommender::snapshot::{Component, Replica, ReplicaHistory};
use serde::{Deserialize, Serialize};

use super::run::QUEUE_LENGTH;
use super::{CLASSES, FidelityRun, Limits, PointRecord};

/// The goals: relative error for latency and CPU, percentage points for 429s.
pub const GOAL_MEAN: f64 = 0.10;
pub const GOAL_P99: f64 = 0.20;
pub const GOAL_REJECTED_PP: f64 = 0.5;
pub const GOAL_CPU: f64 = 0.10;

/// The calibration of one CPU quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaCalibration {
    pub quota_cores: f64,
    /// The points whose history it was fitted on.
    pub points: Vec<u32>,
    pub calibration: ApiserverCalibration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassPredicted {
    pub mean_s: f64,
    pub p99_s: f64,
    pub rejection: f64,
}

/// The model's answer for one point, and its errors against the measurements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PointPrediction {
    pub index: u32,
    /// Not used for calibration.
    pub held_out: bool,
    /// Held out and offered between 20% and 100% of capacity: the points the goals are for.
    pub scored: bool,
    pub read_only: ClassPredicted,
    pub mutating: ClassPredicted,
    /// Predicted apiserver CPU: the model's accepted work plus the calibrated baseline.
    pub cpu_cores: f64,
    pub errors: PointErrors,
    /// The same model with both classes' limits set to the seats APF actually gave the
    /// load user's level (global-default) at that point: a diagnostic, not arak's model.
    pub apf_level: Option<ApfDiagnostic>,
    /// Why there is no prediction, if there is none.
    pub missing: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApfDiagnostic {
    pub seats: f64,
    pub read_only: ClassPredicted,
    pub mutating: ClassPredicted,
    pub errors: PointErrors,
}

/// Relative errors (predicted / measured − 1) for latency and CPU, percentage points for 429s;
/// None where the measurement is missing or zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PointErrors {
    pub mean: [Option<f64>; 2],
    pub p99: [Option<f64>; 2],
    pub rejected_pp: [Option<f64>; 2],
    pub cpu: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Predictions {
    pub queue_length: u32,
    pub calibrations: Vec<QuotaCalibration>,
    pub points: Vec<PointPrediction>,
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Whether a point is one the model is calibrated on: the first limits of the grid and one
/// of the calibration loads.
pub fn is_calibration(run: &FidelityRun, p: &PointRecord) -> bool {
    run.limits.first() == Some(&p.limits)
        && run.calibration_loads.iter().any(|&l| same(l, p.load_share))
}

/// The recommender's `ReplicaHistory` of a set of points' 5 s steps, one after another.
/// A step without its own mean latency (runs recorded before it was fetched) takes its
/// point's mean over the whole window, which the same histograms gave.
pub fn replica_history(points: &[&PointRecord]) -> ReplicaHistory {
    let steps: Vec<_> = points
        .iter()
        .flat_map(|p| p.history.iter().map(move |s| (*p, s)))
        .collect();
    let mean = |p: &PointRecord, step: Option<f64>, class: &str| {
        step.or_else(|| p.classes.get(class).and_then(|m| m.mean_s))
    };
    ReplicaHistory {
        replica: Replica {
            component: Component::Apiserver,
            name: "apiserver-0".into(),
            instance: "apiserver-0".into(),
        },
        read_only_rate: steps.iter().map(|(_, s)| s.read_only_rate).collect(),
        mutating_rate: steps.iter().map(|(_, s)| s.mutating_rate).collect(),
        cpu_cores: steps.iter().map(|(_, s)| s.cpu_cores).collect(),
        read_only_p99_s: steps.iter().map(|(_, s)| s.read_only_p99_s).collect(),
        mutating_p99_s: steps.iter().map(|(_, s)| s.mutating_p99_s).collect(),
        read_only_mean_s: steps
            .iter()
            .map(|(p, s)| mean(p, s.read_only_mean_s, "readOnly"))
            .collect(),
        mutating_mean_s: steps
            .iter()
            .map(|(p, s)| mean(p, s.mutating_mean_s, "mutating"))
            .collect(),
        resident_memory_bytes: vec![None; steps.len()],
    }
}

pub fn predict(run: &FidelityRun, points: &[PointRecord]) -> Predictions {
    let policy = CalibrationPolicy {
        min_samples: run.min_samples,
        ..Default::default()
    };
    let mut quotas: Vec<f64> = points.iter().map(|p| p.quota_cores).collect();
    quotas.sort_by(f64::total_cmp);
    quotas.dedup_by(|a, b| same(*a, *b));
    let calibrations: Vec<QuotaCalibration> = quotas
        .iter()
        .map(|&quota| {
            let used: Vec<&PointRecord> = points
                .iter()
                .filter(|p| same(p.quota_cores, quota) && p.error.is_none())
                .filter(|p| is_calibration(run, p))
                .collect();
            let history = replica_history(&used);
            let limits = run.limits.first().copied().unwrap_or(Limits {
                read_only: 400,
                mutating: 200,
            });
            let running = ApiserverSettings {
                cpu_cores: quota,
                memory_bytes: 0.0,
                max_requests_inflight: limits.read_only,
                max_mutating_requests_inflight: limits.mutating,
                queue_length: QUEUE_LENGTH,
            };
            QuotaCalibration {
                quota_cores: quota,
                points: used.iter().map(|p| p.index).collect(),
                // Every calibration step may show contention: the estimate takes the most
                // loaded third of them.
                calibration: calibrate_apiserver(Some(&history), &running, usize::MAX, &policy),
            }
        })
        .collect();
    let points = points
        .iter()
        .map(|p| {
            let calibration = calibrations
                .iter()
                .find(|c| same(c.quota_cores, p.quota_cores))
                .map(|c| &c.calibration);
            predict_point(run, p, calibration)
        })
        .collect();
    Predictions {
        queue_length: QUEUE_LENGTH,
        calibrations,
        points,
    }
}

fn predict_point(
    run: &FidelityRun,
    p: &PointRecord,
    calibration: Option<&ApiserverCalibration>,
) -> PointPrediction {
    let held_out = !is_calibration(run, p);
    let mut out = PointPrediction {
        index: p.index,
        held_out,
        scored: held_out
            && p.error.is_none()
            && p.load_share > 0.2 - 1e-9
            && p.load_share <= 1.0 + 1e-9,
        ..Default::default()
    };
    let Some(c) = calibration else {
        out.missing = Some("no calibration for this quota".into());
        out.scored = false;
        return out;
    };
    if p.error.is_some() {
        out.missing = Some("the point failed".into());
        return out;
    }
    // What the load user sent, if more than reached the apiserver: past saturation requests
    // wait on the client's connections (HTTP/2 streams) before the apiserver counts them,
    // and the model's arrivals are the offered load, not what got through.
    let offered = |class: &str| {
        p.classes.get(class).map_or(0.0, |m| {
            let sent = m.client.as_ref().map_or(0.0, |c| c.sent_rps);
            m.offered_rps.max(sent)
        })
    };
    let load = ApiserverLoad {
        read_only: c.read_only.load(offered("readOnly")),
        mutating: c.mutating.load(offered("mutating")),
    };
    match model(&load, c.queue_cores(p.quota_cores), p.limits) {
        Ok((ro, mu, used)) => {
            out.read_only = ro;
            out.mutating = mu;
            out.cpu_cores = used + c.baseline_cpu_cores;
            out.errors = errors(p, &out.read_only, &out.mutating, Some(out.cpu_cores));
        }
        Err(e) => {
            out.missing = Some(e);
            out.scored = false;
            return out;
        }
    }
    if let Some(seats) = p
        .apf_global_default_current_seats
        .or(p.apf_global_default_nominal_seats)
        .filter(|s| *s >= 1.0)
    {
        let limit = seats.round() as u32;
        let apf = Limits {
            read_only: limit,
            mutating: limit,
        };
        if let Ok((ro, mu, _)) = model(&load, c.queue_cores(p.quota_cores), apf) {
            out.apf_level = Some(ApfDiagnostic {
                seats,
                errors: errors(p, &ro, &mu, None),
                read_only: ro,
                mutating: mu,
            });
        }
    }
    out
}

/// The model at `cores` for the queues: per class mean, P99 and P(429), and the CPU used.
fn model(
    load: &ApiserverLoad,
    cores: f64,
    limits: Limits,
) -> Result<(ClassPredicted, ClassPredicted, f64), String> {
    if cores <= 0.0 {
        return Err(format!(
            "the calibrated baseline leaves the queues no CPU ({cores:.3} cores)"
        ));
    }
    let setting = ApiserverSetting {
        cores,
        read_only: ClassLimits {
            concurrency_limit: limits.read_only,
            queue_length: QUEUE_LENGTH,
        },
        mutating: ClassLimits {
            concurrency_limit: limits.mutating,
            queue_length: QUEUE_LENGTH,
        },
    };
    let m = ApiserverModel::new(load, &setting).map_err(|e| e.to_string())?;
    let class = |c: &queue_model::apiserver::ClassModel| ClassPredicted {
        mean_s: c.mean_response(),
        p99_s: c.response_percentile(0.99),
        rejection: c.rejection_probability(),
    };
    Ok((class(&m.read_only), class(&m.mutating), m.cpu_used_cores))
}

fn relative(predicted: f64, measured: Option<f64>) -> Option<f64> {
    measured
        .filter(|m| *m > 0.0 && m.is_finite())
        .map(|m| predicted / m - 1.0)
        .filter(|e| e.is_finite())
}

fn errors(
    p: &PointRecord,
    ro: &ClassPredicted,
    mu: &ClassPredicted,
    cpu: Option<f64>,
) -> PointErrors {
    let mut e = PointErrors {
        cpu: cpu.and_then(|c| relative(c, p.cpu_cores)),
        ..Default::default()
    };
    for (i, (class, predicted)) in CLASSES.iter().zip([ro, mu]).enumerate() {
        let Some(m) = p.classes.get(*class) else {
            continue;
        };
        if m.offered_rps <= 0.0 {
            continue;
        }
        e.mean[i] = relative(predicted.mean_s, m.mean_s);
        e.p99[i] = relative(predicted.p99_s, m.p99_s);
        e.rejected_pp[i] = Some((predicted.rejection - m.rejected_share) * 100.0);
    }
    e
}

/// One row of the error table: a quantity of a class over the scored points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorSummary {
    pub quantity: &'static str,
    pub class: &'static str,
    pub goal: f64,
    /// Relative (a share) or percentage points.
    pub unit: &'static str,
    pub n: usize,
    pub median_abs: Option<f64>,
    pub max_abs: Option<f64>,
    /// Signed median: > 0 the model over-predicts.
    pub median: Option<f64>,
    pub within_goal: usize,
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    })
}

/// The error table over the points `pick` selects.
pub fn summarise(
    predictions: &[PointPrediction],
    pick: impl Fn(&PointPrediction) -> bool,
) -> Vec<ErrorSummary> {
    type Get = fn(&PointErrors) -> Option<f64>;
    let rows: [(&str, &str, f64, &str, Get); 7] = [
        ("mean latency", "readOnly", GOAL_MEAN, "rel", |e| e.mean[0]),
        ("mean latency", "mutating", GOAL_MEAN, "rel", |e| e.mean[1]),
        ("P99 latency", "readOnly", GOAL_P99, "rel", |e| e.p99[0]),
        ("P99 latency", "mutating", GOAL_P99, "rel", |e| e.p99[1]),
        ("429 rate", "readOnly", GOAL_REJECTED_PP, "pp", |e| {
            e.rejected_pp[0]
        }),
        ("429 rate", "mutating", GOAL_REJECTED_PP, "pp", |e| {
            e.rejected_pp[1]
        }),
        ("CPU", "apiserver", GOAL_CPU, "rel", |e| e.cpu),
    ];
    rows.iter()
        .map(|&(quantity, class, goal, unit, get)| {
            let mut values: Vec<f64> = predictions
                .iter()
                .filter(|p| pick(p) && p.missing.is_none())
                .filter_map(|p| get(&p.errors))
                .collect();
            let mut abs: Vec<f64> = values.iter().map(|v| v.abs()).collect();
            ErrorSummary {
                quantity,
                class,
                goal,
                unit,
                n: values.len(),
                within_goal: abs.iter().filter(|v| **v <= goal).count(),
                max_abs: abs.iter().copied().reduce(f64::max),
                median_abs: median(&mut abs),
                median: median(&mut values),
            }
        })
        .collect()
}

/// How far past its SLO a measured P99 may be where the model said the SLO was met: the
/// issue's bar for a model the recommender may act on.
pub const SLO_MISS_MARGIN: f64 = 0.2;

/// Scored class-points checked against per-class P99 SLOs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SloCheck {
    pub checked: usize,
    /// Measured P99 over its SLO (any amount).
    pub measured_over: usize,
    /// Predicted within the SLO, measured over it by more than the margin: (point, class).
    pub optimistic: Vec<(u32, &'static str)>,
}

/// Where the model promised an SLO the apiserver then missed by more than `SLO_MISS_MARGIN`.
pub fn slo_check(
    points: &[PointRecord],
    predictions: &[PointPrediction],
    slo: [f64; 2],
) -> SloCheck {
    let mut check = SloCheck::default();
    for p in predictions
        .iter()
        .filter(|p| p.scored && p.missing.is_none())
    {
        let Some(record) = points.iter().find(|r| r.index == p.index) else {
            continue;
        };
        for ((class, predicted), slo) in CLASSES.iter().zip([&p.read_only, &p.mutating]).zip(slo) {
            let Some(measured) = record.classes.get(*class).and_then(|m| m.p99_s) else {
                continue;
            };
            check.checked += 1;
            if measured > slo {
                check.measured_over += 1;
            }
            if predicted.p99_s <= slo && measured > slo * (1.0 + SLO_MISS_MARGIN) {
                check.optimistic.push((p.index, class));
            }
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fidelity::{ClassMeasure, HistoryStep, Mix};

    fn point(index: u32, limits: Limits, share: f64, mix: Mix) -> PointRecord {
        // A synthetic apiserver: 2 ms per read, 6 ms per write, 0.05 cores idle.
        let (ro, mu) = match mix {
            Mix::Write => (20.0 * share, 80.0 * share),
            _ => (90.0 * share, 10.0 * share),
        };
        let history = (0..6)
            .map(|i| {
                let wiggle = 1.0 + 0.05 * (i as f64 - 2.5);
                HistoryStep {
                    t_unix_s: i as f64 * 5.0,
                    read_only_rate: Some(ro * wiggle),
                    mutating_rate: Some(mu / wiggle),
                    cpu_cores: Some(0.05 + 0.002 * ro * wiggle + 0.006 * mu / wiggle),
                    read_only_p99_s: Some(0.03),
                    mutating_p99_s: Some(0.05),
                    read_only_mean_s: None,
                    mutating_mean_s: None,
                }
            })
            .collect();
        let class = |rate: f64| ClassMeasure {
            offered_rps: rate,
            served_rps: rate,
            rejected_share: 0.0,
            mean_s: Some(0.01),
            p99_s: Some(0.04),
            client: None,
        };
        PointRecord {
            index,
            quota_cores: 1.0,
            limits,
            mix,
            load_share: share,
            capacity_rps: 100.0,
            target_rps: 100.0 * share,
            window_start_unix_s: 0.0,
            window_end_unix_s: 30.0,
            classes: BTreeMap::from([
                ("readOnly".to_string(), class(ro)),
                ("mutating".to_string(), class(mu)),
            ]),
            cpu_cores: Some(0.05 + 0.002 * ro + 0.006 * mu),
            cpu_cores_proc: None,
            cfs_quota_cores: Some(1.0),
            throttled_periods_share: None,
            dispersion_index_5s: Some(1.0),
            apf_global_default_nominal_seats: Some(50.0),
            apf_global_default_current_seats: Some(50.0),
            load_average_start: None,
            load_average_end: None,
            machine_busy_share: None,
            disturbed: None,
            history,
            error: None,
        }
    }

    #[test]
    fn calibrates_on_the_calibration_points_and_predicts_the_rest() {
        let default = Limits {
            read_only: 400,
            mutating: 200,
        };
        let small = Limits {
            read_only: 20,
            mutating: 10,
        };
        let run = FidelityRun {
            limits: vec![default, small],
            calibration_loads: vec![0.2, 0.8],
            min_samples: 6,
            ..Default::default()
        };
        let mut points = Vec::new();
        for (i, (limits, share, mix)) in [
            (default, 0.2, Mix::Read),
            (default, 0.8, Mix::Read),
            (default, 0.2, Mix::Write),
            (default, 0.8, Mix::Write),
            (default, 0.5, Mix::Read),
            (small, 0.2, Mix::Read),
            (default, 1.1, Mix::Write),
        ]
        .into_iter()
        .enumerate()
        {
            points.push(point(i as u32 + 1, limits, share, mix));
        }
        let p = predict(&run, &points);
        assert_eq!(p.calibrations.len(), 1);
        assert_eq!(p.calibrations[0].points, vec![1, 2, 3, 4]);
        let c = &p.calibrations[0].calibration;
        assert!((c.read_only.cpu_s - 0.002).abs() < 1e-4, "{c:?}");
        assert!((c.mutating.cpu_s - 0.006).abs() < 1e-4, "{c:?}");
        let held: Vec<u32> = p
            .points
            .iter()
            .filter(|x| x.held_out)
            .map(|x| x.index)
            .collect();
        assert_eq!(held, vec![5, 6, 7]);
        let scored: Vec<u32> = p
            .points
            .iter()
            .filter(|x| x.scored)
            .map(|x| x.index)
            .collect();
        assert_eq!(scored, vec![5, 6], "110% is held out but not scored");
        // CPU is linear in the rates here, so the model gets it right.
        let cpu = p.points[4].errors.cpu.unwrap();
        assert!(cpu.abs() < 0.02, "{cpu}");
        assert!(p.points[4].errors.mean[0].unwrap().is_finite());
        assert!(p.points[4].apf_level.is_some());
        let table = summarise(&p.points, |x| x.scored);
        assert_eq!(table.len(), 7);
        assert_eq!(table[6].n, 2);
        assert!(table[6].within_goal == 2);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn an_slo_promised_and_missed_by_more_than_the_margin_is_counted() {
        let run_limits = Limits {
            read_only: 400,
            mutating: 200,
        };
        let mut record = point(7, run_limits, 0.5, Mix::Read);
        let prediction = |p99: f64| PointPrediction {
            index: 7,
            scored: true,
            read_only: ClassPredicted {
                p99_s: p99,
                ..Default::default()
            },
            mutating: ClassPredicted {
                p99_s: p99,
                ..Default::default()
            },
            ..Default::default()
        };
        for (class, p99) in [("readOnly", 1.3), ("mutating", 1.1)] {
            record.classes.get_mut(class).unwrap().p99_s = Some(p99);
        }
        // Both measured over a 1 s SLO; only readOnly by more than 20%.
        let promised = slo_check(
            std::slice::from_ref(&record),
            &[prediction(0.5)],
            [1.0, 1.0],
        );
        assert_eq!(promised.checked, 2);
        assert_eq!(promised.measured_over, 2);
        assert_eq!(promised.optimistic, vec![(7, "readOnly")]);
        // A model that predicted the miss is not optimistic.
        let warned = slo_check(
            std::slice::from_ref(&record),
            &[prediction(1.2)],
            [1.0, 1.0],
        );
        assert!(warned.optimistic.is_empty());
    }
}
