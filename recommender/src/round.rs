//! One recommendation round: forecast → calibrate → search → safety, from a snapshot, the
//! policy and the settings running now. A pure function of its inputs.

use std::collections::BTreeMap;

use queue_model::MAX_REQUEST_RATE;
use queue_model::apiserver::{ApiserverLoad, ApiserverModel};
use queue_model::mmc::Mmc;
use queue_model::scheduler::{self, SchedulerLoad, SchedulerSetting};

use crate::calibrate::{self, ApiserverCalibration};
use crate::error::Result;
use crate::forecast::{Forecast, forecast};
use crate::memory::MemorySizing;
use crate::policy::{
    ClientBounds, ConfidenceLevel, KnobRange, LoadShare, NodeAllocatable, Policy, ReplicaPlacement,
    StepLimits,
};
use crate::recommendation::{
    ApiserverPrediction, ApiserverRecommendation, ClientPrediction, ClientRecommendation,
    Recommendation, RunnerUp, Target,
};
use crate::safety::{Action, Situation, decide, step_box};
use crate::search::{self, ApiserverProblem, Candidate, Constraint, Violation};
use crate::setting::{ApiserverSettings, ClientSettings, CurrentSettings, knob_key};
use crate::snapshot::{
    ApiserverSample, ClientSample, Component, LoadSnapshot, ProcessSample, ReplicaHistory, Severity,
};

