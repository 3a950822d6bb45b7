//! `arak run` against the real hosted test control plane (`perf-tests/cluster up --hosted`),
//! its Prometheus and the ControlPlaneTuning CRD, one cluster for every case in order:
//! (a) in `Recommend` mode a round writes the conditions and a recommendation and no
//! StatefulSet changes; (b) a second instance stays standby while the first holds the
//! lease, and takes over when the first is stopped with SIGTERM; (c) in `Off` mode rounds
//! log their decision and write nothing; (d) with Prometheus killed, `DataFresh` turns False
//! and arak holds.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, Outcome as Harness};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

const TUNING: &str = "control-plane";
const WAIT: Duration = Duration::from_secs(120);

#[test]
fn arak_run_on_the_hosted_control_plane() {
    use_workspace_node_agent();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(cases());
}

struct Env {
    management: Client,
    namespace: String,
    kubeconfig: PathBuf,
    dir: PathBuf,
    tunings: Api<DynamicObject>,
}

async fn cases() {
    let started = Instant::now();
    let options = ClusterOptions {
        nodes: 1,
        hosted: true,
        ready_timeout: Duration::from_secs(240),
    };
    let cluster = match Cluster::up(&options).expect("starting the hosted cluster") {
        Harness::Ready(cluster) => cluster,
        Harness::Skip(reason) => {
            eprintln!("SKIPPED arak_run_on_the_hosted_control_plane: {reason}");
            return;
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
    create_tuning(&env, &cluster).await;

    let leader = Instance::start(&env, &cluster, "arak-a");
    recommend_writes_status_and_changes_nothing(&env, &leader).await;
    let standby = Instance::start(&env, &cluster, "arak-b");
    only_the_leader_acts(&env, leader, &standby).await;
    off_writes_nothing(&env, &standby).await;
    prometheus_down_holds(&env, &cluster, &standby).await;
    drop(standby);
    eprintln!("all cases in {:?}", started.elapsed());
}

/// (a) Conditions and a recommendation in the status; every StatefulSet as it was.
async fn recommend_writes_status_and_changes_nothing(env: &Env, arak: &Instance) {
    let before = stateful_set_versions(env).await;
    let status = poll("a status with conditions and a recommendation", || async {
        let status = status(env).await?;
        let types: Vec<&str> = status["conditions"]
            .as_array()?
            .iter()
            .filter_map(|c| c["type"].as_str())
            .collect();
        let complete = ["DataFresh", "ModelCalibrated", "RecommendationReady"]
            .iter()
            .all(|t| types.contains(t));
        // The first rounds may run before Prometheus has scraped the tested apiservers.
        let fresh = status["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "DataFresh" && c["status"] == "True");
        let predicted = status["recommendation"]["replicas"][0]["predictedCurrent"]
            .as_object()
            .is_some_and(|p| p.contains_key("cpu_utilization"));
        (complete && fresh && predicted).then_some(status)
    })
    .await;
    eprintln!(
        "status after a Recommend round:\n{}",
        serde_json::to_string_pretty(&status).unwrap()
    );
    let decision = &status["decisions"][0];
    assert_eq!(decision["mode"], "Recommend", "{decision}");
    assert_eq!(
        status["recommendation"]["replicas"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "one entry per apiserver"
    );
    assert_eq!(
        stateful_set_versions(env).await,
        before,
        "Recommend mode changed a StatefulSet"
    );
    let (code, metrics) = http_get(arak.port, "/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("arak_leader 1"), "{metrics}");
    assert!(
        metrics.contains(r#"arak_p99_seconds{replica="127.0.1.1:"#),
        "P99 exported: {metrics}"
    );
    assert!(
        metrics.contains("arak_knob_value{replica="),
        "knob values exported: {metrics}"
    );
    assert_eq!(http_get(arak.port, "/readyz").0, 200);
    assert_eq!(http_get(arak.port, "/healthz").0, 200);
}

/// (b) The second instance reports standby and exports `arak_leader 0` while the first
/// leads; after SIGTERM the first releases the lease and the second acts at once.
async fn only_the_leader_acts(env: &Env, leader: Instance, standby: &Instance) {
    poll("the second instance to report standby", || async {
        standby.log().contains("standby").then_some(())
    })
    .await;
    assert!(
        !standby.log().contains("\"decision\""),
        "the standby made a decision:\n{}",
        standby.log()
    );
    let (_, metrics) = http_get(standby.port, "/metrics");
    assert!(metrics.contains("arak_leader 0"), "{metrics}");
    assert_eq!(
        http_get(standby.port, "/readyz").0,
        200,
        "a standby is ready"
    );
    leader.stop();
    let exited_at = Instant::now();
    poll("the standby to take over", || async {
        standby.log().contains("leader: acting").then_some(())
    })
    .await;
    eprintln!(
        "standby took over {:?} after the leader exited",
        exited_at.elapsed()
    );
    assert!(
        exited_at.elapsed() < Duration::from_secs(4),
        "the leader released the lease on SIGTERM: the standby must not wait for its 6 s expiry"
    );
    let lease: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.management.clone(), &env.namespace);
    let holder = lease.get("arak").await.expect("lease").spec.unwrap();
    assert_eq!(holder.holder_identity.as_deref(), Some("arak-b"));
}

/// (c) `Off`: decisions go to the log, nothing to the status.
async fn off_writes_nothing(env: &Env, arak: &Instance) {
    set_mode(env, "Off").await;
    let off_decisions = || arak.log().matches("\"mode\":\"Off\"").count();
    poll("a decision in Off mode", || async {
        (off_decisions() >= 1).then_some(())
    })
    .await;
    let version = env
        .tunings
        .get(TUNING)
        .await
        .expect("tuning")
        .metadata
        .resource_version;
    let seen = off_decisions();
    poll("another decision in Off mode", || async {
        (off_decisions() > seen).then_some(())
    })
    .await;
    let after = env.tunings.get(TUNING).await.expect("tuning");
    assert_eq!(
        after.metadata.resource_version, version,
        "Off mode wrote to the ControlPlaneTuning"
    );
    let line = arak
        .log()
        .lines()
        .rev()
        .find(|l| l.contains("\"mode\":\"Off\""))
        .unwrap_or_default()
        .to_owned();
    assert!(line.contains("\"reason\""), "{line}");
    eprintln!("Off decision: {line}");
}

/// (d) Prometheus killed: the next round sets `DataFresh=False` and holds.
async fn prometheus_down_holds(env: &Env, cluster: &Cluster, arak: &Instance) {
    set_mode(env, "Recommend").await;
    let prometheus = cluster
        .component_pids()
        .expect("pids")
        .into_iter()
        .find(|p| p.name == "prometheus")
        .expect("a prometheus process");
    let killed = Command::new("kill")
        .args(["-KILL", &prometheus.pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = poll("DataFresh=False after Prometheus died", || async {
        let status = status(env).await?;
        let fresh = status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "DataFresh")?;
        (fresh["status"] == "False" && fresh["reason"] == "FetchFailed").then_some(status)
    })
    .await;
    let decision = &status["decisions"][0];
    assert_eq!(decision["action"], "hold", "{decision}");
    assert!(
        decision["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no fresh load data")),
        "{decision}"
    );
    let (_, metrics) = http_get(arak.port, "/metrics");
    assert!(
        metrics.contains(r#"arak_holds_total{reason="no-data"}"#),
        "{metrics}"
    );
}

/// One `arak run` process, its JSON log in a file and its HTTP port.
struct Instance {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Instance {
    fn start(env: &Env, cluster: &Cluster, identity: &str) -> Instance {
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
            .env("RUST_LOG", "arak=info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("arak run starts");
        Instance { child, log, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "arak run exited with {status}:\n{}",
                    self.log()
                );
                break;
            }
            assert!(Instant::now() < deadline, "arak run ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
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

async fn install_crd(client: &Client) {
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
fn write_fetch_config(env: &Env) {
    std::fs::write(
        env.dir.join("fetch.yaml"),
        "apiserver: { job: tested-apiserver }\n\
         scheduler: { job: tested-scheduler }\n\
         controller_manager: { job: tested-controller-manager }\n",
    )
    .expect("fetch config");
}

async fn create_tuning(env: &Env, cluster: &Cluster) {
    let port = cluster
        .env_var("ARAK_TESTED_APISERVER_PORT")
        .expect("ARAK_TESTED_APISERVER_PORT");
    let example = include_str!("../config/examples/policy.yaml");
    let mut policy: Value = serde_norway::from_str(example).expect("example policy");
    let policy = policy.as_object_mut().expect("a mapping");
    policy.remove("current");
    policy.insert("schedulers".into(), json!([]));
    policy.insert("controller_managers".into(), json!([]));
    let apiservers: Vec<Value> = (0..3)
        .map(|i| {
            json!({
                "name": format!("127.0.1.{}:{port}", i + 1),
                "stateful_set": format!("apiserver-{i}"),
                "container": "kube-apiserver",
                "node_allocatable": {"cpu_cores": 2, "memory_bytes": 8_589_934_592_u64},
            })
        })
        .collect();
    policy.insert("apiservers".into(), json!(apiservers));
    let tuning: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "arak.io/v1alpha1",
        "kind": "ControlPlaneTuning",
        "metadata": {"name": TUNING, "namespace": env.namespace},
        "spec": {
            "mode": "Recommend",
            "intervalSeconds": 5,
            "windowSeconds": 30,
            "historySeconds": 120,
            "policy": policy,
        },
    }))
    .expect("a ControlPlaneTuning");
    env.tunings
        .create(&PostParams::default(), &tuning)
        .await
        .expect("creating the ControlPlaneTuning");
}

async fn set_mode(env: &Env, mode: &str) {
    env.tunings
        .patch(
            TUNING,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"mode": mode}})),
        )
        .await
        .expect("changing the mode");
}

async fn status(env: &Env) -> Option<Value> {
    let tuning = env.tunings.get(TUNING).await.ok()?;
    tuning.data.get("status").cloned()
}

async fn stateful_set_versions(env: &Env) -> BTreeMap<String, Option<String>> {
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
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A plain HTTP/1.0 GET: status code and body.
fn http_get(port: u16, path: &str) -> (u16, String) {
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
fn use_workspace_node_agent() {
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
