//! What the `arak run` tests share: the hosted cluster with the CRD installed, `arak run`
//! processes, the ControlPlaneTuning and polling.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, ComponentPid, Outcome as Harness};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

pub const TUNING: &str = "control-plane";
pub const WAIT: Duration = Duration::from_secs(120);

pub struct Env {
    pub management: Client,
    pub namespace: String,
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
    pub tunings: Api<DynamicObject>,
}

pub fn block_on(test: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(test);
}

/// The hosted cluster with the CRD installed and a fetch config for its Prometheus jobs;
/// None (after printing why) when the harness skips.
pub async fn start(test: &str) -> Option<(Cluster, Env)> {
    let started = Instant::now();
    let options = ClusterOptions {
        nodes: 1,
        hosted: true,
        ready_timeout: Duration::from_secs(240),
    };
    let cluster = match Cluster::up(&options).expect("starting the hosted cluster") {
        Harness::Ready(cluster) => cluster,
        Harness::Skip(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            return None;
        }
    };
    eprintln!("cluster up in {:?}", started.elapsed());
    let namespace = cluster
        .env_var("ARAK_TESTED_NAMESPACE")
        .expect("ARAK_TESTED_NAMESPACE")
        .to_owned();
    let management = client(cluster.admin_kubeconfig()).await;
    let dir = cluster.state_dir().join("arak-run-test");
    std::fs::create_dir_all(&dir).expect("test directory");
    install_crd(&management).await;
    let resource = ApiResource {
        group: "arak.io".into(),
        version: "v1alpha1".into(),
        api_version: "arak.io/v1alpha1".into(),
        kind: "ControlPlaneTuning".into(),
        plural: "controlplanetunings".into(),
    };
    let env = Env {
        tunings: Api::namespaced_with(management.clone(), &namespace, &resource),
        management,
        namespace,
        kubeconfig: cluster.admin_kubeconfig().to_owned(),
        dir,
    };
    write_fetch_config(&env);
    Some((cluster, env))
}

/// One `arak run` process, its JSON log in a file and its HTTP port.
pub struct Instance {
    child: Child,
    log: PathBuf,
    pub port: u16,
}

