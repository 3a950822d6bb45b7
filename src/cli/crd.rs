//! `arak crd`: the ControlPlaneTuning CustomResourceDefinition as YAML, for `kubectl apply -f -`.
//! `config/crd/controlplanetuning.yaml` is this output; `tests/cli_run.rs` fails when they differ.

use anyhow::Context as _;
use kube::CustomResourceExt as _;

use crate::controller::tuning::ControlPlaneTuning;

pub fn run() -> anyhow::Result<()> {
    let yaml = serde_norway::to_string(&ControlPlaneTuning::crd())
        .context("serialising the CustomResourceDefinition")?;
    print!("{yaml}");
    Ok(())
}