/// Produces the round's recommendation. Errors only on inputs that contradict each other
/// (current settings missing for a replica); data problems make it hold, with the reason.
pub fn recommend(
    snapshot: &LoadSnapshot,
    policy: &Policy,
    current: &CurrentSettings,
) -> Result<Recommendation> {
    let cur = CurrentOf::new(policy, current, snapshot.time_unix_s)?;
    let mut missing = Vec::new();
    let apiserver_samples: Vec<&ApiserverSample> = policy
        .apiservers
        .iter()
        .filter_map(|p| {
            let s = snapshot
                .apiservers
                .iter()
                .find(|s| s.replica.name == p.name);
            if s.is_none() {
                missing.push(format!("apiserver `{}` is not in the snapshot", p.name));
            }
            s
        })
        .collect();
    let scheduler = client_samples(
        &policy.schedulers,
        snapshot
            .schedulers
            .iter()
            .map(|s| (s.replica.name.as_str(), &s.process, &s.client)),
        "scheduler",
        &mut missing,
    );
    let controller_manager = client_samples(
        &policy.controller_managers,
        snapshot
            .controller_managers
            .iter()
            .map(|s| (s.replica.name.as_str(), &s.process, &s.client)),
        "controller-manager",
        &mut missing,
    );
    if !missing.is_empty() {
        return Ok(hold_only(snapshot, policy, &cur, missing));
    }

    // Forecast and calibrate every apiserver on its own series.
    let history_of = |name: &str| -> Option<&ReplicaHistory> {
        snapshot
            .history
            .as_ref()?
            .replicas
            .iter()
            .find(|h| h.replica.component == Component::Apiserver && h.replica.name == name)
    };
    let (step_s, window_steps) = match &snapshot.history {
        Some(h) if h.step_s > 0.0 => (
            h.step_s,
            ((snapshot.window_s / h.step_s).round() as usize).max(1),
        ),
        _ => (snapshot.window_s.max(1.0), 1),
    };
    let mut per_replica = Vec::new();
    let mut no_load = Vec::new();
    for (placement, sample) in policy.apiservers.iter().zip(&apiserver_samples) {
        let history = history_of(&placement.name);
        let series = |from_history: fn(&ReplicaHistory) -> &Vec<Option<f64>>,
                      latest: Option<f64>| {
            match history {
                Some(h) if h.read_only_rate.iter().flatten().next().is_some() => {
                    forecast(from_history(h), step_s, window_steps, &policy.forecast)
                }
                _ => forecast(&[latest], step_s, 1, &policy.forecast),
            }
        };
        let ro = series(|h| &h.read_only_rate, sample.read_only.arrival_rate);
        let mu = series(|h| &h.mutating_rate, sample.mutating.arrival_rate);
        if ro.samples == 0 || mu.samples == 0 {
            no_load.push(format!(
                "no request rates for apiserver `{}`",
                placement.name
            ));
        }
        for (class, f) in [("readOnly", &ro), ("mutating", &mu)] {
            if f.plan > MAX_REQUEST_RATE {
                no_load.push(format!(
                    "apiserver `{}`: the {class} forecast of {:.0} requests/s is above {MAX_REQUEST_RATE}, more than any apiserver serves",
                    placement.name, f.plan
                ));
            }
        }
        let calibration = calibrate::calibrate_apiserver(
            history,
            cur.apiserver(&placement.name),
            window_steps,
            &policy.calibration,
        );
        per_replica.push((ro, mu, calibration));
    }
    if !no_load.is_empty() {
        return Ok(hold_only(snapshot, policy, &cur, no_load));
    }

    let mut notes = Vec::new();
    let held = cur.held(policy);
    if !held.is_empty() {
        notes.push(format!(
            "not lowered this round, raised less than the {:.0} s scale-down delay ago: {}",
            policy.safety.scale_down_delay_s,
            held.join(", ")
        ));
    }
    let mut sched = scheduler
        .as_ref()
        .map(|s| plan_scheduler(s, policy, &cur, snapshot, &mut notes));
    let mut cm = controller_manager
        .as_ref()
        .map(|s| plan_controller_manager(s, policy, &cur));
    let client_qps = |sched: &Option<ClientPlan>, cm: &Option<ClientPlan>, current: bool| {
        [sched, cm]
            .iter()
            .filter_map(|p| p.as_ref())
            .map(|p| {
                if current {
                    p.current.client_qps
                } else {
                    p.recommended.client_qps
                }
            })
            .sum::<f64>()
    };
    // What the clients need for their SLOs: the apiservers must be able to serve it.
    let (qps_needed, qps_current) = (
        client_qps(&sched, &cm, false),
        client_qps(&sched, &cm, true),
    );

    // Co-located replicas share their node: the clients' resources come off it first.
    let mut budgets = NodeBudgets::default();
    for (plan, placements) in [
        (&sched, &policy.schedulers),
        (&cm, &policy.controller_managers),
    ] {
        let Some(plan) = plan else { continue };
        for p in placements {
            let (cpu, memory) = plan.resources(policy, p, &cur);
            budgets.give(p, cpu, memory);
        }
    }

    // Apiservers: split the planned load, size each replica.
    let shares = load_shares(policy, &per_replica);
    let histories: Vec<Option<&ReplicaHistory>> = policy
        .apiservers
        .iter()
        .map(|p| history_of(&p.name))
        .collect();
    let plan_total = |series: fn(&ReplicaHistory) -> &Vec<Option<f64>>, each: f64| {
        total_series(&histories, series).map_or(each, |total| {
            forecast(&total, step_s, window_steps, &policy.forecast).plan
        })
    };
    let total_ro = plan_total(
        |h| &h.read_only_rate,
        per_replica.iter().map(|r| r.0.plan).sum(),
    );
    let total_mu = plan_total(
        |h| &h.mutating_rate,
        per_replica.iter().map(|r| r.1.plan).sum(),
    );
    let mut apiservers = Vec::new();
    let mut outcomes = Vec::new();
    let mut capacity = (0.0, 0.0);
    let mut violation = (0.0, 0.0);
    // Mutating requests per second the recommended apiservers could take beyond their plan.
    let mut room = 0.0;
    for (i, (placement, sample)) in policy.apiservers.iter().zip(&apiserver_samples).enumerate() {
        let (ro, mu, calibration) = &per_replica[i];
        let (ro_rps, mu_rps) = match policy.load_share {
            LoadShare::NodeCpu => (shares[i] * total_ro, shares[i] * total_mu),
            LoadShare::Observed => (ro.plan, mu.plan),
        };
        let current = *cur.apiserver(&placement.name);
        let mut problem = apiserver_problem(
            policy,
            |knob| cur.steps(policy, &placement.name, knob),
            budgets.left(placement),
            sample,
            history_of(&placement.name),
            calibration,
            &current,
            (ro_rps, mu_rps),
            shares[i] * qps_needed,
        );
        notes.extend(contention_note(&placement.name, &current, calibration));
        let outcome = problem.solve()?;
        budgets.give(
            placement,
            outcome.best.settings.cpu_cores,
            outcome.best.settings.memory_bytes,
        );
        if !outcome.best.feasible() {
            notes.push(overload_note(&placement.name, &problem, &outcome.best));
        }
        let recommended = describe(&problem, &outcome.best);
        problem.required_mutating_capacity = shares[i] * qps_current;
        let now = problem.check(&current)?;
        let predicted_current = describe(&problem, &now);
        capacity.0 += now.mutating_capacity_rps;
        capacity.1 += outcome.best.mutating_capacity_rps;
        room += mutating_room(&problem, &outcome.best, mu_rps);
        violation.0 += now
            .violations
            .iter()
            .filter(|v| match v.constraint {
                Constraint::CpuHeadroom => v.amount >= HEADROOM_HYSTERESIS,
                Constraint::BurstRoom => v.amount >= BURST_ROOM_HYSTERESIS,
                _ => true,
            })
            .map(|v| v.amount)
            .sum::<f64>();
        violation.1 += outcome.best.total_violation();
        apiservers.push(ApiserverRecommendation {
            target: target(placement),
            current,
            recommended: outcome.best.settings,
            predicted_current: Some(predicted_current),
            predicted_recommended: Some(recommended),
            binding: Some(outcome.binding),
            sized_by: Some(outcome.sized_by),
            planned_read_only_rps: Some(ro_rps),
            planned_mutating_rps: Some(mu_rps),
            forecast_read_only: Some(ro.clone()),
            forecast_mutating: Some(mu.clone()),
            calibration: Some(calibration.clone()),
            evaluations: outcome.evaluations,
        });
        outcomes.push(outcome);
    }

    // Client QPS costs nothing until it is used, and a pod storm needs far more than a quiet
    // hour: the clients get what they need plus the room the apiservers have, split in
    // proportion to their needs. Only that room (the apiservers' protection) lowers a QPS.
    for plan in [&mut sched, &mut cm].into_iter().flatten() {
        let need = plan.recommended.client_qps;
        let share = if qps_needed > 0.0 {
            need / qps_needed
        } else {
            0.5
        };
        plan.allow_bursts(need + share * room, policy, &cur);
    }
    let qps_recommended = client_qps(&sched, &cm, false);

    let mut schedulers = Vec::new();
    let mut controller_managers = Vec::new();
    if let Some(p) = &sched {
        let load = p.scheduler_load.expect("a scheduler plan has its load");
        let predict = |s: &ClientSettings, cap: f64| scheduler_prediction(&load, s, cap, policy);
        let (now, next) = (
            predict(&p.current, capacity.0),
            predict(&p.recommended, capacity.1),
        );
        violation.0 += total(&now.violations);
        violation.1 += total(&next.violations);
        schedulers = p.replicas(policy, &policy.schedulers, &cur, now, next);
    }
    if let Some(p) = &cm {
        let predict = |s: &ClientSettings| controller_manager_prediction(p.demand, s, policy);
        let (now, next) = (predict(&p.current), predict(&p.recommended));
        violation.0 += total(&now.violations);
        violation.1 += total(&next.violations);
        controller_managers = p.replicas(policy, &policy.controller_managers, &cur, now, next);
    }

    let cost_of = |pick: fn(&ApiserverRecommendation) -> &ApiserverSettings,
                   pick_client: fn(&ClientRecommendation) -> &ClientSettings| {
        apiservers
            .iter()
            .map(|a| policy.cost.cost(pick(a).cpu_cores, pick(a).memory_bytes))
            .chain(schedulers.iter().chain(&controller_managers).map(|c| {
                policy
                    .cost
                    .cost(pick_client(c).cpu_cores, pick_client(c).memory_bytes)
            }))
            .sum::<f64>()
    };
    let current_cost = cost_of(|a| &a.current, |c| &c.current);
    let recommended_cost = cost_of(|a| &a.recommended, |c| &c.recommended);

    let runner_up = apiservers
        .iter()
        .zip(&outcomes)
        .filter_map(|(a, o)| {
            let r = o.runner_up.as_ref()?;
            Some(RunnerUp {
                replica: a.target.name.clone(),
                settings: r.settings,
                cost: recommended_cost - o.best.cost + r.cost,
            })
        })
        .min_by(|a, b| a.cost.total_cmp(&b.cost));
    let binding_constraint = binding_summary(&apiservers, &schedulers, &controller_managers);

    let mut confidence = ConfidenceLevel::High;
    for (ro, mu, c) in &per_replica {
        confidence = confidence.min(c.confidence);
        if ro.samples < policy.calibration.min_samples
            || mu.samples < policy.calibration.min_samples
        {
            // A forecast from a handful of points has no trustworthy interval.
            confidence = confidence.min(ConfidenceLevel::Medium);
        }
    }
    let changes = apiservers.iter().any(|a| a.current != a.recommended)
        || schedulers
            .iter()
            .chain(&controller_managers)
            .any(|c| c.current != c.recommended);
    let lowers = apiservers
        .iter()
        .any(|a| a.recommended.lowers_any(&a.current))
        || schedulers
            .iter()
            .chain(&controller_managers)
            .any(|c| c.recommended.lowers_any(&c.current));
    let situation = Situation {
        blocking: blocking_findings(snapshot),
        confidence,
        time_unix_s: snapshot.time_unix_s,
        window_s: snapshot.window_s,
        last_change_unix_s: current.last_change_unix_s,
        current_violation: violation.0,
        recommended_violation: violation.1,
        current_cost,
        recommended_cost,
        changes,
        lowers,
    };
    let (action, hold_reasons) = decide(&situation, policy);
    if qps_recommended > capacity.1 {
        notes.push(format!(
            "client QPS {qps_recommended:.0} exceeds the apiservers' mutating capacity {:.0}/s: the apiservers cannot take a burst at the clients' full rate",
            capacity.1
        ));
    }
    Ok(Recommendation {
        time_unix_s: snapshot.time_unix_s,
        action,
        hold_reasons,
        feasible: violation.1 == 0.0,
        confidence,
        binding_constraint,
        current_cost: Some(current_cost),
        recommended_cost: Some(recommended_cost),
        runner_up,
        client_qps_total: Some(qps_recommended),
        apiserver_mutating_capacity_rps: Some(capacity.1),
        apiservers,
        schedulers,
        controller_managers,
        notes,
    })
}

