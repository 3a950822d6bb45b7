//! `stress-test density`: pod startup latency and scheduling throughput, measured the way
//! ClusterLoader2's `PodStartupLatency` and `SchedulingThroughput` measure them.
//!
//! N pause pods are created at a uniform rate (CL2's `qpsLoad` tuning set), either directly or
//! through Deployments so that kube-controller-manager makes them (as CL2's density test does;
//! then the controller-manager's client QPS paces pod creation). One watch on the run's pods
//! records, per pod, when it was first seen, when it was first seen bound to a node and when it
//! was first seen Running. Times are the watch's arrival times on our clock: the apiserver's
//! timestamps (`creationTimestamp`, condition times) have one-second resolution.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use clap::ValueEnum;
use futures::StreamExt as _;
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::cluster::{ApiClient, ConnectArgs, JSON, status_message};
use crate::lifecycle::{self, CleanupScope};
use crate::mix::Resource;
use crate::objects::{self, Naming, PAUSE_IMAGE, RUN_LABEL, collection_path};
use crate::report::{IdentityReport, LatencyHistogram, LatencyMs, new_histogram, record_latency};
use crate::{Failure, exit, fail};

/// Label telling the run's pods (and Deployments) apart within the run.
const GROUP_LABEL: &str = "arak.io/density";
/// Creation requests in flight at most; the pacer waits when this many are outstanding.
const MAX_CREATES_IN_FLIGHT: usize = 500;
/// Pod names listed in a timeout error and in the report.
const NAMES_SHOWN: usize = 10;

/// How the pods come to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Pods are POSTed directly (CL2's scheduler-throughput test).
    Pods,
    /// Deployments are POSTed and kube-controller-manager creates the pods (CL2's density).
    Deployment,
}

#[derive(clap::Args, Debug)]
pub struct DensityArgs {
    /// Pods to create.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pods: u32,
    /// Namespace to create them in (default: a new one of the run). One the run creates is
    /// removed afterwards; an existing one is kept and only the run's objects in it removed.
    #[arg(long)]
    namespace: Option<String>,
    /// Objects (pods, or Deployments with --via deployment) created per second, evenly spaced.
    #[arg(long, default_value_t = 100.0)]
    qps: f64,
    /// Create pods directly, or through Deployments.
    #[arg(long, value_enum, default_value_t = Via::Deployment)]
    via: Via,
    /// Pods per Deployment with --via deployment (the last one gets the remainder).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pods_per_deployment: u32,
    /// Give up if not every pod is Running this long after creation started.
    #[arg(long, default_value = "5m", value_parser = crate::parse_duration_arg)]
    timeout: Duration,
    /// Window over which scheduled pods are counted for SchedulingThroughput.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration_arg)]
    interval: Duration,
    /// Node selector of the pods, `key=value` (empty: none). KWOK nodes carry `type=kwok`.
    #[arg(long, default_value = "type=kwok")]
    node_selector: String,
    /// Timeout of every request.
    #[arg(long, default_value = "10s", value_parser = crate::parse_positive_duration_arg)]
    request_timeout: Duration,
    /// Also write the JSON report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Leave the run's objects in place (remove them later with `stress-test cleanup --run-id`).
    #[arg(long)]
    keep: bool,
    /// How long cleanup may wait for the run's objects to disappear.
    #[arg(long, default_value = "180s", value_parser = crate::parse_duration_arg)]
    cleanup_wait: Duration,
}

/// What the watch saw of one pod, on our clock.
#[derive(Clone, Debug, Default)]
struct PodTimes {
    /// When its POST was sent (direct pods only).
    sent: Option<Instant>,
    seen: Option<Instant>,
    scheduled: Option<Instant>,
    running: Option<Instant>,
    node: Option<String>,
}

/// Per-pod times and running counts, fed by the watch and the creator.
#[derive(Debug, Default)]
pub struct Tracker {
    pods: HashMap<String, PodTimes>,
    scheduled: usize,
    running: usize,
    last_running: Option<Instant>,
}

