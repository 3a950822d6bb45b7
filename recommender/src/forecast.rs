//! Forecasts of a rate series: latest value, EWMA, Holt (level and trend) and additive
//! Holt-Winters (level, trend and season), each with a normal prediction interval whose
//! width follows the method's h-step error variance. The round plans for an upper quantile.

use serde::{Deserialize, Serialize};

use crate::policy::{ForecastMethod, ForecastPolicy};

/// The forecast of one series `horizon_s` ahead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The method used: the policy's, or a simpler one when the history is too short.
    pub method: ForecastMethod,
    pub point: f64,
    /// Central prediction interval whose upper end is the planning quantile.
    pub lower: f64,
    pub upper: f64,
    /// What the round plans for: the upper end, never negative.
    pub plan: f64,
    /// Usable (present) samples the forecast is built on.
    pub samples: usize,
    /// Error of forecasts made before the last window, against what it then measured.
    pub last_window_error: Option<ForecastError>,
    /// Why a simpler method or no interval was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForecastError {
    pub samples: usize,
    pub mean_absolute_error: f64,
    /// Mean of |error| / actual over the samples whose actual is not zero.
    pub mean_absolute_percentage_error: Option<f64>,
    /// Share of actuals that fell inside the prediction interval.
    pub within_interval_share: f64,
}

/// Forecasts `series` (one value per `step_s`, `None` where missing) `policy.horizon_s`
/// ahead; the error is measured by refitting without the last `window_steps` values.
pub fn forecast(
    series: &[Option<f64>],
    step_s: f64,
    window_steps: usize,
    policy: &ForecastPolicy,
) -> Forecast {
    let samples = series.iter().flatten().count();
    let horizon = ((policy.horizon_s / step_s).round() as usize).max(1);
    let season = ((policy.season_s / step_s).round() as usize).max(1);
    let (method, note) = usable_method(policy.method, series.len(), season, samples);
    let z = normal_quantile(policy.quantile);
    let Some(fit) = Smoother::fit(series, method, policy, season) else {
        return Forecast {
            method,
            point: 0.0,
            lower: 0.0,
            upper: 0.0,
            plan: 0.0,
            samples,
            last_window_error: None,
            note: Some("no samples: planning for zero".into()),
        };
    };
    let point = fit.predict(horizon);
    let spread = z * fit.sigma * fit.variance_factor(horizon).sqrt();
    let last_window_error = last_window_error(series, window_steps, method, policy, season, z);
    Forecast {
        method,
        point,
        lower: point - spread,
        upper: point + spread,
        plan: (point + spread).max(0.0),
        samples,
        last_window_error,
        note,
    }
}

/// Falls back to simpler methods when the history cannot support the chosen one.
fn usable_method(
    wanted: ForecastMethod,
    len: usize,
    season: usize,
    samples: usize,
) -> (ForecastMethod, Option<String>) {
    if samples < 3 && wanted != ForecastMethod::Latest {
        return (
            ForecastMethod::Latest,
            Some(format!("{samples} samples: latest value")),
        );
    }
    if wanted == ForecastMethod::HoltWinters && len < 2 * season {
        return (
            ForecastMethod::Holt,
            Some(format!(
                "{len} steps is less than two seasons of {season}: Holt without the season"
            )),
        );
    }
    (wanted, None)
}

