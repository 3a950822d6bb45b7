//! One container run as a local process: started in its own process group with its output
//! appended to a log file, stopped with SIGTERM, then SIGKILL after the grace period.

use crate::error::{Error, Result};
use crate::pod_plan::Launch;
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

#[derive(Debug)]
pub struct Process {
    child: Child,
    pub pid: u32,
    pub started: Instant,
    pub started_at: Timestamp,
}

/// How a process ended, in the container status' terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: i32,
    pub signal: Option<i32>,
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit {
                exit_code: code,
                signal: None,
            },
            // A shell reports death by signal N as 128+N; so does the kubelet.
            (None, Some(sig)) => Exit {
                exit_code: 128 + sig,
                signal: Some(sig),
            },
            (None, None) => Exit {
                exit_code: -1,
                signal: None,
            },
        }
    }
}

pub fn spawn(launch: &Launch, log_path: &Path, banner: &str) -> Result<Process> {
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating log directory", dir, e))?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| Error::io("opening log", log_path, e))?;
    writeln!(
        log,
        "==== node-agent {} {banner}: {} {}",
        Timestamp::now(),
        launch.program,
        launch.args.join(" ")
    )
    .map_err(|e| Error::io("writing log", log_path, e))?;
    let stderr = log
        .try_clone()
        .map_err(|e| Error::io("opening log", log_path, e))?;
    let mut command = Command::new(&launch.program);
    command
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.working_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            // If the agent dies without stopping its children, they die with it.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let child = command.spawn().map_err(|source| Error::Spawn {
        program: launch.program.clone(),
        source,
    })?;
    let pid = child.id().unwrap_or_default();
    Ok(Process {
        child,
        pid,
        started: Instant::now(),
        started_at: Timestamp::now(),
    })
}

impl Process {
    /// The exit, if the process has ended.
    pub fn try_exit(&mut self) -> Result<Option<Exit>> {
        self.child
            .try_wait()
            .map(|s| s.map(Exit::from))
            .map_err(|e| Error::io("waiting for", format!("pid {}", self.pid), e))
    }

    /// Signals the whole process group, so helpers the container forked stop too.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = i32::try_from(self.pid).unwrap_or(i32::MAX);
        match killpg(Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(source) => Err(Error::Signal { pid, source }),
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Result<Exit> {
        if let Some(exit) = self.try_exit()? {
            self.signal(Signal::SIGKILL)?;
            return Ok(exit);
        }
        self.signal(Signal::SIGTERM)?;
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(pid = self.pid, "grace period over; killing");
                self.signal(Signal::SIGKILL)?;
                self.child.wait().await
            }
        }
        .map_err(|e| Error::io("waiting for", format!("pid {}", self.pid), e))?;
        // Anything left in the group outlived its leader; it must not outlive the pod.
        self.signal(Signal::SIGKILL)?;
        Ok(status.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(program: &str, args: &[&str]) -> Launch {
        Launch {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("GREETING".into(), "hello".into())],
            working_dir: std::env::temp_dir(),
        }
    }

    fn log_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("node-agent-test-{}-{name}.log", std::process::id()))
    }

    #[tokio::test]
    async fn output_goes_to_the_log_and_exit_code_is_reported() {
        let log = log_path("exit");
        let mut p = spawn(
            &launch("/bin/sh", &["-c", "echo $GREETING; exit 3"]),
            &log,
            "start",
        )
        .unwrap();
        let exit = loop {
            if let Some(e) = p.try_exit().unwrap() {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            exit,
            Exit {
                exit_code: 3,
                signal: None
            }
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("==== node-agent"), "{text}");
        assert!(text.ends_with("hello\n"), "{text}");
        std::fs::remove_file(log).unwrap();
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_after_grace() {
        let log = log_path("stop");
        let mut p = spawn(
            &launch("/bin/sh", &["-c", "trap '' TERM; sleep 30 & wait"]),
            &log,
            "start",
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let exit = p.stop(Duration::from_millis(300)).await.unwrap();
        assert_eq!(
            exit,
            Exit {
                exit_code: 137,
                signal: Some(9)
            }
        );
        std::fs::remove_file(log).unwrap();
    }
}
