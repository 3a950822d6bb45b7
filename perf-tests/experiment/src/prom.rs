//! The measures read from the management cluster's Prometheus, which scrapes the tested
//! control plane as the `tested-*` jobs every 5 s.

use std::collections::BTreeMap;

use prometheus_http_query::Client;
use prometheus_http_query::response::Data;

use crate::error::{Error, Result};

/// Request classes as the recommender sees them: (name, label matchers on the apiserver's
/// request metrics). WATCH and CONNECT are long-running and left out.
pub const CLASSES: [(&str, &str); 3] = [
    (
        "mutating",
        r#"verb=~"POST|PUT|PATCH|DELETE|DELETECOLLECTION""#,
    ),
    ("read", r#"verb="GET""#),
    ("list", r#"verb="LIST""#),
];

const APISERVER: &str = r#"job="tested-apiserver""#;
/// The processes whose CPU and memory count as the control plane's cost.
const CPU_JOBS: &str = r#"job=~"tested-(apiserver|controller-manager|scheduler|etcd)""#;
const RSS_JOBS: &str = r#"job=~"tested-(apiserver|controller-manager|scheduler)""#;

pub struct Prometheus {
    client: Client,
}

/// `histogram_quantile` of one class over `[window]` ending at the evaluation time.
pub fn class_quantile(quantile: f64, matchers: &str, window: &str) -> String {
    format!(
        "histogram_quantile({quantile}, sum by (le) (increase(apiserver_request_duration_seconds_bucket{{{APISERVER},{matchers}}}[{window}])))"
    )
}

/// Share of the tested apiservers' requests answered 429 over `[window]` (0 without 429s).
pub fn rejected_share(window: &str) -> String {
    format!(
        "(sum(increase(apiserver_request_total{{{APISERVER},code=\"429\"}}[{window}])) or vector(0)) / sum(increase(apiserver_request_total{{{APISERVER}}}[{window}]))"
    )
}

/// Whole seconds, at least one scrape interval's worth of samples.
pub fn window(seconds: f64) -> String {
    format!("{}s", seconds.ceil().max(10.0) as u64)
}

impl Prometheus {
    pub fn new(url: &str) -> Result<Prometheus> {
        // reqwest is built without a default TLS provider in this workspace; Prometheus is
        // plain HTTP here, but the client still wants one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| Error::Prometheus {
                query: url.into(),
                message: e.to_string(),
            })?;
        let client = Client::from(http, url).map_err(|e| Error::Prometheus {
            query: url.into(),
            message: e.to_string(),
        })?;
        Ok(Prometheus { client })
    }

    /// Every series of an instant query at `at`: labels → value.
    pub async fn vector(
        &self,
        query: &str,
        at: f64,
    ) -> Result<Vec<(BTreeMap<String, String>, f64)>> {
        let result = self
            .client
            .query(query)
            .at(at as i64)
            .get()
            .await
            .map_err(|e| prom_error(query, e))?;
        match result.data() {
            Data::Vector(v) => Ok(v
                .iter()
                .map(|s| {
                    let labels = s
                        .metric()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    (labels, s.sample().value())
                })
                .collect()),
            Data::Scalar(s) => Ok(vec![(BTreeMap::new(), s.value())]),
            Data::Matrix(_) => Err(Error::Prometheus {
                query: query.into(),
                message: "a range vector where an instant vector was expected".into(),
            }),
        }
    }

    /// The first value of an instant query, None when it has no series or is NaN.
    pub async fn scalar(&self, query: &str, at: f64) -> Result<Option<f64>> {
        Ok(self
            .vector(query, at)
            .await?
            .first()
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite()))
    }

    /// The first series of a range query: (unix seconds, value), NaNs dropped.
    pub async fn range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<(f64, f64)>> {
        let result = self
            .client
            .query_range(query, start as i64, end.ceil() as i64, step)
            .get()
            .await
            .map_err(|e| prom_error(query, e))?;
        match result.data() {
            Data::Matrix(m) => Ok(m
                .first()
                .map(|series| {
                    series
                        .samples()
                        .iter()
                        .map(|s| (s.timestamp(), s.value()))
                        .filter(|(_, v)| v.is_finite())
                        .collect()
                })
                .unwrap_or_default()),
            _ => Err(Error::Prometheus {
                query: query.into(),
                message: "not a range vector".into(),
            }),
        }
    }

    /// Every raw sample of a range selector (`metric{...}[30s]`) evaluated at `at`, per
    /// series, with the scrape timestamps: what was really scraped, not a resampling.
    pub async fn raw_samples(&self, selector: &str, at: f64) -> Result<Vec<Vec<(f64, f64)>>> {
        let result = self
            .client
            .query(selector)
            .at(at as i64)
            .get()
            .await
            .map_err(|e| prom_error(selector, e))?;
        match result.data() {
            Data::Matrix(m) => Ok(m
                .iter()
                .map(|series| {
                    series
                        .samples()
                        .iter()
                        .map(|s| (s.timestamp(), s.value()))
                        .collect()
                })
                .collect()),
            _ => Err(Error::Prometheus {
                query: selector.into(),
                message: "not a range vector".into(),
            }),
        }
    }

    /// Whether the tested apiservers have been scraped at least once.
    pub async fn tested_scraped(&self, at: f64) -> Result<bool> {
        Ok(self
            .scalar(&format!("count(up{{{APISERVER}}} == 1)"), at)
            .await?
            .is_some_and(|n| n >= 1.0))
    }

    pub async fn cpu_core_seconds(&self, start: f64, end: f64) -> Result<BTreeMap<String, f64>> {
        let query = format!(
            "sum by (job) (increase(process_cpu_seconds_total{{{CPU_JOBS}}}[{}]))",
            window(end - start)
        );
        Ok(self
            .vector(&query, end)
            .await?
            .into_iter()
            .filter_map(|(labels, v)| Some((labels.get("job")?.clone(), v)))
            .collect())
    }

    pub async fn peak_rss(&self, start: f64, end: f64) -> Result<Option<f64>> {
        let query = format!(
            "max_over_time(sum(process_resident_memory_bytes{{{RSS_JOBS}}})[{}:5s])",
            window(end - start)
        );
        self.scalar(&query, end).await
    }

    pub async fn rejected_share(&self, start: f64, end: f64) -> Result<Option<f64>> {
        self.scalar(&rejected_share(&window(end - start)), end)
            .await
    }

    pub async fn scraped_share(&self, start: f64, end: f64) -> Result<Option<f64>> {
        self.scalar(
            &format!(
                "avg(avg_over_time(up{{{APISERVER}}}[{}]))",
                window(end - start)
            ),
            end,
        )
        .await
    }

    pub async fn served_rps(&self, start: f64, end: f64) -> Result<Option<f64>> {
        let w = window(end - start);
        self.scalar(
            &format!(
                "sum(increase(apiserver_request_total{{{APISERVER},verb!~\"WATCH|CONNECT\"}}[{w}]))"
            ),
            end,
        )
        .await
        .map(|v| v.map(|n| n / (end - start).max(1.0)))
    }
}

fn prom_error(query: &str, e: prometheus_http_query::Error) -> Error {
    Error::Prometheus {
        query: query.into(),
        message: e.to_string(),
    }
}
