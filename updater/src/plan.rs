//! What applying a recommendation would change, knob by knob, and by which path: APF
//! objects live, CPU/memory by in-place resize, or the StatefulSet's pod template, rolled.
//! Pure: it reads a [`LiveState`] the caller fetched, so a dry run and the tests need no
//! cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::str::FromStr;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ResourceRequirements};
use k8s_openapi::api::flowcontrol::v1::PriorityLevelConfiguration;
use recommender::Recommendation;
use recommender::recommendation::Target;
use recommender::safety::Action;
use serde::{Deserialize, Serialize};

use crate::apf::FlowRoom;
use crate::args::{CONFIG_FLAG, CommandLine, OwnedFlag, format_number};
use crate::component_config;
use crate::error::{Error, Result};
use crate::intent;
use crate::quantity;

/// A control-plane component, in the words of the recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    Apiserver,
    ControllerManager,
    Scheduler,
}

impl Component {
    /// Apiservers first: the clients' new QPS must land on servers that can take it.
    pub const DEFAULT_ORDER: [Component; 3] = [
        Component::Apiserver,
        Component::ControllerManager,
        Component::Scheduler,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Apiserver => "apiserver",
            Component::ControllerManager => "controller-manager",
            Component::Scheduler => "scheduler",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Component {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Component::DEFAULT_ORDER
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!("unknown component {s:?} (apiserver, controller-manager, scheduler)")
            })
    }
}

/// The part of a container arak changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    pub command_line: CommandLine,
    pub resources: Option<ResourceRequirements>,
}

/// A component configuration file kept under a ConfigMap key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    pub config_map: String,
    pub key: String,
    pub content: String,
}

/// Everything a roll writes: the container and, for a config-file component, the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollTarget {
    pub container: ContainerState,
    pub config_file: Option<ConfigFile>,
    /// The pod template's [`CONFIG_HASH_ANNOTATION`]: a new file only reaches a component
    /// through a restart, which this makes the StatefulSet controller do.
    pub config_hash: Option<String>,
}

pub const CONFIG_HASH_ANNOTATION: &str = "arak.io/config-hash";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roll {
    pub previous: RollTarget,
    pub target: RollTarget,
}

/// How a change reaches the running component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangePath {
    /// APF objects in the tested cluster, no restart.
    Apf,
    /// `pods/resize`, no restart.
    InPlaceResize,
    /// The pod template, rolled one pod at a time.
    Roll,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnobChange {
    pub replica: String,
    pub knob: String,
    pub from: String,
    pub to: String,
    pub path: ChangePath,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodResize {
    pub pod: String,
    pub previous: ResourceRequirements,
    pub target: ResourceRequirements,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatefulSetPlan {
    pub component: Component,
    pub stateful_set: String,
    pub container: String,
    pub replicas: i32,
    pub changes: Vec<KnobChange>,
    pub resizes: Vec<PodResize>,
    pub roll: Option<Roll>,
    /// Resources that reach the pods in place and are then written into the pod template
    /// without a roll, so that a pod recreated later (eviction, node loss) keeps them.
    pub template_resources: Option<Roll>,
}

/// A PriorityLevelConfiguration's queue length limit, shared by every apiserver replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelChange {
    pub name: String,
    pub hand_size: i32,
    pub from_queue_length_limit: i32,
    pub to_queue_length_limit: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub apf: Vec<LevelChange>,
    /// In roll order.
    pub stateful_sets: Vec<StatefulSetPlan>,
    /// Replicas already running what the recommendation says.
    pub unchanged: Vec<String>,
    pub notes: Vec<String>,
}

/// The live objects a plan is made from.
#[derive(Debug, Clone, Default)]
pub struct LiveState {
    pub stateful_sets: BTreeMap<String, StatefulSet>,
    /// Pods of the managed namespace.
    pub pods: Vec<Pod>,
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// None when there is no client for the tested cluster, where APF objects live.
    pub priority_levels: Option<Vec<PriorityLevelConfiguration>>,
    /// Whether the management cluster serves `pods/resize` (Kubernetes ≥ 1.33).
    pub resize_supported: bool,
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub order: Vec<Component>,
    /// PriorityLevelConfigurations whose queue length follows the recommended queue length.
    pub apf_levels: Vec<String>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            order: Component::DEFAULT_ORDER.to_vec(),
            // The limited levels ordinary clients and controllers land in.
            apf_levels: vec![
                "workload-high".into(),
                "workload-low".into(),
                "global-default".into(),
            ],
        }
    }
}

/// One replica's recommended knobs.
struct Desired<'a> {
    component: Component,
    target: &'a Target,
    flags: Vec<(OwnedFlag, f64)>,
    cpu_cores: f64,
    memory_bytes: f64,
}

