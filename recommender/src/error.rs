//! The one error type of the crate.

use queue_model::QueueModelError;

/// Why a round could not produce a recommendation.
// No variant has a `source`: each message already carries its cause, and a source would be
// printed a second time by `{:#}`.
#[derive(Debug, thiserror::Error)]
pub enum RecommenderError {
    /// A policy or current-settings file is not valid YAML for its shape.
    #[error("{0}")]
    Yaml(serde_norway::Error),
    /// A policy field has a value the recommender cannot work with.
    #[error("policy field `{field}`: {reason}")]
    Policy { field: String, reason: String },
    /// The policy names a replica the current settings do not describe.
    #[error("current settings: no entry for `{replica}`, a replica of the policy")]
    CurrentMissing { replica: String },
    /// A current setting no running replica can have. `field` is its path in the file,
    /// which names the replica: `apiservers.apiserver-0.cpu_cores`.
    #[error("current settings field `{field}`: {reason}")]
    Current { field: String, reason: String },
    /// A snapshot value no fetcher produces from a healthy control plane. `field` is its
    /// path, naming the replica: `apiservers.apiserver-0.read_only.arrival_rate`.
    #[error("snapshot field `{field}`: {reason}")]
    Snapshot { field: String, reason: String },
    /// A queue model rejected its inputs: a bug or an input that slipped past validation.
    #[error("queue model: {0}")]
    Model(QueueModelError),
}

impl From<serde_norway::Error> for RecommenderError {
    fn from(e: serde_norway::Error) -> Self {
        Self::Yaml(e)
    }
}

impl From<QueueModelError> for RecommenderError {
    fn from(e: QueueModelError) -> Self {
        Self::Model(e)
    }
}

pub type Result<T> = std::result::Result<T, RecommenderError>;

pub(crate) fn policy_error(
    field: impl Into<String>,
    reason: impl Into<String>,
) -> RecommenderError {
    RecommenderError::Policy {
        field: field.into(),
        reason: reason.into(),
    }
}
