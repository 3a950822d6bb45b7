//! `arak run` in `Auto` on the hosted test control plane under a step of stress-test load,
//! with what a request costs calibrated from the CPU the apiserver really used:
//!
//! 1. light load, which the apiserver's 250m request carries easily: every round holds,
//!    nothing is applied, the apiserver keeps its process;
//! 2. the step up: arak raises the apiserver's CPU through the updater (resized in place:
//!    the inflight limits and APF queues are pinned), records it in the status and as an
//!    Event, and the running pod carries the new request, its process never restarted.
//!    It may take a second raise when this machine's CPU per request needs it; it is done
//!    when a round on a window clear of the last apply is content;
//! 3. the load stays at the higher level: arak holds round after round, applies nothing and
//!    restarts nothing; a round may wish to lower on a low reading, which the scale-down delay
//!    holds (raising again would be applied at once, and fail the test).
//!
//! The policy's priors are far too low for the step to need more CPU (0.2 ms per read,
//! 0.5 ms per write: 0.05 cores at the heavy rate), and the policy acts on no less than
//! medium confidence, which priors alone never have: only the calibration can explain a raise.

mod controller_support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use controller_support::{
    Env, Instance, block_on, create_tuning, hosted_policy_for, http_get, pod_process, process_flag,
    start, status, use_workspace_node_agent,
};
use harness::Cluster;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

/// Requests per second of phase 1: well within 250m (about 2 ms of CPU per request of
/// stress-test's default mix on this machine).
const LIGHT_RPS: &str = "10";
/// Requests per second of phases 2 and 3: above the 85% of its 250m the policy lets the one
/// apiserver use and below the 85% of 500m (the most one apply may give, twice the CPU), so
/// noise on this shared machine neither hides the step nor pushes a second raise. With the
/// components' own ~30 requests/s, 2.1–3.2 ms of CPU per request were measured here on
/// 2026-12-07 (0.34–0.52 cores at 160/s in all): at the 130/s used before, 500m sat at the
/// headroom's edge and arak rightly raised again, with this session's code and the last
/// landed one alike. At 90/s: 0.25–0.38 cores.
const HEAVY_RPS: &str = "90";
const TEMPLATE_CPU_CORES: f64 = 0.25;
const POD: &str = "apiserver-0-0";
const CONTAINER: &str = "kube-apiserver";
/// Rounds (5 s apart) that must hold with a calibrated model before the step.
const LIGHT_ROUNDS: usize = 4;
/// Rounds that must hold once arak is content with the raised settings.
const STEADY_ROUNDS: usize = 6;
/// Of those, rounds after the cooldown ran out, when nothing but the model holds arak back.
const PAST_COOLDOWN_ROUNDS: usize = 2;
/// Applies allowed between the step and arak being content: the step limit doubles the CPU
/// at most per apply, so a large step may take two (each raising it).
const MAX_APPLIES: usize = 2;
/// Seconds after an apply in which nothing changes: the 30 s window then still covers the
/// change itself. Without it, when the apply rolled the one apiserver, arak acted on the
/// restart's dip in the load (one run went 250m -> 500m -> 250m -> 500m under the same load).
const COOLDOWN_S: u32 = 60;
/// Hold reasons of a model content with the running settings (the cooldown is not one).
const CONTENT: [&str; 2] = ["the recommended settings are the current ones", "deadband"];
/// The hold of a wish to lower: under a steady load the CPU measured per request wanders on
/// this shared machine (CI once saw 250m -> 500m -> 750m -> 500m), and arak's scale-down delay
/// is what keeps such a wish from undoing a raise. Such a round wants no more than it has.
const SCALE_DOWN_DELAY: &str = "scale-down delay";

#[test]
fn auto_raises_under_a_load_step_and_holds_when_steady() {
    use_workspace_node_agent();
    // One master and one apiserver: the whole load lands on one replica, which the test can
    // overload cheaply on two cores, and the cluster itself costs less.
    // SAFETY: called first thing in the only test of its binary, before any runtime or other
    // thread exists that could read or write the environment.
    unsafe {
        std::env::set_var("ARAK_HOSTED_MASTERS", "1");
        std::env::set_var("ARAK_HOSTED_APISERVERS", "1");
    }
    block_on(case());
}

