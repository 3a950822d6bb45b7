//! Against the real loopback control plane: a known open-loop load from the ordinary load
//! user, then the fetched snapshot is compared with what was sent.
//!
//! What is compared, honestly: the apiserver's per-class arrival rates include the
//! controllers' own traffic, so a baseline is fetched over the window just before the load
//! and subtracted. The load user's requests all land in APF's `global-default` level, whose
//! dispatched rate is checked too. 429s are provoked with a tiny APF priority level that
//! rejects instead of queueing (the cluster script takes no extra apiserver flags, so
//! `--max-requests-inflight` cannot be made tiny; APF is what answers 429 on 1.35 anyway).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::{Cluster, ClusterOptions, ComponentPid, Outcome};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use load_fetcher::{
    ClientOptions, FetchConfig, FetchOptions, HistoryOptions, PrometheusSource, ScrapeSource,
    ScrapeTarget,
};
use recommender::snapshot::{ApiserverSample, FindingKind, LoadSnapshot, Severity};
use serde_json::json;

const NAMESPACE: &str = "load-fetcher-test";
const READ_PER_S: f64 = 40.0;
/// POSTs and DELETEs each at this rate.
const WRITE_PER_S: f64 = 10.0;
const WINDOW: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_known_load_from_the_loopback_cluster() {
    let outcome = Cluster::up(&ClusterOptions {
        nodes: 1,
        ..ClusterOptions::default()
    })
    .unwrap_or_else(|e| panic!("starting the loopback cluster: {e}"));
    let mut cluster = match outcome {
        Outcome::Ready(cluster) => cluster,
        Outcome::Skip(reason) => {
            eprintln!("SKIPPED fetches_known_load_from_the_loopback_cluster: {reason}");
            return;
        }
    };
    let prometheus_url = cluster.prometheus_url().to_owned();
    let source = PrometheusSource::new(&prometheus_url, &ClientOptions::default()).unwrap();
    let config = FetchConfig::default();
    let load = client(cluster.load_kubeconfig()).await;
    let admin = client(cluster.admin_kubeconfig()).await;
    setup(&load).await;

    // Baseline: the controllers' own traffic over a window with no test load.
    tokio::time::sleep(WINDOW + Duration::from_secs(5)).await;
    let baseline = fetch_now(&source, &config, None).await;
    let base = only_apiserver(&baseline).clone();
    eprintln!(
        "baseline readOnly {:?}/s mutating {:?}/s",
        base.read_only.arrival_rate, base.mutating.arrival_rate
    );

    // The known load, open loop, recorded request by request.
    let sent = Sent::default();
    let load_started = Instant::now();
    let generator = tokio::spawn(generate(load.clone(), sent.clone()));

    // Direct scrape of the apiserver during the load, with the admin's client certificate.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let pki = cluster.state_dir().join("pki");
    let scrape_options = ClientOptions {
        ca_file: Some(pki.join("ca.crt")),
        client_cert: Some(pki.join("admin.crt")),
        client_key: Some(pki.join("admin.key")),
        // The apiserver's /metrics is large and this machine is shared: allow for it.
        timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    };
    let target: ScrapeTarget = format!("{}/metrics", cluster.apiserver_url())
        .parse()
        .unwrap();
    let scrape_started = unix_now();
    let scraped = ScrapeSource::new(vec![target], &scrape_options)
        .unwrap()
        .fetch(Duration::from_secs(5))
        .await
        .expect("scraping the apiserver directly");
    let scrape_ended = unix_now();
    let s = only_apiserver(&scraped);
    let (reads, writes) = sent.rates_between(scrape_started, scrape_ended);
    eprintln!(
        "scrape: readOnly {:?}/s mutating {:?}/s, sent {reads:.1}/s and {writes:.1}/s; findings {:?}",
        s.read_only.arrival_rate, s.mutating.arrival_rate, scraped.findings
    );
    assert_close(
        "scraped readOnly",
        s.read_only.arrival_rate,
        base.read_only.arrival_rate,
        reads,
    );
    assert_close(
        "scraped mutating",
        s.mutating.arrival_rate,
        base.mutating.arrival_rate,
        writes,
    );
    assert!(
        s.process.cpu_cores.is_some_and(|c| c > 0.0),
        "{:?}",
        s.process
    );
    assert!(s.read_only.latency.is_some(), "{s:?}");

    // Prometheus over a window entirely inside the load.
    let elapsed = load_started.elapsed();
    if elapsed < WINDOW + Duration::from_secs(10) {
        tokio::time::sleep(WINDOW + Duration::from_secs(10) - elapsed).await;
    }
    let at = unix_now().floor();
    let loaded = fetch_at(&source, &config, at as i64, Some(Duration::from_secs(120))).await;
    let (reads, writes) = sent.rates_between(at - WINDOW.as_secs_f64(), at);
    let a = only_apiserver(&loaded);
    eprintln!(
        "prometheus: readOnly {:?}/s mutating {:?}/s, sent {reads:.1}/s and {writes:.1}/s",
        a.read_only.arrival_rate, a.mutating.arrival_rate
    );
    assert_close(
        "readOnly",
        a.read_only.arrival_rate,
        base.read_only.arrival_rate,
        reads,
    );
    assert_close(
        "mutating",
        a.mutating.arrival_rate,
        base.mutating.arrival_rate,
        writes,
    );
    let global_default = &a.priority_levels["global-default"];
    let base_global = base
        .priority_levels
        .get("global-default")
        .and_then(|p| p.dispatched_rate);
    assert_close(
        "APF global-default dispatched",
        global_default.dispatched_rate,
        base_global,
        reads + writes,
    );
    assert_eq!(
        a.read_only.rejected_rate.map(|r| r < 0.5),
        Some(true),
        "{a:?}"
    );
    let latency = a.read_only.latency.expect("readOnly latency under load");
    assert!(
        latency.p50_s <= latency.p99_s && latency.count > 0.0,
        "{latency:?}"
    );
    assert!(a.process.cpu_cores.is_some() && a.process.resident_memory_bytes.is_some());
    assert!(!loaded.schedulers.is_empty() && !loaded.controller_managers.is_empty());
    let history = loaded.history.as_ref().expect("history was asked for");
    let apiserver_history = history
        .replicas
        .iter()
        .find(|r| r.replica == a.replica)
        .expect("the apiserver has a history");
    let recent_reads: Vec<f64> = apiserver_history
        .read_only_rate
        .iter()
        .rev()
        .take(3)
        .flatten()
        .copied()
        .collect();
    assert!(
        recent_reads.iter().any(|r| *r > READ_PER_S * 0.5),
        "the last history points show the load: {recent_reads:?}"
    );
    // The mean latency per step, which the calibration fits the off-CPU time's spread by:
    // positive, and no more than the P99 of the same step.
    let means: Vec<(f64, f64)> = apiserver_history
        .read_only_mean_s
        .iter()
        .zip(&apiserver_history.read_only_p99_s)
        .rev()
        .take(3)
        .filter_map(|(m, p)| Some(((*m)?, (*p)?)))
        .collect();
    assert!(
        !means.is_empty() && means.iter().all(|(m, p)| *m > 0.0 && m <= p),
        "the last history points have a mean latency under the P99: {means:?}"
    );
    assert!(loaded.actionable(), "{:?}", loaded.findings);
    generator.abort();

    // 429s: a priority level with about 3 seats that rejects rather than queues, for the
    // load user's LISTs of configmaps; bursts of concurrent LISTs then overflow it.
    reject_lists_of_load_user(&admin).await;
    let rejections = Sent::default();
    let burst_started = Instant::now();
    let bursts = tokio::spawn(list_bursts(load.clone(), rejections.clone()));
    tokio::time::sleep(WINDOW + Duration::from_secs(10)).await;
    let at = unix_now().floor();
    let rejected = fetch_at(&source, &config, at as i64, None).await;
    bursts.abort();
    let (lists, _) = rejections.rates_between(at - WINDOW.as_secs_f64(), at);
    let rejected_seen = rejections.rejected_between(at - WINDOW.as_secs_f64(), at);
    let r = only_apiserver(&rejected);
    eprintln!(
        "429s: fetched {:?}/s, the load user saw {rejected_seen:.1}/s of {lists:.1}/s LISTs (after {:?}); APF {:?}",
        r.read_only.rejected_rate,
        burst_started.elapsed(),
        r.priority_levels.get("load-fetcher-tiny")
    );
    assert!(
        rejected_seen > 1.0,
        "the bursts must be rejected in part: {rejected_seen}/s"
    );
    assert_close(
        "readOnly 429",
        r.read_only.rejected_rate,
        Some(0.0),
        rejected_seen,
    );
    let tiny = &r.priority_levels["load-fetcher-tiny"];
    assert_close("APF rejected", tiny.rejected_rate, Some(0.0), rejected_seen);
    assert!(tiny.nominal_seats.is_some_and(|s| s <= 5.0), "{tiny:?}");

    // A job regex that matches nothing: no apiserver at all is a blocking finding.
    let nothing = FetchConfig {
        apiserver: load_fetcher::config::ComponentRule {
            job: "no-such-job".into(),
            ..config.apiserver.clone()
        },
        ..config.clone()
    };
    let empty = fetch_now(&source, &nothing, None).await;
    assert!(empty.apiservers.is_empty());
    assert!(!empty.actionable());
    assert!(
        empty.findings.iter().any(|f| f.kind == FindingKind::Missing
            && f.severity == Severity::Blocking
            && f.metric == "apiserver_request_total"),
        "{:?}",
        empty.findings
    );

    // Judged against a 100 ms scrape interval, 5 s old samples are stale: blocking for the
    // apiserver, and its CPU is no longer reported.
    let impatient = FetchConfig {
        scrape_interval: Some(Duration::from_millis(100)),
        ..config.clone()
    };
    let stale = fetch_now(&source, &impatient, None).await;
    assert!(!stale.actionable());
    assert!(
        stale.findings.iter().any(|f| f.kind == FindingKind::Stale
            && f.severity == Severity::Blocking
            && f.replica.as_deref() == Some(only_apiserver(&stale).replica.name.as_str())),
        "{:?}",
        stale.findings
    );
    assert_eq!(only_apiserver(&stale).process.cpu_cores, None);
    // With the interval from Prometheus' targets (5 s here), the same data is fresh.
    let fresh = fetch_now(&source, &config, None).await;
    assert!(
        !fresh.findings.iter().any(|f| f.kind == FindingKind::Stale),
        "{:?}",
        fresh.findings
    );

    // A stopped scheduler: its target goes down, so the replica has vanished.
    let scheduler = pid_of(&cluster, "kube-scheduler");
    stop(&scheduler).await;
    // Evaluated after Prometheus' next scrape has found it gone.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let vanished = fetch_now(&source, &config, None).await;
    let scheduler_name = fresh.schedulers[0].replica.name.clone();
    assert!(
        vanished
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::ReplicaVanished
                && f.replica.as_deref() == Some(scheduler_name.as_str())),
        "{:?}",
        vanished.findings
    );

    // A wrong URL (a path Prometheus does not serve) is an error naming it.
    let wrong = format!("{prometheus_url}/no/such/prefix");
    let error = PrometheusSource::new(&wrong, &ClientOptions::default())
        .unwrap()
        .fetch(&config, &FetchOptions::default())
        .await
        .expect_err("not a Prometheus API");
    assert!(error.to_string().contains(&wrong), "{error}");

    // A stopped Prometheus: an error within seconds, naming the address and the cause.
    stop(&pid_of(&cluster, "prometheus")).await;
    let started = Instant::now();
    let error = source
        .fetch(&config, &FetchOptions::default())
        .await
        .expect_err("Prometheus is stopped");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains(&prometheus_url), "{error}");
    eprintln!("stopped Prometheus: {error}");

    cluster.down().expect("cluster down");
}

