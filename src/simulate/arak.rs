//! The `arak` policy: every interval, what the simulated control plane showed becomes a
//! `LoadSnapshot` (as the load fetcher would build it from Prometheus), the real recommender
//! runs on it, and a `change` is applied to the simulated replicas at once (no rolling: the
//! simulation has no pods to restart). The flags go through the updater's own command-line
//! editing, and the simulated components read their limits back from the edited args; CPU and
//! memory are set directly, and the APF queue room as the updater writes it (whole requests
//! per queue of a flow's hand), read back at the policy's grid as the controller reads it.

use std::collections::BTreeMap;

use anyhow::Context;
use recommender::policy::ReplicaPlacement;
use recommender::recommendation::Recommendation;
use recommender::safety::Action;
use recommender::snapshot::{
    ApiserverSample, ClassSample, ClientSample, Component, ControllerManagerSample, History,
    LatencySummary, LoadSnapshot, ProcessSample, Replica, ReplicaHistory, SchedulerSample, Source,
};
use recommender::{ApiserverSettings, ClientSettings, CurrentSettings, Policy, recommend};
use updater::apf::FlowRoom;
use updater::args::{CommandLine, OwnedFlag, format_number};

use super::workload::Workload;
use super::world::{ClassObservation, IntervalObservation, Settings};

/// The hand size of Kubernetes' `global-default` priority level, where ordinary clients'
/// flows queue.
const GLOBAL_DEFAULT_HAND_SIZE: i32 = 6;

/// The waiting room a flow gets once the updater has written `room` into APF: whole
/// requests per queue of its hand, at least one, so never exactly what was asked.
fn written_room(room: u32) -> u32 {
    let level = FlowRoom {
        hand_size: GLOBAL_DEFAULT_HAND_SIZE,
        queue_length_limit: 0,
    };
    let written = FlowRoom {
        queue_length_limit: level.limit_for(room),
        ..level
    };
    u32::try_from(written.room()).unwrap_or(u32::MAX)
}

/// Unix time of the first simulated midnight (2025-11-25 00:00 UTC): snapshots carry wall
/// times, and the recommender's cooldown compares them.
pub const EPOCH_UNIX_S: f64 = 1_764_028_800.0;

pub struct Arak<'a> {
    policy: &'a Policy,
    workload: &'a Workload,
    last_change_unix_s: Option<f64>,
    /// When each knob was last raised, as the controller keeps it in the status.
    raised_unix_s: BTreeMap<String, f64>,
    pub rounds: usize,
    pub changes: usize,
    /// How often each reason to hold came up (its words before the first colon).
    pub holds: BTreeMap<String, usize>,
    /// The simulated containers' command lines, which the limits are read back from.
    apiserver_args: Vec<CommandLine>,
    scheduler_args: CommandLine,
    controller_manager_args: CommandLine,
}

impl<'a> Arak<'a> {
    pub fn new(policy: &'a Policy, workload: &'a Workload, settings: &Settings) -> Self {
        let apiserver_args = settings
            .apiservers
            .iter()
            .map(|s| {
                command_line(
                    "kube-apiserver",
                    &[
                        "--etcd-servers=https://127.0.0.1:2379",
                        &format!("--max-requests-inflight={}", s.max_requests_inflight),
                        &format!(
                            "--max-mutating-requests-inflight={}",
                            s.max_mutating_requests_inflight
                        ),
                    ],
                )
            })
            .collect();
        let client = |binary, s: &ClientSettings| {
            command_line(
                binary,
                &[
                    "--leader-elect=true",
                    &format!("--kube-api-qps={}", format_number(s.client_qps)),
                    &format!("--kube-api-burst={}", s.client_burst),
                ],
            )
        };
        Self {
            policy,
            workload,
            last_change_unix_s: None,
            raised_unix_s: BTreeMap::new(),
            rounds: 0,
            changes: 0,
            holds: BTreeMap::new(),
            apiserver_args,
            scheduler_args: client("kube-scheduler", &settings.scheduler),
            controller_manager_args: client(
                "kube-controller-manager",
                &settings.controller_manager,
            ),
        }
    }

