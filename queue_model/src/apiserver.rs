//! The kube-apiserver model: two request classes sharing C CPU cores.
//!
//! Each class (readOnly, mutating) is admitted up to its concurrency limit, waits in its
//! APF queue up to the queue length, and is rejected (HTTP 429) beyond that. A request
//! needs `cpu_s` of CPU and `non_cpu_s` of other time (etcd, admission, network). With n
//! requests of a class in service and the CPU shared like processor sharing, a request
//! takes max(T + D, n·D / C_k), so the class completes min(n / (T + D), C_k / D) per
//! second: throughput grows with concurrency until the CPU saturates, and past that more
//! concurrency only adds latency. C_k, the CPU a class can use, is what the other class
//! leaves: the other class takes its demand λ·D, but at most its share of the cores in
//! proportion to the two concurrency limits — which is how inflight limits isolate classes.
//! Each class is then an exact birth–death chain with a closed-form solution.

use serde::{Deserialize, Serialize};

use crate::chain::SaturatingChain;
use crate::error::{QueueModelError, Result, at_least_one, non_negative, positive};

/// The two queues kube-apiserver keeps for non-long-running requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RequestClass {
    ReadOnly,
    Mutating,
}

/// Load of one request class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassLoad {
    /// λ, requests per second.
    pub arrival_rate: f64,
    /// D, CPU seconds per request.
    pub cpu_s: f64,
    /// T, seconds per request spent off the CPU (etcd, admission webhooks, network).
    pub non_cpu_s: f64,
}

/// Limits of one request class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClassLimits {
    /// Requests executing at once (`--max-requests-inflight` or APF seats).
    pub concurrency_limit: u32,
    /// Requests allowed to wait (APF queues × queue length); 0 rejects at the limit.
    pub queue_length: u32,
}

/// What the apiserver is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ApiserverLoad {
    pub read_only: ClassLoad,
    pub mutating: ClassLoad,
}

/// The knobs the model is evaluated at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ApiserverSetting {
    /// CPU cores available to the apiserver process.
    pub cores: f64,
    pub read_only: ClassLimits,
    pub mutating: ClassLimits,
}

/// Predicted behaviour of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassPrediction {
    pub throughput: f64,
    /// Probability that a request is rejected with 429.
    pub rejection_probability: f64,
    /// Probability that an accepted request waits in the queue.
    pub p_wait: f64,
    /// Mean number of requests executing or queued.
    pub mean_number: f64,
    pub mean_response_s: f64,
    pub p50_response_s: f64,
    pub p99_response_s: f64,
    /// CPU cores this class may use after the other class took its part.
    pub cpu_available_cores: f64,
}

/// Predicted behaviour of the whole apiserver.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ApiserverPrediction {
    pub read_only: ClassPrediction,
    pub mutating: ClassPrediction,
    /// CPU cores in use: Σ throughput·D.
    pub cpu_used_cores: f64,
    /// cpu_used_cores / cores.
    pub cpu_utilization: f64,
}

impl ClassLoad {
    fn validate(&self, class: RequestClass) -> Result<()> {
        let (rate, cpu, other) = match class {
            RequestClass::ReadOnly => ("read_only.arrival_rate", "read_only.cpu_s", "read_only.non_cpu_s"),
            RequestClass::Mutating => ("mutating.arrival_rate", "mutating.cpu_s", "mutating.non_cpu_s"),
        };
        non_negative(rate, self.arrival_rate)?;
        non_negative(cpu, self.cpu_s)?;
        non_negative(other, self.non_cpu_s)?;
        if self.cpu_s + self.non_cpu_s == 0.0 {
            return Err(QueueModelError::InvalidArgument {
                name: cpu,
                value: 0.0,
                reason: "cpu_s and non_cpu_s are both zero: a request must take some time",
            });
        }
        Ok(())
    }

    /// CPU cores this class asks for: λ·D.
    pub fn cpu_demand_cores(&self) -> f64 {
        self.arrival_rate * self.cpu_s
    }
}

