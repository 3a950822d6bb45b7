//! One apiserver-model evaluation, and a sweep of 100,000 candidate settings as the
//! recommender's search would make them (rejection, mean latency and the share of
//! requests within the SLO for each).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use queue_model::apiserver::{
    ApiserverLoad, ApiserverModel, ApiserverSetting, ClassLimits, ClassLoad, predict,
};

fn load() -> ApiserverLoad {
    ApiserverLoad {
        read_only: ClassLoad {
            arrival_rate: 1500.0,
            cpu_s: 0.002,
            non_cpu_s: 0.015,
        },
        mutating: ClassLoad {
            arrival_rate: 300.0,
            cpu_s: 0.005,
            non_cpu_s: 0.025,
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

/// 10 core counts × 40 read limits × 25 write limits × 10 queue lengths = 100,000.
fn sweep(load: &ApiserverLoad) -> usize {
    let mut feasible = 0;
    for cores in 1..=10 {
        for ro in (10..=400).step_by(10) {
            for mu in (8..=200).step_by(8) {
                for queue in (0..100).step_by(10) {
                    let model =
                        ApiserverModel::new(load, &setting(f64::from(cores), ro, mu, queue))
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
        b.iter(|| predict(black_box(&l), black_box(&setting(4.0, 400, 200, 50))).unwrap())
    });
    let mut group = c.benchmark_group("apiserver_sweep");
    group.sample_size(10);
    group.bench_function("100k_settings", |b| b.iter(|| sweep(black_box(&l))));
    group.finish();
}

criterion_group!(model, benches);
criterion_main!(model);
