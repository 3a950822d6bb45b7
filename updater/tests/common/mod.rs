//! Helpers the hosted-control-plane tests share: clients, the processes behind pods, a
//! readiness watcher and Recommendations for the tested apiservers.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::ComponentPid;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use recommender::Recommendation;
use serde_json::json;

pub const INFLIGHT_FLAG: &str = "--max-requests-inflight=";
/// What hosted-up starts the apiservers with.
pub const START_INFLIGHT: u32 = 400;
pub const START_MUTATING: u32 = 200;
/// global-default deals each flow a hand of 6 queues of 50: 300 is one flow's room now.
pub const START_ROOM: u32 = 300;
pub const WAIT: Duration = Duration::from_secs(180);

/// hosted-up runs the workspace's node-agent build when there is one (`cargo build -p
/// node-agent` from inside a test would recompile its dependencies for its own features).
pub fn use_workspace_node_agent() {
    let agent = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("node-agent")))
        .filter(|agent| agent.is_file());
    if let (Some(agent), None) = (agent, std::env::var_os("ARAK_NODE_AGENT")) {
        // SAFETY: called first thing in the only test of its binary, before any runtime or
        // other thread exists that could read or write the environment.
        unsafe { std::env::set_var("ARAK_NODE_AGENT", agent) };
    }
}

pub fn block_on(test: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(test);
}

/// A Recommendation to change the apiservers (replica name, StatefulSet) to these
/// limits, with CPU and memory as they are.
pub fn recommendation(
    replicas: &[(&str, &str)],
    inflight: &[u32],
    mutating: u32,
    queue_length: u32,
) -> Recommendation {
    let apiservers: Vec<_> = replicas
        .iter()
        .zip(inflight)
        .map(|((name, sts), &inflight)| {
            let settings = |inflight| {
                json!({
                    "cpu_cores": 0.25,
                    "memory_bytes": 536_870_912.0,
                    "max_requests_inflight": inflight,
                    "max_mutating_requests_inflight": mutating,
                    "queue_length": queue_length,
                })
            };
            json!({
                "target": {"name": name, "stateful_set": sts, "container": "kube-apiserver"},
                "current": settings(START_INFLIGHT),
                "recommended": settings(inflight),
                "evaluations": 0,
            })
        })
        .collect();
    serde_json::from_value(json!({
        "time_unix_s": 0.0,
        "action": "change",
        "hold_reasons": [],
        "feasible": true,
        "confidence": "medium",
        "apiservers": apiservers,
        "schedulers": [],
        "controller_managers": [],
        "notes": [],
    }))
    .expect("a valid Recommendation")
}

/// The kube-apiserver process of each pod, once all are Ready.
pub async fn processes(pods: &Api<Pod>, names: &[&str]) -> BTreeMap<String, ComponentPid> {
    wait_ready(pods, names).await;
    let mut found = BTreeMap::new();
    for name in names {
        let pod = pods.get(name).await.expect("pod");
        found.insert(
            name.to_string(),
            pod_process(&pod).expect("a running process"),
        );
    }
    found
}

pub async fn wait_ready(pods: &Api<Pod>, names: &[&str]) {
    poll("every apiserver Ready", || async {
        for name in names {
            let pod = pods.get_opt(name).await.ok()??;
            if !ready(&pod) || pod_process(&pod).is_none() {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[derive(Debug, Default)]
pub struct Seen {
    pub max_not_ready: usize,
    /// Pods in the order they got a new uid.
    pub replaced: Vec<String>,
}

/// Polls the pods' readiness while a roll runs.
pub struct ReadinessWatcher {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadinessWatcher {
    pub fn start(pods: Api<Pod>, names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut uids: BTreeMap<String, Option<String>> = BTreeMap::new();
            loop {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    let mut seen = record.lock().expect("lock");
                    let mut down = 0;
                    for name in &names {
                        let pod = list
                            .items
                            .iter()
                            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()));
                        if !pod.is_some_and(ready) {
                            down += 1;
                        }
                        let uid = pod.and_then(|p| p.metadata.uid.clone());
                        let previous = uids.insert(name.clone(), uid.clone());
                        if uid.is_some()
                            && previous.is_some_and(|p| p != uid)
                            && !seen.replaced.contains(name)
                        {
                            seen.replaced.push(name.clone());
                        }
                    }
                    seen.max_not_ready = seen.max_not_ready.max(down);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self { seen, task }
    }

    pub async fn stop(self) -> Seen {
        self.task.abort();
        let _ = self.task.await;
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

/// The process behind a pod's first container: the agent names it `process://<pid>`.
pub fn pod_process(pod: &Pod) -> Option<ComponentPid> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    status.state.as_ref()?.running.as_ref()?;
    let pid: u32 = status
        .container_id
        .as_ref()?
        .strip_prefix("process://")?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start_time = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok();
    Some(ComponentPid {
        name: pod.metadata.name.clone().unwrap_or_default(),
        pid,
        start_time,
    })
}

/// `--max-requests-inflight` on the process's command line.
pub fn inflight_flag(pid: u32) -> Option<u32> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline
        .split(|b| *b == 0)
        .filter_map(|arg| std::str::from_utf8(arg).ok())
        .find_map(|arg| arg.strip_prefix(INFLIGHT_FLAG)?.parse().ok())
}

pub fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub async fn client(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig to client config");
    Client::try_from(config).expect("kube client")
}

pub async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
