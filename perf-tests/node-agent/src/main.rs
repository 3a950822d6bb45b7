//! Process node agent: registers a Node in a (management) cluster and runs the pods the
//! scheduler binds to it as local processes, so a real StatefulSet controller can roll a
//! control plane made of plain binaries on loopback.

mod backoff;
mod cgroups;
mod container_runtime;
mod error;
mod expansion;
mod insecure_tls;
mod node_config;
mod node_registration;
mod pod_plan;
mod pod_status;
mod pod_supervisor;
mod pod_worker;
mod probe;
mod probe_runner;
mod process;
mod resources;
mod volumes;

use anyhow::Context;
use backoff::BackoffPolicy;
use clap::Parser;
use node_registration::NodeIdentity;
use pod_worker::AgentContext;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Kubeconfig of the cluster this node joins.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Name of the Node object.
    #[arg(long)]
    node_name: String,
    /// Address of the node; every pod on it gets it as pod IP and host IP.
    #[arg(long)]
    node_ip: String,
    /// Where pod logs and emptyDir volumes live.
    #[arg(long)]
    work_dir: PathBuf,
    /// Node labels, `key=value` (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Node taints, `key[=value]:Effect` (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    taints: Vec<String>,
    #[command(flatten)]
    capacity: CapacityArgs,
    #[command(flatten)]
    timing: TimingArgs,
}

/// What the Node advertises to the scheduler; nothing enforces it.
#[derive(Debug, clap::Args)]
struct CapacityArgs {
    #[arg(long, default_value = "4")]
    cpu: String,
    #[arg(long, default_value = "8Gi")]
    memory: String,
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
}

#[derive(Debug, clap::Args)]
struct TimingArgs {
    /// First delay before restarting a crashed container; doubles per quick crash.
    #[arg(long, default_value_t = 1.0)]
    crash_backoff_initial_s: f64,
    #[arg(long, default_value_t = 60.0)]
    crash_backoff_max_s: f64,
    #[arg(long, default_value_t = 10.0)]
    lease_renew_s: f64,
    #[arg(long, default_value_t = 60.0)]
    node_status_s: f64,
}

fn seconds(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("invalid duration {s}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    run(args).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let node = NodeIdentity {
        name: args.node_name.clone(),
        ip: args.node_ip.clone(),
        labels: args
            .labels
            .iter()
            .map(|l| node_config::parse_label(l))
            .collect::<Result<_, _>>()?,
        taints: args
            .taints
            .iter()
            .map(|t| node_config::parse_taint(t))
            .collect::<Result<_, _>>()?,
        capacity: BTreeMap::from([
            ("cpu".to_string(), args.capacity.cpu.clone()),
            ("memory".to_string(), args.capacity.memory.clone()),
            ("pods".to_string(), args.capacity.max_pods.to_string()),
            ("ephemeral-storage".to_string(), "100Gi".to_string()),
        ]),
    };
    let client = client(&args.kubeconfig).await?;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;

    let node_uid = node_registration::register(&client, &node)
        .await
        .context("registering the node")?;
    tracing::info!(node = %node.name, ip = %node.ip, "node registered");
    let heartbeat = tokio::spawn(node_registration::keep_alive(
        client.clone(),
        node,
        node_uid,
        seconds(args.timing.lease_renew_s)?,
        seconds(args.timing.node_status_s)?,
    ));

    let limit_cgroups = cgroups::Cgroups::detect(&format!("arak-node-agent-{}", args.node_name));
    if let Err(reason) = &limit_cgroups {
        tracing::warn!(%reason, "CPU and memory limits will not be enforced");
    }
    let ctx = Arc::new(AgentContext {
        client,
        node_name: args.node_name,
        node_ip: args.node_ip,
        work_dir: args.work_dir,
        search_path: std::env::var("PATH")
            .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
        backoff: BackoffPolicy {
            initial: seconds(args.timing.crash_backoff_initial_s)?,
            max: seconds(args.timing.crash_backoff_max_s)?,
            ..BackoffPolicy::default()
        },
        cgroups: limit_cgroups.clone(),
    });
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let supervisor = tokio::spawn(pod_supervisor::run(ctx, shutdown_rx));

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping pods"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping pods"),
    }
    heartbeat.abort();
    shutdown_tx.send(true)?;
    supervisor.await.context("pod supervisor")?;
    if let Ok(cgroups) = &limit_cgroups {
        cgroups.release();
    }
    tracing::info!("all pod processes stopped");
    Ok(())
}

async fn client(path: &std::path::Path) -> Result<kube::Client, error::Error> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|source| error::Error::Kubeconfig {
            path: path.into(),
            source,
        })?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|source| error::Error::Kubeconfig {
        path: path.into(),
        source,
    })?;
    Ok(kube::Client::try_from(config)?)
}
