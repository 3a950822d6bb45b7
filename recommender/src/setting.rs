//! The knobs of one replica: what is running now and what the recommender proposes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use queue_model::apiserver::{ApiserverSetting, ClassLimits};
use queue_model::{MAX_CORES, MIN_CORES};

use crate::error::{RecommenderError, Result};
use crate::policy::{NodeAllocatable, Policy, ReplicaPlacement};

/// kube-apiserver knobs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiserverSettings {
    pub cpu_cores: f64,
    pub memory_bytes: f64,
    /// `--max-requests-inflight`: the readOnly concurrency limit.
    pub max_requests_inflight: u32,
    /// `--max-mutating-requests-inflight`.
    pub max_mutating_requests_inflight: u32,
    /// APF room for one flow's waiting requests per class: the level's hand size × its
    /// queue length limit (a flow only ever queues in the queues of its hand).
    pub queue_length: u32,
}

impl ApiserverSettings {
    /// What the model solves for these settings with `cores` for the queues: each class's
    /// inflight flag as its concurrency limit, the APF room as its queue.
    pub fn queue_setting(&self, cores: f64) -> ApiserverSetting {
        ApiserverSetting {
            cores,
            read_only: ClassLimits {
                concurrency_limit: self.max_requests_inflight,
                queue_length: self.queue_length,
            },
            mutating: ClassLimits {
                concurrency_limit: self.max_mutating_requests_inflight,
                queue_length: self.queue_length,
            },
        }
    }
}

/// Knobs of a component that talks to the apiserver through a client-go token bucket
/// (kube-scheduler, kube-controller-manager).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    pub cpu_cores: f64,
    pub memory_bytes: f64,
    /// `--kube-api-qps`.
    pub client_qps: f64,
    /// `--kube-api-burst`.
    pub client_burst: u32,
}

impl ApiserverSettings {
    /// Every knob by its name (as in the settings' YAML and the tuning's status).
    pub fn knobs(&self) -> [(&'static str, f64); 5] {
        [
            ("cpu_cores", self.cpu_cores),
            ("memory_bytes", self.memory_bytes),
            (
                "max_requests_inflight",
                f64::from(self.max_requests_inflight),
            ),
            (
                "max_mutating_requests_inflight",
                f64::from(self.max_mutating_requests_inflight),
            ),
            ("queue_length", f64::from(self.queue_length)),
        ]
    }

    /// Whether any knob of `self` is below the same knob of `other`: capacity taken away.
    pub fn lowers_any(&self, other: &Self) -> bool {
        self.cpu_cores < other.cpu_cores
            || self.memory_bytes < other.memory_bytes
            || self.max_requests_inflight < other.max_requests_inflight
            || self.max_mutating_requests_inflight < other.max_mutating_requests_inflight
            || self.queue_length < other.queue_length
    }
}

impl ClientSettings {
    /// Every knob by its name (as in the settings' YAML and the tuning's status).
    pub fn knobs(&self) -> [(&'static str, f64); 4] {
        [
            ("cpu_cores", self.cpu_cores),
            ("memory_bytes", self.memory_bytes),
            ("client_qps", self.client_qps),
            ("client_burst", f64::from(self.client_burst)),
        ]
    }

    /// Whether any knob of `self` is below the same knob of `other`.
    pub fn lowers_any(&self, other: &Self) -> bool {
        self.cpu_cores < other.cpu_cores
            || self.memory_bytes < other.memory_bytes
            || self.client_qps < other.client_qps
            || self.client_burst < other.client_burst
    }
}

/// What runs now, keyed by replica name. The CLI reads it from the policy's `current`
/// section or a `--current` file; the updater will fill it from the live objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrentSettings {
    /// When arak last changed anything, for the cooldown; absent if never.
    #[serde(default)]
    pub last_change_unix_s: Option<f64>,
    #[serde(default)]
    pub apiservers: BTreeMap<String, ApiserverSettings>,
    #[serde(default)]
    pub schedulers: BTreeMap<String, ClientSettings>,
    #[serde(default)]
    pub controller_managers: BTreeMap<String, ClientSettings>,
    /// When arak last raised each knob, by [`knob_key`]: a knob raised less than the
    /// policy's `scale_down_delay_s` ago is not lowered (see `recommend`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raised_unix_s: BTreeMap<String, f64>,
}

/// How [`CurrentSettings::raised_unix_s`] names one knob of one replica.
pub fn knob_key(replica: &str, knob: &str) -> String {
    format!("{replica}/{knob}")
}

impl ApiserverSettings {
    /// Requests the settings let in at once, executing or waiting, over both classes.
    pub fn total_inflight(&self) -> u32 {
        self.max_requests_inflight
            .saturating_add(self.max_mutating_requests_inflight)
            .saturating_add(self.queue_length.saturating_mul(2))
    }
}

impl CurrentSettings {
    /// Parses current settings from YAML (or JSON, which YAML includes). Check them against
    /// the policy with [`CurrentSettings::validate`].
    pub fn from_yaml(text: &str) -> Result<Self> {
        Ok(serde_norway::from_str(text)?)
    }

