//! The updater against the real hosted test control plane (`perf-tests/cluster up --hosted`):
//! three kube-apiserver StatefulSets run as processes by the node agents, APF objects in the
//! tested cluster. One cluster serves every case, cheapest first:
//! (e) a dry run changes nothing; (f) an identity without patch rights gets a clear error
//! and nothing changes; (a) a new --max-requests-inflight rolls the three apiservers one at
//! a time, never two down, each new process carrying the flag, and applying it again is a
//! no-op; (d) an APF queue length changes live with no restart; (g) CPU changes in place
//! through `pods/resize`, with no restart either; (b) a flag kube-apiserver
//! refuses is rolled back and the other replicas never restart; (h) a new pod that does not
//! fit its master is rolled back on the scheduler's word; (c) an updater stopped
//! mid-roll is finished by the next run with the same recommendation, or rolled back by a
//! recovery without one, leaving no intent behind.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    INFLIGHT_FLAG, ReadinessWatcher, START_MUTATING, START_ROOM, client, inflight_flag, poll,
};
use harness::{Cluster, ClusterOptions, ComponentPid, Outcome as Harness};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::flowcontrol::v1::PriorityLevelConfiguration;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use recommender::Recommendation;
use serde_json::json;
use updater::intent::INTENT_ANNOTATION;
use updater::{Context, Error, Options, Outcome, PlanOptions, ReadinessOnly};

/// One StatefulSet per apiserver replica, each with one pod.
const APISERVERS: [&str; 3] = ["apiserver-0", "apiserver-1", "apiserver-2"];
const PODS: [&str; 3] = ["apiserver-0-0", "apiserver-1-0", "apiserver-2-0"];

#[test]
fn updater_on_the_hosted_control_plane() {
    common::use_workspace_node_agent();
    common::block_on(cases());
}

struct Env {
    management: Client,
    tested: Client,
    namespace: String,
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
            eprintln!("SKIPPED updater_on_the_hosted_control_plane: {reason}");
            return;
        }
    };
    eprintln!(
        "hosted control plane up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let env = Env {
        management: client(cluster.admin_kubeconfig()).await,
        tested: client(Path::new(
            cluster
                .env_var("ARAK_TESTED_KUBECONFIG")
                .expect("tested kubeconfig"),
        ))
        .await,
        namespace: cluster
            .env_var("ARAK_TESTED_NAMESPACE")
            .expect("tested namespace")
            .to_owned(),
    };
    let ctx = context(&env, env.management.clone());
    wait_all_ready(&env).await;

    let step = Instant::now();
    dry_run_changes_nothing(&env, &ctx).await;
    eprintln!("(e) dry run: {:.1}s", step.elapsed().as_secs_f64());
    let step = Instant::now();
    denied_patch_changes_nothing(&env, &cluster).await;
    eprintln!("(f) denied: {:.1}s", step.elapsed().as_secs_f64());
    let step = Instant::now();
    rolls_one_apiserver_at_a_time(&env, &ctx).await;
    eprintln!("(a) roll: {:.1}s", step.elapsed().as_secs_f64());
    let step = Instant::now();
    apf_changes_live(&env, &ctx).await;
    eprintln!("(d) APF: {:.1}s", step.elapsed().as_secs_f64());
    let step = Instant::now();
    cpu_resizes_in_place(&env, &ctx).await;
    eprintln!("(g) resize: {:.1}s", step.elapsed().as_secs_f64());
    let step = Instant::now();
    refused_flag_is_rolled_back(&env, &ctx).await;
    eprintln!("(b) rollback: {:.1}s", step.elapsed().as_secs_f64());
    let step = Instant::now();
    unschedulable_roll_is_rolled_back(&env, &ctx).await;
    eprintln!("(h) unschedulable: {:.1}s", step.elapsed().as_secs_f64());
    let step = Instant::now();
    interrupted_roll_is_finished_or_undone(&env, &ctx).await;
    eprintln!("(c) crash: {:.1}s", step.elapsed().as_secs_f64());
    eprintln!("whole test in {:.1}s", started.elapsed().as_secs_f64());
}

fn context(env: &Env, management: Client) -> Context<ReadinessOnly> {
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
    Context::new(
        management,
        Some(env.tested.clone()),
        env.namespace.clone(),
        options,
        ReadinessOnly,
    )
}

