//! Reads control-plane load from Prometheus or direct `/metrics` scrapes into
//! [`LoadSnapshot`](recommender::snapshot::LoadSnapshot)s, and checks the data's quality:
//! anything missing, stale, reset, non-finite or empty becomes a typed finding and the value
//! is `None`, never a silent zero.

mod assemble;
pub mod config;
pub mod counter;
mod error;
pub mod histogram;
pub mod http_client;
pub mod prometheus;
mod quality;
pub mod query;
pub mod request_class;
pub mod scrape;

pub use config::FetchConfig;
pub use error::{Error, Result};
pub use http_client::ClientOptions;
pub use prometheus::{FetchOptions, HistoryOptions, PrometheusSource};
pub use scrape::{ScrapeSource, ScrapeTarget};
