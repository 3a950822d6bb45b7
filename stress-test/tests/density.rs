//! `stress-test density` against the real loopback control plane with 20 KWOK nodes
//! (perf-tests/cluster via the `harness` crate).
//!
//! One cluster serves every case, in order: 200 pods POSTed directly, checked against what the
//! apiserver holds; 200 pods made by Deployments through kube-controller-manager, leaving
//! nothing behind; a namespace that existed before is used and kept; a timeout too short for the pods fails with its exit code and names them.

use std::path::Path;
use std::time::Duration;

mod common;

use common::{assert_success, kubectl, read_json, run, tempdir};
use harness::{Cluster, ClusterOptions, Outcome};
use serde_json::Value;

const NODES: u32 = 20;
/// The documented exit code of a density run whose pods were not all Running in time.
const EXIT_TIMEOUT: i32 = 7;

#[test]
fn density_against_the_loopback_cluster() {
    let options = ClusterOptions {
        nodes: NODES,
        ..ClusterOptions::default()
    };
    let cluster = match Cluster::up(&options) {
        Ok(Outcome::Ready(c)) => c,
        Ok(Outcome::Skip(reason)) => {
            eprintln!("SKIPPED stress-test density_against_the_loopback_cluster: {reason}");
            return;
        }
        Err(e) => panic!("starting the loopback cluster: {e}"),
    };
    let work = tempdir("density");

    direct_pods_match_the_apiserver(&cluster, &work);
    deployments_measure_and_leave_nothing(&cluster, &work);
    an_existing_namespace_is_kept(&cluster);
    too_short_a_timeout_fails_naming_the_pods(&cluster);
}

/// 200 pods POSTed at 100/s, kept: the report agrees with the pods the apiserver holds, and
/// `stress-test cleanup --run-id` removes them.
fn direct_pods_match_the_apiserver(cluster: &Cluster, work: &Path) {
    let report_path = work.join("pods.json");
    let out = run(
        cluster.load_kubeconfig(),
        &[
            "density",
            "--pods",
            "200",
            "--via",
            "pods",
            "--qps",
            "100",
            "--timeout",
            "120s",
            "--keep",
            "--report",
            report_path.to_str().unwrap(),
        ],
        Duration::from_secs(180),
    );
    assert_success(&out, "density --via pods");
    let report = read_json(&report_path);
    let stdout: Value = serde_json::from_slice(&out.stdout).expect("the JSON report on stdout");
    assert_eq!(stdout, report);
    check_complete_report(&report, 200);
    assert_eq!(report["via"], "pods");
    assert_eq!(report["create_requests"]["objects"], 200);
    assert!(report["create_requests"]["sent"].as_u64().unwrap() >= 200);

    // What the apiserver holds: 200 Running pods of the run, on the nodes the report counts.
    let run_id = report["run_id"].as_str().unwrap();
    let out = kubectl(
        cluster,
        &[
            "get",
            "pods",
            "--all-namespaces",
            "-l",
            &format!("arak.io/stress-test={run_id}"),
            "-o",
            "json",
        ],
    );
    let pods: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = pods["items"].as_array().unwrap();
    assert_eq!(items.len(), 200);
    let mut nodes: Vec<&str> = Vec::new();
    for p in items {
        assert_eq!(p["status"]["phase"], "Running", "{}", p["metadata"]["name"]);
        let node = p["spec"]["nodeName"].as_str().unwrap();
        assert!(node.starts_with("kwok-node-"), "{node}");
        nodes.push(node);
    }
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(report["nodes"]["used"], nodes.len());

    let out = run(
        cluster.load_kubeconfig(),
        &["cleanup", "--run-id", run_id],
        Duration::from_secs(180),
    );
    assert_success(&out, "cleanup --run-id");
    assert_eq!(labelled_objects(cluster), 0);
}

/// 200 pods in four Deployments: kube-controller-manager creates them, the scheduler spreads
/// them (its default topology spreading applies to ReplicaSet pods), and the run removes all.
fn deployments_measure_and_leave_nothing(cluster: &Cluster, work: &Path) {
    let report_path = work.join("deployments.json");
    let out = run(
        cluster.load_kubeconfig(),
        &[
            "density",
            "--pods",
            "200",
            "--via",
            "deployment",
            "--pods-per-deployment",
            "50",
            "--timeout",
            "120s",
            "--report",
            report_path.to_str().unwrap(),
        ],
        Duration::from_secs(300),
    );
    assert_success(&out, "density --via deployment");
    let report = read_json(&report_path);
    check_complete_report(&report, 200);
    assert_eq!(report["via"], "deployment");
    assert_eq!(report["create_requests"]["objects"], 4);
    let used = report["nodes"]["used"].as_u64().unwrap();
    assert!(used > NODES as u64 / 2 && used <= NODES as u64, "{used}");
    assert_eq!(labelled_objects(cluster), 0, "the run left objects behind");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("none left"), "{stderr}");
}

