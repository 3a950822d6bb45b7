//! Which series belong to which component and replica: the `--config` YAML file.
//!
//! ```yaml
//! scrape_interval: 30s         # optional: else asked of Prometheus; stale = older than twice this
//! apiserver:
//!   job: apiserver|kube-apiserver   # regex on the `job` label (fully anchored, as PromQL)
//!   matchers: { cluster: arak-loopback }   # more label regexes, all must match
//!   replica_labels: [pod, instance]        # the first present names the replica
//! scheduler: { job: kube-scheduler }
//! controller_manager: { job: kube-controller-manager }
//! ```
//! Omitted parts keep their defaults, which match `config/prometheus/loopback-cluster.yml`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use recommender::snapshot::Component;
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchConfig {
    /// How often Prometheus scrapes the components; a sample older than twice this is stale.
    /// `None`: the largest interval among Prometheus' active targets of these jobs.
    #[serde(with = "duration_text")]
    pub scrape_interval: Option<Duration>,
    pub apiserver: ComponentRule,
    pub scheduler: ComponentRule,
    pub controller_manager: ComponentRule,
}

/// How to find one component's series.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentRule {
    /// Regex the `job` label must match.
    pub job: String,
    /// Further label → regex matchers.
    #[serde(default)]
    pub matchers: BTreeMap<String, String>,
    /// Labels naming the replica, in order of preference; `instance` is always tried last.
    #[serde(default = "default_replica_labels")]
    pub replica_labels: Vec<String>,
}

fn default_replica_labels() -> Vec<String> {
    vec!["pod".into(), "instance".into()]
}

impl ComponentRule {
    fn for_job(job: &str) -> Self {
        ComponentRule {
            job: job.into(),
            matchers: BTreeMap::new(),
            replica_labels: default_replica_labels(),
        }
    }

    /// The matchers inside a PromQL selector's braces, e.g. `job=~"apiserver"`.
    pub fn selector(&self) -> String {
        std::iter::once(("job", self.job.as_str()))
            .chain(self.matchers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map(|(label, regex)| format!("{label}=~\"{}\"", escape_promql(regex)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Labels to keep when aggregating: everything that tells replicas apart.
    pub fn grouping(&self) -> Vec<String> {
        let mut labels = vec!["job".to_string(), "instance".to_string()];
        for l in &self.replica_labels {
            if !labels.contains(l) {
                labels.push(l.clone());
            }
        }
        labels
    }

    /// The replica's name: the first replica label present, else the instance.
    pub fn replica_name<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
        self.replica_labels
            .iter()
            .map(String::as_str)
            .chain(["instance"])
            .find_map(|l| label(l).filter(|v| !v.is_empty()))
    }
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            scrape_interval: None,
            apiserver: ComponentRule::for_job("apiserver|kube-apiserver"),
            scheduler: ComponentRule::for_job("kube-scheduler|scheduler"),
            controller_manager: ComponentRule::for_job(
                "kube-controller-manager|controller-manager",
            ),
        }
    }
}

impl FetchConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|cause| Error::ReadFile {
            path: path.to_owned(),
            cause,
        })?;
        let config: FetchConfig =
            serde_norway::from_str(&text).map_err(|e| Error::InvalidFile {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        config.validate().map_err(|reason| Error::InvalidFile {
            path: path.to_owned(),
            reason,
        })?;
        Ok(config)
    }

    /// Whether a `job` label value belongs to any component.
    pub fn matches_job(&self, job: &str) -> bool {
        [&self.apiserver, &self.scheduler, &self.controller_manager]
            .iter()
            .any(|rule| {
                regex::Regex::new(&format!("^(?:{})$", rule.job)).is_ok_and(|re| re.is_match(job))
            })
    }

    pub fn rule(&self, component: Component) -> &ComponentRule {
        match component {
            Component::Apiserver => &self.apiserver,
            Component::Scheduler => &self.scheduler,
            Component::ControllerManager => &self.controller_manager,
        }
    }

    /// Checks the regexes here, so that a typo is not reported by Prometheus as a bad query.
    fn validate(&self) -> std::result::Result<(), String> {
        for rule in [&self.apiserver, &self.scheduler, &self.controller_manager] {
            for (label, regex) in std::iter::once(("job", &rule.job))
                .chain(rule.matchers.iter().map(|(k, v)| (k.as_str(), v)))
            {
                regex::Regex::new(regex)
                    .map_err(|e| format!("the regex for `{label}` is invalid: {e}"))?;
                if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("`{label}` is not a label name"));
                }
            }
        }
        Ok(())
    }
}

fn escape_promql(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Parses `250ms`, `15s`, `5m`, `1h` (and plain seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 250ms, 15s, 5m or 1h"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("`{text}`: unit must be ms, s, m or h")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("`{text}` must be positive"));
    }
    // `from_secs_f64` panics past u64::MAX seconds (`99999999999999999999h`).
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is too long"))
}

/// A PromQL range like `300000ms`; milliseconds keep sub-second steps exact.
pub fn promql_range(duration: Duration) -> String {
    format!("{}ms", duration.as_millis().max(1))
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("fast").is_err());
        // Found by tests/hostile.rs: this panicked in Duration::from_secs_f64.
        assert!(parse_duration("99999999999999999999h").is_err());
        assert_eq!(promql_range(Duration::from_secs(300)), "300000ms");
    }

    #[test]
    fn partial_yaml_keeps_defaults_and_builds_selectors() {
        let config: FetchConfig = serde_norway::from_str(
            "scrape_interval: 30s\napiserver:\n  job: tested-apiserver\n  matchers: {node: \"master-.*\"}\n  replica_labels: [node]\n",
        )
        .unwrap();
        assert_eq!(config.scrape_interval, Some(Duration::from_secs(30)));
        assert_eq!(FetchConfig::default().scrape_interval, None);
        assert_eq!(
            config.apiserver.selector(),
            r#"job=~"tested-apiserver",node=~"master-.*""#
        );
        assert_eq!(config.apiserver.grouping(), ["job", "instance", "node"]);
        assert_eq!(config.scheduler, FetchConfig::default().scheduler);
        let labels = |l: &str| match l {
            "instance" => Some("127.0.1.1:6443"),
            _ => None,
        };
        assert_eq!(
            config.apiserver.replica_name(labels),
            Some("127.0.1.1:6443")
        );
    }

    #[test]
    fn invalid_regexes_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("load-fetcher-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad_regex = dir.join("bad-regex.yml");
        std::fs::write(&bad_regex, "apiserver: { job: \"(unclosed\" }\n").unwrap();
        let e = FetchConfig::from_file(&bad_regex).unwrap_err().to_string();
        assert!(e.contains("bad-regex.yml") && e.contains("job"), "{e}");
        let unknown = dir.join("unknown.yml");
        std::fs::write(&unknown, "apiservers: {}\n").unwrap();
        assert!(FetchConfig::from_file(&unknown).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
