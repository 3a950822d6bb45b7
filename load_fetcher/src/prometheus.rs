//! The Prometheus source: one instant query per measurement (all in parallel), range
//! queries for the history, and `up` to tell which replicas vanished.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::try_join_all;
use prometheus_http_query::response::{Data, PromqlResult};
use recommender::snapshot::{
    Component, FindingKind, History, LoadSnapshot, Replica, ReplicaHistory, Source,
};

use crate::assemble::assemble;
use crate::config::{ComponentRule, FetchConfig, promql_range};
use crate::error::{Error, Result, cause_chain};
use crate::http_client::ClientOptions;
use crate::quality::Findings;
use crate::query::{Measure, Query, Readings, Reduction, Row, queries};
use crate::request_class::{MUTATING_VERBS, READ_ONLY_VERBS};

/// Assumed when neither the config nor Prometheus says how often targets are scraped.
const FALLBACK_SCRAPE_INTERVAL: Duration = Duration::from_secs(60);

/// What to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Rates and percentiles are taken over this window, ending at the evaluation time.
    pub window: Duration,
    /// Also fetch per-replica series over a longer window.
    pub history: Option<HistoryOptions>,
    /// Evaluation time, seconds since the epoch; now when `None`.
    pub at_unix_s: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct HistoryOptions {
    pub range: Duration,
    pub step: Duration,
}

/// Most points one series of a range query may have: Prometheus refuses more ("exceeded
/// maximum resolution of 11,000 points per timeseries"), and arak would hold them all.
pub const MAX_RANGE_POINTS: f64 = 11_000.0;

impl FetchOptions {
    /// Refuses a zero window or step and a history of more points than Prometheus answers,
    /// before anything is asked (`--history 100000h --step 1ms` tried to allocate terabytes).
    pub fn validate(&self) -> Result<()> {
        if self.window.is_zero() {
            return Err(Error::Options {
                option: "window",
                reason: "must be longer than zero".into(),
            });
        }
        let Some(h) = self.history else {
            return Ok(());
        };
        if h.step.is_zero() {
            return Err(Error::Options {
                option: "step",
                reason: "must be longer than zero".into(),
            });
        }
        let points = h.range.as_secs_f64() / h.step.as_secs_f64() + 1.0;
        if points > MAX_RANGE_POINTS {
            return Err(Error::Options {
                option: "history",
                reason: format!(
                    "{} s at a step of {} s is {points:.3e} points per series; Prometheus \
                     answers at most {MAX_RANGE_POINTS}: lengthen the step or shorten the history",
                    h.range.as_secs_f64(),
                    h.step.as_secs_f64()
                ),
            });
        }
        Ok(())
    }
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            window: Duration::from_secs(300),
            history: None,
            at_unix_s: None,
        }
    }
}