/// (e) The plan names the change, and no object's resourceVersion moves.
async fn dry_run_changes_nothing(env: &Env, ctx: &Context<ReadinessOnly>) {
    let before = versions(env).await;
    let rec = recommendation(&[500, 500, 500], START_MUTATING, START_ROOM * 2);
    let plan = updater::plan(ctx, &rec).await.expect("plan");
    assert_eq!(plan.stateful_sets.len(), 3, "{}", plan.render());
    assert_eq!(plan.apf.len(), 1, "{}", plan.render());
    let text = plan.render();
    assert!(text.contains("--max-requests-inflight=500"), "{text}");
    assert!(text.contains("queueLengthLimit 50 -> 100"), "{text}");
    eprintln!("dry-run plan:\n{text}");
    assert_eq!(versions(env).await, before, "a dry run changed an object");
}

/// (f) An identity that may read but not patch StatefulSets is stopped before any change.
async fn denied_patch_changes_nothing(env: &Env, cluster: &Cluster) {
    let readonly = read_only_client(env, cluster).await;
    let ctx = context(env, readonly);
    let before = versions(env).await;
    let rec = recommendation(&[500, 500, 500], START_MUTATING, START_ROOM * 2);
    let error = updater::apply(&ctx, &rec)
        .await
        .expect_err("the read-only identity must be refused");
    let message = error.to_string();
    assert!(
        matches!(
            error,
            Error::Forbidden {
                verb: "patch",
                resource: "statefulsets",
                ..
            }
        ),
        "{message}"
    );
    eprintln!("refused as expected: {message}");
    assert_eq!(
        versions(env).await,
        before,
        "a refused apply changed an object"
    );
}

/// (a) Three apiservers rolled one after another, never two down, the new flag in every
/// new process; applying the same recommendation again changes nothing.
async fn rolls_one_apiserver_at_a_time(env: &Env, ctx: &Context<ReadinessOnly>) {
    let old = processes(env).await;
    let watcher = ReadinessWatcher::start(pods(env), &PODS);
    let rec = recommendation(&[437, 437, 437], START_MUTATING, START_ROOM);
    let outcome = updater::apply(ctx, &rec).await.expect("apply");
    let seen = watcher.stop().await;
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    assert!(
        seen.max_not_ready <= 1,
        "two apiservers were down at once: {seen:?}"
    );
    assert_eq!(
        seen.replaced,
        vec!["apiserver-0-0", "apiserver-1-0", "apiserver-2-0"],
        "the apiservers roll one after the other, in order"
    );
    let new = processes(env).await;
    for sts in APISERVERS {
        assert_ne!(new[sts], old[sts], "{sts} got a new process");
        assert!(!old[sts].is_running(), "{sts}'s old process exited");
        assert_eq!(
            inflight_flag(new[sts].pid),
            Some(437),
            "{sts}'s new process"
        );
    }
    assert_no_intent(env).await;
    let again = updater::apply(ctx, &rec).await.expect("apply again");
    assert!(matches!(again, Outcome::Unchanged { .. }), "{again:?}");
    assert_eq!(processes(env).await, new, "re-applying restarted something");
}

/// (d) A new queue length reaches the tested cluster's PriorityLevelConfiguration and no
/// apiserver restarts.
async fn apf_changes_live(env: &Env, ctx: &Context<ReadinessOnly>) {
    let before = processes(env).await;
    let rec = recommendation(&[437, 437, 437], START_MUTATING, 6 * 60);
    let outcome = updater::apply(ctx, &rec).await.expect("apply");
    let Outcome::Applied { plan } = &outcome else {
        panic!("{outcome:?}")
    };
    assert!(plan.stateful_sets.is_empty(), "{}", plan.render());
    // The apiserver's config producer must not put its own spec back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(queue_length_limit(env).await, 60);
    assert_eq!(
        processes(env).await,
        before,
        "an APF change restarted an apiserver"
    );
}

