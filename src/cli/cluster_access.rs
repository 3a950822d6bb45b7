//! What `arak apply` and `arak run` share to act on a control plane: the updater's flags
//! and the Kubernetes clients.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use load_fetcher::config::parse_duration;
use tower::BoxError;
use tower::util::MapErrLayer;
use updater::{Component, PlanOptions};

use crate::controller::Error;

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
    /// The longest one step of a change may wait (a pod's restart or resize, a soak, a
    /// rollback), not counting the requests it makes.
    pub fn longest_step(&self) -> Duration {
        self.pod_ready_timeout
            .max(self.resize_timeout)
            .max(self.soak)
            .max(self.rollback_timeout)
    }

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

/// How long the apiservers (management and tested) may take: without a bound, one that
/// accepts connections and never answers would hang arak and every signal with it.
#[derive(Debug, Clone, Copy, Args)]
pub struct ApiserverTimeouts {
    /// Upper bound for connecting to an apiserver (TCP and TLS).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    apiserver_connect_timeout: Duration,
    /// Upper bound for an apiserver to take a request and answer it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    apiserver_request_timeout: Duration,
}

impl ApiserverTimeouts {
    /// The longest one request may take, connection included.
    pub fn request_bound(&self) -> Duration {
        self.apiserver_connect_timeout + self.apiserver_request_timeout
    }
}

/// A client for the kubeconfig (or the default one) and its namespace; its errors name the
/// apiserver's address.
pub async fn client(
    kubeconfig: Option<&Path>,
    timeouts: &ApiserverTimeouts,
) -> anyhow::Result<(Client, String)> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => Config::infer().await.context("finding a kubeconfig")?,
    };
    config.connect_timeout = Some(timeouts.apiserver_connect_timeout);
    config.read_timeout = Some(timeouts.apiserver_request_timeout);
    config.write_timeout = Some(timeouts.apiserver_request_timeout);
    // The read timeout then counts from each request, not from when its pooled connection
    // went idle; arak opens no exec or attach session that this would weaken.
    config.reset_reader_on_write = true;
    let namespace = config.default_namespace.clone();
    let address = config.cluster_url.to_string();
    let timeouts = *timeouts;
    let name_the_address = MapErrLayer::new(move |error: BoxError| -> BoxError {
        Box::new(Error::apiserver(&address, &timeouts, error.as_ref()))
    });
    let client = ClientBuilder::try_from(config)
        .context("building the Kubernetes client")?
        .with_layer(&name_the_address)
        .build();
    Ok((client, namespace))
}

impl Error {
    /// A failed request to the apiserver at `address`, said once: a timeout as the bound it
    /// exceeded, anything else as its causes on one line.
    fn apiserver(
        address: &str,
        timeouts: &ApiserverTimeouts,
        error: &(dyn std::error::Error + 'static),
    ) -> Error {
        let address = address.trim_end_matches('/').to_owned();
        let mut causes = Vec::new();
        let mut timed_out = false;
        let mut cause = Some(error);
        while let Some(e) = cause {
            timed_out |= e
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
            let text = e.to_string();
            if !causes.iter().any(|c: &String| c.contains(&text)) {
                causes.push(text);
            }
            cause = e.source();
        }
        let connecting = error
            .downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect);
        match (timed_out, connecting) {
            (true, true) => Error::ApiserverTimeout {
                address,
                what: "accept a connection",
                timeout: timeouts.apiserver_connect_timeout,
            },
            (true, false) => Error::ApiserverTimeout {
                address,
                what: "answer",
                timeout: timeouts.apiserver_request_timeout,
            },
            (false, _) => Error::Apiserver {
                address,
                cause: causes.join(": "),
            },
        }
    }
}
