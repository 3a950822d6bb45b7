//! The one error type of the crate.

use std::path::PathBuf;

/// Why a fetch produced no snapshot at all. Problems with individual series are not errors:
/// they become [`recommender::snapshot::Finding`]s on the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // `cause`, not `source`: the message already carries it, and a source would print twice.
    #[error("reading {path}: {cause}")]
    ReadFile {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {reason}")]
    InvalidFile { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A fetch option that would ask Prometheus for nonsense or for more than it answers.
    #[error("fetch option {option}: {reason}")]
    Options {
        option: &'static str,
        reason: String,
    },
    #[error("building the HTTP client for {address}: {reason}")]
    Client { address: String, reason: String },
    #[error("Prometheus at {address}: {cause} (query `{query}`)")]
    Prometheus {
        address: String,
        query: String,
        cause: String,
    },
    #[error("Prometheus at {address} did not answer `{query}` within {timeout_s} s")]
    PrometheusTimeout {
        address: String,
        query: String,
        timeout_s: f64,
    },
    #[error("scraping {address}: {cause}")]
    Scrape { address: String, cause: String },
    #[error(
        "cannot tell which component {address} is: it exposes neither apiserver_request_total, \
         scheduler_schedule_attempts_total nor leader_election_master_status{{name=\"kube-controller-manager\"}}; \
         prefix it with apiserver=, scheduler= or controller-manager="
    )]
    UnknownComponent { address: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error and its causes on one line: reqwest's own message alone ("error sending request")
/// does not say whether the port was closed or the certificate wrong. The request URL that
/// reqwest quotes is dropped: callers name the address, and a URL-encoded query is unreadable.
pub(crate) fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = without_url(&error.to_string());
    let mut source = error.source();
    while let Some(cause) = source {
        let next = without_url(&cause.to_string());
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

fn without_url(message: &str) -> String {
    match message.find(" for url (") {
        Some(start) => match message[start..].find(')') {
            Some(end) => format!("{}{}", &message[..start], &message[start + end + 1..]),
            None => message.to_owned(),
        },
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_urls_are_left_out_of_messages() {
        assert_eq!(
            without_url("error sending request for url (http://x/api?q=a%28b%29): refused"),
            "error sending request: refused"
        );
        assert_eq!(without_url("plain"), "plain");
    }
}
