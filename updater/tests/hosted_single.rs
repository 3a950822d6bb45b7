//! The updater on the single-StatefulSet layout (`ARAK_HOSTED_LAYOUT=single`): one
//! `apiserver` StatefulSet of three replicas, rolled pod by pod through the partition.
//! A new --max-requests-inflight reaches apiserver-2, -1, -0 in that order, never two down,
//! and the partition ends back at 0; a flag kube-apiserver refuses is rolled back at the
//! first pod while the two others keep their processes; a stop requested while apiserver-2
//! soaks ends the roll there, its intent kept, and the next apply finishes it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    INFLIGHT_FLAG, ReadinessWatcher, START_MUTATING, START_ROOM, client, inflight_flag, processes,
};
use harness::{Cluster, ClusterOptions, Outcome as Harness};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use recommender::Recommendation;
use tokio::sync::watch;
use updater::intent::{INTENT_ANNOTATION, Step};
use updater::{Context, Options, Outcome, PlanOptions, ReadinessOnly};

const STATEFUL_SET: &str = "apiserver";
const PODS: [&str; 3] = ["apiserver-0", "apiserver-1", "apiserver-2"];

#[test]
fn updater_rolls_one_statefulset_by_partition() {
    common::use_workspace_node_agent();
    // SAFETY: as above, before any other thread exists.
    unsafe { std::env::set_var("ARAK_HOSTED_LAYOUT", "single") };
    common::block_on(cases());
}

