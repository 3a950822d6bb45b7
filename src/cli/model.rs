//! `arak model`: the queue models from the command line.

use anyhow::Context;
use clap::{Args, Subcommand};
use queue_model::apiserver::{
    ApiserverLoad, ApiserverPrediction, ApiserverSetting, ClassLimits, ClassLoad, predict,
};
use queue_model::mmc::Mmc;
use queue_model::mmck::Mmck;
use queue_model::scheduler::{self, SchedulerLoad, SchedulerSetting};
use serde::Serialize;

use super::Output;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// M/M/c: Poisson arrivals, exponential service, c servers, unbounded queue.
    #[command(allow_negative_numbers = true)]
    Mmc {
        #[command(flatten)]
        queue: QueueArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// M/M/c/K: as M/M/c with room for K requests in all; the rest are blocked.
    #[command(allow_negative_numbers = true)]
    Mmck {
        #[command(flatten)]
        queue: QueueArgs,
        /// K, requests in service plus waiting.
        #[arg(long)]
        capacity: u32,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// kube-apiserver: latency and rejection across concurrency limits (readOnly:mutating 2:1).
    #[command(allow_negative_numbers = true)]
    Apiserver(ApiserverArgs),
    /// kube-scheduler: throughput, bottleneck and pending latency for a client QPS/burst.
    #[command(allow_negative_numbers = true)]
    Scheduler(SchedulerArgs),
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// λ, arrivals per second.
    #[arg(long)]
    arrival_rate: f64,
    /// μ, completions per second of one server.
    #[arg(long)]
    service_rate: f64,
    /// c, servers.
    #[arg(long)]
    servers: u32,
}

#[derive(Debug, Args)]
pub struct ApiserverArgs {
    /// CPU cores of the apiserver.
    #[arg(long, default_value_t = 4.0)]
    cores: f64,
    /// readOnly requests per second (GET, LIST).
    #[arg(long, default_value_t = 1600.0)]
    read_rate: f64,
    /// CPU seconds per readOnly request.
    #[arg(long, default_value_t = 0.002)]
    read_cpu_s: f64,
    /// Off-CPU seconds per readOnly request (etcd, serialisation waits).
    #[arg(long, default_value_t = 0.015)]
    read_non_cpu_s: f64,
    /// Squared coefficient of variation of the readOnly off-CPU time (1: exponential; more:
    /// a heavier tail at the same mean).
    #[arg(long, default_value_t = 1.0)]
    read_non_cpu_scv: f64,
    /// mutating requests per second (POST, PUT, PATCH, DELETE).
    #[arg(long, default_value_t = 300.0)]
    write_rate: f64,
    #[arg(long, default_value_t = 0.005)]
    write_cpu_s: f64,
    #[arg(long, default_value_t = 0.025)]
    write_non_cpu_s: f64,
    #[arg(long, default_value_t = 1.0)]
    write_non_cpu_scv: f64,
    /// APF queue room per class (0: reject at the limit, as --max-requests-inflight alone does).
    #[arg(long, default_value_t = 0)]
    queue_length: u32,
    /// readOnly limits to tabulate: from, to, step; the mutating limit is half of each.
    #[arg(long, num_args = 3, value_names = ["FROM", "TO", "STEP"], default_values_t = [10, 800, 40])]
    read_limits: Vec<u32>,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Pods per second to schedule.
    #[arg(long, default_value_t = 40.0)]
    pod_rate: f64,
    /// Pods per second the scheduling algorithm can place.
    #[arg(long, default_value_t = 300.0)]
    algorithm_rate: f64,
    /// Mutating API requests per scheduled pod.
    #[arg(long, default_value_t = 1.0)]
    requests_per_pod: f64,
    /// --kube-api-qps.
    #[arg(long, default_value_t = 50.0)]
    qps: f64,
    /// --kube-api-burst.
    #[arg(long, default_value_t = 100)]
    burst: u32,
    /// Mutating requests per second the apiserver can give the scheduler (default: unlimited).
    #[arg(long, default_value_t = f64::INFINITY)]
    apiserver_capacity: f64,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Mmc { queue, output } => {
            let metrics =
                Mmc::new(queue.arrival_rate, queue.service_rate, queue.servers)?.metrics();
            print(&metrics, output)
        }
        ModelCommand::Mmck {
            queue,
            capacity,
            output,
        } => {
            let metrics = Mmck::new(
                queue.arrival_rate,
                queue.service_rate,
                queue.servers,
                capacity,
            )?
            .metrics();
            print(&metrics, output)
        }
        ModelCommand::Apiserver(args) => apiserver(&args),
        ModelCommand::Scheduler(args) => {
            let load = SchedulerLoad {
                pod_arrival_rate: args.pod_rate,
                algorithm_rate: args.algorithm_rate,
                requests_per_pod: args.requests_per_pod,
            };
            let setting = SchedulerSetting {
                client_qps: args.qps,
                client_burst: args.burst,
                apiserver_capacity: args.apiserver_capacity,
            };
            print(&scheduler::predict(&load, &setting)?, args.output)
        }
    }
}

