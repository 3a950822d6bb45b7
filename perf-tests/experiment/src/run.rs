//! `experiment run`: every configuration, interleaved over repetitions, on a fresh hosted
//! test control plane each time, one JSON file per run; and `experiment capacity`, the rate
//! sweep that finds where native's settings stop meeting the SLOs.
//!
//! A run of the overload scenario: the cluster comes up, one stress-test process offers the
//! scenario's rate from then on; arak (arak runs) is warmed up on it until its rounds settle,
//! native and static get a warm-up of the same length; then the measured window, then
//! optionally a step to another rate, timed until the apiservers are back within the SLOs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::process::Child;

use crate::error::{Error, Result};
use crate::model::{
    ArakOutcome, CapacityPoint, CapacitySweep, ClassLatency, Config, CycleResult, DensityResult,
    Experiment, RunRecord, ScenarioParams, SettingsSample, Status, StepResult, StressResult,
    Warmup,
};
use crate::procs::{self, command, output, stop};
use crate::prom::{self, Prometheus};
use crate::slo;

/// Where the tested cluster runs and with which binaries: shared by `run` and `capacity`.
pub struct Harness {
    pub repo: PathBuf,
    pub base_port: u16,
    pub tested_nodes: u32,
    pub apiservers: u32,
    pub apiserver_scrape_s: u32,
    pub stress_test: PathBuf,
    pub node_agent: PathBuf,
}

/// The capacity sweep's rates, in the order tried, and seconds per rate.
pub struct SweepPlan {
    pub rates: Vec<u32>,
    pub point_s: u64,
}

/// What `run` was asked to do.
pub struct Plan {
    pub harness: Harness,
    pub out: PathBuf,
    pub params: ScenarioParams,
    pub reps: u32,
    /// The number of the first repetition: a later batch merged into the same report goes
    /// on from the last one's, so its repetitions are not numbered (nor seeded) alike.
    pub first_rep: u32,
    pub configs: Vec<Config>,
    pub density_timeout: String,
    pub arak: PathBuf,
    pub command_line: String,
}

/// native and static warm up this long when no arak run has converged before them and no
/// `--warmup-s` was given: about what arak needs here (calibration, one roll, two rounds).
const FALLBACK_WARMUP_S: f64 = 180.0;
/// Seconds at the start of a capacity point left out: stress-test's first arrivals and the
/// apiservers' first queues.
const SWEEP_SKIP_S: f64 = 5.0;
/// The window arak's rounds read (the tuning's `windowSeconds`); convergence asks for two
/// of them of settled rounds.
const ARAK_WINDOW_S: u32 = 30;
/// One more scrape (every 5 s) so the window's last samples are in Prometheus.
const SCRAPE_WAIT: Duration = Duration::from_secs(7);

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn progress(text: impl AsRef<str>) {
    eprintln!("[experiment {}] {}", utc_clock(now()), text.as_ref());
}

/// HH:MM:SS UTC of a unix time.
fn utc_clock(t: f64) -> String {
    let s = t as u64 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Whether this stress-test build has the subcommand.
async fn stress_subcommand(stress_test: &Path, name: &str) -> bool {
    let mut c = command(stress_test);
    c.args([name, "--help"]);
    output(c).await.is_ok()
}

/// The median of what arak needed to converge so far, None before the first arak run.
fn median_warmup(records: &[RunRecord]) -> Option<f64> {
    let lengths: Vec<f64> = records
        .iter()
        .filter(|r| r.config == Config::Arak)
        .filter_map(|r| r.warmup.as_ref())
        .map(|w| w.length_s)
        .collect();
    crate::stats::summarise(&lengths).map(|s| s.median)
}

pub async fn run(plan: Plan) -> Result<PathBuf> {
    std::fs::create_dir_all(&plan.out)
        .map_err(Error::io(format!("creating {}", plan.out.display())))?;
    let p = &plan.params;
    let density =
        !p.density_pods.is_empty() && stress_subcommand(&plan.harness.stress_test, "density").await;
    let step = match p.step_to_rps {
        Some(s) => format!(
            "; then stress-test --kubeconfig $ARAK_TESTED_LOAD_KUBECONFIG --profile const:{s}@{}s --seed REP --output json --report step.json",
            p.measured_s
        ),
        None => String::new(),
    };
    let stress_command = match p.low_rps {
        Some(low) => format!(
            "the warm-up process is stopped; the cycle: stress-test --kubeconfig $ARAK_TESTED_LOAD_KUBECONFIG --profile {} --seed REP --output json --report cycle.json{step}",
            day_profile(low, p.rate_rps, p.measured_s)
        ),
        None => format!(
            "the same process goes on for the {} s measured window, then is stopped{step}",
            p.measured_s
        ),
    };
    let mut experiment = Experiment {
        params: plan.params.clone(),
        hypothesis: p.scenario.hypothesis().into(),
        started_utc: crate::utc_timestamp(now()),
        command: plan.command_line.clone(),
        reps: plan.reps,
        configs: plan.configs.clone(),
        warmup_command: format!(
            "stress-test --kubeconfig $ARAK_TESTED_LOAD_KUBECONFIG --rps {} --duration <warm-up timeout + window + 60 s> --seed REP --output json --report load.json",
            p.low_rps.unwrap_or(p.rate_rps)
        ),
        stress_command,
        density_pods: if density { p.density_pods.clone() } else { vec![] },
        density_command: density.then(|| {
            format!(
                "stress-test density --kubeconfig $ARAK_TESTED_LOAD_KUBECONFIG --pods N --namespace density-N --timeout {} --report density-N.json",
                plan.density_timeout
            )
        }),
        arak_command: "arak run --tuning control-plane --namespace tested-cp --kubeconfig <management> --tested-kubeconfig <tested> --prometheus-url <management Prometheus> --fetch-config fetch.yaml --soak 3s --pod-ready-timeout 3m --log-format json".into(),
        arak_policy: Value::Null,
        versions: versions(&plan.harness, Some(&plan.arak)).await,
        machine: machine(),
    };
    write_json(&plan.out.join("experiment.json"), &experiment)?;

    let total = plan.reps * plan.configs.len() as u32;
    let mut records: Vec<RunRecord> = Vec::new();
    let mut interrupted = false;
    'reps: for rep in plan.first_rep..plan.first_rep + plan.reps {
        for &config in &plan.configs {
            let index = records.len() as u32 + 1;
            let state_dir = state_dir();
            let mut record = RunRecord::new(index, config, rep, now());
            record.load_average_start = load_average();
            progress(format!("run {index}/{total}: {config}, repetition {rep}"));
            let started = Instant::now();
            let warmup = p
                .warmup_s
                .map(|s| s as f64)
                .unwrap_or_else(|| median_warmup(&records).unwrap_or(FALLBACK_WARMUP_S));
            let mut ctx = RunCtx {
                plan: &plan,
                state_dir: state_dir.clone(),
                run_dir: plan.out.join(format!("run-{index:02}-{config}-{rep}")),
                density,
                warmup: Duration::from_secs_f64(warmup),
                arak: None,
                load: None,
                policy: Value::Null,
            };
            let outcome = tokio::select! {
                r = ctx.run(&mut record) => r,
                _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
            };
            ctx.stop_all().await;
            if experiment.arak_policy.is_null() && !ctx.policy.is_null() {
                experiment.arak_policy = ctx.policy.clone();
                write_json(&plan.out.join("experiment.json"), &experiment)?;
            }
            match outcome {
                Ok(()) => record.status = Status::Ok,
                Err(e) => {
                    interrupted = matches!(e, Error::Interrupted);
                    record.reason = Some(e.to_string());
                    progress(format!("run {index}/{total} FAILED: {e}"));
                }
            }
            cluster_down(&plan.harness, &state_dir).await;
            record.finished_unix_s = now();
            record.load_average_end = load_average();
            write_json(&plan.out.join(record.file_name()), &record)?;
            progress(format!(
                "run {index}/{total} {} in {:.0} s (load average {:?})",
                if record.status == Status::Ok {
                    "done"
                } else {
                    "recorded as failed"
                },
                started.elapsed().as_secs_f64(),
                record.load_average_end.unwrap_or_default()
            ));
            records.push(record);
            if interrupted {
                break 'reps;
            }
        }
    }
    if interrupted {
        return Err(Error::Interrupted);
    }
    Ok(plan.out.clone())
}

