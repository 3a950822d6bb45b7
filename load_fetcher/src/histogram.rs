//! Cumulative Prometheus histograms: differences between two readings and quantiles with
//! the same linear interpolation as PromQL's `histogram_quantile`.

use recommender::snapshot::LatencySummary;

/// One `le` bucket: observations less than or equal to `upper_bound`, cumulative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub upper_bound: f64,
    pub cumulative_count: f64,
}

/// A classic histogram over some window: buckets sorted by upper bound, the last one `+Inf`
/// when the exposition was complete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    buckets: Vec<Bucket>,
}

impl Histogram {
    /// Builds a histogram from `(le, count)` pairs in any order; pairs with the same bound
    /// are added (several series summed into one).
    pub fn from_buckets(pairs: impl IntoIterator<Item = (f64, f64)>) -> Self {
        let mut histogram = Histogram::default();
        for (upper_bound, count) in pairs {
            histogram.add(upper_bound, count);
        }
        histogram
    }

    /// Adds `count` to the bucket with this bound, creating it if needed.
    pub fn add(&mut self, upper_bound: f64, count: f64) {
        match self
            .buckets
            .binary_search_by(|b| b.upper_bound.total_cmp(&upper_bound))
        {
            Ok(i) => self.buckets[i].cumulative_count += count,
            Err(i) => self.buckets.insert(
                i,
                Bucket {
                    upper_bound,
                    cumulative_count: count,
                },
            ),
        }
    }

    /// Adds every bucket of `other` into this one.
    pub fn merge(&mut self, other: &Histogram) {
        for b in &other.buckets {
            self.add(b.upper_bound, b.cumulative_count);
        }
    }

    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Observations in all: the `+Inf` bucket. `None` without one (an incomplete exposition).
    pub fn count(&self) -> Option<f64> {
        self.buckets
            .last()
            .filter(|b| b.upper_bound == f64::INFINITY)
            .map(|b| b.cumulative_count)
    }

    /// Observations between an earlier reading and this later one, bucket by bucket, and
    /// whether a counter went down in between (a restart). After a reset the later reading
    /// is taken as the increase since the restart, as PromQL's `increase` does.
    pub fn since(&self, earlier: &Histogram) -> (Histogram, bool) {
        let reset = self.buckets.iter().any(|b| {
            earlier
                .bucket(b.upper_bound)
                .is_some_and(|e| b.cumulative_count < e)
        }) || earlier.count().unwrap_or(0.0) > self.count().unwrap_or(f64::INFINITY);
        if reset {
            return (self.clone(), true);
        }
        let buckets = self
            .buckets
            .iter()
            .map(|b| Bucket {
                upper_bound: b.upper_bound,
                cumulative_count: b.cumulative_count - earlier.bucket(b.upper_bound).unwrap_or(0.0),
            })
            .collect();
        (Histogram { buckets }, false)
    }

    fn bucket(&self, upper_bound: f64) -> Option<f64> {
        self.buckets
            .iter()
            .find(|b| b.upper_bound == upper_bound)
            .map(|b| b.cumulative_count)
    }

    /// The φ-quantile (0 ≤ φ ≤ 1) by linear interpolation inside the bucket holding the
    /// rank, as `histogram_quantile` does. `None` when it cannot be told: no `+Inf` bucket,
    /// fewer than two buckets, no observations, a non-finite count, or φ outside [0, 1].
    pub fn quantile(&self, phi: f64) -> Option<f64> {
        if !(0.0..=1.0).contains(&phi) || self.buckets.len() < 2 {
            return None;
        }
        // Rates and `increase` extrapolate per bucket and can break monotonicity by a hair;
        // PromQL evens that out the same way.
        let mut buckets = self.buckets.clone();
        let mut running_max = f64::NEG_INFINITY;
        for b in &mut buckets {
            if !b.cumulative_count.is_finite() {
                return None;
            }
            running_max = running_max.max(b.cumulative_count);
            b.cumulative_count = running_max;
        }
        let total = self.count()?;
        if total <= 0.0 {
            return None;
        }
        let rank = phi * total;
        let index = buckets
            .iter()
            .position(|b| b.cumulative_count >= rank)
            .unwrap_or(buckets.len() - 1);
        if index == buckets.len() - 1 {
            // In the +Inf bucket: the best that can be said is the highest finite bound.
            return Some(buckets[buckets.len() - 2].upper_bound);
        }
        let upper = buckets[index].upper_bound;
        if index == 0 && upper <= 0.0 {
            return Some(upper);
        }
        let (lower, below) = if index == 0 {
            (0.0, 0.0)
        } else {
            (
                buckets[index - 1].upper_bound,
                buckets[index - 1].cumulative_count,
            )
        };
        let in_bucket = buckets[index].cumulative_count - below;
        if in_bucket <= 0.0 {
            return Some(upper);
        }
        Some(lower + (upper - lower) * ((rank - below) / in_bucket))
    }