/// The current settings, checked to cover every replica of the policy with values it can
/// have, at the round's time.
struct CurrentOf<'a> {
    settings: &'a CurrentSettings,
    now_unix_s: f64,
}

impl<'a> CurrentOf<'a> {
    fn new(policy: &Policy, current: &'a CurrentSettings, now_unix_s: f64) -> Result<Self> {
        current.validate(policy)?;
        Ok(Self {
            settings: current,
            now_unix_s,
        })
    }

    fn apiserver(&self, name: &str) -> &'a ApiserverSettings {
        &self.settings.apiservers[name]
    }

    fn client(&self, component: Component, name: &str) -> &'a ClientSettings {
        match component {
            Component::Scheduler => &self.settings.schedulers[name],
            _ => &self.settings.controller_managers[name],
        }
    }

    /// Seconds since arak raised this knob of this replica, while that is less than the
    /// scale-down delay.
    fn raised_ago(&self, policy: &Policy, replica: &str, knob: &str) -> Option<f64> {
        let at = self.settings.raised_unix_s.get(&knob_key(replica, knob))?;
        let ago = self.now_unix_s - at;
        (ago < policy.safety.scale_down_delay_s).then_some(ago.max(0.0))
    }

    /// How far this round may move one knob of one replica. Up fast, down slow, as the
    /// HPA's scale-down stabilisation, whatever the SLOs: a knob arak raised less than the
    /// scale-down delay ago does not go down. Past saturation the calibrated CPU per
    /// request, the burst floor and the apiservers' spare capacity wander from window to
    /// window, and each round acted on the latest: at 1.3 x one apiserver's capacity arak
    /// raised its inflight limits 400/200 -> 610/400 and put them back a minute later, and
    /// moved the controller-manager's QPS 120 -> 240 -> 170 -> 130 within three minutes,
    /// restarting a component each time. Holding every knob instead (not only the raised
    /// ones) kept the APF queue room at its first value and the apiserver queueing for
    /// seconds.
    fn steps(&self, policy: &Policy, replica: &str, knob: &str) -> StepLimits {
        match self.raised_ago(policy, replica, knob) {
            Some(_) => StepLimits {
                max_decrease_factor: 1.0,
                ..policy.step_limits
            },
            None => policy.step_limits,
        }
    }

    /// [`Self::steps`] for a knob that one value serves for every replica of a component
    /// (client QPS and burst): held down if it was raised on any of them.
    fn component_steps(&self, policy: &Policy, component: Component, knob: &str) -> StepLimits {
        let placements = match component {
            Component::Scheduler => &policy.schedulers,
            _ => &policy.controller_managers,
        };
        let raised = placements
            .iter()
            .find(|p| self.raised_ago(policy, &p.name, knob).is_some());
        match raised {
            Some(p) => self.steps(policy, &p.name, knob),
            None => policy.step_limits,
        }
    }

    /// The knobs held up by [`Self::steps`] this round, for the recommendation's notes.
    fn held(&self, policy: &Policy) -> Vec<String> {
        self.settings
            .raised_unix_s
            .keys()
            .filter_map(|key| {
                let (replica, knob) = key.split_once('/')?;
                let ago = self.raised_ago(policy, replica, knob)?;
                Some(format!("{key} (raised {ago:.0} s ago)"))
            })
            .collect()
    }
}

