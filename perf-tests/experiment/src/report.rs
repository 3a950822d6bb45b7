//! `experiment report`: medians and spreads per configuration, ratios against native, the
//! table, the plain verdict and the plots, as docs/results.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::{Config, Experiment, RunRecord, Status};

/// Whether a smaller or a larger number is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

/// Reads a measure from one run.
pub type Getter = Box<dyn Fn(&RunRecord) -> Option<f64>>;

/// One column of the results: how to read it from a run and how to show it.
pub struct Measure {
    pub name: String,
    pub unit: &'static str,
    /// Multiplies the stored value for display (e.g. 1000 for s → ms).
    pub scale: f64,
    pub better: Better,
    pub get: Getter,
}

/// Median, smallest and largest of the repetitions that have the measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// None for no values; the median of an even count is the mean of the middle two.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// `value / native`, None when native is missing or zero.
pub fn ratio(value: Option<Spread>, native: Option<Spread>) -> Option<f64> {
    let (v, n) = (value?, native?);
    (n.median != 0.0).then(|| v.median / n.median)
}

pub fn measures(records: &[RunRecord]) -> Vec<Measure> {
    let mut m = Vec::new();
    for (class, label) in [
        ("mutating", "mutating"),
        ("read", "read (GET)"),
        ("list", "LIST"),
    ] {
        for (q, pick) in [("P50", false), ("P99", true)] {
            m.push(Measure {
                name: format!("{label} {q}"),
                unit: "ms",
                scale: 1000.0,
                better: Better::Lower,
                get: Box::new(move |r: &RunRecord| {
                    let c = r.stress.as_ref()?.classes.get(class)?;
                    if pick { c.p99_s } else { c.p50_s }
                }),
            });
        }
    }
    m.push(Measure {
        name: "429 share".into(),
        unit: "%",
        scale: 100.0,
        better: Better::Lower,
        get: Box::new(|r| r.stress.as_ref()?.rejected_share),
    });
    m.push(Measure {
        name: "429 share, load client".into(),
        unit: "%",
        scale: 100.0,
        better: Better::Lower,
        get: Box::new(|r| {
            let s = r.stress.as_ref()?;
            let sent = s.client_sent?;
            let throttled = s.client_throttled?;
            (sent > 0.0).then(|| throttled / sent)
        }),
    });
    m.push(Measure {
        name: "P99, load client".into(),
        unit: "ms",
        scale: 1.0,
        better: Better::Lower,
        get: Box::new(|r| r.stress.as_ref()?.client_p99_ms),
    });
    m.push(Measure {
        name: "served".into(),
        unit: "req/s",
        scale: 1.0,
        better: Better::Higher,
        get: Box::new(|r| r.stress.as_ref()?.served_rps),
    });
    let mut pods: Vec<u32> = records
        .iter()
        .flat_map(|r| r.density.iter().map(|d| d.pods))
        .collect();
    pods.sort_unstable();
    pods.dedup();
    for n in pods {
        m.push(Measure {
            name: format!("sched. throughput P50 @{n} pods"),
            unit: "pods/s",
            scale: 1.0,
            better: Better::Higher,
            get: Box::new(move |r| density(r, n)?.throughput_p50),
        });
        m.push(Measure {
            name: format!("sched. throughput max @{n} pods"),
            unit: "pods/s",
            scale: 1.0,
            better: Better::Higher,
            get: Box::new(move |r| density(r, n)?.throughput_max),
        });
        m.push(Measure {
            name: format!("pod startup P99 @{n} pods"),
            unit: "s",
            scale: 1.0,
            better: Better::Lower,
            get: Box::new(move |r| density(r, n)?.pod_startup_p99_s),
        });
    }
    m.push(Measure {
        name: "control-plane CPU".into(),
        unit: "core-s",
        scale: 1.0,
        better: Better::Lower,
        get: Box::new(|r| r.cpu_core_seconds),
    });
    m.push(Measure {
        name: "peak RSS".into(),
        unit: "MiB",
        scale: 1.0 / 1_048_576.0,
        better: Better::Lower,
        get: Box::new(|r| r.peak_rss_bytes),
    });
    m
}

