//! The birth–death chain behind M/M/c/K and each apiserver request class.
//!
//! Up to `concurrency_limit` requests are served at once, each at rate μ; the rest wait
//! FCFS up to `capacity`; arrivals to a full system are rejected. The stationary
//! distribution is Poisson-shaped up to c and geometric above it; it is evaluated in log
//! space, so any capacity (10⁵ states and more) costs O(c) and never overflows. A service
//! time may have two phases (CPU, then the rest), which shape percentiles: the first
//! exponential, the second exponential or, with a squared coefficient of variation above 1,
//! hyperexponential (see `response_time::Hyperexponential`).

use crate::poisson::{self, ln_one_minus_exp};
use crate::response_time::{
    Hyperexponential, erlang_plus_exp_survival, hypoexponential_survival, percentile,
};

/// Probability mass below which states are left out of response-time sums.
const NEGLIGIBLE_MASS: f64 = 1e-16;

#[derive(Debug, Clone)]
pub(crate) struct LimitedQueue {
    arrival_rate: f64,
    /// Mean seconds of the two service phases; their sum is 1/μ.
    service_phases_s: (f64, f64),
    /// The second phase's shape (exponential unless set otherwise).
    second_phase: Hyperexponential,
    concurrency_limit: u32,
    capacity: u32,
    ln_ratio: f64,
    ln_prob_limit: f64,
    ln_prob_below_limit: f64,
    mean_number: f64,
    prob_full: f64,
}

impl LimitedQueue {
    /// Inputs must already be validated: `arrival_rate` ≥ 0, phases ≥ 0 with a positive
    /// sum, 1 ≤ `concurrency_limit` ≤ `capacity`.
    pub(crate) fn new(
        arrival_rate: f64,
        service_phases_s: (f64, f64),
        concurrency_limit: u32,
        capacity: u32,
    ) -> Self {
        let service_rate = 1.0 / (service_phases_s.0 + service_phases_s.1);
        let mut queue = Self {
            arrival_rate,
            service_phases_s,
            second_phase: Hyperexponential::exponential(service_phases_s.1),
            concurrency_limit,
            capacity,
            ln_ratio: (arrival_rate / (f64::from(concurrency_limit) * service_rate)).ln(),
            ln_prob_limit: f64::NEG_INFINITY,
            ln_prob_below_limit: 0.0,
            mean_number: 0.0,
            prob_full: 0.0,
        };
        if arrival_rate > 0.0 {
            queue.solve(arrival_rate / service_rate);
        }
        queue
    }

    /// The same queue with the second phase's squared coefficient of variation set to `scv`
    /// (≥ 1; 1 is exponential). The chain's state probabilities depend on the mean only, as
    /// they are taken to; the response times of requests served at once get the tail.
    pub(crate) fn with_second_phase_scv(mut self, scv: f64) -> Self {
        self.second_phase = Hyperexponential::new(self.service_phases_s.1, scv);
        self
    }