    /// P50, P90, P99 and the count; `None` when the histogram observed nothing.
    pub fn latency_summary(&self) -> Option<LatencySummary> {
        let count = self.count()?;
        Some(LatencySummary {
            p50_s: self.quantile(0.5)?,
            p90_s: self.quantile(0.9)?,
            p99_s: self.quantile(0.99)?,
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn interpolates_linearly_inside_the_bucket_like_histogram_quantile() {
        // 100 observations: 50 in (0, 0.1], 40 in (0.1, 0.5], 10 in (0.5, 1].
        let h = Histogram::from_buckets([(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (INF, 100.0)]);
        assert!(close(h.quantile(0.5).unwrap(), 0.1));
        // rank 25 in the first bucket: 0 + 0.1 * 25/50.
        assert!(close(h.quantile(0.25).unwrap(), 0.05));
        // rank 70: 0.1 + 0.4 * (70-50)/40.
        assert!(close(h.quantile(0.7).unwrap(), 0.3));
        // rank 99: 0.5 + 0.5 * (99-90)/10.
        assert!(close(h.quantile(0.99).unwrap(), 0.95));
        assert_eq!(h.count(), Some(100.0));
    }

    #[test]
    fn a_rank_in_the_inf_bucket_gives_the_highest_finite_bound() {
        let h = Histogram::from_buckets([(0.1, 10.0), (1.0, 20.0), (INF, 100.0)]);
        assert_eq!(h.quantile(0.99), Some(1.0));
        assert_eq!(h.quantile(0.5), Some(1.0));
    }

    #[test]
    fn empty_single_bucket_and_incomplete_histograms_give_none() {
        let empty = Histogram::from_buckets([(0.1, 0.0), (1.0, 0.0), (INF, 0.0)]);
        assert_eq!(empty.quantile(0.5), None);
        assert_eq!(empty.latency_summary(), None);
        assert_eq!(Histogram::default().quantile(0.5), None);
        let only_inf = Histogram::from_buckets([(INF, 10.0)]);
        assert_eq!(only_inf.quantile(0.5), None);
        let no_inf = Histogram::from_buckets([(0.1, 5.0), (1.0, 10.0)]);
        assert_eq!(no_inf.count(), None);
        assert_eq!(no_inf.quantile(0.5), None);
        let h = Histogram::from_buckets([(1.0, 10.0), (INF, 10.0)]);
        assert_eq!(h.quantile(1.5), None);
        assert_eq!(h.quantile(-0.1), None);
    }

    #[test]
    fn one_finite_bucket_interpolates_from_zero() {
        let h = Histogram::from_buckets([(2.0, 10.0), (INF, 10.0)]);
        assert!(close(h.quantile(0.5).unwrap(), 1.0));
        assert!(close(h.quantile(1.0).unwrap(), 2.0));
    }

    #[test]
    fn non_finite_counts_give_none() {
        let h = Histogram::from_buckets([(1.0, f64::NAN), (INF, 10.0)]);
        assert_eq!(h.quantile(0.5), None);
    }

    #[test]
    fn slightly_non_monotonic_buckets_are_evened_out() {
        let h = Histogram::from_buckets([(0.1, 50.0), (0.5, 49.9), (1.0, 100.0), (INF, 100.0)]);
        let p = h.quantile(0.5).unwrap();
        assert!((0.0..=0.5).contains(&p), "{p}");
    }

    #[test]
    fn sums_series_with_the_same_bounds() {
        let mut a = Histogram::from_buckets([(0.1, 1.0), (INF, 2.0)]);
        a.merge(&Histogram::from_buckets([(0.1, 3.0), (INF, 4.0)]));
        assert_eq!(a.count(), Some(6.0));
        assert_eq!(a.buckets()[0].cumulative_count, 4.0);
    }

    #[test]
    fn difference_of_two_readings_and_a_reset_between_them() {
        let first = Histogram::from_buckets([(0.1, 10.0), (1.0, 15.0), (INF, 16.0)]);
        let second = Histogram::from_buckets([(0.1, 30.0), (1.0, 45.0), (INF, 46.0)]);
        let (delta, reset) = second.since(&first);
        assert!(!reset);
        assert_eq!(delta.count(), Some(30.0));
        assert_eq!(delta.buckets()[0].cumulative_count, 20.0);
        // The process restarted: counts start again from zero.
        let restarted = Histogram::from_buckets([(0.1, 2.0), (1.0, 3.0), (INF, 3.0)]);
        let (delta, reset) = restarted.since(&second);
        assert!(reset);
        assert_eq!(delta, restarted);
    }
}