/// (g) More CPU for one apiserver goes through `pods/resize`: the agent reports the new
/// resources, no process restarts, and the pod template records them (so a recreated pod
/// keeps them) with no roll pending; and back again.
async fn cpu_resizes_in_place(env: &Env, ctx: &Context<ReadinessOnly>) {
    let before = processes(env).await;
    for cores in [0.5, 0.25] {
        let mut rec = recommendation(&[437, 437, 437], START_MUTATING, 6 * 60);
        rec.apiservers[1].recommended.cpu_cores = cores;
        let outcome = updater::apply(ctx, &rec).await.expect("apply");
        let Outcome::Applied { plan } = &outcome else {
            panic!("{outcome:?}")
        };
        let [sts] = plan.stateful_sets.as_slice() else {
            panic!("{}", plan.render())
        };
        assert!(
            sts.roll.is_none() && sts.resizes.len() == 1,
            "{}",
            plan.render()
        );
        let pod = pods(env).get("apiserver-1-0").await.expect("pod");
        let reported = pod
            .status
            .and_then(|s| s.container_statuses)
            .expect("statuses")[0]
            .resources
            .clone()
            .and_then(|r| r.requests)
            .expect("reported requests");
        assert_eq!(
            updater::quantity::parse(&reported["cpu"]),
            Some(cores),
            "the agent reports the new CPU request"
        );
        assert_eq!(
            processes(env).await,
            before,
            "a resize restarted an apiserver"
        );
        let sts = Api::<StatefulSet>::namespaced(env.management.clone(), &env.namespace)
            .get("apiserver-1")
            .await
            .expect("sts");
        let template = sts.spec.as_ref().expect("spec").template.spec.as_ref();
        let requests = template.expect("template").containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .expect("template requests");
        assert_eq!(
            updater::quantity::parse(&requests["cpu"]),
            Some(cores),
            "the pod template records the resized CPU"
        );
        let annotations = sts.metadata.annotations.clone().unwrap_or_default();
        assert!(
            !annotations.contains_key(INTENT_ANNOTATION),
            "{annotations:?}"
        );
        // The controller counts the resized pod as running the new template: no roll is
        // left for it to do, now or when the pod is next recreated.
        poll("apiserver-1 to count its pod updated", || async {
            let sts = Api::<StatefulSet>::namespaced(env.management.clone(), &env.namespace)
                .get("apiserver-1")
                .await
                .ok()?;
            let partition = sts
                .spec
                .as_ref()?
                .update_strategy
                .as_ref()?
                .rolling_update
                .as_ref()?
                .partition;
            let status = sts.status?;
            (partition.unwrap_or(0) == 0
                && status.observed_generation >= sts.metadata.generation
                && status.updated_replicas == Some(1)
                && status.current_revision == status.update_revision)
                .then_some(())
        })
        .await;
        assert_eq!(
            processes(env).await,
            before,
            "recording the template restarted an apiserver"
        );
    }
}

/// (b) kube-apiserver refuses to start with no concurrency at all: the updater restores the
/// previous template, the old flag runs again, the other replicas never restarted.
async fn refused_flag_is_rolled_back(env: &Env, ctx: &Context<ReadinessOnly>) {
    let before = processes(env).await;
    let mut rec = recommendation(&[0, 437, 437], START_MUTATING, 6 * 60);
    rec.apiservers[0].recommended.max_mutating_requests_inflight = 0;
    let outcome = updater::apply(ctx, &rec).await.expect("apply");
    let Outcome::Rejected(rejection) = &outcome else {
        panic!("a refused flag must be rejected: {outcome:?}")
    };
    assert_eq!(rejection.stateful_set.as_deref(), Some("apiserver-0"));
    eprintln!("rejected: {}", rejection.reason);
    let after = processes(env).await;
    assert_ne!(after["apiserver-0"], before["apiserver-0"]);
    assert_eq!(
        inflight_flag(after["apiserver-0"].pid),
        Some(437),
        "the old flag is back"
    );
    for sts in ["apiserver-1", "apiserver-2"] {
        assert_eq!(after[sts], before[sts], "{sts} was never restarted");
    }
    assert_eq!(template_inflight(env, "apiserver-0").await, Some(437));
    assert_no_intent(env).await;
}