/// `--namespace` of a namespace the run did not make: the pods go there, and cleanup removes
/// the run's objects but not the namespace.
fn an_existing_namespace_is_kept(cluster: &Cluster) {
    kubectl(cluster, &["create", "namespace", "density-existing"]);
    let out = run(
        cluster.load_kubeconfig(),
        &[
            "density",
            "--pods",
            "20",
            "--pods-per-deployment",
            "7",
            "--namespace",
            "density-existing",
        ],
        Duration::from_secs(180),
    );
    assert_success(&out, "density --namespace");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    check_complete_report(&report, 20);
    assert_eq!(report["namespace"], "density-existing");
    assert_eq!(report["create_requests"]["objects"], 3);
    kubectl(cluster, &["get", "namespace", "density-existing"]);
    let left = kubectl(
        cluster,
        &[
            "get",
            "pods,deployments,replicasets",
            "-n",
            "density-existing",
            "-o",
            "name",
        ],
    );
    assert!(
        left.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// 60 pods at 10/s cannot all exist within 2 s: exit code 7, the report says so, the error
/// names how many and which pods never ran, and cleanup still happens.
fn too_short_a_timeout_fails_naming_the_pods(cluster: &Cluster) {
    let out = run(
        cluster.load_kubeconfig(),
        &[
            "density",
            "--pods",
            "60",
            "--via",
            "pods",
            "--qps",
            "10",
            "--timeout",
            "2s",
        ],
        Duration::from_secs(180),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_TIMEOUT), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report is still printed");
    assert_eq!(report["complete"], false);
    let missing = report["not_running"].as_u64().unwrap();
    assert!((30..=60).contains(&missing), "{report}");
    assert_eq!(report["running"].as_u64().unwrap() + missing, 60);
    assert!(
        stderr.contains(&format!("{missing} of 60 pods never became Running")),
        "{stderr}"
    );
    // The last pods were never sent, so their names are known and shown.
    assert!(stderr.contains("density-0000"), "{stderr}");
    assert_eq!(labelled_objects(cluster), 0, "the run left objects behind");
}

/// Every pod counted, latencies positive and ordered, throughput samples that add up.
fn check_complete_report(r: &Value, pods: u64) {
    for key in ["pods", "seen", "scheduled", "running"] {
        assert_eq!(r[key], pods, "{key}: {r}");
    }
    assert_eq!(r["not_running"], 0);
    assert_eq!(r["complete"], true);
    let duration = r["duration_s"].as_f64().unwrap();
    assert!(duration > 0.0);
    for phase in ["create_to_schedule", "schedule_to_run", "create_to_run"] {
        let l = &r["pod_startup_latency_ms"][phase];
        assert_eq!(l["count"], pods, "{phase}: {l}");
        let q: Vec<f64> = ["p50", "p90", "p99", "max"]
            .iter()
            .map(|k| l[k].as_f64().unwrap())
            .collect();
        assert!(q[0] > 0.0, "{phase}: {l}");
        assert!(q.windows(2).all(|w| w[0] <= w[1]), "{phase}: {l}");
    }
    // Create to Running can be no shorter than either part of it.
    let max = |phase: &str| r["pod_startup_latency_ms"][phase]["max"].as_f64().unwrap();
    assert!(max("create_to_run") >= max("create_to_schedule"));

    let t = &r["scheduling_throughput"];
    let interval = t["interval_s"].as_f64().unwrap();
    let samples: Vec<f64> = t["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    assert!(!samples.is_empty());
    // Every pod is scheduled in exactly one window.
    let counted: f64 = samples.iter().sum::<f64>() * interval;
    assert!((counted - pods as f64).abs() < 1e-6, "{t}");
    let q: Vec<f64> = ["p50", "p90", "p99", "max"]
        .iter()
        .map(|k| t[k].as_f64().unwrap())
        .collect();
    assert!(q.windows(2).all(|w| w[0] <= w[1]), "{t}");
    assert!(q[3] > 0.0 && q[3] <= pods as f64 / interval, "{t}");
    // Over the whole run no more pods were scheduled per second than the run had.
    let average = t["average"].as_f64().unwrap();
    assert!(
        average > 0.0 && average <= pods as f64 / duration + 1e-9,
        "{t}"
    );
}

fn labelled_objects(cluster: &Cluster) -> usize {
    let out = kubectl(
        cluster,
        &[
            "get",
            "pods,deployments,replicasets,namespaces",
            "--all-namespaces",
            "-l",
            "arak.io/stress-test",
            "-o",
            "name",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}
