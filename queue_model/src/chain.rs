//! The birth–death chain behind M/M/c/K and each apiserver request class.
//!
//! With n requests admitted, the departure rate grows linearly (n·μ₁) until it reaches a
//! saturation rate (the CPU is full), then stays flat. At most `concurrency_limit` requests
//! are in service; the rest wait FCFS up to `capacity`; arrivals to a full system are
//! rejected. The stationary distribution has a closed form: Poisson-shaped up to the
//! saturation state s, geometric above it. Everything is evaluated in log space, so any
//! capacity (10⁵ states and more) costs O(s) and never overflows.

use crate::erlang::erlang_b_unchecked;
use crate::poisson::ln_one_minus_exp;
use crate::response_time::{erlang_plus_exp_survival, percentile};

/// Probability mass below which states are left out of response-time sums.
const NEGLIGIBLE_MASS: f64 = 1e-16;

#[derive(Debug, Clone)]
pub(crate) struct SaturatingChain {
    arrival_rate: f64,
    /// μ₁: the service rate of one request when nothing else competes for the CPU.
    per_request_rate: f64,
    concurrency_limit: u32,
    capacity: u32,
    /// s: states 0..=s have departure rate n·μ₁; above s it is `top_rate`.
    linear_states: u32,
    top_rate: f64,
    ln_ratio: f64,
    ln_prob_linear_top: f64,
    ln_head_below: f64,
    mean_number: f64,
    prob_full: f64,
}

impl SaturatingChain {
    /// All arguments must already be validated: rates finite and > 0 (`arrival_rate` ≥ 0),
    /// `saturation_rate` > 0 (may be infinite), 1 ≤ `concurrency_limit` ≤ `capacity`.
    pub(crate) fn new(
        arrival_rate: f64,
        per_request_rate: f64,
        saturation_rate: f64,
        concurrency_limit: u32,
        capacity: u32,
    ) -> Self {
        let c = f64::from(concurrency_limit);
        let linear_states = if saturation_rate >= c * per_request_rate {
            concurrency_limit
        } else {
            // Truncation is intended: s is the last state whose linear rate fits under the ceiling.
            (saturation_rate / per_request_rate).floor() as u32
        };
        let top_rate = (c * per_request_rate).min(saturation_rate);
        let mut chain = Self {
            arrival_rate,
            per_request_rate,
            concurrency_limit,
            capacity,
            linear_states,
            top_rate,
            ln_ratio: (arrival_rate / top_rate).ln(),
            ln_prob_linear_top: 0.0,
            ln_head_below: f64::NEG_INFINITY,
            mean_number: 0.0,
            prob_full: 0.0,
        };
        if arrival_rate > 0.0 {
            chain.solve();
        } else if linear_states > 0 {
            chain.ln_prob_linear_top = f64::NEG_INFINITY;
            chain.ln_head_below = 0.0;
        }
        chain
    }

    fn solve(&mut self) {
        let s = self.linear_states;
        let a = self.arrival_rate / self.per_request_rate;
        // Head (states 0..=s) relative to state s sums to 1/B(s, a).
        let ln_b = ln_erlang_b(s, a);
        let ln_head = -ln_b;
        let ln_head_below_rel = ln_one_minus_exp(ln_b) - ln_b;
        let tail_states = u64::from(self.capacity - s);
        let ln_tail = ln_geometric_sum(self.ln_ratio, 1, tail_states);
        let ln_total = log_add_exp(ln_head, ln_tail);
        self.ln_prob_linear_top = -ln_total;
        self.ln_head_below = ln_head_below_rel - ln_total;
        self.prob_full = (self.ln_prob_linear_top + tail_states as f64 * self.ln_ratio).exp();
        // Σ n·π(n): the head gives a·Σ_{n<s} π(n); the tail π(s)·Σ (s+j)·r^j.
        let head_part = (a.ln() + self.ln_head_below).exp();
        let tail_part = (ln_tail - ln_total).exp()
            * (f64::from(s) + truncated_geometric_mean(self.ln_ratio, tail_states));
        self.mean_number = head_part + tail_part;
    }

    pub(crate) fn rejection_probability(&self) -> f64 {
        self.prob_full
    }

    pub(crate) fn throughput(&self) -> f64 {
        self.arrival_rate * (1.0 - self.prob_full)
    }

    pub(crate) fn mean_number(&self) -> f64 {
        self.mean_number
    }