/// One client replica's view in the snapshot.
struct ClientView<'a> {
    name: &'a str,
    process: &'a ProcessSample,
    client: &'a ClientSample,
}

fn client_samples<'a>(
    placements: &[ReplicaPlacement],
    samples: impl Iterator<Item = (&'a str, &'a ProcessSample, &'a ClientSample)> + Clone,
    what: &str,
    missing: &mut Vec<String>,
) -> Option<Vec<ClientView<'a>>> {
    if placements.is_empty() {
        return None;
    }
    let mut views = Vec::new();
    for p in placements {
        match samples.clone().find(|s| s.0 == p.name) {
            Some((name, process, client)) => views.push(ClientView {
                name,
                process,
                client,
            }),
            None => missing.push(format!("{what} `{}` is not in the snapshot", p.name)),
        }
    }
    Some(views)
}

/// A client component's plan: one QPS and burst for all its replicas, since any of them
/// may become the leader; CPU and memory per replica within its node.
struct ClientPlan {
    component: Component,
    current: ClientSettings,
    recommended: ClientSettings,
    /// CPU the leader needs at the planned demand, cores (before headroom).
    cpu_needed: Option<f64>,
    demand: f64,
    scheduler_load: Option<SchedulerLoad>,
    /// Peak resident memory of each replica, by name.
    peaks: Vec<(String, Option<f64>)>,
    notes: Vec<String>,
}

impl ClientPlan {
    fn replicas(
        &self,
        policy: &Policy,
        placements: &[ReplicaPlacement],
        cur: &CurrentOf,
        now: ClientPrediction,
        next: ClientPrediction,
    ) -> Vec<ClientRecommendation> {
        placements
            .iter()
            .map(|p| {
                let current = *cur.client(self.component, &p.name);
                let (cpu_cores, memory_bytes) = self.resources(policy, p, cur);
                ClientRecommendation {
                    target: target(p),
                    current,
                    recommended: ClientSettings {
                        cpu_cores,
                        memory_bytes,
                        ..self.recommended
                    },
                    predicted_current: Some(now.clone()),
                    predicted_recommended: Some(next.clone()),
                    notes: self.notes.clone(),
                }
            })
            .collect()
    }
}

impl ClientPlan {
    /// The CPU and memory one replica gets: what the leader needs with headroom, and the
    /// peak memory with its headroom, within a step of what runs and within its node.
    fn resources(&self, policy: &Policy, p: &ReplicaPlacement, cur: &CurrentOf) -> (f64, f64) {
        let current = cur.client(self.component, &p.name);
        let bounds = client_bounds(policy, self.component);
        let cpu_grid = step_box(
            current.cpu_cores,
            &within_node(&bounds.cpu_cores, p.node_allocatable.cpu_cores),
            &cur.steps(policy, &p.name, "cpu_cores"),
        );
        let cpu_cores = match self.cpu_needed {
            Some(need) => cpu_grid
                .ceil(need / policy.max_cpu_utilization)
                .unwrap_or(cpu_grid.max),
            None => cpu_grid.ceil(current.cpu_cores).unwrap_or(cpu_grid.max),
        };
        let peak = self
            .peaks
            .iter()
            .find(|(name, _)| *name == p.name)
            .and_then(|(_, peak)| *peak);
        let memory = MemorySizing {
            peak_bytes: peak,
            observed_inflight_max: 0.0,
            current_bytes: current.memory_bytes,
            grid: step_box(
                current.memory_bytes,
                &within_node(&bounds.memory_bytes, p.node_allocatable.memory_bytes),
                &cur.steps(policy, &p.name, "memory_bytes"),
            ),
            policy: policy.memory,
        };
        (cpu_cores, memory.bytes(0.0).0)
    }

