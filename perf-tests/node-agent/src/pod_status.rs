//! The pod status the agent reports, computed from what its processes are doing.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;

/// The condition type under which the agent lists the parts of a spec it did not apply.
pub const IGNORED_CONDITION: &str = "NodeAgentIgnoredSpec";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        pid: u32,
        started_at: Timestamp,
    },
    Terminated(Termination),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    pub pid: u32,
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

#[derive(Clone, Debug)]
pub struct ContainerReport {
    pub name: String,
    pub image: String,
    pub state: RunState,
    pub last_termination: Option<Termination>,
    pub restart_count: i32,
    pub ready: bool,
    /// CPU and memory in effect for the running process.
    pub resources: ResourceRequirements,
}

#[derive(Clone, Debug)]
pub struct PodReport<'a> {
    pub containers: Vec<ContainerReport>,
    pub restart_policy: &'a str,
    pub ip: &'a str,
    pub start_time: Timestamp,
    pub ignored: &'a [String],
    /// The pod generation whose spec (e.g. after a resize) the status reflects.
    pub observed_generation: Option<i64>,
}

/// Remembers when each condition last changed, so lastTransitionTime stays put.
#[derive(Clone, Debug, Default)]
pub struct ConditionClock {
    since: BTreeMap<String, (bool, Timestamp)>,
}

impl ConditionClock {
    fn condition(
        &mut self,
        type_: &str,
        status: bool,
        reason: Option<String>,
        message: Option<String>,
        now: Timestamp,
    ) -> PodCondition {
        let entry = self.since.entry(type_.to_string()).or_insert((status, now));
        if entry.0 != status {
            *entry = (status, now);
        }
        PodCondition {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            reason,
            message,
            last_transition_time: Some(Time(entry.1)),
            ..Default::default()
        }
    }
}

/// The kubelet's rule for a pod phase from its containers' states.
pub fn phase(containers: &[ContainerReport], restart_policy: &str) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut failed) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated(t) => {
                stopped += 1;
                if t.exit_code != 0 {
                    failed += 1;
                }
            }
            RunState::Waiting { .. } if c.last_termination.is_some() => {
                stopped += 1;
                if c.last_termination
                    .as_ref()
                    .is_some_and(|t| t.exit_code != 0)
                {
                    failed += 1;
                }
            }
            RunState::Waiting { .. } => waiting += 1,
        }
    }
    if containers.is_empty() || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped == containers.len() {
        match restart_policy {
            "Never" if failed > 0 => "Failed",
            "Never" => "Succeeded",
            "OnFailure" if failed > 0 => "Running",
            "OnFailure" => "Succeeded",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

pub fn pod_status(report: &PodReport<'_>, clock: &mut ConditionClock, now: Timestamp) -> PodStatus {
    let phase = phase(&report.containers, report.restart_policy);
    let unready: Vec<&str> = report
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let (reason, message) = if phase == "Succeeded" || phase == "Failed" {
        (Some("PodCompleted".to_string()), None)
    } else if unready.is_empty() {
        (None, None)
    } else {
        (
            Some("ContainersNotReady".to_string()),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let all_ready = unready.is_empty() && phase == "Running";
    let mut conditions = vec![
        clock.condition("PodReadyToStartContainers", true, None, None, now),
        clock.condition("Initialized", true, None, None, now),
        clock.condition(
            "ContainersReady",
            all_ready,
            reason.clone(),
            message.clone(),
            now,
        ),
        clock.condition("Ready", all_ready, reason, message, now),
    ];
    if !report.ignored.is_empty() {
        conditions.push(clock.condition(
            IGNORED_CONDITION,
            true,
            Some("ProcessNodeAgent".into()),
            Some(report.ignored.join("; ")),
            now,
        ));
    }
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(report.containers.iter().map(container_status).collect()),
        host_ip: Some(report.ip.into()),
        host_ips: Some(vec![HostIP {
            ip: report.ip.into(),
        }]),
        pod_ip: Some(report.ip.into()),
        pod_ips: Some(vec![PodIP {
            ip: report.ip.into(),
        }]),
        start_time: Some(Time(report.start_time)),
        observed_generation: report.observed_generation,
        ..Default::default()
    }
}

/// How a container is named in its status: the pid of the process that runs it.
pub fn container_id(pid: u32) -> String {
    format!("process://{pid}")
}

fn container_status(c: &ContainerReport) -> ContainerStatus {
    let running = matches!(c.state, RunState::Running { .. });
    let (state, container_id) = match &c.state {
        RunState::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            c.last_termination.as_ref().map(|t| container_id(t.pid)),
        ),
        RunState::Running { pid, started_at } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..Default::default()
            },
            Some(container_id(*pid)),
        ),
        RunState::Terminated(t) => (terminated(t), Some(container_id(t.pid))),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: String::new(),
        container_id,
        state: Some(state),
        last_state: Some(
            c.last_termination
                .as_ref()
                .map(terminated)
                .unwrap_or_default(),
        ),
        ready: c.ready,
        restart_count: c.restart_count,
        started: Some(running),
        resources: running.then(|| c.resources.clone()),
        allocated_resources: c.resources.requests.clone().filter(|_| running),
        ..Default::default()
    }
}

