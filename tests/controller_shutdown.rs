//! `arak run` in `Auto` mode told to stop (SIGTERM) while the first apiserver of a flag roll
//! soaks: it finishes that pod's soak and exits 0 well before the roll would have ended,
//! having restarted that one apiserver only; the two others keep their processes and carry
//! an intent annotation (their template staged, no pod rolled). A second instance then
//! takes the lease and finishes the roll through the updater's recovery.

mod controller_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use controller_support::{
    Env, Instance, block_on, create_tuning, hosted_policy, pod_process, poll_for, process_flag,
    start, status, use_workspace_node_agent,
};
use harness::{Cluster, ComponentPid};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use updater::intent::INTENT_ANNOTATION;

const STATEFUL_SETS: [&str; 3] = ["apiserver-0", "apiserver-1", "apiserver-2"];
const CONTAINER: &str = "kube-apiserver";
/// What hosted-up starts the apiservers with, and what the policy leaves as the only choice.
const START_INFLIGHT: u32 = 400;
const TARGET_INFLIGHT: u32 = 600;
/// Long enough to send SIGTERM while the first pod soaks, and to tell stopping after it
/// from rolling on: the next pod alone would take its restart plus this.
const SOAK: Duration = Duration::from_secs(20);
/// From SIGTERM to exit: what is left of the soak, a status write, the lease released.
const EXIT_WITHIN: Duration = Duration::from_secs(32);

#[test]
fn sigterm_stops_a_roll_after_the_current_pod() {
    use_workspace_node_agent();
    block_on(case());
}