    /// Raises the recommended QPS (never below what the SLO needs) towards `allowed`, the
    /// most the apiservers can take, within a step of the current value; lowers it only
    /// when the current QPS is above `allowed`. A current QPS between half of that and all
    /// of it stays, so the QPS does not follow every swing of the load.
    fn allow_bursts(&mut self, allowed: f64, policy: &Policy, cur: &CurrentOf) {
        let b = client_bounds(policy, self.component);
        let grid = step_box(
            self.current.client_qps,
            &b.client_qps,
            &cur.component_steps(policy, self.component, "client_qps"),
        );
        let need = self.recommended.client_qps;
        let target = grid.floor(allowed).unwrap_or(grid.min).max(need);
        let current = self.current.client_qps;
        let qps = if (need..=target).contains(&current) && current >= target / 2.0 {
            current
        } else {
            target
        };
        self.recommended.client_qps = qps;
        self.recommended.client_burst = burst_for(policy, self.component, cur, &self.current, qps);
    }
}

/// Mutating requests per second a replica could take beyond its planned load: what its
/// free CPU and its free mutating slots allow, whichever is less.
fn mutating_room(problem: &ApiserverProblem, best: &Candidate, planned_rps: f64) -> f64 {
    let free_cores = best.settings.cpu_cores * (1.0 - best.cpu_utilization);
    let by_cpu = free_cores / problem.load.mutating.cpu_s;
    let by_slots = best.mutating_capacity_rps - planned_rps;
    by_cpu.min(by_slots).max(0.0)
}

fn client_bounds(policy: &Policy, component: Component) -> &ClientBounds {
    match component {
        Component::Scheduler => &policy.bounds.scheduler,
        _ => &policy.bounds.controller_manager,
    }
}

/// The bounds cut to what the node has left; the bound's minimum alone when even that is
/// more (validation makes every node's minimums fit together).
fn within_node(bounds: &KnobRange, allocatable: f64) -> KnobRange {
    bounds.within(bounds.min, allocatable).unwrap_or(KnobRange {
        max: bounds.min,
        ..*bounds
    })
}

/// What each named node has left, as the round sizes the replicas on it one by one:
/// the scheduler's and controller-manager's first (their needs are small and known), then
/// each apiserver within the rest.
#[derive(Default)]
struct NodeBudgets {
    /// Cores and bytes given so far, by node.
    given: BTreeMap<String, (f64, f64)>,
}

impl NodeBudgets {
    fn left(&self, p: &ReplicaPlacement) -> NodeAllocatable {
        let (cpu, memory) = p
            .node
            .as_ref()
            .and_then(|n| self.given.get(n))
            .copied()
            .unwrap_or_default();
        NodeAllocatable {
            cpu_cores: p.node_allocatable.cpu_cores - cpu,
            memory_bytes: p.node_allocatable.memory_bytes - memory,
        }
    }

    fn give(&mut self, p: &ReplicaPlacement, cpu_cores: f64, memory_bytes: f64) {
        if let Some(n) = &p.node {
            let given = self.given.entry(n.clone()).or_default();
            given.0 += cpu_cores;
            given.1 += memory_bytes;
        }
    }
}

/// QPS and burst on their grids, within a step of the leader's current values.
fn client_knobs(
    policy: &Policy,
    component: Component,
    cur: &CurrentOf,
    current: &ClientSettings,
    least_qps: impl Fn(&KnobRange) -> (f64, bool),
    notes: &mut Vec<String>,
) -> ClientSettings {
    let b = client_bounds(policy, component);
    let qps_grid = step_box(
        current.client_qps,
        &b.client_qps,
        &cur.component_steps(policy, component, "client_qps"),
    );
    let (client_qps, ok) = least_qps(&qps_grid);
    if !ok {
        notes.push(format!(
            "no QPS up to {} meets the SLO this round",
            qps_grid.max
        ));
    }
    ClientSettings {
        client_qps,
        client_burst: burst_for(policy, component, cur, current, client_qps),
        ..*current
    }
}

/// The burst that goes with `client_qps`, on its grid within a step of the current one.
fn burst_for(
    policy: &Policy,
    component: Component,
    cur: &CurrentOf,
    current: &ClientSettings,
    client_qps: f64,
) -> u32 {
    let b = client_bounds(policy, component);
    let burst_grid = step_box(
        f64::from(current.client_burst),
        &b.client_burst,
        &cur.component_steps(policy, component, "client_burst"),
    );
    burst_grid
        .ceil(client_qps * b.burst_per_qps)
        .unwrap_or(burst_grid.max) as u32
}

/// How much more CPU the leader needs when its demand rises above what it did.
fn cpu_needed(
    process: &ProcessSample,
    demand: f64,
    done: Option<f64>,
    policy: &Policy,
) -> Option<f64> {
    let used = process.cpu_cores.filter(|c| c.is_finite() && *c >= 0.0)?;
    let growth = match done {
        Some(d) if d > 0.0 => (demand / d).clamp(1.0, policy.step_limits.max_increase_factor),
        _ => 1.0,
    };
    Some(used * growth)
}

fn peaks(views: &[ClientView]) -> Vec<(String, Option<f64>)> {
    views
        .iter()
        .map(|v| {
            let p = &v.process;
            let peak = p
                .peak_resident_memory_bytes
                .into_iter()
                .chain(p.resident_memory_bytes)
                .filter(|v| v.is_finite())
                .reduce(f64::max);
            (v.name.to_string(), peak)
        })
        .collect()
}

