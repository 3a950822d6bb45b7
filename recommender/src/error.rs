//! The one error type of the crate.

use queue_model::QueueModelError;

/// Why a round could not produce a recommendation.
#[derive(Debug, thiserror::Error)]
pub enum RecommenderError {
    /// A policy or current-settings file is not valid YAML for its shape.
    #[error("{0}")]
    Yaml(#[from] serde_norway::Error),
    /// A policy field has a value the recommender cannot work with.
    #[error("policy field `{field}`: {reason}")]
    Policy { field: String, reason: String },
    /// The current settings do not describe the replicas the policy names.
    #[error("current settings for `{replica}`: {reason}")]
    Current { replica: String, reason: String },
    /// A queue model rejected its inputs: a bug or an input that slipped past validation.
    #[error("queue model: {0}")]
    Model(#[from] QueueModelError),
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
