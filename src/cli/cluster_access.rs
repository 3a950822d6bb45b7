//! What `arak apply` and `arak run` share to act on a control plane: the updater's flags
//! and the Kubernetes clients.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use load_fetcher::config::parse_duration;
use updater::{Component, PlanOptions};

/// How the updater changes things.
#[derive(Debug, Args)]
pub struct UpdaterArgs {
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

impl UpdaterArgs {
    pub fn options(self) -> updater::Options {
        updater::Options {
            plan: PlanOptions {
                order: self.order,
                apf_levels: self.apf_levels,
            },
            pod_ready_timeout: self.pod_ready_timeout,
            soak: self.soak,
            resize_timeout: self.resize_timeout,
            rollback_timeout: self.rollback_timeout,
            ..updater::Options::default()
        }
    }
}

/// A client for the kubeconfig (or the default one) and its namespace.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<(Client, String)> {
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