impl Tracker {
    fn note_sent(&mut self, name: &str, at: Instant) {
        self.pods.entry(name.to_owned()).or_default().sent = Some(at);
    }

    /// One watch observation: the pod exists, is bound to `node` (if any), and is Running or not.
    fn observe(&mut self, name: &str, node: Option<&str>, running: bool, at: Instant) {
        let p = self.pods.entry(name.to_owned()).or_default();
        p.seen.get_or_insert(at);
        if p.scheduled.is_none() && (node.is_some() || running) {
            p.scheduled = Some(at);
            p.node = node.map(str::to_owned);
            self.scheduled += 1;
        }
        if p.running.is_none() && running {
            p.running = Some(at);
            self.running += 1;
            self.last_running = Some(self.last_running.map_or(at, |l| l.max(at)));
        }
    }

    fn observe_pod(&mut self, pod: &Pod, at: Instant) {
        let Some(name) = pod.metadata.name.as_deref() else {
            return;
        };
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        self.observe(name, node, running, at);
    }

    /// Startup latency histograms (µs): create→scheduled, scheduled→running, create→running.
    /// "Create" is the POST's send time for direct pods, else the watch's first sight.
    fn latencies(&self) -> [LatencyHistogram; 3] {
        let mut h = [new_histogram(), new_histogram(), new_histogram()];
        for p in self.pods.values() {
            let (Some(created), Some(scheduled), Some(running)) =
                (p.sent.or(p.seen), p.scheduled, p.running)
            else {
                continue;
            };
            record_latency(&mut h[0], scheduled.saturating_duration_since(created));
            record_latency(&mut h[1], running.saturating_duration_since(scheduled));
            record_latency(&mut h[2], running.saturating_duration_since(created));
        }
        h
    }

    /// Names (sorted) of pods known but not Running.
    fn not_running(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| p.running.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    fn nodes(&self) -> NodeSpread {
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for node in self.pods.values().filter_map(|p| p.node.as_deref()) {
            *per_node.entry(node).or_default() += 1;
        }
        NodeSpread {
            used: per_node.len(),
            min_pods: per_node.values().copied().min().unwrap_or(0),
            max_pods: per_node.values().copied().max().unwrap_or(0),
        }
    }
}

/// Pods per second scheduled in each window: the count's increase over the window's length
/// (CL2's SchedulingThroughput samples).
pub fn throughput_samples(counts: &[usize], interval: Duration) -> Vec<f64> {
    let secs = interval.as_secs_f64();
    let mut last = 0;
    counts
        .iter()
        .map(|&c| {
            let s = c.saturating_sub(last) as f64 / secs;
            last = c;
            s
        })
        .collect()
}

/// The nearest-rank percentile CL2 reports: the `ceil(n·pct/100)`-th smallest sample.
pub fn nearest_rank(sorted: &[f64], pct: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// SchedulingThroughput as CL2 reports it, plus the samples it came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Throughput {
    pub interval_s: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    /// Pods scheduled per second from the start of creation to the last pod scheduled.
    pub average: f64,
    /// Pods/s in each window, from the start of creation until every pod was scheduled.
    pub samples: Vec<f64>,
}

impl Throughput {
    pub fn from_samples(samples: Vec<f64>, interval: Duration, average: f64) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        Throughput {
            interval_s: interval.as_secs_f64(),
            p50: nearest_rank(&sorted, 50),
            p90: nearest_rank(&sorted, 90),
            p99: nearest_rank(&sorted, 99),
            max: sorted.last().copied().unwrap_or(0.0),
            average,
            samples,
        }
    }
}

/// How the scheduler spread the pods.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeSpread {
    pub used: usize,
    pub min_pods: usize,
    pub max_pods: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct StartupLatency {
    pub create_to_schedule: LatencyMs,
    pub schedule_to_run: LatencyMs,
    /// CL2's `pod_startup`: create to Running as seen by the watch.
    pub create_to_run: LatencyMs,
}

