//! In-place resize through the `pods/resize` subresource (Kubernetes ≥ 1.33): CPU and memory
//! change without a restart, one pod at a time, each verified by the pod's reported
//! resources and soaked; on failure every pod resized so far gets its old resources back.

use std::time::Instant;

use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::error::{Error, Result};
use crate::health::SloCheck;
use crate::plan::{PodResize, StatefulSetPlan};
use crate::roll::{self, RollResult};
use crate::{Context, quantity};

/// Whether the cluster serves `pods/resize`: GA-track since 1.33, on by default there.
pub(crate) async fn supported(client: &Client) -> Result<bool> {
    let version = client
        .apiserver_version()
        .await
        .map_err(Error::kube("reading the management cluster's version"))?;
    let number = |s: &str| s.trim_end_matches('+').parse::<u32>().unwrap_or(0);
    Ok((number(&version.major), number(&version.minor)) >= (1, 33))
}

/// Resizes the plan's pods one by one. When one fails every pod resized so far gets its old
/// resources back; a stop request is honoured between pods, the resized ones kept (each
/// pod's resources say how far it got, so no intent is needed).
pub(crate) async fn resize_pods<S: SloCheck>(
    ctx: &Context<S>,
    sts_plan: &StatefulSetPlan,
    siblings: &[String],
) -> Result<RollResult> {
    let pods: Api<Pod> = Api::namespaced(ctx.management.clone(), &ctx.namespace);
    for (done, resize) in sts_plan.resizes.iter().enumerate() {
        ctx.step();
        set_resources(&pods, resize, &sts_plan.container, &resize.target).await?;
        let outcome = match wait_resized(ctx, &pods, resize, &sts_plan.container).await {
            Ok(()) => {
                let changed = Some((sts_plan.stateful_set.as_str(), resize.pod.as_str()));
                roll::soak(ctx, sts_plan.component, changed, siblings).await
            }
            Err(reason) => Err(reason),
        };
        if let Err(reason) = outcome {
            for undo in sts_plan.resizes[..=done].iter().rev() {
                set_resources(&pods, undo, &sts_plan.container, &undo.previous).await?;
            }
            return Ok(RollResult::RolledBack(reason));
        }
        if done + 1 < sts_plan.resizes.len() && ctx.stop_requested() {
            return Ok(RollResult::Interrupted(format!(
                "stop requested: {} resized and soaked; the other pods of {} keep their resources",
                resize.pod, sts_plan.stateful_set
            )));
        }
    }
    Ok(RollResult::Done)
}

async fn set_resources(
    pods: &Api<Pod>,
    resize: &PodResize,
    container: &str,
    resources: &ResourceRequirements,
) -> Result<()> {
    let patch = json!({"spec": {"containers": [{"name": container, "resources": resources}]}});
    pods.patch_subresource(
        "resize",
        &resize.pod,
        &PatchParams::default(),
        &Patch::Strategic(&patch),
    )
    .await
    .map_err(Error::kube(format!("resizing pod {}", resize.pod)))?;
    Ok(())
}

/// Waits until the kubelet reports the new requests as the container's resources.
async fn wait_resized<S: SloCheck>(
    ctx: &Context<S>,
    pods: &Api<Pod>,
    resize: &PodResize,
    container: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + ctx.options.resize_timeout;
    loop {
        match pods.get(&resize.pod).await {
            Ok(pod) => {
                if let Some(reason) = infeasible(&pod) {
                    return Err(format!(
                        "{}: resize refused by the node: {reason}",
                        resize.pod
                    ));
                }
                if reported(&pod, container).is_some_and(|r| same_requests(r, &resize.target)) {
                    return Ok(());
                }
            }
            Err(e) => tracing::warn!(pod = resize.pod, error = %e, "checking a resize"),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{}: the node did not report the new resources within {:?}",
                resize.pod, ctx.options.resize_timeout
            ));
        }
        tokio::time::sleep(ctx.options.poll_interval).await;
    }
}

fn reported<'a>(pod: &'a Pod, container: &str) -> Option<&'a ResourceRequirements> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)?
        .resources
        .as_ref()
}

/// The `PodResizePending` condition's message when the node says it can never fit.
fn infeasible(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodResizePending" && c.reason.as_deref() == Some("Infeasible"))
        .map(|c| c.message.clone().unwrap_or_default())
}

fn same_requests(a: &ResourceRequirements, b: &ResourceRequirements) -> bool {
    let get = |r: &ResourceRequirements, name: &str| {
        r.requests
            .as_ref()
            .and_then(|q| q.get(name))
            .and_then(quantity::parse)
    };
    let same = |x: Option<f64>, y: Option<f64>, eq: fn(f64, f64) -> bool| match (x, y) {
        (Some(x), Some(y)) => eq(x, y),
        (x, y) => x.is_none() && y.is_none(),
    };
    same(get(a, "cpu"), get(b, "cpu"), quantity::same_cpu)
        && same(get(a, "memory"), get(b, "memory"), quantity::same_memory)
}
