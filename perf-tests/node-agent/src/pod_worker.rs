//! One task per pod bound to this node: starts its containers as processes, restarts them
//! per restartPolicy with back-off, runs their probes, reports the pod status, and on
//! deletion stops them and confirms the deletion.

use crate::backoff::BackoffPolicy;
use crate::cgroups::Cgroups;
use crate::container_runtime::{ContainerRuntime, termination, waiting};
use crate::error::Error;
use crate::pod_plan::{self, Placement, PodPlan};
use crate::pod_status::{self, ConditionClock, PodReport, RunState};
use crate::{probe_runner, volumes};
use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const TICK: Duration = Duration::from_millis(250);
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// On agent shutdown or a pod vanishing from the API, nobody waits for a long grace period.
const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every pod worker needs from the agent.
#[derive(Clone)]
pub struct AgentContext {
    pub client: kube::Client,
    pub node_name: String,
    pub node_ip: String,
    pub work_dir: PathBuf,
    pub search_path: String,
    pub backoff: BackoffPolicy,
    /// Where container limits are enforced, or why they cannot be.
    pub cgroups: Result<Cgroups, String>,
}

/// The latest the watch has seen of a pod.
#[derive(Clone, Debug)]
pub enum PodSighting {
    Present(Arc<Pod>),
    /// Removed from the API without this agent confirming it (e.g. a forced delete).
    Gone,
}

struct PodWorker {
    ctx: Arc<AgentContext>,
    pod: Arc<Pod>,
    plan: PodPlan,
    containers: Vec<ContainerRuntime>,
    volumes_ready: bool,
    start_time: Timestamp,
    clock: ConditionClock,
    last_reported: Option<Value>,
}

