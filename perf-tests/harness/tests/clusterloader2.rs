//! ClusterLoader2 (built by perf-tests/build-tools from ../shared/third_party/clusterloader2)
//! runs the project's density config (perf-tests/clusterloader2/density, 10-node override:
//! 100 pods in 10 Deployments) against the real loopback control plane with 10 KWOK nodes,
//! and its own reports are the judge: PodStartupLatency has P50/P90/P99 for `pod_startup`
//! with P99 within the 5 s SLO, SchedulingThroughput saw pods scheduled, and the junit report
//! names no failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, Outcome};
use serde_json::Value;

const NODES: u32 = 10;
/// The pods the 10-node override makes: 10 Deployments of 10 pods.
const PODS: u32 = 100;
/// The pod start-up SLO the density config checks (`CL2_POD_STARTUP_THRESHOLD`).
const POD_STARTUP_SLO_MS: f64 = 5000.0;
/// CL2 itself takes 20–30 s here; this bounds a hung run.
const CL2_TIMEOUT: Duration = Duration::from_secs(100);

#[test]
fn clusterloader2_density_on_kwok_nodes() {
    let started = Instant::now();
    let options = ClusterOptions {
        nodes: NODES,
        ..ClusterOptions::default()
    };
    let mut cluster = match Cluster::up(&options) {
        Ok(Outcome::Ready(cluster)) => cluster,
        Ok(Outcome::Skip(reason)) => {
            eprintln!("SKIPPED clusterloader2_density_on_kwok_nodes: {reason}");
            return;
        }
        Err(e) => panic!("starting the loopback cluster: {e}"),
    };
    let cl2 = cluster.tools_bin().join("clusterloader2");
    if !cl2.is_file() {
        let reason = format!(
            "{} is missing; run perf-tests/build-tools (it builds ClusterLoader2)",
            cl2.display()
        );
        assert!(
            !harness_required(),
            "ClusterLoader2 is required here: {reason}"
        );
        eprintln!("SKIPPED clusterloader2_density_on_kwok_nodes: {reason}");
        return;
    }

    let report_dir = std::env::temp_dir().join(format!("arak-cl2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&report_dir);
    std::fs::create_dir_all(&report_dir).unwrap();
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clusterloader2");
    let log = report_dir.join("clusterloader2.log");
    let cl2_started = Instant::now();
    let status = run_with_timeout(
        Command::new(&cl2)
            .arg(format!(
                "--testconfig={}",
                configs.join("density/config.yaml").display()
            ))
            .arg(format!(
                "--testoverrides={}",
                configs.join("overrides/10-nodes.yaml").display()
            ))
            .arg(format!("--nodes={NODES}"))
            .arg("--provider=local")
            .arg(format!(
                "--kubeconfig={}",
                cluster.admin_kubeconfig().display()
            ))
            .arg("--enable-exec-service=false")
            .arg("--enable-prometheus-server=false")
            .arg(format!("--report-dir={}", report_dir.display()))
            .arg("--v=2"),
        &log,
        CL2_TIMEOUT,
    );
    let cl2_secs = cl2_started.elapsed().as_secs_f64();
    assert!(
        status.success(),
        "clusterloader2 exited with {status}; last lines of {}:\n{}",
        log.display(),
        tail(&log, 40)
    );

    // PodStartupLatency: CL2's PerfData, one data item per transition, in milliseconds.
    let latency = read_json(&report_file(&report_dir, "PodStartupLatency_"));
    let pod_startup = latency["dataItems"]
        .as_array()
        .expect("PodStartupLatency has dataItems")
        .iter()
        .find(|item| item["labels"]["Metric"] == "pod_startup")
        .unwrap_or_else(|| panic!("no pod_startup item in {latency}"));
    assert_eq!(pod_startup["unit"], "ms", "{pod_startup}");
    let percentile = |name: &str| {
        pod_startup["data"][name]
            .as_f64()
            .unwrap_or_else(|| panic!("pod_startup has no {name}: {pod_startup}"))
    };
    let (p50, p90, p99) = (
        percentile("Perc50"),
        percentile("Perc90"),
        percentile("Perc99"),
    );
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99,
        "pod_startup percentiles out of order or empty: {pod_startup}"
    );
    assert!(
        p99 <= POD_STARTUP_SLO_MS,
        "pod start-up P99 {p99} ms is over the {POD_STARTUP_SLO_MS} ms SLO"
    );

    // SchedulingThroughput: pods scheduled per 1 s window.
    let throughput = read_json(&report_file(&report_dir, "SchedulingThroughput_"));
    let field = |name: &str| {
        throughput[name]
            .as_f64()
            .unwrap_or_else(|| panic!("SchedulingThroughput has no {name}: {throughput}"))
    };
    let (t50, t99, tmax) = (field("perc50"), field("perc99"), field("max"));
    assert!(
        tmax > 0.0 && t50 <= t99 && t99 <= tmax,
        "no pod was scheduled, or the percentiles are out of order: {throughput}"
    );
    // No 1 s window can have scheduled more pods than the run made.
    assert!(
        tmax <= f64::from(PODS),
        "more than {PODS} pods scheduled in one window: {throughput}"
    );

    // junit.xml: one test case per step and measurement (CL2 leaves the suite's `tests`
    // attribute at 0), none of them failed.
    let junit = std::fs::read_to_string(report_dir.join("junit.xml")).expect("junit.xml");
    let cases = junit.matches("<testcase ").count();
    assert!(cases > 1, "junit lists no step: {junit}");
    assert_eq!(attribute(&junit, "failures"), "0", "{junit}");
    assert_eq!(attribute(&junit, "errors"), "0", "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");

    eprintln!(
        "clusterloader2 density, {PODS} pods on {NODES} KWOK nodes, in {cl2_secs:.1}s: \
         pod start-up P50/P90/P99 {p50}/{p90}/{p99} ms; scheduling throughput \
         P50/P99/max {t50}/{t99}/{tmax} pods/s; {cases} junit cases (total {:.1}s)",
        started.elapsed().as_secs_f64()
    );
    cluster.down().expect("cluster down");
    let _ = std::fs::remove_dir_all(&report_dir);
}

/// The harness's own rule: under CI or `ARAK_REQUIRE_HARNESS=1` nothing may be skipped.
fn harness_required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
        || std::env::var("ARAK_REQUIRE_HARNESS").is_ok_and(|v| v == "1")
}

/// Runs `command` with stdout and stderr into `log`, killing it past `timeout`.
fn run_with_timeout(
    command: &mut Command,
    log: &Path,
    timeout: Duration,
) -> std::process::ExitStatus {
    let file = std::fs::File::create(log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("starting clusterloader2");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "clusterloader2 did not finish within {timeout:?}; last lines of {}:\n{}",
                log.display(),
                tail(log, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The one report whose name starts with `prefix` (CL2 appends the identifier, the test
/// name and a timestamp).
fn report_file(dir: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(prefix) && name.ends_with(".json"))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {prefix}*.json in {}, found {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

/// The value of the first `name="…"` attribute in `xml` (the `<testsuite>` element's).
fn attribute<'a>(xml: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let start = xml
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} attribute in {xml}"))
        + key.len();
    let len = xml[start..].find('"').expect("closing quote");
    &xml[start..start + len]
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
