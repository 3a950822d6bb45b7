//! Open-loop CRUD load generator for kube-apiserver, with per-verb latency histograms.
//!
//! `stress-test [OPTIONS]` prepares labelled objects, sends a weighted mix of GET, LIST, POST,
//! PUT, PATCH and DELETE at scheduled times, reports counts and latencies, and removes what it
//! created. `stress-test cleanup` removes what earlier runs left. `stress-test density` measures
//! pod startup latency and scheduling throughput as ClusterLoader2 does.

mod arrivals;
mod cluster;
mod cpu;
mod density;
mod lifecycle;
mod load;
mod mix;
mod objects;
mod profile;
mod report;

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use crate::arrivals::ArrivalProcess;
use crate::cluster::{ApiClient, ConnectArgs};
use crate::lifecycle::{CleanupScope, SetupPlan};
use crate::load::{Load, Schedule};
use crate::mix::{Mix, Resource, Verb};
use crate::objects::Naming;
use crate::profile::RateProfile;
use crate::report::Report;

/// Exit codes, so scripts can tell failures apart.
mod exit {
    /// Bad arguments, mix or profile: nothing was sent.
    pub const USAGE: u8 = 2;
    /// The apiserver could not be reached or refused us at the start.
    pub const UNREACHABLE: u8 = 3;
    /// Setup failed (what it created was removed).
    pub const SETUP: u8 = 4;
    /// The run's objects could not all be removed.
    pub const CLEANUP: u8 = 5;
    /// The report file could not be written (the report was still printed).
    pub const REPORT: u8 = 6;
    /// `density`: not every pod was Running by --timeout (the report was still printed).
    pub const TIMEOUT: u8 = 7;
    /// Stopped by Ctrl-C (report and cleanup were still done).
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser, Debug)]
#[command(
    name = "stress-test",
    version,
    about = "Open-loop CRUD load generator for kube-apiserver",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    connect: ConnectArgs,
    /// Threads that send and receive. One (the default) runs everything on the main thread,
    /// which costs the least CPU per request: no wake-ups across threads. More only help
    /// past what one core can send.
    #[arg(long, global = true, default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: u16,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Remove every object earlier runs left behind (everything labelled arak.io/stress-test).
    Cleanup {
        /// Only this run's objects.
        #[arg(long)]
        run_id: Option<String>,
        /// Give up if objects remain after this long.
        #[arg(long, default_value = "120s", value_parser = parse_duration_arg)]
        wait: Duration,
    },
    /// Print the built-in mix as YAML (a starting point for --mix).
    DefaultMix,
    /// Pod startup latency and scheduling throughput of N pause pods (ClusterLoader2's
    /// PodStartupLatency and SchedulingThroughput), printed as JSON.
    Density(density::DensityArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A table for a terminal.
    Table,
    /// The JSON report.
    Json,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Workload mix: YAML list of {verb, resource, weight} (default: the built-in mix).
    #[arg(long)]
    mix: Option<PathBuf>,
    /// Target requests per second (ignored with --profile).
    #[arg(long, default_value_t = 100.0, value_parser = parse_rps_arg)]
    rps: f64,
    /// Rate over time: `steps:100,500,1000@60s`, `ramp:100-2000@300s`, `const:500@2m`,
    /// joined with `+`.
    #[arg(long, value_parser = parse_profile_arg)]
    profile: Option<RateProfile>,
    /// Run length (default 60s, or the profile's length); a profile is cut or its last rate held.
    #[arg(long, value_parser = parse_positive_duration_arg)]
    duration: Option<Duration>,
    /// Arrival process.
    #[arg(long, value_enum, default_value_t = ArrivalProcess::Poisson)]
    arrivals: ArrivalProcess,
    /// Most requests in flight; arrivals beyond it are dropped and counted, not delayed.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_inflight: u32,
    /// Timeout of every request.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration_arg)]
    timeout: Duration,
    /// Bytes of padding per object (configmap/secret data, an annotation elsewhere).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=200_000))]
    padding_bytes: u32,
    /// Namespaces to spread namespaced objects over.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    namespaces: u32,
    /// Objects per kind (and namespace) that GET, PUT and PATCH address.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pool_size: u32,
    /// Objects per kind made up front for DELETE (default: 10 s of DELETEs at the peak rate).
    #[arg(long)]
    delete_reserve: Option<u32>,
    /// Seed for arrivals and choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Also write the JSON report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Also measure this process's CPU during the load (the apiserver's pid), to compare with
    /// the generator's own.
    #[arg(long)]
    watch_pid: Option<u32>,
    /// Leave the run's objects in place (remove them later with `stress-test cleanup --run-id`).
    #[arg(long)]
    keep: bool,
    /// How long cleanup may wait for the run's objects to disappear.
    #[arg(long, default_value = "120s", value_parser = parse_duration_arg)]
    cleanup_wait: Duration,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    profile::parse_duration(s).map_err(|e| e.to_string())
}

