//! Snapshots and policies for the integration tests: a steady load with independent wiggles
//! in each class, so that calibration can tell the classes apart, and CPU that follows it.

use std::collections::BTreeMap;

use recommender::policy::Policy;
use recommender::setting::{ApiserverSettings, ClientSettings, CurrentSettings};
use recommender::snapshot::{
    ApiserverSample, ClassSample, ClientSample, Component, ControllerManagerSample, History,
    LatencySummary, LoadSnapshot, ProcessSample, Replica, ReplicaHistory, SchedulerSample, Source,
};

pub const POLICY: &str = include_str!("../../../config/examples/policy.yaml");
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// CPU seconds per request and idle CPU the synthetic apiservers burn.
pub const D_RO: f64 = 0.002;
pub const D_MU: f64 = 0.005;
pub const BASELINE: f64 = 0.1;
const STEPS: usize = 40;
const STEP_S: f64 = 30.0;
const NOW: f64 = 1_764_100_000.0;

pub fn policy() -> Policy {
    Policy::from_yaml(POLICY).unwrap()
}

/// The example policy with every master of the same size.
pub fn uniform_policy() -> Policy {
    let mut p = policy();
    for a in &mut p.apiservers {
        a.node_allocatable = p.schedulers[0].node_allocatable;
    }
    p
}

/// Every apiserver, scheduler and controller-manager of `policy` set alike.
pub fn current(
    policy: &Policy,
    apiserver: ApiserverSettings,
    client: ClientSettings,
) -> CurrentSettings {
    let names = |list: &[recommender::policy::ReplicaPlacement]| {
        list.iter().map(|p| p.name.clone()).collect::<Vec<_>>()
    };
    CurrentSettings {
        last_change_unix_s: Some(NOW - 86_400.0),
        apiservers: names(&policy.apiservers)
            .into_iter()
            .map(|n| (n, apiserver))
            .collect(),
        schedulers: names(&policy.schedulers)
            .into_iter()
            .map(|n| (n, client))
            .collect(),
        controller_managers: names(&policy.controller_managers)
            .into_iter()
            .map(|n| (n, client))
            .collect(),
        raised_unix_s: Default::default(),
    }
}

pub fn apiserver(cores: f64, ro: u32, mu: u32, queue: u32) -> ApiserverSettings {
    ApiserverSettings {
        cpu_cores: cores,
        memory_bytes: 4.0 * GIB,
        max_requests_inflight: ro,
        max_mutating_requests_inflight: mu,
        queue_length: queue,
    }
}

pub fn client(qps: f64) -> ClientSettings {
    ClientSettings {
        cpu_cores: 1.0,
        memory_bytes: GIB,
        client_qps: qps,
        client_burst: (2.0 * qps) as u32,
    }
}

fn replica(component: Component, name: &str) -> Replica {
    Replica {
        component,
        name: name.into(),
        instance: format!("127.0.0.1/{name}"),
    }
}

/// The load a scheduler sees: bindings per second, pending pods and its client's wait.
#[derive(Clone, Copy)]
pub struct SchedulerLoad {
    pub binding_rate: f64,
    pub pending: f64,
    pub throttle_wait_p99_s: f64,
}

pub const CALM_SCHEDULER: SchedulerLoad = SchedulerLoad {
    binding_rate: 5.0,
    pending: 0.0,
    throttle_wait_p99_s: 0.0,
};

/// A snapshot where every apiserver of `policy` serves `ro`, `mu` requests per second.
pub fn snapshot(policy: &Policy, ro: f64, mu: f64, scheduler: SchedulerLoad) -> LoadSnapshot {
    rising_snapshot(policy, ro, mu, 1.0, scheduler)
}

