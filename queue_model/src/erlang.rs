//! Erlang B and Erlang C, by the recurrence that stays inside [0, 1] for any number of servers.

use crate::error::{Result, non_negative};

/// Erlang B: the probability that an arrival to an M/M/c/c loss system finds every server busy.
///
/// `offered_load` is λ/μ in Erlangs. Uses B(k) = a·B(k−1) / (k + a·B(k−1)), which never
/// overflows and loses no precision for c up to 10⁴ and beyond.
pub fn erlang_b(servers: u32, offered_load: f64) -> Result<f64> {
    let a = non_negative("offered_load", offered_load)?;
    Ok(erlang_b_unchecked(servers, a))
}

pub(crate) fn erlang_b_unchecked(servers: u32, a: f64) -> f64 {
    let mut b = 1.0;
    for k in 1..=servers {
        let ab = a * b;
        b = ab / (f64::from(k) + ab);
    }
    b
}

/// Erlang C: the probability that an arrival to an M/M/c queue has to wait.
///
/// Requires `offered_load < servers` (a stable queue); at or past that every arrival waits,
/// so 1 is returned.
pub fn erlang_c(servers: u32, offered_load: f64) -> Result<f64> {
    let a = non_negative("offered_load", offered_load)?;
    crate::error::at_least_one("servers", servers)?;
    Ok(erlang_c_from_b(servers, a, erlang_b_unchecked(servers, a)))
}

pub(crate) fn erlang_c_from_b(servers: u32, a: f64, b: f64) -> f64 {
    let c = f64::from(servers);
    if a >= c {
        return 1.0;
    }
    // C = c·B / (c − a·(1 − B)); the denominator is > 0 whenever a < c.
    (c * b / (c - a * (1.0 - b))).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_b_matches_the_direct_sum_for_small_systems() {
        // B(c, a) = (a^c / c!) / Σ_{k≤c} a^k / k!
        for &(c, a) in &[(1u32, 0.5f64), (3, 2.0), (10, 7.5), (20, 25.0)] {
            let mut term = 1.0;
            let mut sum = 1.0;
            for k in 1..=c {
                term *= a / f64::from(k);
                sum += term;
            }
            let direct = term / sum;
            let b = erlang_b(c, a).unwrap();
            assert!(
                (b - direct).abs() / direct < 1e-12,
                "c={c} a={a}: {b} vs {direct}"
            );
        }
    }

    #[test]
    fn erlang_c_matches_the_published_value() {
        // λ=90, μ=1, c=100: P(wait) = 0.21694… (independently computed, e.g. with scipy).
        let c = erlang_c(100, 90.0).unwrap();
        assert!((c - 0.216_94).abs() / 0.216_94 < 1e-4, "{c}");
    }

    #[test]
    fn ten_thousand_servers_near_saturation_stay_finite() {
        let c = erlang_c(10_000, 0.999 * 10_000.0).unwrap();
        assert!(c.is_finite() && c > 0.0 && c < 1.0, "{c}");
        let b = erlang_b(10_000, 9_990.0).unwrap();
        assert!(b.is_finite() && b > 0.0 && b < c, "{b}");
    }

    #[test]
    fn negative_or_nan_load_is_refused_by_name() {
        let err = erlang_b(3, -1.0).unwrap_err().to_string();
        assert!(err.contains("offered_load"), "{err}");
        assert!(erlang_c(3, f64::NAN).is_err());
        assert!(
            erlang_c(0, 1.0)
                .unwrap_err()
                .to_string()
                .contains("servers")
        );
    }
}