/// (h) A roll whose new pod asks for more CPU than its master has left (2 cores, with the
/// controller-manager and scheduler also on master-0) is undone once the scheduler has
/// refused it for the grace, naming the scheduler's reason, instead of leaving the replica
/// down until the pod-ready timeout.
async fn unschedulable_roll_is_rolled_back(env: &Env, ctx: &Context<ReadinessOnly>) {
    let before = processes(env).await;
    let mut rec = recommendation(&[437, 437, 437], START_MUTATING, 6 * 60);
    rec.apiservers[0].recommended.max_requests_inflight = 500;
    rec.apiservers[0].recommended.cpu_cores = 2.0;
    let outcome = updater::apply(ctx, &rec).await.expect("apply");
    let Outcome::Rejected(rejection) = &outcome else {
        panic!("a pod that cannot be placed must be rolled back: {outcome:?}")
    };
    eprintln!("rejected: {}", rejection.reason);
    assert_eq!(rejection.stateful_set.as_deref(), Some("apiserver-0"));
    assert!(
        rejection
            .reason
            .contains("apiserver-0-0 cannot be scheduled")
            && rejection.reason.contains("Insufficient cpu"),
        "the scheduler's reason, not a timeout: {}",
        rejection.reason
    );
    wait_all_ready(env).await;
    let after = processes(env).await;
    assert_eq!(inflight_flag(after["apiserver-0"].pid), Some(437));
    assert_eq!(template_inflight(env, "apiserver-0").await, Some(437));
    for sts in ["apiserver-1", "apiserver-2"] {
        assert_eq!(after[sts], before[sts], "{sts} was never restarted");
    }
    assert_no_intent(env).await;
}

/// (c) An updater stopped while a pod rolls leaves its intent; the next apply of the same
/// recommendation finishes the roll, and a recovery without it rolls another one back.
async fn interrupted_roll_is_finished_or_undone(env: &Env, ctx: &Context<ReadinessOnly>) {
    let rec = recommendation(&[451, 451, 451], START_MUTATING, 6 * 60);
    interrupt_while(ctx, &rec, env, "apiserver-1").await;
    let outcome = updater::apply(ctx, &rec).await.expect("resuming apply");
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    let finished = processes(env).await;
    for sts in APISERVERS {
        assert_eq!(
            inflight_flag(finished[sts].pid),
            Some(451),
            "{sts} finished"
        );
        assert_eq!(template_inflight(env, sts).await, Some(451));
    }
    assert_no_intent(env).await;

    let other = recommendation(&[463, 463, 463], START_MUTATING, 6 * 60);
    interrupt_while(ctx, &other, env, "apiserver-0").await;
    let recovery = updater::recover(ctx, None).await.expect("recovery");
    assert!(
        matches!(&recovery, updater::Recovery::Done { finished, .. } if finished.is_empty()),
        "a recovery without a recommendation rolls back and rejects nothing: {recovery:?}"
    );
    assert_no_intent(env).await;
    let undone = processes(env).await;
    for sts in APISERVERS {
        assert_eq!(
            template_inflight(env, sts).await,
            Some(451),
            "{sts} rolled back"
        );
        assert_eq!(
            inflight_flag(undone[sts].pid),
            Some(451),
            "{sts} runs the old flag"
        );
    }
    wait_all_ready(env).await;
}

/// Runs `apply` until `sts` carries an intent and its pod is being replaced, then drops it
/// mid-roll as a killed process would.
async fn interrupt_while(ctx: &Context<ReadinessOnly>, rec: &Recommendation, env: &Env, sts: &str) {
    let statefulsets: Api<StatefulSet> = Api::namespaced(env.management.clone(), &env.namespace);
    let pods: Api<Pod> = Api::namespaced(env.management.clone(), &env.namespace);
    let old_uid = pods
        .get(&format!("{sts}-0"))
        .await
        .expect("pod")
        .metadata
        .uid;
    let apply = updater::apply(ctx, rec);
    let what = format!("{sts} mid-roll");
    let mid_roll = poll(&what, || async {
        let annotated = statefulsets
            .get(sts)
            .await
            .ok()?
            .metadata
            .annotations?
            .contains_key(INTENT_ANNOTATION);
        let pod = pods.get_opt(&format!("{sts}-0")).await.ok()?;
        let replacing = pod.is_none_or(|p| p.metadata.uid != old_uid);
        (annotated && replacing).then_some(())
    });
    tokio::select! {
        outcome = apply => panic!("apply finished before it could be interrupted: {outcome:?}"),
        () = mid_roll => {}
    }
    let intent = statefulsets
        .get(sts)
        .await
        .expect("sts")
        .metadata
        .annotations;
    assert!(
        intent.is_some_and(|a| a.contains_key(INTENT_ANNOTATION)),
        "the interrupted roll left its intent on {sts}"
    );
}

