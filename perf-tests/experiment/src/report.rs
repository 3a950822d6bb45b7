//! `experiment report`: results directories of one scenario merged, medians with bootstrap
//! intervals per configuration, ratios against native, the table and the verdict that names
//! only differences the intervals separate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::{CapacitySweep, Config, Experiment, RunRecord, Status};
use crate::stats::{Summary, summarise};

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

/// `value / native` of the medians, None when native is missing or zero.
pub fn ratio(value: Option<Summary>, native: Option<Summary>) -> Option<f64> {
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
        name: "served".into(),
        unit: "req/s",
        scale: 1.0,
        better: Better::Higher,
        get: Box::new(|r| r.stress.as_ref()?.served_rps),
    });
    m.push(Measure {
        name: "apiserver scrapes answered".into(),
        unit: "%",
        scale: 100.0,
        better: Better::Higher,
        get: Box::new(|r| r.stress.as_ref()?.scraped_share),
    });
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
    if records.iter().any(|r| r.cycle.is_some()) {
        m.push(Measure {
            name: "SLO attainment over the cycle".into(),
            unit: "%",
            scale: 100.0,
            better: Better::Higher,
            get: Box::new(|r| r.cycle.as_ref()?.slo_attainment),
        });
    }
    if records.iter().any(|r| r.step.is_some()) {
        m.push(Measure {
            name: "time to adapt after the step".into(),
            unit: "s",
            scale: 1.0,
            better: Better::Lower,
            get: Box::new(|r| r.step.as_ref()?.time_to_adapt_s),
        });
        m.push(Measure {
            name: "SLO-miss after the step".into(),
            unit: "min",
            scale: 1.0,
            better: Better::Lower,
            get: Box::new(|r| Some(r.step.as_ref()?.slo_miss_min)),
        });
    }
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
            name: format!("pod startup P99 @{n} pods"),
            unit: "s",
            scale: 1.0,
            better: Better::Lower,
            get: Box::new(move |r| density(r, n)?.pod_startup_p99_s),
        });
    }
    m
}

fn density(r: &RunRecord, pods: u32) -> Option<&crate::model::DensityResult> {
    r.density.iter().find(|d| d.pods == pods && d.ok)
}

/// Per measure and configuration, over the successful runs.
pub fn aggregate(
    records: &[RunRecord],
    measures: &[Measure],
) -> Vec<BTreeMap<Config, Option<Summary>>> {
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
                    (c, summarise(&values))
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

/// "median [lo–hi]" in display units; a point interval shows the median alone.
pub fn cell(s: Option<Summary>, scale: f64) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.lo == s.hi => num(s.median * scale),
        Some(s) => format!(
            "{} [{}–{}]",
            num(s.median * scale),
            num(s.lo * scale),
            num(s.hi * scale)
        ),
    }
}

