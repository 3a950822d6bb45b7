//! `experiment fidelity run`: one hosted control plane with one apiserver; per inflight
//! limits (a flag change rolls the apiserver) and CPU quota (resized in place, so the
//! process and its caches stay), a capacity probe per mix, then the load points.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    CLASSES, CapacityEstimate, ClassMeasure, ClientMeasure, FidelityRun, HistoryStep, Limits, Mix,
    POINTS_FILE, PointRecord, RUN_FILE,
};
use crate::error::{Error, Result};
use crate::procs::{self, command, output};
use crate::prom::Prometheus;
use crate::run::{load_average, now, parse_env, write_json};

/// What `fidelity run` was asked to do.
pub struct Plan {
    pub repo: PathBuf,
    pub out: PathBuf,
    pub quotas: Vec<f64>,
    pub limits: Vec<Limits>,
    pub loads: Vec<f64>,
    pub calibration_loads: Vec<f64>,
    pub mixes: Vec<Mix>,
    /// Length of each point's load, warm-up included.
    pub point_s: u64,
    /// Start of each point's load left out of the measured window.
    pub warmup_s: u64,
    pub min_samples: usize,
    pub base_port: u16,
    pub state_dir: PathBuf,
    pub stress_test: PathBuf,
    pub node_agent: PathBuf,
    pub command_line: String,
}

/// The end of the load left out of the window: the last responses of an overloaded point
/// drain after the arrivals stop, and the window must end before the last scrape.
const TAIL_S: f64 = 4.0;
/// The management Prometheus scrapes every 5 s.
const SCRAPE_S: f64 = 5.0;
/// APF's default `handSize × queueLengthLimit`, the queue length the recommender models.
pub const QUEUE_LENGTH: u32 = 300;
const RO_VERBS: &str = r#"verb=~"GET|LIST""#;
const MU_VERBS: &str = r#"verb=~"POST|PUT|PATCH|DELETE|DELETECOLLECTION""#;
const JOB: &str = r#"job="tested-apiserver""#;
/// The one apiserver's pod: StatefulSet apiserver-0, replica 0.
const POD: &str = "apiserver-0-0";

fn progress(text: impl AsRef<str>) {
    let s = now() as u64 % 86_400;
    eprintln!(
        "[fidelity {:02}:{:02}:{:02}] {}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        text.as_ref()
    );
}

pub async fn run(plan: Plan) -> Result<PathBuf> {
    std::fs::create_dir_all(plan.out.join("stress"))
        .map_err(Error::io(format!("creating {}", plan.out.display())))?;
    let stress_prefix: Vec<&str> = if stress_has_run(&plan.stress_test).await {
        vec!["run"]
    } else {
        vec![]
    };
    for mix in &plan.mixes {
        let path = plan.out.join(format!("mix-{mix}.yaml"));
        std::fs::write(&path, mix.yaml())
            .map_err(Error::io(format!("writing {}", path.display())))?;
    }
    let mut meta = FidelityRun {
        started_utc: crate::utc_timestamp(now()),
        command: plan.command_line.clone(),
        stress_command: format!(
            "stress-test {}--kubeconfig $ARAK_TESTED_LOAD_KUBECONFIG --mix mix-<mix>.yaml --profile const:<rate>@{}s --arrivals poisson --http2 --namespaces 1 --keep --watch-pid <apiserver pid> --output json --report stress/<point>.json",
            stress_prefix
                .iter()
                .map(|s| format!("{s} "))
                .collect::<String>(),
            plan.point_s
        ),
        quotas_cores: plan.quotas.clone(),
        limits: plan.limits.clone(),
        loads: plan.loads.clone(),
        calibration_loads: plan.calibration_loads.clone(),
        mixes: plan.mixes.clone(),
        point_s: plan.point_s,
        warmup_s: plan.warmup_s,
        min_samples: plan.min_samples,
        versions: versions(&plan).await,
        machine: crate::run::machine(),
        ..Default::default()
    };
    write_json(&plan.out.join(RUN_FILE), &meta)?;
    let mut points: Vec<PointRecord> = Vec::new();
    let outcome = tokio::select! {
        r = grid(&plan, &stress_prefix, &mut meta, &mut points) => r,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
    };
    progress("cluster down");
    cluster_down(&plan).await;
    meta.finished_utc = Some(crate::utc_timestamp(now()));
    if let Err(e) = &outcome {
        meta.notes.push(format!("the run stopped early: {e}"));
    }
    write_json(&plan.out.join(RUN_FILE), &meta)?;
    write_json(&plan.out.join(POINTS_FILE), &points)?;
    outcome.map(|()| plan.out.clone())
}

async fn stress_has_run(stress_test: &Path) -> bool {
    let mut c = command(stress_test);
    c.args(["run", "--help"]);
    output(c).await.is_ok()
}

