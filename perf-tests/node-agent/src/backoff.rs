//! Exponential back-off between restarts of a crashing container, as the kubelet does it.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// A container that ran at least this long before exiting starts again without delay
    /// and with its back-off reset.
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// Consecutive quick crashes of one container and the delay before its next start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashBackoff {
    policy: BackoffPolicy,
    quick_crashes: u32,
}

impl CrashBackoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            quick_crashes: 0,
        }
    }

    /// Records an exit after `ran_for` and returns how long to wait before the restart.
    pub fn on_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.reset_after {
            self.quick_crashes = 0;
            return Duration::ZERO;
        }
        let exponent = self.quick_crashes.min(31);
        self.quick_crashes = self.quick_crashes.saturating_add(1);
        self.policy
            .initial
            .saturating_mul(1u32 << exponent)
            .min(self.policy.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = CrashBackoff::new(policy());
        let delays: Vec<u64> = (0..8)
            .map(|_| b.on_exit(Duration::from_secs(1)).as_secs())
            .collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn a_long_run_resets() {
        let mut b = CrashBackoff::new(policy());
        b.on_exit(Duration::from_secs(1));
        b.on_exit(Duration::from_secs(1));
        assert_eq!(b.on_exit(Duration::from_secs(600)), Duration::ZERO);
        assert_eq!(b.on_exit(Duration::from_secs(1)), Duration::from_secs(10));
    }

    #[test]
    fn never_overflows() {
        let mut b = CrashBackoff::new(policy());
        for _ in 0..100 {
            assert!(b.on_exit(Duration::ZERO) <= Duration::from_secs(300));
        }
    }
}
