//! The direct-scrape source: reads `/metrics` of each endpoint twice, an interval apart,
//! and derives the same measurements from the differences.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use prometheus_parse::{Sample, Scrape, Value};
use recommender::snapshot::{Component, LoadSnapshot, Replica, Source};

use crate::assemble::assemble;
use crate::error::{Error, Result, cause_chain};
use crate::histogram::Histogram;
use crate::http_client::ClientOptions;
use crate::query::{Query, Readings, Reduction, Row, queries};

/// One `/metrics` endpoint, with its component if the user named it
/// (`apiserver=https://…`, `scheduler=…`, `controller-manager=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    pub url: String,
    pub component: Option<Component>,
}

impl FromStr for ScrapeTarget {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (component, url) = match text.split_once('=') {
            Some((name, url)) if !name.contains(':') => {
                let component = match name {
                    "apiserver" | "kube-apiserver" => Component::Apiserver,
                    "scheduler" | "kube-scheduler" => Component::Scheduler,
                    "controller-manager" | "kube-controller-manager" => {
                        Component::ControllerManager
                    }
                    other => {
                        return Err(format!(
                            "`{other}` is not a component (apiserver, scheduler, controller-manager)"
                        ));
                    }
                };
                (Some(component), url)
            }
            _ => (None, text),
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("`{url}` is not an http(s) URL"));
        }
        Ok(ScrapeTarget {
            url: url.to_owned(),
            component,
        })
    }
}

/// Scrapes endpoints directly, without Prometheus.
#[derive(Debug, Clone)]
pub struct ScrapeSource {
    targets: Vec<ScrapeTarget>,
    client: reqwest::Client,
}

/// One endpoint's reading: when it arrived and what it said.
struct Reading {
    at: Instant,
    samples: Vec<Sample>,
}

impl ScrapeSource {
    pub fn new(targets: Vec<ScrapeTarget>, options: &ClientOptions) -> Result<Self> {
        if targets.is_empty() {
            return Err(Error::Config("no endpoint to scrape".into()));
        }
        let client = options.build(&targets[0].url)?;
        Ok(ScrapeSource { targets, client })
    }

    /// Reads every endpoint, waits `interval`, reads again and builds the snapshot from the
    /// two readings. An endpoint that fails the first time is an error; one that fails only
    /// the second time has vanished (a finding).
    pub async fn fetch(&self, interval: Duration) -> Result<LoadSnapshot> {
        let first: Vec<Reading> = join_all(self.targets.iter().map(|t| self.read(&t.url)))
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let components = self
            .targets
            .iter()
            .zip(&first)
            .map(|(t, r)| match t.component {
                Some(c) => Ok(c),
                None => detect_component(&r.samples).ok_or_else(|| Error::UnknownComponent {
                    address: t.url.clone(),
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        tokio::time::sleep(interval).await;
        let second = join_all(self.targets.iter().map(|t| self.read(&t.url))).await;

        let mut readings = Readings::default();
        let all = queries();
        for (((target, component), before), after) in
            self.targets.iter().zip(components).zip(&first).zip(second)
        {
            let replica = Replica {
                component,
                name: host_port(&target.url),
                instance: host_port(&target.url),
            };
            let after = match after {
                Ok(after) => after,
                Err(e) => {
                    readings.vanished.push((
                        replica,
                        format!("answered the first scrape, not the second: {e}"),
                    ));
                    continue;
                }
            };
            let elapsed_s = after.at.duration_since(before.at).as_secs_f64();
            for query in all.iter().filter(|q| q.component == component) {
                let rows = evaluate(query, &before.samples, &after.samples, elapsed_s, &replica);
                readings
                    .rows
                    .entry((component, query.measure))
                    .or_default()
                    .extend(rows);
            }
        }
        // A scrape is always fresh; staleness is only judged for Prometheus.
        let assembly = assemble(&readings, interval, "the scraped endpoints");
        Ok(LoadSnapshot {
            time_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            window_s: interval.as_secs_f64(),
            source: Source::Scrape {
                endpoints: self.targets.iter().map(|t| t.url.clone()).collect(),
            },
            apiservers: assembly.apiservers,
            schedulers: assembly.schedulers,
            controller_managers: assembly.controller_managers,
            history: None,
            findings: assembly.findings,
        })
    }

    async fn read(&self, url: &str) -> Result<Reading> {
        let failed = |cause: String| Error::Scrape {
            address: url.to_owned(),
            cause,
        };
        // Stamped when asked, as Prometheus stamps a scrape: the server gathers its metrics
        // on arrival, and a large body can take seconds more to arrive.
        let at = Instant::now();
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| failed(cause_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(failed(format!("HTTP {status}: {}", body.trim())));
        }
        let body = response.text().await.map_err(|e| failed(cause_chain(&e)))?;
        let samples =
            parse(&body).map_err(|e| failed(format!("not the Prometheus text format: {e}")))?;
        Ok(Reading { at, samples })
    }
}

/// Parses the Prometheus text exposition format. The parser skips lines it cannot read, so
/// a body with lines but no sample is refused: a 200 with binary garbage was an empty scrape.
pub fn parse(body: &str) -> std::io::Result<Vec<Sample>> {
    let samples = Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))?.samples;
    let mut content = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    if samples.is_empty()
        && let Some(first) = content.next()
    {
        let shown: String = first.chars().take(60).collect();
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "no sample in {} lines; the first reads {shown:?}",
                content.count() + 1
            ),
        ));
    }
    Ok(samples)
}