/// Creation requests: how many were sent, and how many failed and were retried.
#[derive(Debug, Default)]
struct CreateCounts {
    sent: AtomicU64,
    throttled: AtomicU64,
    errors: AtomicU64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CreateReport {
    /// Objects (pods or Deployments) to create.
    pub objects: u64,
    /// POSTs sent, retries included.
    pub sent: u64,
    pub throttled_429: u64,
    /// Other failed POSTs that were retried (5xx, timeouts, transport).
    pub errors: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DensityReport {
    pub run_id: String,
    pub apiserver: String,
    pub identity: IdentityReport,
    pub started_unix_s: f64,
    pub via: Via,
    pub namespace: String,
    pub qps: f64,
    /// Pods asked for.
    pub pods: u64,
    /// Pods the watch saw.
    pub seen: u64,
    pub scheduled: u64,
    pub running: u64,
    /// Pods asked for that were not Running at the end (never created ones included).
    pub not_running: u64,
    /// Every pod became Running before the timeout.
    pub complete: bool,
    /// Start of creation to the last pod seen Running (or to the timeout).
    pub duration_s: f64,
    pub create_requests: CreateReport,
    pub pod_startup_latency_ms: StartupLatency,
    pub scheduling_throughput: Throughput,
    pub nodes: NodeSpread,
    /// Up to ten pods seen but not Running at the end.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_running_examples: Vec<String>,
}

/// What is created, in order: (collection path, body) of each pod or Deployment.
fn plan_objects(args: &DensityArgs, naming: &Naming, namespace: &str) -> Vec<(String, Bytes)> {
    let pod_template = pod_template(args, &naming.run_id);
    match args.via {
        Via::Pods => (0..args.pods)
            .map(|i| {
                let mut pod = json!({"apiVersion": "v1", "kind": "Pod"});
                pod["metadata"] = pod_template["metadata"].clone();
                pod["metadata"]["name"] = json!(pod_name(i));
                pod["spec"] = pod_template["spec"].clone();
                (
                    collection_path(Resource::Pods, Some(namespace)),
                    Bytes::from(pod.to_string()),
                )
            })
            .collect(),
        Via::Deployment => {
            let per = args.pods_per_deployment;
            (0..args.pods.div_ceil(per))
                .map(|i| {
                    let name = format!("density-{i:05}");
                    let replicas = per.min(args.pods - i * per);
                    let mut template = pod_template.clone();
                    template["metadata"]["labels"][GROUP_LABEL] = json!(name);
                    let deployment = json!({
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"name": name, "labels": {RUN_LABEL: naming.run_id}},
                        "spec": {
                            "replicas": replicas,
                            "selector": {"matchLabels": {GROUP_LABEL: name}},
                            "template": template
                        }
                    });
                    (
                        collection_path(Resource::Deployments, Some(namespace)),
                        Bytes::from(deployment.to_string()),
                    )
                })
                .collect()
        }
    }
}

fn pod_name(i: u32) -> String {
    format!("density-{i:06}")
}

/// The pods' metadata and spec: a pause container with CL2's small saturation requests (so
/// the scheduler's scoring spreads them), kept on KWOK nodes and tolerating their taint.
fn pod_template(args: &DensityArgs, run_id: &str) -> Value {
    let mut spec = json!({
        "containers": [{
            "name": "pause",
            "image": PAUSE_IMAGE,
            "resources": {"requests": {"cpu": "1m", "memory": "10M"}}
        }],
        "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 0,
        // No token volume: nothing runs in the pod, and the pod needs no token controller.
        "automountServiceAccountToken": false
    });
    if let Some((k, v)) = args.node_selector.split_once('=') {
        spec["nodeSelector"] = json!({ k: v });
    }
    json!({
        "metadata": {"labels": {RUN_LABEL: run_id, GROUP_LABEL: "pod"}},
        "spec": spec
    })
}

fn check_args(args: &DensityArgs) -> anyhow::Result<()> {
    if !(args.qps.is_finite() && args.qps > 0.0) {
        bail!("--qps must be a number > 0");
    }
    if args.interval < Duration::from_millis(100) {
        bail!("--interval must be at least 100ms");
    }
    if args.timeout.is_zero() {
        bail!("--timeout must be more than 0");
    }
    if !args.node_selector.is_empty() {
        match args.node_selector.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => bail!(
                "--node-selector must be key=value or empty, not {:?}",
                args.node_selector
            ),
        }
    }
    Ok(())
}

