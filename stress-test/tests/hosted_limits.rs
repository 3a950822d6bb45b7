//! With `--max-requests-inflight` and `--max-mutating-requests-inflight` set tiny on the hosted
//! test control plane's apiservers (by patching their StatefulSets, which the process node
//! agents then roll), a run as the tested cluster's ordinary user reports 429s.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, Outcome};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_stress-test");

#[test]
fn tiny_inflight_limits_give_429s() {
    // hosted-up runs the node agent; reuse a build next to this test binary when there is one.
    if let Some(agent) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("node-agent")))
        .filter(|p| p.is_file())
    {
        // SAFETY: set before any other thread of this test binary reads the environment.
        unsafe { std::env::set_var("ARAK_NODE_AGENT", agent) };
    }
    let options = ClusterOptions {
        nodes: 1,
        hosted: true,
        ..ClusterOptions::default()
    };
    let cluster = match Cluster::up(&options) {
        Ok(Outcome::Ready(c)) => c,
        Ok(Outcome::Skip(reason)) => {
            eprintln!("SKIPPED stress-test tiny_inflight_limits_give_429s: {reason}");
            return;
        }
        Err(e) => panic!("starting the loopback cluster with the hosted layer: {e}"),
    };
    let namespace = cluster
        .env_var("ARAK_TESTED_NAMESPACE")
        .expect("hosted.env names the namespace")
        .to_owned();
    let tested_load = cluster
        .env_var("ARAK_TESTED_LOAD_KUBECONFIG")
        .expect("hosted.env has the tested load kubeconfig")
        .to_owned();
    let tested_admin = cluster
        .env_var("ARAK_TESTED_KUBECONFIG")
        .expect("hosted.env has the tested admin kubeconfig")
        .to_owned();

    set_inflight_limits(&cluster, &namespace, 1, 1);
    let seats = nominal_seats(&cluster, &tested_admin);
    eprintln!("nominal seats per priority level after the patch: {seats:?}");
    assert!(
        seats.iter().all(|(_, s)| *s <= 1.0),
        "limits not in effect: {seats:?}"
    );

    let work = std::env::temp_dir().join(format!("stress-test-hosted-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let mix = work.join("writes.yaml");
    std::fs::write(
        &mix,
        "- {verb: POST, resource: configmaps, weight: 2}\n\
         - {verb: PATCH, resource: configmaps, weight: 2}\n\
         - {verb: LIST, resource: configmaps, weight: 1}\n",
    )
    .unwrap();
    // One apiserver directly: the load balancer in front would cap connections before APF.
    let pod_ip = String::from_utf8(
        kubectl(
            &cluster,
            cluster.admin_kubeconfig(),
            &[
                "-n",
                &namespace,
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=kube-apiserver",
                "-o",
                "jsonpath={.items[0].status.podIP}",
            ],
        )
        .stdout,
    )
    .unwrap();
    let port = cluster
        .env_var("ARAK_TESTED_APISERVER_PORT")
        .expect("hosted.env has the apiservers' port");
    let kubeconfig = std::fs::read_to_string(&tested_load).unwrap();
    let direct: String = kubeconfig
        .lines()
        .map(|l| match l.split_once("server:") {
            Some((indent, _)) => format!("{indent}server: https://{pod_ip}:{port}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    assert!(direct.contains(&pod_ip), "{direct}");
    let direct_path = work.join("direct.kubeconfig");
    std::fs::write(&direct_path, direct).unwrap();

    let report_path = work.join("tiny.json");
    let out = run_when_served(&[
        "--kubeconfig",
        direct_path.to_str().unwrap(),
        "--mix",
        mix.to_str().unwrap(),
        "--rps",
        "1500",
        "--duration",
        "6s",
        // More in flight than APF queues for one flow (6 queues of 50): the rest get 429.
        "--max-inflight",
        "1500",
        "--timeout",
        "30s",
        "--report",
        report_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "run failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let overall = &report["overall"];
    eprintln!("tiny limits: {overall}");
    assert_eq!(report["identity"]["system_masters"], false);
    assert!(
        overall["throttled_429"].as_u64().unwrap() > 0,
        "no 429 with --max-requests-inflight=1: {overall}"
    );
    assert!(overall["ok"].as_u64().unwrap() > 0, "{overall}");
}

fn kubectl(cluster: &Cluster, kubeconfig: &Path, args: &[&str]) -> Output {
    let out = Command::new(cluster.tools_bin().join("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Rewrites the two flags in every tested apiserver StatefulSet and waits for the roll.
fn set_inflight_limits(cluster: &Cluster, namespace: &str, readonly: u32, mutating: u32) {
    let admin = cluster.admin_kubeconfig();
    let out = kubectl(
        cluster,
        admin,
        &[
            "-n",
            namespace,
            "get",
            "statefulsets",
            "-l",
            "app.kubernetes.io/name=kube-apiserver",
            "-o",
            "json",
        ],
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = list["items"].as_array().unwrap();
    assert!(!items.is_empty(), "no apiserver StatefulSet in {namespace}");
    let started = Instant::now();
    for sts in items {
        let name = sts["metadata"]["name"].as_str().unwrap();
        let args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap();
        let mut ops = Vec::new();
        for (i, a) in args.iter().enumerate() {
            let a = a.as_str().unwrap_or_default();
            let value = if a.starts_with("--max-requests-inflight=") {
                format!("--max-requests-inflight={readonly}")
            } else if a.starts_with("--max-mutating-requests-inflight=") {
                format!("--max-mutating-requests-inflight={mutating}")
            } else {
                continue;
            };
            ops.push(serde_json::json!({
                "op": "replace",
                "path": format!("/spec/template/spec/containers/0/args/{i}"),
                "value": value,
            }));
        }
        assert_eq!(ops.len(), 2, "{name} lacks the inflight flags: {args:?}");
        let patch = serde_json::to_string(&ops).unwrap();
        kubectl(
            cluster,
            admin,
            &[
                "-n",
                namespace,
                "patch",
                "statefulset",
                name,
                "--type=json",
                "-p",
                &patch,
            ],
        );
    }
    for sts in items {
        let name = sts["metadata"]["name"].as_str().unwrap();
        kubectl(
            cluster,
            admin,
            &[
                "-n",
                namespace,
                "rollout",
                "status",
                &format!("statefulset/{name}"),
                "--timeout=180s",
            ],
        );
    }
    eprintln!("rolled the apiservers in {:?}", started.elapsed());
}

/// `apiserver_flowcontrol_nominal_limit_seats` by priority level, from a tested apiserver.
fn nominal_seats(cluster: &Cluster, tested_admin: &str) -> Vec<(String, f64)> {
    // The load balancer may still send the first requests to a replica on its way down.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new(cluster.tools_bin().join("kubectl"))
            .args(["--kubeconfig", tested_admin, "get", "--raw", "/metrics"])
            .output()
            .unwrap();
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let seats: Vec<(String, f64)> = text
                .lines()
                .filter_map(|l| l.strip_prefix("apiserver_flowcontrol_nominal_limit_seats{"))
                .filter_map(|l| {
                    let level = l.split("priority_level=\"").nth(1)?.split('"').next()?;
                    let value = l.rsplit_once(' ')?.1.parse().ok()?;
                    Some((level.to_owned(), value))
                })
                .filter(|(level, _)| level != "exempt")
                .collect();
            if !seats.is_empty() && seats.iter().all(|(_, s)| *s <= 1.0) {
                return seats;
            }
            if Instant::now() > deadline {
                return seats;
            }
        } else if Instant::now() > deadline {
            panic!(
                "reading the tested apiserver's metrics: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Runs stress-test, retrying while it cannot get an answer at the start: just after the
/// roll, the controllers' re-LISTs hold the single seats for a few seconds.
fn run_when_served(args: &[&str]) -> Output {
    for attempt in 1.. {
        let out = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
            .wait_with_output()
            .unwrap();
        if out.status.code() != Some(3) || attempt == 6 {
            return out;
        }
        eprintln!(
            "attempt {attempt}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    unreachable!()
}
