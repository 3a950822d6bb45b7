//! `experiment run --scenario overload` compares the test control plane run three ways —
//! `native` (Kubernetes defaults), `static` (over-provisioned) and `arak` (native, tuned by
//! `arak run` in Auto mode, warmed up first) — under a load above native's capacity, which
//! `experiment capacity` measures; `experiment report` merges results directories of one
//! scenario into docs/results.md with intervals and SVG plots. `experiment fidelity run` measures
//! arak's apiserver model against a real kube-apiserver and `experiment fidelity report`
//! writes docs/model-fidelity.md. perf-tests/run-experiment wraps them all.

mod arak_log;
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
mod slo;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::model::{Config, Scenario, ScenarioParams};

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
    /// Measure native's capacity: a rate sweep until an SLO is missed (capacity.json).
    Capacity(CapacityArgs),
    /// Write docs/results.md (and its SVGs next to it) from results directories of one
    /// scenario with the same parameters, merged.
    Report {
        /// The directories `run` wrote.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
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

/// The tested cluster and the binaries both `run` and `capacity` need.
#[derive(clap::Args)]
struct HarnessArgs {
    /// Base port of the loopback cluster each run starts (it uses base .. base+99).
    #[arg(long, default_value_t = 27000)]
    base_port: u16,
    /// Fake KWOK nodes of the tested cluster (110 pods each).
    #[arg(long, default_value_t = 5)]
    tested_nodes: u32,
    /// kube-apiserver replicas of the tested control plane, one per master (the scheduler
    /// and controller-manager stay on master-0). With one, the apiserver's CPU limit rather
    /// than this shared machine is what binds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=3))]
    apiservers: u32,
    /// The tested apiservers' scrape interval, seconds (timeout one less): an apiserver at
    /// 1.3 x its capacity took 6-9 s to render /metrics here, past the global 4 s timeout,
    /// which left arak and the measures blind.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(2..=120))]
    apiserver_scrape_s: u32,
    /// The binaries (perf-tests/run-experiment builds them in release mode and passes them).
    #[arg(long)]
    stress_test: PathBuf,
    #[arg(long)]
    node_agent: PathBuf,
    /// The repository root (perf-tests/cluster, config/).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
}

/// The capacity sweep.
#[derive(clap::Args)]
struct SweepArgs {
    /// Rates tried in order (stress-test's default mix, the ordinary load user), req/s.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "200,300,400,500,650,800,1000,1250,1600"
    )]
    sweep_rates: Vec<u32>,
    /// Seconds of load per rate (its first 5 s left out).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(15..=600))]
    sweep_point_s: u64,
}

