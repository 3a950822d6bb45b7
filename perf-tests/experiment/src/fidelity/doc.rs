//! `experiment fidelity report`: docs/model-fidelity.md and its predicted-vs-measured SVGs
//! from a results directory (it recomputes the predictions, so a change to the model shows
//! on the same measurements).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::predict::{self, ErrorSummary, PointPrediction, Predictions};
use super::{ANALYSIS_FILE, FidelityRun, POINTS_FILE, PREDICTIONS_FILE, PointRecord, RUN_FILE};
use crate::error::{Error, Result};

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Predicts the run's points, writes predictions.json into the results directory, the
/// report to `out` and the plots next to it; returns the files written.
pub fn write(dir: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let run: FidelityRun = read_json(&dir.join(RUN_FILE))?;
    let points: Vec<PointRecord> = read_json(&dir.join(POINTS_FILE))?;
    if points.is_empty() {
        return Err(Error::Invalid(format!("{}: no points", dir.display())));
    }
    let predictions = predict::predict(&run, &points);
    let mut written = Vec::new();
    let predictions_path = dir.join(PREDICTIONS_FILE);
    crate::run::write_json(&predictions_path, &predictions)?;
    written.push(predictions_path);
    let plots_dir = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(plots_dir)
        .map_err(Error::io(format!("creating {}", plots_dir.display())))?;
    let stem = out.file_stem().map_or("model-fidelity".into(), |s| {
        s.to_string_lossy().into_owned()
    });
    let mut plots = Vec::new();
    for (kind, title) in [
        (Quantity::Mean, "mean latency"),
        (Quantity::P99, "P99 latency"),
        (Quantity::Rejected, "429 share"),
        (Quantity::Cpu, "apiserver CPU"),
    ] {
        let name = format!("{stem}-{}.svg", kind.file());
        let path = plots_dir.join(&name);
        scatter(&path, title, kind, &points, &predictions.points)?;
        plots.push((title, name));
        written.push(path);
    }
    let analysis = std::fs::read_to_string(dir.join(ANALYSIS_FILE)).ok();
    let text = markdown(
        dir,
        &run,
        &points,
        &predictions,
        &plots,
        analysis.as_deref(),
    );
    std::fs::write(out, text).map_err(Error::io(format!("writing {}", out.display())))?;
    written.push(out.to_owned());
    Ok(written)
}

#[derive(Clone, Copy, PartialEq)]
enum Quantity {
    Mean,
    P99,
    Rejected,
    Cpu,
}

impl Quantity {
    fn file(self) -> &'static str {
        match self {
            Quantity::Mean => "mean",
            Quantity::P99 => "p99",
            Quantity::Rejected => "429",
            Quantity::Cpu => "cpu",
        }
    }
}

/// (measured, predicted) pairs of a class (0 readOnly, 1 mutating; CPU uses 0).
fn pairs(
    kind: Quantity,
    class: usize,
    points: &[PointRecord],
    predictions: &[PointPrediction],
    scored: bool,
) -> Vec<(f64, f64)> {
    let name = super::CLASSES[class];
    points
        .iter()
        .zip(predictions)
        .filter(|(_, q)| q.missing.is_none() && q.scored == scored)
        .filter_map(|(p, q)| {
            let m = p.classes.get(name)?;
            let c = if class == 0 {
                &q.read_only
            } else {
                &q.mutating
            };
            match kind {
                Quantity::Mean => Some((m.mean_s?, c.mean_s)),
                Quantity::P99 => Some((m.p99_s?, c.p99_s)),
                Quantity::Rejected => Some((m.rejected_share * 100.0, c.rejection * 100.0)),
                Quantity::Cpu => Some((p.cpu_cores?, q.cpu_cores)),
            }
        })
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect()
}

