//! Safety rules: a change must be worth making and safe to make. Step limits cut the
//! search's grids before it runs; the rest decide between change and hold after it.

use serde::{Deserialize, Serialize};

use crate::policy::{ConfidenceLevel, KnobRange, Policy, StepLimits};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Change,
    Hold,
}

/// The grid a knob may take this round: the bounds, within a step of `current`. The
/// bounds win: a current value outside them moves to the nearest bound at once. A decrease
/// factor of 1 keeps the knob from going down at all.
pub fn step_box(current: f64, grid: &KnobRange, limits: &StepLimits) -> KnobRange {
    let lo = if limits.max_decrease_factor > 1.0 {
        (current / limits.max_decrease_factor).min(current - grid.step)
    } else {
        current
    };
    let hi = (current * limits.max_increase_factor).max(current + grid.step);
    let at = |v: f64| KnobRange {
        min: v,
        max: v,
        step: grid.step,
    };
    match grid.within(lo, hi) {
        Some(r) => r,
        None if hi < grid.min => at(grid.min),
        None if lo > grid.max => at(grid.max),
        // Between two grid points with no room either way: the one below.
        None => at(grid.floor(current).unwrap_or(grid.min)),
    }
}

/// Where no setting meets every SLO, the share of the current summed violation a change
/// must remove. Each change restarts components, and past saturation the measured load and
/// CPU per request wander, so taking every slightly less violating setting flapped: on one
/// apiserver at 1.3 x its capacity, within five rounds arak moved it 1 -> 1.5 -> 1.25 cores
/// and its inflight limit 600 -> 770 -> 750 -> 400, rolling it (the only replica) each time.
const VIOLATION_DEADBAND: f64 = 0.2;

/// What the decision looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Situation {
    /// Why the snapshot must not be acted on, if it must not.
    pub blocking: Vec<String>,
    pub confidence: ConfidenceLevel,
    pub time_unix_s: f64,
    /// Length of the window the snapshot's rates and percentiles cover, seconds.
    pub window_s: f64,
    pub last_change_unix_s: Option<f64>,
    /// Summed violation of every constraint at the current and the recommended settings.
    pub current_violation: f64,
    pub recommended_violation: f64,
    pub current_cost: f64,
    pub recommended_cost: f64,
    /// Whether any knob differs from the current value.
    pub changes: bool,
    /// Whether any knob would go below its current value.
    pub lowers: bool,
}