fn state_dir() -> PathBuf {
    std::env::temp_dir().join(format!("arak-experiment-{}", std::process::id()))
}

/// Brings native up, offers each rate of the sweep for `point_s` and stops at the first
/// that misses an SLO; writes `capacity.json` into `out`.
pub async fn capacity(harness: &Harness, sweep: &SweepPlan, out: &Path) -> Result<CapacitySweep> {
    std::fs::create_dir_all(out).map_err(Error::io(format!("creating {}", out.display())))?;
    let mut result = CapacitySweep {
        started_utc: crate::utc_timestamp(now()),
        point_s: sweep.point_s,
        load_average_start: load_average(),
        ..Default::default()
    };
    let state_dir = state_dir();
    let run_dir = out.join("capacity");
    progress("capacity sweep on native");
    let outcome = tokio::select! {
        r = sweep_points(harness, sweep, &state_dir, &run_dir, &mut result) => r,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    cluster_down(harness, &state_dir).await;
    result.load_average_end = load_average();
    if let Err(e) = &outcome {
        result.stopped_because = format!("failed: {e}");
    }
    write_json(&out.join("capacity.json"), &result)?;
    outcome?;
    progress(format!(
        "capacity: {} ({})",
        result
            .capacity_rps
            .map_or("none within the SLOs".into(), |c| format!("{c} req/s")),
        result.stopped_because
    ));
    Ok(result)
}

async fn sweep_points(
    harness: &Harness,
    sweep: &SweepPlan,
    state_dir: &Path,
    run_dir: &Path,
    into: &mut CapacitySweep,
) -> Result<()> {
    let (env, prometheus) = cluster_up(harness, state_dir, run_dir, Config::Native).await?;
    into.stopped_because = "every rate was within the SLOs".into();
    for &rate in &sweep.rates {
        let report = run_dir.join(format!("stress-{rate}.json"));
        let mut stress = command(&harness.stress_test);
        stress
            .args(["--kubeconfig", env.get("ARAK_TESTED_LOAD_KUBECONFIG")?])
            .args(["--rps", &rate.to_string()])
            .args(["--duration", &format!("{}s", sweep.point_s)])
            .args(["--output", "json", "--seed", "1"])
            .arg("--report")
            .arg(&report);
        let spawned = now();
        procs::logged(
            stress,
            &run_dir.join(format!("stress-{rate}.log")),
            Duration::from_secs(sweep.point_s + 300),
        )
        .await?;
        let (start, end) = load_window(&report, spawned, sweep.point_s as f64);
        tokio::time::sleep(SCRAPE_WAIT).await;
        let window = measure_window(&prometheus, start + SWEEP_SKIP_S, end).await?;
        let mut point = CapacityPoint {
            rate_rps: rate,
            served_rps: window.served_rps,
            rejected_share: window.rejected_share,
            client_p99_ms: std::fs::read_to_string(&report)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|j| j["overall"]["latency_ms"]["p99"].as_f64()),
            ..Default::default()
        };
        point.p99_s = window
            .classes
            .iter()
            .filter_map(|(c, l)| Some((c.clone(), l.p99_s?)))
            .collect();
        point.within_slo = slo::within(&point.p99_s, point.rejected_share);
        progress(format!(
            "  {rate} req/s: served {}, 429 share {}, P99 {}",
            fmt_n(point.served_rps),
            fmt_share(point.rejected_share),
            point
                .p99_s
                .iter()
                .map(|(c, v)| format!("{c} {}", fmt_s(Some(*v))))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let within = point.within_slo;
        into.points.push(point);
        if within {
            into.capacity_rps = Some(f64::from(rate));
        } else {
            into.stopped_because = format!(
                "{rate} req/s missed an SLO (P99 over {} s or 429 share over {})",
                slo::P99_LIMIT_S[0].1,
                slo::REJECTED_LIMIT
            );
            break;
        }
    }
    Ok(())
}

/// The compressed day: from `low` up to `peak` over the first half, back down over the second.
pub fn day_profile(low: u32, peak: u32, length_s: u64) -> String {
    let half = length_s / 2;
    format!(
        "ramp:{low}-{peak}@{half}s+ramp:{peak}-{low}@{}s",
        length_s - half
    )
}

/// The load's window from stress-test's report (its arrivals start after the setup), else
/// from when the process was started.
fn load_window(report: &Path, spawned: f64, length_s: f64) -> (f64, f64) {
    let json = std::fs::read_to_string(report)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let start = json
        .as_ref()
        .and_then(|j| j["started_unix_s"].as_f64())
        .unwrap_or(spawned);
    let elapsed = json
        .as_ref()
        .and_then(|j| j["elapsed_s"].as_f64())
        .unwrap_or(length_s);
    (start, start + elapsed)
}

/// Latency per class, 429 share and served rate of the tested apiservers over a window.
async fn measure_window(prometheus: &Prometheus, start: f64, end: f64) -> Result<StressResult> {
    let mut result = StressResult {
        start_unix_s: start,
        end_unix_s: end,
        ..Default::default()
    };
    let w = prom::window(end - start);
    for (class, matchers) in prom::CLASSES {
        let latency = ClassLatency {
            p50_s: prometheus
                .scalar(&prom::class_quantile(0.5, matchers, &w), end)
                .await?,
            p99_s: prometheus
                .scalar(&prom::class_quantile(0.99, matchers, &w), end)
                .await?,
        };
        result.classes.insert(class.into(), latency);
        let series = prometheus
            .range(
                &prom::class_quantile(0.99, matchers, "20s"),
                start,
                end,
                5.0,
            )
            .await?;
        result.p99_series.insert(
            class.into(),
            series.into_iter().map(|(t, v)| (t - start, v)).collect(),
        );
    }
    result.rejected_share = prometheus.rejected_share(start, end).await?;
    result.served_rps = prometheus.served_rps(start, end).await?;
    result.scraped_share = prometheus.scraped_share(start, end).await?;
    Ok(result)
}

/// The 15-s SLO windows of `[start, end]`, each read at its end.
async fn slo_windows(prometheus: &Prometheus, start: f64, end: f64) -> Result<Vec<slo::SloWindow>> {
    let w = format!("{}s", slo::WINDOW_S as u64);
    // Whole seconds: Prometheus steps a range query from its integer start.
    let first = (start + slo::WINDOW_S).floor();
    let mut p99: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (class, matchers) in prom::CLASSES {
        p99.insert(
            class.into(),
            prometheus
                .range(
                    &prom::class_quantile(0.99, matchers, &w),
                    first,
                    end,
                    slo::WINDOW_S,
                )
                .await?,
        );
    }
    let rejected = prometheus
        .range(&prom::rejected_share(&w), first, end, slo::WINDOW_S)
        .await?;
    let mut windows = Vec::new();
    let mut t = first;
    while t <= end + 0.5 {
        let at = |series: &[(f64, f64)]| {
            series
                .iter()
                .find(|(ts, _)| (ts - t).abs() < 0.5)
                .map(|&(_, v)| v)
        };
        let p99_s: BTreeMap<String, f64> = p99
            .iter()
            .filter_map(|(c, series)| Some((c.clone(), at(series)?)))
            .collect();
        let rejected_share = at(&rejected);
        windows.push(slo::SloWindow {
            t_s: t - start,
            within: slo::within(&p99_s, rejected_share),
            p99_s,
            rejected_share,
        });
        t += slo::WINDOW_S;
    }
    Ok(windows)
}

async fn cluster_down(harness: &Harness, state_dir: &Path) {
    if !state_dir.exists() {
        return;
    }
    let mut c = command(harness.repo.join("perf-tests/cluster"));
    c.arg("down").arg("--state-dir").arg(state_dir);
    if let Err(e) = output(c).await {
        progress(format!("cluster down: {e}"));
    }
}

/// A fresh hosted control plane in `config`'s overlay, once Prometheus scrapes it.
async fn cluster_up(
    harness: &Harness,
    state_dir: &Path,
    run_dir: &Path,
    config: Config,
) -> Result<(ClusterEnv, Prometheus)> {
    std::fs::create_dir_all(run_dir).map_err(Error::io("creating the run directory"))?;
    let log = run_dir.join("cluster-up.log");
    let mut up = command(harness.repo.join("perf-tests/cluster"));
    up.arg("up")
        .arg("--hosted")
        .args(["--nodes", "1"])
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--base-port", &harness.base_port.to_string()])
        .args(["--owner-pid", &std::process::id().to_string()])
        .env("ARAK_HOSTED_VARIANT", config.variant())
        .env("ARAK_HOSTED_NODES", harness.tested_nodes.to_string())
        .env("ARAK_HOSTED_APISERVERS", harness.apiservers.to_string())
        .env(
            "ARAK_HOSTED_APISERVER_SCRAPE_S",
            harness.apiserver_scrape_s.to_string(),
        )
        .env("ARAK_NODE_AGENT", &harness.node_agent)
        .env("ARAK_CLUSTER_TIMEOUT", "240");
    let t = Instant::now();
    procs::logged(up, &log, Duration::from_secs(420)).await?;
    progress(format!(
        "  hosted control plane ({} overlay) up in {:.0} s",
        config.variant(),
        t.elapsed().as_secs_f64()
    ));
    let mut env_cmd = command(harness.repo.join("perf-tests/cluster"));
    env_cmd.arg("env").arg("--state-dir").arg(state_dir);
    let env = ClusterEnv(parse_env(&output(env_cmd).await?));
    let prometheus = Prometheus::new(env.get("PROMETHEUS_URL")?)?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !prometheus.tested_scraped(now()).await.unwrap_or(false) {
        if Instant::now() > deadline {
            return Err(Error::Invalid(
                "Prometheus never scraped the tested apiservers".into(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok((env, prometheus))
}

struct RunCtx<'a> {
    plan: &'a Plan,
    state_dir: PathBuf,
    run_dir: PathBuf,
    density: bool,
    /// native's and static's warm-up.
    warmup: Duration,
    arak: Option<Child>,
    /// The stress-test process offering the scenario's rate.
    load: Option<Child>,
    policy: Value,
}

/// The cluster's `cluster env` (with the hosted layer's `ARAK_TESTED_*`).
struct ClusterEnv(HashMap<String, String>);

impl ClusterEnv {
    fn get(&self, name: &str) -> Result<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Error::Invalid(format!("`cluster env` does not say {name}")))
    }
}

pub fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.trim_matches(|c| c == '\'' || c == '"').to_owned(),
            )
        })
        .collect()
}