/// Which component exposes these metrics, when that is unambiguous.
pub fn detect_component(samples: &[Sample]) -> Option<Component> {
    let has = |name: &str| samples.iter().any(|s| s.metric == name);
    let names_component = |metric: &str, label: &str, value: &str| {
        samples
            .iter()
            .any(|s| s.metric == metric && s.labels.get(label) == Some(value))
    };
    if has("apiserver_request_total") {
        Some(Component::Apiserver)
    } else if has("scheduler_schedule_attempts_total") || has("scheduler_pending_pods") {
        Some(Component::Scheduler)
    } else if names_component(
        "leader_election_master_status",
        "name",
        "kube-controller-manager",
    ) || names_component(
        "running_managed_controllers",
        "manager",
        "kube-controller-manager",
    ) {
        Some(Component::ControllerManager)
    } else {
        None
    }
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// A series' identity: its labels, sorted.
type SeriesKey = Vec<(String, String)>;

fn key(sample: &Sample) -> SeriesKey {
    let mut labels: SeriesKey = sample
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.sort();
    labels
}

fn scalar(value: &Value) -> Option<f64> {
    match value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
        Value::Histogram(_) | Value::Summary(_) => None,
    }
}

fn histogram(value: &Value) -> Option<Histogram> {
    match value {
        Value::Histogram(buckets) => Some(Histogram::from_buckets(
            buckets.iter().map(|b| (b.less_than, b.count)),
        )),
        _ => None,
    }
}