/// Change, or hold with every reason that applies.
pub fn decide(s: &Situation, policy: &Policy) -> (Action, Vec<String>) {
    let mut reasons: Vec<String> = s
        .blocking
        .iter()
        .map(|b| format!("snapshot not actionable: {b}"))
        .collect();
    let min = policy.safety.min_confidence;
    if s.confidence < min {
        reasons.push(format!(
            "confidence {:?} is below the policy's {:?}",
            s.confidence, min
        ));
    }
    if let Some(last) = s.last_change_unix_s {
        let since = s.time_unix_s - last;
        if since < policy.safety.cooldown_s {
            reasons.push(format!(
                "cooldown: last change {since:.0} s ago, {:.0} s required",
                policy.safety.cooldown_s
            ));
        }
        // A window that reaches back before the change mixes the old settings with the
        // restart's dip in load and its start-up CPU; acting on it flaps (seen: 250m -> 500m
        // -> 250m under steady load). A second of slack absorbs scrape and clock jitter.
        if since + 1.0 < s.window_s {
            reasons.push(format!(
                "settling: the {:.0} s window still covers the change made {since:.0} s ago",
                s.window_s
            ));
        }
    }
    if !s.changes {
        reasons.push("the recommended settings are the current ones".into());
    } else if s.current_violation == 0.0 {
        // Up fast, down slow (as the HPA's scale-down stabilisation): under a steady load the
        // measured CPU per request still wanders (±30% on a busy node), and lowering what
        // the last change raised on one low reading undoes it (seen: 500m -> 750m -> 500m
        // under one load). While every SLO is met, taking capacity away can wait.
        if let Some(last) = s.last_change_unix_s.filter(|_| s.lowers) {
            let since = s.time_unix_s - last;
            let delay = policy.safety.scale_down_delay_s;
            if since < delay {
                reasons.push(format!(
                    "scale-down delay: last change {since:.0} s ago, {delay:.0} s required before lowering while every SLO is met"
                ));
            }
        }
        let saving = (s.current_cost - s.recommended_cost) / s.current_cost;
        let needed = policy.safety.deadband_saving_share;
        if saving < needed {
            reasons.push(format!(
                "deadband: the current settings meet every SLO and the change saves {:.1}% of cost, less than {:.1}%",
                100.0 * saving,
                100.0 * needed
            ));
        }
    } else if s.recommended_violation > s.current_violation * (1.0 - VIOLATION_DEADBAND) {
        reasons.push(format!(
            "no setting within the bounds and step limits misses the constraints by {:.0}% less than the current one",
            100.0 * VIOLATION_DEADBAND
        ));
    }
    let action = if reasons.is_empty() {
        Action::Change
    } else {
        Action::Hold
    };
    (action, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/examples/policy.yaml");

    fn situation() -> Situation {
        Situation {
            blocking: vec![],
            confidence: ConfidenceLevel::High,
            time_unix_s: 10_000.0,
            window_s: 300.0,
            last_change_unix_s: Some(0.0),
            current_violation: 0.0,
            recommended_violation: 0.0,
            current_cost: 10.0,
            recommended_cost: 8.0,
            changes: true,
            lowers: true,
        }
    }

    #[test]
    fn each_rule_holds_with_its_reason() {
        let p = Policy::from_yaml(EXAMPLE).unwrap();
        assert_eq!(decide(&situation(), &p).0, Action::Change);
        type Change = fn(&mut Situation);
        let cases: [(Change, &str); 7] = [
            (|s| s.blocking.push("stale".into()), "not actionable"),
            (|s| s.confidence = ConfidenceLevel::Low, "confidence"),
            (|s| s.last_change_unix_s = Some(9_900.0), "cooldown"),
            (|s| s.last_change_unix_s = Some(9_900.0), "settling"),
            (|s| s.recommended_cost = 9.9, "deadband"),
            (|s| s.changes = false, "current ones"),
            (|s| s.last_change_unix_s = Some(9_000.0), "scale-down delay"),
        ];
        for (change, reason) in cases {
            let mut s = situation();
            change(&mut s);
            let (action, reasons) = decide(&s, &p);
            assert_eq!(action, Action::Hold);
            assert!(reasons.iter().any(|r| r.contains(reason)), "{reasons:?}");
        }
        // The delay is for lowering only, and only while the SLOs are met.
        let mut s = situation();
        s.last_change_unix_s = Some(9_000.0);
        s.lowers = false;
        assert_eq!(decide(&s, &p).0, Action::Change);
        s.lowers = true;
        s.current_violation = 1.0;
        assert_eq!(decide(&s, &p).0, Action::Change);
        // Fixing a violation may cost more.
        let mut s = situation();
        s.current_violation = 1.0;
        s.recommended_cost = 20.0;
        assert_eq!(decide(&s, &p).0, Action::Change);
    }

    #[test]
    fn past_saturation_only_a_clear_improvement_is_worth_a_change() {
        let p = Policy::from_yaml(EXAMPLE).unwrap();
        let mut s = situation();
        s.current_violation = 0.5;
        for (recommended, action) in [
            (0.5, Action::Hold),
            (0.45, Action::Hold),
            (0.41, Action::Hold),
            (0.39, Action::Change),
            (0.0, Action::Change),
        ] {
            s.recommended_violation = recommended;
            let (got, reasons) = decide(&s, &p);
            assert_eq!(got, action, "{recommended}: {reasons:?}");
            if action == Action::Hold {
                assert!(
                    reasons.iter().any(|r| r.contains("by 20% less")),
                    "{reasons:?}"
                );
            }
        }
    }

    #[test]
    fn steps_are_limited_but_bounds_win() {
        let grid = KnobRange {
            min: 0.5,
            max: 16.0,
            step: 0.25,
        };
        let limits = StepLimits::default();
        let b = step_box(4.0, &grid, &limits);
        assert_eq!((b.min, b.max), (2.0, 8.0));
        let b = step_box(0.0, &grid, &limits);
        assert_eq!((b.min, b.max), (0.5, 0.5));
        let b = step_box(40.0, &grid, &limits);
        assert_eq!((b.min, b.max), (16.0, 16.0));
        let q = KnobRange {
            min: 0.0,
            max: 200.0,
            step: 25.0,
        };
        assert_eq!(step_box(0.0, &q, &limits).max, 25.0);
        // A factor of 1 never lowers, not even by the one step any other factor allows.
        let raise_only = StepLimits {
            max_decrease_factor: 1.0,
            ..limits
        };
        assert_eq!(step_box(4.0, &grid, &raise_only).min, 4.0);
        let barely = StepLimits {
            max_decrease_factor: 1.01,
            ..limits
        };
        assert_eq!(step_box(1.0, &grid, &barely).min, 0.75);
    }
}