pub async fn run(args: DensityArgs, connect_args: &ConnectArgs) -> Result<u8, Failure> {
    check_args(&args).map_err(fail(exit::USAGE))?;
    let (api, identity) = crate::connect(connect_args).await?;
    crate::warn_if_masters(&identity);
    let naming = Naming {
        run_id: crate::new_run_id(),
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| format!("arak-st-{}-density", naming.run_id));
    let scope = CleanupScope::Run(naming.run_id.clone());
    let kinds = [
        Resource::Namespaces,
        Resource::Pods,
        Resource::Deployments,
        Resource::ReplicaSets,
    ];
    tracing::info!(
        run_id = %naming.run_id,
        apiserver = %api.url,
        user = identity.username.as_deref().unwrap_or("?"),
        namespace,
        "density: {} pods via {:?} at {} objects/s",
        args.pods,
        args.via,
        args.qps
    );

    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let notify = Arc::new(Notify::new());
    let watch = match setup(&api, &args, &naming, &namespace, &tracker, &notify).await {
        Ok(w) => w,
        Err(e) => return Err(setup_failed(&api, &scope, &kinds, &args, e, "setup").await),
    };

    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let measured = measure(&api, &args, &naming, &namespace, &tracker, &notify).await;
    watch.abort();

    let outcome = match measured {
        Ok(m) => m,
        Err(e) => {
            return Err(setup_failed(&api, &scope, &kinds, &args, e, "creating the objects").await);
        }
    };

    let report = {
        let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
        let [to_schedule, to_run, startup] = t.latencies();
        let not_running = u64::from(args.pods).saturating_sub(t.running as u64);
        DensityReport {
            run_id: naming.run_id.clone(),
            apiserver: api.url.clone(),
            identity,
            started_unix_s,
            via: args.via,
            namespace: namespace.clone(),
            qps: args.qps,
            pods: u64::from(args.pods),
            seen: t.pods.values().filter(|p| p.seen.is_some()).count() as u64,
            scheduled: t.scheduled as u64,
            running: t.running as u64,
            not_running,
            complete: not_running == 0,
            duration_s: outcome.duration.as_secs_f64(),
            create_requests: outcome.creates,
            pod_startup_latency_ms: StartupLatency {
                create_to_schedule: LatencyMs::from_histogram(&to_schedule),
                schedule_to_run: LatencyMs::from_histogram(&to_run),
                create_to_run: LatencyMs::from_histogram(&startup),
            },
            scheduling_throughput: outcome.throughput,
            nodes: t.nodes(),
            not_running_examples: t.not_running().into_iter().take(NAMES_SHOWN).collect(),
        }
    };
    let json = serde_json::to_string_pretty(&report).expect("report serialises");
    println!("{json}");
    let mut report_error = None;
    if let Some(path) = &args.report
        && let Err(e) = std::fs::write(path, format!("{json}\n"))
    {
        report_error = Some(anyhow!("writing the report to {}: {e}", path.display()));
    }

    if args.keep {
        eprintln!(
            "kept the run's objects; remove them with `stress-test cleanup --run-id {}`",
            naming.run_id
        );
    } else {
        tracing::info!("removing the run's objects");
        match lifecycle::cleanup(
            &api,
            &scope,
            &kinds,
            args.request_timeout,
            args.cleanup_wait,
        )
        .await
        {
            Ok(summary) => crate::report_cleanup(&summary),
            Err(e) => return Err(fail(exit::CLEANUP)(e)),
        }
    }
    if outcome.interrupted {
        return Ok(exit::INTERRUPTED);
    }
    if !report.complete {
        let never_seen = report.pods.saturating_sub(report.seen);
        let mut names = report.not_running_examples.join(", ");
        if args.via == Via::Pods && never_seen > 0 {
            // Direct pods have known names: name the ones the watch never saw too.
            let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
            let unseen = (0..args.pods)
                .map(pod_name)
                .filter(|n| t.pods.get(n).is_none_or(|p| p.seen.is_none()));
            let shown: Vec<String> = report
                .not_running_examples
                .iter()
                .cloned()
                .chain(unseen)
                .take(NAMES_SHOWN)
                .collect();
            names = shown.join(", ");
        }
        return Err(fail(exit::TIMEOUT)(anyhow!(
            "{} of {} pods never became Running within {:?} ({} never seen by the watch, {} \
             not scheduled); e.g. {names}",
            report.not_running,
            report.pods,
            args.timeout,
            never_seen,
            report.pods.saturating_sub(report.scheduled),
        )));
    }
    if let Some(e) = report_error {
        return Err(fail(exit::REPORT)(e));
    }
    Ok(0)
}

