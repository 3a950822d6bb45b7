//! One container of a pod as a sequence of processes: started when due, reaped and
//! restarted per restartPolicy with back-off, held to its CPU and memory limits.

use crate::backoff::{BackoffPolicy, CrashBackoff};
use crate::cgroups::{Cgroups, ContainerCgroup};
use crate::pod_plan::ContainerPlan;
use crate::pod_status::{ContainerReport, RunState, Termination};
use crate::probe::ProbeTracker;
use crate::process::{self, Exit, Process};
use crate::resources::{self, Limits};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::jiff::Timestamp;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One container over its pod's life: the current process, its history and its limits.
pub struct ContainerRuntime {
    pub plan: ContainerPlan,
    pub process: Option<Process>,
    pub state: RunState,
    last_termination: Option<Termination>,
    starts: i32,
    backoff: CrashBackoff,
    /// When to start the next process; `None` once the container will not run again.
    pub next_start: Option<Instant>,
    pub readiness: Option<ProbeTracker>,
    pub liveness: Option<ProbeTracker>,
    pub terminating: bool,
    log_path: PathBuf,
    /// CPU and memory from the spec, as last applied (changed by in-place resize).
    pub resources: ResourceRequirements,
    limits: Limits,
    cgroup_name: String,
    cgroup: Option<ContainerCgroup>,
    /// Why this container's limits are not in force, if enforcing them failed.
    pub limits_note: Option<String>,
}

impl ContainerRuntime {
    pub fn new(
        plan: &ContainerPlan,
        resources: Option<&ResourceRequirements>,
        pod_dir: &Path,
        pod_uid: &str,
        backoff: BackoffPolicy,
        now: Instant,
    ) -> Self {
        let (state, next_start) = match &plan.launch {
            Ok(_) => (waiting("ContainerCreating", None), Some(now)),
            Err(reason) => (
                waiting("CreateContainerConfigError", Some(reason.clone())),
                None,
            ),
        };
        Self {
            plan: plan.clone(),
            process: None,
            state,
            last_termination: None,
            starts: 0,
            backoff: CrashBackoff::new(backoff),
            next_start,
            readiness: None,
            liveness: None,
            terminating: false,
            log_path: pod_dir.join("logs").join(format!("{}.log", plan.name)),
            resources: resources::cpu_and_memory(resources),
            limits: Limits::of(resources),
            cgroup_name: format!("{pod_uid}_{}", plan.name),
            cgroup: None,
            limits_note: None,
        }
    }

    /// Takes CPU and memory changed in the spec (in-place resize); true if they changed.
    pub fn resize(&mut self, wanted: Option<&ResourceRequirements>) -> bool {
        let resources = resources::cpu_and_memory(wanted);
        if resources == self.resources {
            return false;
        }
        self.resources = resources;
        self.limits = Limits::of(wanted);
        if let Some(cgroup) = &self.cgroup {
            self.limits_note = cgroup
                .apply(&self.limits)
                .err()
                .map(|e| format!("container {}: limits not enforced ({e})", self.plan.name));
        }
        true
    }

