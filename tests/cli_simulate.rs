//! `arak simulate` as a newcomer runs it: the table, the JSON, the plots and a bad workload.

use std::path::PathBuf;
use std::process::{Command, Output};

fn arak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arak"))
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
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// A fresh directory of this test's own under cargo's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli_simulate-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn summary<'a>(report: &'a serde_json::Value, policy: &str) -> &'a serde_json::Value {
    report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["summary"])
        .find(|s| s["policy"] == policy)
        .unwrap_or_else(|| panic!("no {policy} in {report}"))
}

#[test]
fn json_compares_the_three_policies_and_plots_are_written() {
    let out = scratch("json");
    let text = stdout(&arak(&[
        "simulate",
        "--intervals",
        "12",
        "--sample-s",
        "4",
        "--seed",
        "7",
        "--output",
        "json",
        "--out",
        out.to_str().unwrap(),
    ]));
    let report: serde_json::Value = serde_json::from_str(&text).expect("stdout is JSON");
    let (native, fixed, arak) = (
        summary(&report, "native"),
        summary(&report, "static"),
        summary(&report, "arak"),
    );
    for s in [native, fixed, arak] {
        for key in [
            "read_only_p99_worst_s",
            "read_only_p99_median_s",
            "mutating_p99_worst_s",
            "mutating_p99_median_s",
            "apiserver_core_hours",
            "storm_pod_startup_p99_s",
        ] {
            let v = s[key].as_f64().unwrap_or_else(|| panic!("{key} in {s}"));
            assert!(v.is_finite() && v > 0.0, "{key} = {v} in {s}");
        }
        assert!(s["read_only_p99_median_s"].as_f64() <= s["read_only_p99_worst_s"].as_f64());
        let rejection = s["rejection_rate"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&rejection), "{s}");
        let minutes = s["slo_violation_minutes"].as_f64().unwrap();
        assert!((0.0..=1440.0).contains(&minutes), "{s}");
    }
    // Defaults sized for a smaller cluster fail the peak and the storm; every core of the
    // node does not, and costs the most.
    let f = |s: &serde_json::Value, k: &str| s[k].as_f64().unwrap();
    assert!(f(native, "rejection_rate") > 1e-3, "{native}");
    assert!(f(native, "slo_violation_minutes") > 60.0, "{native}");
    assert_eq!(f(fixed, "rejection_rate"), 0.0, "{fixed}");
    assert_eq!(f(fixed, "slo_violation_minutes"), 0.0, "{fixed}");
    assert!(f(native, "storm_pod_startup_p99_s") > 5.0 * f(fixed, "storm_pod_startup_p99_s"));
    for other in [native, arak] {
        assert!(f(fixed, "apiserver_core_hours") > f(other, "apiserver_core_hours"));
    }
    // arak does not take the clients' QPS away on quiet hours: the storm's pods start about
    // as fast as under static (with the QPS cut to the quiet need they waited minutes).
    assert!(
        f(arak, "storm_pod_startup_p99_s") < 2.0 * f(fixed, "storm_pod_startup_p99_s"),
        "{arak}"
    );
    // 3 replicas × 8 cores × 24 h.
    assert!(
        (f(fixed, "apiserver_core_hours") - 576.0).abs() < 1e-6,
        "{fixed}"
    );
    let activity = &report["policies"][2]["arak"];
    assert_eq!(activity["rounds"], 12, "{activity}");
    // The room arak leaves APF is what the updater writes: never empty, whole requests per
    // queue of the default level's hand of 6.
    for interval in report["policies"][2]["intervals"].as_array().unwrap() {
        for room in interval["queue_length"].as_array().unwrap() {
            let room = room.as_u64().unwrap();
            assert!(
                room > 0 && room.is_multiple_of(6),
                "room {room} in {interval}"
            );
        }
    }

    for name in [
        "simulate-load.svg",
        "simulate-p99.svg",
        "simulate-arak-settings.svg",
    ] {
        let svg = std::fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{name}");
        assert!(
            svg.contains("<polyline") || svg.contains("<path"),
            "{name} has no lines"
        );
    }
}

#[test]
fn the_table_has_a_row_per_policy_and_a_seed_repeats_the_day() {
    let out = scratch("table");
    let run = || {
        stdout(&arak(&[
            "simulate",
            "--intervals",
            "4",
            "--sample-s",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]))
    };
    let table = run();
    for policy in ["native", "static", "arak"] {
        assert!(
            table.lines().any(|l| l.starts_with(policy)),
            "no {policy} row in\n{table}"
        );
    }
    assert!(table.contains("P99") && table.contains("core-h"), "{table}");
    // Everything but the run time is a function of the seed.
    let strip = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("Ran in"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&table), strip(&run()));
}

#[test]
fn a_malformed_workload_fails_naming_the_problem() {
    let dir = scratch("bad");
    let built_in = include_str!("../config/examples/simulate-day.yaml");
    let cases = [
        (
            built_in.replace("trough_share: 0.3", "trough_share: 2"),
            "trough_share",
        ),
        (built_in.replace("pods: 3000", "pods: lots"), "pod_storms"),
        // Issue #17: ran for minutes with no output.
        (
            built_in.replace("peak_read_only_rps: 6000", "peak_read_only_rps: 1e9"),
            "peak_read_only_rps is 1000000000 requests/s, above 100000",
        ),
        ("peak_read_only_rps: [\n".to_string(), "workload"),
    ];
    for (i, (text, problem)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad-{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let output = arak(&[
            "simulate",
            "--workload",
            path.to_str().unwrap(),
            "--intervals",
            "2",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(!output.status.success(), "case {i} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(problem), "case {i}: {stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "case {i}: {stderr}"
        );
    }
    let missing = arak(&["simulate", "--workload", "/nonexistent/day.yaml"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/day.yaml"));
}

/// Issue #17: an unwritable `--out` was discovered after the whole simulation; now before
/// it starts, so no progress is printed. A long run prints its progress.
#[test]
fn an_unwritable_out_is_refused_before_the_run_and_progress_is_shown() {
    let dir = scratch("out");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_a_file = file.join("plots");
    let output = arak(&[
        "simulate",
        "--intervals",
        "2",
        "--sample-s",
        "1",
        "--out",
        under_a_file.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--out") && stderr.contains(under_a_file.to_str().unwrap()),
        "{stderr}"
    );
    assert!(
        !stderr.contains("simulate: "),
        "ran before failing: {stderr}"
    );

    let output = arak(&[
        "simulate",
        "--intervals",
        "2",
        "--sample-s",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    stdout(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("simulate: 100% (6/6 intervals"), "{stderr}");
}

/// The work a run may do is bounded as a whole: a long sample window over many intervals.
#[test]
fn a_run_beyond_the_simulation_budget_is_refused_at_once() {
    let output = arak(&["simulate", "--sample-s", "1e9"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lower one of them"), "{stderr}");
}
