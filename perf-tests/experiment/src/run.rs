//! `experiment run`: every configuration, interleaved over repetitions, on a fresh hosted
//! test control plane each time; one JSON file per run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::process::Child;

use crate::error::{Error, Result};
use crate::model::{
    ArakOutcome, ClassLatency, Config, DensityResult, Experiment, RunRecord, SettingsSample,
    Status, StressResult,
};
use crate::procs::{self, command, output, stop};
use crate::prom::{self, Prometheus};

/// What `run` was asked to do.
pub struct Plan {
    pub repo: PathBuf,
    pub out: PathBuf,
    pub reps: u32,
    pub configs: Vec<Config>,
    pub stress_profile: String,
    pub density_pods: Vec<u32>,
    pub density_timeout: String,
    pub base_port: u16,
    pub tested_nodes: u32,
    /// Idle time after the cluster is up, before the load (Prometheus windows, arak's first rounds).
    pub warmup: Duration,
    pub arak_interval_s: u32,
    pub arak: PathBuf,
    pub stress_test: PathBuf,
    pub node_agent: PathBuf,
    pub command_line: String,
}

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

/// Which subcommand of stress-test makes the CRUD load: older builds take the load flags
/// at the top level, newer ones under `run`.
async fn stress_subcommand(stress_test: &Path, name: &str) -> bool {
    let mut c = command(stress_test);
    c.args([name, "--help"]);
    output(c).await.is_ok()
}

