//! The SLOs the experiment judges by (DESIGN.md section 4: Kubernetes' own) and, after a
//! step in the load, how long the apiservers took to be back within them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// P99 limit per request class, seconds: single-object requests 1 s, LISTs 30 s.
pub const P99_LIMIT_S: [(&str, f64); 3] = [("mutating", 1.0), ("read", 1.0), ("list", 30.0)];
/// Highest share of requests answered 429.
pub const REJECTED_LIMIT: f64 = 1e-4;
/// The windows time-to-adapt is read in, seconds.
pub const WINDOW_S: f64 = 15.0;

/// Whether P99s per class and a 429 share meet the SLOs; a class without requests meets it.
pub fn within(p99_s: &BTreeMap<String, f64>, rejected_share: Option<f64>) -> bool {
    P99_LIMIT_S
        .iter()
        .all(|(class, limit)| p99_s.get(*class).is_none_or(|p| p <= limit))
        && rejected_share.unwrap_or(0.0) <= REJECTED_LIMIT
}

/// One 15-s window after the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloWindow {
    /// End of the window, seconds since the step.
    pub t_s: f64,
    pub p99_s: BTreeMap<String, f64>,
    pub rejected_share: Option<f64>,
    pub within: bool,
}

/// Seconds from the step until the apiservers were back within the SLOs for good: the start
/// of the last run of windows within them that lasts to the end. 0 if no window missed;
/// None if the last window missed (never back).
pub fn time_to_adapt(windows: &[SloWindow]) -> Option<f64> {
    if !windows.last()?.within {
        return None;
    }
    let first_good = windows.iter().rposition(|w| !w.within).map_or(0, |i| i + 1);
    Some((windows[first_good].t_s - WINDOW_S).max(0.0))
}

/// Share of the windows within the SLOs, None without windows.
pub fn attainment(windows: &[SloWindow]) -> Option<f64> {
    (!windows.is_empty())
        .then(|| windows.iter().filter(|w| w.within).count() as f64 / windows.len() as f64)
}

/// Minutes of windows that missed an SLO.
pub fn miss_minutes(windows: &[SloWindow]) -> f64 {
    windows.iter().filter(|w| !w.within).count() as f64 * WINDOW_S / 60.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p99(mutating: f64, list: f64) -> BTreeMap<String, f64> {
        [("mutating".to_owned(), mutating), ("list".to_owned(), list)].into()
    }

    fn w(i: usize, within: bool) -> SloWindow {
        SloWindow {
            t_s: WINDOW_S * (i + 1) as f64,
            p99_s: BTreeMap::new(),
            rejected_share: None,
            within,
        }
    }

    #[test]
    fn slos_per_class_and_for_rejections() {
        assert!(within(&p99(0.9, 20.0), Some(0.0)));
        assert!(!within(&p99(1.1, 0.1), None));
        assert!(!within(&p99(0.1, 31.0), None));
        assert!(!within(&p99(0.1, 0.1), Some(2e-4)));
        assert!(within(&BTreeMap::new(), None), "no requests, no miss");
    }

    #[test]
    fn time_to_adapt_is_the_start_of_the_final_good_run() {
        let windows: Vec<SloWindow> = [false, false, true, false, true, true]
            .iter()
            .enumerate()
            .map(|(i, &ok)| w(i, ok))
            .collect();
        assert_eq!(time_to_adapt(&windows), Some(60.0));
        assert_eq!(miss_minutes(&windows), 0.75);
        assert_eq!(attainment(&windows), Some(0.5));
        assert_eq!(attainment(&[]), None);
        assert_eq!(time_to_adapt(&[w(0, true), w(1, true)]), Some(0.0));
        assert_eq!(time_to_adapt(&[w(0, true), w(1, false)]), None);
        assert_eq!(time_to_adapt(&[]), None);
    }
}
