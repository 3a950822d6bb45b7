//! The settings running now, read from the live StatefulSets, pods and APF objects: the
//! recommender's `CurrentSettings`, so a round never trusts a file that may be out of date.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::api::flowcontrol::v1::PriorityLevelConfiguration;
use recommender::policy::ReplicaPlacement;
use recommender::{ApiserverSettings, ClientSettings, CurrentSettings, Policy};
use updater::apf::FlowRoom;
use updater::args::{CONFIG_FLAG, OwnedFlag};
use updater::plan::{container_state, ordinal_of, template_container};

/// Kubernetes' own defaults, for flags a command line leaves out.
const DEFAULT_MAX_REQUESTS_INFLIGHT: u32 = 400;
const DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT: u32 = 200;
const DEFAULT_SCHEDULER_QPS: (f64, u32) = (50.0, 100);
const DEFAULT_CONTROLLER_MANAGER_QPS: (f64, u32) = (20.0, 30);

/// The objects settings are read from.
pub struct Live<'a> {
    pub stateful_sets: &'a BTreeMap<String, StatefulSet>,
    pub pods: &'a [Pod],
    /// None without a client for the tuned cluster.
    pub priority_levels: Option<&'a [PriorityLevelConfiguration]>,
    /// The levels whose queues the updater sizes.
    pub apf_levels: &'a [String],
}

/// Settings of every replica the policy names. Errors name the replica and what is missing.
pub fn read(
    policy: &Policy,
    live: &Live,
    last_change_unix_s: Option<f64>,
) -> Result<CurrentSettings, String> {
    let grid = &policy.bounds.apiserver.queue_length;
    let queue_length = queue_length(live)
        // The updater can only write whole queue length limits, so the room it leaves is a
        // multiple of the hand size and seldom a grid point; read as the nearest grid point,
        // what it wrote reads back as what was recommended and the next round can hold.
        .map(|room| grid.nearest(f64::from(room)) as u32)
        // Without the tuned cluster's APF objects the queue length is not arak's to change;
        // the bound's minimum keeps the model conservative about waiting room.
        .unwrap_or(grid.min as u32);
    let mut current = CurrentSettings {
        last_change_unix_s,
        ..CurrentSettings::default()
    };
    for placement in &policy.apiservers {
        let (container, resources) = replica_container(placement, live)?;
        let line = container_state(container).command_line;
        let flag = |flag: OwnedFlag, default: u32| -> Result<u32, String> {
            line.value(flag.name()).map_or(Ok(default), |v| {
                v.parse().map_err(|_| {
                    format!("{}: {} {v:?} is not a number", placement.name, flag.name())
                })
            })
        };
        let (cpu_cores, memory_bytes) = cpu_and_memory(&placement.name, &resources)?;
        current.apiservers.insert(
            placement.name.clone(),
            ApiserverSettings {
                cpu_cores,
                memory_bytes,
                max_requests_inflight: flag(
                    OwnedFlag::MaxRequestsInflight,
                    DEFAULT_MAX_REQUESTS_INFLIGHT,
                )?,
                max_mutating_requests_inflight: flag(
                    OwnedFlag::MaxMutatingRequestsInflight,
                    DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
                )?,
                queue_length,
            },
        );
    }
    for (placements, defaults, into) in [
        (
            &policy.schedulers,
            DEFAULT_SCHEDULER_QPS,
            &mut current.schedulers,
        ),
        (
            &policy.controller_managers,
            DEFAULT_CONTROLLER_MANAGER_QPS,
            &mut current.controller_managers,
        ),
    ] {
        for placement in placements {
            into.insert(
                placement.name.clone(),
                client_settings(placement, live, defaults)?,
            );
        }
    }
    Ok(current)
}

fn client_settings(
    placement: &ReplicaPlacement,
    live: &Live,
    (default_qps, default_burst): (f64, u32),
) -> Result<ClientSettings, String> {
    let (container, resources) = replica_container(placement, live)?;
    let line = container_state(container).command_line;
    if line.value(CONFIG_FLAG).is_some() {
        return Err(format!(
            "{}: the client QPS of a component configured by {CONFIG_FLAG} file is not read yet; give it --kube-api-qps/--kube-api-burst",
            placement.name
        ));
    }
    let number = |flag: OwnedFlag| -> Result<Option<f64>, String> {
        line.value(flag.name())
            .map(|v| {
                v.parse::<f64>().map_err(|_| {
                    format!("{}: {} {v:?} is not a number", placement.name, flag.name())
                })
            })
            .transpose()
    };
    let (cpu_cores, memory_bytes) = cpu_and_memory(&placement.name, &resources)?;
    Ok(ClientSettings {
        cpu_cores,
        memory_bytes,
        client_qps: number(OwnedFlag::KubeApiQps)?.unwrap_or(default_qps),
        client_burst: number(OwnedFlag::KubeApiBurst)?.map_or(default_burst, |b| b as u32),
    })
}