    fn solve(&mut self, offered_load: f64) {
        let c = self.concurrency_limit;
        // States 0..=c, relative to state c, sum to 1/B(c, a); above c they are r^j.
        let ln_b = ln_erlang_b(c, offered_load);
        let ln_below_rel = ln_one_minus_exp(ln_b) - ln_b;
        let queue_states = u64::from(self.capacity - c);
        let ln_tail = ln_geometric_sum(self.ln_ratio, 1, queue_states);
        let ln_total = log_add_exp(-ln_b, ln_tail);
        self.ln_prob_limit = -ln_total;
        self.ln_prob_below_limit = ln_below_rel - ln_total;
        self.prob_full = (self.ln_prob_limit + queue_states as f64 * self.ln_ratio).exp();
        // Σ n·π(n): the head gives a·Σ_{n<c} π(n); the tail π(c)·Σ (c+j)·r^j.
        let head = (offered_load.ln() + self.ln_prob_below_limit).exp();
        let tail = (ln_tail - ln_total).exp()
            * (f64::from(c) + truncated_geometric_mean(self.ln_ratio, queue_states));
        self.mean_number = head + tail;
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

    fn service_s(&self) -> f64 {
        self.service_phases_s.0 + self.service_phases_s.1
    }

    /// Mean response time of accepted requests (Little's law).
    pub(crate) fn mean_response(&self) -> f64 {
        let x = self.throughput();
        if x > 0.0 {
            self.mean_number / x
        } else {
            self.service_s()
        }
    }

    /// Probability that an accepted arrival has to queue (all slots busy).
    pub(crate) fn wait_probability(&self) -> f64 {
        if self.arrival_rate == 0.0 || self.concurrency_limit == self.capacity {
            return 0.0;
        }
        let last = u64::from(self.capacity - self.concurrency_limit) - 1;
        let ln_mass = self.ln_prob_limit + ln_geometric_sum(self.ln_ratio, 0, last);
        (ln_mass.exp() / (1.0 - self.prob_full)).clamp(0.0, 1.0)
    }

    fn service_survival(&self, t: f64) -> f64 {
        let first = self.service_phases_s.0;
        self.second_phase
            .branches()
            .fold(0.0, |sum, (weight, mean)| {
                let survival = if first == 0.0 || mean == 0.0 {
                    (-t / (first + mean)).exp()
                } else {
                    hypoexponential_survival(1.0 / first, 1.0 / mean, t)
                };
                sum + weight * survival
            })
    }

    /// P(response > t) for an accepted arrival (Poisson arrivals see time averages).
    pub(crate) fn response_survival(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 1.0;
        }
        let served_at_once = if self.arrival_rate == 0.0 {
            1.0
        } else {
            self.ln_prob_below_limit.exp()
        };
        let mut total = served_at_once * self.service_survival(t);
        // Arrivals at n ≥ c wait for n−c+1 departures at rate c·μ; their service is taken
        // as exponential, tail or not, since the wait dominates there.
        if self.arrival_rate > 0.0 && self.concurrency_limit < self.capacity {
            let mu = 1.0 / self.service_s();
            let alpha = f64::from(self.concurrency_limit) * mu;
            let queue_states = u64::from(self.capacity - self.concurrency_limit);
            total += match self.unbounded_queue_drain_rate(alpha, queue_states) {
                // Σ_j r^j·Erlang(j+1, α) = α·e^{−α(1−r)s}/… : the geometric mixture of
                // Erlang waits is exactly an exponential wait, so the sum has a closed form.
                Some(drain) => {
                    let queued_mass = (self.ln_prob_limit - ln_one_minus_exp(self.ln_ratio)).exp();
                    queued_mass * hypoexponential_survival(drain, mu, t)
                }
                None => self.queued_survival(queue_states - 1, alpha, mu, t),
            };
        }
        (total / (1.0 - self.prob_full)).clamp(0.0, 1.0)
    }

    /// The exponential rate of the wait, α(1 − r), when the queue may be taken as unbounded:
    /// r < 1 and the mass beyond the last queue state, π(c)·r^m/(1 − r), is negligible.
    fn unbounded_queue_drain_rate(&self, alpha: f64, queue_states: u64) -> Option<f64> {
        if self.ln_ratio >= 0.0 {
            return None;
        }
        let ln_beyond = self.ln_prob_limit + queue_states as f64 * self.ln_ratio
            - ln_one_minus_exp(self.ln_ratio);
        (ln_beyond < NEGLIGIBLE_MASS.ln()).then(|| alpha * -self.ln_ratio.exp_m1())
    }

