//! The knobs of one replica: what is running now and what the recommender proposes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Result;

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
    /// Parses current settings from YAML (or JSON, which YAML includes).
    pub fn from_yaml(text: &str) -> Result<Self> {
        Ok(serde_norway::from_str(text)?)
    }
}
