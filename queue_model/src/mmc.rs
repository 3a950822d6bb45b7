//! M/M/c: Poisson arrivals, exponential service, c servers, an unbounded FCFS queue.

use serde::{Deserialize, Serialize};

use crate::erlang::{erlang_b_unchecked, erlang_c_from_b};
use crate::error::{QueueModelError, Result, non_negative, open_unit, positive};
use crate::response_time::{hypoexponential_survival, percentile};

/// An M/M/c queue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mmc {
    /// λ, arrivals per second.
    pub arrival_rate: f64,
    /// μ, completions per second of one server.
    pub service_rate: f64,
    pub servers: u32,
}

/// Everything the closed forms give about a stable M/M/c queue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MmcMetrics {
    /// ρ = λ / (c·μ).
    pub utilization: f64,
    /// Erlang C: the probability that an arrival waits.
    pub p_wait: f64,
    pub mean_wait_s: f64,
    pub p99_wait_s: f64,
    pub mean_response_s: f64,
    pub p50_response_s: f64,
    pub p90_response_s: f64,
    pub p99_response_s: f64,
    /// Mean number in the system (Little's law: λ·W).
    pub mean_number: f64,
}

impl Mmc {
    /// Checks the arguments and that the queue is stable (λ < c·μ).
    pub fn new(arrival_rate: f64, service_rate: f64, servers: u32) -> Result<Self> {
        non_negative("arrival_rate", arrival_rate)?;
        positive("service_rate", service_rate)?;
        crate::error::servers("servers", servers)?;
        // λ/μ past f64's range (1e300 / 1e-300) would make every probability NaN.
        non_negative("arrival_rate / service_rate", arrival_rate / service_rate)?;
        let capacity = f64::from(servers) * service_rate;
        if arrival_rate >= capacity {
            return Err(QueueModelError::Unstable {
                arrival_rate,
                capacity,
            });
        }
        Ok(Self {
            arrival_rate,
            service_rate,
            servers,
        })
    }

    fn offered_load(&self) -> f64 {
        self.arrival_rate / self.service_rate
    }

    /// Erlang C.
    pub fn wait_probability(&self) -> f64 {
        let a = self.offered_load();
        erlang_c_from_b(self.servers, a, erlang_b_unchecked(self.servers, a))
    }

    /// Rate of the exponential wait of those who wait: c·μ − λ.
    fn drain_rate(&self) -> f64 {
        f64::from(self.servers) * self.service_rate - self.arrival_rate
    }

    /// P(wait > t) = C·e^{−(cμ−λ)t}.
    pub fn wait_survival(&self, t: f64) -> f64 {
        if t < 0.0 {
            return 1.0;
        }
        self.wait_probability() * (-self.drain_rate() * t).exp()
    }

    /// P(response > t): no wait and an exponential service, or an exponential wait plus it.
    pub fn response_survival(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 1.0;
        }
        let p_wait = self.wait_probability();
        (1.0 - p_wait) * (-self.service_rate * t).exp()
            + p_wait * hypoexponential_survival(self.drain_rate(), self.service_rate, t)
    }

    /// The `quantile` (in (0, 1)) of the response time, in seconds.
    pub fn response_percentile(&self, quantile: f64) -> Result<f64> {
        open_unit("quantile", quantile)?;
        Ok(percentile(
            |t| self.response_survival(t),
            quantile,
            self.mean_response(),
        ))
    }

    /// The `quantile` of the wait: 0 when the wait probability is below 1 − quantile.
    pub fn wait_percentile(&self, quantile: f64) -> Result<f64> {
        open_unit("quantile", quantile)?;
        let p_wait = self.wait_probability();
        Ok(((p_wait / (1.0 - quantile)).ln() / self.drain_rate()).max(0.0))
    }

    pub fn mean_wait(&self) -> f64 {
        self.wait_probability() / self.drain_rate()
    }

    pub fn mean_response(&self) -> f64 {
        self.mean_wait() + 1.0 / self.service_rate
    }

    pub fn metrics(&self) -> MmcMetrics {
        let mean_response_s = self.mean_response();
        let pct = |q: f64| percentile(|t| self.response_survival(t), q, mean_response_s);
        let p_wait = self.wait_probability();
        MmcMetrics {
            utilization: self.arrival_rate / (f64::from(self.servers) * self.service_rate),
            p_wait,
            mean_wait_s: self.mean_wait(),
            p99_wait_s: ((p_wait / 0.01).ln() / self.drain_rate()).max(0.0),
            mean_response_s,
            p50_response_s: pct(0.5),
            p90_response_s: pct(0.9),
            p99_response_s: pct(0.99),
            mean_number: self.arrival_rate * mean_response_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs()
    }

    #[test]
    fn reference_case_matches_independent_values() {
        // λ=90, μ=1, c=100. Independent values (exact rational arithmetic in Python):
        // C = 0.2169404809, E[W] = C/10, and P(R > t) solved for the percentiles.
        let m = Mmc::new(90.0, 1.0, 100).unwrap().metrics();
        assert!(close(m.p_wait, 0.216_940_480_9, 1e-8), "{}", m.p_wait);
        assert!(close(m.mean_wait_s, 0.021_694_048_09, 1e-8));
        assert!(close(m.mean_response_s, 1.021_694_048_09, 1e-8));
        assert!(close(m.utilization, 0.9, 1e-12));
        // P(R > p50) = 0.5 and P(R > p99) = 0.01, checked against the survival function.
        let q = Mmc::new(90.0, 1.0, 100).unwrap();
        assert!((q.response_survival(m.p50_response_s) - 0.5).abs() < 1e-9);
        assert!((q.response_survival(m.p99_response_s) - 0.01).abs() < 1e-9);
        assert!(
            close(m.p99_response_s, 4.628_988_756, 1e-6),
            "{}",
            m.p99_response_s
        );
    }

    /// `arak model mmc --servers 4294967295` ran for tens of seconds.
    #[test]
    fn servers_beyond_the_limit_are_refused() {
        let e = Mmc::new(10.0, 1.0, u32::MAX).unwrap_err();
        assert!(
            matches!(
                e,
                QueueModelError::TooLarge {
                    name: "servers",
                    ..
                }
            ),
            "{e}"
        );
        assert!(Mmc::new(10.0, 1.0, crate::MAX_SERVERS).is_ok());
    }

    #[test]
    fn single_server_reduces_to_mm1() {
        // M/M/1: response is exponential with rate μ − λ.
        let q = Mmc::new(3.0, 4.0, 1).unwrap();
        let m = q.metrics();
        assert!(close(m.mean_response_s, 1.0, 1e-12));
        assert!(
            close(m.p99_response_s, 100f64.ln(), 1e-9),
            "{}",
            m.p99_response_s
        );
        assert!(close(m.p_wait, 0.75, 1e-12));
    }

    #[test]
    fn unstable_and_invalid_inputs_are_refused() {
        assert!(matches!(
            Mmc::new(100.0, 1.0, 100),
            Err(QueueModelError::Unstable { .. })
        ));
        let e = Mmc::new(1.0, -1.0, 3).unwrap_err().to_string();
        assert!(e.contains("service_rate"), "{e}");
        assert!(
            Mmc::new(1.0, 1.0, 0)
                .unwrap_err()
                .to_string()
                .contains("servers")
        );
        assert!(
            Mmc::new(f64::NAN, 1.0, 2)
                .unwrap_err()
                .to_string()
                .contains("arrival_rate")
        );
        let q = Mmc::new(1.0, 1.0, 2).unwrap();
        assert!(q.response_percentile(1.0).is_err());
    }
}
