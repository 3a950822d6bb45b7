//! What a probe checks and when its result flips: the pure half of readiness and liveness.

use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeAction {
    Http {
        https: bool,
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
}

/// A probe with the kubelet's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeSpec {
    pub fn with_defaults(action: ProbeAction, probe: &k8s_openapi::api::core::v1::Probe) -> Self {
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.and_then(|s| u64::try_from(s).ok()).unwrap_or(default))
        };
        let count = |v: Option<i32>, default: u32| {
            v.and_then(|c| u32::try_from(c).ok())
                .filter(|c| *c > 0)
                .unwrap_or(default)
        };
        Self {
            action,
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Counts consecutive outcomes of one probe for one run of a container.
#[derive(Clone, Debug)]
pub struct ProbeTracker {
    spec: ProbeSpec,
    container_started: Instant,
    last_run: Option<Instant>,
    successes: u32,
    failures: u32,
    passing: bool,
}

impl ProbeTracker {
    /// `passing_initially` is false for readiness (not ready until proven) and true for
    /// liveness (alive until proven dead).
    pub fn new(spec: ProbeSpec, container_started: Instant, passing_initially: bool) -> Self {
        Self {
            spec,
            container_started,
            last_run: None,
            successes: 0,
            failures: 0,
            passing: passing_initially,
        }
    }

    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    pub fn passing(&self) -> bool {
        self.passing
    }

    pub fn due(&self, now: Instant) -> bool {
        if now < self.container_started + self.spec.initial_delay {
            return false;
        }
        match self.last_run {
            None => true,
            Some(last) => now >= last + self.spec.period,
        }
    }

    /// Records one outcome; returns true when it changed `passing`.
    pub fn record(&mut self, succeeded: bool, now: Instant) -> bool {
        self.last_run = Some(now);
        if succeeded {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let next = if self.passing {
            self.failures < self.spec.failure_threshold
        } else {
            self.successes >= self.spec.success_threshold
        };
        let changed = next != self.passing;
        self.passing = next;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            action: ProbeAction::Tcp {
                host: "127.0.0.1".into(),
                port: 1,
            },
            initial_delay: Duration::from_secs(5),
            period: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn waits_for_initial_delay_then_period() {
        let t0 = Instant::now();
        let mut p = ProbeTracker::new(spec(1, 3), t0, false);
        assert!(!p.due(t0 + Duration::from_secs(4)));
        assert!(p.due(t0 + Duration::from_secs(5)));
        p.record(false, t0 + Duration::from_secs(5));
        assert!(!p.due(t0 + Duration::from_secs(6)));
        assert!(p.due(t0 + Duration::from_secs(7)));
    }

    #[test]
    fn readiness_needs_success_threshold_and_drops_after_failure_threshold() {
        let t = Instant::now();
        let mut p = ProbeTracker::new(spec(2, 3), t, false);
        assert!(!p.record(true, t));
        assert!(!p.passing());
        assert!(p.record(true, t));
        assert!(p.passing());
        assert!(!p.record(false, t));
        assert!(!p.record(false, t));
        assert!(p.passing());
        assert!(p.record(false, t));
        assert!(!p.passing());
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t = Instant::now();
        let mut p = ProbeTracker::new(spec(1, 2), t, true);
        p.record(false, t);
        p.record(true, t);
        p.record(false, t);
        assert!(p.passing());
        p.record(false, t);
        assert!(!p.passing());
    }

    #[test]
    fn defaults_match_the_kubelet() {
        let probe = k8s_openapi::api::core::v1::Probe::default();
        let s = ProbeSpec::with_defaults(ProbeAction::Exec { command: vec![] }, &probe);
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        assert_eq!(s.initial_delay, Duration::ZERO);
    }
}