fn density(r: &RunRecord, pods: u32) -> Option<&crate::model::DensityResult> {
    r.density.iter().find(|d| d.pods == pods && d.ok)
}

/// Per measure and configuration, over the successful runs.
pub fn aggregate(
    records: &[RunRecord],
    measures: &[Measure],
) -> Vec<BTreeMap<Config, Option<Spread>>> {
    measures
        .iter()
        .map(|m| {
            Config::ALL
                .into_iter()
                .map(|c| {
                    let values: Vec<f64> = records
                        .iter()
                        .filter(|r| r.config == c && r.status == Status::Ok)
                        .filter_map(|r| (m.get)(r))
                        .collect();
                    (c, spread(&values))
                })
                .collect()
        })
        .collect()
}

/// A number with about three significant figures.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// "median (min–max)" in display units; the spread is left out for a single value.
pub fn cell(s: Option<Spread>, scale: f64) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.n == 1 || s.min == s.max => num(s.median * scale),
        Some(s) => format!(
            "{} ({}–{})",
            num(s.median * scale),
            num(s.min * scale),
            num(s.max * scale)
        ),
    }
}

/// The table: one row per configuration, one column per measure, and one row per ratio
/// against native.
pub fn table(
    measures: &[&Measure],
    aggregated: &[BTreeMap<Config, Option<Spread>>],
    configs: &[Config],
) -> String {
    let mut out = String::new();
    out.push_str("| configuration |");
    for m in measures {
        let _ = write!(out, " {} ({}) |", m.name, m.unit);
    }
    out.push_str("\n| --- |");
    for _ in measures {
        out.push_str(" ---: |");
    }
    out.push('\n');
    for &c in configs {
        let _ = write!(out, "| {c} |");
        for (m, a) in measures.iter().zip(aggregated) {
            let _ = write!(out, " {} |", cell(a[&c], m.scale));
        }
        out.push('\n');
    }
    for &c in configs.iter().filter(|&&c| c != Config::Native) {
        let _ = write!(out, "| *{c} / native* |");
        for a in aggregated {
            let r = ratio(a[&c], a[&Config::Native]);
            let _ = write!(
                out,
                " {} |",
                r.map_or("–".into(), |r| format!("×{}", num(r)))
            );
        }
        out.push('\n');
    }
    out
}

