//! Target arrival rate over time: constant, steps and ramps, chained.
//!
//! Syntax (segments joined with `+`):
//! - `steps:100,500,1000@60s` — 100 req/s for 60 s, then 500 for 60 s, then 1000 for 60 s;
//! - `ramp:100-2000@300s` — linear from 100 to 2000 req/s over 300 s;
//! - `const:500@2m` — 500 req/s for two minutes;
//! - e.g. `ramp:0-1000@60s+const:1000@5m`.
//!
//! Durations take `ms`, `s`, `m` or `h`. The rate is piecewise linear in time, so its integral
//! (the expected number of arrivals) has a closed-form inverse, which `Arrivals` uses.

use std::time::Duration;

/// Highest rate a profile or `--rps` may ask for: far beyond what one generator process can
/// send, so only a typo (`1e12`) reaches it, and it would otherwise spin the arrival loop.
pub const MAX_RPS: f64 = 100_000.0;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    #[error(
        "bad profile {spec:?}: {reason}; expected e.g. `steps:100,500@60s`, `ramp:100-2000@300s`, `const:500@2m`, joined with `+`"
    )]
    Syntax { spec: String, reason: String },
    #[error("bad duration {0:?}: expected a number followed by ms, s, m or h (e.g. 90s, 5m)")]
    Duration(String),
}

/// One stretch of the profile over which the rate changes linearly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    pub duration_s: f64,
    pub start_rps: f64,
    pub end_rps: f64,
}

impl Segment {
    fn expected_arrivals(&self) -> f64 {
        0.5 * (self.start_rps + self.end_rps) * self.duration_s
    }

    /// Time into the segment at which `x` arrivals are expected, for 0 <= x <= total.
    fn time_of_arrivals(&self, x: f64) -> f64 {
        let a = self.start_rps;
        let b = (self.end_rps - self.start_rps) / self.duration_s;
        // Solve a·t + b·t²/2 = x in the form that stays accurate when b is 0 or tiny.
        let root = (a * a + 2.0 * b * x).max(0.0).sqrt();
        let denom = a + root;
        if denom <= 0.0 {
            return self.duration_s;
        }
        (2.0 * x / denom).clamp(0.0, self.duration_s)
    }
}

/// A piecewise-linear arrival rate, `rate(t)` in requests per second.
#[derive(Clone, Debug, PartialEq)]
pub struct RateProfile {
    segments: Vec<Segment>,
}

impl RateProfile {
    pub fn constant(rps: f64, duration: Duration) -> Self {
        RateProfile {
            segments: vec![Segment {
                duration_s: duration.as_secs_f64(),
                start_rps: rps,
                end_rps: rps,
            }],
        }
    }