    /// Mean time in service of a request admitted when `concurrency` requests are in service.
    pub(crate) fn service_time_at(&self, concurrency: u32) -> f64 {
        if concurrency <= self.linear_states {
            1.0 / self.per_request_rate
        } else {
            f64::from(concurrency) / self.top_rate
        }
    }

    /// Mean response time of accepted requests (Little's law).
    pub(crate) fn mean_response(&self) -> f64 {
        let x = self.throughput();
        if x > 0.0 {
            self.mean_number / x
        } else {
            self.service_time_at(1)
        }
    }

    /// Probability that an accepted arrival has to queue (all `concurrency_limit` slots busy).
    pub(crate) fn wait_probability(&self) -> f64 {
        if self.arrival_rate == 0.0 || self.concurrency_limit == self.capacity {
            return 0.0;
        }
        let (first, last) = self.queue_offsets();
        let ln_mass = self.ln_prob_linear_top + ln_geometric_sum(self.ln_ratio, first, last);
        (ln_mass.exp() / (1.0 - self.prob_full)).clamp(0.0, 1.0)
    }

    /// Offsets above s of the states where an arrival queues: c..K−1.
    fn queue_offsets(&self) -> (u64, u64) {
        let s = u64::from(self.linear_states);
        (
            u64::from(self.concurrency_limit) - s,
            u64::from(self.capacity) - 1 - s,
        )
    }

    /// P(response > t) for an accepted arrival (Poisson arrivals see time averages).
    pub(crate) fn response_survival(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 1.0;
        }
        if self.arrival_rate == 0.0 {
            return (-t / self.service_time_at(1)).exp();
        }
        let s = u64::from(self.linear_states);
        let c = u64::from(self.concurrency_limit);
        // States below s: served at the unloaded rate.
        let mut total = self.ln_head_below.exp() * (-self.per_request_rate * t).exp();
        // States s..c−1: admitted at once, slowed by CPU contention.
        if c > s {
            let top = self.top_rate;
            total += self.sum_over_geometric(0, c - 1 - s, |j| {
                (-t * top / (s + j + 1) as f64).exp()
            });
        }
        // States c..K−1: wait for n−c+1 departures, then the service at full concurrency.
        if self.concurrency_limit < self.capacity {
            let (first, last) = self.queue_offsets();
            let alpha = self.top_rate;
            let beta = self.top_rate / c as f64;
            total += self.sum_over_geometric(first, last, |j| {
                erlang_plus_exp_survival(j - first + 1, alpha, beta, t)
            });
        }
        (total / (1.0 - self.prob_full)).clamp(0.0, 1.0)
    }

    /// Σ_{j=first..=last} π(s+j)·f(j), skipping states whose combined mass is negligible.
    fn sum_over_geometric(&self, first: u64, last: u64, f: impl Fn(u64) -> f64) -> f64 {
        let ln_r = self.ln_ratio;
        let ln_base = self.ln_prob_linear_top;
        let (mut lo, mut hi) = (first, last);
        // Mass beyond an index j decays like r^j/(1 − r): cut where that drops below NEGLIGIBLE_MASS.
        if ln_r < -1e-9 {
            let cut = (NEGLIGIBLE_MASS.ln() - ln_base + ln_one_minus_exp(ln_r)) / ln_r;
            if cut.is_finite() && cut >= 0.0 && cut < hi as f64 {
                hi = hi.min(cut.ceil() as u64).max(lo);
            }
        } else if ln_r > 1e-9 {
            let ln_top = ln_base + hi as f64 * ln_r;
            let span = (NEGLIGIBLE_MASS.ln() - ln_top + ln_one_minus_exp(-ln_r)) / -ln_r;
            if span.is_finite() && span >= 0.0 && span < (hi - lo) as f64 {
                lo = hi - span.ceil() as u64;
            }
        }
        let mut sum = 0.0;
        let mut ln_weight = ln_base + lo as f64 * ln_r;
        for j in lo..=hi {
            sum += ln_weight.exp() * f(j);
            ln_weight += ln_r;
        }
        sum
    }

    pub(crate) fn response_percentile(&self, quantile: f64) -> f64 {
        percentile(
            |t| self.response_survival(t),
            quantile,
            self.mean_response(),
        )
    }

    /// π(n), for checks against the general solver.
    #[cfg(test)]
    pub(crate) fn probability(&self, n: u32) -> f64 {
        let s = self.linear_states;
        if n >= s {
            return (self.ln_prob_linear_top + f64::from(n - s) * self.ln_ratio).exp();
        }
        let a = self.arrival_rate / self.per_request_rate;
        let ln = self.ln_prob_linear_top + libm::lgamma(f64::from(s) + 1.0)
            - libm::lgamma(f64::from(n) + 1.0)
            - f64::from(s - n) * a.ln();
        ln.exp()
    }
}

