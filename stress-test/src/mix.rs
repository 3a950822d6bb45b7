//! The workload mix: which verb on which resource, and how often.
//!
//! A mix is read from YAML (a list of `{verb, resource, weight}`) or taken from the built-in
//! default. Everything is validated before the first request so that a typo fails fast and
//! names what is wrong.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The HTTP verbs the generator sends, named as the apiserver's `apiserver_request_total` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verb {
    Get,
    List,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    pub const ALL: [Verb; 6] = [
        Verb::Get,
        Verb::List,
        Verb::Post,
        Verb::Put,
        Verb::Patch,
        Verb::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::List => "LIST",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
        }
    }

    pub fn is_read_only(self) -> bool {
        matches!(self, Verb::Get | Verb::List)
    }

    /// Verbs that act on one existing object of the pool the run prepares.
    pub fn needs_pool(self) -> bool {
        matches!(self, Verb::Get | Verb::Put | Verb::Patch)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verb {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verb::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| MixError::UnknownVerb(s.to_owned()))
    }
}

/// API group/version path prefix of a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiGroup {
    Core,
    Apps,
    Batch,
}

impl ApiGroup {
    pub fn path_prefix(self) -> &'static str {
        match self {
            ApiGroup::Core => "/api/v1",
            ApiGroup::Apps => "/apis/apps/v1",
            ApiGroup::Batch => "/apis/batch/v1",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            ApiGroup::Core => "v1",
            ApiGroup::Apps => "apps/v1",
            ApiGroup::Batch => "batch/v1",
        }
    }
}

/// A resource kind the generator knows how to load.
#[expect(
    clippy::enum_variant_names,
    reason = "variants are the Kubernetes kind names"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    ConfigMaps,
    Secrets,
    Services,
    ServiceAccounts,
    Endpoints,
    LimitRanges,
    ResourceQuotas,
    PersistentVolumeClaims,
    PersistentVolumes,
    PodTemplates,
    ReplicationControllers,
    Deployments,
    ReplicaSets,
    StatefulSets,
    CronJobs,
    Namespaces,
    Nodes,
    Pods,
}

impl Resource {
    pub const ALL: [Resource; 18] = [
        Resource::ConfigMaps,
        Resource::Secrets,
        Resource::Services,
        Resource::ServiceAccounts,
        Resource::Endpoints,
        Resource::LimitRanges,
        Resource::ResourceQuotas,
        Resource::PersistentVolumeClaims,
        Resource::PersistentVolumes,
        Resource::PodTemplates,
        Resource::ReplicationControllers,
        Resource::Deployments,
        Resource::ReplicaSets,
        Resource::StatefulSets,
        Resource::CronJobs,
        Resource::Namespaces,
        Resource::Nodes,
        Resource::Pods,
    ];

    /// The plural name used in URLs and in the mix file.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::ConfigMaps => "configmaps",
            Resource::Secrets => "secrets",
            Resource::Services => "services",
            Resource::ServiceAccounts => "serviceaccounts",
            Resource::Endpoints => "endpoints",
            Resource::LimitRanges => "limitranges",
            Resource::ResourceQuotas => "resourcequotas",
            Resource::PersistentVolumeClaims => "persistentvolumeclaims",
            Resource::PersistentVolumes => "persistentvolumes",
            Resource::PodTemplates => "podtemplates",
            Resource::ReplicationControllers => "replicationcontrollers",
            Resource::Deployments => "deployments",
            Resource::ReplicaSets => "replicasets",
            Resource::StatefulSets => "statefulsets",
            Resource::CronJobs => "cronjobs",
            Resource::Namespaces => "namespaces",
            Resource::Nodes => "nodes",
            Resource::Pods => "pods",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Resource::ConfigMaps => "ConfigMap",
            Resource::Secrets => "Secret",
            Resource::Services => "Service",
            Resource::ServiceAccounts => "ServiceAccount",
            Resource::Endpoints => "Endpoints",
            Resource::LimitRanges => "LimitRange",
            Resource::ResourceQuotas => "ResourceQuota",
            Resource::PersistentVolumeClaims => "PersistentVolumeClaim",
            Resource::PersistentVolumes => "PersistentVolume",
            Resource::PodTemplates => "PodTemplate",
            Resource::ReplicationControllers => "ReplicationController",
            Resource::Deployments => "Deployment",
            Resource::ReplicaSets => "ReplicaSet",
            Resource::StatefulSets => "StatefulSet",
            Resource::CronJobs => "CronJob",
            Resource::Namespaces => "Namespace",
            Resource::Nodes => "Node",
            Resource::Pods => "Pod",
        }
    }

    pub fn group(self) -> ApiGroup {
        match self {
            Resource::Deployments | Resource::ReplicaSets | Resource::StatefulSets => {
                ApiGroup::Apps
            }
            Resource::CronJobs => ApiGroup::Batch,
            _ => ApiGroup::Core,
        }
    }

    pub fn is_namespaced(self) -> bool {
        !matches!(
            self,
            Resource::PersistentVolumes | Resource::Namespaces | Resource::Nodes
        )
    }

    /// Nodes and pods belong to the cluster under test, not to the run: they are only read.
    pub fn is_read_only(self) -> bool {
        matches!(self, Resource::Nodes | Resource::Pods)
    }

    pub fn allows(self, verb: Verb) -> bool {
        verb.is_read_only() || !self.is_read_only()
    }

    /// Kinds the run creates objects of (every kind except the read-only ones).
    pub fn writable() -> impl Iterator<Item = Resource> {
        Resource::ALL.into_iter().filter(|r| !r.is_read_only())
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}