    /// Intervals of history the snapshot carries: enough for the recommender to calibrate.
    pub fn history_intervals(&self) -> usize {
        self.policy.calibration.min_samples.max(1)
    }

    /// One round at the end of `observed`'s last interval; applies a `change` to `settings`.
    pub fn round(
        &mut self,
        observed: &[IntervalObservation],
        settings: &mut Settings,
    ) -> anyhow::Result<Recommendation> {
        let snapshot = self.snapshot(observed)?;
        let current = self.current(settings);
        let recommendation = recommend(&snapshot, self.policy, &current)
            .with_context(|| format!("recommender at {:.0} s", snapshot.time_unix_s))?;
        self.rounds += 1;
        if recommendation.action == Action::Change {
            self.apply(&recommendation, settings)?;
            self.changes += 1;
            self.last_change_unix_s = Some(snapshot.time_unix_s);
            for key in recommendation.raised_knobs() {
                self.raised_unix_s.insert(key, snapshot.time_unix_s);
            }
        } else {
            for reason in &recommendation.hold_reasons {
                let key = reason
                    .split(':')
                    .next()
                    .unwrap_or(reason)
                    .trim()
                    .to_string();
                *self.holds.entry(key).or_default() += 1;
            }
        }
        Ok(recommendation)
    }

    fn current(&self, settings: &Settings) -> CurrentSettings {
        let names = |placements: &[ReplicaPlacement]| -> Vec<String> {
            placements.iter().map(|p| p.name.clone()).collect()
        };
        CurrentSettings {
            last_change_unix_s: self.last_change_unix_s,
            raised_unix_s: self.raised_unix_s.clone(),
            apiservers: names(&self.policy.apiservers)
                .into_iter()
                .zip(settings.apiservers.iter().map(|&a| {
                    ApiserverSettings {
                        // Read back as the controller reads it: the nearest grid point.
                        queue_length: self
                            .policy
                            .bounds
                            .apiserver
                            .queue_length
                            .nearest(f64::from(a.queue_length))
                            as u32,
                        ..a
                    }
                }))
                .collect(),
            schedulers: names(&self.policy.schedulers)
                .into_iter()
                .map(|n| (n, settings.scheduler))
                .collect(),
            controller_managers: names(&self.policy.controller_managers)
                .into_iter()
                .map(|n| (n, settings.controller_manager))
                .collect(),
        }
    }

    /// Edits the flags through the updater, then reads the limits back from the edited args.
    fn apply(&mut self, r: &Recommendation, settings: &mut Settings) -> anyhow::Result<()> {
        for a in &r.apiservers {
            let Some(i) = self
                .policy
                .apiservers
                .iter()
                .position(|p| p.name == a.target.name)
            else {
                continue;
            };
            let want = &a.recommended;
            let args = self.apiserver_args[i]
                .with_flag(
                    OwnedFlag::MaxRequestsInflight.name(),
                    &format_number(f64::from(want.max_requests_inflight)),
                )
                .with_flag(
                    OwnedFlag::MaxMutatingRequestsInflight.name(),
                    &format_number(f64::from(want.max_mutating_requests_inflight)),
                );
            settings.apiservers[i] = ApiserverSettings {
                cpu_cores: want.cpu_cores,
                memory_bytes: want.memory_bytes,
                max_requests_inflight: flag(&args, OwnedFlag::MaxRequestsInflight)?,
                max_mutating_requests_inflight: flag(
                    &args,
                    OwnedFlag::MaxMutatingRequestsInflight,
                )?,
                queue_length: written_room(want.queue_length),
            };
            self.apiserver_args[i] = args;
        }
        // Every replica of a client component gets one QPS (any may lead): the first stands for all.
        if let Some(s) = r.schedulers.first() {
            self.scheduler_args = client_args(&self.scheduler_args, &s.recommended);
            settings.scheduler = client_settings(&self.scheduler_args, &s.recommended)?;
        }
        if let Some(c) = r.controller_managers.first() {
            self.controller_manager_args =
                client_args(&self.controller_manager_args, &c.recommended);
            settings.controller_manager =
                client_settings(&self.controller_manager_args, &c.recommended)?;
        }
        Ok(())
    }

