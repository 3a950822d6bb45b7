//! `arak run` against the real hosted test control plane (`perf-tests/cluster up --hosted`),
//! its Prometheus and the ControlPlaneTuning CRD, one cluster for every case in order:
//! (a) in `Recommend` mode a round writes the conditions and a recommendation and no
//! StatefulSet changes; (b) a second instance stays standby while the first holds the
//! lease, and takes over when the first is stopped with SIGTERM; (c) in `Off` mode rounds
//! log their decision and write nothing; (d) with Prometheus killed, `DataFresh` turns False
//! and arak holds.

mod controller_support;

use std::process::Command;
use std::time::{Duration, Instant};

use controller_support::{
    Env, Instance, TUNING, block_on, create_tuning, hosted_policy, http_get, poll, set_mode, start,
    stateful_set_versions, status, use_workspace_node_agent,
};
use harness::Cluster;
use kube::Api;

#[test]
fn arak_run_on_the_hosted_control_plane() {
    use_workspace_node_agent();
    block_on(cases());
}

async fn cases() {
    let started = Instant::now();
    let Some((cluster, env)) = start("arak_run_on_the_hosted_control_plane").await else {
        return;
    };
    create_tuning(&env, "Recommend", hosted_policy(&cluster)).await;

    let leader = Instance::start(&env, &cluster, "arak-a", &[]);
    recommend_writes_status_and_changes_nothing(&env, &leader).await;
    let standby = Instance::start(&env, &cluster, "arak-b", &[]);
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
