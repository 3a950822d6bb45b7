//! Kubernetes resource quantities as numbers: CPU in cores, memory in bytes.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Binary and decimal suffixes, longest first so that `Mi` is not read as `M`.
const SUFFIXES: [(&str, f64); 14] = [
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
];

/// The quantity's value in base units (cores, bytes); None if it is not a quantity.
pub fn parse(quantity: &Quantity) -> Option<f64> {
    let text = quantity.0.trim();
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| Some((text.strip_suffix(suffix)?, *factor)))
        // `E` is exa unless it is an exponent (`1E3`), which parses as a plain number.
        .or_else(|| {
            let number = text.strip_suffix('E')?;
            Some((number, 1e18))
        })
        .unwrap_or((text, 1.0));
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some(value * factor)
}

/// CPU in millicores, the resolution Kubernetes keeps.
pub fn cpu(cores: f64) -> Quantity {
    Quantity(format!("{}m", (cores * 1000.0).round() as i64))
}

/// Memory in whole bytes, as `Mi` when it is a whole number of them.
pub fn memory(bytes: f64) -> Quantity {
    let bytes = bytes.round() as i64;
    if bytes % 1_048_576 == 0 {
        Quantity(format!("{}Mi", bytes / 1_048_576))
    } else {
        Quantity(bytes.to_string())
    }
}

/// Whether two CPU amounts are the same at millicore resolution.
pub fn same_cpu(a: f64, b: f64) -> bool {
    (a * 1000.0).round() == (b * 1000.0).round()
}

/// Whether two memory amounts are the same to the byte.
pub fn same_memory(a: f64, b: f64) -> bool {
    a.round() == b.round()
}

/// Requests and limits equal as quantities ("0.5" is "500m").
pub fn same_resources(a: Option<&ResourceRequirements>, b: Option<&ResourceRequirements>) -> bool {
    let side = |r: Option<&ResourceRequirements>, limits: bool| {
        r.and_then(|r| {
            if limits {
                r.limits.clone()
            } else {
                r.requests.clone()
            }
        })
        .unwrap_or_default()
    };
    [false, true].into_iter().all(|limits| {
        let (x, y) = (side(a, limits), side(b, limits));
        x.len() == y.len()
            && x.iter().all(|(key, q)| {
                y.get(key).is_some_and(|other| match key.as_str() {
                    "cpu" => parse(q)
                        .zip(parse(other))
                        .is_some_and(|(m, n)| same_cpu(m, n)),
                    "memory" => parse(q)
                        .zip(parse(other))
                        .is_some_and(|(m, n)| same_memory(m, n)),
                    _ => q == other,
                })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    #[test]
    fn parses_the_forms_kubernetes_writes() {
        assert_eq!(parse(&q("250m")), Some(0.25));
        assert_eq!(parse(&q("2")), Some(2.0));
        assert_eq!(parse(&q("1.5")), Some(1.5));
        assert_eq!(parse(&q("512Mi")), Some(536_870_912.0));
        assert_eq!(parse(&q("1Gi")), Some(1_073_741_824.0));
        assert_eq!(parse(&q("1k")), Some(1000.0));
        assert_eq!(parse(&q("1e3")), Some(1000.0));
        assert_eq!(parse(&q("1E3")), Some(1000.0));
        assert_eq!(parse(&q("2E")), Some(2e18));
        assert_eq!(parse(&q("12x")), None);
    }

    #[test]
    fn writes_what_it_reads() {
        assert_eq!(cpu(0.25).0, "250m");
        assert_eq!(memory(536_870_912.0).0, "512Mi");
        assert_eq!(memory(1000.0).0, "1000");
        for cores in [0.001, 0.25, 1.0, 3.5] {
            assert!(same_cpu(parse(&cpu(cores)).unwrap(), cores));
        }
        for bytes in [1.0, 1000.0, 536_870_912.0, 3e9] {
            assert!(same_memory(parse(&memory(bytes)).unwrap(), bytes));
        }
    }

    fn resources(value: serde_json::Value) -> ResourceRequirements {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn resources_compare_as_quantities() {
        let a = resources(json!({"requests": {"cpu": "0.5", "memory": "1Gi"}}));
        let same = resources(json!({"requests": {"cpu": "500m", "memory": "1073741824"}}));
        assert!(same_resources(Some(&a), Some(&same)));
        let more = resources(json!({"requests": {"cpu": "600m", "memory": "1Gi"}}));
        assert!(!same_resources(Some(&a), Some(&more)));
        let limited =
            resources(json!({"requests": {"cpu": "0.5", "memory": "1Gi"}, "limits": {"cpu": "1"}}));
        assert!(!same_resources(Some(&a), Some(&limited)));
        assert!(!same_resources(None, Some(&a)));
        assert!(same_resources(None, None));
    }
}
