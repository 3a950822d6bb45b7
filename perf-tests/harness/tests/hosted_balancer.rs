//! The hosted control plane's load balancer (HAProxy, config/test-control-plane/haproxy-lb.cfg)
//! keeps a replica out of rotation while its /readyz does not answer, as a production
//! balancer does: with two tested apiservers, one is frozen (SIGSTOP: it still accepts TCP
//! connections, as a restarting or wedged apiserver does, and never answers). HAProxy marks it
//! down within seconds, every request on a fresh connection through the balancer is then
//! served by the other, and once the frozen one is thawed it is back in rotation.
//!
//! Fresh connections matter: a client that keeps one connection open to the healthy replica
//! would pass without any health check. Without the check, the balancer (least connections
//! over two servers) would send some of these to the frozen replica, where they time out.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, Outcome};
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Requests sent through the balancer while one replica is frozen.
const REQUESTS: usize = 20;
/// Per request: a served request takes milliseconds; one routed to the frozen replica never
/// returns.
const REQUEST_TIMEOUT_S: &str = "3";
/// HAProxy checks every 2 s, gives a check 3 s, and takes a replica out after two failed
/// checks in a row (about 10 s for a frozen one), back in after two good ones.
const STATE_CHANGE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_routes_only_to_ready_apiservers() {
    let started = Instant::now();
    let options = ClusterOptions {
        nodes: 1,
        hosted: true,
        ..ClusterOptions::default()
    };
    let agent = harness::built_node_agent()
        .filter(|_| std::env::var_os("ARAK_NODE_AGENT").is_none())
        .map(|agent| agent.display().to_string());
    let mut env = vec![
        ("ARAK_HOSTED_MASTERS", "2"),
        ("ARAK_HOSTED_APISERVERS", "2"),
        ("ARAK_HOSTED_NODES", "1"),
    ];
    env.extend(agent.as_deref().map(|agent| ("ARAK_NODE_AGENT", agent)));
    let mut cluster = match Cluster::up_with_env(&options, &env) {
        Ok(Outcome::Ready(cluster)) => cluster,
        Ok(Outcome::Skip(reason)) => {
            eprintln!("SKIPPED the_balancer_routes_only_to_ready_apiservers: {reason}");
            return;
        }
        Err(e) => panic!("starting the hosted control plane: {e}"),
    };
    eprintln!("cluster up in {:.1}s", started.elapsed().as_secs_f64());
    let socket = cluster.state_dir().join("hosted/lb/admin.sock");
    // The tested cluster's CA, beside the admin's client certificate.
    let pki = PathBuf::from(
        cluster
            .env_var("ARAK_TESTED_CA_CERT")
            .expect("ARAK_TESTED_CA_CERT"),
    )
    .parent()
    .expect("the CA's directory")
    .to_path_buf();
    let lb_url = cluster
        .env_var("ARAK_TESTED_APISERVER_URL")
        .expect("ARAK_TESTED_APISERVER_URL")
        .to_owned();
    let namespace = cluster
        .env_var("ARAK_TESTED_NAMESPACE")
        .expect("ARAK_TESTED_NAMESPACE")
        .to_owned();

    let both_up = wait_for_states(&socket, &[("apiserver-0", true), ("apiserver-1", true)]);
    assert!(both_up.is_ok(), "before: {both_up:?}");

    let management = client(cluster.admin_kubeconfig()).await;
    let pods: Api<Pod> = Api::namespaced(management, &namespace);
    let pod = pods.get("apiserver-1-0").await.expect("pod apiserver-1-0");
    let pid = process_of(&pod).expect("apiserver-1-0 runs as a process");

    signal(pid, "STOP");
    let frozen = wait_for_states(&socket, &[("apiserver-0", true), ("apiserver-1", false)]);
    let outcome = frozen.and_then(|_| {
        let failed: Vec<String> = (0..REQUESTS)
            .filter_map(|_| get_through(&lb_url, &pki).err())
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {REQUESTS} requests through the balancer failed with apiserver-1 frozen: {failed:?}",
                failed.len()
            ))
        }
    });
    // Thaw before asserting, so that a failure still leaves a cluster `down` can stop.
    signal(pid, "CONT");
    let back = wait_for_states(&socket, &[("apiserver-0", true), ("apiserver-1", true)]);
    cluster.down().expect("cluster down");
    outcome.unwrap();
    back.unwrap();
}

async fn client(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// The pid of the pod's only container, which the process node agent reports as
/// `process://<pid>`.
fn process_of(pod: &Pod) -> Option<u32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .container_id
        .as_ref()?
        .strip_prefix("process://")?
        .parse()
        .ok()
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}: {status}");
}

/// One GET on a fresh connection through the balancer, as the tested cluster's admin.
fn get_through(lb_url: &str, pki: &Path) -> Result<(), String> {
    let started = Instant::now();
    let output = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", REQUEST_TIMEOUT_S, "--cacert"])
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .arg(format!("{lb_url}/api/v1/namespaces/default"))
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "after {:.1}s: {}",
            started.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Waits until HAProxy reports each named server up (true) or down (false).
fn wait_for_states(socket: &Path, want: &[(&str, bool)]) -> Result<(), String> {
    let deadline = Instant::now() + STATE_CHANGE;
    loop {
        let states = server_states(socket);
        let matches = states.as_ref().is_ok_and(|states| {
            want.iter().all(|(name, up)| {
                states
                    .iter()
                    .any(|(server, is_up)| server == name && is_up == up)
            })
        });
        if matches {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "HAProxy's servers after {STATE_CHANGE:?}: {states:?}, wanted {want:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// (server name, up) from HAProxy's `show servers state`: fields 3 (the name) and 5 (the
/// operational state, 2 = running), counted from 0.
fn server_states(socket: &Path) -> Result<Vec<(String, bool)>, String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    stream
        .write_all(b"show servers state tested_apiservers\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            Some((fields.get(3)?.to_string(), *fields.get(5)? == "2"))
        })
        .collect())
}