async fn case() {
    let started = Instant::now();
    let Some((cluster, env)) = start("sigterm_stops_a_roll_after_the_current_pod").await else {
        return;
    };
    let pods: Api<Pod> = Api::namespaced(env.management.clone(), &env.namespace);
    let before = processes(&pods).await;
    for (sts, process) in &before {
        assert_eq!(
            inflight(process.pid),
            Some(START_INFLIGHT),
            "{sts} at start"
        );
    }
    create_tuning(&env, "Auto", policy(&cluster)).await;

    let soak = format!("{}s", SOAK.as_secs());
    let mut first = Instance::start(&env, &cluster, "arak-first", &flags(&soak));
    // The first pod the roll restarts, once it is back Ready: its soak has begun.
    let deadline = Instant::now() + Duration::from_secs(300);
    let rolled = loop {
        if let Some(status) = first.exited() {
            panic!("arak exited early with {status}:\n{}", first.log());
        }
        if let Some(now) = processes_if_ready(&pods).await {
            let changed: Vec<&str> = STATEFUL_SETS
                .into_iter()
                .filter(|s| now[*s] != before[*s])
                .collect();
            match changed.as_slice() {
                [one] => break one.to_string(),
                [] => {}
                more => panic!("{more:?} restarted before any soak ended"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "no apiserver restarted within 300 s:\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "{rolled} rolled after {:.1}s; sending SIGTERM during its soak",
        started.elapsed().as_secs_f64()
    );
    let sigterm = Instant::now();
    let exit = first.terminate(EXIT_WITHIN + SOAK);
    let took = sigterm.elapsed();
    eprintln!(
        "arak exited {exit} {:.1}s after SIGTERM",
        took.as_secs_f64()
    );
    assert!(exit.success(), "arak exited with {exit}:\n{}", first.log());
    assert!(
        took < EXIT_WITHIN,
        "arak took {took:?} to stop after SIGTERM: it went on rolling\n{}",
        first.log()
    );

    // Exactly the pod it had started changed; every pod Ready; the rest left with intents.
    let after = processes(&pods).await;
    let statefulsets: Api<StatefulSet> = Api::namespaced(env.management.clone(), &env.namespace);
    for sts in STATEFUL_SETS {
        let intent = has_intent(&statefulsets, sts).await;
        if sts == rolled {
            assert_ne!(after[sts], before[sts], "{sts} restarted");
            assert_eq!(inflight(after[sts].pid), Some(TARGET_INFLIGHT), "{sts}");
            assert!(!intent, "{sts} finished: no intent left");
        } else {
            assert_eq!(after[sts], before[sts], "{sts} kept its process");
            assert_eq!(inflight(after[sts].pid), Some(START_INFLIGHT), "{sts}");
            assert!(intent, "{sts} carries the intent for the next leader");
        }
    }
    let status = status(&env).await.expect("a status");
    let decision = &status["decisions"][0];
    assert_eq!(decision["action"], "interrupted", "{status}");
    eprintln!("decision: {}", decision["reason"]);
    assert_eq!(
        condition(&status, "Applying").as_deref(),
        Some("Interrupted"),
        "{status}"
    );
    assert!(
        tuning_event(&env, "Interrupted").await,
        "no Interrupted event"
    );

    // The next leader finishes what is left through the intents.
    let resumed = Instant::now();
    let mut second = Instance::start(&env, &cluster, "arak-second", &flags("2s"));
    poll_for(
        "every apiserver on the new flag and no intent left",
        Duration::from_secs(240),
        || async {
            for sts in STATEFUL_SETS {
                if has_intent(&statefulsets, sts).await {
                    return None;
                }
            }
            let now = processes_if_ready(&pods).await?;
            now.values()
                .all(|p| inflight(p.pid) == Some(TARGET_INFLIGHT))
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "the second instance finished the roll in {:.1}s",
        resumed.elapsed().as_secs_f64()
    );
    let finished = processes(&pods).await;
    assert_eq!(
        finished[&rolled], after[&rolled],
        "the pod rolled before the stop is not rolled again"
    );
    let log = second.log();
    assert!(
        log.contains("recovering an unfinished change"),
        "the second instance finished the roll by recovery:\n{log}"
    );
    let exit = second.terminate(Duration::from_secs(30));
    assert!(exit.success(), "the second arak exited with {exit}");
    eprintln!("done in {:.1}s", started.elapsed().as_secs_f64());
}

/// The roll's flags: only global-default's queues are arak's, each pod soaks `soak`.
fn flags(soak: &str) -> [&str; 6] {
    [
        "--apf-levels",
        "global-default",
        "--soak",
        soak,
        "--pod-ready-timeout",
        "3m",
    ]
}

/// The hosted policy with every knob pinned to what runs, but for `--max-requests-inflight`,
/// pinned to another value: the recommendation is that flag, which needs a restart.
fn policy(cluster: &Cluster) -> serde_json::Value {
    let mut policy = hosted_policy(cluster);
    policy["safety"] = json!({"deadband_saving_share": 0.0, "cooldown_s": 0, "scale_down_delay_s": 0, "min_confidence": "low"});
    policy["bounds"]["apiserver"] = json!({
        "cpu_cores": {"min": 0.25, "max": 0.25, "step": 0.25},
        "memory_bytes": {"min": 536_870_912_u64, "max": 536_870_912_u64, "step": 268_435_456_u64},
        "max_requests_inflight": {"min": TARGET_INFLIGHT, "max": TARGET_INFLIGHT, "step": 10},
        "max_mutating_requests_inflight": {"min": 200, "max": 200, "step": 5},
        // global-default's hand of 6 queues of 50, as the cluster runs it.
        "queue_length": {"min": 300, "max": 300, "step": 25},
    });
    policy
}

/// Each StatefulSet's apiserver process, waiting until every pod is Ready.
async fn processes(pods: &Api<Pod>) -> BTreeMap<String, ComponentPid> {
    poll_for("every apiserver Ready", Duration::from_secs(180), || {
        processes_if_ready(pods)
    })
    .await
}

async fn processes_if_ready(pods: &Api<Pod>) -> Option<BTreeMap<String, ComponentPid>> {
    let mut found = BTreeMap::new();
    for sts in STATEFUL_SETS {
        let pod = pods.get_opt(&format!("{sts}-0")).await.ok()??;
        if !ready(&pod) {
            return None;
        }
        found.insert(sts.to_owned(), pod_process(&pod, CONTAINER)?);
    }
    Some(found)
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `--max-requests-inflight` on the process's command line.
fn inflight(pid: u32) -> Option<u32> {
    process_flag(pid, "--max-requests-inflight")?.parse().ok()
}

async fn has_intent(statefulsets: &Api<StatefulSet>, name: &str) -> bool {
    statefulsets
        .get(name)
        .await
        .expect("StatefulSet")
        .metadata
        .annotations
        .is_some_and(|a| a.contains_key(INTENT_ANNOTATION))
}

/// The reason of a status condition.
fn condition(status: &serde_json::Value, type_: &str) -> Option<String> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["reason"]
        .as_str()
        .map(str::to_owned)
}

/// Whether the ControlPlaneTuning got an event with this reason.
async fn tuning_event(env: &Env, reason: &str) -> bool {
    Api::<Event>::namespaced(env.management.clone(), &env.namespace)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref())
                    == Some("ControlPlaneTuning")
        })
}
