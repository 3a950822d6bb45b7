//! Starts and stops the real loopback control plane for integration tests.
//!
//! [`Cluster::up`] runs `perf-tests/cluster up` on a free block of ports with a private
//! state directory, reads back what `perf-tests/cluster env` prints, and hands out the
//! kubeconfig paths and URLs. Dropping the [`Cluster`] runs `perf-tests/cluster down`.
//!
//! When the pinned tools are not built, `up` returns [`Outcome::Skip`] with the reason, so a
//! developer without them still gets a passing (skipped) test; with `CI` set or
//! `ARAK_REQUIRE_HARNESS=1` it returns [`Error::Required`] instead, so CI never skips.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Ports a cluster may use: base..base+49 for the base cluster, base+50..base+99 for the
/// hosted layer.
pub const PORTS_PER_CLUSTER: u16 = 100;

/// Base ports are picked from this range, on multiples of [`PORTS_PER_CLUSTER`]. It ends
/// below Linux's default ephemeral range (32768–60999): a port there can be taken at any
/// moment by some client connection's local end, and a component would then fail to bind.
const BASE_PORT_RANGE: std::ops::Range<u16> = 20_000..32_700;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The harness cannot run here, and the environment says it must (CI).
    #[error("the loopback cluster is required here (CI or ARAK_REQUIRE_HARNESS=1) but {0}")]
    Required(String),
    #[error("could not run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}):\n{output}")]
    Script {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("`perf-tests/cluster env` did not print {0}")]
    MissingEnv(&'static str),
    #[error("no free block of {PORTS_PER_CLUSTER} loopback ports found")]
    NoFreePorts,
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of KWOK fake nodes.
    pub nodes: u32,
    /// Also run `perf-tests/hosted-up` once the base cluster is ready.
    pub hosted: bool,
    /// Upper bound for each readiness wait inside `perf-tests/cluster up`.
    pub ready_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            hosted: false,
            ready_timeout: Duration::from_secs(180),
        }
    }
}

/// The result of [`Cluster::up`] when nothing went wrong.
#[derive(Debug)]
pub enum Outcome {
    Ready(Cluster),
    /// The pinned tools are absent; the reason says what is missing and how to build it.
    Skip(String),
}

/// A running loopback control plane. Dropping it stops every process it started.
#[derive(Debug)]
pub struct Cluster {
    perf_tests: PathBuf,
    state_dir: PathBuf,
    base_port: u16,
    admin_kubeconfig: PathBuf,
    load_kubeconfig: PathBuf,
    apiserver_url: String,
    prometheus_url: String,
    tools_bin: PathBuf,
    env: HashMap<String, String>,
    stopped: bool,
}

/// One process recorded by `perf-tests/cluster` in its state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentPid {
    pub name: String,
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of `/proc/PID/stat`), when recorded.
    pub start_time: Option<u64>,
}

impl ComponentPid {
    /// Whether this very process (not a later one that reused the pid) still runs.
    pub fn is_running(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        // The command name is parenthesised and may contain spaces; fields follow the last ')'.
        let Some(after_comm) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // fields[0] is field 3 (state), so field 22 is fields[19].
        if fields.first() == Some(&"Z") {
            return false;
        }
        match self.start_time {
            Some(start) => fields.get(19).and_then(|s| s.parse().ok()) == Some(start),
            None => true,
        }
    }
}

impl fmt::Display for ComponentPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pid {})", self.name, self.pid)
    }
}

impl Cluster {
    /// Starts a cluster on a free block of ports, or says why it cannot run here.
    pub fn up(options: &ClusterOptions) -> Result<Outcome, Error> {
        Self::up_with_env(options, &[])
    }