/// The same reduction the Prometheus source asks PromQL for, from two readings
/// `elapsed_s` apart.
pub fn evaluate(
    query: &Query,
    before: &[Sample],
    after: &[Sample],
    elapsed_s: f64,
    replica: &Replica,
) -> Vec<Row> {
    let metric = match query.reduction {
        // The parser files buckets under the histogram's base name.
        Reduction::BucketIncrease => query.metric.trim_end_matches("_bucket"),
        _ => query.metric,
    };
    let filter = query.filter.map(|(label, regex)| {
        (
            label,
            regex::Regex::new(&format!("^(?:{regex})$"))
                .expect("the query table's regexes are valid"),
        )
    });
    let selected = |samples: &'_ [Sample]| -> Vec<(SeriesKey, BTreeMap<String, String>, Value)> {
        samples
            .iter()
            .filter(|s| s.metric == metric)
            .filter(|s| {
                filter
                    .as_ref()
                    .is_none_or(|(label, re)| re.is_match(s.labels.get(label).unwrap_or("")))
            })
            .map(|s| {
                let by = query
                    .by
                    .iter()
                    .map(|l| (l.to_string(), s.labels.get(l).unwrap_or("").to_owned()))
                    .collect();
                (key(s), by, s.value.clone())
            })
            .collect()
    };
    let earlier: HashMap<SeriesKey, Value> = selected(before)
        .into_iter()
        .map(|(k, _, v)| (k, v))
        .collect();
    let mut groups: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
    let mut bucket_groups: BTreeMap<BTreeMap<String, String>, Histogram> = BTreeMap::new();
    for (series, by, value) in selected(after) {
        let previous = earlier.get(&series);
        if query.reduction == Reduction::BucketIncrease {
            let Some(later) = histogram(&value) else {
                continue;
            };
            let earlier = previous.and_then(histogram).unwrap_or_default();
            bucket_groups
                .entry(by)
                .or_default()
                .merge(&later.since(&earlier).0);
            continue;
        }
        let Some(now) = scalar(&value) else { continue };
        let then = previous.and_then(scalar);
        // A series first seen in the second reading started from zero in between.
        let grown = match then {
            Some(then) if now < then => now,
            Some(then) => now - then,
            None => now,
        };
        let reduced = match query.reduction {
            Reduction::Rate => grown / elapsed_s,
            Reduction::Increase => grown,
            Reduction::Resets => f64::from(u8::from(then.is_some_and(|then| now < then))),
            Reduction::Mean => then.map_or(now, |then| (then + now) / 2.0),
            Reduction::Max => then.map_or(now, |then| then.max(now)),
            Reduction::Last => now,
            Reduction::Age | Reduction::BucketIncrease => continue,
        };
        let slot = groups.entry(by).or_insert(match query.reduction {
            Reduction::Max => f64::NEG_INFINITY,
            _ => 0.0,
        });
        *slot = match query.reduction {
            Reduction::Max => slot.max(reduced),
            _ => *slot + reduced,
        };
    }
    let mut rows: Vec<Row> = groups
        .into_iter()
        .map(|(labels, value)| Row {
            replica: replica.clone(),
            labels,
            value,
        })
        .collect();
    for (labels, h) in bucket_groups {
        for bucket in h.buckets() {
            let mut labels = labels.clone();
            let le = if bucket.upper_bound == f64::INFINITY {
                "+Inf".to_owned()
            } else {
                bucket.upper_bound.to_string()
            };
            labels.insert("le".into(), le);
            rows.push(Row {
                replica: replica.clone(),
                labels,
                value: bucket.cumulative_count,
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Measure;

    /// Issue #17: a scrape answering 200 with binary garbage gave an empty snapshot and exit 0.
    #[test]
    fn a_body_with_lines_but_no_sample_is_refused() {
        let e = parse("\u{fffd}PNG\r\n\u{1a}\n\u{0}\u{0}IHDR").unwrap_err();
        assert!(e.to_string().contains("no sample in 3 lines"), "{e}");
        // Comments alone, or nothing, are an exporter with no metrics yet.
        assert!(parse("# HELP x y\n\n").unwrap().is_empty());
        assert!(parse("").unwrap().is_empty());
    }

    const BEFORE: &str = r#"# HELP apiserver_request_total Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",verb="GET",resource="configmaps"} 100
apiserver_request_total{code="201",component="apiserver",verb="POST",resource="configmaps"} 10
apiserver_request_total{code="200",component="apiserver",verb="WATCH",resource="pods"} 3
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{verb="GET",le="0.1"} 90
apiserver_request_duration_seconds_bucket{verb="GET",le="1"} 100
apiserver_request_duration_seconds_bucket{verb="GET",le="+Inf"} 100
apiserver_request_duration_seconds_sum{verb="GET"} 3
apiserver_request_duration_seconds_count{verb="GET"} 100
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 50
# TYPE apiserver_current_inflight_requests gauge
apiserver_current_inflight_requests{request_kind="readOnly"} 2
"#;

    const AFTER: &str = r#"# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",verb="GET",resource="configmaps"} 150
apiserver_request_total{code="429",component="apiserver",verb="GET",resource="configmaps"} 5
apiserver_request_total{code="201",component="apiserver",verb="POST",resource="configmaps"} 4
apiserver_request_total{code="200",component="apiserver",verb="WATCH",resource="pods"} 3
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{verb="GET",le="0.1"} 130
apiserver_request_duration_seconds_bucket{verb="GET",le="1"} 150
apiserver_request_duration_seconds_bucket{verb="GET",le="+Inf"} 155
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 55
# TYPE apiserver_current_inflight_requests gauge
apiserver_current_inflight_requests{request_kind="readOnly"} 6
"#;

    fn run(measure: Measure) -> Vec<Row> {
        let query = queries()
            .into_iter()
            .find(|q| q.measure == measure && q.component == Component::Apiserver)
            .unwrap();
        let replica = Replica {
            component: Component::Apiserver,
            name: "127.0.0.1:6443".into(),
            instance: "127.0.0.1:6443".into(),
        };
        evaluate(
            &query,
            &parse(BEFORE).unwrap(),
            &parse(AFTER).unwrap(),
            5.0,
            &replica,
        )
    }

    #[test]
    fn counter_deltas_new_series_and_resets() {
        let rows = run(Measure::Requests);
        let get = |verb: &str, code: &str| {
            rows.iter()
                .find(|r| r.label("verb") == verb && r.label("code") == code)
                .map(|r| r.value)
        };
        assert_eq!(get("GET", "200"), Some(10.0));
        // First seen in the second reading: counted from zero.
        assert_eq!(get("GET", "429"), Some(1.0));
        // Went from 10 down to 4: a restart, so 4 since it.
        assert_eq!(get("POST", "201"), Some(0.8));
        assert_eq!(get("WATCH", "200"), Some(0.0));
        let resets: f64 = run(Measure::RequestResets).iter().map(|r| r.value).sum();
        assert_eq!(resets, 1.0);
        assert_eq!(run(Measure::Cpu)[0].value, 1.0);
    }

    #[test]
    fn histogram_deltas_and_gauges() {
        let rows = run(Measure::LatencyBuckets);
        let bucket = |le: &str| rows.iter().find(|r| r.label("le") == le).map(|r| r.value);
        assert_eq!(bucket("0.1"), Some(40.0));
        assert_eq!(bucket("1"), Some(50.0));
        assert_eq!(bucket("+Inf"), Some(55.0));
        assert_eq!(run(Measure::InflightMean)[0].value, 4.0);
        assert_eq!(run(Measure::InflightMax)[0].value, 6.0);
    }

    #[test]
    fn components_are_detected_or_named() {
        assert_eq!(
            detect_component(&parse(BEFORE).unwrap()),
            Some(Component::Apiserver)
        );
        assert_eq!(
            detect_component(&parse("process_cpu_seconds_total 1\n").unwrap()),
            None
        );
        let target: ScrapeTarget = "scheduler=https://127.0.0.1:10259/metrics".parse().unwrap();
        assert_eq!(target.component, Some(Component::Scheduler));
        let target: ScrapeTarget = "https://127.0.0.1:6443/metrics".parse().unwrap();
        assert_eq!(target.component, None);
        assert!("etcd=http://x/metrics".parse::<ScrapeTarget>().is_err());
        assert!("127.0.0.1:6443".parse::<ScrapeTarget>().is_err());
        assert_eq!(
            host_port("https://127.0.0.1:6443/metrics"),
            "127.0.0.1:6443"
        );
    }
}