/// Removes what the run made after `what` failed, and says so in the error (exit code 4).
async fn setup_failed(
    api: &ApiClient,
    scope: &CleanupScope,
    kinds: &[Resource],
    args: &DensityArgs,
    e: anyhow::Error,
    what: &str,
) -> Failure {
    let cleaned =
        lifecycle::cleanup(api, scope, kinds, args.request_timeout, args.cleanup_wait).await;
    let e = match cleaned {
        Ok(_) => e.context(format!(
            "{what} failed (what the run had created was removed)"
        )),
        Err(ce) => e.context(format!(
            "{what} failed, and so did removing what the run had created ({ce:#})"
        )),
    };
    fail(exit::SETUP)(e)
}

/// Creates the namespace, waits for its default ServiceAccount, and starts the watch.
async fn setup(
    api: &ApiClient,
    args: &DensityArgs,
    naming: &Naming,
    namespace: &str,
    tracker: &Arc<Mutex<Tracker>>,
    notify: &Arc<Notify>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let ns = objects::manifest(Resource::Namespaces, namespace, &naming.run_id, "", "0");
    // An existing namespace is used as it is (and kept, as it does not carry the run label).
    api.call_ok(
        Method::POST,
        &collection_path(Resource::Namespaces, None),
        JSON,
        Bytes::from(ns.to_string()),
        args.request_timeout,
        &[StatusCode::CONFLICT],
    )
    .await
    .with_context(|| format!("creating the namespace {namespace}"))?;
    // Pods are refused until the namespace's default ServiceAccount exists.
    let sa = format!(
        "{}/default",
        collection_path(Resource::ServiceAccounts, Some(namespace))
    );
    let wait_until = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = api
            .call(Method::GET, &sa, JSON, Bytes::new(), args.request_timeout)
            .await?;
        if status.is_success() {
            break;
        }
        if Instant::now() > wait_until {
            bail!(
                "the namespace {namespace} has no default ServiceAccount after 60 s (HTTP \
                 {status}: {}); is kube-controller-manager running?",
                status_message(&body)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let pods: kube::Api<Pod> = kube::Api::namespaced(api.kube(), namespace);
    let config = watcher::Config::default().labels(&naming.label_selector());
    let (ready_tx, ready_rx) = oneshot::channel();
    let (tracker, notify) = (tracker.clone(), notify.clone());
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut events = watcher(pods, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            let at = Instant::now();
            match event {
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    tracker
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .observe_pod(&pod, at);
                    notify.notify_one();
                }
                Ok(watcher::Event::Delete(_) | watcher::Event::Init) => {}
                Err(e) => {
                    // Before the first list it is a setup failure; later the watcher re-lists.
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Err(anyhow!(e).context("watching the run's pods")));
                    } else {
                        tracing::warn!("pod watch: {e}; resuming");
                    }
                }
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
        Ok(Ok(Ok(()))) => Ok(task),
        Ok(Ok(Err(e))) => {
            task.abort();
            Err(e)
        }
        Ok(Err(_)) | Err(_) => {
            task.abort();
            bail!("the watch on the run's pods did not start within 30 s")
        }
    }
}

