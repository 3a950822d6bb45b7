//! One full recommendation round (forecast, calibration, search, checks of the current
//! settings, the report's P99s) on each case of `cases`: the examples under
//! `config/examples/`, the example with step limits off (every knob's whole bounds), at five
//! times its load (nothing feasible: the least-violating search), and a control plane of 10
//! apiservers and 3 schedulers. `tests/bench_cases.rs` pins what each case recommends.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use recommender::recommend;

mod cases;

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("round");
    for case in cases::all() {
        group.bench_function(case.name, |b| {
            b.iter(|| {
                recommend(
                    black_box(&case.snapshot),
                    black_box(&case.policy),
                    black_box(&case.current),
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(round, benches);
criterion_main!(round);