async fn case() {
    let started = Instant::now();
    let Some((cluster, env)) = start("auto_raises_under_a_load_step_and_holds_when_steady").await
    else {
        return;
    };
    let mut policy = hosted_policy_for(&cluster, 1);
    // The test has minutes, not the hours of history and the ten-minute cooldown a real
    // control plane should wait for: a cooldown just past the window, and a forecast two
    // history steps ahead, as its load steps are a minute apart. Phase 3 counts only holds
    // in which the model itself is content, so the cooldown cannot hide a wish to change.
    // The plan is the point forecast: with the upper quantile the step's own jump widens
    // the interval for the whole 120 s history, and arak planned 1.3–1.7 times the load it
    // had measured and raised again to 750m under the steady load in two of four runs.
    policy["safety"] = json!({
        "deadband_saving_share": 0.05,
        "cooldown_s": COOLDOWN_S,
        "min_confidence": "medium",
    });
    policy["bounds"]["apiserver"]["cpu_cores"] = json!({"min": 0.25, "max": 2, "step": 0.25});
    // The inflight limits and the APF room stay as the template sets them (400, 200, and
    // a hand of 6 queues × 50): changing a flag rolls the one apiserver, whose restart then sits in
    // the next windows (the load dips, start-up CPU counts as request cost) and makes the
    // hold in phase 3 depend on the search's choice of limits, which another change owns.
    // The test is about the CPU, which the updater resizes in place.
    policy["bounds"]["apiserver"]["max_requests_inflight"] =
        json!({"min": 400, "max": 400, "step": 10});
    policy["bounds"]["apiserver"]["max_mutating_requests_inflight"] =
        json!({"min": 200, "max": 200, "step": 5});
    policy["bounds"]["apiserver"]["queue_length"] = json!({"min": 300, "max": 300, "step": 25});
    policy["forecast"]["horizon_s"] = json!(30);
    policy["forecast"]["quantile"] = json!(0.5);
    policy["calibration"]["min_samples"] = json!(4);
    policy["calibration"]["read_only"] = json!({"cpu_s": 0.0002, "non_cpu_s": 0.015});
    policy["calibration"]["mutating"] = json!({"cpu_s": 0.0005, "non_cpu_s": 0.025});
    create_tuning(&env, "Auto", policy).await;
    let mut load = Load::start(&cluster, &env.dir, LIGHT_RPS);
    let arak = Instance::start(
        &env,
        &cluster,
        "arak-auto",
        &["--soak", "3s", "--pod-ready-timeout", "3m"],
    );
    let load_log = load.log.clone();
    let watch = Watch {
        env: &env,
        arak: &arak,
        load: &load_log,
        prometheus_port: cluster
            .prometheus_url()
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("Prometheus on a loopback port"),
    };

    // Phase 1: light load.
    let pods: Api<Pod> = Api::namespaced(env.management.clone(), &env.namespace);
    let first = watch
        .until("the apiserver runs", Duration::from_secs(60), || async {
            pod_process(&pods.get(POD).await.ok()?, CONTAINER)
        })
        .await;
    // The calibration needs `min_samples` history points 15 s apart once Prometheus scrapes
    // the apiserver: a minute or more after the cluster is up, about 70 s here.
    let light = watch
        .until(
            "rounds to hold with a calibrated model under light load",
            Duration::from_secs(180),
            || async {
                let status = status(&env).await?;
                watch.no_apply(&status, "under light load").await;
                let decisions = status["decisions"].as_array()?;
                (decisions.len() >= LIGHT_ROUNDS
                    && calibrated(&status)
                    && is_content(&decisions[0]))
                .then_some(status)
            },
        )
        .await;
    let phase1_pid = pod_process(&pods.get(POD).await.expect("pod"), CONTAINER);
    assert_eq!(
        phase1_pid.as_ref(),
        Some(&first),
        "the apiserver restarted under light load\n{}",
        watch.report().await
    );
    assert_eq!(
        cpu_request(&pods.get(POD).await.expect("pod")),
        Some(TEMPLATE_CPU_CORES),
        "{}",
        watch.report().await
    );
    eprintln!(
        "phase 1 after {:?}: {} rounds held; {}",
        started.elapsed(),
        light["decisions"].as_array().map_or(0, Vec::len),
        condition(&light, "ModelCalibrated")
    );

    // Phase 2: the step up.
    let step = Instant::now();
    load.switch(&cluster, HEAVY_RPS);
    let raised = watch
        .until(
            "a change applied after the step",
            Duration::from_secs(150),
            || async {
                let status = status(&env).await?;
                status["lastApplied"].is_object().then_some(status)
            },
        )
        .await;
    eprintln!(
        "applied {:?} after the step: {}\n{}",
        step.elapsed(),
        raised["lastApplied"],
        condition(&raised, "ModelCalibrated")
    );
    let applied = &raised["lastApplied"];
    assert_eq!(applied["outcome"], "Applied", "{}", watch.report().await);
    assert!(
        changes(applied).iter().any(|c| c.contains(" cpu 250m -> ")),
        "the first change raises the CPU\n{}",
        watch.report().await
    );
    // The round that applied acted on a fitted model, not the priors.
    assert!(calibrated(&raised), "{}", watch.report().await);
    // The raise is remembered, so that no round lowers it within the scale-down delay.
    assert!(
        raised["raisedAt"]
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k.ends_with("/cpu_cores"))),
        "status.raisedAt records the CPU raise: {}\n{}",
        raised["raisedAt"],
        watch.report().await
    );

    // Every apply since the step, by time: its reason names the knobs it changed.
    let applies: RefCell<BTreeMap<String, String>> = RefCell::default();
    let content = watch
        .until(
            "arak to be content with the raised settings",
            Duration::from_secs(240),
            || async {
                let status = status(&env).await?;
                let decisions = status["decisions"].as_array()?;
                let count = {
                    let mut applies = applies.borrow_mut();
                    for d in decisions.iter().filter(|d| d["action"] == "applied") {
                        applies.insert(
                            d["time"].as_str().unwrap_or_default().to_owned(),
                            d["reason"].as_str().unwrap_or_default().to_owned(),
                        );
                    }
                    applies.len()
                };
                let lowered = applies.borrow().values().any(|r| lowers_cpu(r));
                assert!(
                    count <= MAX_APPLIES && !lowered,
                    "{count} applies after the step (at most {MAX_APPLIES}, none lowering the CPU)\n{}",
                    watch.report().await
                );
                settled(&decisions[0]).then_some(status)
            },
        )
        .await;
    let pod = pods.get(POD).await.expect("pod");
    let cpu = cpu_request(&pod).expect("a CPU request");
    assert!(
        cpu > TEMPLATE_CPU_CORES,
        "CPU request of the running pod: {cpu}\n{}",
        watch.report().await
    );
    assert_eq!(
        reported_cpu_request(&pod),
        Some(cpu),
        "the node agent reports the resized request\n{}",
        watch.report().await
    );
    let process = pod_process(&pod, CONTAINER).expect("the apiserver runs");
    let applies = applies.into_inner();
    let events = applied_events(&env).await;
    // Each apply is an Event of its own with its own note (arak publishes changes through a
    // fresh recorder, which folds nothing into an earlier series).
    let occurrences: i32 = events.iter().map(|(_, count)| count).sum();
    assert_eq!(
        (events.len(), usize::try_from(occurrences).ok()),
        (applies.len(), Some(applies.len())),
        "one Applied event per apply, each with its note\n{}",
        watch.report().await
    );
    // A changed flag rolls the pod (a new process); CPU alone is resized in place.
    let rolled = events.iter().any(|(note, _)| note.contains("(Roll)"));
    if rolled {
        assert_ne!(
            process,
            first,
            "the roll left the old apiserver running\n{}",
            watch.report().await
        );
    } else {
        assert_eq!(
            process,
            first,
            "an in-place resize restarted the apiserver\n{}",
            watch.report().await
        );
    }
    // Whatever arak changed, the running process carries the limits it now reads as current.
    let current = &content["recommendation"]["replicas"][0]["current"];
    for (knob, flag, default) in [
        ("max_requests_inflight", "--max-requests-inflight", 400.0),
        (
            "max_mutating_requests_inflight",
            "--max-mutating-requests-inflight",
            200.0,
        ),
    ] {
        let running = process_flag(process.pid, flag).map_or(Some(default), |v| v.parse().ok());
        assert_eq!(
            running,
            current[knob].as_f64(),
            "{flag} of the running apiserver\n{}",
            watch.report().await
        );
    }
    eprintln!(
        "content {:?} after the step: cpu {cpu}, rolled: {rolled}, predicted now: {}\nmeasured:\n{}\napplies: {applies:#?}\nevents: {events:#?}",
        step.elapsed(),
        content["recommendation"]["replicas"][0]["predictedCurrent"],
        watch.measured(),
    );

    // Phase 3: the load stays at the higher level.
    let steady = Instant::now();
    let seen = decision_times(&content);
    let held = watch
        .until(
            "rounds under steady load",
            Duration::from_secs(120),
            || async {
                let status = status(&env).await?;
                let new: Vec<&Value> = status["decisions"]
                    .as_array()?
                    .iter()
                    .filter(|d| !seen.contains(d["time"].as_str().unwrap_or_default()))
                    .collect();
                assert!(
                    !new.iter().copied().any(acted),
                    "arak did not hold under steady load\n{}",
                    watch.report().await
                );
                let content: Vec<&&Value> = new.iter().filter(|d| at_rest(d)).collect();
                let past_cooldown = content
                    .iter()
                    .filter(|d| !d["reason"].as_str().unwrap_or("").contains("cooldown"))
                    .count();
                (content.len() >= STEADY_ROUNDS && past_cooldown >= PAST_COOLDOWN_ROUNDS)
                    .then_some(status)
            },
        )
        .await;
    assert_eq!(
        held["lastApplied"],
        content["lastApplied"],
        "{}",
        watch.report().await
    );
    let pod = pods.get(POD).await.expect("pod");
    assert_eq!(
        pod_process(&pod, CONTAINER).as_ref(),
        Some(&process),
        "the apiserver restarted under steady load\n{}",
        watch.report().await
    );
    assert_eq!(cpu_request(&pod), Some(cpu), "{}", watch.report().await);
    eprintln!(
        "phase 3: {STEADY_ROUNDS}+ rounds held ({PAST_COOLDOWN_ROUNDS}+ past the cooldown) in {:?}; the last: {}",
        steady.elapsed(),
        held["decisions"][0]["reason"]
    );
    drop(load);
    arak.stop();
    eprintln!("done in {:?}", started.elapsed());
}

