//! Whole rounds on situations an operator would recognise.

mod support;

use recommender::policy::LoadShare;
use recommender::safety::Action;
use recommender::search::Constraint;
use recommender::snapshot::{Finding, FindingKind, LoadSnapshot, Severity};
use recommender::{Recommendation, recommend};
use support::*;

const SNAPSHOT: &str = include_str!("../../config/examples/snapshot-synthetic.json");

fn assert_meets_every_slo(r: &Recommendation) {
    assert!(r.feasible, "{:?}", r.binding_constraint);
    for a in &r.apiservers {
        let p = a.predicted_recommended.as_ref().unwrap();
        assert!(p.violations.is_empty(), "{}: {p:?}", a.target.name);
        assert!(p.read_only_p99_s.unwrap() <= 1.0 && p.mutating_p99_s.unwrap() <= 1.0);
        assert!(p.read_only_rejection <= 1e-4 && p.mutating_rejection <= 1e-4);
        assert!(p.cpu_utilization <= 0.85);
    }
}

#[test]
fn overload_raises_limits_and_cpu() {
    let policy = uniform_policy();
    // The load doubled over the last 20 minutes to 800 + 150 req/s, 2.45 of 3 cores, and
    // is still rising; 20/10 slots are too few for it.
    let now = apiserver(3.0, 20, 10, 0);
    let r = recommend(
        &rising_snapshot(&policy, 800.0, 150.0, 0.5, CALM_SCHEDULER),
        &policy,
        &current(&policy, now, client(50.0)),
    )
    .unwrap();
    assert_eq!(r.action, Action::Change, "{:?}", r.hold_reasons);
    assert_meets_every_slo(&r);
    for a in &r.apiservers {
        let (c, n) = (&a.current, &a.recommended);
        assert!(a.predicted_current.as_ref().unwrap().violations.len() > 1);
        assert!(n.cpu_cores > c.cpu_cores, "{n:?}");
        assert!(n.max_requests_inflight > c.max_requests_inflight, "{n:?}");
        assert!(
            n.max_mutating_requests_inflight > c.max_mutating_requests_inflight,
            "{n:?}"
        );
    }
}

#[test]
fn idle_brings_cpu_down_to_the_bound() {
    let policy = uniform_policy();
    let r = recommend(
        &snapshot(&policy, 5.0, 1.0, CALM_SCHEDULER),
        &policy,
        &current(&policy, apiserver(1.0, 400, 200, 50), client(50.0)),
    )
    .unwrap();
    assert_eq!(r.action, Action::Change, "{:?}", r.hold_reasons);
    assert_meets_every_slo(&r);
    for a in &r.apiservers {
        assert_eq!(
            a.recommended.cpu_cores,
            policy.bounds.apiserver.cpu_cores.min
        );
        assert_eq!(a.binding.unwrap().constraint, Constraint::LowerBound);
    }
    assert!(r.recommended_cost < r.current_cost);
}

#[test]
fn a_throttled_scheduler_gets_more_qps_within_the_apiservers_mutating_capacity() {
    let policy = uniform_policy();
    let throttled = SchedulerLoad {
        binding_rate: 50.0,
        pending: 150.0,
        throttle_wait_p99_s: 2.5,
    };
    let r = recommend(
        &snapshot(&policy, 300.0, 60.0, throttled),
        &policy,
        &current(&policy, apiserver(2.0, 100, 50, 25), client(50.0)),
    )
    .unwrap();
    let s = &r.schedulers[0];
    assert!(s.recommended.client_qps > s.current.client_qps, "{s:?}");
    assert!(s.recommended.client_burst > s.current.client_burst);
    assert!(!s.predicted_current.as_ref().unwrap().violations.is_empty());
    assert!(r.client_qps_total.unwrap() <= r.apiserver_mutating_capacity_rps.unwrap());
    assert_meets_every_slo(&r);
}