pub async fn run(
    ctx: Arc<AgentContext>,
    mut sightings: watch::Receiver<PodSighting>,
    mut shutdown: watch::Receiver<bool>,
) {
    let PodSighting::Present(pod) = sightings.borrow_and_update().clone() else {
        return;
    };
    let mut worker = PodWorker::new(ctx, pod);
    let name = worker.pod_name();
    let finished_earlier = matches!(
        worker.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    tracing::info!(pod = %name, "pod bound to this node");
    loop {
        if worker.pod.metadata.deletion_timestamp.is_some() {
            let grace = worker.grace_period();
            worker.begin_termination().await;
            worker.stop_all(grace).await;
            worker.report().await;
            worker.confirm_deletion().await;
            break;
        }
        if !finished_earlier {
            worker.tick().await;
            worker.report().await;
        }
        tokio::select! {
            changed = sightings.changed() => {
                let sighting = if changed.is_ok() { sightings.borrow_and_update().clone() } else { PodSighting::Gone };
                match sighting {
                    PodSighting::Present(pod) => {
                        worker.pod = pod;
                        worker.resize();
                    }
                    PodSighting::Gone => {
                        tracing::info!(pod = %name, "pod removed from the API; stopping its processes");
                        worker.stop_all(worker.grace_period().min(MAX_SHUTDOWN_GRACE)).await;
                        break;
                    }
                }
            }
            _ = shutdown.changed() => {
                worker.stop_all(worker.grace_period().min(MAX_SHUTDOWN_GRACE)).await;
                break;
            }
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    volumes::release(&worker.plan.links);
    tracing::info!(pod = %name, "pod worker done");
}

impl PodWorker {
    fn new(ctx: Arc<AgentContext>, pod: Arc<Pod>) -> Self {
        let meta = &pod.metadata;
        let pod_dir = pod_dir(
            &ctx.work_dir,
            meta.namespace.as_deref().unwrap_or(""),
            meta.name.as_deref().unwrap_or(""),
            meta.uid.as_deref().unwrap_or(""),
        );
        let plan = pod_plan::plan(
            &pod,
            &Placement {
                node_name: &ctx.node_name,
                node_ip: &ctx.node_ip,
                pod_dir: &pod_dir,
                search_path: &ctx.search_path,
                limits_unenforced: ctx.cgroups.as_ref().err().map(String::as_str),
            },
        );
        let now = Instant::now();
        let containers = plan
            .containers
            .iter()
            .map(|c| {
                ContainerRuntime::new(
                    c,
                    spec_resources(&pod, &c.name),
                    &pod_dir,
                    meta.uid.as_deref().unwrap_or(""),
                    ctx.backoff,
                    now,
                )
            })
            .collect();
        Self {
            ctx,
            pod,
            plan,
            containers,
            volumes_ready: false,
            start_time: Timestamp::now(),
            clock: ConditionClock::default(),
            last_reported: None,
        }
    }

    fn pod_name(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or(""),
            self.pod.metadata.name.as_deref().unwrap_or("")
        )
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    fn grace_period(&self) -> Duration {
        let seconds = self.pod.metadata.deletion_grace_period_seconds.or_else(|| {
            self.pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        });
        seconds.map_or(DEFAULT_GRACE, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(0))
        })
    }

    async fn tick(&mut self) {
        if !self.volumes_ready {
            match volumes::prepare(&self.plan.volumes, &self.plan.links) {
                Ok(()) => self.volumes_ready = true,
                Err(e) => {
                    for c in self
                        .containers
                        .iter_mut()
                        .filter(|c| c.next_start.is_some())
                    {
                        c.state = waiting("CreateContainerConfigError", Some(e.to_string()));
                    }
                    return;
                }
            }
        }
        let restart_policy = self.restart_policy().to_string();
        let name = self.pod_name();
        let cgroups = self.ctx.cgroups.as_ref().ok();
        for c in &mut self.containers {
            c.reap(&restart_policy, &name);
            c.start_if_due(&name, cgroups);
        }
        self.run_probes().await;
    }

    async fn run_probes(&mut self) {
        let now = Instant::now();
        let grace = self.grace_period();
        let attempts = self.containers.iter().enumerate().flat_map(|(i, c)| {
            let launch = c.plan.launch.as_ref().ok();
            [(c.readiness.as_ref(), false), (c.liveness.as_ref(), true)]
                .into_iter()
                .filter_map(move |(tracker, is_liveness)| {
                    let tracker = tracker.filter(|t| t.due(now))?;
                    let launch = launch?;
                    Some(async move {
                        (
                            i,
                            is_liveness,
                            probe_runner::attempt(tracker.spec(), launch).await,
                        )
                    })
                })
        });
        let outcomes = futures::future::join_all(attempts).await;
        let finished = Instant::now();
        for (i, is_liveness, ok) in outcomes {
            let c = &mut self.containers[i];
            let tracker = if is_liveness {
                c.liveness.as_mut()
            } else {
                c.readiness.as_mut()
            };
            let Some(tracker) = tracker else { continue };
            if tracker.record(ok, finished) && is_liveness && !tracker.passing() {
                tracing::warn!(container = %c.plan.name, "liveness probe failed; restarting");
                if let Some(p) = c.process.as_mut()
                    && let Err(e) = p.stop(grace).await
                {
                    tracing::warn!(error = %e, "stopping unhealthy container");
                }
            }
        }
    }

    /// A terminating pod is not ready, whatever its probes said last; say so before the
    /// grace period, not after it.
    async fn begin_termination(&mut self) {
        for c in &mut self.containers {
            c.next_start = None;
            c.terminating = true;
        }
        self.report().await;
    }

    /// Applies CPU and memory changed in the spec (in-place resize through `pods/resize`).
    fn resize(&mut self) {
        let pod = self.pod.clone();
        let name = self.pod_name();
        for c in &mut self.containers {
            let wanted = spec_resources(&pod, &c.plan.name);
            if c.resize(wanted) {
                tracing::info!(pod = %name, container = %c.plan.name, resources = ?c.resources, "resized");
            }
        }
    }

    async fn stop_all(&mut self, grace: Duration) {
        let stops = self.containers.iter_mut().map(|c| async move {
            c.next_start = None;
            let Some(mut p) = c.process.take() else {
                return;
            };
            match p.stop(grace).await {
                Ok(exit) => c.state = RunState::Terminated(termination(&p, exit)),
                Err(e) => tracing::warn!(pid = p.pid, error = %e, "stopping container"),
            }
            c.release_cgroup();
            c.readiness = None;
            c.liveness = None;
        });
        futures::future::join_all(stops).await;
    }

    async fn report(&mut self) {
        let containers = self
            .containers
            .iter()
            .map(ContainerRuntime::report)
            .collect();
        let restart_policy = self.restart_policy().to_string();
        let mut ignored = self.plan.ignored.clone();
        ignored.extend(self.containers.iter().filter_map(|c| c.limits_note.clone()));
        let report = PodReport {
            containers,
            restart_policy: &restart_policy,
            ip: &self.ctx.node_ip,
            start_time: self.start_time,
            ignored: &ignored,
            observed_generation: self.pod.metadata.generation,
        };
        let status = pod_status::pod_status(&report, &mut self.clock, Timestamp::now());
        let status = match serde_json::to_value(status) {
            Ok(v) => v,
            Err(source) => {
                tracing::error!(error = %Error::Json { what: "pod status", source }, "reporting status");
                return;
            }
        };
        if self.last_reported.as_ref() == Some(&status) {
            return;
        }

        // The uid makes the API server refuse the patch if the name now belongs to a new pod.
        let patch = json!({"metadata": {"uid": self.pod.metadata.uid}, "status": with_explicit_nulls(status.clone())});
        match self
            .pods()
            .patch_status(
                self.pod.metadata.name.as_deref().unwrap_or(""),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(_) => self.last_reported = Some(status),
            // Gone or replaced by a pod of the same name: the watch will say so.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                tracing::debug!(pod = %self.pod_name(), code = e.code, "pod status not reported")
            }
            Err(e) => tracing::warn!(pod = %self.pod_name(), error = %e, "reporting pod status"),
        }
    }

    async fn confirm_deletion(&self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = self.pod.metadata.name.as_deref().unwrap_or("");
        match self.pods().delete(name, &params).await {
            Ok(_) => tracing::info!(pod = %self.pod_name(), "deletion confirmed"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %self.pod_name(), error = %e, "confirming deletion"),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(
            self.ctx.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }
}

fn spec_resources<'a>(pod: &'a Pod, container: &str) -> Option<&'a ResourceRequirements> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)?
        .resources
        .as_ref()
}

/// A strategic merge patch keeps fields it does not mention, so a condition's reason and
/// message must be sent as null to clear them when the condition turns True.
fn with_explicit_nulls(mut status: Value) -> Value {
    for condition in status["conditions"].as_array_mut().into_iter().flatten() {
        if let Some(fields) = condition.as_object_mut() {
            for key in ["reason", "message"] {
                fields.entry(key).or_insert(Value::Null);
            }
        }
    }
    status
}

/// Where a pod's processes keep their logs and volumes: `<work dir>/pods/<ns>_<name>_<uid>`.
fn pod_dir(work_dir: &std::path::Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    work_dir
        .join("pods")
        .join(format!("{namespace}_{name}_{uid}"))
}