/// What the test looks at, and everything it saw for a failure message.
struct Watch<'a> {
    env: &'a Env,
    arak: &'a Instance,
    load: &'a Path,
    prometheus_port: u16,
}

impl Watch<'_> {
    /// Polls `check` until it gives a value; past `wait`, fails with the report.
    async fn until<T, F, Fut>(&self, what: &str, wait: Duration, mut check: F) -> T
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
                "timed out after {wait:?} waiting for {what}\n{}",
                self.report().await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn no_apply(&self, status: &Value, when: &str) {
        let acted = status["lastApplied"].is_object()
            || status["decisions"]
                .as_array()
                .is_some_and(|d| d.iter().any(acted));
        assert!(!acted, "arak acted {when}\n{}", self.report().await);
    }

    /// The status, arak's last log lines and the load generator's output.
    async fn report(&self) -> String {
        let status = status(self.env)
            .await
            .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default())
            .unwrap_or_else(|| "(no status)".into());
        format!(
            "status:\n{status}\nmeasured:\n{}\narak log (last 40 lines):\n{}\nstress-test:\n{}",
            self.measured(),
            tail(&self.arak.log(), 40),
            tail(&std::fs::read_to_string(self.load).unwrap_or_default(), 20)
        )
    }

    /// What the apiserver really used and served over the last window, against which the
    /// status's predictions can be read.
    fn measured(&self) -> String {
        let measured: Vec<String> = [
            "rate(process_cpu_seconds_total{job=\"tested-apiserver\"}[30s])",
            "sum(rate(apiserver_request_total{job=\"tested-apiserver\"}[30s]))",
        ]
        .iter()
        .map(|query| {
            let path = format!("/api/v1/query?query={}", percent_encode(query));
            format!("{query}: {}", http_get(self.prometheus_port, &path).1)
        })
        .collect();
        measured.join("\n")
    }
}

