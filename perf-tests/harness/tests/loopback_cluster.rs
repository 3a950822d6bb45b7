//! Brings up the real loopback control plane with three KWOK nodes and checks, in order:
//! both identities reach the apiserver (and the load user is an ordinary user), the fake
//! nodes are Ready, a Deployment's pods run on them, Prometheus scrapes every component,
//! and `down` leaves no process behind.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, Outcome};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Container, Namespace, Node, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODES: u32 = 3;
const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_cluster_up_check_down() {
    let started = Instant::now();
    let options = ClusterOptions {
        nodes: NODES,
        ..ClusterOptions::default()
    };
    let outcome =
        Cluster::up(&options).unwrap_or_else(|e| panic!("starting the loopback cluster: {e}"));
    let mut cluster = match outcome {
        Outcome::Ready(cluster) => cluster,
        Outcome::Skip(reason) => {
            eprintln!("SKIPPED loopback_cluster_up_check_down: {reason}");
            return;
        }
    };
    eprintln!(
        "cluster up in {:.1}s: apiserver {}, prometheus {}, state {}",
        started.elapsed().as_secs_f64(),
        cluster.apiserver_url(),
        cluster.prometheus_url(),
        cluster.state_dir().display()
    );

    let admin = client(cluster.admin_kubeconfig()).await;
    let load = client(cluster.load_kubeconfig()).await;

    let admin_groups = groups(&admin).await;
    assert!(
        admin_groups.iter().any(|g| g == "system:masters"),
        "admin groups: {admin_groups:?}"
    );
    let load_groups = groups(&load).await;
    assert!(
        !load_groups.iter().any(|g| g == "system:masters"),
        "the load identity must not bypass APF, but its groups are {load_groups:?}"
    );
    assert!(
        load_groups.iter().any(|g| g == "system:authenticated"),
        "load groups: {load_groups:?}"
    );

    // The load user is limited by RBAC too: it may read nodes, not delete them.
    let load_nodes: Api<Node> = Api::all(load.clone());
    let denied = load_nodes
        .delete("kwok-node-0", &DeleteParams::default())
        .await
        .expect_err("the load user must not delete nodes");
    assert!(
        matches!(&denied, kube::Error::Api(status) if status.code == 403),
        "expected 403, got {denied:?}"
    );

    let ready_nodes = poll("KWOK nodes Ready", || async {
        let nodes = Api::<Node>::all(admin.clone())
            .list(&ListParams::default().labels("type=kwok"))
            .await
            .ok()?;
        let ready: Vec<String> = nodes
            .items
            .iter()
            .filter(|n| is_ready(n))
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        (ready.len() == NODES as usize).then_some(ready)
    })
    .await;
    eprintln!("ready nodes: {ready_nodes:?}");

    run_deployment_on_kwok(&load).await;
    every_target_up(cluster.prometheus_url()).await;

    eprint!("{}", cluster.status().expect("cluster status"));
    let pids = cluster.component_pids().expect("reading recorded pids");
    assert!(
        pids.len() >= 7,
        "expected six components and the watchdog, got {pids:?}"
    );
    assert!(
        pids.iter().all(|p| p.is_running()),
        "every recorded process runs before down: {pids:?}"
    );
    cluster.down().expect("cluster down");
    let left: Vec<String> = pids
        .iter()
        .filter(|p| p.is_running())
        .map(ToString::to_string)
        .collect();
    assert!(left.is_empty(), "processes left after down: {left:?}");
    assert!(
        !cluster.state_dir().exists(),
        "down removes the state directory"
    );
    eprintln!(
        "up, checks and down in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

async fn client(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig to client config");
    Client::try_from(config).expect("kube client")
}

async fn groups(client: &Client) -> Vec<String> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview");
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.groups)
        .unwrap_or_default()
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// As the load user: a namespace and a 3-replica Deployment, whose pods the scheduler must
/// bind to KWOK nodes and KWOK must report Running.
async fn run_deployment_on_kwok(load: &Client) {
    let namespace = "harness-smoke";
    Api::<Namespace>::all(load.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(namespace.into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .expect("the load user creates a namespace");

    let labels = BTreeMap::from([("app".to_owned(), "smoke".to_owned())]);
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some("smoke".into()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(3),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "pause".into(),
                        image: Some("registry.k8s.io/pause:3.10".into()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    // The namespace's default ServiceAccount, which admission requires, appears shortly
    // after the namespace; retry until it exists.
    let deployments: Api<Deployment> = Api::namespaced(load.clone(), namespace);
    poll("Deployment created", || async {
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .ok()
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(load.clone(), namespace);
    let placed = poll("3 pods Running on KWOK nodes", || async {
        let list = pods
            .list(&ListParams::default().labels("app=smoke"))
            .await
            .ok()?;
        let running: Vec<(String, String)> = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone()?;
                node.starts_with("kwok-node-")
                    .then(|| (p.metadata.name.clone().unwrap_or_default(), node))
            })
            .collect();
        (running.len() == 3).then_some(running)
    })
    .await;
    eprintln!("pods placed: {placed:?}");
}

/// Polls Prometheus until every scrape target reports `up == 1`, and the expected jobs are
/// all among them.
async fn every_target_up(prometheus_url: &str) {
    let address = prometheus_url
        .strip_prefix("http://")
        .expect("Prometheus URL is plain http on loopback")
        .to_owned();
    let expected = [
        "apiserver",
        "etcd",
        "kube-controller-manager",
        "kube-scheduler",
        "prometheus",
    ];
    let mut last = String::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(body) = http_get(&address, "/api/v1/query?query=up").await {
            let targets = up_by_target(&body);
            if expected
                .iter()
                .all(|job| targets.keys().any(|t| t.starts_with(&format!("{job}@"))))
                && targets.values().all(|up| up == "1")
            {
                eprintln!("prometheus targets: {targets:?}");
                return;
            }
            last = format!("{targets:?}");
        }
        assert!(
            Instant::now() < deadline,
            "not every Prometheus target is up after {WAIT:?}: {last}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `up` per target, keyed by `job@instance`.
fn up_by_target(body: &str) -> BTreeMap<String, String> {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else {
        return BTreeMap::new();
    };
    json["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let target = format!(
                "{}@{}",
                r["metric"]["job"].as_str().unwrap_or("?"),
                r["metric"]["instance"].as_str().unwrap_or("?")
            );
            (target, r["value"][1].as_str().unwrap_or("?").to_owned())
        })
        .collect()
}

/// A minimal HTTP/1.0 GET: Prometheus on loopback is plain HTTP, and HTTP/1.0 makes it
/// answer with a plain body and close the connection.
async fn http_get(address: &str, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP header end"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(
            head.lines().next().unwrap_or("").to_owned(),
        ));
    }
    Ok(body.to_owned())
}

async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