fn client_desired(
    component: Component,
    list: &[recommender::recommendation::ClientRecommendation],
) -> impl Iterator<Item = Desired<'_>> {
    list.iter().map(move |r| Desired {
        component,
        target: &r.target,
        flags: vec![
            (OwnedFlag::KubeApiQps, r.recommended.client_qps),
            (
                OwnedFlag::KubeApiBurst,
                f64::from(r.recommended.client_burst),
            ),
        ],
        cpu_cores: r.recommended.cpu_cores,
        memory_bytes: r.recommended.memory_bytes,
    })
}

fn desired(recommendation: &Recommendation) -> Vec<Desired<'_>> {
    let apiservers = recommendation.apiservers.iter().map(|r| Desired {
        component: Component::Apiserver,
        target: &r.target,
        flags: vec![
            (
                OwnedFlag::MaxRequestsInflight,
                f64::from(r.recommended.max_requests_inflight),
            ),
            (
                OwnedFlag::MaxMutatingRequestsInflight,
                f64::from(r.recommended.max_mutating_requests_inflight),
            ),
        ],
        cpu_cores: r.recommended.cpu_cores,
        memory_bytes: r.recommended.memory_bytes,
    });
    apiservers
        .chain(client_desired(
            Component::Scheduler,
            &recommendation.schedulers,
        ))
        .chain(client_desired(
            Component::ControllerManager,
            &recommendation.controller_managers,
        ))
        .collect()
}

/// The plan for `recommendation` against `live`. A `hold` recommendation plans nothing.
pub fn plan(
    recommendation: &Recommendation,
    live: &LiveState,
    options: &PlanOptions,
) -> Result<Plan> {
    let mut plan = Plan::default();
    for (name, sts) in &live.stateful_sets {
        if let Some(intent) = intent::read(sts)? {
            plan.notes.push(format!(
                "StatefulSet {name} has an unfinished change ({}); apply resumes it if this recommendation wants the same, else rolls it back",
                intent.step
            ));
        }
    }
    if recommendation.action != Action::Change {
        plan.notes.push(format!(
            "the recommendation says hold, nothing to apply: {}",
            recommendation.hold_reasons.join("; ")
        ));
        return Ok(plan);
    }

    let mut groups: BTreeMap<(usize, &str), Vec<Desired>> = BTreeMap::new();
    for d in desired(recommendation) {
        let rank = options
            .order
            .iter()
            .position(|c| *c == d.component)
            .unwrap_or(options.order.len());
        groups
            .entry((rank, d.target.stateful_set.as_str()))
            .or_default()
            .push(d);
    }
    for replicas in groups.into_values() {
        let sts_plan = plan_stateful_set(&replicas, live, &mut plan.notes)?;
        if sts_plan.changes.is_empty() && sts_plan.template_resources.is_none() {
            plan.unchanged
                .extend(replicas.iter().map(|d| d.target.name.clone()));
        } else {
            let changed: BTreeSet<&str> = sts_plan
                .changes
                .iter()
                .map(|c| c.replica.as_str())
                .collect();
            plan.unchanged.extend(
                replicas
                    .iter()
                    .filter(|d| !changed.contains(d.target.name.as_str()))
                    .map(|d| d.target.name.clone()),
            );
            plan.stateful_sets.push(sts_plan);
        }
    }
    plan_apf(recommendation, live, options, &mut plan);
    Ok(plan)
}

