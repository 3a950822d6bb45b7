//! The stress-test binary against the real loopback control plane (perf-tests/cluster via the
//! `harness` crate), checked against what the apiserver itself counted.
//!
//! One cluster serves every case, in order: rate and per-verb counts against
//! `apiserver_request_total`; cleanup leaves no labelled object; 429s from an APF level that
//! rejects are reported; the apiserver dying mid-run still gives a report. A last test needs no
//! cluster: an unreachable apiserver fails fast.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, assert_success, kubectl, read_json, run, tempdir, wait_with_timeout};
use harness::{Cluster, ClusterOptions, Outcome};
use serde_json::Value;

/// Kinds no controller writes or reads one by one, so the apiserver's counts are ours alone.
const QUIET_KINDS: [&str; 3] = ["secrets", "podtemplates", "limitranges"];

/// A priority level with one share and no queue: the load user's requests beyond its few
/// seats are rejected with 429 at once.
const TINY_APF: &str = r#"
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata: {name: arak-stress-tiny}
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    lendablePercent: 0
    limitResponse: {type: Reject}
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: arak-stress-tiny}
spec:
  priorityLevelConfiguration: {name: arak-stress-tiny}
  matchingPrecedence: 500
  distinguisherMethod: {type: ByUser}
  rules:
  - subjects: [{kind: User, user: {name: arak-load}}]
    resourceRules:
    - {verbs: ["*"], apiGroups: ["*"], resources: ["*"], namespaces: ["*"], clusterScope: true}
"#;

#[test]
fn against_the_loopback_cluster() {
    let options = ClusterOptions {
        nodes: 3,
        ..ClusterOptions::default()
    };
    let cluster = match Cluster::up(&options) {
        Ok(Outcome::Ready(c)) => c,
        Ok(Outcome::Skip(reason)) => {
            eprintln!("SKIPPED stress-test against_the_loopback_cluster: {reason}");
            return;
        }
        Err(e) => panic!("starting the loopback cluster: {e}"),
    };
    let work = tempdir("loopback");

    rate_and_counts_match_the_apiserver(&cluster, &work);
    full_run_leaves_nothing_behind(&cluster, &work);
    throttling_is_reported_as_429(&cluster, &work);
    // Last: it kills the apiserver.
    apiserver_dying_mid_run_still_reports(&cluster, &work);
}

