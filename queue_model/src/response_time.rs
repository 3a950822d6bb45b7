//! Survival functions of response times and the percentile solver every model shares.

use crate::poisson;

/// P(Erlang(k, α) + Exp(β) > t) for α ≥ β > 0: the response of an arrival that waits for
/// k departures at total rate α and is then served at rate β.
pub(crate) fn erlang_plus_exp_survival(k: u64, alpha: f64, beta: f64, t: f64) -> f64 {
    if t <= 0.0 {
        return 1.0;
    }
    if k == 0 {
        return (-beta * t).exp();
    }
    let gamma = alpha - beta;
    if gamma <= alpha * 1e-12 {
        // Equal rates: the sum is Erlang(k + 1, α).
        return poisson::below(k + 1, alpha * t);
    }
    // P(E > t) + ∫₀ᵗ f_E(s)·e^{−β(t−s)} ds, the integral being
    // e^{−βt}·(α/γ)^k·P(Poisson(γt) ≥ k); the product is formed in log space.
    let waiting_longer = poisson::below(k, alpha * t);
    let ln_integral = -beta * t + k as f64 * (alpha / gamma).ln() + poisson::ln_upper(k, gamma * t);
    (waiting_longer + ln_integral.exp()).clamp(0.0, 1.0)
}

/// P(Exp(a) + Exp(b) > t), the hypoexponential distribution of two phases.
///
/// With a ≥ b: e^{−bt}·(1 + b·(1 − e^{−(a−b)t})/(a − b)), written with expm1 so that it
/// stays exact as a → b, where it becomes e^{−bt}·(1 + bt).
pub(crate) fn hypoexponential_survival(a: f64, b: f64, t: f64) -> f64 {
    if t <= 0.0 {
        return 1.0;
    }
    let (fast, slow) = if a >= b { (a, b) } else { (b, a) };
    let gap = fast - slow;
    let spread = if gap * t < 1e-300 {
        t
    } else {
        -(-gap * t).exp_m1() / gap
    };
    ((-slow * t).exp() * (1.0 + slow * spread)).clamp(0.0, 1.0)
}

/// A phase of mean `mean_s` as a two-branch hyperexponential with balanced means (each
/// branch carries half the mean): with probability p the request takes an exponential time of
/// mean `mean_s`/(2p), otherwise one of mean `mean_s`/(2(1 − p)), p = ½(1 + √((c² − 1)/(c² + 1))).
/// That is the usual two-moment fit of a variable whose squared coefficient of variation c²
/// exceeds an exponential's 1: most requests fast, a few (a large LIST, a slow etcd round trip,
/// a wait for a CPU slice) far slower. c² = 1 is the exponential itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hyperexponential {
    /// (probability, mean seconds) of the two branches.
    branches: [(f64, f64); 2],
}

impl Hyperexponential {
    pub(crate) fn exponential(mean_s: f64) -> Self {
        Self {
            branches: [(1.0, mean_s), (0.0, mean_s)],
        }
    }

    /// `scv` below 1 (or not a number) is taken as 1: the fit has no lighter tail.
    pub(crate) fn new(mean_s: f64, scv: f64) -> Self {
        if scv.is_nan() || scv <= 1.0 {
            return Self::exponential(mean_s);
        }
        let p = 0.5 * (1.0 + ((scv - 1.0) / (scv + 1.0)).sqrt());
        Self {
            branches: [
                (p, mean_s / (2.0 * p)),
                (1.0 - p, mean_s / (2.0 * (1.0 - p))),
            ],
        }
    }

    /// The branches with weight, as (probability, mean seconds).
    pub(crate) fn branches(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.branches.iter().copied().filter(|(p, _)| *p > 0.0)
    }
}