struct Measured {
    duration: Duration,
    creates: CreateReport,
    throughput: Throughput,
    interrupted: bool,
}

/// Creates the objects at the set rate and watches until every pod is Running or time is up.
/// An error means a creation was refused outright (not throttled or slow).
async fn measure(
    api: &ApiClient,
    args: &DensityArgs,
    naming: &Naming,
    namespace: &str,
    tracker: &Arc<Mutex<Tracker>>,
    notify: &Arc<Notify>,
) -> anyhow::Result<Measured> {
    let objects = plan_objects(args, naming, namespace);
    let n_objects = objects.len() as u64;
    let counts = Arc::new(CreateCounts::default());
    let start = Instant::now();
    let deadline = start + args.timeout;
    let mut creator = tokio::spawn(create_all(
        api.clone(),
        objects,
        args.via,
        args.qps,
        args.request_timeout,
        start,
        deadline,
        counts.clone(),
        tracker.clone(),
    ));
    let mut creator_done = false;
    let mut ticks = tokio::time::interval_at(start + args.interval, args.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let target = args.pods as usize;
    let mut counts_at_ticks = Vec::new();
    let mut sampling = true;
    let mut interrupted = false;
    let status = || {
        let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
        (t.scheduled, t.running, t.last_running)
    };
    let end = loop {
        let (scheduled, running, last_running) = status();
        if running >= target && !sampling {
            break last_running.unwrap_or_else(Instant::now);
        }
        tokio::select! {
            _ = ticks.tick(), if sampling => {
                counts_at_ticks.push(scheduled);
                // CL2 samples until it is told to gather; the windows after the last pod was
                // scheduled would only add zeros, so sampling stops at the first full count.
                sampling = scheduled < target;
            }
            _ = notify.notified() => {}
            r = &mut creator, if !creator_done => {
                creator_done = true;
                r.context("the creating task panicked")??;
            }
            _ = tokio::time::sleep_until(deadline) => break deadline,
            _ = tokio::signal::ctrl_c() => {
                tracing::warn!("interrupted: reporting and cleaning up");
                interrupted = true;
                break Instant::now();
            }
        }
    };
    creator.abort();
    let scheduled = status().0;
    let samples = throughput_samples(&counts_at_ticks, args.interval);
    let span = end.saturating_duration_since(start).as_secs_f64();
    let average = if span > 0.0 {
        scheduled as f64 / span
    } else {
        0.0
    };
    Ok(Measured {
        duration: end.saturating_duration_since(start),
        creates: CreateReport {
            objects: n_objects,
            sent: counts.sent.load(Ordering::Relaxed),
            throttled_429: counts.throttled.load(Ordering::Relaxed),
            errors: counts.errors.load(Ordering::Relaxed),
        },
        throughput: Throughput::from_samples(samples, args.interval, average),
        interrupted,
    })
}

/// POSTs object `i` at `start + i/qps` (CL2's uniform `qpsLoad`), retrying throttled or failed
/// requests until the deadline. A POST refused outright (4xx other than 429) is an error.
#[allow(clippy::too_many_arguments)]
async fn create_all(
    api: ApiClient,
    objects: Vec<(String, Bytes)>,
    via: Via,
    qps: f64,
    request_timeout: Duration,
    start: Instant,
    deadline: Instant,
    counts: Arc<CreateCounts>,
    tracker: Arc<Mutex<Tracker>>,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CREATES_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (path, body)) in objects.into_iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / qps)).await;
        while let Some(done) = tasks.try_join_next() {
            done.context("a creating task panicked")??;
        }
        let permit = permits.clone().acquire_owned().await?;
        if via == Via::Pods {
            tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .note_sent(&pod_name(i as u32), Instant::now());
        }
        let (api, counts) = (api.clone(), counts.clone());
        tasks.spawn(async move {
            let _permit = permit;
            create_one(&api, &path, body, request_timeout, deadline, &counts).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a creating task panicked")??;
    }
    Ok(())
}

