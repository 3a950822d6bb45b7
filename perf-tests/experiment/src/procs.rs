//! Child processes: each in its own process group (so a Ctrl-C reaches only the runner,
//! which then stops them in order), killed if their handle is dropped.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::error::{Error, Result};

pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    command
        .process_group(0)
        .kill_on_drop(true)
        .stdin(Stdio::null());
    command
}

fn describe(command: &Command) -> String {
    let std = command.as_std();
    let mut text = std.get_program().to_string_lossy().into_owned();
    for arg in std.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs to completion; stdout on success, else an error with the output's tail.
pub async fn output(mut command: Command) -> Result<String> {
    let what = describe(&command);
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(Error::io(what.clone()))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Err(Error::Command {
        command: what,
        status: output.status.to_string(),
        output: tail(&text, 25),
    })
}

/// Runs to completion with stdout and stderr appended to `log`, within `limit`.
pub async fn logged(mut command: Command, log: &Path, limit: Duration) -> Result<()> {
    let what = describe(&command);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(Error::io(format!("opening {}", log.display())))?;
    let err = file
        .try_clone()
        .map_err(Error::io("duplicating a log handle"))?;
    let mut child = command
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(Error::io(what.clone()))?;
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => status.map_err(Error::io(what.clone()))?,
        Err(_) => {
            stop(&mut child, Duration::from_secs(10)).await;
            return Err(Error::Command {
                command: what,
                status: format!("still running after {limit:?}; stopped"),
                output: tail(&std::fs::read_to_string(log).unwrap_or_default(), 25),
            });
        }
    };
    if status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: what,
        status: status.to_string(),
        output: tail(&std::fs::read_to_string(log).unwrap_or_default(), 25),
    })
}

/// SIGTERM, up to `grace`, then SIGKILL; always reaps.
pub async fn stop(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
