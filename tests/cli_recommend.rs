//! `arak recommend` on the example files, as the README shows it: the decision explained.

use std::process::{Command, Output};

fn arak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arak"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("arak runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("UTF-8")
}

const EXAMPLE: [&str; 5] = [
    "recommend",
    "--snapshot",
    "config/examples/snapshot-synthetic.json",
    "--policy",
    "config/examples/policy.yaml",
];

#[test]
fn every_apiserver_says_what_sized_its_limits() {
    let table = stdout(&arak(&EXAMPLE));
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.trim_start().starts_with("sized by"))
        .collect();
    assert_eq!(rows.len(), 3, "one per apiserver in\n{table}");
    for row in rows {
        assert!(
            row.contains("readOnly limit") && row.contains("queue"),
            "{row}"
        );
    }

    let json: serde_json::Value = serde_json::from_str(&stdout(&arak(
        &[&EXAMPLE[..], &["--output", "json"]].concat(),
    )))
    .expect("JSON");
    for a in json["apiservers"].as_array().unwrap() {
        let s = &a["sized_by"];
        for knob in [
            "max_requests_inflight",
            "max_mutating_requests_inflight",
            "queue_length",
        ] {
            assert!(s[knob].is_string(), "{knob} in {s}");
        }
    }
}
