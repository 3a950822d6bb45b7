//! The node agent alone against the real loopback cluster: it registers its Node and Lease,
//! runs pods bound to it as processes with expanded args and downward-API env, probes them,
//! restarts crashing containers with back-off, refuses what it cannot honour with a reason,
//! confirms deletions after SIGTERM/SIGKILL, and stops its processes when it is stopped.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, ComponentPid, Outcome};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);
const NODE: &str = "agent-test-0";
const NODE_IP: &str = "127.0.1.200";
const NAMESPACE: &str = "agent-test";

/// Stops the agent if the test fails half-way.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_probes_restarts_and_stops_pods() {
    let mut cluster = match Cluster::up(&ClusterOptions {
        nodes: 0,
        ..ClusterOptions::default()
    })
    .expect("starting the loopback cluster")
    {
        Outcome::Ready(cluster) => cluster,
        Outcome::Skip(reason) => {
            eprintln!("SKIPPED agent_runs_probes_restarts_and_stops_pods: {reason}");
            return;
        }
    };
    let work_dir = cluster.state_dir().join("node-agent-test");
    let port = cluster.base_port() + 60;
    let mut agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_node-agent"))
            .arg(format!(
                "--kubeconfig={}",
                cluster.admin_kubeconfig().display()
            ))
            .args([
                &format!("--node-name={NODE}"),
                &format!("--node-ip={NODE_IP}"),
                "--labels=arak.dev/test=agent",
                "--taints=arak.dev/test=agent:NoSchedule",
                "--crash-backoff-initial-s=0.2",
                "--crash-backoff-max-s=1",
            ])
            .arg(format!("--work-dir={}", work_dir.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("starting node-agent"),
    );
    let admin = client(cluster.admin_kubeconfig()).await;

    let node = poll("the agent's Node is Ready", || async {
        let node = Api::<Node>::all(admin.clone()).get(NODE).await.ok()?;
        let conditions = node.status.as_ref()?.conditions.as_ref()?;
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(node)
    })
    .await;
    let status = node.status.unwrap();
    assert_eq!(status.addresses.unwrap()[0].address, NODE_IP);
    assert_eq!(node.spec.unwrap().taints.unwrap()[0].key, "arak.dev/test");
    assert_eq!(node.metadata.labels.unwrap()["arak.dev/test"], "agent");
    let lease = poll("the node Lease", || async {
        Api::<Lease>::namespaced(admin.clone(), "kube-node-lease")
            .get(NODE)
            .await
            .ok()
    })
    .await;
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some(NODE));

    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap(),
        )
        .await
        .expect("namespace");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    poll("the namespace's default ServiceAccount", || async {
        create(&pods, pod("probe", "Always", json!([]))).await.ok()
    })
    .await;
    pods.delete("probe", &DeleteParams::default()).await.ok();

    let data_link = std::env::temp_dir().join(format!("arak-agent-test-{}", std::process::id()));
    let data_dir = data_link.join("data");
    create(&pods, web_pod(port, &data_dir))
        .await
        .expect("web pod");
    create(
        &pods,
        pod(
            "crasher",
            "Always",
            json!(["/bin/sh", "-c", "echo crashing; exit 3"]),
        ),
    )
    .await
    .expect("crasher pod");
    create(
        &pods,
        pod("once", "Never", json!(["/bin/sh", "-c", "exit 0"])),
    )
    .await
    .expect("once pod");
    create(
        &pods,
        pod(
            "stubborn",
            "Always",
            json!(["/bin/sh", "-c", "trap '' TERM; sleep 1000 & wait"]),
        ),
    )
    .await
    .expect("stubborn pod");
    create(
        &pods,
        pod("sleeper", "Always", json!(["/bin/sleep", "1000"])),
    )
    .await
    .expect("sleeper pod");
    let mut limited = pod("limited", "Always", json!(["/bin/sleep", "1000"]));
    limited["spec"]["containers"][0]["resources"] = json!({
        "requests": {"cpu": "100m", "memory": "32Mi"},
        "limits": {"cpu": "200m", "memory": "64Mi"},
    });
    create(&pods, limited).await.expect("limited pod");
    let mut with_token = pod("token", "Always", json!(["/bin/sleep", "1000"]));
    with_token["spec"]["automountServiceAccountToken"] = json!(true);
    create(&pods, with_token).await.expect("token pod");

    // Readiness from an HTTP probe and an exec probe on the emptyDir; env and args expanded.
    let web = poll("web Ready", || async {
        let p = pods.get("web").await.ok()?;
        condition_true(p.status.as_ref()?.conditions.as_ref()?, "Ready").then_some(p)
    })
    .await;
    let status = web.status.clone().unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some(NODE_IP));
    assert_eq!(status.host_ip.as_deref(), Some(NODE_IP));
    let ignored = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "NodeAgentIgnoredSpec")
        .and_then(|c| c.message)
        .expect("the agent lists what it ignored");
    assert!(ignored.contains("image python:3 ignored"), "{ignored}");
    let body = http_get(NODE_IP, port).await;
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert_eq!(
        std::fs::read_to_string(data_dir.join("greeting")).unwrap(),
        "hello world from web\n"
    );
    let server = process(&web, "server").expect("server process");
    let log = std::fs::read_to_string(pod_log(&work_dir, &web, "writer")).expect("writer log");
    assert!(log.contains("hello world from web on 127.0.1.200"), "{log}");

    // Crash loop: restarted with back-off, last exit code kept.
    poll("crasher restarted twice", || async {
        let p = pods.get("crasher").await.ok()?;
        let cs = p.status?.container_statuses?.into_iter().next()?;
        let last = cs.last_state?.terminated?;
        (cs.restart_count >= 2 && last.exit_code == 3).then_some(())
    })
    .await;

    // restartPolicy Never with exit 0: Succeeded.
    poll("once Succeeded", || async {
        let p = pods.get("once").await.ok()?;
        let status = p.status?;
        let terminated = status
            .container_statuses?
            .into_iter()
            .next()?
            .state?
            .terminated?;
        (status.phase.as_deref() == Some("Succeeded") && terminated.exit_code == 0).then_some(())
    })
    .await;

    // The ServiceAccount token volume (projected) cannot be honoured: said, not ignored.
    let waiting = poll("token pod refused with a reason", || async {
        let p = pods.get("token").await.ok()?;
        p.status?
            .container_statuses?
            .into_iter()
            .next()?
            .state?
            .waiting
    })
    .await;
    assert_eq!(
        waiting.reason.as_deref(),
        Some("CreateContainerConfigError")
    );
    assert!(
        waiting
            .message
            .as_deref()
            .unwrap_or("")
            .contains("projected volumes are not supported"),
        "{waiting:?}"
    );

    limits_are_enforced_and_resized_in_place(&pods).await;

    // Deletion: SIGTERM, then SIGKILL after the grace period, then the pod is removed.
    let stubborn = poll("stubborn running", || async {
        process(&pods.get("stubborn").await.ok()?, "main")
    })
    .await;
    let grace = DeleteParams {
        grace_period_seconds: Some(1),
        ..DeleteParams::default()
    };
    pods.delete("stubborn", &grace)
        .await
        .expect("deleting stubborn");
    pods.delete("web", &grace).await.expect("deleting web");
    poll("stubborn and web removed", || async {
        (pods.get_opt("stubborn").await.ok()?.is_none()
            && pods.get_opt("web").await.ok()?.is_none())
        .then_some(())
    })
    .await;
    assert!(!stubborn.is_running(), "stubborn was killed");
    assert!(!server.is_running(), "web's server was stopped");
    assert!(
        !data_link.join("data").exists(),
        "web's emptyDir link was removed"
    );

    // Agent shutdown stops the processes of the pods it still runs.
    let sleeper = poll("sleeper running", || async {
        process(&pods.get("sleeper").await.ok()?, "main")
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM to the agent");
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(exit) = agent.0.try_wait().expect("waiting for the agent") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(exit.success(), "agent exit: {exit:?}");
    assert!(!sleeper.is_running(), "the agent stopped sleeper on exit");

    let _ = std::fs::remove_dir_all(&data_link);
    cluster.down().expect("cluster down");
}

/// With cgroup v1 writable here, limits become cfs quota and memory limit, and a resize
/// through `pods/resize` changes them without restarting the process; without, the pod says
/// they are not enforced.
async fn limits_are_enforced_and_resized_in_place(pods: &Api<Pod>) {
    let before = poll("limited running", || async {
        process(&pods.get("limited").await.ok()?, "main")
    })
    .await;
    let Some(cpu_dir) = cgroup_dir(before.pid, "cpu") else {
        let p = pods.get("limited").await.expect("limited pod");
        let conditions = p.status.unwrap().conditions.unwrap();
        let note = conditions
            .iter()
            .find(|c| c.type_ == "NodeAgentIgnoredSpec");
        let message = note.and_then(|c| c.message.clone()).unwrap_or_default();
        assert!(message.contains("limits not enforced"), "{message}");
        eprintln!("cgroup v1 not writable here; checked that the pod says so");
        return;
    };
    let memory_dir = cgroup_dir(before.pid, "memory").expect("memory cgroup");
    let read = |dir: &Path, file: &str| {
        std::fs::read_to_string(dir.join(file))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(read(&cpu_dir, "cpu.cfs_quota_us"), "20000");
    assert_eq!(
        read(&memory_dir, "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );

    let resize = json!({"spec": {"containers": [{"name": "main", "resources": {
        "requests": {"cpu": "150m", "memory": "32Mi"},
        "limits": {"cpu": "300m", "memory": "64Mi"},
    }}]}});
    pods.patch_subresource(
        "resize",
        "limited",
        &PatchParams::default(),
        &Patch::Strategic(resize),
    )
    .await
    .expect("resizing limited");
    let resized = poll("limited resized in place", || async {
        let p = pods.get("limited").await.ok()?;
        let status = p.status.clone()?;
        let cs = status.container_statuses?.into_iter().next()?;
        let cpu_limit = cs.resources?.limits?.get("cpu")?.0.clone();
        (cpu_limit == "300m" && status.observed_generation == p.metadata.generation).then_some(p)
    })
    .await;
    assert_eq!(read(&cpu_dir, "cpu.cfs_quota_us"), "30000");
    assert_eq!(
        process(&resized, "main"),
        Some(before),
        "resize did not restart the process"
    );
}

/// The directory of the cgroup v1 hierarchy with `controller` that holds `pid`, if it is
/// one the agent made.
fn cgroup_dir(pid: u32, controller: &str) -> Option<PathBuf> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })?;
    if !path.contains("arak-node-agent-") {
        return None;
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == controller)).then(|| f[1])
    })?;
    Some(Path::new(mount).join(path.trim_start_matches('/')))
}

