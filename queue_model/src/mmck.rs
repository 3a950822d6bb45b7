//! M/M/c/K: c servers and room for K requests in all; arrivals to a full system are blocked.

use serde::{Deserialize, Serialize};

use crate::error::{Result, capacity_at_least_servers, non_negative, open_unit, positive};
use crate::limited_queue::LimitedQueue;

/// An M/M/c/K queue with FCFS service.
#[derive(Debug, Clone)]
pub struct Mmck {
    pub arrival_rate: f64,
    pub service_rate: f64,
    pub servers: u32,
    /// K: requests in service plus waiting.
    pub capacity: u32,
    chain: LimitedQueue,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MmckMetrics {
    /// P(an arrival finds K in the system).
    pub p_block: f64,
    /// Accepted requests per second: λ·(1 − p_block).
    pub throughput: f64,
    /// Busy share of the servers: throughput / (c·μ).
    pub utilization: f64,
    /// Probability that an accepted request waits.
    pub p_wait: f64,
    pub mean_number: f64,
    pub mean_response_s: f64,
    pub p50_response_s: f64,
    pub p90_response_s: f64,
    pub p99_response_s: f64,
}

impl Mmck {
    pub fn new(arrival_rate: f64, service_rate: f64, servers: u32, capacity: u32) -> Result<Self> {
        non_negative("arrival_rate", arrival_rate)?;
        positive("service_rate", service_rate)?;
        crate::error::servers("servers", servers)?;
        // λ/μ past f64's range (1e300 / 1e-300) would make every probability NaN.
        non_negative("arrival_rate / service_rate", arrival_rate / service_rate)?;
        capacity_at_least_servers(capacity, servers)?;
        crate::error::capacity("capacity", capacity)?;
        Ok(Self {
            arrival_rate,
            service_rate,
            servers,
            capacity,
            chain: LimitedQueue::new(arrival_rate, (1.0 / service_rate, 0.0), servers, capacity),
        })
    }

    pub fn blocking_probability(&self) -> f64 {
        self.chain.rejection_probability()
    }

    pub fn throughput(&self) -> f64 {
        self.chain.throughput()
    }

    pub fn mean_response(&self) -> f64 {
        self.chain.mean_response()
    }

    /// P(response > t) of an accepted request.
    pub fn response_survival(&self, t: f64) -> f64 {
        self.chain.response_survival(t)
    }

    pub fn response_percentile(&self, quantile: f64) -> Result<f64> {
        open_unit("quantile", quantile)?;
        Ok(self.chain.response_percentile(quantile))
    }

    pub fn metrics(&self) -> MmckMetrics {
        let throughput = self.throughput();
        MmckMetrics {
            p_block: self.blocking_probability(),
            throughput,
            // Rounding in 1 − p_block can put a saturated system a hair above 1.
            utilization: (throughput / (f64::from(self.servers) * self.service_rate)).min(1.0),
            p_wait: self.chain.wait_probability(),
            mean_number: self.chain.mean_number(),
            mean_response_s: self.mean_response(),
            p50_response_s: self.chain.response_percentile(0.5),
            p90_response_s: self.chain.response_percentile(0.9),
            p99_response_s: self.chain.response_percentile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmc::Mmc;

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs()
    }

    #[test]
    fn matches_brute_force_state_sums() {
        // λ=9, μ=1, c=10, K=15, computed independently by summing the states in Python and
        // convolving the Erlang wait with the exponential service numerically.
        let m = Mmck::new(9.0, 1.0, 10, 15).unwrap().metrics();
        assert!(
            close(m.p_block, 0.061_258_761_825_664, 1e-10),
            "{}",
            m.p_block
        );
        assert!(close(m.throughput, 8.448_671_143_569_024, 1e-10));
        assert!(close(m.mean_response_s, 1.126_276_633_376_537, 1e-10));
        assert!(
            close(m.p99_response_s, 4.754_794_627, 1e-5),
            "{}",
            m.p99_response_s
        );
    }

    #[test]
    fn loss_system_blocking_is_erlang_b() {
        let m = Mmck::new(20.0, 1.0, 25, 25).unwrap();
        let b = crate::erlang_b(25, 20.0).unwrap();
        assert!(close(m.blocking_probability(), b, 1e-12));
        // No queue: the response is the exponential service alone.
        assert!(close(
            m.response_percentile(0.99).unwrap(),
            100f64.ln(),
            1e-9
        ));
    }

    #[test]
    fn a_huge_capacity_converges_to_mmc() {
        let k = Mmck::new(90.0, 1.0, 100, 100_000).unwrap().metrics();
        let c = Mmc::new(90.0, 1.0, 100).unwrap().metrics();
        assert!(k.p_block < 1e-100);
        assert!(close(k.mean_response_s, c.mean_response_s, 1e-9));
        assert!(close(k.p_wait, c.p_wait, 1e-9));
        assert!(
            close(k.p99_response_s, c.p99_response_s, 1e-7),
            "{} vs {}",
            k.p99_response_s,
            c.p99_response_s
        );
    }

    #[test]
    fn overload_is_finite_and_blocks() {
        let m = Mmck::new(500.0, 1.0, 100, 100_000).unwrap().metrics();
        assert!(close(m.p_block, 0.8, 1e-9), "{}", m.p_block);
        assert!(close(m.throughput, 100.0, 1e-9));
        assert!(m.p99_response_s.is_finite() && m.p99_response_s > 900.0);
    }

    #[test]
    fn capacity_below_servers_is_refused_by_name() {
        let e = Mmck::new(1.0, 1.0, 5, 4).unwrap_err().to_string();
        assert!(e.contains("capacity"), "{e}");
    }
}
