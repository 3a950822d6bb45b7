//! How many requests of one class hold a slot, when the cores are shared by processor
//! sharing: the distribution that decides how often a concurrency limit rejects.
//!
//! Treating every request as an independent server with a CPU phase stretched by the mean
//! slowdown (the M/M/c/K view of `ClassModel`) gives the number in service a Poisson tail.
//! But on C shared cores the requests on the CPU are one processor-sharing queue: when many
//! are on it, each runs slower and stays longer, so their number has the geometric tail of
//! an M/M/C queue, ratio ρ = A/C. Near a limit that tail dominates, and the Poisson view
//! underestimates rejections by orders of magnitude (2e-6 predicted where the simulation
//! measured 2e-4 at 75% CPU).
//!
//! The CPU phase (a symmetric processor-sharing station, rate min(n, C)) followed by the
//! off-CPU phase (infinite servers) is a BCMP network, so with no limits its stationary
//! distribution is a product: the requests on the CPU number as in an M/M/C queue fed the
//! CPU load A of both classes, each of them belonging to this class with probability
//! A_k/A, and the off-CPU requests are Poisson with mean λT. A limit that turns arrivals
//! away once the class holds L slots keeps the product form, truncated at L (BCMP allows
//! arrival rates that depend on a chain's population), so P(reject) = π(L) / Σ_{n≤L} π(n).
//! Above the limit, requests wait in the queue and hold no CPU. The class reaches its limit
//! when the cores are crowded, so the queue drains no faster than the occupancy's tail falls
//! at the limit (nor than L slots complete requests at the mean stretch): its states are
//! geometric with the slower of the two ratios. That is an approximation, checked against
//! the simulation in `tests/simulator_agreement.rs`.

use crate::apiserver::{ClassLimits, ClassLoad};
use crate::limited_queue::{ln_geometric_sum, log_add_exp};

/// Probability mass below which the distribution's tail is left to its geometric ratio.
const NEGLIGIBLE_TAIL: f64 = 1e-18;
/// Most states tabulated; beyond them the tail is extended by its ratio.
const MAX_STATES: usize = 1 << 18;

/// The untruncated distribution of the number of one class's requests in service,
/// tabulated as far as a limit asks.
#[derive(Debug, Clone)]
pub struct Occupancy {
    /// The on-CPU part: corrections below b, then G·r^k.
    head: Vec<f64>,
    geometric_weight: f64,
    /// π(n+1)/π(n) far in the tail (the thinned M/M/C ratio r).
    tail_ratio: f64,
    /// Mean number off the CPU, λT.
    off_cpu: f64,
    /// Poisson probabilities of the off-CPU number, as far as tabulated.
    poisson: Vec<f64>,
    /// s(n) = Σ_{k≤n} r^k·P(n−k) at the last tabulated n.
    geometric_sum: f64,
    /// π(n), n = 0..len.
    pmf: Vec<f64>,
    /// Σ_{m<n} π(m), n = 0..=len.
    below: Vec<f64>,
    /// Set once the rest of the tail is negligible: beyond, π falls by `tail_ratio`.
    complete: bool,
}

impl Occupancy {
    /// The class `load` on `cores` cores that carry `cpu_load` cores of work of both classes
    /// (this class's included). `None` at or past saturation, where no stationary
    /// distribution exists without the limits. Inputs must be validated.
    pub fn new(load: &ClassLoad, cores: f64, cpu_load: f64) -> Option<Self> {
        if cpu_load >= cores {
            return None;
        }
        let (head, geometric_weight, tail_ratio) =
            cpu_part(load.cpu_demand_cores(), cores, cpu_load);
        Some(Self {
            head,
            geometric_weight,
            tail_ratio,
            off_cpu: load.arrival_rate * load.non_cpu_s,
            poisson: Vec::new(),
            geometric_sum: 0.0,
            pmf: Vec::new(),
            below: vec![0.0],
            complete: false,
        })
    }