fn scatter(
    path: &Path,
    title: &str,
    kind: Quantity,
    points: &[PointRecord],
    predictions: &[PointPrediction],
) -> Result<()> {
    let err = |e: String| Error::Plot {
        path: path.to_owned(),
        message: e,
    };
    let classes: &[usize] = if kind == Quantity::Cpu { &[0] } else { &[0, 1] };
    let mut series = Vec::new();
    for &class in classes {
        let label = if kind == Quantity::Cpu {
            "apiserver".to_string()
        } else {
            super::CLASSES[class].to_string()
        };
        let colour = if class == 0 {
            RGBColor(40, 80, 200)
        } else {
            RGBColor(200, 40, 40)
        };
        series.push((
            format!("{label}, held out 20–100%"),
            colour,
            true,
            pairs(kind, class, points, predictions, true),
        ));
        series.push((
            format!("{label}, calibration or 110%"),
            colour,
            false,
            pairs(kind, class, points, predictions, false),
        ));
    }
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.3.iter().flat_map(|(a, b)| [*a, *b]))
        .collect();
    let log = matches!(kind, Quantity::Mean | Quantity::P99);
    let unit = match kind {
        Quantity::Mean | Quantity::P99 => "s",
        Quantity::Rejected => "%",
        Quantity::Cpu => "cores",
    };
    let root = SVGBackend::new(path, (760, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let caption = format!("{title}: predicted vs measured");
    let x_desc = format!("measured ({unit})");
    let y_desc = format!("predicted ({unit})");
    let dot = |s: &(String, RGBColor, bool, Vec<(f64, f64)>), (x, y): (f64, f64)| {
        let style = if s.2 {
            s.1.filled()
        } else {
            s.1.stroke_width(1)
        };
        Circle::new((x, y), 5, style)
    };
    if log {
        let positive: Vec<f64> = all.iter().copied().filter(|v| *v > 0.0).collect();
        let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = positive.iter().copied().fold(0.0, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo / 1.5, hi * 1.5)
        } else {
            (1e-3, 10.0)
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(&caption, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((lo..hi).log_scale(), (lo..hi).log_scale())
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.stroke_width(1)))
            .map_err(|e| err(e.to_string()))?
            .label("predicted = measured");
        for s in &series {
            let points: Vec<(f64, f64)> =
                s.3.iter()
                    .copied()
                    .filter(|(a, b)| *a > 0.0 && *b > 0.0)
                    .collect();
            let (colour, filled) = (s.1, s.2);
            chart
                .draw_series(points.into_iter().map(|p| dot(s, p)))
                .map_err(|e| err(e.to_string()))?
                .label(&s.0)
                .legend(move |(x, y)| {
                    Circle::new(
                        (x + 10, y),
                        5,
                        if filled {
                            colour.filled()
                        } else {
                            colour.stroke_width(1)
                        },
                    )
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    } else {
        let hi = all.iter().copied().fold(0.0, f64::max).max(1e-3) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(&caption, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..hi, 0.0..hi)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (hi, hi)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| err(e.to_string()))?
            .label("predicted = measured");
        for s in &series {
            let (colour, filled) = (s.1, s.2);
            chart
                .draw_series(s.3.iter().map(|&p| dot(s, p)))
                .map_err(|e| err(e.to_string()))?
                .label(&s.0)
                .legend(move |(x, y)| {
                    Circle::new(
                        (x + 10, y),
                        5,
                        if filled {
                            colour.filled()
                        } else {
                            colour.stroke_width(1)
                        },
                    )
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v >= 10.0 => format!("{v:.1} s"),
        Some(v) if v.is_finite() => format!("{:.1}", v * 1e3),
        _ => "–".into(),
    }
}

fn summary_value(s: &ErrorSummary, v: Option<f64>) -> String {
    match (s.unit, v) {
        (_, None) => "–".into(),
        ("pp", Some(v)) => format!("{v:.2} pp"),
        (_, Some(v)) => format!("{:.0}%", v * 100.0),
    }
}

fn error_table(text: &mut String, rows: &[ErrorSummary]) {
    text.push_str("| quantity | class | goal | points | median abs error | max abs error | median signed error | within goal |\n");
    text.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for s in rows {
        let goal = if s.unit == "pp" {
            format!("≤ {} pp", s.goal)
        } else {
            format!("≤ {:.0}%", s.goal * 100.0)
        };
        let _ = writeln!(
            text,
            "| {} | {} | {goal} | {} | {} | {} | {} | {}/{} |",
            s.quantity,
            s.class,
            s.n,
            summary_value(s, s.median_abs),
            summary_value(s, s.max_abs),
            summary_value(s, s.median),
            s.within_goal,
            s.n
        );
    }
}

fn setting(p: &PointRecord) -> String {
    format!(
        "{} cores, {}, {}, {:.0}%",
        p.quota_cores,
        p.limits,
        p.mix,
        p.load_share * 100.0
    )
}

fn markdown(
    dir: &Path,
    run: &FidelityRun,
    points: &[PointRecord],
    predictions: &Predictions,
    plots: &[(&str, String)],
    analysis: Option<&str>,
) -> String {
    let mut t = String::new();
    let dir_name = dir.file_name().map_or(dir.display().to_string(), |n| {
        n.to_string_lossy().into_owned()
    });
    t.push_str("# Model fidelity: arak's apiserver model against a real kube-apiserver\n\n");
    let _ = writeln!(
        t,
        "Generated by `perf-tests/run-experiment fidelity report` from \
         `perf-tests/results/{dir_name}/` (run started {}, finished {}). Do not edit by hand: \
         the analysis comes from `{ANALYSIS_FILE}` in that directory.\n",
        run.started_utc,
        run.finished_utc.as_deref().unwrap_or("–")
    );
    let _ = writeln!(
        t,
        "One hosted kube-apiserver (no load balancer split) ran a grid of CPU quota × inflight \
         limits × offered load × request mix, {} points of {} s each (the first {} s of each \
         left out as warm-up, the last 4 s as drain). The model was calibrated per quota with \
         `recommender::calibrate::calibrate_apiserver` on the apiserver's 5 s history of the \
         points at limits {} and loads {} (all mixes), then predicted every point with \
         `queue_model::apiserver::ApiserverModel` at cores = quota − calibrated baseline (or, \
         where the calibration found the apiserver given less CPU than its quota at load, \
         that less: see the calibration's notes), queue \
         length {} (APF's handSize × queueLengthLimit) and, per class, the offered rate (the \
         larger of what reached the apiserver and what stress-test sent), as \
         `recommender::search` checks a setting. Errors are scored on the held-out points \
         offered 20–100% of the estimated capacity.\n",
        points.len(),
        run.point_s,
        run.warmup_s,
        run.limits.first().map_or("–".into(), |l| l.to_string()),
        run.calibration_loads
            .iter()
            .map(|l| format!("{:.0}%", l * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        predictions.queue_length,
    );

    t.push_str("## Errors on held-out points (20–100% of capacity)\n\n");
    let scored = predict::summarise(&predictions.points, |p| p.scored);
    error_table(&mut t, &scored);
    t.push_str(
        "\nRelative error = predicted / measured − 1 (latency from the apiserver's \
         `apiserver_request_duration_seconds`, CPU from `process_cpu_seconds_total`); 429 error \
         in percentage points of the class's requests. Goals from issue #14: mean ≤ 10%, \
         P99 ≤ 20%, 429 ≤ 0.5 pp, CPU ≤ 10%.\n\n",
    );
    let slo = recommender::policy::Slo::default();
    let check = predict::slo_check(
        points,
        &predictions.points,
        [slo.read_only_p99_s(), slo.mutating_p99_s],
    );
    let _ = writeln!(
        t,
        "Against the default policy's P99 SLOs (readOnly {} s, mutating {} s): of {} scored \
         class-points, {} measured over the SLO, and {} where the model predicted the SLO met \
         and the measurement missed it by more than {:.0}%{}.\n",
        slo.read_only_p99_s(),
        slo.mutating_p99_s,
        check.checked,
        check.measured_over,
        check.optimistic.len(),
        predict::SLO_MISS_MARGIN * 100.0,
        if check.optimistic.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                check
                    .optimistic
                    .iter()
                    .map(|(i, c)| format!("#{i} {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let diag = |p: &PointPrediction| p.apf_level.as_ref().map(|a| a.errors.clone());
    let apf_points: Vec<PointPrediction> = predictions
        .points
        .iter()
        .filter(|p| p.scored)
        .filter_map(|p| {
            let mut q = p.clone();
            q.errors = diag(p)?;
            Some(q)
        })
        .collect();
    if !apf_points.is_empty() {
        t.push_str(
            "Diagnostic, not arak's model: the same model with both classes' limits set to the \
             seats APF actually gave the load user's level (`global-default`, \
             `apiserver_flowcontrol_current_limit_seats`) instead of the inflight flags:\n\n",
        );
        let rows: Vec<ErrorSummary> = predict::summarise(&apf_points, |_| true)
            .into_iter()
            .filter(|r| r.quantity != "CPU")
            .collect();
        error_table(&mut t, &rows);
        t.push('\n');
    }

    t.push_str("## Analysis\n\n");
    t.push_str(analysis.unwrap_or("(no analysis written for this run yet)\n"));
    t.push('\n');

    t.push_str("## Worst held-out points\n\n");
    type Pick = fn(&PointPrediction) -> [Option<f64>; 2];
    let picks: [(&str, Pick, bool); 4] = [
        ("mean latency", |p| p.errors.mean, false),
        ("P99 latency", |p| p.errors.p99, false),
        ("429 rate", |p| p.errors.rejected_pp, true),
        ("CPU", |p| [p.errors.cpu, None], false),
    ];
    for (name, get, pp) in picks {
        let mut worst: Vec<(f64, usize, usize)> = predictions
            .points
            .iter()
            .enumerate()
            .filter(|(_, p)| p.scored)
            .flat_map(|(i, p)| {
                get(p)
                    .into_iter()
                    .enumerate()
                    .filter_map(move |(c, e)| Some((e?, i, c)))
            })
            .collect();
        worst.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
        let _ = write!(t, "- **{name}**: ");
        let items: Vec<String> = worst
            .iter()
            .take(3)
            .map(|&(e, i, c)| {
                let class = if name == "CPU" {
                    "apiserver"
                } else {
                    super::CLASSES[c]
                };
                let e = if pp {
                    format!("{e:+.1} pp")
                } else {
                    format!("{:+.0}%", e * 100.0)
                };
                format!(
                    "#{} ({}; {class}) {e}",
                    points[i].index,
                    setting(&points[i])
                )
            })
            .collect();
        t.push_str(&if items.is_empty() {
            "none".into()
        } else {
            items.join("; ")
        });
        t.push('\n');
    }
    t.push('\n');

    t.push_str("## Predicted vs measured\n\n");
    t.push_str(
        "Filled: held-out points offered 20–100% of capacity (the scored ones); open: \
         calibration points and 110% points. Latency axes are logarithmic.\n\n",
    );
    for (title, file) in plots {
        let _ = writeln!(t, "![{title}]({file})\n");
    }

    t.push_str("## Calibration\n\n");
    t.push_str("D: CPU per request; T: time off the CPU, with c² its squared coefficient of variation (1: exponential).\n\n");
    t.push_str("| quota | points | method | samples | R² | D readOnly | D mutating | T readOnly (c²) | T mutating (c²) | baseline | notes |\n");
    t.push_str("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for c in &predictions.calibrations {
        let k = &c.calibration;
        let _ = writeln!(
            t,
            "| {} | {} | {:?} | {} | {} | {:.2} ms | {:.2} ms | {:.1} ms ({:.1}) | {:.1} ms ({:.1}) | {:.3} cores | {} |",
            c.quota_cores,
            c.points
                .iter()
                .map(|i| format!("#{i}"))
                .collect::<Vec<_>>()
                .join(" "),
            k.method,
            k.samples,
            k.r_squared.map_or("–".into(), |r| format!("{r:.2}")),
            k.read_only.cpu_s * 1e3,
            k.mutating.cpu_s * 1e3,
            k.read_only.non_cpu_s * 1e3,
            k.read_only.non_cpu_scv,
            k.mutating.non_cpu_s * 1e3,
            k.mutating.non_cpu_scv,
            k.baseline_cpu_cores,
            k.notes.join("; ")
        );
    }
    t.push('\n');

    t.push_str("## Every point\n\n");
    t.push_str(
        "Latency in ms, measured → predicted (apiserver histogram; `client P99` is stress-test's \
         own, merged over verbs). 429 in % of the class. `use`: C = calibration, H = held out \
         and scored, h = held out, not scored. IoD: index of dispersion of the apiserver's \
         request counts per 5 s scrape (1 for Poisson). thr: share of CFS periods throttled. \
         load: 1-min load average at the end.\n\n",
    );
    t.push_str("| # | quota | limits | mix | load | use | offered ro / mu /s | served ro / mu /s | mean ro | mean mu | P99 ro | P99 mu | client P99 ro / mu | 429 ro | 429 mu | CPU cores | IoD | thr | APF seats | load | note |\n");
    t.push_str("| ---: | ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for (p, q) in points.iter().zip(&predictions.points) {
        let m = |c: &str| p.classes.get(c).cloned().unwrap_or_default();
        let (ro, mu) = (m("readOnly"), m("mutating"));
        let arrow = |a: Option<f64>, b: f64| {
            if q.missing.is_some() {
                ms(a)
            } else {
                format!("{} → {}", ms(a), ms(Some(b)))
            }
        };
        let rej = |a: f64, b: f64| {
            if q.missing.is_some() {
                format!("{:.1}", a * 100.0)
            } else {
                format!("{:.1} → {:.1}", a * 100.0, b * 100.0)
            }
        };
        let client = |c: &super::ClassMeasure| ms(c.client.as_ref().and_then(|c| c.p99_s));
        let note = [
            p.error.clone(),
            q.missing.clone(),
            super::run::disturbed(p).map(|d| format!("disturbed: {d}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.0}% | {} | {:.0} / {:.0} | {:.0} / {:.0} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.index,
            p.quota_cores,
            p.limits,
            p.mix,
            p.load_share * 100.0,
            if !q.held_out {
                "C"
            } else if q.scored {
                "H"
            } else {
                "h"
            },
            ro.offered_rps,
            mu.offered_rps,
            ro.served_rps,
            mu.served_rps,
            arrow(ro.mean_s, q.read_only.mean_s),
            arrow(mu.mean_s, q.mutating.mean_s),
            arrow(ro.p99_s, q.read_only.p99_s),
            arrow(mu.p99_s, q.mutating.p99_s),
            client(&ro),
            client(&mu),
            rej(ro.rejected_share, q.read_only.rejection),
            rej(mu.rejected_share, q.mutating.rejection),
            match p.cpu_cores {
                Some(c) if q.missing.is_none() => format!("{c:.3} → {:.3}", q.cpu_cores),
                Some(c) => format!("{c:.3}"),
                None => "–".into(),
            },
            p.dispersion_index_5s
                .map_or("–".into(), |v| format!("{v:.2}")),
            p.throttled_periods_share
                .map_or("–".into(), |v| format!("{:.0}%", v * 100.0)),
            p.apf_global_default_current_seats
                .map_or("–".into(), |v| format!("{v:.0}")),
            p.load_average_end
                .map_or("–".into(), |l| format!("{:.1}", l[0])),
            note
        );
    }
    t.push('\n');

    t.push_str("## How it was run\n\n");
    let _ = writeln!(t, "```sh\n{}\n```\n", run.command);
    let _ = writeln!(t, "Each point's load: `{}`.\n", run.stress_command);
    t.push_str("Capacity estimates (the load shares are of these): a 15 s probe at a modest rate gives CPU seconds per request (the apiserver's idle CPU, measured just before from `/proc`, taken out); capacity = (quota − idle CPU) / CPU per request.\n\n");
    t.push_str("| quota / mix | probe rate | idle CPU | CPU per request | capacity |\n| --- | ---: | ---: | ---: | ---: |\n");
    for (key, c) in &run.capacity {
        let _ = writeln!(
            t,
            "| {key} | {:.0} /s | {:.3} cores | {:.2} ms | {:.0} /s |",
            c.probe_rps,
            c.idle_cpu_cores,
            c.cpu_s_per_request * 1e3,
            c.capacity_rps
        );
    }
    t.push_str("\nVersions and machine:\n\n");
    for (k, v) in run.versions.iter().chain(run.machine.iter()) {
        let _ = writeln!(t, "- {k}: {v}");
    }
    let disturbed = points
        .iter()
        .filter(|p| super::run::disturbed(p).is_some())
        .count();
    let loads: Vec<f64> = points
        .iter()
        .filter_map(|p| p.load_average_end.map(|l| l[0]))
        .collect();
    let _ = writeln!(
        t,
        "- load average (1 min) at the end of the points: {} – {}; {disturbed} of {} points flagged as disturbed (1-min load average above 3 × cores at the start or end of the point)",
        loads
            .iter()
            .copied()
            .reduce(f64::min)
            .map_or("–".into(), |v| format!("{v:.1}")),
        loads
            .iter()
            .copied()
            .reduce(f64::max)
            .map_or("–".into(), |v| format!("{v:.1}")),
        points.len()
    );
    for note in &run.notes {
        let _ = writeln!(t, "- {note}");
    }
    t
}