#[test]
fn the_smaller_master_gets_the_smaller_share() {
    // apiserver-2's node has 4 cores, the others 8.
    let policy = policy();
    assert_eq!(policy.load_share, LoadShare::NodeCpu);
    let r = recommend(
        &snapshot(&policy, 900.0, 200.0, CALM_SCHEDULER),
        &policy,
        &current(&policy, apiserver(3.0, 200, 100, 25), client(50.0)),
    )
    .unwrap();
    assert_meets_every_slo(&r);
    let (big, small) = (&r.apiservers[0], &r.apiservers[2]);
    assert!(small.planned_read_only_rps < big.planned_read_only_rps);
    assert!(
        small.recommended.cpu_cores < big.recommended.cpu_cores,
        "{r:#?}"
    );
    assert!(small.recommended.cpu_cores <= policy.apiservers[2].node_allocatable.cpu_cores);
}

#[test]
fn a_blocking_finding_or_a_missing_replica_holds_with_the_reason() {
    let policy = uniform_policy();
    let cur = current(&policy, apiserver(2.0, 20, 10, 0), client(50.0));
    let mut snap = snapshot(&policy, 800.0, 150.0, CALM_SCHEDULER);
    snap.findings.push(Finding {
        kind: FindingKind::Stale,
        severity: Severity::Blocking,
        metric: "apiserver_request_total".into(),
        replica: Some("apiserver-1".into()),
        detail: "newest sample 90 s old".into(),
    });
    let r = recommend(&snap, &policy, &cur).unwrap();
    assert_eq!(r.action, Action::Hold);
    assert!(
        r.hold_reasons[0].contains("90 s old"),
        "{:?}",
        r.hold_reasons
    );

    let mut gone = snapshot(&policy, 800.0, 150.0, CALM_SCHEDULER);
    gone.apiservers.remove(1);
    let r = recommend(&gone, &policy, &cur).unwrap();
    assert_eq!(r.action, Action::Hold);
    assert!(
        r.hold_reasons.iter().any(|h| h.contains("apiserver-1")),
        "{:?}",
        r.hold_reasons
    );
    assert_eq!(r.apiservers[0].recommended, r.apiservers[0].current);
}

#[test]
fn no_history_means_priors_and_low_confidence_so_hold() {
    let policy = uniform_policy();
    let mut snap = snapshot(&policy, 800.0, 150.0, CALM_SCHEDULER);
    snap.history = None;
    let r = recommend(
        &snap,
        &policy,
        &current(&policy, apiserver(2.0, 20, 10, 0), client(50.0)),
    )
    .unwrap();
    assert_eq!(r.action, Action::Hold);
    assert!(
        r.hold_reasons.iter().any(|h| h.contains("confidence")),
        "{:?}",
        r.hold_reasons
    );
}

#[test]
fn the_example_snapshot_replays() {
    let policy = policy();
    let snap: LoadSnapshot = serde_json::from_str(SNAPSHOT).unwrap();
    let cur = policy.current.clone().unwrap();
    let r = recommend(&snap, &policy, &cur).unwrap();
    assert_eq!(r.action, Action::Change, "{:?}", r.hold_reasons);
    assert_meets_every_slo(&r);
    // The example's scheduler is throttled with a backlog: its QPS goes up.
    assert!(r.schedulers[0].recommended.client_qps > r.schedulers[0].current.client_qps);
    assert!(r.runner_up.as_ref().unwrap().cost >= r.recommended_cost.unwrap());
    let json = serde_json::to_string(&r).unwrap();
    let back: Recommendation = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    assert_eq!(
        recommend(&snap, &policy, &cur).unwrap(),
        r,
        "same inputs, same output"
    );
}

