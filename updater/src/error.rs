//! The updater's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "not allowed to {verb} {resource} in {scope} as the configured identity; nothing was changed"
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        scope: String,
    },
    #[error("StatefulSet {0} (a recommendation target) does not exist")]
    NoStatefulSet(String),
    #[error("StatefulSet {stateful_set} has no container {container}")]
    NoContainer {
        stateful_set: String,
        container: String,
    },
    #[error("replica {replica} is no pod of StatefulSet {stateful_set}")]
    NoReplica {
        replica: String,
        stateful_set: String,
    },
    #[error(
        "replicas of StatefulSet {0} are recommended different flags or resources; one pod template cannot carry both"
    )]
    DivergentReplicas(String),
    #[error(
        "the recommendation covers {covered} of the {replicas} replicas of StatefulSet {stateful_set}, whose one pod template would change them all"
    )]
    PartialStatefulSet {
        stateful_set: String,
        covered: usize,
        replicas: i32,
    },
    #[error("refusing to start: {component} replicas not Ready: {}", pods.join(", "))]
    NotReady {
        component: String,
        pods: Vec<String>,
    },
    #[error("{stateful_set}: {reason}")]
    Unsupported {
        stateful_set: String,
        reason: String,
    },
    #[error("component config {location}: {reason}")]
    ComponentConfig { location: String, reason: String },
    #[error("intent annotation on StatefulSet {stateful_set}: {reason}")]
    Intent {
        stateful_set: String,
        reason: String,
    },
    #[error(
        "rolling back {stateful_set} failed, it needs a person: {reason} (the intent annotation is kept)"
    )]
    RollbackFailed {
        stateful_set: String,
        reason: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a client error with what was being done.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}
