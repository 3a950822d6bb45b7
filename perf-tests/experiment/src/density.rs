//! Reads `stress-test density`'s JSON report: ClusterLoader2's PodStartupLatency
//! (`pod_startup_latency_ms.create_to_run`, milliseconds) and SchedulingThroughput
//! (`scheduling_throughput`, pods per second).

use serde_json::Value;

use crate::model::DensityResult;

/// Fills `into` from the report; a report without `complete: true` is a failure (pods
/// missed the timeout), with the counts as the reason.
pub fn read(report: &Value, into: &mut DensityResult) {
    let startup = &report["pod_startup_latency_ms"]["create_to_run"];
    into.pod_startup_p50_s = startup["p50"].as_f64().map(|ms| ms / 1000.0);
    into.pod_startup_p99_s = startup["p99"].as_f64().map(|ms| ms / 1000.0);
    let throughput = &report["scheduling_throughput"];
    into.throughput_p50 = throughput["p50"].as_f64();
    into.throughput_p99 = throughput["p99"].as_f64();
    into.throughput_max = throughput["max"].as_f64();
    into.ok = report["complete"].as_bool() == Some(true);
    if !into.ok {
        into.reason = Some(format!(
            "incomplete: {} of {} pods Running",
            report["running"], report["pods"]
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_startup_in_seconds_and_throughput() {
        let report = json!({
            "pods": 100, "running": 100, "complete": true,
            "pod_startup_latency_ms": {
                "create_to_schedule": {"count": 100, "p50": 100.0, "p90": 1.0, "p99": 200.0, "max": 1.0},
                "create_to_run": {"count": 100, "p50": 800.0, "p90": 900.0, "p99": 1500.0, "max": 1600.0}
            },
            "scheduling_throughput": {"interval_s": 1.0, "p50": 20.0, "p90": 24.0, "p99": 25.0, "max": 26.5}
        });
        let mut d = DensityResult::default();
        read(&report, &mut d);
        assert!(d.ok);
        assert_eq!(d.pod_startup_p50_s, Some(0.8));
        assert_eq!(d.pod_startup_p99_s, Some(1.5));
        assert_eq!(d.throughput_p50, Some(20.0));
        assert_eq!(d.throughput_p99, Some(25.0));
        assert_eq!(d.throughput_max, Some(26.5));
    }

    #[test]
    fn an_incomplete_run_is_a_failure_with_the_counts() {
        let mut d = DensityResult::default();
        read(
            &json!({"pods": 300, "running": 120, "complete": false}),
            &mut d,
        );
        assert!(!d.ok);
        assert_eq!(
            d.reason.as_deref(),
            Some("incomplete: 120 of 300 pods Running")
        );
        assert_eq!(d.pod_startup_p99_s, None);
    }
}
