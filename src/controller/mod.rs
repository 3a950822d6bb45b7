//! The control loop of `arak run`: while this instance holds the leader lease, a round every
//! interval for one ControlPlaneTuning (fetch → recommend → by mode record, report or apply),
//! with its status, events and metrics.

mod current;
mod http;
mod leader;
mod metrics;
mod reconcile;
mod status;
pub mod tuning;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::{Api, Client};
use load_fetcher::{ClientOptions, FetchConfig};
use recommender::ApiserverSettings;
use recommender::calibrate::ApiserverCalibration;
use tokio::sync::watch;
use updater::ReadinessOnly;

use self::http::Health;
use self::leader::{LeaderElection, Role};
use self::metrics::Metrics;
use self::tuning::ControlPlaneTuning;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("policy: {0}")]
    Policy(#[from] recommender::RecommenderError),
    #[error("fetching the load: {0}")]
    Fetch(#[from] load_fetcher::Error),
    #[error("{0}")]
    Updater(#[from] updater::Error),
    #[error("reading the settings running now: {0}")]
    Current(String),
    #[error("no Prometheus to read the load from: set spec.prometheusUrl or --prometheus-url")]
    NoPrometheus,
    #[error("serving /metrics on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

impl Error {
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// The `Degraded` condition's reason.
    fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubernetesError",
            Error::Policy(_) => "InvalidPolicy",
            Error::Fetch(_) => "FetchFailed",
            Error::Updater(_) => "ApplyFailed",
            Error::Current(_) => "CurrentSettingsUnreadable",
            Error::NoPrometheus => "NoPrometheus",
            Error::Listen { .. } => "ListenFailed",
        }
    }
}

/// Everything `arak run` is told on its command line.
pub struct Options {
    /// The ControlPlaneTuning to act on, in the namespace of the StatefulSets.
    pub tuning: String,
    /// Used when the spec names no Prometheus.
    pub prometheus_url: Option<String>,
    pub fetch_config: FetchConfig,
    pub fetch_client: ClientOptions,
    pub updater: updater::Options,
    pub listen: SocketAddr,
    pub lease: String,
    /// The lease holder's name: the pod name in a cluster.
    pub identity: String,
    pub lease_duration: Duration,
    /// A leader that could not renew within this long stops starting changes.
    pub renew_deadline: Duration,
    /// How often the lease is renewed or, by a standby, tried.
    pub retry_period: Duration,
}

/// The last round's model of each apiserver replica (its calibration and the settings that
/// ran), to predict the window that follows at the load it then measures.
type Predicted = BTreeMap<String, (ApiserverCalibration, ApiserverSettings)>;

/// What a round needs: clients, the recorder, the metrics and the loop's shared state.
pub struct Context {
    pub updater: updater::Context<ReadinessOnly>,
    pub tunings: Api<ControlPlaneTuning>,
    pub tuning: String,
    pub prometheus_url: Option<String>,
    pub fetch_config: FetchConfig,
    pub fetch_client: ClientOptions,
    recorder: Recorder,
    health: Arc<Health>,
    predicted: Mutex<Predicted>,
    /// When the lease was last renewed by this instance; None when it is not the leader.
    renewed: watch::Receiver<Option<Instant>>,
    renew_deadline: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Context {
    fn is_leader(&self) -> bool {
        self.renewed
            .borrow()
            .is_some_and(|at| at.elapsed() < self.renew_deadline)
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Events are best effort: a failure to record one must not fail the round.
    async fn publish(&self, event: Event, reference: &ObjectReference) {
        if let Err(error) = self.recorder.publish(&event, reference).await {
            tracing::warn!(%error, reason = %event.reason, "recording an event");
        }
    }
}

/// Runs until SIGTERM or Ctrl-C: elects a leader, and as leader runs the rounds. A roll in
/// progress is stopped after the pod being changed (finished and soaked, or rolled back):
/// the rest keeps the updater's intent annotations, which the next leader's round finishes
/// or undoes, as it does after a killed process. Then the lease is released.
pub async fn run(
    management: Client,
    tested: Option<Client>,
    namespace: String,
    options: Options,
) -> Result<(), Error> {
    let health = Arc::new(Health::new(Metrics::default()));
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| Error::Listen {
            address: options.listen,
            source,
        })?;
    tracing::info!(address = %options.listen, "serving /metrics, /healthz, /readyz");
    let server = tokio::spawn(http::serve(listener, health.clone()));

    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: stopping after the pod being changed, if any");
        let _ = shutdown_tx.send(true);
    });

    let (renewed_tx, renewed) = watch::channel(None);
    let election = LeaderElection::new(
        management.clone(),
        &namespace,
        &options.lease,
        &options.identity,
        options.lease_duration,
    );
    let elector = tokio::spawn(keep_lease(
        election,
        renewed_tx,
        shutdown.clone(),
        options.retry_period,
        options.renew_deadline,
        health.clone(),
    ));

    let recorder = Recorder::new(
        management.clone(),
        Reporter {
            controller: "arak".into(),
            instance: Some(options.identity.clone()),
        },
    );
    let ctx = Context {
        updater: updater::Context::new(
            management.clone(),
            tested,
            namespace.clone(),
            options.updater,
            ReadinessOnly,
        )
        .with_stop(shutdown.clone()),
        tunings: Api::namespaced(management, &namespace),
        tuning: options.tuning,
        prometheus_url: options.prometheus_url,
        fetch_config: options.fetch_config,
        fetch_client: options.fetch_client,
        recorder,
        health,
        predicted: Mutex::new(Predicted::new()),
        renewed,
        renew_deadline: options.renew_deadline,
        shutdown,
    };
    rounds(&ctx, options.retry_period).await;
    // Dropping the context closes the elector's channel: it then releases the lease.
    drop(ctx);
    let _ = elector.await;
    server.abort();
    Ok(())
}

