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
    /// The template holds the target; pods above `ordinal` are replaced, and `ordinal` is
    /// being replaced or, while the partition is still above it, is the next to be.
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

impl Intent {
    /// What to leave behind when stopping once pod `ordinal` has rolled: the same change
    /// at the next lower ordinal, or None when that pod was the last and the roll is done.
    pub fn after(&self, ordinal: i32) -> Option<Intent> {
        match self.step {
            Step::Rolling { .. } if ordinal > 0 => Some(Intent {
                step: Step::Rolling {
                    ordinal: ordinal - 1,
                },
                ..self.clone()
            }),
            _ => None,
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

    fn state(value: &str) -> RollTarget {
        RollTarget {
            container: ContainerState {
                command_line: CommandLine::new(
                    vec!["kube-apiserver".into()],
                    vec![format!("--max-requests-inflight={value}")],
                ),
                resources: None,
            },
            config_file: None,
            config_hash: None,
        }
    }

    fn rolling(ordinal: i32) -> Intent {
        Intent {
            component: Component::Apiserver,
            container: "kube-apiserver".into(),
            previous: state("400"),
            target: state("600"),
            step: Step::Rolling { ordinal },
            started_unix_s: 1,
        }
    }

    #[test]
    fn round_trips_through_the_annotation() {
        let intent = rolling(2);
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

    #[test]
    fn a_stop_after_a_pod_leaves_the_next_lower_ordinal() {
        let intent = rolling(2);
        let next = intent.after(2).expect("two pods are left");
        assert_eq!(next.step, Step::Rolling { ordinal: 1 });
        assert_eq!(
            (&next.previous, &next.target),
            (&intent.previous, &intent.target)
        );
        assert_eq!(next.started_unix_s, intent.started_unix_s);
        assert_eq!(
            next.after(1).map(|i| i.step),
            Some(Step::Rolling { ordinal: 0 })
        );
    }

    #[test]
    fn nothing_is_left_after_the_last_pod_or_a_rollback() {
        assert_eq!(rolling(0).after(0), None);
        let back = Intent {
            step: Step::RollingBack,
            ..rolling(2)
        };
        assert_eq!(back.after(2), None);
    }
}