/// The replica's container in its StatefulSet's template, and the resources its pod runs
/// with (which an in-place resize may have changed from the template's).
fn replica_container<'a>(
    placement: &ReplicaPlacement,
    live: &'a Live,
) -> Result<(&'a Container, Option<ResourceRequirements>), String> {
    let sts = live
        .stateful_sets
        .get(&placement.stateful_set)
        .ok_or_else(|| {
            format!(
                "{}: StatefulSet {} does not exist",
                placement.name, placement.stateful_set
            )
        })?;
    let container = template_container(sts, &placement.container)
        .map_err(|e| format!("{}: {e}", placement.name))?;
    // The reference layout names a replica after its one-pod StatefulSet.
    let pod_name = if ordinal_of(&placement.stateful_set, &placement.name).is_some() {
        placement.name.clone()
    } else {
        format!("{}-0", placement.stateful_set)
    };
    let pod_resources = live
        .pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(pod_name.as_str()))
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == placement.container))
        .and_then(|c| c.resources.clone());
    Ok((
        container,
        pod_resources.or_else(|| container.resources.clone()),
    ))
}

/// Requests, or limits where no request is set (Kubernetes then requests the limit).
fn cpu_and_memory(
    replica: &str,
    resources: &Option<ResourceRequirements>,
) -> Result<(f64, f64), String> {
    let get = |name: &str| {
        let r = resources.as_ref()?;
        r.requests
            .as_ref()
            .and_then(|q| q.get(name))
            .or_else(|| r.limits.as_ref().and_then(|q| q.get(name)))
            .and_then(updater::quantity::parse)
    };
    let cpu = get("cpu").ok_or_else(|| format!("{replica}: no CPU request or limit"))?;
    let memory = get("memory").ok_or_else(|| format!("{replica}: no memory request or limit"))?;
    Ok((cpu, memory))
}

/// One flow's waiting room in the largest sized level.
fn queue_length(live: &Live) -> Option<u32> {
    live.priority_levels?
        .iter()
        .filter(|l| {
            l.metadata
                .name
                .as_ref()
                .is_some_and(|n| live.apf_levels.contains(n))
        })
        .filter_map(|l| u32::try_from(FlowRoom::of(l)?.room()).ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const POLICY: &str = include_str!("../../config/examples/policy.yaml");

    fn sts(name: &str, container: serde_json::Value) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "serviceName": "",
                "template": {"spec": {"containers": [container]}},
            },
        }))
        .unwrap()
    }

    #[test]
    fn flags_resources_and_apf_make_the_current_settings() {
        let policy = Policy::from_yaml(POLICY).unwrap();
        let mut stateful_sets = BTreeMap::new();
        for i in 0..3 {
            let name = format!("apiserver-{i}");
            stateful_sets.insert(
                name.clone(),
                sts(
                    &name,
                    json!({"name": "kube-apiserver", "command": ["kube-apiserver", "--max-requests-inflight=600"],
                           "resources": {"requests": {"cpu": "1500m", "memory": "2Gi"}}}),
                ),
            );
        }
        stateful_sets.insert(
            "scheduler-0".into(),
            sts(
                "scheduler-0",
                json!({"name": "kube-scheduler", "args": ["--kube-api-qps", "80"],
                       "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}),
            ),
        );
        stateful_sets.insert(
            "controller-manager-0".into(),
            sts(
                "controller-manager-0",
                json!({"name": "kube-controller-manager", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}),
            ),
        );
        // The pod was resized in place: its resources win over the template's.
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "apiserver-0-0"},
            "spec": {"containers": [{"name": "kube-apiserver", "resources": {"requests": {"cpu": "3", "memory": "4Gi"}}}]},
        }))
        .unwrap();
        let level: PriorityLevelConfiguration = serde_json::from_value(json!({
            "metadata": {"name": "global-default"},
            "spec": {"type": "Limited", "limited": {"limitResponse": {"type": "Queue",
                "queuing": {"queues": 128, "queueLengthLimit": 30, "handSize": 6}}}},
        }))
        .unwrap();
        let levels = [level];
        let live = Live {
            stateful_sets: &stateful_sets,
            pods: std::slice::from_ref(&pod),
            priority_levels: Some(&levels),
            apf_levels: &["global-default".to_owned()],
        };
        let current = read(&policy, &live, Some(5.0)).unwrap();
        let a0 = current.apiservers["apiserver-0"];
        assert_eq!(
            (a0.cpu_cores, a0.memory_bytes),
            (3.0, 4.0 * 1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(a0.max_requests_inflight, 600);
        assert_eq!(a0.max_mutating_requests_inflight, 200);
        // 6 × 30 = 180, read as the nearest grid point of the policy's 25-request steps.
        assert_eq!(a0.queue_length, 175);
        assert_eq!(current.apiservers["apiserver-1"].cpu_cores, 1.5);
        let s = current.schedulers["scheduler-0"];
        assert_eq!(
            (s.cpu_cores, s.client_qps, s.client_burst),
            (1.0, 80.0, 100)
        );
        let cm = current.controller_managers["controller-manager-0"];
        assert_eq!((cm.client_qps, cm.client_burst), (20.0, 30));
        assert_eq!(current.last_change_unix_s, Some(5.0));
    }

    #[test]
    fn a_missing_stateful_set_is_named() {
        let policy = Policy::from_yaml(POLICY).unwrap();
        let live = Live {
            stateful_sets: &BTreeMap::new(),
            pods: &[],
            priority_levels: None,
            apf_levels: &[],
        };
        let error = read(&policy, &live, None).unwrap_err();
        assert!(
            error.contains("apiserver-0: StatefulSet apiserver-0 does not exist"),
            "{error}"
        );
    }
}