fn pod(name: &str, restart_policy: &str, command: serde_json::Value) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "restartPolicy": restart_policy,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": "busybox", "command": command}],
        }
    })
}

fn web_pod(port: u16, data_dir: &Path) -> serde_json::Value {
    let env = json!([
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "GREETING", "value": "hello"},
        {"name": "MESSAGE", "value": "$(GREETING) world from $(POD_NAME)"},
        {"name": "PORT", "value": port.to_string()},
    ]);
    let data = data_dir.display().to_string();
    json!({
        "metadata": {"name": "web"},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "server",
                    "image": "python:3",
                    "command": ["/usr/bin/python3", "-m", "http.server", "$(PORT)", "--bind", "$(POD_IP)"],
                    "env": env,
                    "readinessProbe": {"httpGet": {"port": port, "path": "/"}, "periodSeconds": 1},
                },
                {
                    "name": "writer",
                    "image": "busybox",
                    "command": ["/bin/sh", "-c", "echo \"$MESSAGE on $(POD_IP)\"; echo \"$(MESSAGE)\" > $(DATA)/greeting; exec sleep 1000"],
                    "env": env.as_array().unwrap().iter().cloned().chain([json!({"name": "DATA", "value": data})]).collect::<Vec<_>>(),
                    "volumeMounts": [{"name": "data", "mountPath": data}],
                    "readinessProbe": {"exec": {"command": ["test", "-s", format!("{data}/greeting")]}, "periodSeconds": 1},
                },
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }
    })
}