/// Prints a flat JSON object, or one `key  value` line per field.
fn print<T: Serialize>(value: &T, output: Output) -> anyhow::Result<()> {
    let json = serde_json::to_value(value)?;
    match output {
        Output::Json => println!("{json}"),
        Output::Table => {
            for (key, value) in json
                .as_object()
                .context("a model result is a JSON object")?
            {
                println!("{key:<22} {value}");
            }
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct CurvePoint {
    read_only_limit: u32,
    mutating_limit: u32,
    #[serde(flatten)]
    prediction: ApiserverPrediction,
}

fn apiserver(args: &ApiserverArgs) -> anyhow::Result<()> {
    let [from, to, step] = args.read_limits[..] else {
        anyhow::bail!("--read-limits takes three numbers: FROM TO STEP");
    };
    if from == 0 || step == 0 || to < from {
        anyhow::bail!("--read-limits {from} {to} {step}: need 1 ≤ FROM ≤ TO and STEP ≥ 1");
    }
    let load = ApiserverLoad {
        read_only: ClassLoad {
            arrival_rate: args.read_rate,
            cpu_s: args.read_cpu_s,
            non_cpu_s: args.read_non_cpu_s,
            non_cpu_scv: args.read_non_cpu_scv,
        },
        mutating: ClassLoad {
            arrival_rate: args.write_rate,
            cpu_s: args.write_cpu_s,
            non_cpu_s: args.write_non_cpu_s,
            non_cpu_scv: args.write_non_cpu_scv,
        },
    };
    let mut curve = Vec::new();
    for read_limit in (from..=to).step_by(step as usize) {
        let write_limit = (read_limit / 2).max(1);
        let setting = ApiserverSetting {
            cores: args.cores,
            read_only: ClassLimits {
                concurrency_limit: read_limit,
                queue_length: args.queue_length,
            },
            mutating: ClassLimits {
                concurrency_limit: write_limit,
                queue_length: args.queue_length,
            },
        };
        curve.push(CurvePoint {
            read_only_limit: read_limit,
            mutating_limit: write_limit,
            prediction: predict(&load, &setting)?,
        });
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string(&curve)?),
        Output::Table => print_curve(&curve, &load, args.cores),
    }
    Ok(())
}

fn print_curve(curve: &[CurvePoint], load: &ApiserverLoad, cores: f64) {
    println!(
        "kube-apiserver on {cores} cores: readOnly {} req/s, mutating {} req/s ({:.2} cores of CPU asked)",
        load.read_only.arrival_rate,
        load.mutating.arrival_rate,
        load.read_only.cpu_demand_cores() + load.mutating.cpu_demand_cores()
    );
    println!(
        "{:>8} {:>8} | {:>9} {:>9} {:>10} | {:>9} {:>9} {:>10} | {:>5}",
        "ro limit",
        "mu limit",
        "ro P50 s",
        "ro P99 s",
        "ro reject",
        "mu P50 s",
        "mu P99 s",
        "mu reject",
        "CPU"
    );
    for point in curve {
        let (ro, mu) = (&point.prediction.read_only, &point.prediction.mutating);
        println!(
            "{:>8} {:>8} | {:>9.4} {:>9.4} {:>10.2e} | {:>9.4} {:>9.4} {:>10.2e} | {:>4.0}%",
            point.read_only_limit,
            point.mutating_limit,
            ro.p50_response_s,
            ro.p99_response_s,
            ro.rejection_probability,
            mu.p50_response_s,
            mu.p99_response_s,
            mu.rejection_probability,
            100.0 * point.prediction.cpu_utilization
        );
    }
}