/// Recorded from the hosted test control plane (masters of 1, 1 and 0.5 cores on a shared
/// 2-core machine) under 120 req/s of open-loop CRUD and a Deployment scaled 0 ↔ 150.
#[test]
fn the_recorded_loopback_snapshot_replays() {
    let policy =
        recommender::Policy::from_yaml(include_str!("../../config/examples/policy-loopback.yaml"))
            .unwrap();
    let snap: LoadSnapshot =
        serde_json::from_str(include_str!("../../config/examples/snapshot-loopback.json")).unwrap();
    let cur = policy.current.clone().unwrap();
    let r = recommend(&snap, &policy, &cur).unwrap();
    for a in &r.apiservers {
        let c = a.calibration.as_ref().unwrap();
        assert_eq!(
            c.method,
            recommender::calibrate::CalibrationMethod::Regression,
            "{c:?}"
        );
        assert!(
            a.recommended.cpu_cores
                <= policy
                    .apiservers
                    .iter()
                    .find(|p| p.name == a.target.name)
                    .unwrap()
                    .node_allocatable
                    .cpu_cores
        );
    }
    // master-1 (its requests wait ten times longer off-CPU) cannot carry its share within
    // its 1-core node. The least violating setting keeps the CPU it has and its limits at
    // or below what runs (no thousands of slots on a saturated apiserver), misses by no
    // more than what runs, and the round says so and holds: no setting misses by less.
    assert!(!r.feasible);
    assert_eq!(r.action, Action::Hold);
    assert!(
        r.hold_reasons
            .iter()
            .any(|h| h.contains("less than the current one")),
        "{:?}",
        r.hold_reasons
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("`master-1`") && n.contains("cores at 85% CPU")),
        "{:?}",
        r.notes
    );
    let missed = |p: &Option<recommender::recommendation::ApiserverPrediction>| {
        p.as_ref()
            .unwrap()
            .violations
            .iter()
            .map(|v| v.amount)
            .sum::<f64>()
    };
    for a in &r.apiservers {
        let (now, next) = (
            missed(&a.predicted_current),
            missed(&a.predicted_recommended),
        );
        assert!(next <= now, "{}: {next} > {now}", a.target.name);
        let (c, n) = (&a.current, &a.recommended);
        assert!(
            n.max_requests_inflight <= c.max_requests_inflight
                && n.max_mutating_requests_inflight <= c.max_mutating_requests_inflight,
            "{}: {n:?}",
            a.target.name
        );
    }
    // The scheduler kept up (measured pod-scheduling P99 1.2 s); the model agrees.
    let s = r.schedulers[0].predicted_current.as_ref().unwrap();
    assert!(s.p99_s.unwrap() < s.slo_s, "{s:?}");
    let back: Recommendation = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    assert_eq!(recommend(&snap, &policy, &cur).unwrap(), r);
}

#[test]
fn a_quiet_hour_keeps_client_qps_for_bursts() {
    // Five pods a second need little QPS, but a storm needs much more: QPS costs nothing
    // until used, so the quiet hour must not take it away while the apiservers have room.
    let policy = uniform_policy();
    let r = recommend(
        &snapshot(&policy, 300.0, 60.0, CALM_SCHEDULER),
        &policy,
        &current(&policy, apiserver(2.0, 100, 50, 25), client(50.0)),
    )
    .unwrap();
    for c in r.schedulers.iter().chain(&r.controller_managers) {
        assert!(
            c.recommended.client_qps >= c.current.client_qps,
            "{}: {:?}",
            c.target.name,
            c.recommended
        );
    }
    assert!(r.client_qps_total.unwrap() <= r.apiserver_mutating_capacity_rps.unwrap());
    assert_meets_every_slo(&r);
}

#[test]
fn client_qps_comes_down_only_to_protect_the_apiservers() {
    // 2000 QPS per client on apiservers that can take a few hundred more writes a second.
    let policy = uniform_policy();
    let r = recommend(
        &snapshot(&policy, 300.0, 60.0, CALM_SCHEDULER),
        &policy,
        &current(&policy, apiserver(2.0, 100, 50, 25), client(2000.0)),
    )
    .unwrap();
    for c in r.schedulers.iter().chain(&r.controller_managers) {
        assert!(
            c.recommended.client_qps < c.current.client_qps,
            "{}: {:?}",
            c.target.name,
            c.recommended
        );
    }
}

/// The example snapshot with every request rate and the CPU that follows them ×`factor`.
fn scaled_example(factor: f64) -> LoadSnapshot {
    let mut snap: LoadSnapshot = serde_json::from_str(SNAPSHOT).unwrap();
    for a in &mut snap.apiservers {
        for class in [&mut a.read_only, &mut a.mutating] {
            class.arrival_rate = class.arrival_rate.map(|r| r * factor);
        }
        a.process.cpu_cores = a.process.cpu_cores.map(|c| c * factor);
    }
    for h in &mut snap.history.as_mut().unwrap().replicas {
        for series in [
            &mut h.read_only_rate,
            &mut h.mutating_rate,
            &mut h.cpu_cores,
        ] {
            for v in series.iter_mut().flatten() {
                *v *= factor;
            }
        }
    }
    snap
}

