//! The rounds the benchmark times and `tests/bench_cases.rs` pins the results of: every
//! snapshot under `config/examples/` with its policy, and the hard cases built from the
//! synthetic example (overload, whole bounds, a large control plane). Shared by the two
//! targets with `mod`/`#[path]`, so a case timed is a case whose answer is checked.

use recommender::Policy;
use recommender::setting::CurrentSettings;
use recommender::snapshot::LoadSnapshot;

const POLICY: &str = include_str!("../../../config/examples/policy.yaml");
const SNAPSHOT: &str = include_str!("../../../config/examples/snapshot-synthetic.json");
const SIMULATE_POLICY: &str = include_str!("../../../config/examples/simulate-policy.yaml");
const LOOPBACK_POLICY: &str = include_str!("../../../config/examples/policy-loopback.yaml");
const LOOPBACK_SNAPSHOT: &str = include_str!("../../../config/examples/snapshot-loopback.json");

/// One round's inputs.
pub struct Case {
    pub name: &'static str,
    pub snapshot: LoadSnapshot,
    pub policy: Policy,
    pub current: CurrentSettings,
}

/// Every case, in the order the benchmark runs them.
pub fn all() -> Vec<Case> {
    let policy = Policy::from_yaml(POLICY).unwrap();
    let snapshot: LoadSnapshot = serde_json::from_str(SNAPSHOT).unwrap();
    let current = policy.current.clone().unwrap();
    let mut whole_bounds = policy.clone();
    whole_bounds.step_limits.max_increase_factor = 1e6;
    whole_bounds.step_limits.max_decrease_factor = 1e6;
    // The simulator's policy (three equal masters, no `current` of its own) on the same
    // snapshot: its replica names are the example's.
    let simulate = Policy::from_yaml(SIMULATE_POLICY).unwrap();
    let loopback = Policy::from_yaml(LOOPBACK_POLICY).unwrap();
    let (large_policy, large_snapshot, large_current) = large(&policy, &snapshot, &current);
    vec![
        Case {
            name: "example",
            snapshot: snapshot.clone(),
            policy: policy.clone(),
            current: current.clone(),
        },
        Case {
            name: "example_whole_bounds",
            snapshot: snapshot.clone(),
            policy: whole_bounds,
            current: current.clone(),
        },
        Case {
            name: "example_x5_overload",
            snapshot: scaled(&snapshot, 5.0),
            policy: policy.clone(),
            current: current.clone(),
        },
        Case {
            name: "simulate_policy",
            snapshot,
            policy: simulate,
            current: current.clone(),
        },
        Case {
            name: "loopback_recorded",
            snapshot: serde_json::from_str(LOOPBACK_SNAPSHOT).unwrap(),
            current: loopback.current.clone().unwrap(),
            policy: loopback,
        },
        Case {
            name: "ten_apiservers_three_schedulers",
            snapshot: large_snapshot,
            policy: large_policy,
            current: large_current,
        },
    ]
}

/// Every apiserver request rate and CPU series × `factor`, as `tests/scenarios.rs` scales the
/// example: at ×5 the replicas need more cores than their masters have.
fn scaled(snapshot: &LoadSnapshot, factor: f64) -> LoadSnapshot {
    let mut snap = snapshot.clone();
    for a in &mut snap.apiservers {
        for class in [&mut a.read_only, &mut a.mutating] {
            class.arrival_rate = class.arrival_rate.map(|r| r * factor);
        }
        a.process.cpu_cores = a.process.cpu_cores.map(|c| c * factor);
    }
    for h in &mut snap.history.as_mut().unwrap().replicas {
        for series in [
            &mut h.read_only_rate,
            &mut h.mutating_rate,
            &mut h.cpu_cores,
        ] {
            for v in series.iter_mut().flatten() {
                *v *= factor;
            }
        }
    }
    snap
}

const LARGE_APISERVERS: usize = 10;
const LARGE_SCHEDULERS: usize = 3;

/// A control plane of 10 apiservers and 3 schedulers, each on its own master: replica `i`
/// is a copy of the example's replica `i mod n` (placement, samples, history and current
/// settings) named `<component>-i` on `master-i`.
fn large(
    policy: &Policy,
    snapshot: &LoadSnapshot,
    current: &CurrentSettings,
) -> (Policy, LoadSnapshot, CurrentSettings) {
    let (mut p, mut s, mut c) = (policy.clone(), snapshot.clone(), current.clone());
    let apiserver = |i| format!("apiserver-{i}");
    let scheduler = |i| format!("scheduler-{i}");
    p.apiservers = copies(&policy.apiservers, LARGE_APISERVERS, |a, i| {
        a.name = apiserver(i);
        a.stateful_set = apiserver(i);
        a.node = Some(format!("master-{i}"));
    });
    p.schedulers = copies(&policy.schedulers, LARGE_SCHEDULERS, |a, i| {
        a.name = scheduler(i);
        a.stateful_set = scheduler(i);
        a.node = Some(format!("master-{i}"));
    });
    s.apiservers = copies(&snapshot.apiservers, LARGE_APISERVERS, |a, i| {
        a.replica.name = apiserver(i);
        a.replica.instance = format!("127.0.0.1:{}", 6443 + i);
    });
    s.schedulers = copies(&snapshot.schedulers, LARGE_SCHEDULERS, |a, i| {
        a.replica.name = scheduler(i);
        a.replica.instance = format!("127.0.0.1:{}", 10259 + i);
    });
    let history = s.history.as_mut().unwrap();
    history.replicas = copies(&history.replicas, LARGE_APISERVERS, |h, i| {
        h.replica.name = apiserver(i);
        h.replica.instance = format!("127.0.0.1:{}", 6443 + i);
    });
    let templates = |names: Vec<&String>, n: usize| -> Vec<String> {
        (0..n).map(|i| names[i % names.len()].clone()).collect()
    };
    let from = templates(
        policy.apiservers.iter().map(|a| &a.name).collect(),
        LARGE_APISERVERS,
    );
    c.apiservers = from
        .iter()
        .enumerate()
        .map(|(i, name)| (apiserver(i), current.apiservers[name]))
        .collect();
    let from = templates(
        policy.schedulers.iter().map(|a| &a.name).collect(),
        LARGE_SCHEDULERS,
    );
    c.schedulers = from
        .iter()
        .enumerate()
        .map(|(i, name)| (scheduler(i), current.schedulers[name]))
        .collect();
    p.current = Some(c.clone());
    (p, s, c)
}

/// `n` copies of `from`, cycling through it, each renamed by its index.
fn copies<T: Clone>(from: &[T], n: usize, rename: impl Fn(&mut T, usize)) -> Vec<T> {
    (0..n)
        .map(|i| {
            let mut t = from[i % from.len()].clone();
            rename(&mut t, i);
            t
        })
        .collect()
}
