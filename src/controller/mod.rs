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
use updater::{Progress, ReadinessOnly};

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
    // A client's failure, said once with no source: kube quotes it again in its own error.
    #[error("apiserver {address} did not {what} within {} s", timeout.as_secs_f64())]
    ApiserverTimeout {
        address: String,
        what: &'static str,
        timeout: Duration,
    },
    #[error("apiserver {address}: {cause}")]
    Apiserver { address: String, cause: String },
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
            Error::ApiserverTimeout { .. } => "ApiserverTimeout",
            Error::Apiserver { .. } => "ApiserverError",
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
    /// `/healthz` fails once the loop has made no progress for this long.
    pub progress_deadline: Duration,
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
    reporter: Reporter,
    health: Arc<Health>,
    predicted: Mutex<Predicted>,
    /// When the lease was last renewed by this instance; None when it is not the leader.
    renewed: watch::Receiver<Option<Instant>>,
    renew_deadline: Duration,
    shutdown: watch::Receiver<bool>,
    /// The updater's progress: whether a round has begun changing things.
    change: watch::Receiver<Progress>,
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

    /// Events are best effort: a failure to record one must not fail the round. Repeats
    /// of one reason fold into a series on the first Event, which keeps the first note.
    async fn publish(&self, event: Event, reference: &ObjectReference) {
        report_failure(self.recorder.publish(&event, reference).await, &event);
    }

    /// An Event of its own, whose note says what this change was: a recorder that has seen
    /// none before folds nothing into an earlier series.
    async fn publish_change(&self, event: Event, reference: &ObjectReference) {
        let recorder = Recorder::new(self.updater.management.clone(), self.reporter.clone());
        report_failure(recorder.publish(&event, reference).await, &event);
    }
}

fn report_failure(result: Result<(), kube::Error>, event: &Event) {
    if let Err(error) = result {
        tracing::warn!(%error, reason = %event.reason, "recording an event");
    }
}

/// Runs until SIGTERM or Ctrl-C: elects a leader, and as leader runs the rounds. A round that
/// has changed nothing yet is dropped at once, whatever remote call it waits on; a roll in
/// progress is stopped after the pod being changed (finished and soaked, or rolled back):
/// the rest keeps the updater's intent annotations, which the next leader's round finishes
/// or undoes, as it does after a killed process. Then the lease is released.
pub async fn run(
    management: Client,
    tested: Option<Client>,
    namespace: String,
    options: Options,
) -> Result<(), Error> {
    let (progress, change) = watch::channel(Progress::Idle {
        since: Instant::now(),
    });
    let health = Arc::new(Health::new(
        Metrics::default(),
        options.progress_deadline,
        change.clone(),
    ));
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

    let reporter = Reporter {
        controller: "arak".into(),
        instance: Some(options.identity.clone()),
    };
    let recorder = Recorder::new(management.clone(), reporter.clone());
    let ctx = Context {
        updater: updater::Context::new(
            management.clone(),
            tested,
            namespace.clone(),
            options.updater,
            ReadinessOnly,
        )
        .with_stop(shutdown.clone())
        .with_progress(progress),
        tunings: Api::namespaced(management, &namespace),
        tuning: options.tuning,
        prometheus_url: options.prometheus_url,
        fetch_config: options.fetch_config,
        fetch_client: options.fetch_client,
        recorder,
        reporter,
        health,
        predicted: Mutex::new(Predicted::new()),
        renewed,
        renew_deadline: options.renew_deadline,
        shutdown,
        change,
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
            let mut change = ctx.change.clone();
            change.mark_unchanged();
            ctx.health.round_began();
            let abandon = async {
                let _ = shutdown.wait_for(|stop| *stop).await;
                // Once the updater has changed something, the round ends by itself: after
                // the pod being changed, with its outcome in the status.
                if change.has_changed().unwrap_or(true) {
                    std::future::pending::<()>().await;
                }
            };
            let wait = tokio::select! {
                wait = round(ctx, retry_period) => Some(wait),
                () = abandon => None,
            };
            ctx.health.round_ended();
            let Some(wait) = wait else {
                tracing::info!("shutdown: dropped a round that had changed nothing");
                break;
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

/// One round; says when the next is due.
async fn round(ctx: &Context, retry_period: Duration) -> Duration {
    match ctx.tunings.get_opt(&ctx.tuning).await {
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
    }
}

/// Acquires and renews the lease every `retry_period` and publishes when it last succeeded;
/// on shutdown (after the rounds have stopped) releases it. An attempt in flight when
/// shutdown comes is dropped: a silent apiserver must not hold the exit up.
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
        let attempt = tokio::select! {
            attempt = election.try_acquire_or_renew() => attempt,
            _ = shutdown.changed() => break,
        };
        match attempt {
            Ok(role) => {
                health.lease_answered();
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
    // A leader keeps renewing while its last round finishes: a roll stops only after its
    // current pod's soak.
    while !renewed.is_closed() && renewed.borrow().is_some() {
        tokio::select! {
            _ = tokio::time::sleep(retry_period) => {}
            _ = renewed.closed() => break,
        }
        let attempt = tokio::select! {
            attempt = election.try_acquire_or_renew() => attempt,
            _ = renewed.closed() => break,
        };
        match attempt {
            Ok(Role::Leader) => {
                health.lease_answered();
                renewed.send_replace(Some(Instant::now()));
            }
            Ok(Role::Standby { .. }) => {
                health.lease_answered();
                renewed.send_replace(None);
            }
            Err(error) => tracing::warn!(%error, "renewing the lease during shutdown"),
        }
    }
    // Bounded: a lease left held expires after its duration anyway.
    match tokio::time::timeout(RELEASE_WITHIN, election.release()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "releasing the lease"),
        Err(_) => tracing::warn!(
            "releasing the lease: no answer within {} s; it expires by itself",
            RELEASE_WITHIN.as_secs()
        ),
    }
    health.metrics.leader.set(0);
}

/// How long the exit waits to hand the lease over, within the 5 s a signal is honoured in.
const RELEASE_WITHIN: Duration = Duration::from_secs(3);

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