    /// Tabulates π up to `n` (or until the tail is negligible).
    fn extend_to(&mut self, n: usize) {
        let n = n.min(MAX_STATES);
        // π(n) = Σ_{k<b} head_k·P(n−k) + G·s(n), s(n) = r·s(n−1) + P(n).
        while !self.complete && self.pmf.len() <= n {
            let i = self.poisson.len();
            let p = match i {
                0 => (-self.off_cpu).exp(),
                // P(i) = P(i−1)·x/i; from P(0) = e^{−x} only while that does not underflow.
                _ if self.poisson[0] > 1e-250 => self.poisson[i - 1] * self.off_cpu / i as f64,
                _ => crate::poisson::ln_pmf(i as u64, self.off_cpu).exp(),
            };
            self.poisson.push(p);
            self.geometric_sum = self.tail_ratio * self.geometric_sum + p;
            let head: f64 = self
                .head
                .iter()
                .take(i + 1)
                .enumerate()
                .map(|(k, h)| h * self.poisson[i - k])
                .sum();
            let pi = (head + self.geometric_weight * self.geometric_sum).max(0.0);
            self.pmf.push(pi);
            let total = self.below[i] + pi;
            self.below.push(total);
            let past_mode = i as f64 > self.off_cpu + self.head.len() as f64 + 1.0;
            self.complete = (past_mode && pi / (1.0 - self.tail_ratio) < NEGLIGIBLE_TAIL)
                || self.pmf.len() > MAX_STATES;
        }
    }

    /// ln π(n), extended past the table by the tail ratio.
    fn ln_at(&mut self, n: usize) -> f64 {
        self.extend_to(n);
        match self.pmf.get(n) {
            Some(p) => p.ln(),
            None => {
                let last = self.pmf.len() - 1;
                self.pmf[last].ln() + (n - last) as f64 * self.tail_ratio.ln()
            }
        }
    }

    /// P(an arrival is rejected) under `limits`; `queue_ratio` is the arrival rate over the
    /// rate at which all `concurrency_limit` slots complete requests.
    pub fn rejection(&mut self, limits: &ClassLimits, queue_ratio: f64) -> f64 {
        let limit = limits.concurrency_limit as usize;
        let queue = u64::from(limits.queue_length);
        let ln_limit = self.ln_at(limit);
        if ln_limit == f64::NEG_INFINITY {
            return 0.0;
        }
        let ln_below = self.below[limit.min(self.pmf.len())].ln();
        // The queue fills when the class is at its limit, which is when the cores are
        // crowded: it drains no faster than the occupancy's own tail falls there, and no
        // faster than the slots complete requests at the mean stretch.
        let ln_r = (self.ln_at(limit + 1) - ln_limit).max(queue_ratio.ln());
        // States L..=L+q carry π(L)·r^j; the last of them rejects.
        let ln_top = ln_limit + ln_geometric_sum(ln_r, 0, queue);
        let ln_full = ln_limit + queue as f64 * ln_r;
        (ln_full - log_add_exp(ln_below, ln_top))
            .exp()
            .clamp(0.0, 1.0)
    }
}