async fn cases() {
    let started = Instant::now();
    let options = ClusterOptions {
        nodes: 1,
        hosted: true,
        ready_timeout: Duration::from_secs(240),
    };
    let cluster = match Cluster::up(&options).expect("starting the hosted cluster") {
        Harness::Ready(cluster) => cluster,
        Harness::Skip(reason) => {
            eprintln!("SKIPPED updater_rolls_one_statefulset_by_partition: {reason}");
            return;
        }
    };
    eprintln!(
        "hosted control plane (single layout) up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let management = client(cluster.admin_kubeconfig()).await;
    let tested = client(Path::new(
        cluster
            .env_var("ARAK_TESTED_KUBECONFIG")
            .expect("tested kubeconfig"),
    ))
    .await;
    let namespace = cluster
        .env_var("ARAK_TESTED_NAMESPACE")
        .expect("tested namespace")
        .to_owned();
    let options = Options {
        plan: PlanOptions {
            apf_levels: vec!["global-default".into()],
            ..PlanOptions::default()
        },
        pod_ready_timeout: Duration::from_secs(120),
        soak: Duration::from_secs(2),
        rollback_timeout: Duration::from_secs(180),
        poll_interval: Duration::from_millis(500),
        ..Options::default()
    };
    let ctx = Context::new(
        management.clone(),
        Some(tested),
        namespace.clone(),
        options,
        ReadinessOnly,
    );
    let pods: Api<Pod> = Api::namespaced(management.clone(), &namespace);
    let statefulsets: Api<StatefulSet> = Api::namespaced(management, &namespace);
    targets_name_their_pods(&cluster, &pods).await;

    let step = Instant::now();
    let old = processes(&pods, &PODS).await;
    let watcher = ReadinessWatcher::start(pods.clone(), &PODS);
    let outcome = updater::apply(&ctx, &recommendation([437, 437, 437], START_MUTATING))
        .await
        .expect("apply");
    let seen = watcher.stop().await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    assert!(
        seen.max_not_ready <= 1,
        "two apiservers were down at once: {seen:?}"
    );
    assert_eq!(
        seen.replaced,
        ["apiserver-2", "apiserver-1", "apiserver-0"],
        "the partition rolls the highest ordinal first, one at a time"
    );
    let new = processes(&pods, &PODS).await;
    for pod in PODS {
        assert_ne!(new[pod], old[pod], "{pod} got a new process");
        assert_eq!(
            inflight_flag(new[pod].pid),
            Some(437),
            "{pod}'s new process"
        );
    }
    assert_settled(&statefulsets, 437).await;
    eprintln!("partition roll: {:.1}s", step.elapsed().as_secs_f64());

    let step = Instant::now();
    let outcome = updater::apply(&ctx, &recommendation([0, 0, 0], 0))
        .await
        .expect("apply");
    let Outcome::Rejected(rejection) = &outcome else {
        panic!("a refused flag must be rejected: {outcome:?}")
    };
    eprintln!("rejected: {}", rejection.reason);
    assert!(
        rejection.reason.contains("apiserver-2"),
        "the first pod rolled is the one that failed: {}",
        rejection.reason
    );
    let after = processes(&pods, &PODS).await;
    assert_ne!(after["apiserver-2"], new["apiserver-2"]);
    assert_eq!(inflight_flag(after["apiserver-2"].pid), Some(437));
    for pod in ["apiserver-0", "apiserver-1"] {
        assert_eq!(after[pod], new[pod], "{pod} was never restarted");
    }
    assert_settled(&statefulsets, 437).await;
    eprintln!("rollback: {:.1}s", step.elapsed().as_secs_f64());

    let step = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    let stopping = Context::new(
        ctx.management.clone(),
        ctx.tested.clone(),
        namespace.clone(),
        Options {
            soak: Duration::from_secs(8),
            ..ctx.options.clone()
        },
        ReadinessOnly,
    )
    .with_stop(stop);
    let before = processes(&pods, &PODS).await;
    let rec = recommendation([443, 443, 443], START_MUTATING);
    let apply = updater::apply(&stopping, &rec);
    let soaking = async {
        // apiserver-2 rolls first; once its new process is Ready its soak runs. The
        // StatefulSet controller deletes the pod before it creates the new one, so for a
        // moment there is no apiserver-2 at all.
        loop {
            let pod = pods.get_opt("apiserver-2").await.expect("pod");
            if let Some(pod) = pod
                && let Some(process) = common::pod_process(&pod)
                && process != before["apiserver-2"]
                && common::ready(&pod)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::pin!(apply);
    let outcome = tokio::select! {
        outcome = &mut apply => panic!("apply ended before apiserver-2 soaked: {outcome:?}"),
        () = soaking => {
            stop_tx.send(true).expect("apply listens");
            apply.await.expect("apply")
        }
    };
    let Outcome::Interrupted { unfinished, .. } = &outcome else {
        panic!("a stop during the soak interrupts the roll: {outcome:?}")
    };
    assert_eq!(unfinished, &[STATEFUL_SET]);
    let stopped = processes(&pods, &PODS).await;
    assert_eq!(inflight_flag(stopped["apiserver-2"].pid), Some(443));
    for pod in ["apiserver-0", "apiserver-1"] {
        assert_eq!(
            stopped[pod], before[pod],
            "{pod} was not rolled after the stop"
        );
    }
    let sts = statefulsets.get(STATEFUL_SET).await.expect("sts");
    let intent = updater::intent::read(&sts)
        .expect("a readable intent")
        .expect("the intent is kept");
    assert_eq!(intent.step, Step::Rolling { ordinal: 1 });
    let partition = sts
        .spec
        .and_then(|s| s.update_strategy?.rolling_update?.partition);
    assert_eq!(partition, Some(2), "no pod below apiserver-2 may roll");
    // The next run with the same recommendation finishes from the intent, in its recovery:
    // nothing is left for its own plan.
    let outcome = updater::apply(&ctx, &rec).await.expect("apply");
    assert!(matches!(outcome, Outcome::Unchanged { .. }), "{outcome:?}");
    let finished = processes(&pods, &PODS).await;
    assert_eq!(
        finished["apiserver-2"], stopped["apiserver-2"],
        "the pod rolled before the stop is not rolled again"
    );
    for pod in PODS {
        assert_eq!(inflight_flag(finished[pod].pid), Some(443), "{pod}");
    }
    assert_settled(&statefulsets, 443).await;
    eprintln!("stop and resume: {:.1}s", step.elapsed().as_secs_f64());
    eprintln!("whole test in {:.1}s", started.elapsed().as_secs_f64());
}

fn recommendation(inflight: [u32; 3], mutating: u32) -> Recommendation {
    let replicas: Vec<(&str, &str)> = PODS.iter().map(|p| (*p, STATEFUL_SET)).collect();
    common::recommendation(&replicas, &inflight, mutating, START_ROOM)
}

/// The template carries the flag, the partition is back at 0 and no intent is left.
async fn assert_settled(statefulsets: &Api<StatefulSet>, inflight: u32) {
    let sts = statefulsets.get(STATEFUL_SET).await.expect("sts");
    let annotations = sts.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !annotations.contains_key(INTENT_ANNOTATION),
        "an intent is left"
    );
    let spec = sts.spec.expect("spec");
    let partition = spec
        .update_strategy
        .and_then(|s| s.rolling_update)
        .and_then(|r| r.partition)
        .unwrap_or(0);
    assert_eq!(partition, 0);
    let args = spec.template.spec.expect("pod spec").containers[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(
        args.contains(&format!("{INFLIGHT_FLAG}{inflight}")),
        "{args:?}"
    );
}

/// Prometheus scrapes each replica of the one StatefulSet, up, with a `pod` label naming it
/// and a `node` label where that pod runs: the fetcher names replicas by `pod`.
async fn targets_name_their_pods(cluster: &Cluster, pods: &Api<Pod>) {
    let url = format!(
        "{}/api/v1/query?query=up%7Bjob%3D%22tested-apiserver%22%7D",
        cluster.prometheus_url()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let labels = loop {
        let output = std::process::Command::new("curl")
            .args(["-sf", "--max-time", "5", &url])
            .output()
            .expect("curl runs");
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let mut labels: Vec<(String, String)> = answer["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            // Up: the target's address is where an apiserver answers.
            .filter(|series| series["value"][1] == "1")
            .filter_map(|series| {
                let metric = &series["metric"];
                Some((
                    metric["pod"].as_str()?.to_owned(),
                    metric["node"].as_str()?.to_owned(),
                ))
            })
            .collect();
        labels.sort();
        if labels.len() == PODS.len() {
            break labels;
        }
        assert!(
            Instant::now() < deadline,
            "no `up` series with pod and node labels for each of {PODS:?}: {answer}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for ((pod, node), wanted) in labels.iter().zip(PODS) {
        assert_eq!(pod, wanted);
        let running_on = pods
            .get(pod)
            .await
            .expect("pod")
            .spec
            .and_then(|s| s.node_name)
            .unwrap_or_default();
        assert_eq!(node, &running_on, "the target of {pod} is where it runs");
    }
}
