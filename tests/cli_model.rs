//! `arak model` as a user runs it: the binary, its JSON and its errors.

use std::process::{Command, Output};

fn arak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arak"))
        .args(args)
        .output()
        .expect("arak runs")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[test]
fn mmc_prints_the_closed_form_as_json() {
    let v = json(&arak(&[
        "model",
        "mmc",
        "--arrival-rate",
        "90",
        "--service-rate",
        "1",
        "--servers",
        "100",
        "--output",
        "json",
    ]));
    let p_wait = v["p_wait"].as_f64().unwrap();
    assert!((p_wait - 0.216_940_48).abs() < 1e-6, "{v}");
    assert!((v["utilization"].as_f64().unwrap() - 0.9).abs() < 1e-12);
    for key in [
        "mean_wait_s",
        "mean_response_s",
        "p50_response_s",
        "p99_response_s",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key} in {v}");
    }
}

#[test]
fn mmck_prints_blocking_and_throughput() {
    let v = json(&arak(&[
        "model",
        "mmck",
        "--arrival-rate",
        "9",
        "--service-rate",
        "1",
        "--servers",
        "10",
        "--capacity",
        "15",
        "--output",
        "json",
    ]));
    assert!(
        (v["p_block"].as_f64().unwrap() - 0.061_258_76).abs() < 1e-7,
        "{v}"
    );
    assert!((v["throughput"].as_f64().unwrap() - 8.448_671).abs() < 1e-5);
    assert!(
        v["mean_response_s"].as_f64().unwrap() > 1.0 && v["p99_response_s"].as_f64().unwrap() > 1.0
    );
}

#[test]
fn apiserver_curve_has_a_point_per_limit_and_saturates() {
    let v = json(&arak(&[
        "model",
        "apiserver",
        "--read-limits",
        "10",
        "410",
        "100",
        "--output",
        "json",
    ]));
    let points = v.as_array().unwrap();
    assert_eq!(points.len(), 5);
    let first = &points[0];
    let last = &points[4];
    assert_eq!(first["read_only_limit"], 10);
    assert_eq!(first["mutating_limit"], 5);
    // Small limits reject; past saturation a larger limit only adds latency.
    assert!(
        first["read_only"]["rejection_probability"]
            .as_f64()
            .unwrap()
            > 0.1
    );
    assert!(
        last["read_only"]["p99_response_s"].as_f64().unwrap()
            > points[1]["read_only"]["p99_response_s"].as_f64().unwrap()
    );
    assert!(last["cpu_utilization"].as_f64().unwrap() <= 1.0);
}

#[test]
fn apiserver_default_table_runs_with_no_arguments() {
    let out = arak(&["model", "apiserver"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("ro P99 s") && text.lines().count() > 10,
        "{text}"
    );
}

#[test]
fn bad_arguments_exit_non_zero_naming_the_argument_without_a_panic() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "model",
                "mmc",
                "--arrival-rate",
                "90",
                "--service-rate",
                "-1",
                "--servers",
                "100",
            ],
            "service_rate",
        ),
        (
            &[
                "model",
                "mmc",
                "--arrival-rate",
                "190",
                "--service-rate",
                "1",
                "--servers",
                "100",
            ],
            "unstable",
        ),
        (
            &[
                "model",
                "mmck",
                "--arrival-rate",
                "1",
                "--service-rate",
                "1",
                "--servers",
                "5",
                "--capacity",
                "4",
            ],
            "capacity",
        ),
        (
            &[
                "model",
                "mmc",
                "--arrival-rate",
                "x",
                "--service-rate",
                "1",
                "--servers",
                "1",
            ],
            "--arrival-rate",
        ),
    ];
    for (args, named) in cases {
        let out = arak(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_ne!(out.status.code(), Some(101), "{args:?} panicked: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

/// Issue #17: these ran for tens of seconds. Each is refused at once, naming the argument
/// and the limit.
#[test]
fn inputs_beyond_any_node_are_refused_at_once() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["model", "apiserver", "--cores", "1e5"],
            "`cores` = 100000 is above 1024",
        ),
        (
            &[
                "model",
                "mmc",
                "--arrival-rate",
                "10",
                "--service-rate",
                "1",
                "--servers",
                "4294967295",
            ],
            "`servers` = 4294967295 is above 100000",
        ),
        (
            &["model", "apiserver", "--read-rate", "1e300"],
            "`read_only.arrival_rate`",
        ),
    ];
    for (args, named) in cases {
        let out = arak(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}