/// Plain sentences: every measure on which arak is worse than native or static.
pub fn losses(
    measures: &[Measure],
    aggregated: &[BTreeMap<Config, Option<Spread>>],
) -> Vec<String> {
    let mut out = Vec::new();
    for (m, a) in measures.iter().zip(aggregated) {
        let Some(arak) = a[&Config::Arak] else {
            continue;
        };
        for other in [Config::Native, Config::Static] {
            let Some(o) = a[&other] else { continue };
            let worse = match m.better {
                Better::Lower => arak.median > o.median,
                Better::Higher => arak.median < o.median,
            };
            // Differences inside both spreads are noise on this machine, not a loss.
            let overlapping = arak.min <= o.max && o.min <= arak.max && (arak.n > 1 || o.n > 1);
            if worse {
                out.push(format!(
                    "arak is worse than {other} on {}: {} vs {} {}{}",
                    m.name,
                    num(arak.median * m.scale),
                    num(o.median * m.scale),
                    m.unit,
                    if overlapping {
                        " (the repetitions' ranges overlap)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    out
}

pub fn load(dir: &Path) -> Result<(Experiment, Vec<RunRecord>)> {
    let path = dir.join("experiment.json");
    let experiment: Experiment = read_json(&path)?;
    let mut records = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(Error::io(format!("reading {}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("run-") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    for f in files {
        records.push(read_json(&f)?);
    }
    if records.is_empty() {
        return Err(Error::Invalid(format!(
            "{} holds no run-*.json",
            dir.display()
        )));
    }
    Ok((experiment, records))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).map_err(Error::io(format!("reading {}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClassLatency, StressResult};

    fn run(config: Config, rep: u32, mutating_p99: f64, status: Status) -> RunRecord {
        let mut r = RunRecord::new(rep, config, rep, 0.0);
        r.status = status;
        let mut stress = StressResult::default();
        stress.classes.insert(
            "mutating".into(),
            ClassLatency {
                p50_s: Some(mutating_p99 / 4.0),
                p99_s: Some(mutating_p99),
            },
        );
        r.stress = Some(stress);
        r
    }

    #[test]
    fn median_of_odd_and_even_counts_and_the_spread() {
        assert_eq!(
            spread(&[3.0, 1.0, 2.0]),
            Some(Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0,
                n: 3
            })
        );
        assert_eq!(spread(&[4.0, 1.0]).map(|s| s.median), Some(2.5));
        assert_eq!(
            spread(&[f64::NAN, 5.0]).map(|s| (s.median, s.n)),
            Some((5.0, 1))
        );
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn ratio_against_native_and_its_missing_cases() {
        let s = |m| spread(&[m]);
        assert_eq!(ratio(s(0.5), s(2.0)), Some(0.25));
        assert_eq!(ratio(s(0.5), None), None);
        assert_eq!(ratio(s(0.5), s(0.0)), None);
    }

    #[test]
    fn failed_runs_are_left_out_of_the_medians() {
        let records = vec![
            run(Config::Native, 1, 2.0, Status::Ok),
            run(Config::Native, 2, 4.0, Status::Ok),
            run(Config::Arak, 1, 1.0, Status::Ok),
            run(Config::Arak, 2, 100.0, Status::Failed),
        ];
        let ms = measures(&records);
        let agg = aggregate(&records, &ms);
        let p99 = ms.iter().position(|m| m.name == "mutating P99").unwrap();
        assert_eq!(agg[p99][&Config::Native].unwrap().median, 3.0);
        assert_eq!(agg[p99][&Config::Arak].unwrap().median, 1.0);
        assert_eq!(agg[p99][&Config::Static], None);
    }

    #[test]
    fn table_shows_medians_spreads_and_ratios() {
        let records = vec![
            run(Config::Native, 1, 2.0, Status::Ok),
            run(Config::Native, 2, 4.0, Status::Ok),
            run(Config::Static, 1, 1.5, Status::Ok),
            run(Config::Arak, 1, 0.75, Status::Ok),
        ];
        let ms: Vec<Measure> = measures(&records)
            .into_iter()
            .filter(|m| m.name == "mutating P99")
            .collect();
        let agg = aggregate(&records, &ms);
        let text = table(&ms.iter().collect::<Vec<_>>(), &agg, &Config::ALL);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "| configuration | mutating P99 (ms) |");
        assert_eq!(lines[2], "| native | 3000 (2000–4000) |");
        assert_eq!(lines[3], "| static | 1500 |");
        assert_eq!(lines[4], "| arak | 750 |");
        assert_eq!(lines[5], "| *static / native* | ×0.50 |");
        assert_eq!(lines[6], "| *arak / native* | ×0.25 |");
    }

    #[test]
    fn losses_name_every_measure_arak_is_worse_on() {
        let records = vec![
            run(Config::Native, 1, 2.0, Status::Ok),
            run(Config::Static, 1, 0.5, Status::Ok),
            run(Config::Arak, 1, 1.0, Status::Ok),
        ];
        let ms: Vec<Measure> = measures(&records)
            .into_iter()
            .filter(|m| m.name == "mutating P99")
            .collect();
        let agg = aggregate(&records, &ms);
        assert_eq!(
            losses(&ms, &agg),
            vec!["arak is worse than static on mutating P99: 1000 vs 500 ms".to_owned()]
        );
    }

    #[test]
    fn numbers_keep_about_three_figures() {
        assert_eq!(num(1234.5), "1234");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(0.1234), "0.12");
        assert_eq!(num(0.01234), "0.012");
        assert_eq!(cell(None, 1.0), "–");
    }
}