#[derive(clap::Args)]
struct CapacityArgs {
    /// Results directory (default: perf-tests/results/<UTC timestamp>-capacity).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    sweep: SweepArgs,
    #[command(flatten)]
    harness: HarnessArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// What the experiment sets out to show.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// native's capacity, req/s; without it a capacity sweep runs first, into the results.
    #[arg(long)]
    capacity: Option<f64>,
    /// The offered load as a multiple of the capacity.
    #[arg(long, default_value_t = 1.3)]
    load_factor: f64,
    /// day: the load at the cycle's ends (and in the warm-up) as a share of its peak.
    #[arg(long, default_value_t = 0.25)]
    day_low_share: f64,
    /// Length of the measured window (day: of the cycle), seconds.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(30..=3600))]
    measured_s: u64,
    /// After the measured window, change the load to this rate and time the adaptation.
    #[arg(long)]
    step_to: Option<u32>,
    /// Longest warm-up arak gets to converge, seconds (recorded when it times out).
    #[arg(long, default_value_t = 420)]
    warmup_timeout_s: u64,
    /// Warm-up of native and static, seconds (default: the median arak needed so far).
    #[arg(long)]
    warmup_s: Option<u64>,
    /// Repetitions of each configuration.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    reps: u32,
    /// The first repetition's number (and stress-test seed): a later batch merged into the
    /// same report goes on from the earlier one's last, e.g. --reps 2 --first-rep 3.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    first_rep: u32,
    /// Configurations, in the order each repetition runs them (arak first, so native and
    /// static can warm up for the median arak needed).
    #[arg(long, value_delimiter = ',', default_value = "arak,native,static")]
    configs: Vec<Config>,
    /// Results directory (default: perf-tests/results/<UTC timestamp>-<scenario>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Pod counts for `stress-test density` after the window (none by default).
    #[arg(long, value_delimiter = ',')]
    density_pods: Vec<u32>,
    /// Timeout of each density step (stress-test's duration syntax).
    #[arg(long, default_value = "3m")]
    density_timeout: String,
    /// arak's round interval (ControlPlaneTuning intervalSeconds).
    #[arg(long, default_value_t = 5)]
    arak_interval_s: u32,
    #[arg(long)]
    arak: PathBuf,
    #[command(flatten)]
    sweep: SweepArgs,
    #[command(flatten)]
    harness: HarnessArgs,
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
        Command::Capacity(args) => runtime.block_on(capacity_command(args)),
        Command::Fidelity(FidelityCommand::Run(args)) => runtime.block_on(fidelity_command(args)),
        Command::Fidelity(FidelityCommand::Report { dir, out }) => fidelity::doc::write(&dir, &out)
            .map(|files| {
                for f in files {
                    println!("wrote {}", f.display());
                }
            }),
        Command::Report { dirs, out } => doc::write(&dirs, &out).map(|files| {
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

/// The repository root, checked, and the harness with its binaries checked.
fn harness(args: HarnessArgs) -> error::Result<run::Harness> {
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
    Ok(run::Harness {
        repo,
        base_port: args.base_port,
        tested_nodes: args.tested_nodes,
        apiservers: args.apiservers,
        apiserver_scrape_s: args.apiserver_scrape_s,
        stress_test: args.stress_test,
        node_agent: args.node_agent,
    })
}

fn sweep_plan(args: SweepArgs) -> error::Result<run::SweepPlan> {
    if args.sweep_rates.is_empty() || args.sweep_rates.windows(2).any(|w| w[0] >= w[1]) {
        return Err(error::Error::Invalid(
            "--sweep-rates must name rising rates".into(),
        ));
    }
    Ok(run::SweepPlan {
        rates: args.sweep_rates,
        point_s: args.sweep_point_s,
    })
}

fn results_dir(repo: &std::path::Path, suffix: &str) -> PathBuf {
    repo.join("perf-tests/results").join(format!(
        "{}-{suffix}",
        utc_timestamp(run::now()).replace(':', "")
    ))
}

async fn capacity_command(args: CapacityArgs) -> error::Result<()> {
    let harness = harness(args.harness)?;
    let sweep = sweep_plan(args.sweep)?;
    let out = args
        .out
        .unwrap_or_else(|| results_dir(&harness.repo, "capacity"));
    run::capacity(&harness, &sweep, &out).await?;
    println!("{}", out.join("capacity.json").display());
    Ok(())
}

async fn run_command(args: RunArgs) -> error::Result<()> {
    let harness = harness(args.harness)?;
    let sweep = sweep_plan(args.sweep)?;
    if args.configs.is_empty() {
        return Err(error::Error::Invalid(
            "--configs names no configuration".into(),
        ));
    }
    if !args.arak.is_file() {
        return Err(error::Error::Invalid(format!(
            "--arak {}: no such file",
            args.arak.display()
        )));
    }
    if !(args.load_factor > 0.0 && args.load_factor <= 10.0)
        || args.capacity.is_some_and(|c| c.is_nan() || c <= 0.0)
        || !(args.day_low_share > 0.0 && args.day_low_share < 1.0)
    {
        return Err(error::Error::Invalid(
            "--load-factor must be in (0, 10], --capacity above 0 and --day-low-share in (0, 1)"
                .into(),
        ));
    }
    if args.scenario == Scenario::Day && args.step_to.is_some() {
        return Err(error::Error::Invalid(
            "--step-to is for the overload scenario; a day changes its load by itself".into(),
        ));
    }
    let out = args
        .out
        .unwrap_or_else(|| results_dir(&harness.repo, args.scenario.name()));
    let (capacity_rps, capacity_source) = match args.capacity {
        Some(c) => (c, "given (--capacity)".to_owned()),
        None => {
            let swept = run::capacity(&harness, &sweep, &out).await?;
            let c = swept.capacity_rps.ok_or_else(|| {
                error::Error::Invalid(format!(
                    "the capacity sweep found no rate within the SLOs ({}); see {}",
                    swept.stopped_because,
                    out.join("capacity.json").display()
                ))
            })?;
            (c, "sweep (capacity.json)".to_owned())
        }
    };
    let command_line = std::env::var("ARAK_EXPERIMENT_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let rate_rps = (capacity_rps * args.load_factor).round() as u32;
    let plan = run::Plan {
        params: ScenarioParams {
            scenario: args.scenario,
            capacity_rps,
            capacity_source,
            load_factor: args.load_factor,
            rate_rps,
            low_rps: (args.scenario == Scenario::Day)
                .then(|| (f64::from(rate_rps) * args.day_low_share).round() as u32),
            measured_s: args.measured_s,
            step_to_rps: args.step_to,
            warmup_timeout_s: args.warmup_timeout_s,
            warmup_s: args.warmup_s,
            tested_nodes: harness.tested_nodes,
            apiservers: harness.apiservers,
            apiserver_scrape_s: harness.apiserver_scrape_s,
            arak_interval_s: args.arak_interval_s,
            density_pods: args.density_pods,
        },
        harness,
        out,
        reps: args.reps,
        first_rep: args.first_rep,
        configs: args.configs,
        density_timeout: args.density_timeout,
        arak: args.arak,
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
