//! Pods through the control plane as a fluid, one step a second: the controller-manager
//! creates the pods asked for as fast as its client token bucket lets it, the scheduler binds
//! them as fast as its bucket and its algorithm let it, and every write that takes is a
//! mutating apiserver request. Cumulative curves of pods asked for and bound give each pod's
//! startup time (first in, first out), measured from the moment it was asked for.

use queue_model::scheduler::{self, SchedulerLoad, SchedulerSetting};
use recommender::ClientSettings;

use super::workload::Workload;

/// The pipeline's state, carried from interval to interval.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    /// Pods asked for that the controller-manager has not created yet.
    to_create: f64,
    /// Controller-manager background requests waiting on its bucket.
    background_waiting: f64,
    /// Created pods not bound yet.
    to_bind: f64,
    cm_tokens: f64,
    scheduler_tokens: f64,
    started: bool,
    /// Step end times and the cumulative pods asked for and bound by then.
    times: Vec<f64>,
    asked: Vec<f64>,
    bound: Vec<f64>,
}

/// What the pipeline did over one interval.
#[derive(Debug, Clone, Default)]
pub struct PodInterval {
    /// Cluster-wide mutating requests per second the pipeline sent the apiservers, per sub-step.
    pub write_rps: Vec<f64>,
    pub binding_rate: f64,
    /// Pods created and waiting for the scheduler at the end of the interval.
    pub pending_pods: f64,
    pub scheduler_request_rate: f64,
    pub scheduler_throttle_mean_s: f64,
    pub scheduler_throttle_p99_s: f64,
    pub controller_manager_request_rate: f64,
    pub controller_manager_throttle_mean_s: f64,
    pub controller_manager_throttle_p99_s: f64,
}

/// Waits on a token bucket, weighted by the requests that met them.
#[derive(Default)]
struct Waits(Vec<(f64, f64)>);

impl Waits {
    fn push(&mut self, wait_s: f64, requests: f64) {
        if requests > 0.0 {
            self.0.push((wait_s, requests));
        }
    }

    fn mean(&self) -> f64 {
        let total: f64 = self.0.iter().map(|w| w.1).sum();
        if total > 0.0 {
            self.0.iter().map(|w| w.0 * w.1).sum::<f64>() / total
        } else {
            0.0
        }
    }

    fn quantile(&mut self, q: f64) -> f64 {
        self.0.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = self.0.iter().map(|w| w.1).sum();
        let mut seen = 0.0;
        for (wait, weight) in &self.0 {
            seen += weight;
            if seen >= q * total {
                return *wait;
            }
        }
        0.0
    }
}