fn last_window_error(
    series: &[Option<f64>],
    window_steps: usize,
    method: ForecastMethod,
    policy: &ForecastPolicy,
    season: usize,
    z: f64,
) -> Option<ForecastError> {
    if series.len() < 4 {
        return None;
    }
    let k = window_steps.clamp(1, series.len() / 2);
    let (train, test) = series.split_at(series.len() - k);
    let (method, _) = usable_method(method, train.len(), season, train.iter().flatten().count());
    let fit = Smoother::fit(train, method, policy, season)?;
    let (mut abs, mut pct, mut pct_n, mut inside, mut n) = (0.0, 0.0, 0usize, 0usize, 0usize);
    for (h, actual) in test.iter().enumerate() {
        let Some(actual) = *actual else { continue };
        let predicted = fit.predict(h + 1);
        let spread = z * fit.sigma * fit.variance_factor(h + 1).sqrt();
        let error = (actual - predicted).abs();
        abs += error;
        if actual != 0.0 {
            pct += error / actual.abs();
            pct_n += 1;
        }
        inside += usize::from(error <= spread);
        n += 1;
    }
    (n > 0).then(|| ForecastError {
        samples: n,
        mean_absolute_error: abs / n as f64,
        mean_absolute_percentage_error: (pct_n > 0).then(|| pct / pct_n as f64),
        within_interval_share: inside as f64 / n as f64,
    })
}

/// Exponential smoothing state after a pass over the series.
struct Smoother {
    method: ForecastMethod,
    alpha: f64,
    beta: f64,
    gamma: f64,
    level: f64,
    trend: f64,
    /// Additive seasonal offsets, indexed by step modulo the season; empty without a season.
    season: Vec<f64>,
    /// Steps seen, to index the season.
    t: usize,
    /// Scale of the one-step-ahead errors, robust to a level shift (see [`robust_sigma`]).
    sigma: f64,
}

impl Smoother {
    fn fit(
        series: &[Option<f64>],
        method: ForecastMethod,
        policy: &ForecastPolicy,
        season_len: usize,
    ) -> Option<Self> {
        let first = series.iter().position(Option::is_some)?;
        let mut s = Smoother {
            method,
            alpha: policy.level_smoothing,
            beta: policy.trend_smoothing,
            gamma: policy.season_smoothing,
            level: series[first]?,
            trend: 0.0,
            season: Vec::new(),
            t: first + 1,
            sigma: 0.0,
        };
        if method == ForecastMethod::HoltWinters {
            s.start_season(series, season_len);
        }
        let mut errors = Vec::with_capacity(series.len());
        for y in &series[s.t..] {
            let predicted = s.predict(1);
            // A missing value is taken to be what the model expected: the state moves on.
            let observed = y.unwrap_or(predicted);
            if y.is_some() {
                errors.push((observed - predicted).abs());
            }
            s.update(observed);
        }
        s.sigma = robust_sigma(&mut errors);
        Some(s)
    }

    /// Level and trend from the first two seasons' means, offsets from the first season.
    fn start_season(&mut self, series: &[Option<f64>], m: usize) {
        let mean = |part: &[Option<f64>]| {
            let present: Vec<f64> = part.iter().flatten().copied().collect();
            present.iter().sum::<f64>() / present.len().max(1) as f64
        };
        let (first, second) = (mean(&series[..m]), mean(&series[m..2 * m]));
        self.level = first;
        self.trend = (second - first) / m as f64;
        self.season = series[..m]
            .iter()
            .map(|y| y.map_or(0.0, |y| y - first))
            .collect();
        self.t = m;
    }

    fn season_at(&self, t: usize) -> f64 {
        if self.season.is_empty() {
            0.0
        } else {
            self.season[t % self.season.len()]
        }
    }

    fn predict(&self, h: usize) -> f64 {
        match self.method {
            ForecastMethod::Latest | ForecastMethod::Ewma => self.level,
            ForecastMethod::Holt => self.level + h as f64 * self.trend,
            ForecastMethod::HoltWinters => {
                self.level + h as f64 * self.trend + self.season_at(self.t + h - 1)
            }
        }
    }