/// The table: one row per configuration, one column per measure, and one row per ratio
/// against native.
pub fn table(
    measures: &[&Measure],
    aggregated: &[BTreeMap<Config, Option<Summary>>],
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
        let n = aggregated
            .iter()
            .filter_map(|a| a[&c].map(|s| s.n))
            .max()
            .unwrap_or(0);
        let _ = write!(out, "| {c} (n={n}) |");
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

/// Plain sentences comparing arak with native and with static: a difference is named only
/// when the two intervals of the median do not overlap, each from two repetitions or more;
/// the rest are "not separable".
pub fn verdict(
    measures: &[Measure],
    aggregated: &[BTreeMap<Config, Option<Summary>>],
) -> Vec<String> {
    let mut out = Vec::new();
    for other in [Config::Native, Config::Static] {
        let mut inseparable = Vec::new();
        for (m, a) in measures.iter().zip(aggregated) {
            let (Some(arak), Some(o)) = (a[&Config::Arak], a[&other]) else {
                continue;
            };
            if !arak.separable(&o) {
                inseparable.push(m.name.clone());
                continue;
            }
            let better = match m.better {
                Better::Lower => arak.median < o.median,
                Better::Higher => arak.median > o.median,
            };
            out.push(format!(
                "arak is **{}** than {other} on {}: {} vs {} {}{}",
                if better { "better" } else { "worse" },
                m.name,
                cell(Some(arak), m.scale),
                cell(Some(o), m.scale),
                m.unit,
                ratio(Some(arak), Some(o)).map_or(String::new(), |r| format!(" (×{})", num(r)))
            ));
        }
        if !inseparable.is_empty() {
            out.push(format!(
                "arak and {other} are not separable on: {}",
                inseparable.join(", ")
            ));
        }
    }
    out
}

/// A run disturbed by other work: its 1-minute load average above twice the cores at its
/// start or end.
pub fn disturbed(r: &RunRecord, cores: f64) -> bool {
    [r.load_average_start, r.load_average_end]
        .iter()
        .flatten()
        .any(|l| l[0] > 2.0 * cores)
}

/// Result directories merged into one set of runs.
pub struct Merged {
    pub experiment: Experiment,
    /// Every directory's experiment, in the order given.
    pub parts: Vec<(PathBuf, Experiment, Option<CapacitySweep>)>,
    pub records: Vec<RunRecord>,
    /// notes.md of each directory that has one.
    pub notes: Vec<String>,
}

/// Fields of two experiments' parameters that differ, by name.
pub fn differing_params(a: &Experiment, b: &Experiment) -> Vec<String> {
    let (Ok(va), Ok(vb)) = (
        serde_json::to_value(&a.params),
        serde_json::to_value(&b.params),
    ) else {
        return vec!["params".into()];
    };
    let empty = serde_json::Map::new();
    let (ma, mb) = (
        va.as_object().unwrap_or(&empty),
        vb.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = ma.keys().chain(mb.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| ma.get(*k) != mb.get(*k))
        .map(|k| format!("{k} ({} vs {})", fmt_value(ma.get(k)), fmt_value(mb.get(k))))
        .collect()
}

fn fmt_value(v: Option<&serde_json::Value>) -> String {
    v.map_or("absent".into(), |v| v.to_string())
}

/// Refuses to merge experiments of different scenarios or parameters.
pub fn check_mergeable(parts: &[(PathBuf, Experiment)]) -> Result<()> {
    let Some((first_dir, first)) = parts.first() else {
        return Err(Error::Invalid("no results directory given".into()));
    };
    for (dir, e) in &parts[1..] {
        if e.params.scenario != first.params.scenario {
            return Err(Error::Invalid(format!(
                "cannot merge {} (scenario {}) with {} (scenario {}): one report is about one scenario",
                dir.display(),
                e.params.scenario,
                first_dir.display(),
                first.params.scenario
            )));
        }
        let diff = differing_params(first, e);
        if !diff.is_empty() {
            return Err(Error::Invalid(format!(
                "cannot merge {} with {}: their {} parameters differ: {} (run the later batch with the first one's parameters, e.g. --capacity {})",
                dir.display(),
                first_dir.display(),
                first.params.scenario,
                diff.join(", "),
                first.params.capacity_rps
            )));
        }
    }
    Ok(())
}

pub fn load(dirs: &[PathBuf]) -> Result<Merged> {
    let mut experiments = Vec::new();
    for dir in dirs {
        let path = dir.join("experiment.json");
        let experiment: Experiment = read_json(&path).map_err(|e| match e {
            Error::Parse { path, message } => Error::Parse {
                message: format!(
                    "{message} (a directory of the old step-profile runner has no scenario; it cannot be reported by this version)"
                ),
                path,
            },
            e => e,
        })?;
        experiments.push((dir.clone(), experiment));
    }
    check_mergeable(&experiments)?;
    let mut parts = Vec::new();
    let mut records: Vec<RunRecord> = Vec::new();
    let mut notes = Vec::new();
    for (dir, experiment) in experiments {
        let capacity_path = dir.join("capacity.json");
        let capacity = if capacity_path.is_file() {
            Some(read_json(&capacity_path)?)
        } else {
            None
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(Error::io(format!("reading {}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("run-") && n.ends_with(".json"))
            })
            .collect();
        files.sort();
        for f in files {
            let mut r: RunRecord = read_json(&f)?;
            // Repetitions count on across directories, per configuration.
            r.rep = records.iter().filter(|x| x.config == r.config).count() as u32 + 1;
            r.index = records.len() as u32 + 1;
            records.push(r);
        }
        if let Ok(n) = std::fs::read_to_string(dir.join("notes.md")) {
            notes.push(n.trim().to_owned());
        }
        parts.push((dir, experiment, capacity));
    }
    if records.is_empty() {
        return Err(Error::Invalid(format!(
            "{} hold no run-*.json",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(Merged {
        experiment: parts[0].1.clone(),
        parts,
        records,
        notes,
    })
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
    use crate::model::{ClassLatency, Scenario, ScenarioParams, StressResult};

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

    fn p99_only(records: &[RunRecord]) -> Vec<Measure> {
        measures(records)
            .into_iter()
            .filter(|m| m.name == "mutating P99")
            .collect()
    }

    fn experiment(capacity_rps: f64) -> Experiment {
        Experiment {
            params: ScenarioParams {
                scenario: Scenario::Overload,
                capacity_rps,
                capacity_source: "given (--capacity)".into(),
                load_factor: 1.3,
                rate_rps: (capacity_rps * 1.3) as u32,
                low_rps: None,
                measured_s: 180,
                step_to_rps: None,
                warmup_timeout_s: 420,
                warmup_s: None,
                tested_nodes: 5,
                apiservers: 3,
                apiserver_scrape_s: 5,
                arak_interval_s: 5,
                density_pods: vec![],
            },
            hypothesis: Scenario::Overload.hypothesis().into(),
            started_utc: String::new(),
            command: String::new(),
            reps: 2,
            configs: Config::ALL.to_vec(),
            warmup_command: String::new(),
            stress_command: String::new(),
            density_pods: vec![],
            density_command: None,
            arak_command: String::new(),
            arak_policy: serde_json::Value::Null,
            versions: BTreeMap::new(),
            machine: BTreeMap::new(),
        }
    }

    #[test]
    fn ratio_against_native_and_its_missing_cases() {
        let s = |m| summarise(&[m]);
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
        let ms = p99_only(&records);
        let agg = aggregate(&records, &ms);
        assert_eq!(agg[0][&Config::Native].unwrap().median, 3.0);
        assert_eq!(agg[0][&Config::Arak].unwrap().median, 1.0);
        assert_eq!(agg[0][&Config::Static], None);
    }

    #[test]
    fn table_shows_medians_intervals_and_ratios() {
        let records = vec![
            run(Config::Native, 1, 2.0, Status::Ok),
            run(Config::Native, 2, 4.0, Status::Ok),
            run(Config::Static, 1, 1.5, Status::Ok),
            run(Config::Arak, 1, 0.75, Status::Ok),
        ];
        let ms = p99_only(&records);
        let agg = aggregate(&records, &ms);
        let text = table(&ms.iter().collect::<Vec<_>>(), &agg, &Config::ALL);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "| configuration | mutating P99 (ms) |");
        // Two repetitions: the resampled medians are either value or their mean.
        assert_eq!(lines[2], "| native (n=2) | 3000 [2000–4000] |");
        assert_eq!(lines[3], "| static (n=1) | 1500 |");
        assert_eq!(lines[5], "| *static / native* | ×0.50 |");
        assert_eq!(lines[6], "| *arak / native* | ×0.25 |");
    }

    #[test]
    fn the_verdict_names_only_separated_differences() {
        let mut records = Vec::new();
        for (i, (n, s, a)) in [(2.0, 0.5, 1.0), (2.1, 0.55, 1.9), (1.9, 0.45, 0.4)]
            .into_iter()
            .enumerate()
        {
            let rep = i as u32 + 1;
            records.push(run(Config::Native, rep, n, Status::Ok));
            records.push(run(Config::Static, rep, s, Status::Ok));
            records.push(run(Config::Arak, rep, a, Status::Ok));
        }
        let ms = p99_only(&records);
        let agg = aggregate(&records, &ms);
        let v = verdict(&ms, &agg);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].starts_with("arak and native are not separable on: mutating P99"));
        assert!(v[1].starts_with("arak and static are not separable"));
        // A tight arak far below native separates.
        for r in records.iter_mut().filter(|r| r.config == Config::Arak) {
            r.stress
                .as_mut()
                .unwrap()
                .classes
                .get_mut("mutating")
                .unwrap()
                .p99_s = Some(0.5);
        }
        let agg = aggregate(&records, &ms);
        let v = verdict(&ms, &agg);
        assert!(
            v[0].starts_with("arak is **better** than native on mutating P99: 500 vs 2000"),
            "{v:?}"
        );
    }

    #[test]
    fn merging_refuses_other_scenario_parameters() {
        let a = (PathBuf::from("a"), experiment(500.0));
        let b = (PathBuf::from("b"), experiment(500.0));
        assert!(check_mergeable(&[a.clone(), b]).is_ok());
        let c = (PathBuf::from("c"), experiment(600.0));
        let err = check_mergeable(&[a, c]).unwrap_err().to_string();
        assert!(err.contains("cannot merge c with a"), "{err}");
        assert!(err.contains("capacity_rps (500.0 vs 600.0)"), "{err}");
        assert!(err.contains("rate_rps (650 vs 780)"), "{err}");
        assert!(check_mergeable(&[]).is_err());
    }

    /// Results written before `--apiservers` and `--apiserver-scrape-s` existed ran three
    /// apiservers scraped every 5 s, and must not merge with a one-apiserver run.
    #[test]
    fn older_results_read_as_three_apiservers_and_do_not_merge_with_one() {
        let old = experiment(500.0);
        let mut json = serde_json::to_value(&old).unwrap();
        let params = json["params"].as_object_mut().unwrap();
        params.remove("apiservers");
        params.remove("apiserver_scrape_s");
        let read: Experiment = serde_json::from_value(json).unwrap();
        assert_eq!(read.params.apiservers, 3);
        assert_eq!(read.params.apiserver_scrape_s, 5);
        let mut one = experiment(500.0);
        one.params.apiservers = 1;
        one.params.apiserver_scrape_s = 15;
        let err = check_mergeable(&[(PathBuf::from("old"), read), (PathBuf::from("new"), one)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("apiservers (3 vs 1)"), "{err}");
    }

    #[test]
    fn disturbed_runs_have_a_high_load_at_an_end() {
        let mut r = run(Config::Native, 1, 1.0, Status::Ok);
        r.load_average_start = Some([3.0, 1.0, 1.0]);
        r.load_average_end = Some([3.9, 1.0, 1.0]);
        assert!(!disturbed(&r, 2.0));
        r.load_average_end = Some([4.5, 1.0, 1.0]);
        assert!(disturbed(&r, 2.0));
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
