//! Hostile inputs: any float (NaN, ±∞, subnormal, 1e308) and any count. Every model either
//! refuses the input with an error or answers with numbers in their ranges, and never spends
//! long doing so (the limits in `queue_model::MAX_*` bound the work).
//!
//! Few cases per CI run; the long fuzz job sets `PROPTEST_CASES`, e.g.
//! `PROPTEST_CASES=200000 cargo test --release -p queue_model --test hostile`.

use proptest::prelude::*;
use proptest::test_runner::Config;
use queue_model::apiserver::{ApiserverLoad, ApiserverSetting, ClassLimits, ClassLoad, predict};
use queue_model::mmc::Mmc;
use queue_model::mmck::Mmck;
use queue_model::scheduler::{self, SchedulerLoad, SchedulerSetting};

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        ..Config::default()
    }
}

/// Every kind of float, weighted towards the plausible and the edges of the limits.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        proptest::num::f64::ANY,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(0.0),
        Just(1e-300),
        Just(1e300),
        0.0f64..10.0,
        0.0f64..1e7,
    ]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![any::<u32>(), Just(0u32), Just(u32::MAX), 0u32..2000]
}

fn unit(p: f64) -> bool {
    (0.0..=1.0).contains(&p)
}

fn class_load() -> impl Strategy<Value = ClassLoad> {
    (float(), float(), float(), float()).prop_map(
        |(arrival_rate, cpu_s, non_cpu_s, non_cpu_scv)| ClassLoad {
            arrival_rate,
            cpu_s,
            non_cpu_s,
            non_cpu_scv,
        },
    )
}

fn limits() -> impl Strategy<Value = ClassLimits> {
    (count(), count()).prop_map(|(concurrency_limit, queue_length)| ClassLimits {
        concurrency_limit,
        queue_length,
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn apiserver_refuses_or_answers_in_range(
        read_only in class_load(), mutating in class_load(), cores in float(),
        ro in limits(), mu in limits(),
    ) {
        let load = ApiserverLoad { read_only, mutating };
        let setting = ApiserverSetting { cores, read_only: ro, mutating: mu };
        if let Ok(p) = predict(&load, &setting) {
            prop_assert!(unit(p.cpu_utilization), "{p:?}");
            prop_assert!(p.cpu_slowdown >= 1.0, "{p:?}");
            for c in [&p.read_only, &p.mutating] {
                prop_assert!(unit(c.rejection_probability) && unit(c.p_wait), "{c:?}");
                prop_assert!(c.throughput >= 0.0 && c.p50_response_s <= c.p99_response_s, "{c:?}");
            }
        }
    }

    #[test]
    fn mmc_and_mmck_refuse_or_answer_in_range(
        lambda in float(), mu in float(), servers in count(), capacity in count(),
    ) {
        if let Ok(q) = Mmc::new(lambda, mu, servers) {
            let m = q.metrics();
            prop_assert!(unit(m.p_wait) && unit(m.utilization), "{m:?}");
            prop_assert!(m.mean_response_s >= 0.0 && !m.p99_response_s.is_nan(), "{m:?}");
        }
        if let Ok(q) = Mmck::new(lambda, mu, servers, capacity) {
            let m = q.metrics();
            prop_assert!(unit(m.p_block) && unit(m.p_wait), "{m:?}");
            prop_assert!(m.mean_response_s >= 0.0 && !m.p99_response_s.is_nan(), "{m:?}");
        }
    }

    #[test]
    fn scheduler_refuses_or_answers_in_range(
        pod_arrival_rate in float(), algorithm_rate in float(), requests_per_pod in float(),
        client_qps in float(), client_burst in count(), apiserver_capacity in float(),
    ) {
        let load = SchedulerLoad { pod_arrival_rate, algorithm_rate, requests_per_pod };
        let setting = SchedulerSetting { client_qps, client_burst, apiserver_capacity };
        if let Ok(p) = scheduler::predict(&load, &setting) {
            prop_assert!(p.throughput_capacity > pod_arrival_rate, "{p:?}");
        }
    }
}