fn terminated(t: &Termination) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: Some(container_id(t.pid)),
            exit_code: t.exit_code,
            signal: t.signal,
            reason: Some(
                if t.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .into(),
            ),
            started_at: Some(Time(t.started_at)),
            finished_at: Some(Time(t.finished_at)),
            message: None,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn term(code: i32) -> Termination {
        Termination {
            pid: 7,
            exit_code: code,
            signal: None,
            started_at: ts(0),
            finished_at: ts(1),
        }
    }

    fn container(state: RunState, last: Option<Termination>, ready: bool) -> ContainerReport {
        ContainerReport {
            name: "c".into(),
            image: "img".into(),
            state,
            last_termination: last,
            restart_count: 0,
            ready,
            resources: ResourceRequirements::default(),
        }
    }

    fn running() -> RunState {
        RunState::Running {
            pid: 42,
            started_at: ts(0),
        }
    }

    fn waiting() -> RunState {
        RunState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: None,
        }
    }

    #[test]
    fn phases() {
        assert_eq!(
            phase(&[container(waiting(), None, false)], "Always"),
            "Pending"
        );
        assert_eq!(
            phase(&[container(running(), None, false)], "Always"),
            "Running"
        );
        assert_eq!(
            phase(&[container(waiting(), Some(term(1)), false)], "Always"),
            "Running"
        );
        assert_eq!(
            phase(
                &[container(RunState::Terminated(term(0)), None, false)],
                "Never"
            ),
            "Succeeded"
        );
        assert_eq!(
            phase(
                &[container(RunState::Terminated(term(2)), None, false)],
                "Never"
            ),
            "Failed"
        );
        assert_eq!(
            phase(
                &[container(RunState::Terminated(term(2)), None, false)],
                "OnFailure"
            ),
            "Running"
        );
        assert_eq!(
            phase(
                &[
                    container(running(), None, true),
                    container(waiting(), None, false)
                ],
                "Always"
            ),
            "Pending"
        );
    }

    #[test]
    fn ready_follows_containers_and_keeps_transition_time() {
        let mut clock = ConditionClock::default();
        let ignored = vec!["container c: image img ignored".to_string()];
        let mut report = PodReport {
            containers: vec![container(running(), None, false)],
            restart_policy: "Always",
            ip: "127.0.1.1",
            start_time: ts(0),
            ignored: &ignored,
            observed_generation: Some(2),
        };
        let cond = |s: &PodStatus, t: &str| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .cloned()
                .unwrap()
        };
        let s = pod_status(&report, &mut clock, ts(1));
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").message.as_deref(),
            Some("containers with unready status: [c]")
        );
        assert_eq!(
            cond(&s, IGNORED_CONDITION).message.as_deref(),
            Some(ignored[0].as_str())
        );
        report.containers[0].ready = true;
        let s = pod_status(&report, &mut clock, ts(5));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(Time(ts(5))));
        let s = pod_status(&report, &mut clock, ts(9));
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(Time(ts(5))));
        assert_eq!(
            cond(&s, "Initialized").last_transition_time,
            Some(Time(ts(1)))
        );
        assert_eq!(s.pod_ip.as_deref(), Some("127.0.1.1"));
        let cs = &s.container_statuses.unwrap()[0];
        assert_eq!(cs.container_id.as_deref(), Some("process://42"));
        assert_eq!(cs.started, Some(true));
    }
}