impl Instance {
    /// `arak run` with the test's kubeconfigs and short lease timings, plus `extra` flags.
    pub fn start(env: &Env, cluster: &Cluster, identity: &str, extra: &[&str]) -> Instance {
        let port = free_port();
        let log = env.dir.join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_arak"))
            .args(["run", "--tuning", TUNING, "--log-format", "json"])
            .arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .arg("--tested-kubeconfig")
            .arg(
                cluster
                    .env_var("ARAK_TESTED_KUBECONFIG")
                    .expect("ARAK_TESTED_KUBECONFIG"),
            )
            .args(["--namespace", &env.namespace, "--identity", identity])
            .args(["--prometheus-url", cluster.prometheus_url()])
            .arg("--fetch-config")
            .arg(env.dir.join("fetch.yaml"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--lease-duration",
                "6s",
                "--renew-deadline",
                "4s",
                "--retry-period",
                "1s",
            ])
            .args(extra)
            .env("RUST_LOG", "arak=info,updater=info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("arak run starts");
        Instance { child, log, port }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
        let status = self.terminate(Duration::from_secs(20));
        assert!(
            status.success(),
            "arak run exited with {status}:\n{}",
            self.log()
        );
    }

    /// SIGTERM, then the exit status, failing after `wait`.
    pub fn terminate(&mut self, wait: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "sending SIGTERM");
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "arak still ran {wait:?} after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The exit status, if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub async fn install_crd(client: &Client) {
    let output = Command::new(env!("CARGO_BIN_EXE_arak"))
        .arg("crd")
        .output()
        .expect("arak crd");
    assert!(output.status.success());
    let crd: CustomResourceDefinition =
        serde_norway::from_slice(&output.stdout).expect("the CRD parses");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("creating the CRD");
    poll("the CRD to be established", || async {
        let crd = crds.get("controlplanetunings.arak.io").await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

/// The hosted components' Prometheus jobs; replicas are named by their `instance`, which is
/// unique across components (the scheduler shares master-0 with an apiserver).
pub fn write_fetch_config(env: &Env) {
    std::fs::write(
        env.dir.join("fetch.yaml"),
        "apiserver: { job: tested-apiserver }\n\
         scheduler: { job: tested-scheduler }\n\
         controller_manager: { job: tested-controller-manager }\n",
    )
    .expect("fetch config");
}

/// The example policy for the hosted cluster's three apiservers, named by their scrape
/// `instance`; no scheduler or controller-manager, no `current` (read live).
pub fn hosted_policy(cluster: &Cluster) -> Value {
    hosted_policy_for(cluster, 3)
}

/// [`hosted_policy`] for a control plane of `apiservers` replicas
/// (`ARAK_HOSTED_APISERVERS`).
pub fn hosted_policy_for(cluster: &Cluster, apiservers: usize) -> Value {
    let port = cluster
        .env_var("ARAK_TESTED_APISERVER_PORT")
        .expect("ARAK_TESTED_APISERVER_PORT");
    let example = include_str!("../../config/examples/policy.yaml");
    let mut policy: Value = serde_norway::from_str(example).expect("example policy");
    let map = policy.as_object_mut().expect("a mapping");
    map.remove("current");
    map.insert("schedulers".into(), json!([]));
    map.insert("controller_managers".into(), json!([]));
    let apiservers: Vec<Value> = (0..apiservers)
        .map(|i| {
            json!({
                "name": format!("127.0.1.{}:{port}", i + 1),
                "stateful_set": format!("apiserver-{i}"),
                "container": "kube-apiserver",
                "node_allocatable": {"cpu_cores": 2, "memory_bytes": 8_589_934_592_u64},
            })
        })
        .collect();
    map.insert("apiservers".into(), json!(apiservers));
    policy
}

/// A ControlPlaneTuning with rounds every 5 s over a 30 s window.
pub async fn create_tuning(env: &Env, mode: &str, policy: Value) {
    let tuning: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "arak.io/v1alpha1",
        "kind": "ControlPlaneTuning",
        "metadata": {"name": TUNING, "namespace": env.namespace},
        "spec": {
            "mode": mode,
            "intervalSeconds": 5,
            "windowSeconds": 30,
            "historySeconds": 180,
            "policy": policy,
        },
    }))
    .expect("a ControlPlaneTuning");
    env.tunings
        .create(&PostParams::default(), &tuning)
        .await
        .expect("creating the ControlPlaneTuning");
}

pub async fn set_mode(env: &Env, mode: &str) {
    env.tunings
        .patch(
            TUNING,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": mode}})),
        )
        .await
        .expect("changing the mode");
}

pub async fn status(env: &Env) -> Option<Value> {
    let tuning = env.tunings.get(TUNING).await.ok()?;
    tuning.data.get("status").cloned()
}

pub async fn stateful_set_versions(env: &Env) -> BTreeMap<String, Option<String>> {
    Api::<StatefulSet>::namespaced(env.management.clone(), &env.namespace)
        .list(&ListParams::default())
        .await
        .expect("listing StatefulSets")
        .items
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.unwrap_or_default(),
                s.metadata.resource_version,
            )
        })
        .collect()
}

pub async fn poll<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_for(what, WAIT, check).await
}

pub async fn poll_for<T, F, Fut>(what: &str, wait: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + wait;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {wait:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The process behind a hosted pod's container: the node agent names it
/// `process://<pid>`; None until it runs.
pub fn pod_process(pod: &Pod, container: &str) -> Option<ComponentPid> {
    let status = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)?;
    status.state.as_ref()?.running.as_ref()?;
    let pid: u32 = status
        .container_id
        .as_ref()?
        .strip_prefix("process://")?
        .parse()
        .ok()?;
    // Field 22 (start time) tells this process from a later one that reused the pid.
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

/// A flag's value on a running process's command line (`--flag=v` or `--flag v`).
pub fn process_flag(pid: u32, flag: &str) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&str> = cmdline
        .split(|b| *b == 0)
        .filter_map(|arg| std::str::from_utf8(arg).ok())
        .collect();
    args.iter().enumerate().rev().find_map(|(i, arg)| {
        match arg.strip_prefix(flag)?.strip_prefix('=') {
            Some(value) => Some(value.to_owned()),
            None if arg.len() == flag.len() => args.get(i + 1).map(|v| (*v).to_owned()),
            None => None,
        }
    })
}

/// A plain HTTP/1.0 GET: status code and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn client(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("client config");
    Client::try_from(config).expect("client")
}

/// hosted-up builds the node agent with cargo unless told where one is; the workspace's
/// build is next to this test's binary.
pub fn use_workspace_node_agent() {
    if let (Some(agent), None) = (
        harness::built_node_agent(),
        std::env::var_os("ARAK_NODE_AGENT"),
    ) {
        // SAFETY: called first thing in the only test of its binary, before any runtime or
        // other thread exists that could read or write the environment.
        unsafe { std::env::set_var("ARAK_NODE_AGENT", agent) };
    }
}
