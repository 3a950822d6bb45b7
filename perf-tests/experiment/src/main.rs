//! `experiment run` compares the test control plane run three ways — `native` (Kubernetes
//! defaults), `static` (over-provisioned) and `arak` (native, tuned by `arak run` in Auto
//! mode) — under the same stress-test and density load; `experiment report` turns the
//! results directory into docs/results.md with SVG plots. `experiment fidelity run` measures
//! arak's apiserver model against a real kube-apiserver and `experiment fidelity report`
//! writes docs/model-fidelity.md. perf-tests/run-experiment wraps them all.

mod density;
mod doc;
mod error;
mod fidelity;
mod model;
mod plots;
mod procs;
mod prom;
mod report;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::model::Config;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every configuration `--reps` times, interleaved, into a timestamped directory.
    Run(RunArgs),
    /// Write docs/results.md (and its SVGs next to it) from a results directory.
    Report {
        /// The directory `run` wrote.
        dir: PathBuf,
        /// Where the report goes; the plots go into the same directory.
        #[arg(long, default_value = "docs/results.md")]
        out: PathBuf,
    },
    /// The model-fidelity harness: `fidelity run` measures the grid, `fidelity report`
    /// predicts it and writes docs/model-fidelity.md.
    #[command(subcommand)]
    Fidelity(FidelityCommand),
}