impl Pipeline {
    /// Runs `[from_s, to_s)` with these client settings. `mutating_rejection` is the share of
    /// mutating requests the apiservers rejected last interval: a rejected write spent its
    /// token and is retried. Writes are binned into `substeps` equal sub-steps.
    #[allow(clippy::too_many_arguments)]
    pub fn advance(
        &mut self,
        workload: &Workload,
        from_s: f64,
        to_s: f64,
        scheduler: &ClientSettings,
        controller_manager: &ClientSettings,
        mutating_rejection: f64,
        substeps: usize,
    ) -> PodInterval {
        let p = &workload.pods;
        if !self.started {
            // Buckets start full, as after a long quiet spell.
            self.cm_tokens = f64::from(controller_manager.client_burst);
            self.scheduler_tokens = f64::from(scheduler.client_burst);
            self.times.push(from_s);
            self.asked.push(0.0);
            self.bound.push(0.0);
            self.started = true;
        }
        let steps = (to_s - from_s).ceil().max(1.0) as usize;
        let dt = (to_s - from_s) / steps as f64;
        let success = (1.0 - mutating_rejection).clamp(0.0, 1.0);
        let mut writes = vec![0.0; substeps.max(1)];
        let (mut bound_total, mut sched_sent, mut cm_sent) = (0.0, 0.0, 0.0);
        let (mut sched_waits, mut cm_waits) = (Waits::default(), Waits::default());
        for step in 0..steps {
            let t = from_s + step as f64 * dt;
            let asked = workload.pod_demand(t, t + dt) * dt;

            // Controller-manager: background and pod writes share one bucket, served in proportion.
            let cm = controller_manager;
            let background = p.controller_manager_background_rps * dt;
            self.to_create += asked;
            self.background_waiting += background;
            self.cm_tokens = (self.cm_tokens + cm.client_qps * dt).min(f64::from(cm.client_burst));
            let want =
                self.background_waiting + self.to_create * p.controller_manager_requests_per_pod;
            let sent = want.min(self.cm_tokens);
            self.cm_tokens -= sent;
            let served = if want > 0.0 { sent / want } else { 1.0 };
            self.background_waiting *= 1.0 - served;
            let create_sent = self.to_create * served * p.controller_manager_requests_per_pod;
            let created = self.to_create * served * success;
            self.to_create -= created;
            cm_sent += sent;
            cm_waits.push(
                (want - sent) / cm.client_qps,
                background + asked * p.controller_manager_requests_per_pod,
            );

            // Scheduler: its bucket and its algorithm both cap the bindings.
            let s = scheduler;
            self.to_bind += created;
            self.scheduler_tokens =
                (self.scheduler_tokens + s.client_qps * dt).min(f64::from(s.client_burst));
            let rpp = p.scheduler_requests_per_pod;
            let want = self.to_bind * rpp;
            let sent = want
                .min(self.scheduler_tokens)
                .min(p.scheduler_algorithm_rate * dt * rpp);
            self.scheduler_tokens -= sent;
            let bound = sent / rpp * success;
            self.to_bind -= bound;
            sched_sent += sent;
            sched_waits.push((want - sent) / s.client_qps, created * rpp);
            bound_total += bound;

            let bin = (step * writes.len() / steps).min(writes.len() - 1);
            writes[bin] += create_sent + sent + bound * p.kubelet_writes_per_pod;

            let (last_asked, last_bound) =
                (*self.asked.last().unwrap(), *self.bound.last().unwrap());
            self.times.push(t + dt);
            self.asked.push(last_asked + asked);
            self.bound.push(last_bound + bound);
        }
        let bin_s = (to_s - from_s) / writes.len() as f64;
        let length = to_s - from_s;
        PodInterval {
            write_rps: writes.iter().map(|w| w / bin_s).collect(),
            binding_rate: bound_total / length,
            pending_pods: self.to_bind,
            scheduler_request_rate: sched_sent / length,
            scheduler_throttle_mean_s: sched_waits.mean(),
            scheduler_throttle_p99_s: sched_waits.quantile(0.99),
            controller_manager_request_rate: cm_sent / length,
            controller_manager_throttle_mean_s: cm_waits.mean(),
            controller_manager_throttle_p99_s: cm_waits.quantile(0.99),
        }
    }

    /// P99 over the pods asked for in `[from_s, to_s)` of the time until they were bound;
    /// a pod never bound counts as waiting until the end of the curve. None with no pods.
    pub fn delay_p99_s(&self, from_s: f64, to_s: f64) -> Option<f64> {
        let first = interpolate(&self.times, &self.asked, from_s);
        let last = interpolate(&self.times, &self.asked, to_s);
        let pods = last - first;
        if pods < 1.0 {
            return None;
        }
        let end = *self.times.last()?;
        let samples = (pods.ceil() as usize).min(2000);
        let mut delays: Vec<f64> = (0..samples)
            .map(|j| {
                let k = first + (j as f64 + 0.5) / samples as f64 * pods;
                let asked_at = interpolate(&self.asked, &self.times, k);
                let bound_at = if *self.bound.last().unwrap() >= k {
                    interpolate(&self.bound, &self.times, k)
                } else {
                    end
                };
                (bound_at - asked_at).max(0.0)
            })
            .collect();
        delays.sort_by(f64::total_cmp);
        let rank = ((0.99 * samples as f64).ceil() as usize).clamp(1, samples) - 1;
        Some(delays[rank])
    }

    /// Seconds from `start_s` until every pod asked for by `end_s` was bound.
    pub fn clear_time_s(&self, start_s: f64, end_s: f64) -> Option<f64> {
        let asked = interpolate(&self.times, &self.asked, end_s);
        (*self.bound.last()? >= asked - 1e-6)
            .then(|| interpolate(&self.bound, &self.times, asked - 1e-6) - start_s)
    }
}

