//! Medians and bootstrap intervals of the median over a handful of repetitions, and when two
//! configurations can be told apart.

/// Resamples per bootstrap interval.
pub const RESAMPLES: usize = 2000;
/// The bootstrap's seed: the same runs always give the same intervals.
const SEED: u64 = 0x5eed_a2a4;

/// Median and its bootstrap 95% interval, plus the repetitions' range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    /// 2.5% and 97.5% quantiles of the resampled medians.
    pub lo: f64,
    pub hi: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// Whether the two intervals share a point: then the data cannot order the two.
    pub fn overlaps(&self, other: &Summary) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }

    /// Whether the data order the two: intervals apart, each from at least two repetitions
    /// (one repetition's interval is a point and would separate anything).
    pub fn separable(&self, other: &Summary) -> bool {
        self.n >= 2 && other.n >= 2 && !self.overlaps(other)
    }
}

/// The median of sorted values; of an even count, the mean of the middle two.
fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// splitmix64: a tiny, well-mixed generator, enough to pick resample indices.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// None without finite values. With one value the interval is that value: one repetition
/// says nothing about the spread, and the report shows n next to it.
pub fn summarise(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let mut rng = SplitMix(SEED);
    let mut medians = Vec::with_capacity(RESAMPLES);
    let mut sample = vec![0.0; n];
    for _ in 0..RESAMPLES {
        for s in sample.iter_mut() {
            *s = v[rng.below(n)];
        }
        sample.sort_by(f64::total_cmp);
        medians.push(median_sorted(&sample));
    }
    medians.sort_by(f64::total_cmp);
    let at = |q: f64| medians[((q * RESAMPLES as f64) as usize).min(RESAMPLES - 1)];
    Some(Summary {
        median: median_sorted(&v),
        lo: at(0.025),
        hi: at(0.975),
        min: v[0],
        max: v[n - 1],
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(summarise(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(summarise(&[4.0, 1.0]).unwrap().median, 2.5);
        assert_eq!(
            summarise(&[f64::NAN, 5.0]).map(|s| (s.median, s.n)),
            Some((5.0, 1))
        );
        assert_eq!(summarise(&[]), None);
    }

    #[test]
    fn the_interval_holds_the_median_inside_the_range_and_is_reproducible() {
        let v = [10.0, 12.0, 11.0, 30.0, 9.0, 10.5, 11.5];
        let s = summarise(&v).unwrap();
        assert!(s.min <= s.lo && s.lo <= s.median && s.median <= s.hi && s.hi <= s.max);
        assert_eq!(summarise(&v), Some(s));
        // One outlier of seven barely moves the median's interval.
        assert!(s.hi < 20.0, "{s:?}");
    }

    #[test]
    fn one_value_has_a_point_interval() {
        let s = summarise(&[7.0]).unwrap();
        assert_eq!((s.lo, s.median, s.hi, s.n), (7.0, 7.0, 7.0, 1));
    }

    #[test]
    fn far_apart_samples_separate_and_close_ones_do_not() {
        let a = summarise(&[1.0, 1.1, 0.9, 1.05, 0.95]).unwrap();
        let b = summarise(&[2.0, 2.1, 1.9, 2.05, 1.95]).unwrap();
        let c = summarise(&[1.0, 2.0, 0.8, 1.9, 1.2]).unwrap();
        assert!(!a.overlaps(&b) && a.separable(&b));
        assert!(a.overlaps(&c) && b.overlaps(&c));
        assert!(!a.separable(&c));
        let (one, other) = (summarise(&[1.0]).unwrap(), summarise(&[5.0]).unwrap());
        assert!(!one.overlaps(&other) && !one.separable(&other));
    }
}