    pub fn parse(spec: &str) -> Result<Self, ProfileError> {
        let syntax = |reason: &str| ProfileError::Syntax {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let mut segments = Vec::new();
        for part in spec.split('+').map(str::trim) {
            let (shape, rest) = part
                .split_once(':')
                .ok_or_else(|| syntax(&format!("segment {part:?} has no `shape:`")))?;
            let (values, dur) = rest
                .rsplit_once('@')
                .ok_or_else(|| syntax(&format!("segment {part:?} has no `@duration`")))?;
            let duration_s = parse_duration(dur)?.as_secs_f64();
            if duration_s <= 0.0 {
                return Err(syntax(&format!("segment {part:?} has zero duration")));
            }
            let rate = |s: &str| -> Result<f64, ProfileError> {
                let r: f64 = s
                    .trim()
                    .parse()
                    .map_err(|_| syntax(&format!("{s:?} is not a rate")))?;
                if !(0.0..=MAX_RPS).contains(&r) {
                    return Err(syntax(&format!(
                        "rate {s:?} must be between 0 and {MAX_RPS}"
                    )));
                }
                Ok(r)
            };
            match shape.trim() {
                "steps" => {
                    for v in values.split(',') {
                        let r = rate(v)?;
                        segments.push(Segment {
                            duration_s,
                            start_rps: r,
                            end_rps: r,
                        });
                    }
                }
                "const" => {
                    let r = rate(values)?;
                    segments.push(Segment {
                        duration_s,
                        start_rps: r,
                        end_rps: r,
                    });
                }
                "ramp" => {
                    let (from, to) = values
                        .split_once('-')
                        .ok_or_else(|| syntax(&format!("ramp {values:?} is not FROM-TO")))?;
                    segments.push(Segment {
                        duration_s,
                        start_rps: rate(from)?,
                        end_rps: rate(to)?,
                    });
                }
                other => return Err(syntax(&format!("unknown shape {other:?}"))),
            }
        }
        let profile = RateProfile { segments };
        if profile.peak_rps() == 0.0 {
            return Err(syntax("every rate is 0, so it would send nothing"));
        }
        Ok(profile)
    }

    /// Cuts the profile at `duration`, or holds its last rate until then.
    pub fn fit_to(mut self, duration: Duration) -> Self {
        let want = duration.as_secs_f64();
        let mut kept = Vec::new();
        let mut t = 0.0;
        for seg in self.segments.drain(..) {
            if t >= want {
                break;
            }
            if t + seg.duration_s <= want {
                t += seg.duration_s;
                kept.push(seg);
            } else {
                let d = want - t;
                let end = seg.start_rps + (seg.end_rps - seg.start_rps) * d / seg.duration_s;
                kept.push(Segment {
                    duration_s: d,
                    start_rps: seg.start_rps,
                    end_rps: end,
                });
                t = want;
            }
        }
        if t < want {
            let last = kept.last().map_or(0.0, |s: &Segment| s.end_rps);
            kept.push(Segment {
                duration_s: want - t,
                start_rps: last,
                end_rps: last,
            });
        }
        RateProfile { segments: kept }
    }

    #[cfg(test)]
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.segments.iter().map(|s| s.duration_s).sum())
    }

    pub fn expected_arrivals(&self) -> f64 {
        self.segments.iter().map(Segment::expected_arrivals).sum()
    }

    pub fn peak_rps(&self) -> f64 {
        self.segments
            .iter()
            .map(|s| s.start_rps.max(s.end_rps))
            .fold(0.0, f64::max)
    }

    /// Compact text form, e.g. `ramp:0-100@10s+const:100@50s`.
    pub fn describe(&self) -> String {
        self.segments
            .iter()
            .map(|s| {
                if s.start_rps == s.end_rps {
                    format!("const:{}@{}s", s.start_rps, s.duration_s)
                } else {
                    format!("ramp:{}-{}@{}s", s.start_rps, s.end_rps, s.duration_s)
                }
            })
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// Walks a profile forward, turning cumulative expected arrivals into times.
///
/// Queries must be non-decreasing; each is O(1) amortised.
#[derive(Clone, Debug)]
pub struct ArrivalClock {
    profile: RateProfile,
    segment: usize,
    /// Start time and expected arrivals before the current segment.
    segment_start_s: f64,
    segment_start_arrivals: f64,
}

impl ArrivalClock {
    pub fn new(profile: RateProfile) -> Self {
        ArrivalClock {
            profile,
            segment: 0,
            segment_start_s: 0.0,
            segment_start_arrivals: 0.0,
        }
    }

    /// The time (s from start) by which `arrivals` arrivals are expected, or `None` past the end.
    pub fn time_of(&mut self, arrivals: f64) -> Option<f64> {
        loop {
            let seg = self.profile.segments.get(self.segment)?;
            let in_segment = seg.expected_arrivals();
            let x = arrivals - self.segment_start_arrivals;
            if x < in_segment {
                return Some(self.segment_start_s + seg.time_of_arrivals(x.max(0.0)));
            }
            self.segment += 1;
            self.segment_start_s += seg.duration_s;
            self.segment_start_arrivals += in_segment;
        }
    }
}

/// Parses `500ms`, `90s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, ProfileError> {
    let s = s.trim();
    let err = || ProfileError::Duration(s.to_owned());
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let scale = match unit {
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    // Also refuses durations too long to represent (`1e30h`) instead of panicking.
    Duration::try_from_secs_f64(n * scale).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(d: f64, a: f64, b: f64) -> Segment {
        Segment {
            duration_s: d,
            start_rps: a,
            end_rps: b,
        }
    }

    #[test]
    fn parses_steps_ramps_and_chains() {
        let p = RateProfile::parse("steps:100,500,1000@60s").unwrap();
        assert_eq!(
            p.segments(),
            &[
                seg(60.0, 100.0, 100.0),
                seg(60.0, 500.0, 500.0),
                seg(60.0, 1000.0, 1000.0)
            ]
        );
        assert_eq!(p.duration(), Duration::from_secs(180));

        let p = RateProfile::parse("ramp:100-2000@300s").unwrap();
        assert_eq!(p.segments(), &[seg(300.0, 100.0, 2000.0)]);
        assert_eq!(p.expected_arrivals(), 0.5 * 2100.0 * 300.0);
        assert_eq!(p.peak_rps(), 2000.0);

        let p = RateProfile::parse("ramp:0-1000@1m + const:1000@500ms").unwrap();
        assert_eq!(
            p.segments(),
            &[seg(60.0, 0.0, 1000.0), seg(0.5, 1000.0, 1000.0)]
        );
        assert_eq!(RateProfile::parse(&p.describe()).unwrap(), p);
    }

    #[test]
    fn refuses_malformed_profiles() {
        for bad in [
            "",
            "steps:100",
            "steps:100,x@60s",
            "ramp:100@60s",
            "wave:1-2@3s",
            "const:-5@1s",
            "const:5@0s",
            "const:5@10q",
            "steps:1@1s+",
        ] {
            assert!(RateProfile::parse(bad).is_err(), "{bad:?} accepted");
        }
        let msg = RateProfile::parse("wave:1-2@3s").unwrap_err().to_string();
        assert!(msg.contains("wave"), "{msg}");
    }

    #[test]
    fn refuses_rates_out_of_range_and_silent_profiles() {
        let msg = RateProfile::parse("const:1e12@1s").unwrap_err().to_string();
        assert!(msg.contains("1e12") && msg.contains("100000"), "{msg}");
        assert!(RateProfile::parse("ramp:0-inf@1s").is_err());
        assert!(
            RateProfile::parse("const:100000@1s").is_ok(),
            "the cap itself is allowed"
        );
        let msg = RateProfile::parse("steps:0,0@5s").unwrap_err().to_string();
        assert!(msg.contains("send nothing"), "{msg}");
        // A silent stretch next to a loud one is a real profile.
        assert!(RateProfile::parse("const:0@5s+const:10@5s").is_ok());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("s").is_err());
        // Too long to represent: refused, not a panic.
        assert!(parse_duration("1e30h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn fit_to_cuts_or_extends() {
        let p = RateProfile::parse("ramp:0-100@10s").unwrap();
        let cut = p.clone().fit_to(Duration::from_secs(5));
        assert_eq!(cut.segments(), &[seg(5.0, 0.0, 50.0)]);
        let longer = p.fit_to(Duration::from_secs(15));
        assert_eq!(
            longer.segments(),
            &[seg(10.0, 0.0, 100.0), seg(5.0, 100.0, 100.0)]
        );
    }

    #[test]
    fn clock_inverts_the_cumulative_rate() {
        let p =
            RateProfile::parse("const:100@10s+ramp:100-300@10s+const:0@5s+const:50@2s").unwrap();
        let mut clock = ArrivalClock::new(p);
        assert_eq!(clock.time_of(0.0), Some(0.0));
        assert!((clock.time_of(500.0).unwrap() - 5.0).abs() < 1e-9);
        // Ramp: 1000 + 100 t + 10 t² arrivals by 10 + t.
        let t = 4.0;
        let x = 1000.0 + 100.0 * t + 10.0 * t * t;
        assert!((clock.time_of(x).unwrap() - 14.0).abs() < 1e-9);
        // The silent segment is skipped: the next arrival after the ramp's 3000 is in the last.
        assert!((clock.time_of(3000.0).unwrap() - 25.0).abs() < 1e-9);
        assert!((clock.time_of(3050.0).unwrap() - 26.0).abs() < 1e-9);
        assert_eq!(clock.time_of(3100.0), None);
    }
}