async fn cluster_down(plan: &Plan) {
    if !plan.state_dir.exists() {
        return;
    }
    let mut c = command(plan.repo.join("perf-tests/cluster"));
    c.arg("down").arg("--state-dir").arg(&plan.state_dir);
    if let Err(e) = output(c).await {
        progress(format!("cluster down: {e}"));
    }
}

/// The tested cluster as the harness sees it.
struct Tested {
    env: BTreeMap<String, String>,
    prometheus: Prometheus,
}

impl Tested {
    fn get(&self, name: &str) -> Result<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| Error::Invalid(format!("`cluster env` does not say {name}")))
    }

    fn kubectl(&self) -> Result<tokio::process::Command> {
        let mut c = command(PathBuf::from(self.get("ARAK_TOOLS_BIN")?).join("kubectl"));
        c.args([
            "--kubeconfig",
            self.get("KUBECONFIG")?,
            "-n",
            self.get("ARAK_TESTED_NAMESPACE")?,
        ]);
        Ok(c)
    }

    async fn pod(&self) -> Result<Value> {
        let mut c = self.kubectl()?;
        c.args(["get", "pod", POD, "-o", "json"]);
        let text = output(c).await?;
        serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("pod {POD}: {e}")))
    }
}

/// The apiserver's process, if the pod runs one and is Ready.
fn ready_pid(pod: &Value) -> Option<u32> {
    let status = &pod["status"];
    let ready = status["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let pid = status["containerStatuses"][0]["containerID"]
        .as_str()?
        .strip_prefix("process://")?
        .parse()
        .ok()?;
    ready.then_some(pid)
}

async fn grid(
    plan: &Plan,
    stress_prefix: &[&str],
    meta: &mut FidelityRun,
    points: &mut Vec<PointRecord>,
) -> Result<()> {
    let top_quota = plan.quotas.iter().copied().fold(0.0, f64::max);
    let tested = cluster_up(plan, top_quota).await?;
    let mut running_limits = Limits {
        read_only: 400,
        mutating: 200,
    };
    let total = plan.quotas.len() * plan.limits.len() * plan.loads.len() * plan.mixes.len();
    let mut index = 0;
    for &limits in &plan.limits {
        if limits != running_limits {
            set_limits(&tested, limits).await?;
            running_limits = limits;
        }
        // Descending: a resize in place only lowers the quota the template started with.
        let mut quotas = plan.quotas.clone();
        quotas.sort_by(|a, b| b.total_cmp(a));
        for quota in quotas {
            let pid = set_quota(&tested, quota).await?;
            for &mix in &plan.mixes {
                let key = format!("{quota}/{mix}");
                if !meta.capacity.contains_key(&key) {
                    let estimate = probe(plan, stress_prefix, &tested, pid, quota, mix).await?;
                    progress(format!(
                        "capacity {key}: {:.0} req/s ({:.2} ms CPU per request, idle {:.3} cores)",
                        estimate.capacity_rps,
                        estimate.cpu_s_per_request * 1e3,
                        estimate.idle_cpu_cores
                    ));
                    meta.capacity.insert(key.clone(), estimate);
                    write_json(&plan.out.join(RUN_FILE), meta)?;
                }
                let capacity = meta.capacity[&key].capacity_rps;
                for &load in &plan.loads {
                    index += 1;
                    let mut record = PointRecord {
                        index: index as u32,
                        quota_cores: quota,
                        limits,
                        mix,
                        load_share: load,
                        capacity_rps: capacity,
                        target_rps: (load * capacity).max(1.0),
                        window_start_unix_s: 0.0,
                        window_end_unix_s: 0.0,
                        classes: BTreeMap::new(),
                        cpu_cores: None,
                        cpu_cores_proc: None,
                        cfs_quota_cores: cfs_quota_cores(pid),
                        throttled_periods_share: None,
                        dispersion_index_5s: None,
                        apf_global_default_nominal_seats: None,
                        apf_global_default_current_seats: None,
                        load_average_start: load_average(),
                        load_average_end: None,
                        machine_busy_share: None,
                        disturbed: None,
                        history: Vec::new(),
                        error: None,
                    };
                    progress(format!(
                        "point {index}/{total}: {quota} cores, {limits}, {mix}, {:.0}% = {:.0} req/s",
                        load * 100.0,
                        record.target_rps
                    ));
                    if let Err(e) = point(plan, stress_prefix, &tested, pid, &mut record).await {
                        if matches!(e, Error::Interrupted) {
                            return Err(e);
                        }
                        progress(format!("  point failed: {e}"));
                        record.error = Some(e.to_string());
                    }
                    summarise(&record);
                    points.push(record);
                    write_json(&plan.out.join(POINTS_FILE), points)?;
                    if load > 1.0 {
                        // Let the overload's queues and timeouts drain before the next point.
                        tokio::time::sleep(Duration::from_secs(8)).await;
                    }
                }
            }
        }
    }
    Ok(())
}

fn summarise(r: &PointRecord) {
    let c = |name: &str| r.classes.get(name).cloned().unwrap_or_default();
    let (ro, mu) = (c("readOnly"), c("mutating"));
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.0}ms", v * 1e3));
    progress(format!(
        "  offered ro {:.0} mu {:.0}/s; served {:.0}+{:.0}; P99 ro {} mu {}; 429 {:.1}%/{:.1}%; CPU {:.2}; IoD {:.2}; load {:.1}{}",
        ro.offered_rps,
        mu.offered_rps,
        ro.served_rps,
        mu.served_rps,
        ms(ro.p99_s),
        ms(mu.p99_s),
        ro.rejected_share * 100.0,
        mu.rejected_share * 100.0,
        r.cpu_cores.unwrap_or(f64::NAN),
        r.dispersion_index_5s.unwrap_or(f64::NAN),
        r.load_average_end.map_or(f64::NAN, |l| l[0]),
        r.disturbed
            .as_ref()
            .map_or(String::new(), |d| format!(" DISTURBED: {d}")),
    ));
}