fn pid_of(cluster: &Cluster, name: &str) -> ComponentPid {
    let pids = cluster.component_pids().unwrap();
    pids.iter()
        .find(|p| p.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no recorded pid for {name} in {pids:?}"))
}

/// SIGTERM to one recorded process, then wait until it is gone.
async fn stop(process: &ComponentPid) {
    let status = std::process::Command::new("kill")
        .arg(process.pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill {process}");
    for _ in 0..100 {
        if !process.is_running() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{process} still runs 10 s after SIGTERM");
}

fn assert_close(what: &str, fetched: Option<f64>, baseline: Option<f64>, sent: f64) {
    let fetched = fetched.unwrap_or_else(|| panic!("{what}: no value fetched"));
    let attributed = fetched - baseline.unwrap_or(0.0);
    let error = (attributed - sent).abs() / sent;
    eprintln!(
        "{what}: fetched {fetched:.2}/s − baseline {baseline:?} = {attributed:.2}/s vs sent {sent:.2}/s ({:.1}% off)",
        error * 100.0
    );
    assert!(
        error <= 0.10,
        "{what}: {attributed:.2}/s attributed vs {sent:.2}/s sent"
    );
}

fn only_apiserver(snapshot: &LoadSnapshot) -> &ApiserverSample {
    assert_eq!(snapshot.apiservers.len(), 1, "{:?}", snapshot.findings);
    &snapshot.apiservers[0]
}

async fn fetch_now(
    source: &PrometheusSource,
    config: &FetchConfig,
    history: Option<Duration>,
) -> LoadSnapshot {
    fetch_at(source, config, unix_now() as i64, history).await
}

async fn fetch_at(
    source: &PrometheusSource,
    config: &FetchConfig,
    at: i64,
    history: Option<Duration>,
) -> LoadSnapshot {
    // Let the scrape that covers `at` land first.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let options = FetchOptions {
        window: WINDOW,
        history: history.map(|range| HistoryOptions {
            range,
            step: Duration::from_secs(15),
        }),
        at_unix_s: Some(at),
    };
    source
        .fetch(config, &options)
        .await
        .expect("fetching from Prometheus")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn client(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig to client config");
    // A retried 429 would be counted twice by the apiserver and once here.
    config.default_retry = false;
    Client::try_from(config).expect("kube client")
}

async fn setup(load: &Client) {
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    Api::<Namespace>::all(load.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("creating the test namespace as the load user");
    let target: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "target"}, "data": {"k": "v"}}))
            .unwrap();
    Api::<ConfigMap>::namespaced(load.clone(), NAMESPACE)
        .create(&PostParams::default(), &target)
        .await
        .expect("creating the target configmap");
}

