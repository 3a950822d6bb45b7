//! Poisson tail probabilities in log space. Erlang-distributed waits reduce to these:
//! P(Erlang(k, α) > t) = P(Poisson(αt) < k).

/// ln P(N = k) for N ~ Poisson(x).
pub(crate) fn ln_pmf(k: u64, x: f64) -> f64 {
    if x == 0.0 {
        return if k == 0 { 0.0 } else { f64::NEG_INFINITY };
    }
    let k = k as f64;
    -x + k * x.ln() - libm::lgamma(k + 1.0)
}

/// ln P(N ≥ k) for N ~ Poisson(x).
pub(crate) fn ln_upper(k: u64, x: f64) -> f64 {
    if k == 0 {
        return 0.0;
    }
    if (k as f64) > x {
        // Σ_{j≥k} pmf(j) = pmf(k)·(1 + x/(k+1) + x²/((k+1)(k+2)) + …): ratios below 1.
        ln_pmf(k, x) + ln_ratio_series(k as f64, x, 1.0)
    } else {
        ln_one_minus_exp(ln_lower(k - 1, x))
    }
}

/// ln P(N ≤ k) for N ~ Poisson(x).
pub(crate) fn ln_lower(k: u64, x: f64) -> f64 {
    if (k as f64) < x {
        // Σ_{j≤k} pmf(j) = pmf(k)·(1 + k/x + k(k−1)/x² + …): ratios below 1.
        ln_pmf(k, x) + ln_ratio_series(k as f64, x, -1.0)
    } else {
        ln_one_minus_exp(ln_upper(k + 1, x))
    }
}

/// ln of 1 + r₁ + r₁r₂ + … where the ratios walk away from `k` in `direction`.
fn ln_ratio_series(k: f64, x: f64, direction: f64) -> f64 {
    let mut term = 1.0f64;
    let mut sum = 1.0f64;
    let mut j = k;
    loop {
        let ratio = if direction > 0.0 {
            j += 1.0;
            x / j
        } else {
            if j <= 0.0 {
                break;
            }
            let r = j / x;
            j -= 1.0;
            r
        };
        term *= ratio;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum.ln()
}

/// ln(1 − e^v) for v ≤ 0, accurate at both ends.
pub(crate) fn ln_one_minus_exp(v: f64) -> f64 {
    if v >= 0.0 {
        f64::NEG_INFINITY
    } else if v > -std::f64::consts::LN_2 {
        (-v.exp_m1()).ln()
    } else {
        (-v.exp()).ln_1p()
    }
}

/// P(N < k) for N ~ Poisson(x), that is P(Erlang(k, rate) > x / rate).
pub(crate) fn below(k: u64, x: f64) -> f64 {
    if k == 0 {
        0.0
    } else {
        ln_lower(k - 1, x).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct_cdf(k: u64, x: f64) -> f64 {
        let mut term = (-x).exp();
        let mut sum = term;
        for j in 1..=k {
            term *= x / j as f64;
            sum += term;
        }
        sum
    }

    #[test]
    fn tails_match_direct_summation() {
        for &x in &[0.3, 2.0, 10.0, 55.5, 200.0] {
            for k in [0u64, 1, 2, 5, 10, 40, 60, 150, 250] {
                let cdf = direct_cdf(k, x);
                let lower = ln_lower(k, x).exp();
                assert!(
                    (lower - cdf).abs() < 1e-12 + 1e-10 * cdf,
                    "P(N≤{k}; {x}): {lower} vs {cdf}"
                );
                let upper = ln_upper(k + 1, x).exp();
                assert!(
                    (upper - (1.0 - cdf)).abs() < 1e-12,
                    "P(N>{k}; {x}): {upper} vs {}",
                    1.0 - cdf
                );
            }
        }
    }

    #[test]
    fn far_tails_stay_finite_in_log_space() {
        let v = ln_upper(100_000, 50_000.0);
        assert!(v.is_finite() && v < -10_000.0, "{v}");
        let w = ln_lower(10, 50_000.0);
        assert!(w.is_finite() && w < -40_000.0, "{w}");
    }
}
