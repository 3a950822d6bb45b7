//! The one error type of the crate.

use std::path::PathBuf;

/// Why a fetch produced no snapshot at all. Problems with individual series are not errors:
/// they become [`recommender::snapshot::Finding`]s on the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    InvalidFile { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("building the HTTP client for {address}: {reason}")]
    Client { address: String, reason: String },
    #[error("Prometheus at {address} failed for `{query}`: {cause}")]
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
/// does not say whether the port was closed or the certificate wrong.
pub(crate) fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}