impl FromStr for Resource {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resource::ALL
            .into_iter()
            .find(|r| r.plural() == s)
            .ok_or_else(|| MixError::UnknownResource(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MixError {
    #[error("unknown verb {0:?} (known: GET, LIST, POST, PUT, PATCH, DELETE)")]
    UnknownVerb(String),
    #[error("unknown resource {0:?} (known: {known})", known = known_resources())]
    UnknownResource(String),
    #[error("{verb} is not allowed on {resource}: the run only reads {resource}")]
    VerbNotAllowed { verb: Verb, resource: Resource },
    #[error("weight of {verb} {resource} must be a finite number >= 0, got {weight}")]
    BadWeight {
        verb: Verb,
        resource: Resource,
        weight: f64,
    },
    #[error("{verb} {resource} appears more than once in the mix")]
    Duplicate { verb: Verb, resource: Resource },
    #[error("the mix has no entry with a positive weight")]
    Empty,
    #[error("the weights of the mix add up to {0}; use smaller numbers (only ratios matter)")]
    TotalWeight(f64),
    #[error("cannot parse the mix file: {0}")]
    Yaml(String),
}

fn known_resources() -> String {
    Resource::ALL.map(Resource::plural).join(", ")
}

/// One line of the mix file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    verb: String,
    resource: String,
    weight: f64,
}

/// One validated line of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MixEntry {
    pub verb: Verb,
    pub resource: Resource,
    pub weight: f64,
}

/// A validated workload mix: entries with positive weight, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    entries: Vec<MixEntry>,
}

/// Relative weights of the verbs on one kind in the default mix.
const DEFAULT_VERB_WEIGHTS: [(Verb, f64); 6] = [
    (Verb::Get, 25.0),
    (Verb::List, 6.0),
    (Verb::Post, 4.0),
    (Verb::Patch, 2.0),
    (Verb::Put, 1.0),
    (Verb::Delete, 1.0),
];

impl Mix {
    /// Validates entries: known names, allowed verbs, sane weights, no duplicates.
    /// Zero-weight entries are accepted and dropped.
    pub fn new(entries: Vec<MixEntry>) -> Result<Self, MixError> {
        let mut seen = std::collections::HashSet::new();
        for e in &entries {
            if !e.resource.allows(e.verb) {
                return Err(MixError::VerbNotAllowed {
                    verb: e.verb,
                    resource: e.resource,
                });
            }
            if !e.weight.is_finite() || e.weight < 0.0 {
                return Err(MixError::BadWeight {
                    verb: e.verb,
                    resource: e.resource,
                    weight: e.weight,
                });
            }
            if !seen.insert((e.verb, e.resource)) {
                return Err(MixError::Duplicate {
                    verb: e.verb,
                    resource: e.resource,
                });
            }
        }
        let entries: Vec<MixEntry> = entries.into_iter().filter(|e| e.weight > 0.0).collect();
        if entries.is_empty() {
            return Err(MixError::Empty);
        }
        let mix = Mix { entries };
        // Finite weights can still add up to infinity, and every pick would then be NaN.
        if !mix.total_weight().is_finite() {
            return Err(MixError::TotalWeight(mix.total_weight()));
        }
        Ok(mix)
    }