/// A PromQL query as a URL query value.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a round did (or in another mode would have done) anything but hold. Rounds that
/// fail (`error`) change nothing: on a loaded machine a query may time out, and that is not
/// arak changing things.
fn acted(decision: &Value) -> bool {
    !matches!(decision["action"].as_str(), Some("hold" | "error"))
}

fn is_content(decision: &Value) -> bool {
    let reason = decision["reason"].as_str().unwrap_or_default();
    decision["action"] == "hold" && CONTENT.iter().any(|c| reason.contains(c))
}

/// Holds wanting no more than the running settings: content, or held from lowering.
fn at_rest(decision: &Value) -> bool {
    let reason = decision["reason"].as_str().unwrap_or_default();
    is_content(decision) || (decision["action"] == "hold" && reason.contains(SCALE_DOWN_DELAY))
}

/// At rest on a window that no longer covers an apply: a hold in the cooldown or while
/// settling may be content with numbers the resize has not yet reached (in CI, a round 22 s
/// after the raise to 500m was content, and the first clean window, with more CPU per
/// request than this machine shows, raised again to 750m: right, as the load did not fit).
fn settled(decision: &Value) -> bool {
    let reason = decision["reason"].as_str().unwrap_or_default();
    at_rest(decision) && !reason.contains("cooldown") && !reason.contains("settling")
}