    /// The queue states j ∈ lo..=hi (of 0..=last) whose combined mass is not negligible.
    fn queue_span(&self, last: u64) -> (u64, u64) {
        let (ln_r, ln_base) = (self.ln_ratio, self.ln_prob_limit);
        let (mut lo, mut hi) = (0, last);
        // The mass beyond j is about r^j/(1 − r): cut where it falls below NEGLIGIBLE_MASS.
        if ln_r < -1e-9 {
            let cut = (NEGLIGIBLE_MASS.ln() - ln_base + ln_one_minus_exp(ln_r)) / ln_r;
            if cut.is_finite() && cut >= 0.0 && cut < hi as f64 {
                hi = cut.ceil() as u64;
            }
        } else if ln_r > 1e-9 {
            let ln_top = ln_base + hi as f64 * ln_r;
            let span = (NEGLIGIBLE_MASS.ln() - ln_top + ln_one_minus_exp(-ln_r)) / -ln_r;
            if span.is_finite() && span >= 0.0 && span < hi as f64 {
                lo = hi - span.ceil() as u64;
            }
        }
        (lo, hi)
    }

    /// Σ_{j=0..=last} π(c+j)·P(Erlang(j+1, α) + Exp(β) > t) over the states that matter:
    /// an arrival at queue state j waits for j+1 departures at rate α, then is served at β.
    ///
    /// Each term is `erlang_plus_exp_survival`'s P(Poisson(αt) ≤ j) + e^{−βt}·(α/γ)^{j+1}·
    /// P(Poisson(γt) ≥ j+1), γ = α − β. Consecutive j differ in those tails by one
    /// Poisson probability, so they are carried along (the lower tail upwards from `lo`, the
    /// upper downwards from `hi`: each a sum of positive terms, in log space) instead of
    /// summed afresh for every state, which took a series of up to ~√(αt) terms and two
    /// log-gammas per state and made a long queue's percentiles cost milliseconds.
    fn queued_survival(&self, last: u64, alpha: f64, beta: f64, t: f64) -> f64 {
        let (lo, hi) = self.queue_span(last);
        let gamma = alpha - beta;
        let mut ln_weight = self.ln_prob_limit + lo as f64 * self.ln_ratio;
        if gamma <= alpha * 1e-12 {
            // Equal rates: the terms are Erlang tails, as `erlang_plus_exp_survival` has them.
            let mut sum = 0.0;
            for j in lo..=hi {
                sum += ln_weight.exp() * erlang_plus_exp_survival(j + 1, alpha, beta, t);
                ln_weight += self.ln_ratio;
            }
            return sum;
        }
        let (x, y) = (alpha * t, gamma * t);
        // ln P(Poisson(y) ≥ j+1) for j = lo..=hi, from the top: U(k) = U(k+1) + pmf(k).
        let mut ln_upper = vec![0.0; (hi - lo + 1) as usize];
        let mut upper = poisson::ln_upper(hi + 1, y);
        let mut ln_pmf = poisson::ln_pmf(hi + 1, y);
        let ln_y = y.ln();
        for (slot, j) in ln_upper.iter_mut().rev().zip((lo..=hi).rev()) {
            *slot = upper;
            // pmf(j) = pmf(j+1)·(j+1)/y.
            ln_pmf += ((j + 1) as f64).ln() - ln_y;
            upper = log_add_exp(upper, ln_pmf);
        }
        // ln P(Poisson(x) ≤ j), upwards from lo: L(j) = L(j−1) + pmf(j).
        let mut lower = poisson::ln_lower(lo, x);
        let mut ln_pmf = poisson::ln_pmf(lo, x);
        let (ln_x, ln_rates) = (x.ln(), (alpha / gamma).ln());
        let mut sum = 0.0;
        for (j, ln_upper) in (lo..=hi).zip(ln_upper) {
            if j > lo {
                ln_pmf += ln_x - (j as f64).ln();
                lower = log_add_exp(lower, ln_pmf);
            }
            let ln_integral = -beta * t + (j + 1) as f64 * ln_rates + ln_upper;
            sum += ln_weight.exp() * (lower.exp() + ln_integral.exp()).clamp(0.0, 1.0);
            ln_weight += self.ln_ratio;
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
        let c = self.concurrency_limit;
        if n >= c {
            return (self.ln_prob_limit + f64::from(n - c) * self.ln_ratio).exp();
        }
        let a = self.arrival_rate * self.service_s();
        let ln = self.ln_prob_limit + libm::lgamma(f64::from(c) + 1.0)
            - libm::lgamma(f64::from(n) + 1.0)
            - f64::from(c - n) * a.ln();
        ln.exp()
    }
}
/// ln B(c, a) = ln P(N = c) − ln P(N ≤ c) for N ~ Poisson(a): Erlang B without the O(c)
/// recurrence, in log space so it never underflows.
fn ln_erlang_b(servers: u32, a: f64) -> f64 {
    let c = u64::from(servers);
    poisson::ln_pmf(c, a) - poisson::ln_lower(c, a)
}

pub(crate) fn log_add_exp(x: f64, y: f64) -> f64 {
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
    fn queued_survival_matches_the_sum_of_its_terms() {
        // The carried Poisson tails against each state's survival computed afresh: queues
        // below, near and past saturation, short and long, times around the mean response.
        for &(rate, phases, c, queue) in &[
            (50.0, (0.01, 0.05), 4u32, 30u32),
            (1400.0, (0.004, 0.015), 25, 1000),
            (2000.0, (0.004, 0.015), 40, 1000),
            (3000.0, (0.002, 0.015), 40, 400),
            (300.0, (0.005, 0.025), 3, 200),
        ] {
            let q = LimitedQueue::new(rate, phases, c, c + queue);
            let mu = 1.0 / q.service_s();
            let alpha = f64::from(c) * mu;
            for t in [0.01, 0.1, 0.5, 1.0, 5.0, 30.0] {
                let (lo, hi) = q.queue_span(u64::from(queue) - 1);
                let direct: f64 = (lo..=hi)
                    .map(|j| {
                        let w = (q.ln_prob_limit + j as f64 * q.ln_ratio).exp();
                        w * erlang_plus_exp_survival(j + 1, alpha, mu, t)
                    })
                    .sum();
                let got = q.queued_survival(u64::from(queue) - 1, alpha, mu, t);
                assert!(
                    (got - direct).abs() <= 1e-15 + 1e-12 * direct,
                    "λ={rate} c={c} q={queue} t={t}: {got} vs {direct}"
                );
            }
        }
    }

    #[test]
    fn geometric_sums_match_direct_summation() {
        for &r in &[0.3f64, 0.999, 1.0, 1.001, 2.5] {
            for &(from, to) in &[(0u64, 0u64), (1, 10), (3, 200)] {
                let direct: f64 = (from..=to).map(|j| r.powi(j as i32)).sum();
                let got = ln_geometric_sum(r.ln(), from, to).exp();
                assert!(
                    (got - direct).abs() / direct < 1e-12,
                    "r={r} {from}..{to}: {got} vs {direct}"
                );
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
                assert!(
                    (got - num / den).abs() / (num / den) < 1e-10,
                    "r={r} m={m}: {got} vs {}",
                    num / den
                );
            }
        }
    }

    #[test]
    fn erlang_b_in_log_space_agrees_where_both_work_and_survives_underflow() {
        for &(c, a) in &[
            (1u32, 0.3f64),
            (50, 20.0),
            (100, 90.0),
            (100, 130.0),
            (5000, 4990.0),
        ] {
            let plain = crate::erlang::erlang_b_unchecked(c, a).ln();
            assert!(
                (ln_erlang_b(c, a) - plain).abs() < 1e-9 * plain.abs().max(1.0),
                "c={c} a={a}"
            );
        }
        let deep = ln_erlang_b(2000, 1.0);
        assert!(deep.is_finite() && deep < -10_000.0, "{deep}");
    }
}