fn plan_scheduler(
    views: &[ClientView],
    policy: &Policy,
    cur: &CurrentOf,
    snapshot: &LoadSnapshot,
    round_notes: &mut Vec<String>,
) -> ClientPlan {
    // The leader is the replica with the most to do; the others stand by.
    let calibrated: Vec<_> = views
        .iter()
        .map(|v| {
            let sample = snapshot
                .schedulers
                .iter()
                .find(|s| s.replica.name == v.name)
                .expect("views come from the snapshot");
            (
                v,
                sample,
                calibrate::calibrate_scheduler(sample, &policy.calibration, &policy.slo),
            )
        })
        .collect();
    let (leader, sample, c) = calibrated
        .iter()
        .max_by(|a, b| {
            a.2.load
                .pod_arrival_rate
                .total_cmp(&b.2.load.pod_arrival_rate)
        })
        .expect("at least one scheduler");
    let current = *cur.client(Component::Scheduler, leader.name);
    let mut notes = c.notes.clone();
    if c.throttled {
        round_notes.push(format!(
            "scheduler `{}` waits on its client token bucket",
            leader.name
        ));
    }
    let recommended = client_knobs(
        policy,
        Component::Scheduler,
        cur,
        &current,
        |grid| search::scheduler_qps(&c.load, grid, &policy.slo),
        &mut notes,
    );
    ClientPlan {
        component: Component::Scheduler,
        current,
        recommended,
        cpu_needed: cpu_needed(
            leader.process,
            c.load.pod_arrival_rate,
            sample.binding_rate,
            policy,
        ),
        demand: c.load.pod_arrival_rate,
        scheduler_load: Some(c.load),
        peaks: peaks(views),
        notes,
    }
}

fn plan_controller_manager(views: &[ClientView], policy: &Policy, cur: &CurrentOf) -> ClientPlan {
    let demands: Vec<f64> = views
        .iter()
        .map(|v| {
            let qps = cur.client(Component::ControllerManager, v.name).client_qps;
            calibrate::client_demand(v.client, qps, &policy.slo)
        })
        .collect();
    let leader = (0..views.len())
        .max_by(|a, b| demands[*a].total_cmp(&demands[*b]))
        .expect("at least one controller-manager");
    let view = &views[leader];
    let current = *cur.client(Component::ControllerManager, view.name);
    let mut notes = Vec::new();
    let recommended = client_knobs(
        policy,
        Component::ControllerManager,
        cur,
        &current,
        |grid| search::controller_manager_qps(demands[leader], grid, &policy.slo),
        &mut notes,
    );
    ClientPlan {
        component: Component::ControllerManager,
        current,
        recommended,
        cpu_needed: cpu_needed(
            view.process,
            demands[leader],
            view.client.request_rate,
            policy,
        ),
        demand: demands[leader],
        scheduler_load: None,
        peaks: peaks(views),
        notes,
    }
}

fn scheduler_prediction(
    load: &SchedulerLoad,
    s: &ClientSettings,
    apiserver_capacity: f64,
    policy: &Policy,
) -> ClientPrediction {
    let slo = policy.slo.pod_startup_p99_s;
    let setting = SchedulerSetting {
        client_qps: s.client_qps,
        client_burst: s.client_burst,
        apiserver_capacity: apiserver_capacity.max(f64::MIN_POSITIVE),
    };
    let p99 = scheduler::predict(load, &setting)
        .ok()
        .map(|p| p.p99_pending_s);
    ClientPrediction {
        demand: load.pod_arrival_rate,
        p99_s: p99,
        slo_s: slo,
        bottleneck: scheduler::capacity(load, &setting).ok().map(|c| c.1),
        violations: late(Constraint::PodStartupP99, p99, slo),
    }
}

fn controller_manager_prediction(
    demand: f64,
    s: &ClientSettings,
    policy: &Policy,
) -> ClientPrediction {
    let slo = policy.slo.client_throttle_p99_s;
    let p99 = Mmc::new(demand, s.client_qps, 1)
        .and_then(|q| q.wait_percentile(0.99))
        .ok();
    ClientPrediction {
        demand,
        p99_s: p99,
        slo_s: slo,
        bottleneck: None,
        violations: late(Constraint::ClientThrottleP99, p99, slo),
    }
}

/// A P99 over its SLO (or unbounded, counted as ten times over) as a violation.
fn late(constraint: Constraint, p99: Option<f64>, slo: f64) -> Vec<Violation> {
    let amount = p99.map_or(10.0, |p| p / slo - 1.0);
    if amount > 0.0 {
        vec![Violation { constraint, amount }]
    } else {
        vec![]
    }
}

fn total(v: &[Violation]) -> f64 {
    v.iter().map(|v| v.amount).sum()
}

/// The replicas' series summed step by step, when every replica has one of equal length.
/// The balancer's total is what the plan's quantile is of: summing each replica's upper
/// quantile would plan for all of them peaking at once.
fn total_series(
    histories: &[Option<&ReplicaHistory>],
    series: fn(&ReplicaHistory) -> &Vec<Option<f64>>,
) -> Option<Vec<Option<f64>>> {
    let all: Vec<&Vec<Option<f64>>> = histories
        .iter()
        .map(|h| h.map(series))
        .collect::<Option<_>>()?;
    let n = all.first()?.len();
    if n == 0 || all.iter().any(|s| s.len() != n) {
        return None;
    }
    Some(
        (0..n)
            .map(|t| all.iter().map(|s| s[t]).sum::<Option<f64>>())
            .collect(),
    )
}

