//! Sequential rolls: one StatefulSet at a time, one pod at a time through
//! `spec.updateStrategy.rollingUpdate.partition`, each pod waited for, health-checked and
//! soaked; on failure the previous template is restored and the rollback waited for.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::health::{
    REVISION_LABEL, SloCheck, SloTarget, container_failure, pod_ready, pod_revision, unschedulable,
};
use crate::intent::{INTENT_ANNOTATION, Intent, Step, to_annotation};
use crate::plan::{
    CONFIG_HASH_ANNOTATION, Component, ConfigFile, Roll, RollTarget, StatefulSetPlan,
};
use crate::{Context, quantity};

/// How a roll ended when it did not fail outright.
#[derive(Debug)]
pub(crate) enum RollResult {
    Done,
    /// It failed and the previous state is back; the reason says what failed.
    RolledBack(String),
    /// A stop was requested between two pods; the intent says where to go on.
    Interrupted(String),
}

/// Rolls the StatefulSet to `change.target`, highest ordinal first.
pub(crate) async fn roll<S: SloCheck>(
    ctx: &Context<S>,
    sts_plan: &StatefulSetPlan,
    change: &Roll,
    siblings: &[String],
) -> Result<RollResult> {
    let (intent, replicas) = stage(ctx, sts_plan, change).await?;
    let name = &sts_plan.stateful_set;
    event(
        ctx,
        name,
        EventType::Normal,
        "Rolling",
        format!("rolling {} pod(s) to arak's recommendation", replicas),
    )
    .await;
    continue_roll(ctx, name, intent, replicas - 1, siblings).await
}

