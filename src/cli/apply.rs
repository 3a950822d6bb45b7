//! `arak apply`: puts a Recommendation into effect on the control plane's StatefulSets and
//! APF objects, or with `--dry-run` prints what would change and changes nothing. SIGTERM
//! or Ctrl-C stops it at once while nothing is being changed, else after the pod being
//! changed, as `arak run`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use recommender::Recommendation;
use tokio::sync::watch;
use updater::{Outcome, Progress, ReadinessOnly};

use super::Output;
use super::cluster_access::{ApiserverTimeouts, UpdaterArgs, client};
use crate::controller::wait_for_signal;

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
    #[command(flatten)]
    timeouts: ApiserverTimeouts,
    #[command(flatten)]
    updater: UpdaterArgs,
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
    let (management, default_namespace) =
        client(args.kubeconfig.as_deref(), &args.timeouts).await?;
    let tested = match &args.tested_kubeconfig {
        Some(path) => Some(client(Some(path), &args.timeouts).await?.0),
        None => None,
    };
    let options = args.updater.options();
    let namespace = args.namespace.unwrap_or(default_namespace);
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::warn!(
            "stop requested: stopping now, or after the pod being changed; a second signal quits at once"
        );
        let _ = stop_tx.send(true);
        // A person pressing Ctrl-C again means it: the intent annotation covers the rest.
        wait_for_signal().await;
        std::process::exit(130);
    });
    let (progress, mut change) = watch::channel(Progress::Idle {
        since: std::time::Instant::now(),
    });
    let ctx = updater::Context::new(management, tested, namespace, options, ReadinessOnly)
        .with_stop(stop.clone())
        .with_progress(progress);
    // Until the updater changes something, a stop needs no wait, whatever call hangs.
    change.mark_unchanged();
    let stopped_before_a_change = async {
        let _ = stop.wait_for(|stop| *stop).await;
        if change.has_changed().unwrap_or(true) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = run_updater(&ctx, &recommendation, args.dry_run, args.output) => result,
        () = stopped_before_a_change => bail!("stopped by a signal; nothing was changed"),
    }
}

/// The plan with `dry_run`, else the change, printed; an error unless it took effect.
async fn run_updater(
    ctx: &updater::Context<ReadinessOnly>,
    recommendation: &Recommendation,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<()> {
    if dry_run {
        let plan = updater::plan(ctx, recommendation).await?;
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
            Output::Table => print!("{}", plan.render()),
        }
        return Ok(());
    }
    let outcome = updater::apply(ctx, recommendation).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
        Output::Table => match &outcome {
            Outcome::Unchanged { plan } => print!("already in effect\n{}", plan.render()),
            Outcome::Applied { plan } => print!("applied\n{}", plan.render()),
            Outcome::Rejected(_) | Outcome::Interrupted { .. } => {}
        },
    }
    if let Outcome::Interrupted {
        unfinished, reason, ..
    } = &outcome
    {
        bail!(
            "interrupted: {reason}; {}",
            if unfinished.is_empty() {
                "nothing is left unfinished".to_owned()
            } else {
                format!(
                    "StatefulSet(s) {} keep their intent: apply again to finish the change",
                    unfinished.join(", ")
                )
            }
        );
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