/// ln B(s, a), falling back to a log-space recurrence where B underflows.
fn ln_erlang_b(servers: u32, a: f64) -> f64 {
    let b = erlang_b_unchecked(servers, a);
    if b > 1e-280 {
        return b.ln();
    }
    // 1/B(k) = 1 + (k/a)·1/B(k−1), carried as its logarithm.
    let ln_a = a.ln();
    let mut ln_inverse = 0.0f64;
    for k in 1..=servers {
        let x = f64::from(k).ln() - ln_a + ln_inverse;
        ln_inverse = if x > 0.0 {
            x + (-x).exp().ln_1p()
        } else {
            x.exp().ln_1p()
        };
    }
    -ln_inverse
}

fn log_add_exp(x: f64, y: f64) -> f64 {
    let (hi, lo) = if x > y { (x, y) } else { (y, x) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// ln Σ_{j=from..=to} r^j given ln r; −∞ for an empty range.
pub(crate) fn ln_geometric_sum(ln_r: f64, from: u64, to: u64) -> f64 {
    if from > to {
        return f64::NEG_INFINITY;
    }
    let n = (to - from + 1) as f64;
    let base = from as f64 * ln_r;
    if ln_r == 0.0 {
        base + n.ln()
    } else if ln_r < 0.0 {
        base + (-(n * ln_r).exp_m1()).ln() - (-ln_r.exp_m1()).ln()
    } else {
        base + (n - 1.0) * ln_r + (-(-n * ln_r).exp_m1()).ln() - (-(-ln_r).exp_m1()).ln()
    }
}

/// Mean of j over 1..=m with weights r^j.
fn truncated_geometric_mean(ln_r: f64, m: u64) -> f64 {
    if m == 0 {
        return 0.0;
    }
    let mf = m as f64;
    if ln_r <= 0.0 {
        1.0 + mean_from_zero(-ln_r, mf)
    } else {
        // Reversed, the weights decay from the top: j = m − i, i ∈ 0..m with ratio 1/r.
        mf - mean_from_zero(ln_r, mf)
    }
}

/// Mean of i over 0..m with weights e^{−x·i}, x ≥ 0.
fn mean_from_zero(x: f64, m: f64) -> f64 {
    if m * x < 1e-2 {
        // Expansion of 1/(eˣ−1) − m/(e^{mx}−1); the next term is below 1e-14 relative here.
        (m - 1.0) / 2.0 - x * (m * m - 1.0) / 12.0 + x.powi(3) * (m.powi(4) - 1.0) / 720.0
    } else {
        1.0 / x.exp_m1() - m / (m * x).exp_m1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometric_sums_match_direct_summation() {
        for &r in &[0.3f64, 0.999, 1.0, 1.001, 2.5] {
            for &(from, to) in &[(0u64, 0u64), (1, 10), (3, 200)] {
                let direct: f64 = (from..=to).map(|j| r.powi(j as i32)).sum();
                let got = ln_geometric_sum(r.ln(), from, to).exp();
                assert!((got - direct).abs() / direct < 1e-12, "r={r} {from}..{to}: {got} vs {direct}");
            }
        }
    }

    #[test]
    fn truncated_geometric_means_match_direct_summation() {
        for &r in &[0.2f64, 0.9999, 1.0, 1.00001, 1.7] {
            for &m in &[1u64, 7, 300, 5000] {
                let (mut num, mut den) = (0.0, 0.0);
                // Weights relative to the largest, so neither sum overflows.
                let top = if r > 1.0 { m as f64 } else { 1.0 };
                for j in 1..=m {
                    let w = ((j as f64 - top) * r.ln()).exp();
                    num += j as f64 * w;
                    den += w;
                }
                let got = truncated_geometric_mean(r.ln(), m);
                assert!((got - num / den).abs() / (num / den) < 1e-10, "r={r} m={m}: {got} vs {}", num / den);
            }
        }
    }

    #[test]
    fn erlang_b_in_log_space_agrees_where_both_work_and_survives_underflow() {
        assert!((ln_erlang_b(50, 20.0) - erlang_b_unchecked(50, 20.0).ln()).abs() < 1e-10);
        let deep = ln_erlang_b(2000, 1.0);
        assert!(deep.is_finite() && deep < -10_000.0, "{deep}");
    }
}