/// Writes the target template with its intent, the partition above every ordinal so that
/// no pod rolls yet: from here [`resume`] rolls it and [`rollback`] undoes it.
pub(crate) async fn stage<S: SloCheck>(
    ctx: &Context<S>,
    sts_plan: &StatefulSetPlan,
    change: &Roll,
) -> Result<(Intent, i32)> {
    let name = &sts_plan.stateful_set;
    let sts = sts_api(ctx)
        .get(name)
        .await
        .map_err(Error::kube(format!("reading StatefulSet {name}")))?;
    check_strategy(&sts)?;
    let replicas = replicas(&sts);
    let intent = Intent {
        component: sts_plan.component,
        container: sts_plan.container.clone(),
        previous: change.previous.clone(),
        target: change.target.clone(),
        step: Step::Rolling {
            ordinal: replicas - 1,
        },
        started_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    // The intent lands with the template change, and the partition above every ordinal
    // keeps any pod from rolling before the first step says which one.
    patch_stateful_set(ctx, name, |sts| {
        Ok(json!({
            "metadata": {"annotations": {INTENT_ANNOTATION: to_annotation(&intent)}},
            "spec": {
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": replicas}},
                "template": template_patch(sts, &intent.container, &intent.target)?,
            },
        }))
    })
    .await?;
    Ok((intent, replicas))
}

/// Writes resources the pods already run, resized in place, into the pod template without
/// restarting a pod. Staged with the partition above every ordinal, the template makes a new
/// revision that the controller applies to no pod; each pod, checked to run those
/// resources, is then labelled with that revision as if rolled to it, and the partition goes
/// back to 0 with nothing left to roll. A pod that does not run them (recreated meanwhile)
/// is rolled instead, as is everything when a run dies in between: the intent says
/// "rolling" until the labels are written, so the next run finishes it as a roll.
pub(crate) async fn record_template_resources<S: SloCheck>(
    ctx: &Context<S>,
    sts_plan: &StatefulSetPlan,
    change: &Roll,
    siblings: &[String],
) -> Result<RollResult> {
    let (intent, replicas) = stage(ctx, sts_plan, change).await?;
    let name = &sts_plan.stateful_set;
    let Some(revision) = wait_update_revision(ctx, name).await? else {
        let reason = format!(
            "the StatefulSet controller did not observe {name}'s new template within {:?}",
            ctx.options.pod_ready_timeout
        );
        return rollback(ctx, name, &intent, reason, siblings).await;
    };
    let pods = pod_api(ctx);
    let wanted = change.target.container.resources.as_ref();
    let mut running = Vec::new();
    for ordinal in 0..replicas {
        let pod_name = format!("{name}-{ordinal}");
        let pod = pods
            .get_opt(&pod_name)
            .await
            .map_err(Error::kube(format!("reading pod {pod_name}")))?;
        let resources = pod.as_ref().and_then(|p| {
            let spec = p.spec.as_ref()?;
            let container = spec
                .containers
                .iter()
                .find(|c| c.name == intent.container)?;
            container.resources.as_ref()
        });
        if !quantity::same_resources(resources, wanted) {
            tracing::info!(
                pod = pod_name,
                "does not run the resized resources; rolling it"
            );
            return continue_roll(ctx, name, intent, replicas - 1, siblings).await;
        }
        running.push(pod_name);
    }
    for pod_name in &running {
        let label = json!({"metadata": {"labels": {REVISION_LABEL: revision}}});
        pods.patch(pod_name, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .map_err(Error::kube(format!("labelling pod {pod_name}")))?;
    }
    patch_stateful_set(ctx, name, |_| {
        Ok(json!({
            "metadata": {"annotations": {INTENT_ANNOTATION: null}},
            "spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}},
        }))
    })
    .await?;
    event(
        ctx,
        name,
        EventType::Normal,
        "TemplateUpdated",
        "the pod template now has the resources its pods were resized to; no pod restarted".into(),
    )
    .await;
    Ok(RollResult::Done)
}

/// The revision the controller made of the staged template, if it made it in time.
async fn wait_update_revision<S: SloCheck>(ctx: &Context<S>, name: &str) -> Result<Option<String>> {
    let deadline = Instant::now() + ctx.options.pod_ready_timeout;
    loop {
        let sts = sts_api(ctx)
            .get(name)
            .await
            .map_err(Error::kube(format!("reading StatefulSet {name}")))?;
        if let Some(revision) = observed_update_revision(&sts) {
            return Ok(Some(revision));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(ctx.options.poll_interval).await;
    }
}

/// Continues an interrupted change where its intent says it was.
pub(crate) async fn resume<S: SloCheck>(
    ctx: &Context<S>,
    name: &str,
    intent: &Intent,
    siblings: &[String],
) -> Result<RollResult> {
    match intent.step {
        Step::Rolling { ordinal } => {
            continue_roll(ctx, name, intent.clone(), ordinal, siblings).await
        }
        Step::RollingBack => {
            rollback(
                ctx,
                name,
                intent,
                "an interrupted rollback was finished".into(),
                siblings,
            )
            .await
        }
    }
}

async fn continue_roll<S: SloCheck>(
    ctx: &Context<S>,
    name: &str,
    mut intent: Intent,
    from_ordinal: i32,
    siblings: &[String],
) -> Result<RollResult> {
    write_config_file(ctx, intent.target.config_file.as_ref()).await?;
    for ordinal in (0..=from_ordinal).rev() {
        intent.step = Step::Rolling { ordinal };
        let annotation = to_annotation(&intent);
        patch_stateful_set(ctx, name, |_| {
            Ok(json!({
                "metadata": {"annotations": {INTENT_ANNOTATION: annotation}},
                "spec": {"updateStrategy": {"rollingUpdate": {"partition": ordinal}}},
            }))
        })
        .await?;
        ctx.step();
        let pod = format!("{name}-{ordinal}");
        let result = match wait_pod_updated(ctx, name, &pod, &intent.container, siblings).await {
            Ok(()) => soak(ctx, intent.component, Some((name, &pod)), siblings).await,
            Err(reason) => Err(reason),
        };
        if let Err(reason) = result {
            return rollback(ctx, name, &intent, reason, siblings).await;
        }
        tracing::info!(stateful_set = name, pod, "pod rolled, healthy and soaked");
        if let Some(next) = intent.after(ordinal)
            && ctx.stop_requested()
        {
            // The partition stays where it is: the next run lowers it, from this intent.
            let annotation = to_annotation(&next);
            patch_stateful_set(ctx, name, |_| {
                Ok(json!({"metadata": {"annotations": {INTENT_ANNOTATION: annotation}}}))
            })
            .await?;
            let reason = format!(
                "stop requested: {pod} rolled and soaked; {name} waits at ordinal {} with its intent for the next run",
                ordinal - 1
            );
            event(ctx, name, EventType::Normal, "Interrupted", reason.clone()).await;
            return Ok(RollResult::Interrupted(reason));
        }
    }
    patch_stateful_set(ctx, name, |_| {
        Ok(json!({"metadata": {"annotations": {INTENT_ANNOTATION: null}}}))
    })
    .await?;
    event(
        ctx,
        name,
        EventType::Normal,
        "Rolled",
        "every pod runs arak's recommendation".into(),
    )
    .await;
    Ok(RollResult::Done)
}

/// Restores the previous template (and config file) and waits until every pod runs it
/// and is Ready again.
pub(crate) async fn rollback<S: SloCheck>(
    ctx: &Context<S>,
    name: &str,
    intent: &Intent,
    reason: String,
    siblings: &[String],
) -> Result<RollResult> {
    tracing::warn!(stateful_set = name, %reason, "rolling back");
    ctx.step();
    let mut back = intent.clone();
    back.step = Step::RollingBack;
    patch_stateful_set(ctx, name, |sts| {
        Ok(json!({
            "metadata": {"annotations": {INTENT_ANNOTATION: to_annotation(&back)}},
            "spec": {
                "updateStrategy": {"rollingUpdate": {"partition": 0}},
                "template": template_patch(sts, &back.container, &back.previous)?,
            },
        }))
    })
    .await?;
    write_config_file(ctx, intent.previous.config_file.as_ref()).await?;
    event(ctx, name, EventType::Warning, "RollingBack", reason.clone()).await;

    let deadline = Instant::now() + ctx.options.rollback_timeout;
    loop {
        match rollback_done(ctx, name, siblings).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(stateful_set = name, error = %e, "checking the rollback"),
        }
        if Instant::now() >= deadline {
            return Err(Error::RollbackFailed {
                stateful_set: name.to_owned(),
                reason: format!(
                    "{reason}; the pods were not back on the previous template within {:?}",
                    ctx.options.rollback_timeout
                ),
            });
        }
        tokio::time::sleep(ctx.options.poll_interval).await;
    }
    patch_stateful_set(ctx, name, |_| {
        Ok(json!({"metadata": {"annotations": {INTENT_ANNOTATION: null}}}))
    })
    .await?;
    event(
        ctx,
        name,
        EventType::Warning,
        "RolledBack",
        format!("previous template restored: {reason}"),
    )
    .await;
    Ok(RollResult::RolledBack(reason))
}

/// Whether every pod runs the restored template and is Ready; deletes pods stuck on the
/// failed one, which the StatefulSet controller would wait on forever.
async fn rollback_done<S: SloCheck>(
    ctx: &Context<S>,
    name: &str,
    siblings: &[String],
) -> Result<bool> {
    let sts = sts_api(ctx)
        .get(name)
        .await
        .map_err(Error::kube(format!("reading StatefulSet {name}")))?;
    let Some(update_revision) = observed_update_revision(&sts) else {
        return Ok(false);
    };
    let pods = pod_api(ctx);
    let mut done = true;
    for ordinal in 0..replicas(&sts) {
        let pod_name = format!("{name}-{ordinal}");
        let Some(pod) = pods
            .get_opt(&pod_name)
            .await
            .map_err(Error::kube(format!("reading pod {pod_name}")))?
        else {
            done = false;
            continue;
        };
        let stuck = pod_revision(&pod) != Some(update_revision.as_str())
            && !pod_ready(&pod)
            && pod.metadata.deletion_timestamp.is_none();
        // Deleting it never takes a second replica down: it is down already. Others, the
        // controller replaces one at a time.
        if stuck
            && not_ready(ctx, siblings)
                .await?
                .iter()
                .all(|p| *p == pod_name)
        {
            tracing::info!(
                pod = pod_name,
                "deleting a pod stuck on the failed template"
            );
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            pods.delete(&pod_name, &params)
                .await
                .map_err(Error::kube(format!("deleting pod {pod_name}")))?;
        }
        done &= pod_revision(&pod) == Some(update_revision.as_str()) && pod_ready(&pod);
    }
    Ok(done)
}

/// The update revision once the controller has seen the latest spec.
fn observed_update_revision(sts: &StatefulSet) -> Option<String> {
    let status = sts.status.as_ref()?;
    if status.observed_generation < sts.metadata.generation {
        return None;
    }
    status.update_revision.clone()
}

/// Waits until `pod_name` runs the update revision and is Ready, failing fast when its
/// container has failed or another replica of the component goes down meanwhile.
async fn wait_pod_updated<S: SloCheck>(
    ctx: &Context<S>,
    name: &str,
    pod_name: &str,
    container: &str,
    siblings: &[String],
) -> Result<(), String> {
    let deadline = Instant::now() + ctx.options.pod_ready_timeout;
    let mut waiting_for = String::from("the StatefulSet controller");
    let mut unschedulable_since = None;
    loop {
        match pod_progress(ctx, name, pod_name, container, siblings).await {
            Ok(Progress::Done) => return Ok(()),
            Ok(Progress::Failed(reason)) => return Err(reason),
            Ok(Progress::Unschedulable(reason)) => {
                // The scheduler retries as room frees up (the old pod's requests go with
                // it); a pod still without a node after the grace will not get one by
                // waiting, and the replica stays down until the roll is undone.
                let since = *unschedulable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNSCHEDULABLE_GRACE {
                    return Err(reason);
                }
                waiting_for = reason;
            }
            Ok(Progress::Waiting(what)) => {
                unschedulable_since = None;
                waiting_for = what;
            }
            Err(e) => tracing::warn!(pod = pod_name, error = %e, "checking the roll"),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {:?} waiting for {waiting_for}",
                ctx.options.pod_ready_timeout
            ));
        }
        tokio::time::sleep(ctx.options.poll_interval).await;
    }
}

