//! `arak run` in `Auto` mode on the hosted test control plane under a step of stress-test
//! load: the model predicts the apiservers' 0.25 cores too few for it, arak applies more
//! through the updater, records the change in the status and as an Event, and the running
//! pods carry the new CPU.

mod controller_support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use controller_support::{
    Instance, block_on, create_tuning, hosted_policy, start, status, use_workspace_node_agent,
};
use harness::Cluster;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

/// With the test's priors (20 ms of CPU per read, 50 ms per write) this load needs about
/// a core per apiserver replica, four times the 250m their template requests.
const LOAD_RPS: &str = "100";
const TEMPLATE_CPU_CORES: f64 = 0.25;

#[test]
fn auto_raises_the_apiservers_cpu_under_load() {
    use_workspace_node_agent();
    block_on(case());
}

async fn case() {
    let started = Instant::now();
    let Some((cluster, env)) = start("auto_raises_the_apiservers_cpu_under_load").await else {
        return;
    };
    let mut policy = hosted_policy(&cluster);
    // Act on the priors and at once: the test has minutes, not the hours of history and
    // the cooldown a real control plane should wait for.
    policy["safety"] =
        json!({"deadband_saving_share": 0.05, "cooldown_s": 0, "min_confidence": "low"});
    policy["bounds"]["apiserver"]["cpu_cores"] = json!({"min": 0.25, "max": 2, "step": 0.25});
    // Requests on this shared machine cost what its neighbours leave; priors that make the
    // load clearly too much for 250m keep the test about arak, not about the calibration.
    policy["calibration"]["min_samples"] = json!(1000);
    policy["calibration"]["read_only"] = json!({"cpu_s": 0.02, "non_cpu_s": 0.015});
    policy["calibration"]["mutating"] = json!({"cpu_s": 0.05, "non_cpu_s": 0.025});
    create_tuning(&env, "Auto", policy).await;
    let load = Load::start(&cluster);
    let arak = Instance::start(
        &env,
        &cluster,
        "arak-auto",
        &["--soak", "3s", "--pod-ready-timeout", "3m"],
    );

    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = status(&env).await
            && status["lastApplied"].is_object()
        {
            break status;
        }
        if Instant::now() > deadline {
            let log = arak.log();
            let decisions: Vec<&str> = log.lines().filter(|l| l.contains("\"decision\"")).collect();
            panic!(
                "no change applied within 300 s; the last decisions:\n{}",
                decisions[decisions.len().saturating_sub(5)..].join("\n")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "status after the change:\n{}",
        serde_json::to_string_pretty(&status).unwrap()
    );
    let applied = &status["lastApplied"];
    assert_eq!(applied["outcome"], "Applied", "{applied}\n{}", arak.log());
    assert!(
        applied["changes"].as_array().is_some_and(|c| c
            .iter()
            .any(|c| c.as_str().is_some_and(|c| c.contains("cpu")))),
        "{applied}"
    );

    let pods: Api<Pod> = Api::namespaced(env.management.clone(), &env.namespace);
    let mut raised = Vec::new();
    for i in 0..3 {
        let pod = pods.get(&format!("apiserver-{i}-0")).await.expect("pod");
        let cpu = pod
            .spec
            .and_then(|s| {
                s.containers
                    .into_iter()
                    .find(|c| c.name == "kube-apiserver")
            })
            .and_then(|c| c.resources?.requests?.get("cpu").cloned())
            .and_then(|q| updater::quantity::parse(&q))
            .expect("a CPU request");
        raised.push(cpu);
    }
    assert!(
        raised.iter().all(|cpu| *cpu > TEMPLATE_CPU_CORES),
        "CPU requests of the apiserver pods: {raised:?}"
    );

    let events: Api<Event> = Api::namespaced(env.management.clone(), &env.namespace);
    let applied_events: Vec<Event> = events
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
        .collect();
    assert!(!applied_events.is_empty(), "no Applied event");
    eprintln!("event: {:?}", applied_events[0].note);
    drop(load);
    arak.stop();
    eprintln!("done in {:?}", started.elapsed());
}

/// stress-test against the tested cluster's load balancer, as its ordinary load user.
struct Load(Child);

impl Load {
    fn start(cluster: &Cluster) -> Load {
        let child = Command::new(stress_test_binary())
            .arg("--kubeconfig")
            .arg(
                cluster
                    .env_var("ARAK_TESTED_LOAD_KUBECONFIG")
                    .expect("ARAK_TESTED_LOAD_KUBECONFIG"),
            )
            .args(["--rps", LOAD_RPS, "--duration", "10m"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stress-test starts");
        Load(child)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
