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
    let asked = ((policy.horizon_s / step_s).round() as usize).max(1);
    // A trend is not extrapolated further ahead than the history it was fitted on: a day
    // ahead of an hour's history planned for 600× today's load.
    let horizon = asked.min(series.len().max(1));
    let season = ((policy.season_s / step_s).round() as usize).max(1);
    let (method, mut note) = usable_method(policy.method, series.len(), season, samples);
    if horizon < asked && note.is_none() {
        note = Some(format!(
            "planned {} s ahead, the length of the history, not the {} s asked",
            horizon as f64 * step_s,
            policy.horizon_s
        ));
    }
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
#[derive(Clone)]
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
    /// Fits the series once to learn its noise, and again if that found a level shift:
    /// two one-step errors in a row beyond [`OUTLIER_SIGMAS`] robust standard deviations,
    /// on the same side. The second pass moves the level to the new load there and
    /// restarts the trend at 0; fitted through, the jump would become a trend that runs on
    /// for the whole horizon (a step from 10 to 130 requests/s was planned as 220).
    fn fit(
        series: &[Option<f64>],
        method: ForecastMethod,
        policy: &ForecastPolicy,
        season_len: usize,
    ) -> Option<Self> {
        let first = series.iter().position(Option::is_some)?;
        let mut start = Smoother {
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
            start.start_season(series, season_len);
        }
        let mut s = start.clone();
        let errors = s.pass(series, None);
        // A shift must also move the load by a share of its size: an exact ramp has errors
        // of nearly 0 once the trend is learnt, and its first ones would look like shifts.
        let mut levels: Vec<f64> = series.iter().flatten().map(|y| y.abs()).collect();
        levels.sort_by(f64::total_cmp);
        let cut = outlier_cut(&errors).max(MIN_SHIFT_SHARE * levels[levels.len() / 2]);
        let errors = if (2..=errors.len()).any(|n| two_beyond(&errors[..n], cut)) {
            s = start;
            s.pass(series, Some(cut))
        } else {
            errors
        };
        s.sigma = robust_sigma(&errors);
        Some(s)
    }

    /// Runs the smoother over the series from its state and returns the one-step errors.
    /// With `shift_above`, the second of two errors in a row beyond it on one side moves
    /// the level to the observation and zeroes the trend.
    fn pass(&mut self, series: &[Option<f64>], shift_above: Option<f64>) -> Vec<f64> {
        let mut errors = Vec::with_capacity(series.len());
        for y in &series[self.t..] {
            let predicted = self.predict(1);
            // A missing value is taken to be what the model expected: the state moves on.
            let observed = y.unwrap_or(predicted);
            if y.is_some() {
                errors.push(observed - predicted);
            }
            self.update(observed);
            if let Some(cut) = shift_above
                && y.is_some()
                && two_beyond(&errors, cut)
            {
                self.level = observed - self.season_at(self.t - 1);
                self.trend = 0.0;
            }
        }
        errors
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

/// [`OUTLIER_SIGMAS`] robust standard deviations of the errors: 1.4826 × median |e|, the
/// standard deviation of normal errors with that median. A level shift's few huge errors
/// leave the median alone.
fn outlier_cut(errors: &[f64]) -> f64 {
    let mut abs: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
    if abs.is_empty() {
        return 0.0;
    }
    abs.sort_by(f64::total_cmp);
    let n = abs.len();
    let median = if n % 2 == 1 {
        abs[n / 2]
    } else {
        0.5 * (abs[n / 2 - 1] + abs[n / 2])
    };
    // Φ⁻¹(3/4) = 0.6745: the median of |e| for e ~ N(0, σ²) is 0.6745 σ.
    OUTLIER_SIGMAS * median / 0.674_489_750_196_081_7
}

/// Whether the last two errors lie beyond `cut` on the same side.
fn two_beyond(errors: &[f64], cut: f64) -> bool {
    match errors {
        [.., a, b] => a.abs() > cut && b.abs() > cut && a.signum() == b.signum(),
        _ => false,
    }
}

/// The root mean square of the one-step errors, leaving out those beyond the outlier cut.
/// Counted, the errors of a level shift widened the interval for the whole history after
/// it, and arak planned 1.3–1.7× the load that followed a step. The median alone would
/// overstate light-tailed noise (a wiggle's median |e| is nearer its amplitude than a
/// normal's), so it only decides what is an outlier.
fn robust_sigma(errors: &[f64]) -> f64 {
    let cut = outlier_cut(errors);
    let kept: Vec<f64> = errors.iter().copied().filter(|e| e.abs() <= cut).collect();
    if kept.is_empty() {
        return 0.0;
    }
    (kept.iter().map(|e| e * e).sum::<f64>() / kept.len() as f64).sqrt()
}

/// Errors beyond this many robust standard deviations are a level shift, not noise: a
/// normal error lies beyond 4σ once in 16,000.
const OUTLIER_SIGMAS: f64 = 4.0;

/// Nor is a shift smaller than this share of the series' median.
const MIN_SHIFT_SHARE: f64 = 0.05;

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

    /// `forecast.horizon_s: 86400` on an hour of history planned for 600× today's load.
    #[test]
    fn a_trend_is_not_extrapolated_past_the_length_of_its_history() {
        // An hour at 15 s steps, rising from 100 to about 340 requests/s.
        let hour: Vec<Option<f64>> = (0..240).map(|t| Some(100.0 + t as f64)).collect();
        let ahead = |horizon_s| {
            let p = ForecastPolicy {
                horizon_s,
                ..policy(ForecastMethod::Holt)
            };
            forecast(&hour, 15.0, 4, &p)
        };
        let (hour_ahead, day_ahead) = (ahead(3_600.0), ahead(86_400.0));
        assert_eq!(day_ahead.plan, hour_ahead.plan);
        assert!(day_ahead.plan < 4.0 * 340.0, "{day_ahead:?}");
        let note = day_ahead.note.unwrap();
        assert!(note.contains("3600 s ahead"), "{note}");
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
    fn a_step_is_a_new_level_not_a_trend() {
        // Ten minutes at 10 requests/s, then three at 130, sampled every 15 s; the round
        // plans 300 s ahead. Fitted through, the jump became a trend that doubled the plan.
        let wiggle = |t: usize| [0.5, -0.3, 0.2, -0.4][t % 4];
        let series: Vec<Option<f64>> = (0..52)
            .map(|t| Some(if t < 40 { 10.0 } else { 130.0 } * (1.0 + 0.02 * wiggle(t))))
            .collect();
        let p = ForecastPolicy {
            method: ForecastMethod::Holt,
            horizon_s: 300.0,
            quantile: 0.5,
            ..ForecastPolicy::default()
        };
        let f = forecast(&series, 15.0, 2, &p);
        assert!((f.point - 130.0).abs() < 13.0, "{f:?}");
        assert!(f.plan < 143.0, "{f:?}");
    }

    #[test]
    fn robust_sigma_of_normal_errors_and_of_a_few_outliers() {
        let mut errs: Vec<f64> = (1..=999)
            .map(|i| normal_quantile(0.5 + 0.5 * i as f64 / 1000.0))
            .collect();
        assert!((robust_sigma(&errs) - 1.0).abs() < 0.01);
        errs.extend([1e6; 50]);
        assert!(robust_sigma(&errs) < 1.1);
        // A wiggle's errors are light-tailed: all kept, their root mean square as before.
        let wiggle: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.1).sin()).collect();
        let rms = (wiggle.iter().map(|e| e * e).sum::<f64>() / 1000.0).sqrt();
        assert!((robust_sigma(&wiggle) - rms).abs() < 1e-12);
        assert_eq!(robust_sigma(&[]), 0.0);
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