async fn cluster_up(plan: &Plan, quota: f64) -> Result<Tested> {
    let log = plan.out.join("cluster-up.log");
    let mut up = command(plan.repo.join("perf-tests/cluster"));
    up.arg("up")
        .arg("--hosted")
        .args(["--nodes", "1"])
        .arg("--state-dir")
        .arg(&plan.state_dir)
        .args(["--base-port", &plan.base_port.to_string()])
        .args(["--owner-pid", &std::process::id().to_string()])
        // One apiserver: the load balancer has nothing to split.
        .env("ARAK_HOSTED_APISERVERS", "1")
        .env("ARAK_HOSTED_MASTER_CPU", format!("{quota}"))
        .env("ARAK_HOSTED_NODES", "1")
        .env("ARAK_NODE_AGENT", &plan.node_agent)
        .env("ARAK_CLUSTER_TIMEOUT", "240");
    let t = Instant::now();
    progress(format!(
        "cluster up --hosted (1 apiserver, {quota} cores) on base port {}",
        plan.base_port
    ));
    procs::logged(up, &log, Duration::from_secs(420)).await?;
    progress(format!("  up in {:.0} s", t.elapsed().as_secs_f64()));
    let mut env_cmd = command(plan.repo.join("perf-tests/cluster"));
    env_cmd.arg("env").arg("--state-dir").arg(&plan.state_dir);
    let env: BTreeMap<String, String> = parse_env(&output(env_cmd).await?).into_iter().collect();
    let url = env
        .get("PROMETHEUS_URL")
        .ok_or_else(|| Error::Invalid("`cluster env` does not say PROMETHEUS_URL".into()))?;
    let prometheus = Prometheus::new(url)?;
    let tested = Tested { env, prometheus };
    wait_scraped(&tested).await?;
    Ok(tested)
}

