//! `arak recommend`: one recommendation round on a snapshot file, or on one fetched from
//! Prometheus just before.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use load_fetcher::config::parse_duration;
use load_fetcher::{ClientOptions, FetchConfig, FetchOptions, HistoryOptions, PrometheusSource};
use recommender::recommendation::{ApiserverPrediction, ClientPrediction};
use recommender::snapshot::LoadSnapshot;
use recommender::{CurrentSettings, Policy, Recommendation, recommend};

use super::Output;

#[derive(Debug, Args)]
pub struct RecommendArgs {
    #[command(flatten)]
    source: SnapshotSource,
    /// Policy YAML (see config/examples/policy.yaml).
    #[arg(long)]
    policy: PathBuf,
    /// Settings running now, YAML or JSON; the policy's `current` section when omitted.
    #[arg(long)]
    current: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

/// Where the load comes from: a file, or Prometheus now.
#[derive(Debug, Args)]
struct SnapshotSource {
    /// LoadSnapshot JSON, as `arak fetch --output json` writes it.
    #[arg(long, required_unless_present = "prometheus_url")]
    snapshot: Option<PathBuf>,
    /// Fetch the snapshot from this Prometheus (plain HTTP or system-trusted TLS).
    #[arg(long, conflicts_with = "snapshot")]
    prometheus_url: Option<String>,
    /// With --prometheus-url: the history to calibrate and forecast from.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    history: Duration,
    /// With --prometheus-url: the step of the history series.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    step: Duration,
    /// With --prometheus-url: which jobs and labels make up each component (load_fetcher/README.md).
    #[arg(long)]
    fetch_config: Option<PathBuf>,
}

pub fn run(args: RecommendArgs) -> anyhow::Result<()> {
    let snapshot = match &args.source.prometheus_url {
        Some(url) => fetch(url, &args.source)?,
        None => {
            let path = args
                .source
                .snapshot
                .as_ref()
                .context("--snapshot or --prometheus-url")?;
            let snapshot: LoadSnapshot = serde_json::from_str(&read(path)?)
                .with_context(|| format!("snapshot {}", path.display()))?;
            snapshot
                .validate()
                .with_context(|| format!("snapshot {}", path.display()))?;
            snapshot
        }
    };
    let policy = Policy::from_yaml(&read(&args.policy)?)
        .with_context(|| format!("policy {}", args.policy.display()))?;
    let current: CurrentSettings = match &args.current {
        Some(path) => {
            let current = CurrentSettings::from_yaml(&read(path)?)
                .with_context(|| format!("current settings {}", path.display()))?;
            current
                .validate(&policy)
                .with_context(|| format!("current settings {}", path.display()))?;
            current
        }
        None => policy.current.clone().context(
            "no current settings: give --current FILE or a `current` section in the policy",
        )?,
    };
    let recommendation = recommend(&snapshot, &policy, &current)?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&recommendation)?),
        Output::Table => print!("{}", table(&recommendation)),
    }
    Ok(())
}