    /// Every replica of the policy has settings, and each is one a running replica can
    /// have: requests fit the node (the scheduler would not place the pod otherwise), and
    /// limits of 0, which Kubernetes reads as "unlimited", are refused since no model sizes them.
    pub fn validate(&self, policy: &Policy) -> Result<()> {
        let times = self
            .last_change_unix_s
            .map(|t| ("last_change_unix_s".to_owned(), t))
            .into_iter()
            .chain(
                self.raised_unix_s
                    .iter()
                    .map(|(k, &t)| (format!("raised_unix_s.{k}"), t)),
            );
        for (field, t) in times {
            if !(t.is_finite() && t >= 0.0) {
                return Err(RecommenderError::Current {
                    field,
                    reason: format!("{t} is not a time since the Unix epoch"),
                });
            }
        }
        for p in &policy.apiservers {
            let at = |field: &str| format!("apiservers.{}.{field}", p.name);
            let s = entry(&self.apiservers, p)?;
            resources(p, at, s.cpu_cores, s.memory_bytes)?;
            for (field, v) in [
                ("max_requests_inflight", s.max_requests_inflight),
                (
                    "max_mutating_requests_inflight",
                    s.max_mutating_requests_inflight,
                ),
            ] {
                if v == 0 {
                    return Err(invalid(
                        at(field),
                        "0 means unlimited, which the model cannot size; give the limit in force"
                            .into(),
                    ));
                }
            }
        }
        for (list, placements, settings) in [
            ("schedulers", &policy.schedulers, &self.schedulers),
            (
                "controller_managers",
                &policy.controller_managers,
                &self.controller_managers,
            ),
        ] {
            for p in placements {
                let at = |field: &str| format!("{list}.{}.{field}", p.name);
                let s = entry(settings, p)?;
                resources(p, at, s.cpu_cores, s.memory_bytes)?;
                if !(s.client_qps.is_finite() && s.client_qps > 0.0) {
                    return Err(invalid(
                        at("client_qps"),
                        format!(
                            "{} is not a positive number of requests per second",
                            s.client_qps
                        ),
                    ));
                }
                if s.client_burst == 0 {
                    return Err(invalid(
                        at("client_burst"),
                        "0 lets no request through the token bucket".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn entry<'a, T>(settings: &'a BTreeMap<String, T>, p: &ReplicaPlacement) -> Result<&'a T> {
    settings
        .get(&p.name)
        .ok_or_else(|| RecommenderError::CurrentMissing {
            replica: p.name.clone(),
        })
}

fn invalid(field: String, reason: String) -> RecommenderError {
    RecommenderError::Current { field, reason }
}

/// CPU and memory within what the replica's node can give it.
fn resources(
    p: &ReplicaPlacement,
    at: impl Fn(&str) -> String,
    cpu_cores: f64,
    memory_bytes: f64,
) -> Result<()> {
    let NodeAllocatable {
        cpu_cores: node_cores,
        memory_bytes: node_bytes,
    } = p.node_allocatable;
    // The model cannot evaluate more than MAX_CORES, whatever the node has.
    let most_cores = node_cores.min(MAX_CORES);
    if !(cpu_cores.is_finite() && (MIN_CORES..=most_cores).contains(&cpu_cores)) {
        return Err(invalid(
            at("cpu_cores"),
            format!(
                "{cpu_cores} is outside [{MIN_CORES}, {most_cores}]: the node's allocatable \
                 (or the model's limit) bounds it; millicores typed as cores?"
            ),
        ));
    }
    if !(memory_bytes.is_finite() && memory_bytes > 0.0 && memory_bytes <= node_bytes) {
        return Err(invalid(
            at("memory_bytes"),
            format!("{memory_bytes} is outside (0, {node_bytes}], the node's allocatable"),
        ));
    }
    Ok(())
}