impl ApiserverLoad {
    pub fn validate(&self) -> Result<()> {
        self.read_only.validate(RequestClass::ReadOnly)?;
        self.mutating.validate(RequestClass::Mutating)
    }
}

impl ApiserverSetting {
    pub fn validate(&self) -> Result<()> {
        positive("cores", self.cores)?;
        at_least_one("read_only.concurrency_limit", self.read_only.concurrency_limit)?;
        at_least_one("mutating.concurrency_limit", self.mutating.concurrency_limit)?;
        Ok(())
    }
}

/// The CPU a class may use, given the other class's demand and both limits.
pub fn cpu_available(cores: f64, own_limit: u32, other_limit: u32, other_demand_cores: f64) -> f64 {
    let (own, other) = (f64::from(own_limit), f64::from(other_limit));
    let other_share = cores * other / (own + other);
    cores - other_demand_cores.min(other_share)
}

/// One request class solved as a birth–death chain.
#[derive(Debug, Clone)]
pub struct ClassModel {
    chain: SaturatingChain,
    cpu_available_cores: f64,
}

impl ClassModel {
    /// `cpu_available_cores` comes from [`cpu_available`]; inputs must be validated.
    pub fn new(load: &ClassLoad, limits: &ClassLimits, cpu_available_cores: f64) -> Self {
        let unloaded_s = load.cpu_s + load.non_cpu_s;
        let saturation_rate = if load.cpu_s > 0.0 {
            cpu_available_cores / load.cpu_s
        } else {
            f64::INFINITY
        };
        let capacity = limits.concurrency_limit.saturating_add(limits.queue_length);
        Self {
            chain: SaturatingChain::new(
                load.arrival_rate,
                1.0 / unloaded_s,
                saturation_rate,
                limits.concurrency_limit,
                capacity,
            ),
            cpu_available_cores,
        }
    }

    pub fn rejection_probability(&self) -> f64 {
        self.chain.rejection_probability()
    }

    pub fn throughput(&self) -> f64 {
        self.chain.throughput()
    }

    pub fn mean_response(&self) -> f64 {
        self.chain.mean_response()
    }

    /// P(response ≤ t): the share of accepted requests done within `t` seconds.
    pub fn within(&self, t: f64) -> f64 {
        1.0 - self.chain.response_survival(t)
    }

    pub fn response_percentile(&self, quantile: f64) -> f64 {
        self.chain.response_percentile(quantile)
    }

    pub fn prediction(&self) -> ClassPrediction {
        ClassPrediction {
            throughput: self.chain.throughput(),
            rejection_probability: self.chain.rejection_probability(),
            p_wait: self.chain.wait_probability(),
            mean_number: self.chain.mean_number(),
            mean_response_s: self.chain.mean_response(),
            p50_response_s: self.chain.response_percentile(0.5),
            p99_response_s: self.chain.response_percentile(0.99),
            cpu_available_cores: self.cpu_available_cores,
        }
    }
}

/// Both classes solved for one setting.
#[derive(Debug, Clone)]
pub struct ApiserverModel {
    pub read_only: ClassModel,
    pub mutating: ClassModel,
    load: ApiserverLoad,
    cores: f64,
}

impl ApiserverModel {
    pub fn new(load: &ApiserverLoad, setting: &ApiserverSetting) -> Result<Self> {
        load.validate()?;
        setting.validate()?;
        let (ro, mu) = (&setting.read_only, &setting.mutating);
        let ro_cpu = cpu_available(
            setting.cores,
            ro.concurrency_limit,
            mu.concurrency_limit,
            load.mutating.cpu_demand_cores(),
        );
        let mu_cpu = cpu_available(
            setting.cores,
            mu.concurrency_limit,
            ro.concurrency_limit,
            load.read_only.cpu_demand_cores(),
        );
        Ok(Self {
            read_only: ClassModel::new(&load.read_only, ro, ro_cpu),
            mutating: ClassModel::new(&load.mutating, mu, mu_cpu),
            load: *load,
            cores: setting.cores,
        })
    }