/// Says that no setting within bounds meets the SLOs, by how much, and what it would take.
fn overload_note(name: &str, problem: &ApiserverProblem, best: &Candidate) -> String {
    let worst = best.worst().map_or("nothing".to_string(), |v| {
        format!("{:?} by {:.2}", v.constraint, v.amount)
    });
    let allowed = match problem.available_cpu_cores {
        Some(a) if a < problem.cores.max => format!(
            "the node gives it about {a:.2} whatever the quota (the bounds, node and step limits allow {})",
            problem.cores.max
        ),
        _ => format!(
            "the bounds, node and step limits allow {}",
            problem.cores.max
        ),
    };
    format!(
        "apiserver `{name}`: no setting within the bounds meets every SLO; the planned load needs {:.2} cores at {:.0}% CPU, {allowed}; with limits at the CPU's knee it rejects what the cores cannot serve and misses {worst}",
        problem.cores_floor(),
        100.0 * problem.max_cpu_utilization,
    )
}

/// Said when the calibration found an apiserver given less CPU than its quota.
fn contention_note(
    name: &str,
    current: &ApiserverSettings,
    c: &ApiserverCalibration,
) -> Option<String> {
    let available = c.available_cpu_cores?;
    Some(format!(
        "apiserver `{name}`: its requests were served as if it had {available:.2} of its {} cores (the node's other work took the rest); its CPU request is not lowered, since under contention the node's CPU is shared by the requests' weights",
        current.cpu_cores
    ))
}

/// A running setting whose CPU headroom is missed by less than this share (utilisation
/// up to 0.89 against 0.85) counts as meeting it when deciding whether to change: new
/// settings are sized to the headroom itself, so without a band the next round's few
/// percent of forecast and calibration noise raised the CPU again under the same load.
const HEADROOM_HYSTERESIS: f64 = 0.05;
/// How far the running queue room may fall short of the burst floor before that alone is a
/// reason to change: the floor is the most requests seen in flight over one window, which
/// wanders from window to window; a room half again too small is a burst that will be
/// rejected, not noise.
const BURST_ROOM_HYSTERESIS: f64 = 0.5;

/// Each apiserver's share of the total load (and of the clients' QPS).
fn load_shares(
    policy: &Policy,
    per_replica: &[(Forecast, Forecast, ApiserverCalibration)],
) -> Vec<f64> {
    let n = policy.apiservers.len() as f64;
    let weights: Vec<f64> = match policy.load_share {
        LoadShare::NodeCpu => policy
            .apiservers
            .iter()
            .map(|p| p.node_allocatable.cpu_cores)
            .collect(),
        LoadShare::Observed => per_replica.iter().map(|r| r.0.plan + r.1.plan).collect(),
    };
    let sum: f64 = weights.iter().sum();
    weights
        .iter()
        .map(|w| if sum > 0.0 { w / sum } else { 1.0 / n })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn apiserver_problem(
    policy: &Policy,
    steps: impl Fn(&str) -> StepLimits,
    node: NodeAllocatable,
    sample: &ApiserverSample,
    history: Option<&ReplicaHistory>,
    c: &ApiserverCalibration,
    current: &ApiserverSettings,
    (ro_rps, mu_rps): (f64, f64),
    required_mutating_capacity: f64,
) -> ApiserverProblem {
    let b = &policy.bounds.apiserver;
    let history_peak = history
        .into_iter()
        .flat_map(|h| h.resident_memory_bytes.iter().flatten())
        .copied();
    let peak = sample
        .process
        .peak_resident_memory_bytes
        .into_iter()
        .chain(sample.process.resident_memory_bytes)
        .chain(history_peak)
        .filter(|v| v.is_finite())
        .reduce(f64::max);
    let inflight_max =
        sample.read_only.inflight_max.unwrap_or(0.0) + sample.mutating.inflight_max.unwrap_or(0.0);
    let burst_room = burst_room(sample);
    // A node that gives less than the quota is a neighbour's doing, measured for this window,
    // and no reason to lower the CPU request: under contention the kernel shares the node's
    // CPU by the requests' weights (cpu.weight follows the request), so a lower request hands
    // the neighbour more, and the neighbour may go quiet. The model counts on no more than
    // what was given, so a raise is chosen only for what it buys.
    let cpu_steps = match c.available_cpu_cores {
        Some(_) => StepLimits {
            max_decrease_factor: 1.0,
            ..steps("cpu_cores")
        },
        None => steps("cpu_cores"),
    };
    ApiserverProblem {
        load: ApiserverLoad {
            read_only: c.read_only.load(ro_rps),
            mutating: c.mutating.load(mu_rps),
        },
        baseline_cpu_cores: c.baseline_cpu_cores,
        available_cpu_cores: c.available_cpu_cores,
        cores: step_box(
            current.cpu_cores,
            &within_node(&b.cpu_cores, node.cpu_cores),
            &cpu_steps,
        ),
        read_limit: step_box(
            f64::from(current.max_requests_inflight),
            &b.max_requests_inflight,
            &steps("max_requests_inflight"),
        ),
        mutating_limit: step_box(
            f64::from(current.max_mutating_requests_inflight),
            &b.max_mutating_requests_inflight,
            &steps("max_mutating_requests_inflight"),
        ),
        queue_length: step_box(
            f64::from(current.queue_length),
            &room_bounds(&b.queue_length, burst_room),
            &steps("queue_length"),
        ),
        burst_room,
        memory: MemorySizing {
            peak_bytes: peak,
            observed_inflight_max: inflight_max,
            current_bytes: current.memory_bytes,
            grid: step_box(
                current.memory_bytes,
                &within_node(&b.memory_bytes, node.memory_bytes),
                &steps("memory_bytes"),
            ),
            policy: policy.memory,
        },
        required_mutating_capacity,
        slo: policy.slo,
        max_cpu_utilization: policy.max_cpu_utilization,
        cost: policy.cost,
    }
}

/// The least queue room the measured bursts ask for: the most requests of one class seen
/// in the apiserver at once over the window, and never less than one request. The model's
/// Poisson arrivals would make the room worth nothing, but real clients come in bursts
/// (informers relisting after a restart, controllers resyncing, `kubectl get -A`), and an
/// empty room turns each into 429s. APF cannot hold an empty room either: the updater
/// writes at least one request per queue of a flow's hand.
fn burst_room(sample: &ApiserverSample) -> f64 {
    [sample.read_only.inflight_max, sample.mutating.inflight_max]
        .into_iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
}

/// The queue room's bounds from the least the bursts ask for; all at the bounds' maximum
/// when they ask for more than it.
fn room_bounds(bounds: &KnobRange, burst_room: f64) -> KnobRange {
    bounds.within(burst_room, bounds.max).unwrap_or(KnobRange {
        min: bounds.max,
        ..*bounds
    })
}

/// The candidate with its P99s, which the search itself never needs.
fn describe(problem: &ApiserverProblem, c: &Candidate) -> ApiserverPrediction {
    let s = &c.settings;
    let usable = problem.queue_cores(s.cpu_cores);
    let model =
        (usable > 0.0).then(|| ApiserverModel::new(&problem.load, &s.queue_setting(usable)));
    let (ro, mu) = match model {
        Some(Ok(m)) => (
            Some(m.read_only.response_percentile(0.99)),
            Some(m.mutating.response_percentile(0.99)),
        ),
        _ => (None, None),
    };
    ApiserverPrediction {
        cpu_utilization: c.cpu_utilization,
        read_only_p99_s: ro,
        mutating_p99_s: mu,
        read_only_rejection: c.read_only_rejection,
        mutating_rejection: c.mutating_rejection,
        mutating_capacity_rps: c.mutating_capacity_rps,
        violations: c.violations.clone(),
    }
}

fn target(p: &ReplicaPlacement) -> Target {
    Target {
        name: p.name.clone(),
        stateful_set: p.stateful_set.clone(),
        container: p.container.clone(),
    }
}

fn blocking_findings(snapshot: &LoadSnapshot) -> Vec<String> {
    snapshot
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Blocking)
        .map(|f| match &f.replica {
            Some(r) => format!("{} on {r}: {}", f.metric, f.detail),
            None => format!("{}: {}", f.metric, f.detail),
        })
        .collect()
}

