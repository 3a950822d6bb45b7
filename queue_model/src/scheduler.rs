//! The kube-scheduler model: one pod at a time through the scheduling algorithm, each
//! scheduled pod costing API writes that the client's token bucket (qps, burst) and the
//! apiserver's mutating class must both let through.

use serde::{Deserialize, Serialize};

use crate::error::{QueueModelError, Result, non_negative, positive};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SchedulerLoad {
    /// Pods per second that need scheduling.
    pub pod_arrival_rate: f64,
    /// Pods per second the scheduling algorithm can place when nothing else limits it.
    pub algorithm_rate: f64,
    /// Mutating API requests per scheduled pod (the binding, status updates).
    pub requests_per_pod: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SchedulerSetting {
    /// `--kube-api-qps` / `clientConnection.qps`.
    pub client_qps: f64,
    /// `--kube-api-burst` / `clientConnection.burst`.
    pub client_burst: u32,
    /// Mutating requests per second the apiserver can give this client (∞ if not binding).
    pub apiserver_capacity: f64,
}

/// Which of the three limits sets the scheduling throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SchedulerBottleneck {
    Algorithm,
    ClientQps,
    ApiserverCapacity,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SchedulerPrediction {
    /// Pods per second the scheduler can place at most.
    pub throughput_capacity: f64,
    pub bottleneck: SchedulerBottleneck,
    /// pod_arrival_rate / throughput_capacity.
    pub utilization: f64,
    /// Mutating requests per second the scheduler sends the apiserver.
    pub api_request_rate: f64,
    /// Time a pod stays pending, mean and 99th percentile (M/M/1 on the capacity).
    pub mean_pending_s: f64,
    pub p99_pending_s: f64,
}

impl SchedulerLoad {
    fn validate(&self) -> Result<()> {
        non_negative("pod_arrival_rate", self.pod_arrival_rate)?;
        positive("algorithm_rate", self.algorithm_rate)?;
        positive("requests_per_pod", self.requests_per_pod)?;
        Ok(())
    }
}

impl SchedulerSetting {
    fn validate(&self) -> Result<()> {
        positive("client_qps", self.client_qps)?;
        if self.apiserver_capacity.is_nan() || self.apiserver_capacity <= 0.0 {
            return Err(QueueModelError::InvalidArgument {
                name: "apiserver_capacity",
                value: self.apiserver_capacity,
                reason: "must be greater than zero (infinity when it does not bind)",
            });
        }
        Ok(())
    }
}

/// The most pods per second the scheduler can place, and what limits it.
pub fn capacity(
    load: &SchedulerLoad,
    setting: &SchedulerSetting,
) -> Result<(f64, SchedulerBottleneck)> {
    load.validate()?;
    setting.validate()?;
    let candidates = [
        (load.algorithm_rate, SchedulerBottleneck::Algorithm),
        (
            setting.client_qps / load.requests_per_pod,
            SchedulerBottleneck::ClientQps,
        ),
        (
            setting.apiserver_capacity / load.requests_per_pod,
            SchedulerBottleneck::ApiserverCapacity,
        ),
    ];
    Ok(candidates.into_iter().fold(
        (f64::INFINITY, SchedulerBottleneck::Algorithm),
        |best, c| {
            if c.0 < best.0 { c } else { best }
        },
    ))
}

/// Steady-state prediction; an arrival rate at or above capacity is an error.
pub fn predict(load: &SchedulerLoad, setting: &SchedulerSetting) -> Result<SchedulerPrediction> {
    let (throughput_capacity, bottleneck) = capacity(load, setting)?;
    let lambda = load.pod_arrival_rate;
    if lambda >= throughput_capacity {
        return Err(QueueModelError::Unstable {
            arrival_rate: lambda,
            capacity: throughput_capacity,
        });
    }
    let drain = throughput_capacity - lambda;
    Ok(SchedulerPrediction {
        throughput_capacity,
        bottleneck,
        utilization: lambda / throughput_capacity,
        api_request_rate: lambda * load.requests_per_pod,
        mean_pending_s: 1.0 / drain,
        p99_pending_s: 100f64.ln() / drain,
    })
}

/// Seconds to schedule `pods` created at once (a storm): the token bucket lets `burst`
/// requests through at once and then `qps` per second, while the algorithm and the
/// apiserver each impose their own rate; the slowest stage sets the time.
pub fn storm_clear_time_s(
    load: &SchedulerLoad,
    setting: &SchedulerSetting,
    pods: u32,
) -> Result<f64> {
    capacity(load, setting)?;
    let requests = f64::from(pods) * load.requests_per_pod;
    let client = (requests - f64::from(setting.client_burst)).max(0.0) / setting.client_qps;
    let algorithm = f64::from(pods) / load.algorithm_rate;
    let apiserver = requests / setting.apiserver_capacity;
    Ok(client.max(algorithm).max(apiserver))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rate: f64) -> SchedulerLoad {
        SchedulerLoad {
            pod_arrival_rate: rate,
            algorithm_rate: 300.0,
            requests_per_pod: 1.0,
        }
    }

    fn setting(qps: f64, burst: u32) -> SchedulerSetting {
        SchedulerSetting {
            client_qps: qps,
            client_burst: burst,
            apiserver_capacity: f64::INFINITY,
        }
    }

    #[test]
    fn default_client_qps_binds_before_the_algorithm() {
        let p = predict(&load(40.0), &setting(50.0, 100)).unwrap();
        assert_eq!(p.bottleneck, SchedulerBottleneck::ClientQps);
        assert!((p.throughput_capacity - 50.0).abs() < 1e-12);
        assert!((p.mean_pending_s - 0.1).abs() < 1e-12);
        let raised = predict(&load(40.0), &setting(500.0, 1000)).unwrap();
        assert_eq!(raised.bottleneck, SchedulerBottleneck::Algorithm);
        assert!(raised.p99_pending_s < p.p99_pending_s);
    }

    #[test]
    fn apiserver_capacity_can_bind() {
        let s = SchedulerSetting {
            client_qps: 500.0,
            client_burst: 1000,
            apiserver_capacity: 120.0,
        };
        let l = SchedulerLoad {
            requests_per_pod: 2.0,
            ..load(10.0)
        };
        let (cap, b) = capacity(&l, &s).unwrap();
        assert_eq!(b, SchedulerBottleneck::ApiserverCapacity);
        assert!((cap - 60.0).abs() < 1e-12);
    }

    #[test]
    fn a_storm_drains_at_the_bucket_rate_after_the_burst() {
        let t = storm_clear_time_s(&load(0.0), &setting(50.0, 100), 3000).unwrap();
        assert!((t - 2900.0 / 50.0).abs() < 1e-9, "{t}");
    }

    #[test]
    fn overload_and_bad_input_are_errors() {
        assert!(matches!(
            predict(&load(60.0), &setting(50.0, 100)),
            Err(QueueModelError::Unstable { .. })
        ));
        let e = predict(&load(1.0), &setting(-5.0, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("client_qps"), "{e}");
    }
}