    /// What a load fetcher would have read at the end of the last observed interval.
    fn snapshot(&self, observed: &[IntervalObservation]) -> anyhow::Result<LoadSnapshot> {
        let last = observed
            .last()
            .context("a round needs an observed interval")?;
        let end_s = last.start_s + last.length_s;
        let replica = |component, p: &ReplicaPlacement| Replica {
            component,
            name: p.name.clone(),
            instance: format!("simulated/{}", p.name),
        };
        let apiservers = self
            .policy
            .apiservers
            .iter()
            .zip(&last.replicas)
            .zip(&last.settings.apiservers)
            .map(|((p, o), s)| ApiserverSample {
                replica: replica(Component::Apiserver, p),
                read_only: class_sample(&o.read_only, last.length_s),
                mutating: class_sample(&o.mutating, last.length_s),
                long_running_rate: None,
                long_running_open: None,
                process: ProcessSample {
                    cpu_cores: Some(o.cpu_used_cores),
                    cpu_limit_cores: Some(s.cpu_cores),
                    resident_memory_bytes: Some(o.resident_memory_bytes),
                    peak_resident_memory_bytes: Some(o.peak_resident_memory_bytes),
                },
                priority_levels: BTreeMap::new(),
            })
            .collect();
        let pods = &last.pods;
        let p = &self.workload.pods;
        let scheduler_cpu = 0.05 + 0.002 * pods.binding_rate;
        let schedulers = self
            .policy
            .schedulers
            .iter()
            .enumerate()
            .map(|(i, placement)| {
                // Only the leader (the first) works; the others stand by.
                let leader = i == 0;
                let or_zero = |v: f64| if leader { v } else { 0.0 };
                SchedulerSample {
                    replica: replica(Component::Scheduler, placement),
                    pending_pods: BTreeMap::from([
                        ("active".to_string(), or_zero(pods.pending_pods)),
                        ("backoff".to_string(), 0.0),
                    ]),
                    attempt_rate: BTreeMap::from([(
                        "scheduled".to_string(),
                        or_zero(pods.binding_rate),
                    )]),
                    binding_rate: Some(or_zero(pods.binding_rate)),
                    attempt_duration: Some(LatencySummary {
                        p50_s: 1.0 / p.scheduler_algorithm_rate,
                        p90_s: 1.0 / p.scheduler_algorithm_rate,
                        p99_s: 1.0 / p.scheduler_algorithm_rate,
                        count: or_zero(pods.binding_rate * last.length_s),
                    }),
                    pod_scheduling_duration: None,
                    process: ProcessSample {
                        cpu_cores: Some(if leader { scheduler_cpu } else { 0.02 }),
                        cpu_limit_cores: Some(last.settings.scheduler.cpu_cores),
                        resident_memory_bytes: Some(0.3 * GIB),
                        peak_resident_memory_bytes: Some(0.3 * GIB),
                    },
                    client: ClientSample {
                        request_rate: Some(or_zero(pods.scheduler_request_rate)),
                        throttle_wait_mean_s: Some(or_zero(pods.scheduler_throttle_mean_s)),
                        throttle_wait_p99_s: Some(or_zero(pods.scheduler_throttle_p99_s)),
                    },
                }
            })
            .collect();
        let cm_cpu = 0.1 + 0.001 * pods.controller_manager_request_rate;
        let controller_managers = self
            .policy
            .controller_managers
            .iter()
            .enumerate()
            .map(|(i, placement)| {
                let leader = i == 0;
                let or_zero = |v: f64| if leader { v } else { 0.0 };
                ControllerManagerSample {
                    replica: replica(Component::ControllerManager, placement),
                    process: ProcessSample {
                        cpu_cores: Some(if leader { cm_cpu } else { 0.02 }),
                        cpu_limit_cores: Some(last.settings.controller_manager.cpu_cores),
                        resident_memory_bytes: Some(0.5 * GIB),
                        peak_resident_memory_bytes: Some(0.5 * GIB),
                    },
                    client: ClientSample {
                        request_rate: Some(or_zero(pods.controller_manager_request_rate)),
                        throttle_wait_mean_s: Some(or_zero(
                            pods.controller_manager_throttle_mean_s,
                        )),
                        throttle_wait_p99_s: Some(or_zero(pods.controller_manager_throttle_p99_s)),
                    },
                }
            })
            .collect();

        let window = &observed[observed.len().saturating_sub(self.history_intervals())..];
        let series = |r: usize, f: &dyn Fn(&IntervalObservation, usize) -> f64| {
            window.iter().map(|o| Some(f(o, r))).collect::<Vec<_>>()
        };
        let history = History {
            step_s: last.length_s,
            times_unix_s: window
                .iter()
                .map(|o| EPOCH_UNIX_S + o.start_s + o.length_s)
                .collect(),
            replicas: self
                .policy
                .apiservers
                .iter()
                .enumerate()
                .map(|(r, p)| ReplicaHistory {
                    replica: replica(Component::Apiserver, p),
                    read_only_rate: series(r, &|o, r| o.replicas[r].read_only.arrival_rate),
                    mutating_rate: series(r, &|o, r| o.replicas[r].mutating.arrival_rate),
                    cpu_cores: series(r, &|o, r| o.replicas[r].cpu_used_cores),
                    read_only_p99_s: series(r, &|o, r| o.replicas[r].read_only.p99_s),
                    mutating_p99_s: series(r, &|o, r| o.replicas[r].mutating.p99_s),
                    read_only_mean_s: series(r, &|o, r| o.replicas[r].read_only.mean_s),
                    mutating_mean_s: series(r, &|o, r| o.replicas[r].mutating.mean_s),
                    resident_memory_bytes: series(r, &|o, r| {
                        o.replicas[r].peak_resident_memory_bytes
                    }),
                })
                .collect(),
        };
        Ok(LoadSnapshot {
            time_unix_s: EPOCH_UNIX_S + end_s,
            window_s: last.length_s,
            source: Source::Scrape {
                endpoints: vec!["simulated control plane".into()],
            },
            apiservers,
            schedulers,
            controller_managers,
            history: Some(history),
            findings: vec![],
        })
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn command_line(binary: &str, args: &[&str]) -> CommandLine {
    CommandLine::new(
        vec![binary.to_string()],
        args.iter().map(|a| a.to_string()).collect(),
    )
}

/// A flag's value as the component would parse it.
fn flag<T: std::str::FromStr>(args: &CommandLine, flag: OwnedFlag) -> anyhow::Result<T> {
    let value = args
        .value(flag.name())
        .with_context(|| format!("{} is missing from {args:?}", flag.name()))?;
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("{}={value} does not parse", flag.name()))
}

fn client_args(args: &CommandLine, want: &ClientSettings) -> CommandLine {
    args.with_flag(
        OwnedFlag::KubeApiQps.name(),
        &format_number(want.client_qps),
    )
    .with_flag(
        OwnedFlag::KubeApiBurst.name(),
        &format_number(f64::from(want.client_burst)),
    )
}

fn client_settings(args: &CommandLine, want: &ClientSettings) -> anyhow::Result<ClientSettings> {
    Ok(ClientSettings {
        cpu_cores: want.cpu_cores,
        memory_bytes: want.memory_bytes,
        client_qps: flag(args, OwnedFlag::KubeApiQps)?,
        client_burst: flag(args, OwnedFlag::KubeApiBurst)?,
    })
}

fn class_sample(o: &ClassObservation, window_s: f64) -> ClassSample {
    ClassSample {
        arrival_rate: Some(o.arrival_rate),
        rejected_rate: Some(o.arrival_rate * o.rejection),
        error_rate: Some(0.0),
        latency: (o.sampled > 0).then_some(LatencySummary {
            p50_s: o.p50_s,
            p90_s: o.p90_s,
            p99_s: o.p99_s,
            count: o.arrival_rate * window_s,
        }),
        inflight_mean: Some(o.in_system_mean),
        inflight_max: Some(o.in_system_max),
        inqueue_mean: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_is_written_in_whole_requests_per_queue_of_a_hand() {
        assert_eq!(
            written_room(0),
            6,
            "APF holds at least one request per queue"
        );
        assert_eq!(written_room(25), 30);
        assert_eq!(written_room(300), 300);
    }
}
