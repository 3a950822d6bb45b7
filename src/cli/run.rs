//! `arak run`: the controller. Reads one ControlPlaneTuning and, while this instance holds
//! the leader lease, runs its rounds until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use load_fetcher::config::parse_duration;
use load_fetcher::{ClientOptions, FetchConfig};

use super::cluster_access::{ApiserverTimeouts, UpdaterArgs, client};
use crate::controller;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The ControlPlaneTuning to act on; it lives in the namespace of the StatefulSets.
    #[arg(long, env = "ARAK_TUNING", default_value = "control-plane")]
    tuning: String,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    prometheus: PrometheusArgs,
    #[command(flatten)]
    updater: UpdaterArgs,
    #[command(flatten)]
    leader: LeaderArgs,
    /// /healthz fails once the loop has made no progress for this long: no answer about the
    /// lease, or a round stuck on one step (a liveness probe then restarts arak). It must
    /// exceed the longest step of a change (--pod-ready-timeout, --resize-timeout, --soak,
    /// --rollback-timeout) by four apiserver requests.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    progress_deadline: Duration,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
}

#[derive(Debug, Args)]
struct KubeArgs {
    /// Kubeconfig of the cluster running the control plane's StatefulSets, the
    /// ControlPlaneTuning and the lease (KUBECONFIG or in-cluster when omitted).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig of the tuned cluster itself, whose APF objects change live; without it
    /// APF is left alone.
    #[arg(long)]
    tested_kubeconfig: Option<PathBuf>,
    /// Namespace of the StatefulSets, the ControlPlaneTuning and the lease (the
    /// kubeconfig's or the pod's namespace when omitted).
    #[arg(long, short = 'n', env = "POD_NAMESPACE")]
    namespace: Option<String>,
    #[command(flatten)]
    timeouts: ApiserverTimeouts,
}

#[derive(Debug, Args)]
struct PrometheusArgs {
    /// Prometheus to read the load from when the ControlPlaneTuning names none.
    #[arg(long, env = "PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// YAML file saying which jobs and labels make up each component (see load_fetcher/README.md).
    #[arg(long)]
    fetch_config: Option<PathBuf>,
    /// Upper bound for each Prometheus query.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    prometheus_timeout: Duration,
    /// File with a bearer token sent to Prometheus.
    #[arg(long)]
    prometheus_token_file: Option<PathBuf>,
    /// PEM CA bundle to verify Prometheus with (the system roots otherwise).
    #[arg(long)]
    prometheus_ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct LeaderArgs {
    /// Name of the coordination.k8s.io Lease the instances compete for.
    #[arg(long, default_value = "arak")]
    lease_name: String,
    /// This instance's name in the lease: the pod name in a cluster, else host and pid.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a lease stays valid without renewal; a standby takes over after it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// A leader that could not renew for this long starts no change.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// How often the leader renews and a standby tries to acquire.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
enum LogFormat {
    #[default]
    Text,
    Json,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "arak=info,updater=info,load_fetcher=info".into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let l = &args.leader;
    if l.renew_deadline >= l.lease_duration || l.retry_period >= l.renew_deadline {
        bail!(
            "need --retry-period < --renew-deadline < --lease-duration, so a leader stops acting before a standby may take over"
        );
    }
    // A step takes its own timeout plus the requests around it; each may take its bound.
    let step = args.updater.longest_step() + 4 * args.kube.timeouts.request_bound();
    if args.progress_deadline <= step {
        bail!(
            "--progress-deadline {} s would fail /healthz during a healthy change: it must exceed {} s, the longest step of a change (--pod-ready-timeout, --resize-timeout, --soak, --rollback-timeout) plus four apiserver requests (--apiserver-connect-timeout + --apiserver-request-timeout each)",
            args.progress_deadline.as_secs_f64(),
            step.as_secs_f64()
        );
    }
    let fetch_config = match &args.prometheus.fetch_config {
        Some(path) => FetchConfig::from_file(path)?,
        None => FetchConfig::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let timeouts = &args.kube.timeouts;
        let (management, default_namespace) =
            client(args.kube.kubeconfig.as_deref(), timeouts).await?;
        let tested = match &args.kube.tested_kubeconfig {
            Some(path) => Some(client(Some(path), timeouts).await?.0),
            None => None,
        };
        let options = controller::Options {
            tuning: args.tuning,
            prometheus_url: args.prometheus.prometheus_url,
            fetch_config,
            fetch_client: ClientOptions {
                timeout: args.prometheus.prometheus_timeout,
                token_file: args.prometheus.prometheus_token_file,
                ca_file: args.prometheus.prometheus_ca_file,
                ..ClientOptions::default()
            },
            updater: args.updater.options(),
            listen: args.listen,
            lease: args.leader.lease_name,
            identity: args.leader.identity.unwrap_or_else(default_identity),
            lease_duration: args.leader.lease_duration,
            renew_deadline: args.leader.renew_deadline,
            retry_period: args.leader.retry_period,
            progress_deadline: args.progress_deadline,
        };
        let namespace = args.kube.namespace.unwrap_or(default_namespace);
        controller::run(management, tested, namespace, options).await?;
        Ok(())
    })
}

/// Host name and pid: two instances on one machine must not share a lease identity.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "arak".into());
    format!("{host}-{}", std::process::id())
}
