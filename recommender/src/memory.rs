//! Memory per replica: the observed peak plus headroom, and more for every request the
//! recommended limits admit beyond the most ever seen at once. Never below the peak.

use serde::{Deserialize, Serialize};

use crate::policy::{KnobRange, MemoryPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemorySizing {
    /// Highest resident memory seen over the window and the history, bytes.
    pub peak_bytes: Option<f64>,
    /// Most requests seen executing or queued at once, both classes.
    pub observed_inflight_max: f64,
    /// What the replica has now: kept when the peak is unknown.
    pub current_bytes: f64,
    /// Allowed values: the policy's bounds within the node.
    pub grid: KnobRange,
    pub policy: MemoryPolicy,
}

impl MemorySizing {
    /// Bytes for a replica admitting `admitted` requests at once, and whether that fits
    /// the grid. A peak above the grid is returned as is: less would invite an OOM kill.
    pub fn bytes(&self, admitted: f64) -> (f64, bool) {
        let Some(peak) = self.peak_bytes else {
            return (self.current_bytes, true);
        };
        let extra = (admitted - self.observed_inflight_max).max(0.0);
        let wanted = peak * (1.0 + self.policy.headroom_share)
            + self.policy.bytes_per_inflight_request * extra;
        match self.grid.ceil(wanted) {
            Some(v) => (v.max(peak), true),
            None => (self.grid.max.max(peak), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    fn sizing(peak: Option<f64>, max_gib: f64) -> MemorySizing {
        MemorySizing {
            peak_bytes: peak,
            observed_inflight_max: 100.0,
            current_bytes: 3.0 * GIB,
            grid: KnobRange {
                min: GIB,
                max: max_gib * GIB,
                step: GIB / 4.0,
            },
            policy: MemoryPolicy::default(),
        }
    }

    #[test]
    fn headroom_grows_with_the_limits_and_never_drops_below_the_peak() {
        let s = sizing(Some(2.0 * GIB), 16.0);
        let (small, ok) = s.bytes(50.0);
        assert!(ok && (2.5 * GIB..3.0 * GIB).contains(&small), "{small}");
        let (big, _) = s.bytes(2100.0);
        assert!(big >= small + 1.9 * GIB, "{big}");
        let (capped, ok) = sizing(Some(10.0 * GIB), 8.0).bytes(0.0);
        assert!(!ok && capped == 10.0 * GIB);
        assert_eq!(sizing(None, 8.0).bytes(1e6), (3.0 * GIB, true));
    }
}
