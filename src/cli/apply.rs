//! `arak apply`: puts a Recommendation into effect on the control plane's StatefulSets and
//! APF objects, or with `--dry-run` prints what would change and changes nothing.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use load_fetcher::config::parse_duration;
use recommender::Recommendation;
use updater::{Component, Options, Outcome, PlanOptions, ReadinessOnly};

use super::Output;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The Recommendation JSON that `arak recommend` wrote.
    #[arg(long)]
    recommendation: PathBuf,
    /// Kubeconfig of the cluster running the control plane's StatefulSets (KUBECONFIG or
    /// in-cluster when omitted).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig of the tuned cluster itself, whose APF objects change live; without it
    /// APF is left alone.
    #[arg(long)]
    tested_kubeconfig: Option<PathBuf>,
    /// Namespace of the StatefulSets (the kubeconfig's namespace when omitted).
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
    /// The order components are changed in.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "apiserver,controller-manager,scheduler"
    )]
    order: Vec<Component>,
    /// PriorityLevelConfigurations whose queue length follows the recommended queue length.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "workload-high,workload-low,global-default"
    )]
    apf_levels: Vec<String>,
    /// How long a component must stay Ready after each pod before the next one.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    soak: Duration,
    /// How long one pod may take to come back Ready with its new template.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pod_ready_timeout: Duration,
    /// How long an in-place resize may take to be reported done.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    resize_timeout: Duration,
    /// How long a rollback may take before it is left to a person.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    rollback_timeout: Duration,
}

pub fn run(args: ApplyArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "updater=info".into()),
        )
        .init();
    let text = std::fs::read_to_string(&args.recommendation)
        .with_context(|| format!("reading {}", args.recommendation.display()))?;
    let recommendation: Recommendation = serde_json::from_str(&text).with_context(|| {
        format!(
            "parsing {} as a Recommendation",
            args.recommendation.display()
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(apply(args, recommendation))
}

async fn apply(args: ApplyArgs, recommendation: Recommendation) -> anyhow::Result<()> {
    let (management, default_namespace) = client(args.kubeconfig.as_deref()).await?;
    let tested = match &args.tested_kubeconfig {
        Some(path) => Some(client(Some(path)).await?.0),
        None => None,
    };
    let options = Options {
        plan: PlanOptions {
            order: args.order,
            apf_levels: args.apf_levels,
        },
        pod_ready_timeout: args.pod_ready_timeout,
        soak: args.soak,
        resize_timeout: args.resize_timeout,
        rollback_timeout: args.rollback_timeout,
        ..Options::default()
    };
    let namespace = args.namespace.unwrap_or(default_namespace);
    let ctx = updater::Context::new(management, tested, namespace, options, ReadinessOnly);
    if args.dry_run {
        let plan = updater::plan(&ctx, &recommendation).await?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
            Output::Table => print!("{}", plan.render()),
        }
        return Ok(());
    }
    let outcome = updater::apply(&ctx, &recommendation).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
        Output::Table => match &outcome {
            Outcome::Unchanged { plan } => print!("already in effect\n{}", plan.render()),
            Outcome::Applied { plan } => print!("applied\n{}", plan.render()),
            Outcome::Rejected(_) => {}
        },
    }
    if let Outcome::Rejected(rejection) = outcome {
        bail!(
            "recommendation rejected and rolled back ({}{}): {}",
            rejection.component,
            rejection
                .stateful_set
                .map(|s| format!(", StatefulSet {s}"))
                .unwrap_or_default(),
            rejection.reason
        );
    }
    Ok(())
}

/// A client for the kubeconfig (or the default one) and its namespace.
async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<(Client, String)> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => Config::infer().await.context("finding a kubeconfig")?,
    };
    let namespace = config.default_namespace.clone();
    Ok((
        Client::try_from(config).context("building the Kubernetes client")?,
        namespace,
    ))
}