/// The smallest t with survival(t) ≤ 1 − quantile, found by bracketing and bisection.
///
/// `scale_s` is a rough size of the answer (a mean) to start the bracket from.
pub(crate) fn percentile(survival: impl Fn(f64) -> f64, quantile: f64, scale_s: f64) -> f64 {
    let target = 1.0 - quantile;
    if survival(0.0) <= target {
        return 0.0;
    }
    let mut lo = 0.0;
    let mut hi = if scale_s.is_finite() && scale_s > 0.0 {
        scale_s
    } else {
        1.0
    };
    // 2^2000 overshoots any finite time: stop doubling there rather than loop forever.
    let mut doublings = 0;
    while survival(hi) > target {
        lo = hi;
        hi *= 2.0;
        doublings += 1;
        if doublings > 2000 || !hi.is_finite() {
            return f64::INFINITY;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if survival(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= hi * 1e-12 {
            break;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypoexponential_matches_its_closed_form() {
        let (a, b) = (3.0f64, 1.0f64);
        for &t in &[0.1, 0.5, 1.0, 4.0] {
            let closed = (a * (-b * t).exp() - b * (-a * t).exp()) / (a - b);
            let got = hypoexponential_survival(a, b, t);
            assert!((got - closed).abs() < 1e-13, "t={t}: {got} vs {closed}");
        }
    }

    #[test]
    fn hypoexponential_agrees_with_the_erlang_form_and_at_equal_rates() {
        for &(a, b, t) in &[
            (5.0f64, 0.2f64, 3.0f64),
            (0.2, 5.0, 0.7),
            (1.0, 1.0 + 1e-9, 2.0),
        ] {
            let general = erlang_plus_exp_survival(1, a.max(b), a.min(b), t);
            assert!(
                (hypoexponential_survival(a, b, t) - general).abs() < 1e-9,
                "{a} {b} {t}"
            );
        }
        let equal = hypoexponential_survival(2.0, 2.0, 1.5);
        assert!((equal - (-3.0f64).exp() * 4.0).abs() < 1e-14);
    }

    #[test]
    fn erlang_plus_exp_matches_numerical_convolution() {
        // ∫ f_Erlang(k,α)(s) · P(Exp(β) > t − s) ds by the trapezoid rule, plus P(Erlang > t).
        let (k, alpha, beta, t) = (4u64, 5.0f64, 2.0f64, 1.3f64);
        let n = 200_000;
        let h = t / n as f64;
        let density =
            |s: f64| alpha.powi(4) * s.powi(3) * (-alpha * s).exp() / 6.0 * (-beta * (t - s)).exp();
        let mut integral = 0.5 * (density(0.0) + density(t));
        for i in 1..n {
            integral += density(i as f64 * h);
        }
        integral *= h;
        let expected = integral + poisson::below(k, alpha * t);
        let got = erlang_plus_exp_survival(k, alpha, beta, t);
        assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
    }

    #[test]
    fn equal_rates_reduce_to_erlang() {
        let got = erlang_plus_exp_survival(2, 1.5, 1.5, 2.0);
        let x: f64 = 3.0;
        let expected = (-x).exp() * (1.0 + x + x * x / 2.0);
        assert!((got - expected).abs() < 1e-13);
    }

    #[test]
    fn hyperexponential_keeps_the_mean_and_has_the_asked_variation() {
        for &(mean, scv) in &[(0.01f64, 1.0f64), (0.01, 4.0), (2.0, 30.0), (0.5, 400.0)] {
            let h = Hyperexponential::new(mean, scv);
            let m1: f64 = h.branches().map(|(p, m)| p * m).sum();
            // E[X²] of an exponential of mean m is 2m².
            let m2: f64 = h.branches().map(|(p, m)| p * 2.0 * m * m).sum();
            assert!((m1 - mean).abs() < 1e-12 * mean, "{mean} {scv}: mean {m1}");
            let got = m2 / (m1 * m1) - 1.0;
            assert!((got - scv).abs() < 1e-9 * scv, "{mean} {scv}: c² {got}");
            // Balanced means: each branch carries half the mean.
            for (p, m) in h.branches() {
                assert!((p * m - mean / 2.0).abs() < 1e-12 || scv == 1.0);
            }
        }
        assert_eq!(
            Hyperexponential::new(1.0, 0.3),
            Hyperexponential::exponential(1.0)
        );
    }

    #[test]
    fn percentile_of_an_exponential_is_its_logarithm() {
        let p99 = percentile(|t| (-2.0 * t).exp(), 0.99, 0.5);
        assert!((p99 - 100f64.ln() / 2.0).abs() < 1e-9, "{p99}");
        assert_eq!(percentile(|_| 0.0, 0.5, 1.0), 0.0);
    }
}
