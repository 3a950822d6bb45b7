//! One apiserver-model evaluation (and one past saturation with a long queue), and brute
//! force sweeps that put every setting of a grid through the model (rejection, mean latency
//! and the share of requests within the SLO): the model's throughput per setting. The
//! recommender's search over the same grids is `recommender/benches/search.rs`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use queue_model::apiserver::{
    ApiserverLoad, ApiserverModel, ApiserverSetting, ClassLimits, ClassLoad, Evaluator, predict,
};

fn load() -> ApiserverLoad {
    ApiserverLoad {
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
    }
}

fn setting(cores: f64, ro: u32, mu: u32, queue: u32) -> ApiserverSetting {
    ApiserverSetting {
        cores,
        read_only: ClassLimits {
            concurrency_limit: ro,
            queue_length: queue,
        },
        mutating: ClassLimits {
            concurrency_limit: mu,
            queue_length: queue,
        },
    }
}

/// Rejection, mean latency and P(R ≤ 1 s) for every setting of a 100,000-point grid:
/// 10 core counts × 40 read limits × 25 write limits × 10 queue lengths, every one through
/// the caching evaluator.
fn sweep(load: &ApiserverLoad, cores: impl Iterator<Item = u32>) -> usize {
    let mut evaluator = Evaluator::new(load).unwrap();
    let mut feasible = 0;
    for cores in cores {
        for ro in (10..=400).step_by(10) {
            for mu in (8..=200).step_by(8) {
                for queue in (0..100).step_by(10) {
                    let model = evaluator
                        .evaluate(&setting(f64::from(cores), ro, mu, queue))
                        .unwrap();
                    let ok = model.read_only.rejection_probability() <= 1e-4
                        && model.mutating.rejection_probability() <= 1e-4
                        && model.read_only.within(1.0) >= 0.99
                        && model.mutating.within(1.0) >= 0.99;
                    feasible += usize::from(ok);
                }
            }
        }
    }
    feasible
}

fn benches(c: &mut Criterion) {
    let l = load();
    c.bench_function("apiserver_predict_one", |b| {
        b.iter(|| predict(black_box(&l), black_box(&setting(8.0, 400, 200, 50))).unwrap())
    });
    // Limits below the load with a long queue: the queue never drains, so the response
    // time sums over its full states rather than a closed form (the report's P99s of an
    // overloaded replica).
    c.bench_function("apiserver_predict_overloaded_long_queue", |b| {
        b.iter(|| predict(black_box(&l), black_box(&setting(8.0, 25, 10, 1000))).unwrap())
    });
    c.bench_function("apiserver_model_one", |b| {
        b.iter(|| {
            ApiserverModel::new(black_box(&l), black_box(&setting(8.0, 400, 200, 50))).unwrap()
        })
    });
    let mut group = c.benchmark_group("apiserver_sweep");
    group.sample_size(10);
    // The search's candidates: the load asks 4.5 cores, so 5–14 cores.
    group.bench_function("100k_candidates", |b| {
        b.iter(|| sweep(black_box(&l), 5..=14))
    });
    // Settings with fewer cores than the load asks cannot meet the rejection bound and the
    // search prunes them; each still costs a fixed-point solve when evaluated.
    group.bench_function("40k_overloaded", |b| b.iter(|| sweep(black_box(&l), 1..=4)));
    group.finish();
}

criterion_group!(model, benches);
criterion_main!(model);