fn plan_stateful_set(
    replicas: &[Desired],
    live: &LiveState,
    notes: &mut Vec<String>,
) -> Result<StatefulSetPlan> {
    let first = &replicas[0];
    let sts_name = &first.target.stateful_set;
    let container_name = &first.target.container;
    let sts = live
        .stateful_sets
        .get(sts_name)
        .ok_or_else(|| Error::NoStatefulSet(sts_name.clone()))?;
    let container = template_container(sts, container_name)?;
    let replica_count = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let previous = RollTarget {
        container: container_state(container),
        config_file: config_file(sts, container, live)?,
        config_hash: sts
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
            .cloned(),
    };

    let mut changes = Vec::new();
    let mut roll_targets: Vec<RollTarget> = Vec::new();
    let mut resizes = Vec::new();
    let mut template_resources_change = false;
    for d in replicas {
        let pod = replica_pod(sts, d.target, &live.pods)?;
        let mut target = previous.clone();
        let mut change = |knob: &str, from: String, to: String, path| {
            changes.push(KnobChange {
                replica: d.target.name.clone(),
                knob: knob.to_owned(),
                from,
                to,
                path,
            })
        };
        if let Some(file) = &mut target.config_file {
            // With --config the client flags are ignored: the file carries the limits.
            let location = format!("ConfigMap {} key {}", file.config_map, file.key);
            let in_file = component_config::client_connection(&file.content).map_err(|reason| {
                Error::ComponentConfig {
                    location: location.clone(),
                    reason,
                }
            })?;
            let qps = flag_value(d, OwnedFlag::KubeApiQps);
            let burst = flag_value(d, OwnedFlag::KubeApiBurst) as u32;
            if in_file.qps != Some(qps) || in_file.burst != Some(burst) {
                change(
                    "clientConnection.qps/burst",
                    format!(
                        "{}/{}",
                        show(in_file.qps),
                        show(in_file.burst.map(f64::from))
                    ),
                    format!("{}/{}", format_number(qps), burst),
                    ChangePath::Roll,
                );
                file.content = component_config::with_client_connection(&file.content, qps, burst)
                    .map_err(|reason| Error::ComponentConfig { location, reason })?;
                target.config_hash = Some(content_hash(&file.content));
            }
        } else {
            for &(flag, value) in &d.flags {
                let line = &target.container.command_line;
                let current = line.value(flag.name()).and_then(|v| v.parse::<f64>().ok());
                if current != Some(value) {
                    change(
                        flag.name(),
                        show(current),
                        format_number(value),
                        ChangePath::Roll,
                    );
                    target.container.command_line =
                        line.with_flag(flag.name(), &format_number(value));
                }
            }
        }

        let template_resources = previous.container.resources.as_ref();
        let wanted = with_resources(template_resources, d.cpu_cores, d.memory_bytes);
        let pod_resources = pod
            .and_then(|p| pod_container(p, container_name))
            .and_then(|c| c.resources.clone())
            .or_else(|| template_resources.cloned());
        // As quantities: a template's "2" is the "2000m" arak writes.
        if !quantity::same_resources(Some(&wanted), template_resources) {
            template_resources_change = true;
        }
        target.container.resources = Some(wanted.clone());
        if let (Some(pod), Some(current)) = (pod, &pod_resources) {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let (cpu_from, memory_from) = requests(current);
            let cpu_differs = cpu_from.is_none_or(|c| !quantity::same_cpu(c, d.cpu_cores));
            let memory_differs =
                memory_from.is_none_or(|m| !quantity::same_memory(m, d.memory_bytes));
            // The path is settled below, once it is known whether the pod rolls anyway.
            if cpu_differs {
                change(
                    "cpu",
                    cpu_from.map_or("unset".into(), |c| quantity::cpu(c).0),
                    quantity::cpu(d.cpu_cores).0,
                    ChangePath::InPlaceResize,
                );
            }
            if memory_differs {
                change(
                    "memory",
                    memory_from.map_or("unset".into(), |m| quantity::memory(m).0),
                    quantity::memory(d.memory_bytes).0,
                    ChangePath::InPlaceResize,
                );
            }
            if cpu_differs || memory_differs {
                resizes.push(PodResize {
                    pod: pod_name,
                    previous: current.clone(),
                    target: wanted,
                });
            }
        }
        roll_targets.push(target);
    }

    let flags_change = changes.iter().any(|c| c.path == ChangePath::Roll);
    let resize_possible = live.resize_supported && resize_without_restart(container);
    let rolls = flags_change
        || (!resizes.is_empty() && !resize_possible)
        || (template_resources_change && !resize_possible);
    let mut roll = None;
    let mut template_resources = None;
    if !rolls && template_resources_change {
        // Every pod has, or is about to get in place, the resources the template lacks.
        let target = roll_targets[0].clone();
        if roll_targets.iter().all(|t| *t == target) && replicas.len() as i32 >= replica_count {
            template_resources = Some(Roll {
                previous: previous.clone(),
                target,
            });
        } else {
            notes.push(format!(
                "StatefulSet {sts_name}: its pods are resized in place to different resources; \
                 its pod template keeps the old ones, which a recreated pod gets back"
            ));
        }
    }
    if rolls {
        let target = roll_targets[0].clone();
        // A pod template carries one setting for every pod of the StatefulSet.
        if roll_targets.iter().any(|t| *t != target) {
            return Err(Error::DivergentReplicas(sts_name.clone()));
        }
        if replica_count > 1 && (replicas.len() as i32) < replica_count {
            return Err(Error::PartialStatefulSet {
                stateful_set: sts_name.clone(),
                covered: replicas.len(),
                replicas: replica_count,
            });
        }
        for change in &mut changes {
            change.path = ChangePath::Roll;
        }
        resizes.clear();
        roll = Some(Roll {
            previous: previous.clone(),
            target,
        });
    }
    Ok(StatefulSetPlan {
        component: first.component,
        stateful_set: sts_name.clone(),
        container: container_name.clone(),
        replicas: replica_count,
        changes,
        resizes,
        roll,
        template_resources,
    })
}

/// FNV-1a: a stable fingerprint of a config file, to tell templates apart.
fn content_hash(content: &str) -> String {
    let hash = content.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn flag_value(d: &Desired, flag: OwnedFlag) -> f64 {
    d.flags
        .iter()
        .find(|(f, _)| *f == flag)
        .map_or(0.0, |(_, v)| *v)
}

fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "unset".to_owned(), format_number)
}

pub fn template_container<'a>(sts: &'a StatefulSet, name: &str) -> Result<&'a Container> {
    sts.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == name))
        .ok_or_else(|| Error::NoContainer {
            stateful_set: sts.metadata.name.clone().unwrap_or_default(),
            container: name.to_owned(),
        })
}