async fn wait_scraped(tested: &Tested) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !tested
        .prometheus
        .tested_scraped(now())
        .await
        .unwrap_or(false)
    {
        if Instant::now() > deadline {
            return Err(Error::Invalid(
                "Prometheus never scraped the tested apiserver".into(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}

/// Sets the inflight flags on apiserver-0's StatefulSet (the StatefulSet controller then
/// replaces the pod) and waits for the new process to be Ready and scraped.
async fn set_limits(tested: &Tested, limits: Limits) -> Result<()> {
    progress(format!("inflight limits → {limits} (rolls apiserver-0)"));
    let mut get = tested.kubectl()?;
    get.args(["get", "statefulset", "apiserver-0", "-o", "json"]);
    let sts: Value = serde_json::from_str(&output(get).await?)
        .map_err(|e| Error::Invalid(format!("statefulset apiserver-0: {e}")))?;
    let old_uid = tested.pod().await?["metadata"]["uid"].clone();
    let patch = limits_patch(&sts, limits)?;
    let mut c = tested.kubectl()?;
    c.args([
        "patch",
        "statefulset",
        "apiserver-0",
        "--type",
        "json",
        "-p",
    ])
    .arg(patch.to_string());
    output(c).await?;
    let t = Instant::now();
    let deadline = t + Duration::from_secs(300);
    loop {
        if let Ok(pod) = tested.pod().await
            && pod["metadata"]["uid"] != old_uid
            && ready_pid(&pod).is_some()
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Invalid(format!(
                "apiserver-0 not Ready with {limits} after 300 s"
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The new process must be scraped before its counters can be read.
    tokio::time::sleep(Duration::from_secs(12)).await;
    wait_scraped(tested).await?;
    progress(format!("  rolled in {:.0} s", t.elapsed().as_secs_f64()));
    Ok(())
}

/// A JSON patch replacing the two inflight flags where they are, after testing they are
/// there (as the variants' overlays do), so a changed template fails instead of being garbled.
pub fn limits_patch(sts: &Value, limits: Limits) -> Result<Value> {
    let args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .ok_or_else(|| Error::Invalid("apiserver-0 has no args".into()))?;
    let mut ops = Vec::new();
    for (flag, value) in [
        ("--max-requests-inflight=", limits.read_only),
        ("--max-mutating-requests-inflight=", limits.mutating),
    ] {
        let (i, old) = args
            .iter()
            .enumerate()
            .find_map(|(i, a)| a.as_str().filter(|a| a.starts_with(flag)).map(|a| (i, a)))
            .ok_or_else(|| Error::Invalid(format!("apiserver-0 has no {flag}")))?;
        let path = format!("/spec/template/spec/containers/0/args/{i}");
        ops.push(json!({"op": "test", "path": path, "value": old}));
        ops.push(json!({"op": "replace", "path": path, "value": format!("{flag}{value}")}));
    }
    Ok(Value::Array(ops))
}

/// Resizes apiserver-0's CPU limit in place (`pods/resize`: the node agent rewrites the
/// CFS quota, the process keeps running) and returns its pid once the quota is on its cgroup.
async fn set_quota(tested: &Tested, quota: f64) -> Result<u32> {
    let pod = tested.pod().await?;
    let pid = ready_pid(&pod).ok_or_else(|| Error::Invalid(format!("{POD} is not Ready")))?;
    if cfs_quota_cores(pid).is_some_and(|q| (q - quota).abs() < 1e-3) {
        return Ok(pid);
    }
    progress(format!("CPU limit → {quota} cores (in place)"));
    let milli = (quota * 1000.0).round() as u64;
    let resize = json!({"spec": {"containers": [{"name": "kube-apiserver",
        "resources": {"limits": {"cpu": format!("{milli}m")}}}]}});
    let mut c = tested.kubectl()?;
    c.args([
        "patch",
        "pod",
        POD,
        "--subresource",
        "resize",
        "--type",
        "strategic",
        "-p",
    ])
    .arg(resize.to_string());
    output(c).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cfs_quota_cores(pid).is_some_and(|q| (q - quota).abs() < 1e-3) {
        if Instant::now() > deadline {
            return Err(Error::Invalid(format!(
                "apiserver-0's CFS quota is {:?}, not {quota}, 60 s after the resize",
                cfs_quota_cores(pid)
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(pid)
}

/// The cgroup v1 `cpu` directory of a process (the node agent uses cgroup v1).
fn cpu_cgroup(pid: u32) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let line = cgroups.lines().find(|line| {
        line.split(':')
            .nth(1)
            .is_some_and(|c| c.split(',').any(|c| c == "cpu"))
    })?;
    let mut parts = line.splitn(3, ':');
    let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
    (path != "/").then(|| {
        Path::new("/sys/fs/cgroup")
            .join(controllers)
            .join(path.trim_start_matches('/'))
    })
}

fn read_number(path: &Path) -> Option<f64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn cfs_quota_cores(pid: u32) -> Option<f64> {
    let dir = cpu_cgroup(pid)?;
    let (quota, period) = (
        read_number(&dir.join("cpu.cfs_quota_us"))?,
        read_number(&dir.join("cpu.cfs_period_us"))?,
    );
    (quota > 0.0).then(|| quota / period)
}

/// (nr_periods, nr_throttled) of the process's cgroup.
fn cfs_periods(pid: u32) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(cpu_cgroup(pid)?.join("cpu.stat")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some((field("nr_periods ")?, field("nr_throttled ")?))
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at state, field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / USER_HZ)
}

/// /proc reports CPU time in USER_HZ ticks, 100 per second on every Linux ABI.
const USER_HZ: f64 = 100.0;

/// (busy, total) jiffies of all CPUs, from /proc/stat.
fn machine_jiffies() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<f64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().sum();
    // idle and iowait are fields 4 and 5.
    let idle = values.get(3)? + values.get(4).unwrap_or(&0.0);
    Some((total - idle, total))
}

/// Runs stress-test at `rps` for `seconds` against the tested cluster; returns its report.
#[allow(clippy::too_many_arguments)]
async fn stress(
    plan: &Plan,
    stress_prefix: &[&str],
    tested: &Tested,
    pid: u32,
    mix: Mix,
    rps: f64,
    seconds: u64,
    name: &str,
) -> Result<Value> {
    let report = plan.out.join("stress").join(format!("{name}.json"));
    let log = plan.out.join("stress").join(format!("{name}.log"));
    let delete_share = match mix {
        Mix::Read => 0.03,
        Mix::Write => 0.25,
        Mix::List => 0.0,
    };
    // DELETEs come as often as POSTs, but a POST must come first: a reserve of 2 s of
    // DELETEs keeps the early ones from finding nothing (more would lengthen the setup).
    let reserve = ((rps * delete_share * 2.0).ceil() as u32).max(5);
    let mut c = command(&plan.stress_test);
    c.args(stress_prefix)
        .args(["--kubeconfig", tested.get("ARAK_TESTED_LOAD_KUBECONFIG")?])
        .arg("--mix")
        .arg(plan.out.join(format!("mix-{mix}.yaml")))
        .args(["--profile", &format!("const:{rps:.1}@{seconds}s")])
        .args([
            "--arrivals",
            "poisson",
            "--http2",
            "--namespaces",
            "1",
            "--keep",
        ])
        .args(["--pool-size", &mix.pool_size().to_string()])
        .args(["--delete-reserve", &reserve.to_string()])
        .args(["--watch-pid", &pid.to_string()])
        .args(["--seed", "1", "--output", "json", "--report"])
        .arg(&report);
    procs::logged(c, &log, Duration::from_secs(seconds + 240)).await?;
    let text = std::fs::read_to_string(&report)
        .map_err(Error::io(format!("reading {}", report.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: report,
        message: e.to_string(),
    })
}

/// CPU per request from a short load at a modest rate (the apiserver's idle CPU, measured
/// just before, taken out), and the capacity that leaves: (quota − idle) / CPU per request.
async fn probe(
    plan: &Plan,
    stress_prefix: &[&str],
    tested: &Tested,
    pid: u32,
    quota: f64,
    mix: Mix,
) -> Result<CapacityEstimate> {
    let idle_s = 8.0;
    let before = process_cpu_s(pid);
    tokio::time::sleep(Duration::from_secs_f64(idle_s)).await;
    let idle_cpu_cores = match (before, process_cpu_s(pid)) {
        (Some(a), Some(b)) => ((b - a) / idle_s).max(0.0),
        _ => 0.0,
    };
    // A fifth of a rough guess (5 ms per request): far from saturation, so CPU per request
    // is not inflated by contention.
    let probe_rps = (quota * 40.0).max(5.0);
    let name = format!("probe-{quota}-{mix}");
    let report = stress(plan, stress_prefix, tested, pid, mix, probe_rps, 15, &name).await?;
    let sent = report["overall"]["sent"].as_f64().unwrap_or(0.0);
    let elapsed = report["elapsed_s"].as_f64().unwrap_or(15.0);
    let watched = report["cpu"]["watched_s"].as_f64().ok_or_else(|| {
        Error::Invalid(format!(
            "{name}: stress-test did not report the apiserver's CPU"
        ))
    })?;
    if sent <= 0.0 {
        return Err(Error::Invalid(format!("{name}: nothing was sent")));
    }
    let cpu_s_per_request = ((watched - idle_cpu_cores * elapsed) / sent).max(1e-5);
    Ok(CapacityEstimate {
        capacity_rps: ((quota - idle_cpu_cores).max(0.05 * quota)) / cpu_s_per_request,
        probe_rps,
        idle_cpu_cores,
        cpu_s_per_request,
    })
}

async fn point(
    plan: &Plan,
    stress_prefix: &[&str],
    tested: &Tested,
    pid: u32,
    record: &mut PointRecord,
) -> Result<()> {
    let name = format!(
        "{:02}-{}-{}-{}-{:.0}",
        record.index,
        record.quota_cores,
        record.limits.to_string().replace('/', "-"),
        record.mix,
        record.load_share * 100.0
    );
    let periods_before = cfs_periods(pid);
    let busy_before = machine_jiffies();
    let report = stress(
        plan,
        stress_prefix,
        tested,
        pid,
        record.mix,
        record.target_rps,
        plan.point_s,
        &name,
    )
    .await?;
    record.load_average_end = load_average();
    if let (Some((p0, t0)), Some((p1, t1))) = (periods_before, cfs_periods(pid))
        && p1 > p0
    {
        record.throttled_periods_share = Some((t1 - t0) / (p1 - p0));
    }
    if let (Some((b0, t0)), Some((b1, t1))) = (busy_before, machine_jiffies())
        && t1 > t0
    {
        record.machine_busy_share = Some((b1 - b0) / (t1 - t0));
    }
    let started = report["started_unix_s"]
        .as_f64()
        .ok_or_else(|| Error::Invalid(format!("{name}: no started_unix_s in the report")))?;
    let elapsed = report["elapsed_s"].as_f64().unwrap_or(plan.point_s as f64);
    if let Some(watched) = report["cpu"]["watched_s"].as_f64() {
        record.cpu_cores_proc = Some(watched / elapsed.max(1.0));
    }
    let start = started + plan.warmup_s as f64;
    let end = started + plan.point_s as f64 - TAIL_S;
    record.window_start_unix_s = start;
    record.window_end_unix_s = end;
    // One scrape after the window's end, so the window's last samples are in.
    let wait = end + SCRAPE_S + 1.5 - now();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    measure(&tested.prometheus, record).await?;
    for class in CLASSES {
        if let Some(m) = record.classes.get_mut(class) {
            m.client = client_measure(&report, class, elapsed);
        }
    }
    record.disturbed = disturbed(record);
    Ok(())
}

/// Whether other work on the machine may have taken CPU the apiserver's quota promised it:
/// more runnable threads than 3 × cores. (The machine's busy share is recorded but not
/// used: the point's own apiserver, generator, etcd and Prometheus keep 2 cores busy.)
pub fn disturbed(r: &PointRecord) -> Option<String> {
    let cores = std::thread::available_parallelism().map_or(2.0, |n| n.get() as f64);
    let load = [r.load_average_start, r.load_average_end]
        .iter()
        .flatten()
        .map(|l| l[0])
        .fold(0.0, f64::max);
    (load > 3.0 * cores).then(|| format!("load average {load:.1} on {cores} cores"))
}

async fn measure(prometheus: &Prometheus, r: &mut PointRecord) -> Result<()> {
    let (start, end) = (r.window_start_unix_s, r.window_end_unix_s);
    let secs = (end - start).max(1.0);
    let w = format!("{}s", secs.round() as u64);
    let scalar = |q: String| async move { prometheus.scalar(&q, end).await };
    for (class, verbs) in [("readOnly", RO_VERBS), ("mutating", MU_VERBS)] {
        let total = scalar(format!(
            "sum(increase(apiserver_request_total{{{JOB},{verbs}}}[{w}]))"
        ))
        .await?
        .unwrap_or(0.0);
        let rejected = scalar(format!(
            "sum(increase(apiserver_request_total{{{JOB},{verbs},code=\"429\"}}[{w}]))"
        ))
        .await?
        .unwrap_or(0.0);
        let sum = scalar(format!(
            "sum(increase(apiserver_request_duration_seconds_sum{{{JOB},{verbs}}}[{w}]))"
        ))
        .await?;
        let count = scalar(format!(
            "sum(increase(apiserver_request_duration_seconds_count{{{JOB},{verbs}}}[{w}]))"
        ))
        .await?;
        let p99 = scalar(format!(
            "histogram_quantile(0.99, sum by (le) (increase(apiserver_request_duration_seconds_bucket{{{JOB},{verbs}}}[{w}])))"
        ))
        .await?;
        r.classes.insert(
            class.into(),
            ClassMeasure {
                offered_rps: total / secs,
                served_rps: (total - rejected) / secs,
                rejected_share: if total > 0.0 { rejected / total } else { 0.0 },
                mean_s: match (sum, count) {
                    (Some(s), Some(c)) if c > 0.0 => Some(s / c),
                    _ => None,
                },
                p99_s: p99,
                client: None,
            },
        );
    }
    r.cpu_cores = scalar(format!(
        "sum(increase(process_cpu_seconds_total{{{JOB}}}[{w}]))"
    ))
    .await?
    .map(|v| v / secs);
    for (field, metric) in [
        ("nominal", "apiserver_flowcontrol_nominal_limit_seats"),
        ("current", "apiserver_flowcontrol_current_limit_seats"),
    ] {
        let v = scalar(format!(
            "max({metric}{{{JOB},priority_level=\"global-default\"}})"
        ))
        .await?;
        match field {
            "nominal" => r.apf_global_default_nominal_seats = v,
            _ => r.apf_global_default_current_seats = v,
        }
    }
    // The counters as scraped: per series, the difference between successive scrapes is
    // the requests in between; summed over series per scrape.
    let series = prometheus
        .raw_samples(
            &format!("apiserver_request_total{{{JOB},verb!~\"WATCH|CONNECT\"}}[{w}]"),
            end,
        )
        .await?;
    r.dispersion_index_5s = dispersion_index(&series);
    r.history = history(prometheus, start, end).await?;
    Ok(())
}

/// Variance over mean of the request counts between successive scrapes (1 for a Poisson
/// process, above 1 burstier), from the raw samples of every series of a counter. A series
/// counts from its second sample on; a reset (a negative difference) is dropped.
pub fn dispersion_index(series: &[Vec<(f64, f64)>]) -> Option<f64> {
    let mut per_scrape: BTreeMap<i64, f64> = BTreeMap::new();
    for samples in series {
        for w in samples.windows(2) {
            let d = w[1].1 - w[0].1;
            if d >= 0.0 {
                // Scrapes of one target share a timestamp; round away float noise.
                *per_scrape
                    .entry((w[1].0 * 10.0).round() as i64)
                    .or_default() += d;
            }
        }
    }
    let counts: Vec<f64> = per_scrape.into_values().collect();
    if counts.len() < 3 {
        return None;
    }
    let n = counts.len() as f64;
    let mean = counts.iter().sum::<f64>() / n;
    let var = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean > 0.0).then_some(var / mean)
}

/// The calibration's inputs at 5 s steps over the window (rates over the last 10 s).
async fn history(prometheus: &Prometheus, start: f64, end: f64) -> Result<Vec<HistoryStep>> {
    let from = start + 10.0;
    if end <= from {
        return Ok(Vec::new());
    }
    let rate = |verbs: &str| format!("sum(rate(apiserver_request_total{{{JOB},{verbs}}}[10s]))");
    let p99 = |verbs: &str| {
        format!(
            "histogram_quantile(0.99, sum by (le) (rate(apiserver_request_duration_seconds_bucket{{{JOB},{verbs}}}[10s])))"
        )
    };
    let mean = |verbs: &str| {
        format!(
            "sum(rate(apiserver_request_duration_seconds_sum{{{JOB},{verbs}}}[10s])) / sum(rate(apiserver_request_duration_seconds_count{{{JOB},{verbs}}}[10s]))"
        )
    };
    let series = [
        rate(RO_VERBS),
        rate(MU_VERBS),
        format!("sum(rate(process_cpu_seconds_total{{{JOB}}}[10s]))"),
        p99(RO_VERBS),
        p99(MU_VERBS),
        mean(RO_VERBS),
        mean(MU_VERBS),
    ];
    let mut values: Vec<BTreeMap<i64, f64>> = Vec::new();
    for q in &series {
        values.push(
            prometheus
                .range(q, from, end, SCRAPE_S)
                .await?
                .into_iter()
                .map(|(t, v)| (t.round() as i64, v))
                .collect(),
        );
    }
    Ok(values[2]
        .keys()
        .map(|&t| HistoryStep {
            t_unix_s: t as f64,
            read_only_rate: values[0].get(&t).copied(),
            mutating_rate: values[1].get(&t).copied(),
            cpu_cores: values[2].get(&t).copied(),
            read_only_p99_s: values[3].get(&t).copied(),
            mutating_p99_s: values[4].get(&t).copied(),
            read_only_mean_s: values[5].get(&t).copied(),
            mutating_mean_s: values[6].get(&t).copied(),
        })
        .collect())
}

/// The class's rows of stress-test's per-verb report, merged.
pub fn client_measure(report: &Value, class: &str, elapsed_s: f64) -> Option<ClientMeasure> {
    let read_only = |verb: &str| matches!(verb, "GET" | "LIST");
    let rows: Vec<&Value> = report["by_verb"]
        .as_array()?
        .iter()
        .filter(|row| {
            row["verb"]
                .as_str()
                .is_some_and(|v| read_only(v) == (class == "readOnly"))
        })
        .collect();
    let field = |row: &Value, name: &str| row[name].as_f64().unwrap_or(0.0);
    let sent: f64 = rows.iter().map(|r| field(r, "sent")).sum();
    if sent <= 0.0 {
        return None;
    }
    let ok: f64 = rows.iter().map(|r| field(r, "ok")).sum();
    let throttled: f64 = rows.iter().map(|r| field(r, "throttled_429")).sum();
    let errors: f64 = rows.iter().map(|r| field(r, "errors")).sum();
    let quantiles: Vec<(f64, [f64; 4])> = rows
        .iter()
        .map(|r| {
            let l = &r["latency_ms"];
            let q = |n: &str| l[n].as_f64().unwrap_or(0.0) / 1e3;
            (
                l["count"].as_f64().unwrap_or(0.0),
                [q("p50"), q("p90"), q("p99"), q("max")],
            )
        })
        .collect();
    Some(ClientMeasure {
        sent_rps: sent / elapsed_s.max(1.0),
        ok_rps: ok / elapsed_s.max(1.0),
        throttled_share: throttled / sent,
        error_share: errors / sent,
        p99_s: merge_p99(&quantiles),
    })
}

/// The P99 of a mixture of verbs, each known by (count, [P50, P90, P99, max]): the time t
/// at which the verbs' interpolated tail shares, weighted by count, sum to 1%. Exact at the
/// verbs' own quantiles, linear in between.
pub fn merge_p99(verbs: &[(f64, [f64; 4])]) -> Option<f64> {
    let total: f64 = verbs.iter().map(|v| v.0).sum();
    if total <= 0.0 {
        return None;
    }
    let tail = |t: f64| -> f64 {
        verbs
            .iter()
            .map(|(n, q)| {
                let knots = [
                    (0.0, 1.0),
                    (q[0], 0.5),
                    (q[1], 0.1),
                    (q[2], 0.01),
                    (q[3], 0.0),
                ];
                let share = if t >= q[3] {
                    0.0
                } else {
                    knots.windows(2).find(|k| t < k[1].0).map_or(0.0, |k| {
                        let (a, b) = (k[0], k[1]);
                        if b.0 > a.0 {
                            a.1 + (b.1 - a.1) * (t - a.0) / (b.0 - a.0)
                        } else {
                            b.1
                        }
                    })
                };
                n * share
            })
            .sum::<f64>()
            / total
    };
    let (mut lo, mut hi) = (0.0, verbs.iter().map(|v| v.1[3]).fold(0.0, f64::max));
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if tail(mid) > 0.01 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

async fn versions(plan: &Plan) -> BTreeMap<String, String> {
    let mut probes: Vec<(&str, PathBuf, Vec<String>)> = vec![
        (
            "stress-test",
            plan.stress_test.clone(),
            vec!["--version".into()],
        ),
        ("rustc", "rustc".into(), vec!["--version".into()]),
        ("prometheus", "prometheus".into(), vec!["--version".into()]),
        (
            "git describe (dirty: other work was uncommitted in the tree)",
            "git".into(),
            vec![
                "-C".into(),
                plan.repo.display().to_string(),
                "describe".into(),
                "--always".into(),
                "--dirty".into(),
            ],
        ),
    ];
    if let Ok(bin) = std::env::var("ARAK_TOOLS_BIN") {
        probes.push((
            "kube-apiserver",
            Path::new(&bin).join("kube-apiserver"),
            vec!["--version".into()],
        ));
        probes.push((
            "etcd",
            Path::new(&bin).join("etcd"),
            vec!["--version".into()],
        ));
    }
    let mut versions = BTreeMap::new();
    for (name, program, args) in probes {
        let mut c = command(program);
        c.args(args);
        if let Ok(text) = output(c).await {
            versions.insert(name.into(), text.lines().next().unwrap_or("").trim().into());
        }
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispersion_of_even_and_bursty_counts() {
        let even: Vec<(f64, f64)> = (0..10).map(|i| (i as f64 * 5.0, i as f64 * 50.0)).collect();
        // A second series with the same scrapes adds to the same counts.
        let also: Vec<(f64, f64)> = even.iter().map(|&(t, v)| (t, v / 5.0)).collect();
        assert_eq!(dispersion_index(&[even.clone(), also]), Some(0.0));
        let mut total = 0.0;
        let bursty: Vec<(f64, f64)> = (0..10)
            .map(|i| {
                total += if i % 2 == 0 { 0.0 } else { 100.0 };
                (i as f64 * 5.0, total)
            })
            .collect();
        assert!(dispersion_index(&[bursty]).unwrap() > 40.0);
        assert_eq!(dispersion_index(&[even[..3].to_vec()]), None);
    }

    #[test]
    fn merged_p99_of_one_verb_is_its_own() {
        let p = merge_p99(&[(1000.0, [0.01, 0.02, 0.05, 0.2])]).unwrap();
        assert!((p - 0.05).abs() < 1e-6, "{p}");
        // Two equal verbs, one ten times slower: the mixture's P99 lies in the slow one's tail.
        let p = merge_p99(&[
            (1000.0, [0.01, 0.02, 0.05, 0.2]),
            (1000.0, [0.1, 0.2, 0.5, 2.0]),
        ])
        .unwrap();
        assert!(p > 0.2 && p < 0.5, "{p}");
    }

    #[test]
    fn the_limits_patch_tests_and_replaces_the_flags_in_place() {
        let sts = json!({"spec": {"template": {"spec": {"containers": [{"args": [
            "--a", "--max-requests-inflight=400", "--max-mutating-requests-inflight=200"]}]}}}});
        let patch = limits_patch(
            &sts,
            Limits {
                read_only: 20,
                mutating: 10,
            },
        )
        .unwrap();
        assert_eq!(
            patch[1],
            json!({"op": "replace", "path": "/spec/template/spec/containers/0/args/1",
                   "value": "--max-requests-inflight=20"})
        );
        assert_eq!(patch[2]["op"], "test");
        assert_eq!(patch[2]["value"], "--max-mutating-requests-inflight=200");
        assert!(
            limits_patch(
                &json!({}),
                Limits {
                    read_only: 1,
                    mutating: 1
                }
            )
            .is_err()
        );
    }

    #[test]
    fn client_rows_merge_per_class() {
        let report = json!({"by_verb": [
            {"verb": "GET", "sent": 90, "ok": 80, "throttled_429": 10, "errors": 0,
             "latency_ms": {"count": 80, "p50": 5.0, "p90": 9.0, "p99": 20.0, "max": 30.0}},
            {"verb": "POST", "sent": 10, "ok": 10, "throttled_429": 0, "errors": 0,
             "latency_ms": {"count": 10, "p50": 8.0, "p90": 9.0, "p99": 12.0, "max": 15.0}}]});
        let ro = client_measure(&report, "readOnly", 10.0).unwrap();
        assert_eq!(ro.sent_rps, 9.0);
        assert!((ro.throttled_share - 10.0 / 90.0).abs() < 1e-12);
        assert!((ro.p99_s.unwrap() - 0.020).abs() < 1e-6);
        let mu = client_measure(&report, "mutating", 10.0).unwrap();
        assert_eq!(mu.ok_rps, 1.0);
    }
}