/// Cores recommended for the replicas on `node`, over every component.
fn cores_on(policy: &recommender::Policy, r: &Recommendation, node: &str) -> f64 {
    let on = |name: &str| {
        policy
            .replica_placements()
            .any(|p| p.name == name && p.node.as_deref() == Some(node))
    };
    r.apiservers
        .iter()
        .filter(|a| on(&a.target.name))
        .map(|a| a.recommended.cpu_cores)
        .chain(
            r.schedulers
                .iter()
                .chain(&r.controller_managers)
                .filter(|c| on(&c.target.name))
                .map(|c| c.recommended.cpu_cores),
        )
        .sum()
}

#[test]
fn co_located_components_share_their_node() {
    let policy = policy();
    let snap = scaled_example(5.0);
    let cur = policy.current.clone().unwrap();
    let r = recommend(&snap, &policy, &cur).unwrap();
    let node = policy.apiservers[0].node_allocatable;
    let on_master_0 = cores_on(&policy, &r, "master-0");
    assert!(
        on_master_0 <= node.cpu_cores + 1e-9,
        "{on_master_0} cores on an {}-core master",
        node.cpu_cores
    );
    // Without the node names every component is sized as if it had the node alone, and
    // five times the load asks for more than the node has: the budget is what holds it.
    let mut apart = policy.clone();
    for p in apart
        .apiservers
        .iter_mut()
        .chain(&mut apart.schedulers)
        .chain(&mut apart.controller_managers)
    {
        p.node = None;
    }
    let alone = recommend(&snap, &apart, &cur).unwrap();
    let scheduler_and_cm: f64 = alone.schedulers[0].recommended.cpu_cores
        + alone.controller_managers[0].recommended.cpu_cores;
    assert!(
        alone.apiservers[0].recommended.cpu_cores + scheduler_and_cm > node.cpu_cores,
        "the test's load must overflow the node: {} + {scheduler_and_cm}",
        alone.apiservers[0].recommended.cpu_cores
    );
}

#[test]
fn a_node_named_with_two_sizes_is_refused() {
    let mut text = POLICY.replace(
        "    node: master-1\n",
        "    node: master-0          # wrongly: apiserver-1's node is its own\n",
    );
    // apiserver-1 says 8 cores like master-0, so give it another size to contradict.
    text = text.replacen(
        "node_allocatable: { cpu_cores: 8, memory_bytes: 32212254720 }\n  - name: apiserver-2",
        "node_allocatable: { cpu_cores: 7, memory_bytes: 32212254720 }\n  - name: apiserver-2",
        1,
    );
    let err = recommender::Policy::from_yaml(&text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("apiservers[1].node_allocatable") && err.contains("master-0"),
        "{err}"
    );
}