/// When each request was sent, what it was, and whether it came back 429.
#[derive(Debug, Clone, Default)]
struct Sent(Arc<Mutex<Vec<(f64, bool, bool)>>>);

impl Sent {
    fn record(&self, read: bool, rejected: bool) {
        self.0.lock().unwrap().push((unix_now(), read, rejected));
    }

    /// Reads and writes per second between two times.
    fn rates_between(&self, from: f64, to: f64) -> (f64, f64) {
        let sent = self.0.lock().unwrap();
        let within = sent.iter().filter(|(t, _, _)| (from..to).contains(t));
        let (reads, writes) = within.fold(
            (0, 0),
            |(r, w), (_, read, _)| if *read { (r + 1, w) } else { (r, w + 1) },
        );
        let span = to - from;
        (f64::from(reads) / span, f64::from(writes) / span)
    }

    fn rejected_between(&self, from: f64, to: f64) -> f64 {
        let sent = self.0.lock().unwrap();
        let count = sent
            .iter()
            .filter(|(t, _, rejected)| *rejected && (from..to).contains(t))
            .count();
        count as f64 / (to - from)
    }
}

fn is_429<T>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 429)
}

/// Open loop: each tick starts its request without waiting for earlier ones.
async fn generate(load: Client, sent: Sent) {
    let configmaps: Api<ConfigMap> = Api::namespaced(load, NAMESPACE);
    let mut reads = tokio::time::interval(Duration::from_secs_f64(1.0 / READ_PER_S));
    let mut writes = tokio::time::interval(Duration::from_secs_f64(1.0 / WRITE_PER_S));
    let mut created = 0u64;
    loop {
        tokio::select! {
            _ = reads.tick() => {
                let (api, sent) = (configmaps.clone(), sent.clone());
                tokio::spawn(async move {
                    let result = api.get("target").await;
                    sent.record(true, is_429(&result));
                });
            }
            _ = writes.tick() => {
                let name = format!("churn-{created}");
                let old = created.checked_sub(5).map(|n| format!("churn-{n}"));
                created += 1;
                let (api, record) = (configmaps.clone(), sent.clone());
                tokio::spawn(async move {
                    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
                    let result = api.create(&PostParams::default(), &cm).await;
                    record.record(false, is_429(&result));
                });
                let (api, sent) = (configmaps.clone(), sent.clone());
                // Until five exist, there is nothing to delete yet; the DELETE is still sent
                // (a 404 is a request too) so the write rate stays constant.
                let old = old.unwrap_or_else(|| "never-created".into());
                tokio::spawn(async move {
                    let result = api.delete(&old, &DeleteParams::default()).await;
                    sent.record(false, is_429(&result));
                });
            }
        }
    }
}

