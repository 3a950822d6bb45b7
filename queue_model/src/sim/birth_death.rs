//! Simulation of a general birth–death chain with state-dependent rates and FCFS order.

use std::collections::VecDeque;

use rand::{RngExt, SeedableRng};
use rand_distr::Exp1;
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use super::stats::mean;
use crate::error::{QueueModelError, Result, non_negative};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BirthDeathReport {
    pub mean_number: f64,
    pub rejection_rate: f64,
    pub throughput: f64,
    pub mean_response_s: f64,
}

/// Simulates `events` transitions of the chain on 0..=capacity from state 0.
pub fn simulate_birth_death(
    capacity: u32,
    arrival_rate: impl Fn(u32) -> f64,
    service_rate: impl Fn(u32) -> f64,
    events: u64,
    seed: u64,
) -> Result<BirthDeathReport> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut in_system: VecDeque<f64> = VecDeque::new();
    let (mut now, mut area) = (0.0f64, 0.0f64);
    let (mut arrivals, mut rejected) = (0u64, 0u64);
    let mut responses = Vec::new();
    for _ in 0..events {
        let n = in_system.len() as u32;
        let lambda = non_negative("arrival_rate", arrival_rate(n))?;
        let mu = if n > 0 {
            non_negative("service_rate", service_rate(n))?
        } else {
            0.0
        };
        let total = lambda + mu;
        if total == 0.0 {
            return Err(QueueModelError::InvalidArgument {
                name: "arrival_rate",
                value: 0.0,
                reason: "the chain is stuck: no arrival or service in a reachable state",
            });
        }
        let dt: f64 = rng.sample::<f64, _>(Exp1) / total;
        area += dt * f64::from(n);
        now += dt;
        if rng.random::<f64>() * total < lambda {
            arrivals += 1;
            if n < capacity {
                in_system.push_back(now);
            } else {
                rejected += 1;
            }
        } else if let Some(arrived) = in_system.pop_front() {
            responses.push(now - arrived);
        }
    }
    Ok(BirthDeathReport {
        mean_number: area / now.max(f64::MIN_POSITIVE),
        rejection_rate: if arrivals > 0 {
            rejected as f64 / arrivals as f64
        } else {
            0.0
        },
        throughput: responses.len() as f64 / now.max(f64::MIN_POSITIVE),
        mean_response_s: mean(&responses),
    })
}
