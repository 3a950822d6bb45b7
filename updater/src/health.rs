//! Whether a component is well: its pods' readiness (kube-apiserver's `/readyz`, the
//! others' `/healthz`, through their readiness probes) and its SLOs during the soak.

use std::future::Future;

use k8s_openapi::api::core::v1::Pod;

use crate::plan::Component;

/// What a check is about: a pod just changed, or the whole component (after an APF change).
#[derive(Debug, Clone, Copy)]
pub struct SloTarget<'a> {
    pub component: Component,
    pub stateful_set: Option<&'a str>,
    pub pod: Option<&'a str>,
}

/// The caller's judgement of a component's SLOs, asked repeatedly during the soak after each
/// pod. The load fetcher implements it from Prometheus.
pub trait SloCheck: Send + Sync {
    /// `Err(reason)` once an SLO is broken.
    fn check(&self, target: SloTarget<'_>) -> impl Future<Output = Result<(), String>> + Send;
}

/// No SLO signal: the soak then only watches readiness, which the roll checks anyway. For
/// `arak apply` until the load fetcher provides a Prometheus-backed check.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadinessOnly;

impl SloCheck for ReadinessOnly {
    async fn check(&self, _target: SloTarget<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// The label the StatefulSet controller puts on a pod: the revision its template came from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn pod_revision(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

/// Why the container will not become Ready by waiting longer, if that is already clear:
/// it exited, crash-loops, or cannot be configured.
pub fn container_failure(pod: &Pod, container: &str) -> Option<String> {
    let status = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)?;
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let last_exit = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| status.state.as_ref()?.terminated.as_ref());
    if status.restart_count > 0
        || status
            .state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some())
    {
        let exit = last_exit.map_or_else(String::new, |t| format!(" (exit code {})", t.exit_code));
        return Some(format!("{name}: {container} exited{exit}"));
    }
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref().unwrap_or_default();
    matches!(
        reason,
        "CrashLoopBackOff"
            | "CreateContainerConfigError"
            | "CreateContainerError"
            | "ErrImagePull"
            | "ImagePullBackOff"
            | "InvalidImageName"
            | "RunContainerError"
    )
    .then(|| {
        format!(
            "{name}: {container} {reason}: {}",
            waiting.message.as_deref().unwrap_or_default()
        )
    })
}

/// The scheduler's reason, when it has found no node for the pod (`PodScheduled` False,
/// `Unschedulable`): a pod pinned to its master that asks for more than the master has left.
pub fn unschedulable(pod: &Pod) -> Option<String> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    (condition.status == "False" && condition.reason.as_deref() == Some("Unschedulable")).then(
        || {
            format!(
                "{} cannot be scheduled: {}",
                pod.metadata.name.as_deref().unwrap_or_default(),
                condition.message.as_deref().unwrap_or("no reason given")
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        PodCondition, PodStatus,
    };

    fn pod(ready: bool, status: ContainerStatus) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("apiserver-0".into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                container_statuses: Some(vec![status]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn status(restarts: i32, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            name: "kube-apiserver".into(),
            restart_count: restarts,
            state: Some(state),
            ..Default::default()
        }
    }

    #[test]
    fn a_starting_container_has_not_failed() {
        let starting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = pod(false, status(0, starting));
        assert!(!pod_ready(&p));
        assert_eq!(container_failure(&p, "kube-apiserver"), None);
    }

    #[test]
    fn exits_and_crash_loops_are_failures() {
        let exited = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let failure = container_failure(&pod(false, status(0, exited)), "kube-apiserver");
        assert_eq!(
            failure.as_deref(),
            Some("apiserver-0: kube-apiserver exited (exit code 1)")
        );
        let backoff = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(container_failure(&pod(false, status(1, backoff)), "kube-apiserver").is_some());
        assert!(pod_ready(&pod(true, status(0, ContainerState::default()))));
    }

    #[test]
    fn only_the_schedulers_unschedulable_verdict_counts() {
        let with_scheduled = |status: &str, reason: Option<&str>| {
            let mut p = pod(false, status_default());
            p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: status.into(),
                reason: reason.map(Into::into),
                message: Some("0/4 nodes are available: 1 Insufficient cpu.".into()),
                ..Default::default()
            }]);
            p
        };
        assert_eq!(
            unschedulable(&with_scheduled("False", Some("Unschedulable"))).as_deref(),
            Some("apiserver-0 cannot be scheduled: 0/4 nodes are available: 1 Insufficient cpu.")
        );
        assert_eq!(unschedulable(&with_scheduled("True", None)), None);
        // Waiting for a scheduling gate is not a verdict on the node's room.
        assert_eq!(
            unschedulable(&with_scheduled("False", Some("SchedulingGated"))),
            None
        );
        assert_eq!(unschedulable(&pod(false, status_default())), None);
    }

    fn status_default() -> ContainerStatus {
        status(0, ContainerState::default())
    }
}
