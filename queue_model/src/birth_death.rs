//! The general finite birth–death chain: any arrival and service rate per state.

use serde::{Deserialize, Serialize};

use crate::error::{QueueModelError, Result, non_negative};

/// Largest number of states accepted; past it the solve would only cost memory.
pub const MAX_STATES: usize = 1_000_001;

/// The stationary solution of a birth–death chain on states 0..=capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StationaryDistribution {
    /// π(n) for n in 0..=capacity.
    pub probabilities: Vec<f64>,
    /// Accepted arrivals per second: Σ π(n)·λ(n) over n < capacity.
    pub throughput: f64,
    /// Share of arrivals rejected because the chain is full (state = capacity).
    pub rejection_probability: f64,
    /// L: mean number in the system.
    pub mean_number: f64,
    /// W = L / throughput (Little's law), in seconds.
    pub mean_response_s: f64,
}

/// Solves the chain with birth rate `arrival_rate(n)` and death rate `service_rate(n)`.
///
/// Products of rates are accumulated as logarithms and normalised with log-sum-exp, so
/// 10⁵ states with rates spanning hundreds of orders of magnitude stay exact to rounding.
/// A zero service rate above state 0 means the states beyond it are unreachable from below
/// only if the arrival rate before it is zero; otherwise the chain has no stationary
/// distribution and an error is returned.
pub fn solve(
    capacity: u32,
    arrival_rate: impl Fn(u32) -> f64,
    service_rate: impl Fn(u32) -> f64,
) -> Result<StationaryDistribution> {
    let states = capacity as usize + 1;
    if states > MAX_STATES {
        return Err(QueueModelError::InvalidArgument {
            name: "capacity",
            value: f64::from(capacity),
            reason: "exceeds the largest supported chain (10⁶ states)",
        });
    }
    let mut ln_p = Vec::with_capacity(states);
    ln_p.push(0.0f64);
    for n in 1..=capacity {
        let lambda = non_negative("arrival_rate", arrival_rate(n - 1))?;
        let mu = non_negative("service_rate", service_rate(n))?;
        let previous = ln_p[n as usize - 1];
        let next = if lambda == 0.0 || previous == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else if mu == 0.0 {
            return Err(QueueModelError::InvalidArgument {
                name: "service_rate",
                value: 0.0,
                reason: "is zero in a state that arrivals can reach",
            });
        } else {
            previous + lambda.ln() - mu.ln()
        };
        ln_p.push(next);
    }
    let max = ln_p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = ln_p.iter().map(|v| (v - max).exp()).sum();
    let ln_total = max + total.ln();
    let probabilities: Vec<f64> = ln_p.iter().map(|v| (v - ln_total).exp()).collect();

    let mut offered = 0.0;
    let mut accepted = 0.0;
    let mut mean_number = 0.0;
    for (n, p) in probabilities.iter().enumerate() {
        let n = n as u32;
        let lambda = non_negative("arrival_rate", arrival_rate(n))?;
        offered += p * lambda;
        if n < capacity {
            accepted += p * lambda;
        }
        mean_number += f64::from(n) * p;
    }
    let rejection_probability = if offered > 0.0 {
        1.0 - accepted / offered
    } else {
        0.0
    };
    Ok(StationaryDistribution {
        probabilities,
        throughput: accepted,
        rejection_probability: rejection_probability.clamp(0.0, 1.0),
        mean_number,
        mean_response_s: if accepted > 0.0 {
            mean_number / accepted
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limited_queue::LimitedQueue;

    #[test]
    fn mm1k_has_its_textbook_distribution() {
        // M/M/1/K: π(n) ∝ ρⁿ.
        let (lambda, mu, k) = (2.0, 3.0, 6u32);
        let d = solve(k, |_| lambda, |_| mu).unwrap();
        let rho: f64 = lambda / mu;
        let norm: f64 = (0..=k).map(|n| rho.powi(n as i32)).sum();
        for n in 0..=k {
            let want = rho.powi(n as i32) / norm;
            assert!((d.probabilities[n as usize] - want).abs() < 1e-14);
        }
        assert!((d.rejection_probability - rho.powi(k as i32) / norm).abs() < 1e-14);
    }

    #[test]
    fn agrees_with_the_closed_form_limited_queue() {
        // M/M/12/40 with a 0.15 s two-phase service: π(n) ∝ Π λ / (min(n, c)·μ).
        let (lambda, phases, c, k) = (68.0f64, (0.1f64, 0.05f64), 12u32, 40u32);
        let mu = 1.0 / (phases.0 + phases.1);
        let queue = LimitedQueue::new(lambda, phases, c, k);
        let d = solve(k, |_| lambda, |n| f64::from(n.min(c)) * mu).unwrap();
        for n in 0..=k {
            let (a, b) = (queue.probability(n), d.probabilities[n as usize]);
            assert!((a - b).abs() <= 1e-12 + 1e-10 * b, "π({n}): {a} vs {b}");
        }
        assert!((queue.mean_number() - d.mean_number).abs() < 1e-9);
        assert!((queue.rejection_probability() - d.rejection_probability).abs() < 1e-12);
    }

    #[test]
    fn hundred_thousand_states_in_overload_stay_finite() {
        let d = solve(100_000, |_| 1.2, |_| 1.0).unwrap();
        assert!(d.probabilities.iter().all(|p| p.is_finite()));
        assert!((d.rejection_probability - (1.0 - 1.0 / 1.2)).abs() < 1e-9);
    }

    #[test]
    fn bad_rates_are_named() {
        let e = solve(3, |_| -1.0, |_| 1.0).unwrap_err().to_string();
        assert!(e.contains("arrival_rate"), "{e}");
        let e = solve(3, |_| 1.0, |_| 0.0).unwrap_err().to_string();
        assert!(e.contains("service_rate"), "{e}");
    }
}
