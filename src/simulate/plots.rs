//! SVG plots of the day: the load, each policy's P99, and the settings arak chose.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;

use super::policies::PolicyKind;
use super::report::{DayReport, IntervalPoint, PolicyRun};

const SIZE: (u32, u32) = (1000, 640);

/// One number of an interval, to plot.
type Metric = fn(&IntervalPoint) -> f64;
const FONT: (&str, u32) = ("sans-serif", 18);

fn colour(kind: PolicyKind) -> RGBColor {
    match kind {
        PolicyKind::Native => RGBColor(200, 40, 40),
        PolicyKind::Static => RGBColor(40, 80, 200),
        PolicyKind::Arak => RGBColor(20, 140, 60),
    }
}

fn drawing<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

/// A line to draw: its label, colour and points (hour, value).
struct Line {
    label: String,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

fn points(run: &PolicyRun, interval_h: f64, f: impl Fn(&IntervalPoint) -> f64) -> Vec<(f64, f64)> {
    run.intervals
        .iter()
        .map(|p| (p.start_h + interval_h / 2.0, f(p)))
        .collect()
}

/// Writes the three plots into `dir` and returns their paths.
pub fn write_all(report: &DayReport, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let interval_h = report.interval_s / 3600.0;
    let load = dir.join("simulate-load.svg");
    let p99 = dir.join("simulate-p99.svg");
    let settings = dir.join("simulate-arak-settings.svg");
    let first = report.policies.first().context("no policy was simulated")?;

    {
        let root = SVGBackend::new(&load, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let lines = vec![
            Line {
                label: "readOnly req/s".into(),
                colour: RGBColor(40, 80, 200),
                points: points(first, interval_h, |p| p.read_only_rps),
            },
            Line {
                label: "mutating req/s (pod writes included)".into(),
                colour: RGBColor(200, 120, 20),
                points: points(first, interval_h, |p| p.mutating_rps),
            },
        ];
        panel(
            &root,
            "Load on the apiservers, cluster-wide (under native settings)",
            "req/s",
            &lines,
            None,
        )?;
        root.present().map_err(drawing)?;
    }
    {
        let root = SVGBackend::new(&p99, (SIZE.0, SIZE.1 * 3 / 2)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let areas = root.split_evenly((3, 1));
        // 429s are where tight limits show, and P99 alone would hide them.
        let panels: [(&str, &str, Metric, f64); 3] = [
            (
                "readOnly P99 (worst replica)",
                "s (log)",
                |p| p.read_only_p99_s,
                1e-3,
            ),
            (
                "mutating P99 (worst replica)",
                "s (log)",
                |p| p.mutating_p99_s,
                1e-3,
            ),
            (
                "share of requests rejected with 429 (1e-6 stands for none)",
                "share (log)",
                |p| p.rejection,
                1e-6,
            ),
        ];
        for (area, (title, y_desc, f, floor)) in areas.iter().zip(panels) {
            let lines: Vec<Line> = report
                .policies
                .iter()
                .map(|run| Line {
                    label: run.summary.policy.name().into(),
                    colour: colour(run.summary.policy),
                    points: points(run, interval_h, |p| f(p).max(floor)),
                })
                .collect();
            panel(area, title, y_desc, &lines, Some(floor))?;
        }
        root.present().map_err(drawing)?;
    }
    {
        let root = SVGBackend::new(&settings, (SIZE.0, SIZE.1 * 3 / 2)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let areas = root.split_evenly((3, 1));
        let arak = report
            .policies
            .iter()
            .find(|r| r.summary.policy == PolicyKind::Arak)
            .context("no arak run")?;
        let replicas = arak
            .intervals
            .first()
            .map_or(0, |p| p.apiserver_cores.len());
        let shade = |i: usize| RGBColor(20 + 60 * (i as u8 % 4), 140, 60 + 50 * (i as u8 % 4));
        let mut cores: Vec<Line> = (0..replicas)
            .map(|i| Line {
                label: format!("apiserver-{i} cores"),
                colour: shade(i),
                points: points(arak, interval_h, |p| p.apiserver_cores[i]),
            })
            .collect();
        cores.push(Line {
            label: "apiserver-0 cores used".into(),
            colour: RGBColor(0, 0, 0),
            points: points(arak, interval_h, |p| p.apiserver_cores_used[0]),
        });
        panel(&areas[0], "arak: apiserver CPU", "cores", &cores, None)?;
        let limits = vec![
            Line {
                label: "apiserver-0 --max-requests-inflight".into(),
                colour: RGBColor(40, 80, 200),
                points: points(arak, interval_h, |p| f64::from(p.max_requests_inflight[0])),
            },
            Line {
                label: "apiserver-0 --max-mutating-requests-inflight".into(),
                colour: RGBColor(200, 120, 20),
                points: points(arak, interval_h, |p| {
                    f64::from(p.max_mutating_requests_inflight[0])
                }),
            },
            Line {
                label: "apiserver-0 APF queue room".into(),
                colour: RGBColor(120, 120, 120),
                points: points(arak, interval_h, |p| f64::from(p.queue_length[0])),
            },
        ];
        panel(
            &areas[1],
            "arak: apiserver limits",
            "requests",
            &limits,
            None,
        )?;
        let clients = vec![
            Line {
                label: "scheduler QPS".into(),
                colour: RGBColor(40, 80, 200),
                points: points(arak, interval_h, |p| p.scheduler_qps),
            },
            Line {
                label: "controller-manager QPS".into(),
                colour: RGBColor(200, 40, 40),
                points: points(arak, interval_h, |p| p.controller_manager_qps),
            },
        ];
        panel(&areas[2], "arak: client QPS", "req/s", &clients, None)?;
        root.present().map_err(drawing)?;
    }
    Ok(vec![load, p99, settings])
}

/// One chart over the day (hours on x) with a legend.
fn panel(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    y_desc: &str,
    lines: &[Line],
    log_floor: Option<f64>,
) -> anyhow::Result<()> {
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let max = values.clone().fold(0.0f64, f64::max);
    let min = values.fold(f64::INFINITY, f64::min);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, FONT)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64);
    if let Some(floor) = log_floor {
        let lo = min.max(floor) / 1.5;
        let hi = (max * 1.5).max(lo * 15.0);
        draw(builder, (lo..hi).log_scale(), y_desc, lines)
    } else {
        draw(builder, 0f64..(max * 1.15).max(1.0), y_desc, lines)
    }
}

/// The mesh, the lines and the legend on a linear or logarithmic y axis.
fn draw<Y>(
    mut builder: ChartBuilder<'_, '_, SVGBackend<'_>>,
    y: Y,
    y_desc: &str,
    lines: &[Line],
) -> anyhow::Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = builder
        .build_cartesian_2d(0f64..24f64, y)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .x_desc("hour of the day")
        .y_desc(y_desc)
        .light_line_style(WHITE)
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(drawing)?;
    for l in lines {
        let c = l.colour;
        chart
            .draw_series(LineSeries::new(l.points.iter().copied(), c.stroke_width(2)))
            .map_err(drawing)?
            .label(&l.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(drawing)?;
    Ok(())
}

/// An axis label without float noise: 0.3, 2, 150.
fn short(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        return format!("{v:.0e}");
    }
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}