    /// [`Cluster::up`] with extra environment for `perf-tests/cluster up` and the hosted
    /// layer, e.g. `("ARAK_HOSTED_VARIANT", "static")`.
    pub fn up_with_env(options: &ClusterOptions, env: &[(&str, &str)]) -> Result<Outcome, Error> {
        let perf_tests = perf_tests_dir();
        if let Some(reason) = missing_prerequisite(&perf_tests) {
            if harness_required() {
                return Err(Error::Required(reason));
            }
            return Ok(Outcome::Skip(reason));
        }

        // Another process may grab a probed port before the cluster binds it; the script
        // refuses busy ports, so try a few blocks.
        for attempt in 0..3 {
            let base_port = free_base_port(attempt)?;
            let state_dir = std::env::temp_dir()
                .join(format!("arak-harness-{}-{base_port}", std::process::id()));
            let mut up = cluster_command(&perf_tests, "up", &state_dir);
            up.arg("--nodes")
                .arg(options.nodes.to_string())
                .arg("--base-port")
                .arg(base_port.to_string())
                // If this test process is killed, Drop never runs; the script's watchdog
                // then stops the cluster.
                .arg("--owner-pid")
                .arg(std::process::id().to_string())
                .env(
                    "ARAK_CLUSTER_TIMEOUT",
                    options.ready_timeout.as_secs().max(1).to_string(),
                );
            if options.hosted {
                up.arg("--hosted");
            }
            up.envs(env.iter().copied());
            match run(up, "perf-tests/cluster up") {
                Ok(_) => return Self::from_env(perf_tests, state_dir).map(Outcome::Ready),
                Err(Error::Script { output, .. }) if output.contains("is in use") => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::NoFreePorts)
    }

    fn from_env(perf_tests: PathBuf, state_dir: PathBuf) -> Result<Self, Error> {
        // Constructed before parsing so that a parse failure still stops the cluster.
        let mut cluster = Cluster {
            perf_tests,
            state_dir,
            base_port: 0,
            admin_kubeconfig: PathBuf::new(),
            load_kubeconfig: PathBuf::new(),
            apiserver_url: String::new(),
            prometheus_url: String::new(),
            tools_bin: PathBuf::new(),
            env: HashMap::new(),
            stopped: false,
        };
        let output = run(
            cluster_command(&cluster.perf_tests, "env", &cluster.state_dir),
            "perf-tests/cluster env",
        )?;
        let vars = parse_env(&String::from_utf8_lossy(&output.stdout));
        let get = |name: &'static str| vars.get(name).cloned().ok_or(Error::MissingEnv(name));
        cluster.admin_kubeconfig = get("KUBECONFIG")?.into();
        cluster.load_kubeconfig = get("ARAK_LOAD_KUBECONFIG")?.into();
        cluster.apiserver_url = get("ARAK_APISERVER_URL")?;
        cluster.prometheus_url = get("PROMETHEUS_URL")?;
        cluster.tools_bin = get("ARAK_TOOLS_BIN")?.into();
        cluster.base_port = get("ARAK_BASE_PORT")?
            .parse()
            .map_err(|_| Error::MissingEnv("ARAK_BASE_PORT"))?;
        cluster.env = vars;
        Ok(cluster)
    }

    /// Kubeconfig of `arak-admin`, a member of `system:masters` (exempt from APF).
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Kubeconfig of `arak-load`, an ordinary user limited by APF, allowed what load tests do.
    pub fn load_kubeconfig(&self) -> &Path {
        &self.load_kubeconfig
    }

    /// `https://127.0.0.1:<port>`; the CA is `<state_dir>/pki/ca.crt`.
    pub fn apiserver_url(&self) -> &str {
        &self.apiserver_url
    }

    /// `http://127.0.0.1:<port>` of the Prometheus scraping every component.
    pub fn prometheus_url(&self) -> &str {
        &self.prometheus_url
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The cluster uses base_port..base_port+49; the hosted layer base_port+50..base_port+99.
    pub fn base_port(&self) -> u16 {
        self.base_port
    }

    /// Directory of the pinned binaries (kube-apiserver, kubectl, kwok, etcd, ...).
    pub fn tools_bin(&self) -> &Path {
        &self.tools_bin
    }

    /// Any variable `perf-tests/cluster env` printed, including the hosted layer's
    /// `ARAK_TESTED_*` when started with [`ClusterOptions::hosted`].
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// The processes the cluster script recorded (components in `pids/`, and the watchdog),
    /// in no particular order.
    pub fn component_pids(&self) -> Result<Vec<ComponentPid>, Error> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let dir = self.state_dir.join("pids");
        let mut files = vec![self.state_dir.join("watchdog.pid")];
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            files.push(entry.map_err(io_error(&dir))?.path());
        }
        let mut pids = Vec::new();
        for path in files {
            if path.extension().is_none_or(|e| e != "pid") || !path.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
            let mut fields = text.split_whitespace();
            let Some(pid) = fields.next().and_then(|p| p.parse().ok()) else {
                continue;
            };
            pids.push(ComponentPid {
                name: path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                pid,
                start_time: fields.next().and_then(|s| s.parse().ok()),
            });
        }
        Ok(pids)
    }

