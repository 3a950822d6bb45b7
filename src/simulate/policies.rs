//! The three ways of running the control plane that the day compares.

use recommender::{ApiserverSettings, ClientSettings, Policy};
use serde::Serialize;

use super::world::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Kubernetes' defaults, never changed.
    Native,
    /// Over-provisioned once and never changed.
    Static,
    /// Starts from the defaults; the recommender changes them every interval it decides to.
    Arak,
}

pub const ALL: [PolicyKind; 3] = [PolicyKind::Native, PolicyKind::Static, PolicyKind::Arak];

impl PolicyKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Static => "static",
            Self::Arak => "arak",
        }
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Where each policy starts. Native: kube-apiserver's 400/200 inflight with APF room for 50
/// waiting requests per class, client-go's scheduler 50/100 and controller-manager 20/30, and
/// 4 cores per apiserver (a common request for a mid-sized control plane; Kubernetes sets
/// none). Static: 2000/1000, 200/400, 200/300, and every core of the node.
pub fn initial_settings(kind: PolicyKind, policy: &Policy) -> Settings {
    let client = |cpu_cores, client_qps, client_burst| ClientSettings {
        cpu_cores,
        memory_bytes: GIB,
        client_qps,
        client_burst,
    };
    match kind {
        PolicyKind::Native | PolicyKind::Arak => Settings {
            apiservers: policy
                .apiservers
                .iter()
                .map(|_| ApiserverSettings {
                    cpu_cores: 4.0,
                    memory_bytes: 8.0 * GIB,
                    max_requests_inflight: 400,
                    max_mutating_requests_inflight: 200,
                    queue_length: 300,
                })
                .collect(),
            scheduler: client(1.0, 50.0, 100),
            controller_manager: client(1.0, 20.0, 30),
        },
        PolicyKind::Static => Settings {
            apiservers: policy
                .apiservers
                .iter()
                .map(|p| ApiserverSettings {
                    cpu_cores: p.node_allocatable.cpu_cores,
                    memory_bytes: p.node_allocatable.memory_bytes,
                    max_requests_inflight: 2000,
                    max_mutating_requests_inflight: 1000,
                    queue_length: 300,
                })
                .collect(),
            scheduler: client(2.0, 200.0, 400),
            controller_manager: client(2.0, 200.0, 300),
        },
    }
}
