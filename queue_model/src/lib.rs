//! Queueing models of the Kubernetes control plane.
//!
//! Pure maths, no I/O: Erlang B/C, M/M/c, M/M/c/K, a general birth–death solver, the
//! kube-apiserver and kube-scheduler models built on them, and a discrete-event simulator
//! that checks each of them. Every public function validates its arguments and returns a
//! [`QueueModelError`] naming the offending one instead of panicking.

pub mod apiserver;
pub mod birth_death;
mod erlang;
mod error;
mod limited_queue;
pub mod mmc;
pub mod mmck;
pub mod occupancy;
mod poisson;
mod response_time;
pub mod scheduler;
pub mod sim;

pub use erlang::{erlang_b, erlang_c};
pub use error::{
    MAX_CAPACITY, MAX_CORES, MAX_REQUEST_RATE, MAX_SERVERS, MIN_CORES, MIN_REQUEST_S,
    QueueModelError, Result,
};