/// Rounds while leader, until shutdown.
async fn rounds(ctx: &Context, retry_period: Duration) {
    let mut shutdown = ctx.shutdown.clone();
    let mut renewed = ctx.renewed.clone();
    let mut next_round = Instant::now();
    while !ctx.shutting_down() {
        if !ctx.is_leader() {
            // Wait for a change of leadership (or shutdown); the first round runs at once.
            next_round = Instant::now();
            tokio::select! {
                _ = renewed.changed() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        if Instant::now() >= next_round {
            let wait = match ctx.tunings.get_opt(&ctx.tuning).await {
                Ok(Some(tuning)) => match reconcile::reconcile(&tuning, ctx).await {
                    Ok(interval) => interval,
                    Err(error) => {
                        ctx.health.metrics.error("status");
                        tracing::error!(%error, "round failed");
                        retry_period
                    }
                },
                Ok(None) => {
                    tracing::warn!(tuning = %ctx.tuning, "ControlPlaneTuning not found; waiting for it");
                    retry_period
                }
                Err(error) => {
                    tracing::error!(%error, tuning = %ctx.tuning, "reading the ControlPlaneTuning");
                    retry_period
                }
            };
            next_round = Instant::now() + wait;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next_round.into()) => {}
            _ = renewed.changed() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Acquires and renews the lease every `retry_period` and publishes when it last succeeded;
/// on shutdown (after the rounds have stopped) releases it.
async fn keep_lease(
    mut election: LeaderElection,
    renewed: watch::Sender<Option<Instant>>,
    mut shutdown: watch::Receiver<bool>,
    retry_period: Duration,
    renew_deadline: Duration,
    health: Arc<Health>,
) {
    let mut last_role = None;
    while !*shutdown.borrow() {
        match election.try_acquire_or_renew().await {
            Ok(role) => {
                if last_role.as_ref() != Some(&role) {
                    match &role {
                        Role::Leader => {
                            tracing::info!(identity = election.identity(), "leader: acting")
                        }
                        Role::Standby { holder } => tracing::info!(
                            identity = election.identity(),
                            holder = holder.as_deref().unwrap_or("nobody"),
                            "standby: another instance holds the lease"
                        ),
                    }
                }
                let leader = role == Role::Leader;
                health.metrics.leader.set(i64::from(leader));
                health.ready.store(true, Ordering::Relaxed);
                renewed.send_replace(leader.then(Instant::now));
                last_role = Some(role);
            }
            Err(error) => {
                tracing::warn!(%error, "renewing the lease");
                if !election.holds(renew_deadline) {
                    health.metrics.leader.set(0);
                    renewed.send_replace(None);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry_period) => {}
            _ = shutdown.changed() => {}
        }
    }
    // A leader keeps renewing while its last round finishes: the rounds loop checks for
    // shutdown only between rounds, and an apply stops only after its current pod's soak.
    while !renewed.is_closed() && renewed.borrow().is_some() {
        tokio::select! {
            _ = tokio::time::sleep(retry_period) => {}
            _ = renewed.closed() => break,
        }
        match election.try_acquire_or_renew().await {
            Ok(Role::Leader) => {
                renewed.send_replace(Some(Instant::now()));
            }
            Ok(Role::Standby { .. }) => {
                renewed.send_replace(None);
            }
            Err(error) => tracing::warn!(%error, "renewing the lease during shutdown"),
        }
    }
    if let Err(error) = election.release().await {
        tracing::warn!(%error, "releasing the lease");
    }
    health.metrics.leader.set(0);
}

/// Returns at the first SIGTERM or Ctrl-C.
pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
