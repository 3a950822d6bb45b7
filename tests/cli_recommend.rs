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

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("arak-cli-recommend-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn stderr_of(args: &[&str]) -> String {
    let out = arak(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_ne!(out.status.code(), Some(101), "{args:?} panicked");
    String::from_utf8(out.stderr).unwrap()
}

/// Issue #17: `current` cores of 40000 (millicores typed as cores) ran for 9 s, and a NaN
/// gave "cost NaN"; queue-model errors named neither file, replica nor field. Now the error
/// names all three, once each.
#[test]
fn nonsense_current_settings_are_refused_naming_file_replica_and_field_once() {
    let policy = std::fs::read_to_string("config/examples/policy.yaml").unwrap();
    let millicores = policy.replace(
        "apiserver-1: { cpu_cores: 4,",
        "apiserver-1: { cpu_cores: 40000,",
    );
    let path = scratch("millicores.yaml");
    std::fs::write(&path, millicores).unwrap();
    let path = path.to_str().unwrap();
    let started = std::time::Instant::now();
    let stderr = stderr_of(&[&EXAMPLE[..3], &["--policy", path]].concat());
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
    for named in [path, "apiservers.apiserver-1.cpu_cores", "40000"] {
        assert_eq!(
            stderr.matches(named).count(),
            1,
            "{named} once in: {stderr}"
        );
    }

    let current = scratch("current.yaml");
    std::fs::write(
        &current,
        policy
            .split_once("current:\n")
            .unwrap()
            .1
            .replace("client_qps: 50", "client_qps: .nan")
            .lines()
            .map(|l| l.strip_prefix("  ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let current = current.to_str().unwrap();
    let stderr = stderr_of(&[&EXAMPLE[..], &["--current", current]].concat());
    for named in [current, "schedulers.scheduler-0.client_qps"] {
        assert_eq!(
            stderr.matches(named).count(),
            1,
            "{named} once in: {stderr}"
        );
    }
}

/// Issue #17: a negative rate and a misspelt key below the top level were accepted.
#[test]
fn a_snapshot_no_fetcher_produces_is_refused_naming_file_and_field() {
    let snapshot = std::fs::read_to_string("config/examples/snapshot-synthetic.json").unwrap();
    let negative = scratch("negative.json");
    std::fs::write(
        &negative,
        snapshot.replacen("\"arrival_rate\": 659.302", "\"arrival_rate\": -659.302", 1),
    )
    .unwrap();
    let negative = negative.to_str().unwrap();
    let stderr = stderr_of(&[
        "recommend",
        "--snapshot",
        negative,
        "--policy",
        "config/examples/policy.yaml",
    ]);
    for named in [negative, "apiservers.apiserver-0.read_only.arrival_rate"] {
        assert_eq!(
            stderr.matches(named).count(),
            1,
            "{named} once in: {stderr}"
        );
    }

    let misspelt = scratch("misspelt.json");
    std::fs::write(
        &misspelt,
        snapshot.replacen("\"arrival_rate\"", "\"arival_rate\"", 1),
    )
    .unwrap();
    let misspelt = misspelt.to_str().unwrap();
    let stderr = stderr_of(&[
        "recommend",
        "--snapshot",
        misspelt,
        "--policy",
        "config/examples/policy.yaml",
    ]);
    assert!(
        stderr.contains(misspelt) && stderr.contains("arival_rate"),
        "{stderr}"
    );
}

/// Issue #17: `fetch --history 100000h --step 1ms` tried to allocate terabytes. It is refused
/// before Prometheus is asked: the port here is closed, and the error is not about it.
#[test]
fn a_history_of_more_points_than_prometheus_answers_is_refused_before_asking() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let stderr = stderr_of(&[
        "fetch",
        "--prometheus-url",
        &url,
        "--history",
        "100000h",
        "--step",
        "1ms",
    ]);
    assert!(
        stderr.contains("fetch option history") && stderr.contains("11000"),
        "{stderr}"
    );
}

/// Issue #17: causes were printed twice, since the error carried its cause both in its
/// message and as its source.
#[test]
fn a_policy_error_prints_its_cause_once() {
    let policy = std::fs::read_to_string("config/examples/policy.yaml").unwrap();
    let path = scratch("misspelt-policy.yaml");
    std::fs::write(&path, policy.replace("cooldown_s:", "cooldown:")).unwrap();
    let stderr = stderr_of(&[&EXAMPLE[..3], &["--policy", path.to_str().unwrap()]].concat());
    assert_eq!(
        stderr.matches("unknown field `cooldown`").count(),
        1,
        "{stderr}"
    );
}
