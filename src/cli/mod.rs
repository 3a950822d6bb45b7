//! The command line: one subcommand per stage, each runnable alone.

mod apply;
mod cluster_access;
mod crd;
mod fetch;
mod model;
mod recommend;
mod run;
mod simulate;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "arak",
    version,
    about = "Tunes a live Kubernetes control plane with queueing models"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Evaluate a queueing model: M/M/c, M/M/c/K, the apiserver or the scheduler.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Recommend settings under a policy, for a snapshot file or one fetched from Prometheus.
    Recommend(recommend::RecommendArgs),
    /// Read the control plane's load from Prometheus or /metrics into a LoadSnapshot.
    Fetch(Box<fetch::FetchArgs>),
    /// Simulate a day of load on a control plane under native, static and arak settings.
    Simulate(simulate::SimulateArgs),
    /// Apply a Recommendation to the control plane (or print the plan with --dry-run).
    Apply(Box<apply::ApplyArgs>),
    /// Run the controller: fetch, recommend and (by the ControlPlaneTuning's mode) apply, every interval.
    Run(Box<run::RunArgs>),
    /// Print the ControlPlaneTuning CustomResourceDefinition as YAML.
    Crd,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Model(command) => model::run(command),
        Command::Recommend(args) => recommend::run(args),
        Command::Fetch(args) => fetch::run(*args),
        Command::Simulate(args) => simulate::run(args),
        Command::Apply(args) => apply::run(*args),
        Command::Run(args) => run::run(*args),
        Command::Crd => crd::run(),
    }
}
