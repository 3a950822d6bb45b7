//! One full recommendation round on the example: 3 apiservers, 1 scheduler, 1
//! controller-manager, 120 history steps each. Once with the example's step limits, once
//! with steps so wide that the search spans every knob's whole bounds; and on the recording
//! from the loopback control plane, where nothing is feasible and the least violating
//! setting is searched for.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use recommender::snapshot::LoadSnapshot;
use recommender::{Policy, recommend};

const POLICY: &str = include_str!("../../config/examples/policy.yaml");
const SNAPSHOT: &str = include_str!("../../config/examples/snapshot-synthetic.json");
const LOOPBACK_POLICY: &str = include_str!("../../config/examples/policy-loopback.yaml");
const LOOPBACK_SNAPSHOT: &str = include_str!("../../config/examples/snapshot-loopback.json");

fn benches(c: &mut Criterion) {
    let policy = Policy::from_yaml(POLICY).unwrap();
    let snapshot: LoadSnapshot = serde_json::from_str(SNAPSHOT).unwrap();
    let current = policy.current.clone().unwrap();
    let mut unlimited = policy.clone();
    unlimited.step_limits.max_increase_factor = 1e6;
    unlimited.step_limits.max_decrease_factor = 1e6;

    let mut group = c.benchmark_group("round");
    group.bench_function("example", |b| {
        b.iter(|| {
            recommend(
                black_box(&snapshot),
                black_box(&policy),
                black_box(&current),
            )
            .unwrap()
        })
    });
    group.bench_function("example_whole_bounds", |b| {
        b.iter(|| {
            recommend(
                black_box(&snapshot),
                black_box(&unlimited),
                black_box(&current),
            )
            .unwrap()
        })
    });
    let loopback = Policy::from_yaml(LOOPBACK_POLICY).unwrap();
    let recorded: LoadSnapshot = serde_json::from_str(LOOPBACK_SNAPSHOT).unwrap();
    let running = loopback.current.clone().unwrap();
    group.bench_function("loopback_recorded", |b| {
        b.iter(|| {
            recommend(
                black_box(&recorded),
                black_box(&loopback),
                black_box(&running),
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(round, benches);
criterion_main!(round);