/// The steady-state P99 time a pod waits for the scheduler at this churn (random arrivals,
/// which the fluid cannot see); infinite when the scheduler cannot keep up.
pub fn steady_pending_p99_s(workload: &Workload, churn_pods_per_s: f64, s: &ClientSettings) -> f64 {
    let load = SchedulerLoad {
        pod_arrival_rate: churn_pods_per_s,
        algorithm_rate: workload.pods.scheduler_algorithm_rate,
        requests_per_pod: workload.pods.scheduler_requests_per_pod,
    };
    let setting = SchedulerSetting {
        client_qps: s.client_qps,
        client_burst: s.client_burst,
        apiserver_capacity: f64::INFINITY,
    };
    scheduler::predict(&load, &setting).map_or(f64::INFINITY, |p| p.p99_pending_s)
}

/// What the scheduler model predicts for a storm of `pods` created at once: the time to bind
/// them all at these settings (the controller-manager's pace is not part of it).
pub fn predicted_storm_clear_s(workload: &Workload, pods: u32, s: &ClientSettings) -> Option<f64> {
    let load = SchedulerLoad {
        pod_arrival_rate: 0.0,
        algorithm_rate: workload.pods.scheduler_algorithm_rate,
        requests_per_pod: workload.pods.scheduler_requests_per_pod,
    };
    let setting = SchedulerSetting {
        client_qps: s.client_qps,
        client_burst: s.client_burst,
        apiserver_capacity: f64::INFINITY,
    };
    scheduler::storm_clear_time_s(&load, &setting, pods).ok()
}

/// y at x on the increasing curve (xs, ys), linear between points and clamped at the ends.
fn interpolate(xs: &[f64], ys: &[f64], x: f64) -> f64 {
    let i = xs.partition_point(|v| *v < x);
    if i == 0 {
        return ys[0];
    }
    if i >= xs.len() {
        return ys[ys.len() - 1];
    }
    let (x0, x1, y0, y1) = (xs[i - 1], xs[i], ys[i - 1], ys[i]);
    if x1 > x0 {
        y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    } else {
        y1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(qps: f64, burst: u32) -> ClientSettings {
        ClientSettings {
            cpu_cores: 1.0,
            memory_bytes: 1e9,
            client_qps: qps,
            client_burst: burst,
        }
    }

    fn storm_only() -> Workload {
        let mut w = super::super::workload::Workload::built_in();
        w.pods.peak_churn_pods_per_s = 0.0;
        w.pods.controller_manager_background_rps = 0.0;
        w.list_bursts.clear();
        w
    }

    #[test]
    fn a_storm_drains_at_the_slowest_bucket() {
        let w = storm_only();
        let s = w.pod_storms[0];
        let start = s.start_h * 3600.0;
        let mut p = Pipeline::default();
        // The controller-manager at 20 QPS and 2 writes per pod creates 10 pods a second.
        let out = p.advance(
            &w,
            start,
            start + 3600.0,
            &client(50.0, 100),
            &client(20.0, 30),
            0.0,
            60,
        );
        let clear = p
            .clear_time_s(start, start + s.duration_min * 60.0)
            .unwrap();
        let expected = (f64::from(s.pods) * 2.0 - 30.0) / 20.0;
        assert!((clear - expected).abs() < 3.0, "{clear} vs {expected}");
        assert!(out.controller_manager_throttle_p99_s > 100.0, "{out:?}");
        let p99 = p.delay_p99_s(start, start + s.duration_min * 60.0).unwrap();
        assert!(p99 > 100.0 && p99 <= clear, "{p99}");
        // Every write reaches the apiserver: creates, bindings and kubelet updates.
        let writes: f64 = out.write_rps.iter().map(|r| r * 60.0).sum();
        let per_pod = 2.0 + 1.0 + w.pods.kubelet_writes_per_pod;
        assert!(
            (writes - f64::from(s.pods) * per_pod).abs() < 1.0,
            "{writes}"
        );
    }

    #[test]
    fn ample_buckets_bind_as_pods_arrive() {
        let w = storm_only();
        let s = w.pod_storms[0];
        let start = s.start_h * 3600.0;
        let mut p = Pipeline::default();
        p.advance(
            &w,
            start,
            start + 900.0,
            &client(200.0, 400),
            &client(200.0, 300),
            0.0,
            15,
        );
        let p99 = p.delay_p99_s(start, start + s.duration_min * 60.0).unwrap();
        assert!(p99 < 1.5, "{p99}");
        assert!(predicted_storm_clear_s(&w, s.pods, &client(200.0, 400)).unwrap() > 10.0);
        assert!(steady_pending_p99_s(&w, 1.0, &client(50.0, 100)) < 0.2);
        assert!(steady_pending_p99_s(&w, 60.0, &client(50.0, 100)).is_infinite());
    }
}