async fn create_one(
    api: &ApiClient,
    path: &str,
    body: Bytes,
    request_timeout: Duration,
    deadline: Instant,
    counts: &CreateCounts,
) -> anyhow::Result<()> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        counts.sent.fetch_add(1, Ordering::Relaxed);
        match api
            .call(Method::POST, path, JSON, body.clone(), request_timeout)
            .await
        {
            Ok((status, _)) if status.is_success() => return Ok(()),
            // A retry of a POST whose earlier try was stored after all.
            Ok((StatusCode::CONFLICT, _)) if attempt > 1 => return Ok(()),
            Ok((StatusCode::TOO_MANY_REQUESTS, _)) => {
                counts.throttled.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, body)) if status.is_client_error() => {
                bail!("POST {path}: HTTP {status}: {}", status_message(&body))
            }
            Ok(_) | Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Past the deadline the run is reported as timed out; a failing POST is not an error.
        if Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(10)))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn samples_are_increases_per_second() {
        let s = throughput_samples(&[0, 5, 25, 40, 40], Duration::from_millis(500));
        assert_eq!(s, vec![0.0, 10.0, 40.0, 30.0, 0.0]);
    }

    #[test]
    fn nearest_rank_matches_cl2() {
        // CL2: sorted[ceil(n*p/100) - 1].
        let sorted: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&sorted, 50), 5.0);
        assert_eq!(nearest_rank(&sorted, 90), 9.0);
        assert_eq!(nearest_rank(&sorted, 99), 10.0);
        assert_eq!(nearest_rank(&[7.0], 50), 7.0);
        assert_eq!(nearest_rank(&[], 50), 0.0);
        let t = Throughput::from_samples(vec![3.0, 1.0, 2.0], Duration::from_secs(1), 2.0);
        assert_eq!((t.p50, t.p90, t.p99, t.max), (2.0, 3.0, 3.0, 3.0));
        assert_eq!(
            t.samples,
            vec![3.0, 1.0, 2.0],
            "samples keep their time order"
        );
    }

    #[test]
    fn tracker_times_each_phase_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Tracker::default();
        t.note_sent("a", ms(0));
        t.observe("a", None, false, ms(10));
        t.observe("a", Some("n1"), false, ms(30));
        t.observe("a", Some("n1"), true, ms(100));
        // Later updates of a Running pod change nothing.
        t.observe("a", Some("n1"), true, ms(500));
        // Created by a controller: create is the first sight. Seen bound and Running at once.
        t.observe("b", Some("n2"), true, ms(200));
        t.observe("c", None, false, ms(300));
        assert_eq!((t.scheduled, t.running), (2, 2));
        assert_eq!(t.last_running, Some(ms(200)));
        assert_eq!(t.not_running(), vec!["c".to_owned()]);
        let [to_schedule, to_run, startup] = t.latencies();
        assert_eq!(startup.len(), 2);
        assert_eq!(to_schedule.max(), to_schedule.highest_equivalent(30_000));
        assert_eq!(to_run.max(), to_run.highest_equivalent(70_000));
        assert_eq!(startup.max(), startup.highest_equivalent(100_000));
        assert_eq!(startup.min(), 1, "b was seen Running when first seen");
        assert_eq!(
            t.nodes(),
            NodeSpread {
                used: 2,
                min_pods: 1,
                max_pods: 1
            }
        );
    }

    fn args(extra: &[&str]) -> Result<DensityArgs, String> {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            a: DensityArgs,
        }
        use clap::Parser as _;
        let mut argv = vec!["density"];
        argv.extend_from_slice(extra);
        let w = Wrap::try_parse_from(argv).map_err(|e| e.to_string())?;
        check_args(&w.a).map_err(|e| e.to_string())?;
        Ok(w.a)
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(args(&["--pods", "0"]).is_err());
        assert!(args(&["--pods", "10", "--qps", "0"]).is_err());
        assert!(args(&["--pods", "10", "--qps", "nan"]).is_err());
        assert!(args(&["--pods", "10", "--interval", "10ms"]).is_err());
        assert!(args(&["--pods", "10", "--node-selector", "kwok"]).is_err());
        assert!(args(&["--pods", "10", "--via", "statefulset"]).is_err());
        assert!(args(&["--pods", "10", "--node-selector", ""]).is_ok());
    }

    #[test]
    fn deployments_carry_every_pod_once() {
        let a = args(&["--pods", "250", "--pods-per-deployment", "100"]).unwrap();
        let naming = Naming {
            run_id: "r1".into(),
        };
        let objs = plan_objects(&a, &naming, "ns");
        let replicas: Vec<u64> = objs
            .iter()
            .map(|(path, body)| {
                assert_eq!(path, "/apis/apps/v1/namespaces/ns/deployments");
                let d: Value = serde_json::from_slice(body).unwrap();
                let labels = &d["spec"]["template"]["metadata"]["labels"];
                assert_eq!(labels[RUN_LABEL], "r1");
                assert_eq!(
                    labels[GROUP_LABEL],
                    d["spec"]["selector"]["matchLabels"][GROUP_LABEL]
                );
                assert_eq!(
                    d["spec"]["template"]["spec"]["nodeSelector"]["type"],
                    "kwok"
                );
                d["spec"]["replicas"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(replicas, vec![100, 100, 50]);

        let a = args(&["--pods", "3", "--via", "pods", "--node-selector", ""]).unwrap();
        let objs = plan_objects(&a, &naming, "ns");
        assert_eq!(objs.len(), 3);
        let p: Value = serde_json::from_slice(&objs[2].1).unwrap();
        assert_eq!(p["metadata"]["name"], pod_name(2));
        assert_eq!(p["metadata"]["labels"][RUN_LABEL], "r1");
        assert!(p["spec"].get("nodeSelector").is_none());
        assert_eq!(objs[2].0, "/api/v1/namespaces/ns/pods");
    }

    proptest! {
        /// Samples account for every scheduled pod, and the percentiles are ordered samples.
        #[test]
        fn throughput_arithmetic(
            steps in prop::collection::vec(0usize..500, 1..200),
            interval_ms in 100u64..5000,
        ) {
            let mut counts = Vec::new();
            let mut total = 0;
            for s in &steps {
                total += s;
                counts.push(total);
            }
            let interval = Duration::from_millis(interval_ms);
            let samples = throughput_samples(&counts, interval);
            let sum: f64 = samples.iter().sum::<f64>() * interval.as_secs_f64();
            prop_assert!((sum - total as f64).abs() < 1e-6 * (total as f64 + 1.0));
            let t = Throughput::from_samples(samples.clone(), interval, 0.0);
            prop_assert!(t.p50 <= t.p90 && t.p90 <= t.p99 && t.p99 <= t.max);
            for p in [t.p50, t.p90, t.p99, t.max] {
                prop_assert!(samples.contains(&p));
            }
            // At least half the samples are <= P50, and at least 90 % <= P90.
            let at_most = |v: f64| samples.iter().filter(|&&s| s <= v).count() * 100;
            prop_assert!(at_most(t.p50) >= samples.len() * 50);
            prop_assert!(at_most(t.p90) >= samples.len() * 90);
        }
    }
}