#[test]
fn past_saturation_limits_stay_near_the_cpu_knee_and_the_note_says_by_how_much() {
    let mut policy = policy();
    // Let the limits go anywhere in one round and below Kubernetes' defaults: only the
    // model decides where they stop.
    policy.step_limits.max_decrease_factor = 1000.0;
    policy.step_limits.max_increase_factor = 1000.0;
    policy.bounds.apiserver.max_requests_inflight.min = 10.0;
    policy.bounds.apiserver.max_mutating_requests_inflight.min = 5.0;
    let snap = scaled_example(5.0);
    let cur = policy.current.clone().unwrap();
    let r = recommend(&snap, &policy, &cur).unwrap();
    assert!(
        !r.feasible,
        "×5 the example's load must not fit its masters"
    );
    for a in &r.apiservers {
        let c = a.calibration.as_ref().unwrap();
        let n = &a.recommended;
        let usable = n.cpu_cores - c.baseline_cpu_cores;
        // Concurrency beyond usable · (D + T) / D of a class cannot make it faster.
        let knee = |d: f64, t: f64| usable * (d + t) / d;
        let ro_knee = knee(c.read_only.cpu_s, c.read_only.non_cpu_s);
        let mu_knee = knee(c.mutating.cpu_s, c.mutating.non_cpu_s);
        assert!(
            f64::from(n.max_requests_inflight) <= 1.5 * ro_knee + 10.0,
            "{}: {n:?}, readOnly knee {ro_knee:.0}",
            a.target.name
        );
        assert!(
            f64::from(n.max_mutating_requests_inflight) <= 1.5 * mu_knee + 5.0,
            "{}: {n:?}, mutating knee {mu_knee:.0}",
            a.target.name
        );
        // A finite waiting room, not the bound's thousand.
        assert!(n.queue_length < 1000, "{n:?}");
        assert!(a.sized_by.is_some());
        // It rejects about what the cores cannot serve, from each class alike, and no more:
        // not most of one class to spare the other.
        let offered = a.planned_read_only_rps.unwrap() * c.read_only.cpu_s
            + a.planned_mutating_rps.unwrap() * c.mutating.cpu_s;
        let must_shed = 1.0 - usable / offered;
        let p = a.predicted_recommended.as_ref().unwrap();
        for rejected in [p.read_only_rejection, p.mutating_rejection] {
            assert!(
                rejected < must_shed + 0.25,
                "{}: rejects {rejected:.2} where {must_shed:.2} is beyond the cores",
                a.target.name
            );
        }
    }
    assert!(
        r.notes.iter().any(
            |n| n.contains("no setting within the bounds meets every SLO") && n.contains("cores")
        ),
        "{:?}",
        r.notes
    );
}

#[test]
fn the_queue_room_covers_the_measured_burst_and_is_never_empty() {
    let mut policy = uniform_policy();
    policy.bounds.apiserver.queue_length.min = 0.0;
    let cur = current(&policy, apiserver(4.0, 400, 200, 0), client(50.0));
    let mut snap = snapshot(&policy, 300.0, 60.0, CALM_SCHEDULER);
    // Nothing measured: the room is one grid step, never zero.
    for a in &mut snap.apiservers {
        a.read_only.inflight_max = None;
        a.mutating.inflight_max = None;
    }
    let r = recommend(&snap, &policy, &cur).unwrap();
    for a in &r.apiservers {
        assert!(a.recommended.queue_length > 0, "{:?}", a.recommended);
        assert_eq!(a.sized_by.unwrap().queue_length, Constraint::BurstRoom);
    }
    // A relist burst put 140 reads in flight at once: the room holds such a burst whole.
    for a in &mut snap.apiservers {
        a.read_only.inflight_max = Some(140.0);
    }
    let r = recommend(&snap, &policy, &cur).unwrap();
    for a in &r.apiservers {
        assert!(a.recommended.queue_length >= 140, "{:?}", a.recommended);
        assert_eq!(a.sized_by.unwrap().queue_length, Constraint::BurstRoom);
    }
}

/// The recommendation's settings as the running ones, so that only what a test changes
/// differs.
fn running(r: &Recommendation) -> recommender::setting::CurrentSettings {
    let mut cur = recommender::setting::CurrentSettings::default();
    for a in &r.apiservers {
        cur.apiservers.insert(a.target.name.clone(), a.recommended);
    }
    for (list, out) in [
        (&r.schedulers, &mut cur.schedulers),
        (&r.controller_managers, &mut cur.controller_managers),
    ] {
        for c in list {
            out.insert(c.target.name.clone(), c.recommended);
        }
    }
    cur
}