pub async fn run(plan: Plan) -> Result<PathBuf> {
    std::fs::create_dir_all(&plan.out)
        .map_err(Error::io(format!("creating {}", plan.out.display())))?;
    let stress_prefix: Vec<&str> = if stress_subcommand(&plan.stress_test, "run").await {
        vec!["run"]
    } else {
        vec![]
    };
    let density = stress_subcommand(&plan.stress_test, "density").await;
    let mut experiment = Experiment {
        started_utc: crate::utc_timestamp(now()),
        command: plan.command_line.clone(),
        reps: plan.reps,
        configs: plan.configs.clone(),
        stress_profile: plan.stress_profile.clone(),
        stress_command: format!(
            "stress-test {}--kubeconfig $ARAK_TESTED_LOAD_KUBECONFIG --profile {} --output json --report stress.json",
            stress_prefix.iter().map(|s| format!("{s} ")).collect::<String>(),
            plan.stress_profile
        ),
        density_pods: if density { plan.density_pods.clone() } else { vec![] },
        density_command: density.then(|| {
            format!(
                "stress-test density --kubeconfig $ARAK_TESTED_LOAD_KUBECONFIG --pods N --namespace density-N --timeout {} --report density-N.json",
                plan.density_timeout
            )
        }),
        arak_command: "arak run --tuning control-plane --namespace tested-cp --kubeconfig <management> --tested-kubeconfig <tested> --prometheus-url <management Prometheus> --fetch-config fetch.yaml --soak 3s --pod-ready-timeout 3m --log-format json".into(),
        arak_policy: Value::Null,
        versions: versions(&plan).await,
        machine: machine(),
    };
    if !density {
        progress(
            "`stress-test density` is not available in this build: the density part is skipped",
        );
    }
    write_json(&plan.out.join("experiment.json"), &experiment)?;

    let total = plan.reps * plan.configs.len() as u32;
    let mut index = 0;
    let mut interrupted = false;
    'reps: for rep in 1..=plan.reps {
        for &config in &plan.configs {
            index += 1;
            let state_dir =
                std::env::temp_dir().join(format!("arak-experiment-{}", std::process::id()));
            let mut record = RunRecord::new(index, config, rep, now());
            record.load_average_start = load_average();
            progress(format!("run {index}/{total}: {config}, repetition {rep}"));
            let started = Instant::now();
            let mut ctx = RunCtx {
                plan: &plan,
                state_dir: state_dir.clone(),
                run_dir: plan.out.join(format!("run-{index:02}-{config}-{rep}")),
                stress_prefix: &stress_prefix,
                density,
                arak: None,
                policy: Value::Null,
            };
            let outcome = tokio::select! {
                r = ctx.run(&mut record) => r,
                _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
            };
            if let Some(mut arak) = ctx.arak.take() {
                stop(&mut arak, Duration::from_secs(20)).await;
            }
            if experiment.arak_policy.is_null() && !ctx.policy.is_null() {
                experiment.arak_policy = ctx.policy.clone();
                write_json(&plan.out.join("experiment.json"), &experiment)?;
            }
            match outcome {
                Ok(()) => record.status = Status::Ok,
                Err(e) => {
                    if matches!(e, Error::Interrupted) {
                        interrupted = true;
                    }
                    record.reason = Some(e.to_string());
                    progress(format!("run {index}/{total} FAILED: {e}"));
                }
            }
            cluster_down(&plan, &state_dir).await;
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

async fn cluster_down(plan: &Plan, state_dir: &Path) {
    if !state_dir.exists() {
        return;
    }
    let mut c = command(plan.repo.join("perf-tests/cluster"));
    c.arg("down").arg("--state-dir").arg(state_dir);
    if let Err(e) = output(c).await {
        progress(format!("cluster down: {e}"));
    }
}

struct RunCtx<'a> {
    plan: &'a Plan,
    state_dir: PathBuf,
    run_dir: PathBuf,
    stress_prefix: &'a [&'a str],
    density: bool,
    arak: Option<Child>,
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
        std::fs::create_dir_all(&self.run_dir).map_err(Error::io("creating the run directory"))?;
        let log = self.run_dir.join("cluster-up.log");
        let mut up = command(plan.repo.join("perf-tests/cluster"));
        up.arg("up")
            .arg("--hosted")
            .args(["--nodes", "1"])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["--base-port", &plan.base_port.to_string()])
            .args(["--owner-pid", &std::process::id().to_string()])
            .env("ARAK_HOSTED_VARIANT", record.config.variant())
            .env("ARAK_HOSTED_NODES", plan.tested_nodes.to_string())
            .env("ARAK_NODE_AGENT", &plan.node_agent)
            .env("ARAK_CLUSTER_TIMEOUT", "240");
        let t = Instant::now();
        procs::logged(up, &log, Duration::from_secs(420)).await?;
        progress(format!(
            "  hosted control plane ({} overlay) up in {:.0} s",
            record.config.variant(),
            t.elapsed().as_secs_f64()
        ));
        let mut env_cmd = command(plan.repo.join("perf-tests/cluster"));
        env_cmd.arg("env").arg("--state-dir").arg(&self.state_dir);
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
        progress(format!("  warming up for {:?}", plan.warmup));
        tokio::time::sleep(plan.warmup).await;
        if record.config == Config::Arak {
            // arak decides on the idle cluster first (with no history it may shrink it); the
            // load should meet the control plane it chose, not a roll half done.
            let t = Instant::now();
            let settled = self.wait_arak_settled(&env, Duration::from_secs(240)).await;
            record.arak_settle_s = Some(t.elapsed().as_secs_f64());
            progress(format!(
                "  arak {} after {:.0} s more",
                if settled {
                    "settled (no roll under way)"
                } else {
                    "still rolling; starting the load anyway"
                },
                t.elapsed().as_secs_f64()
            ));
        }

        let result = self.workload(record, &env, &prometheus).await;
        poller.abort();
        let stress_start = record
            .stress
            .as_ref()
            .map(|s| s.start_unix_s)
            .unwrap_or(record.started_unix_s);
        record.settings = settings
            .lock()
            .map(|s| {
                s.iter()
                    .map(|(t, values)| SettingsSample {
                        t_s: t - stress_start,
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

    async fn workload(
        &mut self,
        record: &mut RunRecord,
        env: &ClusterEnv,
        prometheus: &Prometheus,
    ) -> Result<()> {
        let plan = self.plan;
        let load_kubeconfig = env.get("ARAK_TESTED_LOAD_KUBECONFIG")?;
        progress(format!(
            "  stress-test step profile {}",
            plan.stress_profile
        ));
        let report = self.run_dir.join("stress.json");
        let mut stress = command(&plan.stress_test);
        stress
            .args(self.stress_prefix)
            .args(["--kubeconfig", load_kubeconfig])
            .args(["--profile", &plan.stress_profile])
            .args(["--output", "json", "--seed", &format!("{}", record.rep)])
            .arg("--report")
            .arg(&report);
        let start = now();
        procs::logged(
            stress,
            &self.run_dir.join("stress.log"),
            Duration::from_secs(600),
        )
        .await?;
        let end = now();
        // The last samples of the window need one more scrape.
        tokio::time::sleep(Duration::from_secs(7)).await;
        let mut result = StressResult {
            profile: plan.stress_profile.clone(),
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
                    end + 20.0,
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
        if let Ok(text) = std::fs::read_to_string(&report)
            && let Ok(json) = serde_json::from_str::<Value>(&text)
        {
            let overall = &json["overall"];
            result.client_sent = overall["sent"].as_f64();
            result.client_throttled = overall["throttled_429"].as_f64();
            result.client_p99_ms = overall["latency_ms"]["p99"].as_f64();
        }
        progress(format!(
            "  stress done: P99 mutating {} read {} list {}, 429 share {}",
            fmt_s(result.classes.get("mutating").and_then(|c| c.p99_s)),
            fmt_s(result.classes.get("read").and_then(|c| c.p99_s)),
            fmt_s(result.classes.get("list").and_then(|c| c.p99_s)),
            result
                .rejected_share
                .map_or("-".into(), |s| format!("{:.2}%", s * 100.0)),
        ));
        record.stress = Some(result);

        if self.density {
            for &pods in &plan.density_pods {
                let d = self.density(load_kubeconfig, pods).await;
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
        } else {
            record.density_note =
                Some("stress-test density was not available in this build".into());
        }
        let end_all = now();
        tokio::time::sleep(Duration::from_secs(7)).await;
        record.cpu_by_job = prometheus.cpu_core_seconds(start, end_all).await?;
        record.cpu_core_seconds = Some(record.cpu_by_job.values().sum());
        record.peak_rss_bytes = prometheus.peak_rss(start, end_all).await?;
        progress(format!(
            "  control plane CPU {:.1} core-s, peak RSS {:.0} MiB",
            record.cpu_core_seconds.unwrap_or(f64::NAN),
            record.peak_rss_bytes.unwrap_or(f64::NAN) / 1_048_576.0
        ));
        Ok(())
    }

    async fn density(&self, kubeconfig: &str, pods: u32) -> DensityResult {
        let report = self.run_dir.join(format!("density-{pods}.json"));
        let mut c = command(&self.plan.stress_test);
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

        let policy = policy(&plan.repo, env)?;
        self.policy = policy.clone();
        let tuning = json!({
            "apiVersion": "arak.io/v1alpha1",
            "kind": "ControlPlaneTuning",
            "metadata": {"name": "control-plane", "namespace": namespace},
            "spec": {
                "mode": "Auto",
                "intervalSeconds": plan.arak_interval_s,
                "windowSeconds": 30,
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
            .args(["--listen", &format!("127.0.0.1:{}", plan.base_port + 49)])
            .args(["--soak", "3s", "--pod-ready-timeout", "3m"])
            .env("RUST_LOG", "arak=info,updater=info")
            .stdout(std::process::Stdio::null())
            .stderr(log);
        self.arak = Some(c.spawn().map_err(Error::io("starting arak run"))?);
        Ok(())
    }

    /// Until arak has made at least two decisions and no StatefulSet is mid-roll (or `limit`).
    async fn wait_arak_settled(&self, env: &ClusterEnv, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (Ok(bin), Ok(kubeconfig), Ok(namespace)) = (
            env.get("ARAK_TOOLS_BIN"),
            env.get("KUBECONFIG"),
            env.get("ARAK_TESTED_NAMESPACE"),
        ) else {
            return false;
        };
        while Instant::now() < deadline {
            let log = std::fs::read_to_string(self.arak_log()).unwrap_or_default();
            let decisions = log.lines().filter(|l| l.contains("\"decision\"")).count();
            let mut get = command(PathBuf::from(bin).join("kubectl"));
            get.args([
                "--kubeconfig",
                kubeconfig,
                "-n",
                namespace,
                "get",
                "statefulsets",
                "-o",
                "json",
            ]);
            let rolled_out = output(get)
                .await
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|list| all_rolled_out(&list));
            if decisions >= 2 && rolled_out {
                return true;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        false
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
        let decisions: Vec<&str> = log.lines().filter(|l| l.contains("\"decision\"")).collect();
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
            }
        }
        outcome
    }
}

/// The example policy (config/examples/policy.yaml) for the hosted control plane: replicas
/// named by their scrape `instance`, the masters' 2 cores, and the short-run safety
/// settings of the Auto integration test: no cooldown, and act only on a model calibrated
/// from the run's own measurements (confidence medium), never on the priors alone.
fn policy(repo: &Path, env: &ClusterEnv) -> Result<Value> {
    let path = repo.join("config/examples/policy.yaml");
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
    let apiservers: Vec<Value> = (0..3)
        .map(|i| {
            json!({"name": format!("127.0.1.{}:{apiserver_port}", i + 1), "stateful_set": format!("apiserver-{i}"),
                   "container": "kube-apiserver", "node_allocatable": node})
        })
        .collect();
    map.insert("apiservers".into(), json!(apiservers));
    map.insert(
        "schedulers".into(),
        json!([{"name": format!("127.0.1.1:{}", hosted_base + 5), "stateful_set": "scheduler-0",
                "container": "kube-scheduler", "node_allocatable": node}]),
    );
    map.insert(
        "controller_managers".into(),
        json!([{"name": format!("127.0.1.1:{}", hosted_base + 4), "stateful_set": "controller-manager-0",
                "container": "kube-controller-manager", "node_allocatable": node}]),
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

fn fmt_n(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(Error::io(format!("writing {}", path.display())))
}

async fn versions(plan: &Plan) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    let tools = std::env::var("ARAK_TOOLS_BIN").ok().map(PathBuf::from);
    let mut probes: Vec<(String, PathBuf, Vec<&str>)> = vec![
        ("arak".into(), plan.arak.clone(), vec!["--version"]),
        (
            "stress-test".into(),
            plan.stress_test.clone(),
            vec!["--version"],
        ),
        ("rustc".into(), "rustc".into(), vec!["--version"]),
        (
            "git describe (dirty: other work was uncommitted in the tree)".into(),
            "git".into(),
            vec![
                "-C",
                plan.repo.to_str().unwrap_or("."),
                "describe",
                "--always",
                "--dirty",
            ],
        ),
    ];
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
    }

    #[test]
    fn cluster_env_lines() {
        let env = parse_env("export A=/tmp/x\nexport B='quoted value'\nnot an export\n");
        assert_eq!(env["A"], "/tmp/x");
        assert_eq!(env["B"], "quoted value");
        assert_eq!(env.len(), 2);
    }
}