    /// Parses and validates a YAML list of `{verb, resource, weight}`.
    pub fn from_yaml(text: &str) -> Result<Self, MixError> {
        let raw: Vec<RawEntry> =
            serde_norway::from_str(text).map_err(|e| MixError::Yaml(e.to_string()))?;
        let entries = raw
            .into_iter()
            .map(|r| {
                let verb: Verb = r.verb.parse()?;
                let resource: Resource = r.resource.parse()?;
                Ok(MixEntry {
                    verb,
                    resource,
                    weight: r.weight,
                })
            })
            .collect::<Result<Vec<_>, MixError>>()?;
        Mix::new(entries)
    }

    /// Every writable kind at 25 GET : 6 LIST : 4 POST : 2 PATCH : 1 PUT : 1 DELETE, plus
    /// LISTs of nodes and pods (GETs of those need objects the cluster may not have).
    pub fn default_mix() -> Self {
        let mut entries = Vec::new();
        for resource in Resource::writable() {
            for (verb, weight) in DEFAULT_VERB_WEIGHTS {
                entries.push(MixEntry {
                    verb,
                    resource,
                    weight,
                });
            }
        }
        for resource in [Resource::Nodes, Resource::Pods] {
            entries.push(MixEntry {
                verb: Verb::List,
                resource,
                weight: 6.0,
            });
        }
        Mix::new(entries).expect("the default mix is valid")
    }

    pub fn entries(&self) -> &[MixEntry] {
        &self.entries
    }

    pub fn total_weight(&self) -> f64 {
        self.entries.iter().map(|e| e.weight).sum()
    }

    /// Resources that appear with any verb.
    pub fn resources(&self) -> Vec<Resource> {
        let mut r: Vec<Resource> = self.entries.iter().map(|e| e.resource).collect();
        r.sort();
        r.dedup();
        r
    }

    pub fn has(&self, verb: Verb, resource: Resource) -> bool {
        self.entries
            .iter()
            .any(|e| e.verb == verb && e.resource == resource)
    }

    /// YAML of the mix, in the format `from_yaml` reads.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(&self.entries).expect("mix entries serialise")
    }
}

/// Picks mix entries with probability proportional to weight, from a uniform number in [0, 1).
#[derive(Clone, Debug)]
pub struct WeightedPicker {
    /// Cumulative weights normalised so the last is 1.
    cumulative: Vec<f64>,
}

impl WeightedPicker {
    pub fn new(mix: &Mix) -> Self {
        let total = mix.total_weight();
        let mut acc = 0.0;
        let mut cumulative: Vec<f64> = mix
            .entries()
            .iter()
            .map(|e| {
                acc += e.weight;
                acc / total
            })
            .collect();
        if let Some(last) = cumulative.last_mut() {
            *last = 1.0;
        }
        WeightedPicker { cumulative }
    }