pub fn container_state(container: &Container) -> ContainerState {
    ContainerState {
        command_line: CommandLine::new(
            container.command.clone().unwrap_or_default(),
            container.args.clone().unwrap_or_default(),
        ),
        resources: container.resources.clone(),
    }
}

fn pod_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == name)
}

/// The pod a replica name means: the pod of that name, or the only pod of a one-replica
/// StatefulSet (the reference layout names replicas after their StatefulSets).
fn replica_pod<'a>(sts: &StatefulSet, target: &Target, pods: &'a [Pod]) -> Result<Option<&'a Pod>> {
    let sts_name = sts.metadata.name.as_deref().unwrap_or_default();
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let pod_name = if ordinal_of(sts_name, &target.name).is_some() {
        target.name.clone()
    } else if replicas == 1 {
        format!("{sts_name}-0")
    } else {
        return Err(Error::NoReplica {
            replica: target.name.clone(),
            stateful_set: sts_name.to_owned(),
        });
    };
    Ok(pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(pod_name.as_str())))
}

/// The ordinal of `pod` in StatefulSet `sts` (`<sts>-<ordinal>`).
pub fn ordinal_of(sts: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(sts)?.strip_prefix('-')?.parse().ok()
}

/// CPU and memory requests in cores and bytes.
fn requests(resources: &ResourceRequirements) -> (Option<f64>, Option<f64>) {
    let get = |name: &str| {
        resources
            .requests
            .as_ref()
            .and_then(|r| r.get(name))
            .and_then(quantity::parse)
    };
    (get("cpu"), get("memory"))
}

/// `current` with the requests set to the recommendation. A limit equal to its request
/// follows it (so the QoS class stays); another limit only rises to stay above the request.
pub fn with_resources(
    current: Option<&ResourceRequirements>,
    cpu_cores: f64,
    memory_bytes: f64,
) -> ResourceRequirements {
    let mut resources = current.cloned().unwrap_or_default();
    let old_requests = resources.requests.clone().unwrap_or_default();
    let requests = resources.requests.get_or_insert_with(Default::default);
    requests.insert("cpu".into(), quantity::cpu(cpu_cores));
    requests.insert("memory".into(), quantity::memory(memory_bytes));
    if let Some(limits) = resources.limits.as_mut() {
        for (name, value) in [("cpu", cpu_cores), ("memory", memory_bytes)] {
            let Some(limit) = limits.get(name) else {
                continue;
            };
            let limit_value = quantity::parse(limit);
            let was_equal = old_requests.get(name).and_then(quantity::parse) == limit_value;
            if was_equal || limit_value.is_none_or(|l| l < value) {
                let quantity = if name == "cpu" {
                    quantity::cpu(value)
                } else {
                    quantity::memory(value)
                };
                limits.insert(name.into(), quantity);
            }
        }
    }
    resources
}

/// Whether the container's resizePolicy lets CPU and memory change without a restart.
fn resize_without_restart(container: &Container) -> bool {
    container.resize_policy.iter().flatten().all(|p| {
        !(matches!(p.resource_name.as_str(), "cpu" | "memory")
            && p.restart_policy == "RestartContainer")
    })
}

/// The ConfigMap key behind the container's `--config` file, if it has one.
fn config_file(
    sts: &StatefulSet,
    container: &Container,
    live: &LiveState,
) -> Result<Option<ConfigFile>> {
    let line = container_state(container).command_line;
    let Some(path) = line.value(CONFIG_FLAG) else {
        return Ok(None);
    };
    let sts_name = sts.metadata.name.clone().unwrap_or_default();
    let cannot = |reason: String| Error::Unsupported {
        stateful_set: sts_name.clone(),
        reason: format!("{CONFIG_FLAG}={path}: {reason}; arak cannot change its client QPS/burst"),
    };
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&format!("{}/", m.mount_path.trim_end_matches('/'))))
        .max_by_key(|m| m.mount_path.len())
        .ok_or_else(|| cannot("no volume is mounted there".into()))?;
    let relative = path[mount.mount_path.trim_end_matches('/').len() + 1..].to_owned();
    let relative = match &mount.sub_path {
        Some(sub) if !sub.is_empty() => format!("{sub}/{relative}"),
        _ => relative,
    };
    let volume = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| v.name == mount.name))
        .ok_or_else(|| cannot(format!("volume {} is not in the template", mount.name)))?;
    let source = volume
        .config_map
        .as_ref()
        .ok_or_else(|| cannot(format!("volume {} is not a ConfigMap", mount.name)))?;
    let key = match &source.items {
        Some(items) => items
            .iter()
            .find(|i| i.path == relative)
            .map(|i| i.key.clone())
            .ok_or_else(|| cannot(format!("ConfigMap {} projects no {relative}", source.name)))?,
        None => relative,
    };
    let content = live
        .config_maps
        .get(&source.name)
        .and_then(|cm| cm.data.as_ref())
        .and_then(|d| d.get(&key))
        .ok_or_else(|| cannot(format!("ConfigMap {} has no key {key}", source.name)))?;
    Ok(Some(ConfigFile {
        config_map: source.name.clone(),
        key,
        content: content.clone(),
    }))
}