/// A duration that must not be zero (a run length or a timeout).
fn parse_positive_duration_arg(s: &str) -> Result<Duration, String> {
    match parse_duration_arg(s)? {
        d if d.is_zero() => Err("must be more than 0".to_owned()),
        d => Ok(d),
    }
}

fn parse_rps_arg(s: &str) -> Result<f64, String> {
    let rps: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of requests per second"))?;
    if !(rps > 0.0 && rps <= profile::MAX_RPS) {
        return Err(format!(
            "must be more than 0 and at most {} requests per second",
            profile::MAX_RPS
        ));
    }
    Ok(rps)
}

fn parse_profile_arg(s: &str) -> Result<RateProfile, String> {
    RateProfile::parse(s).map_err(|e| e.to_string())
}

/// An error with the exit code it should end the process with.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn fail(code: u8) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { code, error }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    // kube logs every failed request at error level; the report counts them.
                    "warn,stress_test=info,kube_client::client::builder=off",
                )
            }),
        )
        .init();
    let mut rt = if cli.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        rt.worker_threads(usize::from(cli.workers));
        rt
    };
    rt.enable_all();
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async_main(cli));
    // Request tasks still waiting on a dead server must not hold the process open.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

async fn async_main(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Some(Command::DefaultMix) => {
            print!("{}", Mix::default_mix().to_yaml());
            Ok(0)
        }
        Some(Command::Cleanup { run_id, wait }) => {
            let (api, _) = connect(&cli.connect).await?;
            let scope = match run_id {
                Some(id) => CleanupScope::Run(id),
                None => CleanupScope::AllRuns,
            };
            // Pods too: `density` may put them in a namespace that is not the run's.
            let kinds: Vec<Resource> = Resource::writable().chain([Resource::Pods]).collect();
            let summary = lifecycle::cleanup(&api, &scope, &kinds, cli.run.timeout, wait)
                .await
                .map_err(fail(exit::CLEANUP))?;
            report_cleanup(&summary);
            Ok(0)
        }
        Some(Command::Density(args)) => density::run(args, &cli.connect).await,
        None => run(cli.run, &cli.connect).await,
    }
}

fn report_cleanup(summary: &lifecycle::CleanupSummary) {
    eprintln!(
        "cleanup: removed {} labelled objects; none left",
        summary.found
    );
    for (kind, why) in &summary.unchecked {
        eprintln!("cleanup: could not check {kind}: {why}");
    }
}