/// How long a rolled pod may stay unschedulable before the roll is undone.
const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(20);

enum Progress {
    Done,
    Waiting(String),
    /// The scheduler found no node for the new pod.
    Unschedulable(String),
    Failed(String),
}

async fn pod_progress<S: SloCheck>(
    ctx: &Context<S>,
    name: &str,
    pod_name: &str,
    container: &str,
    siblings: &[String],
) -> Result<Progress> {
    let others: Vec<String> = not_ready(ctx, siblings)
        .await?
        .into_iter()
        .filter(|p| p != pod_name)
        .collect();
    if !others.is_empty() {
        return Ok(Progress::Failed(format!(
            "{} not Ready while {pod_name} rolls",
            others.join(", ")
        )));
    }
    let sts = sts_api(ctx)
        .get(name)
        .await
        .map_err(Error::kube(format!("reading StatefulSet {name}")))?;
    let Some(update_revision) = observed_update_revision(&sts) else {
        return Ok(Progress::Waiting(format!(
            "the controller to observe {name}"
        )));
    };
    let Some(pod) = pod_api(ctx)
        .get_opt(pod_name)
        .await
        .map_err(Error::kube(format!("reading pod {pod_name}")))?
    else {
        return Ok(Progress::Waiting(format!("{pod_name} to be recreated")));
    };
    if pod_revision(&pod) != Some(update_revision.as_str()) {
        return Ok(Progress::Waiting(format!("{pod_name} to be replaced")));
    }
    if let Some(failure) = container_failure(&pod, container) {
        return Ok(Progress::Failed(failure));
    }
    if let Some(reason) = unschedulable(&pod) {
        return Ok(Progress::Unschedulable(reason));
    }
    if !pod_ready(&pod) {
        return Ok(Progress::Waiting(format!("{pod_name} to become Ready")));
    }
    Ok(Progress::Done)
}

