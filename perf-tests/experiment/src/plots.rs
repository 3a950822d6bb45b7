//! SVG plots for docs/results.md, in the style of `arak simulate`'s (src/simulate/plots.rs):
//! one colour per configuration, lines with a legend.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::model::{Config, RunRecord, Status};

const SIZE: (u32, u32) = (1000, 640);
const FONT: (&str, u32) = ("sans-serif", 18);

pub fn colour(config: Config) -> RGBColor {
    match config {
        Config::Native => RGBColor(200, 40, 40),
        Config::Static => RGBColor(40, 80, 200),
        Config::Arak => RGBColor(20, 140, 60),
    }
}

/// Halfway to white: later repetitions of a configuration.
fn lighter(c: RGBColor) -> RGBColor {
    let half = |v: u8| v / 2 + 127;
    RGBColor(half(c.0), half(c.1), half(c.2))
}

/// Picks the settings keys (`<StatefulSet>/<knob>`) a panel shows.
type KeyFilter = fn(&str) -> bool;

pub struct Line {
    pub label: String,
    pub colour: RGBColor,
    pub points: Vec<(f64, f64)>,
}

struct Panel<'a> {
    title: String,
    x_label: &'a str,
    y_label: String,
    lines: Vec<Line>,
}

fn plot_error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |message| Error::Plot {
        path: path.to_owned(),
        message,
    }
}

fn draw_panels(path: &Path, panels: Vec<Panel>) -> Result<()> {
    let err = plot_error(path);
    let root = SVGBackend::new(
        path,
        (SIZE.0, SIZE.1 * panels.len().max(1) as u32 / 2 + 120),
    )
    .into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (panel, area) in panels.into_iter().zip(areas.iter()) {
        draw(area, panel).map_err(&err)?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

fn draw(area: &DrawingArea<SVGBackend, Shift>, panel: Panel) -> std::result::Result<(), String> {
    let all = panel.lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0_f64);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= 0.0 {
        y1 = 1.0;
    }
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, FONT)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, 0.0..y1 * 1.1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label)
        .y_desc(&panel.y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    for line in panel.lines {
        let colour = line.colour;
        chart
            .draw_series(LineSeries::new(line.points.clone(), colour.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(line.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|&p| Circle::new(p, 2, colour.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())
}

/// The successful runs of a configuration, first repetition first.
fn ok_runs(records: &[RunRecord], config: Config) -> impl Iterator<Item = &RunRecord> {
    records
        .iter()
        .filter(move |r| r.config == config && r.status == Status::Ok)
}

/// P99 over time per class, one line per run; and arak's settings over time.
pub fn write_all(records: &[RunRecord], dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let mut written = Vec::new();

    let latency = dir.join("results-latency.svg");
    let mut panels = Vec::new();
    for (class, label) in [("mutating", "mutating"), ("read", "GET"), ("list", "LIST")] {
        let mut lines = Vec::new();
        for config in Config::ALL {
            for r in ok_runs(records, config) {
                let Some(points) = r.stress.as_ref().and_then(|s| s.p99_series.get(class)) else {
                    continue;
                };
                lines.push(Line {
                    label: format!("{config} #{}", r.rep),
                    colour: if r.rep == 1 {
                        colour(config)
                    } else {
                        lighter(colour(config))
                    },
                    points: points.iter().map(|&(t, v)| (t, v * 1000.0)).collect(),
                });
            }
        }
        panels.push(Panel {
            title: format!("{label} P99 in the measured window (20 s windows)"),
            x_label: "seconds since the window began",
            y_label: "P99 (ms)".into(),
            lines,
        });
    }
    draw_panels(&latency, panels)?;
    written.push(latency);

    let settings = dir.join("results-arak-settings.svg");
    let knobs: [(&str, &str, KeyFilter); 3] = [
        (
            "apiserver max-requests-inflight (each replica)",
            "requests",
            |k| k.starts_with("apiserver-") && k.ends_with("/max-requests-inflight"),
        ),
        ("apiserver CPU (each replica)", "cores", |k| {
            k.starts_with("apiserver-") && k.ends_with("/cpu")
        }),
        (
            "scheduler and controller-manager kube-api-qps",
            "QPS",
            |k| k.ends_with("/kube-api-qps"),
        ),
    ];
    let mut panels = Vec::new();
    for (title, unit, pick) in knobs {
        let mut lines = Vec::new();
        for config in Config::ALL {
            for r in ok_runs(records, config).filter(|r| r.rep == 1) {
                let mut keys: Vec<&String> = r
                    .settings
                    .iter()
                    .flat_map(|s| s.values.keys())
                    .filter(|k| pick(k))
                    .collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    lines.push(Line {
                        label: format!("{config} {}", key.split('/').next().unwrap_or(key)),
                        colour: colour(config),
                        points: r
                            .settings
                            .iter()
                            .filter_map(|s| Some((s.t_s, *s.values.get(key)?)))
                            .collect(),
                    });
                }
            }
        }
        panels.push(Panel {
            title: format!("{title}, first repetition"),
            x_label: "seconds since the window began (negative: warm-up)",
            y_label: unit.into(),
            lines,
        });
    }
    draw_panels(&settings, panels)?;
    written.push(settings);

    let throughput = dir.join("results-throughput.svg");
    let mut lines = Vec::new();
    for config in Config::ALL {
        let mut pods: Vec<u32> = ok_runs(records, config)
            .flat_map(|r| r.density.iter().map(|d| d.pods))
            .collect();
        pods.sort_unstable();
        pods.dedup();
        let points: Vec<(f64, f64)> = pods
            .into_iter()
            .filter_map(|n| {
                let values: Vec<f64> = ok_runs(records, config)
                    .filter_map(|r| {
                        r.density
                            .iter()
                            .find(|d| d.pods == n && d.ok)?
                            .throughput_p50
                    })
                    .collect();
                Some((f64::from(n), crate::stats::summarise(&values)?.median))
            })
            .collect();
        if !points.is_empty() {
            lines.push(Line {
                label: config.to_string(),
                colour: colour(config),
                points,
            });
        }
    }
    if !lines.is_empty() {
        draw_panels(
            &throughput,
            vec![Panel {
                title: "scheduling throughput P50 per pod count (median of repetitions)".into(),
                x_label: "pods created",
                y_label: "pods/s".into(),
                lines,
            }],
        )?;
        written.push(throughput);
    }
    Ok(written)
}