#[test]
fn a_running_room_far_below_the_measured_burst_is_raised_at_no_saving() {
    let mut policy = uniform_policy();
    policy.bounds.apiserver.queue_length.min = 0.0;
    let mut snap = snapshot(&policy, 300.0, 60.0, CALM_SCHEDULER);
    for a in &mut snap.apiservers {
        a.read_only.inflight_max = Some(140.0);
    }
    // Round after round from the defaults until arak holds: the step limits move it a step
    // at a time.
    let mut settled = recommend(
        &snap,
        &policy,
        &current(&policy, apiserver(4.0, 400, 200, 0), client(50.0)),
    )
    .unwrap();
    for _ in 0..8 {
        if settled.action == Action::Hold {
            break;
        }
        settled = recommend(&snap, &policy, &running(&settled)).unwrap();
    }
    assert_eq!(settled.action, Action::Hold, "{:?}", settled.hold_reasons);
    // The same settings with a room of a fifth of the burst: raising it costs nothing, so
    // the deadband alone would keep it; the burst it cannot hold makes it a change.
    let with_room = |room: u32| {
        let mut cur = running(&settled);
        for s in cur.apiservers.values_mut() {
            s.queue_length = room;
        }
        recommend(&snap, &policy, &cur).unwrap()
    };
    let small = with_room(28);
    assert_eq!(small.action, Action::Change, "{:?}", small.hold_reasons);
    for a in &small.apiservers {
        assert!(a.recommended.queue_length >= 140, "{:?}", a.recommended);
    }
    // A fifth short of it is within the floor's window-to-window noise: held.
    let near = with_room(115);
    assert_eq!(near.action, Action::Hold, "{:?}", near.hold_reasons);
}

#[test]
fn every_limit_says_what_sized_it() {
    let policy = policy();
    let snap: LoadSnapshot = serde_json::from_str(SNAPSHOT).unwrap();
    let r = recommend(&snap, &policy, &policy.current.clone().unwrap()).unwrap();
    assert!(r.feasible);
    for a in &r.apiservers {
        let s = a.sized_by.unwrap();
        assert!(
            matches!(
                s.max_requests_inflight,
                Constraint::ReadOnlyRejection | Constraint::ReadOnlyP99 | Constraint::LowerBound
            ),
            "{s:?}"
        );
        assert!(
            matches!(
                s.max_mutating_requests_inflight,
                Constraint::MutatingRejection
                    | Constraint::MutatingP99
                    | Constraint::MutatingCapacity
                    | Constraint::LowerBound
            ),
            "{s:?}"
        );
    }
}

/// Every knob the recommendation takes below what runs, as `replica/knob`.
fn lowered(r: &Recommendation) -> Vec<String> {
    r.knobs_moved(|was, is| is < was)
}

#[test]
fn a_knob_raised_within_the_scale_down_delay_is_not_lowered_whatever_the_slos() {
    let policy = policy();
    // Five times the example's load: no setting meets the SLOs, and the least violating
    // one takes knobs down (the queue room of 300 among them). The last change is old.
    let snap = scaled_example(5.0);
    let mut cur = policy.current.clone().unwrap();
    cur.last_change_unix_s = Some(snap.time_unix_s - 2000.0);
    let free = recommend(&snap, &policy, &cur).unwrap();
    assert!(!free.feasible);
    let down = lowered(&free);
    assert!(!down.is_empty(), "{:?}", free.apiservers);

    // Had arak raised those very knobs 700 s ago (inside the 1800 s delay), none goes down,
    // and the notes say which were held.
    for key in &down {
        cur.raised_unix_s
            .insert(key.clone(), snap.time_unix_s - 700.0);
    }
    let held = recommend(&snap, &policy, &cur).unwrap();
    assert_eq!(
        lowered(&held),
        Vec::<String>::new(),
        "{:?}",
        held.apiservers
    );
    let note = held
        .notes
        .iter()
        .find(|n| n.contains("scale-down delay"))
        .unwrap_or_else(|| panic!("{:?}", held.notes));
    for key in &down {
        assert!(note.contains(key.as_str()), "{note}");
    }

    // Raised longer ago than the delay, they are free to go down again.
    for t in cur.raised_unix_s.values_mut() {
        *t = snap.time_unix_s - 2000.0;
    }
    let again = recommend(&snap, &policy, &cur).unwrap();
    assert_eq!(lowered(&again), down);
    assert!(!again.notes.iter().any(|n| n.contains("scale-down delay")));
}