/// As [`snapshot`], with a history that rises linearly from `from` times the load to it.
pub fn rising_snapshot(
    policy: &Policy,
    ro: f64,
    mu: f64,
    from: f64,
    scheduler: SchedulerLoad,
) -> LoadSnapshot {
    let wiggle = |t: usize, period: usize, depth: f64| {
        let rise = from + (1.0 - from) * t as f64 / (STEPS - 1) as f64;
        rise * (1.0 + depth * (2.0 * std::f64::consts::PI * t as f64 / period as f64).sin())
    };
    let apiservers = policy
        .apiservers
        .iter()
        .map(|p| {
            let class = |rate: f64, p99: f64| ClassSample {
                arrival_rate: Some(rate),
                rejected_rate: Some(0.0),
                error_rate: Some(0.0),
                latency: Some(LatencySummary {
                    p50_s: p99 / 4.0,
                    p90_s: p99 / 2.0,
                    p99_s: p99,
                    count: rate * 300.0,
                }),
                inflight_mean: Some(5.0),
                inflight_max: Some(10.0),
                inqueue_mean: Some(0.0),
            };
            ApiserverSample {
                replica: replica(Component::Apiserver, &p.name),
                read_only: class(ro, 0.08),
                mutating: class(mu, 0.13),
                long_running_rate: Some(0.1),
                long_running_open: Some(100.0),
                process: ProcessSample {
                    cpu_cores: Some(BASELINE + D_RO * ro + D_MU * mu),
                    cpu_limit_cores: None,
                    resident_memory_bytes: Some(2.0 * GIB),
                    peak_resident_memory_bytes: Some(2.0 * GIB),
                },
                priority_levels: BTreeMap::new(),
            }
        })
        .collect();
    let history = History {
        step_s: STEP_S,
        times_unix_s: (0..STEPS)
            .map(|t| NOW - STEP_S * (STEPS - 1 - t) as f64)
            .collect(),
        replicas: policy
            .apiservers
            .iter()
            .map(|p| {
                let ro_t: Vec<f64> = (0..STEPS).map(|t| ro * wiggle(t, 7, 0.1)).collect();
                let mu_t: Vec<f64> = (0..STEPS).map(|t| mu * wiggle(t, 5, 0.15)).collect();
                ReplicaHistory {
                    replica: replica(Component::Apiserver, &p.name),
                    cpu_cores: (0..STEPS)
                        .map(|t| Some(BASELINE + D_RO * ro_t[t] + D_MU * mu_t[t]))
                        .collect(),
                    read_only_rate: ro_t.iter().map(|v| Some(*v)).collect(),
                    mutating_rate: mu_t.iter().map(|v| Some(*v)).collect(),
                    read_only_p99_s: vec![Some(0.08); STEPS],
                    mutating_p99_s: vec![Some(0.13); STEPS],
                    read_only_mean_s: Vec::new(),
                    mutating_mean_s: Vec::new(),
                    resident_memory_bytes: vec![Some(2.0 * GIB); STEPS],
                }
            })
            .collect(),
    };
    let client_sample = |rate: f64, wait: f64| ClientSample {
        request_rate: Some(rate),
        throttle_wait_mean_s: Some(wait / 4.0),
        throttle_wait_p99_s: Some(wait),
    };
    let process = ProcessSample {
        cpu_cores: Some(0.3),
        cpu_limit_cores: None,
        resident_memory_bytes: Some(0.3 * GIB),
        peak_resident_memory_bytes: Some(0.3 * GIB),
    };
    LoadSnapshot {
        time_unix_s: NOW,
        window_s: 300.0,
        source: Source::Scrape { endpoints: vec![] },
        apiservers,
        schedulers: policy
            .schedulers
            .iter()
            .map(|p| SchedulerSample {
                replica: replica(Component::Scheduler, &p.name),
                pending_pods: BTreeMap::from([("active".into(), scheduler.pending)]),
                attempt_rate: BTreeMap::from([("scheduled".into(), scheduler.binding_rate)]),
                binding_rate: Some(scheduler.binding_rate),
                attempt_duration: Some(LatencySummary {
                    p50_s: 0.003,
                    p90_s: 0.006,
                    p99_s: 0.02,
                    count: 1000.0,
                }),
                pod_scheduling_duration: None,
                process: process.clone(),
                client: client_sample(scheduler.binding_rate, scheduler.throttle_wait_p99_s),
            })
            .collect(),
        controller_managers: policy
            .controller_managers
            .iter()
            .map(|p| ControllerManagerSample {
                replica: replica(Component::ControllerManager, &p.name),
                process: process.clone(),
                client: client_sample(5.0, 0.0),
            })
            .collect(),
        history: Some(history),
        findings: vec![],
    }
}
