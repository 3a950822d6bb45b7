//! Properties every valid input must keep.

use proptest::prelude::*;
use queue_model::apiserver::{ApiserverLoad, ApiserverSetting, ClassLimits, ClassLoad, predict};
use queue_model::mmc::Mmc;
use queue_model::mmck::Mmck;
use queue_model::{birth_death, erlang_b, erlang_c};

fn unit(p: f64) -> bool {
    p.is_finite() && (0.0..=1.0).contains(&p)
}

fn class_load() -> impl Strategy<Value = ClassLoad> {
    (0.0f64..3000.0, 0.0001f64..0.05, 0.0f64..0.2).prop_map(|(arrival_rate, cpu_s, non_cpu_s)| {
        ClassLoad {
            arrival_rate,
            cpu_s,
            non_cpu_s,
            non_cpu_scv: 1.0,
        }
    })
}

fn limits() -> impl Strategy<Value = ClassLimits> {
    (1u32..1000, 0u32..500).prop_map(|(concurrency_limit, queue_length)| ClassLimits {
        concurrency_limit,
        queue_length,
    })
}

proptest! {
    #[test]
    fn erlang_c_is_a_probability_at_least_erlang_b(servers in 1u32..3000, share in 0.0f64..0.999) {
        let a = share * f64::from(servers);
        let (b, c) = (erlang_b(servers, a).unwrap(), erlang_c(servers, a).unwrap());
        prop_assert!(unit(b) && unit(c));
        prop_assert!(c >= b * (1.0 - 1e-12), "C={c} < B={b}");
    }

    #[test]
    fn mmc_outputs_are_finite_and_latency_falls_with_servers(
        servers in 1u32..500, share in 0.01f64..0.99, mu in 0.01f64..100.0, extra in 1u32..50,
    ) {
        let lambda = share * f64::from(servers) * mu;
        let fewer = Mmc::new(lambda, mu, servers).unwrap().metrics();
        let more = Mmc::new(lambda, mu, servers + extra).unwrap().metrics();
        for m in [&fewer, &more] {
            prop_assert!(unit(m.p_wait) && unit(m.utilization));
            prop_assert!(m.mean_response_s.is_finite() && m.p99_response_s.is_finite());
            prop_assert!(m.p50_response_s <= m.p99_response_s);
        }
        prop_assert!(more.mean_response_s <= fewer.mean_response_s * (1.0 + 1e-9));
        prop_assert!(more.p99_response_s <= fewer.p99_response_s * (1.0 + 1e-9));
    }

    #[test]
    fn mmck_blocking_falls_with_capacity(
        servers in 1u32..200, load in 0.0f64..3.0, room in 0u32..500, extra in 1u32..500,
    ) {
        let lambda = load * f64::from(servers);
        let small = Mmck::new(lambda, 1.0, servers, servers + room).unwrap().metrics();
        let large = Mmck::new(lambda, 1.0, servers, servers + room + extra).unwrap().metrics();
        for m in [&small, &large] {
            prop_assert!(unit(m.p_block) && unit(m.p_wait) && unit(m.utilization));
            prop_assert!(m.mean_response_s.is_finite() && m.p99_response_s.is_finite());
        }
        prop_assert!(large.p_block <= small.p_block * (1.0 + 1e-9) + 1e-15);
    }

    #[test]
    fn birth_death_probabilities_sum_to_one(capacity in 0u32..2000, lambda in 0.0f64..100.0, mu in 0.01f64..100.0) {
        let d = birth_death::solve(capacity, |_| lambda, |n| f64::from(n.min(7)) * mu).unwrap();
        let total: f64 = d.probabilities.iter().sum();
        prop_assert!((total - 1.0).abs() < 1e-9);
        prop_assert!(unit(d.rejection_probability));
    }

    #[test]
    fn apiserver_predictions_are_finite_and_bounded(
        ro in class_load(), mu in class_load(), ro_limits in limits(), mu_limits in limits(), cores in 0.25f64..64.0,
    ) {
        let load = ApiserverLoad { read_only: ro, mutating: mu };
        let setting = ApiserverSetting { cores, read_only: ro_limits, mutating: mu_limits };
        let p = predict(&load, &setting).unwrap();
        prop_assert!(unit(p.cpu_utilization) && p.cpu_slowdown >= 1.0);
        for c in [&p.read_only, &p.mutating] {
            prop_assert!(unit(c.rejection_probability) && unit(c.p_wait));
            prop_assert!(c.mean_response_s.is_finite() && c.p99_response_s.is_finite());
            prop_assert!(c.throughput >= 0.0);
        }
    }

    /// With one class loaded, more queue room never rejects more. (With both loaded it can:
    /// admitting more of one class stretches the CPU for the other — a real coupling.)
    #[test]
    fn apiserver_rejection_falls_with_more_queue_room(
        ro in class_load(), idle in class_load(), ro_limits in limits(), mu_limits in limits(),
        cores in 0.5f64..32.0, extra in 1u32..200,
    ) {
        let load = ApiserverLoad { read_only: ro, mutating: ClassLoad { arrival_rate: 0.0, ..idle } };
        let base = ApiserverSetting { cores, read_only: ro_limits, mutating: mu_limits };
        let mut roomier = base;
        roomier.read_only.queue_length += extra;
        let (a, b) = (predict(&load, &base).unwrap(), predict(&load, &roomier).unwrap());
        prop_assert!(b.read_only.rejection_probability <= a.read_only.rejection_probability * (1.0 + 1e-6) + 1e-12,
            "{} > {}", b.read_only.rejection_probability, a.read_only.rejection_probability);
    }
}
