//! `arak simulate`: the demo that needs no cluster. A built-in (or given) day of load runs
//! through a simulated control plane under Kubernetes' defaults, an over-provisioned static
//! setting and arak's recommender; prints how each fared and plots the day.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use recommender::Policy;

use super::Output;
use crate::simulate::{self, BUILT_IN_POLICY_YAML, Options, plots, workload::Workload};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The day's load, YAML (see config/examples/simulate-day.yaml); built in when omitted.
    #[arg(long)]
    workload: Option<PathBuf>,
    /// The policy arak's recommender runs with; its apiservers are the simulated replicas
    /// (see config/examples/simulate-policy.yaml, built in when omitted).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Seed of the simulation's random arrivals: the same seed gives the same day.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Intervals the day is cut into; arak's recommender runs once per interval.
    #[arg(long, default_value_t = 96)]
    intervals: usize,
    /// Seconds of each interval simulated per apiserver replica (enough arrivals for a P99).
    #[arg(long = "sample-s", default_value_t = 30.0)]
    sample_s: f64,
    /// Directory the SVG plots are written to.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let workload = match &args.workload {
        Some(path) => Workload::from_yaml(&read(path)?)
            .with_context(|| format!("workload {}", path.display()))?,
        None => Workload::built_in(),
    };
    let policy = match &args.policy {
        Some(path) => {
            Policy::from_yaml(&read(path)?).with_context(|| format!("policy {}", path.display()))?
        }
        None => Policy::from_yaml(BUILT_IN_POLICY_YAML).context("built-in simulate policy")?,
    };
    let options = Options {
        workload,
        policy,
        intervals: args.intervals,
        sample_window_s: args.sample_s,
        seed: args.seed,
    };
    writable(&args.out)?;
    let mut report = simulate::run(&options)?;
    report.plots = plots::write_all(&report, &args.out)?
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    report.run_time_s = started.elapsed().as_secs_f64();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", report.table()),
    }
    Ok(())
}

/// The plots' directory exists (or is created) and takes a file, checked before the run
/// rather than after minutes of simulation.
fn writable(dir: &Path) -> anyhow::Result<()> {
    let failed = || format!("--out {}: cannot write the plots there", dir.display());
    std::fs::create_dir_all(dir).with_context(failed)?;
    let probe = dir.join(format!(".arak-simulate-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(failed)?;
    std::fs::remove_file(&probe).with_context(failed)?;
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