/// A Prometheus server to read the control plane's metrics from.
#[derive(Clone)]
pub struct PrometheusSource {
    address: String,
    client: prometheus_http_query::Client,
    timeout: Duration,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PrometheusSource {
    pub fn new(url: &str, options: &ClientOptions) -> Result<Self> {
        let http = options.build(url)?;
        let client = prometheus_http_query::Client::from(http, url).map_err(|e| Error::Client {
            address: url.to_owned(),
            reason: cause_chain(&e),
        })?;
        Ok(PrometheusSource {
            address: url.to_owned(),
            client,
            timeout: options.timeout,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// One snapshot. Fails only when Prometheus cannot be asked at all; missing or odd data
    /// become findings on the snapshot.
    pub async fn fetch(
        &self,
        config: &FetchConfig,
        options: &FetchOptions,
    ) -> Result<LoadSnapshot> {
        options.validate()?;
        let at = options.at_unix_s.unwrap_or_else(now_unix_s);
        let window = promql_range(options.window);
        let (primary, fallbacks): (Vec<Query>, Vec<Query>) = queries()
            .into_iter()
            .partition(|q| q.measure.fallback_for().is_none());
        let instant = self.run_all(config, &primary, &window, at);
        // Replicas seen over the longer of the two windows but not up now have vanished.
        let lookback = options
            .history
            .map_or(options.window, |h| h.range.max(options.window));
        let lookback = promql_range(lookback);
        let vanished = self.vanished(config, &lookback, at);
        let scrape_interval = async { Ok(self.scrape_interval(config).await) };
        let (instant, vanished, scrape_interval) =
            futures::try_join!(instant, vanished, scrape_interval)?;

        let mut readings = Readings {
            vanished,
            ..Readings::default()
        };
        add_rows(&mut readings, &primary, instant);
        // Older metric names, only for components where some replica lacks the newer one.
        let needed: Vec<Query> = fallbacks
            .into_iter()
            .filter(|q| {
                q.measure
                    .fallback_for()
                    .is_some_and(|m| lacks(&readings, q.component, m))
            })
            .collect();
        let sli_everywhere = !lacks(&readings, Component::Apiserver, Measure::SliLatencyBuckets);
        let fallback_rows = self.run_all(config, &needed, &window, at);
        let history = async {
            match options.history {
                Some(h) => self
                    .history(config, h, scrape_interval, sli_everywhere, at)
                    .await
                    .map(|(history, findings)| (Some(history), findings.into_vec())),
                None => Ok((None, Vec::new())),
            }
        };
        let (fallback_rows, (history, history_findings)) =
            futures::try_join!(fallback_rows, history)?;
        add_rows(&mut readings, &needed, fallback_rows);
        let mut assembly = assemble(&readings, scrape_interval, &config.apiserver.selector());
        assembly.findings.extend(history_findings);
        Ok(LoadSnapshot {
            time_unix_s: at as f64,
            window_s: options.window.as_secs_f64(),
            source: Source::Prometheus {
                url: self.address.clone(),
            },
            apiservers: assembly.apiservers,
            schedulers: assembly.schedulers,
            controller_managers: assembly.controller_managers,
            history,
            findings: assembly.findings,
        })
    }

    /// The configured scrape interval, else the largest among Prometheus' active targets of
    /// the components' jobs, else a minute: staleness must not be judged against an interval
    /// shorter than the real one, or every replica would look stale.
    async fn scrape_interval(&self, config: &FetchConfig) -> Duration {
        if let Some(interval) = config.scrape_interval {
            return interval;
        }
        let targets = tokio::time::timeout(
            self.timeout,
            self.client
                .targets(Some(prometheus_http_query::TargetState::Active)),
        )
        .await;
        let largest_ms = match targets {
            Ok(Ok(targets)) => targets
                .active()
                .iter()
                .filter(|t| {
                    t.labels()
                        .get("job")
                        .is_some_and(|job| config.matches_job(job))
                })
                .map(|t| t.scrape_interval().whole_milliseconds())
                .max(),
            // Not every Prometheus-compatible server offers the targets API.
            _ => None,
        };
        largest_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .filter(|ms| *ms > 0)
            .map_or(FALLBACK_SCRAPE_INTERVAL, Duration::from_millis)
    }

    async fn instant(&self, promql: String, at: i64) -> Result<PromqlResult> {
        let request = self.client.query(&promql).at(at).get();
        self.bounded(promql, request).await
    }

    async fn bounded(
        &self,
        promql: String,
        request: impl Future<Output = Result<PromqlResult, prometheus_http_query::Error>>,
    ) -> Result<PromqlResult> {
        // reqwest's own timeout covers the connection and the body; this one also bounds
        // anything else (DNS, a stuck pool) so a fetch never hangs.
        match tokio::time::timeout(self.timeout + Duration::from_millis(500), request).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) if reqwest_timed_out(&e) => Err(Error::PrometheusTimeout {
                address: self.address.clone(),
                query: promql,
                timeout_s: self.timeout.as_secs_f64(),
            }),
            Ok(Err(e)) => Err(Error::Prometheus {
                address: self.address.clone(),
                query: promql,
                cause: cause_chain(&e),
            }),
            Err(_) => Err(Error::PrometheusTimeout {
                address: self.address.clone(),
                query: promql,
                timeout_s: self.timeout.as_secs_f64(),
            }),
        }
    }

    async fn run_all(
        &self,
        config: &FetchConfig,
        queries: &[Query],
        window: &str,
        at: i64,
    ) -> Result<Vec<Vec<Row>>> {
        try_join_all(queries.iter().map(|q| {
            let rule = config.rule(q.component);
            self.rows(q, rule, promql(q, rule, window), at)
        }))
        .await
    }

    async fn rows(
        &self,
        query: &Query,
        rule: &ComponentRule,
        promql: String,
        at: i64,
    ) -> Result<Vec<Row>> {
        let result = self.instant(promql, at).await?;
        let Data::Vector(vector) = result.data() else {
            return Ok(Vec::new());
        };
        let mut keep: Vec<&str> = query.by.to_vec();
        if query.reduction == Reduction::BucketIncrease {
            keep.push("le");
        }
        Ok(vector
            .iter()
            .filter_map(|v| {
                let replica = replica(query.component, rule, v.metric())?;
                Some(Row {
                    replica,
                    labels: keep
                        .iter()
                        .filter_map(|l| {
                            v.metric()
                                .get(*l)
                                .map(|value| (l.to_string(), value.clone()))
                        })
                        .collect(),
                    value: v.sample().value(),
                })
            })
            .collect())
    }

    async fn vanished(
        &self,
        config: &FetchConfig,
        lookback: &str,
        at: i64,
    ) -> Result<Vec<(Replica, String)>> {
        let components = [
            Component::Apiserver,
            Component::Scheduler,
            Component::ControllerManager,
        ];
        let per_component = components.map(|component| async move {
            let rule = config.rule(component);
            let by = rule.grouping().join(",");
            let selector = rule.selector();
            let seen = self
                .instant(
                    format!("max by ({by}) (max_over_time(up{{{selector}}}[{lookback}]))"),
                    at,
                )
                .await?;
            let now = self
                .instant(format!("max by ({by}) (up{{{selector}}})"), at)
                .await?;
            let up_now: HashMap<Replica, f64> = vector_values(component, rule, &now).collect();
            Ok::<_, Error>(
                vector_values(component, rule, &seen)
                    .filter_map(|(replica, _)| {
                        let why = match up_now.get(&replica) {
                            Some(v) if *v >= 1.0 => return None,
                            Some(_) => "its target is down now (up == 0)".to_owned(),
                            None => format!(
                                "was scraped within the last {lookback} but is not any more"
                            ),
                        };
                        Some((replica, why))
                    })
                    .collect::<Vec<_>>(),
            )
        });
        Ok(try_join_all(per_component)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn history(
        &self,
        config: &FetchConfig,
        options: HistoryOptions,
        scrape_interval: Duration,
        sli_everywhere: bool,
        end: i64,
    ) -> Result<(History, Findings)> {
        let mut findings = Findings::default();
        let step_s = options.step.as_secs_f64().max(0.001);
        let start = end - options.range.as_secs() as i64;
        // Each point's rate needs a few samples: at least four scrape intervals.
        let range = promql_range(options.step.max(scrape_interval * 4));
        let step = promql_range(options.step);
        let mut series: Vec<(HistorySeries, Component, String)> = Vec::new();
        let apiserver = &config.apiserver;
        let (by, selector) = (apiserver.grouping().join(","), apiserver.selector());
        for (kind, verbs) in [
            (HistorySeries::ReadOnlyRate, READ_ONLY_VERBS),
            (HistorySeries::MutatingRate, MUTATING_VERBS),
        ] {
            series.push((
                kind,
                Component::Apiserver,
                format!("sum by ({by}) (rate(apiserver_request_total{{{selector},verb=~\"{verbs}\"}}[{range}]))"),
            ));
        }
        for (kind, verbs) in [
            (HistorySeries::ReadOnlyP99, READ_ONLY_VERBS),
            (HistorySeries::MutatingP99, MUTATING_VERBS),
        ] {
            let p99 = |metric: &str| {
                format!(
                    "histogram_quantile(0.99, sum by ({by},le) (rate({metric}_bucket{{{selector},verb=~\"{verbs}\"}}[{range}])))"
                )
            };
            series.push((
                kind,
                Component::Apiserver,
                sli_or_total(sli_everywhere, p99),
            ));
        }
        // The mean as well as the P99: the calibration fits the off-CPU time's mean and spread
        // from the two.
        for (kind, verbs) in [
            (HistorySeries::ReadOnlyMean, READ_ONLY_VERBS),
            (HistorySeries::MutatingMean, MUTATING_VERBS),
        ] {
            let mean = |metric: &str| {
                format!(
                    "sum by ({by}) (rate({metric}_sum{{{selector},verb=~\"{verbs}\"}}[{range}])) / sum by ({by}) (rate({metric}_count{{{selector},verb=~\"{verbs}\"}}[{range}]))"
                )
            };
            series.push((
                kind,
                Component::Apiserver,
                sli_or_total(sli_everywhere, mean),
            ));
        }
        for component in [
            Component::Apiserver,
            Component::Scheduler,
            Component::ControllerManager,
        ] {
            let rule = config.rule(component);
            let (by, selector) = (rule.grouping().join(","), rule.selector());
            series.push((
                HistorySeries::Cpu,
                component,
                format!("sum by ({by}) (rate(process_cpu_seconds_total{{{selector}}}[{range}]))"),
            ));
            series.push((
                HistorySeries::ResidentMemory,
                component,
                format!("max by ({by}) (max_over_time(process_resident_memory_bytes{{{selector}}}[{step}]))"),
            ));
        }
        let results = try_join_all(series.iter().map(|(_, _, promql)| {
            let request = self.client.query_range(promql, start, end, step_s).get();
            self.bounded(promql.clone(), request)
        }))
        .await?;

        let points = ((end - start) as f64 / step_s).floor() as usize + 1;
        let times_unix_s: Vec<f64> = (0..points)
            .map(|i| start as f64 + i as f64 * step_s)
            .collect();
        let mut replicas: BTreeMap<Replica, ReplicaHistory> = BTreeMap::new();
        for ((kind, component, _), result) in series.iter().zip(&results) {
            let Data::Matrix(matrix) = result.data() else {
                continue;
            };
            let rule = config.rule(*component);
            for range_vector in matrix {
                let Some(replica) = replica(*component, rule, range_vector.metric()) else {
                    continue;
                };
                let entry = replicas
                    .entry(replica.clone())
                    .or_insert_with(|| empty_history(replica.clone(), points));
                let column = kind.column(entry);
                for sample in range_vector.samples() {
                    let index = ((sample.timestamp() - start as f64) / step_s).round();
                    if !(index >= 0.0 && (index as usize) < points) {
                        continue;
                    }
                    let v = sample.value();
                    let odd = if !v.is_finite() {
                        Some(FindingKind::NotFinite)
                    } else if v < 0.0 {
                        Some(FindingKind::Negative)
                    } else {
                        None
                    };
                    match odd {
                        Some(kind_of_value) => findings.warn(
                            kind_of_value,
                            kind.name(),
                            Some(&replica),
                            format!("history value {v} at {}; left out", sample.timestamp()),
                        ),
                        None => column[index as usize] = Some(v),
                    }
                }
            }
        }
        let history = History {
            step_s,
            times_unix_s,
            replicas: replicas.into_values().collect(),
        };
        Ok((history, findings))
    }
}

/// A latency query over the SLI histogram (which leaves out APF queueing and webhooks),
/// falling back per series to the whole request duration where a replica lacks the SLI
/// (older Kubernetes). `query` builds the PromQL from a histogram's base name.
fn sli_or_total(sli_everywhere: bool, query: impl Fn(&str) -> String) -> String {
    let sli = query("apiserver_request_sli_duration_seconds");
    if sli_everywhere {
        sli
    } else {
        format!(
            "({sli}) or ({})",
            query("apiserver_request_duration_seconds")
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum HistorySeries {
    ReadOnlyRate,
    MutatingRate,
    ReadOnlyP99,
    MutatingP99,
    ReadOnlyMean,
    MutatingMean,
    Cpu,
    ResidentMemory,
}

impl HistorySeries {
    /// The snapshot field the series fills, for findings.
    fn name(self) -> &'static str {
        match self {
            HistorySeries::ReadOnlyRate => "history.read_only_rate",
            HistorySeries::MutatingRate => "history.mutating_rate",
            HistorySeries::ReadOnlyP99 => "history.read_only_p99_s",
            HistorySeries::MutatingP99 => "history.mutating_p99_s",
            HistorySeries::ReadOnlyMean => "history.read_only_mean_s",
            HistorySeries::MutatingMean => "history.mutating_mean_s",
            HistorySeries::Cpu => "history.cpu_cores",
            HistorySeries::ResidentMemory => "history.resident_memory_bytes",
        }
    }

    fn column(self, h: &mut ReplicaHistory) -> &mut Vec<Option<f64>> {
        match self {
            HistorySeries::ReadOnlyRate => &mut h.read_only_rate,
            HistorySeries::MutatingRate => &mut h.mutating_rate,
            HistorySeries::ReadOnlyP99 => &mut h.read_only_p99_s,
            HistorySeries::MutatingP99 => &mut h.mutating_p99_s,
            HistorySeries::ReadOnlyMean => &mut h.read_only_mean_s,
            HistorySeries::MutatingMean => &mut h.mutating_mean_s,
            HistorySeries::Cpu => &mut h.cpu_cores,
            HistorySeries::ResidentMemory => &mut h.resident_memory_bytes,
        }
    }
}

fn add_rows(readings: &mut Readings, queries: &[Query], results: Vec<Vec<Row>>) {
    for (query, rows) in queries.iter().zip(results) {
        readings
            .rows
            .entry((query.component, query.measure))
            .or_default()
            .extend(rows);
    }
}

/// Whether some replica of the component has rows of other measures but none of this one.
fn lacks(readings: &Readings, component: Component, measure: Measure) -> bool {
    let with = |m: Option<Measure>| -> BTreeSet<&Replica> {
        readings
            .rows
            .iter()
            .filter(|((c, rm), _)| *c == component && m.is_none_or(|m| m == *rm))
            .flat_map(|(_, rows)| rows.iter().map(|r| &r.replica))
            .collect()
    };
    with(None) != with(Some(measure))
}

fn empty_history(replica: Replica, points: usize) -> ReplicaHistory {
    ReplicaHistory {
        replica,
        read_only_rate: vec![None; points],
        mutating_rate: vec![None; points],
        cpu_cores: vec![None; points],
        read_only_p99_s: vec![None; points],
        mutating_p99_s: vec![None; points],
        read_only_mean_s: vec![None; points],
        mutating_mean_s: vec![None; points],
        resident_memory_bytes: vec![None; points],
    }
}

fn replica(
    component: Component,
    rule: &ComponentRule,
    labels: &HashMap<String, String>,
) -> Option<Replica> {
    let name = rule.replica_name(|l| labels.get(l).map(String::as_str))?;
    Some(Replica {
        component,
        name: name.to_owned(),
        instance: labels
            .get("instance")
            .cloned()
            .unwrap_or_else(|| name.to_owned()),
    })
}

fn vector_values<'a>(
    component: Component,
    rule: &'a ComponentRule,
    result: &'a PromqlResult,
) -> impl Iterator<Item = (Replica, f64)> + 'a {
    let vector = match result.data() {
        Data::Vector(v) => v.as_slice(),
        _ => &[],
    };
    vector
        .iter()
        .filter_map(move |v| Some((replica(component, rule, v.metric())?, v.sample().value())))
}

/// The PromQL for one measurement of one component.
pub fn promql(query: &Query, rule: &ComponentRule, window: &str) -> String {
    let mut selector = rule.selector();
    if let Some((label, regex)) = query.filter {
        selector.push_str(&format!(",{label}=~\"{regex}\""));
    }
    let mut by: Vec<String> = rule.grouping();
    by.extend(query.by.iter().map(|l| l.to_string()));
    if query.reduction == Reduction::BucketIncrease {
        by.push("le".into());
    }
    let by = by.join(",");
    let series = format!("{}{{{selector}}}", query.metric);
    match query.reduction {
        Reduction::Rate => format!("sum by ({by}) (rate({series}[{window}]))"),
        Reduction::Increase | Reduction::BucketIncrease => {
            format!("sum by ({by}) (increase({series}[{window}]))")
        }
        Reduction::Resets => format!("sum by ({by}) (resets({series}[{window}]))"),
        Reduction::Mean => format!("sum by ({by}) (avg_over_time({series}[{window}]))"),
        Reduction::Max => format!("max by ({by}) (max_over_time({series}[{window}]))"),
        Reduction::Last => format!("sum by ({by}) ({series})"),
        Reduction::Age => format!("max by ({by}) (time() - timestamp({series}))"),
    }
}

fn now_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether reqwest gave up on its own timeout: said as the bound, not as "operation timed out".
fn reqwest_timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Measure;

    /// Issue #17: `fetch --history 100000h --step 1ms` tried to allocate terabytes.
    #[test]
    fn a_history_of_more_points_than_prometheus_answers_is_refused() {
        let with = |range_s: u64, step: Duration| FetchOptions {
            history: Some(HistoryOptions {
                range: Duration::from_secs(range_s),
                step,
            }),
            ..FetchOptions::default()
        };
        let e = with(100_000 * 3600, Duration::from_millis(1))
            .validate()
            .unwrap_err();
        assert!(
            matches!(&e, Error::Options { option: "history", reason } if reason.contains("11000")),
            "{e}"
        );
        let e = with(3600, Duration::ZERO).validate().unwrap_err();
        assert!(matches!(e, Error::Options { option: "step", .. }), "{e}");
        let e = FetchOptions {
            window: Duration::ZERO,
            ..FetchOptions::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Options {
                    option: "window",
                    ..
                }
            ),
            "{e}"
        );
        // A day at 15 s, the most a recommend round asks for, is fine.
        with(86_400, Duration::from_secs(15)).validate().unwrap();
    }

    #[test]
    fn renders_promql_per_reduction() {
        let config = FetchConfig::default();
        let find = |m: Measure| queries().into_iter().find(|q| q.measure == m).unwrap();
        let q = promql(&find(Measure::Requests), &config.apiserver, "5m");
        assert_eq!(
            q,
            r#"sum by (job,instance,pod,verb,code) (rate(apiserver_request_total{job=~"apiserver|kube-apiserver"}[5m]))"#
        );
        let q = promql(&find(Measure::SliLatencyBuckets), &config.apiserver, "5m");
        assert!(
            q.contains("verb=~\"GET|LIST|") && q.contains(",le) (increase("),
            "{q}"
        );
        let q = promql(&find(Measure::SampleAge), &config.apiserver, "5m");
        assert!(
            q.starts_with("max by (job,instance,pod) (time() - timestamp("),
            "{q}"
        );
    }
}