    /// Index of the entry for `u` in [0, 1).
    pub fn pick(&self, u: f64) -> usize {
        let i = self.cumulative.partition_point(|&c| c <= u);
        i.min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_valid_mix() {
        let yaml = "
- {verb: GET, resource: configmaps, weight: 10}
- verb: post
  resource: namespaces
  weight: 2.5
- {verb: LIST, resource: nodes, weight: 1}
- {verb: DELETE, resource: secrets, weight: 0}
";
        let mix = Mix::from_yaml(yaml).unwrap();
        assert_eq!(mix.entries().len(), 3, "zero-weight entry dropped");
        assert_eq!(mix.entries()[1].verb, Verb::Post);
        assert_eq!(mix.entries()[1].resource, Resource::Namespaces);
        assert_eq!(mix.total_weight(), 13.5);
    }

    #[test]
    fn refuses_unknown_verb_naming_it() {
        let err = Mix::from_yaml("- {verb: WATCH, resource: pods, weight: 1}").unwrap_err();
        assert_eq!(err, MixError::UnknownVerb("WATCH".into()));
        assert!(err.to_string().contains("\"WATCH\""));
    }

    #[test]
    fn refuses_unknown_resource_naming_it() {
        let err = Mix::from_yaml("- {verb: GET, resource: widgets, weight: 1}").unwrap_err();
        assert_eq!(err, MixError::UnknownResource("widgets".into()));
        assert!(err.to_string().contains("widgets"));
        assert!(err.to_string().contains("configmaps"), "lists known kinds");
    }

    #[test]
    fn refuses_writes_to_read_only_kinds() {
        for (verb, res) in [("POST", "nodes"), ("DELETE", "pods"), ("PATCH", "nodes")] {
            let yaml = format!("- {{verb: {verb}, resource: {res}, weight: 1}}");
            let err = Mix::from_yaml(&yaml).unwrap_err();
            assert!(matches!(err, MixError::VerbNotAllowed { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(verb) && msg.contains(res), "{msg}");
        }
    }

    #[test]
    fn refuses_bad_weights_duplicates_and_empty() {
        assert!(matches!(
            Mix::from_yaml("- {verb: GET, resource: secrets, weight: -1}"),
            Err(MixError::BadWeight { .. })
        ));
        assert!(matches!(
            Mix::from_yaml("- {verb: GET, resource: secrets, weight: .nan}"),
            Err(MixError::BadWeight { .. })
        ));
        assert!(matches!(
            Mix::from_yaml(
                "- {verb: GET, resource: secrets, weight: 1}\n- {verb: get, resource: secrets, weight: 2}"
            ),
            Err(MixError::Duplicate { .. })
        ));
        assert_eq!(
            Mix::from_yaml("- {verb: GET, resource: secrets, weight: 0}"),
            Err(MixError::Empty)
        );
        assert_eq!(Mix::from_yaml("[]"), Err(MixError::Empty));
        let err = Mix::from_yaml(
            "- {verb: GET, resource: secrets, weight: 1e308}\n- {verb: LIST, resource: secrets, weight: 1e308}",
        )
        .unwrap_err();
        assert_eq!(err, MixError::TotalWeight(f64::INFINITY));
        assert!(err.to_string().contains("add up to inf"), "{err}");
    }

    #[test]
    fn refuses_unknown_fields_and_malformed_yaml() {
        assert!(matches!(
            Mix::from_yaml("- {verb: GET, resource: secrets, weight: 1, size: 3}"),
            Err(MixError::Yaml(_))
        ));
        assert!(matches!(
            Mix::from_yaml("- {verb: GET, resource: secrets}"),
            Err(MixError::Yaml(_))
        ));
        assert!(matches!(
            Mix::from_yaml("verb: GET"),
            Err(MixError::Yaml(_))
        ));
    }

    #[test]
    fn default_mix_covers_every_kind_with_the_documented_ratios() {
        let mix = Mix::default_mix();
        assert_eq!(mix.resources().len(), Resource::ALL.len());
        assert!(Resource::writable().count() >= 15);
        for r in Resource::writable() {
            assert!(!r.is_read_only());
            for (verb, w) in DEFAULT_VERB_WEIGHTS {
                let e = mix
                    .entries()
                    .iter()
                    .find(|e| e.verb == verb && e.resource == r)
                    .unwrap();
                assert_eq!(e.weight, w);
            }
        }
        assert!(mix.has(Verb::List, Resource::Nodes));
        assert!(!mix.has(Verb::Post, Resource::Nodes));
        assert!(Resource::writable().any(|r| !r.is_namespaced()));
    }

    #[test]
    fn default_mix_round_trips_through_yaml() {
        let mix = Mix::default_mix();
        assert_eq!(Mix::from_yaml(&mix.to_yaml()).unwrap(), mix);
    }

    #[test]
    fn picker_follows_weights() {
        let mix = Mix::from_yaml(
            "- {verb: GET, resource: secrets, weight: 1}\n- {verb: LIST, resource: secrets, weight: 3}",
        )
        .unwrap();
        let p = WeightedPicker::new(&mix);
        assert_eq!(p.pick(0.0), 0);
        assert_eq!(p.pick(0.2499), 0);
        assert_eq!(p.pick(0.25), 1);
        assert_eq!(p.pick(0.999_999), 1);
        let n = 100_000;
        let firsts = (0..n).filter(|i| p.pick(*i as f64 / n as f64) == 0).count();
        assert_eq!(firsts, n / 4);
    }
}
