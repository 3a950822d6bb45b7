//! CPU and memory a container asked for, in the units cgroups take.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// The scheduler-period CFS uses unless told otherwise.
pub const CFS_PERIOD_US: u64 = 100_000;
/// The kernel's smallest CFS quota.
const MIN_CFS_QUOTA_US: u64 = 1_000;

/// The part of a container's resources the agent enforces: CPU and memory limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

impl Limits {
    pub fn of(resources: Option<&ResourceRequirements>) -> Self {
        let limit = |name: &str| {
            resources
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get(name))
                .and_then(|q| parse_quantity(&q.0))
        };
        Self {
            cpu_millis: limit("cpu").map(|cores| (cores * 1000.0).ceil() as u64),
            memory_bytes: limit("memory").map(|bytes| bytes.ceil() as u64),
        }
    }

    /// `cpu.cfs_quota_us`: the CPU time per period the container may use; -1 is unlimited.
    pub fn cfs_quota_us(&self) -> i64 {
        self.cpu_millis.map_or(-1, |millis| {
            let quota = millis.saturating_mul(CFS_PERIOD_US) / 1000;
            i64::try_from(quota.max(MIN_CFS_QUOTA_US)).unwrap_or(i64::MAX)
        })
    }

    /// `memory.limit_in_bytes`; -1 is unlimited.
    pub fn memory_limit(&self) -> i64 {
        self.memory_bytes
            .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX))
    }
}

/// The CPU and memory part of a container's resources, as the status reports them.
pub fn cpu_and_memory(resources: Option<&ResourceRequirements>) -> ResourceRequirements {
    let pick = |map: Option<&BTreeMap<String, Quantity>>| {
        let picked: BTreeMap<String, Quantity> = map
            .into_iter()
            .flatten()
            .filter(|(name, _)| *name == "cpu" || *name == "memory")
            .map(|(n, q)| (n.clone(), q.clone()))
            .collect();
        (!picked.is_empty()).then_some(picked)
    };
    ResourceRequirements {
        limits: pick(resources.and_then(|r| r.limits.as_ref())),
        requests: pick(resources.and_then(|r| r.requests.as_ref())),
        claims: None,
    }
}

/// A Kubernetes quantity ("250m", "2", "512Mi", "1G", "1e3") in base units.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let e: i32 = exponent.strip_prefix(['e', 'E'])?.parse().ok()?;
            10f64.powi(e)
        }
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("512Mi"), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("12E-1"), Some(12.0 * 0.1));
        assert_eq!(parse_quantity("100k"), Some(1e5));
        assert_eq!(parse_quantity("lots"), None);
        assert_eq!(parse_quantity("1Xi"), None);
    }

    fn requirements(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> ResourceRequirements {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            )
        };
        ResourceRequirements {
            limits: map(limits),
            requests: map(requests),
            claims: None,
        }
    }

    #[test]
    fn limits_become_cgroup_values() {
        let r = requirements(&[("cpu", "250m"), ("memory", "1Gi")], &[("cpu", "100m")]);
        let l = Limits::of(Some(&r));
        assert_eq!(l.cpu_millis, Some(250));
        assert_eq!(l.cfs_quota_us(), 25_000);
        assert_eq!(l.memory_limit(), 1 << 30);
        assert_eq!(Limits::of(None).cfs_quota_us(), -1);
        assert_eq!(Limits::of(None).memory_limit(), -1);
        let tiny = requirements(&[("cpu", "1m")], &[]);
        assert_eq!(Limits::of(Some(&tiny)).cfs_quota_us(), 1_000);
        let fraction = requirements(&[("cpu", "0.0015")], &[]);
        assert_eq!(Limits::of(Some(&fraction)).cpu_millis, Some(2));
    }

    #[test]
    fn status_resources_keep_cpu_and_memory_only() {
        let r = requirements(
            &[("cpu", "1"), ("example.com/gpu", "1")],
            &[("memory", "1Gi")],
        );
        let s = cpu_and_memory(Some(&r));
        assert_eq!(s.limits.unwrap().keys().collect::<Vec<_>>(), ["cpu"]);
        assert_eq!(s.requests.unwrap().keys().collect::<Vec<_>>(), ["memory"]);
        assert_eq!(cpu_and_memory(None), ResourceRequirements::default());
    }
}
