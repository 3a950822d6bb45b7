//! The `native` and `static` overlays of config/test-control-plane, selected with
//! ARAK_HOSTED_VARIANT, reach the running tested control plane: the flags on each process's
//! command line and the CPU quota the node agent put on its cgroup.

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{Cluster, ClusterOptions, Outcome};

struct Expected {
    variant: &'static str,
    apiserver: [&'static str; 2],
    scheduler: [&'static str; 2],
    controller_manager: [&'static str; 2],
    /// CFS quota in cores: apiserver, scheduler, controller-manager.
    cpu: [f64; 3],
}

const VARIANTS: [Expected; 2] = [
    Expected {
        variant: "native",
        apiserver: [
            "--max-requests-inflight=400",
            "--max-mutating-requests-inflight=200",
        ],
        scheduler: ["--kube-api-qps=50", "--kube-api-burst=100"],
        controller_manager: ["--kube-api-qps=20", "--kube-api-burst=30"],
        cpu: [0.5, 0.5, 0.5],
    },
    Expected {
        variant: "static",
        apiserver: [
            "--max-requests-inflight=2000",
            "--max-mutating-requests-inflight=1000",
        ],
        scheduler: ["--kube-api-qps=200", "--kube-api-burst=400"],
        controller_manager: ["--kube-api-qps=200", "--kube-api-burst=300"],
        cpu: [2.0, 2.0, 2.0],
    },
];

/// A running process of the tested control plane: its binary name and arguments.
struct Process {
    pid: u32,
    binary: String,
    args: Vec<String>,
}

/// Processes whose command line names this cluster's hosted configuration directory.
fn tested_processes(state_dir: &Path) -> Vec<Process> {
    let marker = state_dir.join("hosted/config").display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a.contains(&marker)) {
            let binary = Path::new(&args[0])
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.push(Process { pid, binary, args });
        }
    }
    found
}

/// The CFS quota of the process's cgroup v1 `cpu` controller in cores (the node agent
/// supports cgroup v1 only); None when it has no quota or sits in the root cgroup.
fn cpu_quota_cores(pid: u32) -> Option<f64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let line = cgroups.lines().find(|line| {
        line.split(':')
            .nth(1)
            .is_some_and(|c| c.split(',').any(|c| c == "cpu"))
    })?;
    let mut parts = line.splitn(3, ':');
    let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
    if path == "/" {
        return None;
    }
    let dir = Path::new("/sys/fs/cgroup")
        .join(controllers)
        .join(path.trim_start_matches('/'));
    let read = |name: &str| -> Option<f64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (quota, period) = (read("cpu.cfs_quota_us")?, read("cpu.cfs_period_us")?);
    (quota > 0.0).then(|| quota / period)
}

/// hosted-up builds the node agent with cargo unless told where one is; a workspace build
/// next to this test's binary saves that.
fn workspace_node_agent() -> Option<String> {
    if let Ok(agent) = std::env::var("ARAK_NODE_AGENT") {
        return Some(agent);
    }
    let exe = std::env::current_exe().ok()?;
    let agent = exe.parent()?.parent()?.join("node-agent");
    agent.is_file().then(|| agent.display().to_string())
}

#[test]
fn native_and_static_overlays_reach_the_running_processes() {
    let agent = workspace_node_agent();
    for expected in VARIANTS {
        let started = Instant::now();
        let mut env = vec![("ARAK_HOSTED_VARIANT", expected.variant)];
        if let Some(agent) = agent.as_deref() {
            env.push(("ARAK_NODE_AGENT", agent));
        }
        let options = ClusterOptions {
            nodes: 1,
            hosted: true,
            ready_timeout: Duration::from_secs(240),
        };
        let mut cluster =
            match Cluster::up_with_env(&options, &env).expect("the hosted cluster starts") {
                Outcome::Ready(cluster) => cluster,
                Outcome::Skip(reason) => {
                    eprintln!("SKIPPED: {reason}");
                    return;
                }
            };
        assert_eq!(
            cluster.env_var("ARAK_TESTED_VARIANT"),
            Some(expected.variant)
        );
        let processes = tested_processes(cluster.state_dir());
        let of = |binary: &str| -> Vec<&Process> {
            processes.iter().filter(|p| p.binary == binary).collect()
        };
        let checks = [
            ("kube-apiserver", 3, &expected.apiserver, expected.cpu[0]),
            ("kube-scheduler", 1, &expected.scheduler, expected.cpu[1]),
            (
                "kube-controller-manager",
                1,
                &expected.controller_manager,
                expected.cpu[2],
            ),
        ];
        for (binary, count, flags, cores) in checks {
            let found = of(binary);
            assert_eq!(
                found.len(),
                count,
                "{} {binary} process(es) running",
                found.len()
            );
            for p in found {
                for flag in flags.iter() {
                    let name = flag.split('=').next().unwrap_or(flag);
                    let given: Vec<&String> = p
                        .args
                        .iter()
                        .filter(|a| a.starts_with(&format!("{name}=")))
                        .collect();
                    assert_eq!(
                        given,
                        vec![flag],
                        "{} (pid {}): {name}",
                        expected.variant,
                        p.pid
                    );
                }
                match cpu_quota_cores(p.pid) {
                    Some(quota) => assert!(
                        (quota - cores).abs() < 1e-9,
                        "{} {binary} (pid {}): CPU quota {quota} cores, expected {cores}",
                        expected.variant,
                        p.pid
                    ),
                    None => panic!(
                        "{} {binary} (pid {}) has no CPU quota; the node agent should enforce the limit",
                        expected.variant, p.pid
                    ),
                }
            }
        }
        cluster.down().expect("cluster down");
        eprintln!("{}: checked in {:?}", expected.variant, started.elapsed());
    }
}