/// Keeps watching the component for the soak period: every replica Ready, SLOs met.
pub(crate) async fn soak<S: SloCheck>(
    ctx: &Context<S>,
    component: Component,
    changed: Option<(&str, &str)>,
    siblings: &[String],
) -> Result<(), String> {
    let after = changed.map_or_else(
        || format!("the {component} change"),
        |(_, pod)| pod.to_owned(),
    );
    ctx.step();
    let until = Instant::now() + ctx.options.soak;
    loop {
        match not_ready(ctx, siblings).await {
            Ok(down) if !down.is_empty() => {
                return Err(format!(
                    "{} not Ready during the soak after {after}",
                    down.join(", ")
                ));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%after, error = %e, "checking readiness during the soak"),
        }
        let target = SloTarget {
            component,
            stateful_set: changed.map(|(sts, _)| sts),
            pod: changed.map(|(_, pod)| pod),
        };
        ctx.slo
            .check(target)
            .await
            .map_err(|reason| format!("SLO broken during the soak after {after}: {reason}"))?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        tokio::time::sleep(left.min(ctx.options.poll_interval)).await;
    }
}

/// Pods of the StatefulSets that are missing or not Ready, by name.
pub(crate) async fn not_ready<S: SloCheck>(
    ctx: &Context<S>,
    stateful_sets: &[String],
) -> Result<Vec<String>> {
    let pods = pod_api(ctx)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("listing pods"))?
        .items;
    let mut down = Vec::new();
    for name in stateful_sets {
        let Some(sts) = sts_api(ctx)
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("reading StatefulSet {name}")))?
        else {
            continue;
        };
        for ordinal in 0..replicas(&sts) {
            let pod_name = format!("{name}-{ordinal}");
            let ready = pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(pod_name.as_str()))
                .is_some_and(pod_ready);
            if !ready {
                down.push(pod_name);
            }
        }
    }
    Ok(down)
}