/// CPU the node did not give (the window's latency says the requests were served as if the
/// apiserver had fewer cores than its quota) is no reason to lower its CPU request: under
/// contention the kernel shares a node's CPU by the requests' weights, so a lower request
/// hands the neighbour more. A lightly loaded apiserver whose CPU the round lowers when its
/// latency matches the model keeps it when the latency says the node held cores back.
#[test]
fn cpu_the_node_did_not_give_is_not_taken_from_the_request() {
    let mut policy = uniform_policy();
    // Contention the model tells from its own error leaves little headroom at the cores the
    // node gave; an operator who runs CPUs hot lets the round stay feasible there.
    policy.max_cpu_utilization = 0.95;
    let cur = current(&policy, apiserver(4.0, 400, 200, 50), client(50.0));
    // Requests of CPU mostly (2 and 5 ms; P99s of 12 and 25 ms), 0.5 of 4 cores in use.
    let mut calm = snapshot(&policy, 150.0, 30.0, CALM_SCHEDULER);
    for h in &mut calm.history.as_mut().unwrap().replicas {
        h.read_only_p99_s.iter_mut().for_each(|v| *v = Some(0.012));
        h.mutating_p99_s.iter_mut().for_each(|v| *v = Some(0.025));
    }
    let r = recommend(&calm, &policy, &cur).unwrap();
    assert_eq!(r.action, Action::Change, "{:?}", r.hold_reasons);
    for a in &r.apiservers {
        assert_eq!(a.calibration.as_ref().unwrap().available_cpu_cores, None);
        assert!(a.recommended.cpu_cores < a.current.cpu_cores, "{a:?}");
    }
    // The window's requests (its last 10 steps) took 2.2 times the model's mean.
    let mut contended = calm.clone();
    for h in &mut contended.history.as_mut().unwrap().replicas {
        let n = h.cpu_cores.len();
        let window = |mean: f64| (0..n).map(|t| (t >= n - 10).then_some(mean)).collect();
        h.read_only_mean_s = window(2.2 * 0.004);
        h.mutating_mean_s = window(2.2 * 0.008);
    }
    let r = recommend(&contended, &policy, &cur).unwrap();
    assert!(r.feasible, "{:?}", r.binding_constraint);
    for a in &r.apiservers {
        let available = a.calibration.as_ref().unwrap().available_cpu_cores.unwrap();
        assert!(available < 0.5 * a.current.cpu_cores, "{available}");
        assert_eq!(a.recommended.cpu_cores, a.current.cpu_cores, "{a:?}");
        let note = format!(
            "apiserver `{}`: its requests were served as if",
            a.target.name
        );
        assert!(
            r.notes.iter().any(|n| n.starts_with(&note)),
            "{:?}",
            r.notes
        );
    }
}

/// Recorded: the overload experiment's apiserver (a 1.5-core quota on a shared 2-core
/// machine) at 290 req/s, using 1.14 cores, rejecting 11% and answering at P99 2.6 s. Taking
/// the quota at its word the model predicted no rejections (1e-124) and P99s of 0.07-1.4 s;
/// seeing what the node did not give, it predicts the saturation the apiserver showed.
#[test]
fn the_recorded_overload_snapshot_shows_its_saturation() {
    let policy =
        recommender::Policy::from_yaml(include_str!("../../config/examples/policy-overload.yaml"))
            .unwrap();
    let snap: LoadSnapshot =
        serde_json::from_str(include_str!("../../config/examples/snapshot-overload.json")).unwrap();
    let cur = policy.current.clone().unwrap();
    let r = recommend(&snap, &policy, &cur).unwrap();
    let a = &r.apiservers[0];
    let available = a.calibration.as_ref().unwrap().available_cpu_cores;
    assert!(
        available.is_some_and(|c| c < 0.9 * a.current.cpu_cores),
        "{available:?}"
    );
    let sample = &snap.apiservers[0].mutating;
    let observed = sample.rejected_rate.unwrap() / sample.arrival_rate.unwrap();
    let predicted = a.predicted_current.as_ref().unwrap().mutating_rejection;
    assert!(
        predicted > observed / 3.0 && predicted < 3.0 * observed,
        "{predicted} vs {observed}"
    );
    assert!(!r.feasible);
    assert!(a.recommended.cpu_cores >= a.current.cpu_cores);
}
