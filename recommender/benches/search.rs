//! The apiserver search over the grids of `queue_model`'s sweep benchmarks, on their load:
//! 100,000 settings (10 core counts × 40 read limits × 25 write limits × 10 queue rooms) of
//! which the cheapest meets every SLO, and 40,000 with too few cores, where none does and
//! the least violating is wanted. Beside each, the same grid checked setting by setting,
//! so the ratio between the two comes from one run; before timing, the search's choice is
//! checked to cost what the exhaustive one does.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use queue_model::apiserver::{ApiserverLoad, ClassLoad};
use recommender::memory::MemorySizing;
use recommender::policy::{CostWeights, KnobRange, MemoryPolicy, Slo};
use recommender::search::{ApiserverProblem, Candidate};
use recommender::setting::ApiserverSettings;

fn problem(cores: (f64, f64)) -> ApiserverProblem {
    let range = |min, max, step| KnobRange { min, max, step };
    ApiserverProblem {
        load: ApiserverLoad {
            read_only: ClassLoad {
                arrival_rate: 1500.0,
                cpu_s: 0.002,
                non_cpu_s: 0.015,
                non_cpu_scv: 1.0,
            },
            mutating: ClassLoad {
                arrival_rate: 300.0,
                cpu_s: 0.005,
                non_cpu_s: 0.025,
                non_cpu_scv: 1.0,
            },
        },
        baseline_cpu_cores: 0.0,
        available_cpu_cores: None,
        cores: range(cores.0, cores.1, 1.0),
        read_limit: range(10.0, 400.0, 10.0),
        mutating_limit: range(8.0, 200.0, 8.0),
        queue_length: range(0.0, 90.0, 10.0),
        memory: MemorySizing {
            peak_bytes: Some(2e9),
            observed_inflight_max: 50.0,
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

/// Every setting of the grid through the full model: the cheapest feasible, else the
/// least violating.
fn exhaustive(p: &ApiserverProblem) -> Candidate {
    let mut best: Option<Candidate> = None;
    for cores in p.cores.values() {
        for ro in p.read_limit.values() {
            for mu in p.mutating_limit.values() {
                for queue in p.queue_length.values() {
                    let mut s = ApiserverSettings {
                        cpu_cores: cores,
                        memory_bytes: 0.0,
                        max_requests_inflight: ro as u32,
                        max_mutating_requests_inflight: mu as u32,
                        queue_length: queue as u32,
                    };
                    s.memory_bytes = p.memory.bytes(f64::from(s.total_inflight())).0;
                    let c = p.check(&s).unwrap();
                    let better = best
                        .as_ref()
                        .is_none_or(|b| match (c.feasible(), b.feasible()) {
                            (true, true) => c.cost < b.cost,
                            (a, b_ok) if a != b_ok => a,
                            _ => c.total_violation() < b.total_violation(),
                        });
                    if better {
                        best = Some(c);
                    }
                }
            }
        }
    }
    best.expect("the grid is not empty")
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("search");
    group.sample_size(10);
    for (name, cores) in [
        ("100k_candidates", (5.0, 14.0)),
        ("40k_overloaded", (1.0, 4.0)),
    ] {
        let p = problem(cores);
        let searched = p.solve().unwrap().best;
        let all = exhaustive(&p);
        // Past saturation the search keeps to the CPU's knee on purpose (no setting there
        // meets the SLOs, and it will not pick thousands of slots), so only a feasible
        // answer must match the exhaustive one; an infeasible one must be infeasible too.
        assert_eq!(searched.feasible(), all.feasible(), "{name}");
        if all.feasible() {
            assert!(
                (searched.cost - all.cost).abs() <= 1e-9 * all.cost,
                "{name}: the search costs {} where the whole grid's cheapest costs {}",
                searched.cost,
                all.cost
            );
        }
        group.bench_function(name, |b| b.iter(|| black_box(&p).solve().unwrap()));
        group.bench_function(format!("{name}_exhaustive"), |b| {
            b.iter(|| exhaustive(black_box(&p)))
        });
    }
    group.finish();
}

criterion_group!(search, benches);
criterion_main!(search);