    /// Notices an exited process and schedules the restart the policy asks for.
    pub fn reap(&mut self, restart_policy: &str, pod: &str) {
        let Some(p) = self.process.as_mut() else {
            return;
        };
        let exit = match p.try_exit() {
            Ok(Some(exit)) => exit,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "checking container process");
                return;
            }
        };
        let p = self.process.take().expect("checked above");
        self.release_cgroup();
        let ended = termination(&p, exit);
        tracing::info!(%pod, container = %self.plan.name, pid = p.pid, exit_code = exit.exit_code, "container exited");
        self.readiness = None;
        self.liveness = None;
        let restart = match restart_policy {
            "Never" => false,
            "OnFailure" => exit.exit_code != 0,
            _ => true,
        };
        if !restart {
            self.next_start = None;
            self.state = RunState::Terminated(ended);
            return;
        }
        let delay = self.backoff.on_exit(p.started.elapsed());
        self.next_start = Some(Instant::now() + delay);
        self.state = waiting(
            "CrashLoopBackOff",
            Some(format!(
                "back-off {}s restarting failed container={}",
                delay.as_secs(),
                self.plan.name
            )),
        );
        self.last_termination = Some(ended);
    }

    pub fn release_cgroup(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.remove();
        }
    }

    /// Puts a new process under this container's limits.
    fn enforce_limits(&mut self, pid: u32, cgroups: &Cgroups) {
        let enforced = cgroups
            .create(&self.cgroup_name, &self.limits)
            .and_then(|cgroup| {
                cgroup.add(pid)?;
                Ok(cgroup)
            });
        match enforced {
            Ok(cgroup) => {
                self.cgroup = Some(cgroup);
                self.limits_note = None;
            }
            Err(e) => {
                tracing::warn!(container = %self.plan.name, error = %e, "enforcing limits");
                self.limits_note = Some(format!(
                    "container {}: limits not enforced ({e})",
                    self.plan.name
                ));
            }
        }
    }

    pub fn start_if_due(&mut self, pod: &str, cgroups: Option<&Cgroups>) {
        if self.process.is_some() || self.next_start.is_none_or(|t| t > Instant::now()) {
            return;
        }
        let Ok(launch) = &self.plan.launch else {
            return;
        };
        let banner = if self.starts == 0 {
            "start".to_string()
        } else {
            format!("restart {}", self.starts)
        };
        match process::spawn(launch, &self.log_path, &banner) {
            Ok(p) => {
                tracing::info!(%pod, container = %self.plan.name, pid = p.pid, "container started");
                if let Some(cgroups) = cgroups {
                    self.enforce_limits(p.pid, cgroups);
                }
                self.state = RunState::Running {
                    pid: p.pid,
                    started_at: p.started_at,
                };
                self.readiness = self
                    .plan
                    .readiness
                    .clone()
                    .map(|s| ProbeTracker::new(s, p.started, false));
                self.liveness = self
                    .plan
                    .liveness
                    .clone()
                    .map(|s| ProbeTracker::new(s, p.started, true));
                self.process = Some(p);
                self.starts += 1;
            }
            Err(e) => {
                let delay = self.backoff.on_exit(Duration::ZERO);
                self.next_start = Some(Instant::now() + delay);
                self.state = waiting("CreateContainerError", Some(e.to_string()));
            }
        }
    }

    pub fn report(&self) -> ContainerReport {
        let running = matches!(self.state, RunState::Running { .. });
        ContainerReport {
            name: self.plan.name.clone(),
            image: self.plan.image.clone(),
            state: self.state.clone(),
            last_termination: self.last_termination.clone(),
            restart_count: (self.starts - 1).max(0),
            ready: running
                && !self.terminating
                && self.readiness.as_ref().is_none_or(ProbeTracker::passing),
            resources: self.resources.clone(),
        }
    }
}

pub fn waiting(reason: &str, message: Option<String>) -> RunState {
    RunState::Waiting {
        reason: reason.into(),
        message,
    }
}

pub fn termination(p: &Process, exit: Exit) -> Termination {
    Termination {
        pid: p.pid,
        exit_code: exit.exit_code,
        signal: exit.signal,
        started_at: p.started_at,
        finished_at: Timestamp::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_plan::Launch;

    fn container(test: &str, script: &str) -> (ContainerRuntime, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("node-agent-runtime-{}-{test}", std::process::id()));
        let plan = ContainerPlan {
            name: "main".into(),
            image: String::new(),
            launch: Ok(Launch {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), script.into()],
                env: vec![],
                working_dir: std::env::temp_dir(),
            }),
            readiness: None,
            liveness: None,
        };
        let policy = BackoffPolicy {
            initial: Duration::from_secs(5),
            ..BackoffPolicy::default()
        };
        let c = ContainerRuntime::new(&plan, None, &dir, "uid", policy, Instant::now());
        (c, dir)
    }

    async fn run_to_exit(c: &mut ContainerRuntime, restart_policy: &str) {
        c.start_if_due("ns/pod", None);
        assert!(matches!(c.state, RunState::Running { .. }), "{:?}", c.state);
        while c.process.is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.reap(restart_policy, "ns/pod");
        }
    }

    #[tokio::test]
    async fn a_crash_under_always_waits_in_back_off_and_keeps_the_exit() {
        let (mut c, dir) = container("always", "exit 3");
        run_to_exit(&mut c, "Always").await;
        assert!(
            matches!(&c.state, RunState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
        );
        assert_eq!(c.last_termination.as_ref().map(|t| t.exit_code), Some(3));
        assert!(
            c.next_start
                .is_some_and(|t| t > Instant::now() + Duration::from_secs(4))
        );
        c.start_if_due("ns/pod", None);
        assert!(c.process.is_none(), "no restart before the back-off ends");
        assert_eq!(c.report().restart_count, 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn never_and_on_failure_stop_after_success() {
        for policy in ["Never", "OnFailure"] {
            let (mut c, dir) = container(policy, "exit 0");
            run_to_exit(&mut c, policy).await;
            assert!(
                matches!(&c.state, RunState::Terminated(t) if t.exit_code == 0),
                "{policy}"
            );
            assert_eq!(c.next_start, None, "{policy}");
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[tokio::test]
    async fn on_failure_restarts_a_failure() {
        let (mut c, dir) = container("on-failure", "exit 1");
        run_to_exit(&mut c, "OnFailure").await;
        assert!(c.next_start.is_some());
        assert_eq!(c.last_termination.as_ref().map(|t| t.exit_code), Some(1));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
