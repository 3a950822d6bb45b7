//! A discrete-event simulator of the same systems, used to check the analytic models.
//!
//! [`simulate`] runs classes of requests through C cores shared by processor sharing,
//! each class with its concurrency limit and an optional FCFS queue: with one class, no
//! off-CPU time and C = c it is exactly M/M/c (or M/M/c/K with a finite queue); with two
//! classes it is the apiserver. [`simulate_birth_death`] runs any state-dependent chain.
//! Both are seeded, so a run is reproducible.

mod birth_death;
mod network;
mod stats;

pub use birth_death::{BirthDeathReport, simulate_birth_death};
pub use network::{ClassReport, SimClass, SimConfig, SimReport, simulate};
