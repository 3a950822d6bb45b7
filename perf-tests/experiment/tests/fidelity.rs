//! The model-fidelity harness, short form: a 3-point grid (one quota, the default limits,
//! the read mix at 20%, 50% and 80% of capacity; 50% held out) on a real hosted apiserver,
//! then the report. It checks that the errors come from real measurements, not that they
//! are small: that is what docs/model-fidelity.md is for. About 3–4 minutes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// Same rule as the harness crate: CI and ARAK_REQUIRE_HARNESS=1 never skip.
fn required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
        || std::env::var("ARAK_REQUIRE_HARNESS").is_ok_and(|v| v == "1")
}

/// The tool cache's bin directory, or why there is none.
fn tools_bin(repo: &Path) -> Result<String, String> {
    if let Ok(bin) = std::env::var("ARAK_TOOLS_BIN") {
        return Ok(bin);
    }
    let out = Command::new(repo.join("perf-tests/build-tools"))
        .args(["--check", "--bin-dir"])
        .output()
        .map_err(|e| format!("running perf-tests/build-tools --check: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err("the Kubernetes tools are not built (run perf-tests/build-tools)".into())
    }
}

/// A base port whose 100 ports are free on 127.0.0.1, as the harness picks them.
fn free_base_port() -> u16 {
    (230..600)
        .map(|b| b * 100)
        .find(|&base| (base..base + 100).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .expect("a free block of 100 ports")
}

fn finite(v: &Value) -> bool {
    v.as_f64().is_some_and(f64::is_finite)
}

#[test]
fn a_short_grid_yields_a_report_with_errors_from_real_measurements() {
    let repo = repo();
    let bin = match tools_bin(&repo) {
        Ok(bin) => bin,
        Err(reason) if required() => {
            panic!("required here (CI or ARAK_REQUIRE_HARNESS=1): {reason}")
        }
        Err(reason) => {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
    let started = Instant::now();
    // The load generator must not be what limits a point: release builds, as run-experiment uses.
    let status = Command::new(env!("CARGO"))
        .current_dir(&repo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "stress-test",
            "-p",
            "node-agent",
        ])
        .status()
        .expect("cargo build");
    assert!(status.success(), "building stress-test and node-agent");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo.join("target"), |dir| repo.join(dir))
        .join("release");
    let scratch = std::env::temp_dir().join(format!("arak-fidelity-test-{}", std::process::id()));
    let out = scratch.join("results");
    let report = scratch.join("model-fidelity.md");
    let state_dir = scratch.join("cluster");
    let status = Command::new(env!("CARGO_BIN_EXE_experiment"))
        .env("ARAK_TOOLS_BIN", &bin)
        .args(["fidelity", "run", "--quotas", "1", "--limits", "400/200"])
        .args(["--loads", "0.2,0.5,0.8", "--calibration-loads", "0.2,0.8"])
        .args(["--mixes", "read", "--point-s", "25", "--warmup-s", "4"])
        // Two calibration points of 25 s give 4 history steps of 5 s, not the recommender's 12.
        .args(["--min-samples", "4"])
        .args(["--base-port", &free_base_port().to_string()])
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--repo")
        .arg(&repo)
        .arg("--stress-test")
        .arg(target.join("stress-test"))
        .arg("--node-agent")
        .arg(target.join("node-agent"))
        .arg("--out")
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .status()
        .expect("experiment fidelity run");
    assert!(status.success(), "experiment fidelity run failed: {status}");
    assert!(!state_dir.exists(), "the cluster was not brought down");

    let text = std::fs::read_to_string(&report).expect("the report");
    assert!(text.contains("## Errors on held-out points"), "{text}");
    for plot in ["mean", "p99", "429", "cpu"] {
        assert!(
            scratch.join(format!("model-fidelity-{plot}.svg")).is_file(),
            "{plot} plot"
        );
    }
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(name)).expect(name)).expect(name)
    };
    let points = read("points.json");
    let predictions = read("predictions.json");
    let points = points.as_array().expect("points");
    assert_eq!(points.len(), 3);
    for p in points {
        assert!(p["error"].is_null(), "point failed: {}", p["error"]);
        let ro = &p["classes"]["readOnly"];
        assert!(ro["offered_rps"].as_f64().unwrap() > 1.0, "{p}");
        assert!(ro["served_rps"].as_f64().unwrap() > 1.0, "{p}");
        assert!(p["cpu_cores"].as_f64().unwrap() > 0.0, "{p}");
        assert!(
            ro["client"]["sent_rps"].as_f64().unwrap() > 1.0,
            "stress-test's own report: {p}"
        );
    }
    let calibration = &predictions["calibrations"][0]["calibration"];
    assert_ne!(
        calibration["method"], "priors",
        "calibrated from the measurements, not the priors: {calibration}"
    );
    let scored: Vec<&Value> = predictions["points"]
        .as_array()
        .expect("predicted points")
        .iter()
        .filter(|p| p["scored"] == true)
        .collect();
    assert_eq!(scored.len(), 1, "the 50% point is held out and scored");
    let e = &scored[0]["errors"];
    for v in [&e["mean"][0], &e["p99"][0], &e["rejected_pp"][0], &e["cpu"]] {
        assert!(finite(v), "a finite error: {e}");
    }
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!("fidelity short form in {:?}", started.elapsed());
}