/// Puts the previous container and config hash back into a StatefulSet value.
pub(crate) fn restore_template(sts: &mut StatefulSet, intent: &Intent) -> Result<()> {
    let patch = template_patch(sts, &intent.container, &intent.previous)?;
    let name = sts_name(sts);
    let template = &mut sts.spec.get_or_insert_with(Default::default).template;
    template
        .spec
        .get_or_insert_with(Default::default)
        .containers =
        serde_json::from_value(patch["spec"]["containers"].clone()).map_err(|e| Error::Intent {
            stateful_set: name,
            reason: e.to_string(),
        })?;
    let annotations = template
        .metadata
        .get_or_insert_with(Default::default)
        .annotations
        .get_or_insert_with(Default::default);
    match &intent.previous.config_hash {
        Some(hash) => annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), hash.clone()),
        None => annotations.remove(CONFIG_HASH_ANNOTATION),
    };
    Ok(())
}

/// The merge patch of `spec.template` that makes `container` (and the config hash) what
/// `state` says. Containers are sent whole, because a merge patch replaces lists.
fn template_patch(sts: &StatefulSet, container: &str, state: &RollTarget) -> Result<Value> {
    let mut containers = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let target = containers
        .iter_mut()
        .find(|c| c.name == container)
        .ok_or_else(|| Error::NoContainer {
            stateful_set: sts_name(sts),
            container: container.to_owned(),
        })?;
    let line = &state.container.command_line;
    // The API drops empty lists, so empty and absent are the same template.
    target.command = (!line.command.is_empty()).then(|| line.command.clone());
    target.args = (!line.args.is_empty()).then(|| line.args.clone());
    target.resources = state.container.resources.clone();
    Ok(json!({
        "metadata": {"annotations": {CONFIG_HASH_ANNOTATION: state.config_hash}},
        "spec": {"containers": containers},
    }))
}

async fn write_config_file<S: SloCheck>(ctx: &Context<S>, file: Option<&ConfigFile>) -> Result<()> {
    let Some(file) = file else {
        return Ok(());
    };
    Api::<ConfigMap>::namespaced(ctx.management.clone(), &ctx.namespace)
        .patch(
            &file.config_map,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {&file.key: &file.content}})),
        )
        .await
        .map_err(Error::kube(format!(
            "patching ConfigMap {}",
            file.config_map
        )))?;
    Ok(())
}

/// Refuses strategies this roll cannot drive pod by pod.
fn check_strategy(sts: &StatefulSet) -> Result<()> {
    let strategy = sts.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    let unsupported = |reason: String| Error::Unsupported {
        stateful_set: sts_name(sts),
        reason,
    };
    if let Some(kind) = strategy.and_then(|s| s.type_.as_deref())
        && kind != "RollingUpdate"
    {
        return Err(unsupported(format!(
            "updateStrategy {kind}: arak rolls with RollingUpdate partitions"
        )));
    }
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    if partition != 0 {
        return Err(unsupported(format!(
            "partition is {partition}: someone else is staging a rollout"
        )));
    }
    Ok(())
}

/// Patches the StatefulSet with what `build` makes of its current state, failing rather
/// than overwriting when someone else changed it in between (retried only after the
/// controller's own status writes).
async fn patch_stateful_set<S: SloCheck>(
    ctx: &Context<S>,
    name: &str,
    build: impl Fn(&StatefulSet) -> Result<Value>,
) -> Result<StatefulSet> {
    const ATTEMPTS: u32 = 10;
    let api = sts_api(ctx);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sts = api
            .get(name)
            .await
            .map_err(Error::kube(format!("reading StatefulSet {name}")))?;
        let mut patch = build(&sts)?;
        patch["metadata"]["resourceVersion"] = json!(sts.metadata.resource_version);
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(sts) => return Ok(sts),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(Error::kube(format!("patching StatefulSet {name}"))(e)),
        }
    }
}

/// Best effort: a lost event never stops a roll.
pub(crate) async fn event<S: SloCheck>(
    ctx: &Context<S>,
    name: &str,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let Ok(sts) = sts_api(ctx).get(name).await else {
        return;
    };
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Update".to_owned(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &sts.object_ref(&())).await {
        tracing::warn!(stateful_set = name, error = %e, "publishing an event");
    }
}

fn replicas(sts: &StatefulSet) -> i32 {
    sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn sts_name(sts: &StatefulSet) -> String {
    sts.metadata.name.clone().unwrap_or_default()
}

fn sts_api<S>(ctx: &Context<S>) -> Api<StatefulSet> {
    Api::namespaced(ctx.management.clone(), &ctx.namespace)
}

fn pod_api<S>(ctx: &Context<S>) -> Api<Pod> {
    Api::namespaced(ctx.management.clone(), &ctx.namespace)
}
