//! Counter arithmetic: increase and per-second rate across readings, counting through
//! restarts the way PromQL's `increase` and `rate` do (without their extrapolation).

/// How much a counter grew across readings, and how many times it went down on the way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Increase {
    pub amount: f64,
    pub resets: u32,
}

/// Growth over consecutive readings of one counter. A reading lower than the one before it
/// means the process restarted and counted from zero, so it contributes its whole value.
pub fn increase(readings: &[f64]) -> Increase {
    let mut amount = 0.0;
    let mut resets = 0;
    for pair in readings.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        if after < before {
            resets += 1;
            amount += after;
        } else {
            amount += after - before;
        }
    }
    Increase { amount, resets }
}

/// Per-second rate over `(time_s, value)` readings in time order; `None` for fewer than two
/// readings, no elapsed time, or a non-finite value.
pub fn rate(readings: &[(f64, f64)]) -> Option<(f64, u32)> {
    let (first, last) = (readings.first()?, readings.last()?);
    let elapsed_s = last.0 - first.0;
    if readings.len() < 2 || elapsed_s <= 0.0 || readings.iter().any(|r| !r.1.is_finite()) {
        return None;
    }
    let values: Vec<f64> = readings.iter().map(|r| r.1).collect();
    let grown = increase(&values);
    Some((grown.amount / elapsed_s, grown.resets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_of_a_steadily_growing_counter() {
        assert_eq!(rate(&[(0.0, 100.0), (5.0, 150.0)]), Some((10.0, 0)));
        assert_eq!(
            rate(&[(0.0, 0.0), (1.0, 3.0), (2.0, 4.0), (4.0, 8.0)]),
            Some((2.0, 0))
        );
    }

    #[test]
    fn a_reset_mid_window_counts_from_zero() {
        // 100 → 120 (+20), restart, 5 (+5), 15 (+10).
        let grown = increase(&[100.0, 120.0, 5.0, 15.0]);
        assert_eq!(
            grown,
            Increase {
                amount: 35.0,
                resets: 1
            }
        );
        assert_eq!(
            rate(&[(0.0, 100.0), (10.0, 120.0), (20.0, 5.0), (35.0, 15.0)]),
            Some((1.0, 1))
        );
    }

    #[test]
    fn a_reset_between_two_readings_takes_the_later_value() {
        assert_eq!(rate(&[(0.0, 500.0), (5.0, 20.0)]), Some((4.0, 1)));
    }

    #[test]
    fn too_few_readings_no_time_or_non_finite_values_give_none() {
        assert_eq!(rate(&[]), None);
        assert_eq!(rate(&[(0.0, 1.0)]), None);
        assert_eq!(rate(&[(5.0, 1.0), (5.0, 2.0)]), None);
        assert_eq!(rate(&[(0.0, 1.0), (5.0, f64::NAN)]), None);
        assert_eq!(rate(&[(0.0, 1.0), (5.0, f64::INFINITY)]), None);
    }

    #[test]
    fn an_unchanged_counter_has_rate_zero() {
        assert_eq!(rate(&[(0.0, 7.0), (5.0, 7.0)]), Some((0.0, 0)));
    }
}
