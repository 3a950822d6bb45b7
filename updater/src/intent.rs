//! The intent annotation: before each step of a roll, what was there, what is wanted and
//! how far it got, on the StatefulSet itself, so a restarted updater can finish or undo it.

use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::{Component, RollTarget};

pub const INTENT_ANNOTATION: &str = "arak.io/intent";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub component: Component,
    pub container: String,
    pub previous: RollTarget,
    pub target: RollTarget,
    pub step: Step,
    pub started_unix_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Step {
    /// The template holds the target; pods from `ordinal` up are (being) replaced.
    Rolling { ordinal: i32 },
    /// The template holds the previous state again; pods are being restored.
    RollingBack,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Rolling { ordinal } => write!(f, "rolling, at ordinal {ordinal}"),
            Step::RollingBack => f.write_str("rolling back"),
        }
    }
}

/// The StatefulSet's intent, if a change is unfinished.
pub fn read(sts: &StatefulSet) -> Result<Option<Intent>> {
    let Some(text) = sts
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INTENT_ANNOTATION))
    else {
        return Ok(None);
    };
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| Error::Intent {
            stateful_set: sts.metadata.name.clone().unwrap_or_default(),
            reason: e.to_string(),
        })
}

pub fn to_annotation(intent: &Intent) -> String {
    serde_json::to_string(intent).expect("an intent always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::CommandLine;
    use crate::plan::ContainerState;

    #[test]
    fn round_trips_through_the_annotation() {
        let state = |value: &str| RollTarget {
            container: ContainerState {
                command_line: CommandLine::new(
                    vec!["kube-apiserver".into()],
                    vec![format!("--max-requests-inflight={value}")],
                ),
                resources: None,
            },
            config_file: None,
            config_hash: None,
        };
        let intent = Intent {
            component: Component::Apiserver,
            container: "kube-apiserver".into(),
            previous: state("400"),
            target: state("600"),
            step: Step::Rolling { ordinal: 2 },
            started_unix_s: 1,
        };
        let mut sts = StatefulSet::default();
        sts.metadata.annotations = Some(
            [(INTENT_ANNOTATION.to_owned(), to_annotation(&intent))]
                .into_iter()
                .collect(),
        );
        assert_eq!(read(&sts).unwrap(), Some(intent));
        assert!(to_annotation(&read(&sts).unwrap().unwrap()).contains("\"phase\":\"rolling\""));
        assert_eq!(read(&StatefulSet::default()).unwrap(), None);
    }
}
