//! arak: tunes a live Kubernetes control plane with queueing models.

mod cli;
mod controller;
mod simulate;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("arak: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