async fn create(pods: &Api<Pod>, pod: serde_json::Value) -> Result<Pod, kube::Error> {
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).expect("pod JSON"),
    )
    .await
}

fn condition_true(conditions: &[k8s_openapi::api::core::v1::PodCondition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The running process of a container, named by the agent as `process://<pid>`.
fn process(pod: &Pod, container: &str) -> Option<ComponentPid> {
    let status = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?;
    status.state.as_ref()?.running.as_ref()?;
    let pid: u32 = status
        .container_id
        .as_ref()?
        .strip_prefix("process://")?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ComponentPid {
        name: format!("{}/{container}", pod.metadata.name.as_deref().unwrap_or("")),
        pid,
        start_time: stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(19)?
            .parse()
            .ok(),
    })
}

fn pod_log(work_dir: &Path, pod: &Pod, container: &str) -> PathBuf {
    let m = &pod.metadata;
    work_dir
        .join("pods")
        .join(format!(
            "{}_{}_{}",
            m.namespace.as_deref().unwrap_or(""),
            m.name.as_deref().unwrap_or(""),
            m.uid.as_deref().unwrap_or("")
        ))
        .join("logs")
        .join(format!("{container}.log"))
}

async fn http_get(host: &str, port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .expect("connect to web");
    stream
        .write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    response
}

async fn client(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig to client config");
    Client::try_from(config).expect("kube client")
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
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