/// The class's requests on the CPU: the thinned M/M/C distribution as its head
/// corrections (k < b), the weight G and the ratio r of its geometric part G·r^k.
fn cpu_part(class_cpu_load: f64, cores: f64, cpu_load: f64) -> (Vec<f64>, f64, f64) {
    if class_cpu_load <= 0.0 || cpu_load <= 0.0 {
        return (vec![1.0], 0.0, 0.0);
    }
    let p = (class_cpu_load / cpu_load).min(1.0);
    let q = 1.0 - p;
    let rho = cpu_load / cores;
    // Total on the CPU, m: weight A^m/m! below b (each request has a core), then
    // (C^b/b!)·ρ^m, as every core is busy from b on.
    let b = (cores.ceil() as usize).saturating_sub(1);
    let mut w = Vec::with_capacity(b + 1);
    let mut term = 1.0;
    for m in 0..=b {
        if m > 0 {
            term *= cpu_load / m as f64;
        }
        w.push(term);
    }
    let k0 = (0..b).fold(1.0, |acc, i| acc * cores / (i + 1) as f64);
    let total: f64 = w[..b].iter().sum::<f64>() + k0 * rho.powi(b as i32) / (1.0 - rho);
    // Σ_{m≥k} K0·ρ^m·C(m,k)·p^k·q^{m−k} = K0/(1−qρ) · r^k, r = pρ/(1−qρ); the head adds
    // (w_m − K0·ρ^m) for m < b.
    let ratio = p * rho / (1.0 - q * rho);
    let weight = k0 / (1.0 - q * rho) / total;
    let mut head = vec![0.0; b];
    for (m, w_m) in w.iter().enumerate().take(b) {
        let excess = (w_m - k0 * rho.powi(m as i32)) / total;
        if q == 0.0 {
            // Every request on the CPU is of this class.
            head[m] += excess;
            continue;
        }
        let mut binomial = q.powi(m as i32);
        for (k, h) in head.iter_mut().enumerate().take(m + 1) {
            *h += excess * binomial;
            // C(m,k+1)·p^{k+1}·q^{m−k−1} from C(m,k)·p^k·q^{m−k}.
            binomial *= (m - k) as f64 / (k + 1) as f64 * p / q;
        }
    }
    (head, weight, ratio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poisson;

    /// The same distribution by brute force: the M/M/C count thinned binomially, convolved
    /// with the Poisson off-CPU count.
    fn direct(load: &ClassLoad, cores: f64, cpu_load: f64, n: usize) -> Vec<f64> {
        let states = 600;
        let mut total = vec![1.0f64];
        for m in 1..states {
            let prev = total[m - 1];
            total.push(prev * cpu_load / (m as f64).min(cores));
        }
        let z: f64 = total.iter().sum();
        let p = load.cpu_demand_cores() / cpu_load;
        let mut thinned = vec![0.0; states];
        for (m, t) in total.iter().enumerate() {
            let mut c = 1.0f64;
            for (k, slot) in thinned.iter_mut().enumerate().take(m + 1) {
                *slot += t / z * c * p.powi(k as i32) * (1.0 - p).powi((m - k) as i32);
                c = c * (m - k) as f64 / (k + 1) as f64;
            }
        }
        let mean = load.arrival_rate * load.non_cpu_s;
        (0..n)
            .map(|i| {
                (0..=i)
                    .map(|k| thinned[k] * poisson::ln_pmf((i - k) as u64, mean).exp())
                    .sum()
            })
            .collect()
    }

    fn class(rate: f64, cpu_s: f64, non_cpu_s: f64) -> ClassLoad {
        ClassLoad {
            arrival_rate: rate,
            cpu_s,
            non_cpu_s,
            non_cpu_scv: crate::apiserver::EXPONENTIAL_SCV,
        }
    }

    #[test]
    fn matches_the_product_form_summed_directly() {
        for (load, cores, cpu_load) in [
            (class(600.0, 0.002, 0.015), 2.4, 1.8),
            (class(121.0, 0.005, 0.025), 2.4, 1.8),
            (class(100.0, 0.004, 0.0), 0.5, 0.4),
            (class(50.0, 0.01, 0.1), 8.0, 0.5),
            (class(900.0, 0.004, 0.01), 4.0, 3.6),
        ] {
            let mut o = Occupancy::new(&load, cores, cpu_load).unwrap();
            let want = direct(&load, cores, cpu_load, 80);
            for (n, w) in want.iter().enumerate() {
                let got = o.ln_at(n).exp();
                // Past the negligible tail (1e-18) the table is extended by its ratio only.
                assert!(
                    (got - w).abs() <= 1e-9 * w + NEGLIGIBLE_TAIL,
                    "{load:?} C={cores} A={cpu_load} n={n}: {got} vs {w}"
                );
            }
            o.extend_to(MAX_STATES);
            assert!(o.complete && (o.below[o.pmf.len()] - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn rejection_is_the_truncated_tail_and_falls_with_the_limit() {
        let load = class(600.0, 0.002, 0.015);
        let mut o = Occupancy::new(&load, 2.4, 1.8).unwrap();
        let mut at = |limit, queue_length| {
            o.rejection(
                &ClassLimits {
                    concurrency_limit: limit,
                    queue_length,
                },
                0.5,
            )
        };
        let want = direct(&load, 2.4, 1.8, 31);
        let blocking = want[30] / want.iter().sum::<f64>();
        assert!((at(30, 0) - blocking).abs() < 1e-9 * blocking);
        // The geometric tail: ~2e-4 at 30 slots, where a Poisson view says ~1e-6.
        assert!((1e-4..5e-4).contains(&at(30, 0)), "{}", at(30, 0));
        assert!(at(40, 0) < at(30, 0) && at(30, 10) < at(30, 0));
        assert!(at(100_000, 0) < 1e-100);
        assert!(Occupancy::new(&load, 1.8, 1.8).is_none());
    }
}