/// Kinds a run with `mix` may have created objects of.
fn created_kinds(mix: &Mix) -> Vec<Resource> {
    let mut kinds: Vec<Resource> = mix
        .resources()
        .into_iter()
        .filter(|r| !r.is_read_only())
        .collect();
    kinds.push(Resource::Namespaces);
    // The deployment controller makes ReplicaSets that carry the template's run label.
    if kinds.contains(&Resource::Deployments) {
        kinds.push(Resource::ReplicaSets);
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Builds the client and checks the apiserver answers, within seconds.
async fn connect(args: &ConnectArgs) -> Result<(ApiClient, report::IdentityReport), Failure> {
    let api = ApiClient::new(args).await.map_err(fail(exit::USAGE))?;
    let identity = api
        .identity(args.connect_timeout + Duration::from_secs(5))
        .await
        .map_err(fail(exit::UNREACHABLE))?;
    Ok((api, identity))
}

fn warn_if_masters(identity: &report::IdentityReport) {
    if identity.system_masters {
        let bar = "!".repeat(78);
        eprintln!(
            "{bar}\n!! WARNING: the identity {:?} is in system:masters.\n\
             !! Its requests bypass --max-requests-inflight and land in APF's exempt level:\n\
             !! they are never queued or rejected with 429, so this run cannot show limits.\n\
             !! Use an ordinary user or service account for load that should be limited.\n{bar}",
            identity.username.as_deref().unwrap_or("?")
        );
        tracing::warn!("identity is in system:masters: inflight limits and APF do not apply");
    }
}

fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mixed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("{:08x}", (mixed ^ (mixed >> 29)) as u32)
}

async fn run(args: RunArgs, connect_args: &ConnectArgs) -> Result<u8, Failure> {
    // Everything that can be wrong with the request is refused before the first request.
    let mix = match &args.mix {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the mix {}", path.display()))
                .map_err(fail(exit::USAGE))?;
            Mix::from_yaml(&text)
                .with_context(|| format!("in the mix {}", path.display()))
                .map_err(fail(exit::USAGE))?
        }
        None => Mix::default_mix(),
    };
    // Opened (and truncated) now, so an unwritable path is refused before the run, not after.
    let report_file = match &args.report {
        Some(path) => Some(
            std::fs::File::create(path)
                .with_context(|| format!("--report {}: cannot write there", path.display()))
                .map_err(fail(exit::USAGE))?,
        ),
        None => None,
    };
    let profile = match (args.profile.clone(), args.duration) {
        (Some(p), Some(d)) => p.fit_to(d),
        (Some(p), None) => p,
        (None, d) => RateProfile::constant(args.rps, d.unwrap_or(Duration::from_secs(60))),
    };
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });

    let (api, identity) = connect(connect_args).await?;
    warn_if_masters(&identity);

    let naming = Naming {
        run_id: new_run_id(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::warn!("interrupted: stopping arrivals, then reporting and cleaning up");
            let _ = stop_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "interrupted again: leaving now; run `stress-test cleanup` to remove leftovers"
                );
                std::process::exit(i32::from(exit::INTERRUPTED));
            }
        }
    });
    let scope = CleanupScope::Run(naming.run_id.clone());
    let kinds = created_kinds(&mix);
    let total_weight = mix.total_weight();
    let delete_weight: f64 = mix
        .entries()
        .iter()
        .filter(|e| e.verb == Verb::Delete)
        .map(|e| e.weight)
        .fold(0.0, f64::max);
    let delete_reserve = args.delete_reserve.map(|r| r as usize).unwrap_or_else(|| {
        (profile.peak_rps() * delete_weight / total_weight * 10.0).ceil() as usize
    });
    let plan = SetupPlan {
        namespaces: args.namespaces as usize,
        pool_size: args.pool_size as usize,
        delete_reserve: delete_reserve.min(5000),
        padding: "x".repeat(args.padding_bytes as usize),
        request_timeout: args.timeout,
    };
    tracing::info!(
        run_id = %naming.run_id,
        apiserver = %api.url,
        user = identity.username.as_deref().unwrap_or("?"),
        "preparing objects (label {}={})",
        objects::RUN_LABEL,
        naming.run_id
    );

    let mut setup_rx = stop_rx.clone();
    let prepared = tokio::select! {
        r = lifecycle::setup(&api, &mix, &naming, &plan) => r,
        _ = setup_rx.wait_for(|s| *s) => Err(anyhow::anyhow!("interrupted during setup")),
    };
    let prepared = match prepared
        .and_then(|p| Load::new(api.clone(), &mix, &p, &naming, &plan.padding, args.timeout))
    {
        Ok(load) => load,
        Err(e) => {
            let cleaned =
                lifecycle::cleanup(&api, &scope, &kinds, args.timeout, args.cleanup_wait).await;
            let e = match cleaned {
                Ok(_) => e.context("setup failed (what it had created was removed)"),
                Err(ce) => e.context(format!(
                    "setup failed, and so did removing what it had created ({ce:#})"
                )),
            };
            return Err(fail(exit::SETUP)(e));
        }
    };
    let load = Arc::new(prepared);

    let schedule = Schedule {
        profile: profile.clone(),
        process: args.arrivals,
        seed,
        max_inflight: args.max_inflight as usize,
    };
    tracing::info!(
        profile = %profile.describe(),
        expected_requests = profile.expected_arrivals().round(),
        "sending"
    );
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let cpu_meter = cpu::CpuMeter::start(args.watch_pid);
    let end = load::run(load.clone(), &mix, &schedule, stop_rx).await;

    let (overall, by_verb, by_verb_resource) =
        report::build_rows(&load.entries(), &load.tallies(), end.elapsed);
    let cpu = cpu_meter.finish(overall.sent);
    let report = Report {
        run_id: naming.run_id.clone(),
        apiserver: api.url.clone(),
        identity,
        started_unix_s,
        elapsed_s: end.elapsed.as_secs_f64(),
        profile: profile.describe(),
        arrivals: args.arrivals,
        target_requests: profile.expected_arrivals(),
        max_inflight: args.max_inflight as usize,
        request_timeout_s: args.timeout.as_secs_f64(),
        interrupted: end.interrupted,
        cpu,
        overall,
        by_verb,
        by_verb_resource,
    };
    let json = serde_json::to_string_pretty(&report).expect("report serialises");
    let mut report_error = None;
    if let (Some(path), Some(mut file)) = (&args.report, report_file)
        && let Err(e) = writeln!(file, "{json}")
    {
        report_error = Some(anyhow::anyhow!(
            "writing the report to {}: {e}",
            path.display()
        ));
    }
    match args.output {
        Output::Json => println!("{json}"),
        Output::Table => print!("{}", report.table()),
    }

    if args.keep {
        eprintln!(
            "kept the run's objects; remove them with `stress-test cleanup --run-id {}`",
            naming.run_id
        );
    } else {
        tracing::info!("removing the run's objects");
        match lifecycle::cleanup(&api, &scope, &kinds, args.timeout, args.cleanup_wait).await {
            Ok(summary) => report_cleanup(&summary),
            Err(e) => return Err(fail(exit::CLEANUP)(e)),
        }
    }
    if let Some(e) = report_error {
        return Err(fail(exit::REPORT)(e));
    }
    Ok(if end.interrupted {
        exit::INTERRUPTED
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clap error for `args`, which must be refused.
    fn refused(args: &[&str]) -> String {
        let argv = std::iter::once("stress-test").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => panic!("{args:?} accepted: {cli:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn refuses_bad_rates_and_durations_naming_the_flag() {
        for (args, flag) in [
            (&["--rps", "0"][..], "--rps"),
            (&["--rps", "1e12"], "--rps"),
            (&["--rps=-3"], "--rps"),
            (&["--rps", "NaN"], "--rps"),
            (&["--duration", "0s"], "--duration"),
            (&["--timeout", "0s"], "--timeout"),
            (&["--timeout", "1e30h"], "--timeout"),
            (&["--connect-timeout", "0ms"], "--connect-timeout"),
            (&["--profile", "const:1e12@1s"], "--profile"),
            (&["--workers", "0"], "--workers"),
        ] {
            let msg = refused(args);
            assert!(msg.contains(flag), "{args:?}: {msg}");
        }
        let cli = Cli::try_parse_from(["stress-test", "--rps", "600", "--duration", "1s"]).unwrap();
        assert_eq!(
            (cli.run.rps, cli.run.duration),
            (600.0, Some(Duration::from_secs(1)))
        );
    }
}