impl RunCtx<'_> {
    async fn run(&mut self, record: &mut RunRecord) -> Result<()> {
        let plan = self.plan;
        let (env, prometheus) =
            cluster_up(&plan.harness, &self.state_dir, &self.run_dir, record.config).await?;
        if record.config == Config::Arak {
            self.start_arak(&env).await?;
            progress("  arak run started (Auto)");
        }
        let settings: Samples = Arc::new(Mutex::new(Vec::new()));
        let poller = tokio::spawn(poll_settings(
            PathBuf::from(env.get("ARAK_TOOLS_BIN")?).join("kubectl"),
            PathBuf::from(env.get("KUBECONFIG")?),
            env.get("ARAK_TESTED_NAMESPACE")?.to_owned(),
            settings.clone(),
        ));
        let result = self.load_phases(record, &env, &prometheus).await;
        poller.abort();
        let window_start = record
            .stress
            .as_ref()
            .map_or(record.started_unix_s, |s| s.start_unix_s);
        record.settings = settings
            .lock()
            .map(|s| {
                s.iter()
                    .map(|(t, values)| SettingsSample {
                        t_s: t - window_start,
                        values: values.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if record.config == Config::Arak {
            record.arak = Some(self.arak_outcome(&env).await);
        }
        result
    }

    /// Warm-up, measured window, step and density, on one cluster.
    async fn load_phases(
        &mut self,
        record: &mut RunRecord,
        env: &ClusterEnv,
        prometheus: &Prometheus,
    ) -> Result<()> {
        let plan = self.plan;
        let p = &plan.params;
        let load_kubeconfig = env.get("ARAK_TESTED_LOAD_KUBECONFIG")?.to_owned();
        // One process from the warm-up to the window's end, so the load never pauses for
        // stress-test's setup between them (a pause would be a load change arak reacts to).
        let longest = p.warmup_timeout_s + p.measured_s + 60;
        // A day warms up on its low load: the cycle starts from what arak chose for it.
        let warm_rps = p.low_rps.unwrap_or(p.rate_rps);
        let mut load = command(&plan.harness.stress_test);
        load.args(["--kubeconfig", &load_kubeconfig])
            .args(["--rps", &warm_rps.to_string()])
            .args(["--duration", &format!("{longest}s")])
            .args(["--output", "json", "--seed", &record.rep.to_string()])
            .arg("--report")
            .arg(self.run_dir.join("load.json"));
        self.load = Some(spawn_logged(load, &self.run_dir.join("load.log"))?);
        let warm_start = Instant::now();
        let mut warmup = Warmup {
            rate_rps: warm_rps,
            ..Default::default()
        };
        if record.config == Config::Arak {
            progress(format!(
                "  warm-up at {warm_rps} req/s until arak settles (at most {} s)",
                p.warmup_timeout_s
            ));
            let converged = self
                .wait_arak_converged(env, Duration::from_secs(p.warmup_timeout_s))
                .await?;
            let log = std::fs::read_to_string(self.arak_log()).unwrap_or_default();
            let decisions = crate::arak_log::decisions(&log);
            warmup.arak_rounds = Some(decisions.len());
            warmup.arak_applies = Some(crate::arak_log::applies(&decisions).len());
            warmup.converged = Some(converged);
        } else {
            progress(format!(
                "  warm-up at {warm_rps} req/s for {:.0} s",
                self.warmup.as_secs_f64()
            ));
            let deadline = warm_start + self.warmup;
            while Instant::now() < deadline {
                self.check_load()?;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        warmup.length_s = warm_start.elapsed().as_secs_f64();
        progress(format!(
            "  warm-up {:.0} s{}",
            warmup.length_s,
            match warmup.converged {
                Some(true) => ", arak converged",
                Some(false) => ", arak did NOT converge (timed out)",
                None => "",
            }
        ));
        record.warmup = Some(warmup);

        let decisions_before = crate::arak_log::decisions(
            &std::fs::read_to_string(self.arak_log()).unwrap_or_default(),
        )
        .len();
        let (start, end) = match p.low_rps {
            Some(low) => {
                if let Some(mut load) = self.load.take() {
                    stop(&mut load, Duration::from_secs(5)).await;
                }
                let profile = day_profile(low, p.rate_rps, p.measured_s);
                progress(format!("  measured window: the day's cycle {profile}"));
                let window = self
                    .fixed_load(&load_kubeconfig, record.rep, &profile, "cycle")
                    .await?;
                record.cycle = Some(CycleResult {
                    profile,
                    ..Default::default()
                });
                window
            }
            None => {
                let start = now();
                progress(format!("  measured window, {} s", p.measured_s));
                let deadline = Instant::now() + Duration::from_secs(p.measured_s);
                while Instant::now() < deadline {
                    self.check_load()?;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                if let Some(mut load) = self.load.take() {
                    stop(&mut load, Duration::from_secs(5)).await;
                }
                (start, now())
            }
        };
        if record.config == Config::Arak {
            let log = std::fs::read_to_string(self.arak_log()).unwrap_or_default();
            let decisions = crate::arak_log::decisions(&log);
            record.applies_in_window =
                crate::arak_log::applies(&decisions[decisions_before.min(decisions.len())..])
                    .into_iter()
                    .map(|l| l.chars().take(2000).collect())
                    .collect();
            // A round logs its decision when its roll is done: one still rolling is only
            // seen in the StatefulSets' revisions (an apiserver merely not Ready is no roll).
            if statefulsets(env)
                .await?
                .is_some_and(|list| any_rolling(&list))
            {
                record
                    .applies_in_window
                    .push("a StatefulSet was mid-roll when the window ended".into());
            }
        }
        if let Some(step_to) = p.step_to_rps {
            progress(format!("  step to {step_to} req/s for {} s", p.measured_s));
            let (start, end) = self
                .fixed_load(
                    &load_kubeconfig,
                    record.rep,
                    &format!("const:{step_to}@{}s", p.measured_s),
                    "step",
                )
                .await?;
            record.step = Some(StepResult {
                rate_rps: step_to,
                start_unix_s: start,
                end_unix_s: end,
                ..Default::default()
            });
        }
        tokio::time::sleep(SCRAPE_WAIT).await;
        let mut result = measure_window(prometheus, start, end).await?;
        result.profile = match &record.cycle {
            Some(c) => c.profile.clone(),
            None => format!("const:{}@{}s", p.rate_rps, p.measured_s),
        };
        progress(format!(
            "  window: P99 mutating {} read {} list {}, 429 share {}, served {} req/s",
            fmt_s(result.classes.get("mutating").and_then(|c| c.p99_s)),
            fmt_s(result.classes.get("read").and_then(|c| c.p99_s)),
            fmt_s(result.classes.get("list").and_then(|c| c.p99_s)),
            fmt_share(result.rejected_share),
            fmt_n(result.served_rps),
        ));
        record.stress = Some(result);
        record.cpu_by_job = prometheus.cpu_core_seconds(start, end).await?;
        record.cpu_core_seconds = Some(record.cpu_by_job.values().sum());
        record.peak_rss_bytes = prometheus.peak_rss(start, end).await?;
        if let Some(cycle) = record.cycle.as_mut() {
            cycle.windows = slo_windows(prometheus, start, end).await?;
            cycle.slo_attainment = slo::attainment(&cycle.windows);
            progress(format!(
                "  cycle: {} of the 15-s windows within the SLOs",
                fmt_share(cycle.slo_attainment)
            ));
        }
        if let Some(step) = record.step.as_mut() {
            step.windows = slo_windows(prometheus, step.start_unix_s, step.end_unix_s).await?;
            step.time_to_adapt_s = slo::time_to_adapt(&step.windows);
            step.slo_miss_min = slo::miss_minutes(&step.windows);
            progress(format!(
                "  step to {} req/s: back within the SLOs after {}, {:.2} SLO-miss minutes",
                step.rate_rps,
                step.time_to_adapt_s
                    .map_or("never".into(), |t| format!("{t:.0} s")),
                step.slo_miss_min
            ));
        }
        progress(format!(
            "  control plane CPU {:.1} core-s, peak RSS {:.0} MiB",
            record.cpu_core_seconds.unwrap_or(f64::NAN),
            record.peak_rss_bytes.unwrap_or(f64::NAN) / 1_048_576.0
        ));
        if self.density {
            for &pods in &p.density_pods {
                let d = self.density(&load_kubeconfig, pods).await;
                progress(format!(
                    "  density {pods} pods: {}",
                    if d.ok {
                        format!(
                            "startup P99 {}, throughput P50 {} max {} pods/s",
                            fmt_s(d.pod_startup_p99_s),
                            fmt_n(d.throughput_p50),
                            fmt_n(d.throughput_max)
                        )
                    } else {
                        format!("failed: {}", d.reason.clone().unwrap_or_default())
                    }
                ));
                record.density.push(d);
            }
        } else if !p.density_pods.is_empty() {
            record.density_note =
                Some("stress-test density was not available in this build".into());
        }
        Ok(())
    }

    /// A stress-test process with a rate profile of its own, to its end: the step after the
    /// window, or the day's cycle (its setup is a short pause in the load, part of the
    /// change). The load's window, from its report.
    async fn fixed_load(
        &mut self,
        kubeconfig: &str,
        rep: u32,
        profile: &str,
        name: &str,
    ) -> Result<(f64, f64)> {
        let length_s = self.plan.params.measured_s;
        let report = self.run_dir.join(format!("{name}.json"));
        let mut stress = command(&self.plan.harness.stress_test);
        stress
            .args(["--kubeconfig", kubeconfig])
            .args(["--profile", profile])
            .args(["--output", "json", "--seed", &rep.to_string()])
            .arg("--report")
            .arg(&report);
        let spawned = now();
        procs::logged(
            stress,
            &self.run_dir.join(format!("{name}.log")),
            Duration::from_secs(length_s + 600),
        )
        .await?;
        Ok(load_window(&report, spawned, length_s as f64))
    }

    /// An error if the load process has ended before it was stopped.
    fn check_load(&mut self) -> Result<()> {
        let Some(load) = self.load.as_mut() else {
            return Ok(());
        };
        match load.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Command {
                command: "stress-test (the scenario's load)".into(),
                status: status.to_string(),
                output: procs::tail(
                    &std::fs::read_to_string(self.run_dir.join("load.log")).unwrap_or_default(),
                    25,
                ),
            }),
            Err(e) => Err(Error::io("waiting for stress-test")(e)),
        }
    }

    /// Stops what the run started, load first (arak is stopped by `arak_outcome`, or here
    /// when the run failed before it).
    async fn stop_all(&mut self) {
        if let Some(mut load) = self.load.take() {
            stop(&mut load, Duration::from_secs(5)).await;
        }
        if let Some(mut arak) = self.arak.take() {
            stop(&mut arak, Duration::from_secs(20)).await;
        }
    }

    /// Until arak's rounds have settled for two of its windows in a row and no StatefulSet is
    /// mid-roll; false at `limit`. Two settled rounds were not enough: ten seconds of holds
    /// on one window, and the next window's noise made a change inside the measured one.
    async fn wait_arak_converged(&mut self, env: &ClusterEnv, limit: Duration) -> Result<bool> {
        let interval_s = self.plan.params.arak_interval_s.max(1);
        let settled_rounds = (2 * ARAK_WINDOW_S).div_ceil(interval_s) as usize;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            self.check_load()?;
            let log = std::fs::read_to_string(self.arak_log()).unwrap_or_default();
            if crate::arak_log::converged(&crate::arak_log::decisions(&log), settled_rounds)
                && statefulsets(env)
                    .await?
                    .is_some_and(|list| all_rolled_out(&list))
            {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Ok(false)
    }

    async fn density(&self, kubeconfig: &str, pods: u32) -> DensityResult {
        let report = self.run_dir.join(format!("density-{pods}.json"));
        let mut c = command(&self.plan.harness.stress_test);
        c.arg("density")
            .args(["--kubeconfig", kubeconfig])
            .args(["--pods", &pods.to_string()])
            .args(["--namespace", &format!("density-{pods}")])
            .args(["--timeout", &self.plan.density_timeout])
            .arg("--report")
            .arg(&report);
        let start = Instant::now();
        let outcome = procs::logged(
            c,
            &self.run_dir.join(format!("density-{pods}.log")),
            Duration::from_secs(600),
        )
        .await;
        let mut result = DensityResult {
            pods,
            elapsed_s: start.elapsed().as_secs_f64(),
            ..Default::default()
        };
        if let Err(e) = outcome {
            result.reason = Some(e.to_string());
            return result;
        }
        match std::fs::read_to_string(&report)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(json) => crate::density::read(&json, &mut result),
            Err(e) => result.reason = Some(format!("reading {}: {e}", report.display())),
        }
        result
    }

    async fn start_arak(&mut self, env: &ClusterEnv) -> Result<()> {
        let plan = self.plan;
        let kubectl = PathBuf::from(env.get("ARAK_TOOLS_BIN")?).join("kubectl");
        let kubeconfig = env.get("KUBECONFIG")?;
        let namespace = env.get("ARAK_TESTED_NAMESPACE")?;
        let dir = self.state_dir.join("arak");
        std::fs::create_dir_all(&dir).map_err(Error::io("creating the arak directory"))?;

        let mut crd = command(&plan.arak);
        crd.arg("crd");
        let crd_file = dir.join("crd.yaml");
        std::fs::write(&crd_file, output(crd).await?).map_err(Error::io("writing the CRD"))?;
        let mut apply = command(&kubectl);
        apply
            .args(["--kubeconfig", kubeconfig, "apply", "-f"])
            .arg(&crd_file);
        output(apply).await?;
        let mut wait = command(&kubectl);
        wait.args([
            "--kubeconfig",
            kubeconfig,
            "wait",
            "--for=condition=Established",
            "crd/controlplanetunings.arak.io",
            "--timeout=60s",
        ]);
        output(wait).await?;

        let policy = policy(&plan.harness, env)?;
        self.policy = policy.clone();
        let tuning = json!({
            "apiVersion": "arak.io/v1alpha1",
            "kind": "ControlPlaneTuning",
            "metadata": {"name": "control-plane", "namespace": namespace},
            "spec": {
                "mode": "Auto",
                "intervalSeconds": plan.params.arak_interval_s,
                "windowSeconds": ARAK_WINDOW_S,
                "historySeconds": 120,
                "policy": policy,
            },
        });
        let tuning_file = dir.join("tuning.json");
        write_json(&tuning_file, &tuning)?;
        let mut apply = command(&kubectl);
        apply
            .args(["--kubeconfig", kubeconfig, "apply", "-f"])
            .arg(&tuning_file);
        output(apply).await?;
        let fetch = dir.join("fetch.yaml");
        std::fs::write(
            &fetch,
            "apiserver: { job: tested-apiserver }\nscheduler: { job: tested-scheduler }\ncontroller_manager: { job: tested-controller-manager }\n",
        )
        .map_err(Error::io("writing fetch.yaml"))?;

        let log = std::fs::File::create(self.arak_log()).map_err(Error::io("creating arak.log"))?;
        let mut c = command(&plan.arak);
        c.args(["run", "--tuning", "control-plane", "--log-format", "json"])
            .args(["--kubeconfig", kubeconfig])
            .args(["--tested-kubeconfig", env.get("ARAK_TESTED_KUBECONFIG")?])
            .args(["--namespace", namespace, "--identity", "experiment"])
            .args(["--prometheus-url", env.get("PROMETHEUS_URL")?])
            .arg("--fetch-config")
            .arg(&fetch)
            .args([
                "--listen",
                &format!("127.0.0.1:{}", plan.harness.base_port + 49),
            ])
            .args(["--soak", "3s", "--pod-ready-timeout", "3m"])
            .env("RUST_LOG", "arak=info,updater=info")
            .stdout(std::process::Stdio::null())
            .stderr(log);
        self.arak = Some(c.spawn().map_err(Error::io("starting arak run"))?);
        Ok(())
    }

    fn arak_log(&self) -> PathBuf {
        self.state_dir.join("arak").join("arak.log")
    }

    async fn arak_outcome(&mut self, env: &ClusterEnv) -> ArakOutcome {
        if let Some(mut arak) = self.arak.take() {
            stop(&mut arak, Duration::from_secs(20)).await;
        }
        let mut outcome = ArakOutcome::default();
        let log = std::fs::read_to_string(self.arak_log()).unwrap_or_default();
        let decisions = crate::arak_log::decisions(&log);
        outcome.last_decisions = decisions[decisions.len().saturating_sub(8)..]
            .iter()
            .map(|l| l.chars().take(2000).collect())
            .collect();
        outcome.problems = log
            .lines()
            .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
            .take(30)
            .map(|l| l.chars().take(1000).collect())
            .collect();
        // A copy of the whole log, if small, for whoever reads why arak did what it did.
        if log.len() < 300_000 {
            let _ = std::fs::write(self.run_dir.join("arak.log"), &log);
        } else {
            let _ = std::fs::write(self.run_dir.join("arak.log"), procs::tail(&log, 400));
        }
        if let (Ok(bin), Ok(kubeconfig), Ok(namespace)) = (
            env.get("ARAK_TOOLS_BIN"),
            env.get("KUBECONFIG"),
            env.get("ARAK_TESTED_NAMESPACE"),
        ) {
            let mut get = command(PathBuf::from(bin).join("kubectl"));
            get.args([
                "--kubeconfig",
                kubeconfig,
                "-n",
                namespace,
                "get",
                "controlplanetuning",
                "control-plane",
                "-o",
                "json",
            ]);
            if let Ok(text) = output(get).await
                && let Ok(json) = serde_json::from_str::<Value>(&text)
            {
                let status = &json["status"];
                outcome.acted = status["lastApplied"].is_object();
                outcome.last_applied = Some(status["lastApplied"].clone()).filter(|v| !v.is_null());
                outcome.conditions = Some(status["conditions"].clone()).filter(|v| !v.is_null());
                outcome.recommendation =
                    Some(status["recommendation"].clone()).filter(|v| !v.is_null());
                outcome.model_error = Some(status["modelError"].clone()).filter(|v| !v.is_null());
            }
        }
        outcome
    }
}

/// The tested StatefulSets as kubectl lists them, None when kubectl cannot say.
async fn statefulsets(env: &ClusterEnv) -> Result<Option<Value>> {
    let mut get = command(PathBuf::from(env.get("ARAK_TOOLS_BIN")?).join("kubectl"));
    get.args(["--kubeconfig", env.get("KUBECONFIG")?])
        .args(["-n", env.get("ARAK_TESTED_NAMESPACE")?])
        .args(["get", "statefulsets", "-o", "json"]);
    Ok(output(get)
        .await
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok()))
}

/// Starts `command` with stdout and stderr appended to `log`; the caller stops it.
fn spawn_logged(mut command: tokio::process::Command, log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(Error::io(format!("opening {}", log.display())))?;
    let err = file
        .try_clone()
        .map_err(Error::io("duplicating a log handle"))?;
    command
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(Error::io(format!("starting {}", log.display())))
}

/// The example policy (config/examples/policy.yaml) for the hosted control plane: replicas
/// named by their scrape `instance`, on the masters the per-replica layout pins them to
/// (apiserver-i on master-i, the scheduler and controller-manager on master-0, sharing its
/// 2 cores: without `node` arak sized each as if it had the master alone, and an apiserver
/// of 1.75 cores beside two 0.25-core components could not be scheduled), and the short-run safety
/// settings of the Auto integration test: no cooldown, and act only on a model calibrated
/// from the run's own measurements (confidence medium), never on the priors alone.
fn policy(harness: &Harness, env: &ClusterEnv) -> Result<Value> {
    let path = harness.repo.join("config/examples/policy.yaml");
    let text =
        std::fs::read_to_string(&path).map_err(Error::io(format!("reading {}", path.display())))?;
    let mut policy: Value = serde_norway::from_str(&text).map_err(|e| Error::Parse {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let apiserver_port = env.get("ARAK_TESTED_APISERVER_PORT")?;
    let hosted_base: u16 = env
        .get("ARAK_HOSTED_BASE_PORT")?
        .parse()
        .map_err(|_| Error::Invalid("ARAK_HOSTED_BASE_PORT is not a port".into()))?;
    let node = json!({"cpu_cores": 2, "memory_bytes": 8_589_934_592_u64});
    let map = policy
        .as_object_mut()
        .ok_or_else(|| Error::Invalid(format!("{} is not a mapping", path.display())))?;
    map.remove("current");
    let apiservers: Vec<Value> = (0..harness.apiservers)
        .map(|i| {
            json!({"name": format!("127.0.1.{}:{apiserver_port}", i + 1), "stateful_set": format!("apiserver-{i}"),
                   "container": "kube-apiserver", "node_allocatable": node, "node": format!("master-{i}")})
        })
        .collect();
    map.insert("apiservers".into(), json!(apiservers));
    map.insert(
        "schedulers".into(),
        json!([{"name": format!("127.0.1.1:{}", hosted_base + 5), "stateful_set": "scheduler-0",
                "container": "kube-scheduler", "node_allocatable": node, "node": "master-0"}]),
    );
    map.insert(
        "controller_managers".into(),
        json!([{"name": format!("127.0.1.1:{}", hosted_base + 4), "stateful_set": "controller-manager-0",
                "container": "kube-controller-manager", "node_allocatable": node, "node": "master-0"}]),
    );
    map.insert(
        "safety".into(),
        json!({"deadband_saving_share": 0.05, "cooldown_s": 0, "min_confidence": "medium"}),
    );
    for component in ["apiserver", "scheduler", "controller_manager"] {
        policy["bounds"][component]["cpu_cores"] = json!({"min": 0.25, "max": 2, "step": 0.25});
    }
    // The run's 120 s of history at the controller's 15 s step hold 9 samples at most: the
    // example's 12 would keep arak on its priors, and so holding, for the whole run.
    policy["calibration"]["min_samples"] = json!(6);
    Ok(policy)
}

/// The settings key of the machine's 1-minute load average.
pub const LOAD_KEY: &str = "machine/load1";

/// Settings samples taken while the run goes: (unix time, values).
type Samples = Arc<Mutex<Vec<(f64, BTreeMap<String, f64>)>>>;

/// Samples the tested control plane's StatefulSets every 5 s.
async fn poll_settings(kubectl: PathBuf, kubeconfig: PathBuf, namespace: String, into: Samples) {
    loop {
        let mut get = command(&kubectl);
        get.arg("--kubeconfig").arg(&kubeconfig).args([
            "-n",
            &namespace,
            "get",
            "statefulsets",
            "-o",
            "json",
        ]);
        if let Ok(text) = output(get).await
            && let Ok(json) = serde_json::from_str::<Value>(&text)
            && let Ok(mut samples) = into.lock()
        {
            let mut values = settings_of(&json);
            // The machine is shared: its load during the run belongs next to the results.
            if let Some([one, _, _]) = load_average() {
                values.insert(LOAD_KEY.into(), one);
            }
            samples.push((now(), values));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Whether every StatefulSet in the list runs its latest template on all replicas, Ready.
pub fn all_rolled_out(list: &Value) -> bool {
    list["items"].as_array().is_some_and(|items| {
        !items.is_empty()
            && items.iter().all(|sts| {
                let status = &sts["status"];
                let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(1);
                status["updateRevision"] == status["currentRevision"]
                    && status["readyReplicas"].as_u64() == Some(replicas)
                    && status["updatedReplicas"].as_u64() == Some(replicas)
                    && status["observedGeneration"] == sts["metadata"]["generation"]
            })
    })
}

/// Whether some StatefulSet in the list has replicas on an older template than its latest.
pub fn any_rolling(list: &Value) -> bool {
    list["items"].as_array().is_some_and(|items| {
        items.iter().any(|sts| {
            let status = &sts["status"];
            let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(1);
            status["updateRevision"] != status["currentRevision"]
                || status["updatedReplicas"].as_u64() != Some(replicas)
                || status["observedGeneration"] != sts["metadata"]["generation"]
        })
    })
}

/// `<StatefulSet>/<knob>` → value from a StatefulSet list.
pub fn settings_of(list: &Value) -> BTreeMap<String, f64> {
    const FLAGS: [&str; 4] = [
        "--max-requests-inflight=",
        "--max-mutating-requests-inflight=",
        "--kube-api-qps=",
        "--kube-api-burst=",
    ];
    let mut values = BTreeMap::new();
    for sts in list["items"].as_array().into_iter().flatten() {
        let Some(name) = sts["metadata"]["name"].as_str() else {
            continue;
        };
        let container = &sts["spec"]["template"]["spec"]["containers"][0];
        for arg in container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            for flag in FLAGS {
                if let Some(v) = arg.strip_prefix(flag).and_then(|v| v.parse::<f64>().ok()) {
                    values.insert(
                        format!(
                            "{name}/{}",
                            flag.trim_start_matches("--").trim_end_matches('=')
                        ),
                        v,
                    );
                }
            }
        }
        let resources = &container["resources"];
        let cpu = resources["limits"]["cpu"]
            .as_str()
            .or(resources["requests"]["cpu"].as_str());
        if let Some(cores) = cpu.and_then(cpu_cores) {
            values.insert(format!("{name}/cpu"), cores);
        }
    }
    values
}

/// A Kubernetes CPU quantity in cores: "500m", "2", "1.5".
pub fn cpu_cores(quantity: &str) -> Option<f64> {
    match quantity.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
        None => quantity.parse().ok(),
    }
}

fn fmt_s(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.0} ms", v * 1000.0))
}

fn fmt_share(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| format!("{:.3}%", s * 100.0))
}

fn fmt_n(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(Error::io(format!("writing {}", path.display())))
}

pub async fn versions(harness: &Harness, arak: Option<&Path>) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    let tools = std::env::var("ARAK_TOOLS_BIN").ok().map(PathBuf::from);
    let mut probes: Vec<(String, PathBuf, Vec<&str>)> = vec![
        (
            "stress-test".into(),
            harness.stress_test.clone(),
            vec!["--version"],
        ),
        ("rustc".into(), "rustc".into(), vec!["--version"]),
        (
            "git describe (dirty: other work was uncommitted in the tree)".into(),
            "git".into(),
            vec![
                "-C",
                harness.repo.to_str().unwrap_or("."),
                "describe",
                "--always",
                "--dirty",
            ],
        ),
    ];
    if let Some(arak) = arak {
        probes.push(("arak".into(), arak.to_owned(), vec!["--version"]));
    }
    if let Some(bin) = tools {
        probes.push((
            "kube-apiserver".into(),
            bin.join("kube-apiserver"),
            vec!["--version"],
        ));
        probes.push(("etcd".into(), bin.join("etcd"), vec!["--version"]));
        probes.push(("kwok".into(), bin.join("kwok"), vec!["--version"]));
    }
    probes.push(("prometheus".into(), "prometheus".into(), vec!["--version"]));
    for (name, program, args) in probes {
        let mut c = command(program);
        c.args(args);
        if let Ok(text) = output(c).await {
            versions.insert(name, text.lines().next().unwrap_or("").trim().to_owned());
        }
    }
    versions
}

pub fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "nproc".into(),
        std::thread::available_parallelism().map_or("?".into(), |n| n.to_string()),
    );
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo")
        && let Some(total) = meminfo.lines().find(|l| l.starts_with("MemTotal:"))
    {
        m.insert(
            "memory".into(),
            total.trim_start_matches("MemTotal:").trim().to_owned(),
        );
    }
    if let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo")
        && let Some(model) = cpuinfo.lines().find(|l| l.starts_with("model name"))
    {
        m.insert(
            "cpu".into(),
            model.split(':').nth(1).unwrap_or("").trim().to_owned(),
        );
    }
    if let Ok(kernel) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        m.insert("kernel".into(), kernel.trim().to_owned());
    }
    if let Some(l) = load_average() {
        m.insert(
            "load average at start".into(),
            format!("{} {} {}", l[0], l[1], l[2]),
        );
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_in_cores() {
        assert_eq!(cpu_cores("500m"), Some(0.5));
        assert_eq!(cpu_cores("2"), Some(2.0));
        assert_eq!(cpu_cores("1.5"), Some(1.5));
        assert_eq!(cpu_cores("lots"), None);
    }

    #[test]
    fn settings_read_flags_and_the_cpu_limit_before_the_request() {
        let list = json!({"items": [
            {"metadata": {"name": "apiserver-0"}, "spec": {"template": {"spec": {"containers": [{
                "args": ["--bind-address=$(POD_IP)", "--max-requests-inflight=400", "--max-mutating-requests-inflight=200"],
                "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m"}}}]}}}},
            {"metadata": {"name": "scheduler-0"}, "spec": {"template": {"spec": {"containers": [{
                "args": ["--kube-api-qps=50", "--kube-api-burst=100"],
                "resources": {"requests": {"cpu": "100m"}}}]}}}}
        ]});
        let v = settings_of(&list);
        assert_eq!(v["apiserver-0/max-requests-inflight"], 400.0);
        assert_eq!(v["apiserver-0/max-mutating-requests-inflight"], 200.0);
        assert_eq!(v["apiserver-0/cpu"], 0.5);
        assert_eq!(v["scheduler-0/kube-api-qps"], 50.0);
        assert_eq!(v["scheduler-0/kube-api-burst"], 100.0);
        assert_eq!(v["scheduler-0/cpu"], 0.1);
        assert_eq!(v.len(), 6);
    }

    #[test]
    fn a_statefulset_mid_roll_is_not_rolled_out() {
        let sts = |current: &str, update: &str, ready: u64| {
            json!({"metadata": {"generation": 2}, "spec": {"replicas": 1},
                   "status": {"observedGeneration": 2, "currentRevision": current, "updateRevision": update,
                              "readyReplicas": ready, "updatedReplicas": 1}})
        };
        assert!(all_rolled_out(
            &json!({"items": [sts("a", "a", 1), sts("b", "b", 1)]})
        ));
        assert!(!all_rolled_out(
            &json!({"items": [sts("a", "a", 1), sts("a", "b", 1)]})
        ));
        assert!(!all_rolled_out(&json!({"items": [sts("a", "a", 0)]})));
        assert!(!all_rolled_out(&json!({"items": []})));
        // Not Ready is not a roll; a newer revision is.
        assert!(!any_rolling(&json!({"items": [sts("a", "a", 0)]})));
        assert!(any_rolling(
            &json!({"items": [sts("a", "a", 1), sts("a", "b", 1)]})
        ));
    }

    #[test]
    fn a_day_ramps_up_and_back_down_over_its_length() {
        assert_eq!(
            day_profile(100, 650, 601),
            "ramp:100-650@300s+ramp:650-100@301s"
        );
    }

    #[test]
    fn cluster_env_lines() {
        let env = parse_env("export A=/tmp/x\nexport B='quoted value'\nnot an export\n");
        assert_eq!(env["A"], "/tmp/x");
        assert_eq!(env["B"], "quoted value");
        assert_eq!(env.len(), 2);
    }
}