// Parsed once at start-up: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum FidelityCommand {
    /// Measure the grid on one hosted apiserver into a timestamped directory.
    Run(FidelityArgs),
    /// Calibrate, predict and write the report from a results directory.
    Report {
        /// The directory `fidelity run` wrote.
        dir: PathBuf,
        /// Where the report goes; the plots go into the same directory.
        #[arg(long, default_value = "docs/model-fidelity.md")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct FidelityArgs {
    /// The apiserver's CPU quota (limit) per setting, cores.
    #[arg(long, value_delimiter = ',', default_value = "1,0.5")]
    quotas: Vec<f64>,
    /// Inflight limits READONLY/MUTATING per setting; the first is the one calibrated on.
    #[arg(long, value_delimiter = ',', default_value = "400/200,20/10")]
    limits: Vec<fidelity::Limits>,
    /// Offered load as shares of the estimated capacity.
    #[arg(long, value_delimiter = ',', default_value = "0.2,0.5,0.8,1.1")]
    loads: Vec<f64>,
    /// The loads (at the first limits) the model is calibrated on; the rest are predicted.
    #[arg(long, value_delimiter = ',', default_value = "0.2,0.8")]
    calibration_loads: Vec<f64>,
    /// Request mixes: read, write, list.
    #[arg(long, value_delimiter = ',', default_value = "read,write")]
    mixes: Vec<fidelity::Mix>,
    /// Seconds of load per point, warm-up included.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(15..=600))]
    point_s: u64,
    /// Seconds at the start of each point left out of the measurement.
    #[arg(long, default_value_t = 6)]
    warmup_s: u64,
    /// History samples (5 s each) the calibration needs before it fits (the recommender's
    /// `calibration.min_samples`).
    #[arg(long, default_value_t = 12)]
    min_samples: usize,
    /// Results directory (default: perf-tests/results/<UTC timestamp>-fidelity).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write the report here once the run is done.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Base port of the loopback cluster (it uses base .. base+99).
    #[arg(long, default_value_t = 23000)]
    base_port: u16,
    /// The cluster's state directory.
    #[arg(long, default_value = "/tmp/arak-fidelity")]
    state_dir: PathBuf,
    #[arg(long)]
    stress_test: PathBuf,
    #[arg(long)]
    node_agent: PathBuf,
    /// The repository root (perf-tests/cluster, config/).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Repetitions of each configuration.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=20))]
    reps: u32,
    /// Configurations, in the order each repetition runs them.
    #[arg(long, value_delimiter = ',', default_value = "native,static,arak")]
    configs: Vec<Config>,
    /// Results directory (default: perf-tests/results/<UTC timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The stress-test rate profile (stress-test's `--profile` syntax).
    #[arg(long, default_value = "steps:100,200,300,400@30s")]
    stress_profile: String,
    /// Pod counts for `stress-test density`, one step each after the stress profile.
    #[arg(long, value_delimiter = ',', default_value = "100,300")]
    density_pods: Vec<u32>,
    /// Timeout of each density step (stress-test's duration syntax).
    #[arg(long, default_value = "3m")]
    density_timeout: String,
    /// Base port of the loopback cluster each run starts (it uses base .. base+99).
    #[arg(long, default_value_t = 27000)]
    base_port: u16,
    /// Fake KWOK nodes of the tested cluster (110 pods each).
    #[arg(long, default_value_t = 5)]
    tested_nodes: u32,
    /// Idle seconds between the cluster being up and the load.
    #[arg(long, default_value_t = 20)]
    warmup_s: u64,
    /// arak's round interval (ControlPlaneTuning intervalSeconds).
    #[arg(long, default_value_t = 5)]
    arak_interval_s: u32,
    /// The binaries (perf-tests/run-experiment builds them in release mode and passes them).
    #[arg(long)]
    arak: PathBuf,
    #[arg(long)]
    stress_test: PathBuf,
    #[arg(long)]
    node_agent: PathBuf,
    /// The repository root (perf-tests/cluster, config/).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a unix time (civil-from-days, proleptic Gregorian).
pub fn utc_timestamp(t: f64) -> String {
    let secs = t.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("experiment: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => runtime.block_on(run_command(args)),
        Command::Fidelity(FidelityCommand::Run(args)) => runtime.block_on(fidelity_command(args)),
        Command::Fidelity(FidelityCommand::Report { dir, out }) => fidelity::doc::write(&dir, &out)
            .map(|files| {
                for f in files {
                    println!("wrote {}", f.display());
                }
            }),
        Command::Report { dir, out } => doc::write(&dir, &out).map(|files| {
            for f in files {
                println!("wrote {}", f.display());
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error::Error::Interrupted) => {
            eprintln!("experiment: interrupted; everything started was stopped");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("experiment: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(args: RunArgs) -> error::Result<()> {
    let repo = std::fs::canonicalize(&args.repo)
        .map_err(error::Error::io(format!("{}", args.repo.display())))?;
    if !repo.join("perf-tests/cluster").is_file() {
        return Err(error::Error::Invalid(format!(
            "{} is not the arak repository (no perf-tests/cluster)",
            repo.display()
        )));
    }
    if args.configs.is_empty() {
        return Err(error::Error::Invalid(
            "--configs names no configuration".into(),
        ));
    }
    for (name, path) in [
        ("--arak", &args.arak),
        ("--stress-test", &args.stress_test),
        ("--node-agent", &args.node_agent),
    ] {
        if !path.is_file() {
            return Err(error::Error::Invalid(format!(
                "{name} {}: no such file",
                path.display()
            )));
        }
    }
    let started = run::now();
    let out = args.out.unwrap_or_else(|| {
        repo.join("perf-tests/results")
            .join(utc_timestamp(started).replace(':', ""))
    });
    let command_line = std::env::var("ARAK_EXPERIMENT_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let plan = run::Plan {
        repo,
        out,
        reps: args.reps,
        configs: args.configs,
        stress_profile: args.stress_profile,
        density_pods: args.density_pods,
        density_timeout: args.density_timeout,
        base_port: args.base_port,
        tested_nodes: args.tested_nodes,
        warmup: Duration::from_secs(args.warmup_s),
        arak_interval_s: args.arak_interval_s,
        arak: args.arak,
        stress_test: args.stress_test,
        node_agent: args.node_agent,
        command_line,
    };
    let dir = run::run(plan).await?;
    println!("{}", dir.display());
    Ok(())
}

async fn fidelity_command(args: FidelityArgs) -> error::Result<()> {
    let repo = std::fs::canonicalize(&args.repo)
        .map_err(error::Error::io(format!("{}", args.repo.display())))?;
    if !repo.join("perf-tests/cluster").is_file() {
        return Err(error::Error::Invalid(format!(
            "{} is not the arak repository (no perf-tests/cluster)",
            repo.display()
        )));
    }
    for (name, path) in [
        ("--stress-test", &args.stress_test),
        ("--node-agent", &args.node_agent),
    ] {
        if !path.is_file() {
            return Err(error::Error::Invalid(format!(
                "{name} {}: no such file",
                path.display()
            )));
        }
    }
    if args.quotas.iter().any(|q| !(*q > 0.0 && *q <= 64.0))
        || args.loads.iter().any(|l| !(*l > 0.0 && *l <= 10.0))
        || args.limits.is_empty()
        || args.mixes.is_empty()
        || args.warmup_s + 10 >= args.point_s
    {
        return Err(error::Error::Invalid(
            "--quotas must be in (0, 64], --loads in (0, 10], --limits and --mixes not empty, --warmup-s at least 10 s below --point-s".into(),
        ));
    }
    let out = args.out.unwrap_or_else(|| {
        repo.join("perf-tests/results").join(format!(
            "{}-fidelity",
            utc_timestamp(run::now()).replace(':', "")
        ))
    });
    let command_line = std::env::var("ARAK_EXPERIMENT_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let plan = fidelity::run::Plan {
        repo,
        out,
        quotas: args.quotas,
        limits: args.limits,
        loads: args.loads,
        calibration_loads: args.calibration_loads,
        mixes: args.mixes,
        point_s: args.point_s,
        warmup_s: args.warmup_s,
        min_samples: args.min_samples,
        base_port: args.base_port,
        state_dir: args.state_dir,
        stress_test: args.stress_test,
        node_agent: args.node_agent,
        command_line,
    };
    let dir = fidelity::run::run(plan).await?;
    if let Some(report) = args.report {
        for f in fidelity::doc::write(&dir, &report)? {
            eprintln!("wrote {}", f.display());
        }
    }
    println!("{}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_timestamps() {
        assert_eq!(super::utc_timestamp(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::utc_timestamp(1_764_043_200.0),
            "2025-11-25T04:00:00Z"
        );
        assert_eq!(super::utc_timestamp(951_782_400.0), "2000-02-29T00:00:00Z");
    }
}
