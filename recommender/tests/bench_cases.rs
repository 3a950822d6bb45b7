//! What each benchmark case recommends — the action and every replica's recommended
//! settings, with the constraint that binds and what sized each limit — pinned in
//! `tests/bench_cases.json`, so that making the round faster cannot quietly change its
//! answer. When a change of the answer is intended, regenerate the file with
//!
//! ```sh
//! ARAK_BLESS=1 cargo test -p recommender --test bench_cases
//! ```
//!
//! and review its diff.

use std::collections::BTreeMap;

use recommender::recommend;
use serde_json::{Value, json};

#[path = "../benches/cases/mod.rs"]
mod cases;

const EXPECTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bench_cases.json");

fn results() -> BTreeMap<&'static str, Value> {
    cases::all()
        .into_iter()
        .map(|case| {
            let r = recommend(&case.snapshot, &case.policy, &case.current).unwrap();
            let apiservers: BTreeMap<_, _> = r
                .apiservers
                .iter()
                .map(|a| {
                    let value = json!({
                        "recommended": a.recommended,
                        "binding": a.binding.map(|b| b.constraint),
                        "sized_by": a.sized_by,
                    });
                    (a.target.name.clone(), value)
                })
                .collect();
            let clients = |list: &[recommender::recommendation::ClientRecommendation]| {
                list.iter()
                    .map(|c| (c.target.name.clone(), json!(c.recommended)))
                    .collect::<BTreeMap<_, _>>()
            };
            let value = json!({
                "action": r.action,
                "feasible": r.feasible,
                "apiservers": apiservers,
                "schedulers": clients(&r.schedulers),
                "controller_managers": clients(&r.controller_managers),
            });
            (case.name, value)
        })
        .collect()
}

#[test]
fn every_bench_case_recommends_what_it_did() {
    let actual = results();
    let text = serde_json::to_string_pretty(&actual).unwrap() + "\n";
    if std::env::var_os("ARAK_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(EXPECTED, text).unwrap();
        return;
    }
    let expected: BTreeMap<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(EXPECTED)
            .unwrap_or_else(|e| panic!("{EXPECTED}: {e}; create it with ARAK_BLESS=1")),
    )
    .unwrap();
    let mut changed = Vec::new();
    for (name, value) in &actual {
        match expected.get(*name) {
            Some(e) => differences(name, e, value, &mut changed),
            None => changed.push(format!("{name}: not in the expectation file")),
        }
    }
    for name in expected.keys() {
        if !actual.contains_key(name.as_str()) {
            changed.push(format!("{name}: expected, but no longer a case"));
        }
    }
    assert!(
        changed.is_empty(),
        "bench case results changed:\n{}\n\nIf the change is intended, regenerate {EXPECTED} with\n    ARAK_BLESS=1 cargo test -p recommender --test bench_cases\nand review its diff.",
        changed.join("\n")
    );
}

/// Every leaf where `actual` differs from `expected`, as `path: expected …, got …`.
fn differences(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            // A key on one side only compares with null.
            for key in e.keys().chain(a.keys().filter(|k| !e.contains_key(*k))) {
                let (e, a) = (e.get(key), a.get(key));
                let null = &Value::Null;
                differences(
                    &format!("{path}.{key}"),
                    e.unwrap_or(null),
                    a.unwrap_or(null),
                    out,
                );
            }
        }
        _ if expected != actual => out.push(format!("{path}: expected {expected}, got {actual}")),
        _ => {}
    }
}
