//! Hostile policies, current settings and snapshots: the example files with numbers swapped
//! for any float (NaN, ±∞, subnormal, 1e308, negative). Each is refused at the door, or the
//! round on it finishes with finite costs and probabilities. This is what found millicores
//! typed as cores running for minutes and "cost NaN -> 12.49".
//!
//! Few cases per CI run; the long fuzz job sets `PROPTEST_CASES`, e.g.
//! `PROPTEST_CASES=20000 cargo test --release -p recommender --test hostile`.

use proptest::prelude::*;
use proptest::test_runner::Config;
use recommender::snapshot::LoadSnapshot;
use recommender::{Policy, Recommendation, recommend};
use serde_json::Value;

const POLICY: &str = include_str!("../../config/examples/policy.yaml");
const SNAPSHOT: &str = include_str!("../../config/examples/snapshot-synthetic.json");

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32),
        ..Config::default()
    }
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        proptest::num::f64::ANY,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(0.0),
        Just(-1.0),
        Just(1e-9),
        Just(4e4),
        Just(1e12),
        0.0f64..100.0,
    ]
}

/// Paths to every number in a JSON value, so a strategy can pick some to replace.
fn number_paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Number(_) => out.push(at.clone()),
        Value::Object(m) => m.iter().for_each(|(k, v)| {
            at.push(k.clone());
            number_paths(v, at, out);
            at.pop();
        }),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| {
            at.push(i.to_string());
            number_paths(v, at, out);
            at.pop();
        }),
        _ => {}
    }
}

/// Replaces the numbers at some paths. JSON has no NaN or ∞, so those go in as YAML's
/// `.nan`/`.inf` strings for the policy (which YAML reads as floats) and the snapshot is
/// changed after parsing instead.
fn replaced(base: &Value, picks: &[(prop::sample::Index, f64)]) -> Value {
    let mut paths = Vec::new();
    number_paths(base, &mut Vec::new(), &mut paths);
    let mut v = base.clone();
    for (index, x) in picks {
        let path = index.get(&paths);
        let mut slot = &mut v;
        for key in path {
            slot = match slot {
                Value::Array(a) => &mut a[key.parse::<usize>().unwrap()],
                other => &mut other[key.as_str()],
            };
        }
        *slot = serde_json::Number::from_f64(*x)
            .map_or_else(|| Value::String(yaml_float(*x)), Value::Number);
    }
    v
}

fn yaml_float(x: f64) -> String {
    if x.is_nan() {
        ".nan".into()
    } else if x > 0.0 {
        ".inf".into()
    } else {
        "-.inf".into()
    }
}

fn sane(r: &Recommendation) -> Result<(), TestCaseError> {
    for cost in [r.current_cost, r.recommended_cost].into_iter().flatten() {
        prop_assert!(cost.is_finite() && cost >= 0.0, "cost {cost} in {r:?}");
    }
    for a in &r.apiservers {
        for p in [&a.predicted_current, &a.predicted_recommended]
            .into_iter()
            .flatten()
        {
            prop_assert!((0.0..=1.0).contains(&p.cpu_utilization), "{p:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_hostile_policy_is_refused_or_its_round_is_sane(
        picks in prop::collection::vec((any::<prop::sample::Index>(), float()), 1..4),
    ) {
        let base: Value = serde_norway::from_str(POLICY).unwrap();
        // Through YAML text, as a user's file arrives: `.nan` strings become floats there.
        let text = serde_norway::to_string(&replaced(&base, &picks))
            .unwrap()
            .replace("'.nan'", ".nan")
            .replace("'.inf'", ".inf")
            .replace("'-.inf'", "-.inf");
        let Ok(policy) = Policy::from_yaml(&text) else { return Ok(()) };
        let snapshot: LoadSnapshot = serde_json::from_str(SNAPSHOT).unwrap();
        let current = policy.current.clone().unwrap();
        if let Ok(r) = recommend(&snapshot, &policy, &current) {
            sane(&r)?;
        }
    }

    #[test]
    fn a_hostile_snapshot_is_refused_or_its_round_is_sane(
        picks in prop::collection::vec((any::<prop::sample::Index>(), float()), 1..4),
    ) {
        let base: Value = serde_json::from_str(SNAPSHOT).unwrap();
        let finite: Vec<_> = picks.iter().map(|(i, x)| (*i, if x.is_finite() { *x } else { 1e300 })).collect();
        let Ok(snapshot) = serde_json::from_value::<LoadSnapshot>(replaced(&base, &finite)) else {
            return Ok(());
        };
        if snapshot.validate().is_err() {
            return Ok(());
        }
        let policy = Policy::from_yaml(POLICY).unwrap();
        let current = policy.current.clone().unwrap();
        if let Ok(r) = recommend(&snapshot, &policy, &current) {
            sane(&r)?;
        }
    }
}