/// One snapshot with history from Prometheus, as `arak fetch --history` takes it.
fn fetch(url: &str, source: &SnapshotSource) -> anyhow::Result<LoadSnapshot> {
    let config = match &source.fetch_config {
        Some(path) => FetchConfig::from_file(path)?,
        None => FetchConfig::default(),
    };
    let options = FetchOptions {
        history: Some(HistoryOptions {
            range: source.history,
            step: source.step,
        }),
        ..FetchOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let snapshot = runtime.block_on(async {
        PrometheusSource::new(url, &ClientOptions::default())?
            .fetch(&config, &options)
            .await
    })?;
    Ok(snapshot)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// A person's view: the decision, then one block per replica with current → recommended.
fn table(r: &Recommendation) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "action       {:?}", r.action);
    for reason in &r.hold_reasons {
        let _ = writeln!(w, "  hold:      {reason}");
    }
    let _ = writeln!(w, "feasible     {}", r.feasible);
    let _ = writeln!(w, "confidence   {:?}", r.confidence);
    if let Some(b) = &r.binding_constraint {
        let _ = writeln!(w, "binding      {b}");
    }
    let _ = writeln!(
        w,
        "cost         {} -> {}",
        opt(r.current_cost, 2),
        opt(r.recommended_cost, 2)
    );
    if let Some(u) = &r.runner_up {
        let _ = writeln!(
            w,
            "runner-up    {} at {} cores, cost {:.2}",
            u.replica, u.settings.cpu_cores, u.cost
        );
    }
    let _ = writeln!(
        w,
        "client QPS   {} within apiserver mutating capacity {}/s",
        opt(r.client_qps_total, 0),
        opt(r.apiserver_mutating_capacity_rps, 0)
    );
    for note in &r.notes {
        let _ = writeln!(w, "note         {note}");
    }
    for a in &r.apiservers {
        let _ = writeln!(
            w,
            "\n{} ({}/{})",
            a.target.name, a.target.stateful_set, a.target.container
        );
        let _ = writeln!(
            w,
            "  load planned        readOnly {} /s, mutating {} /s",
            opt(a.planned_read_only_rps, 1),
            opt(a.planned_mutating_rps, 1)
        );
        if let Some(c) = &a.calibration {
            let _ = writeln!(
                w,
                "  calibration         {:?} ({:?}, {} samples): D_ro {:.2} ms, T_ro {:.1} ms, D_mu {:.2} ms, T_mu {:.1} ms, baseline {:.2} cores",
                c.method,
                c.confidence,
                c.samples,
                1e3 * c.read_only.cpu_s,
                1e3 * c.read_only.non_cpu_s,
                1e3 * c.mutating.cpu_s,
                1e3 * c.mutating.non_cpu_s,
                c.baseline_cpu_cores
            );
            if let Some(available) = c.available_cpu_cores {
                let _ = writeln!(
                    w,
                    "  cores at load       served as if {available:.2}, less than the quota (the node's other work): the model counts on no more"
                );
            }
        }
        let (c, n) = (&a.current, &a.recommended);
        let rows = [
            (
                "cpu cores",
                format!("{}", c.cpu_cores),
                format!("{}", n.cpu_cores),
            ),
            (
                "memory GiB",
                format!("{:.2}", c.memory_bytes / GIB),
                format!("{:.2}", n.memory_bytes / GIB),
            ),
            (
                "max-requests-inflight",
                c.max_requests_inflight.to_string(),
                n.max_requests_inflight.to_string(),
            ),
            (
                "max-mutating-inflight",
                c.max_mutating_requests_inflight.to_string(),
                n.max_mutating_requests_inflight.to_string(),
            ),
            (
                "queue length",
                c.queue_length.to_string(),
                n.queue_length.to_string(),
            ),
        ];
        let _ = writeln!(w, "  {:<22}{:>12}{:>14}", "", "current", "recommended");
        for (name, now, next) in rows {
            let _ = writeln!(w, "  {name:<22}{now:>12}{next:>14}");
        }
        if let Some(s) = &a.sized_by {
            let _ = writeln!(
                w,
                "  sized by              readOnly limit {:?}, mutating limit {:?}, queue {:?}",
                s.max_requests_inflight, s.max_mutating_requests_inflight, s.queue_length
            );
        }
        let pred = |p: &Option<ApiserverPrediction>, f: fn(&ApiserverPrediction) -> String| {
            p.as_ref().map_or("-".into(), f)
        };
        type Show = fn(&ApiserverPrediction) -> String;
        let predictions: [(&str, Show); 5] = [
            ("cpu utilisation", |p| format!("{:.3}", p.cpu_utilization)),
            ("readOnly P99 s", |p| opt(p.read_only_p99_s, 4)),
            ("mutating P99 s", |p| opt(p.mutating_p99_s, 4)),
            ("readOnly rejection", |p| {
                format!("{:.1e}", p.read_only_rejection)
            }),
            ("mutating rejection", |p| {
                format!("{:.1e}", p.mutating_rejection)
            }),
        ];
        for (name, f) in predictions {
            let _ = writeln!(
                w,
                "  {name:<22}{:>12}{:>14}",
                pred(&a.predicted_current, f),
                pred(&a.predicted_recommended, f)
            );
        }
    }
    for c in r.schedulers.iter().chain(&r.controller_managers) {
        let _ = writeln!(
            w,
            "\n{} ({}/{})",
            c.target.name, c.target.stateful_set, c.target.container
        );
        let (now, next) = (&c.current, &c.recommended);
        let p99 = |p: &Option<ClientPrediction>| p.as_ref().map_or("-".into(), |p| opt(p.p99_s, 3));
        let rows = [
            (
                "cpu cores",
                format!("{}", now.cpu_cores),
                format!("{}", next.cpu_cores),
            ),
            (
                "memory GiB",
                format!("{:.2}", now.memory_bytes / GIB),
                format!("{:.2}", next.memory_bytes / GIB),
            ),
            (
                "kube-api-qps",
                format!("{}", now.client_qps),
                format!("{}", next.client_qps),
            ),
            (
                "kube-api-burst",
                now.client_burst.to_string(),
                next.client_burst.to_string(),
            ),
            (
                "P99 s (pending/wait)",
                p99(&c.predicted_current),
                p99(&c.predicted_recommended),
            ),
        ];
        let _ = writeln!(w, "  {:<22}{:>12}{:>14}", "", "current", "recommended");
        for (name, a, b) in rows {
            let _ = writeln!(w, "  {name:<22}{a:>12}{b:>14}");
        }
        for note in &c.notes {
            let _ = writeln!(w, "  note: {note}");
        }
    }
    out
}