    pub fn prediction(&self) -> ApiserverPrediction {
        let cpu_used_cores = (self.read_only.throughput() * self.load.read_only.cpu_s
            + self.mutating.throughput() * self.load.mutating.cpu_s)
            .min(self.cores);
        ApiserverPrediction {
            read_only: self.read_only.prediction(),
            mutating: self.mutating.prediction(),
            cpu_used_cores,
            cpu_utilization: cpu_used_cores / self.cores,
        }
    }
}

/// Predicts latency, rejection and CPU for one setting.
pub fn predict(load: &ApiserverLoad, setting: &ApiserverSetting) -> Result<ApiserverPrediction> {
    Ok(ApiserverModel::new(load, setting)?.prediction())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(ro_rate: f64, mu_rate: f64) -> ApiserverLoad {
        ApiserverLoad {
            read_only: ClassLoad { arrival_rate: ro_rate, cpu_s: 0.004, non_cpu_s: 0.010 },
            mutating: ClassLoad { arrival_rate: mu_rate, cpu_s: 0.008, non_cpu_s: 0.020 },
        }
    }

    fn setting(cores: f64, ro: u32, mu: u32, queue: u32) -> ApiserverSetting {
        ApiserverSetting {
            cores,
            read_only: ClassLimits { concurrency_limit: ro, queue_length: queue },
            mutating: ClassLimits { concurrency_limit: mu, queue_length: queue },
        }
    }

    #[test]
    fn concurrency_helps_until_the_cpu_saturates_then_only_adds_latency() {
        // 900 read req/s × 4 ms = 3.6 cores asked of 4: CPU-bound near the top.
        let l = load(900.0, 10.0);
        let p = |limit| predict(&l, &setting(4.0, limit, 50, 0)).unwrap().read_only;
        let (small, enough, huge) = (p(5), p(60), p(2000));
        assert!(small.rejection_probability > 0.3, "{small:?}");
        assert!(enough.rejection_probability < small.rejection_probability);
        assert!(enough.throughput > small.throughput);
        // Past saturation, throughput is capped by the cores, not the limit.
        let cap = 4.0 / 0.004;
        assert!(huge.throughput <= cap + 1e-9);
        assert!(huge.p99_response_s >= enough.p99_response_s * 0.999);
    }

    #[test]
    fn overload_rejects_rather_than_diverges() {
        let p = predict(&load(5000.0, 10.0), &setting(4.0, 400, 200, 50)).unwrap();
        assert!(p.read_only.rejection_probability > 0.7, "{:?}", p.read_only);
        assert!(p.read_only.throughput <= 1000.0 + 1e-6);
        assert!(p.cpu_utilization <= 1.0 && p.cpu_utilization > 0.9);
        assert!(p.read_only.p99_response_s.is_finite());
    }

    #[test]
    fn a_flooding_class_cannot_take_the_other_class_share() {
        // Reads ask for 12 cores of 4; mutating has a quarter of the slots, so a quarter of the CPU.
        let p = predict(&load(3000.0, 50.0), &setting(4.0, 300, 100, 0)).unwrap();
        assert!((p.mutating.cpu_available_cores - 1.0).abs() < 1e-9, "{:?}", p.mutating);
        assert!(p.mutating.rejection_probability < 1e-6);
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let e = predict(&load(1.0, 1.0), &setting(0.0, 1, 1, 0)).unwrap_err().to_string();
        assert!(e.contains("cores"), "{e}");
        let e = predict(&load(1.0, 1.0), &setting(1.0, 0, 1, 0)).unwrap_err().to_string();
        assert!(e.contains("read_only.concurrency_limit"), "{e}");
        let mut bad = load(1.0, 1.0);
        bad.mutating.cpu_s = f64::NAN;
        let e = predict(&bad, &setting(1.0, 1, 1, 0)).unwrap_err().to_string();
        assert!(e.contains("mutating.cpu_s"), "{e}");
    }
}
