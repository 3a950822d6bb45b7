//! The hosted test control plane end to end: `perf-tests/cluster up --hosted` makes the
//! loopback cluster a management cluster whose node agents run the tested control plane's
//! StatefulSets as processes. Checks that both tested identities work through the load
//! balancer, that changing `apiserver-0`'s `--max-requests-inflight` makes the real
//! StatefulSet controller replace its pod and the agent restart that kube-apiserver (and
//! only that one) with the new flag until it is Ready again, and that `down` leaves no
//! process behind.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, ComponentPid, Outcome};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

const WAIT: Duration = Duration::from_secs(180);
const INFLIGHT_FLAG: &str = "--max-requests-inflight=";

#[test]
fn hosted_control_plane_rolls_one_apiserver() {
    // hosted-up runs this very build of the agent instead of building one itself (which,
    // outside `cargo test --workspace`'s feature set, would recompile its dependencies).
    // SAFETY: this is the only test of this binary and no runtime has started yet, so no
    // other thread reads or writes the environment.
    unsafe { std::env::set_var("ARAK_NODE_AGENT", env!("CARGO_BIN_EXE_node-agent")) };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(rolls_one_apiserver());
}

async fn rolls_one_apiserver() {
    let started = Instant::now();
    let options = ClusterOptions {
        nodes: 1,
        hosted: true,
        ready_timeout: Duration::from_secs(240),
    };
    let mut cluster = match Cluster::up(&options).expect("starting the hosted cluster") {
        Outcome::Ready(cluster) => cluster,
        Outcome::Skip(reason) => {
            eprintln!("SKIPPED hosted_control_plane_rolls_one_apiserver: {reason}");
            return;
        }
    };
    eprintln!(
        "management + hosted control plane up in {:.1}s (state {})",
        started.elapsed().as_secs_f64(),
        cluster.state_dir().display()
    );
    let env = hosted_env(cluster.state_dir());
    let namespace = env["ARAK_TESTED_NAMESPACE"].clone();

    let tested_admin = client(Path::new(&env["ARAK_TESTED_KUBECONFIG"])).await;
    let tested_load = client(Path::new(&env["ARAK_TESTED_LOAD_KUBECONFIG"])).await;
    let management = client(cluster.admin_kubeconfig()).await;
    identities_work_through_the_load_balancer(&tested_admin, &tested_load).await;
    poll("Prometheus scrapes every tested component", || {
        tested_targets_up(cluster.prometheus_url())
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(management.clone(), &namespace);
    let mut before: HashMap<String, (String, ComponentPid)> = HashMap::new();
    for name in ["apiserver-0-0", "apiserver-1-0", "apiserver-2-0"] {
        let pod = pods.get(name).await.expect("apiserver pod");
        let uid = pod.metadata.uid.clone().expect("pod uid");
        let process = pod_process(&pod).expect("apiserver pod runs a process");
        before.insert(name.to_string(), (uid, process));
    }
    for (name, (_, process)) in &before {
        assert!(process.is_running(), "{name}: {process} runs");
    }
    let (old_uid, old_process) = before["apiserver-0-0"].clone();
    let old_limit = inflight_flag(old_process.pid).expect("apiserver-0 has the flag");
    let new_limit = old_limit + 23;

    let statefulsets: Api<StatefulSet> = Api::namespaced(management.clone(), &namespace);
    set_inflight_limit(&statefulsets, "apiserver-0", new_limit).await;
    let roll_started = Instant::now();

    let new_process = poll(
        "apiserver-0-0 replaced, restarted with the new flag and Ready",
        || async {
            let pod = pods.get("apiserver-0-0").await.ok()?;
            if pod.metadata.uid.as_deref() == Some(old_uid.as_str()) || !pod_ready(&pod) {
                return None;
            }
            let process = pod_process(&pod)?;
            (inflight_flag(process.pid) == Some(new_limit)).then_some(process)
        },
    )
    .await;
    eprintln!(
        "apiserver-0 rolled in {:.1}s: pid {} -> {} with {INFLIGHT_FLAG}{new_limit}",
        roll_started.elapsed().as_secs_f64(),
        old_process.pid,
        new_process.pid
    );
    assert!(
        !old_process.is_running(),
        "the old kube-apiserver process has exited"
    );
    for name in ["apiserver-1-0", "apiserver-2-0"] {
        let (uid, process) = &before[name];
        let pod = pods.get(name).await.expect("apiserver pod");
        assert_eq!(
            pod.metadata.uid.as_ref(),
            Some(uid),
            "{name} was not replaced"
        );
        assert_eq!(
            pod_process(&pod).as_ref(),
            Some(process),
            "{name} kept its process"
        );
        assert!(process.is_running(), "{name}: {process} still runs");
        assert_eq!(restart_count(&pod), 0, "{name} never restarted");
    }
    // The rolled replica serves again behind the load balancer.
    poll("tested API answers after the roll", || async {
        Api::<Node>::all(tested_load.clone())
            .list(&ListParams::default())
            .await
            .ok()
    })
    .await;

    let mut processes = cluster.component_pids().expect("recorded pids");
    assert!(
        processes
            .iter()
            .any(|p| p.name.starts_with("hosted-agent-")),
        "hosted-up records its processes: {processes:?}"
    );
    for pod in pods.list(&ListParams::default()).await.expect("pods").items {
        processes.extend(pod_process(&pod));
    }
    assert!(
        processes.iter().all(ComponentPid::is_running),
        "everything runs before down: {processes:?}"
    );
    cluster.down().expect("cluster down");
    let left: Vec<String> = processes
        .iter()
        .filter(|p| p.is_running())
        .map(ToString::to_string)
        .collect();
    assert!(left.is_empty(), "processes left after down: {left:?}");
    eprintln!("whole test in {:.1}s", started.elapsed().as_secs_f64());
}

async fn identities_work_through_the_load_balancer(admin: &Client, load: &Client) {
    let admin_groups = groups(admin).await;
    assert!(
        admin_groups.iter().any(|g| g == "system:masters"),
        "{admin_groups:?}"
    );
    let load_groups = groups(load).await;
    assert!(
        !load_groups.iter().any(|g| g == "system:masters"),
        "the tested load user must be limited by APF: {load_groups:?}"
    );
    let nodes = Api::<Node>::all(load.clone())
        .list(&ListParams::default().labels("type=kwok"))
        .await
        .expect("the load user lists tested nodes");
    assert!(!nodes.items.is_empty(), "the tested cluster has fake nodes");
    let namespaces = Api::<Namespace>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .expect("the admin lists namespaces");
    assert!(
        namespaces
            .items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("kube-system"))
    );
}

/// Some(()) once `up` is 1 for the three apiservers, the controller-manager, the scheduler
/// and the tested etcd that hosted-up registered with the management cluster's Prometheus.
async fn tested_targets_up(prometheus_url: &str) -> Option<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = prometheus_url.strip_prefix("http://")?;
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let query = "/api/v1/query?query=up%7Bjob%3D~%22tested-.%2A%22%7D";
    let request = format!("GET {query} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let body: serde_json::Value = serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()?;
    let results = body["data"]["result"].as_array()?;
    let up = results.iter().filter(|r| r["value"][1] == "1").count();
    (results.len() == 6 && up == 6).then_some(())
}

/// Replaces the `--max-requests-inflight` argument of the StatefulSet's container. The
/// resourceVersion makes a concurrent change fail the patch instead of being overwritten.
async fn set_inflight_limit(statefulsets: &Api<StatefulSet>, name: &str, limit: u32) {
    let sts = statefulsets.get(name).await.expect("StatefulSet");
    let container = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers[0].clone())
        .expect("the StatefulSet has a container");
    let args: Vec<String> = container
        .args
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            if a.starts_with(INFLIGHT_FLAG) {
                format!("{INFLIGHT_FLAG}{limit}")
            } else {
                a
            }
        })
        .collect();
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": sts.metadata.resource_version},
        "spec": {"template": {"spec": {"containers": [{"name": container.name, "args": args}]}}},
    });
    statefulsets
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("patching the StatefulSet");
}

/// The process behind a pod's first container: the agent names it `process://<pid>`.
fn pod_process(pod: &Pod) -> Option<ComponentPid> {
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

fn inflight_flag(pid: u32) -> Option<u32> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    cmdline
        .split(|b| *b == 0)
        .filter_map(|arg| std::str::from_utf8(arg).ok())
        .find_map(|arg| arg.strip_prefix(INFLIGHT_FLAG)?.parse().ok())
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map_or(-1, |c| c.restart_count)
}

/// `export NAME=value` lines hosted-up wrote (values are `printf %q`-quoted paths).
fn hosted_env(state_dir: &Path) -> HashMap<String, String> {
    let path = state_dir.join("hosted.env");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace('\\', "")))
        .collect()
}

async fn client(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig to client config");
    Client::try_from(config).expect("kube client")
}

async fn groups(client: &Client) -> Vec<String> {
    Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview")
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.groups)
        .unwrap_or_default()
}

async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