/// 20 s at 200 req/s over kinds nothing else touches: the achieved rate is within 5 % of the
/// target, and every verb's count agrees with the apiserver's `apiserver_request_total`.
fn rate_and_counts_match_the_apiserver(cluster: &Cluster, work: &Path) {
    let report_path = work.join("rate.json");
    // Every verb often enough on each quiet kind that 2 % is more than one request.
    let mix = work.join("quiet.yaml");
    let mut yaml = String::new();
    for kind in QUIET_KINDS {
        for (verb, weight) in [
            ("GET", 2),
            ("LIST", 2),
            ("POST", 2),
            ("PUT", 2),
            ("PATCH", 2),
            ("DELETE", 1),
        ] {
            yaml.push_str(&format!(
                "- {{verb: {verb}, resource: {kind}, weight: {weight}}}\n"
            ));
        }
    }
    std::fs::write(&mix, yaml).unwrap();
    let before = request_totals(cluster);
    let out = run(
        cluster.load_kubeconfig(),
        &[
            "--mix",
            mix.to_str().unwrap(),
            "--rps",
            "200",
            "--duration",
            "20s",
            "--seed",
            "42",
            "--namespaces",
            "2",
            "--pool-size",
            "10",
            "--delete-reserve",
            "10",
            "--keep",
            "--output",
            "json",
            "--report",
            report_path.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_success(&out, "the 200 req/s run");
    let after = request_totals(cluster);
    let report = read_json(&report_path);
    let stdout_report: Value = serde_json::from_slice(&out.stdout).expect("--output json");
    assert_eq!(stdout_report["run_id"], report["run_id"]);

    let overall = &report["overall"];
    let achieved = overall["achieved_rps"].as_f64().unwrap();
    assert!(
        (achieved - 200.0).abs() <= 10.0,
        "achieved {achieved} req/s for a target of 200: {overall}"
    );
    assert_eq!(overall["errors"], 0, "{overall}");
    assert_eq!(overall["dropped"], 0, "{overall}");
    assert!(overall["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(report["identity"]["system_masters"], false);

    // Setup POSTs pool-size objects per namespace, and the DELETE reserve over the namespaces.
    let setup_posts = 10 * 2 + 10;
    let rows = report["by_verb_resource"].as_array().unwrap();
    let mut compared = 0;
    for row in rows {
        let resource = row["resource"].as_str().unwrap();
        let verb = row["verb"].as_str().unwrap();
        let mut ours = row["sent"].as_u64().unwrap();
        if verb == "POST" {
            ours += setup_posts;
        }
        // The apiserver scopes a POST to the object it names; a LIST to the namespace.
        let scope = if verb == "LIST" {
            "namespace"
        } else {
            "resource"
        };
        let key = (verb.to_owned(), resource.to_owned(), scope.to_owned());
        let server = after.get(&key).copied().unwrap_or(0) - before.get(&key).copied().unwrap_or(0);
        let allowed = (ours as f64 * 0.02).floor() as u64;
        eprintln!("{verb} {resource}: sent {ours}, apiserver counted {server}");
        assert!(ours > 100, "{verb} {resource}: only {ours} requests");
        assert!(
            server.abs_diff(ours) <= allowed,
            "{verb} {resource}: we sent {ours}, the apiserver counted {server}"
        );
        compared += 1;
    }
    assert_eq!(compared, 18, "six verbs on each quiet kind");

    // Kept objects are there until `stress-test cleanup --run-id` removes them all.
    let run_id = report["run_id"].as_str().unwrap();
    assert!(labelled_objects(cluster, Some(run_id)) > 0);
    let out = Command::new(BIN)
        .args(["cleanup", "--run-id", run_id, "--kubeconfig"])
        .arg(cluster.load_kubeconfig())
        .output()
        .unwrap();
    assert_success(&out, "stress-test cleanup --run-id");
    assert_eq!(labelled_objects(cluster, Some(run_id)), 0);
}

/// A run (over HTTP/2) that cleans up after itself leaves no labelled object, even with
/// namespaces and persistent volumes (which carry protection finalizers) among what it created.
fn full_run_leaves_nothing_behind(cluster: &Cluster, work: &Path) {
    let report_path = work.join("full.json");
    let out = run(
        cluster.load_kubeconfig(),
        &[
            "--http2",
            "--rps",
            "150",
            "--duration",
            "5s",
            "--report",
            report_path.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_success(&out, "the full run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("RESOURCE") && stdout.contains("ALL"),
        "{stdout}"
    );
    assert_eq!(labelled_objects(cluster, None), 0);
}

/// The load user's requests land in a level with one share and no queue: the report counts
/// 429s, as many as the apiserver rejected.
fn throttling_is_reported_as_429(cluster: &Cluster, work: &Path) {
    kubectl_apply(cluster, TINY_APF);
    // The apiserver picks up APF objects from its informer: give it a moment.
    std::thread::sleep(Duration::from_secs(2));
    let mix = work.join("reads.yaml");
    std::fs::write(
        &mix,
        "- {verb: LIST, resource: secrets, weight: 3}\n- {verb: GET, resource: secrets, weight: 1}\n",
    )
    .unwrap();
    let report_path = work.join("throttled.json");
    // Only the measured reads: setup creates its secrets as the same user, in the same tiny
    // level, and retries the POSTs the apiserver throttles; those 429s are not the run's.
    let before = read_429s(cluster);
    let out = run(
        cluster.load_kubeconfig(),
        &[
            "--mix",
            mix.to_str().unwrap(),
            "--rps",
            "1500",
            "--duration",
            "5s",
            "--pool-size",
            "50",
            "--report",
            report_path.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let after = read_429s(cluster);
    kubectl(
        cluster,
        &[
            "delete",
            "flowschema/arak-stress-tiny",
            "prioritylevelconfiguration/arak-stress-tiny",
        ],
    );
    assert_success(&out, "the throttled run");
    let report = read_json(&report_path);
    let throttled = report["overall"]["throttled_429"].as_u64().unwrap();
    eprintln!("throttled run: {}", report["overall"]);
    assert!(throttled > 0, "no 429 reported: {}", report["overall"]);
    let server = after - before;
    assert!(
        server.abs_diff(throttled) <= (throttled as f64 * 0.02).floor() as u64,
        "we counted {throttled} 429s, the apiserver {server}"
    );
}

/// Killing the apiserver mid-run: the run still ends on schedule, errors are counted and the
/// report is written; only cleanup fails (with its own exit code).
fn apiserver_dying_mid_run_still_reports(cluster: &Cluster, work: &Path) {
    let report_path = work.join("dying.json");
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args([
            "--rps",
            "100",
            "--duration",
            "8s",
            "--timeout",
            "2s",
            "--cleanup-wait",
            "5s",
        ])
        .arg("--report")
        .arg(&report_path)
        .arg("--kubeconfig")
        .arg(cluster.load_kubeconfig())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Setup takes about a second; kill a few seconds into the load.
    std::thread::sleep(Duration::from_secs(5));
    let apiserver = cluster
        .component_pids()
        .unwrap()
        .into_iter()
        .find(|p| p.name == "kube-apiserver")
        .expect("the cluster records the apiserver pid");
    let killed = Command::new("kill")
        .args(["-KILL", &apiserver.pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = wait_with_timeout(child.id(), &mut child, Duration::from_secs(90));
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(5),
        "cleanup against a dead apiserver must fail with exit 5: {stderr}"
    );
    assert!(stderr.contains("stress-test cleanup"), "{stderr}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    let report = read_json(&report_path);
    let overall = &report["overall"];
    eprintln!("run through an apiserver kill ({elapsed:?}): {overall}");
    assert!(overall["ok"].as_u64().unwrap() > 0, "{overall}");
    assert!(overall["errors"].as_u64().unwrap() > 0, "{overall}");
    assert_eq!(report["interrupted"], false);
    let scheduled = overall["scheduled"].as_u64().unwrap();
    assert!(
        (600..=1000).contains(&scheduled),
        "the schedule kept going: {scheduled} of ~800"
    );
}

#[test]
fn unreachable_apiserver_fails_fast_and_clearly() {
    let work = tempdir("unreachable");
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = work.join("dead.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user: {{token: abc}}\ncontexts:\n- name: dead\n  context: {{cluster: dead, user: u}}\ncurrent-context: dead\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["--rps", "10", "--duration", "1s", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cannot reach the apiserver"), "{stderr}");
    assert!(stderr.contains(&port.to_string()), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_bad_mix_is_refused_before_any_request() {
    let work = tempdir("badmix");
    let mix = work.join("mix.yaml");
    std::fs::write(&mix, "- {verb: POST, resource: nodes, weight: 1}\n").unwrap();
    // No kubeconfig is even read: the mix is checked first.
    let out = Command::new(BIN)
        .arg("--mix")
        .arg(&mix)
        .args(["--kubeconfig", "/nonexistent"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("POST") && stderr.contains("nodes"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_are_refused_before_any_request_naming_the_flag() {
    let work = tempdir("badflags");
    let huge = work.join("huge.yaml");
    std::fs::write(
        &huge,
        "- {verb: GET, resource: secrets, weight: 1e308}\n- {verb: LIST, resource: secrets, weight: 1e308}\n",
    )
    .unwrap();
    let unwritable = work.join("no-such-dir").join("report.json");
    let cases: [(Vec<&str>, &str); 6] = [
        (vec!["--rps", "0"], "--rps"),
        (vec!["--rps", "1e12"], "--rps"),
        (vec!["--duration", "0s"], "--duration"),
        (vec!["--timeout", "0s"], "--timeout"),
        (vec!["--mix", huge.to_str().unwrap()], "add up to inf"),
        (vec!["--report", unwritable.to_str().unwrap()], "--report"),
    ];
    for (args, named) in cases {
        // No kubeconfig exists: a refusal that names the flag came before any connection.
        let out = Command::new(BIN)
            .args(&args)
            .args(["--kubeconfig", "/nonexistent"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(!stderr.contains("kubeconfig"), "{args:?}: {stderr}");
    }
    assert!(!unwritable.exists());
}

fn kubectl_apply(cluster: &Cluster, manifest: &str) {
    use std::io::Write as _;
    let mut child = Command::new(cluster.tools_bin().join("kubectl"))
        .arg("--kubeconfig")
        .arg(cluster.admin_kubeconfig())
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_success(&out, "kubectl apply");
}

/// Labelled objects of every kind the run may create, seen by the admin.
fn labelled_objects(cluster: &Cluster, run_id: Option<&str>) -> usize {
    let selector = match run_id {
        Some(id) => format!("arak.io/stress-test={id}"),
        None => "arak.io/stress-test".to_owned(),
    };
    let kinds = "configmaps,secrets,services,serviceaccounts,endpoints,limitranges,\
                 resourcequotas,persistentvolumeclaims,persistentvolumes,podtemplates,\
                 replicationcontrollers,deployments,replicasets,statefulsets,cronjobs,namespaces";
    let out = kubectl(
        cluster,
        &[
            "get",
            kinds,
            "--all-namespaces",
            "-l",
            &selector,
            "-o",
            "name",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// The apiserver's own /metrics, read as the admin.
fn metrics(cluster: &Cluster) -> String {
    let out = kubectl(cluster, &["get", "--raw", "/metrics"]);
    String::from_utf8(out.stdout).unwrap()
}

/// The labels of an `apiserver_request_total` sample, and its value.
fn request_total_samples(text: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("apiserver_request_total{"))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once("} ")?;
            let labels = labels
                .split("\",")
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

/// `apiserver_request_total` summed over codes, by (verb, resource, scope), top-level only.
fn request_totals(cluster: &Cluster) -> BTreeMap<(String, String, String), u64> {
    let mut totals = BTreeMap::new();
    for (l, v) in request_total_samples(&metrics(cluster)) {
        if l.get("subresource").is_some_and(|s| !s.is_empty()) {
            continue;
        }
        let key = (
            l.get("verb").cloned().unwrap_or_default(),
            l.get("resource").cloned().unwrap_or_default(),
            l.get("scope").cloned().unwrap_or_default(),
        );
        *totals.entry(key).or_default() += v as u64;
    }
    totals
}

/// 429s the apiserver answered to GET and LIST of secrets.
fn read_429s(cluster: &Cluster) -> u64 {
    request_total_samples(&metrics(cluster))
        .into_iter()
        .filter(|(l, _)| {
            l.get("code").is_some_and(|c| c == "429")
                && l.get("resource").is_some_and(|r| r == "secrets")
                && l.get("verb").is_some_and(|v| v == "GET" || v == "LIST")
        })
        .map(|(_, v)| v as u64)
        .sum()
}
