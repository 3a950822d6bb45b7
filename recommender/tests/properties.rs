//! Properties of the search and of whole rounds over random loads.

mod support;

use proptest::prelude::*;
use queue_model::apiserver::{
    ApiserverLoad, ApiserverModel, ApiserverSetting, ClassLimits, ClassLoad,
};
use recommender::memory::MemorySizing;
use recommender::policy::{CostWeights, KnobRange, MemoryPolicy, Slo};
use recommender::search::ApiserverProblem;
use recommender::{ApiserverSettings, recommend};
use support::*;

fn range(min: f64, max: f64, step: f64) -> KnobRange {
    KnobRange { min, max, step }
}

/// A small grid, so that every setting of it can be checked by brute force.
fn problem(ro_rate: f64, mu_rate: f64, d_ro: f64, t_mu: f64) -> ApiserverProblem {
    ApiserverProblem {
        load: ApiserverLoad {
            read_only: ClassLoad {
                arrival_rate: ro_rate,
                cpu_s: d_ro,
                non_cpu_s: 0.015,
                non_cpu_scv: 1.0,
            },
            mutating: ClassLoad {
                arrival_rate: mu_rate,
                cpu_s: 0.005,
                non_cpu_s: t_mu,
                non_cpu_scv: 1.0,
            },
        },
        baseline_cpu_cores: 0.2,
        available_cpu_cores: None,
        cores: range(1.0, 8.0, 0.5),
        read_limit: range(10.0, 120.0, 10.0),
        mutating_limit: range(5.0, 60.0, 5.0),
        queue_length: range(0.0, 20.0, 10.0),
        memory: MemorySizing {
            peak_bytes: Some(2e9),
            observed_inflight_max: 20.0,
            current_bytes: 4e9,
            grid: range(1e9, 32e9, 0.25e9),
            policy: MemoryPolicy::default(),
        },
        required_mutating_capacity: 0.0,
        burst_room: 0.0,
        slo: Slo::default(),
        max_cpu_utilization: 0.85,
        cost: CostWeights::default(),
    }
}

/// The search's choice over every setting of the grid: the least cost, ties to fewer cores,
/// then shorter queues, then smaller limits (memory follows the limits and the queue, so at
/// one core count the search's order by memory is its order by cost).
fn brute_force(p: &ApiserverProblem) -> Option<ApiserverSettings> {
    let mut best: Option<(f64, ApiserverSettings)> = None;
    let key = |s: &ApiserverSettings| {
        (
            s.queue_length,
            s.max_requests_inflight,
            s.max_mutating_requests_inflight,
        )
    };
    for cores in p.cores.values() {
        for ro in p.read_limit.values() {
            for mu in p.mutating_limit.values() {
                for q in p.queue_length.values() {
                    let mut s = apiserver(cores, ro as u32, mu as u32, q as u32);
                    s.memory_bytes = p.memory.bytes(f64::from(s.total_inflight())).0;
                    let c = p.check(&s).unwrap();
                    let better = best.as_ref().is_none_or(|(cost, b)| {
                        c.cost < *cost
                            || (c.cost == *cost && s.cpu_cores == b.cpu_cores && key(&s) < key(b))
                    });
                    if c.feasible() && better {
                        best = Some((c.cost, s));
                    }
                }
            }
        }
    }
    best.map(|(_, s)| s)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_search_is_exact_and_its_choice_meets_every_slo(
        ro in 0.0f64..2500.0,
        mu in 0.0f64..600.0,
        d_ro in 0.0005f64..0.003,
        t_mu in 0.005f64..0.2,
        mib_per_request in prop::sample::select(vec![1.0, 8.0, 64.0]),
        available in prop::option::of(1.0f64..8.0),
    ) {
        let mut p = problem(ro, mu, d_ro, t_mu);
        // A node that gives less than some quotas: those quotas buy nothing beyond it.
        p.available_cpu_cores = available;
        // At 1 MiB a request the memory of this grid is one step whatever the limits, and
        // the queue and then the limits break the tie; at 64 MiB every slot costs memory.
        p.memory.policy.bytes_per_inflight_request = mib_per_request * 1024.0 * 1024.0;
        let found = p.solve().unwrap();
        match brute_force(&p) {
            Some(truth) => {
                prop_assert!(found.best.feasible());
                prop_assert_eq!(found.best.settings, truth);
                // Checked again from scratch, with percentiles rather than P(R ≤ SLO).
                let s = found.best.settings;
                let effective = available.map_or(s.cpu_cores, |a| s.cpu_cores.min(a));
                // The cheapest quota never pays for cores the node does not give.
                if let Some(a) = available {
                    prop_assert!(s.cpu_cores < a + p.cores.step, "{} cores for {a} available", s.cpu_cores);
                }
                let m = ApiserverModel::new(&p.load, &ApiserverSetting {
                    cores: effective - p.baseline_cpu_cores,
                    read_only: ClassLimits { concurrency_limit: s.max_requests_inflight, queue_length: s.queue_length },
                    mutating: ClassLimits { concurrency_limit: s.max_mutating_requests_inflight, queue_length: s.queue_length },
                }).unwrap();
                prop_assert!(m.read_only.rejection_probability() <= 1e-4);
                prop_assert!(m.mutating.rejection_probability() <= 1e-4);
                prop_assert!(m.read_only.response_percentile(0.99) <= 1.0 + 1e-6);
                prop_assert!(m.mutating.response_percentile(0.99) <= 1.0 + 1e-6);
                prop_assert!((m.cpu_used_cores + p.baseline_cpu_cores) / effective <= 0.85 + 1e-9);
            }
            None => prop_assert!(!found.best.feasible()),
        }
    }

    #[test]
    fn more_load_never_lowers_the_recommended_cores(
        ro in 0.0f64..2000.0,
        mu in 0.0f64..400.0,
        more in 1.0f64..2.0,
    ) {
        let low = problem(ro, mu, 0.002, 0.025).solve().unwrap();
        let high = problem(ro * more, mu * more, 0.002, 0.025).solve().unwrap();
        prop_assert!(high.best.settings.cpu_cores >= low.best.settings.cpu_cores);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn rounds_are_deterministic_and_monotone_in_load(
        ro in 50.0f64..1200.0,
        mu in 10.0f64..250.0,
        more in 1.0f64..1.8,
    ) {
        let policy = uniform_policy();
        let cur = current(&policy, apiserver(3.0, 200, 100, 25), client(50.0));
        let low_snap = snapshot(&policy, ro, mu, CALM_SCHEDULER);
        let low = recommend(&low_snap, &policy, &cur).unwrap();
        prop_assert_eq!(&recommend(&low_snap, &policy, &cur).unwrap(), &low);
        let high = recommend(&snapshot(&policy, ro * more, mu * more, CALM_SCHEDULER), &policy, &cur).unwrap();
        for (l, h) in low.apiservers.iter().zip(&high.apiservers) {
            prop_assert!(h.recommended.cpu_cores >= l.recommended.cpu_cores);
        }
    }
}
