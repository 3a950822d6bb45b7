//! Request classes on C cores shared by processor sharing, with concurrency limits and queues.

use std::collections::VecDeque;

use rand::{RngExt, SeedableRng};
use rand_distr::Exp1;
use rand_pcg::Pcg64Mcg;
use serde::{Deserialize, Serialize};

use super::stats::{mean, quantile};
use crate::error::{QueueModelError, Result, at_least_one, non_negative, positive};

/// One class of requests. CPU and off-CPU times are exponential with these means; a request
/// does its CPU work first (sharing the cores), then its off-CPU part (never contended).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SimClass {
    pub arrival_rate: f64,
    pub cpu_s: f64,
    pub non_cpu_s: f64,
    pub concurrency_limit: u32,
    /// Room to wait; `None` is an unbounded queue.
    pub queue_length: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    pub cores: f64,
    pub classes: Vec<SimClass>,
    /// Arrivals (all classes) to simulate after the warm-up.
    pub arrivals: u64,
    /// Arrivals discarded first, so the run starts from a typical state.
    pub warmup_arrivals: u64,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub arrivals: u64,
    pub rejected: u64,
    pub rejection_rate: f64,
    /// Completed requests per simulated second.
    pub throughput: f64,
    pub mean_response_s: f64,
    pub p50_response_s: f64,
    pub p90_response_s: f64,
    pub p99_response_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    pub classes: Vec<ClassReport>,
    /// Time-averaged share of the cores busy.
    pub cpu_utilization: f64,
    pub simulated_s: f64,
}

/// Arrival times of the requests in each stage of one class.
#[derive(Default)]
struct ClassState {
    queued: VecDeque<f64>,
    on_cpu: Vec<f64>,
    off_cpu: Vec<f64>,
    arrivals: u64,
    rejected: u64,
    responses: Vec<f64>,
}

fn validate(config: &SimConfig) -> Result<()> {
    positive("cores", config.cores)?;
    if config.classes.is_empty() {
        return Err(QueueModelError::InvalidArgument {
            name: "classes",
            value: 0.0,
            reason: "at least one class is needed",
        });
    }
    for class in &config.classes {
        non_negative("arrival_rate", class.arrival_rate)?;
        non_negative("cpu_s", class.cpu_s)?;
        non_negative("non_cpu_s", class.non_cpu_s)?;
        at_least_one("concurrency_limit", class.concurrency_limit)?;
        if class.cpu_s + class.non_cpu_s == 0.0 {
            return Err(QueueModelError::InvalidArgument {
                name: "cpu_s",
                value: 0.0,
                reason: "cpu_s and non_cpu_s are both zero",
            });
        }
    }
    if config.classes.iter().all(|c| c.arrival_rate == 0.0) {
        return Err(QueueModelError::InvalidArgument {
            name: "arrival_rate",
            value: 0.0,
            reason: "no class has arrivals, so nothing would happen",
        });
    }
    Ok(())
}

/// Runs the system as a continuous-time Markov chain, one event at a time.
pub fn simulate(config: &SimConfig) -> Result<SimReport> {
    validate(config)?;
    let mut rng = Pcg64Mcg::seed_from_u64(config.seed);
    let mut states: Vec<ClassState> = config
        .classes
        .iter()
        .map(|_| ClassState::default())
        .collect();
    let mut rates = vec![0.0; config.classes.len() * 3];
    let total_arrivals = config.warmup_arrivals + config.arrivals;
    let (mut now, mut arrivals_seen) = (0.0f64, 0u64);
    let (mut measured_from, mut busy_core_time) = (None::<f64>, 0.0f64);

    while arrivals_seen < total_arrivals {
        let on_cpu: usize = states.iter().map(|s| s.on_cpu.len()).sum();
        let share = if on_cpu as f64 > config.cores {
            config.cores / on_cpu as f64
        } else {
            1.0
        };
        let mut total = 0.0;
        for (i, (class, state)) in config.classes.iter().zip(&states).enumerate() {
            rates[3 * i] = class.arrival_rate;
            rates[3 * i + 1] = if class.cpu_s > 0.0 {
                state.on_cpu.len() as f64 * share / class.cpu_s
            } else {
                0.0
            };
            rates[3 * i + 2] = if class.non_cpu_s > 0.0 {
                state.off_cpu.len() as f64 / class.non_cpu_s
            } else {
                0.0
            };
            total += rates[3 * i] + rates[3 * i + 1] + rates[3 * i + 2];
        }
        let dt: f64 = rng.sample::<f64, _>(Exp1) / total;
        if measured_from.is_some() {
            busy_core_time += dt * (on_cpu as f64).min(config.cores);
        }
        now += dt;
        let mut pick = rng.random::<f64>() * total;
        let mut event = rates.len() - 1;
        for (i, r) in rates.iter().enumerate() {
            if pick < *r {
                event = i;
                break;
            }
            pick -= r;
        }
        let (k, kind) = (event / 3, event % 3);
        let class = &config.classes[k];
        let state = &mut states[k];
        let measuring = measured_from.is_some();
        match kind {
            0 => {
                arrivals_seen += 1;
                if arrivals_seen == config.warmup_arrivals + 1 {
                    measured_from = Some(now);
                }
                let measure = measured_from.is_some();
                if measure {
                    state.arrivals += 1;
                }
                let in_service = state.on_cpu.len() + state.off_cpu.len();
                if in_service < class.concurrency_limit as usize {
                    start(class, state, now);
                } else if class
                    .queue_length
                    .is_none_or(|q| state.queued.len() < q as usize)
                {
                    state.queued.push_back(now);
                } else if measure {
                    state.rejected += 1;
                }
            }
            1 => {
                let arrived = state
                    .on_cpu
                    .swap_remove(rng.random_range(0..state.on_cpu.len()));
                if class.non_cpu_s > 0.0 {
                    state.off_cpu.push(arrived);
                } else {
                    finish(class, state, arrived, now, measuring);
                }
            }
            _ => {
                let arrived = state
                    .off_cpu
                    .swap_remove(rng.random_range(0..state.off_cpu.len()));
                finish(class, state, arrived, now, measuring);
            }
        }
    }

    let start_time = measured_from.unwrap_or(0.0);
    let simulated_s = (now - start_time).max(f64::MIN_POSITIVE);
    let classes = states
        .iter_mut()
        .map(|s| ClassReport {
            arrivals: s.arrivals,
            rejected: s.rejected,
            rejection_rate: if s.arrivals > 0 {
                s.rejected as f64 / s.arrivals as f64
            } else {
                0.0
            },
            throughput: s.responses.len() as f64 / simulated_s,
            mean_response_s: mean(&s.responses),
            p50_response_s: quantile(&mut s.responses, 0.5),
            p90_response_s: quantile(&mut s.responses, 0.9),
            p99_response_s: quantile(&mut s.responses, 0.99),
        })
        .collect();
    Ok(SimReport {
        classes,
        cpu_utilization: busy_core_time / (simulated_s * config.cores),
        simulated_s,
    })
}

fn start(class: &SimClass, state: &mut ClassState, arrived: f64) {
    if class.cpu_s > 0.0 {
        state.on_cpu.push(arrived);
    } else {
        state.off_cpu.push(arrived);
    }
}

fn finish(class: &SimClass, state: &mut ClassState, arrived: f64, now: f64, measuring: bool) {
    if measuring {
        state.responses.push(now - arrived);
    }
    if let Some(next) = state.queued.pop_front() {
        start(class, state, next);
    }
}
