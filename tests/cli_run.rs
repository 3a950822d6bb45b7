//! `arak crd` and `arak run` as a user starts them, without a cluster.

use std::process::{Command, Output};

fn arak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arak"))
        .args(args)
        .output()
        .expect("arak runs")
}

/// The checked-in CRD is what the binary generates: regenerate it with
/// `cargo run -- crd > config/crd/controlplanetuning.yaml`.
#[test]
fn the_checked_in_crd_is_the_generated_one() {
    let output = arak(&["crd"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated = String::from_utf8(output.stdout).expect("UTF-8");
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/crd/controlplanetuning.yaml"
    );
    let checked_in = std::fs::read_to_string(file).expect("config/crd/controlplanetuning.yaml");
    assert!(
        generated == checked_in,
        "config/crd/controlplanetuning.yaml differs from `arak crd`; regenerate it with `cargo run -- crd > config/crd/controlplanetuning.yaml`"
    );
    assert!(generated.contains("name: controlplanetunings.arak.io"));
    assert!(
        generated.contains("subresources:\n      status: {}"),
        "{generated}"
    );
}

#[test]
fn timings_that_would_let_two_leaders_act_are_refused() {
    let output = arak(&["run", "--lease-duration", "10s", "--renew-deadline", "15s"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--renew-deadline < --lease-duration"),
        "{stderr}"
    );
}