/// resourceVersions of the apiserver StatefulSets and of the APF level.
async fn versions(env: &Env) -> BTreeMap<String, Option<String>> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(env.management.clone(), &env.namespace);
    let mut versions = BTreeMap::new();
    for sts in APISERVERS {
        let object = statefulsets.get(sts).await.expect("sts");
        versions.insert(sts.to_owned(), object.metadata.resource_version);
    }
    let level = Api::<PriorityLevelConfiguration>::all(env.tested.clone())
        .get("global-default")
        .await
        .expect("global-default");
    versions.insert("global-default".into(), level.metadata.resource_version);
    versions
}

async fn queue_length_limit(env: &Env) -> i32 {
    Api::<PriorityLevelConfiguration>::all(env.tested.clone())
        .get("global-default")
        .await
        .expect("global-default")
        .spec
        .and_then(|s| s.limited)
        .and_then(|l| l.limit_response)
        .and_then(|r| r.queuing)
        .and_then(|q| q.queue_length_limit)
        .expect("a queue length limit")
}

async fn template_inflight(env: &Env, sts: &str) -> Option<u32> {
    let object = Api::<StatefulSet>::namespaced(env.management.clone(), &env.namespace)
        .get(sts)
        .await
        .expect("sts");
    object.spec?.template.spec?.containers[0]
        .args
        .as_ref()?
        .iter()
        .find_map(|a| a.strip_prefix(INFLIGHT_FLAG)?.parse().ok())
}

async fn assert_no_intent(env: &Env) {
    let list = Api::<StatefulSet>::namespaced(env.management.clone(), &env.namespace)
        .list(&ListParams::default())
        .await
        .expect("StatefulSets");
    for sts in list.items {
        let annotations = sts.metadata.annotations.unwrap_or_default();
        assert!(
            !annotations.contains_key(INTENT_ANNOTATION),
            "{:?} still has an intent",
            sts.metadata.name
        );
    }
}

/// The kube-apiserver process of each apiserver StatefulSet, once all are Ready.
async fn processes(env: &Env) -> BTreeMap<String, ComponentPid> {
    let by_pod = common::processes(&pods(env), &PODS).await;
    APISERVERS
        .iter()
        .zip(PODS)
        .map(|(sts, pod)| (sts.to_string(), by_pod[pod].clone()))
        .collect()
}

async fn wait_all_ready(env: &Env) {
    common::wait_ready(&pods(env), &PODS).await;
}

fn pods(env: &Env) -> Api<Pod> {
    Api::namespaced(env.management.clone(), &env.namespace)
}

/// A Recommendation for the three apiservers.
fn recommendation(inflight: &[u32; 3], mutating: u32, queue_length: u32) -> Recommendation {
    let replicas: Vec<(&str, &str)> = APISERVERS.iter().map(|s| (*s, *s)).collect();
    common::recommendation(&replicas, inflight, mutating, queue_length)
}

/// A client for a service account allowed to read what the updater reads, not to patch.
async fn read_only_client(env: &Env, cluster: &Cluster) -> Client {
    let ns = &env.namespace;
    let name = "arak-read-only";
    let meta = ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.clone()),
        ..Default::default()
    };
    let pp = PostParams::default();
    let accounts: Api<ServiceAccount> = Api::namespaced(env.management.clone(), ns);
    accounts
        .create(
            &pp,
            &ServiceAccount {
                metadata: meta.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("service account");
    let rule = |group: &str, resources: &[&str]| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: vec!["get".into(), "list".into()],
        ..Default::default()
    };
    Api::<Role>::namespaced(env.management.clone(), ns)
        .create(
            &pp,
            &Role {
                metadata: meta.clone(),
                rules: Some(vec![
                    rule("apps", &["statefulsets"]),
                    rule("", &["pods", "configmaps"]),
                ]),
            },
        )
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(env.management.clone(), ns)
        .create(
            &pp,
            &RoleBinding {
                metadata: meta,
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: name.into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: name.into(),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                }]),
            },
        )
        .await
        .expect("role binding");
    let token = accounts
        .create_token_request(
            name,
            &pp,
            &TokenRequest {
                spec: TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("token")
        .status
        .expect("token status")
        .token;
    let path: PathBuf = cluster.state_dir().join("read-only.kubeconfig");
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "management", "cluster": {
            "server": cluster.apiserver_url(),
            "certificate-authority": cluster.state_dir().join("pki/ca.crt"),
        }}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "management", "user": name, "namespace": ns}}],
        "current-context": name,
    });
    std::fs::write(&path, kubeconfig.to_string()).expect("writing the kubeconfig");
    client(&path).await
}