    fn update(&mut self, y: f64) {
        let (a, b, g) = (self.alpha, self.beta, self.gamma);
        match self.method {
            ForecastMethod::Latest => self.level = y,
            ForecastMethod::Ewma => self.level = a * y + (1.0 - a) * self.level,
            ForecastMethod::Holt => {
                let level = a * y + (1.0 - a) * (self.level + self.trend);
                self.trend = b * (level - self.level) + (1.0 - b) * self.trend;
                self.level = level;
            }
            ForecastMethod::HoltWinters => {
                let offset = self.season_at(self.t);
                let level = a * (y - offset) + (1.0 - a) * (self.level + self.trend);
                self.trend = b * (level - self.level) + (1.0 - b) * self.trend;
                let m = self.season.len();
                self.season[self.t % m] = g * (y - level) + (1.0 - g) * offset;
                self.level = level;
            }
        }
        self.t += 1;
    }

    /// h-step error variance over the one-step variance (Hyndman & Athanasopoulos, table
    /// 8.8; Holt-Winters takes Holt's, leaving out the season's smaller share).
    fn variance_factor(&self, h: usize) -> f64 {
        let (a, b, h) = (self.alpha, self.beta, h as f64);
        match self.method {
            ForecastMethod::Latest => h,
            ForecastMethod::Ewma => 1.0 + a * a * (h - 1.0),
            ForecastMethod::Holt | ForecastMethod::HoltWinters => {
                1.0 + (h - 1.0) * (a * a + a * b * h + b * b * h * (2.0 * h - 1.0) / 6.0)
            }
        }
    }
}

/// The root mean square of the one-step errors, leaving out those beyond
/// [`OUTLIER_SIGMAS`] robust standard deviations (1.4826 × median |e|). A step in the load
/// gives the smoother a few huge errors while it catches up; counted, they widened the
/// interval for the whole history after the step, and arak planned 1.3–1.7× the load that
/// followed it. The median alone would overstate light-tailed noise (a wiggle's median |e|
/// is nearer its amplitude than a normal's), so it only decides what is an outlier.
fn robust_sigma(abs_errors: &mut [f64]) -> f64 {
    if abs_errors.is_empty() {
        return 0.0;
    }
    abs_errors.sort_by(f64::total_cmp);
    let n = abs_errors.len();
    let median = if n % 2 == 1 {
        abs_errors[n / 2]
    } else {
        0.5 * (abs_errors[n / 2 - 1] + abs_errors[n / 2])
    };
    // Φ⁻¹(3/4) = 0.6745: the median of |e| for e ~ N(0, σ²) is 0.6745 σ.
    let cut = OUTLIER_SIGMAS * median / 0.674_489_750_196_081_7;
    let kept: Vec<f64> = abs_errors.iter().copied().filter(|e| *e <= cut).collect();
    (kept.iter().map(|e| e * e).sum::<f64>() / kept.len() as f64).sqrt()
}

/// Errors beyond this many robust standard deviations are a level shift, not noise: a
/// normal error lies beyond 4σ once in 16,000.
const OUTLIER_SIGMAS: f64 = 4.0;