fn calibrated(status: &Value) -> bool {
    status["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "ModelCalibrated" && c["status"] == "True")
    })
}

fn condition(status: &Value, kind: &str) -> String {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .map(|c| format!("{kind} {}: {}", c["status"], c["message"]))
        .unwrap_or_else(|| format!("no {kind} condition"))
}

fn changes(applied: &Value) -> Vec<&str> {
    applied["changes"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether an applied decision's reason (`replica cpu_cores 0.5 -> 0.25, ...`) lowers the CPU.
fn lowers_cpu(reason: &str) -> bool {
    reason.split(", ").any(|change| {
        let Some((_, values)) = change.split_once(" cpu_cores ") else {
            return false;
        };
        let mut values = values.split(" -> ").map(|v| v.parse::<f64>().ok());
        matches!((values.next(), values.next()), (Some(Some(from)), Some(Some(to))) if to < from)
    })
}

fn decision_times(status: &Value) -> BTreeSet<String> {
    status["decisions"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|d| d["time"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn cpu_request(pod: &Pod) -> Option<f64> {
    let container = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)?;
    updater::quantity::parse(
        container
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("cpu")?,
    )
}

/// The request the node agent reports the container runs with.
fn reported_cpu_request(pod: &Pod) -> Option<f64> {
    let status = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == CONTAINER)?;
    updater::quantity::parse(status.resources.as_ref()?.requests.as_ref()?.get("cpu")?)
}

/// The Applied events of the tuning: note and occurrences.
async fn applied_events(env: &Env) -> Vec<(String, i32)> {
    let events: Api<Event> = Api::namespaced(env.management.clone(), &env.namespace);
    events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("Applied")
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref())
                    == Some("ControlPlaneTuning")
        })
        .map(|e| (e.note.unwrap_or_default(), e.series.map_or(1, |s| s.count)))
        .collect()
}

/// stress-test against the tested cluster's load balancer, as its ordinary load user; its
/// output goes to a file for the failure report.
struct Load {
    child: Child,
    log: PathBuf,
}

impl Load {
    fn start(cluster: &Cluster, dir: &Path, rps: &str) -> Load {
        let log = dir.join("stress-test.log");
        Load {
            child: spawn_load(cluster, &log, rps),
            log,
        }
    }

    /// The same load at another rate, from now on.
    fn switch(&mut self, cluster: &Cluster, rps: &str) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_load(cluster, &self.log, rps);
    }
}

fn spawn_load(cluster: &Cluster, log: &Path, rps: &str) -> Child {
    let output = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("stress-test log");
    Command::new(stress_test_binary())
        .arg("--kubeconfig")
        .arg(
            cluster
                .env_var("ARAK_TESTED_LOAD_KUBECONFIG")
                .expect("ARAK_TESTED_LOAD_KUBECONFIG"),
        )
        .args(["--rps", rps, "--duration", "10m"])
        .stdout(output.try_clone().expect("stress-test log"))
        .stderr(output)
        .spawn()
        .expect("stress-test starts")
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace's stress-test next to this test's binary, built if absent.
fn stress_test_binary() -> PathBuf {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("stress-test")))
        .expect("target directory");
    if !binary.is_file() {
        let built = Command::new(env!("CARGO"))
            .args(["build", "-p", "stress-test"])
            .status()
            .expect("cargo build -p stress-test");
        assert!(built.success(), "building stress-test failed");
    }
    binary
}
