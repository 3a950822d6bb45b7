//! Which queue an apiserver request belongs to, by its `verb` label.

/// The apiserver's request classes as the models see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestClass {
    ReadOnly,
    Mutating,
    /// WATCH, CONNECT and anything else long-running: excluded from the queues.
    LongRunning,
}

/// `verb` values counted as readOnly, as a PromQL regex.
pub const READ_ONLY_VERBS: &str = "GET|LIST";
/// `verb` values counted as mutating (APPLY is server-side apply's PATCH), as a PromQL regex.
pub const MUTATING_VERBS: &str = "POST|PUT|PATCH|APPLY|DELETE|DELETECOLLECTION";

impl RequestClass {
    pub fn of_verb(verb: &str) -> Self {
        match verb {
            "GET" | "LIST" => RequestClass::ReadOnly,
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION" => {
                RequestClass::Mutating
            }
            _ => RequestClass::LongRunning,
        }
    }

    /// The `request_kind` label of `apiserver_current_inflight_requests` for this class.
    pub fn of_request_kind(kind: &str) -> Option<Self> {
        match kind {
            "readOnly" => Some(RequestClass::ReadOnly),
            "mutating" => Some(RequestClass::Mutating),
            _ => None,
        }
    }
}

/// What an HTTP status code counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Rejected,
    ServerError,
    Other,
}

impl Outcome {
    pub fn of_code(code: &str) -> Self {
        match code {
            "429" => Outcome::Rejected,
            c if c.starts_with('5') => Outcome::ServerError,
            _ => Outcome::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_fall_into_the_model_classes() {
        assert_eq!(RequestClass::of_verb("LIST"), RequestClass::ReadOnly);
        assert_eq!(
            RequestClass::of_verb("DELETECOLLECTION"),
            RequestClass::Mutating
        );
        assert_eq!(RequestClass::of_verb("WATCH"), RequestClass::LongRunning);
        assert_eq!(RequestClass::of_verb("CONNECT"), RequestClass::LongRunning);
        for verb in READ_ONLY_VERBS.split('|') {
            assert_eq!(RequestClass::of_verb(verb), RequestClass::ReadOnly);
        }
        for verb in MUTATING_VERBS.split('|') {
            assert_eq!(RequestClass::of_verb(verb), RequestClass::Mutating);
        }
        assert_eq!(Outcome::of_code("429"), Outcome::Rejected);
        assert_eq!(Outcome::of_code("503"), Outcome::ServerError);
        assert_eq!(Outcome::of_code("200"), Outcome::Other);
    }
}