async fn reject_lists_of_load_user(admin: &Client) {
    let level: PriorityLevelConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "load-fetcher-tiny"},
        "spec": {"type": "Limited", "limited": {
            "nominalConcurrencyShares": 1, "lendablePercent": 0, "borrowingLimitPercent": 0,
            "limitResponse": {"type": "Reject"}}}
    }))
    .unwrap();
    Api::<PriorityLevelConfiguration>::all(admin.clone())
        .create(&PostParams::default(), &level)
        .await
        .expect("creating the tiny priority level");
    let schema: FlowSchema = serde_json::from_value(json!({
        "metadata": {"name": "load-fetcher-tiny"},
        "spec": {
            "priorityLevelConfiguration": {"name": "load-fetcher-tiny"},
            "matchingPrecedence": 500,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [{
                "subjects": [{"kind": "User", "user": {"name": "arak-load"}}],
                "resourceRules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["configmaps"],
                                   "namespaces": [NAMESPACE]}]
            }]
        }
    }))
    .unwrap();
    Api::<FlowSchema>::all(admin.clone())
        .create(&PostParams::default(), &schema)
        .await
        .expect("creating the flow schema");
    // The apiserver's APF config controller picks new objects up within a second or so.
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// 10 concurrent LISTs every 100 ms: a smooth 100/s arrival at a level of about 3 seats.
async fn list_bursts(load: Client, sent: Sent) {
    let configmaps: Api<ConfigMap> = Api::namespaced(load, NAMESPACE);
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    loop {
        ticks.tick().await;
        for _ in 0..10 {
            let (api, sent) = (configmaps.clone(), sent.clone());
            tokio::spawn(async move {
                let result = api.list(&ListParams::default()).await;
                sent.record(true, is_429(&result));
            });
        }
    }
}
