//! `arak simulate`: a day of load through a simulated control plane, once per policy.
//!
//! The day is cut into intervals. In each, every apiserver replica is simulated for a short
//! sample window at the interval's load (a discrete-event run of exactly the system the queue
//! model describes), and pods go through the controller-manager and scheduler as a fluid.
//! `native` and `static` keep their settings all day; `arak` runs the real recommender on
//! what the previous intervals showed and applies its changes.

pub mod arak;
pub mod plots;
pub mod pods;
pub mod policies;
pub mod report;
pub mod workload;
pub mod world;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use recommender::Policy;

use self::arak::Arak;
use self::policies::PolicyKind;
use self::report::{DayReport, PolicyRun};
use self::workload::{DAY_S, Workload};
use self::world::{IntervalObservation, Sampling, Slo, World};

/// The policy the `arak` run gives the recommender unless told otherwise.
pub const BUILT_IN_POLICY_YAML: &str = include_str!("../../config/examples/simulate-policy.yaml");

/// Most requests one policy's day may simulate: ten times the built-in day at its peak
/// (7,200 requests/s × 30 s × 96 intervals ≈ 2·10⁷), which takes about a minute.
const MAX_SIMULATED_REQUESTS: f64 = 2e8;

/// After the day, the pipeline runs this much longer so pods still pending get a startup time.
const DRAIN_S: f64 = 4.0 * 3600.0;

#[derive(Debug, Clone)]
pub struct Options {
    pub workload: Workload,
    pub policy: Policy,
    pub intervals: usize,
    /// Simulated seconds per apiserver replica and load segment in each interval.
    pub sample_window_s: f64,
    pub seed: u64,
}

/// Runs the day under every policy, each on its own thread: they share nothing but the inputs.
pub fn run(options: &Options) -> anyhow::Result<DayReport> {
    anyhow::ensure!(options.intervals > 0, "--intervals must be at least 1");
    anyhow::ensure!(
        options.sample_window_s > 0.0 && options.sample_window_s.is_finite(),
        "--sample-s must be a positive number of seconds"
    );
    let requests = options.workload.peak_rps() * options.sample_window_s * options.intervals as f64;
    anyhow::ensure!(
        requests <= MAX_SIMULATED_REQUESTS,
        "the workload's peak of {:.0} requests/s over --sample-s {} in each of --intervals {} \
         simulates up to {requests:.2e} requests per policy; at most {MAX_SIMULATED_REQUESTS:.0e}: \
         lower one of them",
        options.workload.peak_rps(),
        options.sample_window_s,
        options.intervals
    );
    let progress = Progress::new(options.intervals * policies::ALL.len());
    let runs = std::thread::scope(|scope| {
        let handles: Vec<_> = policies::ALL
            .iter()
            .map(|kind| {
                let progress = &progress;
                scope.spawn(move || run_policy(*kind, options, progress))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a policy's run does not panic"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    Ok(DayReport::new(options, runs))
}

/// Intervals done over all policies, printed to stderr at every tenth of the run: a day
/// can take minutes, and silence looks like a hang.
struct Progress {
    total: usize,
    done: AtomicUsize,
    started: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            done: AtomicUsize::new(0),
            started: Instant::now(),
        }
    }

    fn interval_done(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let tenth = |n: usize| n * 10 / self.total;
        if tenth(done) > tenth(done - 1) {
            eprintln!(
                "simulate: {}% ({done}/{} intervals over all policies) after {:.0} s",
                done * 100 / self.total,
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

fn slo(policy: &Policy) -> Slo {
    Slo {
        read_only_p99_s: policy.slo.read_only_p99_s(),
        mutating_p99_s: policy.slo.mutating_p99_s,
        rejection: policy.slo.rejection_probability,
        pod_startup_p99_s: policy.slo.pod_startup_p99_s,
    }
}

fn run_policy(
    kind: PolicyKind,
    options: &Options,
    progress: &Progress,
) -> anyhow::Result<PolicyRun> {
    let (workload, policy) = (&options.workload, &options.policy);
    let length_s = DAY_S / options.intervals as f64;
    let sampling = Sampling {
        window_s: options.sample_window_s,
        seed: options.seed,
    };
    let slo = slo(policy);
    let mut world = World::new(policies::initial_settings(kind, policy));
    let mut arak = (kind == PolicyKind::Arak).then(|| Arak::new(policy, workload, &world.settings));
    // arak is installed on a control plane that ran the defaults: Prometheus already holds
    // the history the recommender calibrates on, so those intervals run before the day.
    let first = -(arak.as_ref().map_or(0, |a| a.history_intervals()) as i64);
    let mut observed: Vec<IntervalObservation> = Vec::new();
    for index in first..options.intervals as i64 {
        if let Some(arak) = arak.as_mut().filter(|_| index >= 0) {
            arak.round(&observed, &mut world.settings)
                .with_context(|| format!("{}: interval {index}", kind.name()))?;
        }
        let o = world
            .run_interval(workload, index, length_s, sampling, &slo)
            .with_context(|| kind.name())?;
        if index >= 0 {
            progress.interval_done();
        }
        observed.push(o);
    }
    world.drain(workload, DAY_S, DRAIN_S);
    observed.retain(|o| o.index >= 0);
    Ok(PolicyRun::new(
        kind,
        workload,
        &slo,
        observed,
        &world,
        arak.as_ref(),
    ))
}
