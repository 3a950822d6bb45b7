//! Open-loop arrival times: when each request is due, independent of any response.
//!
//! Both processes work in "expected arrivals" Λ and map back to time through the profile
//! (`ArrivalClock`): constant spacing puts the k-th arrival at Λ = k, Poisson adds
//! exponential(1) gaps in Λ, which is a non-homogeneous Poisson process with the profile's rate.

use rand::{Rng, RngExt};

use crate::profile::{ArrivalClock, RateProfile};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArrivalProcess {
    /// Exponential gaps: the arrivals of many independent clients.
    Poisson,
    /// Evenly spaced at the current rate.
    Constant,
}

/// Yields scheduled send times in seconds from the start of the run, in order.
pub struct Arrivals<R> {
    clock: ArrivalClock,
    process: ArrivalProcess,
    rng: R,
    next: f64,
}

impl<R: Rng> Arrivals<R> {
    pub fn new(profile: RateProfile, process: ArrivalProcess, rng: R) -> Self {
        let mut a = Arrivals {
            clock: ArrivalClock::new(profile),
            process,
            rng,
            next: 0.0,
        };
        if process == ArrivalProcess::Poisson {
            a.next = a.exponential();
        }
        a
    }

    fn exponential(&mut self) -> f64 {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u: f64 = self.rng.random();
        -(1.0 - u).ln()
    }
}

impl<R: Rng> Iterator for Arrivals<R> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        let t = self.clock.time_of(self.next)?;
        self.next += match self.process {
            ArrivalProcess::Constant => 1.0,
            ArrivalProcess::Poisson => self.exponential(),
        };
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;
    use rand_pcg::Pcg64Mcg;

    use super::*;

    fn rng(seed: u64) -> Pcg64Mcg {
        Pcg64Mcg::seed_from_u64(seed)
    }

    #[test]
    fn constant_spacing_is_exact() {
        let p = RateProfile::constant(200.0, Duration::from_secs(20));
        let times: Vec<f64> = Arrivals::new(p, ArrivalProcess::Constant, rng(1)).collect();
        assert_eq!(times.len(), 4000);
        for (k, t) in times.iter().enumerate() {
            assert!((t - k as f64 / 200.0).abs() < 1e-9, "arrival {k} at {t}");
        }
    }

    #[test]
    fn constant_spacing_follows_steps() {
        let p = RateProfile::parse("steps:10,100@1s").unwrap();
        let times: Vec<f64> = Arrivals::new(p, ArrivalProcess::Constant, rng(1)).collect();
        assert_eq!(times.len(), 110);
        assert!((times[1] - times[0] - 0.1).abs() < 1e-9);
        assert!((times[101] - times[100] - 0.01).abs() < 1e-9);
    }

    #[test]
    fn poisson_mean_rate_and_gap_spread_match() {
        let rate = 1000.0;
        let p = RateProfile::constant(rate, Duration::from_secs(100));
        let times: Vec<f64> = Arrivals::new(p, ArrivalProcess::Poisson, rng(7)).collect();
        let n = times.len() as f64;
        // Expected 100 000 with standard deviation ~316: allow 5 sigma.
        assert!((n - 100_000.0).abs() < 1_600.0, "{n} arrivals");
        let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g >= 0.0));
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((mean * rate - 1.0).abs() < 0.02, "mean gap {mean}");
        // Exponential gaps: coefficient of variation 1.
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.03,
            "cv {}",
            var.sqrt() / mean
        );
        // Counts in 1 s windows are Poisson: variance ≈ mean.
        let mut counts = vec![0.0f64; 100];
        for t in &times {
            counts[(*t as usize).min(99)] += 1.0;
        }
        let cm = counts.iter().sum::<f64>() / 100.0;
        let cv = counts.iter().map(|c| (c - cm).powi(2)).sum::<f64>() / 99.0;
        assert!(cv / cm > 0.6 && cv / cm < 1.5, "dispersion {}", cv / cm);
    }

    #[test]
    fn poisson_follows_a_ramp() {
        let p = RateProfile::parse("ramp:0-2000@20s").unwrap();
        let times: Vec<f64> = Arrivals::new(p, ArrivalProcess::Poisson, rng(3)).collect();
        let first_half = times.iter().filter(|t| **t < 10.0).count() as f64;
        let second_half = times.len() as f64 - first_half;
        // Expected 5 000 and 15 000.
        assert!((first_half - 5_000.0).abs() < 400.0, "{first_half}");
        assert!((second_half - 15_000.0).abs() < 700.0, "{second_half}");
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn same_seed_same_schedule() {
        let p = RateProfile::constant(50.0, Duration::from_secs(2));
        let a: Vec<f64> = Arrivals::new(p.clone(), ArrivalProcess::Poisson, rng(9)).collect();
        let b: Vec<f64> = Arrivals::new(p, ArrivalProcess::Poisson, rng(9)).collect();
        assert_eq!(a, b);
    }
}