    /// Output of `perf-tests/cluster status` (one line per component).
    pub fn status(&self) -> Result<String, Error> {
        let output = run(
            cluster_command(&self.perf_tests, "status", &self.state_dir),
            "perf-tests/cluster status",
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Stops every process and removes the state directory. Also done on drop.
    pub fn down(&mut self) -> Result<(), Error> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        run(
            cluster_command(&self.perf_tests, "down", &self.state_dir),
            "perf-tests/cluster down",
        )
        .map(drop)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.down() {
            eprintln!("harness: stopping the loopback cluster failed: {e}");
        }
    }
}

/// The node agent `cargo test` built beside the running test binary (`target/<profile>/`),
/// if any. Passed as `ARAK_NODE_AGENT`, it spares `hosted-up` a `cargo build -p node-agent`,
/// whose features differ from the workspace's and so rebuild kube and its dependencies.
pub fn built_node_agent() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("node-agent")))
        .filter(|agent| agent.is_file())
}

/// `perf-tests/` in this checkout.
fn perf_tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("perf-tests"))
}

fn harness_required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
        || std::env::var("ARAK_REQUIRE_HARNESS").is_ok_and(|v| v == "1")
}

/// Why the cluster cannot start here, if it cannot.
fn missing_prerequisite(perf_tests: &Path) -> Option<String> {
    if std::env::var_os("ARAK_TOOLS_BIN").is_none() {
        let check = Command::new(perf_tests.join("build-tools"))
            .args(["--check", "--no-apt"])
            .output();
        match check {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Some(format!(
                    "the pinned control-plane tools are not built ({}); run `perf-tests/build-tools` first",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Err(e) => return Some(format!("cannot run perf-tests/build-tools: {e}")),
        }
    }
    ["prometheus", "openssl", "curl"]
        .into_iter()
        .find(|tool| !on_path(tool))
        .map(|tool| {
            format!("`{tool}` is not installed; run `perf-tests/build-tools` (it apt-installs it)")
        })
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn cluster_command(perf_tests: &Path, verb: &str, state_dir: &Path) -> Command {
    let mut command = Command::new(perf_tests.join("cluster"));
    command.arg(verb).arg("--state-dir").arg(state_dir);
    command
}

fn run(mut command: Command, what: &str) -> Result<Output, Error> {
    let output = command.output().map_err(|source| Error::Spawn {
        command: what.to_owned(),
        source,
    })?;
    if output.status.success() {
        return Ok(output);
    }
    Err(Error::Script {
        command: what.to_owned(),
        status: output.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// A base port whose whole block of [`PORTS_PER_CLUSTER`] ports is free right now. The
/// search starts at a point derived from the pid and clock, so parallel test processes
/// rarely probe the same blocks.
fn free_base_port(attempt: u16) -> Result<u16, Error> {
    let blocks = (BASE_PORT_RANGE.end - BASE_PORT_RANGE.start) / PORTS_PER_CLUSTER;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = std::process::id().wrapping_mul(7919) ^ nanos;
    let first = (seed % u32::from(blocks)) as u16;
    (0..blocks)
        .map(|i| (first + i + attempt * 7) % blocks)
        .map(|block| BASE_PORT_RANGE.start + block * PORTS_PER_CLUSTER)
        .find(|&base| (base..base + PORTS_PER_CLUSTER).all(port_is_free))
        .ok_or(Error::NoFreePorts)
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Parses `export NAME=value` lines as printed by bash's `printf %q`.
fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.to_owned(), shell_unquote(value)))
        .collect()
}

/// Undoes `printf %q` for the values the cluster script prints: backslash escapes and
/// single-quoted strings (`$'...'` forms only occur for control characters, which paths
/// here never contain).
fn shell_unquote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '\'' => out.extend(chars.by_ref().take_while(|&c| c != '\'')),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_printf_q_output() {
        let vars = parse_env(
            "export KUBECONFIG=/tmp/a\\ b/admin.kubeconfig\n\
             export PROMETHEUS_URL=http://127.0.0.1:16006\n\
             export ARAK_CLUSTER_DIR='/tmp/x y'\n\
             not an export\n",
        );
        assert_eq!(vars["KUBECONFIG"], "/tmp/a b/admin.kubeconfig");
        assert_eq!(vars["PROMETHEUS_URL"], "http://127.0.0.1:16006");
        assert_eq!(vars["ARAK_CLUSTER_DIR"], "/tmp/x y");
        assert_eq!(vars.len(), 3);
    }

    #[test]
    fn free_base_port_is_aligned_and_in_range() {
        let base = free_base_port(0).expect("some block of loopback ports is free");
        assert!(BASE_PORT_RANGE.contains(&base));
        assert_eq!(base % PORTS_PER_CLUSTER, 0);
    }

    #[test]
    fn own_process_is_running_and_a_wrong_start_time_is_not() {
        let me = ComponentPid {
            name: "self".into(),
            pid: std::process::id(),
            start_time: None,
        };
        assert!(me.is_running());
        let reused = ComponentPid {
            start_time: Some(u64::MAX),
            ..me
        };
        assert!(!reused.is_running());
    }
}