/// The violated constraints if any; else what binds each apiserver.
fn binding_summary(
    apiservers: &[ApiserverRecommendation],
    schedulers: &[ClientRecommendation],
    controller_managers: &[ClientRecommendation],
) -> Option<String> {
    let describe =
        |name: &str, v: &Violation| format!("{name}: {:?} ({:+.3})", v.constraint, v.amount);
    let mut violated: Vec<String> = Vec::new();
    for a in apiservers {
        for v in a.predicted_recommended.iter().flat_map(|p| &p.violations) {
            violated.push(describe(&a.target.name, v));
        }
    }
    // A component's replicas share one prediction: its first stands for all.
    for c in schedulers
        .first()
        .into_iter()
        .chain(controller_managers.first())
    {
        for v in c.predicted_recommended.iter().flat_map(|p| &p.violations) {
            violated.push(describe(&c.target.name, v));
        }
    }
    if !violated.is_empty() {
        return Some(format!("violated: {}", violated.join("; ")));
    }
    let binding: Vec<String> = apiservers
        .iter()
        .filter_map(|a| Some(describe(&a.target.name, a.binding.as_ref()?)))
        .collect();
    (!binding.is_empty()).then(|| binding.join("; "))
}

/// A recommendation that changes nothing because the round could not be modelled.
fn hold_only(
    snapshot: &LoadSnapshot,
    policy: &Policy,
    cur: &CurrentOf,
    reasons: Vec<String>,
) -> Recommendation {
    let clients = |placements: &[ReplicaPlacement], component| {
        placements
            .iter()
            .map(|p| {
                let s = *cur.client(component, &p.name);
                ClientRecommendation {
                    target: target(p),
                    current: s,
                    recommended: s,
                    predicted_current: None,
                    predicted_recommended: None,
                    notes: vec![],
                }
            })
            .collect()
    };
    let mut hold_reasons: Vec<String> = blocking_findings(snapshot)
        .into_iter()
        .map(|b| format!("snapshot not actionable: {b}"))
        .collect();
    hold_reasons.extend(reasons);
    Recommendation {
        time_unix_s: snapshot.time_unix_s,
        action: Action::Hold,
        hold_reasons,
        feasible: false,
        confidence: ConfidenceLevel::Low,
        binding_constraint: None,
        current_cost: None,
        recommended_cost: None,
        runner_up: None,
        client_qps_total: None,
        apiserver_mutating_capacity_rps: None,
        apiservers: policy
            .apiservers
            .iter()
            .map(|p| {
                let s = *cur.apiserver(&p.name);
                ApiserverRecommendation {
                    target: target(p),
                    current: s,
                    recommended: s,
                    predicted_current: None,
                    predicted_recommended: None,
                    binding: None,
                    sized_by: None,
                    planned_read_only_rps: None,
                    planned_mutating_rps: None,
                    forecast_read_only: None,
                    forecast_mutating: None,
                    calibration: None,
                    evaluations: 0,
                }
            })
            .collect(),
        schedulers: clients(&policy.schedulers, Component::Scheduler),
        controller_managers: clients(&policy.controller_managers, Component::ControllerManager),
        notes: vec![],
    }
}
