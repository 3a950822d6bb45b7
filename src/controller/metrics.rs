//! arak's own metrics, served on `/metrics` in the OpenMetrics text format.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label pairs; the label values are few (replicas, knobs, stages), never request data.
type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub fetch_duration: Histogram,
    pub recommend_duration: Histogram,
    /// Failures by stage: fetch, current, recommend, apply, status.
    pub errors: Family<Labels, Counter>,
    /// Knob values by replica, knob and `kind` (current or recommended).
    pub knob: Family<Labels, FloatGauge>,
    /// P99 by replica, class and `source` (predicted or observed).
    pub p99: Family<Labels, FloatGauge>,
    /// The last window's prediction error, by replica, class and quantity (relative for
    /// P99 and CPU, absolute for the rejected share).
    pub model_error: Family<Labels, FloatGauge>,
    pub applies: Counter,
    pub rollbacks: Counter,
    /// Rounds that held, by reason category.
    pub holds: Family<Labels, Counter>,
    /// 1 while this instance holds the lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("arak");
        // Fetches take from milliseconds to the Prometheus timeout; rounds up to seconds.
        let fetch_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let recommend_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let m = Metrics {
            registry: Registry::default(),
            fetch_duration,
            recommend_duration,
            errors: Family::default(),
            knob: Family::default(),
            p99: Family::default(),
            model_error: Family::default(),
            applies: Counter::default(),
            rollbacks: Counter::default(),
            holds: Family::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "fetch_duration_seconds",
            "Time to read one LoadSnapshot",
            m.fetch_duration.clone(),
        );
        registry.register(
            "recommend_duration_seconds",
            "Time of one recommendation round",
            m.recommend_duration.clone(),
        );
        registry.register("errors", "Failures by stage", m.errors.clone());
        registry.register(
            "knob_value",
            "Current and recommended value of each knob per replica",
            m.knob.clone(),
        );
        registry.register(
            "p99_seconds",
            "Predicted (for the running settings) and observed P99 latency per replica and class",
            m.p99.clone(),
        );
        registry.register(
            "model_error",
            "Prediction error of the last window by quantity: (predicted - observed) / observed for p99_seconds and cpu_cores, predicted - observed for rejection",
            m.model_error.clone(),
        );
        registry.register("applies", "Changes applied", m.applies.clone());
        registry.register(
            "rollbacks",
            "Changes rolled back after a failed check",
            m.rollbacks.clone(),
        );
        registry.register("holds", "Rounds that held, by reason", m.holds.clone());
        registry.register(
            "leader",
            "1 while this instance holds the leader lease",
            m.leader.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn error(&self, stage: &str) {
        self.errors
            .get_or_create(&vec![("stage", stage.to_owned())])
            .inc();
    }

    pub fn hold(&self, reason: &str) {
        self.holds
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
    }

    pub fn set_knob(&self, replica: &str, knob: &str, kind: &'static str, value: f64) {
        self.knob
            .get_or_create(&vec![
                ("replica", replica.to_owned()),
                ("knob", knob.to_owned()),
                ("kind", kind.to_owned()),
            ])
            .set(value);
    }

    pub fn set_p99(&self, replica: &str, class: &str, source: &'static str, value: f64) {
        self.p99
            .get_or_create(&vec![
                ("replica", replica.to_owned()),
                ("class", class.to_owned()),
                ("source", source.to_owned()),
            ])
            .set(value);
    }

    pub fn set_model_error(&self, replica: &str, class: &str, quantity: &str, value: f64) {
        self.model_error
            .get_or_create(&vec![
                ("replica", replica.to_owned()),
                ("class", class.to_owned()),
                ("quantity", quantity.to_owned()),
            ])
            .set(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed_with_the_prefix() {
        let m = Metrics::default();
        m.hold("cooldown");
        m.set_knob("apiserver-0", "max_requests_inflight", "recommended", 600.0);
        m.applies.inc();
        let text = m.encode();
        assert!(
            text.contains(r#"arak_holds_total{reason="cooldown"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"arak_knob_value{replica="apiserver-0",knob="max_requests_inflight",kind="recommended"} 600"#),
            "{text}"
        );
        assert!(text.contains("arak_applies_total 1"), "{text}");
        assert!(text.contains("# EOF"), "{text}");
    }
}