/// z with Φ(z) = q, by bisection on Φ(z) = erfc(−z/√2)/2.
pub(crate) fn normal_quantile(q: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0f64, 10.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if 0.5 * libm::erfc(-mid / std::f64::consts::SQRT_2) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(method: ForecastMethod) -> ForecastPolicy {
        ForecastPolicy {
            method,
            horizon_s: 60.0,
            season_s: 600.0,
            ..ForecastPolicy::default()
        }
    }

    #[test]
    fn normal_quantiles() {
        assert!(normal_quantile(0.5).abs() < 1e-9);
        assert!((normal_quantile(0.9) - 1.281_551_565_5).abs() < 1e-6);
        assert!((normal_quantile(0.975) - 1.959_963_985).abs() < 1e-6);
    }

    #[test]
    fn holt_follows_a_trend_that_ewma_lags() {
        let ramp: Vec<Option<f64>> = (0..60).map(|t| Some(100.0 + 5.0 * t as f64)).collect();
        let holt = forecast(&ramp, 60.0, 5, &policy(ForecastMethod::Holt));
        let ewma = forecast(&ramp, 60.0, 5, &policy(ForecastMethod::Ewma));
        // Next step is 400.
        assert!((holt.point - 400.0).abs() < 2.0, "{holt:?}");
        assert!(ewma.point < 396.0, "{ewma:?}");
        assert!(holt.last_window_error.unwrap().mean_absolute_error < 2.0);
    }

    #[test]
    fn holt_winters_learns_the_season_and_falls_back_without_two() {
        let wave = |t: usize| 500.0 + 200.0 * if t % 10 < 5 { 1.0 } else { -1.0 };
        let series: Vec<Option<f64>> = (0..80).map(|t| Some(wave(t))).collect();
        let hw = forecast(&series, 60.0, 10, &policy(ForecastMethod::HoltWinters));
        assert_eq!(hw.method, ForecastMethod::HoltWinters);
        assert!((hw.point - wave(80)).abs() < 20.0, "{hw:?}");
        let short = forecast(&series[..15], 60.0, 3, &policy(ForecastMethod::HoltWinters));
        assert_eq!(short.method, ForecastMethod::Holt);
        assert!(short.note.is_some());
    }

    #[test]
    fn noise_widens_the_interval_and_the_plan_sits_above_the_point() {
        let noisy: Vec<Option<f64>> = (0..100)
            .map(|t| Some(1000.0 + if t % 2 == 0 { 50.0 } else { -50.0 }))
            .collect();
        let f = forecast(&noisy, 60.0, 5, &policy(ForecastMethod::Ewma));
        assert!(f.plan > f.point + 30.0 && f.lower < f.point, "{f:?}");
        let err = f.last_window_error.unwrap();
        assert!(err.within_interval_share > 0.5, "{err:?}");
    }

    #[test]
    fn a_level_shift_does_not_widen_the_interval_after_it() {
        // Two hours at 1000 ± 20, then a step to 2000 ± 20 an hour ago.
        let jitter = |t: usize| if t.is_multiple_of(2) { 20.0 } else { -20.0 };
        let series: Vec<Option<f64>> = (0..240)
            .map(|t| Some(if t < 180 { 1000.0 } else { 2000.0 } + jitter(t)))
            .collect();
        let f = forecast(&series, 30.0, 2, &policy(ForecastMethod::Holt));
        assert!((f.point - 2000.0).abs() < 60.0, "{f:?}");
        // The root mean square of the errors would put the plan near 2× the load; the noise
        // after the step is ±20.
        assert!(
            f.plan < 2000.0 * 1.1,
            "planned {} for a load of 2000",
            f.plan
        );
        assert!(f.plan > f.point, "{f:?}");
    }

    #[test]
    fn robust_sigma_of_normal_errors_and_of_a_few_outliers() {
        let mut errs: Vec<f64> = (1..=999)
            .map(|i| normal_quantile(0.5 + 0.5 * i as f64 / 1000.0))
            .collect();
        assert!((robust_sigma(&mut errs) - 1.0).abs() < 0.01);
        errs.extend([1e6; 50]);
        assert!(robust_sigma(&mut errs) < 1.1);
        // A wiggle's errors are light-tailed: all kept, their root mean square as before.
        let mut wiggle: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.1).sin().abs()).collect();
        let rms = (wiggle.iter().map(|e| e * e).sum::<f64>() / 1000.0).sqrt();
        assert!((robust_sigma(&mut wiggle) - rms).abs() < 1e-12);
        assert_eq!(robust_sigma(&mut []), 0.0);
    }

    #[test]
    fn gaps_and_empty_series() {
        let gappy = [Some(10.0), None, Some(10.0), None, Some(10.0)];
        let f = forecast(&gappy, 60.0, 1, &policy(ForecastMethod::Holt));
        assert!((f.point - 10.0).abs() < 1e-9);
        assert_eq!(f.samples, 3);
        let none = forecast(&[None, None], 60.0, 1, &policy(ForecastMethod::Holt));
        assert_eq!(none.plan, 0.0);
        assert!(none.note.is_some());
    }
}