/// Queue lengths are shared by all apiservers: the largest recommended room wins.
fn plan_apf(
    recommendation: &Recommendation,
    live: &LiveState,
    options: &PlanOptions,
    plan: &mut Plan,
) {
    let Some(room) = recommendation
        .apiservers
        .iter()
        .map(|a| a.recommended.queue_length)
        .max()
    else {
        return;
    };
    let Some(levels) = &live.priority_levels else {
        plan.notes.push(
            "no client for the tested cluster: APF queue lengths not read nor changed".to_owned(),
        );
        return;
    };
    for name in &options.apf_levels {
        let Some(level) = levels
            .iter()
            .find(|l| l.metadata.name.as_deref() == Some(name.as_str()))
        else {
            plan.notes.push(format!(
                "PriorityLevelConfiguration {name} does not exist in the tested cluster"
            ));
            continue;
        };
        let Some(flow) = FlowRoom::of(level) else {
            plan.notes.push(format!(
                "PriorityLevelConfiguration {name} does not queue; left alone"
            ));
            continue;
        };
        // `queue_length` is one flow's room per class, rounded up so it is never less.
        let current = flow.queue_length_limit;
        let wanted = flow.limit_for(room);
        if wanted != current {
            plan.apf.push(LevelChange {
                name: name.clone(),
                hand_size: flow.hand_size,
                from_queue_length_limit: current,
                to_queue_length_limit: wanted,
            });
        }
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.apf.is_empty() && self.stateful_sets.is_empty()
    }

    /// A diff for people: what changes where, and how.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.is_empty() {
            out.push_str("nothing to change\n");
        }
        if !self.apf.is_empty() {
            out.push_str("APF in the tested cluster (live, no restart):\n");
            for level in &self.apf {
                let _ = writeln!(
                    out,
                    "  PriorityLevelConfiguration {}: queueLengthLimit {} -> {} (hand size {})",
                    level.name,
                    level.from_queue_length_limit,
                    level.to_queue_length_limit,
                    level.hand_size
                );
            }
        }
        for sts in &self.stateful_sets {
            let how = match (&sts.roll, sts.resizes.is_empty()) {
                (Some(_), _) if sts.replicas > 1 => {
                    format!("roll {} pods one at a time (partition)", sts.replicas)
                }
                (Some(_), _) => "roll its pod".to_owned(),
                (None, false) => "resize in place, no restart".to_owned(),
                (None, true) if sts.template_resources.is_some() => {
                    "the pods run the resources already".to_owned()
                }
                (None, true) => "no change".to_owned(),
            };
            let how = if sts.template_resources.is_some() {
                format!("{how}; then record them in the pod template, no restart")
            } else {
                how
            };
            let _ = writeln!(
                out,
                "{} StatefulSet {} container {}: {how}",
                sts.component, sts.stateful_set, sts.container
            );
            for c in &sts.changes {
                let _ = writeln!(
                    out,
                    "  {:<14} {:<34} {} -> {}",
                    c.replica, c.knob, c.from, c.to
                );
            }
            if let Some(roll) = &sts.roll {
                let before = &roll.previous.container.command_line;
                let after = &roll.target.container.command_line;
                for (old, new) in before
                    .command
                    .iter()
                    .chain(&before.args)
                    .zip(after.command.iter().chain(&after.args))
                {
                    if old != new {
                        let _ = writeln!(out, "  - {old}\n  + {new}");
                    }
                }
                for new in after.args.iter().skip(before.args.len()) {
                    let _ = writeln!(out, "  + {new}");
                }
            }
        }
        if !self.unchanged.is_empty() {
            let _ = writeln!(out, "unchanged: {}", self.unchanged.join(", "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statefulset(
        name: &str,
        replicas: i32,
        container: serde_json::Value,
        volumes: serde_json::Value,
    ) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "cp"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "serviceName": "",
                "template": {"spec": {"containers": [container], "volumes": volumes}},
            },
        }))
        .unwrap()
    }

    fn apiserver_container(inflight: u32) -> serde_json::Value {
        json!({
            "name": "kube-apiserver",
            "command": ["/bin/kube-apiserver"],
            "args": ["--v=1", format!("--max-requests-inflight={inflight}"), "--max-mutating-requests-inflight", "200"],
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
        })
    }

    fn pod_of(sts: &StatefulSet, ordinal: i32) -> Pod {
        let template = sts.spec.as_ref().unwrap().template.spec.clone();
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(format!(
                    "{}-{ordinal}",
                    sts.metadata.name.as_deref().unwrap()
                )),
                ..Default::default()
            },
            spec: template,
            status: None,
        }
    }

    fn live(stateful_sets: Vec<StatefulSet>) -> LiveState {
        let mut state = LiveState {
            resize_supported: true,
            ..Default::default()
        };
        for sts in stateful_sets {
            for ordinal in 0..sts.spec.as_ref().unwrap().replicas.unwrap() {
                state.pods.push(pod_of(&sts, ordinal));
            }
            state
                .stateful_sets
                .insert(sts.metadata.name.clone().unwrap(), sts);
        }
        state
    }

    fn apiserver_rec(
        name: &str,
        sts: &str,
        inflight: u32,
        cpu_cores: f64,
        queue_length: u32,
    ) -> serde_json::Value {
        let settings = json!({
            "cpu_cores": cpu_cores,
            "memory_bytes": 536_870_912.0,
            "max_requests_inflight": inflight,
            "max_mutating_requests_inflight": 200,
            "queue_length": queue_length,
        });
        json!({
            "target": {"name": name, "stateful_set": sts, "container": "kube-apiserver"},
            "current": settings,
            "recommended": settings,
            "evaluations": 0,
        })
    }

    fn client_rec(name: &str, container: &str, qps: f64, burst: u32) -> serde_json::Value {
        let settings = json!({"cpu_cores": 0.1, "memory_bytes": 134_217_728.0, "client_qps": qps, "client_burst": burst});
        json!({
            "target": {"name": name, "stateful_set": name, "container": container},
            "current": settings,
            "recommended": settings,
            "notes": [],
        })
    }

    fn recommendation(
        action: &str,
        apiservers: Vec<serde_json::Value>,
        schedulers: Vec<serde_json::Value>,
        controller_managers: Vec<serde_json::Value>,
    ) -> Recommendation {
        serde_json::from_value(json!({
            "time_unix_s": 0.0,
            "action": action,
            "hold_reasons": ["cooling down"],
            "feasible": true,
            "confidence": "medium",
            "apiservers": apiservers,
            "schedulers": schedulers,
            "controller_managers": controller_managers,
            "notes": [],
        }))
        .unwrap()
    }

    fn options() -> PlanOptions {
        PlanOptions {
            apf_levels: vec!["global-default".into()],
            ..PlanOptions::default()
        }
    }

    #[test]
    fn a_new_flag_rolls_the_template_and_keeps_every_other_arg() {
        let state = live(vec![statefulset(
            "apiserver-0",
            1,
            apiserver_container(400),
            json!([]),
        )]);
        let rec = recommendation(
            "change",
            vec![apiserver_rec("apiserver-0", "apiserver-0", 600, 0.25, 0)],
            vec![],
            vec![],
        );
        let plan = plan(&rec, &state, &options()).unwrap();
        let [sts] = plan.stateful_sets.as_slice() else {
            panic!("{plan:?}")
        };
        let roll = sts.roll.as_ref().expect("a flag change rolls");
        assert_eq!(
            roll.target.container.command_line.args,
            vec![
                "--v=1",
                "--max-requests-inflight=600",
                "--max-mutating-requests-inflight",
                "200"
            ]
        );
        assert_eq!(
            roll.previous
                .container
                .command_line
                .value("--max-requests-inflight")
                .as_deref(),
            Some("400")
        );
        assert_eq!(sts.changes.len(), 1, "{:?}", sts.changes);
        assert_eq!(sts.changes[0].path, ChangePath::Roll);
        assert!(sts.resizes.is_empty());
        assert!(
            plan.render().contains("+ --max-requests-inflight=600"),
            "{}",
            plan.render()
        );
    }

    #[test]
    fn an_applied_recommendation_plans_nothing_and_hold_plans_nothing() {
        let state = live(vec![statefulset(
            "apiserver-0",
            1,
            apiserver_container(400),
            json!([]),
        )]);
        let rec = recommendation(
            "change",
            vec![apiserver_rec("apiserver-0", "apiserver-0", 400, 0.25, 0)],
            vec![],
            vec![],
        );
        let plan = plan(&rec, &state, &options()).unwrap();
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.unchanged, vec!["apiserver-0"]);
        let hold = recommendation(
            "hold",
            vec![apiserver_rec("apiserver-0", "apiserver-0", 900, 4.0, 0)],
            vec![],
            vec![],
        );
        let plan = super::plan(&hold, &state, &options()).unwrap();
        assert!(plan.is_empty());
        assert!(plan.notes[0].contains("cooling down"), "{:?}", plan.notes);
    }

    #[test]
    fn cpu_alone_resizes_in_place_unless_the_cluster_or_the_container_cannot() {
        let rec = recommendation(
            "change",
            vec![apiserver_rec("apiserver-0", "apiserver-0", 400, 0.5, 0)],
            vec![],
            vec![],
        );
        let state = live(vec![statefulset(
            "apiserver-0",
            1,
            apiserver_container(400),
            json!([]),
        )]);
        let planned = plan(&rec, &state, &options()).unwrap();
        let sts = &planned.stateful_sets[0];
        assert!(sts.roll.is_none());
        assert_eq!(sts.resizes.len(), 1);
        assert_eq!(sts.resizes[0].pod, "apiserver-0-0");
        assert_eq!(
            sts.resizes[0].target.requests.as_ref().unwrap()["cpu"].0,
            "500m"
        );
        assert_eq!(sts.changes[0].path, ChangePath::InPlaceResize);
        // The template follows the pods, so a recreated pod keeps the new CPU.
        let recorded = sts.template_resources.as_ref().expect("template follows");
        assert_eq!(
            recorded.target.container.resources,
            Some(sts.resizes[0].target.clone())
        );
        assert_eq!(
            recorded.target.container.command_line,
            recorded.previous.container.command_line
        );

        // A pod resized earlier while the template kept the old CPU: nothing to resize, but
        // the template is still brought in line.
        let mut resized = state.clone();
        resized.pods[0].spec.as_mut().unwrap().containers[0].resources =
            Some(sts.resizes[0].target.clone());
        let planned = plan(&rec, &resized, &options()).unwrap();
        let sts = &planned.stateful_sets[0];
        assert!(sts.changes.is_empty() && sts.resizes.is_empty() && sts.roll.is_none());
        assert!(sts.template_resources.is_some(), "{}", planned.render());
        assert!(planned.render().contains("record them in the pod template"));

        // Written another way ("0.5" for "500m"), the same resources are no change at all.
        let mut recorded_state = resized.clone();
        let sts = recorded_state.stateful_sets.get_mut("apiserver-0").unwrap();
        let template = sts.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
        let mut resources = recorded.target.container.resources.clone().unwrap();
        resources.requests.as_mut().unwrap().insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("0.5".into()),
        );
        template.containers[0].resources = Some(resources);
        let planned = plan(&rec, &recorded_state, &options()).unwrap();
        assert!(planned.is_empty(), "{}", planned.render());

        let old_cluster = LiveState {
            resize_supported: false,
            ..state.clone()
        };
        let planned = plan(&rec, &old_cluster, &options()).unwrap();
        assert!(planned.stateful_sets[0].roll.is_some());
        assert!(planned.stateful_sets[0].resizes.is_empty());
        assert!(planned.stateful_sets[0].template_resources.is_none());

        let mut restart = apiserver_container(400);
        restart["resizePolicy"] =
            json!([{"resourceName": "cpu", "restartPolicy": "RestartContainer"}]);
        let state = live(vec![statefulset("apiserver-0", 1, restart, json!([]))]);
        let planned = plan(&rec, &state, &options()).unwrap();
        assert!(planned.stateful_sets[0].roll.is_some());
        assert_eq!(planned.stateful_sets[0].changes[0].path, ChangePath::Roll);
    }

    #[test]
    fn limits_equal_to_requests_follow_them() {
        let current: ResourceRequirements = serde_json::from_value(json!({
            "requests": {"cpu": "1", "memory": "1Gi"},
            "limits": {"cpu": "1", "memory": "2Gi"},
        }))
        .unwrap();
        let wanted = with_resources(Some(&current), 2.0, 536_870_912.0);
        let limits = wanted.limits.unwrap();
        assert_eq!(
            limits["cpu"].0, "2000m",
            "a Guaranteed CPU limit follows its request"
        );
        assert_eq!(limits["memory"].0, "2Gi", "a higher limit stays");
    }

    #[test]
    fn one_statefulset_of_several_replicas_must_get_one_setting() {
        let state = live(vec![statefulset(
            "apiserver",
            3,
            apiserver_container(400),
            json!([]),
        )]);
        let same: Vec<_> = (0..3)
            .map(|i| apiserver_rec(&format!("apiserver-{i}"), "apiserver", 600, 0.25, 0))
            .collect();
        let planned = plan(
            &recommendation("change", same, vec![], vec![]),
            &state,
            &options(),
        )
        .unwrap();
        assert_eq!(planned.stateful_sets[0].replicas, 3);
        assert_eq!(planned.stateful_sets[0].changes.len(), 3);
        let mut different: Vec<_> = (0..3)
            .map(|i| apiserver_rec(&format!("apiserver-{i}"), "apiserver", 600, 0.25, 0))
            .collect();
        different[1] = apiserver_rec("apiserver-1", "apiserver", 700, 0.25, 0);
        let error = plan(
            &recommendation("change", different, vec![], vec![]),
            &state,
            &options(),
        )
        .unwrap_err();
        assert!(
            matches!(error, Error::DivergentReplicas(ref s) if s == "apiserver"),
            "{error}"
        );
        let partial = vec![apiserver_rec("apiserver-0", "apiserver", 600, 0.25, 0)];
        let error = plan(
            &recommendation("change", partial, vec![], vec![]),
            &state,
            &options(),
        )
        .unwrap_err();
        assert!(
            matches!(
                error,
                Error::PartialStatefulSet {
                    covered: 1,
                    replicas: 3,
                    ..
                }
            ),
            "{error}"
        );
        let unknown = vec![apiserver_rec("apiserver-x", "apiserver", 600, 0.25, 0)];
        let error = plan(
            &recommendation("change", unknown, vec![], vec![]),
            &state,
            &options(),
        )
        .unwrap_err();
        assert!(matches!(error, Error::NoReplica { .. }), "{error}");
    }

    #[test]
    fn a_scheduler_config_file_in_a_configmap_is_edited_and_rolled() {
        let container = json!({
            "name": "kube-scheduler",
            "command": ["kube-scheduler", "--config=/etc/scheduler/config.yaml", "--v=2"],
            "volumeMounts": [{"name": "config", "mountPath": "/etc/scheduler"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        });
        let volumes = json!([{"name": "config", "configMap": {"name": "scheduler-config"}}]);
        let mut state = live(vec![statefulset(
            "scheduler-0",
            1,
            container.clone(),
            volumes,
        )]);
        let config_map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "scheduler-config"},
            "data": {"config.yaml": "kind: KubeSchedulerConfiguration\nclientConnection:\n  qps: 50\n  burst: 100\n"},
        }))
        .unwrap();
        state
            .config_maps
            .insert("scheduler-config".into(), config_map);
        let rec = recommendation(
            "change",
            vec![],
            vec![client_rec("scheduler-0", "kube-scheduler", 80.0, 160)],
            vec![],
        );
        let planned = plan(&rec, &state, &options()).unwrap();
        let roll = planned.stateful_sets[0].roll.as_ref().expect("a roll");
        let file = roll.target.config_file.as_ref().unwrap();
        assert_eq!(
            (file.config_map.as_str(), file.key.as_str()),
            ("scheduler-config", "config.yaml")
        );
        assert!(file.content.contains("qps: 80"), "{}", file.content);
        assert_eq!(
            roll.target.container.command_line, roll.previous.container.command_line,
            "flags are ignored with --config"
        );
        assert!(roll.target.config_hash.is_some() && roll.previous.config_hash.is_none());

        let on_host = json!([{"name": "config", "hostPath": {"path": "/etc/scheduler"}}]);
        let state = live(vec![statefulset("scheduler-0", 1, container, on_host)]);
        let error = plan(&rec, &state, &options()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot change its client QPS/burst"),
            "{error}"
        );
    }

    #[test]
    fn components_follow_the_configured_order() {
        let qps = |name: &str, container: &str| {
            let c = json!({
                "name": container,
                "command": ["/bin/x"],
                "args": ["--kube-api-qps=20", "--kube-api-burst=30"],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            });
            statefulset(name, 1, c, json!([]))
        };
        let state = live(vec![
            qps("scheduler-0", "kube-scheduler"),
            qps("controller-manager-0", "kube-controller-manager"),
            statefulset("apiserver-0", 1, apiserver_container(400), json!([])),
        ]);
        let rec = recommendation(
            "change",
            vec![apiserver_rec("apiserver-0", "apiserver-0", 600, 0.25, 0)],
            vec![client_rec("scheduler-0", "kube-scheduler", 40.0, 80)],
            vec![client_rec(
                "controller-manager-0",
                "kube-controller-manager",
                40.0,
                80,
            )],
        );
        let order = |planned: Plan| {
            planned
                .stateful_sets
                .iter()
                .map(|s| s.stateful_set.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            order(plan(&rec, &state, &options()).unwrap()),
            ["apiserver-0", "controller-manager-0", "scheduler-0"]
        );
        let reversed = PlanOptions {
            order: vec![
                Component::Scheduler,
                Component::ControllerManager,
                Component::Apiserver,
            ],
            ..options()
        };
        assert_eq!(
            order(plan(&rec, &state, &reversed).unwrap()),
            ["scheduler-0", "controller-manager-0", "apiserver-0"]
        );
    }

    #[test]
    fn queue_length_is_spread_over_a_flows_hand_of_queues() {
        let mut state = live(vec![statefulset(
            "apiserver-0",
            1,
            apiserver_container(400),
            json!([]),
        )]);
        let level: PriorityLevelConfiguration = serde_json::from_value(json!({
            "metadata": {"name": "global-default"},
            "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 20, "limitResponse": {"type": "Queue", "queuing": {"queues": 128, "queueLengthLimit": 50, "handSize": 6}}}},
        }))
        .unwrap();
        state.priority_levels = Some(vec![level]);
        let with_room = |room| {
            recommendation(
                "change",
                vec![apiserver_rec("apiserver-0", "apiserver-0", 400, 0.25, room)],
                vec![],
                vec![],
            )
        };
        // 6 × 50: the level as it is.
        assert!(
            plan(&with_room(300), &state, &options())
                .unwrap()
                .is_empty()
        );
        // 175 / 6 rounds up: never less room than recommended.
        let planned = plan(&with_room(175), &state, &options()).unwrap();
        assert!(planned.stateful_sets.is_empty());
        assert_eq!(
            planned.apf,
            vec![LevelChange {
                name: "global-default".into(),
                hand_size: 6,
                from_queue_length_limit: 50,
                to_queue_length_limit: 30
            }]
        );
        let no_tested = LiveState {
            priority_levels: None,
            ..state
        };
        let planned = plan(&with_room(175), &no_tested, &options()).unwrap();
        assert!(
            planned.apf.is_empty()
                && planned
                    .notes
                    .iter()
                    .any(|n| n.contains("no client for the tested cluster"))
        );
    }
}
